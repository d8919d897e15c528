//! `GET /v1/mailbox/{mailbox}` (list from a cursor), `GET`/`DELETE /v1/mailbox/{mailbox}/{seq}`,
//! and their batched forms `POST /v1/mailbox/{mailbox}/fetch` and `.../ack` (up to
//! `MAX_BATCH_SEQS` sequence numbers each): for the mailbox's owner only. Each device lists
//! what it has not acknowledged; an ack is that device's, and the envelope goes once every
//! device of the account has acked it.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use sealpost_proto::batch::{BatchEntry, EnvelopeBatch, MAX_BATCH_ANSWER_BYTES};
use sealpost_proto::codec::Codec;
use sealpost_proto::limits::MAX_BATCH_SEQS;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::device_for;
use super::{Resp, binary, empty, json, json_body};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::{DeviceAck, ListItem};

/// Items per page unless the request says otherwise, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Listing {
    items: Vec<ListItem>,
    next: u64,
}

fn parse_seq(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::BadRequest(format!("sequence number {s:?} is not a number")))
}

pub async fn list(
    node: &Arc<Node>,
    mailbox: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (mailbox, device) = device_for(node, req.headers(), mailbox).await?;
    let (mut after, mut limit) = (0u64, DEFAULT_LIMIT);
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => after = parse_seq(v)?,
            "limit" => {
                limit = v
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("limit {v:?} is not a number")))?;
                if limit == 0 {
                    return Err(ApiError::BadRequest("limit must be at least 1".into()));
                }
                limit = limit.min(MAX_LIMIT);
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}"
                )));
            }
        }
    }
    let items = node.store.list_for(mailbox, device, after, limit).await?;
    let next = items.last().map(|i| i.seq).unwrap_or(after);
    Ok(json(StatusCode::OK, &Listing { items, next }))
}

pub async fn get(
    node: &Arc<Node>,
    mailbox: &str,
    seq: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (mailbox, _) = device_for(node, req.headers(), mailbox).await?;
    let seq = parse_seq(seq)?;
    let bytes = node
        .store
        .envelope(mailbox, seq)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(binary(bytes))
}

pub async fn ack(
    node: &Arc<Node>,
    mailbox: &str,
    seq: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (mailbox, device) = device_for(node, req.headers(), mailbox).await?;
    let seq = parse_seq(seq)?;
    match node.store.ack_device(mailbox, seq, device).await? {
        DeviceAck::Deleted => Metrics::inc(&node.metrics.envelopes_acked),
        DeviceAck::Recorded | DeviceAck::Missing => {}
        DeviceAck::UnknownDevice => return Err(removed_device()),
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// The body of a batched fetch or ack.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seqs {
    seqs: Vec<u64>,
}

impl Seqs {
    /// The sequence numbers: at least one, at most [`MAX_BATCH_SEQS`].
    fn checked(self) -> Result<Vec<u64>, ApiError> {
        if self.seqs.is_empty() {
            return Err(ApiError::BadRequest(
                "seqs must name at least one sequence number".into(),
            ));
        }
        if self.seqs.len() > MAX_BATCH_SEQS {
            return Err(ApiError::TooLarge {
                what: "seqs (sequence numbers)",
                len: self.seqs.len() as u64,
                max: MAX_BATCH_SEQS as u64,
            });
        }
        Ok(self.seqs)
    }
}

/// `POST /v1/mailbox/{mailbox}/fetch`: the envelopes at the given sequence numbers, as an
/// [`EnvelopeBatch`] answering a prefix of them (within [`MAX_BATCH_ANSWER_BYTES`]).
pub async fn fetch_batch(
    node: &Arc<Node>,
    mailbox: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (mailbox, _) = device_for(node, req.headers(), mailbox).await?;
    let seqs = json_body::<Seqs>(node, req).await?.checked()?;
    // Room for the header and every entry's framing, whatever the envelopes' sizes.
    let framing = 6 + seqs.len() * EnvelopeBatch::entry_len(Some(0));
    let found = node
        .store
        .envelopes(
            mailbox,
            seqs,
            MAX_BATCH_ANSWER_BYTES.saturating_sub(framing),
        )
        .await?;
    let batch = EnvelopeBatch {
        entries: found
            .into_iter()
            .map(|(seq, bytes)| BatchEntry {
                seq,
                envelope: bytes.map(|b| b.to_vec()),
            })
            .collect(),
    };
    Ok(binary(batch.encode().into()))
}

/// What a batched ack did, by outcome.
#[derive(Serialize)]
struct AckCounts {
    /// Acknowledged by every device now, so deleted.
    deleted: usize,
    /// Recorded; other devices still owe their acknowledgement.
    recorded: usize,
    /// No envelope there, or this device had acknowledged it before.
    missing: usize,
}

/// `POST /v1/mailbox/{mailbox}/ack`: this device's acknowledgement of each sequence number,
/// in one write.
pub async fn ack_batch(
    node: &Arc<Node>,
    mailbox: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (mailbox, device) = device_for(node, req.headers(), mailbox).await?;
    let seqs = json_body::<Seqs>(node, req).await?.checked()?;
    let outcomes = node.store.ack_devices(mailbox, seqs, device).await?;
    let mut counts = AckCounts {
        deleted: 0,
        recorded: 0,
        missing: 0,
    };
    for o in outcomes {
        match o {
            DeviceAck::Deleted => {
                counts.deleted += 1;
                Metrics::inc(&node.metrics.envelopes_acked);
            }
            DeviceAck::Recorded => counts.recorded += 1,
            DeviceAck::Missing => counts.missing += 1,
            DeviceAck::UnknownDevice => return Err(removed_device()),
        }
    }
    Ok(json(StatusCode::OK, &counts))
}

fn removed_device() -> ApiError {
    ApiError::Unauthorized("this device was removed from the account".into())
}
