//! The gateway's DKIM signatures, checked by an independent verifier: dkimpy (Debian's
//! python3-dkim, with python3-nacl for Ed25519), given the gateway's key records locally
//! instead of DNS. Both signatures (RSA-SHA256 and Ed25519-SHA256) must verify, on a
//! multipart letter whose body part carries its own Content-Type; and a changed byte must
//! make them fail, so the check can fail.

use sealpost_gateway::dkim::{DkimKeys, new_rsa_pem};
use sealpost_gateway::smtp_out::build;
use sealpost_proto::Address;
use sealpost_proto::letter::{Attachment, Letter};
use sealpost_testkit::dkim::dkimpy;

fn keys() -> DkimKeys {
    let seed = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    DkimKeys::new("gw.test", "sealpost", seed, &new_rsa_pem().unwrap()).unwrap()
}

fn letter() -> Letter {
    let mut l = Letter::new(
        Address::parse("alice@gw.test").unwrap(),
        vec![Address::parse("carol@legacy.test").unwrap()],
        "Minutes, with ümlauts",
        "Dear Carol,\nthe minutes are attached.\r.\rNot the end.\n",
        1_700_000_000,
    );
    l.cc = vec![Address::parse("dave@legacy.test").unwrap()];
    l.in_reply_to = Some("old-1@legacy.test".into());
    l.attachments.push(Attachment {
        name: "minutes.pdf".into(),
        media_type: "application/pdf".into(),
        data: (0..5000u32).map(|i| (i * 31 % 256) as u8).collect(),
    });
    l
}

#[test]
fn dkimpy_verifies_both_signatures_of_a_multipart_letter() {
    let keys = keys();
    let records = keys.records().to_vec();
    for l in [letter(), {
        let mut single = letter();
        single.attachments.clear();
        single
    }] {
        let signed = build(&l, Some(&keys)).unwrap();
        let text = String::from_utf8_lossy(&signed).into_owned();
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        assert!(text.contains("a=ed25519-sha256") && text.contains("a=rsa-sha256"));
        assert_eq!(dkimpy(&signed, &records), [true, true], "{text}");

        // A byte changed in the body, or a signed header changed: both fail.
        let tampered = text.replacen("the minutes", "the mInutes", 1);
        assert_ne!(tampered, text, "the body is plain enough to find");
        assert_eq!(dkimpy(tampered.as_bytes(), &records), [false, false]);
        let tampered = text.replacen("Content-Type: text/plain", "Content-Type: text/html", 1);
        assert_ne!(tampered, text);
        assert_eq!(dkimpy(tampered.as_bytes(), &records), [false, false]);
    }
}

#[test]
fn the_records_carry_the_public_keys() {
    let keys = keys();
    let [(rsa_name, rsa), (ed_name, ed)] = keys.records();
    assert_eq!(rsa_name, "sealpost-rsa._domainkey.gw.test");
    assert!(rsa.starts_with("v=DKIM1; k=rsa; p=MII"), "{rsa}");
    assert_eq!(ed_name, "sealpost._domainkey.gw.test");
    assert!(ed.starts_with("v=DKIM1; k=ed25519; p="), "{ed}");
    // With the wrong key published, dkimpy refuses.
    let other = DkimKeys::new(
        "gw.test",
        "sealpost",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        &new_rsa_pem().unwrap(),
    )
    .unwrap();
    let signed = build(&letter(), Some(&keys)).unwrap();
    assert_eq!(dkimpy(&signed, &other.records()), [false, false]);
}
