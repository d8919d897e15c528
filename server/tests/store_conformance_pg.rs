//! The `Store` conformance suite on the PostgreSQL backend, against a private PostgreSQL 15
//! started by the test (`sealpost_testkit::postgres`), one database per case; and what only
//! a shared database has: several store handles (node processes) on one queue.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use sealpost_proto::{DeviceId, MailboxId};
use sealpost_server::config::{PostgresConfig, Secs};
use sealpost_server::store::{PgStore, QueueId, Store, StoreError, StoredToken};
use sealpost_testkit::conformance::{self, BIG, envelope, new_mailbox, outbound_item};
use sealpost_testkit::postgres::PgServer;
use sha2::{Digest, Sha256};

/// One server for the whole test binary (killed at exit by the testkit's hygiene).
fn server() -> &'static PgServer {
    static PG: OnceLock<PgServer> = OnceLock::new();
    PG.get_or_init(|| PgServer::start().expect("start PostgreSQL 15"))
}

fn config(db: &str, lease: Duration) -> PostgresConfig {
    PostgresConfig {
        url: server().url(db),
        pool_size: 4,
        connect_timeout: Secs(Duration::from_secs(5)),
        queue_lease: Secs(lease),
        ..PostgresConfig::default()
    }
}

async fn open_db(db: &str, lease: Duration) -> Arc<PgStore> {
    server().create_database(db).await.expect("create database");
    PgStore::open(&config(db, lease))
        .await
        .expect("open the PostgreSQL store")
}

struct Pg;

impl conformance::Backend for Pg {
    async fn open(&self, place: &Path) -> Arc<dyn Store> {
        // The same place names the same database (a reopen sees the data).
        let h = Sha256::digest(place.as_os_str().as_encoded_bytes());
        let db = format!("c_{}", hex::encode(&h[..10]));
        let store: Arc<dyn Store> = open_db(&db, Duration::from_secs(30)).await;
        store
    }
}

sealpost_testkit::store_conformance!(Pg);

fn unique_db(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 6]>()))
}

#[tokio::test]
async fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let db = unique_db("mig");
    let (a, b) = tokio::join!(
        open_db(&db, Duration::from_secs(30)),
        open_db(&db, Duration::from_secs(30))
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
    let (client, conn) = tokio_postgres::connect(&server().url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query("SELECT version FROM sealpost_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (0..=sealpost_server::store::postgres::SCHEMA_VERSION).collect::<Vec<_>>(),
        "two processes starting at once apply each migration once"
    );
    client
        .execute(
            "INSERT INTO sealpost_schema (version, applied_ms) VALUES (9999, 0)",
            &[],
        )
        .await
        .unwrap();
    match PgStore::open(&config(&db, Duration::from_secs(30))).await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("9999"), "{m}"),
        Err(e) => panic!("want a refusal of schema 9999, got {e}"),
        Ok(_) => panic!("a database from a newer node must be refused"),
    }
}

/// The statements of every delivery batch find their rows by index also in a plan made
/// without statistics (a new database, or a generic plan cached while the tables were
/// small): a sequential scan there grows each batch with every envelope ever stored.
#[tokio::test]
async fn delivery_batches_find_their_rows_by_index_in_any_plan() {
    use sealpost_server::store::postgres::{ACCOUNTS_UPDATE, DEDUPE_PROBE};
    let db = unique_db("plans");
    let store = open_db(&db, Duration::from_secs(30)).await;
    let (client, conn) = tokio_postgres::connect(&server().url(&db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    let plan = |name: &'static str, types: &'static str, sql: &'static str, args: &'static str| {
        let client = &client;
        async move {
            client
                .batch_execute(&format!("PREPARE {name}({types}) AS {sql}"))
                .await
                .unwrap();
            let mut text = String::new();
            for m in client
                .simple_query(&format!("EXPLAIN EXECUTE {name}({args})"))
                .await
                .unwrap()
            {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    text.push_str(r.get(0).unwrap_or_default());
                    text.push('\n');
                }
            }
            text
        }
    };
    let probe = plan(
        "probe",
        "bytea[], bytea[]",
        DEDUPE_PROBE,
        "ARRAY['\\x01'::bytea], ARRAY['\\x02'::bytea]",
    )
    .await;
    assert!(
        probe.contains("Index") && probe.contains("dedupe_pkey") && !probe.contains("Seq Scan"),
        "the dedupe probe must use the primary key:\n{probe}"
    );
    let update = plan(
        "counters",
        "bytea[], int8[], int8[], int8[]",
        ACCOUNTS_UPDATE,
        "ARRAY['\\x01'::bytea], ARRAY[1::int8], ARRAY[1::int8], ARRAY[1::int8]",
    )
    .await;
    assert!(
        update.contains("accounts_pkey") && !update.contains("Seq Scan on accounts"),
        "the counter update must find accounts by key:\n{update}"
    );
    store.close().await.unwrap();
}

/// Two handles (two node processes) on one queue: a hop is claimed by one only, also when
/// both claim at once; a handle that stops renewing loses its hops to the other after the
/// lease; a closed handle gives its hops back at once.
#[tokio::test]
async fn two_processes_share_the_queue_without_double_claims() {
    let db = unique_db("queue");
    let lease = Duration::from_secs(3);
    let a = open_db(&db, lease).await;
    let b = open_db(&db, lease).await;
    let sender = MailboxId([1; 16]);
    for id in 1..=40u8 {
        a.enqueue(outbound_item(id, sender), Bytes::from_static(b"p"))
            .await
            .unwrap();
    }
    // (Enqueueing may take long on a loaded machine: renewed, every lease is fresh.)
    assert_eq!(a.renew_outbound().await.unwrap(), 40);
    assert!(
        b.claim_outbound(100).await.unwrap().is_empty(),
        "hops enqueued by a live process are its own"
    );
    // a stops renewing (it "died"): after the lease, b and a third handle race for them.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let c = open_db(&db, lease).await;
    let mut taken = Vec::new();
    for _ in 0..5 {
        let (x, y) = tokio::join!(b.claim_outbound(7), c.claim_outbound(7));
        taken.extend(x.unwrap().into_iter().map(|i| i.id[0]));
        taken.extend(y.unwrap().into_iter().map(|i| i.id[0]));
    }
    let (x, y) = tokio::join!(b.claim_outbound(100), c.claim_outbound(100));
    taken.extend(x.unwrap().into_iter().map(|i| i.id[0]));
    taken.extend(y.unwrap().into_iter().map(|i| i.id[0]));
    let distinct: HashSet<u8> = taken.iter().copied().collect();
    assert_eq!(taken.len(), 40, "every hop claimed once: {taken:?}");
    assert_eq!(distinct.len(), 40);
    assert_eq!(
        a.renew_outbound().await.unwrap(),
        0,
        "the process that lost its lease holds nothing now"
    );
    // Renewed leases hold: nothing moves while b and c renew.
    for _ in 0..3 {
        tokio::time::sleep(lease / 3).await;
        let held = b.renew_outbound().await.unwrap() + c.renew_outbound().await.unwrap();
        assert_eq!(held, 40);
        assert!(a.claim_outbound(100).await.unwrap().is_empty());
    }
    // c closes (a clean stop): its hops are free at once.
    let held_by_c = c.renew_outbound().await.unwrap();
    c.close().await.unwrap();
    assert_eq!(a.claim_outbound(100).await.unwrap().len() as u64, held_by_c);
    a.finish(QueueId([1; 16]), None).await.unwrap();
    assert_eq!(a.outbound().await.unwrap().len(), 39);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Deliveries of one envelope id through two processes at once store it once; concurrent
/// deliveries to one mailbox from two processes get distinct sequences and the quota
/// holds across both.
#[tokio::test]
async fn two_processes_dedupe_and_count_quota_together() {
    let db = unique_db("dedupe");
    let a = open_db(&db, Duration::from_secs(30)).await;
    let b = open_db(&db, Duration::from_secs(30)).await;
    let m = new_mailbox(&*a, 1).await;
    let mut handles = Vec::new();
    for k in 0..40u8 {
        let s = if k % 2 == 0 { a.clone() } else { b.clone() };
        // Ids 0..20, each delivered twice, once through each process.
        handles.push(tokio::spawn(async move {
            s.deliver(envelope(m, k / 2, 10), BIG).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for h in handles {
        seqs.push(h.await.unwrap());
    }
    let listed = a.list(m, 0, 100).await.unwrap();
    assert_eq!(listed.len(), 20, "each id stored once: {seqs:?}");
    let s: Vec<u64> = listed.iter().map(|i| i.seq).collect();
    assert_eq!(s, (1..=20).collect::<Vec<_>>());
    let quota = sealpost_server::store::Quota {
        max_bytes: 1 << 20,
        max_envelopes: 25,
    };
    let mut handles = Vec::new();
    for k in 100..120u8 {
        let s = if k % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            s.deliver(envelope(m, k, 10), quota).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        b.list(m, 0, 100).await.unwrap().len(),
        25,
        "the envelope quota holds across processes"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A sender's share of the queue (`enqueue_within`) is decided in the database: twenty
/// hops enqueued at once through two handles, five allowed, five queued; a finished hop
/// makes room for one more; the byte limit counts sizes; another sender is not affected.
#[tokio::test]
async fn two_processes_hold_one_senders_queue_quota() {
    let db = unique_db("outq");
    let a = open_db(&db, Duration::from_secs(30)).await;
    let b = open_db(&db, Duration::from_secs(30)).await;
    let (m, other) = (new_mailbox(&*a, 1).await, new_mailbox(&*a, 2).await);
    let mut handles = Vec::new();
    for k in 0..20u8 {
        let s = if k % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            s.enqueue_within(outbound_item(k, m), Bytes::from_static(b"abc"), 5, 0)
                .await
                .unwrap()
        }));
    }
    let mut queued = Vec::new();
    for (k, h) in handles.into_iter().enumerate() {
        if h.await.unwrap() {
            queued.push(k as u8);
        }
    }
    assert_eq!(queued.len(), 5, "five of twenty: {queued:?}");
    assert_eq!(a.outbound().await.unwrap().len(), 5);
    let late = outbound_item(50, m);
    assert!(
        !b.enqueue_within(late.clone(), Bytes::new(), 5, 0)
            .await
            .unwrap()
    );
    assert!(
        a.enqueue_within(outbound_item(60, other), Bytes::new(), 5, 0)
            .await
            .unwrap()
    );
    b.finish(QueueId([queued[0]; 16]), None).await.unwrap();
    assert!(
        b.enqueue_within(late.clone(), Bytes::new(), 5, 0)
            .await
            .unwrap()
    );
    assert!(
        !a.enqueue_within(outbound_item(51, m), Bytes::new(), 5, 0)
            .await
            .unwrap()
    );
    // Bytes: items are 3 bytes; 10 allows three for a fresh sender.
    let third = new_mailbox(&*a, 3).await;
    let mut took = Vec::new();
    for k in 70..74u8 {
        let item = outbound_item(k, third);
        took.push(a.enqueue_within(item, Bytes::new(), 0, 10).await.unwrap());
    }
    assert_eq!(took, [true, true, true, false]);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Sessions kept in the database: a nonce stored by one process is taken once, by either;
/// a mailbox keeps its newest few nonces; a token is stored only for the current epoch, and
/// a key rotation advances the epoch and drops the mailbox's sessions in its own write.
#[tokio::test]
async fn sessions_are_shared_single_use_and_end_with_a_rotation() {
    use sealpost_server::store::{NewAccount, RegisterOutcome, Rotation};
    let db = unique_db("sessions");
    let a = open_db(&db, Duration::from_secs(30)).await;
    let b = open_db(&db, Duration::from_secs(30)).await;
    assert!(a.keeps_sessions());
    let m = new_mailbox(&*a, 1).await;
    a.put_nonce([1; 32], m, 100, 3).await.unwrap();
    let (x, y) = tokio::join!(a.take_nonce([1; 32]), b.take_nonce([1; 32]));
    let taken: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        taken,
        vec![(m, 100)],
        "one of two racing processes gets the nonce"
    );
    for k in 0..5u8 {
        a.put_nonce([10 + k; 32], m, 200 + k as u64, 3)
            .await
            .unwrap();
    }
    assert_eq!(
        b.take_nonce([10; 32]).await.unwrap(),
        None,
        "the oldest went"
    );
    assert_eq!(b.take_nonce([14; 32]).await.unwrap(), Some((m, 204)));
    let epoch = b.session_epoch(m).await.unwrap();
    assert!(
        a.put_token([2; 32], m, DeviceId::ACCOUNT, 300, epoch)
            .await
            .unwrap()
    );
    assert_eq!(
        b.token([2; 32]).await.unwrap(),
        Some(StoredToken {
            mailbox: m,
            device: DeviceId::ACCOUNT,
            expires: 300
        })
    );
    let rotated = b
        .register(NewAccount {
            fingerprint: vec![9; 20],
            cert: vec![0x99, 9],
            created: 1,
            invite: None,
            addresses: Vec::new(),
            rotation: Some(Rotation {
                mailbox: m,
                old_fingerprint: vec![1; 20],
            }),
        })
        .await
        .unwrap();
    assert_eq!(rotated, RegisterOutcome::Rotated(m));
    assert_eq!(
        a.token([2; 32]).await.unwrap(),
        None,
        "the rotation ended the token"
    );
    assert_eq!(
        a.take_nonce([13; 32]).await.unwrap(),
        None,
        "and the nonces"
    );
    assert!(
        !a.put_token([3; 32], m, DeviceId::ACCOUNT, 300, epoch)
            .await
            .unwrap(),
        "a sign-in that read the old epoch gets no token"
    );
    assert!(
        a.put_token([3; 32], m, DeviceId::ACCOUNT, 300, epoch + 1)
            .await
            .unwrap()
    );
    assert_eq!(a.sweep_sessions(301).await.unwrap(), 1);
    assert_eq!(b.token([3; 32]).await.unwrap(), None);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Tokens in the database name their device: a token one process stored is read with its
/// device by another, and revoking a device's tokens in one process ends them in every
/// other, leaving the account's other devices signed in.
#[tokio::test]
async fn device_tokens_are_shared_and_revoked_everywhere() {
    let db = unique_db("device_tokens");
    let a = open_db(&db, Duration::from_secs(30)).await;
    let b = open_db(&db, Duration::from_secs(30)).await;
    let m = new_mailbox(&*a, 1).await;
    let (d1, d2) = (DeviceId([1; 16]), DeviceId([2; 16]));
    let epoch = a.session_epoch(m).await.unwrap();
    assert!(a.put_token([1; 32], m, d1, 300, epoch).await.unwrap());
    assert!(a.put_token([2; 32], m, d2, 300, epoch).await.unwrap());
    assert!(
        b.put_token([3; 32], m, DeviceId::ACCOUNT, 300, epoch)
            .await
            .unwrap()
    );
    let device_of = |t: Option<StoredToken>| t.map(|t| (t.mailbox, t.device));
    assert_eq!(device_of(b.token([1; 32]).await.unwrap()), Some((m, d1)));
    assert_eq!(device_of(a.token([2; 32]).await.unwrap()), Some((m, d2)));
    assert_eq!(
        device_of(a.token([3; 32]).await.unwrap()),
        Some((m, DeviceId::ACCOUNT))
    );
    assert_eq!(b.revoke_tokens(m, d1).await.unwrap(), 1);
    assert_eq!(
        a.token([1; 32]).await.unwrap(),
        None,
        "ended in the other process"
    );
    assert_eq!(device_of(a.token([2; 32]).await.unwrap()), Some((m, d2)));
    assert_eq!(b.revoke_tokens(m, DeviceId::ACCOUNT).await.unwrap(), 1);
    assert_eq!(a.token([3; 32]).await.unwrap(), None);
    assert_eq!(device_of(b.token([2; 32]).await.unwrap()), Some((m, d2)));
    a.close().await.unwrap();
    b.close().await.unwrap();
}
