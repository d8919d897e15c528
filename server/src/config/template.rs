//! The commented `node.toml` that `sealpost-node init` writes.

use std::net::SocketAddr;

use sealpost_proto::NodeUrl;

use super::{Config, RegistrationPolicy};

/// What `init` writes into the template.
pub struct TemplateValues<'a> {
    pub listen: SocketAddr,
    pub public_url: Option<&'a NodeUrl>,
    pub policy: RegistrationPolicy,
    pub invites: &'a [String],
}

/// The commented `node.toml` that `sealpost-node init` writes. Every field is present with
/// its default, so that the file documents itself.
pub fn template(v: &TemplateValues<'_>) -> String {
    let d = Config::default();
    let public_url = match v.public_url {
        Some(u) => format!("public_url = \"{u}\""),
        None => "# public_url = \"https://node.example\"".to_string(),
    };
    let invites = v
        .invites
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let l = &d.limits;
    let r = &d.relay;
    let p = &d.peers;
    format!(
        r#"# sealpost-node configuration. Every field has a working default; spec/node.md
# describes each one. Relative paths are relative to this file's directory.

# Address to listen on. Port 0 picks a free port.
listen = "{listen}"
# URL that clients and other nodes use to reach this node, as published in the node
# descriptor and in mailbox records. Unset: http(s)://<bound address>.
{public_url}
# RocksDB directory.
data_dir = "data"
# Seconds that in-flight requests and writes get to finish at shutdown.
shutdown_grace = {grace}

[keys]
# Ed25519 signing key (hex): signs the node descriptor and node-to-node requests. Mode 0600.
signing_key = "keys/node.ed25519"
# OpenPGP secret key (armored): decrypts hop payloads, signs bounces. Mode 0600.
identity = "keys/node-identity.asc"

[tls]
# PEM certificate chain and private key. When both are set the node speaks HTTPS only.
# cert = "tls/cert.pem"
# key = "tls/key.pem"
# Or obtain and renew the certificate automatically from an ACME CA (RFC 8555), validated
# with TLS-ALPN-01 on this node's own HTTPS port (which must be reachable as port 443 of
# every name). Renewed after two thirds of its lifetime, without a restart.
# [tls.acme]
# directory = "https://acme-v02.api.letsencrypt.org/directory"
# contact = ["mailto:ops@example.org"]
# names = ["alpha.example", "mx.alpha.example"]   # default: the host of public_url
# dir = "acme"                                    # account, certificate, key (mode 0600)
# directory_ca = "acme-ca.pem"                    # extra root for the CA's own HTTPS (tests)

[registration]
# Who may create an account: "open", "invite" (a code from `invites`, each usable once)
# or "closed".
policy = "{policy}"
invites = [{invites}]

[limits]
# Largest envelope accepted, bytes (at most {max_env}).
max_envelope = {max_env}
# Bytes and envelopes one mailbox may hold; beyond either, deliveries get 507.
mailbox_quota = {quota}
mailbox_max_envelopes = {max_count}
# Hops one user may submit per minute (0 = unlimited), and the burst allowed above it.
submit_per_minute = {spm}
submit_burst = {sb}
# Deliveries one peer node may make per minute (0 = unlimited), and the burst.
deliver_per_minute = {dpm}
deliver_burst = {db}
# Per client address (IPv4 address, IPv6 /64), per minute and burst (0: no limit):
# registrations and challenges; record lookups; deliveries signed by peer keys that have
# not delivered here before.
anonymous_per_minute_per_ip = {apm}
anonymous_burst_per_ip = {ab}
lookups_per_minute_per_ip = {lpm}
lookups_burst_per_ip = {lb}
new_peers_per_minute_per_ip = {npm}
new_peers_burst_per_ip = {nb}
# Exempt loopback clients from the per-address limits above (tests, a local demo). Keep it
# off behind a local reverse proxy: list the proxy in trusted_proxies instead.
anonymous_exempt_loopback = false
# Reverse proxies (addresses or CIDR blocks) whose Forwarded / X-Forwarded-For header
# names the client, e.g. ["127.0.0.1", "::1"]. Other peers' such headers are ignored.
trusted_proxies = []
# Hops and bytes one user, and one client address, may have waiting in the outbound
# queue (0: no limit).
outbound_hops_per_user = {ohu}
outbound_bytes_per_user = {obu}
outbound_hops_per_ip = {ohi}
outbound_bytes_per_ip = {obi}
# Open connections (further ones wait in the listen backlog), and from one client
# address (further ones get 503 and are closed).
max_connections = {maxc}
max_connections_per_ip = {maxci}
# A connection is closed once it is this many seconds old, or after this many requests.
max_connection_age = {mca}
max_requests_per_connection = {mrc}
# Seconds to receive a request's headers, and its body.
header_timeout = {ht}
body_timeout = {bt}
# Bytes of request bodies held in memory at once, node-wide and per client address
# (503 beyond); each must hold one largest request (max_envelope + {overhead}).
body_bytes_in_flight = {bif}
body_bytes_in_flight_per_ip = {bifi}

[relay]
# Seconds after submission when an undelivered hop is given up and bounced to its sender.
give_up_after = {gua}
# Retry delay: starts at retry_base seconds, doubles per attempt up to retry_max, jittered.
retry_base = {rb}
retry_max = {rm}
# Deliveries in flight at once.
concurrency = {conc}
# Seconds for one delivery request, and for connecting.
request_timeout = {rt}
connect_timeout = {ct}
# Extra PEM CA certificates trusted for outgoing HTTPS, besides the web PKI roots.
ca_certs = []
# Relay to loopback and private addresses too. Off, a user cannot point this node at the
# operator's own network (SSRF); on for a node that listens on loopback.
allow_private_destinations = {allow_private}

[peers]
# Seconds a fetched peer descriptor is used before it is fetched again.
descriptor_ttl = {ttl}
# A peer whose key differs from the pinned one: "warn" (log, re-pin) or "refuse".
key_change = "warn"
# Who may deliver here: "any" signed node, or only "listed" ([[peers.pinned]]) ones.
accept = "any"
# Ed25519 node keys (hex) whose deliveries are refused.
blocked = []
# Peers known in advance:
# [[peers.pinned]]
# url = "https://beta.example"
# node_key = "<64 hex digits>"

[storage]
# "rocksdb": the database in data_dir, for one node process. "postgres": the database of
# [storage.postgres], which several node processes with these same keys and settings share.
backend = "rocksdb"
# RocksDB block cache and total memtable budget, MiB.
cache_mb = {cache}
write_buffer_mb = {wb}
# Seconds the id of an acked envelope is remembered, so that a late redelivery (a peer
# retrying after a crash) is not stored again. Keep it above peers' relay.give_up_after.
dedupe_retention = {dr}

# [storage.postgres]
# url = "postgres://sealpost:PASSWORD@127.0.0.1:5432/sealpost"   # no TLS: private network
# pool_size = 16          # connections per node process
# connect_timeout = 5     # seconds to wait for a connection

[log]
# tracing filter; the RUST_LOG environment variable overrides it.
filter = "info"

[admin]
# Unix socket for `sealpost-node admin` (mode 0600: this user and root); "" turns it off.
socket = "admin.sock"
# Set a token to keep /metrics private: then only `Authorization: Bearer <token>` reads it
# (`sealpost-node admin metrics` always can).
metrics_token = ""
# Peer keys blocked with `sealpost-node admin peers block` (besides peers.blocked).
blocked_peers = "blocked-peers.txt"

[auth]
# Seconds a challenge nonce may be answered, and a bearer token is valid.
nonce_ttl = 60
token_ttl = 600

[devices]
# Each device of an account signs in with its own key and gets every letter: an envelope
# is kept until every device has acknowledged it, or for `retention` seconds.
max_per_account = 10
retention = 2592000
retention_check = 3600
# A link code (`sealpost device add`) works once, for link_ttl seconds; its encrypted
# payload is at most link_max_bytes. Links created per account, and a new device's
# requests per client address, are rate limited.
link_ttl = 600
link_max_bytes = 1048576
links_per_minute = 2
links_burst = 5
link_requests_per_minute_per_ip = 30
link_requests_burst_per_ip = 20

[gateway]
# The bridge to legacy SMTP. Inbound: mail for users of this node whose address ends in
# @domain is sealed to them on arrival and labelled "not end-to-end". Outbound: letters
# users seal to gateway@domain go, DKIM-signed, to the smarthost or each domain's MX.
enabled = false
domain = ""
listen = "127.0.0.1:2525"
max_message_bytes = {g_max}
max_recipients = {g_rcpt}
max_connections = {g_conn}
command_timeout = {g_ct}
session_timeout = {g_st}
# host:port; empty: direct delivery to each recipient domain's MX hosts (port 25).
smarthost = ""
# CA certificates (PEM) trusted for outbound TLS besides the webpki roots (MTA-STS).
tls_ca = ""
# Outbound mail is DKIM-signed twice (RFC 8463): Ed25519 under dkim_selector, RSA under
# "<dkim_selector>-rsa". The keys are made on first start; the node logs both DNS records.
dkim_selector = "sealpost"
dkim_key = "keys/dkim.ed25519"
dkim_rsa_key = "keys/dkim.rsa.pem"
# The user of this node that mail to postmaster (bare or @domain) goes to; empty:
# postmaster@domain. Until that user exists, such mail is deferred (451), never refused.
postmaster = ""
identity = "keys/gateway-identity.asc"
give_up_after = {g_gua}
retry_base = {g_rb}
retry_max = {g_rm}
# Inbound sender checks: SPF, DKIM and DMARC, answered by the DNS server `dns` ("system":
# /etc/resolv.conf; or "IP" / "IP:PORT"), which also answers direct delivery's MX lookups. DMARC p=reject failures are refused (550 5.7.1),
# p=quarantine ones labelled suspicious; a DNS failure or timeout defers the mail (451).
verify = true
dns = "system"
dns_timeout = {g_dt}
verify_timeout = {g_vt}
"#,
        listen = v.listen,
        allow_private = v.listen.ip().is_loopback(),
        grace = d.shutdown_grace.get().as_secs(),
        policy = v.policy,
        max_env = l.max_envelope,
        quota = l.mailbox_quota,
        max_count = l.mailbox_max_envelopes,
        spm = l.submit_per_minute,
        sb = l.submit_burst,
        dpm = l.deliver_per_minute,
        db = l.deliver_burst,
        maxc = l.max_connections,
        apm = l.anonymous_per_minute_per_ip,
        ab = l.anonymous_burst_per_ip,
        lpm = l.lookups_per_minute_per_ip,
        lb = l.lookups_burst_per_ip,
        npm = l.new_peers_per_minute_per_ip,
        nb = l.new_peers_burst_per_ip,
        ohu = l.outbound_hops_per_user,
        obu = l.outbound_bytes_per_user,
        ohi = l.outbound_hops_per_ip,
        obi = l.outbound_bytes_per_ip,
        maxci = l.max_connections_per_ip,
        mca = l.max_connection_age.get().as_secs(),
        mrc = l.max_requests_per_connection,
        bif = l.body_bytes_in_flight,
        bifi = l.body_bytes_in_flight_per_ip,
        overhead = super::HOP_OVERHEAD_BYTES,
        ht = l.header_timeout.get().as_secs(),
        bt = l.body_timeout.get().as_secs(),
        gua = r.give_up_after.get().as_secs(),
        rb = r.retry_base.get().as_secs(),
        rm = r.retry_max.get().as_secs(),
        conc = r.concurrency,
        rt = r.request_timeout.get().as_secs(),
        ct = r.connect_timeout.get().as_secs(),
        ttl = p.descriptor_ttl.get().as_secs(),
        cache = d.storage.cache_mb,
        wb = d.storage.write_buffer_mb,
        dr = d.storage.dedupe_retention.get().as_secs(),
        g_max = d.gateway.max_message_bytes,
        g_rcpt = d.gateway.max_recipients,
        g_conn = d.gateway.max_connections,
        g_ct = d.gateway.command_timeout.get().as_secs(),
        g_st = d.gateway.session_timeout.get().as_secs(),
        g_gua = d.gateway.give_up_after.get().as_secs(),
        g_rb = d.gateway.retry_base.get().as_secs(),
        g_rm = d.gateway.retry_max.get().as_secs(),
        g_dt = d.gateway.dns_timeout.get().as_secs(),
        g_vt = d.gateway.verify_timeout.get().as_secs(),
    )
}
