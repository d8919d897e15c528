//! Devices of an account and the one-time link drop (`spec/api.md` §Devices, §Links).
//!
//! A device signs in with its own Ed25519 key and has its own cursor; the store keeps an
//! envelope until every device has acknowledged it or the retention period passes. A new
//! device is linked through a *drop*: a short-lived, one-time exchange on the user's home
//! node that carries the two messages of a PAKE (SPAKE2 on a code the user types) and then
//! the account's key, encrypted under the agreed key. The node sees only opaque bytes; a
//! guessed or mistyped code makes the existing device abort, and the drop is spent.
//!
//! Drops live in memory: a restart forgets them, and the user runs `device add` again.

use std::collections::HashMap;
use std::sync::Mutex;

use sealpost_proto::{DeviceId, MailboxId};

/// Largest first PAKE message (the existing device's), bytes.
pub const MAX_LINK_HELLO: usize = 256;
/// Largest join message (the new device's PAKE message and its sealed device key), bytes.
pub const MAX_LINK_JOIN: usize = 4096;
/// Open drops one account may have at once.
pub const MAX_OPEN_LINKS_PER_ACCOUNT: usize = 2;
/// Drops (and their tombstones) kept node-wide; beyond, new ones are refused.
const MAX_DROPS: usize = 10_000;
/// Nameplates are six digits.
const NAMEPLATES: std::ops::RangeInclusive<u32> = 100_000..=999_999;

/// Why a device or link request was refused; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no link with this code on this node (mistyped, or never created)")]
    LinkUnknown,
    #[error("this link code has expired; run `sealpost device add` again")]
    LinkExpired,
    #[error("this link code was used already; run `sealpost device add` again")]
    LinkUsed,
    #[error("the link was aborted: the code did not match on the other device (wrong code)")]
    LinkAborted,
    #[error("this link is not at that step")]
    LinkOutOfOrder,
    #[error("the link belongs to another account or joiner")]
    LinkNotYours,
    #[error("too many open links; finish or wait for one to expire")]
    TooManyLinks,
    #[error("the account has {max} devices; remove one first")]
    TooManyDevices { max: usize },
    #[error("no such device in this account")]
    UnknownDevice,
    #[error("this is the account's last device; an account keeps at least one")]
    LastDevice,
    #[error(
        "this account's devices sign in with their own device keys; the account key alone no longer does"
    )]
    DeviceKeyRequired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the new device.
    Open,
    /// The new device joined; waiting for the existing device's payload.
    Joined { join: Vec<u8>, secret: [u8; 32] },
    /// The payload waits for the new device.
    Delivered { secret: [u8; 32], payload: Vec<u8> },
    /// The existing device found the code wrong.
    Aborted,
    /// The new device took the payload.
    Used,
}

struct LinkDrop {
    mailbox: MailboxId,
    hello: Vec<u8>,
    step: Step,
    expires: u64,
}

/// The open link drops of this node, by nameplate.
pub struct LinkDrops {
    ttl: u64,
    max_payload: usize,
    drops: Mutex<HashMap<u32, LinkDrop>>,
}

impl LinkDrops {
    /// Drops live `ttl` seconds (at least 1); a payload is at most `max_payload` bytes.
    pub fn new(ttl: u64, max_payload: usize) -> Self {
        LinkDrops {
            ttl: ttl.max(1),
            max_payload,
            drops: Mutex::default(),
        }
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<u32, LinkDrop>) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        // A poisoned lock means a panic elsewhere; refusing is the safe answer.
        let mut d = self.drops.lock().map_err(|_| DeviceError::TooManyLinks)?;
        f(&mut d)
    }

    /// A live drop the caller may act on: known, not expired, not spent.
    fn live(
        d: &mut HashMap<u32, LinkDrop>,
        nameplate: u32,
        now: u64,
    ) -> Result<&mut LinkDrop, DeviceError> {
        let drop = d.get_mut(&nameplate).ok_or(DeviceError::LinkUnknown)?;
        if drop.step == Step::Used {
            return Err(DeviceError::LinkUsed);
        }
        if drop.expires <= now {
            return Err(DeviceError::LinkExpired);
        }
        if drop.step == Step::Aborted {
            return Err(DeviceError::LinkAborted);
        }
        Ok(drop)
    }

    /// Opens a drop for `mailbox` with the existing device's PAKE message.
    pub fn create(
        &self,
        mailbox: MailboxId,
        hello: Vec<u8>,
        now: u64,
    ) -> Result<(u32, u64), DeviceError> {
        self.with(|d| {
            sweep(d, now, self.ttl);
            let open = d
                .values()
                .filter(|x| {
                    x.mailbox == mailbox
                        && x.expires > now
                        && !matches!(x.step, Step::Used | Step::Aborted)
                })
                .count();
            if open >= MAX_OPEN_LINKS_PER_ACCOUNT || d.len() >= MAX_DROPS {
                return Err(DeviceError::TooManyLinks);
            }
            let nameplate = loop {
                let n = rand::random_range(NAMEPLATES);
                if !d.contains_key(&n) {
                    break n;
                }
            };
            let expires = now + self.ttl;
            d.insert(
                nameplate,
                LinkDrop {
                    mailbox,
                    hello,
                    step: Step::Open,
                    expires,
                },
            );
            Ok((nameplate, expires))
        })
    }

    /// The existing device's PAKE message, for the new device.
    pub fn hello(&self, nameplate: u32, now: u64) -> Result<Vec<u8>, DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            match drop.step {
                Step::Open => Ok(drop.hello.clone()),
                _ => Err(DeviceError::LinkUsed),
            }
        })
    }

    /// The new device's message; answers the secret with which it collects the payload.
    /// One join per drop.
    pub fn join(&self, nameplate: u32, join: Vec<u8>, now: u64) -> Result<[u8; 32], DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            if drop.step != Step::Open {
                return Err(DeviceError::LinkUsed);
            }
            let secret: [u8; 32] = rand::random();
            drop.step = Step::Joined { join, secret };
            Ok(secret)
        })
    }

    /// The new device's message for the drop's account; `None` while nobody has joined.
    pub fn reply(
        &self,
        nameplate: u32,
        mailbox: MailboxId,
        now: u64,
    ) -> Result<Option<Vec<u8>>, DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            if drop.mailbox != mailbox {
                return Err(DeviceError::LinkNotYours);
            }
            match &drop.step {
                Step::Open => Ok(None),
                Step::Joined { join, .. } => Ok(Some(join.clone())),
                _ => Err(DeviceError::LinkOutOfOrder),
            }
        })
    }

    /// Leaves the encrypted payload for the new device.
    pub fn deliver(
        &self,
        nameplate: u32,
        mailbox: MailboxId,
        payload: Vec<u8>,
        now: u64,
    ) -> Result<(), DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            if drop.mailbox != mailbox {
                return Err(DeviceError::LinkNotYours);
            }
            let Step::Joined { secret, .. } = drop.step else {
                return Err(DeviceError::LinkOutOfOrder);
            };
            drop.step = Step::Delivered { secret, payload };
            Ok(())
        })
    }

    /// The existing device gives up (the code did not match): the drop is spent.
    pub fn abort(&self, nameplate: u32, mailbox: MailboxId, now: u64) -> Result<(), DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            if drop.mailbox != mailbox {
                return Err(DeviceError::LinkNotYours);
            }
            drop.step = Step::Aborted;
            Ok(())
        })
    }

    /// The payload for the joiner holding `secret`, once; `None` while it is not there.
    pub fn collect(
        &self,
        nameplate: u32,
        secret: &[u8; 32],
        now: u64,
    ) -> Result<Option<Vec<u8>>, DeviceError> {
        self.with(|d| {
            let drop = Self::live(d, nameplate, now)?;
            let ours = match &drop.step {
                Step::Joined { secret: s, .. } | Step::Delivered { secret: s, .. } => {
                    constant_eq(s, secret)
                }
                _ => false,
            };
            if !ours {
                return Err(DeviceError::LinkNotYours);
            }
            match std::mem::replace(&mut drop.step, Step::Used) {
                Step::Delivered { payload, .. } => Ok(Some(payload)),
                other => {
                    drop.step = other;
                    Ok(None)
                }
            }
        })
    }

    /// Forgets drops expired more than one lifetime ago (until then they answer
    /// `link_expired` or `link_used`).
    pub fn sweep(&self, now: u64) {
        if let Ok(mut d) = self.drops.lock() {
            sweep(&mut d, now, self.ttl);
        }
    }
}

fn sweep(d: &mut HashMap<u32, LinkDrop>, now: u64, ttl: u64) {
    d.retain(|_, x| x.expires.saturating_add(ttl) > now);
    // Spent drops hold no secrets once their payload is taken; an expired one drops its
    // bytes at once.
    for x in d.values_mut() {
        if x.expires <= now {
            x.hello.clear();
            if !matches!(x.step, Step::Used | Step::Aborted) {
                x.step = Step::Aborted;
            }
        }
    }
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a nameplate path segment.
pub fn parse_nameplate(s: &str) -> Result<u32, DeviceError> {
    s.parse::<u32>()
        .ok()
        .filter(|n| NAMEPLATES.contains(n))
        .ok_or(DeviceError::LinkUnknown)
}

/// The device a session may act as, given the account's registered devices: the account
/// key only while none is registered.
pub fn check_session_device(devices: &[DeviceId], device: DeviceId) -> Result<(), DeviceError> {
    match (devices.is_empty(), device == DeviceId::ACCOUNT) {
        (true, true) => Ok(()),
        (true, false) => Err(DeviceError::UnknownDevice),
        (false, true) => Err(DeviceError::DeviceKeyRequired),
        (false, false) if devices.contains(&device) => Ok(()),
        (false, false) => Err(DeviceError::UnknownDevice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MailboxId = MailboxId([1; 16]);

    #[test]
    fn a_drop_runs_once_in_order() {
        let l = LinkDrops::new(100, 1000);
        let (n, exp) = l.create(M, b"A".to_vec(), 10).unwrap();
        assert_eq!(exp, 110);
        assert_eq!(l.reply(n, M, 11).unwrap(), None);
        assert_eq!(l.hello(n, 11).unwrap(), b"A");
        let secret = l.join(n, b"B".to_vec(), 12).unwrap();
        assert_eq!(l.join(n, b"C".to_vec(), 12), Err(DeviceError::LinkUsed));
        assert_eq!(l.hello(n, 12), Err(DeviceError::LinkUsed));
        assert_eq!(
            l.reply(n, MailboxId([2; 16]), 13),
            Err(DeviceError::LinkNotYours)
        );
        assert_eq!(l.reply(n, M, 13).unwrap(), Some(b"B".to_vec()));
        assert_eq!(l.collect(n, &secret, 13).unwrap(), None);
        assert_eq!(l.collect(n, &[0; 32], 13), Err(DeviceError::LinkNotYours));
        l.deliver(n, M, b"P".to_vec(), 14).unwrap();
        assert_eq!(l.collect(n, &secret, 15).unwrap(), Some(b"P".to_vec()));
        assert_eq!(l.collect(n, &secret, 15), Err(DeviceError::LinkUsed));
        assert_eq!(l.hello(n, 15), Err(DeviceError::LinkUsed));
    }

    #[test]
    fn aborted_expired_and_unknown_drops_say_so() {
        let l = LinkDrops::new(100, 1000);
        let (n, _) = l.create(M, b"A".to_vec(), 10).unwrap();
        let secret = l.join(n, b"B".to_vec(), 11).unwrap();
        l.abort(n, M, 12).unwrap();
        assert_eq!(l.collect(n, &secret, 12), Err(DeviceError::LinkAborted));
        let (n2, _) = l.create(M, b"A".to_vec(), 10).unwrap();
        assert_eq!(l.hello(n2, 110), Err(DeviceError::LinkExpired));
        l.sweep(111);
        assert_eq!(l.hello(n2, 111), Err(DeviceError::LinkExpired));
        l.sweep(210);
        assert_eq!(l.hello(n2, 210), Err(DeviceError::LinkUnknown));
        assert_eq!(parse_nameplate("12"), Err(DeviceError::LinkUnknown));
        assert_eq!(parse_nameplate("x"), Err(DeviceError::LinkUnknown));
    }

    #[test]
    fn an_account_has_few_open_drops() {
        let l = LinkDrops::new(100, 1000);
        for _ in 0..MAX_OPEN_LINKS_PER_ACCOUNT {
            l.create(M, vec![], 10).unwrap();
        }
        assert_eq!(l.create(M, vec![], 10), Err(DeviceError::TooManyLinks));
        assert!(l.create(MailboxId([2; 16]), vec![], 10).is_ok());
        assert!(
            l.create(M, vec![], 110).is_ok(),
            "expired ones do not count"
        );
    }

    #[test]
    fn sessions_act_as_registered_devices_only() {
        let d = DeviceId([3; 16]);
        assert_eq!(check_session_device(&[], DeviceId::ACCOUNT), Ok(()));
        assert_eq!(
            check_session_device(&[d], DeviceId::ACCOUNT),
            Err(DeviceError::DeviceKeyRequired)
        );
        assert_eq!(check_session_device(&[d], d), Ok(()));
        assert_eq!(
            check_session_device(&[d], DeviceId([4; 16])),
            Err(DeviceError::UnknownDevice)
        );
    }
}
