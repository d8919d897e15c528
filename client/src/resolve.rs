//! Which node publishes the records of a domain: `--resolve DOMAIN=URL` entries (one run),
//! then the profile's persistent table, then `https://DOMAIN`.

use std::collections::BTreeMap;

use sealpost_proto::NodeUrl;
use sealpost_proto::types::validate_domain;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct Resolver {
    table: BTreeMap<String, NodeUrl>,
}

impl Resolver {
    /// The persistent table, overridden by the one-run entries.
    pub fn new(persistent: &BTreeMap<String, NodeUrl>, overrides: &[(String, NodeUrl)]) -> Self {
        let mut table = persistent.clone();
        for (d, u) in overrides {
            table.insert(d.clone(), u.clone());
        }
        Resolver { table }
    }

    /// Whether `domain` has an entry (this run's or the profile's): such a domain has a
    /// Sealpost node, whatever answers there.
    pub fn has_entry(&self, domain: &str) -> bool {
        self.table.contains_key(domain)
    }

    pub fn node_for(&self, domain: &str) -> Result<NodeUrl> {
        if let Some(u) = self.table.get(domain) {
            return Ok(u.clone());
        }
        Ok(NodeUrl::parse(&format!("https://{domain}"))?)
    }
}

/// A domain as the user typed it, lower-cased and checked (`legacy add`, `resolve remove`).
pub fn parse_domain(s: &str) -> Result<String> {
    let domain = s.trim().to_ascii_lowercase();
    validate_domain(&domain)
        .map_err(|reason| Error::input("domain", format!("{domain:?}: {reason}")))?;
    Ok(domain)
}

/// Parses `DOMAIN=URL` (a `--resolve` argument or a `resolve add` entry).
pub fn parse_entry(s: &str) -> Result<(String, NodeUrl)> {
    let (domain, url) = s
        .split_once('=')
        .ok_or_else(|| Error::input("resolve entry", format!("{s:?} is not DOMAIN=URL")))?;
    let domain = domain.trim().to_ascii_lowercase();
    validate_domain(&domain)
        .map_err(|reason| Error::input("resolve entry", format!("domain {domain:?}: {reason}")))?;
    let url = NodeUrl::parse(url.trim())?;
    Ok((domain, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_then_table_then_https() {
        let mut table = BTreeMap::new();
        table.insert(
            "alpha.test".to_string(),
            NodeUrl::parse("http://127.0.0.1:1000").unwrap(),
        );
        table.insert(
            "beta.test".to_string(),
            NodeUrl::parse("http://127.0.0.1:2000").unwrap(),
        );
        let r = Resolver::new(
            &table,
            &[parse_entry("Alpha.Test=http://127.0.0.1:3000").unwrap()],
        );
        assert_eq!(
            r.node_for("alpha.test").unwrap().as_str(),
            "http://127.0.0.1:3000"
        );
        assert_eq!(
            r.node_for("beta.test").unwrap().as_str(),
            "http://127.0.0.1:2000"
        );
        assert_eq!(
            r.node_for("gamma.test").unwrap().as_str(),
            "https://gamma.test"
        );
        assert!(r.has_entry("alpha.test") && r.has_entry("beta.test"));
        assert!(!r.has_entry("gamma.test"));
    }

    #[test]
    fn bad_entries_are_input_errors() {
        for bad in [
            "alpha.test",
            "=http://x",
            "al pha=http://x",
            "alpha.test=ftp://x",
            "alpha.test=",
        ] {
            let e = parse_entry(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.exit_code(), 1, "{bad}: {e}");
        }
    }
}
