//! Who sent a letter. `seal::open` reports whether a signature verifies against a known
//! certificate that names the From address; the client adds the rule that matters for
//! TOFU: the signer must be the key *pinned* for that From address. A certificate pinned
//! for someone else that also names the address proves nothing.
//!
//! Legacy mail (labelled by the gateway) is never verified: the gateway sealed it on
//! arrival, and the verdict names that gateway. PGP/MIME inside it, which the legacy sender
//! encrypted to us, is opened here, for `list` and `read` alike.

use sealpost_proto::Address;
use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::{Cert, KeyHandle};
use sealpost_proto::seal::{SignatureStatus, open_pgp_mime};

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

    /// How many certificates are known: it grows as senders are learned.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
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

/// The verdict on a letter that came through an SMTP gateway: never verified (its From is
/// a legacy address nobody signed for); the reason names the gateway that sealed it.
///
/// `label` is the gateway's label of the letter and `from` its From: when a gateway sealed
/// it and its label says DMARC passed with a DKIM signature aligned with From's domain
/// (`from-verified=dkim:DOMAIN`), the reason says "From verified by DKIM for DOMAIN"; a
/// label that calls the letter suspicious is repeated first. Never `Verified`: the legacy
/// sender holds no Sealpost key.
pub fn judge_legacy(status: &SignatureStatus, label: Option<&str>, from: &Address) -> Trust {
    let sealed_by_gateway = matches!(
        status,
        SignatureStatus::Good { .. } | SignatureStatus::SenderMismatch { .. }
    );
    let dkim_domain = label
        .filter(|_| sealed_by_gateway)
        .and_then(|l| {
            l.split("; ")
                .find_map(|p| p.strip_prefix("from-verified=dkim:"))
        })
        .filter(|d| d.eq_ignore_ascii_case(from.domain()));
    let tail = match dkim_domain {
        Some(d) => format!("From verified by DKIM for {d}"),
        None => "the legacy sender is not proven".to_string(),
    };
    let suspicious = label
        .filter(|_| sealed_by_gateway)
        .and_then(|l| l.split("; ").find(|p| p.starts_with("SUSPICIOUS")));
    let reason = match status {
        SignatureStatus::Good { signer } | SignatureStatus::SenderMismatch { signer, .. } => {
            let names = match status {
                SignatureStatus::SenderMismatch {
                    signer_addresses, ..
                } if !signer_addresses.is_empty() => signer_addresses.join(", "),
                _ => "an unnamed gateway".to_string(),
            };
            format!(
                "legacy e-mail, sealed on arrival by the gateway {names} ({}); {tail}",
                display_fingerprint(&signer.to_hex())
            )
        }
        SignatureStatus::UnknownSigner { issuer } => {
            format!("legacy e-mail, sealed on arrival by an unknown gateway key {issuer}; {tail}")
        }
        SignatureStatus::Missing => format!("legacy e-mail, not signed by any gateway; {tail}"),
        SignatureStatus::Bad => {
            "legacy e-mail whose gateway signature does not verify (forged or damaged)".into()
        }
    };
    let reason = match suspicious {
        Some(s) => format!("{s}; {reason}"),
        None => reason,
    };
    Trust::Unverified { reason }
}

/// What a legacy letter is shown as. PGP/MIME (RFC 3156) that the legacy sender encrypted
/// to us is decrypted: its body and attachments replace the encrypted parts, and the label
/// says so and what the inner signature says. Other letters come back unchanged.
pub fn legacy_view(
    letter: Letter,
    keys: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> Letter {
    if letter.legacy.is_none() {
        return letter;
    }
    match open_pgp_mime(&letter, keys, lookup) {
        Ok(Some(inner)) => {
            let sig = match &inner.signature {
                SignatureStatus::Good { signer } => {
                    format!("signed by {} (verified)", signer.to_spaced_hex())
                }
                SignatureStatus::Missing => "not signed".to_string(),
                _ => "signature not verified".to_string(),
            };
            let mut shown = inner.letter;
            if let Some(l) = shown.legacy.as_mut() {
                l.push_str(&format!(
                    "; the content was PGP/MIME-encrypted to you by the sender, {sig}"
                ));
            }
            shown
        }
        Ok(None) => letter,
        Err(e) => {
            let mut shown = letter;
            if let Some(l) = shown.legacy.as_mut() {
                l.push_str(&format!("; PGP/MIME content could not be decrypted: {e}"));
            }
            shown
        }
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

    #[test]
    fn legacy_mail_names_its_gateway_and_is_never_verified() {
        let gw = SecretIdentity::generate(&addr("gateway@gw.test"), None).unwrap();
        let fp = gw.fingerprint();
        let carol = addr("carol@legacy.test");
        let t = judge_legacy(
            &SignatureStatus::SenderMismatch {
                signer: fp.clone(),
                signer_addresses: vec!["gateway@gw.test".into()],
            },
            None,
            &carol,
        );
        let Trust::Unverified { reason } = t else {
            panic!("{t:?}")
        };
        assert!(
            reason.contains("sealed on arrival by the gateway gateway@gw.test"),
            "{reason}"
        );
        assert!(!reason.contains("postmaster@"), "{reason}");
        assert!(
            !judge_legacy(&SignatureStatus::Good { signer: fp.clone() }, None, &carol)
                .is_verified(),
            "even a good signature does not prove a legacy From"
        );
        assert!(!judge_legacy(&SignatureStatus::Missing, None, &carol).is_verified());
        // DKIM aligned with From, as the gateway found it: said, still not Verified.
        let label = "arrived via legacy SMTP, not end-to-end; spf=pass (legacy.test); dkim=pass (legacy.test); dmarc=pass (legacy.test, p=reject); from-verified=dkim:legacy.test";
        let good = SignatureStatus::Good { signer: fp.clone() };
        let t = judge_legacy(&good, Some(label), &carol);
        assert!(!t.is_verified());
        let Trust::Unverified { reason } = t else {
            panic!("{t:?}")
        };
        assert!(
            reason.ends_with("From verified by DKIM for legacy.test"),
            "{reason}"
        );
        // Not for another From domain, nor when no gateway sealed the label.
        for t in [
            judge_legacy(&good, Some(label), &addr("carol@other.test")),
            judge_legacy(&SignatureStatus::Missing, Some(label), &carol),
        ] {
            let Trust::Unverified { reason } = t else {
                panic!("{t:?}")
            };
            assert!(!reason.contains("From verified"), "{reason}");
        }
        let q = "arrived via legacy SMTP, not end-to-end; dmarc=fail (legacy.test, p=quarantine); SUSPICIOUS: fails the DMARC policy of legacy.test (p=quarantine)";
        let Trust::Unverified { reason } = judge_legacy(&good, Some(q), &carol) else {
            panic!()
        };
        assert!(
            reason.starts_with("SUSPICIOUS: fails the DMARC policy"),
            "{reason}"
        );
    }

    #[test]
    fn pgp_mime_attachments_are_those_inside() {
        // A legacy PGP/MIME letter whose encrypted part bob cannot open (not to him): the
        // two MIME parts stay, and the label says why. A plain legacy letter is unchanged.
        let bob = SecretIdentity::generate(&addr("bob@gw.test"), None).unwrap();
        let keys = bob.unlock(None).unwrap();
        let msg = "X-Sealpost-Legacy: arrived via legacy SMTP, not end-to-end\r\nFrom: carol@legacy.test\r\nTo: bob@gw.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA5Ep\r\n-----END PGP MESSAGE-----\r\n--b1--\r\n";
        let letter = Letter::from_rfc5322(msg.as_bytes()).unwrap();
        let shown = legacy_view(letter, &keys, &|_| None);
        assert!(
            shown
                .legacy
                .as_deref()
                .unwrap()
                .contains("could not be decrypted"),
            "{:?}",
            shown.legacy
        );
        let plain =
            Letter::from_rfc5322(b"X-Sealpost-Legacy: x\r\nFrom: carol@legacy.test\r\n\r\nhi\r\n")
                .unwrap();
        assert_eq!(legacy_view(plain.clone(), &keys, &|_| None), plain);
    }
}
