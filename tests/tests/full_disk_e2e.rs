//! A full disk under the sender's own node, end to end: the node refuses the submission with
//! `503 unavailable`, `sealpost send` keeps the letter in the outbox (exit 2), and once
//! space returns (RocksDB resumes by itself) `sealpost outbox flush` sends it; it arrives
//! once, verified. The node's data directory is on a small tmpfs mounted for the test
//! (root only, as in CI); the mount is removed however the test ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sealpost_tests::{FAST_RELAY, Node, Resolve, TempDir, User};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

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
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    while let Ok(1..) = f.write(&chunk) {}
    let _ = f.sync_all();
}

fn outbox(u: &User) -> Vec<Value> {
    u.ok(&["outbox", "list", "--json"], b"")
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_submission_refused_for_a_full_disk_waits_in_the_outbox() {
    let mnt = TempDir::new("full-disk");
    let fs = Tmpfs::mount(mnt.path(), "24m");
    let data = mnt.path().join("data");
    let mut args: Vec<String> = FAST_RELAY.iter().map(|s| s.to_string()).collect();
    for set in [
        format!("data_dir=\"{}\"", data.display()),
        // The smallest memtable budget: writing resumes once 4 MiB are free again.
        "storage.write_buffer_mb=4".to_string(),
    ] {
        args.push("--set".into());
        args.push(set);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Node::start_with("full-d", &args);
    let e = Node::start("full-e");
    let mut resolve = Resolve::default();
    resolve.add("delta.test", &d.url);
    resolve.add("epsilon.test", &e.url);
    let carol = User::init("carol@delta.test", &[&d], &resolve);
    let dave = User::init("dave@epsilon.test", &[&e], &resolve);

    fill(&mnt.path().join("filler"));
    let out = carol.run(
        &[
            "send",
            "--to",
            "dave@epsilon.test",
            "--subject",
            "Disk full",
        ],
        b"Sent while the node's disk was full.\n",
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.error_line().contains("outbox"), "{out:?}");
    let waiting = outbox(&carol);
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert!(
        waiting[0].to_string().contains("unavailable"),
        "the outbox says why: {waiting:#?}"
    );

    std::fs::remove_file(mnt.path().join("filler")).unwrap();
    // Polls: RocksDB checks for free space every few seconds.
    let start = Instant::now();
    while !outbox(&carol).is_empty() {
        assert!(start.elapsed() < DEADLINE, "the outbox never emptied");
        carol.run(&["outbox", "flush"], b"");
        std::thread::sleep(Duration::from_millis(500));
    }
    let fetches = dave.fetch_until(DEADLINE, |f| {
        f.iter()
            .flat_map(|x| x["new"].as_array().cloned().unwrap_or_default())
            .count()
            >= 1
    });
    let new: Vec<Value> = fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0]["header"]["subject"], "Disk full");
    assert_eq!(new[0]["verified"], true);
    d.stop();
    drop(fs);
}
