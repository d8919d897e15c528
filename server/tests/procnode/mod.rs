//! The real `sealpost-node` binary as a child process: `init` on `127.0.0.1:0`, `run` until
//! its ready line(s), SIGKILL or SIGTERM, and a restart on the same port(s) and data. For
//! tests of what only a whole process shows (a crash at any instruction, environment
//! overrides). The child gets SIGKILL if the test process dies first.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sealpost_proto::NodeUrl;

pub const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");

/// How long a node may take to start or stop.
pub const PROC_DEADLINE: Duration = Duration::from_secs(60);

pub struct ProcNode {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, the same after a restart.
    pub url: NodeUrl,
    pub port: u16,
    /// The SMTP gateway's address, when `gateway.enabled`.
    pub smtp: Option<SocketAddr>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ProcNode {
    /// `sealpost-node init` in a fresh directory, then `run` with `args` and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ProcNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(BIN)
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("run sealpost-node init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut node = ProcNode {
            dir,
            child: None,
            url: NodeUrl::parse("http://127.0.0.1:1").expect("constant URL"),
            port: 0,
            smtp: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.launch(false);
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn launch(&mut self, same_ports: bool) {
        let deadline = Instant::now() + PROC_DEADLINE;
        loop {
            match self.try_launch(same_ports, deadline) {
                Ok(()) => return,
                // Someone may hold the old port for a moment; try again.
                Err(e) if same_ports && Instant::now() < deadline => {
                    eprintln!("restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("node did not start: {e}\n--- log ---\n{}", self.log()),
            }
        }
    }

    fn try_launch(&mut self, same_ports: bool, deadline: Instant) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("node.toml"))
            .args(&self.args);
        if same_ports {
            cmd.args(["--listen", &format!("127.0.0.1:{}", self.port)]);
            if let Some(smtp) = self.smtp {
                cmd.args(["--set", &format!("gateway.listen=\"{smtp}\"")]);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // SAFETY: prctl between fork and exec is async-signal-safe; it only asks the kernel
        // to SIGKILL the child when the thread that forked it (this test's thread) ends.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads the ready lines, then keeps draining stdout.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let gateway = self.args.iter().any(|a| a == "gateway.enabled=true");
        let mut url = None;
        let mut smtp = None;
        while url.is_none() || (gateway && smtp.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("no ready line (exit: {status})"));
            };
            if let Some(u) = line.strip_prefix("sealpost-node listening on ") {
                url = Some(NodeUrl::parse(u.trim()).map_err(|e| e.to_string())?);
            } else if let Some(a) = line.strip_prefix("sealpost-node gateway listening on smtp://")
            {
                smtp = Some(a.trim().parse::<SocketAddr>().map_err(|e| e.to_string())?);
            }
        }
        let url = url.expect("loop ends with a URL");
        let port = url
            .authority()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| format!("no port in {url}"))?;
        if same_ports && (port != self.port || smtp != self.smtp.filter(|_| gateway)) {
            return Err(format!("came back on other ports: {url} {smtp:?}"));
        }
        self.url = url;
        self.port = port;
        self.smtp = smtp;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs, as in a crash or a power cut of the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status of the graceful shutdown.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node is running");
        // SAFETY: signals our own child process, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < PROC_DEADLINE,
                "node did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on its port(s), data and keys.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill or terminate the node first");
        self.launch(true);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}
