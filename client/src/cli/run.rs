//! Runs one parsed command against the library and prints the result: data on stdout,
//! warnings and progress on stderr.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use sealpost_client::api::NetConfig;
use sealpost_client::compose::{Draft, read_attachment, reply_draft, safe_file_name};
use sealpost_client::contacts::{
    PinOutcome, PinSource, address_for_cert, display_fingerprint, key_changed, pin,
};
use sealpost_client::fetch::ReadMessage;
use sealpost_client::resolve::parse_entry;
use sealpost_client::send::SendReport;
use sealpost_client::{Client, Error, InitOptions, Options, now, profile};
use sealpost_proto::identity::{Keyring, SecretIdentity, cert_from_bytes, cert_to_armored};
use sealpost_proto::{Address, NodeUrl};

use super::args::*;
use super::bars::Bars;
use super::input;
use super::output;

struct Ctx {
    global: Global,
    options: Options,
    dir: PathBuf,
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("sealpost: warning: {}", output::clean(&msg.to_string()));
}

fn note(msg: impl std::fmt::Display) {
    eprintln!("sealpost: {}", output::clean(&msg.to_string()));
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("invariant: JSON values serialize")
    );
}

fn addresses(v: &[String]) -> Result<Vec<Address>, Error> {
    v.iter()
        .map(|s| Address::parse(s.trim()).map_err(Error::from))
        .collect()
}

impl Ctx {
    fn open(&self) -> anyhow::Result<Client> {
        Ok(Client::open(&self.dir, &self.options)?)
    }

    fn keys(&self, client: &Client) -> anyhow::Result<Keyring> {
        let pass = input::passphrase(self.global.passphrase_file.as_deref())?;
        client.unlock(pass.as_deref()).map_err(|e| match e {
            Error::Proto(sealpost_proto::Error::KeyLocked) => {
                anyhow::Error::new(e).context("set SEALPOST_PASSPHRASE or use --passphrase-file")
            }
            e => e.into(),
        })
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut resolve = Vec::new();
    for r in &cli.global.resolve {
        resolve.push(parse_entry(r)?);
    }
    let dir = match &cli.global.profile {
        Some(d) => d.clone(),
        None => profile::default_dir()?,
    };
    let options = Options {
        resolve,
        net: NetConfig {
            timeout: Duration::from_secs(cli.global.timeout),
        },
    };
    let ctx = Ctx {
        global: cli.global,
        options,
        dir,
    };
    match cli.command {
        Command::Init {
            address,
            nodes,
            invite,
            import_key,
        } => init(&ctx, address, nodes, invite, import_key).await,
        Command::Whoami => whoami(&ctx),
        Command::Fingerprint => {
            let c = ctx.open()?;
            if ctx.global.json {
                print_json(&json!({ "fingerprint": c.profile.config.fingerprint }));
            } else {
                println!("{}", c.profile.config.fingerprint);
            }
            Ok(())
        }
        Command::Contact(cmd) => contact(&ctx, cmd).await,
        Command::Send(args) => send(&ctx, args).await,
        Command::Fetch => fetch(&ctx).await,
        Command::List => list(&ctx),
        Command::Read {
            id,
            save_attachments,
        } => read(&ctx, &id, save_attachments.as_deref()),
        Command::Reply { id, all, attach } => reply(&ctx, &id, all, &attach).await,
        Command::ExportKey { secret, output } => export_key(&ctx, secret, output.as_deref()),
        Command::ImportKey { file, address } => import_key(&ctx, &file, address.as_deref()),
        Command::Node(cmd) => node(&ctx, cmd).await,
        Command::Publish => {
            let mut c = ctx.open()?;
            let keys = ctx.keys(&c)?;
            let report = c.publish(&keys).await?;
            for (url, r) in &report.results {
                match r {
                    Ok(()) => println!("published on {url} (sequence {})", report.sequence),
                    Err(e) => warn(format!("not published on {url}: {e}")),
                }
            }
            Ok(())
        }
        Command::Outbox(cmd) => outbox(&ctx, cmd).await,
        Command::Resolve(cmd) => resolve_cmd(&ctx, cmd),
    }
}

async fn init(
    ctx: &Ctx,
    address: String,
    nodes: Vec<String>,
    invite: Option<String>,
    import_key: Option<PathBuf>,
) -> anyhow::Result<()> {
    let address = Address::parse(address.trim()).map_err(Error::from)?;
    let nodes = nodes
        .iter()
        .map(|n| NodeUrl::parse(n.trim()).map_err(Error::from))
        .collect::<Result<Vec<_>, _>>()?;
    let passphrase = input::passphrase(ctx.global.passphrase_file.as_deref())?;
    let identity = match &import_key {
        Some(p) => {
            Some(SecretIdentity::from_bytes(&input::read_key_file(p)?).map_err(Error::from)?)
        }
        None => None,
    };
    let client = Client::init(
        &ctx.dir,
        InitOptions {
            address,
            nodes,
            passphrase,
            invite,
            identity,
        },
        &ctx.options,
    )
    .await?;
    let config = &client.profile.config;
    if ctx.global.json {
        print_json(&json!({
            "address": config.address,
            "fingerprint": config.fingerprint,
            "profile": ctx.dir,
            "homes": config.homes,
        }));
    } else {
        println!("profile:     {}", ctx.dir.display());
        println!("address:     {}", config.address);
        println!("fingerprint: {}", display_fingerprint(&config.fingerprint));
        for h in &config.homes {
            println!("home:        {} (mailbox {})", h.url, h.mailbox);
        }
    }
    Ok(())
}

fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let config = &c.profile.config;
    let record = c.profile.record_body()?;
    if ctx.global.json {
        print_json(&json!({
            "address": config.address,
            "fingerprint": config.fingerprint,
            "locked": c.profile.identity().is_locked(),
            "homes": config.homes,
            "record": { "sequence": record.sequence, "expires": record.expires },
        }));
        return Ok(());
    }
    println!("address:     {}", config.address);
    println!("fingerprint: {}", display_fingerprint(&config.fingerprint));
    println!(
        "passphrase:  {}",
        if c.profile.identity().is_locked() {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "record:      sequence {}, expires {} UTC",
        record.sequence,
        output::date(record.expires as i64)
    );
    for h in &config.homes {
        println!(
            "home:        {} (mailbox {}){}",
            h.url,
            h.mailbox,
            if h.trusted { "" } else { " [untrusted]" }
        );
    }
    Ok(())
}

async fn contact(ctx: &Ctx, cmd: ContactCommand) -> anyhow::Result<()> {
    let c = ctx.open()?;
    match cmd {
        ContactCommand::Add { address } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let (r, unchecked) = c.add_contact(&address).await?;
            for (url, why) in &unchecked {
                warn(format!(
                    "home {url} of {address} could not be checked: {why}"
                ));
            }
            let contact = r
                .pin
                .as_ref()
                .map(PinOutcome::contact)
                .expect("invariant: contacts are never ourselves");
            let what = if matches!(r.pin, Some(PinOutcome::New(_))) {
                "pinned"
            } else {
                "already pinned, refreshed"
            };
            println!(
                "{what} {address}: {}",
                display_fingerprint(&contact.fingerprint)
            );
            if r.from_cache {
                warn(format!(
                    "the node of {} did not answer; used the record seen last",
                    address.domain()
                ));
            }
        }
        ContactCommand::List => {
            let all = c.contacts.all()?;
            if ctx.global.json {
                print_json(&serde_json::to_value(&all)?);
                return Ok(());
            }
            for k in all {
                let state = if k.verified { "checked" } else { "tofu   " };
                let pending = if k.pending.is_some() {
                    "  [KEY CHANGED: see contact show]"
                } else {
                    ""
                };
                println!(
                    "{:<32}  {state}  {}{pending}",
                    k.address.as_str(),
                    display_fingerprint(&k.fingerprint)
                );
            }
        }
        ContactCommand::Show { address } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let k = c.contacts.get(&address)?.ok_or_else(|| Error::NotFound {
                what: "contact",
                id: address.to_string(),
            })?;
            if ctx.global.json {
                print_json(&serde_json::to_value(&k)?);
                return Ok(());
            }
            println!("address:     {}", k.address);
            println!("fingerprint: {}", display_fingerprint(&k.fingerprint));
            println!(
                "checked:     {}",
                if k.verified {
                    "yes, fingerprint compared out of band".to_string()
                } else {
                    format!(
                        "no (trust on first use); compare it, then: sealpost contact verify {} FINGERPRINT",
                        k.address
                    )
                }
            );
            let source = match k.source {
                PinSource::Record => "from their record",
                PinSource::Import => "imported",
                PinSource::Accepted => "key change accepted",
            };
            println!(
                "pinned:      {} UTC, {source}",
                output::date(k.pinned_at as i64)
            );
            if let Some(r) = k
                .cached_record()
                .and_then(|r| sealpost_proto::codec::Codec::decode(&r.body).ok())
            {
                let r: sealpost_proto::record::MailboxRecord = r;
                for h in &r.homes {
                    println!("home:        {}", h.url);
                }
            }
            if let Some(p) = &k.pending {
                println!(
                    "KEY CHANGED: a record with key {} was seen {} UTC",
                    display_fingerprint(&p.fingerprint),
                    output::date(p.seen_at as i64)
                );
                println!(
                    "             check it with {} out of band, then: sealpost contact accept {}",
                    k.address, k.address
                );
            }
        }
        ContactCommand::Verify {
            address,
            fingerprint,
        } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let k = c.contacts.verify(&address, &fingerprint)?;
            println!(
                "verified {}: {}",
                k.address,
                display_fingerprint(&k.fingerprint)
            );
        }
        ContactCommand::Accept {
            address,
            fingerprint,
        } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let k = c.contacts.accept(&address, fingerprint.as_deref(), now())?;
            println!(
                "accepted the new key of {}: {}",
                k.address,
                display_fingerprint(&k.fingerprint)
            );
        }
        ContactCommand::Remove { address } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            if !c.contacts.remove(&address)? {
                return Err(Error::NotFound {
                    what: "contact",
                    id: address.to_string(),
                }
                .into());
            }
            println!("removed {address}");
        }
    }
    Ok(())
}

fn read_attachments(paths: &[PathBuf]) -> Result<Vec<sealpost_proto::letter::Attachment>, Error> {
    paths.iter().map(|p| read_attachment(p)).collect()
}

/// Prints what a send did; fails when a hop of this letter is still waiting.
fn send_report(report: &SendReport) -> anyhow::Result<()> {
    for r in &report.recipients {
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
                "not delivering to {}'s home {url}: {why}",
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
    let pending = report.unsubmitted();
    if pending > 0 {
        return Err(Error::Unsubmitted {
            pending,
            total: report.queued.len(),
            last: report.flush.errors.last().cloned().unwrap_or_default(),
        }
        .into());
    }
    for r in &report.recipients {
        println!(
            "sent to {} ({} home{})",
            r.address,
            r.homes.len(),
            if r.homes.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

async fn send(ctx: &Ctx, args: SendArgs) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let draft_to = addresses(&args.to)?;
    let draft_cc = addresses(&args.cc)?;
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
    let report = c.send(&draft, &keys, &Bars::new()).await?;
    send_report(&report)
}

async fn reply(ctx: &Ctx, id: &str, all: bool, attach: &[PathBuf]) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let id = c.messages.find(id)?;
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
    let mut draft: Draft = reply_draft(&letter, c.profile.address(), all, body);
    draft.attachments = attachments;
    let report = c.send(&draft, &keys, &Bars::new()).await?;
    send_report(&report)
}

async fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
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
    if ctx.global.json {
        print_json(&json!({
            "new": report.new.iter().map(output::message_json).collect::<Vec<_>>(),
            "duplicates": report.duplicates,
            "nodes": report.nodes.iter().map(|n| json!({
                "url": n.url, "ok": n.error.is_none(), "error": n.error,
                "listed": n.listed, "acked": n.acked, "ack_errors": n.ack_errors,
            })).collect::<Vec<_>>(),
            "new_contacts": report.new_contacts,
            "warnings": report.warnings,
            "outbox": { "submitted": report.flush.submitted, "pending": report.flush.pending.len() },
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
    Ok(())
}

fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let all = c.messages.list()?;
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

fn read(ctx: &Ctx, id: &str, save: Option<&Path>) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let id = c.messages.find(id)?;
    let keys = ctx.keys(&c)?;
    let r = c.read(&id, &keys)?;
    let saved = match (save, &r.letter) {
        (Some(dir), Some(_)) => save_attachments(&r, dir)?,
        _ => Vec::new(),
    };
    if ctx.global.json {
        print_json(&output::read_json(&r, &saved));
    } else {
        let from = r.meta.header.as_ref().map(|h| &h.from);
        let checked = match from {
            Some(a) if a == c.profile.address() => true,
            Some(a) => c.contacts.get(a)?.is_some_and(|k| k.verified),
            None => false,
        };
        print!("{}", output::read_text(&r, &saved, checked));
    }
    Ok(())
}

/// Writes each attachment into `dir` under a safe name that does not overwrite anything.
fn save_attachments(r: &ReadMessage, dir: &Path) -> Result<Vec<String>, Error> {
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

fn export_key(ctx: &Ctx, secret: bool, output: Option<&Path>) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let text = if secret {
        c.profile.identity().to_armored()
    } else {
        cert_to_armored(&c.profile.cert())
    };
    match output {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::WriteOutput {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::WriteOutput {
                    path: path.to_path_buf(),
                    source: e,
                })?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .context("writing to stdout")?;
        }
    }
    Ok(())
}

fn import_key(ctx: &Ctx, file: &Path, address: Option<&str>) -> anyhow::Result<()> {
    let c = ctx.open()?;
    let chosen = address
        .map(|a| Address::parse(a.trim()))
        .transpose()
        .map_err(Error::from)?;
    let bytes = input::read_key_file(file)?;
    let cert = cert_from_bytes(&bytes).map_err(|e| Error::input("key file", e.to_string()))?;
    if cert.fingerprint().to_hex() == c.profile.config.fingerprint {
        return Err(Error::input("key file", "that is your own key").into());
    }
    let address = address_for_cert(&cert, chosen.as_ref())?;
    if &address == c.profile.address() {
        return Err(Error::input("key file", format!("{address} is your own address")).into());
    }
    match pin(
        c.contacts.get(&address)?,
        &address,
        &cert,
        None,
        PinSource::Import,
        now(),
    ) {
        PinOutcome::New(k) => {
            c.contacts.save(&k)?;
            println!("pinned {address}: {}", display_fingerprint(&k.fingerprint));
        }
        PinOutcome::Same(k) => {
            c.contacts.save(&k)?;
            println!(
                "already pinned {address}: {} (certificate updated)",
                display_fingerprint(&k.fingerprint)
            );
        }
        PinOutcome::Changed(k) => {
            c.contacts.save(&k)?;
            return Err(key_changed(&k).into());
        }
    }
    Ok(())
}

async fn node(ctx: &Ctx, cmd: NodeCommand) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    match cmd {
        NodeCommand::List => {
            let homes = &c.profile.config.homes;
            if ctx.global.json {
                print_json(&serde_json::to_value(homes)?);
                return Ok(());
            }
            for h in homes {
                println!(
                    "{}  {}  mailbox {}  node key {}",
                    h.url,
                    if h.trusted { "trusted  " } else { "untrusted" },
                    h.mailbox,
                    h.node_key
                );
            }
        }
        NodeCommand::Trust { url, invite } => {
            let url = NodeUrl::parse(url.trim()).map_err(Error::from)?;
            let keys = ctx.keys(&c)?;
            match c.trust_node(&url, &keys, invite.as_deref()).await? {
                None => println!("trusted {url}"),
                Some(report) => {
                    println!("added home {url}; record sequence {}", report.sequence);
                    for (u, r) in &report.results {
                        if let Err(e) = r {
                            warn(format!("record not published on {u}: {e}"));
                        }
                    }
                }
            }
        }
        NodeCommand::Untrust { url, drop } => {
            let url = NodeUrl::parse(url.trim()).map_err(Error::from)?;
            let keys = ctx.keys(&c)?;
            match c.untrust_node(&url, drop, &keys).await? {
                None => println!("untrusted {url} (still in your record; --drop removes it)"),
                Some(report) => {
                    println!(
                        "dropped {url} from your record; sequence {}",
                        report.sequence
                    );
                    for (u, r) in &report.results {
                        if let Err(e) = r {
                            warn(format!("record not published on {u}: {e}"));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn outbox(ctx: &Ctx, cmd: OutboxCommand) -> anyhow::Result<()> {
    let c = ctx.open()?;
    match cmd {
        OutboxCommand::List => {
            let all = c.outbox.all()?;
            if ctx.global.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|e| json!({
                        "id": e.id, "created": e.created, "recipient": e.recipient, "destination": e.destination,
                        "envelope_id": e.envelope_id, "message_id": e.message_id, "attempts": e.attempts,
                        "last_error": e.last_error,
                    }))
                    .collect();
                print_json(&json!(v));
                return Ok(());
            }
            for e in all {
                println!(
                    "{}  {}  to {} via {}  attempts {}{}",
                    &e.id[..12],
                    output::date(e.created as i64),
                    e.recipient,
                    e.destination,
                    e.attempts,
                    e.last_error
                        .map(|l| format!("  last error: {l}"))
                        .unwrap_or_default()
                );
            }
        }
        OutboxCommand::Flush => {
            let keys = ctx.keys(&c)?;
            let r = c.flush_outbox(&keys, &Bars::new()).await?;
            println!("submitted {}, waiting {}", r.submitted, r.pending.len());
            if !r.pending.is_empty() {
                return Err(Error::Unsubmitted {
                    pending: r.pending.len(),
                    total: r.pending.len() + r.submitted,
                    last: r.errors.last().cloned().unwrap_or_default(),
                }
                .into());
            }
        }
        OutboxCommand::Drop { id } => {
            let n = c.outbox.drop_matching(&id)?;
            println!(
                "dropped {n} waiting deliver{}",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}

fn resolve_cmd(ctx: &Ctx, cmd: ResolveCommand) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    match cmd {
        ResolveCommand::List => {
            if ctx.global.json {
                print_json(&serde_json::to_value(&c.profile.config.resolve)?);
                return Ok(());
            }
            for (d, u) in &c.profile.config.resolve {
                println!("{d}={u}");
            }
        }
        ResolveCommand::Add { entry } => {
            let (d, u) = parse_entry(&entry)?;
            println!("{d}={u}");
            c.set_resolve(d, u)?;
        }
        ResolveCommand::Remove { domain } => {
            let d = domain.trim().to_ascii_lowercase();
            if !c.unset_resolve(&d)? {
                return Err(Error::NotFound {
                    what: "resolve entry",
                    id: d,
                }
                .into());
            }
            println!("removed {d}");
        }
    }
    Ok(())
}
