//! Pinned contacts (trust on first use). A contact is an address and the certificate first
//! seen for it; a later record with another key is not taken but kept as a *pending* change
//! that only `contact accept` turns into the pin. A change says whether the pinned key
//! endorsed the new one (a key rotation, `sealpost_proto::record::endorse`) and whether the
//! pinned key had been verified out of band.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use sealpost_proto::Address;
use sealpost_proto::codec::Codec;
use sealpost_proto::identity::{cert_addresses, cert_to_armored, fingerprint_display};
use sealpost_proto::openpgp::parse::Parse;
use sealpost_proto::openpgp::{Cert, Fingerprint, KeyHandle};
use sealpost_proto::record::{SignedRecord, endorsed_by};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::profile::to_json;

pub const CONTACTS_DIR: &str = "contacts";

/// Where a pin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinSource {
    /// First seen in the contact's signed mailbox record.
    Record,
    /// Imported from a file (`import-key`).
    Import,
    /// A key change the user accepted.
    Accepted,
}

/// A key that differs from the pinned one, seen but not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingKey {
    pub fingerprint: String,
    pub cert: String,
    #[serde(default)]
    pub record: Option<String>,
    pub seen_at: u64,
    /// The pinned key certified the new one (the contact rotated their key).
    #[serde(default)]
    pub endorsed: bool,
}

impl PendingKey {
    /// How the new key relates to the pinned one, for people.
    pub fn provenance(&self) -> &'static str {
        if self.endorsed {
            "signed by the old key"
        } else {
            "NOT signed by the old key"
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub address: Address,
    /// Upper-case hex, no spaces.
    pub fingerprint: String,
    /// Armored public certificate.
    pub cert: String,
    pub pinned_at: u64,
    /// The user compared the fingerprint out of band (`contact verify`).
    pub verified: bool,
    pub source: PinSource,
    /// The newest signed record seen with the pinned key (base64), used when the node that
    /// publishes it cannot be reached.
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub record_sequence: Option<u64>,
    #[serde(default)]
    pub pending: Option<PendingKey>,
    /// When the record was last fetched and verified, and when it is due to be fetched
    /// again ([`crate::refresh`]; 0: at once). Absent in contacts pinned before records
    /// were refreshed: due at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<u64>,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Upper-case hex without spaces; accepts the spaced form people copy.
pub fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// A fingerprint the way people compare them.
pub fn display_fingerprint(hex: &str) -> String {
    match hex.parse::<Fingerprint>() {
        Ok(fp) => fingerprint_display(&fp),
        Err(_) => hex.to_string(),
    }
}

impl Contact {
    fn new(address: Address, cert: &Cert, source: PinSource, now: u64) -> Contact {
        Contact {
            address,
            fingerprint: cert.fingerprint().to_hex(),
            cert: cert_to_armored(cert),
            pinned_at: now,
            verified: false,
            source,
            record: None,
            record_sequence: None,
            pending: None,
            fetched_at: None,
            refresh_at: None,
        }
    }

    /// Notes that the record was fetched at `now`; the next refresh is due at `next`.
    pub fn fetched(&mut self, now: u64, next: u64) {
        self.fetched_at = Some(now);
        self.refresh_at = Some(next);
    }

    pub fn parsed_cert(&self) -> Result<Cert> {
        Cert::from_bytes(self.cert.as_bytes())
            .map_err(|e| Error::corrupt(format!("{CONTACTS_DIR}/{}.json", self.address), e))
    }

    pub fn cached_record(&self) -> Option<SignedRecord> {
        let bytes = b64().decode(self.record.as_deref()?).ok()?;
        SignedRecord::decode(&bytes).ok()
    }

    fn set_record(&mut self, record: &SignedRecord, sequence: u64) {
        if self.record_sequence.is_none_or(|s| sequence >= s) {
            self.record = Some(b64().encode(record.encode()));
            self.record_sequence = Some(sequence);
        }
    }
}

/// Whether a certificate has a key with this handle (primary or subkey).
pub fn cert_has_key(cert: &Cert, handle: &KeyHandle) -> bool {
    cert.keys().any(|k| k.key().key_handle().aliases(handle))
}

/// What pinning a certificate seen for an address came to.
#[derive(Debug)]
pub enum PinOutcome {
    /// No pin yet: this one is pinned now.
    New(Contact),
    /// Same key as pinned (cert and cached record refreshed).
    Same(Contact),
    /// Another key: the contact keeps its pin and records the change as pending.
    Changed(Contact),
}

impl PinOutcome {
    pub fn contact(&self) -> &Contact {
        match self {
            PinOutcome::New(c) | PinOutcome::Same(c) | PinOutcome::Changed(c) => c,
        }
    }

    pub fn contact_mut(&mut self) -> &mut Contact {
        match self {
            PinOutcome::New(c) | PinOutcome::Same(c) | PinOutcome::Changed(c) => c,
        }
    }

    /// The contact, or the refusal that explains the key change.
    pub fn into_result(self) -> Result<Contact> {
        match self {
            PinOutcome::New(c) | PinOutcome::Same(c) => Ok(c),
            PinOutcome::Changed(c) => Err(key_changed(&c)),
        }
    }
}

/// Whether the pinned key was verified, for people.
pub fn pin_state(c: &Contact) -> &'static str {
    if c.verified {
        "verified by you"
    } else {
        "not verified"
    }
}

pub fn key_changed(c: &Contact) -> Error {
    let new = match &c.pending {
        Some(p) => format!(
            "{} ({})",
            display_fingerprint(&p.fingerprint),
            p.provenance()
        ),
        None => "?".into(),
    };
    Error::KeyChanged {
        address: c.address.to_string(),
        old: format!("{} ({})", display_fingerprint(&c.fingerprint), pin_state(c)),
        new,
    }
}

/// Applies trust on first use to `cert`, seen for `address` (in `record`, if from one).
pub fn pin(
    existing: Option<Contact>,
    address: &Address,
    cert: &Cert,
    record: Option<(&SignedRecord, u64)>,
    source: PinSource,
    now: u64,
) -> PinOutcome {
    match existing {
        None => {
            let mut c = Contact::new(address.clone(), cert, source, now);
            if let Some((r, seq)) = record {
                c.set_record(r, seq);
            }
            PinOutcome::New(c)
        }
        Some(mut c) if c.fingerprint == cert.fingerprint().to_hex() => {
            // Same key: take the newer certificate (new subkeys, extended expiry).
            let newer = match c.parsed_cert() {
                Ok(old) => old
                    .merge_public(cert.clone())
                    .unwrap_or_else(|_| cert.clone()),
                Err(_) => cert.clone(),
            };
            c.cert = cert_to_armored(&newer);
            if let Some((r, seq)) = record {
                c.set_record(r, seq);
            }
            // A change that went back to the pinned key is no longer pending.
            c.pending = None;
            PinOutcome::Same(c)
        }
        Some(mut c) => {
            let endorsed = c
                .parsed_cert()
                .is_ok_and(|old| endorsed_by(cert, &old, address.as_str()));
            c.pending = Some(PendingKey {
                fingerprint: cert.fingerprint().to_hex(),
                cert: cert_to_armored(cert),
                record: record.map(|(r, _)| b64().encode(r.encode())),
                seen_at: now,
                endorsed,
            });
            PinOutcome::Changed(c)
        }
    }
}

/// The contacts directory of a profile.
pub struct ContactStore {
    dir: PathBuf,
}

impl ContactStore {
    pub fn new(profile_dir: &Path) -> Self {
        ContactStore {
            dir: profile_dir.join(CONTACTS_DIR),
        }
    }

    fn path(&self, address: &Address) -> PathBuf {
        // Addresses are ASCII letters, digits and . _ + - = ' @ only: safe as file names.
        self.dir.join(format!("{address}.json"))
    }

    pub fn get(&self, address: &Address) -> Result<Option<Contact>> {
        let path = self.path(address);
        let Some(bytes) = fsutil::read_optional(&path)? else {
            return Ok(None);
        };
        let c: Contact = serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
        if &c.address != address {
            return Err(Error::corrupt(&path, "names another address"));
        }
        Ok(Some(c))
    }

    pub fn all(&self) -> Result<Vec<Contact>> {
        let mut out = Vec::new();
        for path in fsutil::list_files(&self.dir, ".json")? {
            let bytes = std::fs::read(&path).map_err(|e| Error::profile_io(&path, e))?;
            out.push(serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?);
        }
        Ok(out)
    }

    pub fn save(&self, c: &Contact) -> Result<()> {
        fsutil::create_private_dir(&self.dir)?;
        fsutil::write_atomic(&self.path(&c.address), &to_json(c))
    }

    pub fn remove(&self, address: &Address) -> Result<bool> {
        if self.get(address)?.is_none() {
            return Ok(false);
        }
        fsutil::remove_durable(&self.path(address))?;
        Ok(true)
    }

    /// The contact, or `NotFound`.
    pub fn require(&self, address: &Address) -> Result<Contact> {
        self.get(address)?.ok_or_else(|| Error::NotFound {
            what: "contact",
            id: address.to_string(),
        })
    }

    /// Turns the pending key of `address` into its pin. With `expected`, the pending
    /// fingerprint must equal it. The caller asks the user first when the pinned key was
    /// verified (see `sealpost contact accept`).
    pub fn accept(&self, address: &Address, expected: Option<&str>, now: u64) -> Result<Contact> {
        let mut c = self.require(address)?;
        let p = c.pending.take().ok_or_else(|| {
            Error::input(
                "contact accept",
                format!("{address} has no pending key change"),
            )
        })?;
        if let Some(want) = expected
            && normalize_fingerprint(want) != p.fingerprint
        {
            return Err(Error::FingerprintMismatch {
                address: address.to_string(),
                expected: display_fingerprint(&normalize_fingerprint(want)),
                actual: display_fingerprint(&p.fingerprint),
            });
        }
        c.fingerprint = p.fingerprint;
        c.cert = p.cert;
        c.record = p.record;
        c.record_sequence = c.cached_record().and_then(|r| {
            sealpost_proto::record::MailboxRecord::decode(&r.body)
                .ok()
                .map(|b| b.sequence)
        });
        c.verified = false;
        c.source = PinSource::Accepted;
        c.pinned_at = now;
        self.save(&c)?;
        Ok(c)
    }

    /// Marks `address` as verified when `fingerprint` equals its pinned key.
    pub fn verify(&self, address: &Address, fingerprint: &str) -> Result<Contact> {
        let mut c = self.get(address)?.ok_or_else(|| Error::NotFound {
            what: "contact",
            id: address.to_string(),
        })?;
        let want = normalize_fingerprint(fingerprint);
        if want != c.fingerprint {
            return Err(Error::FingerprintMismatch {
                address: address.to_string(),
                expected: display_fingerprint(&want),
                actual: display_fingerprint(&c.fingerprint),
            });
        }
        c.verified = true;
        self.save(&c)?;
        Ok(c)
    }
}

/// The one address a certificate names, or the one the user chose among them.
pub fn address_for_cert(cert: &Cert, chosen: Option<&Address>) -> Result<Address> {
    let names = cert_addresses(cert);
    match chosen {
        Some(a) if names.iter().any(|n| n == a.as_str()) => Ok(a.clone()),
        Some(a) => Err(Error::input(
            "certificate",
            format!("it does not name {a} (it names: {})", names.join(", ")),
        )),
        None => match names.as_slice() {
            [one] => Ok(Address::parse(one)?),
            [] => Err(Error::input("certificate", "it names no e-mail address")),
            many => Err(Error::input(
                "certificate",
                format!(
                    "it names several addresses ({}); choose one with --address",
                    many.join(", ")
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_proto::identity::SecretIdentity;

    fn cert(a: &str) -> Cert {
        SecretIdentity::generate(&Address::parse(a).unwrap(), None)
            .unwrap()
            .public_cert()
    }

    #[test]
    fn first_use_pins_and_a_changed_key_is_held_pending() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContactStore::new(tmp.path());
        let bob = Address::parse("bob@beta.test").unwrap();
        let k1 = cert("bob@beta.test");
        let k2 = cert("bob@beta.test");

        let c = pin(
            store.get(&bob).unwrap(),
            &bob,
            &k1,
            None,
            PinSource::Record,
            10,
        )
        .into_result()
        .unwrap();
        store.save(&c).unwrap();
        assert_eq!(
            store.get(&bob).unwrap().unwrap().fingerprint,
            k1.fingerprint().to_hex()
        );

        let out = pin(
            store.get(&bob).unwrap(),
            &bob,
            &k1,
            None,
            PinSource::Record,
            11,
        );
        assert!(matches!(out, PinOutcome::Same(_)));

        let out = pin(
            store.get(&bob).unwrap(),
            &bob,
            &k2,
            None,
            PinSource::Record,
            12,
        );
        let PinOutcome::Changed(c) = out else {
            panic!("key change not detected")
        };
        assert_eq!(c.fingerprint, k1.fingerprint().to_hex(), "pin unchanged");
        store.save(&c).unwrap();
        let e = key_changed(&c).to_string();
        assert!(e.contains(&fingerprint_display(&k1.fingerprint())), "{e}");
        assert!(e.contains(&fingerprint_display(&k2.fingerprint())), "{e}");

        // Accepting with a wrong fingerprint changes nothing.
        assert!(
            store
                .accept(&bob, Some(&k1.fingerprint().to_hex()), 13)
                .is_err()
        );
        assert_eq!(
            store.get(&bob).unwrap().unwrap().fingerprint,
            k1.fingerprint().to_hex()
        );
        let c = store
            .accept(&bob, Some(&fingerprint_display(&k2.fingerprint())), 13)
            .unwrap();
        assert_eq!(c.fingerprint, k2.fingerprint().to_hex());
        assert!(c.pending.is_none());
        assert!(
            store.accept(&bob, None, 14).is_err(),
            "nothing pending any more"
        );
    }

    #[test]
    fn a_change_says_whether_the_old_key_signed_it_and_was_verified() {
        use sealpost_proto::identity::SecretIdentity;
        use sealpost_proto::record::endorse;
        let bob = Address::parse("bob@beta.test").unwrap();
        let old = SecretIdentity::generate(&bob, None).unwrap();
        let rotated = endorse(&cert("bob@beta.test"), &old.unlock(None).unwrap(), &bob).unwrap();
        let mut pinned = pin(None, &bob, &old.public_cert(), None, PinSource::Record, 1)
            .into_result()
            .unwrap();
        let PinOutcome::Changed(c) = pin(
            Some(pinned.clone()),
            &bob,
            &rotated,
            None,
            PinSource::Record,
            2,
        ) else {
            panic!("change not seen")
        };
        assert!(c.pending.as_ref().unwrap().endorsed);
        let e = key_changed(&c).to_string();
        assert!(e.contains("(signed by the old key)"), "{e}");
        assert!(e.contains("(not verified)"), "{e}");

        pinned.verified = true;
        let PinOutcome::Changed(c) = pin(
            Some(pinned),
            &bob,
            &cert("bob@beta.test"),
            None,
            PinSource::Record,
            3,
        ) else {
            panic!("change not seen")
        };
        assert!(!c.pending.as_ref().unwrap().endorsed);
        let e = key_changed(&c).to_string();
        assert!(e.contains("NOT signed by the old key"), "{e}");
        assert!(e.contains("(verified by you)"), "{e}");
    }

    #[test]
    fn verify_compares_fingerprints() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContactStore::new(tmp.path());
        let bob = Address::parse("bob@beta.test").unwrap();
        let k = cert("bob@beta.test");
        store
            .save(
                &pin(None, &bob, &k, None, PinSource::Import, 1)
                    .into_result()
                    .unwrap(),
            )
            .unwrap();
        assert!(store.verify(&bob, "0000").is_err());
        assert!(!store.get(&bob).unwrap().unwrap().verified);
        let spaced = fingerprint_display(&k.fingerprint()).to_lowercase();
        assert!(store.verify(&bob, &spaced).unwrap().verified);
        assert!(matches!(
            store.verify(&Address::parse("x@y.test").unwrap(), "00"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn address_is_taken_from_the_cert() {
        let k = cert("carol@gamma.test");
        assert_eq!(
            address_for_cert(&k, None).unwrap().as_str(),
            "carol@gamma.test"
        );
        assert!(address_for_cert(&k, Some(&Address::parse("eve@gamma.test").unwrap())).is_err());
    }

    #[test]
    fn corrupt_contact_file_is_a_profile_error() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContactStore::new(tmp.path());
        std::fs::create_dir_all(tmp.path().join(CONTACTS_DIR)).unwrap();
        std::fs::write(
            tmp.path().join(CONTACTS_DIR).join("bob@beta.test.json"),
            "[]",
        )
        .unwrap();
        let e = store
            .get(&Address::parse("bob@beta.test").unwrap())
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(store.all().err().unwrap().exit_code(), 4);
    }
}
