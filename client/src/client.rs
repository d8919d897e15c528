//! [`Client`]: an open profile plus the network, and what changes the user's own identity:
//! `init` (keys, accounts on every home node, one signed record listing them all),
//! re-publishing the record, rotating the key, and trusting, untrusting or adding home
//! nodes.

use std::path::Path;
use std::sync::Mutex;

use sealpost_proto::identity::{
    Keyring, SecretIdentity, cert_addresses, cert_from_bytes, cert_to_armored, cert_to_bytes,
};
use sealpost_proto::limits::MAX_HOMES;
use sealpost_proto::record::{MailboxRecord, SignedRecord, endorse_identity};
use sealpost_proto::{Address, NodeUrl};

use crate::api::{Net, NetConfig, VerifiedNode};
use crate::contacts::ContactStore;
use crate::directory::NodeCache;
use crate::error::{Error, Result};
use crate::outbox::Outbox;
use crate::profile::{Config, HomeEntry, PROFILE_VERSION, Profile};
use crate::resolve::Resolver;
use crate::sent::SentLog;
use crate::store::MessageStore;
use crate::{join_all, now, now_millis};

/// How long a published record is valid.
pub const RECORD_VALIDITY_SECS: u64 = 365 * 24 * 3600;

pub use crate::profile::ROTATING_FILE;

/// What `rotate-key` did.
#[derive(Clone, Debug)]
pub struct RotateReport {
    /// Upper-case hex fingerprints.
    pub old: String,
    pub new: String,
    pub publish: PublishReport,
}

/// Settings of one run that do not live in the profile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--resolve DOMAIN=URL` entries; they override the profile's table.
    pub resolve: Vec<(String, NodeUrl)>,
    pub net: NetConfig,
}

/// What `init` needs.
#[derive(Clone)]
pub struct InitOptions {
    pub address: Address,
    pub nodes: Vec<NodeUrl>,
    /// Locks the new secret key (or unlocks an imported one).
    pub passphrase: Option<String>,
    /// For nodes whose registration policy is `invite`.
    pub invite: Option<String>,
    /// Use this secret key (a backup) instead of generating one.
    pub identity: Option<SecretIdentity>,
}

/// The result of publishing the record on each home.
#[derive(Clone, Debug)]
pub struct PublishReport {
    pub sequence: u64,
    pub results: Vec<(NodeUrl, std::result::Result<(), String>)>,
}

/// An open profile and the means to talk to nodes.
pub struct Client {
    pub profile: Profile,
    pub net: Net,
    pub resolver: Resolver,
    pub contacts: ContactStore,
    pub messages: MessageStore,
    pub outbox: Outbox,
    pub sent: SentLog,
    pub(crate) nodes: Mutex<NodeCache>,
    /// After [`Client::init`]: each `--node` URL whose node descriptor names another URL,
    /// with that URL (the home is registered and published under the descriptor's URL).
    pub init_followed: Vec<(NodeUrl, NodeUrl)>,
}

impl Client {
    /// Opens the profile in `dir` (and takes its lock).
    pub fn open(dir: &Path, options: &Options) -> Result<Client> {
        let profile = Profile::open(dir)?;
        Self::with_profile(profile, options)
    }

    fn with_profile(profile: Profile, options: &Options) -> Result<Client> {
        let resolver = Resolver::new(&profile.config.resolve, &options.resolve);
        let dir = profile.dir().to_path_buf();
        // The profile's settings, plus this run's (whose DNS server wins).
        let mut net = options.net.clone();
        for ca in &profile.config.tls.ca_certs {
            if !net.ca_certs.contains(ca) {
                net.ca_certs.push(ca.clone());
            }
        }
        net.dns_server = net.dns_server.or(profile.config.dns.server);
        Ok(Client {
            net: Net::new(net)?,
            resolver,
            contacts: ContactStore::new(&dir),
            messages: MessageStore::new(&dir),
            outbox: Outbox::new(&dir),
            sent: SentLog::new(&dir),
            nodes: Mutex::new(NodeCache::load(&dir)?),
            init_followed: Vec::new(),
            profile,
        })
    }

    /// Creates a profile: keys (or the given ones), an account on every node, one signed
    /// record listing every home, published to each. Nothing is written locally unless
    /// all of that worked.
    pub async fn init(dir: &Path, init: InitOptions, options: &Options) -> Result<Client> {
        let mut nodes: Vec<NodeUrl> = Vec::new();
        for n in &init.nodes {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        if nodes.is_empty() {
            return Err(Error::input("nodes", "give at least one --node URL"));
        }
        if nodes.len() > MAX_HOMES {
            return Err(Error::input(
                "nodes",
                format!("{} nodes; a record lists at most {MAX_HOMES}", nodes.len()),
            ));
        }
        crate::profile::check_free(dir)?;
        let passphrase = init.passphrase.as_deref();
        let identity = match init.identity {
            Some(id) => match passphrase {
                Some(p) if !id.is_locked() => crate::profile::lock_identity(&id, p)?,
                _ => id,
            },
            None => SecretIdentity::generate(&init.address, passphrase)?,
        };
        let keys = identity.unlock(passphrase)?;
        let cert = identity.public_cert();
        if !cert_addresses(&cert)
            .iter()
            .any(|a| a == init.address.as_str())
        {
            return Err(Error::input(
                "secret key",
                format!("its certificate does not name {}", init.address),
            ));
        }
        let net = Net::new(options.net.clone())?;
        let armored = cert_to_armored(&cert);

        let registered = join_all(
            nodes
                .iter()
                .map(|url| register(&net, url, &armored, init.invite.as_deref()))
                .collect(),
        )
        .await;
        let mut homes: Vec<HomeEntry> = Vec::new();
        let mut seen: Vec<VerifiedNode> = Vec::new();
        let mut followed = Vec::new();
        for (given, r) in nodes.iter().zip(registered) {
            let (home, node) = r?;
            if &home.url != given {
                followed.push((given.clone(), home.url.clone()));
            }
            if !homes.iter().any(|h| h.url == home.url) {
                homes.push(home);
                seen.push(node);
            }
        }
        let signed = sign_record(&init.address, &keys, &homes, None)?;
        let published = join_all(
            homes
                .iter()
                .map(|h| net.publish_record(&h.url, &init.address, &signed))
                .collect(),
        )
        .await;
        for r in published {
            r?;
        }
        // What this run needed to reach the nodes is what later runs need: `--resolve`,
        // `--cacert` (as absolute paths) and `--dns-server` are kept in the profile.
        let mut ca_certs = Vec::new();
        for p in &options.net.ca_certs {
            ca_certs.push(std::path::absolute(p).map_err(|e| Error::BadCaCert {
                path: p.clone(),
                reason: e.to_string(),
            })?);
        }
        let config = Config {
            version: PROFILE_VERSION,
            address: init.address.clone(),
            fingerprint: identity.fingerprint().to_hex(),
            homes,
            resolve: options.resolve.iter().cloned().collect(),
            gateway: None,
            legacy: Default::default(),
            legacy_confirmed: Default::default(),
            tls: crate::profile::TlsSettings { ca_certs },
            dns: crate::profile::DnsSettings {
                server: options.net.dns_server,
            },
        };
        let profile = Profile::create(dir, config, &identity, &signed)?;
        let mut client = Self::with_profile(profile, options)?;
        client.init_followed = followed;
        {
            let mut cache = client
                .nodes
                .lock()
                .expect("invariant: node cache lock not poisoned");
            for n in &seen {
                cache.put(n);
            }
            cache.save()?;
        }
        Ok(client)
    }

    pub fn unlock(&self, passphrase: Option<&str>) -> Result<Keyring> {
        self.profile.unlock(passphrase)
    }

    /// Signs a new record from the configured homes and publishes it on each of them. The
    /// local copy is replaced when at least one node took it.
    pub async fn publish(&mut self, keys: &Keyring) -> Result<PublishReport> {
        let prev = self.profile.record_body()?.sequence;
        let signed = sign_record(
            self.profile.address(),
            keys,
            &self.profile.config.homes,
            Some(prev),
        )?;
        let sequence = sealpost_proto::codec::Codec::decode(&signed.body)
            .map(|r: MailboxRecord| r.sequence)?;
        let address = self.profile.address().clone();
        let urls: Vec<NodeUrl> = self
            .profile
            .config
            .homes
            .iter()
            .map(|h| h.url.clone())
            .collect();
        let answers = join_all(
            urls.iter()
                .map(|u| self.net.publish_record(u, &address, &signed))
                .collect(),
        )
        .await;
        let results: Vec<_> = urls
            .into_iter()
            .zip(answers)
            .map(|(u, r)| (u, r.map_err(|e| e.to_string())))
            .collect();
        if results.iter().all(|(_, r)| r.is_err()) {
            let details = results
                .iter()
                .map(|(u, r)| {
                    format!(
                        "{u}: {}",
                        r.as_ref().err().map(String::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::NoNodeAnswered { details });
        }
        self.profile.save_record(signed)?;
        Ok(PublishReport { sequence, results })
    }

    /// Replaces the profile's key: a new key, endorsed by the current one (an OpenPGP
    /// certification, so contacts see "signed by the old key"), registered on every home
    /// (each keeps our mailbox and address) and published in a new record on every home.
    /// Every home must take it; otherwise the new key stays in [`ROTATING_FILE`] and the next
    /// call finishes the rotation with it. The old secret key is kept for old letters.
    pub async fn rotate_key(
        &mut self,
        old: &Keyring,
        passphrase: Option<&str>,
    ) -> Result<RotateReport> {
        let address = self.profile.address().clone();
        let old_fp = self.profile.config.fingerprint.clone();
        let pending_path = self.profile.path(ROTATING_FILE);
        let resumed = match crate::fsutil::read_optional(&pending_path)? {
            Some(bytes) => Some(
                SecretIdentity::from_bytes(&bytes).map_err(|e| Error::corrupt(&pending_path, e))?,
            ),
            None => None,
        };
        let next = match resumed {
            Some(id) if id.fingerprint().to_hex() != old_fp => id,
            _ => {
                let fresh = SecretIdentity::generate(&address, passphrase)?;
                let id = endorse_identity(&fresh, old, &address)?;
                crate::fsutil::write_atomic(&pending_path, id.to_armored().as_bytes())?;
                id
            }
        };
        let new_keys = next.unlock(passphrase)?;
        let armored = cert_to_armored(&next.public_cert());
        let homes = self.profile.config.homes.clone();
        let answers = join_all(
            homes
                .iter()
                .map(|h| self.net.register(&h.url, &armored, None))
                .collect(),
        )
        .await;
        for (h, r) in homes.iter().zip(answers) {
            let reg = r.map_err(|e| address_taken(e, &address, &h.url))?;
            if reg.mailbox != h.mailbox {
                return Err(Error::protocol(
                    &h.url,
                    format!(
                        "the new key got mailbox {} there, not ours ({}): the node did not take it as a rotation",
                        reg.mailbox, h.mailbox
                    ),
                ));
            }
        }
        let prev = self.profile.record_body()?.sequence;
        let signed = sign_record(&address, &new_keys, &homes, Some(prev))?;
        let sequence = sealpost_proto::codec::Codec::decode(&signed.body)
            .map(|r: MailboxRecord| r.sequence)?;
        let published = join_all(
            homes
                .iter()
                .map(|h| self.net.publish_record(&h.url, &address, &signed))
                .collect(),
        )
        .await;
        let mut results = Vec::new();
        for (h, r) in homes.iter().zip(published) {
            r?;
            results.push((h.url.clone(), Ok(())));
        }
        let new = next.fingerprint().to_hex();
        self.profile.replace_identity(next, signed)?;
        Ok(RotateReport {
            old: old_fp,
            new,
            publish: PublishReport { sequence, results },
        })
    }

    /// Trusts `url` again if it is a home; otherwise registers there, adds it to the
    /// record and publishes the record everywhere. Returns the report when it published.
    pub async fn trust_node(
        &mut self,
        url: &NodeUrl,
        keys: &Keyring,
        invite: Option<&str>,
    ) -> Result<Option<PublishReport>> {
        if let Some(h) = self.profile.config.homes.iter_mut().find(|h| &h.url == url) {
            h.trusted = true;
            self.profile.save_config()?;
            return Ok(None);
        }
        if self.profile.config.homes.len() >= MAX_HOMES {
            return Err(Error::input(
                "node",
                format!("a record lists at most {MAX_HOMES} homes"),
            ));
        }
        let armored = cert_to_armored(&self.profile.cert());
        let (home, node) = register(&self.net, url, &armored, invite).await?;
        if let Some(h) = self
            .profile
            .config
            .homes
            .iter_mut()
            .find(|h| h.url == home.url)
        {
            // The URL given was another name of a home we have.
            h.trusted = true;
            self.profile.save_config()?;
            return Ok(None);
        }
        let before = self.profile.config.clone();
        self.profile.config.homes.push(home);
        match self.publish(keys).await {
            Ok(report) => {
                self.profile.save_config()?;
                let mut cache = self
                    .nodes
                    .lock()
                    .expect("invariant: node cache lock not poisoned");
                cache.put(&node);
                cache.save()?;
                Ok(Some(report))
            }
            Err(e) => {
                self.profile.config = before;
                Err(e)
            }
        }
    }

    /// Stops fetching from and submitting through `url`. With `drop`, also removes it from
    /// the record and publishes the record on the remaining homes.
    pub async fn untrust_node(
        &mut self,
        url: &NodeUrl,
        drop: bool,
        keys: &Keyring,
    ) -> Result<Option<PublishReport>> {
        let Some(pos) = self.profile.config.homes.iter().position(|h| &h.url == url) else {
            return Err(Error::NotFound {
                what: "home node",
                id: url.to_string(),
            });
        };
        let others_trusted = self
            .profile
            .config
            .homes
            .iter()
            .enumerate()
            .any(|(i, h)| i != pos && h.trusted);
        if !others_trusted {
            return Err(Error::input(
                "node",
                format!("{url} is the last trusted home; trust or add another first"),
            ));
        }
        let before = self.profile.config.clone();
        if !drop {
            self.profile.config.homes[pos].trusted = false;
            self.profile.save_config()?;
            return Ok(None);
        }
        self.profile.config.homes.remove(pos);
        match self.publish(keys).await {
            Ok(report) => {
                self.profile.save_config()?;
                Ok(Some(report))
            }
            Err(e) => {
                self.profile.config = before;
                Err(e)
            }
        }
    }

    /// Adds or replaces a persistent resolve entry. A domain with a node is no legacy
    /// domain: returns whether it was taken off the legacy list.
    pub fn set_resolve(&mut self, domain: String, url: NodeUrl) -> Result<bool> {
        let was_legacy = self.profile.config.legacy.remove(&domain);
        self.profile.config.resolve.insert(domain, url);
        self.profile.save_config()?;
        Ok(was_legacy)
    }

    pub fn unset_resolve(&mut self, domain: &str) -> Result<bool> {
        let had = self.profile.config.resolve.remove(domain).is_some();
        if had {
            self.profile.save_config()?;
        }
        Ok(had)
    }
}

/// Fetches and verifies `url`'s descriptor, registers our certificate there, and returns
/// the home (under the node's own URL) for the record.
async fn register(
    net: &Net,
    url: &NodeUrl,
    cert_armored: &str,
    invite: Option<&str>,
) -> Result<(HomeEntry, VerifiedNode)> {
    let node = net.descriptor(url).await?;
    let home_url = node.descriptor.url.clone();
    let address = cert_from_bytes(cert_armored.as_bytes())
        .ok()
        .and_then(|c| cert_addresses(&c).into_iter().next())
        .unwrap_or_default();
    let reg = net
        .register(&home_url, cert_armored, invite)
        .await
        .map_err(|e| address_taken(e, &address, &home_url))?;
    let key_hex = hex::encode(node.descriptor.node_key);
    if !reg.node_key.eq_ignore_ascii_case(&key_hex) {
        return Err(Error::NodeKeyMismatch {
            url: home_url.to_string(),
            expected: key_hex,
            found: reg.node_key,
        });
    }
    Ok((
        HomeEntry {
            url: home_url,
            node_key: key_hex,
            mailbox: reg.mailbox,
            trusted: true,
        },
        node,
    ))
}

/// A node's `address_taken` refusal, said for people.
fn address_taken(e: Error, address: &dyn std::fmt::Display, url: &NodeUrl) -> Error {
    match e {
        Error::Node { code, .. } if code == "address_taken" => Error::AddressTaken {
            address: address.to_string(),
            node: url.to_string(),
        },
        other => other,
    }
}

/// A signed record for `homes`, valid for [`RECORD_VALIDITY_SECS`], with a sequence above
/// `prev` (milliseconds since the epoch, so a re-init also goes above an old record).
fn sign_record(
    address: &Address,
    keys: &Keyring,
    homes: &[HomeEntry],
    prev: Option<u64>,
) -> Result<SignedRecord> {
    let now = now();
    let record = MailboxRecord {
        address: address.clone(),
        cert: cert_to_bytes(keys.cert()),
        homes: homes
            .iter()
            .map(HomeEntry::to_home)
            .collect::<Result<_>>()?,
        created: now,
        expires: now + RECORD_VALIDITY_SECS,
        sequence: now_millis().max(prev.map_or(0, |p| p + 1)),
    };
    Ok(SignedRecord::sign(&record, keys)?)
}
