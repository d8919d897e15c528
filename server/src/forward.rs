//! Forwarding between the homes of a mailbox (one-home delivery, `spec/node.md`
//! §Forwarding). A sender's client wraps a letter for one home of its recipient; the home
//! that stores it queues a copy for each other home that the user's signed record (stored
//! here when the user published it) names, in the same durable write as the envelope
//! ([`crate::store::Store::deliver_forwarding`]). The relay posts each copy to that home's
//! `POST /v1/forward`, retried like any hop, so a home that was down gets its copy when it
//! is back. A home accepts a forward only from a node that the mailbox's record names as a
//! home ([`Refused::NotAHome`] otherwise), stores it once per envelope id, and never
//! forwards it again: copies do not loop.

use std::sync::Arc;

use bytes::Bytes;
use sealpost_proto::MailboxId;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::cert_addresses;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};

use crate::basics::clock::{now_ms, now_secs};
use crate::delivery::{Delivered, DeliveryError, Refused, TryLater};
use crate::metrics::Metrics;
use crate::node::{Job, Node};
use crate::store::{ForwardJob, NewEnvelope, OutboundItem, StoreError};

/// Queue entries (each with its payload) that forward one envelope to the other homes.
pub type Forwards = Vec<(OutboundItem, Bytes)>;

impl Node {
    /// Whether `home` is this node: its URL or its key (a record naming our URL with
    /// another key is not forwarded to either).
    fn is_this_node(&self, home: &Home) -> bool {
        home.url == self.url || home.node_key == self.keys.node_key()
    }

    /// The other homes of `mailbox`: those named by the records stored here for the
    /// addresses of its account that name this node as the home of `mailbox`. Empty for an
    /// unknown mailbox or a user who published no record here. A record that no longer
    /// decodes is skipped (and logged): it was verified when it was published.
    /// Read at most [`crate::node::CACHE_TTL`] ago (a record stored here is seen at once).
    pub async fn other_homes(&self, mailbox: MailboxId) -> Result<Arc<[Home]>, StoreError> {
        if let Some(homes) = self.homes.get(&mailbox) {
            return Ok(homes);
        }
        self.other_homes_fresh(mailbox).await
    }

    /// [`Node::other_homes`] as the store has them now.
    async fn other_homes_fresh(&self, mailbox: MailboxId) -> Result<Arc<[Home]>, StoreError> {
        let generation = self.homes.generation();
        let homes: Arc<[Home]> = self.read_other_homes(mailbox).await?.into();
        self.homes.put(generation, mailbox, homes.clone());
        Ok(homes)
    }

    async fn read_other_homes(&self, mailbox: MailboxId) -> Result<Vec<Home>, StoreError> {
        let Some(account) = self.account(mailbox).await? else {
            return Ok(Vec::new());
        };
        let mut homes: Vec<Home> = Vec::new();
        for address in cert_addresses(&account.cert) {
            let Some(bytes) = self.store.record(address).await? else {
                continue;
            };
            let record = match SignedRecord::decode(&bytes)
                .and_then(|signed| MailboxRecord::decode(&signed.body))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "a stored record does not decode; not forwarding by it");
                    continue;
                }
            };
            // Only a record that names this mailbox here speaks for it.
            if !record
                .homes
                .iter()
                .any(|h| self.is_this_node(h) && h.mailbox == mailbox)
            {
                continue;
            }
            for h in record.homes {
                if !self.is_this_node(&h) && !homes.iter().any(|o| o.url == h.url) {
                    homes.push(h);
                }
            }
        }
        Ok(homes)
    }

    /// The copies of `envelope` (stored here for its mailbox) for the mailbox's other
    /// homes: the same envelope id and sealed letter, the mailbox id each home knows.
    pub(crate) async fn forwards_for(
        &self,
        envelope: &NewEnvelope,
    ) -> Result<Forwards, DeliveryError> {
        let homes = self
            .other_homes(envelope.mailbox)
            .await
            .map_err(TryLater::Storage)?;
        if homes.is_empty() {
            return Ok(Vec::new());
        }
        let mut copy = Envelope::decode(&envelope.bytes).map_err(Refused::from)?;
        let now = now_ms();
        let mut out = Vec::with_capacity(homes.len());
        for home in homes.iter() {
            copy.mailbox = home.mailbox;
            let payload = Bytes::from(copy.encode());
            let item = OutboundItem {
                id: rand::random(),
                destination: home.url.clone(),
                sender: envelope.mailbox,
                submitted_ms: now,
                attempts: 0,
                next_attempt_ms: now,
                size: payload.len() as u64,
                last_error: String::new(),
                smtp: None,
                forward: Some(ForwardJob {
                    node_key: home.node_key,
                    envelope: envelope.id,
                }),
            };
            out.push((item, payload));
        }
        Ok(out)
    }

    /// Hands forwards just queued (with their envelope) to the relay.
    pub(crate) fn schedule_forwards(&self, forwards: Forwards) {
        for (item, payload) in forwards {
            Metrics::inc(&self.metrics.forwards_queued);
            self.metrics
                .outbound_queue
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.schedule(Job {
                item,
                payload: Some(payload),
            });
        }
    }

    /// `POST /v1/forward`: stores `body`, an envelope that the node with key `peer` (its
    /// request signature checked) forwards from another home of the envelope's mailbox.
    /// Refused unless the mailbox's record names that node as a home; stored once per
    /// envelope id, and not forwarded again.
    pub async fn accept_forward(
        &self,
        peer: &[u8; 32],
        body: Bytes,
    ) -> Result<Delivered, DeliveryError> {
        let max = u64::from(self.config.limits.max_envelope);
        if body.len() as u64 > max {
            return Err(Refused::TooLarge {
                what: "envelope",
                len: body.len() as u64,
                max,
            }
            .into());
        }
        let env = Envelope::decode(&body).map_err(Refused::from)?;
        let (id, mailbox) = (env.id, env.mailbox);
        drop(env);
        if self
            .account(mailbox)
            .await
            .map_err(TryLater::Storage)?
            .is_none()
        {
            return Err(DeliveryError::NotOurs);
        }
        // A home this process has not seen yet (its record was stored by another process
        // less than the TTL ago) is looked up again before it is refused for good.
        let names = |homes: &[Home]| homes.iter().any(|h| &h.node_key == peer);
        if !names(&self.other_homes(mailbox).await.map_err(TryLater::Storage)?)
            && !names(
                &self
                    .other_homes_fresh(mailbox)
                    .await
                    .map_err(TryLater::Storage)?,
            )
        {
            return Err(Refused::NotAHome.into());
        }
        let delivered = self
            .store_copy(NewEnvelope {
                mailbox,
                id,
                bytes: body,
                received: now_secs(),
            })
            .await?;
        Metrics::inc(match delivered {
            Delivered::Stored => &self.metrics.envelopes_stored,
            Delivered::Duplicate => &self.metrics.envelopes_duplicate,
        });
        Ok(delivered)
    }
}
