//! A chunk: the values of one contiguous element range of one tensor, split
//! into sections (section 0 the exponent channel, then the digit planes, most
//! significant first). Each section is coded on its own (see `symbols`), so a
//! decode to fewer digits reads a prefix of the chunk's sections and no more.
#![forbid(unsafe_code)]

use super::bitpack;
use super::layout::{FloatKind, Layout};
use super::rans::{self, Word};
use super::split;
use super::symbols::{self, Parsed};
use crate::error::{Error, Result};
use std::ops::Range;

/// Reads a little-endian value of `kind` at element `i` of `bytes`.
#[inline]
fn load(kind: FloatKind, bytes: &[u8], i: usize) -> u32 {
    match kind {
        FloatKind::F32 => u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]),
        FloatKind::BF16 | FloatKind::F16 => {
            u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32
        }
    }
}

thread_local! {
    // Each coding thread's symbol streams, reused chunk after chunk.
    static STREAMS: std::cell::RefCell<Vec<split::Stream>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What encoding one chunk produced.
pub struct EncodedChunk {
    /// The coded sections, head first.
    pub sections: Vec<Vec<u8>>,
    /// Largest `|original - stored|` over finite values (`inf` when a NaN
    /// would not come back as a NaN); 0 for an exact layout.
    pub max_abs_error: f64,
}

/// Encodes the little-endian values in `bytes` (a whole number of elements).
pub fn encode(layout: &Layout, bytes: &[u8]) -> EncodedChunk {
    let sections = STREAMS.with_borrow_mut(|streams| {
        split::split_into(layout, bytes, streams);
        streams[..layout.sections()]
            .iter()
            .map(|st| symbols::encode_counted(&st.syms, &st.counts))
            .collect()
    });
    EncodedChunk {
        sections,
        max_abs_error: max_error(layout, bytes),
    }
}

/// Encodes the values in `bytes` as one chunk, or as one chunk a part,
/// the parts `bytes` cut at `lens` (bytes, whole values each, summing to
/// `bytes.len()`), whichever costs less, a chunk costing its sections'
/// bytes plus `per_section` each. Gives one chunk, or one a part, and
/// each part's own largest error (see [`EncodedChunk::max_abs_error`]; a
/// whole chunk's is the largest of them).
///
/// The values are split once: a part's symbols are a slice of the whole's.
/// The parts are coded only where the floor of their cost
/// ([`symbols::encoded_floor`]) is below the whole's cost; the choice is
/// the one coding both would make.
pub fn encode_whole_or_parts(
    layout: &Layout,
    bytes: &[u8],
    lens: &[usize],
    per_section: usize,
) -> (Vec<EncodedChunk>, Vec<f64>) {
    let size = layout.kind.size();
    debug_assert_eq!(lens.iter().sum::<usize>(), bytes.len());
    let cost =
        |sections: &[Vec<u8>]| -> usize { sections.iter().map(|s| s.len() + per_section).sum() };
    // The sections of the whole, or of each part.
    let chunks: Vec<Vec<Vec<u8>>> = STREAMS.with_borrow_mut(|streams| {
        split::split_into(layout, bytes, streams);
        let streams = &streams[..layout.sections()];
        let whole: Vec<Vec<u8>> = streams
            .iter()
            .map(|st| symbols::encode_counted(&st.syms, &st.counts))
            .collect();
        if lens.len() <= 1 {
            return vec![whole];
        }
        let whole_cost = cost(&whole);
        // Each part's value range, and a floor on what coding them apart costs.
        let mut parts: Vec<Range<usize>> = Vec::with_capacity(lens.len());
        let mut floor = 0.0;
        let mut at = 0;
        for &len in lens {
            let range = at / size..(at + len) / size;
            at += len;
            for st in streams {
                floor += symbols::encoded_floor(&st.syms[range.clone()], st.counts.len())
                    + per_section as f64;
            }
            parts.push(range);
        }
        if whole_cost as f64 <= floor {
            return vec![whole];
        }
        let apart: Vec<Vec<Vec<u8>>> = parts
            .iter()
            .map(|range| {
                streams
                    .iter()
                    .map(|st| {
                        let syms = &st.syms[range.clone()];
                        let mut counts = vec![0u64; st.counts.len()];
                        split::count(syms, &mut counts);
                        symbols::encode_counted(syms, &counts)
                    })
                    .collect()
            })
            .collect();
        if whole_cost <= apart.iter().map(|p| cost(p)).sum() {
            vec![whole]
        } else {
            apart
        }
    });
    let mut at = 0;
    let errors: Vec<f64> = lens
        .iter()
        .map(|&len| {
            at += len;
            max_error(layout, &bytes[at - len..at])
        })
        .collect();
    if chunks.len() == 1 {
        let sections = chunks.into_iter().next().unwrap_or_default();
        let whole = EncodedChunk {
            sections,
            max_abs_error: errors.iter().fold(0.0, |m, &e| m.max(e)),
        };
        return (vec![whole], errors);
    }
    let coded = chunks
        .into_iter()
        .zip(&errors)
        .map(|(sections, &max_abs_error)| EncodedChunk {
            sections,
            max_abs_error,
        })
        .collect();
    (coded, errors)
}

/// Largest `|original - stored|` over the values in `bytes` (`inf` when a
/// NaN would not come back as a NaN); 0 for an exact layout.
fn max_error(layout: &Layout, bytes: &[u8]) -> f64 {
    if layout.is_exact() {
        return 0.0;
    }
    let kind = layout.kind;
    let mut max_err = 0.0f64;
    for i in 0..bytes.len() / kind.size() {
        let bits = load(kind, bytes, i);
        let stored = layout.truncate(bits, layout.precision);
        let (a, b) = (kind.to_f64(bits), kind.to_f64(stored));
        let err = if a.is_nan() {
            if b.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (a - b).abs()
        };
        max_err = max_err.max(err);
    }
    max_err
}

/// Element alignment of a range decode's ends: the rANS segment length
/// (a multiple of 8, so raw planes split on whole bytes).
pub const RANGE_ALIGN: usize = super::rans::SEGMENT_SYMBOLS;

/// The decoding tables of one tensor at one target precision: per section,
/// the contribution of each symbol to the output bit pattern.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The float format the tables decode.
    pub kind: FloatKind,
    luts: Vec<Vec<u32>>,
    /// Per section, per raw width `w` (index `w - 1`, up to the alphabet's),
    /// its table's bit runs when stored raw at `w` bits (see
    /// `bitpack::bit_runs`); none for the head.
    runs: Vec<Vec<Option<BitRuns>>>,
}

/// A table's bit runs (see `bitpack::bit_runs`).
type BitRuns = Vec<(u32, i32)>;

impl Tables {
    /// Tables for a decode of `layout` to `target` digits (at most `layout.precision`).
    pub fn new(layout: &Layout, target: u32) -> Self {
        let target = target.min(layout.precision);
        let used = layout.sections_for(target);
        let luts: Vec<Vec<u32>> = (0..used).map(|s| layout.contributions(s, target)).collect();
        let runs = luts
            .iter()
            .enumerate()
            .map(|(s, lut)| {
                let widest = if s == 0 {
                    0
                } else {
                    symbols::raw_width(lut.len() as u32).min(8)
                };
                (1..=widest)
                    .map(|w| bitpack::bit_runs(lut.get(..1 << w)?, w))
                    .collect()
            })
            .collect();
        Tables {
            kind: layout.kind,
            luts,
            runs,
        }
    }

    /// The contribution of each symbol of section `s`.
    pub fn lut(&self, s: usize) -> &[u32] {
        &self.luts[s]
    }

    /// Sections a decode reads (a prefix of the chunk's).
    pub fn sections_used(&self) -> usize {
        self.luts.len()
    }

    /// Section `s`'s bit runs when stored raw at `width` bits.
    fn runs(&self, s: usize, width: u32) -> Option<&[(u32, i32)]> {
        let w = (width as usize).checked_sub(1)?;
        self.runs.get(s)?.get(w)?.as_deref()
    }

    /// Decodes a chunk's sections (at least `sections_used()`) into `out`.
    pub fn decode<W: Word>(&self, sections: &[&[u8]], out: &mut [W]) -> Result<()> {
        let n = out.len();
        self.decode_range(sections, n, 0, out)
    }

    /// Decodes values `[first, first + out.len())` of a chunk of `total`
    /// values, reading only the rANS segments that hold them: the ends must
    /// fall on multiples of [`RANGE_ALIGN`] (or the chunk's end).
    pub fn decode_range<W: Word>(
        &self,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        out: &mut [W],
    ) -> Result<()> {
        if std::mem::size_of::<W>() != self.kind.size() {
            return Err(Error::Decode("output word does not match the dtype".into()));
        }
        if sections.len() < self.luts.len() {
            return Err(Error::Decode(format!(
                "chunk lacks section {}",
                sections.len()
            )));
        }
        let done = self.decode_head_and_planes(sections, total, first, out)?;
        for (s, lut) in self.luts.iter().enumerate() {
            if done & (1 << s) != 0 {
                continue;
            }
            symbols::decode_range(sections[s], lut, total, first, out, s == 0)
                .map_err(|e| Error::Decode(format!("section {s}: {e}")))?;
        }
        Ok(())
    }

    /// Where the head is rANS-coded, decodes it in one pass over `out`
    /// together with the planes stored raw as bit runs (at most
    /// `rans::MAX_FUSED_PLANES`: bf16's and f16's sign plane and digit
    /// plane at p = 2) and the constant ones (folded into the head's
    /// table). Returns a bit mask of the sections done; 0, with `out` left
    /// alone, when the head is not rANS-coded.
    fn decode_head_and_planes<W: Word>(
        &self,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        out: &mut [W],
    ) -> Result<u64> {
        let last = first + out.len();
        let Ok(Parsed::Rans(body)) = symbols::parse(sections[0], &self.luts[0], total, first, last)
        else {
            // Anything else, errors included, takes the section by section path.
            return Ok(0);
        };
        let mut done = 1u64;
        let mut head = std::borrow::Cow::Borrowed(&self.luts[0][..]);
        let mut planes = Vec::new();
        for (s, (lut, sec)) in self.luts.iter().zip(sections).enumerate().skip(1) {
            match symbols::parse(sec, lut, total, first, last) {
                Ok(Parsed::Const(v)) => {
                    // Every value gets `v`: the head's table adds it.
                    head.to_mut().iter_mut().for_each(|h| *h += v);
                    done |= 1 << s;
                }
                Ok(Parsed::Raw { width, bytes }) if planes.len() < rans::MAX_FUSED_PLANES => {
                    if let Some(runs) = self.runs(s, width) {
                        planes.push(rans::Plane {
                            bytes,
                            width,
                            lut,
                            runs,
                        });
                        done |= 1 << s;
                    }
                }
                _ => {}
            }
        }
        rans::decode_with(body, &head, total, first, out, true, true, &planes)
            .map_err(|e| Error::Decode(format!("sections 0 to {}: {e}", self.luts.len() - 1)))?;
        Ok(done)
    }

    /// [`Tables::decode_range`] into little-endian bytes.
    pub fn decode_range_bytes(
        &self,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        out: &mut [u8],
        scratch: &mut Vec<u32>,
    ) -> Result<()> {
        match self.kind {
            FloatKind::F32 => self.through_words::<u32>(out, scratch, |t, w| {
                t.decode_range(sections, total, first, w)
            }),
            FloatKind::BF16 | FloatKind::F16 => self.through_words::<u16>(out, scratch, |t, w| {
                t.decode_range(sections, total, first, w)
            }),
        }
    }

    /// Decodes into little-endian bytes (`out.len()` a multiple of the value size),
    /// through `scratch` when `out` is not aligned for the word type.
    pub fn decode_bytes(
        &self,
        sections: &[&[u8]],
        out: &mut [u8],
        scratch: &mut Vec<u32>,
    ) -> Result<()> {
        match self.kind {
            FloatKind::F32 => self.decode_into::<u32>(sections, out, scratch),
            FloatKind::BF16 | FloatKind::F16 => self.decode_into::<u16>(sections, out, scratch),
        }
    }

    fn decode_into<W: Word>(
        &self,
        sections: &[&[u8]],
        out: &mut [u8],
        scratch: &mut Vec<u32>,
    ) -> Result<()> {
        self.through_words::<W>(out, scratch, |t, w| t.decode(sections, w))
    }

    /// Runs `decode` on `out` viewed as words, through `scratch` when `out`
    /// is not aligned for them (or the host is big-endian).
    fn through_words<W: Word>(
        &self,
        out: &mut [u8],
        scratch: &mut Vec<u32>,
        decode: impl Fn(&Self, &mut [W]) -> Result<()>,
    ) -> Result<()> {
        let size = std::mem::size_of::<W>();
        if out.len() % size != 0 {
            return Err(Error::Decode(
                "output is not a whole number of values".into(),
            ));
        }
        if cfg!(target_endian = "little") {
            if let Ok(words) = bytemuck::try_cast_slice_mut::<u8, W>(out) {
                return decode(self, words);
            }
        }
        let n = out.len() / size;
        scratch.clear();
        scratch.resize(n.div_ceil(4 / size), 0);
        let words: &mut [W] = &mut bytemuck::cast_slice_mut::<u32, W>(scratch)[..n];
        decode(self, words)?;
        for (dst, w) in out.chunks_exact_mut(size).zip(words.iter()) {
            let b = bytemuck::bytes_of(w);
            if cfg!(target_endian = "little") {
                dst.copy_from_slice(b);
            } else {
                for (d, s) in dst.iter_mut().zip(b.iter().rev()) {
                    *d = *s;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_on_segment_boundaries_decode_alone() {
        let mut x = 5u64;
        let n = 3 * RANGE_ALIGN + RANGE_ALIGN / 2 + 3;
        let mut bytes = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let mut s = 0.0f32;
            for _ in 0..6 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s += (x >> 40) as f32 / (1u64 << 24) as f32;
            }
            bytes.extend_from_slice(&half::f16::from_f32((s - 3.0) * 0.05).to_le_bytes());
        }
        let layout = Layout::new(FloatKind::F16, 2, None, false).unwrap();
        let enc = encode(&layout, &bytes);
        assert_eq!(enc.sections[0][0], symbols::KIND_RANS);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let tables = Tables::new(&layout, layout.precision);
        let mut out = vec![0u8; bytes.len()];
        let cuts = [0, RANGE_ALIGN, 3 * RANGE_ALIGN, n];
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            tables
                .decode_range_bytes(&secs, n, a, &mut out[2 * a..2 * b], &mut Vec::new())
                .unwrap();
        }
        assert!(out == bytes, "the pieces rebuild the chunk");
        let err = tables
            .decode_range_bytes(&secs, n, 8, &mut out[16..32], &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("segment boundaries"), "{err}");
    }

    /// The choice coding both, whole and apart, makes, and each part's
    /// own encoding.
    fn coded_both(layout: &Layout, bytes: &[u8], lens: &[usize], per: usize) -> Vec<EncodedChunk> {
        let cost = |c: &EncodedChunk| c.sections.iter().map(|s| s.len() + per).sum::<usize>();
        let whole = encode(layout, bytes);
        let mut at = 0;
        let apart: Vec<EncodedChunk> = lens
            .iter()
            .map(|&len| {
                at += len;
                encode(layout, &bytes[at - len..at])
            })
            .collect();
        if cost(&whole) <= apart.iter().map(cost).sum() {
            vec![whole]
        } else {
            apart
        }
    }

    #[test]
    fn a_run_is_coded_whole_or_apart_as_coding_both_would_choose() {
        let mut rng = crate::demo::Rng::new(17);
        let mut seen = [false; 2];
        for (kind, precision, lossy) in [
            (FloatKind::BF16, None, false),
            (FloatKind::F32, None, false),
            (FloatKind::F16, Some(4), true),
        ] {
            let layout = Layout::new(kind, 2, precision, lossy).unwrap();
            // Parts of one spread (whole wins), of spreads a thousand
            // times apart (each wants its own table), of one repeated
            // value (a constant section), and of one value each.
            for spreads in [
                vec![0.02, 0.02, 0.02, 0.02],
                vec![0.02, 20.0, 0.02, 20.0],
                vec![0.0, 0.05, 0.0],
                vec![1.0, 1e-3],
            ] {
                for n in [1usize, 7, 3000] {
                    let mut bytes = Vec::new();
                    let mut lens = Vec::new();
                    for &std in &spreads {
                        let part = crate::demo::gaussian_bytes(&mut rng, n, std, kind.dtype());
                        lens.push(part.len());
                        bytes.extend_from_slice(&part);
                    }
                    let (got, errors) = encode_whole_or_parts(&layout, &bytes, &lens, 16);
                    let want = coded_both(&layout, &bytes, &lens, 16);
                    assert_eq!(got.len(), want.len(), "{kind:?} {spreads:?} n={n}");
                    for (g, w) in got.iter().zip(&want) {
                        assert!(g.sections == w.sections, "{kind:?} {spreads:?} n={n}");
                        assert_eq!(g.max_abs_error.to_bits(), w.max_abs_error.to_bits());
                    }
                    // Each part's own error, whichever way the run is coded.
                    let mut at = 0;
                    for (&len, e) in lens.iter().zip(&errors) {
                        at += len;
                        let own = encode(&layout, &bytes[at - len..at]).max_abs_error;
                        assert_eq!(e.to_bits(), own.to_bits(), "{kind:?} {spreads:?} n={n}");
                    }
                    seen[(got.len() > 1) as usize] = true;
                }
            }
        }
        assert_eq!(seen, [true, true], "both choices are made");
    }
}
