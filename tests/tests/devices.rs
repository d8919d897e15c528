//! Devices (issue 14 items 1, 2 and 6) with the real CLI against a real node: `device add`
//! on one device and `device join CODE` on another link them in two commands; two and
//! three devices fetching in turn each see every letter exactly once; a device removed
//! mid-stream can fetch no more while the others go on; a wrong, a used and an expired code
//! are clear errors that make no profile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sealpost_tests::{FAST_RELAY, Node, Resolve, User, cli_bin};
use serde_json::Value;

const ARRIVAL: Duration = Duration::from_secs(90);

/// A running `device add --json`: the code it showed, and the process that waits.
struct Adding {
    child: Child,
    offer: Value,
}

impl Adding {
    fn start(user: &User, node: &Node) -> Adding {
        let mut child = Command::new(cli_bin())
            .arg("--profile")
            .arg(user.profile())
            .args(["--resolve", &format!("alpha.test={}", node.url)])
            .args(["device", "add", "--json", "--name", "laptop"])
            .env_remove("SEALPOST_PASSPHRASE")
            .env_remove("SEALPOST_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sealpost device add");
        // The offer is the first JSON value on stdout (pretty-printed over several lines).
        let mut reader = BufReader::new(child.stdout.take().expect("piped"));
        let mut text = String::new();
        let offer = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read device add");
            assert!(n > 0, "device add ended before showing a code");
            text.push_str(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                break v;
            }
        };
        // The rest of stdout (the outcome) is read when the process ends.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(reader.get_mut(), &mut rest);
            rest
        });
        Adding { child, offer }
    }

    fn code(&self) -> String {
        self.offer["code"].as_str().expect("a code").to_string()
    }

    fn uri(&self) -> String {
        self.offer["uri"].as_str().expect("a uri").to_string()
    }

    /// Waits for `device add` to end; its exit code and stderr.
    fn finish(self) -> (i32, String) {
        let out = self.child.wait_with_output().expect("wait for device add");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Links a new device of `existing` through `node`, by the code (or the URI).
fn link(existing: &User, node: &Node, resolve: &Resolve, name: &str, by_uri: bool) -> User {
    let adding = Adding::start(existing, node);
    let new = User::new(&existing.address, resolve);
    let out = if by_uri {
        new.run(&["device", "join", &adding.uri(), "--name", name], b"")
    } else {
        new.run(
            &[
                "device",
                "join",
                &adding.code(),
                "--node",
                &node.url,
                "--name",
                name,
            ],
            b"",
        )
    };
    assert!(out.ok(), "device join: {out:?}");
    assert!(out.stdout.contains("joined alice@alpha.test"), "{out:?}");
    let (code, stderr) = adding.finish();
    assert_eq!(code, 0, "device add: {stderr}");
    assert_eq!(
        new.fingerprint(),
        existing.fingerprint(),
        "the account key moved"
    );
    new
}

/// Subjects of the letters each fetch stored, in order.
fn fetched(u: &User) -> Vec<String> {
    let f = u.ok(&["fetch", "--json"], b"").json();
    f["new"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["header"]["subject"].as_str().unwrap_or("").to_string())
        .collect()
}

fn send(bob: &User, subject: &str) {
    bob.ok(
        &["send", "--to", "alice@alpha.test", "--subject", subject],
        b"hello\n",
    );
}

/// Fetches on each device in turn until device `i` has seen `want[i]` letters; every
/// subject must arrive exactly once per device.
fn fetch_in_turn(devices: &[&User], seen: &mut [BTreeMap<String, usize>], want: &[usize]) {
    let end = std::time::Instant::now() + ARRIVAL;
    loop {
        for (i, d) in devices.iter().enumerate() {
            for s in fetched(d) {
                *seen[i].entry(s).or_default() += 1;
            }
        }
        for (i, s) in seen.iter().enumerate() {
            assert!(
                s.values().all(|n| *n == 1),
                "device {i} saw a letter twice: {s:?}"
            );
        }
        if seen.iter().zip(want).all(|(s, w)| s.len() >= *w) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "not every device got every letter: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_device_sees_every_letter_once_and_a_removed_one_fetches_no_more() {
    let node = Node::start("devices");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let laptop = User::init("alice@alpha.test", &[&node], &resolve);
    let bob = User::init("bob@alpha.test", &[&node], &resolve);

    // A letter waiting before the second device exists reaches both.
    send(&bob, "one");
    let phone = link(&laptop, &node, &resolve, "phone", false);
    let mut seen = vec![BTreeMap::new(), BTreeMap::new()];
    send(&bob, "two");
    fetch_in_turn(&[&laptop, &phone], &mut seen, &[2, 2]);

    // A third device, joined by the URI form; it gets what the others had not acked too.
    send(&bob, "three");
    let tablet = link(&laptop, &node, &resolve, "tablet", true);
    let mut seen3 = vec![seen[1].clone(), BTreeMap::new(), seen[0].clone()];
    send(&bob, "four");
    fetch_in_turn(&[&phone, &tablet, &laptop], &mut seen3, &[4, 2, 4]);
    for s in [&seen3[0], &seen3[2]] {
        assert_eq!(
            s.keys().cloned().collect::<Vec<_>>(),
            ["four", "one", "three", "two"]
        );
    }
    let tablet_saw: Vec<String> = seen3[1].keys().cloned().collect();
    assert_eq!(
        tablet_saw,
        ["four", "three"],
        "what the others had not all acked"
    );

    let list = laptop.ok(&["device", "list", "--json"], b"").json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{list:#}");
    for n in ["laptop", "phone", "tablet"] {
        assert!(names.contains(&n), "{list:#}");
    }
    let tablet_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "tablet")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Removed mid-stream: a letter is waiting, the tablet goes, the others go on.
    send(&bob, "five");
    laptop.ok(&["device", "remove", &tablet_id[..8]], b"");
    let out = tablet.run(&["fetch"], b"");
    assert_ne!(out.code, 0, "a removed device cannot fetch: {out:?}");
    assert!(
        out.stderr.contains("removed") || out.stderr.contains("401"),
        "{out:?}"
    );
    let mut seen2 = vec![BTreeMap::new(), BTreeMap::new()];
    send(&bob, "six");
    fetch_in_turn(&[&laptop, &phone], &mut seen2, &[2, 2]);
    let out = laptop.run(&["device", "remove", &tablet_id], b"");
    assert_eq!(out.code, 1, "already removed: {out:?}");
}

#[test]
fn wrong_used_and_expired_codes_are_clear_errors_that_make_nothing() {
    let mut args = FAST_RELAY.to_vec();
    args.extend(["--set", "devices.link_ttl=2"]);
    let node = Node::start_with("devices-codes", &args);
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let laptop = User::init("alice@alpha.test", &[&node], &resolve);

    // A wrong code: the existing device refuses it and sends nothing; no profile is made.
    let adding = Adding::start(&laptop, &node);
    let code = adding.code();
    let (nameplate, secret) = code.split_at(7);
    let wrong = format!(
        "{nameplate}{}",
        if secret.starts_with('2') {
            secret.replacen('2', "3", 1)
        } else {
            format!("2{}", &secret[1..])
        }
    );
    let stranger = User::new("alice@alpha.test", &resolve);
    let out = stranger.run(&["device", "join", &wrong, "--node", &node.url], b"");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("link_aborted") || out.stderr.contains("wrong code"),
        "{out:?}"
    );
    assert!(!stranger.profile().join("config.json").exists());
    let (status, stderr) = adding.finish();
    assert_ne!(status, 0);
    assert!(stderr.contains("wrong code"), "{stderr}");
    // The spent code does not work with the right secret either.
    let out = stranger.run(&["device", "join", &code, "--node", &node.url], b"");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("link_"), "{out:?}");

    // A used code.
    let adding = Adding::start(&laptop, &node);
    let code = adding.code();
    let phone = User::new("alice@alpha.test", &resolve);
    phone.ok(
        &[
            "device", "join", &code, "--node", &node.url, "--name", "phone",
        ],
        b"",
    );
    assert_eq!(adding.finish().0, 0);
    let again = User::new("alice@alpha.test", &resolve);
    let out = again.run(&["device", "join", &code, "--node", &node.url], b"");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("link_used"), "{out:?}");
    assert!(!again.profile().join("config.json").exists());

    // An expired code (devices.link_ttl = 2 s): `device add` gives up, join is refused.
    let adding = Adding::start(&laptop, &node);
    let code = adding.code();
    let (status, stderr) = adding.finish();
    assert_ne!(status, 0);
    assert!(stderr.contains("expired"), "{stderr}");
    let out = again.run(&["device", "join", &code, "--node", &node.url], b"");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("link_expired"), "{out:?}");

    // A mistyped code is refused before anything is asked.
    let out = again.run(&["device", "join", "12-34", "--node", &node.url], b"");
    assert_eq!(out.code, 1, "{out:?}");
}

/// `seen` of each received letter in `list --json`, by subject.
fn seen_by_subject(u: &User) -> BTreeMap<String, bool> {
    let list = u.ok(&["list", "--json"], b"").json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["header"]["subject"].as_str().unwrap_or("").to_string(),
                m["seen"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_letter_read_on_one_device_shows_as_read_on_the_other() {
    let node = Node::start("devices-read");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let laptop = User::init("alice@alpha.test", &[&node], &resolve);
    let bob = User::init("bob@alpha.test", &[&node], &resolve);
    let phone = link(&laptop, &node, &resolve, "phone", false);
    send(&bob, "read me");
    send(&bob, "leave me");
    let mut seen = vec![BTreeMap::new(), BTreeMap::new()];
    fetch_in_turn(&[&laptop, &phone], &mut seen, &[2, 2]);
    let unread: BTreeMap<String, bool> = [
        ("leave me".to_string(), false),
        ("read me".to_string(), false),
    ]
    .into();
    assert_eq!(seen_by_subject(&phone), unread);

    let list = laptop.ok(&["list", "--json"], b"").json();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["header"]["subject"] == "read me")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    laptop.ok(&["read", &id], b"");
    // The laptop's next fetch shares it; the phone's fetches then learn it.
    laptop.ok(&["fetch"], b"");
    let end = std::time::Instant::now() + ARRIVAL;
    let want: BTreeMap<String, bool> = [
        ("leave me".to_string(), false),
        ("read me".to_string(), true),
    ]
    .into();
    loop {
        let f = phone.ok(&["fetch", "--json"], b"").json();
        assert!(
            f["new"].as_array().is_none_or(|n| n.is_empty()),
            "a state letter is not a letter: {f:#}"
        );
        if seen_by_subject(&phone) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the phone never learnt: {:?}",
            seen_by_subject(&phone)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        seen_by_subject(&laptop),
        want,
        "no state letter among the laptop's letters"
    );
}

#[test]
fn a_letter_one_device_never_fetches_expires_after_the_retention_period() {
    let mut args = FAST_RELAY.to_vec();
    args.extend([
        "--set",
        "devices.retention=3",
        "--set",
        "devices.retention_check=0.2",
    ]);
    let node = Node::start_with("devices-retention", &args);
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let laptop = User::init("alice@alpha.test", &[&node], &resolve);
    let bob = User::init("bob@alpha.test", &[&node], &resolve);
    let phone = link(&laptop, &node, &resolve, "phone", false);
    send(&bob, "fleeting");
    let fetches = laptop.fetch_until(ARRIVAL, |f| {
        f.iter()
            .any(|r| r["new"].as_array().is_some_and(|n| !n.is_empty()))
    });
    assert!(!fetches.is_empty());
    // Wait for the clock (not for readiness) to pass the retention period and a sweep.
    std::thread::sleep(Duration::from_secs(4));
    let f = phone.ok(&["fetch", "--json"], b"").json();
    assert_eq!(
        f["new"].as_array().map(|n| n.len()),
        Some(0),
        "expired before the phone fetched: {f:#}"
    );
    assert!(
        node.log().contains("devices.retention"),
        "the node says why"
    );
}
