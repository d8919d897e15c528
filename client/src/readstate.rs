//! Read state across a user's devices (`spec/client.md` §1.3): a letter read on one device
//! shows as read on the others.
//!
//! `read` notes the envelope id in `read-state.pending` (durably, no network). The next
//! `fetch` first turns the pending ids into one small *state letter*: from the user to the
//! user, signed and sealed to their own key like any letter, queued as a copy for their own
//! mailbox, so that every device fetches it; its subject is [`MARKER`] and the ids. A
//! device that fetches a state letter signed by the user's own key marks those letters
//! seen, does not store it, and acks it. Nodes see one more envelope, nothing else.

use std::path::{Path, PathBuf};

use sealpost_proto::EnvelopeId;
use sealpost_proto::letter::Letter;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{Header, Trust};

/// The subject prefix of a state letter.
pub const MARKER: &str = "[sealpost read-state]";
/// Ids per state letter (the rest wait for the next fetch).
pub const MAX_IDS: usize = 20;
/// The pending ids, one hex id a line.
pub const PENDING_FILE: &str = "read-state.pending";

fn pending_path(dir: &Path) -> PathBuf {
    dir.join(PENDING_FILE)
}

/// The ids read here and not yet announced.
pub fn pending(dir: &Path) -> Result<Vec<EnvelopeId>> {
    let path = pending_path(dir);
    let Some(bytes) = fsutil::read_optional(&path)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::corrupt(&path, "not text"))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let id = EnvelopeId::from_hex(line.trim()).map_err(|e| Error::corrupt(&path, e))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Notes that `id` was read here (durably).
pub fn note_read(dir: &Path, id: &EnvelopeId) -> Result<()> {
    let mut ids = pending(dir)?;
    if ids.contains(id) {
        return Ok(());
    }
    ids.push(*id);
    write_pending(dir, &ids)
}

/// Forgets the first `n` pending ids (they were announced).
pub fn announced(dir: &Path, n: usize) -> Result<()> {
    let ids = pending(dir)?;
    write_pending(dir, &ids[n.min(ids.len())..])
}

fn write_pending(dir: &Path, ids: &[EnvelopeId]) -> Result<()> {
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    fsutil::write_atomic(&pending_path(dir), text.as_bytes())
}

/// The state letter announcing `ids` (at most [`MAX_IDS`]), from and to `me`.
pub fn state_letter(me: &sealpost_proto::Address, ids: &[EnvelopeId], now: i64) -> Letter {
    let list: Vec<String> = ids.iter().take(MAX_IDS).map(|i| i.to_hex()).collect();
    Letter::new(
        me.clone(),
        vec![me.clone()],
        format!("{MARKER} {}", list.join(" ")),
        "Sealpost keeps the read state of your devices in step with letters like this one.\n",
        now,
    )
}

/// The ids a fetched letter marks read, if it is a state letter of the user's own: signed
/// by their pinned key, from and to them.
pub fn state_ids(
    me: &sealpost_proto::Address,
    trust: &Trust,
    header: Option<&Header>,
) -> Option<Vec<EnvelopeId>> {
    let h = header?;
    if !trust.is_verified() || &h.from != me || h.to.as_slice() != std::slice::from_ref(me) {
        return None;
    }
    let rest = h.subject.strip_prefix(MARKER)?;
    rest.split_whitespace()
        .take(MAX_IDS)
        .map(|s| EnvelopeId::from_hex(s).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ids_are_kept_once_and_forgotten_when_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (EnvelopeId([1; 16]), EnvelopeId([2; 16]));
        assert!(pending(dir.path()).unwrap().is_empty());
        note_read(dir.path(), &a).unwrap();
        note_read(dir.path(), &b).unwrap();
        note_read(dir.path(), &a).unwrap();
        assert_eq!(pending(dir.path()).unwrap(), vec![a, b]);
        announced(dir.path(), 1).unwrap();
        assert_eq!(pending(dir.path()).unwrap(), vec![b]);
    }

    #[test]
    fn only_the_users_own_signed_state_letters_count() {
        let me = sealpost_proto::Address::parse("alice@alpha.test").unwrap();
        let other = sealpost_proto::Address::parse("mallory@alpha.test").unwrap();
        let ids = [EnvelopeId([3; 16]), EnvelopeId([4; 16])];
        let letter = state_letter(&me, &ids, 1);
        let verified = Trust::Verified { signer: "x".into() };
        let h = Header::of(&letter);
        assert_eq!(state_ids(&me, &verified, Some(&h)), Some(ids.to_vec()));
        let unverified = Trust::Unverified { reason: "x".into() };
        assert_eq!(state_ids(&me, &unverified, Some(&h)), None);
        let theirs = Header::of(&state_letter(&other, &ids, 1));
        assert_eq!(state_ids(&me, &verified, Some(&theirs)), None);
        let mut plain = h.clone();
        plain.subject = "hello".into();
        assert_eq!(state_ids(&me, &verified, Some(&plain)), None);
        let mut bad = h;
        bad.subject = format!("{MARKER} zz");
        assert_eq!(state_ids(&me, &verified, Some(&bad)), None);
    }
}
