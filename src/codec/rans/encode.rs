//! The rANS encoder: normalised frequencies and the segmented, interleaved
//! stream the decoders read.
#![forbid(unsafe_code)]

use super::{ENCODE_MAX_SCALE_BITS, LANES, MIN_SCALE_BITS, RANS_L, SEGMENT_SYMBOLS};
use crate::codec::varint;

/// Normalised frequencies: `freq[s]` sums to `1 << scale_bits`, present symbols get at least 1.
pub fn normalize(counts: &[u64], scale_bits: u32) -> Option<Vec<u32>> {
    let total: u64 = counts.iter().sum();
    let m = 1u64 << scale_bits;
    let present = counts.iter().filter(|&&c| c > 0).count() as u64;
    if total == 0 || present > m {
        return None;
    }
    let mut freq: Vec<u32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                ((c as u128 * m as u128 / total as u128) as u64).max(1) as u32
            }
        })
        .collect();
    let mut sum: i64 = freq.iter().map(|&f| f as i64).sum();
    // Move the remainder one count at a time where it costs (or gains) the least.
    // Cost of taking a count from s: c_s * log2(f / (f - 1)); gain of giving: c_s * log2((f + 1) / f).
    use std::cmp::Ordering;
    #[derive(PartialEq)]
    struct Key(f64, usize);
    impl Eq for Key {}
    impl PartialOrd for Key {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Key {
        fn cmp(&self, o: &Self) -> Ordering {
            self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
        }
    }
    let m = m as i64;
    if sum < m {
        let gain = |c: u64, f: u32| c as f64 * ((f as f64 + 1.0) / f as f64).log2();
        let mut heap: std::collections::BinaryHeap<Key> = freq
            .iter()
            .enumerate()
            .filter(|(_, &f)| f > 0)
            .map(|(s, &f)| Key(gain(counts[s], f), s))
            .collect();
        while sum < m {
            let Key(_, s) = heap.pop()?;
            freq[s] += 1;
            sum += 1;
            heap.push(Key(gain(counts[s], freq[s]), s));
        }
    } else if sum > m {
        // A max-heap on negative cost pops the cheapest count to take.
        let cost = |c: u64, f: u32| -(c as f64 * (f as f64 / (f as f64 - 1.0)).log2());
        let mut heap: std::collections::BinaryHeap<Key> = freq
            .iter()
            .enumerate()
            .filter(|(_, &f)| f > 1)
            .map(|(s, &f)| Key(cost(counts[s], f), s))
            .collect();
        while sum > m {
            let Key(_, s) = heap.pop()?;
            freq[s] -= 1;
            sum -= 1;
            if freq[s] > 1 {
                heap.push(Key(cost(counts[s], freq[s]), s));
            }
        }
    }
    Some(freq)
}

/// Estimated coded bits of `counts` under `freq`.
fn coded_bits(counts: &[u64], freq: &[u32], scale_bits: u32) -> f64 {
    counts
        .iter()
        .zip(freq)
        .filter(|(&c, _)| c > 0)
        .map(|(&c, &f)| c as f64 * (scale_bits as f64 - (f as f64).log2()))
        .sum()
}

/// Encodes `syms` (each below `counts.len()`), appending to `out`.
pub fn encode(syms: &[u16], counts: &[u64], out: &mut Vec<u8>) {
    encode_lanes(syms, counts, LANES, out)
}

/// [`encode`] with `lanes` interleaved states (1..=64; the format allows
/// any, the writer uses [`LANES`]): the tests' streams for the decoders'
/// other lane counts.
pub fn encode_lanes(syms: &[u16], counts: &[u64], lanes: usize, out: &mut Vec<u8>) {
    assert!((1..=64).contains(&lanes), "{lanes} rANS lanes");
    // Pick the smallest scale whose estimate is within 0.05% of the best: a
    // smaller decode table stays in L1.
    let mut options = Vec::new();
    for k in MIN_SCALE_BITS..=ENCODE_MAX_SCALE_BITS {
        if let Some(freq) = normalize(counts, k) {
            let bits = coded_bits(counts, &freq, k);
            options.push((k, bits, freq));
        }
    }
    let best = options.iter().map(|o| o.1).fold(f64::INFINITY, f64::min);
    let (scale_bits, _, freq) = options
        .into_iter()
        .find(|o| o.1 <= best * 1.0005 + 64.0)
        .expect("MAX_ALPHABET symbols always fit the largest scale");
    let mut cum = vec![0u32; freq.len() + 1];
    for (s, &f) in freq.iter().enumerate() {
        cum[s + 1] = cum[s] + f;
    }

    out.push(scale_bits as u8);
    out.push(lanes as u8);
    varint::put(out, SEGMENT_SYMBOLS as u64);
    let present: Vec<usize> = (0..freq.len()).filter(|&s| freq[s] > 0).collect();
    varint::put(out, present.len() as u64);
    let mut prev: Option<usize> = None;
    for &s in &present {
        let gap = match prev {
            None => s,
            Some(p) => s - p - 1,
        };
        varint::put(out, gap as u64);
        varint::put(out, freq[s] as u64 - 1);
        prev = Some(s);
    }

    // Per symbol, what the loop below needs without a division: the bound
    // past which a state renormalises (2^(32 - scale) * f reaches 2^32 for a
    // lone symbol: kept in u64), and ceil(2^64 / f), so that x / f is
    // (x * that) >> 64, exact for every 32-bit x and f < 2^32 (Lemire,
    // Kaser and Kurz, "Faster remainder by direct computation", 2019).
    let x_max: Vec<u64> = freq
        .iter()
        .map(|&f| (((RANS_L >> scale_bits) as u64) << 16) * f as u64)
        .collect();
    let reciprocals: Vec<u64> = freq.iter().map(|&f| reciprocal(f)).collect();
    let mut segments = Vec::new();
    for seg in syms.chunks(SEGMENT_SYMBOLS) {
        let mut states = vec![RANS_L; lanes];
        let mut words: Vec<u16> = Vec::with_capacity(seg.len() / 4);
        // Symbol i goes to lane i % lanes; walked backwards without a division.
        let mut lane = (seg.len() - 1) % lanes;
        for &sym in seg.iter().rev() {
            let s = sym as usize;
            let f = freq[s];
            let mut x = states[lane];
            if x as u64 >= x_max[s] {
                words.push(x as u16);
                x >>= 16;
            }
            let q = quotient(x, f, reciprocals[s]);
            states[lane] = (q << scale_bits) + (x - q * f) + cum[s];
            lane = if lane == 0 { lanes - 1 } else { lane - 1 };
        }
        words.reverse();
        segments.push((states, words));
    }
    for (_, words) in &segments {
        varint::put(out, words.len() as u64);
    }
    for (states, words) in &segments {
        for st in states {
            out.extend_from_slice(&st.to_le_bytes());
        }
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// ceil(2^64 / f) for f > 1 (0 for f <= 1, which [`quotient`] never uses).
pub(crate) fn reciprocal(f: u32) -> u64 {
    if f > 1 {
        u64::MAX / f as u64 + 1
    } else {
        0
    }
}

/// x / f from `reciprocal(f)`: exact for every 32-bit `x` and `f`.
#[inline]
pub(crate) fn quotient(x: u32, f: u32, reciprocal: u64) -> u32 {
    if f <= 1 {
        x
    } else {
        ((reciprocal as u128 * x as u128) >> 64) as u32
    }
}
