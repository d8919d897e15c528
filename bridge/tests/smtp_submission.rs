//! SMTP submission with swaks (a real SMTP client): AUTH required, every RCPT TO reaches
//! the sender, Bcc stays blind, a copy lands in Sent, refusals carry the sender's reason.

mod support;

use std::process::Command;
use std::sync::Arc;

use support::{Bridge, FakeSender, PASSWORD, USER, run};

fn swaks(port: u16, password: &str, to: &str, extra: &[&str]) -> (bool, String) {
    let server = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &server,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        password,
    ])
    .args(["--from", USER, "--to", to, "--timeout", "20"])
    .args(extra);
    run(&mut cmd)
}

#[test]
fn swaks_submits_with_bcc_kept_blind_and_a_copy_in_sent() {
    let sender = Arc::new(FakeSender::default());
    let bridge = Bridge::start_with_sender(sender.clone());
    let (ok, out) = swaks(
        bridge.smtp_port,
        PASSWORD,
        "alice@alpha.test,hidden@gamma.test",
        &[
            "--header",
            "Subject: via swaks",
            "--header",
            "Bcc: hidden@gamma.test",
            "--body",
            "Hello from a mail app",
        ],
    );
    assert!(ok, "swaks failed:\n{out}");
    let sent = sender.sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].rcpt_to,
        vec![
            "alice@alpha.test".to_string(),
            "hidden@gamma.test".to_string()
        ]
    );
    let text = String::from_utf8_lossy(&sent[0].message);
    assert!(
        text.contains("Subject: via swaks") && text.contains("Hello from a mail app"),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("bcc:"),
        "Bcc leaked to recipients:\n{text}"
    );
    drop(sent);
    let copy = bridge.shared.with_store(|s| {
        let mb = s.mailbox("Sent").unwrap();
        assert_eq!(mb.messages.len(), 1);
        assert!(mb.messages[0].has("\\Seen"));
        s.read("Sent", mb.messages[0].uid).unwrap()
    });
    let copy = String::from_utf8_lossy(&copy);
    assert!(
        copy.contains("Subject: via swaks") && copy.contains("Bcc: hidden@gamma.test"),
        "{copy}"
    );
}

#[test]
fn wrong_password_and_refusals() {
    let sender = Arc::new(FakeSender::default());
    let bridge = Bridge::start_with_sender(sender.clone());
    let started = std::time::Instant::now();
    let (ok, out) = swaks(bridge.smtp_port, "wrong", "alice@alpha.test", &[]);
    assert!(!ok && out.contains("535"), "{out}");
    assert!(
        started.elapsed() >= sealpost_bridge::auth::FAILURE_DELAY,
        "no delay after a wrong password"
    );
    // No gateway for a legacy address: a permanent, explained refusal.
    let (ok, out) = swaks(bridge.smtp_port, PASSWORD, "x@nogateway.test", &[]);
    assert!(
        !ok && out.contains("554") && out.contains("no gateway"),
        "{out}"
    );
    // Nodes down: a temporary failure the app retries.
    let (ok, out) = swaks(bridge.smtp_port, PASSWORD, "x@later.test", &[]);
    assert!(!ok && out.contains("451"), "{out}");
    // Another sender address than the profile's.
    let server = format!("127.0.0.1:{}", bridge.smtp_port);
    let (ok, out) = run(Command::new("swaks").args([
        "--server",
        &server,
        "--auth",
        "LOGIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--from",
        "mallory@evil.test",
        "--to",
        "alice@alpha.test",
        "--timeout",
        "20",
    ]));
    assert!(!ok && out.contains("554"), "{out}");
    assert!(sender.sent.lock().unwrap().is_empty());
    assert!(
        bridge
            .shared
            .with_store(|s| s.mailbox("Sent").unwrap().messages.is_empty())
    );
}
