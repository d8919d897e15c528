//! The node HTTP API (`spec/api.md`) from the client's side: descriptors, accounts, records,
//! challenge/token authentication (tokens cached in memory for the run), submit, and the
//! mailbox. Every body read is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use sealpost_proto::api;
use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::batch::{BatchEntry, EnvelopeBatch, MAX_BATCH_ANSWER_BYTES};
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::identity::Keyring;
use sealpost_proto::limits::{MAX_ENVELOPE_BYTES, MAX_SIGNATURE_BYTES, MAX_SIGNED_BODY_BYTES};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{SignedRecord, sign_detached};
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};

use crate::dns::Dns;
use crate::error::{Error, NetFailure, Result, one_line};
use crate::progress::{NoTransfer, ProgressBody, Transfer};

/// Largest JSON answer we read from a node.
const MAX_JSON_BYTES: usize = 256 * 1024;
/// Largest signed record or descriptor answer.
pub(crate) const MAX_SIGNED_BYTES: usize = MAX_SIGNED_BODY_BYTES + MAX_SIGNATURE_BYTES + 64;
/// A token is renewed this long before the node says it expires.
const TOKEN_MARGIN_SECS: u64 = 30;
/// Page size of mailbox listings (the spec's maximum).
pub const LIST_LIMIT: u32 = 1000;

/// Largest answer of a batched fetch: the node's budget, or one envelope of the largest
/// size with its framing.
const MAX_BATCH_ANSWER: usize = if MAX_BATCH_ANSWER_BYTES > MAX_ENVELOPE_BYTES + 64 {
    MAX_BATCH_ANSWER_BYTES
} else {
    MAX_ENVELOPE_BYTES + 64
};

/// Whether a node's refusal says it has no batched mailbox endpoints: a node from before
/// them answers `404`, or `405` (it routes `POST .../fetch` as a sequence number).
fn no_batches(e: &Error) -> bool {
    matches!(
        e,
        Error::Node {
            status: 404 | 405,
            ..
        }
    )
}

/// Largest CA certificate file read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Network settings of one run.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Connecting, and each control request as a whole.
    pub timeout: Duration,
    /// PEM files of certificate authorities trusted besides the built-in roots
    /// (webpki-roots) and the system's trust store (`--cacert`, profile `tls.ca_certs`).
    pub ca_certs: Vec<PathBuf>,
    /// The DNS server to ask instead of the system's (`--dns-server`, profile
    /// `dns.server`); it then also resolves node host names.
    pub dns_server: Option<SocketAddr>,
    /// The local address connections are made from (`--source-address`); unset: the
    /// system picks.
    pub source_address: Option<std::net::IpAddr>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            timeout: Duration::from_secs(30),
            ca_certs: Vec::new(),
            dns_server: None,
            source_address: None,
        }
    }
}

/// The certificates of a PEM file (a bundle may hold several).
fn load_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    use std::io::Read;
    let bad = |reason: String| Error::BadCaCert {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| bad(chain(&e)))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    Ok(certs)
}

/// What `POST /v1/accounts` answers.
#[derive(Clone, Debug, Deserialize)]
pub struct Registration {
    pub mailbox: MailboxId,
    pub node_key: String,
    pub url: String,
}

/// One item of a mailbox listing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ListItem {
    pub seq: u64,
    pub id: EnvelopeId,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
struct Listing {
    items: Vec<ListItem>,
    #[serde(default)]
    next: Option<u64>,
}

#[derive(Deserialize)]
struct ApiError {
    error: ApiErrorBody,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Challenge {
    nonce: String,
}

#[derive(Deserialize)]
struct Token {
    token: String,
    expires: u64,
}

/// A verified node descriptor and its encryption certificate.
#[derive(Clone, Debug)]
pub struct VerifiedNode {
    pub descriptor: NodeDescriptor,
    pub cert: Cert,
    pub signed: SignedDescriptor,
}

impl VerifiedNode {
    /// Decodes and verifies the descriptor `node` answered with.
    pub(crate) fn from_bytes(node: &NodeUrl, bytes: &[u8]) -> Result<VerifiedNode> {
        let signed = SignedDescriptor::decode(bytes)
            .map_err(|e| Error::protocol(node, format!("descriptor: {e}")))?;
        let (descriptor, cert) = signed
            .verify()
            .map_err(|e| Error::protocol(node, format!("descriptor: {e}")))?;
        Ok(VerifiedNode {
            descriptor,
            cert,
            signed,
        })
    }
}

/// Bearer tokens of the run by (node, mailbox), with when each expires.
type TokenCache = Mutex<HashMap<(NodeUrl, MailboxId), (String, u64)>>;

/// HTTP access to nodes, with the run's token cache. A clone is another handle to the same
/// connection pool and token cache: each part of a [`crate::Client`] that talks to nodes
/// holds one.
#[derive(Clone)]
pub struct Net {
    pub(crate) http: reqwest::Client,
    config: NetConfig,
    dns: Dns,
    tokens: Arc<TokenCache>,
    /// The device key this profile signs in with (`spec/api.md` §Devices); `None`: the
    /// account key (a profile from before devices). Shared by every clone.
    device: Arc<std::sync::RwLock<Option<Arc<ed25519_dalek::SigningKey>>>>,
}

fn now() -> u64 {
    crate::now()
}

/// The most specific cause of `e` (e.g. "Connection refused (os error 111)"), on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

/// What the resolver says when a name does not exist (`EAI_NONAME`, `EAI_NODATA`), in the C
/// locale Rust programs run getaddrinfo in: glibc, musl, BSD and macOS. Anything else a
/// lookup says (e.g. "Temporary failure in name resolution") proves nothing.
const NO_SUCH_HOST: &[&str] = &[
    "name or service not known",
    "no address associated with hostname",
    "name does not resolve",
    "nodename nor servname provided",
];

/// Whether a lookup error's text says that the name does not exist.
pub(crate) fn says_no_such_host(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.starts_with("failed to lookup address information")
        && NO_SUCH_HOST.iter().any(|n| m.contains(n))
}

/// Classifies a failed request by its causes: the OS's connection-refused error, the
/// resolver's "no such name", a timeout; [`NetFailure::Other`] for everything else.
fn net_failure(e: &reqwest::Error) -> NetFailure {
    if e.is_timeout() {
        return NetFailure::TimedOut;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<hickory_resolver::ResolveError>() {
            if crate::dns::is_no_such_name(r) {
                return NetFailure::NoSuchHost;
            }
            return NetFailure::Other;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return NetFailure::Refused,
                std::io::ErrorKind::TimedOut => return NetFailure::TimedOut,
                _ if says_no_such_host(&io.to_string()) => return NetFailure::NoSuchHost,
                _ => {}
            }
        }
        cur = err.source();
    }
    NetFailure::Other
}

/// Whether a TLS certificate check failed on the way to `e` (e.g. `UnknownIssuer`: a
/// private CA the client was not told about).
fn bad_certificate(e: &reqwest::Error) -> bool {
    /// The rustls error `err` is or wraps: io::Error hides the error it wraps from
    /// source() (and the TLS stack wraps io::Errors in io::Errors), so look inside.
    fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
        rustls_error(inner)
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = rustls_error(err) {
            return true;
        }
        cur = err.source();
    }
    false
}

impl Net {
    /// The HTTP client (rustls with ring; roots: webpki-roots, the system's trust store,
    /// `config.ca_certs`) and the DNS resolver of a run.
    pub fn new(config: NetConfig) -> Result<Self> {
        let dns = Dns::new(config.dns_server, config.timeout);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .local_address(config.source_address)
            .user_agent(concat!("sealpost/", env!("CARGO_PKG_VERSION")));
        for path in &config.ca_certs {
            for cert in load_ca_certs(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(resolver) = dns.for_http() {
            builder = builder.dns_resolver(resolver);
        }
        let http = builder.build().map_err(|e| match config.ca_certs.first() {
            Some(path) => Error::BadCaCert {
                path: path.clone(),
                reason: chain(&e),
            },
            None => Error::Unreachable {
                url: "-".into(),
                reason: chain(&e),
                failure: NetFailure::Other,
            },
        })?;
        Ok(Net {
            http,
            config,
            dns,
            tokens: Arc::new(Mutex::new(HashMap::new())),
            device: Arc::default(),
        })
    }

    /// Signs in with `key` from now on (every clone of this `Net`); tokens of the account
    /// key are forgotten.
    pub fn set_device(&self, key: ed25519_dalek::SigningKey) {
        *self
            .device
            .write()
            .expect("invariant: device lock not poisoned") = Some(Arc::new(key));
        self.tokens
            .lock()
            .expect("invariant: token cache lock not poisoned")
            .clear();
    }

    /// The device this run signs in as.
    pub fn device(&self) -> Option<sealpost_proto::DeviceId> {
        self.device_key()
            .map(|k| sealpost_proto::DeviceId::of_key(&k.verifying_key().to_bytes()))
    }

    fn device_key(&self) -> Option<Arc<ed25519_dalek::SigningKey>> {
        self.device
            .read()
            .expect("invariant: device lock not poisoned")
            .clone()
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    fn unreachable(url: &NodeUrl, e: reqwest::Error) -> Error {
        let e = e.without_url();
        let failure = net_failure(&e);
        let reason = if failure == NetFailure::TimedOut {
            "timed out".to_string()
        } else if bad_certificate(&e) {
            format!(
                "{}; the node's TLS certificate is not signed by an authority this client trusts: if its operator runs their own CA, give its certificate with --cacert FILE (or tls.ca_certs in the profile)",
                chain(&e)
            )
        } else {
            chain(&e)
        };
        Error::Unreachable {
            url: url.to_string(),
            reason,
            failure,
        }
    }

    pub(crate) async fn send(
        &self,
        node: &NodeUrl,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| Self::unreachable(node, e))
    }

    /// Reads at most `max` bytes of body, reporting progress.
    pub(crate) async fn body(
        &self,
        node: &NodeUrl,
        mut resp: reqwest::Response,
        max: usize,
        t: &dyn Transfer,
    ) -> Result<Vec<u8>> {
        if let Some(len) = resp.content_length()
            && len > max as u64
        {
            return Err(Error::protocol(
                node,
                format!("answer of {len} bytes exceeds the limit of {max}"),
            ));
        }
        let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| Self::unreachable(node, e))? {
            if out.len() + chunk.len() > max {
                return Err(Error::protocol(
                    node,
                    format!("answer exceeds the limit of {max} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
            t.advance(chunk.len() as u64);
        }
        t.finish();
        Ok(out)
    }

    /// Turns a non-success answer into [`Error::Node`].
    pub(crate) async fn check(
        &self,
        node: &NodeUrl,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = self
            .body(node, resp, MAX_JSON_BYTES, &NoTransfer)
            .await
            .unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => (one_line(&e.error.code), one_line(&e.error.message)),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                one_line(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
            ),
        };
        Err(Error::Node {
            url: node.to_string(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    pub(crate) async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        node: &NodeUrl,
        resp: reqwest::Response,
    ) -> Result<T> {
        let bytes = self.body(node, resp, MAX_JSON_BYTES, &NoTransfer).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::protocol(node, format!("unexpected JSON: {e}")))
    }

    /// `GET /.well-known/sealpost/node`, verified. The caller compares the node key.
    pub async fn descriptor(&self, node: &NodeUrl) -> Result<VerifiedNode> {
        let req = self
            .http
            .get(node.join(api::DESCRIPTOR))
            .timeout(self.config.timeout);
        let resp = self.check(node, self.send(node, req).await?).await?;
        let bytes = self.body(node, resp, MAX_SIGNED_BYTES, &NoTransfer).await?;
        VerifiedNode::from_bytes(node, &bytes)
    }

    /// `POST /v1/accounts`.
    pub async fn register(
        &self,
        node: &NodeUrl,
        cert_armored: &str,
        invite: Option<&str>,
    ) -> Result<Registration> {
        let mut body = json!({ "cert": cert_armored });
        if let Some(code) = invite {
            body["invite"] = json!(code);
        }
        let req = self
            .http
            .post(node.join(api::ACCOUNTS))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(self.config.timeout);
        let resp = self.check(node, self.send(node, req).await?).await?;
        self.json(node, resp).await
    }

    /// `PUT /v1/records/{address}`.
    pub async fn publish_record(
        &self,
        node: &NodeUrl,
        address: &Address,
        record: &SignedRecord,
    ) -> Result<()> {
        let req = self
            .http
            .put(node.join(&api::record(address)))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(record.encode())
            .timeout(self.config.timeout);
        self.check(node, self.send(node, req).await?).await?;
        Ok(())
    }

    /// `GET /v1/records/{address}`; `unknown_address` becomes [`Error::UnknownAddress`].
    pub async fn get_record(&self, node: &NodeUrl, address: &Address) -> Result<SignedRecord> {
        let req = self
            .http
            .get(node.join(&api::record(address)))
            .timeout(self.config.timeout);
        let resp = match self.check(node, self.send(node, req).await?).await {
            Err(Error::Node { status: 404, .. }) => {
                return Err(Error::UnknownAddress {
                    address: address.to_string(),
                    node: node.to_string(),
                });
            }
            other => other?,
        };
        let bytes = self.body(node, resp, MAX_SIGNED_BYTES, &NoTransfer).await?;
        SignedRecord::decode(&bytes).map_err(|e| Error::BadRecord {
            what: "mailbox record",
            address: address.to_string(),
            reason: e.to_string(),
        })
    }

    /// A bearer token for `mailbox` on `node`, from the cache or a fresh challenge.
    async fn token(&self, node: &NodeUrl, mailbox: MailboxId, keys: &Keyring) -> Result<String> {
        let key = (node.clone(), mailbox);
        if let Some((t, exp)) = self
            .tokens
            .lock()
            .expect("invariant: token cache lock not poisoned")
            .get(&key)
            && *exp > now() + TOKEN_MARGIN_SECS
        {
            return Ok(t.clone());
        }
        let req = self
            .http
            .post(node.join(api::CHALLENGE))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json!({ "mailbox": mailbox.to_hex() }).to_string())
            .timeout(self.config.timeout);
        let resp = self.check(node, self.send(node, req).await?).await?;
        let challenge: Challenge = self.json(node, resp).await?;
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(&challenge.nonce, &mut nonce)
            .map_err(|_| Error::protocol(node, "challenge nonce is not 64 hex digits"))?;
        let body = match self.device_key() {
            None => {
                let statement = challenge_statement(node, &mailbox, &nonce);
                let signature = sign_detached(&statement, keys)?;
                json!({
                    "mailbox": mailbox.to_hex(),
                    "nonce": challenge.nonce,
                    "signature": base64::engine::general_purpose::STANDARD.encode(signature),
                })
            }
            Some(key) => {
                use sealpost_proto::device::{device_statement, sign};
                let id = sealpost_proto::DeviceId::of_key(&key.verifying_key().to_bytes());
                let signature = sign(&key, &device_statement(node, &mailbox, &id, &nonce));
                json!({
                    "mailbox": mailbox.to_hex(),
                    "nonce": challenge.nonce,
                    "signature": base64::engine::general_purpose::STANDARD.encode(signature),
                    "device": id.to_hex(),
                })
            }
        };
        let req = self
            .http
            .post(node.join(api::TOKEN))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(self.config.timeout);
        let resp = self.check(node, self.send(node, req).await?).await?;
        let token: Token = self.json(node, resp).await?;
        if token.token.is_empty() || !token.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::protocol(node, "token is not printable ASCII"));
        }
        self.tokens
            .lock()
            .expect("invariant: token cache lock not poisoned")
            .insert(key, (token.token.clone(), token.expires));
        Ok(token.token)
    }

    /// Sends an authenticated request built by `build`; on `401` renews the token once.
    pub(crate) async fn authed(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        build: &(dyn Fn(&str) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let token = self.token(node, mailbox, keys).await?;
            let resp = self.send(node, build(&token)).await?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.tokens
                    .lock()
                    .expect("invariant: token cache lock not poisoned")
                    .remove(&(node.clone(), mailbox));
                continue;
            }
            return self.check(node, resp).await;
        }
        unreachable!("the loop returns on its second attempt")
    }

    pub(crate) fn request(
        &self,
        method: Method,
        url: String,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(token)
    }

    /// `POST /v1/submit` of an encoded hop wrapper; returns the node's queue id.
    pub async fn submit(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        hop: Bytes,
        progress: &(dyn Fn() -> Box<dyn Transfer> + Sync),
    ) -> Result<String> {
        #[derive(Deserialize)]
        struct Queued {
            queued: String,
        }
        let url = node.join(api::SUBMIT);
        let build = |token: &str| {
            self.request(Method::POST, url.clone(), token)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap(ProgressBody::new(
                    hop.clone(),
                    progress(),
                )))
        };
        let resp = self.authed(node, mailbox, keys, &build).await?;
        let q: Queued = self.json(node, resp).await?;
        Ok(q.queued)
    }

    /// Every item in `mailbox`, oldest first (all pages).
    pub async fn list_all(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
    ) -> Result<Vec<ListItem>> {
        let mut out: Vec<ListItem> = Vec::new();
        let mut after = 0u64;
        loop {
            let url = node.join(&format!(
                "{}?after={after}&limit={LIST_LIMIT}",
                api::mailbox(mailbox)
            ));
            let timeout = self.config.timeout;
            let build = |token: &str| {
                self.request(Method::GET, url.clone(), token)
                    .timeout(timeout)
            };
            let resp = self.authed(node, mailbox, keys, &build).await?;
            let page: Listing = self.json(node, resp).await?;
            let Some(last) = page.items.iter().map(|i| i.seq).max() else {
                break;
            };
            // A node that does not move forward would keep us here for ever.
            if last <= after {
                return Err(Error::protocol(node, "mailbox listing does not advance"));
            }
            let full = page.items.len() >= LIST_LIMIT as usize;
            out.extend(page.items);
            after = page.next.filter(|n| *n >= last).unwrap_or(last);
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// `GET /v1/mailbox/{mailbox}/{seq}`: the encoded envelope.
    pub async fn get_envelope(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        seq: u64,
        transfer: &dyn Transfer,
    ) -> Result<Vec<u8>> {
        let url = node.join(&api::envelope(mailbox, seq));
        let build = |token: &str| self.request(Method::GET, url.clone(), token);
        let resp = self.authed(node, mailbox, keys, &build).await?;
        self.body(node, resp, MAX_ENVELOPE_BYTES, transfer).await
    }

    /// `POST /v1/mailbox/{mailbox}/fetch`: the envelopes at `seqs` (at most
    /// [`MAX_BATCH_SEQS`](sealpost_proto::limits::MAX_BATCH_SEQS)), answered for a prefix of them in their order (`None` where the
    /// node has none). `Ok(None)` when the node has no batched fetch (an older node: `404`,
    /// or `405` for a POST to what it takes for a sequence number).
    pub async fn fetch_batch(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        seqs: &[u64],
        transfer: &dyn Transfer,
    ) -> Result<Option<Vec<BatchEntry>>> {
        let url = node.join(&api::mailbox_fetch(mailbox));
        let body = json!({ "seqs": seqs }).to_string();
        let build = |token: &str| {
            self.request(Method::POST, url.clone(), token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let resp = match self.authed(node, mailbox, keys, &build).await {
            Ok(r) => r,
            Err(e) if no_batches(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = self.body(node, resp, MAX_BATCH_ANSWER, transfer).await?;
        let batch = EnvelopeBatch::decode(&bytes)
            .map_err(|e| Error::protocol(node, format!("batched fetch answer: {e}")))?;
        // A prefix of what we asked, in order, and never nothing: otherwise we would ask
        // again for ever, or take an envelope for another sequence number.
        if batch.entries.is_empty()
            || batch.entries.len() > seqs.len()
            || batch.entries.iter().zip(seqs).any(|(e, s)| e.seq != *s)
        {
            return Err(Error::protocol(
                node,
                "batched fetch answer is not a prefix of the sequence numbers asked for",
            ));
        }
        Ok(Some(batch.entries))
    }

    /// `POST /v1/mailbox/{mailbox}/ack`: acknowledges `seqs` (at most [`MAX_BATCH_SEQS`](sealpost_proto::limits::MAX_BATCH_SEQS)) in
    /// one request. `Ok(None)` when the node has no batched ack (as for [`Net::fetch_batch`]).
    pub async fn ack_batch(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        seqs: &[u64],
    ) -> Result<Option<()>> {
        let url = node.join(&api::mailbox_ack(mailbox));
        let body = json!({ "seqs": seqs }).to_string();
        let timeout = self.config.timeout;
        let build = |token: &str| {
            self.request(Method::POST, url.clone(), token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(timeout)
        };
        match self.authed(node, mailbox, keys, &build).await {
            Ok(_) => Ok(Some(())),
            Err(e) if no_batches(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v1/mailbox/{mailbox}/{seq}`: the ack.
    pub async fn delete(
        &self,
        node: &NodeUrl,
        mailbox: MailboxId,
        keys: &Keyring,
        seq: u64,
    ) -> Result<()> {
        let url = node.join(&api::envelope(mailbox, seq));
        let timeout = self.config.timeout;
        let build = |token: &str| {
            self.request(Method::DELETE, url.clone(), token)
                .timeout(timeout)
        };
        self.authed(node, mailbox, keys, &build).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_json_parses() {
        let l: Listing = serde_json::from_str(
            r#"{"items":[{"seq":7,"id":"000102030405060708090a0b0c0d0e0f","size":8234}],"next":7}"#,
        )
        .unwrap();
        assert_eq!(l.items[0].seq, 7);
        assert_eq!(
            l.items[0].id,
            EnvelopeId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
        assert_eq!(l.next, Some(7));
        let e: ApiError =
            serde_json::from_str(r#"{"error":{"code":"unknown_mailbox","message":"no"}}"#).unwrap();
        assert_eq!(e.error.code, "unknown_mailbox");
    }

    #[tokio::test]
    async fn unreachable_node_is_a_network_error() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let net = Net::new(NetConfig {
            timeout: Duration::from_secs(5),
            ..NetConfig::default()
        })
        .unwrap();
        let url = NodeUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = net.descriptor(&url).await.err().unwrap();
        assert!(
            matches!(
                e,
                Error::Unreachable {
                    failure: NetFailure::Refused,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn only_a_resolver_that_says_no_such_name_means_no_such_host() {
        for yes in [
            "failed to lookup address information: Name or service not known",
            "failed to lookup address information: No address associated with hostname",
            "failed to lookup address information: Name does not resolve",
            "failed to lookup address information: nodename nor servname provided, or not known",
        ] {
            assert!(says_no_such_host(yes), "{yes}");
        }
        for no in [
            "failed to lookup address information: Temporary failure in name resolution",
            "failed to lookup address information: Try again",
            "failed to lookup address information: Non-recoverable failure in name resolution",
            "Name or service not known",
            "Connection reset by peer (os error 104)",
        ] {
            assert!(!says_no_such_host(no), "{no}");
        }
    }
}
