//! Test harness: nodes started in-process on `127.0.0.1:0` (or re-bound to the port they had),
//! users with fresh OpenPGP identities, and a small HTTP client for the node API.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::{Keyring, SecretIdentity, cert_to_armored};
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord, sign_detached};
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};
use sealpost_server::{Config, InitOptions, Ready, init_node, run_with};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything in a test may take before it counts as failed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node running inside the test process.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub addr: SocketAddr,
    pub url: NodeUrl,
    pub node_key: [u8; 32],
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestNode {
    /// Initialises a node directory and starts it on `127.0.0.1:0`. `tweak` edits the config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let done = init_node(dir.path(), &opts).expect("init");
        let mut config = Config::load(&done.config_path).expect("config");
        config.shutdown_grace = sealpost_server::config::Secs::from_secs(5);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut node = TestNode {
            dir,
            config,
            addr: listener.local_addr().unwrap(),
            url: NodeUrl::parse("http://127.0.0.1:1").unwrap(),
            node_key: [0; 32],
            stop: None,
            task: None,
        };
        node.launch(listener).await;
        node
    }

    async fn launch(&mut self, listener: tokio::net::TcpListener) {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
        let config = self.config.clone();
        let task = tokio::spawn(async move {
            run_with(
                listener,
                config,
                async {
                    let _ = stop_rx.await;
                },
                move |r| {
                    let _ = ready_tx.send(r.clone());
                },
            )
            .await
        });
        let ready = tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .expect("node ready in time")
            .expect("node started");
        self.addr = ready.addr;
        self.url = ready.url;
        self.node_key = ready.node_key;
        self.stop = Some(stop_tx);
        self.task = Some(task);
    }

    /// Stops the node gracefully and waits until its store is closed.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(DEADLINE, t)
                .await
                .expect("node stops in time")
                .expect("join")
                .expect("run");
        }
    }

    /// Starts the node again on the port it had, with the same directory.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "stop the node first");
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("re-bind the same port");
        self.launch(listener).await;
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.resolve(&self.config.data_dir)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // RocksDB must be closed before the process exits; a node left running is a bug in
        // the test (call `stop`).
        if self.task.is_some() && !std::thread::panicking() {
            panic!("TestNode dropped while running: call stop().await at the end of the test");
        }
    }
}

/// A user with a fresh identity.
pub struct User {
    pub address: Address,
    pub identity: SecretIdentity,
    pub keys: Keyring,
    pub cert: Cert,
}

impl User {
    pub fn new(address: &str) -> User {
        let address = Address::parse(address).unwrap();
        let identity = SecretIdentity::generate(&address, None).unwrap();
        let keys = identity.unlock(None).unwrap();
        let cert = identity.public_cert();
        User {
            address,
            identity,
            keys,
            cert,
        }
    }
}

/// Every key of a certificate: fingerprints and key ids, as bytes and hex (both cases).
pub fn cert_needles(cert: &Cert) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for ka in cert.keys() {
        let fp = ka.key().fingerprint();
        let id = ka.key().keyid();
        for raw in [fp.as_bytes().to_vec(), id.as_bytes().to_vec()] {
            out.push(hex::encode(&raw).into_bytes());
            out.push(hex::encode_upper(&raw).into_bytes());
            out.push(raw);
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte a stopped node stores: each key and value of each column family, and the raw
/// bytes of every file of the data directory (WAL, SST, blob files).
pub fn stored_bytes(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    sealpost_server::store::rocks::scan_all(data_dir, |cf, k, v| {
        out.push((format!("{cf} key"), k.to_vec()));
        out.push((format!("{cf} value"), v.to_vec()));
    })
    .expect("scan the database");
    for entry in walk(data_dir) {
        out.push((
            entry.display().to_string(),
            std::fs::read(&entry).expect("read file"),
        ));
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// Asserts that none of `needles` occurs in what a node stores.
pub fn assert_never_stored(data_dir: &Path, needles: &[(&str, Vec<u8>)]) {
    let stored = stored_bytes(data_dir);
    assert!(
        stored.iter().any(|(w, _)| w.starts_with("accounts")),
        "the scan saw the database's accounts"
    );
    assert!(
        stored.iter().any(|(w, _)| w.ends_with(".log")),
        "the scan saw the write-ahead log"
    );
    for (what, needle) in needles {
        for (place, bytes) in &stored {
            assert!(!contains(bytes, needle), "{what} found in {place}");
        }
    }
}

/// A small client of the node API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(DEADLINE)
                .build()
                .unwrap(),
        }
    }
}

/// Status and parsed JSON body (`Value::Null` when the body is not JSON).
pub type Answer = (StatusCode, Value);

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

impl Api {
    pub async fn descriptor(&self, node: &NodeUrl) -> (NodeDescriptor, Cert) {
        let bytes = self
            .http
            .get(node.join("/.well-known/sealpost/node"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        SignedDescriptor::decode(&bytes).unwrap().verify().unwrap()
    }

    pub async fn register(&self, node: &NodeUrl, user: &User, invite: Option<&str>) -> Answer {
        let mut body = serde_json::json!({ "cert": cert_to_armored(&user.cert) });
        if let Some(i) = invite {
            body["invite"] = i.into();
        }
        answer(
            self.http
                .post(node.join("/v1/accounts"))
                .body(body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Registers and returns the new mailbox.
    pub async fn mailbox(&self, node: &NodeUrl, user: &User) -> MailboxId {
        let a = self.register(node, user, None).await;
        assert!(a.0.is_success(), "register: {a:?}");
        MailboxId::from_hex(a.1["mailbox"].as_str().unwrap()).unwrap()
    }

    pub async fn challenge(&self, node: &NodeUrl, mailbox: &MailboxId) -> Answer {
        answer(
            self.http
                .post(node.join("/v1/auth/challenge"))
                .body(serde_json::json!({ "mailbox": mailbox.to_hex() }).to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Answers a challenge with `keys`, signing for `signed_url` (normally `node`).
    pub async fn answer_challenge(
        &self,
        node: &NodeUrl,
        signed_url: &NodeUrl,
        mailbox: &MailboxId,
        nonce_hex: &str,
        keys: &Keyring,
    ) -> Answer {
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce_hex, &mut nonce).unwrap();
        let sig = sign_detached(&challenge_statement(signed_url, mailbox, &nonce), keys).unwrap();
        let body = serde_json::json!({ "mailbox": mailbox.to_hex(), "nonce": nonce_hex, "signature": B64.encode(sig) });
        answer(
            self.http
                .post(node.join("/v1/auth/token"))
                .body(body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn token(&self, node: &NodeUrl, mailbox: &MailboxId, keys: &Keyring) -> String {
        let c = self.challenge(node, mailbox).await;
        assert_eq!(c.0, StatusCode::OK, "challenge: {c:?}");
        let t = self
            .answer_challenge(node, node, mailbox, c.1["nonce"].as_str().unwrap(), keys)
            .await;
        assert_eq!(t.0, StatusCode::OK, "token: {t:?}");
        t.1["token"].as_str().unwrap().to_string()
    }

    pub async fn put_record(&self, node: &NodeUrl, address: &str, body: Vec<u8>) -> Answer {
        answer(
            self.http
                .put(node.join(&format!("/v1/records/{address}")))
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn submit(&self, node: &NodeUrl, token: Option<&str>, hop: Vec<u8>) -> Answer {
        let mut req = self.http.post(node.join("/v1/submit")).body(hop);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap()).await
    }

    pub async fn list(&self, node: &NodeUrl, mailbox: &MailboxId, token: Option<&str>) -> Answer {
        let mut req = self.http.get(node.join(&format!("/v1/mailbox/{mailbox}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap()).await
    }

    /// The listed `(seq, id)` pairs; panics on an error answer.
    pub async fn items(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        token: &str,
    ) -> Vec<(u64, String)> {
        let a = self.list(node, mailbox, Some(token)).await;
        assert_eq!(a.0, StatusCode::OK, "list: {a:?}");
        a.1["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["seq"].as_u64().unwrap(),
                    i["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub async fn get(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .get(node.join(&format!("/v1/mailbox/{mailbox}/{seq}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn ack(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> Answer {
        let mut req = self
            .http
            .delete(node.join(&format!("/v1/mailbox/{mailbox}/{seq}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap()).await
    }

    /// POSTs `payload` to `node`'s `/v1/deliver`, signed by `key` as a peer node would.
    pub async fn deliver(&self, node: &NodeUrl, key: &SigningKey, payload: Vec<u8>) -> Answer {
        let h = sealpost_proto::httpsig::sign_request(
            key,
            "POST",
            node.authority(),
            "/v1/deliver",
            &payload,
            now(),
        );
        let resp = self
            .http
            .post(node.join("/v1/deliver"))
            .header("content-digest", h.content_digest)
            .header("signature-input", h.signature_input)
            .header("signature", h.signature)
            .body(payload)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// The value of one sample line of `/metrics`.
    pub async fn metric(&self, node: &NodeUrl, series: &str) -> f64 {
        let text = self
            .http
            .get(node.join("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn peer_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}

/// A signed record for `user` homed on `homes` (URL, node key, mailbox).
pub fn record(user: &User, homes: &[(&NodeUrl, [u8; 32], MailboxId)], sequence: u64) -> Vec<u8> {
    let rec = MailboxRecord {
        address: user.address.clone(),
        cert: sealpost_proto::identity::cert_to_bytes(&user.cert),
        homes: homes
            .iter()
            .map(|(u, k, m)| Home {
                url: (*u).clone(),
                node_key: *k,
                mailbox: *m,
            })
            .collect(),
        created: now(),
        expires: now() + 86400,
        sequence,
    };
    SignedRecord::sign(&rec, &user.keys).unwrap().encode()
}

/// A sealed letter from `from` to `to` in an envelope for `mailbox`.
pub fn envelope(from: &User, to: &User, mailbox: MailboxId, subject: &str, body: &str) -> Envelope {
    let letter = Letter::new(
        from.address.clone(),
        vec![to.address.clone()],
        subject,
        body,
        now() as i64,
    );
    let sealed = seal(&letter, &from.keys, &to.cert).unwrap();
    Envelope {
        id: EnvelopeId::random(),
        mailbox,
        sealed,
        token: Vec::new(),
    }
}

/// The envelope wrapped for the node at `url` with encryption certificate `node_cert`.
pub fn hop(envelope: &Envelope, url: &NodeUrl, node_cert: &Cert) -> HopWrapper {
    HopWrapper::wrap(envelope, url.clone(), node_cert).unwrap()
}
