//! Floods from loopback, bounded in count and time, each test naming the protection it
//! guards (`spec/security.md`): per-peer delivery limits and per-mailbox quotas keep a flood
//! against one mailbox from stopping delivery to the others; the per-user submit limit holds
//! under concurrent submissions; the byte quota refuses and frees; the connection cap and
//! the header timeout keep idle and drip-feeding (slowloris) connections from locking the
//! node up.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::EnvelopeId;
use sealpost_proto::codec::Codec;
use sealpost_server::config::Secs;

/// Guards the per-peer delivery limit (`limits.deliver_*`, keyed by the signing node's
/// key) and the per-mailbox quota (`limits.mailbox_max_envelopes`): three peers flood one
/// mailbox with 120 deliveries at once while a fourth delivers to another mailbox. The
/// flood is cut to each peer's burst and to the victim's quota; every delivery of the
/// fourth peer is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_one_mailbox_does_not_stop_delivery_to_others() {
    const BURST: u32 = 20;
    const QUOTA: u64 = 15;
    const FLOODERS: usize = 3;
    const PER_FLOODER: usize = 40;
    const LEGIT: usize = 10;
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        // One a minute: no refill worth counting while the test runs.
        c.limits.deliver_per_minute = 1;
        c.limits.deliver_burst = BURST;
        c.limits.mailbox_max_envelopes = QUOTA;
        // Every peer here is on 127.0.0.1, and 31 first deliveries under four fresh keys
        // race: the per-address limit on new peer keys (`tests/hostile.rs`) is not what
        // this test is about.
        c.limits.anonymous_exempt_loopback = true;
    })
    .await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, victim, bob) = (
        User::new("alice@alpha.test"),
        User::new("victim@beta.test"),
        User::new("bob@beta.test"),
    );
    let victim_mb = api.mailbox(&url, &victim).await;
    let bob_mb = api.mailbox(&url, &bob).await;
    let junk = envelope(&alice, &victim, victim_mb, "junk", "buy now");
    let letter = envelope(&alice, &bob, bob_mb, "hello", "a real letter");

    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOODERS {
        let peer = peer_key();
        for _ in 0..PER_FLOODER / 4 {
            // Four concurrent streams per flooding peer.
            let (api, url, peer) = (api.clone(), url.clone(), peer.clone());
            let payloads: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let mut e = junk.clone();
                    e.id = EnvelopeId::random();
                    hop(&e, &url, &cert).payload
                })
                .collect();
            flood.spawn(async move {
                let mut out = Vec::new();
                for p in payloads {
                    out.push((
                        hex::encode(peer.verifying_key().to_bytes()),
                        api.deliver(&url, &peer, p).await,
                    ));
                }
                out
            });
        }
    }
    let legit_peer = peer_key();
    let legit_payloads: Vec<(EnvelopeId, Vec<u8>)> = (0..LEGIT)
        .map(|_| {
            let mut e = letter.clone();
            e.id = EnvelopeId::random();
            (e.id, hop(&e, &url, &cert).payload)
        })
        .collect();
    let legit = {
        let (api, url) = (api.clone(), url.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            for (id, p) in legit_payloads {
                out.push((id, api.deliver(&url, &legit_peer, p).await));
            }
            out
        })
    };
    let flood: Vec<(String, Answer)> = tokio::time::timeout(DEADLINE, flood.join_all())
        .await
        .expect("the flood ends")
        .into_iter()
        .flatten()
        .collect();
    let legit = legit.await.unwrap();

    // The other mailbox got everything.
    for (id, a) in &legit {
        assert_eq!(
            *a,
            (StatusCode::OK, serde_json::json!({ "stored": true })),
            "delivery {id} to bob during the flood"
        );
    }
    // The flood: stored up to the quota, then 507; each peer cut to its burst, then 429.
    let stored = flood.iter().filter(|(_, a)| a.0 == StatusCode::OK).count();
    assert_eq!(stored as u64, QUOTA, "the victim holds exactly its quota");
    for (_, a) in &flood {
        assert!(
            matches!(
                (a.0, code(a)),
                (StatusCode::OK, _)
                    | (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                    | (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded")
            ),
            "{a:?}"
        );
    }
    assert!(
        flood
            .iter()
            .any(|(_, a)| a.0 == StatusCode::INSUFFICIENT_STORAGE)
    );
    let mut per_peer = std::collections::HashMap::<&str, usize>::new();
    for (peer, a) in &flood {
        if a.0 != StatusCode::TOO_MANY_REQUESTS {
            *per_peer.entry(peer).or_default() += 1;
        }
    }
    for (peer, passed) in &per_peer {
        // The burst, and at most one token refilled at one per minute.
        assert!(
            *passed <= BURST as usize + 1,
            "peer {peer} got {passed} deliveries past the limit"
        );
    }
    assert!(
        flood
            .iter()
            .any(|(_, a)| a.0 == StatusCode::TOO_MANY_REQUESTS)
    );

    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    let victim_token = api.token(&url, &victim_mb, &victim.keys).await;
    assert_eq!(api.items(&url, &bob_mb, &bob_token).await.len(), LEGIT);
    assert_eq!(
        api.items(&url, &victim_mb, &victim_token).await.len() as u64,
        QUOTA
    );
    node.stop().await;
}

/// Guards the per-user submit limit (`limits.submit_*`, checked before the body is read):
/// forty concurrent submissions by one user get the burst through and `429` with
/// `Retry-After` for the rest; another user submits meanwhile; only accepted hops are
/// queued, and each is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_submit_limit_holds_under_a_concurrent_flood() {
    const BURST: u32 = 5;
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.limits.submit_per_minute = 1;
        c.limits.submit_burst = BURST;
    })
    .await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (mallory, alice, carol) = (
        User::new("mallory@alpha.test"),
        User::new("alice@alpha.test"),
        User::new("carol@alpha.test"),
    );
    let mallory_mb = api.mailbox(&url, &mallory).await;
    let alice_mb = api.mailbox(&url, &alice).await;
    let carol_mb = api.mailbox(&url, &carol).await;
    let mallory_token = api.token(&url, &mallory_mb, &mallory.keys).await;
    let alice_token = api.token(&url, &alice_mb, &alice.keys).await;
    let proto = envelope(&mallory, &carol, carol_mb, "spam", "again");
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut e = proto.clone();
        e.id = EnvelopeId::random();
        let body = hop(&e, &url, &cert).encode();
        let (api, url, token) = (api.clone(), url.clone(), mallory_token.clone());
        flood.spawn(async move {
            let resp = api
                .http
                .post(url.join("/v1/submit"))
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = resp.headers().contains_key("retry-after");
            (answer(resp).await, retry_after)
        });
    }
    let legit = envelope(&alice, &carol, carol_mb, "hi", "not spam");
    let a = api
        .submit(&url, Some(&alice_token), hop(&legit, &url, &cert).encode())
        .await;
    assert_eq!(
        a.0,
        StatusCode::ACCEPTED,
        "another user during the flood: {a:?}"
    );
    let answers = tokio::time::timeout(DEADLINE, flood.join_all())
        .await
        .expect("the flood ends");
    let accepted = answers
        .iter()
        .filter(|(a, _)| a.0 == StatusCode::ACCEPTED)
        .count();
    assert!(
        (BURST as usize..=BURST as usize + 1).contains(&accepted),
        "{accepted} of 40 accepted with a burst of {BURST}"
    );
    for (a, retry_after) in answers.iter().filter(|(a, _)| a.0 != StatusCode::ACCEPTED) {
        assert_eq!(
            (a.0, code(a)),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert!(retry_after, "429 without Retry-After");
    }
    assert_eq!(
        api.metric(&url, "sealpost_hops_queued_total").await as usize,
        accepted + 1
    );
    let carol_token = api.token(&url, &carol_mb, &carol.keys).await;
    eventually("the accepted hops to arrive", || {
        let (api, url, t) = (api.clone(), url.clone(), carol_token.clone());
        async move { (api.items(&url, &carol_mb, &t).await.len() == accepted + 1).then_some(()) }
    })
    .await;
    node.stop().await;
}

/// Guards the byte quota (`limits.mailbox_quota`, decided inside the store's write): a
/// mailbox takes envelopes up to its byte budget, refuses the next with `507`, and takes it
/// once the owner has acked one; other mailboxes are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_quota_refuses_and_frees() {
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.limits.deliver_per_minute = 0;
        // A sealed letter is 4 KiB and some; two fit, three do not.
        c.limits.mailbox_quota = 10_000;
    })
    .await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, bob, carol) = (
        User::new("alice@alpha.test"),
        User::new("bob@beta.test"),
        User::new("carol@beta.test"),
    );
    let bob_mb = api.mailbox(&url, &bob).await;
    let carol_mb = api.mailbox(&url, &carol).await;
    let peer = peer_key();
    let deliver = |e: &sealpost_proto::envelope::Envelope| {
        let (api, url, peer) = (api.clone(), url.clone(), peer.clone());
        let p = hop(e, &url, &cert).payload;
        async move { api.deliver(&url, &peer, p).await }
    };
    let envs: Vec<_> = (0..3)
        .map(|i| envelope(&alice, &bob, bob_mb, &format!("n{i}"), "x"))
        .collect();
    assert!(envs[0].encode().len() * 2 <= 10_000 && envs[0].encode().len() * 3 > 10_000);
    assert_eq!(deliver(&envs[0]).await.0, StatusCode::OK);
    assert_eq!(deliver(&envs[1]).await.0, StatusCode::OK);
    let a = deliver(&envs[2]).await;
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded")
    );
    let other = envelope(&alice, &carol, carol_mb, "other", "mailbox");
    assert_eq!(deliver(&other).await.0, StatusCode::OK);
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    assert_eq!(
        api.ack(&url, &bob_mb, 1, Some(&bob_token)).await.0,
        StatusCode::NO_CONTENT
    );
    let a = deliver(&envs[2]).await;
    assert_eq!(a, (StatusCode::OK, serde_json::json!({ "stored": true })));
    assert_eq!(
        api.items(&url, &bob_mb, &bob_token).await,
        vec![(2, envs[1].id.to_hex()), (3, envs[2].id.to_hex())]
    );
    node.stop().await;
}

/// Reads until the peer closes (`true`) or `deadline` passes (`false`).
fn closed_by_peer(s: &mut TcpStream, deadline: std::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Guards `limits.max_connections` and `limits.header_timeout` (`server.rs`): twelve
/// connections that never send a byte hold at most the four slots, are each closed by the
/// node after the header timeout, and a real request then gets through, on a node that has
/// never had more than four connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed() {
    let mut node = TestNode::start(|c| {
        c.limits.max_connections = 4;
        c.limits.header_timeout = Secs::from_secs(1);
    })
    .await;
    let addr = node.addr;
    let idle: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let api = Api::default();
    let url = node.url.clone();
    let metrics = tokio::spawn(async move {
        api.http
            .get(url.join("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let closed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + DEADLINE;
        idle.into_iter()
            .map(|mut s| closed_by_peer(&mut s, deadline))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        closed.iter().all(|c| *c),
        "idle connections left open: {closed:?}"
    );
    let text = tokio::time::timeout(DEADLINE, metrics)
        .await
        .expect("a real request gets through")
        .unwrap();
    let open: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sealpost_connections_open "))
        .and_then(|v| v.parse().ok())
        .expect("connections gauge");
    assert!(open <= 4.0, "{open} connections open with a cap of 4");
    node.stop().await;
}

/// Guards `limits.header_timeout` against a drip-feeding client (slowloris): request
/// headers sent one byte every 100 ms are cut off after the timeout (one second here, the
/// whole header, not per byte), long before the client would have finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drip_fed_headers_are_cut_off() {
    let mut node = TestNode::start(|c| c.limits.header_timeout = Secs::from_secs(1)).await;
    let addr = node.addr;
    let sent = tokio::task::spawn_blocking(move || {
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {}\r\n\r\n",
            "s".repeat(100)
        );
        let mut s = TcpStream::connect(addr).unwrap();
        let mut sent = 0;
        for b in request.as_bytes() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
            // A closed connection shows on the next write or on a read.
            s.set_nonblocking(true).unwrap();
            let mut probe = [0u8; 64];
            let gone = matches!(s.read(&mut probe), Ok(0));
            s.set_nonblocking(false).unwrap();
            if gone {
                break;
            }
        }
        (sent, request.len())
    })
    .await
    .unwrap();
    assert!(
        sent.0 < sent.1,
        "the node read all {} header bytes of a drip-feeding client",
        sent.1
    );
    node.stop().await;
}
