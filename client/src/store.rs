//! The local message store: per envelope id, the sealed letter exactly as it arrived (still
//! encrypted) and what `list` shows (`ID.json`). The envelope id is the dedupe key across
//! home nodes.
//!
//! A letter stored alone (a sent copy) is `ID.sealed` beside its `ID.json`, both written
//! atomically and durably, the JSON last: its presence means the letter is stored. A fetched
//! batch is one pack, `FIRST-ID.pack`: every letter's metadata and sealed bytes, written and
//! synced once, then each `ID.json` with a [`PackRef`] to its bytes, and one sync of the
//! directory; only then is the batch acked on the nodes. The JSON files of a batch are not
//! synced one by one: a crash may leave one empty or cut, and then it is rebuilt from the
//! pack, which holds everything it said ([`MessageStore::get`], [`MessageStore::list`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sealpost_proto::letter::Letter;
use sealpost_proto::limits::MAX_ENVELOPE_BYTES;
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
    /// Where the sealed letter is when it was stored with its batch in a pack; `None`: in
    /// `ID.sealed` (a sent copy, or a letter stored before packs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackRef>,
}

/// A sealed letter's place in a pack: the pack's file name in `messages/`, and the offset
/// and length of the letter's bytes in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRef {
    pub file: String,
    pub offset: u64,
    pub len: u64,
}

/// First bytes of a pack file. Then, per letter: the length of its metadata (u32, big
/// endian), the metadata (`StoredMessage` as JSON, without `pack`), the length of its
/// sealed bytes (u32), the sealed bytes.
const PACK_MAGIC: &[u8; 8] = b"SPPACK1\n";
/// Largest metadata record read from a pack.
const MAX_PACK_META: usize = 1 << 20;

#[derive(Clone)]
pub struct MessageStore {
    dir: PathBuf,
}

impl MessageStore {
    pub fn new(profile_dir: &Path) -> Self {
        MessageStore {
            dir: profile_dir.join(MESSAGES_DIR),
        }
    }

    /// The directory the letters are in.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Stores a batch of messages durably with one file sync and one directory sync: all
    /// of them in one new pack (synced), then each one's `ID.json` pointing into it (not
    /// synced: the pack can rebuild it), then the directory. When this returns, every
    /// message of the batch survives a crash; before, each is there whole (its JSON
    /// readable or rebuilt from the synced pack) or not at all.
    pub fn put_batch(&self, messages: &[(StoredMessage, Vec<u8>)]) -> Result<()> {
        let Some((first, _)) = messages.first() else {
            return Ok(());
        };
        fsutil::create_private_dir(&self.dir)?;
        if let Some((m, _)) = messages
            .iter()
            .find(|(m, sealed)| sealed.len() > MAX_ENVELOPE_BYTES || m.pack.is_some())
        {
            return Err(Error::input(
                "message",
                format!("{} is too large or already in a pack", m.id),
            ));
        }
        let (file, mut f) = self.create_pack(&first.id)?;
        let mut pack = PACK_MAGIC.to_vec();
        let mut metas = Vec::with_capacity(messages.len());
        for (meta, sealed) in messages {
            let json = to_json(meta);
            // Both lengths fit: metadata is small, sealed bytes are bounded above.
            pack.extend_from_slice(&(json.len() as u32).to_be_bytes());
            pack.extend_from_slice(&json);
            pack.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
            let mut meta = meta.clone();
            meta.pack = Some(PackRef {
                file: file.clone(),
                offset: pack.len() as u64,
                len: sealed.len() as u64,
            });
            pack.extend_from_slice(sealed);
            metas.push(meta);
        }
        let path = self.dir.join(&file);
        let written = f.write_all(&pack).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(Error::profile_io(&path, e));
        }
        for meta in &metas {
            let path = self.meta_path(&meta.id);
            let write = || -> std::io::Result<()> {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?
                    .write_all(&to_json(meta))
            };
            write().map_err(|e| Error::profile_io(&path, e))?;
        }
        fsutil::sync_dir(&self.dir)
    }

    /// A new pack file named after the first letter of its batch (a refetch after a crash
    /// may find the name taken: then `ID-N.pack`).
    fn create_pack(&self, first: &EnvelopeId) -> Result<(String, File)> {
        for n in 0u32.. {
            let file = match n {
                0 => format!("{first}.pack"),
                n => format!("{first}-{n}.pack"),
            };
            let path = self.dir.join(&file);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => return Ok((file, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {}
                Err(e) => return Err(Error::profile_io(&path, e)),
            }
        }
        unreachable!("the loop returns within 1000 names")
    }

    /// Reads `ID.json`; one that is empty, cut or damaged is rebuilt from the pack that holds
    /// its letter, if one does (see the module documentation).
    fn read_meta(&self, path: &Path, id: &EnvelopeId) -> Result<StoredMessage> {
        let bytes = std::fs::read(path).map_err(|e| Error::profile_io(path, e))?;
        match serde_json::from_slice::<StoredMessage>(&bytes) {
            Ok(m) if &m.id == id => Ok(m),
            Ok(_) => self
                .recover(id)?
                .ok_or_else(|| Error::corrupt(path, "holds another message id")),
            Err(e) => self.recover(id)?.ok_or_else(|| Error::corrupt(path, e)),
        }
    }

    /// The metadata of `id` as its pack has it, written back to `ID.json` (durably);
    /// `None` when no pack holds it.
    fn recover(&self, id: &EnvelopeId) -> Result<Option<StoredMessage>> {
        for path in fsutil::list_files(&self.dir, ".pack")? {
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            for meta in read_pack(&path, file, &bytes)? {
                if &meta.id == id {
                    fsutil::write_atomic(&self.meta_path(id), &to_json(&meta))?;
                    return Ok(Some(meta));
                }
            }
        }
        Ok(None)
    }

    pub fn update(&self, meta: &StoredMessage) -> Result<()> {
        fsutil::write_atomic(&self.meta_path(&meta.id), &to_json(meta))
    }

    pub fn get(&self, id: &EnvelopeId) -> Result<StoredMessage> {
        let path = self.meta_path(id);
        if !path.exists() {
            return Err(Error::NotFound {
                what: "message",
                id: id.to_hex(),
            });
        }
        self.read_meta(&path, id)
    }

    /// The sealed letter of `id`: from its pack, or from `ID.sealed`.
    pub fn sealed(&self, id: &EnvelopeId) -> Result<Vec<u8>> {
        let Some(at) = self.get(id)?.pack else {
            let path = self.sealed_path(id);
            return std::fs::read(&path).map_err(|e| Error::profile_io(&path, e));
        };
        read_packed(&self.dir, &at)
    }

    /// Every stored message, oldest letter first.
    pub fn list(&self) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| EnvelopeId::from_hex(s).ok());
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            match (serde_json::from_slice::<StoredMessage>(&bytes), id) {
                (Ok(m), _) => out.push(m),
                (Err(e), None) => return Err(Error::corrupt(&path, e)),
                (Err(_), Some(id)) => out.push(self.read_meta(&path, &id)?),
            }
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

/// The letters of the pack `file` (its bytes), each with its [`PackRef`]. A pack that is
/// cut or damaged is a profile error naming it.
fn read_pack(path: &Path, file: &str, bytes: &[u8]) -> Result<Vec<StoredMessage>> {
    let damaged = |what: &str| Error::corrupt(path, format!("damaged pack: {what}"));
    let mut rest = bytes
        .strip_prefix(PACK_MAGIC.as_slice())
        .ok_or_else(|| damaged("no pack header"))?;
    let mut out = Vec::new();
    let take = |rest: &mut &[u8], max: usize| -> Result<(usize, Vec<u8>)> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| damaged("a record is cut"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > max || len > tail.len() {
            return Err(damaged("a record is longer than the pack or the limit"));
        }
        let (data, tail) = tail.split_at(len);
        let at = bytes.len() - tail.len() - len;
        *rest = tail;
        Ok((at, data.to_vec()))
    };
    while !rest.is_empty() {
        let (_, json) = take(&mut rest, MAX_PACK_META)?;
        let mut meta: StoredMessage =
            serde_json::from_slice(&json).map_err(|e| damaged(&e.to_string()))?;
        let (offset, sealed) = take(&mut rest, MAX_ENVELOPE_BYTES)?;
        meta.pack = Some(PackRef {
            file: file.to_string(),
            offset: offset as u64,
            len: sealed.len() as u64,
        });
        out.push(meta);
    }
    Ok(out)
}

/// The sealed bytes `at` points to in a pack of `dir`. A reference that names anything but
/// a pack there, or runs past the pack's end or its record, is a profile error, not a read
/// of something else.
fn read_packed(dir: &Path, at: &PackRef) -> Result<Vec<u8>> {
    let plain_name = at.file.ends_with(".pack")
        && !at.file.starts_with('.')
        && at
            .file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let path = dir.join(&at.file);
    if !plain_name {
        return Err(Error::corrupt(&path, "a pack reference names no pack"));
    }
    let damaged = |what: &str| Error::corrupt(&path, format!("damaged pack: {what}"));
    if at.len > MAX_ENVELOPE_BYTES as u64 || at.offset < (PACK_MAGIC.len() + 4) as u64 {
        return Err(damaged("a reference outside its records"));
    }
    let mut f = File::open(&path).map_err(|e| Error::profile_io(&path, e))?;
    // The record's length, just before the bytes, must agree with the reference.
    let mut buf = vec![0u8; at.len as usize + 4];
    f.seek(SeekFrom::Start(at.offset - 4))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => damaged("shorter than its references say"),
            _ => Error::profile_io(&path, e),
        })?;
    let (len, sealed) = buf.split_at(4);
    if u64::from(u32::from_be_bytes([len[0], len[1], len[2], len[3]])) != at.len {
        return Err(damaged("a record's length differs from its reference"));
    }
    Ok(sealed.to_vec())
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
            pack: None,
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
            // Stored as given, plus where in the batch's pack its letter is.
            let got = s.get(&m.id).unwrap();
            assert!(got.pack.is_some());
            assert_eq!(&StoredMessage { pack: None, ..got }, m);
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

    fn batch_of(ids: &[u8]) -> Vec<(StoredMessage, Vec<u8>)> {
        ids.iter()
            .map(|i| {
                let sealed = format!("sealed letter {i}").repeat(*i as usize + 1);
                (meta(EnvelopeId([*i; 16]), *i as u64), sealed.into_bytes())
            })
            .collect()
    }

    fn pack_of(s: &MessageStore, id: &EnvelopeId) -> PackRef {
        s.get(id).unwrap().pack.expect("stored in a pack")
    }

    #[test]
    fn a_pack_of_several_letters_survives_reopening_and_reads_back_each() {
        let tmp = tempfile::tempdir().unwrap();
        let batch = batch_of(&[1, 2, 3, 4, 5]);
        MessageStore::new(tmp.path()).put_batch(&batch).unwrap();
        let dir = tmp.path().join(MESSAGES_DIR);
        let packs = fsutil::list_files(&dir, ".pack").unwrap();
        assert_eq!(packs.len(), 1, "one pack for the batch");
        assert!(fsutil::list_files(&dir, ".sealed").unwrap().is_empty());

        let s = MessageStore::new(tmp.path());
        for (m, sealed) in &batch {
            let got = s.get(&m.id).unwrap();
            assert_eq!(
                got.pack.as_ref().unwrap().file,
                format!("{}.pack", batch[0].0.id)
            );
            assert_eq!(StoredMessage { pack: None, ..got }, *m);
            assert_eq!(&s.sealed(&m.id).unwrap(), sealed);
        }
        assert_eq!(s.list().unwrap().len(), batch.len());
        // An update (read, another node) keeps the letter where it is.
        let mut m = s.get(&batch[2].0.id).unwrap();
        m.seen = true;
        s.update(&m).unwrap();
        assert_eq!(s.sealed(&m.id).unwrap(), batch[2].1);
        assert!(s.get(&m.id).unwrap().seen);
    }

    #[test]
    fn letters_stored_one_file_each_before_packs_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(MESSAGES_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let old = EnvelopeId([0x0d; 16]);
        // The files as an older client wrote them: no `pack` field.
        let json = serde_json::json!({
            "id": old.to_hex(), "received_at": 5, "nodes": ["http://127.0.0.1:1"],
            "size": 4096, "trust": {"state": "unverified", "reason": "not signed"},
            "seen": false, "header": null
        });
        std::fs::write(dir.join(format!("{old}.json")), json.to_string()).unwrap();
        std::fs::write(dir.join(format!("{old}.sealed")), b"old letter").unwrap();
        let s = MessageStore::new(tmp.path());
        s.put_batch(&batch_of(&[1, 2])).unwrap();
        assert_eq!(s.get(&old).unwrap(), meta(old, 5));
        assert_eq!(s.sealed(&old).unwrap(), b"old letter");
        let ids: Vec<_> = s.list().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![EnvelopeId([1; 16]), EnvelopeId([2; 16]), old]);
        // And what is written for such a letter still has no `pack`.
        s.update(&s.get(&old).unwrap()).unwrap();
        let written = std::fs::read_to_string(dir.join(format!("{old}.json"))).unwrap();
        assert!(!written.contains("pack"), "{written}");
    }

    #[test]
    fn a_crash_before_the_metadata_reached_the_disk_is_rebuilt_from_the_pack() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let batch = batch_of(&[1, 2, 3]);
        s.put_batch(&batch).unwrap();
        let dir = tmp.path().join(MESSAGES_DIR);
        // What a crash can leave of files written but not synced: empty, cut, or zeros.
        let path = |id: &EnvelopeId| dir.join(format!("{id}.json"));
        std::fs::write(path(&batch[0].0.id), b"").unwrap();
        let whole = std::fs::read(path(&batch[1].0.id)).unwrap();
        std::fs::write(path(&batch[1].0.id), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(path(&batch[2].0.id), vec![0u8; 40]).unwrap();
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 3);
        for (m, sealed) in &batch {
            assert!(s.contains(&m.id), "a refetch acks it, stores nothing twice");
            assert_eq!(
                StoredMessage {
                    pack: None,
                    ..s.get(&m.id).unwrap()
                },
                *m
            );
            assert_eq!(&s.sealed(&m.id).unwrap(), sealed);
        }
        // Rebuilt durably: the files read on their own again.
        let again: StoredMessage =
            serde_json::from_slice(&std::fs::read(path(&batch[0].0.id)).unwrap()).unwrap();
        assert_eq!(again.id, batch[0].0.id);
    }

    #[test]
    fn a_batch_refetched_after_a_crash_gets_a_pack_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let batch = batch_of(&[1, 2, 3]);
        s.put_batch(&batch).unwrap();
        // The crash came before letter 1's and 2's metadata had names: the next fetch
        // stores them again (not letter 3, which it finds stored), under the same first id.
        let dir = tmp.path().join(MESSAGES_DIR);
        for m in &batch[..2] {
            std::fs::remove_file(dir.join(format!("{}.json", m.0.id))).unwrap();
            assert!(!s.contains(&m.0.id));
        }
        s.put_batch(&batch[..2]).unwrap();
        assert_eq!(fsutil::list_files(&dir, ".pack").unwrap().len(), 2);
        assert_eq!(
            pack_of(&s, &batch[0].0.id).file,
            format!("{}-1.pack", batch[0].0.id)
        );
        assert_eq!(
            pack_of(&s, &batch[2].0.id).file,
            format!("{}.pack", batch[0].0.id)
        );
        for (m, sealed) in &batch {
            assert_eq!(&s.sealed(&m.id).unwrap(), sealed);
        }
        let ids: Vec<_> = s.list().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, batch.iter().map(|(m, _)| m.id).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_pack_is_a_profile_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MessageStore::new(tmp.path());
        let batch = batch_of(&[1, 2, 3]);
        s.put_batch(&batch).unwrap();
        let dir = tmp.path().join(MESSAGES_DIR);
        let at = pack_of(&s, &batch[2].0.id);
        let pack = dir.join(&at.file);
        let bytes = std::fs::read(&pack).unwrap();
        // Cut short: the last letter is gone, the first still reads.
        std::fs::write(&pack, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(s.sealed(&batch[2].0.id).unwrap_err().exit_code(), 4);
        assert_eq!(s.sealed(&batch[0].0.id).unwrap(), batch[0].1);
        // A reference that points elsewhere, or off its record.
        let mut m = s.get(&batch[0].0.id).unwrap();
        for bad in [
            PackRef {
                file: "../../secret.key".into(),
                ..at.clone()
            },
            PackRef {
                file: "config.json".into(),
                ..at.clone()
            },
            PackRef {
                offset: at.offset + 1,
                ..at.clone()
            },
            PackRef {
                offset: 0,
                ..at.clone()
            },
            PackRef {
                len: u64::MAX,
                ..at.clone()
            },
            PackRef {
                offset: u64::MAX - 2,
                ..at.clone()
            },
        ] {
            m.pack = Some(bad.clone());
            s.update(&m).unwrap();
            let e = s.sealed(&m.id).unwrap_err();
            assert_eq!(e.exit_code(), 4, "{bad:?}: {e}");
        }
        // Metadata that must be rebuilt from a damaged pack: an error naming the pack.
        for damage in [
            &b"garbage"[..],
            &bytes[..20],
            &bytes[..PACK_MAGIC.len() + 6],
        ] {
            std::fs::write(&pack, damage).unwrap();
            std::fs::write(dir.join(format!("{}.json", batch[1].0.id)), b"").unwrap();
            let e = s.get(&batch[1].0.id).unwrap_err();
            assert_eq!(e.exit_code(), 4);
            assert!(e.to_string().contains("pack"), "{e}");
            assert_eq!(s.list().unwrap_err().exit_code(), 4);
        }
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
