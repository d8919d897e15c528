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
        addresses: Vec::new(),
        rotation: None,
    }
}

fn claiming(fpr: u8, address: &str) -> NewAccount {
    NewAccount {
        addresses: vec![address.into()],
        ..account(fpr, None)
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
        let RegisterOutcome::Created(m) = s.register(account(1, None)).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            s.put_record("a@b.test".into(), m, 2, b"two".to_vec())
                .await
                .unwrap(),
            RecordOutcome::Stored
        );
        assert_eq!(
            s.put_record("a@b.test".into(), m, 2, b"again".to_vec())
                .await
                .unwrap(),
            RecordOutcome::Stale { stored: 2 }
        );
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
        smtp: None,
        forward: None,
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

#[tokio::test]
async fn an_address_belongs_to_its_first_account_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let RegisterOutcome::Created(bob) = s.register(claiming(1, "bob@b.test")).await.unwrap() else {
        panic!()
    };
    // Two racing registrations for one address (often in one batch): one wins, the other
    // writes nothing.
    let (first, second) = tokio::join!(
        s.register(claiming(2, "carol@b.test")),
        s.register(claiming(3, "carol@b.test"))
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, RegisterOutcome::Created(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| matches!(
        o,
        RegisterOutcome::AddressTaken { address } if address == "carol@b.test"
    )));
    let taken = s.register(claiming(4, "bob@b.test")).await.unwrap();
    assert_eq!(
        taken,
        RegisterOutcome::AddressTaken {
            address: "bob@b.test".into()
        }
    );
    assert_eq!(s.mailbox_of(vec![4; 20]).await.unwrap(), None);
    assert_eq!(s.owner_of("bob@b.test".into()).await.unwrap(), Some(bob));

    // Records: only the owner publishes; another account is refused and nothing changes.
    let RegisterOutcome::Created(eve) = s.register(account(5, None)).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        s.put_record("bob@b.test".into(), eve, 9, b"eve".to_vec())
            .await
            .unwrap(),
        RecordOutcome::NotOwner
    );
    assert_eq!(s.record("bob@b.test".into()).await.unwrap(), None);
    assert_eq!(
        s.put_record("bob@b.test".into(), bob, 1, b"bob".to_vec())
            .await
            .unwrap(),
        RecordOutcome::Stored
    );

    // Rotation: the owner's account takes the new certificate and keeps its mailbox.
    let rotation = Rotation {
        mailbox: bob,
        old_fingerprint: vec![1; 20],
    };
    let rotated = s
        .register(NewAccount {
            rotation: Some(rotation.clone()),
            ..claiming(6, "bob@b.test")
        })
        .await
        .unwrap();
    assert_eq!(rotated, RegisterOutcome::Rotated(bob));
    assert_eq!(s.mailbox_of(vec![6; 20]).await.unwrap(), Some(bob));
    assert_eq!(s.mailbox_of(vec![1; 20]).await.unwrap(), None);
    assert_eq!(s.account(bob).await.unwrap().unwrap().cert, vec![0x99, 6]);
    // A second rotation endorsed by the replaced key loses.
    assert!(matches!(
        s.register(NewAccount {
            rotation: Some(rotation),
            ..claiming(7, "bob@b.test")
        })
        .await
        .unwrap(),
        RegisterOutcome::AddressTaken { .. }
    ));

    // The operator's reset frees the address and drops its record.
    assert!(s.reset_address("bob@b.test".into()).await.unwrap());
    assert!(!s.reset_address("bob@b.test".into()).await.unwrap());
    assert_eq!(s.record("bob@b.test".into()).await.unwrap(), None);
    assert!(matches!(
        s.register(claiming(8, "bob@b.test")).await.unwrap(),
        RegisterOutcome::Created(_)
    ));
    s.close().await.unwrap();
    drop(s);

    // Claims are durable.
    let s = open(dir.path()).await;
    assert!(matches!(
        s.register(claiming(9, "carol@b.test")).await.unwrap(),
        RegisterOutcome::AddressTaken { .. }
    ));
    s.close().await.unwrap();
}

#[tokio::test]
async fn a_schema_1_database_gets_claims_for_its_oldest_accounts() {
    use sealpost_proto::Address;
    use sealpost_proto::identity::{SecretIdentity, cert_to_bytes};
    let cert = |a: &str| {
        let id = SecretIdentity::generate(&Address::parse(a).unwrap(), None).unwrap();
        cert_to_bytes(&id.public_cert())
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, later) = {
        let s = open(dir.path()).await;
        // Accounts as schema 1 wrote them: no claims. The later one took the address over.
        let register = |fpr: u8, created: u64, c: Vec<u8>| {
            let s = s.clone();
            async move {
                match s
                    .register(NewAccount {
                        cert: c,
                        created,
                        ..account(fpr, None)
                    })
                    .await
                    .unwrap()
                {
                    RegisterOutcome::Created(m) => m,
                    other => panic!("{other:?}"),
                }
            }
        };
        let later = register(1, 20, cert("bob@b.test")).await;
        let first = register(2, 10, cert("bob@b.test")).await;
        s.close().await.unwrap();
        (first, later)
    };
    assert_ne!(first, later);
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let mut cfs: Vec<&str> = super::super::rocks::COLUMN_FAMILIES.to_vec();
        cfs.push(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), key::SCHEMA, [1u8])
            .unwrap();
    }
    let s = open(dir.path()).await;
    assert_eq!(s.owner_of("bob@b.test".into()).await.unwrap(), Some(first));
    assert!(matches!(
        s.register(claiming(3, "bob@b.test")).await.unwrap(),
        RegisterOutcome::AddressTaken { .. }
    ));
    s.close().await.unwrap();
}
