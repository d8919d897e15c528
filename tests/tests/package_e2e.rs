//! The Debian package on this machine: `scripts/deb.sh` packages the binaries this test
//! suite runs, `dpkg -i` installs it (system user `sealpost`, a node in /var/lib/sealpost
//! made by `sealpost-node init` as that user, the systemd unit), `systemd-analyze verify`
//! accepts the unit, the packaged user runs the node (it answers on loopback and stops on
//! SIGTERM), and `dpkg --purge` removes binaries, data and user again.
//!
//! Needs root (dpkg); it installs and purges the package `sealpost-node` on the machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealpost_tests::{TempDir, bin_dir};

const PACKAGE: &str = "sealpost-node";
const HOME: &str = "/var/lib/sealpost";
const UNIT: &str = "/lib/systemd/system/sealpost-node.service";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", PACKAGE])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn user_exists() -> bool {
    Command::new("getent")
        .args(["passwd", "sealpost"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Purges the package when dropped, so a failing test leaves the machine as it found it.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
    }
}

#[test]
fn deb_installs_runs_as_its_user_and_purges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test installs a package: run the suite as root (make test does)"
    );
    assert!(
        !installed(),
        "{PACKAGE} is already installed on this machine; this test would replace it"
    );
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = TempDir::new("deb");
    let built = run(Command::new(repo.join("scripts/deb.sh"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out.path()));
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    assert!(deb.exists(), "{} was built", deb.display());

    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed());
    assert!(user_exists(), "the package made the system user");
    for b in ["/usr/bin/sealpost-node", "/usr/bin/sealpost"] {
        assert!(Path::new(b).exists(), "{b} installed");
    }

    // The unit passes systemd's own checks (with the binary in place).
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("sealpost-node.service"),
        "systemd-analyze has remarks on the unit: {said}"
    );
    // systemd's own rating of the sandbox (0 best, 10 worst, --threshold in tenths); 1.7 when written.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", UNIT])
        .output()
        .expect("systemd-analyze security");
    assert!(
        security.status.success(),
        "the unit's exposure is above 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
    let unit = std::fs::read_to_string(UNIT).expect("unit");
    for line in [
        "User=sealpost",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit has {line}");
    }

    // postinst ran `init` as the packaged user: its files, its keys (0600).
    let uid = |p: &str| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .uid()
    };
    let sealpost_uid = uid(HOME);
    assert_ne!(sealpost_uid, 0, "{HOME} belongs to the system user");
    assert_eq!(uid(&format!("{HOME}/node.toml")), sealpost_uid);
    let key = format!("{HOME}/keys/node.ed25519");
    assert_eq!(uid(&key), sealpost_uid);
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the node key is owner-only");
    assert_eq!(
        std::fs::metadata(HOME).expect("home").permissions().mode() & 0o777,
        0o750
    );

    // The packaged user initialises and runs a node of its own.
    let second = format!("{HOME}/second");
    run(Command::new("runuser").args([
        "-u",
        "sealpost",
        "--",
        "/usr/bin/sealpost-node",
        "init",
        "--dir",
        &second,
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(uid(&format!("{second}/node.toml")), sealpost_uid);
    for config in [format!("{HOME}/node.toml"), format!("{second}/node.toml")] {
        serve_once(&config);
    }

    run(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(!installed());
    assert!(!Path::new("/usr/bin/sealpost-node").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(!Path::new(HOME).exists(), "purge removed the node's data");
    assert!(!user_exists(), "purge removed the system user");
}

/// Runs `sealpost-node run --config CONFIG` as user sealpost on a free loopback port,
/// checks that it answers `/healthz`, and stops it with SIGTERM.
fn serve_once(config: &str) {
    // setpriv execs the node itself (runuser would stay its parent and die of the signal).
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=sealpost",
            "--regid=sealpost",
            "--init-groups",
            "--",
        ])
        .args(["/usr/bin/sealpost-node", "run", "--config", config])
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv sealpost-node run");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_else(|| {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("no ready line from the packaged node: {err}")
    });
    let addr = ready
        .strip_prefix("sealpost-node listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {ready:?}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the packaged node");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "healthz: {answer}");
    // SAFETY: kill with a pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "the node exited {status} on SIGTERM");
            break;
        }
        assert!(Instant::now() < end, "the node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
