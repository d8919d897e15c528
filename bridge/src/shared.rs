//! What every session of one bridge shares: the store behind a mutex, a change counter that
//! wakes IDLE, and the credentials.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::auth::Credentials;
use crate::store::Store;

pub struct Shared {
    store: Mutex<Store>,
    changes: watch::Sender<u64>,
    pub credentials: Credentials,
}

impl Shared {
    pub fn new(store: Store, credentials: Credentials) -> Arc<Shared> {
        let (changes, _) = watch::channel(store.version());
        Arc::new(Shared {
            store: Mutex::new(store),
            changes,
            credentials,
        })
    }

    /// Runs `f` on the store; tells waiting sessions if it changed anything.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut guard = self.lock();
        let before = guard.version();
        let out = f(&mut guard);
        let after = guard.version();
        drop(guard);
        if after != before {
            self.changes.send_replace(after);
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store as consistent as its last
        // completed write, which is what the files hold too.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
