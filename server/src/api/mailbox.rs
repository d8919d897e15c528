//! `GET /v1/mailbox/{mailbox}` (list from a cursor), `GET`/`DELETE /v1/mailbox/{mailbox}/{seq}`:
//! for the mailbox's owner only. Each device lists what it has not acknowledged; an ack is
//! that device's, and the envelope goes once every device of the account has acked it.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;

use super::ApiError;
use super::auth::device_for;
use super::{Resp, binary, empty, json};
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
        DeviceAck::UnknownDevice => {
            return Err(ApiError::Unauthorized(
                "this device was removed from the account".into(),
            ));
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
