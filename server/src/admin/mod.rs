//! The admin socket (`[admin] socket`): a Unix socket, mode 0600 in the node's directory,
//! that only the node's own user (and root) may use — checked again per connection with
//! `SO_PEERCRED`. `sealpost-node admin …` sends one [`proto::Request`] and prints the
//! [`proto::Reply`]. Peers: list pins, block and unblock keys (kept in
//! `admin.blocked_peers`, mode 0600, so a block survives restarts), accept a peer's
//! rotated key; the outbound queue: list; metrics.

pub mod proto;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealpost_proto::NodeUrl;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::basics::clock::now_ms;
use crate::basics::shutdown::stopped;
use crate::config::Config;
use crate::node::Node;
use proto::{MAX_LISTED, MAX_REPLY, MAX_REQUEST, Reply, Request};

/// A client has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait.
const MAX_CONNECTIONS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin socket {}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another node already serves the admin socket {}", path.display())]
    InUse { path: PathBuf },
    #[error("connecting to the admin socket {} (is the node running, and are you its user?)", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the node over {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the node's answer is not an admin reply")]
    BadReply(#[source] serde_json::Error),
    #[error("reading {}", path.display())]
    ReadBlocked {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line} is not a 64-hex-digit node key", path.display())]
    BadBlocked { path: PathBuf, line: usize },
}

/// Where the socket is, or `None` when `admin.socket` is empty.
pub fn socket_path(config: &Config) -> Option<PathBuf> {
    (!config.admin.socket.as_os_str().is_empty()).then(|| config.resolve(&config.admin.socket))
}

/// Binds the socket at `path` with mode 0600; a stale socket (no node answers on it) is
/// replaced, a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let err = |source| AdminError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Adds the keys in `admin.blocked_peers` to the node's blocked set.
pub fn load_blocked(node: &Node) -> Result<usize, AdminError> {
    let path = node.config.resolve(&node.config.admin.blocked_peers);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(AdminError::ReadBlocked { path, source }),
    };
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_key(line).ok_or_else(|| AdminError::BadBlocked {
            path: path.clone(),
            line: i + 1,
        })?;
        node.block_peer(key);
        n += 1;
    }
    Ok(n)
}

/// Serves the admin socket until `stop` turns true; removes the socket file then.
pub fn spawn(
    node: Arc<Node>,
    listener: UnixListener,
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use std::os::unix::fs::MetadataExt;
    // We created the socket: its owner is the node's user.
    let owner = std::fs::metadata(&path).map(|m| m.uid()).unwrap_or(0);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let _slot = slot;
                connection(&node, stream, owner).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    })
}

async fn connection(node: &Node, stream: UnixStream, owner: u32) {
    // The socket's mode keeps others out; the peer's uid is checked as well, so that a
    // socket re-moded by mistake does not open the node.
    match stream.peer_cred() {
        Ok(c) if c.uid() == owner || c.uid() == 0 => {}
        Ok(c) => {
            tracing::warn!(
                uid = c.uid(),
                "admin socket: connection from another user refused"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin socket: no peer credentials; refused");
            return;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let reply = match read {
        Err(_) => Reply::err("no request in time".into()),
        Ok(Err(e)) => Reply::err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            Reply::err(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                tracing::info!(?req, "admin command");
                execute(node, req).await
            }
            Err(e) => Reply::err(format!("not an admin request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

/// Runs one command.
pub async fn execute(node: &Node, req: Request) -> Reply {
    match req {
        Request::PeersList => peers_list(node),
        Request::PeersBlock { key } => match parse_key(&key) {
            None => Reply::err(format!("{key:?} is not a 64-hex-digit node key")),
            Some(k) => {
                let fresh = node.block_peer(k);
                match save_blocked(node) {
                    Ok(()) if fresh => Reply::ok(format!("blocked {}\n", hex::encode(k))),
                    Ok(()) => Reply::ok(format!("{} was blocked already\n", hex::encode(k))),
                    Err(e) => Reply::err(format!("blocked until restart, but not saved: {e}")),
                }
            }
        },
        Request::PeersUnblock { key } => match parse_key(&key) {
            None => Reply::err(format!("{key:?} is not a 64-hex-digit node key")),
            Some(k) if configured_blocked(node, &k) => Reply::err(format!(
                "{} is in peers.blocked of node.toml: remove it there",
                hex::encode(k)
            )),
            Some(k) => {
                let was = node.unblock_peer(&k);
                match save_blocked(node) {
                    Ok(()) if was => Reply::ok(format!("unblocked {}\n", hex::encode(k))),
                    Ok(()) => Reply::err(format!("{} was not blocked", hex::encode(k))),
                    Err(e) => Reply::err(format!("unblocked until restart, but not saved: {e}")),
                }
            }
        },
        Request::PeersAccept { url } => match NodeUrl::parse(&url) {
            Err(e) => Reply::err(format!("{url:?} is not a node URL: {e}")),
            Ok(url) => match node.peers.accept_current(&url, node.store.as_ref()).await {
                Ok((old, new)) => Reply::ok(format!(
                    "{url}: pinned {} (was {})\n",
                    hex::encode(new),
                    old.map(hex::encode).unwrap_or_else(|| "not pinned".into())
                )),
                Err(e) => Reply::err(format!("{url}: {e}")),
            },
        },
        Request::QueueList => queue_list(node).await,
        Request::Metrics => Reply::ok(node.metrics.render(node.store.stats())),
    }
}

fn peers_list(node: &Node) -> Reply {
    let mut out = String::new();
    let pins = node.peers.pins();
    if pins.is_empty() {
        out.push_str("no pinned peers\n");
    }
    for (url, key, configured) in pins {
        let from = if configured {
            "node.toml"
        } else {
            "first contact"
        };
        let blocked = if node.blocked_peers().contains(&key) {
            " BLOCKED"
        } else {
            ""
        };
        let _ = writeln!(out, "{url} {} ({from}){blocked}", hex::encode(key));
    }
    for key in node.blocked_peers() {
        let _ = writeln!(out, "blocked {}", hex::encode(key));
    }
    Reply::ok(out)
}

async fn queue_list(node: &Node) -> Reply {
    let items = match node.store.outbound().await {
        Ok(v) => v,
        Err(e) => return Reply::err(format!("reading the queue: {e}")),
    };
    let now = now_ms();
    let mut out = format!("{} hop(s) queued\n", items.len());
    for item in items.iter().take(MAX_LISTED) {
        let due = item.next_attempt_ms.saturating_sub(now) / 1000;
        let _ = writeln!(
            out,
            "{} {} {} bytes, {} attempt(s), next in {due} s{}",
            hex::encode(item.id),
            item.destination,
            item.size,
            item.attempts,
            if item.last_error.is_empty() {
                String::new()
            } else {
                format!(", last error: {}", item.last_error)
            }
        );
    }
    if items.len() > MAX_LISTED {
        let _ = writeln!(out, "… and {} more", items.len() - MAX_LISTED);
    }
    Reply::ok(out)
}

fn configured_blocked(node: &Node, key: &[u8; 32]) -> bool {
    node.config
        .peers
        .blocked
        .iter()
        .any(|k| parse_key(k).as_ref() == Some(key))
}

/// Writes the admin-made blocks (the blocked set minus `peers.blocked`) to the file.
fn save_blocked(node: &Node) -> Result<(), std::io::Error> {
    let path = node.config.resolve(&node.config.admin.blocked_peers);
    let mut text =
        String::from("# peer node keys blocked with `sealpost-node admin peers block`\n");
    for k in node.blocked_peers() {
        if !configured_blocked(node, &k) {
            text.push_str(&hex::encode(k));
            text.push('\n');
        }
    }
    crate::basics::private_file::write_private(&path, text.as_bytes())
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

/// The CLI's side: sends `req` to the socket at `path` and returns the reply.
pub async fn call(path: &Path, req: &Request) -> Result<Reply, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| AdminError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let mut line = serde_json::to_vec(req).map_err(AdminError::BadReply)?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut answer)
        .await
        .map_err(io)?;
    serde_json::from_slice(&answer).map_err(AdminError::BadReply)
}
