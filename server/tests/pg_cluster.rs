//! Several `sealpost-node run` processes with the same keys and `node.toml` on one
//! PostgreSQL database (issue 17): mail submitted to one process is fetched from the other,
//! sign-in challenges and tokens are honoured by either; a process killed with SIGKILL under
//! load loses and doubles nothing that was acknowledged (the survivor takes its queue over);
//! the database crashing under load gives clear 503s while it is down, and everything
//! acknowledged arrives once after it is back; a device signed in at one process works at
//! the other, and removing it at one ends its token in both.

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
