use super::*;
use crate::identity::SecretIdentity;
use crate::letter::Attachment;
use crate::padding::bucket;
use crate::types::Address;
use std::sync::OnceLock;

struct People {
    alice: SecretIdentity,
    bob: SecretIdentity,
    mallory: SecretIdentity,
}

fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| People {
        alice: SecretIdentity::generate(&addr("alice@alpha.test"), None).unwrap(),
        bob: SecretIdentity::generate(&addr("bob@beta.test"), None).unwrap(),
        mallory: SecretIdentity::generate(&addr("mallory@evil.test"), None).unwrap(),
    })
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn letter(body: &str) -> Letter {
    Letter::new(
        addr("alice@alpha.test"),
        vec![addr("bob@beta.test")],
        "test",
        body,
        1_700_000_000,
    )
}

fn lookup_alice(h: &KeyHandle) -> Option<Cert> {
    let c = people().alice.public_cert();
    c.keys()
        .any(|k| k.key().key_handle().aliases(h))
        .then_some(c)
}

fn sealed_by_alice(l: &Letter) -> Vec<u8> {
    let p = people();
    seal(l, &p.alice.unlock(None).unwrap(), &p.bob.public_cert()).unwrap()
}

fn open_as_bob(sealed: &[u8]) -> Result<(Letter, Fingerprint), Error> {
    open_verified(sealed, &people().bob.unlock(None).unwrap(), &lookup_alice)
}

#[test]
fn round_trip_for_many_sizes_lands_on_buckets() {
    for size in [0usize, 1, 1024, 3 * 1024, 5000, 70_000, 1 << 20] {
        let body: String = "x".repeat(size);
        let l = letter(&body);
        let sealed = sealed_by_alice(&l);
        assert_eq!(
            sealed.len(),
            bucket(sealed.len()),
            "size {size}: {} is not a bucket",
            sealed.len()
        );
        let (back, signer) = open_as_bob(&sealed).unwrap();
        assert_eq!(signer, people().alice.fingerprint());
        assert_eq!(
            back.body.trim_end_matches(['\r', '\n']),
            body,
            "size {size}"
        );
        assert_eq!(back.subject, "test");
    }
}

#[test]
fn small_letters_share_one_size() {
    let a = sealed_by_alice(&letter("x"));
    let b = sealed_by_alice(&letter(&"y".repeat(3 * 1024)));
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), 4096);
}

#[test]
fn attachments_survive_byte_for_byte() {
    let mut l = letter("see attached");
    let data: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    l.attachments.push(Attachment {
        name: "blob.bin".into(),
        media_type: "application/octet-stream".into(),
        data: data.clone(),
    });
    l.attachments.push(Attachment {
        name: "empty.txt".into(),
        media_type: "text/plain".into(),
        data: Vec::new(),
    });
    let sealed = sealed_by_alice(&l);
    let (back, _) = open_as_bob(&sealed).unwrap();
    assert_eq!(back.attachments.len(), 2);
    assert_eq!(back.attachments[0].data, data);
    assert_eq!(back.attachments[0].name, "blob.bin");
}

#[test]
fn the_ciphertext_hides_the_recipient_key_id() {
    let sealed = sealed_by_alice(&letter("hi"));
    let bob = people().bob.public_cert();
    for k in bob.keys() {
        let id = k.key().keyid();
        let needle = id.as_bytes();
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "key id {id} appears in the ciphertext"
        );
    }
}

#[test]
fn tampered_ciphertext_is_refused() {
    let mut sealed = sealed_by_alice(&letter("hello"));
    let mid = sealed.len() / 2;
    sealed[mid] ^= 0x01;
    assert_eq!(open_as_bob(&sealed).unwrap_err(), Error::Tampered);
}

#[test]
fn wrong_recipient_is_refused() {
    let sealed = sealed_by_alice(&letter("hello"));
    let err = open_verified(
        &sealed,
        &people().mallory.unlock(None).unwrap(),
        &lookup_alice,
    )
    .unwrap_err();
    assert_eq!(err, Error::NotForRecipient);
}

#[test]
fn unknown_signer_is_reported_not_accepted() {
    let p = people();
    // Mallory writes "from alice" and signs with her own key.
    let sealed = seal(
        &letter("trust me"),
        &p.mallory.unlock(None).unwrap(),
        &p.bob.public_cert(),
    )
    .unwrap();
    match open_as_bob(&sealed) {
        Err(Error::UnknownSigner(_)) => {}
        other => panic!("{other:?}"),
    }
    let opened = open(&sealed, &p.bob.unlock(None).unwrap(), &lookup_alice).unwrap();
    assert!(matches!(
        opened.signature,
        SignatureStatus::UnknownSigner { .. }
    ));
}

#[test]
fn known_signer_for_another_address_is_a_mismatch() {
    let p = people();
    let sealed = seal(
        &letter("trust me"),
        &p.mallory.unlock(None).unwrap(),
        &p.bob.public_cert(),
    )
    .unwrap();
    let lookup_mallory = |_: &KeyHandle| Some(p.mallory.public_cert());
    match open_verified(&sealed, &p.bob.unlock(None).unwrap(), &lookup_mallory) {
        Err(Error::SenderMismatch { claimed, signer }) => {
            assert_eq!(claimed, "alice@alpha.test");
            assert_eq!(signer, "mallory@evil.test");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsigned_letter_is_reported_missing() {
    let p = people();
    let bytes = letter("no signature").to_rfc5322().unwrap();
    let ct = encrypt_to(&bytes, &p.bob.public_cert()).unwrap();
    assert_eq!(open_as_bob(&ct).unwrap_err(), Error::MissingSignature);
}

#[test]
fn truncated_message_is_refused() {
    let sealed = sealed_by_alice(&letter("hello"));
    let err = open_as_bob(&sealed[..sealed.len() / 2]).unwrap_err();
    assert!(
        matches!(err, Error::TruncatedMessage | Error::Tampered),
        "{err:?}"
    );
    let err = open_as_bob(&sealed[..sealed.len() - 1]).unwrap_err();
    assert!(
        matches!(err, Error::TruncatedMessage | Error::Tampered),
        "{err:?}"
    );
}

#[test]
fn garbage_is_malformed() {
    let err = open_as_bob(b"not openpgp at all").unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
}

#[test]
fn unencrypted_signed_message_is_refused() {
    let p = people();
    let keys = p.alice.unlock(None).unwrap();
    let bytes = letter("plain").to_rfc5322().unwrap();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let m = Signer::new(m, keys.signer.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut m = LiteralWriter::new(m).build().unwrap();
        m.write_all(&bytes).unwrap();
        m.finalize().unwrap();
    }
    assert!(matches!(
        open_as_bob(&sink).unwrap_err(),
        Error::Malformed(_)
    ));
}

#[test]
fn hop_payload_round_trips_for_the_node_only() {
    let p = people();
    let data = b"an encoded envelope".to_vec();
    let ct = encrypt_to(&data, &p.bob.public_cert()).unwrap();
    assert_eq!(
        decrypt_with(&ct, &p.bob.unlock(None).unwrap(), 1024).unwrap(),
        data
    );
    assert_eq!(
        decrypt_with(&ct, &p.alice.unlock(None).unwrap(), 1024).unwrap_err(),
        Error::NotForRecipient
    );
    assert!(matches!(
        decrypt_with(&ct, &p.bob.unlock(None).unwrap(), 4),
        Err(Error::TooLong { .. })
    ));
}

#[test]
fn pgp_mime_from_legacy_mail_is_decrypted_and_verified() {
    let p = people();
    // What a PGP/MIME mail program sends: the entity, signed and encrypted to bob, armored.
    let entity = b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\nthe real body\r\n--in\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"plan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--in--\r\n";
    let keys = p.alice.unlock(None).unwrap();
    let bob_keys = encryption_keys(&p.bob.public_cert()).unwrap();
    let mut sink = Vec::new();
    {
        let m = Message::new(&mut sink);
        let m = sealpost_proto_armor(m);
        // Encrypted by sequoia's own code, as another program would.
        let recipients = bob_keys
            .iter()
            .map(|k| Recipient::new(Features::empty().set_seipdv1(), None, k));
        let m = Encryptor::for_recipients(m, recipients).build().unwrap();
        let m = Signer::new(m, keys.signer.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut m = LiteralWriter::new(m).build().unwrap();
        m.write_all(entity).unwrap();
        m.finalize().unwrap();
    }
    let armored = String::from_utf8(sink).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP MESSAGE-----"));
    let outer = format!(
        "From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: encrypted by a mail program\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"out\"\r\n\r\n--out\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--out\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n{armored}\r\n--out--\r\n"
    );
    let letter = Letter::from_rfc5322(outer.as_bytes()).unwrap();
    let opened = open_pgp_mime(&letter, &p.bob.unlock(None).unwrap(), &lookup_alice)
        .unwrap()
        .expect("is PGP/MIME");
    assert_eq!(
        opened.signature,
        SignatureStatus::Good {
            signer: p.alice.fingerprint()
        }
    );
    assert_eq!(opened.letter.subject, "encrypted by a mail program");
    assert_eq!(opened.letter.body.trim_end(), "the real body");
    assert_eq!(opened.letter.attachments.len(), 1);
    assert_eq!(opened.letter.attachments[0].name, "plan.bin");
    assert_eq!(opened.letter.attachments[0].data, [0, 1, 2, 3]);
    // Not PGP/MIME: nothing to do. Encrypted to someone else: a typed error.
    assert!(
        open_pgp_mime(&letter_plain(), &p.bob.unlock(None).unwrap(), &lookup_alice)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        open_pgp_mime(&letter, &p.mallory.unlock(None).unwrap(), &lookup_alice).unwrap_err(),
        Error::NotForRecipient
    );
}

fn letter_plain() -> Letter {
    letter("plain")
}

fn sealpost_proto_armor(m: Message<'_>) -> Message<'_> {
    sequoia_openpgp::serialize::stream::Armorer::new(m)
        .build()
        .unwrap()
}

#[test]
fn a_deferred_signature_verifies_later_as_open_would() {
    let p = people();
    let bob = p.bob.unlock(None).unwrap();
    let nobody = |_: &KeyHandle| None;
    let sealed = sealed_by_alice(&letter("first letter of a new sender"));
    let (opened, deferred) = open_deferred(&sealed, &bob, &nobody).unwrap();
    assert!(matches!(
        opened.signature,
        SignatureStatus::UnknownSigner { .. }
    ));
    let deferred = deferred.expect("kept: the signer was unknown");
    let from = addr("alice@alpha.test");
    // Alice's certificate learned since: good, as opening again would say.
    let again = open(&sealed, &bob, &lookup_alice).unwrap().signature;
    assert!(again.is_good());
    assert_eq!(deferred.verify(&from, &lookup_alice), again);
    // Still unknown; a known key that does not name the From address is a mismatch.
    assert!(matches!(
        deferred.verify(&from, &nobody),
        SignatureStatus::UnknownSigner { .. }
    ));
    let lookup_mallory = |_: &KeyHandle| Some(p.mallory.public_cert());
    assert_eq!(
        deferred.verify(&from, &lookup_mallory),
        open(&sealed, &bob, &lookup_mallory).unwrap().signature
    );
    // Alice's signature over other bytes does not verify.
    let mut forged = deferred.clone();
    forged.signed[0] ^= 1;
    assert_eq!(forged.verify(&from, &lookup_alice), SignatureStatus::Bad);
    // Nothing is kept when the signer is known, or by plain `open`.
    let (opened, none) = open_deferred(&sealed, &bob, &lookup_alice).unwrap();
    assert!(opened.signature.is_good() && none.is_none());
}
