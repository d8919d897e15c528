//! Durable ingest: envelopes per second a node accepts and makes durable (answers only after
//! the WAL sync), N concurrent peer connections with keep-alive; against Postfix accepting
//! the same number of messages of the same size from smtp-source with the same concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::seal::encrypt_to;
use sealpost_proto::{Address, EnvelopeId, MailboxId};

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
    let rate = measure(std::slice::from_ref(&node.url), p, 1).await?;
    Ok((rate, node.peak_rss_mib()))
}

/// Latency of durable deliveries offered at a fixed `rate` (open loop: each sent on its
/// schedule whether or not earlier ones were answered) for `seconds`; (p50, p99) in ms.
pub async fn paced(work: &Path, p: &Params, rate: f64, seconds: f64) -> Result<(f64, f64)> {
    let node = NodeProc::start(&work.join("ingest-paced"), BENCH_SETS)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients)
        .build()?;
    let (cert, _) = node::descriptor(&http, &node.url).await?;
    let mailbox = register_new(&http, &node.url, 0).await?;
    let count = (rate * seconds).ceil() as usize;
    let payloads = payloads(mailbox, &cert, p.size, count)?;
    let peer = Arc::new(node::ed25519_random());
    let interval = Duration::from_secs_f64(1.0 / rate);
    // As many connections as the throughput runs use (the node limits connections per
    // address): a delivery due while all are busy waits for one, and that wait counts.
    let connections = Arc::new(tokio::sync::Semaphore::new(p.clients));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for (i, payload) in payloads.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (http, url, peer) = (http.clone(), node.url.clone(), peer.clone());
        let connections = connections.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let _connection = connections.acquire_owned().await?;
            if !node::deliver(&http, &url, &peer, payload).await? {
                bail!("envelope {i} was not stored");
            }
            Ok::<_, anyhow::Error>(t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(count);
    for t in tasks {
        lat.push(t.await??);
    }
    lat.sort();
    let ms = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Ok((ms(0.50), ms(0.99)))
}

/// Ingest into a node on PostgreSQL (a private PostgreSQL 15 started here, fsync on) run
/// as `processes` processes from one directory; clients spread over the processes, the
/// envelopes over `mailboxes` mailboxes in turn.
pub async fn postgres(work: &Path, p: &Params, processes: usize, mailboxes: usize) -> Result<f64> {
    let pg = PgServer::start()?;
    pg.create_database("bench").await?;
    let url = format!("storage.postgres.url=\"{}\"", pg.url("bench"));
    let mut sets: Vec<&str> = BENCH_SETS.to_vec();
    sets.extend(["storage.backend=\"postgres\"", url.as_str()]);
    let dir = work.join(format!("ingest-pg-{processes}-{mailboxes}"));
    let mut nodes = vec![NodeProc::start(&dir, &sets)?];
    for _ in 1..processes {
        nodes.push(NodeProc::start_another(&dir, &sets)?);
    }
    let urls: Vec<NodeUrl> = nodes.iter().map(|n| n.url.clone()).collect();
    let rate = measure(&urls, p, mailboxes).await;
    drop(nodes);
    drop(pg);
    rate
}

/// Delivers `p.count` envelopes to `mailboxes` mailboxes in turn from `p.clients`
/// connections, client `k` to process `k mod urls.len()` of one node; envelopes per second.
async fn measure(urls: &[NodeUrl], p: &Params, mailboxes: usize) -> Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients * 2)
        .build()?;
    let (cert, _) = node::descriptor(&http, &urls[0]).await?;
    let mut boxes = Vec::with_capacity(mailboxes);
    for k in 0..mailboxes.max(1) {
        boxes.push(register_new(&http, &urls[0], k).await?);
    }
    // Payloads are made before the clock starts: the client's crypto is not what we measure.
    let mut payloads = Vec::with_capacity(p.count);
    for (k, &mailbox) in boxes.iter().enumerate() {
        let share = p.count / boxes.len() + usize::from(k < p.count % boxes.len());
        payloads.push(self::payloads(mailbox, &cert, p.size, share)?);
    }
    let payloads: Vec<Vec<u8>> = interleave(payloads);
    let peer = Arc::new(node::ed25519_random());
    // Each process meets the peer once before the clock starts (a new peer's first
    // deliveries are limited per process), as a peer already known to the node would be.
    for url in urls {
        let warm = self::payloads(boxes[0], &cert, p.size, 1)?;
        for payload in warm {
            if !node::deliver(&http, url, &peer, payload).await? {
                bail!("the warm-up envelope was not stored");
            }
        }
    }
    let payloads = Arc::new(std::sync::Mutex::new(payloads));
    let next = Arc::new(AtomicUsize::new(0));

    eprintln!("bench:     clock starts");
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
    let rate = p.count as f64 / t.elapsed().as_secs_f64();
    eprintln!("bench:     clock stops");
    Ok(rate)
}

/// A fresh account `bob{k}@bench.test` on the node at `url`: its mailbox.
async fn register_new(http: &reqwest::Client, url: &NodeUrl, k: usize) -> Result<MailboxId> {
    let bob = SecretIdentity::generate(&Address::parse(&format!("bob{k}@bench.test"))?, None)?;
    node::register(http, url, &bob).await
}

/// The lists' items taken one from each in turn.
fn interleave<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        out.extend(iters.iter_mut().filter_map(Iterator::next));
        if out.len() == before {
            return out;
        }
    }
}

/// `count` hop payloads of about `size` bytes for `mailbox`, encrypted to the node.
fn payloads(mailbox: MailboxId, cert: &Cert, size: usize, count: usize) -> Result<Vec<Vec<u8>>> {
    let sealed_len = size.saturating_sub(40).max(1);
    let made = (0..count).map(|_| {
        let env = Envelope {
            id: EnvelopeId::random(),
            mailbox,
            sealed: rand_bytes(sealed_len),
            token: vec![],
        };
        encrypt_to(&env.encode(), cert)
    });
    Ok(made.collect::<Result<_, _>>()?)
}

pub fn postfix(repo: &Path, work: &Path, p: &Params) -> Result<f64> {
    let pf = Postfix::start(repo, &work.join("ingest-postfix"), None)?;
    let (rate, _) = smtp_source(pf.port, p.clients, p.size, p.count, "carol@legacy.test")?;
    Ok(rate)
}

/// Mailboxes the spread PostgreSQL run delivers to in turn (the others all go to one).
const SPREAD: usize = 20;

/// `repeats` rounds, each measuring ours, Postfix, and PostgreSQL with one and two processes
/// in turn (interleaved, so that a slow moment of the machine weighs on one round's both
/// sides); then the latency of deliveries offered at 80 % of our median rate.
pub async fn run(repo: &Path, work: &Path, p: &Params, repeats: usize) -> Result<Vec<Row>> {
    let (mut ours, mut theirs, mut pg_one, mut pg_two) = (vec![], vec![], vec![], vec![]);
    let (mut pg_one_spread, mut pg_two_spread) = (vec![], vec![]);
    let mut rss: f64 = 0.0;
    for round in 1..=repeats {
        eprintln!("bench: ingest round {round}/{repeats} (load {})", load());
        let dir = work.join(format!("ingest-{round}"));
        // Each phase is announced, so that a profile of the whole run can be cut by phase.
        eprintln!("bench:   phase rocksdb");
        let (rate, mib) = sealpost(&dir, p).await?;
        ours.push(rate);
        rss = rss.max(mib);
        eprintln!("bench:   phase postfix");
        theirs.push(postfix(repo, &dir, p)?);
        eprintln!("bench:   phase postgres-1");
        pg_one.push(postgres(&dir, p, 1, 1).await?);
        eprintln!("bench:   phase postgres-2");
        pg_two.push(postgres(&dir, p, 2, 1).await?);
        eprintln!("bench:   phase postgres-1-spread");
        pg_one_spread.push(postgres(&dir, p, 1, SPREAD).await?);
        eprintln!("bench:   phase postgres-2-spread");
        pg_two_spread.push(postgres(&dir, p, 2, SPREAD).await?);
        eprintln!("bench:   phase end");
        eprintln!(
            "bench:   ours {:.0}/s, Postfix {:.0}/s, PostgreSQL 1 process {:.0}/s, 2 processes {:.0}/s; over {SPREAD} mailboxes 1 process {:.0}/s, 2 processes {:.0}/s",
            ours[round - 1],
            theirs[round - 1],
            pg_one[round - 1],
            pg_two[round - 1],
            pg_one_spread[round - 1],
            pg_two_spread[round - 1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let peak = crate::report::median(&ours);
    let seconds = if p.count < 1000 { 1.0 } else { 10.0 };
    eprintln!("bench: ingest latency at 80 % of {peak:.0}/s for {seconds} s ...");
    let (p50, p99) = paced(work, p, (peak * 0.8).max(1.0), seconds).await?;
    let size = p.size;
    let clients = p.clients;
    Ok(vec![
        Row::repeated(
            format!("durable ingest, {size} B envelopes, {clients} clients, {} msgs", p.count),
            &ours,
            &theirs,
            "msgs/s",
        )
        .note("vs Postfix; target ≥ 10× (median of per-round ratios); both fsync before answering"),
        Row::single(format!("ingest latency p50 at 80 % of peak ({:.0}/s)", peak * 0.8), p50, "ms")
            .note("open loop: each delivery sent on schedule; answered after the WAL sync"),
        Row::single(format!("ingest latency p99 at 80 % of peak ({:.0}/s)", peak * 0.8), p99, "ms"),
        Row::single("node peak RSS during ingest".into(), rss, "MiB").note("target < 200 MiB"),
        Row::repeated(
            format!("durable ingest on PostgreSQL, 1 process, {size} B envelopes, {clients} clients"),
            &pg_one,
            &theirs,
            "msgs/s",
        )
        .note("vs Postfix; target ≥ 2×; deliveries batched per transaction, PostgreSQL 15 with fsync on the same machine"),
        Row::repeated(
            format!("durable ingest on PostgreSQL, 2 processes, {size} B envelopes, {clients} clients"),
            &pg_two,
            &pg_one,
            "msgs/s",
        )
        .note("vs 1 process; target ≥ 1.5×; see the notes below for what bounds it"),
        Row::repeated(
            format!(
                "durable ingest on PostgreSQL, 1 process, {SPREAD} mailboxes, {size} B envelopes, {clients} clients"
            ),
            &pg_one_spread,
            &theirs,
            "msgs/s",
        )
        .note("vs Postfix; the same load delivered to 20 mailboxes in turn"),
        Row::repeated(
            format!(
                "durable ingest on PostgreSQL, 2 processes, {SPREAD} mailboxes, {size} B envelopes, {clients} clients"
            ),
            &pg_two_spread,
            &pg_one_spread,
            "msgs/s",
        )
        .note("vs 1 process on 20 mailboxes: without one mailbox's row lock taken by every batch"),
    ])
}

/// The machine's load averages (1, 5, 15 min), for the record of each round.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn rand_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for chunk in v.chunks_mut(32) {
        let r: [u8; 32] = rand::random();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}
