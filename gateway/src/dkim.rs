//! DKIM signing of outbound legacy mail (RFC 6376), with two keys as RFC 8463 advises:
//! RSA-SHA256, which every receiver verifies, and Ed25519-SHA256. Signing is mail-auth's
//! (Stalwart), over the exact bytes that go on the wire: the signature then covers every
//! header it names, wherever the message builder put it (lettre's own signer hashed only
//! the top-level headers and left a MIME part's `Content-Type` out, so no verifier agreed).
//!
//! The keys are material the node keeps in files; this module parses, makes and publishes
//! them (`records` gives the DNS TXT records to publish), and signs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::EncodePublicKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// Size of the RSA keys made by [`new_rsa_pem`] (RFC 8301: at least 1024, 2048 is usual).
pub const RSA_BITS: usize = 2048;

/// The header fields every signature covers, when the message has them. `From` is required
/// by RFC 6376; the MIME fields bind the body's meaning to the signature.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("the Ed25519 DKIM key is not the base64 of a 32-byte seed")]
    Ed25519Key,
    #[error("the RSA DKIM key is not a PKCS#1 PEM RSA private key: {0}")]
    RsaKey(String),
    #[error("cannot make an RSA DKIM key: {0}")]
    Generate(String),
    #[error("cannot DKIM-sign the message: {0}")]
    Sign(String),
}

/// The signing keys of one domain.
pub struct DkimKeys {
    domain: String,
    ed25519_selector: String,
    ed25519: DkimSigner<Ed25519Key, Done>,
    ed25519_public: Vec<u8>,
    rsa_selector: String,
    rsa: DkimSigner<RsaKey<Sha256>, Done>,
    rsa_public_spki: Vec<u8>,
}

/// A new RSA private key, PKCS#1 PEM (the form opendkim and most tools use).
pub fn new_rsa_pem() -> Result<String, DkimError> {
    let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(RSA_BITS)
        .map_err(|e| DkimError::Generate(e.to_string()))?;
    let key = rsa::RsaPrivateKey::from_pkcs1_der(pair.private_key())
        .map_err(|e| DkimError::Generate(e.to_string()))?;
    key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| DkimError::Generate(e.to_string()))
}

/// The RSA selector that goes with the Ed25519 one: `SELECTOR-rsa`.
pub fn rsa_selector(selector: &str) -> String {
    format!("{selector}-rsa")
}

impl DkimKeys {
    /// Keys for `domain`: the Ed25519 key (base64 of its 32-byte seed) under `selector`, the
    /// RSA key (PKCS#1 PEM) under `SELECTOR-rsa`.
    pub fn new(
        domain: &str,
        selector: &str,
        ed25519_seed_b64: &str,
        rsa_pem: &str,
    ) -> Result<DkimKeys, DkimError> {
        let seed: [u8; 32] = B64
            .decode(ed25519_seed_b64.trim())
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(DkimError::Ed25519Key)?;
        let ed25519_public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes()
            .to_vec();
        let ed25519 = Ed25519Key::from_seed_and_public_key(&seed, &ed25519_public)
            .map_err(|_| DkimError::Ed25519Key)?;
        let private = rsa::RsaPrivateKey::from_pkcs1_pem(rsa_pem.trim())
            .map_err(|e| DkimError::RsaKey(e.to_string()))?;
        let rsa_public_spki = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| DkimError::RsaKey(e.to_string()))?
            .as_bytes()
            .to_vec();
        let der = private
            .to_pkcs1_der()
            .map_err(|e| DkimError::RsaKey(e.to_string()))?;
        let rsa = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(
            der.as_bytes().to_vec(),
        )))
        .map_err(|e| DkimError::RsaKey(e.to_string()))?;
        let rsa_selector = rsa_selector(selector);
        Ok(DkimKeys {
            domain: domain.to_string(),
            ed25519_selector: selector.to_string(),
            ed25519: DkimSigner::from_key(ed25519)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS),
            ed25519_public,
            rsa: DkimSigner::from_key(rsa)
                .domain(domain)
                .selector(&rsa_selector)
                .headers(SIGNED_HEADERS),
            rsa_selector,
            rsa_public_spki,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The DNS TXT records to publish, as `(name, value)`: RSA first, then Ed25519.
    pub fn records(&self) -> [(String, String); 2] {
        [
            (
                format!("{}._domainkey.{}", self.rsa_selector, self.domain),
                format!("v=DKIM1; k=rsa; p={}", B64.encode(&self.rsa_public_spki)),
            ),
            (
                format!("{}._domainkey.{}", self.ed25519_selector, self.domain),
                format!("v=DKIM1; k=ed25519; p={}", B64.encode(&self.ed25519_public)),
            ),
        ]
    }

    /// `message` (the final RFC 5322 bytes, CRLF line ends) with two `DKIM-Signature`
    /// fields prepended: Ed25519 and RSA, each over the same headers and body.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let err = |e: mail_auth::Error| DkimError::Sign(e.to_string());
        let rsa = self.rsa.sign(message).map_err(err)?;
        let ed = self.ed25519.sign(message).map_err(err)?;
        let mut out = Vec::with_capacity(message.len() + 1024);
        out.extend_from_slice(ed.to_header().as_bytes());
        out.extend_from_slice(rsa.to_header().as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }
}
