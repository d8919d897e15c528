//! The running node's shared state: configuration, keys, the signed descriptor, the store,
//! caches and limiters. Also the one operation two paths share: accepting a hop payload
//! into a local mailbox (from `/v1/deliver`, and from the relay for hops to this node).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{cert_from_bytes, cert_to_bytes};
use sealpost_proto::openpgp::{Cert, Fingerprint};
use sealpost_proto::seal::decrypt_with;
use sealpost_proto::{Address, MailboxId, NodeUrl};
use tokio::sync::mpsc;

use crate::config::{Config, parse_node_key};
use crate::error::ApiError;
use crate::keys::NodeKeys;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::ratelimit::RateLimiter;
use crate::relay::Job;
use crate::sessions::Sessions;
use crate::store::{DeliverOutcome, NewEnvelope, Quota, Store};

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Software name in the descriptor.
pub const SOFTWARE: &str = concat!("sealpost-node/", env!("CARGO_PKG_VERSION"));

/// Hop payloads above this size are decrypted on the blocking pool.
const INLINE_DECRYPT_MAX: usize = 64 * 1024;
/// Parsed account certificates kept in memory.
const ACCOUNT_CACHE: usize = 20_000;

/// An account with its certificate parsed once.
pub struct CachedAccount {
    pub mailbox: MailboxId,
    pub cert: Cert,
    pub fingerprint: Fingerprint,
}

/// What each user has waiting in the outbound queue: counted at submit, released when the
/// relay is done with a hop (delivered, bounced or dropped), rebuilt from the queue at start.
pub struct OutboundUsage {
    by_sender: std::sync::Mutex<HashMap<MailboxId, (u64, u64)>>,
    max_hops: u64,
    max_bytes: u64,
}

impl OutboundUsage {
    pub fn new(max_hops: u64, max_bytes: u64) -> Self {
        OutboundUsage {
            by_sender: Default::default(),
            max_hops,
            max_bytes,
        }
    }

    /// Counts a hop of `size` bytes for `sender` unless that would pass a limit.
    pub fn reserve(&self, sender: MailboxId, size: u64) -> bool {
        let Ok(mut m) = self.by_sender.lock() else {
            return false;
        };
        let (hops, bytes) = m.entry(sender).or_default();
        let over = (self.max_hops > 0 && *hops + 1 > self.max_hops)
            || (self.max_bytes > 0 && *bytes + size > self.max_bytes);
        if !over {
            *hops += 1;
            *bytes += size;
        }
        !over
    }

    /// Counts a hop already queued (at start).
    pub fn add(&self, sender: MailboxId, size: u64) {
        if let Ok(mut m) = self.by_sender.lock() {
            let e = m.entry(sender).or_default();
            e.0 += 1;
            e.1 += size;
        }
    }

    pub fn release(&self, sender: MailboxId, size: u64) {
        if let Ok(mut m) = self.by_sender.lock()
            && let Some(e) = m.get_mut(&sender)
        {
            e.0 = e.0.saturating_sub(1);
            e.1 = e.1.saturating_sub(size);
            if e.0 == 0 {
                m.remove(&sender);
            }
        }
    }
}

pub struct Node {
    pub config: Config,
    /// The effective public URL (configured, or derived from the bound address).
    pub url: NodeUrl,
    pub keys: NodeKeys,
    /// The encoded, signed descriptor served at `/.well-known/sealpost/node`.
    pub descriptor: Bytes,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub submit_limit: RateLimiter<MailboxId>,
    pub deliver_limit: RateLimiter<[u8; 32]>,
    /// Registrations and challenges per client IP.
    pub anonymous_limit: RateLimiter<std::net::IpAddr>,
    pub metrics: Metrics,
    pub peers: Peers,
    pub postmaster: Address,
    pub quota: Quota,
    pub outbound_usage: OutboundUsage,
    relay_tx: mpsc::UnboundedSender<Job>,
    accounts: RwLock<HashMap<MailboxId, Arc<CachedAccount>>>,
    /// Bumped by every key rotation, so that a certificate read before it is not cached.
    account_generation: std::sync::atomic::AtomicU64,
    blocked: HashSet<[u8; 32]>,
    listed: HashSet<[u8; 32]>,
    invites: HashSet<String>,
}

impl Node {
    pub fn new(
        config: Config,
        url: NodeUrl,
        keys: NodeKeys,
        store: Arc<dyn Store>,
        peers: Peers,
        relay_tx: mpsc::UnboundedSender<Job>,
    ) -> Node {
        let desc = NodeDescriptor {
            url: url.clone(),
            node_key: keys.node_key(),
            encryption_cert: cert_to_bytes(keys.keyring.cert()),
            max_envelope: config.limits.max_envelope,
            software: SOFTWARE.into(),
            created: now_secs(),
        };
        let descriptor = Bytes::from(SignedDescriptor::sign(&desc, &keys.signing).encode());
        let keyset = |v: &[String]| {
            v.iter()
                .filter_map(|k| parse_node_key(k).ok())
                .collect::<HashSet<_>>()
        };
        let listed = config
            .peers
            .pinned
            .iter()
            .filter_map(|p| parse_node_key(&p.node_key).ok())
            .collect();
        let l = &config.limits;
        Node {
            url: url.clone(),
            descriptor,
            store,
            sessions: Sessions::new(
                config.auth.nonce_ttl.get().as_secs(),
                config.auth.token_ttl.get().as_secs(),
            ),
            submit_limit: RateLimiter::new(l.submit_per_minute, l.submit_burst),
            deliver_limit: RateLimiter::new(l.deliver_per_minute, l.deliver_burst),
            anonymous_limit: RateLimiter::new(
                l.anonymous_per_minute_per_ip,
                l.anonymous_burst_per_ip,
            ),
            metrics: Metrics::default(),
            peers,
            postmaster: keys.postmaster(&url),
            quota: Quota {
                max_bytes: l.mailbox_quota,
                max_envelopes: l.mailbox_max_envelopes,
            },
            outbound_usage: OutboundUsage::new(l.outbound_hops_per_user, l.outbound_bytes_per_user),
            relay_tx,
            accounts: RwLock::new(HashMap::new()),
            account_generation: Default::default(),
            blocked: keyset(&config.peers.blocked),
            listed,
            invites: config.registration.invites.iter().cloned().collect(),
            keys,
            config,
        }
    }

    /// The account with its parsed certificate, from memory when possible.
    pub async fn account(
        &self,
        mailbox: MailboxId,
    ) -> Result<Option<Arc<CachedAccount>>, ApiError> {
        if let Some(a) = self
            .accounts
            .read()
            .ok()
            .and_then(|m| m.get(&mailbox).cloned())
        {
            return Ok(Some(a));
        }
        let generation = self
            .account_generation
            .load(std::sync::atomic::Ordering::Acquire);
        let Some(acc) = self.store.account(mailbox).await? else {
            return Ok(None);
        };
        let cert = cert_from_bytes(&acc.cert)
            .map_err(|e| ApiError::Internal(format!("stored certificate: {e}")))?;
        let cached = Arc::new(CachedAccount {
            mailbox,
            fingerprint: cert.fingerprint(),
            cert,
        });
        if let Ok(mut m) = self.accounts.write()
            && self
                .account_generation
                .load(std::sync::atomic::Ordering::Acquire)
                == generation
        {
            if m.len() >= ACCOUNT_CACHE {
                // Cheap bounded cache: forget an arbitrary entry.
                if let Some(k) = m.keys().next().copied() {
                    m.remove(&k);
                }
            }
            m.insert(mailbox, cached.clone());
        }
        Ok(Some(cached))
    }

    /// Drops the cached certificate of `mailbox` (after a key rotation).
    pub fn forget_account(&self, mailbox: MailboxId) {
        if let Ok(mut m) = self.accounts.write() {
            self.account_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            m.remove(&mailbox);
        }
    }

    pub fn is_invite(&self, code: &str) -> bool {
        self.invites.contains(code)
    }

    /// Whether a peer with this key may deliver here.
    pub fn peer_allowed(&self, key: &[u8; 32]) -> bool {
        if self.blocked.contains(key) {
            return false;
        }
        match self.config.peers.accept {
            crate::config::AcceptPolicy::Any => true,
            crate::config::AcceptPolicy::Listed => self.listed.contains(key),
        }
    }

    /// Charges one unauthenticated, costly request to the client's IP.
    pub fn check_anonymous(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
    ) -> Result<(), ApiError> {
        let Some(crate::api::ClientIp(ip)) = req.extensions().get::<crate::api::ClientIp>() else {
            return Ok(());
        };
        if ip.is_loopback() && self.config.limits.anonymous_exempt_loopback {
            return Ok(());
        }
        self.anonymous_limit
            .check(*ip, std::time::Instant::now())
            .map_err(|retry_after| {
                Metrics::inc(&self.metrics.rate_limited);
                ApiError::RateLimited { retry_after }
            })
    }

    /// Tells the relay about a newly queued hop.
    pub fn schedule(&self, job: Job) {
        if self.relay_tx.send(job).is_err() {
            // The relay has stopped (shutdown); the hop is in the queue and is picked up
            // again at the next start.
            tracing::debug!("relay stopped; queued hop waits for the next start");
        }
    }

    /// Decrypts a hop payload addressed to this node and stores its envelope.
    pub async fn accept_hop_payload(&self, payload: Bytes) -> Result<DeliverOutcome, ApiError> {
        let max = self.config.limits.max_envelope as usize;
        let keyring = self.keys.keyring.clone();
        let len = payload.len();
        let decrypt = move || decrypt_with(&payload, &keyring, max);
        let plain = if len > INLINE_DECRYPT_MAX {
            tokio::task::spawn_blocking(decrypt)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
        } else {
            decrypt()
        };
        let plain = plain.map_err(|e| match e {
            sealpost_proto::Error::TooLong { len, max, .. } => ApiError::TooLarge {
                what: "envelope",
                len: len as u64,
                max: max as u64,
            },
            other => ApiError::MalformedBody(format!("hop payload: {other}")),
        })?;
        let env = Envelope::decode(&plain).map_err(ApiError::from_body)?;
        let (id, mailbox) = (env.id, env.mailbox);
        drop(env);
        let outcome = self
            .store
            .deliver(
                NewEnvelope {
                    mailbox,
                    id,
                    bytes: Bytes::from(plain),
                    received: now_secs(),
                },
                self.quota,
            )
            .await?;
        match outcome {
            DeliverOutcome::Stored { .. } => Metrics::inc(&self.metrics.envelopes_stored),
            DeliverOutcome::Duplicate { .. } => Metrics::inc(&self.metrics.envelopes_duplicate),
            _ => {}
        }
        Ok(outcome)
    }
}
