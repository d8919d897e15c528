//! The bridge's durable local store: mailboxes with their UIDVALIDITY, messages by UID with
//! flags, and the set of source letters already imported.
//!
//! Layout under the bridge state directory:
//! - `mailboxes.json`: every mailbox (name, directory number, UIDVALIDITY, special use),
//!   rewritten atomically (temp file, fsync, rename) on create, delete and rename;
//! - `mbox/N/journal`: an append-only log of `add`, `flags` and `expunge` records, one JSON
//!   object a line, fsynced before a command is answered; compacted when mostly dead;
//! - `mbox/N/UID.eml`: the message as served (a COPY hard-links it);
//! - `imported`: the source ids already placed in a mailbox, one a line, so an expunged
//!   letter does not come back.
//!
//! UIDVALIDITY is chosen once per mailbox (seconds since the epoch, strictly increasing
//! over the store's life) and never changes while the mailbox exists; UIDs grow and are
//! never handed out twice, because UIDNEXT is kept in the journal across compaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest message the store accepts (APPEND, import, SMTP copy to Sent).
pub const MAX_MESSAGE: usize = 50 * 1024 * 1024;
/// Most messages in one mailbox.
pub const MAX_MESSAGES: usize = 1_000_000;
/// Most mailboxes in one store.
pub const MAX_MAILBOXES: usize = 10_000;
/// Longest mailbox name, in bytes.
pub const MAX_NAME: usize = 512;
/// Most keywords on one message, and the longest keyword.
pub const MAX_FLAGS: usize = 64;
pub const MAX_FLAG_LEN: usize = 128;
/// The hierarchy delimiter of mailbox names.
pub const DELIMITER: char = '/';

/// The mailboxes every store has, with their RFC 6154 special use.
pub const DEFAULT_MAILBOXES: [(&str, Option<SpecialUse>); 5] = [
    ("INBOX", None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Archive", Some(SpecialUse::Archive)),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Archive,
}

impl SpecialUse {
    /// The LIST attribute name without its backslash.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Archive => "Archive",
        }
    }
}

/// One message of a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    pub size: u32,
    /// INTERNALDATE, seconds since the epoch.
    pub date: i64,
    /// System flags as `\Seen`, keywords as themselves; sorted, no duplicates.
    pub flags: BTreeSet<String>,
}

impl Msg {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxEntry {
    name: String,
    dir: u64,
    uidvalidity: u32,
    #[serde(default)]
    special: Option<SpecialUse>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxList {
    next_dir: u64,
    last_uidvalidity: u32,
    mailboxes: Vec<MailboxEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Record {
    /// Written first by compaction: UIDNEXT survives even when the newest message is gone.
    Uidnext {
        n: u32,
    },
    Add {
        uid: u32,
        size: u32,
        date: i64,
        flags: Vec<String>,
    },
    Flags {
        uid: u32,
        flags: Vec<String>,
    },
    Expunge {
        uids: Vec<u32>,
    },
}

/// A mailbox in memory: its messages sorted by UID, and its open journal.
#[derive(Debug)]
pub struct Mailbox {
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub special: Option<SpecialUse>,
    pub messages: Vec<Msg>,
    dir: PathBuf,
    journal: File,
    journal_records: usize,
}

impl Mailbox {
    pub fn get(&self, uid: u32) -> Option<&Msg> {
        self.index_of(uid).map(|i| &self.messages[i])
    }

    fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn path_of(&self, uid: u32) -> PathBuf {
        self.dir.join(format!("{uid}.eml"))
    }

    fn open(name: String, entry: &MailboxEntry, dir: PathBuf) -> Result<Mailbox> {
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let path = dir.join("journal");
        let mut messages: BTreeMap<u32, Msg> = BTreeMap::new();
        let mut uidnext = 1u32;
        let mut records = 0usize;
        let mut good_len = 0u64;
        if let Ok(file) = File::open(&path) {
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(Error::io(&path))?;
                if n == 0 {
                    break;
                }
                // A torn last line (crash mid-append) was never acknowledged: drop it.
                if !line.ends_with('\n') {
                    break;
                }
                let rec: Record =
                    serde_json::from_str(line.trim_end()).map_err(|e| Error::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                good_len += n as u64;
                records += 1;
                match rec {
                    Record::Uidnext { n } => uidnext = uidnext.max(n),
                    Record::Add {
                        uid,
                        size,
                        date,
                        flags,
                    } => {
                        uidnext = uidnext.max(uid.saturating_add(1));
                        messages.insert(
                            uid,
                            Msg {
                                uid,
                                size,
                                date,
                                flags: flags.into_iter().collect(),
                            },
                        );
                    }
                    Record::Flags { uid, flags } => {
                        if let Some(m) = messages.get_mut(&uid) {
                            m.flags = flags.into_iter().collect();
                        }
                    }
                    Record::Expunge { uids } => {
                        for uid in uids {
                            messages.remove(&uid);
                        }
                    }
                }
            }
        }
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        if journal.metadata().map_err(Error::io(&path))?.len() != good_len {
            journal.set_len(good_len).map_err(Error::io(&path))?;
        }
        // A message whose file is missing was added by a crashed append: not acknowledged.
        let messages: Vec<Msg> = messages
            .into_values()
            .filter(|m| dir.join(format!("{}.eml", m.uid)).exists())
            .collect();
        Ok(Mailbox {
            name,
            uidvalidity: entry.uidvalidity,
            uidnext,
            special: entry.special,
            messages,
            dir,
            journal,
            journal_records: records,
        })
    }

    fn append_records(&mut self, recs: &[Record]) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in recs {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Corrupt {
                path: self.dir.join("journal"),
                reason: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        let path = self.dir.join("journal");
        self.journal.write_all(&buf).map_err(Error::io(&path))?;
        self.journal.sync_data().map_err(Error::io(&path))?;
        self.journal_records += recs.len();
        if self.journal_records > 1000 && self.journal_records > 4 * self.messages.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with one `add` per live message, UIDNEXT first.
    fn compact(&mut self) -> Result<()> {
        let path = self.dir.join("journal");
        let tmp = self.dir.join("journal.tmp");
        let mut buf = Vec::new();
        let mut recs = vec![Record::Uidnext { n: self.uidnext }];
        recs.extend(self.messages.iter().map(|m| Record::Add {
            uid: m.uid,
            size: m.size,
            date: m.date,
            flags: m.flags.iter().cloned().collect(),
        }));
        for r in &recs {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        write_durably(&tmp, &path, &buf)?;
        self.journal = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        self.journal_records = recs.len();
        Ok(())
    }

    fn next_uid(&mut self) -> Result<u32> {
        if self.messages.len() >= MAX_MESSAGES {
            return Err(Error::MailboxFull {
                mailbox: self.name.clone(),
                limit: MAX_MESSAGES,
            });
        }
        let uid = self.uidnext;
        // UIDs are 32-bit and never reused: a mailbox that used them all is full for good.
        self.uidnext = uid.checked_add(1).ok_or(Error::MailboxFull {
            mailbox: self.name.clone(),
            limit: u32::MAX as usize,
        })?;
        Ok(uid)
    }
}

/// A message to add to a mailbox.
pub struct NewMessage<'a> {
    pub bytes: &'a [u8],
    pub flags: BTreeSet<String>,
    pub date: i64,
    /// The source letter it came from (INBOX import), recorded as imported.
    pub source_id: Option<String>,
}

/// The whole store. Not thread-safe by itself: the bridge holds it in a mutex.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    list: MailboxList,
    mailboxes: BTreeMap<String, Mailbox>,
    imported: HashSet<String>,
    imported_file: File,
    /// Bumped on every change: sessions compare it to know when to look again.
    version: u64,
}

impl Store {
    /// Opens (or creates) the store under `root`, with the default mailboxes.
    pub fn open(root: &Path) -> Result<Store> {
        fs::create_dir_all(root.join("mbox")).map_err(Error::io(root))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(Error::io(root))?;
        }
        let list_path = root.join("mailboxes.json");
        let list: MailboxList = match fs::read(&list_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: list_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MailboxList::default(),
            Err(e) => {
                return Err(Error::Io {
                    path: list_path,
                    source: e,
                });
            }
        };
        let imported_path = root.join("imported");
        let mut imported = HashSet::new();
        if let Ok(text) = fs::read_to_string(&imported_path) {
            // Only whole lines count: a torn last line was never acknowledged.
            let complete = match text.rfind('\n') {
                Some(i) => &text[..=i],
                None => "",
            };
            imported.extend(complete.lines().map(str::to_owned));
        }
        let imported_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&imported_path)
            .map_err(Error::io(&imported_path))?;
        let mut store = Store {
            root: root.to_owned(),
            list,
            mailboxes: BTreeMap::new(),
            imported,
            imported_file,
            version: 0,
        };
        for entry in store.list.mailboxes.clone() {
            let dir = store.root.join("mbox").join(entry.dir.to_string());
            let mb = Mailbox::open(entry.name.clone(), &entry, dir)?;
            store.mailboxes.insert(entry.name.clone(), mb);
        }
        for (name, special) in DEFAULT_MAILBOXES {
            if !store.mailboxes.contains_key(name) {
                store.create_with(name, special)?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Mailbox names, sorted, INBOX first.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.mailboxes.keys().map(String::as_str).collect();
        v.sort_by_key(|n| (*n != "INBOX", *n));
        v
    }

    pub fn mailbox(&self, name: &str) -> Option<&Mailbox> {
        self.mailboxes.get(&canonical(name))
    }

    fn mailbox_mut(&mut self, name: &str) -> Result<&mut Mailbox> {
        let key = canonical(name);
        self.mailboxes.get_mut(&key).ok_or(Error::NoMailbox(key))
    }

    pub fn create(&mut self, name: &str) -> Result<()> {
        let name = canonical(name.trim_end_matches(DELIMITER));
        validate_name(&name)?;
        if self.mailboxes.contains_key(&name) {
            return Err(Error::MailboxExists(name));
        }
        self.create_with(&name, None)
    }

    fn create_with(&mut self, name: &str, special: Option<SpecialUse>) -> Result<()> {
        if self.mailboxes.len() >= MAX_MAILBOXES {
            return Err(Error::BadMailboxName(name.to_owned(), "too many mailboxes"));
        }
        let now = u32::try_from(crate::now()).unwrap_or(u32::MAX).max(1);
        let uidvalidity = now.max(self.list.last_uidvalidity.saturating_add(1));
        self.list.last_uidvalidity = uidvalidity;
        let dir_no = self.list.next_dir;
        self.list.next_dir += 1;
        let entry = MailboxEntry {
            name: name.to_owned(),
            dir: dir_no,
            uidvalidity,
            special,
        };
        let dir = self.root.join("mbox").join(dir_no.to_string());
        // A leftover directory of that number (crash after mkdir) holds nothing valid.
        let _ = fs::remove_dir_all(&dir);
        let mb = Mailbox::open(name.to_owned(), &entry, dir)?;
        self.list.mailboxes.push(entry);
        self.save_list()?;
        self.mailboxes.insert(name.to_owned(), mb);
        self.version += 1;
        Ok(())
    }

    pub fn delete(&mut self, name: &str) -> Result<()> {
        let name = canonical(name);
        if DEFAULT_MAILBOXES.iter().any(|(n, _)| *n == name) {
            return Err(Error::Protected(name));
        }
        let mb = self
            .mailboxes
            .remove(&name)
            .ok_or_else(|| Error::NoMailbox(name.clone()))?;
        self.list.mailboxes.retain(|e| e.name != name);
        self.save_list()?;
        let _ = fs::remove_dir_all(&mb.dir);
        self.version += 1;
        Ok(())
    }

    /// Renames a mailbox and its children (`a` → `b` moves `a/x` to `b/x`).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let from = canonical(from);
        let to = canonical(to.trim_end_matches(DELIMITER));
        validate_name(&to)?;
        if from == "INBOX" || DEFAULT_MAILBOXES.iter().any(|(n, _)| *n == from) {
            return Err(Error::Protected(from));
        }
        if !self.mailboxes.contains_key(&from) {
            return Err(Error::NoMailbox(from));
        }
        if self.mailboxes.contains_key(&to) {
            return Err(Error::MailboxExists(to));
        }
        let prefix = format!("{from}{DELIMITER}");
        let moving: Vec<String> = self
            .mailboxes
            .keys()
            .filter(|k| **k == from || k.starts_with(&prefix))
            .cloned()
            .collect();
        for old in moving {
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(mut mb) = self.mailboxes.remove(&old) {
                mb.name = new.clone();
                self.mailboxes.insert(new.clone(), mb);
            }
            for e in &mut self.list.mailboxes {
                if e.name == old {
                    e.name = new.clone();
                }
            }
        }
        self.save_list()?;
        self.version += 1;
        Ok(())
    }

    fn save_list(&self) -> Result<()> {
        let path = self.root.join("mailboxes.json");
        let bytes = serde_json::to_vec_pretty(&self.list).map_err(|e| Error::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_durably(&self.root.join("mailboxes.json.tmp"), &path, &bytes)
    }

    pub fn is_imported(&self, source_id: &str) -> bool {
        self.imported.contains(source_id)
    }

    /// Adds messages to one mailbox with one fsync of the journal; returns their UIDs.
    pub fn append(&mut self, name: &str, msgs: &[NewMessage<'_>]) -> Result<Vec<u32>> {
        for m in msgs {
            if m.bytes.len() > MAX_MESSAGE {
                return Err(Error::TooBig {
                    size: m.bytes.len(),
                    limit: MAX_MESSAGE,
                });
            }
        }
        let mb = self.mailbox_mut(name)?;
        let mut recs = Vec::with_capacity(msgs.len());
        let mut added = Vec::with_capacity(msgs.len());
        for m in msgs {
            let uid = mb.next_uid()?;
            let path = mb.path_of(uid);
            write_file_synced(&path, m.bytes)?;
            let msg = Msg {
                uid,
                size: u32::try_from(m.bytes.len()).unwrap_or(u32::MAX),
                date: m.date,
                flags: clean_flags(&m.flags),
            };
            recs.push(Record::Add {
                uid,
                size: msg.size,
                date: msg.date,
                flags: msg.flags.iter().cloned().collect(),
            });
            added.push(msg);
        }
        sync_dir(&mb.dir)?;
        mb.append_records(&recs)?;
        let uids = added.iter().map(|m| m.uid).collect();
        mb.messages.extend(added);
        let ids: Vec<String> = msgs.iter().filter_map(|m| m.source_id.clone()).collect();
        self.mark_imported(&ids)?;
        self.version += 1;
        Ok(uids)
    }

    /// Records source ids as imported, so the importer never adds them.
    pub fn mark_imported(&mut self, ids: &[String]) -> Result<()> {
        let ids: Vec<&String> = ids
            .iter()
            .filter(|i| !i.contains('\n') && !self.imported.contains(*i))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for id in &ids {
            buf.push_str(id);
            buf.push('\n');
        }
        let path = self.root.join("imported");
        self.imported_file
            .write_all(buf.as_bytes())
            .map_err(Error::io(&path))?;
        self.imported_file.sync_data().map_err(Error::io(&path))?;
        self.imported.extend(ids.into_iter().cloned());
        Ok(())
    }

    /// Sets the flags of several messages (absent UIDs are skipped).
    pub fn set_flags(&mut self, name: &str, changes: &[(u32, BTreeSet<String>)]) -> Result<()> {
        let mb = self.mailbox_mut(name)?;
        let mut recs = Vec::new();
        for (uid, flags) in changes {
            if let Some(i) = mb.index_of(*uid) {
                let flags = clean_flags(flags);
                if mb.messages[i].flags != flags {
                    recs.push(Record::Flags {
                        uid: *uid,
                        flags: flags.iter().cloned().collect(),
                    });
                    mb.messages[i].flags = flags;
                }
            }
        }
        if !recs.is_empty() {
            mb.append_records(&recs)?;
            self.version += 1;
        }
        Ok(())
    }

    /// Copies messages into `to`, keeping flags and dates; returns (source UID, new UID).
    pub fn copy(&mut self, from: &str, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        let src = self
            .mailbox(from)
            .ok_or_else(|| Error::NoMailbox(from.to_owned()))?;
        let items: Vec<(Msg, PathBuf)> = uids
            .iter()
            .filter_map(|u| src.get(*u).map(|m| (m.clone(), src.path_of(*u))))
            .collect();
        let dst = self.mailbox_mut(to)?;
        let mut recs = Vec::new();
        let mut pairs = Vec::new();
        let mut added = Vec::new();
        for (m, path) in items {
            let uid = dst.next_uid()?;
            let target = dst.path_of(uid);
            let _ = fs::remove_file(&target);
            if fs::hard_link(&path, &target).is_err() {
                let bytes = fs::read(&path).map_err(Error::io(&path))?;
                write_file_synced(&target, &bytes)?;
            }
            recs.push(Record::Add {
                uid,
                size: m.size,
                date: m.date,
                flags: m.flags.iter().cloned().collect(),
            });
            pairs.push((m.uid, uid));
            added.push(Msg { uid, ..m });
        }
        sync_dir(&dst.dir)?;
        dst.append_records(&recs)?;
        dst.messages.extend(added);
        if !pairs.is_empty() {
            self.version += 1;
        }
        Ok(pairs)
    }

    /// Removes messages for good; returns the UIDs actually removed.
    pub fn expunge(&mut self, name: &str, uids: &[u32]) -> Result<Vec<u32>> {
        let mb = self.mailbox_mut(name)?;
        let gone: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| mb.index_of(*u).is_some())
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        mb.append_records(&[Record::Expunge { uids: gone.clone() }])?;
        let set: HashSet<u32> = gone.iter().copied().collect();
        mb.messages.retain(|m| !set.contains(&m.uid));
        for uid in &gone {
            let _ = fs::remove_file(mb.path_of(*uid));
        }
        self.version += 1;
        Ok(gone)
    }

    /// The message's bytes as served.
    pub fn read(&self, name: &str, uid: u32) -> Result<Vec<u8>> {
        let mb = self
            .mailbox(name)
            .ok_or_else(|| Error::NoMailbox(name.to_owned()))?;
        let path = mb.path_of(uid);
        fs::read(&path).map_err(Error::io(path))
    }
}

/// `inbox` in any case is INBOX (RFC 3501 5.1); other names are case-sensitive.
pub fn canonical(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else {
        name.to_owned()
    }
}

fn validate_name(name: &str) -> Result<()> {
    let bad = |why| Err(Error::BadMailboxName(name.to_owned(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("too long");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("control character");
    }
    if name.split(DELIMITER).any(|p| p.is_empty()) {
        return bad("empty hierarchy level");
    }
    if name.contains('*') || name.contains('%') {
        return bad("wildcard character");
    }
    Ok(())
}

/// Keeps the flags a message may carry: no `\Recent` (session-only), bounded keywords.
fn clean_flags(flags: &BTreeSet<String>) -> BTreeSet<String> {
    flags
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent") && f.len() <= MAX_FLAG_LEN)
        .take(MAX_FLAGS)
        .cloned()
        .collect()
}

fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))?;
    f.sync_data().map_err(Error::io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Temp file, fsync, rename, fsync the directory: the old or the new content, never half.
fn write_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_synced(tmp, bytes)?;
    fs::rename(tmp, path).map_err(Error::io(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(store: &mut Store, name: &str, body: &str) -> u32 {
        store
            .append(
                name,
                &[NewMessage {
                    bytes: body.as_bytes(),
                    flags: BTreeSet::new(),
                    date: 1,
                    source_id: None,
                }],
            )
            .unwrap()[0]
    }

    #[test]
    fn uids_and_uidvalidity_survive_reopen_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (validity, last) = {
            let mut s = Store::open(dir.path()).unwrap();
            let a = add(&mut s, "INBOX", "Subject: a\r\n\r\na");
            let b = add(&mut s, "INBOX", "Subject: b\r\n\r\nb");
            assert_eq!((a, b), (1, 2));
            s.expunge("INBOX", &[b]).unwrap();
            (s.mailbox("INBOX").unwrap().uidvalidity, b)
        };
        let mut s = Store::open(dir.path()).unwrap();
        let mb = s.mailbox("inbox").unwrap();
        assert_eq!(mb.uidvalidity, validity);
        assert_eq!(mb.messages.len(), 1);
        let c = add(&mut s, "INBOX", "Subject: c\r\n\r\nc");
        assert!(c > last, "UID {c} reused after {last}");
    }

    #[test]
    fn flags_persist_and_compaction_keeps_uidnext() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            let mut uids = Vec::new();
            for i in 0..10 {
                uids.push(add(&mut s, "Archive", &format!("Subject: {i}\r\n\r\n")));
            }
            // Enough flag churn to trigger compaction, then expunge the newest.
            for round in 0..120 {
                let flags: BTreeSet<String> = if round % 2 == 0 {
                    ["\\Seen".to_owned(), "work".to_owned()].into()
                } else {
                    BTreeSet::new()
                };
                let changes: Vec<_> = uids.iter().map(|u| (*u, flags.clone())).collect();
                s.set_flags("Archive", &changes).unwrap();
            }
            s.expunge("Archive", &[10]).unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        let mb = s.mailbox("Archive").unwrap();
        assert_eq!(mb.messages.len(), 9);
        assert!(mb.messages.iter().all(|m| m.flags.is_empty()));
        assert_eq!(add(&mut s, "Archive", "x"), 11);
    }

    #[test]
    fn torn_journal_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            add(&mut s, "INBOX", "one");
        }
        let journal = dir.path().join("mbox/0/journal");
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(b"{\"op\":\"add\",\"uid\":7").unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.mailbox("INBOX").unwrap().messages.len(), 1);
        assert_eq!(add(&mut s, "INBOX", "two"), 2);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.mailbox("INBOX").unwrap().messages.len(), 2);
    }

    #[test]
    fn copy_rename_delete_and_imported_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.create("Work").unwrap();
        s.create("Work/2026").unwrap();
        assert!(matches!(
            s.create("Work/2026"),
            Err(Error::MailboxExists(_))
        ));
        let uid = s
            .append(
                "INBOX",
                &[NewMessage {
                    bytes: b"hi",
                    flags: BTreeSet::new(),
                    date: 5,
                    source_id: Some("abc".into()),
                }],
            )
            .unwrap()[0];
        let pairs = s.copy("INBOX", &[uid, 99], "Work/2026").unwrap();
        assert_eq!(pairs, vec![(uid, 1)]);
        s.rename("Work", "Jobs").unwrap();
        assert_eq!(s.read("Jobs/2026", 1).unwrap(), b"hi");
        assert!(matches!(s.delete("Sent"), Err(Error::Protected(_))));
        s.delete("Jobs/2026").unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.is_imported("abc"));
        assert!(s.mailbox("Jobs/2026").is_none());
        assert_eq!(s.names()[0], "INBOX");
    }
}
