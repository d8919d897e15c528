//! Writes the cross-implementation vector that `proto/src/oblivious.rs`
//! (`reads_what_the_ohttp_crate_wrote`) checks Sealpost's own OHTTP (RFC 9458) and Binary
//! HTTP (RFC 9292) code against: produced by the `ohttp` and `bhttp` crates (Mozilla's
//! implementation, pure-Rust HPKE backend). Not part of the workspace, so that its
//! dependencies never touch Sealpost's build. Run:
//! `cargo run --manifest-path scripts/ohttp-vector/Cargo.toml` (the request and the answer
//! are fresh each run; the key configuration and the Binary HTTP bytes are fixed).
use ohttp::hpke::{Aead, Kdf, Kem};
fn hex(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
fn main() {
    let ikm = [0x5a_u8; 32];
    let cfg = ohttp::KeyConfig::derive(1, Kem::X25519Sha256,
        vec![ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::ChaCha20Poly1305)], &ikm).unwrap();
    let encoded = cfg.encode().unwrap();
    println!("ikm {}", hex(&ikm));
    println!("config {}", hex(&encoded));
    let req = bhttp::Message::request(b"GET".to_vec(), b"https".to_vec(), b"beta.test:8443".to_vec(), b"/v1/records/bob%40beta.test".to_vec());
    let mut req_bytes = Vec::new();
    req.write_bhttp(bhttp::Mode::KnownLength, &mut req_bytes).unwrap();
    println!("bhttp_request {}", hex(&req_bytes));
    let mut resp = bhttp::Message::response(bhttp::StatusCode::try_from(200u16).unwrap());
    resp.write_content(b"hello");
    let mut resp_bytes = Vec::new();
    resp.write_bhttp(bhttp::Mode::KnownLength, &mut resp_bytes).unwrap();
    println!("bhttp_response {}", hex(&resp_bytes));
    let client = ohttp::ClientRequest::from_encoded_config(&encoded).unwrap();
    let (enc_req, _client_resp) = client.encapsulate(&req_bytes).unwrap();
    println!("enc_request {}", hex(&enc_req));
    let server = ohttp::Server::new(cfg).unwrap();
    let (plain, sresp) = server.decapsulate(&enc_req).unwrap();
    assert_eq!(plain, req_bytes);
    let enc_resp = sresp.encapsulate(&resp_bytes).unwrap();
    println!("enc_response {}", hex(&enc_resp));
}
