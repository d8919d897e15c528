//! The `sealpost` CLI against real `sealpost-node` processes on loopback.
//!
//! Tests that only send and fetch share one world of three nodes (each test with its own
//! users, so their profiles never collide); tests that stop nodes start their own.

use std::sync::OnceLock;
use std::time::Duration;

use sealpost_tests::{Gpg, Node, Resolve, User, dead_url, pseudo_random_bytes, run_cli, snapshot};
use serde_json::Value;

/// Relay between nodes is asynchronous; this is how long a letter may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);

struct World {
    a: Node,
    b: Node,
    c: Node,
    resolve: Resolve,
}

/// alpha.test → A, beta.test → B, gamma.test → C.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (a, b, c) = (Node::start("a"), Node::start("b"), Node::start("c"));
        let mut resolve = Resolve::default();
        resolve.add("alpha.test", &a.url);
        resolve.add("beta.test", &b.url);
        resolve.add("gamma.test", &c.url);
        World { a, b, c, resolve }
    })
}

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn count_new(fetches: &[Value]) -> usize {
    new_letters(fetches).len()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn no_spaces(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn letter_with_2mib_attachment_verifies_and_the_reply_arrives_once() {
    let w = world();
    let alice = User::init("alice@alpha.test", &[&w.a, &w.b], &w.resolve);
    let bob = User::init("bob@gamma.test", &[&w.c], &w.resolve);

    let data = pseudo_random_bytes(2 * 1024 * 1024, 7);
    let file = alice.scratch().join("numbers.bin");
    std::fs::write(&file, &data).unwrap();
    let sent = alice.ok(
        &[
            "send",
            "--to",
            "bob@gamma.test",
            "--subject",
            "Quarterly numbers",
            "--attach",
            file.to_str().unwrap(),
        ],
        b"Hi Bob,\nthe numbers are attached.\n",
    );
    assert!(sent.stdout.contains("sent to bob@gamma.test"), "{sent:?}");

    let fetches = bob.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let new = new_letters(&fetches);
    assert_eq!(new.len(), 1, "{fetches:#?}");
    let m = &new[0];
    assert_eq!(m["verified"], true, "{m:#}");
    assert_eq!(m["header"]["from"], "alice@alpha.test");
    assert_eq!(m["header"]["subject"], "Quarterly numbers");
    let id = s(&m["id"]).to_string();

    let save = bob.scratch().join("saved");
    let read = bob
        .ok(
            &[
                "read",
                &id[..10],
                "--json",
                "--save-attachments",
                save.to_str().unwrap(),
            ],
            b"",
        )
        .json();
    assert_eq!(read["verified"], true);
    assert!(
        s(&read["body"]).contains("the numbers are attached"),
        "{read:#}"
    );
    assert_eq!(read["header"]["attachments"][0]["name"], "numbers.bin");
    let saved = s(&read["saved_attachments"][0]).to_string();
    assert!(
        std::fs::read(&saved).unwrap() == data,
        "attachment differs from what was sent"
    );
    let text = bob.ok(&["read", &id], b"").stdout;
    assert!(text.contains("Signature: verified"), "{text}");
    assert!(!text.contains("NOT end-to-end"), "{text}");
    let message_id = s(&m["header"]["message_id"]).to_string();

    bob.ok(&["reply", &id[..8]], b"Thanks, got them.\n");
    // The reply goes to one of alice's homes, which forwards it to the other; she sees it
    // once, and each home hands its copy in (the second one is recognised as a duplicate).
    let fetches = alice.fetch_until(ARRIVAL, |f| {
        let listed: u64 = f
            .iter()
            .flat_map(|x| x["nodes"].as_array().cloned().unwrap_or_default())
            .map(|n| n["listed"].as_u64().unwrap_or(0))
            .sum();
        count_new(f) >= 1 && listed >= 2
    });
    let new = new_letters(&fetches);
    assert_eq!(new.len(), 1, "{fetches:#?}");
    let r = &new[0];
    assert_eq!(r["verified"], true);
    assert_eq!(r["header"]["from"], "bob@gamma.test");
    assert_eq!(r["header"]["subject"], "Re: Quarterly numbers");
    assert_eq!(r["header"]["in_reply_to"], Value::String(message_id));
    let list = alice.ok(&["list", "--json"], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    let body = alice.ok(&["read", s(&r["id"])], b"").stdout;
    assert!(body.contains("Thanks, got them."), "{body}");
}

#[test]
fn multi_home_failover_delivers_via_the_other_home_and_never_twice() {
    let mut a = Node::start("fail-a");
    let b = Node::start("fail-b");
    let c = Node::start("fail-c");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("gamma.test", &c.url);
    let alice = User::init("alice@alpha.test", &[&a, &b], &resolve);
    let bob = User::init("bob@gamma.test", &[&c], &resolve);
    // Bob knows alice (her record and both homes) before A goes down.
    bob.ok(&["contact", "add", "alice@alpha.test"], b"");

    a.stop();
    // alpha.test's node is down: the record comes from her other home, the letter is
    // wrapped for that home (one-home delivery), which forwards it to A once A is back.
    bob.ok(
        &[
            "send",
            "--to",
            "alice@alpha.test",
            "--subject",
            "While A is down",
        ],
        b"Still reaches you.\n",
    );
    let fetches = alice.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let first = &fetches[0];
    let down: Vec<&Value> = first["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["ok"] == false)
        .collect();
    assert_eq!(down.len(), 1, "A is reported as not answering: {first:#}");
    assert_eq!(down[0]["url"], Value::String(a.url.clone()));
    let new = new_letters(&fetches);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["verified"], true);
    assert_eq!(new[0]["header"]["subject"], "While A is down");

    a.restart();
    // B retries its forward to A; once A has it, alice's fetch finds it there, acks it,
    // and does not show it again.
    let later = alice.fetch_until(ARRIVAL, |f| {
        f.iter().any(|x| x["duplicates"].as_u64() >= Some(1))
    });
    assert_eq!(count_new(&later), 0, "{later:#?}");
    let list = alice.ok(&["list", "--json"], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(
        list[0]["nodes"].as_array().unwrap().len(),
        2,
        "found on both homes: {list:#}"
    );
}

#[test]
fn outbox_keeps_mail_while_the_own_node_is_down() {
    let mut d = Node::start("out-d");
    let e = Node::start("out-e");
    let mut resolve = Resolve::default();
    resolve.add("delta.test", &d.url);
    resolve.add("epsilon.test", &e.url);
    let carol = User::init("carol@delta.test", &[&d], &resolve);
    let dave = User::init("dave@epsilon.test", &[&e], &resolve);

    d.stop();
    let out = carol.run(
        &["send", "--to", "dave@epsilon.test", "--subject", "Queued"],
        b"Patience.\n",
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.error_line().contains("outbox"), "{out:?}");
    let waiting = carol.ok(&["outbox", "list", "--json"], b"").json();
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting:#}");

    d.restart();
    // The next fetch flushes the outbox.
    carol.ok(&["fetch"], b"");
    let waiting = carol.ok(&["outbox", "list", "--json"], b"").json();
    assert_eq!(waiting.as_array().unwrap().len(), 0, "{waiting:#}");
    let fetches = dave.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let new = new_letters(&fetches);
    assert_eq!(new[0]["header"]["subject"], "Queued");
    assert_eq!(new[0]["verified"], true);
}

#[test]
fn a_bounce_from_the_own_node_is_verified() {
    let sender_node = Node::start_with(
        "bounce-s",
        &[
            "--set",
            "relay.retry_base=1",
            "--set",
            "relay.retry_max=1",
            "--set",
            "relay.give_up_after=2",
        ],
    );
    let mut r = Node::start("bounce-r");
    let mut resolve = Resolve::default();
    resolve.add("sigma.test", &sender_node.url);
    resolve.add("rho.test", &r.url);
    let kim = User::init("kim@sigma.test", &[&sender_node], &resolve);
    User::init("lee@rho.test", &[&r], &resolve);
    kim.ok(&["contact", "add", "lee@rho.test"], b"");
    r.stop();
    kim.ok(
        &["send", "--to", "lee@rho.test", "--subject", "Into the void"],
        b"Anyone there?\n",
    );
    let fetches = kim.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let bounce = &new_letters(&fetches)[0];
    assert!(
        s(&bounce["header"]["subject"]).starts_with("Undeliverable: "),
        "{bounce:#}"
    );
    assert!(
        s(&bounce["header"]["from"]).starts_with("postmaster@"),
        "{bounce:#}"
    );
    assert_eq!(
        bounce["verified"], true,
        "signed by our own node's key: {bounce:#}"
    );
    let text = kim.ok(&["read", s(&bounce["id"])], b"").stdout;
    assert!(text.contains("could not be delivered"), "{text}");
    // The bounce names the queue id; the client knows which letter that was.
    assert!(
        text.contains("Bounce of: your letter \"Into the void\" to lee@rho.test"),
        "{text}"
    );
    let json = kim.ok(&["read", "--json", s(&bounce["id"])], b"").json();
    assert_eq!(json["bounce_of"]["subject"], "Into the void");
    assert_eq!(json["bounce_of"]["recipient"], "lee@rho.test");
}

#[test]
fn changed_key_of_a_pinned_contact_is_refused_until_accepted() {
    let w = world();
    // Carol's node is her own: its operator frees her address below (with the node stopped).
    let mut c = Node::start("carol-own");
    let mut resolve = w.resolve.clone();
    resolve.add("carol.test", &c.url);
    let carol = User::init("carol@carol.test", &[&c], &resolve);
    let dave = User::init("dave@alpha.test", &[&w.a], &resolve);
    dave.ok(&["contact", "add", "carol@carol.test"], b"");
    let old = carol.fingerprint();

    // Carol starts over with a new key (same address, new record on her node). An address
    // belongs to its first key, so her node's operator frees it first.
    c.stop();
    let reset = std::process::Command::new(sealpost_tests::node_bin())
        .args(["reset-address", "--config"])
        .arg(c.config_path())
        .arg("carol@carol.test")
        .output()
        .unwrap();
    assert!(reset.status.success(), "{reset:?}");
    c.restart();
    let carol2 = User::init("carol@carol.test", &[&c], &resolve);
    let new = carol2.fingerprint();
    assert_ne!(old, new);

    // A send no longer looks a known contact up (issue 13 item 2): the refresh of a fetch
    // whose records are due finds the new key, as the send's lookup used to.
    dave.ok(&["--refresh-after", "0", "fetch"], b"");
    for _ in 0..2 {
        let out = dave.run(
            &["send", "--to", "carol@carol.test", "--subject", "hi"],
            b"x\n",
        );
        assert_eq!(out.code, 3, "{out:?}");
        let line = out.error_line();
        assert!(
            no_spaces(line).contains(&old) && no_spaces(line).contains(&new),
            "{line}"
        );
        assert!(
            line.contains("sealpost contact accept carol@carol.test"),
            "{line}"
        );
        let waiting = dave.ok(&["outbox", "list", "--json"], b"").json();
        assert_eq!(waiting.as_array().unwrap().len(), 0, "nothing queued");
    }
    let shown = dave
        .ok(&["contact", "show", "carol@carol.test", "--json"], b"")
        .json();
    assert_eq!(
        shown["fingerprint"],
        Value::String(old.clone()),
        "pin unchanged"
    );
    assert_eq!(shown["pending"]["fingerprint"], Value::String(new.clone()));

    // A letter signed with the new key, before it is accepted: unverified, with a warning.
    carol2.ok(
        &["send", "--to", "dave@alpha.test", "--subject", "new key"],
        b"Trust me.\n",
    );
    let fetches = dave.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let letter = &new_letters(&fetches)[0];
    assert_eq!(letter["header"]["from"], "carol@carol.test");
    assert_eq!(letter["verified"], false, "{letter:#}");
    assert!(
        s(&letter["trust"]["reason"]).contains("pinned"),
        "{letter:#}"
    );
    let warnings: Vec<&Value> = fetches
        .iter()
        .flat_map(|f| f["warnings"].as_array().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| s(w).contains("sealpost contact accept carol@carol.test")),
        "{warnings:?}"
    );

    // Accepting with the wrong fingerprint does nothing.
    let out = dave.run(
        &[
            "contact",
            "accept",
            "carol@carol.test",
            "--fingerprint",
            &old,
        ],
        b"",
    );
    assert_eq!(out.code, 3, "{out:?}");
    out.error_line();
    dave.ok(
        &[
            "contact",
            "accept",
            "carol@carol.test",
            "--fingerprint",
            &new,
        ],
        b"",
    );
    dave.ok(
        &[
            "send",
            "--to",
            "carol@carol.test",
            "--subject",
            "Welcome back",
        ],
        b"New key noted.\n",
    );
    let fetches = carol2.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let letters = new_letters(&fetches);
    assert_eq!(letters[0]["header"]["subject"], "Welcome back");
    assert_eq!(letters[0]["verified"], true);
}

#[test]
fn letter_signed_by_another_key_is_shown_unverified() {
    let w = world();
    let erin = User::init("erin@alpha.test", &[&w.a], &w.resolve);
    let frank = User::init("frank@gamma.test", &[&w.c], &w.resolve);
    erin.ok(&["contact", "add", "frank@gamma.test"], b"");
    // An impostor with frank's address and its own key, homed on another node.
    let impostor = User::init("frank@gamma.test", &[&w.b], &w.resolve);

    frank.ok(
        &["send", "--to", "erin@alpha.test", "--subject", "real"],
        b"It is me.\n",
    );
    impostor.ok(
        &["send", "--to", "erin@alpha.test", "--subject", "fake"],
        b"It is me, honest.\n",
    );
    let fetches = erin.fetch_until(ARRIVAL, |f| count_new(f) >= 2);
    let letters = new_letters(&fetches);
    let by_subject = |s: &str| {
        letters
            .iter()
            .find(|l| l["header"]["subject"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("{s} missing: {letters:#?}"))
    };
    let real = by_subject("real");
    let fake = by_subject("fake");
    assert_eq!(real["verified"], true, "{real:#}");
    assert_eq!(fake["verified"], false, "{fake:#}");
    assert_eq!(fake["trust"]["state"], "unverified");
    assert!(
        s(&fake["trust"]["reason"]).contains("frank@gamma.test"),
        "{fake:#}"
    );

    let text = erin.ok(&["read", s(&fake["id"])], b"").stdout;
    assert!(text.contains("Signature: UNVERIFIED"), "{text}");
    assert!(
        !text.contains("verified: signed by the key pinned"),
        "{text}"
    );
    let list = erin.ok(&["list"], b"").stdout;
    let fake_line = list.lines().find(|l| l.contains("fake")).unwrap();
    assert!(fake_line.contains("UNVERIFIED"), "{list}");
    // The pin stays frank's real key.
    let shown = erin
        .ok(&["contact", "show", "frank@gamma.test", "--json"], b"")
        .json();
    assert_eq!(shown["fingerprint"], Value::String(frank.fingerprint()));
}

#[test]
fn a_home_can_be_added_untrusted_and_dropped() {
    let w = world();
    let mallory = User::init("mallory@alpha.test", &[&w.a], &w.resolve);
    let oscar = User::init("oscar@gamma.test", &[&w.c], &w.resolve);
    let seq = |u: &User| {
        u.ok(&["whoami", "--json"], b"").json()["record"]["sequence"]
            .as_u64()
            .unwrap()
    };
    let before = seq(&mallory);

    let out = mallory.ok(&["node", "trust", &w.b.url], b"");
    assert!(out.stdout.contains("added home"), "{out:?}");
    let homes = mallory.ok(&["node", "list", "--json"], b"").json();
    assert_eq!(homes.as_array().unwrap().len(), 2, "{homes:#}");
    assert!(seq(&mallory) > before, "a new record was published");
    oscar.ok(&["contact", "add", "mallory@alpha.test"], b"");
    let shown = oscar
        .ok(&["contact", "show", "mallory@alpha.test"], b"")
        .stdout;
    assert!(
        shown.contains(&w.a.url) && shown.contains(&w.b.url),
        "{shown}"
    );

    // Untrusted: not fetched from, still in the record.
    mallory.ok(&["node", "untrust", &w.b.url], b"");
    oscar.ok(
        &[
            "send",
            "--to",
            "mallory@alpha.test",
            "--subject",
            "two homes",
        ],
        b"x\n",
    );
    let fetches = mallory.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    for f in &fetches {
        let urls: Vec<&str> = f["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| s(&n["url"]))
            .collect();
        assert_eq!(
            urls,
            vec![w.a.url.as_str()],
            "only the trusted home is asked"
        );
    }

    // Dropped: the record lists one home again; the last trusted home cannot go.
    mallory.ok(&["node", "trust", &w.b.url], b"");
    mallory.ok(&["node", "untrust", "--drop", &w.b.url], b"");
    let homes = mallory.ok(&["node", "list", "--json"], b"").json();
    assert_eq!(homes.as_array().unwrap().len(), 1, "{homes:#}");
    let out = mallory.run(&["node", "untrust", &w.a.url], b"");
    assert_eq!(out.code, 1, "{out:?}");
    oscar.ok(&["contact", "add", "mallory@alpha.test"], b"");
    let shown = oscar
        .ok(&["contact", "show", "mallory@alpha.test"], b"")
        .stdout;
    assert!(
        shown.contains(&w.a.url) && !shown.contains(&w.b.url),
        "{shown}"
    );
}

#[test]
fn keys_move_between_sealpost_and_gpg() {
    let w = world();
    let grace = User::init("grace@alpha.test", &[&w.a], &w.resolve);
    let fpr = grace.fingerprint();

    let public = grace.ok(&["export-key"], b"").stdout;
    assert!(
        public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{public}"
    );
    let gpg = Gpg::new();
    let out = gpg.run(&["--import"], public.as_bytes());
    assert!(out.ok(), "{out:?}");
    let keys = gpg.run(&["--with-colons", "--list-keys"], b"").stdout;
    assert!(keys.contains(&format!("fpr:::::::::{fpr}:")), "{keys}");
    assert!(keys.contains("grace@alpha.test"), "{keys}");

    let secret = grace.ok(&["export-key", "--secret"], b"").stdout;
    let gpg2 = Gpg::new();
    let out = gpg2.run(&["--import"], secret.as_bytes());
    assert!(out.ok(), "{out:?}");
    let secrets = gpg2
        .run(&["--with-colons", "--list-secret-keys"], b"")
        .stdout;
    assert!(
        secrets.contains(&format!("fpr:::::::::{fpr}:")),
        "{secrets}"
    );

    // The secret export is a backup: a new profile made from it has the same key.
    let backup = grace.scratch().join("grace-secret.asc");
    std::fs::write(&backup, &secret).unwrap();
    let restored = User::new("grace@alpha.test", &w.resolve);
    let out = restored.run(
        &[
            "init",
            "grace@alpha.test",
            "--node",
            &w.b.url,
            "--import-key",
            backup.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(restored.fingerprint(), fpr);

    // A key made by gpg becomes a contact.
    let gpg3 = Gpg::new();
    let out = gpg3.run(
        &[
            "--quick-gen-key",
            "Heidi <heidi@beta.test>",
            "ed25519",
            "sign",
            "never",
        ],
        b"",
    );
    assert!(out.ok(), "{out:?}");
    let listing = gpg3
        .run(&["--with-colons", "--list-keys", "heidi@beta.test"], b"")
        .stdout;
    let heidi_fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    let out = gpg3.run(
        &["--quick-add-key", &heidi_fpr, "cv25519", "encr", "never"],
        b"",
    );
    assert!(out.ok(), "{out:?}");
    let exported = gpg3
        .run(&["--armor", "--export", "heidi@beta.test"], b"")
        .stdout;
    let file = grace.scratch().join("heidi.asc");
    std::fs::write(&file, exported).unwrap();
    let out = grace.ok(&["import-key", file.to_str().unwrap()], b"");
    assert!(out.stdout.contains("pinned heidi@beta.test"), "{out:?}");
    let contacts = grace.ok(&["contact", "list", "--json"], b"").json();
    let heidi = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "heidi@beta.test")
        .unwrap();
    assert_eq!(heidi["fingerprint"], Value::String(heidi_fpr));
    assert_eq!(heidi["source"], "import");

    // And a gpg user can bring their own secret key to sealpost.
    let heidi_secret = gpg3
        .run(&["--armor", "--export-secret-keys", "heidi@beta.test"], b"")
        .stdout;
    let file = grace.scratch().join("heidi-secret.asc");
    std::fs::write(&file, heidi_secret).unwrap();
    let heidi_user = User::new("heidi@beta.test", &w.resolve);
    let out = heidi_user.run(
        &[
            "init",
            "heidi@beta.test",
            "--node",
            &w.b.url,
            "--import-key",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(
        heidi_user.fingerprint(),
        heidi["fingerprint"].as_str().unwrap()
    );
    heidi_user.ok(
        &[
            "send",
            "--to",
            "grace@alpha.test",
            "--subject",
            "from gpg land",
        ],
        b"hello\n",
    );
    let fetches = grace.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    let letters = new_letters(&fetches);
    assert_eq!(letters[0]["header"]["from"], "heidi@beta.test");
    assert_eq!(
        letters[0]["verified"], true,
        "signed by the imported, pinned gpg key"
    );
}

#[test]
fn passphrase_protects_the_profile() {
    let w = world();
    let mut judy = User::new("judy@alpha.test", &w.resolve);
    judy.env
        .push(("SEALPOST_PASSPHRASE".into(), "correct horse".into()));
    let out = judy.run(&["init", "judy@alpha.test", "--node", &w.a.url], b"");
    assert!(out.ok(), "{out:?}");
    let secret = std::fs::read_to_string(judy.profile().join("secret.key")).unwrap();
    assert!(secret.contains("PRIVATE KEY"), "armored secret key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(judy.profile().join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    judy.ok(&["fetch"], b"");

    judy.env.clear();
    let out = judy.run(&["fetch"], b"");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.error_line().contains("SEALPOST_PASSPHRASE"), "{out:?}");
    let pw = judy.scratch().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let out = judy.run(&["--passphrase-file", pw.to_str().unwrap(), "fetch"], b"");
    assert_eq!(out.code, 3, "{out:?}");
    std::fs::write(&pw, "correct horse\n").unwrap();
    judy.ok(&["--passphrase-file", pw.to_str().unwrap(), "fetch"], b"");
    // Commands that need no key work without it.
    judy.ok(&["whoami"], b"");
}

#[test]
fn bad_input_gives_one_error_line_and_changes_nothing() {
    let w = world();
    let ivan = User::init("ivan@alpha.test", &[&w.a], &w.resolve);
    let missing = ivan.scratch().join("no-such-file.bin");
    let garbage = ivan.scratch().join("garbage.asc");
    std::fs::write(&garbage, "not a key").unwrap();
    let dead = dead_url();
    let nowhere = format!("nowhere.test={dead}");
    let before = ivan.snapshot();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["send", "--to", "nobody@gamma.test"], 1),
        (
            vec![
                "send",
                "--to",
                "ivan@alpha.test",
                "--attach",
                missing.to_str().unwrap(),
            ],
            1,
        ),
        (vec!["send", "--to", "not an address"], 1),
        (vec!["read", "ffffffff"], 1),
        (vec!["read", "zz"], 1),
        (vec!["reply", "ffffffff"], 1),
        (vec!["contact", "add", "nobody@gamma.test"], 1),
        (vec!["contact", "add", "@@"], 1),
        (vec!["contact", "accept", "nobody@gamma.test"], 1),
        (vec!["contact", "verify", "nobody@gamma.test", "ABCD"], 1),
        (vec!["import-key", missing.to_str().unwrap()], 1),
        (vec!["import-key", garbage.to_str().unwrap()], 1),
        (vec!["node", "trust", &dead], 2),
        (vec!["node", "untrust", &w.a.url], 1),
        (vec!["node", "untrust", "http://127.0.0.1:1"], 1),
        (vec!["outbox", "drop", "abcdef"], 1),
        (vec!["resolve", "add", "nonsense"], 1),
        (vec!["--resolve", "garbage", "list"], 1),
        (vec!["--timeout", "0", "fetch"], 1),
        (vec!["frobnicate"], 1),
        (vec!["init", "ivan@alpha.test", "--node", &w.a.url], 4),
    ];
    for (args, code) in cases {
        let out = ivan.run(&args, b"body\n");
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        out.error_line();
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
        assert!(ivan.snapshot() == before, "{args:?} changed the profile");
    }

    // A recipient whose node cannot be reached now: still exit 2, but the letter is kept
    // in the outbox (issue 13: a letter is kept before its lookups and waits for them);
    // dropping it leaves the profile as it was.
    let out = ivan.run(
        &["--resolve", &nowhere, "send", "--to", "x@nowhere.test"],
        b"body\n",
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.error_line().contains("letter saved, will be sent when"),
        "{out:?}"
    );
    let waiting = ivan.ok(&["outbox", "list", "--json"], b"").json();
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting:#}");
    let id = waiting[0]["id"].as_str().unwrap().to_string();
    ivan.ok(&["outbox", "drop", &id[..8]], b"");
    assert!(
        ivan.snapshot() == before,
        "the dropped letter leaves nothing"
    );

    // init with a node that does not answer, or a bad address: no profile appears.
    let nobody = User::new("judy@alpha.test", &w.resolve);
    let out = nobody.run(&["init", "judy@alpha.test", "--node", &dead], b"");
    assert_eq!(out.code, 2, "{out:?}");
    out.error_line();
    assert!(!nobody.profile().exists(), "failed init left a profile");
    let out = nobody.run(&["init", "judy@@alpha.test", "--node", &w.a.url], b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!nobody.profile().exists());
    let out = nobody.run(
        &[
            "init",
            "judy@alpha.test",
            "--node",
            &w.a.url,
            "--import-key",
            garbage.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.code, 1, "{out:?}");
    out.error_line();
    assert!(!nobody.profile().exists());
    let out = nobody.run(&["list"], b"");
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.error_line().contains("sealpost init"), "{out:?}");

    // A corrupt profile: every command says so in one line (exit 4) and touches nothing.
    for (file, content) in [
        ("config.json", &b"{ this is not json"[..]),
        ("secret.key", &b"garbage"[..]),
        ("record.bin", &b"\x04\x01\x00"[..]),
    ] {
        let copy = ivan.scratch().join(format!("corrupt-{file}"));
        copy_dir(&ivan.profile(), &copy);
        std::fs::write(copy.join(file), content).unwrap();
        let before = snapshot(&copy);
        for args in [
            &["whoami"][..],
            &["list"],
            &["fetch"],
            &["send", "--to", "x@gamma.test"],
            &["contact", "list"],
            &["export-key"],
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let out = run_cli(&copy, &w.resolve, &[], &args, b"body");
            assert_eq!(out.code, 4, "{file} {args:?}: {out:?}");
            assert!(out.error_line().contains(file), "{out:?}");
            assert!(
                snapshot(&copy) == before,
                "{args:?} changed the corrupt profile"
            );
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
