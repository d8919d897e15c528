//! Several `sealpost-node run` processes with the same keys and `node.toml` on one
//! PostgreSQL database (issue 17): mail submitted to one process is fetched from the other,
//! sign-in challenges and tokens are honoured by either; a process killed with SIGKILL under
//! load loses and doubles nothing that was acknowledged (the survivor takes its queue over);
//! the database crashing under load gives clear 503s while it is down, and everything
//! acknowledged arrives once after it is back; a device signed in at one process works at
//! the other, and removing it at one ends its token in both. Limits hold for both together:
//! a per-minute rate limit (with and without leased tokens), a mailbox's quota and a
//! user's share of the outbound queue.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::{DeviceId, MailboxId, NodeUrl, device};
use sealpost_testkit::postgres::PgServer;
use sealpost_testkit::process::{NodeProcess, NodeSpec, Stderr, init};

const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");
const DEADLINE: Duration = Duration::from_secs(60);
/// The one public URL of the node, whichever process answers.
const PUBLIC: &str = "http://sealpost.test";

/// One node directory (keys, node.toml) and processes started from it.
struct Cluster {
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Cluster {
    fn new(pg: &PgServer, db: &str) -> Cluster {
        Cluster::with(pg, db, &[])
    }

    /// A cluster whose processes also get `extra` settings (`key=value`, after the rest).
    fn with(pg: &PgServer, db: &str, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        init(Path::new(BIN), dir.path()).expect("init");
        let args = [
            "storage.backend=\"postgres\"".to_string(),
            format!("storage.postgres.url=\"{}\"", pg.url(db)),
            "storage.postgres.pool_size=8".into(),
            "storage.postgres.connect_timeout=1".into(),
            "storage.postgres.queue_lease=1".into(),
            format!("public_url=\"{PUBLIC}\""),
            "relay.retry_base=0.1".into(),
            "relay.retry_max=0.5".into(),
            // The load below comes from one address.
            "limits.submit_per_minute=100000".into(),
            "limits.submit_burst=100000".into(),
            "limits.anonymous_per_minute_per_ip=100000".into(),
            "limits.anonymous_burst_per_ip=100000".into(),
            "limits.outbound_hops_per_user=100000".into(),
            "limits.outbound_hops_per_ip=100000".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .flat_map(|a| ["--set".to_string(), a])
        .collect();
        Cluster { dir, args }
    }

    fn process(&self, name: &str) -> NodeProcess {
        // Processes that share a directory each need an admin socket of their own.
        let mut args = self.args.clone();
        args.extend([
            "--set".to_string(),
            format!("admin.socket=\"admin-{name}.sock\""),
        ]);
        let spec = NodeSpec {
            args,
            stderr: Stderr::File(self.dir.path().join(format!("{name}.log"))),
            ..NodeSpec::new(BIN, self.dir.path())
        };
        NodeProcess::start(spec, DEADLINE).unwrap_or_else(|e| {
            panic!(
                "process {name} did not start: {e}\n{}",
                std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default()
            )
        })
    }
}

/// Where a process really listens (its answers are for [`PUBLIC`]).
fn addr(p: &NodeProcess) -> NodeUrl {
    NodeUrl::parse(&format!("http://127.0.0.1:{}", p.port())).unwrap()
}

fn public() -> NodeUrl {
    NodeUrl::parse(PUBLIC).unwrap()
}

async fn database(pg: &PgServer, name: &str) -> String {
    let db = format!("{name}_{}", hex::encode(rand::random::<[u8; 4]>()));
    pg.create_database(&db).await.expect("create database");
    db
}

/// A token for `mailbox`: the challenge from `ask`, the answer to `answer`.
async fn token_across(
    api: &Api,
    ask: &NodeUrl,
    answer: &NodeUrl,
    mailbox: &MailboxId,
    user: &User,
) -> String {
    let c = api.challenge(ask, mailbox).await;
    assert_eq!(c.0, StatusCode::OK, "{c:?}");
    let nonce = c.1["nonce"].as_str().unwrap().to_string();
    let t = api
        .answer_challenge(answer, &public(), mailbox, &nonce, &user.keys)
        .await;
    assert_eq!(t.0, StatusCode::OK, "{t:?}");
    let again = api
        .answer_challenge(ask, &public(), mailbox, &nonce, &user.keys)
        .await;
    assert_eq!(
        again.0,
        StatusCode::UNAUTHORIZED,
        "a challenge is answered once, in whichever process: {again:?}"
    );
    t.1["token"].as_str().unwrap().to_string()
}

/// Every listed envelope id of `mailbox` (all pages) with how often it is listed.
async fn listed(
    api: &Api,
    node: &NodeUrl,
    mailbox: &MailboxId,
    token: &str,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut after = 0u64;
    loop {
        let resp = api
            .http
            .get(node.join(&format!("/v1/mailbox/{mailbox}?after={after}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("list");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("list body")).expect("list json");
        let items = body["items"].as_array().expect("items");
        if items.is_empty() {
            return seen;
        }
        for i in items {
            after = after.max(i["seq"].as_u64().expect("seq"));
            *seen
                .entry(i["id"].as_str().expect("id").to_string())
                .or_insert(0) += 1;
        }
    }
}

struct Parties {
    alice: User,
    bob: User,
    alice_mb: MailboxId,
    bob_mb: MailboxId,
    node_cert: Cert,
}

async fn parties(api: &Api, node: &NodeUrl) -> Parties {
    let alice = User::new("alice@sealpost.test");
    let bob = User::new("bob@sealpost.test");
    let alice_mb = api.mailbox(node, &alice).await;
    let bob_mb = api.mailbox(node, &bob).await;
    let (_, node_cert) = api.descriptor(node).await;
    Parties {
        alice,
        bob,
        alice_mb,
        bob_mb,
        node_cert,
    }
}

/// Submits one letter from alice to bob through `node`; its envelope id when acknowledged.
async fn submit_one(api: &Api, node: &NodeUrl, token: &str, p: &Parties) -> (StatusCode, String) {
    let env = envelope(&p.alice, &p.bob, p.bob_mb, "load", "one letter");
    let id = env.id.to_hex();
    let hop = hop(&env, &public(), &p.node_cert);
    let resp = sealpost_testkit::api::Api::new(api.http.clone())
        .submit(node, Some(token), hop.encode())
        .await;
    match resp {
        Ok((status, _)) => (status, id),
        // The process is gone: not acknowledged.
        Err(_) => (StatusCode::BAD_GATEWAY, id),
    }
}

/// Waits until bob's mailbox lists exactly `want` (each once), or panics with the difference.
async fn arrives_once(api: &Api, node: &NodeUrl, token: &str, p: &Parties, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = listed(api, node, &p.bob_mb, token).await;
        let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "doubled envelopes: {doubled:?}");
        let missing: Vec<_> = want.iter().filter(|id| !seen.contains_key(*id)).collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} of {} acknowledged envelopes never arrived",
                missing.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_submitted_to_one_process_is_fetched_from_the_other() {
    let pg = PgServer::start().expect("PostgreSQL");
    let db = database(&pg, "two").await;
    let cluster = Cluster::new(&pg, &db);
    let (a, b) = (cluster.process("a"), cluster.process("b"));
    let (ua, ub) = (addr(&a), addr(&b));
    let api = Api::default();
    let p = parties(&api, &ua).await;
    assert_eq!(
        api.mailbox(&ub, &p.bob).await,
        p.bob_mb,
        "the other process knows the account"
    );
    let (_, cert_b) = api.descriptor(&ub).await;
    assert_eq!(cert_b.fingerprint(), p.node_cert.fingerprint(), "one node");
    // Challenge from one process, answer to the other; tokens work in both.
    let alice_token = token_across(&api, &ua, &ub, &p.alice_mb, &p.alice).await;
    let bob_token = token_across(&api, &ub, &ua, &p.bob_mb, &p.bob).await;
    let (status, id) = submit_one(&api, &ua, &alice_token, &p).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    arrives_once(&api, &ub, &bob_token, &p, std::slice::from_ref(&id)).await;
    let items = api.items(&ub, &p.bob_mb, &bob_token).await;
    let got = api.get(&ub, &p.bob_mb, items[0].0, Some(&bob_token)).await;
    assert_eq!(got.status(), StatusCode::OK);
    let a_ack = api.ack(&ua, &p.bob_mb, items[0].0, Some(&bob_token)).await;
    assert!(
        a_ack.0.is_success(),
        "ack through the first process: {a_ack:?}"
    );
    assert!(listed(&api, &ub, &p.bob_mb, &bob_token).await.is_empty());
    let unknown = api.items(&ub, &p.bob_mb, &bob_token).await;
    assert!(unknown.is_empty());
    let bad = api.list(&ub, &p.bob_mb, Some(&"00".repeat(32))).await;
    assert_eq!(bad.0, StatusCode::UNAUTHORIZED, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_under_load_loses_and_doubles_nothing() {
    let pg = PgServer::start().expect("PostgreSQL");
    let db = database(&pg, "kill").await;
    let cluster = Cluster::new(&pg, &db);
    let (mut a, b) = (cluster.process("a"), cluster.process("b"));
    let (ua, ub) = (addr(&a), addr(&b));
    let api = Api::default();
    let p = Arc::new(parties(&api, &ua).await);
    let alice_token = Arc::new(token_across(&api, &ua, &ua, &p.alice_mb, &p.alice).await);
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (api, p, token) = (api.clone(), p.clone(), alice_token.clone());
        let (ua, ub) = (ua.clone(), ub.clone());
        load.spawn(async move {
            let (mut acked, mut tried) = (Vec::new(), Vec::new());
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(6) {
                let node = if worker % 2 == 0 { &ua } else { &ub };
                let (status, id) = submit_one(&api, node, &token, &p).await;
                if status == StatusCode::ACCEPTED {
                    acked.push(id.clone());
                }
                tried.push(id);
            }
            (acked, tried)
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill();
    let (mut acked, mut tried) = (Vec::new(), std::collections::HashSet::new());
    while let Some(r) = load.join_next().await {
        let (a, t) = r.unwrap();
        acked.extend(a);
        tried.extend(t);
    }
    assert!(
        acked.len() > 20,
        "the load ran: {} acknowledged",
        acked.len()
    );
    let bob_token = token_across(&api, &ub, &ub, &p.bob_mb, &p.bob).await;
    arrives_once(&api, &ub, &bob_token, &p, &acked).await;
    let seen = listed(&api, &ub, &p.bob_mb, &bob_token).await;
    // A submission the killed process had made durable but not yet answered may arrive
    // too (its sender saw no answer, as after a lost 250 in SMTP): never anything else.
    let strangers: Vec<_> = seen.keys().filter(|id| !tried.contains(*id)).collect();
    assert!(strangers.is_empty(), "stored but never sent: {strangers:?}");
    assert!(
        seen.len() <= acked.len() + 4,
        "at most the four submissions in flight at the kill beyond the acknowledged: {} > {}",
        seen.len(),
        acked.len()
    );
    println!(
        "KILL acknowledged={} stored={} (unanswered but durable at the kill: {})",
        acked.len(),
        seen.len(),
        seen.len() - acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_loses_nothing() {
    let mut pg = PgServer::start().expect("PostgreSQL");
    let db = database(&pg, "outage").await;
    let cluster = Cluster::new(&pg, &db);
    let a = cluster.process("a");
    let ua = addr(&a);
    let api = Api::default();
    let p = parties(&api, &ua).await;
    let alice_token = token_across(&api, &ua, &ua, &p.alice_mb, &p.alice).await;
    let mut acked = Vec::new();
    for _ in 0..20 {
        let (status, id) = submit_one(&api, &ua, &alice_token, &p).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        acked.push(id);
    }
    pg.stop();
    let mut refused = 0;
    for _ in 0..10 {
        let (status, _) = submit_one(&api, &ua, &alice_token, &p).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "while the database is down"
        );
        refused += 1;
    }
    let c = api.challenge(&ua, &p.bob_mb).await;
    assert_eq!(c.0, StatusCode::SERVICE_UNAVAILABLE, "{c:?}");
    pg.restart().expect("PostgreSQL back");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, id) = submit_one(&api, &ua, &alice_token, &p).await;
        if status == StatusCode::ACCEPTED {
            acked.push(id);
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the node never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        let (status, id) = submit_one(&api, &ua, &alice_token, &p).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        acked.push(id);
    }
    let bob_token = token_across(&api, &ua, &ua, &p.bob_mb, &p.bob).await;
    arrives_once(&api, &ua, &bob_token, &p, &acked).await;
    assert_eq!(
        listed(&api, &ua, &p.bob_mb, &bob_token).await.len(),
        acked.len()
    );
    println!("OUTAGE acknowledged={} refused_503={refused}", acked.len());
}

/// A token for device `key` of `mailbox`: the challenge from `ask`, the answer (signed for
/// the node's public URL) to `answer`.
async fn device_token_across(
    api: &Api,
    ask: &NodeUrl,
    answer: &NodeUrl,
    mailbox: &MailboxId,
    key: &SigningKey,
) -> String {
    let c = api.challenge(ask, mailbox).await;
    assert_eq!(c.0, StatusCode::OK, "{c:?}");
    let nonce_hex = c.1["nonce"].as_str().unwrap().to_string();
    let mut nonce = [0u8; sealpost_proto::auth::NONCE_BYTES];
    hex::decode_to_slice(&nonce_hex, &mut nonce).unwrap();
    let id = DeviceId::of_key(&key.verifying_key().to_bytes());
    let sig = device::sign(
        key,
        &device::device_statement(&public(), mailbox, &id, &nonce),
    );
    let body = serde_json::json!({
        "mailbox": mailbox.to_hex(),
        "nonce": nonce_hex,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig),
        "device": id.to_hex(),
    });
    let resp = api
        .http
        .post(answer.join("/v1/auth/token"))
        .body(body.to_string())
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK, "device token");
    let text = resp.text().await.expect("token answer");
    let v: serde_json::Value = serde_json::from_str(&text).expect("token answer is JSON");
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_signed_in_at_one_process_works_at_the_other_until_removed_there() {
    let pg = PgServer::start().expect("PostgreSQL");
    let db = database(&pg, "devices").await;
    let cluster = Cluster::new(&pg, &db);
    let (a, b) = (cluster.process("a"), cluster.process("b"));
    let (ua, ub) = (addr(&a), addr(&b));
    let api = Api::default();
    let kit = sealpost_testkit::api::Api::new(api.http.clone());
    let p = parties(&api, &ua).await;
    let account = token_across(&api, &ua, &ub, &p.bob_mb, &p.bob).await;
    let (k1, k2) = (
        SigningKey::from_bytes(&rand::random()),
        SigningKey::from_bytes(&rand::random()),
    );
    let added = kit
        .add_device(&ua, Some(&account), &k1, "laptop")
        .await
        .unwrap();
    assert_eq!(added.0, StatusCode::CREATED, "{added:?}");
    let ended = api.list(&ub, &p.bob_mb, Some(&account)).await;
    assert_eq!(
        ended.0,
        StatusCode::UNAUTHORIZED,
        "the first device ended the account key's session in the other process too: {ended:?}"
    );
    let t1 = device_token_across(&api, &ua, &ub, &p.bob_mb, &k1).await;
    let added = kit.add_device(&ua, Some(&t1), &k2, "phone").await.unwrap();
    assert_eq!(added.0, StatusCode::CREATED, "{added:?}");
    let t2 = device_token_across(&api, &ub, &ua, &p.bob_mb, &k2).await;

    let alice = token_across(&api, &ub, &ua, &p.alice_mb, &p.alice).await;
    let (status, id) = submit_one(&api, &ua, &alice, &p).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    arrives_once(&api, &ub, &t1, &p, std::slice::from_ref(&id)).await;
    let seq = api.items(&ua, &p.bob_mb, &t2).await[0].0;
    let acked = api.ack(&ua, &p.bob_mb, seq, Some(&t1)).await;
    assert!(acked.0.is_success(), "{acked:?}");
    assert!(
        listed(&api, &ub, &p.bob_mb, &t1).await.is_empty(),
        "device 1 acknowledged it, seen from the other process"
    );
    assert_eq!(
        listed(&api, &ub, &p.bob_mb, &t2).await.get(&id),
        Some(&1),
        "device 2 still owes it"
    );

    let removed = kit
        .remove_device(
            &ub,
            Some(&t2),
            &DeviceId::of_key(&k1.verifying_key().to_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(removed.0, StatusCode::NO_CONTENT, "{removed:?}");
    for node in [&ua, &ub] {
        let gone = api.list(node, &p.bob_mb, Some(&t1)).await;
        assert_eq!(
            gone.0,
            StatusCode::UNAUTHORIZED,
            "a removed device's token ends in every process: {gone:?}"
        );
    }
    let acked = api.ack(&ub, &p.bob_mb, seq, Some(&t2)).await;
    assert!(acked.0.is_success(), "{acked:?}");
    assert!(
        listed(&api, &ua, &p.bob_mb, &t2).await.is_empty(),
        "the last device's ack deleted it"
    );
}

/// Record lookups (limited per client address) sent alternately to `a` and `b`, `n` in
/// all, two at a time: how many were answered other than 429, and the seconds it took.
/// Every 429 says `rate_limited` and carries a `Retry-After` of at least 1 s.
async fn lookups(api: &Api, a: &NodeUrl, b: &NodeUrl, n: usize) -> (usize, f64) {
    let started = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..2 {
        let node = if worker == 0 { a.clone() } else { b.clone() };
        let http = api.http.clone();
        load.spawn(async move {
            let mut passed = 0;
            for _ in 0..n / 2 {
                let resp = http
                    .get(node.join("/v1/records/nobody%40sealpost.test"))
                    .send()
                    .await
                    .expect("lookup");
                if resp.status() != StatusCode::TOO_MANY_REQUESTS {
                    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
                    passed += 1;
                    continue;
                }
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .expect("Retry-After")
                    .parse()
                    .expect("Retry-After seconds");
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
                let body: serde_json::Value =
                    serde_json::from_slice(&resp.bytes().await.unwrap()).expect("error json");
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            }
            passed
        });
    }
    let mut passed = 0;
    while let Some(r) = load.join_next().await {
        passed += r.unwrap();
    }
    (passed, started.elapsed().as_secs_f64())
}

/// A per-minute limit L (burst L) holds for two processes together: over T seconds they
/// admit at most L + L·T/60 + 2·(k − 1) (spec/node.md §Storage on PostgreSQL: k tokens
/// leased at a time), not 2·L as two in-memory buckets would; and at least L − 2·(k − 1)
/// (leased tokens left unspent). With `limit_lease = 1` the bound is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_both_processes_together() {
    const L: usize = 40;
    let pg = PgServer::start().expect("PostgreSQL");
    for lease in [1usize, 16] {
        let db = database(&pg, &format!("limit{lease}")).await;
        let cluster = Cluster::with(
            &pg,
            &db,
            &[
                &format!("limits.lookups_per_minute_per_ip={L}"),
                &format!("limits.lookups_burst_per_ip={L}"),
                &format!("storage.postgres.limit_lease={lease}"),
            ],
        );
        let (a, b) = (cluster.process("a"), cluster.process("b"));
        let api = Api::default();
        // k: the lease, at most an eighth of the burst (ratelimit::lease_size).
        let k = lease.clamp(1, L / 8);
        let (passed, secs) = lookups(&api, &addr(&a), &addr(&b), 4 * L).await;
        let refill = (L as f64 * secs / 60.0).ceil() as usize;
        let most = L + refill + 2 * (k - 1);
        println!(
            "LIMIT lease={k} L={L}: {passed} of {} admitted in {secs:.2} s (bound {most})",
            4 * L
        );
        assert!(
            passed <= most,
            "lease {k}: {passed} admitted, more than {most}"
        );
        assert!(
            passed >= L - 2 * (k - 1),
            "lease {k}: only {passed} of the burst {L} admitted"
        );
    }
}

/// Two processes of one node on a fresh database with one `extra` setting, the parties,
/// and a token of alice's.
struct Two {
    _a: NodeProcess,
    _b: NodeProcess,
    _cluster: Cluster,
    ua: NodeUrl,
    ub: NodeUrl,
    api: Api,
    p: Arc<Parties>,
    token: Arc<String>,
}

impl Two {
    fn parts(&self) -> (NodeUrl, NodeUrl, Api, Arc<Parties>, Arc<String>) {
        let (p, token) = (self.p.clone(), self.token.clone());
        (self.ua.clone(), self.ub.clone(), self.api.clone(), p, token)
    }

    async fn start(pg: &PgServer, name: &str, extra: &str) -> Two {
        let db = database(pg, name).await;
        let cluster = Cluster::with(pg, &db, &[extra]);
        let (a, b) = (cluster.process("a"), cluster.process("b"));
        let (ua, ub) = (addr(&a), addr(&b));
        let api = Api::default();
        let p = Arc::new(parties(&api, &ua).await);
        let token = Arc::new(token_across(&api, &ua, &ub, &p.alice_mb, &p.alice).await);
        Two {
            _a: a,
            _b: b,
            _cluster: cluster,
            ua,
            ub,
            api,
            p,
            token,
        }
    }
}

/// Two processes delivering into one mailbox at once cannot fill it past its quota: the
/// count is decided under the mailbox's row lock, so the bound is exact (0 over). Letters
/// beyond it wait in the queue and arrive once room is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_filling_one_mailbox_stop_at_its_quota() {
    const MAX: usize = 5;
    let pg = PgServer::start().expect("PostgreSQL");
    let two = Two::start(&pg, "quota", &format!("limits.mailbox_max_envelopes={MAX}")).await;
    let (ua, ub, api, p, token) = two.parts();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (api, p, token) = (api.clone(), p.clone(), token.clone());
        let node = if worker % 2 == 0 {
            ua.clone()
        } else {
            ub.clone()
        };
        load.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..5 {
                let (status, id) = submit_one(&api, &node, &token, &p).await;
                assert_eq!(status, StatusCode::ACCEPTED);
                ids.push(id);
            }
            ids
        });
    }
    let mut sent = Vec::new();
    while let Some(r) = load.join_next().await {
        sent.extend(r.unwrap());
    }
    let bob_token = token_across(&api, &ub, &ua, &p.bob_mb, &p.bob).await;
    // Both relays retry every 0.1 to 0.5 s: watch for 3 s; the mailbox fills and stays full.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for node in [&ua, &ub] {
            let n = listed(&api, node, &p.bob_mb, &bob_token).await.len();
            assert!(n <= MAX, "{n} envelopes in a mailbox of {MAX}");
            most = most.max(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, MAX, "the mailbox filled up");
    // Making room lets the rest in, a quota's worth at a time, each letter once.
    let mut received = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} arrived",
            received.len(),
            sent.len()
        );
        let items = api.items(&ub, &p.bob_mb, &bob_token).await;
        assert!(
            items.len() <= MAX,
            "{} envelopes in a mailbox of {MAX}",
            items.len()
        );
        for (seq, id) in items {
            assert!(received.insert(id), "a letter arrived twice");
            let node = if seq % 2 == 0 { &ua } else { &ub };
            let acked = api.ack(node, &p.bob_mb, seq, Some(&bob_token)).await;
            assert!(acked.0.is_success(), "{acked:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent: std::collections::HashSet<_> = sent.into_iter().collect();
    assert_eq!(received, sent);
}

/// A user's share of the outbound queue (`limits.outbound_hops_per_user`) holds for both
/// processes together: twenty hops to an unreachable node submitted through both at once,
/// exactly the limit accepted (they stay queued), the rest `507 quota_exceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_queue_quota_holds_for_both_processes() {
    const MAX: usize = 6;
    let pg = PgServer::start().expect("PostgreSQL");
    let two = Two::start(&pg, "outq", &format!("limits.outbound_hops_per_user={MAX}")).await;
    let (ua, ub, api, p, token) = two.parts();
    // Nothing listens on the discard port: the hops wait in the queue.
    let nowhere = NodeUrl::parse("http://127.0.0.1:9").unwrap();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (api, p, token, nowhere) = (api.clone(), p.clone(), token.clone(), nowhere.clone());
        let node = if worker % 2 == 0 {
            ua.clone()
        } else {
            ub.clone()
        };
        load.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let env = envelope(&p.alice, &p.bob, p.bob_mb, "queued", "waits");
                let hop = hop(&env, &nowhere, &p.node_cert);
                let (status, body) = sealpost_testkit::api::Api::new(api.http.clone())
                    .submit(&node, Some(&token), hop.encode())
                    .await
                    .expect("submit");
                statuses.push((status, body["error"]["code"].clone()));
            }
            statuses
        });
    }
    let mut accepted = 0;
    while let Some(r) = load.join_next().await {
        for (status, code) in r.unwrap() {
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::INSUFFICIENT_STORAGE => assert_eq!(code, "quota_exceeded"),
                other => panic!("unexpected {other} {code}"),
            }
        }
    }
    assert_eq!(
        accepted, MAX,
        "the queue quota holds for both processes together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_one_process_is_the_only_key_the_other_accepts() {
    let pg = PgServer::start().expect("PostgreSQL");
    let db = database(&pg, "rotation").await;
    let cluster = Cluster::new(&pg, &db);
    let (a, b) = (cluster.process("a"), cluster.process("b"));
    let (ua, ub) = (addr(&a), addr(&b));
    let api = Api::default();
    let bob = User::new("bob@sealpost.test");
    let mailbox = api.mailbox(&ua, &bob).await;
    // Process b signs bob in with his key, so it has read (and may keep) his certificate.
    token_across(&api, &ub, &ub, &mailbox, &bob).await;

    let bob2 = User::with_identity(
        "bob@sealpost.test",
        sealpost_proto::record::endorse_identity(
            &User::new("bob@sealpost.test").identity,
            &bob.keys,
            &bob.address,
        )
        .unwrap(),
    );
    let rotated = api.register(&ua, &bob2, None).await;
    assert_eq!(
        (rotated.0, &rotated.1["rotated"]),
        (StatusCode::OK, &serde_json::json!(true)),
        "{rotated:?}"
    );

    // At b, at once: the old key signs in no more and publishes no record; the new one does.
    let c = api.challenge(&ub, &mailbox).await;
    let by_old_key = api
        .answer_challenge(
            &ub,
            &public(),
            &mailbox,
            c.1["nonce"].as_str().unwrap(),
            &bob.keys,
        )
        .await;
    assert_eq!(by_old_key.0, StatusCode::UNAUTHORIZED, "{by_old_key:?}");
    let node_key = api.descriptor(&ub).await.0.node_key;
    let stale = api
        .put_record(
            &ub,
            "bob@sealpost.test",
            record(&bob, &[(&public(), node_key, mailbox)], 5),
        )
        .await;
    assert_eq!(stale.0, StatusCode::FORBIDDEN, "{stale:?}");
    let token = token_across(&api, &ub, &ub, &mailbox, &bob2).await;
    assert_eq!(
        api.list(&ub, &mailbox, Some(&token)).await.0,
        StatusCode::OK
    );
}
