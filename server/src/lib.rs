//! `sealpost-node`: a Sealpost mailbox node. It serves the HTTP API of `spec/api.md`
//! (hyper 1, optional rustls), stores envelopes, accounts, records and its outbound queue in
//! RocksDB with group-committed durable writes, and relays hops to other nodes.
//!
//! Tour: [`basics`] (shutdown signal, clock, client address, path prefix), [`config`]
//! (node.toml), [`init`] (`sealpost-node init`), [`keys`] (node keys), [`server`] (accept
//! loop, shutdown), [`api`] (endpoints; `ApiError`, the one place domain errors become
//! HTTP), [`accounts`] (registration), [`auth`] (sign-in), [`delivery`] (local delivery),
//! [`store`] (storage trait and RocksDB), [`relay`] (outbound queue worker), [`acme`]
//! (automatic certificates), [`admin`] (the admin socket), `bounce`
//! (bounces, postmaster letters), [`peers`] (descriptor cache, key pins), [`sessions`]
//! (challenges and tokens), [`devices`] (devices of an account, link drops),
//! [`ratelimit`], [`metrics`].
//! The modules sit in layers (README.md, "Layers of `server/src`"; `tests/layering.rs`).

pub mod accounts;
pub mod acme;
pub mod admin;
pub mod api;
pub mod auth;
pub mod basics;
pub(crate) mod bounce;
pub mod budget;
pub mod config;
pub mod delivery;
pub mod devices;
pub mod forward;
pub mod gateway;
pub mod init;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod oblivious;
pub mod peers;
pub mod ratelimit;
pub mod relay;
pub mod server;
pub mod sessions;
pub mod ssrf;
pub mod store;

pub use api::ApiError;
pub use config::Config;
pub use init::{InitOptions, init_node};
pub use server::{Ready, run, run_with};
