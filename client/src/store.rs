//! The local message store: per envelope id, the sealed letter exactly as it arrived
//! (`ID.sealed`, still encrypted) and what `list` shows (`ID.json`). The JSON file is
//! written last, so its presence means the message is durably stored; only then is the
//! envelope acked on the nodes. The envelope id is the dedupe key across home nodes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sealpost_proto::letter::Letter;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::profile::to_json;

pub const MESSAGES_DIR: &str = "messages";

/// Shortest id prefix `read` accepts.
pub const MIN_PREFIX: usize = 4;

/// What the client concluded about who sent a letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Trust {
    /// Signed by the key pinned for the letter's From address.
    Verified { signer: String },
    /// Opened, but not provably from its From address; `reason` says why.
    Unverified { reason: String },
    /// Could not be opened at all.
    Unreadable { reason: String },
}

impl Trust {
    pub fn is_verified(&self) -> bool {
        matches!(self, Trust::Verified { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInfo {
    pub name: String,
    pub media_type: String,
    pub size: u64,
}

/// The headers of an opened letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub from: Address,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub subject: String,
    pub date: i64,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// Set for mail that entered through the SMTP gateway: not end-to-end encrypted.
    pub legacy: Option<String>,
    pub attachments: Vec<AttachmentInfo>,
}

impl Header {
    pub fn of(letter: &Letter) -> Header {
        Header {
            from: letter.from.clone(),
            to: letter.to.clone(),
            cc: letter.cc.clone(),
            subject: letter.subject.clone(),
            date: letter.date,
            message_id: letter.message_id.clone(),
            in_reply_to: letter.in_reply_to.clone(),
            legacy: letter.legacy.clone(),
            attachments: letter
                .attachments
                .iter()
                .map(|a| AttachmentInfo {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size: a.data.len() as u64,
                })
                .collect(),
        }
    }
}

/// Which folder a stored letter is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    /// Received.
    #[default]
    Inbox,
    /// A copy of a letter the user sent (from this device or another one of theirs).
    Sent,
}

impl Folder {
    pub fn is_inbox(&self) -> bool {
        *self == Folder::Inbox
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::Sent => "sent",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredMessage {
    pub id: EnvelopeId,
    pub received_at: u64,
    /// The home nodes this envelope was found on.
    pub nodes: Vec<NodeUrl>,
    /// Size of the sealed letter (a padding bucket).
    pub size: u64,
    pub trust: Trust,
    pub seen: bool,
    /// `None` when the letter could not be opened.
    pub header: Option<Header>,
    /// Written only for a sent copy: received letters' files read and write as before.
    #[serde(default, skip_serializing_if = "Folder::is_inbox")]
    pub folder: Folder,
}

pub struct MessageStore {
    dir: PathBuf,
}

impl MessageStore {
    pub fn new(profile_dir: &Path) -> Self {
        MessageStore {
            dir: profile_dir.join(MESSAGES_DIR),
        }
    }

    fn meta_path(&self, id: &EnvelopeId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn sealed_path(&self, id: &EnvelopeId) -> PathBuf {
        self.dir.join(format!("{id}.sealed"))
    }

    pub fn contains(&self, id: &EnvelopeId) -> bool {
        self.meta_path(id).exists()
    }

    /// Stores a message durably (sealed bytes first, then the metadata that marks it done).
    pub fn put(&self, meta: &StoredMessage, sealed: &[u8]) -> Result<()> {
        fsutil::create_private_dir(&self.dir)?;
        fsutil::write_atomic(&self.sealed_path(&meta.id), sealed)?;
        fsutil::write_atomic(&self.meta_path(&meta.id), &to_json(meta))
    }

    /// Stores many messages durably with two flushes in all ([`fsutil::write_batch`]): the
    /// sealed letters and the metadata reach the disk before any metadata file takes its
    /// name, so a crash leaves each message stored whole or not at all.
    pub fn put_batch(&self, messages: &[(StoredMessage, Vec<u8>)]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        fsutil::create_private_dir(&self.dir)?;
        let names: Vec<(String, String, Vec<u8>)> = messages
            .iter()
            .map(|(m, _)| {
                (
                    format!("{}.sealed", m.id),
                    format!("{}.json", m.id),
                    to_json(m),
                )
            })
            .collect();
        let early: Vec<(&str, &[u8])> = names
            .iter()
            .zip(messages)
            .map(|((sealed, _, _), (_, bytes))| (sealed.as_str(), bytes.as_slice()))
            .collect();
        let late: Vec<(&str, &[u8])> = names
            .iter()
            .map(|(_, meta, json)| (meta.as_str(), json.as_slice()))
            .collect();
        fsutil::write_batch(&self.dir, &early, &late)
    }

    pub fn update(&self, meta: &StoredMessage) -> Result<()> {
        fsutil::write_atomic(&self.meta_path(&meta.id), &to_json(meta))
    }

    pub fn get(&self, id: &EnvelopeId) -> Result<StoredMessage> {
        let path = self.meta_path(id);
        let bytes = fsutil::read_optional(&path)?.ok_or_else(|| Error::NotFound {
            what: "message",
            id: id.to_hex(),
        })?;
        let m: StoredMessage =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
        if &m.id != id {
            return Err(Error::corrupt(&path, "holds another message id"));
        }
        Ok(m)
    }

    pub fn sealed(&self, id: &EnvelopeId) -> Result<Vec<u8>> {
        let path = self.sealed_path(id);
        std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))
    }

    /// Every stored message, oldest letter first.
    pub fn list(&self) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            out.push(
                serde_json::from_slice::<StoredMessage>(&bytes)
                    .map_err(|e| Error::corrupt(&path, e))?,
            );
        }
        out.sort_by_key(|m| {
            (
                m.received_at,
                m.header.as_ref().map(|h| h.date).unwrap_or(0),
                m.id,
            )
        });
        Ok(out)
    }

    /// The message whose id starts with `prefix` (at least [`MIN_PREFIX`] hex digits).
    pub fn find(&self, prefix: &str) -> Result<EnvelopeId> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < MIN_PREFIX || p.len() > 32 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::input(
                "message id",
                format!("{prefix:?} is not {MIN_PREFIX} to 32 hex digits"),
            ));
        }
        let mut hits = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if stem.starts_with(&p)
                && let Ok(id) = EnvelopeId::from_hex(stem)
            {
                hits.push(id);
            }
        }
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound {
                what: "message",
                id: prefix.to_string(),
            }),
            _ => Err(Error::Ambiguous {
                what: "message",
                id: prefix.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: EnvelopeId, t: u64) -> StoredMessage {
        StoredMessage {
            id,
            received_at: t,
            nodes: vec![NodeUrl::parse("http://127.0.0.1:1").unwrap()],
            size: 4096,
            trust: Trust::Unverified {
                reason: "not signed".into(),
            },
            seen: false,
            header: None,
            folder: Default::default(),
        }
    }

    #[test]
    fn put_get_list_and_dedupe_key() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let a = EnvelopeId([0xaa; 16]);
        let b = EnvelopeId([0xab; 16]);
        assert!(!s.contains(&a));
        s.put(&meta(b, 2), b"sealed-b").unwrap();
        s.put(&meta(a, 1), b"sealed-a").unwrap();
        assert!(s.contains(&a));
        assert_eq!(s.get(&a).unwrap(), meta(a, 1));
        assert_eq!(s.sealed(&b).unwrap(), b"sealed-b");
        let ids: Vec<_> = s.list().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a, b]);
    }

    #[test]
    fn a_batch_is_stored_whole_and_a_crashed_one_leaves_nothing_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let ids: Vec<EnvelopeId> = (1..=3u8).map(|i| EnvelopeId([i; 16])).collect();
        let batch: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (meta(*id, i as u64), format!("sealed-{i}").into_bytes()))
            .collect();
        s.put_batch(&batch).unwrap();
        for (m, sealed) in &batch {
            assert_eq!(&s.get(&m.id).unwrap(), m);
            assert_eq!(&s.sealed(&m.id).unwrap(), sealed);
        }
        assert_eq!(s.list().unwrap().len(), 3);
        // What a crash inside a later batch leaves: a sealed letter without its metadata
        // and a metadata file not yet renamed. Neither is a stored message, and storing the
        // letter again (the next fetch) works.
        let dir = tmp.path().join(MESSAGES_DIR);
        let lost = EnvelopeId([9; 16]);
        std::fs::write(dir.join(format!("{lost}.sealed")), b"half").unwrap();
        std::fs::write(dir.join(format!(".{lost}.json.tmp-1-00000000")), b"{").unwrap();
        assert!(!s.contains(&lost));
        assert_eq!(s.list().unwrap().len(), 3);
        s.put_batch(&[(meta(lost, 7), b"whole".to_vec())]).unwrap();
        assert_eq!(s.sealed(&lost).unwrap(), b"whole");
        assert_eq!(s.list().unwrap().len(), 4);
        s.put_batch(&[]).unwrap();
    }

    #[test]
    fn prefixes_resolve_uniquely() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let a = EnvelopeId([0xaa; 16]);
        let b = EnvelopeId([0xab; 16]);
        s.put(&meta(a, 1), b"x").unwrap();
        s.put(&meta(b, 2), b"y").unwrap();
        assert_eq!(s.find("aaaa").unwrap(), a);
        assert_eq!(s.find(&b.to_hex()).unwrap(), b);
        assert!(matches!(s.find("aaab"), Err(Error::NotFound { .. })));
        assert!(matches!(s.find("aa"), Err(Error::InvalidInput { .. })));
        s.put(
            &meta(
                EnvelopeId([0xaa, 0xaa, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                3,
            ),
            b"z",
        )
        .unwrap();
        assert!(matches!(s.find("aaaa"), Err(Error::Ambiguous { .. })));
        assert!(matches!(
            s.find("../../etc"),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn corrupt_metadata_is_a_profile_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let a = EnvelopeId([1; 16]);
        s.put(&meta(a, 1), b"x").unwrap();
        std::fs::write(tmp.path().join(MESSAGES_DIR).join(format!("{a}.json")), "{").unwrap();
        assert_eq!(s.get(&a).err().unwrap().exit_code(), 4);
        assert_eq!(s.list().err().unwrap().exit_code(), 4);
    }
}
