//! Backups of a profile: the secret key (as stored: locked when the profile has a
//! passphrase), `config.json` (homes, resolve table, gateway and legacy settings), the
//! published record, the contacts with their pins, retired keys and the node cache; with
//! `letters`, also the stored letters and the sent log. The outbox is not included (what
//! waits there is sent by this device).
//!
//! A backup is one OpenPGP message encrypted with a passphrase (SKESK and an
//! integrity-protected SEIPD packet, as `gpg --symmetric` makes; `gpg --decrypt` opens it),
//! whose literal data is a JSON bundle: `{"format": "sealpost-backup", "version": 1,
//! "created", "address", "files": {PATH: base64}}`, PATH being a profile path of the
//! layout of [`crate::profile`]. Restoring checks every path against that layout, writes
//! the files into a staging directory, opens it as a profile, and only then renames it
//! into place: a bad or foreign backup leaves nothing behind.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use sealpost_proto::openpgp;
use sealpost_proto::{Address, NodeUrl};

use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};

use crate::directory::NODES_FILE;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::now;
use crate::profile::{CONFIG_FILE, Profile, RECORD_FILE, RETIRED_DIR, SECRET_FILE, install};
use crate::sent::SENT_DIR;
use crate::store::MESSAGES_DIR;

pub const FORMAT: &str = "sealpost-backup";
pub const VERSION: u32 = 1;
/// Largest backup file read, and largest bundle made or opened.
pub const MAX_BACKUP_BYTES: usize = 1 << 30;
/// The files every backup has.
const REQUIRED: [&str; 3] = [CONFIG_FILE, SECRET_FILE, RECORD_FILE];
/// Single files of a profile that a backup carries besides [`REQUIRED`].
const OPTIONAL: [&str; 1] = [NODES_FILE];
/// Directories whose files a backup carries; the last two only with letters.
const CONTACTS_DIR: &str = "contacts";
const ALWAYS_DIRS: [&str; 2] = [CONTACTS_DIR, RETIRED_DIR];
const LETTER_DIRS: [&str; 2] = [MESSAGES_DIR, SENT_DIR];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    format: String,
    version: u32,
    created: u64,
    address: Address,
    /// Profile path → base64 of its bytes.
    files: BTreeMap<String, String>,
}

/// What a backup holds, as counted when it was made or restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub address: Address,
    pub created: u64,
    pub homes: Vec<NodeUrl>,
    pub contacts: usize,
    /// Stored letters (received and sent); 0 for a backup without letters.
    pub letters: usize,
    pub bytes: usize,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Whether `path` is a profile path a backup may carry.
fn allowed(path: &str) -> bool {
    if REQUIRED.contains(&path) || OPTIONAL.contains(&path) {
        return true;
    }
    let Some((dir, name)) = path.split_once('/') else {
        return false;
    };
    (ALWAYS_DIRS.contains(&dir) || LETTER_DIRS.contains(&dir))
        && !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+-=".contains(&b))
}

/// Counts what `files` holds, for the user.
fn summary(
    address: Address,
    created: u64,
    files: &BTreeMap<String, Vec<u8>>,
    bytes: usize,
) -> Summary {
    let count = |dir: &str, suffix: &str| {
        files
            .keys()
            .filter(|p| p.starts_with(&format!("{dir}/")) && p.ends_with(suffix))
            .count()
    };
    let homes = files
        .get(CONFIG_FILE)
        .and_then(|c| serde_json::from_slice::<crate::profile::Config>(c).ok())
        .map(|c| c.homes.into_iter().map(|h| h.url).collect())
        .unwrap_or_default();
    Summary {
        address,
        created,
        homes,
        contacts: count(CONTACTS_DIR, ".json"),
        letters: count(MESSAGES_DIR, ".json"),
        bytes,
    }
}

/// Makes the backup of `profile` (with its letters when `letters`), encrypted with
/// `passphrase`, armored.
pub fn create(profile: &Profile, letters: bool, passphrase: &str) -> Result<(Vec<u8>, Summary)> {
    if passphrase.is_empty() {
        return Err(Error::input("backup passphrase", "it is empty"));
    }
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0usize;
    let mut add = |rel: String, path: &Path| -> Result<()> {
        if let Some(bytes) = fsutil::read_optional(path)? {
            total += bytes.len();
            if total > MAX_BACKUP_BYTES / 2 {
                return Err(Error::input(
                    "backup",
                    format!(
                        "the profile holds over {} MiB; make one without --letters",
                        MAX_BACKUP_BYTES / 2 / (1 << 20)
                    ),
                ));
            }
            files.insert(rel, bytes);
        }
        Ok(())
    };
    for name in REQUIRED.iter().chain(&OPTIONAL) {
        add(name.to_string(), &profile.path(name))?;
    }
    let dirs: Vec<&str> = if letters {
        ALWAYS_DIRS.iter().chain(&LETTER_DIRS).copied().collect()
    } else {
        ALWAYS_DIRS.to_vec()
    };
    for dir in dirs {
        for path in fsutil::list_files(&profile.path(dir), "")? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let rel = format!("{dir}/{name}");
            if allowed(&rel) && path.is_file() {
                add(rel, &path)?;
            }
        }
    }
    for required in REQUIRED {
        if !files.contains_key(required) {
            return Err(Error::corrupt(profile.path(required), "missing"));
        }
    }
    let created = now();
    let bundle = Bundle {
        format: FORMAT.into(),
        version: VERSION,
        created,
        address: profile.address().clone(),
        files: files
            .iter()
            .map(|(k, v)| (k.clone(), b64().encode(v)))
            .collect(),
    };
    let plain = serde_json::to_vec(&bundle).map_err(|e| Error::input("backup", e.to_string()))?;
    let sealed = encrypt(&plain, passphrase)?;
    let summary = summary(profile.address().clone(), created, &files, sealed.len());
    Ok((sealed, summary))
}

/// Restores the backup in `file` (its bytes `data`) into `dir`, which must not exist or be
/// empty, and opens the profile.
pub fn restore(
    dir: &Path,
    file: &Path,
    data: &[u8],
    passphrase: &str,
) -> Result<(Profile, Summary)> {
    let bad = |reason: String| Error::BadBackup {
        path: file.to_path_buf(),
        reason,
    };
    if data.len() > MAX_BACKUP_BYTES {
        return Err(bad(format!("larger than {MAX_BACKUP_BYTES} bytes")));
    }
    let plain = decrypt(data, passphrase, file)?;
    let bundle: Bundle = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
    if bundle.format != FORMAT || bundle.version != VERSION {
        return Err(bad(format!(
            "format {:?} version {}; this sealpost reads {FORMAT:?} version {VERSION}",
            bundle.format, bundle.version
        )));
    }
    let mut files = BTreeMap::new();
    for (path, encoded) in &bundle.files {
        if !allowed(path) {
            return Err(bad(format!("it holds {path:?}, which is no profile file")));
        }
        let bytes = b64()
            .decode(encoded)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        files.insert(path.clone(), bytes);
    }
    for required in REQUIRED {
        if !files.contains_key(required) {
            return Err(bad(format!("it has no {required}")));
        }
    }
    let profile = install(dir, |staging| {
        for (path, bytes) in &files {
            let target = staging.join(path);
            if let Some(parent) = target.parent()
                && parent != staging
            {
                fsutil::create_private_dir(parent)?;
            }
            fsutil::write_atomic(&target, bytes)?;
        }
        Ok(())
    })?;
    if profile.address() != &bundle.address {
        // Opened, but not what the bundle said it was: refuse rather than guess.
        let dir = profile.dir().to_path_buf();
        drop(profile);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(bad("its config.json is for another address".into()));
    }
    let summary = summary(bundle.address, bundle.created, &files, data.len());
    Ok((profile, summary))
}

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::input("backup", format!("encryption failed: {e}"))
}

/// `plain`, encrypted with `passphrase` (OpenPGP SKESK + SEIPD), armored.
fn encrypt(plain: &[u8], passphrase: &str) -> Result<Vec<u8>> {
    let mut sink = Vec::with_capacity(plain.len() / 2 * 3 + 1024);
    {
        let m = Message::new(&mut sink);
        let m = Armorer::new(m).build().map_err(crypto)?;
        let m = Encryptor::with_passwords(m, Some(Password::from(passphrase)))
            .build()
            .map_err(crypto)?;
        let mut m = LiteralWriter::new(m).build().map_err(crypto)?;
        m.write_all(plain).map_err(crypto)?;
        m.finalize().map_err(crypto)?;
    }
    Ok(sink)
}

struct Helper<'a> {
    password: Password,
    /// Set when the passphrase opened the session key.
    decrypted: &'a Cell<bool>,
    /// Set when the message has password packets and the passphrase opens none.
    wrong: &'a Cell<bool>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // Only an encrypted message is a backup: plaintext would be anyone's to forge.
        match structure.into_iter().next() {
            Some(MessageLayer::Encryption { .. }) => Ok(()),
            _ => Err(openpgp::Error::InvalidOperation("not encrypted".into()).into()),
        }
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        _pkesks: &[PKESK],
        skesks: &[SKESK],
        _sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for skesk in skesks {
            if let Ok((algo, sk)) = skesk.decrypt(&self.password)
                && decrypt(algo, &sk)
            {
                self.decrypted.set(true);
                return Ok(None);
            }
        }
        self.wrong.set(!skesks.is_empty());
        Err(openpgp::Error::MissingSessionKey("the passphrase opens no key".into()).into())
    }
}

/// Opens what [`encrypt`] made (armored or binary).
fn decrypt(data: &[u8], passphrase: &str, file: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::BadBackup {
        path: file.to_path_buf(),
        reason,
    };
    let policy = StandardPolicy::new();
    let (decrypted, wrong) = (Cell::new(false), Cell::new(false));
    let helper = Helper {
        password: Password::from(passphrase),
        decrypted: &decrypted,
        wrong: &wrong,
    };
    let result = (|| -> openpgp::Result<Vec<u8>> {
        let mut d = DecryptorBuilder::from_bytes(data)?.with_policy(&policy, None, helper)?;
        let mut plain = Vec::new();
        (&mut d)
            .take(MAX_BACKUP_BYTES as u64 + 1)
            .read_to_end(&mut plain)?;
        if plain.len() > MAX_BACKUP_BYTES {
            return Err(openpgp::Error::InvalidOperation("too large".into()).into());
        }
        if !d.message_processed() {
            return Err(openpgp::Error::InvalidOperation("truncated".into()).into());
        }
        Ok(plain)
    })();
    match result {
        Ok(plain) if decrypted.get() => Ok(plain),
        Ok(_) => Err(bad("it is not encrypted".into())),
        Err(_) if wrong.get() => Err(Error::BackupPassphrase {
            path: file.to_path_buf(),
        }),
        Err(e) => Err(bad(format!("{e:#}"))),
    }
}

/// Writes a backup to `path` (0600, synced); refuses to replace an existing file.
pub fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e| Error::WriteOutput {
        path: PathBuf::from(path),
        source: e,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample;
    use crate::store::{Folder, MessageStore, StoredMessage, Trust};
    use sealpost_proto::EnvelopeId;

    fn with_contact_and_letter(dir: &Path) -> Profile {
        let p = sample(dir, "alice@alpha.test", Some("key pass"));
        std::fs::create_dir_all(dir.join(CONTACTS_DIR)).unwrap();
        std::fs::write(dir.join("contacts/bob@beta.test.json"), b"{\"pin\":1}").unwrap();
        let meta = StoredMessage {
            id: EnvelopeId([4; 16]),
            received_at: 1,
            nodes: Vec::new(),
            size: 3,
            trust: Trust::Unreadable { reason: "x".into() },
            seen: false,
            header: None,
            folder: Folder::Inbox,
            pack: None,
        };
        MessageStore::new(dir).put(&meta, b"abc").unwrap();
        p
    }

    #[test]
    fn a_backup_restores_into_a_fresh_profile_with_or_without_letters() {
        let tmp = tempfile::tempdir().unwrap();
        let p = with_contact_and_letter(&tmp.path().join("a"));
        let (data, made) = create(&p, false, "backup pass").unwrap();
        assert!(data.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        assert!(
            !data.windows(8).any(|w| w == b"alpha.te"),
            "nothing readable without the passphrase"
        );
        assert_eq!((made.contacts, made.letters), (1, 0));

        let to = tmp.path().join("b");
        let file = tmp.path().join("backup.asc");
        let (q, got) = restore(&to, &file, &data, "backup pass").unwrap();
        assert_eq!(q.address(), p.address());
        assert_eq!(q.config, p.config);
        assert_eq!(q.identity().fingerprint(), p.identity().fingerprint());
        assert!(q.identity().is_locked(), "the key stays locked as it was");
        assert!(q.unlock(Some("key pass")).is_ok());
        assert_eq!(
            std::fs::read(to.join("contacts/bob@beta.test.json")).unwrap(),
            b"{\"pin\":1}"
        );
        assert!(MessageStore::new(&to).list().unwrap().is_empty());
        assert_eq!((got.contacts, got.letters), (1, 0));

        let (data, made) = create(&p, true, "backup pass").unwrap();
        assert_eq!(made.letters, 1);
        let to = tmp.path().join("c");
        restore(&to, &file, &data, "backup pass").unwrap();
        let store = MessageStore::new(&to);
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.sealed(&EnvelopeId([4; 16])).unwrap(), b"abc");
    }

    #[test]
    fn a_wrong_passphrase_a_used_profile_and_a_forged_backup_restore_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let p = with_contact_and_letter(&tmp.path().join("a"));
        let (data, _) = create(&p, false, "backup pass").unwrap();
        let file = tmp.path().join("backup.asc");
        let to = tmp.path().join("b");

        let e = restore(&to, &file, &data, "guess").err().unwrap();
        assert!(matches!(e, Error::BackupPassphrase { .. }), "{e}");
        assert_eq!(e.exit_code(), 3);
        assert!(!to.exists());

        let e = restore(p.dir(), &file, &data, "backup pass").err().unwrap();
        assert!(matches!(e, Error::ProfileExists { .. }), "{e}");

        // Someone else's bundle that reaches outside the profile, properly encrypted.
        let mut files = BTreeMap::new();
        for name in REQUIRED {
            files.insert(
                name.to_string(),
                b64().encode(std::fs::read(p.path(name)).unwrap()),
            );
        }
        files.insert("../evil".into(), b64().encode(b"x"));
        let forged = Bundle {
            format: FORMAT.into(),
            version: VERSION,
            created: 1,
            address: p.address().clone(),
            files,
        };
        let sealed = encrypt(&serde_json::to_vec(&forged).unwrap(), "pw").unwrap();
        let e = restore(&to, &file, &sealed, "pw").err().unwrap();
        assert!(matches!(e, Error::BadBackup { .. }), "{e}");
        assert!(!to.exists() && !tmp.path().join("evil").exists());

        // A bundle that is not encrypted at all is no backup, whatever it holds.
        let mut plain = Vec::new();
        {
            let m = Message::new(&mut plain);
            let mut m = LiteralWriter::new(m).build().unwrap();
            m.write_all(&serde_json::to_vec(&forged).unwrap()).unwrap();
            m.finalize().unwrap();
        }
        let e = restore(&to, &file, &plain, "pw").err().unwrap();
        assert!(matches!(e, Error::BadBackup { .. }), "{e}");
        assert!(!to.exists());
        assert!(
            create(&p, false, "").is_err(),
            "an empty passphrase is refused"
        );
        for bad in [
            "contacts/.hidden",
            "contacts/a/b",
            "lock",
            "outbox/x.json",
            "contacts/",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
        assert!(allowed("contacts/bob@beta.test.json") && allowed("retired-keys/AB12.key"));
    }
}
