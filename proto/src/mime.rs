//! Fast transfer encodings for a letter's text body, byte for byte what mail-builder writes.
//!
//! mail-builder chooses 7bit, quoted-printable or base64 for a text body and encodes it one
//! byte (one `write_all`) at a time, which costs more than signing and encrypting the result.
//! Here the same choice and the same bytes are made from runs of ordinary bytes, and the
//! exact encoded length is known before anything is written, so that a sealed letter's
//! padding can be chosen first and the encoding streamed straight into the signer.

use std::io::{self, Write};

/// Longest quoted-printable line before the soft break `=\r\n` (as mail-builder).
const QP_LINE: usize = 76;

/// How a text body is transferred, as mail-builder's `get_encoding_type` decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cte {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl Cte {
    /// The header line and blank line that precede the body.
    pub(crate) fn header(self) -> &'static [u8] {
        match self {
            Cte::SevenBit => b"Content-Transfer-Encoding: 7bit\r\n\r\n",
            Cte::QuotedPrintable => b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            Cte::Base64 => b"Content-Transfer-Encoding: base64\r\n\r\n",
        }
    }
}

/// A text body with its encoding chosen and its encoded length known.
pub(crate) struct EncodedBody<'a> {
    input: &'a [u8],
    pub(crate) cte: Cte,
    /// Base64 is rare for a text body (mostly non-ASCII text): encoded up front.
    base64: Option<Vec<u8>>,
    /// Length of the header line and the encoded body.
    pub(crate) len: usize,
}

impl<'a> EncodedBody<'a> {
    pub(crate) fn new(input: &'a [u8]) -> io::Result<Self> {
        let scan = scan(input);
        let base64_len = (input.len() * 4 / 3 + 3) & !3;
        let cte = if !scan.needs_encoding {
            Cte::SevenBit
        } else if scan.approx_qp_len < base64_len {
            Cte::QuotedPrintable
        } else {
            Cte::Base64
        };
        let (body_len, base64) = match cte {
            Cte::SevenBit => (input.len() + scan.bare_lf, None),
            Cte::QuotedPrintable => (scan.qp_len, None),
            Cte::Base64 => {
                let mut v = Vec::with_capacity(base64_len + base64_len / 38 + 4);
                mail_builder::encoders::base64::base64_encode_mime(input, &mut v, false)?;
                (v.len(), Some(v))
            }
        };
        Ok(EncodedBody {
            input,
            cte,
            base64,
            len: cte.header().len() + body_len,
        })
    }

    /// Writes the header line and the encoded body, in chunks of at most [`CHUNK`] bytes.
    pub(crate) fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self.cte.header())?;
        match (&self.base64, self.cte) {
            (Some(b), _) => w.write_all(b),
            (None, Cte::QuotedPrintable) => {
                let mut out = ChunkOut {
                    buf: Vec::with_capacity(CHUNK + 8),
                    w,
                };
                walk_qp(self.input, &mut out)?;
                out.flush()
            }
            (None, _) => write_crlf_lines(self.input, w),
        }
    }
}

/// Size of the pieces the encoder hands to the writer.
pub(crate) const CHUNK: usize = 64 * 1024;

struct Scan {
    needs_encoding: bool,
    /// mail-builder's estimate, which decides between quoted-printable and base64.
    approx_qp_len: usize,
    /// The exact quoted-printable length.
    qp_len: usize,
    /// `\n` not preceded by `\r` (7bit turns each into CRLF).
    bare_lf: usize,
}

/// Bytes that end a run of plain bytes: `=`, CR, LF and everything from DEL up.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'=' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    let mut i = 127;
    while i < 256 {
        t[i] = true;
        i += 1;
    }
    t
};

/// Where the run of plain bytes starting at `j` ends. Eight bytes at a time while none of
/// them is special (SWAR: a byte with its top bit set, or equal to `=`, CR, LF or DEL).
fn run_end(input: &[u8], mut j: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(LO) & !v & HI;
    while let Some(word) = input.get(j..j + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("invariant: eight bytes"));
        let special = (x & HI)
            | zero_bytes(x ^ (LO * b'=' as u64))
            | zero_bytes(x ^ (LO * b'\r' as u64))
            | zero_bytes(x ^ (LO * b'\n' as u64))
            | zero_bytes(x ^ (LO * 0x7f));
        if special != 0 {
            break;
        }
        j += 8;
    }
    while j < input.len() && !SPECIAL[input[j] as usize] {
        j += 1;
    }
    j
}

/// Whether a space or tab just before `j` is escaped: at the end, or before LF or CRLF.
fn trailing_ws(input: &[u8], i: usize, j: usize) -> bool {
    j > i
        && matches!(input[j - 1], b' ' | b'\t')
        && (j == input.len()
            || input[j] == b'\n'
            || (input[j] == b'\r' && input.get(j + 1) == Some(&b'\n')))
}

/// Where the quoted-printable encoder puts its output.
trait QpOut {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()>;
}

struct Count(usize);

impl QpOut for Count {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0 += bytes.len();
        Ok(())
    }
}

struct ChunkOut<'w> {
    buf: Vec<u8>,
    w: &'w mut dyn Write,
}

impl ChunkOut<'_> {
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl QpOut for ChunkOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > CHUNK {
            self.flush()?;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// mail-builder's body quoted-printable encoding (`quoted_printable_encode(.., true)`), run
/// by run: plain bytes are copied in slices, wrapped with `=\r\n` after 76 bytes; `=`, DEL
/// and up, and a space or tab before a line break or at the end are escaped; LF becomes CRLF
/// unless the last plain byte was CR.
fn walk_qp(input: &[u8], out: &mut impl QpOut) -> io::Result<()> {
    fn escape(out: &mut impl QpOut, col: &mut usize, ch: u8) -> io::Result<()> {
        if *col + 3 > QP_LINE {
            out.put(b"=\r\n")?;
            *col = 0;
        }
        *col += 3;
        out.put(&[b'=', HEX[(ch >> 4) as usize], HEX[(ch & 15) as usize]])
    }
    let mut col = 0usize;
    let mut prev = 0u8;
    let mut i = 0;
    while i < input.len() {
        let j = run_end(input, i);
        let ws = trailing_ws(input, i, j);
        let plain = &input[i..if ws { j - 1 } else { j }];
        let mut rest = plain;
        while !rest.is_empty() {
            if col == QP_LINE {
                out.put(b"=\r\n")?;
                col = 0;
            }
            let take = rest.len().min(QP_LINE - col);
            out.put(&rest[..take])?;
            col += take;
            rest = &rest[take..];
        }
        if let Some(&last) = plain.last() {
            prev = last;
        }
        if ws {
            escape(out, &mut col, input[j - 1])?;
        }
        let Some(&ch) = input.get(j) else { break };
        match ch {
            b'\n' => {
                out.put(if prev == b'\r' { b"\n" } else { b"\r\n" })?;
                col = 0;
            }
            b'\r' => {
                if col == QP_LINE {
                    out.put(b"=\r\n")?;
                    col = 0;
                }
                out.put(b"\r")?;
                col += 1;
                prev = b'\r';
            }
            _ => escape(out, &mut col, ch)?,
        }
        i = j + 1;
    }
    Ok(())
}

/// One pass: what mail-builder's `get_encoding_type(input, false, true)` decides on, and the
/// exact lengths of the quoted-printable and 7bit encodings.
fn scan(input: &[u8]) -> Scan {
    let mut needs_encoding = false;
    let mut approx = input.len() / QP_LINE + input.len();
    let mut bare_lf = 0;
    let mut line_start = 0;
    let mut i = 0;
    while i < input.len() {
        let j = run_end(input, i);
        if trailing_ws(input, i, j) {
            needs_encoding = true;
            approx += 2;
        }
        let Some(&ch) = input.get(j) else { break };
        match ch {
            b'\n' => {
                // mail-builder counts the LF in the line's length.
                if j + 1 - line_start > 77 {
                    needs_encoding = true;
                }
                line_start = j + 1;
                if j == 0 || input[j - 1] != b'\r' {
                    bare_lf += 1;
                    approx += 1;
                }
            }
            b'\r' => {}
            b'=' => approx += 2,
            _ => {
                needs_encoding = true;
                approx += 2;
            }
        }
        i = j + 1;
    }
    if input.len() - line_start > 77 {
        needs_encoding = true;
    }
    let qp_len = if needs_encoding {
        let mut c = Count(0);
        walk_qp(input, &mut c).expect("invariant: counting cannot fail");
        c.0
    } else {
        0
    };
    Scan {
        needs_encoding,
        approx_qp_len: approx,
        qp_len,
        bare_lf,
    }
}

/// 7bit: the body as it is, with each bare LF made CRLF.
fn write_crlf_lines(input: &[u8], w: &mut dyn Write) -> io::Result<()> {
    let mut start = 0;
    for (j, &b) in input.iter().enumerate() {
        if b == b'\n' && (j == 0 || input[j - 1] != b'\r') {
            w.write_all(&input[start..j])?;
            w.write_all(b"\r\n")?;
            start = j + 1;
        }
    }
    w.write_all(&input[start..])
}

/// Decodes a quoted-printable body as mail-parser does, when it holds nothing but plain
/// bytes, `=XX` (upper-case hex), soft breaks `=\r\n` and CRLF line ends without a literal
/// space or tab before them. `None` for anything else (bare LF or CR, lower-case hex, `=`
/// before anything else, whitespace mail-parser would trim): the caller then lets
/// mail-parser read it, so both decode every body the same.
pub(crate) fn decode_qp_strict(input: &[u8]) -> Option<Vec<u8>> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len());
    // Whether the last byte out is literal whitespace (mail-parser trims it before a line end).
    let mut literal_ws = false;
    let mut i = 0;
    while i < input.len() {
        let j = run_end(input, i);
        if let Some(&last) = input[i..j].last() {
            out.extend_from_slice(&input[i..j]);
            literal_ws = last.is_ascii_whitespace();
        }
        let Some(&ch) = input.get(j) else { break };
        match ch {
            b'=' => match input.get(j + 1..j + 3)? {
                [b'\r', b'\n'] => {}
                &[h, l] => {
                    out.push(hex(h)? << 4 | hex(l)?);
                }
                _ => return None,
            },
            b'\r' => {
                if input.get(j + 1) != Some(&b'\n') || literal_ws {
                    return None;
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => return None,
            _ => {
                out.push(ch);
                i = j + 1;
                literal_ws = false;
                continue;
            }
        }
        literal_ws = false;
        i = j + if ch == b'=' { 3 } else { 2 };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_builder::mime::MimePart;
    use proptest::prelude::*;

    /// What mail-builder writes for a text body: its encoding header and the body.
    fn reference(body: &str) -> Vec<u8> {
        let mut v = Vec::new();
        MimePart::new("text/plain", body)
            .write_part(&mut v)
            .unwrap();
        let at = v
            .windows(26)
            .position(|w| w == b"Content-Transfer-Encoding:")
            .unwrap();
        v.split_off(at)
    }

    fn ours(body: &str) -> Vec<u8> {
        let e = EncodedBody::new(body.as_bytes()).unwrap();
        let mut v = Vec::new();
        e.write_to(&mut v).unwrap();
        assert_eq!(v.len(), e.len, "announced length");
        v
    }

    #[test]
    fn same_bytes_as_mail_builder() {
        let long = "x".repeat(1000);
        let cases = [
            "",
            "hello",
            "a b c\r\n",
            "a b c\n",
            "trailing space \r\nand tab\t\nend ",
            "x=y\r\n",
            "caf\u{e9} au lait",
            "\u{65e5}\u{672c}\u{8a9e}\u{306e}\u{30c6}\u{30ad}\u{30b9}\u{30c8}",
            "\r=\n",
            "lone \r in a line",
            "\u{7f}del",
            long.as_str(),
            "\n\n\n",
            "= = = \n",
        ];
        for c in cases {
            assert_eq!(
                String::from_utf8_lossy(&ours(c)),
                String::from_utf8_lossy(&reference(c)),
                "{c:?}"
            );
        }
        for n in [75, 76, 77, 78, 151, 152, 153, 1 << 16] {
            let s = "y".repeat(n) + "=" + &"z".repeat(n) + " ";
            assert_eq!(ours(&s), reference(&s), "{n}");
        }
    }

    /// mail-parser's reading of a single-part quoted-printable text body.
    fn parsed_by_mail_parser(encoded: &[u8]) -> String {
        let mut m = b"From: a@b.test\r\nContent-Type: text/plain; charset=utf-8\r\n".to_vec();
        m.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        m.extend_from_slice(encoded);
        let msg = mail_parser::MessageParser::default().parse(&m).unwrap();
        msg.body_text(0).unwrap_or_default().into_owned()
    }

    #[test]
    fn strict_decoder_agrees_with_mail_parser_or_declines() {
        let cases: [&[u8]; 12] = [
            b"plain",
            b"a=3Db=\r\nc\r\nd",
            b"caf=C3=A9",
            b"trailing =20\r\nx",
            b"ws before soft break =\r\nx",
            b"ws before hard break \r\nx",
            b"bare\nlf",
            b"lower =3d",
            b"= broken",
            b"end=",
            b"lone\rcr",
            b"\r\n\r\nempty lines\r\n",
        ];
        let mut declined = 0;
        for c in cases {
            match decode_qp_strict(c) {
                Some(d) => assert_eq!(
                    String::from_utf8(d).unwrap(),
                    parsed_by_mail_parser(c),
                    "{:?}",
                    String::from_utf8_lossy(c)
                ),
                None => declined += 1,
            }
        }
        assert_eq!(
            declined, 6,
            "bare LF, lower-case hex, broken escapes, lone CR, trimmed ws"
        );
    }

    /// Text made of the pieces that matter to the encodings: whitespace, line ends, `=`,
    /// non-ASCII, DEL, and runs of letters long enough to need soft breaks.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a".to_string()),
                Just(" ".to_string()),
                Just("\t".to_string()),
                Just("\r".to_string()),
                Just("\n".to_string()),
                Just("\r\n".to_string()),
                Just("=".to_string()),
                Just("\u{e9}".to_string()),
                Just("\u{7f}".to_string()),
                "[a-z]{1,120}",
            ],
            0..200,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn strict_decoder_reads_what_we_encode(s in text()) {
            let mut enc = Vec::new();
            let mut out = ChunkOut { buf: Vec::new(), w: &mut enc };
            walk_qp(s.as_bytes(), &mut out).unwrap();
            out.flush().unwrap();
            let decoded = decode_qp_strict(&enc);
            // Without CR in the text, our own encoding always takes the fast path.
            prop_assert!(s.contains('\r') || decoded.is_some(), "{:?}", s);
            if let Some(d) = decoded {
                prop_assert_eq!(String::from_utf8(d).unwrap(), parsed_by_mail_parser(&enc));
            }
        }
    }

    proptest! {
        #[test]
        fn same_bytes_as_mail_builder_for_any_text(s in text()) {
            prop_assert_eq!(ours(&s), reference(&s));
        }
    }
}
