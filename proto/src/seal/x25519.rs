//! Decryption keys. A Cv25519 (X25519 ECDH) key does its Diffie-Hellman step with
//! curve25519-dalek on a scalar read from the secret key once, at unlock: sequoia's OpenSSL
//! backend imports the secret key into OpenSSL for every message (the import alone derives
//! the public key, a second scalar multiplication), which was a sixth of a node's CPU per
//! delivery (`perf`, `bench/NOTES.md`). Everything after the shared secret (the KDF, the key
//! unwrap, the session key's algorithm and checksum) is still sequoia's
//! (`ecdh::decrypt_unwrap`, `PKESK::decrypt`). Any other algorithm goes through sequoia's
//! `KeyPair` as before.

use curve25519_dalek::montgomery::MontgomeryPoint;
use sequoia_openpgp as openpgp;

use openpgp::crypto::mem::Protected;
use openpgp::crypto::{Decryptor, KeyPair, SessionKey, ecdh, mpi};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::types::{Curve, PublicKeyAlgorithm};

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
                let (v, _) = e.decode_point(&Curve::Cv25519)?;
                let v: [u8; 32] = v.try_into().map_err(|_| {
                    openpgp::Error::MalformedMPI("X25519 point is not 32 bytes".into())
                })?;
                let mut k = [0u8; 32];
                k.copy_from_slice(scalar);
                let shared = MontgomeryPoint(v).mul_clamped(k).to_bytes();
                k.fill(0);
                // A small-order point gives an all-zero secret: refused, as OpenSSL's
                // X25519 refuses it.
                if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
                    return Err(openpgp::Error::InvalidArgument(
                        "X25519 shared secret is zero".into(),
                    )
                    .into());
                }
                let shared: Protected = shared.to_vec().into();
                ecdh::decrypt_unwrap(public, &shared, ciphertext, plaintext_len)
            }
        }
    }
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
        let tsk = openpgp::Cert::from_bytes(&id.to_bytes()).unwrap();
        let secret = tsk
            .keys()
            .with_policy(crate::identity::policy(), None)
            .secret()
            .for_transport_encryption()
            .next()
            .unwrap()
            .key()
            .clone()
            .role_into_unspecified();
        let mut backend = secret.into_keypair().unwrap();
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
