//! The bridge's two narrow seams to the rest of Sealpost: a [`MailSource`] that yields
//! decrypted letters (RFC 5322 bytes, a stable id, the signature verdict), and a
//! [`Sender`] that sends what a mail app submits. `client_adapter` implements both on
//! `sealpost-client`; tests implement them in memory.

use std::future::Future;

/// What the client concluded about who sent a letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by the key pinned for the From address.
    Verified { signer: String },
    /// Opened, but not provably from its From address.
    Unverified { reason: String },
    /// Arrived through the SMTP gateway: not end-to-end encrypted.
    Legacy { note: String },
}

/// Which mailbox a letter belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder {
    Inbox,
    /// A copy of mail this profile sent (sealed to oneself by another device).
    Sent,
}

/// One decrypted letter.
#[derive(Clone, Debug)]
pub struct Letter {
    /// Stable and unique per letter (the envelope id): the dedupe key of the import.
    pub id: String,
    /// The letter as RFC 5322 bytes, attachments included.
    pub rfc5322: Vec<u8>,
    pub verdict: Verdict,
    /// When it reached the home node (INTERNALDATE), seconds since the epoch.
    pub received: i64,
    pub folder: Folder,
}

/// Where new letters come from.
pub trait MailSource: Send + 'static {
    /// Waits until there may be new letters (a poll or long poll, bounded by the source),
    /// then returns the letters whose id `known` does not know. (The importer filters by
    /// id again, so a letter returned twice is harmless.)
    fn next_batch(
        &mut self,
        known: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> impl Future<Output = Result<Vec<Letter>, SourceError>> + Send;
}

/// A message a mail app submitted: SMTP envelope and the bytes of the message.
#[derive(Clone, Debug)]
pub struct Submission {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message: Vec<u8>,
}

/// How sending went, per the client library's rules.
#[derive(Clone, Debug, Default)]
pub struct SendOutcome {
    /// Recipients reached as Sealpost mail.
    pub sealed: Vec<String>,
    /// Recipients sent through the gateway as legacy e-mail.
    pub legacy: Vec<String>,
    /// Source ids of the copies of this message that the source will yield for Sent: the
    /// bridge keeps the message as submitted there instead, and marks these as imported.
    pub copy_ids: Vec<String>,
}

pub trait Sender: Send + Sync + 'static {
    fn send(
        &self,
        submission: Submission,
    ) -> impl Future<Output = Result<SendOutcome, SendError>> + Send;
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("home nodes unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

/// Why a submission was refused. Each maps to an SMTP reply class.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SendError {
    /// A recipient cannot be reached at all (5xx), e.g. legacy address without a gateway.
    #[error("{0}")]
    Permanent(String),
    /// Try again later (4xx): nodes down, network.
    #[error("{0}")]
    Temporary(String),
}
