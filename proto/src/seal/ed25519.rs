//! Ed25519 signing keys with ed25519-dalek. Sequoia's OpenSSL backend decrypts the secret
//! key from its in-memory protection and imports it into OpenSSL for every signature (the
//! import derives the public key again), 10 % of the gateway's CPU per message (`perf`,
//! `bench/NOTES.md`); the dalek key is made once, at unlock. Ed25519 signatures are
//! deterministic (RFC 8032): dalek's are byte for byte OpenSSL's, which the tests check.
//! The signature packet around them (hashing, subpackets) is still sequoia's. Any other
//! algorithm goes through sequoia's `KeyPair` as before.

use ed25519_dalek::Signer as _;
use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi::{self, MPI};
use openpgp::crypto::{KeyPair, Signer};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretKeyMaterial, SecretParts, UnspecifiedRole};
use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm};

/// A key that signs (see the module documentation).
#[derive(Clone)]
pub(crate) enum SignKey {
    Ed25519 {
        public: Key<PublicParts, UnspecifiedRole>,
        key: ed25519_dalek::SigningKey,
    },
    Other(KeyPair),
}

impl SignKey {
    /// The signing key of an unencrypted secret `key`.
    pub(crate) fn new(key: Key<SecretParts, UnspecifiedRole>) -> openpgp::Result<SignKey> {
        let q = match key.mpis() {
            mpi::PublicKey::EdDSA {
                curve: Curve::Ed25519,
                q,
            } if key.pk_algo() == PublicKeyAlgorithm::EdDSA => Some(q.clone()),
            _ => None,
        };
        let dalek = match (key.secret(), q) {
            (SecretKeyMaterial::Unencrypted(u), Some(q)) => u.map(|m| match m {
                mpi::SecretKeyMaterial::EdDSA { scalar } => {
                    let seed = scalar.value_padded(32);
                    let seed: &[u8; 32] = seed.as_ref().try_into().ok()?;
                    let k = ed25519_dalek::SigningKey::from_bytes(seed);
                    // Only a secret that matches its public key is used here.
                    let (public, _) = q.decode_point(&Curve::Ed25519).ok()?;
                    (public == k.verifying_key().as_bytes()).then_some(k)
                }
                _ => None,
            }),
            _ => None,
        };
        match dalek {
            Some(k) => Ok(SignKey::Ed25519 {
                public: key.take_secret().0,
                key: k,
            }),
            None => Ok(SignKey::Other(key.into_keypair()?)),
        }
    }
}

// `acceptable_hashes` stays the trait's default, as for sequoia's `KeyPair`.
impl Signer for SignKey {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        match self {
            SignKey::Ed25519 { public, .. } => public,
            SignKey::Other(pair) => pair.public(),
        }
    }

    fn sign(&mut self, hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        match self {
            SignKey::Ed25519 { key, .. } => {
                // Legacy EdDSA (v4): R and S as MPIs, as sequoia writes them.
                let sig = key.sign(digest).to_bytes();
                Ok(mpi::Signature::EdDSA {
                    r: MPI::new(&sig[..32]),
                    s: MPI::new(&sig[32..]),
                })
            }
            SignKey::Other(pair) => pair.sign(hash_algo, digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;
    use crate::identity::SecretIdentity;

    #[test]
    fn dalek_signs_byte_for_byte_as_sequoias_backend() {
        let id = SecretIdentity::generate(&Address::parse("x@y.test").unwrap(), None).unwrap();
        let keys = id.unlock(None).unwrap();
        let mut ours = keys.signer.clone();
        assert!(
            matches!(ours, SignKey::Ed25519 { .. }),
            "a Sealpost identity signs on the Ed25519 path"
        );
        let mut backend = id.backend_keypair(true);
        for n in 0..20u8 {
            let digest = [n; 32];
            let a = ours.sign(HashAlgorithm::SHA256, &digest).unwrap();
            let b = backend.sign(HashAlgorithm::SHA256, &digest).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(ours.public().fingerprint(), backend.public().fingerprint());
    }
}
