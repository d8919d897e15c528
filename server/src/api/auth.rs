//! `POST /v1/auth/challenge` and `/v1/auth/token`, and the bearer-token check of
//! authenticated requests. A token is for a mailbox and a device: the account key signs in
//! as [`DeviceId::ACCOUNT`] while the account has no registered device; a registered device
//! signs the device statement with its own Ed25519 key (`device` in the token request).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Request, StatusCode};
use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::device::{device_statement, verify};
use sealpost_proto::record::verify_detached;
use sealpost_proto::{DeviceId, MailboxId};
use serde::{Deserialize, Serialize};

use super::{Resp, json, json_body};
use crate::basics::clock::now_secs;
use crate::devices::{DeviceError, check_session_device};
use crate::error::ApiError;
use crate::node::Node;
use crate::sessions::TokenError;

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
    node.check_anonymous(&req)?;
    let r: ChallengeRequest = json_body(node, req).await?;
    let mailbox = parse_mailbox(&r.mailbox)?;
    if node.account(mailbox).await?.is_none() {
        return Err(ApiError::UnknownMailbox);
    }
    let (nonce, expires) = node
        .sessions
        .challenge(mailbox, now_secs())
        .ok_or(ApiError::RateLimited { retry_after: 60 })?;
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
    let now = now_secs();
    node.sessions
        .take_nonce(&nonce, mailbox, now)
        .map_err(|_| ApiError::Unauthorized("unknown, expired or already used challenge".into()))?;
    // Read before the key is: a rotation committing after this point revokes the token.
    let epoch = node.sessions.epoch(mailbox);
    let account = node
        .account(mailbox)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("no such account".into()))?;
    let devices = node.store.devices(mailbox).await?;
    let device = match &r.device {
        None => {
            let statement = challenge_statement(&node.url, &mailbox, &nonce);
            verify_detached(&statement, &signature, &account.cert).map_err(|_| {
                ApiError::Unauthorized(
                    "challenge signature does not verify with the account's key".into(),
                )
            })?;
            DeviceId::ACCOUNT
        }
        Some(id) => {
            let id = DeviceId::from_hex(id)
                .map_err(|_| ApiError::BadRequest("device: expected 32 hex digits".into()))?;
            let device = devices
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| ApiError::Unauthorized("no such device in this account".into()))?;
            let statement = device_statement(&node.url, &mailbox, &id, &nonce);
            verify(&device.key, &statement, &signature).map_err(|_| {
                ApiError::Unauthorized(
                    "challenge signature does not verify with the device key".into(),
                )
            })?;
            id
        }
    };
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
    check_session_device(&ids, device)?;
    let (token, expires) = node
        .sessions
        .issue_device_token(mailbox, device, epoch, now)
        .map_err(|e| match e {
            TokenError::Full => ApiError::RateLimited { retry_after: 60 },
            TokenError::Revoked => ApiError::Unauthorized(
                "the account's key changed during sign-in; ask for a new challenge".into(),
            ),
        })?;
    Ok(json(
        StatusCode::OK,
        &Token {
            token: hex::encode(token),
            expires,
        },
    ))
}

/// The mailbox whose bearer token the request carries.
pub fn bearer(node: &Node, headers: &HeaderMap) -> Result<MailboxId, ApiError> {
    bearer_device(node, headers).map(|(m, _)| m)
}

/// The mailbox and device whose bearer token the request carries.
pub fn bearer_device(node: &Node, headers: &HeaderMap) -> Result<(MailboxId, DeviceId), ApiError> {
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
        .token_device(&t, now_secs())
        .ok_or_else(unauthorized)
}

/// The request's mailbox and device, checked to be one of the account's devices now (a
/// device removed on another front-end, or the account key once devices exist, is refused).
pub async fn current_device(
    node: &Node,
    headers: &HeaderMap,
) -> Result<(MailboxId, DeviceId), ApiError> {
    let (mailbox, device) = bearer_device(node, headers)?;
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
