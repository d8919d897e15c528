//! `sealpost-node init`: a directory with a commented `node.toml` and fresh node keys.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sealpost_proto::{Address, NodeUrl};

use crate::config::{Config, DEFAULT_LISTEN, RegistrationPolicy, TemplateValues, template};
use crate::keys::{KeyError, NodeKeys, host_of};

/// Name of the config file inside the node directory.
pub const CONFIG_FILE: &str = "node.toml";

/// Why `init` wrote no node directory (or only part of one: keys are written before the
/// config, so a retry with the same directory reuses them).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} exists; pass --force to overwrite it (keys are kept)", path.display())]
    ConfigExists { path: PathBuf },
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("existing keys")]
    ExistingKeys(#[source] KeyError),
    #[error("making the node's keys")]
    NewKeys(#[source] KeyError),
    #[error("writing {}", path.display())]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct InitOptions {
    pub listen: Option<SocketAddr>,
    pub public_url: Option<NodeUrl>,
    pub registration: RegistrationPolicy,
    /// Overwrite an existing `node.toml` (existing keys are kept).
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            listen: None,
            public_url: None,
            registration: RegistrationPolicy::Open,
            force: false,
        }
    }
}

pub struct Initialised {
    pub config_path: PathBuf,
    pub node_key: [u8; 32],
    /// Invite codes written to the config (policy `invite`).
    pub invites: Vec<String>,
}

/// The host bounces are signed for: the public URL's, else the listen address's.
fn postmaster_host(opts: &InitOptions, listen: SocketAddr) -> String {
    let host = match &opts.public_url {
        Some(u) => host_of(u),
        None if listen.ip().is_unspecified() => "localhost".into(),
        None => listen.ip().to_string(),
    };
    if Address::parse(&format!("postmaster@{host}")).is_ok() {
        host
    } else {
        "localhost".into()
    }
}

pub fn init_node(dir: &Path, opts: &InitOptions) -> Result<Initialised, InitError> {
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() && !opts.force {
        return Err(InitError::ConfigExists { path: config_path });
    }
    std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let listen = opts.listen.unwrap_or_else(|| {
        DEFAULT_LISTEN
            .parse()
            .expect("invariant: constant address parses")
    });
    let invites = match opts.registration {
        RegistrationPolicy::Invite => vec![hex::encode(rand::random::<[u8; 12]>())],
        _ => Vec::new(),
    };
    let text = template(&TemplateValues {
        listen,
        public_url: opts.public_url.as_ref(),
        policy: opts.registration,
        invites: &invites,
    });
    // Key paths as the template writes them, resolved against the new directory.
    let defaults = Config {
        base_dir: dir.to_owned(),
        ..Config::default()
    };
    let (sign, ident) = (
        defaults.resolve(&defaults.keys.signing_key),
        defaults.resolve(&defaults.keys.identity),
    );
    let keys = if sign.exists() && ident.exists() {
        NodeKeys::load(&sign, &ident).map_err(InitError::ExistingKeys)?
    } else {
        if let Some(kdir) = sign.parent() {
            let create_dir = |source| InitError::CreateDir {
                path: kdir.to_owned(),
                source,
            };
            std::fs::create_dir_all(kdir).map_err(create_dir)?;
            std::fs::set_permissions(kdir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(create_dir)?;
        }
        let keys =
            NodeKeys::generate(&postmaster_host(opts, listen)).map_err(InitError::NewKeys)?;
        keys.save(&sign, &ident).map_err(InitError::NewKeys)?;
        keys
    };
    // The config may hold invite codes: readable by the node's user only.
    let write_file = |source| InitError::WriteFile {
        path: config_path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&config_path)
        .map_err(write_file)?;
    f.write_all(text.as_bytes()).map_err(write_file)?;
    f.sync_all().map_err(write_file)?;
    Ok(Initialised {
        config_path,
        node_key: keys.node_key(),
        invites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_loadable_config_and_keys_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = NodeUrl::parse("http://alpha.test:7000").unwrap();
        let opts = InitOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            public_url: Some(url.clone()),
            registration: RegistrationPolicy::Invite,
            force: false,
        };
        let done = init_node(dir.path(), &opts).unwrap();
        assert_eq!(done.invites.len(), 1);
        let config = Config::load(&done.config_path).unwrap();
        assert_eq!(config.public_url, Some(url.clone()));
        assert_eq!(config.registration.invites, done.invites);
        let keys = NodeKeys::load(
            &config.resolve(&config.keys.signing_key),
            &config.resolve(&config.keys.identity),
        )
        .unwrap();
        assert_eq!(keys.node_key(), done.node_key);
        assert_eq!(keys.postmaster(&url).as_str(), "postmaster@alpha.test");
        assert!(
            matches!(
                init_node(dir.path(), &opts),
                Err(InitError::ConfigExists { path }) if path == done.config_path
            ),
            "refuses to overwrite"
        );
        let again = init_node(
            dir.path(),
            &InitOptions {
                force: true,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(again.node_key, done.node_key, "--force keeps the keys");
    }
}
