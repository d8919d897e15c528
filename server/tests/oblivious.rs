//! Oblivious lookups (spec/protocol.md §11, spec/api.md "Oblivious lookups") between two
//! nodes in one process: alpha relays, beta answers. A record comes back only to whoever
//! sealed the request; the relay carries opaque bytes; the gateway serves record and
//! descriptor GETs only; the relay refuses private targets when told to, bounds what it
//! reads, and rate-limits; an unreachable target is reported as such.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::NodeUrl;
use sealpost_proto::api;
use sealpost_proto::oblivious::{
    LookupRequest, MAX_ENCAPSULATED_REQUEST, REQUEST_MEDIA_TYPE, RESPONSE_SIZES, seal_request,
};

/// Seals a GET of `path` to `target` and relays it through `relay`: (status, body).
async fn relayed(
    api: &Api,
    relay: &NodeUrl,
    target: &NodeUrl,
    key: &[u8],
    path: &str,
) -> (
    StatusCode,
    Vec<u8>,
    sealpost_proto::oblivious::ResponseOpener,
) {
    let (enc, opener) = seal_request(
        key,
        target.authority(),
        &LookupRequest { path: path.into() },
    )
    .unwrap();
    let resp = api
        .http
        .post(relay.join(api::RELAY_OHTTP))
        .header(api::TARGET_HEADER, target.as_str())
        .header("content-type", REQUEST_MEDIA_TYPE)
        .body(enc)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec(), opener)
}

/// A raw `POST` of `body` to `path` at `node` with `headers`: the status.
async fn post(
    api: &Api,
    node: &NodeUrl,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> StatusCode {
    let mut req = api.http.post(node.join(path)).body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_looked_up_through_a_relay_that_sees_nothing_of_it() {
    let api = Api::default();
    let mut alpha = TestNode::start(|_| {}).await;
    let mut beta = TestNode::start(|_| {}).await;
    let bob = User::new("bob@beta.test");
    let bob_mb = api.mailbox(&beta.url, &bob).await;
    let rec = record(&bob, &[(&beta.url, beta.node_key, bob_mb)], 1);
    assert_eq!(
        api.put_record(&beta.url, "bob@beta.test", rec.clone())
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    // The descriptor, through the relay, carries beta's OHTTP key.
    let resp = api
        .http
        .get(alpha.url.join(api::RELAY_DESCRIPTOR))
        .header(api::TARGET_HEADER, beta.url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    let signed: sealpost_proto::descriptor::SignedDescriptor =
        sealpost_proto::codec::Codec::decode(&bytes).unwrap();
    let (desc, _) = signed.verify().unwrap();
    assert_eq!(desc.url, beta.url);
    let key = desc.ohttp_key.expect("a new node publishes its OHTTP key");

    // The record, sealed to beta, relayed by alpha.
    let (status, body, opener) = relayed(
        &api,
        &alpha.url,
        &beta.url,
        &key,
        &api::record("bob@beta.test"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !body.windows(7).any(|w| w == b"bob@bet"),
        "the relay carries ciphertext"
    );
    let answer = opener.open(&body).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, rec);

    // Unknown addresses and anything but records and the descriptor.
    let (_, body, opener) = relayed(
        &api,
        &alpha.url,
        &beta.url,
        &key,
        &api::record("nobody@beta.test"),
    )
    .await;
    let answer = opener.open(&body).unwrap();
    assert_eq!(answer.status, 404);
    assert!(String::from_utf8_lossy(&answer.body).contains("unknown_address"));
    for path in [api::METRICS, "/v1/mailbox/00", api::HEALTH] {
        let (_, body, opener) = relayed(&api, &alpha.url, &beta.url, &key, path).await;
        assert_eq!(opener.open(&body).unwrap().status, 404, "{path}");
    }
    let (_, body, opener) = relayed(&api, &alpha.url, &beta.url, &key, api::DESCRIPTOR).await;
    let answer = opener.open(&body).unwrap();
    assert_eq!((answer.status, answer.body), (200, bytes.to_vec()));

    // Every answer has one of the fixed sizes.
    // Every answer has one of the fixed sizes: nonce (32 bytes with ChaCha20-Poly1305),
    // padded message, tag.
    assert_eq!(body.len(), 32 + RESPONSE_SIZES[0] + 16);

    // Sealed to another key (alpha's), beta cannot open it.
    let (alpha_desc, _) = api.descriptor(&alpha.url).await;
    let (status, _, _) = relayed(
        &api,
        &alpha.url,
        &beta.url,
        &alpha_desc.ohttp_key.unwrap(),
        &api::record("bob@beta.test"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "the target refused it");

    // The gateway itself: only message/ohttp-req, bounded.
    let status = post(&api, &beta.url, api::OHTTP_GATEWAY, &[], vec![0u8; 100]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let status = post(
        &api,
        &beta.url,
        api::OHTTP_GATEWAY,
        &[("content-type", REQUEST_MEDIA_TYPE)],
        vec![0u8; MAX_ENCAPSULATED_REQUEST + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    alpha.stop().await;
    beta.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_guards_its_targets_and_reports_unreachable_ones() {
    let api = Api::default();
    let mut strict = TestNode::start(|c| c.relay.allow_private_destinations = false).await;
    let mut beta = TestNode::start(|_| {}).await;
    let (desc, _) = api.descriptor(&beta.url).await;
    let key = desc.ohttp_key.unwrap();
    // A node that may only reach public addresses asks no loopback target.
    let (status, body, _) = relayed(
        &api,
        &strict.url,
        &beta.url,
        &key,
        &api::record("a@beta.test"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let resp = api
        .http
        .get(strict.url.join(api::RELAY_DESCRIPTOR))
        .header(api::TARGET_HEADER, beta.url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Nothing listens: refused, said so.
    let mut open = TestNode::start(|_| {}).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        NodeUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    };
    let (status, body, _) = relayed(&api, &open.url, &dead, &key, "/x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        String::from_utf8_lossy(&body).contains("target_refused"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // No target, a bad one, an oversized request.
    let status = post(&api, &open.url, api::RELAY_OHTTP, &[], vec![1u8; 10]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let status = post(
        &api,
        &open.url,
        api::RELAY_OHTTP,
        &[(api::TARGET_HEADER, beta.url.as_str())],
        vec![1u8; MAX_ENCAPSULATED_REQUEST + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    strict.stop().await;
    beta.stop().await;
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_lookups_are_rate_limited_per_client_address() {
    let api = Api::default();
    let mut relay = TestNode::start(|c| {
        c.limits.lookups_per_minute_per_ip = 1;
        c.limits.lookups_burst_per_ip = 2;
    })
    .await;
    let mut beta = TestNode::start(|_| {}).await;
    let (desc, _) = api.descriptor(&beta.url).await;
    let key = desc.ohttp_key.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _, _) = relayed(
            &api,
            &relay.url,
            &beta.url,
            &key,
            &api::record("a@beta.test"),
        )
        .await;
        statuses.push(status);
    }
    // Twice the lookup burst passes, then the client address is refused.
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    relay.stop().await;
    beta.stop().await;
}
