//! The user's own account: creating a profile (keys, an account on every home node, one
//! signed record listing them all), re-publishing the record, rotating the key, and
//! trusting, untrusting or adding home nodes. Functions over the [`Profile`] (which owns the
//! identity, configuration and record) and the node API ([`Net`]).

use std::path::Path;

use sealpost_proto::identity::{
    Keyring, SecretIdentity, cert_addresses, cert_from_bytes, cert_to_armored, cert_to_bytes,
};
use sealpost_proto::limits::MAX_HOMES;
use sealpost_proto::record::{MailboxRecord, SignedRecord, endorse_identity};
use sealpost_proto::{Address, NodeUrl};

use crate::api::{Net, NetConfig, VerifiedNode};
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::profile::{Config, HomeEntry, PROFILE_VERSION, Profile};
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

/// A profile just created by [`create`].
pub struct Created {
    pub profile: Profile,
    /// Each `--node` URL whose node descriptor names another URL, with that URL.
    pub followed: Vec<(NodeUrl, NodeUrl)>,
    /// The verified descriptors of the homes.
    pub nodes: Vec<VerifiedNode>,
}

/// Creates a profile: keys (or the given ones), an account on every node, one signed
/// record listing every home, published to each. Nothing is written locally unless
/// all of that worked.
/// `resolve` and `net_config` are the run's settings, kept in the profile.
pub async fn create(
    dir: &Path,
    init: InitOptions,
    resolve: &[(String, NodeUrl)],
    net_config: &NetConfig,
) -> Result<Created> {
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
    let net = Net::new(net_config.clone())?;
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
    for p in &net_config.ca_certs {
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
        resolve: resolve.iter().cloned().collect(),
        gateway: None,
        legacy: Default::default(),
        legacy_confirmed: Default::default(),
        tls: crate::profile::TlsSettings { ca_certs },
        dns: crate::profile::DnsSettings {
            server: net_config.dns_server,
        },
    };
    let profile = Profile::create(dir, config, &identity, &signed)?;
    Ok(Created {
        profile,
        followed,
        nodes: seen,
    })
}

/// Signs a new record from the configured homes and publishes it on each of them. The
/// local copy is replaced when at least one node took it.
pub async fn publish(me: &mut Profile, net: &Net, keys: &Keyring) -> Result<PublishReport> {
    let prev = me.record_body()?.sequence;
    let signed = sign_record(me.address(), keys, &me.config.homes, Some(prev))?;
    let sequence =
        sealpost_proto::codec::Codec::decode(&signed.body).map(|r: MailboxRecord| r.sequence)?;
    let address = me.address().clone();
    let urls: Vec<NodeUrl> = me.config.homes.iter().map(|h| h.url.clone()).collect();
    let answers = join_all(
        urls.iter()
            .map(|u| net.publish_record(u, &address, &signed))
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
    me.save_record(signed)?;
    Ok(PublishReport { sequence, results })
}

/// Replaces the profile's key: a new key, endorsed by the current one (an OpenPGP
/// certification, so contacts see "signed by the old key"), registered on every home
/// (each keeps our mailbox and address) and published in a new record on every home.
/// Every home must take it; otherwise the new key stays in [`ROTATING_FILE`] and the next
/// call finishes the rotation with it. The old secret key is kept for old letters.
pub async fn rotate_key(
    me: &mut Profile,
    net: &Net,
    old: &Keyring,
    passphrase: Option<&str>,
) -> Result<RotateReport> {
    let address = me.address().clone();
    let old_fp = me.config.fingerprint.clone();
    let pending_path = me.path(ROTATING_FILE);
    let resumed = match crate::fsutil::read_optional(&pending_path)? {
        Some(bytes) => {
            Some(SecretIdentity::from_bytes(&bytes).map_err(|e| Error::corrupt(&pending_path, e))?)
        }
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
    let homes = me.config.homes.clone();
    let answers = join_all(
        homes
            .iter()
            .map(|h| net.register(&h.url, &armored, None))
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
    let prev = me.record_body()?.sequence;
    let signed = sign_record(&address, &new_keys, &homes, Some(prev))?;
    let sequence =
        sealpost_proto::codec::Codec::decode(&signed.body).map(|r: MailboxRecord| r.sequence)?;
    let published = join_all(
        homes
            .iter()
            .map(|h| net.publish_record(&h.url, &address, &signed))
            .collect(),
    )
    .await;
    let mut results = Vec::new();
    for (h, r) in homes.iter().zip(published) {
        r?;
        results.push((h.url.clone(), Ok(())));
    }
    let new = next.fingerprint().to_hex();
    me.replace_identity(next, signed)?;
    Ok(RotateReport {
        old: old_fp,
        new,
        publish: PublishReport { sequence, results },
    })
}

/// Trusts `url` again if it is a home; otherwise registers there, adds it to the
/// record and publishes the record everywhere. Returns the report when it published.
pub async fn trust_node(
    me: &mut Profile,
    net: &Net,
    directory: &Directory,
    url: &NodeUrl,
    keys: &Keyring,
    invite: Option<&str>,
) -> Result<Option<PublishReport>> {
    if let Some(h) = me.config.homes.iter_mut().find(|h| &h.url == url) {
        h.trusted = true;
        me.save_config()?;
        return Ok(None);
    }
    if me.config.homes.len() >= MAX_HOMES {
        return Err(Error::input(
            "node",
            format!("a record lists at most {MAX_HOMES} homes"),
        ));
    }
    let armored = cert_to_armored(&me.cert());
    let (home, node) = register(net, url, &armored, invite).await?;
    if let Some(h) = me.config.homes.iter_mut().find(|h| h.url == home.url) {
        // The URL given was another name of a home we have.
        h.trusted = true;
        me.save_config()?;
        return Ok(None);
    }
    let before = me.config.clone();
    me.config.homes.push(home);
    match publish(me, net, keys).await {
        Ok(report) => {
            me.save_config()?;
            directory.remember_node(&node);
            directory.save_nodes()?;
            Ok(Some(report))
        }
        Err(e) => {
            me.config = before;
            Err(e)
        }
    }
}

/// Stops fetching from and submitting through `url`. With `drop`, also removes it from
/// the record and publishes the record on the remaining homes.
pub async fn untrust_node(
    me: &mut Profile,
    net: &Net,
    url: &NodeUrl,
    drop: bool,
    keys: &Keyring,
) -> Result<Option<PublishReport>> {
    let Some(pos) = me.config.homes.iter().position(|h| &h.url == url) else {
        return Err(Error::NotFound {
            what: "home node",
            id: url.to_string(),
        });
    };
    let others_trusted = me
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
    let before = me.config.clone();
    if !drop {
        me.config.homes[pos].trusted = false;
        me.save_config()?;
        return Ok(None);
    }
    me.config.homes.remove(pos);
    match publish(me, net, keys).await {
        Ok(report) => {
            me.save_config()?;
            Ok(Some(report))
        }
        Err(e) => {
            me.config = before;
            Err(e)
        }
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
