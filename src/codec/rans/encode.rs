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

    let mut segments = Vec::new();
    for seg in syms.chunks(SEGMENT_SYMBOLS) {
        let mut states = vec![RANS_L; lanes];
        let mut words: Vec<u16> = Vec::with_capacity(seg.len() / 4);
        for i in (0..seg.len()).rev() {
            let s = seg[i] as usize;
            let f = freq[s];
            let lane = i % lanes;
            let mut x = states[lane];
            // 2^(32 - scale) * f reaches 2^32 for a lone symbol: compare in u64.
            let x_max = (((RANS_L >> scale_bits) as u64) << 16) * f as u64;
            if x as u64 >= x_max {
                words.push(x as u16);
                x >>= 16;
            }
            states[lane] = ((x / f) << scale_bits) + (x % f) + cum[s];
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
