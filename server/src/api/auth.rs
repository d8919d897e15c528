//! `POST /v1/auth/challenge` and `/v1/auth/token`, and the bearer-token check of
//! authenticated requests.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Request, StatusCode};
use sealpost_proto::MailboxId;
use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::record::verify_detached;
use serde::{Deserialize, Serialize};

use super::{Resp, json, json_body};
use crate::basics::clock::now_secs;
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
        .challenge_any(mailbox, now_secs())
        .await?
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
        .take_nonce_any(&nonce, mailbox, now)
        .await?
        .map_err(|_| ApiError::Unauthorized("unknown, expired or already used challenge".into()))?;
    // Read before the key is: a rotation committing after this point revokes the token.
    let epoch = node.sessions.epoch_any(mailbox).await?;
    let account = node
        .account(mailbox)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("no such account".into()))?;
    let statement = challenge_statement(&node.url, &mailbox, &nonce);
    verify_detached(&statement, &signature, &account.cert).map_err(|_| {
        ApiError::Unauthorized("challenge signature does not verify with the account's key".into())
    })?;
    let (token, expires) = node
        .sessions
        .issue_token_any(mailbox, epoch, now)
        .await?
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
pub async fn bearer(node: &Node, headers: &HeaderMap) -> Result<MailboxId, ApiError> {
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
        .token_mailbox_any(&t, now_secs())
        .await?
        .ok_or_else(unauthorized)
}

/// Checks that the request's token is for `mailbox` (given as a path segment).
pub async fn bearer_for(
    node: &Node,
    headers: &HeaderMap,
    mailbox: &str,
) -> Result<MailboxId, ApiError> {
    let owner = bearer(node, headers).await?;
    let mailbox = parse_mailbox(mailbox)?;
    if owner != mailbox {
        return Err(ApiError::Unauthorized(
            "the token is for another mailbox".into(),
        ));
    }
    Ok(mailbox)
}
