//! The inbound ESMTP server: a thin tokio driver around `sealpost_proto::smtp::Session`.
//!
//! The driver owns what needs I/O or time: reading with a per-command timeout and a
//! session deadline (slowloris), a cap on concurrent connections, the TLS upgrade, asking
//! the [`Backend`] about recipients, and storing each message before its `250`.
//! Mail to `postmaster` (bare, any case, or `postmaster@DOMAIN`) is always taken (RFC 5321
//! §4.5.1) and goes to the configured postmaster, a user of the node.
//! At end of data the sender is checked ([`crate::auth`], off the session's runtime) before
//! the message is labelled and stored: a DMARC `p=reject` failure is answered 550 5.7.1,
//! a DNS failure 451 4.4.3.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sealpost_proto::Address;
use sealpost_proto::smtp::{DeliveryResult, Output, RcptVerdict, Session, SmtpConfig, Transaction};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;

use crate::auth::{Action, Verifier};
use crate::label::{Arrival, labelled};

#[derive(Clone, Debug)]
pub struct InboundConfig {
    pub smtp: SmtpConfig,
    /// The one domain this gateway receives for; every other domain is a relay attempt.
    pub domain: String,
    /// Longest wait for the next bytes from the client.
    pub command_timeout: Duration,
    /// Longest whole session.
    pub session_timeout: Duration,
    /// Most concurrent sessions; more are answered `421` and closed.
    pub max_connections: usize,
    /// The user that mail to `postmaster` and `postmaster@DOMAIN` is delivered to.
    pub postmaster: Address,
    /// SPF/DKIM/DMARC checks of each message; `None`: not checked (the label says so).
    pub verifier: Option<Arc<Verifier>>,
}

/// Where a recipient of an SMTP transaction goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A user in the gateway's domain (whether such a user exists is the backend's call).
    User(Address),
    /// `postmaster`, bare or in the gateway's domain (RFC 5321 §4.5.1: must be accepted).
    Postmaster,
    /// Another domain: the gateway is no open relay.
    Relay,
    /// Not an address at all.
    Invalid,
}

/// Routes `rcpt` (as given in `RCPT TO`) for a gateway of `domain`.
pub fn route(rcpt: &str, domain: &str) -> Route {
    if rcpt.eq_ignore_ascii_case("postmaster") {
        return Route::Postmaster;
    }
    let Ok(addr) = Address::parse(rcpt) else {
        return Route::Invalid;
    };
    if !addr.domain().eq_ignore_ascii_case(domain) {
        Route::Relay
    } else if addr.local() == "postmaster" {
        Route::Postmaster
    } else {
        Route::User(addr)
    }
}

/// A message accepted for local users, labelled, ready to seal.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub recipients: Vec<Address>,
    /// The message as it arrived, with the `X-Sealpost-Legacy` label prepended.
    pub message: Vec<u8>,
    pub arrival: Arrival,
}

/// What the node provides to the gateway.
pub trait Backend: Send + Sync + 'static {
    /// Whether `rcpt` (in the gateway's domain) is a user of this node. `Err` = try later.
    fn is_local_user(&self, rcpt: &Address) -> impl Future<Output = Result<bool, ()>> + Send;
    /// Seals the message to every recipient and stores it durably; only then `Stored`.
    fn deliver(&self, mail: Inbound) -> impl Future<Output = DeliveryResult> + Send;
}

/// Serves SMTP on `listener` until `shutdown` resolves; sessions in progress finish.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    cfg: Arc<InboundConfig>,
    tls: Option<TlsAcceptor>,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "smtp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut s = stream;
                let _ = s
                    .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                    .await;
            });
            continue;
        };
        let (cfg, tls, backend) = (cfg.clone(), tls.clone(), backend.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = session(stream, peer, &cfg, tls, &*backend).await {
                tracing::debug!(error = %e, "smtp session ended with an error");
            }
        });
    }
}

async fn session<B: Backend>(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &InboundConfig,
    tls: Option<TlsAcceptor>,
    backend: &B,
) -> std::io::Result<()> {
    let mut smtp = cfg.smtp.clone();
    smtp.starttls = tls.is_some();
    let (mut session, greeting) = Session::new(smtp);
    let deadline = Instant::now() + cfg.session_timeout;
    let mut plain = stream;
    let mut ctx = Ctx {
        peer,
        cfg,
        backend,
        deadline,
        tls: false,
    };
    if let Output::Reply(b) = greeting {
        plain.write_all(&b).await?;
    }
    match ctx.drive(&mut plain, &mut session).await? {
        Next::Done => Ok(()),
        Next::StartTls => {
            let Some(acceptor) = tls else { return Ok(()) };
            let mut secure = acceptor.accept(plain).await?;
            session.tls_established();
            ctx.tls = true;
            ctx.drive(&mut secure, &mut session).await.map(|_| ())
        }
    }
}

enum Next {
    Done,
    StartTls,
}

struct Ctx<'a, B> {
    peer: SocketAddr,
    cfg: &'a InboundConfig,
    backend: &'a B,
    deadline: Instant,
    tls: bool,
}

impl<B: Backend> Ctx<'_, B> {
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        session: &mut Session,
    ) -> std::io::Result<Next> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read_deadline = (Instant::now() + self.cfg.command_timeout).min(self.deadline);
            let n = match timeout_at(read_deadline, io.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => {
                    io.write_all(b"421 4.4.2 Timeout, closing connection\r\n")
                        .await?;
                    return Ok(Next::Done);
                }
            };
            if n == 0 {
                return Ok(Next::Done);
            }
            let mut pending = session.feed(&buf[..n]);
            let mut out = Vec::new();
            while !pending.is_empty() {
                let o = pending.remove(0);
                match o {
                    Output::Reply(b) => out.extend_from_slice(&b),
                    Output::Close => {
                        io.write_all(&out).await?;
                        io.flush().await?;
                        return Ok(Next::Done);
                    }
                    Output::StartTls => {
                        io.write_all(&out).await?;
                        io.flush().await?;
                        return Ok(Next::StartTls);
                    }
                    Output::CheckRecipient(rcpt) => {
                        let verdict = self.check(&rcpt).await;
                        let more = session.recipient_verdict(verdict);
                        pending.splice(0..0, more);
                    }
                    Output::Deliver(tx) => {
                        // Everything answered so far goes out before the (slower) store.
                        io.write_all(&out).await?;
                        out.clear();
                        let result = self.deliver(tx).await;
                        let more = session.delivery_result(result);
                        pending.splice(0..0, more);
                    }
                }
            }
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
        }
    }

    async fn check(&self, rcpt: &str) -> RcptVerdict {
        let addr = match route(rcpt, &self.cfg.domain) {
            Route::User(a) => a,
            Route::Postmaster => {
                // Never refused for good: without a mailbox yet, the sender tries again
                // later while the operator sets one up.
                return match self.backend.is_local_user(&self.cfg.postmaster).await {
                    Ok(true) => RcptVerdict::Accept,
                    Ok(false) => {
                        tracing::warn!(postmaster = %self.cfg.postmaster, "mail to postmaster deferred: gateway.postmaster is not a user of this node");
                        RcptVerdict::TempFail
                    }
                    Err(()) => RcptVerdict::TempFail,
                };
            }
            Route::Relay => {
                tracing::info!(client = %self.peer.ip(), "refused relay attempt");
                return RcptVerdict::RelayDenied;
            }
            Route::Invalid => return RcptVerdict::UnknownUser,
        };
        match self.backend.is_local_user(&addr).await {
            Ok(true) => RcptVerdict::Accept,
            Ok(false) => RcptVerdict::UnknownUser,
            Err(()) => RcptVerdict::TempFail,
        }
    }

    async fn deliver(&self, tx: Transaction) -> DeliveryResult {
        let arrival = Arrival {
            mail_from: tx.mail_from,
            client_ip: self.peer.ip(),
            helo: tx.helo,
            tls: self.tls,
            received_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let data = Arc::new(tx.data);
        let verdict = match &self.cfg.verifier {
            Some(v) => Some(v.check(&arrival, data.clone()).await),
            None => None,
        };
        match verdict.as_ref().map(|v| v.action()) {
            Some(Action::Reject(why)) => {
                tracing::info!(client = %self.peer.ip(), reason = %why, "refused by DMARC policy");
                return DeliveryResult::PolicyRejected(why);
            }
            Some(Action::TempFail(why)) => {
                tracing::warn!(client = %self.peer.ip(), reason = %why, "sender checks deferred");
                return DeliveryResult::DnsTempFail;
            }
            Some(Action::Accept | Action::Quarantine) | None => {}
        }
        let message = match labelled(&arrival, &data, verdict.as_ref(), &self.cfg.domain) {
            Ok(m) => m,
            Err(why) => return DeliveryResult::Rejected(format!("cannot read the message: {why}")),
        };
        let mut recipients: Vec<Address> = Vec::new();
        for r in &tx.rcpt_to {
            let to = match route(r, &self.cfg.domain) {
                Route::User(a) => a,
                Route::Postmaster => self.cfg.postmaster.clone(),
                Route::Relay | Route::Invalid => continue,
            };
            if !recipients.contains(&to) {
                recipients.push(to);
            }
        }
        self.backend
            .deliver(Inbound {
                recipients,
                message,
                arrival,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_is_routed_in_every_spelling_and_only_for_our_domain() {
        for r in [
            "postmaster",
            "Postmaster",
            "POSTMASTER",
            "postmaster@gw.test",
            "PostMaster@GW.test",
        ] {
            assert_eq!(route(r, "gw.test"), Route::Postmaster, "{r}");
        }
        assert_eq!(route("postmaster@elsewhere.test", "gw.test"), Route::Relay);
        assert_eq!(
            route("Bob@gw.test", "gw.test"),
            Route::User(Address::parse("bob@gw.test").unwrap())
        );
        assert_eq!(route("bob", "gw.test"), Route::Invalid);
        assert_eq!(route("postmaster.x", "gw.test"), Route::Invalid);
    }
}
