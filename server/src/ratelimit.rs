//! Token-bucket rate limits keyed by user (submit), peer node (deliver) or client address.
//! A bucket holds `burst` tokens and refills at `per_minute`; the lock is held only for
//! arithmetic.
//!
//! With one node process (RocksDB) the buckets are in this process's memory. On a store
//! that several processes share (`Store::keeps_limits`, PostgreSQL) a limiter made
//! [`in_store`](RateLimiter::in_store) takes its tokens from one bucket per key in the
//! store, [`Store::take_tokens`], so the limit holds for all processes together. To keep
//! the hot path cheap a process takes up to `lease` tokens at a time and spends them
//! locally for at most [`LEASE_TTL`]; a refusal is remembered until the bucket can hold a
//! token again (no other process can add one sooner). The bound on what all processes
//! together admit is in `spec/node.md` §Storage on PostgreSQL.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sealpost_proto::MailboxId;
use sha2::{Digest, Sha256};

use crate::store::{Bucket as SharedBucket, Store};

/// How long tokens leased from a shared bucket may be spent; unspent ones are dropped.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// Tokens a process leases from a shared bucket at once: `limit_lease`, but at most an
/// eighth of the burst (so one process does not hold a small bucket), and at least 1.
pub fn lease_size(limit_lease: u32, burst: u32) -> u64 {
    u64::from(limit_lease.min(burst / 8).max(1))
}

/// A key of a shared bucket: its bytes, hashed with the limit's name.
pub trait LimitKey {
    fn limit_bytes(&self) -> Vec<u8>;
}

impl LimitKey for MailboxId {
    fn limit_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl LimitKey for [u8; 32] {
    fn limit_bytes(&self) -> Vec<u8> {
        self.to_vec()
    }
}

impl LimitKey for IpAddr {
    fn limit_bytes(&self) -> Vec<u8> {
        match self {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What this process holds of one key's shared bucket.
enum Lease {
    /// Tokens taken from the store, spendable until `until`.
    Held { tokens: u64, until: Instant },
    /// The store had none; it has none before `until`.
    Refused { until: Instant },
}

struct Shared<K> {
    store: Arc<dyn Store>,
    name: &'static str,
    bucket: SharedBucket,
    lease: u64,
    leases: Mutex<HashMap<K, Lease>>,
}

/// A request over its limit: the client may try again after `retry_after` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; retry after {retry_after} s")]
pub struct RateLimited {
    pub retry_after: u64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
    per_minute: u32,
    shared: Option<Shared<K>>,
}

fn secs_from_us(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

impl<K: Eq + Hash + Clone + LimitKey> RateLimiter<K> {
    /// Counts this limit in `store` when the store keeps limits (several processes share
    /// it), as the bucket `name`, leasing up to `lease` tokens at a time (see
    /// [`lease_size`]); otherwise (RocksDB) it stays in memory.
    pub fn in_store(mut self, name: &'static str, store: &Arc<dyn Store>, lease: u32) -> Self {
        if self.per_minute == 0 || !store.keeps_limits() {
            return self;
        }
        let burst = self.burst as u32;
        self.shared = Some(Shared {
            store: store.clone(),
            name,
            bucket: SharedBucket {
                interval_us: 60_000_000u64.div_ceil(u64::from(self.per_minute)),
                burst: u64::from(burst),
            },
            lease: lease_size(lease, burst),
            leases: Mutex::new(HashMap::new()),
        });
        self
    }

    /// Takes one token for `key`, or says how many seconds until one is available: from
    /// the shared bucket when there is one, else from this process's. When the store
    /// fails, this process's bucket decides (the limit then holds per process).
    pub async fn take(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let Some(sh) = &self.shared else {
            return self.check(key, now);
        };
        if let Ok(mut leases) = sh.leases.lock() {
            match leases.get_mut(&key) {
                Some(Lease::Held { tokens, until }) if *tokens > 0 && now < *until => {
                    *tokens -= 1;
                    return Ok(());
                }
                Some(Lease::Refused { until }) if now < *until => {
                    return Err(secs_from_us(until.duration_since(now).as_micros() as u64));
                }
                _ => {}
            }
        }
        let mut h = Sha256::new();
        h.update(sh.name.as_bytes());
        h.update([0]);
        h.update(key.limit_bytes());
        let at = now_us();
        match sh
            .store
            .take_tokens(h.finalize().into(), sh.bucket, at, sh.lease)
            .await
        {
            Ok(t) => {
                let (lease, result) = if t.granted > 0 {
                    let held = Lease::Held {
                        tokens: t.granted - 1,
                        until: now + LEASE_TTL,
                    };
                    (held, Ok(()))
                } else {
                    let wait = sh.bucket.wait_us(t.tat, at);
                    let until = now + Duration::from_micros(wait);
                    (Lease::Refused { until }, Err(secs_from_us(wait)))
                };
                if let Ok(mut leases) = sh.leases.lock() {
                    leases.insert(key, lease);
                }
                result
            }
            Err(e) => {
                tracing::debug!(error = %e, limit = sh.name, "shared rate limit unavailable; counting in this process");
                self.check(key, now)
            }
        }
    }
}

impl<K: Eq + Hash> RateLimiter<K> {
    /// `per_minute == 0` disables the limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            per_minute,
            shared: None,
        }
    }

    /// Takes one token for `key`, or says how many seconds until one is available.
    pub fn check(&self, key: K, now: Instant) -> Result<(), u64> {
        if self.per_sec == 0.0 {
            return Ok(());
        }
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }

    /// Forgets buckets that have refilled completely (they behave like new ones), and
    /// leases of shared buckets that ran out.
    pub fn sweep(&self, now: Instant) {
        if self.per_sec == 0.0 {
            return;
        }
        if let Some(sh) = &self.shared
            && let Ok(mut leases) = sh.leases.lock()
        {
            leases.retain(|_, l| match l {
                Lease::Held { until, .. } | Lease::Refused { until } => now < *until,
            });
        }
        let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
        if let Ok(mut map) = self.buckets.lock() {
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        }
    }

    /// Keys held in memory: buckets, and leases of shared buckets.
    pub fn tracked(&self) -> usize {
        let leases = self
            .shared
            .as_ref()
            .map_or(0, |sh| sh.leases.lock().map(|m| m.len()).unwrap_or(0));
        self.buckets.lock().map(|m| m.len()).unwrap_or(0) + leases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(60, 3); // one per second
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t), Ok(()));
        }
        assert_eq!(l.check("a", t), Err(1));
        assert_eq!(l.check("b", t), Ok(()), "keys are independent");
        assert_eq!(l.check("a", t + Duration::from_millis(1000)), Ok(()));
        assert!(l.check("a", t + Duration::from_millis(1000)).is_err());
        l.sweep(t + Duration::from_secs(10));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn leases_are_an_eighth_of_the_burst_at_most() {
        assert_eq!(lease_size(16, 1000), 16);
        assert_eq!(lease_size(16, 40), 5);
        assert_eq!(lease_size(16, 15), 1, "a small burst is never leased out");
        assert_eq!(lease_size(1, 1000), 1);
        assert_eq!(secs_from_us(1), 1);
        assert_eq!(secs_from_us(1_000_001), 2);
    }

    #[test]
    fn a_shared_bucket_refills_by_its_interval() {
        let b = SharedBucket {
            interval_us: 1_500_000, // 40 per minute
            burst: 2,
        };
        let t = b.take(None, 100, 5);
        assert_eq!(t.granted, 2);
        assert_eq!(b.wait_us(t.tat, 100), 1_500_000);
        let later = b.take(Some(t.tat), 100 + 1_500_000, 5);
        assert_eq!(later.granted, 1);
        // A bucket idle for long is full, not fuller.
        assert_eq!(b.take(Some(later.tat), 1 << 40, 5).granted, 2);
    }

    #[test]
    fn zero_means_unlimited() {
        let l = RateLimiter::new(0, 0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(1u8, t), Ok(()));
        }
    }
}
