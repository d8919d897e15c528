//! Who owns an address, end to end with real `sealpost-node` processes and the real CLI:
//! a second profile cannot take a registered address (on any of its homes); the owner
//! rotates the key on every home; a contact who pinned (and verified) the old key sees the
//! change as signed by the old key and must confirm it; a sender who never wrote gets the
//! new key; the operator frees an address with `sealpost-node reset-address`, after which
//! a new key is shown as NOT signed by the old one.

use std::process::Command;
use std::time::Duration;

use sealpost_tests::{Gpg, Node, Resolve, User, node_bin};
use serde_json::Value;

/// Relay between nodes is asynchronous; this is how long a letter may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);

fn no_spaces(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn an_address_belongs_to_its_owner_who_can_rotate_the_key() {
    let mut beta = Node::start("beta-owner");
    let backup = Node::start("backup-owner");
    let alpha = Node::start("alpha-owner");
    let mut resolve = Resolve::default();
    resolve.add("beta.test", &beta.url);
    resolve.add("alpha.test", &alpha.url);

    // Bob is homed on two nodes; Alice pins and verifies his key.
    let bob = User::init("bob@beta.test", &[&beta, &backup], &resolve);
    let alice = User::init("alice@alpha.test", &[&alpha], &resolve);
    let old = bob.fingerprint();
    alice.ok(&["contact", "add", "bob@beta.test"], b"");
    alice.ok(&["contact", "verify", "bob@beta.test", &old], b"");

    // Another profile cannot take bob@beta.test, on either of Bob's homes.
    for home in [&beta, &backup] {
        let eve = User::new("bob@beta.test", &resolve);
        let out = eve.run(&["init", "bob@beta.test", "--node", &home.url], b"");
        assert_eq!(out.code, 1, "{out:?}");
        let line = out.error_line();
        assert!(
            line.contains("bob@beta.test is already registered on")
                && line.contains("sealpost rotate-key"),
            "{line}"
        );
        assert!(!eve.profile().exists(), "a refused init leaves no profile");
    }
    // The same key again (a backup restored into a new profile) is still welcome.
    let backup_key = bob.scratch().join("bob-secret.asc");
    bob.ok(
        &[
            "export-key",
            "--secret",
            "--output",
            backup_key.to_str().unwrap(),
        ],
        b"",
    );
    let restored = User::new("bob@beta.test", &resolve);
    restored.ok(
        &[
            "init",
            "bob@beta.test",
            "--node",
            &beta.url,
            "--import-key",
            backup_key.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(restored.fingerprint(), old);

    // A letter sealed to the old key, still on the node when Bob rotates.
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "before"],
        b"Sealed to your old key.\n",
    );

    let old_public = bob.ok(&["export-key"], b"").stdout;
    let rotated = bob.ok(&["rotate-key"], b"");
    let new = bob.fingerprint();
    assert_ne!(new, old);
    assert_eq!(
        rotated.stdout.matches("signed by the old key").count(),
        2,
        "published on both homes: {rotated:?}"
    );

    // gpg, not our code, confirms the endorsement: a good certification (`sig:!`) by the
    // old key's id over the new key's User ID.
    let gpg = Gpg::new();
    let new_public = bob.ok(&["export-key"], b"").stdout;
    for key in [&old_public, &new_public] {
        let out = gpg.run(&["--import"], key.as_bytes());
        assert!(out.ok(), "{out:?}");
    }
    let sigs = gpg.run(&["--with-colons", "--check-sigs", &new], b"");
    assert!(sigs.ok(), "{sigs:?}");
    let old_keyid = &old[old.len() - 16..];
    assert!(
        sigs.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() > 10
                && f[0] == "sig"
                && f[1] == "!"
                && f[4] == old_keyid
                && f[10].starts_with("10")
        }),
        "no good certification by {old_keyid}: {}",
        sigs.stdout
    );

    // The letter sealed to the old key is still readable.
    let fetches = bob.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let letters = new_letters(&fetches);
    assert_eq!(letters[0]["header"]["subject"], "before");
    assert_eq!(letters[0]["verified"], true, "{:#}", letters[0]);

    // Alice, who pinned and verified the old key, is stopped and told how the key changed,
    // once a fetch has refreshed her record of bob (a send no longer looks a known contact
    // up, issue 13 item 2).
    alice.ok(&["--refresh-after", "0", "fetch"], b"");
    let out = alice.run(
        &["send", "--to", "bob@beta.test", "--subject", "after"],
        b"x\n",
    );
    assert_eq!(out.code, 3, "{out:?}");
    let line = out.error_line();
    assert!(
        no_spaces(line).contains(&old) && no_spaces(line).contains(&new),
        "{line}"
    );
    assert!(line.contains("(signed by the old key)"), "{line}");
    assert!(line.contains("(verified by you)"), "{line}");
    let shown = alice.ok(&["contact", "show", "bob@beta.test"], b"");
    assert!(
        shown
            .stdout
            .contains("the new key is signed by the old key; the pinned key was verified by you"),
        "{shown:?}"
    );
    let shown = alice
        .ok(&["contact", "show", "bob@beta.test", "--json"], b"")
        .json();
    assert_eq!(shown["pending"]["endorsed"], true, "{shown:#}");

    // Replacing a verified key needs a terminal or --yes; without, nothing changes.
    let before = alice.snapshot();
    let out = alice.run(&["contact", "accept", "bob@beta.test"], b"y\n");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.error_line().contains("--yes"), "{out:?}");
    assert!(
        before == alice.snapshot(),
        "a refused accept changes nothing"
    );
    alice.ok(&["contact", "accept", "bob@beta.test", "--yes"], b"");
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "after"],
        b"To your new key.\n",
    );
    let fetches = bob.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let letters = new_letters(&fetches);
    assert_eq!(letters[0]["header"]["subject"], "after");
    assert_eq!(letters[0]["verified"], true);

    // Carol never wrote to Bob: she gets the new key.
    let carol = User::init("carol@alpha.test", &[&alpha], &resolve);
    let added = carol.ok(&["contact", "add", "bob@beta.test"], b"");
    assert!(no_spaces(&added.stdout).contains(&new), "{added:?}");

    // The old key cannot come back: only the current key may move the address.
    let out = restored.run(&["publish"], b"");
    assert_ne!(out.code, 0, "{out:?}");

    // The operator frees the address (node stopped); a new key then takes it, and Alice
    // sees that change as NOT signed by the old key.
    beta.stop();
    let reset = Command::new(node_bin())
        .args(["reset-address", "--config"])
        .arg(beta.config_path())
        .arg("bob@beta.test")
        .output()
        .unwrap();
    assert!(reset.status.success(), "{reset:?}");
    assert!(
        String::from_utf8_lossy(&reset.stdout).contains("freed bob@beta.test"),
        "{reset:?}"
    );
    beta.restart();
    let newcomer = User::init("bob@beta.test", &[&beta], &resolve);
    alice.ok(&["--refresh-after", "0", "fetch"], b"");
    let out = alice.run(
        &["send", "--to", "bob@beta.test", "--subject", "who?"],
        b"x\n",
    );
    assert_eq!(out.code, 3, "{out:?}");
    let line = out.error_line();
    assert!(
        line.contains("NOT signed by the old key")
            && no_spaces(line).contains(&newcomer.fingerprint()),
        "{line}"
    );
}
