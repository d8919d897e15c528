//! The relay: works through the persistent outbound queue, the one queue of everything
//! that leaves the node. A hop to a node is POSTed to `{destination}/v1/deliver`, signed
//! per RFC 9421 (or stored here when the destination is this node), and a forward (a copy
//! of an envelope stored here for another home of its mailbox, [`crate::forward`]) to
//! `{destination}/v1/forward`, never bounced; `2xx` finishes it,
//! another `4xx` than `429` fails it for good. Legacy mail (an [`SmtpJob`](crate::store::SmtpJob), queued by the
//! gateway) goes over SMTP ([`smtp`]): `250` finishes it, `5xx` fails it. Anything else is
//! retried with the one backoff policy ([`backoff`]) until the deadline; a failed job
//! becomes one sealed bounce in the sender's mailbox, written with its removal.
//!
//! The queue lives in the store; this task keeps only a schedule (id and due time) in
//! memory, plus the payload of a fresh submission for its first attempt. Every change of
//! a job's state (attempts, next try, last reply, recipients left) is written before the
//! next attempt, and "done" is written as soon as the destination has answered.

mod smtp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use sealpost_gateway::smtp_out;
use sealpost_proto::NodeUrl;
use sealpost_proto::api::{DELIVER, FORWARD};
use sealpost_proto::httpsig::sign_request;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::basics::clock::{now_ms, now_secs};
use crate::basics::paths::path_prefix;
use crate::basics::shutdown::stopped;
use crate::bounce;
use crate::delivery::{Delivered, DeliveryError, Refused, TryLater};
use crate::metrics::{Metrics, RelayOutcome};
use crate::node::{Job, Node, QueueControl};
use crate::peers::PeerError;
use crate::store::OutboundItem;

/// Most hops taken over from the shared queue at one lease tick.
const CLAIM_BATCH: usize = 1000;

/// How an attempt ended.
enum Attempt {
    Delivered {
        duplicate: bool,
    },
    /// Retry later (no connection, 429, 5xx, ...).
    Temporary(String),
    /// The destination refused the hop for good (4xx).
    Permanent(String),
}

/// The domain's verdict decides: final errors bounce at once, the rest are retried.
impl From<DeliveryError> for Attempt {
    fn from(e: DeliveryError) -> Attempt {
        if e.is_final() {
            Attempt::Permanent(e.reason())
        } else {
            Attempt::Temporary(e.reason())
        }
    }
}

/// The delay before retry number `attempts` (1 for the first retry): `base · 2^(n-1)` capped
/// at `max`, then "equal jitter": half of it fixed, half random, so that hops that failed
/// together do not retry together.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    let d = base.saturating_mul(factor).min(max);
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Starts the relay with the queue as stored (`queued`, read before the node accepts
/// submissions, so that no hop is scheduled twice).
pub fn spawn(
    node: Arc<Node>,
    queued: Vec<OutboundItem>,
    rx: mpsc::UnboundedReceiver<Job>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(node, queued, rx, stop))
}

async fn run(
    node: Arc<Node>,
    queued: Vec<OutboundItem>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut schedule: BinaryHeap<Reverse<(u64, [u8; 16])>> = BinaryHeap::new();
    let mut waiting: HashMap<[u8; 16], Job> = HashMap::new();
    let mut inflight: JoinSet<Option<Job>> = JoinSet::new();
    let (control_tx, mut control) = mpsc::unbounded_channel();
    let _ = node.queue_control.set(control_tx);
    if !queued.is_empty() {
        tracing::info!(hops = queued.len(), "resuming outbound queue");
    }
    node.metrics
        .outbound_queue
        .fetch_add(queued.len() as i64, Ordering::Relaxed);
    for item in queued {
        node.outbound_usage.add(&item);
        schedule.push(Reverse((item.next_attempt_ms, item.id)));
        waiting.insert(
            item.id,
            Job {
                item,
                payload: None,
            },
        );
    }
    let concurrency = node.config.relay.concurrency;
    // A shared store (several node processes): renew the leases of the hops held here and
    // take over those of a process that died (`Store::claim_outbound`).
    let shared = node.config.storage.backend == crate::config::StorageBackend::Postgres;
    let renew_every =
        (node.config.storage.postgres.queue_lease.get() / 3).max(Duration::from_millis(100));
    let mut leases = tokio::time::interval(renew_every);
    leases.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let smtp = Arc::new(smtp::sender(&node));
    loop {
        let now = now_ms();
        while inflight.len() < concurrency {
            match schedule.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => break,
            }
            let Some(Reverse((_, id))) = schedule.pop() else {
                break;
            };
            match waiting.remove(&id) {
                // An entry left by `queue retry` (the hop was rescheduled since): not due.
                Some(job) if job.item.next_attempt_ms > now => {
                    waiting.insert(id, job);
                }
                Some(job) => {
                    inflight.spawn(attempt(node.clone(), job, smtp.clone()));
                }
                None => {}
            }
        }
        let next_due = schedule.peek().map(|Reverse((due, _))| *due);
        let sleep_for = match next_due {
            Some(due) if inflight.len() < concurrency => {
                Duration::from_millis(due.saturating_sub(now))
            }
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(job) = rx.recv() => {
                schedule.push(Reverse((job.item.next_attempt_ms, job.item.id)));
                waiting.insert(job.item.id, job);
            }
            Some(c) = control.recv() => match c {
                QueueControl::Retry { id, reply } => {
                    let mut due = Vec::new();
                    for job in waiting.values_mut() {
                        if id.is_none_or(|id| id == job.item.id) {
                            job.item.next_attempt_ms = now;
                            schedule.push(Reverse((now, job.item.id)));
                            due.push(job.item.id);
                        }
                    }
                    let _ = reply.send(due);
                }
                QueueControl::ForgetSender { sender } => {
                    waiting.retain(|_, job| {
                        if job.item.sender != sender {
                            return true;
                        }
                        node.outbound_usage.release(&job.item);
                        node.metrics.outbound_queue.fetch_sub(1, Ordering::Relaxed);
                        false
                    });
                }
                QueueControl::Drop { id, reply } => match waiting.remove(&id) {
                    Some(mut job) => {
                        job.item.last_error = "dropped by the node's operator".into();
                        let node = node.clone();
                        inflight.spawn(async move {
                            give_up(&node, job.item).await;
                            let _ = reply.send(true);
                            None
                        });
                    }
                    None => {
                        let _ = reply.send(false);
                    }
                },
            },
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                match done {
                    Ok(Some(job)) => {
                        schedule.push(Reverse((job.item.next_attempt_ms, job.item.id)));
                        waiting.insert(job.item.id, job);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "relay attempt panicked; the hop is retried at the next start"),
                }
            }
            _ = leases.tick(), if shared => {
                if let Err(e) = node.store.renew_outbound().await {
                    tracing::warn!(error = %e, "could not renew the outbound queue leases");
                }
                match node.store.claim_outbound(CLAIM_BATCH).await {
                    Ok(items) => {
                        if !items.is_empty() {
                            tracing::info!(hops = items.len(), "took over outbound hops");
                        }
                        for item in items {
                            if waiting.contains_key(&item.id) {
                                continue;
                            }
                            node.metrics.outbound_queue.fetch_add(1, Ordering::Relaxed);
                            node.outbound_usage.add(&item);
                            schedule.push(Reverse((item.next_attempt_ms, item.id)));
                            waiting.insert(item.id, Job { item, payload: None });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim outbound hops"),
                }
            }
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    // Attempts in flight get the grace period; what does not finish stays queued (the
    // destination deduplicates a repeated delivery by envelope id).
    let grace = node.config.shutdown_grace.get();
    if tokio::time::timeout(grace, async {
        while inflight.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
    }
}

async fn attempt(node: Arc<Node>, mut job: Job, smtp: Arc<smtp_out::Sender>) -> Option<Job> {
    let id = job.item.queue_id();
    let payload = match job.payload.take() {
        Some(p) => p,
        None => match node.store.outbound_payload(id).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::warn!(queue_id = %id.to_hex(), "queued hop has no payload; dropping it");
                let _ = node.store.finish(id, None).await;
                node.outbound_usage.release(&job.item);
                node.metrics.outbound_queue.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            Err(e) => return retry(&node, job, format!("reading the queue: {e}")).await,
        },
    };
    let destination = job.item.destination.clone();
    let result = if job.item.smtp.is_some() {
        smtp::attempt(&smtp, &mut job.item, payload).await
    } else if let Some(forward) = &job.item.forward {
        forward_remote(&node, &destination, forward.node_key, payload).await
    } else if destination == node.url {
        deliver_local(&node, payload).await
    } else {
        deliver_remote(&node, &destination, payload).await
    };
    match result {
        Attempt::Delivered { duplicate } => {
            node.metrics.relay(if duplicate {
                RelayOutcome::Duplicate
            } else {
                RelayOutcome::Delivered
            });
            tracing::debug!(queue_id = %id.to_hex(), duplicate, "hop delivered");
            if let Err(e) = node.store.finish(id, None).await {
                // Delivered but not dequeued: it is delivered again later and deduplicated.
                return retry(&node, job, format!("dequeuing: {e}")).await;
            }
            node.outbound_usage.release(&job.item);
            node.metrics.outbound_queue.fetch_sub(1, Ordering::Relaxed);
            None
        }
        Attempt::Permanent(reason) => {
            node.metrics.relay(RelayOutcome::Failed);
            job.item.attempts += 1;
            job.item.last_error = reason;
            give_up(&node, job.item).await
        }
        Attempt::Temporary(reason) => {
            node.metrics.relay(RelayOutcome::Retry);
            job.item.attempts += 1;
            retry(&node, job, reason).await
        }
    }
}

/// Schedules the next attempt, or gives up once the deadline has passed.
async fn retry(node: &Arc<Node>, mut job: Job, reason: String) -> Option<Job> {
    tracing::debug!(queue_id = %job.item.queue_id().to_hex(), attempts = job.item.attempts, reason = %reason, "hop not delivered yet");
    job.item.last_error = reason;
    let s = Schedule::of(node, &job.item);
    let deadline = job
        .item
        .submitted_ms
        .saturating_add(s.give_up_after.as_millis() as u64);
    let now = now_ms();
    if now >= deadline {
        return give_up(node, job.item).await;
    }
    let delay = backoff(job.item.attempts.max(1), s.retry_base, s.retry_max);
    // The last attempt happens at the deadline itself.
    job.item.next_attempt_ms = now.saturating_add(delay.as_millis() as u64).min(deadline);
    job.payload = None;
    if let Err(e) = node.store.reschedule(job.item.clone()).await {
        tracing::warn!(error = %e, "could not store the retry schedule; keeping it in memory");
    }
    Some(job)
}

/// The timing of the one backoff policy for a job: hops to nodes follow `relay.*`, legacy
/// mail `gateway.*` (mail servers are customarily given days, and are retried less often).
struct Schedule {
    give_up_after: Duration,
    retry_base: Duration,
    retry_max: Duration,
}

impl Schedule {
    fn of(node: &Node, item: &OutboundItem) -> Schedule {
        if item.smtp.is_some() {
            let g = &node.config.gateway;
            Schedule {
                give_up_after: g.give_up_after.get(),
                retry_base: g.retry_base.get(),
                retry_max: g.retry_max.get(),
            }
        } else {
            let r = &node.config.relay;
            Schedule {
                give_up_after: r.give_up_after.get(),
                retry_base: r.retry_base.get(),
                retry_max: r.retry_max.get(),
            }
        }
    }
}

async fn give_up(node: &Arc<Node>, mut item: OutboundItem) -> Option<Job> {
    let id = item.queue_id();
    if let Some(f) = &item.forward {
        // A copy for another home: the mailbox has the envelope here, and nobody here sent
        // it, so there is no bounce.
        tracing::info!(queue_id = %id.to_hex(), destination = %item.destination, attempts = item.attempts,
            reason = %item.last_error, envelope = %f.envelope.to_hex(), "giving up on forwarding a copy to another home");
    } else {
        tracing::info!(queue_id = %id.to_hex(), destination = %item.destination, attempts = item.attempts,
            reason = %item.last_error, smtp = item.smtp.is_some(), "giving up on hop; bouncing to its sender");
    }
    let envelope = if item.forward.is_some() {
        None
    } else {
        let sealed = if item.smtp.is_some() {
            smtp::give_up_rest(&mut item);
            smtp::bounce_envelope(node, &item).await
        } else {
            bounce::bounce_envelope(node, &item).await
        };
        match sealed {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(queue_id = %id.to_hex(), error = %e, "could not seal a bounce; dropping the hop without one");
                None
            }
        }
    };
    let bounced = envelope.is_some();
    if let Err(e) = node.store.finish(id, envelope).await {
        tracing::warn!(queue_id = %id.to_hex(), error = %e, "could not remove the failed hop; it is retried at the next start");
        return None;
    }
    if bounced {
        Metrics::inc(&node.metrics.bounces);
    }
    node.outbound_usage.release(&item);
    node.metrics.outbound_queue.fetch_sub(1, Ordering::Relaxed);
    None
}

async fn deliver_local(node: &Node, payload: Bytes) -> Attempt {
    match node.accept_hop_payload(payload).await {
        Ok(delivered) => Attempt::Delivered {
            duplicate: delivered == Delivered::Duplicate,
        },
        Err(e) => e.into(),
    }
}

async fn deliver_remote(node: &Node, destination: &NodeUrl, payload: Bytes) -> Attempt {
    if let Err(why) =
        crate::ssrf::check_destination(destination, node.config.relay.allow_private_destinations)
    {
        return DeliveryError::from(Refused::Destination(why)).into();
    }
    if let Err(e) = node.check_peer(destination).await {
        return DeliveryError::from(TryLater::Peer(e)).into();
    }
    post_signed(node, destination, DELIVER, payload).await
}

/// POSTs `payload` to `endpoint` of the node at `destination`, signed per RFC 9421 with
/// this node's key, and reads its answer into the domain's verdict.
async fn post_signed(
    node: &Node,
    destination: &NodeUrl,
    endpoint: &str,
    payload: Bytes,
) -> Attempt {
    let path = format!("{}{endpoint}", path_prefix(destination));
    let sig = sign_request(
        &node.keys.signing,
        "POST",
        destination.authority(),
        &path,
        &payload,
        now_secs(),
    );
    let resp = node
        .peers
        .http()
        .post(destination.join(endpoint))
        .header("content-type", "application/octet-stream")
        .header("content-digest", sig.content_digest)
        .header("signature-input", sig.signature_input)
        .header("signature", sig.signature)
        .body(payload)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            return DeliveryError::from(TryLater::NoAnswer(e.without_url().to_string())).into();
        }
    };
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if status.is_success() {
        let duplicate = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("stored").and_then(|s| s.as_bool()))
            .is_some_and(|stored| !stored);
        return Attempt::Delivered { duplicate };
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str()?,
                e.get("message")?.as_str()?
            ))
        })
        .unwrap_or_default();
    let reason = format!("HTTP {} {detail}", status.as_u16())
        .trim_end()
        .to_string();
    // The peer's status, read once here into the domain's verdict.
    let status = status.as_u16();
    let e: DeliveryError = if (400..500).contains(&status) && status != 429 && status != 408 {
        Refused::ByPeer { status, reason }.into()
    } else {
        TryLater::ByPeer { status, reason }.into()
    };
    e.into()
}

/// Posts a copy of an envelope stored here to another home of its mailbox
/// (`/v1/forward`), once that node presents the key the user's record names for it.
async fn forward_remote(
    node: &Node,
    destination: &NodeUrl,
    node_key: [u8; 32],
    payload: Bytes,
) -> Attempt {
    if let Err(why) =
        crate::ssrf::check_destination(destination, node.config.relay.allow_private_destinations)
    {
        return DeliveryError::from(Refused::Destination(why)).into();
    }
    if let Err(e) = node.check_peer(destination).await {
        return DeliveryError::from(TryLater::Peer(e)).into();
    }
    if let Some(seen) = node.peers.pinned_key(destination)
        && seen != node_key
    {
        // The record may be older than the node's key (a rotation): retried until the user
        // publishes a new one or the forward gives up.
        return DeliveryError::from(TryLater::Peer(PeerError::KeyMismatch {
            pinned: hex::encode(node_key),
            seen: hex::encode(seen),
        }))
        .into();
    }
    post_signed(node, destination, FORWARD, payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(100);
        for (n, full) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (40, 100)] {
            for _ in 0..50 {
                let d = backoff(n, base, max);
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "attempt {n}: {d:?}");
            }
        }
    }
}
