//! Mailbox-owner authentication state: single-use challenge nonces (60 s) and bearer tokens
//! (600 s), kept in memory. A restart forgets them; clients then ask for a new challenge.
//! `[auth] nonce_ttl` and `token_ttl` in node.toml change the lifetimes (`spec/node.md`).

use std::collections::HashMap;
use std::sync::Mutex;

use sealpost_proto::MailboxId;
use sealpost_proto::auth::NONCE_BYTES;

/// How long a nonce may be answered.
pub const NONCE_TTL_SECS: u64 = 60;
/// How long a token is valid.
pub const TOKEN_TTL_SECS: u64 = 600;
/// Outstanding nonces and tokens beyond which new ones are refused (memory bound).
const MAX_PENDING: usize = 200_000;

#[derive(Clone, Copy)]
struct Entry {
    mailbox: MailboxId,
    expires: u64,
}

pub struct Sessions {
    nonce_ttl: u64,
    token_ttl: u64,
    nonces: Mutex<HashMap<[u8; NONCE_BYTES], Entry>>,
    tokens: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(NONCE_TTL_SECS, TOKEN_TTL_SECS)
    }
}

/// Why a challenge answer was refused (all map to `401 unauthorized`).
#[derive(Debug, PartialEq, Eq)]
pub enum NonceError {
    Unknown,
    Expired,
    OtherMailbox,
}

impl Sessions {
    /// Nonces live `nonce_ttl` seconds, tokens `token_ttl` (at least 1 each).
    pub fn new(nonce_ttl: u64, token_ttl: u64) -> Self {
        Sessions {
            nonce_ttl: nonce_ttl.max(1),
            token_ttl: token_ttl.max(1),
            nonces: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// A fresh nonce for `mailbox`; `None` when too many are outstanding.
    pub fn challenge(&self, mailbox: MailboxId, now: u64) -> Option<([u8; NONCE_BYTES], u64)> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let expires = now + self.nonce_ttl;
        let mut map = self.nonces.lock().ok()?;
        if map.len() >= MAX_PENDING {
            map.retain(|_, e| e.expires > now);
            if map.len() >= MAX_PENDING {
                return None;
            }
        }
        map.insert(nonce, Entry { mailbox, expires });
        Some((nonce, expires))
    }

    /// Consumes a nonce (whether or not the answer then verifies: one try per nonce).
    pub fn take_nonce(
        &self,
        nonce: &[u8; NONCE_BYTES],
        mailbox: MailboxId,
        now: u64,
    ) -> Result<(), NonceError> {
        let e = self
            .nonces
            .lock()
            .ok()
            .and_then(|mut m| m.remove(nonce))
            .ok_or(NonceError::Unknown)?;
        if e.expires <= now {
            return Err(NonceError::Expired);
        }
        if e.mailbox != mailbox {
            return Err(NonceError::OtherMailbox);
        }
        Ok(())
    }

    /// Issues a token for `mailbox`; `None` when too many are outstanding.
    pub fn issue_token(&self, mailbox: MailboxId, now: u64) -> Option<([u8; 32], u64)> {
        let token: [u8; 32] = rand::random();
        let expires = now + self.token_ttl;
        let mut map = self.tokens.lock().ok()?;
        if map.len() >= MAX_PENDING {
            map.retain(|_, e| e.expires > now);
            if map.len() >= MAX_PENDING {
                return None;
            }
        }
        map.insert(token, Entry { mailbox, expires });
        Some((token, expires))
    }

    /// The mailbox a live token is for.
    pub fn token_mailbox(&self, token: &[u8; 32], now: u64) -> Option<MailboxId> {
        let map = self.tokens.lock().ok()?;
        map.get(token)
            .filter(|e| e.expires > now)
            .map(|e| e.mailbox)
    }

    /// Drops expired nonces and tokens.
    pub fn sweep(&self, now: u64) {
        if let Ok(mut m) = self.nonces.lock() {
            m.retain(|_, e| e.expires > now);
        }
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|_, e| e.expires > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_bound_and_expire() {
        let s = Sessions::default();
        let m = MailboxId([1; 16]);
        let (n, exp) = s.challenge(m, 100).unwrap();
        assert_eq!(exp, 160);
        assert_eq!(
            s.take_nonce(&n, MailboxId([2; 16]), 101),
            Err(NonceError::OtherMailbox)
        );
        assert_eq!(
            s.take_nonce(&n, m, 101),
            Err(NonceError::Unknown),
            "a refused answer used the nonce up"
        );
        let (n, _) = s.challenge(m, 100).unwrap();
        assert_eq!(s.take_nonce(&n, m, 160), Err(NonceError::Expired));
        let (n, _) = s.challenge(m, 100).unwrap();
        assert_eq!(s.take_nonce(&n, m, 159), Ok(()));
        assert_eq!(s.take_nonce(&n, m, 159), Err(NonceError::Unknown));
    }

    #[test]
    fn lifetimes_are_configurable() {
        let s = Sessions::new(5, 7);
        let m = MailboxId([1; 16]);
        assert_eq!(s.challenge(m, 100).unwrap().1, 105);
        let (t, exp) = s.issue_token(m, 100).unwrap();
        assert_eq!(exp, 107);
        assert_eq!(s.token_mailbox(&t, 106), Some(m));
        assert_eq!(s.token_mailbox(&t, 107), None);
        assert_eq!(Sessions::new(0, 0).issue_token(m, 100).unwrap().1, 101);
    }

    #[test]
    fn tokens_name_their_mailbox_until_expiry() {
        let s = Sessions::default();
        let m = MailboxId([1; 16]);
        let (t, exp) = s.issue_token(m, 1000).unwrap();
        assert_eq!(s.token_mailbox(&t, exp - 1), Some(m));
        assert_eq!(s.token_mailbox(&t, exp), None);
        assert_eq!(s.token_mailbox(&[0; 32], 1000), None);
        s.sweep(exp);
        assert_eq!(s.token_mailbox(&t, 1000), None);
    }
}
