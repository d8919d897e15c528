//! TLS: with `tls.cert`/`tls.key` the node speaks HTTPS only (rustls), derives an `https://`
//! URL, and its relay reaches another TLS node through `relay.ca_certs`. The certificates
//! come from a throwaway CA made with the `openssl` command.

mod common;

use common::*;
use reqwest::StatusCode;
use sealpost_proto::codec::Codec;
use sealpost_testkit::pki::certificates;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_serve_https_and_relay_to_each_other() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(pki.path());
    let tls = |c: &mut sealpost_server::Config| {
        c.tls.cert = Some(cert.clone());
        c.tls.key = Some(key.clone());
        c.relay.ca_certs = vec![ca.clone()];
    };
    let mut alpha = TestNode::start(tls).await;
    let mut beta = TestNode::start(tls).await;
    assert!(
        alpha.url.as_str().starts_with("https://127.0.0.1:"),
        "{}",
        alpha.url
    );

    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(root)
            .timeout(DEADLINE)
            .build()
            .unwrap(),
    };
    let health = api
        .http
        .get(alpha.url.join("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok\n");
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = format!("http://{}/healthz", alpha.addr);
    let refused = api.http.get(&plain).send().await;
    assert!(refused.is_err() || !refused.unwrap().status().is_success());

    let alice = User::new("alice@alpha.test");
    let bob = User::new("bob@beta.test");
    let alice_mb = api.mailbox(&alpha.url, &alice).await;
    let bob_mb = api.mailbox(&beta.url, &bob).await;
    let (desc, beta_cert) = api.descriptor(&beta.url).await;
    assert_eq!(desc.url, beta.url);
    let env = envelope(
        &alice,
        &bob,
        bob_mb,
        "over tls",
        "both hops encrypted in transit",
    );
    let token = api.token(&alpha.url, &alice_mb, &alice.keys).await;
    let a = api
        .submit(
            &alpha.url,
            Some(&token),
            hop(&env, &beta.url, &beta_cert).encode(),
        )
        .await;
    assert_eq!(a.0, StatusCode::ACCEPTED);
    let bob_token = api.token(&beta.url, &bob_mb, &bob.keys).await;
    let items = eventually("the hop to arrive over TLS", || {
        let (api, url, t) = (api.clone(), beta.url.clone(), bob_token.clone());
        async move {
            let items = api.items(&url, &bob_mb, &t).await;
            (!items.is_empty()).then_some(items)
        }
    })
    .await;
    assert_eq!(items, vec![(1, env.id.to_hex())]);
    alpha.stop().await;
    beta.stop().await;
}
