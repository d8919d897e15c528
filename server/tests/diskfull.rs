//! A full disk: every write is refused with `503 unavailable` and stores nothing, reads go
//! on, and once space returns the node writes again by itself (RocksDB's error recovery,
//! which waits for the size of one memtable to be free), with nothing lost or doubled.
//!
//! The gateway likewise answers `452` (insufficient storage) until space returns, then
//! `250`, and stores the message once.
//!
//! The data directory sits on a small tmpfs mounted for the test (root only, as in CI and
//! the dev container); the mount is removed however the test ends.

mod common;
mod legacy;
mod procnode;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use legacy::Smtp;
use procnode::ProcNode;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;

/// A tmpfs mounted on a directory, unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (this test needs root, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node still running after a failed assertion must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while let Ok(n @ 1..) = f.write(&chunk) {
        written += n as u64;
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(mnt.path(), "24m");
    let data = mnt.path().join("data");
    let filler = mnt.path().join("filler");
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.data_dir = data.clone();
        // The smallest memtable budget: RocksDB resumes once this much is free again.
        c.storage.write_buffer_mb = 4;
        c.limits.deliver_per_minute = 0;
    })
    .await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let bob_mb = api.mailbox(&url, &bob).await;
    let alice_mb = api.mailbox(&url, &alice).await;
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    let alice_token = api.token(&url, &alice_mb, &alice.keys).await;
    let peer = peer_key();
    let before = envelope(&alice, &bob, bob_mb, "before", "the disk filled up");
    let a = api
        .deliver(&url, &peer, hop(&before, &url, &cert).payload)
        .await;
    assert_eq!(a.0, StatusCode::OK, "{a:?}");

    assert!(fill(&filler) > 0, "the filler took the free space");
    let unavailable =
        |a: &Answer| a.0 == StatusCode::SERVICE_UNAVAILABLE && code(a) == "unavailable";

    // Every kind of write is refused with 503 ...
    let during = envelope(&alice, &bob, bob_mb, "during", "the disk is full");
    let during_payload = hop(&during, &url, &cert).payload;
    let a = api.deliver(&url, &peer, during_payload.clone()).await;
    assert!(unavailable(&a), "deliver on a full disk: {a:?}");
    let a = api
        .submit(&url, Some(&alice_token), hop(&during, &url, &cert).encode())
        .await;
    assert!(unavailable(&a), "submit on a full disk: {a:?}");
    let a = api
        .register(&url, &User::new("carol@beta.test"), None)
        .await;
    assert!(unavailable(&a), "register on a full disk: {a:?}");
    let a = api
        .put_record(
            &url,
            "bob@beta.test",
            record(&bob, &[(&url, node.node_key, bob_mb)], 1),
        )
        .await;
    assert!(unavailable(&a), "record on a full disk: {a:?}");
    let a = api.ack(&url, &bob_mb, 1, Some(&bob_token)).await;
    assert!(unavailable(&a), "ack on a full disk: {a:?}");
    assert!(
        api.metric(&url, "sealpost_store_failed_batches_total")
            .await
            >= 1.0
    );

    // ... while reads go on: the mailbox still lists and serves what it had.
    assert_eq!(
        api.items(&url, &bob_mb, &bob_token).await,
        vec![(1, before.id.to_hex())]
    );
    let got = api.get(&url, &bob_mb, 1, Some(&bob_token)).await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), before.encode());

    // Space returns: the same delivery, retried as a peer would, goes through.
    std::fs::remove_file(&filler).unwrap();
    eventually("the node to write again after space returned", || {
        let (api, url, peer, payload) = (
            api.clone(),
            url.clone(),
            peer.clone(),
            during_payload.clone(),
        );
        async move {
            let a = api.deliver(&url, &peer, payload).await;
            assert!(
                a.0 == StatusCode::OK || unavailable(&a),
                "while recovering: {a:?}"
            );
            (a.0 == StatusCode::OK).then_some(())
        }
    })
    .await;
    let a = api
        .submit(&url, Some(&alice_token), hop(&during, &url, &cert).encode())
        .await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
    let a = api.ack(&url, &bob_mb, 1, Some(&bob_token)).await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");

    // Nothing refused was stored, nothing accepted was lost or doubled, also after a
    // restart (the hop submitted above is delivered locally as a duplicate).
    node.stop().await;
    node.restart().await;
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    assert_eq!(
        api.items(&url, &bob_mb, &bob_token).await,
        vec![(2, during.id.to_hex())]
    );
    let got = api.get(&url, &bob_mb, 2, Some(&bob_token)).await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), during.encode());
    let a = api
        .register(&url, &User::new("carol@beta.test"), None)
        .await;
    assert_eq!(a.0, StatusCode::CREATED, "{a:?}");
    node.stop().await;
    drop(fs);
}

/// Guards the gateway's `250 means stored`: on a full disk the store refuses the write and
/// the gateway answers `452` (the legacy sender keeps the message and retries); once space
/// returns the retry gets `250`, and the message is in the mailbox once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_452_on_a_full_disk_and_250_after() {
    let mnt = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(mnt.path(), "24m");
    let filler = mnt.path().join("filler");
    let data = format!("data_dir=\"{}\"", mnt.path().join("data").display());
    let mut node = ProcNode::start(
        &[
            "--set",
            &data,
            "--set",
            "storage.write_buffer_mb=4",
            "--set",
            "gateway.enabled=true",
            "--set",
            // No DNS in this test: sender checks are tests/tests/gateway_auth_e2e.rs's.
            "gateway.verify=false",
            "--set",
            "gateway.domain=\"gw.test\"",
            "--set",
            "gateway.listen=\"127.0.0.1:0\"",
        ],
        &[],
    );
    let api = Api::default();
    let url = node.url.clone();
    let smtp = node.smtp.expect("the gateway listens");
    let (desc, _) = api.descriptor(&url).await;
    let dave = User::new("dave@gw.test");
    let dave_mb = api.mailbox(&url, &dave).await;
    let a = api
        .put_record(
            &url,
            "dave@gw.test",
            record(&dave, &[(&url, desc.node_key, dave_mb)], 1),
        )
        .await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");

    fill(&filler);
    match legacy::send(smtp, "dave@gw.test", "while full").await {
        Smtp::Refused(452, _) => {}
        other => panic!("legacy mail on a full disk: {other:?}"),
    }
    std::fs::remove_file(&filler).unwrap();
    eventually(
        "the gateway to store again after space returned",
        || async move {
            match legacy::send(smtp, "dave@gw.test", "while full").await {
                Smtp::Stored => Some(()),
                Smtp::Refused(452, _) => None,
                other => panic!("while recovering: {other:?}"),
            }
        },
    )
    .await;
    let token = api.token(&url, &dave_mb, &dave.keys).await;
    assert_eq!(api.items(&url, &dave_mb, &token).await.len(), 1);
    node.kill();
    drop(fs);
}
