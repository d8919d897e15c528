//! The one error type of the proto crate. Variants say what went wrong and where, so that
//! the node can map them to stable API error codes and the client to clear messages.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    // --- codec ---
    #[error("{what}: input ends early (needed {needed} more bytes)")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what}: {count} unexpected bytes after the end")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what}: unknown version {version}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("{what}: wrong type tag {tag:#04x}")]
    WrongTag { what: &'static str, tag: u8 },
    #[error("{what}: length {len} exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{what}: {reason}")]
    InvalidField { what: &'static str, reason: String },

    // --- names ---
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress { input: String, reason: &'static str },
    #[error("invalid node URL {input:?}: {reason}")]
    InvalidUrl { input: String, reason: &'static str },
    #[error("invalid {what}: expected {expected} hex digits")]
    InvalidId { what: &'static str, expected: usize },

    // --- keys ---
    #[error("key material: {0}")]
    Key(String),
    #[error("the secret key is locked by a passphrase; supply it")]
    KeyLocked,
    #[error("wrong passphrase for the secret key")]
    WrongPassphrase,
    #[error("certificate has no usable {0} key")]
    NoUsableKey(&'static str),

    // --- letters ---
    #[error("letter is not a valid RFC 5322 message: {0}")]
    LetterParse(String),
    #[error("letter is {len} bytes, more than the limit of {max}")]
    LetterTooLarge { len: usize, max: usize },

    // --- sealing and opening ---
    #[error("message is not addressed to this key (no matching secret key)")]
    NotForRecipient,
    #[error("message was tampered with (integrity check failed)")]
    Tampered,
    #[error("message is cut short")]
    TruncatedMessage,
    #[error("message is not a valid OpenPGP message: {0}")]
    Malformed(String),
    #[error("could not pad the sealed letter to its size bucket")]
    Padding,
    #[error("letter carries no signature")]
    MissingSignature,
    #[error("letter is signed by an unknown key {0}")]
    UnknownSigner(String),
    #[error("letter signature does not verify")]
    BadSignature,
    #[error("letter claims to be from {claimed} but is signed by a key for {signer}")]
    SenderMismatch { claimed: String, signer: String },

    // --- signed objects ---
    #[error("{0}: signature does not verify")]
    BadObjectSignature(&'static str),
    #[error("{what} expired at {expires} (now {now})")]
    Expired {
        what: &'static str,
        expires: u64,
        now: u64,
    },
}
