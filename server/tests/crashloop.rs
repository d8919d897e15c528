//! Crash consistency: the real `sealpost-node`, under concurrent load, is SIGKILLed at a
//! random moment, checked on disk, restarted on the same port, and checked through the API,
//! round after round. What it guards (the group-commit writer answers only after a synced
//! WAL write, and every decision is made inside the write; see `spec/security.md`):
//!
//! - **deliver**: every delivery answered `200` is in its mailbox exactly once, with the
//!   bytes that were sent; an unanswered one is there at most once, and exactly once after
//!   it is sent again. An ack answered `204` never comes back.
//! - **relay queue**: every hop answered `202` on submit reaches the destination node
//!   (eventually, exactly once), although the sender node keeps dying.
//! - **gateway**: every legacy message answered `250` is in the recipient's mailbox exactly
//!   once; one sent again after a lost answer is stored once.
//! - **on disk**, with the node dead: per-mailbox counters match the index, every index
//!   entry has its envelope (which decodes, and names its mailbox), dedupe entries point at
//!   their sequence numbers, queued hops have metadata and payload.
//!
//! `SEALPOST_CRASH_ROUNDS` sets the number of rounds (default 5, as in `make test`);
//! `scripts/crashloop.sh` runs 20.

mod common;
mod legacy;
mod procnode;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use legacy::Smtp;
use procnode::ProcNode;
use rand::{Rng, RngCore};
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::seal::{encrypt_to, open};
use sealpost_proto::{EnvelopeId, MailboxId, NodeUrl};

const DEFAULT_ROUNDS: usize = 5;
/// Concurrent senders of each kind, and how much each sends at most per round: they keep
/// going until the kill, these only bound a round.
const DELIVER_TASKS: usize = 4;
const DELIVERIES_PER_TASK: usize = 400;
const SUBMIT_TASKS: usize = 2;
const SUBMITS_PER_TASK: usize = 200;
const SMTP_TASKS: usize = 2;
const SMTP_PER_TASK: usize = 150;
const ACKS_PER_ROUND: usize = 60;
/// The kill comes after a random delay in this range (milliseconds after the load starts).
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 10..=700;
const GATEWAY_DOMAIN: &str = "gw.test";

/// The gateway's recipient.
fn dave() -> String {
    format!("dave@{GATEWAY_DOMAIN}")
}

fn rounds() -> usize {
    std::env::var("SEALPOST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

/// What the test sent and what the node answered.
#[derive(Default)]
struct Ledger {
    /// Every envelope delivered to a bob: id → (mailbox, encoded envelope).
    sent: HashMap<EnvelopeId, (MailboxId, Vec<u8>)>,
    /// Deliveries answered `200`.
    delivered: HashSet<EnvelopeId>,
    /// Deliveries without an answer this round (the node died): sent again after restart.
    unanswered: Vec<(EnvelopeId, Vec<u8>)>,
    /// Acks answered `204`: these envelopes must never come back.
    deleted: HashSet<EnvelopeId>,
    /// Acks without an answer: the envelope may be gone or not (never there twice).
    maybe_deleted: HashSet<EnvelopeId>,
    /// What the last check listed, per bob mailbox: candidates for acks.
    listed: HashMap<MailboxId, Vec<(u64, EnvelopeId)>>,
    /// Hops submitted (all) and answered `202`, by the id of the envelope inside.
    submitted: HashSet<EnvelopeId>,
    queued: HashSet<EnvelopeId>,
    /// Legacy messages sent (all) and answered `250`, by subject; unanswered ones this
    /// round, sent again after restart.
    smtp_sent: HashSet<String>,
    smtp_stored: HashSet<String>,
    smtp_unanswered: Vec<String>,
    /// Dave's mailbox as seen so far: seq → subject.
    dave_seen: BTreeMap<u64, String>,
    /// Unexpected answers (a test failure, reported after the round).
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

/// Everything the load needs to know about the world.
#[derive(Clone)]
struct World {
    api: Api,
    url: NodeUrl,
    cert: Cert,
    bobs: Vec<MailboxId>,
    peer: SigningKey,
    alice_token: String,
    dest_url: NodeUrl,
    dest_cert: Cert,
    carol_mb: MailboxId,
    smtp: SocketAddr,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let rounds = rounds();
    // The destination of relayed hops: never killed.
    let mut dest = TestNode::start(|c| c.limits.deliver_per_minute = 0).await;
    let setup = Api::default();
    let carol = User::new("carol@dest.test");
    let carol_mb = setup.mailbox(&dest.url, &carol).await;
    let (_, dest_cert) = setup.descriptor(&dest.url).await;

    let mut node = ProcNode::start(
        &[
            "--set",
            "limits.deliver_per_minute=0",
            "--set",
            "limits.submit_per_minute=0",
            "--set",
            "relay.retry_base=0.05",
            "--set",
            "relay.retry_max=0.5",
            "--set",
            "gateway.enabled=true",
            "--set",
            // No DNS in this test: sender checks are tests/tests/gateway_auth_e2e.rs's.
            "gateway.verify=false",
            "--set",
            &format!("gateway.domain=\"{GATEWAY_DOMAIN}\""),
            "--set",
            "gateway.listen=\"127.0.0.1:0\"",
        ],
        &[],
    );
    let url = node.url.clone();
    let (desc, cert) = setup.descriptor(&url).await;
    let bob_users: Vec<User> = (0..3)
        .map(|i| User::new(&format!("bob{i}@beta.test")))
        .collect();
    let mut bobs = Vec::new();
    for b in &bob_users {
        bobs.push(setup.mailbox(&url, b).await);
    }
    let alice = User::new("alice@alpha.test");
    let alice_mb = setup.mailbox(&url, &alice).await;
    let dave = User::new(&dave());
    let dave_mb = setup.mailbox(&url, &dave).await;
    let a = setup
        .put_record(
            &url,
            dave.address.as_str(),
            record(&dave, &[(&url, desc.node_key, dave_mb)], 1),
        )
        .await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "dave's record: {a:?}");

    let ledger: Shared = Arc::default();
    for round in 1..=rounds {
        // A fresh client each round: pooled connections died with the node.
        let api = Api::default();
        let world = World {
            api: api.clone(),
            url: url.clone(),
            cert: cert.clone(),
            bobs: bobs.clone(),
            peer: peer_key(),
            alice_token: api.token(&url, &alice_mb, &alice.keys).await,
            dest_url: dest.url.clone(),
            dest_cert: dest_cert.clone(),
            carol_mb,
            smtp: node.smtp.expect("the gateway listens"),
        };
        let bob_tokens = tokens(&api, &url, &bobs, &bob_users).await;

        // --- load, and a SIGKILL at a random moment ---
        let mut load = tokio::task::JoinSet::new();
        for _ in 0..DELIVER_TASKS {
            load.spawn(deliver_load(world.clone(), ledger.clone()));
        }
        for _ in 0..SUBMIT_TASKS {
            load.spawn(submit_load(world.clone(), ledger.clone()));
        }
        for t in 0..SMTP_TASKS {
            load.spawn(smtp_load(world.clone(), ledger.clone(), round, t));
        }
        load.spawn(ack_load(world.clone(), bob_tokens, ledger.clone()));
        let delay = rand::rng().random_range(KILL_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        node.kill();
        tokio::time::timeout(DEADLINE, async {
            while let Some(r) = load.join_next().await {
                r.expect("load task");
            }
        })
        .await
        .expect("the load ends once the node is dead");

        // --- on disk, with the node dead ---
        let disk = check_store(&node.data_dir(), &ledger.lock().unwrap());

        // --- back up: resend what got no answer, then check through the API ---
        node.restart();
        let api = Api::default();
        let (resent, smtp_resent) = resend_unanswered(&api, &world, &ledger).await;
        let bob_tokens = tokens(&api, &url, &bobs, &bob_users).await;
        let listed = check_mailboxes(&api, &url, &bobs, &bob_tokens, &ledger).await;
        let dave_token = api.token(&url, &dave_mb, &dave.keys).await;
        let legacy = check_legacy(&api, &url, dave_mb, &dave_token, &dave, &ledger).await;
        let l = ledger.lock().unwrap();
        assert!(l.errors.is_empty(), "round {round}: {:#?}", l.errors);
        println!(
            "crash round {round}/{rounds}: killed after {delay} ms; {} deliveries acknowledged \
             ({resent} unanswered, sent again), {} acks, {} hops queued, {} legacy mails stored \
             ({smtp_resent} sent again); mailboxes hold {listed}, legacy {legacy}; on disk: {disk}; \
             0 lost, 0 doubled",
            l.delivered.len(),
            l.deleted.len(),
            l.queued.len(),
            l.smtp_stored.len(),
        );
    }

    // Every hop the node ever accepted reaches the destination, once.
    let dest_token = setup.token(&dest.url, &carol_mb, &carol.keys).await;
    let expected: BTreeSet<String> = ledger
        .lock()
        .unwrap()
        .queued
        .iter()
        .map(|id| id.to_hex())
        .collect();
    let submitted: HashSet<String> = ledger
        .lock()
        .unwrap()
        .submitted
        .iter()
        .map(|id| id.to_hex())
        .collect();
    let arrived = eventually("every queued hop at the destination", || {
        let (api, dest_url, expected) = (setup.clone(), dest.url.clone(), expected.clone());
        let token = dest_token.clone();
        async move {
            let ids = list_all(&api, &dest_url, &carol_mb, &token).await;
            let have: BTreeSet<String> = ids.iter().map(|(_, id)| id.to_hex()).collect();
            expected.is_subset(&have).then_some(ids)
        }
    })
    .await;
    let unique: HashSet<_> = arrived.iter().map(|(_, id)| id.to_hex()).collect();
    assert_eq!(unique.len(), arrived.len(), "a hop arrived twice");
    assert!(
        unique.is_subset(&submitted),
        "the destination holds something never submitted"
    );
    println!(
        "crash loop: {rounds} rounds passed; {} queued hops all delivered once ({} arrived in all)",
        expected.len(),
        arrived.len()
    );

    let status = node.terminate();
    assert!(status.success(), "graceful exit after the loop: {status:?}");
    check_store(&node.data_dir(), &ledger.lock().unwrap());
    dest.stop().await;
}

async fn tokens(api: &Api, url: &NodeUrl, bobs: &[MailboxId], users: &[User]) -> Vec<String> {
    let mut out = Vec::new();
    for (mb, u) in bobs.iter().zip(users) {
        out.push(api.token(url, mb, &u.keys).await);
    }
    out
}

/// POSTs a signed delivery; `Err` when the node did not answer.
async fn try_deliver(w: &World, payload: Vec<u8>) -> Result<Answer, reqwest::Error> {
    let h = sealpost_proto::httpsig::sign_request(
        &w.peer,
        "POST",
        w.url.authority(),
        "/v1/deliver",
        &payload,
        now(),
    );
    let resp = w
        .api
        .http
        .post(w.url.join("/v1/deliver"))
        .header("content-digest", h.content_digest)
        .header("signature-input", h.signature_input)
        .header("signature", h.signature)
        .body(payload)
        .send()
        .await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

/// A random envelope for `mailbox`: mostly up to 16 KiB (from 4 KiB on, values go to blob
/// files), one in twenty up to 200 KiB.
fn random_envelope(mailbox: MailboxId) -> Envelope {
    let mut rng = rand::rng();
    let size = if rng.random_ratio(1, 20) {
        rng.random_range(64 * 1024..200 * 1024)
    } else {
        rng.random_range(1..16 * 1024)
    };
    let mut sealed = vec![0u8; size];
    rng.fill_bytes(&mut sealed);
    Envelope {
        id: EnvelopeId::random(),
        mailbox,
        sealed,
        token: Vec::new(),
    }
}

async fn deliver_load(w: World, ledger: Shared) {
    for _ in 0..DELIVERIES_PER_TASK {
        let mailbox = w.bobs[rand::rng().random_range(0..w.bobs.len())];
        let env = random_envelope(mailbox);
        let encoded = env.encode();
        let payload = encrypt_to(&encoded, &w.cert).expect("encrypt to the node");
        ledger
            .lock()
            .unwrap()
            .sent
            .insert(env.id, (mailbox, encoded));
        match try_deliver(&w, payload.clone()).await {
            Ok((StatusCode::OK, _)) => {
                ledger.lock().unwrap().delivered.insert(env.id);
            }
            Ok(other) => {
                ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("deliver: {other:?}"));
                return;
            }
            Err(_) => {
                ledger.lock().unwrap().unanswered.push((env.id, payload));
                return;
            }
        }
    }
}

async fn submit_load(w: World, ledger: Shared) {
    for _ in 0..SUBMITS_PER_TASK {
        let env = random_envelope(w.carol_mb);
        let hop = HopWrapper::wrap(&env, w.dest_url.clone(), &w.dest_cert).expect("wrap");
        ledger.lock().unwrap().submitted.insert(env.id);
        let sent = w
            .api
            .http
            .post(w.url.join("/v1/submit"))
            .bearer_auth(&w.alice_token)
            .body(hop.encode())
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                ledger.lock().unwrap().queued.insert(env.id);
            }
            Ok(r) => {
                let a = answer(r).await;
                ledger.lock().unwrap().errors.push(format!("submit: {a:?}"));
                return;
            }
            // No answer: the hop may or may not be queued; it may arrive (once) or not.
            Err(_) => return,
        }
    }
}

/// Acks a few envelopes the last check listed.
async fn ack_load(w: World, tokens: Vec<String>, ledger: Shared) {
    let picks: Vec<(usize, u64, EnvelopeId)> = {
        let l = ledger.lock().unwrap();
        let mut rng = rand::rng();
        let mut picks = Vec::new();
        for (i, mb) in w.bobs.iter().enumerate() {
            for (seq, id) in l.listed.get(mb).into_iter().flatten() {
                if rng.random_ratio(1, 3) && picks.len() < ACKS_PER_ROUND {
                    picks.push((i, *seq, *id));
                }
            }
        }
        picks
    };
    for (i, seq, id) in picks {
        let sent = w
            .api
            .http
            .delete(w.url.join(&format!("/v1/mailbox/{}/{seq}", w.bobs[i])))
            .bearer_auth(&tokens[i])
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                ledger.lock().unwrap().deleted.insert(id);
            }
            Ok(r) => {
                let a = answer(r).await;
                ledger.lock().unwrap().errors.push(format!("ack: {a:?}"));
                return;
            }
            // No answer: the envelope may be gone or not; it is never there twice.
            Err(_) => {
                ledger.lock().unwrap().maybe_deleted.insert(id);
                return;
            }
        }
    }
}

async fn smtp_load(w: World, ledger: Shared, round: usize, task: usize) {
    for i in 0..SMTP_PER_TASK {
        let subject = format!("crash {round}.{task}.{i}");
        ledger.lock().unwrap().smtp_sent.insert(subject.clone());
        match legacy::send(w.smtp, &dave(), &subject).await {
            Smtp::Stored => {
                ledger.lock().unwrap().smtp_stored.insert(subject);
            }
            Smtp::Refused(_, why) => {
                ledger.lock().unwrap().errors.push(format!("smtp: {why}"));
                return;
            }
            Smtp::NoAnswer => {
                ledger.lock().unwrap().smtp_unanswered.push(subject);
                return;
            }
        }
    }
}

/// After the restart: every delivery and legacy message that got no answer is sent again,
/// and must now be accepted. Returns how many of each.
async fn resend_unanswered(api: &Api, w: &World, ledger: &Shared) -> (usize, usize) {
    let (deliveries, mails) = {
        let mut l = ledger.lock().unwrap();
        (
            std::mem::take(&mut l.unanswered),
            std::mem::take(&mut l.smtp_unanswered),
        )
    };
    let w = World {
        api: api.clone(),
        ..w.clone()
    };
    for (id, payload) in &deliveries {
        let a = try_deliver(&w, payload.clone())
            .await
            .expect("the restarted node answers");
        assert_eq!(a.0, StatusCode::OK, "delivery sent again: {a:?}");
        ledger.lock().unwrap().delivered.insert(*id);
    }
    for subject in &mails {
        match legacy::send(w.smtp, &dave(), subject).await {
            Smtp::Stored => {
                ledger.lock().unwrap().smtp_stored.insert(subject.clone());
            }
            Smtp::Refused(_, why) => panic!("legacy mail sent again: {why}"),
            Smtp::NoAnswer => panic!("the restarted gateway does not answer"),
        }
    }
    (deliveries.len(), mails.len())
}

/// Every `(seq, id)` of a mailbox, page by page.
async fn list_all(
    api: &Api,
    url: &NodeUrl,
    mailbox: &MailboxId,
    token: &str,
) -> Vec<(u64, EnvelopeId)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let resp = api
            .http
            .get(url.join(&format!("/v1/mailbox/{mailbox}?after={after}&limit=1000")))
            .bearer_auth(token)
            .send()
            .await
            .expect("list");
        let a = answer(resp).await;
        assert_eq!(a.0, StatusCode::OK, "list: {a:?}");
        let items = a.1["items"].as_array().expect("items").clone();
        if items.is_empty() {
            return out;
        }
        for i in items {
            let seq = i["seq"].as_u64().expect("seq");
            let id = EnvelopeId::from_hex(i["id"].as_str().expect("id")).expect("hex id");
            out.push((seq, id));
        }
        after = a.1["next"].as_u64().expect("next");
    }
}

/// Every acknowledged delivery is listed once (unless acked), nothing unknown is listed,
/// and each envelope new since the last check serves the bytes that were sent (the disk
/// check compares them all). Returns the number listed.
async fn check_mailboxes(
    api: &Api,
    url: &NodeUrl,
    bobs: &[MailboxId],
    tokens: &[String],
    ledger: &Shared,
) -> usize {
    let mut total = 0;
    let mut listed_all = HashMap::new();
    for (mb, token) in bobs.iter().zip(tokens) {
        let listed = list_all(api, url, mb, token).await;
        let mut seen = HashSet::new();
        {
            let l = ledger.lock().unwrap();
            for (seq, id) in &listed {
                assert!(seen.insert(*id), "envelope {id} listed twice (seq {seq})");
                let (owner, _) = l
                    .sent
                    .get(id)
                    .unwrap_or_else(|| panic!("unknown envelope {id} listed"));
                assert_eq!(owner, mb, "envelope {id} in another mailbox");
                assert!(!l.deleted.contains(id), "acked envelope {id} came back");
            }
            for id in &l.delivered {
                let gone = l.deleted.contains(id) || l.maybe_deleted.contains(id);
                if l.sent[id].0 == *mb && !gone {
                    assert!(seen.contains(id), "acknowledged delivery {id} lost");
                }
            }
        }
        {
            // An ack without an answer has now either happened or not.
            let mut l = ledger.lock().unwrap();
            let settled: Vec<EnvelopeId> = l
                .maybe_deleted
                .iter()
                .filter(|id| l.sent[*id].0 == *mb)
                .copied()
                .collect();
            for id in settled {
                l.maybe_deleted.remove(&id);
                if !seen.contains(&id) {
                    l.deleted.insert(id);
                }
            }
        }
        let before: HashSet<EnvelopeId> = ledger
            .lock()
            .unwrap()
            .listed
            .get(mb)
            .into_iter()
            .flatten()
            .map(|(_, id)| *id)
            .collect();
        for (seq, id) in listed.iter().filter(|(_, id)| !before.contains(id)) {
            let resp = api.get(url, mb, *seq, Some(token)).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = resp.bytes().await.expect("envelope body");
            let l = ledger.lock().unwrap();
            assert!(bytes[..] == l.sent[id].1[..], "envelope {id} is damaged");
        }
        total += listed.len();
        listed_all.insert(*mb, listed);
    }
    ledger.lock().unwrap().listed = listed_all;
    total
}

/// Every legacy mail answered `250` is in dave's mailbox once; nothing unknown is there.
async fn check_legacy(
    api: &Api,
    url: &NodeUrl,
    mailbox: MailboxId,
    token: &str,
    dave: &User,
    ledger: &Shared,
) -> usize {
    let listed = list_all(api, url, &mailbox, token).await;
    let known: Vec<u64> = ledger.lock().unwrap().dave_seen.keys().copied().collect();
    let listed_seqs: Vec<u64> = listed.iter().map(|(s, _)| *s).collect();
    for s in &known {
        assert!(listed_seqs.contains(s), "legacy mail at seq {s} lost");
    }
    for (seq, _) in listed.iter().filter(|(s, _)| !known.contains(s)) {
        let resp = api.get(url, &mailbox, *seq, Some(token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let env = Envelope::decode(&resp.bytes().await.expect("body")).expect("envelope");
        let opened = open(&env.sealed, &dave.keys, &|_| None).expect("dave opens it");
        ledger
            .lock()
            .unwrap()
            .dave_seen
            .insert(*seq, opened.letter.subject);
    }
    let l = ledger.lock().unwrap();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for subject in l.dave_seen.values() {
        *count.entry(subject).or_default() += 1;
        assert!(
            l.smtp_sent.contains(subject),
            "unknown legacy mail {subject:?}"
        );
    }
    for (subject, n) in &count {
        assert_eq!(*n, 1, "legacy mail {subject:?} stored {n} times");
    }
    for subject in &l.smtp_stored {
        assert!(
            count.contains_key(subject.as_str()),
            "legacy mail {subject:?} answered 250 but lost"
        );
    }
    l.dave_seen.len()
}

fn u64_at(v: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"))
}

fn id16(v: &[u8]) -> [u8; 16] {
    v[..16].try_into().expect("16 bytes")
}

/// Reads the dead node's database (layout: `spec/node.md` §Storage) and checks that it is
/// consistent in itself and with what was sent. Returns a one-line summary.
fn check_store(dir: &Path, ledger: &Ledger) -> String {
    let mut states: HashMap<[u8; 16], (u64, u64, u64)> = HashMap::new();
    let mut accounts: BTreeSet<[u8; 16]> = BTreeSet::new();
    let mut index: BTreeMap<([u8; 16], u64), ([u8; 16], u64)> = BTreeMap::new();
    let mut envelopes: HashMap<([u8; 16], u64), Vec<u8>> = HashMap::new();
    let mut dedupe: HashMap<([u8; 16], [u8; 16]), u64> = HashMap::new();
    let mut meta: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut payloads: BTreeSet<Vec<u8>> = BTreeSet::new();
    sealpost_server::store::rocks::scan_all(dir, |cf, k, v| match (cf, k.first()) {
        ("accounts", Some(b'a')) => {
            accounts.insert(id16(&k[1..]));
        }
        ("accounts", Some(b's')) => {
            assert_eq!(v.len(), 24, "mailbox state size");
            states.insert(id16(&k[1..]), (u64_at(v, 0), u64_at(v, 8), u64_at(v, 16)));
        }
        ("index", _) => {
            assert_eq!(k.len(), 24, "index key size");
            index.insert((id16(k), u64_at(k, 16)), (id16(v), u64_at(v, 16)));
        }
        ("envelopes", _) => {
            envelopes.insert((id16(k), u64_at(k, 16)), v.to_vec());
        }
        ("dedupe", _) => {
            dedupe.insert((id16(k), id16(&k[16..])), u64_at(v, 0));
        }
        ("outbound", Some(b'm')) => {
            serde_json::from_slice::<serde_json::Value>(v).expect("queue entry is JSON");
            meta.insert(k[1..].to_vec());
        }
        ("outbound", Some(b'p')) => {
            payloads.insert(k[1..].to_vec());
        }
        _ => {}
    })
    .expect("the killed node's database opens");

    assert_eq!(meta, payloads, "queued hops without payload or metadata");
    for a in &accounts {
        assert!(states.contains_key(a), "account without mailbox state");
    }
    /// Per mailbox: envelopes, bytes, highest sequence number, envelope ids.
    #[derive(Default)]
    struct Seen {
        count: u64,
        bytes: u64,
        max_seq: u64,
        ids: HashSet<[u8; 16]>,
    }
    let mut per_mailbox: HashMap<[u8; 16], Seen> = HashMap::new();
    for ((mb, seq), (id, size)) in &index {
        let bytes = envelopes
            .get(&(*mb, *seq))
            .unwrap_or_else(|| panic!("index entry without envelope (seq {seq})"));
        assert_eq!(
            bytes.len() as u64,
            *size,
            "envelope size differs from the index"
        );
        let env = Envelope::decode(bytes).expect("a stored envelope decodes");
        assert_eq!(
            (env.mailbox.0, env.id.0),
            (*mb, *id),
            "envelope under another key"
        );
        if let Some((_, sent)) = ledger.sent.get(&env.id) {
            assert!(bytes == sent, "stored envelope {} is damaged", env.id);
        }
        assert_eq!(
            dedupe.get(&(*mb, *id)),
            Some(seq),
            "dedupe entry does not point at the envelope"
        );
        let e = per_mailbox.entry(*mb).or_default();
        e.count += 1;
        e.bytes += size;
        e.max_seq = e.max_seq.max(*seq);
        assert!(e.ids.insert(*id), "envelope stored twice in one mailbox");
    }
    for key in envelopes.keys() {
        assert!(index.contains_key(key), "envelope without index entry");
    }
    for (mb, seen) in &per_mailbox {
        let (next, s_bytes, s_count) = states
            .get(mb)
            .copied()
            .expect("stored envelopes belong to an account");
        assert_eq!(
            (s_count, s_bytes),
            (seen.count, seen.bytes),
            "mailbox counters drift"
        );
        assert!(next > seen.max_seq, "next sequence number already used");
    }
    for (mb, (_, bytes, count)) in &states {
        if !per_mailbox.contains_key(mb) {
            assert_eq!((*bytes, *count), (0, 0), "counters of an empty mailbox");
        }
    }
    format!(
        "{} envelopes, {} dedupe entries, {} queued hops, consistent",
        index.len(),
        dedupe.len(),
        meta.len()
    )
}
