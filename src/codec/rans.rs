//! Interleaved rANS over small alphabets, cut into independent segments.
//!
//! Layout of an rANS section body (after the section's kind byte):
//!
//! ```text
//! scale_bits  u8         probabilities are counts out of M = 2^scale_bits
//! lanes       u8         interleaved states per segment (symbol i uses lane i % lanes)
//! seg_syms    varint     symbols per segment (the last may be shorter)
//! table       varint     number of present symbols, then per symbol:
//!                        varint gap from the previous symbol (+1 after the first), varint freq-1
//! words       varint*    per segment: number of 16-bit renormalisation words
//! segments               per segment: lanes x u32 LE initial states, then words x u16 LE
//! ```
//!
//! Each segment decodes alone from its states and words (a CPU thread or one
//! GPU warp per segment, the 32 lanes being the warp's threads). States live in
//! `[L, 2^32)` with `L = 2^16`; one symbol reads at most one word, so with
//! `scale_bits <= 15` a symbol never needs two. A decoder that ends with every
//! state back at `L` and every word consumed has read exactly what was written.

use super::varint;
use crate::error::{Error, Result};

/// Lower bound of a state.
const RANS_L: u32 = 1 << 16;
/// Interleaved states per segment (a GPU warp's width).
pub const LANES: usize = 32;
/// Symbols per segment: a segment's 128 bytes of states cost under 0.5% of a
/// typical coded exponent channel.
pub const SEGMENT_SYMBOLS: usize = 1 << 17;
/// Largest probability scale accepted.
pub const MAX_SCALE_BITS: u32 = 15;
const MIN_SCALE_BITS: u32 = 9;

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
    // Pick the smallest scale whose estimate is within 0.05% of the best: a
    // smaller decode table stays in L1.
    let mut options = Vec::new();
    for k in MIN_SCALE_BITS..=MAX_SCALE_BITS {
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
    out.push(LANES as u8);
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
        let mut states = [RANS_L; LANES];
        let mut words: Vec<u16> = Vec::with_capacity(seg.len() / 4);
        for i in (0..seg.len()).rev() {
            let s = seg[i] as usize;
            let f = freq[s];
            let lane = i % LANES;
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

/// A decoding table entry: the symbol's output contribution, its frequency,
/// and `slot - cum` for the slot that indexes it.
#[derive(Clone, Copy, Default)]
struct Entry {
    value: u32,
    freq: u16,
    bias: u16,
}

/// Output word of a decode (the float's bit pattern, 16 or 32 bits).
pub trait Word: bytemuck::Pod + Default + Send + Sync + 'static {
    fn from_u32(v: u32) -> Self;
    fn add(self, v: u32) -> Self;
}

impl Word for u16 {
    #[inline(always)]
    fn from_u32(v: u32) -> Self {
        v as u16
    }
    #[inline(always)]
    fn add(self, v: u32) -> Self {
        self.wrapping_add(v as u16)
    }
}

impl Word for u32 {
    #[inline(always)]
    fn from_u32(v: u32) -> Self {
        v
    }
    #[inline(always)]
    fn add(self, v: u32) -> Self {
        self.wrapping_add(v)
    }
}

/// Decodes an rANS section body of `n` symbols over `lut.len()` symbols:
/// `out[i] = lut[sym]` when `assign`, else `out[i] += lut[sym]`.
pub fn decode<W: Word>(body: &[u8], lut: &[u32], out: &mut [W], assign: bool) -> Result<()> {
    let n = out.len();
    let alphabet = lut.len();
    let mut r = varint::Reader::new(body);
    let scale_bits = r.u8()? as u32;
    let lanes = r.u8()? as usize;
    let seg_syms = r.varint()? as usize;
    if !(1..=MAX_SCALE_BITS).contains(&scale_bits) {
        return Err(Error::Decode(format!(
            "rANS scale {scale_bits} outside 1..=15"
        )));
    }
    if lanes == 0 || lanes > 64 {
        return Err(Error::Decode(format!(
            "rANS lane count {lanes} outside 1..=64"
        )));
    }
    if seg_syms == 0 || seg_syms > 1 << 26 {
        return Err(Error::Decode(format!(
            "rANS segment size {seg_syms} out of range"
        )));
    }
    let m = 1usize << scale_bits;
    let present = r.varint()? as usize;
    if present == 0 || present > alphabet {
        return Err(Error::Decode(format!(
            "rANS table lists {present} symbols, alphabet has {alphabet}"
        )));
    }
    let mut table = vec![Entry::default(); m];
    let mut slot = 0usize;
    let mut sym = 0usize;
    for i in 0..present {
        let gap = r.varint()? as usize;
        sym = if i == 0 { gap } else { sym + 1 + gap };
        let f = r.varint()? as usize + 1;
        if sym >= alphabet || f > m - slot {
            return Err(Error::Decode(format!(
                "rANS table entry {i} (symbol {sym}, frequency {f}) does not fit alphabet {alphabet} and scale {m}"
            )));
        }
        for (j, e) in table[slot..slot + f].iter_mut().enumerate() {
            *e = Entry {
                value: lut[sym],
                freq: f as u16,
                bias: j as u16,
            };
        }
        slot += f;
    }
    if slot != m {
        return Err(Error::Decode(format!(
            "rANS frequencies sum to {slot}, expected {m}"
        )));
    }
    let nseg = n.div_ceil(seg_syms);
    let mut word_counts = Vec::with_capacity(nseg.min(1 << 16));
    for _ in 0..nseg {
        word_counts.push(r.varint()? as usize);
    }
    let mut data = r.rest();
    for (k, &words) in word_counts.iter().enumerate() {
        let start = k * seg_syms;
        let seg_out = &mut out[start..(start + seg_syms).min(n)];
        let need = lanes
            .checked_mul(4)
            .and_then(|s| words.checked_mul(2).and_then(|w| w.checked_add(s)))
            .filter(|&b| b <= data.len())
            .ok_or_else(|| {
                Error::Decode(format!(
                    "rANS segment {k} needs {words} words and {lanes} states, more than the {} bytes left",
                    data.len()
                ))
            })?;
        let (seg, rest) = data.split_at(need);
        data = rest;
        let done = if assign {
            decode_segment::<W, true>(seg, lanes, scale_bits, &table, seg_out)
        } else {
            decode_segment::<W, false>(seg, lanes, scale_bits, &table, seg_out)
        };
        done.map_err(|e| Error::Decode(format!("rANS segment {k}: {e}")))?;
    }
    if !data.is_empty() {
        return Err(Error::Decode(format!(
            "{} bytes left over after the last rANS segment",
            data.len()
        )));
    }
    Ok(())
}

fn decode_segment<W: Word, const ASSIGN: bool>(
    seg: &[u8],
    lanes: usize,
    scale_bits: u32,
    table: &[Entry],
    out: &mut [W],
) -> Result<()> {
    let (state_bytes, words) = seg.split_at(lanes * 4);
    let mut states = [0u32; 64];
    for (st, b) in states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *st = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *st < RANS_L {
            return Err(Error::Decode(format!("initial state {st:#x} below 2^16")));
        }
    }
    let mask = (1u32 << scale_bits) - 1;
    debug_assert_eq!(table.len(), mask as usize + 1);
    let n = out.len();
    let mut pos = 0usize; // byte position in `words`
    let mut i = 0usize;
    let emit = |o: &mut W, v: u32| {
        *o = if ASSIGN { W::from_u32(v) } else { o.add(v) };
    };
    if lanes == LANES {
        // Blocks of one symbol per lane. A block reads at most LANES words, so
        // while that many remain no read can fail, and the renormalisation is
        // branch-free: the next word is always loaded and kept or not (a
        // data-dependent branch here mispredicts on a fifth of the symbols).
        let mut st = [0u32; LANES];
        st.copy_from_slice(&states[..LANES]);
        while n - i >= LANES && words.len() - pos >= 2 * LANES {
            let w = &words[pos..pos + 2 * LANES];
            let block = &mut out[i..i + LANES];
            // Two passes: the state updates are independent across lanes; only
            // the word position chains from lane to lane, and that chain is an add.
            for (x, o) in st.iter_mut().zip(block.iter_mut()) {
                let e = table[(*x & mask) as usize];
                *x = e.freq as u32 * (*x >> scale_bits) + e.bias as u32;
                emit(o, e.value);
            }
            let mut p = 0usize;
            for x in st.iter_mut() {
                let next = u16::from_le_bytes([w[p], w[p + 1]]) as u32;
                // Arithmetic, not a select: LLVM turns a select back into a branch.
                let need = (*x < RANS_L) as u32;
                *x = (*x << (16 * need)) | (next & need.wrapping_neg());
                p += 2 * need as usize;
            }
            pos += p;
            i += LANES;
        }
        states[..LANES].copy_from_slice(&st);
    }
    while i < n {
        let lane = i % lanes;
        let x = states[lane];
        let e = table[(x & mask) as usize];
        let mut y = e.freq as u32 * (x >> scale_bits) + e.bias as u32;
        if y < RANS_L {
            let b = words
                .get(pos..pos + 2)
                .ok_or_else(|| Error::Decode(format!("word stream ends at symbol {i} of {n}")))?;
            y = (y << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            pos += 2;
        }
        states[lane] = y;
        emit(&mut out[i], e.value);
        i += 1;
    }
    if pos != words.len() {
        return Err(Error::Decode(format!(
            "{} words left unread",
            (words.len() - pos) / 2
        )));
    }
    if states[..lanes].iter().any(|&s| s != RANS_L) {
        return Err(Error::Decode(
            "final states differ from the encoder's start (stream corrupt)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(syms: &[u16], alphabet: usize) -> Vec<u64> {
        let mut c = vec![0u64; alphabet];
        for &s in syms {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn round_trips_skewed_and_lone_symbols() {
        let lut: Vec<u32> = (0..300u32).map(|s| s * 7 + 1).collect();
        let mut x = 12345u64;
        let mut syms = Vec::new();
        for _ in 0..(SEGMENT_SYMBOLS * 2 + 77) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 33) as u32;
            syms.push(((r % 1000) as u16).min(299) / 3 + if r % 97 == 0 { 200 } else { 0 });
        }
        for syms in [syms, vec![5u16; 1000], vec![0u16, 299]] {
            let mut body = Vec::new();
            encode(&syms, &counts_of(&syms, 300), &mut body);
            let mut out = vec![0u32; syms.len()];
            decode(&body, &lut, &mut out, true).unwrap();
            for (o, s) in out.iter().zip(&syms) {
                assert_eq!(*o, lut[*s as usize]);
            }
        }
    }

    #[test]
    fn normalize_sums_to_scale_and_keeps_every_symbol() {
        let counts: Vec<u64> = (0..2048)
            .map(|i| if i % 3 == 0 { 1 } else { i * i })
            .collect();
        for k in 12..=15 {
            let f = normalize(&counts, k).unwrap();
            assert_eq!(f.iter().map(|&x| x as u64).sum::<u64>(), 1 << k);
            assert!(f.iter().zip(&counts).all(|(&f, &c)| (c > 0) == (f > 0)));
        }
        assert!(normalize(&counts, 10).is_none());
    }
}
