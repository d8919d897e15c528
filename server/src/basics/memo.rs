//! A bounded in-memory cache of values read from the store, each kept for at most a
//! time-to-live. A process forgets an entry itself when it changes what the entry was read
//! from; the TTL bounds how long another process's change (several node processes on one
//! PostgreSQL database) goes unseen. A generation counter keeps a value read before a
//! `forget` from being cached after it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Memo<K, V> {
    entries: RwLock<HashMap<K, (Instant, V)>>,
    generation: AtomicU64,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// At most `max` entries, each kept `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Memo {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
            max: max.max(1),
        }
    }

    /// The value of `key` read less than the TTL ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let (at, v) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Taken before reading from the store; [`Memo::put`] with it caches only if nothing
    /// was forgotten since.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `value`, read from the store after `generation` was taken.
    pub fn put(&self, generation: u64, key: K, value: V) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.max
            && !entries.contains_key(&key)
            && let Some(k) = entries.keys().next().cloned()
        {
            // Cheap bound: forget an arbitrary entry (an expired one is read again anyway).
            entries.remove(&k);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets `key` (its source changed here); a read already under way is not cached.
    pub fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_for_its_ttl_and_then_read_again() {
        let m: Memo<u8, u32> = Memo::new(10, Duration::from_millis(50));
        let g = m.generation();
        m.put(g, 1, 7);
        assert_eq!(m.get(&1), Some(7));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn a_read_that_began_before_a_forget_is_not_cached() {
        let m: Memo<u8, u32> = Memo::new(10, Duration::from_secs(60));
        let before = m.generation();
        m.forget(&1);
        m.put(before, 1, 7);
        assert_eq!(m.get(&1), None);
        let after = m.generation();
        m.put(after, 1, 8);
        assert_eq!(m.get(&1), Some(8));
        m.forget(&1);
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let m: Memo<u32, u32> = Memo::new(3, Duration::from_secs(60));
        for k in 0..10 {
            m.put(m.generation(), k, k);
        }
        let held = (0..10).filter(|k| m.get(k).is_some()).count();
        assert_eq!(held, 3);
        assert_eq!(m.get(&9), Some(9), "the newest entry is kept");
    }
}
