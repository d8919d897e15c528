//! The profile directory: the user's secret key, configuration (address, home nodes, resolve
//! table) and the published mailbox record. Contacts, messages and the outbox live in
//! sub-directories owned by their own modules.
//!
//! ```text
//! PROFILE/
//!   config.json     address, fingerprint, home nodes (+ trusted flag), resolve table,
//!                   gateway for legacy e-mail, legacy domains, legacy addresses the
//!                   user confirmed, extra TLS roots, DNS server
//!   secret.key      armored OpenPGP secret key (0600; locked when a passphrase was given)
//!   record.bin      the signed mailbox record last published
//!   retired-keys/   FINGERPRINT.key: secret keys replaced by rotate-key (old letters)
//!   rotating.key    only while rotate-key is unfinished: the next secret key
//!   nodes.json      verified node descriptors seen, by URL (used when a node is down)
//!   contacts/       ADDRESS.json: pinned certificates (TOFU)
//!   messages/       ID.json (what list shows) + the sealed letter as received: in
//!                   FIRST-ID.pack with its fetched batch, or ID.sealed (a sent copy)
//!   outbox/         ID.json: hop wrappers not yet accepted by one of our nodes
//!   outbox-copies/  ID.json: the same for sent copies (to our own mailbox)
//!   sent/           QUEUEID.json: the queue id of each hop a node accepted
//!   tmp/            editor drafts
//!   lock            flock: one sealpost process per profile at a time
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sealpost_proto::codec::Codec;
use sealpost_proto::identity::{Keyring, SecretIdentity};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::{Address, MailboxId, NodeUrl};

use crate::error::{Error, Result};
use crate::fsutil::{self, ProfileLock};
use crate::resolve::parse_domain;

/// Version of the profile layout this code reads and writes.
pub const PROFILE_VERSION: u32 = 1;

pub const CONFIG_FILE: &str = "config.json";
pub const SECRET_FILE: &str = "secret.key";
pub const RECORD_FILE: &str = "record.bin";
/// Secret keys replaced by `rotate-key`, one `FINGERPRINT.key` each: still used to open
/// letters sealed to them.
pub const RETIRED_DIR: &str = "retired-keys";
/// The next key while `rotate-key` is under way: written before any node learns it, so that
/// an interrupted rotation resumes with the same key; removed when the switch is done.
pub const ROTATING_FILE: &str = "rotating.key";
/// Steps of the switch to a new key ([`Profile::replace_identity`]), in order.
const SWITCH_STEPS: usize = 5;

/// One of the user's home nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeEntry {
    pub url: NodeUrl,
    /// The node's Ed25519 key, 64 hex digits, as in its descriptor and our record.
    pub node_key: String,
    pub mailbox: MailboxId,
    /// Fetch from and submit through this node. An untrusted home stays in the record until
    /// the user drops it.
    pub trusted: bool,
}

impl HomeEntry {
    pub fn node_key_bytes(&self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.node_key, &mut out).map_err(|_| {
            Error::corrupt(
                CONFIG_FILE,
                format!("node key of {} is not 64 hex digits", self.url),
            )
        })?;
        Ok(out)
    }

    pub fn to_home(&self) -> Result<Home> {
        Ok(Home {
            url: self.url.clone(),
            node_key: self.node_key_bytes()?,
            mailbox: self.mailbox,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub address: Address,
    /// Fingerprint of the user's key, upper-case hex without spaces.
    pub fingerprint: String,
    pub homes: Vec<HomeEntry>,
    /// Persistent domain → node URL table; `--resolve` entries override it for one run.
    #[serde(default)]
    pub resolve: BTreeMap<String, NodeUrl>,
    /// The gateway letters to legacy e-mail addresses are sealed to (`gateway set`); when
    /// unset, `gateway@` the user's own domain if that domain's node publishes it.
    /// Written only when set, so older clients still read the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Address>,
    /// Domains known to have no Sealpost node (`legacy add`): their addresses go through
    /// the gateway without being looked up. The resolve table wins over this list.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub legacy: BTreeSet<String>,
    /// Legacy e-mail addresses the user agreed to write to without end-to-end encryption
    /// (`--legacy ADDR` or a yes on the terminal): later letters to them do not ask again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub legacy_confirmed: BTreeSet<Address>,
    /// TLS settings for talking to nodes.
    #[serde(default, skip_serializing_if = "TlsSettings::is_empty")]
    pub tls: TlsSettings,
    /// DNS settings (which server answers the MX questions of legacy routing).
    #[serde(default, skip_serializing_if = "DnsSettings::is_empty")]
    pub dns: DnsSettings,
}

/// `tls` in `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM files of certificate authorities trusted besides the built-in roots and the
    /// system's trust store (a node whose operator runs their own CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certs: Vec<PathBuf>,
}

impl TlsSettings {
    pub fn is_empty(&self) -> bool {
        self.ca_certs.is_empty()
    }
}

/// `dns` in `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// `IP:PORT` of the DNS server to ask; unset: the system's (`/etc/resolv.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<std::net::SocketAddr>,
}

impl DnsSettings {
    pub fn is_empty(&self) -> bool {
        self.server.is_none()
    }
}

impl Config {
    pub fn trusted_homes(&self) -> impl Iterator<Item = &HomeEntry> {
        self.homes.iter().filter(|h| h.trusted)
    }

    pub fn home(&self, url: &NodeUrl) -> Option<&HomeEntry> {
        self.homes.iter().find(|h| &h.url == url)
    }

    fn check(&self, path: &Path) -> Result<()> {
        if self.version != PROFILE_VERSION {
            return Err(Error::corrupt(
                path,
                format!(
                    "layout version {} (this sealpost reads {PROFILE_VERSION})",
                    self.version
                ),
            ));
        }
        if self.homes.is_empty() {
            return Err(Error::corrupt(path, "lists no home node"));
        }
        for h in &self.homes {
            h.node_key_bytes().map_err(|_| {
                Error::corrupt(path, format!("node key of {} is not 64 hex digits", h.url))
            })?;
        }
        Ok(())
    }
}

/// An open profile. Holds the profile lock for as long as it lives.
pub struct Profile {
    dir: PathBuf,
    _lock: ProfileLock,
    pub config: Config,
    identity: SecretIdentity,
    record: SignedRecord,
}

/// `$XDG_DATA_HOME/sealpost`, or `~/.local/share/sealpost`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(x.join("sealpost"));
    }
    match std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        Some(home) => Ok(home.join(".local/share/sealpost")),
        None => Err(Error::NoProfileDir),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::profile_io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, e))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("invariant: profile types serialize to JSON");
    out.push(b'\n');
    out
}

impl Profile {
    /// Opens the profile in `dir` and takes its lock.
    pub fn open(dir: &Path) -> Result<Profile> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(Error::NoProfile {
                dir: dir.to_path_buf(),
            });
        }
        let lock = ProfileLock::acquire_waiting(dir, fsutil::LOCK_WAIT)?;
        let mut config: Config = read_json(&config_path)?;
        config.check(&config_path)?;

        let secret_path = dir.join(SECRET_FILE);
        let secret = std::fs::read(&secret_path).map_err(|e| Error::profile_io(&secret_path, e))?;
        let identity =
            SecretIdentity::from_bytes(&secret).map_err(|e| Error::corrupt(&secret_path, e))?;
        finish_switch(dir, &mut config, &identity)?;

        let record_path = dir.join(RECORD_FILE);
        let bytes = std::fs::read(&record_path).map_err(|e| Error::profile_io(&record_path, e))?;
        let record = SignedRecord::decode(&bytes).map_err(|e| Error::corrupt(&record_path, e))?;
        let body =
            MailboxRecord::decode(&record.body).map_err(|e| Error::corrupt(&record_path, e))?;
        if body.address != config.address {
            return Err(Error::corrupt(
                &record_path,
                "is for another address than config.json names",
            ));
        }
        Ok(Profile {
            dir: dir.to_path_buf(),
            _lock: lock,
            config,
            identity,
            record,
        })
    }

    /// Creates a profile in `dir`, which must not exist or be empty. Everything is written
    /// into a staging directory next to it and renamed into place, so a failed `init`
    /// leaves nothing behind.
    pub fn create(
        dir: &Path,
        config: Config,
        identity: &SecretIdentity,
        record: &SignedRecord,
    ) -> Result<Profile> {
        install(dir, |staging| {
            fsutil::write_atomic(&staging.join(SECRET_FILE), identity.to_armored().as_bytes())?;
            fsutil::write_atomic(&staging.join(RECORD_FILE), &record.encode())?;
            fsutil::write_atomic(&staging.join(CONFIG_FILE), &to_json(&config))
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn identity(&self) -> &SecretIdentity {
        &self.identity
    }

    pub fn cert(&self) -> Cert {
        self.identity.public_cert()
    }

    pub fn address(&self) -> &Address {
        &self.config.address
    }

    pub fn record(&self) -> &SignedRecord {
        &self.record
    }

    pub fn record_body(&self) -> Result<MailboxRecord> {
        MailboxRecord::decode(&self.record.body)
            .map_err(|e| Error::corrupt(self.path(RECORD_FILE), e))
    }

    /// Unlocks the secret key; `passphrase` is needed when the key is locked. Retired keys
    /// (same passphrase) are added for decryption.
    pub fn unlock(&self, passphrase: Option<&str>) -> Result<Keyring> {
        let mut keys = self.identity.unlock(passphrase)?;
        for path in fsutil::list_files(&self.path(RETIRED_DIR), ".key")? {
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            let retired =
                SecretIdentity::from_bytes(&bytes).map_err(|e| Error::corrupt(&path, e))?;
            keys.add_decryptors(retired.unlock(passphrase)?);
        }
        Ok(keys)
    }

    /// Makes `identity` (the key in [`ROTATING_FILE`]) the profile's key after a rotation,
    /// with its first `record`; the old secret key moves to [`RETIRED_DIR`] first, so
    /// nothing sealed to it is lost. A crash at any point leaves a profile that opens: with
    /// the old key and the rotation resumable, or with the new one ([`finish_switch`]).
    pub fn replace_identity(
        &mut self,
        identity: SecretIdentity,
        record: SignedRecord,
    ) -> Result<()> {
        for step in 0..SWITCH_STEPS {
            self.switch_step(step, &identity, &record)?;
        }
        self.config.fingerprint = identity.fingerprint().to_hex();
        self.identity = identity;
        self.record = record;
        Ok(())
    }

    /// One durable step of [`replace_identity`](Self::replace_identity).
    fn switch_step(
        &self,
        step: usize,
        identity: &SecretIdentity,
        record: &SignedRecord,
    ) -> Result<()> {
        match step {
            // The old key is kept before anything names another one.
            0 => {
                let retired = self.path(RETIRED_DIR);
                fsutil::create_private_dir(&retired)?;
                fsutil::write_atomic(
                    &retired.join(format!("{}.key", self.config.fingerprint)),
                    self.identity.to_armored().as_bytes(),
                )
            }
            // open() checks only the record's address; `rotate-key` resumes from it.
            1 => fsutil::write_atomic(&self.path(RECORD_FILE), &record.encode()),
            // From here on open() finishes the switch.
            2 => fsutil::write_atomic(&self.path(SECRET_FILE), identity.to_armored().as_bytes()),
            3 => {
                let mut config = self.config.clone();
                config.fingerprint = identity.fingerprint().to_hex();
                fsutil::write_atomic(&self.path(CONFIG_FILE), &to_json(&config))
            }
            _ => fsutil::remove_durable(&self.path(ROTATING_FILE)),
        }
    }

    pub fn save_config(&self) -> Result<()> {
        fsutil::write_atomic(&self.path(CONFIG_FILE), &to_json(&self.config))
    }

    pub fn save_record(&mut self, record: SignedRecord) -> Result<()> {
        fsutil::write_atomic(&self.path(RECORD_FILE), &record.encode())?;
        self.record = record;
        Ok(())
    }

    /// The mailbox id this profile has on `url`, if it is one of our homes.
    pub fn mailbox_on(&self, url: &NodeUrl) -> Option<MailboxId> {
        self.config.home(url).map(|h| h.mailbox)
    }

    // Settings: each changes config.json and saves it when something changed.

    /// Adds or replaces a persistent resolve entry. A domain with a node is no legacy
    /// domain: returns whether it was taken off the legacy list.
    pub fn set_resolve(&mut self, domain: String, url: NodeUrl) -> Result<bool> {
        let was_legacy = self.config.legacy.remove(&domain);
        self.config.resolve.insert(domain, url);
        self.save_config()?;
        Ok(was_legacy)
    }

    /// Removes a persistent resolve entry; whether there was one.
    pub fn unset_resolve(&mut self, domain: &str) -> Result<bool> {
        let had = self.config.resolve.remove(domain).is_some();
        if had {
            self.save_config()?;
        }
        Ok(had)
    }

    /// `legacy add`: letters to addresses at `domain` go through the gateway without a
    /// lookup. Refused for a domain of the resolve table, which wins. Returns the domain as
    /// stored and whether it was new.
    pub fn add_legacy_domain(&mut self, domain: &str) -> Result<(String, bool)> {
        let domain = parse_domain(domain)?;
        if let Some(url) = self.config.resolve.get(&domain) {
            return Err(Error::input(
                "legacy domain",
                format!(
                    "{domain} is in the resolve table (its node is {url}); remove it with `sealpost resolve remove {domain}` first"
                ),
            ));
        }
        let added = self.config.legacy.insert(domain.clone());
        if added {
            self.save_config()?;
        }
        Ok((domain, added))
    }

    /// `legacy remove`; whether it was listed.
    pub fn remove_legacy_domain(&mut self, domain: &str) -> Result<bool> {
        let domain = parse_domain(domain)?;
        let had = self.config.legacy.remove(&domain);
        if had {
            self.save_config()?;
        }
        Ok(had)
    }

    /// Remembers that the user agreed to write to `addresses` as legacy e-mail.
    pub fn confirm_legacy<'a>(
        &mut self,
        addresses: impl IntoIterator<Item = &'a Address>,
    ) -> Result<()> {
        let before = self.config.legacy_confirmed.len();
        for a in addresses {
            self.config.legacy_confirmed.insert(a.clone());
        }
        if self.config.legacy_confirmed.len() != before {
            self.save_config()?;
        }
        Ok(())
    }

    /// Makes `address` the gateway for legacy e-mail (`gateway set`, after checking it).
    pub fn set_gateway(&mut self, address: &Address) -> Result<()> {
        self.config.gateway = Some(address.clone());
        self.save_config()
    }

    /// `gateway clear`: back to the default. Whether one was set.
    pub fn clear_gateway(&mut self) -> Result<bool> {
        let had = self.config.gateway.take().is_some();
        if had {
            self.save_config()?;
        }
        Ok(had)
    }
}

/// Makes a profile in `dir`, which must not exist or be empty: `fill` writes its files
/// into a staging directory next to it, which must then open as a profile, and is renamed
/// into place; on any failure nothing is left behind.
pub(crate) fn install(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<Profile> {
    check_free(dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fsutil::create_private_dir(parent)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("profile");
    let staging = parent.join(format!(
        ".{name}.init-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| -> Result<()> {
        fsutil::create_private_dir(&staging)?;
        fill(&staging)?;
        drop(Profile::open(&staging)?);
        // rename(2) replaces an empty directory, and fails on a non-empty one, so a
        // concurrent init cannot be overwritten.
        std::fs::rename(&staging, dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
                Error::ProfileExists {
                    dir: dir.to_path_buf(),
                }
            }
            _ => Error::profile_io(dir, e),
        })?;
        fsutil::sync_dir(parent)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Profile::open(dir)
}

/// Checks that `secret.key` holds the key `config` names, finishing a key switch that a
/// crash interrupted: `secret.key` already holds the key of [`ROTATING_FILE`] and the key
/// config.json names is in [`RETIRED_DIR`] → config.json names the new key. A
/// [`ROTATING_FILE`] holding the profile's own key is the leftover of a finished switch.
fn finish_switch(dir: &Path, config: &mut Config, identity: &SecretIdentity) -> Result<()> {
    let secret_fp = identity.fingerprint().to_hex();
    let rotating_path = dir.join(ROTATING_FILE);
    // Unreadable: not ours to judge here; `rotate-key` reports it.
    let rotating_fp = fsutil::read_optional(&rotating_path)?
        .and_then(|b| SecretIdentity::from_bytes(&b).ok())
        .map(|id| id.fingerprint().to_hex());
    if secret_fp != config.fingerprint {
        let retired = dir
            .join(RETIRED_DIR)
            .join(format!("{}.key", config.fingerprint));
        if rotating_fp.as_deref() != Some(secret_fp.as_str()) || !retired.exists() {
            return Err(Error::corrupt(
                dir.join(SECRET_FILE),
                "holds another key than config.json names",
            ));
        }
        let mut finished = config.clone();
        finished.fingerprint = secret_fp.clone();
        fsutil::write_atomic(&dir.join(CONFIG_FILE), &to_json(&finished))?;
        *config = finished;
    }
    if rotating_fp.as_deref() == Some(secret_fp.as_str()) {
        fsutil::remove_durable(&rotating_path)?;
    }
    Ok(())
}

/// `identity` with every unencrypted secret key encrypted with `passphrase` (an imported
/// backup that had none gets the one the user chose).
pub fn lock_identity(identity: &SecretIdentity, passphrase: &str) -> Result<SecretIdentity> {
    use sealpost_proto::openpgp::crypto::Password;
    use sealpost_proto::openpgp::packet::Packet;
    use sealpost_proto::openpgp::parse::Parse;
    use sealpost_proto::openpgp::serialize::Serialize;
    let key_err = |e: sealpost_proto::openpgp::anyhow::Error| {
        Error::from(sealpost_proto::Error::Key(e.to_string()))
    };
    let cert = Cert::from_bytes(&identity.to_bytes()).map_err(key_err)?;
    let password = Password::from(passphrase);
    let mut packets: Vec<Packet> = Vec::new();
    for ka in cert.keys().secret() {
        let key = ka.key().clone();
        if key.has_unencrypted_secret() {
            let locked = key.encrypt_secret(&password).map_err(key_err)?;
            packets.push(if ka.key().fingerprint() == cert.fingerprint() {
                locked.role_into_primary().into()
            } else {
                locked.role_into_subordinate().into()
            });
        }
    }
    let (cert, _) = cert.insert_packets(packets).map_err(key_err)?;
    let mut bytes = Vec::new();
    cert.as_tsk().serialize(&mut bytes).map_err(key_err)?;
    Ok(SecretIdentity::from_bytes(&bytes)?)
}

/// Refuses a directory that already holds anything.
pub(crate) fn check_free(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::ProfileExists {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::profile_io(dir, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sealpost_proto::record::SignedRecord;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn sample(dir: &Path, address: &str, passphrase: Option<&str>) -> Profile {
        let address = Address::parse(address).unwrap();
        let identity = SecretIdentity::generate(&address, passphrase).unwrap();
        let keys = identity.unlock(passphrase).unwrap();
        let home = HomeEntry {
            url: NodeUrl::parse("http://127.0.0.1:9").unwrap(),
            node_key: "11".repeat(32),
            mailbox: MailboxId([3; 16]),
            trusted: true,
        };
        let record = MailboxRecord {
            address: address.clone(),
            cert: sealpost_proto::identity::cert_to_bytes(&identity.public_cert()),
            homes: vec![home.to_home().unwrap()],
            created: 1,
            expires: u64::MAX,
            sequence: 1,
        };
        let signed = SignedRecord::sign(&record, &keys).unwrap();
        let config = Config {
            version: PROFILE_VERSION,
            address,
            fingerprint: identity.fingerprint().to_hex(),
            homes: vec![home],
            resolve: BTreeMap::new(),
            gateway: None,
            legacy: BTreeSet::new(),
            legacy_confirmed: BTreeSet::new(),
            tls: TlsSettings::default(),
            dns: DnsSettings::default(),
        };
        Profile::create(dir, config, &identity, &signed).unwrap()
    }

    #[test]
    fn create_then_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let p = sample(&dir, "alice@alpha.test", None);
        let fp = p.config.fingerprint.clone();
        let mode = std::fs::metadata(dir.join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(ProfileLock::acquire(&dir).is_err(), "lock is held");
        drop(p);
        let p = Profile::open(&dir).unwrap();
        assert_eq!(p.config.fingerprint, fp);
        assert_eq!(p.address().as_str(), "alice@alpha.test");
        assert!(p.unlock(None).is_ok());
        // No staging directory left next to it.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_refuses_an_existing_profile_and_accepts_an_empty_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let p = sample(tmp.path(), "alice@alpha.test", None);
        drop(p);
        let address = Address::parse("bob@beta.test").unwrap();
        let identity = SecretIdentity::generate(&address, None).unwrap();
        let record = Profile::open(tmp.path()).unwrap().record().clone();
        let config = Profile::open(tmp.path()).unwrap().config.clone();
        assert!(matches!(
            Profile::create(tmp.path(), config, &identity, &record),
            Err(Error::ProfileExists { .. })
        ));
    }

    #[test]
    fn missing_and_corrupt_profiles_are_profile_errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Profile::open(tmp.path()),
            Err(Error::NoProfile { .. })
        ));
        let dir = tmp.path().join("p");
        drop(sample(&dir, "alice@alpha.test", None));
        std::fs::write(dir.join(CONFIG_FILE), b"{ not json").unwrap();
        let e = Profile::open(&dir).err().unwrap();
        assert!(matches!(e, Error::ProfileCorrupt { .. }), "{e}");
        assert_eq!(e.exit_code(), 4);

        drop(sample(&tmp.path().join("q"), "alice@alpha.test", None));
        std::fs::write(tmp.path().join("q").join(SECRET_FILE), b"garbage").unwrap();
        assert!(matches!(
            Profile::open(&tmp.path().join("q")),
            Err(Error::ProfileCorrupt { .. })
        ));

        drop(sample(&tmp.path().join("r"), "alice@alpha.test", None));
        std::fs::write(tmp.path().join("r").join(RECORD_FILE), b"\x04\x01").unwrap();
        assert!(matches!(
            Profile::open(&tmp.path().join("r")),
            Err(Error::ProfileCorrupt { .. })
        ));
    }

    #[test]
    fn gateway_and_legacy_settings_are_written_only_when_set() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = sample(tmp.path(), "alice@alpha.test", None);
        // What older clients wrote and read: no gateway, no legacy list.
        let text = std::fs::read_to_string(tmp.path().join(CONFIG_FILE)).unwrap();
        assert!(
            !text.contains("gateway") && !text.contains("legacy"),
            "{text}"
        );
        p.config.gateway = Some(Address::parse("gateway@alpha.test").unwrap());
        p.config.legacy.insert("legacy.test".into());
        p.save_config().unwrap();
        drop(p);
        let p = Profile::open(tmp.path()).unwrap();
        assert_eq!(
            p.config.gateway.as_ref().unwrap().as_str(),
            "gateway@alpha.test"
        );
        assert!(p.config.legacy.contains("legacy.test"));
    }

    #[test]
    fn passphrase_protects_the_key_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let p = sample(tmp.path(), "alice@alpha.test", Some("s3cret"));
        assert!(p.identity().is_locked());
        assert!(p.unlock(None).is_err());
        assert!(p.unlock(Some("s3cret")).is_ok());
        let on_disk = std::fs::read_to_string(tmp.path().join(SECRET_FILE)).unwrap();
        assert!(on_disk.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    }

    #[test]
    fn an_imported_key_can_be_locked() {
        let address = Address::parse("alice@alpha.test").unwrap();
        let open = SecretIdentity::generate(&address, None).unwrap();
        let locked = lock_identity(&open, "pw").unwrap();
        assert_eq!(locked.fingerprint(), open.fingerprint());
        assert!(locked.is_locked());
        assert!(locked.unlock(None).is_err());
        assert!(locked.unlock(Some("pw")).is_ok());
    }

    /// A crash after each step of the switch to a new key: the profile opens, with the old
    /// key (and `rotating.key` to resume with) or with the new one (and nothing left over).
    #[test]
    fn a_key_switch_cut_short_at_any_step_leaves_a_profile_that_opens() {
        let tmp = tempfile::tempdir().unwrap();
        for done in 0..=SWITCH_STEPS {
            let dir = tmp.path().join(format!("p{done}"));
            let p = sample(&dir, "alice@alpha.test", Some("pw"));
            let old_fp = p.config.fingerprint.clone();
            let next = SecretIdentity::generate(p.address(), Some("pw")).unwrap();
            let new_fp = next.fingerprint().to_hex();
            let mut body = p.record_body().unwrap();
            body.cert = sealpost_proto::identity::cert_to_bytes(&next.public_cert());
            body.sequence += 1;
            let record = SignedRecord::sign(&body, &next.unlock(Some("pw")).unwrap()).unwrap();
            // As rotate-key does before any node learns the key.
            fsutil::write_atomic(&dir.join(ROTATING_FILE), next.to_armored().as_bytes()).unwrap();
            for step in 0..done {
                p.switch_step(step, &next, &record).unwrap();
            }
            drop(p);

            let p = Profile::open(&dir).unwrap_or_else(|e| panic!("after {done} steps: {e}"));
            let switched = done > 2;
            assert_eq!(
                &p.config.fingerprint,
                if switched { &new_fp } else { &old_fp },
                "after {done} steps"
            );
            assert_eq!(p.identity().fingerprint().to_hex(), p.config.fingerprint);
            assert_eq!(
                dir.join(ROTATING_FILE).exists(),
                !switched,
                "after {done} steps"
            );
            if switched {
                // Finished for good: config.json names the new key, the old one is kept.
                drop(p);
                let p = Profile::open(&dir).unwrap();
                assert_eq!(p.config.fingerprint, new_fp);
                assert_eq!(p.record_body().unwrap().sequence, 2);
                assert!(dir.join(RETIRED_DIR).join(format!("{old_fp}.key")).exists());
                assert!(p.unlock(Some("pw")).is_ok());
            }
        }
    }

    #[test]
    fn a_foreign_secret_key_is_no_unfinished_switch() {
        let tmp = tempfile::tempdir().unwrap();
        let p = sample(tmp.path(), "alice@alpha.test", None);
        let other = SecretIdentity::generate(p.address(), None).unwrap();
        let armored = other.to_armored();
        drop(p);
        std::fs::write(tmp.path().join(SECRET_FILE), armored.as_bytes()).unwrap();
        let corrupt = |dir: &Path| match Profile::open(dir) {
            Err(Error::ProfileCorrupt { .. }) => true,
            Err(e) => panic!("{e}"),
            Ok(_) => false,
        };
        assert!(corrupt(tmp.path()), "without rotating.key");
        // rotating.key names it, but the key config.json names was never retired.
        std::fs::write(tmp.path().join(ROTATING_FILE), armored.as_bytes()).unwrap();
        assert!(corrupt(tmp.path()), "without the retired key");
    }

    #[test]
    fn default_dir_follows_xdg() {
        // Only reads the environment; the values here are whatever the test runner has.
        if let Ok(d) = default_dir() {
            assert!(d.ends_with("sealpost"));
        }
    }
}
