//! Peer nodes seen from the relay: descriptors fetched and cached for `peers.descriptor_ttl`,
//! node keys pinned on first contact (persisted), a changed key logged loudly at warn.
//! Peers in `[[peers.pinned]]` are pinned from the start and a different key is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealpost_proto::NodeUrl;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::SignedDescriptor;

use crate::basics::clock::now_secs;
use crate::config::{KeyChangePolicy, parse_node_key};
use crate::metrics::Metrics;
use crate::store::{PeerPin, Store};

/// Largest descriptor response read.
const MAX_DESCRIPTOR_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot fetch the node descriptor: {0}")]
    Unreachable(String),
    #[error("bad node descriptor: {0}")]
    BadDescriptor(String),
    #[error("node key changed from the pinned {pinned} to {seen}; refusing")]
    KeyMismatch { pinned: String, seen: String },
}

#[derive(Clone, Copy)]
struct PeerState {
    pinned: Option<[u8; 32]>,
    checked: Option<Instant>,
}

pub struct Peers {
    http: reqwest::Client,
    ttl: Duration,
    policy: KeyChangePolicy,
    configured: HashMap<NodeUrl, [u8; 32]>,
    state: Mutex<HashMap<NodeUrl, PeerState>>,
}

impl Peers {
    /// `pins` are the pins stored by earlier runs.
    pub fn new(
        http: reqwest::Client,
        config: &crate::config::PeersConfig,
        pins: Vec<(NodeUrl, PeerPin)>,
    ) -> Peers {
        let configured: HashMap<NodeUrl, [u8; 32]> = config
            .pinned
            .iter()
            .filter_map(|p| parse_node_key(&p.node_key).ok().map(|k| (p.url.clone(), k)))
            .collect();
        let mut state: HashMap<NodeUrl, PeerState> = pins
            .into_iter()
            .map(|(u, p)| {
                (
                    u,
                    PeerState {
                        pinned: Some(p.node_key),
                        checked: None,
                    },
                )
            })
            .collect();
        for (u, k) in &configured {
            state.insert(
                u.clone(),
                PeerState {
                    pinned: Some(*k),
                    checked: None,
                },
            );
        }
        Peers {
            http,
            ttl: config.descriptor_ttl.get(),
            policy: config.key_change,
            configured,
            state: Mutex::new(state),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn fresh(&self, url: &NodeUrl, now: Instant) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|m| m.get(url).and_then(|s| s.checked))
            .is_some_and(|t| now.saturating_duration_since(t) < self.ttl)
    }

    /// The key pinned for the node at `url` (after [`Peers::check`], the key it presents).
    pub fn pinned_key(&self, url: &NodeUrl) -> Option<[u8; 32]> {
        self.pinned(url)
    }

    fn pinned(&self, url: &NodeUrl) -> Option<[u8; 32]> {
        self.state
            .lock()
            .ok()
            .and_then(|m| m.get(url).and_then(|s| s.pinned))
    }

    fn set(&self, url: &NodeUrl, key: [u8; 32], now: Instant) {
        if let Ok(mut m) = self.state.lock() {
            m.insert(
                url.clone(),
                PeerState {
                    pinned: Some(key),
                    checked: Some(now),
                },
            );
        }
    }

    async fn fetch(&self, url: &NodeUrl) -> Result<[u8; 32], PeerError> {
        let unreachable = |e: reqwest::Error| PeerError::Unreachable(e.without_url().to_string());
        let resp = self
            .http
            .get(url.join("/.well-known/sealpost/node"))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(PeerError::Unreachable(format!("HTTP {}", resp.status())));
        }
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_DESCRIPTOR_BYTES as u64)
        {
            return Err(PeerError::BadDescriptor("too large".into()));
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        if body.len() > MAX_DESCRIPTOR_BYTES {
            return Err(PeerError::BadDescriptor("too large".into()));
        }
        let signed =
            SignedDescriptor::decode(&body).map_err(|e| PeerError::BadDescriptor(e.to_string()))?;
        let (desc, _cert) = signed
            .verify()
            .map_err(|e| PeerError::BadDescriptor(e.to_string()))?;
        if &desc.url != url {
            return Err(PeerError::BadDescriptor(format!(
                "it names {} instead",
                desc.url
            )));
        }
        Ok(desc.node_key)
    }
}

impl Peers {
    /// Every pinned peer: URL, node key, and whether it comes from `[[peers.pinned]]`.
    pub fn pins(&self) -> Vec<(NodeUrl, [u8; 32], bool)> {
        let mut v: Vec<_> = self
            .state
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(u, s)| {
                        s.pinned
                            .map(|k| (u.clone(), k, self.configured.contains_key(u)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        v
    }

    /// The operator accepts the key `url` presents now (after a rotation the node refused
    /// under `key_change = "refuse"`): fetches its signed descriptor and pins that key.
    /// Returns the old pin and the new key. Peers in `[[peers.pinned]]` are changed there.
    pub async fn accept_current(
        &self,
        url: &NodeUrl,
        store: &dyn Store,
    ) -> Result<(Option<[u8; 32]>, [u8; 32]), PeerError> {
        if let Some(k) = self.configured.get(url) {
            return Err(PeerError::KeyMismatch {
                pinned: hex::encode(k),
                seen: "(edit [[peers.pinned]] in node.toml)".into(),
            });
        }
        let seen = self.fetch(url).await?;
        let old = self.pinned(url);
        Self::pin(store, url, seen).await;
        self.set(url, seen, Instant::now());
        tracing::info!(peer = %url, old = ?old.map(hex::encode), new = %hex::encode(seen),
            "operator accepted the peer's current key");
        Ok((old, seen))
    }

    /// Makes sure the peer at `url` is who it was: fetches its descriptor when the cached
    /// one is older than the TTL, pins its key on first contact (in `store`), and handles a
    /// changed key (counted in `metrics`).
    pub async fn check(
        &self,
        url: &NodeUrl,
        metrics: &Metrics,
        store: &dyn Store,
    ) -> Result<(), PeerError> {
        let peers = self;
        if peers.fresh(url, Instant::now()) {
            return Ok(());
        }
        let seen = peers.fetch(url).await?;
        let now = Instant::now();
        if let Some(expected) = peers.configured.get(url) {
            if *expected != seen {
                Metrics::inc(&metrics.peer_key_changes);
                tracing::warn!(peer = %url, configured = %hex::encode(expected), seen = %hex::encode(seen),
                    "PEER KEY MISMATCH: the descriptor's key is not the one in [[peers.pinned]]; not delivering");
                return Err(PeerError::KeyMismatch {
                    pinned: hex::encode(expected),
                    seen: hex::encode(seen),
                });
            }
            peers.set(url, seen, now);
            return Ok(());
        }
        match peers.pinned(url) {
            Some(pinned) if pinned == seen => {}
            Some(pinned) => {
                Metrics::inc(&metrics.peer_key_changes);
                tracing::warn!(peer = %url, pinned = %hex::encode(pinned), seen = %hex::encode(seen),
                    policy = ?peers.policy, "PEER KEY CHANGED: this node's key differs from the one pinned at first contact");
                if peers.policy == KeyChangePolicy::Refuse {
                    return Err(PeerError::KeyMismatch {
                        pinned: hex::encode(pinned),
                        seen: hex::encode(seen),
                    });
                }
                Self::pin(store, url, seen).await;
            }
            None => {
                tracing::info!(peer = %url, key = %hex::encode(seen), "pinned peer node key on first contact");
                Self::pin(store, url, seen).await;
            }
        }
        peers.set(url, seen, now);
        Ok(())
    }

    async fn pin(store: &dyn Store, url: &NodeUrl, key: [u8; 32]) {
        if let Err(e) = store
            .pin_peer(
                url.clone(),
                PeerPin {
                    node_key: key,
                    pinned_at: now_secs(),
                },
            )
            .await
        {
            // The pin stays in memory; it is written again at the next change or start.
            tracing::warn!(peer = %url, error = %e, "could not store peer pin");
        }
    }
}
