//! `POST /v1/accounts`: register a certificate, get a mailbox (the domain's `accounts`:
//! idempotent per certificate, key rotation by endorsement).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use sealpost_proto::{MailboxId, NodeUrl};
use serde::{Deserialize, Serialize};

use super::{ApiError, Resp, check_anonymous, json, json_body};
use crate::accounts::Registered;
use crate::node::Node;

#[derive(Deserialize)]
struct RegisterRequest {
    /// Armored (or binary-as-text) OpenPGP public certificate.
    cert: String,
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Serialize)]
struct RegisterAnswer<'a> {
    mailbox: MailboxId,
    node_key: String,
    url: &'a NodeUrl,
    /// True when this registration replaced the account's key (rotation).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rotated: bool,
}

pub async fn register(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_anonymous(node, &req).await?;
    let r: RegisterRequest = json_body(node, req).await?;
    let (status, mailbox, rotated) = match node.register(r.cert.as_bytes(), r.invite).await? {
        Registered::Created(m) => (StatusCode::CREATED, m, false),
        Registered::Rotated(m) => (StatusCode::OK, m, true),
        Registered::Existing(m) => (StatusCode::OK, m, false),
    };
    Ok(json(
        status,
        &RegisterAnswer {
            mailbox,
            node_key: hex::encode(node.keys.node_key()),
            url: &node.url,
            rotated,
        },
    ))
}
