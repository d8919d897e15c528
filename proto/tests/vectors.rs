//! Checks `spec/vectors/` both ways: decoding the stored bytes gives the stored fields, and
//! encoding the fields gives the stored bytes. Changing any byte of a vector fails a test.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::SignedDescriptor;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::httpsig::{sign_request, verify_request};
use sealpost_proto::identity::{SecretIdentity, cert_to_bytes};
use sealpost_proto::record::{MailboxRecord, SignedRecord};
use sealpost_proto::seal::{SignatureStatus, open};
use sealpost_proto::{Error, MailboxId, NodeUrl, auth, padding};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

fn vectors() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("vectors.json")).unwrap()).unwrap()
}

fn key(name: &str) -> SecretIdentity {
    SecretIdentity::from_bytes(&std::fs::read(dir().join(name)).unwrap()).unwrap()
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn envelope_vector() {
    let v = &vectors()["envelope"];
    let env = Envelope::decode(&hx(&v["encoded"])).unwrap();
    assert_eq!(env.id.to_hex(), s(&v["id"]));
    assert_eq!(env.mailbox.to_hex(), s(&v["mailbox"]));
    assert_eq!(env.sealed, hx(&v["sealed"]));
    assert_eq!(env.token, hx(&v["token"]));
    assert_eq!(env.encode(), hx(&v["encoded"]));
}

#[test]
fn hop_vector() {
    let v = &vectors()["hop"];
    let hop = HopWrapper::decode(&hx(&v["encoded"])).unwrap();
    assert_eq!(hop.destination.as_str(), s(&v["destination"]));
    assert_eq!(hop.payload, hx(&v["payload"]));
    let again = HopWrapper {
        destination: NodeUrl::parse(s(&v["destination"])).unwrap(),
        payload: hx(&v["payload"]),
    };
    assert_eq!(again.encode(), hx(&v["encoded"]));
}

#[test]
fn record_vector() {
    let v = &vectors()["record"];
    let signed = SignedRecord::decode(&hx(&v["signed"])).unwrap();
    assert_eq!(signed.body, hx(&v["body"]));
    assert_eq!(signed.encode(), hx(&v["signed"]));
    let (rec, cert) = signed.verify(v["verify_at"].as_u64().unwrap()).unwrap();
    let alice = key(s(&v["cert_key"]));
    assert_eq!(cert.fingerprint(), alice.fingerprint());
    assert_eq!(rec.address.as_str(), s(&v["address"]));
    assert_eq!(rec.cert, cert_to_bytes(&alice.public_cert()));
    assert_eq!(
        (rec.created, rec.expires, rec.sequence),
        (
            v["created"].as_u64().unwrap(),
            v["expires"].as_u64().unwrap(),
            v["sequence"].as_u64().unwrap()
        )
    );
    let homes = v["homes"].as_array().unwrap();
    assert_eq!(rec.homes.len(), homes.len());
    for (h, vh) in rec.homes.iter().zip(homes) {
        assert_eq!(h.url.as_str(), s(&vh["url"]));
        assert_eq!(hex::encode(h.node_key), s(&vh["node_key"]));
        assert_eq!(h.mailbox.to_hex(), s(&vh["mailbox"]));
    }
    assert_eq!(rec.encode(), hx(&v["body"]));

    // Every flipped byte of the signed body is refused (bad signature or bad encoding).
    for i in (0..signed.body.len()).step_by(97) {
        let mut t = signed.clone();
        t.body[i] ^= 0x04;
        assert!(
            t.verify(v["verify_at"].as_u64().unwrap()).is_err(),
            "flip at {i} accepted"
        );
    }
    // Past its expiry the record is refused.
    let expires = v["expires"].as_u64().unwrap();
    assert_eq!(
        signed.verify(expires).unwrap_err(),
        Error::Expired {
            what: "mailbox record",
            expires,
            now: expires
        }
    );
}

#[test]
fn record_signed_by_another_key_is_refused() {
    let v = &vectors()["record"];
    let signed = SignedRecord::decode(&hx(&v["signed"])).unwrap();
    let bob = key("bob.sec.asc").unlock(None).unwrap();
    let forged = SignedRecord {
        body: signed.body.clone(),
        signature: sealpost_proto::record::sign_detached(&signed.body, &bob).unwrap(),
    };
    assert_eq!(
        forged.verify(v["verify_at"].as_u64().unwrap()).unwrap_err(),
        Error::BadObjectSignature("mailbox record")
    );
    // And bob cannot sign a record that carries alice's cert.
    let rec = MailboxRecord::decode(&signed.body).unwrap();
    assert!(SignedRecord::sign(&rec, &bob).is_err());
}

#[test]
fn descriptor_vector() {
    let v = &vectors()["descriptor"];
    let signed = SignedDescriptor::decode(&hx(&v["signed"])).unwrap();
    let (desc, cert) = signed.verify().unwrap();
    assert_eq!(desc.url.as_str(), s(&v["url"]));
    assert_eq!(hex::encode(desc.node_key), s(&v["node_key"]));
    assert_eq!(
        desc.max_envelope as u64,
        v["max_envelope"].as_u64().unwrap()
    );
    assert_eq!(desc.software, s(&v["software"]));
    assert_eq!(desc.created, v["created"].as_u64().unwrap());
    assert_eq!(cert.fingerprint(), key(s(&v["cert_key"])).fingerprint());
    // Ed25519 is deterministic: signing the same descriptor again gives the same bytes.
    let seed: [u8; 32] = hx(&v["seed"]).try_into().unwrap();
    assert_eq!(
        SignedDescriptor::sign(&desc, &SigningKey::from_bytes(&seed)).encode(),
        hx(&v["signed"])
    );
    let mut bad = signed.clone();
    bad.signature[5] ^= 1;
    assert_eq!(
        bad.verify().unwrap_err(),
        Error::BadObjectSignature("node descriptor")
    );
}

#[test]
fn httpsig_vector() {
    let v = &vectors()["httpsig"];
    let seed: [u8; 32] = hx(&v["seed"]).try_into().unwrap();
    let key = SigningKey::from_bytes(&seed);
    let body = hx(&v["body"]);
    let created = v["created"].as_u64().unwrap();
    let h = sign_request(
        &key,
        s(&v["method"]),
        s(&v["authority"]),
        s(&v["path"]),
        &body,
        created,
    );
    assert_eq!(h.content_digest, s(&v["content_digest"]));
    assert_eq!(h.signature_input, s(&v["signature_input"]));
    assert_eq!(h.signature, s(&v["signature"]));
    let signer = verify_request(
        s(&v["method"]),
        s(&v["authority"]),
        s(&v["path"]),
        &body,
        Some(s(&v["content_digest"])),
        Some(s(&v["signature_input"])),
        Some(s(&v["signature"])),
        created,
        300,
    )
    .unwrap();
    assert_eq!(signer, key.verifying_key().to_bytes());
}

#[test]
fn auth_vector() {
    let v = &vectors()["auth"];
    let nonce: [u8; 32] = hx(&v["nonce"]).try_into().unwrap();
    let stmt = auth::challenge_statement(
        &NodeUrl::parse(s(&v["node"])).unwrap(),
        &MailboxId::from_hex(s(&v["mailbox"])).unwrap(),
        &nonce,
    );
    assert_eq!(String::from_utf8(stmt).unwrap(), s(&v["statement"]));
}

#[test]
fn sealed_letter_vector() {
    let v = &vectors()["sealed_letter"];
    let sealed = std::fs::read(dir().join(s(&v["file"]))).unwrap();
    assert_eq!(sealed.len() as u64, v["size"].as_u64().unwrap());
    assert_eq!(
        sealed.len(),
        padding::bucket(sealed.len()),
        "sealed size is a bucket"
    );
    let alice = key(s(&v["sender_key"])).public_cert();
    let bob = key(s(&v["recipient_key"])).unlock(None).unwrap();
    let lookup = |h: &sealpost_proto::openpgp::KeyHandle| {
        alice
            .keys()
            .any(|k| k.key().key_handle().aliases(h))
            .then(|| alice.clone())
    };
    let opened = open(&sealed, &bob, &lookup).unwrap();
    assert_eq!(
        opened.signature,
        SignatureStatus::Good {
            signer: alice.fingerprint()
        }
    );
    let l = opened.letter;
    assert_eq!(l.from.as_str(), s(&v["from"]));
    assert_eq!(
        l.to.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        v["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect::<Vec<_>>()
    );
    assert_eq!(l.subject, s(&v["subject"]));
    assert_eq!(l.message_id, s(&v["message_id"]));
    assert_eq!(l.body, s(&v["body"]));
    let a = &v["attachment"];
    assert_eq!(l.attachments.len(), 1);
    assert_eq!(l.attachments[0].name, s(&a["name"]));
    assert_eq!(l.attachments[0].media_type, s(&a["media_type"]));
    assert_eq!(l.attachments[0].data, hx(&a["data"]));
}

#[test]
fn bucket_vector() {
    for pair in vectors()["buckets"].as_array().unwrap() {
        let (n, b) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_u64().unwrap() as usize,
        );
        assert_eq!(padding::bucket(n), b, "bucket({n})");
    }
}

#[test]
fn bad_input_vectors_give_their_typed_errors() {
    for case in vectors()["bad_inputs"].as_array().unwrap() {
        let bytes = hx(&case["hex"]);
        let err = match s(&case["what"]) {
            "envelope" => Envelope::decode(&bytes).unwrap_err(),
            "hop" => HopWrapper::decode(&bytes).unwrap_err(),
            other => panic!("unknown vector type {other}"),
        };
        let ok = match s(&case["error"]) {
            "truncated" => matches!(err, Error::Truncated { .. }),
            "trailing" => matches!(err, Error::TrailingBytes { .. }),
            "version" => matches!(err, Error::UnknownVersion { .. }),
            "tag" => matches!(err, Error::WrongTag { .. }),
            "invalid" => matches!(err, Error::InvalidUtf8 { .. } | Error::InvalidUrl { .. }),
            "too_long" => matches!(err, Error::TooLong { .. }),
            other => panic!("unknown error kind {other}"),
        };
        assert!(ok, "{case}: got {err:?}");
    }
}
