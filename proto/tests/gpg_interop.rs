//! Interop with GnuPG from Debian (installed by `make test`'s deps step): gpg reads what we
//! seal, and we open what gpg encrypts and signs.

use std::path::Path;
use std::process::{Command, Output};

use sealpost_proto::identity::{SecretIdentity, cert_from_bytes, cert_to_armored};
use sealpost_proto::letter::Letter;
use sealpost_proto::seal::{SignatureStatus, open, seal};
use sealpost_proto::{Address, openpgp};

/// A throw-away GnuPG home; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd.args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("gpg is installed (make deps)");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn path(&self, name: &str) -> String {
        self.home.path().join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

#[test]
fn gpg_decrypts_and_verifies_a_sealed_letter() {
    let alice = SecretIdentity::generate(&addr("alice@alpha.test"), None).unwrap();
    let bob = SecretIdentity::generate(&addr("bob@beta.test"), None).unwrap();
    let letter = Letter::new(
        addr("alice@alpha.test"),
        vec![addr("bob@beta.test")],
        "Interop",
        "Read me with gpg.\r\n",
        1_700_000_000,
    );
    let sealed = seal(&letter, &alice.unlock(None).unwrap(), &bob.public_cert()).unwrap();

    let gpg = Gpg::new();
    std::fs::write(gpg.path("bob.sec"), bob.to_bytes()).unwrap();
    std::fs::write(gpg.path("alice.asc"), cert_to_armored(&alice.public_cert())).unwrap();
    std::fs::write(gpg.path("letter.gpg"), &sealed).unwrap();
    gpg.ok(&["--import", &gpg.path("bob.sec")], None);
    gpg.ok(&["--import", &gpg.path("alice.asc")], None);

    let out = gpg.ok(
        &["--status-fd", "2", "--decrypt", &gpg.path("letter.gpg")],
        None,
    );
    let status = String::from_utf8_lossy(&out.stderr);
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(plain.contains("Read me with gpg."), "{plain}");
    assert!(plain.contains("Subject: Interop"), "{plain}");
    let fpr = alice.fingerprint().to_hex();
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(
        status.contains(&format!("[GNUPG:] VALIDSIG {fpr}")),
        "{status}"
    );
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
    // The recipient is hidden: gpg reports a wildcard key id.
    assert!(status.contains("ENC_TO 0000000000000000"), "{status}");
}

fn gpg_generate(gpg: &Gpg, uid: &str) -> String {
    gpg.ok(
        &["--quick-gen-key", uid, "ed25519", "sign,cert", "never"],
        None,
    );
    let out = gpg.ok(&["--with-colons", "--list-keys", uid], None);
    let listing = String::from_utf8_lossy(&out.stdout);
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    gpg.ok(&["--quick-add-key", &fpr, "cv25519", "encr", "never"], None);
    fpr
}

fn open_gpg_message(hidden_recipient: bool) {
    let bob = SecretIdentity::generate(&addr("bob@beta.test"), None).unwrap();
    let gpg = Gpg::new();
    let fpr = gpg_generate(&gpg, "Carol <carol@gamma.test>");
    std::fs::write(gpg.path("bob.asc"), cert_to_armored(&bob.public_cert())).unwrap();
    gpg.ok(&["--import", &gpg.path("bob.asc")], None);

    let eml = "From: carol@gamma.test\r\nTo: bob@beta.test\r\nSubject: from gpg\r\nMessage-ID: <1@gamma.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nHello from GnuPG.\r\n";
    std::fs::write(gpg.path("letter.eml"), eml).unwrap();
    let rflag = if hidden_recipient { "-R" } else { "-r" };
    gpg.ok(
        &[
            "--trust-model",
            "always",
            rflag,
            "bob@beta.test",
            "-u",
            &fpr,
            "--sign",
            "--encrypt",
            "-o",
            &gpg.path("out.gpg"),
            &gpg.path("letter.eml"),
        ],
        None,
    );
    let carol_pub = gpg.ok(&["--export", &fpr], None).stdout;
    let carol = cert_from_bytes(&carol_pub).unwrap();
    let msg = std::fs::read(gpg.path("out.gpg")).unwrap();

    let lookup = |h: &openpgp::KeyHandle| {
        carol
            .keys()
            .any(|k| k.key().key_handle().aliases(h))
            .then(|| carol.clone())
    };
    let opened = open(&msg, &bob.unlock(None).unwrap(), &lookup).unwrap();
    assert_eq!(opened.letter.subject, "from gpg");
    assert_eq!(opened.letter.body.trim_end(), "Hello from GnuPG.");
    assert_eq!(
        opened.signature,
        SignatureStatus::Good {
            signer: carol.fingerprint()
        }
    );
    assert!(Path::new(&gpg.path("out.gpg")).exists());
}

#[test]
fn we_open_what_gpg_encrypts_and_signs() {
    open_gpg_message(false);
}

#[test]
fn we_open_what_gpg_encrypts_to_a_hidden_recipient() {
    open_gpg_message(true);
}
