//! One client address cannot flood the unauthenticated, costly endpoints (registration,
//! challenges): past `limits.anonymous_burst_per_ip` it gets 429 with Retry-After, and
//! nothing is stored for the refused registrations. Guards `Node::check_anonymous`.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn registrations_and_challenges_per_ip_are_limited() {
    let mut node = TestNode::start(|c| {
        c.limits.anonymous_per_minute_per_ip = 1;
        c.limits.anonymous_burst_per_ip = 3;
        // The test client is on loopback: count it like any other address.
        c.limits.anonymous_exempt_loopback = false;
    })
    .await;
    let api = Api::default();
    let users: Vec<User> = (0..5)
        .map(|i| User::new(&format!("u{i}@alpha.test")))
        .collect();
    let mut answers = Vec::new();
    for u in &users {
        answers.push(api.register(&node.url, u, None).await);
    }
    let ok = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CREATED)
        .count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok, 3, "the burst passes: {answers:?}");
    assert_eq!(limited.len(), 2, "{answers:?}");
    assert!(
        limited.iter().all(|a| code(a) == "rate_limited"),
        "{answers:?}"
    );
    // Challenges draw on the same allowance, which is spent.
    let some_mailbox =
        sealpost_proto::MailboxId::from_hex(answers[0].1["mailbox"].as_str().unwrap()).unwrap();
    let c = api.challenge(&node.url, &some_mailbox).await;
    assert_eq!(
        (c.0, code(&c)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{c:?}"
    );
    node.stop().await;
    // The refused registrations stored nothing; the accepted ones are there.
    let stored = stored_bytes(&node.data_dir());
    let holds = |u: &User| {
        let fp = u.cert.fingerprint();
        stored
            .iter()
            .any(|(_, bytes)| contains(bytes, fp.as_bytes()))
    };
    for (i, (u, a)) in users.iter().zip(&answers).enumerate() {
        assert_eq!(holds(u), a.0 == StatusCode::CREATED, "user {i}: {a:?}");
    }
}
