//! The decode tables and the section header: parsing and checking
//! everything before the segments' states and words, and cutting the
//! segments out, bounds-checked.
#![forbid(unsafe_code)]

use super::MAX_SCALE_BITS;
use crate::codec::varint;
use crate::error::{Error, Result};

/// The decoding table, one u64 per slot of `[0, M)`: the symbol's frequency
/// (bits 0..16), `slot - cum` (bits 16..32) and its output contribution (bits
/// 32..64). One entry per slot, so a SIMD decoder fetches a slot with one
/// 64-bit gather element.
pub(crate) struct Table {
    pub(crate) entry: Vec<u64>,
    /// The same table in 32 bits a slot, where the section allows it.
    pub(crate) packed: Option<Packed>,
}

/// The decoding table at 4 bytes a slot: `freq - 1` (bits `0..s`), `slot -
/// cum` (bits `s..2s`) and the symbol's rank `r` (bits `2s..32`), its output
/// contribution being `base + (r << shift)`, with `s = scale_bits`. One AVX2
/// gather fetches eight slots (the 64-bit table takes two, and a shuffle to
/// pull the fields apart), and at `s = 12` the table is 16 KiB: half of L1.
/// It exists when every present symbol's contribution has that form, which
/// for p = 2 is always so (a contribution is the symbol shifted to its bits).
pub(crate) struct Packed {
    pub(crate) entry: Vec<u32>,
    pub(crate) base: u32,
    pub(crate) shift: u32,
}

impl Packed {
    /// The packed table of `present` (symbol, frequency) pairs, in slot order,
    /// or `None` when the ranks do not fit beside the two `scale_bits` fields.
    pub(super) fn build(
        present: &[(usize, usize)],
        lut: &[u32],
        scale_bits: u32,
    ) -> Option<Packed> {
        let base = present.iter().map(|&(s, _)| lut[s]).min()?;
        let spread = present
            .iter()
            .fold(0u32, |acc, &(s, _)| acc | lut[s].wrapping_sub(base));
        let shift = if spread == 0 {
            0
        } else {
            spread.trailing_zeros()
        };
        let rank_bits = 32u32.checked_sub(2 * scale_bits)?;
        let rank = |s: usize| (lut[s] - base) >> shift;
        if present
            .iter()
            .any(|&(s, _)| rank_bits < 32 && rank(s) >> rank_bits != 0)
        {
            return None;
        }
        let mut entry = Vec::with_capacity(1 << scale_bits);
        for &(s, f) in present {
            let head = (f as u32 - 1) | rank(s).checked_shl(2 * scale_bits).unwrap_or(0);
            entry.extend((0..f as u32).map(|j| head | j << scale_bits));
        }
        Some(Packed { entry, base, shift })
    }
}

/// A parsed rANS section header: everything but the segments' states and words.
pub(crate) struct Header<'a> {
    pub(crate) scale_bits: u32,
    pub(crate) lanes: usize,
    pub(super) seg_syms: usize,
    pub(crate) table: Table,
    /// The present symbols and their frequencies, in slot order.
    pub(super) listed: Vec<(usize, usize)>,
    word_counts: Vec<usize>,
    /// The segments' bytes, in order.
    data: &'a [u8],
    /// Where `data` starts in the body.
    data_offset: usize,
    pub(super) n: usize,
}

/// One segment of a section: its symbols `[start, end)`, and its states and
/// words (`lanes` u32 states, then `words` u16 words) at `offset` in the body.
pub(crate) struct SegmentRef<'a> {
    pub(crate) index: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: usize,
    pub(crate) words: usize,
}

impl<'a> Header<'a> {
    /// Parses and checks the header of a body of `n` symbols over `lut.len()`
    /// symbols; the table carries each symbol's `lut` contribution.
    pub(crate) fn parse(body: &'a [u8], lut: &[u32], n: usize) -> Result<Self> {
        let alphabet = lut.len();
        let mut r = varint::Reader::new(body);
        let scale_bits = r.u8()? as u32;
        let lanes = r.u8()? as usize;
        let seg_syms = r.varint()? as usize;
        if !(1..=MAX_SCALE_BITS).contains(&scale_bits) {
            return Err(Error::Decode(format!(
                "rANS scale {scale_bits} outside 1..=15"
            )));
        }
        if lanes == 0 || lanes > 64 {
            return Err(Error::Decode(format!(
                "rANS lane count {lanes} outside 1..=64"
            )));
        }
        if seg_syms == 0 || seg_syms > 1 << 26 {
            return Err(Error::Decode(format!(
                "rANS segment size {seg_syms} out of range"
            )));
        }
        let m = 1usize << scale_bits;
        let present = r.varint()? as usize;
        if present == 0 || present > alphabet {
            return Err(Error::Decode(format!(
                "rANS table lists {present} symbols, alphabet has {alphabet}"
            )));
        }
        let mut table = Table {
            entry: vec![0; m],
            packed: None,
        };
        let mut listed = Vec::with_capacity(present);
        let mut slot = 0usize;
        let mut sym = 0usize;
        for i in 0..present {
            let gap = r.varint()? as usize;
            sym = if i == 0 { gap } else { sym + 1 + gap };
            let f = r.varint()? as usize + 1;
            if sym >= alphabet || f > m - slot {
                return Err(Error::Decode(format!(
                    "rANS table entry {i} (symbol {sym}, frequency {f}) does not fit alphabet {alphabet} and scale {m}"
                )));
            }
            // A lone symbol has f = M = 2^15 at most: it fits the low 16 bits.
            for (j, e) in table.entry[slot..slot + f].iter_mut().enumerate() {
                *e = f as u64 | (j as u64) << 16 | (lut[sym] as u64) << 32;
            }
            listed.push((sym, f));
            slot += f;
        }
        if slot != m {
            return Err(Error::Decode(format!(
                "rANS frequencies sum to {slot}, expected {m}"
            )));
        }
        let nseg = n.div_ceil(seg_syms);
        let mut word_counts = Vec::with_capacity(nseg.min(1 << 16));
        for _ in 0..nseg {
            word_counts.push(r.varint()? as usize);
        }
        let data = r.rest();
        Ok(Header {
            scale_bits,
            lanes,
            seg_syms,
            table,
            listed,
            word_counts,
            data,
            data_offset: body.len() - data.len(),
            n,
        })
    }

    /// Checks that `[first, last)` falls on segment boundaries.
    pub(crate) fn check_range(&self, first: usize, last: usize) -> Result<()> {
        if last > self.n {
            return Err(Error::Decode(format!(
                "range {first}..{last} past the {} symbols",
                self.n
            )));
        }
        if first % self.seg_syms != 0 || (last != self.n && last % self.seg_syms != 0) {
            return Err(Error::Decode(format!(
                "range {first}..{last} does not fall on rANS segment boundaries ({} symbols)",
                self.seg_syms
            )));
        }
        Ok(())
    }

    /// Every segment, in order, bounds-checked; then a check that no byte is
    /// left over.
    pub(crate) fn segments(&self) -> Result<Vec<SegmentRef<'a>>> {
        let mut out = Vec::with_capacity(self.word_counts.len());
        let mut data = self.data;
        let mut offset = self.data_offset;
        for (k, &words) in self.word_counts.iter().enumerate() {
            let start = k * self.seg_syms;
            let end = (start + self.seg_syms).min(self.n);
            let lanes = self.lanes;
            let need = lanes
                .checked_mul(4)
                .and_then(|s| words.checked_mul(2).and_then(|w| w.checked_add(s)))
                .filter(|&b| b <= data.len())
                .ok_or_else(|| {
                    Error::Decode(format!(
                        "rANS segment {k} needs {words} words and {lanes} states, more than the {} bytes left",
                        data.len()
                    ))
                })?;
            let (seg, rest) = data.split_at(need);
            out.push(SegmentRef {
                index: k,
                start,
                end,
                bytes: seg,
                offset,
                words,
            });
            data = rest;
            offset += need;
        }
        if !data.is_empty() {
            return Err(Error::Decode(format!(
                "{} bytes left over after the last rANS segment",
                data.len()
            )));
        }
        Ok(out)
    }
}
