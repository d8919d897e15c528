//! The batched mailbox endpoints (`spec/api.md` §Mailbox): `POST /v1/mailbox/{mb}/fetch`
//! answers the envelopes at a list of sequence numbers (the same bytes as one `GET` each,
//! nothing where there is none), `POST /v1/mailbox/{mb}/ack` acknowledges a list in one
//! write, per device; both refuse a missing or foreign token, an empty or oversized list and
//! a body that is not `{"seqs": [numbers]}`, with their error codes.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use sealpost_proto::batch::EnvelopeBatch;
use sealpost_proto::codec::Codec;
use sealpost_proto::limits::MAX_BATCH_SEQS;
use sealpost_proto::{MailboxId, NodeUrl};
use sealpost_testkit::api::Api as Kit;
use serde_json::{Value, json};

/// A mailbox on `url` and a peer that delivers to it.
struct Inbox {
    url: NodeUrl,
    mailbox: MailboxId,
    from: User,
    to: User,
    cert: sealpost_proto::openpgp::Cert,
    peer: SigningKey,
}

impl Inbox {
    async fn new(api: &Api, url: &NodeUrl, address: &str) -> Inbox {
        let to = User::new(address);
        let mailbox = api.mailbox(url, &to).await;
        let (_, cert) = api.descriptor(url).await;
        Inbox {
            url: url.clone(),
            mailbox,
            from: User::new("alice@alpha.test"),
            to,
            cert,
            peer: peer_key(),
        }
    }

    async fn deliver(&self, api: &Api, n: usize) {
        for i in 0..n {
            let env = envelope(&self.from, &self.to, self.mailbox, "hi", &format!("{i}"));
            let a = api
                .deliver(
                    &self.url,
                    &self.peer,
                    hop(&env, &self.url, &self.cert).payload,
                )
                .await;
            assert!(a.0.is_success(), "deliver: {a:?}");
        }
    }

    async fn fetch(&self, kit: &Kit, body: Value, token: Option<&str>) -> reqwest::Response {
        kit.fetch_batch(&self.url, &self.mailbox, &body, token)
            .await
            .expect("fetch batch")
    }

    async fn ack(&self, kit: &Kit, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        kit.ack_batch(&self.url, &self.mailbox, &body, token)
            .await
            .expect("ack batch")
    }
}

async fn seqs(api: &Api, m: &Inbox, token: &str) -> Vec<u64> {
    api.items(&m.url, &m.mailbox, token)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fetches_what_single_gets_do_and_a_batch_ack_deletes() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|_| {}).await;
    let m = Inbox::new(&api, &node.url, "bob@beta.test").await;
    m.deliver(&api, 5).await;
    let token = api.token(&m.url, &m.mailbox, &m.to.keys).await;

    let resp = m
        .fetch(&kit, json!({"seqs": [3, 1, 99, 5, 2, 4]}), Some(&token))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let batch = EnvelopeBatch::decode(&resp.bytes().await.unwrap()).expect("an envelope batch");
    let order: Vec<u64> = batch.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        order,
        vec![3, 1, 99, 5, 2, 4],
        "every one, in the order asked"
    );
    for e in &batch.entries {
        let single = api.get(&m.url, &m.mailbox, e.seq, Some(&token)).await;
        if e.seq == 99 {
            assert_eq!(e.envelope, None);
            assert_eq!(single.status(), StatusCode::NOT_FOUND);
        } else {
            let want = single.bytes().await.unwrap();
            assert_eq!(e.envelope.as_deref(), Some(&want[..]), "seq {}", e.seq);
        }
    }

    let a = m.ack(&kit, json!({"seqs": [1, 2, 3]}), Some(&token)).await;
    assert_eq!(a.0, StatusCode::OK, "{a:?}");
    assert_eq!(a.1, json!({"deleted": 3, "recorded": 0, "missing": 0}));
    assert_eq!(seqs(&api, &m, &token).await, vec![4, 5]);
    let a = m.ack(&kit, json!({"seqs": [1, 4, 4]}), Some(&token)).await;
    assert_eq!(a.1, json!({"deleted": 1, "recorded": 0, "missing": 2}));
    let resp = m.fetch(&kit, json!({"seqs": [4, 5]}), Some(&token)).await;
    let batch = EnvelopeBatch::decode(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(batch.entries[0].envelope, None, "acked, so gone");
    assert!(batch.entries[1].envelope.is_some());
    assert_eq!(
        api.metric(
            &m.url,
            "sealpost_http_requests_total{route=\"fetch_batch\",status=\"2xx\"}"
        )
        .await,
        2.0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_ack_is_the_devices_own() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|c| c.devices.max_per_account = 3).await;
    let m = Inbox::new(&api, &node.url, "bob@beta.test").await;
    m.deliver(&api, 3).await;
    let account = api.token(&m.url, &m.mailbox, &m.to.keys).await;
    let (k1, k2) = (
        SigningKey::from_bytes(&rand::random()),
        SigningKey::from_bytes(&rand::random()),
    );
    let a = kit.add_device(&m.url, Some(&account), &k1, "laptop").await;
    assert_eq!(a.unwrap().0, StatusCode::CREATED);
    let t1 = kit.device_token(&m.url, &m.mailbox, &k1).await.unwrap().1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = kit.add_device(&m.url, Some(&t1), &k2, "phone").await;
    assert_eq!(a.unwrap().0, StatusCode::CREATED);
    let t2 = kit.device_token(&m.url, &m.mailbox, &k2).await.unwrap().1["token"]
        .as_str()
        .unwrap()
        .to_string();

    let a = m.ack(&kit, json!({"seqs": [1, 2]}), Some(&t1)).await;
    assert_eq!(a.1, json!({"deleted": 0, "recorded": 2, "missing": 0}));
    assert_eq!(seqs(&api, &m, &t1).await, vec![3]);
    assert_eq!(seqs(&api, &m, &t2).await, vec![1, 2, 3]);
    let a = m.ack(&kit, json!({"seqs": [2, 3]}), Some(&t2)).await;
    assert_eq!(a.1, json!({"deleted": 1, "recorded": 1, "missing": 0}));
    assert_eq!(seqs(&api, &m, &t2).await, vec![1]);

    // A removed device's batch is refused like its single ack.
    let a = kit
        .remove_device(
            &m.url,
            Some(&t1),
            &sealpost_proto::DeviceId::of_key(&k2.verifying_key().to_bytes()),
        )
        .await
        .unwrap();
    assert!(a.0.is_success(), "{a:?}");
    let a = m.ack(&kit, json!({"seqs": [1]}), Some(&t2)).await;
    assert_eq!(a.0, StatusCode::UNAUTHORIZED, "{a:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoints_refuse_bad_input() {
    let (api, kit) = (Api::default(), Kit::default());
    let mut node = TestNode::start(|_| {}).await;
    let m = Inbox::new(&api, &node.url, "bob@beta.test").await;
    let other = Inbox::new(&api, &node.url, "carol@beta.test").await;
    m.deliver(&api, 1).await;
    let token = api.token(&m.url, &m.mailbox, &m.to.keys).await;
    let foreign = api.token(&other.url, &other.mailbox, &other.to.keys).await;

    let too_many: Vec<u64> = (1..=MAX_BATCH_SEQS as u64 + 1).collect();
    let refusals: Vec<(Value, Option<&str>, StatusCode, &str)> = vec![
        (
            json!({"seqs": [1]}),
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            json!({"seqs": [1]}),
            Some(&foreign),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            json!({"seqs": []}),
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({ "seqs": too_many }),
            Some(&token),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({"seqs": ["1"]}),
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"seqs": [-1]}),
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"seqs": [1], "all": true}),
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!([1]),
            Some(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, tok, status, code_want) in refusals {
        let r = m.fetch(&kit, body.clone(), tok).await;
        let a = sealpost_testkit::api::answer(r).await;
        assert_eq!((a.0, code(&a)), (status, code_want), "fetch {body}: {a:?}");
        let a = m.ack(&kit, body.clone(), tok).await;
        assert_eq!((a.0, code(&a)), (status, code_want), "ack {body}: {a:?}");
    }
    // Nothing was acknowledged by any of them.
    assert_eq!(seqs(&api, &m, &token).await, vec![1]);

    // The batch steps take POST only, and a sequence number takes no POST.
    let url = m.url.join(&sealpost_proto::api::mailbox_fetch(m.mailbox));
    let r = kit.http.get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let url = m.url.join(&sealpost_proto::api::envelope(m.mailbox, 1));
    let r = kit.http.post(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    node.stop().await;
}
