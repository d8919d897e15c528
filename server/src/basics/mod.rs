//! The bottom layer: small things every other module may use and that know nothing of the
//! node, the store, HTTP routing or the workers: the shutdown signal ([`shutdown`]), the
//! clock ([`clock`]), the client address ([`client_addr`]) and the API paths ([`paths`]).
//! See the layer table in README.md (Architecture) and `server/tests/layering.rs`.

pub mod client_addr;
pub mod clock;
pub mod paths;
pub mod shutdown;
