//! Letters from the [`MailSource`] into the store: each once (by id), as its RFC 5322
//! bytes with the verdict on top, in INBOX (or Sent for copies of one's own mail).
//!
//! The verdict is an `Authentication-Results` field (RFC 8601) with the authserv-id
//! `sealpost.bridge`; any such field or `X-Sealpost-*` field already in the letter is
//! removed first, so a sender cannot forge one. Legacy (gateway) mail also gets
//! `X-Sealpost-Legacy` and a `[not end-to-end]` prefix on its Subject, which every mail app
//! shows in the message list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::message;
use crate::shared::Shared;
use crate::source::{Folder, Letter, MailSource, Verdict};
use crate::store::NewMessage;

pub const AUTHSERV_ID: &str = "sealpost.bridge";
pub const LEGACY_PREFIX: &str = "[not end-to-end] ";
/// Wait after a failed fetch before asking the source again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Strips what only the bridge may say, and puts the verdict on top.
pub fn compose(letter: &Letter) -> Vec<u8> {
    let raw = &letter.rfc5322;
    let end = message::header_end(raw);
    let (header, body) = raw.split_at(end);
    let mut out = Vec::with_capacity(raw.len() + 256);
    let field = |out: &mut Vec<u8>, s: String| {
        out.extend_from_slice(sanitize(&s).as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let legacy = matches!(letter.verdict, Verdict::Legacy { .. });
    match &letter.verdict {
        Verdict::Verified { signer } => field(
            &mut out,
            format!(
                "Authentication-Results: {AUTHSERV_ID}; sealpost=pass (signature verified, end-to-end encrypted) header.from={signer}"
            ),
        ),
        Verdict::Unverified { reason } => field(
            &mut out,
            format!(
                "Authentication-Results: {AUTHSERV_ID}; sealpost=fail reason=\"{}\"",
                reason.replace('"', "'")
            ),
        ),
        Verdict::Legacy { note } => {
            field(
                &mut out,
                format!(
                    "Authentication-Results: {AUTHSERV_ID}; sealpost=none reason=\"legacy e-mail, not end-to-end\""
                ),
            );
            field(
                &mut out,
                format!("X-Sealpost-Legacy: not end-to-end; {note}"),
            );
        }
    }
    let mut had_subject = false;
    for (name, f) in message::fields(header) {
        let own_ar = name.eq_ignore_ascii_case(b"Authentication-Results")
            && message::lowercase_lossy(&f[name.len()..])
                .trim_start_matches([':', ' ', '\t'])
                .starts_with(AUTHSERV_ID);
        let own_x = name.len() >= 11 && name[..11].eq_ignore_ascii_case(b"X-Sealpost-");
        if own_ar || own_x {
            continue;
        }
        if legacy && name.eq_ignore_ascii_case(b"Subject") && !had_subject {
            had_subject = true;
            let colon = f.iter().position(|b| *b == b':').unwrap_or(f.len() - 1);
            out.extend_from_slice(b"Subject: ");
            out.extend_from_slice(LEGACY_PREFIX.as_bytes());
            let rest = &f[colon + 1..];
            let skip = rest
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            out.extend_from_slice(&rest[skip..]);
            continue;
        }
        out.extend_from_slice(f);
    }
    if legacy && !had_subject {
        field(&mut out, format!("Subject: {}", LEGACY_PREFIX.trim_end()));
    }
    // The blank line (as the letter had it) and the body, untouched.
    if header.ends_with(b"\r\n\r\n") || header.ends_with(b"\n\n") || end == 0 {
        let blank = if header.ends_with(b"\r\n\r\n") {
            &b"\r\n"[..]
        } else {
            &b"\n"[..]
        };
        out.extend_from_slice(blank);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(body);
    out
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// Stores the letters not stored before; returns how many were new.
pub fn import(shared: &Shared, letters: &[Letter]) -> crate::Result<usize> {
    let fresh: Vec<(&Letter, Vec<u8>)> = shared.with_store(|s| {
        letters
            .iter()
            .filter(|l| !s.is_imported(&l.id))
            .map(|l| (l, compose(l)))
            .collect()
    });
    let mut n = 0;
    for folder in [Folder::Inbox, Folder::Sent] {
        let msgs: Vec<NewMessage<'_>> = fresh
            .iter()
            .filter(|(l, _)| l.folder == folder)
            .map(|(l, bytes)| NewMessage {
                bytes,
                flags: if folder == Folder::Sent {
                    BTreeSet::from(["\\Seen".to_owned()])
                } else {
                    BTreeSet::new()
                },
                date: l.received,
                source_id: Some(l.id.clone()),
            })
            .collect();
        if msgs.is_empty() {
            continue;
        }
        let name = if folder == Folder::Inbox {
            "INBOX"
        } else {
            "Sent"
        };
        shared.with_store(|s| s.append(name, &msgs))?;
        n += msgs.len();
    }
    Ok(n)
}

/// Pulls from the source for as long as the bridge runs.
pub async fn run<S: MailSource>(mut source: S, shared: Arc<Shared>) {
    loop {
        let known = {
            let shared = shared.clone();
            move |id: &str| shared.with_store(|s| s.is_imported(id))
        };
        match source.next_batch(&known).await {
            Ok(letters) => match import(&shared, &letters) {
                Ok(0) => {}
                Ok(n) => tracing::info!(new = n, "bridge imported letters"),
                Err(e) => {
                    tracing::error!(error = %e, "bridge could not store letters");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "bridge fetch failed");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &str, verdict: Verdict) -> Letter {
        Letter {
            id: "e1".into(),
            rfc5322: raw.as_bytes().to_vec(),
            verdict,
            received: 1,
            folder: Folder::Inbox,
        }
    }

    #[test]
    fn verdict_on_top_and_forged_fields_dropped() {
        let raw = "Authentication-Results: sealpost.bridge; sealpost=pass\r\nX-Sealpost-Legacy: no\r\nSubject: Hi\r\nFrom: a@alpha.test\r\n\r\nBody\r\n";
        let out = String::from_utf8(compose(&letter(
            raw,
            Verdict::Unverified {
                reason: "unknown key".into(),
            },
        )))
        .unwrap();
        assert!(out.starts_with("Authentication-Results: sealpost.bridge; sealpost=fail"));
        assert_eq!(out.matches("sealpost.bridge").count(), 1);
        assert!(!out.contains("X-Sealpost-Legacy"));
        assert!(out.ends_with("Subject: Hi\r\nFrom: a@alpha.test\r\n\r\nBody\r\n"));
    }

    #[test]
    fn legacy_mail_is_marked_in_the_subject() {
        let raw = "From: x@example.org\r\nSubject:  Offer\r\n\r\nHello\r\n";
        let out = String::from_utf8(compose(&letter(
            raw,
            Verdict::Legacy {
                note: "via gateway".into(),
            },
        )))
        .unwrap();
        assert!(
            out.contains("\r\nSubject: [not end-to-end] Offer\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Sealpost-Legacy: not end-to-end; via gateway\r\n"));
        let no_subject = String::from_utf8(compose(&letter(
            "From: x@example.org\r\n\r\nb",
            Verdict::Legacy { note: "n".into() },
        )))
        .unwrap();
        assert!(
            no_subject.contains("Subject: [not end-to-end]\r\n\r\nb"),
            "{no_subject}"
        );
    }
}
