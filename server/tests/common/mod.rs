//! Test harness: nodes started in-process on `127.0.0.1:0` (or re-bound to the port they had),
//! users with fresh OpenPGP identities, and a small HTTP client for the node API. The node
//! and the client are `sealpost_testkit`'s (shared with `tests/` and the benchmarks); this
//! module keeps the names these tests use.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::NodeDescriptor;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::{Keyring, SecretIdentity};
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};
// Each test file uses some of these.
#[allow(unused_imports)]
pub use sealpost_testkit::api::{Answer, answer, code, now, peer_key};
#[allow(unused_imports)]
pub use sealpost_testkit::inproc::{DEADLINE, TestNode, eventually};

/// A user with a fresh identity.
pub struct User {
    pub address: Address,
    pub identity: SecretIdentity,
    pub keys: Keyring,
    pub cert: Cert,
}

impl User {
    pub fn new(address: &str) -> User {
        let parsed = Address::parse(address).unwrap();
        User::with_identity(address, SecretIdentity::generate(&parsed, None).unwrap())
    }

    /// The user of `address` with `identity` (e.g. a new key endorsed by the old one).
    pub fn with_identity(address: &str, identity: SecretIdentity) -> User {
        let keys = identity.unlock(None).unwrap();
        let cert = identity.public_cert();
        User {
            address: Address::parse(address).unwrap(),
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

/// A small client of the node API: `sealpost_testkit::api::Api` with these tests' habit of
/// panicking when the node cannot be reached (an answer with an error status is returned).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            http: sealpost_testkit::api::Api::default().http,
        }
    }
}

impl Api {
    fn kit(&self) -> sealpost_testkit::api::Api {
        sealpost_testkit::api::Api::new(self.http.clone())
    }

    pub async fn descriptor(&self, node: &NodeUrl) -> (NodeDescriptor, Cert) {
        self.kit().descriptor(node).await.expect("descriptor")
    }

    pub async fn register(&self, node: &NodeUrl, user: &User, invite: Option<&str>) -> Answer {
        self.kit()
            .register(node, &user.cert, invite)
            .await
            .expect("register")
    }

    /// Registers and returns the new mailbox.
    pub async fn mailbox(&self, node: &NodeUrl, user: &User) -> MailboxId {
        self.kit()
            .mailbox(node, &user.cert)
            .await
            .expect("register")
    }

    pub async fn challenge(&self, node: &NodeUrl, mailbox: &MailboxId) -> Answer {
        self.kit()
            .challenge(node, mailbox)
            .await
            .expect("challenge")
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
        self.kit()
            .answer_challenge(node, signed_url, mailbox, nonce_hex, keys)
            .await
            .expect("token")
    }

    pub async fn token(&self, node: &NodeUrl, mailbox: &MailboxId, keys: &Keyring) -> String {
        self.kit().token(node, mailbox, keys).await.expect("token")
    }

    pub async fn put_record(&self, node: &NodeUrl, address: &str, body: Vec<u8>) -> Answer {
        self.kit()
            .put_record(node, address, body)
            .await
            .expect("put record")
    }

    pub async fn submit(&self, node: &NodeUrl, token: Option<&str>, hop: Vec<u8>) -> Answer {
        self.kit().submit(node, token, hop).await.expect("submit")
    }

    pub async fn list(&self, node: &NodeUrl, mailbox: &MailboxId, token: Option<&str>) -> Answer {
        self.kit().list(node, mailbox, token).await.expect("list")
    }

    /// The listed `(seq, id)` pairs; panics on an error answer.
    pub async fn items(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        token: &str,
    ) -> Vec<(u64, String)> {
        self.kit().items(node, mailbox, token).await.expect("list")
    }

    pub async fn get(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> reqwest::Response {
        self.kit()
            .get(node, mailbox, seq, token)
            .await
            .expect("get")
    }

    pub async fn ack(
        &self,
        node: &NodeUrl,
        mailbox: &MailboxId,
        seq: u64,
        token: Option<&str>,
    ) -> Answer {
        self.kit()
            .ack(node, mailbox, seq, token)
            .await
            .expect("ack")
    }

    /// POSTs `payload` to `node`'s `/v1/deliver`, signed by `key` as a peer node would.
    pub async fn deliver(&self, node: &NodeUrl, key: &SigningKey, payload: Vec<u8>) -> Answer {
        self.kit()
            .deliver(node, key, payload)
            .await
            .expect("deliver")
    }

    /// POSTs an encoded envelope to `node`'s `/v1/forward`, signed by `key` as another home
    /// of its mailbox would.
    pub async fn forward(&self, node: &NodeUrl, key: &SigningKey, envelope: Vec<u8>) -> Answer {
        self.kit()
            .forward(node, key, envelope)
            .await
            .expect("forward")
    }

    /// The value of one sample line of `/metrics`.
    pub async fn metric(&self, node: &NodeUrl, series: &str) -> f64 {
        self.kit().metric(node, series).await.expect("metrics")
    }
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
