//! HPKE (RFC 9180), base mode, for the one suite Sealpost's OHTTP gateways use:
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305. Built from the primitives the
//! workspace already has (`curve25519-dalek`, `hkdf`, `sha2`, `chacha20poly1305`); checked
//! against RFC 9180 Appendix A.2.1 in the tests below.
//!
//! A context seals or opens one message (sequence number 0): Oblivious HTTP sends exactly
//! one each way, the answer under keys from [`Context::export`].

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use sha2::Sha256;

pub const KEM_X25519_SHA256: u16 = 0x0020;
pub const KDF_HKDF_SHA256: u16 = 0x0001;
pub const AEAD_CHACHA20POLY1305: u16 = 0x0003;
/// Length of an encapsulated key and of a public key (X25519).
pub const N_ENC: usize = 32;
/// AEAD key length.
pub const N_K: usize = 32;
/// AEAD nonce length.
pub const N_N: usize = 12;
/// AEAD tag length.
pub const N_T: usize = 16;

/// Why a key could not be used or a message did not open; deliberately without detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpkeError {
    /// The Diffie-Hellman result is all zeros (a low-order public key).
    BadKey,
    /// Authentication failed: tampered, truncated or sealed to another key.
    Open,
}

impl std::fmt::Display for HpkeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HpkeError::BadKey => "unusable public key",
            HpkeError::Open => "does not decrypt",
        })
    }
}

const KEM_SUITE: [u8; 5] = [b'K', b'E', b'M', 0x00, 0x20];
const HPKE_SUITE: [u8; 10] = [b'H', b'P', b'K', b'E', 0x00, 0x20, 0x00, 0x01, 0x00, 0x03];

fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(7 + suite.len() + label.len() + ikm.len());
    input.extend_from_slice(b"HPKE-v1");
    input.extend_from_slice(suite);
    input.extend_from_slice(label);
    input.extend_from_slice(ikm);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), &input);
    prk.into()
}

fn labeled_expand<const L: usize>(
    suite: &[u8],
    prk: &[u8; 32],
    label: &[u8],
    info: &[u8],
) -> [u8; L] {
    let mut labeled = Vec::with_capacity(9 + suite.len() + label.len() + info.len());
    labeled.extend_from_slice(&(L as u16).to_be_bytes());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(info);
    let mut out = [0u8; L];
    Hkdf::<Sha256>::from_prk(prk)
        .expect("invariant: a 32-byte PRK is valid for HKDF-SHA256")
        .expand(&labeled, &mut out)
        .expect("invariant: L <= 255 * 32");
    out
}

/// `DeriveKeyPair(ikm)` of DHKEM(X25519, HKDF-SHA256): (private key, public key).
pub fn derive_key_pair(ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let dkp_prk = labeled_extract(&KEM_SUITE, b"", b"dkp_prk", ikm);
    let sk: [u8; 32] = labeled_expand(&KEM_SUITE, &dkp_prk, b"sk", b"");
    (sk, public_key(&sk))
}

pub fn public_key(sk: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*sk).to_bytes()
}

fn dh(sk: &[u8; 32], pk: &[u8; 32]) -> Result<[u8; 32], HpkeError> {
    let shared = MontgomeryPoint(*pk).mul_clamped(*sk).to_bytes();
    // RFC 9180 §7.1.4: an all-zero X25519 output is an error. Compared without branching on
    // the secret's bytes one by one.
    if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(HpkeError::BadKey);
    }
    Ok(shared)
}

fn extract_and_expand(dh: &[u8; 32], enc: &[u8; 32], pk_r: &[u8; 32]) -> [u8; 32] {
    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(enc);
    kem_context[32..].copy_from_slice(pk_r);
    let eae_prk = labeled_extract(&KEM_SUITE, b"", b"eae_prk", dh);
    labeled_expand(&KEM_SUITE, &eae_prk, b"shared_secret", &kem_context)
}

/// An HPKE context after `SetupBaseS` or `SetupBaseR`.
pub struct Context {
    key: [u8; N_K],
    base_nonce: [u8; N_N],
    exporter_secret: [u8; 32],
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hpke::Context(..)")
    }
}

fn key_schedule(shared_secret: &[u8; 32], info: &[u8]) -> Context {
    let psk_id_hash = labeled_extract(&HPKE_SUITE, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&HPKE_SUITE, b"", b"info_hash", info);
    let mut ks_context = [0u8; 65];
    // ks_context[0] = mode_base (0)
    ks_context[1..33].copy_from_slice(&psk_id_hash);
    ks_context[33..].copy_from_slice(&info_hash);
    let secret = labeled_extract(&HPKE_SUITE, shared_secret, b"secret", b"");
    Context {
        key: labeled_expand(&HPKE_SUITE, &secret, b"key", &ks_context),
        base_nonce: labeled_expand(&HPKE_SUITE, &secret, b"base_nonce", &ks_context),
        exporter_secret: labeled_expand(&HPKE_SUITE, &secret, b"exp", &ks_context),
    }
}

/// `SetupBaseS` with the ephemeral key derived from `ikm_e` (fresh randomness in use, fixed
/// bytes in test vectors): (encapsulated key, context).
pub fn setup_sender(
    pk_r: &[u8; 32],
    info: &[u8],
    ikm_e: &[u8],
) -> Result<([u8; N_ENC], Context), HpkeError> {
    let (sk_e, enc) = derive_key_pair(ikm_e);
    let shared = extract_and_expand(&dh(&sk_e, pk_r)?, &enc, pk_r);
    Ok((enc, key_schedule(&shared, info)))
}

/// `SetupBaseR`.
pub fn setup_receiver(
    enc: &[u8; N_ENC],
    sk_r: &[u8; 32],
    info: &[u8],
) -> Result<Context, HpkeError> {
    let pk_r = public_key(sk_r);
    let shared = extract_and_expand(&dh(sk_r, enc)?, enc, &pk_r);
    Ok(key_schedule(&shared, info))
}

impl Context {
    fn aead(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    /// Seals the context's first (and only) message.
    pub fn seal(&self, aad: &[u8], pt: &[u8]) -> Vec<u8> {
        seal(&self.key, &self.base_nonce, aad, pt)
    }

    /// Opens the context's first (and only) message.
    pub fn open(&self, aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, HpkeError> {
        self.aead()
            .decrypt(
                Nonce::from_slice(&self.base_nonce),
                Payload { msg: ct, aad },
            )
            .map_err(|_| HpkeError::Open)
    }

    /// `Context.Export(exporter_context, L)`.
    pub fn export<const L: usize>(&self, exporter_context: &[u8]) -> [u8; L] {
        labeled_expand(&HPKE_SUITE, &self.exporter_secret, b"sec", exporter_context)
    }
}

/// ChaCha20-Poly1305 with a given key and nonce (also used for OHTTP answers).
pub fn seal(key: &[u8; N_K], nonce: &[u8; N_N], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(Nonce::from_slice(nonce), Payload { msg: pt, aad })
        .expect("invariant: ChaCha20-Poly1305 seals any message shorter than 256 GiB")
}

pub fn open(
    key: &[u8; N_K],
    nonce: &[u8; N_N],
    aad: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>, HpkeError> {
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| HpkeError::Open)
}

/// Plain HKDF-SHA256 `Extract` then `Expand` of an AEAD key and nonce (RFC 9458 §4.4).
pub fn response_keys(salt: &[u8], secret: &[u8]) -> ([u8; N_K], [u8; N_N]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), secret);
    let mut key = [0u8; N_K];
    let mut nonce = [0u8; N_N];
    hk.expand(b"key", &mut key)
        .expect("invariant: 32 <= 255 * 32");
    hk.expand(b"nonce", &mut nonce)
        .expect("invariant: 12 <= 255 * 32");
    (key, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn a32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    /// RFC 9180 Appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305,
    /// base mode.
    #[test]
    fn rfc9180_a_2_1_base_vector() {
        let info = h("4f6465206f6e2061204772656369616e2055726e");
        let ikm_r = h("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df");
        let ikm_e = h("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
        let (sk_r, pk_r) = derive_key_pair(&ikm_r);
        assert_eq!(
            sk_r,
            a32("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
        );
        assert_eq!(
            pk_r,
            a32("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
        );
        let (enc, ctx) = setup_sender(&pk_r, &info, &ikm_e).unwrap();
        assert_eq!(
            enc,
            a32("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
        );
        assert_eq!(
            ctx.key,
            a32("ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91")
        );
        assert_eq!(ctx.base_nonce.to_vec(), h("5c4d98150661b848853b547f"));
        assert_eq!(
            ctx.exporter_secret,
            a32("a3b010d4994890e2c6968a36f64470d3c824c8f5029942feb11e7a74b2921922")
        );
        let aad = h("436f756e742d30");
        let pt = h("4265617574792069732074727574682c20747275746820626561757479");
        let ct = ctx.seal(&aad, &pt);
        assert_eq!(
            ct,
            h(
                "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"
            )
        );
        assert_eq!(
            ctx.export::<32>(b""),
            a32("4bbd6243b8bb54cec311fac9df81841b6fd61f56538a775e7c80a9f40160606e")
        );
        let r = setup_receiver(&enc, &sk_r, &info).unwrap();
        assert_eq!(r.open(&aad, &ct).unwrap(), pt);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(r.open(&aad, &bad), Err(HpkeError::Open));
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        assert_eq!(
            setup_sender(&[0; 32], b"", &[1; 32]).err(),
            Some(HpkeError::BadKey)
        );
        assert!(setup_receiver(&[0; 32], &[1; 32], b"").is_err());
    }
}
