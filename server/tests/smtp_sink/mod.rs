//! A scripted SMTP server on loopback for tests of the node's outbound legacy mail: it
//! speaks enough ESMTP for the gateway (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps
//! every message it answered `250` with its Message-ID, and answers as the test says
//! (defer everything with a 4xx, refuse some recipients with a 5xx, wait before the final
//! reply, defer some transactions at random). It lives in the test process, so it outlives
//! the node it serves across kills and restarts. Also: helpers that send legacy mail as a
//! user of a node (a letter sealed to `gateway@DOMAIN`, submitted as a hop to the node).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::{MailboxRecord, SignedRecord};
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Longest line or message the sink reads.
const MAX_LINE: usize = 4096;
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// How the sink answers.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// When set, every transaction is refused for now at `MAIL FROM` with this reply.
    pub defer_all: Option<String>,
    /// Recipients refused at `RCPT TO`, with the full reply line (e.g. `550 5.1.1 ...`).
    pub refuse: HashMap<String, String>,
    /// One transaction in this many is deferred at the end of data (0: never).
    pub defer_one_in: u32,
    /// The final reply waits a random time up to this long.
    pub max_delay: Duration,
}

/// A message the sink answered `250` to.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub message_id: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// When the sink took it (before answering).
    pub at: Instant,
    /// When its `250` was written to the socket, if it was.
    pub replied: Option<Instant>,
}

#[derive(Default)]
struct State {
    script: Script,
    accepted: Vec<Accepted>,
    /// Every reply with a 4xx or 5xx code it gave, in order.
    refusals: Vec<String>,
    sessions: usize,
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Sink {
    /// Listens on `127.0.0.1:0` and serves until the test ends.
    pub async fn start(script: Script) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink address");
        let state = Arc::new(Mutex::new(State {
            script,
            ..State::default()
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, s).await;
                });
            }
        });
        Sink { addr, state }
    }

    pub fn set_script(&self, script: Script) {
        self.state.lock().unwrap().script = script;
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// How often each Message-ID was accepted.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for a in self.state.lock().unwrap().accepted.iter() {
            *out.entry(a.message_id.clone()).or_default() += 1;
        }
        out
    }

    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }

    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions
    }
}

/// The Message-ID of a message (without angle brackets), from its header.
pub fn message_id_of(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("message-id")
        {
            return value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
        }
    }
    String::new()
}

async fn session(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    state.lock().unwrap().sessions += 1;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP scripted sink\r\n")
        .await?;
    let mut rcpts: Vec<String> = Vec::new();
    let mut mail = false;
    loop {
        let line = read_line(&mut r).await?;
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-sink.test\r\n250-8BITMIME\r\n250 SIZE 20000000".into()
        } else if upper.starts_with("MAIL FROM:") {
            let deferred = state.lock().unwrap().script.defer_all.clone();
            match deferred {
                Some(why) => why,
                None => {
                    mail = true;
                    rcpts.clear();
                    "250 2.1.0 ok".into()
                }
            }
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = line[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase();
            let refused = state.lock().unwrap().script.refuse.get(&rcpt).cloned();
            match (mail, refused) {
                (false, _) => "503 5.5.1 MAIL first".into(),
                (true, Some(why)) => why,
                (true, None) => {
                    rcpts.push(rcpt);
                    "250 2.1.5 ok".into()
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                w.write_all(b"354 go ahead\r\n").await?;
                let data = read_data(&mut r).await?;
                let (defer, delay) = {
                    let s = state.lock().unwrap();
                    let defer = s.script.defer_one_in > 0
                        && rand::rng().random_ratio(1, s.script.defer_one_in);
                    let delay = if s.script.max_delay.is_zero() {
                        Duration::ZERO
                    } else {
                        rand::rng().random_range(Duration::ZERO..s.script.max_delay)
                    };
                    (defer, delay)
                };
                tokio::time::sleep(delay).await;
                mail = false;
                if defer {
                    "451 4.3.0 scripted deferral, try again".into()
                } else {
                    // Counted before the answer goes out: from here on the sender may or
                    // may not learn that the message was taken.
                    state.lock().unwrap().accepted.push(Accepted {
                        message_id: message_id_of(&data),
                        rcpts: std::mem::take(&mut rcpts),
                        data,
                        at: Instant::now(),
                        replied: None,
                    });
                    let index = state.lock().unwrap().accepted.len() - 1;
                    w.write_all(b"250 2.0.0 queued as sink\r\n").await?;
                    state.lock().unwrap().accepted[index].replied = Some(Instant::now());
                    continue;
                }
            }
        } else if upper == "RSET" {
            mail = false;
            rcpts.clear();
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 not implemented".into()
        };
        if reply.starts_with('4') || reply.starts_with('5') {
            state.lock().unwrap().refusals.push(reply.clone());
        }
        w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

async fn read_line(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

/// The message up to `CRLF.CRLF`, dot-unstuffed.
async fn read_data(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(out);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        out.extend_from_slice(line);
        if out.len() > MAX_MESSAGE {
            return Err(std::io::Error::other("message too large"));
        }
    }
}

/// What a user needs to send legacy mail through a node's gateway.
pub struct Outgoing {
    pub url: NodeUrl,
    pub node_cert: Cert,
    pub gateway_cert: Cert,
    pub gateway_mailbox: MailboxId,
}

impl Outgoing {
    /// Reads the node's descriptor and the gateway's record (`gateway@DOMAIN`).
    pub async fn discover(http: &reqwest::Client, url: &NodeUrl, domain: &str) -> Outgoing {
        let (_, node_cert) = sealpost_testkit::api::Api::new(http.clone())
            .descriptor(url)
            .await
            .expect("descriptor");
        let resp = http
            .get(url.join(&format!("/v1/records/gateway@{domain}")))
            .send()
            .await
            .expect("gateway record");
        assert!(resp.status().is_success(), "gateway record: {resp:?}");
        let signed = SignedRecord::decode(&resp.bytes().await.expect("body")).expect("record");
        let record = MailboxRecord::decode(&signed.body).expect("record body");
        let gateway_cert =
            sealpost_proto::identity::cert_from_bytes(&record.cert).expect("gateway cert");
        Outgoing {
            url: url.clone(),
            node_cert,
            gateway_cert,
            gateway_mailbox: record.homes[0].mailbox,
        }
    }

    /// The hop a user submits for a letter to `legacy_to`: returns it and the Message-ID.
    pub fn hop(
        &self,
        from: &Address,
        keys: &Keyring,
        legacy_to: &[&str],
        subject: &str,
    ) -> (Vec<u8>, String) {
        let to: Vec<Address> = legacy_to
            .iter()
            .map(|a| Address::parse(a).expect("address"))
            .collect();
        let mut letter = Letter::new(
            from.clone(),
            to.clone(),
            subject,
            format!("This is {subject}.\n"),
            sealpost_testkit::api::now() as i64,
        );
        letter.legacy_to = to;
        let message_id = letter.message_id.clone();
        let sealed = seal(&letter, keys, &self.gateway_cert).expect("seal to the gateway");
        let env = Envelope {
            id: EnvelopeId::random(),
            mailbox: self.gateway_mailbox,
            sealed,
            token: Vec::new(),
        };
        let hop = HopWrapper::wrap(&env, self.url.clone(), &self.node_cert).expect("wrap");
        (hop.encode(), message_id)
    }
}
