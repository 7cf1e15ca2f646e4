//! The AVX2 encoder of whole 32-lane groups: four vectors of eight lanes.
//! It writes exactly the words the scalar encoder writes, in the same
//! places, and leaves the same states (the same reciprocal arithmetic, in
//! 32-bit halves), so it needs no format of its own; `tests` holds it to
//! the scalar encoder byte for byte.

use super::encode::EncSymbol;
use super::LANES;
use std::arch::x86_64::*;

pub(crate) use crate::codec::simd_available as available;

/// For an 8-bit mask of lanes that give out a word: those lanes in
/// ascending order at the top of eight slots (slot `8 - count + k` holds
/// the `k`-th), so that one store of eight words puts them just below the
/// words already written; the slots below hold lane 0, whose words land
/// below the last word and are overwritten by the next store.
const fn topmost() -> [[u32; 8]; 256] {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let count = (m as u32).count_ones() as usize;
        let mut k = 0;
        let mut lane = 0;
        while lane < 8 {
            if m & (1 << lane) != 0 {
                t[m][8 - count + k] = lane as u32;
                k += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
}
static TOPMOST: [[u32; 8]; 256] = topmost();

/// Encodes `groups` (whole groups of [`LANES`] symbols) backwards onto
/// `states`, as the scalar encoder does: words go down from `span[*pos - 1]`
/// and `*pos` follows the last. Each store writes eight words, up to seven
/// of them below the last word kept, so `*pos` must be at least
/// `8 + groups.len()`; every symbol must have an entry in `table`.
pub(super) fn groups(
    groups: &[u16],
    table: &[EncSymbol],
    states: &mut [u32; LANES],
    span: &mut [u16],
    pos: &mut usize,
) {
    assert!(available(), "the AVX2 encoder runs only where AVX2 is");
    assert_eq!(groups.len() % LANES, 0, "whole groups of lanes");
    assert!(
        *pos <= span.len() && *pos >= 8 + groups.len(),
        "room below the words for every store"
    );
    // The gathers read `table[sym]` unchecked: every symbol is checked here.
    let largest = groups.iter().copied().max().unwrap_or(0) as usize;
    assert!(largest < table.len(), "symbol {largest} has no table entry");
    // SAFETY: AVX2 and BMI2 are present (checked above); every symbol has
    // a table entry and every store stays inside `span` (checked above).
    unsafe { groups_avx2(groups, table, states, span, pos) }
}

#[target_feature(enable = "avx2,bmi2")]
fn groups_avx2(
    groups: &[u16],
    table: &[EncSymbol],
    states: &mut [u32; LANES],
    span: &mut [u16],
    pos: &mut usize,
) {
    // An entry as four dwords: the reciprocal's low and high halves, the
    // renormalisation bound, and the bias with the complement above it.
    let entries = table.as_ptr() as *const i32;
    let flip = _mm256_set1_epi32(i32::MIN);
    let low16 = _mm256_set1_epi32(0xffff);
    // The low 16 bits of each dword to the low 8 bytes of its half.
    let pick = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1,
        -1, -1, -1, -1, -1, -1,
    );
    let mut x = [_mm256_setzero_si256(); 4];
    for (v, xv) in x.iter_mut().enumerate() {
        // SAFETY: reads the eight u32 of lanes 8v..8v + 8 of `states`.
        *xv = unsafe { _mm256_loadu_si256(states[8 * v..].as_ptr() as *const __m256i) };
    }
    let out = span.as_mut_ptr();
    for group in groups.chunks_exact(LANES).rev() {
        // Lanes 31 down to 0, as the scalar walk: a vector's words go below
        // the next vector's, each in ascending lane order.
        for v in (0..4).rev() {
            // The eight lanes' entries, one 16-byte load each (the symbols
            // are in memory, so no index leaves a register), transposed to
            // one vector per field: four 8-lane gathers cost more on AMD's
            // and Intel's cores alike.
            let syms = &group[8 * v..8 * v + 8];
            // SAFETY: each symbol has an entry (checked by `groups`): the 16
            // bytes at `table[sym]` lie inside `table`.
            let row = |k: usize| unsafe {
                _mm_loadu_si128(entries.add(4 * syms[k] as usize) as *const __m128i)
            };
            let pair =
                |a: usize| _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(row(a)), row(a + 4));
            let (a0, a1, a2, a3) = (pair(0), pair(1), pair(2), pair(3));
            let t0 = _mm256_unpacklo_epi32(a0, a1);
            let t1 = _mm256_unpackhi_epi32(a0, a1);
            let t2 = _mm256_unpacklo_epi32(a2, a3);
            let t3 = _mm256_unpackhi_epi32(a2, a3);
            let lo = _mm256_unpacklo_epi64(t0, t2);
            let hi = _mm256_unpackhi_epi64(t0, t2);
            let renorm = _mm256_unpacklo_epi64(t1, t3);
            let bias_cmpl = _mm256_unpackhi_epi64(t1, t3);
            let s = x[v];
            // Unsigned `s > renorm`: the lanes that give out their low word.
            let give =
                _mm256_cmpgt_epi32(_mm256_xor_si256(s, flip), _mm256_xor_si256(renorm, flip));
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(give)) as usize;
            let words = _mm256_permutevar8x32_epi32(
                s,
                // SAFETY: eight u32 of TOPMOST[mask] (mask < 256).
                unsafe { _mm256_loadu_si256(TOPMOST[mask].as_ptr() as *const __m256i) },
            );
            let words = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(words, pick));
            // SAFETY: `*pos >= 8` here (at least 8 + the symbols left before
            // this vector, by `groups`' check), so `*pos - 8..*pos` lies in `span`.
            unsafe {
                _mm_storeu_si128(
                    out.add(*pos - 8) as *mut __m128i,
                    _mm256_castsi256_si128(words),
                )
            };
            *pos -= mask.count_ones() as usize;
            let s = _mm256_blendv_epi8(s, _mm256_srli_epi32(s, 16), give);
            // q = (reciprocal * s) >> 64, in halves: (hi * s + (lo * s >> 32)) >> 32.
            let odd = _mm256_srli_epi64(s, 32);
            let even_q = _mm256_add_epi64(
                _mm256_mul_epu32(s, hi),
                _mm256_srli_epi64(_mm256_mul_epu32(s, lo), 32),
            );
            let odd_q = _mm256_add_epi64(
                _mm256_mul_epu32(odd, _mm256_srli_epi64(hi, 32)),
                _mm256_srli_epi64(_mm256_mul_epu32(odd, _mm256_srli_epi64(lo, 32)), 32),
            );
            let q = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64(even_q, 32), odd_q);
            let cmpl = _mm256_srli_epi32(bias_cmpl, 16);
            let bias = _mm256_and_si256(bias_cmpl, low16);
            x[v] = _mm256_add_epi32(_mm256_add_epi32(s, _mm256_mullo_epi32(q, cmpl)), bias);
        }
    }
    for (v, xv) in x.iter().enumerate() {
        // SAFETY: writes the eight u32 of lanes 8v..8v + 8 of `states`.
        unsafe { _mm256_storeu_si256(states[8 * v..].as_mut_ptr() as *mut __m256i, *xv) };
    }
}
