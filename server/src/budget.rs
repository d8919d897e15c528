//! Bytes of request bodies held in memory at once: a node-wide budget
//! (`limits.body_bytes_in_flight`) and one per client address
//! (`limits.body_bytes_in_flight_per_ip`). A request charges its body as it arrives (its
//! declared length up front, when there is one) and gives the bytes back when its
//! [`Charge`] drops, at the end of the request. A charge that would pass either budget is
//! refused, and the caller answers `503` without reading further. The lock is held only
//! for arithmetic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which budget a refused charge would have passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    Node,
    Client,
}

#[derive(Default)]
struct State {
    total: u64,
    per_client: HashMap<IpAddr, u64>,
}

pub struct BodyBudget {
    max_total: u64,
    max_per_client: u64,
    state: Mutex<State>,
}

impl BodyBudget {
    pub fn new(max_total: u64, max_per_client: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            max_total,
            max_per_client,
            state: Mutex::default(),
        })
    }

    /// An empty charge for the client with address key `client`.
    pub fn start(self: &Arc<Self>, client: IpAddr) -> Charge {
        Charge {
            budget: self.clone(),
            client,
            bytes: 0,
        }
    }

    /// Bytes charged now, node-wide.
    pub fn in_flight(&self) -> u64 {
        self.state.lock().map(|s| s.total).unwrap_or(0)
    }

    fn take(&self, client: IpAddr, n: u64) -> Result<(), Exhausted> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Exhausted::Node);
        };
        let mine = s.per_client.get(&client).copied().unwrap_or(0);
        if s.total + n > self.max_total {
            return Err(Exhausted::Node);
        }
        if mine + n > self.max_per_client {
            return Err(Exhausted::Client);
        }
        s.total += n;
        s.per_client.insert(client, mine + n);
        Ok(())
    }

    fn give_back(&self, client: IpAddr, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.total = s.total.saturating_sub(n);
            if let Some(mine) = s.per_client.get_mut(&client) {
                *mine = mine.saturating_sub(n);
                if *mine == 0 {
                    s.per_client.remove(&client);
                }
            }
        }
    }
}

/// Bytes one request holds; given back on drop.
pub struct Charge {
    budget: Arc<BodyBudget>,
    client: IpAddr,
    bytes: u64,
}

impl Charge {
    /// Makes sure at least `total` bytes are charged to this request.
    pub fn cover(&mut self, total: u64) -> Result<(), Exhausted> {
        if total > self.bytes {
            self.budget.take(self.client, total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.client, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_budgets_hold_and_drops_give_back() {
        let b = BodyBudget::new(100, 60);
        let (x, y) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut a = b.start(x);
        a.cover(50).unwrap();
        a.cover(40).unwrap(); // already covered
        assert_eq!(a.bytes(), 50);
        let mut a2 = b.start(x);
        assert_eq!(a2.cover(11), Err(Exhausted::Client));
        a2.cover(10).unwrap();
        let mut c = b.start(y);
        assert_eq!(c.cover(41), Err(Exhausted::Node));
        c.cover(40).unwrap();
        assert_eq!(b.in_flight(), 100);
        drop(a);
        drop(a2);
        assert_eq!(b.in_flight(), 40);
        let mut d = b.start(x);
        d.cover(60).unwrap();
        drop((c, d));
        assert_eq!(b.in_flight(), 0);
    }
}
