//! The PostgreSQL store: the same contract as [`super::rocks::RocksStore`] on a database
//! that several node processes share (`[storage] backend = "postgres"`, `spec/node.md`
//! §Storage on PostgreSQL).
//!
//! Every write is one transaction, committed (and so durable, with PostgreSQL's default
//! `synchronous_commit = on`) before its future resolves; concurrent commits share WAL
//! flushes inside PostgreSQL. Decisions that need a consistent view lock the rows they
//! read (`SELECT … FOR UPDATE` of the mailbox's row serialises its deliveries and acks);
//! unique constraints make a race between processes fail one transaction, which is then
//! retried and sees the winner's row (envelope id per mailbox, certificate fingerprint,
//! address claim, invite code). Serialization failures and deadlocks are retried too, so
//! engines that run transactions SERIALIZABLE (CockroachDB) work as well.
//!
//! The outbound queue is shared: each hop has a holder (a random id per store handle,
//! i.e. per node process) and a lease; [`Store::claim_outbound`] takes unheld or expired
//! hops with `SELECT … FOR UPDATE SKIP LOCKED`, so two processes never claim one hop.
//!
//! Unsigned 64-bit values are stored in `BIGINT` by their bit pattern (`u64 as i64`), and
//! compared in Rust where they can exceed `i64::MAX` (record sequences, quotas).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sealpost_proto::{DeviceId, EnvelopeId, MailboxId, NodeUrl};
use sha2::{Digest, Sha256};
use tokio::sync::{RwLock, mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::*;
use crate::basics::clock::now_ms;
use crate::config::PostgresConfig;

/// Attempts of one write transaction that lost a race (unique violation, serialization
/// failure, deadlock) before the error is returned.
const MAX_TRIES: u32 = 8;

/// The schema, one migration per version, applied in order at start (each in its own
/// transaction that also records the version, so concurrent starts apply it once).
const MIGRATIONS: &[&str] = &[
    // 1: the data of spec/node.md §Storage.
    "CREATE TABLE accounts (
        mailbox BYTEA PRIMARY KEY,
        fingerprint BYTEA NOT NULL UNIQUE,
        cert BYTEA NOT NULL,
        created BIGINT NOT NULL,
        next_seq BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        envelopes BIGINT NOT NULL
    );
    CREATE TABLE claims (address TEXT PRIMARY KEY, mailbox BYTEA NOT NULL);
    CREATE TABLE records (address TEXT PRIMARY KEY, sequence BIGINT NOT NULL, signed BYTEA NOT NULL);
    CREATE TABLE invites (code_hash BYTEA PRIMARY KEY, used_at BIGINT NOT NULL, mailbox BYTEA NOT NULL);
    CREATE TABLE envelopes (
        mailbox BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        id BYTEA NOT NULL,
        size BIGINT NOT NULL,
        received BIGINT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (mailbox, seq)
    );
    CREATE TABLE dedupe (
        mailbox BYTEA NOT NULL,
        id BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (mailbox, id)
    );
    CREATE INDEX dedupe_received ON dedupe (received);
    CREATE TABLE outbound (
        id BYTEA PRIMARY KEY,
        item TEXT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        holder BYTEA,
        lease_until_ms BIGINT NOT NULL,
        payload BYTEA NOT NULL
    );
    CREATE INDEX outbound_lease ON outbound (lease_until_ms);
    CREATE INDEX outbound_holder ON outbound (holder);
    CREATE TABLE peers (url TEXT PRIMARY KEY, node_key BYTEA NOT NULL, pinned_at BIGINT NOT NULL);",
    // 2: sign-in sessions shared by the node processes (kind 0: nonce, 1: token; the key
    // is sha256 of the secret), and the per-account epoch a key rotation advances.
    "ALTER TABLE accounts ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE sessions (
        key BYTEA PRIMARY KEY,
        kind SMALLINT NOT NULL,
        mailbox BYTEA NOT NULL,
        expires BIGINT NOT NULL
    );
    CREATE INDEX sessions_mailbox ON sessions (mailbox, kind, expires);
    CREATE INDEX sessions_expires ON sessions (expires);",
    // 3: the devices of an account (`spec/api.md` §Devices) and each device's
    // acknowledgements; an ack goes with its envelope or its device (ON DELETE CASCADE).
    // A token names the device that signed in (NULL, as before: the account key).
    // Envelopes are found by reception time for the retention expiry.
    "CREATE TABLE devices (
        mailbox BYTEA NOT NULL,
        id BYTEA NOT NULL,
        key BYTEA NOT NULL,
        name TEXT NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (mailbox, id)
    );
    CREATE TABLE device_acks (
        mailbox BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        device BYTEA NOT NULL,
        PRIMARY KEY (mailbox, seq, device),
        FOREIGN KEY (mailbox, seq) REFERENCES envelopes (mailbox, seq) ON DELETE CASCADE,
        FOREIGN KEY (mailbox, device) REFERENCES devices (mailbox, id) ON DELETE CASCADE
    );
    CREATE INDEX device_acks_device ON device_acks (mailbox, device, seq);
    CREATE INDEX envelopes_received ON envelopes (received);
    ALTER TABLE sessions ADD COLUMN device BYTEA;",
    // 4: what the operator set on an account (`sealpost-node admin`): suspended, and a
    // quota in bytes replacing `[limits] mailbox_quota` (NULL: none).
    "ALTER TABLE accounts ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE accounts ADD COLUMN quota_bytes BIGINT;
    CREATE TABLE stored_invites (
        code_hash BYTEA PRIMARY KEY,
        created BIGINT NOT NULL,
        expires BIGINT,
        uses INTEGER NOT NULL,
        used INTEGER NOT NULL,
        revoked BOOLEAN NOT NULL
    );",
    // 5: the rate-limit buckets shared by the node processes (`Store::take_tokens`; key =
    // sha256 of the limit's name and key, tat = the bucket's theoretical arrival time in
    // Unix microseconds, granted = what the last take gave). UNLOGGED: no WAL, no flush per
    // take; a database crash forgets the buckets (they are full again), which a rate limit
    // may. CockroachDB (20.2 on) and YugabyteDB (2024.2 on) accept the word as a no-op.
    "CREATE UNLOGGED TABLE rate_limits (
        key BYTEA PRIMARY KEY,
        tat BIGINT NOT NULL,
        granted BIGINT NOT NULL
    );
    CREATE INDEX rate_limits_tat ON rate_limits (tat);",
    // 6: each hop's sender and size beside its JSON item, so that a user's share of the
    // queue is counted in the database (`Store::enqueue_within`). Hops queued before have
    // none and are not counted.
    "ALTER TABLE outbound ADD COLUMN sender BYTEA;
    ALTER TABLE outbound ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX outbound_sender ON outbound (sender);",
];

/// One take of a shared rate-limit bucket (`Bucket::take` in SQL), one atomic statement:
/// the row is locked by the upsert, so concurrent takes from any process apply in turn.
/// $1 key, $2 now (µs), $3 tokens wanted, $4 burst, $5 interval (µs). Integer division
/// truncates (PostgreSQL) or is exact (CockroachDB's `/` gives a DECIMAL) and `FLOOR`
/// makes both the same; a negative quotient is clamped to 0.
const TAKE_TOKENS: &str = "INSERT INTO rate_limits AS r (key, tat, granted)
     VALUES ($1, $2 + $5 * LEAST($3, $4), LEAST($3, $4))
     ON CONFLICT (key) DO UPDATE SET
       granted = GREATEST(0, LEAST($3,
         CAST(FLOOR(($2 + $4 * $5 - GREATEST(r.tat, $2)) / $5) AS BIGINT))),
       tat = GREATEST(r.tat, $2) + $5 * GREATEST(0, LEAST($3,
         CAST(FLOOR(($2 + $4 * $5 - GREATEST(r.tat, $2)) / $5) AS BIGINT)))
     RETURNING granted, tat";

const NONCE: i16 = 0;
const TOKEN: i16 = 1;

/// The schema version this node speaks.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

pub struct PgStore {
    pool: Pool,
    /// This handle's id as the holder of queue leases.
    holder: [u8; 16],
    lease_ms: u64,
    /// Writes hold it shared; `close` takes it exclusively and marks the store closed, so
    /// it waits for the writes in flight.
    gate: RwLock<bool>,
    stats: Stats,
    /// Deliveries wait here for a batcher, which stores all that are waiting in one
    /// transaction (one commit, one WAL flush), as the RocksDB writer does. One lane per
    /// batcher, a mailbox always in the same lane ([`lane`]): a mailbox's deliveries wait
    /// for its batcher's commit in memory and go into its next batch together, instead of
    /// several batches queueing for the mailbox's row lock one commit after the other.
    deliveries: std::sync::Mutex<Option<Vec<mpsc::Sender<DeliverOp>>>>,
    /// One receiver per batcher, answered when it has drained the queue at close.
    batchers_done: std::sync::Mutex<Vec<oneshot::Receiver<()>>>,
}

struct DeliverOp {
    envelope: NewEnvelope,
    quota: Quota,
    /// Queued with the envelope when it is stored ([`Store::deliver_forwarding`]).
    forwards: Vec<(OutboundItem, Bytes)>,
    reply: oneshot::Sender<Result<DeliverOutcome, StoreError>>,
}

/// Deliveries in one batch at most.
const MAX_BATCH: usize = 256;
/// Deliveries waiting for the batchers (all lanes together) before senders wait.
const DELIVERY_QUEUE: usize = 4096;

/// The batcher lane of `mailbox` among `lanes`.
fn lane(mailbox: &MailboxId, lanes: usize) -> usize {
    let [a, b, c, d, e, f, g, h, ..] = *mailbox.as_bytes();
    (u64::from_le_bytes([a, b, c, d, e, f, g, h]) % lanes.max(1) as u64) as usize
}

#[derive(Default)]
struct Stats {
    transactions: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// Why a transaction body stopped: a database error (maybe retried) or a store error.
enum TxError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A database error as a store error: no answer from the database (connection lost,
/// refused, shutting down) is `Unavailable` (the node answers 503), for reads too.
fn db_err(e: &tokio_postgres::Error, read: bool) -> StoreError {
    let text = e.as_db_error().map(|d| d.message().to_string());
    match text {
        Some(m) if read => StoreError::Read(m),
        Some(m) => StoreError::Unavailable(m),
        None => StoreError::Unavailable(format!("database unreachable: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_err(&e, false),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(_) => StoreError::Unavailable("no database connection in time".into()),
        other => StoreError::Unavailable(format!("database connection: {other}")),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} in the database"))
}

fn mailbox_from(v: &[u8]) -> Result<MailboxId, StoreError> {
    Ok(MailboxId(v.try_into().map_err(|_| corrupt("mailbox id"))?))
}

/// A listed envelope from a row of (seq, id, size).
fn list_item(r: &tokio_postgres::Row) -> Result<ListItem, StoreError> {
    Ok(ListItem {
        seq: u(r.get(0)),
        id: EnvelopeId(id16(r.get::<_, &[u8]>(1))?),
        size: u(r.get(2)),
    })
}

fn id16(v: &[u8]) -> Result<[u8; 16], StoreError> {
    v.try_into().map_err(|_| corrupt("16-byte id"))
}

/// `u64` in a `BIGINT` by its bit pattern, and back.
fn i(v: u64) -> i64 {
    v as i64
}
fn u(v: i64) -> u64 {
    v as u64
}

/// Runs `$body` (an expression using `$tx`, a `&Transaction`, evaluating to
/// `Result<T, TxError>`) in a transaction, committed before it answers; retried when it
/// lost a race to another transaction.
macro_rules! write_tx {
    ($self:ident, $ops:expr, |$tx:ident| $body:expr) => {{
        let gate = $self.gate.read().await;
        if *gate {
            return Err(StoreError::Closed);
        }
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let mut client = match $self.pool.get().await {
                Ok(c) => c,
                Err(e) => break Err(pool_err(e)),
            };
            let txn = match client.transaction().await {
                Ok(t) => t,
                Err(e) => break Err(db_err(&e, false)),
            };
            let outcome = {
                let $tx: &Transaction<'_> = &txn;
                async { $body }.await
            };
            let err = match outcome {
                Ok(v) => match txn.commit().await {
                    Ok(()) => break Ok(v),
                    Err(e) => e,
                },
                Err(TxError::Store(e)) => break Err(e),
                Err(TxError::Db(e)) => e,
            };
            if !(retryable(&err) && tries < MAX_TRIES) {
                break Err(db_err(&err, false));
            }
            tracing::debug!(error = %err, tries, "transaction lost a race; retrying");
        };
        $self.count(&result, $ops);
        result
    }};
}

impl PgStore {
    /// Connects, applies the migrations the database lacks, and returns the store. Refuses a
    /// database whose schema is newer than this node's.
    pub async fn open(cfg: &PostgresConfig) -> Result<Arc<PgStore>, StoreError> {
        let lease = cfg.queue_lease.get();
        let mut pg: tokio_postgres::Config = cfg.url.parse().map_err(|e| {
            StoreError::Unavailable(format!("storage.postgres.url does not parse: {e}"))
        })?;
        pg.connect_timeout(cfg.connect_timeout.get());
        pg.application_name("sealpost-node");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(cfg.connect_timeout.get()))
            .create_timeout(Some(cfg.connect_timeout.get()))
            .recycle_timeout(Some(cfg.connect_timeout.get()))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("database pool: {e}")))?;
        let store = PgStore {
            pool,
            holder: rand::random(),
            lease_ms: lease.as_millis() as u64,
            gate: RwLock::new(false),
            stats: Stats::default(),
            deliveries: std::sync::Mutex::new(None),
            batchers_done: std::sync::Mutex::new(Vec::new()),
        };
        store.migrate().await?;
        let store = Arc::new(store);
        // A few batchers, so that one batch's commit overlaps another's statements.
        let lanes = (cfg.pool_size / 4).clamp(1, 4);
        let mut senders = Vec::with_capacity(lanes);
        let mut done = Vec::new();
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel(DELIVERY_QUEUE / lanes);
            senders.push(tx);
            let (done_tx, done_rx) = oneshot::channel();
            done.push(done_rx);
            tokio::spawn(batcher(Arc::downgrade(&store), rx, done_tx));
        }
        if let Ok(mut d) = store.deliveries.lock() {
            *d = Some(senders);
        }
        if let Ok(mut b) = store.batchers_done.lock() {
            *b = done;
        }
        Ok(store)
    }

    /// Stores a batch of deliveries in one transaction, mailboxes locked in sorted order
    /// (two processes' batches cannot deadlock); each sees the ones before it.
    async fn deliver_batch(&self, ops: Vec<DeliverOp>) {
        let mut mailboxes: Vec<&[u8]> = ops
            .iter()
            .map(|o| o.envelope.mailbox.as_bytes().as_slice())
            .collect();
        mailboxes.sort();
        mailboxes.dedup();
        let result: Result<Vec<DeliverOutcome>, StoreError> = async {
            write_tx!(self, ops.len() as u64, |tx| {
                let outcomes = deliver_many_tx(tx, &mailboxes, &ops).await?;
                let lease = i(now_ms().saturating_add(self.lease_ms));
                for (op, outcome) in ops.iter().zip(&outcomes) {
                    if matches!(outcome, DeliverOutcome::Stored { .. }) {
                        for (item, payload) in &op.forwards {
                            enqueue_tx(tx, item, payload, &self.holder, lease).await?;
                        }
                    }
                }
                Ok::<_, TxError>(outcomes)
            })
        }
        .await;
        match result {
            Ok(outcomes) => {
                for (op, outcome) in ops.into_iter().zip(outcomes) {
                    if matches!(outcome, DeliverOutcome::Stored { .. }) {
                        self.stats
                            .bytes
                            .fetch_add(op.envelope.bytes.len() as u64, Ordering::Relaxed);
                    }
                    let _ = op.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for op in ops {
                    let _ = op.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies the missing migrations, each with its version row in one transaction.
    async fn migrate(&self) -> Result<(), StoreError> {
        // The version table, with a row 0 that every migrating transaction locks first: two
        // processes starting together migrate one after the other. Creating the table can
        // itself race (a unique violation in the catalog): then it exists, try again.
        let mut tries = 0;
        loop {
            tries += 1;
            let client = self.pool.get().await.map_err(pool_err)?;
            match client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS sealpost_schema (
                        version INT PRIMARY KEY, applied_ms BIGINT NOT NULL);
                     INSERT INTO sealpost_schema (version, applied_ms) VALUES (0, 0)
                        ON CONFLICT (version) DO NOTHING",
                )
                .await
            {
                Ok(()) => break,
                Err(e) if retryable(&e) && tries < MAX_TRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries as u64)).await
                }
                Err(e) => return Err(db_err(&e, false)),
            }
        }
        loop {
            let now = i(now_ms());
            let applied: Result<bool, StoreError> = write_tx!(self, 0, |tx| {
                tx.query_one(
                    "SELECT version FROM sealpost_schema WHERE version = 0 FOR UPDATE",
                    &[],
                )
                .await?;
                let row = tx
                    .query_one("SELECT COALESCE(MAX(version), 0) FROM sealpost_schema", &[])
                    .await?;
                let have: i32 = row.get(0);
                if have > SCHEMA_VERSION {
                    return Err(TxError::Store(StoreError::Corrupt(format!(
                        "database schema {have}, this node speaks {SCHEMA_VERSION}"
                    ))));
                }
                if have == SCHEMA_VERSION {
                    Ok::<bool, TxError>(false)
                } else {
                    tx.batch_execute(MIGRATIONS[have as usize]).await?;
                    tx.execute(
                        "INSERT INTO sealpost_schema (version, applied_ms) VALUES ($1, $2)",
                        &[&(have + 1), &now],
                    )
                    .await?;
                    tracing::info!(version = have + 1, "database schema migrated");
                    Ok(true)
                }
            });
            if !applied? {
                return Ok(());
            }
        }
    }

    /// Runs `sql` once per row of parameters, all in one transaction; returns the rows
    /// affected (for `sealpost-node migrate`).
    pub(super) async fn execute_each(
        &self,
        sql: &str,
        rows: &[Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>],
    ) -> Result<u64, StoreError> {
        write_tx!(self, rows.len() as u64, |tx| {
            let stmt = tx.prepare(sql).await?;
            let mut n = 0;
            for row in rows {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = row
                    .iter()
                    .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                n += tx.execute(&stmt, &params).await?;
            }
            Ok::<u64, TxError>(n)
        })
    }

    fn count<T>(&self, r: &Result<T, StoreError>, ops: u64) {
        match r {
            Ok(_) => {
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                self.stats.ops.fetch_add(ops, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if *self.gate.read().await {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(pool_err)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| db_err(&e, true))?;
        client
            .query_opt(&stmt, params)
            .await
            .map_err(|e| db_err(&e, true))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| db_err(&e, true))?;
        client
            .query(&stmt, params)
            .await
            .map_err(|e| db_err(&e, true))
    }
}

/// Takes every delivery waiting (up to [`MAX_BATCH`]) and stores them together, until the
/// store closes (its sender dropped and the queue drained) or is dropped.
async fn batcher(
    store: std::sync::Weak<PgStore>,
    mut rx: mpsc::Receiver<DeliverOp>,
    done: oneshot::Sender<()>,
) {
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let Some(store) = store.upgrade() else {
            break;
        };
        store.deliver_batch(ops).await;
    }
    let _ = done.send(());
}

/// The owner of `address`, locking its claim row (if any) for the transaction.
async fn claim_of(tx: &Transaction<'_>, address: &str) -> Result<Option<MailboxId>, TxError> {
    let row = tx
        .query_opt(
            "SELECT mailbox FROM claims WHERE address = $1 FOR UPDATE",
            &[&address],
        )
        .await?;
    row.map(|r| mailbox_from(r.get::<_, &[u8]>(0)))
        .transpose()
        .map_err(TxError::Store)
}

async fn set_claim(
    tx: &Transaction<'_>,
    address: &str,
    mailbox: &MailboxId,
) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO claims (address, mailbox) VALUES ($1, $2)
         ON CONFLICT (address) DO UPDATE SET mailbox = excluded.mailbox",
        &[&address, &mailbox.as_bytes().as_slice()],
    )
    .await?;
    Ok(())
}

async fn fingerprint_owner(
    tx: &Transaction<'_>,
    fingerprint: &[u8],
) -> Result<Option<MailboxId>, TxError> {
    let row = tx
        .query_opt(
            "SELECT mailbox FROM accounts WHERE fingerprint = $1",
            &[&fingerprint],
        )
        .await?;
    row.map(|r| mailbox_from(r.get::<_, &[u8]>(0)))
        .transpose()
        .map_err(TxError::Store)
}

async fn register_tx(tx: &Transaction<'_>, a: &NewAccount) -> Result<RegisterOutcome, TxError> {
    if let Some(m) = fingerprint_owner(tx, &a.fingerprint).await? {
        return Ok(RegisterOutcome::Existing(m));
    }
    let owner = a.rotation.as_ref().map(|r| r.mailbox);
    for address in &a.addresses {
        match claim_of(tx, address).await? {
            Some(m) if Some(m) != owner => {
                return Ok(RegisterOutcome::AddressTaken {
                    address: address.clone(),
                });
            }
            _ => {}
        }
    }
    if let Some(r) = &a.rotation {
        // Only if the account still has the endorsing key: of two racing rotations from
        // one key, one wins.
        // The session epoch advances and the sessions go in the same write: a sign-in that
        // checked the old key gets no token (`put_token` compares the epoch).
        let n = tx
            .execute(
                "UPDATE accounts SET cert = $1, fingerprint = $2, session_epoch = session_epoch + 1
                 WHERE mailbox = $3 AND fingerprint = $4",
                &[
                    &a.cert,
                    &a.fingerprint,
                    &r.mailbox.as_bytes().as_slice(),
                    &r.old_fingerprint,
                ],
            )
            .await?;
        if n == 0 {
            return Ok(RegisterOutcome::AddressTaken {
                address: a.addresses.first().cloned().unwrap_or_default(),
            });
        }
        tx.execute(
            "DELETE FROM sessions WHERE mailbox = $1",
            &[&r.mailbox.as_bytes().as_slice()],
        )
        .await?;
        for address in &a.addresses {
            set_claim(tx, address, &r.mailbox).await?;
        }
        return Ok(RegisterOutcome::Rotated(r.mailbox));
    }
    let mailbox = MailboxId::random();
    let stored_invite = match &a.invite {
        Some(code) => {
            let h: [u8; 32] = Sha256::digest(code.as_bytes()).into();
            // Locked: registrations with one invite take turns, so its uses are counted.
            tx.query_opt(
                &format!(
                    "SELECT {INVITE_COLUMNS} FROM stored_invites WHERE code_hash = $1 FOR UPDATE"
                ),
                &[&h.as_slice()],
            )
            .await?
            .map(|r| invite_row(&r))
            .transpose()
            .map_err(TxError::Store)?
        }
        None => None,
    };
    if let Some((h, inv)) = &stored_invite {
        if !inv.usable(a.created) {
            return Ok(RegisterOutcome::InviteUsed);
        }
        tx.execute(
            "UPDATE stored_invites SET used = used + 1 WHERE code_hash = $1",
            &[&h.as_slice()],
        )
        .await?;
    } else if let Some(code) = &a.invite {
        let h: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let used = tx
            .query_opt(
                "SELECT 1 FROM invites WHERE code_hash = $1",
                &[&h.as_slice()],
            )
            .await?;
        if used.is_some() {
            return Ok(RegisterOutcome::InviteUsed);
        }
        tx.execute(
            "INSERT INTO invites (code_hash, used_at, mailbox) VALUES ($1, $2, $3)",
            &[&h.as_slice(), &i(a.created), &mailbox.as_bytes().as_slice()],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO accounts (mailbox, fingerprint, cert, created, next_seq, bytes, envelopes)
         VALUES ($1, $2, $3, $4, 1, 0, 0)",
        &[
            &mailbox.as_bytes().as_slice(),
            &a.fingerprint,
            &a.cert,
            &i(a.created),
        ],
    )
    .await?;
    for address in &a.addresses {
        set_claim(tx, address, &mailbox).await?;
    }
    Ok(RegisterOutcome::Created(mailbox))
}

async fn put_record_tx(
    tx: &Transaction<'_>,
    address: &str,
    mailbox: &MailboxId,
    sequence: u64,
    signed: &[u8],
) -> Result<RecordOutcome, TxError> {
    let claimed = match claim_of(tx, address).await? {
        Some(owner) if owner != *mailbox => return Ok(RecordOutcome::NotOwner),
        Some(_) => true,
        None => false,
    };
    let stored = tx
        .query_opt(
            "SELECT sequence FROM records WHERE address = $1 FOR UPDATE",
            &[&address],
        )
        .await?
        .map(|r| u(r.get(0)));
    if let Some(stored) = stored
        && stored >= sequence
    {
        return Ok(RecordOutcome::Stale { stored });
    }
    if !claimed {
        // An unclaimed address becomes the publisher's; a racing claim makes this insert
        // fail and the retry sees it.
        tx.execute(
            "INSERT INTO claims (address, mailbox) VALUES ($1, $2)",
            &[&address, &mailbox.as_bytes().as_slice()],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO records (address, sequence, signed) VALUES ($1, $2, $3)
         ON CONFLICT (address) DO UPDATE SET sequence = excluded.sequence, signed = excluded.signed",
        &[&address, &i(sequence), &signed],
    )
    .await?;
    Ok(RecordOutcome::Stored)
}

/// Stores an envelope: the mailbox row is locked first, so that one mailbox's deliveries
/// and acks take turns and its sequence, dedupe and quota decisions are consistent.
async fn deliver_tx(
    tx: &Transaction<'_>,
    e: &NewEnvelope,
    quota: Quota,
) -> Result<DeliverOutcome, TxError> {
    let mailbox = e.mailbox.as_bytes().as_slice();
    let lock = tx
        .prepare_cached(
            "SELECT next_seq, bytes, envelopes, quota_bytes FROM accounts
             WHERE mailbox = $1 FOR UPDATE",
        )
        .await?;
    let Some(state) = tx.query_opt(&lock, &[&mailbox]).await? else {
        return Ok(DeliverOutcome::UnknownMailbox);
    };
    let quota = quota.for_account(&AccountSettings {
        suspended: false,
        quota_bytes: state.get::<_, Option<i64>>(3).map(u),
    });
    let (next_seq, bytes, count) = (
        u(state.get::<_, i64>(0)),
        u(state.get::<_, i64>(1)),
        u(state.get::<_, i64>(2)),
    );
    let id = e.id.as_bytes().as_slice();
    let seen = tx
        .prepare_cached("SELECT seq FROM dedupe WHERE mailbox = $1 AND id = $2")
        .await?;
    if let Some(row) = tx.query_opt(&seen, &[&mailbox, &id]).await? {
        return Ok(DeliverOutcome::Duplicate { seq: u(row.get(0)) });
    }
    let size = e.bytes.len() as u64;
    if bytes.saturating_add(size) > quota.max_bytes || count.saturating_add(1) > quota.max_envelopes
    {
        return Ok(DeliverOutcome::QuotaExceeded);
    }
    let seq = next_seq;
    let dedupe = tx
        .prepare_cached("INSERT INTO dedupe (mailbox, id, seq, received) VALUES ($1, $2, $3, $4)")
        .await?;
    tx.execute(&dedupe, &[&mailbox, &id, &i(seq), &i(e.received)])
        .await?;
    let store = tx
        .prepare_cached(
            "INSERT INTO envelopes (mailbox, seq, id, size, received, body)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(
        &store,
        &[
            &mailbox,
            &i(seq),
            &id,
            &i(size),
            &i(e.received),
            &e.bytes.as_ref(),
        ],
    )
    .await?;
    let update = tx
        .prepare_cached(
            "UPDATE accounts SET next_seq = $2, bytes = $3, envelopes = $4 WHERE mailbox = $1",
        )
        .await?;
    tx.execute(
        &update,
        &[&mailbox, &i(seq + 1), &i(bytes + size), &i(count + 1)],
    )
    .await?;
    Ok(DeliverOutcome::Stored { seq })
}

/// Stores a batch of deliveries in five statements whatever its size (the batch's
/// accounts locked and read in sorted order, its ids looked up in `dedupe`, then the new
/// rows of `dedupe` and `envelopes` and the accounts' counters written from arrays), where
/// one statement per delivery and step cost a round trip each. The outcomes are decided
/// here one delivery after the other, exactly as [`deliver_tx`] would in that order: each
/// sees the ones before it (a repeated id is a duplicate of the first, quotas count the
/// earlier ones).
/// The envelope ids of a batch already stored in their mailboxes: one index probe per
/// delivery whatever the planner knows of the table. A plain join let a generic plan, made
/// while the table was small, hash-join a sequential scan of all of `dedupe` into every
/// batch (LIMIT keeps the lateral subquery from being flattened into such a join). Public
/// for the test that checks its plan.
pub const DEDUPE_PROBE: &str = "SELECT k.mailbox, k.id, d.seq
     FROM unnest($1::bytea[], $2::bytea[]) AS k(mailbox, id)
     CROSS JOIN LATERAL (SELECT seq FROM dedupe
       WHERE dedupe.mailbox = k.mailbox AND dedupe.id = k.id LIMIT 1) d";

/// A batch's new counters of its mailboxes; `= ANY($1)` lets the planner find the rows by
/// index whatever it knows of the table. Public for the test that checks its plan.
pub const ACCOUNTS_UPDATE: &str =
    "UPDATE accounts SET next_seq = v.next_seq, bytes = v.bytes, envelopes = v.envelopes
     FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[])
       AS v(mailbox, next_seq, bytes, envelopes)
     WHERE accounts.mailbox = ANY($1) AND accounts.mailbox = v.mailbox";

async fn deliver_many_tx(
    tx: &Transaction<'_>,
    mailboxes: &[&[u8]],
    ops: &[DeliverOp],
) -> Result<Vec<DeliverOutcome>, TxError> {
    struct Account {
        next_seq: u64,
        bytes: u64,
        envelopes: u64,
        quota_bytes: Option<i64>,
        changed: bool,
    }
    let lock = tx
        .prepare_cached(
            "SELECT mailbox, next_seq, bytes, envelopes, quota_bytes FROM accounts
             WHERE mailbox = ANY($1) ORDER BY mailbox FOR UPDATE",
        )
        .await?;
    let mut accounts: HashMap<Vec<u8>, Account> = HashMap::new();
    for row in tx.query(&lock, &[&mailboxes]).await? {
        accounts.insert(
            row.get(0),
            Account {
                next_seq: u(row.get(1)),
                bytes: u(row.get(2)),
                envelopes: u(row.get(3)),
                quota_bytes: row.get(4),
                changed: false,
            },
        );
    }
    let keys: (Vec<&[u8]>, Vec<&[u8]>) = ops
        .iter()
        .filter(|o| accounts.contains_key(o.envelope.mailbox.as_bytes().as_slice()))
        .map(|o| {
            (
                o.envelope.mailbox.as_bytes().as_slice(),
                o.envelope.id.as_bytes().as_slice(),
            )
        })
        .unzip();
    let mut seen: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::new();
    if !keys.0.is_empty() {
        let dupes = tx.prepare_cached(DEDUPE_PROBE).await?;
        for row in tx.query(&dupes, &[&keys.0, &keys.1]).await? {
            seen.insert((row.get(0), row.get(1)), u(row.get(2)));
        }
    }
    let mut outcomes = Vec::with_capacity(ops.len());
    let (mut new_mailbox, mut new_id, mut new_seq, mut new_size, mut new_received, mut new_body) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for op in ops {
        let e = &op.envelope;
        let mailbox = e.mailbox.as_bytes().as_slice();
        let Some(account) = accounts.get_mut(mailbox) else {
            outcomes.push(DeliverOutcome::UnknownMailbox);
            continue;
        };
        let key = (mailbox.to_vec(), e.id.as_bytes().to_vec());
        if let Some(&seq) = seen.get(&key) {
            outcomes.push(DeliverOutcome::Duplicate { seq });
            continue;
        }
        let quota = op.quota.for_account(&AccountSettings {
            suspended: false,
            quota_bytes: account.quota_bytes.map(u),
        });
        let size = e.bytes.len() as u64;
        if account.bytes.saturating_add(size) > quota.max_bytes
            || account.envelopes.saturating_add(1) > quota.max_envelopes
        {
            outcomes.push(DeliverOutcome::QuotaExceeded);
            continue;
        }
        let seq = account.next_seq;
        account.next_seq += 1;
        account.bytes += size;
        account.envelopes += 1;
        account.changed = true;
        seen.insert(key, seq);
        new_mailbox.push(mailbox);
        new_id.push(e.id.as_bytes().as_slice());
        new_seq.push(i(seq));
        new_size.push(i(size));
        new_received.push(i(e.received));
        new_body.push(e.bytes.as_ref());
        outcomes.push(DeliverOutcome::Stored { seq });
    }
    if new_mailbox.is_empty() {
        return Ok(outcomes);
    }
    let dedupe = tx
        .prepare_cached(
            "INSERT INTO dedupe (mailbox, id, seq, received)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[])",
        )
        .await?;
    tx.execute(&dedupe, &[&new_mailbox, &new_id, &new_seq, &new_received])
        .await?;
    let store = tx
        .prepare_cached(
            "INSERT INTO envelopes (mailbox, seq, id, size, received, body)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::int8[], $5::int8[],
                                  $6::bytea[])",
        )
        .await?;
    tx.execute(
        &store,
        &[
            &new_mailbox,
            &new_seq,
            &new_id,
            &new_size,
            &new_received,
            &new_body,
        ],
    )
    .await?;
    let (mut up_mailbox, mut up_next, mut up_bytes, mut up_count) =
        (vec![], vec![], vec![], vec![]);
    for (mailbox, a) in accounts.iter().filter(|(_, a)| a.changed) {
        up_mailbox.push(mailbox.as_slice());
        up_next.push(i(a.next_seq));
        up_bytes.push(i(a.bytes));
        up_count.push(i(a.envelopes));
    }
    let update = tx.prepare_cached(ACCOUNTS_UPDATE).await?;
    tx.execute(&update, &[&up_mailbox, &up_next, &up_bytes, &up_count])
        .await?;
    Ok(outcomes)
}

async fn ack_tx(tx: &Transaction<'_>, mailbox: &MailboxId, seq: u64) -> Result<bool, TxError> {
    let m = mailbox.as_bytes().as_slice();
    let Some(state) = tx
        .query_opt(
            "SELECT bytes, envelopes FROM accounts WHERE mailbox = $1 FOR UPDATE",
            &[&m],
        )
        .await?
    else {
        return Ok(false);
    };
    let Some(row) = tx
        .query_opt(
            "DELETE FROM envelopes WHERE mailbox = $1 AND seq = $2 RETURNING size",
            &[&m, &i(seq)],
        )
        .await?
    else {
        return Ok(false);
    };
    // The dedupe row stays: a late redelivery of an acked envelope is not stored again.
    let size = u(row.get(0));
    let (bytes, count) = (u(state.get::<_, i64>(0)), u(state.get::<_, i64>(1)));
    tx.execute(
        "UPDATE accounts SET bytes = $2, envelopes = $3 WHERE mailbox = $1",
        &[
            &m,
            &i(bytes.saturating_sub(size)),
            &i(count.saturating_sub(1)),
        ],
    )
    .await?;
    Ok(true)
}

/// Locks the account row of `mailbox` for the transaction (its deliveries, acks and device
/// changes take turns); `false` when there is no such account.
async fn lock_account(tx: &Transaction<'_>, mailbox: &[u8]) -> Result<bool, TxError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM accounts WHERE mailbox = $1 FOR UPDATE",
            &[&mailbox],
        )
        .await?
        .is_some())
}

/// The devices that must acknowledge an envelope of `mailbox`: its registered devices, or
/// the account key alone while it has none.
async fn device_ids_tx(tx: &Transaction<'_>, mailbox: &[u8]) -> Result<Vec<DeviceId>, TxError> {
    let rows = tx
        .query(
            "SELECT id FROM devices WHERE mailbox = $1 ORDER BY id",
            &[&mailbox],
        )
        .await?;
    let mut ids = rows
        .iter()
        .map(|r| id16(r.get::<_, &[u8]>(0)).map(DeviceId))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TxError::Store)?;
    if ids.is_empty() {
        ids.push(DeviceId::ACCOUNT);
    }
    Ok(ids)
}

async fn add_device_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
    d: &Device,
    max: usize,
) -> Result<AddDeviceOutcome, TxError> {
    let m = mailbox.as_bytes().as_slice();
    if !lock_account(tx, m).await? {
        return Ok(AddDeviceOutcome::UnknownMailbox);
    }
    let ids = device_ids_tx(tx, m).await?;
    if ids.contains(&d.id) {
        return Ok(AddDeviceOutcome::Existing);
    }
    let registered = ids.iter().filter(|i| **i != DeviceId::ACCOUNT).count();
    if registered >= max {
        return Ok(AddDeviceOutcome::TooMany);
    }
    tx.execute(
        "INSERT INTO devices (mailbox, id, key, name, created) VALUES ($1, $2, $3, $4, $5)",
        &[
            &m,
            &d.id.0.as_slice(),
            &d.key.as_slice(),
            &d.name,
            &i(d.created),
        ],
    )
    .await?;
    Ok(AddDeviceOutcome::Added)
}

async fn remove_device_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
    device: DeviceId,
) -> Result<RemoveDeviceOutcome, TxError> {
    let m = mailbox.as_bytes().as_slice();
    if !lock_account(tx, m).await? {
        return Ok(RemoveDeviceOutcome::Unknown);
    }
    let ids = device_ids_tx(tx, m).await?;
    if device == DeviceId::ACCOUNT || !ids.contains(&device) {
        return Ok(RemoveDeviceOutcome::Unknown);
    }
    if ids.len() == 1 {
        return Ok(RemoveDeviceOutcome::Last);
    }
    // Its acks go with it (ON DELETE CASCADE); then every envelope that all the remaining
    // devices have acknowledged is deleted.
    tx.execute(
        "DELETE FROM devices WHERE mailbox = $1 AND id = $2",
        &[&m, &device.0.as_slice()],
    )
    .await?;
    let remaining = (ids.len() - 1) as i64;
    let done = tx
        .query(
            "SELECT seq FROM device_acks WHERE mailbox = $1 GROUP BY seq
             HAVING COUNT(*) >= $2 ORDER BY seq",
            &[&m, &remaining],
        )
        .await?;
    let mut released = 0;
    for row in done {
        if ack_tx(tx, mailbox, u(row.get(0))).await? {
            released += 1;
        }
    }
    Ok(RemoveDeviceOutcome::Removed { released })
}

async fn ack_device_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
    seq: u64,
    device: DeviceId,
) -> Result<DeviceAck, TxError> {
    let m = mailbox.as_bytes().as_slice();
    let known = lock_account(tx, m).await?;
    let ids = device_ids_tx(tx, m).await?;
    ack_locked_tx(tx, mailbox, seq, device, known, &ids).await
}

/// [`ack_device_tx`] of each of `seqs` in one transaction: the account is locked and its
/// devices read once.
async fn ack_devices_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
    seqs: &[u64],
    device: DeviceId,
) -> Result<Vec<DeviceAck>, TxError> {
    let m = mailbox.as_bytes().as_slice();
    let known = lock_account(tx, m).await?;
    let ids = device_ids_tx(tx, m).await?;
    if known && ids == [device] {
        return ack_only_device_tx(tx, m, seqs, device).await;
    }
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        out.push(ack_locked_tx(tx, mailbox, *seq, device, known, &ids).await?);
    }
    Ok(out)
}

/// [`ack_devices_tx`] when `device` is the account's only device (the usual case), with
/// the account locked: every envelope it has not acknowledged yet is deleted, in two
/// statements for the whole batch instead of five per envelope. The same outcomes as
/// [`ack_locked_tx`] one by one: a seq listed twice is deleted once, then missing.
async fn ack_only_device_tx(
    tx: &Transaction<'_>,
    m: &[u8],
    seqs: &[u64],
    device: DeviceId,
) -> Result<Vec<DeviceAck>, TxError> {
    let wanted: Vec<i64> = seqs.iter().map(|s| i(*s)).collect();
    let rows = tx
        .query(
            "DELETE FROM envelopes e WHERE e.mailbox = $1 AND e.seq = ANY($2)
               AND NOT EXISTS (SELECT 1 FROM device_acks a
                               WHERE a.mailbox = e.mailbox AND a.seq = e.seq AND a.device = $3)
             RETURNING e.seq, e.size",
            &[&m, &wanted, &device.0.as_slice()],
        )
        .await?;
    let mut deleted: HashSet<u64> = HashSet::with_capacity(rows.len());
    let mut size = 0u64;
    for r in &rows {
        deleted.insert(u(r.get(0)));
        size = size.saturating_add(u(r.get(1)));
    }
    if !rows.is_empty() {
        // The dedupe rows stay: a late redelivery of an acked envelope is not stored again.
        tx.execute(
            "UPDATE accounts SET bytes = GREATEST(bytes - $2, 0),
                                 envelopes = GREATEST(envelopes - $3, 0)
             WHERE mailbox = $1",
            &[&m, &i(size), &(rows.len() as i64)],
        )
        .await?;
    }
    Ok(seqs
        .iter()
        .map(|s| {
            if deleted.remove(s) {
                DeviceAck::Deleted
            } else {
                DeviceAck::Missing
            }
        })
        .collect())
}

/// The ack of one envelope, with the account locked (`known`: it exists) and its devices
/// `ids` read.
async fn ack_locked_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
    seq: u64,
    device: DeviceId,
    known: bool,
    ids: &[DeviceId],
) -> Result<DeviceAck, TxError> {
    let m = mailbox.as_bytes().as_slice();
    if !ids.contains(&device) {
        return Ok(DeviceAck::UnknownDevice);
    }
    if !known
        || tx
            .query_opt(
                "SELECT 1 FROM envelopes WHERE mailbox = $1 AND seq = $2",
                &[&m, &i(seq)],
            )
            .await?
            .is_none()
    {
        return Ok(DeviceAck::Missing);
    }
    let acked = tx
        .query(
            "SELECT device FROM device_acks WHERE mailbox = $1 AND seq = $2",
            &[&m, &i(seq)],
        )
        .await?
        .iter()
        .map(|r| id16(r.get::<_, &[u8]>(0)).map(DeviceId))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TxError::Store)?;
    if acked.contains(&device) {
        return Ok(DeviceAck::Missing);
    }
    if ids.iter().all(|d| *d == device || acked.contains(d)) {
        ack_tx(tx, mailbox, seq).await?;
        return Ok(DeviceAck::Deleted);
    }
    tx.execute(
        "INSERT INTO device_acks (mailbox, seq, device) VALUES ($1, $2, $3)",
        &[&m, &i(seq), &device.0.as_slice()],
    )
    .await?;
    Ok(DeviceAck::Recorded)
}

/// Deletes the envelopes of `mailbox` received before `before`, keeping its counters
/// right; returns how many.
async fn expire_tx(tx: &Transaction<'_>, mailbox: &[u8], before: i64) -> Result<u64, TxError> {
    let Some(state) = tx
        .query_opt(
            "SELECT bytes, envelopes FROM accounts WHERE mailbox = $1 FOR UPDATE",
            &[&mailbox],
        )
        .await?
    else {
        return Ok(0);
    };
    // The dedupe rows stay: a late redelivery of an expired envelope is not stored again.
    let rows = tx
        .query(
            "DELETE FROM envelopes WHERE mailbox = $1 AND received < $2 RETURNING size",
            &[&mailbox, &before],
        )
        .await?;
    let size: u64 = rows.iter().map(|r| u(r.get(0))).sum();
    let n = rows.len() as u64;
    let (bytes, count) = (u(state.get::<_, i64>(0)), u(state.get::<_, i64>(1)));
    tx.execute(
        "UPDATE accounts SET bytes = $2, envelopes = $3 WHERE mailbox = $1",
        &[
            &mailbox,
            &i(bytes.saturating_sub(size)),
            &i(count.saturating_sub(n)),
        ],
    )
    .await?;
    Ok(n)
}

/// Queues a hop held by `holder` until `lease` (the enqueuing process works it first).
async fn enqueue_tx(
    tx: &Transaction<'_>,
    item: &OutboundItem,
    payload: &Bytes,
    holder: &[u8; 16],
    lease: i64,
) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO outbound
            (id, item, next_attempt_ms, holder, lease_until_ms, payload, sender, size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET item = excluded.item,
            next_attempt_ms = excluded.next_attempt_ms, holder = excluded.holder,
            lease_until_ms = excluded.lease_until_ms, payload = excluded.payload,
            sender = excluded.sender, size = excluded.size",
        &[
            &item.id.as_slice(),
            &item_json(item),
            &i(item.next_attempt_ms),
            &holder.as_slice(),
            &lease,
            &payload.as_ref(),
            // The column counts a sender's hops (`enqueue_within`): a forward is not theirs.
            &item
                .counts_for_sender()
                .then_some(item.sender.as_bytes().as_slice()),
            &i(item.size),
        ],
    )
    .await?;
    Ok(())
}

fn item_json(item: &OutboundItem) -> String {
    serde_json::to_string(item).expect("invariant: outbound item serialises")
}

const INVITE_COLUMNS: &str = "code_hash, created, expires, uses, used, revoked";

fn invite_row(r: &tokio_postgres::Row) -> Result<([u8; 32], StoredInvite), StoreError> {
    let h: [u8; 32] = r
        .get::<_, &[u8]>(0)
        .try_into()
        .map_err(|_| corrupt("invite hash"))?;
    let count = |at: usize| u32::try_from(r.get::<_, i32>(at)).map_err(|_| corrupt("invite uses"));
    Ok((
        h,
        StoredInvite {
            created: u(r.get(1)),
            expires: r.get::<_, Option<i64>>(2).map(u),
            uses: count(3)?,
            used: count(4)?,
            revoked: r.get(5),
        },
    ))
}

/// `accounts` rows with their usage and settings, and the addresses each owns.
const USAGE_COLUMNS: &str = "mailbox, created, bytes, envelopes, suspended, quota_bytes,
    ARRAY(SELECT address FROM claims c WHERE c.mailbox = a.mailbox ORDER BY address)";

fn usage_row(r: &tokio_postgres::Row) -> Result<AccountUsage, StoreError> {
    Ok(AccountUsage {
        mailbox: mailbox_from(r.get(0))?,
        created: u(r.get(1)),
        bytes: u(r.get(2)),
        envelopes: u(r.get(3)),
        settings: AccountSettings {
            suspended: r.get(4),
            quota_bytes: r.get::<_, Option<i64>>(5).map(u),
        },
        addresses: r.get(6),
    })
}

async fn delete_account_tx(
    tx: &Transaction<'_>,
    mailbox: &MailboxId,
) -> Result<Option<DeletedAccount>, TxError> {
    let m = mailbox.as_bytes().as_slice();
    let Some(row) = tx
        .query_opt(
            "SELECT envelopes FROM accounts WHERE mailbox = $1 FOR UPDATE",
            &[&m],
        )
        .await?
    else {
        return Ok(None);
    };
    let envelopes = u(row.get(0));
    tx.execute("DELETE FROM device_acks WHERE mailbox = $1", &[&m])
        .await?;
    tx.execute("DELETE FROM envelopes WHERE mailbox = $1", &[&m])
        .await?;
    tx.execute("DELETE FROM dedupe WHERE mailbox = $1", &[&m])
        .await?;
    let devices = tx
        .execute("DELETE FROM devices WHERE mailbox = $1", &[&m])
        .await?;
    tx.execute(
        "DELETE FROM records WHERE address IN (SELECT address FROM claims WHERE mailbox = $1)",
        &[&m],
    )
    .await?;
    let addresses = tx
        .execute("DELETE FROM claims WHERE mailbox = $1", &[&m])
        .await?;
    tx.execute("DELETE FROM sessions WHERE mailbox = $1", &[&m])
        .await?;
    let mut queued = 0;
    for r in tx.query("SELECT id, item FROM outbound", &[]).await? {
        let item = parse_item(r.get(1)).map_err(TxError::Store)?;
        if item.sender == *mailbox {
            tx.execute(
                "DELETE FROM outbound WHERE id = $1",
                &[&r.get::<_, &[u8]>(0)],
            )
            .await?;
            queued += 1;
        }
    }
    tx.execute("DELETE FROM accounts WHERE mailbox = $1", &[&m])
        .await?;
    Ok(Some(DeletedAccount {
        envelopes,
        addresses,
        devices,
        queued,
    }))
}

fn parse_item(text: &str) -> Result<OutboundItem, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("outbound item: {e}")))
}

impl Store for PgStore {
    fn register(&self, account: NewAccount) -> StoreFuture<'_, RegisterOutcome> {
        Box::pin(async move { write_tx!(self, 1, |tx| register_tx(tx, &account).await) })
    }

    fn put_record(
        &self,
        address: String,
        mailbox: MailboxId,
        sequence: u64,
        signed: Vec<u8>,
    ) -> StoreFuture<'_, RecordOutcome> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                put_record_tx(tx, &address, &mailbox, sequence, &signed).await
            })
        })
    }

    fn reset_address(&self, address: String) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                let claims = tx
                    .execute("DELETE FROM claims WHERE address = $1", &[&address])
                    .await?;
                let records = tx
                    .execute("DELETE FROM records WHERE address = $1", &[&address])
                    .await?;
                Ok::<bool, TxError>(claims + records > 0)
            })
        })
    }

    fn deliver(&self, envelope: NewEnvelope, quota: Quota) -> StoreFuture<'_, DeliverOutcome> {
        self.deliver_forwarding(envelope, quota, Vec::new())
    }

    fn deliver_forwarding(
        &self,
        envelope: NewEnvelope,
        quota: Quota,
        forwards: Vec<(OutboundItem, Bytes)>,
    ) -> StoreFuture<'_, DeliverOutcome> {
        let sender = self.deliveries.lock().ok().and_then(|d| {
            d.as_ref()
                .map(|lanes| lanes[lane(&envelope.mailbox, lanes.len())].clone())
        });
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            let (reply, answer) = oneshot::channel();
            sender
                .send(DeliverOp {
                    envelope,
                    quota,
                    forwards,
                    reply,
                })
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn ack(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move { write_tx!(self, 1, |tx| ack_tx(tx, &mailbox, seq).await) })
    }

    fn enqueue(&self, item: OutboundItem, payload: Bytes) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // The enqueuing process works the hop first: it holds it from the start.
            let lease = i(now_ms().saturating_add(self.lease_ms));
            write_tx!(self, 1, |tx| {
                enqueue_tx(tx, &item, &payload, &self.holder, lease).await
            })
        })
    }

    fn enqueue_within(
        &self,
        item: OutboundItem,
        payload: Bytes,
        max_hops: u64,
        max_bytes: u64,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let lease = i(now_ms().saturating_add(self.lease_ms));
            let sender = item.sender.as_bytes().as_slice();
            write_tx!(self, 1, |tx| {
                // The sender's row lock puts one user's submits in turn, in any process.
                tx.execute(
                    "SELECT 1 FROM accounts WHERE mailbox = $1 FOR UPDATE",
                    &[&sender],
                )
                .await?;
                let used = tx
                    .query_one(
                        "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT)
                         FROM outbound WHERE sender = $1",
                        &[&sender],
                    )
                    .await?;
                let (hops, bytes) = (u(used.get(0)), u(used.get(1)));
                if (max_hops > 0 && hops.saturating_add(1) > max_hops)
                    || (max_bytes > 0 && bytes.saturating_add(item.size) > max_bytes)
                {
                    return Ok::<bool, TxError>(false);
                }
                enqueue_tx(tx, &item, &payload, &self.holder, lease).await?;
                Ok(true)
            })
        })
    }

    fn take(&self, mailbox: MailboxId, seq: u64, then: Handoff) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let lease = i(now_ms().saturating_add(self.lease_ms));
            write_tx!(self, 1, |tx| {
                // Only a letter still there is handed on: taken twice, it is queued once.
                if !ack_tx(tx, &mailbox, seq).await? {
                    return Ok(false);
                }
                match &then {
                    Handoff::Enqueue(jobs) => {
                        for (item, payload) in jobs {
                            enqueue_tx(tx, item, payload, &self.holder, lease).await?
                        }
                    }
                    Handoff::Bounce(env) => {
                        let unlimited = Quota {
                            max_bytes: u64::MAX,
                            max_envelopes: u64::MAX,
                        };
                        match deliver_tx(tx, env, unlimited).await? {
                            DeliverOutcome::Stored { .. } => {}
                            other => tracing::warn!(outcome = ?other, "bounce not stored"),
                        }
                    }
                    Handoff::Drop => {}
                }
                Ok::<bool, TxError>(true)
            })
        })
    }

    fn reschedule(&self, item: OutboundItem) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let json = item_json(&item);
            write_tx!(self, 1, |tx| {
                tx.execute(
                    "UPDATE outbound SET item = $2, next_attempt_ms = $3 WHERE id = $1",
                    &[&item.id.as_slice(), &json, &i(item.next_attempt_ms)],
                )
                .await?;
                Ok::<(), TxError>(())
            })
        })
    }

    fn finish(&self, id: QueueId, bounce: Option<NewEnvelope>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                tx.execute("DELETE FROM outbound WHERE id = $1", &[&id.0.as_slice()])
                    .await?;
                if let Some(env) = &bounce {
                    let unlimited = Quota {
                        max_bytes: u64::MAX,
                        max_envelopes: u64::MAX,
                    };
                    match deliver_tx(tx, env, unlimited).await? {
                        DeliverOutcome::Stored { .. } => {}
                        other => tracing::warn!(outcome = ?other, "bounce not stored"),
                    }
                }
                Ok::<(), TxError>(())
            })
        })
    }

    fn add_device(
        &self,
        mailbox: MailboxId,
        device: Device,
        max: usize,
    ) -> StoreFuture<'_, AddDeviceOutcome> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| add_device_tx(tx, &mailbox, &device, max)
                .await)
        })
    }

    fn remove_device(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
    ) -> StoreFuture<'_, RemoveDeviceOutcome> {
        Box::pin(
            async move { write_tx!(self, 1, |tx| remove_device_tx(tx, &mailbox, device).await) },
        )
    }

    fn ack_device(
        &self,
        mailbox: MailboxId,
        seq: u64,
        device: DeviceId,
    ) -> StoreFuture<'_, DeviceAck> {
        Box::pin(
            async move { write_tx!(self, 1, |tx| ack_device_tx(tx, &mailbox, seq, device).await) },
        )
    }

    fn ack_devices(
        &self,
        mailbox: MailboxId,
        seqs: Vec<u64>,
        device: DeviceId,
    ) -> StoreFuture<'_, Vec<DeviceAck>> {
        Box::pin(async move {
            write_tx!(self, seqs.len() as u64, |tx| ack_devices_tx(
                tx, &mailbox, &seqs, device
            )
            .await)
        })
    }

    fn expire(&self, received_before: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // Received times are Unix seconds, far below 2^63.
            let before = received_before.min(i64::MAX as u64) as i64;
            let mailboxes = self
                .query(
                    "SELECT DISTINCT mailbox FROM envelopes WHERE received < $1 ORDER BY mailbox",
                    &[&before],
                )
                .await?;
            // One transaction per mailbox: each is short, and a mailbox expired by another
            // process meanwhile finds nothing left.
            let mut n = 0;
            for row in mailboxes {
                let m: Vec<u8> = row.get(0);
                n += write_tx!(self, 1, |tx| expire_tx(tx, &m, before).await)?;
            }
            Ok(n)
        })
    }

    fn pin_peer(&self, url: NodeUrl, pin: PeerPin) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                tx.execute(
                    "INSERT INTO peers (url, node_key, pinned_at) VALUES ($1, $2, $3)
                     ON CONFLICT (url) DO UPDATE SET node_key = excluded.node_key,
                        pinned_at = excluded.pinned_at",
                    &[&url.as_str(), &pin.node_key.as_slice(), &i(pin.pinned_at)],
                )
                .await?;
                Ok::<(), TxError>(())
            })
        })
    }

    fn set_account_settings(
        &self,
        mailbox: MailboxId,
        settings: AccountSettings,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                let m = mailbox.as_bytes().as_slice();
                let quota = settings.quota_bytes.map(i);
                // Suspending ends the sessions: an epoch read before this write gets no
                // token (see `put_token`).
                let n = tx
                    .execute(
                        "UPDATE accounts SET suspended = $2, quota_bytes = $3,
                         session_epoch = session_epoch + (CASE WHEN $2 THEN 1 ELSE 0 END)
                         WHERE mailbox = $1",
                        &[&m, &settings.suspended, &quota],
                    )
                    .await?;
                if n > 0 && settings.suspended {
                    tx.execute("DELETE FROM sessions WHERE mailbox = $1", &[&m])
                        .await?;
                }
                Ok::<bool, TxError>(n > 0)
            })
        })
    }

    fn delete_account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<DeletedAccount>> {
        Box::pin(async move { write_tx!(self, 1, |tx| delete_account_tx(tx, &mailbox).await) })
    }

    fn put_invite(&self, hash: [u8; 32], invite: StoredInvite) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let uses = i32::try_from(invite.uses).unwrap_or(i32::MAX);
            let used = i32::try_from(invite.used).unwrap_or(i32::MAX);
            write_tx!(self, 1, |tx| {
                let n = tx
                    .execute(
                        "INSERT INTO stored_invites (code_hash, created, expires, uses, used, revoked)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        &[
                            &hash.as_slice(),
                            &i(invite.created),
                            &invite.expires.map(i),
                            &uses,
                            &used,
                            &invite.revoked,
                        ],
                    )
                    .await?;
                Ok::<bool, TxError>(n > 0)
            })
        })
    }

    fn revoke_invite(&self, hash: [u8; 32]) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            write_tx!(self, 1, |tx| {
                let n = tx
                    .execute(
                        "UPDATE stored_invites SET revoked = true
                         WHERE code_hash = $1 AND NOT revoked",
                        &[&hash.as_slice()],
                    )
                    .await?;
                Ok::<bool, TxError>(n > 0)
            })
        })
    }

    fn invites(&self) -> StoreFuture<'_, Vec<([u8; 32], StoredInvite)>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!("SELECT {INVITE_COLUMNS} FROM stored_invites ORDER BY code_hash"),
                    &[],
                )
                .await?;
            rows.iter().map(invite_row).collect()
        })
    }

    fn invite(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<StoredInvite>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    &format!("SELECT {INVITE_COLUMNS} FROM stored_invites WHERE code_hash = $1"),
                    &[&hash.as_slice()],
                )
                .await?;
            Ok(row.as_ref().map(invite_row).transpose()?.map(|(_, i)| i))
        })
    }

    fn accounts(&self, limit: usize) -> StoreFuture<'_, Vec<AccountUsage>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .query(
                    &format!("SELECT {USAGE_COLUMNS} FROM accounts a ORDER BY mailbox LIMIT $1"),
                    &[&limit],
                )
                .await?;
            rows.iter().map(usage_row).collect()
        })
    }

    fn account_settings(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountSettings>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT suspended, quota_bytes FROM accounts WHERE mailbox = $1",
                    &[&mailbox.as_bytes().as_slice()],
                )
                .await?;
            Ok(row.map(|r| AccountSettings {
                suspended: r.get(0),
                quota_bytes: r.get::<_, Option<i64>>(1).map(u),
            }))
        })
    }

    fn account_usage(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<AccountUsage>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    &format!("SELECT {USAGE_COLUMNS} FROM accounts a WHERE mailbox = $1"),
                    &[&mailbox.as_bytes().as_slice()],
                )
                .await?;
            row.as_ref().map(usage_row).transpose()
        })
    }

    fn account(&self, mailbox: MailboxId) -> StoreFuture<'_, Option<Account>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT cert, created FROM accounts WHERE mailbox = $1",
                    &[&mailbox.as_bytes().as_slice()],
                )
                .await?;
            Ok(row.map(|r| Account {
                mailbox,
                cert: r.get(0),
                created: u(r.get(1)),
            }))
        })
    }

    fn mailbox_of(&self, fingerprint: Vec<u8>) -> StoreFuture<'_, Option<MailboxId>> {
        Box::pin(async move {
            self.query_opt(
                "SELECT mailbox FROM accounts WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await?
            .map(|r| mailbox_from(r.get::<_, &[u8]>(0)))
            .transpose()
        })
    }

    fn owner_of(&self, address: String) -> StoreFuture<'_, Option<MailboxId>> {
        Box::pin(async move {
            self.query_opt("SELECT mailbox FROM claims WHERE address = $1", &[&address])
                .await?
                .map(|r| mailbox_from(r.get::<_, &[u8]>(0)))
                .transpose()
        })
    }

    fn record(&self, address: String) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move {
            Ok(self
                .query_opt("SELECT signed FROM records WHERE address = $1", &[&address])
                .await?
                .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
        })
    }

    fn list(&self, mailbox: MailboxId, after: u64, limit: usize) -> StoreFuture<'_, Vec<ListItem>> {
        Box::pin(async move {
            // Sequences are below 2^63: a cursor beyond lists nothing.
            if after >= i64::MAX as u64 || limit == 0 {
                return Ok(Vec::new());
            }
            let limit = limit.min(i64::MAX as usize) as i64;
            let rows = self
                .query(
                    "SELECT seq, id, size FROM envelopes WHERE mailbox = $1 AND seq > $2
                     ORDER BY seq LIMIT $3",
                    &[&mailbox.as_bytes().as_slice(), &i(after), &limit],
                )
                .await?;
            rows.iter().map(list_item).collect()
        })
    }

    fn envelope(&self, mailbox: MailboxId, seq: u64) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move {
            Ok(self
                .query_opt(
                    "SELECT body FROM envelopes WHERE mailbox = $1 AND seq = $2",
                    &[&mailbox.as_bytes().as_slice(), &i(seq)],
                )
                .await?
                .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
        })
    }

    fn envelopes(
        &self,
        mailbox: MailboxId,
        seqs: Vec<u64>,
        max_bytes: usize,
    ) -> StoreFuture<'_, Vec<(u64, Option<Bytes>)>> {
        Box::pin(async move {
            let m = mailbox.as_bytes().as_slice();
            // Sequences are below 2^63: one beyond names no envelope.
            let asked: Vec<i64> = seqs
                .iter()
                .filter(|s| **s < i64::MAX as u64)
                .map(|s| *s as i64)
                .collect();
            // Sizes first, so that bodies beyond the budget are never read.
            let sizes: HashMap<u64, u64> = self
                .query(
                    "SELECT seq, size FROM envelopes WHERE mailbox = $1 AND seq = ANY($2)",
                    &[&m, &asked],
                )
                .await?
                .iter()
                .map(|r| (u(r.get(0)), u(r.get(1))))
                .collect();
            let mut take: Vec<u64> = Vec::new();
            let mut total = 0u64;
            for seq in &seqs {
                let len = sizes.get(seq).copied().unwrap_or(0);
                if !take.is_empty() && total.saturating_add(len) > max_bytes as u64 {
                    break;
                }
                total = total.saturating_add(len);
                take.push(*seq);
            }
            let wanted: Vec<i64> = take
                .iter()
                .filter(|s| sizes.contains_key(s))
                .map(|s| *s as i64)
                .collect();
            let mut bodies: HashMap<u64, Bytes> = self
                .query(
                    "SELECT seq, body FROM envelopes WHERE mailbox = $1 AND seq = ANY($2)",
                    &[&m, &wanted],
                )
                .await?
                .into_iter()
                .map(|r| (u(r.get(0)), Bytes::from(r.get::<_, Vec<u8>>(1))))
                .collect();
            // An envelope acknowledged between the two reads is answered as none.
            Ok(take.into_iter().map(|s| (s, bodies.remove(&s))).collect())
        })
    }

    fn devices(&self, mailbox: MailboxId) -> StoreFuture<'_, Vec<Device>> {
        Box::pin(async move {
            self.query(
                "SELECT id, key, name, created FROM devices WHERE mailbox = $1 ORDER BY id",
                &[&mailbox.as_bytes().as_slice()],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Device {
                    id: DeviceId(id16(r.get::<_, &[u8]>(0))?),
                    key: r
                        .get::<_, &[u8]>(1)
                        .try_into()
                        .map_err(|_| corrupt("device key"))?,
                    name: r.get(2),
                    created: u(r.get(3)),
                })
            })
            .collect()
        })
    }

    fn list_for(
        &self,
        mailbox: MailboxId,
        device: DeviceId,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<ListItem>> {
        Box::pin(async move {
            // Sequences are below 2^63: a cursor beyond lists nothing.
            if after >= i64::MAX as u64 || limit == 0 {
                return Ok(Vec::new());
            }
            let limit = limit.min(i64::MAX as usize) as i64;
            let rows = self
                .query(
                    "SELECT e.seq, e.id, e.size FROM envelopes e
                     WHERE e.mailbox = $1 AND e.seq > $2 AND NOT EXISTS
                       (SELECT 1 FROM device_acks a
                        WHERE a.mailbox = e.mailbox AND a.seq = e.seq AND a.device = $3)
                     ORDER BY e.seq LIMIT $4",
                    &[
                        &mailbox.as_bytes().as_slice(),
                        &i(after),
                        &device.0.as_slice(),
                        &limit,
                    ],
                )
                .await?;
            rows.iter().map(list_item).collect()
        })
    }

    fn outbound(&self) -> StoreFuture<'_, Vec<OutboundItem>> {
        Box::pin(async move {
            self.query("SELECT item FROM outbound ORDER BY id", &[])
                .await?
                .iter()
                .map(|r| parse_item(r.get(0)))
                .collect()
        })
    }

    fn claim_outbound(&self, limit: usize) -> StoreFuture<'_, Vec<OutboundItem>> {
        Box::pin(async move {
            let now = now_ms();
            let until = i(now.saturating_add(self.lease_ms));
            let limit = limit.min(i64::MAX as usize) as i64;
            let rows = write_tx!(self, 1, |tx| {
                // SKIP LOCKED: a row another process is claiming right now is left to it.
                Ok::<_, TxError>(
                    tx.query(
                        "UPDATE outbound SET holder = $1, lease_until_ms = $2
                         WHERE id IN (SELECT id FROM outbound WHERE lease_until_ms < $3
                                      ORDER BY next_attempt_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
                         RETURNING item",
                        &[&self.holder.as_slice(), &until, &i(now), &limit],
                    )
                    .await?,
                )
            })?;
            rows.iter().map(|r| parse_item(r.get(0))).collect()
        })
    }

    fn renew_outbound(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let until = i(now_ms().saturating_add(self.lease_ms));
            write_tx!(self, 1, |tx| {
                Ok::<u64, TxError>(
                    tx.execute(
                        "UPDATE outbound SET lease_until_ms = $2 WHERE holder = $1",
                        &[&self.holder.as_slice(), &until],
                    )
                    .await?,
                )
            })
        })
    }

    fn outbound_payload(&self, id: QueueId) -> StoreFuture<'_, Option<Bytes>> {
        Box::pin(async move {
            Ok(self
                .query_opt(
                    "SELECT payload FROM outbound WHERE id = $1",
                    &[&id.0.as_slice()],
                )
                .await?
                .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
        })
    }

    fn peer_pins(&self) -> StoreFuture<'_, Vec<(NodeUrl, PeerPin)>> {
        Box::pin(async move {
            self.query(
                "SELECT url, node_key, pinned_at FROM peers ORDER BY url",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let url = NodeUrl::parse(r.get(0)).map_err(|_| corrupt("peer url"))?;
                let node_key: [u8; 32] = r
                    .get::<_, &[u8]>(1)
                    .try_into()
                    .map_err(|_| corrupt("peer key"))?;
                Ok((
                    url,
                    PeerPin {
                        node_key,
                        pinned_at: u(r.get(2)),
                    },
                ))
            })
            .collect()
        })
    }

    fn prune_dedupe(&self, received_before: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // Received times are Unix seconds, far below 2^63.
            let before = received_before.min(i64::MAX as u64) as i64;
            write_tx!(self, 1, |tx| {
                Ok::<u64, TxError>(
                    tx.execute(
                        "DELETE FROM dedupe WHERE received < $1 AND NOT EXISTS
                           (SELECT 1 FROM envelopes e
                            WHERE e.mailbox = dedupe.mailbox AND e.seq = dedupe.seq)",
                        &[&before],
                    )
                    .await?,
                )
            })
        })
    }

    fn keeps_sessions(&self) -> bool {
        true
    }

    fn put_nonce(
        &self,
        key: [u8; 32],
        mailbox: MailboxId,
        expires: u64,
        per_mailbox: usize,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let m = mailbox.as_bytes().as_slice();
            let keep = per_mailbox.min(i64::MAX as usize) as i64;
            write_tx!(self, 1, |tx| {
                tx.execute(
                    "INSERT INTO sessions (key, kind, mailbox, expires) VALUES ($1, $2, $3, $4)",
                    &[&key.as_slice(), &NONCE, &m, &i(expires)],
                )
                .await?;
                tx.execute(
                    "DELETE FROM sessions WHERE kind = $2 AND mailbox = $1 AND key NOT IN
                       (SELECT key FROM sessions WHERE kind = $2 AND mailbox = $1
                        ORDER BY expires DESC LIMIT $3)",
                    &[&m, &NONCE, &keep],
                )
                .await?;
                Ok::<(), TxError>(())
            })
        })
    }

    fn take_nonce(&self, key: [u8; 32]) -> StoreFuture<'_, Option<(MailboxId, u64)>> {
        Box::pin(async move {
            let row = write_tx!(self, 1, |tx| {
                Ok::<_, TxError>(
                    tx.query_opt(
                        "DELETE FROM sessions WHERE key = $1 AND kind = $2
                         RETURNING mailbox, expires",
                        &[&key.as_slice(), &NONCE],
                    )
                    .await?,
                )
            })?;
            row.map(|r| Ok((mailbox_from(r.get::<_, &[u8]>(0))?, u(r.get(1)))))
                .transpose()
        })
    }

    fn session_epoch(&self, mailbox: MailboxId) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            Ok(self
                .query_opt(
                    "SELECT session_epoch FROM accounts WHERE mailbox = $1",
                    &[&mailbox.as_bytes().as_slice()],
                )
                .await?
                .map(|r| u(r.get(0)))
                .unwrap_or(0))
        })
    }

    fn put_token(
        &self,
        key: [u8; 32],
        mailbox: MailboxId,
        device: DeviceId,
        expires: u64,
        epoch: u64,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let m = mailbox.as_bytes().as_slice();
            let d = device.0.as_slice();
            write_tx!(self, 1, |tx| {
                // The account row is locked: a rotation commits before or after this whole
                // write, never between the check and the insert.
                let Some(row) = tx
                    .query_opt(
                        "SELECT session_epoch FROM accounts WHERE mailbox = $1 FOR UPDATE",
                        &[&m],
                    )
                    .await?
                else {
                    return Ok(false);
                };
                if u(row.get(0)) != epoch {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO sessions (key, kind, mailbox, expires, device)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&key.as_slice(), &TOKEN, &m, &i(expires), &d],
                )
                .await?;
                Ok::<bool, TxError>(true)
            })
        })
    }

    fn token(&self, key: [u8; 32]) -> StoreFuture<'_, Option<StoredToken>> {
        Box::pin(async move {
            self.query_opt(
                "SELECT mailbox, expires, device FROM sessions WHERE key = $1 AND kind = $2",
                &[&key.as_slice(), &TOKEN],
            )
            .await?
            .map(|r| {
                // A token stored before devices existed is the account key's.
                let device = match r.get::<_, Option<&[u8]>>(2) {
                    None => DeviceId::ACCOUNT,
                    Some(d) => DeviceId(id16(d)?),
                };
                Ok(StoredToken {
                    mailbox: mailbox_from(r.get::<_, &[u8]>(0))?,
                    device,
                    expires: u(r.get(1)),
                })
            })
            .transpose()
        })
    }

    fn revoke_tokens(&self, mailbox: MailboxId, device: DeviceId) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let m = mailbox.as_bytes().as_slice();
            let d = device.0.as_slice();
            write_tx!(self, 1, |tx| {
                let n = if device == DeviceId::ACCOUNT {
                    tx.execute(
                        "DELETE FROM sessions WHERE mailbox = $1 AND kind = $2
                         AND (device IS NULL OR device = $3)",
                        &[&m, &TOKEN, &d],
                    )
                    .await?
                } else {
                    tx.execute(
                        "DELETE FROM sessions WHERE mailbox = $1 AND kind = $2 AND device = $3",
                        &[&m, &TOKEN, &d],
                    )
                    .await?
                };
                Ok::<u64, TxError>(n)
            })
        })
    }

    fn sweep_sessions(&self, now: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let now = now.min(i64::MAX as u64) as i64;
            write_tx!(self, 1, |tx| {
                Ok::<u64, TxError>(
                    tx.execute("DELETE FROM sessions WHERE expires <= $1", &[&now])
                        .await?,
                )
            })
        })
    }

    fn keeps_limits(&self) -> bool {
        true
    }

    fn take_tokens(
        &self,
        key: [u8; 32],
        bucket: Bucket,
        now_us: u64,
        want: u64,
    ) -> StoreFuture<'_, Tokens> {
        Box::pin(async move {
            // Kept below 2^62 so that the SQL's sums cannot overflow a BIGINT.
            let cap = |v: u64, max: u64| v.min(max) as i64;
            let params = (
                cap(now_us, 1 << 60),
                cap(want, 1 << 20),
                cap(bucket.burst, 1 << 32),
                cap(bucket.interval_us.max(1), 1 << 28),
            );
            let gate = self.gate.read().await;
            if *gate {
                return Err(StoreError::Closed);
            }
            let mut tries = 0;
            let row = loop {
                tries += 1;
                let client = self.pool.get().await.map_err(pool_err)?;
                let stmt = client
                    .prepare_typed_cached(
                        TAKE_TOKENS,
                        &[Type::BYTEA, Type::INT8, Type::INT8, Type::INT8, Type::INT8],
                    )
                    .await
                    .map_err(|e| db_err(&e, false))?;
                match client
                    .query_one(
                        &stmt,
                        &[&key.as_slice(), &params.0, &params.1, &params.2, &params.3],
                    )
                    .await
                {
                    Ok(row) => break row,
                    Err(e) if retryable(&e) && tries < MAX_TRIES => continue,
                    Err(e) => return Err(db_err(&e, false)),
                }
            };
            Ok(Tokens {
                granted: u(row.get(0)),
                tat: u(row.get(1)),
            })
        })
    }

    fn sweep_limits(&self, now_us: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let now = now_us.min(i64::MAX as u64) as i64;
            write_tx!(self, 1, |tx| {
                Ok::<u64, TxError>(
                    tx.execute("DELETE FROM rate_limits WHERE tat <= $1", &[&now])
                        .await?,
                )
            })
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.stats.transactions.load(Ordering::Relaxed),
            ops: self.stats.ops.load(Ordering::Relaxed),
            failed_batches: self.stats.failed.load(Ordering::Relaxed),
            batch_bytes: self.stats.bytes.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // No more deliveries; the batchers store what is queued, then end.
        if let Ok(mut d) = self.deliveries.lock() {
            d.take();
        }
        let done = self
            .batchers_done
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        Box::pin(async move {
            for d in done {
                let _ = d.await;
            }
            let mut closed = self.gate.write().await;
            if !*closed {
                *closed = true;
                // This process's hops go back to the queue for the others at once.
                if let Ok(client) = self.pool.get().await {
                    let _ = client
                        .execute(
                            "UPDATE outbound SET holder = NULL, lease_until_ms = 0 WHERE holder = $1",
                            &[&self.holder.as_slice()],
                        )
                        .await;
                }
                self.pool.close();
            }
            Ok(())
        })
    }
}
