//! Identity and contact commands: init, whoami, rotate-key, contact, export-key, import-key,
//! backup.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use sealpost_client::contacts::{
    Contact, PinOutcome, PinSource, address_for_cert, display_fingerprint, key_changed, pin,
    pin_state,
};
use sealpost_client::{Client, Error, InitOptions, now};
use sealpost_proto::identity::{SecretIdentity, cert_from_bytes, cert_to_armored};
use sealpost_proto::{Address, NodeUrl};

use super::args::*;
use super::input;
use super::output;
use super::run::{Ctx, note, print_json, warn};

pub(super) async fn init(
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
    let passphrase =
        input::init_passphrase(ctx.global.passphrase_file.as_deref(), import_key.as_deref())?;
    let identity = match &import_key {
        Some(p) => Some(
            SecretIdentity::from_bytes(&input::read_key_file(p)?)
                .map_err(|e| Error::input("secret key file", e.to_string()))?,
        ),
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
    super::run::init_notes(&client);
    let config = &client.profile.config;
    // Others find the record at the node the address's domain names.
    if let Ok(domain_node) = client
        .directory
        .resolver()
        .node_for(config.address.domain())
        && config.home(&domain_node).is_none()
    {
        note(format!(
            "{} resolves to {domain_node}, which is not one of your homes; others look your record up there",
            config.address.domain()
        ));
    }
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

pub(super) async fn rotate_key(ctx: &Ctx) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    let keys = ctx.keys(&c)?;
    let passphrase = input::passphrase(ctx.global.passphrase_file.as_deref())?;
    let report = match c.rotate_key(&keys, passphrase.as_deref()).await {
        Ok(r) => r,
        Err(e) => {
            if c.profile
                .path(sealpost_client::client::ROTATING_FILE)
                .exists()
            {
                note(
                    "the rotation is not finished: some home may already have the new key; run `sealpost rotate-key` again to finish it",
                );
            }
            return Err(e.into());
        }
    };
    if ctx.global.json {
        print_json(&json!({
            "old": report.old,
            "new": report.new,
            "sequence": report.publish.sequence,
            "homes": report.publish.results.iter().map(|(u, _)| u.to_string()).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("old key:     {}", display_fingerprint(&report.old));
    println!("new key:     {}", display_fingerprint(&report.new));
    for (url, _) in &report.publish.results {
        println!(
            "published on {url} (sequence {}), signed by the old key",
            report.publish.sequence
        );
    }
    note(
        "contacts who pinned your old key see the change as signed by it, and accept it with `sealpost contact accept`",
    );
    Ok(())
}

pub(super) fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
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

pub(super) async fn contact(ctx: &Ctx, cmd: ContactCommand) -> anyhow::Result<()> {
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
            let all = c.contacts().all()?;
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
            let k = c.contacts().get(&address)?.ok_or_else(|| Error::NotFound {
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
                    "             the new key is {}; the pinned key was {}",
                    p.provenance(),
                    pin_state(&k)
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
            let k = c.contacts().verify(&address, &fingerprint)?;
            println!(
                "verified {}: {}",
                k.address,
                display_fingerprint(&k.fingerprint)
            );
        }
        ContactCommand::Accept {
            address,
            fingerprint,
            yes,
        } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let current = c.contacts().require(&address)?;
            if current.verified && current.pending.is_some() && !yes {
                confirm_replacing_verified(&current)?;
            }
            let k = c
                .contacts()
                .accept(&address, fingerprint.as_deref(), now())?;
            println!(
                "accepted the new key of {}: {}",
                k.address,
                display_fingerprint(&k.fingerprint)
            );
        }
        ContactCommand::Remove { address } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            if !c.contacts().remove(&address)? {
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

/// Asks on the terminal before a verified key is replaced; refuses without a terminal.
fn confirm_replacing_verified(k: &Contact) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Read};
    let Some(p) = &k.pending else {
        return Ok(());
    };
    let what = format!(
        "you verified the key of {} ({}); the new key {} is {}",
        k.address,
        display_fingerprint(&k.fingerprint),
        display_fingerprint(&p.fingerprint),
        p.provenance()
    );
    if !std::io::stdin().is_terminal() {
        return Err(Error::input(
            "contact accept",
            format!(
                "{what}; replacing a verified key needs a confirmation: run this on a terminal, or add --yes (nothing was changed)"
            ),
        )
        .into());
    }
    eprint!("{what}.\nReplace the verified key? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .take(64)
        .read_line(&mut answer)
        .context("reading the answer")?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::input("contact accept", "not confirmed; nothing was changed").into()),
    }
}

pub(super) fn export_key(ctx: &Ctx, secret: bool, output: Option<&Path>) -> anyhow::Result<()> {
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
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => {}
                // A reader that went away (`| head`) ends it quietly, like every command's
                // output; any other failure (a full disk under `> backup.asc`) is an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(anyhow::Error::new(e).context("writing to stdout")),
            }
        }
    }
    Ok(())
}

pub(super) fn import_key(ctx: &Ctx, file: &Path, address: Option<&str>) -> anyhow::Result<()> {
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
        c.contacts().get(&address)?,
        &address,
        &cert,
        None,
        PinSource::Import,
        now(),
    ) {
        PinOutcome::New(k) => {
            c.contacts().save(&k)?;
            println!("pinned {address}: {}", display_fingerprint(&k.fingerprint));
        }
        PinOutcome::Same(k) => {
            c.contacts().save(&k)?;
            println!(
                "already pinned {address}: {} (certificate updated)",
                display_fingerprint(&k.fingerprint)
            );
        }
        PinOutcome::Changed(k) => {
            c.contacts().save(&k)?;
            return Err(key_changed(&k).into());
        }
    }
    Ok(())
}

/// `backup create|restore`.
pub(super) fn backup(ctx: &Ctx, cmd: BackupCommand) -> anyhow::Result<()> {
    let show = |verb: &str, s: &sealpost_client::backup::Summary, file: &Path| {
        if ctx.global.json {
            print_json(&json!({
                "file": file, "address": s.address, "created": s.created, "homes": s.homes,
                "contacts": s.contacts, "letters": s.letters, "bytes": s.bytes,
            }));
        } else {
            println!(
                "{verb} {} ({} contact{}, {} letter{}) {} {}",
                s.address,
                s.contacts,
                if s.contacts == 1 { "" } else { "s" },
                s.letters,
                if s.letters == 1 { "" } else { "s" },
                if verb == "backed up" { "to" } else { "from" },
                file.display()
            );
        }
    };
    match cmd {
        BackupCommand::Create {
            file,
            letters,
            backup_passphrase_file,
        } => {
            let c = ctx.open()?;
            let waiting = c.outbox.all()?.len() + c.outbox.letters().all()?.len();
            if waiting > 0 {
                warn(format!(
                    "{waiting} deliveries wait in the outbox; a backup does not hold them"
                ));
            }
            let pass = input::backup_passphrase(backup_passphrase_file.as_deref(), true)?;
            let (data, summary) = sealpost_client::backup::create(&c.profile, letters, &pass)?;
            sealpost_client::backup::write_new(&file, &data)?;
            show("backed up", &summary, &file);
        }
        BackupCommand::Restore {
            file,
            backup_passphrase_file,
        } => {
            let data =
                input::read_bounded(&file, sealpost_client::backup::MAX_BACKUP_BYTES as u64)?;
            let pass = input::backup_passphrase(backup_passphrase_file.as_deref(), false)?;
            let (_profile, summary) =
                sealpost_client::backup::restore(&ctx.dir, &file, &data, &pass)?;
            show("restored", &summary, &file);
        }
    }
    Ok(())
}
