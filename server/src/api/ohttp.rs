//! Oblivious lookups over HTTP (`spec/api.md`, "Oblivious lookups"): the relay endpoints a
//! device uses on its own home (`POST /v1/relay/ohttp`, `GET /v1/relay/descriptor`, the
//! target node in the `Sealpost-Target` header) and the gateway other nodes relay to
//! (`POST /v1/ohttp`). The work is in [`crate::oblivious`].

use std::sync::Arc;

use bytes::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use sealpost_proto::NodeUrl;
use sealpost_proto::api::TARGET_HEADER;
use sealpost_proto::oblivious::{
    MAX_ENCAPSULATED_REQUEST, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE,
};

use super::{ApiError, Resp, binary, check_per_ip, read_body};
use crate::node::Node;
use crate::oblivious::{self, ObliviousError};

impl From<ObliviousError> for ApiError {
    fn from(e: ObliviousError) -> ApiError {
        match e {
            ObliviousError::BadTarget(m) => ApiError::Forbidden(m),
            ObliviousError::BadRequest(m) => ApiError::BadRequest(m),
            ObliviousError::Store(s) => s.into(),
            other @ (ObliviousError::Unreachable { .. }
            | ObliviousError::TargetStatus { .. }
            | ObliviousError::TooLarge { .. }) => ApiError::Upstream {
                failure: match &other {
                    ObliviousError::Unreachable { failure, .. } => *failure,
                    _ => "bad_answer",
                },
                message: other.to_string(),
            },
        }
    }
}

fn target(req: &Request<Incoming>) -> Result<NodeUrl, ApiError> {
    let v = req
        .headers()
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("no {TARGET_HEADER} header")))?;
    NodeUrl::parse(v).map_err(|e| ApiError::BadRequest(format!("{TARGET_HEADER}: {e}")))
}

fn typed(body: Vec<u8>, media_type: &'static str) -> Resp {
    let mut r = binary(Bytes::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /v1/relay/descriptor`.
pub async fn relay_descriptor(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_per_ip(node, &node.relay_limit, &req).await?;
    let target = target(&req)?;
    let answer = oblivious::relay_descriptor(node, &target).await?;
    let mut r = binary(answer.body);
    *r.status_mut() =
        hyper::StatusCode::from_u16(answer.status).map_err(|_| ApiError::Upstream {
            failure: "bad_answer",
            message: format!("{target} answered status {}", answer.status),
        })?;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /v1/relay/ohttp`.
pub async fn relay(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_per_ip(node, &node.relay_limit, &req).await?;
    let target = target(&req)?;
    let (_, _, body) = read_body(node, req, MAX_ENCAPSULATED_REQUEST, "oblivious request").await?;
    let answer = oblivious::relay_request(node, &target, body).await?;
    Ok(typed(answer.to_vec(), RESPONSE_MEDIA_TYPE))
}

/// `POST /v1/ohttp`.
pub async fn gateway(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_per_ip(node, &node.gateway_limit, &req).await?;
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if media != Some(REQUEST_MEDIA_TYPE) {
        return Err(ApiError::BadRequest(format!(
            "Content-Type must be {REQUEST_MEDIA_TYPE}"
        )));
    }
    let (_, _, body) = read_body(node, req, MAX_ENCAPSULATED_REQUEST, "oblivious request").await?;
    Ok(typed(
        oblivious::answer(node, &body).await?,
        RESPONSE_MEDIA_TYPE,
    ))
}
