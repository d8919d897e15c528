//! Lookups decoupled from sending (issue 13, item 2), end to end with real nodes that keep
//! an access record (`testing.access_record`, as in `privacy_audit.rs`): only the first
//! letter to an address looks it up; a later letter to the known contact makes no lookup
//! request at any node. `fetch` refreshes a record once it is due (`--refresh-after 0`
//! makes every record due), through the user's home as any lookup, and a key the contact
//! rotated meanwhile is then held pending and refused until accepted, as a fresh lookup
//! would have it.

use std::time::Duration;

use sealpost_tests::{Node, Resolve, User};
use serde_json::Value;

/// Relay between nodes is asynchronous; this is how long a letter may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);

fn new_letters(fetches: &[Value]) -> Vec<Value> {
    fetches
        .iter()
        .flat_map(|f| f["new"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Whether an access-record line is (part of) a record lookup: a device asking its home to
/// relay one (`/v1/relay/ohttp`), a node answering a relayed one (`/v1/ohttp`, the
/// `oblivious ...` line of what it opened), or a record asked for directly. A home's
/// descriptor fetched through the relay (`/v1/relay/descriptor`, public, naming no user)
/// is how a send picks a home that answers (one-home delivery), not a lookup.
fn is_lookup(what: &str) -> bool {
    what.contains("/v1/relay/ohttp")
        || what.contains("/v1/ohttp")
        || what.starts_with("oblivious ")
        || what.contains("/v1/records/")
}

/// The lookups in the access records of `nodes` after the first `seen[i]` lines.
fn lookups_since(nodes: &[&Node], seen: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .zip(seen)
        .flat_map(|(n, from)| {
            n.access()
                .into_iter()
                .skip(*from)
                .filter(|(_, w)| is_lookup(w))
                .map(|(p, w)| format!("{}: {p} {w}", n.name))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn lines(nodes: &[&Node]) -> Vec<usize> {
    nodes.iter().map(|n| n.access().len()).collect()
}

fn subjects(fetches: &[Value]) -> Vec<String> {
    new_letters(fetches)
        .iter()
        .map(|m| m["header"]["subject"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn only_the_first_letter_to_an_address_looks_it_up() {
    const ALICE_DEVICE: &str = "127.0.0.32";
    let a = Node::start_on("cache-alpha", "127.0.0.30");
    let b = Node::start_on("cache-beta", "127.0.0.31");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    let alice = User::init_from("alice@alpha.test", Some(ALICE_DEVICE), &[&a], &resolve);
    let bob = User::init_from("bob@beta.test", Some("127.0.0.33"), &[&b], &resolve);
    let nodes = [&a, &b];

    // The first letter looks bob up, through alice's home.
    let before = lines(&nodes);
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "first"],
        b"1\n",
    );
    let first = lookups_since(&nodes, &before);
    assert!(
        first
            .iter()
            .any(|l| l.contains("oblivious GET /v1/records/bob@beta.test")),
        "{first:#?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.contains(ALICE_DEVICE) && l.contains("/v1/relay/")),
        "{first:#?}"
    );

    // The second and third: no lookup request anywhere, and yet they arrive.
    let before = lines(&nodes);
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "second"],
        b"2\n",
    );
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "third"],
        b"3\n",
    );
    let later = lookups_since(&nodes, &before);
    assert!(
        later.is_empty(),
        "a known contact is not looked up: {later:#?}"
    );
    // A fetch whose refreshes are not due asks nothing either.
    alice.ok(&["fetch"], b"");
    let later = lookups_since(&nodes, &before);
    assert!(later.is_empty(), "nothing is due yet: {later:#?}");
    let fetches = bob.fetch_until(ARRIVAL, |f| new_letters(f).len() >= 3);
    let mut got = subjects(&fetches);
    got.sort();
    assert_eq!(got, ["first", "second", "third"], "{fetches:#?}");
    assert!(new_letters(&fetches).iter().all(|m| m["verified"] == true));

    // Once due, a fetch refreshes the record: through the home, obliviously.
    let before = lines(&nodes);
    alice.ok(&["--refresh-after", "0", "fetch"], b"");
    let refresh = lookups_since(&nodes, &before);
    assert!(
        refresh
            .iter()
            .any(|l| l.contains("oblivious GET /v1/records/bob@beta.test")),
        "{refresh:#?}"
    );
    assert!(
        !b.access().iter().any(|(p, _)| p == ALICE_DEVICE),
        "bob's node never sees alice's device"
    );
}

#[test]
fn a_due_refresh_notices_a_rotated_key_which_is_refused_until_accepted() {
    let a = Node::start_on("rotate-alpha", "127.0.0.34");
    let b = Node::start_on("rotate-beta", "127.0.0.35");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    let alice = User::init_from("alice@alpha.test", Some("127.0.0.36"), &[&a], &resolve);
    let bob = User::init_from("bob@beta.test", Some("127.0.0.37"), &[&b], &resolve);
    let old = bob.fingerprint();
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "hello"],
        b"1\n",
    );

    // Bob rotates his key (the old one endorses the new one). Alice's record of him is not
    // due: her next letter goes to the key she has, which bob can still open.
    bob.ok(&["rotate-key"], b"");
    let new = bob.fingerprint();
    assert_ne!(old, new);
    let nodes = [&a, &b];
    let before = lines(&nodes);
    alice.ok(&["fetch"], b"");
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "cached"],
        b"2\n",
    );
    assert!(lookups_since(&nodes, &before).is_empty());
    let fetches = bob.fetch_until(ARRIVAL, |f| new_letters(f).len() >= 2);
    let mut got = subjects(&fetches);
    got.sort();
    assert_eq!(got, ["cached", "hello"], "{fetches:#?}");

    // Due: the refresh sees the new key and holds it pending, as a lookup at send time did.
    let out = alice.ok(&["--refresh-after", "0", "fetch", "--json"], b"");
    let warnings = out.json()["warnings"].clone();
    assert!(
        warnings.as_array().unwrap().iter().any(|w| {
            let w = w.as_str().unwrap_or("");
            w.contains("sealpost contact accept bob@beta.test")
                && w.contains("signed by the old key")
        }),
        "{out:?}"
    );
    let shown = alice
        .ok(&["contact", "show", "bob@beta.test", "--json"], b"")
        .json();
    assert_eq!(shown["fingerprint"], Value::String(old.clone()), "pin kept");
    assert_eq!(shown["pending"]["fingerprint"], Value::String(new.clone()));
    assert_eq!(shown["pending"]["endorsed"], true, "{shown:#}");

    // Refused until accepted; nothing is queued or kept.
    let out = alice.run(
        &["send", "--to", "bob@beta.test", "--subject", "no"],
        b"x\n",
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.error_line()
            .contains("sealpost contact accept bob@beta.test"),
        "{out:?}"
    );
    let waiting = alice.ok(&["outbox", "list", "--json"], b"").json();
    assert!(waiting.as_array().unwrap().is_empty(), "{waiting:#}");

    alice.ok(
        &["contact", "accept", "bob@beta.test", "--fingerprint", &new],
        b"",
    );
    let before = lines(&nodes);
    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "new key"],
        b"3\n",
    );
    assert!(
        lookups_since(&nodes, &before).is_empty(),
        "the accepted record serves"
    );
    let fetches = bob.fetch_until(ARRIVAL, |f| !new_letters(f).is_empty());
    let letters = new_letters(&fetches);
    assert_eq!(letters[0]["header"]["subject"], "new key");
    assert_eq!(letters[0]["verified"], true, "{:#}", letters[0]);
}
