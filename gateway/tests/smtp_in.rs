//! The inbound gateway on loopback, driven by swaks (a real SMTP client) and raw sockets,
//! with an in-memory backend standing in for the node's store.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost_gateway::{Backend, Inbound, InboundConfig, serve};
use sealpost_proto::Address;
use sealpost_proto::letter::Letter;
use sealpost_proto::smtp::{DeliveryResult, SmtpConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Memory {
    stored: Mutex<Vec<Inbound>>,
}

impl Backend for Memory {
    async fn is_local_user(&self, rcpt: &Address) -> Result<bool, ()> {
        Ok(matches!(rcpt.local(), "bob" | "dave"))
    }
    async fn deliver(&self, mail: Inbound) -> DeliveryResult {
        let mut s = self.stored.lock().unwrap();
        s.push(mail);
        DeliveryResult::Stored(format!("m{}", s.len()))
    }
}

struct Gateway {
    addr: SocketAddr,
    backend: Arc<Memory>,
    rt: tokio::runtime::Runtime,
}

fn start(max_connections: usize, command_timeout: Duration) -> Gateway {
    start_with_tls(max_connections, command_timeout, None)
}

fn start_with_tls(
    max_connections: usize,
    command_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Gateway {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = Arc::new(Memory::default());
    let cfg = Arc::new(InboundConfig {
        smtp: SmtpConfig {
            hostname: "gw.test".into(),
            max_message_bytes: 200_000,
            ..SmtpConfig::default()
        },
        domain: "gw.test".into(),
        command_timeout,
        session_timeout: Duration::from_secs(60),
        max_connections,
        postmaster: Address::parse("dave@gw.test").unwrap(),
        verifier: None,
    });
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let b = backend.clone();
    rt.spawn(serve(listener, cfg, tls, b, std::future::pending()));
    Gateway { addr, backend, rt }
}

fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
            "--helo",
            "mx.legacy.test",
            "--from",
            "carol@legacy.test",
        ])
        .args(args)
        .output()
        .expect("swaks is installed (make deps)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Sends raw chunks and returns everything the server answered until it closes or goes
/// quiet. After a chunk that ends with `DATA`, it waits for the server's answer before it
/// sends the next one, as a client following the dialogue must (RFC 2920 §3.1).
async fn raw(addr: SocketAddr, chunks: &[&[u8]]) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut out = String::new();
    r.read_line(&mut out).await.unwrap();
    for c in chunks {
        w.write_all(c).await.unwrap();
        if c.ends_with(b"DATA\r\n") {
            loop {
                let mut line = String::new();
                match tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await {
                    Ok(Ok(n)) if n > 0 => out.push_str(&line),
                    _ => return out,
                }
                // The answer to DATA: go ahead, or a refusal of it.
                if ["354", "503", "554"].iter().any(|c| line.starts_with(c)) {
                    break;
                }
            }
        }
    }
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => out.push_str(&line),
            Ok(Err(_)) => break,
        }
        if line.starts_with("221") {
            break;
        }
    }
    out
}

#[test]
fn legacy_mail_with_attachment_is_labelled_and_stored() {
    let g = start(10, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let att = dir.path().join("report.pdf");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&att, &data).unwrap();
    let (ok, log) = swaks(
        g.addr,
        &[
            "--to",
            "bob@gw.test",
            "--header",
            "Subject: quarterly numbers",
            "--body",
            "See the report.",
            "--attach",
            &format!("@{}", att.display()),
        ],
    );
    assert!(ok, "{log}");
    assert!(log.contains("250 2.0.0 OK: stored as m1"), "{log}");
    let stored = g.backend.stored.lock().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].recipients,
        [Address::parse("bob@gw.test").unwrap()]
    );
    assert_eq!(stored[0].arrival.mail_from, "carol@legacy.test");
    let letter = Letter::from_rfc5322(&stored[0].message).unwrap();
    assert_eq!(letter.subject, "quarterly numbers");
    assert_eq!(letter.from.as_str(), "carol@legacy.test");
    assert!(letter.body.contains("See the report."));
    assert!(letter.legacy.as_deref().unwrap().starts_with("arrived via legacy SMTP, not end-to-end; mail-from=<carol@legacy.test>; client=127.0.0.1; helo=mx.legacy.test"));
    assert_eq!(letter.attachments.len(), 1);
    assert_eq!(letter.attachments[0].data, data);
    drop(stored);
    drop(g.rt);
}

#[test]
fn relay_unknown_users_and_oversize_are_refused_and_nothing_is_stored() {
    let g = start(10, Duration::from_secs(30));
    let (ok, log) = swaks(g.addr, &["--to", "eve@elsewhere.test"]);
    assert!(!ok);
    assert!(log.contains("550 5.7.1 Relaying denied"), "{log}");
    let (ok, log) = swaks(g.addr, &["--to", "nobody@gw.test"]);
    assert!(!ok);
    assert!(log.contains("550 5.1.1"), "{log}");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, ("x".repeat(900) + "\n").repeat(300)).unwrap();
    let (ok, log) = swaks(
        g.addr,
        &[
            "--to",
            "bob@gw.test",
            "--body",
            &format!("@{}", big.display()),
        ],
    );
    assert!(!ok);
    assert!(log.contains("552 5.3.4"), "{log}");
    assert!(g.backend.stored.lock().unwrap().is_empty());
}

#[test]
fn smuggling_and_overlong_lines_are_refused() {
    let g = start(10, Duration::from_secs(30));
    let head: &[u8] =
        b"EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n";
    let cases: [&[u8]; 3] = [
        b"From: carol@legacy.test\r\n\r\nhi\n.\nMAIL FROM:<x@gw.test>\r\nRCPT TO:<dave@gw.test>\r\nDATA\r\nFrom: admin@gw.test\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n",
        b"From: carol@legacy.test\r\n\r\nhi\r\n.\nMAIL FROM:<x@gw.test>\r\n.\r\nQUIT\r\n",
        b"From: carol@legacy.test\r\n\r\nhi\n.\r\nQUIT\r\n.\r\nQUIT\r\n",
    ];
    g.rt.block_on(async {
        for body in cases {
            let out = raw(g.addr, &[head, body]).await;
            assert!(out.contains("550 5.5.2 Message refused: bare <"), "{out}");
        }
        let long = format!("EHLO {}\r\nQUIT\r\n", "h".repeat(5000));
        let out = raw(g.addr, &[long.as_bytes()]).await;
        assert!(out.contains("500 5.5.2 Line too long"), "{out}");
        let mut data = b"From: carol@legacy.test\r\n\r\n".to_vec();
        data.extend(std::iter::repeat_n(b'y', 1500));
        data.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let out = raw(g.addr, &[head, &data]).await;
        assert!(
            out.contains("550 5.5.2 Message refused: line longer than 998"),
            "{out}"
        );
    });
    assert!(
        g.backend.stored.lock().unwrap().is_empty(),
        "nothing smuggled or refused was stored"
    );
}

#[test]
fn idle_clients_time_out_and_connections_are_capped() {
    let g = start(2, Duration::from_millis(300));
    g.rt.block_on(async {
        // An idle client (slowloris) is told 421 and dropped after the command timeout.
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("220 "), "{text}");
        assert!(text.contains("421 4.4.2 Timeout"), "{text}");

        // Two sessions hold both slots; a third is refused at once.
        let a = TcpStream::connect(g.addr).await.unwrap();
        let b = TcpStream::connect(g.addr).await.unwrap();
        let mut ra = BufReader::new(a);
        let mut line = String::new();
        ra.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220"));
        let mut rb = BufReader::new(b);
        line.clear();
        rb.read_line(&mut line).await.unwrap();
        let mut c = TcpStream::connect(g.addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf).starts_with("421 4.7.0 Too many connections"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    });
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command, as an acceptor.
fn self_signed(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=gw.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("openssl is installed (make deps)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(dir.join("cert.pem")).unwrap(),
    ))
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(dir.join("key.pem")).unwrap(),
    ))
    .unwrap()
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(sc))
}

#[test]
fn starttls_upgrades_the_session_and_the_label_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let g = start_with_tls(10, Duration::from_secs(30), Some(self_signed(dir.path())));
    let (ok, log) = swaks(
        g.addr,
        &[
            "--to",
            "bob@gw.test",
            "--tls",
            "--header",
            "Subject: over TLS",
            "--body",
            "secret-ish",
        ],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("STARTTLS") && log.contains("220 2.0.0 Ready to start TLS"),
        "{log}"
    );
    assert!(log.contains("TLS started"), "{log}");
    let stored = g.backend.stored.lock().unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].arrival.tls);
    let letter = Letter::from_rfc5322(&stored[0].message).unwrap();
    assert!(letter.legacy.unwrap().contains("tls=yes"));
}

/// One command at a time: writes `cmd` and reads the complete reply (up to its last line).
async fn step(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    cmd: &[u8],
) -> String {
    w.write_all(cmd).await.unwrap();
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => reply.push_str(&line),
            _ => return reply,
        }
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            return reply;
        }
    }
}

async fn connect(
    addr: SocketAddr,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    (r, w)
}

#[test]
fn postmaster_is_accepted_in_every_form_and_delivered_to_the_configured_user() {
    let g = start(10, Duration::from_secs(30));
    g.rt.block_on(async {
        let (mut r, mut w) = connect(g.addr).await;
        step(&mut r, &mut w, b"EHLO mx.legacy.test\r\n").await;
        step(&mut r, &mut w, b"MAIL FROM:<carol@legacy.test>\r\n").await;
        for rcpt in ["<Postmaster>", "<postmaster>", "<POSTMASTER@gw.test>"] {
            let a = step(&mut r, &mut w, format!("RCPT TO:{rcpt}\r\n").as_bytes()).await;
            assert!(a.starts_with("250 2.1.5"), "RCPT TO:{rcpt}: {a}");
        }
        assert!(step(&mut r, &mut w, b"DATA\r\n").await.starts_with("354"));
        let a = step(
            &mut r,
            &mut w,
            b"From: carol@legacy.test\r\nSubject: abuse report\r\n\r\nhello postmaster\r\n.\r\n",
        )
        .await;
        assert!(a.starts_with("250 2.0.0"), "{a}");
    });
    let stored = g.backend.stored.lock().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].recipients,
        [Address::parse("dave@gw.test").unwrap()],
        "one copy, to gateway.postmaster"
    );
}

#[test]
fn postmaster_without_a_mailbox_is_deferred_not_refused() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backend = Arc::new(Memory::default());
    let cfg = Arc::new(InboundConfig {
        smtp: SmtpConfig {
            hostname: "gw.test".into(),
            ..SmtpConfig::default()
        },
        domain: "gw.test".into(),
        command_timeout: Duration::from_secs(30),
        session_timeout: Duration::from_secs(60),
        max_connections: 2,
        postmaster: Address::parse("postmaster@gw.test").unwrap(),
        verifier: None,
    });
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve(listener, cfg, None, backend, std::future::pending()));
    let out = rt.block_on(raw(
        addr,
        &[b"EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<Postmaster>\r\nQUIT\r\n"],
    ));
    assert!(out.contains("451 4.3.0"), "{out}");
}

#[test]
fn an_empty_message_is_answered_and_the_session_goes_on() {
    let g = start(10, Duration::from_secs(30));
    g.rt.block_on(async {
        let (mut r, mut w) = connect(g.addr).await;
        step(&mut r, &mut w, b"EHLO mx.legacy.test\r\n").await;
        step(&mut r, &mut w, b"MAIL FROM:<carol@legacy.test>\r\n").await;
        step(&mut r, &mut w, b"RCPT TO:<bob@gw.test>\r\n").await;
        assert!(step(&mut r, &mut w, b"DATA\r\n").await.starts_with("354"));
        // Nothing but the end of data: answered (an empty message has no From: 554).
        let a = step(&mut r, &mut w, b".\r\n").await;
        assert!(a.starts_with("554 5.6.0"), "{a}");
        // And the next command is a command, not the data of the next letter.
        let a = step(&mut r, &mut w, b"NOOP\r\n").await;
        assert!(a.starts_with("250 2.0.0"), "{a}");
    });
    assert!(g.backend.stored.lock().unwrap().is_empty());
}

#[test]
fn content_pipelined_before_354_is_refused_and_nothing_is_stored() {
    let g = start(10, Duration::from_secs(30));
    // One write: the message follows DATA without waiting for the 354.
    let out = g.rt.block_on(raw(
        g.addr,
        &[b"EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\nFrom: carol@legacy.test\r\n\r\nhi\r\n.\r\nQUIT\r\n"],
    ));
    assert!(
        out.contains("554 5.5.0 Error: SMTP protocol synchronization"),
        "{out}"
    );
    assert!(!out.contains("354"), "{out}");
    assert!(g.backend.stored.lock().unwrap().is_empty());
}

#[test]
fn unadvertised_parameters_absurd_sizes_and_nul_are_refused() {
    let g = start(10, Duration::from_secs(30));
    g.rt.block_on(async {
        let (mut r, mut w) = connect(g.addr).await;
        let a = step(&mut r, &mut w, b"EHLO bad\0host\r\n").await;
        assert!(a.starts_with("501 5.5.2"), "{a}");
        let a = step(&mut r, &mut w, b"EHLO mx.legacy.test\r\n").await;
        assert!(!a.contains("SMTPUTF8") && !a.contains("BINARYMIME"), "{a}");
        for (cmd, want) in [
            ("MAIL FROM:<carol@legacy.test> SMTPUTF8", "555 5.5.4"),
            ("MAIL FROM:<carol@legacy.test> BODY=BINARYMIME", "555 5.5.4"),
            (
                "MAIL FROM:<carol@legacy.test> SIZE=99999999999999999999999",
                "552 5.3.4",
            ),
            ("MAIL FROM:<carol@legacy.test> SIZE=1x", "501 5.5.4"),
        ] {
            let a = step(&mut r, &mut w, format!("{cmd}\r\n").as_bytes()).await;
            assert!(a.starts_with(want), "{cmd}: {a}");
        }
    });
    assert!(g.backend.stored.lock().unwrap().is_empty());
}

#[test]
fn the_421_comes_with_the_error_that_reaches_the_limit() {
    let g = start(10, Duration::from_secs(30));
    g.rt.block_on(async {
        let (mut r, mut w) = connect(g.addr).await;
        for i in 1..10 {
            let a = step(&mut r, &mut w, b"FOO\r\n").await;
            assert!(a.starts_with("500 "), "error {i}: {a}");
        }
        // The tenth error, an over-long line still being sent: its answer, then 421 and the
        // close, without waiting for another command.
        w.write_all(&[b'x'; 3000]).await.unwrap();
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_to_string(&mut rest))
            .await
            .expect("the server closes the connection")
            .unwrap();
        assert!(
            rest.starts_with("500 5.5.2 Line too long\r\n421 4.7.0"),
            "{rest}"
        );
    });
}

#[test]
fn mail_without_a_date_is_dated_on_arrival() {
    let g = start(10, Duration::from_secs(30));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = g.rt.block_on(raw(
        g.addr,
        &[
            b"EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n",
            b"From: carol@legacy.test\r\nSubject: undated\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        ],
    ));
    assert!(out.contains("250 2.0.0 OK"), "{out}");
    let stored = g.backend.stored.lock().unwrap();
    let letter = Letter::from_rfc5322(&stored[0].message).unwrap();
    assert!(letter.date >= before - 1, "date {} (not 1970)", letter.date);
}
