//! [`Directory`], the part of a [`crate::Client`] that finds people and nodes: a contact's
//! signed mailbox record (from the node its domain resolves to, or, when that node is down,
//! from the homes of the record seen last), trust on first use of its certificate (the
//! pins of [`ContactStore`]), and the verified descriptors of home nodes (cached, so that
//! mail for a node that is down can still be wrapped for it and queued). It owns the
//! resolve table of the run, the contacts and the node cache; what it needs of the user's
//! own profile (their address, certificate and record) is passed in. Deciding between
//! Sealpost and legacy e-mail ([`crate::route`]) and finding the gateway
//! ([`crate::gateway`]) are built on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;

use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::SignedDescriptor;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::{Address, NodeUrl};

use crate::api::{Net, VerifiedNode};
use crate::contacts::{Contact, ContactStore, PinOutcome, PinSource, key_changed, pin};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::now;
use crate::profile::{Profile, to_json};
use crate::refresh;
use crate::resolve::Resolver;

pub const NODES_FILE: &str = "nodes.json";

/// Verified node descriptors seen, by node URL (`nodes.json`).
pub struct NodeCache {
    path: PathBuf,
    map: BTreeMap<String, String>,
    dirty: bool,
}

impl NodeCache {
    pub fn load(profile_dir: &Path) -> Result<Self> {
        let path = profile_dir.join(NODES_FILE);
        let map = match fsutil::read_optional(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?,
            None => BTreeMap::new(),
        };
        Ok(NodeCache {
            path,
            map,
            dirty: false,
        })
    }

    pub fn put(&mut self, node: &VerifiedNode) {
        let v = base64::engine::general_purpose::STANDARD.encode(node.signed.encode());
        if self.map.get(node.descriptor.url.as_str()) != Some(&v) {
            self.map.insert(node.descriptor.url.to_string(), v);
            self.dirty = true;
        }
    }

    /// The cached descriptor of `url`, verified again.
    pub fn get(&self, url: &NodeUrl) -> Option<VerifiedNode> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.map.get(url.as_str())?)
            .ok()?;
        let signed = SignedDescriptor::decode(&bytes).ok()?;
        let (descriptor, cert) = signed.verify().ok()?;
        (&descriptor.url == url).then_some(VerifiedNode {
            descriptor,
            cert,
            signed,
        })
    }

    pub fn save(&mut self) -> Result<()> {
        if self.dirty {
            fsutil::write_atomic(&self.path, &to_json(&self.map))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// A recipient, ready to be sealed to and wrapped for.
#[derive(Debug)]
pub struct Recipient {
    pub address: Address,
    pub cert: Cert,
    pub record: MailboxRecord,
    /// `None` for ourselves; otherwise the pin to save once the letter is queued.
    pub pin: Option<PinOutcome>,
    /// The record came from the local cache because no node that serves it answered.
    pub from_cache: bool,
}

/// A looked-up record: the signed bytes, the body, its certificate, and whether it is the
/// cached copy.
pub struct FoundRecord {
    pub signed: SignedRecord,
    pub record: MailboxRecord,
    pub cert: Cert,
    pub from_cache: bool,
}

fn check_record(
    address: &Address,
    signed: SignedRecord,
    now: u64,
) -> Result<(SignedRecord, MailboxRecord, Cert)> {
    let bad = |reason: String| Error::BadRecord {
        what: "mailbox record",
        address: address.to_string(),
        reason,
    };
    let (record, cert) = signed.verify(now).map_err(|e| bad(e.to_string()))?;
    if &record.address != address {
        return Err(bad(format!("it is the record of {}", record.address)));
    }
    Ok((signed, record, cert))
}

/// Records, pins and node descriptors: see the module documentation.
pub struct Directory {
    net: Net,
    /// The user's homes, through which lookups at any other node go (oblivious lookups,
    /// [`crate::ohttp`]); empty: every node is asked directly.
    relays: Vec<NodeUrl>,
    resolver: Resolver,
    contacts: ContactStore,
    nodes: Mutex<NodeCache>,
    /// `--refresh-after SECS` (hidden): see [`Directory::set_refresh_after`].
    refresh_after: Option<u64>,
}

/// What [`Directory::refresh_due`] did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Contacts whose record was fetched again, with the pinned key.
    pub refreshed: Vec<Address>,
    /// Key changes seen (now pending), as the refusal a send would give.
    pub changed: Vec<String>,
    /// Contacts that could not be looked up, and why.
    pub failed: Vec<(Address, String)>,
}

impl Directory {
    /// The directory of the profile in `profile_dir` (its contacts and node cache), looking
    /// domains up with `resolver` and nodes through `net`.
    /// `relays`: the user's homes (see [`Directory::fetch_descriptor`]).
    pub fn open(
        profile_dir: &Path,
        net: Net,
        resolver: Resolver,
        relays: Vec<NodeUrl>,
    ) -> Result<Directory> {
        Ok(Directory {
            net,
            relays,
            resolver,
            contacts: ContactStore::new(profile_dir),
            nodes: Mutex::new(NodeCache::load(profile_dir)?),
            refresh_after: None,
        })
    }

    /// The pinned contacts.
    pub fn contacts(&self) -> &ContactStore {
        &self.contacts
    }

    /// Which node serves a domain (the run's `--resolve` entries, the profile's table).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub(crate) fn net(&self) -> &Net {
        &self.net
    }

    /// Whether `node` is asked through a home rather than directly.
    fn relayed(&self, node: &NodeUrl) -> bool {
        !self.relays.is_empty() && !self.relays.contains(node)
    }

    /// Whether `e` says that the home `relay` itself could not be reached (so the next home
    /// is tried).
    fn home_down(relay: &NodeUrl, e: &Error) -> bool {
        matches!(e, Error::Unreachable { url, .. } if url == relay.as_str())
            || matches!(e, Error::Node { url, status, .. } if url == relay.as_str() && *status >= 500)
    }

    /// The verified descriptor of `node`: from the node itself when it is one of the
    /// user's homes (or lookups are direct), else fetched by the first home that answers;
    /// when none does, [`Error::HomesDown`]: the node is never asked directly, a letter
    /// waits in the outbox instead ([`crate::letters`]). The caller compares URL and node key.
    pub async fn fetch_descriptor(&self, node: &NodeUrl) -> Result<VerifiedNode> {
        if !self.relayed(node) {
            return self.net.descriptor(node).await;
        }
        let mut down = Vec::new();
        for relay in &self.relays {
            match self.net.descriptor_via(relay, node).await {
                Err(e) if Self::home_down(relay, &e) => down.push(e.to_string()),
                other => return other,
            }
        }
        Err(Error::HomesDown {
            details: down.join("; "),
        })
    }

    /// The signed record of `address` at `node`: directly from one of the user's homes
    /// (or when lookups are direct), else obliviously through the first home that answers
    /// (`node`'s OHTTP key from its descriptor, fetched through that home); when none
    /// does, [`Error::HomesDown`].
    async fn fetch_record(&self, node: &NodeUrl, address: &Address) -> Result<SignedRecord> {
        if !self.relayed(node) {
            return self.net.get_record(node, address).await;
        }
        let mut down = Vec::new();
        for relay in &self.relays {
            let answer = match self.net.descriptor_via(relay, node).await {
                Ok(target) if &target.descriptor.url != node => Err(Error::protocol(
                    node,
                    format!(
                        "its descriptor names another URL ({})",
                        target.descriptor.url
                    ),
                )),
                Ok(target) => self.net.get_record_via(relay, &target, address).await,
                Err(e) => Err(e),
            };
            match answer {
                Err(e) if Self::home_down(relay, &e) => down.push(e.to_string()),
                other => return other,
            }
        }
        Err(Error::HomesDown {
            details: down.join("; "),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, NodeCache> {
        self.nodes
            .lock()
            .expect("invariant: node cache lock not poisoned")
    }

    /// Keeps a verified descriptor (written by [`Directory::save_nodes`]).
    pub fn remember_node(&self, node: &VerifiedNode) {
        self.cache().put(node);
    }

    /// The cached descriptor of `url`, verified again.
    pub fn cached_node(&self, url: &NodeUrl) -> Option<VerifiedNode> {
        self.cache().get(url)
    }

    /// Finds and verifies the record of `address`: from the node its domain resolves to,
    /// else from the homes listed in `cached`, else `cached` itself while it is valid. A
    /// fetched record older than `cached` (same key) loses to it: no rollback.
    pub async fn lookup_record(
        &self,
        address: &Address,
        cached: Option<&SignedRecord>,
    ) -> Result<FoundRecord> {
        match self.fetch_fresh_record(address, cached).await {
            Ok(found) => Ok(found),
            Err(e) => match cached.and_then(|c| check_record(address, c.clone(), now()).ok()) {
                Some((signed, record, cert)) => Ok(FoundRecord {
                    signed,
                    record,
                    cert,
                    from_cache: true,
                }),
                None => Err(e),
            },
        }
    }

    /// [`Directory::lookup_record`] without its last resort: when no node answers, the
    /// error of the first one.
    async fn fetch_fresh_record(
        &self,
        address: &Address,
        cached: Option<&SignedRecord>,
    ) -> Result<FoundRecord> {
        let now = now();
        let cached = cached.and_then(|c| check_record(address, c.clone(), now).ok());
        let mut sources = vec![self.resolver.node_for(address.domain())?];
        if let Some((_, body, _)) = &cached {
            for h in &body.homes {
                if !sources.contains(&h.url) {
                    sources.push(h.url.clone());
                }
            }
        }
        let mut first_err: Option<Error> = None;
        for src in &sources {
            let found = match self.fetch_record(src, address).await {
                Ok(signed) => check_record(address, signed, now),
                Err(e) => Err(e),
            };
            match found {
                Ok((signed, record, cert)) => {
                    if let Some((cs, cr, cc)) = &cached
                        && cc.fingerprint() == cert.fingerprint()
                        && cr.sequence > record.sequence
                    {
                        return Ok(FoundRecord {
                            signed: cs.clone(),
                            record: cr.clone(),
                            cert: cc.clone(),
                            from_cache: false,
                        });
                    }
                    return Ok(FoundRecord {
                        signed,
                        record,
                        cert,
                        from_cache: false,
                    });
                }
                // Every other source would be asked through the same homes.
                Err(e @ Error::HomesDown { .. }) => {
                    first_err.get_or_insert(e);
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.expect("invariant: at least one source was asked"))
    }

    /// Looks up `address` and applies TOFU. Nothing is saved, except a key change, which
    /// is recorded as pending (so that `contact accept` can take it) and refused.
    /// `me`: the user's own address resolves to their own profile, without a lookup.
    pub async fn resolve_recipient(&self, me: &Profile, address: &Address) -> Result<Recipient> {
        if address == me.address() {
            return Ok(Recipient {
                address: address.clone(),
                cert: me.cert(),
                record: me.record_body()?,
                pin: None,
                from_cache: false,
            });
        }
        let existing = self.contacts.get(address)?;
        let cached = existing.as_ref().and_then(Contact::cached_record);
        let found = self.lookup_record(address, cached.as_ref()).await?;
        let now = now();
        let mut outcome = pin(
            existing,
            address,
            &found.cert,
            Some((&found.signed, found.record.sequence)),
            PinSource::Record,
            now,
        );
        if !found.from_cache {
            let next = refresh::next_refresh(now, refresh::REFRESH_INTERVAL, &mut rand::rng());
            outcome.contact_mut().fetched(now, next);
        }
        if let PinOutcome::Changed(c) = &outcome {
            self.contacts.save(c)?;
            return Err(key_changed(c));
        }
        let cert = outcome.contact().parsed_cert()?;
        Ok(Recipient {
            address: address.clone(),
            cert,
            record: found.record,
            pin: Some(outcome),
            from_cache: found.from_cache,
        })
    }

    /// A recipient of a letter: a known contact from the record kept with its pin, with
    /// no lookup at all (`spec/client.md` §3, "Known contacts"; [`crate::refresh`] keeps
    /// it fresh); anyone else (no pin, no kept record, or one that expired) is looked up
    /// ([`Directory::resolve_recipient`]). A key change held pending is refused until
    /// accepted, as a lookup would refuse it.
    pub async fn recipient(&self, me: &Profile, address: &Address) -> Result<Recipient> {
        if address != me.address()
            && let Some(r) = self.known_recipient(address)?
        {
            return Ok(r);
        }
        self.resolve_recipient(me, address).await
    }

    fn known_recipient(&self, address: &Address) -> Result<Option<Recipient>> {
        let Some(c) = self.contacts.get(address)? else {
            return Ok(None);
        };
        if c.pending.is_some() {
            return Err(key_changed(&c));
        }
        let Some(signed) = c.cached_record() else {
            return Ok(None);
        };
        let Ok((_, record, cert)) = check_record(address, signed, now()) else {
            return Ok(None);
        };
        if cert.fingerprint().to_hex() != c.fingerprint {
            return Ok(None);
        }
        Ok(Some(Recipient {
            address: address.clone(),
            cert: c.parsed_cert()?,
            record,
            pin: Some(PinOutcome::Same(c)),
            from_cache: false,
        }))
    }

    /// `--refresh-after SECS` (hidden): a record fetched that long ago is due
    /// ([`refresh::due_at`]).
    pub fn set_refresh_after(&mut self, secs: Option<u64>) {
        self.refresh_after = secs;
    }

    /// Fetches again the records of the contacts due at `now` ([`refresh::due`]), through
    /// the same lookups as a first contact, and applies trust on first use: the same key
    /// refreshes the record (and its homes' descriptors), another key is held pending (as
    /// a lookup at send time did). A contact whose lookup fails is tried again after a
    /// quarter of the interval; when no home answers, the rest wait for the next run.
    pub async fn refresh_due(&self, now: u64) -> Result<RefreshReport> {
        let mut report = RefreshReport::default();
        for address in refresh::due(&self.contacts.all()?, now, self.refresh_after) {
            let Some(mut existing) = self.contacts.get(&address)? else {
                continue;
            };
            let cached = existing.cached_record();
            let found = match self.fetch_fresh_record(&address, cached.as_ref()).await {
                Ok(f) => f,
                Err(e) => {
                    let down = matches!(e, Error::HomesDown { .. });
                    existing.refresh_at = Some(refresh::next_refresh(
                        now,
                        refresh::REFRESH_INTERVAL / 4,
                        &mut rand::rng(),
                    ));
                    self.contacts.save(&existing)?;
                    report.failed.push((address, e.to_string()));
                    if down {
                        break;
                    }
                    continue;
                }
            };
            let mut outcome = pin(
                Some(existing),
                &address,
                &found.cert,
                Some((&found.signed, found.record.sequence)),
                PinSource::Record,
                now,
            );
            let next = refresh::next_refresh(now, refresh::REFRESH_INTERVAL, &mut rand::rng());
            outcome.contact_mut().fetched(now, next);
            self.contacts.save(outcome.contact())?;
            if let PinOutcome::Changed(c) = &outcome {
                report.changed.push(key_changed(c).to_string());
                continue;
            }
            // The homes' descriptors too: hops are wrapped for what the homes publish now.
            for home in &found.record.homes {
                let _ = self.fetch_home_node(home).await;
            }
            report.refreshed.push(address);
        }
        self.save_nodes()?;
        Ok(report)
    }

    /// Makes the record of `address` due at once (a delivery reported a change), if it is
    /// a contact.
    pub fn refresh_soon(&self, address: &Address) -> Result<()> {
        if let Some(mut c) = self.contacts.get(address)? {
            c.refresh_at = Some(0);
            self.contacts.save(&c)?;
        }
        Ok(())
    }

    /// Saves the pin a [`Recipient`] carries.
    pub fn commit_pin(&self, r: &Recipient) -> Result<()> {
        match &r.pin {
            Some(p) => self.contacts.save(p.contact()),
            None => Ok(()),
        }
    }

    /// `contact add`: looks up, pins (or refreshes) and saves. Also returns the homes whose
    /// descriptor could not be checked, and why.
    pub async fn add_contact(
        &self,
        me: &Profile,
        address: &Address,
    ) -> Result<(Recipient, Vec<(NodeUrl, String)>)> {
        if address == me.address() {
            return Err(Error::input("contact", "that is your own address"));
        }
        let r = self.resolve_recipient(me, address).await?;
        // Check each home now and keep its descriptor, so that mail can still be wrapped
        // for a home that is down later. A home that does not answer is not an error here.
        let mut unchecked = Vec::new();
        for home in &r.record.homes {
            if let Err(e) = self.fetch_home_node(home).await {
                unchecked.push((home.url.clone(), e.to_string()));
            }
        }
        self.commit_pin(&r)?;
        self.save_nodes()?;
        Ok((r, unchecked))
    }

    /// The descriptor of a home: the cached one when it carries the node key and URL the
    /// record names ([`Directory::refresh_due`] fetches a contact's anew), else
    /// [`Directory::fetch_home_node`].
    pub async fn home_node(&self, home: &Home) -> Result<VerifiedNode> {
        match self.cached_node(&home.url) {
            Some(n) if n.descriptor.node_key == home.node_key => Ok(n),
            _ => self.fetch_home_node(home).await,
        }
    }

    /// The verified descriptor of a recipient's home, fetched; it must carry the node key
    /// the record names. When the node cannot be reached, the cached descriptor serves
    /// (the hop is then queued by our node until that node is back).
    pub async fn fetch_home_node(&self, home: &Home) -> Result<VerifiedNode> {
        let fresh = self.fetch_descriptor(&home.url).await;
        let node = match fresh {
            Ok(n) => n,
            Err(e @ (Error::Unreachable { .. } | Error::Node { .. } | Error::HomesDown { .. })) => {
                let cached = self.cached_node(&home.url);
                match cached {
                    Some(n) if n.descriptor.node_key == home.node_key => n,
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.accept_home_node(home, node)
    }

    /// The verified descriptor of a recipient's home, fetched now (through a home of ours
    /// when lookups are oblivious); it must carry the node key and URL the record names.
    /// Unlike [`Directory::home_node`], a node that cannot be reached now is an error, not
    /// its cached descriptor: one-home delivery then picks the next home
    /// ([`crate::send::choose_home`]).
    pub async fn reachable_home_node(&self, home: &Home) -> Result<VerifiedNode> {
        let node = self.fetch_descriptor(&home.url).await?;
        self.accept_home_node(home, node)
    }

    /// `node` as the descriptor of `home` when it carries the node key and URL the record
    /// names; then remembered in the node cache.
    fn accept_home_node(&self, home: &Home, node: VerifiedNode) -> Result<VerifiedNode> {
        if node.descriptor.node_key != home.node_key {
            return Err(Error::NodeKeyMismatch {
                url: home.url.to_string(),
                expected: hex::encode(home.node_key),
                found: hex::encode(node.descriptor.node_key),
            });
        }
        if node.descriptor.url != home.url {
            return Err(Error::protocol(
                &home.url,
                format!("its descriptor names another URL ({})", node.descriptor.url),
            ));
        }
        self.remember_node(&node);
        Ok(node)
    }

    /// The descriptor of one of the user's own homes, as [`Directory::home_node`] (the
    /// cached one was verified when the node became a home).
    pub async fn own_home_node(&self, home: &Home) -> Result<VerifiedNode> {
        self.home_node(home).await
    }

    /// Writes the node cache if it changed.
    pub fn save_nodes(&self) -> Result<()> {
        self.cache().save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Options};
    use crate::testutil::{dead, record, stub};
    use sealpost_proto::identity::SecretIdentity;

    fn client(dir: &Path, domain_node: &NodeUrl) -> Client {
        drop(crate::profile::tests::sample(dir, "alice@alpha.test", None));
        let options = Options {
            resolve: vec![("beta.test".into(), domain_node.clone())],
            direct_lookups: true,
            ..Options::default()
        };
        Client::open(dir, &options).unwrap()
    }

    const PATH: &str = "/v1/records/bob@beta.test";

    #[tokio::test]
    async fn first_use_pins_and_a_down_domain_node_falls_back_to_the_cached_homes() {
        let tmp = tempfile::tempdir().unwrap();
        let (domain, domain_routes) = stub().await;
        let (home2, home2_routes) = stub().await;
        let c = client(tmp.path(), &domain);
        let bob = Address::parse("bob@beta.test").unwrap();
        let id = SecretIdentity::generate(&bob, None).unwrap();
        let r1 = record(&id, &bob, &[&domain, &home2], 10);
        domain_routes
            .lock()
            .unwrap()
            .insert(PATH.into(), (200, r1.encode()));
        home2_routes
            .lock()
            .unwrap()
            .insert(PATH.into(), (200, r1.encode()));

        let r = c.add_contact(&bob).await.unwrap().0;
        assert!(matches!(r.pin, Some(PinOutcome::New(_))));
        assert_eq!(
            c.contacts().get(&bob).unwrap().unwrap().fingerprint,
            id.fingerprint().to_hex()
        );

        // The domain's node goes away (and so does its copy): the record comes from the
        // other home.
        domain_routes.lock().unwrap().clear();
        drop(c);
        let options = Options {
            resolve: vec![("beta.test".into(), dead())],
            direct_lookups: true,
            ..Options::default()
        };
        let c = Client::open(tmp.path(), &options).unwrap();
        let r = c.resolve_recipient(&bob).await.unwrap();
        assert!(!r.from_cache, "fresh from the second home");
        assert_eq!(r.record.sequence, 10);

        // Nobody has it any more: the cached record serves while it is valid.
        home2_routes.lock().unwrap().clear();
        let r = c.resolve_recipient(&bob).await.unwrap();
        assert!(r.from_cache);
        assert_eq!(r.record.homes.len(), 2);
    }

    #[tokio::test]
    async fn an_older_record_does_not_roll_back_and_a_new_key_is_held_pending() {
        let tmp = tempfile::tempdir().unwrap();
        let (domain, routes) = stub().await;
        let c = client(tmp.path(), &domain);
        let bob = Address::parse("bob@beta.test").unwrap();
        let id = SecretIdentity::generate(&bob, None).unwrap();
        routes.lock().unwrap().insert(
            PATH.into(),
            (200, record(&id, &bob, &[&domain], 20).encode()),
        );
        c.add_contact(&bob).await.unwrap();

        routes.lock().unwrap().insert(
            PATH.into(),
            (200, record(&id, &bob, &[&domain], 5).encode()),
        );
        let r = c.resolve_recipient(&bob).await.unwrap();
        assert_eq!(r.record.sequence, 20, "the newer cached record wins");

        let other = SecretIdentity::generate(&bob, None).unwrap();
        routes.lock().unwrap().insert(
            PATH.into(),
            (200, record(&other, &bob, &[&domain], 30).encode()),
        );
        let e = c.resolve_recipient(&bob).await.err().unwrap();
        assert!(matches!(e, Error::KeyChanged { .. }), "{e}");
        assert_eq!(e.exit_code(), 3);
        let saved = c.contacts().get(&bob).unwrap().unwrap();
        assert_eq!(saved.fingerprint, id.fingerprint().to_hex(), "pin kept");
        assert_eq!(
            saved.pending.unwrap().fingerprint,
            other.fingerprint().to_hex()
        );
    }

    #[tokio::test]
    async fn unknown_and_foreign_records_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (domain, routes) = stub().await;
        let c = client(tmp.path(), &domain);
        let bob = Address::parse("bob@beta.test").unwrap();
        let e = c.resolve_recipient(&bob).await.err().unwrap();
        assert!(matches!(e, Error::UnknownAddress { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);

        // A valid record, but for someone else.
        let carol = Address::parse("carol@beta.test").unwrap();
        let id = SecretIdentity::generate(&carol, None).unwrap();
        routes.lock().unwrap().insert(
            PATH.into(),
            (200, record(&id, &carol, &[&domain], 1).encode()),
        );
        let e = c.resolve_recipient(&bob).await.err().unwrap();
        assert!(matches!(e, Error::BadRecord { .. }), "{e}");
        routes
            .lock()
            .unwrap()
            .insert(PATH.into(), (200, b"garbage".to_vec()));
        let e = c.resolve_recipient(&bob).await.err().unwrap();
        assert!(matches!(e, Error::BadRecord { .. }), "{e}");
        assert!(c.contacts().get(&bob).unwrap().is_none(), "nothing pinned");
    }
}
