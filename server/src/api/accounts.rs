//! `POST /v1/accounts`: register a certificate, get a mailbox. Idempotent per certificate.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use sealpost_proto::identity::{cert_from_bytes, cert_to_bytes};
use sealpost_proto::{MailboxId, NodeUrl};
use serde::{Deserialize, Serialize};

use super::{Resp, json, json_body};
use crate::config::RegistrationPolicy;
use crate::error::ApiError;
use crate::node::{Node, now_secs};
use crate::store::{NewAccount, RegisterOutcome};

#[derive(Deserialize)]
struct RegisterRequest {
    /// Armored (or binary-as-text) OpenPGP public certificate.
    cert: String,
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Serialize)]
struct Registered<'a> {
    mailbox: MailboxId,
    node_key: String,
    url: &'a NodeUrl,
}

pub async fn register(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    node.check_anonymous(&req)?;
    let r: RegisterRequest = json_body(node, req).await?;
    let cert = cert_from_bytes(r.cert.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("certificate: {e}")))?;
    let fingerprint = cert.fingerprint().as_bytes().to_vec();
    // An existing account answers whatever the policy: registering is idempotent.
    let existing = node.store.mailbox_of(fingerprint.clone()).await?;
    let outcome = match existing {
        Some(m) => RegisterOutcome::Existing(m),
        None => {
            let invite = match node.config.registration.policy {
                RegistrationPolicy::Open => None,
                RegistrationPolicy::Closed => {
                    return Err(ApiError::Forbidden(
                        "registration is closed on this node".into(),
                    ));
                }
                RegistrationPolicy::Invite => match r.invite {
                    Some(code) if node.is_invite(&code) => Some(code),
                    _ => return Err(ApiError::BadInvite),
                },
            };
            let account = NewAccount {
                fingerprint,
                cert: cert_to_bytes(&cert),
                created: now_secs(),
                invite,
            };
            node.store.register(account).await?
        }
    };
    let (status, mailbox) = match outcome {
        RegisterOutcome::Created(m) => {
            tracing::info!("account registered");
            (StatusCode::CREATED, m)
        }
        RegisterOutcome::Existing(m) => (StatusCode::OK, m),
        RegisterOutcome::InviteUsed => return Err(ApiError::BadInvite),
    };
    Ok(json(
        status,
        &Registered {
            mailbox,
            node_key: hex::encode(node.keys.node_key()),
            url: &node.url,
        },
    ))
}
