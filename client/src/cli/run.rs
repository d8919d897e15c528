//! Runs one parsed command against the library and prints the result: data on stdout,
//! warnings and progress on stderr.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use sealpost_client::api::NetConfig;
use sealpost_client::resolve::parse_entry;
use sealpost_client::{Client, Error, Options, profile};
use sealpost_proto::Address;
use sealpost_proto::identity::Keyring;

use super::args::*;
use super::input;
use super::output;
use super::{devices, keys, mail, manage};

pub(super) struct Ctx {
    pub(super) global: Global,
    pub(super) options: Options,
    pub(super) dir: PathBuf,
}

pub(super) fn warn(msg: impl std::fmt::Display) {
    eprintln!("sealpost: warning: {}", output::clean(&msg.to_string()));
}

pub(super) fn note(msg: impl std::fmt::Display) {
    eprintln!("sealpost: {}", output::clean(&msg.to_string()));
}

pub(super) fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("invariant: JSON values serialize")
    );
}

pub(super) fn addresses(v: &[String]) -> Result<Vec<Address>, Error> {
    v.iter()
        .map(|s| Address::parse(s.trim()).map_err(Error::from))
        .collect()
}

impl Ctx {
    pub(super) fn open(&self) -> anyhow::Result<Client> {
        Ok(Client::open(&self.dir, &self.options)?)
    }

    /// The unlocked secret key: with the passphrase of `--passphrase-file` or
    /// `SEALPOST_PASSPHRASE`, else, when the key is locked and someone is at the terminal,
    /// asked there (up to [`input::PASSPHRASE_TRIES`] times).
    pub(super) fn keys(&self, client: &Client) -> anyhow::Result<Keyring> {
        let pass = input::passphrase(self.global.passphrase_file.as_deref())?;
        if pass.is_none() && client.profile.identity().is_locked() && super::tty::interactive() {
            let prompt = format!("Passphrase for {}: ", client.profile.address());
            for attempt in 1..=input::PASSPHRASE_TRIES {
                let typed = super::tty::ask_secret(&prompt).map_err(|e| {
                    Error::input(
                        "passphrase",
                        format!("cannot read it from the terminal: {e}"),
                    )
                })?;
                match client.unlock(Some(&typed)) {
                    Ok(k) => return Ok(k),
                    Err(e) if attempt == input::PASSPHRASE_TRIES => return Err(e.into()),
                    Err(_) => note("wrong passphrase; try again"),
                }
            }
        }
        client.unlock(pass.as_deref()).map_err(|e| match e {
            Error::Proto(sealpost_proto::Error::KeyLocked) => anyhow::Error::new(e).context(
                "the secret key is locked: set SEALPOST_PASSPHRASE or use --passphrase-file (or run at a terminal to be asked)",
            ),
            e => e.into(),
        })
    }
}

/// After `init`: says when a `--node` URL was followed to the URL its node descriptor
/// names, and warns when the key is stored without a passphrase.
pub(super) fn init_notes(client: &Client) {
    for (given, home) in &client.init_followed {
        note(format!(
            "{given} names itself {home} in its node descriptor: registered and published there; {home} is your home"
        ));
    }
    if !client.profile.identity().is_locked() {
        warn(format!(
            "no passphrase: your secret key is stored unprotected on disk ({}); anyone who can read that file can read your mail and sign as you",
            client.profile.path(profile::SECRET_FILE).display()
        ));
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
            ca_certs: cli.global.cacert.clone(),
            dns_server: cli.global.dns_server,
            source_address: cli.global.source_address,
        },
        // `--oblivious-lookups` is the default; it changes nothing.
        direct_lookups: cli.global.direct_lookups,
        refresh_after: cli.global.refresh_after,
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
        } => keys::init(&ctx, address, nodes, invite, import_key).await,
        Command::Whoami => keys::whoami(&ctx),
        Command::Fingerprint => {
            let c = ctx.open()?;
            if ctx.global.json {
                print_json(&json!({ "fingerprint": c.profile.config.fingerprint }));
            } else {
                println!("{}", c.profile.config.fingerprint);
            }
            Ok(())
        }
        Command::Contact(cmd) => keys::contact(&ctx, cmd).await,
        Command::Send(args) => mail::send(&ctx, args).await,
        Command::Fetch => mail::fetch(&ctx).await,
        Command::List { sent, all } => mail::list(&ctx, sent, all),
        Command::Read {
            id,
            save_attachments,
        } => mail::read(&ctx, &id, save_attachments.as_deref()),
        Command::Reply {
            id,
            all,
            attach,
            legacy,
        } => mail::reply(&ctx, &id, all, &attach, &legacy).await,
        Command::ExportKey { secret, output } => keys::export_key(&ctx, secret, output.as_deref()),
        Command::ImportKey { file, address } => keys::import_key(&ctx, &file, address.as_deref()),
        Command::Node(cmd) => manage::node(&ctx, cmd).await,
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
        Command::RotateKey => keys::rotate_key(&ctx).await,
        Command::Outbox(cmd) => manage::outbox(&ctx, cmd).await,
        Command::Resolve(cmd) => manage::resolve_cmd(&ctx, cmd),
        Command::Gateway(cmd) => manage::gateway(&ctx, cmd).await,
        Command::Legacy(cmd) => manage::legacy_cmd(&ctx, cmd),
        Command::Backup(cmd) => keys::backup(&ctx, cmd),
        Command::Device(cmd) => devices::device(&ctx, cmd).await,
    }
}
