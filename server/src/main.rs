//! The `sealpost-node` command: `init` a node directory, `run` a node.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sealpost_proto::NodeUrl;
use sealpost_server::config::RegistrationPolicy;
use sealpost_server::{Config, InitOptions, init_node, run_with};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "sealpost-node", version, about = "Sealpost mailbox node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write DIR/node.toml (commented) and fresh node keys (mode 0600).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on (default 127.0.0.1:8440; port 0 picks one at start).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// URL clients and nodes reach this node at (default: derived from the bound address).
        #[arg(long)]
        public_url: Option<NodeUrl>,
        /// Who may register: open, invite (one code is generated and printed) or closed.
        #[arg(long, value_parser = parse_policy, default_value = "open")]
        registration: RegistrationPolicy,
        /// Overwrite an existing node.toml (keys are kept).
        #[arg(long)]
        force: bool,
    },
    /// Serve until SIGINT or SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override `public_url`.
        #[arg(long)]
        public_url: Option<NodeUrl>,
        /// Override any field: a dotted key and a TOML value, e.g. relay.give_up_after=2.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn parse_policy(s: &str) -> Result<RegistrationPolicy, String> {
    match s {
        "open" => Ok(RegistrationPolicy::Open),
        "invite" => Ok(RegistrationPolicy::Invite),
        "closed" => Ok(RegistrationPolicy::Closed),
        _ => Err("expected open, invite or closed".into()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            dir,
            listen,
            public_url,
            registration,
            force,
        } => init(
            &dir,
            InitOptions {
                listen,
                public_url,
                registration,
                force,
            },
        ),
        Command::Run {
            config,
            listen,
            public_url,
            set,
        } => serve(&config, listen, public_url, &set),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init(dir: &std::path::Path, opts: InitOptions) -> anyhow::Result<()> {
    let done = init_node(dir, &opts)?;
    println!("wrote {}", done.config_path.display());
    println!("node key {}", hex::encode(done.node_key));
    for code in &done.invites {
        println!("invite {code}");
    }
    Ok(())
}

fn serve(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    public_url: Option<NodeUrl>,
    set: &[String],
) -> anyhow::Result<()> {
    let mut config = Config::load_with(path, set)?;
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(u) = public_url {
        config.public_url = Some(u);
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .context("log.filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        run_with(listener, config, shutdown_signal(), |ready| {
            let scheme = if ready.url.as_str().starts_with("https://") {
                "https"
            } else {
                "http"
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "sealpost-node listening on {scheme}://{}", ready.addr);
            let _ = out.flush();
        })
        .await
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
