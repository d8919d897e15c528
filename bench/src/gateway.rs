//! Gateway ingest: SMTP messages per second into the gateway (each parsed, labelled, sealed
//! to the recipient and stored durably before the 250), against Postfix accepting the same
//! messages from the same tool (smtp-source) with the same sessions and sizes. The gateway
//! checks SPF, DKIM and DMARC of every message (`gateway.verify`), its DNS answers coming
//! from a private dnsmasq that serves `legacy.test` (smtp-source's sender) with SPF and
//! DMARC records, with a TTL so that the gateway's caches hold them as they would in use.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use sealpost_testkit::dns::{Dns, Record};

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

/// `repeats` rounds, each measuring the gateway with sender checks, without, and Postfix in
/// turn (interleaved).
pub async fn run(repo: &Path, work: &Path, p: &Params, repeats: usize) -> Result<Vec<Row>> {
    let dns = Dns::start(&[
        Record::ttl(3600),
        Record::txt("legacy.test", "v=spf1 ip4:127.0.0.1 -all"),
        Record::txt("_dmarc.legacy.test", "v=DMARC1; p=reject"),
    ]);
    let (mut checked, mut unchecked, mut theirs) = (vec![], vec![], vec![]);
    for round in 1..=repeats {
        eprintln!(
            "bench: gateway round {round}/{repeats} (load {})",
            crate::ingest::load()
        );
        let dir = work.join(format!("gateway-{round}"));
        checked.push(gateway_rate(&dir, p, Some(&dns), "gw-node")?);
        // The same without sender checks, in the same round: what the checks cost.
        unchecked.push(gateway_rate(&dir, p, None, "gw-node-unchecked")?);
        let pf = Postfix::start(repo, &dir.join("gw-postfix"), None)?;
        theirs.push(smtp_source(pf.port, p.sessions, p.size, p.count, "carol@legacy.test")?.0);
        drop(pf);
        eprintln!(
            "bench:   checked {:.0}/s, unchecked {:.0}/s, Postfix {:.0}/s",
            checked[round - 1],
            unchecked[round - 1],
            theirs[round - 1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(dns);
    let name = format!(
        "gateway ingest, {} B messages, {} sessions, {} msgs",
        p.size, p.sessions, p.count
    );
    Ok(vec![
        Row::repeated(name.clone(), &checked, &theirs, "msgs/s").note(
            "target ≥ 3× Postfix; SPF/DKIM/DMARC checked (DNS: local dnsmasq), sealed to the recipient and durable before 250",
        ),
        Row::repeated(format!("{name}, sender checks off"), &unchecked, &theirs, "msgs/s")
            .note("gateway.verify = false: the row above less this one is the checks' cost"),
    ])
}

/// Messages per second into a fresh gateway node; sender checks against `dns` when given.
fn gateway_rate(work: &Path, p: &Params, dns: Option<&Dns>, dir: &str) -> Result<f64> {
    let smtp_port = free_port()?;
    let mut sets: Vec<String> = BENCH_SETS.iter().map(|s| s.to_string()).collect();
    sets.extend([
        "gateway.enabled=true".to_string(),
        "gateway.domain=\"bench.test\"".to_string(),
        format!("gateway.listen=\"127.0.0.1:{smtp_port}\""),
        format!("gateway.max_connections={}", p.sessions * 2),
    ]);
    match dns {
        Some(dns) => sets.extend([
            "gateway.verify=true".to_string(),
            format!("gateway.dns=\"{}\"", dns.addr),
        ]),
        None => sets.push("gateway.verify=false".to_string()),
    }
    let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let node = NodeProc::start(&work.join(dir), &set_refs)?;
    let client_dir = work.join(format!("{dir}-client"));
    std::fs::create_dir_all(&client_dir)?;
    cli_user(&client_dir, &node, "bob@bench.test")?;
    eprintln!("bench:     clock starts ({dir})");
    let (rate, _) = smtp_source(smtp_port, p.sessions, p.size, p.count, "bob@bench.test")?;
    eprintln!("bench:     clock stops");
    drop(node);
    Ok(rate)
}
