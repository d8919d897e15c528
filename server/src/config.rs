//! `node.toml`: every setting of a node, with a default that works, read with serde
//! (`deny_unknown_fields` catches typos). `spec/node.md` is the reference for each field;
//! [`template`] writes the commented file `sealpost-node init` leaves behind.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealpost_proto::NodeUrl;
use sealpost_proto::limits::MAX_ENVELOPE_BYTES;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod template;
pub use template::{TemplateValues, template};

/// A duration written in seconds; fractions allowed (`0.2`), so tests can use short values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Secs(pub Duration);

impl Secs {
    pub const fn from_secs(s: u64) -> Self {
        Secs(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(Secs::from_secs)
                    .map_err(|_| E::custom("seconds must not be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secs, E> {
                Duration::try_from_secs_f64(v)
                    .map(Secs)
                    .map_err(|_| E::custom("seconds must be a finite, non-negative number"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Who may create an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    /// Anyone.
    Open,
    /// Only with one of the configured invite codes (each works once).
    Invite,
    /// Nobody.
    Closed,
}

impl fmt::Display for RegistrationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistrationPolicy::Open => "open",
            RegistrationPolicy::Invite => "invite",
            RegistrationPolicy::Closed => "closed",
        })
    }
}

/// What to do when a peer's descriptor names a different key than the one pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyChangePolicy {
    /// Log loudly at warn, pin the new key, carry on.
    Warn,
    /// Log loudly at warn and refuse to deliver to the peer until an operator acts.
    Refuse,
}

/// Which peers may deliver to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptPolicy {
    /// Any node that signs its request (except `blocked` ones).
    Any,
    /// Only the nodes in `[[peers.pinned]]`.
    Listed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL other nodes and clients reach this node at; derived from the bound address
    /// when unset.
    pub public_url: Option<NodeUrl>,
    /// RocksDB directory (relative paths are relative to the config file's directory).
    pub data_dir: PathBuf,
    /// How long in-flight requests and writes may take to finish at shutdown.
    pub shutdown_grace: Secs,
    pub keys: KeysConfig,
    pub tls: TlsConfig,
    pub registration: RegistrationConfig,
    pub limits: LimitsConfig,
    pub relay: RelayConfig,
    pub peers: PeersConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub testing: TestingConfig,
    pub devices: DevicesConfig,
    pub admin: AdminConfig,
    /// Directory that relative paths resolve against: the config file's directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Ed25519 signing key (hex seed): descriptor and node-to-node request signatures.
    pub signing_key: PathBuf,
    /// OpenPGP secret key (armored): decrypts hop payloads, signs bounces.
    pub identity: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; TLS is on when this and `key` are set.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Obtain and renew the certificate from an ACME CA instead (`[tls.acme]`).
    pub acme: Option<AcmeConfig>,
}

/// Automatic certificates (RFC 8555) with the TLS-ALPN-01 challenge on the node's own port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL (https).
    pub directory: String,
    /// Account contacts, e.g. `mailto:ops@example.org`.
    #[serde(default)]
    pub contact: Vec<String>,
    /// DNS names the certificate covers (the node's and the gateway's MX host); empty: the
    /// host of `public_url`.
    #[serde(default)]
    pub names: Vec<String>,
    /// Where the account key, certificate and its key are kept (mode 0600).
    #[serde(default = "default_acme_dir")]
    pub dir: PathBuf,
    /// Extra PEM CA certificates to trust for the ACME server's own HTTPS (a test CA);
    /// empty: the system's roots.
    #[serde(default)]
    pub directory_ca: Option<PathBuf>,
}

fn default_acme_dir() -> PathBuf {
    PathBuf::from("acme")
}

/// Longest DNS name (RFC 1035), and most names on one certificate.
pub const MAX_ACME_NAME: usize = 253;
pub const MAX_ACME_NAMES: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub policy: RegistrationPolicy,
    /// Invite codes for policy `invite`; each registers one account.
    pub invites: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest envelope accepted, in bytes (announced in the descriptor).
    pub max_envelope: u32,
    /// Bytes of envelopes one mailbox may hold.
    pub mailbox_quota: u64,
    /// Envelopes one mailbox may hold.
    pub mailbox_max_envelopes: u64,
    /// Hops one user may submit per minute (0: no limit), and the burst above that rate.
    pub submit_per_minute: u32,
    pub submit_burst: u32,
    /// Deliveries one peer node may make per minute (0: no limit), and the burst.
    pub deliver_per_minute: u32,
    pub deliver_burst: u32,
    /// Unauthenticated requests that cost the node work (account registration, challenges)
    /// one client address (IPv6: one /64) may make per minute (0: no limit), and the burst
    /// above that rate. Behind a reverse proxy, list it in `trusted_proxies`.
    pub anonymous_per_minute_per_ip: u32,
    pub anonymous_burst_per_ip: u32,
    /// Record lookups (`GET /v1/records/...`) one client address may make per minute
    /// (0: no limit), and the burst: addresses cannot be harvested by dictionary.
    pub lookups_per_minute_per_ip: u32,
    pub lookups_burst_per_ip: u32,
    /// Deliveries signed by peer keys with no history on this node, per client address
    /// and minute (0: no limit), and the burst: fresh keys do not escape the per-peer limit.
    pub new_peers_per_minute_per_ip: u32,
    pub new_peers_burst_per_ip: u32,
    /// Opt in to exempting loopback clients from the per-address request limits (tests, a
    /// demo). Off by default: behind a local proxy every client would be exempt.
    pub anonymous_exempt_loopback: bool,
    /// Proxies (addresses or CIDR blocks) whose `Forwarded` / `X-Forwarded-For` header
    /// names the client; from any other peer those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Hops one user may have waiting in this node's outbound queue (0: no limit), and
    /// their bytes (0: no limit): a user cannot fill the disk with undeliverable hops.
    pub outbound_hops_per_user: u64,
    pub outbound_bytes_per_user: u64,
    /// The same per client address (0: no limit): more accounts do not buy more queue.
    pub outbound_hops_per_ip: u64,
    pub outbound_bytes_per_ip: u64,
    /// Open client connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64); more are answered 503
    /// and closed, so one address cannot take every slot.
    pub max_connections_per_ip: usize,
    /// A connection is closed (after its request in progress) once it is this old.
    pub max_connection_age: Secs,
    /// A connection is closed after this many requests.
    pub max_requests_per_connection: u32,
    /// Time to read a request's headers.
    pub header_timeout: Secs,
    /// Time to read a request's body.
    pub body_timeout: Secs,
    /// Bytes of request bodies the node holds in memory at once (503 beyond), and the share
    /// of one client address. Each must fit one largest hop payload.
    pub body_bytes_in_flight: u64,
    pub body_bytes_in_flight_per_ip: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// After this long in the queue a hop is given up and the sender gets a bounce.
    pub give_up_after: Secs,
    /// First retry delay; doubles per attempt up to `retry_max`, with jitter.
    pub retry_base: Secs,
    pub retry_max: Secs,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Time for one delivery request (connect, send, answer).
    pub request_timeout: Secs,
    pub connect_timeout: Secs,
    /// Extra PEM CA certificates to trust for outgoing TLS (besides the web PKI roots).
    pub ca_certs: Vec<PathBuf>,
    /// Relay to (and fetch descriptors from) loopback and private addresses too. Off, a
    /// user cannot point the node at the operator's own network (SSRF); `init` turns it on
    /// for a node that listens on loopback (tests, the demo, private deployments).
    pub allow_private_destinations: bool,
    /// The local address outgoing connections are made from; unset: the system picks.
    pub source_address: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// How long a fetched peer descriptor is trusted before it is fetched again.
    pub descriptor_ttl: Secs,
    pub key_change: KeyChangePolicy,
    pub accept: AcceptPolicy,
    /// Ed25519 node keys (hex) whose deliveries are refused.
    pub blocked: Vec<String>,
    /// Peers whose key is known in advance (pinned from the start).
    pub pinned: Vec<PinnedPeer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPeer {
    pub url: NodeUrl,
    /// Ed25519 node key, 64 hex digits.
    pub node_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the node keeps its data: `rocksdb` (in `data_dir`, one process) or `postgres`
    /// (`[storage.postgres]`, shared by several node processes).
    pub backend: StorageBackend,
    pub postgres: PostgresConfig,
    /// RocksDB block cache, MiB.
    pub cache_mb: usize,
    /// Memtable budget for all column families together, MiB.
    pub write_buffer_mb: usize,
    /// How long the id of an acked envelope is remembered, so that a late redelivery is not
    /// stored again. Must exceed every peer's `relay.give_up_after`.
    pub dedupe_retention: Secs,
}

/// Test hooks; all off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Append who connected and what they asked for to this file
    /// (`basics::access`): for the privacy audit, never for a node in service.
    pub access_record: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Rocksdb,
    Postgres,
}

/// `[storage.postgres]`: the shared database of a node that runs as several processes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` or a key=value connection string.
    /// TLS is not spoken: reach the database over a private network or a local socket.
    pub url: String,
    /// Connections each node process keeps at most.
    pub pool_size: usize,
    /// How long a request waits for a connection (and a connection attempt may take).
    pub connect_timeout: Secs,
    /// How long a hop of the outbound queue stays with the process that claimed it without
    /// a renewal (renewed every third of it): after a process dies, the others take its
    /// hops over within this time.
    pub queue_lease: Secs,
    /// Tokens of a shared rate-limit bucket a process takes at once (one database round
    /// trip per that many requests of one key); at most an eighth of the limit's burst is
    /// taken. 1: every request asks the database.
    pub limit_lease: u32,
}

impl fmt::Debug for PostgresConfig {
    // The URL may carry a password: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &if self.url.is_empty() { "" } else { "<set>" })
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("queue_lease", &self.queue_lease)
            .field("limit_lease", &self.limit_lease)
            .finish()
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            pool_size: 16,
            connect_timeout: Secs::from_secs(5),
            queue_lease: Secs::from_secs(30),
            limit_lease: 16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter (`RUST_LOG` syntax); the `RUST_LOG` variable overrides it.
    pub filter: String,
}

/// The operator's side door: `sealpost-node admin` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket of `sealpost-node admin` (mode 0600; only the node's user and root may
    /// use it); empty: no admin socket.
    pub socket: PathBuf,
    /// When set, `GET /metrics` answers only with `Authorization: Bearer TOKEN` (404
    /// otherwise); `sealpost-node admin metrics` always works.
    pub metrics_token: String,
    /// Peer node keys blocked with `sealpost-node admin peers block` (one hex key a line,
    /// mode 0600), besides `peers.blocked`.
    pub blocked_peers: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from("admin.sock"),
            metrics_token: String::new(),
            blocked_peers: PathBuf::from("blocked-peers.txt"),
        }
    }
}

/// Mailbox-owner authentication (`spec/api.md` §Authentication).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a challenge nonce may be answered, seconds (1 to 86400).
    pub nonce_ttl: Secs,
    /// How long a bearer token is valid, seconds (1 to 86400).
    pub token_ttl: Secs,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            nonce_ttl: Secs::from_secs(60),
            token_ttl: Secs::from_secs(600),
        }
    }
}

/// Devices of an account and linking them (`spec/api.md` §Devices).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Devices one account may register (1 to 100).
    pub max_per_account: usize,
    /// Seconds an envelope is kept when not every device has acknowledged it.
    pub retention: Secs,
    /// Seconds between retention sweeps.
    pub retention_check: Secs,
    /// Seconds a link code may be used (10 to 3600).
    pub link_ttl: Secs,
    /// Largest encrypted link payload (account key, contacts, settings), bytes.
    pub link_max_bytes: usize,
    /// Link drops created per account, per minute and burst.
    pub links_per_minute: u32,
    pub links_burst: u32,
    /// Anonymous link requests (a new device's) per client address, per minute and burst.
    pub link_requests_per_minute_per_ip: u32,
    pub link_requests_burst_per_ip: u32,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            max_per_account: 10,
            retention: Secs::from_secs(30 * 24 * 3600),
            retention_check: Secs::from_secs(3600),
            link_ttl: Secs::from_secs(600),
            link_max_bytes: 1 << 20,
            links_per_minute: 2,
            links_burst: 5,
            link_requests_per_minute_per_ip: 30,
            link_requests_burst_per_ip: 20,
        }
    }
}

/// The bridge to legacy SMTP (`spec/node.md` §Gateway).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Run the SMTP gateway.
    pub enabled: bool,
    /// The mail domain it receives for: users of this node whose address ends in @domain.
    pub domain: String,
    /// Address the SMTP server listens on (port 0 picks one at start).
    pub listen: SocketAddr,
    /// Largest message accepted over SMTP, bytes (advertised as SIZE).
    pub max_message_bytes: usize,
    /// Most recipients of one SMTP transaction.
    pub max_recipients: usize,
    /// Concurrent SMTP sessions; more are answered 421.
    pub max_connections: usize,
    /// Longest wait for the next command or data from an SMTP client.
    pub command_timeout: Secs,
    /// Longest SMTP session.
    pub session_timeout: Secs,
    /// `host:port` of the smarthost that outbound legacy mail goes to; empty: each
    /// recipient domain's MX hosts (direct delivery).
    pub smarthost: String,
    /// CA certificates (PEM) trusted for outbound TLS besides the webpki roots: MTA-STS
    /// policy fetches and the MX hosts of domains that enforce it; empty: none.
    pub tls_ca: PathBuf,
    /// DKIM selector for outbound mail (publish `SELECTOR._domainkey.DOMAIN`).
    pub dkim_selector: String,
    /// Ed25519 DKIM key (base64 seed), made on first start when missing.
    pub dkim_key: PathBuf,
    /// RSA DKIM key (PKCS#1 PEM, selector `DKIM_SELECTOR-rsa`), made on first start when
    /// missing: receivers verify RSA-SHA256, few verify Ed25519 alone (RFC 8463 §4).
    pub dkim_rsa_key: PathBuf,
    /// The user of this node that mail to `postmaster` and `postmaster@DOMAIN` goes to
    /// (RFC 5321 §4.5.1); empty: `postmaster@DOMAIN`.
    pub postmaster: String,
    /// OpenPGP identity `gateway@DOMAIN` that clients seal outbound letters to, made on
    /// first start when missing.
    pub identity: PathBuf,
    /// Outbound: give up (and bounce) after this long; retry delays double from
    /// `retry_base` to `retry_max`.
    pub give_up_after: Secs,
    pub retry_base: Secs,
    pub retry_max: Secs,
    /// Check SPF, DKIM and DMARC of inbound mail (the label and `Authentication-Results`
    /// say the outcome; DMARC `p=reject` failures are refused).
    pub verify: bool,
    /// The DNS server the gateway asks (inbound checks, and MX lookups and MTA-STS of
    /// direct delivery): "system" (or empty) for `/etc/resolv.conf`, else `IP` or `IP:PORT`.
    pub dns: String,
    /// Longest wait for one DNS answer (each question is asked twice).
    pub dns_timeout: Secs,
    /// Longest time the sender checks of one message may take; then 451 4.4.3.
    pub verify_timeout: Secs,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: false,
            domain: String::new(),
            listen: "127.0.0.1:2525"
                .parse()
                .expect("invariant: constant address parses"),
            max_message_bytes: 20 * 1024 * 1024,
            max_recipients: 50,
            max_connections: 100,
            command_timeout: Secs::from_secs(60),
            session_timeout: Secs::from_secs(600),
            smarthost: String::new(),
            tls_ca: PathBuf::new(),
            dkim_selector: "sealpost".into(),
            dkim_key: PathBuf::from("keys/dkim.ed25519"),
            dkim_rsa_key: PathBuf::from("keys/dkim.rsa.pem"),
            postmaster: String::new(),
            identity: PathBuf::from("keys/gateway-identity.asc"),
            give_up_after: Secs::from_secs(5 * 24 * 3600),
            retry_base: Secs::from_secs(60),
            retry_max: Secs::from_secs(3600),
            verify: true,
            dns: "system".into(),
            dns_timeout: Secs::from_secs(5),
            verify_timeout: Secs::from_secs(30),
        }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

/// Room around an envelope in the largest request body (a hop wrapper: the OpenPGP layer
/// of the hop payload, the destination URL and framing).
const HOP_OVERHEAD_BYTES: u64 = (sealpost_proto::limits::MAX_HOP_PAYLOAD_BYTES
    - sealpost_proto::limits::MAX_ENVELOPE_BYTES
    + sealpost_proto::limits::MAX_URL_BYTES
    + 16) as u64;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("invariant: constant address parses"),
            public_url: None,
            data_dir: PathBuf::from("data"),
            shutdown_grace: Secs::from_secs(10),
            keys: KeysConfig::default(),
            tls: TlsConfig::default(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            relay: RelayConfig::default(),
            peers: PeersConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            testing: TestingConfig::default(),
            devices: DevicesConfig::default(),
            admin: AdminConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            signing_key: PathBuf::from("keys/node.ed25519"),
            identity: PathBuf::from("keys/node-identity.asc"),
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            policy: RegistrationPolicy::Open,
            invites: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_envelope: MAX_ENVELOPE_BYTES as u32,
            mailbox_quota: 1 << 30,
            mailbox_max_envelopes: 100_000,
            submit_per_minute: 600,
            submit_burst: 100,
            deliver_per_minute: 6000,
            deliver_burst: 1000,
            anonymous_per_minute_per_ip: 120,
            anonymous_burst_per_ip: 60,
            lookups_per_minute_per_ip: 600,
            lookups_burst_per_ip: 200,
            new_peers_per_minute_per_ip: 10,
            new_peers_burst_per_ip: 20,
            anonymous_exempt_loopback: false,
            trusted_proxies: Vec::new(),
            outbound_hops_per_user: 10_000,
            outbound_bytes_per_user: 1 << 30,
            outbound_hops_per_ip: 50_000,
            outbound_bytes_per_ip: 4 << 30,
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_connection_age: Secs::from_secs(600),
            max_requests_per_connection: 10_000,
            header_timeout: Secs::from_secs(10),
            body_timeout: Secs::from_secs(120),
            body_bytes_in_flight: 512 << 20,
            body_bytes_in_flight_per_ip: 128 << 20,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            give_up_after: Secs::from_secs(5 * 24 * 3600),
            retry_base: Secs::from_secs(30),
            retry_max: Secs::from_secs(3600),
            concurrency: 32,
            request_timeout: Secs::from_secs(120),
            connect_timeout: Secs::from_secs(10),
            ca_certs: Vec::new(),
            allow_private_destinations: false,
            source_address: None,
        }
    }
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            descriptor_ttl: Secs::from_secs(3600),
            key_change: KeyChangePolicy::Warn,
            accept: AcceptPolicy::Any,
            blocked: Vec::new(),
            pinned: Vec::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Rocksdb,
            postgres: PostgresConfig::default(),
            cache_mb: 32,
            write_buffer_mb: 32,
            dedupe_retention: Secs::from_secs(30 * 24 * 3600),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("--set {0}: expected KEY=VALUE with a dotted key such as relay.give_up_after=2")]
    BadOverride(String),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path`; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &[])
    }

    /// Reads `path` and applies `KEY=VALUE` overrides (dotted keys, TOML values; a value
    /// that is not valid TOML is taken as a string).
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_err = |source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let mut value: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let mut config: Config = toml::Value::Table(value).try_into().map_err(parse_err)?;
        config.base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        if config.base_dir.as_os_str().is_empty() {
            config.base_dir = PathBuf::from(".");
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.limits.max_envelope as usize > MAX_ENVELOPE_BYTES || self.limits.max_envelope < 4096
        {
            return bad(format!(
                "limits.max_envelope must be 4096 to {MAX_ENVELOPE_BYTES}"
            ));
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections_per_ip == 0 {
            return bad(
                "limits.max_connections and limits.max_connections_per_ip must be at least 1"
                    .into(),
            );
        }
        if l.max_requests_per_connection == 0 || l.max_connection_age.get().is_zero() {
            return bad(
                "limits.max_requests_per_connection and limits.max_connection_age must be above 0"
                    .into(),
            );
        }
        let largest_body = u64::from(l.max_envelope) + HOP_OVERHEAD_BYTES;
        if l.body_bytes_in_flight < largest_body || l.body_bytes_in_flight_per_ip < largest_body {
            return bad(format!(
                "limits.body_bytes_in_flight and limits.body_bytes_in_flight_per_ip must hold \
                 one largest hop payload, {largest_body} bytes (limits.max_envelope + {HOP_OVERHEAD_BYTES})"
            ));
        }
        if let Some(entry) = l.trusted_proxies.iter().find(|e| !is_address_or_cidr(e)) {
            return bad(format!(
                "limits.trusted_proxies: {entry:?} is neither an IP address nor a CIDR block"
            ));
        }
        if self.relay.concurrency == 0 {
            return bad("relay.concurrency must be at least 1".into());
        }
        if self.relay.retry_base.get().is_zero() || self.relay.retry_max < self.relay.retry_base {
            return bad("relay.retry_base must be above 0 and at most relay.retry_max".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be set together".into());
        }
        if let Some(acme) = &self.tls.acme {
            if self.tls.cert.is_some() {
                return bad("set either tls.cert/tls.key or [tls.acme], not both".into());
            }
            if !acme.directory.starts_with("https://") {
                return bad("tls.acme.directory must be an https:// URL".into());
            }
            let names = self.acme_names();
            if names.is_empty() {
                return bad(
                    "tls.acme.names is empty and public_url has no DNS name to cover".into(),
                );
            }
            if names.len() > MAX_ACME_NAMES {
                return bad(format!("tls.acme.names: at most {MAX_ACME_NAMES} names"));
            }
            if let Some(n) = names.iter().find(|n| !is_dns_name(n)) {
                return bad(format!(
                    "tls.acme.names: {n:?} is not a DNS name (no IP addresses or wildcards: \
                     TLS-ALPN-01 validates one host at a time)"
                ));
            }
        }
        let pg = &self.storage.postgres;
        if self.storage.backend == StorageBackend::Postgres {
            if pg.url.is_empty() {
                return bad("storage.backend = \"postgres\" needs storage.postgres.url".into());
            }
            if pg.pool_size == 0 || pg.pool_size > 1024 {
                return bad("storage.postgres.pool_size must be 1 to 1024".into());
            }
            if pg.connect_timeout.get().is_zero() {
                return bad("storage.postgres.connect_timeout must be above 0".into());
            }
            if pg.queue_lease.get() < Duration::from_millis(300) {
                return bad("storage.postgres.queue_lease must be at least 0.3 seconds".into());
            }
            if pg.limit_lease == 0 || pg.limit_lease > 1024 {
                return bad("storage.postgres.limit_lease must be 1 to 1024".into());
            }
        }
        for (name, ttl) in [
            ("auth.nonce_ttl", self.auth.nonce_ttl),
            ("auth.token_ttl", self.auth.token_ttl),
        ] {
            if ttl.get().as_secs() < 1 || ttl.get().as_secs() > 86_400 {
                return bad(format!("{name} must be 1 to 86400 seconds"));
            }
        }
        let d = &self.devices;
        if d.max_per_account == 0 || d.max_per_account > 100 {
            return bad("devices.max_per_account must be 1 to 100".into());
        }
        if d.link_ttl.get().as_secs() < 1 || d.link_ttl.get().as_secs() > 3600 {
            return bad("devices.link_ttl must be 1 to 3600 seconds".into());
        }
        if d.retention.get().is_zero() || d.retention_check.get().is_zero() {
            return bad("devices.retention and devices.retention_check must be above 0".into());
        }
        if d.link_max_bytes < 1024 || d.link_max_bytes > 16 << 20 {
            return bad("devices.link_max_bytes must be 1024 to 16777216".into());
        }
        let g = &self.gateway;
        if g.enabled {
            if let Err(e) = sealpost_proto::types::validate_domain(&g.domain) {
                return bad(format!("gateway.domain {:?}: {e}", g.domain));
            }
            if g.max_message_bytes < 1024
                || g.max_message_bytes > sealpost_proto::limits::MAX_LETTER_BYTES
            {
                return bad(format!(
                    "gateway.max_message_bytes must be 1024 to {}",
                    sealpost_proto::limits::MAX_LETTER_BYTES
                ));
            }
            if g.max_recipients == 0 || g.max_connections == 0 {
                return bad(
                    "gateway.max_recipients and gateway.max_connections must be at least 1".into(),
                );
            }
            if g.retry_base.get().is_zero() || g.retry_max < g.retry_base {
                return bad(
                    "gateway.retry_base must be above 0 and at most gateway.retry_max".into(),
                );
            }
            if !g.postmaster.is_empty() {
                match sealpost_proto::Address::parse(&g.postmaster) {
                    Ok(a) if a.local() == "gateway" && a.domain() == g.domain => {
                        return bad("gateway.postmaster cannot be the gateway's own account".into());
                    }
                    Ok(_) => {}
                    Err(e) => return bad(format!("gateway.postmaster {:?}: {e}", g.postmaster)),
                }
            }
            if let Err(e) = sealpost_gateway::auth::DnsServer::parse(&g.dns) {
                return bad(format!("gateway.dns {e}"));
            }
            if g.dns_timeout.get().is_zero() || g.verify_timeout < g.dns_timeout {
                return bad(
                    "gateway.dns_timeout must be above 0 and at most gateway.verify_timeout".into(),
                );
            }
            if !g.smarthost.is_empty() && smarthost_parts(&g.smarthost).is_none() {
                return bad(format!(
                    "gateway.smarthost {:?}: expected host:port",
                    g.smarthost
                ));
            }
        }
        for k in &self.peers.blocked {
            parse_node_key(k).map_err(|e| ConfigError::Invalid(format!("peers.blocked: {e}")))?;
        }
        for p in &self.peers.pinned {
            parse_node_key(&p.node_key)
                .map_err(|e| ConfigError::Invalid(format!("peers.pinned {}: {e}", p.url)))?;
        }
        Ok(())
    }

    /// `p` made absolute against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.cert.is_some() || self.tls.acme.is_some()
    }

    /// The names an ACME certificate covers: `tls.acme.names`, or the host of `public_url`.
    pub fn acme_names(&self) -> Vec<String> {
        let Some(acme) = &self.tls.acme else {
            return Vec::new();
        };
        if !acme.names.is_empty() {
            return acme.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        }
        self.public_url
            .as_ref()
            .and_then(|u| url_host(u.as_str()))
            .filter(|h| is_dns_name(h))
            .into_iter()
            .collect()
    }
}

/// `192.0.2.1`, `10.0.0.0/8`, `::1` or `fd00::/8` (checked here with std only: the fuzz
/// target compiles this file alone; `client_addr` parses the same forms with ipnet).
fn is_address_or_cidr(s: &str) -> bool {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
}

/// `host:port` of a smarthost.
pub fn smarthost_parts(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

/// Parses a 64-hex-digit Ed25519 node key.
pub fn parse_node_key(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| format!("{s:?} is not 64 hex digits"))?;
    Ok(out)
}

fn apply_override(table: &mut toml::Table, o: &str) -> Result<(), ConfigError> {
    let (key, raw) = o
        .split_once('=')
        .ok_or_else(|| ConfigError::BadOverride(o.into()))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::BadOverride(o.into()));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, path) = parts
        .split_last()
        .ok_or_else(|| ConfigError::BadOverride(o.into()))?;
    let mut t = table;
    for p in path {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::BadOverride(o.into()))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;

/// The host of an `http(s)://host[:port]/...` URL, lowercased.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.starts_with('[') {
        return None;
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    Some(host.to_ascii_lowercase())
}

/// A DNS host name of two or more labels (letters, digits, hyphens), not an IP address.
fn is_dns_name(n: &str) -> bool {
    let labels: Vec<&str> = n.split('.').collect();
    n.len() <= MAX_ACME_NAME
        && labels.len() >= 2
        && n.parse::<std::net::IpAddr>().is_err()
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}
