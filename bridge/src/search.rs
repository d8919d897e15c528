//! SEARCH (RFC 3501 6.4.4) over the local decrypted store: flags, sizes and dates from the
//! store's index; header and body keys from the message, read and parsed only when a key
//! needs it.

use chrono::{NaiveDate, TimeZone, Utc};
use imap_next::imap_types::search::SearchKey;

use crate::message;
use crate::sequence::NumSet;
use crate::store::Msg;

/// One message as SEARCH sees it. `load` reads its bytes on first need.
pub struct Candidate<'a, F: FnMut() -> Option<Vec<u8>>> {
    pub seq: u32,
    pub largest_seq: u32,
    pub largest_uid: u32,
    pub msg: &'a Msg,
    pub load: F,
    raw: Option<Option<Vec<u8>>>,
    text: Option<String>,
}

impl<'a, F: FnMut() -> Option<Vec<u8>>> Candidate<'a, F> {
    pub fn new(seq: u32, largest_seq: u32, largest_uid: u32, msg: &'a Msg, load: F) -> Self {
        Candidate {
            seq,
            largest_seq,
            largest_uid,
            msg,
            load,
            raw: None,
            text: None,
        }
    }

    fn raw(&mut self) -> Option<&[u8]> {
        if self.raw.is_none() {
            self.raw = Some((self.load)());
        }
        self.raw.as_ref().and_then(|r| r.as_deref())
    }

    fn header_contains(&mut self, name: &str, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        let Some(raw) = self.raw() else { return false };
        let header = &raw[..message::header_end(raw)];
        let mut values: Vec<String> = message::fields(header)
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, f)| message::lowercase_lossy(f).into_owned())
            .collect();
        // Encoded words (RFC 2047) are searched decoded, too.
        if let Some(m) = message::parse(raw)
            && let Some(h) = m
                .headers()
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case(name))
        {
            if let Some(t) = h.value().as_text() {
                values.push(t.to_lowercase());
            }
            if let Some(a) = h.value().as_address() {
                for x in a.iter() {
                    values.push(
                        format!(
                            "{} <{}>",
                            x.name.as_deref().unwrap_or(""),
                            x.address.as_deref().unwrap_or("")
                        )
                        .to_lowercase(),
                    );
                }
            }
        }
        // `HEADER name ""` matches every message that has the field.
        values.iter().any(|v| v.contains(&needle))
    }

    fn body_contains(&mut self, needle: &str, with_header: bool) -> bool {
        let needle = needle.to_lowercase();
        if self.text.is_none() {
            let text = match self.raw() {
                Some(raw) => {
                    let decoded = message::parse(raw)
                        .map(|m| message::search_text(&m))
                        .unwrap_or_default();
                    let body =
                        message::lowercase_lossy(&raw[message::header_end(raw)..]).into_owned();
                    format!("{decoded}\n{body}")
                }
                None => String::new(),
            };
            self.text = Some(text);
        }
        if self.text.as_deref().is_some_and(|t| t.contains(&needle)) {
            return true;
        }
        with_header
            && self.raw().is_some_and(|raw| {
                message::lowercase_lossy(&raw[..message::header_end(raw)]).contains(&needle)
            })
    }

    fn sent_date(&mut self) -> Option<NaiveDate> {
        let raw = self.raw()?;
        let m = message::parse(raw)?;
        let d = m.date()?;
        Utc.timestamp_opt(d.to_timestamp(), 0)
            .single()
            .map(|t| t.date_naive())
    }

    fn internal_date(&self) -> Option<NaiveDate> {
        Utc.timestamp_opt(self.msg.date, 0)
            .single()
            .map(|t| t.date_naive())
    }

    pub fn matches(&mut self, key: &SearchKey<'_>) -> bool {
        use SearchKey as K;
        let s = |a: &imap_next::imap_types::core::AString<'_>| {
            String::from_utf8_lossy(a.as_ref()).into_owned()
        };
        match key {
            K::And(keys) => keys.as_ref().iter().all(|k| self.matches(k)),
            K::SequenceSet(set) => NumSet::new(set, self.largest_seq).contains(self.seq),
            K::Uid(set) => NumSet::new(set, self.largest_uid).contains(self.msg.uid),
            K::All => true,
            K::Answered => self.msg.has("\\Answered"),
            K::Deleted => self.msg.has("\\Deleted"),
            K::Draft => self.msg.has("\\Draft"),
            K::Flagged => self.msg.has("\\Flagged"),
            K::Seen => self.msg.has("\\Seen"),
            K::Unanswered => !self.msg.has("\\Answered"),
            K::Undeleted => !self.msg.has("\\Deleted"),
            K::Undraft => !self.msg.has("\\Draft"),
            K::Unflagged => !self.msg.has("\\Flagged"),
            K::Unseen => !self.msg.has("\\Seen"),
            K::Keyword(k) => self.msg.has(k.inner()),
            K::Unkeyword(k) => !self.msg.has(k.inner()),
            // The bridge keeps no \Recent: no message is new, every message is old.
            K::New | K::Recent => false,
            K::Old => true,
            K::Larger(n) => self.msg.size > *n,
            K::Smaller(n) => self.msg.size < *n,
            K::Before(d) => self.internal_date().is_some_and(|x| x < *d.as_ref()),
            K::On(d) => self.internal_date().is_some_and(|x| x == *d.as_ref()),
            K::Since(d) => self.internal_date().is_some_and(|x| x >= *d.as_ref()),
            K::SentBefore(d) => self.sent_date().is_some_and(|x| x < *d.as_ref()),
            K::SentOn(d) => self.sent_date().is_some_and(|x| x == *d.as_ref()),
            K::SentSince(d) => self.sent_date().is_some_and(|x| x >= *d.as_ref()),
            K::From(v) => self.header_contains("From", &s(v)),
            K::To(v) => self.header_contains("To", &s(v)),
            K::Cc(v) => self.header_contains("Cc", &s(v)),
            K::Bcc(v) => self.header_contains("Bcc", &s(v)),
            K::Subject(v) => self.header_contains("Subject", &s(v)),
            K::Header(name, v) => self.header_contains(&s(name), &s(v)),
            K::Body(v) => self.body_contains(&s(v), false),
            K::Text(v) => self.body_contains(&s(v), true),
            K::Not(k) => !self.matches(k),
            K::Or(a, b) => self.matches(a) || self.matches(b),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}
