//! What goes over the admin socket: one JSON [`Request`] line from `sealpost-node admin`,
//! one JSON [`Reply`] line back, then the connection closes.

use serde::{Deserialize, Serialize};

/// Longest request line (a command with a URL or key).
pub const MAX_REQUEST: usize = 4096;
/// Longest reply line the CLI reads (a long queue listing).
pub const MAX_REPLY: usize = 16 << 20;
/// Most outbound hops `queue list` prints.
pub const MAX_LISTED: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Pinned peers (URL, key, where the pin comes from) and blocked keys.
    PeersList,
    /// Refuse deliveries signed by this node key (64 hex digits), persistently.
    PeersBlock { key: String },
    /// Lift a block made with `PeersBlock`.
    PeersUnblock { key: String },
    /// Pin the key the peer at this URL presents now (after a rotation).
    PeersAccept { url: String },
    /// The outbound queue: id, destination, attempts, next attempt, last error.
    QueueList,
    /// The Prometheus text of `/metrics`.
    Metrics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// What the CLI prints (stdout when `ok`, stderr otherwise).
    pub text: String,
}

impl Reply {
    pub fn ok(text: String) -> Reply {
        Reply { ok: true, text }
    }
    pub fn err(text: String) -> Reply {
        Reply { ok: false, text }
    }
}
