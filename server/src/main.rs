//! The `sealpost-node` command: `init` a node directory, `run` a node, `backup` and
//! `restore` its database.

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
    /// Print every DNS record the operator publishes for this node (zone-file text): how
    /// nodes are found, and for the gateway MX, SPF, both DKIM keys (made when missing) and
    /// DMARC.
    DnsRecords {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read the node's database (read-only; the node may be running) and say what it holds:
    /// counts per column family, the outbound queue's destinations, and whether each
    /// --find string occurs anywhere in it.
    Inspect {
        #[arg(long)]
        config: PathBuf,
        /// A string to look for in every key and value (repeatable).
        #[arg(long = "find", value_name = "TEXT")]
        find: Vec<String>,
        /// Bytes, in hex, to look for (repeatable): e.g. a key fingerprint.
        #[arg(long = "find-hex", value_name = "HEX")]
        find_hex: Vec<String>,
    },
    /// Administer the running node through its admin socket (`[admin] socket`; run as the
    /// node's user or root).
    Admin {
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Copy the node's database into DIR, a new or empty directory, while the node serves:
    /// a consistent copy holding every write the node answered before the backup began.
    Backup {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Put a backup in place as the node's database (node stopped; its data directory must
    /// be missing or empty). The node's keys and node.toml are not in the backup.
    Restore {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Move the node's data from one storage backend to another (every node process
    /// stopped): `--from rocksdb --to postgres` copies data_dir into [storage.postgres].
    /// Rows already there are kept, so an interrupted move can be run again.
    Migrate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Override any field, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Free ADDRESS (node stopped): forget which account owns it and drop its record, so
    /// that it can be registered anew.
    ResetAddress {
        #[arg(long)]
        config: PathBuf,
        address: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Peer nodes: pins, blocks, rotated keys.
    Peers {
        #[command(subcommand)]
        command: PeersCommand,
    },
    /// The outbound queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Print /metrics (whatever admin.metrics_token says).
    Metrics,
    /// Accounts: list with usage, suspend, unsuspend, delete. USER is an address the
    /// account owns or its mailbox id (32 hex digits).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// An account's own quota, in place of `[limits] mailbox_quota`.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Invites kept by the node (for `registration.policy = "invite"`).
    Invites {
        #[command(subcommand)]
        command: InvitesCommand,
    },
}

#[derive(Subcommand)]
enum InvitesCommand {
    /// Make an invite and print its code (shown only now: the node keeps its hash).
    Create {
        /// Registrations it allows (default 1).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it works: N followed by s, m, h, d or w (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// Stored invites: id, created, expiry, uses, state.
    List,
    /// Revoke an invite by its code or its listed id.
    Revoke { code: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Every account: mailbox, created, usage, quota, suspended, addresses.
    List,
    /// End the account's sessions and refuse its sign-ins (mail to it is still accepted).
    Suspend { user: String },
    /// Lift a suspension.
    Unsuspend { user: String },
    /// Delete the account and all its data (letters, devices, addresses, queued mail).
    Delete { user: String },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Set the account's quota: BYTES (suffix K, M, G, T: powers of 1024) or `default`.
    Set { user: String, bytes: String },
    /// The account's quota and usage.
    Show { user: String },
}

#[derive(Subcommand)]
enum PeersCommand {
    /// Pinned peers (URL, node key, from node.toml or first contact) and blocked keys.
    List,
    /// Refuse deliveries signed by KEY (64 hex digits), also after restarts.
    Block { key: String },
    /// Lift a block made with `block`.
    Unblock { key: String },
    /// Pin the key the peer at URL presents now (after it rotated its key).
    Accept { url: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// The hops waiting for delivery.
    List,
    /// Attempt a hop (JOB: its id from `list`), or every hop (`--all`), now, whatever its
    /// backoff.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        job: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Give up on a hop now: it leaves the queue and its sender gets a bounce.
    Drop { job: String },
}

fn admin(path: &std::path::Path, command: AdminCommand) -> anyhow::Result<()> {
    use sealpost_server::admin::proto::Request;
    let config = Config::load(path)?;
    let socket = sealpost_server::admin::socket_path(&config)
        .context("admin.socket is empty in the config: the node has no admin socket")?;
    let req = match command {
        AdminCommand::Peers { command } => match command {
            PeersCommand::List => Request::PeersList,
            PeersCommand::Block { key } => Request::PeersBlock { key },
            PeersCommand::Unblock { key } => Request::PeersUnblock { key },
            PeersCommand::Accept { url } => Request::PeersAccept { url },
        },
        AdminCommand::Queue { command } => match command {
            QueueCommand::List => Request::QueueList,
            QueueCommand::Retry { job, .. } => Request::QueueRetry { id: job },
            QueueCommand::Drop { job } => Request::QueueDrop { id: job },
        },
        AdminCommand::Metrics => Request::Metrics,
        AdminCommand::Users { command } => match command {
            UsersCommand::List => Request::UsersList,
            UsersCommand::Suspend { user } => Request::UsersSuspend { user },
            UsersCommand::Unsuspend { user } => Request::UsersUnsuspend { user },
            UsersCommand::Delete { user } => Request::UsersDelete { user },
        },
        AdminCommand::Quota { command } => match command {
            QuotaCommand::Set { user, bytes } => Request::QuotaSet { user, bytes },
            QuotaCommand::Show { user } => Request::QuotaShow { user },
        },
        AdminCommand::Invites { command } => match command {
            InvitesCommand::Create { uses, expires } => Request::InvitesCreate { uses, expires },
            InvitesCommand::List => Request::InvitesList,
            InvitesCommand::Revoke { code } => Request::InvitesRevoke { code },
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(sealpost_server::admin::call(&socket, &req))?;
    if !reply.ok {
        anyhow::bail!("{}", reply.text.trim_end());
    }
    let _ = std::io::stdout().write_all(reply.text.as_bytes());
    Ok(())
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
    sealpost_proto::no_library_backtraces();
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
        Command::Inspect {
            config,
            find,
            find_hex,
        } => inspect(&config, &find, &find_hex),
        Command::ResetAddress { config, address } => reset_address(&config, &address),
        Command::Admin { config, command } => admin(&config, command),
        Command::Backup { config, to } => backup(&config, &to),
        Command::Restore { config, from } => restore(&config, &from),
        Command::DnsRecords { config } => dns_records(&config),
        Command::Migrate {
            config,
            from,
            to,
            set,
        } => migrate(&config, &from, &to, &set),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr is no reason to panic on the way out.
            let _ = writeln!(std::io::stderr(), "sealpost-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dns_records(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let text = sealpost_server::gateway::dns_records(&config)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

fn inspect(path: &std::path::Path, find: &[String], find_hex: &[String]) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    let config = Config::load(path)?;
    let mut needles: Vec<(String, Vec<u8>)> = find
        .iter()
        .map(|f| (format!("{f:?}"), f.as_bytes().to_vec()))
        .collect();
    for h in find_hex {
        let bytes =
            hex::decode(h.replace(' ', "")).with_context(|| format!("--find-hex {h}: not hex"))?;
        needles.push((
            format!("hex {}", h.replace(' ', "").to_ascii_uppercase()),
            bytes,
        ));
    }
    let data = config.resolve(&config.data_dir);
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut found: Vec<Vec<String>> = vec![Vec::new(); needles.len()];
    let mut destinations: BTreeMap<String, u64> = BTreeMap::new();
    let mut envelope_sizes: BTreeMap<usize, u64> = BTreeMap::new();
    sealpost_server::store::rocks::scan_all(&data, |cf, k, v| {
        let c = counts.entry(cf.to_string()).or_default();
        c.0 += 1;
        c.1 += (k.len() + v.len()) as u64;
        for (i, (_, n)) in needles.iter().enumerate() {
            let hit = |h: &[u8]| !n.is_empty() && h.windows(n.len()).any(|w| w == n);
            if (hit(k) || hit(v)) && !found[i].iter().any(|f| f == cf) {
                found[i].push(cf.to_string());
            }
        }
        if cf == "envelopes" {
            *envelope_sizes.entry(v.len()).or_default() += 1;
        }
        if cf == "outbound"
            && let Ok(item) = serde_json::from_slice::<sealpost_server::store::OutboundItem>(v)
        {
            *destinations
                .entry(item.destination.to_string())
                .or_default() += 1;
        }
    })?;
    let mut out = String::new();
    for cf in sealpost_server::store::rocks::COLUMN_FAMILIES {
        let (n, bytes) = counts.get(cf).copied().unwrap_or_default();
        out.push_str(&format!("{cf:<10} {n:>6} entries {bytes:>10} bytes\n"));
    }
    for (size, n) in envelope_sizes {
        out.push_str(&format!("envelope size {size} bytes: {n}\n"));
    }
    if destinations.is_empty() {
        out.push_str("outbound queue: empty\n");
    }
    for (d, n) in destinations {
        out.push_str(&format!("outbound queue: {n} hop(s) for {d}\n"));
    }
    for ((name, _), cfs) in needles.iter().zip(found) {
        if cfs.is_empty() {
            out.push_str(&format!("{name}: not stored\n"));
        } else {
            out.push_str(&format!("{name}: stored in {}\n", cfs.join(", ")));
        }
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    Ok(())
}

fn migrate(path: &std::path::Path, from: &str, to: &str, set: &[String]) -> anyhow::Result<()> {
    use sealpost_server::store::migrate::{MigrateError, rocks_to_postgres};
    if (from, to) != ("rocksdb", "postgres") {
        return Err(MigrateError::Direction.into());
    }
    let config = Config::load_with(path, set)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let moved = runtime.block_on(rocks_to_postgres(&config))?;
    println!("moved to PostgreSQL: {moved}");
    println!("now set [storage] backend = \"postgres\" and start the node processes");
    Ok(())
}

fn reset_address(path: &std::path::Path, address: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if sealpost_server::store::reset::reset_address(&config, address)? {
        println!("freed {}: it can be registered anew", address.trim());
    } else {
        println!("{} was not claimed and had no record", address.trim());
    }
    Ok(())
}

fn backup(path: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let copied = sealpost_server::store::backup::backup_node(&config, to)?;
    let retried = match copied.attempts {
        0 | 1 => String::new(),
        n => format!(" (copy {n}: the node retired files under the earlier ones)"),
    };
    println!(
        "backed up {} entries ({} bytes) into {}{retried}",
        copied.entries,
        copied.bytes,
        to.display()
    );
    Ok(())
}

fn restore(path: &std::path::Path, from: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let copied = sealpost_server::store::backup::restore_node(&config, from)?;
    println!(
        "restored {} files ({} bytes) from {} into {}",
        copied.entries,
        copied.bytes,
        from.display(),
        config.resolve(&config.data_dir).display()
    );
    Ok(())
}

fn init(dir: &std::path::Path, opts: InitOptions) -> anyhow::Result<()> {
    let done = init_node(dir, &opts)?;
    let mut text = format!(
        "wrote {}\nnode key {}\n",
        done.config_path.display(),
        hex::encode(done.node_key)
    );
    for code in &done.invites {
        text.push_str(&format!("invite {code}\n"));
    }
    // `init | head -1` closes stdout early: the node is written all the same, no panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
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
            // The scheme this socket really speaks, whatever public_url says.
            let scheme = if ready.tls { "https" } else { "http" };
            if !ready.tls && ready.url.as_str().starts_with("https://") {
                let _ = writeln!(
                    std::io::stderr(),
                    "sealpost-node: warning: public_url {} says https, but no [tls] cert/key is set: this socket serves plain HTTP (fine behind a TLS proxy, wrong otherwise)",
                    ready.url
                );
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "sealpost-node listening on {scheme}://{}", ready.addr);
            if let Some(smtp) = ready.gateway {
                let _ = writeln!(out, "sealpost-node gateway listening on smtp://{smtp}");
            }
            let _ = out.flush();
        })
        .await
        .map_err(anyhow::Error::from)
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
