//! Size buckets. A sealed letter is padded (inside the encryption) so that its ciphertext is
//! exactly a bucket size: powers of two from 4 KiB to 256 KiB, then Padmé sizes (Nikitin et
//! al., PETS 2019), which leak O(log log n) bits with at most ~12% overhead.

/// Smallest bucket.
pub const MIN_BUCKET: usize = 4096;
/// Above this, buckets follow Padmé rather than powers of two.
pub const POW2_LIMIT: usize = 256 * 1024;

/// The bucket a message of `len` bytes is padded up to.
pub fn bucket(len: usize) -> usize {
    if len <= MIN_BUCKET {
        MIN_BUCKET
    } else if len <= POW2_LIMIT {
        len.next_power_of_two()
    } else {
        padme(len)
    }
}

/// Padmé: keep the top log2(log2(len))+1 bits of the length, round the rest up.
fn padme(len: usize) -> usize {
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// Name of the header that carries padding inside a sealed letter.
pub const PAD_HEADER: &str = "X-Sealpost-Pad";
/// Smallest padding header: `X-Sealpost-Pad: a\r\n`.
pub const MIN_PAD: usize = PAD_HEADER.len() + 2 + 1 + 2;
/// Characters on a continuation line (plus the leading space: 73 bytes before CRLF).
const LINE_CHARS: usize = 72;
/// Characters on the first line, after `X-Sealpost-Pad: ` (76 bytes before CRLF).
const FIRST_LINE_CHARS: usize = 60;

/// An RFC 5322 header field of exactly `n` bytes (`n >= MIN_PAD`), folded into lines of at
/// most 78 bytes, that readers ignore. It is placed before the letter's own headers.
pub fn pad_header(n: usize) -> Vec<u8> {
    assert!(
        n >= MIN_PAD,
        "invariant: caller asks for at least MIN_PAD bytes"
    );
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(PAD_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    let mut remain = n - out.len() - 2; // reserve the final CRLF
    let mut first = true;
    while remain > 0 {
        if !first {
            out.extend_from_slice(b"\r\n ");
            remain -= 3;
        }
        let mut take = remain.min(if first { FIRST_LINE_CHARS } else { LINE_CHARS });
        // A continuation line costs 3 bytes plus at least one character: never leave 1..=3.
        if (1..=3).contains(&(remain - take)) {
            take = remain - 4;
        }
        out.resize(out.len() + take, b'a');
        remain -= take;
        first = false;
    }
    out.extend_from_slice(b"\r\n");
    debug_assert_eq!(out.len(), n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket(0), 4096);
        assert_eq!(bucket(1), 4096);
        assert_eq!(bucket(4096), 4096);
        assert_eq!(bucket(4097), 8192);
        assert_eq!(bucket(3 * 1024), 4096);
        assert_eq!(bucket(262_144), 262_144);
        assert_eq!(bucket(262_145), 270_336); // Padmé: 2^18 + 2^13
        assert_eq!(bucket(1 << 20), 1 << 20);
        for n in [300_000usize, 1_000_001, 5_555_555, 30_000_000] {
            let b = bucket(n);
            assert!(b >= n && b.is_multiple_of(4096), "{n} -> {b}");
            assert!((b - n) as f64 / n as f64 <= 0.12, "{n} -> {b}");
            assert_eq!(bucket(b), b, "buckets are fixed points");
        }
    }

    #[test]
    fn pad_header_has_exact_length_and_short_lines() {
        for n in MIN_PAD..2000 {
            let h = pad_header(n);
            assert_eq!(h.len(), n);
            let text = std::str::from_utf8(&h).unwrap();
            assert!(text.ends_with("\r\n"));
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                assert!(line.len() <= 78, "{n}: {line:?}");
                assert!(line.len() > 1);
            }
            let unfolded = text.replace("\r\n ", " ");
            assert_eq!(unfolded.matches("\r\n").count(), 1, "one header field");
        }
    }
}
