//! Letters waiting for their recipients to be looked up (`outbox-letters/ID.json`).
//!
//! `send` keeps the composed letter here, sealed to the user's own key, before it looks
//! any recipient up: lookups go through the user's homes (oblivious lookups), so a home
//! that is down or hangs, or a Ctrl-C, must not lose the letter. Once every recipient is
//! looked up and the letter sealed for them, its hops go to the outbox
//! ([`crate::outbox`]) and the waiting letter is removed; until then the next command that
//! flushes the outbox (`send`, `fetch`, `outbox flush`) tries again
//! ([`crate::Client::send_waiting`]).
//!
//! Sent once: a waiting letter is removed right after its hops are queued, and before
//! anything is submitted; a run that stopped in between leaves hops that no node has seen,
//! which the next try drops (by the letter's message id) before it seals the letter again.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use sealpost_proto::Address;
use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::seal::{SignatureStatus, open, seal};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::profile::to_json;
use crate::send::LegacyChoice;

pub const LETTERS_DIR: &str = "outbox-letters";

/// A letter waiting for lookups: sealed to the user's own key (and signed), with what the
/// user chose about legacy e-mail for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingLetter {
    /// 32 hex digits, random.
    pub id: String,
    pub created: u64,
    /// The letter's message id: its hops carry it too.
    pub message_id: String,
    #[serde(default)]
    pub subject: String,
    /// To and Cc, each once.
    pub recipients: Vec<Address>,
    /// `--legacy` addresses (legacy without a lookup, agreed to).
    #[serde(default)]
    pub forced: Vec<Address>,
    /// Senders of legacy mail being replied to (back through the gateway).
    #[serde(default)]
    pub replies: Vec<Address>,
    /// The letter sealed to the user's own key, base64.
    pub sealed: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl WaitingLetter {
    /// `letter`, sealed with `keys` to `own` (the user's certificate), ready to be kept.
    pub fn new(
        letter: &Letter,
        choice: &LegacyChoice,
        keys: &Keyring,
        own: &Cert,
        now: u64,
    ) -> Result<WaitingLetter> {
        let sealed = seal(letter, keys, own)?;
        let mut recipients: Vec<Address> = Vec::new();
        for a in letter.to.iter().chain(&letter.cc) {
            if !recipients.contains(a) {
                recipients.push(a.clone());
            }
        }
        Ok(WaitingLetter {
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: now,
            message_id: letter.message_id.clone(),
            subject: letter.subject.clone(),
            recipients,
            forced: choice.forced.clone(),
            replies: choice.replies.clone(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
            attempts: 0,
            last_error: None,
        })
    }

    /// What the user chose about legacy e-mail for this letter.
    pub fn choice(&self) -> LegacyChoice {
        LegacyChoice {
            forced: self.forced.clone(),
            replies: self.replies.clone(),
        }
    }

    /// The letter, opened with `keys`; it must be signed by `own` (the user's key).
    pub fn letter(&self, keys: &Keyring, own: &Cert) -> Result<Letter> {
        let path = format!("{LETTERS_DIR}/{}.json", self.id);
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.sealed)
            .map_err(|e| Error::corrupt(&path, e))?;
        let opened = open(&sealed, keys, &|_| Some(own.clone())).map_err(|e| {
            Error::corrupt(
                &path,
                format!("the letter does not open with your key: {e}"),
            )
        })?;
        if !matches!(opened.signature, SignatureStatus::Good { .. })
            || opened.letter.message_id != self.message_id
        {
            return Err(Error::corrupt(&path, "the letter is not the one you saved"));
        }
        Ok(opened.letter)
    }
}

/// The directory of waiting letters, one `ID.json` each.
pub struct WaitingLetters {
    dir: PathBuf,
}

impl WaitingLetters {
    pub fn new(profile_dir: &Path) -> Self {
        WaitingLetters {
            dir: profile_dir.join(LETTERS_DIR),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Keeps (or updates) a waiting letter, durably.
    pub fn put(&self, w: &WaitingLetter) -> Result<()> {
        fsutil::create_private_dir(&self.dir)?;
        fsutil::write_atomic(&self.path(&w.id), &to_json(w))
    }

    /// Whether the letter `id` still waits.
    pub fn contains(&self, id: &str) -> Result<bool> {
        let path = self.path(id);
        path.try_exists().map_err(|e| Error::profile_io(&path, e))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        fsutil::remove_durable(&self.path(id))
    }

    /// Every waiting letter, oldest first.
    pub fn all(&self) -> Result<Vec<WaitingLetter>> {
        let mut out = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            let w: WaitingLetter =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
            out.push(w);
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Removes the letters whose id starts with `prefix` (already checked to be at least
    /// 4 hex digits); returns how many.
    pub fn drop_matching(&self, prefix: &str) -> Result<usize> {
        let p = prefix.trim().to_ascii_lowercase();
        let hits: Vec<_> = self
            .all()?
            .into_iter()
            .filter(|w| w.id.starts_with(&p))
            .collect();
        for w in &hits {
            self.remove(&w.id)?;
        }
        Ok(hits.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_proto::identity::SecretIdentity;

    #[test]
    fn a_waiting_letter_survives_reopen_and_opens_only_as_saved() {
        let tmp = tempfile::tempdir().unwrap();
        let alice = Address::parse("alice@alpha.test").unwrap();
        let bob = Address::parse("bob@beta.test").unwrap();
        let id = SecretIdentity::generate(&alice, None).unwrap();
        let keys = id.unlock(None).unwrap();
        let mut letter = Letter::new(alice.clone(), vec![bob.clone()], "Plans", "Hi", 7);
        letter.cc = vec![bob.clone(), alice.clone()];
        let choice = LegacyChoice {
            forced: vec![bob.clone()],
            replies: Vec::new(),
        };
        let w = WaitingLetter::new(&letter, &choice, &keys, &id.public_cert(), 9).unwrap();
        assert_eq!(w.recipients, vec![bob.clone(), alice.clone()], "each once");
        let store = WaitingLetters::new(tmp.path());
        store.put(&w).unwrap();

        let again = WaitingLetters::new(tmp.path()).all().unwrap();
        assert_eq!(again, vec![w.clone()]);
        let opened = again[0].letter(&keys, &id.public_cert()).unwrap();
        assert_eq!(opened.message_id, letter.message_id);
        assert_eq!(
            (opened.subject.as_str(), opened.body.trim_end()),
            ("Plans", "Hi")
        );
        assert_eq!(again[0].choice().forced, vec![bob.clone()]);
        assert!(!again[0].sealed.contains("Plans"), "sealed, not plain");

        // Someone else's key does not open it; a file swapped for another letter is refused.
        let other = SecretIdentity::generate(&alice, None).unwrap();
        let e = again[0]
            .letter(&other.unlock(None).unwrap(), &other.public_cert())
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 4, "{e}");
        let mut swapped = again[0].clone();
        swapped.message_id = "<other@alpha.test>".into();
        assert_eq!(
            swapped
                .letter(&keys, &id.public_cert())
                .err()
                .unwrap()
                .exit_code(),
            4
        );

        assert!(store.contains(&w.id).unwrap());
        assert_eq!(store.drop_matching(&w.id[..6]).unwrap(), 1);
        assert!(!store.contains(&w.id).unwrap());
        assert!(store.all().unwrap().is_empty());
    }
}
