//! The relay against an unreliable world: a destination that is down and comes back (on the
//! same port) gets the hop exactly once; a destination that never answers, or refuses the
//! hop for good, makes the sender's node seal a bounce into the sender's mailbox.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::NodeUrl;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::open_verified;
use sealpost_server::config::Secs;

fn quick_retries(c: &mut sealpost_server::Config) {
    c.relay.retry_base = Secs(std::time::Duration::from_millis(50));
    c.relay.retry_max = Secs(std::time::Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_waits_for_a_destination_that_is_down_and_arrives_once() {
    let api = Api::default();
    let mut alpha = TestNode::start(quick_retries).await;
    let mut beta = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let bob_mb = api.mailbox(&beta.url, &bob).await;
    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let env = envelope(&alice, &bob, bob_mb, "while you were out", "hello");
    let hop = hop(&env, &beta.url, &beta_cert);

    beta.stop().await;
    let token = api.token(&alpha.url, &alice_mb, &alice.keys).await;
    let a = api.submit(&alpha.url, Some(&token), hop.encode()).await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
    eventually("alpha to retry against the stopped node", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move {
            (api.metric(&url, "sealpost_relay_attempts_total{result=\"retry\"}")
                .await
                >= 2.0)
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        api.metric(&alpha.url, "sealpost_outbound_queue").await,
        1.0,
        "the hop is still queued"
    );

    beta.restart().await;
    let bob_token = api.token(&beta.url, &bob_mb, &bob.keys).await;
    eventually("the hop to reach beta", || {
        let (api, url, t) = (api.clone(), beta.url.clone(), bob_token.clone());
        async move { (!api.items(&url, &bob_mb, &t).await.is_empty()).then_some(()) }
    })
    .await;
    eventually("alpha's queue to drain", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move { (api.metric(&url, "sealpost_outbound_queue").await == 0.0).then_some(()) }
    })
    .await;
    let items = api.items(&beta.url, &bob_mb, &bob_token).await;
    assert_eq!(items, vec![(1, env.id.to_hex())], "exactly one copy");

    // A redelivery (as after a crash between delivery and dequeue) stores nothing new.
    let again = api
        .deliver(&beta.url, &peer_key(), hop.payload.clone())
        .await;
    assert_eq!(
        again,
        (StatusCode::OK, serde_json::json!({ "stored": false }))
    );
    assert_eq!(api.items(&beta.url, &bob_mb, &bob_token).await.len(), 1);
    assert_eq!(api.metric(&alpha.url, "sealpost_bounces_total").await, 0.0);
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_hops_bounce_to_the_sender() {
    let api = Api::default();
    let mut alpha = TestNode::start(|c| {
        quick_retries(c);
        c.relay.give_up_after = Secs::from_secs(1);
    })
    .await;
    let mut beta = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let (alpha_desc, alpha_cert) = api.descriptor(&alpha.url).await;
    let token = api.token(&alpha.url, &alice_mb, &alice.keys).await;

    // Nobody listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        NodeUrl::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap()
    };
    let env = envelope(
        &alice,
        &bob,
        sealpost_proto::MailboxId([1; 16]),
        "to nowhere",
        "x",
    );
    let to_dead = api
        .submit(
            &alpha.url,
            Some(&token),
            hop(&env, &dead, &beta_cert).encode(),
        )
        .await;
    // Beta is up but has no such mailbox: a permanent refusal, bounced without waiting.
    let to_unknown = api
        .submit(
            &alpha.url,
            Some(&token),
            hop(&env, &beta.url, &beta_cert).encode(),
        )
        .await;
    assert_eq!(
        (to_dead.0, to_unknown.0),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );

    let items = eventually("two bounces in alice's mailbox", || {
        let (api, url, t) = (api.clone(), alpha.url.clone(), token.clone());
        async move {
            let items = api.items(&url, &alice_mb, &t).await;
            (items.len() == 2).then_some(items)
        }
    })
    .await;
    let mut bodies = Vec::new();
    for (seq, _) in items {
        let bytes = api
            .get(&alpha.url, &alice_mb, seq, Some(&token))
            .await
            .bytes()
            .await
            .unwrap();
        let env = Envelope::decode(&bytes).unwrap();
        let node_cert = alpha_cert.clone();
        let (letter, signer) =
            open_verified(&env.sealed, &alice.keys, &move |_| Some(node_cert.clone())).unwrap();
        assert_eq!(
            signer,
            alpha_cert.fingerprint(),
            "signed by the node's identity"
        );
        assert_eq!(letter.from.as_str(), "postmaster@127.0.0.1");
        assert_eq!(letter.to[0].as_str(), "alice@alpha.test");
        assert!(
            letter.subject.starts_with("Undeliverable: "),
            "{}",
            letter.subject
        );
        bodies.push(letter.body);
    }
    let find = |qid: &str| {
        bodies
            .iter()
            .find(|b| b.contains(qid))
            .cloned()
            .unwrap_or_default()
    };
    let dead_bounce = find(to_dead.1["queued"].as_str().unwrap());
    assert!(dead_bounce.contains(dead.as_str()), "{dead_bounce}");
    let unknown_bounce = find(to_unknown.1["queued"].as_str().unwrap());
    assert!(
        unknown_bounce.contains("unknown_mailbox"),
        "{unknown_bounce}"
    );
    assert_eq!(api.metric(&alpha.url, "sealpost_bounces_total").await, 2.0);
    assert_eq!(api.metric(&alpha.url, "sealpost_outbound_queue").await, 0.0);
    assert_eq!(alpha_desc.url, alpha.url);
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_keys_are_pinned_and_changes_are_caught() {
    let api = Api::default();
    let mut beta = TestNode::start(|_| {}).await;
    // Alpha trusts on first use and re-checks the descriptor before every delivery.
    let mut alpha = TestNode::start(|c| {
        quick_retries(c);
        c.peers.descriptor_ttl = Secs::from_secs(0);
    })
    .await;
    // Gamma was told beta's key in advance, and is told a wrong one.
    let beta_url = beta.url.clone();
    let mut gamma = TestNode::start(|c| {
        quick_retries(c);
        c.peers.pinned = vec![sealpost_server::config::PinnedPeer {
            url: beta_url,
            node_key: "11".repeat(32),
        }];
    })
    .await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let alice_alpha = api.mailbox(&alpha.url, &alice).await;
    let alice_gamma = api.mailbox(&gamma.url, &alice).await;
    let bob_mb = api.mailbox(&beta.url, &bob).await;
    let bob_token = api.token(&beta.url, &bob_mb, &bob.keys).await;
    let count =
        |api: Api, url: NodeUrl, t: String| async move { api.items(&url, &bob_mb, &t).await.len() };

    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let first = envelope(&alice, &bob, bob_mb, "first", "x");
    let t = api.token(&alpha.url, &alice_alpha, &alice.keys).await;
    assert_eq!(
        api.submit(
            &alpha.url,
            Some(&t),
            hop(&first, &beta.url, &beta_cert).encode()
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    eventually("the first hop", || {
        let f = count(api.clone(), beta.url.clone(), bob_token.clone());
        async move { (f.await == 1).then_some(()) }
    })
    .await;

    // Beta gets new keys at the same URL.
    beta.stop().await;
    for k in [&beta.config.keys.signing_key, &beta.config.keys.identity] {
        std::fs::remove_file(beta.config.resolve(k)).unwrap();
    }
    let keys = sealpost_server::keys::NodeKeys::generate("beta.test").unwrap();
    keys.save(
        &beta.config.resolve(&beta.config.keys.signing_key),
        &beta.config.resolve(&beta.config.keys.identity),
    )
    .unwrap();
    beta.restart().await;
    assert_eq!(beta.node_key, keys.node_key());
    let (_, new_cert) = api.descriptor(&beta.url).await;
    let bob_token = api.token(&beta.url, &bob_mb, &bob.keys).await;

    // Alpha (policy "warn") notices, counts it, and still delivers.
    let second = envelope(&alice, &bob, bob_mb, "second", "x");
    assert_eq!(
        api.submit(
            &alpha.url,
            Some(&t),
            hop(&second, &beta.url, &new_cert).encode()
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    eventually("the second hop", || {
        let f = count(api.clone(), beta.url.clone(), bob_token.clone());
        async move { (f.await == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        api.metric(&alpha.url, "sealpost_peer_key_changes_total")
            .await,
        1.0
    );

    // Gamma's configured key does not match: it refuses to deliver and keeps retrying.
    let third = envelope(&alice, &bob, bob_mb, "third", "x");
    let t = api.token(&gamma.url, &alice_gamma, &alice.keys).await;
    assert_eq!(
        api.submit(
            &gamma.url,
            Some(&t),
            hop(&third, &beta.url, &new_cert).encode()
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    eventually("gamma to refuse the mismatched key", || {
        let (api, url) = (api.clone(), gamma.url.clone());
        async move {
            let retries = api
                .metric(&url, "sealpost_relay_attempts_total{result=\"retry\"}")
                .await;
            (retries >= 2.0).then_some(())
        }
    })
    .await;
    assert!(
        api.metric(&gamma.url, "sealpost_peer_key_changes_total")
            .await
            >= 1.0
    );
    assert_eq!(api.metric(&gamma.url, "sealpost_outbound_queue").await, 1.0);
    assert_eq!(
        count(api.clone(), beta.url.clone(), bob_token.clone()).await,
        2,
        "nothing from gamma"
    );
    alpha.stop().await;
    beta.stop().await;
    gamma.stop().await;
}
