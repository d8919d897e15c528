//! Direct delivery of legacy mail by MX, against real parts: a private dnsmasq serves the
//! test zones (`gateway.dns` names it), a private Postfix listens on 127.0.0.2:25 as the
//! MX of legacy.test (and as the A-record host of plain.test, which has no MX), offers
//! STARTTLS, refuses one recipient for good (550) and defers another (450). The node has
//! no smarthost. One test walks through every case so Postfix starts once:
//! - MX by preference: the best MX (127.0.0.9) takes no connection, the next one takes it;
//! - STARTTLS used when offered (Postfix's Received header says TLS);
//! - a domain without MX gets its mail at its A record; a letter to two domains leaves in
//!   one transaction per domain;
//! - 5xx: exactly one bounce letter, naming the recipient and Postfix's reply;
//! - 4xx: retried across a node restart once Postfix takes it, delivered once;
//! - MTA-STS "enforce" (policies over HTTPS on 127.0.0.4:443, the test CA trusted through
//!   `gateway.tls_ca`): delivered over verified TLS where the MX's certificate fits, held
//!   back where it does not.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sealpost_tests::dns::{Dns, Record};
use sealpost_tests::{FAST_RELAY, Node, Resolve, TempDir, User};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The MX of legacy.test: a private Postfix on 127.0.0.2:25, stopped on drop.
struct Postfix {
    dir: TempDir,
}

const MX_ADDR: &str = "127.0.0.2";

impl Postfix {
    fn start(extra: &str) -> Postfix {
        let dir = TempDir::new("postfix-mx");
        let out = Command::new(repo().join("scripts/postfix-private.sh"))
            .arg("start")
            .arg(dir.path())
            .arg("25")
            .env("PF_LISTEN", MX_ADDR)
            .env("PF_MAIN_EXTRA", extra)
            .output()
            .expect("run postfix-private.sh (make deps installs postfix)");
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pf = Postfix { dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((MX_ADDR, 25)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "postfix did not listen on {MX_ADDR}:25"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// `postconf -e SETTING` and `postfix reload`.
    fn set(&self, setting: &str) {
        let conf = self.dir.path().join("conf");
        let out = Command::new("postconf")
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(setting)
            .output()
            .expect("postconf");
        assert!(out.status.success(), "postconf: {out:?}");
        let out = Command::new("script")
            .arg("-qc")
            .arg(format!("postfix -c '{}' reload", conf.display()))
            .arg("/dev/null")
            .output()
            .expect("postfix reload");
        assert!(out.status.success(), "postfix reload: {out:?}");
    }

    /// The messages in the Maildir that contain `needle`.
    fn messages(&self, needle: &str) -> Vec<String> {
        let dir = self.dir.path().join("mail/maildir/new");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned()
            })
            .filter(|m| m.contains(needle))
            .collect()
    }

    /// Waits for a message containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let end = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(m) = self.messages(needle).into_iter().next() {
                return m;
            }
            assert!(
                std::time::Instant::now() < end,
                "nothing with {needle:?} in the Maildir; maillog:\n{}",
                self.maillog()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/postfix-private.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn send(bob: &User, to: &str, subject: &str) {
    bob.ok(
        &["send", "--to", to, "--legacy", to, "--subject", subject],
        format!("This is {subject}.\n").as_bytes(),
    );
}

#[test]
fn legacy_mail_goes_to_the_mx_with_starttls_and_failures_bounce_or_retry() {
    let pki = TempDir::new("mx-pki");
    let (ca, _, _) = sealpost_testkit::pki::certificates(pki.path());
    // Valid for the MX of secure.test and the policy hosts; not for mx.badtls.test.
    let (cert, key) = sealpost_testkit::pki::leaf_for_names(
        pki.path(),
        "mx",
        &[
            "mx.secure.test",
            "mx.legacy.test",
            "mta-sts.secure.test",
            "mta-sts.badtls.test",
        ],
    );
    let _policies = PolicyServer::start(&cert, &key);
    let postfix = Postfix::start(&format!(
        "virtual_mailbox_domains = legacy.test, plain.test, secure.test, badtls.test\n\
         smtpd_tls_security_level = may\n\
         smtpd_tls_cert_file = {}\n\
         smtpd_tls_key_file = {}\n\
         smtpd_tls_received_header = yes\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ \
         {{nobody@legacy.test = 550 5.1.1 nobody is not a user here}}, \
         {{later@legacy.test = 450 4.2.0 later is busy, try again}} }}, \
         permit_mynetworks, reject_unauth_destination",
        cert.display(),
        key.display()
    ));
    let dns = Dns::start(&[
        // The best MX takes no connection: the next one by preference gets the mail.
        Record::mx("legacy.test", "down.legacy.test", 5),
        Record::a("down.legacy.test", "127.0.0.9"),
        Record::mx("legacy.test", "mx.legacy.test", 10),
        Record::a("mx.legacy.test", MX_ADDR),
        // No MX: the domain's own address.
        Record::a("plain.test", MX_ADDR),
        // MTA-STS "enforce": secure.test's MX has a valid certificate, badtls.test's not.
        Record::mx("secure.test", "mx.secure.test", 10),
        Record::a("mx.secure.test", MX_ADDR),
        Record::txt("_mta-sts.secure.test", "v=STSv1; id=20261130"),
        Record::a("mta-sts.secure.test", POLICY_ADDR),
        Record::mx("badtls.test", "mx.badtls.test", 10),
        Record::a("mx.badtls.test", MX_ADDR),
        Record::txt("_mta-sts.badtls.test", "v=STSv1; id=20261130"),
        Record::a("mta-sts.badtls.test", POLICY_ADDR),
    ]);
    let tls_ca = format!("gateway.tls_ca=\"{}\"", ca.display());
    let dns_setting = format!("gateway.dns=\"{}\"", dns.server_arg());
    let mut args: Vec<&str> = FAST_RELAY.to_vec();
    for s in [
        "gateway.enabled=true",
        "gateway.domain=\"gw.test\"",
        "gateway.listen=\"127.0.0.1:0\"",
        &dns_setting,
        &tls_ca,
        "gateway.retry_base=0.5",
        "gateway.retry_max=1",
    ] {
        args.extend(["--set", s]);
    }
    let mut node = Node::start_with("mx", &args);
    let mut resolve = Resolve::default();
    resolve.add("gw.test", &node.url);
    let mut bob = User::new("bob@gw.test", &resolve);
    bob.env
        .push(("SEALPOST_DNS_SERVER".into(), dns.server_arg()));
    let out = bob.run(&["init", "bob@gw.test", "--node", &node.url], b"");
    assert!(out.ok(), "{out:?}");

    // 1. By MX, over STARTTLS, into Postfix's Maildir.
    send(&bob, "carol@legacy.test", "By MX with TLS");
    let m = postfix.wait_for("Subject: By MX with TLS");
    assert!(m.contains("for <carol@legacy.test>"), "{m}");
    assert!(
        m.contains("(using TLS"),
        "Postfix's Received header names TLS: {m}"
    );
    assert!(m.contains("DKIM-Signature:"), "{m}");

    // 2. A domain without MX: its A record. One letter to two domains: one transaction
    //    (one job) per domain.
    bob.ok(
        &[
            "send",
            "--to",
            "erin@plain.test",
            "--to",
            "frank@legacy.test",
            "--legacy",
            "erin@plain.test",
            "--legacy",
            "frank@legacy.test",
            "--subject",
            "To an A record and an MX",
        ],
        b"Two domains.\n",
    );
    postfix.wait_for("Subject: To an A record and an MX");
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while postfix.messages("Subject: To an A record and an MX").len() < 2 {
        assert!(std::time::Instant::now() < end, "{}", postfix.maillog());
        std::thread::sleep(Duration::from_millis(100));
    }
    let both = postfix.messages("Subject: To an A record and an MX");
    assert_eq!(both.len(), 2, "one copy per domain");
    assert!(
        both.iter().any(|m| m.contains("for <erin@plain.test>")),
        "{both:?}"
    );
    assert!(
        both.iter().any(|m| m.contains("for <frank@legacy.test>")),
        "{both:?}"
    );

    // 3. 5xx: one bounce naming the recipient and the remote reply.
    send(&bob, "nobody@legacy.test", "To nobody");
    let fetches = bob.fetch_until(Duration::from_secs(60), |f| !new_letters(f).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let mut letters = new_letters(&fetches);
    letters.extend(new_letters(&[bob.ok(&["fetch", "--json"], b"").json()]));
    assert_eq!(letters.len(), 1, "exactly one bounce: {letters:#?}");
    let bounce = &letters[0];
    let subject = bounce["header"]["subject"].as_str().unwrap_or_default();
    assert!(subject.starts_with("Undeliverable: "), "{bounce:#}");
    let text = bob
        .ok(&["read", bounce["id"].as_str().expect("id")], b"")
        .stdout;
    assert!(text.contains("Recipient: nobody@legacy.test"), "{text}");
    let reply = text
        .lines()
        .find(|l| l.starts_with("Remote reply: "))
        .unwrap_or_default();
    assert!(
        reply.contains("550 5.1.1") && reply.contains("nobody is not a user here"),
        "the remote reply: {text}"
    );

    // 4. 4xx: deferred, the node restarts, Postfix takes it now: delivered once.
    send(&bob, "later@legacy.test", "Deferred then delivered");
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !postfix.maillog().contains("later is busy, try again") {
        assert!(
            std::time::Instant::now() < end,
            "no deferral: {}",
            postfix.maillog()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.stop();
    postfix.set(
        "smtpd_recipient_restrictions = check_recipient_access inline:{ \
         {nobody@legacy.test = 550 5.1.1 nobody is not a user here} }, \
         permit_mynetworks, reject_unauth_destination",
    );
    node.restart();
    let m = postfix.wait_for("Subject: Deferred then delivered");
    assert!(m.contains("for <later@legacy.test>"), "{m}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        postfix.messages("Subject: Deferred then delivered").len(),
        1,
        "delivered once"
    );
    assert_eq!(postfix.messages("Subject: By MX with TLS").len(), 1);
    let more = new_letters(&[bob.ok(&["fetch", "--json"], b"").json()]);
    assert!(more.is_empty(), "no further bounce: {more:#?}");

    // 5. MTA-STS "enforce": delivered over TLS to the MX whose certificate is valid for its
    //    name; never to one whose certificate is not (it stays queued, nothing in clear).
    send(&bob, "sam@secure.test", "Under an enforced policy");
    let m = postfix.wait_for("Subject: Under an enforced policy");
    assert!(
        m.contains("for <sam@secure.test>") && m.contains("(using TLS"),
        "{m}"
    );
    send(&bob, "bea@badtls.test", "Refused by the policy");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        postfix
            .messages("Subject: Refused by the policy")
            .is_empty(),
        "sent to an MX with a certificate not valid for its name: {}",
        node.log()
            .lines()
            .filter(|l| l.contains("MTA-STS") || l.contains("STARTTLS") || l.contains("badtls"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let more = new_letters(&[bob.ok(&["fetch", "--json"], b"").json()]);
    assert!(more.is_empty(), "deferred, not bounced: {more:#?}");
}

/// Where the MTA-STS policies are served (HTTPS, port 443).
const POLICY_ADDR: &str = "127.0.0.4";

/// An HTTPS server on 127.0.0.4:443 (Python's http.server with the test CA's
/// certificate) serving the `enforce` policies of secure.test and badtls.test.
struct PolicyServer {
    child: Option<std::process::Child>,
}

impl PolicyServer {
    fn start(cert: &std::path::Path, key: &std::path::Path) -> PolicyServer {
        let script = r#"
import http.server, ssl, sys
cert, key, addr = sys.argv[1], sys.argv[2], sys.argv[3]
policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.{d}\r\nmax_age: 86400\r\n"
policies = {"mta-sts." + d: policy.format(d=d) for d in ["secure.test", "badtls.test"]}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        body = policies.get(host)
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_response(404)
            self.end_headers()
            return
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
srv = http.server.HTTPServer((addr, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(script)
            .arg(cert)
            .arg(key)
            .arg(POLICY_ADDR)
            .stdin(std::process::Stdio::null());
        let child = sealpost_testkit::hygiene::spawn_tied(cmd).expect("python3");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((POLICY_ADDR, 443)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the policy server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PolicyServer { child: Some(child) }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sealpost_testkit::hygiene::kill_and_reap(&mut c);
        }
    }
}
