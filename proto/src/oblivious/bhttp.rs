//! Binary HTTP (RFC 9292), known-length messages only: what oblivious lookups carry. The
//! decoder reads one message from the front of a buffer and says where it ended, so the
//! caller can check that only zero padding follows (RFC 9292 §3.8); every length is checked
//! against the bytes left, so it never reads past its input or allocates more than it.

/// A decoding failure, with a short reason.
pub type Fail = &'static str;

/// The parts of a request or final response that lookups use; header and trailer fields
/// are read past, never kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Request {
        method: &'a [u8],
        scheme: &'a [u8],
        authority: &'a [u8],
        path: &'a [u8],
        content: &'a [u8],
    },
    Response {
        status: u16,
        content: &'a [u8],
    },
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x3f => out.push(v as u8),
        0x40..=0x3fff => out.extend_from_slice(&(0x4000 | v as u16).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&(0x8000_0000 | v as u32).to_be_bytes()),
        _ => out.extend_from_slice(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A known-length request without header fields or trailers.
pub fn encode_request(
    method: &[u8],
    scheme: &[u8],
    authority: &[u8],
    path: &[u8],
    content: &[u8],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + method.len() + authority.len() + path.len() + content.len());
    put_varint(&mut out, 0);
    for part in [method, scheme, authority, path] {
        put_bytes(&mut out, part);
    }
    put_varint(&mut out, 0); // header fields
    put_bytes(&mut out, content);
    put_varint(&mut out, 0); // trailer fields
    out
}

/// A known-length final response without header fields or trailers.
pub fn encode_response(status: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + content.len());
    put_varint(&mut out, 1);
    put_varint(&mut out, u64::from(status));
    put_varint(&mut out, 0);
    put_bytes(&mut out, content);
    put_varint(&mut out, 0);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        let end = self.pos.checked_add(n).ok_or("length overflows")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, Fail> {
        let first = *self.take(1)?.first().ok_or("truncated")?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for b in self.take(len - 1)? {
            v = (v << 8) | u64::from(*b);
        }
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Fail> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        self.take(n)
    }

    /// A known-length field section: checked for shape, not kept.
    fn fields(&mut self) -> Result<(), Fail> {
        let section = self.bytes()?;
        let mut r = Reader {
            buf: section,
            pos: 0,
        };
        while !r.at_end() {
            if r.bytes()?.is_empty() {
                return Err("empty field name");
            }
            r.bytes()?;
        }
        Ok(())
    }

    /// Header fields, content and trailers, any of which a sender may leave out at the end
    /// of the message (RFC 9292 §3.8): the content.
    fn rest(&mut self) -> Result<&'a [u8], Fail> {
        if self.at_end() {
            return Ok(&[]);
        }
        self.fields()?;
        if self.at_end() {
            return Ok(&[]);
        }
        let content = self.bytes()?;
        if !self.at_end() {
            self.fields()?;
        }
        Ok(content)
    }
}

/// Decodes one known-length message from the front of `buf`; returns it and the number of
/// bytes it took. What follows (padding) is the caller's to check.
pub fn decode(buf: &[u8]) -> Result<(Message<'_>, usize), Fail> {
    let mut r = Reader { buf, pos: 0 };
    let msg = match r.varint()? {
        0 => {
            let method = r.bytes()?;
            let scheme = r.bytes()?;
            let authority = r.bytes()?;
            let path = r.bytes()?;
            let content = r.rest()?;
            Message::Request {
                method,
                scheme,
                authority,
                path,
                content,
            }
        }
        1 => loop {
            let status = r.varint()?;
            if !(100..=599).contains(&status) {
                return Err("status out of range");
            }
            if status >= 200 {
                let content = r.rest()?;
                break Message::Response {
                    status: status as u16,
                    content,
                };
            }
            if r.at_end() {
                return Err("no final response");
            }
            r.fields()?;
            // An informational response: the final one follows.
        },
        2 | 3 => return Err("indeterminate-length messages are not accepted"),
        _ => return Err("unknown framing indicator"),
    };
    Ok((msg, r.pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9292_known_length_request_example() {
        // RFC 9292 §5.1: GET https://www.example.com/hello.txt with three header fields.
        let bytes = hex::decode(concat!(
            "0003474554056874747073000a2f68656c6c6f2e747874406c0a757365722d61",
            "67656e74346375726c2f372e31362e33206c69626375726c2f372e31362e3320",
            "4f70656e53534c2f302e392e376c207a6c69622f312e322e3304686f73740f77",
            "77772e6578616d706c652e636f6d0f6163636570742d6c616e67756167650665",
            "6e2c206d690000"
        ))
        .unwrap();
        let expected = Message::Request {
            method: b"GET",
            scheme: b"https",
            authority: b"",
            path: b"/hello.txt",
            content: b"",
        };
        assert_eq!(decode(&bytes).unwrap(), (expected.clone(), bytes.len()));
        // Truncated after the header section (§3.8): the same message.
        let cut = &bytes[..bytes.len() - 2];
        assert_eq!(decode(cut).unwrap(), (expected, cut.len()));
    }

    #[test]
    fn minimal_messages_truncated_after_the_control_data() {
        // A request of control data only, and a bare `200` (RFC 9292 §3.8).
        let req = hex::decode("00034745540568747470730b6578616d706c652e636f6d012f").unwrap();
        assert_eq!(
            decode(&req).unwrap().0,
            Message::Request {
                method: b"GET",
                scheme: b"https",
                authority: b"example.com",
                path: b"/",
                content: b"",
            }
        );
        assert_eq!(
            decode(&[0x01, 0x40, 0xc8]).unwrap(),
            (
                Message::Response {
                    status: 200,
                    content: b""
                },
                3
            )
        );
    }

    #[test]
    fn informational_responses_are_read_past() {
        let mut b = Vec::new();
        put_varint(&mut b, 1);
        put_varint(&mut b, 102);
        let mut f = Vec::new();
        put_bytes(&mut f, b"running");
        put_bytes(&mut f, b"\"sleep 15\"");
        put_bytes(&mut b, &f);
        put_varint(&mut b, 200);
        put_varint(&mut b, 0);
        put_bytes(&mut b, b"This content contains CRLF.\r\n");
        put_varint(&mut b, 0);
        let (msg, used) = decode(&b).unwrap();
        assert_eq!(used, b.len());
        assert_eq!(
            msg,
            Message::Response {
                status: 200,
                content: b"This content contains CRLF.\r\n"
            }
        );
    }

    #[test]
    fn round_trips_and_refusals() {
        let r = encode_request(b"GET", b"https", b"a.test", b"/x", b"");
        assert_eq!(decode(&r).unwrap().1, r.len());
        let s = encode_response(404, &[7; 20_000]);
        let (m, used) = decode(&s).unwrap();
        assert_eq!(used, s.len());
        assert_eq!(
            m,
            Message::Response {
                status: 404,
                content: &[7; 20_000]
            }
        );
        // Cut inside the control data: refused.
        for cut in 0..=r.len() - 4 {
            assert!(decode(&r[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[2]).is_err());
        assert!(decode(&[0xff; 9]).is_err());
        assert!(decode(&[1, 0x40, 99, 0]).is_err(), "status 99");
        assert!(decode(&[]).is_err());
        // A length larger than the input is refused, not allocated.
        assert!(decode(&[0, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
