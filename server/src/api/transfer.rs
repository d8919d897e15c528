//! `POST /v1/submit` (a user hands its node a hop wrapper to forward) and `POST /v1/deliver`
//! (a peer node, signing its request per RFC 9421, hands over a hop payload for us).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::HopWrapper;
use sealpost_proto::httpsig::verify_request;
use sealpost_proto::limits::MAX_URL_BYTES;
use serde_json::json as j;

use super::auth::bearer;
use super::{HOP_OVERHEAD, Resp, json, path_prefix, read_body};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::node::{Node, now_ms, now_secs};
use crate::relay::Job;
use crate::store::{DeliverOutcome, OutboundItem, QueueId};

/// How far a request signature's `created` may be from our clock.
pub const MAX_SIGNATURE_SKEW_SECS: u64 = 300;

fn max_payload(node: &Node) -> usize {
    node.config.limits.max_envelope as usize + HOP_OVERHEAD
}

pub async fn submit(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let sender = bearer(node, req.headers())?;
    if let Err(retry_after) = node.submit_limit.check(sender, Instant::now()) {
        Metrics::inc(&node.metrics.rate_limited);
        return Err(ApiError::RateLimited { retry_after });
    }
    let max = max_payload(node);
    let (_, _, body) = read_body(node, req, max + MAX_URL_BYTES + 16, "hop wrapper").await?;
    let hop = HopWrapper::decode(&body).map_err(ApiError::from_body)?;
    drop(body);
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
    };
    let payload = Bytes::from(hop.payload);
    if !node.outbound_usage.reserve(sender, item.size) {
        return Err(ApiError::OutboundFull);
    }
    if let Err(e) = node.store.enqueue(item.clone(), payload.clone()).await {
        node.outbound_usage.release(sender, item.size);
        return Err(e.into());
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
    // Cheap refusal before reading a body from someone who does not even sign.
    let h = req.headers();
    if header(h, "signature").is_none()
        || header(h, "signature-input").is_none()
        || header(h, "content-digest").is_none()
    {
        return Err(ApiError::Unauthorized(
            "missing request signature (Signature, Signature-Input, Content-Digest)".into(),
        ));
    }
    let (headers, _, body) = read_body(node, req, max_payload(node), "hop payload").await?;
    // The signature covers our public authority and path, as the sender addressed us.
    let path = format!("{}/v1/deliver", path_prefix(&node.url));
    let peer = verify_request(
        "POST",
        node.url.authority(),
        &path,
        &body,
        header(&headers, "content-digest"),
        header(&headers, "signature-input"),
        header(&headers, "signature"),
        now_secs(),
        MAX_SIGNATURE_SKEW_SECS,
    )
    .map_err(|e| ApiError::Unauthorized(format!("request signature: {e}")))?;
    if !node.peer_allowed(&peer) {
        return Err(ApiError::Forbidden(
            "this node does not accept deliveries from yours".into(),
        ));
    }
    if let Err(retry_after) = node.deliver_limit.check(peer, Instant::now()) {
        Metrics::inc(&node.metrics.rate_limited);
        return Err(ApiError::RateLimited { retry_after });
    }
    match node.accept_hop_payload(body).await? {
        DeliverOutcome::Stored { .. } => Ok(json(StatusCode::OK, &j!({ "stored": true }))),
        DeliverOutcome::Duplicate { .. } => Ok(json(StatusCode::OK, &j!({ "stored": false }))),
        DeliverOutcome::UnknownMailbox => Err(ApiError::UnknownMailbox),
        DeliverOutcome::QuotaExceeded => Err(ApiError::QuotaExceeded),
    }
}
