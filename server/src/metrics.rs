//! Counters and gauges for `/metrics`, in the Prometheus text format. Plain atomics: no
//! lock on the request path. Labels carry routes and outcomes, never mailboxes or peers.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::store::StoreStats;

/// Routes, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Descriptor,
    Health,
    Metrics,
    Register,
    PutRecord,
    GetRecord,
    Challenge,
    Token,
    Submit,
    Deliver,
    /// `POST /v1/forward`: another home of a mailbox forwards an envelope.
    Forward,
    List,
    GetEnvelope,
    Ack,
    /// `POST /v1/ohttp`: lookups relayed here.
    Oblivious,
    /// `/v1/relay/*`: lookups relayed for this node's devices.
    Relay,
    FetchBatch,
    AckBatch,
    Devices,
    Links,
    Unknown,
}

impl Route {
    const ALL: [Route; 21] = [
        Route::Descriptor,
        Route::Health,
        Route::Metrics,
        Route::Register,
        Route::PutRecord,
        Route::GetRecord,
        Route::Challenge,
        Route::Token,
        Route::Submit,
        Route::Deliver,
        Route::Forward,
        Route::List,
        Route::GetEnvelope,
        Route::Ack,
        Route::Oblivious,
        Route::Relay,
        Route::FetchBatch,
        Route::AckBatch,
        Route::Devices,
        Route::Links,
        Route::Unknown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Descriptor => "descriptor",
            Route::Oblivious => "ohttp_gateway",
            Route::Relay => "ohttp_relay",
            Route::Health => "healthz",
            Route::Metrics => "metrics",
            Route::Register => "register",
            Route::PutRecord => "put_record",
            Route::GetRecord => "get_record",
            Route::Challenge => "challenge",
            Route::Token => "token",
            Route::Submit => "submit",
            Route::Deliver => "deliver",
            Route::Forward => "forward",
            Route::List => "list",
            Route::GetEnvelope => "get_envelope",
            Route::Ack => "ack",
            Route::FetchBatch => "fetch_batch",
            Route::AckBatch => "ack_batch",
            Route::Devices => "devices",
            Route::Links => "links",
            Route::Unknown => "unknown",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Outcomes of relay attempts, as labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayOutcome {
    Delivered,
    Duplicate,
    Retry,
    Failed,
}

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 5]; Route::ALL.len()],
    pub envelopes_stored: AtomicU64,
    pub envelopes_duplicate: AtomicU64,
    pub envelopes_acked: AtomicU64,
    pub hops_queued: AtomicU64,
    /// Copies of stored envelopes queued for the mailbox's other homes (`forward`).
    pub forwards_queued: AtomicU64,
    relay: [AtomicU64; 4],
    pub bounces: AtomicU64,
    pub rate_limited: AtomicU64,
    pub peer_key_changes: AtomicU64,
    pub connections_total: AtomicU64,
    /// Connections closed at once because their address held its share.
    pub connections_refused: AtomicU64,
    /// Request bodies refused because the body budget was spent.
    pub body_budget_refused: AtomicU64,
    pub connections_open: AtomicI64,
    pub outbound_queue: AtomicI64,
}

impl Metrics {
    pub fn request(&self, route: Route, status: u16) {
        let r = Route::ALL
            .iter()
            .position(|x| *x == route)
            .unwrap_or(Route::ALL.len() - 1);
        let c = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[r][c].fetch_add(1, Ordering::Relaxed);
    }

    pub fn relay(&self, o: RelayOutcome) {
        self.relay[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, store: StoreStats) -> String {
        let mut s = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.push_str(
            "# HELP sealpost_http_requests_total HTTP requests by route and status class.\n",
        );
        s.push_str("# TYPE sealpost_http_requests_total counter\n");
        for (i, route) in Route::ALL.iter().enumerate() {
            for (j, class) in CLASSES.iter().enumerate() {
                let n = get(&self.requests[i][j]);
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "sealpost_http_requests_total{{route=\"{}\",status=\"{class}\"}} {n}",
                        route.label()
                    );
                }
            }
        }
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "sealpost_envelopes_stored_total",
            "Envelopes stored in local mailboxes.",
            get(&self.envelopes_stored),
        );
        counter(
            "sealpost_envelopes_duplicate_total",
            "Deliveries of an envelope id already stored.",
            get(&self.envelopes_duplicate),
        );
        counter(
            "sealpost_envelopes_acked_total",
            "Envelopes deleted by their owner.",
            get(&self.envelopes_acked),
        );
        counter(
            "sealpost_hops_queued_total",
            "Hops accepted for relay.",
            get(&self.hops_queued),
        );
        counter(
            "sealpost_forwards_queued_total",
            "Copies of stored envelopes queued for the mailbox's other homes.",
            get(&self.forwards_queued),
        );
        counter(
            "sealpost_bounces_total",
            "Bounces sealed to senders.",
            get(&self.bounces),
        );
        counter(
            "sealpost_rate_limited_total",
            "Requests refused by a rate limit.",
            get(&self.rate_limited),
        );
        counter(
            "sealpost_peer_key_changes_total",
            "Peers whose descriptor key differed from the pinned one.",
            get(&self.peer_key_changes),
        );
        counter(
            "sealpost_connections_total",
            "Connections accepted.",
            get(&self.connections_total),
        );
        counter(
            "sealpost_connections_refused_total",
            "Connections refused because their address held limits.max_connections_per_ip.",
            get(&self.connections_refused),
        );
        counter(
            "sealpost_body_budget_refused_total",
            "Request bodies refused (503) because limits.body_bytes_in_flight* was spent.",
            get(&self.body_budget_refused),
        );
        counter(
            "sealpost_store_batches_total",
            "Group-committed write batches.",
            store.batches,
        );
        counter(
            "sealpost_store_ops_total",
            "Write operations committed.",
            store.ops,
        );
        counter(
            "sealpost_store_batch_bytes_total",
            "Bytes written in batches.",
            store.batch_bytes,
        );
        counter(
            "sealpost_store_failed_batches_total",
            "Write batches that did not become durable.",
            store.failed_batches,
        );
        s.push_str("# HELP sealpost_relay_attempts_total Delivery attempts by outcome.\n");
        s.push_str("# TYPE sealpost_relay_attempts_total counter\n");
        for (i, label) in ["delivered", "duplicate", "retry", "failed"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                s,
                "sealpost_relay_attempts_total{{result=\"{label}\"}} {}",
                get(&self.relay[i])
            );
        }
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        gauge(
            "sealpost_connections_open",
            "Open connections.",
            self.connections_open.load(Ordering::Relaxed),
        );
        gauge(
            "sealpost_outbound_queue",
            "Hops waiting in the outbound queue.",
            self.outbound_queue.load(Ordering::Relaxed),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(Route::Deliver, 200);
        m.request(Route::Deliver, 200);
        m.request(Route::Submit, 429);
        m.relay(RelayOutcome::Retry);
        let text = m.render(StoreStats {
            batches: 3,
            ..Default::default()
        });
        assert!(
            text.contains("sealpost_http_requests_total{route=\"deliver\",status=\"2xx\"} 2\n")
        );
        assert!(text.contains("sealpost_http_requests_total{route=\"submit\",status=\"4xx\"} 1\n"));
        assert!(text.contains("sealpost_relay_attempts_total{result=\"retry\"} 1\n"));
        assert!(text.contains("sealpost_store_batches_total 3\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
