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
    #[cfg(target_arch = "x86_64")]
    let simd = super::encode_avx2::available();
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    encode_with(syms, counts, lanes, simd, out)
}

/// [`encode_lanes`], the whole groups of 32 lanes by the AVX2 encoder when
/// `simd` (the same bytes either way).
pub(super) fn encode_with(
    syms: &[u16],
    counts: &[u64],
    lanes: usize,
    simd: bool,
    out: &mut Vec<u8>,
) {
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

    let m = 1u32 << scale_bits;
    let table: Vec<EncSymbol> = freq
        .iter()
        .zip(&cum)
        .map(|(&f, &c)| EncSymbol::new(f, c, scale_bits, m))
        .collect();
    // Every segment's words, each segment in its own span of `words` (one
    // word per symbol at most, plus the slot a branch-free store may spill
    // into), filled from the span's end since the encoder runs backwards.
    thread_local! {
        // Each coding thread's word buffer, reused section after section
        // (a fresh one a section cost page faults and zeroing).
        static WORDS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    WORDS.with_borrow_mut(|words| {
        // Every slot is written before it is read (see `encode_segment`), so
        // the buffer only grows: shrinking it for a short section would zero
        // the slots again when the next long one grows it back.
        let need = syms.len() + syms.len().div_ceil(SEGMENT_SYMBOLS) * SPAN_SLACK;
        if words.len() < need {
            words.resize(need, 0);
        }
        let mut segments: Vec<([u32; 64], std::ops::Range<usize>)> = Vec::new();
        let mut base = 0;
        for seg in syms.chunks(SEGMENT_SYMBOLS) {
            let end = base + seg.len() + SPAN_SLACK;
            let (states, first) = encode_segment(seg, &table, lanes, simd, &mut words[base..end]);
            segments.push((states, base + first..end));
            base = end;
        }
        for (_, range) in &segments {
            varint::put(out, range.len() as u64);
        }
        let body: usize = segments.iter().map(|(_, r)| 4 * lanes + 2 * r.len()).sum();
        out.reserve(body);
        for (states, range) in &segments {
            for st in &states[..lanes] {
                out.extend_from_slice(&st.to_le_bytes());
            }
            put_words(out, &words[range.clone()]);
        }
    });
}

/// Appends `words` as little-endian u16s.
fn put_words(out: &mut Vec<u8>, words: &[u16]) {
    if cfg!(target_endian = "little") {
        // The words' own bytes: one copy, no zeroing first.
        out.extend_from_slice(bytemuck::cast_slice(words));
        return;
    }
    let start = out.len();
    out.resize(start + 2 * words.len(), 0);
    for (dst, w) in out[start..].chunks_exact_mut(2).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
}

/// What the encoder needs of one symbol, in 16 bytes, without a division:
/// a state `x` above `renorm` first gives out its low 16 bits (the bound
/// is `2^(32 - scale) * f - 1`, past any u32 for a lone symbol's `f = M`);
/// then, with `q = x / f` from the reciprocal (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019),
/// `(q << scale) + x % f + cum = x + q * (M - f) + cum`. For `f = 1` the
/// reciprocal `2^64 - 1` gives `q = x - 1`, which `bias = cum + M - 1`
/// corrects (the trick of Giesen's rans_byte.h), so no symbol branches.
/// Laid out as four dwords (the reciprocal's low and high halves, `renorm`,
/// `bias` with `complement` above it) for the AVX2 encoder's gathers.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct EncSymbol {
    reciprocal: u64,
    pub(crate) renorm: u32,
    bias: u16,
    complement: u16,
}

impl EncSymbol {
    pub(crate) fn new(f: u32, cum: u32, scale_bits: u32, m: u32) -> Self {
        let bound = (((RANS_L >> scale_bits) as u64) << 16) * f as u64;
        let (reciprocal, bias) = if f == 1 {
            (u64::MAX, cum + m - 1)
        } else {
            (reciprocal(f), cum)
        };
        EncSymbol {
            reciprocal,
            renorm: bound.saturating_sub(1).min(u32::MAX as u64) as u32,
            bias: bias as u16,
            complement: (m - f.min(m)) as u16,
        }
    }

    /// The state after coding this symbol from `x` (at least 1, at most
    /// `renorm`): `(x / f << scale) + x % f + cum`.
    #[inline(always)]
    pub(crate) fn put(&self, x: u32) -> u32 {
        let q = ((self.reciprocal as u128 * x as u128) >> 64) as u32;
        x.wrapping_add(q.wrapping_mul(self.complement as u32))
            .wrapping_add(self.bias as u32)
    }
}

/// Slots of a segment's span beyond one a symbol: the slot a branch-free
/// store may spill into, and the seven below the last word that the AVX2
/// encoder's eight-word stores may reach.
const SPAN_SLACK: usize = 9;

/// Encodes one segment backwards into the end of `span` (`seg.len() +
/// SPAN_SLACK` words), its whole groups of 32 lanes by the AVX2 encoder
/// when `simd`; returns the lanes' final states and where the words start.
fn encode_segment(
    seg: &[u16],
    table: &[EncSymbol],
    lanes: usize,
    simd: bool,
    span: &mut [u16],
) -> ([u32; 64], usize) {
    let mut states = [RANS_L; 64];
    // `pos - 1` is the slot the next word goes to; a store happens for
    // every symbol and counts only when the state renormalises.
    let mut pos = span.len();
    let mut put = |x: u32, sym: u16| {
        let e = table[sym as usize];
        let out = x > e.renorm;
        span[pos - 1] = x as u16;
        pos -= out as usize;
        e.put(if out { x >> 16 } else { x })
    };
    // Symbol i goes to lane i % lanes. The symbols past the last whole
    // group of `lanes` come first (the walk is backwards), then whole
    // groups, each lane at a fixed place (unrolled for the writer's 32).
    let whole = seg.len() / lanes * lanes;
    for (j, &sym) in seg[whole..].iter().enumerate().rev() {
        states[j] = put(states[j], sym);
    }
    if lanes == LANES && simd {
        #[cfg(target_arch = "x86_64")]
        {
            let st: &mut [u32; LANES] = (&mut states[..LANES]).try_into().expect("LANES states");
            super::encode_avx2::groups(&seg[..whole], table, st, span, &mut pos);
        }
    } else if lanes == LANES {
        let st: &mut [u32; LANES] = (&mut states[..LANES]).try_into().expect("LANES states");
        for group in seg[..whole].chunks_exact(LANES).rev() {
            let group: &[u16; LANES] = group.try_into().expect("LANES symbols");
            for j in (0..LANES).rev() {
                st[j] = put(st[j], group[j]);
            }
        }
    } else {
        for group in seg[..whole].chunks_exact(lanes).rev() {
            for (j, &sym) in group.iter().enumerate().rev() {
                states[j] = put(states[j], sym);
            }
        }
    }
    (states, pos)
}

/// ceil(2^64 / f) for f > 1 (0 for f <= 1, which [`EncSymbol`] never uses).
pub(crate) fn reciprocal(f: u32) -> u64 {
    if f > 1 {
        u64::MAX / f as u64 + 1
    } else {
        0
    }
}
