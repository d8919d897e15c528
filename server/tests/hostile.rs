//! An attacker with no account and no key, on loopback (`spec/security.md` §2, issue 21):
//! each test runs one attack against a real node while a well-behaved client uses it, and
//! asserts that the node stays up for that client. Small by default (seconds each); with
//! `SEALPOST_ABUSE_SCALE=full` (`scripts/abuse.sh`) at the sizes of the original report,
//! printing `ABUSE` lines (peak RSS, the well-behaved client's p99) for BENCHMARKS.md.

mod common;
mod procnode;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use procnode::ProcNode;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_server::config::Secs;

fn full() -> bool {
    std::env::var("SEALPOST_ABUSE_SCALE").is_ok_and(|v| v == "full")
}

/// `small` in `make test`, `full` under `scripts/abuse.sh`.
fn scale(small: usize, full_size: usize) -> usize {
    if full() { full_size } else { small }
}

/// An API client whose connections come from `ip` (any 127.x address is loopback).
fn api_from(ip: &str) -> Api {
    Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .timeout(DEADLINE)
            .build()
            .unwrap(),
    }
}

/// The 99th percentile of `samples`, in milliseconds.
fn p99_ms(samples: &mut [Duration]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let i = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Sends a `POST /v1/deliver` with `headers` announcing `len` body bytes, then writes the
/// body until done or the node stops reading; returns the status line of the answer (or
/// what ended the exchange).
fn post_body(addr: SocketAddr, headers: &str, len: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "POST /v1/deliver HTTP/1.1\r\nHost: {addr}\r\ncontent-length: {len}\r\n{headers}\r\n"
    );
    if s.write_all(head.as_bytes()).is_err() {
        return "closed before the body".into();
    }
    let chunk = vec![0u8; 256 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.lines()
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| format!("no answer after {sent} body bytes"))
}

/// Guards `/v1/deliver`'s order (signature, standing and limits from the headers before
/// the body) and the body budget (`limits.body_bytes_in_flight*`). Many connections send
/// 32 MiB bodies under junk signatures at once, then under a real peer signature (the
/// digest of the body it then sends); the node's peak RSS stays within its baseline plus
/// the per-address body budget (64 MiB here: every attacker is on 127.0.0.1) plus 1 MiB of
/// read buffers per connection (hyper's ~400 KiB, doubled for the allocator) plus 48 MiB
/// of slack for the decrypt attempt and allocator. Before the fix every body was read
/// whole: 20 connections took the node past 640 MiB.
#[test]
fn a_body_flood_stays_within_the_memory_budget() {
    let conns = scale(20, 200);
    let budget_mb = 64;
    let mut node = ProcNode::start(
        &[
            "--set",
            &format!("limits.body_bytes_in_flight_per_ip={}", budget_mb << 20),
            "--set",
            "limits.max_connections_per_ip=1024",
            "--set",
            "log.filter=\"warn\"",
        ],
        &[],
    );
    let pid = node.pid().unwrap();
    let addr: SocketAddr = node.url.authority().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = api_from("127.0.0.2");
    let url = node.url.clone();
    // Warm up: a registration and a few requests, so the baseline includes what serving
    // costs anyway.
    rt.block_on(async {
        api.mailbox(&url, &User::new("bob@alpha.test")).await;
        for _ in 0..20 {
            api.http.get(url.join("/healthz")).send().await.unwrap();
        }
    });
    let baseline_kb = proc_kb(pid, "VmRSS");
    let len = sealpost_proto::limits::MAX_HOP_PAYLOAD_BYTES - 1;
    let junk = "signature: sig1=:AAAA:\r\nsignature-input: sig1=junk\r\ncontent-digest: sha-256=:AAAA:\r\n".to_string();
    let peer = peer_key();
    let zeros_digest = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(vec![0u8; len]);
        format!("sha-256=:{}:", base64_encode(&d))
    };
    let signed = signed_headers(&peer, node.url.authority(), &zeros_digest);
    let mut figures = Vec::new();
    for (label, headers) in [("junk-signature", junk), ("signed", signed)] {
        let mut latencies = Vec::new();
        let attack: Vec<_> = (0..conns)
            .map(|_| {
                let headers = headers.clone();
                std::thread::spawn(move || post_body(addr, &headers, len))
            })
            .collect();
        // A well-behaved client meanwhile.
        rt.block_on(async {
            while !attack.iter().all(|t| t.is_finished()) {
                let t = Instant::now();
                let r = api.http.get(url.join("/healthz")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                latencies.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let answers: Vec<String> = attack.into_iter().map(|t| t.join().unwrap()).collect();
        for a in &answers {
            assert!(
                !a.contains(" 200 "),
                "{label}: a junk body was accepted: {a}"
            );
        }
        let peak_kb = proc_kb(pid, "VmHWM");
        let bound_kb = baseline_kb + (budget_mb + 48) * 1024 + conns as u64 * 1024;
        figures.push(format!(
            "ABUSE body-flood {label} connections={conns} baseline_rss_mb={} peak_rss_mb={} p99_ms={:.1} answers={:?}",
            baseline_kb / 1024,
            peak_kb / 1024,
            p99_ms(&mut latencies),
            summarize(&answers),
        ));
        assert!(
            peak_kb <= bound_kb,
            "{label}: peak RSS {peak_kb} kB above the bound {bound_kb} kB (baseline {baseline_kb} kB)"
        );
    }
    for f in figures {
        println!("{f}");
    }
    node.terminate();
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Request-signature headers by `key` over a body whose digest header is `digest`.
fn signed_headers(key: &ed25519_dalek::SigningKey, authority: &str, digest: &str) -> String {
    use ed25519_dalek::Signer;
    let keyid = base64_encode(&key.verifying_key().to_bytes());
    let params = format!(
        r#"("@method" "@authority" "@path" "content-digest");created={};keyid="{keyid}";alg="ed25519""#,
        now()
    );
    let base = format!(
        "\"@method\": POST\n\"@authority\": {authority}\n\"@path\": /v1/deliver\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let sig = key.sign(base.as_bytes());
    format!(
        "content-digest: {digest}\r\nsignature-input: sig1={params}\r\nsignature: sig1=:{}:\r\n",
        base64_encode(&sig.to_bytes())
    )
}

/// Status lines and how often each came.
fn summarize(answers: &[String]) -> Vec<(String, usize)> {
    let mut m = std::collections::BTreeMap::<String, usize>::new();
    for a in answers {
        *m.entry(a.clone()).or_default() += 1;
    }
    m.into_iter().collect()
}

/// Sends `GET /healthz` on a kept-alive connection; the status code, or `None` once the
/// node has closed it.
fn keepalive_get(s: &mut TcpStream) -> Option<u16> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            // Closed; a refusal answers before closing.
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1)?.parse().ok()
}

/// Guards `limits.max_connections_per_ip` and the headroom it leaves: one address opens
/// as many kept-alive connections as the node has slots and keeps them busy; it gets its
/// share and `503` for the rest, and a client from another address is served throughout.
/// Before the fix the flood held every slot and the fresh client waited in the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_client_is_served_while_one_address_holds_its_share() {
    let (slots, share) = if full() { (1024, 64) } else { (16, 4) };
    let mut node = TestNode::start(|c| {
        c.limits.max_connections = slots;
        c.limits.max_connections_per_ip = share;
        c.limits.header_timeout = Secs::from_secs(60);
    })
    .await;
    let addr = node.addr;
    // The flood: every slot, from 127.0.0.1, each connection kept busy.
    let flood = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..slots {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let status = keepalive_get(&mut s);
            statuses.push(status);
            if status == Some(200) {
                open.push(s);
            }
        }
        (open, statuses)
    });
    let (mut open, statuses) = tokio::time::timeout(DEADLINE, flood)
        .await
        .expect("the flood connects")
        .unwrap();
    let served = statuses.iter().filter(|s| **s == Some(200)).count();
    assert_eq!(served, share, "one address got its share: {statuses:?}");
    assert!(
        statuses
            .iter()
            .filter(|s| **s != Some(200))
            .all(|s| matches!(s, Some(503) | None)),
        "the rest were refused: {statuses:?}"
    );
    // The fresh client, from another address, while the flood keeps its connections busy.
    let fresh = api_from("127.0.0.2");
    let url = node.url.clone();
    let mut latencies = Vec::new();
    for i in 0..scale(20, 500) {
        let t = Instant::now();
        let r = tokio::time::timeout(DEADLINE, fresh.http.get(url.join("/healthz")).send())
            .await
            .expect("the fresh client is answered while the flood holds its share")
            .unwrap();
        latencies.push(t.elapsed());
        assert_eq!(r.status(), StatusCode::OK);
        if i % 5 == 0 {
            open = tokio::task::spawn_blocking(move || {
                for s in &mut open {
                    assert_eq!(
                        keepalive_get(s),
                        Some(200),
                        "the flood's own share is served"
                    );
                }
                open
            })
            .await
            .unwrap();
        }
    }
    println!(
        "ABUSE slot-flood slots={slots} share={share} fresh_client_requests={} p99_ms={:.1}",
        latencies.len(),
        p99_ms(&mut latencies)
    );
    drop(open);
    node.stop().await;
}

/// Guards the nonce table against one client (`limits.anonymous_*`, no longer exempt on
/// loopback by default; at most `MAX_NONCES_PER_MAILBOX` outstanding per mailbox): one
/// address floods challenges for a victim's mailbox; it is cut to its burst with 429, and
/// meanwhile the victim and other users, from other addresses, log in. Before the fix the
/// loopback flood was unlimited and, at full size, filled the shared table (200,000) so that
/// every login got 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_log_in_during_a_challenge_flood() {
    let flood_size = scale(400, 250_000);
    let burst = 60;
    let mut node = TestNode::start(|c| {
        c.limits.anonymous_burst_per_ip = burst;
        // One a minute: no refill worth counting while the test runs.
        c.limits.anonymous_per_minute_per_ip = 1;
        c.limits.lookups_per_minute_per_ip = 0;
    })
    .await;
    let url = node.url.clone();
    let users: Vec<(User, Api)> = (0..3)
        .map(|i| {
            (
                User::new(&format!("u{i}@alpha.test")),
                api_from(&format!("127.0.0.{}", i + 2)),
            )
        })
        .collect();
    let mut mailboxes = Vec::new();
    for (u, api) in &users {
        mailboxes.push(api.mailbox(&url, u).await);
    }
    let victim = mailboxes[0];
    let attacker = Api::default();
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limited = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    let flood_start = Instant::now();
    let streams = 8;
    for _ in 0..streams {
        let (api, url, ok, limited) = (attacker.clone(), url.clone(), ok.clone(), limited.clone());
        flood.spawn(async move {
            for _ in 0..flood_size / streams {
                let a = api.challenge(&url, &victim).await;
                let counter = match a.0 {
                    StatusCode::OK => &ok,
                    StatusCode::TOO_MANY_REQUESTS => &limited,
                    other => panic!("challenge flood: {other} {a:?}"),
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    // Logins start once the flood has spent its burst (so that its last issued challenges
    // cannot replace a user's; before the fix, the flood never was refused).
    let total = flood_size / streams * streams;
    let load = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    while load(&limited) == 0 && load(&ok) + load(&limited) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::new();
    let mut logins = 0;
    loop {
        for ((u, api), mb) in users.iter().zip(&mailboxes) {
            let t = Instant::now();
            let c = api.challenge(&url, mb).await;
            assert_eq!(
                c.0,
                StatusCode::OK,
                "a user's challenge during the flood: {c:?}"
            );
            let tok = api
                .answer_challenge(&url, &url, mb, c.1["nonce"].as_str().unwrap(), &u.keys)
                .await;
            assert_eq!(
                tok.0,
                StatusCode::OK,
                "a user's login during the flood: {tok:?}"
            );
            latencies.push(t.elapsed());
            logins += 1;
        }
        // Each user logs in at least a few times, and keeps logging in while the flood runs
        // (within the users' own per-address allowance).
        if flood.is_empty() || logins >= 3 * (burst as usize - 2) {
            break;
        }
        if let Some(r) = flood.try_join_next() {
            r.unwrap();
        }
    }
    tokio::time::timeout(DEADLINE * 10, async {
        while flood.join_next().await.is_some() {}
    })
    .await
    .expect("the flood ends");
    let (ok, limited) = (
        ok.load(std::sync::atomic::Ordering::Relaxed),
        limited.load(std::sync::atomic::Ordering::Relaxed),
    );
    // The burst, and the refill of one a minute while the flood ran.
    let refill = flood_start.elapsed().as_secs() as usize / 60 + 1;
    assert!(
        ok <= burst as usize + refill,
        "{ok} of {flood_size} flood challenges issued with a burst of {burst} and {refill} refilled"
    );
    assert_eq!(ok + limited, flood_size / streams * streams);
    println!(
        "ABUSE challenge-flood requests={flood_size} issued={ok} refused={limited} logins={logins} p99_ms={:.1}",
        p99_ms(&mut latencies)
    );
    node.stop().await;
}

/// A record for `user` homed on the node, with the given `expires` and `sequence`.
fn record_with(
    user: &User,
    node: &TestNode,
    mailbox: sealpost_proto::MailboxId,
    expires: u64,
    sequence: u64,
) -> Vec<u8> {
    let rec = MailboxRecord {
        address: user.address.clone(),
        cert: sealpost_proto::identity::cert_to_bytes(&user.cert),
        homes: vec![Home {
            url: node.url.clone(),
            node_key: node.node_key,
            mailbox,
        }],
        created: now(),
        expires,
        sequence,
    };
    SignedRecord::sign(&rec, &user.keys).unwrap().encode()
}

/// Guards `MailboxRecord::check_bounds` at `PUT /v1/records`: a record with `expires` or
/// `sequence` at 2^64-1 (which no later record could replace) is refused with 422
/// `record_out_of_bounds` and not stored; the owner's real records then publish and
/// replace each other. Before the fix the maximal record was stored and every later
/// publish got 409.
#[tokio::test]
async fn a_record_that_would_outlive_its_successors_is_refused() {
    let mut node = TestNode::start(|_| {}).await;
    let api = Api::default();
    let alice = User::new("alice@alpha.test");
    let mb = api.mailbox(&node.url, &alice).await;
    let addr = alice.address.as_str().to_string();
    let now_ms = now() * 1000;
    for (expires, sequence) in [(u64::MAX, now_ms), (now() + 3600, u64::MAX)] {
        let a = api
            .put_record(
                &node.url,
                &addr,
                record_with(&alice, &node, mb, expires, sequence),
            )
            .await;
        assert_eq!(
            (a.0, code(&a)),
            (StatusCode::UNPROCESSABLE_ENTITY, "record_out_of_bounds"),
            "expires {expires}, sequence {sequence}: {a:?}"
        );
    }
    let get = api
        .http
        .get(node.url.join(&format!("/v1/records/{addr}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND, "nothing was stored");
    let year = now() + 365 * 86_400;
    for sequence in [now_ms, now_ms + 1] {
        let a = api
            .put_record(
                &node.url,
                &addr,
                record_with(&alice, &node, mb, year, sequence),
            )
            .await;
        assert_eq!(a.0, StatusCode::NO_CONTENT, "sequence {sequence}: {a:?}");
    }
    node.stop().await;
}

/// Guards `limits.lookups_*_per_ip`: one address looking up records is cut off after its
/// burst (429 with Retry-After), while another address still gets answers. Before the fix
/// lookups were unlimited (about 15,000/s), so addresses could be harvested by dictionary.
#[tokio::test]
async fn record_lookups_are_limited_per_address() {
    let burst = 30;
    let mut node = TestNode::start(|c| {
        c.limits.lookups_per_minute_per_ip = 1;
        c.limits.lookups_burst_per_ip = burst;
    })
    .await;
    let harvester = Api::default();
    let mut statuses = Vec::new();
    for i in 0..scale(100, 20_000) {
        let r = harvester
            .http
            .get(node.url.join(&format!("/v1/records/guess{i}@alpha.test")))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status());
    }
    let answered = statuses
        .iter()
        .filter(|s| **s == StatusCode::NOT_FOUND)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        answered <= burst as usize + 1,
        "{answered} lookups answered, burst {burst}"
    );
    assert_eq!(answered + limited, statuses.len(), "{statuses:?}");
    let other = api_from("127.0.0.2");
    let r = other
        .http
        .get(node.url.join("/v1/records/someone@alpha.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another address is still answered"
    );
    println!(
        "ABUSE lookup-flood requests={} answered={answered} refused={limited}",
        statuses.len()
    );
    node.stop().await;
}

/// Guards `limits.new_peers_*_per_ip`: one address delivering under a fresh peer key each
/// time is cut off after the burst, while a peer key that has delivered before keeps
/// delivering from the same address. Before the fix each fresh key got its own full
/// per-peer allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_peer_keys_do_not_escape_the_per_peer_limit() {
    let burst = 5;
    let mut node = TestNode::start(|c| {
        c.limits.new_peers_per_minute_per_ip = 1;
        c.limits.new_peers_burst_per_ip = burst;
    })
    .await;
    let api = Api::default();
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, bob) = (User::new("alice@beta.test"), User::new("bob@alpha.test"));
    let bob_mb = api_from("127.0.0.2").mailbox(&url, &bob).await;
    let regular = peer_key();
    let payload = || hop(&envelope(&alice, &bob, bob_mb, "hi", "x"), &url, &cert).payload;
    assert_eq!(
        api.deliver(&url, &regular, payload()).await.0,
        StatusCode::OK
    );
    let mut answers = Vec::new();
    for _ in 0..scale(20, 200) {
        answers.push(api.deliver(&url, &peer_key(), payload()).await);
    }
    let stored = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert!(
        stored <= burst as usize,
        "{stored} fresh keys delivered, burst {burst}: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.0 != StatusCode::OK)
            .all(|a| (a.0, code(a)) == (StatusCode::TOO_MANY_REQUESTS, "rate_limited")),
        "{answers:?}"
    );
    let a = api.deliver(&url, &regular, payload()).await;
    assert_eq!(
        a.0,
        StatusCode::OK,
        "a peer with a history still delivers: {a:?}"
    );
    node.stop().await;
}

/// Guards `limits.trusted_proxies`: behind a trusted proxy each client is limited on its
/// own (from `X-Forwarded-For` / `Forwarded`); from an untrusted peer those headers are
/// ignored, so a client cannot pick a fresh address per request.
#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    for trusted in [true, false] {
        let mut node = TestNode::start(|c| {
            c.limits.lookups_per_minute_per_ip = 1;
            c.limits.lookups_burst_per_ip = 2;
            if trusted {
                c.limits.trusted_proxies = vec!["127.0.0.1".into()];
            }
        })
        .await;
        let api = Api::default();
        let mut statuses = Vec::new();
        for i in 0..6 {
            let client = format!("203.0.113.{}", i / 2);
            let mut req = api.http.get(node.url.join("/v1/records/x@alpha.test"));
            req = if i % 2 == 0 {
                req.header("x-forwarded-for", format!("198.51.100.7, {client}"))
            } else {
                req.header("forwarded", format!("for=\"{client}:4711\""))
            };
            statuses.push(req.send().await.unwrap().status().as_u16());
        }
        if trusted {
            // Three clients, two lookups each: all within each one's burst.
            assert_eq!(statuses, vec![404; 6], "behind a trusted proxy");
        } else {
            assert_eq!(
                statuses,
                vec![404, 404, 429, 429, 429, 429],
                "untrusted peer"
            );
        }
        node.stop().await;
    }
}

/// Guards `limits.max_requests_per_connection`: a kept-alive connection is closed after
/// that many requests, so a client cannot hold a slot for ever by asking slowly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_its_requests() {
    let mut node = TestNode::start(|c| c.limits.max_requests_per_connection = 3).await;
    let addr = node.addr;
    let statuses = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        (0..5).map(|_| keepalive_get(&mut s)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(statuses, vec![Some(200), Some(200), Some(200), None, None]);
    node.stop().await;
}

/// Guards `limits.outbound_hops_per_ip`: accounts registered from one address share that
/// address's outbound queue allowance (507 beyond), so registering more accounts does not
/// multiply the per-user quota; a user from another address still submits. Before the fix
/// each new account brought a fresh per-user quota.
#[tokio::test]
async fn more_accounts_from_one_address_do_not_multiply_the_outbound_quota() {
    let mut node = TestNode::start(|c| {
        c.limits.outbound_hops_per_user = 100;
        c.limits.outbound_hops_per_ip = 3;
        c.relay.allow_private_destinations = true;
        // Retries far apart: the hops stay queued while the test runs.
        c.relay.retry_base = Secs::from_secs(3600);
        c.relay.retry_max = Secs::from_secs(3600);
    })
    .await;
    let api = Api::default();
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    // Nothing listens on port 9 of loopback: every hop waits for a retry.
    let nowhere = sealpost_proto::NodeUrl::parse("http://127.0.0.1:9").unwrap();
    let hop_bytes = |n: u8| {
        let env = sealpost_proto::envelope::Envelope {
            id: sealpost_proto::EnvelopeId([n; 16]),
            mailbox: sealpost_proto::MailboxId([7; 16]),
            sealed: vec![0xc1; 4096],
            token: vec![],
        };
        sealpost_proto::envelope::HopWrapper::wrap(&env, nowhere.clone(), &cert)
            .unwrap()
            .encode()
    };
    let mut answers = Vec::new();
    for (i, name) in ["m1", "m2", "m3"].iter().enumerate() {
        let u = User::new(&format!("{name}@alpha.test"));
        let mb = api.mailbox(&url, &u).await;
        let t = api.token(&url, &mb, &u.keys).await;
        for j in 0..2 {
            answers.push(
                api.submit(&url, Some(&t), hop_bytes((i * 2 + j) as u8))
                    .await,
            );
        }
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0.as_u16()).collect();
    assert_eq!(statuses, vec![202, 202, 202, 507, 507, 507], "{answers:?}");
    assert!(answers[3..].iter().all(|a| code(a) == "quota_exceeded"));
    let other = api_from("127.0.0.2");
    let dave = User::new("dave@alpha.test");
    let mb = other.mailbox(&url, &dave).await;
    let t = other.token(&url, &mb, &dave.keys).await;
    let a = other.submit(&url, Some(&t), hop_bytes(9)).await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "another address: {a:?}");
    node.stop().await;
}

/// Guards `limits.max_connection_age`: a kept-alive connection that asks for something
/// every 100 ms (so the header timeout never fires) is closed once it is that old, so an
/// address cannot hold its share of slots for ever. Before the fix it stayed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_kept_alive_connection_is_closed_at_its_age() {
    let mut node = TestNode::start(|c| {
        c.limits.max_connection_age = Secs::from_secs(1);
        c.limits.header_timeout = Secs::from_secs(60);
    })
    .await;
    let addr = node.addr;
    let served = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let start = Instant::now();
        let mut served = 0;
        while start.elapsed() < DEADLINE {
            if keepalive_get(&mut s) != Some(200) {
                return Some(served);
            }
            served += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .unwrap();
    assert!(
        served.is_some_and(|n| n >= 1),
        "the connection was not closed at its age: {served:?}"
    );
    node.stop().await;
}
