//! The running node's shared state: configuration, keys, the signed descriptor, the store,
//! caches and limiters. Local delivery into its mailboxes is in `delivery`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::identity::{cert_from_bytes, cert_to_bytes};
use sealpost_proto::oblivious::GatewayKey;
use sealpost_proto::openpgp::{Cert, Fingerprint};
use sealpost_proto::record::Home;
use sealpost_proto::{Address, MailboxId, NodeUrl};
use tokio::sync::mpsc;

use crate::basics::access::AccessRecord;
use crate::basics::client_addr::TrustedProxies;
use crate::basics::clock::now_secs;
use crate::basics::memo::Memo;
use crate::budget::BodyBudget;
use crate::config::{Config, parse_node_key};
use crate::devices::LinkDrops;
use crate::keys::NodeKeys;
use crate::metrics::Metrics;
use crate::peers::{PeerError, Peers};
use crate::ratelimit::{RateLimited, RateLimiter};
use crate::sessions::Sessions;
use crate::store::{OutboundItem, Quota, Store, StoreError};

/// A hop for the relay to attempt: its queue entry and, when still in memory, its payload.
/// The relay owns the queue; the node only hands it what was queued ([`Node::schedule`]).
pub struct Job {
    pub item: OutboundItem,
    pub payload: Option<Bytes>,
}

/// An operator's command to the relay about the hops it holds (`sealpost-node admin
/// queue retry|drop`).
pub enum QueueControl {
    /// Make this hop (or, `None`, every hop) waiting here due now; answers the ids.
    Retry {
        id: Option<[u8; 16]>,
        reply: tokio::sync::oneshot::Sender<Vec<[u8; 16]>>,
    },
    /// Give up on this hop now: it is removed and bounced to its sender, as when its
    /// retries run out. Answers whether it was waiting here (not in flight, not held by
    /// another process).
    Drop {
        id: [u8; 16],
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    /// The account was deleted with its queued hops: forget those waiting here, without a
    /// bounce (an attempt in flight finishes).
    ForgetSender { sender: MailboxId },
}

/// Software name in the descriptor.
pub const SOFTWARE: &str = concat!("sealpost-node/", env!("CARGO_PKG_VERSION"));

/// Peer keys remembered as having delivered here.
const MAX_KNOWN_PEERS: usize = 100_000;
/// Parsed account certificates (and mailboxes' other homes) kept in memory.
const ACCOUNT_CACHE: usize = 20_000;
/// How long an account or a mailbox's homes read from the store are used before they are
/// read again: how long a change made by another node process on the same database
/// (PostgreSQL) goes unseen by deliveries here. This process's own changes are seen at
/// once.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// An account with its certificate parsed once.
pub struct CachedAccount {
    pub mailbox: MailboxId,
    pub cert: Cert,
    pub fingerprint: Fingerprint,
}

/// What each user, and each client address, has waiting in the outbound queue: counted at
/// submit, released when the relay is done with a hop (delivered, bounced or dropped). At
/// start the per-user counts are rebuilt from the queue; the per-address ones count what
/// was submitted since (the queue does not record addresses). On a store that several
/// processes share (`Store::keeps_limits`) the per-user limit is decided by the store
/// (`Store::enqueue_within`) and only the per-address one here.
pub struct OutboundUsage {
    usage: std::sync::Mutex<Usage>,
    /// The per-user limit is the store's (`Store::enqueue_within`).
    pub senders_in_store: bool,
    max_hops: u64,
    max_bytes: u64,
    max_hops_per_ip: u64,
    max_bytes_per_ip: u64,
}

#[derive(Default)]
struct Usage {
    by_sender: HashMap<MailboxId, (u64, u64)>,
    by_ip: HashMap<IpAddr, (u64, u64)>,
    /// The client address key of each hop counted in `by_ip`, by queue id.
    ip_of: HashMap<[u8; 16], IpAddr>,
}

fn over(used: (u64, u64), size: u64, max_hops: u64, max_bytes: u64) -> bool {
    (max_hops > 0 && used.0 + 1 > max_hops) || (max_bytes > 0 && used.1 + size > max_bytes)
}

impl OutboundUsage {
    pub fn new(max_hops: u64, max_bytes: u64, max_hops_per_ip: u64, max_bytes_per_ip: u64) -> Self {
        OutboundUsage {
            usage: Default::default(),
            senders_in_store: false,
            max_hops,
            max_bytes,
            max_hops_per_ip,
            max_bytes_per_ip,
        }
    }

    /// Counts `item` for its sender and for the client address key `ip` unless that would
    /// pass a limit of either.
    pub fn reserve(&self, item: &OutboundItem, ip: IpAddr) -> bool {
        let Ok(mut u) = self.usage.lock() else {
            return false;
        };
        let mine = u.by_sender.get(&item.sender).copied().unwrap_or_default();
        let theirs = u.by_ip.get(&ip).copied().unwrap_or_default();
        if (!self.senders_in_store && over(mine, item.size, self.max_hops, self.max_bytes))
            || over(
                theirs,
                item.size,
                self.max_hops_per_ip,
                self.max_bytes_per_ip,
            )
        {
            return false;
        }
        u.by_sender
            .insert(item.sender, (mine.0 + 1, mine.1 + item.size));
        u.by_ip.insert(ip, (theirs.0 + 1, theirs.1 + item.size));
        u.ip_of.insert(item.id, ip);
        true
    }

    /// Counts a hop already queued (at start). A forward is not its sender's.
    pub fn add(&self, item: &OutboundItem) {
        if !item.counts_for_sender() {
            return;
        }
        if let Ok(mut u) = self.usage.lock() {
            let e = u.by_sender.entry(item.sender).or_default();
            e.0 += 1;
            e.1 += item.size;
        }
    }

    pub fn release(&self, item: &OutboundItem) {
        let Ok(mut u) = self.usage.lock() else {
            return;
        };
        let u = &mut *u;
        if item.counts_for_sender() {
            give_back(&mut u.by_sender, item.sender, item.size);
        }
        if let Some(ip) = u.ip_of.remove(&item.id) {
            give_back(&mut u.by_ip, ip, item.size);
        }
    }
}

fn give_back<K: Eq + std::hash::Hash>(map: &mut HashMap<K, (u64, u64)>, key: K, size: u64) {
    if let Some(e) = map.get_mut(&key) {
        e.0 = e.0.saturating_sub(1);
        e.1 = e.1.saturating_sub(size);
        if e.0 == 0 {
            map.remove(&key);
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
    /// The Oblivious HTTP gateway key, derived from the signing key; its public half is in
    /// the descriptor.
    pub gateway_key: GatewayKey,
    /// Relayed lookups per client address key (`POST /v1/relay/ohttp`, descriptors).
    pub relay_limit: RateLimiter<IpAddr>,
    /// Lookups relayed to this node's gateway, per relaying node's address key: one node
    /// relays for many devices.
    pub gateway_limit: RateLimiter<IpAddr>,
    /// The access record (a test hook, `testing.access_record`), set at start-up.
    pub access: Option<AccessRecord>,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    /// Link drops for new devices (`devices.link_*`).
    pub links: LinkDrops,
    /// Link drops created per account.
    pub link_limit: RateLimiter<MailboxId>,
    /// A new device's (anonymous) link requests per client address key.
    pub link_ip_limit: RateLimiter<IpAddr>,
    pub submit_limit: RateLimiter<MailboxId>,
    pub deliver_limit: RateLimiter<[u8; 32]>,
    /// Registrations and challenges per client address key.
    pub anonymous_limit: RateLimiter<IpAddr>,
    /// Record lookups per client address key.
    pub lookup_limit: RateLimiter<IpAddr>,
    /// Deliveries signed by a peer key without a history here, per client address key.
    pub new_peer_limit: RateLimiter<IpAddr>,
    /// Request bodies held in memory, node-wide and per client address key.
    pub body_budget: Arc<BodyBudget>,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` name the client.
    pub trusted_proxies: TrustedProxies,
    /// Peer keys that have delivered here (bounded; see [`Node::peer_has_history`]).
    known_peers: Mutex<HashSet<[u8; 32]>>,
    pub metrics: Metrics,
    pub peers: Peers,
    pub postmaster: Address,
    pub quota: Quota,
    pub outbound_usage: OutboundUsage,
    relay_tx: mpsc::UnboundedSender<Job>,
    /// The relay's control channel, set when it starts.
    pub queue_control: std::sync::OnceLock<mpsc::UnboundedSender<QueueControl>>,
    /// Parsed account certificates (forgotten here at a key rotation).
    accounts: Memo<MailboxId, Arc<CachedAccount>>,
    /// Each mailbox's other homes ([`Node::other_homes`]; forgotten here when a record of
    /// the mailbox is stored).
    pub(crate) homes: Memo<MailboxId, Arc<[Home]>>,
    /// `peers.blocked` and what `sealpost-node admin peers block` added.
    blocked: RwLock<HashSet<[u8; 32]>>,
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
        let gateway_key = GatewayKey::derive(&keys.signing.to_bytes())
            .expect("invariant: a fixed OHTTP suite derives from any 32-byte seed");
        let desc = NodeDescriptor {
            url: url.clone(),
            node_key: keys.node_key(),
            encryption_cert: cert_to_bytes(keys.keyring.cert()),
            max_envelope: config.limits.max_envelope,
            software: SOFTWARE.into(),
            created: now_secs(),
            ohttp_key: Some(gateway_key.config().to_vec()),
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
        // Counted in the store when several processes share it (`RateLimiter::in_store`).
        let (shared, lease) = (store.clone(), config.storage.postgres.limit_lease);
        Node {
            url: url.clone(),
            descriptor,
            gateway_key,
            // A device's lookups (each a record and perhaps a descriptor) through its home.
            relay_limit: RateLimiter::new(
                l.lookups_per_minute_per_ip.saturating_mul(2),
                l.lookups_burst_per_ip.saturating_mul(2),
            )
            .in_store("relay_ip", &shared, lease),
            access: None,
            gateway_limit: RateLimiter::new(
                l.lookups_per_minute_per_ip.saturating_mul(10),
                l.lookups_burst_per_ip.saturating_mul(10),
            )
            .in_store("oblivious_gateway_ip", &shared, lease),
            sessions: Sessions::new(
                config.auth.nonce_ttl.get().as_secs(),
                config.auth.token_ttl.get().as_secs(),
            )
            .in_store(&store),
            store,
            links: LinkDrops::new(
                config.devices.link_ttl.get().as_secs(),
                config.devices.link_max_bytes,
            ),
            link_limit: RateLimiter::new(
                config.devices.links_per_minute,
                config.devices.links_burst,
            )
            .in_store("links", &shared, lease),
            link_ip_limit: RateLimiter::new(
                config.devices.link_requests_per_minute_per_ip,
                config.devices.link_requests_burst_per_ip,
            )
            .in_store("link_requests_ip", &shared, lease),
            submit_limit: RateLimiter::new(l.submit_per_minute, l.submit_burst)
                .in_store("submit", &shared, lease),
            deliver_limit: RateLimiter::new(l.deliver_per_minute, l.deliver_burst)
                .in_store("deliver", &shared, lease),
            anonymous_limit: RateLimiter::new(
                l.anonymous_per_minute_per_ip,
                l.anonymous_burst_per_ip,
            )
            .in_store("anonymous_ip", &shared, lease),
            lookup_limit: RateLimiter::new(l.lookups_per_minute_per_ip, l.lookups_burst_per_ip)
                .in_store("lookups_ip", &shared, lease),
            new_peer_limit: RateLimiter::new(
                l.new_peers_per_minute_per_ip,
                l.new_peers_burst_per_ip,
            )
            .in_store("new_peers_ip", &shared, lease),
            body_budget: BodyBudget::new(l.body_bytes_in_flight, l.body_bytes_in_flight_per_ip),
            // `Config::validate` has checked every entry.
            trusted_proxies: TrustedProxies::parse(&l.trusted_proxies).unwrap_or_default(),
            known_peers: Mutex::default(),
            metrics: Metrics::default(),
            peers,
            postmaster: keys.postmaster(&url),
            quota: Quota {
                max_bytes: l.mailbox_quota,
                max_envelopes: l.mailbox_max_envelopes,
            },
            outbound_usage: OutboundUsage {
                senders_in_store: shared.keeps_limits(),
                ..OutboundUsage::new(
                    l.outbound_hops_per_user,
                    l.outbound_bytes_per_user,
                    l.outbound_hops_per_ip,
                    l.outbound_bytes_per_ip,
                )
            },
            relay_tx,
            queue_control: std::sync::OnceLock::new(),
            accounts: Memo::new(ACCOUNT_CACHE, CACHE_TTL),
            homes: Memo::new(ACCOUNT_CACHE, CACHE_TTL),
            blocked: RwLock::new(keyset(&config.peers.blocked)),
            listed,
            invites: config.registration.invites.iter().cloned().collect(),
            keys,
            config,
        }
    }

    /// The account with its parsed certificate, from memory when possible (read at most
    /// [`CACHE_TTL`] ago): for deliveries and lookups. A decision on who the account's key
    /// is (signing in, a record, a rotation) takes [`Node::account_fresh`].
    pub async fn account(
        &self,
        mailbox: MailboxId,
    ) -> Result<Option<Arc<CachedAccount>>, StoreError> {
        if let Some(a) = self.accounts.get(&mailbox) {
            return Ok(Some(a));
        }
        self.account_fresh(mailbox).await
    }

    /// The account as the store has it now (another process on the same database may
    /// have rotated its key since this one cached it); cached for [`Node::account`].
    pub async fn account_fresh(
        &self,
        mailbox: MailboxId,
    ) -> Result<Option<Arc<CachedAccount>>, StoreError> {
        let generation = self.accounts.generation();
        let Some(acc) = self.store.account(mailbox).await? else {
            return Ok(None);
        };
        let cert = cert_from_bytes(&acc.cert)
            .map_err(|e| StoreError::Corrupt(format!("stored certificate: {e}")))?;
        let cached = Arc::new(CachedAccount {
            mailbox,
            fingerprint: cert.fingerprint(),
            cert,
        });
        self.accounts.put(generation, mailbox, cached.clone());
        Ok(Some(cached))
    }

    /// Drops the cached certificate and homes of `mailbox` (after a key rotation).
    pub fn forget_account(&self, mailbox: MailboxId) {
        self.accounts.forget(&mailbox);
        self.homes.forget(&mailbox);
    }

    pub fn is_invite(&self, code: &str) -> bool {
        self.invites.contains(code)
    }

    /// Refuses deliveries signed by `key` from now on; false when it was blocked already.
    pub fn block_peer(&self, key: [u8; 32]) -> bool {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key)
    }

    /// Lifts a block; false when `key` was not blocked.
    pub fn unblock_peer(&self, key: &[u8; 32]) -> bool {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// The blocked peer keys, sorted.
    pub fn blocked_peers(&self) -> Vec<[u8; 32]> {
        let mut v: Vec<_> = self
            .blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Whether a peer with this key may deliver here.
    pub fn peer_allowed(&self, key: &[u8; 32]) -> bool {
        if self
            .blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
        {
            return false;
        }
        match self.config.peers.accept {
            crate::config::AcceptPolicy::Any => true,
            crate::config::AcceptPolicy::Listed => self.listed.contains(key),
        }
    }

    /// Takes a token from `limiter` for the client address key of `ip` (IPv6 by /64).
    /// Loopback clients pass only with `limits.anonymous_exempt_loopback` (opt-in).
    pub async fn check_ip(
        &self,
        limiter: &RateLimiter<IpAddr>,
        ip: IpAddr,
    ) -> Result<(), RateLimited> {
        if ip.is_loopback() && self.config.limits.anonymous_exempt_loopback {
            return Ok(());
        }
        limiter
            .take(crate::basics::client_addr::addr_key(ip))
            .await
            .map_err(|retry_after| {
                Metrics::inc(&self.metrics.rate_limited);
                RateLimited { retry_after }
            })
    }

    /// Whether `key` has delivered here before (since start), or is a configured peer.
    /// Keys without a history are charged to `limits.new_peers_*_per_ip`, so that minting
    /// fresh keys does not get around the per-peer delivery limit.
    pub fn peer_has_history(&self, key: &[u8; 32]) -> bool {
        self.listed.contains(key) || self.known_peers.lock().is_ok_and(|k| k.contains(key))
    }

    /// Remembers that `key` delivered. Bounded: when full, the memory starts over (keys
    /// then earn their history again).
    pub fn peer_delivered(&self, key: [u8; 32]) {
        if let Ok(mut k) = self.known_peers.lock() {
            if k.len() >= MAX_KNOWN_PEERS {
                k.clear();
            }
            k.insert(key);
        }
    }

    /// Makes sure the peer at `url` is who it was ([`Peers::check`]).
    pub async fn check_peer(&self, url: &NodeUrl) -> Result<(), PeerError> {
        self.peers
            .check(url, &self.metrics, self.store.as_ref())
            .await
    }

    /// Tells the relay about a newly queued hop.
    pub fn schedule(&self, job: Job) {
        if self.relay_tx.send(job).is_err() {
            // The relay has stopped (shutdown); the hop is in the queue and is picked up
            // again at the next start.
            tracing::debug!("relay stopped; queued hop waits for the next start");
        }
    }
}
