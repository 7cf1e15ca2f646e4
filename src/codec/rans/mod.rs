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
//!
//! The code is layered as lz4_flex layers its block codec: `encode` (the
//! writer), `table` (the section header and decode tables), `decode_safe`
//! (the portable decoder) and `avx2` (the x86-64 fast path, held to the
//! safe decoder by the tests).

#[cfg(target_arch = "x86_64")]
mod avx2;
mod decode_safe;
mod encode;
#[cfg(target_arch = "x86_64")]
mod encode_avx2;
mod table;
#[cfg(test)]
mod tests;

pub use encode::{encode, encode_lanes, normalize};
pub(crate) use table::Header;
use table::{Packed, Table};

use super::bitpack;
use crate::error::{Error, Result};
use decode_safe::decode_segment;

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

/// Output word of a decode (the float's bit pattern, 16 or 32 bits).
pub trait Word: bytemuck::Pod + Default + Send + Sync + 'static {
    /// The word of `v`'s low bits.
    fn from_u32(v: u32) -> Self;
    /// `self + v` in the word's width, wrapping.
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
    decode_with(body, lut, n, 0, out, assign, true, &[]).map(|_| ())
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
    decode_with(body, lut, total, first, out, assign, true, &[]).map(|_| ())
}

/// A raw plane of `width`-bit values (`width <= 8`, one value per decoded
/// symbol, from the range's first) whose contributions are bit runs (see
/// [`bitpack::bit_runs`]). [`decode_with`] adds it in the rANS section's own
/// pass, so the output is written once rather than once a section.
pub(crate) struct Plane<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) width: u32,
    pub(crate) lut: &'a [u32],
    pub(crate) runs: &'a [(u32, i32)],
}

/// The most planes the rANS pass takes along (bf16 and f16: the sign plane
/// and the digit plane).
pub(crate) const MAX_FUSED_PLANES: usize = 2;

/// [`decode_range`], with the SIMD path allowed or not (tests hold both to
/// the same output), and then `out[i] += plane.lut[plane value i]` for each
/// of `planes` (at most [`MAX_FUSED_PLANES`]): the same result as decoding
/// the planes after the section, in one pass where the SIMD decoder can.
/// Returns how many values took their planes' contributions in that pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_with<W: Word>(
    body: &[u8],
    lut: &[u32],
    n: usize,
    first: usize,
    out: &mut [W],
    assign: bool,
    allow_simd: bool,
    planes: &[Plane],
) -> Result<usize> {
    let last = first + out.len();
    let mut h = Header::parse(body, lut, n)?;
    h.check_range(first, last)?;
    // The SIMD decoder's 32-bit table, built only where it will be read.
    #[cfg(target_arch = "x86_64")]
    if allow_simd && h.lanes == LANES && avx2::available() {
        h.table.packed = Packed::build(&h.listed, lut, h.scale_bits);
    }
    // Segments on whole bytes of every plane take them along; otherwise
    // they are added after the section.
    let fuse = planes.len() <= MAX_FUSED_PLANES
        && planes
            .iter()
            .all(|p| h.seg_syms * p.width as usize % 8 == 0);
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
        let seg_planes: Vec<Plane> = if fuse {
            planes
                .iter()
                .map(|p| Plane {
                    bytes: &p.bytes[a * p.width as usize / 8..],
                    ..*p
                })
                .collect()
        } else {
            Vec::new()
        };
        let fused = decode(
            seg.bytes,
            h.lanes,
            h.scale_bits,
            &h.table,
            &mut out[a..b],
            allow_simd,
            &seg_planes,
        )
        .map_err(|e| Error::Decode(format!("rANS segment {k}: {e}")))?;
        if fuse {
            for p in planes {
                add_plane(p, a + fused, b, &mut out[a + fused..b])?;
            }
        }
        in_pass += fused;
    }
    if !fuse {
        for p in planes {
            add_plane(p, 0, out.len(), out)?;
        }
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
