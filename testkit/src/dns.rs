//! A private DNS server for test zones: Debian's `dnsmasq` on 127.0.0.1 and a free port,
//! in the foreground, answering only from the records given here. Any other name is
//! `NXDOMAIN` (`--address=/#/`), nothing is forwarded, `/etc/hosts` and
//! `/etc/resolv.conf` are not read.
//!
//! ```text
//! let dns = Dns::start(&[Record::mx("legacy.test", "mail.legacy.test", 10),
//!                        Record::a("mail.legacy.test", "127.0.0.1")]);
//! // dns.addr is 127.0.0.1:PORT; give it to the client as `--dns-server`.
//! ```
//!
//! The server is ready when it answers a query (polled with a deadline); it is killed when
//! the [`Dns`] is dropped (and with the test process, like the nodes).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hygiene::{kill_and_reap, spawn_tied};

/// Where Debian installs it (package `dnsmasq-base`).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long dnsmasq may take to answer its first query.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// One record of the test zone, as a dnsmasq option.
#[derive(Clone, Debug)]
pub struct Record(String);

impl Record {
    /// An MX record: `domain` receives mail at `host` (preference `pref`). `host` "." is
    /// RFC 7505's null MX ("accepts no mail").
    pub fn mx(domain: &str, host: &str, pref: u16) -> Record {
        Record(format!("--mx-host={domain},{host},{pref}"))
    }
    /// An A (or AAAA) record.
    pub fn a(name: &str, ip: &str) -> Record {
        Record(format!("--host-record={name},{ip}"))
    }
    /// Not a record: the TTL of every answer, in seconds (dnsmasq's default is 0, which
    /// resolvers do not cache).
    pub fn ttl(secs: u32) -> Record {
        Record(format!("--local-ttl={secs}"))
    }
    /// A TXT record (e.g. SPF, DKIM keys), as strings of at most 255 bytes that resolvers
    /// join. dnsmasq takes the option's text as is (quotes would be part of the record) and
    /// splits strings at commas, so `text` may not contain a comma.
    pub fn txt(name: &str, text: &str) -> Record {
        assert!(
            !text.contains(','),
            "a TXT record for dnsmasq without commas: {text}"
        );
        let strings: Vec<&str> = text
            .as_bytes()
            .chunks(255)
            .map(|c| std::str::from_utf8(c).expect("TXT text is ASCII"))
            .collect();
        Record(format!("--txt-record={name},{}", strings.join(",")))
    }
}

/// A running private dnsmasq.
pub struct Dns {
    /// `127.0.0.1:PORT`, UDP and TCP.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Dns {
    /// Starts dnsmasq serving `records`; panics (with its output) when it cannot.
    pub fn start(records: &[Record]) -> Dns {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install dnsmasq-base (scripts/deps.sh does)"
        );
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::new();
        // A port found free can be taken before dnsmasq binds it: try a few.
        for _ in 0..5 {
            match Self::try_start(records, deadline) {
                Ok(dns) => return dns,
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    fn try_start(records: &[Record], deadline: Instant) -> Result<Dns, String> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--log-facility=-",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            // Everything not given below: no such domain, never forwarded.
            "--address=/#/",
        ])
        .arg(format!("--port={port}"))
        .args(records.iter().map(|r| r.0.as_str()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = spawn_tied(cmd).map_err(|e| format!("spawn {DNSMASQ}: {e}"))?;
        // Keep its log drained (and at hand if it dies).
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut dns = Dns {
            addr,
            child: Some(child),
        };
        loop {
            if dns.answers() {
                return Ok(dns);
            }
            let exited = dns.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                dns.child = None;
                return Err(format!("{status}: {}", log.lock().unwrap()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {addr} in time: {}",
                    log.lock().unwrap()
                ));
            }
        }
    }

    /// Whether the server answers a query (any answer) within a short wait.
    fn answers(&self) -> bool {
        let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        // A query for "ready.invalid" IN A, id 0x5e9a, recursion desired.
        let mut q = vec![0x5e, 0x9a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "invalid"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if sock.send_to(&q, self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == q[..2])
    }

    /// `--dns-server` argument value.
    pub fn server_arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the moment of asking.
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free for both UDP and TCP".into())
}
