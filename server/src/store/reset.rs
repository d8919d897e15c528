//! The operator's reset of an address (`sealpost-node reset-address`): offline, on a
//! stopped node (RocksDB allows one process), it forgets which account owns an address and
//! drops the address's record, so that the next registration naming it wins. The old
//! account keeps its mailbox; it can no longer publish a record for the address.

use std::path::Path;

use sealpost_proto::Address;

use super::{RocksStore, Store, StoreError};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{0}")]
    BadAddress(#[from] sealpost_proto::Error),
    #[error(
        "cannot open the database in {dir} ({source}); stop the node first: only one process may open it"
    )]
    Open { dir: String, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Frees `address` in the database of the node configured by `config`. Returns whether it
/// was claimed or had a record.
pub fn reset_address(config: &Config, address: &str) -> Result<bool, ResetError> {
    let address = Address::parse(address.trim())?;
    if config.storage.backend == crate::config::StorageBackend::Postgres {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        return runtime.block_on(async {
            let store = super::PgStore::open(&config.storage.postgres).await?;
            let freed = store.reset_address(address.as_str().to_string()).await;
            store.close().await?;
            Ok(freed?)
        });
    }
    let dir = config.resolve(&config.data_dir);
    if !dir.join("CURRENT").exists() {
        return Err(ResetError::Open {
            dir: dir.display().to_string(),
            source: StoreError::Read("no database there".into()),
        });
    }
    let store = open(&dir, config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    runtime.block_on(async {
        let freed = store.reset_address(address.as_str().to_string()).await;
        store.close().await?;
        Ok(freed?)
    })
}

fn open(dir: &Path, config: &Config) -> Result<std::sync::Arc<RocksStore>, ResetError> {
    RocksStore::open(dir, &config.storage).map_err(|source| ResetError::Open {
        dir: dir.display().to_string(),
        source,
    })
}
