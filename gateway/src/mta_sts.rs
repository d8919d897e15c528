//! MTA-STS (RFC 8461): a domain that publishes `_mta-sts.DOMAIN TXT "v=STSv1; id=..."` and
//! a policy at `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` with `mode: enforce` takes
//! mail only over TLS, from MX hosts the policy names, with a certificate valid for the MX
//! host name. The policy is fetched over HTTPS with a verified certificate (the webpki
//! roots, plus `gateway.tls_ca`), through the gateway's resolver, and cached for its
//! `max_age` (at most a day here). No TXT record, or a policy that cannot be fetched: no
//! policy (RFC 8461 §5: mail then goes as without MTA-STS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::mx::Resolver;

/// Largest policy body read (RFC 8461 §3.2: 64 KiB).
const MAX_POLICY_BYTES: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a policy is cached here, and how long "no policy" is remembered.
const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
const NO_POLICY_CACHE: Duration = Duration::from_secs(60);
const MAX_CACHED_DOMAINS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns: a name, or `*.` and a parent domain (one label).
    pub mx: Vec<String>,
    pub max_age: u64,
}

impl Policy {
    /// Parses a policy body (`key: value` lines).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "version" => version = Some(v.to_string()),
                "mode" => {
                    mode = Some(match v {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => max_age = v.parse::<u64>().ok(),
                "mx" => mx.push(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("not an STSv1 policy".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mode != Mode::None && mx.is_empty() {
            return Err("no mx".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether the policy names `host` (RFC 8461 §4.1: a wildcard matches one label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *p == host,
        })
    }
}

/// Fetches and caches domains' policies.
pub struct Sts {
    resolver: Arc<Resolver>,
    http: Option<reqwest::Client>,
    cache: Mutex<HashMap<String, (Option<Policy>, Instant)>>,
}

impl Sts {
    /// `extra_ca`: PEM certificates trusted besides the webpki roots.
    pub fn new(resolver: Arc<Resolver>, extra_ca: Option<&[u8]>) -> Result<Sts, String> {
        let mut b = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Lookup(resolver.clone())));
        if let Some(pem) = extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| e.to_string())?;
        Ok(Sts {
            resolver,
            http: Some(http),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The domain's policy, `None` when it has none (or it cannot be had).
    pub async fn policy(&self, domain: &str) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(c) = self.cache.lock()
            && let Some((p, until)) = c.get(&domain)
            && Instant::now() < *until
        {
            return p.clone();
        }
        let fetched = self.fetch(&domain).await;
        let keep = match &fetched {
            Ok(Some(p)) => Duration::from_secs(p.max_age).min(MAX_CACHE),
            _ => NO_POLICY_CACHE,
        };
        let policy = fetched.unwrap_or_else(|why| {
            tracing::warn!(%domain, reason = %why, "MTA-STS policy not fetched; sending as without one");
            None
        });
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= MAX_CACHED_DOMAINS {
                c.retain(|_, (_, until)| Instant::now() < *until);
            }
            if c.len() < MAX_CACHED_DOMAINS {
                c.insert(domain, (policy.clone(), Instant::now() + keep));
            }
        }
        policy
    }

    async fn fetch(&self, domain: &str) -> Result<Option<Policy>, String> {
        let txt = self
            .resolver
            .txt(&format!("_mta-sts.{domain}"))
            .await
            .map_err(|e| e.to_string())?;
        if !txt.iter().any(|t| t.trim_start().starts_with("v=STSv1")) {
            return Ok(None);
        }
        let Some(http) = &self.http else {
            return Ok(None);
        };
        let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
        let mut resp = http.get(&url).send().await.map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        })?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_POLICY_BYTES {
                return Err(format!("{url}: policy over 64 KiB"));
            }
        }
        let text = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8"))?;
        Policy::parse(&text).map(Some)
    }
}

/// The gateway's resolver for the policy fetch's host lookups.
struct Lookup(Arc<Resolver>);

impl reqwest::dns::Resolve for Lookup {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let ips = resolver
                .addrs(name.as_str())
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: reqwest::dns::Addrs = Box::new(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_match_mx_hosts_like_rfc_8461() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mx.secure.test\r\nmx: *.backup.test\r\nmax_age: 86400\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.allows("mx.secure.test") && p.allows("MX.secure.test."));
        assert!(p.allows("a.backup.test"));
        assert!(!p.allows("a.b.backup.test") && !p.allows("backup.test"));
        assert!(!p.allows("evil.test"));
        assert!(Policy::parse("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
        assert!(Policy::parse("mode: enforce\nmx: a\nmax_age: 1\n").is_err());
        assert!(Policy::parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
    }
}
