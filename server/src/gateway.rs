//! The SMTP gateway inside the node (`[gateway]` in node.toml; the protocol work is in the
//! `sealpost-gateway` crate and `sealpost_proto::smtp`).
//!
//! Inbound: legacy mail for `user@DOMAIN` (a user of this node whose record lists this node)
//! is sealed to the user's certificate by the gateway's identity (`gateway@DOMAIN`, so the
//! client names the gateway that vouches for the label), labelled "not end-to-end", stored
//! durably, and only then answered `250`. Mail to `postmaster` goes to `gateway.postmaster`.
//! The envelope id is derived from the message and the recipient, so a retry after a lost
//! `250` stores one copy.
//!
//! Outbound: the gateway has its own account and identity, `gateway@DOMAIN`, with a record
//! published here. A client seals the copy for legacy recipients to it (naming them in
//! `X-Sealpost-Legacy-To`); it arrives like any envelope. A worker opens each one, accepts
//! it only when it is signed by an account of this node (never an open relay), builds and
//! DKIM-signs the RFC 5322 message (RSA and Ed25519) and hands it to the node's one durable
//! outbound queue as an SMTP job (`relay`), which sends it to the smarthost, retries
//! transient failures with the queue's backoff across restarts, and bounces permanent ones
//! (or the deadline) to the sender.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use sealpost_gateway::auth::{AuthConfig, AuthError, DnsServer, Verifier};
use sealpost_gateway::dkim::{DkimError, DkimKeys, new_rsa_pem};
use sealpost_gateway::smtp_out;
use sealpost_gateway::{Backend, Inbound, InboundConfig};

/// Entries in each of the sender checks' DNS caches (SPF/DKIM/DMARC records, addresses).
const VERIFY_CACHE_ENTRIES: usize = 10_000;
/// Threads that run the sender checks (DNS waits and signature checks), apart from the
/// node's runtime.
const VERIFY_THREADS: usize = 2;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{Keyring, SecretIdentity, cert_to_bytes};
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::{Fingerprint, KeyHandle};
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::seal::{SignatureStatus, open, seal_rfc5322};
use sealpost_proto::smtp::{DeliveryResult, SmtpConfig};
use sealpost_proto::{Address, EnvelopeId, MailboxId};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::basics::clock::now_secs;
use crate::basics::shutdown::stopped;
use crate::bounce::{BOUNCE_SUBJECT_PREFIX, postmaster_letter};
use crate::config::Config;
use crate::delivery::{DeliveryError, TryLater};
use crate::keys::{KeyError, read_secret, write_secret};
use crate::node::{Job, Node};
use crate::store::{
    Handoff, NewAccount, NewEnvelope, OutboundItem, RegisterOutcome, SmtpJob, StoreError,
};

/// Why the gateway did not start (and with it the node).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `gateway.domain` or `gateway.postmaster` makes no address.
    #[error("{setting}")]
    BadAddress {
        setting: &'static str,
        source: sealpost_proto::Error,
    },
    #[error("reading the gateway identity {}", path.display())]
    ReadIdentity {
        path: PathBuf,
        source: sealpost_proto::Error,
    },
    #[error("making the gateway identity")]
    NewIdentity(#[source] sealpost_proto::Error),
    #[error("unlocking the gateway identity")]
    Unlock(#[source] sealpost_proto::Error),
    /// Writing a freshly made gateway key (the error names the file).
    #[error("saving a new gateway key")]
    SaveKey(#[source] KeyError),
    #[error("{}: DKIM key is not text", path.display())]
    DkimNotText {
        path: PathBuf,
        source: std::string::FromUtf8Error,
    },
    #[error("making the RSA DKIM key")]
    NewRsaKey(#[source] DkimError),
    #[error("DKIM keys {} and {}", key.display(), rsa_key.display())]
    DkimKeys {
        key: PathBuf,
        rsa_key: PathBuf,
        source: DkimError,
    },
    #[error("registering the gateway account {address}")]
    Register {
        address: Address,
        source: StoreError,
    },
    #[error("registering the gateway account {address} failed: {outcome:?}")]
    Refused {
        address: Address,
        outcome: RegisterOutcome,
    },
    #[error("signing the gateway's record {address}")]
    SignRecord {
        address: Address,
        source: sealpost_proto::Error,
    },
    #[error("publishing the gateway's record {address}")]
    PublishRecord {
        address: Address,
        source: StoreError,
    },
    #[error("gateway.dns {0}")]
    Dns(String),
    #[error("setting up the sender checks")]
    Verifier(#[source] AuthError),
    #[error("binding gateway.listen {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running gateway: the SMTP address and its tasks.
pub struct Gateway {
    pub smtp_addr: SocketAddr,
    pub tasks: Vec<JoinHandle<()>>,
}

/// The gateway's own account: where outbound letters arrive.
struct Outbox {
    keyring: Arc<Keyring>,
    mailbox: MailboxId,
}

/// Loads or makes the gateway's keys, registers its account and publishes its record,
/// binds SMTP and starts the inbound server and the outbound worker.
pub async fn start(
    node: Arc<Node>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> Result<Gateway, GatewayError> {
    let g = node.config.gateway.clone();
    let bad_address = |setting| move |source| GatewayError::BadAddress { setting, source };
    let address =
        Address::parse(&format!("gateway@{}", g.domain)).map_err(bad_address("gateway.domain"))?;
    let id_path = node.config.resolve(&g.identity);
    let identity = match read_secret(&id_path) {
        Ok(bytes) => {
            SecretIdentity::from_bytes(&bytes).map_err(|source| GatewayError::ReadIdentity {
                path: id_path.clone(),
                source,
            })?
        }
        Err(_) => {
            let id = SecretIdentity::generate(&address, None).map_err(GatewayError::NewIdentity)?;
            write_secret(&id_path, id.to_armored().as_bytes()).map_err(GatewayError::SaveKey)?;
            tracing::info!(path = %id_path.display(), "made the gateway identity");
            id
        }
    };
    let keyring = Arc::new(identity.unlock(None).map_err(GatewayError::Unlock)?);
    let dkim = load_or_make_dkim(&node.config)?;
    let mailbox = register_and_publish(&node, &address, &identity, &keyring).await?;

    let postmaster = if g.postmaster.is_empty() {
        Address::parse(&format!("postmaster@{}", g.domain))
            .map_err(bad_address("gateway.domain"))?
    } else {
        Address::parse(&g.postmaster).map_err(bad_address("gateway.postmaster"))?
    };
    let listener = TcpListener::bind(g.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: g.listen,
            source,
        })?;
    let smtp_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: g.listen,
        source,
    })?;
    let verifier = if g.verify {
        let auth = AuthConfig {
            dns: DnsServer::parse(&g.dns).map_err(GatewayError::Dns)?,
            dns_timeout: g.dns_timeout.get(),
            deadline: g.verify_timeout.get(),
            cache_entries: VERIFY_CACHE_ENTRIES,
            threads: VERIFY_THREADS,
        };
        Some(Arc::new(
            Verifier::new(&auth, &g.domain).map_err(GatewayError::Verifier)?,
        ))
    } else {
        None
    };
    let cfg = Arc::new(InboundConfig {
        smtp: SmtpConfig {
            hostname: g.domain.clone(),
            max_message_bytes: g.max_message_bytes,
            max_recipients: g.max_recipients,
            ..SmtpConfig::default()
        },
        domain: g.domain.clone(),
        command_timeout: g.command_timeout.get(),
        session_timeout: g.session_timeout.get(),
        max_connections: g.max_connections,
        postmaster,
        verifier,
    });
    let backend = Arc::new(InboundBackend {
        node: node.clone(),
        gateway: address.clone(),
        keyring: keyring.clone(),
    });
    let mut inbound_stop = stop.clone();
    let mut tasks = vec![tokio::spawn(sealpost_gateway::serve(
        listener,
        cfg,
        tls,
        backend,
        async move { stopped(&mut inbound_stop).await },
    ))];
    // Outbound: to the smarthost, or (none set) to each recipient domain's MX.
    let outbox = Outbox { keyring, mailbox };
    tasks.push(tokio::spawn(outbound_worker(
        node.clone(),
        outbox,
        dkim,
        stop,
    )));
    tracing::info!(%smtp_addr, domain = %g.domain, outbound = if g.smarthost.is_empty() { "mx" } else { "smarthost" }, "gateway listening");
    Ok(Gateway { smtp_addr, tasks })
}

/// The gateway's DKIM keys, made (and saved) when missing.
fn load_or_make_dkim(config: &Config) -> Result<DkimKeys, GatewayError> {
    let g = &config.gateway;
    let path = config.resolve(&g.dkim_key);
    let seed_b64 = match read_secret(&path) {
        Ok(b) => String::from_utf8(b)
            .map_err(|source| GatewayError::DkimNotText {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_string(),
        Err(_) => {
            let seed: [u8; 32] = rand::random();
            let text = B64.encode(seed);
            write_secret(&path, format!("{text}\n").as_bytes()).map_err(GatewayError::SaveKey)?;
            text
        }
    };
    let rsa_path = config.resolve(&g.dkim_rsa_key);
    let rsa_pem = match read_secret(&rsa_path) {
        Ok(b) => String::from_utf8(b).map_err(|source| GatewayError::DkimNotText {
            path: rsa_path.clone(),
            source,
        })?,
        Err(_) => {
            let pem = new_rsa_pem().map_err(GatewayError::NewRsaKey)?;
            write_secret(&rsa_path, pem.as_bytes()).map_err(GatewayError::SaveKey)?;
            tracing::info!(path = %rsa_path.display(), "made the RSA DKIM key");
            pem
        }
    };
    let keys =
        DkimKeys::new(&g.domain, &g.dkim_selector, &seed_b64, &rsa_pem).map_err(|source| {
            GatewayError::DkimKeys {
                key: path.clone(),
                rsa_key: rsa_path.clone(),
                source,
            }
        })?;
    for (name, value) in keys.records() {
        tracing::info!(%name, txt = %value, "publish this DKIM record for outbound legacy mail");
    }
    Ok(keys)
}

/// Every DNS record the operator of `config`'s node publishes, as zone-file text: how
/// clients and nodes find the node, and for the gateway's domain MX, SPF, both DKIM keys
/// (made when missing, as the first start would) and DMARC. `sealpost-node dns-records`.
pub fn dns_records(config: &Config) -> Result<String, GatewayError> {
    let g = &config.gateway;
    let url = config.public_url.as_ref().map_or_else(
        || format!("http://{}", config.listen),
        |u| u.as_str().to_string(),
    );
    let host = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_start_matches('[')
        .to_string();
    let host_is_ip = host.parse::<std::net::IpAddr>().is_ok() || url.contains("://[");
    let mut out = String::new();
    let mut line = |l: &str| {
        out.push_str(l);
        out.push('\n');
    };
    line(&format!("; DNS records for the Sealpost node at {url}"));
    line(";");
    line("; How clients and other nodes find the node of an address's domain: they fetch");
    line("; https://DOMAIN/.well-known/sealpost/node, so the A/AAAA records of every domain whose");
    line(&format!(
        "; addresses live here must lead to this node ({url}) or to a proxy that forwards there."
    ));
    if host_is_ip {
        line("; (public_url names an IP address: set public_url to the host name you publish.)");
    }
    if !g.enabled {
        line(";");
        line("; The SMTP gateway is off ([gateway] enabled = false): no mail records to publish.");
        return Ok(out);
    }
    let d = &g.domain;
    let keys = load_or_make_dkim(config)?;
    let mx_host = if host_is_ip || host.is_empty() {
        format!("mail.{d}")
    } else {
        host.clone()
    };
    line(";");
    line(&format!(
        "; Legacy e-mail for {d} arrives at the gateway: SMTP on port 25 of {mx_host}"
    ));
    line(&format!(
        "; (gateway.listen is {}; forward port 25 to it when it is another port).",
        g.listen
    ));
    if host_is_ip || host.is_empty() {
        line(&format!(
            "; {mx_host} needs an A/AAAA record for this machine's address."
        ));
    }
    line(&format!("{d}.\tIN\tMX\t10 {mx_host}."));
    line(";");
    line("; SPF (RFC 7208): only the hosts of the MX send mail for the domain. Outbound mail");
    line("; goes through gateway.smarthost when one is set: add its addresses (ip4:/include:).");
    line(&format!("{d}.\tIN\tTXT\t\"v=spf1 mx -all\""));
    line(";");
    line(
        "; DKIM (RFC 6376, RFC 8463): outbound mail is signed twice, RSA-SHA256 and Ed25519-SHA256.",
    );
    for (name, value) in keys.records() {
        line(&format!("{name}.\tIN\tTXT\t{}", txt_strings(&value)));
    }
    line(";");
    line("; DMARC (RFC 7489): receivers refuse mail that claims the domain without an aligned");
    line("; SPF or DKIM pass, and report to the postmaster.");
    let postmaster = if g.postmaster.is_empty() {
        format!("postmaster@{d}")
    } else {
        g.postmaster.clone()
    };
    line(&format!(
        "_dmarc.{d}.\tIN\tTXT\t\"v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:{postmaster}\""
    ));
    Ok(out)
}

/// A TXT value as zone-file strings of at most 255 bytes each (RFC 1035 §3.3.14); a
/// resolver joins them into one (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
fn txt_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn register_and_publish(
    node: &Node,
    address: &Address,
    identity: &SecretIdentity,
    keyring: &Keyring,
) -> Result<MailboxId, GatewayError> {
    let cert = identity.public_cert();
    let outcome = node
        .store
        .register(NewAccount {
            fingerprint: cert.fingerprint().as_bytes().to_vec(),
            cert: cert_to_bytes(&cert),
            created: now_secs(),
            invite: None,
            addresses: vec![address.as_str().to_string()],
            rotation: None,
        })
        .await
        .map_err(|source| GatewayError::Register {
            address: address.clone(),
            source,
        })?;
    let mailbox = match outcome {
        RegisterOutcome::Created(m) | RegisterOutcome::Existing(m) => m,
        outcome => {
            return Err(GatewayError::Refused {
                address: address.clone(),
                outcome,
            });
        }
    };
    let now = now_secs();
    let record = MailboxRecord {
        address: address.clone(),
        cert: cert_to_bytes(&cert),
        homes: vec![Home {
            url: node.url.clone(),
            node_key: node.keys.node_key(),
            mailbox,
        }],
        created: now,
        expires: now + 365 * 24 * 3600,
        // Seconds keep the sequence rising across restarts; a restart within the same
        // second finds its own record stale, which is fine.
        sequence: now,
    };
    let signed =
        SignedRecord::sign(&record, keyring).map_err(|source| GatewayError::SignRecord {
            address: address.clone(),
            source,
        })?;
    let _ = node
        .store
        .put_record(
            address.to_string(),
            mailbox,
            record.sequence,
            signed.encode(),
        )
        .await
        .map_err(|source| GatewayError::PublishRecord {
            address: address.clone(),
            source,
        })?;
    node.homes.forget(&mailbox);
    Ok(mailbox)
}

/// The mailbox of a user of this node, from the record this node serves for `addr`.
async fn local_mailbox(
    node: &Node,
    addr: &Address,
) -> Result<Option<(MailboxId, Arc<crate::node::CachedAccount>)>, StoreError> {
    let Some(bytes) = node.store.record(addr.to_string()).await? else {
        return Ok(None);
    };
    let Ok(signed) = SignedRecord::decode(&bytes) else {
        return Ok(None);
    };
    let Ok(record) = MailboxRecord::decode(&signed.body) else {
        return Ok(None);
    };
    let Some(home) = record
        .homes
        .iter()
        .find(|h| h.url == node.url && h.node_key == node.keys.node_key())
    else {
        return Ok(None);
    };
    match node.account(home.mailbox).await {
        Ok(Some(acc)) => Ok(Some((home.mailbox, acc))),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    }
}

struct InboundBackend {
    node: Arc<Node>,
    /// `gateway@DOMAIN` takes no legacy mail: its mailbox is the outbound queue.
    gateway: Address,
    /// The gateway's identity: it signs what it seals, so a letter names its gateway.
    keyring: Arc<Keyring>,
}

impl Backend for InboundBackend {
    async fn is_local_user(&self, rcpt: &Address) -> Result<bool, ()> {
        if *rcpt == self.gateway {
            return Ok(false);
        }
        local_mailbox(&self.node, rcpt)
            .await
            .map(|m| m.is_some())
            .map_err(|_| ())
    }

    async fn deliver(&self, mail: Inbound) -> DeliveryResult {
        let digest = Sha256::digest(&mail.message);
        let mut ids = Vec::new();
        for rcpt in &mail.recipients {
            let (mailbox, account) = match local_mailbox(&self.node, rcpt).await {
                Ok(Some(x)) => x,
                Ok(None) => {
                    return DeliveryResult::Rejected(format!("{rcpt} is no longer a user here"));
                }
                Err(_) => return DeliveryResult::TempFail,
            };
            let keyring = self.keyring.clone();
            let cert = account.cert.clone();
            let message = mail.message.clone();
            let sealed =
                match tokio::task::spawn_blocking(move || seal_rfc5322(&message, &keyring, &cert))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return DeliveryResult::Rejected(format!("cannot seal: {e}")),
                    Err(_) => return DeliveryResult::TempFail,
                };
            // Same message, same recipient, same id: a retried transaction is stored once.
            let mut h = Sha256::new();
            h.update(b"sealpost gateway envelope id\0");
            h.update(rcpt.as_str().as_bytes());
            h.update(digest);
            let id = EnvelopeId(
                h.finalize()[..16]
                    .try_into()
                    .expect("invariant: sha256 is 32 bytes"),
            );
            let env = Envelope {
                id,
                mailbox,
                sealed,
                token: Vec::new(),
            };
            let new = NewEnvelope {
                mailbox,
                id,
                bytes: Bytes::from(env.encode()),
                received: now_secs(),
            };
            match self.node.store_envelope(new).await {
                Ok(_) => ids.push(id.to_hex()[..12].to_string()),
                Err(DeliveryError::NotOurs) => {
                    return DeliveryResult::Rejected(format!("{rcpt} has no mailbox here"));
                }
                Err(DeliveryError::TryLater(TryLater::Storage(
                    StoreError::Unavailable(_) | StoreError::Closed,
                ))) => {
                    return DeliveryResult::NoStorage;
                }
                // The mailbox is full, or the store failed otherwise.
                Err(_) => return DeliveryResult::TempFail,
            }
        }
        tracing::info!(recipients = ids.len(), "gateway stored legacy mail");
        DeliveryResult::Stored(ids.join(","))
    }
}

/// Hands every letter that arrives in the gateway's mailbox on to the outbound queue: each
/// becomes an SMTP job (the finished, DKIM-signed message), taken out of the mailbox in the
/// same durable write that queues it ([`crate::store::Store::take`]), so that a crash
/// leaves it either still in the mailbox or queued, never both and never neither. Retries,
/// backoff and the bounce are the relay's.
async fn outbound_worker(
    node: Arc<Node>,
    outbox: Outbox,
    dkim: DkimKeys,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let items = match node.store.list(outbox.mailbox, 0, 100).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "gateway outbox unreadable");
                continue;
            }
        };
        for item in items {
            hand_on(&node, &outbox, &dkim, item.seq).await;
        }
    }
}

/// Turns the letter at `seq` into a queued SMTP job, a bounce, or nothing.
async fn hand_on(node: &Arc<Node>, outbox: &Outbox, dkim: &DkimKeys, seq: u64) {
    let (handoff, jobs) = match prepare(node, outbox, dkim, seq).await {
        Ok(jobs) => (
            Handoff::Enqueue(jobs.clone()),
            jobs.into_iter()
                .map(|(item, wire)| Job {
                    item,
                    payload: Some(wire),
                })
                .collect(),
        ),
        Err(Failure::Later(why)) => {
            tracing::warn!(reason = %why, "gateway outbox: trying this letter again later");
            return;
        }
        Err(Failure::Drop(why)) => {
            tracing::warn!(reason = %why, "gateway dropped an outbound letter it cannot accept");
            (Handoff::Drop, Vec::new())
        }
        Err(Failure::Permanent { sender, why }) => match bounce_letter(node, sender, &why).await {
            Ok(env) => (Handoff::Bounce(env), Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, reason = %why, "could not seal a gateway bounce; dropping the letter without one");
                (Handoff::Drop, Vec::new())
            }
        },
    };
    match node.store.take(outbox.mailbox, seq, handoff).await {
        Ok(true) => {
            for job in jobs {
                node.outbound_usage.add(&job.item);
                node.metrics
                    .outbound_queue
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                node.schedule(job);
            }
        }
        // Taken before (another pass of this worker saw it first).
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not hand an outbound letter on; it is tried again")
        }
    }
}

enum Failure {
    /// The store could not be read: the letter stays and is tried again.
    Later(String),
    /// Not a letter the gateway may send (not from a user of this node, undecryptable).
    Drop(String),
    /// From a user of this node, but not sendable: bounced.
    Permanent { sender: MailboxId, why: String },
}

/// Longest Message-ID kept in a queue entry.
const MAX_MESSAGE_ID: usize = 256;

/// Opens the letter at `seq`, checks it, builds and signs the message: the SMTP jobs (one
/// for the smarthost, or one per recipient domain for direct delivery) and their payload.
/// Job ids follow from the envelope's, so the same letter makes the same jobs.
async fn prepare(
    node: &Arc<Node>,
    outbox: &Outbox,
    dkim: &DkimKeys,
    seq: u64,
) -> Result<Vec<(OutboundItem, Bytes)>, Failure> {
    let bytes = match node.store.envelope(outbox.mailbox, seq).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Failure::Drop("gone from the outbox".into())),
        Err(e) => return Err(Failure::Later(format!("unreadable: {e}"))),
    };
    let env = Envelope::decode(&bytes).map_err(|e| Failure::Drop(e.to_string()))?;
    let envelope_id = env.id;
    let (letter, sender) = open_from_local_user(node, outbox, env.sealed).await?;
    if letter.legacy_to.is_empty() {
        return Err(Failure::Permanent {
            sender,
            why: "the letter names no legacy recipient (X-Sealpost-Legacy-To)".into(),
        });
    }
    // The headers keep every recipient the sender wrote; the SMTP envelope names only the
    // legacy ones (the others got their own end-to-end copies).
    let msg =
        Bytes::from(
            smtp_out::build(&letter, Some(dkim)).map_err(|e| Failure::Permanent {
                sender,
                why: e.to_string(),
            })?,
        );
    let rcpts: Vec<String> = letter
        .legacy_to
        .iter()
        .map(|a| a.as_str().to_string())
        .collect();
    let groups: Vec<Vec<String>> = if node.config.gateway.smarthost.is_empty() {
        let mut by_domain: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (r, a) in rcpts.iter().zip(&letter.legacy_to) {
            by_domain
                .entry(a.domain().to_ascii_lowercase())
                .or_default()
                .push(r.clone());
        }
        by_domain.into_values().collect()
    } else {
        vec![rcpts]
    };
    let message_id: String = letter
        .message_id
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_ID)
        .collect();
    let now = crate::basics::clock::now_ms();
    let jobs = groups
        .into_iter()
        .enumerate()
        .map(|(n, rcpts)| {
            let mut h = Sha256::new();
            h.update(b"sealpost gateway smtp job\0");
            h.update(envelope_id.0);
            h.update((n as u64).to_be_bytes());
            let id: [u8; 16] = h.finalize()[..16]
                .try_into()
                .expect("invariant: sha256 is 32 bytes");
            let item = OutboundItem {
                id,
                destination: node.url.clone(),
                sender,
                submitted_ms: now,
                attempts: 0,
                next_attempt_ms: now,
                size: msg.len() as u64,
                last_error: String::new(),
                smtp: Some(SmtpJob {
                    from: letter.from.as_str().to_string(),
                    rcpts,
                    message_id: message_id.clone(),
                    failed: Vec::new(),
                }),
                forward: None,
            };
            (item, msg.clone())
        })
        .collect();
    Ok(jobs)
}

/// Opens an outbound letter and checks that a user of this node signed it.
async fn open_from_local_user(
    node: &Arc<Node>,
    outbox: &Outbox,
    sealed: Vec<u8>,
) -> Result<(Letter, MailboxId), Failure> {
    let keyring = outbox.keyring.clone();
    let first = {
        let (k, s) = (keyring.clone(), sealed.clone());
        tokio::task::spawn_blocking(move || open(&s, &k, &|_| None))
            .await
            .map_err(|e| Failure::Drop(e.to_string()))?
    }
    .map_err(|e| Failure::Drop(format!("cannot open: {e}")))?;
    let SignatureStatus::UnknownSigner { issuer } = first.signature else {
        return Err(Failure::Drop("not signed".into()));
    };
    let fp = hex::decode(&issuer)
        .ok()
        .filter(|b| b.len() == 20)
        .ok_or_else(|| Failure::Drop("signer is not named by fingerprint".into()))?;
    let mailbox = match node.store.mailbox_of(fp).await {
        Ok(Some(m)) => m,
        _ => {
            return Err(Failure::Drop(
                "signed by someone without an account here (no open relay)".into(),
            ));
        }
    };
    let account = match node.account(mailbox).await {
        Ok(Some(a)) => a,
        _ => return Err(Failure::Drop("sender account vanished".into())),
    };
    let cert = account.cert.clone();
    let fpr: Fingerprint = cert.fingerprint();
    let opened = tokio::task::spawn_blocking(move || {
        let lookup = |h: &KeyHandle| {
            cert.keys()
                .any(|k| k.key().key_handle().aliases(h))
                .then(|| cert.clone())
        };
        open(&sealed, &keyring, &lookup)
    })
    .await
    .map_err(|e| Failure::Drop(e.to_string()))?
    .map_err(|e| Failure::Drop(format!("cannot open: {e}")))?;
    match opened.signature {
        SignatureStatus::Good { signer } if signer == fpr => Ok((opened.letter, mailbox)),
        other => Err(Failure::Permanent {
            sender: mailbox,
            why: format!("the letter's signature does not match its From ({other:?})"),
        }),
    }
}

/// A letter from postmaster to the sender: why their legacy mail was not sent.
async fn bounce_letter(
    node: &Arc<Node>,
    sender: MailboxId,
    why: &str,
) -> Result<NewEnvelope, crate::bounce::BounceError> {
    let body = format!(
        "Your message to legacy e-mail could not be delivered by the gateway {}.\r\n\r\nReason: {why}\r\n",
        node.config.gateway.domain
    );
    let subject = format!("{BOUNCE_SUBJECT_PREFIX}legacy mail");
    postmaster_letter(node, sender, subject, body).await
}
