//! Names parsed once at the edge: addresses, mailbox and envelope ids, node URLs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::limits::{MAX_ADDRESS_BYTES, MAX_LOCAL_PART_BYTES, MAX_URL_BYTES};

/// A Sealpost address, `local@domain`, normalised to lower case.
///
/// Only ASCII is accepted: an internationalised domain must be given in its `xn--` A-label
/// form, so that two spellings of one name can never be two mailboxes (IDNA homograph safety).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    full: String,
    at: usize,
}

impl Address {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidAddress {
            input: truncate_for_error(input),
            reason,
        };
        if input.len() > MAX_ADDRESS_BYTES {
            return Err(bad("longer than 254 bytes"));
        }
        if !input.is_ascii() {
            return Err(bad(
                "non-ASCII; write an internationalised domain as xn-- (punycode)",
            ));
        }
        let full = input.to_ascii_lowercase();
        let at = full.rfind('@').ok_or_else(|| bad("missing '@'"))?;
        let (local, domain) = (&full[..at], &full[at + 1..]);
        if local.is_empty() {
            return Err(bad("empty local part"));
        }
        if local.len() > MAX_LOCAL_PART_BYTES {
            return Err(bad("local part longer than 64 bytes"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("misplaced '.' in local part"));
        }
        if !local.bytes().all(is_local_char) {
            return Err(bad(
                "local part may hold only letters, digits and . _ + - = '",
            ));
        }
        validate_domain(domain).map_err(bad)?;
        Ok(Address { full, at })
    }

    pub fn local(&self) -> &str {
        &self.full[..self.at]
    }
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'=' | b'\'')
}

/// Checks a DNS name: dot-separated labels of letters, digits and inner hyphens.
pub fn validate_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("empty domain");
    }
    if domain.len() > 253 {
        return Err("domain longer than 253 bytes");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("domain label empty or longer than 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("domain may hold only letters, digits, '-' and '.'");
        }
    }
    Ok(())
}

fn truncate_for_error(s: &str) -> String {
    s.chars().take(80).collect()
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.full)
    }
}

macro_rules! id16 {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A random 16-byte ", $what, ", written as 32 lower-case hex digits.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub fn random() -> Self {
                $name(rand::random())
            }
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidId {
                    what: $what,
                    expected: 32,
                })?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $name::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id16!(MailboxId, "mailbox id");
id16!(EnvelopeId, "envelope id");
id16!(DeviceId, "device id");

/// The base URL of a node: `http` or `https`, a host, an optional port, an optional path
/// prefix; no query, fragment or user info. Stored without a trailing slash.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeUrl(String);

impl NodeUrl {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidUrl {
            input: truncate_for_error(input),
            reason,
        };
        if input.len() > MAX_URL_BYTES {
            return Err(bad("longer than 2048 bytes"));
        }
        if !input.is_ascii() || input.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("must be ASCII without spaces or control characters"));
        }
        let rest = if let Some(r) = input.strip_prefix("https://") {
            r
        } else if let Some(r) = input.strip_prefix("http://") {
            r
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        if input.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("must not contain user info"));
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            let port = &v6[end + 1..];
            check_port(port).map_err(bad)?;
            &v6[..end]
        } else {
            let (host, port) = match authority.rfind(':') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            };
            check_port(port).map_err(bad)?;
            validate_domain(&host.to_ascii_lowercase()).map_err(bad)?;
            host
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let path = path.trim_end_matches('/');
        let scheme_len = input.len() - rest.len();
        let mut s = String::with_capacity(input.len());
        s.push_str(&input[..scheme_len]);
        s.push_str(&authority.to_ascii_lowercase());
        s.push_str(path);
        Ok(NodeUrl(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self` joined with an absolute API path such as `/v1/deliver`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }

    /// Host and port as they appear in the URL (the HTTP `Host` authority).
    pub fn authority(&self) -> &str {
        let rest = self.0.split_once("://").map(|(_, r)| r).unwrap_or(&self.0);
        rest.split('/').next().unwrap_or(rest)
    }
}

fn check_port(port: &str) -> Result<(), &'static str> {
    if port.is_empty() {
        return Ok(());
    }
    let digits = port.strip_prefix(':').ok_or("bad port")?;
    match digits.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("port must be a number from 1 to 65535"),
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUrl({})", self.0)
    }
}

impl FromStr for NodeUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NodeUrl::parse(s)
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Address);
serde_via_str!(NodeUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_normalise() {
        let a = Address::parse("Alice.B+tag@Alpha.Test").unwrap();
        assert_eq!(a.as_str(), "alice.b+tag@alpha.test");
        assert_eq!(a.local(), "alice.b+tag");
        assert_eq!(a.domain(), "alpha.test");
        assert!(Address::parse("bob@xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn bad_addresses_are_refused_with_reasons() {
        for (input, reason) in [
            ("", "missing '@'"),
            ("alice", "missing '@'"),
            ("@alpha.test", "empty local part"),
            ("alice@", "empty domain"),
            (
                "al ice@alpha.test",
                "local part may hold only letters, digits and . _ + - = '",
            ),
            ("a..b@alpha.test", "misplaced '.' in local part"),
            ("alice@-alpha.test", "domain label starts or ends with '-'"),
            (
                "alice@alpha..test",
                "domain label empty or longer than 63 bytes",
            ),
            (
                "alice@bücher.example",
                "non-ASCII; write an internationalised domain as xn-- (punycode)",
            ),
        ] {
            match Address::parse(input) {
                Err(Error::InvalidAddress { reason: r, .. }) => assert_eq!(r, reason, "{input}"),
                other => panic!("{input:?} gave {other:?}"),
            }
        }
        let long_local = format!("{}@a.test", "x".repeat(65));
        assert!(Address::parse(&long_local).is_err());
        let long = format!("a@{}.test", "x.".repeat(130));
        assert!(Address::parse(&long).is_err());
    }

    #[test]
    fn node_urls() {
        let u = NodeUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080");
        assert_eq!(u.authority(), "127.0.0.1:8080");
        assert_eq!(u.join("/v1/x"), "http://127.0.0.1:8080/v1/x");
        let u = NodeUrl::parse("https://Mail.Example/sealpost/").unwrap();
        assert_eq!(u.as_str(), "https://mail.example/sealpost");
        assert!(NodeUrl::parse("http://[::1]:9000").is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "http://a:0",
            "http://a:99999",
            "http://u@a",
            "http://a/?q",
            "http://a b",
        ] {
            assert!(NodeUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = MailboxId::random();
        assert_eq!(MailboxId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(MailboxId::from_hex("zz").is_err());
        assert!(EnvelopeId::from_hex(&"a".repeat(31)).is_err());
    }
}
