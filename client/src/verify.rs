//! Who sent a letter. `seal::open` reports whether a signature verifies against a known
//! certificate that names the From address; the client adds the rule that matters for
//! TOFU: the signer must be the key *pinned* for that From address. A certificate pinned
//! for someone else that also names the address proves nothing.

use sealpost_proto::Address;
use sealpost_proto::openpgp::{Cert, KeyHandle};
use sealpost_proto::seal::SignatureStatus;

use crate::contacts::{cert_has_key, display_fingerprint};
use crate::store::Trust;

/// Certificates a letter's signature may be checked against: ours and every pinned one.
pub struct Certs {
    certs: Vec<Cert>,
}

impl Certs {
    pub fn new(certs: Vec<Cert>) -> Self {
        Certs { certs }
    }

    pub fn push(&mut self, cert: Cert) {
        if !self
            .certs
            .iter()
            .any(|c| c.fingerprint() == cert.fingerprint())
        {
            self.certs.push(cert);
        }
    }

    pub fn lookup(&self, handle: &KeyHandle) -> Option<Cert> {
        self.certs.iter().find(|c| cert_has_key(c, handle)).cloned()
    }
}

/// The verdict on a letter from `from`, whose pinned key (if any) is `pinned` (hex).
pub fn judge(status: &SignatureStatus, from: &Address, pinned: Option<&str>) -> Trust {
    let un = |reason: String| Trust::Unverified { reason };
    match status {
        SignatureStatus::Good { signer } => match pinned {
            Some(p) if p == signer.to_hex() => Trust::Verified {
                signer: signer.to_hex(),
            },
            Some(p) => un(format!(
                "signed by {}, not by the key pinned for {from} ({})",
                display_fingerprint(&signer.to_hex()),
                display_fingerprint(p)
            )),
            None => un(format!(
                "signed by {}, but no key is pinned for {from}",
                display_fingerprint(&signer.to_hex())
            )),
        },
        SignatureStatus::SenderMismatch {
            signer,
            signer_addresses,
        } => un(format!(
            "signed by {} of {}, not by {from}",
            display_fingerprint(&signer.to_hex()),
            if signer_addresses.is_empty() {
                "an unnamed key".to_string()
            } else {
                signer_addresses.join(", ")
            }
        )),
        SignatureStatus::UnknownSigner { issuer } => match pinned {
            Some(p) => un(format!(
                "signed by unknown key {issuer}, not by the key pinned for {from} ({})",
                display_fingerprint(p)
            )),
            None => un(format!("signed by unknown key {issuer}")),
        },
        SignatureStatus::Missing => un("not signed".to_string()),
        SignatureStatus::Bad => un("the signature does not verify (forged or damaged)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealpost_proto::identity::SecretIdentity;
    use sealpost_proto::letter::Letter;
    use sealpost_proto::seal::{open, seal};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn only_the_pinned_key_verifies() {
        let bob = SecretIdentity::generate(&addr("bob@beta.test"), None).unwrap();
        let fake = SecretIdentity::generate(&addr("bob@beta.test"), None).unwrap();
        let alice = SecretIdentity::generate(&addr("alice@alpha.test"), None).unwrap();
        let alice_keys = alice.unlock(None).unwrap();
        let letter = Letter::new(
            addr("bob@beta.test"),
            vec![addr("alice@alpha.test")],
            "hi",
            "x",
            1,
        );
        let pinned = bob.fingerprint().to_hex();

        let real = seal(&letter, &bob.unlock(None).unwrap(), &alice.public_cert()).unwrap();
        let forged = seal(&letter, &fake.unlock(None).unwrap(), &alice.public_cert()).unwrap();

        // The impostor's cert is even known (pinned for another address) and names bob.
        let certs = Certs::new(vec![bob.public_cert(), fake.public_cert()]);
        let lookup = |h: &KeyHandle| certs.lookup(h);
        let o = open(&real, &alice_keys, &lookup).unwrap();
        assert!(judge(&o.signature, &o.letter.from, Some(&pinned)).is_verified());
        let o = open(&forged, &alice_keys, &lookup).unwrap();
        assert!(o.signature.is_good(), "proto alone would call it good");
        let t = judge(&o.signature, &o.letter.from, Some(&pinned));
        assert!(!t.is_verified(), "{t:?}");

        // Unknown signer: unverified.
        let only_bob = Certs::new(vec![bob.public_cert()]);
        let lookup = |h: &KeyHandle| only_bob.lookup(h);
        let o = open(&forged, &alice_keys, &lookup).unwrap();
        let Trust::Unverified { reason } = judge(&o.signature, &o.letter.from, Some(&pinned))
        else {
            panic!()
        };
        assert!(reason.contains("unknown key"), "{reason}");
        assert!(
            !judge(
                &SignatureStatus::Missing,
                &addr("bob@beta.test"),
                Some(&pinned)
            )
            .is_verified()
        );
        assert!(!judge(&SignatureStatus::Bad, &addr("bob@beta.test"), Some(&pinned)).is_verified());
    }
}
