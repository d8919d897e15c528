//! Durable ingest: envelopes per second a node accepts and makes durable (answers only after
//! the WAL sync), N concurrent peer connections with keep-alive; against Postfix accepting
//! the same number of messages of the same size from smtp-source with the same concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::seal::encrypt_to;
use sealpost_proto::{Address, EnvelopeId};

use sealpost_proto::NodeUrl;
use sealpost_testkit::postgres::PgServer;

use crate::node::{self, NodeProc};
use crate::postfix::{Postfix, smtp_source};
use crate::report::Row;

pub struct Params {
    pub count: usize,
    pub size: usize,
    pub clients: usize,
}

/// Node settings for a benchmark: no rate limits, room for every envelope.
pub const BENCH_SETS: &[&str] = &[
    "limits.deliver_per_minute=0",
    "limits.submit_per_minute=0",
    "limits.mailbox_max_envelopes=100000000",
    "limits.mailbox_quota=1000000000000",
    "log.filter=\"warn\"",
];

pub async fn sealpost(work: &Path, p: &Params) -> Result<(f64, f64)> {
    let dir = work.join("ingest-node");
    let node = NodeProc::start(&dir, BENCH_SETS)?;
    let rate = measure(std::slice::from_ref(&node.url), p).await?;
    Ok((rate, node.peak_rss_mib()))
}

/// Ingest into a node on PostgreSQL (a private PostgreSQL 15 started here, fsync on) run
/// as `processes` processes from one directory; clients spread over the processes.
pub async fn postgres(work: &Path, p: &Params, processes: usize) -> Result<f64> {
    let pg = PgServer::start()?;
    pg.create_database("bench").await?;
    let url = format!("storage.postgres.url=\"{}\"", pg.url("bench"));
    let mut sets: Vec<&str> = BENCH_SETS.to_vec();
    sets.extend(["storage.backend=\"postgres\"", url.as_str()]);
    let dir = work.join(format!("ingest-pg-{processes}"));
    let mut nodes = vec![NodeProc::start(&dir, &sets)?];
    for _ in 1..processes {
        nodes.push(NodeProc::start_another(&dir, &sets)?);
    }
    let urls: Vec<NodeUrl> = nodes.iter().map(|n| n.url.clone()).collect();
    let rate = measure(&urls, p).await;
    drop(nodes);
    drop(pg);
    rate
}

/// Delivers `p.count` envelopes to one mailbox from `p.clients` connections, client `k` to
/// process `k mod urls.len()` of one node; envelopes per second.
async fn measure(urls: &[NodeUrl], p: &Params) -> Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients * 2)
        .build()?;
    let (cert, _) = node::descriptor(&http, &urls[0]).await?;
    let bob = SecretIdentity::generate(&Address::parse("bob@bench.test")?, None)?;
    let mailbox = node::register(&http, &urls[0], &bob).await?;

    // Payloads are made before the clock starts: the client's crypto is not what we measure.
    let sealed_len = p.size.saturating_sub(40).max(1);
    let payloads: Vec<Vec<u8>> = (0..p.count)
        .map(|_| {
            let env = Envelope {
                id: EnvelopeId::random(),
                mailbox,
                sealed: rand_bytes(sealed_len),
                token: vec![],
            };
            encrypt_to(&env.encode(), &cert)
        })
        .collect::<Result<_, _>>()?;
    let payloads = Arc::new(std::sync::Mutex::new(payloads));
    let next = Arc::new(AtomicUsize::new(0));
    let peer = Arc::new(node::ed25519_random());

    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..p.clients {
        let (http, url, payloads, next, peer) = (
            http.clone(),
            urls[k % urls.len()].clone(),
            payloads.clone(),
            next.clone(),
            peer.clone(),
        );
        let count = p.count;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let payload = std::mem::take(&mut payloads.lock().expect("lock")[i]);
                if !node::deliver(&http, &url, &peer, payload).await? {
                    bail!("envelope {i} was not stored");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(p.count as f64 / t.elapsed().as_secs_f64())
}

pub fn postfix(repo: &Path, work: &Path, p: &Params) -> Result<f64> {
    let pf = Postfix::start(repo, &work.join("ingest-postfix"), None)?;
    let (rate, _) = smtp_source(pf.port, p.clients, p.size, p.count, "carol@legacy.test")?;
    Ok(rate)
}

pub async fn run(repo: &Path, work: &Path, p: &Params) -> Result<Vec<Row>> {
    let (ours, rss) = sealpost(work, p).await?;
    let pg_one = postgres(work, p, 1).await?;
    let pg_two = postgres(work, p, 2).await?;
    let theirs = postfix(repo, work, p)?;
    Ok(vec![
        Row::ratio(
            format!(
                "durable ingest on PostgreSQL, 1 process, {} B envelopes, {} clients",
                p.size, p.clients
            ),
            pg_one,
            theirs,
            "msgs/s",
        )
        .note("vs Postfix; target ≥ 2×; deliveries batched per transaction, PostgreSQL 15 with fsync on the same machine"),
        Row::ratio(
            format!(
                "durable ingest on PostgreSQL, 2 processes, {} B envelopes, {} clients",
                p.size, p.clients
            ),
            pg_two,
            pg_one,
            "msgs/s",
        )
        .note("vs 1 process; target ≥ 1.5×; see BENCHMARKS.md notes for what bounds it"),
        Row::ratio(
            format!(
                "durable ingest, {} B envelopes, {} clients, {} msgs",
                p.size, p.clients, p.count
            ),
            ours,
            theirs,
            "msgs/s",
        )
        .note("target ≥ 5× Postfix; both fsync before answering"),
        Row::single("node peak RSS during ingest".into(), rss, "MiB").note("target < 200 MiB"),
    ])
}

fn rand_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for chunk in v.chunks_mut(32) {
        let r: [u8; 32] = rand::random();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}
