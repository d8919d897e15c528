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
use sealpost_proto::{EnvelopeId, MailboxId, NodeUrl};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::rocks::{
    CF_ACCOUNTS, CF_DEDUPE, CF_ENVELOPES, CF_INDEX, CF_META, CF_OUTBOUND, CF_PEERS, CF_RECORDS,
    SharedStats, cf, key, u64_at,
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
        sequence: u64,
        signed: Vec<u8>,
        reply: Reply<RecordOutcome>,
    },
    Deliver {
        envelope: NewEnvelope,
        quota: Quota,
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
    ForgetDedupe {
        keys: Vec<[u8; 32]>,
        reply: Reply<()>,
    },
    PinPeer {
        url: NodeUrl,
        pin: PeerPin,
        reply: Reply<()>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MailboxState {
    next_seq: u64,
    bytes: u64,
    count: u64,
}

impl MailboxState {
    fn encode(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&self.next_seq.to_be_bytes());
        v[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        v[16..].copy_from_slice(&self.count.to_be_bytes());
        v
    }
    fn decode(v: &[u8]) -> Option<Self> {
        Some(MailboxState {
            next_seq: u64_at(v, 0)?,
            bytes: u64_at(v, 8)?,
            count: u64_at(v, 16)?,
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
    fingerprints: HashMap<Vec<u8>, MailboxId>,
    invites: HashSet<[u8; 32]>,
    records: HashMap<String, u64>,
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
                sequence,
                signed,
                reply,
            } => match self.put_record(b, address, sequence, &signed) {
                Ok(o) => b.answer(reply, o),
                Err(e) => drop(reply.send(Err(e))),
            },
            Op::Deliver {
                envelope,
                quota,
                reply,
            } => match self.deliver(b, &envelope, quota) {
                Ok(o) => b.answer(reply, o),
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
                let meta = serde_json::to_vec(&item).expect("invariant: outbound item serialises");
                b.wb.put_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_META, &item.id),
                    meta,
                );
                b.wb.put_cf(
                    cf(&self.db, CF_OUTBOUND),
                    key::prefixed(key::QUEUE_PAYLOAD, &item.id),
                    &payload,
                );
                b.answer(reply, ());
            }
            Op::Reschedule { item, reply } => {
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
                if let Some(env) = bounce {
                    let unlimited = Quota {
                        max_bytes: u64::MAX,
                        max_envelopes: u64::MAX,
                    };
                    match self.deliver(b, &env, unlimited) {
                        Ok(DeliverOutcome::Stored { .. }) => {}
                        Ok(other) => tracing::warn!(outcome = ?other, "bounce not stored"),
                        Err(e) => {
                            drop(reply.send(Err(e)));
                            return;
                        }
                    }
                }
                b.answer(reply, ());
            }
            Op::ForgetDedupe { keys, reply } => {
                for k in keys {
                    b.wb.delete_cf(cf(&self.db, CF_DEDUPE), k);
                }
                b.answer(reply, ());
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

    fn get(&self, cf_name: &str, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(cf(&self.db, cf_name), k).map_err(read_err)
    }

    /// The mailbox's state as this batch sees it; `None` if there is no such account.
    fn state(&mut self, b: &Batch, mailbox: MailboxId) -> Result<Option<MailboxState>, StoreError> {
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

    fn register(&mut self, b: &mut Batch, a: NewAccount) -> Result<RegisterOutcome, StoreError> {
        if let Some(m) = b.fingerprints.get(&a.fingerprint) {
            return Ok(RegisterOutcome::Existing(*m));
        }
        if let Some(v) = self.get(
            CF_ACCOUNTS,
            &key::prefixed(key::FINGERPRINT, &a.fingerprint),
        )? {
            let m: [u8; 16] = v
                .try_into()
                .map_err(|_| StoreError::Corrupt("fingerprint index".into()))?;
            return Ok(RegisterOutcome::Existing(MailboxId(m)));
        }
        let invite_key = a
            .invite
            .as_ref()
            .map(|code| -> [u8; 32] { Sha256::digest(code.as_bytes()).into() });
        if let Some(h) = &invite_key
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
            },
        );
        if let Some(h) = invite_key {
            let mut v = a.created.to_be_bytes().to_vec();
            v.extend_from_slice(mailbox.as_bytes());
            b.wb.put_cf(cf(&self.db, CF_META), key::prefixed(key::INVITE, &h), v);
            b.invites.insert(h);
        }
        b.fingerprints.insert(a.fingerprint, mailbox);
        Ok(RegisterOutcome::Created(mailbox))
    }

    fn put_record(
        &mut self,
        b: &mut Batch,
        address: String,
        sequence: u64,
        signed: &[u8],
    ) -> Result<RecordOutcome, StoreError> {
        let stored = match b.records.get(&address) {
            Some(s) => Some(*s),
            None => self
                .get(CF_RECORDS, address.as_bytes())?
                .and_then(|v| u64_at(&v, 0)),
        };
        if let Some(stored) = stored
            && stored >= sequence
        {
            return Ok(RecordOutcome::Stale { stored });
        }
        let mut v = Vec::with_capacity(8 + signed.len());
        v.extend_from_slice(&sequence.to_be_bytes());
        v.extend_from_slice(signed);
        b.wb.put_cf(cf(&self.db, CF_RECORDS), address.as_bytes(), v);
        b.records.insert(address, sequence);
        Ok(RecordOutcome::Stored)
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
            },
        );
        b.dedupe.insert((e.mailbox, e.id), seq);
        b.index.insert((e.mailbox, seq), size);
        Ok(DeliverOutcome::Stored { seq })
    }

    fn ack(&mut self, b: &mut Batch, mailbox: MailboxId, seq: u64) -> Result<bool, StoreError> {
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
        // The dedupe entry stays: a late redelivery of an acked envelope is not stored again.
        let next = MailboxState {
            next_seq: state.next_seq,
            bytes: state.bytes.saturating_sub(size),
            count: state.count.saturating_sub(1),
        };
        self.set_state(b, mailbox, next);
        b.acked.insert((mailbox, seq));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::StorageConfig;
    use crate::store::RocksStore;

    fn account(fpr: u8, invite: Option<&str>) -> NewAccount {
        NewAccount {
            fingerprint: vec![fpr; 20],
            cert: vec![0x99, fpr],
            created: 1,
            invite: invite.map(Into::into),
        }
    }

    fn envelope(mailbox: MailboxId, id: u8, len: usize) -> NewEnvelope {
        NewEnvelope {
            mailbox,
            id: EnvelopeId([id; 16]),
            bytes: Bytes::from(vec![7u8; len]),
            received: 5,
        }
    }

    const BIG: Quota = Quota {
        max_bytes: 1 << 40,
        max_envelopes: 1 << 40,
    };

    async fn open(dir: &std::path::Path) -> Arc<RocksStore> {
        RocksStore::open(dir, &StorageConfig::default()).unwrap()
    }

    #[tokio::test]
    async fn registration_is_idempotent_and_invites_work_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            s.register(account(1, None)).await.unwrap(),
            RegisterOutcome::Existing(m)
        );
        assert!(matches!(
            s.register(account(2, Some("c"))).await.unwrap(),
            RegisterOutcome::Created(_)
        ));
        assert_eq!(
            s.register(account(3, Some("c"))).await.unwrap(),
            RegisterOutcome::InviteUsed
        );
        let acc = s.account(m).await.unwrap().unwrap();
        assert_eq!(acc.cert, vec![0x99, 1]);
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_deliveries_get_distinct_sequences_and_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
            panic!()
        };
        // 20 distinct ids, each sent twice, all at once: some land in one batch together.
        let tasks: Vec<_> = (0..40u8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.deliver(envelope(m, i % 20, 10), BIG).await.unwrap() })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let stored: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| match o {
                DeliverOutcome::Stored { seq } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 20);
        let mut sorted = stored.clone();
        sorted.sort();
        assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, DeliverOutcome::Duplicate { .. }))
                .count(),
            20
        );
        let list = s.list(m, 0, 100).await.unwrap();
        assert_eq!(list.len(), 20);
        assert_eq!(s.list(m, 15, 100).await.unwrap().len(), 5);
        assert_eq!(s.list(m, 0, 3).await.unwrap().len(), 3);
        assert!(s.stats().batches >= 1);
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn quota_ack_and_unknown_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
            panic!()
        };
        let q = Quota {
            max_bytes: 100,
            max_envelopes: 2,
        };
        assert_eq!(
            s.deliver(envelope(m, 1, 60), q).await.unwrap(),
            DeliverOutcome::Stored { seq: 1 }
        );
        assert_eq!(
            s.deliver(envelope(m, 2, 60), q).await.unwrap(),
            DeliverOutcome::QuotaExceeded
        );
        assert_eq!(
            s.deliver(envelope(m, 2, 40), q).await.unwrap(),
            DeliverOutcome::Stored { seq: 2 }
        );
        assert_eq!(
            s.deliver(envelope(m, 3, 1), q).await.unwrap(),
            DeliverOutcome::QuotaExceeded
        );
        assert!(s.ack(m, 1).await.unwrap());
        assert!(!s.ack(m, 1).await.unwrap(), "acking twice is a no-op");
        assert!(s.envelope(m, 1).await.unwrap().is_none());
        assert_eq!(
            s.deliver(envelope(m, 3, 60), q).await.unwrap(),
            DeliverOutcome::Stored { seq: 3 }
        );
        // An acked envelope redelivered later is still a duplicate.
        assert_eq!(
            s.deliver(envelope(m, 1, 60), q).await.unwrap(),
            DeliverOutcome::Duplicate { seq: 1 }
        );
        let other = MailboxId([9; 16]);
        assert_eq!(
            s.deliver(envelope(other, 1, 1), q).await.unwrap(),
            DeliverOutcome::UnknownMailbox
        );
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn old_ids_of_acked_envelopes_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
            panic!()
        };
        s.deliver(envelope(m, 1, 10), BIG).await.unwrap();
        s.deliver(envelope(m, 2, 10), BIG).await.unwrap();
        assert!(s.ack(m, 1).await.unwrap());
        // Received at 5: nothing is older than 5 yet.
        assert_eq!(s.prune_dedupe(5).await.unwrap(), 0);
        // Envelope 2 is still in the mailbox: its id stays.
        assert_eq!(s.prune_dedupe(6).await.unwrap(), 1);
        assert_eq!(
            s.deliver(envelope(m, 2, 10), BIG).await.unwrap(),
            DeliverOutcome::Duplicate { seq: 2 }
        );
        // Envelope 1's id was forgotten: a redelivery now is a new envelope.
        assert_eq!(
            s.deliver(envelope(m, 1, 10), BIG).await.unwrap(),
            DeliverOutcome::Stored { seq: 3 }
        );
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn records_only_move_forward_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = {
            let s = open(dir.path()).await;
            assert_eq!(
                s.put_record("a@b.test".into(), 2, b"two".to_vec())
                    .await
                    .unwrap(),
                RecordOutcome::Stored
            );
            assert_eq!(
                s.put_record("a@b.test".into(), 2, b"again".to_vec())
                    .await
                    .unwrap(),
                RecordOutcome::Stale { stored: 2 }
            );
            let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
                panic!()
            };
            s.deliver(envelope(m, 1, 10), BIG).await.unwrap();
            s.close().await.unwrap();
            m
        };
        let s = open(dir.path()).await;
        assert_eq!(
            s.record("a@b.test".into()).await.unwrap().unwrap(),
            Bytes::from_static(b"two")
        );
        assert_eq!(
            s.deliver(envelope(m, 2, 10), BIG).await.unwrap(),
            DeliverOutcome::Stored { seq: 2 }
        );
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn outbound_queue_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let item = OutboundItem {
            id: [4; 16],
            destination: NodeUrl::parse("http://b.test").unwrap(),
            sender: MailboxId([1; 16]),
            submitted_ms: 10,
            attempts: 0,
            next_attempt_ms: 0,
            size: 3,
            last_error: String::new(),
        };
        s.enqueue(item.clone(), Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert_eq!(s.outbound().await.unwrap(), vec![item.clone()]);
        assert_eq!(
            s.outbound_payload(QueueId([4; 16])).await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        let mut later = item.clone();
        later.attempts = 3;
        s.reschedule(later.clone()).await.unwrap();
        assert_eq!(s.outbound().await.unwrap(), vec![later]);
        s.finish(QueueId([4; 16]), None).await.unwrap();
        assert!(s.outbound().await.unwrap().is_empty());
        assert!(
            s.outbound_payload(QueueId([4; 16]))
                .await
                .unwrap()
                .is_none()
        );
        s.close().await.unwrap();
    }
}
