//! Graceful shutdown under load: deliveries keep coming while the node is told to stop.
//! Every delivery the node answered `200` for is there after a restart; none twice.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_a_shutdown_under_load() {
    let api = Api::default();
    let mut node = TestNode::start(|c| c.limits.deliver_per_minute = 0).await;
    let (alice, bob) = (User::new("alice@alpha.test"), User::new("bob@beta.test"));
    let bob_mb = api.mailbox(&node.url, &bob).await;
    let (_, cert) = api.descriptor(&node.url).await;
    let proto = envelope(&alice, &bob, bob_mb, "load", "x");
    let answered = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..20 {
        let mut batch = Vec::new();
        for _ in 0..15 {
            let mut e = proto.clone();
            e.id = sealpost_proto::EnvelopeId::random();
            batch.push((e.id.to_hex(), hop(&e, &node.url, &cert).payload));
        }
        let (api, url, answered) = (api.clone(), node.url.clone(), answered.clone());
        let key = peer_key();
        senders.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for (id, payload) in batch {
                let h = sealpost_proto::httpsig::sign_request(
                    &key,
                    "POST",
                    url.authority(),
                    "/v1/deliver",
                    &payload,
                    now(),
                );
                let sent = api
                    .http
                    .post(url.join("/v1/deliver"))
                    .header("content-digest", h.content_digest)
                    .header("signature-input", h.signature_input)
                    .header("signature", h.signature)
                    .body(payload)
                    .send()
                    .await;
                if sent.is_ok_and(|resp| resp.status() == StatusCode::OK) {
                    ok.push(id);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            ok
        }));
    }
    // Stop while deliveries are in flight.
    eventually("some deliveries answered", || {
        let answered = answered.clone();
        async move { (answered.load(Ordering::Relaxed) >= 40).then_some(()) }
    })
    .await;
    node.stop().await;
    let mut acknowledged = Vec::new();
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 40,
        "{} acknowledged",
        acknowledged.len()
    );

    node.restart().await;
    let token = api.token(&node.url, &bob_mb, &bob.keys).await;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .http
            .get(
                node.url
                    .join(&format!("/v1/mailbox/{bob_mb}?after={after}&limit=1000")),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let page = answer(page).await;
        let items = page.1["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        stored.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        after = page.1["next"].as_u64().unwrap();
    }
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no envelope stored twice");
    for id in &acknowledged {
        assert!(unique.contains(id), "acknowledged envelope {id} lost");
    }
    node.stop().await;
}
