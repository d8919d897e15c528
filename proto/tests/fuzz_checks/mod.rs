//! What each fuzz target checks, in one place: `fuzz/fuzz_targets/*.rs` include this file by
//! path and call one function per input, and `proto/tests/fuzz_regressions.rs` runs every
//! saved input under `proto/tests/fuzz_regressions/TARGET/` through the same function, so
//! that a crash found once stays a test in `make test`.
//!
//! Each function panics when the property fails: decoders never panic, whatever decodes
//! re-encodes to something that decodes to the same value, the SMTP session only emits
//! well-formed replies and never accepts a bare LF, names have a stable normal form, and a
//! signed request verifies with the key that signed it.

#![allow(dead_code)]

use sealpost_proto::batch::EnvelopeBatch;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::{Keyring, SecretIdentity};
use sealpost_proto::letter::Letter;
use sealpost_proto::record::{MailboxRecord, SignedRecord};
use sealpost_proto::smtp::{DeliveryResult, Output, RcptVerdict, Session, SmtpConfig};
use sealpost_proto::{Address, NodeUrl};

/// Every target of `fuzz/`, by name.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("envelope", envelope),
    ("hop", hop),
    ("record", record),
    ("descriptor", descriptor),
    ("letter", letter),
    ("smtp", smtp),
    ("names", names),
    ("httpsig", httpsig),
    ("payload", payload),
    ("oblivious", oblivious),
    ("batch", batch),
];

pub fn envelope(data: &[u8]) {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data, "decode then encode is the identity");
    }
    let _ = Envelope::peek_ids(data);
}

pub fn hop(data: &[u8]) {
    if let Ok(h) = HopWrapper::decode(data) {
        // URLs are normalised, so re-encoding may differ; it must decode to the same value.
        assert_eq!(HopWrapper::decode(&h.encode()).as_ref(), Ok(&h));
    }
}

pub fn record(data: &[u8]) {
    if let Ok(r) = MailboxRecord::decode(data) {
        assert_eq!(MailboxRecord::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(s) = SignedRecord::decode(data) {
        let _ = s.verify(1_800_000_000);
    }
}

pub fn batch(data: &[u8]) {
    if let Ok(b) = EnvelopeBatch::decode(data) {
        assert_eq!(b.encode(), data, "an envelope batch has one encoding");
    }
}

pub fn descriptor(data: &[u8]) {
    if let Ok(d) = NodeDescriptor::decode(data) {
        assert_eq!(NodeDescriptor::decode(&d.encode()).as_ref(), Ok(&d));
    }
    if let Ok(s) = SignedDescriptor::decode(data) {
        let _ = s.verify();
    }
}

/// The decoders of oblivious lookups (what a gateway opens and a client reads): never a
/// panic; a padded request or answer that decodes re-encodes to one that decodes the same.
pub fn oblivious(data: &[u8]) {
    use sealpost_proto::oblivious::{GatewayKey, LookupRequest, LookupResponse, check_key_config};
    let _ = sealpost_proto::oblivious::bhttp::decode(data);
    if let Ok(r) = LookupRequest::decode(data) {
        // The authority is not kept; an empty one keeps the re-encoding no larger.
        let again = r.encode("").expect("a decoded request re-encodes");
        assert_eq!(LookupRequest::decode(&again).as_ref(), Ok(&r));
    }
    if let Ok(r) = LookupResponse::decode(data) {
        let again = r.encode().expect("a decoded answer re-encodes");
        assert_eq!(LookupResponse::decode(&again).as_ref(), Ok(&r));
    }
    let key = GatewayKey::derive(&[7; 32]).expect("a fixed key derives");
    let _ = key.open(data);
    let _ = check_key_config(data);
}

pub fn letter(data: &[u8]) {
    if let Ok(l) = Letter::from_rfc5322(data) {
        // Whatever parses must re-encode (or be refused by validation), never panic.
        let _ = l.to_rfc5322();
    }
}

/// Feeds arbitrary bytes in arbitrary chunks (the first byte sets the chunk size); answers
/// every question; the session's outputs are well-formed replies.
pub fn smtp(data: &[u8]) {
    let cfg = SmtpConfig {
        max_message_bytes: 4096,
        ..SmtpConfig::default()
    };
    let (mut s, _) = Session::new(cfg);
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    for chunk in data.chunks(split) {
        let mut pending = s.feed(chunk);
        while let Some(o) = (!pending.is_empty()).then(|| pending.remove(0)) {
            match o {
                Output::Reply(b) => assert!(b.is_empty() || b.ends_with(b"\r\n")),
                Output::CheckRecipient(r) => {
                    let v = if r.len() % 2 == 0 {
                        RcptVerdict::Accept
                    } else {
                        RcptVerdict::UnknownUser
                    };
                    pending.splice(0..0, s.recipient_verdict(v));
                }
                Output::Deliver(tx) => {
                    assert!(!tx.rcpt_to.is_empty());
                    assert!(
                        !tx.data.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                        "bare LF accepted"
                    );
                    pending.splice(0..0, s.delivery_result(DeliveryResult::Stored("x".into())));
                }
                Output::StartTls => s.tls_established(),
                Output::Close => return,
            }
        }
    }
}

pub fn names(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = Address::parse(s) {
            assert_eq!(
                Address::parse(a.as_str()).as_ref(),
                Ok(&a),
                "normal form is stable"
            );
        }
        if let Ok(u) = NodeUrl::parse(s) {
            assert_eq!(
                NodeUrl::parse(u.as_str()).as_ref(),
                Ok(&u),
                "normal form is stable"
            );
        }
    }
}

/// The input is split at `\n` into method, authority, path, `Content-Digest`,
/// `Signature-Input`, `Signature` and the body (the rest). Verifying arbitrary headers never
/// panics; signing the same method, authority, path and body and verifying that succeeds
/// and names the signing key.
pub fn httpsig(data: &[u8]) {
    use sealpost_proto::httpsig::{sign_request, verify_request};
    const NOW: u64 = 1_800_000_000;
    let mut parts = data.splitn(7, |b| *b == b'\n');
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (method, authority, path) = (field(), field(), field());
    let (digest, input, signature) = (field(), field(), field());
    let body = field().into_bytes();
    if let Ok(signer) = verify_request(
        &method,
        &authority,
        &path,
        &body,
        Some(&digest),
        Some(&input),
        Some(&signature),
        NOW,
        300,
    ) {
        // A key of small order "signs" anything; it must never be taken as a signer.
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&signer).expect("a verified key");
        assert!(!vk.is_weak(), "a small-order key verified a request");
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let h = sign_request(&key, &method, &authority, &path, &body, NOW);
    assert_eq!(
        verify_request(
            &method,
            &authority,
            &path,
            &body,
            Some(&h.content_digest),
            Some(&h.signature_input),
            Some(&h.signature),
            NOW,
            300,
        ),
        Ok(key.verifying_key().to_bytes()),
        "a request verifies with the key that signed it"
    );
}

/// A hop payload as `/v1/deliver` takes it from anyone: decrypted with the node's key
/// (the spec's `node-b`, whose key the hop vector is encrypted to) within a size bound,
/// then decoded as an envelope. Never panics; never returns more than the bound.
pub fn payload(data: &[u8]) {
    use std::sync::OnceLock;
    const MAX: usize = 64 * 1024;
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        SecretIdentity::from_bytes(include_bytes!("../../../spec/vectors/node-b.sec.asc"))
            .and_then(|id| id.unlock(None))
            .expect("the spec's node key opens")
    });
    if let Ok(plain) = sealpost_proto::seal::decrypt_with(data, keys, MAX) {
        assert!(plain.len() <= MAX, "decrypted beyond the bound");
        let _ = Envelope::decode(&plain);
    }
}
