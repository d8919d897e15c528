//! Devices over the HTTP API (`spec/api.md` §Devices, §Links), on an in-process node: each
//! device signs in with its own key and sees every envelope until it acknowledges it; an
//! envelope goes when every device has; a removed device cannot fetch; the retention period
//! deletes what a device never acknowledged; a link drop runs once, in order, and says why
//! it refuses (unknown, used, expired, aborted, too large, too many, rate limited); a node
//! killed (SIGKILL) while two devices acknowledge loses neither an ack it answered nor a
//! letter a device still owes.

mod common;
mod procnode;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ed25519_dalek::SigningKey;
use procnode::ProcNode;
use reqwest::{Method, StatusCode};
use sealpost_proto::{DeviceId, MailboxId, NodeUrl};
use sealpost_testkit::api::Api as Kit;

struct Mailbox {
    url: NodeUrl,
    mailbox: MailboxId,
    from: User,
    to: User,
    cert: sealpost_proto::openpgp::Cert,
    peer: SigningKey,
}

impl Mailbox {
    async fn new(api: &Api, url: &NodeUrl) -> Mailbox {
        let to = User::new("bob@beta.test");
        let mailbox = api.mailbox(url, &to).await;
        let (_, cert) = api.descriptor(url).await;
        Mailbox {
            url: url.clone(),
            mailbox,
            from: User::new("alice@alpha.test"),
            to,
            cert,
            peer: peer_key(),
        }
    }

    /// Delivers one envelope as a peer node would; answers its id.
    async fn deliver(&self, api: &Api) -> String {
        let env = envelope(&self.from, &self.to, self.mailbox, "hi", "body");
        let a = api
            .deliver(
                &self.url,
                &self.peer,
                hop(&env, &self.url, &self.cert).payload,
            )
            .await;
        assert!(a.0.is_success(), "deliver: {a:?}");
        env.id.to_hex()
    }
}

fn device_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}

fn id_of(k: &SigningKey) -> DeviceId {
    DeviceId::of_key(&k.verifying_key().to_bytes())
}

async fn device_token(kit: &Kit, m: &Mailbox, key: &SigningKey) -> String {
    let a = kit.device_token(&m.url, &m.mailbox, key).await.unwrap();
    assert_eq!(a.0, StatusCode::OK, "device token: {a:?}");
    a.1["token"].as_str().unwrap().to_string()
}

async fn seqs(api: &Api, m: &Mailbox, token: &str) -> Vec<u64> {
    api.items(&m.url, &m.mailbox, token)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_gets_every_envelope_and_a_removed_one_cannot_fetch() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|c| c.devices.max_per_account = 3).await;
    let m = Mailbox::new(&api, &node.url).await;
    let account = api.token(&m.url, &m.mailbox, &m.to.keys).await;
    m.deliver(&api).await;
    assert_eq!(seqs(&api, &m, &account).await, vec![1]);

    // The account key registers the first device key, which takes its place.
    let (k1, k2) = (device_key(), device_key());
    let a = kit
        .add_device(&m.url, Some(&account), &k1, "laptop")
        .await
        .unwrap();
    assert_eq!(a.0, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.1["id"], id_of(&k1).to_hex());
    let a = api.list(&m.url, &m.mailbox, Some(&account)).await;
    assert_eq!(
        a.0,
        StatusCode::UNAUTHORIZED,
        "the account key's session ended: {a:?}"
    );
    let c = api.challenge(&m.url, &m.mailbox).await;
    let a = api
        .answer_challenge(
            &m.url,
            &m.url,
            &m.mailbox,
            c.1["nonce"].as_str().unwrap(),
            &m.to.keys,
        )
        .await;
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::UNAUTHORIZED, "device_key_required"),
        "{a:?}"
    );
    let t1 = device_token(&kit, &m, &k1).await;
    let a = kit
        .add_device(&m.url, Some(&t1), &k2, "phone")
        .await
        .unwrap();
    assert_eq!(a.0, StatusCode::CREATED, "{a:?}");
    let a = kit
        .add_device(&m.url, Some(&t1), &k2, "phone")
        .await
        .unwrap();
    assert_eq!(
        (a.0, a.1["created"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let t2 = device_token(&kit, &m, &k2).await;
    // A device key that is not registered, and a signature by another key, get no token.
    let stranger = device_key();
    let a = kit
        .device_token(&m.url, &m.mailbox, &stranger)
        .await
        .unwrap();
    assert_eq!(a.0, StatusCode::UNAUTHORIZED, "{a:?}");

    // Both see the envelope; it goes when both acked it.
    assert_eq!(seqs(&api, &m, &t1).await, vec![1]);
    assert_eq!(seqs(&api, &m, &t2).await, vec![1]);
    assert_eq!(
        api.ack(&m.url, &m.mailbox, 1, Some(&t1)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(seqs(&api, &m, &t1).await, Vec::<u64>::new());
    assert_eq!(seqs(&api, &m, &t2).await, vec![1]);
    let got = api.get(&m.url, &m.mailbox, 1, Some(&t2)).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        api.ack(&m.url, &m.mailbox, 1, Some(&t2)).await.0,
        StatusCode::NO_CONTENT
    );
    let got = api.get(&m.url, &m.mailbox, 1, Some(&t1)).await;
    assert_eq!(
        got.status(),
        StatusCode::NOT_FOUND,
        "deleted once both acked"
    );

    // Removing a device releases what only it owed, and ends its sessions.
    m.deliver(&api).await;
    m.deliver(&api).await;
    assert_eq!(
        api.ack(&m.url, &m.mailbox, 2, Some(&t1)).await.0,
        StatusCode::NO_CONTENT
    );
    let a = kit
        .remove_device(&m.url, Some(&t1), &id_of(&k2))
        .await
        .unwrap();
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");
    let a = api.list(&m.url, &m.mailbox, Some(&t2)).await;
    assert_eq!(a.0, StatusCode::UNAUTHORIZED, "{a:?}");
    let a = kit.device_token(&m.url, &m.mailbox, &k2).await.unwrap();
    assert_eq!(
        a.0,
        StatusCode::UNAUTHORIZED,
        "a removed device signs in no more: {a:?}"
    );
    assert_eq!(seqs(&api, &m, &t1).await, vec![3]);
    let got = api.get(&m.url, &m.mailbox, 2, Some(&t1)).await;
    assert_eq!(
        got.status(),
        StatusCode::NOT_FOUND,
        "released by the removal"
    );

    // The last device stays; unknown ids say so; the list names the caller.
    let a = kit
        .remove_device(&m.url, Some(&t1), &id_of(&k1))
        .await
        .unwrap();
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::CONFLICT, "last_device"),
        "{a:?}"
    );
    let a = kit
        .remove_device(&m.url, Some(&t1), &id_of(&k2))
        .await
        .unwrap();
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::NOT_FOUND, "unknown_device"),
        "{a:?}"
    );
    let a = kit.devices(&m.url, Some(&t1)).await.unwrap();
    assert_eq!(a.0, StatusCode::OK);
    assert_eq!(a.1["you"], id_of(&k1).to_hex());
    let names: Vec<&str> = a.1["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["laptop"]);

    // At most `devices.max_per_account`.
    for _ in 0..2 {
        let a = kit
            .add_device(&m.url, Some(&t1), &device_key(), "x")
            .await
            .unwrap();
        assert_eq!(a.0, StatusCode::CREATED, "{a:?}");
    }
    let a = kit
        .add_device(&m.url, Some(&t1), &device_key(), "x")
        .await
        .unwrap();
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::CONFLICT, "too_many_devices"),
        "{a:?}"
    );
    let a = kit
        .add_device(&m.url, Some(&t1), &device_key(), "")
        .await
        .unwrap();
    assert_eq!(a.0, StatusCode::BAD_REQUEST, "an empty name: {a:?}");
    assert_eq!(
        kit.devices(&m.url, None).await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_what_a_device_never_acknowledged() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|c| {
        c.devices.retention = sealpost_server::config::Secs::from_secs(1);
        c.devices.retention_check =
            sealpost_server::config::Secs(std::time::Duration::from_millis(200));
    })
    .await;
    let m = Mailbox::new(&api, &node.url).await;
    let account = api.token(&m.url, &m.mailbox, &m.to.keys).await;
    let (k1, k2) = (device_key(), device_key());
    kit.add_device(&m.url, Some(&account), &k1, "one")
        .await
        .unwrap();
    let t1 = device_token(&kit, &m, &k1).await;
    kit.add_device(&m.url, Some(&t1), &k2, "two").await.unwrap();
    m.deliver(&api).await;
    assert_eq!(
        api.ack(&m.url, &m.mailbox, 1, Some(&t1)).await.0,
        StatusCode::NO_CONTENT
    );
    let t2 = device_token(&kit, &m, &k2).await;
    assert_eq!(seqs(&api, &m, &t2).await, vec![1]);
    eventually("the envelope expires", || async {
        seqs(&api, &m, &t2).await.is_empty().then_some(())
    })
    .await;
    let got = api.get(&m.url, &m.mailbox, 1, Some(&t2)).await;
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_drop_runs_once_in_order_and_says_why_not() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|c| {
        c.devices.link_ttl = sealpost_server::config::Secs::from_secs(2);
        c.devices.link_max_bytes = 1024;
    })
    .await;
    let m = Mailbox::new(&api, &node.url).await;
    let url = m.url.clone();
    let t = api.token(&url, &m.mailbox, &m.to.keys).await;
    let link = |method: Method,
                path: String,
                token: Option<String>,
                secret: Option<String>,
                body: &[u8]| {
        let (kit, url, body) = (kit.clone(), url.clone(), body.to_vec());
        async move {
            kit.link(
                method,
                &url,
                &path,
                token.as_deref(),
                secret.as_deref(),
                body,
            )
            .await
            .unwrap()
        }
    };
    let code_of = |b: &[u8]| -> String {
        serde_json::from_slice::<serde_json::Value>(b).unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let tok = Some(t.clone());
    let (s, b) = link(Method::POST, String::new(), tok.clone(), None, b"hello").await;
    assert_eq!(s, StatusCode::CREATED);
    let opened: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let n = opened["nameplate"].as_str().unwrap().to_string();
    assert_eq!(n.len(), 6);

    let (s, b) = link(Method::GET, format!("/{n}"), None, None, b"").await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"hello"[..]));
    let (s, b) = link(Method::GET, "/100000".into(), None, None, b"").await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::NOT_FOUND, "link_unknown")
    );
    let (s, _) = link(Method::GET, format!("/{n}/reply"), tok.clone(), None, b"").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "nobody joined yet");
    let (s, _) = link(Method::GET, format!("/{n}/reply"), None, None, b"").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the reply is for the account only"
    );
    let (s, b) = link(Method::POST, format!("/{n}/join"), None, None, b"join").await;
    assert_eq!(s, StatusCode::OK);
    let secret = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = link(Method::POST, format!("/{n}/join"), None, None, b"again").await;
    assert_eq!((s, code_of(&b).as_str()), (StatusCode::GONE, "link_used"));
    let (s, b) = link(
        Method::GET,
        format!("/{n}/payload"),
        None,
        Some("00".repeat(32)),
        b"",
    )
    .await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::FORBIDDEN, "link_not_yours")
    );
    let (s, _) = link(
        Method::GET,
        format!("/{n}/payload"),
        None,
        Some(secret.clone()),
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "not delivered yet");
    let (s, b) = link(Method::GET, format!("/{n}/reply"), tok.clone(), None, b"").await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"join"[..]));
    let (s, _) = link(
        Method::PUT,
        format!("/{n}/payload"),
        tok.clone(),
        None,
        &[7; 2000],
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = link(
        Method::PUT,
        format!("/{n}/payload"),
        tok.clone(),
        None,
        b"sealed",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = link(
        Method::GET,
        format!("/{n}/payload"),
        None,
        Some(secret.clone()),
        b"",
    )
    .await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"sealed"[..]));
    let (s, b) = link(
        Method::GET,
        format!("/{n}/payload"),
        None,
        Some(secret.clone()),
        b"",
    )
    .await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::GONE, "link_used"),
        "one time"
    );
    let (s, b) = link(Method::GET, format!("/{n}"), None, None, b"").await;
    assert_eq!((s, code_of(&b).as_str()), (StatusCode::GONE, "link_used"));

    // The existing device aborts (wrong code): the joiner is told, nothing is delivered.
    let (_, b) = link(Method::POST, String::new(), tok.clone(), None, b"hello").await;
    let n2 = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["nameplate"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, b) = link(Method::POST, format!("/{n2}/join"), None, None, b"join").await;
    let secret2 = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = link(Method::DELETE, format!("/{n2}"), tok.clone(), None, b"").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = link(
        Method::GET,
        format!("/{n2}/payload"),
        None,
        Some(secret2),
        b"",
    )
    .await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::GONE, "link_aborted")
    );

    // Two open drops per account; an expired one says so.
    let (_, b) = link(Method::POST, String::new(), tok.clone(), None, b"h").await;
    let n3 = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["nameplate"]
        .as_str()
        .unwrap()
        .to_string();
    let expires = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["expires"]
        .as_u64()
        .unwrap();
    let (s, _) = link(Method::POST, String::new(), tok.clone(), None, b"h").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = link(Method::POST, String::new(), tok.clone(), None, b"h").await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_links")
    );
    // Wait for the clock (not for readiness) to pass the expiry.
    tokio::time::sleep(std::time::Duration::from_secs(
        expires.saturating_sub(now()) + 1,
    ))
    .await;
    let (s, b) = link(Method::GET, format!("/{n3}"), None, None, b"").await;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (StatusCode::GONE, "link_expired")
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_devices_link_requests_are_rate_limited_per_address() {
    let kit = Kit::default();
    let mut node = TestNode::start(|c| {
        c.devices.link_requests_per_minute_per_ip = 1;
        c.devices.link_requests_burst_per_ip = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (s, _) = kit
            .link(Method::GET, &node.url, "/123456", None, None, vec![])
            .await
            .unwrap();
        statuses.push(s);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    node.stop().await;
}

/// Acks `1..=n` in order as one device until the node stops answering; answers the seqs
/// whose ack was answered `204`.
async fn ack_all(
    kit: Kit,
    m: (NodeUrl, MailboxId),
    token: String,
    n: u64,
    done: Arc<AtomicUsize>,
) -> Vec<u64> {
    let mut acked = Vec::new();
    for seq in 1..=n {
        let a = kit.ack(&m.0, &m.1, seq, Some(&token)).await;
        match a {
            Ok((StatusCode::NO_CONTENT, _)) => {
                acked.push(seq);
                done.fetch_add(1, Ordering::SeqCst);
            }
            _ => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_two_devices_acks_loses_no_answered_ack_and_no_owed_letter() {
    const N: u64 = 60;
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = ProcNode::start(&["--set", "limits.deliver_per_minute=0"], &[]);
    let m = Mailbox::new(&api, &node.url).await;
    let account = api.token(&m.url, &m.mailbox, &m.to.keys).await;
    let (k1, k2) = (device_key(), device_key());
    kit.add_device(&m.url, Some(&account), &k1, "one")
        .await
        .unwrap();
    let t1 = device_token(&kit, &m, &k1).await;
    kit.add_device(&m.url, Some(&t1), &k2, "two").await.unwrap();
    let t2 = device_token(&kit, &m, &k2).await;
    for _ in 0..N {
        m.deliver(&api).await;
    }
    assert_eq!(seqs(&api, &m, &t2).await.len(), N as usize);

    let done = Arc::new(AtomicUsize::new(0));
    let place = (m.url.clone(), m.mailbox);
    let one = tokio::spawn(ack_all(kit.clone(), place.clone(), t1, N, done.clone()));
    let two = tokio::spawn(ack_all(kit.clone(), place, t2, N, done.clone()));
    // Kill the node once both are under way (progress, not time, decides when).
    eventually("acks under way", || {
        let done = done.clone();
        async move { (done.load(Ordering::SeqCst) >= N as usize / 2).then_some(()) }
    })
    .await;
    node.kill();
    let (acked1, acked2) = (one.await.unwrap(), two.await.unwrap());
    assert!(
        (acked1.len() as u64) < N || (acked2.len() as u64) < N,
        "the kill came before all acks were answered"
    );
    node.restart();

    // Each device lists exactly what it did not ack (the one ack in flight at the kill
    // may or may not have been written).
    let all: BTreeSet<u64> = (1..=N).collect();
    for (key, acked) in [(&k1, &acked1), (&k2, &acked2)] {
        let t = device_token(&kit, &m, key).await;
        let listed: BTreeSet<u64> = seqs(&api, &m, &t).await.into_iter().collect();
        let owed: BTreeSet<u64> = all
            .difference(&acked.iter().copied().collect())
            .copied()
            .collect();
        let in_flight = acked.last().copied().unwrap_or(0) + 1;
        let mut owed_but_flight = owed.clone();
        owed_but_flight.remove(&in_flight);
        assert!(
            listed == owed || listed == owed_but_flight,
            "listed {listed:?}, acked {acked:?}"
        );
        for seq in listed {
            assert_eq!(
                api.ack(&m.url, &m.mailbox, seq, Some(&t)).await.0,
                StatusCode::NO_CONTENT
            );
        }
    }
    // Both acked everything: nothing is left.
    let t1 = device_token(&kit, &m, &k1).await;
    for seq in 1..=N {
        let got = api.get(&m.url, &m.mailbox, seq, Some(&t1)).await;
        assert_eq!(got.status(), StatusCode::NOT_FOUND, "seq {seq} is deleted");
    }
    node.kill();
}
