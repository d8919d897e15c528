//! X25519 (Cv25519 ECDH, RFC 6637) with curve25519-dalek. Decrypting: the Diffie-Hellman
//! step runs on a scalar read from the secret key once, at unlock; sequoia's OpenSSL backend
//! imports the secret key into OpenSSL for every message (the import alone derives the
//! public key, a second scalar multiplication), which was a sixth of a node's CPU per
//! delivery (`perf`, `bench/NOTES.md`). Everything after the shared secret (the KDF, the key
//! unwrap, the session key's algorithm and checksum) is still sequoia's
//! (`ecdh::decrypt_unwrap`, `PKESK::decrypt`). Encrypting ([`pkesk`]): the ephemeral key and
//! the shared secret come from dalek (OpenSSL imported the recipient's key and generated the
//! ephemeral key per message); the KDF parameters are RFC 6637's as sequoia writes them and
//! the wrap is sequoia's `ecdh::aes_key_wrap`. Any other algorithm goes through sequoia.

use curve25519_dalek::montgomery::MontgomeryPoint;
use sequoia_openpgp as openpgp;

use openpgp::crypto::mem::Protected;
use openpgp::crypto::mpi::MPI;
use openpgp::crypto::{Decryptor, KeyPair, SessionKey, ecdh, mpi};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::packet::pkesk::PKESK3;
use openpgp::types::{Curve, PublicKeyAlgorithm, SymmetricAlgorithm};

/// A key that decrypts session keys (see the module documentation).
#[derive(Clone)]
pub(crate) enum DecryptKey {
    Cv25519 {
        public: Key<PublicParts, UnspecifiedRole>,
        /// The X25519 scalar, little-endian (OpenPGP stores it reversed).
        scalar: Protected,
    },
    Other(KeyPair),
}

impl DecryptKey {
    /// The decryption key of an unencrypted secret `key`.
    pub(crate) fn new(key: Key<SecretParts, UnspecifiedRole>) -> openpgp::Result<DecryptKey> {
        let cv25519 = matches!(
            key.mpis(),
            mpi::PublicKey::ECDH {
                curve: Curve::Cv25519,
                ..
            }
        ) && key.pk_algo() == PublicKeyAlgorithm::ECDH;
        let scalar = match key.secret() {
            openpgp::packet::key::SecretKeyMaterial::Unencrypted(u) if cv25519 => {
                u.map(|m| match m {
                    mpi::SecretKeyMaterial::ECDH { scalar } => {
                        // Padded unconditionally (no secret-dependent branch), then
                        // reversed: as sequoia does before its backend's X25519.
                        let mut r = scalar.value_padded(32);
                        r.reverse();
                        Some(r)
                    }
                    _ => None,
                })
            }
            _ => None,
        };
        if let Some(scalar) = scalar {
            let (public, _) = key.take_secret();
            return Ok(DecryptKey::Cv25519 { public, scalar });
        }
        Ok(DecryptKey::Other(key.into_keypair()?))
    }

    /// This key as a sequoia [`Decryptor`] for one PKESK.
    pub(crate) fn decryptor(&self) -> Using<'_> {
        Using(self)
    }
}

/// A [`DecryptKey`] lent to `PKESK::decrypt` (which wants `&mut`) without a copy.
pub(crate) struct Using<'a>(&'a DecryptKey);

impl Decryptor for Using<'_> {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        match self.0 {
            DecryptKey::Cv25519 { public, .. } => public,
            DecryptKey::Other(pair) => pair.public(),
        }
    }

    fn decrypt(
        &mut self,
        ciphertext: &mpi::Ciphertext,
        plaintext_len: Option<usize>,
    ) -> openpgp::Result<SessionKey> {
        match self.0 {
            DecryptKey::Other(pair) => pair.clone().decrypt(ciphertext, plaintext_len),
            DecryptKey::Cv25519 { public, scalar } => {
                let mpi::Ciphertext::ECDH { e, .. } = ciphertext else {
                    return Err(openpgp::Error::InvalidArgument(
                        "expected an ECDH ciphertext".into(),
                    )
                    .into());
                };
                let shared = shared_secret(scalar, point(e)?)?;
                ecdh::decrypt_unwrap(public, &shared, ciphertext, plaintext_len)
            }
        }
    }
}

/// X25519 of the clamped `k` and the u-coordinate `u` (RFC 7748). A point of the curve is
/// multiplied on its Edwards form, where dalek's constant-time multiplication is vectorised
/// (AVX2): `perf` put the Montgomery ladder at 19 % of a node's CPU per delivery. The
/// u-coordinate of the product is the same for either sign of the Edwards point; a point
/// of the twist (no Edwards form) takes the ladder.
fn x25519(k: [u8; 32], u: [u8; 32]) -> [u8; 32] {
    match MontgomeryPoint(u).to_edwards(0) {
        Some(p) => p.mul_clamped(k).to_montgomery().to_bytes(),
        None => MontgomeryPoint(u).mul_clamped(k).to_bytes(),
    }
}

/// X25519 of `scalar` and `point`; an all-zero result (a small-order point) is refused, as
/// OpenSSL's X25519 refuses it.
fn shared_secret(scalar: &[u8], point: [u8; 32]) -> openpgp::Result<Protected> {
    let mut k = [0u8; 32];
    k.copy_from_slice(scalar);
    let shared = x25519(k, point);
    k.fill(0);
    if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(openpgp::Error::InvalidArgument("X25519 shared secret is zero".into()).into());
    }
    Ok(shared.to_vec().into())
}

/// The 32 bytes of a Cv25519 point MPI (0x40-prefixed).
fn point(mpi: &MPI) -> openpgp::Result<[u8; 32]> {
    let (v, _) = mpi.decode_point(&Curve::Cv25519)?;
    Ok(v.try_into()
        .map_err(|_| openpgp::Error::MalformedMPI("X25519 point is not 32 bytes".into()))?)
}

/// The PKESK (v3, wildcard recipient, as `Recipient::new(_, None, key)` makes it) that
/// wraps `session_key` for `algo` to the Cv25519 key `recipient`, made as sequoia's
/// `PKESK3::for_recipient` makes it; `None` for a key of another algorithm.
pub(crate) fn pkesk(
    recipient: &Key<PublicParts, UnspecifiedRole>,
    algo: SymmetricAlgorithm,
    session_key: &SessionKey,
) -> Option<openpgp::Result<PKESK3>> {
    let mpi::PublicKey::ECDH {
        curve: Curve::Cv25519,
        q,
        hash,
        sym,
    } = recipient.mpis()
    else {
        return None;
    };
    let wrap = || -> openpgp::Result<PKESK3> {
        let ephemeral: Protected = rand::random::<[u8; 32]>().to_vec().into();
        let mut e = [0u8; 32];
        e.copy_from_slice(&ephemeral);
        let public = MontgomeryPoint::mul_base_clamped(e).to_bytes();
        e.fill(0);
        let shared = shared_secret(&ephemeral, point(q)?)?;
        // m = sym_alg_ID || session key || checksum || PKCS #5 padding to 40 bytes.
        let checksum = session_key
            .iter()
            .map(|&b| u16::from(b))
            .fold(0u16, u16::wrapping_add);
        let mut m: Vec<u8> = Vec::with_capacity(40);
        m.push(algo.into());
        m.extend_from_slice(session_key);
        m.extend_from_slice(&checksum.to_be_bytes());
        let pad = 40usize
            .checked_sub(m.len())
            .filter(|p| *p > 0)
            .ok_or_else(|| openpgp::Error::InvalidArgument("session key too long".into()))?;
        m.resize(40, pad as u8);
        let m: Protected = m.into();
        // Param = curve OID || algorithm 18 || KDF parameters || "Anonymous Sender    " ||
        // recipient fingerprint (RFC 6637 §8).
        let oid = Curve::Cv25519.oid();
        let mut param = Vec::with_capacity(64);
        param.push(oid.len() as u8);
        param.extend_from_slice(oid);
        param.push(PublicKeyAlgorithm::ECDH.into());
        param.extend_from_slice(&[3, 1, (*hash).into(), (*sym).into()]);
        param.extend_from_slice(b"Anonymous Sender    ");
        param.extend_from_slice(recipient.fingerprint().as_bytes());
        // Z = the first key-size bytes of hash(00 00 00 01 || S || Param).
        let mut kdf = hash.context()?.for_digest();
        kdf.update(&[0, 0, 0, 1]);
        kdf.update(&shared);
        kdf.update(&param);
        let mut z: Protected = vec![0; sym.key_size()?].into();
        kdf.digest(&mut z)?;
        let c = ecdh::aes_key_wrap(*sym, &z, &m)?;
        PKESK3::new(
            None,
            PublicKeyAlgorithm::ECDH,
            mpi::Ciphertext::ECDH {
                e: MPI::new_compressed_point(&public),
                key: c.into_boxed_slice(),
            },
        )
    };
    Some(wrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;
    use crate::identity::SecretIdentity;
    use crate::seal::{decrypt_with, encrypt_to};
    use openpgp::crypto::mpi::MPI;
    use openpgp::packet::PKESK;
    use openpgp::parse::{PacketParser, PacketParserResult, Parse};

    /// The PKESKs of an OpenPGP message.
    fn pkesks(message: &[u8]) -> Vec<PKESK> {
        let mut out = Vec::new();
        let mut ppr = PacketParser::from_bytes(message).unwrap();
        while let PacketParserResult::Some(pp) = ppr {
            let (packet, next) = pp.next().unwrap();
            if let openpgp::Packet::PKESK(p) = packet {
                out.push(p);
            }
            ppr = next;
        }
        out
    }

    #[test]
    fn dalek_and_sequoias_backend_unwrap_the_same_session_key() {
        let id = SecretIdentity::generate(&Address::parse("x@y.test").unwrap(), None).unwrap();
        let keys = id.unlock(None).unwrap();
        assert!(
            matches!(keys.decryptors[0], DecryptKey::Cv25519 { .. }),
            "a Sealpost identity's encryption key takes the X25519 path"
        );
        let mut backend = id.backend_keypair(false);
        for n in 0..20 {
            let message = encrypt_to(format!("message {n}").as_bytes(), keys.cert()).unwrap();
            let pkesk = &pkesks(&message)[0];
            let ours = pkesk.decrypt(&mut keys.decryptors[0].decryptor(), None);
            let theirs = pkesk.decrypt(&mut backend, None);
            assert!(ours.is_some());
            assert_eq!(
                ours.map(|(a, k)| (a, k.to_vec())),
                theirs.map(|(a, k)| (a, k.to_vec()))
            );
            assert_eq!(
                decrypt_with(&message, &keys, 1 << 20).unwrap(),
                format!("message {n}").as_bytes()
            );
        }
    }

    #[test]
    fn sequoias_backend_unwraps_what_dalek_wraps() {
        let id = SecretIdentity::generate(&Address::parse("x@y.test").unwrap(), None).unwrap();
        let mut backend = id.backend_keypair(false);
        let public = backend.public().clone();
        let mut ephemerals = std::collections::HashSet::new();
        for _ in 0..20 {
            let sk = SessionKey::new(32).unwrap();
            let pkesk: openpgp::packet::PKESK = pkesk(&public, SymmetricAlgorithm::AES256, &sk)
                .unwrap()
                .unwrap()
                .into();
            assert_eq!(pkesk.recipient(), None, "a wildcard recipient");
            let (algo, got) = pkesk.decrypt(&mut backend, None).unwrap();
            assert_eq!(algo, Some(SymmetricAlgorithm::AES256));
            assert_eq!(got.to_vec(), sk.to_vec());
            let mpi::Ciphertext::ECDH { e, .. } = pkesk.esk() else {
                panic!("an ECDH ciphertext")
            };
            assert!(
                ephemerals.insert(e.value().to_vec()),
                "a new ephemeral key each time"
            );
        }
    }

    #[test]
    fn x25519_on_the_edwards_form_is_the_montgomery_ladder() {
        // Random u-coordinates: about half are points of the twist (the ladder's path).
        let mut edwards = 0;
        for _ in 0..300 {
            let (k, u) = (rand::random::<[u8; 32]>(), rand::random::<[u8; 32]>());
            edwards += usize::from(MontgomeryPoint(u).to_edwards(0).is_some());
            assert_eq!(x25519(k, u), MontgomeryPoint(u).mul_clamped(k).to_bytes());
        }
        assert!(edwards > 50, "{edwards} of 300 on the curve");
        // RFC 7748 §5.2, first test vector.
        let k = hex::decode("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
            .unwrap();
        let u = hex::decode("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
            .unwrap();
        assert_eq!(
            hex::encode(x25519(k.try_into().unwrap(), u.try_into().unwrap())),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
        );
    }

    #[test]
    fn a_small_order_ephemeral_point_is_refused() {
        let id = SecretIdentity::generate(&Address::parse("x@y.test").unwrap(), None).unwrap();
        let keys = id.unlock(None).unwrap();
        let message = encrypt_to(b"m", keys.cert()).unwrap();
        let openpgp::crypto::mpi::Ciphertext::ECDH { key, .. } = pkesks(&message)[0].esk().clone()
        else {
            panic!("an ECDH ciphertext")
        };
        // The point 0 (order 4): X25519 gives an all-zero secret for any scalar.
        let zero = openpgp::crypto::mpi::Ciphertext::ECDH {
            e: MPI::new_compressed_point(&[0u8; 32]),
            key,
        };
        let err = keys.decryptors[0]
            .decryptor()
            .decrypt(&zero, None)
            .unwrap_err();
        assert!(err.to_string().contains("zero"), "{err}");
    }
}
