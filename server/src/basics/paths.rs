//! The path prefix of a node URL, which the API paths (`sealpost_proto::api`, beside the
//! types they carry) follow.

/// The path part of a node URL (`""` or e.g. `/sealpost`).
pub fn path_prefix(url: &sealpost_proto::NodeUrl) -> &str {
    let s = url.as_str();
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes() {
        let u = sealpost_proto::NodeUrl::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(path_prefix(&u), "");
        let u = sealpost_proto::NodeUrl::parse("https://x.example/sealpost/").unwrap();
        assert_eq!(path_prefix(&u), "/sealpost");
    }
}
