//! Oblivious lookups (`spec/protocol.md` §11) from the client's side: a record or descriptor
//! of a node that is not one of the user's homes is asked for through one of those homes,
//! so that the device connects to its own homes only. Descriptors come through the home's
//! `GET /v1/relay/descriptor` (public; verified here as always); records are encrypted to
//! the target node's OHTTP key (from its verified descriptor) as padded Binary HTTP and
//! carried by the home's `POST /v1/relay/ohttp`, which sees neither the address asked for
//! nor the answer.

use sealpost_proto::api;
use sealpost_proto::codec::Codec;
use sealpost_proto::oblivious::{
    LookupRequest, MAX_ENCAPSULATED_RESPONSE, REQUEST_MEDIA_TYPE, seal_request,
};
use sealpost_proto::record::SignedRecord;
use sealpost_proto::{Address, NodeUrl};
use serde::Deserialize;

use crate::api::{MAX_SIGNED_BYTES, Net, VerifiedNode};
use crate::error::{Error, NetFailure, Result, one_line};
use crate::progress::NoTransfer;

/// The failure a home reports when the node it was to ask could not be reached, by the
/// error code of its answer (`spec/api.md`, "Oblivious lookups").
fn relayed_failure(code: &str) -> Option<NetFailure> {
    Some(match code {
        "target_refused" => NetFailure::Refused,
        "target_no_such_host" => NetFailure::NoSuchHost,
        "target_timed_out" => NetFailure::TimedOut,
        "target_unreachable" => NetFailure::Other,
        _ => return None,
    })
}

/// A home's refusal that concerns the node asked (`target`), not the home: it could not
/// reach it. Anything else stays the home's error.
fn blame_target(home: &NodeUrl, target: &NodeUrl, e: Error) -> Error {
    match e {
        Error::Node {
            url,
            status,
            code,
            message,
        } if url == home.as_str() => match relayed_failure(&code) {
            Some(failure) => Error::Unreachable {
                url: target.to_string(),
                reason: message,
                failure,
            },
            // The target answered, but not with an encapsulated answer: the target's
            // failure, not the home's (so no other home, and never the target directly, is
            // tried because of it).
            None if code == "target_bad_answer" => Error::Node {
                url: target.to_string(),
                status,
                code,
                message,
            },
            None => Error::Node {
                url,
                status,
                code,
                message,
            },
        },
        other => other,
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    #[serde(default)]
    message: String,
}

impl Net {
    /// `target`'s descriptor, fetched by `home` and verified here. A status the target
    /// answered with comes back as [`Error::Node`] of `target`, a target the home could not
    /// reach as [`Error::Unreachable`] of `target`: the same answers as asking it directly.
    pub async fn descriptor_via(&self, home: &NodeUrl, target: &NodeUrl) -> Result<VerifiedNode> {
        let req = self
            .http
            .get(home.join(api::RELAY_DESCRIPTOR))
            .header(api::TARGET_HEADER, target.as_str())
            .timeout(self.config().timeout);
        let resp = self.send(home, req).await?;
        let resp = match self.check(home, resp).await {
            Ok(r) => r,
            Err(e @ Error::Node { .. }) => {
                return Err(match blame_target(home, target, e) {
                    // The target's own answer, passed on by the home.
                    Error::Node {
                        status,
                        code,
                        message,
                        ..
                    } => Error::Node {
                        url: target.to_string(),
                        status,
                        code,
                        message,
                    },
                    other => other,
                });
            }
            Err(e) => return Err(e),
        };
        let bytes = self
            .body(target, resp, MAX_SIGNED_BYTES, &NoTransfer)
            .await?;
        VerifiedNode::from_bytes(target, &bytes)
    }

    /// The record of `address` at `target` (whose verified descriptor gives its OHTTP key),
    /// asked obliviously through `home`; `unknown_address` becomes [`Error::UnknownAddress`].
    pub async fn get_record_via(
        &self,
        home: &NodeUrl,
        target: &VerifiedNode,
        address: &Address,
    ) -> Result<SignedRecord> {
        let url = &target.descriptor.url;
        let key = target.descriptor.ohttp_key.as_deref().ok_or_else(|| {
            Error::protocol(
                url,
                "its descriptor offers no oblivious lookups (an older node), and this client does not look records up directly at nodes other than its homes",
            )
        })?;
        let request = LookupRequest {
            path: api::record(address),
        };
        let (enc, opener) = seal_request(key, url.authority(), &request)
            .map_err(|e| Error::protocol(url, e.to_string()))?;
        let req = self
            .http
            .post(home.join(api::RELAY_OHTTP))
            .header(api::TARGET_HEADER, url.as_str())
            .header(reqwest::header::CONTENT_TYPE, REQUEST_MEDIA_TYPE)
            .body(enc)
            .timeout(self.config().timeout);
        let resp = self.send(home, req).await?;
        let resp = self
            .check(home, resp)
            .await
            .map_err(|e| blame_target(home, url, e))?;
        let sealed = self
            .body(home, resp, MAX_ENCAPSULATED_RESPONSE, &NoTransfer)
            .await?;
        let answer = opener
            .open(&sealed)
            .map_err(|e| Error::protocol(url, format!("oblivious answer: {e}")))?;
        if answer.status != 200 {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
                Ok(b) => (one_line(&b.error.code), one_line(&b.error.message)),
                Err(_) => (format!("http_{}", answer.status), String::new()),
            };
            if answer.status == 404 && code == "unknown_address" {
                return Err(Error::UnknownAddress {
                    address: address.to_string(),
                    node: url.to_string(),
                });
            }
            return Err(Error::Node {
                url: url.to_string(),
                status: answer.status,
                code,
                message,
            });
        }
        SignedRecord::decode(&answer.body).map_err(|e| Error::BadRecord {
            what: "mailbox record",
            address: address.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_that_cannot_reach_the_target_blames_the_target() {
        let home = NodeUrl::parse("http://home.test").unwrap();
        let target = NodeUrl::parse("http://target.test").unwrap();
        let node_error = |url: &NodeUrl, code: &str| Error::Node {
            url: url.to_string(),
            status: 502,
            code: code.into(),
            message: "m".into(),
        };
        for (code, failure) in [
            ("target_refused", NetFailure::Refused),
            ("target_no_such_host", NetFailure::NoSuchHost),
            ("target_timed_out", NetFailure::TimedOut),
            ("target_unreachable", NetFailure::Other),
        ] {
            match blame_target(&home, &target, node_error(&home, code)) {
                Error::Unreachable {
                    url, failure: f, ..
                } => {
                    assert_eq!(url, target.to_string());
                    assert_eq!(f, failure, "{code}");
                }
                other => panic!("{code}: {other}"),
            }
        }
        assert!(matches!(
            blame_target(&home, &target, node_error(&home, "target_bad_answer")),
            Error::Node { url, .. } if url == target.to_string()
        ));
        // The home's own refusals stay the home's.
        assert!(matches!(
            blame_target(&home, &target, node_error(&home, "rate_limited")),
            Error::Node { url, .. } if url == home.to_string()
        ));
    }
}
