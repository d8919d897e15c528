//! Local delivery: storing an envelope in a mailbox of this node, from a peer's hop payload
//! (`/v1/deliver`, and the relay for hops to this node) or from the SMTP gateway. Its error
//! says what the sender may do next: [`DeliveryError::NotOurs`] and
//! [`DeliveryError::Refused`] are final, [`DeliveryError::TryLater`] is not. The relay maps
//! a peer node's HTTP answer into the same enum, and only `api/` maps it to an HTTP status.

use bytes::Bytes;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::decrypt_with;

use crate::basics::clock::now_secs;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::peers::PeerError;
use crate::store::{DeliverOutcome, NewEnvelope, StoreError};

/// Hop payloads above this size are decrypted on the blocking pool.
const INLINE_DECRYPT_MAX: usize = 64 * 1024;

/// An envelope the mailbox holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    Stored,
    /// This envelope id was stored for this mailbox before (perhaps acked since).
    Duplicate,
}

/// Why an envelope was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The envelope names no mailbox on this node: final.
    #[error("no such mailbox on this node")]
    NotOurs,
    /// Refused for good: the same delivery will never succeed.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Not delivered now; the same delivery may succeed later.
    #[error(transparent)]
    TryLater(#[from] TryLater),
}

/// Why a delivery is refused for good.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// A format version this node does not know.
    #[error("{0}")]
    UnknownVersion(String),
    /// The payload does not decrypt to this node, or its envelope does not decode.
    #[error("{0}")]
    Malformed(String),
    /// A destination the relay must not connect to (`ssrf`).
    #[error("{0}")]
    Destination(String),
    /// The destination node refused the hop for good (a `4xx` answer other than `408` and
    /// `429`); `reason` names the status and the peer's error.
    #[error("{reason}")]
    ByPeer { status: u16, reason: String },
    /// A forward (`forward`) from a node that the mailbox's record does not name as a home.
    #[error("the forwarding node is not a home of this mailbox")]
    NotAHome,
}

/// Why a delivery did not happen now.
#[derive(Debug, thiserror::Error)]
pub enum TryLater {
    /// The mailbox is at its quota until its owner acknowledges mail.
    #[error("the mailbox is full")]
    MailboxFull,
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A failure of this node that says nothing about the envelope.
    #[error("{0}")]
    Internal(String),
    /// The destination node could not be verified (`peers`).
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The destination node did not answer.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The destination node answered "not now" (`408`, `429`, `5xx`, ...); `reason` names
    /// the status and the peer's error.
    #[error("{reason}")]
    ByPeer { status: u16, reason: String },
}

impl DeliveryError {
    /// Whether the same delivery can never succeed (the relay bounces it at once).
    pub fn is_final(&self) -> bool {
        !matches!(self, DeliveryError::TryLater(_))
    }

    /// What the relay records as a hop's last error and a bounce shows its sender: a
    /// stable code (`spec/api.md`'s error codes) and a message, never this node's internal
    /// detail. A peer's refusal is named as it answered.
    pub fn reason(&self) -> String {
        match self {
            DeliveryError::NotOurs => format!("unknown_mailbox: {self}"),
            DeliveryError::Refused(r) => match r {
                Refused::TooLarge { .. } => format!("too_large: {r}"),
                Refused::UnknownVersion(m) => format!("unknown_version: {m}"),
                Refused::Malformed(m) => format!("malformed_body: body does not decode: {m}"),
                Refused::Destination(m) | Refused::ByPeer { reason: m, .. } => m.clone(),
                Refused::NotAHome => format!("not_a_home: {r}"),
            },
            DeliveryError::TryLater(t) => match t {
                TryLater::MailboxFull => format!("quota_exceeded: {t}"),
                TryLater::Storage(StoreError::Unavailable(_) | StoreError::Closed) => {
                    "unavailable: storage unavailable, try again later".into()
                }
                TryLater::Storage(_) | TryLater::Internal(_) => "internal: internal error".into(),
                TryLater::Peer(_) | TryLater::NoAnswer(_) | TryLater::ByPeer { .. } => {
                    t.to_string()
                }
            },
        }
    }
}

/// A codec error in an envelope or payload.
impl From<sealpost_proto::Error> for Refused {
    fn from(e: sealpost_proto::Error) -> Refused {
        match e {
            sealpost_proto::Error::UnknownVersion { .. } => Refused::UnknownVersion(e.to_string()),
            sealpost_proto::Error::TooLong { what, len, max } => Refused::TooLarge {
                what,
                len: len as u64,
                max: max as u64,
            },
            other => Refused::Malformed(other.to_string()),
        }
    }
}

impl Node {
    /// Decrypts a hop payload addressed to this node and stores its envelope.
    pub async fn accept_hop_payload(&self, payload: Bytes) -> Result<Delivered, DeliveryError> {
        let max = self.config.limits.max_envelope as usize;
        let keyring = self.keys.keyring.clone();
        let len = payload.len();
        let decrypt = move || decrypt_with(&payload, &keyring, max);
        let plain = if len > INLINE_DECRYPT_MAX {
            tokio::task::spawn_blocking(decrypt)
                .await
                .map_err(|e| TryLater::Internal(e.to_string()))?
        } else {
            decrypt()
        };
        let plain = plain.map_err(|e| match e {
            sealpost_proto::Error::TooLong { len, max, .. } => Refused::TooLarge {
                what: "envelope",
                len: len as u64,
                max: max as u64,
            },
            other => Refused::Malformed(format!("hop payload: {other}")),
        })?;
        let env = Envelope::decode(&plain).map_err(Refused::from)?;
        let (id, mailbox) = (env.id, env.mailbox);
        drop(env);
        let delivered = self
            .store_envelope(NewEnvelope {
                mailbox,
                id,
                bytes: Bytes::from(plain),
                received: now_secs(),
            })
            .await?;
        Metrics::inc(match delivered {
            Delivered::Stored => &self.metrics.envelopes_stored,
            Delivered::Duplicate => &self.metrics.envelopes_duplicate,
        });
        Ok(delivered)
    }

    /// Stores an envelope (already checked) in its mailbox here, within the mailbox quota,
    /// and, in the same write, queues its copies for the mailbox's other homes
    /// (`forward`): a hop's payload and the gateway's legacy mail.
    pub async fn store_envelope(&self, envelope: NewEnvelope) -> Result<Delivered, DeliveryError> {
        let forwards = self.forwards_for(&envelope).await?;
        if forwards.is_empty() {
            return self.store_copy(envelope).await;
        }
        let outcome = self
            .store
            .deliver_forwarding(envelope, self.quota, forwards.clone())
            .await
            .map_err(TryLater::Storage)?;
        let delivered = delivered(outcome)?;
        if delivered == Delivered::Stored {
            self.schedule_forwards(forwards);
        }
        Ok(delivered)
    }

    /// Stores an envelope (already checked) in its mailbox here, within the mailbox quota,
    /// and forwards it nowhere: a copy another home forwarded.
    pub async fn store_copy(&self, envelope: NewEnvelope) -> Result<Delivered, DeliveryError> {
        let outcome = self
            .store
            .deliver(envelope, self.quota)
            .await
            .map_err(TryLater::Storage)?;
        delivered(outcome)
    }
}

fn delivered(outcome: DeliverOutcome) -> Result<Delivered, DeliveryError> {
    match outcome {
        DeliverOutcome::Stored { .. } => Ok(Delivered::Stored),
        DeliverOutcome::Duplicate { .. } => Ok(Delivered::Duplicate),
        DeliverOutcome::UnknownMailbox => Err(DeliveryError::NotOurs),
        DeliverOutcome::QuotaExceeded => Err(TryLater::MailboxFull.into()),
    }
}
