//! Keeping the relay from being pointed at the operator's own network (SSRF).
//!
//! A hop's destination comes from a user, so without a check anyone with an account could
//! make the node send requests to `127.0.0.1`, `10.0.0.0/8` or a cloud metadata address.
//! Unless `relay.allow_private_destinations` is set (`init` sets it for a node that listens
//! on loopback, as in tests and the demo), destinations must be public addresses: IP
//! literals are checked before any request, and host names are resolved by a resolver that
//! drops non-public addresses, so a name cannot be rebound to a private one in between.

use std::net::{IpAddr, SocketAddr};

use sealpost_proto::NodeUrl;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// The host of a node URL as an IP address, when it is one.
fn ip_literal(url: &NodeUrl) -> Option<IpAddr> {
    let authority = url.authority();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

/// Refuses a destination whose host is a non-public IP literal (host names are checked when
/// they are resolved, by [`PublicOnly`]).
pub fn check_destination(url: &NodeUrl, allow_private: bool) -> Result<(), String> {
    match ip_literal(url) {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!(
            "destination {url} is a private or local address; this node only relays to public addresses (relay.allow_private_destinations)"
        )),
        _ => Ok(()),
    }
}

/// A DNS resolver for the relay's HTTP client that keeps only public addresses.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} has no public address; this node only relays to public addresses"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "93.184.216.34"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ip_literal_destinations_are_checked() {
        let u = |s| NodeUrl::parse(s).unwrap();
        assert!(check_destination(&u("http://127.0.0.1:8440"), false).is_err());
        assert!(check_destination(&u("http://[::1]:8440"), false).is_err());
        assert!(check_destination(&u("http://169.254.169.254"), false).is_err());
        assert!(check_destination(&u("http://127.0.0.1:8440"), true).is_ok());
        assert!(check_destination(&u("https://8.8.8.8"), false).is_ok());
        assert!(
            check_destination(&u("https://beta.example"), false).is_ok(),
            "names are checked when resolved"
        );
    }
}
