//! The real `sealpost-node` binary: `init`, `run` (the ready line on stdout), SIGKILL right
//! after a delivery was answered and a restart on the same port (the envelope is there: it
//! was durable before the answer), overrides from the command line, SIGTERM, and the one
//! error line a failed start prints.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::NodeUrl;
use sealpost_proto::codec::Codec;

const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");

/// A running node process and the URL from its ready line.
struct Proc {
    child: Child,
    url: NodeUrl,
}

fn start(dir: &Path, extra: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("node.toml"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        panic!(
            "no ready line; stderr:\n{}",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        )
    });
    let url = line
        .strip_prefix("sealpost-node listening on ")
        .unwrap_or_else(|| panic!("ready line: {line:?}"));
    Proc {
        child,
        url: NodeUrl::parse(url).unwrap(),
    }
}

/// Waits for the process to exit, with a deadline.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "process did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_keeps_what_it_acknowledged() {
    let api = Api::default();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--registration", "open"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node.toml"));
    for key in ["keys/node.ed25519", "keys/node-identity.asc", "node.toml"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "init does not overwrite a node");

    let mut node = start(dir.path(), &[]);
    assert!(
        node.url.as_str().starts_with("http://127.0.0.1:"),
        "{}",
        node.url
    );
    let bob = User::new("bob@beta.test");
    let bob_mb = api.mailbox(&node.url, &bob).await;
    let (_, node_cert) = api.descriptor(&node.url).await;
    let env = envelope(
        &User::new("alice@alpha.test"),
        &bob,
        bob_mb,
        "durable",
        "still here?",
    );
    let a = api
        .deliver(
            &node.url,
            &peer_key(),
            hop(&env, &node.url, &node_cert).payload,
        )
        .await;
    assert_eq!(a, (StatusCode::OK, serde_json::json!({ "stored": true })));

    // SIGKILL: no shutdown path runs.
    node.child.kill().unwrap();
    wait_exit(&mut node.child);

    let port = node.url.authority().rsplit_once(':').unwrap().1.to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut node = start(
        dir.path(),
        &["--listen", &listen, "--set", "limits.max_envelope=65536"],
    );
    assert_eq!(node.url.authority(), listen, "same port, same derived URL");
    let (desc, _) = api.descriptor(&node.url).await;
    assert_eq!(desc.max_envelope, 65536, "--set overrides the config file");
    let token = api.token(&node.url, &bob_mb, &bob.keys).await;
    assert_eq!(
        api.items(&node.url, &bob_mb, &token).await,
        vec![(1, env.id.to_hex())]
    );
    let got = api
        .get(&node.url, &bob_mb, 1, Some(&token))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), env.encode());

    // SIGTERM: a clean exit, and the database is closed (it opens again at once).
    assert_eq!(
        unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = wait_exit(&mut node.child);
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let mut envelopes = 0;
    sealpost_server::store::rocks::scan_all(&dir.path().join("data"), |cf, _, _| {
        envelopes += usize::from(cf == "envelopes");
    })
    .unwrap();
    assert_eq!(envelopes, 1);
}

/// Runs `sealpost-node ARGS` that must fail (killed at the deadline if it does not exit) and
/// returns its `sealpost-node: error: ...` line.
fn error_line(dir: &Path, args: &[&str]) -> String {
    let log = dir.join("failing.log");
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} did not exit: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sealpost-node: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{args:?}: one error line: {stderr}");
    lines[0].to_string()
}

/// The typed start-up errors still reach the operator as one line naming what failed, where,
/// and the cause underneath.
#[test]
fn start_up_errors_name_what_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let config = dir.path().join("node.toml");
    let config = config.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["init", "--dir", d, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let line = error_line(dir.path(), &["init", "--dir", d]);
    assert_eq!(
        line,
        format!(
            "sealpost-node: error: {config} exists; pass --force to overwrite it (keys are kept)"
        )
    );

    // The gateway's SMTP port is taken: the line names the gateway, the setting, the address
    // and the OS's reason.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("gateway.listen=\"127.0.0.1:{port}\"");
    let line = error_line(
        dir.path(),
        &[
            "run",
            "--config",
            config,
            "--set",
            "gateway.enabled=true",
            "--set",
            // No DNS in this test: sender checks are tests/tests/gateway_auth_e2e.rs's.
            "gateway.verify=false",
            "--set",
            "gateway.domain=\"gw.test\"",
            "--set",
            &listen,
        ],
    );
    let want = format!(
        "sealpost-node: error: starting the SMTP gateway: binding gateway.listen 127.0.0.1:{port}: "
    );
    assert!(line.starts_with(&want), "{line}");
    assert!(line.contains("in use"), "{line}");
    drop(taken);

    // No node keys: the line says so, names the file and suggests `init`.
    let signing = dir.path().join("keys/node.ed25519");
    std::fs::remove_file(&signing).unwrap();
    let line = error_line(dir.path(), &["run", "--config", config]);
    let want = format!(
        "sealpost-node: error: loading the node's keys (run `sealpost-node init` first?): {}: ",
        signing.display()
    );
    assert!(line.starts_with(&want), "{line}");
}
