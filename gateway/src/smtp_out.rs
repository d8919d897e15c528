//! Outbound legacy mail: a letter from a Sealpost user to a legacy address becomes an
//! RFC 5322 message (lettre's builder), DKIM-signed for the gateway's domain over the exact
//! bytes that are sent ([`crate::dkim`]), and is sent to the smarthost by [`send`], one
//! attempt per call: the node's durable queue (`server/src/relay`) owns retries. Failures
//! are classified, per recipient, so the caller retries transient ones and bounces
//! permanent ones, quoting the remote reply.
//!
//! The wire form is 7-bit clean whatever the letter holds: a body with a bare CR or LF, NUL,
//! other control characters, 8-bit bytes or over-long lines is sent quoted-printable, so a
//! receiver never sees a lone CR that it might take for a line end (RFC 5321 §2.3.8: an
//! end of data smuggled out under the gateway's name). Control characters in the subject
//! and file names are replaced. [`check_wire`] refuses anything else before it is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use sealpost_proto::letter::Letter;

use crate::dkim::DkimKeys;

#[derive(Debug, thiserror::Error)]
pub enum OutError {
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("temporary failure: {0}")]
    Transient(String),
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Longest line on the wire, without CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_WIRE_LINE: usize = 998;

/// Builds the RFC 5322 message for `letter`, DKIM-signed when `dkim` is given: the exact
/// bytes to send.
pub fn build(letter: &Letter, dkim: Option<&DkimKeys>) -> Result<Vec<u8>, OutError> {
    let b = |e: &dyn std::fmt::Display| OutError::Build(e.to_string());
    let mbox = |a: &sealpost_proto::Address| a.as_str().parse::<Mailbox>().map_err(|e| b(&e));
    let mut mb = Message::builder()
        .from(mbox(&letter.from)?)
        .subject(no_controls(&letter.subject))
        .message_id(Some(format!("<{}>", no_controls(&letter.message_id))))
        .date(std::time::UNIX_EPOCH + Duration::from_secs(letter.date.max(0) as u64));
    for a in &letter.to {
        mb = mb.to(mbox(a)?);
    }
    for a in &letter.cc {
        mb = mb.cc(mbox(a)?);
    }
    if let Some(irt) = &letter.in_reply_to {
        mb = mb.in_reply_to(format!("<{}>", no_controls(irt)));
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(text_body(&letter.body));
    let msg = if letter.attachments.is_empty() {
        mb.singlepart(text).map_err(|e| b(&e))?
    } else {
        let mut mp = MultiPart::mixed().singlepart(text);
        for a in &letter.attachments {
            let ct = ContentType::parse(&a.media_type)
                .unwrap_or(ContentType::parse("application/octet-stream").map_err(|e| b(&e))?);
            // Always base64: lettre would pick 7bit for ASCII-looking bytes, NUL and bare CR
            // included.
            let data = Body::new_with_encoding(a.data.clone(), ContentTransferEncoding::Base64)
                .map_err(|_| OutError::Build("cannot base64 an attachment".into()))?;
            mp = mp.singlepart(Attachment::new(no_controls(&a.name)).body(data, ct));
        }
        mb.multipart(mp).map_err(|e| b(&e))?
    };
    let wire = msg.formatted();
    check_wire(&wire)?;
    match dkim {
        Some(keys) => keys.sign(&wire).map_err(|e| b(&e)),
        None => Ok(wire),
    }
}

/// The text body, in a transfer encoding that keeps it intact and 7-bit clean: lettre's
/// own choice when the text is plain 7-bit lines, else quoted-printable (which writes a
/// bare CR as `=0D` and NUL as `=00`).
fn text_body(text: &str) -> Body {
    // lettre turns every bare LF into CRLF; a bare CR it would leave as it is.
    let plain = text.bytes().enumerate().all(|(i, c)| match c {
        b'\r' => text.as_bytes().get(i + 1) == Some(&b'\n'),
        b'\n' | b'\t' | b' '..=b'~' => true,
        _ => false,
    }) && text.split('\n').all(|l| l.len() <= 76);
    if plain {
        Body::new(text.to_string())
    } else {
        Body::new_with_encoding(text.to_string(), ContentTransferEncoding::QuotedPrintable)
            .unwrap_or_else(|_| Body::new(text.as_bytes().to_vec()))
    }
}

/// One line of header text: control characters (CR, LF, NUL, ...) become spaces.
fn no_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Refuses a message that is not safe to send as it is: any CR or LF outside a CRLF pair,
/// NUL, 8-bit bytes, or a line over [`MAX_WIRE_LINE`].
pub fn check_wire(wire: &[u8]) -> Result<(), OutError> {
    let bad = |why: &str| Err(OutError::Build(format!("unsafe wire form: {why}")));
    let mut line = 0usize;
    for (i, &c) in wire.iter().enumerate() {
        match c {
            b'\r' if wire.get(i + 1) == Some(&b'\n') => {}
            b'\n' if i > 0 && wire[i - 1] == b'\r' => {
                line = 0;
                continue;
            }
            b'\r' => return bad("bare CR"),
            b'\n' => return bad("bare LF"),
            0 => return bad("NUL"),
            0x80.. => return bad("8-bit byte"),
            _ => line += 1,
        }
        if line > MAX_WIRE_LINE {
            return bad("line longer than 998 characters");
        }
    }
    Ok(())
}

/// Longest remote reply kept (in the queue entry and the bounce), in characters.
pub const MAX_REPLY_CHARS: usize = 512;

/// Where outbound mail goes.
#[derive(Clone)]
pub enum Route {
    /// Everything to one relay on a trusted network.
    Smarthost { host: String, port: u16 },
    /// Each recipient domain's MX hosts (by preference, or its A/AAAA), on `port` (25),
    /// under the domain's MTA-STS policy when `sts` is given.
    Mx {
        resolver: Arc<crate::mx::Resolver>,
        port: u16,
        sts: Option<Arc<crate::mta_sts::Sts>>,
        /// Extra trusted CA certificates (PEM) for MX hosts an `enforce` policy names.
        extra_ca: Option<Vec<u8>>,
    },
}

/// How a transaction ended for its recipients: the message was sent to `accepted` (when
/// any: answered `250` after the data); the others were refused or deferred at `RCPT TO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub accepted: Vec<String>,
    /// Refused for good at `RCPT TO` (5xx): recipient and the server's reply.
    pub refused: Vec<(String, String)>,
    /// Refused for now at `RCPT TO` (4xx): to be tried again.
    pub deferred: Vec<(String, String)>,
    /// The reply to the end of data.
    pub reply: String,
    /// The host that took it, and whether the session was encrypted (STARTTLS).
    pub host: String,
    pub tls: bool,
}

/// An open session kept for the next message to the same destination.
struct Idle {
    conn: AsyncSmtpConnection,
    host: String,
    since: Instant,
}

/// How long an idle session is kept, and how many per destination.
const IDLE_FOR: Duration = Duration::from_secs(20);
const MAX_IDLE_PER_DESTINATION: usize = 4;
/// Most destinations with idle sessions.
const MAX_IDLE_DESTINATIONS: usize = 1000;

/// Sends outbound legacy mail, one transaction per call; sessions are reused per
/// destination (the smarthost, or a recipient domain). STARTTLS is used whenever the
/// server offers it (opportunistic, RFC 3207/7435: the certificate is not checked, as no
/// policy says which one to expect).
pub struct Sender {
    route: Route,
    /// The name in EHLO: the gateway's domain.
    helo: String,
    timeout: Duration,
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl Sender {
    pub fn new(route: Route, helo: &str, timeout: Duration) -> Sender {
        Sender {
            route,
            helo: helo.to_string(),
            timeout,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `msg` (from [`build`]) from `from` to exactly `rcpts` (the SMTP envelope: the
    /// headers keep every recipient the sender wrote) in one transaction. In MX mode every
    /// recipient must be of one domain (the queue makes one job per domain).
    ///
    /// Returns as soon as the server has answered the end of data, so that the caller can
    /// record the delivery at once; `Ok` also when every recipient was refused or deferred
    /// at `RCPT TO` (then nothing was sent, and `accepted` is empty). `Err` when the
    /// transaction failed as a whole: `Permanent` when refused for good (the sender, the
    /// data, or a domain without mail), `Transient` otherwise (no connection, 4xx, time-out,
    /// DNS failure).
    pub async fn send(
        &self,
        from: &str,
        rcpts: &[String],
        msg: &[u8],
    ) -> Result<Delivery, OutError> {
        let addr = |a: &str| {
            a.parse::<lettre::Address>()
                .map_err(|e| OutError::Build(format!("{a:?}: {e}")))
        };
        let sender = addr(from)?;
        let rcpt_addrs = rcpts
            .iter()
            .map(|r| addr(r))
            .collect::<Result<Vec<_>, _>>()?;
        let key = match &self.route {
            Route::Smarthost { .. } => String::new(),
            Route::Mx { .. } => {
                let domain = rcpt_addrs
                    .first()
                    .map(|a| a.domain().to_ascii_lowercase())
                    .ok_or_else(|| OutError::Build("no recipient".into()))?;
                if rcpt_addrs
                    .iter()
                    .any(|a| !a.domain().eq_ignore_ascii_case(&domain))
                {
                    return Err(OutError::Build("recipients of more than one domain".into()));
                }
                domain
            }
        };
        let (mut conn, host) = match self.reuse(&key).await {
            Some(c) => c,
            None => self.open(&key).await?,
        };
        let result = tokio::time::timeout(
            self.timeout,
            transaction(&mut conn, sender, rcpts, rcpt_addrs, msg),
        )
        .await
        .unwrap_or_else(|_| Err(OutError::Transient("timed out".into())));
        match result {
            Ok(mut d) => {
                d.tls = conn.is_encrypted();
                d.host = host.clone();
                // The answer counts now; the session waits for the next message.
                self.keep(key, conn, host);
                Ok(d)
            }
            Err(e) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn.abort()).await;
                });
                Err(e)
            }
        }
    }

    /// An idle session to `key` that still answers.
    async fn reuse(&self, key: &str) -> Option<(AsyncSmtpConnection, String)> {
        loop {
            let idle = self.idle.lock().ok()?.get_mut(key).and_then(|v| v.pop())?;
            let mut conn = idle.conn;
            if idle.since.elapsed() < IDLE_FOR
                && tokio::time::timeout(Duration::from_secs(5), conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Some((conn, idle.host));
            }
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.abort()).await;
            });
        }
    }

    fn keep(&self, key: String, mut conn: AsyncSmtpConnection, host: String) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|_, v| {
            v.retain(|i| i.since.elapsed() < IDLE_FOR);
            !v.is_empty()
        });
        let room = idle.len() < MAX_IDLE_DESTINATIONS || idle.contains_key(&key);
        let list = idle.entry(key).or_default();
        if room && list.len() < MAX_IDLE_PER_DESTINATION && !conn.has_broken() {
            list.push(Idle {
                conn,
                host,
                since: Instant::now(),
            });
        } else {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), conn.abort()).await;
            });
        }
    }

    /// A new session: the smarthost, or the first MX host (by preference) and address that
    /// answers, with STARTTLS when offered.
    async fn open(&self, domain: &str) -> Result<(AsyncSmtpConnection, String), OutError> {
        // Under an MTA-STS "enforce" policy: only the MX hosts it names, only over TLS with
        // a certificate valid for the host.
        let mut verify: Option<&[u8]> = None;
        let candidates: Vec<(String, SocketAddr)> = match &self.route {
            Route::Smarthost { host, port } => {
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| OutError::Transient(short(&format!("resolving {host}: {e}"))))?;
                addrs.map(|a| (host.clone(), a)).collect()
            }
            Route::Mx {
                resolver,
                port,
                sts,
                extra_ca,
            } => {
                let mut hosts = resolver.mail_hosts(domain).await.map_err(route_error)?;
                let policy = match sts {
                    Some(sts) => sts.policy(domain).await,
                    None => None,
                };
                if let Some(p) = policy.filter(|p| p.mode == crate::mta_sts::Mode::Enforce) {
                    hosts.retain(|h| p.allows(h));
                    if hosts.is_empty() {
                        return Err(OutError::Transient(format!(
                            "MTA-STS: no MX host of {domain} is named by its enforced policy"
                        )));
                    }
                    verify = Some(extra_ca.as_deref().unwrap_or(&[]));
                }
                let mut out = Vec::new();
                let mut last = None;
                for h in hosts {
                    match resolver.addrs(&h).await {
                        Ok(ips) => {
                            out.extend(ips.into_iter().map(|ip| (h.clone(), (ip, *port).into())))
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if out.is_empty() {
                    return Err(match last {
                        Some(e) => route_error(e),
                        None => OutError::Transient(format!(
                            "no address for the mail hosts of {domain}"
                        )),
                    });
                }
                out
            }
        };
        let hello = ClientId::Domain(self.helo.clone());
        let mut errors = Vec::new();
        for (host, addr) in candidates {
            let connect =
                AsyncSmtpConnection::connect_tokio1(addr, Some(self.timeout), &hello, None, None);
            let mut conn = match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    errors.push(format!("{host} [{}]: {}", addr.ip(), text(&e)));
                    continue;
                }
                Err(_) => {
                    errors.push(format!("{host} [{}]: connecting timed out", addr.ip()));
                    continue;
                }
            };
            let upgraded = if conn.can_starttls() {
                let tls = match verify {
                    Some(ca) => verified_tls(&host, ca),
                    None => opportunistic_tls(&host),
                };
                match tls {
                    Ok(tls) => {
                        match tokio::time::timeout(self.timeout, conn.starttls(tls, &hello)).await {
                            Ok(r) => r.map_err(|e| text(&e)),
                            Err(_) => Err("timed out".to_string()),
                        }
                    }
                    Err(e) => Err(text(&e)),
                }
            } else if verify.is_some() {
                Err("not offered, and the domain's MTA-STS policy enforces TLS".to_string())
            } else {
                Ok(())
            };
            if let Err(e) = upgraded {
                errors.push(format!("{host} [{}]: STARTTLS: {e}", addr.ip()));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.abort()).await;
                });
                continue;
            }
            return Ok((conn, host));
        }
        Err(OutError::Transient(short(&errors.join("; "))))
    }
}

/// TLS with the certificate checked for `host` (webpki roots and `extra_ca`): MTA-STS.
fn verified_tls(
    host: &str,
    extra_ca: &[u8],
) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    let mut b = TlsParameters::builder(host.to_string());
    if !extra_ca.is_empty() {
        b = b.add_root_certificate(lettre::transport::smtp::client::Certificate::from_pem(
            extra_ca,
        )?);
    }
    b.build_rustls()
}

/// TLS that encrypts without checking the certificate: opportunistic STARTTLS.
fn opportunistic_tls(host: &str) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    TlsParameters::builder(host.to_string())
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
}

fn route_error(e: crate::mx::RouteError) -> OutError {
    if e.is_permanent() {
        OutError::Permanent(short(&e.to_string()))
    } else {
        OutError::Transient(short(&e.to_string()))
    }
}

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    sender: lettre::Address,
    rcpts: &[String],
    rcpt_addrs: Vec<lettre::Address>,
    msg: &[u8],
) -> Result<Delivery, OutError> {
    conn.command(Mail::new(Some(sender), Vec::new()))
        .await
        .map_err(|e| classify(&e, "MAIL FROM"))?;
    let mut d = Delivery::default();
    for (rcpt, a) in rcpts.iter().zip(rcpt_addrs) {
        match conn.command(Rcpt::new(a, Vec::new())).await {
            Ok(_) => d.accepted.push(rcpt.clone()),
            Err(e) => match classify(&e, "RCPT TO") {
                OutError::Permanent(why) => d.refused.push((rcpt.clone(), why)),
                OutError::Transient(why) | OutError::Build(why) => {
                    d.deferred.push((rcpt.clone(), why))
                }
            },
        }
    }
    if d.accepted.is_empty() {
        // Nobody to send to: each recipient's reply is in `refused` or `deferred`.
        conn.command(Rset).await.map_err(|e| classify(&e, "RSET"))?;
        return Ok(d);
    }
    conn.command(Data).await.map_err(|e| classify(&e, "DATA"))?;
    let reply = conn
        .message(msg)
        .await
        .map_err(|e| classify(&e, "end of data"))?;
    d.reply = short(&format!(
        "{} {}",
        reply.code(),
        reply.message().collect::<Vec<_>>().join(" ")
    ));
    Ok(d)
}

/// A reply as kept: one line of printable text, at most [`MAX_REPLY_CHARS`].
fn short(s: &str) -> String {
    no_controls(s).chars().take(MAX_REPLY_CHARS).collect()
}

/// An error as text: the server's reply when there is one.
fn text(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    match (e.status(), e.source()) {
        (Some(code), Some(reply)) => format!("{code} {reply}"),
        (None, Some(source)) => format!("{e}: {source}"),
        _ => e.to_string(),
    }
}

/// Permanent for a 5xx reply, transient for anything else; the text names the step and
/// quotes the server's reply.
fn classify(e: &lettre::transport::smtp::Error, step: &str) -> OutError {
    let why = short(&format!("{} (in reply to {step})", text(e)));
    if e.is_permanent() {
        OutError::Permanent(why)
    } else {
        OutError::Transient(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_proto::Address;
    use sealpost_proto::letter::Attachment as LetterAttachment;

    fn letter(body: &str) -> Letter {
        Letter::new(
            Address::parse("alice@gw.test").unwrap(),
            vec![Address::parse("carol@legacy.test").unwrap()],
            "hi",
            body,
            1_700_000_000,
        )
    }

    fn parsed_body(wire: &[u8]) -> String {
        mail_parser::MessageParser::default()
            .parse(wire)
            .and_then(|m| m.body_text(0).map(|b| b.into_owned()))
            .unwrap()
    }

    #[test]
    fn a_bare_cr_or_nul_never_reaches_the_wire() {
        for body in [
            "before\r.\rMAIL FROM:<x@gw.test>\r\nafter\r\n",
            "nul \0 here\n",
            "lone cr at the end\r",
            "a \u{1b}[2J terminal escape\n",
        ] {
            let wire = build(&letter(body), None).unwrap();
            check_wire(&wire).unwrap();
            assert!(!wire.contains(&0), "{body:?}");
            let text = String::from_utf8(wire.clone()).unwrap();
            assert!(
                text.contains("Content-Transfer-Encoding: quoted-printable"),
                "{text}"
            );
            // Nothing is lost: a reader decodes the same text (with CRLF line ends).
            let back = parsed_body(&wire);
            // (lettre ends the message with one more CRLF.)
            assert_eq!(
                back.replace("\r\n", "\n").trim_end_matches('\n'),
                body.replace("\r\n", "\n").trim_end_matches('\n'),
                "{text}"
            );
        }
    }

    #[test]
    fn long_lines_and_8bit_text_are_encoded_and_plain_text_stays_7bit() {
        let long = format!("{}\nshort\n", "y".repeat(3000));
        for body in [long.as_str(), "Grüße aus Köln\n"] {
            let wire = build(&letter(body), None).unwrap();
            check_wire(&wire).unwrap();
            assert_eq!(
                parsed_body(&wire)
                    .replace("\r\n", "\n")
                    .trim_end_matches('\n'),
                body.trim_end_matches('\n')
            );
        }
        let wire = build(&letter("Hello,\nplain text.\n"), None).unwrap();
        let text = String::from_utf8(wire).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: 7bit"), "{text}");
        assert!(text.contains("\r\nHello,\r\nplain text.\r\n"), "{text}");
    }

    #[test]
    fn header_fields_cannot_be_injected() {
        let mut l = letter("x\n");
        l.subject = "hi\r\nBcc: eve@evil.test\0".into();
        l.attachments.push(LetterAttachment {
            name: "a\r\nb.txt".into(),
            media_type: "text/plain".into(),
            data: b"\0\r\x01binary".to_vec(),
        });
        let wire = build(&l, None).unwrap();
        check_wire(&wire).unwrap();
        let text = String::from_utf8(wire.clone()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
        let parsed = mail_parser::MessageParser::default().parse(&wire).unwrap();
        let att = parsed.attachment(0).unwrap();
        assert_eq!(
            att.contents(),
            b"\0\r\x01binary",
            "attachments arrive intact"
        );
    }

    #[test]
    fn check_wire_refuses_what_is_unsafe() {
        assert!(check_wire(b"A: b\r\n\r\nok\r\n").is_ok());
        for bad in [
            &b"A: b\r\n\r\nbare\rcr\r\n"[..],
            b"A: b\r\n\r\nbare\nlf\r\n",
            b"A: b\r\n\r\nnul\0\r\n",
            b"A: b\r\n\r\n\xc3\xa9\r\n",
        ] {
            assert!(check_wire(bad).is_err(), "{bad:?}");
        }
        let mut long = b"A: b\r\n\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'z', 999));
        assert!(check_wire(&long).is_err());
    }
}
