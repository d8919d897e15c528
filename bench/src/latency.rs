//! End-to-end latency: a hop submitted at node A, relayed to node B, until it shows in a
//! mailbox listing at B; p50 and p99 under a steady offered load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::{Address, EnvelopeId};

use crate::ingest::BENCH_SETS;
use crate::node::{self, NodeProc};
use crate::report::Row;

pub struct Params {
    pub rate: usize,
    pub seconds: usize,
}

pub async fn run(work: &Path, p: &Params) -> Result<Vec<Row>> {
    let a = NodeProc::start(&work.join("lat-a"), BENCH_SETS)?;
    let b = NodeProc::start(&work.join("lat-b"), BENCH_SETS)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let (b_cert, _) = node::descriptor(&http, &b.url).await?;
    let alice = SecretIdentity::generate(&Address::parse("alice@a.test")?, None)?;
    let bob = SecretIdentity::generate(&Address::parse("bob@b.test")?, None)?;
    let alice_mb = node::register(&http, &a.url, &alice).await?;
    let bob_mb = node::register(&http, &b.url, &bob).await?;
    let alice_token = node::token(&http, &a.url, &alice_mb, &alice).await?;
    let bob_token = node::token(&http, &b.url, &bob_mb, &bob).await?;

    let total = p.rate * p.seconds;
    let hops: Vec<(EnvelopeId, Vec<u8>)> = (0..total)
        .map(|_| {
            let id = EnvelopeId::random();
            let env = Envelope {
                id,
                mailbox: bob_mb,
                sealed: vec![0xc1; 4096],
                token: vec![],
            };
            HopWrapper::wrap(&env, b.url.clone(), &b_cert).map(|h| (id, h.encode()))
        })
        .collect::<Result<_, _>>()?;

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();

    // Watcher: lists bob's mailbox at B as fast as it answers, noting when each id appears.
    let watcher = {
        let (http, url, sent, seen, token) = (
            http.clone(),
            b.url.clone(),
            sent.clone(),
            seen.clone(),
            bob_token.clone(),
        );
        tokio::spawn(async move {
            let mut after = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.lock().expect("lock").len() < total && Instant::now() < deadline {
                let v: serde_json::Value = http
                    .get(url.join(&format!(
                        "/v1/mailbox/{}?after={after}&limit=1000",
                        bob_mb.to_hex()
                    )))
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let now = Instant::now();
                for item in v["items"].as_array().context("items")? {
                    after = after.max(item["seq"].as_u64().context("seq")?);
                    let id = item["id"].as_str().context("id")?;
                    if let Some(t0) = sent.lock().expect("lock").get(id) {
                        seen.lock().expect("lock").push(now - *t0);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    // Sender: one submission every 1/rate seconds, each on its own task.
    let interval = Duration::from_secs_f64(1.0 / p.rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for (i, (id, hop)) in hops.into_iter().enumerate() {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (http, url, token, sent) = (
            http.clone(),
            a.url.clone(),
            alice_token.clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            sent.lock()
                .expect("lock")
                .insert(id.to_hex(), Instant::now());
            let r = http
                .post(url.join("/v1/submit"))
                .bearer_auth(&token)
                .header("content-type", "application/octet-stream")
                .body(hop)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("submit: {}", r.status());
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    watcher.await??;
    let mut lat = seen.lock().expect("lock").clone();
    if lat.len() < total {
        bail!("only {} of {total} letters arrived", lat.len());
    }
    lat.sort();
    let pct =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    Ok(vec![
        Row::single(
            format!("end-to-end latency p50, {} letters/s", p.rate),
            pct(0.50),
            "ms",
        )
        .note("submit at A → listed at B"),
        Row::single(
            format!("end-to-end latency p99, {} letters/s", p.rate),
            pct(0.99),
            "ms",
        )
        .note("target < 50 ms"),
    ])
}
