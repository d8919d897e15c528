//! Node-to-node request signatures: a profile of HTTP Message Signatures (RFC 9421) with
//! Ed25519 over `@method`, `@authority`, `@path` and `Content-Digest` (RFC 9530, sha-256).
//!
//! The key id is the signing node's Ed25519 public key in base64, so a signature is
//! self-certifying: the receiver learns which node sent the request (for per-peer limits
//! and blocking) without a lookup.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The covered components, in order.
const COMPONENTS: &str = r#"("@method" "@authority" "@path" "content-digest")"#;
const LABEL: &str = "sig1";

/// Headers to add to a signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub content_digest: String,
    pub signature_input: String,
    pub signature: String,
}

/// `sha-256=:BASE64:` of `body` (RFC 9530).
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(Sha256::digest(body)))
}

fn signature_base(method: &str, authority: &str, path: &str, digest: &str, params: &str) -> String {
    format!(
        "\"@method\": {}\n\"@authority\": {}\n\"@path\": {}\n\"content-digest\": {}\n\"@signature-params\": {}",
        method.to_ascii_uppercase(),
        authority.to_ascii_lowercase(),
        path,
        digest,
        params
    )
}

/// Signs a request. `created` is Unix seconds.
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    authority: &str,
    path: &str,
    body: &[u8],
    created: u64,
) -> SignatureHeaders {
    let digest = content_digest(body);
    let keyid = B64.encode(key.verifying_key().to_bytes());
    let params = format!("{COMPONENTS};created={created};keyid=\"{keyid}\";alg=\"ed25519\"");
    let base = signature_base(method, authority, path, &digest, &params);
    let sig = key.sign(base.as_bytes());
    SignatureHeaders {
        content_digest: digest,
        signature_input: format!("{LABEL}={params}"),
        signature: format!("{LABEL}=:{}:", B64.encode(sig.to_bytes())),
    }
}

/// Why a request signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("content digest does not match the body")]
    DigestMismatch,
    #[error("signature created at {created}, too far from now ({now})")]
    Stale { created: u64, now: u64 },
    #[error("signature does not verify")]
    BadSignature,
}

impl From<SigError> for Error {
    fn from(e: SigError) -> Error {
        Error::InvalidField {
            what: "request signature",
            reason: e.to_string(),
        }
    }
}

/// Verifies a signed request; returns the signer's Ed25519 public key.
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    method: &str,
    authority: &str,
    path: &str,
    body: &[u8],
    content_digest_header: Option<&str>,
    signature_input: Option<&str>,
    signature: Option<&str>,
    now: u64,
    max_skew_secs: u64,
) -> Result<[u8; 32], SigError> {
    let digest = content_digest_header.ok_or(SigError::Missing("Content-Digest"))?;
    let input = signature_input.ok_or(SigError::Missing("Signature-Input"))?;
    let sig = signature.ok_or(SigError::Missing("Signature"))?;
    if digest != content_digest(body) {
        return Err(SigError::DigestMismatch);
    }
    verify_signature(
        method,
        authority,
        path,
        digest,
        input,
        sig,
        now,
        max_skew_secs,
    )
}

/// The SHA-256 a `Content-Digest: sha-256=:BASE64:` header announces, so that a receiver
/// can hash the body as it streams in and compare at the end.
pub fn parse_content_digest(header: &str) -> Result<[u8; 32], SigError> {
    header
        .strip_prefix("sha-256=:")
        .and_then(|s| s.strip_suffix(':'))
        .and_then(|s| B64.decode(s).ok())
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or(SigError::Malformed("Content-Digest"))
}

/// Verifies the signature over a request's method, authority, path and `Content-Digest`
/// header, without the body: a receiver learns who signed (and refuses the unknown, the
/// blocked and the stale) before reading a byte of it. The body must then match the digest
/// ([`parse_content_digest`]). Returns the signer's Ed25519 public key.
#[allow(clippy::too_many_arguments)]
pub fn verify_signature(
    method: &str,
    authority: &str,
    path: &str,
    digest: &str,
    input: &str,
    sig: &str,
    now: u64,
    max_skew_secs: u64,
) -> Result<[u8; 32], SigError> {
    let params = input
        .strip_prefix(LABEL)
        .and_then(|s| s.strip_prefix('='))
        .ok_or(SigError::Malformed("Signature-Input"))?;
    let rest = params
        .strip_prefix(COMPONENTS)
        .ok_or(SigError::Malformed("Signature-Input"))?;
    let mut created = None;
    let mut keyid = None;
    let mut alg = None;
    for p in rest.split(';').skip(1) {
        let (k, v) = p
            .split_once('=')
            .ok_or(SigError::Malformed("Signature-Input"))?;
        match k {
            "created" => created = v.parse::<u64>().ok(),
            "keyid" => keyid = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')),
            "alg" => alg = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')),
            _ => return Err(SigError::Malformed("Signature-Input")),
        }
    }
    let created = created.ok_or(SigError::Malformed("Signature-Input"))?;
    if alg != Some("ed25519") || !rest.starts_with(';') {
        return Err(SigError::Malformed("Signature-Input"));
    }
    if created.abs_diff(now) > max_skew_secs {
        return Err(SigError::Stale { created, now });
    }
    let key_bytes: [u8; 32] = keyid
        .and_then(|k| B64.decode(k).ok())
        .and_then(|k| k.try_into().ok())
        .ok_or(SigError::Malformed("Signature-Input"))?;
    let sig_b64 = sig
        .strip_prefix(LABEL)
        .and_then(|s| s.strip_prefix("=:"))
        .and_then(|s| s.strip_suffix(':'))
        .ok_or(SigError::Malformed("Signature"))?;
    let sig_bytes: [u8; 64] = B64
        .decode(sig_b64)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(SigError::Malformed("Signature"))?;
    let vk =
        VerifyingKey::from_bytes(&key_bytes).map_err(|_| SigError::Malformed("Signature-Input"))?;
    let base = signature_base(method, authority, path, digest, params);
    // Strict: the key id names the signer, so a small-order "key", for which a crafted
    // signature verifies for every message under plain Ed25519, must not pass.
    vk.verify_strict(base.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| SigError::BadSignature)?;
    Ok(key_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9u8; 32])
    }

    fn verify(
        h: &SignatureHeaders,
        method: &str,
        authority: &str,
        path: &str,
        body: &[u8],
        now: u64,
    ) -> Result<[u8; 32], SigError> {
        verify_request(
            method,
            authority,
            path,
            body,
            Some(&h.content_digest),
            Some(&h.signature_input),
            Some(&h.signature),
            now,
            300,
        )
    }

    #[test]
    fn signed_request_verifies_and_names_the_signer() {
        let h = sign_request(
            &key(),
            "POST",
            "b.test:8080",
            "/v1/deliver",
            b"payload",
            1000,
        );
        assert_eq!(
            verify(&h, "POST", "b.test:8080", "/v1/deliver", b"payload", 1100),
            Ok(key().verifying_key().to_bytes())
        );
    }

    #[test]
    fn any_change_is_refused() {
        let h = sign_request(
            &key(),
            "POST",
            "b.test:8080",
            "/v1/deliver",
            b"payload",
            1000,
        );
        assert_eq!(
            verify(&h, "POST", "b.test:8080", "/v1/deliver", b"payloaX", 1000),
            Err(SigError::DigestMismatch)
        );
        assert_eq!(
            verify(&h, "POST", "c.test:8080", "/v1/deliver", b"payload", 1000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&h, "PUT", "b.test:8080", "/v1/deliver", b"payload", 1000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&h, "POST", "b.test:8080", "/v1/other", b"payload", 1000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&h, "POST", "b.test:8080", "/v1/deliver", b"payload", 2000),
            Err(SigError::Stale {
                created: 1000,
                now: 2000
            })
        );
        let mut forged = h.clone();
        let other = SigningKey::from_bytes(&[3u8; 32]);
        let o = sign_request(
            &other,
            "POST",
            "b.test:8080",
            "/v1/deliver",
            b"payload",
            1000,
        );
        forged.signature = o.signature; // signature by another key, keyid still ours
        assert_eq!(
            verify(
                &forged,
                "POST",
                "b.test:8080",
                "/v1/deliver",
                b"payload",
                1000
            ),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify_request("POST", "b", "/", b"", None, None, None, 0, 300),
            Err(SigError::Missing("Content-Digest"))
        );
    }

    #[test]
    fn the_clock_window_is_300_seconds_either_way() {
        let h = sign_request(&key(), "POST", "b.test", "/v1/deliver", b"x", 1000);
        let at = |now| verify(&h, "POST", "b.test", "/v1/deliver", b"x", now);
        for now in [700, 999, 1000, 1001, 1300] {
            assert_eq!(at(now), Ok(key().verifying_key().to_bytes()), "now {now}");
        }
        for now in [699, 1301] {
            assert_eq!(
                at(now),
                Err(SigError::Stale { created: 1000, now }),
                "now {now}"
            );
        }
    }

    #[test]
    fn headers_verify_before_the_body_and_the_digest_parses() {
        let h = sign_request(&key(), "POST", "b.test", "/v1/deliver", b"body", 1000);
        let ok = verify_signature(
            "POST",
            "b.test",
            "/v1/deliver",
            &h.content_digest,
            &h.signature_input,
            &h.signature,
            1000,
            300,
        );
        assert_eq!(ok, Ok(key().verifying_key().to_bytes()));
        let other = content_digest(b"other body");
        let forged = verify_signature(
            "POST",
            "b.test",
            "/v1/deliver",
            &other,
            &h.signature_input,
            &h.signature,
            1000,
            300,
        );
        assert_eq!(forged, Err(SigError::BadSignature));
        let d = parse_content_digest(&h.content_digest).unwrap();
        assert_eq!(d.as_slice(), Sha256::digest(b"body").as_slice());
        for bad in ["sha-512=:AAAA:", "sha-256=:AAAA:", "sha-256=AAAA", ""] {
            assert_eq!(
                parse_content_digest(bad),
                Err(SigError::Malformed("Content-Digest"))
            );
        }
    }

    #[test]
    fn small_order_keys_do_not_verify_anything() {
        // The identity point as key id, (R = identity, s = 0) as signature: accepted for
        // every message by non-strict verification.
        let h = sign_request(&key(), "POST", "b.test", "/v1/deliver", b"x", 1000);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let forged = SignatureHeaders {
            signature_input: h.signature_input.replace(
                &B64.encode(key().verifying_key().to_bytes()),
                &B64.encode(identity),
            ),
            signature: format!("{LABEL}=:{}:", B64.encode(sig)),
            ..h
        };
        assert_eq!(
            verify(&forged, "POST", "b.test", "/v1/deliver", b"x", 1000),
            Err(SigError::BadSignature)
        );
    }
}
