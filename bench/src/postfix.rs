//! The peer: a private Postfix on loopback (scripts/postfix-private.sh) fed by smtp-source,
//! the load generator that ships with Postfix.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Postfix {
    dir: PathBuf,
    script: PathBuf,
    pub port: u16,
}

/// A port that was free a moment ago (Postfix's master.cf needs a number, not 0).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Postfix {
    /// Starts Postfix on a free port; `relay` = (domain, port) relays that domain to a local port.
    pub fn start(repo: &Path, dir: &Path, relay: Option<(&str, u16)>) -> Result<Postfix> {
        let script = repo.join("scripts/postfix-private.sh");
        let port = free_port()?;
        let mut cmd = Command::new(&script);
        cmd.arg("start").arg(dir).arg(port.to_string());
        if let Some((d, p)) = relay {
            cmd.arg(d).arg(p.to_string());
        }
        let out = cmd.output().context("starting Postfix")?;
        if !out.status.success() {
            bail!(
                "postfix-private.sh start failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pf = Postfix {
            dir: dir.to_path_buf(),
            script,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("Postfix did not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pf)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// Runs smtp-source against 127.0.0.1:port; returns messages per second accepted (250 after
/// Postfix's fsync) and the wall time.
pub fn smtp_source(
    port: u16,
    sessions: usize,
    size: usize,
    count: usize,
    to: &str,
) -> Result<(f64, Duration)> {
    let t = Instant::now();
    let out = Command::new("smtp-source")
        .args([
            "-s",
            &sessions.to_string(),
            "-l",
            &size.to_string(),
            "-m",
            &count.to_string(),
        ])
        .args([
            "-f",
            "bench@legacy.test",
            "-t",
            to,
            "-M",
            "bench.legacy.test",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .context("running smtp-source (from the postfix package)")?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "smtp-source failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((count as f64 / took.as_secs_f64(), took))
}
