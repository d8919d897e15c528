//! The plaintext letter and its RFC 5322/MIME form. Building uses mail-builder, parsing uses
//! mail-parser, so that after decryption any mail tool can read a letter.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::raw::Raw;
use mail_parser::{MessageParser, MimeHeaders};

use crate::error::Error;
use crate::limits::{MAX_ATTACHMENTS, MAX_LETTER_BYTES, MAX_RECIPIENTS, MAX_SUBJECT_BYTES};
use crate::padding::PAD_HEADER;
use crate::types::Address;

/// Header that marks a letter that entered Sealpost through the SMTP gateway.
pub const LEGACY_HEADER: &str = "X-Sealpost-Legacy";
/// Header, in the copy of a letter sealed to a gateway, naming the legacy recipients the
/// gateway is to send it to (the other recipients get their own end-to-end copies).
pub const LEGACY_TO_HEADER: &str = "X-Sealpost-Legacy-To";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub media_type: String,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub from: Address,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub subject: String,
    /// Seconds since the Unix epoch, as written by the sender.
    pub date: i64,
    /// Without angle brackets.
    pub message_id: String,
    /// Without angle brackets.
    pub in_reply_to: Option<String>,
    pub body: String,
    pub attachments: Vec<Attachment>,
    /// Set by the gateway: how this letter entered Sealpost when it came through legacy SMTP.
    pub legacy: Option<String>,
    /// Set by the client in the copy sealed to a gateway: the legacy recipients it is for.
    pub legacy_to: Vec<Address>,
}

/// A letter's MIME encoding before it is written: see [`Letter::compose`].
pub(crate) struct Composed<'a> {
    /// mail-builder's message with a placeholder body.
    skeleton: Vec<u8>,
    /// The placeholder (its 7bit header line and text) is `skeleton[body_at..body_end]`.
    body_at: usize,
    body_end: usize,
    body: crate::mime::EncodedBody<'a>,
    len: usize,
}

impl Composed<'_> {
    /// Length of the encoding in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes the encoding; the body goes in pieces of at most 64 KiB.
    pub(crate) fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.skeleton[..self.body_at])?;
        self.body.write_to(w)?;
        w.write_all(&self.skeleton[self.body_end..])
    }
}

impl Letter {
    /// A new letter with a fresh message id.
    pub fn new(
        from: Address,
        to: Vec<Address>,
        subject: impl Into<String>,
        body: impl Into<String>,
        date: i64,
    ) -> Self {
        let message_id = format!(
            "{}@{}",
            hex::encode(rand::random::<[u8; 16]>()),
            from.domain()
        );
        Letter {
            from,
            to,
            cc: Vec::new(),
            subject: subject.into(),
            date,
            message_id,
            in_reply_to: None,
            body: body.into(),
            attachments: Vec::new(),
            legacy: None,
            legacy_to: Vec::new(),
        }
    }

    /// Checks the limits that apply before a letter is sealed.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what, reason: &str| Error::InvalidField {
            what,
            reason: reason.to_string(),
        };
        if self.to.is_empty() && self.cc.is_empty() {
            return Err(bad("letter", "no recipients"));
        }
        if self.to.len() + self.cc.len() > MAX_RECIPIENTS {
            return Err(Error::TooLong {
                what: "recipients",
                len: self.to.len() + self.cc.len(),
                max: MAX_RECIPIENTS,
            });
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(Error::TooLong {
                what: "attachments",
                len: self.attachments.len(),
                max: MAX_ATTACHMENTS,
            });
        }
        if self.subject.len() > MAX_SUBJECT_BYTES {
            return Err(Error::TooLong {
                what: "subject",
                len: self.subject.len(),
                max: MAX_SUBJECT_BYTES,
            });
        }
        if self.subject.contains(['\r', '\n']) {
            return Err(bad("subject", "contains a line break"));
        }
        for id in std::iter::once(&self.message_id).chain(self.in_reply_to.iter()) {
            if id.is_empty()
                || id.len() > 250
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
            {
                return Err(bad(
                    "message id",
                    "must be 1-250 printable ASCII characters without < >",
                ));
            }
        }
        for a in &self.attachments {
            if a.name.is_empty()
                || a.name.len() > 255
                || a.name.contains(['/', '\\', '\0', '\r', '\n'])
            {
                return Err(bad(
                    "attachment name",
                    "must be 1-255 bytes without path separators or line breaks",
                ));
            }
            let mt_ok = a.media_type.len() <= 127
                && a.media_type
                    .split_once('/')
                    .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
                && a.media_type
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+-.".contains(&b));
            if !mt_ok {
                return Err(bad("attachment media type", "must look like type/subtype"));
            }
        }
        if let Some(l) = &self.legacy
            && (l.len() > 2000 || l.contains(['\r', '\n']))
        {
            return Err(bad(
                "legacy label",
                "must be one line of at most 2000 bytes",
            ));
        }
        Ok(())
    }

    /// The RFC 5322/MIME encoding of the letter.
    pub fn to_rfc5322(&self) -> Result<Vec<u8>, Error> {
        let composed = self.compose()?;
        let mut out = Vec::with_capacity(composed.len());
        composed
            .write_to(&mut out)
            .map_err(|e| Error::LetterParse(e.to_string()))?;
        Ok(out)
    }

    /// The letter's MIME encoding, ready to be written, its length known. mail-builder
    /// writes the headers and structure around a placeholder body; the body's transfer
    /// encoding is then written in its place by [`crate::mime`] (the same bytes
    /// mail-builder would write, made much faster), so that a sealed letter streams it
    /// into the signer without building the message first.
    pub(crate) fn compose(&self) -> Result<Composed<'_>, Error> {
        self.validate()?;
        let token = hex::encode(rand::random::<[u8; 16]>());
        let skeleton = self
            .builder(&token)
            .write_to_vec()
            .map_err(|e| Error::LetterParse(e.to_string()))?;
        // A 32-character line of hex is written as 7bit, exactly once (the token is fresh).
        let needle = [crate::mime::Cte::SevenBit.header(), token.as_bytes()].concat();
        let at = skeleton
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .ok_or_else(|| Error::LetterParse("body placeholder not found".into()))?;
        let body = crate::mime::EncodedBody::new(self.body.as_bytes())
            .map_err(|e| Error::LetterParse(e.to_string()))?;
        let composed = Composed {
            len: skeleton.len() - needle.len() + body.len,
            body_at: at,
            body_end: at + needle.len(),
            skeleton,
            body,
        };
        if composed.len > MAX_LETTER_BYTES {
            return Err(Error::LetterTooLarge {
                len: composed.len,
                max: MAX_LETTER_BYTES,
            });
        }
        Ok(composed)
    }

    fn builder<'a>(&'a self, body: &'a str) -> MessageBuilder<'a> {
        fn addrs(v: &[Address]) -> MbAddress<'_> {
            MbAddress::new_list(
                v.iter()
                    .map(|a| MbAddress::new_address(None::<&str>, a.as_str()))
                    .collect(),
            )
        }
        let mut b = MessageBuilder::new()
            .from(MbAddress::new_address(None::<&str>, self.from.as_str()))
            .subject(self.subject.as_str())
            .date(self.date)
            .message_id(self.message_id.as_str())
            .text_body(body);
        if !self.to.is_empty() {
            b = b.to(addrs(&self.to));
        }
        if !self.cc.is_empty() {
            b = b.cc(addrs(&self.cc));
        }
        if let Some(irt) = &self.in_reply_to {
            b = b.in_reply_to(irt.as_str());
        }
        if let Some(l) = &self.legacy {
            b = b.header(LEGACY_HEADER, Raw::new(l.as_str()));
        }
        let legacy_to = self
            .legacy_to
            .iter()
            .map(Address::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if !legacy_to.is_empty() {
            b = b.header(LEGACY_TO_HEADER, Raw::new(legacy_to));
        }
        for a in &self.attachments {
            b = b.attachment(a.media_type.as_str(), a.name.as_str(), a.data.as_slice());
        }
        b
    }

    /// Parses an RFC 5322/MIME message. The padding header of a sealed letter is ignored.
    pub fn from_rfc5322(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_LETTER_BYTES + crate::limits::MAX_SEALED_BYTES {
            return Err(Error::LetterTooLarge {
                len: bytes.len(),
                max: MAX_LETTER_BYTES,
            });
        }
        // A single-part quoted-printable text letter (a long body without attachments):
        // mail-parser reads its headers only, the body is decoded here in runs.
        if let Some(head) = header_block(bytes)
            && let Some(msg) = MessageParser::default().parse(&bytes[..head])
            && is_single_qp_text(&msg)
            && let Some(body) = crate::mime::decode_qp_strict(&bytes[head..])
            && let Ok(body) = String::from_utf8(body)
        {
            return Self::from_parsed(msg, Some(body));
        }
        let msg = MessageParser::default()
            .parse(bytes)
            .ok_or_else(|| Error::LetterParse("no message found".into()))?;
        Self::from_parsed(msg, None)
    }

    fn from_parsed(msg: mail_parser::Message<'_>, body: Option<String>) -> Result<Self, Error> {
        if msg.headers().is_empty() || msg.from().is_none() {
            return Err(Error::LetterParse("missing From header".into()));
        }
        let first_addr = |a: Option<&mail_parser::Address<'_>>| -> Option<String> {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_string)
        };
        let from_raw = first_addr(msg.from())
            .ok_or_else(|| Error::LetterParse("From has no address".into()))?;
        let from = Address::parse(&from_raw)?;
        let list = |a: Option<&mail_parser::Address<'_>>| -> Result<Vec<Address>, Error> {
            let mut out = Vec::new();
            if let Some(a) = a {
                for addr in a.iter() {
                    if let Some(s) = addr.address() {
                        out.push(Address::parse(s)?);
                    }
                }
            }
            Ok(out)
        };
        let to = list(msg.to())?;
        let cc = list(msg.cc())?;
        if to.len() + cc.len() > MAX_RECIPIENTS {
            return Err(Error::TooLong {
                what: "recipients",
                len: to.len() + cc.len(),
                max: MAX_RECIPIENTS,
            });
        }
        let attachments: Vec<Attachment> = msg
            .attachments()
            .take(MAX_ATTACHMENTS + 1)
            .map(|p| Attachment {
                name: p.attachment_name().unwrap_or("attachment").to_string(),
                media_type: p
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(s) => format!("{}/{}", ct.ctype(), s),
                        None => ct.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".into())
                    .to_ascii_lowercase(),
                data: p.contents().to_vec(),
            })
            .collect();
        if attachments.len() > MAX_ATTACHMENTS {
            return Err(Error::TooLong {
                what: "attachments",
                len: attachments.len(),
                max: MAX_ATTACHMENTS,
            });
        }
        let legacy = msg.header_raw(LEGACY_HEADER).map(|s| s.trim().to_string());
        let mut legacy_to = Vec::new();
        if let Some(list) = msg.header_raw(LEGACY_TO_HEADER) {
            for a in list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .take(MAX_RECIPIENTS + 1)
            {
                legacy_to.push(Address::parse(a)?);
            }
            if legacy_to.len() > MAX_RECIPIENTS {
                return Err(Error::TooLong {
                    what: "legacy recipients",
                    len: legacy_to.len(),
                    max: MAX_RECIPIENTS,
                });
            }
        }
        let _ = PAD_HEADER; // the padding header carries nothing and is simply not read
        Ok(Letter {
            from,
            to,
            cc,
            subject: msg.subject().unwrap_or("").to_string(),
            date: msg.date().map(|d| d.to_timestamp()).unwrap_or(0),
            message_id: msg.message_id().unwrap_or("").to_string(),
            in_reply_to: msg.in_reply_to().as_text().map(str::to_string),
            body: match body {
                Some(b) => b,
                None => msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
            },
            attachments,
            legacy,
            legacy_to,
        })
    }
}

/// Where the header block ends (after its blank line), when its lines end in CRLF.
fn header_block(bytes: &[u8]) -> Option<usize> {
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    // A bare LF would end the header block elsewhere for mail-parser.
    let bare_lf = bytes[..head]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    (!bare_lf).then_some(head)
}

/// Whether a message is one `text/plain; charset=utf-8` part in quoted-printable, not an
/// attachment: then its body is all of the text and mail-parser would decode it as
/// [`crate::mime::decode_qp_strict`] does.
fn is_single_qp_text(msg: &mail_parser::Message<'_>) -> bool {
    let Some(ct) = msg.content_type() else {
        return false;
    };
    ct.ctype().eq_ignore_ascii_case("text")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("plain"))
        && ct.attributes().unwrap_or_default().iter().all(|a| {
            a.name.eq_ignore_ascii_case("charset") && a.value.eq_ignore_ascii_case("utf-8")
        })
        && ct.attribute("charset").is_some()
        && msg
            .content_transfer_encoding()
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
        && msg.content_disposition().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    pub(crate) fn sample() -> Letter {
        let mut l = Letter::new(
            addr("alice@alpha.test"),
            vec![addr("bob@beta.test")],
            "Hello, Bob",
            "Hi Bob,\r\nsee attached.\r\n",
            1_700_000_000,
        );
        l.cc = vec![addr("carol@gamma.test")];
        l.in_reply_to = Some("earlier@beta.test".into());
        l.attachments.push(Attachment {
            name: "notes.bin".into(),
            media_type: "application/octet-stream".into(),
            data: (0..=255u8).collect(),
        });
        l
    }

    #[test]
    fn letter_round_trips_through_rfc5322() {
        let l = sample();
        let bytes = l.to_rfc5322().unwrap();
        let back = Letter::from_rfc5322(&bytes).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn legacy_label_round_trips() {
        let mut l = sample();
        l.legacy = Some("arrived via legacy SMTP, not end-to-end; mail from=<x@y.example>".into());
        l.legacy_to = vec![addr("carol@legacy.test"), addr("dave@legacy.test")];
        let back = Letter::from_rfc5322(&l.to_rfc5322().unwrap()).unwrap();
        assert_eq!(back.legacy, l.legacy);
        assert_eq!(back.legacy_to, l.legacy_to);
    }

    #[test]
    fn header_injection_is_refused() {
        let mut l = sample();
        l.subject = "hi\r\nBcc: eve@evil.test".into();
        assert!(matches!(
            l.to_rfc5322(),
            Err(Error::InvalidField {
                what: "subject",
                ..
            })
        ));
        let mut l = sample();
        l.attachments[0].name = "../../etc/passwd".into();
        assert!(l.to_rfc5322().is_err());
    }

    #[test]
    fn long_bodies_read_the_same_on_the_fast_path() {
        let line = "x".repeat(100);
        for body in [
            format!("{line}\r\nsecond line {line} = sign\r\n"),
            format!("caf\u{e9} {line}\t\r\n trailing space \r\n{line} "),
            "y".repeat(70_000),
        ] {
            let mut l = sample();
            l.attachments.clear();
            l.body = body;
            let bytes = l.to_rfc5322().unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("quoted-printable"), "{text}");
            let head = header_block(&bytes).unwrap();
            let msg = MessageParser::default().parse(&bytes[..head]).unwrap();
            assert!(is_single_qp_text(&msg), "takes the fast path");
            let full =
                Letter::from_parsed(MessageParser::default().parse(&bytes).unwrap(), None).unwrap();
            let fast = Letter::from_rfc5322(&bytes).unwrap();
            assert_eq!(fast, full);
            assert_eq!(fast, l);
        }
    }

    #[test]
    fn not_a_letter() {
        assert!(Letter::from_rfc5322(b"").is_err());
        assert!(Letter::from_rfc5322(b"just some text without headers").is_err());
    }
}
