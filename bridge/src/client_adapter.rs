//! The wiring to `sealpost-client`: letters of the profile's local store (fetched from its
//! home nodes) as the bridge's [`MailSource`], and the client's send as its [`Sender`].
//!
//! Fetching is a continuous loop, [`POLL_INTERVAL`] apart, so that new mail is in the
//! bridge within a second of reaching a home node. Sending follows the rules of
//! `sealpost send` run without a terminal: legacy recipients the user has not agreed to
//! before (`sealpost send --legacy`, or a legacy domain) are refused with the client's
//! reason, never sent silently. Each Bcc recipient gets a letter of its own (To: that
//! recipient), so no recipient learns of a Bcc.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MimeHeaders;
use sealpost_client::Client;
use sealpost_client::compose::Draft;
use sealpost_client::error::ErrorKind;
use sealpost_client::progress::NoProgress;
use sealpost_client::send::LegacyChoice;
use sealpost_client::store::{Folder as ClientFolder, Trust};
use sealpost_proto::Address;
use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Attachment;
use tokio::sync::Mutex;

use crate::source::{
    Folder, Letter, MailSource, SendError, SendOutcome, Sender, SourceError, Submission, Verdict,
};

/// Time between two fetches from the home nodes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(400);

/// One open profile shared by the fetch loop and the SMTP sessions.
pub struct Profile {
    client: Mutex<Client>,
    keys: Keyring,
    /// Sent copies of letters submitted through this bridge: Sent has the message as the
    /// app submitted it, so the source never yields these (set while the client is locked,
    /// before the fetch loop can see the copy).
    own_copies: std::sync::Mutex<HashSet<String>>,
}

impl Profile {
    pub fn new(client: Client, keys: Keyring) -> Arc<Profile> {
        Arc::new(Profile {
            client: Mutex::new(client),
            keys,
            own_copies: Default::default(),
        })
    }

    fn is_own_copy(&self, id: &str) -> bool {
        self.own_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }
}

pub struct ClientSource {
    profile: Arc<Profile>,
    first: bool,
}

impl ClientSource {
    pub fn new(profile: Arc<Profile>) -> ClientSource {
        ClientSource {
            profile,
            first: true,
        }
    }
}

fn verdict(trust: &Trust, legacy: Option<&str>) -> Verdict {
    if let Some(note) = legacy {
        return Verdict::Legacy {
            note: note.replace(['\r', '\n'], " "),
        };
    }
    match trust {
        Trust::Verified { signer } => Verdict::Verified {
            signer: signer.clone(),
        },
        Trust::Unverified { reason } | Trust::Unreadable { reason } => Verdict::Unverified {
            reason: reason.clone(),
        },
    }
}

impl MailSource for ClientSource {
    async fn next_batch(
        &mut self,
        known: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Vec<Letter>, SourceError> {
        if !std::mem::take(&mut self.first) {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let p = &self.profile;
        let client = p.client.lock().await;
        if let Err(e) = client.fetch(&p.keys, &NoProgress).await {
            // Letters fetched before stay readable; say why this round failed.
            tracing::warn!(error = %e, "bridge fetch from the home nodes failed");
        }
        let stored = client
            .messages()
            .list()
            .map_err(|e| SourceError::Failed(e.to_string()))?;
        let mut out = Vec::new();
        for meta in stored {
            let id = meta.id.to_hex();
            if known(&id) || meta.header.is_none() || p.is_own_copy(&id) {
                continue;
            }
            let read = match client.read(&meta.id, &p.keys) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "bridge could not open a stored letter");
                    continue;
                }
            };
            let Some(letter) = read.letter else { continue };
            let rfc5322 = match letter.to_rfc5322() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "bridge could not encode a letter");
                    continue;
                }
            };
            out.push(Letter {
                id,
                rfc5322,
                verdict: verdict(&read.meta.trust, letter.legacy.as_deref()),
                received: read.meta.received_at as i64,
                folder: if read.meta.folder == ClientFolder::Sent {
                    Folder::Sent
                } else {
                    Folder::Inbox
                },
            });
        }
        Ok(out)
    }
}

pub struct ClientSender {
    profile: Arc<Profile>,
}

impl ClientSender {
    pub fn new(profile: Arc<Profile>) -> ClientSender {
        ClientSender { profile }
    }
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|a| {
        a.iter()
            .filter_map(|x| x.address.as_deref().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

fn parse_address(s: &str) -> Result<Address, SendError> {
    Address::parse(s).map_err(|e| SendError::Permanent(format!("recipient {s}: {e}")))
}

/// The draft a submitted message becomes: To and Cc from its header (those also in RCPT
/// TO), text body, attachments decoded.
fn draft_of(msg: &[u8], rcpt: &[String]) -> Result<(Draft, Vec<String>), SendError> {
    let parsed = mail_parser::MessageParser::default()
        .parse(msg)
        .ok_or_else(|| SendError::Permanent("the message could not be parsed".into()))?;
    let in_rcpt = |a: &String| rcpt.iter().any(|r| r.eq_ignore_ascii_case(a));
    let to: Vec<String> = addresses(parsed.to()).into_iter().filter(in_rcpt).collect();
    let cc: Vec<String> = addresses(parsed.cc()).into_iter().filter(in_rcpt).collect();
    let blind: Vec<String> = rcpt
        .iter()
        .filter(|r| {
            !to.iter()
                .chain(cc.iter())
                .any(|a| a.eq_ignore_ascii_case(r))
        })
        .cloned()
        .collect();
    let attachments = parsed
        .attachments()
        .map(|a| Attachment {
            name: a.attachment_name().unwrap_or("attachment").to_owned(),
            media_type: a
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into()),
            data: a.contents().to_vec(),
        })
        .collect();
    let draft = Draft {
        to: to
            .iter()
            .map(|a| parse_address(a))
            .collect::<Result<_, _>>()?,
        cc: cc
            .iter()
            .map(|a| parse_address(a))
            .collect::<Result<_, _>>()?,
        subject: parsed.subject().unwrap_or("").to_owned(),
        body: parsed
            .body_text(0)
            .map(|b| b.into_owned())
            .unwrap_or_default(),
        attachments,
        in_reply_to: parsed
            .in_reply_to()
            .as_text()
            .map(|s| format!("<{}>", s.trim_matches(['<', '>']))),
    };
    Ok((draft, blind))
}

fn send_error(e: sealpost_client::Error) -> SendError {
    match e.kind() {
        ErrorKind::Network | ErrorKind::Profile => SendError::Temporary(e.to_string()),
        ErrorKind::Input | ErrorKind::Crypto => {
            SendError::Permanent(e.to_string().replace(['\r', '\n'], " "))
        }
    }
}

impl Sender for ClientSender {
    async fn send(&self, s: Submission) -> Result<SendOutcome, SendError> {
        let (draft, blind) = draft_of(&s.message, &s.rcpt_to)?;
        let mut drafts = Vec::new();
        if !draft.to.is_empty() || !draft.cc.is_empty() {
            drafts.push(draft.clone());
        }
        for b in &blind {
            drafts.push(Draft {
                to: vec![parse_address(b)?],
                cc: Vec::new(),
                ..draft.clone()
            });
        }
        let p = &self.profile;
        let mut client = p.client.lock().await;
        // Plan every letter before sending any, so a refused recipient stops them all.
        let mut plans = Vec::new();
        for d in &drafts {
            let plan = client
                .plan_send(d, &LegacyChoice::default())
                .await
                .map_err(send_error)?;
            let unconfirmed = client.unconfirmed(&plan);
            if !unconfirmed.is_empty() {
                let list: Vec<&str> = unconfirmed.iter().map(|a| a.as_str()).collect();
                return Err(SendError::Permanent(format!(
                    "{} would get ordinary (not end-to-end) e-mail; agree once with `sealpost send --legacy ADDRESS`",
                    list.join(", ")
                )));
            }
            plans.push(plan);
        }
        let mut outcome = SendOutcome::default();
        let mut seen = HashSet::new();
        for plan in plans {
            let tracker = Default::default();
            let report = client
                .send_plan(plan, &[], &p.keys, &NoProgress, &tracker)
                .await
                .map_err(send_error)?;
            if let Some(Ok(id)) = report.sent_copy {
                p.own_copies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_hex());
                outcome.copy_ids.push(id.to_hex());
            }
            for (addr, _) in report.legacy.iter().flat_map(|l| l.recipients.iter()) {
                if seen.insert(addr.to_string()) {
                    outcome.legacy.push(addr.to_string());
                }
            }
        }
        outcome.sealed = s
            .rcpt_to
            .iter()
            .filter(|r| !outcome.legacy.contains(r))
            .cloned()
            .collect();
        Ok(outcome)
    }
}
