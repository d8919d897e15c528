//! The `sealpost` CLI sending to legacy e-mail addresses through a node's SMTP gateway: real
//! nodes (`gw.test` runs the gateway, `beta.test` does not), and a minimal SMTP server in
//! the test as the gateway's smarthost, which records what it is given.
//!
//! `legacy.test` is named with `--legacy` (a first letter to a legacy address needs it, or a
//! yes at a terminal; routing by DNS is tested in client_trust_e2e.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sealpost_tests::{FAST_RELAY, Node, Resolve, User};
use serde_json::Value;

/// How long a letter may take through relay, the gateway and SMTP.
const ARRIVAL: Duration = Duration::from_secs(90);

/// One message the smarthost was given.
#[derive(Clone, Debug)]
struct Mail {
    from: String,
    rcpt: Vec<String>,
    data: String,
}

/// A minimal SMTP server that takes every message (the gateway's smarthost).
struct Sink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = mails.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || serve_smtp(conn, &store));
            }
        });
        Sink { port, mails }
    }

    /// Waits for a message that `pick` accepts.
    fn wait_for(&self, what: &str, pick: impl Fn(&Mail) -> bool) -> Mail {
        let end = Instant::now() + ARRIVAL;
        loop {
            if let Some(m) = self.mails.lock().unwrap().iter().find(|m| pick(m)) {
                return m.clone();
            }
            assert!(
                Instant::now() < end,
                "smarthost got no {what}; it has: {:#?}",
                self.mails.lock().unwrap()
            );
            // The gateway works asynchronously; look again in a moment without spinning.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The path of `<path> PARAMS`.
fn angle(s: &str) -> String {
    let s = s.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].to_ascii_lowercase(),
        _ => s.to_ascii_lowercase(),
    }
}

fn serve_smtp(conn: TcpStream, store: &Mutex<Vec<Mail>>) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    let (mut from, mut rcpt) = (String::new(), Vec::new());
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = angle(&cmd[10..]);
            rcpt.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            rcpt.push(angle(&cmd[8..]));
            b"250 ok\r\n"
        } else if upper == "DATA" {
            let _ = w.write_all(b"354 end with .\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            store.lock().unwrap().push(Mail {
                from: from.clone(),
                rcpt: std::mem::take(&mut rcpt),
                data,
            });
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            return;
        }
    }
}

struct World {
    gw: Node,
    beta: Node,
    /// The gateway's SMTP address, `IP:PORT`.
    smtp: String,
    sink: Sink,
    resolve: Resolve,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let sink = Sink::start();
        let smarthost = format!("gateway.smarthost=\"127.0.0.1:{}\"", sink.port);
        let mut args: Vec<&str> = FAST_RELAY.to_vec();
        for s in [
            "gateway.enabled=true",
            // Sender checks are gateway_auth_e2e's; here no DNS is asked.
            "gateway.verify=false",
            "gateway.domain=\"gw.test\"",
            "gateway.listen=\"127.0.0.1:0\"",
            &smarthost,
        ] {
            args.extend(["--set", s]);
        }
        let gw = Node::start_with("gw", &args);
        let smtp = gw.stdout_line("sealpost-node gateway listening on smtp://");
        let beta = Node::start("beta");
        let mut resolve = Resolve::default();
        resolve.add("gw.test", &gw.url);
        resolve.add("beta.test", &beta.url);
        World {
            gw,
            beta,
            smtp,
            sink,
            resolve,
        }
    })
}

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Legacy mail into the gateway, as a legacy MTA would send it: commands pipelined up to
/// DATA, the message after the 354.
fn smtp_in(addr: &str, from: &str, to: &str, message: &str) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ARRIVAL)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let head = format!("EHLO mx.legacy.test\r\nMAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
    w.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("gateway closed before 354: {out}");
        }
        out.push_str(&line);
        if line.starts_with("354") {
            break;
        }
        assert!(!line.starts_with(['4', '5']), "gateway refused: {out}");
    }
    w.write_all(format!("{message}\r\n.\r\nQUIT\r\n").as_bytes())
        .unwrap();
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    // The answer after the message says whether it was taken.
    assert!(rest.starts_with("250"), "gateway refused: {out}{rest}");
}

#[test]
fn one_letter_to_sealpost_and_legacy_recipients_reaches_each_the_right_way() {
    let w = world();
    let alice = User::init("alice@gw.test", &[&w.gw], &w.resolve);
    let bob = User::init("bob@beta.test", &[&w.beta], &w.resolve);

    // carol and dave are named legacy explicitly. Alice set no gateway: gateway@gw.test, on
    // her home, is the default.
    let sent = alice.run(
        &[
            "send",
            "--to",
            "bob@beta.test",
            "--to",
            "carol@legacy.test",
            "--cc",
            "dave@legacy.test",
            "--legacy",
            "carol@legacy.test",
            "--legacy",
            "dave@legacy.test",
            "--subject",
            "Mixed company",
        ],
        b"Hello Bob, Carol and Dave.\n",
    );
    assert!(sent.ok(), "{sent:?}");
    let warning = sent
        .stderr
        .lines()
        .find(|l| l.contains("NOT end-to-end"))
        .unwrap_or_else(|| panic!("no warning: {sent:?}"));
    assert!(
        warning.starts_with("sealpost: warning: ")
            && warning.contains("carol@legacy.test (--legacy)")
            && warning.contains("dave@legacy.test (--legacy)")
            && warning.contains("gateway@gw.test"),
        "{warning}"
    );
    assert!(sent.stdout.contains("sent to bob@beta.test"), "{sent:?}");
    assert!(
        sent.stdout
            .contains("sent to carol@legacy.test as legacy e-mail through gateway@gw.test"),
        "{sent:?}"
    );

    // The gateway sends SMTP to the legacy recipients only, DKIM-signed.
    let mail = w.sink.wait_for("letter from alice", |m| {
        m.data.contains("Subject: Mixed company")
    });
    let mut rcpt = mail.rcpt.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["carol@legacy.test", "dave@legacy.test"], "{mail:#?}");
    assert!(mail.from.ends_with("@gw.test"), "{mail:#?}");
    assert!(
        mail.data.contains("Hello Bob, Carol and Dave."),
        "{mail:#?}"
    );
    assert!(mail.data.contains("DKIM-Signature:"), "{mail:#?}");
    assert!(
        mail.data.contains("a=rsa-sha256") && mail.data.contains("a=ed25519-sha256"),
        "{mail:#?}"
    );

    // Bob gets his own end-to-end copy, verified.
    let fetches = bob.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let new = new_letters(&fetches);
    assert_eq!(new.len(), 1, "{fetches:#?}");
    assert_eq!(new[0]["verified"], true, "{:#}", new[0]);
    assert_eq!(new[0]["header"]["subject"], "Mixed company");
    assert_eq!(new[0]["legacy"], false);
    assert_eq!(
        w.sink
            .mails
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.data.contains("Subject: Mixed company"))
            .count(),
        1,
        "sent once"
    );

    let show = alice.ok(&["gateway", "show", "--json"], b"").json();
    assert_eq!(show["address"], "gateway@gw.test");
    assert_eq!(show["set"], false);
    assert_eq!(show["usable"], true);
}

#[test]
fn a_reply_to_legacy_mail_goes_back_through_the_gateway() {
    let w = world();
    let frank = User::init("frank@gw.test", &[&w.gw], &w.resolve);
    frank.ok(&["gateway", "set", "gateway@gw.test"], b"");
    smtp_in(
        &w.smtp,
        "grace@legacy.test",
        "frank@gw.test",
        "From: grace@legacy.test\r\nTo: frank@gw.test\r\nSubject: From the old world\r\nMessage-ID: <old-1@legacy.test>\r\n\r\nHi Frank.",
    );
    let fetches = frank.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let letter = &new_letters(&fetches)[0];
    assert_eq!(letter["legacy"], true, "{letter:#}");
    // Grace's program wrote no Date: the gateway dated it on arrival (not 1970).
    assert!(
        letter["header"]["date"].as_i64().unwrap() > 1_700_000_000,
        "{letter:#}"
    );
    let id = letter["id"].as_str().unwrap().to_string();

    let out = frank.ok(&["reply", &id[..8]], b"Hello Grace.\n");
    assert!(out.stderr.contains("NOT end-to-end"), "{out:?}");
    let mail = w.sink.wait_for("reply to grace", |m| {
        m.rcpt == ["grace@legacy.test"] && m.data.contains("Re: From the old world")
    });
    assert!(mail.data.contains("Hello Grace."), "{mail:#?}");
    assert!(
        mail.data.contains("In-Reply-To: <old-1@legacy.test>"),
        "{mail:#?}"
    );
}

#[test]
fn without_a_usable_gateway_nothing_is_sent_to_anyone() {
    let w = world();
    // beta.test publishes no gateway@beta.test, and gw.test's gateway serves only users
    // of its own node.
    let erin = User::init("erin@beta.test", &[&w.beta], &w.resolve);
    User::init("henry@beta.test", &[&w.beta], &w.resolve);
    let before = erin.snapshot();
    let out = erin.run(
        &[
            "send",
            "--to",
            "henry@beta.test",
            "--to",
            "carol@legacy.test",
            "--legacy",
            "carol@legacy.test",
        ],
        b"hi\n",
    );
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.error_line();
    assert!(
        line.contains("carol@legacy.test") && line.contains("sealpost gateway set"),
        "{line}"
    );
    assert_eq!(erin.snapshot(), before, "nothing queued, nothing pinned");

    let out = erin.run(&["gateway", "set", "gateway@gw.test"], b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.error_line().contains("not one of your home nodes"),
        "{out:?}"
    );
    let show = erin.ok(&["gateway", "show"], b"");
    assert!(show.stdout.starts_with("none: "), "{show:?}");
    assert_eq!(erin.snapshot(), before);
}
