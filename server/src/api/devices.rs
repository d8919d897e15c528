//! Devices and link drops (`spec/api.md` §Devices, §Links):
//!
//! - `GET /v1/devices`, `POST /v1/devices` (register a device key), `DELETE /v1/devices/{id}`:
//!   for a device of the account (or the account key while it has none).
//! - `POST /v1/links` (an existing device opens a drop with its PAKE message),
//!   `GET /v1/links/{n}/reply`, `PUT /v1/links/{n}/payload`, `DELETE /v1/links/{n}`: the
//!   existing device's side.
//! - `GET /v1/links/{n}`, `POST /v1/links/{n}/join`, `GET /v1/links/{n}/payload`: the new
//!   device's side, anonymous and rate limited per client address; the payload needs the
//!   secret the join answered.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use sealpost_proto::DeviceId;
use sealpost_proto::api::{self, LINK_SECRET_HEADER};
use sealpost_proto::device::{check_key, check_name};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::current_device;
use super::{Resp, binary, check_per_ip, empty, json, json_body, read_body};
use crate::basics::clock::now_secs;
use crate::devices::{DeviceError, MAX_LINK_HELLO, MAX_LINK_JOIN, parse_nameplate};
use crate::metrics::{Metrics, Route};
use crate::node::Node;
use crate::store::{AddDeviceOutcome, Device, RemoveDeviceOutcome};

/// Routes `{DEVICES}/{id}` and `{LINKS}/{nameplate}[/{step}]`.
pub async fn route(
    node: &Arc<Node>,
    path: &str,
    req: Request<Incoming>,
) -> (Route, Result<Resp, ApiError>) {
    if let Some(segs) = api::segments_under(path, api::DEVICES) {
        let r = match (segs.as_slice(), req.method()) {
            ([id], &Method::DELETE) => {
                let id = id.to_string();
                remove(node, &id, req).await
            }
            ([_], _) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NotFound),
        };
        return (Route::Devices, r);
    }
    let r = match api::segments_under(path, api::LINKS).as_deref() {
        Some([n]) => {
            let n = n.to_string();
            link(node, &n, None, req).await
        }
        Some([n, step]) => {
            let (n, step) = (n.to_string(), step.to_string());
            link(node, &n, Some(&step), req).await
        }
        _ => Err(ApiError::NotFound),
    };
    (Route::Links, r)
}

#[derive(Serialize)]
struct DeviceView {
    id: DeviceId,
    name: String,
    key: String,
    created: u64,
}

#[derive(Serialize)]
struct DeviceList {
    /// The device this request signed in as.
    you: DeviceId,
    devices: Vec<DeviceView>,
}

#[derive(Deserialize)]
struct NewDevice {
    /// Ed25519 public key, 64 hex digits.
    key: String,
    name: String,
}

#[derive(Serialize)]
struct Added {
    id: DeviceId,
    created: bool,
}

#[derive(Serialize)]
struct Opened {
    nameplate: String,
    expires: u64,
}

#[derive(Serialize)]
struct Joined {
    secret: String,
}

pub async fn list(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (mailbox, you) = current_device(node, req.headers()).await?;
    let devices = node.store.devices(mailbox).await?;
    Ok(json(
        StatusCode::OK,
        &DeviceList {
            you,
            devices: devices
                .into_iter()
                .map(|d| DeviceView {
                    id: d.id,
                    name: d.name,
                    key: hex::encode(d.key),
                    created: d.created,
                })
                .collect(),
        },
    ))
}

pub async fn add(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (mailbox, you) = current_device(node, req.headers()).await?;
    let r: NewDevice = json_body(node, req).await?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&r.key, &mut key)
        .map_err(|_| ApiError::BadRequest("key: expected 64 hex digits".into()))?;
    check_key(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    check_name(&r.name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let id = DeviceId::of_key(&key);
    let device = Device {
        id,
        key,
        name: r.name,
        created: now_secs(),
    };
    let max = node.config.devices.max_per_account;
    let created = match node.store.add_device(mailbox, device, max).await? {
        AddDeviceOutcome::Added => true,
        AddDeviceOutcome::Existing => false,
        AddDeviceOutcome::TooMany => return Err(DeviceError::TooManyDevices { max }.into()),
        AddDeviceOutcome::UnknownMailbox => return Err(ApiError::UnknownMailbox),
    };
    if created && you == DeviceId::ACCOUNT {
        // The account's first device key takes the account key's place: its sessions end.
        node.sessions
            .revoke_device_any(mailbox, DeviceId::ACCOUNT)
            .await?;
    }
    if created {
        tracing::info!("device registered");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &Added { id, created }))
}

pub async fn remove(node: &Arc<Node>, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (mailbox, _) = current_device(node, req.headers()).await?;
    let id = DeviceId::from_hex(id).map_err(|_| DeviceError::UnknownDevice)?;
    match node.store.remove_device(mailbox, id).await? {
        RemoveDeviceOutcome::Removed { released } => {
            node.sessions.revoke_device_any(mailbox, id).await?;
            for _ in 0..released {
                Metrics::inc(&node.metrics.envelopes_acked);
            }
            tracing::info!(released, "device removed");
            Ok(empty(StatusCode::NO_CONTENT))
        }
        RemoveDeviceOutcome::Unknown => Err(DeviceError::UnknownDevice.into()),
        RemoveDeviceOutcome::Last => Err(DeviceError::LastDevice.into()),
    }
}

/// `POST /v1/links`: the body is the existing device's PAKE message.
pub async fn open(node: &Arc<Node>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (mailbox, _) = current_device(node, req.headers()).await?;
    node.link_limit
        .check(mailbox, std::time::Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let (_, _, hello) = read_body(node, req, MAX_LINK_HELLO, "link hello").await?;
    if hello.is_empty() {
        return Err(ApiError::BadRequest("link hello: empty body".into()));
    }
    let (nameplate, expires) = node.links.create(mailbox, hello.to_vec(), now_secs())?;
    Ok(json(
        StatusCode::CREATED,
        &Opened {
            nameplate: nameplate.to_string(),
            expires,
        },
    ))
}

/// Everything under `/v1/links/{n}`.
pub async fn link(
    node: &Arc<Node>,
    nameplate: &str,
    step: Option<&str>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let method = req.method().clone();
    match (method, step) {
        (Method::GET, None) => {
            check_per_ip(node, &node.link_ip_limit, &req)?;
            let n = parse_nameplate(nameplate)?;
            Ok(binary(node.links.hello(n, now_secs())?.into()))
        }
        (Method::POST, Some("join")) => {
            check_per_ip(node, &node.link_ip_limit, &req)?;
            let n = parse_nameplate(nameplate)?;
            let (_, _, body) = read_body(node, req, MAX_LINK_JOIN, "link join").await?;
            if body.is_empty() {
                return Err(ApiError::BadRequest("link join: empty body".into()));
            }
            let secret = node.links.join(n, body.to_vec(), now_secs())?;
            Ok(json(
                StatusCode::OK,
                &Joined {
                    secret: hex::encode(secret),
                },
            ))
        }
        (Method::GET, Some("payload")) => {
            check_per_ip(node, &node.link_ip_limit, &req)?;
            let n = parse_nameplate(nameplate)?;
            let mut secret = [0u8; 32];
            req.headers()
                .get(LINK_SECRET_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| hex::decode_to_slice(v.trim(), &mut secret).ok())
                .ok_or(DeviceError::LinkNotYours)?;
            match node.links.collect(n, &secret, now_secs())? {
                Some(payload) => Ok(binary(payload.into())),
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
        (Method::GET, Some("reply")) => {
            let (mailbox, _) = current_device(node, req.headers()).await?;
            let n = parse_nameplate(nameplate)?;
            match node.links.reply(n, mailbox, now_secs())? {
                Some(join) => Ok(binary(join.into())),
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
        (Method::PUT, Some("payload")) => {
            let (mailbox, _) = current_device(node, req.headers()).await?;
            let n = parse_nameplate(nameplate)?;
            let max = node.links.max_payload();
            let (_, _, body) = read_body(node, req, max, "link payload").await?;
            node.links.deliver(n, mailbox, body.to_vec(), now_secs())?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::DELETE, None) => {
            let (mailbox, _) = current_device(node, req.headers()).await?;
            let n = parse_nameplate(nameplate)?;
            node.links.abort(n, mailbox, now_secs())?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (_, None | Some("join" | "payload" | "reply")) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    }
}
