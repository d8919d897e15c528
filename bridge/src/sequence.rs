//! Sequence sets as sorted ranges: membership by binary search, so `1:*` over a large
//! mailbox or a long UID list from a sync tool costs little.

use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

pub struct NumSet {
    ranges: Vec<(u32, u32)>,
}

impl NumSet {
    /// `largest` stands for `*` (the highest sequence number or UID; 0 when empty).
    pub fn new(set: &SequenceSet, largest: u32) -> NumSet {
        let v = |x: &SeqOrUid| match x {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => largest,
        };
        let mut ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|s| match s {
                Sequence::Single(a) => (v(a), v(a)),
                Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        NumSet { ranges: merged }
    }

    pub fn contains(&self, n: u32) -> bool {
        match self.ranges.binary_search_by(|(lo, _)| lo.cmp(&n)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.ranges[i - 1].1 >= n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stars_and_reversed() {
        let set = SequenceSet::try_from("1:3,10:*,7,6:5").unwrap();
        let s = NumSet::new(&set, 12);
        let hits: Vec<u32> = (0..15).filter(|n| s.contains(*n)).collect();
        assert_eq!(hits, vec![1, 2, 3, 5, 6, 7, 10, 11, 12]);
        // `N:*` with N beyond the largest still names the largest (RFC 3501 6.4.8).
        let s = NumSet::new(&SequenceSet::try_from("20:*").unwrap(), 12);
        assert!(s.contains(12) && !s.contains(11));
    }
}
