//! One client of the node's HTTP API (`spec/api.md`) for tests and benchmarks, built on
//! the `proto` types: descriptor, register, challenge and token, records, submit, list, get,
//! ack, their batched forms, peer delivery signed with RFC 9421, metrics.
//!
//! A call that reaches the node returns its status and JSON body ([`Answer`]), so that a
//! test can check refusals; only a failed transport (or, for the helpers that return a
//! value, an unexpected answer) is an [`ApiError`].

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use sealpost_proto::api;
use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::device;
use sealpost_proto::identity::{Keyring, cert_to_armored};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::sign_detached;
use sealpost_proto::{DeviceId, MailboxId, NodeUrl};
use serde_json::Value;

/// Status and parsed JSON body (`Value::Null` when the body is not JSON).
pub type Answer = (StatusCode, Value);

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what}: {source}")]
    Http {
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        body: Value,
    },
    #[error("{what}: unexpected answer: {detail}")]
    BadAnswer { what: &'static str, detail: String },
}

fn http(what: &'static str) -> impl FnOnce(reqwest::Error) -> ApiError {
    move |source| ApiError::Http { what, source }
}

fn bad(what: &'static str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::BadAnswer {
        what,
        detail: detail.to_string(),
    }
}

/// Reads a response into an [`Answer`] (a body that cannot be read counts as empty).
pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The `error.code` of an error answer.
pub fn code(a: &Answer) -> &str {
    a.1["error"]["code"].as_str().unwrap_or("(no error code)")
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A client of the node API (one `reqwest::Client`, cheap to clone).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    /// No proxy, a [`REQUEST_TIMEOUT`] per request.
    fn default() -> Self {
        Api {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("invariant: a client without TLS settings builds"),
        }
    }
}

impl Api {
    pub fn new(http: reqwest::Client) -> Api {
        Api { http }
    }

    async fn send(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        Ok(answer(req.send().await.map_err(http(what))?).await)
    }

    /// The node's verified descriptor and its encryption certificate.
    pub async fn descriptor(&self, node: &NodeUrl) -> Result<(NodeDescriptor, Cert), ApiError> {
        const WHAT: &str = "descriptor";
        let resp = self
            .http
            .get(node.join(api::DESCRIPTOR))
            .send()
            .await
            .map_err(http(WHAT))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http(WHAT))?;
        if !status.is_success() {
            return Err(ApiError::Refused {
                what: WHAT,
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
        }
        let signed = SignedDescriptor::decode(&bytes).map_err(|e| bad(WHAT, e))?;
        signed.verify().map_err(|e| bad(WHAT, e))
    }

    /// `POST /v1/accounts` with `cert` (and an invite code).
    pub async fn register(
        &self,
        node: &NodeUrl,
        cert: &Cert,
        invite: Option<&str>,
    ) -> Result<Answer, ApiError> {
        let mut body = serde_json::json!({ "cert": cert_to_armored(cert) });
        if let Some(i) = invite {
            body["invite"] = i.into();
        }
        let req = self
            .http
            .post(node.join(api::ACCOUNTS))
            .body(body.to_string());
        self.send("register", req).await
    }

    /// Registers `cert` and returns its mailbox (new or existing).
    pub async fn mailbox(&self, node: &NodeUrl, cert: &Cert) -> Result<MailboxId, ApiError> {
        const WHAT: &str = "register";
        let (status, body) = self.register(node, cert, None).await?;
        if !status.is_success() {
            return Err(ApiError::Refused {
                what: WHAT,
                status,
                body,
            });
        }
        body["mailbox"]
            .as_str()
            .and_then(|m| MailboxId::from_hex(m).ok())
            .ok_or_else(|| bad(WHAT, &body))
    }

    /// `POST /v1/auth/challenge`.
    pub async fn challenge(&self, node: &NodeUrl, mailbox: &MailboxId) -> Result<Answer, ApiError> {
        let req = self
            .http
            .post(node.join(api::CHALLENGE))
            .body(serde_json::json!({ "mailbox": mailbox.to_hex() }).to_string());
        self.send("challenge", req).await
    }

    /// `POST /v1/auth/token`: answers a challenge with `keys`, signing for `signed_url`
    /// (normally `node`).
    pub async fn answer_challenge(
        &self,
        node: &NodeUrl,
        signed_url: &NodeUrl,
        mailbox: &MailboxId,
        nonce_hex: &str,
        keys: &Keyring,
    ) -> Result<Answer, ApiError> {
        const WHAT: &str = "token";
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|e| bad(WHAT, e))?;
        let sig = sign_detached(&challenge_statement(signed_url, mailbox, &nonce), keys)
            .map_err(|e| bad(WHAT, e))?;
        let body = serde_json::json!({
            "mailbox": mailbox.to_hex(),
            "nonce": nonce_hex,
            "signature": B64.encode(sig),
        });
        let req = self.http.post(node.join(api::TOKEN)).body(body.to_string());
        self.send(WHAT, req).await
    }

    /// A bearer token for `mailbox`: challenge, signed statement, token.
    pub async fn token(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        keys: &Keyring,
    ) -> Result<String, ApiError> {
        let (status, body) = self.challenge(node, mailbox).await?;
        if status != StatusCode::OK {
            return Err(ApiError::Refused {
                what: "challenge",
                status,
                body,
            });
        }
        let nonce = body["nonce"]
            .as_str()
            .ok_or_else(|| bad("challenge", &body))?;
        let (status, body) = self
            .answer_challenge(node, node, mailbox, nonce, keys)
            .await?;
        if status != StatusCode::OK {
            return Err(ApiError::Refused {
                what: "token",
                status,
                body,
            });
        }
        body["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad("token", &body))
    }

    /// `PUT /v1/records/ADDRESS` with an encoded signed record.
    pub async fn put_record(
        &self,
        node: &NodeUrl,
        address: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let req = self.http.put(node.join(&api::record(address))).body(body);
        self.send("put record", req).await
    }

    /// `POST /v1/submit` with an encoded hop.
    pub async fn submit(
        &self,
        node: &NodeUrl,
        token: Option<&str>,
        hop: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let req = bearer(self.http.post(node.join(api::SUBMIT)).body(hop), token);
        self.send("submit", req).await
    }

    /// `GET /v1/mailbox/MAILBOX`.
    pub async fn list(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        token: Option<&str>,
    ) -> Result<Answer, ApiError> {
        let req = bearer(self.http.get(node.join(&api::mailbox(mailbox))), token);
        self.send("list", req).await
    }

    /// The listed `(seq, id)` pairs.
    pub async fn items(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        token: &str,
    ) -> Result<Vec<(u64, String)>, ApiError> {
        const WHAT: &str = "list";
        let (status, body) = self.list(node, mailbox, Some(token)).await?;
        if status != StatusCode::OK {
            return Err(ApiError::Refused {
                what: WHAT,
                status,
                body,
            });
        }
        let items = body["items"].as_array().ok_or_else(|| bad(WHAT, &body))?;
        items
            .iter()
            .map(|i| match (i["seq"].as_u64(), i["id"].as_str()) {
                (Some(seq), Some(id)) => Ok((seq, id.to_string())),
                _ => Err(bad(WHAT, i)),
            })
            .collect()
    }

    /// `GET /v1/mailbox/MAILBOX/SEQ`: the raw response (the body is the envelope).
    pub async fn get(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> Result<reqwest::Response, ApiError> {
        let req = bearer(
            self.http.get(node.join(&api::envelope(mailbox, seq))),
            token,
        );
        req.send().await.map_err(http("get"))
    }

    /// `DELETE /v1/mailbox/MAILBOX/SEQ`.
    pub async fn ack(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> Result<Answer, ApiError> {
        let req = bearer(
            self.http.delete(node.join(&api::envelope(mailbox, seq))),
            token,
        );
        self.send("ack", req).await
    }

    /// `POST /v1/mailbox/MAILBOX/fetch` with the JSON `body` (`{"seqs": [...]}`, or
    /// anything else to test refusals): the raw response (an `EnvelopeBatch` on success).
    pub async fn fetch_batch(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        body: &Value,
        token: Option<&str>,
    ) -> Result<reqwest::Response, ApiError> {
        let req = bearer(
            self.http
                .post(node.join(&api::mailbox_fetch(mailbox)))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            token,
        );
        req.send().await.map_err(http("fetch batch"))
    }

    /// `POST /v1/mailbox/MAILBOX/ack` with the JSON `body` (`{"seqs": [...]}`).
    pub async fn ack_batch(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Answer, ApiError> {
        let req = bearer(
            self.http
                .post(node.join(&api::mailbox_ack(mailbox)))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            token,
        );
        self.send("ack batch", req).await
    }

    /// A bearer token for device `key` of `mailbox` (`spec/api.md` §Devices): challenge,
    /// the device statement signed with the device's Ed25519 key, token.
    pub async fn device_token(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        key: &SigningKey,
    ) -> Result<Answer, ApiError> {
        let (status, body) = self.challenge(node, mailbox).await?;
        if status != StatusCode::OK {
            return Ok((status, body));
        }
        let nonce_hex = body["nonce"]
            .as_str()
            .ok_or_else(|| bad("challenge", &body))?;
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|e| bad("challenge", e))?;
        let id = DeviceId::of_key(&key.verifying_key().to_bytes());
        let sig = device::sign(key, &device::device_statement(node, mailbox, &id, &nonce));
        let body = serde_json::json!({
            "mailbox": mailbox.to_hex(),
            "nonce": nonce_hex,
            "signature": B64.encode(sig),
            "device": id.to_hex(),
        });
        let req = self
            .http
            .post(node.join("/v1/auth/token"))
            .body(body.to_string());
        self.send("device token", req).await
    }

    /// `POST /v1/devices`: registers device `key` named `name`.
    pub async fn add_device(
        &self,
        node: &NodeUrl,
        token: Option<&str>,
        key: &SigningKey,
        name: &str,
    ) -> Result<Answer, ApiError> {
        let body = serde_json::json!({
            "key": hex::encode(key.verifying_key().to_bytes()),
            "name": name,
        });
        let req = bearer(
            self.http
                .post(node.join("/v1/devices"))
                .body(body.to_string()),
            token,
        );
        self.send("add device", req).await
    }

    /// `GET /v1/devices`.
    pub async fn devices(&self, node: &NodeUrl, token: Option<&str>) -> Result<Answer, ApiError> {
        let req = bearer(self.http.get(node.join("/v1/devices")), token);
        self.send("devices", req).await
    }

    /// `DELETE /v1/devices/ID`.
    pub async fn remove_device(
        &self,
        node: &NodeUrl,
        token: Option<&str>,
        id: &DeviceId,
    ) -> Result<Answer, ApiError> {
        let req = bearer(
            self.http.delete(node.join(&format!("/v1/devices/{id}"))),
            token,
        );
        self.send("remove device", req).await
    }

    /// A request under `/v1/links` with a binary body; answers status and raw body.
    pub async fn link(
        &self,
        method: reqwest::Method,
        node: &NodeUrl,
        path: &str,
        token: Option<&str>,
        secret: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        let mut req = bearer(
            self.http
                .request(method, node.join(&format!("/v1/links{path}")))
                .body(body),
            token,
        );
        if let Some(s) = secret {
            req = req.header("x-sealpost-link-secret", s);
        }
        let resp = req.send().await.map_err(http("link"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http("link"))?;
        Ok((status, bytes))
    }

    /// `POST /v1/deliver` with `payload`, signed by `key` as a peer node would (RFC 9421).
    pub async fn deliver(
        &self,
        node: &NodeUrl,
        key: &SigningKey,
        payload: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let h = sealpost_proto::httpsig::sign_request(
            key,
            "POST",
            node.authority(),
            api::DELIVER,
            &payload,
            now(),
        );
        let req = self
            .http
            .post(node.join(api::DELIVER))
            .header("content-digest", h.content_digest)
            .header("signature-input", h.signature_input)
            .header("signature", h.signature)
            .body(payload);
        self.send("deliver", req).await
    }

    /// `POST /v1/forward` with an encoded envelope, signed by `key` as another home of its
    /// mailbox would (RFC 9421).
    pub async fn forward(
        &self,
        node: &NodeUrl,
        key: &SigningKey,
        envelope: Vec<u8>,
    ) -> Result<Answer, ApiError> {
        let h = sealpost_proto::httpsig::sign_request(
            key,
            "POST",
            node.authority(),
            api::FORWARD,
            &envelope,
            now(),
        );
        let req = self
            .http
            .post(node.join(api::FORWARD))
            .header("content-digest", h.content_digest)
            .header("signature-input", h.signature_input)
            .header("signature", h.signature)
            .body(envelope);
        self.send("forward", req).await
    }

    /// The value of one sample line of `/metrics` (0 when the series is absent).
    pub async fn metric(&self, node: &NodeUrl, series: &str) -> Result<f64, ApiError> {
        const WHAT: &str = "metrics";
        let text = self
            .http
            .get(node.join(api::METRICS))
            .send()
            .await
            .map_err(http(WHAT))?
            .text()
            .await
            .map_err(http(WHAT))?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0))
    }
}

fn bearer(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// A fresh random Ed25519 key, as a peer node's.
pub fn peer_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}
