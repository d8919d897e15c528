//! The two facts the renewal needs from an issued leaf certificate (RFC 5280): its validity
//! (notBefore, notAfter) and its DNS names (subjectAltName). A bounded DER walk of just
//! those fields: the certificate's signature was checked by the CA's chain on issuance and
//! is checked by every client; here nothing is trusted beyond "when" and "for which names".
//! (A full X.509 parser crate would pull a second proc-macro stack into the build.)

/// What renewal needs to know about a leaf.
#[derive(Debug, PartialEq)]
pub struct LeafFacts {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// dNSName entries of subjectAltName, lowercase.
    pub dns_names: Vec<String>,
}

/// Most names read from one certificate.
const MAX_NAMES: usize = 1000;
/// subjectAltName, 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER TLV: (tag, contents, rest), or `None` when malformed or truncated.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads the TLV with `tag`; `None` when the next one has another tag.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = tlv(input)?;
    (t == tag).then_some((body, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 §4.1.2.5.1) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, body: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(body).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The validity and DNS names of a DER certificate, or `None` when it is not one.
pub fn leaf_facts(cert: &[u8]) -> Option<LeafFacts> {
    let (certificate, _) = expect(cert, 0x30)?;
    let (tbs, _) = expect(certificate, 0x30)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if let Some((_, r)) = expect(rest, 0xa0) {
        rest = r;
    }
    let (_serial, r) = expect(rest, 0x02)?;
    let (_signature, r) = expect(r, 0x30)?;
    let (_issuer, r) = expect(r, 0x30)?;
    let (validity, r) = expect(r, 0x30)?;
    let (t1, b1, v) = tlv(validity)?;
    let (t2, b2, _) = tlv(v)?;
    let (not_before, not_after) = (time(t1, b1)?, time(t2, b2)?);
    let (_subject, r) = expect(r, 0x30)?;
    let (_spki, mut r) = expect(r, 0x30)?;
    let mut dns_names = Vec::new();
    while let Some((tag, body, next)) = tlv(r) {
        r = next;
        // [3] EXPLICIT Extensions.
        if tag != 0xa3 {
            continue;
        }
        let (mut exts, _) = expect(body, 0x30)?;
        while !exts.is_empty() {
            let (ext, next) = expect(exts, 0x30)?;
            exts = next;
            let (oid, mut e) = expect(ext, 0x06)?;
            if oid != OID_SAN {
                continue;
            }
            if let Some((_, after_critical)) = expect(e, 0x01) {
                e = after_critical;
            }
            let (octets, _) = expect(e, 0x04)?;
            let (mut names, _) = expect(octets, 0x30)?;
            while !names.is_empty() {
                let (tag, name, next) = tlv(names)?;
                names = next;
                // dNSName: [2] IMPLICIT IA5String.
                if tag == 0x82 && dns_names.len() < MAX_NAMES {
                    dns_names.push(std::str::from_utf8(name).ok()?.to_ascii_lowercase());
                }
            }
        }
    }
    Some(LeafFacts {
        not_before,
        not_after,
        dns_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], not_before: (i32, u8), not_after: (i32, u8)) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_validity_and_names_of_a_certificate() {
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        let der = cert(&["Node.Example", "mx.example"], (2026, 1), (2051, 3));
        let f = leaf_facts(&der).expect("facts");
        assert_eq!(f.not_before, 1_767_225_600, "2026-01-01T00:00:00Z");
        assert_eq!(f.not_after, 2_561_241_600, "2051-03-01T00:00:00Z");
        assert_eq!(f.dns_names, vec!["node.example", "mx.example"]);
    }

    #[test]
    fn never_panics_on_truncated_or_altered_input() {
        let der = cert(&["node.example"], (2026, 1), (2026, 4));
        for cut in 0..der.len() {
            let _ = leaf_facts(&der[..cut]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = leaf_facts(&bad);
        }
        assert!(leaf_facts(&[]).is_none());
        assert!(leaf_facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }
}
