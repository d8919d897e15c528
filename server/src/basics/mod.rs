//! The bottom layer: small things every other module may use and that know nothing of the
//! node, the store, HTTP routing or the workers: the shutdown signal ([`shutdown`]), the
//! clock ([`clock`]), the client address ([`client_addr`]), the access record test hook ([`access`]) and a node URL's path prefix
//! ([`paths`]; the API paths themselves are constants in `sealpost_proto::api`),
//! owner-only files ([`private_file`]) and a bounded cache with a time-to-live ([`memo`]).
//! See the layer table in README.md (Architecture) and `server/tests/layering.rs`.

pub mod access;
pub mod client_addr;
pub mod clock;
pub mod memo;
pub mod paths;
pub mod private_file;
pub mod shutdown;
