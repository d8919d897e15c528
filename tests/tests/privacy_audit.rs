//! The metadata audit (issue [demo]): after varied traffic across three nodes, every byte
//! each node stored (its whole RocksDB, read back through `sealpost-node inspect`, plus the
//! raw files of its data directory: WAL, SSTs, logs) is searched for what that node must not
//! learn (spec/protocol.md §1). The README's "What a node learns" table is checked against
//! what this test observes, so the two cannot drift apart.
//!
//! Also here: federation in both directions with many letters, arrival order, and size
//! padding (letters of 1 B and 3 KiB are stored as envelopes of one size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sealpost_proto::identity::cert_from_bytes;
use sealpost_tests::{Node, Resolve, User, node_bin, pseudo_random_bytes};

/// Something a node might hold, as text and as raw bytes.
#[derive(Clone)]
struct Needle {
    name: String,
    bytes: Vec<Vec<u8>>,
}

impl Needle {
    fn text(name: &str, t: &str) -> Needle {
        Needle {
            name: name.into(),
            bytes: vec![t.as_bytes().to_vec()],
        }
    }
}

/// What identifies a user: address, key fingerprints and key ids (as hex text in both cases
/// and as raw bytes), and their mailbox ids (hex and raw).
fn identity_needles(u: &User, label: &str) -> (Needle, Needle, Needle) {
    let armored = u.ok(&["export-key"], b"").stdout;
    let cert = cert_from_bytes(armored.as_bytes()).unwrap();
    let mut key_bytes = Vec::new();
    for k in cert.keys() {
        let fp = k.key().fingerprint();
        key_bytes.push(fp.as_bytes().to_vec());
        key_bytes.push(fp.to_hex().into_bytes());
        key_bytes.push(fp.to_hex().to_ascii_lowercase().into_bytes());
        let id = k.key().keyid();
        key_bytes.push(id.as_bytes().to_vec());
        key_bytes.push(id.to_hex().into_bytes());
    }
    let who = u.ok(&["whoami", "--json"], b"").json();
    let mut mb = Vec::new();
    for h in who["homes"].as_array().unwrap() {
        let hex = h["mailbox"].as_str().unwrap().to_string();
        mb.push(hex::decode(&hex).unwrap());
        mb.push(hex.into_bytes());
    }
    (
        Needle::text(&format!("{label}'s address"), &u.address),
        Needle {
            name: format!("{label}'s key"),
            bytes: key_bytes,
        },
        Needle {
            name: format!("{label}'s mailbox ids"),
            bytes: mb,
        },
    )
}

fn data_dir(n: &Node) -> PathBuf {
    n.config_path().parent().unwrap().join("data")
}

/// Which needles occur in what the node holds: logically (every key and value of every
/// column family, via `sealpost-node inspect`) or in any raw file of its directory (the
/// data directory and its log).
fn found(n: &Node, needles: &[Needle]) -> BTreeMap<String, String> {
    let mut cmd = Command::new(node_bin());
    cmd.arg("inspect").arg("--config").arg(n.config_path());
    let mut names = Vec::new();
    for (i, nd) in needles.iter().enumerate() {
        for b in &nd.bytes {
            cmd.arg("--find-hex").arg(hex::encode(b));
            names.push((i, format!("hex {}", hex::encode_upper(b))));
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    let mut hits: BTreeMap<String, String> = BTreeMap::new();
    for (i, name) in names {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line for {name} in\n{report}"));
        if let Some(place) = line.split(": stored in ").nth(1) {
            hits.insert(needles[i].name.clone(), format!("database ({place})"));
        }
    }
    let mut files = Vec::new();
    collect_files(&data_dir(n), &mut files);
    files.push(n.log_path());
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for nd in needles {
            if nd
                .bytes
                .iter()
                .any(|b| !b.is_empty() && bytes.windows(b.len()).any(|w| w == b.as_slice()))
            {
                hits.entry(nd.name.clone())
                    .or_insert_with(|| format!("file {}", f.display()));
            }
        }
    }
    hits
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn new_count(seen: &[serde_json::Value]) -> usize {
    seen.iter()
        .map(|f| f["new"].as_array().map_or(0, Vec::len))
        .sum()
}

/// A yes/no table of the README between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
/// row name → (first column, second column), each cell starting with `yes` or `no`.
fn readme_yes_no_table(name: &str) -> Vec<(String, bool, bool)> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find(&format!("<!-- {name}:begin -->"))
        .unwrap_or_else(|| panic!("README has the {name} table"));
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("README {name} table ends"));
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1) // the header row; the `|---|` row does not start with "| "
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let yes = |c: &str| match c.split_whitespace().next() {
                Some("yes") => true,
                Some("no") => false,
                other => panic!("README {name} cell {other:?} in {l}"),
            };
            (cells[0].to_string(), yes(cells[1]), yes(cells[2]))
        })
        .collect()
}

/// The README's audit table: row name → (sender's home nodes, recipient's home node).
fn readme_table() -> Vec<(String, bool, bool)> {
    readme_yes_no_table("audit")
}

#[test]
fn nodes_store_only_what_they_may_learn() {
    let a = Node::start("alpha");
    let b = Node::start("beta");
    let c = Node::start("gamma");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    resolve.add("gamma.test", &c.url);
    // alice: homes alpha + beta; bob: gamma; carol: beta.
    let alice = User::init("alice@alpha.test", &[&a, &b], &resolve);
    let bob = User::init("bob@gamma.test", &[&c], &resolve);
    let carol = User::init("carol@beta.test", &[&b], &resolve);

    // --- size padding: bob → carol, 1 B and 3 KiB bodies, measured on carol's node ---
    bob.ok(
        &["send", "--to", "carol@beta.test", "--subject", "p1"],
        b"x",
    );
    bob.ok(
        &["send", "--to", "carol@beta.test", "--subject", "p2"],
        &vec![b'y'; 3 * 1024],
    );
    let sizes = wait_for_envelope_sizes(&b, 2);
    assert_eq!(
        sizes.len(),
        1,
        "1 B and 3 KiB letters must be stored at one size: {sizes:?}"
    );
    carol.fetch_until(Duration::from_secs(90), |s| new_count(s) >= 2);
    let carol_list = carol.ok(&["list", "--json"], b"").json();
    let sealed_sizes: Vec<u64> = carol_list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sealed_sizes,
        [4096, 4096],
        "sealed letters are one bucket: {carol_list}"
    );

    // --- varied traffic, both directions ---
    let secret_attachment = pseudo_random_bytes(30_000, 99);
    let att = alice.scratch().join("plans.bin");
    std::fs::write(&att, &secret_attachment).unwrap();
    let mut contents = Vec::new();
    for i in 0..6 {
        let subject = format!("Audit subject alice to bob {i}");
        let body = format!("Audit body: the launch code is {i}{i}{i}-alpha");
        let mut args = vec!["send", "--to", "bob@gamma.test", "--subject", &subject];
        if i == 0 {
            args.extend(["--attach", att.to_str().unwrap()]);
        }
        alice.ok(&args, body.as_bytes());
        contents.push(subject);
        contents.push(body);
    }
    bob.fetch_until(Duration::from_secs(90), |s| new_count(s) >= 6);
    // Arrival order: the list is ordered by when letters arrived, and every one came once.
    let list = bob.ok(&["list", "--json"], b"").json();
    let from_alice: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["header"]["from"] == "alice@alpha.test")
        .collect();
    assert_eq!(from_alice.len(), 6, "{list}");
    let arrivals: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["received_at"].as_u64().unwrap())
        .collect();
    assert!(
        arrivals.windows(2).all(|w| w[0] <= w[1]) || arrivals.windows(2).all(|w| w[0] >= w[1]),
        "list ordered by arrival: {arrivals:?}"
    );
    for i in 0..3 {
        let subject = format!("Audit reply bob to alice {i}");
        let body = format!("Audit reply body: meet at pier {i}{i}");
        bob.ok(
            &["send", "--to", "alice@alpha.test", "--subject", &subject],
            body.as_bytes(),
        );
        contents.push(subject);
        contents.push(body);
    }
    alice.fetch_until(Duration::from_secs(90), |s| new_count(s) >= 3);
    let alice_list = alice.ok(&["list", "--json"], b"").json();
    assert_eq!(
        alice_list.as_array().unwrap().len(),
        3,
        "dedupe across alice's two homes: {alice_list}"
    );

    // --- the audit ---
    let (alice_addr, alice_key, alice_mb) = identity_needles(&alice, "alice");
    let (bob_addr, bob_key, bob_mb) = identity_needles(&bob, "bob");
    let mut content_needles: Vec<Needle> = contents
        .iter()
        .map(|c| Needle::text("letter content", c))
        .collect();
    content_needles.push(Needle {
        name: "attachment".into(),
        bytes: vec![secret_attachment[1000..1064].to_vec()],
    });

    // Sender's home nodes for alice → bob: alpha and beta. Recipient's: gamma.
    let mut all = vec![
        alice_addr.clone(),
        alice_key.clone(),
        alice_mb.clone(),
        bob_addr.clone(),
        bob_key.clone(),
        bob_mb.clone(),
    ];
    all.extend(content_needles.iter().cloned());
    let at = |n: &Node| found(n, &all);
    let (fa, fb, fc) = (at(&a), at(&b), at(&c));
    for (node, f) in [("alpha", &fa), ("beta", &fb), ("gamma", &fc)] {
        for nd in &content_needles {
            assert!(
                !f.contains_key(&nd.name),
                "node {node} holds {} ({:?})",
                nd.name,
                f.get(&nd.name)
            );
        }
    }
    let observed = |row: &str| -> (bool, bool) {
        let key = match row {
            "sender's address" => &alice_addr.name,
            "sender's key (fingerprint, key ids)" => &alice_key.name,
            "recipient's address" => &bob_addr.name,
            "recipient's key (fingerprint, key ids)" => &bob_key.name,
            "recipient's mailbox id" => &bob_mb.name,
            "subject, body, attachments" => {
                let any = |f: &BTreeMap<String, String>| {
                    content_needles.iter().any(|n| f.contains_key(&n.name))
                };
                return (any(&fa) || any(&fb), any(&fc));
            }
            other => panic!("README audit row {other:?} has no check"),
        };
        // The sender's side is alpha *and* beta: both must agree with the table.
        assert_eq!(
            fa.contains_key(key),
            fb.contains_key(key),
            "alpha and beta differ on {row}: {fa:?} / {fb:?}"
        );
        (fa.contains_key(key), fc.contains_key(key))
    };
    let table = readme_table();
    assert!(
        table.len() >= 6,
        "README audit table has every row: {table:?}"
    );
    for (row, sender_side, recipient_side) in table {
        let (s, r) = observed(&row);
        assert_eq!(
            (s, r),
            (sender_side, recipient_side),
            "README says {row}: sender's nodes {sender_side}, recipient's node {recipient_side}; observed {s}, {r}\nalpha {fa:?}\nbeta {fb:?}\ngamma {fc:?}"
        );
    }
}

/// Polls `sealpost-node inspect` until the node stores `count` envelopes; returns the
/// distinct envelope sizes.
fn wait_for_envelope_sizes(n: &Node, count: u64) -> BTreeMap<u64, u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = Command::new(node_bin())
            .arg("inspect")
            .arg("--config")
            .arg(n.config_path())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let sizes: BTreeMap<u64, u64> = report
            .lines()
            .filter_map(|l| l.strip_prefix("envelope size "))
            .filter_map(|l| {
                let (size, n) = l.split_once(" bytes: ")?;
                Some((size.parse().ok()?, n.trim().parse().ok()?))
            })
            .collect();
        if sizes.values().sum::<u64>() >= count {
            return sizes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node never stored {count} envelopes:\n{report}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The README's "Who connects to whom" table: row (who connects) → (to the sender's home
/// nodes, to the recipient's home nodes).
fn readme_connections() -> Vec<(String, bool, bool)> {
    readme_yes_no_table("connections")
}

/// Every party on a loopback address of its own; each node keeps an access record of who
/// connected and what they asked for. After alice (homes alpha and beta) writes to bob
/// (homes gamma and delta) for the first time, which needs a lookup of bob's record at
/// gamma, the README's "Who connects to whom" table is checked cell by cell, and: neither
/// of bob's nodes saw alice's device, neither of alice's homes saw bob's address or mailbox
/// id, in what was asked of them included, and alice's homes delivered once, to one of bob's
/// homes, which forwarded the envelope to the other (one-home delivery).
#[test]
fn who_connects_to_whom() {
    const ALICE_DEVICE: &str = "127.0.0.12";
    const BOB_DEVICE: &str = "127.0.0.14";
    let a = Node::start_on("alpha", "127.0.0.2");
    let b = Node::start_on("beta", "127.0.0.3");
    let c = Node::start_on("gamma", "127.0.0.4");
    let d = Node::start_on("delta", "127.0.0.8");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    resolve.add("gamma.test", &c.url);
    let alice = User::init_from("alice@alpha.test", Some(ALICE_DEVICE), &[&a, &b], &resolve);
    let bob = User::init_from("bob@gamma.test", Some(BOB_DEVICE), &[&c, &d], &resolve);

    alice.ok(
        &[
            "send",
            "--to",
            "bob@gamma.test",
            "--subject",
            "first contact",
        ],
        b"hello bob",
    );
    // Until both of bob's homes have it (one of them by forwarding).
    let listed = |f: &[serde_json::Value]| -> usize {
        f.iter()
            .flat_map(|x| x["nodes"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["listed"].as_u64().unwrap_or(0) > 0)
            .filter_map(|n| n["url"].as_str().map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    bob.fetch_until(Duration::from_secs(90), |s| {
        new_count(s) >= 1 && listed(s) >= 2
    });
    let list = bob.ok(&["list", "--json"], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    let (fa, fb, fc, fd) = (a.access(), b.access(), c.access(), d.access());
    let ip = |n: &Node| {
        n.url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    let (ia, ib, ic, id) = (ip(&a), ip(&b), ip(&c), ip(&d));
    let peers =
        |f: &[(String, String)]| -> Vec<String> { f.iter().map(|(p, _)| p.clone()).collect() };
    // Whether one of `from` connected to the node at `me` whose record is `f` (a node's
    // connections to itself do not count).
    let connected = |from: &[&str], me: &str, f: &[(String, String)]| {
        f.iter()
            .any(|(p, _)| p.as_str() != me && from.contains(&p.as_str()))
    };
    let dump = format!(
        "alpha ({ia}):\n{fa:#?}\nbeta ({ib}):\n{fb:#?}\ngamma ({ic}):\n{fc:#?}\ndelta ({id}):\n{fd:#?}"
    );

    // The lookup went through alice's home, encrypted: gamma opened it, from alpha or beta.
    assert!(
        fc.iter()
            .any(|(p, w)| p == "-" && w == "oblivious GET /v1/records/bob@gamma.test"),
        "gamma answered an oblivious lookup of bob's record\n{dump}"
    );
    assert!(
        fa.iter()
            .chain(&fb)
            .any(|(p, w)| p == ALICE_DEVICE && w.starts_with("POST /v1/relay/ohttp for ")),
        "alice's device asked a home to relay\n{dump}"
    );
    for (name, f) in [("gamma", &fc), ("delta", &fd)] {
        assert!(
            !peers(f).iter().any(|p| p == ALICE_DEVICE),
            "{name} (bob's node) must never accept a connection from alice's device\n{dump}"
        );
    }
    // One delivery from alice's homes, to one of bob's: her nodes see one destination node.
    let from_alice_homes = |f: &[(String, String)], what: &str| {
        f.iter()
            .filter(|(p, w)| (p == &ia || p == &ib) && w == what)
            .count()
    };
    let deliveries = (
        from_alice_homes(&fc, "POST /v1/deliver"),
        from_alice_homes(&fd, "POST /v1/deliver"),
    );
    assert!(
        deliveries == (1, 0) || deliveries == (0, 1),
        "alice's homes delivered once, to one of bob's homes: {deliveries:?}\n{dump}"
    );
    for f in [&fc, &fd] {
        assert_eq!(
            from_alice_homes(f, "POST /v1/forward"),
            0,
            "alice's homes never forward to bob's\n{dump}"
        );
    }
    assert!(
        fc.iter().any(|(p, w)| p == &id && w == "POST /v1/forward")
            || fd.iter().any(|(p, w)| p == &ic && w == "POST /v1/forward"),
        "one of bob's homes forwarded the envelope to the other\n{dump}"
    );
    let who = bob.ok(&["whoami", "--json"], b"").json();
    let bob_mailboxes: Vec<String> = who["homes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["mailbox"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert_eq!(bob_mailboxes.len(), 2, "{who:#}");
    for (name, f) in [("alpha", &fa), ("beta", &fb)] {
        for (peer, what) in f.iter() {
            let what = what.to_ascii_lowercase();
            assert!(
                !what.contains("bob") && !bob_mailboxes.iter().any(|m| what.contains(m)),
                "{name} saw bob's address or mailbox id: {peer} {what}\n{dump}"
            );
            assert_ne!(peer, BOB_DEVICE, "{name} saw bob's device\n{dump}");
        }
    }

    let observed = |row: &str| -> (bool, bool) {
        let from: Vec<&str> = match row {
            "sender's device" => vec![ALICE_DEVICE],
            "recipient's device" => vec![BOB_DEVICE],
            "sender's home nodes" => vec![ia.as_str(), ib.as_str()],
            "recipient's home nodes" => vec![ic.as_str(), id.as_str()],
            other => panic!("README connections row {other:?} has no check"),
        };
        (
            connected(&from, &ia, &fa) || connected(&from, &ib, &fb),
            connected(&from, &ic, &fc) || connected(&from, &id, &fd),
        )
    };
    let table = readme_connections();
    assert_eq!(
        table.len(),
        4,
        "README connections table has every row: {table:?}"
    );
    for (row, to_sender, to_recipient) in table {
        assert_eq!(
            observed(&row),
            (to_sender, to_recipient),
            "README says {row} connects to the sender's nodes: {to_sender}, to the recipient's nodes: {to_recipient}\n{dump}"
        );
    }
}

/// With the sender's only home down, a letter to a new contact waits in the outbox for
/// its lookup: the device never asks the recipient's node directly (its access record
/// shows no connection from the device, then or later). When the home is back, the next
/// flush looks the recipient up through it and the letter arrives.
#[test]
fn with_every_home_down_the_letter_waits_and_no_other_node_is_asked() {
    const CAROL_DEVICE: &str = "127.0.0.22";
    let mut d = Node::start_on("down-delta", "127.0.0.5");
    let e = Node::start_on("down-epsilon", "127.0.0.6");
    let mut resolve = Resolve::default();
    resolve.add("delta.test", &d.url);
    resolve.add("epsilon.test", &e.url);
    let carol = User::init_from("carol@delta.test", Some(CAROL_DEVICE), &[&d], &resolve);
    let dave = User::init_from("dave@epsilon.test", Some("127.0.0.23"), &[&e], &resolve);

    d.stop();
    let out = carol.run(
        &["send", "--to", "dave@epsilon.test", "--subject", "Queued"],
        b"Patience.\n",
    );
    assert_eq!(out.code, 2, "{out:?}");
    let line = out.error_line();
    assert!(
        line.contains("letter saved, will be sent when") && line.contains("outbox"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("asked directly"), "{out:?}");
    let waiting = carol.ok(&["outbox", "list", "--json"], b"").json();
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting:#}");
    assert_eq!(waiting[0]["waiting_for"], "lookups", "{waiting:#}");
    let from_carol = |n: &Node| -> Vec<String> {
        n.access()
            .into_iter()
            .filter(|(p, _)| p == CAROL_DEVICE)
            .map(|(_, what)| what)
            .collect()
    };
    assert!(from_carol(&e).is_empty(), "{:#?}", e.access());

    d.restart();
    let out = carol.ok(&["outbox", "flush"], b"");
    assert!(out.stdout.contains("submitted 1, waiting 0"), "{out:?}");
    dave.fetch_until(Duration::from_secs(90), |s| new_count(s) >= 1);
    assert!(from_carol(&e).is_empty(), "{:#?}", e.access());
    assert!(
        e.access()
            .iter()
            .any(|(p, w)| p == "-" && w == "oblivious GET /v1/records/dave@epsilon.test"),
        "{:#?}",
        e.access()
    );
    assert!(
        carol
            .ok(&["outbox", "list", "--json"], b"")
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
