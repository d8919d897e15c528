//! Human-readable rendering of messages and reports. JSON output is serde of the library's
//! types plus a few fields assembled here.

use sealpost_client::contacts::display_fingerprint;
use sealpost_client::mailbox::ReadMessage;
use sealpost_client::sent::SentEntry;
use sealpost_client::store::{Folder, StoredMessage, Trust};
use serde_json::{Value, json};

/// The label every letter that entered through the SMTP gateway carries.
pub const LEGACY_LABEL: &str = "arrived via legacy e-mail: NOT end-to-end encrypted";

/// `YYYY-MM-DD HH:MM` (UTC) from Unix seconds.
pub fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One line per message.
pub fn list_line(m: &StoredMessage) -> String {
    let id = &m.id.to_hex()[..12];
    let new = if m.seen { ' ' } else { '*' };
    let trust = match &m.trust {
        Trust::Verified { .. } => "verified  ",
        Trust::Unverified { .. } => "UNVERIFIED",
        Trust::Unreadable { .. } => "UNREADABLE",
    };
    match &m.header {
        Some(h) => {
            let legacy = if h.legacy.is_some() {
                " [legacy, not e2e]"
            } else {
                ""
            };
            let attach = if h.attachments.is_empty() {
                String::new()
            } else {
                format!(" [{} att]", h.attachments.len())
            };
            // A sent letter is listed by whom it went to.
            let who = match m.folder {
                Folder::Sent => format!("to {}", join(&h.to)),
                Folder::Inbox => h.from.to_string(),
            };
            format!(
                "{new}{id}  {}  {trust}  {:<28}  {}{attach}{legacy}",
                date(h.date),
                clean(&who),
                clean(&h.subject)
            )
        }
        None => format!(
            "{new}{id}  {}  {trust}  {:<28}  (could not be opened)",
            date(m.received_at as i64),
            "?"
        ),
    }
}

/// A line of text from a letter, safe to print on a terminal: no control characters.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A letter body for a terminal: keeps line breaks and tabs, drops other control
/// characters (escape sequences could rewrite the screen, e.g. fake a "verified" line).
pub fn clean_body(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// `checked`: whether the user compared the sender's fingerprint out of band.
pub fn trust_line(t: &Trust, from: Option<&str>, checked: bool) -> String {
    match t {
        Trust::Verified { signer } => format!(
            "verified: signed by the key pinned for {} ({}){}",
            from.unwrap_or("the sender"),
            display_fingerprint(signer),
            if checked {
                ", fingerprint checked"
            } else {
                ", pinned on first use"
            }
        ),
        Trust::Unverified { reason } => {
            format!("UNVERIFIED: {reason}. The From line is not proven; do not trust it.")
        }
        Trust::Unreadable { reason } => format!("UNREADABLE: {reason}"),
    }
}

/// What `read` shows besides the letter: where attachments were saved, whether the
/// sender's fingerprint was checked, and which of our letters a bounce is about.
#[derive(Default)]
pub struct ReadExtras {
    pub saved: Vec<String>,
    pub checked: bool,
    pub bounce_of: Option<SentEntry>,
}

pub fn read_text(r: &ReadMessage, x: &ReadExtras) -> String {
    let (saved, checked) = (&x.saved, x.checked);
    let m = &r.meta;
    let mut out = String::new();
    let from = m.header.as_ref().map(|h| h.from.as_str());
    match &m.header {
        Some(h) => {
            out += &format!("From:      {}\n", h.from);
            if !h.to.is_empty() {
                out += &format!("To:        {}\n", join(&h.to));
            }
            if !h.cc.is_empty() {
                out += &format!("Cc:        {}\n", join(&h.cc));
            }
            out += &format!("Date:      {} UTC\n", date(h.date));
            out += &format!("Subject:   {}\n", clean(&h.subject));
        }
        None => out += &format!("Received:  {} UTC\n", date(m.received_at as i64)),
    }
    out += &format!("Id:        {}\n", m.id);
    out += &format!("Signature: {}\n", trust_line(&m.trust, from, checked));
    if let Some(b) = &x.bounce_of {
        out += &format!(
            "Bounce of: your letter \"{}\" to {} (submitted {} UTC via {}, message id {})\n",
            clean(&b.subject),
            b.recipient,
            date(b.submitted as i64),
            b.node,
            clean(&b.message_id)
        );
    }
    if let Some(label) = m.header.as_ref().and_then(|h| h.legacy.as_ref()) {
        out += &format!("Warning:   {LEGACY_LABEL} ({})\n", clean(label));
    }
    if let Some(h) = &m.header {
        for (i, a) in h.attachments.iter().enumerate() {
            let to = saved.get(i).map(|p| format!(" -> {p}")).unwrap_or_default();
            out += &format!(
                "Attached:  {} ({}, {} bytes){to}\n",
                clean(&a.name),
                clean(&a.media_type),
                a.size
            );
        }
    }
    if let Some(l) = &r.letter {
        out += "\n";
        out += &clean_body(&l.body);
        if !l.body.ends_with('\n') {
            out += "\n";
        }
    }
    out
}

fn join(v: &[sealpost_proto::Address]) -> String {
    v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

pub fn message_json(m: &StoredMessage) -> Value {
    let mut v = serde_json::to_value(m).expect("invariant: stored messages serialize");
    v["verified"] = json!(m.trust.is_verified());
    v["legacy"] = json!(m.header.as_ref().is_some_and(|h| h.legacy.is_some()));
    v["folder"] = json!(m.folder.as_str());
    v
}

pub fn read_json(r: &ReadMessage, x: &ReadExtras) -> Value {
    let saved = &x.saved;
    let mut v = message_json(&r.meta);
    if let Some(l) = &r.letter {
        v["body"] = json!(l.body);
    }
    if let Some(label) = r.meta.header.as_ref().and_then(|h| h.legacy.as_ref()) {
        v["legacy_label"] = json!(format!("{LEGACY_LABEL} ({label})"));
    }
    v["saved_attachments"] = json!(saved);
    if let Some(b) = &x.bounce_of {
        v["bounce_of"] = serde_json::to_value(b).expect("invariant: sent entries serialize");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(date(951_782_400), "2000-02-29 00:00");
        assert_eq!(date(-86_400), "1969-12-31 00:00");
    }

    fn legacy_message() -> ReadMessage {
        use sealpost_client::store::Header;
        use sealpost_proto::letter::Letter;
        use sealpost_proto::{Address, EnvelopeId, NodeUrl};
        let mut letter = Letter::new(
            Address::parse("someone@legacy.example").unwrap(),
            vec![Address::parse("alice@alpha.test").unwrap()],
            "Old world",
            "Hello from SMTP\n",
            1_700_000_000,
        );
        letter.legacy = Some("arrived via legacy SMTP, not end-to-end; spf=pass".into());
        let meta = StoredMessage {
            id: EnvelopeId([9; 16]),
            received_at: 1_700_000_100,
            nodes: vec![NodeUrl::parse("http://127.0.0.1:1").unwrap()],
            size: 4096,
            trust: Trust::Unverified {
                reason: "signed by unknown key ABCD".into(),
            },
            seen: false,
            header: Some(Header::of(&letter)),
            folder: Default::default(),
            pack: None,
        };
        ReadMessage {
            meta,
            letter: Some(letter),
        }
    }

    #[test]
    fn gateway_mail_is_labelled_not_end_to_end() {
        let r = legacy_message();
        let text = read_text(&r, &ReadExtras::default());
        assert!(text.contains(LEGACY_LABEL), "{text}");
        assert!(text.contains("spf=pass"), "{text}");
        assert!(text.contains("Signature: UNVERIFIED"), "{text}");
        assert!(list_line(&r.meta).contains("[legacy, not e2e]"));
        let v = read_json(&r, &ReadExtras::default());
        assert_eq!(v["legacy"], true);
        assert_eq!(v["verified"], false);
        assert!(
            v["legacy_label"]
                .as_str()
                .unwrap()
                .contains("NOT end-to-end")
        );
    }

    #[test]
    fn verified_mail_says_how_the_key_was_pinned() {
        let t = Trust::Verified {
            signer: "AB".repeat(20),
        };
        assert!(trust_line(&t, Some("bob@b.test"), false).contains("pinned on first use"));
        assert!(trust_line(&t, Some("bob@b.test"), true).contains("fingerprint checked"));
    }

    #[test]
    fn terminal_escapes_are_stripped() {
        assert_eq!(clean("a\x1b[2Jb\nc"), "a [2Jb c");
        assert_eq!(
            clean_body("line1\n\x1b[1mline2\t!\r\n"),
            "line1\n[1mline2\t!\n"
        );
    }
}
