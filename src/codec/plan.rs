//! Device plans: a chunk's sections parsed and checked on the host, with the
//! tables and offsets the GPU kernels (`kernels/decode.cu`) read. The parse
//! is the CPU decoder's own ([`symbols::parse`], [`rans::Header`]), so a
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
    Const { value: u32 },
    /// `width`-bit values from `data[offset..offset + len]`, looked up in `lut`.
    Raw {
        offset: u32,
        len: u32,
        width: u32,
        lut: Vec<u32>,
    },
    /// One warp per segment over `table` (frequency, slot offset and
    /// contribution per slot, as the CPU decoder's).
    Rans {
        scale_bits: u32,
        lanes: u32,
        table: Vec<u64>,
        segments: Vec<Segment>,
    },
}

/// A chunk range ready for the device.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPlan {
    pub kind: FloatKind,
    /// Values decoded.
    pub count: usize,
    /// The sections read, back to back.
    pub data: Vec<u8>,
    /// In order: the first assigns, the others add.
    pub sections: Vec<SectionPlan>,
}

/// The most rANS lanes a warp decodes.
pub const MAX_GPU_LANES: usize = 32;

fn offset(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Decode(format!("offset {v} does not fit the GPU plan")))
}

impl Tables {
    /// Plans the decode of values `[first, first + count)` of a chunk of
    /// `total` values from its `sections`.
    pub fn plan(
        &self,
        sections: &[&[u8]],
        total: usize,
        first: usize,
        count: usize,
    ) -> Result<ChunkPlan> {
        let last = first
            .checked_add(count)
            .filter(|&l| l <= total)
            .ok_or_else(|| {
                Error::Decode(format!("range {first}+{count} past the {total} values"))
            })?;
        let mut data = Vec::new();
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
        Ok(ChunkPlan {
            kind: self.kind,
            count,
            data,
            sections: plans,
        })
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
    pub len: u32,
    pub width: u32,
    pub lut_off: u32,
}

/// [`Piece::kind`]: every value gets `value`.
pub const PIECE_CONST: u32 = 0;
/// [`Piece::kind`]: packed values through a lookup table.
pub const PIECE_RAW: u32 = 1;

/// One rANS segment of a batch (`#[repr(C)]`, eight u32): [`Segment`] with
/// its output placed in the batch and its decode table named.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSegment {
    pub out_start: u32,
    pub len: u32,
    pub states_off: u32,
    pub words_off: u32,
    pub words: u32,
    /// First entry of its table in the batch's `tables`.
    pub table_off: u32,
    pub scale_bits: u32,
    pub lanes: u32,
}

/// The work of one section index across a batch: section `s` of every range
/// that has one. Pass 0 assigns, the later passes add, so passes run in order;
/// within a pass every piece and segment writes words of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    pub pieces: Vec<Piece>,
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

    /// Appends a range; its words start at the returned offset. Every offset
    /// must fit in 32 bits (a batch stays well under 4 GiB).
    pub fn push(&mut self, p: &ChunkPlan) -> Result<usize> {
        // On an error the batch is left as it was.
        let before = (
            self.tables.len(),
            self.luts.len(),
            self.passes
                .iter()
                .map(|q| (q.pieces.len(), q.segments.len()))
                .collect::<Vec<_>>(),
        );
        let pushed = self.push_unchecked(p);
        if pushed.is_err() {
            self.tables.truncate(before.0);
            self.luts.truncate(before.1);
            self.passes.truncate(before.2.len());
            for (q, &(a, b)) in self.passes.iter_mut().zip(&before.2) {
                q.pieces.truncate(a);
                q.segments.truncate(b);
            }
        }
        pushed
    }

    fn push_unchecked(&mut self, p: &ChunkPlan) -> Result<usize> {
        if p.kind.size() != self.word_size {
            return Err(Error::Decode(format!(
                "a {}-byte range in a batch of {}-byte words",
                p.kind.size(),
                self.word_size
            )));
        }
        let out = self.count;
        let base = self.data.len();
        let at = |v: u32| offset(base + v as usize);
        for (s, sec) in p.sections.iter().enumerate() {
            if self.passes.len() <= s {
                self.passes.push(Pass::default());
            }
            match sec {
                SectionPlan::Const { value } => self.passes[s].pieces.push(Piece {
                    out_start: offset(out)?,
                    count: offset(p.count)?,
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
                        count: offset(p.count)?,
                        kind: PIECE_RAW,
                        value: offset(lut.len())?,
                        data_off: at(*off)?,
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
                            states_off: at(g.states_off)?,
                            words_off: at(g.words_off)?,
                            words: g.words,
                            table_off,
                            scale_bits: *scale_bits,
                            lanes: *lanes,
                        });
                    }
                }
            }
        }
        offset(base + p.data.len())?;
        offset(out + p.count)?;
        self.data.extend_from_slice(&p.data);
        self.count = out + p.count;
        self.starts.push(out);
        Ok(out)
    }

    /// Ranges in the batch.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
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
    use crate::codec::rans::Word;
    use crate::codec::Layout;

    /// What `kernels/decode.cu` computes, written out lane by lane: the warp's
    /// ballot becomes a count of the lanes below that read a word. Tests only:
    /// it holds the batch plan and the kernels' algorithm to the CPU decoder.
    fn emulate<W: Word>(b: &BatchPlan, out: &mut [W]) -> std::result::Result<(), u32> {
        const L: u32 = 1 << 16;
        let mut err = 0u32;
        for (s, pass) in b.passes.iter().enumerate() {
            let assign = s == 0;
            let emit = |o: &mut W, v: u32| *o = if assign { W::from_u32(v) } else { o.add(v) };
            for p in &pass.pieces {
                for i in 0..p.count {
                    let o = &mut out[(p.out_start + i) as usize];
                    if p.kind == PIECE_CONST {
                        emit(o, p.value);
                        continue;
                    }
                    let bit = i as u64 * p.width as u64;
                    let (byte, shift) = ((bit >> 3) as u32, (bit & 7) as u32);
                    let need = (shift + p.width + 7) >> 3;
                    if byte + need > p.len {
                        err |= 16;
                        continue;
                    }
                    let mut v = 0u32;
                    for k in 0..need {
                        v |= (b.data[(p.data_off + byte + k) as usize] as u32) << (8 * k);
                    }
                    let sym = (v >> shift) & ((1 << p.width) - 1);
                    if sym >= p.value {
                        err |= 16;
                        continue;
                    }
                    emit(o, b.luts[(p.lut_off + sym) as usize]);
                }
            }
            for seg in &pass.segments {
                let lanes = seg.lanes as usize;
                let table = &b.tables[seg.table_off as usize..];
                let mask = (1u32 << seg.scale_bits) - 1;
                let st = &b.data[seg.states_off as usize..];
                let words = &b.data[seg.words_off as usize..];
                let mut x: Vec<u32> = (0..lanes)
                    .map(|j| u32::from_le_bytes(st[4 * j..4 * j + 4].try_into().unwrap()))
                    .collect();
                if x.iter().any(|&v| v < L) {
                    err |= 1;
                }
                let mut pos = 0u32;
                let mut base = 0usize;
                while base < seg.len as usize {
                    let mut need = [false; 32];
                    let mut ys = [0u32; 32];
                    for lane in 0..lanes {
                        let i = base + lane;
                        if i >= seg.len as usize {
                            continue;
                        }
                        let e = table[(x[lane] & mask) as usize];
                        let y = (e as u32 & 0xffff) * (x[lane] >> seg.scale_bits)
                            + ((e >> 16) as u32 & 0xffff);
                        emit(&mut out[seg.out_start as usize + i], (e >> 32) as u32);
                        ys[lane] = y;
                        need[lane] = y < L;
                    }
                    let ballot = need.iter().filter(|&&b| b).count() as u32;
                    let mut below = 0u32;
                    for lane in 0..lanes {
                        if base + lane >= seg.len as usize {
                            continue;
                        }
                        let mut y = ys[lane];
                        if need[lane] {
                            let idx = pos + below;
                            below += 1;
                            if idx < seg.words {
                                let w = u16::from_le_bytes([
                                    words[2 * idx as usize],
                                    words[2 * idx as usize + 1],
                                ]);
                                y = (y << 16) | w as u32;
                            } else {
                                err |= 2;
                            }
                        }
                        x[lane] = y;
                    }
                    pos += ballot;
                    base += lanes;
                }
                if pos != seg.words {
                    err |= 4;
                }
                if x.iter().any(|&v| v != L) {
                    err |= 8;
                }
            }
        }
        if err == 0 {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// Decodes `bytes` under `layout` and `target` as several ranges (each
    /// segment alone, then the whole) in `batch`, and returns what the CPU
    /// decoder gives for the same ranges, in the same order.
    fn add_ranges<W: Word>(
        batch: &mut BatchPlan,
        layout: &Layout,
        bytes: &[u8],
        target: u32,
    ) -> Vec<W> {
        let n = bytes.len() / layout.kind.size();
        let enc = chunk::encode(layout, bytes);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let tables = Tables::new(layout, target);
        let cuts: Vec<usize> = (0..=n.div_ceil(RANGE_ALIGN))
            .map(|k| (k * RANGE_ALIGN).min(n))
            .collect();
        let mut want = Vec::new();
        for w in cuts.windows(2).chain(std::iter::once(&[0, n][..])) {
            let (a, b) = (w[0], w[1]);
            let mut part = vec![W::default(); b - a];
            tables.decode_range(&secs, n, a, &mut part).unwrap();
            want.extend_from_slice(&part);
            let start = batch
                .push(&tables.plan(&secs, n, a, b - a).unwrap())
                .unwrap();
            assert_eq!(start + part.len(), batch.count);
        }
        want
    }

    fn check<W: Word + PartialEq + std::fmt::Debug>(layout: &Layout, bytes: &[u8], target: u32) {
        let mut batch = BatchPlan::new(layout.kind.size());
        let want = add_ranges::<W>(&mut batch, layout, bytes, target);
        let mut got = vec![W::default(); batch.count];
        emulate(&batch, &mut got).unwrap();
        assert!(
            got == want,
            "{:?} p={} target {target}: the batch differs from the CPU decoder",
            layout.kind,
            layout.prime
        );
    }

    #[test]
    fn a_range_plan_carries_only_the_bytes_it_reads() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let n = 3 * RANGE_ALIGN;
        let bytes = gaussian(FloatKind::BF16, n, 3);
        let enc = chunk::encode(&layout, &bytes);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let stored: usize = secs.iter().map(|s| s.len()).sum();
        let tables = Tables::new(&layout, layout.precision);
        let whole = tables.plan(&secs, n, 0, n).unwrap().data.len();
        let third = tables
            .plan(&secs, n, RANGE_ALIGN, RANGE_ALIGN)
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
        let dtype = match kind {
            FloatKind::BF16 => safetensors::Dtype::BF16,
            FloatKind::F16 => safetensors::Dtype::F16,
            FloatKind::F32 => safetensors::Dtype::F32,
        };
        crate::demo::gaussian_bytes(&mut crate::demo::Rng::new(seed), n, 0.03, dtype)
    }

    #[test]
    fn the_kernels_algorithm_on_the_plan_matches_the_cpu_decoder() {
        // Several segments and a short last one; every dtype; p = 2 (raw and
        // rANS planes), 3 and 257 (digit sections of other alphabets).
        let n = 2 * RANGE_ALIGN + 1234;
        for kind in [FloatKind::BF16, FloatKind::F16, FloatKind::F32] {
            let bytes = gaussian(kind, n, 7);
            for prime in [2u32, 3, 257] {
                let layout = Layout::new(kind, prime, None, false).unwrap();
                for target in [layout.precision, 1] {
                    match kind {
                        FloatKind::F32 => check::<u32>(&layout, &bytes, target),
                        _ => check::<u16>(&layout, &bytes, target),
                    }
                }
            }
        }
        // Every bf16 and f16 bit pattern (specials, subnormals, NaN payloads).
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
        for kind in [FloatKind::BF16, FloatKind::F16] {
            let layout = Layout::new(kind, 2, None, false).unwrap();
            check::<u16>(&layout, &all, layout.precision);
        }
    }

    #[test]
    fn one_batch_mixes_dtypes_primes_and_section_kinds() {
        // bf16 and f16 share 16-bit words: p = 2 (rANS head, raw plane),
        // p = 3 and p = 257 (other alphabets), a constant chunk, and a
        // target of one digit, all in one batch and one set of passes.
        let mut batch = BatchPlan::new(2);
        let mut want: Vec<u16> = Vec::new();
        for (k, kind) in [FloatKind::BF16, FloatKind::F16].into_iter().enumerate() {
            for prime in [2u32, 3, 257] {
                let layout = Layout::new(kind, prime, None, false).unwrap();
                let bytes = gaussian(kind, RANGE_ALIGN + 777 * (k + 1), prime as u64);
                want.extend(add_ranges::<u16>(
                    &mut batch,
                    &layout,
                    &bytes,
                    layout.precision,
                ));
                want.extend(add_ranges::<u16>(&mut batch, &layout, &bytes, 1));
            }
            let layout = Layout::new(kind, 2, None, false).unwrap();
            let same: Vec<u8> = std::iter::repeat_n([0x3c, 0x40], 5000).flatten().collect();
            want.extend(add_ranges::<u16>(
                &mut batch,
                &layout,
                &same,
                layout.precision,
            ));
        }
        let kinds = |p: &Pass| {
            (
                p.pieces.iter().any(|x| x.kind == PIECE_CONST),
                p.pieces.iter().any(|x| x.kind == PIECE_RAW),
                !p.segments.is_empty(),
            )
        };
        assert_eq!(kinds(&batch.passes[0]), (true, false, true));
        assert!(kinds(&batch.passes[1]).1);
        let mut got = vec![0u16; batch.count];
        emulate(&batch, &mut got).unwrap();
        assert!(got == want, "the mixed batch differs from the CPU decoder");
        // A range of another word size is refused.
        let layout = Layout::new(FloatKind::F32, 2, None, false).unwrap();
        let bytes = gaussian(FloatKind::F32, 100, 1);
        let enc = chunk::encode(&layout, &bytes);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let plan = Tables::new(&layout, layout.precision)
            .plan(&secs, 100, 0, 100)
            .unwrap();
        assert!(batch.push(&plan).is_err());
    }

    /// Damaged sections never lead the kernels out of bounds: whatever the
    /// host's checks let through to a plan, the model of the kernels (whose
    /// every read is a bounds-checked slice index here) either decodes or
    /// reports damage, and never panics.
    #[test]
    fn damaged_sections_never_take_the_kernels_out_of_bounds() {
        let mut rng = crate::demo::Rng::new(77);
        let mut planned = 0;
        for (kind, prime) in [
            (FloatKind::BF16, 2u32),
            (FloatKind::F16, 3),
            (FloatKind::F32, 2),
            (FloatKind::BF16, 257),
        ] {
            let layout = Layout::new(kind, prime, None, false).unwrap();
            let n = RANGE_ALIGN + 999;
            let bytes = gaussian(kind, n, prime as u64);
            let enc = chunk::encode(&layout, &bytes);
            let tables = Tables::new(&layout, layout.precision);
            for _ in 0..300 {
                let mut secs = enc.sections.clone();
                let s = (rng.next_u64() % secs.len() as u64) as usize;
                let sec = &mut secs[s];
                for _ in 0..1 + rng.next_u64() % 4 {
                    let at = (rng.next_u64() % sec.len() as u64) as usize;
                    match rng.next_u64() % 3 {
                        0 => sec[at] ^= 1 << (rng.next_u64() % 8),
                        1 => sec[at] = rng.next_u64() as u8,
                        _ => sec.truncate(at.max(1)),
                    }
                }
                let refs: Vec<&[u8]> = secs.iter().map(Vec::as_slice).collect();
                let Ok(plan) = tables.plan(&refs, n, 0, n) else {
                    continue;
                };
                planned += 1;
                let mut batch = BatchPlan::new(kind.size());
                batch.push(&plan).unwrap();
                match kind {
                    FloatKind::F32 => {
                        let _ = emulate(&batch, &mut vec![0u32; batch.count]);
                    }
                    _ => {
                        let _ = emulate(&batch, &mut vec![0u16; batch.count]);
                    }
                }
            }
        }
        assert!(
            planned > 100,
            "only {planned} damaged chunks got past the host's checks"
        );
    }

    #[test]
    fn the_kernels_report_damage_rather_than_decode_it() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let bytes = gaussian(FloatKind::BF16, RANGE_ALIGN, 5);
        let mut batch = BatchPlan::new(2);
        add_ranges::<u16>(&mut batch, &layout, &bytes, layout.precision);
        let mut out = vec![0u16; batch.count];
        // A word count one short: the segment ends with words unread.
        let mut short = batch.clone();
        short.passes[0].segments[0].words -= 1;
        assert!(matches!(emulate(&short, &mut out), Err(e) if e & 4 != 0 || e & 8 != 0));
        // A raw lookup table claimed shorter than the values in the plane.
        let mut lut = batch.clone();
        let raw = lut.passes[1]
            .pieces
            .iter_mut()
            .find(|p| p.kind == PIECE_RAW)
            .unwrap();
        raw.value = 1;
        assert_eq!(emulate(&lut, &mut out).unwrap_err() & 16, 16);
    }

    #[test]
    fn plans_refuse_what_the_cpu_refuses() {
        let layout = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        let bytes = gaussian(FloatKind::BF16, RANGE_ALIGN + 100, 3);
        let enc = chunk::encode(&layout, &bytes);
        let tables = Tables::new(&layout, layout.precision);
        let n = bytes.len() / 2;
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let off = tables.plan(&secs, n, 8, 100).unwrap_err().to_string();
        assert!(off.contains("segment boundaries"), "{off}");
        assert!(tables.plan(&secs, n, 0, n + 1).is_err());
        assert!(tables.plan(&secs[..1], n, 0, n).is_err());
        let mut bad = enc.sections[0].clone();
        bad.truncate(bad.len() - 3);
        let mut short = secs.clone();
        short[0] = &bad;
        assert!(tables.plan(&short, n, 0, n).is_err());
    }
}
