//! `sealpost fetch` of a few hundred letters from a real `sealpost-node` goes through the
//! batched endpoints (`spec/api.md` §Mailbox, `spec/client.md` §Fetch): every letter is
//! stored once and verified, the node is asked with batched fetches and acks only (no
//! per-letter GET or DELETE), and the mailbox is empty afterwards.

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{SecretIdentity, cert_from_bytes};
use sealpost_proto::letter::Letter;
use sealpost_proto::seal::{encrypt_to, seal};
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};
use sealpost_testkit::api::{Api, peer_key};
use sealpost_tests::{Node, Resolve, User};
use serde_json::Value;

const LETTERS: usize = 300;

fn mailbox_of(user: &User) -> MailboxId {
    let config: Value =
        serde_json::from_slice(&std::fs::read(user.profile().join("config.json")).unwrap())
            .unwrap();
    MailboxId::from_hex(config["homes"][0]["mailbox"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_hundreds_of_letters_goes_through_the_batched_endpoints() {
    let node = Node::start_with(
        "batch",
        &[
            "--set",
            "limits.deliver_per_minute=0",
            "--set",
            "limits.submit_per_minute=0",
        ],
    );
    let mut resolve = Resolve::default();
    resolve.add("fetch.test", &node.url);
    let alice = User::init("alice@fetch.test", &[&node], &resolve);
    let bob = User::init("bob@fetch.test", &[&node], &resolve);
    let url = NodeUrl::parse(&node.url).unwrap();
    let api = Api::default();
    let (_, node_cert) = api.descriptor(&url).await.unwrap();
    let keys =
        SecretIdentity::from_bytes(&std::fs::read(alice.profile().join("secret.key")).unwrap())
            .unwrap()
            .unlock(None)
            .unwrap();
    let bob_cert =
        cert_from_bytes(&std::fs::read(bob.profile().join("secret.key")).unwrap()).unwrap();
    let bob_mailbox = mailbox_of(&bob);
    let peer = peer_key();
    let mut ids = Vec::new();
    for i in 0..LETTERS {
        let letter = Letter::new(
            Address::parse("alice@fetch.test").unwrap(),
            vec![Address::parse("bob@fetch.test").unwrap()],
            format!("letter {i}"),
            format!("This is letter number {i}.\r\n"),
            1_700_000_000 + i as i64,
        );
        let env = Envelope {
            id: EnvelopeId::random(),
            mailbox: bob_mailbox,
            sealed: seal(&letter, &keys, &bob_cert).unwrap(),
            token: vec![],
        };
        ids.push(env.id.to_hex());
        let payload = encrypt_to(&env.encode(), &node_cert).unwrap();
        let (status, body) = api.deliver(&url, &peer, payload).await.unwrap();
        assert!(status.is_success(), "deliver {i}: {status} {body}");
    }

    let out = bob.ok(&["--json", "fetch"], b"");
    let report = out.json();
    let new = report["new"].as_array().unwrap();
    assert_eq!(new.len(), LETTERS, "{report}");
    let mut got: Vec<String> = new
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every letter once");
    assert!(
        new.iter().all(|m| m["verified"] == true),
        "every letter verified against Alice's pinned key"
    );
    assert_eq!(report["nodes"][0]["acked"], LETTERS, "{report}");

    let metric = |series: String| {
        let api = api.clone();
        let url = url.clone();
        async move { api.metric(&url, &series).await.unwrap() }
    };
    let requests = |route: &str, class: &str| {
        format!("sealpost_http_requests_total{{route=\"{route}\",status=\"{class}\"}}")
    };
    assert!(metric(requests("fetch_batch", "2xx")).await >= 1.0);
    assert!(metric(requests("ack_batch", "2xx")).await >= 1.0);
    assert_eq!(
        metric(requests("get_envelope", "2xx")).await,
        0.0,
        "no single GET"
    );
    assert_eq!(
        metric(requests("ack", "2xx")).await,
        0.0,
        "no single DELETE"
    );

    // Nothing left on the node: a second fetch finds nothing.
    let again = bob.ok(&["--json", "fetch"], b"").json();
    assert_eq!(again["new"].as_array().map_or(0, Vec::len), 0, "{again}");
    assert_eq!(again["nodes"][0]["listed"], 0, "{again}");
}
