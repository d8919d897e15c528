//! The admin socket (`sealpost-node admin`): owner-only, blocks that take effect at once
//! and survive a restart, a peer's rotated key accepted by the operator, the queue listing,
//! and `/metrics` behind `admin.metrics_token`.

mod common;

use std::os::unix::fs::PermissionsExt;

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
