//! DNS for legacy routing: whether a domain with no Sealpost node takes e-mail (MX), so that
//! a mistyped domain is an error and never a plaintext letter; and, when the user names a
//! DNS server (`--dns-server`, profile `dns.server`), the host lookups of the HTTP client
//! too, so that one server answers every question of a run.
//!
//! The resolver is hickory's, over UDP/TCP only (no DNS-over-TLS: no second TLS stack),
//! configured from `/etc/resolv.conf` unless a server is named. Its answers are told apart
//! precisely: `NXDOMAIN` (no such domain), an answer without MX (no mail), RFC 7505's null
//! MX (no mail), MX hosts (mail), and everything else (a timeout, `SERVFAIL`, `REFUSED`):
//! a temporary failure that decides nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, ResolveErrorKind, TokioResolver};

use crate::error::{Error, Result, one_line};

/// Longest a single DNS question may take (each of two attempts).
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most contact domains named in a "did you mean" hint.
pub const MAX_SUGGESTIONS: usize = 3;

/// What DNS says about a domain's mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailDomain {
    /// It has mail servers (MX hosts, best first).
    Accepts(Vec<String>),
    /// `NXDOMAIN`: the name does not exist.
    NoSuchDomain,
    /// The name exists but publishes no MX record.
    NoMx,
    /// RFC 7505 null MX: it says it takes no mail.
    NullMx,
}

/// The run's resolver. Built lazily in effect: a system configuration that cannot be read
/// is reported when DNS is first needed, not when the profile is opened.
#[derive(Clone)]
pub struct Dns {
    resolver: std::result::Result<Arc<TokioResolver>, String>,
    /// Whether the user named the server (then HTTP host lookups use it as well).
    explicit: bool,
}

impl Dns {
    /// Asks `server` (UDP, then TCP), or the servers of `/etc/resolv.conf`.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Dns {
        let built = match server {
            Some(addr) => {
                let mut config = ResolverConfig::new();
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
                Ok(TokioResolver::builder_with_config(
                    config,
                    TokioConnectionProvider::default(),
                ))
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("reading the system's DNS configuration: {e}")),
        };
        let resolver = built.map(|mut b| {
            let opts = b.options_mut();
            opts.timeout = timeout.min(MAX_QUERY_TIMEOUT);
            opts.attempts = 2;
            // The answer for a domain given in full, never DOMAIN.search-suffix.
            opts.ndots = 0;
            Arc::new(b.build())
        });
        Dns {
            resolver,
            explicit: server.is_some(),
        }
    }

    fn resolver(&self) -> Result<&Arc<TokioResolver>> {
        self.resolver.as_ref().map_err(|reason| Error::DnsSetup {
            reason: reason.clone(),
        })
    }

    /// The resolver for the HTTP client's host lookups, when the user named a server.
    pub(crate) fn for_http(&self) -> Option<Arc<HttpResolver>> {
        match (&self.resolver, self.explicit) {
            (Ok(r), true) => Some(Arc::new(HttpResolver(r.clone()))),
            _ => None,
        }
    }

    /// Whether `domain` takes e-mail. `Err` is a temporary failure ([`Error::DnsFailure`]).
    pub async fn mail_domain(&self, domain: &str) -> Result<MailDomain> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver()?.mx_lookup(fqdn.as_str()).await {
            Ok(mx) => {
                let mut hosts: Vec<(u16, String)> = mx
                    .iter()
                    .map(|m| (m.preference(), m.exchange().to_ascii()))
                    .collect();
                hosts.sort();
                // RFC 7505: a single MX of preference 0 naming the root.
                if hosts.len() == 1 && hosts[0].1 == "." {
                    return Ok(MailDomain::NullMx);
                }
                hosts.retain(|(_, h)| h != ".");
                if hosts.is_empty() {
                    return Ok(MailDomain::NoMx);
                }
                Ok(MailDomain::Accepts(
                    hosts.into_iter().map(|(_, h)| h).collect(),
                ))
            }
            Err(e) => match negative(&e) {
                Some(ResponseCode::NXDomain) => Ok(MailDomain::NoSuchDomain),
                Some(ResponseCode::NoError) => Ok(MailDomain::NoMx),
                _ => Err(Error::DnsFailure {
                    domain: domain.to_string(),
                    reason: one_line(&e.to_string()),
                }),
            },
        }
    }
}

/// The response code of a definite negative answer (`NXDOMAIN`, or `NOERROR` without
/// records); `None` for a failure to get an answer.
fn negative(e: &ResolveError) -> Option<ResponseCode> {
    let ResolveErrorKind::Proto(p) = e.kind() else {
        return None;
    };
    match p.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. }
            if matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Some(*response_code)
        }
        _ => None,
    }
}

/// Whether a resolver error is a definite "no such name" (for the HTTP client's lookups).
pub(crate) fn is_no_such_name(e: &ResolveError) -> bool {
    negative(e).is_some()
}

/// hickory as reqwest's resolver.
pub(crate) struct HttpResolver(Arc<TokioResolver>);

impl reqwest::dns::Resolve for HttpResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let fqdn = format!("{}.", name.as_str().trim_end_matches('.'));
            let ips = resolver.lookup_ip(fqdn.as_str()).await?;
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The domains among `known` closest to `domain` (a typo of one of them, by edit distance
/// with transpositions): those at the smallest distance found, at most
/// [`MAX_SUGGESTIONS`], in name order.
pub fn suggest<'a>(domain: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let domain = domain.to_ascii_lowercase();
    // One edit in a short name, up to three in a long one.
    let limit = (domain.chars().count() / 4).clamp(1, 3);
    let mut hits: Vec<(usize, String)> = Vec::new();
    for k in known {
        let k = k.to_ascii_lowercase();
        if k == domain || hits.iter().any(|(_, h)| *h == k) {
            continue;
        }
        let d = distance(&domain, &k);
        if d <= limit {
            hits.push((d, k));
        }
    }
    hits.sort();
    // Only the closest: "beta.test" for "beta.tset", not also everything two edits away.
    let best = hits.first().map_or(0, |(d, _)| *d);
    hits.into_iter()
        .take_while(|(d, _)| *d == best)
        .take(MAX_SUGGESTIONS)
        .map(|(_, k)| k)
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbours each cost one ("tset" is one edit from "test").
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert_eq!(distance("beta.tset", "beta.test"), 1);
        assert_eq!(distance("beta.test", "beta.test"), 0);
        assert_eq!(distance("bta.test", "beta.test"), 1);
        assert_eq!(distance("gamma.test", "beta.test"), 4);
        assert_eq!(distance("", "ab"), 2);
    }

    #[test]
    fn suggestions_are_the_nearest_few_known_domains() {
        let known = [
            "beta.test",
            "alpha.test",
            "beta.test",
            "bets.test",
            "meta.test",
            "zeta.test",
            "example.org",
        ];
        assert_eq!(
            suggest("beta.tset", known),
            vec!["beta.test".to_string()],
            "one swap away; the others are further"
        );
        let three = suggest("xeta.test", known);
        assert_eq!(three.len(), MAX_SUGGESTIONS, "{three:?}");
        assert!(three.contains(&"beta.test".to_string()));
        assert!(suggest("completely-else.example", known).is_empty());
        assert!(
            suggest("beta.test", known).iter().all(|s| s != "beta.test"),
            "never the domain itself"
        );
    }
}
