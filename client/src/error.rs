//! The one error type of the client library. Every variant says what went wrong and where,
//! and belongs to one [`ErrorKind`], which the CLI turns into its exit code.

use std::path::PathBuf;

use sealpost_proto as proto;
use thiserror::Error;

/// What a failed connection tells about the other end (whether anything is there at all
/// matters when deciding that a domain has no Sealpost node, `crate::route`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetFailure {
    /// The resolver answered that the host name does not exist.
    NoSuchHost,
    /// The host answered that nothing listens on the port.
    Refused,
    TimedOut,
    /// Anything else: a resolver that could not answer, TLS, a dropped connection.
    Other,
}

/// What sort of problem an error is; the CLI maps each to an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments or input files (exit 1).
    Input,
    /// A node could not be reached or answered with an error (exit 2).
    Network,
    /// A signature, key or encryption problem (exit 3).
    Crypto,
    /// The profile directory is missing, corrupt, locked or unwritable (exit 4).
    Profile,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 1,
            ErrorKind::Network => 2,
            ErrorKind::Crypto => 3,
            ErrorKind::Profile => 4,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    // --- input ---
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadInput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    WriteOutput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {what} matches {id:?}")]
    NotFound { what: &'static str, id: String },
    #[error("{id:?} matches more than one {what}; give more characters")]
    Ambiguous { what: &'static str, id: String },
    #[error(
        "{address} is already registered on {node} by another key; if it is yours, run `sealpost rotate-key` in the profile that holds its current key (or ask the node's operator to free it); otherwise choose another address"
    )]
    AddressTaken { address: String, node: String },
    #[error("unknown address {address}: {node} has no mailbox record for it")]
    UnknownAddress { address: String, node: String },
    #[error("editor {editor:?} failed: {reason}")]
    Editor { editor: String, reason: String },
    #[error(
        "no gateway for legacy e-mail to send to {recipients}{detail}; name one with `sealpost gateway set gateway@DOMAIN` (a gateway on one of your home nodes), or leave them out"
    )]
    NoGateway {
        /// Each legacy recipient with the reason it is one.
        recipients: String,
        /// Why the default gateway did not serve, starting with "; ", or empty.
        detail: String,
    },
    #[error(
        "gateway {gateway} lives on {nodes}, which is not one of your home nodes; a gateway only takes letters from users of its own node"
    )]
    GatewayElsewhere { gateway: String, nodes: String },
    #[error("{address}: the domain {domain} does not exist{hint}; nothing was sent")]
    NoSuchDomain {
        address: String,
        domain: String,
        /// "; did you mean beta.test?" or empty.
        hint: String,
    },
    #[error(
        "{address}: {domain} has no Sealpost node and takes no e-mail ({reason}); nothing was sent"
    )]
    NoMailDomain {
        address: String,
        domain: String,
        reason: String,
    },
    #[error(
        "{addresses}: no Sealpost node, so the letter would leave Sealpost at your gateway as ordinary e-mail, NOT end-to-end encrypted; nothing was sent. To agree, send again with {flags} (asked only for the first letter to an address)"
    )]
    LegacyUnconfirmed {
        /// The addresses, comma-separated.
        addresses: String,
        /// `--legacy ADDR` for each.
        flags: String,
    },
    #[error("cannot use CA certificates {}: {reason}", path.display())]
    BadCaCert { path: PathBuf, reason: String },

    // --- profile ---
    #[error("no profile in {}; create one with `sealpost init ADDRESS --node URL`", dir.display())]
    NoProfile { dir: PathBuf },
    #[error("{} already holds a profile; choose another with --profile", dir.display())]
    ProfileExists { dir: PathBuf },
    #[error("profile file {} is corrupt: {reason}", path.display())]
    ProfileCorrupt { path: PathBuf, reason: String },
    #[error("profile I/O on {}: {source}", path.display())]
    ProfileIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile {} is in use by another sealpost process", dir.display())]
    ProfileLocked { dir: PathBuf },
    #[error(
        "cannot determine the profile directory: set --profile, SEALPOST_PROFILE, XDG_DATA_HOME or HOME"
    )]
    NoProfileDir,

    // --- network ---
    #[error("cannot reach node {url}: {reason}")]
    Unreachable {
        url: String,
        reason: String,
        failure: NetFailure,
    },
    #[error("node {url} answered {status} {code}: {message}")]
    Node {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("node {url} sent an unusable answer: {reason}")]
    NodeProtocol { url: String, reason: String },
    #[error(
        "cannot tell whether {domain} has a Sealpost node ({reason}); if {address} is a legacy e-mail address, send with --legacy {address} (or `sealpost legacy add {domain}`)"
    )]
    UndecidedDomain {
        address: String,
        domain: String,
        reason: String,
    },
    #[error(
        "cannot find out whether {domain} takes e-mail: DNS {reason}; nothing was sent, try again later"
    )]
    DnsFailure { domain: String, reason: String },
    #[error("cannot set up DNS: {reason}")]
    DnsSetup { reason: String },
    #[error("no node answered: {details}")]
    NoNodeAnswered { details: String },
    #[error(
        "none of your home nodes answered ({details}); other nodes are only asked through them, so nothing was looked up"
    )]
    HomesDown { details: String },
    #[error(
        "letter saved, will be sent when its recipients can be looked up ({reason}); it is kept in the outbox and the next send or fetch, or `sealpost outbox flush`, sends it (`sealpost outbox drop {id}` gives it up)"
    )]
    LetterWaiting { id: String, reason: String },
    #[error(
        "{pending} of {total} deliveries could not be submitted (last error: {last}); they stay in the outbox and are retried by the next send or fetch, or by `sealpost outbox flush`"
    )]
    Unsubmitted {
        pending: usize,
        total: usize,
        last: String,
    },

    // --- crypto and trust ---
    #[error(
        "key of {address} changed: pinned {old}, its record now has {new}; check the new fingerprint with them out of band, then accept it with `sealpost contact accept {address}`"
    )]
    KeyChanged {
        address: String,
        old: String,
        new: String,
    },
    #[error("{what} of {address} is not valid: {reason}")]
    BadRecord {
        what: &'static str,
        address: String,
        reason: String,
    },
    #[error(
        "node {url} is not the node the record names: its key is {found}, the record says {expected}"
    )]
    NodeKeyMismatch {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{} is not a usable Sealpost backup: {reason}", path.display())]
    BadBackup { path: PathBuf, reason: String },
    #[error("cannot open the backup {}: wrong passphrase", path.display())]
    BackupPassphrase { path: PathBuf },
    #[error("fingerprint of {address} is {actual}, not {expected}")]
    FingerprintMismatch {
        address: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Proto(#[from] proto::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            InvalidInput { .. }
            | ReadInput { .. }
            | WriteOutput { .. }
            | NotFound { .. }
            | Ambiguous { .. }
            | UnknownAddress { .. }
            | AddressTaken { .. }
            | Editor { .. }
            | NoGateway { .. }
            | GatewayElsewhere { .. }
            | NoSuchDomain { .. }
            | NoMailDomain { .. }
            | LegacyUnconfirmed { .. }
            | BadBackup { .. }
            | BadCaCert { .. } => ErrorKind::Input,
            NoProfile { .. }
            | ProfileExists { .. }
            | ProfileCorrupt { .. }
            | ProfileIo { .. }
            | ProfileLocked { .. }
            | NoProfileDir => ErrorKind::Profile,
            Unreachable { .. }
            | Node { .. }
            | NodeProtocol { .. }
            | UndecidedDomain { .. }
            | DnsFailure { .. }
            | DnsSetup { .. }
            | NoNodeAnswered { .. }
            | HomesDown { .. }
            | LetterWaiting { .. }
            | Unsubmitted { .. } => ErrorKind::Network,
            KeyChanged { .. }
            | BadRecord { .. }
            | NodeKeyMismatch { .. }
            | BackupPassphrase { .. }
            | FingerprintMismatch { .. } => ErrorKind::Crypto,
            Proto(e) => proto_kind(e),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    pub fn input(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            reason: reason.into(),
        }
    }

    /// Whether a lookup that failed this way may well succeed later (a node or the way to
    /// it is down, or answered that it is busy): a letter waiting for that lookup stays
    /// waiting ([`crate::letters`]), where any other failure gives it up.
    pub fn is_transient(&self) -> bool {
        use Error::*;
        match self {
            Unreachable { .. } | NodeProtocol { .. } | NoNodeAnswered { .. } | HomesDown { .. } => {
                true
            }
            Node { status, .. } => *status >= 500 || matches!(*status, 408 | 429),
            _ => false,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::ProfileCorrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn profile_io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::ProfileIo {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn protocol(url: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::NodeProtocol {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn proto_kind(e: &proto::Error) -> ErrorKind {
    use proto::Error::*;
    match e {
        InvalidAddress { .. }
        | InvalidUrl { .. }
        | InvalidId { .. }
        | LetterTooLarge { .. }
        | TooLong { .. }
        | InvalidField { .. }
        | LetterParse(_) => ErrorKind::Input,
        // Codec errors on their own come from what a node sent; profile files wrap theirs.
        Truncated { .. }
        | TrailingBytes { .. }
        | UnknownVersion { .. }
        | WrongTag { .. }
        | InvalidUtf8 { .. } => ErrorKind::Network,
        _ => ErrorKind::Crypto,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One line of text from something a node or the OS said: no control characters, bounded.
pub(crate) fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_documented_exit_codes() {
        assert_eq!(Error::input("address", "x").exit_code(), 1);
        assert_eq!(
            Error::Unreachable {
                url: "u".into(),
                reason: "r".into(),
                failure: NetFailure::Other,
            }
            .exit_code(),
            2
        );
        assert_eq!(
            Error::KeyChanged {
                address: "a".into(),
                old: "o".into(),
                new: "n".into()
            }
            .exit_code(),
            3
        );
        assert_eq!(Error::NoProfileDir.exit_code(), 4);
        assert_eq!(Error::from(proto::Error::BadSignature).exit_code(), 3);
        assert_eq!(
            Error::from(proto::Error::InvalidAddress {
                input: "x".into(),
                reason: "missing '@'"
            })
            .exit_code(),
            1
        );
    }

    #[test]
    fn key_change_message_names_both_keys_and_the_way_out() {
        let e = Error::KeyChanged {
            address: "bob@b.test".into(),
            old: "AAAA".into(),
            new: "BBBB".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("AAAA")
                && s.contains("BBBB")
                && s.contains("sealpost contact accept bob@b.test"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn one_line_strips_control_characters() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        assert!(one_line(&"x".repeat(1000)).chars().count() <= 301);
    }
}
