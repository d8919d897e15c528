#![no_main]
//! Fuzz target `config`: `node.toml` text and `--set KEY=VALUE` overrides through the node's
//! real `Config::load_with`. The check is `server/tests/fuzz_checks/config.rs` (shared with
//! the server's regression test).
//!
//! The config module is compiled from its source file rather than through the
//! `sealpost-server` crate: that crate pulls in RocksDB (a C++ build of many minutes under
//! cargo fuzz), hyper, rustls and sequoia, while `server/src/config.rs` needs only std,
//! serde, toml, thiserror and sealpost-proto.
use libfuzzer_sys::fuzz_target;

#[path = "../../server/src"]
#[allow(dead_code, unused_imports)]
mod server_src {
    pub mod config;
}

/// What the shared check calls `config`.
mod config_under_test {
    pub use crate::server_src::config::*;
}

#[path = "../../server/tests/fuzz_checks/config.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::config(data));
