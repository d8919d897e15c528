//! Crash consistency of the SMTP transport of the outbound queue: a user of the real
//! `sealpost-node` keeps sending legacy mail through the gateway to a scripted SMTP server
//! on loopback (which defers some transactions and answers after a random wait), and the
//! node is SIGKILLed at a random moment, while mail is queued, being handed from the
//! gateway's mailbox to the queue, or being sent; then restarted, round after round.
//!
//! What it guards: every letter the node accepted (`202` on submit) leaves exactly once,
//! counted by Message-ID at the SMTP server, with one exception that the test observes
//! rather than excuses in general: a kill after the server took a message (its `250` sent
//! or on its way) and before the node's durable "done" write. That window is found on
//! disk: with the node dead, a job still queued whose message the server already has. Each
//! such job is sent once more after the restart, and only those (`spec/node.md` §Outbound
//! queue). A letter whose submit got no answer leaves at most that often, or never. No
//! letter is bounced (the server never refuses for good), and at the end the queue is
//! empty.
//!
//! `SEALPOST_CRASH_ROUNDS` sets the number of rounds (default 4).

mod common;
mod procnode;
mod smtp_sink;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use procnode::ProcNode;
use rand::Rng;
use reqwest::StatusCode;
use sealpost_proto::MailboxId;
use sealpost_server::store::OutboundItem;
use smtp_sink::{Outgoing, Script, Sink};

const DEFAULT_ROUNDS: usize = 4;
const SEND_TASKS: usize = 2;
const SENDS_PER_TASK: usize = 80;
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 100..=1500;
const DOMAIN: &str = "gw.test";
const RCPTS: [&str; 3] = ["carol@legacy.test", "dan@legacy.test", "erin@other.test"];

fn rounds() -> usize {
    std::env::var("SEALPOST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

#[derive(Default)]
struct Ledger {
    /// Every Message-ID submitted, and those answered `202`.
    sent: HashSet<String>,
    accepted: HashSet<String>,
    /// Per Message-ID: how often a kill fell between the server taking it and the node's
    /// durable "done" (seen on disk): each is one more copy at the server.
    window: HashMap<String, usize>,
    /// Of those, kills after the server had written its `250`.
    after_reply: usize,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

#[derive(Clone)]
struct World {
    api: Api,
    out: Arc<Outgoing>,
    user: Arc<User>,
    token: String,
}

async fn send_load(w: World, ledger: Shared, round: usize, task: usize) {
    for i in 0..SENDS_PER_TASK {
        let n = rand::rng().random_range(1..=2);
        let to: Vec<&str> = RCPTS[..n].to_vec();
        let (hop, mid) = w.out.hop(
            &w.user.address,
            &w.user.keys,
            &to,
            &format!("crash {round}.{task}.{i}"),
        );
        ledger.lock().unwrap().sent.insert(mid.clone());
        let sent = w
            .api
            .http
            .post(w.out.url.join("/v1/submit"))
            .bearer_auth(&w.token)
            .body(hop)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                ledger.lock().unwrap().accepted.insert(mid);
            }
            Ok(r) => {
                let a = answer(r).await;
                ledger.lock().unwrap().errors.push(format!("submit: {a:?}"));
                return;
            }
            // No answer: queued or not; it leaves at most once (plus windows) or never.
            Err(_) => return,
        }
    }
}

/// Message-IDs of the SMTP jobs in a dead node's queue.
fn queued(node: &ProcNode) -> Vec<String> {
    let mut out = Vec::new();
    sealpost_server::store::rocks::scan_all(&node.data_dir(), |cf, k, v| {
        if cf == "outbound" && k.first() == Some(&b'm') {
            let item: OutboundItem = serde_json::from_slice(v).expect("queue entry");
            if let Some(job) = item.smtp {
                out.push(job.message_id);
            }
        }
    })
    .expect("read the dead node's store");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mail_leaves_once_although_the_node_keeps_dying() {
    let rounds = rounds();
    let sink = Sink::start(Script {
        defer_one_in: 6,
        max_delay: Duration::from_millis(40),
        ..Script::default()
    })
    .await;
    let smarthost = format!("gateway.smarthost=\"{}\"", sink.addr);
    let domain = format!("gateway.domain=\"{DOMAIN}\"");
    let settings = [
        "limits.submit_per_minute=0",
        "relay.retry_base=0.05",
        "relay.retry_max=0.5",
        "gateway.enabled=true",
        &domain,
        "gateway.listen=\"127.0.0.1:0\"",
        &smarthost,
        "gateway.retry_base=0.1",
        "gateway.retry_max=0.4",
    ];
    let args: Vec<&str> = settings.iter().flat_map(|s| ["--set", s]).collect();
    let mut node = ProcNode::start(&args, &[]);
    let setup = Api::default();
    let user = Arc::new(User::new(&format!("alice@{DOMAIN}")));
    let mailbox: MailboxId = setup.mailbox(&node.url, &user).await;
    let out = Arc::new(Outgoing::discover(&setup.http, &node.url, DOMAIN).await);
    let ledger: Shared = Arc::default();

    // Copies at the server when the previous round ended: a job still queued counts a window
    // only in a round in which a copy of it arrived (a job not tried again since the last
    // restart has not been sent twice).
    let mut before: HashMap<String, usize> = HashMap::new();
    for round in 1..=rounds {
        let api = Api::default();
        let world = World {
            token: api.token(&node.url, &mailbox, &user.keys).await,
            api,
            out: out.clone(),
            user: user.clone(),
        };
        let mut load = tokio::task::JoinSet::new();
        for t in 0..SEND_TASKS {
            load.spawn(send_load(world.clone(), ledger.clone(), round, t));
        }
        let delay = rand::rng().random_range(KILL_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let killed_at = std::time::Instant::now();
        node.kill();
        tokio::time::timeout(DEADLINE, async {
            while let Some(r) = load.join_next().await {
                r.expect("load task");
            }
        })
        .await
        .expect("the load ends once the node is dead");
        // What the dead node's sockets still held has reached the server by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at_sink = sink.counts();
        // When the server's last `250` for each message was written.
        let replied: HashMap<String, Option<std::time::Instant>> = sink
            .accepted()
            .into_iter()
            .map(|a| (a.message_id, a.replied))
            .collect();
        let on_disk = queued(&node);
        let (mut hits, mut after_reply) = (0, 0);
        {
            let mut l = ledger.lock().unwrap();
            for mid in &on_disk {
                let now = at_sink.get(mid).copied().unwrap_or(0);
                if now > before.get(mid).copied().unwrap_or(0) {
                    *l.window.entry(mid.clone()).or_default() += 1;
                    hits += 1;
                    // The node may have read the 250 and died before "done" was durable
                    // (its own window), or died before the 250 reached it (SMTP's own).
                    if replied
                        .get(mid)
                        .copied()
                        .flatten()
                        .is_some_and(|t| t < killed_at)
                    {
                        after_reply += 1;
                        l.after_reply += 1;
                    }
                }
            }
            assert!(l.errors.is_empty(), "round {round}: {:#?}", l.errors);
        }
        before = at_sink.clone();
        node.restart();
        println!(
            "smtp crash round {round}/{rounds}: killed after {delay} ms; {} jobs queued on \
             disk, {hits} of them already taken by the server ({after_reply} with its 250 \
             written before the kill); {} messages at the server so far",
            on_disk.len(),
            at_sink.values().sum::<usize>(),
        );
    }

    // Everything accepted leaves; then the queue drains.
    let accepted = ledger.lock().unwrap().accepted.clone();
    eventually("every accepted letter at the server", || {
        let (sink, accepted) = (&sink, &accepted);
        async move {
            let have = sink.counts();
            accepted.iter().all(|m| have.contains_key(m)).then_some(())
        }
    })
    .await;
    // Time for queued letters whose submit got no answer, and for any wrong copy.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = node.terminate();
    assert!(status.success(), "graceful exit: {status:?}");
    let left = queued(&node);
    assert!(left.is_empty(), "jobs left in the queue: {left:?}");

    let l = ledger.lock().unwrap();
    let counts = sink.counts();
    for (mid, n) in &counts {
        assert!(
            l.sent.contains(mid),
            "unknown message {mid:?} at the server"
        );
        let expected = 1 + l.window.get(mid).copied().unwrap_or(0);
        assert_eq!(
            *n, expected,
            "{mid}: {n} copies at the server, {expected} expected (1 + kills in its window)"
        );
    }
    for mid in &l.accepted {
        assert!(counts.contains_key(mid), "accepted letter {mid} never left");
    }
    for a in sink.accepted() {
        assert!(!a.rcpts.is_empty() && a.rcpts.len() <= 2, "{a:?}");
    }
    let window: usize = l.window.values().sum();
    println!(
        "smtp crash loop: {rounds} rounds; {} letters accepted, {} at the server, {} \
         copies in all ({window} from kills after the server took a message and before the \
         node's durable done, {} of them after the 250 was written), 0 lost",
        l.accepted.len(),
        counts.len(),
        counts.values().sum::<usize>(),
        l.after_reply,
    );
    drop(l);
    // Nobody was refused for good: no bounce.
    node.restart();
    let api = Api::default();
    let token = api.token(&node.url, &mailbox, &user.keys).await;
    let items = api.items(&node.url, &mailbox, &token).await;
    assert!(items.is_empty(), "bounces: {items:?}");
}
