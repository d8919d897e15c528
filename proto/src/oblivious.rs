//! Oblivious lookups: record and descriptor `GET`s to another node, carried as Binary HTTP
//! (RFC 9292) inside Oblivious HTTP (RFC 9458), so that the device's own home relays them
//! and the node asked never sees the device's address (`spec/protocol.md` §11).
//!
//! The node's OHTTP key configuration (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305) is derived from its Ed25519 seed and published in its signed
//! descriptor. HPKE ([`hpke`]) and known-length Binary HTTP ([`bhttp`]) are implemented here
//! on the workspace's existing primitives (no new shared dependency, no change to a shared
//! dependency's features); both are checked against the RFCs' vectors and the encapsulation
//! against the `ohttp` crate's output (`tests` below).
//!
//! Requests are padded to [`REQUEST_SIZE`] bytes and answers to one of
//! [`RESPONSE_SIZES`] before encryption, with zeros (RFC 9292 §3.8), so the relay learns
//! only which node was asked and the size class of the answer.

use sha2::{Digest, Sha256};

use crate::error::Error;

pub mod bhttp;
pub mod hpke;

use hpke::{AEAD_CHACHA20POLY1305, KDF_HKDF_SHA256, KEM_X25519_SHA256, N_ENC, N_K, N_N, N_T};

/// `Content-Type` of an encapsulated request (RFC 9458 §9.2).
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// `Content-Type` of an encapsulated response (RFC 9458 §9.3).
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// The key identifier of the one configuration a node publishes.
pub const KEY_ID: u8 = 1;
/// Size of every padded Binary HTTP request.
pub const REQUEST_SIZE: usize = 1024;
/// Sizes a padded Binary HTTP answer can have: the smallest that holds it. A signed record
/// or descriptor is at most ~90 KiB (`limits`), so every answer fits the last.
pub const RESPONSE_SIZES: [usize; 3] = [8 * 1024, 32 * 1024, 128 * 1024];
/// Room for the OHTTP header, encapsulated key, nonce and AEAD tags around a message.
pub const ENCAPSULATION_OVERHEAD: usize = 64;
/// Largest encapsulated request a gateway or relay reads.
pub const MAX_ENCAPSULATED_REQUEST: usize = REQUEST_SIZE + ENCAPSULATION_OVERHEAD;
/// Largest encapsulated answer a relay or client reads.
pub const MAX_ENCAPSULATED_RESPONSE: usize = RESPONSE_SIZES[2] + ENCAPSULATION_OVERHEAD;
/// Largest encoded key configuration accepted in a descriptor.
pub const MAX_KEY_CONFIG_BYTES: usize = 512;

/// Domain separation for deriving the OHTTP key pair from the node's Ed25519 seed.
const KEY_CONTEXT: &[u8] = b"sealpost ohttp key v1\0";

fn bad(what: &'static str, reason: impl ToString) -> Error {
    Error::InvalidField {
        what,
        reason: reason.to_string(),
    }
}

/// `info` of the request's HPKE context (RFC 9458 §4.3).
const REQUEST_INFO: &[u8] = b"message/bhttp request";
/// Exporter label of the answer's secret (RFC 9458 §4.4).
const RESPONSE_LABEL: &[u8] = b"message/bhttp response";
/// Length of the answer's nonce and of the exported secret: max(Nn, Nk).
const RESPONSE_NONCE: usize = if N_N > N_K { N_N } else { N_K };
/// The request header: key id, KEM, KDF, AEAD (RFC 9458 §4.1).
const HEADER_LEN: usize = 7;

fn header(key_id: u8) -> [u8; HEADER_LEN] {
    let [k0, k1] = KEM_X25519_SHA256.to_be_bytes();
    let [d0, d1] = KDF_HKDF_SHA256.to_be_bytes();
    let [a0, a1] = AEAD_CHACHA20POLY1305.to_be_bytes();
    [key_id, k0, k1, d0, d1, a0, a1]
}

fn request_info(hdr: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut info = Vec::with_capacity(REQUEST_INFO.len() + 1 + HEADER_LEN);
    info.extend_from_slice(REQUEST_INFO);
    info.push(0);
    info.extend_from_slice(hdr);
    info
}

/// The answer's AEAD key and nonce from the request's context (RFC 9458 §4.4).
fn response_keys(ctx: &hpke::Context, enc: &[u8; N_ENC], nonce: &[u8]) -> ([u8; N_K], [u8; N_N]) {
    let secret: [u8; RESPONSE_NONCE] = ctx.export(RESPONSE_LABEL);
    let mut salt = Vec::with_capacity(N_ENC + nonce.len());
    salt.extend_from_slice(enc);
    salt.extend_from_slice(nonce);
    hpke::response_keys(&salt, &secret)
}

/// Appends zeros up to the smallest of `sizes` that holds `msg`.
fn pad(mut msg: Vec<u8>, sizes: &[usize], what: &'static str) -> Result<Vec<u8>, Error> {
    let size = sizes
        .iter()
        .copied()
        .find(|s| *s >= msg.len())
        .ok_or_else(|| {
            bad(
                what,
                format!("{} bytes do not fit any padded size", msg.len()),
            )
        })?;
    msg.resize(size, 0);
    Ok(msg)
}

/// Reads one Binary HTTP message followed by zero padding only.
fn read_padded<'a>(bytes: &'a [u8], what: &'static str) -> Result<bhttp::Message<'a>, Error> {
    let (msg, end) = bhttp::decode(bytes).map_err(|e| bad(what, e))?;
    if bytes
        .get(end..)
        .is_none_or(|rest| rest.iter().any(|b| *b != 0))
    {
        return Err(bad(what, "non-zero bytes after the message"));
    }
    Ok(msg)
}

/// A lookup a gateway may answer: `GET` of one path (a record or the descriptor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupRequest {
    pub path: String,
}

impl LookupRequest {
    /// The padded Binary HTTP request (`authority`: the node's, as in its URL).
    pub fn encode(&self, authority: &str) -> Result<Vec<u8>, Error> {
        let out = bhttp::encode_request(
            b"GET",
            b"https",
            authority.as_bytes(),
            self.path.as_bytes(),
            b"",
        );
        pad(out, &[REQUEST_SIZE], "oblivious request")
    }

    /// Parses a padded request; anything but a `GET` with an absolute path is refused.
    pub fn decode(bytes: &[u8]) -> Result<LookupRequest, Error> {
        const WHAT: &str = "oblivious request";
        if bytes.len() != REQUEST_SIZE {
            return Err(bad(
                WHAT,
                format!("{} bytes, not {REQUEST_SIZE}", bytes.len()),
            ));
        }
        let bhttp::Message::Request {
            method,
            path,
            content,
            ..
        } = read_padded(bytes, WHAT)?
        else {
            return Err(bad(WHAT, "not a request"));
        };
        if method != b"GET" {
            return Err(bad(WHAT, "only GET is relayed"));
        }
        let path = std::str::from_utf8(path)
            .ok()
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| bad(WHAT, "no absolute path"))?;
        if !content.is_empty() {
            return Err(bad(WHAT, "a GET has no content"));
        }
        Ok(LookupRequest {
            path: path.to_string(),
        })
    }
}

/// A gateway's answer: the status and the body (a signed record or descriptor, or the JSON
/// error body of `spec/api.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl LookupResponse {
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        if !(200..=599).contains(&self.status) {
            return Err(bad(
                "status",
                format!("{} is not a final status", self.status),
            ));
        }
        let out = bhttp::encode_response(self.status, &self.body);
        pad(out, &RESPONSE_SIZES, "oblivious response")
    }

    pub fn decode(bytes: &[u8]) -> Result<LookupResponse, Error> {
        const WHAT: &str = "oblivious response";
        if !RESPONSE_SIZES.contains(&bytes.len()) {
            return Err(bad(
                WHAT,
                format!("{} bytes is not a padded size", bytes.len()),
            ));
        }
        let bhttp::Message::Response { status, content } = read_padded(bytes, WHAT)? else {
            return Err(bad(WHAT, "not a response"));
        };
        Ok(LookupResponse {
            status,
            body: content.to_vec(),
        })
    }
}

/// A node's OHTTP gateway key (the private half).
pub struct GatewayKey {
    sk: [u8; 32],
    config: Vec<u8>,
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKey")
            .field("config", &hex::encode(&self.config))
            .finish_non_exhaustive()
    }
}

/// The encoded key configuration (RFC 9458 §3.1) of one key and the one suite.
fn encode_config(key_id: u8, pk: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 2 + 32 + 2 + 4);
    out.push(key_id);
    out.extend_from_slice(&KEM_X25519_SHA256.to_be_bytes());
    out.extend_from_slice(pk);
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&KDF_HKDF_SHA256.to_be_bytes());
    out.extend_from_slice(&AEAD_CHACHA20POLY1305.to_be_bytes());
    out
}

/// A key configuration a client can encrypt to: its id and public key.
struct ClientConfig {
    key_id: u8,
    pk: [u8; 32],
}

/// Parses one key configuration (RFC 9458 §3.1); it must offer DHKEM(X25519) and, among its
/// symmetric suites, HKDF-SHA256 with ChaCha20-Poly1305. Nothing may follow it.
fn parse_config(config: &[u8]) -> Result<ClientConfig, Error> {
    const WHAT: &str = "OHTTP key configuration";
    if config.len() > MAX_KEY_CONFIG_BYTES {
        return Err(bad(WHAT, "too large"));
    }
    let (&key_id, rest) = config.split_first().ok_or_else(|| bad(WHAT, "empty"))?;
    let (kem, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| bad(WHAT, "truncated"))?;
    if u16::from_be_bytes(*kem) != KEM_X25519_SHA256 {
        return Err(bad(WHAT, "unsupported KEM"));
    }
    let (pk, rest) = rest
        .split_first_chunk::<32>()
        .ok_or_else(|| bad(WHAT, "truncated"))?;
    let (len, suites) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| bad(WHAT, "truncated"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len != suites.len() || len == 0 || len % 4 != 0 {
        return Err(bad(WHAT, "bad length of the symmetric suites"));
    }
    let ours = suites.chunks_exact(4).any(|s| {
        s[..2] == KDF_HKDF_SHA256.to_be_bytes() && s[2..] == AEAD_CHACHA20POLY1305.to_be_bytes()
    });
    if !ours {
        return Err(bad(WHAT, "no supported symmetric suite"));
    }
    Ok(ClientConfig { key_id, pk: *pk })
}

impl GatewayKey {
    /// The key pair derived from the node's Ed25519 seed, so that it stays the same across
    /// restarts without another key file.
    pub fn derive(seed: &[u8; 32]) -> Result<GatewayKey, Error> {
        let ikm = Sha256::new()
            .chain_update(KEY_CONTEXT)
            .chain_update(seed)
            .finalize();
        Ok(GatewayKey::from_ikm(&ikm))
    }

    /// `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3).
    fn from_ikm(ikm: &[u8]) -> GatewayKey {
        let (sk, pk) = hpke::derive_key_pair(ikm);
        GatewayKey {
            sk,
            config: encode_config(KEY_ID, &pk),
        }
    }

    /// The public key configuration (RFC 9458 §3), as published in the descriptor.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// Decrypts and parses an encapsulated request; the [`ResponseSealer`] encrypts the
    /// answer to it.
    pub fn open(&self, enc: &[u8]) -> Result<(LookupRequest, ResponseSealer), Error> {
        let (plain, sealer) = self.open_bytes(enc)?;
        Ok((LookupRequest::decode(&plain)?, sealer))
    }

    /// Decrypts an encapsulated request (RFC 9458 §4.3) to its Binary HTTP bytes.
    fn open_bytes(&self, enc_request: &[u8]) -> Result<(Vec<u8>, ResponseSealer), Error> {
        const WHAT: &str = "oblivious request";
        if enc_request.len() > MAX_ENCAPSULATED_REQUEST {
            return Err(bad(WHAT, "too large"));
        }
        let (hdr, rest) = enc_request
            .split_first_chunk::<HEADER_LEN>()
            .ok_or_else(|| bad(WHAT, "truncated"))?;
        if hdr[0] != KEY_ID {
            return Err(bad(WHAT, "unknown key id"));
        }
        if *hdr != header(KEY_ID) {
            return Err(bad(WHAT, "unsupported algorithms"));
        }
        let (enc, ct) = rest
            .split_first_chunk::<N_ENC>()
            .ok_or_else(|| bad(WHAT, "truncated"))?;
        let ctx =
            hpke::setup_receiver(enc, &self.sk, &request_info(hdr)).map_err(|e| bad(WHAT, e))?;
        let plain = ctx.open(b"", ct).map_err(|e| bad(WHAT, e))?;
        Ok((plain, ResponseSealer { ctx, enc: *enc }))
    }
}

/// Encrypts the answer to one opened request.
#[derive(Debug)]
pub struct ResponseSealer {
    ctx: hpke::Context,
    enc: [u8; N_ENC],
}

impl ResponseSealer {
    pub fn seal(self, response: &LookupResponse) -> Result<Vec<u8>, Error> {
        Ok(self.seal_bytes(&response.encode()?, rand::random()))
    }

    /// RFC 9458 §4.4: `response_nonce || Seal(key, nonce, "", response)`.
    fn seal_bytes(&self, response: &[u8], nonce: [u8; RESPONSE_NONCE]) -> Vec<u8> {
        let (key, aead_nonce) = response_keys(&self.ctx, &self.enc, &nonce);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&hpke::seal(&key, &aead_nonce, b"", response));
        out
    }
}

/// Checks that `config` is a key configuration a client can encrypt to.
pub fn check_key_config(config: &[u8]) -> Result<(), Error> {
    parse_config(config).map(drop)
}

/// Encrypts `request` to the gateway whose key configuration is `config`; the
/// [`ResponseOpener`] decrypts its answer.
pub fn seal_request(
    config: &[u8],
    authority: &str,
    request: &LookupRequest,
) -> Result<(Vec<u8>, ResponseOpener), Error> {
    seal_bytes(
        config,
        &request.encode(authority)?,
        &rand::random::<[u8; 32]>(),
    )
}

/// RFC 9458 §4.3: `hdr || enc || Seal("", request)`, the ephemeral key derived from `ikm_e`.
fn seal_bytes(
    config: &[u8],
    request: &[u8],
    ikm_e: &[u8],
) -> Result<(Vec<u8>, ResponseOpener), Error> {
    let cfg = parse_config(config)?;
    let hdr = header(cfg.key_id);
    let (enc, ctx) = hpke::setup_sender(&cfg.pk, &request_info(&hdr), ikm_e)
        .map_err(|e| bad("OHTTP key configuration", e))?;
    let mut out = Vec::with_capacity(HEADER_LEN + N_ENC + request.len() + N_T);
    out.extend_from_slice(&hdr);
    out.extend_from_slice(&enc);
    out.extend_from_slice(&ctx.seal(b"", request));
    Ok((out, ResponseOpener { ctx, enc }))
}

/// Decrypts the answer to one sealed request.
#[derive(Debug)]
pub struct ResponseOpener {
    ctx: hpke::Context,
    enc: [u8; N_ENC],
}

impl ResponseOpener {
    pub fn open(self, enc: &[u8]) -> Result<LookupResponse, Error> {
        LookupResponse::decode(&self.open_bytes(enc)?)
    }

    fn open_bytes(&self, enc_response: &[u8]) -> Result<Vec<u8>, Error> {
        const WHAT: &str = "oblivious response";
        if enc_response.len() > MAX_ENCAPSULATED_RESPONSE {
            return Err(bad(WHAT, "too large"));
        }
        if enc_response.len() < RESPONSE_NONCE + N_T {
            return Err(bad(WHAT, "truncated"));
        }
        let (nonce, ct) = enc_response.split_at(RESPONSE_NONCE);
        let (key, aead_nonce) = response_keys(&self.ctx, &self.enc, nonce);
        hpke::open(&key, &aead_nonce, b"", ct).map_err(|e| bad(WHAT, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by the `ohttp` and `bhttp` crates 0.8 (Mozilla's implementation, rust-hpke
    /// backend): `KeyConfig::derive(1, X25519Sha256, [HkdfSha256/ChaCha20Poly1305], ikm)`,
    /// a known-length `GET`, a client's encapsulation of it and the server's encapsulated
    /// answer `200 "hello"`. Ours must read what theirs wrote, byte for byte.
    mod ohttp_crate_vector {
        pub const IKM: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
        pub const CONFIG: &str =
            "010020f449a51ae90898efc49afb64305f1ebc2e0b47f6d83919bc3f98d3e7f2fe6b0b000400010003";
        pub const BHTTP_REQUEST: &str = concat!(
            "00034745540568747470730e626574612e746573743a383434331b2f76312f72",
            "65636f7264732f626f62253430626574612e74657374000000"
        );
        pub const BHTTP_RESPONSE: &str = "0140c8000568656c6c6f00";
        pub const ENC_REQUEST: &str = concat!(
            "0100200001000322311155ba74528ee899e07d57d872f8af46a6f72ae3a496ba9ba5182464403",
            "17e12082345cb9432398edde211926d2a71fda1659482a81af13929a4261d2c7ae200e2e22236",
            "759d12933fbe511d63b25089e4cfde500f2d15b137c2d433211ed9213388dbe57897ef"
        );
        pub const ENC_RESPONSE: &str = concat!(
            "692d6cd48db0af52fde7c6dc4c8f2ff14abb95ceda8eadfcce9096f58a1ceec6c53c356f07c08f",
            "c0f601be94838c50887e657a03ba1937b84a8902"
        );
    }

    #[test]
    fn reads_what_the_ohttp_crate_wrote() {
        use ohttp_crate_vector as v;
        let h = |s: &str| hex::decode(s).unwrap();
        let gw = GatewayKey::from_ikm(&h(v::IKM));
        assert_eq!(
            gw.config(),
            h(v::CONFIG),
            "key derivation and configuration encoding"
        );
        assert_eq!(
            bhttp::encode_request(
                b"GET",
                b"https",
                b"beta.test:8443",
                b"/v1/records/bob%40beta.test",
                b""
            ),
            h(v::BHTTP_REQUEST)
        );
        assert_eq!(bhttp::encode_response(200, b"hello"), h(v::BHTTP_RESPONSE));
        let (plain, sealer) = gw.open_bytes(&h(v::ENC_REQUEST)).unwrap();
        assert_eq!(plain, h(v::BHTTP_REQUEST));
        // Our sealer, given their answer's nonce, writes their answer byte for byte.
        let enc_response = h(v::ENC_RESPONSE);
        let nonce: [u8; RESPONSE_NONCE] = enc_response[..RESPONSE_NONCE].try_into().unwrap();
        assert_eq!(
            sealer.seal_bytes(&h(v::BHTTP_RESPONSE), nonce),
            enc_response
        );
        // And their client's request, as our client would write it, opens the same way.
        let (ours, opener) = seal_bytes(gw.config(), &h(v::BHTTP_REQUEST), &[3; 32]).unwrap();
        assert_eq!(&ours[..HEADER_LEN], &h(v::ENC_REQUEST)[..HEADER_LEN]);
        assert_eq!(ours.len(), h(v::ENC_REQUEST).len());
        let (plain, sealer) = gw.open_bytes(&ours).unwrap();
        assert_eq!(plain, h(v::BHTTP_REQUEST));
        let answer = sealer.seal_bytes(b"x", [9; RESPONSE_NONCE]);
        assert_eq!(opener.open_bytes(&answer).unwrap(), b"x");
    }

    fn key() -> GatewayKey {
        GatewayKey::derive(&[7; 32]).unwrap()
    }

    #[test]
    fn a_lookup_round_trips_padded_to_fixed_sizes() {
        let gw = key();
        let req = LookupRequest {
            path: "/v1/records/bob%40beta.test".into(),
        };
        let (enc, opener) = seal_request(gw.config(), "beta.test:443", &req).unwrap();
        let (enc2, _) = seal_request(
            gw.config(),
            "b.test",
            &LookupRequest {
                path: "/.well-known/sealpost/node".into(),
            },
        )
        .unwrap();
        assert_eq!(enc.len(), enc2.len(), "requests are one size");
        assert!(enc.len() <= MAX_ENCAPSULATED_REQUEST);
        let (opened, sealer) = gw.open(&enc).unwrap();
        assert_eq!(opened, req);
        let answer = LookupResponse {
            status: 200,
            body: vec![0xab; 3000],
        };
        let sealed = sealer.seal(&answer).unwrap();
        assert_eq!(
            sealed.len(),
            RESPONSE_SIZES[0] + 32 + 16,
            "nonce, padding, tag"
        );
        assert_eq!(opener.open(&sealed).unwrap(), answer);
    }

    #[test]
    fn the_key_is_stable_and_bound_to_the_seed() {
        assert_eq!(key().config(), key().config());
        assert_ne!(
            key().config(),
            GatewayKey::derive(&[8; 32]).unwrap().config()
        );
        check_key_config(key().config()).unwrap();
        assert!(check_key_config(b"\x01\x00").is_err());
    }

    #[test]
    fn tampered_or_foreign_requests_and_answers_are_refused() {
        let gw = key();
        let req = LookupRequest {
            path: "/v1/records/a%40b.test".into(),
        };
        let (mut enc, _) = seal_request(gw.config(), "b.test", &req).unwrap();
        let last = enc.len() - 1;
        enc[last] ^= 1;
        assert!(gw.open(&enc).is_err());
        // Encrypted to another node's key.
        let other = GatewayKey::derive(&[9; 32]).unwrap();
        let (enc, _) = seal_request(other.config(), "b.test", &req).unwrap();
        assert!(gw.open(&enc).is_err());
        assert!(gw.open(&[]).is_err());
        assert!(gw.open(&vec![1; MAX_ENCAPSULATED_REQUEST + 1]).is_err());
        // An answer sealed for another request does not open.
        let (enc, _) = seal_request(gw.config(), "b.test", &req).unwrap();
        let (_, sealer) = gw.open(&enc).unwrap();
        let (_, opener) = seal_request(gw.config(), "b.test", &req).unwrap();
        let sealed = sealer
            .seal(&LookupResponse {
                status: 200,
                body: vec![],
            })
            .unwrap();
        assert!(opener.open(&sealed).is_err());
    }

    #[test]
    fn only_padded_gets_decode() {
        let get = LookupRequest { path: "/x".into() }.encode("a").unwrap();
        assert_eq!(get.len(), REQUEST_SIZE);
        assert!(LookupRequest::decode(&get).is_ok());
        assert!(LookupRequest::decode(&get[..REQUEST_SIZE - 1]).is_err());
        let mut dirty = get.clone();
        dirty[REQUEST_SIZE - 1] = 1;
        assert!(
            LookupRequest::decode(&dirty).is_err(),
            "padding must be zero"
        );
        let mut bytes = bhttp::encode_request(b"POST", b"https", b"a", b"/v1/submit", b"x");
        bytes.resize(REQUEST_SIZE, 0);
        assert!(LookupRequest::decode(&bytes).is_err());
        let long = LookupRequest {
            path: format!("/{}", "a".repeat(REQUEST_SIZE)),
        };
        assert!(long.encode("a").is_err());
        let big = LookupResponse {
            status: 200,
            body: vec![0; RESPONSE_SIZES[2]],
        };
        assert!(big.encode().is_err());
        let r = LookupResponse {
            status: 404,
            body: b"{}".to_vec(),
        };
        let enc = r.encode().unwrap();
        assert_eq!(LookupResponse::decode(&enc).unwrap(), r);
        assert!(LookupResponse::decode(&enc[..100]).is_err());
    }
}
