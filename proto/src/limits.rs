//! Size limits of the protocol, in one place. `spec/protocol.md` §Limits lists the same numbers.

/// Largest RFC 5322 letter (headers, body, encoded attachments) that may be sealed.
pub const MAX_LETTER_BYTES: usize = 24 * 1024 * 1024;
/// Largest sealed letter (OpenPGP message) an envelope may carry.
pub const MAX_SEALED_BYTES: usize = 32 * 1024 * 1024;
/// Largest encoded envelope.
pub const MAX_ENVELOPE_BYTES: usize = MAX_SEALED_BYTES + 4096;
/// Largest hop payload (the envelope encrypted to the destination node).
pub const MAX_HOP_PAYLOAD_BYTES: usize = MAX_ENVELOPE_BYTES + 4096;
/// Most sequence numbers in one batched fetch or acknowledgement of a mailbox.
pub const MAX_BATCH_SEQS: usize = 1000;
/// A node stops adding envelopes to a batched fetch's answer before it would pass this
/// many bytes; a first envelope is answered whatever its size (up to
/// [`MAX_ENVELOPE_BYTES`]), so that every envelope can be fetched.
pub const MAX_BATCH_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Largest postage / delivery token.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Largest node URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest address, in bytes (RFC 5321 §4.5.3.1.3 path limit less the brackets).
pub const MAX_ADDRESS_BYTES: usize = 254;
/// Largest local part of an address.
pub const MAX_LOCAL_PART_BYTES: usize = 64;
/// Largest OpenPGP certificate carried in a record or descriptor.
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// Largest detached OpenPGP signature.
pub const MAX_SIGNATURE_BYTES: usize = 4096;
/// Most home nodes one mailbox record may list.
pub const MAX_HOMES: usize = 8;
/// Largest software string in a node descriptor.
pub const MAX_SOFTWARE_BYTES: usize = 64;
/// Largest signed body of a record or descriptor.
pub const MAX_SIGNED_BODY_BYTES: usize = MAX_CERT_BYTES + MAX_HOMES * (MAX_URL_BYTES + 64) + 1024;
/// Most recipients (to + cc) of one letter.
pub const MAX_RECIPIENTS: usize = 100;
/// Most attachments of one letter.
pub const MAX_ATTACHMENTS: usize = 100;
/// Largest subject line, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 998;
