//! The `Store` conformance suite (`sealpost_testkit::conformance`) on the RocksDB backend.
//! A new backend gets a file like this one naming its `Backend` (see `spec/node.md`
//! §Storage).

use std::path::Path;
use std::sync::Arc;

use sealpost_server::config::StorageConfig;
use sealpost_server::store::{RocksStore, Store};

struct Rocks;

impl sealpost_testkit::conformance::Backend for Rocks {
    async fn open(&self, place: &Path) -> Arc<dyn Store> {
        let store: Arc<dyn Store> =
            RocksStore::open(place, &StorageConfig::default()).expect("open the RocksDB store");
        store
    }
}

sealpost_testkit::store_conformance!(Rocks);

/// The suite catches a store that breaks the contract: each mutant is RocksDB with one rule
/// broken, and the case that guards that rule must fail on it.
mod mutants {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use sealpost_proto::{DeviceId, MailboxId, NodeUrl};
    use sealpost_server::config::StorageConfig;
    use sealpost_server::store::*;
    use sealpost_testkit::conformance::{self, BIG};

    #[derive(Clone, Copy, PartialEq)]
    enum Mutation {
        /// None: the wrapper alone changes nothing.
        Nothing,
        /// `list` ignores the cursor.
        ListIgnoresCursor,
        /// `deliver` ignores the quota it is given.
        NoQuota,
        /// `close` leaves the store writable.
        CloseDoesNothing,
        /// `ack_device` deletes at the first device's ack (one device takes the letter).
        FirstAckDeletes,
        /// `envelopes` answers every sequence number asked, whatever the byte budget.
        FetchIgnoresBudget,
    }

    struct Mutant {
        inner: Arc<RocksStore>,
        mutation: Mutation,
    }

    impl conformance::Backend for Mutation {
        async fn open(&self, place: &Path) -> Arc<dyn Store> {
            let inner = RocksStore::open(place, &StorageConfig::default()).expect("open");
            Arc::new(Mutant {
                inner,
                mutation: *self,
            })
        }
    }

    impl Store for Mutant {
        fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome> {
            self.inner.register(account)
        }
        fn put_record(
            &self,
            address: String,
            mailbox: MailboxId,
            sequence: u64,
            signed: Vec<u8>,
        ) -> StoreFuture<'_, RecordOutcome> {
            self.inner.put_record(address, mailbox, sequence, signed)
        }
        fn reset_address(&self, address: String) -> StoreFuture<'_, bool> {
            self.inner.reset_address(address)
        }
        fn owner_of(&self, address: String) -> StoreFuture<'_, Option<MailboxId>> {
            self.inner.owner_of(address)
        }
        fn deliver(&self, envelope: NewEnvelope, quota: Quota) -> StoreFuture<'_, DeliverOutcome> {
            let quota = if self.mutation == Mutation::NoQuota {
                BIG
            } else {
                quota
            };
            self.inner.deliver(envelope, quota)
        }
        fn deliver_forwarding(
            &self,
            envelope: NewEnvelope,
            quota: Quota,
            forwards: Vec<(OutboundItem, Bytes)>,
        ) -> StoreFuture<'_, DeliverOutcome> {
            self.inner.deliver_forwarding(envelope, quota, forwards)
        }
        fn ack(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, bool> {
            self.inner.ack(mailbox, seq)
        }
        fn enqueue(&self, item: OutboundItem, payload: Bytes) -> StoreFuture<'_, ()> {
            self.inner.enqueue(item, payload)
        }
        fn reschedule(&self, item: OutboundItem) -> StoreFuture<'_, ()> {
            self.inner.reschedule(item)
        }
        fn finish(&self, id: QueueId, bounce: Option<NewEnvelope>) -> StoreFuture<'_, ()> {
            self.inner.finish(id, bounce)
        }
        fn take(&self, mailbox: MailboxId, seq: u64, then: Handoff) -> StoreFuture<'_, bool> {
            self.inner.take(mailbox, seq, then)
        }
        fn pin_peer(&self, url: NodeUrl, pin: PeerPin) -> StoreFuture<'_, ()> {
            self.inner.pin_peer(url, pin)
        }
        fn add_device(
            &self,
            mailbox: MailboxId,
            device: Device,
            max: usize,
        ) -> StoreFuture<'_, AddDeviceOutcome> {
            self.inner.add_device(mailbox, device, max)
        }
        fn remove_device(
            &self,
            mailbox: MailboxId,
            device: DeviceId,
        ) -> StoreFuture<'_, RemoveDeviceOutcome> {
            self.inner.remove_device(mailbox, device)
        }
        fn ack_device(
            &self,
            mailbox: MailboxId,
            seq: u64,
            device: DeviceId,
        ) -> StoreFuture<'_, DeviceAck> {
            if self.mutation == Mutation::FirstAckDeletes {
                return Box::pin(async move {
                    Ok(match self.inner.ack(mailbox, seq).await? {
                        true => DeviceAck::Deleted,
                        false => DeviceAck::Missing,
                    })
                });
            }
            self.inner.ack_device(mailbox, seq, device)
        }
        fn ack_devices(
            &self,
            mailbox: MailboxId,
            seqs: Vec<u64>,
            device: DeviceId,
        ) -> StoreFuture<'_, Vec<DeviceAck>> {
            self.inner.ack_devices(mailbox, seqs, device)
        }
        fn envelopes(
            &self,
            mailbox: MailboxId,
            seqs: Vec<u64>,
            max_bytes: usize,
        ) -> StoreFuture<'_, Vec<(u64, Option<Bytes>)>> {
            let max_bytes = if self.mutation == Mutation::FetchIgnoresBudget {
                usize::MAX
            } else {
                max_bytes
            };
            self.inner.envelopes(mailbox, seqs, max_bytes)
        }
        fn expire(&self, received_before: u64) -> StoreFuture<'_, u64> {
            self.inner.expire(received_before)
        }
        fn devices(&self, mailbox: MailboxId) -> StoreFuture<'_, Vec<Device>> {
            self.inner.devices(mailbox)
        }
        fn list_for(
            &self,
            mailbox: MailboxId,
            device: DeviceId,
            after: u64,
            limit: usize,
        ) -> StoreFuture<'_, Vec<ListItem>> {
            self.inner.list_for(mailbox, device, after, limit)
        }
        fn account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<Account>> {
            self.inner.account(mailbox)
        }
        fn set_account_settings(
            &self,
            mailbox: MailboxId,
            settings: AccountSettings,
        ) -> StoreFuture<'_, bool> {
            self.inner.set_account_settings(mailbox, settings)
        }
        fn delete_account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<DeletedAccount>> {
            self.inner.delete_account(mailbox)
        }
        fn put_invite(&self, hash: [u8; 32], invite: StoredInvite) -> StoreFuture<'_, bool> {
            self.inner.put_invite(hash, invite)
        }
        fn revoke_invite(&self, hash: [u8; 32]) -> StoreFuture<'_, bool> {
            self.inner.revoke_invite(hash)
        }
        fn invites(&self) -> StoreFuture<'_, Vec<([u8; 32], StoredInvite)>> {
            self.inner.invites()
        }
        fn invite(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<StoredInvite>> {
            self.inner.invite(hash)
        }
        fn accounts(&self, limit: usize) -> StoreFuture<'_, Vec<AccountUsage>> {
            self.inner.accounts(limit)
        }
        fn account_settings(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountSettings>> {
            self.inner.account_settings(mailbox)
        }
        fn account_usage(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountUsage>> {
            self.inner.account_usage(mailbox)
        }
        fn mailbox_of(&self, fingerprint: Vec<u8>) -> StoreFuture<'_, Option<MailboxId>> {
            self.inner.mailbox_of(fingerprint)
        }
        fn record(&self, address: String) -> StoreFuture<'_, Option<Bytes>> {
            self.inner.record(address)
        }
        fn list(
            &self,
            mailbox: MailboxId,
            after: u64,
            limit: usize,
        ) -> StoreFuture<'_, Vec<ListItem>> {
            let after = if self.mutation == Mutation::ListIgnoresCursor {
                0
            } else {
                after
            };
            self.inner.list(mailbox, after, limit)
        }
        fn envelope(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, Option<Bytes>> {
            self.inner.envelope(mailbox, seq)
        }
        fn outbound(&self) -> StoreFuture<'_, Vec<OutboundItem>> {
            self.inner.outbound()
        }
        fn claim_outbound(&self, limit: usize) -> StoreFuture<'_, Vec<OutboundItem>> {
            self.inner.claim_outbound(limit)
        }
        fn renew_outbound(&self) -> StoreFuture<'_, u64> {
            self.inner.renew_outbound()
        }
        fn outbound_payload(&self, id: QueueId) -> StoreFuture<'_, Option<Bytes>> {
            self.inner.outbound_payload(id)
        }
        fn peer_pins(&self) -> StoreFuture<'_, Vec<(NodeUrl, PeerPin)>> {
            self.inner.peer_pins()
        }
        fn prune_dedupe(&self, received_before: u64) -> StoreFuture<'_, u64> {
            self.inner.prune_dedupe(received_before)
        }
        fn stats(&self) -> StoreStats {
            self.inner.stats()
        }
        fn close(&self) -> StoreFuture<'_, ()> {
            if self.mutation == Mutation::CloseDoesNothing {
                return Box::pin(std::future::ready(Ok(())));
            }
            self.inner.close()
        }
    }

    #[tokio::test]
    #[should_panic(expected = "left: [1, 2, 3, 4, 5]")]
    async fn a_list_that_ignores_the_cursor_fails() {
        conformance::list_pages_from_a_cursor(&Mutation::ListIgnoresCursor).await;
    }

    #[tokio::test]
    #[should_panic(expected = "over the byte quota")]
    async fn a_store_without_quotas_fails() {
        conformance::quotas_count_bytes_and_envelopes(&Mutation::NoQuota).await;
    }

    #[tokio::test]
    #[should_panic(expected = "StoreError::Closed")]
    async fn a_store_writable_after_close_fails() {
        conformance::writes_after_close_are_refused(&Mutation::CloseDoesNothing).await;
    }

    #[tokio::test]
    #[should_panic(expected = "Deleted")]
    async fn a_store_where_the_first_device_takes_the_letter_fails() {
        conformance::every_device_acks_every_envelope(&Mutation::FirstAckDeletes).await;
    }

    #[tokio::test]
    #[should_panic(expected = "a byte budget of 250")]
    async fn a_store_whose_batched_fetch_ignores_its_budget_fails() {
        conformance::batched_fetch_and_ack(&Mutation::FetchIgnoresBudget).await;
    }

    #[tokio::test]
    async fn the_wrapper_alone_passes() {
        conformance::list_pages_from_a_cursor(&Mutation::Nothing).await;
        conformance::quotas_count_bytes_and_envelopes(&Mutation::Nothing).await;
        conformance::writes_after_close_are_refused(&Mutation::Nothing).await;
        conformance::every_device_acks_every_envelope(&Mutation::Nothing).await;
        conformance::batched_fetch_and_ack(&Mutation::Nothing).await;
    }
}
