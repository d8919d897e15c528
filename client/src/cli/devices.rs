//! `device add|join|list|remove` (`spec/client.md` §Devices).

use serde_json::json;

use sealpost_client::devices;
use sealpost_proto::NodeUrl;
use sealpost_proto::link::{LinkCode, parse_link_uri};

use super::args::DeviceCommand;
use super::run::{Ctx, note, print_json, warn};

pub(super) async fn device(ctx: &Ctx, cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Add { name } => {
            let mut c = ctx.open()?;
            let keys = ctx.keys(&c)?;
            let offer = c.device_offer(&keys, &name).await?;
            let left = offer.expires.saturating_sub(sealpost_client::now());
            if ctx.global.json {
                print_json(&json!({
                    "code": offer.code.to_string(), "uri": offer.uri, "expires": offer.expires,
                }));
            } else {
                println!("On the new device, run:");
                println!();
                println!(
                    "    sealpost device join {} --node {}",
                    offer.code,
                    c.profile
                        .config
                        .trusted_homes()
                        .next()
                        .map(|h| h.url.to_string())
                        .unwrap_or_default()
                );
                println!();
                println!("or give it this URI (as a QR code): {}", offer.uri);
                note(format!(
                    "the code works once, for {left} s; waiting for the new device..."
                ));
            }
            let joined = c.device_complete(&keys, offer).await?;
            for (url, e) in &joined.failed {
                warn(format!("the new device is not registered on {url}: {e}"));
            }
            if ctx.global.json {
                print_json(&json!({ "joined": joined.id, "name": joined.name }));
            } else {
                println!("linked {} ({})", joined.name, joined.id);
            }
            Ok(())
        }
        DeviceCommand::Join { code, node, name } => {
            let (node, code) = if code.trim_start().starts_with("sealpost:") {
                parse_link_uri(&code)?
            } else {
                let node = node.ok_or_else(|| {
                    anyhow::anyhow!("give the node `sealpost device add` named: --node URL")
                })?;
                (NodeUrl::parse(&node)?, LinkCode::parse(&code)?)
            };
            let c = devices::join(&ctx.dir, &node, &code, &name, &ctx.options).await?;
            let id = c.net.device();
            if ctx.global.json {
                print_json(&json!({
                    "address": c.profile.address().to_string(), "device": id,
                }));
            } else {
                println!(
                    "joined {} as {} ({}); `sealpost fetch` gets your letters",
                    c.profile.address(),
                    name,
                    id.map(|i| i.to_hex()).unwrap_or_default()
                );
            }
            Ok(())
        }
        DeviceCommand::List => {
            let c = ctx.open()?;
            let keys = ctx.keys(&c)?;
            let homes = c.device_list(&keys).await;
            let mut failed = false;
            let mut out = Vec::new();
            for h in homes {
                match h.devices {
                    Ok(list) => {
                        for d in list {
                            let this = h.you == Some(d.id);
                            if ctx.global.json {
                                out.push(json!({
                                    "node": h.url, "id": d.id, "name": d.name,
                                    "created": d.created, "this": this,
                                }));
                            } else {
                                println!(
                                    "{}  {}{}  ({})",
                                    d.id,
                                    d.name,
                                    if this { "  [this device]" } else { "" },
                                    h.url
                                );
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        warn(format!("{}: {e}", h.url));
                    }
                }
            }
            if ctx.global.json {
                print_json(&json!(out));
            }
            if failed {
                anyhow::bail!("some homes did not answer");
            }
            Ok(())
        }
        DeviceCommand::Remove { id } => {
            let c = ctx.open()?;
            let keys = ctx.keys(&c)?;
            let (id, results) = c.device_remove(&keys, &id).await?;
            let mut failed = false;
            for (url, r) in results {
                match r {
                    Ok(()) => println!("removed {id} on {url}"),
                    Err(e) => {
                        failed = true;
                        warn(format!("not removed on {url}: {e}"));
                    }
                }
            }
            if failed {
                anyhow::bail!("the device is not removed everywhere");
            }
            Ok(())
        }
    }
}
