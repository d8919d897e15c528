//! What IMAP shows of a stored message: header fields, body sections (RFC 3501 6.4.5),
//! ENVELOPE and BODYSTRUCTURE. MIME is parsed by mail-parser; this module only maps its
//! part tree and byte offsets to IMAP's section numbers and types.

use std::borrow::Cow;

use imap_next::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_next::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_next::imap_types::envelope::{Address as ImapAddress, Envelope};
use imap_next::imap_types::fetch::{Part, Section};
use mail_parser::{Address, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Deepest MIME nesting BODYSTRUCTURE and section lookups follow.
const MAX_DEPTH: usize = 32;

/// Offset just past the blank line that ends the header (or the end, if there is none).
pub fn header_end(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        // At the start of a line: an empty line ends the header.
        if raw[i..].starts_with(b"\r\n") {
            return i + 2;
        }
        if raw[i] == b'\n' {
            return i + 1;
        }
        match raw[i..].iter().position(|b| *b == b'\n') {
            Some(p) => i += p + 1,
            None => return raw.len(),
        }
    }
    raw.len()
}

/// The header fields of a header block: (name, the whole field with its line ends).
pub fn fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < header.len() {
        let end = match header[i..].iter().position(|b| *b == b'\n') {
            Some(p) => i + p + 1,
            None => header.len(),
        };
        let next_folds = end < header.len() && matches!(header[end], b' ' | b'\t');
        if !next_folds {
            let field = &header[start..end];
            if let Some(colon) = field.iter().position(|b| *b == b':') {
                out.push((trim(&field[..colon]), field));
            }
            start = end;
        }
        i = end;
    }
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |p| p + 1);
    &b[s..e]
}

/// `HEADER.FIELDS` / `HEADER.FIELDS.NOT`: the chosen fields and a closing blank line.
pub fn select_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, field) in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(field);
            if !field.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The unfolded value of the first field named `name`, if any.
pub fn field_value(header: &[u8], name: &str) -> Option<String> {
    fields(header)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, f)| {
            let colon = f.iter().position(|b| *b == b':').unwrap_or(0);
            let v: Vec<u8> = f[colon + 1..]
                .iter()
                .copied()
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect();
            String::from_utf8_lossy(trim(&v)).into_owned()
        })
}

pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// The bytes a FETCH `BODY[section]` names, or `None` when the section does not exist.
pub fn section(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(raw.to_vec());
    };
    let names = |list: &Vec1<AString<'_>>| -> Vec<Vec<u8>> {
        list.as_ref().iter().map(|a| a.as_ref().to_vec()).collect()
    };
    // The message that HEADER/TEXT apply to: the top one, or an encapsulated message/rfc822.
    let message_at = |part: Option<&Part>| -> Option<&[u8]> {
        match part {
            None => Some(raw),
            Some(p) => {
                let t = locate(raw, p.0.as_ref(), 0)?;
                t.is_message.then_some(&raw[t.body.0..t.body.1])
            }
        }
    };
    match section {
        Section::Part(p) => {
            let t = locate(raw, p.0.as_ref(), 0)?;
            Some(raw[t.body.0..t.body.1].to_vec())
        }
        Section::Mime(p) => {
            let t = locate(raw, p.0.as_ref(), 0)?;
            Some(raw[t.header.0..t.header.1].to_vec())
        }
        Section::Header(p) => {
            let m = message_at(p.as_ref())?;
            Some(m[..header_end(m)].to_vec())
        }
        Section::Text(p) => {
            let m = message_at(p.as_ref())?;
            Some(m[header_end(m)..].to_vec())
        }
        Section::HeaderFields(p, list) => {
            let m = message_at(p.as_ref())?;
            Some(select_fields(&m[..header_end(m)], &names(list), false))
        }
        Section::HeaderFieldsNot(p, list) => {
            let m = message_at(p.as_ref())?;
            Some(select_fields(&m[..header_end(m)], &names(list), true))
        }
    }
}

/// Where a numbered part lies in `raw`: its MIME header and its body, as byte ranges.
struct Target {
    header: (usize, usize),
    body: (usize, usize),
    is_message: bool,
}

fn locate(raw: &[u8], path: &[std::num::NonZeroU32], depth: usize) -> Option<Target> {
    if depth > MAX_DEPTH || path.is_empty() {
        return None;
    }
    let msg = parse(raw)?;
    locate_in(&msg, raw, 0, path, depth)
}

fn locate_in(
    msg: &Message<'_>,
    raw: &[u8],
    part_id: usize,
    path: &[std::num::NonZeroU32],
    depth: usize,
) -> Option<Target> {
    let part = msg.parts.get(part_id)?;
    let n = path[0].get() as usize;
    let child_id = match &part.body {
        PartType::Multipart(children) => *children.get(n - 1)? as usize,
        // A single-part message (or encapsulated message) has one part: itself, as 1.
        _ if n == 1 => part_id,
        _ => return None,
    };
    let child = msg.parts.get(child_id)?;
    let target = span(child, raw.len());
    let rest = &path[1..];
    if rest.is_empty() {
        return Some(target);
    }
    if target.is_message {
        let inner = &raw[target.body.0..target.body.1];
        let t = locate(inner, rest, depth + 1)?;
        let base = target.body.0;
        return Some(Target {
            header: (t.header.0 + base, t.header.1 + base),
            body: (t.body.0 + base, t.body.1 + base),
            is_message: t.is_message,
        });
    }
    if matches!(child.body, PartType::Multipart(_)) && child_id != part_id {
        return locate_in(msg, raw, child_id, rest, depth + 1);
    }
    None
}

fn span(part: &MessagePart<'_>, len: usize) -> Target {
    let clamp = |v: u32| (v as usize).min(len);
    let (h, b, e) = (
        clamp(part.offset_header),
        clamp(part.offset_body),
        clamp(part.offset_end),
    );
    Target {
        header: (h.min(b), b),
        body: (b, e.max(b)),
        is_message: is_rfc822(part),
    }
}

fn is_rfc822(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
    })
}

pub fn nstring(s: Option<&str>) -> NString<'static> {
    match s {
        None => NString(None),
        Some(s) => NString(IString::try_from(s.to_owned()).ok().or_else(|| {
            let clean: String = s.chars().filter(|c| *c != '\0').collect();
            IString::try_from(clean).ok()
        })),
    }
}

fn istring(s: &str) -> IString<'static> {
    IString::try_from(s.to_owned()).unwrap_or_else(|_| {
        IString::try_from(
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect::<String>(),
        )
        .unwrap_or_else(|_| IString::Quoted(imap_next::imap_types::core::Quoted::unvalidated("")))
    })
}

/// Body bytes as an IMAP literal (NUL bytes, which literals may not hold, become spaces).
pub fn literal(bytes: Vec<u8>) -> NString<'static> {
    match Literal::try_from(bytes) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => NString(None),
    }
}

pub fn literal_lossy(mut bytes: Vec<u8>) -> NString<'static> {
    for b in bytes.iter_mut() {
        if *b == 0 {
            *b = b' ';
        }
    }
    literal(bytes)
}

/// The ENVELOPE of a message (RFC 3501 7.4.2).
pub fn envelope(raw: &[u8]) -> Envelope<'static> {
    let header = &raw[..header_end(raw)];
    let text = |name: &str| nstring(field_value(header, name).as_deref());
    let msg = parse(raw);
    let addrs = |a: Option<&Address<'_>>| -> Vec<ImapAddress<'static>> {
        a.map(addresses).unwrap_or_default()
    };
    let m = msg.as_ref();
    let from = addrs(m.and_then(|m| m.from()));
    let mut sender = addrs(m.and_then(|m| m.sender()));
    if sender.is_empty() {
        sender = from.clone();
    }
    let mut reply_to = addrs(m.and_then(|m| m.reply_to()));
    if reply_to.is_empty() {
        reply_to = from.clone();
    }
    Envelope {
        date: text("Date"),
        subject: nstring(
            msg.as_ref()
                .and_then(|m| m.subject())
                .or(field_value(header, "Subject").as_deref()),
        ),
        from,
        sender,
        reply_to,
        to: addrs(m.and_then(|m| m.to())),
        cc: addrs(m.and_then(|m| m.cc())),
        bcc: addrs(m.and_then(|m| m.bcc())),
        in_reply_to: text("In-Reply-To"),
        message_id: text("Message-ID"),
    }
}

fn addresses(a: &Address<'_>) -> Vec<ImapAddress<'static>> {
    let one = |name: Option<&str>, addr: Option<&str>| {
        let addr = addr.unwrap_or("");
        let (local, host) = addr.rsplit_once('@').unwrap_or((addr, ""));
        ImapAddress {
            name: nstring(name),
            adl: NString(None),
            mailbox: nstring(Some(local)),
            host: nstring(Some(host)),
        }
    };
    match a {
        Address::List(list) => list
            .iter()
            .map(|x| one(x.name.as_deref(), x.address.as_deref()))
            .collect(),
        Address::Group(groups) => {
            let mut out = Vec::new();
            for g in groups {
                // RFC 3501: a group starts with (NIL NIL "name" NIL) and ends with all NIL.
                out.push(ImapAddress {
                    name: NString(None),
                    adl: NString(None),
                    mailbox: nstring(g.name.as_deref()),
                    host: NString(None),
                });
                out.extend(
                    g.addresses
                        .iter()
                        .map(|x| one(x.name.as_deref(), x.address.as_deref())),
                );
                out.push(ImapAddress {
                    name: NString(None),
                    adl: NString(None),
                    mailbox: NString(None),
                    host: NString(None),
                });
            }
            out
        }
    }
}

/// The BODYSTRUCTURE of a message, without extension data.
pub fn body_structure(raw: &[u8]) -> BodyStructure<'static> {
    match parse(raw) {
        Some(msg) => structure_of(&msg, raw, 0, 0),
        None => text_plain(raw.len(), count_lines(raw)),
    }
}

fn structure_of(
    msg: &Message<'_>,
    raw: &[u8],
    part_id: usize,
    depth: usize,
) -> BodyStructure<'static> {
    let Some(part) = msg.parts.get(part_id) else {
        return text_plain(0, 0);
    };
    let t = span(part, raw.len());
    let body = &raw[t.body.0..t.body.1];
    let ct = part.content_type();
    let ctype = ct
        .map(|c| c.ctype().to_ascii_lowercase())
        .unwrap_or_else(|| "text".into());
    let subtype = ct
        .and_then(|c| c.subtype())
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "plain".into());
    let params: Vec<(IString<'static>, IString<'static>)> = ct
        .and_then(|c| c.attributes())
        .unwrap_or(&[])
        .iter()
        .filter(|a| !a.name.eq_ignore_ascii_case("boundary") || ctype == "multipart")
        .map(|a| (istring(&a.name.to_ascii_uppercase()), istring(&a.value)))
        .collect();
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> = if depth >= MAX_DEPTH {
            Vec::new()
        } else {
            children
                .iter()
                .map(|c| structure_of(msg, raw, *c as usize, depth + 1))
                .collect()
        };
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istring(&subtype),
                extension_data: None,
            };
        }
        return text_plain(body.len(), count_lines(body));
    }
    let basic = BasicFields {
        parameter_list: if params.is_empty() && ctype == "text" {
            vec![(istring("CHARSET"), istring("us-ascii"))]
        } else {
            params
        },
        id: nstring(part.content_id().map(|s| format!("<{s}>")).as_deref()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(
            &part
                .content_transfer_encoding()
                .unwrap_or("7bit")
                .to_ascii_uppercase(),
        ),
        size: u32::try_from(body.len()).unwrap_or(u32::MAX),
    };
    let lines = count_lines(body);
    let specific = if ctype == "text" {
        SpecificFields::Text {
            subtype: istring(&subtype),
            number_of_lines: lines,
        }
    } else if is_rfc822(part) && depth < MAX_DEPTH {
        SpecificFields::Message {
            envelope: Box::new(envelope(body)),
            body_structure: Box::new(body_structure_at(body, depth + 1)),
            number_of_lines: lines,
        }
    } else {
        SpecificFields::Basic {
            r#type: istring(&ctype),
            subtype: istring(&subtype),
        }
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: None,
    }
}

fn body_structure_at(raw: &[u8], depth: usize) -> BodyStructure<'static> {
    match parse(raw) {
        Some(msg) => structure_of(&msg, raw, 0, depth),
        None => text_plain(raw.len(), count_lines(raw)),
    }
}

fn text_plain(size: usize, lines: u32) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring("CHARSET"), istring("us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring("7BIT"),
                size: u32::try_from(size).unwrap_or(u32::MAX),
            },
            specific: SpecificFields::Text {
                subtype: istring("plain"),
                number_of_lines: lines,
            },
        },
        extension_data: None,
    }
}

fn count_lines(b: &[u8]) -> u32 {
    u32::try_from(b.iter().filter(|c| **c == b'\n').count()).unwrap_or(u32::MAX)
}

/// Decoded text for SEARCH BODY/TEXT: every text part of the message, lower-cased.
pub fn search_text(msg: &Message<'_>) -> String {
    let mut out = String::new();
    for part in &msg.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(&t.to_lowercase());
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

pub fn lowercase_lossy(b: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(b) {
        Cow::Borrowed(s) if !s.bytes().any(|c| c.is_ascii_uppercase()) => Cow::Borrowed(s),
        s => Cow::Owned(s.to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const MULTI: &[u8] = b"From: Alice <alice@alpha.test>\r\nTo: bob@beta.test\r\nSubject: Hello\r\n\tthere\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBody text\r\n--b1\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b1--\r\n";

    fn part(n: &[u32]) -> Part {
        Part(
            Vec1::try_from(
                n.iter()
                    .map(|x| NonZeroU32::new(*x).unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn header_fields_unfold_and_select() {
        let h = &MULTI[..header_end(MULTI)];
        assert_eq!(field_value(h, "subject").as_deref(), Some("Hello\tthere"));
        let sel = select_fields(h, &[b"SUBJECT".to_vec(), b"to".to_vec()], false);
        assert_eq!(
            sel,
            b"To: bob@beta.test\r\nSubject: Hello\r\n\tthere\r\n\r\n"
        );
    }

    #[test]
    fn numbered_parts_and_mime_headers() {
        let p1 = section(MULTI, Some(&Section::Part(part(&[1])))).unwrap();
        assert_eq!(p1, b"Body text");
        let p2 = section(MULTI, Some(&Section::Part(part(&[2])))).unwrap();
        assert_eq!(p2, b"JVBERi0=");
        let m2 = section(MULTI, Some(&Section::Mime(part(&[2])))).unwrap();
        assert!(m2.starts_with(b"Content-Type: application/pdf"));
        assert!(section(MULTI, Some(&Section::Part(part(&[3])))).is_none());
        let single = b"Subject: x\r\n\r\nhello\r\n";
        assert_eq!(
            section(single, Some(&Section::Part(part(&[1])))).unwrap(),
            b"hello\r\n"
        );
        assert_eq!(
            section(single, Some(&Section::Text(None))).unwrap(),
            b"hello\r\n"
        );
    }

    #[test]
    fn structure_and_envelope() {
        match body_structure(MULTI) {
            BodyStructure::Multi { bodies, .. } => assert_eq!(bodies.as_ref().len(), 2),
            other => panic!("expected multipart, got {other:?}"),
        }
        let env = envelope(MULTI);
        assert_eq!(env.from.len(), 1);
        assert_eq!(env.to.len(), 1);
        assert_eq!(env.sender, env.from);
    }
}
