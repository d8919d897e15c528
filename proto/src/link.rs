//! Linking a new device (`spec/client.md` §Devices): the one-time code the user types, and
//! the cryptography of the exchange through the home node's drop, free of I/O.
//!
//! The existing device ("A") opens a drop on its home node and shows a code
//! `NNNNNN-xxxx-xxxx`: the six digits name the drop (the *nameplate*), the whole code is the
//! password of a SPAKE2 exchange (as magic-wormhole does). A puts its SPAKE2 message in the
//! drop; the new device ("B") takes it, answers with its own message and its device key
//! sealed under the agreed key; A opens that (a wrong code fails here: A aborts the drop,
//! and nothing was sent), then seals the account's payload for B. Each direction has its
//! own key; the node sees only SPAKE2 messages and ciphertext, and an attacker gets one
//! online guess per drop.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::types::NodeUrl;

/// Characters of the secret part: Crockford's base32 (no i, l, o, u).
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Secret characters in a code (two groups of four: 40 bits).
const SECRET_CHARS: usize = 8;
/// Longest link URI accepted.
pub const MAX_URI: usize = 2048;
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error(
        "not a link code: expected six digits and eight letters or digits, like 123456-abcd-efgh"
    )]
    BadCode,
    #[error("not a link URI: expected sealpost:link?node=URL&code=CODE")]
    BadUri,
    #[error("the other device's message is malformed")]
    BadMessage,
    #[error("the codes on the two devices differ (wrong code), or the exchange was tampered with")]
    WrongCode,
}

/// A one-time link code: the drop's nameplate and the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    pub nameplate: u32,
    secret: String,
}

impl fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkCode({}-…)", self.nameplate)
    }
}

impl fmt::Display for LinkCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate,
            &self.secret[..4],
            &self.secret[4..]
        )
    }
}

impl LinkCode {
    /// A fresh secret for the drop `nameplate` (six digits, given by the node).
    pub fn generate(nameplate: u32) -> Result<LinkCode, LinkError> {
        if !(100_000..=999_999).contains(&nameplate) {
            return Err(LinkError::BadCode);
        }
        let secret = (0..SECRET_CHARS)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        Ok(LinkCode { nameplate, secret })
    }

    /// Parses a typed code: case, spaces and dashes do not matter; `i`/`l` read as 1 and
    /// `o` as 0 (they look alike).
    pub fn parse(s: &str) -> Result<LinkCode, LinkError> {
        let chars: Vec<char> = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| match c.to_ascii_lowercase() {
                'i' | 'l' => '1',
                'o' => '0',
                c => c,
            })
            .collect();
        if chars.len() != 6 + SECRET_CHARS {
            return Err(LinkError::BadCode);
        }
        let digits: String = chars[..6].iter().collect();
        let nameplate: u32 = digits
            .parse()
            .ok()
            .filter(|n| (100_000..=999_999).contains(n))
            .ok_or(LinkError::BadCode)?;
        let secret: String = chars[6..].iter().collect();
        if !secret.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(LinkError::BadCode);
        }
        Ok(LinkCode { nameplate, secret })
    }

    /// The same secret in the drop `nameplate`: the existing device starts the exchange
    /// before the node names its drop, so the password is the secret part alone.
    pub fn with_nameplate(self, nameplate: u32) -> Result<LinkCode, LinkError> {
        if !(100_000..=999_999).contains(&nameplate) {
            return Err(LinkError::BadCode);
        }
        Ok(LinkCode { nameplate, ..self })
    }

    fn password(&self) -> Password {
        Password::new(format!("sealpost-link-v1:{}", self.secret))
    }
}

/// The URI form of a code with the node that holds the drop, for a QR code:
/// `sealpost:link?node=URL&code=CODE` (the URL percent-encoded).
pub fn link_uri(node: &NodeUrl, code: &LinkCode) -> String {
    format!(
        "sealpost:link?node={}&code={code}",
        percent_encode(node.as_str())
    )
}

/// Parses [`link_uri`]'s form.
pub fn parse_link_uri(s: &str) -> Result<(NodeUrl, LinkCode), LinkError> {
    if s.len() > MAX_URI {
        return Err(LinkError::BadUri);
    }
    let query = s
        .trim()
        .strip_prefix("sealpost:link?")
        .ok_or(LinkError::BadUri)?;
    let (mut node, mut code) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("node", v)) => node = Some(percent_decode(v).ok_or(LinkError::BadUri)?),
            Some(("code", v)) => code = Some(LinkCode::parse(v)?),
            _ => return Err(LinkError::BadUri),
        }
    }
    let node = NodeUrl::parse(&node.ok_or(LinkError::BadUri)?).map_err(|_| LinkError::BadUri)?;
    Ok((node, code.ok_or(LinkError::BadUri)?))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which device of the exchange this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The existing device, which shows the code.
    Existing,
    /// The new device, which types it.
    New,
}

/// One side's SPAKE2 state, between sending its message and reading the other's.
pub struct Pake {
    side: Side,
    state: Spake2<Ed25519Group>,
}

impl Pake {
    /// Starts the exchange; answers the message to send to the other side.
    pub fn start(code: &LinkCode, side: Side) -> (Pake, Vec<u8>) {
        let (a, b) = (
            Identity::new(b"sealpost-link-existing"),
            Identity::new(b"sealpost-link-new"),
        );
        let (state, msg) = match side {
            Side::Existing => Spake2::<Ed25519Group>::start_a(&code.password(), &a, &b),
            Side::New => Spake2::<Ed25519Group>::start_b(&code.password(), &a, &b),
        };
        (Pake { side, state }, msg)
    }

    /// Finishes with the other side's message. A wrong code still yields a key here (SPAKE2
    /// cannot tell): it shows when the first sealed message does not open.
    pub fn finish(self, theirs: &[u8]) -> Result<LinkKey, LinkError> {
        let k = self
            .state
            .finish(theirs)
            .map_err(|_| LinkError::BadMessage)?;
        let sub = |label: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(b"sealpost-link-v1 ");
            h.update(label);
            h.update(&k);
            h.finalize().into()
        };
        let (to_new, to_existing) = (sub(b"existing->new"), sub(b"new->existing"));
        let (send, recv) = match self.side {
            Side::Existing => (to_new, to_existing),
            Side::New => (to_existing, to_new),
        };
        Ok(LinkKey { send, recv })
    }
}

/// The keys agreed by the exchange: one per direction.
pub struct LinkKey {
    send: [u8; 32],
    recv: [u8; 32],
}

impl LinkKey {
    /// Encrypts and authenticates `plain` for the other side.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.send));
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: b"sealpost-link-v1",
                },
            )
            .expect("invariant: ChaCha20Poly1305 encrypts any length a drop holds");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what the other side sealed; a wrong code (or tampering) is [`LinkError::WrongCode`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, LinkError> {
        if sealed.len() < NONCE_LEN {
            return Err(LinkError::WrongCode);
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.recv));
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[..NONCE_LEN]),
                Payload {
                    msg: &sealed[NONCE_LEN..],
                    aad: b"sealpost-link-v1",
                },
            )
            .map_err(|_| LinkError::WrongCode)
    }
}

/// The new device's join message: its SPAKE2 message, then `sealed` (its device key, under
/// the agreed key). Length-prefixed so that the two parts cannot be confused.
pub fn join_message(pake_msg: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + pake_msg.len() + sealed.len());
    out.extend_from_slice(&(pake_msg.len() as u16).to_be_bytes());
    out.extend_from_slice(pake_msg);
    out.extend_from_slice(sealed);
    out
}

/// Splits a [`join_message`].
pub fn split_join(msg: &[u8]) -> Result<(&[u8], &[u8]), LinkError> {
    let len = msg
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or(LinkError::BadMessage)?;
    let rest = &msg[2..];
    if rest.len() < len {
        return Err(LinkError::BadMessage);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_forgive_look_alikes() {
        let c = LinkCode::generate(123_456).unwrap();
        let s = c.to_string();
        assert_eq!(s.len(), 16);
        assert_eq!(LinkCode::parse(&s).unwrap(), c);
        assert_eq!(LinkCode::parse(&s.to_uppercase()).unwrap(), c);
        assert_eq!(
            LinkCode::parse("123456 ab1d 0fgh").unwrap(),
            LinkCode::parse("123456-ABLD-OFGH").unwrap()
        );
        for bad in [
            "",
            "12345-abcd-efgh",
            "123456-abcd-efg",
            "023456-abcd-efgh",
            "123456-abcd-efgu",
        ] {
            assert_eq!(LinkCode::parse(bad), Err(LinkError::BadCode), "{bad}");
        }
        assert!(LinkCode::generate(99).is_err());
        let moved = c.clone().with_nameplate(222_222).unwrap();
        assert_eq!(moved.to_string()[6..], s[6..]);
        assert!(c.with_nameplate(5).is_err());
    }

    #[test]
    fn uris_carry_node_and_code() {
        let node = NodeUrl::parse("http://127.0.0.1:8080/base").unwrap();
        let c = LinkCode::generate(654_321).unwrap();
        let uri = link_uri(&node, &c);
        assert!(
            uri.starts_with("sealpost:link?node=http%3A%2F%2F127.0.0.1%3A8080%2Fbase&code=654321-")
        );
        assert_eq!(parse_link_uri(&uri).unwrap(), (node, c));
        assert_eq!(
            parse_link_uri("sealpost:link?code=x"),
            Err(LinkError::BadCode)
        );
        assert_eq!(parse_link_uri("https://x"), Err(LinkError::BadUri));
    }

    #[test]
    fn the_same_code_agrees_and_a_wrong_one_is_caught() {
        let code = LinkCode::generate(111_111).unwrap();
        let (a, msg_a) = Pake::start(&code, Side::Existing);
        let (b, msg_b) = Pake::start(&code, Side::New);
        let (ka, kb) = (a.finish(&msg_b).unwrap(), b.finish(&msg_a).unwrap());
        let sealed = kb.seal(b"device key");
        assert_eq!(ka.open(&sealed).unwrap(), b"device key");
        assert_eq!(kb.open(&ka.seal(b"payload")).unwrap(), b"payload");
        assert_eq!(kb.open(&sealed), Err(LinkError::WrongCode), "no reflection");
        let mut tampered = ka.seal(b"payload");
        tampered[20] ^= 1;
        assert_eq!(kb.open(&tampered), Err(LinkError::WrongCode));

        let wrong = LinkCode::parse(&format!("111111-{}", "abcdefgh")).unwrap();
        let (a, msg_a) = Pake::start(&code, Side::Existing);
        let (b, msg_b) = Pake::start(&wrong, Side::New);
        let (ka, kb) = (a.finish(&msg_b).unwrap(), b.finish(&msg_a).unwrap());
        assert_eq!(ka.open(&kb.seal(b"device key")), Err(LinkError::WrongCode));
    }

    #[test]
    fn join_messages_split_back() {
        let m = join_message(b"pake", b"sealed");
        assert_eq!(split_join(&m).unwrap(), (&b"pake"[..], &b"sealed"[..]));
        assert_eq!(split_join(&[0]), Err(LinkError::BadMessage));
        assert_eq!(split_join(&[0, 9, 1]), Err(LinkError::BadMessage));
    }
}
