//! The admin socket (`sealpost-node admin`): owner-only, blocks that take effect at once
//! and survive a restart, a peer's rotated key accepted by the operator, the queue listing,
//! and `/metrics` behind `admin.metrics_token`; accounts (list, suspend, quota, delete),
//! stored invites, queue retry and drop; and the command line itself.

mod common;

use std::os::unix::fs::PermissionsExt;

use sealpost_proto::codec::Codec;

use common::*;
use reqwest::StatusCode;
use sealpost_server::admin::proto::{Reply, Request};
use sealpost_server::admin::{call, socket_path};

async fn admin(node: &TestNode, req: Request) -> Reply {
    let path = socket_path(&node.config).expect("admin socket on by default");
    call(&path, &req).await.expect("admin call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_from_the_admin_socket_refuse_deliveries_and_survive_a_restart() {
    let api = Api::default();
    let mut node = TestNode::start(|_| {}).await;
    let path = socket_path(&node.config).expect("socket");
    let mode = std::fs::metadata(&path)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is owner-only");

    let peer = peer_key();
    let key = hex::encode(peer.verifying_key().to_bytes());
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let bob_mb = api.mailbox(&url, &bob).await;
    let payload = |s: &str| hop(&envelope(&alice, &bob, bob_mb, s, "x"), &url, &cert).payload;

    let r = admin(&node, Request::PeersBlock { key: key.clone() }).await;
    assert!(r.ok, "{r:?}");
    let a = api.deliver(&url, &peer, payload("one")).await;
    assert_eq!(
        a.0,
        StatusCode::FORBIDDEN,
        "a blocked peer is refused at once: {a:?}"
    );
    let listed = admin(&node, Request::PeersList).await;
    assert!(
        listed.text.contains(&format!("blocked {key}")),
        "{listed:?}"
    );
    let bad = admin(&node, Request::PeersBlock { key: "xyz".into() }).await;
    assert!(!bad.ok, "a malformed key is refused: {bad:?}");

    node.stop().await;
    node.restart().await;
    let a = api.deliver(&url, &peer, payload("two")).await;
    assert_eq!(
        a.0,
        StatusCode::FORBIDDEN,
        "the block survives a restart: {a:?}"
    );

    let r = admin(&node, Request::PeersUnblock { key: key.clone() }).await;
    assert!(r.ok, "{r:?}");
    let a = api.deliver(&url, &peer, payload("three")).await;
    assert_eq!(a, (StatusCode::OK, serde_json::json!({ "stored": true })));
    let again = admin(&node, Request::PeersUnblock { key }).await;
    assert!(
        !again.ok,
        "unblocking what is not blocked says so: {again:?}"
    );

    let q = admin(&node, Request::QueueList).await;
    assert!(q.ok && q.text.starts_with("0 hop(s) queued"), "{q:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_accepts_a_peers_rotated_key() {
    use sealpost_server::config::KeyChangePolicy;
    let mut peer = TestNode::start(|_| {}).await;
    let mut node = TestNode::start(|c| c.peers.key_change = KeyChangePolicy::Refuse).await;
    let first = admin(
        &node,
        Request::PeersAccept {
            url: peer.url.to_string(),
        },
    )
    .await;
    assert!(first.ok, "{first:?}");
    assert!(
        first.text.contains(&hex::encode(peer.node_key)),
        "{first:?}"
    );
    let pins = admin(&node, Request::PeersList).await;
    assert!(
        pins.text
            .contains(&format!("{} {}", peer.url, hex::encode(peer.node_key))),
        "{pins:?}"
    );

    // The peer rotates its key (a new signing key, same URL).
    peer.stop().await;
    let key_path = peer.config.resolve(&peer.config.keys.signing_key);
    let seed: [u8; 32] = rand::random();
    std::fs::write(&key_path, format!("{}\n", hex::encode(seed))).expect("new key");
    let old_key = peer.node_key;
    peer.restart().await;
    assert_ne!(peer.node_key, old_key, "the peer has a new key");
    let accepted = admin(
        &node,
        Request::PeersAccept {
            url: peer.url.to_string(),
        },
    )
    .await;
    assert!(accepted.ok, "{accepted:?}");
    assert!(
        accepted.text.contains(&format!(
            "pinned {} (was {})",
            hex::encode(peer.node_key),
            hex::encode(old_key)
        )),
        "{accepted:?}"
    );
    node.stop().await;
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_when_one_is_set() {
    let mut node = TestNode::start(|c| c.admin.metrics_token = "s3cret-token".into()).await;
    let http = reqwest::Client::new();
    let url = node.url.join("/metrics");
    let plain = http.get(&url).send().await.expect("GET");
    assert_eq!(plain.status(), StatusCode::NOT_FOUND);
    let wrong = http
        .get(&url)
        .bearer_auth("s3cret-tokeX")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let right = http
        .get(&url)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.expect("body").contains("sealpost_"));
    let over_socket = admin(&node, Request::Metrics).await;
    assert!(over_socket.ok && over_socket.text.contains("sealpost_"));
    node.stop().await;
}

/// `admin users` and `admin quota` against a running node: list with usage, suspend (its
/// token stops working, sign-in is refused, mail to it is held), quotas of one account,
/// delete with all its data; bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_suspends_limits_and_deletes_accounts() {
    let api = Api::default();
    let mut node = TestNode::start(|_| {}).await;
    let url = node.url.clone();
    let (_, cert) = api.descriptor(&url).await;
    let peer = peer_key();
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let alice_mb = api.mailbox(&url, &alice).await;
    let bob_mb = api.mailbox(&url, &bob).await;
    let payload = |s: &str| hop(&envelope(&alice, &bob, bob_mb, s, "x"), &url, &cert).payload;
    let stored = (StatusCode::OK, serde_json::json!({ "stored": true }));
    assert_eq!(api.deliver(&url, &peer, payload("one")).await, stored);
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;

    let list = admin(&node, Request::UsersList).await;
    assert!(list.ok, "{list:?}");
    let bob_line = list
        .text
        .lines()
        .find(|l| l.starts_with(&bob_mb.to_hex()))
        .unwrap_or_else(|| panic!("bob listed: {list:?}"));
    assert!(
        bob_line.contains("in 1 letter(s)") && bob_line.ends_with("bob@beta.test"),
        "{bob_line}"
    );
    assert!(!bob_line.contains("SUSPENDED"));
    assert!(list.text.contains(&alice_mb.to_hex()), "{list:?}");

    // Bad input: clear errors, nothing changed.
    for (req, says) in [
        (
            Request::UsersSuspend {
                user: "nobody@beta.test".into(),
            },
            "no account owns",
        ),
        (
            Request::UsersDelete { user: "zz".into() },
            "neither an address nor a mailbox id",
        ),
        (
            Request::UsersDelete {
                user: "00".repeat(16),
            },
            "no account has mailbox",
        ),
        (
            Request::QuotaSet {
                user: "bob@beta.test".into(),
                bytes: "1.5G".into(),
            },
            "not a size",
        ),
        (
            Request::QuotaSet {
                user: "nobody@beta.test".into(),
                bytes: "10".into(),
            },
            "no account owns",
        ),
    ] {
        let r = admin(&node, req.clone()).await;
        assert!(!r.ok && r.text.contains(says), "{req:?} → {r:?}");
    }
    assert_eq!(
        admin(&node, Request::UsersList).await,
        list,
        "bad commands changed nothing"
    );

    // Suspension: the token ends, sign-in is refused, mail is held.
    let r = admin(
        &node,
        Request::UsersSuspend {
            user: "BOB@beta.test".into(),
        },
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        api.list(&url, &bob_mb, Some(&bob_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = api.challenge(&url, &bob_mb).await;
    assert_eq!(status, StatusCode::OK);
    let nonce = body["nonce"].as_str().expect("nonce").to_string();
    let (status, body) = api
        .answer_challenge(&url, &url, &bob_mb, &nonce, &bob.keys)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.to_string().contains("suspended"), "{body}");
    assert_eq!(
        api.deliver(&url, &peer, payload("two")).await,
        stored,
        "held"
    );
    let shown = admin(
        &node,
        Request::QuotaShow {
            user: bob_mb.to_hex(),
        },
    )
    .await;
    assert!(
        shown.ok && shown.text.contains("SUSPENDED") && shown.text.contains("in 2 letter(s)"),
        "{shown:?}"
    );
    let alice_token = api.token(&url, &alice_mb, &alice.keys).await;
    assert_eq!(
        api.list(&url, &alice_mb, Some(&alice_token)).await.0,
        StatusCode::OK,
        "others unaffected"
    );
    let r = admin(
        &node,
        Request::UsersUnsuspend {
            user: "bob@beta.test".into(),
        },
    )
    .await;
    assert!(r.ok, "{r:?}");
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    assert_eq!(
        api.items(&url, &bob_mb, &bob_token).await.len(),
        2,
        "the held mail is there"
    );

    // An account's own quota, and back to the default.
    let r = admin(
        &node,
        Request::QuotaSet {
            user: "bob@beta.test".into(),
            bytes: "10".into(),
        },
    )
    .await;
    assert!(
        r.ok && r.text.contains("10 bytes (own)") && r.text.contains("refused"),
        "{r:?}"
    );
    assert_eq!(
        api.deliver(&url, &peer, payload("three")).await.0,
        StatusCode::INSUFFICIENT_STORAGE
    );
    node.stop().await;
    node.restart().await;
    assert_eq!(
        api.deliver(&url, &peer, payload("three")).await.0,
        StatusCode::INSUFFICIENT_STORAGE,
        "the quota survives a restart"
    );
    let r = admin(
        &node,
        Request::QuotaSet {
            user: "bob@beta.test".into(),
            bytes: "default".into(),
        },
    )
    .await;
    assert!(r.ok && r.text.contains("(default)"), "{r:?}");
    assert_eq!(api.deliver(&url, &peer, payload("three")).await, stored);

    // Delete: everything of bob goes, alice stays.
    let bob_token = api.token(&url, &bob_mb, &bob.keys).await;
    let r = admin(
        &node,
        Request::UsersDelete {
            user: "bob@beta.test".into(),
        },
    )
    .await;
    assert!(
        r.ok && r.text.contains("3 letter(s), 1 address(es)"),
        "{r:?}"
    );
    assert_eq!(
        api.list(&url, &bob_mb, Some(&bob_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_ne!(
        api.challenge(&url, &bob_mb).await.0,
        StatusCode::OK,
        "no account to sign in to"
    );
    assert_ne!(api.deliver(&url, &peer, payload("four")).await, stored);
    let list = admin(&node, Request::UsersList).await;
    assert!(
        !list.text.contains(&bob_mb.to_hex()) && !list.text.contains("bob@beta.test"),
        "{list:?}"
    );
    assert!(list.text.contains(&alice_mb.to_hex()), "{list:?}");
    let again = admin(
        &node,
        Request::UsersDelete {
            user: "bob@beta.test".into(),
        },
    )
    .await;
    assert!(
        !again.ok && again.text.contains("no account owns"),
        "{again:?}"
    );
    let new_mb = api.mailbox(&url, &bob).await;
    assert_ne!(
        new_mb, bob_mb,
        "the address and key are free again: a new account"
    );
    node.stop().await;
}

/// `admin invites`: a stored invite works for its number of uses until it expires or is
/// revoked, the config's invite list still works, and bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_invites_admit_registrations_until_used_up_expired_or_revoked() {
    use sealpost_server::config::RegistrationPolicy;
    let api = Api::default();
    let mut node = TestNode::start(|c| {
        c.registration.policy = RegistrationPolicy::Invite;
        c.registration.invites = vec!["from-the-config".into()];
    })
    .await;
    let url = node.url.clone();
    let code_of = |r: &Reply| {
        r.text
            .lines()
            .next()
            .expect("a code line")
            .trim()
            .to_string()
    };

    // Bad input: nothing is created.
    for (req, says) in [
        (
            Request::InvitesCreate {
                uses: Some(0),
                expires: None,
            },
            "--uses must be",
        ),
        (
            Request::InvitesCreate {
                uses: None,
                expires: Some("soon".into()),
            },
            "not a duration",
        ),
        (
            Request::InvitesCreate {
                uses: None,
                expires: Some("20y".into()),
            },
            "not a duration",
        ),
        (
            Request::InvitesCreate {
                uses: None,
                expires: Some("99999d".into()),
            },
            "at most ten years",
        ),
        (
            Request::InvitesRevoke {
                code: "no-such-code".into(),
            },
            "no stored invite",
        ),
    ] {
        let r = admin(&node, req.clone()).await;
        assert!(!r.ok && r.text.contains(says), "{req:?} → {r:?}");
    }
    let empty = admin(&node, Request::InvitesList).await;
    assert!(
        empty.ok && empty.text.starts_with("0 invite(s) stored"),
        "{empty:?}"
    );

    let two = admin(
        &node,
        Request::InvitesCreate {
            uses: Some(2),
            expires: Some("1h".into()),
        },
    )
    .await;
    assert!(two.ok, "{two:?}");
    let code = code_of(&two);
    assert_eq!(code.len(), 32, "{two:?}");
    let users: Vec<User> = (0..4)
        .map(|n| User::new(&format!("u{n}@beta.test")))
        .collect();
    assert_eq!(
        api.register(&url, &users[0], None).await.0,
        StatusCode::FORBIDDEN,
        "policy invite"
    );
    assert_eq!(
        api.register(&url, &users[0], Some("made-up")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.register(&url, &users[0], Some(&code)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.register(&url, &users[1], Some(&code)).await.0,
        StatusCode::CREATED
    );
    let used_up = api.register(&url, &users[2], Some(&code)).await;
    assert_eq!(
        used_up.0,
        StatusCode::FORBIDDEN,
        "two uses only: {used_up:?}"
    );
    assert_eq!(
        api.register(&url, &users[2], Some("from-the-config"))
            .await
            .0,
        StatusCode::CREATED,
        "the config's list still works"
    );
    let list = admin(&node, Request::InvitesList).await;
    assert!(list.text.contains("used 2/2 used up"), "{list:?}");
    assert!(
        !list.text.contains(&code),
        "the code is never shown again: {list:?}"
    );

    // Expiry, enforced by the store (a 1 s invite is refused after it).
    let short = admin(
        &node,
        Request::InvitesCreate {
            uses: Some(5),
            expires: Some("1s".into()),
        },
    )
    .await;
    let short_code = code_of(&short);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        api.register(&url, &users[3], Some(&short_code)).await.0,
        StatusCode::FORBIDDEN
    );
    let list = admin(&node, Request::InvitesList).await;
    assert!(list.text.contains("used 0/5 expired"), "{list:?}");

    // Revoke by code, and by listed id; both survive a restart.
    let a = code_of(
        &admin(
            &node,
            Request::InvitesCreate {
                uses: None,
                expires: None,
            },
        )
        .await,
    );
    let b = admin(
        &node,
        Request::InvitesCreate {
            uses: None,
            expires: None,
        },
    )
    .await;
    let b_id = b
        .text
        .lines()
        .nth(1)
        .and_then(|l| l.split([' ', ',']).nth(1))
        .expect("id")
        .to_string();
    let b_code = code_of(&b);
    assert!(
        admin(&node, Request::InvitesRevoke { code: a.clone() })
            .await
            .ok
    );
    let r = admin(&node, Request::InvitesRevoke { code: b_id.clone() }).await;
    assert!(r.ok, "revoked by id {b_id}: {r:?}");
    let again = admin(&node, Request::InvitesRevoke { code: a.clone() }).await;
    assert!(!again.ok, "{again:?}");
    node.stop().await;
    node.restart().await;
    assert_eq!(
        api.register(&url, &users[3], Some(&a)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.register(&url, &users[3], Some(&b_code)).await.0,
        StatusCode::FORBIDDEN
    );
    let list = admin(&node, Request::InvitesList).await;
    assert!(
        list.text.starts_with("4 invite(s) stored") && list.text.matches("revoked").count() == 2,
        "{list:?}"
    );
    node.stop().await;
}

/// `admin queue retry` attempts a hop now whatever its backoff; `queue drop` gives up on
/// one at once and bounces it to its sender; bad ids change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_retries_and_drops_queued_hops() {
    use sealpost_server::config::Secs;
    let api = Api::default();
    let mut alpha = TestNode::start(|c| {
        // Without the operator, a failed hop waits an hour.
        c.relay.retry_base = Secs::from_secs(3600);
        c.relay.retry_max = Secs::from_secs(3600);
    })
    .await;
    let mut beta = TestNode::start(|_| {}).await;
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let bob_mb = api.mailbox(&beta.url, &bob).await;
    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let token = api.token(&alpha.url, &alice_mb, &alice.keys).await;
    beta.stop().await;
    let beta_url = beta.url.clone();
    let submit = async |subject: &str| {
        let env = envelope(&alice, &bob, bob_mb, subject, "x");
        let a = api
            .submit(
                &alpha.url,
                Some(&token),
                hop(&env, &beta_url, &beta_cert).encode(),
            )
            .await;
        assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
        a.1["queued"].as_str().expect("queue id").to_string()
    };
    let first = submit("retry me").await;
    let second = submit("drop me").await;
    eventually("both first attempts to fail", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move {
            (api.metric(&url, "sealpost_relay_attempts_total{result=\"retry\"}")
                .await
                >= 2.0)
                .then_some(())
        }
    })
    .await;

    for (req, says) in [
        (
            Request::QueueRetry {
                id: Some("xyz".into()),
            },
            "not a queue id",
        ),
        (
            Request::QueueDrop {
                id: "00".repeat(16),
            },
            "no hop",
        ),
        (Request::QueueDrop { id: String::new() }, "not a queue id"),
    ] {
        let r = admin(&alpha, req.clone()).await;
        assert!(!r.ok && r.text.contains(says), "{req:?} → {r:?}");
    }
    let q = admin(&alpha, Request::QueueList).await;
    assert!(
        q.text.starts_with("2 hop(s) queued"),
        "bad ids changed nothing: {q:?}"
    );

    beta.restart().await;
    let r = admin(
        &alpha,
        Request::QueueRetry {
            id: Some(first.clone()),
        },
    )
    .await;
    assert!(r.ok, "{r:?}");
    let bob_token = api.token(&beta.url, &bob_mb, &bob.keys).await;
    eventually("the retried hop to reach beta at once", || {
        let (api, url, t) = (api.clone(), beta.url.clone(), bob_token.clone());
        async move { (api.items(&url, &bob_mb, &t).await.len() == 1).then_some(()) }
    })
    .await;
    // Beta stores the hop before alpha hears its answer and takes the hop off its queue.
    let q = eventually("the delivered hop to leave alpha's queue", || {
        let alpha = &alpha;
        async move {
            let q = admin(alpha, Request::QueueList).await;
            (!q.text.starts_with("2 hop(s) queued")).then_some(q)
        }
    })
    .await;
    assert!(
        q.text.starts_with("1 hop(s) queued") && q.text.contains(&second),
        "{q:?}"
    );

    let r = admin(&alpha, Request::QueueDrop { id: second.clone() }).await;
    assert!(r.ok && r.text.contains("bounce"), "{r:?}");
    let q = admin(&alpha, Request::QueueList).await;
    assert!(q.text.starts_with("0 hop(s) queued"), "{q:?}");
    let items = eventually("the dropped hop's bounce in alice's mailbox", || {
        let (api, url, t) = (api.clone(), alpha.url.clone(), token.clone());
        async move {
            let items = api.items(&url, &alice_mb, &t).await;
            (!items.is_empty()).then_some(items)
        }
    })
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        api.items(&beta.url, &bob_mb, &bob_token).await.len(),
        1,
        "never delivered"
    );
    let again = admin(&alpha, Request::QueueDrop { id: second }).await;
    assert!(!again.ok && again.text.contains("no hop"), "{again:?}");
    let all = admin(&alpha, Request::QueueRetry { id: None }).await;
    assert!(all.ok && all.text.starts_with("0 hop(s)"), "{all:?}");

    // Deleting the sender takes its waiting hops out of the queue and out of the relay.
    beta.stop().await;
    submit("gone with alice").await;
    eventually("the third hop's first attempt to fail", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move {
            (api.metric(&url, "sealpost_relay_attempts_total{result=\"retry\"}")
                .await
                >= 3.0)
                .then_some(())
        }
    })
    .await;
    assert_eq!(api.metric(&alpha.url, "sealpost_outbound_queue").await, 1.0);
    let r = admin(
        &alpha,
        Request::UsersDelete {
            user: alice_mb.to_hex(),
        },
    )
    .await;
    assert!(r.ok && r.text.contains("1 queued hop(s) dropped"), "{r:?}");
    let q = admin(&alpha, Request::QueueList).await;
    assert!(q.text.starts_with("0 hop(s) queued"), "{q:?}");
    eventually("the relay to forget the hop", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move { (api.metric(&url, "sealpost_outbound_queue").await == 0.0).then_some(()) }
    })
    .await;
    alpha.stop().await;
}

/// The `sealpost-node admin` command line against a running node: output on stdout and
/// exit 0, or the node's error on stderr and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_command_line_prints_answers_and_fails_on_errors() {
    let api = Api::default();
    let mut node = TestNode::start(|_| {}).await;
    let bob = User::new("bob@beta.test");
    let bob_mb = api.mailbox(&node.url, &bob).await;
    let config = node.dir.path().join("node.toml");
    let run = |args: &[&str]| {
        let config = config.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_sealpost-node"))
                    .arg("admin")
                    .arg("--config")
                    .arg(&config)
                    .args(&args)
                    .output()
                    .expect("run sealpost-node admin")
            })
            .await
            .expect("join")
        }
    };
    let out = run(&["users", "list"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&bob_mb.to_hex()),
        "{out:?}"
    );
    let out = run(&["users", "suspend", "nobody@beta.test"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no account owns nobody@beta.test"),
        "{out:?}"
    );
    let out = run(&["invites", "create", "--expires", "soon"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = run(&["quota", "set", "bob@beta.test", "5M"]).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(&["quota", "show", "bob@beta.test"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("quota 5242880 bytes (own)"),
        "{out:?}"
    );
    let out = run(&["queue", "retry", "--all"]).await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("0 hop(s)"),
        "{out:?}"
    );
    node.stop().await;
}
