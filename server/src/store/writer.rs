//! The single writer: drains a channel of operations, applies as many as are waiting to one
//! `WriteBatch`, writes it with a synced WAL, then answers each operation. Concurrent
//! requests thus share one fsync (group commit). Being the only writer, it can assign
//! per-mailbox sequence numbers, deduplicate envelope ids and enforce quotas without locks.
//!
//! Decisions inside a batch see the batch's own earlier operations (an overlay), and the
//! in-memory state is updated only once the batch is durable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rocksdb::{DB, WriteBatch, WriteOptions};
use rocksdb::{Direction, IteratorMode};
use sealpost_proto::{DeviceId, EnvelopeId, MailboxId, NodeUrl};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::rocks::{
    CF_ACCOUNTS, CF_ACKS, CF_DEDUPE, CF_ENVELOPES, CF_INDEX, CF_META, CF_OUTBOUND, CF_PEERS,
    CF_RECORDS, SharedStats, cf, decode_invite, encode_device, encode_invite, key, mailbox_value,
    read_devices, u64_at,
};
use super::*;

/// Most operations in one batch.
const MAX_BATCH_OPS: usize = 4096;
/// Stop adding to a batch above this many bytes.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Mailbox states kept in memory; beyond, the cache starts over (it mirrors durable state,
/// so forgetting costs only a read).
const MAX_CACHED_STATES: usize = 100_000;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Register {
        account: NewAccount,
        reply: Reply<RegisterOutcome>,
    },
    PutRecord {
        address: String,
        mailbox: MailboxId,
        sequence: u64,
        signed: Vec<u8>,
        reply: Reply<RecordOutcome>,
    },
    ResetAddress {
        address: String,
        reply: Reply<bool>,
    },
    Deliver {
        envelope: NewEnvelope,
        quota: Quota,
        /// Queued with the envelope when it is stored ([`Store::deliver_forwarding`]).
        forwards: Vec<(OutboundItem, Bytes)>,
        reply: Reply<DeliverOutcome>,
    },
    Ack {
        mailbox: MailboxId,
        seq: u64,
        reply: Reply<bool>,
    },
    Enqueue {
        item: OutboundItem,
        payload: Bytes,
        reply: Reply<()>,
    },
    Reschedule {
        item: OutboundItem,
        reply: Reply<()>,
    },
    Finish {
        id: QueueId,
        bounce: Option<NewEnvelope>,
        reply: Reply<()>,
    },
    Take {
        mailbox: MailboxId,
        seq: u64,
        then: Handoff,
        reply: Reply<bool>,
    },
    ForgetDedupe {
        keys: Vec<[u8; 32]>,
        reply: Reply<()>,
    },
    PinPeer {
        url: NodeUrl,
        pin: PeerPin,
        reply: Reply<()>,
    },
    AddDevice {
        mailbox: MailboxId,
        device: Device,
        max: usize,
        reply: Reply<AddDeviceOutcome>,
    },
    RemoveDevice {
        mailbox: MailboxId,
        device: DeviceId,
        reply: Reply<RemoveDeviceOutcome>,
    },
    AckDevice {
        mailbox: MailboxId,
        seq: u64,
        device: DeviceId,
        reply: Reply<DeviceAck>,
    },
    AckDevices {
        mailbox: MailboxId,
        seqs: Vec<u64>,
        device: DeviceId,
        reply: Reply<Vec<DeviceAck>>,
    },
    Expire {
        items: Vec<(MailboxId, u64)>,
        reply: Reply<u64>,
    },
    /// Creates an invite, or (`revoke`) marks the stored one revoked.
    PutInvite {
        hash: [u8; 32],
        invite: StoredInvite,
        revoke: bool,
        reply: Reply<bool>,
    },
    SetSettings {
        mailbox: MailboxId,
        settings: AccountSettings,
        reply: Reply<bool>,
    },
    DeleteAccount {
        mailbox: MailboxId,
        reply: Reply<Option<DeletedAccount>>,
    },
}

/// A mailbox's counters and its operator settings, at `s` ‖ mailbox: 24 bytes (next seq,
/// bytes, count) while the settings are the default, else 33 (then a flags byte: 1
/// suspended, 2 quota set; and the quota in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MailboxState {
    pub next_seq: u64,
    pub bytes: u64,
    pub count: u64,
    pub settings: AccountSettings,
}

impl MailboxState {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(33);
        v.extend_from_slice(&self.next_seq.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v.extend_from_slice(&self.count.to_be_bytes());
        if self.settings != AccountSettings::default() {
            let flags = u8::from(self.settings.suspended)
                | (u8::from(self.settings.quota_bytes.is_some()) << 1);
            v.push(flags);
            v.extend_from_slice(&self.settings.quota_bytes.unwrap_or(0).to_be_bytes());
        }
        v
    }
    pub fn decode(v: &[u8]) -> Option<Self> {
        let settings = match v.len() {
            24 => AccountSettings::default(),
            33 => AccountSettings {
                suspended: v[24] & 1 != 0,
                quota_bytes: (v[24] & 2 != 0).then(|| u64_at(v, 25)).flatten(),
            },
            _ => return None,
        };
        Some(MailboxState {
            next_seq: u64_at(v, 0)?,
            bytes: u64_at(v, 8)?,
            count: u64_at(v, 16)?,
            settings,
        })
    }
}

type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

#[derive(Default)]
struct Batch {
    wb: WriteBatch,
    ops: usize,
    states: HashMap<MailboxId, MailboxState>,
    dedupe: HashMap<(MailboxId, EnvelopeId), u64>,
    index: HashMap<(MailboxId, u64), u64>,
    acked: HashSet<(MailboxId, u64)>,
    /// Fingerprint index entries written (`Some`) or deleted (`None`) by this batch.
    fingerprints: HashMap<Vec<u8>, Option<MailboxId>>,
    /// Address claims written (`Some`) or deleted (`None`) by this batch.
    claims: HashMap<String, Option<MailboxId>>,
    invites: HashSet<[u8; 32]>,
    /// Stored invites written by this batch.
    stored_invites: HashMap<[u8; 32], StoredInvite>,
    /// Record sequences written (`Some`) or deleted (`None`) by this batch.
    records: HashMap<String, Option<u64>>,
    /// Devices registered (`true`) or removed (`false`) by this batch.
    devices: HashMap<(MailboxId, DeviceId), bool>,
    /// Device acknowledgements written (`true`) or deleted (`false`) by this batch.
    device_acks: HashMap<(MailboxId, u64, DeviceId), bool>,
    /// Accounts deleted by this batch.
    deleted: HashSet<MailboxId>,
    answers: Vec<Answer>,
}

impl Batch {
    fn answer<T: Send + 'static>(&mut self, reply: Reply<T>, outcome: T) {
        self.answers.push(Box::new(move |err| {
            let _ = reply.send(match err {
                None => Ok(outcome),
                Some(e) => Err(e.clone()),
            });
        }));
    }
}

pub(super) struct Writer {
    db: Arc<DB>,
    /// Committed per-mailbox state, loaded on first use.
    states: HashMap<MailboxId, MailboxState>,
    stats: Arc<SharedStats>,
}

fn read_err(e: rocksdb::Error) -> StoreError {
    StoreError::Read(e.to_string())
}

impl Writer {
    pub(super) fn new(db: Arc<DB>, stats: Arc<SharedStats>) -> Self {
        Writer {
            db,
            states: HashMap::new(),
            stats,
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Batch::default();
            self.apply(&mut batch, first);
            while batch.ops < MAX_BATCH_OPS && batch.wb.size_in_bytes() < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => self.apply(&mut batch, op),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("store writer: channel closed, all writes committed");
    }

    fn commit(&mut self, batch: Batch) {
        let Batch {
            wb,
            ops,
            states,
            deleted,
            answers,
            ..
        } = batch;
        let bytes = wb.size_in_bytes() as u64;
        let result = if wb.is_empty() {
            Ok(())
        } else {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db
                .write_opt(wb, &wo)
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        match &result {
            Ok(()) => {
                if self.states.len() + states.len() > MAX_CACHED_STATES {
                    self.states.clear();
                }
                self.states.extend(states);
                for m in &deleted {
                    self.states.remove(m);
                }
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.ops.fetch_add(ops as u64, Ordering::Relaxed);
                self.stats.batch_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, ops, "durable write failed; answering 503");
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        let err = result.err();
        for a in answers {
            a(err.as_ref());
        }
    }

    fn apply(&mut self, b: &mut Batch, op: Op) {
        b.ops += 1;
        match op {
            Op::Register { account, reply } => match self.register(b, account) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::PutRecord {
                address,
                mailbox,
                sequence,
                signed,
                reply,
            } => match self.put_record(b, address, mailbox, sequence, &signed) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::ResetAddress { address, reply } => match self.reset_address(b, address) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::Deliver {
                envelope,
                quota,
                forwards,
                reply,
            } => match self.deliver(b, &envelope, quota) {
                Ok(o) => {
                    if matches!(o, DeliverOutcome::Stored { .. }) {
                        for (item, payload) in &forwards {
                            self.put_queued(b, item, payload);
                        }
                    }
                    b.answer(reply, o)
                }
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::Ack {
                mailbox,
                seq,
                reply,
            } => match self.ack(b, mailbox, seq) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::Enqueue {
                item,
                payload,
                reply,
            } => {
                self.put_queued(b, &item, &payload);
                b.answer(reply, ());
            }
            Op::PutInvite {
                hash,
                invite,
                revoke,
                reply,
            } => match self.stored_invite(b, &hash) {
                Err(e) => drop(reply.send(Err(e))),
                Ok(old) => {
                    let new = match (old, revoke) {
                        (None, false) => Some(invite),
                        (Some(o), true) if !o.revoked => Some(StoredInvite { revoked: true, ..o }),
                        _ => None,
                    };
                    if let Some(n) = new {
                        self.set_stored_invite(b, hash, n);
                    }
                    b.answer(reply, new.is_some());
                }
            },
            Op::SetSettings {
                mailbox,
                settings,
                reply,
            } => match self.state(b, mailbox) {
                Ok(Some(state)) => {
                    self.set_state(b, mailbox, MailboxState { settings, ..state });
                    b.answer(reply, true);
                }
                Ok(None) => b.answer(reply, false),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::DeleteAccount { mailbox, reply } => match self.delete_account(b, mailbox) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::Reschedule { item, reply } => {
                // A hop dropped meanwhile (its account deleted) is not brought back.
                match self.get(CF_OUTBOUND, &key::prefixed(key::QUEUE_META, &item.id)) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        b.answer(reply, ());
                        return;
                    }
                    Err(e) => {
                        drop(reply.send(Err(e)));
                        return;
                    }
                }
                let meta = serde_json::to_vec(&item).expect("invariant: outbound item serialises");
                b.wb.put_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_META, &item.id),
                    meta,
                );
                b.answer(reply, ());
            }
            Op::Finish { id, bounce, reply } => {
                b.wb.delete_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_META, &id.0),
                );
                b.wb.delete_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_PAYLOAD, &id.0),
                );
                if let Some(env) = bounce
                    && let Err(e) = self.store_bounce(b, &env)
                {
                    drop(reply.send(Err(e)));
                    return;
                }
                b.answer(reply, ());
            }
            Op::Take {
                mailbox,
                seq,
                then,
                reply,
            } => {
                // Only a letter still there is handed on: taken twice, it is queued once.
                let taken = match self.ack(b, mailbox, seq) {
                    Ok(t) => t,
                    Err(e) => {
                        drop(reply.send(Err(e)));
                        return;
                    }
                };
                if taken {
                    match then {
                        Handoff::Enqueue(jobs) => {
                            for (item, payload) in &jobs {
                                self.put_queued(b, item, payload)
                            }
                        }
                        Handoff::Bounce(env) => {
                            if let Err(e) = self.store_bounce(b, &env) {
                                drop(reply.send(Err(e)));
                                return;
                            }
                        }
                        Handoff::Drop => {}
                    }
                }
                b.answer(reply, taken);
            }
            Op::ForgetDedupe { keys, reply } => {
                for k in keys {
                    b.wb.delete_cf(cf(&self.db, CF_DEDUPE), k);
                }
                b.answer(reply, ());
            }
            Op::AddDevice {
                mailbox,
                device,
                max,
                reply,
            } => match self.add_device(b, mailbox, &device, max) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::RemoveDevice {
                mailbox,
                device,
                reply,
            } => match self.remove_device(b, mailbox, device) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::AckDevice {
                mailbox,
                seq,
                device,
                reply,
            } => match self.ack_device(b, mailbox, seq, device) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::AckDevices {
                mailbox,
                seqs,
                device,
                reply,
            } => {
                let mut out = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    match self.ack_device(b, mailbox, seq, device) {
                        Ok(o) => out.push(o),
                        Err(e) => {
                            drop(reply.send(Err(e)));
                            return;
                        }
                    }
                }
                b.answer(reply, out);
            }
            Op::Expire { items, reply } => {
                let mut n = 0;
                for (mailbox, seq) in items {
                    match self.ack(b, mailbox, seq) {
                        Ok(true) => n += 1,
                        Ok(false) => {}
                        Err(e) => {
                            drop(reply.send(Err(e)));
                            return;
                        }
                    }
                }
                b.answer(reply, n);
            }
            Op::PinPeer { url, pin, reply } => {
                let mut v = Vec::with_capacity(40);
                v.extend_from_slice(&pin.node_key);
                v.extend_from_slice(&pin.pinned_at.to_be_bytes());
                b.wb.put_cf(cf(&self.db, CF_PEERS), url.as_str().as_bytes(), v);
                b.answer(reply, ());
            }
        }
    }

    /// Writes a queue entry: its metadata and its payload.
    fn put_queued(&mut self, b: &mut Batch, item: &OutboundItem, payload: &[u8]) {
        let meta = serde_json::to_vec(item).expect("invariant: outbound item serialises");
        b.wb.put_cf(
            cf(&self.db, CF_OUTBOUND),
            key::prefixed(key::QUEUE_META, &item.id),
            meta,
        );
        b.wb.put_cf(
            cf(&self.db, CF_OUTBOUND),
            key::prefixed(key::QUEUE_PAYLOAD, &item.id),
            payload,
        );
    }

    /// Stores a bounce in its mailbox, beyond the quota (a bounce is never refused).
    fn store_bounce(&mut self, b: &mut Batch, env: &NewEnvelope) -> Result<(), StoreError> {
        let unlimited = Quota {
            max_bytes: u64::MAX,
            max_envelopes: u64::MAX,
        };
        match self.deliver(b, env, unlimited)? {
            DeliverOutcome::Stored { .. } => {}
            other => tracing::warn!(outcome = ?other, "bounce not stored"),
        }
        Ok(())
    }

    fn get(&self, cf_name: &str, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(cf(&self.db, cf_name), k).map_err(read_err)
    }

    /// The mailbox's state as this batch sees it; `None` if there is no such account.
    fn state(&mut self, b: &Batch, mailbox: MailboxId) -> Result<Option<MailboxState>, StoreError> {
        if b.deleted.contains(&mailbox) {
            return Ok(None);
        }
        if let Some(s) = b.states.get(&mailbox) {
            return Ok(Some(*s));
        }
        if let Some(s) = self.states.get(&mailbox) {
            return Ok(Some(*s));
        }
        let Some(v) = self.get(CF_ACCOUNTS, &key::prefixed(key::STATE, mailbox.as_bytes()))? else {
            return Ok(None);
        };
        let s =
            MailboxState::decode(&v).ok_or_else(|| StoreError::Corrupt("mailbox state".into()))?;
        self.states.insert(mailbox, s);
        Ok(Some(s))
    }

    fn set_state(&self, b: &mut Batch, mailbox: MailboxId, s: MailboxState) {
        b.wb.put_cf(
            cf(&self.db, CF_ACCOUNTS),
            key::prefixed(key::STATE, mailbox.as_bytes()),
            s.encode(),
        );
        b.states.insert(mailbox, s);
    }

    /// The invite stored under `hash`, as this batch sees it.
    fn stored_invite(
        &self,
        b: &Batch,
        hash: &[u8; 32],
    ) -> Result<Option<StoredInvite>, StoreError> {
        if let Some(i) = b.stored_invites.get(hash) {
            return Ok(Some(*i));
        }
        self.get(CF_META, &key::prefixed(key::STORED_INVITE, hash))?
            .map(|v| decode_invite(&v))
            .transpose()
    }

    fn set_stored_invite(&self, b: &mut Batch, hash: [u8; 32], invite: StoredInvite) {
        b.wb.put_cf(
            cf(&self.db, CF_META),
            key::prefixed(key::STORED_INVITE, &hash),
            encode_invite(&invite),
        );
        b.stored_invites.insert(hash, invite);
    }

    /// The account `fingerprint` names, as this batch sees it.
    fn fingerprint_owner(
        &self,
        b: &Batch,
        fingerprint: &[u8],
    ) -> Result<Option<MailboxId>, StoreError> {
        if let Some(m) = b.fingerprints.get(fingerprint) {
            return Ok(*m);
        }
        self.get(CF_ACCOUNTS, &key::prefixed(key::FINGERPRINT, fingerprint))?
            .map(|v| mailbox_value(&v))
            .transpose()
    }

    /// The account that owns `address`, as this batch sees it.
    fn claim(&self, b: &Batch, address: &str) -> Result<Option<MailboxId>, StoreError> {
        if let Some(m) = b.claims.get(address) {
            return Ok(*m);
        }
        self.get(CF_ACCOUNTS, &key::prefixed(key::CLAIM, address.as_bytes()))?
            .map(|v| mailbox_value(&v))
            .transpose()
    }

    fn set_claim(&self, b: &mut Batch, address: &str, mailbox: MailboxId) {
        b.wb.put_cf(
            cf(&self.db, CF_ACCOUNTS),
            key::prefixed(key::CLAIM, address.as_bytes()),
            mailbox.as_bytes(),
        );
        b.claims.insert(address.to_string(), Some(mailbox));
    }

    fn register(&mut self, b: &mut Batch, a: NewAccount) -> Result<RegisterOutcome, StoreError> {
        if let Some(m) = self.fingerprint_owner(b, &a.fingerprint)? {
            return Ok(RegisterOutcome::Existing(m));
        }
        // First come: an address claimed by another account refuses the registration, and
        // only the owner's own rotation may take its addresses along.
        let owner = a.rotation.as_ref().map(|r| r.mailbox);
        for address in &a.addresses {
            match self.claim(b, address)? {
                Some(m) if Some(m) != owner => {
                    return Ok(RegisterOutcome::AddressTaken {
                        address: address.clone(),
                    });
                }
                _ => {}
            }
        }
        if let Some(r) = &a.rotation {
            return self.rotate(b, &a, r);
        }
        let invite_key = a
            .invite
            .as_ref()
            .map(|code| -> [u8; 32] { Sha256::digest(code.as_bytes()).into() });
        // A stored invite: one of its uses, if it is usable now.
        let stored = match &invite_key {
            Some(h) => self.stored_invite(b, h)?.map(|i| (*h, i)),
            None => None,
        };
        if let Some((_, i)) = &stored
            && !i.usable(a.created)
        {
            return Ok(RegisterOutcome::InviteUsed);
        }
        if stored.is_none()
            && let Some(h) = &invite_key
            && (b.invites.contains(h)
                || self.get(CF_META, &key::prefixed(key::INVITE, h))?.is_some())
        {
            return Ok(RegisterOutcome::InviteUsed);
        }
        let mailbox = MailboxId::random();
        let accounts = cf(&self.db, CF_ACCOUNTS);
        let mut v = Vec::with_capacity(8 + a.cert.len());
        v.extend_from_slice(&a.created.to_be_bytes());
        v.extend_from_slice(&a.cert);
        b.wb.put_cf(accounts, key::prefixed(key::ACCOUNT, mailbox.as_bytes()), v);
        b.wb.put_cf(
            accounts,
            key::prefixed(key::FINGERPRINT, &a.fingerprint),
            mailbox.as_bytes(),
        );
        self.set_state(
            b,
            mailbox,
            MailboxState {
                next_seq: 1,
                bytes: 0,
                count: 0,
                settings: AccountSettings::default(),
            },
        );
        if let Some((h, i)) = stored {
            self.set_stored_invite(
                b,
                h,
                StoredInvite {
                    used: i.used + 1,
                    ..i
                },
            );
        } else if let Some(h) = invite_key {
            let mut v = a.created.to_be_bytes().to_vec();
            v.extend_from_slice(mailbox.as_bytes());
            b.wb.put_cf(cf(&self.db, CF_META), key::prefixed(key::INVITE, &h), v);
            b.invites.insert(h);
        }
        for address in &a.addresses {
            self.set_claim(b, address, mailbox);
        }
        b.fingerprints.insert(a.fingerprint.clone(), Some(mailbox));
        Ok(RegisterOutcome::Created(mailbox))
    }

    /// Replaces the certificate of `r.mailbox`, if it still has `r.old_fingerprint` (of two
    /// racing rotations from one key, one wins; the other finds its endorser gone).
    fn rotate(
        &mut self,
        b: &mut Batch,
        a: &NewAccount,
        r: &Rotation,
    ) -> Result<RegisterOutcome, StoreError> {
        if self.fingerprint_owner(b, &r.old_fingerprint)? != Some(r.mailbox) {
            return Ok(RegisterOutcome::AddressTaken {
                address: a.addresses.first().cloned().unwrap_or_default(),
            });
        }
        let accounts = cf(&self.db, CF_ACCOUNTS);
        let account_key = key::prefixed(key::ACCOUNT, r.mailbox.as_bytes());
        let created = self
            .get(CF_ACCOUNTS, &account_key)?
            .and_then(|v| u64_at(&v, 0))
            .unwrap_or(a.created);
        let mut v = Vec::with_capacity(8 + a.cert.len());
        v.extend_from_slice(&created.to_be_bytes());
        v.extend_from_slice(&a.cert);
        b.wb.put_cf(accounts, account_key, v);
        b.wb.delete_cf(
            accounts,
            key::prefixed(key::FINGERPRINT, &r.old_fingerprint),
        );
        b.wb.put_cf(
            accounts,
            key::prefixed(key::FINGERPRINT, &a.fingerprint),
            r.mailbox.as_bytes(),
        );
        for address in &a.addresses {
            self.set_claim(b, address, r.mailbox);
        }
        b.fingerprints.insert(r.old_fingerprint.clone(), None);
        b.fingerprints
            .insert(a.fingerprint.clone(), Some(r.mailbox));
        Ok(RegisterOutcome::Rotated(r.mailbox))
    }

    fn put_record(
        &mut self,
        b: &mut Batch,
        address: String,
        mailbox: MailboxId,
        sequence: u64,
        signed: &[u8],
    ) -> Result<RecordOutcome, StoreError> {
        let claimed = match self.claim(b, &address)? {
            Some(owner) if owner != mailbox => return Ok(RecordOutcome::NotOwner),
            Some(_) => true,
            None => false,
        };
        let stored = match b.records.get(&address) {
            Some(s) => *s,
            None => self
                .get(CF_RECORDS, address.as_bytes())?
                .and_then(|v| u64_at(&v, 0)),
        };
        if let Some(stored) = stored
            && stored >= sequence
        {
            return Ok(RecordOutcome::Stale { stored });
        }
        if !claimed {
            // An address nobody owns yet (a database from before claims, or a User ID the
            // certificate gained since registration) becomes the publisher's.
            self.set_claim(b, &address, mailbox);
        }
        let mut v = Vec::with_capacity(8 + signed.len());
        v.extend_from_slice(&sequence.to_be_bytes());
        v.extend_from_slice(signed);
        b.wb.put_cf(cf(&self.db, CF_RECORDS), address.as_bytes(), v);
        b.records.insert(address, Some(sequence));
        Ok(RecordOutcome::Stored)
    }

    fn reset_address(&mut self, b: &mut Batch, address: String) -> Result<bool, StoreError> {
        let had_claim = self.claim(b, &address)?.is_some();
        let had_record = match b.records.get(&address) {
            Some(s) => s.is_some(),
            None => self.get(CF_RECORDS, address.as_bytes())?.is_some(),
        };
        b.wb.delete_cf(
            cf(&self.db, CF_ACCOUNTS),
            key::prefixed(key::CLAIM, address.as_bytes()),
        );
        b.wb.delete_cf(cf(&self.db, CF_RECORDS), address.as_bytes());
        b.claims.insert(address.clone(), None);
        b.records.insert(address, None);
        Ok(had_claim || had_record)
    }

    fn deliver(
        &mut self,
        b: &mut Batch,
        e: &NewEnvelope,
        quota: Quota,
    ) -> Result<DeliverOutcome, StoreError> {
        let Some(state) = self.state(b, e.mailbox)? else {
            return Ok(DeliverOutcome::UnknownMailbox);
        };
        let dkey = key::dedupe(&e.mailbox, &e.id);
        if let Some(seq) = b.dedupe.get(&(e.mailbox, e.id)) {
            return Ok(DeliverOutcome::Duplicate { seq: *seq });
        }
        if let Some(v) = self.get(CF_DEDUPE, &dkey)? {
            let seq = u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("dedupe value".into()))?;
            return Ok(DeliverOutcome::Duplicate { seq });
        }
        let size = e.bytes.len() as u64;
        let quota = quota.for_account(&state.settings);
        if state.bytes.saturating_add(size) > quota.max_bytes
            || state.count.saturating_add(1) > quota.max_envelopes
        {
            return Ok(DeliverOutcome::QuotaExceeded);
        }
        let seq = state.next_seq;
        let k = key::mailbox_seq(&e.mailbox, seq);
        b.wb.put_cf(cf(&self.db, CF_ENVELOPES), k, &e.bytes);
        let mut idx = Vec::with_capacity(32);
        idx.extend_from_slice(e.id.as_bytes());
        idx.extend_from_slice(&size.to_be_bytes());
        idx.extend_from_slice(&e.received.to_be_bytes());
        b.wb.put_cf(cf(&self.db, CF_INDEX), k, idx);
        let mut dv = seq.to_be_bytes().to_vec();
        dv.extend_from_slice(&e.received.to_be_bytes());
        b.wb.put_cf(cf(&self.db, CF_DEDUPE), dkey, dv);
        self.set_state(
            b,
            e.mailbox,
            MailboxState {
                next_seq: seq + 1,
                bytes: state.bytes + size,
                count: state.count + 1,
                ..state
            },
        );
        b.dedupe.insert((e.mailbox, e.id), seq);
        b.index.insert((e.mailbox, seq), size);
        Ok(DeliverOutcome::Stored { seq })
    }

    /// Deletes the envelope at `seq` with its devices' acknowledgements.
    fn ack(&mut self, b: &mut Batch, mailbox: MailboxId, seq: u64) -> Result<bool, StoreError> {
        if b.acked.contains(&(mailbox, seq)) {
            return Ok(false);
        }
        let acked = self.acked_by(b, mailbox, seq)?;
        self.release(b, mailbox, seq, &acked)
    }

    /// [`ack`](Writer::ack) where the caller has read the devices that acknowledged the
    /// envelope (`acked`, [`acked_by`](Writer::acked_by)): their keys are deleted one by
    /// one. Not a range delete: a range tombstone per envelope piles up in `CF_ACKS`, and
    /// every later `acked_by` seek has to step over them (a fetch of 10,000 letters left
    /// 10,000 of them, and the acks slowed down as they went).
    fn release(
        &mut self,
        b: &mut Batch,
        mailbox: MailboxId,
        seq: u64,
        acked: &HashSet<DeviceId>,
    ) -> Result<bool, StoreError> {
        if b.acked.contains(&(mailbox, seq)) {
            return Ok(false);
        }
        let k = key::mailbox_seq(&mailbox, seq);
        let size = match b.index.get(&(mailbox, seq)) {
            Some(s) => *s,
            None => match self.get(CF_INDEX, &k)? {
                Some(v) => {
                    u64_at(&v, 16).ok_or_else(|| StoreError::Corrupt("index value".into()))?
                }
                None => return Ok(false),
            },
        };
        let Some(state) = self.state(b, mailbox)? else {
            return Ok(false);
        };
        b.wb.delete_cf(cf(&self.db, CF_ENVELOPES), k);
        b.wb.delete_cf(cf(&self.db, CF_INDEX), k);
        // Devices' acknowledgements of it go with it.
        for device in acked {
            b.wb.delete_cf(
                cf(&self.db, CF_ACKS),
                key::device_ack(&mailbox, seq, device),
            );
            b.device_acks.insert((mailbox, seq, *device), false);
        }
        // The dedupe entry stays: a late redelivery of an acked envelope is not stored again.
        let next = MailboxState {
            next_seq: state.next_seq,
            bytes: state.bytes.saturating_sub(size),
            count: state.count.saturating_sub(1),
            ..state
        };
        self.set_state(b, mailbox, next);
        b.acked.insert((mailbox, seq));
        Ok(true)
    }
}

/// Devices and per-device acknowledgements.
impl Writer {
    /// The ids of `mailbox`'s devices as this batch sees them; `[ACCOUNT]` without any.
    fn device_ids(&self, b: &Batch, mailbox: MailboxId) -> Result<Vec<DeviceId>, StoreError> {
        let mut ids: Vec<DeviceId> = read_devices(&self.db, &mailbox)?
            .into_iter()
            .map(|d| d.id)
            .filter(|id| b.devices.get(&(mailbox, *id)) != Some(&false))
            .collect();
        for ((m, id), present) in &b.devices {
            if *m == mailbox && *present && !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.is_empty() {
            ids.push(DeviceId::ACCOUNT);
        }
        Ok(ids)
    }

    /// The devices that acknowledged the envelope at `seq`, as this batch sees them.
    fn acked_by(
        &self,
        b: &Batch,
        mailbox: MailboxId,
        seq: u64,
    ) -> Result<HashSet<DeviceId>, StoreError> {
        let prefix = key::mailbox_seq(&mailbox, seq);
        let mut out = HashSet::new();
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_ACKS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = kv.map_err(read_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id: [u8; 16] = k[24..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("device ack key".into()))?;
            out.insert(DeviceId(id));
        }
        for ((m, s, id), present) in &b.device_acks {
            if *m == mailbox && *s == seq {
                if *present {
                    out.insert(*id);
                } else {
                    out.remove(id);
                }
            }
        }
        Ok(out)
    }

    /// Whether an envelope is stored at `seq`, as this batch sees it.
    fn has_envelope(&self, b: &Batch, mailbox: MailboxId, seq: u64) -> Result<bool, StoreError> {
        if b.acked.contains(&(mailbox, seq)) {
            return Ok(false);
        }
        if b.index.contains_key(&(mailbox, seq)) {
            return Ok(true);
        }
        Ok(self
            .get(CF_INDEX, &key::mailbox_seq(&mailbox, seq))?
            .is_some())
    }

    fn add_device(
        &mut self,
        b: &mut Batch,
        mailbox: MailboxId,
        d: &Device,
        max: usize,
    ) -> Result<AddDeviceOutcome, StoreError> {
        if self.state(b, mailbox)?.is_none() {
            return Ok(AddDeviceOutcome::UnknownMailbox);
        }
        let ids = self.device_ids(b, mailbox)?;
        if ids.contains(&d.id) {
            return Ok(AddDeviceOutcome::Existing);
        }
        let registered = ids.iter().filter(|i| **i != DeviceId::ACCOUNT).count();
        if registered >= max {
            return Ok(AddDeviceOutcome::TooMany);
        }
        b.wb.put_cf(
            cf(&self.db, CF_ACCOUNTS),
            key::device(&mailbox, &d.id),
            encode_device(d),
        );
        b.devices.insert((mailbox, d.id), true);
        Ok(AddDeviceOutcome::Added)
    }

    fn remove_device(
        &mut self,
        b: &mut Batch,
        mailbox: MailboxId,
        device: DeviceId,
    ) -> Result<RemoveDeviceOutcome, StoreError> {
        let ids = self.device_ids(b, mailbox)?;
        if device == DeviceId::ACCOUNT || !ids.contains(&device) {
            return Ok(RemoveDeviceOutcome::Unknown);
        }
        if ids.len() == 1 {
            return Ok(RemoveDeviceOutcome::Last);
        }
        b.wb.delete_cf(cf(&self.db, CF_ACCOUNTS), key::device(&mailbox, &device));
        b.devices.insert((mailbox, device), false);
        let remaining: Vec<DeviceId> = ids.into_iter().filter(|i| *i != device).collect();
        // Every stored envelope of the mailbox: drop the device's ack, and delete what the
        // remaining devices have all acknowledged.
        let mut seqs = Vec::new();
        let prefix = *mailbox.as_bytes();
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_INDEX),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = kv.map_err(read_err)?;
            if k.len() != 24 || k[..16] != prefix {
                break;
            }
            seqs.push(u64_at(&k, 16).ok_or_else(|| StoreError::Corrupt("index key".into()))?);
        }
        seqs.extend(
            b.index
                .keys()
                .filter(|(m, _)| *m == mailbox)
                .map(|(_, s)| *s),
        );
        seqs.sort_unstable();
        seqs.dedup();
        let mut released = 0;
        for seq in seqs {
            if !self.has_envelope(b, mailbox, seq)? {
                continue;
            }
            let acked = self.acked_by(b, mailbox, seq)?;
            if acked.contains(&device) {
                b.wb.delete_cf(
                    cf(&self.db, CF_ACKS),
                    key::device_ack(&mailbox, seq, &device),
                );
                b.device_acks.insert((mailbox, seq, device), false);
            }
            if remaining.iter().all(|d| acked.contains(d))
                && self.release(b, mailbox, seq, &acked)?
            {
                released += 1;
            }
        }
        Ok(RemoveDeviceOutcome::Removed { released })
    }

    fn ack_device(
        &mut self,
        b: &mut Batch,
        mailbox: MailboxId,
        seq: u64,
        device: DeviceId,
    ) -> Result<DeviceAck, StoreError> {
        let ids = self.device_ids(b, mailbox)?;
        if !ids.contains(&device) {
            return Ok(DeviceAck::UnknownDevice);
        }
        if !self.has_envelope(b, mailbox, seq)? {
            return Ok(DeviceAck::Missing);
        }
        let acked = self.acked_by(b, mailbox, seq)?;
        if acked.contains(&device) {
            return Ok(DeviceAck::Missing);
        }
        if ids.iter().all(|d| *d == device || acked.contains(d)) {
            // Only the acknowledgements read above are stored: those are deleted.
            self.release(b, mailbox, seq, &acked)?;
            return Ok(DeviceAck::Deleted);
        }
        b.wb.put_cf(
            cf(&self.db, CF_ACKS),
            key::device_ack(&mailbox, seq, &device),
            [],
        );
        b.device_acks.insert((mailbox, seq, device), true);
        Ok(DeviceAck::Recorded)
    }
}

/// A key and its value, as an iterator returns them.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Account deletion (`sealpost-node admin users delete`).
impl Writer {
    /// Every key of `cf_name` under `prefix` (committed state).
    fn keys_under(&self, cf_name: &str, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(
            cf(&self.db, cf_name),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = kv.map_err(read_err)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    fn delete_account(
        &mut self,
        b: &mut Batch,
        mailbox: MailboxId,
    ) -> Result<Option<DeletedAccount>, StoreError> {
        let Some(state) = self.state(b, mailbox)? else {
            return Ok(None);
        };
        let accounts = cf(&self.db, CF_ACCOUNTS);
        let m = *mailbox.as_bytes();
        // Fingerprints and claims naming the account, committed or written by this batch.
        let mut fingerprints: Vec<Vec<u8>> = Vec::new();
        for (k, v) in self.keys_under(CF_ACCOUNTS, &[key::FINGERPRINT])? {
            if v[..] == m[..] && !b.fingerprints.contains_key(&k[1..]) {
                fingerprints.push(k[1..].to_vec());
            }
        }
        fingerprints.extend(
            b.fingerprints
                .iter()
                .filter(|(_, o)| **o == Some(mailbox))
                .map(|(f, _)| f.clone()),
        );
        let mut addresses: Vec<String> = Vec::new();
        for (k, v) in self.keys_under(CF_ACCOUNTS, &[key::CLAIM])? {
            if v[..] == m[..] {
                let a = String::from_utf8_lossy(&k[1..]).into_owned();
                if !b.claims.contains_key(&a) {
                    addresses.push(a);
                }
            }
        }
        addresses.extend(
            b.claims
                .iter()
                .filter(|(_, o)| **o == Some(mailbox))
                .map(|(a, _)| a.clone()),
        );
        for f in &fingerprints {
            b.wb.delete_cf(accounts, key::prefixed(key::FINGERPRINT, f));
            b.fingerprints.insert(f.clone(), None);
        }
        for a in &addresses {
            b.wb.delete_cf(accounts, key::prefixed(key::CLAIM, a.as_bytes()));
            b.wb.delete_cf(cf(&self.db, CF_RECORDS), a.as_bytes());
            b.claims.insert(a.clone(), None);
            b.records.insert(a.clone(), None);
        }
        let devices = self
            .device_ids(b, mailbox)?
            .into_iter()
            .filter(|d| *d != DeviceId::ACCOUNT)
            .count() as u64;
        // Every key that starts with the mailbox id (envelopes, index, acks, dedupe) or with
        // a prefix and the id (devices): none is longer than 41 bytes, so each sorts below
        // `start ‖ ff×41`.
        let under = |start: &[u8]| {
            let mut end = start.to_vec();
            end.extend_from_slice(&[0xff; 41]);
            end
        };
        for name in [CF_ENVELOPES, CF_INDEX, CF_ACKS, CF_DEDUPE] {
            b.wb.delete_range_cf(cf(&self.db, name), &m[..], &under(&m)[..]);
        }
        let dev = key::prefixed(key::DEVICE, &m);
        b.wb.delete_range_cf(accounts, &dev[..], &under(&dev)[..]);
        b.wb.delete_cf(accounts, key::prefixed(key::ACCOUNT, &m));
        b.wb.delete_cf(accounts, key::prefixed(key::STATE, &m));
        b.states.remove(&mailbox);
        b.deleted.insert(mailbox);
        b.index.retain(|(mb, _), _| *mb != mailbox);
        b.dedupe.retain(|(mb, _), _| *mb != mailbox);
        b.devices.retain(|(mb, _), _| *mb != mailbox);
        b.device_acks.retain(|(mb, _, _), _| *mb != mailbox);
        // Its outbound hops (committed; a hop it queued in this same batch is left).
        let mut queued = 0;
        for (k, v) in self.keys_under(CF_OUTBOUND, &[key::QUEUE_META])? {
            let item: OutboundItem = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("outbound item: {e}")))?;
            if item.sender == mailbox {
                b.wb.delete_cf(cf(&self.db, CF_OUTBOUND), &k);
                b.wb.delete_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_PAYLOAD, &item.id),
                );
                queued += 1;
            }
        }
        Ok(Some(DeletedAccount {
            envelopes: state.count,
            addresses: addresses.len() as u64,
            devices,
            queued,
        }))
    }
}

#[cfg(test)]
mod tests;
