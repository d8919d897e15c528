//! Registration policies: `invite` (each code once; an existing account answers without
//! one) and `closed`; and who owns an address: its first account, until that account's key
//! endorses a new one (rotation), which ends the sessions signed in with the old key.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::MailboxId;
use sealpost_proto::codec::Codec;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::record::{SignedRecord, endorse_identity, endorsed_by};
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

/// `identity` with one more User ID (`<address>`), bound like its first one: the same key,
/// now also naming `address`.
fn with_extra_address(identity: &SecretIdentity, address: &str) -> SecretIdentity {
    use sealpost_proto::identity::policy;
    use sealpost_proto::openpgp::packet::UserID;
    use sealpost_proto::openpgp::packet::signature::SignatureBuilder;
    use sealpost_proto::openpgp::parse::Parse;
    use sealpost_proto::openpgp::serialize::SerializeInto;
    use sealpost_proto::openpgp::{Cert, Packet};
    let tsk = Cert::from_bytes(&identity.to_bytes()).unwrap();
    let template = tsk
        .with_policy(policy(), None)
        .unwrap()
        .primary_userid()
        .unwrap()
        .binding_signature()
        .clone();
    let mut signer = tsk
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let uid = UserID::from(format!("<{address}>"));
    let sig = uid
        .bind(&mut signer, &tsk, SignatureBuilder::from(template))
        .unwrap();
    let (tsk, _) = tsk
        .insert_packets(vec![Packet::from(uid), sig.into()])
        .unwrap();
    SecretIdentity::from_bytes(&tsk.as_tsk().to_vec().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_belongs_to_its_first_account_and_moves_only_by_rotation() {
    let api = Api::default();
    let mut node = TestNode::start(|_| {}).await;
    let key = node.node_key;
    let bob = User::new("bob@beta.test");
    let created = api.register(&node.url, &bob, None).await;
    assert_eq!(created.0, StatusCode::CREATED, "{created:?}");
    let mailbox = MailboxId::from_hex(created.1["mailbox"].as_str().unwrap()).unwrap();
    let put = api
        .put_record(
            &node.url,
            "bob@beta.test",
            record(&bob, &[(&node.url, key, mailbox)], 1),
        )
        .await;
    assert_eq!(put.0, StatusCode::NO_CONTENT, "{put:?}");

    // Another key for the same address: 409, and nothing of it is stored.
    let eve = User::new("bob@beta.test");
    let refused = api.register(&node.url, &eve, None).await;
    assert_eq!(
        (refused.0, code(&refused)),
        (StatusCode::CONFLICT, "address_taken"),
        "{refused:?}"
    );
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bob@beta.test belongs to another account"),
        "{refused:?}"
    );
    // An endorsement by a key that is not the owner's is no rotation.
    let mallory = User::new("mallory@beta.test");
    let by_mallory = User::with_identity(
        "bob@beta.test",
        endorse_identity(
            &User::new("bob@beta.test").identity,
            &mallory.keys,
            &bob.address,
        )
        .unwrap(),
    );
    assert_eq!(
        code(&api.register(&node.url, &by_mallory, None).await),
        "address_taken"
    );

    // An account whose key later names bob@beta.test too cannot publish bob's record.
    let mallory_mailbox = api.mailbox(&node.url, &mallory).await;
    let grown = User::with_identity(
        "bob@beta.test",
        with_extra_address(&mallory.identity, "bob@beta.test"),
    );
    assert_eq!(grown.cert.fingerprint(), mallory.cert.fingerprint());
    let hijack = api
        .put_record(
            &node.url,
            "bob@beta.test",
            record(&grown, &[(&node.url, key, mallory_mailbox)], 99),
        )
        .await;
    assert_eq!(
        (hijack.0, code(&hijack)),
        (StatusCode::CONFLICT, "address_taken"),
        "{hijack:?}"
    );

    // Bob signed in with his current key; a second challenge is still unanswered.
    let old_token = api.token(&node.url, &mailbox, &bob.keys).await;
    assert_eq!(
        api.list(&node.url, &mailbox, Some(&old_token)).await.0,
        StatusCode::OK
    );
    let pending = api.challenge(&node.url, &mailbox).await;
    assert_eq!(pending.0, StatusCode::OK, "{pending:?}");
    let pending_nonce = pending.1["nonce"].as_str().unwrap().to_string();

    // Rotation: the new certificate carries a certification by Bob's current key.
    let bob2 = User::with_identity(
        "bob@beta.test",
        endorse_identity(
            &User::new("bob@beta.test").identity,
            &bob.keys,
            &bob.address,
        )
        .unwrap(),
    );
    let rotated = api.register(&node.url, &bob2, None).await;
    assert_eq!(rotated.0, StatusCode::OK, "{rotated:?}");
    assert_eq!(
        rotated.1["mailbox"], created.1["mailbox"],
        "the mailbox stays"
    );
    assert_eq!(rotated.1["rotated"], true);
    // The rotation ended what the old key signed in: its token, and the challenge issued
    // before (even answered with the new key). A sign-in with the new key works.
    let after = api.list(&node.url, &mailbox, Some(&old_token)).await;
    assert_eq!(
        (after.0, code(&after)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{after:?}"
    );
    let late = api
        .answer_challenge(&node.url, &node.url, &mailbox, &pending_nonce, &bob2.keys)
        .await;
    assert_eq!(late.0, StatusCode::UNAUTHORIZED, "{late:?}");
    let fresh = api.challenge(&node.url, &mailbox).await;
    let by_old_key = api
        .answer_challenge(
            &node.url,
            &node.url,
            &mailbox,
            fresh.1["nonce"].as_str().unwrap(),
            &bob.keys,
        )
        .await;
    assert_eq!(by_old_key.0, StatusCode::UNAUTHORIZED, "{by_old_key:?}");
    let new_token = api.token(&node.url, &mailbox, &bob2.keys).await;
    assert_eq!(
        api.list(&node.url, &mailbox, Some(&new_token)).await.0,
        StatusCode::OK
    );
    // Idempotent like any registration.
    let again = api.register(&node.url, &bob2, None).await;
    assert_eq!(
        (again.0, &again.1["mailbox"]),
        (StatusCode::OK, &created.1["mailbox"])
    );
    // The old key no longer publishes; the new one does, and the record shows the endorsement.
    let stale_key = api
        .put_record(
            &node.url,
            "bob@beta.test",
            record(&bob, &[(&node.url, key, mailbox)], 5),
        )
        .await;
    assert_eq!(stale_key.0, StatusCode::FORBIDDEN, "{stale_key:?}");
    let put = api
        .put_record(
            &node.url,
            "bob@beta.test",
            record(&bob2, &[(&node.url, key, mailbox)], 2),
        )
        .await;
    assert_eq!(put.0, StatusCode::NO_CONTENT, "{put:?}");
    let served = api
        .http
        .get(node.url.join("/v1/records/bob@beta.test"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (rec, cert) = SignedRecord::decode(&served)
        .unwrap()
        .verify(now())
        .unwrap();
    assert_eq!(rec.sequence, 2);
    assert_eq!(cert.fingerprint(), bob2.cert.fingerprint());
    assert!(endorsed_by(&cert, &bob.cert, "bob@beta.test"));
    // The replaced key cannot come back: it is not endorsed by the current one.
    assert_eq!(
        code(&api.register(&node.url, &bob, None).await),
        "address_taken"
    );

    node.stop().await;
    let eve_key = eve.cert.fingerprint().as_bytes().to_vec();
    assert_never_stored(
        &node.data_dir(),
        &[("the refused key's fingerprint", eve_key)],
    );
}
