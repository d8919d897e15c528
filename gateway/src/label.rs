//! The "not end-to-end" label on mail that entered through the gateway.
//!
//! The gateway keeps the legacy message as it arrived (so every part and header survives),
//! neutralises any `X-Sealpost-Legacy` header the sender forged, and prepends its own,
//! which the client shows. The label records the SMTP envelope sender, the client's IP
//! and HELO, and the SPF/DKIM verdicts that can be computed without the network. A message
//! without a `Date` (RFC 5322 requires one) gets the time of arrival, as MTAs add it.

use std::net::IpAddr;

use sealpost_proto::letter::{LEGACY_HEADER, Letter};

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

/// The label text (one line).
pub fn label_text(a: &Arrival, message: &[u8]) -> String {
    let dkim = match dkim_domains(message) {
        d if d.is_empty() => "dkim=none".to_string(),
        d => format!(
            "dkim=unverified (signed by {}; keys are not fetched offline)",
            d.join(", ")
        ),
    };
    let from = if a.mail_from.is_empty() {
        "<>".to_string()
    } else {
        format!("<{}>", a.mail_from)
    };
    format!(
        "arrived via legacy SMTP, not end-to-end; mail-from={from}; client={}; helo={}; tls={}; spf=none (not checked offline); {dkim}",
        a.client_ip,
        clean(&a.helo),
        if a.tls { "yes" } else { "no" },
    )
}

/// The message with the label prepended and any forged label renamed. Refuses a message
/// that does not parse as a letter (missing or bad From, too large): the sender gets a 554
/// and a bounce from their own server instead of a letter the recipient cannot read.
pub fn labelled(a: &Arrival, message: &[u8]) -> Result<Vec<u8>, String> {
    let label = label_text(a, message);
    let mut out = Vec::with_capacity(message.len() + label.len() + 64);
    out.extend_from_slice(format!("{LEGACY_HEADER}: {label}\r\n").as_bytes());
    if !has_date(message) {
        let date =
            mail_builder::headers::date::Date::new(a.received_at.min(i64::MAX as u64) as i64);
        out.extend_from_slice(format!("Date: {}\r\n", date.to_rfc822()).as_bytes());
    }
    out.extend_from_slice(&neutralise(message));
    Letter::from_rfc5322(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Renames `X-Sealpost-Legacy:` header fields in the header block to `X-Forged-Sealpost-Legacy:`.
fn neutralise(message: &[u8]) -> Vec<u8> {
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
        if line.len() > LEGACY_HEADER.len()
            && line[..LEGACY_HEADER.len()].eq_ignore_ascii_case(LEGACY_HEADER.as_bytes())
            && line[LEGACY_HEADER.len()] == b':'
        {
            out.extend_from_slice(b"X-Forged-");
            out.extend_from_slice(&line[2..]);
        } else {
            out.extend_from_slice(line);
        }
        line_start = line_end;
    }
    out.extend_from_slice(&message[header_end..]);
    out
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
        let out = labelled(&arrival(), msg).unwrap();
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
        )
        .unwrap();
        let letter = Letter::from_rfc5322(&out).unwrap();
        assert_eq!(letter.date, 1_700_000_000);
        assert_eq!(letter.body.trim_end(), "hi");
        // A dated message keeps its own Date, and gets no second one.
        let dated =
            b"From: carol@legacy.test\r\nDate: Tue, 1 Feb 2022 10:00:00 +0000\r\n\r\nhi\r\n";
        let out = labelled(&arrival(), dated).unwrap();
        assert_eq!(Letter::from_rfc5322(&out).unwrap().date, 1_643_709_600);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Date:").count(), 1, "{text}");
        // So is an undated one with a lower-case, unparseable date field.
        let odd = b"From: carol@legacy.test\r\ndate: yesterday\r\n\r\nhi\r\n";
        let text = String::from_utf8(labelled(&arrival(), odd).unwrap()).unwrap();
        assert_eq!(
            text.to_ascii_lowercase().matches("date:").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn unparseable_mail_is_refused() {
        assert!(labelled(&arrival(), b"no headers at all").is_err());
        assert!(labelled(&arrival(), b"Subject: no from\r\n\r\nbody\r\n").is_err());
    }
}
