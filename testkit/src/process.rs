//! The real `sealpost-node` binary as a child process: `init` on `127.0.0.1:0`, `run` until
//! its ready line(s) (with a deadline, no sleeps), SIGKILL or SIGTERM, and a restart on the
//! same port(s) and data. Used by the end-to-end suite (`tests/`), the server's process
//! tests (`server/tests/procnode`) and the benchmarks; each finds the binary its own way
//! and passes its path in [`NodeSpec::bin`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sealpost_proto::NodeUrl;

use crate::hygiene::{kill_and_reap, reaped, spawn_tied};

/// The line a node prints on stdout once it accepts connections, before its URL.
pub const READY_PREFIX: &str = "sealpost-node listening on ";
/// The line the SMTP gateway prints once it accepts connections, before its address.
pub const GATEWAY_READY_PREFIX: &str = "sealpost-node gateway listening on smtp://";
/// How long after a failed restart on the same port the next attempt waits (the old port
/// can be held by someone else for a moment). A retry interval, not a readiness wait.
const RESTART_RETRY: Duration = Duration::from_millis(50);

/// Where the node's stderr (its log) goes.
#[derive(Clone, Debug)]
pub enum Stderr {
    /// Appended to this file (kept across restarts).
    File(PathBuf),
    /// The harness's own stderr.
    Inherit,
}

/// How to run one node: `BIN run --config DIR/node.toml ARGS...`.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub bin: PathBuf,
    /// The node's directory, as written by `sealpost-node init`.
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stderr: Stderr,
    /// Also wait for the SMTP gateway's ready line, and keep the gateway on its port across
    /// restarts. `None`: when the arguments contain `gateway.enabled=true`.
    pub wait_gateway: Option<bool>,
}

impl NodeSpec {
    pub fn new(bin: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> NodeSpec {
        NodeSpec {
            bin: bin.into(),
            dir: dir.into(),
            args: Vec::new(),
            env: Vec::new(),
            stderr: Stderr::Inherit,
            wait_gateway: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    fn waits_for_gateway(&self) -> bool {
        self.wait_gateway
            .unwrap_or_else(|| self.args.iter().any(|a| a == "gateway.enabled=true"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("running {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("sealpost-node init failed: {0}")]
    Init(String),
    #[error("opening the log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no ready line by the deadline (exit: {status})")]
    NotReady { status: String },
    #[error("unreadable ready line {0:?}")]
    BadReadyLine(String),
    #[error("came back on other ports: {0}")]
    OtherPorts(String),
    #[error("no stdout line {prefix:?} within {deadline:?}")]
    NoLine { prefix: String, deadline: Duration },
    #[error("the node is not running")]
    NotRunning,
    #[error("the node did not exit within {0:?} of SIGTERM")]
    NoExit(Duration),
}

/// `BIN init --dir DIR --listen 127.0.0.1:0`: a node directory with config and keys.
pub fn init(bin: &Path, dir: &Path) -> Result<(), HarnessError> {
    let out = Command::new(bin)
        .args(["init", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .map_err(|source| HarnessError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Init(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A running (or stopped) node process. Dropping it SIGKILLs the node.
pub struct NodeProcess {
    spec: NodeSpec,
    child: Option<Child>,
    url: NodeUrl,
    port: u16,
    smtp: Option<SocketAddr>,
    /// The rest of the running node's stdout, line by line (after its ready lines).
    stdout: Mutex<Option<mpsc::Receiver<String>>>,
}

impl NodeProcess {
    /// Runs the node (its directory must have been initialised) on the port in its config
    /// and waits up to `deadline` for its ready line(s).
    pub fn start(spec: NodeSpec, deadline: Duration) -> Result<NodeProcess, HarnessError> {
        let mut node = NodeProcess {
            spec,
            child: None,
            url: NodeUrl::parse("http://127.0.0.1:1").expect("invariant: a valid constant URL"),
            port: 0,
            smtp: None,
            stdout: Mutex::new(None),
        };
        node.try_launch(false, Instant::now() + deadline)?;
        Ok(node)
    }

    /// [`init`] then [`NodeProcess::start`].
    pub fn init_and_start(spec: NodeSpec, deadline: Duration) -> Result<NodeProcess, HarnessError> {
        init(&spec.bin, &spec.dir)?;
        NodeProcess::start(spec, deadline)
    }

    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Replaces the `run` arguments for the next [`NodeProcess::restart`].
    pub fn set_args(&mut self, args: Vec<String>) {
        self.spec.args = args;
    }

    /// `http://127.0.0.1:PORT`, the same after a restart.
    pub fn url(&self) -> &NodeUrl {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SMTP gateway's address, when the harness waited for its ready line.
    pub fn smtp(&self) -> Option<SocketAddr> {
        self.smtp
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's log so far (empty when stderr is inherited).
    pub fn log(&self) -> String {
        match &self.spec.stderr {
            Stderr::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
            Stderr::Inherit => String::new(),
        }
    }

    /// Starts the stopped node again on its port(s), data and keys, retrying until
    /// `deadline` while the old port is taken.
    pub fn restart(&mut self, deadline: Duration) -> Result<(), HarnessError> {
        assert!(self.child.is_none(), "kill or terminate the node first");
        let end = Instant::now() + deadline;
        loop {
            match self.try_launch(true, end) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < end => {
                    eprintln!("node restart: {e}; retrying");
                    std::thread::sleep(RESTART_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_launch(&mut self, same_ports: bool, deadline: Instant) -> Result<(), HarnessError> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(spec.config_path())
            .args(&spec.args);
        let gateway = spec.waits_for_gateway();
        if same_ports {
            // The same address too: a node started on a loopback address of its own
            // (`listen=127.0.0.X:0`) keeps it.
            let host = self
                .url
                .authority()
                .rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h)
                .to_string();
            cmd.args(["--listen", &format!("{host}:{}", self.port)]);
            if let Some(smtp) = self.smtp.filter(|_| gateway) {
                cmd.args(["--set", &format!("gateway.listen=\"{smtp}\"")]);
            }
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let stderr = match &spec.stderr {
            Stderr::File(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| HarnessError::Log {
                        path: path.clone(),
                        source,
                    })?,
            ),
            Stderr::Inherit => Stdio::inherit(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = spawn_tied(cmd).map_err(|source| HarnessError::Spawn {
            bin: spec.bin.clone(),
            source,
        })?;
        let stdout = child.stdout.take().expect("invariant: stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads the ready lines, then keeps draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = wait_ready(&rx, gateway, deadline);
        let (url, smtp) = match ready {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                reaped(&child);
                return Err(match e {
                    ReadyError::Timeout => HarnessError::NotReady { status },
                    ReadyError::Bad(line) => HarnessError::BadReadyLine(line),
                });
            }
        };
        let port = url
            .authority()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok());
        let bad_ports = match port {
            None => Some(format!("no port in {url}")),
            Some(p) if same_ports && (p != self.port || (gateway && smtp != self.smtp)) => {
                Some(format!("{url} {smtp:?}"))
            }
            Some(_) => None,
        };
        if let Some(what) = bad_ports {
            kill_and_reap(&mut child);
            return Err(HarnessError::OtherPorts(what));
        }
        self.url = url;
        self.port = port.expect("invariant: checked above");
        self.smtp = smtp;
        self.child = Some(child);
        *self.stdout.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs, as in a crash or a power cut of the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// SIGTERM, and the exit status of the graceful shutdown (within `deadline`; the node
    /// is SIGKILLed if it takes longer).
    pub fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus, HarnessError> {
        let mut c = self.child.take().ok_or(HarnessError::NotRunning)?;
        // SAFETY: signals our own child process, which has not been reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                reaped(&c);
                return Ok(status);
            }
            if start.elapsed() >= deadline {
                kill_and_reap(&mut c);
                return Err(HarnessError::NoExit(deadline));
            }
            // Polling the exit of a process: no readiness signal exists for it here.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `deadline` for the next stdout line of the running node that starts with
    /// `prefix`, and returns the rest of it.
    pub fn stdout_line(&self, prefix: &str, deadline: Duration) -> Result<String, HarnessError> {
        let guard = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        let rx = guard.as_ref().ok_or(HarnessError::NotRunning)?;
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(prefix) {
                        return Ok(rest.to_string());
                    }
                }
                Err(_) => {
                    return Err(HarnessError::NoLine {
                        prefix: prefix.to_string(),
                        deadline,
                    });
                }
            }
        }
    }

    /// Peak resident set size (VmHWM) of the running node, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

enum ReadyError {
    Timeout,
    Bad(String),
}

/// The node's URL (and the gateway's address, when `gateway`) from its ready lines.
fn wait_ready(
    rx: &mpsc::Receiver<String>,
    gateway: bool,
    deadline: Instant,
) -> Result<(NodeUrl, Option<SocketAddr>), ReadyError> {
    let mut url = None;
    let mut smtp = None;
    while url.is_none() || (gateway && smtp.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| ReadyError::Timeout)?;
        let line = line.trim();
        if let Some(u) = line.strip_prefix(READY_PREFIX) {
            let u = NodeUrl::parse(u.trim()).map_err(|_| ReadyError::Bad(line.to_string()))?;
            url = Some(u);
        } else if let Some(a) = line.strip_prefix(GATEWAY_READY_PREFIX) {
            let a = a.parse().map_err(|_| ReadyError::Bad(line.to_string()))?;
            smtp = Some(a);
        }
    }
    Ok((url.expect("invariant: the loop ends with a URL"), smtp))
}
