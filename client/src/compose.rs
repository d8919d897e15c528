//! Drafts: what the user wants to send, before it is a sealed letter. Attachments are read
//! from files here (bounded), replies are derived from the letter they answer.

use std::io::Read;
use std::path::Path;

use sealpost_proto::Address;
use sealpost_proto::letter::{Attachment, Letter};
use sealpost_proto::limits::MAX_LETTER_BYTES;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub subject: String,
    pub body: String,
    pub attachments: Vec<Attachment>,
    pub in_reply_to: Option<String>,
}

impl Draft {
    /// Recipients, each once, in order (to first).
    pub fn recipients(&self) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        for a in self.to.iter().chain(&self.cc) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// The letter this draft becomes, from `from`, dated `date`; checked against the limits.
    pub fn to_letter(&self, from: &Address, date: i64) -> Result<Letter> {
        if self.to.is_empty() && self.cc.is_empty() {
            return Err(Error::input("recipients", "give at least one --to"));
        }
        let mut letter = Letter::new(
            from.clone(),
            self.to.clone(),
            self.subject.clone(),
            self.body.clone(),
            date,
        );
        letter.cc = self.cc.clone();
        letter.in_reply_to = self.in_reply_to.clone();
        letter.attachments = self.attachments.clone();
        letter.validate()?;
        let total: usize =
            self.body.len() + self.attachments.iter().map(|a| a.data.len()).sum::<usize>();
        // Base64 grows attachments by a third; refuse early what cannot fit.
        if total / 3 * 4 > MAX_LETTER_BYTES {
            return Err(Error::input(
                "letter",
                format!(
                    "about {} bytes once encoded, more than the limit of {MAX_LETTER_BYTES}",
                    total / 3 * 4
                ),
            ));
        }
        Ok(letter)
    }
}

/// Reads an attachment file. Its name is the file name; its media type a guess from the
/// extension.
pub fn read_attachment(path: &Path) -> Result<Attachment> {
    let err = |source| Error::ReadInput {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(Error::input(
            "attachment",
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > MAX_LETTER_BYTES as u64 {
        return Err(Error::input(
            "attachment",
            format!(
                "{} is {} bytes, more than a letter may hold ({MAX_LETTER_BYTES})",
                path.display(),
                meta.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_LETTER_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .map_err(err)?;
    if data.len() > MAX_LETTER_BYTES {
        return Err(Error::input(
            "attachment",
            format!("{} grew past the limit while reading", path.display()),
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::input("attachment", format!("{} has no file name", path.display()))
        })?;
    Ok(Attachment {
        media_type: media_type_for(&name).to_string(),
        name,
        data,
    })
}

/// A media type from a file name's extension; `application/octet-stream` when unsure.
pub fn media_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "text" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "asc" | "pgp" | "gpg" => "application/pgp-keys",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// A safe file name to save an attachment under: the last path component of what the
/// letter says, without control characters; never `.` or `..`.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    if trimmed.is_empty() {
        "attachment".to_string()
    } else {
        trimmed.chars().take(200).collect()
    }
}

/// The draft of a reply to `letter`, received by `me`; with `all`, everyone else on it is
/// copied.
pub fn reply_draft(letter: &Letter, me: &Address, all: bool, body: String) -> Draft {
    let subject = if letter
        .subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        letter.subject.clone()
    } else {
        format!("Re: {}", letter.subject)
    };
    let to = vec![letter.from.clone()];
    let mut cc = Vec::new();
    if all {
        for a in letter.to.iter().chain(&letter.cc) {
            if a != me && !to.contains(a) && !cc.contains(a) {
                cc.push(a.clone());
            }
        }
    }
    let in_reply_to = Some(letter.message_id.clone()).filter(|m| !m.is_empty());
    Draft {
        to,
        cc,
        subject,
        body,
        attachments: Vec::new(),
        in_reply_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn attachments_are_read_with_name_and_type() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("report.PDF");
        std::fs::write(&p, b"%PDF-1.4").unwrap();
        let a = read_attachment(&p).unwrap();
        assert_eq!(
            (a.name.as_str(), a.media_type.as_str(), a.data.as_slice()),
            ("report.PDF", "application/pdf", &b"%PDF-1.4"[..])
        );
        let e = read_attachment(&tmp.path().join("missing")).err().unwrap();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            read_attachment(tmp.path()).err().unwrap().exit_code(),
            1,
            "a directory is no attachment"
        );
    }

    #[test]
    fn drafts_need_recipients_and_respect_limits() {
        let me = addr("alice@alpha.test");
        let d = Draft {
            subject: "x".into(),
            ..Draft::default()
        };
        assert_eq!(d.to_letter(&me, 0).err().unwrap().exit_code(), 1);
        let d = Draft {
            to: vec![addr("bob@beta.test")],
            subject: "a\nb".into(),
            ..Draft::default()
        };
        assert_eq!(d.to_letter(&me, 0).err().unwrap().exit_code(), 1);
        let d = Draft {
            to: vec![addr("bob@beta.test"), addr("carol@gamma.test")],
            cc: vec![addr("bob@beta.test")],
            ..Draft::default()
        };
        assert_eq!(
            d.recipients(),
            vec![addr("bob@beta.test"), addr("carol@gamma.test")]
        );
        assert!(d.to_letter(&me, 0).is_ok());
    }

    #[test]
    fn replies_address_the_sender_and_keep_the_thread() {
        let me = addr("bob@beta.test");
        let mut l = Letter::new(
            addr("alice@alpha.test"),
            vec![me.clone(), addr("carol@gamma.test")],
            "Plans",
            "hi",
            5,
        );
        l.cc = vec![addr("dave@delta.test")];
        let r = reply_draft(&l, &me, false, "ok".into());
        assert_eq!(r.to, vec![addr("alice@alpha.test")]);
        assert!(r.cc.is_empty());
        assert_eq!(r.subject, "Re: Plans");
        assert_eq!(r.in_reply_to.as_deref(), Some(l.message_id.as_str()));
        let r = reply_draft(&l, &me, true, "ok".into());
        assert_eq!(
            r.cc,
            vec![addr("carol@gamma.test"), addr("dave@delta.test")]
        );
        l.subject = "éé".into();
        assert_eq!(reply_draft(&l, &me, false, String::new()).subject, "Re: éé");
        l.subject = "RE: Plans".into();
        assert_eq!(
            reply_draft(&l, &me, false, String::new()).subject,
            "RE: Plans"
        );
    }

    #[test]
    fn saved_names_cannot_escape() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name(".."), "attachment");
        assert_eq!(safe_file_name("..\\x.txt"), "x.txt");
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(safe_file_name("a\nb"), "ab");
    }
}
