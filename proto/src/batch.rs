//! The answer of a batched fetch (`POST /v1/mailbox/{mailbox}/fetch`, `spec/api.md`): for a
//! prefix of the sequence numbers asked for, in their order, the envelope stored there or
//! word that there is none (acknowledged meanwhile). The node stops before the answer would
//! pass [`MAX_BATCH_ANSWER_BYTES`] (a first envelope always fits), so a client asks again
//! for the sequence numbers the answer did not reach.
//!
//! ```text
//! 0x07 0x01 | count u32 | count × ( seq u64 | 0x00  (none)
//!                                            | 0x01 len u32 envelope )
//! ```

use crate::codec::{Codec, Reader, Writer, tag};
use crate::error::Error;
use crate::limits::{MAX_BATCH_SEQS, MAX_ENVELOPE_BYTES};

pub use crate::limits::MAX_BATCH_ANSWER_BYTES;

/// One sequence number asked for and what the node holds there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    pub seq: u64,
    /// The encoded envelope; `None` when there is none at `seq`.
    pub envelope: Option<Vec<u8>>,
}

/// The answer of a batched fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeBatch {
    pub entries: Vec<BatchEntry>,
}

impl EnvelopeBatch {
    /// Encoded length of an entry holding `len` envelope bytes.
    pub fn entry_len(len: Option<usize>) -> usize {
        8 + 1 + len.map_or(0, |l| 4 + l)
    }
}

impl Codec for EnvelopeBatch {
    const WHAT: &'static str = "envelope batch";

    fn encode_to(&self, w: &mut Writer) {
        w.header(tag::ENVELOPE_BATCH);
        let count =
            u32::try_from(self.entries.len()).expect("invariant: a batch has at most 1000 entries");
        w.u32(count);
        for e in &self.entries {
            w.u64(e.seq);
            match &e.envelope {
                None => w.u8(0),
                Some(b) => {
                    w.u8(1);
                    w.bytes32(b);
                }
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.header(tag::ENVELOPE_BATCH)?;
        let count = r.u32()? as usize;
        if count > MAX_BATCH_SEQS {
            return Err(Error::TooLong {
                what: "envelope batch entries",
                len: count,
                max: MAX_BATCH_SEQS,
            });
        }
        // No allocation from the count alone: every entry takes at least 9 bytes.
        let mut entries = Vec::with_capacity(count.min(r.remaining() / 9));
        for _ in 0..count {
            let seq = r.u64()?;
            let envelope = match r.u8()? {
                0 => None,
                1 => Some(r.bytes32("batched envelope", MAX_ENVELOPE_BYTES)?.to_vec()),
                other => {
                    return Err(Error::InvalidField {
                        what: "envelope batch entry",
                        reason: format!("presence byte {other}, want 0 or 1"),
                    });
                }
            };
            entries.push(BatchEntry { seq, envelope });
        }
        Ok(EnvelopeBatch { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnvelopeBatch {
        EnvelopeBatch {
            entries: vec![
                BatchEntry {
                    seq: 3,
                    envelope: Some(b"abc".to_vec()),
                },
                BatchEntry {
                    seq: 9,
                    envelope: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(
            bytes,
            [
                &[0x07, 0x01, 0, 0, 0, 2][..],
                &3u64.to_be_bytes(),
                &[1, 0, 0, 0, 3],
                b"abc",
                &9u64.to_be_bytes(),
                &[0],
            ]
            .concat()
        );
        assert_eq!(EnvelopeBatch::decode(&bytes).unwrap(), b);
        assert_eq!(
            bytes.len(),
            2 + 4 + EnvelopeBatch::entry_len(Some(3)) + EnvelopeBatch::entry_len(None)
        );
    }

    #[test]
    fn refuses_bad_input() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(
                EnvelopeBatch::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            EnvelopeBatch::decode(&extra),
            Err(Error::TrailingBytes { .. })
        ));
        let mut flag = bytes.clone();
        flag[2 + 4 + 8] = 2;
        assert!(matches!(
            EnvelopeBatch::decode(&flag),
            Err(Error::InvalidField { .. })
        ));
        let mut many = bytes.clone();
        many[2..6].copy_from_slice(&(MAX_BATCH_SEQS as u32 + 1).to_be_bytes());
        assert!(matches!(
            EnvelopeBatch::decode(&many),
            Err(Error::TooLong { .. })
        ));
        let mut huge = bytes;
        huge[2 + 4 + 9..2 + 4 + 13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            EnvelopeBatch::decode(&huge),
            Err(Error::TooLong { .. })
        ));
    }
}
