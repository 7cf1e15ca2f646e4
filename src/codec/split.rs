//! A chunk's values -> its section symbol streams, each with its symbol
//! counts (what the section coder needs first), in one pass a section.
//!
//! For p = 2 a section's symbol is a pair of bit fields of the value
//! ([`Layout::bit_fields`]): a shift, a mask and the sign. One branch-free
//! pass reads each value once, gives every section its symbol and counts it
//! into four interleaved histograms, so a run of equal symbols does not
//! wait on its own count. Odd primes take the general digit split
//! ([`Layout::split`]).
#![deny(unsafe_code)]

use super::layout::{BitFields, FloatKind, Layout};

/// One section's symbols and how often each occurs.
pub struct Stream {
    /// The symbols, one per value.
    pub syms: Vec<u16>,
    /// `counts[s]`: occurrences of symbol `s` (length: the section's alphabet).
    pub counts: Vec<u64>,
}

/// Splits the little-endian values in `bytes` (a whole number of values)
/// into one stream per section of `layout`.
pub fn split(layout: &Layout, bytes: &[u8]) -> Vec<Stream> {
    let mut streams = Vec::new();
    split_into(layout, bytes, &mut streams);
    streams
}

/// [`split`] into `streams`, reusing their buffers (a coder calls it once a
/// chunk: the buffers are not allocated and zeroed again each time).
pub fn split_into(layout: &Layout, bytes: &[u8], streams: &mut Vec<Stream>) {
    let kind = layout.kind;
    let n = bytes.len() / kind.size();
    let sections = layout.sections();
    streams.resize_with(sections, || Stream {
        syms: Vec::new(),
        counts: Vec::new(),
    });
    for (s, st) in streams.iter_mut().enumerate() {
        st.syms.resize(n, 0);
        st.counts.clear();
        st.counts.resize(layout.alphabet(s) as usize, 0);
    }
    let fields: Option<Vec<BitFields>> = (0..sections).map(|s| layout.bit_fields(s)).collect();
    #[cfg(target_arch = "x86_64")]
    if super::simd_available() {
        // SAFETY: `simd_available` found AVX2 on this CPU.
        #[allow(unsafe_code)]
        unsafe {
            passes_avx2(layout, fields.as_deref(), bytes, streams)
        };
        return;
    }
    passes(layout, fields.as_deref(), bytes, streams)
}

/// [`passes`] compiled for AVX2: its inlined passes become vector code of
/// sixteen 16-bit values, not eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn passes_avx2(
    layout: &Layout,
    fields: Option<&[BitFields]>,
    bytes: &[u8],
    streams: &mut [Stream],
) {
    passes(layout, fields, bytes, streams)
}

/// The pass of `layout`, given its p = 2 bit fields where it has them.
#[inline(always)]
fn passes(layout: &Layout, fields: Option<&[BitFields]>, bytes: &[u8], streams: &mut [Stream]) {
    let kind = layout.kind;
    // The exact layouts of the three dtypes with their fields as constants
    // (shifts by an immediate, masks folded); any other p = 2 layout with
    // its fields read at run time.
    match (fields, kind) {
        (Some(f), FloatKind::BF16) if f == BF16_EXACT => {
            pass16::<3>(bytes, streams, |v| fixed(&BF16_EXACT, v))
        }
        (Some(f), FloatKind::F16) if f == F16_EXACT => {
            pass16::<3>(bytes, streams, |v| fixed(&F16_EXACT, v))
        }
        (Some(f), FloatKind::F32) if f == F32_EXACT => {
            pass::<4, 4>(bytes, streams, load32, |v| fixed(&F32_EXACT, v))
        }
        (Some(&[a, b]), FloatKind::F32) => {
            pass::<4, 2>(bytes, streams, load32, |v| fixed(&[a, b], v))
        }
        (Some(&[a, b, c]), FloatKind::F32) => {
            pass::<4, 3>(bytes, streams, load32, |v| fixed(&[a, b, c], v))
        }
        (Some(&[a, b, c, d]), FloatKind::F32) => {
            pass::<4, 4>(bytes, streams, load32, |v| fixed(&[a, b, c, d], v))
        }
        (Some(&[a, b]), _) => pass16::<2>(bytes, streams, |v| fixed(&[a, b], v)),
        (Some(&[a, b, c]), _) => pass16::<3>(bytes, streams, |v| fixed(&[a, b, c], v)),
        _ => digits(layout, bytes, streams),
    }
}

/// A value a section's symbol is cut from: a 32-bit one, or a 16-bit one in
/// 16-bit arithmetic (twice the values a vector register holds).
trait Bits: Copy {
    fn symbol(self, f: &BitFields) -> u16;
}

impl Bits for u32 {
    #[inline(always)]
    fn symbol(self, f: &BitFields) -> u16 {
        f.symbol(self)
    }
}

impl Bits for u16 {
    #[inline(always)]
    fn symbol(self, f: &BitFields) -> u16 {
        f.symbol16(self)
    }
}

/// The symbols of `v` in every section.
#[inline(always)]
fn fixed<V: Bits, const S: usize>(fields: &[BitFields; S], v: V) -> [u16; S] {
    // A loop, not `array::from_fn`, whose closure the compiler may leave
    // out of line: then the fields are read from memory, not folded.
    let mut out = [0u16; S];
    for (o, f) in out.iter_mut().zip(fields) {
        *o = v.symbol(f);
    }
    out
}

/// Section fields of a `kind` value: `plane0` for plane 0 (the sign and
/// the NaN flag ride above its `digits`).
const fn field(kind: FloatKind, shift: u32, mask: u32, plane0: bool, digits: u32) -> BitFields {
    let f = kind.frac_bits();
    let exp = ((1 << kind.exp_bits()) - 1) << f;
    BitFields {
        shift,
        mask,
        sign_shift: kind.bits() - 1,
        sign: plane0 as u32,
        digits,
        nan_mask: exp | 1 << (f - 1),
        nan_exp: exp,
        frac_mask: (1 << f) - 1,
        nan_flag: plane0 as u32,
    }
}

const BF16: FloatKind = FloatKind::BF16;
const F16: FloatKind = FloatKind::F16;
const F32: FloatKind = FloatKind::F32;

/// bf16, p = 2, every digit: the exponent and 3 digits; the sign and the
/// NaN flag; 4 digits.
const BF16_EXACT: [BitFields; 3] = [
    field(BF16, 4, 0x7ff, false, 3),
    field(BF16, 4, 0, true, 0),
    field(BF16, 0, 0xf, false, 4),
];
/// f16, p = 2, every digit: the exponent and 3 digits; the sign and the
/// NaN flag; 7 digits.
const F16_EXACT: [BitFields; 3] = [
    field(F16, 7, 0xff, false, 3),
    field(F16, 7, 0, true, 0),
    field(F16, 0, 0x7f, false, 7),
];
/// f32, p = 2, every digit: the exponent and 3 digits; the sign, the NaN
/// flag and 6 digits; 8; 6.
const F32_EXACT: [BitFields; 4] = [
    field(F32, 20, 0x7ff, false, 3),
    field(F32, 14, 0x3f, true, 6),
    field(F32, 6, 0xff, false, 8),
    field(F32, 0, 0x3f, false, 6),
];

#[inline(always)]
fn load32(c: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*c)
}

#[inline(always)]
fn load16(c: &[u8; 2]) -> u32 {
    u16::from_le_bytes(*c) as u32
}

/// Histogram slots of the p = 2 pass: every p = 2 alphabet is a power of
/// two no larger (the layout caps alphabets at 4096), so a symbol masked
/// to it indexes without a bounds check.
const SLOTS: usize = 4096;

/// The p = 2 pass over values of `N` bytes into `S` sections: a loop a
/// section gives each value its symbol in that section (with the fields
/// folded to constants and one store in the loop, it becomes vector code),
/// then each section's symbols are counted. One loop storing every
/// section's symbol and counting it kept reloading the output slices (the
/// compiler could not tell them from the stores) and checking their bounds.
#[inline(always)]
fn pass<const N: usize, const S: usize>(
    bytes: &[u8],
    streams: &mut [Stream],
    load: fn(&[u8; N]) -> u32,
    symbols: impl Fn(u32) -> [u16; S],
) {
    let n = bytes.len() / N;
    sections::<N, S, u32>(bytes, streams, load, symbols);
    for st in streams.iter_mut().take(S) {
        count(&st.syms[..n], &mut st.counts);
    }
}

/// Gives each of the first `S` streams the symbols of its section, one loop
/// a section, written out a section at a time: with the section a constant,
/// only its field's arithmetic is left in the loop, and with one store in
/// it the loop becomes vector code.
#[inline(always)]
fn sections<const N: usize, const S: usize, V>(
    bytes: &[u8],
    streams: &mut [Stream],
    load: impl Fn(&[u8; N]) -> V,
    symbols: impl Fn(V) -> [u16; S],
) {
    const { assert!(S <= 4, "at most four sections") };
    let n = bytes.len() / N;
    macro_rules! section {
        ($s:literal) => {
            if $s < S {
                let st = &mut streams[$s];
                for (o, c) in st.syms[..n].iter_mut().zip(bytes.chunks_exact(N)) {
                    *o = symbols(load(c.try_into().expect("N bytes")))[$s];
                }
            }
        };
    }
    section!(0);
    section!(1);
    section!(2);
    section!(3);
}

/// Counts `syms` into `counts` (one slot a symbol, every symbol below
/// `counts.len()`, at most [`SLOTS`]); see [`tally`].
#[inline(always)]
pub fn count(syms: &[u16], counts: &mut [u64]) {
    counts.fill(0);
    let alphabet = counts.len();
    tally(syms, alphabet, |s, c| counts[s] = c);
}

thread_local! {
    /// Each thread's four interleaved histograms of [`tally`], all zero
    /// between calls.
    static HISTOGRAM: std::cell::RefCell<Vec<[u32; 4]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `each(symbol, occurrences)` for every symbol present in `syms`
/// (all below `alphabet`, at most [`SLOTS`]), in symbol order. The counts
/// go into four interleaved histograms, so a run of equal symbols does not
/// wait on its own count; the histograms are the thread's, kept and left
/// zero, so a short stream costs no allocation and no pass over a count
/// array of its own (a run of small tensors tallies every tensor's
/// symbols, see `chunk::encode_whole_or_parts`).
#[inline(always)]
pub fn tally(syms: &[u16], alphabet: usize, mut each: impl FnMut(usize, u64)) {
    if alphabet == 2 {
        // A plane of one bit (a sign): the ones are the symbols' sum, which
        // is vector code where counting is a load and a store a symbol.
        let ones: u64 = syms.iter().map(|&s| (s & 1) as u64).sum();
        let zeros = syms.len() as u64 - ones;
        for (s, c) in [(0, zeros), (1, ones)] {
            if c > 0 {
                each(s, c);
            }
        }
        return;
    }
    let slots = alphabet.next_power_of_two().min(SLOTS);
    HISTOGRAM.with_borrow_mut(|hist| {
        if hist.len() < SLOTS {
            hist.resize(SLOTS, [0; 4]);
        }
        let hist = &mut hist[..slots];
        let mut quads = syms.chunks_exact(4);
        for q in &mut quads {
            for (lane, &sym) in q.iter().enumerate() {
                hist[sym as usize & (slots - 1)][lane] += 1;
            }
        }
        for &sym in quads.remainder() {
            hist[sym as usize & (slots - 1)][0] += 1;
        }
        // Every slot is read and cleared, those at or past `alphabet` too.
        for (s, lanes) in hist.iter_mut().enumerate() {
            let c: u64 = lanes.iter().map(|&c| c as u64).sum();
            if c > 0 {
                *lanes = [0; 4];
                if s < alphabet {
                    each(s, c);
                }
            }
        }
    });
}

/// Values of a chunk from which a 16-bit pass counts whole values rather
/// than each section's symbols: below it, clearing the value histogram
/// costs more than the counts it saves.
const VALUE_COUNTS_FROM: usize = 1 << 14;

/// [`pass`] for 16-bit values: each value's symbols are stored, but the
/// value itself is counted once (one histogram, not one a section), and the
/// sections' counts are summed from the values seen, each split once.
#[inline(always)]
fn pass16<const S: usize>(
    bytes: &[u8],
    streams: &mut [Stream],
    symbols: impl Fn(u16) -> [u16; S] + Copy,
) {
    let n = bytes.len() / 2;
    if n < VALUE_COUNTS_FROM {
        return pass::<2, S>(bytes, streams, load16, |v| symbols(v as u16));
    }
    thread_local! {
        // Each coding thread's value histogram, left all zero after use.
        static VALUES: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // Taken out of the thread's slot, not borrowed in a closure: the loops
    // stay in this (inlined) function, and in its AVX2 copy.
    let mut held = VALUES.take();
    held.resize(1 << 16, 0);
    let counts: &mut [u32; 1 << 16] = (&mut held[..]).try_into().expect("65536 counts");
    for c in bytes.chunks_exact(2) {
        counts[u16::from_le_bytes(c.try_into().expect("2 bytes")) as usize] += 1;
    }
    // The closure itself, not a reference to it: a call through `&F` is one
    // more layer for the inliner, which left it out of line in one build
    // (the split 2.5 times slower).
    sections::<2, S, u16>(bytes, streams, |c| u16::from_le_bytes(*c), symbols);
    // Most of the 65536 values never occur: blocks of 16 counts that are
    // all zero are skipped with one vector test.
    for (b, block) in counts.chunks_exact_mut(16).enumerate() {
        if block.iter().fold(0, |a, &c| a | c) == 0 {
            continue;
        }
        for (k, count) in block.iter_mut().enumerate() {
            if *count != 0 {
                let syms = symbols((16 * b + k) as u16);
                for (st, &sym) in streams.iter_mut().zip(&syms) {
                    st.counts[sym as usize] += *count as u64;
                }
                *count = 0;
            }
        }
    }
    VALUES.set(held);
}

/// The general pass, for odd primes.
fn digits(layout: &Layout, bytes: &[u8], streams: &mut [Stream]) {
    let kind = layout.kind;
    let mut all = vec![0u16; layout.sections()];
    for (i, c) in bytes.chunks_exact(kind.size()).enumerate() {
        let bits = match kind {
            FloatKind::F32 => u32::from_le_bytes(c.try_into().expect("4 bytes")),
            FloatKind::BF16 | FloatKind::F16 => {
                u16::from_le_bytes(c.try_into().expect("2 bytes")) as u32
            }
        };
        layout.split(bits, &mut all);
        for (st, &sym) in streams.iter_mut().zip(&all) {
            st.syms[i] = sym;
            st.counts[sym as usize] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_each_stream_afresh_one_after_another() {
        // Streams of different alphabets and lengths (runs, a remainder
        // past the quads, an empty one) through the thread's one histogram:
        // a count left behind by one would show in the next.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m) as u16
        };
        for (alphabet, n) in [
            (4096, 10_007),
            (2, 5),
            (2, 10_000),
            (2048, 3),
            (16, 0),
            (4096, 64),
            (3, 999),
        ] {
            let syms: Vec<u16> = (0..n)
                .map(|i| if i % 7 < 3 { 1 } else { next(alphabet as u64) })
                .collect();
            let mut want = vec![0u64; alphabet];
            for &s in &syms {
                want[s as usize] += 1;
            }
            let mut got = Vec::new();
            tally(&syms, alphabet, |s, c| got.push((s, c)));
            let present: Vec<(usize, u64)> = want
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(s, &c)| (s, c))
                .collect();
            assert_eq!(got, present, "alphabet {alphabet}, {n} symbols");
            let mut counts = vec![7u64; alphabet];
            count(&syms, &mut counts);
            assert_eq!(counts, want, "alphabet {alphabet}, {n} symbols");
        }
    }

    #[test]
    fn the_fixed_fields_are_the_exact_layouts() {
        for (kind, want) in [
            (FloatKind::BF16, &BF16_EXACT[..]),
            (FloatKind::F16, &F16_EXACT[..]),
            (FloatKind::F32, &F32_EXACT[..]),
        ] {
            let l = Layout::new(kind, 2, None, false).unwrap();
            let got: Vec<BitFields> = (0..l.sections())
                .map(|s| l.bit_fields(s).unwrap())
                .collect();
            assert_eq!(got, want, "{kind:?}");
        }
    }

    #[test]
    fn sixteen_bit_symbols_are_the_32_bit_ones() {
        for kind in [FloatKind::BF16, FloatKind::F16] {
            for precision in [None, Some(1), Some(2), Some(4), Some(6)] {
                let l = Layout::new(kind, 2, precision, true).unwrap();
                for s in 0..l.sections() {
                    let f = l.bit_fields(s).unwrap();
                    for v in 0..=u16::MAX {
                        assert_eq!(
                            f.symbol16(v),
                            f.symbol(v as u32),
                            "{kind:?} {precision:?} section {s} value {v:#06x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn streams_hold_the_split_symbols_and_their_counts() {
        let mut x = 0x2545f4914f6cdd1du64;
        // 4012 bytes, and 80,044 (past VALUE_COUNTS_FROM for 16-bit values).
        for len in [4 * 1003, 4 * 20011] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            check_streams(&bytes);
        }
    }

    fn check_streams(bytes: &[u8]) {
        for kind in [FloatKind::F32, FloatKind::BF16, FloatKind::F16] {
            for (p, precision) in [(2, None), (2, Some(3)), (3, None), (5, Some(2))] {
                let layout = Layout::new(kind, p, precision, true).unwrap();
                let streams = split(&layout, bytes);
                // A reused set of streams (left by another layout) gives the same.
                let mut reused = split(
                    &Layout::new(FloatKind::F32, 2, None, false).unwrap(),
                    &bytes[..40],
                );
                split_into(&layout, bytes, &mut reused);
                for (a, b) in streams.iter().zip(&reused) {
                    assert!(
                        a.syms == b.syms && a.counts == b.counts,
                        "{kind:?} p={p} reused"
                    );
                }
                let n = bytes.len() / kind.size();
                let mut syms = vec![0u16; layout.sections()];
                for (i, c) in bytes.chunks_exact(kind.size()).enumerate() {
                    let mut word = [0u8; 4];
                    word[..c.len()].copy_from_slice(c);
                    layout.split(u32::from_le_bytes(word), &mut syms);
                    for (s, st) in streams.iter().enumerate() {
                        assert_eq!(st.syms[i], syms[s], "{kind:?} p={p} value {i} section {s}");
                    }
                }
                for (s, st) in streams.iter().enumerate() {
                    assert_eq!(st.syms.len(), n);
                    assert_eq!(st.counts.len(), layout.alphabet(s) as usize);
                    let mut want = vec![0u64; st.counts.len()];
                    st.syms.iter().for_each(|&v| want[v as usize] += 1);
                    assert_eq!(st.counts, want, "{kind:?} p={p} section {s}");
                }
            }
        }
    }
}
