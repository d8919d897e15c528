//! Backup and restore of the RocksDB store, online: `sealpost-node backup --to DIR` opens
//! the database read-only beside the running node (RocksDB takes no lock for that and
//! writes nothing in the node's directory), which reads its table files and replays its
//! write-ahead log up to the last whole record, and copies every column family from that
//! one point into a fresh database in DIR, flushed and synced. The node answers a write
//! only once it is synced to its WAL (group commit), so every write it acknowledged before
//! the backup began is in the copy. (A RocksDB secondary instance would follow the node
//! more cheaply, but it does not read blob files, where envelopes live.) `restore` copies
//! such a directory into a stopped node's (empty) data directory.

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};

use super::rocks::{COLUMN_FAMILIES, cf};
use crate::config::Config;

/// Copies begun before one succeeds, when the node retires files under the first ones
/// (under heavy load it flushes every second or so), and the pause between them.
const ATTEMPTS: u32 = 30;
const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Bytes per write batch while copying.
const BATCH_BYTES: usize = 4 << 20;

/// What a backup or restore copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub entries: u64,
    pub bytes: u64,
    /// Copies begun (more than one when the node retired a file under the first).
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "this node keeps its data in PostgreSQL (storage.backend = \"postgres\"): back it up with PostgreSQL's tools (pg_dump, pg_basebackup)"
    )]
    Postgres,
    #[error("{0} exists and is not empty; back up into a new directory")]
    TargetNotEmpty(PathBuf),
    #[error("reading the node's database in {dir}: {source}")]
    Source {
        dir: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("writing the backup in {dir}: {source}")]
    Target {
        dir: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The node retired the write-ahead log `0` while the copy opened its database.
    #[error("the node retired its write-ahead log {0} during the backup, {ATTEMPTS} times")]
    Raced(String),
    #[error("{0} holds no Sealpost database")]
    NoDatabase(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// `sealpost-node backup`: copies the database of the node configured by `config` (running
/// or not) into `to`, a new or empty directory. The one backend today is RocksDB; another
/// backend answers here with its own copy or an error that says it has none.
pub fn backup_node(config: &Config, to: &Path) -> Result<Copied, BackupError> {
    refuse_postgres(config)?;
    backup(&config.resolve(&config.data_dir), to)
}

/// `sealpost-node restore`: puts the backup in `from` in place as the database of the
/// (stopped) node configured by `config`, whose data directory must be missing or empty.
pub fn restore_node(config: &Config, from: &Path) -> Result<Copied, BackupError> {
    refuse_postgres(config)?;
    restore(from, &config.resolve(&config.data_dir))
}

/// A node on PostgreSQL is backed up by the database's own tools (`pg_dump`, base backups).
fn refuse_postgres(config: &Config) -> Result<(), BackupError> {
    if config.storage.backend == crate::config::StorageBackend::Postgres {
        return Err(BackupError::Postgres);
    }
    Ok(())
}

/// Whether `dir` is missing or an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io("reading", dir)(e)),
    }
}

/// Copies the database in `data` (the node may be running) into a new database in `to`.
pub fn backup(data: &Path, to: &Path) -> Result<Copied, BackupError> {
    if !is_empty_dir(to)? {
        return Err(BackupError::TargetNotEmpty(to.to_path_buf()));
    }
    if !data.join("CURRENT").exists() {
        return Err(BackupError::NoDatabase(data.to_path_buf()));
    }
    let mut attempt = 1;
    loop {
        match copy_read_only(data, to) {
            Ok(copied) => {
                return Ok(Copied {
                    attempts: attempt,
                    ..copied
                });
            }
            // The running node deleted a file this copy still needed (a flush retired a
            // WAL, a compaction a table file): start over from its new state.
            Err(BackupError::Source { .. } | BackupError::Raced(_)) if attempt < ATTEMPTS => {
                attempt += 1;
                remove_contents(to)?;
                std::thread::sleep(PAUSE);
            }
            Err(e) => {
                let _ = remove_contents(to);
                return Err(e);
            }
        }
    }
}

/// Empties `dir` (a partial copy), keeping the directory.
fn remove_contents(dir: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("reading", dir)(e)),
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(io("reading", dir))?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .map_err(io("removing", &path))?;
            }
            Ok(())
        }
    }
}

/// Opens the database read-only beside the node (RocksDB takes no lock for that and
/// writes nothing in `data`): its table files as the manifest names them, plus every write
/// in the write-ahead log, each whole (a record the node is still writing is not read);
/// then copies it.
fn copy_read_only(data: &Path, to: &Path) -> Result<Copied, BackupError> {
    let source = |source| BackupError::Source {
        dir: data.to_path_buf(),
        source,
    };
    let mut opts = Options::default();
    // Every table file is opened up front and held: compactions of the running node may
    // delete them meanwhile, and an open file stays readable.
    opts.set_max_open_files(-1);
    // The node retires a write-ahead log once its writes are in table files, oldest first.
    // Were one retired while the open below read the manifest and then the logs, the copy
    // would hold neither the log's writes nor the table file that took them: so every log
    // present before the open must still be there after it (all were replayed by then).
    let logs_before = wal_files(data)?;
    let src = DB::open_cf_for_read_only(&opts, data, COLUMN_FAMILIES, false).map_err(source)?;
    if let Some(gone) = logs_before.iter().find(|log| !data.join(log).exists()) {
        return Err(BackupError::Raced(gone.clone()));
    }
    copy_into(&src, to)
}

/// The names of the write-ahead log files in `data`.
fn wal_files(data: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data).map_err(io("reading", data))? {
        let name = entry.map_err(io("reading", data))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".log") {
            out.push(name.into_owned());
        }
    }
    Ok(out)
}

/// Copies every column family of `src`, as it stands, into a new database in `to`.
fn copy_into(src: &DB, to: &Path) -> Result<Copied, BackupError> {
    let target = |source| BackupError::Target {
        dir: to.to_path_buf(),
        source,
    };
    let source = |source: rocksdb::Error| BackupError::Source {
        dir: PathBuf::from(src.path()),
        source,
    };
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let dst = DB::open_cf(&opts, to, COLUMN_FAMILIES).map_err(target)?;
    // The copy is flushed to table files at the end; a WAL would only be written twice.
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    let mut copied = Copied::default();
    let mut schema = false;
    for name in COLUMN_FAMILIES {
        let (from, into) = (cf(src, name), cf(&dst, name));
        let mut batch = WriteBatch::default();
        for kv in src.iterator_cf(from, IteratorMode::Start) {
            let (k, v) = kv.map_err(source)?;
            schema |= name == super::rocks::CF_META && &*k == b"schema";
            copied.entries += 1;
            copied.bytes += (k.len() + v.len()) as u64;
            batch.put_cf(into, &k, &v);
            if batch.size_in_bytes() >= BATCH_BYTES {
                dst.write_opt(std::mem::take(&mut batch), &wo)
                    .map_err(target)?;
            }
        }
        dst.write_opt(batch, &wo).map_err(target)?;
        dst.flush_cf(into).map_err(target)?;
    }
    if !schema {
        return Err(BackupError::NoDatabase(PathBuf::from(src.path())));
    }
    drop(dst);
    sync_dir(to)?;
    Ok(copied)
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Restores the backup in `from` into `data`, which must be missing or empty (the node
/// stopped): the backup is checked to open as a Sealpost database, then copied file by
/// file, each synced.
pub fn restore(from: &Path, data: &Path) -> Result<Copied, BackupError> {
    if !is_empty_dir(data)? {
        return Err(BackupError::TargetNotEmpty(data.to_path_buf()));
    }
    let source = |source| BackupError::Source {
        dir: from.to_path_buf(),
        source,
    };
    {
        let db = DB::open_cf_for_read_only(&Options::default(), from, COLUMN_FAMILIES, false)
            .map_err(source)?;
        if db
            .get_cf(cf(&db, super::rocks::CF_META), b"schema")
            .map_err(source)?
            .is_none()
        {
            return Err(BackupError::NoDatabase(from.to_path_buf()));
        }
    }
    std::fs::create_dir_all(data).map_err(io("creating", data))?;
    let mut copied = Copied::default();
    for entry in std::fs::read_dir(from).map_err(io("reading", from))? {
        let entry = entry.map_err(io("reading", from))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let dest = data.join(entry.file_name());
        copied.bytes += std::fs::copy(&path, &dest).map_err(io("copying", &path))?;
        copied.entries += 1;
        std::fs::File::open(&dest)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing", &dest))?;
    }
    sync_dir(data)?;
    Ok(copied)
}
