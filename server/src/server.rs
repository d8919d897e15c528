//! Serving: [`run`] takes a bound listener, a configuration and a shutdown future (so tests
//! bind port 0), opens the store, starts the relay, accepts connections (TLS when
//! configured) up to `limits.max_connections` (at most `limits.max_connections_per_ip` from
//! one address, each for at most `max_connection_age` and `max_requests_per_connection`),
//! and on shutdown stops accepting, lets in-flight requests and writes finish within
//! `shutdown_grace`, and closes the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sealpost_proto::NodeUrl;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::acme::Acme;
use crate::api;
use crate::basics::client_addr::{ClientIp, addr_key};
use crate::basics::clock::now_secs;
use crate::basics::shutdown::stopped;
use crate::config::StorageBackend;
use crate::config::{Config, ConfigError};
use crate::gateway::GatewayError;
use crate::keys::{KeyError, NodeKeys};
use crate::metrics::Metrics;
use crate::node::{Node, SOFTWARE};
use crate::peers::Peers;
use crate::relay;
use crate::store::{PgStore, RocksStore, Store, StoreError};

/// Why a node did not start, or stopped serving other than by its shutdown future.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the access record {}", path.display())]
    AccessRecord {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the address of the listener")]
    LocalAddr(#[source] std::io::Error),
    #[error("making the node URL from {addr} (set public_url)")]
    DerivedUrl {
        addr: SocketAddr,
        source: sealpost_proto::Error,
    },
    #[error("opening {}", path.display())]
    TlsOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading certificates from {}", path.display())]
    TlsCerts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate found", path.display())]
    TlsNoCert { path: PathBuf },
    #[error("reading the private key from {}", path.display())]
    TlsKeyRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM private key found", path.display())]
    TlsNoKey { path: PathBuf },
    #[error("TLS: no protocol version the crypto provider supports")]
    TlsProtocols(#[source] rustls::Error),
    #[error("TLS certificate and key do not fit together")]
    TlsSetup(#[source] rustls::Error),
    #[error("loading the node's keys (run `sealpost-node init` first?)")]
    Keys(#[source] KeyError),
    #[error("opening {}", path.display())]
    OpenStore { path: PathBuf, source: StoreError },
    #[error("opening the PostgreSQL store (storage.postgres.url)")]
    OpenPostgres { source: StoreError },
    /// Reading what the store holds for the relay at start (`what`: its queue, its pins).
    #[error("reading the {what} from the store")]
    ReadStore {
        what: &'static str,
        source: StoreError,
    },
    #[error("reading {}", path.display())]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not PEM", path.display())]
    CaPem {
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("building the relay's HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("starting the SMTP gateway")]
    Gateway(#[from] GatewayError),
    #[error("the admin socket")]
    Admin(#[from] crate::admin::AdminError),
    /// Cannot happen: the node never closes its connection semaphore.
    #[error("connection semaphore closed")]
    SemaphoreClosed,
}

/// What a started node tells its caller once it accepts connections.
#[derive(Clone, Debug)]
pub struct Ready {
    pub addr: SocketAddr,
    pub url: NodeUrl,
    /// Whether the socket speaks TLS (`[tls] cert`/`key`): the scheme it really serves.
    pub tls: bool,
    pub node_key: [u8; 32],
    /// Where the SMTP gateway listens, when `[gateway]` is enabled.
    pub gateway: Option<SocketAddr>,
}

/// Serves until `shutdown` resolves, then shuts down gracefully.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with(listener, config, shutdown, |_| {}).await
}

/// [`run`], calling `on_ready` once the node accepts connections.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), StartError> {
    config.validate()?;
    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let (tls, acme) = match &config.tls.acme {
        Some(a) => {
            let acme = Acme::new(&config, a);
            let acceptor = acme.resolver.acceptor().map_err(StartError::TlsProtocols)?;
            (Some(acceptor), Some(acme))
        }
        None => (tls_acceptor(&config)?, None),
    };
    let url = match &config.public_url {
        Some(u) => u.clone(),
        None => derived_url(addr, tls.is_some())?,
    };
    if tls.is_none() && url.as_str().starts_with("https://") {
        tracing::warn!(%url, "public_url says https but no [tls] cert/key is set: serving plain HTTP (right only behind a TLS proxy)");
    }
    let keys = NodeKeys::load(
        &config.resolve(&config.keys.signing_key),
        &config.resolve(&config.keys.identity),
    )
    .map_err(StartError::Keys)?;
    let store: Arc<dyn Store> = match config.storage.backend {
        StorageBackend::Rocksdb => {
            let data = config.resolve(&config.data_dir);
            RocksStore::open(&data, &config.storage).map_err(|source| StartError::OpenStore {
                path: data.clone(),
                source,
            })?
        }
        StorageBackend::Postgres => PgStore::open(&config.storage.postgres)
            .await
            .map_err(|source| StartError::OpenPostgres { source })?,
    };
    let result = serve(
        listener,
        config,
        url,
        keys,
        store.clone(),
        tls,
        acme,
        shutdown,
        on_ready,
    )
    .await;
    let _ = store.close().await;
    // Everything that held the store has finished; dropping the last handle closes RocksDB.
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("store still referenced at shutdown; it closes when the last user ends");
    }
    tracing::info!("stopped");
    result
}

/// `http(s)://ADDR` for a node without a configured `public_url`.
fn derived_url(addr: SocketAddr, tls: bool) -> Result<NodeUrl, StartError> {
    if addr.ip().is_unspecified() {
        tracing::warn!(%addr, "listening on an unspecified address without public_url; set public_url");
    }
    let scheme = if tls { "https" } else { "http" };
    NodeUrl::parse(&format!("{scheme}://{addr}"))
        .map_err(|source| StartError::DerivedUrl { addr, source })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    listener: TcpListener,
    config: Config,
    url: NodeUrl,
    keys: NodeKeys,
    store: Arc<dyn Store>,
    tls: Option<TlsAcceptor>,
    acme: Option<Acme>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), StartError> {
    let http = http_client(&config)?;
    let read = |what| move |source| StartError::ReadStore { what, source };
    let pins = store.peer_pins().await.map_err(read("peer pins"))?;
    let queued = store
        .claim_outbound(usize::MAX)
        .await
        .map_err(read("outbound queue"))?;
    let peers = Peers::new(http, &config.peers, pins);
    let (relay_tx, relay_rx) = mpsc::unbounded_channel();
    let access = match &config.testing.access_record {
        Some(p) => {
            let path = config.resolve(p);
            Some(
                crate::basics::access::AccessRecord::open(&path)
                    .map_err(|source| StartError::AccessRecord { path, source })?,
            )
        }
        None => None,
    };
    let mut node = Node::new(config, url, keys, store, peers, relay_tx);
    node.access = access;
    let node = Arc::new(node);
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay = relay::spawn(node.clone(), queued, relay_rx, stop_rx.clone());
    let janitor = tokio::spawn(janitor(node.clone(), stop_rx.clone()));
    let acme = acme.map(|a| a.spawn(stop_rx.clone()));
    let blocked = crate::admin::load_blocked(&node)?;
    if blocked > 0 {
        tracing::info!(blocked, "peer keys blocked by the operator");
    }
    let admin = match crate::admin::socket_path(&node.config) {
        Some(path) => {
            let listener = crate::admin::bind(&path)?;
            Some(crate::admin::spawn(
                node.clone(),
                listener,
                path,
                stop_rx.clone(),
            ))
        }
        None => None,
    };
    let gateway = if node.config.gateway.enabled {
        Some(crate::gateway::start(node.clone(), tls.clone(), stop_rx.clone()).await?)
    } else {
        None
    };

    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    tracing::info!(%addr, url = %node.url, node_key = %hex::encode(node.keys.node_key()),
        tls = tls.is_some(), software = SOFTWARE, "sealpost-node listening");
    on_ready(&Ready {
        addr,
        url: node.url.clone(),
        tls: tls.is_some(),
        node_key: node.keys.node_key(),
        gateway: gateway.as_ref().map(|g| g.smtp_addr),
    });

    let limits = &node.config.limits;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Headroom: one address never holds more than seven eighths of the slots, whatever
    // max_connections_per_ip says, so that a new client finds one.
    let share = limits.max_connections - limits.max_connections / 8;
    let per_ip = PerIp::new(limits.max_connections_per_ip.min(share).max(1));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(|_| StartError::SemaphoreClosed)?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        // A trusted proxy carries many clients: it is not held to one address's share.
        let slot = if node.trusted_proxies.contains(peer.ip()) {
            None
        } else {
            match per_ip.take(addr_key(peer.ip())) {
                Some(slot) => Some(slot),
                None => {
                    Metrics::inc(&node.metrics.connections_refused);
                    tracing::debug!(%peer, "connection refused: its address holds its share");
                    refuse(stream, tls.is_some());
                    continue;
                }
            }
        };
        let node = node.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            Metrics::inc(&node.metrics.connections_total);
            node.metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            serve_connection(node.clone(), stream, peer.ip(), tls, stop).await;
            node.metrics
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            tracing::trace!(%peer, "connection closed");
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    let grace = node.config.shutdown_grace.get();
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "grace period over; closing the remaining connections"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    let _ = relay.await;
    let _ = janitor.await;
    if let Some(a) = acme {
        let _ = a.await;
    }
    if let Some(a) = admin {
        let _ = a.await;
    }
    for task in gateway.map(|g| g.tasks).unwrap_or_default() {
        let _ = task.await;
    }
    drop(node);
    Ok(())
}

async fn serve_connection(
    node: Arc<Node>,
    stream: TcpStream,
    client: std::net::IpAddr,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_io(node, TokioIo::new(stream), client, stop).await,
        Some(acceptor) => {
            let timeout = node.config.limits.header_timeout.get();
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                // A TLS-ALPN-01 validation (RFC 8737) ends with the handshake.
                Ok(Ok(s))
                    if s.get_ref().1.alpn_protocol()
                        == Some(crate::acme::resolver::ACME_TLS_ALPN) => {}
                Ok(Ok(s)) => serve_io(node, TokioIo::new(s), client, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(
    node: Arc<Node>,
    io: I,
    client: std::net::IpAddr,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_node = node.clone();
    let max_requests = node.config.limits.max_requests_per_connection;
    let served = std::sync::atomic::AtomicU32::new(0);
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let node = svc_node.clone();
        let ip = node.trusted_proxies.client(client, req.headers());
        req.extensions_mut().insert(ClientIp(ip));
        if let Some(access) = &node.access {
            let target = req
                .headers()
                .get(sealpost_proto::api::TARGET_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|t| format!(" for {t}"))
                .unwrap_or_default();
            access.record(
                Some(client),
                &format!("{} {}{target}", req.method(), req.uri().path()),
            );
        }
        let last = served.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= max_requests;
        async move {
            let mut resp = api::handle(node, req).await;
            if last {
                // hyper closes the connection after an answer that says so.
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(node.config.limits.header_timeout.get());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let age = tokio::time::sleep(node.config.limits.max_connection_age.get());
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
        // A kept-alive connection does not hold its slot for ever.
        _ = age => tracing::debug!("connection reached limits.max_connection_age"),
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error while closing");
    }
}

/// Open connections per client address key, each at most `max`.
struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            counts: Mutex::default(),
        })
    }

    /// A slot for one more connection from `key`, or `None` when it holds `max`.
    fn take(self: &Arc<Self>, key: IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            key,
        })
    }
}

struct IpSlot {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.per_ip.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Turns away a connection whose address holds its share: a `503` when the socket takes
/// it at once (plain HTTP), then close. Never waits on the client.
fn refuse(stream: TcpStream, tls: bool) {
    const BODY: &str =
        r#"{"error":{"code":"busy","message":"too many connections from your address"}}"#;
    if !tls {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.try_write(answer.as_bytes());
    }
}

/// Periodically forgets expired sessions and refilled rate-limit buckets, and (hourly)
/// dedupe entries past `storage.dedupe_retention`; every `devices.retention_check`, envelopes
/// past `devices.retention` whatever their devices acknowledged.
async fn janitor(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(3600));
    let mut expire = tokio::time::interval(node.config.devices.retention_check.get());
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {
                if let Err(e) = node.sessions.sweep_any(now_secs()).await {
                    tracing::warn!(error = %e, "could not forget expired sessions");
                }
                node.links.sweep(now_secs());
                node.link_limit.sweep(std::time::Instant::now());
                node.link_ip_limit.sweep(std::time::Instant::now());
                let now = std::time::Instant::now();
                node.submit_limit.sweep(now);
                node.anonymous_limit.sweep(now);
                node.lookup_limit.sweep(now);
                node.new_peer_limit.sweep(now);
                node.deliver_limit.sweep(now);
                if node.store.keeps_limits()
                    && let Err(e) = node.store.sweep_limits(crate::basics::clock::now_ms() * 1000).await
                {
                    tracing::warn!(error = %e, "could not forget full rate-limit buckets");
                }
            }
            _ = expire.tick() => {
                let retention = node.config.devices.retention.get().as_secs();
                let before = now_secs().saturating_sub(retention);
                match node.store.expire(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(envelopes = n, "deleted envelopes past devices.retention"),
                    Err(e) => tracing::warn!(error = %e, "expiring old envelopes failed"),
                }
            }
            _ = prune.tick() => {
                let retention = node.config.storage.dedupe_retention.get().as_secs();
                let before = now_secs().saturating_sub(retention);
                match node.store.prune_dedupe(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(entries = n, "forgot the ids of envelopes acked long ago"),
                    Err(e) => tracing::warn!(error = %e, "pruning dedupe entries failed"),
                }
            }
        }
    }
}

fn tls_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok(None);
    };
    let (cert, key) = (config.resolve(cert), config.resolve(key));
    let open = |p: &Path| match std::fs::File::open(p) {
        Ok(f) => Ok(BufReader::new(f)),
        Err(source) => Err(StartError::TlsOpen {
            path: p.to_owned(),
            source,
        }),
    };
    let certs = rustls_pemfile::certs(&mut open(&cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| StartError::TlsCerts {
            path: cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(StartError::TlsNoCert { path: cert });
    }
    let key = rustls_pemfile::private_key(&mut open(&key)?)
        .map_err(|source| StartError::TlsKeyRead {
            path: key.clone(),
            source,
        })?
        .ok_or_else(|| StartError::TlsNoKey { path: key.clone() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(StartError::TlsProtocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(StartError::TlsSetup)?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(sc))))
}

/// The client the relay uses for descriptors and deliveries.
fn http_client(config: &Config) -> Result<reqwest::Client, StartError> {
    let r = &config.relay;
    let mut b = reqwest::Client::builder()
        .user_agent(SOFTWARE)
        .timeout(r.request_timeout.get())
        .connect_timeout(r.connect_timeout.get())
        .pool_max_idle_per_host(r.concurrency)
        // Below the default header timeout, which also closes idle connections on the peer.
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        // A redirect could point past the SSRF guard (an IP literal is never resolved).
        .redirect(reqwest::redirect::Policy::none())
        .local_address(r.source_address)
        .no_proxy();
    if !r.allow_private_destinations {
        b = b.dns_resolver(Arc::new(crate::ssrf::PublicOnly));
    }
    for ca in &r.ca_certs {
        let p = config.resolve(ca);
        let pem = std::fs::read(&p).map_err(|source| StartError::CaRead {
            path: p.clone(),
            source,
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| StartError::CaPem { path: p, source })?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(StartError::HttpClient)
}
