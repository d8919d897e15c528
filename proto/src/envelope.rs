//! The envelope a recipient's node stores, and the hop wrapper a sender's node forwards.

use sequoia_openpgp::Cert;

use crate::codec::{Codec, Reader, Writer, tag};
use crate::error::Error;
use crate::identity::Keyring;
use crate::limits::{
    MAX_ENVELOPE_BYTES, MAX_HOP_PAYLOAD_BYTES, MAX_SEALED_BYTES, MAX_TOKEN_BYTES, MAX_URL_BYTES,
};
use crate::seal::{decrypt_with, encrypt_to};
use crate::types::{EnvelopeId, MailboxId, NodeUrl};

/// What the recipient's node stores: for which mailbox, a dedupe id, the sealed letter.
/// No sender, no sender timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: EnvelopeId,
    pub mailbox: MailboxId,
    /// The sealed letter: an OpenPGP message exactly a bucket size long.
    pub sealed: Vec<u8>,
    /// Optional postage / delivery token (reserved; empty in v1).
    pub token: Vec<u8>,
}

impl Codec for Envelope {
    const WHAT: &'static str = "envelope";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::ENVELOPE);
        w.fixed(self.id.as_bytes());
        w.fixed(self.mailbox.as_bytes());
        w.bytes32(&self.sealed);
        w.bytes16(&self.token);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::ENVELOPE)?;
        let id = EnvelopeId(r.array()?);
        let mailbox = MailboxId(r.array()?);
        let sealed = r.bytes32("sealed letter", MAX_SEALED_BYTES)?.to_vec();
        if sealed.is_empty() {
            return Err(Error::InvalidField {
                what: "sealed letter",
                reason: "empty".into(),
            });
        }
        let token = r.bytes16("token", MAX_TOKEN_BYTES)?.to_vec();
        Ok(Envelope {
            id,
            mailbox,
            sealed,
            token,
        })
    }
}

impl Envelope {
    /// Reads only the id and mailbox of an encoded envelope, without copying the letter.
    pub fn peek_ids(bytes: &[u8]) -> Result<(EnvelopeId, MailboxId), Error> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLong {
                what: "envelope",
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let mut r = Reader::new(bytes, Self::WHAT);
        r.header(tag::ENVELOPE)?;
        Ok((EnvelopeId(r.array()?), MailboxId(r.array()?)))
    }
}

/// What a client hands its own node: the destination node and the envelope encrypted to
/// that node's key. The sender's node cannot see the mailbox id inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopWrapper {
    pub destination: NodeUrl,
    /// OpenPGP message, encrypted to the destination node, holding an encoded [`Envelope`].
    pub payload: Vec<u8>,
}

impl Codec for HopWrapper {
    const WHAT: &'static str = "hop wrapper";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::HOP);
        w.bytes16(self.destination.as_str().as_bytes());
        w.bytes32(&self.payload);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::HOP)?;
        let destination = NodeUrl::parse(r.str16("destination", MAX_URL_BYTES)?)?;
        let payload = r.bytes32("hop payload", MAX_HOP_PAYLOAD_BYTES)?.to_vec();
        if payload.is_empty() {
            return Err(Error::InvalidField {
                what: "hop payload",
                reason: "empty".into(),
            });
        }
        Ok(HopWrapper {
            destination,
            payload,
        })
    }
}

impl HopWrapper {
    /// Wraps `envelope` for the node at `destination` whose encryption certificate is `node_cert`.
    pub fn wrap(
        envelope: &Envelope,
        destination: NodeUrl,
        node_cert: &Cert,
    ) -> Result<Self, Error> {
        Ok(HopWrapper {
            destination,
            payload: encrypt_to(&envelope.encode(), node_cert)?,
        })
    }

    /// The destination node's side: decrypts a hop payload into its envelope.
    pub fn unwrap_payload(payload: &[u8], node_keys: &Keyring) -> Result<Envelope, Error> {
        let bytes = decrypt_with(payload, node_keys, MAX_ENVELOPE_BYTES)?;
        Envelope::decode(&bytes)
    }
}
