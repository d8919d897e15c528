//! Housekeeping commands: node, outbox, resolve, gateway, legacy.

use serde_json::json;

use sealpost_client::Error;
use sealpost_client::contacts::display_fingerprint;
use sealpost_client::gateway::GatewayLookup;
use sealpost_client::resolve::parse_entry;
use sealpost_proto::{Address, NodeUrl};

use super::args::*;
use super::bars::Bars;
use super::output;
use super::run::{Ctx, note, print_json, warn};

pub(super) async fn node(ctx: &Ctx, cmd: NodeCommand) -> anyhow::Result<()> {
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

pub(super) async fn outbox(ctx: &Ctx, cmd: OutboxCommand) -> anyhow::Result<()> {
    let c = ctx.open()?;
    match cmd {
        OutboxCommand::List => {
            let all = c.outbox.all()?;
            // Letters not sealed for their recipients yet: they wait for lookups.
            let letters = c.outbox.letters().all()?;
            if ctx.global.json {
                let mut v: Vec<_> = letters
                    .iter()
                    .map(|w| {
                        json!({
                            "id": w.id, "created": w.created, "recipients": w.recipients,
                            "waiting_for": "lookups", "message_id": w.message_id,
                            "attempts": w.attempts, "last_error": w.last_error,
                        })
                    })
                    .collect();
                v.extend(all.iter().map(|e| json!({
                    "id": e.id, "created": e.created, "recipient": e.recipient, "destination": e.destination,
                    "envelope_id": e.envelope_id, "message_id": e.message_id, "attempts": e.attempts,
                    "last_error": e.last_error,
                })));
                print_json(&json!(v));
                return Ok(());
            }
            for w in letters {
                println!(
                    "{}  {}  to {}  waiting for lookups  attempts {}{}",
                    &w.id[..12],
                    output::date(w.created as i64),
                    w.recipients
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    w.attempts,
                    w.last_error
                        .map(|l| format!("  last error: {l}"))
                        .unwrap_or_default()
                );
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
            println!(
                "submitted {}, waiting {}",
                r.submitted,
                r.pending.len() + r.letters_waiting.len()
            );
            if r.copies_submitted > 0 || !r.copies_pending.is_empty() {
                println!(
                    "sent copies: submitted {}, waiting {}",
                    r.copies_submitted,
                    r.copies_pending.len()
                );
            }
            for e in &r.letter_errors {
                warn(e);
            }
            if r.anything_waiting() {
                let waiting = r.pending.len() + r.letters_waiting.len();
                return Err(Error::Unsubmitted {
                    pending: waiting,
                    total: waiting + r.submitted,
                    last: r
                        .errors
                        .last()
                        .or(r.letter_errors.last())
                        .cloned()
                        .unwrap_or_default(),
                }
                .into());
            }
        }
        OutboxCommand::Drop { id } => {
            let n = c.outbox.drop_matching(&id)?;
            println!(
                "dropped {n} waiting entr{}",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}

pub(super) fn resolve_cmd(ctx: &Ctx, cmd: ResolveCommand) -> anyhow::Result<()> {
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
            if c.set_resolve(d.clone(), u)? {
                note(format!("{d} has a node now: taken off the legacy list"));
            }
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

pub(super) async fn gateway(ctx: &Ctx, cmd: GatewayCommand) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    match cmd {
        GatewayCommand::Set { address } => {
            let address = Address::parse(address.trim()).map_err(Error::from)?;
            let r = c.set_gateway(&address).await?;
            println!(
                "gateway {address}: {}",
                display_fingerprint(&r.cert.fingerprint().to_hex())
            );
        }
        GatewayCommand::Show => {
            let (address, set) = c.gateway_address()?;
            let found = c.gateway().await?;
            if ctx.global.json {
                let v = match &found {
                    GatewayLookup::Found(r) => json!({
                        "address": address, "set": set, "usable": true,
                        "fingerprint": r.cert.fingerprint().to_hex(),
                        "homes": r.record.homes.iter().map(|h| h.url.to_string()).collect::<Vec<_>>(),
                    }),
                    GatewayLookup::Missing(why) => json!({
                        "address": address, "set": set, "usable": false, "error": why,
                    }),
                };
                print_json(&v);
                return Ok(());
            }
            match found {
                GatewayLookup::Found(r) => {
                    let how = if set {
                        "set with `sealpost gateway set`"
                    } else {
                        "the default: gateway@ your domain"
                    };
                    println!("{address}  ({how})");
                    println!(
                        "  fingerprint {}",
                        display_fingerprint(&r.cert.fingerprint().to_hex())
                    );
                    for h in &r.record.homes {
                        println!("  home {}", h.url);
                    }
                }
                GatewayLookup::Missing(why) => {
                    println!("none: {why}");
                }
            }
        }
        GatewayCommand::Clear => {
            if c.clear_gateway()? {
                println!("gateway cleared; the default applies");
            } else {
                println!("no gateway was set");
            }
        }
    }
    Ok(())
}

pub(super) fn legacy_cmd(ctx: &Ctx, cmd: LegacyCommand) -> anyhow::Result<()> {
    let mut c = ctx.open()?;
    match cmd {
        LegacyCommand::List => {
            if ctx.global.json {
                print_json(&serde_json::to_value(&c.profile.config.legacy)?);
                return Ok(());
            }
            for d in &c.profile.config.legacy {
                println!("{d}");
            }
        }
        LegacyCommand::Add { domain } => {
            let (d, added) = c.add_legacy_domain(&domain)?;
            if added {
                println!("added {d}");
            } else {
                println!("{d} was already listed");
            }
        }
        LegacyCommand::Remove { domain } => {
            if !c.remove_legacy_domain(&domain)? {
                return Err(Error::NotFound {
                    what: "legacy domain",
                    id: domain.trim().to_ascii_lowercase(),
                }
                .into());
            }
            println!("removed {}", domain.trim().to_ascii_lowercase());
        }
    }
    Ok(())
}
