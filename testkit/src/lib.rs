//! The harness shared by the end-to-end suite (`tests/`), the server's integration tests
//! and the benchmarks (issue 12: one process harness, one API client).
//!
//! - [`hygiene`]: children die with the test process (`PR_SET_PDEATHSIG` from one
//!   long-lived spawner thread, an `atexit` SIGKILL); temporary directories.
//! - [`process`]: `sealpost-node` as a child process: init, start with a deadline on its
//!   ready line, kill, SIGTERM, restart on the same port(s) and data, logs, peak RSS.
//! - [`postgres`]: a private PostgreSQL 15 server (initdb in a temp dir as `nobody`, a
//!   free loopback port), killed and reaped at drop.
//! - [`api`]: one client of the node's HTTP API on the `proto` types.
//! - [`dovecot`]: a private Dovecot on loopback, the bridge's reference IMAP server.
//! - [`dns`]: a private dnsmasq serving test zones (A, MX, TXT) on a free loopback port.
//! - with the `server` feature, [`inproc`]: the node inside the test process, and
//!   [`conformance`]: the `Store` conformance suite every storage backend must pass.

pub mod api;
pub mod dkim;
pub mod dns;
pub mod dovecot;
pub mod hygiene;
pub mod pki;
pub mod postgres;
pub mod process;

#[cfg(feature = "server")]
pub mod conformance;
#[cfg(feature = "server")]
pub mod inproc;

pub use hygiene::TempDir;
pub use process::{HarnessError, NodeProcess, NodeSpec, Stderr};
