//! Sealpost wire format and cryptography, free of I/O.
//!
//! Everything here takes bytes (and, where it matters, the current time) and returns bytes,
//! values or typed errors. No sockets, no files, no async runtime: the node, the client and
//! the tests drive it. The normative description is `spec/protocol.md`.

pub mod api;
pub mod auth;
pub mod batch;
pub mod codec;
pub mod descriptor;
pub mod device;
pub mod envelope;
pub mod error;
pub mod httpsig;
pub mod identity;
pub mod letter;
pub mod limits;
pub mod link;
mod mime;
pub mod oblivious;
pub mod padding;
pub mod record;
pub mod seal;
pub mod smtp;
pub mod types;

pub use error::Error;
pub use types::{Address, DeviceId, EnvelopeId, MailboxId, NodeUrl};

/// Re-exported so that callers use the same OpenPGP types as this crate.
pub use sequoia_openpgp as openpgp;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stops `anyhow` and `std::backtrace` from capturing a backtrace for every error created
/// while `RUST_BACKTRACE` is set, unless `RUST_LIB_BACKTRACE` asks for them: sequoia makes
/// (and drops) an `anyhow::Error` as each encryption finishes, and capturing its backtrace
/// cost 2.5 % of the gateway's CPU (`perf`, `bench/NOTES.md`). Panics still print theirs.
/// Binaries call it first thing in `main`, while the process has one thread.
pub fn no_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first in `main`, before any thread exists that could read the
        // environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}
