//! `POST /v1/auth/challenge` and `/v1/auth/token`, and the bearer-token check of
//! authenticated requests. A token is for a mailbox and a device ([`DeviceId::ACCOUNT`]:
//! the account key, while the account has no registered device).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Request, StatusCode};
use sealpost_proto::auth::NONCE_BYTES;
use sealpost_proto::{DeviceId, MailboxId};
use serde::{Deserialize, Serialize};

use super::{ApiError, Resp, check_anonymous, json, json_body};
use crate::basics::clock::now_secs;
use crate::devices::{DeviceError, check_session_device};
use crate::node::Node;

#[derive(Deserialize)]
struct ChallengeRequest {
    mailbox: String,
}

#[derive(Serialize)]
struct Challenge {
    nonce: String,
    expires: u64,
}

#[derive(Deserialize)]
struct TokenRequest {
    mailbox: String,
    nonce: String,
    signature: String,
    /// A registered device signing in with its device key (hex id); absent: the account key.
    #[serde(default)]
    device: Option<String>,
}

#[derive(Serialize)]
struct Token {
    token: String,
    expires: u64,
}

pub fn parse_mailbox(s: &str) -> Result<MailboxId, ApiError> {
    MailboxId::from_hex(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub async fn challenge(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_anonymous(node, &req)?;
    let r: ChallengeRequest = json_body(node, req).await?;
    let mailbox = parse_mailbox(&r.mailbox)?;
    let (nonce, expires) = node.challenge(mailbox).await?;
    Ok(json(
        StatusCode::OK,
        &Challenge {
            nonce: hex::encode(nonce),
            expires,
        },
    ))
}

pub async fn token(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let r: TokenRequest = json_body(node, req).await?;
    let mailbox = parse_mailbox(&r.mailbox)?;
    let mut nonce = [0u8; NONCE_BYTES];
    hex::decode_to_slice(&r.nonce, &mut nonce)
        .map_err(|_| ApiError::BadRequest("nonce: expected 64 hex digits".into()))?;
    let signature = B64
        .decode(&r.signature)
        .map_err(|_| ApiError::BadRequest("signature: not base64".into()))?;
    let device = r
        .device
        .as_deref()
        .map(DeviceId::from_hex)
        .transpose()
        .map_err(|_| ApiError::BadRequest("device: expected 32 hex digits".into()))?;
    let (token, expires) = node.sign_in(mailbox, &nonce, &signature, device).await?;
    Ok(json(
        StatusCode::OK,
        &Token {
            token: hex::encode(token),
            expires,
        },
    ))
}

/// The mailbox whose bearer token the request carries.
pub async fn bearer(node: &Node, headers: &HeaderMap) -> Result<MailboxId, ApiError> {
    bearer_device(node, headers).await.map(|(m, _)| m)
}

/// The mailbox and device whose bearer token the request carries.
pub async fn bearer_device(
    node: &Node,
    headers: &HeaderMap,
) -> Result<(MailboxId, DeviceId), ApiError> {
    let unauthorized = || ApiError::Unauthorized("missing, unknown or expired bearer token".into());
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized());
    }
    let mut t = [0u8; 32];
    hex::decode_to_slice(token.trim(), &mut t).map_err(|_| unauthorized())?;
    node.sessions
        .token_device_any(&t, now_secs())
        .await?
        .ok_or_else(unauthorized)
}

/// The request's mailbox and device, checked to be one of the account's devices now (a
/// device removed on another front-end, or the account key once devices exist, is refused).
pub async fn current_device(
    node: &Node,
    headers: &HeaderMap,
) -> Result<(MailboxId, DeviceId), ApiError> {
    let (mailbox, device) = bearer_device(node, headers).await?;
    let ids: Vec<DeviceId> = node
        .store
        .devices(mailbox)
        .await?
        .iter()
        .map(|d| d.id)
        .collect();
    check_session_device(&ids, device).map_err(|e| match e {
        DeviceError::UnknownDevice => {
            ApiError::Unauthorized("this device was removed from the account".into())
        }
        other => ApiError::Device(other),
    })?;
    Ok((mailbox, device))
}

/// [`current_device`] for the mailbox named in the path.
pub async fn device_for(
    node: &Node,
    headers: &HeaderMap,
    mailbox: &str,
) -> Result<(MailboxId, DeviceId), ApiError> {
    let named = parse_mailbox(mailbox)?;
    let (owner, device) = current_device(node, headers).await?;
    if owner != named {
        return Err(ApiError::Unauthorized(
            "the token is for another mailbox".into(),
        ));
    }
    Ok((owner, device))
}
