//! Three nodes in one process: alice on alpha submits one hop, for one home of bob's (beta;
//! he is homed on beta and gamma); beta stores it and forwards it to gamma (one-home
//! delivery); bob lists, fetches, opens and acks on both. Then the stored bytes of each
//! node are checked against DESIGN.md §1: the recipient's nodes never hold the sender's
//! address or key, the sender's node never holds the recipient's mailbox ids or address.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::open_verified;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hop_reaches_every_home_and_nodes_store_only_what_they_may() {
    let api = Api::default();
    let mut alpha = TestNode::start(|_| {}).await;
    let mut beta = TestNode::start(|_| {}).await;
    let mut gamma = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");

    // Accounts and records: alice on alpha, bob on beta and gamma.
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let bob_beta = api.mailbox(&beta.url, &bob).await;
    let bob_gamma = api.mailbox(&gamma.url, &bob).await;
    assert_eq!(
        api.register(&beta.url, &bob, None).await.0,
        StatusCode::OK,
        "registering again is idempotent"
    );
    let alice_rec = record(&alice, &[(&alpha.url, alpha.node_key, alice_mb)], 1);
    assert_eq!(
        api.put_record(&alpha.url, "alice@alpha.test", alice_rec)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let bob_rec = record(
        &bob,
        &[
            (&beta.url, beta.node_key, bob_beta),
            (&gamma.url, gamma.node_key, bob_gamma),
        ],
        1,
    );
    for n in [&beta, &gamma] {
        let a = api
            .put_record(&n.url, "bob@beta.test", bob_rec.clone())
            .await;
        assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");
    }
    let fetched = api
        .http
        .get(beta.url.join("/v1/records/bob%40beta.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), bob_rec);

    // One hop, for beta, submitted to alice's node.
    let subject = "Quarterly figures 7f3a";
    let body = "The secret number is 918273645.";
    let env_beta = envelope(&alice, &bob, bob_beta, subject, body);
    let alice_token = api.token(&alpha.url, &alice_mb, &alice.keys).await;
    let (_, cert) = api.descriptor(&beta.url).await;
    let a = api
        .submit(
            &alpha.url,
            Some(&alice_token),
            hop(&env_beta, &beta.url, &cert).encode(),
        )
        .await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
    assert_eq!(a.1["queued"].as_str().unwrap().len(), 32);

    for (node, mb) in [(&beta, bob_beta), (&gamma, bob_gamma)] {
        let token = api.token(&node.url, &mb, &bob.keys).await;
        let items = eventually("the envelope on bob's home", || {
            let (api, url, token) = (api.clone(), node.url.clone(), token.clone());
            async move {
                let items = api.items(&url, &mb, &token).await;
                (!items.is_empty()).then_some(items)
            }
        })
        .await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].1,
            env_beta.id.to_hex(),
            "the same envelope id on every home"
        );
        let resp = api.get(&node.url, &mb, items[0].0, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let got = Envelope::decode(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(got.mailbox, mb);
        let alice_cert = alice.cert.clone();
        let (letter, signer) =
            open_verified(&got.sealed, &bob.keys, &move |_| Some(alice_cert.clone())).unwrap();
        assert_eq!(signer, alice.cert.fingerprint());
        assert_eq!(letter.subject, subject);
        assert_eq!(
            api.ack(&node.url, &mb, items[0].0, Some(&token)).await.0,
            StatusCode::NO_CONTENT
        );
        assert!(
            api.items(&node.url, &mb, &token).await.is_empty(),
            "acked envelopes are gone"
        );
    }
    eventually("alpha's queue to drain", || {
        let (api, url) = (api.clone(), alpha.url.clone());
        async move { (api.metric(&url, "sealpost_outbound_queue").await == 0.0).then_some(()) }
    })
    .await;
    assert_eq!(
        api.metric(
            &alpha.url,
            "sealpost_relay_attempts_total{result=\"delivered\"}"
        )
        .await,
        1.0,
        "one delivery: alice's node sees one destination"
    );
    eventually("beta's queue to drain", || {
        let (api, url) = (api.clone(), beta.url.clone());
        async move { (api.metric(&url, "sealpost_outbound_queue").await == 0.0).then_some(()) }
    })
    .await;

    alpha.stop().await;
    beta.stop().await;
    gamma.stop().await;

    let plaintext = |s: &str| s.as_bytes().to_vec();
    let mut about_alice = vec![
        ("alice's address", plaintext("alice@alpha.test")),
        ("the subject", plaintext(subject)),
    ];
    about_alice.push(("the body", plaintext(body)));
    for n in cert_needles(&alice.cert) {
        about_alice.push(("alice's key", n));
    }
    for n in [&beta, &gamma] {
        assert_never_stored(&n.data_dir(), &about_alice);
    }
    let mut about_bob = vec![
        ("bob's address", plaintext("bob@beta.test")),
        ("the subject", plaintext(subject)),
    ];
    about_bob.push(("the body", plaintext(body)));
    for mb in [bob_beta, bob_gamma] {
        about_bob.push(("bob's mailbox id", mb.as_bytes().to_vec()));
        about_bob.push(("bob's mailbox id (hex)", mb.to_hex().into_bytes()));
    }
    for n in cert_needles(&bob.cert) {
        about_bob.push(("bob's key", n));
    }
    assert_never_stored(&alpha.data_dir(), &about_bob);

    // The check can fail: what a node legitimately holds is found.
    let stored = stored_bytes(&beta.data_dir());
    assert!(
        stored.iter().any(|(_, b)| contains(b, bob_beta.as_bytes())),
        "beta holds bob's mailbox id"
    );
    let stored = stored_bytes(&alpha.data_dir());
    assert!(
        stored.iter().any(|(_, b)| contains(b, b"alice@alpha.test")),
        "alpha holds alice's record"
    );
}
