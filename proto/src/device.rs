//! Devices of an account: each device of a user holds the account's OpenPGP key (to read
//! letters) and its own Ed25519 device key, with which it signs in to each home node as
//! itself. A home keeps one cursor per device and deletes an envelope only once every
//! device has acknowledged it (`spec/api.md` §Devices).
//!
//! A device id is derived from the device key, so that one device has the same id on
//! every home. [`DeviceId::ACCOUNT`] names the account key itself signing in (a client
//! from before devices): it is the account's only device until a device key is registered.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::auth::NONCE_BYTES;
use crate::types::{DeviceId, MailboxId, NodeUrl};

/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME: usize = 64;

impl DeviceId {
    /// The account key signing in as the account's first device.
    pub const ACCOUNT: DeviceId = DeviceId([0; 16]);

    /// The id of the device whose Ed25519 public key is `key`.
    pub fn of_key(key: &[u8; 32]) -> DeviceId {
        let mut h = Sha256::new();
        h.update(b"sealpost-device-v1\n");
        h.update(key);
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        // A key never yields the id reserved for the account key.
        if id == [0; 16] {
            id[15] = 1;
        }
        DeviceId(id)
    }
}

/// Why a device name or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("device name is empty, longer than {MAX_DEVICE_NAME} bytes, or has control characters")]
    BadName,
    #[error("device key is not a valid Ed25519 public key")]
    BadKey,
    #[error("device signature does not verify")]
    BadSignature,
}

/// Checks a device name: 1 to [`MAX_DEVICE_NAME`] bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), DeviceError> {
    if name.is_empty() || name.len() > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
        return Err(DeviceError::BadName);
    }
    Ok(())
}

/// The exact bytes a device signs to answer a challenge: like
/// [`crate::auth::challenge_statement`], with the device named.
pub fn device_statement(
    node: &NodeUrl,
    mailbox: &MailboxId,
    device: &DeviceId,
    nonce: &[u8; NONCE_BYTES],
) -> Vec<u8> {
    format!(
        "sealpost-auth-device-v1\nnode={}\nmailbox={}\ndevice={}\nnonce={}\n",
        node,
        mailbox,
        device,
        hex::encode(nonce)
    )
    .into_bytes()
}

/// Signs a statement with a device key.
pub fn sign(key: &SigningKey, statement: &[u8]) -> [u8; 64] {
    key.sign(statement).to_bytes()
}

/// Checks a device's signature of `statement`.
pub fn verify(key: &[u8; 32], statement: &[u8], signature: &[u8]) -> Result<(), DeviceError> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| DeviceError::BadKey)?;
    let sig = Signature::from_slice(signature).map_err(|_| DeviceError::BadSignature)?;
    key.verify(statement, &sig)
        .map_err(|_| DeviceError::BadSignature)
}

/// Checks that `key` is a valid Ed25519 public key.
pub fn check_key(key: &[u8; 32]) -> Result<(), DeviceError> {
    VerifyingKey::from_bytes(key)
        .map(|_| ())
        .map_err(|_| DeviceError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derive_from_keys_and_never_name_the_account() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let pk = k.verifying_key().to_bytes();
        assert_eq!(DeviceId::of_key(&pk), DeviceId::of_key(&pk));
        assert_ne!(DeviceId::of_key(&pk), DeviceId::of_key(&[8; 32]));
        assert_ne!(DeviceId::of_key(&pk), DeviceId::ACCOUNT);
    }

    #[test]
    fn statements_bind_every_input_and_signatures_verify() {
        let n = NodeUrl::parse("http://a.test").unwrap();
        let m = MailboxId([1; 16]);
        let d = DeviceId([2; 16]);
        let s = device_statement(&n, &m, &d, &[3; 32]);
        assert_ne!(s, device_statement(&n, &m, &DeviceId([4; 16]), &[3; 32]));
        assert_ne!(s, device_statement(&n, &MailboxId([5; 16]), &d, &[3; 32]));
        assert_ne!(s, device_statement(&n, &m, &d, &[6; 32]));
        let k = SigningKey::from_bytes(&[9; 32]);
        let pk = k.verifying_key().to_bytes();
        let sig = sign(&k, &s);
        assert_eq!(verify(&pk, &s, &sig), Ok(()));
        assert_eq!(
            verify(&pk, &device_statement(&n, &m, &d, &[7; 32]), &sig),
            Err(DeviceError::BadSignature)
        );
        assert_eq!(verify(&pk, &s, &sig[..10]), Err(DeviceError::BadSignature));
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("laptop").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(MAX_DEVICE_NAME + 1)).is_err());
        assert!(check_name("a\nb").is_err());
    }
}
