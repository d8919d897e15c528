//! `sealpost-bridge`: serve a Sealpost profile to mail apps over IMAP and SMTP submission
//! (`run`), or show the settings and password to enter in the app (`info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sealpost_bridge::auth::Credentials;
use sealpost_bridge::client_adapter::{ClientSender, ClientSource, Profile};
use sealpost_bridge::info::Settings;
use sealpost_bridge::server;
use sealpost_bridge::shared::Shared;
use sealpost_bridge::store::Store;
use sealpost_client::api::NetConfig;
use sealpost_client::{Client, Options};

/// The bridge's state lives in this directory of the profile.
const STATE_DIR: &str = "bridge";

#[derive(Parser)]
#[command(
    name = "sealpost-bridge",
    version,
    about = "Use your mail app with Sealpost: a local IMAP and SMTP bridge"
)]
struct Cli {
    /// Profile directory (default: the one `sealpost` uses)
    #[arg(long, env = "SEALPOST_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// Use URL as the node of DOMAIN (repeatable), like `sealpost --resolve`
    #[arg(long, value_name = "DOMAIN=URL", global = true)]
    resolve: Vec<String>,
    /// Read the profile's passphrase from the first line of FILE (else SEALPOST_PASSPHRASE)
    #[arg(long, value_name = "FILE", global = true)]
    passphrase_file: Option<PathBuf>,
    /// Also trust this CA certificate for node TLS (repeatable)
    #[arg(long, value_name = "FILE", global = true)]
    cacert: Vec<PathBuf>,
    /// IMAP listen address
    #[arg(long, default_value = "127.0.0.1:1143", global = true)]
    imap: SocketAddr,
    /// SMTP submission listen address
    #[arg(long, default_value = "127.0.0.1:1025", global = true)]
    smtp: SocketAddr,
    /// TLS certificate chain (PEM): IMAP and SMTP then speak implicit TLS; required for a
    /// listen address that is not loopback
    #[arg(long, value_name = "FILE", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the profile until interrupted
    Run,
    /// Show the settings and the bridge password for a mail app
    Info {
        /// Also write a Thunderbird autoconfig file (config-v1.1.xml) here
        #[arg(long, value_name = "FILE")]
        autoconfig: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    sealpost_proto::no_library_backtraces();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealpost-bridge: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost-bridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = match &cli.profile {
        Some(d) => d.clone(),
        None => sealpost_client::profile::default_dir()?,
    };
    let tls = cli.tls_cert.is_some();
    server::check_listen(cli.imap, tls)?;
    server::check_listen(cli.smtp, tls)?;
    let mut resolve = Vec::new();
    for r in &cli.resolve {
        resolve.push(sealpost_client::resolve::parse_entry(r)?);
    }
    let options = Options {
        resolve,
        net: NetConfig {
            ca_certs: cli.cacert.clone(),
            ..NetConfig::default()
        },
        // Lookups go through the user's homes (oblivious), as in the `sealpost` command
        // by default (`spec/client.md` §3); while no home answers, a submission is
        // answered 451 and the app retries.
        ..Options::default()
    };
    let client = Client::open(&dir, &options)
        .with_context(|| format!("opening the profile {}", dir.display()))?;
    let user = client.profile.address().to_string();
    let state = dir.join(STATE_DIR);
    let credentials = Credentials::load_or_create(&state, user.clone())?;
    match cli.command {
        Command::Info { autoconfig } => {
            let s = Settings {
                user: &user,
                password: credentials.password(),
                imap: cli.imap,
                smtp: cli.smtp,
                tls,
            };
            print!("{}", s.text());
            if let Some(path) = autoconfig {
                std::fs::write(&path, s.autoconfig())
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("Thunderbird autoconfig: {}", path.display());
            }
            Ok(())
        }
        Command::Run => {
            let passphrase = match &cli.passphrase_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ),
                None => std::env::var("SEALPOST_PASSPHRASE").ok(),
            };
            let keys = client.unlock(passphrase.as_deref())?;
            let acceptor = match (&cli.tls_cert, &cli.tls_key) {
                (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
                _ => None,
            };
            let store = Store::open(&state)?;
            let shared = Shared::new(store, credentials);
            let profile = Profile::new(client, keys);
            let imap = tokio::net::TcpListener::bind(cli.imap)
                .await
                .with_context(|| format!("listening on {}", cli.imap))?;
            let smtp = tokio::net::TcpListener::bind(cli.smtp)
                .await
                .with_context(|| format!("listening on {}", cli.smtp))?;
            println!(
                "sealpost-bridge listening imap={} smtp={}",
                imap.local_addr()?,
                smtp.local_addr()?
            );
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            let sender = Arc::new(ClientSender::new(profile.clone()));
            let imap_task = tokio::spawn(server::serve(
                imap,
                acceptor.clone(),
                shared.clone(),
                server::imap_handler,
                stopped(stop_rx.clone()),
            ));
            let smtp_task = tokio::spawn(server::serve(
                smtp,
                acceptor,
                shared.clone(),
                move |io, shared| {
                    sealpost_bridge::smtp::serve_connection(io, shared, sender.clone())
                },
                stopped(stop_rx.clone()),
            ));
            let import = tokio::spawn(sealpost_bridge::import::run(
                ClientSource::new(profile),
                shared,
            ));
            tokio::signal::ctrl_c().await?;
            let _ = stop_tx.send(true);
            import.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = imap_task.await;
                let _ = smtp_task.await;
            })
            .await;
            Ok(())
        }
    }
}
