//! Sent copies (issue 14 item 3) with the real CLI against real nodes: a letter sent on one
//! device of an account shows in the sent folder of another device of it, attachments and
//! all, and never among the letters received.

use std::time::Duration;

use sealpost_tests::{Node, Resolve, User, pseudo_random_bytes};
use serde_json::Value;

/// Relay between nodes is asynchronous; this is how long a letter may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(90);

fn items<'a>(fetches: &'a [Value], key: &str) -> Vec<&'a Value> {
    fetches
        .iter()
        .flat_map(|f| f[key].as_array().into_iter().flatten())
        .collect()
}

fn list(u: &User, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    u.ok(&all, b"").json().as_array().cloned().unwrap()
}

#[test]
fn a_letter_sent_on_one_device_is_in_the_sent_folder_of_the_other() {
    let (a, b) = (Node::start("sent-a"), Node::start("sent-b"));
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &a.url);
    resolve.add("beta.test", &b.url);
    let laptop = User::init("alice@alpha.test", &[&a], &resolve);
    let bob = User::init("bob@beta.test", &[&b], &resolve);
    // A second device of alice's: the same key, the same home (so the same mailbox).
    let secret = laptop.ok(&["export-key", "--secret"], b"").stdout;
    let phone = User::new("alice@alpha.test", &resolve);
    let key_file = phone.scratch().join("alice.asc");
    std::fs::write(&key_file, secret).unwrap();
    phone.ok(
        &[
            "init",
            "alice@alpha.test",
            "--node",
            &a.url,
            "--import-key",
            key_file.to_str().unwrap(),
        ],
        b"",
    );

    let data = pseudo_random_bytes(200_000, 14);
    let att = laptop.scratch().join("figures.bin");
    std::fs::write(&att, &data).unwrap();
    laptop.ok(
        &[
            "send",
            "--to",
            "bob@beta.test",
            "--subject",
            "Figures",
            "--attach",
            att.to_str().unwrap(),
        ],
        b"The figures are attached.\n",
    );

    // On the sending device at once: in the sent folder, not among the received letters.
    let sent = list(&laptop, &["--sent"]);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["folder"], "sent");
    assert_eq!(sent[0]["header"]["to"][0], "bob@beta.test");
    assert!(
        list(&laptop, &[]).is_empty(),
        "the inbox holds no sent letter"
    );
    let line = laptop.ok(&["list", "--sent"], b"").stdout;
    assert!(line.contains("to bob@beta.test"), "{line}");

    // The other device fetches it from the shared mailbox: a sent copy, not a new letter.
    let fetches = phone.fetch_until(ARRIVAL, |f| !items(f, "sent").is_empty());
    assert!(items(&fetches, "new").is_empty(), "{fetches:#?}");
    let fetched = items(&fetches, "sent");
    assert_eq!(fetched.len(), 1, "{fetches:#?}");
    assert_eq!(fetched[0]["folder"], "sent");
    assert_eq!(fetched[0]["verified"], true);
    assert_eq!(fetched[0]["header"]["subject"], "Figures");
    assert_eq!(
        fetched[0]["header"]["message_id"],
        sent[0]["header"]["message_id"]
    );
    let on_phone = list(&phone, &["--sent"]);
    assert_eq!(on_phone.len(), 1, "{on_phone:#?}");
    assert!(list(&phone, &[]).is_empty());
    assert_eq!(list(&phone, &["--all"]).len(), 1);
    let id = on_phone[0]["id"].as_str().unwrap().to_string();
    let save = phone.scratch().join("saved");
    std::fs::create_dir_all(&save).unwrap();
    let read = phone
        .ok(
            &[
                "read",
                &id,
                "--save-attachments",
                save.to_str().unwrap(),
                "--json",
            ],
            b"",
        )
        .json();
    assert!(
        read["body"]
            .as_str()
            .unwrap()
            .contains("The figures are attached."),
        "{read:#}"
    );
    let saved = read["saved_attachments"][0].as_str().unwrap();
    assert!(
        std::fs::read(saved).unwrap() == data,
        "the attachment came with the sent copy"
    );

    // Bob gets the letter itself, once, as a received letter.
    let fetches = bob.fetch_until(ARRIVAL, |f| !items(f, "new").is_empty());
    let new = items(&fetches, "new");
    assert_eq!(new.len(), 1, "{fetches:#?}");
    assert_eq!(new[0]["folder"], "inbox");
    assert!(items(&fetches, "sent").is_empty());

    // The sending device's next fetch adds nothing: its copy is stored already.
    let again = laptop.ok(&["fetch", "--json"], b"").json();
    assert!(again["new"].as_array().unwrap().is_empty(), "{again:#}");
    assert!(again["sent"].as_array().unwrap().is_empty(), "{again:#}");
    assert_eq!(list(&laptop, &["--sent"]).len(), 1);
}
