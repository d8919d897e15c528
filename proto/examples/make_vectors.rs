//! Writes `spec/vectors/`: fixed keys and inputs with their exact encodings. The tests in
//! `proto/tests/vectors.rs` load these files and check them both ways. Run only when the
//! protocol changes on purpose: `cargo run -p sealpost-proto --example make_vectors`.

use std::path::Path;

use ed25519_dalek::SigningKey;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::httpsig::sign_request;
use sealpost_proto::identity::{SecretIdentity, cert_to_bytes};
use sealpost_proto::letter::{Attachment, Letter};
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl, auth, padding, seal};
use serde_json::json;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    std::fs::create_dir_all(&dir).unwrap();
    let addr = |s: &str| Address::parse(s).unwrap();

    // Keys: generated once and kept; regenerate only if the files are missing.
    let load_or_make = |name: &str, a: &str| {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => SecretIdentity::from_bytes(&b).unwrap(),
            Err(_) => {
                let id = SecretIdentity::generate(&addr(a), None).unwrap();
                std::fs::write(&p, id.to_armored()).unwrap();
                id
            }
        }
    };
    let alice = load_or_make("alice.sec.asc", "alice@alpha.test");
    let bob = load_or_make("bob.sec.asc", "bob@beta.test");
    let node = load_or_make("node-b.sec.asc", "node@beta.test");
    let node_seed = [0x42u8; 32];
    let node_key = SigningKey::from_bytes(&node_seed);

    let envelope = Envelope {
        id: EnvelopeId([0x11; 16]),
        mailbox: MailboxId([0x22; 16]),
        sealed: b"\xc1sealed".to_vec(),
        token: vec![],
    };
    let hop = HopWrapper {
        destination: NodeUrl::parse("http://beta.test:8080").unwrap(),
        payload: b"\xc1payload".to_vec(),
    };

    let record = MailboxRecord {
        address: addr("alice@alpha.test"),
        cert: cert_to_bytes(&alice.public_cert()),
        homes: vec![
            Home {
                url: NodeUrl::parse("http://alpha.test:8080").unwrap(),
                node_key: [0xa1; 32],
                mailbox: MailboxId([0x33; 16]),
            },
            Home {
                url: NodeUrl::parse("https://backup.example").unwrap(),
                node_key: [0xa2; 32],
                mailbox: MailboxId([0x44; 16]),
            },
        ],
        created: 1_700_000_000,
        expires: 4_102_444_800,
        sequence: 1,
    };
    let signed_record = SignedRecord::sign(&record, &alice.unlock(None).unwrap()).unwrap();

    let descriptor = NodeDescriptor {
        url: NodeUrl::parse("http://beta.test:8080").unwrap(),
        node_key: node_key.verifying_key().to_bytes(),
        encryption_cert: cert_to_bytes(&node.public_cert()),
        max_envelope: 33_554_432,
        software: "sealpost-node/0.1.0".into(),
        created: 1_700_000_000,
        ohttp_key: None,
    };
    let signed_descriptor = SignedDescriptor::sign(&descriptor, &node_key);

    let sig = sign_request(
        &node_key,
        "POST",
        "beta.test:8080",
        "/v1/deliver",
        b"payload",
        1_700_000_000,
    );
    let statement = auth::challenge_statement(
        &NodeUrl::parse("http://beta.test:8080").unwrap(),
        &MailboxId([0x22; 16]),
        &[0x07; 32],
    );

    let mut letter = Letter::new(
        addr("alice@alpha.test"),
        vec![addr("bob@beta.test")],
        "Vector",
        "A letter kept as a test vector.\r\n",
        1_700_000_000,
    );
    letter.message_id = "vector-1@alpha.test".into();
    letter.attachments.push(Attachment {
        name: "hello.txt".into(),
        media_type: "text/plain".into(),
        data: b"hello\r\n".to_vec(),
    });
    let sealed = seal::seal(&letter, &alice.unlock(None).unwrap(), &bob.public_cert()).unwrap();
    std::fs::write(dir.join("sealed-letter.pgp"), &sealed).unwrap();

    let buckets: Vec<_> = [
        0usize,
        1,
        4096,
        4097,
        100_000,
        262_144,
        262_145,
        1 << 20,
        5_000_000,
    ]
    .iter()
    .map(|&n| json!([n, padding::bucket(n)]))
    .collect();

    let v = json!({
        "comment": "Sealpost v1 test vectors; see spec/protocol.md. Hex is lower case.",
        "envelope": {
            "id": envelope.id.to_hex(), "mailbox": envelope.mailbox.to_hex(),
            "sealed": hex::encode(&envelope.sealed), "token": hex::encode(&envelope.token),
            "encoded": hex::encode(envelope.encode()),
        },
        "hop": { "destination": hop.destination.as_str(), "payload": hex::encode(&hop.payload), "encoded": hex::encode(hop.encode()) },
        "record": {
            "address": record.address.as_str(),
            "cert_key": "alice.sec.asc",
            "homes": record.homes.iter().map(|h| json!({"url": h.url.as_str(), "node_key": hex::encode(h.node_key), "mailbox": h.mailbox.to_hex()})).collect::<Vec<_>>(),
            "created": record.created, "expires": record.expires, "sequence": record.sequence,
            "body": hex::encode(&signed_record.body),
            "signed": hex::encode(signed_record.encode()),
            "verify_at": 1_800_000_000u64,
        },
        "descriptor": {
            "seed": hex::encode(node_seed),
            "url": descriptor.url.as_str(), "node_key": hex::encode(descriptor.node_key),
            "cert_key": "node-b.sec.asc", "max_envelope": descriptor.max_envelope,
            "software": descriptor.software, "created": descriptor.created,
            "signed": hex::encode(signed_descriptor.encode()),
        },
        "httpsig": {
            "seed": hex::encode(node_seed), "method": "POST", "authority": "beta.test:8080", "path": "/v1/deliver",
            "body": hex::encode(b"payload"), "created": 1_700_000_000u64,
            "content_digest": sig.content_digest, "signature_input": sig.signature_input, "signature": sig.signature,
        },
        "auth": { "node": "http://beta.test:8080", "mailbox": MailboxId([0x22; 16]).to_hex(), "nonce": hex::encode([0x07u8; 32]),
                  "statement": String::from_utf8(statement).unwrap() },
        "sealed_letter": {
            "file": "sealed-letter.pgp", "sender_key": "alice.sec.asc", "recipient_key": "bob.sec.asc",
            "from": "alice@alpha.test", "to": ["bob@beta.test"], "subject": "Vector", "message_id": "vector-1@alpha.test",
            "body": "A letter kept as a test vector.\r\n", "attachment": {"name": "hello.txt", "media_type": "text/plain", "data": hex::encode(b"hello\r\n")},
            "size": sealed.len(),
        },
        "buckets": buckets,
        "bad_inputs": [
            {"what": "envelope", "hex": hex::encode(&envelope.encode()[..20]), "error": "truncated"},
            {"what": "envelope", "hex": format!("{}00", hex::encode(envelope.encode())), "error": "trailing"},
            {"what": "envelope", "hex": format!("0102{}", &hex::encode(envelope.encode())[4..]), "error": "version"},
            {"what": "envelope", "hex": format!("0201{}", &hex::encode(envelope.encode())[4..]), "error": "tag"},
            {"what": "hop", "hex": "0201000568747470ffffffff", "error": "invalid"},
            {"what": "hop", "hex": format!("02010015{}{}", hex::encode("http://beta.test:8080"), "ffffffff"), "error": "too_long"},
        ],
    });
    std::fs::write(
        dir.join("vectors.json"),
        serde_json::to_string_pretty(&v).unwrap() + "\n",
    )
    .unwrap();
    println!("wrote {}", dir.display());
}
