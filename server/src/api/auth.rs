//! `POST /v1/auth/challenge` and `/v1/auth/token`, and the bearer-token check of
//! authenticated requests.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Request, StatusCode};
use sealpost_proto::MailboxId;
use sealpost_proto::auth::NONCE_BYTES;
use serde::{Deserialize, Serialize};

use super::{ApiError, Resp, check_anonymous, json, json_body};
use crate::basics::clock::now_secs;
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
    let (token, expires) = node.sign_in(mailbox, &nonce, &signature).await?;
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
