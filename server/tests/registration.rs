//! Registration policies: `invite` (each code once; an existing account answers without
//! one) and `closed`.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_server::config::RegistrationPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_and_closed_policies() {
    let api = Api::default();
    let mut invite = TestNode::start(|c| {
        c.registration.policy = RegistrationPolicy::Invite;
        c.registration.invites = vec!["first-code".into(), "second-code".into()];
    })
    .await;
    let mut closed = TestNode::start(|c| c.registration.policy = RegistrationPolicy::Closed).await;
    let (ann, ben) = (User::new("ann@gamma.test"), User::new("ben@gamma.test"));

    let refused = |a: &Answer, status: StatusCode, c: &str| a.0 == status && code(a) == c;
    assert!(refused(
        &api.register(&invite.url, &ann, None).await,
        StatusCode::FORBIDDEN,
        "bad_invite"
    ));
    assert!(refused(
        &api.register(&invite.url, &ann, Some("guess")).await,
        StatusCode::FORBIDDEN,
        "bad_invite"
    ));
    let created = api.register(&invite.url, &ann, Some("first-code")).await;
    assert_eq!(created.0, StatusCode::CREATED, "{created:?}");
    assert_eq!(
        created.1["node_key"].as_str().unwrap(),
        hex::encode(invite.node_key)
    );
    assert_eq!(created.1["url"].as_str().unwrap(), invite.url.as_str());
    // The same certificate again: the same mailbox, no invite needed.
    let again = api.register(&invite.url, &ann, None).await;
    assert_eq!(
        (again.0, &again.1["mailbox"]),
        (StatusCode::OK, &created.1["mailbox"])
    );
    // A used code does not work twice; an unused one does.
    assert!(refused(
        &api.register(&invite.url, &ben, Some("first-code")).await,
        StatusCode::FORBIDDEN,
        "bad_invite"
    ));
    assert_eq!(
        api.register(&invite.url, &ben, Some("second-code")).await.0,
        StatusCode::CREATED
    );

    assert!(refused(
        &api.register(&closed.url, &ann, None).await,
        StatusCode::FORBIDDEN,
        "forbidden"
    ));
    invite.stop().await;
    closed.stop().await;
}
