//! Gateway ingest: SMTP messages per second into the gateway (each parsed, labelled, sealed
//! to the recipient and stored durably before the 250), against Postfix accepting the same
//! messages from the same tool (smtp-source) with the same sessions and sizes.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::ingest::BENCH_SETS;
use crate::node::{NodeProc, bin_dir};
use crate::postfix::{Postfix, free_port, smtp_source};
use crate::report::Row;

pub struct Params {
    pub count: usize,
    pub size: usize,
    pub sessions: usize,
}

/// Creates `address` with the real CLI (keys, account, published record) on `node`.
pub fn cli_user(work: &Path, node: &NodeProc, address: &str) -> Result<std::path::PathBuf> {
    let domain = address.split('@').nth(1).context("address")?;
    let profile = work.join(format!("profile-{address}"));
    let out = Command::new(bin_dir().join("sealpost"))
        .arg("--profile")
        .arg(&profile)
        .args([
            "--resolve",
            &format!("{domain}={}", node.url),
            "init",
            address,
            "--node",
            node.url.as_str(),
        ])
        .output()
        .context("running sealpost init")?;
    if !out.status.success() {
        bail!(
            "sealpost init {address}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(profile)
}

pub async fn run(repo: &Path, work: &Path, p: &Params) -> Result<Vec<Row>> {
    let smtp_port = free_port()?;
    let mut sets: Vec<String> = BENCH_SETS.iter().map(|s| s.to_string()).collect();
    sets.extend([
        "gateway.enabled=true".to_string(),
        "gateway.domain=\"bench.test\"".to_string(),
        format!("gateway.listen=\"127.0.0.1:{smtp_port}\""),
        format!("gateway.max_connections={}", p.sessions * 2),
    ]);
    let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let node = NodeProc::start(&work.join("gw-node"), &set_refs)?;
    cli_user(work, &node, "bob@bench.test")?;
    let (ours, _) = smtp_source(smtp_port, p.sessions, p.size, p.count, "bob@bench.test")?;
    drop(node);
    let pf = Postfix::start(repo, &work.join("gw-postfix"), None)?;
    let (theirs, _) = smtp_source(pf.port, p.sessions, p.size, p.count, "carol@legacy.test")?;
    Ok(vec![
        Row::ratio(
            format!(
                "gateway ingest, {} B messages, {} sessions, {} msgs",
                p.size, p.sessions, p.count
            ),
            ours,
            theirs,
            "msgs/s",
        )
        .note("target ≥ 1.5× Postfix; sealed to the recipient and durable before 250"),
    ])
}
