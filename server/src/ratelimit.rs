//! Token-bucket rate limits keyed by user (submit) or peer node (deliver). A bucket holds
//! `burst` tokens and refills at `per_minute`; the lock is held only for arithmetic.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

impl<K: Eq + Hash> RateLimiter<K> {
    /// `per_minute == 0` disables the limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
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

    /// Forgets buckets that have refilled completely (they behave like new ones).
    pub fn sweep(&self, now: Instant) {
        if self.per_sec == 0.0 {
            return;
        }
        let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
        if let Ok(mut map) = self.buckets.lock() {
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
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
    fn zero_means_unlimited() {
        let l = RateLimiter::new(0, 0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(1u8, t), Ok(()));
        }
    }
}
