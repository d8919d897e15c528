//! The SMTP transport of the outbound queue: legacy mail that the gateway built (and
//! DKIM-signed) from a user's letter, queued as a job whose payload is the finished message.
//! One attempt is one SMTP transaction at the smarthost or the recipient domain's MX (one
//! job per domain); recipients refused for good are
//! kept in the job and named, with the remote reply, in the one bounce the job ends with.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sealpost_gateway::auth::DnsServer;
use sealpost_gateway::mta_sts::Sts;
use sealpost_gateway::mx::Resolver;
use sealpost_gateway::smtp_out::{OutError, Route, Sender};

use super::Attempt;
use crate::bounce::{BOUNCE_SUBJECT_PREFIX, BounceError, postmaster_letter};
use crate::config::smarthost_parts;
use crate::node::Node;
use crate::store::{NewEnvelope, OutboundItem, SmtpJob};

/// The shortest time an SMTP transaction may take before it counts as failed for now.
const MIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The port of MX hosts (RFC 5321 §4.5.4: 25).
const MX_PORT: u16 = 25;

/// The SMTP client of the relay: to `gateway.smarthost`, or else to each recipient
/// domain's MX hosts (asking `gateway.dns`); sessions are reused per destination.
pub(super) fn sender(node: &Node) -> Sender {
    let g = &node.config.gateway;
    let route = match smarthost_parts(&g.smarthost) {
        Some((host, port)) => Route::Smarthost { host, port },
        None => {
            // Checked at start (`Config::validate`); a bad value means the system's.
            let server = match DnsServer::parse(&g.dns) {
                Ok(DnsServer::At(addr)) => Some(addr),
                _ => None,
            };
            let resolver = Arc::new(Resolver::new(server));
            let extra_ca = if g.tls_ca.as_os_str().is_empty() {
                None
            } else {
                match std::fs::read(node.config.resolve(&g.tls_ca)) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        tracing::error!(path = %g.tls_ca.display(), error = %e, "gateway.tls_ca unreadable; trusting the webpki roots only");
                        None
                    }
                }
            };
            let sts = match Sts::new(resolver.clone(), extra_ca.as_deref()) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::error!(error = %e, "no MTA-STS client; outbound TLS stays opportunistic");
                    None
                }
            };
            Route::Mx {
                resolver,
                port: MX_PORT,
                sts,
                extra_ca,
            }
        }
    };
    Sender::new(route, &g.domain, g.command_timeout.get().max(MIN_TIMEOUT))
}

/// One transaction for the recipients still to do. Updates the job's recipients (those
/// deferred stay, refused ones move to `failed`). `Delivered` when nobody is left and
/// nobody failed; `Permanent` when nobody is left but somebody failed (the bounce names
/// them); `Temporary` while recipients are left.
pub(super) async fn attempt(sender: &Sender, item: &mut OutboundItem, payload: Bytes) -> Attempt {
    let Some(job) = item.smtp.as_mut() else {
        return Attempt::Permanent("not an SMTP job".into());
    };
    match sender.send(&job.from, &job.rcpts, &payload).await {
        Ok(d) => {
            tracing::info!(
                message_id = %job.message_id,
                host = %d.host,
                tls = d.tls,
                accepted = d.accepted.len(),
                refused = d.refused.len(),
                deferred = d.deferred.len(),
                reply = %d.reply,
                "SMTP transaction done"
            );
            job.failed.extend(d.refused);
            job.rcpts = d.deferred.iter().map(|(r, _)| r.clone()).collect();
            outcome(job, d.deferred.first().map(|(_, why)| why.clone()))
        }
        Err(OutError::Transient(why)) => Attempt::Temporary(why),
        Err(OutError::Permanent(why)) | Err(OutError::Build(why)) => {
            let rcpts = std::mem::take(&mut job.rcpts);
            job.failed
                .extend(rcpts.into_iter().map(|r| (r, why.clone())));
            Attempt::Permanent(why)
        }
    }
}

/// What is left of a job after a transaction that reached the data.
fn outcome(job: &SmtpJob, deferred_why: Option<String>) -> Attempt {
    match (deferred_why, job.failed.first()) {
        (Some(why), _) => Attempt::Temporary(why),
        (None, None) => Attempt::Delivered { duplicate: false },
        (None, Some((_, why))) => Attempt::Permanent(why.clone()),
    }
}

/// When a job is given up: the recipients still to do failed with the last error.
pub(super) fn give_up_rest(item: &mut OutboundItem) {
    let why = item.last_error.clone();
    if let Some(job) = item.smtp.as_mut() {
        let rest = std::mem::take(&mut job.rcpts);
        job.failed
            .extend(rest.into_iter().map(|r| (r, format!("gave up: {why}"))));
    }
}

/// The one bounce of a finished SMTP job: which recipients did not get the message, and
/// what their servers answered.
pub(super) async fn bounce_envelope(
    node: &Arc<Node>,
    item: &OutboundItem,
) -> Result<NewEnvelope, BounceError> {
    let job = item
        .smtp
        .as_ref()
        .ok_or_else(|| BounceError::Seal("not an SMTP job".into()))?;
    let mut body = format!(
        "Your message to legacy e-mail could not be delivered by the gateway {}.\r\n\r\n",
        node.config.gateway.domain
    );
    for (rcpt, why) in &job.failed {
        body.push_str(&format!("Recipient: {rcpt}\r\nRemote reply: {why}\r\n\r\n"));
    }
    body.push_str(&format!(
        "Message-ID: <{}>\r\nQueued:     {} (Unix time)\r\nAttempts:   {}\r\n",
        job.message_id,
        item.submitted_ms / 1000,
        item.attempts
    ));
    let first = job.failed.first().map(|(r, _)| r.as_str()).unwrap_or("");
    let subject = format!("{BOUNCE_SUBJECT_PREFIX}legacy mail to {first}");
    postmaster_letter(node, item.sender, subject, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(failed: &[(&str, &str)]) -> SmtpJob {
        SmtpJob {
            from: "a@gw.test".into(),
            rcpts: Vec::new(),
            message_id: "m@gw.test".into(),
            failed: failed
                .iter()
                .map(|(r, w)| (r.to_string(), w.to_string()))
                .collect(),
        }
    }

    #[test]
    fn deferred_recipients_keep_the_job_and_failures_end_it_with_a_bounce() {
        assert!(matches!(
            outcome(&job(&[]), Some("451 later".into())),
            Attempt::Temporary(w) if w == "451 later"
        ));
        assert!(matches!(
            outcome(&job(&[]), None),
            Attempt::Delivered { duplicate: false }
        ));
        assert!(matches!(
            outcome(&job(&[("c@l.test", "550 no")]), None),
            Attempt::Permanent(w) if w == "550 no"
        ));
    }
}
