//! Sealing and opening letters: sign with the sender's key, pad to a size bucket, encrypt to
//! the recipient with a hidden (wildcard) recipient key id, SEIPDv1, no compression.
//!
//! Also the plain encrypt/decrypt used for hop wrappers (an envelope encrypted to a node).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, DetachedVerifierBuilder, MessageLayer, MessageStructure,
    VerificationError, VerificationHelper,
};
use openpgp::serialize::Marshal;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::{Features, SymmetricAlgorithm};
use openpgp::{Cert, Fingerprint, KeyHandle};

use crate::Address;
use crate::error::Error;
use crate::identity::{Keyring, cert_addresses, policy};
use crate::letter::Letter;
use crate::limits::{MAX_LETTER_BYTES, MAX_SEALED_BYTES};
use crate::padding::{MIN_PAD, bucket, pad_header};

mod ed25519;
mod x25519;
pub(crate) use ed25519::SignKey;
pub(crate) use x25519::DecryptKey;

/// How a letter's signature checked out. Only `Good` means the letter is from its `From`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Signed by `signer`, whose certificate names the letter's `From` address.
    Good { signer: Fingerprint },
    /// No signature at all.
    Missing,
    /// Signed, but by a key we have no certificate for.
    UnknownSigner { issuer: String },
    /// A signature that does not verify.
    Bad,
    /// A good signature by a known key whose certificate does not name the `From` address.
    SenderMismatch {
        signer: Fingerprint,
        signer_addresses: Vec<String>,
    },
}

impl SignatureStatus {
    pub fn is_good(&self) -> bool {
        matches!(self, SignatureStatus::Good { .. })
    }
}

/// An opened letter and what its signature said.
#[derive(Clone, Debug)]
pub struct Opened {
    pub letter: Letter,
    pub signature: SignatureStatus,
}

/// Overhead of the last seal per size class (bit length of the letter size).
static OVERHEAD_BY_SIZE_CLASS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

/// Attempts to land exactly on the bucket before giving up.
const PAD_ATTEMPTS: usize = 16;

/// Seals `letter` from `sender` to `recipient`. The result is exactly a bucket size long.
///
/// The letter's MIME encoding is streamed into the signer and encryptor (its length is
/// known before it is written, so the padding that leads it can be chosen first).
pub fn seal(letter: &Letter, sender: &Keyring, recipient: &Cert) -> Result<Vec<u8>, Error> {
    let composed = letter.compose()?;
    seal_with(composed.len(), &|w| composed.write_to(w), sender, recipient)
}

/// Seals an already encoded RFC 5322 message (the gateway seals what arrived over SMTP).
pub fn seal_rfc5322(message: &[u8], sender: &Keyring, recipient: &Cert) -> Result<Vec<u8>, Error> {
    seal_with(message.len(), &|w| w.write_all(message), sender, recipient)
}

/// Writes the message (of `len` bytes) into the signing and encrypting stack.
type Source<'a> = &'a dyn Fn(&mut dyn Write) -> std::io::Result<()>;

fn seal_with(
    len: usize,
    message: Source<'_>,
    sender: &Keyring,
    recipient: &Cert,
) -> Result<Vec<u8>, Error> {
    if len > MAX_LETTER_BYTES {
        return Err(Error::LetterTooLarge {
            len,
            max: MAX_LETTER_BYTES,
        });
    }
    let recipients = encryption_keys(recipient)?;
    // The OpenPGP overhead (PKESK, framing, signature) is nearly constant for a size class,
    // so the first attempt uses the overhead measured last time and normally lands exactly.
    // Without a measurement, seal once with the least padding to learn it.
    let class = (usize::BITS - len.leading_zeros()) as usize;
    let cached = OVERHEAD_BY_SIZE_CLASS[class].load(Ordering::Relaxed);
    let (mut pad, mut target) = if cached > 0 {
        let t = bucket(len + MIN_PAD + cached);
        (t - len - cached, t)
    } else {
        (MIN_PAD, 0)
    };
    let mut last = 0usize;
    for attempt in 0..PAD_ATTEMPTS {
        let sealed = sign_encrypt(
            &pad_header(pad),
            len,
            message,
            &sender.signer,
            &recipients,
            target.max(len + pad + 1024),
        )?;
        if target == 0 {
            target = bucket(sealed.len());
        }
        OVERHEAD_BY_SIZE_CLASS[class]
            .store(sealed.len().saturating_sub(len + pad), Ordering::Relaxed);
        if sealed.len() == target {
            return Ok(sealed);
        }
        // The size grows with `pad`, but signature encodings vary by a byte and packet
        // length headers step: move by the difference, then nudge one byte at a time.
        let diff = target as isize - sealed.len() as isize;
        let step = if sealed.len() == last || attempt > 4 {
            diff.signum()
        } else {
            diff
        };
        last = sealed.len();
        let next = pad as isize + step;
        if next < MIN_PAD as isize {
            // The cached overhead chose a bucket the letter does not fit: measure afresh.
            if attempt == 0 && cached > 0 {
                (pad, target) = (MIN_PAD, 0);
                continue;
            }
            return Err(Error::Padding);
        }
        pad = next as usize;
    }
    Err(Error::Padding)
}

fn encryption_keys(
    cert: &Cert,
) -> Result<
    Vec<
        openpgp::packet::Key<
            openpgp::packet::key::PublicParts,
            openpgp::packet::key::UnspecifiedRole,
        >,
    >,
    Error,
> {
    let valid = cert
        .with_policy(policy(), None)
        .map_err(|e| Error::Key(e.to_string()))?;
    let keys: Vec<_> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .map(|ka| ka.key().clone().role_into_unspecified())
        .collect();
    if keys.is_empty() {
        return Err(Error::NoUsableKey("encryption"));
    }
    Ok(keys)
}

/// The encryption layer of a message to `keys`: SEIPDv1 under a new AES-256 session key,
/// one PKESK per key with a wildcard recipient (the ciphertext does not say whom it is for).
/// Cv25519 keys get their PKESK from [`x25519::pkesk`]; if any key is of another algorithm,
/// sequoia makes them all.
fn encrypt_layer<'a>(
    mut m: Message<'a>,
    keys: &'a [openpgp::packet::Key<
        openpgp::packet::key::PublicParts,
        openpgp::packet::key::UnspecifiedRole,
    >],
) -> openpgp::Result<Message<'a>> {
    let algo = SymmetricAlgorithm::AES256;
    let mut key = vec![0u8; algo.key_size()?];
    rand::fill(&mut key[..]);
    let session_key = SessionKey::from(key);
    let pkesks: Option<Vec<_>> = keys
        .iter()
        .map(|k| x25519::pkesk(k, algo, &session_key))
        .collect();
    match pkesks {
        Some(pkesks) => {
            for p in pkesks {
                openpgp::Packet::PKESK(p?.into()).serialize(&mut m)?;
            }
            Encryptor::with_session_key(m, algo, session_key)?.build()
        }
        None => {
            let recipients = keys
                .iter()
                .map(|k| Recipient::new(Features::empty().set_seipdv1(), None, k));
            Encryptor::for_recipients(m, recipients)
                .symmetric_algo(algo)
                .build()
        }
    }
}

fn sign_encrypt(
    pad: &[u8],
    len: usize,
    message: Source<'_>,
    signer: &SignKey,
    keys: &[openpgp::packet::Key<
        openpgp::packet::key::PublicParts,
        openpgp::packet::key::UnspecifiedRole,
    >],
    capacity: usize,
) -> Result<Vec<u8>, Error> {
    let internal = |e: openpgp::anyhow::Error| Error::Key(e.to_string());
    let mut sink = Vec::with_capacity(capacity + 64);
    {
        let m = Message::new(&mut sink);
        let m = encrypt_layer(m, keys).map_err(internal)?;
        let m = Signer::new(m, signer.clone())
            .map_err(internal)?
            .build()
            .map_err(internal)?;
        let mut m = LiteralWriter::new(m).build().map_err(internal)?;
        m.write_all(pad).map_err(|e| Error::Key(e.to_string()))?;
        let mut counted = Counted {
            inner: &mut m,
            n: 0,
        };
        message(&mut counted).map_err(|e| Error::Key(e.to_string()))?;
        if counted.n != len {
            // The padding was chosen for `len` bytes: the result would miss its bucket.
            return Err(Error::Padding);
        }
        m.finalize().map_err(internal)?;
    }
    Ok(sink)
}

/// Counts what passes through, to check a streamed message against its announced length.
struct Counted<'a, W: Write> {
    inner: &'a mut W,
    n: usize,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts `data` to `cert` without signing (hop wrappers: the envelope for a node).
pub fn encrypt_to(data: &[u8], cert: &Cert) -> Result<Vec<u8>, Error> {
    let keys = encryption_keys(cert)?;
    let internal = |e: openpgp::anyhow::Error| Error::Key(e.to_string());
    let mut sink = Vec::with_capacity(data.len() + 256);
    {
        let m = Message::new(&mut sink);
        let m = encrypt_layer(m, &keys).map_err(internal)?;
        let mut m = LiteralWriter::new(m).build().map_err(internal)?;
        m.write_all(data).map_err(|e| Error::Key(e.to_string()))?;
        m.finalize().map_err(internal)?;
    }
    Ok(sink)
}

/// Decrypts what [`encrypt_to`] made; refuses plaintext over `max` bytes.
pub fn decrypt_with(data: &[u8], keys: &Keyring, max: usize) -> Result<Vec<u8>, Error> {
    let helper = Helper {
        decryptors: &keys.decryptors,
        lookup: &|_| None,
        status: None,
        encrypted: false,
        unknown: None,
    };
    let (plain, _) = decrypt_inner(data, helper, max)?;
    Ok(plain)
}

/// Opens a sealed letter: decrypts with `recipient`'s keys, verifies the signature with the
/// certificate `lookup` returns for the signer's key handle, parses the letter.
pub fn open(
    sealed: &[u8],
    recipient: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> Result<Opened, Error> {
    open_keeping(sealed, recipient, lookup, false).map(|(opened, _)| opened)
}

/// A letter's signature by a key that had no certificate when it was opened, with what it
/// signed: [`Deferred::verify`] checks it once the certificate is known, without
/// decrypting the letter again (a new sender's first letters are opened once, not twice).
#[derive(Clone, Debug)]
pub struct Deferred {
    /// The signature packets whose signer was unknown.
    signatures: Vec<u8>,
    /// The signed literal data (the letter's RFC 5322 bytes).
    signed: Vec<u8>,
}

impl Deferred {
    /// The status [`open`] would give the letter from `from` with the certificates
    /// `lookup` knows now: the signatures are checked by sequoia's verifier (same policy)
    /// as detached signatures over the same literal data.
    pub fn verify(
        &self,
        from: &Address,
        lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
    ) -> SignatureStatus {
        let helper = Helper {
            decryptors: &[],
            lookup,
            status: None,
            encrypted: false,
            unknown: None,
        };
        let verified = DetachedVerifierBuilder::from_bytes(&self.signatures)
            .and_then(|b| b.with_policy(policy(), None, helper))
            .and_then(|mut v| {
                v.verify_bytes(&self.signed)?;
                Ok(v.into_helper())
            });
        match verified {
            Ok(helper) => sender_of(
                helper.status.unwrap_or(SignatureStatus::Missing),
                from.as_str(),
                lookup,
            ),
            Err(_) => SignatureStatus::Bad,
        }
    }
}

/// [`open`], keeping, when the signer had no certificate, what [`Deferred::verify`] needs
/// to check the signature later.
pub fn open_deferred(
    sealed: &[u8],
    recipient: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> Result<(Opened, Option<Deferred>), Error> {
    open_keeping(sealed, recipient, lookup, true)
}

fn open_keeping(
    sealed: &[u8],
    recipient: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
    keep: bool,
) -> Result<(Opened, Option<Deferred>), Error> {
    if sealed.len() > MAX_SEALED_BYTES {
        return Err(Error::TooLong {
            what: "sealed letter",
            len: sealed.len(),
            max: MAX_SEALED_BYTES,
        });
    }
    let helper = Helper {
        decryptors: &recipient.decryptors,
        lookup,
        status: None,
        encrypted: false,
        unknown: keep.then(Vec::new),
    };
    let (plain, status, unknown) = decrypt_kept(sealed, helper, MAX_SEALED_BYTES)?;
    let letter = Letter::from_rfc5322(&plain)?;
    let deferred = match (&status, unknown) {
        (SignatureStatus::UnknownSigner { .. }, Some(signatures)) if !signatures.is_empty() => {
            Some(Deferred {
                signatures,
                signed: plain,
            })
        }
        _ => None,
    };
    let signature = sender_of(status, letter.from.as_str(), lookup);
    Ok((Opened { letter, signature }, deferred))
}

/// A good signature stays good only if the signer's certificate names `from`.
fn sender_of(
    status: SignatureStatus,
    from: &str,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> SignatureStatus {
    match status {
        SignatureStatus::Good { signer } => {
            let cert = lookup(&KeyHandle::from(signer.clone()));
            let addresses = cert.as_ref().map(cert_addresses).unwrap_or_default();
            if addresses.iter().any(|a| a == from) {
                SignatureStatus::Good { signer }
            } else {
                SignatureStatus::SenderMismatch {
                    signer,
                    signer_addresses: addresses,
                }
            }
        }
        other => other,
    }
}

/// [`open`], turning every signature status but `Good` into its error.
pub fn open_verified(
    sealed: &[u8],
    recipient: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> Result<(Letter, Fingerprint), Error> {
    let opened = open(sealed, recipient, lookup)?;
    match opened.signature {
        SignatureStatus::Good { signer } => Ok((opened.letter, signer)),
        SignatureStatus::Missing => Err(Error::MissingSignature),
        SignatureStatus::UnknownSigner { issuer } => Err(Error::UnknownSigner(issuer)),
        SignatureStatus::Bad => Err(Error::BadSignature),
        SignatureStatus::SenderMismatch {
            signer_addresses, ..
        } => Err(Error::SenderMismatch {
            claimed: opened.letter.from.to_string(),
            signer: signer_addresses.join(", "),
        }),
    }
}

/// PGP/MIME (RFC 3156) inside a letter that came through the gateway: when the letter is
/// `multipart/encrypted` (an `application/pgp-encrypted` part and an OpenPGP message), the
/// legacy sender encrypted it to us end to end. Decrypts and verifies that message and
/// returns the letter with its real body and attachments (outer headers kept), and what the
/// inner signature said. `Ok(None)` when the letter is not PGP/MIME.
pub fn open_pgp_mime(
    letter: &Letter,
    keys: &Keyring,
    lookup: &dyn Fn(&KeyHandle) -> Option<Cert>,
) -> Result<Option<Opened>, Error> {
    let is_control = |a: &crate::letter::Attachment| a.media_type == "application/pgp-encrypted";
    if !letter.attachments.iter().any(is_control) {
        return Ok(None);
    }
    let Some(payload) = letter.attachments.iter().find(|a| {
        !is_control(a)
            && (a.data.starts_with(b"-----BEGIN PGP MESSAGE-----")
                || a.data.first().is_some_and(|b| b & 0x80 != 0))
    }) else {
        return Ok(None);
    };
    let helper = Helper {
        decryptors: &keys.decryptors,
        lookup,
        status: None,
        encrypted: false,
        unknown: None,
    };
    let (entity, status) = decrypt_inner(&payload.data, helper, MAX_SEALED_BYTES)?;
    // The decrypted entity is a MIME part (Content-Type and body), not a whole message:
    // give it a From so that the letter parser reads its parts.
    let mut whole = format!("From: {}\r\n", letter.from).into_bytes();
    whole.extend_from_slice(&entity);
    let inner = Letter::from_rfc5322(&whole)?;
    let mut out = letter.clone();
    out.body = inner.body;
    out.attachments = inner.attachments;
    let signature = match status {
        SignatureStatus::Good { signer } => {
            let addresses = lookup(&KeyHandle::from(signer.clone()))
                .as_ref()
                .map(cert_addresses)
                .unwrap_or_default();
            if addresses.iter().any(|a| a == letter.from.as_str()) {
                SignatureStatus::Good { signer }
            } else {
                SignatureStatus::SenderMismatch {
                    signer,
                    signer_addresses: addresses,
                }
            }
        }
        other => other,
    };
    Ok(Some(Opened {
        letter: out,
        signature,
    }))
}

fn decrypt_inner(
    data: &[u8],
    helper: Helper<'_>,
    max: usize,
) -> Result<(Vec<u8>, SignatureStatus), Error> {
    decrypt_kept(data, helper, max).map(|(plain, status, _)| (plain, status))
}

/// What [`decrypt_kept`] answers: the plaintext, the signature status, and the serialized
/// signatures of unknown signers when the helper kept them.
type Decrypted = (Vec<u8>, SignatureStatus, Option<Vec<u8>>);

/// [`decrypt_inner`], also answering the signatures the helper kept.
fn decrypt_kept(data: &[u8], helper: Helper<'_>, max: usize) -> Result<Decrypted, Error> {
    // Binary OpenPGP packets start with a byte whose top bit is set; ASCII armor is only
    // accepted where legacy mail brings it (PGP/MIME).
    let armored = data.starts_with(b"-----BEGIN PGP MESSAGE-----");
    if !armored && data.first().is_none_or(|b| b & 0x80 == 0) {
        return Err(Error::Malformed("not a binary OpenPGP message".into()));
    }
    let mut dec = DecryptorBuilder::from_bytes(data)
        .map_err(classify)?
        .with_policy(policy(), None, helper)
        .map_err(classify)?;
    // Sealed data is the plaintext plus a small overhead: one allocation, no regrowing.
    let mut plain = Vec::with_capacity(data.len().min(max) + 1);
    (&mut dec)
        .take(max as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| classify(e.into()))?;
    if plain.len() > max {
        return Err(Error::TooLong {
            what: "decrypted message",
            len: plain.len(),
            max,
        });
    }
    // Drain to the end so that the integrity check and signature verification run.
    let mut rest = [0u8; 1];
    if dec.read(&mut rest).map_err(|e| classify(e.into()))? != 0 {
        return Err(Error::TooLong {
            what: "decrypted message",
            len: max + 1,
            max,
        });
    }
    if !dec.message_processed() {
        return Err(Error::TruncatedMessage);
    }
    let helper = dec.into_helper();
    if !helper.encrypted {
        return Err(Error::Malformed("message is not encrypted".into()));
    }
    Ok((
        plain,
        helper.status.unwrap_or(SignatureStatus::Missing),
        helper.unknown,
    ))
}

/// Maps sequoia's errors to ours.
fn classify(e: openpgp::anyhow::Error) -> Error {
    for cause in e.chain() {
        if let Some(oe) = cause.downcast_ref::<openpgp::Error>() {
            match oe {
                openpgp::Error::ManipulatedMessage => return Error::Tampered,
                openpgp::Error::MissingSessionKey(_) => return Error::NotForRecipient,
                _ => {}
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return Error::TruncatedMessage;
            }
            if let Some(inner) = io
                .get_ref()
                .and_then(|i| i.downcast_ref::<openpgp::Error>())
            {
                match inner {
                    openpgp::Error::ManipulatedMessage => return Error::Tampered,
                    openpgp::Error::MissingSessionKey(_) => return Error::NotForRecipient,
                    _ => {}
                }
            }
        }
    }
    let text = e.to_string();
    if text.contains("Truncated") || text.contains("truncated") || text.contains("EOF") {
        return Error::TruncatedMessage;
    }
    Error::Malformed(text)
}

struct Helper<'a> {
    decryptors: &'a [DecryptKey],
    lookup: &'a dyn Fn(&KeyHandle) -> Option<Cert>,
    status: Option<SignatureStatus>,
    encrypted: bool,
    /// The serialized signatures whose signer had no certificate, kept when asked for
    /// ([`open_deferred`]): they can be checked later without decrypting again.
    unknown: Option<Vec<u8>>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        let mut certs: Vec<Cert> = Vec::new();
        for id in ids {
            if let Some(c) = (self.lookup)(id)
                && !certs.iter().any(|k| k.fingerprint() == c.fingerprint())
            {
                certs.push(c);
            }
        }
        Ok(certs)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::Encryption { .. } => self.encrypted = true,
                MessageLayer::Compression { .. } => {}
                MessageLayer::SignatureGroup { results } => {
                    // Every signature must verify; one bad signature makes the letter bad.
                    let mut status = None;
                    for r in results {
                        let s = match r {
                            Ok(good) => SignatureStatus::Good {
                                signer: good.ka.cert().fingerprint(),
                            },
                            Err(VerificationError::MissingKey { sig }) => {
                                if let Some(keep) = self.unknown.as_mut() {
                                    openpgp::Packet::from(sig.clone()).serialize(keep)?;
                                }
                                SignatureStatus::UnknownSigner {
                                    issuer: sig
                                        .get_issuers()
                                        .first()
                                        .map(|h| h.to_hex())
                                        .unwrap_or_default(),
                                }
                            }
                            Err(_) => SignatureStatus::Bad,
                        };
                        status = Some(match (status, s) {
                            (None, s) => s,
                            (
                                Some(SignatureStatus::Good { signer }),
                                SignatureStatus::Good { .. },
                            ) => SignatureStatus::Good { signer },
                            (Some(SignatureStatus::Bad), _) | (_, SignatureStatus::Bad) => {
                                SignatureStatus::Bad
                            }
                            (Some(prev @ SignatureStatus::UnknownSigner { .. }), _) => prev,
                            (_, s) => s,
                        });
                    }
                    if status.is_some() && self.status.is_none() {
                        self.status = status;
                    }
                }
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        // Recipients are hidden: try every key of ours on every PKESK.
        for pkesk in pkesks {
            for key in self.decryptors {
                if let Some((algo, sk)) = pkesk.decrypt(&mut key.decryptor(), sym_algo)
                    && decrypt(algo, &sk)
                {
                    return Ok(None);
                }
            }
        }
        Err(openpgp::Error::MissingSessionKey("no key of ours decrypts this message".into()).into())
    }
}

#[cfg(test)]
mod tests;
