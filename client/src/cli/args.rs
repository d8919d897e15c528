//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What `send --help` and `reply --help` say about legacy e-mail.
pub const LEGACY_HELP: &str = "\
Legacy e-mail:
  A recipient whose domain has no Sealpost node (nothing listens at https://DOMAIN, or
  it serves no node descriptor) but takes e-mail (DNS MX), one whose domain is in your
  legacy list (`sealpost legacy add`), and one named with --legacy get one copy
  together, sealed to your gateway (`sealpost gateway`; by default gateway@YOUR-DOMAIN,
  if your domain's node publishes it), which sends it on by SMTP. That leg is NOT
  end-to-end encrypted: the letter leaves Sealpost at the gateway. The first letter to
  such an address needs --legacy ADDR, or a yes at the terminal after the warning. A
  domain that does not exist (a typo?) or has no MX is an error that names the domains
  you know that it resembles; nothing is sent. An OpenPGP key imported for a legacy
  recipient (`sealpost import-key`) is not used yet: no PGP/MIME. A domain in the resolve
  table, or where you have seen a Sealpost record, is never taken for legacy. When it
  cannot be told (a timeout, a TLS error, a 5xx, DNS not answering), or there is no
  gateway, nothing is sent.";

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    usage or input error (bad arguments, unknown address or message, unreadable file,
       a recipient domain that does not exist or takes no e-mail, a first letter to a
       legacy address not agreed to, legacy recipients but no gateway, an address a
       node has for another key, a verified key to replace without a terminal or --yes)
  2    network or node error (node unreachable or refusing; mail kept in the outbox,
       also a letter whose recipients cannot be looked up now; DNS not answering)
  3    crypto or verification problem (changed key, bad signature, wrong passphrase)
  4    profile error (missing, corrupt, locked or unwritable profile)
  130  interrupted (Ctrl-C); `send` first says whether the letter was sent or is kept in
       the outbox (where it goes out with the next send, fetch or `outbox flush`)

Environment:
  SEALPOST_PROFILE     profile directory (like --profile)
  SEALPOST_PASSPHRASE  passphrase of the secret key (or use --passphrase-file; at a
                       terminal, sealpost asks)
  SEALPOST_DNS_SERVER  DNS server IP:PORT (like --dns-server)
  SEALPOST_DIRECT_LOOKUPS  ask other nodes directly (like --direct-lookups)
  SEALPOST_BACKUP_PASSPHRASE  passphrase of `backup create|restore`
  EDITOR, VISUAL       editor for the body when stdin is a terminal";

#[derive(Debug, Parser)]
#[command(
    name = "sealpost",
    version,
    about = "Sealpost: end-to-end encrypted, email-like messaging",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Profile directory [default: $XDG_DATA_HOME/sealpost or ~/.local/share/sealpost]
    #[arg(long, global = true, value_name = "DIR", env = "SEALPOST_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Use URL as the node of DOMAIN for this run (repeatable), like curl --resolve
    #[arg(long, global = true, value_name = "DOMAIN=URL")]
    pub resolve: Vec<String>,
    /// Read the secret key's passphrase from FILE (first line)
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Machine-readable output (list, read, fetch, whoami, contact list/show, node list, outbox list, resolve list, legacy list, gateway show)
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for a node to connect or answer
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Also trust the certificate authorities in FILE (PEM) for nodes' HTTPS, besides the
    /// built-in roots and the system's trust store (repeatable; `init` keeps them in the profile)
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Ask this DNS server (IP:PORT) instead of the system's, for mail-domain checks and node
    /// host names (`init` keeps it in the profile)
    #[arg(
        long,
        global = true,
        value_name = "IP:PORT",
        env = "SEALPOST_DNS_SERVER"
    )]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Connect to nodes from this local IP address (e.g. one of several loopback or
    /// interface addresses)
    #[arg(long, global = true, value_name = "IP")]
    pub source_address: Option<std::net::IpAddr>,
    /// Ask other nodes for records and descriptors directly, not through your own homes.
    /// By default lookups go through your homes, encrypted to the node asked (Oblivious
    /// HTTP), so that node never sees this device's address; with this flag it does
    #[arg(long, global = true, env = "SEALPOST_DIRECT_LOOKUPS")]
    pub direct_lookups: bool,
    /// Accepted for older scripts: oblivious lookups are the default now
    #[arg(long, global = true, hide = true, env = "SEALPOST_OBLIVIOUS_LOOKUPS")]
    pub oblivious_lookups: bool,
    /// `fetch` looks contacts' records up again once they are this old, whatever their
    /// schedule (about every 6 hours; for tests)
    #[arg(long, global = true, hide = true, value_name = "SECS")]
    pub refresh_after: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create keys, register on every node, publish one signed record listing them all
    Init {
        /// Your address, e.g. alice@alpha.example
        address: String,
        /// A home node (repeat for several homes)
        #[arg(long = "node", value_name = "URL", required = true)]
        nodes: Vec<String>,
        /// Invitation code for nodes that register by invitation
        #[arg(long, value_name = "CODE")]
        invite: Option<String>,
        /// Use this secret key (e.g. from `export-key --secret`) instead of making one
        #[arg(long, value_name = "FILE")]
        import_key: Option<PathBuf>,
    },
    /// Show your address, fingerprint and home nodes
    Whoami,
    /// Print your key's fingerprint (40 hex digits)
    Fingerprint,
    /// Pinned contacts
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Send a letter; the body is read from stdin (or $EDITOR when stdin is a terminal)
    #[command(after_help = LEGACY_HELP)]
    Send(SendArgs),
    /// Fetch new mail from every trusted home node (and retry the outbox)
    Fetch,
    /// List stored letters: those received, or with --sent the copies of those you sent
    List {
        /// The letters you sent (from any of your devices) instead
        #[arg(long, conflicts_with = "all")]
        sent: bool,
        /// Received and sent letters together
        #[arg(long)]
        all: bool,
    },
    /// Show a letter (ID: a unique prefix of at least 4 hex digits)
    Read {
        id: String,
        /// Write the attachments into DIR
        #[arg(long, value_name = "DIR")]
        save_attachments: Option<PathBuf>,
    },
    /// Reply to a letter; the body is read like `send`'s
    #[command(after_help = LEGACY_HELP)]
    Reply {
        id: String,
        /// Copy everyone else the letter went to
        #[arg(long)]
        all: bool,
        /// Attach a file (repeatable)
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Send to ADDR, one of the recipients, as legacy e-mail through your gateway, without
        /// looking it up (repeatable; NOT end-to-end encrypted)
        #[arg(long = "legacy", value_name = "ADDR")]
        legacy: Vec<String>,
    },
    /// Print your public key (armored OpenPGP, for gpg --import)
    ExportKey {
        /// Print the secret key instead (backup; locked if the profile has a passphrase)
        #[arg(long)]
        secret: bool,
        /// Write to FILE (created 0600) instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import someone's public key (OpenPGP, e.g. from gpg --export) as a pinned contact
    ImportKey {
        /// File to read, or - for stdin
        file: PathBuf,
        /// The address to pin it for, when the key names several
        #[arg(long, value_name = "ADDR")]
        address: Option<String>,
    },
    /// Your home nodes
    #[command(subcommand)]
    Node(NodeCommand),
    /// Sign and publish your mailbox record again (renews its expiry)
    Publish,
    /// Replace your key with a new one that the current key endorses, on every home node
    RotateKey,
    /// Letters not yet accepted by one of your nodes
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The profile's persistent domain → node table
    #[command(subcommand)]
    Resolve(ResolveCommand),
    /// The gateway your letters to legacy e-mail addresses go through
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Domains without a Sealpost node: their addresses go through the gateway, not looked up
    #[command(subcommand)]
    Legacy(LegacyCommand),
    /// Passphrase-encrypted backups: key, contacts and pins, settings (letters optional)
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Your devices: link a new one with a one-time code, list them, remove one
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show a one-time code (and a URI for a QR code) for a new device, and wait for it
    Add {
        /// This device's name, if it has no device key yet
        #[arg(long, default_value = "first device")]
        name: String,
    },
    /// Join your account from a new device with the code `device add` shows; the profile
    /// (--profile) must not exist yet
    Join {
        /// The code (123456-abcd-efgh) or the URI (sealpost:link?node=...&code=...)
        code: String,
        /// The node `device add` named (not needed with the URI)
        #[arg(long, value_name = "URL")]
        node: Option<String>,
        /// This device's name
        #[arg(long, default_value = "new device")]
        name: String,
    },
    /// The devices of your account on each home
    List,
    /// Remove a device (its id or a unique prefix) on every home: it can fetch no more
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write a backup of this profile to FILE (a new file; OpenPGP, `gpg --decrypt` opens it)
    Create {
        file: PathBuf,
        /// Include the stored letters (received and sent)
        #[arg(long)]
        letters: bool,
        /// Read the backup's passphrase from FILE (first line); else
        /// SEALPOST_BACKUP_PASSPHRASE, else it is asked at the terminal
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Make the profile (--profile; it must not exist yet) from the backup in FILE
    Restore {
        file: PathBuf,
        /// Read the backup's passphrase from FILE (first line); else
        /// SEALPOST_BACKUP_PASSPHRASE, else it is asked at the terminal
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient (repeatable)
    #[arg(long = "to", value_name = "ADDR", required = true)]
    pub to: Vec<String>,
    /// Copy recipient (repeatable)
    #[arg(long = "cc", value_name = "ADDR")]
    pub cc: Vec<String>,
    /// Subject line
    #[arg(long, short, default_value = "")]
    pub subject: String,
    /// Attach a file (repeatable)
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Send to ADDR, one of the recipients, as legacy e-mail through your gateway, without
    /// looking it up (repeatable; NOT end-to-end encrypted)
    #[arg(long = "legacy", value_name = "ADDR")]
    pub legacy: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Look up ADDR's record and pin its key (or refresh it)
    Add { address: String },
    /// List pinned contacts
    List,
    /// Show a contact's key, state and homes
    Show { address: String },
    /// Mark a contact verified after comparing the fingerprint with them out of band
    Verify {
        address: String,
        fingerprint: String,
    },
    /// Accept a contact's changed key (pinning the new one)
    Accept {
        address: String,
        /// Only accept if the new key has this fingerprint
        #[arg(long, value_name = "FPR")]
        fingerprint: Option<String>,
        /// Replace a verified key without asking (otherwise asked on a terminal, refused without one)
        #[arg(long)]
        yes: bool,
    },
    /// Forget a contact
    Remove { address: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List your home nodes
    List,
    /// Trust a home again, or register on a new node and add it to your record
    Trust {
        url: String,
        #[arg(long, value_name = "CODE")]
        invite: Option<String>,
    },
    /// Stop fetching from and submitting through a home
    Untrust {
        url: String,
        /// Also remove it from your record and publish the record on the other homes
        #[arg(long)]
        drop: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List waiting deliveries
    List,
    /// Submit them now
    Flush,
    /// Give up on a waiting delivery (ID prefix)
    Drop { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ResolveCommand {
    List,
    /// Add or replace an entry
    Add {
        #[arg(value_name = "DOMAIN=URL")]
        entry: String,
    },
    Remove {
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Use ADDR (e.g. gateway@example.org, on one of your home nodes); looks it up and pins
    /// its key
    Set {
        #[arg(value_name = "ADDR")]
        address: String,
    },
    /// The gateway in use: the one set, else gateway@YOUR-DOMAIN when your domain's node
    /// publishes it
    Show,
    /// Forget the gateway set; the default applies again
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum LegacyCommand {
    /// List the legacy domains
    List,
    /// Add a domain (not one of the resolve table, which wins)
    Add { domain: String },
    /// Remove a domain
    Remove { domain: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sealpost").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_repeated_recipients_and_attachments() {
        let cli = parse(&[
            "--profile",
            "/tmp/p",
            "send",
            "--to",
            "a@b.test",
            "--to",
            "c@d.test",
            "--cc",
            "e@f.test",
            "--subject",
            "hi",
            "--attach",
            "x.bin",
            "--attach",
            "y.bin",
            "--resolve",
            "b.test=http://127.0.0.1:1",
        ])
        .unwrap();
        let Command::Send(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.to, ["a@b.test", "c@d.test"]);
        assert_eq!(s.cc, ["e@f.test"]);
        assert_eq!(s.attach.len(), 2);
        assert_eq!(cli.global.resolve, ["b.test=http://127.0.0.1:1"]);
        assert_eq!(
            cli.global.profile.as_deref(),
            Some(std::path::Path::new("/tmp/p"))
        );
    }

    #[test]
    fn init_needs_a_node_and_send_a_recipient() {
        assert!(parse(&["init", "alice@alpha.test"]).is_err());
        assert!(
            parse(&[
                "init",
                "alice@alpha.test",
                "--node",
                "http://a",
                "--node",
                "http://b"
            ])
            .is_ok()
        );
        assert!(parse(&["send", "--subject", "x"]).is_err());
        assert!(parse(&["read"]).is_err());
    }

    #[test]
    fn no_passphrase_on_the_command_line() {
        assert!(parse(&["--passphrase", "x", "whoami"]).is_err());
        assert!(parse(&["--passphrase-file", "/tmp/pw", "whoami"]).is_ok());
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in [
            "0    success",
            "1    usage",
            "2    network",
            "3    crypto",
            "4    profile",
            "130  interrupted",
        ] {
            assert!(help.contains(code), "{code} missing from --help");
        }
    }

    #[test]
    fn legacy_recipients_and_the_gateway() {
        let cli = parse(&[
            "send",
            "--to",
            "a@b.test",
            "--to",
            "c@legacy.test",
            "--legacy",
            "c@legacy.test",
        ])
        .unwrap();
        let Command::Send(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.legacy, ["c@legacy.test"]);
        let cli = parse(&["reply", "abcd", "--legacy", "x@y.test"]).unwrap();
        assert!(matches!(cli.command, Command::Reply { legacy, .. } if legacy == ["x@y.test"]));
        assert!(matches!(
            parse(&["gateway", "set", "gateway@gw.test"]).unwrap().command,
            Command::Gateway(GatewayCommand::Set { address }) if address == "gateway@gw.test"
        ));
        assert!(parse(&["gateway", "set"]).is_err());
        assert!(parse(&["gateway", "show"]).is_ok() && parse(&["gateway", "clear"]).is_ok());
        assert!(parse(&["legacy", "add", "legacy.test"]).is_ok());
        for sub in ["send", "reply"] {
            let mut cmd = Cli::command();
            let help = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(
                help.contains("NOT end-to-end") && help.contains("PGP/MIME"),
                "{sub}: {help}"
            );
        }
    }

    #[test]
    fn lookups_are_oblivious_unless_direct_is_asked_for() {
        let g = parse(&["fetch"]).unwrap().global;
        assert!(!g.direct_lookups);
        assert!(
            parse(&["--direct-lookups", "fetch"])
                .unwrap()
                .global
                .direct_lookups
        );
        // The old opt-in is still accepted, and hidden: it is the default now.
        assert!(parse(&["--oblivious-lookups", "fetch"]).is_ok());
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--direct-lookups") && !help.contains("--oblivious-lookups"));
    }

    #[test]
    fn timeout_is_bounded() {
        assert!(parse(&["--timeout", "0", "fetch"]).is_err());
        assert_eq!(
            parse(&["--timeout", "5", "fetch"]).unwrap().global.timeout,
            5
        );
    }
}
