//! Where a domain's mail goes (RFC 5321 §5.1): its MX hosts by preference, or, when it
//! publishes no MX, the domain itself as an implicit MX (its A/AAAA records); RFC 7505's
//! null MX and `NXDOMAIN` mean "no mail", for good. The resolver is hickory's over UDP/TCP,
//! asking the configured server (`gateway.dns`) or those of `/etc/resolv.conf`. A timeout,
//! `SERVFAIL` or `REFUSED` decides nothing: a temporary failure.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, ResolveErrorKind, TokioResolver};

/// Longest a single DNS question may take (each of two attempts).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most MX hosts tried for one domain, and addresses per host.
pub const MAX_MX_HOSTS: usize = 10;
pub const MAX_ADDRS: usize = 10;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The domain does not exist, or says it takes no mail (null MX): bounce.
    #[error("{domain} accepts no mail: {why}")]
    NoMail { domain: String, why: String },
    /// No answer that decides: try again later.
    #[error("DNS lookup for {name} failed: {why}")]
    Temporary { name: String, why: String },
    /// The resolver cannot be set up (unreadable system configuration).
    #[error("no DNS resolver: {0}")]
    NoResolver(String),
}

impl RouteError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, RouteError::NoMail { .. })
    }
}

/// The gateway's resolver.
pub struct Resolver {
    inner: Result<TokioResolver, String>,
}

impl Resolver {
    /// Asks `server` (UDP, then TCP), or the servers of `/etc/resolv.conf` when `None`.
    pub fn new(server: Option<SocketAddr>) -> Resolver {
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
        let inner = built.map(|mut b| {
            let opts = b.options_mut();
            opts.timeout = QUERY_TIMEOUT;
            opts.attempts = 2;
            opts.ndots = 0;
            b.build()
        });
        Resolver { inner }
    }

    fn resolver(&self) -> Result<&TokioResolver, RouteError> {
        self.inner
            .as_ref()
            .map_err(|e| RouteError::NoResolver(e.clone()))
    }

    /// The hosts that receive `domain`'s mail, best first: its MX hosts, or the domain
    /// itself when it publishes none.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<String>, RouteError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver()?.mx_lookup(fqdn.as_str()).await {
            Ok(mx) => {
                let mut hosts: Vec<(u16, String)> = mx
                    .iter()
                    .map(|m| (m.preference(), m.exchange().to_ascii()))
                    .collect();
                hosts.sort();
                if hosts.len() == 1 && hosts[0].1 == "." {
                    return Err(RouteError::NoMail {
                        domain: domain.into(),
                        why: "null MX (RFC 7505)".into(),
                    });
                }
                hosts.retain(|(_, h)| h != ".");
                if hosts.is_empty() {
                    return Ok(vec![domain.to_string()]);
                }
                Ok(hosts
                    .into_iter()
                    .map(|(_, h)| h.trim_end_matches('.').to_string())
                    .take(MAX_MX_HOSTS)
                    .collect())
            }
            Err(e) => match negative(&e) {
                Some(ResponseCode::NXDomain) => Err(RouteError::NoMail {
                    domain: domain.into(),
                    why: "no such domain (NXDOMAIN)".into(),
                }),
                // No MX: the domain is its own mail host (A/AAAA).
                Some(_) => Ok(vec![domain.to_string()]),
                None => Err(temporary(&fqdn, &e)),
            },
        }
    }

    /// The addresses of `host` (A and AAAA); empty when it has none.
    pub async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver()?.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => Ok(ips.iter().take(MAX_ADDRS).collect()),
            Err(e) if negative(&e).is_some() => Ok(Vec::new()),
            Err(e) => Err(temporary(&fqdn, &e)),
        }
    }
}

impl Resolver {
    /// The TXT records of `name`, each as one string; empty when it has none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, RouteError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver()?.txt_lookup(fqdn.as_str()).await {
            Ok(txt) => Ok(txt
                .iter()
                .take(MAX_ADDRS)
                .map(|t| {
                    t.txt_data()
                        .iter()
                        .map(|d| String::from_utf8_lossy(d).into_owned())
                        .collect::<String>()
                })
                .collect()),
            Err(e) if negative(&e).is_some() => Ok(Vec::new()),
            Err(e) => Err(temporary(&fqdn, &e)),
        }
    }
}

fn temporary(name: &str, e: &ResolveError) -> RouteError {
    RouteError::Temporary {
        name: name.trim_end_matches('.').into(),
        why: e
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
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
