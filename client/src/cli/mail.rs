//! Mail commands: send, reply, fetch, list, read.
//!
//! `send` and `reply` keep the letter in the outbox before any lookup, and keep Ctrl-C to
//! themselves: on SIGINT they stop where they are and say where the letter is (waiting in
//! the outbox for its lookups, sent, or its hops kept in the outbox), then exit 130.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use sealpost_client::compose::{Draft, read_attachment, reply_draft, safe_file_name};
use sealpost_client::mailbox::ReadMessage;
use sealpost_client::send::{LegacyChoice, SendPlan, SendReport, SendTracker};
use sealpost_client::sent::bounce_queue_id;
use sealpost_client::store::Folder;
use sealpost_client::{Client, Error};
use sealpost_proto::Address;
use sealpost_proto::identity::Keyring;

use super::args::*;
use super::bars::Bars;
use super::input;
use super::output;
use super::run::{Ctx, addresses, note, print_json, warn};
use super::tty;

/// A command cut short by Ctrl-C (exit 130); the text says what was done.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT, caught for the rest of the command.
struct Interrupt(Option<tokio::signal::unix::Signal>);

impl Interrupt {
    fn catch() -> Interrupt {
        use tokio::signal::unix::{SignalKind, signal};
        Interrupt(signal(SignalKind::interrupt()).ok())
    }

    /// Resolves at the next Ctrl-C (never, if it could not be caught).
    async fn next(&mut self) {
        if let Some(s) = &mut self.0
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

fn list_addresses<'a>(v: impl IntoIterator<Item = &'a Address>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for a in v {
        if !out.contains(&a.as_str()) {
            out.push(a.as_str());
        }
    }
    out.join(", ")
}

/// Warns, before anything is sent, about the legacy recipients of `plan`.
fn warn_legacy(plan: &SendPlan) {
    let Some(gateway) = plan.gateway() else {
        return;
    };
    let who = plan
        .legacy()
        .iter()
        .map(|(a, reason)| format!("{a} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ");
    warn(format!(
        "{who}: goes as ordinary e-mail through your gateway {gateway}; that leg is NOT end-to-end encrypted (the letter leaves Sealpost at the gateway)"
    ));
}

/// Asks at the terminal whether `who` may get the letter as legacy e-mail; Ctrl-C while
/// waiting interrupts.
async fn agree(who: &[Address], interrupt: &mut Interrupt) -> anyhow::Result<bool> {
    let question = format!(
        "Send to {} as ordinary e-mail, NOT end-to-end encrypted? [y/N] ",
        list_addresses(who)
    );
    // The terminal read blocks: a thread of its own, so that Ctrl-C is still heard.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(tty::ask_yes(&question));
    });
    tokio::select! {
        answer = rx => match answer {
            Ok(Ok(yes)) => Ok(yes),
            Ok(Err(e)) => Err(Error::input("answer", format!("cannot read it from the terminal: {e}")).into()),
            Err(_) => Err(Error::input("answer", "the terminal went away").into()),
        },
        () = interrupt.next() => Err(Interrupted("nothing was sent or queued".into()).into()),
    }
}

/// What the user is told when a send stops before the letter's hops are queued, while
/// the letter itself waits in the outbox for its recipients' lookups.
const WAITING: &str = "the letter is kept in the outbox, waiting for its recipients to be looked up; the next send or fetch, or `sealpost outbox flush`, sends it (`sealpost outbox list` shows it)";

/// Keeps the letter in the outbox, routes it, asks what must be asked, queues and submits
/// it; Ctrl-C at any point stops and says where the letter is.
async fn deliver(
    c: &mut Client,
    draft: &Draft,
    choice: &LegacyChoice,
    keys: &Keyring,
) -> anyhow::Result<()> {
    let mut interrupt = Interrupt::catch();
    // Before any lookup: a home that hangs, or Ctrl-C, cannot lose the letter.
    let (held, letter) = c.hold_letter(draft, choice, keys)?;
    let plan = tokio::select! {
        plan = c.plan_held(&held, letter) => plan?,
        () = interrupt.next() => return Err(Interrupted(WAITING.into()).into()),
    };
    warn_legacy(&plan);
    let unconfirmed = c.unconfirmed(&plan);
    let mut agreed = Vec::new();
    if !unconfirmed.is_empty() && tty::interactive() {
        let answer = agree(&unconfirmed, &mut interrupt).await;
        if !matches!(answer, Ok(true)) {
            // No consent: the letter does not wait for one.
            c.drop_held(&held)?;
        }
        if !answer? {
            return Err(Error::input(
                "legacy recipients",
                format!(
                    "you did not agree to send {} ordinary e-mail; nothing was sent",
                    list_addresses(&unconfirmed)
                ),
            )
            .into());
        }
        agreed = unconfirmed;
    }
    let tracker = SendTracker::default();
    let bars = Bars::new();
    let outcome = tokio::select! {
        r = c.send_plan(plan, &agreed, keys, &bars, &tracker) => Some(r),
        () = interrupt.next() => None,
    };
    match outcome {
        Some(report) => send_report(&report?),
        None => Err(Interrupted(where_is_the_letter(c, &held.id, &tracker)).into()),
    }
}

/// After Ctrl-C during [`Client::send_plan`]: whether the letter still waits for lookups,
/// which copies our nodes took and which wait in the outbox.
fn where_is_the_letter(c: &Client, held: &str, tracker: &SendTracker) -> String {
    let queued = tracker.queued();
    if queued.is_empty() {
        if c.outbox.letters().contains(held).unwrap_or(true) {
            return WAITING.into();
        }
        return "the letter was not queued yet: nothing was sent".into();
    }
    let (waiting, sent): (Vec<_>, Vec<_>) = queued
        .iter()
        .partition(|(id, _)| c.outbox.contains(id).unwrap_or(true));
    let to = |v: &[&(String, Address)]| list_addresses(v.iter().map(|(_, a)| a));
    let flush = "`sealpost outbox flush` sends it (a node that took it just now drops the copy)";
    match (sent.is_empty(), waiting.is_empty()) {
        (_, true) => format!("the letter was sent (to {})", to(&sent)),
        (true, false) => format!(
            "the letter is kept in the outbox (to {}); {flush}",
            to(&waiting)
        ),
        (false, false) => format!(
            "the letter was sent to {}, and is kept in the outbox for {}; {flush}",
            to(&sent),
            to(&waiting)
        ),
    }
}

pub(super) fn read_attachments(
    paths: &[PathBuf],
) -> Result<Vec<sealpost_proto::letter::Attachment>, Error> {
    paths.iter().map(|p| read_attachment(p)).collect()
}

/// Prints what a send did; fails when a hop of this letter is still waiting.
pub(super) fn send_report(report: &SendReport) -> anyhow::Result<()> {
    if let Some(l) = &report.legacy
        && !l.with_keys.is_empty()
    {
        warn(format!(
            "you have an OpenPGP key for {}, but the gateway does not encrypt with it (PGP/MIME is not supported yet)",
            l.with_keys
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let copies = report
        .recipients
        .iter()
        .chain(report.legacy.as_ref().map(|l| &l.gateway));
    for r in copies {
        if r.newly_pinned {
            note(format!(
                "new contact {} pinned on first use; compare its fingerprint with `sealpost contact show {}`",
                r.address, r.address
            ));
        }
        if r.record_from_cache {
            warn(format!(
                "the node of {} did not answer; used the record seen last",
                r.address.domain()
            ));
        }
        for (url, why) in &r.skipped {
            warn(format!(
                "not delivering to {}'s home {url} directly ({why}); the home chosen forwards it there",
                r.address
            ));
        }
    }
    let earlier = report
        .flush
        .submitted
        .saturating_sub(report.queued.len() - report.unsubmitted());
    if earlier > 0 {
        note(format!(
            "also submitted {earlier} earlier waiting deliveries from the outbox"
        ));
    }
    if let Some(Err(why)) = &report.sent_copy {
        warn(format!("no sent copy of this letter is kept: {why}"));
    }
    for e in &report.flush.letter_errors {
        warn(e);
    }
    let pending = report.unsubmitted();
    if pending > 0 {
        return Err(Error::Unsubmitted {
            pending,
            total: report.queued.len(),
            last: report.flush.errors.last().cloned().unwrap_or_default(),
        }
        .into());
    }
    let homes = |n: usize| format!("{n} home{}", if n == 1 { "" } else { "s" });
    for r in &report.recipients {
        println!("sent to {} ({})", r.address, homes(r.homes.len()));
    }
    if let Some(l) = &report.legacy {
        for (a, _) in &l.recipients {
            println!(
                "sent to {a} as legacy e-mail through {} ({})",
                l.gateway.address,
                homes(l.gateway.homes.len())
            );
        }
    }
    Ok(())
}

pub(super) async fn send(ctx: &Ctx, args: SendArgs) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    let draft_to = addresses(&args.to)?;
    let draft_cc = addresses(&args.cc)?;
    let legacy = addresses(&args.legacy)?;
    let attachments = read_attachments(&args.attach)?;
    let keys = ctx.keys(&c)?;
    let body = input::body(&c.profile.path("tmp"), None)?;
    let draft = Draft {
        to: draft_to,
        cc: draft_cc,
        subject: args.subject,
        body,
        attachments,
        in_reply_to: None,
    };
    let choice = LegacyChoice {
        forced: legacy,
        ..LegacyChoice::default()
    };
    deliver(&mut c, &draft, &choice, &keys).await
}

pub(super) async fn reply(
    ctx: &Ctx,
    id: &str,
    all: bool,
    attach: &[PathBuf],
    legacy: &[String],
) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    let id = c.messages().find(id)?;
    let legacy = addresses(legacy)?;
    let attachments = read_attachments(attach)?;
    let keys = ctx.keys(&c)?;
    let original = c.read(&id, &keys)?;
    let letter = original.letter.ok_or_else(|| {
        Error::input(
            "message",
            "it could not be opened; there is nothing to reply to",
        )
    })?;
    if !original.meta.trust.is_verified() {
        warn(format!(
            "replying to {}, which is not verified as the sender",
            letter.from
        ));
    }
    let body = input::body(&c.profile.path("tmp"), None)?;
    // Legacy mail is answered the way it came: through the gateway, without a lookup.
    let replies = if letter.legacy.is_some() {
        vec![letter.from.clone()]
    } else {
        Vec::new()
    };
    let mut draft: Draft = reply_draft(&letter, c.profile.address(), all, body);
    draft.attachments = attachments;
    let choice = LegacyChoice {
        forced: legacy,
        replies,
    };
    deliver(&mut c, &draft, &choice, &keys).await
}

pub(super) async fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let keys = ctx.keys(&c)?;
    let report = c.fetch(&keys, &Bars::new()).await?;
    for n in &report.nodes {
        if let Some(e) = &n.error {
            warn(e);
        }
        for e in &n.ack_errors {
            warn(format!(
                "{}: could not remove a fetched letter (will retry): {e}",
                n.url
            ));
        }
    }
    for w in &report.warnings {
        warn(w);
    }
    for a in &report.new_contacts {
        note(format!(
            "new contact {a} pinned on first use; compare its fingerprint with `sealpost contact show {a}`"
        ));
    }
    if !report.flush.pending.is_empty() {
        warn(format!(
            "{} deliveries still wait in the outbox: {}",
            report.flush.pending.len(),
            report.flush.errors.last().cloned().unwrap_or_default()
        ));
    }
    for e in &report.flush.letter_errors {
        warn(e);
    }
    if ctx.global.json {
        print_json(&json!({
            "new": report.new.iter().map(output::message_json).collect::<Vec<_>>(),
            "sent": report.sent.iter().map(output::message_json).collect::<Vec<_>>(),
            "duplicates": report.duplicates,
            "nodes": report.nodes.iter().map(|n| json!({
                "url": n.url, "ok": n.error.is_none(), "error": n.error,
                "listed": n.listed, "acked": n.acked, "ack_errors": n.ack_errors,
            })).collect::<Vec<_>>(),
            "new_contacts": report.new_contacts,
            "warnings": report.warnings,
            "outbox": {
                "submitted": report.flush.submitted, "pending": report.flush.pending.len(),
                "copies_submitted": report.flush.copies_submitted,
                "copies_pending": report.flush.copies_pending.len(),
                "letters_queued": report.flush.letters_queued,
                "letters_waiting": report.flush.letters_waiting.len(),
            },
        }));
        return Ok(());
    }
    println!(
        "{} new letter{}",
        report.new.len(),
        if report.new.len() == 1 { "" } else { "s" }
    );
    for m in &report.new {
        println!("{}", output::list_line(m));
    }
    if !report.sent.is_empty() {
        println!(
            "{} sent letter{} from your other devices (sealpost list --sent)",
            report.sent.len(),
            if report.sent.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub(super) fn list(ctx: &Ctx, sent: bool, both: bool) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let folder = if sent { Folder::Sent } else { Folder::Inbox };
    let all: Vec<_> = c
        .messages()
        .list()?
        .into_iter()
        .filter(|m| both || m.folder == folder)
        .collect();
    if ctx.global.json {
        print_json(&json!(
            all.iter().map(output::message_json).collect::<Vec<_>>()
        ));
        return Ok(());
    }
    for m in &all {
        println!("{}", output::list_line(m));
    }
    Ok(())
}

pub(super) fn read(ctx: &Ctx, id: &str, save: Option<&Path>) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let id = c.messages().find(id)?;
    let keys = ctx.keys(&c)?;
    let r = c.read(&id, &keys)?;
    let saved = match (save, &r.letter) {
        (Some(dir), Some(_)) => save_attachments(&r, dir)?,
        _ => Vec::new(),
    };
    let from = r.meta.header.as_ref().map(|h| &h.from);
    let checked = match from {
        Some(a) if a == c.profile.address() => true,
        Some(a) => c.contacts().get(a)?.is_some_and(|k| k.verified),
        None => false,
    };
    // A verified bounce from one of our nodes names the queue id of the hop it gave up.
    let bounce_of = match &r.letter {
        Some(l) if r.meta.trust.is_verified() && l.subject.starts_with("Undeliverable: ") => {
            match bounce_queue_id(&l.body) {
                Some(q) => c.outbox.sent().get(q)?,
                None => None,
            }
        }
        _ => None,
    };
    let extras = output::ReadExtras {
        saved,
        checked,
        bounce_of,
    };
    if ctx.global.json {
        print_json(&output::read_json(&r, &extras));
    } else {
        print!("{}", output::read_text(&r, &extras));
    }
    Ok(())
}

/// Writes each attachment into `dir` under a safe name that does not overwrite anything.
pub(super) fn save_attachments(r: &ReadMessage, dir: &Path) -> Result<Vec<String>, Error> {
    let Some(letter) = &r.letter else {
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::WriteOutput {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for a in &letter.attachments {
        let base = safe_file_name(&a.name);
        let mut n = 0;
        loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{n}-{base}")
            };
            let path = dir.join(&name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&a.data)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::WriteOutput {
                            path: path.clone(),
                            source: e,
                        })?;
                    out.push(path.display().to_string());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::WriteOutput { path, source: e }),
            }
        }
    }
    Ok(out)
}
