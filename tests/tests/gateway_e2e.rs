//! The gateway against the real legacy world: a private Postfix on loopback
//! (scripts/postfix-private.sh) relays `gw.test` to the node's SMTP gateway, swaks is the
//! legacy sender, Postfix's Maildir is the legacy recipient's mailbox and dkimpy (Debian's
//! python3-dkim) the receiver that checks the gateway's DKIM signatures. One test walks
//! through every case so Postfix starts once.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sealpost_testkit::dkim::dkimpy;
use sealpost_tests::{FAST_RELAY, Gpg, Node, Resolve, TempDir, User, pseudo_random_bytes};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A private Postfix, stopped on drop (also when the test fails).
struct Postfix {
    dir: TempDir,
    port: u16,
}

impl Postfix {
    fn start(port: u16, relay_domain: &str, relay_port: u16) -> Postfix {
        let dir = TempDir::new("postfix");
        let out = Command::new(repo().join("scripts/postfix-private.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(relay_domain)
            .arg(relay_port.to_string())
            .output()
            .expect("run postfix-private.sh (make deps installs postfix)");
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pf = Postfix { dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "postfix did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
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

fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
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
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Raw SMTP to the gateway: answers of the server, for what swaks cannot send. Like a
/// client that follows the dialogue, it sends what follows `DATA` only after the 354.
fn raw_smtp(port: u16, input: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let split = input
        .windows(6)
        .position(|w| w == b"DATA\r\n")
        .map_or(input.len(), |i| i + 6);
    let (head, data) = input.split_at(split);
    s.write_all(head).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut out = String::new();
    if !data.is_empty() {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return out;
            }
            out.push_str(&line);
            if ["354", "503", "554"].iter().any(|c| line.starts_with(c)) {
                break;
            }
        }
        s.write_all(data).unwrap();
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    out.push_str(&String::from_utf8_lossy(&rest));
    out
}

/// The DKIM records the node logged at start, as (name, TXT value).
fn dkim_records(log: &str) -> Vec<(String, String)> {
    let mut clean = String::new();
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI colour sequence: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    clean
        .lines()
        .filter(|l| l.contains("publish this DKIM record"))
        .filter_map(|l| {
            let name = l.split("name=").nth(1)?.split_whitespace().next()?;
            let txt = l.split("txt=").nth(1)?.trim();
            Some((name.to_string(), txt.to_string()))
        })
        .collect()
}

/// Waits for a message in the Maildir of Postfix's legacy.test that contains `needle`.
fn maildir_message(postfix: &Postfix, needle: &str) -> Vec<u8> {
    let dir = postfix.dir.path().join("mail/maildir/new");
    let end = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(needle) {
                return bytes;
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "nothing with {needle:?} in {}; maillog:\n{}",
            dir.display(),
            postfix.maillog()
        );
        // Postfix delivers asynchronously; look again in a moment.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn legacy_mail_through_postfix_and_the_gateway() {
    let gw_port = free_port();
    let pf_port = free_port();
    let mut args: Vec<String> = FAST_RELAY.iter().map(|s| s.to_string()).collect();
    for s in [
        "gateway.enabled=true".to_string(),
        // No DNS here: sender checks are gateway_auth_e2e's.
        "gateway.verify=false".to_string(),
        "gateway.domain=\"gw.test\"".to_string(),
        format!("gateway.listen=\"127.0.0.1:{gw_port}\""),
        "gateway.max_message_bytes=200000".to_string(),
        format!("gateway.smarthost=\"127.0.0.1:{pf_port}\""),
        "gateway.retry_base=0.5".to_string(),
        "gateway.retry_max=1".to_string(),
        "gateway.postmaster=\"dave@gw.test\"".to_string(),
    ] {
        args.push("--set".into());
        args.push(s);
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_with("gw", &arg_refs);
    let postfix = Postfix::start(pf_port, "gw.test", gw_port);

    let mut resolve = Resolve::default();
    resolve.add("gw.test", &node.url);
    let bob = User::init("bob@gw.test", &[&node], &resolve);
    let dave = User::init("dave@gw.test", &[&node], &resolve);

    // 1. Legacy → Sealpost: swaks → Postfix → gateway → bob's client.
    let dir = TempDir::new("att");
    let att = dir.path().join("minutes.pdf");
    let data = pseudo_random_bytes(60_000, 7);
    std::fs::write(&att, &data).unwrap();
    let (ok, log) = swaks(
        postfix.port,
        &[
            "--to",
            "bob@gw.test",
            "--header",
            "Subject: Minutes of the meeting",
            "--body",
            "Dear Bob, the minutes are attached.",
            "--attach",
            &format!("@{}", att.display()),
        ],
    );
    assert!(ok, "{log}");
    bob.fetch_until(Duration::from_secs(90), |seen| {
        seen.iter()
            .map(|f| f["new"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            >= 1
    });
    let list = bob.ok(&["list", "--json"], b"").json();
    let item = &list.as_array().unwrap()[0];
    assert_eq!(item["legacy"], true, "{item}");
    assert_eq!(
        item["verified"], false,
        "gateway mail is never shown as verified: {item}"
    );
    // The sealing identity is the gateway's, named by the gateway's domain (not the
    // node's URL host).
    let reason = item["trust"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sealed on arrival by the gateway gateway@gw.test")
            && !reason.contains("127.0.0.1"),
        "{reason}"
    );
    let id = item["id"].as_str().unwrap();
    let save = TempDir::new("saved");
    let read = bob
        .ok(
            &[
                "read",
                id,
                "--json",
                "--save-attachments",
                save.path().to_str().unwrap(),
            ],
            b"",
        )
        .json();
    assert_eq!(
        read["header"]["subject"], "Minutes of the meeting",
        "{read}"
    );
    assert!(
        read["body"]
            .as_str()
            .unwrap()
            .contains("Dear Bob, the minutes are attached."),
        "{read}"
    );
    let label = read["legacy_label"].as_str().unwrap();
    assert!(
        label.contains("NOT end-to-end") && label.contains("mail-from=<carol@legacy.test>"),
        "{label}"
    );
    assert_eq!(
        std::fs::read(save.path().join("minutes.pdf")).unwrap(),
        data
    );
    let human = bob.ok(&["read", id], b"").stdout;
    assert!(human.contains("NOT end-to-end encrypted"), "{human}");
    assert!(
        postfix.maillog().contains("relay=127.0.0.1"),
        "postfix relayed to the gateway"
    );

    // 1b. Legacy → Sealpost, encrypted end to end by the sender's mail program (PGP/MIME, gpg):
    //     the gateway passes the ciphertext on; bob's client decrypts and verifies it.
    let gpg = Gpg::new();
    let bob_key = bob.ok(&["export-key"], b"").stdout;
    assert!(gpg.run(&["--import"], bob_key.as_bytes()).ok());
    assert!(
        gpg.run(
            &[
                "--quick-gen-key",
                "Carol <carol@legacy.test>",
                "ed25519",
                "sign,cert",
                "never"
            ],
            b""
        )
        .ok()
    );
    let listing = gpg
        .run(&["--with-colons", "--list-keys", "carol@legacy.test"], b"")
        .stdout;
    let carol_fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    assert!(
        gpg.run(
            &["--quick-add-key", &carol_fpr, "cv25519", "encr", "never"],
            b""
        )
        .ok()
    );
    let carol_pub = gpg.run(&["--armor", "--export", &carol_fpr], b"").stdout;
    let carol_file = dir.path().join("carol.asc");
    std::fs::write(&carol_file, &carol_pub).unwrap();
    bob.ok(&["import-key", carol_file.to_str().unwrap()], b"");
    let entity = "Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOnly Bob can read this, not the gateway.\r\n--in\r\nContent-Type: text/plain; name=\"plan.txt\"\r\nContent-Disposition: attachment; filename=\"plan.txt\"\r\n\r\nthe secret plan\r\n--in--\r\n";
    let enc = gpg.run(
        &[
            "--armor",
            "--trust-model",
            "always",
            "-u",
            &carol_fpr,
            "-r",
            "bob@gw.test",
            "--sign",
            "--encrypt",
        ],
        entity.as_bytes(),
    );
    assert!(enc.ok(), "{}", enc.stderr);
    let pgp_mime = format!(
        "From: carol@legacy.test\r\nTo: bob@gw.test\r\nSubject: Sealed by my mail program\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n{}\r\n--b1--\r\n",
        enc.stdout.replace('\n', "\r\n").trim_end()
    );
    let eml = dir.path().join("pgpmime.eml");
    std::fs::write(&eml, &pgp_mime).unwrap();
    let (ok, log) = swaks(
        postfix.port,
        &[
            "--to",
            "bob@gw.test",
            "--data",
            &format!("@{}", eml.display()),
        ],
    );
    assert!(ok, "{log}");
    bob.fetch_until(Duration::from_secs(90), |seen| {
        seen.iter()
            .map(|f| f["new"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            >= 1
    });
    let list = bob.ok(&["list", "--json"], b"").json();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["header"]["subject"] == "Sealed by my mail program")
        .expect("PGP/MIME letter listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = bob.ok(&["read", &id, "--json"], b"").json();
    assert_eq!(
        read["body"].as_str().unwrap().trim_end(),
        "Only Bob can read this, not the gateway.",
        "{read}"
    );
    // `list` and `read` agree on what is attached: the file inside the encryption, not
    // the two PGP/MIME parts around it.
    let listed = bob
        .ok(&["list", "--json"], b"")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap()["header"]["attachments"]
        .clone();
    assert_eq!(listed, read["header"]["attachments"], "{read}");
    assert_eq!(listed[0]["name"], "plan.txt", "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let label = read["legacy_label"].as_str().unwrap();
    assert!(
        label.contains("PGP/MIME-encrypted to you by the sender, signed by")
            && label.contains("(verified)"),
        "{label}"
    );

    // 2. Refusals, straight at the gateway; nothing of them may reach dave.
    let (ok, log) = swaks(gw_port, &["--to", "eve@elsewhere.test"]);
    assert!(
        !ok && log.contains("550 5.7.1"),
        "open relay attempt: {log}"
    );
    let (ok, log) = swaks(gw_port, &["--to", "nobody@gw.test"]);
    assert!(!ok && log.contains("550 5.1.1"), "unknown user: {log}");
    let big = dir.path().join("big.txt");
    std::fs::write(&big, ("y".repeat(900) + "\n").repeat(300)).unwrap();
    let (ok, log) = swaks(
        gw_port,
        &[
            "--to",
            "dave@gw.test",
            "--body",
            &format!("@{}", big.display()),
        ],
    );
    assert!(!ok && log.contains("552 5.3.4"), "oversize: {log}");
    let head = "EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<dave@gw.test>\r\nDATA\r\n";
    let answer = raw_smtp(
        gw_port,
        format!(
            "{head}From: carol@legacy.test\r\n\r\nhi\n.\nMAIL FROM:<x@gw.test>\r\n.\r\nQUIT\r\n"
        )
        .as_bytes(),
    );
    assert!(
        answer.contains("550 5.5.2 Message refused: bare <LF>"),
        "<LF>.<LF> smuggling: {answer}"
    );
    let answer = raw_smtp(
        gw_port,
        format!(
            "{head}From: carol@legacy.test\r\n\r\n{}\r\n.\r\nQUIT\r\n",
            "z".repeat(1200)
        )
        .as_bytes(),
    );
    assert!(
        answer.contains("550 5.5.2 Message refused: line longer than 998"),
        "overlong line: {answer}"
    );
    let answer = raw_smtp(
        gw_port,
        format!("EHLO {}\r\nQUIT\r\n", "h".repeat(3000)).as_bytes(),
    );
    assert!(
        answer.contains("500 5.5.2 Line too long"),
        "overlong command: {answer}"
    );
    let fetched = dave.ok(&["fetch", "--json"], b"").json();
    assert_eq!(
        fetched["new"].as_array().map(Vec::len),
        Some(0),
        "a refused message was stored: {fetched}"
    );
    assert_eq!(
        dave.ok(&["list", "--json"], b"")
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // 3. Sealpost → legacy: bob → gateway → Postfix (smarthost) → carol's Maildir. The body
    //    holds a lone CR that a receiver could take for a line end (`\r.\r`), NUL and a
    //    long line; what Postfix stored has none of them raw, and dkimpy verifies both DKIM
    //    signatures (RSA and Ed25519) against the records the node logged. carol is named
    //    with `--legacy`: a first letter to a legacy address needs consent (client.md §4.1).
    let body = format!(
        "Dear Carol,\r.\rMAIL FROM:<admin@gw.test>\r\nnul \0 byte\n{}\nGrüße\n",
        "w".repeat(1500)
    );
    let sent = bob.run(
        &[
            "send",
            "--to",
            "carol@legacy.test",
            "--legacy",
            "carol@legacy.test",
            "--subject",
            "Signed for the old world",
        ],
        body.as_bytes(),
    );
    assert!(sent.ok(), "{sent:?}");
    let delivered = maildir_message(&postfix, "Signed for the old world");
    assert!(!delivered.contains(&0), "NUL on the wire");
    assert!(
        !delivered.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
        "bare CR on the wire: {}",
        String::from_utf8_lossy(&delivered)
    );
    // Maildir lines end in LF; a reader puts the CRLF of the wire back before verifying.
    let mut wire = Vec::new();
    for &b in &delivered {
        if b == b'\n' {
            wire.push(b'\r');
        }
        wire.push(b);
    }
    let records = dkim_records(&node.log());
    assert_eq!(records.len(), 2, "{records:?}");
    let text = String::from_utf8_lossy(&wire).into_owned();
    assert!(
        text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"),
        "{text}"
    );
    assert_eq!(dkimpy(&wire, &records), [true, true], "{text}");
    // NUL travels quoted-printable, as `=00`. (The lone CRs do not reach the gateway from
    // the CLI: the letter's own MIME encoding already drops them; the gateway's guarantee
    // for a letter that does carry them is `smtp_out`'s unit tests.)
    assert!(text.contains("nul =00 byte"), "{text}");
    assert!(text.contains("Dear Carol,"), "{text}");

    // 4. Postmaster (RFC 5321 §4.5.1): through Postfix as postmaster@gw.test, and straight
    //    to the gateway as a bare `Postmaster`; both reach gateway.postmaster (dave).
    let (ok, log) = swaks(
        postfix.port,
        &[
            "--to",
            "postmaster@gw.test",
            "--header",
            "Subject: To the postmaster via Postfix",
        ],
    );
    assert!(ok, "{log}");
    let answer = raw_smtp(
        gw_port,
        b"EHLO x\r\nMAIL FROM:<carol@legacy.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nFrom: carol@legacy.test\r\nSubject: To the bare postmaster\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(answer.contains("250 2.0.0 OK"), "{answer}");
    let fetches = dave.fetch_until(Duration::from_secs(90), |seen| {
        seen.iter()
            .map(|f| f["new"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            >= 2
    });
    let subjects: Vec<String> = fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .map(|m| m["header"]["subject"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        subjects.contains(&"To the postmaster via Postfix".to_string())
            && subjects.contains(&"To the bare postmaster".to_string()),
        "{subjects:?}"
    );
}
