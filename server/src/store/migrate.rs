//! `sealpost-node migrate --from rocksdb --to postgres`: copies a stopped node's RocksDB
//! database (`data_dir`) into the PostgreSQL database of `[storage.postgres]`, table by
//! table, in transactions of a few hundred rows. Everything is copied as stored: accounts
//! with their sequence counters and quota usage, claims, records, used invites, envelopes,
//! dedupe entries (so redeliveries stay duplicates), the outbound queue (unheld, so the
//! first node process claims it), peer pins, and each account's devices with their
//! acknowledgements. Rows already in the target are left as they
//! are (`ON CONFLICT DO NOTHING`): an interrupted move can be run again. Sessions are not
//! moved (RocksDB nodes keep them in memory): clients sign in again.

use std::collections::HashMap;
use std::path::Path;

use rocksdb::{DB, IteratorMode, Options};
use tokio_postgres::types::ToSql;

use super::postgres::PgStore;
use super::rocks::{
    CF_ACCOUNTS, CF_ACKS, CF_DEDUPE, CF_ENVELOPES, CF_INDEX, CF_META, CF_OUTBOUND, CF_PEERS,
    CF_RECORDS, COLUMN_FAMILIES, SCHEMA_VERSION, cf, decode_device, key, u64_at,
};
use super::{OutboundItem, StoreError};
use crate::config::Config;

/// Rows per transaction.
const CHUNK: usize = 500;

/// What was moved, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    pub accounts: u64,
    pub claims: u64,
    pub records: u64,
    pub invites: u64,
    pub envelopes: u64,
    pub dedupe: u64,
    pub outbound: u64,
    pub peers: u64,
    pub devices: u64,
    pub device_acks: u64,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accounts {}, address claims {}, records {}, used invites {}, envelopes {}, \
             dedupe entries {}, queued hops {}, peer pins {}, devices {}, device acks {}",
            self.accounts,
            self.claims,
            self.records,
            self.invites,
            self.envelopes,
            self.dedupe,
            self.outbound,
            self.peers,
            self.devices,
            self.device_acks
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("only --from rocksdb --to postgres is supported")]
    Direction,
    #[error("storage.postgres.url is not set in the configuration")]
    NoUrl,
    #[error(
        "cannot open the RocksDB database in {dir} ({reason}); stop the node first: only one process may open it"
    )]
    Open { dir: String, reason: String },
    #[error(
        "the RocksDB database in {dir} has schema {found:?}; this node moves schema {SCHEMA_VERSION} (run the node on it once to upgrade)"
    )]
    Schema { dir: String, found: Option<Vec<u8>> },
    #[error("reading RocksDB: {0}")]
    Read(#[from] rocksdb::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn corrupt(what: &str) -> MigrateError {
    MigrateError::Corrupt(format!("damaged {what} in the RocksDB database"))
}

/// Moves the RocksDB database of `config` into its PostgreSQL database.
pub async fn rocks_to_postgres(config: &Config) -> Result<Moved, MigrateError> {
    if config.storage.postgres.url.is_empty() {
        return Err(MigrateError::NoUrl);
    }
    let dir = config.resolve(&config.data_dir);
    // Opened for writing (not read-only), so that RocksDB's lock refuses a running node.
    let db = open_exclusive(&dir)?;
    match db.get_cf(cf(&db, CF_META), key::SCHEMA)? {
        Some(v) if v.as_slice() == [SCHEMA_VERSION] => {}
        found => {
            return Err(MigrateError::Schema {
                dir: dir.display().to_string(),
                found,
            });
        }
    }
    let pg = PgStore::open(&config.storage.postgres).await?;
    let result = copy(&db, &pg).await;
    use super::Store;
    pg.close().await?;
    result
}

fn open_exclusive(dir: &Path) -> Result<DB, MigrateError> {
    let opts = Options::default();
    if !dir.join("CURRENT").exists() {
        return Err(MigrateError::Open {
            dir: dir.display().to_string(),
            reason: "no database there".into(),
        });
    }
    let mut cfs: Vec<&str> = COLUMN_FAMILIES.to_vec();
    cfs.push(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
    DB::open_cf(&opts, dir, cfs).map_err(|e| MigrateError::Open {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

type Row = Vec<Box<dyn ToSql + Sync + Send>>;

/// Inserts rows in chunks, one transaction each; returns how many were new.
async fn insert(pg: &PgStore, sql: &str, rows: Vec<Row>) -> Result<u64, MigrateError> {
    let mut n = 0;
    for chunk in rows.chunks(CHUNK) {
        n += pg.execute_each(sql, chunk).await?;
    }
    Ok(n)
}

fn b(v: impl ToSql + Sync + Send + 'static) -> Box<dyn ToSql + Sync + Send> {
    Box::new(v)
}

async fn copy(db: &DB, pg: &PgStore) -> Result<Moved, MigrateError> {
    let mut moved = Moved::default();
    // Accounts: the account, fingerprint, state and claim entries are joined by mailbox.
    let mut certs: HashMap<Vec<u8>, (i64, Vec<u8>)> = HashMap::new();
    let mut fingerprints: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut states: HashMap<Vec<u8>, [i64; 3]> = HashMap::new();
    let mut claims: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_ACCOUNTS), IteratorMode::Start) {
        let (k, v) = kv?;
        let (Some(prefix), rest) = (k.first().copied(), k.get(1..).unwrap_or_default()) else {
            continue;
        };
        match prefix {
            key::ACCOUNT => {
                let created = u64_at(&v, 0).ok_or_else(|| corrupt("account"))?;
                certs.insert(rest.to_vec(), (created as i64, v[8..].to_vec()));
            }
            key::FINGERPRINT => {
                fingerprints.insert(v.to_vec(), rest.to_vec());
            }
            key::STATE => {
                let s = [0, 8, 16].map(|at| u64_at(&v, at).map(|x| x as i64));
                let [Some(a), Some(bb), Some(c)] = s else {
                    return Err(corrupt("mailbox state"));
                };
                states.insert(rest.to_vec(), [a, bb, c]);
            }
            key::CLAIM => {
                let address =
                    String::from_utf8(rest.to_vec()).map_err(|_| corrupt("claimed address"))?;
                claims.push(vec![b(address), b(v.to_vec())]);
            }
            _ => {}
        }
    }
    let mut accounts: Vec<Row> = Vec::new();
    for (mailbox, (created, cert)) in certs {
        let fingerprint = fingerprints
            .get(&mailbox)
            .cloned()
            .ok_or_else(|| corrupt("account without fingerprint"))?;
        let [next_seq, bytes, count] = states.get(&mailbox).copied().unwrap_or([1, 0, 0]);
        accounts.push(vec![
            b(mailbox),
            b(fingerprint),
            b(cert),
            b(created),
            b(next_seq),
            b(bytes),
            b(count),
        ]);
    }
    moved.accounts = insert(
        pg,
        "INSERT INTO accounts (mailbox, fingerprint, cert, created, next_seq, bytes, envelopes)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        accounts,
    )
    .await?;
    moved.claims = insert(
        pg,
        "INSERT INTO claims (address, mailbox) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        claims,
    )
    .await?;

    let mut records: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_RECORDS), IteratorMode::Start) {
        let (k, v) = kv?;
        let address = String::from_utf8(k.to_vec()).map_err(|_| corrupt("record address"))?;
        let sequence = u64_at(&v, 0).ok_or_else(|| corrupt("record"))?;
        records.push(vec![b(address), b(sequence as i64), b(v[8..].to_vec())]);
    }
    moved.records = insert(
        pg,
        "INSERT INTO records (address, sequence, signed) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        records,
    )
    .await?;

    let mut invites: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_META), IteratorMode::Start) {
        let (k, v) = kv?;
        if k.first() != Some(&key::INVITE) {
            continue;
        }
        let used_at = u64_at(&v, 0).ok_or_else(|| corrupt("invite"))?;
        invites.push(vec![
            b(k[1..].to_vec()),
            b(used_at as i64),
            b(v[8..].to_vec()),
        ]);
    }
    moved.invites = insert(
        pg,
        "INSERT INTO invites (code_hash, used_at, mailbox) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        invites,
    )
    .await?;

    // Envelopes: the index entry (id, size, received) and the body, streamed in chunks.
    let envelopes_sql = "INSERT INTO envelopes (mailbox, seq, id, size, received, body)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
    let mut chunk: Vec<Row> = Vec::new();
    let mut chunk_bytes = 0usize;
    for kv in db.iterator_cf(cf(db, CF_INDEX), IteratorMode::Start) {
        let (k, v) = kv?;
        if k.len() != 24 {
            return Err(corrupt("index key"));
        }
        let seq = u64_at(&k, 16).ok_or_else(|| corrupt("index key"))?;
        let (Some(id), Some(size), Some(received)) = (v.get(..16), u64_at(&v, 16), u64_at(&v, 24))
        else {
            return Err(corrupt("index entry"));
        };
        let body = db
            .get_cf(cf(db, CF_ENVELOPES), &k)?
            .ok_or_else(|| corrupt("indexed envelope without body"))?;
        chunk_bytes += body.len();
        chunk.push(vec![
            b(k[..16].to_vec()),
            b(seq as i64),
            b(id.to_vec()),
            b(size as i64),
            b(received as i64),
            b(body),
        ]);
        if chunk.len() >= CHUNK || chunk_bytes >= 32 << 20 {
            moved.envelopes += insert(pg, envelopes_sql, std::mem::take(&mut chunk)).await?;
            chunk_bytes = 0;
        }
    }
    moved.envelopes += insert(pg, envelopes_sql, chunk).await?;

    let dedupe_sql = "INSERT INTO dedupe (mailbox, id, seq, received) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING";
    let mut chunk: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_DEDUPE), IteratorMode::Start) {
        let (k, v) = kv?;
        let (Some(seq), Some(received)) = (u64_at(&v, 0), u64_at(&v, 8)) else {
            return Err(corrupt("dedupe entry"));
        };
        if k.len() != 32 {
            return Err(corrupt("dedupe key"));
        }
        chunk.push(vec![
            b(k[..16].to_vec()),
            b(k[16..].to_vec()),
            b(seq as i64),
            b(received as i64),
        ]);
        if chunk.len() >= CHUNK {
            moved.dedupe += insert(pg, dedupe_sql, std::mem::take(&mut chunk)).await?;
        }
    }
    moved.dedupe += insert(pg, dedupe_sql, chunk).await?;

    let mut outbound: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_OUTBOUND), IteratorMode::Start) {
        let (k, v) = kv?;
        if k.first() != Some(&key::QUEUE_META) {
            continue;
        }
        let item: OutboundItem =
            serde_json::from_slice(&v).map_err(|_| corrupt("outbound item"))?;
        let payload = db
            .get_cf(
                cf(db, CF_OUTBOUND),
                key::prefixed(key::QUEUE_PAYLOAD, &item.id),
            )?
            .ok_or_else(|| corrupt("queued hop without payload"))?;
        let json = String::from_utf8(v.to_vec()).map_err(|_| corrupt("outbound item"))?;
        outbound.push(vec![
            b(item.id.to_vec()),
            b(json),
            b(item.next_attempt_ms as i64),
            b(payload),
        ]);
    }
    moved.outbound = insert(
        pg,
        "INSERT INTO outbound (id, item, next_attempt_ms, holder, lease_until_ms, payload)
         VALUES ($1, $2, $3, NULL, 0, $4) ON CONFLICT DO NOTHING",
        outbound,
    )
    .await?;

    let mut peers: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_PEERS), IteratorMode::Start) {
        let (k, v) = kv?;
        let url = String::from_utf8(k.to_vec()).map_err(|_| corrupt("peer url"))?;
        let (Some(node_key), pinned_at) = (v.get(..32), u64_at(&v, 32).unwrap_or(0)) else {
            return Err(corrupt("peer pin"));
        };
        peers.push(vec![b(url), b(node_key.to_vec()), b(pinned_at as i64)]);
    }
    moved.peers = insert(
        pg,
        "INSERT INTO peers (url, node_key, pinned_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        peers,
    )
    .await?;

    // Devices, then their acks (which name a stored envelope and a device).
    let mut devices: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_ACCOUNTS), IteratorMode::Start) {
        let (k, v) = kv?;
        if k.first() != Some(&key::DEVICE) {
            continue;
        }
        if k.len() != 33 {
            return Err(corrupt("device key"));
        }
        let d = decode_device(&k[17..], &v).map_err(|_| corrupt("device entry"))?;
        devices.push(vec![
            b(k[1..17].to_vec()),
            b(d.id.0.to_vec()),
            b(d.key.to_vec()),
            b(d.name),
            b(d.created as i64),
        ]);
    }
    moved.devices = insert(
        pg,
        "INSERT INTO devices (mailbox, id, key, name, created) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        devices,
    )
    .await?;
    let acks_sql = "INSERT INTO device_acks (mailbox, seq, device) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING";
    let mut chunk: Vec<Row> = Vec::new();
    for kv in db.iterator_cf(cf(db, CF_ACKS), IteratorMode::Start) {
        let (k, _) = kv?;
        let (40, Some(seq)) = (k.len(), u64_at(&k, 16)) else {
            return Err(corrupt("device ack key"));
        };
        chunk.push(vec![
            b(k[..16].to_vec()),
            b(seq as i64),
            b(k[24..].to_vec()),
        ]);
        if chunk.len() >= CHUNK {
            moved.device_acks += insert(pg, acks_sql, std::mem::take(&mut chunk)).await?;
        }
    }
    moved.device_acks += insert(pg, acks_sql, chunk).await?;
    Ok(moved)
}
