//! The AVX2 decoder of full 32-lane blocks: four vectors of eight lanes. It
//! consumes words in exactly the scalar decoder's order (lane 0 to 31 within a
//! block), so it needs no format of its own, and `tests` holds it to the
//! scalar decoder on every input.

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
/// `planes`' contributions too). `states` holds the 32 lanes. The planes
/// ride along for 16-bit words, at most two of them with at most two bit
/// runs each; otherwise none does.
pub fn blocks<W: Word, const ASSIGN: bool>(
    states: &mut [u32; 64],
    words: &[u8],
    scale_bits: u32,
    table: &Table,
    out: &mut [W],
    planes: &[Plane],
) -> (usize, usize, usize) {
    debug_assert!(available());
    let fits = std::mem::size_of::<W>() == 2
        && planes
            .iter()
            .all(|p| (1..=8).contains(&p.width) && p.runs.len() <= 2);
    let planes = if fits { planes } else { &[] };
    let packed = table.packed.is_some();
    macro_rules! run {
        ($packed:literal, $n:literal) => {
            // SAFETY: `available()` checked that the CPU has AVX2 and BMI2.
            unsafe {
                blocks_avx2::<W, ASSIGN, $packed, $n>(states, words, scale_bits, table, out, planes)
            }
        };
    }
    match (packed, planes.len()) {
        (true, 0) => run!(true, 0),
        (false, 0) => run!(false, 0),
        (true, 1) => run!(true, 1),
        (false, 1) => run!(false, 1),
        (true, 2) => run!(true, 2),
        (false, 2) => run!(false, 2),
        (true, _) => run!(true, 0),
        (false, _) => run!(false, 0),
    }
}

/// `PACKED`: read `table.packed` (one 32-bit gather per eight lanes), else
/// `table.entry` (two 64-bit gathers). `PLANES`: add the first `PLANES` of
/// `planes` (16-bit words only).
#[target_feature(enable = "avx2,bmi2")]
fn blocks_avx2<W: Word, const ASSIGN: bool, const PACKED: bool, const PLANES: usize>(
    states: &mut [u32; 64],
    words: &[u8],
    scale_bits: u32,
    table: &Table,
    out: &mut [W],
    planes: &[Plane],
) -> (usize, usize, usize) {
    let fused: [(&[u8], usize, Runs); PLANES] = std::array::from_fn(|k| {
        let p = &planes[k];
        (p.bytes, p.width as usize, Runs::new(p.runs, false))
    });
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
        && fused
            .iter()
            .all(|(pbytes, pw, _)| (i + 24) * pw / 8 + 8 <= pbytes.len())
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
                let lo =
                    unsafe { _mm256_i32gather_epi64::<8>(entry_ptr, _mm256_castsi256_si128(slot)) };
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
                store::<W, ASSIGN>(out, o, v);
            } else if g % 2 == 0 {
                pending = v;
            } else {
                // Values fit 16 bits: pack this group's eight and the
                // previous group's to sixteen u16, in order.
                let v16 = _mm256_permute4x64_epi64::<0b1101_1000>(_mm256_packus_epi32(pending, v));
                let mut v16 = v16;
                for (pbytes, pw, runs) in &fused {
                    let digits = sixteen(pbytes, (o - 8) * pw / 8, *pw);
                    v16 = _mm256_add_epi16(v16, runs.apply16(_mm256_cvtepu8_epi16(digits)));
                }
                store::<W, ASSIGN>(out, o - 8, v16);
            }
        }
        pos = renormalize(&mut x, &need, &m, words, pos);
        i += LANES;
    }
    for (g, v) in x.iter().enumerate() {
        let lanes: &mut [u32; 8] = (&mut states[8 * g..8 * g + 8])
            .try_into()
            .expect("eight lanes");
        // SAFETY: writes the eight u32 of `lanes`.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, *v) };
    }
    (i, pos, if PLANES > 0 { i } else { 0 })
}

/// Writes one vector to the 32 bytes of `out` from `at` (`ASSIGN`), or adds
/// it to them lane by lane in the word's width.
#[target_feature(enable = "avx2,bmi2")]
#[inline]
fn store<W: Word, const ASSIGN: bool>(out: &mut [W], at: usize, v: __m256i) {
    let wide = std::mem::size_of::<W>() == 4;
    let dst: &mut [u8; 32] =
        bytemuck::cast_slice_mut(&mut out[at..at + 32 / std::mem::size_of::<W>()])
            .try_into()
            .expect("32 bytes");
    let p = dst.as_mut_ptr() as *mut __m256i;
    let v = if ASSIGN {
        v
    } else {
        // SAFETY: reads the 32 bytes of `dst`.
        let old = unsafe { _mm256_loadu_si256(p) };
        if wide {
            _mm256_add_epi32(v, old)
        } else {
            _mm256_add_epi16(v, old)
        }
    };
    // SAFETY: writes the 32 bytes of `dst`.
    unsafe { _mm256_storeu_si256(p, v) };
}

/// A block's second phase: each group's lanes that fell below 2^16 (`need`,
/// `m` its bit mask) shift in their next words, read in lane order from
/// `pos` after the previous groups'. Returns the word position after them.
#[target_feature(enable = "avx2,bmi2")]
#[inline]
fn renormalize(
    x: &mut [__m256i; 4],
    need: &[__m256i; 4],
    m: &[usize; 4],
    words: &[u8],
    mut pos: usize,
) -> usize {
    for g in 0..4 {
        // Each group reads at most 8 words after the previous groups'
        // 24: `pos + 64 <= words.len()` covers the 16-byte load.
        let chunk: &[u8; 16] = (&words[pos..pos + 16]).try_into().expect("sixteen bytes");
        // SAFETY: reads the sixteen bytes of `chunk`.
        let next = unsafe { _mm_loadu_si128(chunk.as_ptr() as *const __m128i) };
        let next = _mm256_cvtepu16_epi32(next);
        // SAFETY: reads the eight u32 of one compaction row.
        let idx = unsafe { _mm256_loadu_si256(COMPACTION[m[g]].as_ptr() as *const __m256i) };
        let next = _mm256_permutevar8x32_epi32(next, idx);
        let renormed = _mm256_or_si256(_mm256_slli_epi32::<16>(x[g]), next);
        x[g] = _mm256_blendv_epi8(x[g], renormed, need[g]);
        pos += 2 * m[g].count_ones() as usize;
    }
    pos
}
