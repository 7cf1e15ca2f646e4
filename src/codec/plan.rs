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
            let base = data.len();
            let in_section = |p: &[u8]| base + (p.as_ptr() as usize - sec.as_ptr() as usize);
            let plan = match symbols::parse(sec, lut, total, first, last)
                .map_err(|e| Error::Decode(format!("section {s}: {e}")))?
            {
                Parsed::Const(value) => SectionPlan::Const { value },
                Parsed::Raw { width, bytes } => SectionPlan::Raw {
                    offset: offset(in_section(bytes))?,
                    len: offset(bytes.len())?,
                    width,
                    lut: lut.to_vec(),
                },
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
                    let body_base = in_section(body);
                    let mut segments = Vec::new();
                    for seg in h
                        .segments()
                        .map_err(|e| Error::Decode(format!("section {s}: {e}")))?
                    {
                        if seg.start < first || seg.end > last {
                            continue;
                        }
                        let states_off = body_base + seg.offset;
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
            data.extend_from_slice(sec);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::chunk::{self, RANGE_ALIGN};
    use crate::codec::rans::Word;
    use crate::codec::Layout;

    /// What `kernels/decode.cu` computes, written out lane by lane: the warp's
    /// ballot becomes a count of the lanes below that read a word. Tests only:
    /// it holds the plan and the kernels' algorithm to the CPU decoder.
    fn emulate<W: Word>(p: &ChunkPlan, out: &mut [W]) -> std::result::Result<(), u32> {
        const L: u32 = 1 << 16;
        let mut err = 0u32;
        for (s, sec) in p.sections.iter().enumerate() {
            let assign = s == 0;
            let emit = |o: &mut W, v: u32| *o = if assign { W::from_u32(v) } else { o.add(v) };
            match sec {
                SectionPlan::Const { value } => out.iter_mut().for_each(|o| emit(o, *value)),
                SectionPlan::Raw {
                    offset,
                    len,
                    width,
                    lut,
                } => {
                    let packed = &p.data[*offset as usize..(*offset + *len) as usize];
                    for (i, o) in out.iter_mut().enumerate() {
                        let bit = i as u64 * *width as u64;
                        let (byte, shift) = ((bit >> 3) as usize, (bit & 7) as u32);
                        let need = ((shift + width + 7) >> 3) as usize;
                        if byte + need > packed.len() {
                            err |= 16;
                            continue;
                        }
                        let mut v = 0u32;
                        for k in 0..need {
                            v |= (packed[byte + k] as u32) << (8 * k);
                        }
                        emit(o, lut[((v >> shift) & ((1 << width) - 1)) as usize]);
                    }
                }
                SectionPlan::Rans {
                    scale_bits,
                    lanes,
                    table,
                    segments,
                } => {
                    let lanes = *lanes as usize;
                    let mask = (1u32 << scale_bits) - 1;
                    for seg in segments {
                        let st = &p.data[seg.states_off as usize..];
                        let words = &p.data[seg.words_off as usize..];
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
                                let y = (e as u32 & 0xffff) * (x[lane] >> scale_bits)
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
            }
        }
        if err == 0 {
            Ok(())
        } else {
            Err(err)
        }
    }

    fn check<W: Word + PartialEq + std::fmt::Debug>(layout: &Layout, bytes: &[u8], target: u32) {
        let n = bytes.len() / layout.kind.size();
        let enc = chunk::encode(layout, bytes);
        let secs: Vec<&[u8]> = enc.sections.iter().map(Vec::as_slice).collect();
        let tables = Tables::new(layout, target);
        let cuts: Vec<usize> = (0..=n.div_ceil(RANGE_ALIGN))
            .map(|k| (k * RANGE_ALIGN).min(n))
            .collect();
        for w in cuts.windows(2).chain(std::iter::once(&[0, n][..])) {
            let (a, b) = (w[0], w[1]);
            let mut want = vec![W::default(); b - a];
            tables.decode_range(&secs, n, a, &mut want).unwrap();
            let plan = tables.plan(&secs, n, a, b - a).unwrap();
            let mut got = vec![W::default(); b - a];
            emulate(&plan, &mut got).unwrap();
            assert!(
                got == want,
                "{:?} p={} target {target}: values {a}..{b} differ",
                layout.kind,
                layout.prime
            );
        }
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
