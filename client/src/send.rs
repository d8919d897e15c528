//! Sending: one sealed letter per recipient, one random envelope id per recipient letter
//! (shared by all of that recipient's homes, so they can be deduped), one hop per home,
//! wrapped for that home's node. Every hop goes to the outbox first, then is submitted
//! through the first of our own trusted nodes that takes it.

use bytes::Bytes;

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::Keyring;
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::client::Client;
use crate::compose::Draft;
use crate::contacts::PinOutcome;
use crate::error::{Error, Result};
use crate::now;
use crate::outbox::OutboxEntry;
use crate::progress::Progress;
use crate::sent::SentEntry;

#[derive(Clone, Debug)]
pub struct RecipientReport {
    pub address: Address,
    pub envelope_id: EnvelopeId,
    /// Homes a hop was made for.
    pub homes: Vec<NodeUrl>,
    /// Homes left out, and why (node key mismatch, too large, unknown and unreachable).
    pub skipped: Vec<(NodeUrl, String)>,
    /// The contact was pinned by this send (trust on first use).
    pub newly_pinned: bool,
    /// The record came from the local cache: the node publishing it did not answer.
    pub record_from_cache: bool,
}

#[derive(Clone, Debug, Default)]
pub struct FlushReport {
    pub submitted: usize,
    /// Outbox entries still waiting, by id.
    pub pending: Vec<String>,
    /// The last error of each entry still waiting.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SendReport {
    pub message_id: String,
    pub recipients: Vec<RecipientReport>,
    /// Outbox ids of this letter's hops.
    pub queued: Vec<String>,
    pub flush: FlushReport,
}

impl SendReport {
    /// Hops of this letter that no node of ours has taken yet.
    pub fn unsubmitted(&self) -> usize {
        self.queued
            .iter()
            .filter(|id| self.flush.pending.contains(id))
            .count()
    }
}

/// A node that failed this way is skipped for the rest of a flush.
fn node_is_down(e: &Error) -> bool {
    matches!(e, Error::Unreachable { .. })
        || matches!(e, Error::Node { status, .. } if *status >= 500 || *status == 429)
}

impl Client {
    /// Seals `draft` for each recipient, queues a hop per recipient home, and submits the
    /// whole outbox. Lookups happen first: an unknown address, a changed key or a
    /// recipient none of whose homes can be used stops the send before anything is queued.
    pub async fn send(
        &self,
        draft: &Draft,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<SendReport> {
        let now = now();
        let letter = draft.to_letter(self.profile.address(), now as i64)?;
        let mut recipients = Vec::new();
        for address in draft.recipients() {
            recipients.push(self.resolve_recipient(&address).await?);
        }

        let mut entries = Vec::new();
        let mut reports = Vec::new();
        for r in &recipients {
            let mut nodes = Vec::new();
            let mut skipped = Vec::new();
            for home in &r.record.homes {
                match self.home_node(home).await {
                    Ok(n) => nodes.push((home, n)),
                    Err(e) => skipped.push((home.url.clone(), e)),
                }
            }
            if nodes.is_empty() {
                let (_, first) = skipped
                    .into_iter()
                    .next()
                    .expect("invariant: a verified record has at least one home");
                return Err(first);
            }
            let sealed = seal(&letter, keys, &r.cert)?;
            let id = EnvelopeId::random();
            let mut homes = Vec::new();
            let mut skipped: Vec<(NodeUrl, String)> = skipped
                .into_iter()
                .map(|(u, e)| (u, e.to_string()))
                .collect();
            for (home, node) in nodes {
                let envelope = Envelope {
                    id,
                    mailbox: home.mailbox,
                    sealed: sealed.clone(),
                    token: Vec::new(),
                };
                let size = envelope.encode().len();
                if size > node.descriptor.max_envelope as usize {
                    skipped.push((
                        home.url.clone(),
                        format!(
                            "envelope of {size} bytes is larger than the {} the node accepts",
                            node.descriptor.max_envelope
                        ),
                    ));
                    continue;
                }
                let hop = HopWrapper::wrap(&envelope, home.url.clone(), &node.cert)?;
                entries.push(OutboxEntry::new(
                    &r.address,
                    id,
                    &letter.message_id,
                    &letter.subject,
                    &hop,
                    now,
                ));
                homes.push(home.url.clone());
            }
            if homes.is_empty() {
                return Err(Error::input(
                    "letter",
                    format!("too large for every home of {}", r.address),
                ));
            }
            reports.push(RecipientReport {
                address: r.address.clone(),
                envelope_id: id,
                homes,
                skipped,
                newly_pinned: matches!(r.pin, Some(PinOutcome::New(_))),
                record_from_cache: r.from_cache,
            });
        }

        // Durable first: once queued, the letter survives whatever happens next.
        for e in &entries {
            self.outbox.put(e)?;
        }
        for r in &recipients {
            self.commit_pin(r)?;
        }
        self.save_nodes()?;
        let flush = self.flush_outbox(keys, progress).await?;
        Ok(SendReport {
            message_id: letter.message_id,
            recipients: reports,
            queued: entries.into_iter().map(|e| e.id).collect(),
            flush,
        })
    }

    /// Submits every outbox entry through the first trusted home of ours that takes it.
    /// A node that is down is not asked again in the same flush.
    pub async fn flush_outbox(
        &self,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let homes: Vec<_> = self.profile.config.trusted_homes().cloned().collect();
        let mut down: Vec<NodeUrl> = Vec::new();
        for mut entry in self.outbox.all()? {
            let hop = Bytes::from(entry.hop_bytes()?);
            let label = format!("to {}", entry.recipient);
            let total = hop.len() as u64;
            let mut last: Option<String> = None;
            let mut done = false;
            for h in &homes {
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
                self.outbox.remove(&entry.id)?;
                report.submitted += 1;
            } else {
                let why = last.unwrap_or_else(|| "no trusted home node answered".to_string());
                entry.attempts += 1;
                entry.last_error = Some(why.clone());
                self.outbox.put(&entry)?;
                report.errors.push(why);
                report.pending.push(entry.id);
            }
        }
        Ok(report)
    }
}
