//! Storage behind a trait. The default is [`rocks::RocksStore`]: RocksDB with column
//! families, one writer thread that group-commits every write with a synced WAL (see
//! `spec/node.md` §Storage). [`postgres::PgStore`] keeps the same data in PostgreSQL, so
//! that several node processes can share it (`[storage] backend = "postgres"`).
//!
//! Every write future resolves only once the write is durable. The store makes the
//! decisions that need a consistent view (per-mailbox sequence numbers, envelope-id dedupe,
//! quotas, record sequence, invite use, who owns an address) inside the write, so callers
//! hold no locks.

pub mod backup;
pub mod migrate;
pub mod postgres;
pub mod reset;
pub mod rocks;
mod writer;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use sealpost_proto::{DeviceId, EnvelopeId, MailboxId, NodeUrl};
use serde::{Deserialize, Serialize};

pub use postgres::PgStore;
pub use rocks::RocksStore;

/// A boxed future, so that `Store` is object safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The write did not become durable (disk full, read-only, I/O error).
    #[error("storage not writable: {0}")]
    Unavailable(String),
    /// A read failed.
    #[error("storage read failed: {0}")]
    Read(String),
    /// Stored bytes do not decode: a bug or a damaged database.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("storage is shut down")]
    Closed,
}

/// A queue id: names a submitted hop in the sender node's outbound queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub [u8; 16]);

impl QueueId {
    pub fn random() -> Self {
        QueueId(rand::random())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub mailbox: MailboxId,
    /// Binary OpenPGP public certificate.
    pub cert: Vec<u8>,
    /// Unix seconds.
    pub created: u64,
}

/// A registration: the certificate and its fingerprint (the idempotency key).
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub fingerprint: Vec<u8>,
    pub cert: Vec<u8>,
    pub created: u64,
    /// Invite code to consume, for policy `invite`: a stored invite ([`StoredInvite`]) when
    /// one is stored under its hash (one of its uses, if it is usable at `created`);
    /// otherwise a code of the config's list, which works once.
    pub invite: Option<String>,
    /// The addresses the certificate names (lower-case): each becomes a claim of this
    /// account; one already claimed by another account refuses the registration.
    pub addresses: Vec<String>,
    /// Set for a key rotation: the account whose key this certificate replaces (the
    /// caller checked that the old key endorsed the new one).
    pub rotation: Option<Rotation>,
}

/// A key rotation: `mailbox` keeps its mailbox and claims, and changes its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub mailbox: MailboxId,
    /// The fingerprint the account has now; if it changed meanwhile, the rotation loses.
    pub old_fingerprint: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    Created(MailboxId),
    /// The certificate already has this mailbox; nothing was written.
    Existing(MailboxId),
    /// The invite code was used before.
    InviteUsed,
    /// The address belongs to another account; nothing was written.
    AddressTaken {
        address: String,
    },
    /// The account's certificate was replaced (key rotation); the mailbox stays.
    Rotated(MailboxId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    Stored,
    /// The stored record's sequence is not below the new one.
    Stale {
        stored: u64,
    },
    /// The address belongs to another account of this node; nothing was written.
    NotOwner,
}

/// Per-mailbox limits, checked inside the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: u64,
    pub max_envelopes: u64,
}

/// An envelope to store: its id and mailbox (read from `bytes`) and the encoded envelope.
#[derive(Clone, Debug)]
pub struct NewEnvelope {
    pub mailbox: MailboxId,
    pub id: EnvelopeId,
    pub bytes: Bytes,
    /// Unix seconds.
    pub received: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverOutcome {
    Stored {
        seq: u64,
    },
    /// This envelope id was stored for this mailbox before (perhaps acked since).
    Duplicate {
        seq: u64,
    },
    UnknownMailbox,
    QuotaExceeded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ListItem {
    pub seq: u64,
    pub id: EnvelopeId,
    pub size: u64,
}

/// A hop in the outbound queue (without its payload, which is stored beside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundItem {
    #[serde(with = "hex16")]
    pub id: [u8; 16],
    pub destination: NodeUrl,
    /// The submitting account: where a bounce goes.
    pub sender: MailboxId,
    /// Unix milliseconds.
    pub submitted_ms: u64,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_attempt_ms: u64,
    pub size: u64,
    /// Why the last attempt failed, for the bounce: for SMTP, the remote server's last reply.
    pub last_error: String,
    /// Legacy mail over SMTP; `None` for a hop to a node (over HTTP, or this node's own
    /// mailboxes). Absent in entries written before SMTP jobs shared the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpJob>,
    /// A copy of an envelope stored here, for another home of its mailbox (`forward`);
    /// `None` otherwise. Absent in entries written before homes forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardJob>,
}

/// A forward: the payload is the envelope as the other home stores it (its mailbox id
/// there), POSTed to its `/v1/forward`. `sender` of the item is the local mailbox, whose
/// account's deletion drops the job; it is never bounced, and it does not count in the
/// mailbox's outbound limits (its owner did not send it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardJob {
    /// The node key the user's record names for that home: the relay forwards only to a
    /// node that presents it.
    #[serde(with = "hex32")]
    pub node_key: [u8; 32],
    /// The envelope id, for logs.
    pub envelope: EnvelopeId,
}

/// An SMTP job: the payload is the finished (DKIM-signed) RFC 5322 message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpJob {
    /// Envelope sender (MAIL FROM).
    pub from: String,
    /// Recipients still to do (RCPT TO): delivered ones leave the list.
    pub rcpts: Vec<String>,
    /// The message's Message-ID (without angle brackets), for logs and bounces.
    pub message_id: String,
    /// Recipients refused for good, with the remote reply: named in the bounce.
    #[serde(default)]
    pub failed: Vec<(String, String)>,
}

/// What [`Store::take`] does with the envelope it takes out of a mailbox, in the same write.
#[derive(Clone, Debug)]
pub enum Handoff {
    /// Queue these outbound jobs, each with its payload.
    Enqueue(Vec<(OutboundItem, Bytes)>),
    /// Store this bounce (to the letter's sender; no quota).
    Bounce(NewEnvelope),
    /// Nothing: the letter is dropped.
    Drop,
}

impl OutboundItem {
    pub fn queue_id(&self) -> QueueId {
        QueueId(self.id)
    }

    /// Whether the hop counts in its sender's outbound limits: everything but forwards.
    pub fn counts_for_sender(&self) -> bool {
        self.forward.is_none()
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// A peer's key as pinned on first contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPin {
    pub node_key: [u8; 32],
    pub pinned_at: u64,
}

/// A device registered under an account (`spec/api.md` §Devices): it signs in with its own
/// Ed25519 key and has its own cursor. An account without devices has one implicit device,
/// [`DeviceId::ACCOUNT`] (its OpenPGP key signing in); the first registered device takes
/// its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `DeviceId::of_key(&key)`.
    pub id: DeviceId,
    /// Ed25519 public key.
    pub key: [u8; 32],
    /// Chosen by the user, at most `sealpost_proto::device::MAX_DEVICE_NAME` bytes.
    pub name: String,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddDeviceOutcome {
    Added,
    /// The device was registered before (same id); nothing was written.
    Existing,
    /// The account has `max` devices already; nothing was written.
    TooMany,
    UnknownMailbox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveDeviceOutcome {
    /// The device, its acknowledgements and its claim on envelopes are gone; `released`
    /// envelopes that only it still owed were deleted.
    Removed { released: u64 },
    /// No such device in this account.
    Unknown,
    /// It is the account's last device: an account keeps at least one.
    Last,
}

/// What a device's acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAck {
    /// Every device has acknowledged the envelope now: it was deleted.
    Deleted,
    /// Recorded; other devices still owe an acknowledgement.
    Recorded,
    /// No envelope at that sequence, or this device acknowledged it before.
    Missing,
    /// The device is not (or no longer) one of the account's.
    UnknownDevice,
}

/// A sign-in token kept in the store (`Store::keeps_sessions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub mailbox: MailboxId,
    /// The device that signed in ([`DeviceId::ACCOUNT`]: the account key).
    pub device: DeviceId,
    /// Unix seconds.
    pub expires: u64,
}

/// What the operator set on an account (`sealpost-node admin users suspend`, `admin quota
/// set`): kept with the mailbox's counters, so that the quota is decided in the delivery's
/// own write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountSettings {
    /// The account may not sign in (deliveries to it are still stored: held).
    pub suspended: bool,
    /// Replaces `[limits] mailbox_quota` (bytes) for this account.
    pub quota_bytes: Option<u64>,
}

/// An account as `admin users list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountUsage {
    pub mailbox: MailboxId,
    /// Unix seconds.
    pub created: u64,
    /// Bytes and envelopes stored in the mailbox now.
    pub bytes: u64,
    pub envelopes: u64,
    /// The addresses the account owns, sorted.
    pub addresses: Vec<String>,
    pub settings: AccountSettings,
}

/// What [`Store::delete_account`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletedAccount {
    pub envelopes: u64,
    pub addresses: u64,
    pub devices: u64,
    /// Outbound hops the account had submitted, dropped without a bounce.
    pub queued: u64,
}

impl Quota {
    /// No limit (bounces): an account's quota override does not apply to it.
    pub const UNLIMITED: Quota = Quota {
        max_bytes: u64::MAX,
        max_envelopes: u64::MAX,
    };

    /// This quota for an account with `settings`: its override replaces the byte limit,
    /// except of an unlimited quota.
    pub fn for_account(self, settings: &AccountSettings) -> Quota {
        match settings.quota_bytes {
            Some(b) if self != Quota::UNLIMITED => Quota {
                max_bytes: b,
                ..self
            },
            _ => self,
        }
    }
}

/// An invite made with `sealpost-node admin invites create`, kept under sha256 of its
/// code (the code itself is never stored). Registration with the code uses it up one use
/// at a time, in the registration's own write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredInvite {
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds from which it no longer works; `None`: never expires.
    pub expires: Option<u64>,
    /// Registrations it allows in all.
    pub uses: u32,
    /// Registrations it made.
    pub used: u32,
    /// Revoked by the operator: kept, so that it keeps refusing.
    pub revoked: bool,
}

/// What an invite code is stored under: sha256 of the code.
pub fn invite_hash(code: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(code.as_bytes()).into()
}

impl StoredInvite {
    /// Whether a registration at `now` (Unix seconds) may use it.
    pub fn usable(&self, now: u64) -> bool {
        !self.revoked && self.used < self.uses && self.expires.is_none_or(|e| now < e)
    }
}

/// Counters of the write path, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    pub batches: u64,
    pub ops: u64,
    pub failed_batches: u64,
    pub batch_bytes: u64,
}

/// A token bucket shared by the node processes of one store ([`Store::take_tokens`]): one
/// token every `interval_us` microseconds, at most `burst` held (a new bucket is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub interval_us: u64,
    pub burst: u64,
}

/// What [`Store::take_tokens`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Tokens taken, 0 to the number asked for.
    pub granted: u64,
    /// The bucket's theoretical arrival time after the take (Unix microseconds): when it
    /// is full again.
    pub tat: u64,
}

impl Bucket {
    /// The bucket as GCRA (the generic cell rate algorithm) keeps it: a bucket whose
    /// theoretical arrival time is `tat` holds `burst − max(0, tat − now) / interval`
    /// tokens. Takes up to `want` of them at `now_us` (as many as there are, whole ones).
    /// The one rule both backends apply (PostgreSQL in SQL, the same arithmetic).
    pub fn take(&self, tat: Option<u64>, now_us: u64, want: u64) -> Tokens {
        let interval = self.interval_us.max(1);
        let start = tat.unwrap_or(now_us).max(now_us);
        let limit = now_us.saturating_add(self.burst.saturating_mul(interval));
        let granted = (limit.saturating_sub(start) / interval).min(want);
        Tokens {
            granted,
            tat: start.saturating_add(granted.saturating_mul(interval)),
        }
    }

    /// Microseconds from `now_us` until a bucket at `tat` holds one whole token again.
    pub fn wait_us(&self, tat: u64, now_us: u64) -> u64 {
        let full_but_one = self
            .burst
            .saturating_sub(1)
            .saturating_mul(self.interval_us);
        tat.saturating_sub(now_us)
            .saturating_sub(full_but_one)
            .max(1)
    }
}

fn no_limits<T: Send + 'static>() -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Err(StoreError::Unavailable(
        "this store keeps no rate limits".into(),
    ))))
}

fn no_sessions<T: Send + 'static>() -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Err(StoreError::Unavailable(
        "this store keeps no sessions".into(),
    ))))
}

pub trait Store: Send + Sync {
    // --- writes: resolved once durable ---
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome>;
    /// Stores the record of `address` for the account `mailbox`, which must own the
    /// address (an address nobody claims yet becomes `mailbox`'s).
    fn put_record(
        &self,
        address: String,
        mailbox: MailboxId,
        sequence: u64,
        signed: Vec<u8>,
    ) -> StoreFuture<'_, RecordOutcome>;
    /// Operator reset: forgets who owns `address` and its record, so that it can be
    /// registered anew. Returns whether there was a claim or a record.
    fn reset_address(&self, address: String) -> StoreFuture<'_, bool>;
    fn deliver(&self, envelope: NewEnvelope, quota: Quota) -> StoreFuture<'_, DeliverOutcome>;
    /// [`deliver`](Store::deliver), and when the envelope is stored (not a duplicate, not
    /// refused) queue `forwards` in the same write: a stored envelope and its copies for
    /// the mailbox's other homes are durable together, a duplicate queues none.
    fn deliver_forwarding(
        &self,
        envelope: NewEnvelope,
        quota: Quota,
        forwards: Vec<(OutboundItem, Bytes)>,
    ) -> StoreFuture<'_, DeliverOutcome>;
    /// Deletes an envelope whatever its devices acknowledged (an internal mailbox); `false`
    /// when there was none at `seq`.
    fn ack(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, bool>;
    fn enqueue(&self, item: OutboundItem, payload: Bytes) -> StoreFuture<'_, ()>;
    fn reschedule(&self, item: OutboundItem) -> StoreFuture<'_, ()>;
    /// Removes a hop from the queue; with `bounce`, stores it in the same write (no quota).
    fn finish(&self, id: QueueId, bounce: Option<NewEnvelope>) -> StoreFuture<'_, ()>;
    /// Takes the envelope at `seq` out of `mailbox` and, in the same write, does `then` with
    /// it (queues an outbound job, stores a bounce, or nothing). `false`, and nothing
    /// written, when there was no envelope at `seq` (taken before): a letter handed on is
    /// handed on once, also when its taker crashes and tries again.
    fn take(&self, mailbox: MailboxId, seq: u64, then: Handoff) -> StoreFuture<'_, bool>;
    fn pin_peer(&self, url: NodeUrl, pin: PeerPin) -> StoreFuture<'_, ()>;
    /// Registers a device under `mailbox`, unless it has `max` devices already.
    fn add_device(
        &self,
        mailbox: MailboxId,
        device: Device,
        max: usize,
    ) -> StoreFuture<'_, AddDeviceOutcome>;
    /// Removes a device: its acknowledgements go, and envelopes that every remaining device
    /// has acknowledged are deleted in the same write.
    fn remove_device(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
    ) -> StoreFuture<'_, RemoveDeviceOutcome>;
    /// Records `device`'s acknowledgement of the envelope at `seq`; the envelope is
    /// deleted once every device of the account has acknowledged it. Without registered
    /// devices, [`DeviceId::ACCOUNT`] is the only device (and its ack deletes at once).
    fn ack_device(
        &self,
        mailbox: MailboxId,
        seq: u64,
        device: DeviceId,
    ) -> StoreFuture<'_, DeviceAck>;
    /// [`ack_device`](Store::ack_device) of each of `seqs`, in order, in one write: each
    /// sees the ones before it (a sequence number twice is `Missing` the second time). The
    /// answer has one outcome per sequence number.
    fn ack_devices(
        &self,
        mailbox: MailboxId,
        seqs: Vec<u64>,
        device: DeviceId,
    ) -> StoreFuture<'_, Vec<DeviceAck>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs {
                out.push(self.ack_device(mailbox, seq, device).await?);
            }
            Ok(out)
        })
    }
    /// Deletes every envelope received before `received_before` (Unix seconds), whether
    /// acknowledged or not (the retention period); returns how many.
    fn expire(&self, received_before: u64) -> StoreFuture<'_, u64>;

    /// Sets what the operator set on `mailbox`; `false`, and nothing written, when there is
    /// no such account. A store that keeps sessions drops the mailbox's sessions and
    /// advances its epoch in the same write when the account becomes suspended.
    fn set_account_settings(
        &self,
        mailbox: MailboxId,
        settings: AccountSettings,
    ) -> StoreFuture<'_, bool>;
    /// Deletes the account and everything of it in one write: its certificate and
    /// fingerprint, address claims and records, devices, envelopes with their
    /// acknowledgements and dedupe entries, sessions, and the outbound hops it submitted.
    /// `None` when there is no such account. A spent invite stays spent.
    fn delete_account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<DeletedAccount>>;

    /// Stores a new invite under `hash` (sha256 of its code); `false`, and nothing
    /// written, when one is stored under it already.
    fn put_invite(&self, hash: [u8; 32], invite: StoredInvite) -> StoreFuture<'_, bool>;
    /// Marks the invite revoked; `false` when there is none, or it was revoked before.
    fn revoke_invite(&self, hash: [u8; 32]) -> StoreFuture<'_, bool>;

    // --- reads ---
    /// Every stored invite, by hash.
    fn invites(&self) -> StoreFuture<'_, Vec<([u8; 32], StoredInvite)>>;
    fn invite(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<StoredInvite>>;
    fn account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<Account>>;
    /// Up to `limit` accounts with their usage, by mailbox id.
    fn accounts(&self, limit: usize) -> StoreFuture<'_, Vec<AccountUsage>>;
    /// What the operator set on an account; `None` when there is no such account.
    fn account_settings(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountSettings>>;
    /// One account with its usage.
    fn account_usage(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountUsage>>;
    /// The mailbox registered for a certificate fingerprint.
    fn mailbox_of(&self, fingerprint: Vec<u8>) -> StoreFuture<'_, Option<MailboxId>>;
    /// The account that owns `address` on this node.
    fn owner_of(&self, address: String) -> StoreFuture<'_, Option<MailboxId>>;
    /// The stored signed record (encoded `SignedRecord`).
    fn record(&self, address: String) -> StoreFuture<'_, Option<Bytes>>;
    fn list(&self, mailbox: MailboxId, after: u64, limit: usize) -> StoreFuture<'_, Vec<ListItem>>;
    fn envelope(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, Option<Bytes>>;
    /// The envelopes at `seqs` of `mailbox` for a batched fetch, in that order: each with
    /// its bytes, or `None` where there is none. The answer is a prefix of `seqs`: it stops
    /// before the envelopes' bytes together would pass `max_bytes` (the first is answered
    /// whatever its size).
    fn envelopes(
        &self,
        mailbox: MailboxId,
        seqs: Vec<u64>,
        max_bytes: usize,
    ) -> StoreFuture<'_, Vec<(u64, Option<Bytes>)>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(seqs.len());
            let mut total = 0usize;
            for seq in seqs {
                let bytes = self.envelope(mailbox, seq).await?;
                let len = bytes.as_ref().map_or(0, Bytes::len);
                if !out.is_empty() && total.saturating_add(len) > max_bytes {
                    break;
                }
                total = total.saturating_add(len);
                out.push((seq, bytes));
            }
            Ok(out)
        })
    }
    /// The registered devices of `mailbox`, by id (empty: only the account key).
    fn devices(&self, mailbox: MailboxId) -> StoreFuture<'_, Vec<Device>>;
    /// [`list`](Store::list) for one device: the envelopes after `after` that `device` has
    /// not acknowledged.
    fn list_for(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<ListItem>>;
    /// Every hop in the outbound queue, whoever works it.
    fn outbound(&self) -> StoreFuture<'_, Vec<OutboundItem>>;
    /// Claims up to `limit` hops of the queue that no live store handle holds (never
    /// claimed, or their holder's lease ran out) for this handle, and returns them. Several
    /// node processes on one database thus work disjoint parts of the queue; a hop of a
    /// process that died is claimed by another once its lease has run out. A hop this
    /// handle enqueued is its own from the start. One process (RocksDB) holds every hop:
    /// each is returned once.
    fn claim_outbound(&self, limit: usize) -> StoreFuture<'_, Vec<OutboundItem>>;
    /// Extends the lease of every hop this handle holds (call it well within the lease);
    /// returns how many it holds.
    fn renew_outbound(&self) -> StoreFuture<'_, u64>;
    fn outbound_payload(&self, id: QueueId) -> StoreFuture<'_, Option<Bytes>>;
    fn peer_pins(&self) -> StoreFuture<'_, Vec<(NodeUrl, PeerPin)>>;

    /// Forgets dedupe entries of envelopes received before `received_before` (Unix secs)
    /// and no longer in their mailbox; returns how many. Entries of envelopes still stored
    /// are kept.
    fn prune_dedupe(&self, received_before: u64) -> StoreFuture<'_, u64>;

    // --- sessions, for a store that several node processes share (`keeps_sessions`);
    // otherwise the node keeps them in memory (`sessions.rs`) and these are never called.
    // Keys are sha256 of the nonce or token, so the database holds no usable credential.

    /// Whether sign-in challenges and tokens are kept here.
    fn keeps_sessions(&self) -> bool {
        false
    }
    /// Stores a challenge nonce of `mailbox`; beyond `per_mailbox` outstanding ones, the
    /// oldest go.
    fn put_nonce(
        &self,
        _key: [u8; 32],
        _mailbox: MailboxId,
        _expires: u64,
        _per_mailbox: usize,
    ) -> StoreFuture<'_, ()> {
        no_sessions()
    }
    /// Removes a nonce and returns its mailbox and expiry: only one caller gets it.
    fn take_nonce(&self, _key: [u8; 32]) -> StoreFuture<'_, Option<(MailboxId, u64)>> {
        no_sessions()
    }
    /// The mailbox's session epoch, advanced by every key rotation (in the rotation's write).
    fn session_epoch(&self, _mailbox: MailboxId) -> StoreFuture<'_, u64> {
        no_sessions()
    }
    /// Stores a token of `device` of `mailbox` ([`DeviceId::ACCOUNT`]: the account key) if
    /// the mailbox's epoch is still `epoch`; `false` otherwise.
    fn put_token(
        &self,
        _key: [u8; 32],
        _mailbox: MailboxId,
        _device: DeviceId,
        _expires: u64,
        _epoch: u64,
    ) -> StoreFuture<'_, bool> {
        no_sessions()
    }
    /// The mailbox, device and expiry of a token.
    fn token(&self, _key: [u8; 32]) -> StoreFuture<'_, Option<StoredToken>> {
        no_sessions()
    }
    /// Forgets every token of `device` of `mailbox` (the device was removed, or replaced
    /// the account key); returns how many.
    fn revoke_tokens(&self, _mailbox: MailboxId, _device: DeviceId) -> StoreFuture<'_, u64> {
        no_sessions()
    }
    /// Forgets nonces and tokens that expired before `now`; returns how many.
    fn sweep_sessions(&self, _now: u64) -> StoreFuture<'_, u64> {
        no_sessions()
    }

    // --- rate limits, for a store that several node processes share (`keeps_limits`);
    // otherwise the node counts them in memory (`ratelimit.rs`) and never calls these.
    // Keys are sha256 of the limit's name and the counted key (no address in the clear).

    /// Whether the node's rate limits are counted here.
    fn keeps_limits(&self) -> bool {
        false
    }
    /// Takes up to `want` tokens of the bucket `key` at `now_us` (Unix microseconds), by
    /// [`Bucket::take`], atomically: concurrent takes, from any process, are applied one
    /// after the other.
    fn take_tokens(
        &self,
        _key: [u8; 32],
        _bucket: Bucket,
        _now_us: u64,
        _want: u64,
    ) -> StoreFuture<'_, Tokens> {
        no_limits()
    }
    /// [`enqueue`](Store::enqueue), unless the sender would then have more than
    /// `max_hops` hops or `max_bytes` bytes in the queue (0: no limit); decided inside the
    /// write, so the limit holds for every process sharing the store. `false`: over it,
    /// nothing written. Hops are counted from enqueue to `finish`.
    fn enqueue_within(
        &self,
        _item: OutboundItem,
        _payload: Bytes,
        _max_hops: u64,
        _max_bytes: u64,
    ) -> StoreFuture<'_, bool> {
        no_limits()
    }
    /// Forgets buckets that are full again at `now_us` (they behave like new ones);
    /// returns how many.
    fn sweep_limits(&self, _now_us: u64) -> StoreFuture<'_, u64> {
        no_limits()
    }

    fn stats(&self) -> StoreStats;
    /// Stops accepting writes, finishes those already queued, and waits for the writer.
    fn close(&self) -> StoreFuture<'_, ()>;
}
