//! The outbox: hop wrappers, sealed and wrapped, that no node of ours has accepted yet.
//! `send` writes every hop here first (durably) and removes each one once a node answers
//! `202`, so a letter survives a crash or every home node being down; the next `send`,
//! `fetch` or `outbox flush` retries it. Resubmitting is harmless: nodes dedupe by
//! envelope id.
//!
//! [`Outbox`] is the part of a [`crate::Client`] that owns this queue, the letters waiting
//! for their recipients to be looked up before they become hops ([`WaitingLetters`]), and
//! the sent log ([`SentLog`]: the queue id each accepted hop got), and submits what waits
//! ([`Outbox::flush`]) through the user's trusted homes.

use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::HopWrapper;
use sealpost_proto::identity::Keyring;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::api::Net;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::letters::WaitingLetters;
use crate::now;
use crate::profile::{HomeEntry, to_json};
use crate::progress::Progress;
use crate::sent::{SentEntry, SentLog};

pub const OUTBOX_DIR: &str = "outbox";
/// Hops of sent copies (for the user's own mailbox) not yet accepted.
pub const COPIES_DIR: &str = "outbox-copies";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// 32 hex digits, random.
    pub id: String,
    pub created: u64,
    pub recipient: Address,
    /// Destination node (a home of the recipient); also inside the hop.
    pub destination: NodeUrl,
    pub envelope_id: EnvelopeId,
    /// Message id and subject of the letter, to tell the user which letter is waiting.
    pub message_id: String,
    #[serde(default)]
    pub subject: String,
    /// The encoded hop wrapper, base64.
    pub hop: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl OutboxEntry {
    pub fn new(
        recipient: &Address,
        envelope_id: EnvelopeId,
        message_id: &str,
        subject: &str,
        hop: &HopWrapper,
        now: u64,
    ) -> Self {
        OutboxEntry {
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: now,
            recipient: recipient.clone(),
            destination: hop.destination.clone(),
            envelope_id,
            message_id: message_id.to_string(),
            subject: subject.to_string(),
            hop: base64::engine::general_purpose::STANDARD.encode(hop.encode()),
            attempts: 0,
            last_error: None,
        }
    }

    /// The encoded hop, checked to decode.
    pub fn hop_bytes(&self) -> Result<Vec<u8>> {
        let path = format!("{OUTBOX_DIR}/{}.json", self.id);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.hop)
            .map_err(|e| Error::corrupt(&path, e))?;
        HopWrapper::decode(&bytes).map_err(|e| Error::corrupt(&path, e))?;
        Ok(bytes)
    }
}

/// What a flush of the outbox did.
#[derive(Clone, Debug, Default)]
pub struct FlushReport {
    pub submitted: usize,
    /// Outbox entries still waiting, by id.
    pub pending: Vec<String>,
    /// The last error of each entry still waiting.
    pub errors: Vec<String>,
    /// Hops of sent copies submitted, and those still waiting, by id (not counted above).
    pub copies_submitted: usize,
    pub copies_pending: Vec<String>,
    /// Letters that waited for lookups and are now queued as hops (counted above).
    pub letters_queued: usize,
    /// Letters still waiting for lookups, by id, and why each waits.
    pub letters_waiting: Vec<String>,
    pub letter_errors: Vec<String>,
}

impl FlushReport {
    /// Whether anything (a hop or a letter, sent copies aside) still waits.
    pub fn anything_waiting(&self) -> bool {
        !self.pending.is_empty() || !self.letters_waiting.is_empty()
    }
}

/// A node that failed this way is skipped for the rest of a flush.
fn node_is_down(e: &Error) -> bool {
    matches!(e, Error::Unreachable { .. })
        || matches!(e, Error::Node { status, .. } if *status >= 500 || *status == 429)
}

/// A directory of outbox entries, one `ID.json` each.
struct Queue {
    dir: PathBuf,
}

impl Queue {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn put(&self, e: &OutboxEntry) -> Result<()> {
        fsutil::create_private_dir(&self.dir)?;
        fsutil::write_atomic(&self.path(&e.id), &to_json(e))
    }

    /// Whether the entry `id` is still waiting.
    pub fn contains(&self, id: &str) -> Result<bool> {
        let path = self.path(id);
        path.try_exists().map_err(|e| Error::profile_io(&path, e))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        fsutil::remove_durable(&self.path(id))
    }

    /// Every entry, oldest first.
    pub fn all(&self) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            let e: OutboxEntry =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
            out.push(e);
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Removes the entries whose id starts with `prefix` (checked by the caller); returns
    /// how many.
    fn drop_matching(&self, prefix: &str) -> Result<usize> {
        let p = prefix.trim().to_ascii_lowercase();
        let hits: Vec<_> = self
            .all()?
            .into_iter()
            .filter(|e| e.id.starts_with(&p))
            .collect();
        for e in &hits {
            self.remove(&e.id)?;
        }
        Ok(hits.len())
    }

    /// Removes the entries of the letter `message_id`; returns how many.
    fn drop_letter(&self, message_id: &str) -> Result<usize> {
        let hits: Vec<_> = self
            .all()?
            .into_iter()
            .filter(|e| e.message_id == message_id)
            .collect();
        for e in &hits {
            self.remove(&e.id)?;
        }
        Ok(hits.len())
    }
}

/// The queue of hops not yet accepted by one of our nodes (deliveries to recipients, and
/// apart from them the sent copies for the user's own mailbox), and the log of those
/// accepted.
pub struct Outbox {
    deliveries: Queue,
    copies: Queue,
    letters: WaitingLetters,
    sent: SentLog,
    net: Net,
}

impl Outbox {
    /// The outbox of the profile in `profile_dir`, submitting through `net`.
    pub fn new(profile_dir: &Path, net: Net) -> Self {
        Outbox {
            deliveries: Queue {
                dir: profile_dir.join(OUTBOX_DIR),
            },
            copies: Queue {
                dir: profile_dir.join(COPIES_DIR),
            },
            letters: WaitingLetters::new(profile_dir),
            sent: SentLog::new(profile_dir),
            net,
        }
    }

    /// The queue ids of accepted hops.
    pub fn sent(&self) -> &SentLog {
        &self.sent
    }

    /// Queues a delivery (durably).
    pub fn put(&self, e: &OutboxEntry) -> Result<()> {
        self.deliveries.put(e)
    }

    /// Whether the delivery `id` is still waiting.
    pub fn contains(&self, id: &str) -> Result<bool> {
        self.deliveries.contains(id)
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        self.deliveries.remove(id)
    }

    /// Every delivery waiting, oldest first.
    pub fn all(&self) -> Result<Vec<OutboxEntry>> {
        self.deliveries.all()
    }

    /// Letters waiting for their recipients to be looked up ([`crate::letters`]).
    pub fn letters(&self) -> &WaitingLetters {
        &self.letters
    }

    /// Removes the deliveries and waiting letters whose id starts with `prefix`; returns
    /// how many.
    pub fn drop_matching(&self, prefix: &str) -> Result<usize> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::input(
                "outbox id",
                format!("{prefix:?} is not at least 4 hex digits"),
            ));
        }
        let n = self.deliveries.drop_matching(&p)? + self.letters.drop_matching(&p)?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "outbox entry",
                id: prefix.to_string(),
            });
        }
        Ok(n)
    }

    /// Removes the hops (deliveries and sent copies) of the letter `message_id`, queued by
    /// a run that stopped before it removed the letter from [`Outbox::letters`]: nothing
    /// was submitted yet, and the letter is sealed again. Returns how many.
    pub fn drop_letter_hops(&self, message_id: &str) -> Result<usize> {
        Ok(self.deliveries.drop_letter(message_id)? + self.copies.drop_letter(message_id)?)
    }

    /// Queues a hop of a sent copy (durably).
    pub fn put_copy(&self, e: &OutboxEntry) -> Result<()> {
        self.copies.put(e)
    }

    /// Every hop of a sent copy waiting, oldest first.
    pub fn copies(&self) -> Result<Vec<OutboxEntry>> {
        self.copies.all()
    }

    /// Submits every entry through the first of `homes` (our trusted homes) that takes
    /// it, logging the queue id it answers. A node that is down is not asked again in the
    /// same flush.
    /// Deliveries go first; sent copies after them.
    pub async fn flush(
        &self,
        homes: &[HomeEntry],
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<FlushReport> {
        let mut down: Vec<NodeUrl> = Vec::new();
        let mut report = self
            .flush_queue(&self.deliveries, homes, keys, progress, &mut down)
            .await?;
        let copies = self
            .flush_queue(&self.copies, homes, keys, progress, &mut down)
            .await?;
        report.copies_submitted = copies.submitted;
        report.copies_pending = copies.pending;
        Ok(report)
    }

    async fn flush_queue(
        &self,
        queue: &Queue,
        homes: &[HomeEntry],
        keys: &Keyring,
        progress: &dyn Progress,
        down: &mut Vec<NodeUrl>,
    ) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        for mut entry in queue.all()? {
            let hop = Bytes::from(entry.hop_bytes()?);
            let label = format!("to {}", entry.recipient);
            let total = hop.len() as u64;
            let mut last: Option<String> = None;
            let mut done = false;
            for h in homes {
                if down.contains(&h.url) {
                    continue;
                }
                let start = || progress.transfer(&label, total);
                match self
                    .net
                    .submit(&h.url, h.mailbox, keys, hop.clone(), &start)
                    .await
                {
                    Ok(queue_id) => {
                        self.sent.put(&SentEntry {
                            queue_id,
                            node: h.url.clone(),
                            submitted: now(),
                            recipient: entry.recipient.clone(),
                            destination: entry.destination.clone(),
                            envelope_id: entry.envelope_id,
                            message_id: entry.message_id.clone(),
                            subject: entry.subject.clone(),
                        })?;
                        done = true;
                        break;
                    }
                    Err(e) => {
                        if node_is_down(&e) {
                            down.push(h.url.clone());
                        }
                        last = Some(e.to_string());
                    }
                }
            }
            if done {
                queue.remove(&entry.id)?;
                report.submitted += 1;
            } else {
                let why = last.unwrap_or_else(|| "no trusted home node answered".to_string());
                entry.attempts += 1;
                entry.last_error = Some(why.clone());
                queue.put(&entry)?;
                report.errors.push(why);
                report.pending.push(entry.id);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: u64) -> OutboxEntry {
        let hop = HopWrapper {
            destination: NodeUrl::parse("http://127.0.0.1:5").unwrap(),
            payload: vec![0x85, 1, 2],
        };
        OutboxEntry::new(
            &Address::parse("bob@beta.test").unwrap(),
            EnvelopeId([t as u8; 16]),
            "m@alpha.test",
            "Plans",
            &hop,
            t,
        )
    }

    #[test]
    fn entries_survive_reopen_in_order_and_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = Outbox::new(tmp.path(), crate::testutil::offline_net());
        assert!(ob.all().unwrap().is_empty());
        let (a, b) = (entry(2), entry(1));
        ob.put(&a).unwrap();
        ob.put(&b).unwrap();
        let again = Outbox::new(tmp.path(), crate::testutil::offline_net());
        let all = again.all().unwrap();
        assert_eq!(all, vec![b.clone(), a.clone()]);
        let hop = HopWrapper::decode(&all[0].hop_bytes().unwrap()).unwrap();
        assert_eq!(hop.payload, vec![0x85, 1, 2]);
        again.remove(&b.id).unwrap();
        assert_eq!(again.all().unwrap(), vec![a.clone()]);
        assert_eq!(again.drop_matching(&a.id[..6]).unwrap(), 1);
        assert!(again.all().unwrap().is_empty());
        assert!(again.drop_matching("zz").is_err());
    }

    #[test]
    fn a_damaged_hop_is_a_profile_error() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = Outbox::new(tmp.path(), crate::testutil::offline_net());
        let mut e = entry(1);
        e.hop = "!!".into();
        ob.put(&e).unwrap();
        assert_eq!(
            ob.all().unwrap()[0].hop_bytes().err().unwrap().exit_code(),
            4
        );
    }
}
