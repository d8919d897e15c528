//! OpenPGP identities: generate a user certificate (Ed25519 primary for signing, X25519
//! subkey for encryption), export and import it as binary or armored OpenPGP, unlock the
//! secret key with an optional passphrase.
//!
//! Certificates are generated v4 and advertise SEIPDv1 only, so that Debian's gpg 2.2 can
//! read what we encrypt to them (see `spec/protocol.md` §Interop).

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{Features, KeyFlags};
use openpgp::{Cert, Fingerprint, Profile};

use crate::error::Error;
use crate::limits::MAX_CERT_BYTES;
use crate::seal::{DecryptKey, SignKey};
use crate::types::Address;

/// The policy used for every check in Sealpost.
pub fn policy() -> &'static StandardPolicy<'static> {
    static POLICY: StandardPolicy<'static> = StandardPolicy::new();
    &POLICY
}

fn key_err(e: impl std::fmt::Display) -> Error {
    Error::Key(e.to_string())
}

/// A user's (or node's) certificate together with its secret keys, which may be locked by a
/// passphrase.
#[derive(Clone)]
pub struct SecretIdentity {
    tsk: Cert,
}

impl SecretIdentity {
    /// Generates a user identity for `address`.
    pub fn generate(address: &Address, passphrase: Option<&str>) -> Result<Self, Error> {
        Self::generate_with_userid(&format!("<{address}>"), passphrase)
    }

    /// Generates an identity with an arbitrary User ID (nodes use their URL).
    pub fn generate_with_userid(userid: &str, passphrase: Option<&str>) -> Result<Self, Error> {
        let (tsk, _revocation) = CertBuilder::new()
            .set_profile(Profile::RFC4880)
            .map_err(key_err)?
            .set_features(Features::empty().set_seipdv1())
            .map_err(key_err)?
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .add_userid(userid)
            .add_subkey(
                KeyFlags::empty()
                    .set_transport_encryption()
                    .set_storage_encryption(),
                None,
                None,
            )
            .set_password(passphrase.map(Password::from))
            .generate()
            .map_err(key_err)?;
        Ok(SecretIdentity { tsk })
    }

    /// Reads a secret key (binary or armored OpenPGP, as gpg `--export-secret-keys` writes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let tsk = Cert::from_bytes(bytes).map_err(key_err)?;
        if !tsk.is_tsk() {
            return Err(Error::Key("no secret key material in input".into()));
        }
        check_usable(&tsk)?;
        Ok(SecretIdentity { tsk })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.tsk
            .as_tsk()
            .serialize(&mut out)
            .expect("invariant: serializing to a Vec cannot fail");
        out
    }

    pub fn to_armored(&self) -> String {
        let bytes = self
            .tsk
            .as_tsk()
            .armored()
            .to_vec()
            .expect("invariant: serializing to a Vec cannot fail");
        String::from_utf8(bytes).expect("invariant: armor is ASCII")
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.tsk.fingerprint()
    }

    /// The public certificate, without secret key material.
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    /// Whether a passphrase is needed to use the secret keys.
    pub fn is_locked(&self) -> bool {
        self.tsk
            .keys()
            .secret()
            .any(|ka| !ka.key().has_unencrypted_secret())
    }

    /// Decrypts the secret keys into usable key pairs.
    pub fn unlock(&self, passphrase: Option<&str>) -> Result<Keyring, Error> {
        let p = policy();
        let password = passphrase.map(Password::from);
        type SecretKey = openpgp::packet::Key<
            openpgp::packet::key::SecretParts,
            openpgp::packet::key::UnspecifiedRole,
        >;
        let unlocked = |key: SecretKey| -> Result<SecretKey, Error> {
            if key.has_unencrypted_secret() {
                return Ok(key);
            }
            let pw = password.as_ref().ok_or(Error::KeyLocked)?;
            key.decrypt_secret(pw).map_err(|_| Error::WrongPassphrase)
        };
        let unlock_signer = |key: SecretKey| -> Result<SignKey, Error> {
            SignKey::new(unlocked(key)?).map_err(key_err)
        };
        let unlock_decryptor = |key: SecretKey| -> Result<DecryptKey, Error> {
            DecryptKey::new(unlocked(key)?).map_err(key_err)
        };
        let valid = self.tsk.with_policy(p, None).map_err(key_err)?;
        let signer_key = valid
            .keys()
            .secret()
            .alive()
            .revoked(false)
            .for_signing()
            .next()
            .ok_or(Error::NoUsableKey("signing"))?
            .key()
            .clone()
            .role_into_unspecified();
        let signer = unlock_signer(signer_key)?;
        let mut decryptors = Vec::new();
        for ka in valid
            .keys()
            .secret()
            .for_transport_encryption()
            .for_storage_encryption()
        {
            decryptors.push(unlock_decryptor(ka.key().clone().role_into_unspecified())?);
        }
        if decryptors.is_empty() {
            return Err(Error::NoUsableKey("encryption"));
        }
        Ok(Keyring {
            cert: self.public_cert(),
            signer,
            decryptors,
        })
    }
}

#[cfg(test)]
impl SecretIdentity {
    /// Sequoia's own key pair (OpenSSL backend) of the signing or the encryption key: what
    /// the faster keys of `seal` are checked against.
    pub(crate) fn backend_keypair(&self, signing: bool) -> openpgp::crypto::KeyPair {
        let valid = self.tsk.with_policy(policy(), None).unwrap();
        let keys = valid.keys().secret();
        let ka = if signing {
            keys.for_signing().next()
        } else {
            keys.for_transport_encryption().next()
        };
        let key = ka.unwrap().key().clone().role_into_unspecified();
        key.into_keypair().unwrap()
    }
}

/// Unlocked secret keys, ready to sign and decrypt. Lives only in memory.
pub struct Keyring {
    cert: Cert,
    pub(crate) signer: SignKey,
    pub(crate) decryptors: Vec<DecryptKey>,
}

impl Keyring {
    pub fn cert(&self) -> &Cert {
        &self.cert
    }
    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.fingerprint()
    }
    /// Also decrypts with `retired`'s keys (letters sealed to a key since rotated away).
    pub fn add_decryptors(&mut self, retired: Keyring) {
        self.decryptors.extend(retired.decryptors);
    }
}

/// Reads a public certificate (binary or armored). Secret key material, if any, is dropped.
/// The certificate must be valid now and have a signing and an encryption key.
pub fn cert_from_bytes(bytes: &[u8]) -> Result<Cert, Error> {
    if bytes.len() > MAX_CERT_BYTES * 2 {
        return Err(Error::TooLong {
            what: "certificate",
            len: bytes.len(),
            max: MAX_CERT_BYTES * 2,
        });
    }
    let cert = Cert::from_bytes(bytes)
        .map_err(key_err)?
        .strip_secret_key_material();
    check_usable(&cert)?;
    Ok(cert)
}

fn check_usable(cert: &Cert) -> Result<(), Error> {
    let valid = cert.with_policy(policy(), None).map_err(key_err)?;
    valid.alive().map_err(key_err)?;
    if valid
        .keys()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .is_none()
    {
        return Err(Error::NoUsableKey("signing"));
    }
    if valid
        .keys()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .next()
        .is_none()
    {
        return Err(Error::NoUsableKey("encryption"));
    }
    Ok(())
}

/// Binary encoding of a public certificate.
pub fn cert_to_bytes(cert: &Cert) -> Vec<u8> {
    cert.to_vec()
        .expect("invariant: serializing to a Vec cannot fail")
}

/// ASCII-armored public certificate, as `gpg --import` reads it.
pub fn cert_to_armored(cert: &Cert) -> String {
    let bytes = cert
        .armored()
        .to_vec()
        .expect("invariant: serializing to a Vec cannot fail");
    String::from_utf8(bytes).expect("invariant: armor is ASCII")
}

/// The e-mail addresses named in a certificate's valid User IDs, lower-cased.
pub fn cert_addresses(cert: &Cert) -> Vec<String> {
    let Ok(valid) = cert.with_policy(policy(), None) else {
        return Vec::new();
    };
    valid
        .userids()
        .filter_map(|ua| {
            ua.userid()
                .email()
                .ok()
                .flatten()
                .map(|e| e.to_ascii_lowercase())
        })
        .collect()
}

/// Fingerprint written the way people compare them: groups of four hex digits.
pub fn fingerprint_display(fp: &Fingerprint) -> String {
    fp.to_spaced_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_exports_and_imports() {
        let addr = Address::parse("alice@alpha.test").unwrap();
        let id = SecretIdentity::generate(&addr, None).unwrap();
        assert!(!id.is_locked());
        let cert = id.public_cert();
        assert_eq!(cert.primary_key().key().version(), 4);
        assert_eq!(cert_addresses(&cert), vec!["alice@alpha.test".to_string()]);

        let back = SecretIdentity::from_bytes(id.to_armored().as_bytes()).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        let back = SecretIdentity::from_bytes(&id.to_bytes()).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());

        let public = cert_from_bytes(cert_to_armored(&cert).as_bytes()).unwrap();
        assert_eq!(public.fingerprint(), id.fingerprint());
        assert!(!public.is_tsk());
        assert!(
            SecretIdentity::from_bytes(&cert_to_bytes(&cert)).is_err(),
            "public cert is no secret key"
        );
    }

    #[test]
    fn passphrase_locks_the_secret_key() {
        let addr = Address::parse("bob@beta.test").unwrap();
        let id = SecretIdentity::generate(&addr, Some("correct horse")).unwrap();
        assert!(id.is_locked());
        assert!(matches!(id.unlock(None), Err(Error::KeyLocked)));
        assert!(matches!(
            id.unlock(Some("wrong")),
            Err(Error::WrongPassphrase)
        ));
        let ring = id.unlock(Some("correct horse")).unwrap();
        assert_eq!(ring.fingerprint(), id.fingerprint());
    }

    #[test]
    fn garbage_is_not_a_cert() {
        assert!(cert_from_bytes(b"hello").is_err());
        assert!(cert_from_bytes(b"").is_err());
    }
}
