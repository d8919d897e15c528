//! One-home delivery (`spec/node.md` §Forwarding): a home that stores an envelope for a
//! mailbox whose record names other homes forwards a copy to each of them, durably and
//! retried; `POST /v1/forward` takes a copy only from a home the record names, stores it once
//! per envelope id, and never forwards it again.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::seal::open_verified;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_server::config::Secs;
use serde_json::json;

fn quick_retries(c: &mut sealpost_server::Config) {
    c.relay.retry_base = Secs(std::time::Duration::from_millis(50));
    c.relay.retry_max = Secs(std::time::Duration::from_millis(300));
}

/// Bob homed on `homes` (each registered there, his record put on each).
async fn homed(api: &Api, bob: &User, homes: &[&TestNode]) -> Vec<MailboxId> {
    let mut mailboxes = Vec::new();
    for n in homes {
        mailboxes.push(api.mailbox(&n.url, bob).await);
    }
    let named: Vec<(&NodeUrl, [u8; 32], MailboxId)> = homes
        .iter()
        .zip(&mailboxes)
        .map(|(n, m)| (&n.url, n.node_key, *m))
        .collect();
    let rec = record(bob, &named, 1);
    for n in homes {
        let a = api
            .put_record(&n.url, bob.address.as_str(), rec.clone())
            .await;
        assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");
    }
    mailboxes
}

/// The envelope ids listed in `mailbox` at `node`, in order.
async fn ids(api: &Api, node: &TestNode, mailbox: MailboxId, user: &User) -> Vec<String> {
    let token = api.token(&node.url, &mailbox, &user.keys).await;
    api.items(&node.url, &mailbox, &token)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

async fn wait_for_ids(api: &Api, node: &TestNode, mailbox: MailboxId, user: &User, n: usize) {
    eventually("the envelope at the other home", || {
        let (api, user) = (api.clone(), user);
        async move { (ids(&api, node, mailbox, user).await.len() >= n).then_some(()) }
    })
    .await;
}

async fn wait_for_empty_queue(api: &Api, node: &TestNode) {
    eventually("the queue to drain", || {
        let (api, url) = (api.clone(), node.url.clone());
        async move { (api.metric(&url, "sealpost_outbound_queue").await == 0.0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_delivered_to_one_home_reaches_the_other_and_is_forwarded_once() {
    let api = Api::default();
    let mut alpha = TestNode::start(|_| {}).await;
    let mut beta = TestNode::start(|_| {}).await;
    let mut gamma = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let bob_mb = homed(&api, &bob, &[&beta, &gamma]).await;

    // Alice's node gets one hop, for beta.
    let env = envelope(&alice, &bob, bob_mb[0], "one home", "and the other");
    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let token = api.token(&alpha.url, &alice_mb, &alice.keys).await;
    let a = api
        .submit(
            &alpha.url,
            Some(&token),
            hop(&env, &beta.url, &beta_cert).encode(),
        )
        .await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");

    wait_for_ids(&api, &gamma, bob_mb[1], &bob, 1).await;
    wait_for_empty_queue(&api, &alpha).await;
    wait_for_empty_queue(&api, &beta).await;
    let id = env.id.to_hex();
    assert_eq!(ids(&api, &beta, bob_mb[0], &bob).await, vec![id.clone()]);
    assert_eq!(ids(&api, &gamma, bob_mb[1], &bob).await, vec![id.clone()]);
    // Gamma's copy is for bob's mailbox there, and it opens.
    let token = api.token(&gamma.url, &bob_mb[1], &bob.keys).await;
    let resp = api.get(&gamma.url, &bob_mb[1], 1, Some(&token)).await;
    let got = Envelope::decode(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!((got.id, got.mailbox), (env.id, bob_mb[1]));
    let cert = alice.cert.clone();
    let (letter, _) = open_verified(&got.sealed, &bob.keys, &move |_| Some(cert.clone())).unwrap();
    assert_eq!(letter.subject, "one home");

    // Alice's node delivered once, to one destination; beta forwarded once; gamma, which
    // got a forwarded copy, forwarded nothing back.
    let delivered = "sealpost_relay_attempts_total{result=\"delivered\"}";
    assert_eq!(api.metric(&alpha.url, delivered).await, 1.0);
    assert_eq!(
        api.metric(&alpha.url, "sealpost_forwards_queued_total")
            .await,
        0.0
    );
    assert_eq!(
        api.metric(&beta.url, "sealpost_forwards_queued_total")
            .await,
        1.0
    );
    assert_eq!(api.metric(&beta.url, delivered).await, 1.0);
    assert_eq!(
        api.metric(&gamma.url, "sealpost_forwards_queued_total")
            .await,
        0.0
    );
    assert_eq!(
        api.metric(
            &gamma.url,
            "sealpost_http_requests_total{route=\"forward\",status=\"2xx\"}"
        )
        .await,
        1.0
    );
    assert_eq!(api.metric(&gamma.url, "sealpost_outbound_queue").await, 0.0);
    assert_eq!(api.metric(&beta.url, "sealpost_bounces_total").await, 0.0);

    // The same hop again (a retried delivery) is a duplicate at beta: no second forward.
    let again = api
        .deliver(
            &beta.url,
            &peer_key(),
            hop(&env, &beta.url, &beta_cert).payload,
        )
        .await;
    assert_eq!(again, (StatusCode::OK, json!({ "stored": false })));
    assert_eq!(
        api.metric(&beta.url, "sealpost_forwards_queued_total")
            .await,
        1.0
    );

    alpha.stop().await;
    beta.stop().await;
    gamma.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_was_down_gets_its_copy_when_it_is_back() {
    let api = Api::default();
    let mut beta = TestNode::start(quick_retries).await;
    let mut gamma = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let bob_mb = homed(&api, &bob, &[&beta, &gamma]).await;
    let (_, beta_cert) = api.descriptor(&beta.url).await;

    gamma.stop().await;
    let env = envelope(&alice, &bob, bob_mb[0], "while gamma sleeps", "hello");
    let a = api
        .deliver(
            &beta.url,
            &peer_key(),
            hop(&env, &beta.url, &beta_cert).payload,
        )
        .await;
    assert_eq!(a, (StatusCode::OK, json!({ "stored": true })));
    eventually("beta to retry the forward", || {
        let (api, url) = (api.clone(), beta.url.clone());
        async move {
            (api.metric(&url, "sealpost_relay_attempts_total{result=\"retry\"}")
                .await
                >= 2.0)
                .then_some(())
        }
    })
    .await;
    assert_eq!(api.metric(&beta.url, "sealpost_outbound_queue").await, 1.0);

    // Beta restarts too: the forward was queued durably with the envelope.
    beta.stop().await;
    beta.restart().await;
    gamma.restart().await;
    wait_for_ids(&api, &gamma, bob_mb[1], &bob, 1).await;
    wait_for_empty_queue(&api, &beta).await;
    assert_eq!(
        ids(&api, &gamma, bob_mb[1], &bob).await,
        vec![env.id.to_hex()]
    );
    assert_eq!(
        ids(&api, &beta, bob_mb[0], &bob).await,
        vec![env.id.to_hex()]
    );
    assert_eq!(api.metric(&beta.url, "sealpost_bounces_total").await, 0.0);
    beta.stop().await;
    gamma.stop().await;
}

/// Bob's record names beta and a third home whose node key is `home`'s (a node that is
/// not running: it signs forwards in the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_are_taken_only_from_a_home_once_and_never_forwarded_again() {
    let api = Api::default();
    let mut beta = TestNode::start(|_| {}).await;
    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let bob_beta = api.mailbox(&beta.url, &bob).await;
    let home = peer_key();
    let home_url = NodeUrl::parse("http://127.0.0.1:9/").unwrap();
    let rec = record(
        &bob,
        &[
            (&beta.url, beta.node_key, bob_beta),
            (
                &home_url,
                home.verifying_key().to_bytes(),
                MailboxId::random(),
            ),
        ],
        1,
    );
    let a = api.put_record(&beta.url, "bob@beta.test", rec).await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{a:?}");
    let env = envelope(&alice, &bob, bob_beta, "forwarded", "hello");

    // A node the record does not name: refused, nothing stored.
    let stranger = api.forward(&beta.url, &peer_key(), env.encode()).await;
    assert_eq!(stranger.0, StatusCode::FORBIDDEN, "{stranger:?}");
    assert_eq!(code(&stranger), "not_a_home");
    assert!(ids(&api, &beta, bob_beta, &bob).await.is_empty());
    assert_eq!(
        api.metric(&beta.url, "sealpost_envelopes_stored_total")
            .await,
        0.0
    );
    // Unsigned: refused.
    let unsigned = api
        .http
        .post(beta.url.join(sealpost_proto::api::FORWARD))
        .body(env.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    // The other home: stored once, a duplicate is a no-op.
    let first = api.forward(&beta.url, &home, env.encode()).await;
    assert_eq!(first, (StatusCode::OK, json!({ "stored": true })));
    let second = api.forward(&beta.url, &home, env.encode()).await;
    assert_eq!(second, (StatusCode::OK, json!({ "stored": false })));
    assert_eq!(
        ids(&api, &beta, bob_beta, &bob).await,
        vec![env.id.to_hex()]
    );

    // A forwarded copy is not forwarded again (not even back to the home it came from).
    assert_eq!(
        api.metric(&beta.url, "sealpost_forwards_queued_total")
            .await,
        0.0
    );
    assert_eq!(api.metric(&beta.url, "sealpost_outbound_queue").await, 0.0);

    // A mailbox the node does not have, and bytes that are no envelope.
    let mut other = envelope(&alice, &bob, MailboxId::random(), "x", "y");
    let unknown = api.forward(&beta.url, &home, other.encode()).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{unknown:?}");
    assert_eq!(code(&unknown), "unknown_mailbox");
    other.mailbox = bob_beta;
    let mut garbage = other.encode();
    garbage.truncate(40);
    let bad = api.forward(&beta.url, &home, garbage).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{bad:?}");
    assert_eq!(ids(&api, &beta, bob_beta, &bob).await.len(), 1);

    // A delivery (not a forward) to beta is forwarded to the other home: queued, retried
    // (that node is down), and counted.
    let (_, beta_cert) = api.descriptor(&beta.url).await;
    let env2 = envelope(&alice, &bob, bob_beta, "delivered", "hello");
    let a = api
        .deliver(
            &beta.url,
            &peer_key(),
            hop(&env2, &beta.url, &beta_cert).payload,
        )
        .await;
    assert_eq!(a, (StatusCode::OK, json!({ "stored": true })));
    assert_eq!(
        api.metric(&beta.url, "sealpost_forwards_queued_total")
            .await,
        1.0
    );
    assert_eq!(api.metric(&beta.url, "sealpost_outbound_queue").await, 1.0);
    beta.stop().await;
}
