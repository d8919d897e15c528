//! Oblivious lookups (`spec/protocol.md` §11): as a relay, this node carries a device's
//! encrypted lookup to another node's gateway (and fetches that node's public descriptor for
//! it); as a gateway, it opens lookups relayed by other nodes and answers record and
//! descriptor `GET`s only. The relay sees which node is asked, never what; the gateway sees
//! which node relayed, never the device.

use std::time::Duration;

use bytes::Bytes;
use sealpost_proto::NodeUrl;
use sealpost_proto::api;
use sealpost_proto::oblivious::{
    LookupResponse, MAX_ENCAPSULATED_REQUEST, MAX_ENCAPSULATED_RESPONSE, REQUEST_MEDIA_TYPE,
};

use crate::node::Node;
use crate::store::StoreError;

/// Largest descriptor fetched for a device.
pub const MAX_DESCRIPTOR_BYTES: usize = sealpost_proto::limits::MAX_SIGNED_BODY_BYTES
    + sealpost_proto::limits::MAX_SIGNATURE_BYTES
    + 64;
/// How long one relayed request may take as a whole.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relayed request failed.
#[derive(Debug, thiserror::Error)]
pub enum ObliviousError {
    /// The target may not be asked (a private address, see `ssrf`).
    #[error("{0}")]
    BadTarget(String),
    /// The target could not be reached; `failure` is `refused`, `no_such_host`,
    /// `timed_out` or `other`.
    #[error("the node asked could not be reached ({failure}): {reason}")]
    Unreachable {
        failure: &'static str,
        reason: String,
    },
    /// The target answered, but not with what was asked for.
    #[error("the node asked answered {status}")]
    TargetStatus { status: u16 },
    #[error("the node asked sent more than {max} bytes")]
    TooLarge { max: usize },
    /// The encapsulated request could not be opened or is not a lookup.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a resolver error's text says that the name does not exist (`EAI_NONAME`,
/// `EAI_NODATA`, as glibc, musl and the BSDs word them); anything else a lookup says proves
/// nothing, and is `other`. The client judges a relayed `no_such_host` as its own.
fn says_no_such_host(message: &str) -> bool {
    const NO_SUCH_HOST: &[&str] = &[
        "name or service not known",
        "no address associated with hostname",
        "name does not resolve",
        "nodename nor servname provided",
    ];
    let m = message.to_ascii_lowercase();
    m.contains("failed to lookup address information") && NO_SUCH_HOST.iter().any(|n| m.contains(n))
}

fn failure_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timed_out";
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "refused",
                std::io::ErrorKind::TimedOut => return "timed_out",
                _ => {}
            }
        }
        if says_no_such_host(&err.to_string()) {
            return "no_such_host";
        }
        cur = err.source();
    }
    "other"
}

fn unreachable(e: reqwest::Error) -> ObliviousError {
    let e = e.without_url();
    ObliviousError::Unreachable {
        failure: failure_of(&e),
        reason: e.to_string(),
    }
}

/// Reads at most `max` bytes of a response body.
async fn bounded(mut resp: reqwest::Response, max: usize) -> Result<Bytes, ObliviousError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if out.len() + chunk.len() > max {
            return Err(ObliviousError::TooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// `f`, given [`RELAY_TIMEOUT`] in all.
async fn within_timeout<T>(
    f: impl Future<Output = Result<T, ObliviousError>>,
) -> Result<T, ObliviousError> {
    tokio::time::timeout(RELAY_TIMEOUT, f)
        .await
        .map_err(|_| ObliviousError::Unreachable {
            failure: "timed_out",
            reason: "timed out".into(),
        })?
}

fn check_target(node: &Node, target: &NodeUrl) -> Result<(), ObliviousError> {
    crate::ssrf::check_destination(target, node.config.relay.allow_private_destinations)
        .map_err(ObliviousError::BadTarget)
}

/// A node's answer to a descriptor request, passed on as it came: status and (bounded)
/// body. Descriptors are public, and the device judges the answer as if it had asked
/// itself (a web server without a descriptor is no Sealpost node).
pub struct Relayed {
    pub status: u16,
    pub body: Bytes,
}

/// Fetches `target`'s signed descriptor for a device (the device verifies it).
pub async fn relay_descriptor(node: &Node, target: &NodeUrl) -> Result<Relayed, ObliviousError> {
    check_target(node, target)?;
    let fetch = async {
        let resp = node
            .peers
            .http()
            .get(target.join(api::DESCRIPTOR))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = bounded(resp, MAX_DESCRIPTOR_BYTES).await?;
        Ok(Relayed { status, body })
    };
    within_timeout(fetch).await
}

/// Carries an encapsulated request to `target`'s gateway and returns its encapsulated
/// answer, both opaque here.
pub async fn relay_request(
    node: &Node,
    target: &NodeUrl,
    enc: Bytes,
) -> Result<Bytes, ObliviousError> {
    check_target(node, target)?;
    if enc.len() > MAX_ENCAPSULATED_REQUEST {
        return Err(ObliviousError::BadRequest(
            "encapsulated request too large".into(),
        ));
    }
    let forward = async {
        let resp = node
            .peers
            .http()
            .post(target.join(api::OHTTP_GATEWAY))
            .header(reqwest::header::CONTENT_TYPE, REQUEST_MEDIA_TYPE)
            .body(enc)
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(ObliviousError::TargetStatus {
                status: resp.status().as_u16(),
            });
        }
        bounded(resp, MAX_ENCAPSULATED_RESPONSE).await
    };
    within_timeout(forward).await
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } }))
        .expect("invariant: JSON values serialise")
}

/// The answer to one opened lookup: the descriptor, a stored record, or a JSON error.
async fn answer_lookup(node: &Node, path: &str) -> Result<LookupResponse, StoreError> {
    if path == api::DESCRIPTOR {
        return Ok(LookupResponse {
            status: 200,
            body: node.descriptor.to_vec(),
        });
    }
    let address = match api::segments_under(path, api::RECORDS).as_deref() {
        Some([segment]) => sealpost_proto::Address::parse(segment).ok(),
        _ => {
            return Ok(LookupResponse {
                status: 404,
                body: error_body("not_found", "only records and the descriptor are served"),
            });
        }
    };
    let Some(address) = address else {
        return Ok(LookupResponse {
            status: 400,
            body: error_body("bad_request", "not an address"),
        });
    };
    Ok(
        match node.store.record(address.as_str().to_string()).await? {
            Some(bytes) => LookupResponse {
                status: 200,
                body: bytes.to_vec(),
            },
            None => LookupResponse {
                status: 404,
                body: error_body("unknown_address", "no record for this address"),
            },
        },
    )
}

/// Opens an encapsulated lookup relayed to this node and returns the encapsulated answer.
pub async fn answer(node: &Node, enc: &[u8]) -> Result<Vec<u8>, ObliviousError> {
    let (request, sealer) = node
        .gateway_key
        .open(enc)
        .map_err(|e| ObliviousError::BadRequest(e.to_string()))?;
    if let Some(access) = &node.access {
        access.record(None, &format!("oblivious GET {}", request.path));
    }
    let response = answer_lookup(node, &request.path).await?;
    sealer
        .seal(&response)
        .map_err(|e| ObliviousError::BadRequest(e.to_string()))
}
