//! `sealpost-node migrate --from rocksdb --to postgres` (issue 17 item 6): a node's RocksDB
//! database with accounts, claims, records, used invites, envelopes (some acked), dedupe
//! entries, queued hops and peer pins is moved by the real binary; then both stores are
//! read through the `Store` trait and must answer alike, and go on alike (the next
//! sequence, a redelivered acked id). A second run moves nothing new.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_server::config::{PostgresConfig, StorageConfig};
use sealpost_server::store::*;
use sealpost_testkit::conformance::{BIG, account, envelope, outbound_item};
use sealpost_testkit::postgres::PgServer;
use sealpost_testkit::process::init;

const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");

async fn fill(s: &dyn Store) -> Vec<(MailboxId, Vec<u8>)> {
    let mut mailboxes = Vec::new();
    for fpr in 1..=3u8 {
        let mut a = account(fpr, if fpr == 2 { Some("code-two") } else { None });
        a.addresses = vec![format!("user{fpr}@node.test")];
        let RegisterOutcome::Created(m) = s.register(a).await.unwrap() else {
            panic!("register");
        };
        mailboxes.push((m, vec![fpr; 20]));
        s.put_record(format!("user{fpr}@node.test"), m, 7, vec![fpr, 1, 2])
            .await
            .unwrap();
        for id in 0..12u8 {
            let e = envelope(m, fpr * 40 + id, 100 + id as usize);
            assert!(matches!(
                s.deliver(e, BIG).await.unwrap(),
                DeliverOutcome::Stored { .. }
            ));
        }
        // Acked ones leave their dedupe entries behind.
        assert!(s.ack(m, 2).await.unwrap());
        assert!(s.ack(m, 5).await.unwrap());
        s.enqueue(outbound_item(fpr, m), Bytes::from(vec![fpr; 50]))
            .await
            .unwrap();
    }
    s.pin_peer(
        NodeUrl::parse("https://peer.test").unwrap(),
        PeerPin {
            node_key: [7; 32],
            pinned_at: 99,
        },
    )
    .await
    .unwrap();
    mailboxes
}

/// Everything a store answers about the filled data, in a comparable form.
async fn view(s: &dyn Store, mailboxes: &[(MailboxId, Vec<u8>)]) -> String {
    let mut out = String::new();
    for (m, fpr) in mailboxes {
        out += &format!("{:?}\n", s.account(*m).await.unwrap());
        out += &format!("{:?}\n", s.mailbox_of(fpr.clone()).await.unwrap());
        let items = s.list(*m, 0, 1000).await.unwrap();
        out += &format!("{items:?}\n");
        for i in items {
            out += &format!("{:?}\n", s.envelope(*m, i.seq).await.unwrap());
        }
    }
    for n in 1..=3 {
        let address = format!("user{n}@node.test");
        out += &format!("{:?}\n", s.owner_of(address.clone()).await.unwrap());
        out += &format!("{:?}\n", s.record(address).await.unwrap());
    }
    let mut queued = s.outbound().await.unwrap();
    queued.sort_by_key(|i| i.id);
    for q in &queued {
        out += &format!(
            "{q:?} {:?}\n",
            s.outbound_payload(q.queue_id()).await.unwrap()
        );
    }
    out += &format!("{:?}\n", s.peer_pins().await.unwrap());
    out
}

/// What a store does next: a used invite, a taken address, a redelivered acked id, a new
/// envelope's sequence.
async fn next_steps(s: &dyn Store, mailboxes: &[(MailboxId, Vec<u8>)]) -> String {
    let (m, _) = mailboxes[0];
    let mut again = account(9, Some("code-two"));
    again.addresses = vec![];
    let mut taken = account(10, None);
    taken.addresses = vec!["user3@node.test".into()];
    format!(
        "{:?} {:?} {:?} {:?}",
        s.register(again).await.unwrap(),
        s.register(taken).await.unwrap(),
        s.deliver(envelope(m, 41, 101), BIG).await.unwrap(),
        s.deliver(envelope(m, 200, 10), BIG).await.unwrap(),
    )
}

fn run_migrate(dir: &Path, url: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "migrate", "--from", "rocksdb", "--to", "postgres", "--config",
        ])
        .arg(dir.join("node.toml"))
        .args(["--set", &format!("storage.postgres.url=\"{url}\"")])
        .output()
        .expect("run sealpost-node migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "migrate failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rocksdb_node_moves_to_postgres_and_both_stores_answer_alike() {
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_database("moved").await.unwrap();
    let url = pg.url("moved");
    let dir = tempfile::tempdir().unwrap();
    init(Path::new(BIN), dir.path()).unwrap();
    let data = dir.path().join("data");
    let rocks = RocksStore::open(&data, &StorageConfig::default()).unwrap();
    let mailboxes = fill(&*rocks).await;
    rocks.close().await.unwrap();
    drop(rocks);

    // A running node (the database open) is refused.
    let busy = RocksStore::open(&data, &StorageConfig::default()).unwrap();
    let out = Command::new(BIN)
        .args([
            "migrate", "--from", "rocksdb", "--to", "postgres", "--config",
        ])
        .arg(dir.path().join("node.toml"))
        .args(["--set", &format!("storage.postgres.url=\"{url}\"")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the node first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    busy.close().await.unwrap();
    drop(busy);

    let text = run_migrate(dir.path(), &url);
    assert!(
        text.contains("accounts 3, address claims 3, records 3, used invites 1, envelopes 30, dedupe entries 36, queued hops 3, peer pins 1"),
        "{text}"
    );
    let again = run_migrate(dir.path(), &url);
    assert!(
        again.contains("accounts 0, address claims 0, records 0, used invites 0, envelopes 0, dedupe entries 0, queued hops 0, peer pins 0"),
        "a second run adds nothing: {again}"
    );

    let rocks = RocksStore::open(&data, &StorageConfig::default()).unwrap();
    let pg_store: Arc<PgStore> = PgStore::open(&PostgresConfig {
        url,
        ..PostgresConfig::default()
    })
    .await
    .unwrap();
    let (before, after) = (
        view(&*rocks, &mailboxes).await,
        view(&*pg_store, &mailboxes).await,
    );
    assert!(before.contains("Some(Account"), "the view reads something");
    assert_eq!(before, after, "both stores answer alike");
    let (r, p) = (
        next_steps(&*rocks, &mailboxes).await,
        next_steps(&*pg_store, &mailboxes).await,
    );
    assert!(
        r.contains("InviteUsed")
            && r.contains("AddressTaken")
            && r.contains("Duplicate { seq: 2 }")
            && r.contains("Stored { seq: 13 }"),
        "{r}"
    );
    assert_eq!(r, p, "and go on alike");
    assert_eq!(
        pg_store.claim_outbound(10).await.unwrap().len(),
        3,
        "moved hops are free for the first process to claim"
    );
    rocks.close().await.unwrap();
    pg_store.close().await.unwrap();
}
