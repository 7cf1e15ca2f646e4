//! Device plans: a chunk's sections parsed and checked on the host, with the
//! tables and offsets the GPU kernels (`kernels/decode.cu`) read. The parse
//! is the CPU decoder's own (`symbols::parse`, `rans::Header`), so a
//! section the CPU refuses, the GPU never sees.
//!
//! A plan covers values `[first, first + count)` of a chunk, ends on rANS
//! segment boundaries as for [`Tables::decode_range`]. `data` holds the
//! sections the plan reads, back to back; every offset points into it.

use super::rans::Header;
use super::symbols::{self, Parsed};
use super::{FloatKind, Tables};
use crate::error::{Error, Result};

/// One rANS segment, as the kernels read it (`#[repr(C)]`, five u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// First output value, counted from the plan's first value.
    pub out_start: u32,
    /// Symbols in the segment.
    pub len: u32,
    /// Byte offset of its `lanes` u32 initial states in `data`.
    pub states_off: u32,
    /// Byte offset of its u16 words in `data`.
    pub words_off: u32,
    /// Words in the segment.
    pub words: u32,
}

/// How the kernels decode one section.
#[derive(Debug, Clone, PartialEq)]
pub enum SectionPlan {
    /// Every value gets `value`.
    Const {
        /// The contribution.
        value: u32,
    },
    /// `width`-bit values from `data[offset..offset + len]`, looked up in `lut`.
    Raw {
        /// Byte offset of the packed values in `data`.
        offset: u32,
        /// Bytes of packed values.
        len: u32,
        /// Bits a value (1 to 8).
        width: u32,
        /// Each value's contribution.
        lut: Vec<u32>,
    },
    /// One warp per segment over `table` (frequency, slot offset and
    /// contribution per slot, as the CPU decoder's).
    Rans {
        /// Probabilities are counts out of `2^scale_bits`.
        scale_bits: u32,
        /// Interleaved states a segment (at most [`MAX_GPU_LANES`]).
        lanes: u32,
        /// One entry per slot of `[0, 2^scale_bits)`.
        table: Vec<u64>,
        /// The section's segments, in order.
        segments: Vec<Segment>,
    },
}

/// The most rANS lanes a warp decodes.
pub const MAX_GPU_LANES: usize = 32;

fn offset(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Decode(format!("offset {v} does not fit the GPU plan")))
}

impl Tables {
    /// Plans the decode of values `[first, first + count)` of a chunk of
    /// `total` values from its `sections`: appends the bytes the range reads
    /// to `data` and returns the sections' plans, their offsets positions in
    /// `data`.
    fn plan_sections(
        &self,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        count: usize,
        data: &mut Vec<u8>,
    ) -> Result<Vec<SectionPlan>> {
        let last = first
            .checked_add(count)
            .filter(|&l| l <= total)
            .ok_or_else(|| {
                Error::Decode(format!("range {first}+{count} past the {total} values"))
            })?;
        let mut plans = Vec::with_capacity(self.sections_used());
        for s in 0..self.sections_used() {
            let lut = self.lut(s);
            let sec = sections
                .get(s)
                .ok_or_else(|| Error::Decode(format!("chunk lacks section {s}")))?;
            // Only the bytes the range reads go into `data` (a HYBRID part
            // uploads its own segments, not the whole chunk's).
            let base = data.len();
            let plan = match symbols::parse(sec, lut, total, first, last)
                .map_err(|e| Error::Decode(format!("section {s}: {e}")))?
            {
                Parsed::Const(value) => SectionPlan::Const { value },
                Parsed::Raw { width, bytes } => {
                    data.extend_from_slice(bytes);
                    SectionPlan::Raw {
                        offset: offset(base)?,
                        len: offset(bytes.len())?,
                        width,
                        lut: lut.to_vec(),
                    }
                }
                Parsed::Rans(body) => {
                    let h = Header::parse(body, lut, total)
                        .map_err(|e| Error::Decode(format!("section {s}: {e}")))?;
                    h.check_range(first, last)
                        .map_err(|e| Error::Decode(format!("section {s}: {e}")))?;
                    if h.lanes > MAX_GPU_LANES {
                        return Err(Error::Decode(format!(
                            "section {s}: {} rANS lanes, a warp decodes at most {MAX_GPU_LANES}",
                            h.lanes
                        )));
                    }
                    let in_range: Vec<_> = h
                        .segments()
                        .map_err(|e| Error::Decode(format!("section {s}: {e}")))?
                        .into_iter()
                        .filter(|seg| seg.start >= first && seg.end <= last)
                        .collect();
                    // The segments in range lie back to back in the body.
                    let lo = in_range.first().map_or(0, |seg| seg.offset);
                    let hi = in_range
                        .last()
                        .map_or(0, |seg| seg.offset + seg.bytes.len());
                    data.extend_from_slice(&body[lo..hi]);
                    let mut segments = Vec::new();
                    for seg in in_range {
                        let states_off = base + (seg.offset - lo);
                        segments.push(Segment {
                            out_start: offset(seg.start - first)?,
                            len: offset(seg.end - seg.start)?,
                            states_off: offset(states_off)?,
                            words_off: offset(states_off + 4 * h.lanes)?,
                            words: offset(seg.words)?,
                        });
                    }
                    SectionPlan::Rans {
                        scale_bits: h.scale_bits,
                        lanes: h.lanes as u32,
                        table: h.table.entry,
                        segments,
                    }
                }
            };
            plans.push(plan);
        }
        Ok(plans)
    }
}

/// One const or raw section of one range of a batch, as the `pieces_*`
/// kernels read it (`#[repr(C)]`, eight u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Piece {
    /// First output word in the batch's output.
    pub out_start: u32,
    /// Values.
    pub count: u32,
    /// [`PIECE_CONST`] or [`PIECE_RAW`].
    pub kind: u32,
    /// Const pieces: the contribution. Raw pieces: the lookup table's
    /// length (a larger value is a damaged stream).
    pub value: u32,
    /// Raw pieces: the packed bytes `data[data_off..data_off + len]`,
    /// `width` bits a value, looked up in `luts[lut_off..]`.
    pub data_off: u32,
    /// Bytes of packed values.
    pub len: u32,
    /// Bits a value (1 to 8).
    pub width: u32,
    /// First entry of its lookup table in the batch's `luts`.
    pub lut_off: u32,
}

// SAFETY: `#[repr(C)]`, eight u32 and nothing else (no padding, every bit
// pattern valid): the kernels read pieces as `bytemuck::cast_slice` gives
// them.
unsafe impl bytemuck::Zeroable for Piece {}
unsafe impl bytemuck::Pod for Piece {}
const _: () = assert!(std::mem::size_of::<Piece>() == 32);

/// [`Piece::kind`]: every value gets `value`.
pub const PIECE_CONST: u32 = 0;
/// [`Piece::kind`]: packed values through a lookup table.
pub const PIECE_RAW: u32 = 1;

/// One rANS segment of a batch (`#[repr(C)]`, eight u32): [`Segment`] with
/// its output placed in the batch and its decode table named.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSegment {
    /// First output word, counted from the batch's first.
    pub out_start: u32,
    /// Symbols in the segment.
    pub len: u32,
    /// Byte offset of its `lanes` u32 initial states in the batch's `data`.
    pub states_off: u32,
    /// Byte offset of its u16 words in the batch's `data`.
    pub words_off: u32,
    /// Words in the segment.
    pub words: u32,
    /// First entry of its table in the batch's `tables`.
    pub table_off: u32,
    /// Probabilities are counts out of `2^scale_bits`.
    pub scale_bits: u32,
    /// Interleaved states in the segment.
    pub lanes: u32,
}

// SAFETY: as for `Piece`.
unsafe impl bytemuck::Zeroable for BatchSegment {}
unsafe impl bytemuck::Pod for BatchSegment {}
const _: () = assert!(std::mem::size_of::<BatchSegment>() == 32);

/// Which kernel of `kernels/decode.cu` a [`Launch`] runs (`pieces_*` or
/// `rans_*`, for the batch's word size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `pieces_*`: constant and raw pieces, a grid row each.
    Pieces,
    /// `rans_*`: rANS segments, a warp each.
    Rans,
}

/// Threads a block of `pieces_*`.
pub const PIECE_BLOCK: u32 = 256;
/// The most blocks one piece's values are spread over (each thread then
/// strides over the rest).
pub const PIECE_BLOCKS_MAX: u32 = 64;
/// Threads a block of `rans_*`: four warps, a segment each.
pub const RANS_BLOCK: u32 = 128;
/// The most grid rows (pieces) one launch takes: CUDA's limit on `gridDim.y`.
pub const GRID_ROWS_MAX: usize = 65535;

/// One kernel launch of a batch. [`BatchPlan::launches`] lists them in the
/// order the CUDA engine issues them on one stream, and the tests run the
/// same list through `kernels/decode.cu` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// The kernel to run.
    pub kernel: Kernel,
    /// The pass (section index): pass 0 assigns each word, the later add.
    pub pass: usize,
    /// `Pieces`: the pass's pieces `first..first + count`, a grid row each.
    /// `Rans`: all the pass's segments (`first` is 0), a warp each.
    pub first: usize,
    /// `Pieces`: pieces in the launch. `Rans`: segments in the pass.
    pub count: usize,
    /// CUDA grid dimensions.
    pub grid: (u32, u32, u32),
    /// CUDA block dimensions.
    pub block: (u32, u32, u32),
}

impl Launch {
    /// The kernels' `assign` argument.
    pub fn assign(&self) -> bool {
        self.pass == 0
    }
}

/// The work of one section index across a batch: section `s` of every range
/// that has one. Pass 0 assigns, the later passes add, so passes run in order;
/// within a pass every piece and segment writes words of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    /// Constant and raw pieces, for `pieces_*`.
    pub pieces: Vec<Piece>,
    /// rANS segments, for `rans_*`.
    pub segments: Vec<BatchSegment>,
}

/// Many chunk ranges of one word size, flattened for one set of launches: a
/// warp per rANS segment of every range at once fills a GPU that one chunk's
/// four segments would leave idle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchPlan {
    /// Bytes a value (2 or 4).
    pub word_size: usize,
    /// Words of output, the ranges back to back.
    pub count: usize,
    /// Where each range's words start.
    pub starts: Vec<usize>,
    /// Every range's sections, back to back.
    pub data: Vec<u8>,
    /// The rANS decode tables, back to back.
    pub tables: Vec<u64>,
    /// The raw sections' lookup tables, back to back.
    pub luts: Vec<u32>,
    /// The passes, by section index; each one's launches run after the previous pass's.
    pub passes: Vec<Pass>,
}

impl BatchPlan {
    /// An empty batch of `word_size`-byte values.
    pub fn new(word_size: usize) -> Self {
        BatchPlan {
            word_size,
            ..Default::default()
        }
    }

    /// Plans values `[first, first + count)` of a chunk of `total` values
    /// from its `sections` into the batch, the bytes the range reads copied
    /// once; its words start at the returned offset. Every offset must fit
    /// in 32 bits (a batch stays well under 4 GiB). On an error the batch is
    /// left as it was.
    pub fn push_range(
        &mut self,
        tables: &Tables,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        count: usize,
    ) -> Result<usize> {
        self.atomically(|b| {
            let plans = tables.plan_sections(sections, total, first, count, &mut b.data)?;
            offset(b.data.len())?;
            b.add(tables.kind, count, &plans)
        })
    }

    /// Runs `f`, undoing whatever it appended when it fails.
    fn atomically(&mut self, f: impl FnOnce(&mut Self) -> Result<usize>) -> Result<usize> {
        let before = (
            self.data.len(),
            self.tables.len(),
            self.luts.len(),
            self.passes
                .iter()
                .map(|q| (q.pieces.len(), q.segments.len()))
                .collect::<Vec<_>>(),
        );
        let done = f(self);
        if done.is_err() {
            self.data.truncate(before.0);
            self.tables.truncate(before.1);
            self.luts.truncate(before.2);
            self.passes.truncate(before.3.len());
            for (q, &(a, b)) in self.passes.iter_mut().zip(&before.3) {
                q.pieces.truncate(a);
                q.segments.truncate(b);
            }
        }
        done
    }

    /// Adds the pieces and segments of a range of `count` values whose
    /// sections are planned into `data`.
    fn add(&mut self, kind: FloatKind, count: usize, sections: &[SectionPlan]) -> Result<usize> {
        if kind.size() != self.word_size {
            return Err(Error::Decode(format!(
                "a {}-byte range in a batch of {}-byte words",
                kind.size(),
                self.word_size
            )));
        }
        let out = self.count;
        for (s, sec) in sections.iter().enumerate() {
            if self.passes.len() <= s {
                self.passes.push(Pass::default());
            }
            match sec {
                SectionPlan::Const { value } => self.passes[s].pieces.push(Piece {
                    out_start: offset(out)?,
                    count: offset(count)?,
                    kind: PIECE_CONST,
                    value: *value,
                    ..Piece::default()
                }),
                SectionPlan::Raw {
                    offset: off,
                    len,
                    width,
                    lut,
                } => {
                    let lut_off = offset(self.luts.len())?;
                    self.luts.extend_from_slice(lut);
                    self.passes[s].pieces.push(Piece {
                        out_start: offset(out)?,
                        count: offset(count)?,
                        kind: PIECE_RAW,
                        value: offset(lut.len())?,
                        data_off: *off,
                        len: *len,
                        width: *width,
                        lut_off,
                    });
                }
                SectionPlan::Rans {
                    scale_bits,
                    lanes,
                    table,
                    segments,
                } => {
                    let table_off = offset(self.tables.len())?;
                    self.tables.extend_from_slice(table);
                    for g in segments {
                        self.passes[s].segments.push(BatchSegment {
                            out_start: offset(out + g.out_start as usize)?,
                            len: g.len,
                            states_off: g.states_off,
                            words_off: g.words_off,
                            words: g.words,
                            table_off,
                            scale_bits: *scale_bits,
                            lanes: *lanes,
                        });
                    }
                }
            }
        }
        offset(out + count)?;
        self.count = out + count;
        self.starts.push(out);
        Ok(out)
    }

    /// Empties the batch for `word_size`-byte values, keeping its memory.
    pub fn reset(&mut self, word_size: usize) {
        self.word_size = word_size;
        self.count = 0;
        self.starts.clear();
        self.data.clear();
        self.tables.clear();
        self.luts.clear();
        self.passes.clear();
    }

    /// Ranges in the batch.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the batch holds no range.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The launches that decode the batch, in order: per pass, its pieces
    /// (a grid row each, at most [`GRID_ROWS_MAX`] rows a launch, the columns
    /// striding over the longest piece's values), then its segments (a warp
    /// each). Passes run in order, so a pass's additions land on the words
    /// pass 0 assigned.
    pub fn launches(&self) -> Vec<Launch> {
        let mut out = Vec::new();
        for (pass, p) in self.passes.iter().enumerate() {
            for first in (0..p.pieces.len()).step_by(GRID_ROWS_MAX) {
                let rows = &p.pieces[first..p.pieces.len().min(first + GRID_ROWS_MAX)];
                let longest = rows.iter().map(|x| x.count).max().unwrap_or(0);
                out.push(Launch {
                    kernel: Kernel::Pieces,
                    pass,
                    first,
                    count: rows.len(),
                    grid: (
                        longest.div_ceil(PIECE_BLOCK).clamp(1, PIECE_BLOCKS_MAX),
                        rows.len() as u32,
                        1,
                    ),
                    block: (PIECE_BLOCK, 1, 1),
                });
            }
            if !p.segments.is_empty() {
                out.push(Launch {
                    kernel: Kernel::Rans,
                    pass,
                    first: 0,
                    count: p.segments.len(),
                    grid: (
                        (p.segments.len() * 32).div_ceil(RANS_BLOCK as usize) as u32,
                        1,
                        1,
                    ),
                    block: (RANS_BLOCK, 1, 1),
                });
            }
        }
        out
    }

    /// Bytes the device holds for the batch: output, sections, tables.
    pub fn device_bytes(&self) -> u64 {
        let meta: usize = self
            .passes
            .iter()
            .map(|p| {
                p.pieces.len() * std::mem::size_of::<Piece>()
                    + p.segments.len() * std::mem::size_of::<BatchSegment>()
            })
            .sum();
        (self.count * self.word_size
            + self.data.len()
            + 8 * self.tables.len()
            + 4 * self.luts.len()
            + meta) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::chunk::{self, RANGE_ALIGN};
    use crate::codec::Layout;

    #[test]
    fn a_range_plan_carries_only_the_bytes_it_reads() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let n = 3 * RANGE_ALIGN;
        let bytes = gaussian(FloatKind::BF16, n, 3);
        let enc = chunk::encode(&layout, &bytes);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let stored: usize = secs.iter().map(|s| s.len()).sum();
        let tables = Tables::new(&layout, layout.precision);
        let whole = planned(&tables, &secs, n, 0, n).unwrap().data.len();
        let third = planned(&tables, &secs, n, RANGE_ALIGN, RANGE_ALIGN)
            .unwrap()
            .data
            .len();
        // The whole range reads everything but the rANS header; a third of
        // it reads about a third.
        assert!(
            whole <= stored && whole * 100 > stored * 99,
            "{whole} of {stored}"
        );
        assert!(
            third * 5 < whole * 2 && third * 4 > whole,
            "{third} of {whole}"
        );
    }

    fn gaussian(kind: FloatKind, n: usize, seed: u64) -> Vec<u8> {
        crate::demo::gaussian_bytes(&mut crate::demo::Rng::new(seed), n, 0.03, kind.dtype())
    }

    /// A batch of the one range `[first, first + count)`.
    fn planned(
        tables: &Tables,
        secs: &[&[u8]],
        n: usize,
        first: usize,
        count: usize,
    ) -> Result<BatchPlan> {
        let mut b = BatchPlan::new(tables.kind.size());
        b.push_range(tables, secs, n, first, count)?;
        Ok(b)
    }

    /// A range that fails part-way (its second section damaged, after the
    /// first was planned into the batch) leaves the batch as it was;
    /// `reset` empties it.
    #[test]
    fn push_range_undoes_a_failure() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let n = RANGE_ALIGN + 300;
        let enc = chunk::encode(&layout, &gaussian(FloatKind::BF16, n, 4));
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let tables = Tables::new(&layout, layout.precision);
        let mut direct = BatchPlan::new(2);
        for (a, b) in [(0, RANGE_ALIGN), (RANGE_ALIGN, n), (0, n)] {
            direct.push_range(&tables, &secs, n, a, b - a).unwrap();
        }
        let before = direct.clone();
        let mut bad = secs.clone();
        let short = &secs[1][..secs[1].len() / 2];
        bad[1] = short;
        assert!(direct.push_range(&tables, &bad, n, 0, n).is_err());
        assert_eq!(direct, before, "the failed range left nothing behind");
        direct.reset(4);
        assert_eq!(direct, BatchPlan::new(4));
    }

    #[test]
    fn plans_refuse_what_the_cpu_refuses() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let bytes = gaussian(FloatKind::BF16, RANGE_ALIGN + 100, 3);
        let enc = chunk::encode(&layout, &bytes);
        let tables = Tables::new(&layout, layout.precision);
        let n = bytes.len() / 2;
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let off = planned(&tables, &secs, n, 8, 100).unwrap_err().to_string();
        assert!(off.contains("segment boundaries"), "{off}");
        assert!(planned(&tables, &secs, n, 0, n + 1).is_err());
        assert!(planned(&tables, &secs[..1], n, 0, n).is_err());
        let mut bad = enc.sections[0].clone();
        bad.truncate(bad.len() - 3);
        let mut short = secs.clone();
        short[0] = &bad;
        assert!(planned(&tables, &short, n, 0, n).is_err());
    }
}
