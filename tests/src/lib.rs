//! End-to-end harness: real `sealpost-node` processes on loopback and the real `sealpost`
//! CLI, each with its own temporary directory.
//!
//! - [`Node::start`] runs `sealpost-node init` (port 0) and `sealpost-node run`, and waits
//!   for its `sealpost-node listening on http://IP:PORT` line (with a deadline, no sleeps).
//!   [`Node::stop`] kills it; [`Node::restart`] runs it again on the same port and data.
//! - [`User`] is a `sealpost` profile; [`User::run`] runs one command with the world's
//!   `--resolve` entries and returns exit code, stdout and stderr.
//!
//! Node processes die with the test process: they are spawned from one long-lived thread
//! with `PR_SET_PDEATHSIG`, and an `atexit` handler kills what is left and removes the
//! temporary directories of fixtures kept in statics (which are never dropped).

/// The private dnsmasq of the harness (moved to the testkit so the benchmarks share it).
pub use sealpost_testkit::dns;
pub mod pebble;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealpost_testkit::process::{NodeProcess, NodeSpec, Stderr, init};

/// A temporary directory removed on drop and, for fixtures in statics, at exit.
pub use sealpost_testkit::TempDir;

/// How long a node may take to start.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// `target/debug` (or whichever profile built this test binary).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/client_e2e-HASH → target/debug
    let deps = exe.parent().expect("test binary has a directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        p.display()
    );
    p
}

pub fn node_bin() -> PathBuf {
    binary("sealpost-node")
}

pub fn cli_bin() -> PathBuf {
    binary("sealpost")
}

// ---------------------------------------------------------------------------------------
// Nodes (the child-process harness of `sealpost-testkit`, with this suite's defaults)

/// A running (or stopped) `sealpost-node`.
pub struct Node {
    pub name: String,
    /// `http://127.0.0.1:PORT`, stable across restarts.
    pub url: String,
    pub port: u16,
    process: NodeProcess,
    dir: TempDir,
}

/// Relay retries fast in tests, so a node that comes back gets its mail soon.
pub const FAST_RELAY: &[&str] = &["--set", "relay.retry_base=1", "--set", "relay.retry_max=2"];

impl Node {
    /// Initialises a node directory and starts the node on a free loopback port.
    pub fn start(name: &str) -> Node {
        Self::start_with(name, FAST_RELAY)
    }

    pub fn start_with(name: &str, run_args: &[&str]) -> Node {
        let dir = TempDir::new(&format!("node-{name}"));
        let bin = node_bin();
        if let Err(e) = init(&bin, dir.path()) {
            panic!("{e}");
        }
        let spec = NodeSpec {
            args: run_args.iter().map(|s| s.to_string()).collect(),
            stderr: Stderr::File(dir.path().join("node.log")),
            // The gateway's ready line is left for `stdout_line`.
            wait_gateway: Some(false),
            ..NodeSpec::new(bin, dir.path())
        };
        let process = NodeProcess::start(spec, START_DEADLINE).unwrap_or_else(|e| {
            panic!(
                "node {name} did not start: {e}\n--- log ---\n{}",
                std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
            )
        });
        Node {
            name: name.to_string(),
            url: process.url().to_string(),
            port: process.port(),
            process,
            dir,
        }
    }

    /// Starts a node that listens on `ip` (a loopback address of its own, `127.0.0.X`),
    /// connects to other nodes from it, and keeps an access record ([`Node::access`]).
    pub fn start_on(name: &str, ip: &str) -> Node {
        let listen = format!("listen={ip}:0");
        let source = format!("relay.source_address={ip}");
        let mut args: Vec<&str> = FAST_RELAY.to_vec();
        args.extend([
            "--set",
            listen.as_str(),
            "--set",
            source.as_str(),
            "--set",
            "testing.access_record=access.log",
        ]);
        Self::start_with(name, &args)
    }

    /// The node's access record (`testing.access_record`, see [`Node::start_on`]): one
    /// (peer address or `-`, what was asked) per line.
    pub fn access(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    /// The node's directory (config, keys, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Restarts the node on the same port and data with other `run` arguments (after the
    /// suite's defaults), which may change its scheme (e.g. turn TLS on).
    pub fn restart_with(&mut self, args: &[String]) {
        let mut all: Vec<String> = FAST_RELAY.iter().map(|s| s.to_string()).collect();
        all.extend_from_slice(args);
        self.process.set_args(all);
        self.relaunch();
    }

    fn relaunch(&mut self) {
        self.stop();
        if let Err(e) = self.process.restart(START_DEADLINE) {
            panic!(
                "node {} did not start: {e}\n--- log ---\n{}",
                self.name,
                self.log()
            );
        }
        self.url = self.process.url().to_string();
        self.port = self.process.port();
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The node's log so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the node (like a crash or a network cut).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts the node again on the same port, data and keys.
    pub fn restart(&mut self) {
        let url = self.url.clone();
        self.relaunch();
        assert_eq!(self.url, url, "restarted node must keep its URL");
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Waits (up to [`START_DEADLINE`]) for the next stdout line of the running node that
    /// starts with `prefix`, and returns the rest of it: e.g. the gateway's
    /// `sealpost-node gateway listening on smtp://IP:PORT`.
    pub fn stdout_line(&self, prefix: &str) -> String {
        self.process
            .stdout_line(prefix, START_DEADLINE)
            .unwrap_or_else(|e| panic!("node {}: {e}\n--- log ---\n{}", self.name, self.log()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Before the directory goes.
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// CLI

/// What a CLI run produced.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The one error line (asserts that there is exactly one line and no panic).
    pub fn error_line(&self) -> &str {
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let errors: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("sealpost: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "want one error line: {:?}", self.stderr);
        assert_eq!(
            lines.last(),
            errors.last().copied(),
            "the error is the last line: {:?}",
            self.stderr
        );
        // No cause printed twice ("A: B: A: B", "ctx: A: A").
        let parts: Vec<&str> = errors[0].split(": ").collect();
        for k in 1..parts.len() {
            let (left, right) = (parts[..k].join(": "), parts[k..].join(": "));
            assert!(
                left != right && !left.ends_with(&format!(": {right}")),
                "repeated text in {:?}",
                errors[0]
            );
        }
        errors[0]
    }
}

/// The `--resolve` entries of a test world: domain → node URL.
#[derive(Clone, Debug, Default)]
pub struct Resolve(pub Vec<(String, String)>);

impl Resolve {
    pub fn add(&mut self, domain: &str, url: &str) {
        self.0.push((domain.to_string(), url.to_string()));
    }
    fn args(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(d, u)| ["--resolve".to_string(), format!("{d}={u}")])
            .collect()
    }
}

/// One `sealpost` profile.
pub struct User {
    pub address: String,
    home: TempDir,
    pub resolve: Resolve,
    /// Extra environment, e.g. SEALPOST_PASSPHRASE.
    pub env: Vec<(String, String)>,
    /// The local address the `sealpost` runs connect from (`--source-address`).
    pub source: Option<String>,
}

impl User {
    /// A profile directory that does not exist yet (`init` creates it).
    pub fn new(address: &str, resolve: &Resolve) -> User {
        let local = address.split('@').next().unwrap_or("user");
        User {
            address: address.to_string(),
            home: TempDir::new(&format!("user-{local}")),
            resolve: resolve.clone(),
            env: Vec::new(),
            source: None,
        }
    }

    /// `init ADDRESS --node URL...`; panics unless it succeeds.
    pub fn init(address: &str, nodes: &[&Node], resolve: &Resolve) -> User {
        Self::init_from(address, None, nodes, resolve)
    }

    /// [`User::init`] for a user whose device connects from `source` (a loopback address
    /// of its own) and looks other nodes up obliviously (`--oblivious-lookups`), then and in
    /// every later run.
    pub fn init_from(
        address: &str,
        source: Option<&str>,
        nodes: &[&Node],
        resolve: &Resolve,
    ) -> User {
        let mut u = User::new(address, resolve);
        u.source = source.map(str::to_string);
        u.env
            .push(("SEALPOST_OBLIVIOUS_LOOKUPS".into(), "true".into()));
        let mut args = vec!["init".to_string(), address.to_string()];
        for n in nodes {
            args.push("--node".into());
            args.push(n.url.clone());
        }
        let out = u.run_owned(&args, b"");
        assert!(out.ok(), "init {address}: {out:?}");
        u
    }

    pub fn profile(&self) -> PathBuf {
        self.home.path().join("profile")
    }

    /// A scratch directory of this user's (for attachments, saved files).
    pub fn scratch(&self) -> PathBuf {
        let p = self.home.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Out {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.run_owned(&owned, stdin)
    }

    pub fn run_owned(&self, args: &[String], stdin: &[u8]) -> Out {
        let mut all = Vec::new();
        if let Some(ip) = &self.source {
            all.extend(["--source-address".to_string(), ip.clone()]);
        }
        all.extend(args.iter().cloned());
        run_cli(&self.profile(), &self.resolve, &self.env, &all, stdin)
    }

    /// Runs and asserts success.
    pub fn ok(&self, args: &[&str], stdin: &[u8]) -> Out {
        let out = self.run(args, stdin);
        assert!(out.ok(), "{} {args:?} failed: {out:?}", self.address);
        out
    }

    pub fn fingerprint(&self) -> String {
        self.ok(&["fingerprint"], b"").stdout.trim().to_string()
    }

    /// Runs `fetch --json` until `done` says so (or the deadline passes); returns every
    /// fetch report seen.
    pub fn fetch_until(
        &self,
        deadline: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + deadline;
        let mut seen = Vec::new();
        loop {
            let out = self.ok(&["fetch", "--json"], b"");
            seen.push(out.json());
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < end,
                "{}: condition not met by the deadline; fetches: {seen:#?}",
                self.address
            );
            // Relay between nodes is asynchronous; give it a moment without busy-spinning.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every file of the profile and its bytes (the lock file aside): to check that a
    /// failing command changed nothing.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        snapshot(&self.profile())
    }
}

pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                out.push((
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs the CLI with a profile and resolve entries; stdin is a pipe (never a terminal).
pub fn run_cli(
    profile: &Path,
    resolve: &Resolve,
    env: &[(String, String)],
    args: &[String],
    stdin: &[u8],
) -> Out {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--profile")
        .arg(profile)
        .args(resolve.args())
        .args(args);
    cmd.env_remove("SEALPOST_PASSPHRASE")
        .env_remove("SEALPOST_PROFILE")
        .env("EDITOR", "false")
        .env("VISUAL", "false");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sealpost");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    // Written from a thread: a large body must not deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for sealpost");
    let _ = writer.join();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A loopback URL where nothing listens (a port that was just free).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Deterministic pseudo-random bytes (xorshift), for attachments.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// gpg

/// A throw-away GnuPG home; its agent is stopped on drop.
pub struct Gpg {
    home: TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        Gpg {
            home: TempDir::new("gpg"),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("gpg is installed (make deps)");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Default for Gpg {
    fn default() -> Self {
        Gpg::new()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
