//! A private ACME CA for tests: Debian's `pebble` (Let's Encrypt's ACME test server) on
//! 127.0.0.1 and free ports, in a temporary directory, resolving names through a private
//! DNS server ([`crate::dns::Dns`]) and validating TLS-ALPN-01 on the port given. Its own
//! HTTPS certificate comes from a throwaway CA ([`Pebble::https_ca`], for the ACME client);
//! the root it issues under is fetched from its management endpoint ([`Pebble::root_pem`]).
//!
//! Validation is real (no `PEBBLE_VA_ALWAYS_VALID`): pebble connects to the node, asks for
//! ALPN `acme-tls/1` and checks the challenge certificate. `PEBBLE_VA_NOSLEEP` only skips
//! its random pre-validation sleep; nonces are not randomly rejected and every order gets
//! fresh authorizations (so a renewal is validated again).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealpost_testkit::hygiene::{kill_and_reap, spawn_tied};

use crate::TempDir;

/// Where Debian installs it (package `pebble`).
pub const PEBBLE: &str = "/usr/bin/pebble";
/// How long pebble may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running private pebble.
pub struct Pebble {
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// `https://127.0.0.1:PORT` of the management interface.
    pub management: String,
    dir: TempDir,
    child: Option<Child>,
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port` of whatever `dns` resolves,
    /// issuing certificates valid for `validity` (its `certificateValidityPeriod`).
    pub fn start(tls_port: u16, dns: SocketAddr, validity: Duration) -> Pebble {
        assert!(
            std::path::Path::new(PEBBLE).exists(),
            "{PEBBLE} is missing: install pebble (scripts/deps.sh does)"
        );
        let dir = TempDir::new("pebble");
        sealpost_testkit::pki::certificates(dir.path());
        let mut last = String::new();
        // A port found free can be taken before pebble binds it: try a few.
        for _ in 0..5 {
            let (listen, manage, http) = (free_port(), free_port(), free_port());
            let config = serde_json::json!({ "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{manage}"),
                "certificate": dir.path().join("leaf.pem"),
                "privateKey": dir.path().join("leaf.key"),
                "httpPort": http,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }});
            let path = dir.path().join("pebble-config.json");
            std::fs::write(&path, config.to_string()).expect("write pebble config");
            let log = dir.path().join("pebble.log");
            let out = std::fs::File::create(&log).expect("pebble log");
            let mut cmd = Command::new(PEBBLE);
            cmd.arg("-config")
                .arg(&path)
                .arg("-dnsserver")
                .arg(dns.to_string())
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup log"))
                .stderr(out);
            let mut child = spawn_tied(cmd).expect("spawn pebble");
            let deadline = Instant::now() + READY_DEADLINE;
            let up = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
            let ready = loop {
                if up(listen) && up(manage) {
                    break true;
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return Pebble {
                    directory: format!("https://127.0.0.1:{listen}/dir"),
                    management: format!("https://127.0.0.1:{manage}"),
                    dir,
                    child: Some(child),
                };
            }
            kill_and_reap(&mut child);
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("pebble did not start:\n{last}");
    }

    /// The CA of pebble's own HTTPS certificate (for the node's `tls.acme.directory_ca`).
    pub fn https_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pebble's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root that pebble's certificates chain to (a new one each start), PEM.
    pub async fn root_pem(&self) -> String {
        let ca = std::fs::read(self.https_ca()).expect("read pebble's HTTPS CA");
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .build()
            .expect("client");
        let resp = client
            .get(format!("{}/roots/0", self.management))
            .send()
            .await
            .expect("GET pebble /roots/0");
        assert!(
            resp.status().is_success(),
            "pebble /roots/0: {}",
            resp.status()
        );
        resp.text().await.expect("root PEM")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_and_reap(c);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
