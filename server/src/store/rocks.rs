//! The RocksDB store: column families, key layout, reads. Writes go to the single writer
//! thread in [`super::writer`], which group-commits them.
//!
//! Key layout (`spec/node.md` §Storage; integers big-endian so keys sort numerically):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `envelopes` | mailbox ‖ seq | encoded envelope |
//! | `index` | mailbox ‖ seq | envelope id ‖ size ‖ received |
//! | `dedupe` | mailbox ‖ envelope id | seq ‖ received |
//! | `accounts` | `a` ‖ mailbox | created ‖ certificate |
//! | | `f` ‖ cert fingerprint | mailbox |
//! | | `s` ‖ mailbox | next seq ‖ bytes ‖ count [‖ flags ‖ quota] (operator settings) |
//! | | `c` ‖ address | mailbox (the account that owns the address) |
//! | | `d` ‖ mailbox ‖ device id | created ‖ device key (32) ‖ name |
//! | `records` | address | sequence ‖ signed record |
//! | `outbound` | `m` ‖ queue id | JSON [`OutboundItem`] |
//! | | `p` ‖ queue id | hop payload |
//! | `acks` | mailbox ‖ seq ‖ device id | (empty): that device acknowledged the envelope |
//! | `peers` | node URL | node key ‖ pinned at |
//! | `meta` | `schema` | version |
//! | | `i` ‖ sha256(invite) | used at ‖ mailbox |
//! | | `v` ‖ sha256(invite) | a stored invite: created ‖ expires (0: never) ‖ uses (u32) ‖ used (u32) ‖ revoked (u8) |

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, IteratorMode, Options,
};
use sealpost_proto::{DeviceId, EnvelopeId, MailboxId, NodeUrl};
use tokio::sync::{mpsc, oneshot};

use super::writer::{MailboxState, Op, Reply, Writer};
use super::*;
use crate::config::StorageConfig;

pub const CF_ENVELOPES: &str = "envelopes";
pub const CF_INDEX: &str = "index";
pub const CF_DEDUPE: &str = "dedupe";
pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_RECORDS: &str = "records";
pub const CF_OUTBOUND: &str = "outbound";
pub const CF_PEERS: &str = "peers";
pub const CF_META: &str = "meta";
/// Per-device acknowledgements of envelopes still kept for other devices. Added after
/// schema 2 without a version change: a database without it gets it, empty, at open.
pub const CF_ACKS: &str = "acks";
/// Every column family, in creation order.
pub const COLUMN_FAMILIES: [&str; 9] = [
    CF_ENVELOPES,
    CF_INDEX,
    CF_DEDUPE,
    CF_ACCOUNTS,
    CF_RECORDS,
    CF_OUTBOUND,
    CF_PEERS,
    CF_META,
    CF_ACKS,
];

/// Version of the key layout above. Version 1 had no address claims; opening such a
/// database adds them (see [`migrate_claims`]).
pub const SCHEMA_VERSION: u8 = 2;

/// Operations waiting for the writer; senders wait (backpressure) beyond this.
const WRITE_QUEUE: usize = 8192;

pub(super) mod key {
    use super::*;

    pub fn mailbox_seq(mailbox: &MailboxId, seq: u64) -> [u8; 24] {
        let mut k = [0u8; 24];
        k[..16].copy_from_slice(mailbox.as_bytes());
        k[16..].copy_from_slice(&seq.to_be_bytes());
        k
    }
    pub fn dedupe(mailbox: &MailboxId, id: &EnvelopeId) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(mailbox.as_bytes());
        k[16..].copy_from_slice(id.as_bytes());
        k
    }
    pub fn device_ack(mailbox: &MailboxId, seq: u64, device: &DeviceId) -> [u8; 40] {
        let mut k = [0u8; 40];
        k[..24].copy_from_slice(&mailbox_seq(mailbox, seq));
        k[24..].copy_from_slice(device.as_bytes());
        k
    }
    pub fn device(mailbox: &MailboxId, device: &DeviceId) -> Vec<u8> {
        let mut k = prefixed(DEVICE, mailbox.as_bytes());
        k.extend_from_slice(device.as_bytes());
        k
    }
    pub fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + rest.len());
        k.push(prefix);
        k.extend_from_slice(rest);
        k
    }
    pub const ACCOUNT: u8 = b'a';
    pub const FINGERPRINT: u8 = b'f';
    pub const STATE: u8 = b's';
    pub const QUEUE_META: u8 = b'm';
    pub const QUEUE_PAYLOAD: u8 = b'p';
    pub const INVITE: u8 = b'i';
    pub const STORED_INVITE: u8 = b'v';
    pub const CLAIM: u8 = b'c';
    pub const DEVICE: u8 = b'd';
    pub const SCHEMA: &[u8] = b"schema";
}

pub(super) fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    v.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

pub(super) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("invariant: every column family is opened with the database")
}

/// Write-path counters, shared with the writer thread.
#[derive(Default)]
pub(super) struct SharedStats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub failed_batches: AtomicU64,
    pub batch_bytes: AtomicU64,
}

pub struct RocksStore {
    db: Arc<DB>,
    tx: RwLock<Option<mpsc::Sender<Op>>>,
    stats: Arc<SharedStats>,
    writer_done: Mutex<Option<oneshot::Receiver<()>>>,
    /// Hops handed to the relay (claimed or enqueued here): one process holds the whole
    /// queue, so a claim returns only what was not handed out before.
    claimed: Mutex<std::collections::HashSet<[u8; 16]>>,
    /// Rate-limit buckets of [`Store::take_tokens`], in memory: one process owns a RocksDB
    /// database, so nothing is shared (and the node counts its limits in `ratelimit.rs`,
    /// `keeps_limits` being false; these serve the conformance suite and tools).
    buckets: Mutex<std::collections::HashMap<[u8; 32], u64>>,
}

fn read_err(e: rocksdb::Error) -> StoreError {
    StoreError::Read(e.to_string())
}

impl RocksStore {
    /// Opens (or creates) the database in `dir` and starts the writer thread.
    pub fn open(dir: &Path, cfg: &StorageConfig) -> Result<Arc<RocksStore>, StoreError> {
        let unavailable =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let write_buffer = cfg.write_buffer_mb.max(4) << 20;
        opts.set_db_write_buffer_size(write_buffer);
        // With several column families the WAL is kept until each has flushed; bound it.
        opts.set_max_total_wal_size(((cfg.write_buffer_mb.max(4) as u64) << 20) * 2);
        opts.set_keep_log_file_num(3);
        opts.set_max_log_file_size(8 << 20);
        let cache = Cache::new_lru_cache(cfg.cache_mb.max(1) << 20);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut o = Options::default();
            // No one memtable may exceed the budget of all together. This also sets how
            // much free space RocksDB waits for before it resumes writing after a full
            // disk (it reserves the largest memtable size; the default would be 64 MiB).
            o.set_write_buffer_size(write_buffer);
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            match *name {
                // Sealed letters are encrypted and padded: compression gains nothing. Big
                // values go to blob files so that compaction does not rewrite them.
                CF_ENVELOPES | CF_OUTBOUND => {
                    o.set_compression_type(DBCompressionType::None);
                    o.set_enable_blob_files(true);
                    o.set_min_blob_size(4096);
                    o.set_blob_compression_type(DBCompressionType::None);
                }
                CF_DEDUPE | CF_ACCOUNTS | CF_RECORDS => {
                    table.set_bloom_filter(10.0, false);
                    o.set_compression_type(DBCompressionType::Lz4);
                }
                _ => o.set_compression_type(DBCompressionType::Lz4),
            }
            o.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, o)
        });
        // `default` always exists (unused); left out, it would get a 64 MiB memtable.
        let mut default_cf = Options::default();
        default_cf.set_write_buffer_size(write_buffer);
        let descriptors = descriptors.chain(std::iter::once(ColumnFamilyDescriptor::new(
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            default_cf,
        )));
        let db = DB::open_cf_descriptors(&opts, dir, descriptors).map_err(|e| unavailable(&e))?;
        let db = Arc::new(db);
        match db.get_cf(cf(&db, CF_META), key::SCHEMA).map_err(read_err)? {
            None => {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(cf(&db, CF_META), key::SCHEMA, [SCHEMA_VERSION], &wo)
                    .map_err(|e| unavailable(&e))?;
            }
            Some(v) if v.as_slice() == [SCHEMA_VERSION] => {}
            Some(v) if v.as_slice() == [1] => migrate_claims(&db).map_err(|e| unavailable(&e))?,
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "database schema {v:?}, this node speaks {SCHEMA_VERSION}"
                )));
            }
        }
        let stats = Arc::new(SharedStats::default());
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let writer = Writer::new(db.clone(), stats.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| unavailable(&e))?;
        Ok(Arc::new(RocksStore {
            db,
            tx: RwLock::new(Some(tx)),
            stats,
            writer_done: Mutex::new(Some(done_rx)),
            claimed: Mutex::default(),
            buckets: Mutex::default(),
        }))
    }

    fn submit<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Op) -> StoreFuture<'_, T> {
        // Clone the sender and let go of the lock before awaiting.
        let tx = self.tx.read().ok().and_then(|g| g.clone());
        let (reply, answer) = oneshot::channel();
        let op = make(reply);
        Box::pin(async move {
            let tx = tx.ok_or(StoreError::Closed)?;
            tx.send(op).await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn ready<T: Send + 'static>(r: Result<T, StoreError>) -> StoreFuture<'static, T> {
        Box::pin(std::future::ready(r))
    }

    fn get(&self, cf_name: &str, k: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, cf_name), k)
            .map_err(read_err)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn read_account(&self, mailbox: MailboxId) -> Result<Option<Account>, StoreError> {
        let Some(v) = self.get(
            CF_ACCOUNTS,
            &key::prefixed(key::ACCOUNT, mailbox.as_bytes()),
        )?
        else {
            return Ok(None);
        };
        let created =
            u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("account value too short".into()))?;
        Ok(Some(Account {
            mailbox,
            cert: v[8..].to_vec(),
            created,
        }))
    }

    fn read_list(
        &self,
        mailbox: MailboxId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ListItem>, StoreError> {
        let start = key::mailbox_seq(&mailbox, after.saturating_add(1));
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_INDEX),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = kv.map_err(read_err)?;
            if out.len() >= limit || k.len() != 24 || &k[..16] != mailbox.as_bytes() {
                break;
            }
            let seq = u64_at(&k, 16).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
            let id: [u8; 16] = v
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("index value".into()))?;
            let size = u64_at(&v, 16).ok_or_else(|| StoreError::Corrupt("index value".into()))?;
            out.push(ListItem {
                seq,
                id: EnvelopeId(id),
                size,
            });
        }
        Ok(out)
    }

    fn read_list_for(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        mut after: u64,
        limit: usize,
    ) -> Result<Vec<ListItem>, StoreError> {
        let mut out = Vec::new();
        // Pages of the index, skipping what this device acknowledged.
        while out.len() < limit {
            let page = self.read_list(mailbox, after, limit)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for item in page {
                let acked = self
                    .db
                    .get_pinned_cf(
                        cf(&self.db, CF_ACKS),
                        key::device_ack(&mailbox, item.seq, &device),
                    )
                    .map_err(read_err)?
                    .is_some();
                if !acked && out.len() < limit {
                    out.push(item);
                }
            }
        }
        Ok(out)
    }

    fn read_devices(&self, mailbox: MailboxId) -> Result<Vec<Device>, StoreError> {
        read_devices(&self.db, &mailbox)
    }

    fn read_outbound(&self) -> Result<Vec<OutboundItem>, StoreError> {
        let mut out = Vec::new();
        let prefix = [key::QUEUE_META];
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_OUTBOUND),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = kv.map_err(read_err)?;
            if k.first() != Some(&key::QUEUE_META) {
                break;
            }
            let item: OutboundItem = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("outbound item: {e}")))?;
            out.push(item);
        }
        Ok(out)
    }

    fn read_usage(
        &self,
        mailbox: MailboxId,
        created: u64,
    ) -> Result<Option<AccountUsage>, StoreError> {
        let Some(v) = self.get(CF_ACCOUNTS, &key::prefixed(key::STATE, mailbox.as_bytes()))? else {
            return Ok(None);
        };
        let s =
            MailboxState::decode(&v).ok_or_else(|| StoreError::Corrupt("mailbox state".into()))?;
        Ok(Some(AccountUsage {
            mailbox,
            created,
            bytes: s.bytes,
            envelopes: s.count,
            addresses: Vec::new(),
            settings: s.settings,
        }))
    }

    /// Accounts from `first` on (all of them, or just `first`), with their addresses.
    fn read_accounts(
        &self,
        only: Option<MailboxId>,
        limit: usize,
    ) -> Result<Vec<AccountUsage>, StoreError> {
        let start = key::prefixed(
            key::ACCOUNT,
            only.as_ref().map(|m| &m.as_bytes()[..]).unwrap_or(&[]),
        );
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_ACCOUNTS),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = kv.map_err(read_err)?;
            if out.len() >= limit || !k.starts_with(&start) {
                break;
            }
            let mailbox = mailbox_value(&k[1..])?;
            let created =
                u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("account value".into()))?;
            if let Some(u) = self.read_usage(mailbox, created)? {
                out.push(u);
            }
        }
        if out.is_empty() {
            return Ok(out);
        }
        let at: std::collections::HashMap<MailboxId, usize> = out
            .iter()
            .enumerate()
            .map(|(i, u)| (u.mailbox, i))
            .collect();
        let prefix = [key::CLAIM];
        for kv in self.db.iterator_cf(
            cf(&self.db, CF_ACCOUNTS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = kv.map_err(read_err)?;
            if k.first() != Some(&key::CLAIM) {
                break;
            }
            let owner = mailbox_value(&v)?;
            if let Some(i) = at.get(&owner) {
                out[*i]
                    .addresses
                    .push(String::from_utf8_lossy(&k[1..]).into_owned());
            }
        }
        Ok(out)
    }

    fn read_pins(&self) -> Result<Vec<(NodeUrl, PeerPin)>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(cf(&self.db, CF_PEERS), IteratorMode::Start)
        {
            let (k, v) = kv.map_err(read_err)?;
            let url = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| NodeUrl::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt("peer url".into()))?;
            let node_key: [u8; 32] = v
                .get(..32)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("peer pin".into()))?;
            let pinned_at = u64_at(&v, 32).unwrap_or(0);
            out.push((
                url,
                PeerPin {
                    node_key,
                    pinned_at,
                },
            ));
        }
        Ok(out)
    }
}

impl Store for RocksStore {
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome> {
        self.submit(|reply| Op::Register { account, reply })
    }
    fn put_record(
        &self,
        address: String,
        mailbox: MailboxId,
        sequence: u64,
        signed: Vec<u8>,
    ) -> StoreFuture<'_, RecordOutcome> {
        self.submit(|reply| Op::PutRecord {
            address,
            mailbox,
            sequence,
            signed,
            reply,
        })
    }
    fn reset_address(&self, address: String) -> StoreFuture<'_, bool> {
        self.submit(|reply| Op::ResetAddress { address, reply })
    }
    fn deliver(&self, envelope: NewEnvelope, quota: Quota) -> StoreFuture<'_, DeliverOutcome> {
        self.submit(|reply| Op::Deliver {
            envelope,
            quota,
            forwards: Vec::new(),
            reply,
        })
    }
    fn deliver_forwarding(
        &self,
        envelope: NewEnvelope,
        quota: Quota,
        forwards: Vec<(OutboundItem, Bytes)>,
    ) -> StoreFuture<'_, DeliverOutcome> {
        self.submit(|reply| Op::Deliver {
            envelope,
            quota,
            forwards,
            reply,
        })
    }
    fn ack(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, bool> {
        self.submit(|reply| Op::Ack {
            mailbox,
            seq,
            reply,
        })
    }
    fn enqueue(&self, item: OutboundItem, payload: Bytes) -> StoreFuture<'_, ()> {
        if let Ok(mut c) = self.claimed.lock() {
            c.insert(item.id);
        }
        self.submit(|reply| Op::Enqueue {
            item,
            payload,
            reply,
        })
    }
    fn reschedule(&self, item: OutboundItem) -> StoreFuture<'_, ()> {
        self.submit(|reply| Op::Reschedule { item, reply })
    }
    fn finish(&self, id: QueueId, bounce: Option<NewEnvelope>) -> StoreFuture<'_, ()> {
        if let Ok(mut c) = self.claimed.lock() {
            c.remove(&id.0);
        }
        self.submit(|reply| Op::Finish { id, bounce, reply })
    }
    fn take(&self, mailbox: MailboxId, seq: u64, then: Handoff) -> StoreFuture<'_, bool> {
        if let (Handoff::Enqueue(jobs), Ok(mut c)) = (&then, self.claimed.lock()) {
            c.extend(jobs.iter().map(|(item, _)| item.id));
        }
        self.submit(|reply| Op::Take {
            mailbox,
            seq,
            then,
            reply,
        })
    }
    fn pin_peer(&self, url: NodeUrl, pin: PeerPin) -> StoreFuture<'_, ()> {
        self.submit(|reply| Op::PinPeer { url, pin, reply })
    }

    fn add_device(
        &self,
        mailbox: MailboxId,
        device: Device,
        max: usize,
    ) -> StoreFuture<'_, AddDeviceOutcome> {
        self.submit(|reply| Op::AddDevice {
            mailbox,
            device,
            max,
            reply,
        })
    }
    fn remove_device(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
    ) -> StoreFuture<'_, RemoveDeviceOutcome> {
        self.submit(|reply| Op::RemoveDevice {
            mailbox,
            device,
            reply,
        })
    }
    fn ack_device(
        &self,
        mailbox: MailboxId,
        seq: u64,
        device: DeviceId,
    ) -> StoreFuture<'_, DeviceAck> {
        self.submit(|reply| Op::AckDevice {
            mailbox,
            seq,
            device,
            reply,
        })
    }
    fn ack_devices(
        &self,
        mailbox: MailboxId,
        seqs: Vec<u64>,
        device: DeviceId,
    ) -> StoreFuture<'_, Vec<DeviceAck>> {
        self.submit(|reply| Op::AckDevices {
            mailbox,
            seqs,
            device,
            reply,
        })
    }
    fn expire(&self, received_before: u64) -> StoreFuture<'_, u64> {
        let db = self.db.clone();
        Box::pin(async move {
            // Scanned off the writer, like `prune_dedupe`; the writer skips what is gone.
            let items = tokio::task::spawn_blocking(move || expired(&db, received_before))
                .await
                .map_err(|e| StoreError::Read(e.to_string()))??;
            let mut n = 0;
            for chunk in items.chunks(10_000) {
                let items = chunk.to_vec();
                n += self.submit(|reply| Op::Expire { items, reply }).await?;
            }
            Ok(n)
        })
    }

    fn set_account_settings(
        &self,
        mailbox: MailboxId,
        settings: AccountSettings,
    ) -> StoreFuture<'_, bool> {
        self.submit(|reply| Op::SetSettings {
            mailbox,
            settings,
            reply,
        })
    }
    fn delete_account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<DeletedAccount>> {
        self.submit(|reply| Op::DeleteAccount { mailbox, reply })
    }
    fn put_invite(&self, hash: [u8; 32], invite: StoredInvite) -> StoreFuture<'_, bool> {
        self.submit(|reply| Op::PutInvite {
            hash,
            invite,
            revoke: false,
            reply,
        })
    }
    fn revoke_invite(&self, hash: [u8; 32]) -> StoreFuture<'_, bool> {
        let placeholder = StoredInvite {
            created: 0,
            expires: None,
            uses: 0,
            used: 0,
            revoked: true,
        };
        self.submit(|reply| Op::PutInvite {
            hash,
            invite: placeholder,
            revoke: true,
            reply,
        })
    }
    fn invites(&self) -> StoreFuture<'_, Vec<([u8; 32], StoredInvite)>> {
        let read = || -> Result<Vec<([u8; 32], StoredInvite)>, StoreError> {
            let prefix = [key::STORED_INVITE];
            let mut out = Vec::new();
            for kv in self.db.iterator_cf(
                cf(&self.db, CF_META),
                IteratorMode::From(&prefix, Direction::Forward),
            ) {
                let (k, v) = kv.map_err(read_err)?;
                if k.first() != Some(&key::STORED_INVITE) {
                    break;
                }
                let h: [u8; 32] = k[1..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("invite key".into()))?;
                out.push((h, decode_invite(&v)?));
            }
            Ok(out)
        };
        Self::ready(read())
    }
    fn invite(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<StoredInvite>> {
        Self::ready(
            self.get(CF_META, &key::prefixed(key::STORED_INVITE, &hash))
                .and_then(|v| v.map(|v| decode_invite(&v)).transpose()),
        )
    }
    fn accounts(&self, limit: usize) -> StoreFuture<'_, Vec<AccountUsage>> {
        Self::ready(self.read_accounts(None, limit))
    }
    fn account_settings(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountSettings>> {
        Self::ready(self.read_usage(mailbox, 0).map(|u| u.map(|u| u.settings)))
    }
    fn account_usage(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountUsage>> {
        Self::ready(
            self.read_accounts(Some(mailbox), 1)
                .map(|v| v.into_iter().next()),
        )
    }

    fn devices(&self, mailbox: MailboxId) -> StoreFuture<'_, Vec<Device>> {
        Self::ready(self.read_devices(mailbox))
    }
    fn list_for(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<ListItem>> {
        Self::ready(self.read_list_for(mailbox, device, after, limit))
    }

    fn account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<Account>> {
        Self::ready(self.read_account(mailbox))
    }
    fn mailbox_of(&self, fingerprint: Vec<u8>) -> StoreFuture<'_, Option<MailboxId>> {
        Self::ready(
            self.get(CF_ACCOUNTS, &key::prefixed(key::FINGERPRINT, &fingerprint))
                .and_then(|v| match v {
                    Some(v) => {
                        let m: [u8; 16] = v[..]
                            .try_into()
                            .map_err(|_| StoreError::Corrupt("fingerprint index".into()))?;
                        Ok(Some(MailboxId(m)))
                    }
                    None => Ok(None),
                }),
        )
    }
    fn owner_of(&self, address: String) -> StoreFuture<'_, Option<MailboxId>> {
        Self::ready(
            self.get(CF_ACCOUNTS, &key::prefixed(key::CLAIM, address.as_bytes()))
                .and_then(|v| v.map(|v| mailbox_value(&v)).transpose()),
        )
    }
    fn record(&self, address: String) -> StoreFuture<'_, Option<Bytes>> {
        Self::ready(
            self.get(CF_RECORDS, address.as_bytes())
                .and_then(|v| match v {
                    Some(v) if v.len() > 8 => Ok(Some(v.slice(8..))),
                    Some(_) => Err(StoreError::Corrupt("record value too short".into())),
                    None => Ok(None),
                }),
        )
    }
    fn list(&self, mailbox: MailboxId, after: u64, limit: usize) -> StoreFuture<'_, Vec<ListItem>> {
        Self::ready(self.read_list(mailbox, after, limit))
    }
    fn envelope(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, Option<Bytes>> {
        Self::ready(self.get(CF_ENVELOPES, &key::mailbox_seq(&mailbox, seq)))
    }
    fn outbound(&self) -> StoreFuture<'_, Vec<OutboundItem>> {
        Self::ready(self.read_outbound())
    }
    fn claim_outbound(&self, limit: usize) -> StoreFuture<'_, Vec<OutboundItem>> {
        Self::ready(self.read_outbound().and_then(|all| {
            let mut claimed = self
                .claimed
                .lock()
                .map_err(|_| StoreError::Read("claim set poisoned".into()))?;
            let fresh: Vec<OutboundItem> = all
                .into_iter()
                .filter(|i| !claimed.contains(&i.id))
                .take(limit)
                .collect();
            claimed.extend(fresh.iter().map(|i| i.id));
            Ok(fresh)
        }))
    }
    fn renew_outbound(&self) -> StoreFuture<'_, u64> {
        Self::ready(Ok(self.claimed.lock().map(|c| c.len() as u64).unwrap_or(0)))
    }
    fn outbound_payload(&self, id: QueueId) -> StoreFuture<'_, Option<Bytes>> {
        Self::ready(self.get(CF_OUTBOUND, &key::prefixed(key::QUEUE_PAYLOAD, &id.0)))
    }
    fn peer_pins(&self) -> StoreFuture<'_, Vec<(NodeUrl, PeerPin)>> {
        Self::ready(self.read_pins())
    }

    fn prune_dedupe(&self, received_before: u64) -> StoreFuture<'_, u64> {
        let db = self.db.clone();
        Box::pin(async move {
            // The scan reads only; it runs off the writer so that writes do not wait for it.
            // A key found here cannot be written again meanwhile: while it exists, a
            // redelivery is a duplicate and writes nothing.
            let keys = tokio::task::spawn_blocking(move || stale_dedupe_keys(&db, received_before))
                .await
                .map_err(|e| StoreError::Read(e.to_string()))??;
            let n = keys.len() as u64;
            for chunk in keys.chunks(10_000) {
                let keys = chunk.to_vec();
                self.submit(|reply| Op::ForgetDedupe { keys, reply })
                    .await?;
            }
            Ok(n)
        })
    }

    fn take_tokens(
        &self,
        key: [u8; 32],
        bucket: Bucket,
        now_us: u64,
        want: u64,
    ) -> StoreFuture<'_, Tokens> {
        let taken = self.buckets.lock().map(|mut b| {
            let t = bucket.take(b.get(&key).copied(), now_us, want);
            b.insert(key, t.tat);
            t
        });
        Box::pin(std::future::ready(taken.map_err(|_| {
            StoreError::Unavailable("rate-limit buckets poisoned".into())
        })))
    }

    fn sweep_limits(&self, now_us: u64) -> StoreFuture<'_, u64> {
        let swept = self.buckets.lock().map(|mut b| {
            let before = b.len();
            b.retain(|_, tat| *tat > now_us);
            (before - b.len()) as u64
        });
        Box::pin(std::future::ready(swept.map_err(|_| {
            StoreError::Unavailable("rate-limit buckets poisoned".into())
        })))
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            ops: self.stats.ops.load(Ordering::Relaxed),
            failed_batches: self.stats.failed_batches.load(Ordering::Relaxed),
            batch_bytes: self.stats.batch_bytes.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Dropping our sender closes the channel once in-flight senders are done; the writer
        // then drains what is queued, commits it and exits.
        if let Ok(mut g) = self.tx.write() {
            g.take();
        }
        let done = self.writer_done.lock().ok().and_then(|mut g| g.take());
        Box::pin(async move {
            if let Some(done) = done {
                let _ = done.await;
            }
            Ok(())
        })
    }
}

pub(super) fn encode_invite(i: &StoredInvite) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    v.extend_from_slice(&i.created.to_be_bytes());
    v.extend_from_slice(&i.expires.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(&i.uses.to_be_bytes());
    v.extend_from_slice(&i.used.to_be_bytes());
    v.push(u8::from(i.revoked));
    v
}

pub(super) fn decode_invite(v: &[u8]) -> Result<StoredInvite, StoreError> {
    let corrupt = || StoreError::Corrupt("stored invite".into());
    if v.len() != 25 {
        return Err(corrupt());
    }
    let u32_at =
        |at: usize| -> u32 { u32::from_be_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]) };
    Ok(StoredInvite {
        created: u64_at(v, 0).ok_or_else(corrupt)?,
        expires: u64_at(v, 8).filter(|e| *e != 0),
        uses: u32_at(16),
        used: u32_at(20),
        revoked: v[24] != 0,
    })
}

/// A mailbox id stored as a value (fingerprint index, claims).
pub(super) fn mailbox_value(v: &[u8]) -> Result<MailboxId, StoreError> {
    let m: [u8; 16] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("mailbox id value".into()))?;
    Ok(MailboxId(m))
}

/// Schema 1 → 2: every address named by an account's certificate becomes a claim of the
/// oldest account naming it (first come, as registration now decides). Runs once, before
/// the writer starts; the claims and the new version are one synced write.
fn migrate_claims(db: &DB) -> Result<(), StoreError> {
    use sealpost_proto::identity::cert_addresses;
    use sealpost_proto::openpgp::Cert;
    use sealpost_proto::openpgp::parse::Parse;
    let mut owners: std::collections::BTreeMap<String, (u64, MailboxId)> = Default::default();
    let accounts = cf(db, CF_ACCOUNTS);
    let prefix = [key::ACCOUNT];
    for kv in db.iterator_cf(accounts, IteratorMode::From(&prefix, Direction::Forward)) {
        let (k, v) = kv.map_err(read_err)?;
        if k.first() != Some(&key::ACCOUNT) {
            break;
        }
        let mailbox = mailbox_value(&k[1..])?;
        let created = u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("account value".into()))?;
        let Ok(cert) = Cert::from_bytes(&v[8..]) else {
            continue;
        };
        for address in cert_addresses(&cert) {
            let e = owners.entry(address).or_insert((created, mailbox));
            if created < e.0 {
                *e = (created, mailbox);
            }
        }
    }
    let mut wb = rocksdb::WriteBatch::default();
    for (address, (_, mailbox)) in &owners {
        wb.put_cf(
            accounts,
            key::prefixed(key::CLAIM, address.as_bytes()),
            mailbox.as_bytes(),
        );
    }
    wb.put_cf(cf(db, CF_META), key::SCHEMA, [SCHEMA_VERSION]);
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(wb, &wo)
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    tracing::info!(
        claims = owners.len(),
        "database upgraded to schema 2: addresses belong to their first account"
    );
    Ok(())
}

/// The devices of `mailbox` as stored (committed state).
pub(super) fn read_devices(db: &DB, mailbox: &MailboxId) -> Result<Vec<Device>, StoreError> {
    let prefix = key::prefixed(key::DEVICE, mailbox.as_bytes());
    let mut out = Vec::new();
    for kv in db.iterator_cf(
        cf(db, CF_ACCOUNTS),
        IteratorMode::From(&prefix, Direction::Forward),
    ) {
        let (k, v) = kv.map_err(read_err)?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(decode_device(&k[prefix.len()..], &v)?);
    }
    Ok(out)
}

pub(super) fn decode_device(id: &[u8], v: &[u8]) -> Result<Device, StoreError> {
    let corrupt = || StoreError::Corrupt("device entry".into());
    let id: [u8; 16] = id.try_into().map_err(|_| corrupt())?;
    let created = u64_at(v, 0).ok_or_else(corrupt)?;
    let key: [u8; 32] = v
        .get(8..40)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(corrupt)?;
    let name = std::str::from_utf8(&v[40..]).map_err(|_| corrupt())?;
    Ok(Device {
        id: DeviceId(id),
        key,
        name: name.to_string(),
        created,
    })
}

pub(super) fn encode_device(d: &Device) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + d.name.len());
    v.extend_from_slice(&d.created.to_be_bytes());
    v.extend_from_slice(&d.key);
    v.extend_from_slice(d.name.as_bytes());
    v
}

/// Envelopes (mailbox, seq) received before `received_before`.
fn expired(db: &DB, received_before: u64) -> Result<Vec<(MailboxId, u64)>, StoreError> {
    let mut out = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_INDEX), IteratorMode::Start) {
        let (k, v) = kv.map_err(read_err)?;
        let (Some(seq), Some(received)) = (u64_at(&k, 16), u64_at(&v, 24)) else {
            continue;
        };
        if received < received_before && k.len() == 24 {
            out.push((mailbox_value(&k[..16])?, seq));
        }
    }
    Ok(out)
}

/// Dedupe keys older than `received_before` whose envelope has been acked.
fn stale_dedupe_keys(db: &DB, received_before: u64) -> Result<Vec<[u8; 32]>, StoreError> {
    let mut out = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_DEDUPE), IteratorMode::Start) {
        let (k, v) = kv.map_err(read_err)?;
        let (Some(seq), Some(received)) = (u64_at(&v, 0), u64_at(&v, 8)) else {
            continue;
        };
        let Ok(key) = <[u8; 32]>::try_from(&k[..]) else {
            continue;
        };
        if received >= received_before {
            continue;
        }
        let mailbox = MailboxId(
            key[..16]
                .try_into()
                .expect("invariant: 32-byte key has a 16-byte prefix"),
        );
        if db
            .get_pinned_cf(cf(db, CF_INDEX), key::mailbox_seq(&mailbox, seq))
            .map_err(read_err)?
            .is_none()
        {
            out.push(key);
        }
    }
    Ok(out)
}

/// Visits every key and value of every column family of a node's database (opened read
/// only; the node must be stopped). For tests and audits of what a node stores.
pub fn scan_all(dir: &Path, mut visit: impl FnMut(&str, &[u8], &[u8])) -> Result<(), StoreError> {
    let opts = Options::default();
    let db = DB::open_cf_for_read_only(&opts, dir, COLUMN_FAMILIES, false).map_err(read_err)?;
    for name in COLUMN_FAMILIES {
        for kv in db.iterator_cf(cf(&db, name), IteratorMode::Start) {
            let (k, v) = kv.map_err(read_err)?;
            visit(name, &k, &v);
        }
    }
    Ok(())
}
