//! The child-process harness against stand-in "nodes" (small shell scripts that print what a
//! node prints), so that its own rules are checked without building the real binary: the
//! ready line gives the URL, other lines are skipped and kept for `stdout_line`, a bad
//! ready line and an early exit are errors, a node can be killed (and is reaped),
//! terminated and restarted on its port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealpost_testkit::TempDir;
use sealpost_testkit::process::{HarnessError, NodeProcess, NodeSpec, Stderr};

const DEADLINE: Duration = Duration::from_secs(30);

/// An executable `/bin/sh` script in `dir`. It gets `run --config FILE ARGS...`.
fn script(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-node");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn spec(dir: &TempDir, body: &str) -> NodeSpec {
    NodeSpec {
        stderr: Stderr::File(dir.path().join("log")),
        ..NodeSpec::new(script(dir.path(), body), dir.path())
    }
}

fn alive(pid: u32) -> bool {
    // A reaped child no longer exists; a zombie would still answer signal 0.
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn the_ready_line_gives_url_and_port_and_later_lines_stay_readable() {
    let dir = TempDir::new("fake");
    let node = NodeProcess::start(
        spec(
            &dir,
            "echo starting; echo oops >&2; echo 'sealpost-node listening on http://127.0.0.1:4321'; \
             echo 'extra: one'; echo 'extra: two' >&1; exec sleep 600",
        ),
        DEADLINE,
    )
    .unwrap();
    assert_eq!(node.url().as_str(), "http://127.0.0.1:4321");
    assert_eq!(node.port(), 4321);
    assert_eq!(node.smtp(), None);
    assert_eq!(node.stdout_line("extra: ", DEADLINE).unwrap(), "one");
    assert_eq!(node.stdout_line("extra: ", DEADLINE).unwrap(), "two");
    assert!(node.is_running());
    let pid = node.pid().unwrap();
    drop(node);
    assert!(!alive(pid), "dropping the handle kills and reaps the node");
    assert!(
        std::fs::read_to_string(dir.path().join("log"))
            .unwrap()
            .contains("oops")
    );
}

#[test]
fn the_gateway_line_is_awaited_when_the_gateway_is_enabled() {
    let dir = TempDir::new("fake");
    let mut s = spec(
        &dir,
        "echo 'sealpost-node listening on http://127.0.0.1:4321'; \
         echo 'sealpost-node gateway listening on smtp://127.0.0.1:2525'; exec sleep 600",
    );
    s.args = vec!["--set".into(), "gateway.enabled=true".into()];
    let node = NodeProcess::start(s, DEADLINE).unwrap();
    assert_eq!(node.smtp(), Some("127.0.0.1:2525".parse().unwrap()));
}

#[test]
fn a_bad_ready_line_is_an_error() {
    let dir = TempDir::new("fake");
    let e = NodeProcess::start(
        spec(
            &dir,
            "echo 'sealpost-node listening on ftp://x'; exec sleep 600",
        ),
        DEADLINE,
    )
    .err()
    .expect("a bad ready line fails");
    assert!(
        matches!(e, HarnessError::BadReadyLine(ref l) if l.contains("ftp://x")),
        "{e}"
    );
}

#[test]
fn a_node_that_exits_before_its_ready_line_is_reported_with_its_status() {
    let dir = TempDir::new("fake");
    let e = NodeProcess::start(spec(&dir, "echo 'bad config' >&2; exit 3"), DEADLINE)
        .err()
        .expect("an early exit fails");
    match e {
        HarnessError::NotReady { status } => assert!(status.contains('3'), "{status}"),
        other => panic!("want NotReady, got {other}"),
    }
}

#[test]
fn terminate_returns_the_exit_status_and_restart_keeps_the_port() {
    let dir = TempDir::new("fake");
    // Listens on 4321 at first, on 5555 when started again without --listen, and on the
    // port of --listen when given one (as the harness does on a restart).
    let body = "trap 'exit 7' TERM; port=4321; m=\"$(dirname \"$0\")/started\"; \
                if [ -e \"$m\" ]; then port=5555; fi; touch \"$m\"; \
                while [ $# -gt 0 ]; do \
                  if [ \"$1\" = --listen ]; then port=${2##*:}; fi; shift; done; \
                echo \"sealpost-node listening on http://127.0.0.1:$port\"; \
                while true; do sleep 1; done";
    let mut node = NodeProcess::start(spec(&dir, body), DEADLINE).unwrap();
    let status = node.terminate(DEADLINE).unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(!node.is_running());
    assert!(matches!(
        node.terminate(DEADLINE),
        Err(HarnessError::NotRunning)
    ));
    node.restart(DEADLINE).unwrap();
    assert_eq!(node.port(), 4321);
    let pid = node.pid().unwrap();
    node.kill();
    assert!(!alive(pid));
    assert!(!node.is_running());
}
