//! What goes over the admin socket: one JSON [`Request`] line from `sealpost-node admin`,
//! one JSON [`Reply`] line back, then the connection closes.

use serde::{Deserialize, Serialize};

/// Longest request line (a command with a URL or key).
pub const MAX_REQUEST: usize = 4096;
/// Longest reply line the CLI reads (a long queue listing).
pub const MAX_REPLY: usize = 16 << 20;
/// Most outbound hops `queue list` (and accounts `users list`) prints.
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
    /// Attempt this hop (32 hex digits), or every hop (`None`), now, whatever its backoff.
    QueueRetry {
        #[serde(default)]
        id: Option<String>,
    },
    /// Give up on this hop now: removed from the queue and bounced to its sender.
    QueueDrop { id: String },
    /// The Prometheus text of `/metrics`.
    Metrics,
    /// Every account: mailbox, created, usage, quota, suspended, addresses.
    UsersList,
    /// Stop an account (an address it owns, or its mailbox id) signing in.
    UsersSuspend { user: String },
    /// Lift a suspension.
    UsersUnsuspend { user: String },
    /// Delete an account and all its data.
    UsersDelete { user: String },
    /// Give an account its own quota (`BYTES`, with an optional K, M, G or T suffix, powers
    /// of 1024), or `default` for `[limits] mailbox_quota` again.
    QuotaSet { user: String, bytes: String },
    /// An account's quota and usage.
    QuotaShow { user: String },
    /// A new stored invite for `uses` registrations (default 1), expiring after `expires`
    /// (`N` with `s`, `m`, `h`, `d` or `w`; default never). The reply's first line is the code.
    InvitesCreate {
        #[serde(default)]
        uses: Option<u32>,
        #[serde(default)]
        expires: Option<String>,
    },
    /// Stored invites: id, created, expiry, uses, state (never the code).
    InvitesList,
    /// Revoke a stored invite by its code or its listed id.
    InvitesRevoke { code: String },
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
