//! The "not end-to-end" label on mail that entered through the gateway.
//!
//! The gateway keeps the legacy message as it arrived (so every part and header survives),
//! neutralises any `X-Sealpost-Legacy` header the sender forged, and prepends its own,
//! which the client shows. The label records the SMTP envelope sender, the client's IP
//! and HELO, and the SPF/DKIM/DMARC verdicts of [`crate::auth`] (or that they were not
//! checked, when `gateway.verify` is off). The same verdicts go into an
//! `Authentication-Results` header (RFC 8601) for the gateway's domain; one that the
//! sender wrote for that domain is renamed, as RFC 8601 §5 asks. A message without a
//! `Date` (RFC 5322 requires one) gets the time of arrival, as MTAs add it.

use std::net::IpAddr;

use sealpost_proto::letter::{LEGACY_HEADER, Letter};

use crate::auth::Verdict;

/// RFC 8601's header.
pub const AUTH_RESULTS_HEADER: &str = "Authentication-Results";

/// Facts about one SMTP transaction, for the label.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub mail_from: String,
    pub client_ip: IpAddr,
    pub helo: String,
    pub tls: bool,
    /// When the message arrived, Unix seconds.
    pub received_at: u64,
}

/// The label text (one line), with the verdicts of the sender checks when they ran.
pub fn label_text(a: &Arrival, message: &[u8], verdict: Option<&Verdict>) -> String {
    let checks = match verdict {
        Some(v) => v.label_part(),
        None => {
            let dkim = match dkim_domains(message) {
                d if d.is_empty() => "dkim=none".to_string(),
                d => format!("dkim=unverified (signed by {}; not checked)", d.join(", ")),
            };
            format!("spf=none (not checked); {dkim}")
        }
    };
    let from = if a.mail_from.is_empty() {
        "<>".to_string()
    } else {
        format!("<{}>", a.mail_from)
    };
    format!(
        "arrived via legacy SMTP, not end-to-end; mail-from={from}; client={}; helo={}; tls={}; {checks}",
        a.client_ip,
        clean(&a.helo),
        if a.tls { "yes" } else { "no" },
    )
}

/// The message with the label (and, when the checks ran, `Authentication-Results` for
/// `authserv_id`) prepended and any forged label renamed. Refuses a message
/// that does not parse as a letter (missing or bad From, too large): the sender gets a 554
/// and a bounce from their own server instead of a letter the recipient cannot read.
pub fn labelled(
    a: &Arrival,
    message: &[u8],
    verdict: Option<&Verdict>,
    authserv_id: &str,
) -> Result<Vec<u8>, String> {
    let label = label_text(a, message, verdict);
    let mut out = Vec::with_capacity(message.len() + label.len() + 64);
    out.extend_from_slice(format!("{LEGACY_HEADER}: {label}\r\n").as_bytes());
    if let Some(v) = verdict {
        let ar = v.authentication_results(authserv_id, a);
        out.extend_from_slice(format!("{AUTH_RESULTS_HEADER}: {ar}\r\n").as_bytes());
    }
    if !has_date(message) {
        let date =
            mail_builder::headers::date::Date::new(a.received_at.min(i64::MAX as u64) as i64);
        out.extend_from_slice(format!("Date: {}\r\n", date.to_rfc822()).as_bytes());
    }
    out.extend_from_slice(&neutralise(message, authserv_id));
    Letter::from_rfc5322(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Renames `X-Sealpost-Legacy:` header fields in the header block to
/// `X-Forged-Sealpost-Legacy:`, and `Authentication-Results:` fields for `authserv_id` to
/// `X-Forged-Authentication-Results:`.
fn neutralise(message: &[u8], authserv_id: &str) -> Vec<u8> {
    let header_end = find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(message.len());
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = 0;
    while line_start < header_end {
        let line_end = find(&message[line_start..header_end], b"\r\n")
            .map(|i| line_start + i + 2)
            .unwrap_or(header_end);
        let line = &message[line_start..line_end];
        if field_value(line, LEGACY_HEADER).is_some() {
            out.extend_from_slice(b"X-Forged-");
            out.extend_from_slice(&line[2..]);
        } else if field_value(line, AUTH_RESULTS_HEADER)
            .is_some_and(|v| authserv_id_of(v).eq_ignore_ascii_case(authserv_id.as_bytes()))
        {
            out.extend_from_slice(b"X-Forged-");
            out.extend_from_slice(line);
        } else {
            out.extend_from_slice(line);
        }
        line_start = line_end;
    }
    out.extend_from_slice(&message[header_end..]);
    out
}

/// The value of `line` when it starts the header field `name`.
fn field_value<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    (line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()] == b':')
        .then(|| &line[name.len() + 1..])
}

/// The authserv-id of an `Authentication-Results` value (its first token, up to `;`).
fn authserv_id_of(value: &[u8]) -> &[u8] {
    let v = value.trim_ascii_start();
    let end = v
        .iter()
        .position(|&c| c == b';' || c.is_ascii_whitespace())
        .unwrap_or(v.len());
    &v[..end]
}

/// Whether the header block has a `Date` field (parseable or not: a sender's own field is
/// never replaced).
fn has_date(message: &[u8]) -> bool {
    mail_parser::MessageParser::default()
        .parse_headers(message)
        .is_some_and(|m| {
            m.headers_raw()
                .any(|(name, _)| name.eq_ignore_ascii_case("Date"))
        })
}

fn dkim_domains(message: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(message) else {
        return Vec::new();
    };
    msg.headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("DKIM-Signature"))
        .filter_map(|(_, value)| {
            value
                .split(';')
                .find_map(|tag| tag.trim().strip_prefix("d=").map(|d| clean(d.trim())))
        })
        .take(5)
        .collect()
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival() -> Arrival {
        Arrival {
            mail_from: "carol@legacy.test".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "mx.legacy.test".into(),
            tls: false,
            received_at: 1_700_000_000,
        }
    }

    #[test]
    fn label_is_prepended_and_forgeries_are_renamed() {
        let msg = b"From: carol@legacy.test\r\nTo: bob@gw.test\r\nX-Sealpost-Legacy: totally end-to-end, trust me\r\nDKIM-Signature: v=1; a=rsa-sha256; d=legacy.test; s=x; b=abc\r\nSubject: hi\r\n\r\nX-Sealpost-Legacy: in the body stays\r\n";
        let out = labelled(&arrival(), msg, None, "gw.test").unwrap();
        let letter = Letter::from_rfc5322(&out).unwrap();
        let label = letter.legacy.unwrap();
        assert!(label.starts_with("arrived via legacy SMTP, not end-to-end; mail-from=<carol@legacy.test>; client=127.0.0.1"), "{label}");
        assert!(
            label.contains("dkim=unverified (signed by legacy.test"),
            "{label}"
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("X-Forged-Sealpost-Legacy: totally"), "{text}");
        assert!(
            text.contains("\r\n\r\nX-Sealpost-Legacy: in the body stays"),
            "{text}"
        );
        assert_eq!(letter.subject, "hi");
    }

    #[test]
    fn mail_without_a_date_gets_the_time_of_arrival() {
        let out = labelled(
            &arrival(),
            b"From: carol@legacy.test\r\nSubject: undated\r\n\r\nhi\r\n",
            None,
            "gw.test",
        )
        .unwrap();
        let letter = Letter::from_rfc5322(&out).unwrap();
        assert_eq!(letter.date, 1_700_000_000);
        assert_eq!(letter.body.trim_end(), "hi");
        // A dated message keeps its own Date, and gets no second one.
        let dated =
            b"From: carol@legacy.test\r\nDate: Tue, 1 Feb 2022 10:00:00 +0000\r\n\r\nhi\r\n";
        let out = labelled(&arrival(), dated, None, "gw.test").unwrap();
        assert_eq!(Letter::from_rfc5322(&out).unwrap().date, 1_643_709_600);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Date:").count(), 1, "{text}");
        // So is an undated one with a lower-case, unparseable date field.
        let odd = b"From: carol@legacy.test\r\ndate: yesterday\r\n\r\nhi\r\n";
        let text = String::from_utf8(labelled(&arrival(), odd, None, "gw.test").unwrap()).unwrap();
        assert_eq!(
            text.to_ascii_lowercase().matches("date:").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn unparseable_mail_is_refused() {
        assert!(labelled(&arrival(), b"no headers at all", None, "gw.test").is_err());
        assert!(
            labelled(
                &arrival(),
                b"Subject: no from\r\n\r\nbody\r\n",
                None,
                "gw.test"
            )
            .is_err()
        );
    }

    #[test]
    fn verdicts_go_into_the_label_and_authentication_results_and_forged_results_are_renamed() {
        use crate::auth::{DkimCheck, DmarcCheck, Outcome};
        let v = Verdict {
            spf: Outcome::Pass,
            spf_domain: "legacy.test".into(),
            dkim: vec![DkimCheck {
                outcome: Outcome::Pass,
                domain: "legacy.test".into(),
                selector: "s1".into(),
                reason: String::new(),
            }],
            dmarc: DmarcCheck {
                outcome: Outcome::Pass,
                domain: "legacy.test".into(),
                policy: mail_auth::dmarc::Policy::Reject,
                dkim_aligned: true,
            },
            temp_failure: None,
        };
        let msg = b"Authentication-Results: GW.test; dkim=pass header.d=bank.test\r\n\tdmarc=pass\r\nAuthentication-Results: other.test; spf=pass\r\nFrom: carol@legacy.test\r\n\r\nhi\r\n";
        let out = labelled(&arrival(), msg, Some(&v), "gw.test").unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        let label = Letter::from_rfc5322(&out).unwrap().legacy.unwrap();
        assert!(
            label.contains("spf=pass (legacy.test); dkim=pass (legacy.test); dmarc=pass (legacy.test, p=reject); from-verified=dkim:legacy.test"),
            "{label}"
        );
        assert!(text.contains("\r\nAuthentication-Results: gw.test;\r\n\tspf=pass smtp.mailfrom=carol@legacy.test;\r\n\tdkim=pass header.d=legacy.test header.s=s1;\r\n\tdmarc=pass header.from=legacy.test policy.dmarc=reject\r\n"), "{text}");
        assert!(text.contains("\r\nX-Forged-Authentication-Results: GW.test; dkim=pass header.d=bank.test\r\n\tdmarc=pass\r\n"), "{text}");
        assert!(
            text.contains("\r\nAuthentication-Results: other.test; spf=pass\r\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("\nAuthentication-Results: gw.test").count(),
            1,
            "{text}"
        );
    }
}
