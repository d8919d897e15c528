//! Who sent an inbound legacy message: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489)
//! with mail-auth over a real DNS resolver (hickory), and what the gateway does about it.
//!
//! The checks run on a small runtime of their own ([`Verifier`]), so that DNS waits and
//! RSA/SHA work on a large message never hold a thread of the SMTP server's runtime. The
//! parsed SPF, DKIM key and DMARC records (and the addresses SPF asks for) are kept in
//! bounded caches for their DNS TTL, at most [`MAX_CACHE_TTL`].
//!
//! The outcome ([`Verdict`]) decides the answer at end of data ([`Verdict::action`]): a
//! DMARC `p=reject` failure is refused (550 5.7.1), a DNS failure or timeout is deferred
//! (451 4.4.3), a `p=quarantine` failure is taken and labelled suspicious, everything else
//! is taken. It is written into the label and an `Authentication-Results` header (RFC 8601).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, Error as MailAuthError, MX,
    MessageAuthenticator, Parameters, ResolverCache, SpfResult, Txt,
};

use crate::label::Arrival;

/// Most DKIM signatures of one message that are checked (each costs a DNS lookup); a
/// message with more gets `dkim=permerror` and is judged by SPF alone.
pub const MAX_DKIM_SIGNATURES: usize = 8;
/// Longest time a DNS answer is kept in the gateway's caches, whatever its TTL.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Which DNS server answers the gateway's questions (`gateway.dns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsServer {
    /// The system's (`/etc/resolv.conf`).
    System,
    /// This one, over UDP and TCP.
    At(SocketAddr),
}

impl DnsServer {
    /// `""` or `"system"`: the system's; `"IP"` (port 53) or `"IP:PORT"`.
    pub fn parse(s: &str) -> Result<DnsServer, String> {
        let s = s.trim();
        if s.is_empty() || s == "system" {
            return Ok(DnsServer::System);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(DnsServer::At(SocketAddr::new(ip, 53)));
        }
        s.parse::<SocketAddr>()
            .map(DnsServer::At)
            .map_err(|_| format!("{s:?}: expected \"system\", an IP address or IP:PORT"))
    }
}

/// Settings of the checks.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub dns: DnsServer,
    /// Longest wait for one DNS answer (each query is tried twice).
    pub dns_timeout: Duration,
    /// Longest time all checks of one message may take; longer is a temporary failure.
    pub deadline: Duration,
    /// Entries per cache (TXT records; addresses and MX for SPF).
    pub cache_entries: usize,
    /// Threads of the verification runtime.
    pub threads: usize,
}

/// Why the checks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the system's DNS configuration: {0}")]
    SystemConf(String),
    #[error("starting the verification runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// A resolver for the gateway's DNS questions, at `dns` (shared by the SPF/DKIM/DMARC
/// checks; MX lookups may use one made the same way).
pub fn authenticator(
    dns: &DnsServer,
    timeout: Duration,
) -> Result<MessageAuthenticator, AuthError> {
    let (config, mut opts) = match dns {
        DnsServer::System => {
            read_system_conf().map_err(|e| AuthError::SystemConf(e.to_string()))?
        }
        DnsServer::At(addr) => (
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            ResolverOpts::default(),
        ),
    };
    opts.timeout = timeout;
    opts.attempts = 2;
    MessageAuthenticator::new(config, opts).map_err(|e| AuthError::SystemConf(e.to_string()))
}

/// The outcome of one check, as RFC 8601 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        })
    }
}

/// One DKIM signature's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimCheck {
    pub outcome: Outcome,
    /// `d=` and `s=` of the signature (empty when it did not parse).
    pub domain: String,
    pub selector: String,
    /// Why it did not pass (for the label), empty when it did.
    pub reason: String,
}

/// The DMARC result for the `From` domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcCheck {
    pub outcome: Outcome,
    /// The RFC 5322 From domain (empty: none, or several domains, which DMARC exempts).
    pub domain: String,
    /// The policy that applies (`None` also when there is no record).
    pub policy: Policy,
    /// Whether an aligned DKIM signature passed (the From address is proven by DKIM).
    pub dkim_aligned: bool,
}

/// All checks of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub spf: Outcome,
    /// The domain SPF was checked for (MAIL FROM's, or HELO's for `<>`).
    pub spf_domain: String,
    pub dkim: Vec<DkimCheck>,
    pub dmarc: DmarcCheck,
    /// Set when the checks as a whole could not finish (deadline, DNS failure).
    pub temp_failure: Option<String>,
}

/// What the gateway does with a message, by its [`Verdict`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// Taken, and labelled suspicious (DMARC `p=quarantine`).
    Quarantine,
    /// Refused at end of data: 550 5.7.1 with this reason.
    Reject(String),
    /// Deferred: 451 4.4.3 with this reason.
    TempFail(String),
}

impl Verdict {
    /// What a DMARC policy and the DNS say to do. A DNS error in any check defers the
    /// message: the sender's server tries again later, when the answer may be there.
    pub fn action(&self) -> Action {
        if let Some(why) = &self.temp_failure {
            return Action::TempFail(why.clone());
        }
        let temp = [self.spf, self.dmarc.outcome]
            .into_iter()
            .chain(self.dkim.iter().map(|d| d.outcome))
            .any(|o| o == Outcome::TempError);
        if temp {
            return Action::TempFail("DNS lookup failed".into());
        }
        if self.dmarc.outcome == Outcome::Fail {
            match self.dmarc.policy {
                Policy::Reject => {
                    return Action::Reject(format!(
                        "fails the DMARC policy of {} (p=reject)",
                        self.dmarc.domain
                    ));
                }
                Policy::Quarantine => return Action::Quarantine,
                Policy::None | Policy::Unspecified => {}
            }
        }
        Action::Accept
    }

    /// The verdicts for the legacy label: `spf=…; dkim=…; dmarc=…`, and for a DMARC pass
    /// with an aligned DKIM signature `from-verified=dkim:DOMAIN`, which clients show.
    pub fn label_part(&self) -> String {
        let spf = format!("spf={} ({})", self.spf, or_dash(&self.spf_domain));
        let dkim = if self.dkim.is_empty() {
            "dkim=none".to_string()
        } else {
            let each: Vec<String> = self
                .dkim
                .iter()
                .map(|d| {
                    if d.reason.is_empty() {
                        format!("{} ({})", d.outcome, or_dash(&d.domain))
                    } else {
                        format!("{} ({}: {})", d.outcome, or_dash(&d.domain), d.reason)
                    }
                })
                .collect();
            format!("dkim={}", each.join(", "))
        };
        let dmarc = format!(
            "dmarc={} ({}, p={})",
            self.dmarc.outcome,
            or_dash(&self.dmarc.domain),
            self.dmarc.policy
        );
        let mut out = format!("{spf}; {dkim}; {dmarc}");
        if self.dmarc.outcome == Outcome::Pass && self.dmarc.dkim_aligned {
            out.push_str(&format!("; from-verified=dkim:{}", self.dmarc.domain));
        }
        if self.action() == Action::Quarantine {
            out.push_str(&format!(
                "; SUSPICIOUS: fails the DMARC policy of {} (p=quarantine)",
                self.dmarc.domain
            ));
        }
        out
    }

    /// The value of an `Authentication-Results` header (RFC 8601) for `authserv_id`.
    pub fn authentication_results(&self, authserv_id: &str, arrival: &Arrival) -> String {
        let mailfrom = if arrival.mail_from.is_empty() {
            format!("smtp.helo={}", clean(&arrival.helo))
        } else {
            format!("smtp.mailfrom={}", clean(&arrival.mail_from))
        };
        let mut parts = vec![format!("spf={} {mailfrom}", self.spf)];
        if self.dkim.is_empty() {
            parts.push("dkim=none".into());
        }
        for d in &self.dkim {
            parts.push(format!(
                "dkim={} header.d={} header.s={}",
                d.outcome,
                or_dash(&d.domain),
                or_dash(&d.selector)
            ));
        }
        parts.push(format!(
            "dmarc={} header.from={} policy.dmarc={}",
            self.dmarc.outcome,
            or_dash(&self.dmarc.domain),
            self.dmarc.policy
        ));
        format!("{authserv_id};\r\n\t{}", parts.join(";\r\n\t"))
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Keeps only characters that are safe in a header value, at most 200.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}

/// Runs the checks. Cheap to share (`Arc`); its runtime stops when it is dropped.
pub struct Verifier {
    auth: MessageAuthenticator,
    caches: Arc<Caches>,
    host_domain: String,
    deadline: Duration,
    runtime: Runtime,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("host_domain", &self.host_domain)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for the gateway of `host_domain`.
    pub fn new(cfg: &AuthConfig, host_domain: &str) -> Result<Verifier, AuthError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads.max(1))
            .thread_name("sealpost-verify")
            .enable_all()
            .build()?;
        let auth = authenticator(&cfg.dns, cfg.dns_timeout)?;
        Ok(Verifier {
            auth,
            caches: Arc::new(Caches::new(cfg.cache_entries)),
            host_domain: host_domain.to_string(),
            deadline: cfg.deadline,
            runtime: Runtime(Some(rt)),
        })
    }

    /// Checks `message` as it arrived in the transaction `arrival`.
    pub async fn check(&self, arrival: &Arrival, message: Arc<Vec<u8>>) -> Verdict {
        let (auth, caches) = (self.auth.clone(), self.caches.clone());
        let (arrival, host) = (arrival.clone(), self.host_domain.clone());
        let deadline = self.deadline;
        let task = self.runtime.handle().spawn(async move {
            tokio::time::timeout(deadline, verify(&auth, &caches, &arrival, &host, &message)).await
        });
        match task.await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => Verdict::unfinished("sender checks timed out"),
            Err(e) => {
                tracing::error!(error = %e, "sender checks failed");
                Verdict::unfinished("sender checks failed")
            }
        }
    }
}

impl Verdict {
    fn unfinished(why: &str) -> Verdict {
        Verdict {
            spf: Outcome::TempError,
            spf_domain: String::new(),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                outcome: Outcome::TempError,
                domain: String::new(),
                policy: Policy::None,
                dkim_aligned: false,
            },
            temp_failure: Some(why.to_string()),
        }
    }
}

/// A runtime that may be dropped inside another runtime (as the node's shutdown does).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("invariant: the runtime is taken only on drop")
            .handle()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn verify(
    auth: &MessageAuthenticator,
    caches: &Caches,
    arrival: &Arrival,
    host: &str,
    raw: &[u8],
) -> Verdict {
    let helo = arrival.helo.as_str();
    let spf_params = if arrival.mail_from.is_empty() {
        SpfParameters::verify_ehlo(arrival.client_ip, helo, host)
    } else {
        SpfParameters::verify_mail_from(arrival.client_ip, helo, host, &arrival.mail_from)
    };
    let spf = auth.verify_spf(caches.params(spf_params)).await;
    let Some(message) = AuthenticatedMessage::parse(raw) else {
        // Not a message at all: labelled() refuses it with 554.
        return Verdict {
            spf: spf_outcome(spf.result()),
            spf_domain: spf.domain().to_string(),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                outcome: Outcome::None,
                domain: String::new(),
                policy: Policy::None,
                dkim_aligned: false,
            },
            temp_failure: None,
        };
    };
    let too_many = message.dkim_headers.len() > MAX_DKIM_SIGNATURES;
    let dkim = if too_many {
        Vec::new()
    } else {
        auth.verify_dkim(caches.params(&message)).await
    };
    let mail_from_domain = arrival.mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
    let dmarc = auth
        .verify_dmarc(
            caches.params(
                DmarcParameters::new(&message, &dkim, mail_from_domain, &spf)
                    .with_domain_suffix_fn(organizational_domain),
            ),
        )
        .await;
    let mut dkim_checks: Vec<DkimCheck> = dkim
        .iter()
        .map(|d| {
            let (outcome, reason) = dkim_outcome(d.result());
            let sig = d.signature();
            DkimCheck {
                outcome,
                domain: sig.map(|s| clean(&s.d)).unwrap_or_default(),
                selector: sig.map(|s| clean(&s.s)).unwrap_or_default(),
                reason,
            }
        })
        .collect();
    if too_many {
        dkim_checks.push(DkimCheck {
            outcome: Outcome::PermError,
            domain: String::new(),
            selector: String::new(),
            reason: format!("more than {MAX_DKIM_SIGNATURES} signatures, none checked"),
        });
    }
    let dkim_aligned = *dmarc.dkim_result() == DmarcResult::Pass;
    let spf_aligned = *dmarc.spf_result() == DmarcResult::Pass;
    let temp = matches!(dmarc.dkim_result(), DmarcResult::TempError(_))
        || matches!(dmarc.spf_result(), DmarcResult::TempError(_));
    let outcome = if temp {
        Outcome::TempError
    } else if dkim_aligned || spf_aligned {
        Outcome::Pass
    } else if dmarc.dmarc_record().is_some() {
        Outcome::Fail
    } else if matches!(dmarc.dkim_result(), DmarcResult::PermError(_)) {
        Outcome::PermError
    } else {
        Outcome::None
    };
    let policy = match dmarc.dmarc_record() {
        // RFC 7489 §6.6.4: a message not sampled by pct= gets the next policy down; the
        // gateway samples nothing, so a partial reject is applied as quarantine.
        Some(r) if dmarc.policy() == Policy::Reject && r.pct < 100 => Policy::Quarantine,
        Some(_) => dmarc.policy(),
        None => Policy::None,
    };
    Verdict {
        spf: spf_outcome(spf.result()),
        spf_domain: clean(spf.domain()),
        dkim: dkim_checks,
        dmarc: DmarcCheck {
            outcome,
            domain: clean(dmarc.domain()),
            policy,
            dkim_aligned,
        },
        temp_failure: None,
    }
}

/// The organizational domain for relaxed alignment, approximated as the last two labels
/// (no public-suffix list: `a.example.co.uk` and `b.example.co.uk` count as aligned).
fn organizational_domain(domain: &str) -> &str {
    let d = domain.trim_end_matches('.');
    match d.rmatch_indices('.').nth(1) {
        Some((i, _)) => &d[i + 1..],
        None => d,
    }
}

fn spf_outcome(r: SpfResult) -> Outcome {
    match r {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(r: &DkimResult) -> (Outcome, String) {
    match r {
        DkimResult::Pass => (Outcome::Pass, String::new()),
        // mail-auth says neutral for a body that does not match its hash; RFC 6376 §6.3
        // makes that a failure of the signature.
        DkimResult::Neutral(MailAuthError::FailedBodyHashMatch) => {
            (Outcome::Fail, "body hash does not match".into())
        }
        DkimResult::Neutral(e) => (Outcome::Neutral, reason(e)),
        DkimResult::Fail(e) => (Outcome::Fail, reason(e)),
        DkimResult::PermError(e) => (Outcome::PermError, reason(e)),
        DkimResult::TempError(e) => (Outcome::TempError, reason(e)),
        DkimResult::None => (Outcome::None, String::new()),
    }
}

fn reason(e: &MailAuthError) -> String {
    let text = match e {
        MailAuthError::DnsRecordNotFound(_) => "no key published".to_string(),
        MailAuthError::DnsError(_) => "DNS lookup failed".to_string(),
        other => other.to_string(),
    };
    text.chars()
        .filter(|c| !c.is_control() && *c != ';')
        .take(120)
        .collect()
}

/// A bounded map whose entries expire: when full, expired entries go first, then the one
/// that expires soonest.
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves at worst a stale entry, which expires.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.lock();
        match map.get(name) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let now = Instant::now();
        let until = valid_until.min(now + MAX_CACHE_TTL);
        if until <= now {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= self.capacity {
                let soonest = map
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, (value, until));
    }
}

/// The caches mail-auth consults before asking the DNS.
struct Caches {
    txt: TtlCache<String, Txt>,
    mx: TtlCache<String, Arc<Vec<MX>>>,
    ipv4: TtlCache<String, Arc<Vec<Ipv4Addr>>>,
    ipv6: TtlCache<String, Arc<Vec<Ipv6Addr>>>,
    ptr: TtlCache<IpAddr, Arc<Vec<String>>>,
}

type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<String, Txt>,
    TtlCache<String, Arc<Vec<MX>>>,
    TtlCache<String, Arc<Vec<Ipv4Addr>>>,
    TtlCache<String, Arc<Vec<Ipv6Addr>>>,
    TtlCache<IpAddr, Arc<Vec<String>>>,
>;

impl Caches {
    fn new(entries: usize) -> Caches {
        Caches {
            txt: TtlCache::new(entries),
            mx: TtlCache::new(entries),
            ipv4: TtlCache::new(entries),
            ipv6: TtlCache::new(entries),
            ptr: TtlCache::new(entries),
        }
    }

    fn params<'x, P>(&'x self, p: P) -> Cached<'x, P> {
        Parameters::new(p)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_server_setting() {
        assert_eq!(DnsServer::parse("").unwrap(), DnsServer::System);
        assert_eq!(DnsServer::parse("system").unwrap(), DnsServer::System);
        assert_eq!(
            DnsServer::parse("127.0.0.1").unwrap(),
            DnsServer::At("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            DnsServer::parse("127.0.0.1:5353").unwrap(),
            DnsServer::At("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            DnsServer::parse("[::1]:5353").unwrap(),
            DnsServer::At("[::1]:5353".parse().unwrap())
        );
        assert!(DnsServer::parse("dns.example").is_err());
    }

    #[test]
    fn the_cache_is_bounded_and_entries_expire() {
        let c: TtlCache<String, u32> = TtlCache::new(3);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..10u32 {
            c.insert(
                format!("k{i}"),
                i,
                later + Duration::from_secs(u64::from(i)),
            );
            assert!(c.len() <= 3);
        }
        // The newest stay; the soonest to expire went first.
        assert_eq!(c.get("k9"), Some(9));
        assert_eq!(c.get("k0"), None);
        // Already expired answers are not kept; a TTL beyond the cap is cut to it.
        c.insert("old".into(), 1, Instant::now());
        assert_eq!(c.get("old"), None);
        c.insert(
            "far".into(),
            2,
            Instant::now() + Duration::from_secs(86_400 * 30),
        );
        assert_eq!(c.get("far"), Some(2));
        let until = c.lock()["far"].1;
        assert!(until <= Instant::now() + MAX_CACHE_TTL);
    }

    #[test]
    fn organizational_domain_is_the_last_two_labels() {
        assert_eq!(organizational_domain("mail.legacy.test"), "legacy.test");
        assert_eq!(organizational_domain("legacy.test"), "legacy.test");
        assert_eq!(organizational_domain("a.b.legacy.test."), "legacy.test");
        assert_eq!(organizational_domain("test"), "test");
    }

    fn verdict(dmarc: Outcome, policy: Policy) -> Verdict {
        Verdict {
            spf: Outcome::Fail,
            spf_domain: "legacy.test".into(),
            dkim: vec![DkimCheck {
                outcome: Outcome::Fail,
                domain: "legacy.test".into(),
                selector: "s1".into(),
                reason: "body hash does not match".into(),
            }],
            dmarc: DmarcCheck {
                outcome: dmarc,
                domain: "legacy.test".into(),
                policy,
                dkim_aligned: false,
            },
            temp_failure: None,
        }
    }

    #[test]
    fn policies_decide_the_action() {
        assert!(matches!(
            verdict(Outcome::Fail, Policy::Reject).action(),
            Action::Reject(w) if w.contains("legacy.test")
        ));
        assert_eq!(
            verdict(Outcome::Fail, Policy::Quarantine).action(),
            Action::Quarantine
        );
        assert_eq!(
            verdict(Outcome::Fail, Policy::None).action(),
            Action::Accept
        );
        assert_eq!(
            verdict(Outcome::Pass, Policy::Reject).action(),
            Action::Accept
        );
        let mut v = verdict(Outcome::Pass, Policy::Reject);
        v.dkim[0].outcome = Outcome::TempError;
        assert!(matches!(v.action(), Action::TempFail(_)));
        assert!(matches!(
            Verdict::unfinished("x").action(),
            Action::TempFail(w) if w == "x"
        ));
        let label = verdict(Outcome::Fail, Policy::Quarantine).label_part();
        assert!(label.contains("SUSPICIOUS"), "{label}");
        assert!(!label.contains("from-verified"), "{label}");
        let mut ok = verdict(Outcome::Pass, Policy::Reject);
        ok.dmarc.dkim_aligned = true;
        assert!(ok.label_part().contains("from-verified=dkim:legacy.test"));
    }
}
