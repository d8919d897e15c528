//! `POST /v1/submit` (a user hands its node a hop wrapper to forward) and `POST /v1/deliver`
//! (a peer node, signing its request per RFC 9421, hands over a hop payload for us).

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use sealpost_proto::api::{DELIVER, FORWARD};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::HopWrapper;
use sealpost_proto::httpsig::{SigError, parse_content_digest, verify_signature};
use sealpost_proto::limits::MAX_URL_BYTES;
use serde_json::json as j;
use sha2::{Digest, Sha256};

use super::ApiError;
use super::auth::bearer;
use super::{HOP_OVERHEAD, Resp, check_per_ip, client_key, json, read_body_charged};
use crate::basics::clock::{now_ms, now_secs};
use crate::basics::paths::path_prefix;
use crate::delivery::Delivered;
use crate::metrics::Metrics;
use crate::node::{Job, Node};
use crate::store::{OutboundItem, QueueId};

/// How far a request signature's `created` may be from our clock.
pub const MAX_SIGNATURE_SKEW_SECS: u64 = 300;

fn max_payload(node: &Node) -> usize {
    node.config.limits.max_envelope as usize + HOP_OVERHEAD
}

pub async fn submit(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let sender = bearer(node, req.headers()).await?;
    if let Err(retry_after) = node.submit_limit.take(sender).await {
        Metrics::inc(&node.metrics.rate_limited);
        return Err(ApiError::RateLimited { retry_after });
    }
    let max = max_payload(node);
    let client = client_key(&req);
    let body =
        read_body_charged(node, req, max + MAX_URL_BYTES + 16, "hop wrapper", |_| {}).await?;
    let hop = HopWrapper::decode(&body.bytes).map_err(ApiError::from_body)?;
    // The hop (a copy of most of the body) stays charged until the request ends.
    let _charge = body.charge;
    if hop.payload.len() > max {
        return Err(ApiError::TooLarge {
            what: "hop payload",
            len: hop.payload.len() as u64,
            max: max as u64,
        });
    }
    crate::ssrf::check_destination(
        &hop.destination,
        node.config.relay.allow_private_destinations,
    )
    .map_err(ApiError::Forbidden)?;
    let id = QueueId::random();
    let item = OutboundItem {
        id: id.0,
        destination: hop.destination,
        sender,
        submitted_ms: now_ms(),
        attempts: 0,
        next_attempt_ms: now_ms(),
        size: hop.payload.len() as u64,
        last_error: String::new(),
        smtp: None,
        forward: None,
    };
    let payload = Bytes::from(hop.payload);
    if !node.outbound_usage.reserve(&item, client) {
        return Err(ApiError::OutboundFull);
    }
    let l = &node.config.limits;
    let queued = if node.outbound_usage.senders_in_store {
        let (hops, bytes) = (l.outbound_hops_per_user, l.outbound_bytes_per_user);
        (node.store)
            .enqueue_within(item.clone(), payload.clone(), hops, bytes)
            .await
    } else {
        node.store
            .enqueue(item.clone(), payload.clone())
            .await
            .map(|()| true)
    };
    if !matches!(queued, Ok(true)) {
        node.outbound_usage.release(&item);
        return Err(queued.map_or_else(ApiError::from, |_| ApiError::OutboundFull));
    }
    Metrics::inc(&node.metrics.hops_queued);
    node.metrics
        .outbound_queue
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    node.schedule(Job {
        item,
        payload: Some(payload),
    });
    Ok(json(StatusCode::ACCEPTED, &j!({ "queued": id.to_hex() })))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub async fn deliver(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (peer, body) = signed_body(node, req, DELIVER, max_payload(node), "hop payload").await?;
    node.peer_delivered(peer);
    let delivered = node.accept_hop_payload(body.bytes).await?;
    drop(body.charge);
    let stored = delivered == Delivered::Stored;
    Ok(json(StatusCode::OK, &j!({ "stored": stored })))
}

/// `POST /v1/forward`: another home of a mailbox forwards an envelope it stored (signed as
/// a delivery is). Only a node that the mailbox's record names as a home may; a duplicate
/// is `200` with `"stored": false`.
pub async fn forward(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let max = node.config.limits.max_envelope as usize;
    let (peer, body) = signed_body(node, req, FORWARD, max, "envelope").await?;
    let delivered = node.accept_forward(&peer, body.bytes).await?;
    node.peer_delivered(peer);
    drop(body.charge);
    let stored = delivered == Delivered::Stored;
    Ok(json(StatusCode::OK, &j!({ "stored": stored })))
}

/// The body of a request that a peer node signed per RFC 9421 over `endpoint` (after our
/// URL's path prefix), with the signer's key. Everything that can refuse the request is
/// decided from its headers, before a byte of the body is read: the signature over the
/// Content-Digest, the signer's standing and its limits. Then the body is hashed as it
/// streams in, within the body budget.
async fn signed_body(
    node: &Arc<Node>,
    req: Request<Incoming>,
    endpoint: &str,
    max: usize,
    what: &'static str,
) -> Result<([u8; 32], super::Body), ApiError> {
    let h = req.headers();
    let (Some(digest), Some(input), Some(signature)) = (
        header(h, "content-digest"),
        header(h, "signature-input"),
        header(h, "signature"),
    ) else {
        return Err(ApiError::Unauthorized(
            "missing request signature (Signature, Signature-Input, Content-Digest)".into(),
        ));
    };
    let unauthorized = |e: SigError| ApiError::Unauthorized(format!("request signature: {e}"));
    let expected = parse_content_digest(digest).map_err(unauthorized)?;
    // The signature covers our public authority and path, as the sender addressed us.
    let path = format!("{}{endpoint}", path_prefix(&node.url));
    let peer = verify_signature(
        "POST",
        node.url.authority(),
        &path,
        digest,
        input,
        signature,
        now_secs(),
        MAX_SIGNATURE_SKEW_SECS,
    )
    .map_err(unauthorized)?;
    if !node.peer_allowed(&peer) {
        return Err(ApiError::Forbidden(
            "this node does not accept deliveries from yours".into(),
        ));
    }
    if !node.peer_has_history(&peer) {
        check_per_ip(node, &node.new_peer_limit, &req).await?;
    }
    if let Err(retry_after) = node.deliver_limit.take(peer).await {
        Metrics::inc(&node.metrics.rate_limited);
        return Err(ApiError::RateLimited { retry_after });
    }
    let mut hasher = Sha256::new();
    let body = read_body_charged(node, req, max, what, |chunk| hasher.update(chunk)).await?;
    if hasher.finalize().as_slice() != expected {
        return Err(unauthorized(SigError::DigestMismatch));
    }
    Ok((peer, body))
}
