//! The `Store` conformance suite: the same behaviour checked for every implementation of
//! `sealpost_server::store::Store` (RocksDB today, PostgreSQL next). Each case is a public
//! async function over a [`Backend`]; [`crate::store_conformance!`] turns them all into
//! `#[tokio::test]`s in the crate that names a backend:
//!
//! ```text
//! struct Rocks;
//! impl sealpost_testkit::conformance::Backend for Rocks {
//!     async fn open(&self, place: &std::path::Path) -> std::sync::Arc<dyn Store> {
//!         RocksStore::open(place, &StorageConfig::default()).expect("open")
//!     }
//! }
//! sealpost_testkit::store_conformance!(Rocks);
//! ```
//!
//! What is checked is the trait's contract as the node relies on it: registration is
//! idempotent by certificate fingerprint and an invite works once; records only move
//! forward; each mailbox numbers its envelopes from 1 without reuse, dedupes by envelope id
//! (also after an ack) and enforces its quota inside the write; listing pages from a
//! cursor; an ack deletes once and frees quota; old ids of acked envelopes can be pruned;
//! the outbound queue round-trips, each stored hop is claimed once, and a finished hop can
//! leave a bounce; a delivery queues its forwards (copies for the mailbox's other homes) in
//! its own write, and only when it stored the envelope; peer pins are kept
//! per URL; an address belongs to its first account (claims, rotation, operator reset);
//! everything survives close and reopen; a closed store refuses writes. Devices: each
//! device lists what it has not acknowledged, an envelope goes when every device has
//! acknowledged it, removing a device releases what only it still owed, the retention
//! period deletes old envelopes whatever their acknowledgements, and all of it survives a
//! reopen. Batches: a batched fetch answers a prefix of the sequence numbers asked for
//! within its byte budget, and a batched ack is each device's ack in turn. Operator
//! commands: an account's settings (suspended, its own quota) are kept, listed with its
//! usage and override the byte quota but not a bounce's; deleting an account removes
//! everything of it and nothing of another account; a stored invite allows its number of
//! registrations (also when they race) until it expires or is revoked. Rate limits: a
//! token bucket gives its burst, then a token per interval, whole tokens only, the same to
//! concurrent takers together, and is forgotten once full.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sealpost_proto::{DeviceId, EnvelopeId, MailboxId, NodeUrl};
use sealpost_server::store::{
    AccountSettings, AddDeviceOutcome, DeletedAccount, DeliverOutcome, Device, DeviceAck,
    ForwardJob, Handoff, NewAccount, NewEnvelope, OutboundItem, PeerPin, QueueId, Quota,
    RecordOutcome, RegisterOutcome, RemoveDeviceOutcome, Rotation, SmtpJob, Store, StoreError,
    StoredInvite,
};
use sealpost_server::store::{Bucket, Tokens};

/// A store implementation under test.
pub trait Backend: Sync {
    /// Opens (creating when new) the store kept at `place`: a fresh empty directory per
    /// case. Opening the same place again, after `close`, must see the same data. A backend
    /// that keeps its data elsewhere (a SQL database) derives its database or schema name
    /// from `place` and may write its own files there.
    fn open(&self, place: &Path) -> impl Future<Output = Arc<dyn Store>> + Send;
}

/// A quota nothing in the suite reaches.
pub const BIG: Quota = Quota {
    max_bytes: 1 << 40,
    max_envelopes: 1 << 40,
};

/// A registration for the fingerprint `[fpr; 20]`.
pub fn account(fpr: u8, invite: Option<&str>) -> NewAccount {
    NewAccount {
        fingerprint: vec![fpr; 20],
        cert: vec![0x99, fpr],
        created: 1_700_000_000 + fpr as u64,
        invite: invite.map(Into::into),
        addresses: Vec::new(),
        rotation: None,
    }
}

/// An envelope `[id; 16]` of `len` bytes for `mailbox`, received at Unix second 5.
pub fn envelope(mailbox: MailboxId, id: u8, len: usize) -> NewEnvelope {
    NewEnvelope {
        mailbox,
        id: EnvelopeId([id; 16]),
        bytes: Bytes::from(vec![id; len]),
        received: 5,
    }
}

/// An outbound item `[id; 16]` from `sender`.
pub fn outbound_item(id: u8, sender: MailboxId) -> OutboundItem {
    OutboundItem {
        id: [id; 16],
        destination: NodeUrl::parse("http://b.test").expect("invariant: a valid URL"),
        sender,
        submitted_ms: 10,
        attempts: 0,
        next_attempt_ms: 0,
        size: 3,
        last_error: String::new(),
        smtp: None,
        forward: None,
    }
}

/// Registers a new account and returns its mailbox.
pub async fn new_mailbox(s: &dyn Store, fpr: u8) -> MailboxId {
    match s.register(account(fpr, None)).await.expect("register") {
        RegisterOutcome::Created(m) => m,
        other => panic!("a new fingerprint must create an account, got {other:?}"),
    }
}

fn place() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sealpost-store-")
        .tempdir()
        .expect("tempdir")
}

async fn stored_seq(s: &dyn Store, e: NewEnvelope, q: Quota) -> u64 {
    match s.deliver(e, q).await.expect("deliver") {
        DeliverOutcome::Stored { seq } => seq,
        other => panic!("want Stored, got {other:?}"),
    }
}

pub async fn registration_is_idempotent<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    assert_eq!(
        s.register(account(1, None)).await.unwrap(),
        RegisterOutcome::Existing(m),
        "the same fingerprint again names the same mailbox"
    );
    let m2 = new_mailbox(&*s, 2).await;
    assert_ne!(m, m2);
    let acc = s.account(m).await.unwrap().expect("the account is stored");
    assert_eq!(
        (acc.mailbox, acc.cert, acc.created),
        (m, vec![0x99, 1], account(1, None).created)
    );
    assert_eq!(s.mailbox_of(vec![1; 20]).await.unwrap(), Some(m));
    assert_eq!(s.mailbox_of(vec![2; 20]).await.unwrap(), Some(m2));
    assert_eq!(s.mailbox_of(vec![3; 20]).await.unwrap(), None);
    assert_eq!(s.account(MailboxId([0xee; 16])).await.unwrap(), None);
    s.close().await.unwrap();
}

pub async fn invite_codes_work_once<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let RegisterOutcome::Created(m) = s.register(account(1, Some("c"))).await.unwrap() else {
        panic!("an unused invite registers");
    };
    assert_eq!(
        s.register(account(2, Some("c"))).await.unwrap(),
        RegisterOutcome::InviteUsed
    );
    assert_eq!(s.mailbox_of(vec![2; 20]).await.unwrap(), None);
    assert_eq!(
        s.register(account(1, Some("c"))).await.unwrap(),
        RegisterOutcome::Existing(m),
        "a retried registration is idempotent even though its invite is used"
    );
    assert!(matches!(
        s.register(account(3, Some("d"))).await.unwrap(),
        RegisterOutcome::Created(_)
    ));
    s.close().await.unwrap();
}

pub async fn records_only_move_forward<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
        panic!("register");
    };
    let put =
        |seq: u64, body: &'static [u8]| s.put_record("a@b.test".into(), m, seq, body.to_vec());
    assert_eq!(s.record("a@b.test".into()).await.unwrap(), None);
    assert_eq!(put(2, b"two").await.unwrap(), RecordOutcome::Stored);
    assert_eq!(
        put(2, b"again").await.unwrap(),
        RecordOutcome::Stale { stored: 2 }
    );
    assert_eq!(
        put(1, b"one").await.unwrap(),
        RecordOutcome::Stale { stored: 2 }
    );
    assert_eq!(
        s.record("a@b.test".into()).await.unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    assert_eq!(put(3, b"three").await.unwrap(), RecordOutcome::Stored);
    assert_eq!(
        s.record("a@b.test".into()).await.unwrap(),
        Some(Bytes::from_static(b"three"))
    );
    assert_eq!(s.record("c@b.test".into()).await.unwrap(), None);
    s.close().await.unwrap();
}

/// An address belongs to its first account: a second account naming it is refused and
/// writes nothing, only the owner publishes its record, a rotation keeps the mailbox and
/// its claims, and an operator reset frees the address. Claims survive a reopen.
pub async fn addresses_belong_to_their_first_account<B: Backend>(b: &B) {
    let dir = place();
    let claim = |fpr: u8| NewAccount {
        addresses: vec!["a@b.test".into()],
        ..account(fpr, None)
    };
    let m = {
        let s = b.open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(claim(1)).await.unwrap() else {
            panic!("first registration");
        };
        assert_eq!(s.owner_of("a@b.test".into()).await.unwrap(), Some(m));
        assert_eq!(
            s.register(claim(2)).await.unwrap(),
            RegisterOutcome::AddressTaken {
                address: "a@b.test".into()
            }
        );
        assert_eq!(s.mailbox_of(vec![2; 20]).await.unwrap(), None);
        // Another account may not publish the owner's record.
        let other = new_mailbox(&*s, 3).await;
        assert_eq!(
            s.put_record("a@b.test".into(), other, 1, b"impostor".to_vec())
                .await
                .unwrap(),
            RecordOutcome::NotOwner
        );
        assert_eq!(s.record("a@b.test".into()).await.unwrap(), None);
        assert_eq!(
            s.put_record("a@b.test".into(), m, 1, b"one".to_vec())
                .await
                .unwrap(),
            RecordOutcome::Stored
        );
        s.close().await.unwrap();
        m
    };
    let s = b.open(dir.path()).await;
    assert_eq!(s.owner_of("a@b.test".into()).await.unwrap(), Some(m));
    // Rotation: the owner's mailbox takes the new certificate and keeps the address.
    let rotated = NewAccount {
        rotation: Some(Rotation {
            mailbox: m,
            old_fingerprint: vec![1; 20],
        }),
        ..claim(4)
    };
    assert_eq!(
        s.register(rotated).await.unwrap(),
        RegisterOutcome::Rotated(m)
    );
    assert_eq!(s.mailbox_of(vec![4; 20]).await.unwrap(), Some(m));
    assert_eq!(s.owner_of("a@b.test".into()).await.unwrap(), Some(m));
    // A rotation from a fingerprint the account no longer has loses.
    let stale = NewAccount {
        rotation: Some(Rotation {
            mailbox: m,
            old_fingerprint: vec![1; 20],
        }),
        ..claim(5)
    };
    assert!(!matches!(
        s.register(stale).await.unwrap(),
        RegisterOutcome::Rotated(_) | RegisterOutcome::Created(_)
    ));
    assert_eq!(s.mailbox_of(vec![5; 20]).await.unwrap(), None);
    // The operator frees it: record and claim are gone, a newcomer may take it.
    assert!(s.reset_address("a@b.test".into()).await.unwrap());
    assert_eq!(s.owner_of("a@b.test".into()).await.unwrap(), None);
    assert_eq!(s.record("a@b.test".into()).await.unwrap(), None);
    assert!(matches!(
        s.register(claim(6)).await.unwrap(),
        RegisterOutcome::Created(_)
    ));
}

pub async fn deliveries_get_sequences_and_dedupe<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let other = new_mailbox(&*s, 2).await;
    assert_eq!(stored_seq(&*s, envelope(m, 1, 10), BIG).await, 1);
    assert_eq!(stored_seq(&*s, envelope(m, 2, 20), BIG).await, 2);
    assert_eq!(
        s.deliver(envelope(m, 1, 10), BIG).await.unwrap(),
        DeliverOutcome::Duplicate { seq: 1 }
    );
    assert_eq!(
        stored_seq(&*s, envelope(other, 1, 10), BIG).await,
        1,
        "dedupe and sequences are per mailbox"
    );
    assert_eq!(
        s.envelope(m, 2).await.unwrap(),
        Some(Bytes::from(vec![2u8; 20]))
    );
    assert_eq!(s.envelope(m, 3).await.unwrap(), None);
    assert_eq!(
        s.deliver(envelope(MailboxId([0xee; 16]), 1, 1), BIG)
            .await
            .unwrap(),
        DeliverOutcome::UnknownMailbox
    );
    s.close().await.unwrap();
}

pub async fn concurrent_deliveries_get_distinct_sequences<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    // 20 distinct ids, each sent twice, all at once.
    let tasks: Vec<_> = (0..40u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.deliver(envelope(m, i % 20, 10), BIG).await.unwrap() })
        })
        .collect();
    let mut stored = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            DeliverOutcome::Stored { seq } => stored.push(seq),
            DeliverOutcome::Duplicate { seq } => duplicates.push(seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    stored.sort();
    assert_eq!(stored, (1..=20).collect::<Vec<_>>());
    duplicates.sort();
    assert_eq!(
        duplicates, stored,
        "each duplicate names its original's sequence"
    );
    assert_eq!(s.list(m, 0, 100).await.unwrap().len(), 20);
    s.close().await.unwrap();
}

/// Deliveries to several mailboxes at once (so a backend that stores them in batches gets
/// mixed batches): each is decided as if alone in its order, whatever it shares a batch
/// with: unknown mailboxes refused, repeated ids named as duplicates of their first, a
/// quota counting the deliveries stored before it.
pub async fn mixed_concurrent_deliveries_are_decided_one_by_one<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let open = new_mailbox(&*s, 1).await;
    let small = new_mailbox(&*s, 2).await;
    let unknown = MailboxId([0xee; 16]);
    let four = Quota {
        max_bytes: 1 << 40,
        max_envelopes: 4,
    };
    let mut tasks = Vec::new();
    for i in 0..30u8 {
        for (m, id, q) in [
            (open, i % 15, BIG),
            (small, 100 + i % 10, four),
            (unknown, i, BIG),
        ] {
            if m == small && i >= 10 {
                continue;
            }
            let s = s.clone();
            tasks.push((
                m,
                tokio::spawn(async move { s.deliver(envelope(m, id, 10), q).await.unwrap() }),
            ));
        }
    }
    let (mut stored, mut duplicates, mut small_stored, mut small_over) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for (m, t) in tasks {
        match (t.await.unwrap(), m) {
            (DeliverOutcome::UnknownMailbox, m) if m == unknown => {}
            (DeliverOutcome::Stored { seq }, m) if m == open => stored.push(seq),
            (DeliverOutcome::Duplicate { seq }, m) if m == open => duplicates.push(seq),
            (DeliverOutcome::Stored { seq }, m) if m == small => small_stored.push(seq),
            (DeliverOutcome::QuotaExceeded, m) if m == small => small_over += 1,
            (other, m) => panic!("unexpected {other:?} for {m:?}"),
        }
    }
    stored.sort();
    assert_eq!(stored, (1..=15).collect::<Vec<_>>());
    duplicates.sort();
    assert_eq!(
        duplicates, stored,
        "each duplicate names its original's sequence"
    );
    small_stored.sort();
    assert_eq!(
        small_stored,
        vec![1, 2, 3, 4],
        "the quota counts the earlier deliveries"
    );
    assert_eq!(small_over, 6);
    assert_eq!(s.list(open, 0, 100).await.unwrap().len(), 15);
    assert_eq!(s.list(small, 0, 100).await.unwrap().len(), 4);
    s.close().await.unwrap();
}

pub async fn list_pages_from_a_cursor<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let other = new_mailbox(&*s, 2).await;
    for i in 1..=5u8 {
        stored_seq(&*s, envelope(m, i, 10 * i as usize), BIG).await;
    }
    stored_seq(&*s, envelope(other, 9, 1), BIG).await;
    let all = s.list(m, 0, 100).await.unwrap();
    let seen: Vec<(u64, EnvelopeId, u64)> = all.iter().map(|i| (i.seq, i.id, i.size)).collect();
    let want: Vec<(u64, EnvelopeId, u64)> = (1..=5u8)
        .map(|i| (i as u64, EnvelopeId([i; 16]), 10 * i as u64))
        .collect();
    assert_eq!(seen, want, "ascending by sequence, with id and size");
    let seqs =
        |v: Vec<sealpost_server::store::ListItem>| v.iter().map(|i| i.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.list(m, 2, 100).await.unwrap()), vec![3, 4, 5]);
    assert_eq!(seqs(s.list(m, 1, 2).await.unwrap()), vec![2, 3]);
    assert_eq!(seqs(s.list(m, 5, 100).await.unwrap()), Vec::<u64>::new());
    assert_eq!(
        seqs(s.list(m, u64::MAX, 100).await.unwrap()),
        Vec::<u64>::new()
    );
    assert!(s.ack(m, 3).await.unwrap());
    assert_eq!(seqs(s.list(m, 0, 100).await.unwrap()), vec![1, 2, 4, 5]);
    assert_eq!(seqs(s.list(m, 2, 1).await.unwrap()), vec![4]);
    assert_eq!(
        seqs(s.list(MailboxId([0xee; 16]), 0, 100).await.unwrap()),
        Vec::<u64>::new()
    );
    s.close().await.unwrap();
}

pub async fn ack_deletes_once_and_never_reuses_a_sequence<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    stored_seq(&*s, envelope(m, 1, 10), BIG).await;
    stored_seq(&*s, envelope(m, 2, 10), BIG).await;
    assert!(s.ack(m, 2).await.unwrap());
    assert!(!s.ack(m, 2).await.unwrap(), "acking twice is a no-op");
    assert!(!s.ack(m, 7).await.unwrap(), "nothing at that sequence");
    assert!(!s.ack(MailboxId([0xee; 16]), 1).await.unwrap());
    assert_eq!(s.envelope(m, 2).await.unwrap(), None);
    assert_eq!(
        stored_seq(&*s, envelope(m, 3, 10), BIG).await,
        3,
        "the acked sequence is not handed out again"
    );
    assert_eq!(
        s.deliver(envelope(m, 2, 10), BIG).await.unwrap(),
        DeliverOutcome::Duplicate { seq: 2 },
        "an acked envelope redelivered later is still a duplicate"
    );
    s.close().await.unwrap();
}

pub async fn quotas_count_bytes_and_envelopes<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let q = Quota {
        max_bytes: 100,
        max_envelopes: 2,
    };
    assert_eq!(stored_seq(&*s, envelope(m, 1, 60), q).await, 1);
    assert_eq!(
        s.deliver(envelope(m, 2, 60), q).await.unwrap(),
        DeliverOutcome::QuotaExceeded,
        "over the byte quota"
    );
    assert_eq!(
        stored_seq(&*s, envelope(m, 2, 40), q).await,
        2,
        "a refusal uses no sequence; exactly at the byte quota is allowed"
    );
    assert_eq!(
        s.deliver(envelope(m, 3, 1), q).await.unwrap(),
        DeliverOutcome::QuotaExceeded,
        "over the envelope count"
    );
    assert!(s.ack(m, 1).await.unwrap());
    assert_eq!(
        stored_seq(&*s, envelope(m, 3, 60), q).await,
        3,
        "an ack frees its bytes and its count"
    );
    s.close().await.unwrap();
}

pub async fn prune_forgets_only_acked_old_ids<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    stored_seq(&*s, envelope(m, 1, 10), BIG).await;
    stored_seq(&*s, envelope(m, 2, 10), BIG).await;
    assert!(s.ack(m, 1).await.unwrap());
    assert_eq!(
        s.prune_dedupe(5).await.unwrap(),
        0,
        "received at 5: not older"
    );
    assert_eq!(s.prune_dedupe(6).await.unwrap(), 1, "only the acked one");
    assert_eq!(
        s.deliver(envelope(m, 2, 10), BIG).await.unwrap(),
        DeliverOutcome::Duplicate { seq: 2 }
    );
    assert_eq!(
        stored_seq(&*s, envelope(m, 1, 10), BIG).await,
        3,
        "a forgotten id is a new envelope"
    );
    s.close().await.unwrap();
}

pub async fn outbound_queue_round_trips<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let sender = MailboxId([1; 16]);
    assert!(s.outbound().await.unwrap().is_empty());
    let (one, two) = (outbound_item(4, sender), outbound_item(5, sender));
    s.enqueue(one.clone(), Bytes::from_static(b"abc"))
        .await
        .unwrap();
    s.enqueue(two.clone(), Bytes::from_static(b"de"))
        .await
        .unwrap();
    let mut queued = s.outbound().await.unwrap();
    queued.sort_by_key(|i| i.id);
    assert_eq!(queued, vec![one.clone(), two.clone()]);
    assert_eq!(
        s.outbound_payload(QueueId([4; 16])).await.unwrap(),
        Some(Bytes::from_static(b"abc"))
    );
    let mut later = one.clone();
    later.attempts = 3;
    later.next_attempt_ms = 99;
    later.last_error = "connection refused".into();
    s.reschedule(later.clone()).await.unwrap();
    let mut queued = s.outbound().await.unwrap();
    queued.sort_by_key(|i| i.id);
    assert_eq!(
        queued,
        vec![later, two.clone()],
        "reschedule replaces the item"
    );
    assert_eq!(
        s.outbound_payload(QueueId([4; 16])).await.unwrap(),
        Some(Bytes::from_static(b"abc")),
        "reschedule keeps the payload"
    );
    s.finish(QueueId([4; 16]), None).await.unwrap();
    assert_eq!(s.outbound().await.unwrap(), vec![two]);
    assert_eq!(s.outbound_payload(QueueId([4; 16])).await.unwrap(), None);
    s.close().await.unwrap();
}

/// The relay's claim: a hop this handle enqueued is its own (no claim returns it); after a
/// reopen every stored hop is claimed exactly once; a finished hop is gone from the claims.
pub async fn the_queue_is_claimed_once<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let sender = MailboxId([1; 16]);
    for id in [4, 5, 6] {
        s.enqueue(outbound_item(id, sender), Bytes::from_static(b"abc"))
            .await
            .unwrap();
    }
    assert_eq!(
        s.claim_outbound(10).await.unwrap(),
        vec![],
        "hops enqueued by this handle are held by it already"
    );
    assert_eq!(s.renew_outbound().await.unwrap(), 3, "it holds all three");
    s.close().await.unwrap();
    drop(s);

    let s = b.open(dir.path()).await;
    let first = s.claim_outbound(2).await.unwrap();
    assert_eq!(first.len(), 2, "a claim takes at most `limit` hops");
    let second = s.claim_outbound(10).await.unwrap();
    let mut ids: Vec<u8> = first.iter().chain(&second).map(|i| i.id[0]).collect();
    ids.sort();
    assert_eq!(ids, vec![4, 5, 6], "each hop is claimed exactly once");
    assert!(s.claim_outbound(10).await.unwrap().is_empty());
    s.finish(QueueId([5; 16]), None).await.unwrap();
    assert_eq!(s.renew_outbound().await.unwrap(), 2);
    s.close().await.unwrap();
}

/// `deliver_forwarding`: the forwards are queued with a stored envelope, in its write, and
/// not at all for a duplicate, an unknown mailbox or a full one; they survive a reopen, do
/// not count in their mailbox's outbound limits (a store that keeps limits), and go with
/// the account.
pub async fn a_delivery_queues_its_forwards_only_when_stored<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(s.as_ref(), 1).await;
    let forward = |id: u8| {
        let mut item = outbound_item(id, m);
        item.forward = Some(ForwardJob {
            node_key: [id; 32],
            envelope: EnvelopeId([1; 16]),
        });
        (item, Bytes::from(vec![id; 5]))
    };
    let f = forward(7);
    assert_eq!(
        s.deliver_forwarding(envelope(m, 1, 10), BIG, vec![f.clone()])
            .await
            .unwrap(),
        DeliverOutcome::Stored { seq: 1 }
    );
    assert_eq!(s.outbound().await.unwrap(), vec![f.0.clone()]);
    assert_eq!(
        s.outbound_payload(QueueId([7; 16])).await.unwrap(),
        Some(f.1.clone())
    );
    assert_eq!(
        s.deliver_forwarding(envelope(m, 1, 10), BIG, vec![forward(8)])
            .await
            .unwrap(),
        DeliverOutcome::Duplicate { seq: 1 },
        "a duplicate queues no forward"
    );
    assert_eq!(
        s.deliver_forwarding(envelope(MailboxId([9; 16]), 2, 10), BIG, vec![forward(9)])
            .await
            .unwrap(),
        DeliverOutcome::UnknownMailbox
    );
    let full = Quota {
        max_bytes: 15,
        max_envelopes: 10,
    };
    assert_eq!(
        s.deliver_forwarding(envelope(m, 3, 10), full, vec![forward(10)])
            .await
            .unwrap(),
        DeliverOutcome::QuotaExceeded
    );
    assert_eq!(
        s.outbound().await.unwrap(),
        vec![f.0.clone()],
        "only the first"
    );
    s.close().await.unwrap();
    drop(s);

    let s = b.open(dir.path()).await;
    assert_eq!(
        s.outbound().await.unwrap(),
        vec![f.0.clone()],
        "kept, forward and all"
    );
    if s.keeps_limits() {
        assert!(
            s.enqueue_within(outbound_item(11, m), Bytes::from_static(b"abc"), 1, 0)
                .await
                .unwrap(),
            "a forward is not its mailbox's own hop"
        );
    }
    let deleted = s.delete_account(m).await.unwrap().expect("the account");
    assert!(deleted.queued >= 1);
    assert!(
        s.outbound().await.unwrap().is_empty(),
        "the forward went with its account"
    );
    s.close().await.unwrap();
}

pub async fn finish_stores_a_bounce_beyond_quota<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let full = Quota {
        max_bytes: 10,
        max_envelopes: 1,
    };
    stored_seq(&*s, envelope(m, 1, 10), full).await;
    s.enqueue(outbound_item(4, m), Bytes::from_static(b"abc"))
        .await
        .unwrap();
    s.finish(QueueId([4; 16]), Some(envelope(m, 2, 30)))
        .await
        .unwrap();
    assert!(s.outbound().await.unwrap().is_empty());
    let listed: Vec<u64> = s
        .list(m, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.seq)
        .collect();
    assert_eq!(
        listed,
        vec![1, 2],
        "a bounce is stored even in a full mailbox"
    );
    // A bounce for a mailbox that is gone is dropped; the hop still leaves the queue.
    s.enqueue(outbound_item(5, m), Bytes::from_static(b"x"))
        .await
        .unwrap();
    s.finish(
        QueueId([5; 16]),
        Some(envelope(MailboxId([0xee; 16]), 3, 5)),
    )
    .await
    .unwrap();
    assert!(s.outbound().await.unwrap().is_empty());
    s.close().await.unwrap();
}

/// `take` moves a letter out of a mailbox into the queue (or a bounce) in one write, once.
pub async fn take_hands_a_letter_on_once<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let outbox = new_mailbox(&*s, 1).await;
    let sender = new_mailbox(&*s, 2).await;
    let first = stored_seq(&*s, envelope(outbox, 1, 10), BIG).await;
    let second = stored_seq(&*s, envelope(outbox, 2, 10), BIG).await;
    let third = stored_seq(&*s, envelope(outbox, 3, 10), BIG).await;
    let mut job = outbound_item(7, sender);
    job.smtp = Some(SmtpJob {
        from: "alice@a.test".into(),
        rcpts: vec!["carol@legacy.test".into(), "dave@legacy.test".into()],
        message_id: "m1@a.test".into(),
        failed: vec![("eve@legacy.test".into(), "550 5.1.1 no such user".into())],
    });
    let payload = Bytes::from_static(b"Subject: x\r\n\r\nbody\r\n");
    let handoff = || Handoff::Enqueue(vec![(job.clone(), payload.clone())]);
    assert!(s.take(outbox, first, handoff()).await.unwrap());
    assert!(
        !s.take(outbox, first, handoff()).await.unwrap(),
        "a letter is taken once"
    );
    assert_eq!(
        s.outbound().await.unwrap(),
        vec![job.clone()],
        "SMTP fields kept"
    );
    assert_eq!(
        s.outbound_payload(QueueId([7; 16])).await.unwrap(),
        Some(payload.clone())
    );
    // Taken again after the job was done: nothing comes back.
    s.finish(QueueId([7; 16]), None).await.unwrap();
    assert!(!s.take(outbox, first, handoff()).await.unwrap());
    assert!(s.outbound().await.unwrap().is_empty(), "no second job");
    // A bounce instead, and a plain drop.
    assert!(
        s.take(outbox, second, Handoff::Bounce(envelope(sender, 9, 5)))
            .await
            .unwrap()
    );
    assert!(s.take(outbox, third, Handoff::Drop).await.unwrap());
    assert!(s.list(outbox, 0, 10).await.unwrap().is_empty());
    let bounced: Vec<EnvelopeId> = s
        .list(sender, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(bounced, vec![EnvelopeId([9; 16])]);
    assert!(
        !s.take(outbox, second, Handoff::Bounce(envelope(sender, 10, 5)))
            .await
            .unwrap()
    );
    assert_eq!(s.list(sender, 0, 10).await.unwrap().len(), 1, "one bounce");
    s.close().await.unwrap();
}

pub async fn peer_pins_are_kept_per_url<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    assert!(s.peer_pins().await.unwrap().is_empty());
    let (a, c) = (
        NodeUrl::parse("https://a.test").unwrap(),
        NodeUrl::parse("https://c.test:8443").unwrap(),
    );
    let pin = |k: u8| PeerPin {
        node_key: [k; 32],
        pinned_at: 100 + k as u64,
    };
    s.pin_peer(a.clone(), pin(1)).await.unwrap();
    s.pin_peer(c.clone(), pin(2)).await.unwrap();
    s.pin_peer(a.clone(), pin(3)).await.unwrap();
    let mut pins = s.peer_pins().await.unwrap();
    pins.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(
        pins,
        vec![(a, pin(3)), (c, pin(2))],
        "one pin per URL, the latest"
    );
    s.close().await.unwrap();
}

pub async fn everything_survives_reopen<B: Backend>(b: &B) {
    let dir = place();
    let sender = MailboxId([1; 16]);
    let peer = NodeUrl::parse("https://a.test").unwrap();
    let pin = PeerPin {
        node_key: [7; 32],
        pinned_at: 3,
    };
    let m = {
        let s = b.open(dir.path()).await;
        let RegisterOutcome::Created(m) = s.register(account(1, Some("inv"))).await.unwrap() else {
            panic!("register");
        };
        s.put_record("a@b.test".into(), m, 2, b"two".to_vec())
            .await
            .unwrap();
        stored_seq(&*s, envelope(m, 1, 10), BIG).await;
        stored_seq(&*s, envelope(m, 2, 10), BIG).await;
        assert!(s.ack(m, 2).await.unwrap());
        s.enqueue(outbound_item(4, sender), Bytes::from_static(b"abc"))
            .await
            .unwrap();
        s.pin_peer(peer.clone(), pin).await.unwrap();
        s.close().await.unwrap();
        m
    };
    let s = b.open(dir.path()).await;
    assert_eq!(
        s.account(m).await.unwrap().map(|a| a.cert),
        Some(vec![0x99, 1])
    );
    assert_eq!(
        s.register(account(1, None)).await.unwrap(),
        RegisterOutcome::Existing(m)
    );
    assert_eq!(
        s.register(account(2, Some("inv"))).await.unwrap(),
        RegisterOutcome::InviteUsed
    );
    assert_eq!(
        s.record("a@b.test".into()).await.unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    assert_eq!(
        s.put_record("a@b.test".into(), m, 2, b"x".to_vec())
            .await
            .unwrap(),
        RecordOutcome::Stale { stored: 2 }
    );
    let listed: Vec<u64> = s
        .list(m, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|i| i.seq)
        .collect();
    assert_eq!(listed, vec![1]);
    assert_eq!(
        s.envelope(m, 1).await.unwrap(),
        Some(Bytes::from(vec![1u8; 10]))
    );
    assert_eq!(
        s.deliver(envelope(m, 2, 10), BIG).await.unwrap(),
        DeliverOutcome::Duplicate { seq: 2 },
        "dedupe survives"
    );
    assert_eq!(
        stored_seq(&*s, envelope(m, 3, 10), BIG).await,
        3,
        "sequences continue"
    );
    assert_eq!(s.outbound().await.unwrap(), vec![outbound_item(4, sender)]);
    assert_eq!(
        s.outbound_payload(QueueId([4; 16])).await.unwrap(),
        Some(Bytes::from_static(b"abc"))
    );
    assert_eq!(s.peer_pins().await.unwrap(), vec![(peer, pin)]);
    s.close().await.unwrap();
}

pub async fn writes_after_close_are_refused<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    s.close().await.unwrap();
    assert!(matches!(
        s.deliver(envelope(m, 1, 10), BIG).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.register(account(2, None)).await,
        Err(StoreError::Closed)
    ));
}

/// Device `n`: id `[n; 16]`, key `[n; 32]`, named `dn`.
pub fn device(n: u8) -> Device {
    Device {
        id: DeviceId([n; 16]),
        key: [n; 32],
        name: format!("d{n}"),
        created: 1_700_000_000 + n as u64,
    }
}

async fn seqs_for(s: &dyn Store, m: MailboxId, d: DeviceId) -> Vec<u64> {
    let items = s.list_for(m, d, 0, 100).await.expect("list_for");
    items.iter().map(|i| i.seq).collect()
}

async fn seqs(s: &dyn Store, m: MailboxId) -> Vec<u64> {
    let items = s.list(m, 0, 100).await.expect("list");
    items.iter().map(|i| i.seq).collect()
}

pub async fn every_device_acks_every_envelope<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let account = DeviceId::ACCOUNT;
    // Without devices, the account key is the only device: its ack deletes.
    let one = stored_seq(&*s, envelope(m, 1, 10), BIG).await;
    assert_eq!(s.devices(m).await.unwrap(), vec![]);
    assert_eq!(
        s.ack_device(m, one, account).await.unwrap(),
        DeviceAck::Deleted
    );
    assert_eq!(seqs(&*s, m).await, Vec::<u64>::new());
    let (d1, d2, d3) = (device(1), device(2), device(3));
    assert_eq!(
        s.add_device(m, d1.clone(), 2).await.unwrap(),
        AddDeviceOutcome::Added
    );
    assert_eq!(
        s.add_device(m, d1.clone(), 2).await.unwrap(),
        AddDeviceOutcome::Existing
    );
    assert_eq!(
        s.add_device(m, d2.clone(), 2).await.unwrap(),
        AddDeviceOutcome::Added
    );
    assert_eq!(
        s.add_device(m, d3.clone(), 2).await.unwrap(),
        AddDeviceOutcome::TooMany
    );
    assert_eq!(
        s.add_device(MailboxId([0xee; 16]), d3.clone(), 2)
            .await
            .unwrap(),
        AddDeviceOutcome::UnknownMailbox
    );
    assert_eq!(s.devices(m).await.unwrap(), vec![d1.clone(), d2.clone()]);
    let a = stored_seq(&*s, envelope(m, 2, 10), BIG).await;
    let b2 = stored_seq(&*s, envelope(m, 3, 10), BIG).await;
    let c = stored_seq(&*s, envelope(m, 4, 10), BIG).await;
    assert_eq!(seqs_for(&*s, m, d1.id).await, vec![a, b2, c]);
    assert_eq!(
        s.ack_device(m, a, d1.id).await.unwrap(),
        DeviceAck::Recorded
    );
    assert_eq!(
        s.ack_device(m, a, d1.id).await.unwrap(),
        DeviceAck::Missing,
        "a second ack by the same device does nothing"
    );
    assert_eq!(seqs_for(&*s, m, d1.id).await, vec![b2, c]);
    assert_eq!(seqs_for(&*s, m, d2.id).await, vec![a, b2, c]);
    assert_eq!(
        s.list_for(m, d1.id, a, 1).await.unwrap().len(),
        1,
        "pages from a cursor"
    );
    assert_eq!(
        seqs(&*s, m).await,
        vec![a, b2, c],
        "kept for the other device"
    );
    assert_eq!(s.ack_device(m, a, d2.id).await.unwrap(), DeviceAck::Deleted);
    assert_eq!(seqs(&*s, m).await, vec![b2, c]);
    assert_eq!(s.envelope(m, a).await.unwrap(), None);
    assert_eq!(s.ack_device(m, a, d1.id).await.unwrap(), DeviceAck::Missing);
    assert_eq!(
        s.ack_device(m, b2, account).await.unwrap(),
        DeviceAck::UnknownDevice,
        "once devices are registered the account key is none of them"
    );
    assert_eq!(
        s.ack_device(m, b2, d3.id).await.unwrap(),
        DeviceAck::UnknownDevice
    );
    // Acks of one batch see each other: both devices at once delete the envelope.
    let (x, y) = tokio::join!(s.ack_device(m, b2, d1.id), s.ack_device(m, b2, d2.id));
    let mut both = [x.unwrap(), y.unwrap()];
    both.sort_by_key(|o| *o == DeviceAck::Deleted);
    assert_eq!(both, [DeviceAck::Recorded, DeviceAck::Deleted]);
    assert_eq!(seqs(&*s, m).await, vec![c]);
    // A plain ack (internal mailboxes) deletes whatever the devices did.
    assert_eq!(
        s.ack_device(m, c, d1.id).await.unwrap(),
        DeviceAck::Recorded
    );
    assert!(s.ack(m, c).await.unwrap());
    assert_eq!(seqs_for(&*s, m, d2.id).await, Vec::<u64>::new());
    s.close().await.unwrap();
}

pub async fn batched_fetch_and_ack<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let mut at = Vec::new();
    for id in 1..=5u8 {
        at.push(stored_seq(&*s, envelope(m, id, 100), BIG).await);
    }
    let (a, b2, c, d, e) = (at[0], at[1], at[2], at[3], at[4]);
    let body = |id: u8| Some(Bytes::from(vec![id; 100]));
    // In the order asked, with a gap where there is nothing.
    assert_eq!(
        s.envelopes(m, vec![c, a, 999, e], 1 << 20).await.unwrap(),
        vec![(c, body(3)), (a, body(1)), (999, None), (e, body(5))]
    );
    // The byte budget cuts the answer to a prefix; a first envelope always fits.
    assert_eq!(
        s.envelopes(m, vec![a, b2, c], 250).await.unwrap(),
        vec![(a, body(1)), (b2, body(2))],
        "a byte budget of 250 answers two envelopes of 100"
    );
    assert_eq!(
        s.envelopes(m, vec![b2, c], 0).await.unwrap(),
        vec![(b2, body(2))]
    );
    assert_eq!(
        s.envelopes(MailboxId([0xee; 16]), vec![a], 1 << 20)
            .await
            .unwrap(),
        vec![(a, None)],
        "another mailbox's sequence numbers name nothing here"
    );
    // Without devices the account's acks delete; each ack sees the ones before it.
    let account = DeviceId::ACCOUNT;
    assert_eq!(
        s.ack_devices(m, vec![a, a, 999, b2], account)
            .await
            .unwrap(),
        vec![
            DeviceAck::Deleted,
            DeviceAck::Missing,
            DeviceAck::Missing,
            DeviceAck::Deleted
        ]
    );
    assert_eq!(seqs(&*s, m).await, vec![c, d, e]);
    assert_eq!(
        s.envelopes(m, vec![a, c], 1 << 20).await.unwrap(),
        vec![(a, None), (c, body(3))]
    );
    // With devices, each one's batch is recorded until the last device's deletes.
    let (d1, d2) = (device(1), device(2));
    s.add_device(m, d1.clone(), 4).await.unwrap();
    s.add_device(m, d2.clone(), 4).await.unwrap();
    assert_eq!(
        s.ack_devices(m, vec![c, d], d1.id).await.unwrap(),
        vec![DeviceAck::Recorded, DeviceAck::Recorded]
    );
    assert_eq!(seqs_for(&*s, m, d1.id).await, vec![e]);
    assert_eq!(seqs_for(&*s, m, d2.id).await, vec![c, d, e]);
    assert_eq!(
        s.ack_devices(m, vec![d, c, d], d2.id).await.unwrap(),
        vec![DeviceAck::Deleted, DeviceAck::Deleted, DeviceAck::Missing]
    );
    assert_eq!(seqs(&*s, m).await, vec![e]);
    assert_eq!(
        s.ack_devices(m, vec![e], account).await.unwrap(),
        vec![DeviceAck::UnknownDevice]
    );
    // Quota freed by batched acks: the mailbox counts one envelope.
    assert_eq!(
        s.deliver(
            envelope(m, 9, 100),
            Quota {
                max_bytes: 1 << 20,
                max_envelopes: 2
            }
        )
        .await
        .unwrap(),
        DeliverOutcome::Stored { seq: e + 1 }
    );
    s.close().await.unwrap();
}

pub async fn removing_a_device_releases_what_only_it_owed<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let (d1, d2, d3) = (device(1), device(2), device(3));
    for d in [&d1, &d2, &d3] {
        assert_eq!(
            s.add_device(m, d.clone(), 10).await.unwrap(),
            AddDeviceOutcome::Added
        );
    }
    let a = stored_seq(&*s, envelope(m, 1, 10), BIG).await;
    let c = stored_seq(&*s, envelope(m, 2, 10), BIG).await;
    for d in [&d1, &d2] {
        assert_eq!(s.ack_device(m, a, d.id).await.unwrap(), DeviceAck::Recorded);
    }
    assert_eq!(
        s.ack_device(m, c, d3.id).await.unwrap(),
        DeviceAck::Recorded
    );
    assert_eq!(
        s.remove_device(m, d3.id).await.unwrap(),
        RemoveDeviceOutcome::Removed { released: 1 }
    );
    assert_eq!(seqs(&*s, m).await, vec![c]);
    assert_eq!(
        s.ack_device(m, c, d3.id).await.unwrap(),
        DeviceAck::UnknownDevice,
        "a removed device acknowledges nothing"
    );
    assert_eq!(
        s.remove_device(m, d3.id).await.unwrap(),
        RemoveDeviceOutcome::Unknown
    );
    assert_eq!(
        s.remove_device(m, DeviceId::ACCOUNT).await.unwrap(),
        RemoveDeviceOutcome::Unknown
    );
    assert_eq!(
        s.remove_device(m, d2.id).await.unwrap(),
        RemoveDeviceOutcome::Removed { released: 0 }
    );
    assert_eq!(
        s.remove_device(m, d1.id).await.unwrap(),
        RemoveDeviceOutcome::Last
    );
    assert_eq!(s.devices(m).await.unwrap(), vec![d1.clone()]);
    assert_eq!(s.ack_device(m, c, d1.id).await.unwrap(), DeviceAck::Deleted);
    // A device added again later starts with what is stored, not with old acks.
    assert_eq!(
        s.add_device(m, d3.clone(), 10).await.unwrap(),
        AddDeviceOutcome::Added
    );
    let e = stored_seq(&*s, envelope(m, 3, 10), BIG).await;
    assert_eq!(seqs_for(&*s, m, d3.id).await, vec![e]);
    s.close().await.unwrap();
}

pub async fn retention_expires_envelopes_whatever_their_acks<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let (d1, d2) = (device(1), device(2));
    s.add_device(m, d1.clone(), 10).await.unwrap();
    s.add_device(m, d2.clone(), 10).await.unwrap();
    let old = stored_seq(&*s, envelope(m, 1, 10), BIG).await;
    let new = stored_seq(
        &*s,
        NewEnvelope {
            received: 100,
            ..envelope(m, 2, 10)
        },
        BIG,
    )
    .await;
    assert_eq!(
        s.ack_device(m, old, d1.id).await.unwrap(),
        DeviceAck::Recorded
    );
    assert_eq!(
        s.expire(5).await.unwrap(),
        0,
        "received at 5 is not before 5"
    );
    assert_eq!(s.expire(50).await.unwrap(), 1);
    assert_eq!(s.expire(50).await.unwrap(), 0);
    assert_eq!(seqs(&*s, m).await, vec![new]);
    assert_eq!(seqs_for(&*s, m, d2.id).await, vec![new]);
    assert_eq!(
        s.ack_device(m, old, d2.id).await.unwrap(),
        DeviceAck::Missing
    );
    assert_eq!(
        s.deliver(envelope(m, 1, 10), BIG).await.unwrap(),
        DeliverOutcome::Duplicate { seq: old },
        "an expired envelope's id is still known: a redelivery is not stored again"
    );
    s.close().await.unwrap();
}

pub async fn devices_and_their_acks_survive_reopen<B: Backend>(b: &B) {
    let dir = place();
    let (m, a) = {
        let s = b.open(dir.path()).await;
        let m = new_mailbox(&*s, 1).await;
        s.add_device(m, device(1), 10).await.unwrap();
        s.add_device(m, device(2), 10).await.unwrap();
        let a = stored_seq(&*s, envelope(m, 1, 10), BIG).await;
        assert_eq!(
            s.ack_device(m, a, device(1).id).await.unwrap(),
            DeviceAck::Recorded
        );
        s.close().await.unwrap();
        (m, a)
    };
    let s = b.open(dir.path()).await;
    assert_eq!(s.devices(m).await.unwrap(), vec![device(1), device(2)]);
    assert_eq!(seqs_for(&*s, m, device(1).id).await, Vec::<u64>::new());
    assert_eq!(seqs_for(&*s, m, device(2).id).await, vec![a]);
    assert_eq!(
        s.ack_device(m, a, device(2).id).await.unwrap(),
        DeviceAck::Deleted
    );
    s.close().await.unwrap();
}

pub async fn account_settings_are_kept_and_override_the_quota<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let m = new_mailbox(&*s, 1).await;
    let other = new_mailbox(&*s, 2).await;
    let unknown = MailboxId([7; 16]);
    let set = AccountSettings {
        suspended: true,
        quota_bytes: Some(50),
    };
    assert!(!s.set_account_settings(unknown, set).await.unwrap());
    assert!(
        s.account(unknown).await.unwrap().is_none(),
        "no account appears"
    );
    assert!(s.set_account_settings(m, set).await.unwrap());
    assert_eq!(
        s.deliver(envelope(m, 1, 60), BIG).await.unwrap(),
        DeliverOutcome::QuotaExceeded,
        "the account's quota replaces the byte quota given"
    );
    assert_eq!(
        stored_seq(&*s, envelope(m, 1, 50), BIG).await,
        1,
        "a suspended account's mail is held"
    );
    assert_eq!(
        stored_seq(&*s, envelope(other, 1, 60), BIG).await,
        1,
        "other accounts keep theirs"
    );
    s.finish(QueueId([9; 16]), Some(envelope(m, 2, 70)))
        .await
        .unwrap();
    let u = s
        .account_usage(m)
        .await
        .unwrap()
        .expect("usage of an account");
    assert_eq!(
        (u.bytes, u.envelopes, u.settings),
        (120, 2, set),
        "a bounce ignores the override"
    );
    assert_eq!(u.created, account(1, None).created);
    assert!(s.account_usage(unknown).await.unwrap().is_none());
    assert_eq!(s.account_settings(m).await.unwrap(), Some(set));
    assert_eq!(
        s.account_settings(other).await.unwrap(),
        Some(AccountSettings::default())
    );
    assert_eq!(s.account_settings(unknown).await.unwrap(), None);
    let all = s.accounts(10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all.iter().find(|a| a.mailbox == other).map(|a| a.settings),
        Some(AccountSettings::default())
    );
    assert_eq!(s.accounts(1).await.unwrap().len(), 1, "the limit holds");
    s.close().await.unwrap();
    drop(s);
    let s = b.open(dir.path()).await;
    assert_eq!(
        s.account_usage(m).await.unwrap().map(|u| u.settings),
        Some(set),
        "settings survive reopen"
    );
    assert!(
        s.set_account_settings(m, AccountSettings::default())
            .await
            .unwrap()
    );
    assert_eq!(
        stored_seq(&*s, envelope(m, 3, 60), BIG).await,
        3,
        "without override the given quota counts"
    );
    s.close().await.unwrap();
}

pub async fn deleting_an_account_removes_all_its_data<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let mut a = account(1, None);
    a.addresses = vec!["gone@a.test".into()];
    let RegisterOutcome::Created(m) = s.register(a.clone()).await.unwrap() else {
        panic!("register");
    };
    let mut k = account(2, None);
    k.addresses = vec!["kept@a.test".into()];
    let RegisterOutcome::Created(kept) = s.register(k).await.unwrap() else {
        panic!("register");
    };
    s.put_record("gone@a.test".into(), m, 1, vec![1])
        .await
        .unwrap();
    s.put_record("kept@a.test".into(), kept, 1, vec![2])
        .await
        .unwrap();
    for id in 1..=3 {
        stored_seq(&*s, envelope(m, id, 10), BIG).await;
        stored_seq(&*s, envelope(kept, id, 10), BIG).await;
    }
    assert_eq!(
        s.add_device(m, device(1), 4).await.unwrap(),
        AddDeviceOutcome::Added
    );
    assert_eq!(
        s.add_device(m, device(2), 4).await.unwrap(),
        AddDeviceOutcome::Added
    );
    assert_eq!(
        s.ack_device(m, 1, device(1).id).await.unwrap(),
        DeviceAck::Recorded
    );
    s.enqueue(outbound_item(1, m), Bytes::from_static(b"abc"))
        .await
        .unwrap();
    s.enqueue(outbound_item(2, kept), Bytes::from_static(b"def"))
        .await
        .unwrap();

    assert_eq!(
        s.delete_account(MailboxId([7; 16])).await.unwrap(),
        None,
        "unknown account"
    );
    assert_eq!(
        s.delete_account(m).await.unwrap(),
        Some(DeletedAccount {
            envelopes: 3,
            addresses: 1,
            devices: 2,
            queued: 1
        })
    );
    assert_eq!(s.delete_account(m).await.unwrap(), None, "deleted once");
    let check = |s: Arc<dyn Store>| async move {
        assert!(s.account(m).await.unwrap().is_none());
        assert!(s.account_usage(m).await.unwrap().is_none());
        assert_eq!(s.mailbox_of(vec![1; 20]).await.unwrap(), None);
        assert_eq!(s.owner_of("gone@a.test".into()).await.unwrap(), None);
        assert!(s.record("gone@a.test".into()).await.unwrap().is_none());
        assert!(s.list(m, 0, 10).await.unwrap().is_empty());
        assert!(s.envelope(m, 2).await.unwrap().is_none());
        assert!(s.devices(m).await.unwrap().is_empty());
        let queue: Vec<[u8; 16]> = s.outbound().await.unwrap().iter().map(|i| i.id).collect();
        assert_eq!(queue, vec![[2; 16]], "only the other account's hop is left");
        assert!(
            s.outbound_payload(QueueId([1; 16]))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            s.deliver(envelope(m, 9, 1), BIG).await.unwrap(),
            DeliverOutcome::UnknownMailbox
        );
        // The other account is untouched.
        assert_eq!(s.owner_of("kept@a.test".into()).await.unwrap(), Some(kept));
        assert!(s.record("kept@a.test".into()).await.unwrap().is_some());
        assert_eq!(seqs(&*s, kept).await, vec![1, 2, 3]);
        assert_eq!(s.accounts(10).await.unwrap().len(), 1);
        s
    };
    let s = check(s).await;
    // The certificate and the address can be registered anew: a fresh account.
    let RegisterOutcome::Created(again) = s.register(a).await.unwrap() else {
        panic!("the fingerprint is free again");
    };
    assert_ne!(again, m);
    assert_eq!(
        s.delete_account(again).await.unwrap().map(|d| d.envelopes),
        Some(0)
    );
    s.close().await.unwrap();
    drop(s);
    let s = b.open(dir.path()).await;
    let s = check(s).await;
    s.close().await.unwrap();
}

pub async fn stored_invites_count_uses_expire_and_revoke<B: Backend>(b: &B) {
    let hash = sealpost_server::store::invite_hash;
    let dir = place();
    let s = b.open(dir.path()).await;
    let created = account(1, None).created;
    let twice = StoredInvite {
        created,
        expires: None,
        uses: 2,
        used: 0,
        revoked: false,
    };
    assert!(s.put_invite(hash("twice"), twice).await.unwrap());
    assert!(
        !s.put_invite(hash("twice"), twice).await.unwrap(),
        "created once"
    );
    let expired = StoredInvite {
        expires: Some(created),
        ..twice
    };
    assert!(s.put_invite(hash("old"), expired).await.unwrap());
    assert!(s.put_invite(hash("gone"), twice).await.unwrap());
    assert!(s.revoke_invite(hash("gone")).await.unwrap());
    assert!(
        !s.revoke_invite(hash("gone")).await.unwrap(),
        "revoked once"
    );
    assert!(!s.revoke_invite(hash("never")).await.unwrap());

    // Three registrations race for two uses: exactly two win.
    let (o1, o2, o3) = tokio::join!(
        s.register(account(1, Some("twice"))),
        s.register(account(2, Some("twice"))),
        s.register(account(3, Some("twice"))),
    );
    let outcomes = [o1, o2, o3];
    let created_n = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RegisterOutcome::Created(_))))
        .count();
    assert_eq!(created_n, 2, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Ok(RegisterOutcome::InviteUsed)))
    );
    assert_eq!(
        s.invite(hash("twice")).await.unwrap().map(|i| i.used),
        Some(2)
    );
    assert_eq!(
        s.register(account(4, Some("old"))).await.unwrap(),
        RegisterOutcome::InviteUsed,
        "an invite is refused from its expiry on"
    );
    assert_eq!(
        s.register(account(5, Some("gone"))).await.unwrap(),
        RegisterOutcome::InviteUsed,
        "a revoked invite is refused"
    );
    let mut listed = s.invites().await.unwrap();
    listed.sort_by_key(|(h, _)| *h);
    let mut want = vec![
        (hash("twice"), StoredInvite { used: 2, ..twice }),
        (hash("old"), expired),
        (
            hash("gone"),
            StoredInvite {
                revoked: true,
                ..twice
            },
        ),
    ];
    want.sort_by_key(|(h, _)| *h);
    assert_eq!(listed, want, "kept by hash, with their counts");
    assert_eq!(s.invite(hash("never")).await.unwrap(), None);
    s.close().await.unwrap();
    drop(s);
    let s = b.open(dir.path()).await;
    assert_eq!(
        s.invites().await.unwrap().len(),
        3,
        "invites survive reopen"
    );
    s.close().await.unwrap();
}

/// A shared rate-limit bucket ([`Store::take_tokens`]) follows [`Bucket::take`]: a new
/// bucket gives its burst (in part when less is left), then one token per interval; keys
/// are independent; concurrent takes add up to exactly what the bucket held; a full bucket
/// is swept and behaves like a new one.
pub async fn rate_limit_buckets_hold<B: Backend>(b: &B) {
    let dir = place();
    let s = b.open(dir.path()).await;
    let bucket = Bucket {
        interval_us: 1_000_000,
        burst: 5,
    };
    let t0 = 1_700_000_000_000_000u64;
    let take = |key: u8, at: u64, want: u64| s.take_tokens([key; 32], bucket, at, want);
    let first = take(1, t0, 3).await.unwrap();
    assert_eq!(
        first,
        Tokens {
            granted: 3,
            tat: t0 + 3_000_000
        }
    );
    assert_eq!(
        take(1, t0, 3).await.unwrap().granted,
        2,
        "what is left, not more"
    );
    let empty = take(1, t0, 1).await.unwrap();
    assert_eq!(empty.granted, 0);
    assert_eq!(
        bucket.wait_us(empty.tat, t0),
        1_000_000,
        "one interval to the next token"
    );
    assert_eq!(
        take(2, t0, 9).await.unwrap().granted,
        5,
        "keys are independent"
    );
    assert_eq!(
        take(1, t0 + 999_999, 1).await.unwrap().granted,
        0,
        "whole tokens only"
    );
    assert_eq!(take(1, t0 + 1_000_000, 2).await.unwrap().granted, 1);
    assert_eq!(take(1, t0 + 1_000_000, 1).await.unwrap().granted, 0);
    // Many takers at once, as from several processes: together exactly the burst.
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.take_tokens([3; 32], bucket, t0, 1).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for r in racers {
        granted += r.await.unwrap().granted;
    }
    assert_eq!(granted, 5);
    // Full again 6 s later (5 intervals after its last take): swept, and like new.
    assert_eq!(
        s.sweep_limits(t0 + 1_000_000).await.unwrap(),
        0,
        "none is full yet"
    );
    assert!(s.sweep_limits(t0 + 6_000_000).await.unwrap() >= 3);
    assert_eq!(take(1, t0 + 6_000_000, 9).await.unwrap().granted, 5);
    s.close().await.unwrap();
}

/// One `#[tokio::test]` per conformance case for `$backend` (an expression of a type that
/// implements [`Backend`]). Put it in its own test file or module: the tests are named
/// after the cases. Every case of this module is listed here.
#[macro_export]
macro_rules! store_conformance {
    ($backend:expr) => {
        $crate::store_conformance!(@cases $backend;
            registration_is_idempotent,
            invite_codes_work_once,
            records_only_move_forward,
            addresses_belong_to_their_first_account,
            deliveries_get_sequences_and_dedupe,
            concurrent_deliveries_get_distinct_sequences,
            mixed_concurrent_deliveries_are_decided_one_by_one,
            list_pages_from_a_cursor,
            ack_deletes_once_and_never_reuses_a_sequence,
            quotas_count_bytes_and_envelopes,
            prune_forgets_only_acked_old_ids,
            outbound_queue_round_trips,
            the_queue_is_claimed_once,
            finish_stores_a_bounce_beyond_quota,
            a_delivery_queues_its_forwards_only_when_stored,
            take_hands_a_letter_on_once,
            peer_pins_are_kept_per_url,
            everything_survives_reopen,
            writes_after_close_are_refused,
            every_device_acks_every_envelope,
            removing_a_device_releases_what_only_it_owed,
            retention_expires_envelopes_whatever_their_acks,
            devices_and_their_acks_survive_reopen,
            batched_fetch_and_ack,
            account_settings_are_kept_and_override_the_quota,
            deleting_an_account_removes_all_its_data,
            stored_invites_count_uses_expire_and_revoke,
            rate_limit_buckets_hold,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                $crate::conformance::$case(&$backend).await
            }
        )*
    };
}
