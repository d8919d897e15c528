//! Listeners: accepts connections for IMAP (and SMTP submission), plain on loopback or
//! TLS (implicit, as on ports 993/465) on any address; a non-loopback address without TLS
//! is refused at start, so mail and the bridge password never cross a network in clear.

use std::future::Future;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::shared::Shared;

/// Connections served at once per listener; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Refuses a listen address that is not loopback unless TLS is configured.
pub fn check_listen(addr: SocketAddr, tls: bool) -> Result<()> {
    if addr.ip().is_loopback() || tls {
        Ok(())
    } else {
        Err(Error::NeedsTls(addr))
    }
}

/// A TLS acceptor from PEM files (certificate chain, private key), ring provider.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(Error::io(p))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| Error::Tls(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(sc)))
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Smtp,
}

/// Serves `listener` until `shutdown` completes. Each connection is its own task.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    handler: F,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    F: Fn(crate::stream::BoxStream, Arc<Shared>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().map_err(Error::io("listener"))?;
    check_listen(addr, tls.is_some())?;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handler = Arc::new(handler);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return Ok(()) },
            _ = &mut shutdown => return Ok(()),
        };
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "bridge accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream: crate::stream::BoxStream = match tls {
                None => Box::new(tcp),
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        tracing::debug!(error = %e, "bridge TLS handshake failed");
                        return;
                    }
                },
            };
            handler(stream, shared).await;
        });
    }
}

/// The IMAP handler for [`serve`].
pub async fn imap_handler(stream: crate::stream::BoxStream, shared: Arc<Shared>) {
    if let Err(e) = crate::imap::serve_connection(stream, shared).await {
        tracing::debug!(error = %e, "bridge IMAP connection ended");
    }
}
