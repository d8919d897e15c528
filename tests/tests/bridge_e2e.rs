//! The bridge (issue 18) between real nodes and real mail clients: swaks submits through
//! the bridge and the recipient reads the letter, verified; a letter sent with the CLI
//! reaches the bridge's INBOX with its verdict, and curl's imap:// fetches it; the
//! submitted message is in the bridge's Sent.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealpost_tests::{Node, Resolve, User, bin_dir};
use serde_json::Value;

const ARRIVAL: Duration = Duration::from_secs(90);

/// A `sealpost-bridge run` process for one profile, killed on drop.
struct BridgeProcess {
    child: Child,
    imap: String,
    smtp: String,
}

impl BridgeProcess {
    fn start(user: &User) -> BridgeProcess {
        let bin = bin_dir().join("sealpost-bridge");
        assert!(
            bin.exists(),
            "{} missing: cargo build --workspace --bins",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--profile").arg(user.profile());
        for (d, u) in &user.resolve.0 {
            cmd.arg("--resolve").arg(format!("{d}={u}"));
        }
        cmd.args(["--imap", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("sealpost-bridge starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the bridge reports its ports");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        BridgeProcess {
            imap: field("imap="),
            smtp: field("smtp="),
            child,
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn password(user: &User) -> String {
    let out = Command::new(bin_dir().join("sealpost-bridge"))
        .arg("--profile")
        .arg(user.profile())
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Password:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("info shows the password")
        .to_string()
}

fn items<'a>(fetches: &'a [Value], key: &str) -> Vec<&'a Value> {
    fetches
        .iter()
        .flat_map(|f| f[key].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn swaks_through_the_bridge_reaches_the_recipient_verified_and_mail_comes_back_over_imap() {
    let (a, b) = (Node::start("bridge-a"), Node::start("bridge-b"));
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    let alice = User::init("alice@alpha.test", &[&a], &resolve);
    let bob = User::init("bob@beta.test", &[&b], &resolve);
    let pass = password(&bob);
    let bridge = BridgeProcess::start(&bob);

    // Bob's mail app submits a letter to alice.
    let out = Command::new("swaks")
        .args([
            "--server",
            &bridge.smtp,
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob@beta.test",
            "--auth-password",
            &pass,
        ])
        .args([
            "--from",
            "bob@beta.test",
            "--to",
            "alice@alpha.test",
            "--timeout",
            "60",
        ])
        .args([
            "--header",
            "Subject: From my mail app",
            "--body",
            "Written in a mail app, sent through the bridge.",
        ])
        .output()
        .unwrap();
    let swaks_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "swaks failed:\n{swaks_out}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Alice reads it with the CLI: from bob, signature verified.
    let fetches = alice.fetch_until(ARRIVAL, |f| !items(f, "new").is_empty());
    let new = items(&fetches, "new");
    assert_eq!(new.len(), 1, "{fetches:#?}");
    assert_eq!(new[0]["verified"], true, "{fetches:#?}");
    assert_eq!(new[0]["header"]["subject"], "From my mail app");
    let id = new[0]["id"].as_str().unwrap().to_string();
    let read = alice.ok(&["read", &id, "--json"], b"").json();
    assert!(
        read["body"]
            .as_str()
            .unwrap()
            .contains("sent through the bridge"),
        "{read:#}"
    );
    assert_eq!(read["header"]["from"], "bob@beta.test");

    // Alice answers with the CLI; bob's bridge has it in INBOX, verified, within ARRIVAL.
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "Got it"],
        b"Thanks, it arrived.\n",
    );
    let user = format!("bob@beta.test:{pass}");
    let deadline = Instant::now() + ARRIVAL;
    let letter = loop {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-u",
                &user,
                &format!("imap://{}/INBOX;UID=1", bridge.imap),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("Subject: Got it") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the reply never reached the bridge's INBOX"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        letter.starts_with("Authentication-Results: sealpost.bridge; sealpost=pass"),
        "{letter}"
    );
    assert!(letter.contains("Thanks, it arrived."), "{letter}");

    // The submitted message is in Sent, once (the client's own sent copy is not added again).
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-u",
            &user,
            "-X",
            "EXAMINE Sent",
            &format!("imap://{}/", bridge.imap),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("* 1 EXISTS"), "{text}");
}
