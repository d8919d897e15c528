//! The shutdown signal: a `watch` flag the start-up code sets once; every loop selects on
//! `stopped`.

use tokio::sync::watch;

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller.
    let _ = stop.wait_for(|s| *s).await;
}
