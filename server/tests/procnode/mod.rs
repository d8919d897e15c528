//! The real `sealpost-node` binary as a child process: `init` on `127.0.0.1:0`, `run` until
//! its ready line(s), SIGKILL or SIGTERM, and a restart on the same port(s) and data. For
//! tests of what only a whole process shows (a crash at any instruction, environment
//! overrides). The child gets SIGKILL if the test process dies first. A thin layer over
//! `sealpost_testkit::process`, the harness shared with `tests/` and the benchmarks.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use sealpost_proto::NodeUrl;
use sealpost_testkit::process::{NodeProcess, NodeSpec, Stderr, init};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");

/// How long a node may take to start or stop.
pub const PROC_DEADLINE: Duration = Duration::from_secs(60);

pub struct ProcNode {
    pub dir: tempfile::TempDir,
    process: NodeProcess,
    /// `http://127.0.0.1:PORT`, the same after a restart.
    pub url: NodeUrl,
    pub port: u16,
    /// The SMTP gateway's address, when `gateway.enabled`.
    pub smtp: Option<SocketAddr>,
}

impl ProcNode {
    /// `sealpost-node init` in a fresh directory, then `run` with `args` and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ProcNode {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Err(e) = init(Path::new(BIN), dir.path()) {
            panic!("init: {e}");
        }
        let spec = NodeSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stderr: Stderr::File(dir.path().join("stderr.log")),
            ..NodeSpec::new(BIN, dir.path())
        };
        let process = NodeProcess::start(spec, PROC_DEADLINE).unwrap_or_else(|e| {
            panic!(
                "node did not start: {e}\n--- log ---\n{}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            )
        });
        ProcNode {
            url: process.url().clone(),
            port: process.port(),
            smtp: process.smtp(),
            process,
            dir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGKILL: no shutdown code runs, as in a crash or a power cut of the process.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, and the exit status of the graceful shutdown.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process
            .terminate(PROC_DEADLINE)
            .unwrap_or_else(|e| panic!("{e}\n--- log ---\n{}", self.log()))
    }

    /// Starts the node again on its port(s), data and keys.
    pub fn restart(&mut self) {
        assert!(
            !self.process.is_running(),
            "kill or terminate the node first"
        );
        if let Err(e) = self.process.restart(PROC_DEADLINE) {
            panic!("node did not start: {e}\n--- log ---\n{}", self.log());
        }
        self.url = self.process.url().clone();
        self.port = self.process.port();
        self.smtp = self.process.smtp();
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
        // Before the directory goes.
        self.kill();
    }
}
