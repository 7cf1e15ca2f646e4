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

use super::{bitpack, varint};
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
/// Largest scale the encoder picks: the decode table (8 bytes a slot) stays
/// within L1 at 2^12 slots, which the SIMD decoder's gathers need.
pub const ENCODE_MAX_SCALE_BITS: u32 = 12;
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

/// The decoding table, one u64 per slot of `[0, M)`: the symbol's frequency
/// (bits 0..16), `slot - cum` (bits 16..32) and its output contribution (bits
/// 32..64). One entry per slot, so a SIMD decoder fetches a slot with one
/// 64-bit gather element.
pub(crate) struct Table {
    pub(crate) entry: Vec<u64>,
    /// The same table in 32 bits a slot, where the section allows it.
    pub(crate) packed: Option<Packed>,
}

/// The decoding table at 4 bytes a slot: `freq - 1` (bits `0..s`), `slot -
/// cum` (bits `s..2s`) and the symbol's rank `r` (bits `2s..32`), its output
/// contribution being `base + (r << shift)`, with `s = scale_bits`. One AVX2
/// gather fetches eight slots (the 64-bit table takes two, and a shuffle to
/// pull the fields apart), and at `s = 12` the table is 16 KiB: half of L1.
/// It exists when every present symbol's contribution has that form, which
/// for p = 2 is always so (a contribution is the symbol shifted to its bits).
pub(crate) struct Packed {
    pub(crate) entry: Vec<u32>,
    pub(crate) base: u32,
    pub(crate) shift: u32,
}

impl Packed {
    /// The packed table of `present` (symbol, frequency) pairs, in slot order,
    /// or `None` when the ranks do not fit beside the two `scale_bits` fields.
    fn build(present: &[(usize, usize)], lut: &[u32], scale_bits: u32) -> Option<Packed> {
        let base = present.iter().map(|&(s, _)| lut[s]).min()?;
        let spread = present
            .iter()
            .fold(0u32, |acc, &(s, _)| acc | lut[s].wrapping_sub(base));
        let shift = if spread == 0 {
            0
        } else {
            spread.trailing_zeros()
        };
        let rank_bits = 32u32.checked_sub(2 * scale_bits)?;
        let rank = |s: usize| (lut[s] - base) >> shift;
        if present
            .iter()
            .any(|&(s, _)| rank_bits < 32 && rank(s) >> rank_bits != 0)
        {
            return None;
        }
        let mut entry = Vec::with_capacity(1 << scale_bits);
        for &(s, f) in present {
            let head = (f as u32 - 1) | rank(s).checked_shl(2 * scale_bits).unwrap_or(0);
            entry.extend((0..f as u32).map(|j| head | j << scale_bits));
        }
        Some(Packed { entry, base, shift })
    }
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
    decode_with(body, lut, n, 0, out, assign, true, None).map(|_| ())
}

/// Decodes symbols `[first, first + out.len())` of a section of `total`
/// symbols, reading only the segments that hold them. Both ends must fall on
/// segment boundaries (or the end).
pub fn decode_range<W: Word>(
    body: &[u8],
    lut: &[u32],
    total: usize,
    first: usize,
    out: &mut [W],
    assign: bool,
) -> Result<()> {
    decode_with(body, lut, total, first, out, assign, true, None).map(|_| ())
}

/// A parsed rANS section header: everything but the segments' states and words.
pub(crate) struct Header<'a> {
    pub(crate) scale_bits: u32,
    pub(crate) lanes: usize,
    seg_syms: usize,
    pub(crate) table: Table,
    /// The present symbols and their frequencies, in slot order.
    listed: Vec<(usize, usize)>,
    word_counts: Vec<usize>,
    /// The segments' bytes, in order.
    data: &'a [u8],
    /// Where `data` starts in the body.
    data_offset: usize,
    n: usize,
}

/// One segment of a section: its symbols `[start, end)`, and its states and
/// words (`lanes` u32 states, then `words` u16 words) at `offset` in the body.
pub(crate) struct SegmentRef<'a> {
    pub(crate) index: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: usize,
    pub(crate) words: usize,
}

impl<'a> Header<'a> {
    /// Parses and checks the header of a body of `n` symbols over `lut.len()`
    /// symbols; the table carries each symbol's `lut` contribution.
    pub(crate) fn parse(body: &'a [u8], lut: &[u32], n: usize) -> Result<Self> {
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
        let mut table = Table {
            entry: vec![0; m],
            packed: None,
        };
        let mut listed = Vec::with_capacity(present);
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
            // A lone symbol has f = M = 2^15 at most: it fits the low 16 bits.
            for (j, e) in table.entry[slot..slot + f].iter_mut().enumerate() {
                *e = f as u64 | (j as u64) << 16 | (lut[sym] as u64) << 32;
            }
            listed.push((sym, f));
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
        let data = r.rest();
        Ok(Header {
            scale_bits,
            lanes,
            seg_syms,
            table,
            listed,
            word_counts,
            data,
            data_offset: body.len() - data.len(),
            n,
        })
    }

    /// Checks that `[first, last)` falls on segment boundaries.
    pub(crate) fn check_range(&self, first: usize, last: usize) -> Result<()> {
        if last > self.n {
            return Err(Error::Decode(format!(
                "range {first}..{last} past the {} symbols",
                self.n
            )));
        }
        if first % self.seg_syms != 0 || (last != self.n && last % self.seg_syms != 0) {
            return Err(Error::Decode(format!(
                "range {first}..{last} does not fall on rANS segment boundaries ({} symbols)",
                self.seg_syms
            )));
        }
        Ok(())
    }

    /// Every segment, in order, bounds-checked; then a check that no byte is
    /// left over.
    pub(crate) fn segments(&self) -> Result<Vec<SegmentRef<'a>>> {
        let mut out = Vec::with_capacity(self.word_counts.len());
        let mut data = self.data;
        let mut offset = self.data_offset;
        for (k, &words) in self.word_counts.iter().enumerate() {
            let start = k * self.seg_syms;
            let end = (start + self.seg_syms).min(self.n);
            let lanes = self.lanes;
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
            out.push(SegmentRef {
                index: k,
                start,
                end,
                bytes: seg,
                offset,
                words,
            });
            data = rest;
            offset += need;
        }
        if !data.is_empty() {
            return Err(Error::Decode(format!(
                "{} bytes left over after the last rANS segment",
                data.len()
            )));
        }
        Ok(out)
    }
}

/// A raw plane of `width`-bit values (`width <= 8`, one value per decoded
/// symbol, from the range's first) whose contributions are bit runs (see
/// [`bitpack::bit_runs`]). [`decode_range_with_plane`] adds it in the rANS
/// section's own pass, so the output is written once rather than twice.
pub(crate) struct Plane<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) width: u32,
    pub(crate) lut: &'a [u32],
    pub(crate) runs: &'a [(u32, i32)],
}

/// [`decode_range`], with the SIMD path allowed or not (tests hold both to
/// the same output), and then `out[i] += plane.lut[plane value i]` when
/// there is a plane: the same result as decoding the plane after the
/// section, in one pass where the SIMD decoder can. Returns how many values
/// took their plane contribution in that pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_with<W: Word>(
    body: &[u8],
    lut: &[u32],
    n: usize,
    first: usize,
    out: &mut [W],
    assign: bool,
    allow_simd: bool,
    plane: Option<&Plane>,
) -> Result<usize> {
    let last = first + out.len();
    let mut h = Header::parse(body, lut, n)?;
    h.check_range(first, last)?;
    // The SIMD decoder's 32-bit table, built only where it will be read.
    #[cfg(target_arch = "x86_64")]
    if allow_simd && h.lanes == LANES && simd::available() {
        h.table.packed = Packed::build(&h.listed, lut, h.scale_bits);
    }
    // Segments on whole bytes of the plane take it along; otherwise it is
    // added after the section.
    let fuse = plane.filter(|p| h.seg_syms * p.width as usize % 8 == 0);
    let decode = if assign {
        decode_segment::<W, true>
    } else {
        decode_segment::<W, false>
    };
    let mut in_pass = 0;
    for seg in h.segments()? {
        if seg.start < first || seg.end > last {
            continue;
        }
        let (a, b) = (seg.start - first, seg.end - first);
        let k = seg.index;
        let seg_plane = fuse.map(|p| Plane {
            bytes: &p.bytes[a * p.width as usize / 8..],
            ..*p
        });
        let fused = decode(
            seg.bytes,
            h.lanes,
            h.scale_bits,
            &h.table,
            &mut out[a..b],
            allow_simd,
            seg_plane.as_ref(),
        )
        .map_err(|e| Error::Decode(format!("rANS segment {k}: {e}")))?;
        if let Some(p) = fuse {
            add_plane(p, a + fused, b, &mut out[a + fused..b])?;
        }
        in_pass += fused;
    }
    if let (Some(p), None) = (plane, fuse) {
        add_plane(p, 0, out.len(), out)?;
    }
    Ok(in_pass)
}

/// Adds the plane's values `[a, b)` (`a` a multiple of 8) to `out`.
fn add_plane<W: Word>(p: &Plane, a: usize, b: usize, out: &mut [W]) -> Result<()> {
    let w = p.width;
    let bytes = &p.bytes[a * w as usize / 8..bitpack::packed_len(b, w)];
    bitpack::decode(bytes, w, p.lut, out, false)
        .map_err(|e| Error::Decode(format!("digit plane: {e}")))
}

/// Decodes one segment into `out`; returns how many of its leading values
/// (a multiple of 32) also took their `plane` contribution.
fn decode_segment<W: Word, const ASSIGN: bool>(
    seg: &[u8],
    lanes: usize,
    scale_bits: u32,
    table: &Table,
    out: &mut [W],
    allow_simd: bool,
    plane: Option<&Plane>,
) -> Result<usize> {
    let (state_bytes, words) = seg.split_at(lanes * 4);
    let mut states = [0u32; 64];
    for (st, b) in states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *st = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *st < RANS_L {
            return Err(Error::Decode(format!("initial state {st:#x} below 2^16")));
        }
    }
    let mask = (1u32 << scale_bits) - 1;
    debug_assert_eq!(table.entry.len(), mask as usize + 1);
    let entry = &table.entry[..];
    let n = out.len();
    let mut pos = 0usize; // byte position in `words`
    let mut i = 0usize;
    let emit = |o: &mut W, v: u32| {
        *o = if ASSIGN { W::from_u32(v) } else { o.add(v) };
    };
    #[cfg(target_arch = "x86_64")]
    let fused = if allow_simd && lanes == LANES && simd::available() {
        let (done, read, fused) =
            simd::blocks::<W, ASSIGN>(&mut states, words, scale_bits, table, out, plane);
        i = done;
        pos = read;
        fused
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let fused = {
        let _ = (plane, allow_simd);
        0
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
                let e = entry[(*x & mask) as usize];
                *x = (e as u32 & 0xffff) * (*x >> scale_bits) + (e as u32 >> 16);
                emit(o, (e >> 32) as u32);
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
        let e = entry[(x & mask) as usize];
        let mut y = (e as u32 & 0xffff) * (x >> scale_bits) + (e as u32 >> 16);
        if y < RANS_L {
            let b = words
                .get(pos..pos + 2)
                .ok_or_else(|| Error::Decode(format!("word stream ends at symbol {i} of {n}")))?;
            y = (y << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            pos += 2;
        }
        states[lane] = y;
        emit(&mut out[i], (e >> 32) as u32);
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
    Ok(fused)
}

/// The AVX2 decoder of full 32-lane blocks: four vectors of eight lanes. It
/// consumes words in exactly the scalar decoder's order (lane 0 to 31 within a
/// block), so it needs no format of its own, and `tests` holds it to the
/// scalar decoder on every input.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Plane, Table, Word, LANES};
    use crate::codec::bitpack::simd::{sixteen, Runs};
    use std::arch::x86_64::*;

    pub(crate) use crate::codec::simd_available as available;

    /// For an 8-bit mask of lanes that read a word, the index of each lane's
    /// word among the eight loaded: the number of set lanes below it.
    const fn compaction() -> [[u32; 8]; 256] {
        let mut t = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut k = 0;
            let mut lane = 0;
            while lane < 8 {
                if m & (1 << lane) != 0 {
                    t[m][lane] = k;
                    k += 1;
                }
                lane += 1;
            }
            m += 1;
        }
        t
    }
    static COMPACTION: [[u32; 8]; 256] = compaction();

    /// Decodes whole blocks while at least 64 bytes of words remain; returns
    /// (symbols decoded, bytes of words read, symbols that took their
    /// `plane` contribution too). `states` holds the 32 lanes. The plane
    /// rides along for 16-bit words and at most two bit runs.
    pub fn blocks<W: Word, const ASSIGN: bool>(
        states: &mut [u32; 64],
        words: &[u8],
        scale_bits: u32,
        table: &Table,
        out: &mut [W],
        plane: Option<&Plane>,
    ) -> (usize, usize, usize) {
        debug_assert!(available());
        let plane = plane.filter(|p| {
            std::mem::size_of::<W>() == 2 && (1..=8).contains(&p.width) && p.runs.len() <= 2
        });
        // SAFETY: `available()` checked that the CPU has AVX2 and BMI2.
        unsafe {
            match (table.packed.is_some(), plane) {
                (true, None) => blocks_avx2::<W, ASSIGN, true, false>(
                    states, words, scale_bits, table, out, None,
                ),
                (false, None) => blocks_avx2::<W, ASSIGN, false, false>(
                    states, words, scale_bits, table, out, None,
                ),
                (true, p) => {
                    blocks_avx2::<W, ASSIGN, true, true>(states, words, scale_bits, table, out, p)
                }
                (false, p) => {
                    blocks_avx2::<W, ASSIGN, false, true>(states, words, scale_bits, table, out, p)
                }
            }
        }
    }

    /// `PACKED`: read `table.packed` (one 32-bit gather per eight lanes), else
    /// `table.entry` (two 64-bit gathers). `FUSED`: add `plane`'s values
    /// (16-bit words only).
    #[target_feature(enable = "avx2,bmi2")]
    fn blocks_avx2<W: Word, const ASSIGN: bool, const PACKED: bool, const FUSED: bool>(
        states: &mut [u32; 64],
        words: &[u8],
        scale_bits: u32,
        table: &Table,
        out: &mut [W],
        plane: Option<&Plane>,
    ) -> (usize, usize, usize) {
        let (pbytes, pw, runs) = match plane {
            Some(p) if FUSED => (p.bytes, p.width as usize, Runs::new(p.runs, false)),
            _ => (&[][..], 1, Runs::new(&[], false)),
        };
        let n = out.len();
        let wide = std::mem::size_of::<W>() == 4;
        let mask = _mm256_set1_epi32(((1u32 << scale_bits) - 1) as i32);
        let low16 = _mm256_set1_epi32(0xffff);
        let shift = _mm_cvtsi32_si128(scale_bits as i32);
        let zero = _mm256_setzero_si256();
        let entry_ptr = table.entry.as_ptr() as *const i64;
        debug_assert_eq!(table.entry.len(), 1 << scale_bits);
        let (packed_ptr, base, rank_shift, rank_up) = match &table.packed {
            Some(p) if PACKED => {
                debug_assert_eq!(p.entry.len(), 1 << scale_bits);
                (
                    p.entry.as_ptr() as *const i32,
                    _mm256_set1_epi32(p.base as i32),
                    _mm_cvtsi32_si128(2 * scale_bits as i32),
                    _mm_cvtsi32_si128(p.shift as i32),
                )
            }
            _ => (
                std::ptr::null(),
                zero,
                _mm_setzero_si128(),
                _mm_setzero_si128(),
            ),
        };
        // Moves the low dwords of four u64 to lanes 0..4 and the high ones to 4..8.
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let mut x = [zero; 4];
        for (g, v) in x.iter_mut().enumerate() {
            let lanes: &[u32; 8] = (&states[8 * g..8 * g + 8]).try_into().expect("eight lanes");
            // SAFETY: reads the eight u32 of `lanes`.
            *v = unsafe { _mm256_loadu_si256(lanes.as_ptr() as *const __m256i) };
        }
        let mut i = 0usize;
        let mut pos = 0usize;
        // A block's plane values end by `(i + 32) * pw / 8` bytes, and its last
        // 8-byte load (see `sixteen`) by `(i + 24) * pw / 8 + 8`.
        while n - i >= LANES
            && words.len() - pos >= 2 * LANES
            && (!FUSED || (i + 24) * pw / 8 + 8 <= pbytes.len())
        {
            // Phase A, independent across the four groups: the state step and
            // the outputs. Phase B chains the word position from group to
            // group, and that chain is a popcount and an add: kept apart, the
            // gathers of all four groups are in flight together.
            let mut need = [zero; 4];
            let mut m = [0usize; 4];
            // An even group's values, stored with the next group's.
            let mut pending = zero;
            for g in 0..4 {
                let xg = x[g];
                let slot = _mm256_and_si256(xg, mask);
                let q = _mm256_srl_epi32(xg, shift);
                let (y, v) = if PACKED {
                    // SAFETY: every slot is below 2^scale_bits, the table's length.
                    let e = unsafe { _mm256_i32gather_epi32::<4>(packed_ptr, slot) };
                    let freq_less_one = _mm256_and_si256(e, mask);
                    let bias = _mm256_and_si256(_mm256_srl_epi32(e, shift), mask);
                    let rank = _mm256_srl_epi32(e, rank_shift);
                    let v = _mm256_add_epi32(base, _mm256_sll_epi32(rank, rank_up));
                    let y = _mm256_add_epi32(_mm256_mullo_epi32(freq_less_one, q), q);
                    (_mm256_add_epi32(y, bias), v)
                } else {
                    // SAFETY: every slot is below 2^scale_bits, the table's length.
                    let lo = unsafe {
                        _mm256_i32gather_epi64::<8>(entry_ptr, _mm256_castsi256_si128(slot))
                    };
                    // SAFETY: as above.
                    let hi = unsafe {
                        _mm256_i32gather_epi64::<8>(entry_ptr, _mm256_extracti128_si256::<1>(slot))
                    };
                    let lo = _mm256_permutevar8x32_epi32(lo, split);
                    let hi = _mm256_permutevar8x32_epi32(hi, split);
                    let e = _mm256_permute2x128_si256::<0x20>(lo, hi);
                    let v = _mm256_permute2x128_si256::<0x31>(lo, hi);
                    let freq = _mm256_and_si256(e, low16);
                    let bias = _mm256_srli_epi32::<16>(e);
                    (_mm256_add_epi32(_mm256_mullo_epi32(freq, q), bias), v)
                };
                x[g] = y;
                // y < 2^16 exactly when its high half is zero.
                need[g] = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y), zero);
                m[g] = _mm256_movemask_ps(_mm256_castsi256_ps(need[g])) as usize;
                let o = 8 * g + i;
                if wide {
                    let dst: &mut [W] = &mut out[o..o + 8];
                    let p = dst.as_mut_ptr() as *mut __m256i;
                    let v = if ASSIGN {
                        v
                    } else {
                        // SAFETY: reads the eight u32 of `dst`.
                        _mm256_add_epi32(v, unsafe { _mm256_loadu_si256(p) })
                    };
                    // SAFETY: writes the eight u32 of `dst`.
                    unsafe { _mm256_storeu_si256(p, v) };
                } else if g % 2 == 0 {
                    pending = v;
                } else {
                    // Values fit 16 bits: pack this group's eight and the
                    // previous group's to sixteen u16, in order.
                    let v16 =
                        _mm256_permute4x64_epi64::<0b1101_1000>(_mm256_packus_epi32(pending, v));
                    let v16 = if FUSED {
                        let digits = sixteen(pbytes, (o - 8) * pw / 8, pw);
                        _mm256_add_epi16(v16, runs.apply16(_mm256_cvtepu8_epi16(digits)))
                    } else {
                        v16
                    };
                    let dst: &mut [W] = &mut out[o - 8..o + 8];
                    let p = dst.as_mut_ptr() as *mut __m256i;
                    let v16 = if ASSIGN {
                        v16
                    } else {
                        // SAFETY: reads the sixteen u16 of `dst`.
                        _mm256_add_epi16(v16, unsafe { _mm256_loadu_si256(p) })
                    };
                    // SAFETY: writes the sixteen u16 of `dst`.
                    unsafe { _mm256_storeu_si256(p, v16) };
                }
            }
            for g in 0..4 {
                // Each group reads at most 8 words after the previous groups'
                // 24: `pos + 64 <= words.len()` covers the 16-byte load.
                let chunk: &[u8; 16] = (&words[pos..pos + 16]).try_into().expect("sixteen bytes");
                // SAFETY: reads the sixteen bytes of `chunk`.
                let next = unsafe { _mm_loadu_si128(chunk.as_ptr() as *const __m128i) };
                let next = _mm256_cvtepu16_epi32(next);
                // SAFETY: reads the eight u32 of one compaction row.
                let idx =
                    unsafe { _mm256_loadu_si256(COMPACTION[m[g]].as_ptr() as *const __m256i) };
                let next = _mm256_permutevar8x32_epi32(next, idx);
                let renormed = _mm256_or_si256(_mm256_slli_epi32::<16>(x[g]), next);
                x[g] = _mm256_blendv_epi8(x[g], renormed, need[g]);
                pos += 2 * m[g].count_ones() as usize;
            }
            i += LANES;
        }
        for (g, v) in x.iter().enumerate() {
            let lanes: &mut [u32; 8] = (&mut states[8 * g..8 * g + 8])
                .try_into()
                .expect("eight lanes");
            // SAFETY: writes the eight u32 of `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, *v) };
        }
        (i, pos, if FUSED { i } else { 0 })
    }
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
    fn simd_and_scalar_decoders_agree() {
        let mut x = 99u64;
        for (alphabet, n) in [(2048usize, 300_001usize), (256, 70_000), (7, 1000), (2, 33)] {
            let syms: Vec<u16> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = (x >> 40) as usize;
                    // Skewed: most symbols near the middle, a long tail.
                    ((alphabet / 2 + (r % 61)) ^ ((r & 3) * (r % 97 == 0) as usize)) as u16
                        % alphabet as u16
                })
                .collect();
            let mut body = Vec::new();
            encode(&syms, &counts_of(&syms, alphabet), &mut body);
            // Scattered contributions take the 64-bit table; a symbol shifted
            // into place (p = 2) takes the packed one where its rank fits.
            let scattered: Vec<u32> = (0..alphabet as u32)
                .map(|s| s.wrapping_mul(0x9e37_79b9))
                .collect();
            let shifted: Vec<u32> = (0..alphabet as u32).map(|s| 0x8003 + (s << 4)).collect();
            let packed = |lut: &[u32]| {
                let h = Header::parse(&body, lut, n).unwrap();
                Packed::build(&h.listed, lut, h.scale_bits).is_some()
            };
            assert!(!packed(&scattered));
            if simd::available() {
                assert!(packed(&shifted));
            }
            for (lut32, assign) in [(&scattered, true), (&scattered, false), (&shifted, true)] {
                let lut16: Vec<u32> = lut32.iter().map(|v| v & 0xffff).collect();
                let mut a = vec![7u32; n];
                let mut b = vec![7u32; n];
                decode_with(&body, lut32, n, 0, &mut a, assign, true, None).unwrap();
                decode_with(&body, lut32, n, 0, &mut b, assign, false, None).unwrap();
                assert_eq!(a, b);
                let mut a = vec![7u16; n];
                let mut b = vec![7u16; n];
                decode_with(&body, &lut16, n, 0, &mut a, assign, true, None).unwrap();
                decode_with(&body, &lut16, n, 0, &mut b, assign, false, None).unwrap();
                assert_eq!(a, b);
                if assign {
                    let want: Vec<u16> = syms.iter().map(|&s| lut16[s as usize] as u16).collect();
                    assert_eq!(a, want);
                }
            }
        }
    }

    #[test]
    fn a_plane_fused_into_the_rans_pass_adds_what_a_second_pass_would() {
        let mut x = 7u64;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        // bf16 at p = 2: a head of E and three digits (bits 4..15), plane 0 the
        // sign (bit 4 to bit 15) and four digits (bits 0..4); f16: a plane of
        // the sign and seven digits.
        let head: Vec<u32> = (0..2048u32).map(|s| s << 4).collect();
        let bf16_plane: Vec<u32> = (0..32u32).map(|v| (v & 15) | (v >> 4) << 15).collect();
        let f16_plane: Vec<u32> = (0..256u32).map(|v| (v & 127) | (v >> 7) << 15).collect();
        for n in [2 * SEGMENT_SYMBOLS + 77, SEGMENT_SYMBOLS, 4099, 200, 31] {
            let syms: Vec<u16> = (0..n).map(|_| (1000 + next(40) * next(3)) as u16).collect();
            let mut body = Vec::new();
            encode(&syms, &counts_of(&syms, 2048), &mut body);
            for (lut1, width) in [(&bf16_plane, 5u32), (&f16_plane, 8)] {
                let values: Vec<u16> = (0..n).map(|_| next(1 << width) as u16).collect();
                let mut packed = Vec::new();
                bitpack::encode(&values, width, &mut packed);
                let runs = bitpack::bit_runs(lut1, width).expect("bit runs");
                let ranges = [(0, n), (0, n.min(SEGMENT_SYMBOLS)), (SEGMENT_SYMBOLS, n)];
                for (first, last) in ranges.into_iter().filter(|(a, b)| a < b) {
                    let bytes =
                        &packed[first * width as usize / 8..bitpack::packed_len(last, width)];
                    let plane = Plane {
                        bytes,
                        width,
                        lut: lut1,
                        runs: &runs,
                    };
                    let mut got = vec![0u16; last - first];
                    let in_pass =
                        decode_with(&body, &head, n, first, &mut got, true, true, Some(&plane))
                            .unwrap();
                    let want: Vec<u16> = (first..last)
                        .map(|i| (head[syms[i] as usize] + lut1[values[i] as usize]) as u16)
                        .collect();
                    assert!(got == want, "n {n}, width {width}, range {first}..{last}");
                    // The SIMD decoder takes the plane along for all but the
                    // last blocks of each segment (where its words run short).
                    if simd::available() {
                        let segments = (last - first).div_ceil(SEGMENT_SYMBOLS);
                        let len = last - first;
                        assert!(in_pass + 8 * LANES * segments >= len, "{in_pass} of {len}");
                        assert!(len < 8 * LANES || in_pass > 0);
                    }
                }
            }
        }
    }

    #[test]
    fn packed_table_only_where_every_rank_fits() {
        let lut: Vec<u32> = (0..2048u32).map(|s| s << 4).collect();
        // Twelve bits of frequency and of offset leave eight for the rank:
        // symbols 100..=355 fit, 100..=356 do not.
        let fits = [(100usize, 3000usize), (101, 1000), (355, 96)];
        let wide = [(100usize, 3000usize), (101, 1000), (356, 96)];
        let p = Packed::build(&fits, &lut, 12).unwrap();
        assert_eq!((p.base, p.shift), (100 << 4, 4));
        assert_eq!(p.entry.len(), 4096);
        // Slot 4001 is symbol 355's second: rank 255, offset 1, frequency 96.
        assert_eq!(p.entry[4001], 95 | 1 << 12 | 255 << 24);
        assert!(Packed::build(&wide, &lut, 12).is_none());
        // Contributions 2^8 apart share a coarser step: ranks 0 and 1.
        let coarse = Packed::build(&[(100, 4000), (356, 96)], &lut, 12).unwrap();
        assert_eq!((coarse.shift, coarse.entry[4001] >> 24), (12, 1));
        // A lone symbol: frequency 2^12, stored as 2^12 - 1.
        let lone = Packed::build(&[(7, 4096)], &lut, 12).unwrap();
        assert_eq!(lone.entry[4095], 4095 | 4095 << 12);
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
