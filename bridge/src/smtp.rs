//! SMTP submission (RFC 6409) for mail apps, on the sans-IO session of `sealpost-proto` in
//! its submission mode (AUTH PLAIN/LOGIN before MAIL). What the app submits goes to the
//! [`Sender`] with every RCPT TO as a recipient; the `Bcc` field is removed from what is
//! sent, so Bcc recipients stay blind; the message as submitted lands in Sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sealpost_proto::smtp::{
    CredentialCheck, DeliveryResult, Output, RcptVerdict, Session, SmtpConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth;
use crate::message;
use crate::shared::Shared;
use crate::source::{SendError, Sender, Submission};
use crate::store::{self, NewMessage};
use crate::stream::BoxStream;

/// A client silent this long is disconnected (RFC 5321 4.5.3.2 suggests 5 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 100;

pub fn config() -> SmtpConfig {
    SmtpConfig {
        hostname: "sealpost-bridge".into(),
        max_message_bytes: store::MAX_MESSAGE,
        max_recipients: MAX_RECIPIENTS,
        // Mail apps write long lines (base64 without wrapping is rare, but HTML is not).
        max_data_line: 64 * 1024,
        ..SmtpConfig::default()
    }
}

/// The message without its `Bcc` fields: what every recipient receives.
pub fn strip_bcc(msg: &[u8]) -> Vec<u8> {
    let end = message::header_end(msg);
    let mut out = Vec::with_capacity(msg.len());
    for (name, field) in message::fields(&msg[..end]) {
        if !name.eq_ignore_ascii_case(b"Bcc") {
            out.extend_from_slice(field);
        }
    }
    // The blank line that ends the header, as the message wrote it (if it has one).
    let h = &msg[..end];
    if h.ends_with(b"\r\n\r\n") || h == b"\r\n" {
        out.extend_from_slice(b"\r\n");
    } else if h.ends_with(b"\n\n") || h == b"\n" {
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(&msg[end..]);
    out
}

/// Serves one submission connection.
pub async fn serve_connection<S: Sender>(mut io: BoxStream, shared: Arc<Shared>, sender: Arc<S>) {
    let creds = shared.credentials.clone();
    let check: CredentialCheck = Box::new(move |u, p| creds.check(u, p));
    let (mut session, greeting) = Session::new_submission(config(), check);
    let mut pending = vec![greeting];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut out = Vec::new();
        while !pending.is_empty() {
            match pending.remove(0) {
                Output::Reply(b) => {
                    if b.starts_with(b"535") {
                        // A wrong password waits, so guessing is slow.
                        if io.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        tokio::time::sleep(auth::FAILURE_DELAY).await;
                    }
                    out.extend_from_slice(&b);
                }
                Output::Close => {
                    let _ = io.write_all(&out).await;
                    let _ = io.shutdown().await;
                    return;
                }
                // Not offered (the bridge listens on loopback, or with implicit TLS).
                Output::StartTls => {}
                // Whether a recipient is reachable is decided when sending.
                Output::CheckRecipient(_) => pending
                    .splice(0..0, session.recipient_verdict(RcptVerdict::Accept))
                    .for_each(drop),
                Output::Deliver(tx) => {
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    let result =
                        deliver(&shared, sender.as_ref(), tx.mail_from, tx.rcpt_to, tx.data).await;
                    pending
                        .splice(0..0, session.delivery_result(result))
                        .for_each(drop);
                }
            }
        }
        if !out.is_empty() && (io.write_all(&out).await.is_err() || io.flush().await.is_err()) {
            return;
        }
        if session.is_closed() {
            return;
        }
        let n = match tokio::time::timeout(IDLE_TIMEOUT, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return,
            Err(_) => {
                let _ = io.write_all(b"421 4.4.2 Idle too long, closing\r\n").await;
                return;
            }
        };
        pending = session.feed(&buf[..n]);
    }
}

async fn deliver<S: Sender>(
    shared: &Shared,
    sender: &S,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
) -> DeliveryResult {
    // The letter is signed with this profile's key: it can only be from this profile.
    if !mail_from.is_empty() && !mail_from.eq_ignore_ascii_case(shared.credentials.user()) {
        return DeliveryResult::Rejected(format!(
            "the sender must be {}, the address of this profile",
            shared.credentials.user()
        ));
    }
    let submission = Submission {
        mail_from,
        rcpt_to,
        message: strip_bcc(&data),
    };
    match sender.send(submission).await {
        Ok(outcome) => {
            tracing::info!(
                sealed = outcome.sealed.len(),
                legacy = outcome.legacy.len(),
                "bridge sent a message"
            );
            let copy = NewMessage {
                bytes: &data,
                flags: BTreeSet::from(["\\Seen".to_owned()]),
                date: crate::now() as i64,
                source_id: None,
            };
            let copy_ids = outcome.copy_ids.clone();
            if let Err(e) = shared.with_store(|s| {
                s.append("Sent", &[copy])?;
                s.mark_imported(&copy_ids)
            }) {
                // Sent already: say so rather than make the app send it twice.
                tracing::error!(error = %e, "bridge could not keep a copy in Sent");
            }
            DeliveryResult::Stored(format!(
                "sent to {} recipient(s)",
                outcome.sealed.len() + outcome.legacy.len()
            ))
        }
        Err(SendError::Permanent(why)) => DeliveryResult::Rejected(why),
        Err(SendError::Temporary(why)) => {
            tracing::warn!(error = %why, "bridge send failed for now");
            DeliveryResult::TempFail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcc_is_removed_and_the_rest_kept() {
        let msg = b"From: me@a.test\r\nTo: x@b.test\r\nBcc: secret@c.test,\r\n other@d.test\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(
            strip_bcc(msg),
            b"From: me@a.test\r\nTo: x@b.test\r\nSubject: s\r\n\r\nbody\r\n"
        );
        let plain = b"Subject: s\r\n\r\nbody";
        assert_eq!(strip_bcc(plain), plain);
    }
}
