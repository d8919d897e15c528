//! Backups (issue 14 item 5) with the real CLI against real nodes: `backup create`, then
//! `backup restore` into a fresh profile, after which fetching works and the pins are kept;
//! a wrong passphrase restores nothing; gpg opens the backup with its passphrase.

use std::process::Command;
use std::time::Duration;

use sealpost_tests::{Gpg, Node, Resolve, User};
use serde_json::Value;

/// Relay between nodes is asynchronous; this is how long a letter may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);
const PASS: &str = "correct horse battery staple";

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn pins(u: &User) -> Vec<(String, String)> {
    let list = u.ok(&["contact", "list", "--json"], b"").json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["fingerprint"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_restored_backup_fetches_and_keeps_its_pins_and_gpg_opens_it() {
    let (a, b) = (Node::start("backup-a"), Node::start("backup-b"));
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    let mut alice = User::init("alice@alpha.test", &[&a], &resolve);
    let bob = User::init("bob@beta.test", &[&b], &resolve);
    // Each pins the other: alice by sending, bob by fetching.
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "Hi"],
        b"Hello Bob\n",
    );
    bob.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let pinned = pins(&alice);
    assert_eq!(pinned.len(), 1, "{pinned:?}");

    let file = alice.scratch().join("alice.backup");
    alice
        .env
        .push(("SEALPOST_BACKUP_PASSPHRASE".into(), PASS.into()));
    let out = alice.ok(
        &[
            "backup",
            "create",
            file.to_str().unwrap(),
            "--letters",
            "--json",
        ],
        b"",
    );
    let made = out.json();
    assert_eq!(made["contacts"], 1, "{made:#}");
    assert_eq!(made["letters"], 1, "alice's sent copy: {made:#}");
    let again = alice.run(&["backup", "create", file.to_str().unwrap()], b"");
    assert_eq!(again.code, 1, "an existing file is not replaced: {again:?}");

    // Someone else's code opens it with the passphrase: gpg, as `gpg --symmetric` would.
    let gpg = Gpg::new();
    let opened = Command::new("gpg")
        .arg("--homedir")
        .arg(gpg.home())
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
        .args(["--passphrase", PASS, "--decrypt"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(opened.status.success(), "{opened:?}");
    let bundle: Value = serde_json::from_slice(&opened.stdout).unwrap();
    assert_eq!(bundle["format"], "sealpost-backup");
    assert_eq!(bundle["address"], "alice@alpha.test");
    assert!(bundle["files"]["secret.key"].is_string(), "{bundle:#}");

    // A wrong passphrase: exit 3, no profile made.
    let mut wrong = User::new("alice@alpha.test", &resolve);
    wrong
        .env
        .push(("SEALPOST_BACKUP_PASSPHRASE".into(), "guess".into()));
    let out = wrong.run(&["backup", "restore", file.to_str().unwrap()], b"");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.error_line().contains("wrong passphrase"), "{out:?}");
    assert!(!wrong.profile().exists());

    // Restored into a fresh profile: the same key, the same pins, the letters.
    let mut restored = User::new("alice@alpha.test", &resolve);
    restored
        .env
        .push(("SEALPOST_BACKUP_PASSPHRASE".into(), PASS.into()));
    let out = restored.ok(&["backup", "restore", file.to_str().unwrap()], b"");
    assert!(out.stdout.contains("restored alice@alpha.test"), "{out:?}");
    assert_eq!(restored.fingerprint(), alice.fingerprint());
    assert_eq!(pins(&restored), pinned);
    let sent = restored.ok(&["list", "--sent", "--json"], b"").json();
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent:#}");
    let out = restored.run(&["backup", "restore", file.to_str().unwrap()], b"");
    assert_eq!(out.code, 4, "a profile is never overwritten: {out:?}");

    // Fetching works, and bob's letter is verified against the pin that came back.
    bob.ok(
        &["send", "--to", "alice@alpha.test", "--subject", "Back"],
        b"Welcome back\n",
    );
    let fetches = restored.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let new = new_letters(&fetches);
    assert_eq!(new.len(), 1, "{fetches:#?}");
    assert_eq!(new[0]["header"]["from"], "bob@beta.test");
    assert_eq!(new[0]["verified"], true);
    assert_eq!(pins(&restored), pinned, "no new pin: the old one serves");
}
