//! Oblivious lookups: record and descriptor `GET`s to another node, carried as Binary HTTP
//! (RFC 9292) inside Oblivious HTTP (RFC 9458), so that the device's own home relays them
//! and the node asked never sees the device's address (`spec/protocol.md` §9).
//!
//! The node's OHTTP key configuration (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 with
//! AES-128-GCM or ChaCha20-Poly1305) is derived from its Ed25519 seed and published in its
//! signed descriptor. Requests are padded to [`REQUEST_SIZE`] bytes and answers to one of
//! [`RESPONSE_SIZES`] before encryption, with zeros (RFC 9292 §3.8), so the relay learns
//! only which node was asked and the size class of the answer.

use std::io::Cursor;

use sha2::{Digest, Sha256};

use crate::error::Error;

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

fn suites() -> Vec<ohttp::SymmetricSuite> {
    use ohttp::hpke::{Aead, Kdf};
    vec![
        ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm),
        ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::ChaCha20Poly1305),
    ]
}

/// Appends zeros up to the smallest of `sizes` that holds `msg`.
fn pad(mut msg: Vec<u8>, sizes: &[usize], what: &'static str) -> Result<Vec<u8>, Error> {
    let size = sizes
        .iter()
        .copied()
        .find(|s| *s >= msg.len())
        .ok_or_else(|| bad(what, format!("{} bytes do not fit any padded size", msg.len())))?;
    msg.resize(size, 0);
    Ok(msg)
}

/// Reads one Binary HTTP message followed by zero padding only.
fn read_padded(bytes: &[u8], what: &'static str) -> Result<bhttp::Message, Error> {
    let mut cursor = Cursor::new(bytes);
    let msg = bhttp::Message::read_bhttp::<_, Cursor<&[u8]>>(&mut cursor)
        .map_err(|e| bad(what, e))?;
    let end = usize::try_from(cursor.position()).map_err(|e| bad(what, e))?;
    if bytes.get(end..).is_none_or(|rest| rest.iter().any(|b| *b != 0)) {
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
        let msg = bhttp::Message::request(
            b"GET".to_vec(),
            b"https".to_vec(),
            authority.as_bytes().to_vec(),
            self.path.as_bytes().to_vec(),
        );
        let mut out = Vec::new();
        msg.write_bhttp(bhttp::Mode::KnownLength, &mut out)
            .map_err(|e| bad("oblivious request", e))?;
        pad(out, &[REQUEST_SIZE], "oblivious request")
    }

    /// Parses a padded request; anything but a `GET` with an absolute path is refused.
    pub fn decode(bytes: &[u8]) -> Result<LookupRequest, Error> {
        const WHAT: &str = "oblivious request";
        if bytes.len() != REQUEST_SIZE {
            return Err(bad(WHAT, format!("{} bytes, not {REQUEST_SIZE}", bytes.len())));
        }
        let msg = read_padded(bytes, WHAT)?;
        let control = msg.control();
        if control.method() != Some(b"GET".as_slice()) {
            return Err(bad(WHAT, "only GET is relayed"));
        }
        let path = control
            .path()
            .and_then(|p| std::str::from_utf8(p).ok())
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| bad(WHAT, "no absolute path"))?;
        if !msg.content().is_empty() {
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
        let status = bhttp::StatusCode::try_from(self.status).map_err(|e| bad("status", e))?;
        let mut msg = bhttp::Message::response(status);
        msg.write_content(&self.body);
        let mut out = Vec::new();
        msg.write_bhttp(bhttp::Mode::KnownLength, &mut out)
            .map_err(|e| bad("oblivious response", e))?;
        pad(out, &RESPONSE_SIZES, "oblivious response")
    }

    pub fn decode(bytes: &[u8]) -> Result<LookupResponse, Error> {
        const WHAT: &str = "oblivious response";
        if !RESPONSE_SIZES.contains(&bytes.len()) {
            return Err(bad(WHAT, format!("{} bytes is not a padded size", bytes.len())));
        }
        let msg = read_padded(bytes, WHAT)?;
        let status = msg
            .control()
            .status()
            .ok_or_else(|| bad(WHAT, "not a response"))?
            .code();
        Ok(LookupResponse {
            status,
            body: msg.content().to_vec(),
        })
    }
}

/// A node's OHTTP gateway key (the private half).
pub struct GatewayKey {
    server: ohttp::Server,
    config: Vec<u8>,
}

impl GatewayKey {
    /// The key pair derived from the node's Ed25519 seed, so that it stays the same across
    /// restarts without another key file.
    pub fn derive(seed: &[u8; 32]) -> Result<GatewayKey, Error> {
        let ikm = Sha256::new()
            .chain_update(KEY_CONTEXT)
            .chain_update(seed)
            .finalize();
        let config =
            ohttp::KeyConfig::derive(KEY_ID, ohttp::hpke::Kem::X25519Sha256, suites(), &ikm)
                .map_err(|e| bad("OHTTP key", e))?;
        let encoded = config.encode().map_err(|e| bad("OHTTP key", e))?;
        let server = ohttp::Server::new(config).map_err(|e| bad("OHTTP key", e))?;
        Ok(GatewayKey {
            server,
            config: encoded,
        })
    }

    /// The public key configuration (RFC 9458 §3), as published in the descriptor.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// Decrypts and parses an encapsulated request; the [`ResponseSealer`] encrypts the
    /// answer to it.
    pub fn open(&self, enc: &[u8]) -> Result<(LookupRequest, ResponseSealer), Error> {
        if enc.len() > MAX_ENCAPSULATED_REQUEST {
            return Err(bad("oblivious request", "too large"));
        }
        let (plain, sealer) = self
            .server
            .decapsulate(enc)
            .map_err(|e| bad("oblivious request", e))?;
        Ok((LookupRequest::decode(&plain)?, ResponseSealer(sealer)))
    }
}

/// Encrypts the answer to one opened request.
pub struct ResponseSealer(ohttp::ServerResponse);

impl ResponseSealer {
    pub fn seal(self, response: &LookupResponse) -> Result<Vec<u8>, Error> {
        self.0
            .encapsulate(&response.encode()?)
            .map_err(|e| bad("oblivious response", e))
    }
}

/// Checks that `config` is a key configuration a client can encrypt to.
pub fn check_key_config(config: &[u8]) -> Result<(), Error> {
    ohttp::ClientRequest::from_encoded_config(config)
        .map(drop)
        .map_err(|e| bad("OHTTP key configuration", e))
}

/// Encrypts `request` to the gateway whose key configuration is `config`; the
/// [`ResponseOpener`] decrypts its answer.
pub fn seal_request(
    config: &[u8],
    authority: &str,
    request: &LookupRequest,
) -> Result<(Vec<u8>, ResponseOpener), Error> {
    let client = ohttp::ClientRequest::from_encoded_config(config)
        .map_err(|e| bad("OHTTP key configuration", e))?;
    let (enc, opener) = client
        .encapsulate(&request.encode(authority)?)
        .map_err(|e| bad("oblivious request", e))?;
    Ok((enc, ResponseOpener(opener)))
}

/// Decrypts the answer to one sealed request.
pub struct ResponseOpener(ohttp::ClientResponse);

impl ResponseOpener {
    pub fn open(self, enc: &[u8]) -> Result<LookupResponse, Error> {
        if enc.len() > MAX_ENCAPSULATED_RESPONSE {
            return Err(bad("oblivious response", "too large"));
        }
        let plain = self
            .0
            .decapsulate(enc)
            .map_err(|e| bad("oblivious response", e))?;
        LookupResponse::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(sealed.len(), RESPONSE_SIZES[0] + 16 + 16, "nonce, padding, tag");
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
        assert!(LookupRequest::decode(&dirty).is_err(), "padding must be zero");
        let mut post = bhttp::Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"a".to_vec(),
            b"/v1/submit".to_vec(),
        );
        post.write_content(b"x");
        let mut bytes = Vec::new();
        post.write_bhttp(bhttp::Mode::KnownLength, &mut bytes).unwrap();
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
