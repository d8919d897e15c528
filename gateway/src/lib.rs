//! The bridge to legacy SMTP, linked into `sealpost-node` when `[gateway]` is enabled.
//!
//! - [`smtp_in`]: the tokio driver around the sans-IO ESMTP session of
//!   `sealpost_proto::smtp`: timeouts, connection cap, STARTTLS, and a [`Backend`] that
//!   decides recipients and stores messages durably before the `250`.
//! - [`auth`]: SPF, DKIM and DMARC of inbound mail over a configurable DNS resolver, on a
//!   runtime of its own, with bounded caches; what a DMARC policy makes of a message.
//! - [`label`]: what the recipient is told about mail that came through SMTP.
//! - [`smtp_out`]: building RFC 5322 from a letter in a 7-bit-safe wire form, sending it
//!   to the smarthost with lettre, and telling transient from permanent failures.
//! - [`dkim`]: the gateway's DKIM keys (RSA and Ed25519), their DNS records, and signing.

pub mod auth;
pub mod dkim;
pub mod label;
pub mod mta_sts;
pub mod mx;
pub mod smtp_in;
pub mod smtp_out;

pub use smtp_in::{Backend, Inbound, InboundConfig, Route, route, serve};
