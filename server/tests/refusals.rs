//! Everything a node must refuse, with the documented status and code, storing nothing:
//! unauthorized mailbox access, bad challenge answers, malformed, oversized and
//! wrong-version bodies on every binary endpoint, unsigned deliveries, records that do not
//! belong here, quota and rate limits, slow bodies. One node serves every case.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::HopWrapper;
use sealpost_proto::identity::Keyring;
use sealpost_proto::seal::encrypt_to;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_server::config::Secs;

const MAX_ENVELOPE: u32 = 16 * 1024;
/// A peer this node refuses.
const BLOCKED_SEED: [u8; 32] = [42; 32];

/// Changes the version byte (the second byte) of an encoded object.
fn bump_version(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[1] = 9;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_documented_codes_and_store_nothing() {
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.limits.max_envelope = MAX_ENVELOPE;
        c.limits.mailbox_max_envelopes = 3;
        c.limits.deliver_per_minute = 1;
        c.limits.deliver_burst = 20;
        c.limits.submit_per_minute = 1;
        c.limits.submit_burst = 4;
        c.limits.body_timeout = Secs(Duration::from_millis(300));
        let blocked = ed25519_dalek::SigningKey::from_bytes(&BLOCKED_SEED);
        c.peers.blocked = vec![hex::encode(blocked.verifying_key().to_bytes())];
    })
    .await;
    let url = node.url.clone();
    let (_, node_cert) = api.descriptor(&url).await;
    let bob = User::new("bob@beta.test");
    let carol = User::new("carol@beta.test");
    let alice = User::new("alice@alpha.test");
    let bob_mb = api.mailbox(&url, &bob).await;
    let carol_mb = api.mailbox(&url, &carol).await;
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    let carol_token = api.token(&url, &carol_mb, &carol.keys).await;

    // One good delivery, so that there is something to protect.
    let peer = peer_key();
    let good = envelope(&alice, &bob, bob_mb, "hi", "there");
    let payload = hop(&good, &url, &node_cert).payload;
    assert_eq!(
        api.deliver(&url, &peer, payload.clone()).await.0,
        StatusCode::OK
    );

    // --- mailbox access without the right token ---
    let unauthorized = |a: &Answer| a.0 == StatusCode::UNAUTHORIZED && code(a) == "unauthorized";
    for token in [
        None,
        Some("not-a-token"),
        Some(&"ab".repeat(32)[..]),
        Some(&carol_token[..]),
    ] {
        assert!(
            unauthorized(&api.list(&url, &bob_mb, token).await),
            "list with {token:?}"
        );
        assert!(
            unauthorized(&answer(api.get(&url, &bob_mb, 1, token).await).await),
            "get with {token:?}"
        );
        assert!(
            unauthorized(&api.ack(&url, &bob_mb, 1, token).await),
            "ack with {token:?}"
        );
    }
    let resp = api.list(&url, &bob_mb, None).await;
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // --- challenge answers ---
    let challenge = |mb| {
        let api = api.clone();
        let url = url.clone();
        async move {
            api.challenge(&url, &mb).await.1["nonce"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let answer_with =
        |mb: MailboxId, nonce: String, keys: &'static Keyring, signed_for: NodeUrl| {
            let api = api.clone();
            let url = url.clone();
            async move {
                api.answer_challenge(&url, &signed_for, &mb, &nonce, keys)
                    .await
            }
        };
    let bob_keys: &'static Keyring = Box::leak(Box::new(bob.identity.unlock(None).unwrap()));
    let carol_keys: &'static Keyring = Box::leak(Box::new(carol.identity.unlock(None).unwrap()));
    // Wrong key: carol signs bob's challenge.
    let n = challenge(bob_mb).await;
    assert!(
        unauthorized(&answer_with(bob_mb, n, carol_keys, url.clone()).await),
        "wrong key"
    );
    // Signed for another node.
    let n = challenge(bob_mb).await;
    let elsewhere = NodeUrl::parse("http://elsewhere.test").unwrap();
    assert!(
        unauthorized(&answer_with(bob_mb, n, bob_keys, elsewhere).await),
        "another node's statement"
    );
    // A nonce issued for carol, answered for bob.
    let n = challenge(carol_mb).await;
    assert!(
        unauthorized(&answer_with(bob_mb, n, bob_keys, url.clone()).await),
        "nonce of another mailbox"
    );
    // Replay: a good answer works once.
    let n = challenge(bob_mb).await;
    assert_eq!(
        answer_with(bob_mb, n.clone(), bob_keys, url.clone())
            .await
            .0,
        StatusCode::OK
    );
    assert!(
        unauthorized(&answer_with(bob_mb, n, bob_keys, url.clone()).await),
        "replayed challenge"
    );
    // An unknown nonce, and a challenge for a mailbox that does not exist.
    assert!(unauthorized(
        &answer_with(bob_mb, "cd".repeat(32), bob_keys, url.clone()).await
    ));
    let a = api.challenge(&url, &MailboxId([7; 16])).await;
    assert_eq!((a.0, code(&a)), (StatusCode::NOT_FOUND, "unknown_mailbox"));
    let a = answer(
        api.http
            .post(url.join("/v1/auth/challenge"))
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((a.0, code(&a)), (StatusCode::BAD_REQUEST, "bad_request"));

    // --- deliveries ---
    let deliver = |body: Vec<u8>| {
        let (api, url, peer) = (api.clone(), url.clone(), peer.clone());
        async move { api.deliver(&url, &peer, body).await }
    };
    let expect = |a: Answer, status: StatusCode, c: &str| {
        assert_eq!((a.0, code(&a)), (status, c), "{a:?}");
    };
    let unsigned = answer(
        api.http
            .post(url.join("/v1/deliver"))
            .body(payload.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(unsigned, StatusCode::UNAUTHORIZED, "unauthorized");
    // Signed for another path: the signature does not cover this request.
    let h = sealpost_proto::httpsig::sign_request(
        &peer,
        "POST",
        url.authority(),
        "/v1/other",
        &payload,
        now(),
    );
    let forged = api
        .http
        .post(url.join("/v1/deliver"))
        .header("content-digest", h.content_digest)
        .header("signature-input", h.signature_input)
        .header("signature", h.signature)
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    expect(
        answer(forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    expect(
        deliver(b"garbage".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    // Encrypted to someone else: the node cannot open it.
    let not_ours = encrypt_to(&good.encode(), &bob.cert).unwrap();
    expect(
        deliver(not_ours).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    // Opens fine, but the envelope inside has a version this node does not speak.
    let wrong_version = encrypt_to(&bump_version(good.encode()), &node_cert).unwrap();
    expect(
        deliver(wrong_version).await,
        StatusCode::BAD_REQUEST,
        "unknown_version",
    );
    let truncated = encrypt_to(&good.encode()[..40], &node_cert).unwrap();
    expect(
        deliver(truncated).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    let elsewhere = envelope(&alice, &bob, MailboxId([3; 16]), "x", "y");
    expect(
        deliver(hop(&elsewhere, &url, &node_cert).payload).await,
        StatusCode::NOT_FOUND,
        "unknown_mailbox",
    );
    // Too large on the wire, and too large once opened.
    let huge = vec![0x85u8; MAX_ENVELOPE as usize + 8192];
    expect(
        deliver(huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    let mut big = good.clone();
    big.id = sealpost_proto::EnvelopeId::random();
    big.sealed = vec![0xc1; MAX_ENVELOPE as usize];
    expect(
        deliver(encrypt_to(&big.encode(), &node_cert).unwrap()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    // The same envelope again is accepted but not stored twice.
    assert_eq!(
        deliver(payload.clone()).await.1,
        serde_json::json!({ "stored": false })
    );

    // Quota: 3 envelopes per mailbox; bob has 1.
    for _ in 0..2 {
        let e = envelope(&alice, &bob, bob_mb, "fill", "up");
        assert_eq!(
            deliver(hop(&e, &url, &node_cert).payload).await.0,
            StatusCode::OK
        );
    }
    let over = envelope(&alice, &bob, bob_mb, "one", "too many");
    expect(
        deliver(hop(&over, &url, &node_cert).payload).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    );

    // Per-peer rate: a fresh peer gets its burst, then 429 with Retry-After.
    let flood = peer_key();
    let mut limited = None;
    for _ in 0..25 {
        let h = sealpost_proto::httpsig::sign_request(
            &flood,
            "POST",
            url.authority(),
            "/v1/deliver",
            &payload,
            now(),
        );
        let resp = api
            .http
            .post(url.join("/v1/deliver"))
            .header("content-digest", h.content_digest)
            .header("signature-input", h.signature_input)
            .header("signature", h.signature)
            .body(payload.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
    }
    let limited = limited.expect("the per-peer limit applies");
    assert!(limited.headers().get("retry-after").is_some());
    expect(
        answer(limited).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );

    // --- submissions ---
    let submit = |token: Option<String>, body: Vec<u8>| {
        let (api, url) = (api.clone(), url.clone());
        async move { api.submit(&url, token.as_deref(), body).await }
    };
    let good_hop = hop(&good, &url, &node_cert).encode();
    expect(
        submit(None, good_hop.clone()).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let carol_t = Some(carol_token.clone());
    expect(
        submit(carol_t.clone(), b"\x02".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    expect(
        submit(carol_t.clone(), bump_version(good_hop.clone())).await,
        StatusCode::BAD_REQUEST,
        "unknown_version",
    );
    let mut trailing = good_hop.clone();
    trailing.push(0);
    expect(
        submit(carol_t.clone(), trailing).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    let oversized = HopWrapper {
        destination: url.clone(),
        payload: vec![1; MAX_ENVELOPE as usize + 8192],
    };
    expect(
        submit(carol_t.clone(), oversized.encode()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    // Per-user rate: bob's burst is 4 submissions; the fifth is refused (and not queued).
    let bob_t = Some(bob_token.clone());
    for _ in 0..4 {
        assert_eq!(
            submit(bob_t.clone(), good_hop.clone()).await.0,
            StatusCode::ACCEPTED
        );
    }
    expect(
        submit(bob_t, good_hop.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert_eq!(api.metric(&url, "sealpost_hops_queued_total").await, 4.0);

    // --- records ---
    let put = |address: &str, body: Vec<u8>| {
        let (api, url, address) = (api.clone(), url.clone(), address.to_string());
        async move { api.put_record(&url, &address, body).await }
    };
    let good_record = record(&bob, &[(&url, node.node_key, bob_mb)], 5);
    expect(
        put("bob@beta.test", b"junk".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    );
    expect(
        put("bob@beta.test", bump_version(good_record.clone())).await,
        StatusCode::BAD_REQUEST,
        "unknown_version",
    );
    let mut bad_sig = sealpost_proto::record::SignedRecord::decode(&good_record).unwrap();
    bad_sig.signature = sealpost_proto::record::SignedRecord::decode(&record(
        &carol,
        &[(&url, node.node_key, carol_mb)],
        5,
    ))
    .unwrap()
    .signature;
    expect(
        put("bob@beta.test", bad_sig.encode()).await,
        StatusCode::BAD_REQUEST,
        "bad_record",
    );
    expect(
        put("carol@beta.test", good_record.clone()).await,
        StatusCode::BAD_REQUEST,
        "bad_record",
    );
    expect(
        put("not an address", good_record.clone()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let other_node = NodeUrl::parse("http://other.test").unwrap();
    let not_here = record(&bob, &[(&other_node, node.node_key, bob_mb)], 5);
    expect(
        put("bob@beta.test", not_here).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let wrong_key = record(&bob, &[(&url, [9; 32], bob_mb)], 5);
    expect(
        put("bob@beta.test", wrong_key).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let carols_mailbox = record(&bob, &[(&url, node.node_key, carol_mb)], 5);
    expect(
        put("bob@beta.test", carols_mailbox).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let missing = answer(
        api.http
            .get(url.join("/v1/records/bob@beta.test"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(missing, StatusCode::NOT_FOUND, "unknown_address");
    assert_eq!(
        put("bob@beta.test", good_record.clone()).await.0,
        StatusCode::NO_CONTENT
    );
    let stale = record(&bob, &[(&url, node.node_key, bob_mb)], 5);
    expect(
        put("bob@beta.test", stale).await,
        StatusCode::CONFLICT,
        "stale_record",
    );

    // --- accounts, routes ---
    let reg = |body: &'static str| {
        let (api, url) = (api.clone(), url.clone());
        async move {
            answer(
                api.http
                    .post(url.join("/v1/accounts"))
                    .body(body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    expect(
        reg("not json").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect(
        reg(r#"{"cert":"not a certificate"}"#).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let nowhere = answer(api.http.get(url.join("/v1/nowhere")).send().await.unwrap()).await;
    expect(nowhere, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = answer(api.http.get(url.join("/v1/deliver")).send().await.unwrap()).await;
    expect(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let bad_query = api
        .http
        .get(url.join(&format!("/v1/mailbox/{bob_mb}?after=x")))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    expect(
        answer(bad_query).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // --- a body that never finishes ---
    let addr = node.addr;
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            s,
            "POST /v1/accounts HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{\"cert\":"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("\"timeout\""), "{raw}");

    // What is stored: bob's three envelopes, carol's none.
    let items = api.items(&url, &bob_mb, &bob_token).await;
    assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(api.items(&url, &carol_mb, &carol_token).await.is_empty());
    node.stop().await;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    sealpost_server::store::rocks::scan_all(&node.data_dir(), |cf, _, _| {
        *counts.entry(cf.to_string()).or_default() += 1
    })
    .unwrap();
    assert_eq!(counts.get("envelopes"), Some(&3));
    assert_eq!(counts.get("records"), Some(&1));
    // The accepted submissions (to this node itself, delivered locally as duplicates) may
    // still wait in the queue, as metadata and payload; nothing else is queued.
    assert!(counts.get("outbound").copied().unwrap_or(0) <= 8);
}
