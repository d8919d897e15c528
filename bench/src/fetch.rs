//! Fetch: how long the real client (`sealpost fetch`) takes to fetch, decrypt, verify and
//! store N letters of 4 KiB from a node, and ack them. The client takes them through the
//! node's batched fetch and ack (`spec/client.md` §Fetch); the run checks from the node's
//! metrics that it did, so that the figure is the batched path's.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::letter::Letter;
use sealpost_proto::seal::{encrypt_to, seal};
use sealpost_proto::{Address, EnvelopeId, MailboxId};

use crate::gateway::cli_user;
use crate::ingest::BENCH_SETS;
use crate::node::{self, NodeProc, bin_dir};
use crate::report::{Row, median};

/// The body of each letter: 4 KiB of text.
const BODY_BYTES: usize = 4096;
/// Letters delivered at once while setting up.
const DELIVERIES_IN_FLIGHT: usize = 16;

/// A body of `BODY_BYTES` of lines of text that differ per letter.
fn body(i: usize) -> String {
    let line = format!("Letter {i:06}: the quick brown fox jumps over the lazy dog.\r\n");
    line.repeat(BODY_BYTES.div_ceil(line.len()))[..BODY_BYTES].to_string()
}

/// `repeats` rounds on one node, each with a new pair of users (so that each fetch starts
/// as a new reader's first: Alice not yet pinned); the median rate with its range.
pub async fn run(work: &Path, count: usize, repeats: usize) -> Result<Vec<Row>> {
    let node = NodeProc::start(&work.join("fetch-node"), BENCH_SETS)?;
    let http = reqwest::Client::new();
    let mut secs = Vec::with_capacity(repeats);
    for r in 0..repeats {
        secs.push(round(work, &node, &http, count, r).await?);
    }
    let rates: Vec<f64> = secs.iter().map(|s| count as f64 / s).collect();
    Ok(vec![
        Row {
            runs: secs.clone(),
            ..Row::single(
                format!("client fetch+verify+store of {count} 4 KiB letters"),
                median(&secs),
                "s",
            )
        },
        Row {
            runs: rates.clone(),
            ..Row::single("client fetch rate".into(), median(&rates), "letters/s")
        }
        .note("target ≥ 2000 (#19)"),
    ])
}

/// One round: Alice's `count` letters delivered to Bob, then timed: `sealpost fetch` until
/// Bob has them all. Answers the seconds.
async fn round(
    work: &Path,
    node: &NodeProc,
    http: &reqwest::Client,
    count: usize,
    r: usize,
) -> Result<f64> {
    let (from, to) = (format!("alice{r}@fetch.test"), format!("bob{r}@fetch.test"));
    let alice_profile = cli_user(work, node, &from)?;
    let bob_profile = cli_user(work, node, &to)?;
    let alice = SecretIdentity::from_bytes(&std::fs::read(alice_profile.join("secret.key"))?)?;
    let bob_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bob_profile.join("config.json"))?)?;
    let bob_mailbox = MailboxId::from_hex(
        bob_config["homes"][0]["mailbox"]
            .as_str()
            .context("bob's mailbox")?,
    )?;
    let (node_cert, _) = node::descriptor(http, &node.url).await?;
    let bob_cert =
        sealpost_proto::identity::cert_from_bytes(&std::fs::read(bob_profile.join("secret.key"))?)?;

    // Seal and deliver the letters before the clock starts.
    let keys = Arc::new(alice.unlock(None)?);
    let peer = node::ed25519_random();
    let mut envelopes = Vec::with_capacity(count);
    for i in 0..count {
        let letter = Letter::new(
            Address::parse(&from)?,
            vec![Address::parse(&to)?],
            format!("letter {i}"),
            body(i),
            1_700_000_000 + i as i64,
        );
        let sealed = seal(&letter, &keys, &bob_cert)?;
        let env = Envelope {
            id: EnvelopeId::random(),
            mailbox: bob_mailbox,
            sealed,
            token: vec![],
        };
        envelopes.push(encrypt_to(&env.encode(), &node_cert)?);
    }
    let mut envelopes = envelopes.into_iter().enumerate();
    loop {
        let wave: Vec<_> = envelopes.by_ref().take(DELIVERIES_IN_FLIGHT).collect();
        if wave.is_empty() {
            break;
        }
        let stored = futures_all(
            wave.into_iter()
                .map(|(i, payload)| {
                    let (http, url, peer) = (http.clone(), node.url.clone(), peer.clone());
                    tokio::spawn(
                        async move { (i, node::deliver(&http, &url, &peer, payload).await) },
                    )
                })
                .collect(),
        )
        .await?;
        for (i, ok) in stored {
            if !ok? {
                bail!("letter {i} not stored");
            }
        }
    }

    let t = Instant::now();
    let mut fetched = 0usize;
    while fetched < count {
        let out = Command::new(bin_dir().join("sealpost"))
            .arg("--profile")
            .arg(&bob_profile)
            .args([
                "--resolve",
                &format!("fetch.test={}", node.url),
                "--json",
                "fetch",
            ])
            .output()?;
        if !out.status.success() {
            bail!("sealpost fetch: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let n = v["new"].as_array().map_or(0, Vec::len);
        if n == 0 {
            bail!(
                "fetch returned nothing with {} of {count} letters fetched",
                fetched
            );
        }
        fetched += n;
    }
    let secs = t.elapsed().as_secs_f64();
    let api = sealpost_testkit::api::Api::new(http.clone());
    let requests =
        |route: &str| format!("sealpost_http_requests_total{{route=\"{route}\",status=\"2xx\"}}");
    let batched = api.metric(&node.url, &requests("fetch_batch")).await?;
    let single = api.metric(&node.url, &requests("get_envelope")).await?;
    if batched < 1.0 || single > 0.0 {
        bail!("the client fetched {single} letters one by one ({batched} batched fetches)");
    }
    Ok(secs)
}

/// Waits for every task, in order.
async fn futures_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}
