//! The bridge's one error enum: what failed and where, for the store, the sessions and the
//! wiring to the client library.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bridge state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bridge state {path}: corrupt record: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no mailbox named {0:?}")]
    NoMailbox(String),
    #[error("a mailbox named {0:?} exists already")]
    MailboxExists(String),
    #[error("mailbox name {0:?} is not allowed: {1}")]
    BadMailboxName(String, &'static str),
    #[error("mailbox {0:?} cannot be deleted or renamed")]
    Protected(String),
    #[error("message of {size} bytes is larger than the limit of {limit}")]
    TooBig { size: usize, limit: usize },
    #[error("too many messages in {mailbox:?} (limit {limit})")]
    MailboxFull { mailbox: String, limit: usize },
    #[error("mail source: {0}")]
    Source(String),
    #[error("listen address {0} is not loopback: a non-loopback address needs TLS")]
    NeedsTls(std::net::SocketAddr),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
