//! `sealpost-node backup` and `restore` (spec/node.md, "Backup and restore"): the real
//! binary, under load. Peers keep delivering to the running node while `backup` copies its
//! database; then the node is stopped, its database set aside, the backup restored in its
//! place and the node started again. Every envelope the node acknowledged (`200`) before
//! the backup began is in the restored node, byte for byte; the restored node serves its
//! users and relays to another node. Also: a backup refuses a directory that is not empty,
//! and a restore refuses a data directory that is not.

mod common;
mod procnode;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use procnode::{BIN, ProcNode};
use rand::{Rng, RngCore};
use reqwest::StatusCode;
use sealpost_proto::api;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::encrypt_to;
use sealpost_proto::{EnvelopeId, MailboxId, NodeUrl};

/// Concurrent delivering peers.
const LOAD_TASKS: usize = 4;
/// Envelopes acknowledged before the backup starts (at least).
const BEFORE_BACKUP: usize = 150;

/// Runs `sealpost-node ARGS`; its stdout, or a panic with its stderr.
fn node_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run sealpost-node")
}

/// Every listed `(seq, id)` of a mailbox, page by page.
async fn all_items(
    api: &Api,
    url: &NodeUrl,
    mailbox: &MailboxId,
    token: &str,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("{}?after={after}&limit=1000", api::mailbox(mailbox));
        let resp = api
            .http
            .get(url.join(&path))
            .bearer_auth(token)
            .send()
            .await
            .expect("list");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("listing")).expect("JSON");
        let items = body["items"].as_array().expect("items").clone();
        if items.is_empty() {
            return out;
        }
        for i in items {
            out.push((
                i["seq"].as_u64().unwrap(),
                i["id"].as_str().unwrap().to_string(),
            ));
        }
        after = body["next"].as_u64().expect("next");
    }
}

fn envelope_for(mailbox: MailboxId) -> Envelope {
    let mut rng = rand::rng();
    // From 4 KiB on, values go to blob files: the copy must carry both kinds.
    let mut sealed = vec![0u8; rng.random_range(1..64 * 1024)];
    rng.fill_bytes(&mut sealed);
    Envelope {
        id: EnvelopeId::random(),
        mailbox,
        sealed,
        token: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_envelope() {
    let mut node = ProcNode::start(
        &[
            "--set",
            "limits.deliver_per_minute=0",
            "--set",
            "limits.submit_per_minute=0",
            "--set",
            "relay.allow_private_destinations=true",
            // Small memtables: the node flushes table and blob files while it is loaded
            // and backed up, so the copy reads files and the write-ahead log both.
            "--set",
            "storage.write_buffer_mb=4",
        ],
        &[],
    );
    let api = Api::default();
    let url = node.url.clone();
    let (_, node_cert) = api.descriptor(&url).await;
    let bob = User::new("bob@beta.test");
    let bob_mb = api.mailbox(&url, &bob).await;

    // Peers deliver until told to stop; each acknowledged envelope is noted with its bytes.
    let acked: Arc<Mutex<HashMap<EnvelopeId, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..LOAD_TASKS {
        let (api, url, cert) = (api.clone(), url.clone(), node_cert.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        load.spawn(async move {
            let peer = peer_key();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let env = envelope_for(bob_mb);
                let encoded = env.encode();
                let payload = encrypt_to(&encoded, &cert).expect("encrypt to the node");
                let a = api.deliver(&url, &peer, payload).await;
                if a.0 == StatusCode::OK {
                    acked.lock().unwrap().insert(env.id, encoded);
                } else {
                    failures.push(format!("{a:?}"));
                }
            }
            failures
        });
    }
    eventually("deliveries before the backup", || {
        let n = acked.lock().unwrap().len();
        async move { (n >= BEFORE_BACKUP).then_some(()) }
    })
    .await;

    // What was acknowledged before the backup began; the load goes on while it runs.
    let before: HashMap<EnvelopeId, Vec<u8>> = acked.lock().unwrap().clone();
    let backup_dir = node.path().join("backup");
    let config = node.config_path();
    let out = tokio::task::spawn_blocking({
        let (config, backup_dir) = (config.clone(), backup_dir.clone());
        move || {
            node_command(&[
                "backup",
                "--config",
                config.to_str().unwrap(),
                "--to",
                backup_dir.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::Relaxed);
    while let Some(failures) = load.join_next().await {
        let failures = failures.expect("load task");
        assert!(failures.is_empty(), "deliveries refused: {failures:?}");
    }
    assert!(
        out.status.success(),
        "backup failed ({}): {}{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("backed up "), "{said}");
    eprintln!(
        "backed up with {} envelopes acknowledged before and {during} while it ran: {said}",
        before.len()
    );

    // A second backup into the same directory is refused; nothing there changes.
    let again = node_command(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Stop the node; a restore refuses its data directory while it holds the database.
    assert!(node.terminate().success(), "{}", node.log());
    let refused = node_command(&[
        "restore",
        "--config",
        config.to_str().unwrap(),
        "--from",
        backup_dir.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The operator sets the old database aside and restores.
    std::fs::rename(node.data_dir(), node.path().join("data.old")).unwrap();
    let restored = node_command(&[
        "restore",
        "--config",
        config.to_str().unwrap(),
        "--from",
        backup_dir.to_str().unwrap(),
    ]);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    node.restart();

    // Every envelope acknowledged before the backup began is there, with its bytes.
    let token = api.token(&node.url, &bob_mb, &bob.keys).await;
    let items = all_items(&api, &node.url, &bob_mb, &token).await;
    assert_eq!(
        items.len(),
        items.iter().map(|(_, id)| id).collect::<HashSet<_>>().len(),
        "an envelope twice"
    );
    let listed: HashMap<String, u64> = items.into_iter().map(|(seq, id)| (id, seq)).collect();
    let mut missing = Vec::new();
    for (id, bytes) in &before {
        match listed.get(&id.to_hex()) {
            Some(seq) => {
                let resp = api.get(&node.url, &bob_mb, *seq, Some(&token)).await;
                assert_eq!(resp.status(), StatusCode::OK);
                assert_eq!(&resp.bytes().await.unwrap()[..], &bytes[..], "{id:?}");
            }
            None => missing.push(id.to_hex()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged envelopes are not in the restored node: {missing:?}",
        missing.len(),
        before.len()
    );
    // Nothing the backup holds was never acknowledged, nor is anything there twice.
    let all = acked.lock().unwrap();
    assert!(
        listed
            .keys()
            .all(|id| all.keys().any(|a| a.to_hex() == *id))
    );

    // The restored node serves new deliveries and relays to another node.
    let dest = ProcNode::start(&["--set", "limits.deliver_per_minute=0"], &[]);
    let carol = User::new("carol@dest.test");
    let carol_mb = api.mailbox(&dest.url, &carol).await;
    let (_, dest_cert) = api.descriptor(&dest.url).await;
    let bob_token = api.token(&node.url, &bob_mb, &bob.keys).await;
    let letter = envelope(&bob, &carol, carol_mb, "after the restore", "still here");
    let a = api
        .submit(
            &node.url,
            Some(&bob_token),
            hop(&letter, &dest.url, &dest_cert).encode(),
        )
        .await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
    let carol_token = api.token(&dest.url, &carol_mb, &carol.keys).await;
    eventually("the relayed letter at the other node", || {
        let (api, url, token) = (api.clone(), dest.url.clone(), carol_token.clone());
        let id = letter.id.to_hex();
        async move {
            api.items(&url, &carol_mb, &token)
                .await
                .iter()
                .any(|(_, i)| *i == id)
                .then_some(())
        }
    })
    .await;
}

#[test]
fn a_backup_of_a_directory_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    sealpost_testkit::process::init(Path::new(BIN), dir.path()).unwrap();
    let config = dir.path().join("node.toml");
    let out = node_command(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--to",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no Sealpost database"), "{err}");
    assert!(!dir.path().join("b").exists(), "nothing written: {err}");
}
