//! A node that may only relay to public addresses refuses a hop aimed at its own network
//! (SSRF) at submit time, and queues nothing. Guards `relay.allow_private_destinations`.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::{EnvelopeId, MailboxId, NodeUrl};

#[tokio::test]
async fn hops_to_private_addresses_are_refused_unless_allowed() {
    let mut node = TestNode::start(|c| c.relay.allow_private_destinations = false).await;
    let api = Api::default();
    let alice = User::new("alice@alpha.test");
    api.register(&node.url, &alice, None).await;
    let mailbox = api.mailbox(&node.url, &alice).await;
    let token = api.token(&node.url, &mailbox, &alice.keys).await;
    let (_, cert) = api.descriptor(&node.url).await;
    let env = Envelope {
        id: EnvelopeId::random(),
        mailbox: MailboxId([7; 16]),
        sealed: vec![0xc1; 4096],
        token: vec![],
    };
    for target in [
        "http://127.0.0.1:9",
        "http://10.0.0.1",
        "http://169.254.169.254",
        "http://[::1]:80",
    ] {
        let hop = HopWrapper::wrap(&env, NodeUrl::parse(target).unwrap(), &cert).unwrap();
        let (status, body) = api.submit(&node.url, Some(&token), hop.encode()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{target}: {body}");
        assert_eq!(
            code(&(status, body.clone())),
            "forbidden",
            "{target}: {body}"
        );
    }
    node.stop().await;
    let stored = stored_bytes(&node.data_dir());
    let queued =
        |stored: &[(String, Vec<u8>)]| stored.iter().any(|(place, _)| place == "outbound key");
    assert!(!queued(&stored), "nothing was queued");

    // The same node with private destinations allowed (as `init` sets for loopback) queues it.
    let mut open = TestNode::start(|c| c.relay.allow_private_destinations = true).await;
    api.register(&open.url, &alice, None).await;
    let mailbox = api.mailbox(&open.url, &alice).await;
    let token = api.token(&open.url, &mailbox, &alice.keys).await;
    let (_, cert) = api.descriptor(&open.url).await;
    let hop = HopWrapper::wrap(&env, NodeUrl::parse("http://127.0.0.1:9").unwrap(), &cert).unwrap();
    let (status, body) = api.submit(&open.url, Some(&token), hop.encode()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    open.stop().await;
    assert!(
        queued(&stored_bytes(&open.data_dir())),
        "the allowed hop waits in the queue (the check above can see one)"
    );
}
