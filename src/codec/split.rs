//! A chunk's values -> its section symbol streams, each with its symbol
//! counts (what the section coder needs first), in one pass a section.
//!
//! For p = 2 a section's symbol is a pair of bit fields of the value
//! ([`Layout::bit_fields`]): a shift, a mask and the sign; the pass is
//! branch-free and counts into four interleaved histograms, so a run of
//! equal symbols does not wait on its own count. Odd primes take the
//! general digit split ([`Layout::split`]).
#![forbid(unsafe_code)]

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
    let kind = layout.kind;
    (0..layout.sections())
        .map(|s| {
            let alphabet = layout.alphabet(s) as usize;
            match (layout.bit_fields(s), kind) {
                (Some(f), FloatKind::F32) => {
                    fields(bytes, f, alphabet, |c: &[u8; 4]| u32::from_le_bytes(*c))
                }
                (Some(f), _) => fields(bytes, f, alphabet, |c: &[u8; 2]| {
                    u16::from_le_bytes(*c) as u32
                }),
                (None, _) => digits(layout, bytes, s, alphabet),
            }
        })
        .collect()
}

/// Histogram slots of the p = 2 pass: every p = 2 alphabet is a power of
/// two no larger (the layout caps alphabets at 4096), so a symbol masked
/// to it indexes without a bounds check.
const SLOTS: usize = 4096;

/// The p = 2 pass: `load` reads one value of `N` bytes.
#[inline(always)]
fn fields<const N: usize>(
    bytes: &[u8],
    f: BitFields,
    alphabet: usize,
    load: impl Fn(&[u8; N]) -> u32,
) -> Stream {
    debug_assert!(alphabet.is_power_of_two() && alphabet <= SLOTS);
    let n = bytes.len() / N;
    let mut syms = vec![0u16; n];
    let mut hist = vec![[0u32; 4]; SLOTS];
    let hist: &mut [[u32; 4]; SLOTS] = (&mut hist[..]).try_into().expect("SLOTS rows");
    let sym = |c: &[u8]| f.symbol(load(c.try_into().expect("N bytes")));
    let mut quads = syms.chunks_exact_mut(4);
    let mut groups = bytes.chunks_exact(4 * N);
    for (q, g) in (&mut quads).zip(&mut groups) {
        for (lane, (slot, c)) in q.iter_mut().zip(g.chunks_exact(N)).enumerate() {
            let s = sym(c);
            *slot = s;
            hist[s as usize % SLOTS][lane] += 1;
        }
    }
    for (slot, c) in quads
        .into_remainder()
        .iter_mut()
        .zip(groups.remainder().chunks_exact(N))
    {
        let s = sym(c);
        *slot = s;
        hist[s as usize % SLOTS][0] += 1;
    }
    let counts = hist[..alphabet]
        .iter()
        .map(|h| h.iter().map(|&c| c as u64).sum())
        .collect();
    Stream { syms, counts }
}

/// The general pass, for odd primes.
fn digits(layout: &Layout, bytes: &[u8], s: usize, alphabet: usize) -> Stream {
    let kind = layout.kind;
    let n = bytes.len() / kind.size();
    let mut all = vec![0u16; layout.sections()];
    let mut syms = Vec::with_capacity(n);
    let mut counts = vec![0u64; alphabet];
    for c in bytes.chunks_exact(kind.size()) {
        let bits = match kind {
            FloatKind::F32 => u32::from_le_bytes(c.try_into().expect("4 bytes")),
            FloatKind::BF16 | FloatKind::F16 => {
                u16::from_le_bytes(c.try_into().expect("2 bytes")) as u32
            }
        };
        layout.split(bits, &mut all);
        syms.push(all[s]);
        counts[all[s] as usize] += 1;
    }
    Stream { syms, counts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_hold_the_split_symbols_and_their_counts() {
        let mut x = 0x2545f4914f6cdd1du64;
        let bytes: Vec<u8> = (0..4 * 1003)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for kind in [FloatKind::F32, FloatKind::BF16, FloatKind::F16] {
            for (p, precision) in [(2, None), (2, Some(3)), (3, None), (5, Some(2))] {
                let layout = Layout::new(kind, p, precision, true).unwrap();
                let streams = split(&layout, &bytes);
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
