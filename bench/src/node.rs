//! A `sealpost-node` process for the benchmarks, and the few API calls they need: both from
//! `sealpost-testkit` (the harness shared with the tests), with the bench's `anyhow` errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use ed25519_dalek::SigningKey;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_testkit::api::Api;
use sealpost_testkit::process::{NodeProcess, NodeSpec, Stderr};

/// The directory holding this binary and its siblings (`sealpost-node`, `sealpost`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir
    }
}

/// How long a node may take to start, and to stop after SIGTERM before it is killed.
const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A node process (the harness of `sealpost-testkit`), stopped gracefully on drop.
pub struct NodeProc {
    process: NodeProcess,
    pub url: NodeUrl,
}

impl NodeProc {
    /// `init` a node in `dir` and run it on a free loopback port with `sets` overrides.
    pub fn start(dir: &Path, sets: &[&str]) -> Result<NodeProc> {
        Self::from(NodeProcess::init_and_start(
            spec(dir, sets, &[]),
            START_DEADLINE,
        )?)
    }

    /// Another process of the node initialised in `dir` (same keys and config), on its own
    /// free loopback port: for a node that runs as several processes on one database. The
    /// first process holds the directory's admin socket; this one serves none.
    pub fn start_another(dir: &Path, sets: &[&str]) -> Result<NodeProc> {
        let spec = spec(dir, sets, &["admin.socket=\"\""]);
        Self::from(NodeProcess::start(spec, START_DEADLINE)?)
    }

    fn from(process: NodeProcess) -> Result<NodeProc> {
        Ok(NodeProc {
            url: process.url().clone(),
            process,
        })
    }

    /// Peak resident set size (VmHWM) of the node process, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.process.peak_rss_mib().unwrap_or(0.0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // SIGTERM, then wait for the graceful shutdown; SIGKILL if it lingers.
        let _ = self.process.terminate(STOP_DEADLINE);
    }
}

/// Fetches and verifies the node's descriptor; returns its encryption certificate.
pub async fn descriptor(http: &reqwest::Client, url: &NodeUrl) -> Result<(Cert, [u8; 32])> {
    let (desc, cert) = Api::new(http.clone()).descriptor(url).await?;
    Ok((cert, desc.node_key))
}

pub async fn register(
    http: &reqwest::Client,
    url: &NodeUrl,
    id: &SecretIdentity,
) -> Result<MailboxId> {
    Ok(Api::new(http.clone())
        .mailbox(url, &id.public_cert())
        .await?)
}

/// A bearer token for `mailbox` (challenge, signed statement, token).
pub async fn token(
    http: &reqwest::Client,
    url: &NodeUrl,
    mailbox: &MailboxId,
    id: &SecretIdentity,
) -> Result<String> {
    Ok(Api::new(http.clone())
        .token(url, mailbox, &id.unlock(None)?)
        .await?)
}

/// POST /v1/deliver as a peer node signing with `key`; returns whether a new copy was stored.
pub async fn deliver(
    http: &reqwest::Client,
    url: &NodeUrl,
    key: &SigningKey,
    payload: Vec<u8>,
) -> Result<bool> {
    let (status, v) = Api::new(http.clone()).deliver(url, key, payload).await?;
    if !status.is_success() {
        bail!("deliver: {status} {v}");
    }
    Ok(v["stored"].as_bool().unwrap_or(false))
}

pub fn ed25519_random() -> SigningKey {
    sealpost_testkit::api::peer_key()
}

/// The spec of a node process in `dir`: `sets` and then `extra` as `--set` overrides.
fn spec(dir: &Path, sets: &[&str], extra: &[&str]) -> NodeSpec {
    NodeSpec {
        args: sets
            .iter()
            .chain(extra)
            .flat_map(|s| ["--set".to_string(), s.to_string()])
            .collect(),
        stderr: Stderr::Inherit,
        ..NodeSpec::new(bin_dir().join("sealpost-node"), dir)
    }
}
