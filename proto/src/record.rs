//! The mailbox record: which nodes a user is homed on, signed by the user's key; and key
//! rotation, where the old key endorses the new certificate with a standard OpenPGP
//! certification that travels inside the new certificate (so a record needs no new field).

use std::io::Write;

use sequoia_openpgp as openpgp;

use openpgp::packet::UserID;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::serialize::stream::{Message, Signer};
use openpgp::types::SignatureType;
use openpgp::{Cert, KeyHandle};

use crate::codec::{Codec, Reader, Writer, tag};
use crate::error::Error;
use crate::identity::{Keyring, SecretIdentity, cert_addresses, cert_from_bytes, policy};
use crate::limits::{
    MAX_ADDRESS_BYTES, MAX_CERT_BYTES, MAX_HOMES, MAX_SIGNATURE_BYTES, MAX_SIGNED_BODY_BYTES,
    MAX_URL_BYTES,
};
use crate::types::{Address, MailboxId, NodeUrl};

/// One home node of a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub url: NodeUrl,
    /// The node's Ed25519 public key (its identity; see [`crate::descriptor`]).
    pub node_key: [u8; 32],
    /// The mailbox id on that node.
    pub mailbox: MailboxId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRecord {
    pub address: Address,
    /// The user's public certificate, binary OpenPGP.
    pub cert: Vec<u8>,
    pub homes: Vec<Home>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; a record past this is refused.
    pub expires: u64,
    /// Increases with every new record for the same address; older ones are refused.
    pub sequence: u64,
}

impl Codec for MailboxRecord {
    const WHAT: &'static str = "mailbox record";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::RECORD_BODY);
        w.bytes16(self.address.as_str().as_bytes());
        w.bytes32(&self.cert);
        w.u8(u8::try_from(self.homes.len()).expect("invariant: homes bounded by MAX_HOMES"));
        for h in &self.homes {
            w.bytes16(h.url.as_str().as_bytes());
            w.fixed(&h.node_key);
            w.fixed(h.mailbox.as_bytes());
        }
        w.u64(self.created);
        w.u64(self.expires);
        w.u64(self.sequence);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::RECORD_BODY)?;
        let address = Address::parse(r.str16("address", MAX_ADDRESS_BYTES)?)?;
        let cert = r.bytes32("certificate", MAX_CERT_BYTES)?.to_vec();
        let n = r.u8()? as usize;
        if n == 0 || n > MAX_HOMES {
            return Err(Error::InvalidField {
                what: "homes",
                reason: format!("{n} homes; must be 1 to {MAX_HOMES}"),
            });
        }
        let mut homes = Vec::with_capacity(n);
        for _ in 0..n {
            let url = NodeUrl::parse(r.str16("home url", MAX_URL_BYTES)?)?;
            let node_key = r.array()?;
            let mailbox = MailboxId(r.array()?);
            homes.push(Home {
                url,
                node_key,
                mailbox,
            });
        }
        let created = r.u64()?;
        let expires = r.u64()?;
        let sequence = r.u64()?;
        Ok(MailboxRecord {
            address,
            cert,
            homes,
            created,
            expires,
            sequence,
        })
    }
}

/// A record body and the user's detached OpenPGP signature over exactly those bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Codec for SignedRecord {
    const WHAT: &'static str = "signed record";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::SIGNED_RECORD);
        w.bytes32(&self.body);
        w.bytes16(&self.signature);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::SIGNED_RECORD)?;
        let body = r.bytes32("record body", MAX_SIGNED_BODY_BYTES)?.to_vec();
        let signature = r.bytes16("record signature", MAX_SIGNATURE_BYTES)?.to_vec();
        Ok(SignedRecord { body, signature })
    }
}

impl SignedRecord {
    /// Signs `record` with the user's keys. The record's certificate must be the signer's.
    pub fn sign(record: &MailboxRecord, keys: &Keyring) -> Result<Self, Error> {
        let rec_cert = cert_from_bytes(&record.cert)?;
        if rec_cert.fingerprint() != keys.fingerprint() {
            return Err(Error::InvalidField {
                what: "record certificate",
                reason: "is not the signer's".into(),
            });
        }
        let body = record.encode();
        let signature = sign_detached(&body, keys)?;
        Ok(SignedRecord { body, signature })
    }

    /// Checks the signature against the certificate inside, that the certificate names the
    /// address, and that the record has not expired. Returns the record and its certificate.
    pub fn verify(&self, now: u64) -> Result<(MailboxRecord, Cert), Error> {
        let record = MailboxRecord::decode(&self.body)?;
        let cert = cert_from_bytes(&record.cert)?;
        verify_detached(&self.body, &self.signature, &cert)
            .map_err(|_| Error::BadObjectSignature("mailbox record"))?;
        if !cert_addresses(&cert)
            .iter()
            .any(|a| a == record.address.as_str())
        {
            return Err(Error::InvalidField {
                what: "mailbox record",
                reason: "certificate does not name the address".into(),
            });
        }
        if record.expires <= now {
            return Err(Error::Expired {
                what: "mailbox record",
                expires: record.expires,
                now,
            });
        }
        Ok((record, cert))
    }
}

/// Longest a record may stay valid: `expires` at most this long after the node sees it
/// (clients sign for 365 days). Without a bound, a record could never be replaced.
pub const MAX_RECORD_LIFETIME_SECS: u64 = 400 * 24 * 3600;
/// How far a record's `sequence` may run ahead of the receiver's clock in Unix
/// milliseconds (clients use the time of signing). Without a bound, a sequence of 2^64-1
/// would make every later record stale.
pub const MAX_SEQUENCE_AHEAD_MS: u64 = 24 * 3600 * 1000;

impl MailboxRecord {
    /// Refuses a record that would outlive every later one: `expires` more than
    /// [`MAX_RECORD_LIFETIME_SECS`] after `now` (Unix seconds), or `sequence` more than
    /// [`MAX_SEQUENCE_AHEAD_MS`] ahead of `now` in milliseconds.
    pub fn check_bounds(&self, now: u64) -> Result<(), Error> {
        let out = |reason: String| {
            Err(Error::InvalidField {
                what: "mailbox record",
                reason,
            })
        };
        let max_expires = now.saturating_add(MAX_RECORD_LIFETIME_SECS);
        if self.expires > max_expires {
            return out(format!(
                "expires {} is more than {} days from now ({now})",
                self.expires,
                MAX_RECORD_LIFETIME_SECS / 86_400
            ));
        }
        let max_sequence = now
            .saturating_mul(1000)
            .saturating_add(MAX_SEQUENCE_AHEAD_MS);
        if self.sequence > max_sequence {
            return out(format!(
                "sequence {} is above {max_sequence}, now in milliseconds plus a day",
                self.sequence
            ));
        }
        Ok(())
    }
}

/// Endorses `new_cert` (the user's next key) with the current keys `old`: a third-party
/// OpenPGP certification (type 0x10, generic) by the old primary key over the new
/// certificate's User ID for `address`, merged into the returned certificate. `gpg
/// --check-sigs` shows it like any other certification.
pub fn endorse(new_cert: &Cert, old: &Keyring, address: &Address) -> Result<Cert, Error> {
    if openpgp::crypto::Signer::public(&old.signer).fingerprint() != old.fingerprint() {
        return Err(Error::Key(
            "the current key signs with a subkey; only a primary key can endorse a new key".into(),
        ));
    }
    let userid = address_userid(new_cert, address.as_str()).ok_or(Error::InvalidField {
        what: "new certificate",
        reason: format!("names no User ID with {address}"),
    })?;
    let mut signer = old.signer.clone();
    let sig = userid
        .certify(
            &mut signer,
            new_cert,
            SignatureType::GenericCertification,
            None,
            None,
        )
        .map_err(|e| Error::Key(e.to_string()))?;
    let (cert, _) = new_cert
        .clone()
        .insert_packets(sig)
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(cert)
}

/// `new` with [`endorse`]'s certification by `old` merged in; its secret keys are kept.
pub fn endorse_identity(
    new: &SecretIdentity,
    old: &Keyring,
    address: &Address,
) -> Result<SecretIdentity, Error> {
    use openpgp::serialize::SerializeInto;
    let key_err = |e: openpgp::anyhow::Error| Error::Key(e.to_string());
    let endorsed = endorse(&new.public_cert(), old, address)?;
    let tsk = Cert::from_bytes(&new.to_bytes()).map_err(key_err)?;
    let merged = tsk.merge_public(endorsed).map_err(key_err)?;
    SecretIdentity::from_bytes(&merged.as_tsk().to_vec().map_err(key_err)?)
}

/// Whether `new_cert` carries a valid certification by `old_cert`'s primary key over its
/// User ID for `address` (see [`endorse`]). `old_cert` may have expired since: the pinned
/// key of a contact who rotated late still vouches for the new one.
pub fn endorsed_by(new_cert: &Cert, old_cert: &Cert, address: &str) -> bool {
    if new_cert.fingerprint() == old_cert.fingerprint() {
        return false;
    }
    let issuer = old_cert.primary_key().key().role_as_unspecified();
    new_cert.userids().any(|ua| {
        ua.userid()
            .email()
            .ok()
            .flatten()
            .is_some_and(|e| e.eq_ignore_ascii_case(address))
            && ua
                .valid_certifications_by_key(policy(), None, issuer)
                .next()
                .is_some()
    })
}

fn address_userid<'a>(cert: &'a Cert, address: &str) -> Option<&'a UserID> {
    cert.userids().map(|ua| ua.userid()).find(|u| {
        u.email()
            .ok()
            .flatten()
            .is_some_and(|e| e.eq_ignore_ascii_case(address))
    })
}

/// A detached OpenPGP signature (binary) over `data`.
pub fn sign_detached(data: &[u8], keys: &Keyring) -> Result<Vec<u8>, Error> {
    let internal = |e: openpgp::anyhow::Error| Error::Key(e.to_string());
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let mut m = Signer::new(m, keys.signer.clone())
            .map_err(internal)?
            .detached()
            .build()
            .map_err(internal)?;
        m.write_all(data).map_err(|e| Error::Key(e.to_string()))?;
        m.finalize().map_err(internal)?;
    }
    Ok(sink)
}

/// Verifies a detached signature made by `cert` over `data`.
pub fn verify_detached(data: &[u8], signature: &[u8], cert: &Cert) -> Result<(), Error> {
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(Error::TooLong {
            what: "signature",
            len: signature.len(),
            max: MAX_SIGNATURE_BYTES,
        });
    }
    // Only a single signature packet is accepted.
    let single_signature = openpgp::PacketPile::from_bytes(signature).is_ok_and(|p| {
        p.children().count() == 1
            && matches!(p.children().next(), Some(openpgp::Packet::Signature(_)))
    });
    if !single_signature {
        return Err(Error::Malformed("not a single signature packet".into()));
    }
    struct H<'a> {
        cert: &'a Cert,
        good: bool,
    }
    impl VerificationHelper for H<'_> {
        fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
            Ok(vec![self.cert.clone()])
        }
        fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
            for layer in structure.into_iter() {
                if let MessageLayer::SignatureGroup { results } = layer {
                    self.good = !results.is_empty() && results.iter().all(|r| r.is_ok());
                }
            }
            Ok(())
        }
    }
    let mut v = DetachedVerifierBuilder::from_bytes(signature)
        .map_err(|e| Error::Malformed(e.to_string()))?
        .with_policy(policy(), None, H { cert, good: false })
        .map_err(|_| Error::BadSignature)?;
    v.verify_bytes(data).map_err(|_| Error::BadSignature)?;
    if v.into_helper().good {
        Ok(())
    } else {
        Err(Error::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretIdentity;

    #[test]
    fn detached_signature_round_trip() {
        let id = SecretIdentity::generate(&Address::parse("a@b.test").unwrap(), None).unwrap();
        let keys = id.unlock(None).unwrap();
        let sig = sign_detached(b"data", &keys).unwrap();
        verify_detached(b"data", &sig, &id.public_cert()).unwrap();
        assert!(verify_detached(b"datb", &sig, &id.public_cert()).is_err());
    }

    #[test]
    fn records_that_would_outlive_every_successor_are_refused() {
        let now = 1_800_000_000;
        let rec = |expires, sequence| MailboxRecord {
            address: Address::parse("a@b.test").unwrap(),
            cert: Vec::new(),
            homes: Vec::new(),
            created: now,
            expires,
            sequence,
        };
        let year = 365 * 86_400;
        assert!(rec(now + year, now * 1000).check_bounds(now).is_ok());
        assert!(rec(now + year, 1).check_bounds(now).is_ok());
        let lifetime = now + MAX_RECORD_LIFETIME_SECS;
        assert!(rec(lifetime, 1).check_bounds(now).is_ok());
        assert!(rec(lifetime + 1, 1).check_bounds(now).is_err());
        let ahead = now * 1000 + MAX_SEQUENCE_AHEAD_MS;
        assert!(rec(now + 1, ahead).check_bounds(now).is_ok());
        assert!(rec(now + 1, ahead + 1).check_bounds(now).is_err());
        assert!(rec(u64::MAX, 1).check_bounds(now).is_err());
        assert!(rec(now + 1, u64::MAX).check_bounds(now).is_err());
        assert!(rec(now + 1, u64::MAX).check_bounds(u64::MAX).is_ok());
    }

    #[test]
    fn endorsement_by_the_old_key_is_recognised_and_only_that() {
        let bob = Address::parse("bob@beta.test").unwrap();
        let old = SecretIdentity::generate(&bob, None).unwrap();
        let new = SecretIdentity::generate(&bob, None).unwrap();
        let other = SecretIdentity::generate(&bob, None).unwrap();
        let endorsed = endorse(&new.public_cert(), &old.unlock(None).unwrap(), &bob).unwrap();
        assert_eq!(endorsed.fingerprint(), new.fingerprint());
        assert!(endorsed_by(&endorsed, &old.public_cert(), "bob@beta.test"));
        assert!(endorsed_by(&endorsed, &old.public_cert(), "BOB@beta.test"));
        // Not by another key, not for another address, not without the certification.
        assert!(!endorsed_by(
            &endorsed,
            &other.public_cert(),
            "bob@beta.test"
        ));
        assert!(!endorsed_by(&endorsed, &old.public_cert(), "eve@beta.test"));
        assert!(!endorsed_by(
            &new.public_cert(),
            &old.public_cert(),
            "bob@beta.test"
        ));
        // It survives the wire: binary encoding and parsing as a public certificate.
        let parsed = cert_from_bytes(&crate::identity::cert_to_bytes(&endorsed)).unwrap();
        assert!(endorsed_by(&parsed, &old.public_cert(), "bob@beta.test"));
        // The secret identity carries it too, with its secret keys.
        let id = endorse_identity(&new, &old.unlock(None).unwrap(), &bob).unwrap();
        assert!(id.unlock(None).is_ok());
        assert!(endorsed_by(
            &id.public_cert(),
            &old.public_cert(),
            "bob@beta.test"
        ));
        // An endorsement for an address the new certificate does not name is refused.
        assert!(
            endorse(
                &new.public_cert(),
                &old.unlock(None).unwrap(),
                &Address::parse("eve@beta.test").unwrap()
            )
            .is_err()
        );
    }
}
