//! Mailbox-owner authentication state: single-use challenge nonces (60 s; at most
//! [`MAX_NONCES_PER_MAILBOX`] per mailbox, the oldest replaced) and bearer tokens (600 s),
//! kept in memory. A restart forgets them; clients then ask for a new challenge. With a
//! store that keeps sessions (PostgreSQL, shared by several node processes) the `*_any`
//! methods keep them there instead (hashed), so that any process honours them; a key
//! rotation then advances the epoch and drops the sessions in its own write.
//! `[auth] nonce_ttl` and `token_ttl` in node.toml change the lifetimes (`spec/node.md`).
//!
//! A key rotation [`revoke`](Sessions::revoke)s every nonce and token of the mailbox. Each
//! mailbox has an epoch that a revocation advances; a token is issued only for the epoch
//! read before the signature was checked, so a sign-in that verified against the old key
//! while the rotation committed gets no token either.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sealpost_proto::auth::NONCE_BYTES;
use sealpost_proto::{DeviceId, MailboxId};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// What the store keeps of a nonce or token: its hash, so that the database holds no
/// usable credential.
fn secret_key(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// How long a nonce may be answered.
pub const NONCE_TTL_SECS: u64 = 60;
/// How long a token is valid.
pub const TOKEN_TTL_SECS: u64 = 600;
/// Outstanding nonces and tokens beyond which new ones are refused (memory bound).
const MAX_PENDING: usize = 200_000;
/// Outstanding nonces of one mailbox; a new challenge beyond it replaces the oldest, so a
/// flood of challenges for one mailbox holds at most this many entries of the table.
pub const MAX_NONCES_PER_MAILBOX: usize = 8;

#[derive(Clone, Copy)]
struct Entry {
    mailbox: MailboxId,
    expires: u64,
}

/// A live token: the mailbox and the device that signed in.
#[derive(Clone, Copy)]
struct TokenEntry {
    mailbox: MailboxId,
    device: DeviceId,
    expires: u64,
}

pub struct Sessions {
    nonce_ttl: u64,
    token_ttl: u64,
    nonces: Mutex<Nonces>,
    tokens: Mutex<Tokens>,
    /// A store that keeps the sessions (several node processes on one database): then the
    /// `*_any` methods use it instead of the tables above.
    shared: Option<Arc<dyn Store>>,
}

/// Live tokens, and the epoch of each mailbox whose sessions were ever revoked (absent: 0).
#[derive(Default)]
struct Tokens {
    by_token: HashMap<[u8; 32], TokenEntry>,
    epochs: HashMap<MailboxId, u64>,
}

impl Tokens {
    fn epoch(&self, mailbox: &MailboxId) -> u64 {
        self.epochs.get(mailbox).copied().unwrap_or(0)
    }
}

/// Outstanding nonces, and each mailbox's in the order they were issued.
#[derive(Default)]
struct Nonces {
    by_nonce: HashMap<[u8; NONCE_BYTES], Entry>,
    by_mailbox: HashMap<MailboxId, VecDeque<[u8; NONCE_BYTES]>>,
}

impl Nonces {
    fn remove(&mut self, nonce: &[u8; NONCE_BYTES]) -> Option<Entry> {
        let e = self.by_nonce.remove(nonce)?;
        if let Some(q) = self.by_mailbox.get_mut(&e.mailbox) {
            q.retain(|n| n != nonce);
            if q.is_empty() {
                self.by_mailbox.remove(&e.mailbox);
            }
        }
        Some(e)
    }

    fn sweep(&mut self, now: u64) {
        self.by_nonce.retain(|_, e| e.expires > now);
        let live = &self.by_nonce;
        self.by_mailbox.retain(|_, q| {
            q.retain(|n| live.contains_key(n));
            !q.is_empty()
        });
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(NONCE_TTL_SECS, TOKEN_TTL_SECS)
    }
}

/// Why no token was issued.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Too many tokens are outstanding (`429`).
    Full,
    /// The mailbox's sessions were revoked (its key rotated) after `epoch` was read (`401`).
    Revoked,
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
            shared: None,
        }
    }

    /// Keeps the sessions in `store` when it [keeps sessions](Store::keeps_sessions), so
    /// that a token or challenge from one node process is valid in the others.
    pub fn in_store(mut self, store: &Arc<dyn Store>) -> Self {
        if store.keeps_sessions() {
            self.shared = Some(store.clone());
        }
        self
    }

    /// [`challenge`](Self::challenge), in the store when it keeps the sessions.
    pub async fn challenge_any(
        &self,
        mailbox: MailboxId,
        now: u64,
    ) -> Result<Option<([u8; NONCE_BYTES], u64)>, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.challenge(mailbox, now));
        };
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let expires = now + self.nonce_ttl;
        store
            .put_nonce(secret_key(&nonce), mailbox, expires, MAX_NONCES_PER_MAILBOX)
            .await?;
        Ok(Some((nonce, expires)))
    }

    /// [`take_nonce`](Self::take_nonce), in the store when it keeps the sessions.
    pub async fn take_nonce_any(
        &self,
        nonce: &[u8; NONCE_BYTES],
        mailbox: MailboxId,
        now: u64,
    ) -> Result<Result<(), NonceError>, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.take_nonce(nonce, mailbox, now));
        };
        Ok(match store.take_nonce(secret_key(nonce)).await? {
            None => Err(NonceError::Unknown),
            Some((_, expires)) if expires <= now => Err(NonceError::Expired),
            Some((m, _)) if m != mailbox => Err(NonceError::OtherMailbox),
            Some(_) => Ok(()),
        })
    }

    /// [`epoch`](Self::epoch), in the store when it keeps the sessions.
    pub async fn epoch_any(&self, mailbox: MailboxId) -> Result<u64, StoreError> {
        match &self.shared {
            None => Ok(self.epoch(mailbox)),
            Some(store) => store.session_epoch(mailbox).await,
        }
    }

    /// [`issue_token`](Self::issue_token), in the store when it keeps the sessions.
    pub async fn issue_token_any(
        &self,
        mailbox: MailboxId,
        epoch: u64,
        now: u64,
    ) -> Result<Result<([u8; 32], u64), TokenError>, StoreError> {
        self.issue_device_token_any(mailbox, DeviceId::ACCOUNT, epoch, now)
            .await
    }

    /// [`issue_device_token`](Self::issue_device_token), in the store when it keeps the
    /// sessions (the stored token names the device, so every process knows it).
    pub async fn issue_device_token_any(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        epoch: u64,
        now: u64,
    ) -> Result<Result<([u8; 32], u64), TokenError>, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.issue_device_token(mailbox, device, epoch, now));
        };
        let token: [u8; 32] = rand::random();
        let expires = now + self.token_ttl;
        Ok(
            match store
                .put_token(secret_key(&token), mailbox, device, expires, epoch)
                .await?
            {
                true => Ok((token, expires)),
                false => Err(TokenError::Revoked),
            },
        )
    }

    /// [`token_mailbox`](Self::token_mailbox), in the store when it keeps the sessions.
    pub async fn token_mailbox_any(
        &self,
        token: &[u8; 32],
        now: u64,
    ) -> Result<Option<MailboxId>, StoreError> {
        Ok(self.token_device_any(token, now).await?.map(|(m, _)| m))
    }

    /// [`token_device`](Self::token_device), in the store when it keeps the sessions.
    pub async fn token_device_any(
        &self,
        token: &[u8; 32],
        now: u64,
    ) -> Result<Option<(MailboxId, DeviceId)>, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.token_device(token, now));
        };
        Ok(store
            .token(secret_key(token))
            .await?
            .filter(|t| t.expires > now)
            .map(|t| (t.mailbox, t.device)))
    }

    /// [`revoke_device`](Self::revoke_device), and the device's tokens in the store when
    /// it keeps the sessions: the device's tokens end in every node process.
    pub async fn revoke_device_any(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
    ) -> Result<(), StoreError> {
        self.revoke_device(mailbox, device);
        if let Some(store) = &self.shared {
            store.revoke_tokens(mailbox, device).await?;
        }
        Ok(())
    }

    /// [`sweep`](Self::sweep), and the store's expired sessions when it keeps them.
    pub async fn sweep_any(&self, now: u64) -> Result<(), StoreError> {
        self.sweep(now);
        if let Some(store) = &self.shared {
            store.sweep_sessions(now).await?;
        }
        Ok(())
    }

    /// A fresh nonce for `mailbox`; `None` when too many are outstanding.
    pub fn challenge(&self, mailbox: MailboxId, now: u64) -> Option<([u8; NONCE_BYTES], u64)> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let expires = now + self.nonce_ttl;
        let mut n = self.nonces.lock().ok()?;
        let oldest = n
            .by_mailbox
            .get(&mailbox)
            .filter(|q| q.len() >= MAX_NONCES_PER_MAILBOX)
            .and_then(|q| q.front().copied());
        if let Some(oldest) = oldest {
            n.remove(&oldest);
        }
        if n.by_nonce.len() >= MAX_PENDING {
            n.sweep(now);
            if n.by_nonce.len() >= MAX_PENDING {
                return None;
            }
        }
        n.by_nonce.insert(nonce, Entry { mailbox, expires });
        n.by_mailbox.entry(mailbox).or_default().push_back(nonce);
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
            .and_then(|mut n| n.remove(nonce))
            .ok_or(NonceError::Unknown)?;
        if e.expires <= now {
            return Err(NonceError::Expired);
        }
        if e.mailbox != mailbox {
            return Err(NonceError::OtherMailbox);
        }
        Ok(())
    }

    /// The current epoch of `mailbox`: read it before checking a sign-in's signature and
    /// pass it to [`issue_token`](Self::issue_token).
    pub fn epoch(&self, mailbox: MailboxId) -> u64 {
        self.tokens.lock().map(|t| t.epoch(&mailbox)).unwrap_or(0)
    }

    /// Issues a token for `mailbox` (its account key) if its sessions were not revoked
    /// since `epoch`.
    pub fn issue_token(
        &self,
        mailbox: MailboxId,
        epoch: u64,
        now: u64,
    ) -> Result<([u8; 32], u64), TokenError> {
        self.issue_device_token(mailbox, DeviceId::ACCOUNT, epoch, now)
    }

    /// Issues a token for `device` of `mailbox` if the mailbox's sessions were not revoked
    /// since `epoch`.
    pub fn issue_device_token(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        epoch: u64,
        now: u64,
    ) -> Result<([u8; 32], u64), TokenError> {
        let token: [u8; 32] = rand::random();
        let expires = now + self.token_ttl;
        let mut t = self.tokens.lock().map_err(|_| TokenError::Full)?;
        if t.epoch(&mailbox) != epoch {
            return Err(TokenError::Revoked);
        }
        if t.by_token.len() >= MAX_PENDING {
            t.by_token.retain(|_, e| e.expires > now);
            if t.by_token.len() >= MAX_PENDING {
                return Err(TokenError::Full);
            }
        }
        t.by_token.insert(
            token,
            TokenEntry {
                mailbox,
                device,
                expires,
            },
        );
        Ok((token, expires))
    }

    /// The mailbox a live token is for.
    pub fn token_mailbox(&self, token: &[u8; 32], now: u64) -> Option<MailboxId> {
        self.token_device(token, now).map(|(m, _)| m)
    }

    /// The mailbox and device a live token is for.
    pub fn token_device(&self, token: &[u8; 32], now: u64) -> Option<(MailboxId, DeviceId)> {
        let t = self.tokens.lock().ok()?;
        t.by_token
            .get(token)
            .filter(|e| e.expires > now)
            .map(|e| (e.mailbox, e.device))
    }

    /// Ends the sessions of one device of `mailbox` (removed, or replaced by the account's
    /// first device key).
    pub fn revoke_device(&self, mailbox: MailboxId, device: DeviceId) {
        if let Ok(mut t) = self.tokens.lock() {
            t.by_token
                .retain(|_, e| e.mailbox != mailbox || e.device != device);
        }
    }

    /// Ends every session of `mailbox` (its key was replaced): its tokens and outstanding
    /// nonces are forgotten, and a sign-in under way gets no token.
    pub fn revoke(&self, mailbox: MailboxId) {
        if let Ok(mut t) = self.tokens.lock() {
            *t.epochs.entry(mailbox).or_insert(0) += 1;
            t.by_token.retain(|_, e| e.mailbox != mailbox);
        }
        if let Ok(mut n) = self.nonces.lock()
            && let Some(q) = n.by_mailbox.remove(&mailbox)
        {
            for nonce in q {
                n.by_nonce.remove(&nonce);
            }
        }
    }

    /// Drops expired nonces and tokens.
    pub fn sweep(&self, now: u64) {
        if let Ok(mut n) = self.nonces.lock() {
            n.sweep(now);
        }
        if let Ok(mut t) = self.tokens.lock() {
            t.by_token.retain(|_, e| e.expires > now);
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
    fn a_challenge_flood_holds_a_few_entries_per_mailbox() {
        let s = Sessions::default();
        let (victim, other) = (MailboxId([1; 16]), MailboxId([2; 16]));
        let (theirs, _) = s.challenge(other, 100).unwrap();
        let issued: Vec<_> = (0..1000)
            .map(|_| s.challenge(victim, 100).unwrap().0)
            .collect();
        let n = s.nonces.lock().unwrap();
        assert_eq!(n.by_nonce.len(), MAX_NONCES_PER_MAILBOX + 1);
        drop(n);
        // The newest nonces of the flooded mailbox still work; the oldest were replaced.
        let newest = issued[issued.len() - 1];
        assert_eq!(s.take_nonce(&newest, victim, 101), Ok(()));
        assert_eq!(
            s.take_nonce(&issued[0], victim, 101),
            Err(NonceError::Unknown)
        );
        assert_eq!(s.take_nonce(&theirs, other, 101), Ok(()));
        s.sweep(1000);
        let n = s.nonces.lock().unwrap();
        assert!(n.by_nonce.is_empty() && n.by_mailbox.is_empty());
    }

    #[test]
    fn revoking_a_device_ends_its_tokens_only() {
        let s = Sessions::default();
        let m = MailboxId([1; 16]);
        let (d1, d2) = (DeviceId([1; 16]), DeviceId([2; 16]));
        let (t1, _) = s.issue_device_token(m, d1, 0, 100).unwrap();
        let (t2, _) = s.issue_device_token(m, d2, 0, 100).unwrap();
        let (ta, _) = s.issue_token(m, 0, 100).unwrap();
        assert_eq!(s.token_device(&t1, 101), Some((m, d1)));
        assert_eq!(s.token_device(&ta, 101), Some((m, DeviceId::ACCOUNT)));
        s.revoke_device(m, d1);
        assert_eq!(s.token_device(&t1, 101), None);
        assert_eq!(s.token_device(&t2, 101), Some((m, d2)));
        assert_eq!(s.token_mailbox(&ta, 101), Some(m));
    }

    #[test]
    fn lifetimes_are_configurable() {
        let s = Sessions::new(5, 7);
        let m = MailboxId([1; 16]);
        assert_eq!(s.challenge(m, 100).unwrap().1, 105);
        let (t, exp) = s.issue_token(m, 0, 100).unwrap();
        assert_eq!(exp, 107);
        assert_eq!(s.token_mailbox(&t, 106), Some(m));
        assert_eq!(s.token_mailbox(&t, 107), None);
        assert_eq!(Sessions::new(0, 0).issue_token(m, 0, 100).unwrap().1, 101);
    }

    #[test]
    fn tokens_name_their_mailbox_until_expiry() {
        let s = Sessions::default();
        let m = MailboxId([1; 16]);
        let (t, exp) = s.issue_token(m, 0, 1000).unwrap();
        assert_eq!(s.token_mailbox(&t, exp - 1), Some(m));
        assert_eq!(s.token_mailbox(&t, exp), None);
        assert_eq!(s.token_mailbox(&[0; 32], 1000), None);
        s.sweep(exp);
        assert_eq!(s.token_mailbox(&t, 1000), None);
    }

    #[test]
    fn revoking_ends_tokens_nonces_and_sign_ins_under_way_of_that_mailbox_only() {
        let s = Sessions::default();
        let (m, other) = (MailboxId([1; 16]), MailboxId([2; 16]));
        let (old, _) = s.issue_token(m, s.epoch(m), 100).unwrap();
        let (theirs, _) = s.issue_token(other, s.epoch(other), 100).unwrap();
        let (nonce, _) = s.challenge(m, 100).unwrap();
        let (their_nonce, _) = s.challenge(other, 100).unwrap();
        // A sign-in read the epoch, then the key rotated before its token was issued.
        let under_way = s.epoch(m);
        s.revoke(m);
        assert_eq!(s.token_mailbox(&old, 101), None);
        assert_eq!(s.take_nonce(&nonce, m, 101), Err(NonceError::Unknown));
        assert_eq!(s.issue_token(m, under_way, 101), Err(TokenError::Revoked));
        assert!(s.nonces.lock().unwrap().by_mailbox.get(&m).is_none());
        // A sign-in begun after the rotation works; the other mailbox is untouched.
        let (new, _) = s.issue_token(m, s.epoch(m), 101).unwrap();
        assert_eq!(s.token_mailbox(&new, 102), Some(m));
        assert_eq!(s.token_mailbox(&theirs, 102), Some(other));
        assert_eq!(s.take_nonce(&their_nonce, other, 102), Ok(()));
    }
}
