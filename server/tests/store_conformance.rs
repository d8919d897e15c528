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
