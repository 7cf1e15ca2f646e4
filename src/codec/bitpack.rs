//! Fixed-width bit packing, LSB first: value `i` occupies bits
//! `[i * width, (i + 1) * width)` of the little-endian byte stream; the last
//! byte is zero-padded. Eight values always fill exactly `width` bytes, which
//! the decoder exploits: it reads one group of eight at a time.

use super::rans::Word;
use crate::error::{Error, Result};

/// Widest packing supported (alphabets up to 4096).
pub const MAX_WIDTH: u32 = 12;

/// Bytes `n` values of `width` bits take.
pub fn packed_len(n: usize, width: u32) -> usize {
    (n * width as usize).div_ceil(8)
}

/// Appends `syms` packed at `width` bits (`1..=MAX_WIDTH`).
pub fn encode(syms: &[u16], width: u32, out: &mut Vec<u8>) {
    match width {
        1 => pack1(syms, out),
        4 => pack4(syms, out),
        2 => pack::<2>(syms, out),
        3 => pack::<3>(syms, out),
        5 => pack::<5>(syms, out),
        6 => pack::<6>(syms, out),
        7 => pack::<7>(syms, out),
        8 => pack::<8>(syms, out),
        9 => pack::<9>(syms, out),
        10 => pack::<10>(syms, out),
        11 => pack::<11>(syms, out),
        12 => pack::<12>(syms, out),
        _ => panic!("bit width {width} outside 1..={MAX_WIDTH}"),
    }
}

/// [`encode`] at 1 bit (a sign plane): a byte a group of eight, each
/// value's bit at its place, in a loop the compiler turns into vector code
/// (the general packing assembles a register a group).
fn pack1(syms: &[u16], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packed_len(syms.len(), 1), 0);
    let buf = &mut out[start..];
    // Sixteen values a step with SSE2 (every x86-64 has it): each value's
    // bit moved to its lane's sign, the lanes narrowed, the signs gathered.
    #[cfg(target_arch = "x86_64")]
    let (buf, syms) = {
        use std::arch::x86_64::*;
        let whole = syms.len() / 16;
        for (d, v) in buf.chunks_exact_mut(2).zip(syms.chunks_exact(16)) {
            let p = v.as_ptr() as *const __m128i;
            // SAFETY: `v` holds sixteen u16, the 32 bytes read; SSE2 is part
            // of the x86-64 baseline, so the instructions exist.
            let bits = unsafe {
                let (a, b) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                let signs = _mm_packs_epi16(_mm_slli_epi16(a, 15), _mm_slli_epi16(b, 15));
                _mm_movemask_epi8(signs) as u16
            };
            d.copy_from_slice(&bits.to_le_bytes());
        }
        (&mut buf[2 * whole..], &syms[16 * whole..])
    };
    let eights = syms.chunks_exact(8);
    let rest = eights.remainder();
    for (d, e) in buf.iter_mut().zip(eights) {
        let e: &[u16; 8] = e.try_into().expect("eight values");
        let mut b = 0u16;
        for (j, &s) in e.iter().enumerate() {
            b |= (s & 1) << j;
        }
        *d = b as u8;
    }
    if !rest.is_empty() {
        let mut b = 0u16;
        for (j, &s) in rest.iter().enumerate() {
            b |= (s & 1) << j;
        }
        buf[syms.len() / 8] = b as u8;
    }
}

/// [`encode`] at 4 bits (bf16's low digits): a byte a pair of values, the
/// first in the low nibble, in a loop that becomes vector code.
fn pack4(syms: &[u16], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packed_len(syms.len(), 4), 0);
    let buf = &mut out[start..];
    let pairs = syms.chunks_exact(2);
    let rest = pairs.remainder();
    for (d, p) in buf.iter_mut().zip(pairs) {
        *d = ((p[0] & 0xf) | (p[1] & 0xf) << 4) as u8;
    }
    if let [last] = rest {
        buf[syms.len() / 2] = (last & 0xf) as u8;
    }
}

/// [`encode`] at `W` bits: eight values fill `W` bytes, assembled in a
/// register and stored at once.
fn pack<const W: usize>(syms: &[u16], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packed_len(syms.len(), W as u32), 0);
    let buf = &mut out[start..];
    let group = |eight: &[u16]| {
        let mut bytes = [0u8; 16];
        if W <= 8 {
            // Eight values fit a u64: cheaper shifts than a u128's.
            let mut acc: u64 = 0;
            for (j, &s) in eight.iter().enumerate() {
                acc |= ((s as u64) & ((1 << W) - 1)) << (j * W);
            }
            bytes[..8].copy_from_slice(&acc.to_le_bytes());
        } else {
            let mut acc: u128 = 0;
            for (j, &s) in eight.iter().enumerate() {
                acc |= ((s as u128) & ((1 << W) - 1)) << (j * W);
            }
            bytes = acc.to_le_bytes();
        }
        bytes
    };
    let (whole, tail) = buf.split_at_mut(syms.len() / 8 * W);
    let src = syms.chunks_exact(8);
    let rest = src.remainder();
    for (d, eight) in whole.chunks_exact_mut(W).zip(src) {
        d.copy_from_slice(&group(eight)[..W]);
    }
    let n = tail.len();
    tail.copy_from_slice(&group(rest)[..n]);
}

/// Decodes `out.len()` values of `width` bits from `body`:
/// `out[i] = lut[v]` when `assign`, else `out[i] += lut[v]`.
pub fn decode<W: Word>(
    body: &[u8],
    width: u32,
    lut: &[u32],
    out: &mut [W],
    assign: bool,
) -> Result<()> {
    if width == 0 || width > MAX_WIDTH || (1usize << width) > lut.len().next_power_of_two() {
        return Err(Error::Decode(format!(
            "raw section width {width} does not match an alphabet of {}",
            lut.len()
        )));
    }
    let need = packed_len(out.len(), width);
    if body.len() != need {
        return Err(Error::Decode(format!(
            "raw section holds {} bytes, {} values of {width} bits need {need}",
            body.len(),
            out.len()
        )));
    }
    // The p = 2 planes map value bits to output bits in runs: shift them in
    // SIMD registers instead of looking each value up.
    #[cfg(target_arch = "x86_64")]
    let (out, body) = match lut.get(..1 << width).and_then(|l| bit_runs(l, width)) {
        Some(runs) if width <= 8 && simd::available() => {
            let done = simd::unpack_runs(body, width, &runs, out, assign);
            let (_, rest) = out.split_at_mut(done);
            (rest, &body[done * width as usize / 8..])
        }
        _ => (out, body),
    };
    // A value past the alphabet (possible only when the alphabet is not a
    // power of two) must not index past the table: widen it with zeros and
    // check the largest value seen once at the end.
    let mut wide = [0u32; 1 << MAX_WIDTH];
    wide[..lut.len()].copy_from_slice(lut);
    let wide = &wide[..1 << width];
    let largest = match width {
        1 => unpack::<W, 1>(body, wide, out, assign),
        2 => unpack::<W, 2>(body, wide, out, assign),
        3 => unpack::<W, 3>(body, wide, out, assign),
        4 => unpack::<W, 4>(body, wide, out, assign),
        5 => unpack::<W, 5>(body, wide, out, assign),
        6 => unpack::<W, 6>(body, wide, out, assign),
        7 => unpack::<W, 7>(body, wide, out, assign),
        8 => unpack::<W, 8>(body, wide, out, assign),
        9 => unpack::<W, 9>(body, wide, out, assign),
        10 => unpack::<W, 10>(body, wide, out, assign),
        11 => unpack::<W, 11>(body, wide, out, assign),
        _ => unpack::<W, 12>(body, wide, out, assign),
    };
    if largest as usize >= lut.len() {
        return Err(Error::Decode(format!(
            "raw section holds the value {largest}, outside the alphabet of {}",
            lut.len()
        )));
    }
    Ok(())
}

/// For a table that moves each value bit to one output bit, the runs of
/// value bits that move together: `(source mask, left shift)`, at most four.
/// `None` when the table is not of that form (odd primes) or its alphabet
/// is not `2^width`.
pub fn bit_runs(lut: &[u32], width: u32) -> Option<Vec<(u32, i32)>> {
    if lut.len() != 1 << width {
        return None;
    }
    let mut runs: Vec<(u32, i32)> = Vec::new();
    for i in 0..width {
        let t = lut[1 << i];
        if t == 0 {
            // A bit that adds nothing (the NaN flag of a full-precision decode).
            continue;
        }
        if t.count_ones() != 1 {
            return None;
        }
        let shift = t.trailing_zeros() as i32 - i as i32;
        match runs.last_mut() {
            Some((mask, s)) if *s == shift && (*mask >> (i - 1)) & 1 == 1 => *mask |= 1 << i,
            _ => runs.push((1 << i, shift)),
        }
    }
    let apply = |v: u32| {
        runs.iter().fold(0u32, |acc, &(m, s)| {
            acc | if s >= 0 { (v & m) << s } else { (v & m) >> -s }
        })
    };
    if runs.len() > 4 || lut[0] != 0 || (0..lut.len() as u32).any(|v| lut[v as usize] != apply(v)) {
        return None;
    }
    Some(runs)
}

/// The AVX2 + BMI2 unpacker of bit-run planes: sixteen values per step.
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    use super::super::rans::Word;
    use std::arch::x86_64::*;

    pub(crate) use crate::codec::simd_available as available;

    /// Unpacks whole groups of sixteen values; returns how many were done.
    pub fn unpack_runs<W: Word>(
        body: &[u8],
        width: u32,
        runs: &[(u32, i32)],
        out: &mut [W],
        assign: bool,
    ) -> usize {
        debug_assert!(available() && (1..=8).contains(&width));
        // SAFETY: `available()` checked AVX2 and BMI2.
        unsafe {
            match (assign, std::mem::size_of::<W>() == 4) {
                (true, false) => runs_avx2::<W, true, false>(body, width, runs, out),
                (false, false) => runs_avx2::<W, false, false>(body, width, runs, out),
                (true, true) => runs_avx2::<W, true, true>(body, width, runs, out),
                (false, true) => runs_avx2::<W, false, true>(body, width, runs, out),
            }
        }
    }

    /// Bit runs as AVX2 operands: each run's source mask and its shift left
    /// and right (one of them zero), for 16- or 32-bit lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Runs {
        masks: [__m256i; 4],
        left: [__m128i; 4],
        right: [__m128i; 4],
        n: usize,
    }

    impl Runs {
        /// At most four runs (what `bit_runs` gives).
        #[target_feature(enable = "avx2")]
        pub(crate) fn new(runs: &[(u32, i32)], wide: bool) -> Runs {
            let mut r = Runs {
                masks: [_mm256_setzero_si256(); 4],
                left: [_mm_setzero_si128(); 4],
                right: [_mm_setzero_si128(); 4],
                n: runs.len().min(4),
            };
            for (k, &(m, s)) in runs.iter().take(4).enumerate() {
                r.masks[k] = if wide {
                    _mm256_set1_epi32(m as i32)
                } else {
                    _mm256_set1_epi16(m as i16)
                };
                r.left[k] = _mm_cvtsi32_si128(s.max(0));
                r.right[k] = _mm_cvtsi32_si128((-s).max(0));
            }
            r
        }

        /// The contributions of sixteen values in 16-bit lanes.
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(crate) fn apply16(&self, v: __m256i) -> __m256i {
            let mut acc = _mm256_setzero_si256();
            for k in 0..self.n {
                let part = _mm256_and_si256(v, self.masks[k]);
                let part = _mm256_srl_epi16(_mm256_sll_epi16(part, self.left[k]), self.right[k]);
                acc = _mm256_or_si256(acc, part);
            }
            acc
        }

        /// The contributions of eight values in 32-bit lanes.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn apply32(&self, v: __m256i) -> __m256i {
            let mut acc = _mm256_setzero_si256();
            for k in 0..self.n {
                let part = _mm256_and_si256(v, self.masks[k]);
                let part = _mm256_srl_epi32(_mm256_sll_epi32(part, self.left[k]), self.right[k]);
                acc = _mm256_or_si256(acc, part);
            }
            acc
        }
    }

    /// The sixteen `w`-bit values (`w <= 8`) packed at `body[at..]`, one a
    /// byte. Reads whole 8-byte words: `body` needs `at + w + 8` bytes.
    #[target_feature(enable = "avx2,bmi2")]
    #[inline]
    pub(crate) fn sixteen(body: &[u8], at: usize, w: usize) -> __m128i {
        // One value per byte: the low `w` bits of each byte.
        let spread = u64::from_le_bytes([((1u16 << w) - 1) as u8; 8]);
        let load =
            |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("eight bytes"));
        let a = _pdep_u64(load(at), spread);
        let b = _pdep_u64(load(at + w), spread);
        _mm_set_epi64x(b as i64, a as i64)
    }

    #[target_feature(enable = "avx2,bmi2")]
    fn runs_avx2<W: Word, const ASSIGN: bool, const WIDE: bool>(
        body: &[u8],
        width: u32,
        runs: &[(u32, i32)],
        out: &mut [W],
    ) -> usize {
        let w = width as usize;
        let runs = Runs::new(runs, WIDE);
        // Whole 8-byte loads (pdep uses only their low 8 * width bits), so the
        // last group whose second load would pass the end is left to the caller.
        let groups = (out.len() / 16).min(body.len().saturating_sub(8 - w) / (2 * w));
        for g in 0..groups {
            let v8 = sixteen(body, g * 2 * w, w);
            let dst: &mut [W] = &mut out[16 * g..16 * g + 16];
            if WIDE {
                let lo = runs.apply32(_mm256_cvtepu8_epi32(v8));
                let hi = runs.apply32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v8, v8)));
                let p = dst.as_mut_ptr() as *mut __m256i;
                let (lo, hi) = if ASSIGN {
                    (lo, hi)
                } else {
                    // SAFETY: reads the sixteen u32 of `dst`, in two halves.
                    unsafe {
                        (
                            _mm256_add_epi32(lo, _mm256_loadu_si256(p)),
                            _mm256_add_epi32(hi, _mm256_loadu_si256(p.add(1))),
                        )
                    }
                };
                // SAFETY: writes the sixteen u32 of `dst`, in two halves.
                unsafe {
                    _mm256_storeu_si256(p, lo);
                    _mm256_storeu_si256(p.add(1), hi);
                }
            } else {
                let v = runs.apply16(_mm256_cvtepu8_epi16(v8));
                let p = dst.as_mut_ptr() as *mut __m256i;
                let v = if ASSIGN {
                    v
                } else {
                    // SAFETY: reads the sixteen u16 of `dst`.
                    _mm256_add_epi16(v, unsafe { _mm256_loadu_si256(p) })
                };
                // SAFETY: writes the sixteen u16 of `dst`.
                unsafe { _mm256_storeu_si256(p, v) };
            }
        }
        16 * groups
    }
}

/// Unpacks groups of eight `WIDTH`-bit values (`WIDTH` bytes each); returns the largest value.
fn unpack<W: Word, const WIDTH: usize>(
    body: &[u8],
    lut: &[u32],
    out: &mut [W],
    assign: bool,
) -> u32 {
    if assign {
        unpack_with::<W, WIDTH, true>(body, lut, out)
    } else {
        unpack_with::<W, WIDTH, false>(body, lut, out)
    }
}

#[inline(always)]
fn unpack_with<W: Word, const WIDTH: usize, const ASSIGN: bool>(
    body: &[u8],
    lut: &[u32],
    out: &mut [W],
) -> u32 {
    let mask = (1u64 << WIDTH) - 1;
    let lut = &lut[..1 << WIDTH];
    let mut largest = 0u64;
    let groups = out.len() / 8;
    let (head, tail) = out.split_at_mut(groups * 8);
    // Eight values of up to 8 bits fill a u64; wider ones a u128.
    let load = |bytes: &[u8]| -> u128 {
        if WIDTH <= 8 {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(word) as u128
        } else {
            let mut word = [0u8; 16];
            word[..bytes.len()].copy_from_slice(bytes);
            u128::from_le_bytes(word)
        }
    };
    let mut put = |block: &mut [W], packed: u128| {
        for (j, o) in block.iter_mut().enumerate() {
            let v = if WIDTH <= 8 {
                ((packed as u64) >> (j * WIDTH)) & mask
            } else {
                ((packed >> (j * WIDTH)) as u64) & mask
            };
            largest = largest.max(v);
            let c = lut[v as usize];
            *o = if ASSIGN { W::from_u32(c) } else { o.add(c) };
        }
    };
    for (block, bytes) in head.chunks_exact_mut(8).zip(body.chunks_exact(WIDTH)) {
        put(block, load(bytes));
    }
    if !tail.is_empty() {
        put(tail, load(&body[groups * WIDTH..]));
    }
    largest as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_lsb_first_at_every_width_and_tail() {
        let mut x = 0x853c49e6748fea9bu64;
        for width in 1..=MAX_WIDTH {
            for n in 0..40 {
                let syms: Vec<u16> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x as u16) & ((1 << width) - 1)
                    })
                    .collect();
                let mut want = vec![0u8; packed_len(n, width)];
                for (i, &s) in syms.iter().enumerate() {
                    for b in 0..width as usize {
                        let bit = i * width as usize + b;
                        want[bit / 8] |= (((s >> b) & 1) as u8) << (bit % 8);
                    }
                }
                let mut got = vec![7u8];
                encode(&syms, width, &mut got);
                assert_eq!(got[0], 7, "width {width}, {n} values: the prefix is kept");
                assert_eq!(&got[1..], &want[..], "width {width}, {n} values");
            }
        }
    }

    #[test]
    fn round_trips_every_width_and_tail() {
        for width in 1..=MAX_WIDTH {
            let alphabet = 1usize << width;
            let lut: Vec<u32> = (0..alphabet as u32).map(|v| v ^ 0x5a5a).collect();
            for n in [0usize, 1, 7, 8, 9, 1000] {
                let syms: Vec<u16> = (0..n)
                    .map(|i| ((i * 2654435761) % alphabet) as u16)
                    .collect();
                let mut body = Vec::new();
                encode(&syms, width, &mut body);
                assert_eq!(body.len(), packed_len(n, width));
                let mut out = vec![0u32; n];
                decode(&body, width, &lut, &mut out, true).unwrap();
                let want: Vec<u32> = syms.iter().map(|&s| lut[s as usize]).collect();
                assert_eq!(out, want, "width {width} n {n}");
            }
        }
    }

    #[test]
    fn bit_run_planes_decode_the_same_with_and_without_simd() {
        // The p = 2 plane 0 of bf16: sign bit to bit 15, four digits to bits 3..7.
        let lut: Vec<u32> = (0..32u32)
            .map(|v| ((v >> 4) << 15) | ((v & 15) << 3))
            .collect();
        assert_eq!(bit_runs(&lut, 5), Some(vec![(15, 3), (16, 11)]));
        let odd: Vec<u32> = (0..6u32).map(|v| v * 3).collect();
        assert_eq!(bit_runs(&odd, 3), None);
        for n in [0usize, 15, 16, 17, 1000, 4099] {
            let syms: Vec<u16> = (0..n).map(|i| ((i * 40503) % 32) as u16).collect();
            let mut body = Vec::new();
            encode(&syms, 5, &mut body);
            let want: Vec<u16> = syms
                .iter()
                .map(|&s| 0x1234u16.wrapping_add(lut[s as usize] as u16))
                .collect();
            let mut out = vec![0x1234u16; n];
            decode(&body, 5, &lut, &mut out, false).unwrap();
            assert_eq!(out, want, "u16 n {n}");
            let want32: Vec<u32> = syms.iter().map(|&s| lut[s as usize] << 8).collect();
            let lut32: Vec<u32> = lut.iter().map(|v| v << 8).collect();
            let mut out32 = vec![9u32; n];
            decode(&body, 5, &lut32, &mut out32, true).unwrap();
            assert_eq!(out32, want32, "u32 n {n}");
        }
    }

    #[test]
    fn value_outside_alphabet_is_an_error() {
        let lut = vec![0u32; 5]; // width 3 holds 0..8, alphabet only 0..5
        let mut body = Vec::new();
        encode(&[1, 6, 2], 3, &mut body);
        let mut out = vec![0u32; 3];
        assert!(decode(&body, 3, &lut, &mut out, true).is_err());
    }
}
