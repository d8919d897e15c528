//! One-home delivery end to end (`spec/client.md` §4, `spec/node.md` §Forwarding): the
//! `sealpost` CLI wraps a letter for one home of a two-home recipient, the sender's node
//! makes one delivery, that home forwards the envelope to the other, and the recipient's
//! device fetches the letter once; with the first home down, the client picks the next, and
//! the first gets its copy from the other home when it is back.
//!
//! Every party runs on a loopback address of its own and each node keeps an access record
//! (`testing.access_record`), so the test sees who connected to whom.

use std::time::Duration;

use sealpost_tests::{Node, Resolve, User};
use serde_json::Value;

const ARRIVAL: Duration = Duration::from_secs(90);

fn ip(n: &Node) -> String {
    n.url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string()
}

/// How often `from` asked `node` for `what` (method and path).
fn asked(node: &Node, from: &str, what: &str) -> usize {
    node.access()
        .iter()
        .filter(|(p, w)| p == from && w == what)
        .count()
}

fn count_new(fetches: &[Value]) -> usize {
    fetches
        .iter()
        .map(|f| f["new"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Envelopes listed by the fetches on the node at `url`.
fn listed_on(fetches: &[Value], url: &str) -> u64 {
    fetches
        .iter()
        .flat_map(|f| f["nodes"].as_array().cloned().unwrap_or_default())
        .filter(|n| {
            n["url"]
                .as_str()
                .is_some_and(|u| u.trim_end_matches('/') == url)
        })
        .map(|n| n["listed"].as_u64().unwrap_or(0))
        .sum()
}

fn dump(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{} ({}):\n{:#?}", n.name, ip(n), n.access()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_sender_node_delivers_once_and_the_first_home_forwards_to_the_other() {
    let a = Node::start_on("fwd-alpha", "127.0.0.31");
    let b1 = Node::start_on("fwd-beta1", "127.0.0.32");
    let b2 = Node::start_on("fwd-beta2", "127.0.0.33");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b1.url);
    let alice = User::init_from("alice@alpha.test", Some("127.0.0.41"), &[&a], &resolve);
    let bob = User::init_from("bob@beta.test", Some("127.0.0.42"), &[&b1, &b2], &resolve);

    let sent = alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "two homes"],
        b"one hop\n",
    );
    assert!(
        sent.stdout.contains("sent to bob@beta.test (1 home)"),
        "{sent:?}"
    );

    // Bob's device sees the letter once, found on both homes.
    let fetches = bob.fetch_until(ARRIVAL, |f| {
        count_new(f) >= 1 && listed_on(f, &b1.url) >= 1 && listed_on(f, &b2.url) >= 1
    });
    assert_eq!(count_new(&fetches), 1, "{fetches:#?}");
    let list = bob.ok(&["list", "--json"], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["verified"], true, "{list:#}");
    assert_eq!(
        list[0]["nodes"].as_array().unwrap().len(),
        2,
        "found on both homes: {list:#}"
    );
    // Fetching again brings nothing new (each home's copy was acked).
    let again = bob.ok(&["fetch", "--json"], b"").json();
    assert_eq!(count_new(std::slice::from_ref(&again)), 0, "{again:#}");

    // Alice's node made one delivery, to bob's first home; that home forwarded it to the
    // other; alice's node never asked the second home for anything.
    let all = dump(&[&a, &b1, &b2]);
    let deliver = "POST /v1/deliver";
    assert_eq!(asked(&b1, &ip(&a), deliver), 1, "{all}");
    assert_eq!(asked(&b2, &ip(&a), deliver), 0, "{all}");
    assert!(
        !b2.access().iter().any(|(p, _)| p == &ip(&a)),
        "alice's node never connected to bob's second home\n{all}"
    );
    assert_eq!(asked(&b2, &ip(&b1), "POST /v1/forward"), 1, "{all}");
    assert_eq!(asked(&b1, &ip(&b2), "POST /v1/forward"), 0, "{all}");
}

#[test]
fn with_the_first_home_down_the_client_picks_the_next_and_the_first_gets_its_copy_later() {
    let a = Node::start_on("fwd-down-alpha", "127.0.0.34");
    let mut b1 = Node::start_on("fwd-down-beta1", "127.0.0.35");
    let b2 = Node::start_on("fwd-down-beta2", "127.0.0.36");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b1.url);
    let alice = User::init_from("alice@alpha.test", Some("127.0.0.43"), &[&a], &resolve);
    let bob = User::init_from("bob@beta.test", Some("127.0.0.44"), &[&b1, &b2], &resolve);
    // Alice knows bob (his record and both homes) before his first home goes down.
    alice.ok(&["contact", "add", "bob@beta.test"], b"");

    b1.stop();
    alice.ok(
        &[
            "send",
            "--to",
            "bob@beta.test",
            "--subject",
            "first home down",
        ],
        b"via the second\n",
    );
    let fetches = bob.fetch_until(ARRIVAL, |f| count_new(f) >= 1);
    assert_eq!(count_new(&fetches), 1, "{fetches:#?}");
    let all = dump(&[&a, &b2]);
    assert_eq!(asked(&b2, &ip(&a), "POST /v1/deliver"), 1, "{all}");

    // Back: the second home's forward reaches it; bob's device finds the copy there, acks
    // it, and does not show it again. Alice's node never delivered to it.
    b1.restart();
    let later = bob.fetch_until(ARRIVAL, |f| listed_on(f, &b1.url) >= 1);
    assert_eq!(count_new(&later), 0, "{later:#?}");
    let list = bob.ok(&["list", "--json"], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["nodes"].as_array().unwrap().len(), 2, "{list:#}");
    let all = dump(&[&a, &b1, &b2]);
    assert_eq!(asked(&b1, &ip(&b2), "POST /v1/forward"), 1, "{all}");
    assert_eq!(asked(&b1, &ip(&a), "POST /v1/deliver"), 0, "{all}");
}
