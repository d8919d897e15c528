//! A small, bounded binary codec: big-endian integers and length-prefixed fields.
//!
//! Every object starts with a one-byte type tag and a one-byte version; every variable field
//! carries its length and has a maximum. A decoder reads the whole input and refuses
//! anything left over. Modelled on rustls' `Codec`/`Reader`.

use crate::error::Error;

/// Type tags of top-level objects (`spec/protocol.md` §Codec).
pub mod tag {
    pub const ENVELOPE: u8 = 0x01;
    pub const HOP: u8 = 0x02;
    pub const RECORD_BODY: u8 = 0x03;
    pub const SIGNED_RECORD: u8 = 0x04;
    pub const DESCRIPTOR_BODY: u8 = 0x05;
    pub const SIGNED_DESCRIPTOR: u8 = 0x06;
    pub const ENVELOPE_BATCH: u8 = 0x07;
}

/// The only version this implementation speaks.
pub const VERSION: u8 = 1;

/// A type that has exactly one byte encoding.
pub trait Codec: Sized {
    /// Name used in errors.
    const WHAT: &'static str;
    fn encode_to(&self, w: &mut Writer);
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error>;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode_to(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one value; trailing bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, Self::WHAT);
        let v = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Writes a field with a 16-bit length. The caller's types guarantee the bound.
    pub fn bytes16(&mut self, v: &[u8]) {
        let len =
            u16::try_from(v.len()).expect("invariant: field bounded below 64 KiB by its type");
        self.u16(len);
        self.fixed(v);
    }
    /// Writes a field with a 32-bit length. The caller's types guarantee the bound.
    pub fn bytes32(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).expect("invariant: field bounded below 4 GiB by its type");
        self.u32(len);
        self.fixed(v);
    }
    pub fn header(&mut self, tag: u8) {
        self.u8(tag);
        self.u8(VERSION);
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::Truncated {
                what: self.what,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Reads a 16-bit-length field of at most `max` bytes; `field` names it in errors.
    pub fn bytes16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], Error> {
        let len = self.u16()? as usize;
        self.bounded(field, len, max)
    }

    /// Reads a 32-bit-length field of at most `max` bytes; `field` names it in errors.
    pub fn bytes32(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], Error> {
        let len = self.u32()? as usize;
        self.bounded(field, len, max)
    }

    fn bounded(&mut self, field: &'static str, len: usize, max: usize) -> Result<&'a [u8], Error> {
        if len > max {
            return Err(Error::TooLong {
                what: field,
                len,
                max,
            });
        }
        let what = self.what;
        self.what = field;
        let r = self.take(len);
        self.what = what;
        r
    }

    pub fn str16(&mut self, field: &'static str, max: usize) -> Result<&'a str, Error> {
        let b = self.bytes16(field, max)?;
        std::str::from_utf8(b).map_err(|_| Error::InvalidUtf8 { what: field })
    }

    /// Reads and checks the tag and version that open every object.
    pub fn header(&mut self, tag: u8) -> Result<(), Error> {
        let t = self.u8()?;
        if t != tag {
            return Err(Error::WrongTag {
                what: self.what,
                tag: t,
            });
        }
        let v = self.u8()?;
        if v != VERSION {
            return Err(Error::UnknownVersion {
                what: self.what,
                version: v,
            });
        }
        Ok(())
    }

    pub fn finish(&self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes {
                what: self.what,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_field_refuses_over_long_length_before_reading() {
        let mut w = Writer::default();
        w.u16(500);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(
            r.bytes16("field", 100),
            Err(Error::TooLong {
                what: "field",
                len: 500,
                max: 100
            })
        );
    }

    #[test]
    fn truncated_field_names_the_field() {
        let mut w = Writer::default();
        w.bytes16(b"hello");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes[..5], "test");
        assert_eq!(
            r.bytes16("greeting", 100),
            Err(Error::Truncated {
                what: "greeting",
                needed: 2
            })
        );
    }
}
