//! A user cannot fill the sender node's disk with undeliverable hops: what one user has
//! waiting in the outbound queue is capped (`limits.outbound_hops_per_user`), the cap holds
//! across a restart (usage is rebuilt from the queue), and other users are not affected.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::{EnvelopeId, MailboxId, NodeUrl};

#[tokio::test]
async fn queued_hops_per_user_are_capped_across_restarts() {
    let mut node = TestNode::start(|c| {
        c.limits.outbound_hops_per_user = 3;
        c.relay.allow_private_destinations = true;
        // Retries far apart: the hops stay queued while the test runs.
        c.relay.retry_base = sealpost_server::config::Secs::from_secs(3600);
        c.relay.retry_max = sealpost_server::config::Secs::from_secs(3600);
    })
    .await;
    let api = Api::default();
    let (_, cert) = api.descriptor(&node.url).await;
    // Nothing listens on port 9 of loopback: every hop waits for a retry.
    let nowhere = NodeUrl::parse("http://127.0.0.1:9").unwrap();
    let hop = |n: u8| {
        let env = Envelope {
            id: EnvelopeId([n; 16]),
            mailbox: MailboxId([7; 16]),
            sealed: vec![0xc1; 4096],
            token: vec![],
        };
        HopWrapper::wrap(&env, nowhere.clone(), &cert)
            .unwrap()
            .encode()
    };
    let alice = User::new("alice@alpha.test");
    let carol = User::new("carol@alpha.test");
    api.register(&node.url, &alice, None).await;
    api.register(&node.url, &carol, None).await;
    let alice_mb = api.mailbox(&node.url, &alice).await;
    let carol_mb = api.mailbox(&node.url, &carol).await;
    let token = api.token(&node.url, &alice_mb, &alice.keys).await;
    for n in 0..3 {
        let a = api.submit(&node.url, Some(&token), hop(n)).await;
        assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");
    }
    let a = api.submit(&node.url, Some(&token), hop(3)).await;
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        "{a:?}"
    );

    // Another user still gets through.
    let carol_token = api.token(&node.url, &carol_mb, &carol.keys).await;
    let a = api.submit(&node.url, Some(&carol_token), hop(4)).await;
    assert_eq!(a.0, StatusCode::ACCEPTED, "{a:?}");

    // After a restart the queue still counts.
    node.stop().await;
    node.restart().await;
    let token = api.token(&node.url, &alice_mb, &alice.keys).await;
    let a = api.submit(&node.url, Some(&token), hop(5)).await;
    assert_eq!(
        (a.0, code(&a)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        "{a:?}"
    );
    node.stop().await;
}
