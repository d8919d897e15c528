//! Bounces: when a hop is given up, its sender gets a letter from the node's postmaster,
//! sealed to the sender's certificate like any other letter, in their own mailbox here.
//! The node never saw the failed message's content, so the bounce names only what it knew:
//! the destination node, times, attempts, the last error and the queue id `submit` returned.

use std::sync::Arc;

use bytes::Bytes;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::cert_addresses;
use sealpost_proto::letter::Letter;
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, MailboxId};

use crate::basics::clock::now_secs;
use crate::keys::host_of;
use crate::node::Node;
use crate::store::{NewEnvelope, OutboundItem};

#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    #[error("the sender's account is gone")]
    NoAccount,
    #[error("{0}")]
    Seal(String),
}

/// Subject line of every bounce; clients may recognise bounces by it.
pub const BOUNCE_SUBJECT_PREFIX: &str = "Undeliverable: ";

pub async fn bounce_envelope(
    node: &Arc<Node>,
    item: &OutboundItem,
) -> Result<NewEnvelope, BounceError> {
    let body = format!(
        "Your message could not be delivered.\r\n\
         \r\n\
         Destination node: {dest}\r\n\
         Submitted:        {submitted} (Unix time)\r\n\
         Queue id:         {qid}\r\n\
         Attempts:         {attempts}\r\n\
         Last error:       {error}\r\n\
         \r\n\
         The node {node} gave up on it. This node never saw the message's content, so it\r\n\
         is not attached; the queue id is the one the node answered when you sent it.\r\n",
        dest = item.destination,
        submitted = item.submitted_ms / 1000,
        qid = item.queue_id().to_hex(),
        attempts = item.attempts,
        error = if item.last_error.is_empty() {
            "none recorded"
        } else {
            &item.last_error
        },
        node = node.url,
    );
    let subject = format!(
        "{BOUNCE_SUBJECT_PREFIX}message to {}",
        host_of(&item.destination)
    );
    postmaster_letter(node, item.sender, subject, body).await
}

/// A letter from the node's postmaster to the owner of `mailbox`, sealed to their
/// certificate, ready to store in that mailbox (relay bounces, gateway bounces).
pub async fn postmaster_letter(
    node: &Arc<Node>,
    mailbox: MailboxId,
    subject: String,
    body: String,
) -> Result<NewEnvelope, BounceError> {
    let account = node
        .account(mailbox)
        .await
        .map_err(|e| BounceError::Seal(e.to_string()))?
        .ok_or(BounceError::NoAccount)?;
    let to = cert_addresses(&account.cert)
        .first()
        .and_then(|a| Address::parse(a).ok())
        .unwrap_or_else(|| node.postmaster.clone());
    let now = now_secs();
    let letter = Letter::new(node.postmaster.clone(), vec![to], subject, body, now as i64);
    let keyring = node.keys.keyring.clone();
    let cert = account.cert.clone();
    let sealed = tokio::task::spawn_blocking(move || seal(&letter, &keyring, &cert))
        .await
        .map_err(|e| BounceError::Seal(e.to_string()))?
        .map_err(|e| BounceError::Seal(e.to_string()))?;
    let id = EnvelopeId::random();
    let envelope = Envelope {
        id,
        mailbox,
        sealed,
        token: Vec::new(),
    };
    Ok(NewEnvelope {
        mailbox,
        id,
        bytes: Bytes::from(envelope.encode()),
        received: now,
    })
}
