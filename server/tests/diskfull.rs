mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reqwest::StatusCode;

struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(dir.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(_) => break,
        }
    }
    let _ = f.sync_all();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment() {
    let mnt = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(mnt.path(), "160m");
    let data = mnt.path().join("data");
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.data_dir = data.clone();
        c.limits.deliver_per_minute = 0;
    })
    .await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let bob_mb = api.mailbox(&url, &bob).await;
    let peer = peer_key();
    let e = envelope(&alice, &bob, bob_mb, "a", "b");
    let a = api.deliver(&url, &peer, hop(&e, &url, &cert).payload).await;
    eprintln!("first: {a:?}");
    let n = fill(&mnt.path().join("filler"));
    eprintln!("filled {n}");
    for i in 0..5 {
        let e = envelope(&alice, &bob, bob_mb, "a", "b");
        let a = api.deliver(&url, &peer, hop(&e, &url, &cert).payload).await;
        eprintln!("full {i}: {a:?}");
    }
    std::fs::remove_file(mnt.path().join("filler")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let e = envelope(&alice, &bob, bob_mb, "a", "b");
        let a = api.deliver(&url, &peer, hop(&e, &url, &cert).payload).await;
        eprintln!("after {:?}: {a:?}", start.elapsed());
        if a.0 == StatusCode::OK || start.elapsed().as_secs() > 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
    node.stop().await;
}
