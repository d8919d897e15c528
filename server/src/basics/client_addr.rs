//! The client address a request is charged to. It is the TCP peer, unless the peer is one
//! of `limits.trusted_proxies`: then it is the rightmost hop of `Forwarded` (RFC 7239) or,
//! without that header, `X-Forwarded-For` that is not itself a trusted proxy. Per-address
//! limits key on [`addr_key`]: an IPv4 address, or the /64 an IPv6 address lies in (one
//! customer's usual allocation), so one site cannot mint fresh buckets by the billion.

use std::net::{IpAddr, Ipv6Addr};

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// What per-address limits count against: the address, with IPv6 cut to its /64 and
/// IPv4-mapped IPv6 read as IPv4.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// `limits.trusted_proxies`: addresses or CIDR blocks (`10.0.0.0/8`, `::1`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses each entry; the error names the one that is neither an address nor a CIDR.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{e:?} is neither an IP address nor a CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that reached us from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers).unwrap_or_else(|| x_forwarded_for_hops(headers));
        // From the right: each hop was appended by the proxy to its right, which we trust as
        // long as it is in the list. The first untrusted hop is the client; a hop that does
        // not parse (`unknown`, an obfuscated name) ends the walk at the proxy that wrote it.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.contains(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => return client,
            }
        }
        client
    }
}

/// The `for=` of every `Forwarded` element, in order; `None` when the header is absent.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut out = Vec::new();
    let mut seen = false;
    for value in headers.get_all("forwarded") {
        seen = true;
        let Ok(value) = value.to_str() else {
            out.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            // An element without `for=` says nothing about the client; skip it.
            if let Some(node) = node {
                out.push(parse_node(node));
            }
        }
    }
    seen.then_some(out)
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(parse_node).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// A node name of RFC 7239 §6 (`192.0.2.43`, `"192.0.2.43:47011"`, `"[2001:db8::1]:4711"`)
/// or an X-Forwarded-For entry; `None` for `unknown`, obfuscated names and garbage.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The address of the client a request came from (set by the server for every request).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        assert_eq!(addr_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(addr_key(ip("2001:db8:1:2::ffff")), ip("2001:db8:1:2::"));
        assert_ne!(addr_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(addr_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(addr_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(t.client(ip("198.51.100.1"), &xff), ip("198.51.100.1"));
        assert_eq!(t.client(ip("127.0.0.1"), &xff), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &xff),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        // The client forged the first entry; our proxies appended the rest.
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(t.client(ip("127.0.0.1"), &xff), ip("203.0.113.9"));
        let fwd = headers(&[
            (
                "forwarded",
                r#"for=1.2.3.4, for="[2001:db8::7]:4711";proto=https"#,
            ),
            ("forwarded", "for=10.2.2.2"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &fwd), ip("2001:db8::7"));
        let unknown = headers(&[("forwarded", "for=1.2.3.4, for=unknown")]);
        assert_eq!(t.client(ip("127.0.0.1"), &unknown), ip("127.0.0.1"));
        let ported = headers(&[("forwarded", r#"For="192.0.2.43:47011""#)]);
        assert_eq!(t.client(ip("127.0.0.1"), &ported), ip("192.0.2.43"));
        let none = HeaderMap::new();
        assert_eq!(t.client(ip("127.0.0.1"), &none), ip("127.0.0.1"));
    }

    #[test]
    fn bad_entries_are_named() {
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy.local".into()]).unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
        assert!(TrustedProxies::parse(&["::1".into(), "fd00::/8".into()]).is_ok());
    }
}
