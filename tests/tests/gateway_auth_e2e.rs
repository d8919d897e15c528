//! Inbound sender checks against real parts: a private dnsmasq (tests/src/dns.rs) serves
//! the legacy domains' SPF, DKIM and DMARC records; dkimpy (Debian's python3-dkim) signs
//! as the legacy sender's server would; swaks sends from 127.0.0.1 (allowed by SPF) or
//! 127.0.0.3 (not allowed) to the node's gateway, which asks that dnsmasq
//! (`gateway.dns`). One test walks through the cases so the node starts once.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use sealpost_tests::dns::{Dns, Record};
use sealpost_tests::{FAST_RELAY, Node, Resolve, TempDir, User};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh RSA key (PEM file in `dir`) and its DKIM key record.
fn rsa_key(dir: &Path) -> (std::path::PathBuf, String) {
    let pem = dir.join("dkim.pem");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&pem)
        .arg("2048"));
    let der = run(Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem));
    let b64 = run(Command::new("base64").arg("-w0").stdin({
        let f = dir.join("pub.der");
        std::fs::write(&f, &der).unwrap();
        std::fs::File::open(f).unwrap()
    }));
    (
        pem,
        format!("v=DKIM1; k=rsa; p={}", String::from_utf8(b64).unwrap()),
    )
}

/// `message` signed by dkimpy for `domain`, selector `s1`.
fn dkimpy_sign(message: &[u8], key: &Path, domain: &str) -> Vec<u8> {
    sealpost_testkit::dkim::dkimpy_sign(message, key, domain, "s1")
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: bob@gw.test\r\nSubject: {subject}\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// swaks from `source` (a loopback address) with `data` as the message; (accepted, log).
fn swaks(port: u16, source: &str, mail_from: &str, data: &[u8], dir: &Path) -> (bool, String) {
    let file = dir.join("data.eml");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--local-interface", source])
        .args([
            "--helo",
            "mx.legacy.test",
            "--from",
            mail_from,
            "--to",
            "bob@gw.test",
        ])
        .arg("--data")
        .arg(&file)
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

/// Fetches and returns bob's letter with `subject`: (label, trust reason).
fn letter(bob: &User, subject: &str) -> (String, String) {
    bob.ok(&["fetch", "--json"], b"");
    let list = bob.ok(&["list", "--json"], b"").json();
    let item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["header"]["subject"] == subject)
        .unwrap_or_else(|| panic!("no letter {subject:?} in {list:#}"))
        .clone();
    assert_eq!(item["legacy"], true, "{item}");
    assert_eq!(
        item["verified"], false,
        "legacy mail is never verified: {item}"
    );
    let id = item["id"].as_str().unwrap();
    let read = bob.ok(&["read", id, "--json"], b"").json();
    (
        read["legacy_label"].as_str().unwrap().to_string(),
        item["trust"]["reason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn spf_dkim_and_dmarc_of_inbound_mail() {
    let dir = TempDir::new("auth");
    let (key, record) = rsa_key(dir.path());
    let mut dns = Some(Dns::start(&[
        Record::ttl(300),
        Record::txt("legacy.test", "v=spf1 ip4:127.0.0.1 -all"),
        Record::txt("s1._domainkey.legacy.test", &record),
        Record::txt("_dmarc.legacy.test", "v=DMARC1; p=reject"),
        Record::txt("quarantine.test", "v=spf1 ip4:127.0.0.1 -all"),
        Record::txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
        Record::txt("nodmarc.test", "v=spf1 ip4:127.0.0.1 -all"),
    ]));
    let dns_addr = dns.as_ref().unwrap().addr;

    let gw_port = free_port();
    let mut args: Vec<String> = FAST_RELAY.iter().map(|s| s.to_string()).collect();
    for s in [
        "gateway.enabled=true".to_string(),
        "gateway.domain=\"gw.test\"".to_string(),
        format!("gateway.listen=\"127.0.0.1:{gw_port}\""),
        "gateway.verify=true".to_string(),
        format!("gateway.dns=\"{dns_addr}\""),
        "gateway.dns_timeout=1".to_string(),
        "gateway.verify_timeout=10".to_string(),
    ] {
        args.push("--set".into());
        args.push(s);
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_with("gw", &arg_refs);
    let mut resolve = Resolve::default();
    resolve.add("gw.test", &node.url);
    let bob = User::init("bob@gw.test", &[&node], &resolve);
    let carol = "carol@legacy.test";

    // 1. SPF pass (127.0.0.1) and DKIM pass: DMARC passes aligned by DKIM; the client says
    //    the From is verified by DKIM for the domain.
    let signed = dkimpy_sign(&message(carol, "signed", "Hello Bob."), &key, "legacy.test");
    let (ok, log) = swaks(gw_port, "127.0.0.1", carol, &signed, dir.path());
    assert!(ok, "{log}");
    let (label, reason) = letter(&bob, "signed");
    assert!(
        label.contains("spf=pass (legacy.test); dkim=pass (legacy.test); dmarc=pass (legacy.test, p=reject); from-verified=dkim:legacy.test"),
        "{label}"
    );
    assert!(
        reason.ends_with("From verified by DKIM for legacy.test"),
        "{reason}"
    );

    // 2. The same signed message from a host SPF does not allow (127.0.0.3): SPF fails, but
    //    the aligned DKIM signature still carries DMARC.
    let signed2 = dkimpy_sign(
        &message(carol, "signed elsewhere", "Hi."),
        &key,
        "legacy.test",
    );
    let (ok, log) = swaks(gw_port, "127.0.0.3", carol, &signed2, dir.path());
    assert!(ok, "{log}");
    let (label, reason) = letter(&bob, "signed elsewhere");
    assert!(
        label.contains("spf=fail (legacy.test); dkim=pass"),
        "{label}"
    );
    assert!(label.contains("dmarc=pass"), "{label}");
    assert!(
        reason.ends_with("From verified by DKIM for legacy.test"),
        "{reason}"
    );

    // 3. A tampered body from the allowed host: DKIM fails, SPF passes and aligns, so
    //    DMARC passes, but the client does not claim a DKIM-verified From.
    let tampered = String::from_utf8(dkimpy_sign(
        &message(carol, "tampered", "Pay 10 EUR."),
        &key,
        "legacy.test",
    ))
    .unwrap()
    .replace("Pay 10 EUR.", "Pay 9999 EUR.")
    .into_bytes();
    let (ok, log) = swaks(gw_port, "127.0.0.1", carol, &tampered, dir.path());
    assert!(ok, "{log}");
    let (label, reason) = letter(&bob, "tampered");
    assert!(
        label.contains(
            "spf=pass (legacy.test); dkim=fail (legacy.test: body hash does not match); dmarc=pass"
        ),
        "{label}"
    );
    assert!(!label.contains("from-verified"), "{label}");
    assert!(
        reason.contains("the legacy sender is not proven"),
        "{reason}"
    );

    // 4. DMARC p=reject: tampered and from a host SPF refuses, or unsigned from it: 550 5.7.1
    //    at end of data, nothing stored.
    for (subject, data) in [
        ("forged tampered", tampered.clone()),
        ("forged", message(carol, "forged", "I am your bank.")),
    ] {
        let data = String::from_utf8(data)
            .unwrap()
            .replace("Subject: tampered", &format!("Subject: {subject}"))
            .into_bytes();
        let (ok, log) = swaks(gw_port, "127.0.0.3", carol, &data, dir.path());
        assert!(!ok, "{log}");
        assert!(
            log.contains("550 5.7.1") && log.contains("DMARC policy of legacy.test"),
            "{log}"
        );
    }
    bob.ok(&["fetch", "--json"], b"");
    let list = bob.ok(&["list", "--json"], b"").json();
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["header"]["subject"]
                .as_str()
                .unwrap_or("")
                .starts_with("forged")),
        "{list:#}"
    );

    // 5. DMARC p=quarantine: taken, labelled suspicious, and the client says so first.
    let dan = "dan@quarantine.test";
    let (ok, log) = swaks(
        gw_port,
        "127.0.0.3",
        dan,
        &message(dan, "quarantined", "Click here."),
        dir.path(),
    );
    assert!(ok, "{log}");
    let (label, reason) = letter(&bob, "quarantined");
    assert!(
        label.contains("spf=fail (quarantine.test); dkim=none; dmarc=fail (quarantine.test, p=quarantine); SUSPICIOUS"),
        "{label}"
    );
    assert!(
        reason.starts_with("SUSPICIOUS: fails the DMARC policy of quarantine.test"),
        "{reason}"
    );

    // 6. SPF fails, no DMARC record: taken, and the label says what was found.
    let erin = "erin@nodmarc.test";
    let (ok, log) = swaks(
        gw_port,
        "127.0.0.3",
        erin,
        &message(erin, "no dmarc", "Hi."),
        dir.path(),
    );
    assert!(ok, "{log}");
    let (label, _) = letter(&bob, "no dmarc");
    assert!(
        label.contains("spf=fail (nodmarc.test); dkim=none; dmarc=none (nodmarc.test, p=none)"),
        "{label}"
    );

    // 7. The DNS server is gone: a domain not in the cache gets 451 4.4.3, the gateway
    //    lives on, and a domain whose records are cached is still judged.
    drop(dns.take());
    let frank = "frank@fresh.test";
    let (ok, log) = swaks(
        gw_port,
        "127.0.0.1",
        frank,
        &message(frank, "dns down", "Hi."),
        dir.path(),
    );
    assert!(!ok, "{log}");
    assert!(log.contains("451 4.4.3"), "{log}");
    let again = dkimpy_sign(&message(carol, "cached", "Hi again."), &key, "legacy.test");
    let (ok, log) = swaks(gw_port, "127.0.0.1", carol, &again, dir.path());
    assert!(ok, "records cached while DNS was up still serve: {log}");
    let (label, _) = letter(&bob, "cached");
    assert!(label.contains("from-verified=dkim:legacy.test"), "{label}");
}
