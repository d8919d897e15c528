//! A `sealpost-node` process for the benchmarks, and the few API calls they need.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::SignedDescriptor;
use sealpost_proto::httpsig::sign_request;
use sealpost_proto::identity::{SecretIdentity, cert_to_armored};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::{MailboxId, NodeUrl, auth, record};

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

pub struct NodeProc {
    pub child: Child,
    pub url: NodeUrl,
}

impl NodeProc {
    /// `init` a node in `dir` and run it on a free loopback port with `sets` overrides.
    pub fn start(dir: &Path, sets: &[&str]) -> Result<NodeProc> {
        let bin = bin_dir().join("sealpost-node");
        let out = Command::new(&bin)
            .args(["init", "--dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "sealpost-node init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--config"]).arg(dir.join("node.toml"));
        for s in sets {
            cmd.args(["--set", s]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("sealpost-node listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        Ok(NodeProc {
            url: NodeUrl::parse(url)?,
            child,
        })
    }

    /// Peak resident set size (VmHWM) of the node process, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        stop_gracefully(&mut self.child);
    }
}

/// SIGTERM, then wait (the node shuts down gracefully); SIGKILL if it lingers.
fn stop_gracefully(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fetches and verifies the node's descriptor; returns its encryption certificate.
pub async fn descriptor(http: &reqwest::Client, url: &NodeUrl) -> Result<(Cert, [u8; 32])> {
    let bytes = http
        .get(url.join("/.well-known/sealpost/node"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let (desc, cert) = SignedDescriptor::decode(&bytes)?.verify()?;
    Ok((cert, desc.node_key))
}

pub async fn register(
    http: &reqwest::Client,
    url: &NodeUrl,
    id: &SecretIdentity,
) -> Result<MailboxId> {
    let resp = http
        .post(url.join("/v1/accounts"))
        .json(&serde_json::json!({ "cert": cert_to_armored(&id.public_cert()) }))
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        bail!("register: {status} {v}");
    }
    Ok(MailboxId::from_hex(
        v["mailbox"].as_str().context("mailbox")?,
    )?)
}

/// A bearer token for `mailbox` (challenge, signed statement, token).
pub async fn token(
    http: &reqwest::Client,
    url: &NodeUrl,
    mailbox: &MailboxId,
    id: &SecretIdentity,
) -> Result<String> {
    let v: serde_json::Value = http
        .post(url.join("/v1/auth/challenge"))
        .json(&serde_json::json!({ "mailbox": mailbox.to_hex() }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let nonce: [u8; 32] = hex::decode(v["nonce"].as_str().context("nonce")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("nonce length"))?;
    let sig = record::sign_detached(
        &auth::challenge_statement(url, mailbox, &nonce),
        &id.unlock(None)?,
    )?;
    let v: serde_json::Value = http
        .post(url.join("/v1/auth/token"))
        .json(&serde_json::json!({ "mailbox": mailbox.to_hex(), "nonce": hex::encode(nonce), "signature": B64.encode(sig) }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["token"].as_str().context("token")?.to_string())
}

/// POST /v1/deliver as a peer node signing with `key`; returns whether a new copy was stored.
pub async fn deliver(
    http: &reqwest::Client,
    url: &NodeUrl,
    key: &SigningKey,
    payload: Vec<u8>,
) -> Result<bool> {
    let h = sign_request(key, "POST", url.authority(), "/v1/deliver", &payload, now());
    let resp = http
        .post(url.join("/v1/deliver"))
        .header("content-type", "application/octet-stream")
        .header("content-digest", h.content_digest)
        .header("signature-input", h.signature_input)
        .header("signature", h.signature)
        .body(payload)
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("deliver: {status} {v}");
    }
    Ok(v["stored"].as_bool().unwrap_or(false))
}

pub fn ed25519_random() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}
