//! Outbound legacy mail: a letter from a Sealpost user to a legacy address becomes an
//! RFC 5322 message (lettre's builder), DKIM-signed for the gateway's domain, and is sent to
//! the smarthost. Failures are classified so the caller retries transient ones and bounces
//! permanent ones.

use std::time::Duration;

use lettre::address::Envelope as SmtpEnvelope;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey, dkim_sign,
};
use lettre::message::header::ContentType;
use lettre::message::header::HeaderName;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use sealpost_proto::letter::Letter;

#[derive(Debug, thiserror::Error)]
pub enum OutError {
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// DKIM signing material for the gateway's domain.
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    /// Ed25519 (RFC 8463) private key, base64 of the 32-byte seed.
    pub ed25519_seed_b64: String,
}

/// Builds the RFC 5322 message for `letter`, DKIM-signed when `dkim` is given.
pub fn build(letter: &Letter, dkim: Option<&Dkim>) -> Result<Message, OutError> {
    let b = |e: &dyn std::fmt::Display| OutError::Build(e.to_string());
    let mbox = |a: &sealpost_proto::Address| a.as_str().parse::<Mailbox>().map_err(|e| b(&e));
    let mut mb = Message::builder()
        .from(mbox(&letter.from)?)
        .subject(letter.subject.clone())
        .message_id(Some(format!("<{}>", letter.message_id)))
        .date(std::time::UNIX_EPOCH + Duration::from_secs(letter.date.max(0) as u64));
    for a in &letter.to {
        mb = mb.to(mbox(a)?);
    }
    for a in &letter.cc {
        mb = mb.cc(mbox(a)?);
    }
    if let Some(irt) = &letter.in_reply_to {
        mb = mb.in_reply_to(format!("<{irt}>"));
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(letter.body.clone());
    let mut msg = if letter.attachments.is_empty() {
        mb.singlepart(text).map_err(|e| b(&e))?
    } else {
        let mut mp = MultiPart::mixed().singlepart(text);
        for a in &letter.attachments {
            let ct = ContentType::parse(&a.media_type)
                .unwrap_or(ContentType::parse("application/octet-stream").map_err(|e| b(&e))?);
            mp = mp.singlepart(Attachment::new(a.name.clone()).body(a.data.clone(), ct));
        }
        mb.multipart(mp).map_err(|e| b(&e))?
    };
    if let Some(d) = dkim {
        let key = DkimSigningKey::new(&d.ed25519_seed_b64, DkimSigningAlgorithm::Ed25519)
            .map_err(|e| b(&e))?;
        let signed: Vec<HeaderName> = [
            "From",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "MIME-Version",
            "Content-Type",
        ]
        .into_iter()
        .map(HeaderName::new_from_ascii_str)
        .collect();
        let canon = DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        };
        let cfg = DkimConfig::new(d.selector.clone(), d.domain.clone(), key, signed, canon);
        dkim_sign(&mut msg, &cfg);
    }
    Ok(msg)
}

/// Sends `msg` to the smarthost at `host:port` for exactly `rcpts` (the SMTP envelope: the
/// headers keep every recipient the sender wrote). Plain SMTP: the smarthost is on a trusted
/// network, loopback in tests.
pub async fn send(
    host: &str,
    port: u16,
    from: &sealpost_proto::Address,
    rcpts: &[sealpost_proto::Address],
    msg: &Message,
    timeout: Duration,
) -> Result<(), OutError> {
    let addr = |a: &sealpost_proto::Address| {
        a.as_str()
            .parse::<lettre::Address>()
            .map_err(|e| OutError::Build(e.to_string()))
    };
    let envelope = SmtpEnvelope::new(
        Some(addr(from)?),
        rcpts.iter().map(addr).collect::<Result<_, _>>()?,
    )
    .map_err(|e| OutError::Build(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(timeout))
        .build();
    match transport.send_raw(&envelope, &msg.formatted()).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(OutError::Permanent(e.to_string())),
        Err(e) => Err(OutError::Transient(e.to_string())),
    }
}
