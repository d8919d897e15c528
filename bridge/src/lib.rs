//! Sealpost's local bridge: existing mail apps read and send Sealpost mail through IMAP4rev1
//! and SMTP submission on 127.0.0.1. The core knows nothing of the client library: it is
//! fed by a [`source::MailSource`] (decrypted letters with ids and signature verdicts) and
//! sends through a [`source::Sender`]; `client_adapter` wires both to `sealpost-client`.
//!
//! Layout: [`store`] (durable mailboxes, UIDs, flags), [`message`] (what IMAP shows of a
//! message: sections, envelope, body structure), [`search`], [`imap`] (sessions on
//! imap-next), [`import`] (letters from the source into INBOX), [`auth`] (bridge password).

pub mod auth;
pub mod client_adapter;
pub mod error;
pub mod imap;
pub mod import;
pub mod info;
pub mod message;
pub mod search;
pub mod sequence;
pub mod server;
pub mod shared;
pub mod smtp;
pub mod source;
pub mod store;
pub mod stream;

pub use error::{Error, Result};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
