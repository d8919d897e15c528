//! `POST /v1/accounts`: register a certificate, get a mailbox. Idempotent per certificate.
//!
//! An address belongs to the first account whose certificate names it. A certificate that
//! names an address owned by another account is refused (409 `address_taken`) unless the
//! owner's current key endorsed it (an OpenPGP certification of the new User ID by the old
//! primary key, [`sealpost_proto::record::endorse`]): that is a key rotation, and the owner's
//! account takes the new certificate and keeps its mailbox. The store decides inside the
//! write, so two racing registrations for one address cannot both win. A rotation ends the
//! account's sessions: tokens and challenges issued before it are refused (401).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use sealpost_proto::identity::{cert_addresses, cert_from_bytes, cert_to_bytes};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::endorsed_by;
use sealpost_proto::{Address, MailboxId, NodeUrl};
use serde::{Deserialize, Serialize};

use super::{Resp, json, json_body};
use crate::basics::clock::now_secs;
use crate::config::RegistrationPolicy;
use crate::error::ApiError;
use crate::node::Node;
use crate::store::{NewAccount, RegisterOutcome, Rotation};

/// Most addresses one certificate may claim.
pub const MAX_CLAIMED_ADDRESSES: usize = 8;

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
    /// True when this registration replaced the account's key (rotation).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rotated: bool,
}

/// The addresses `cert` names, as claims (lower-case, valid addresses only), bounded.
fn claimed_addresses(cert: &Cert) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for a in cert_addresses(cert) {
        if let Ok(a) = Address::parse(&a)
            && !out.iter().any(|o| o == a.as_str())
        {
            out.push(a.as_str().to_string());
        }
    }
    if out.len() > MAX_CLAIMED_ADDRESSES {
        return Err(ApiError::BadRequest(format!(
            "certificate names {} addresses; at most {MAX_CLAIMED_ADDRESSES}",
            out.len()
        )));
    }
    Ok(out)
}

/// Whether registering `cert` for `addresses` is a rotation of an existing account: every
/// claimed address must belong to one account whose current key endorsed `cert`.
async fn rotation_of(
    node: &Arc<Node>,
    cert: &Cert,
    addresses: &[String],
) -> Result<Option<Rotation>, ApiError> {
    let mut rotation: Option<Rotation> = None;
    for address in addresses {
        let Some(owner) = node.store.owner_of(address.clone()).await? else {
            continue;
        };
        let account = node
            .account(owner)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("claim of {address} names no account")))?;
        let same_owner = rotation.as_ref().is_none_or(|r| r.mailbox == owner);
        if !same_owner || !endorsed_by(cert, &account.cert, address) {
            return Err(ApiError::AddressTaken {
                address: address.clone(),
            });
        }
        rotation = Some(Rotation {
            mailbox: owner,
            old_fingerprint: account.fingerprint.as_bytes().to_vec(),
        });
    }
    Ok(rotation)
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
            let addresses = claimed_addresses(&cert)?;
            let rotation = rotation_of(node, &cert, &addresses).await?;
            // A rotation is no new account: the policy does not apply.
            let invite = match (&rotation, node.config.registration.policy) {
                (Some(_), _) | (None, RegistrationPolicy::Open) => None,
                (None, RegistrationPolicy::Closed) => {
                    return Err(ApiError::Forbidden(
                        "registration is closed on this node".into(),
                    ));
                }
                (None, RegistrationPolicy::Invite) => match r.invite {
                    Some(code) if node.is_invite(&code) => Some(code),
                    _ => return Err(ApiError::BadInvite),
                },
            };
            let account = NewAccount {
                fingerprint,
                cert: cert_to_bytes(&cert),
                created: now_secs(),
                invite,
                addresses,
                rotation,
            };
            node.store.register(account).await?
        }
    };
    let (status, mailbox, rotated) = match outcome {
        RegisterOutcome::Created(m) => {
            tracing::info!("account registered");
            (StatusCode::CREATED, m, false)
        }
        RegisterOutcome::Rotated(m) => {
            node.forget_account(m);
            // Sessions signed in with the old key end with it.
            node.sessions.revoke(m);
            tracing::info!("account key rotated");
            (StatusCode::OK, m, true)
        }
        RegisterOutcome::Existing(m) => (StatusCode::OK, m, false),
        RegisterOutcome::InviteUsed => return Err(ApiError::BadInvite),
        RegisterOutcome::AddressTaken { address } => {
            return Err(ApiError::AddressTaken { address });
        }
    };
    Ok(json(
        status,
        &Registered {
            mailbox,
            node_key: hex::encode(node.keys.node_key()),
            url: &node.url,
            rotated,
        },
    ))
}
