//! One section: a stream of `n` symbols over an alphabet, stored in whichever
//! of three encodings is smallest. The first byte names it:
//!
//! ```text
//! 0 CONST  varint symbol                    every value is the same symbol
//! 1 RAW    u8 width, packed bits            see `bitpack`; the width is the
//!                                           largest symbol's (container
//!                                           version 3; the alphabet's before)
//! 2 RANS   rANS body                        see `rans`
//! ```
//!
//! The element count `n` and the alphabet are not stored here: the container's
//! header gives them, so a section cannot claim more output than its chunk has.
#![forbid(unsafe_code)]

use super::rans::Word;
use super::{bitpack, rans, varint};
use crate::error::{Error, Result};

/// Section encoding: one value for the whole section.
pub const KIND_CONST: u8 = 0;
/// Fixed-width values, bit-packed.
pub const KIND_RAW: u8 = 1;
/// Interleaved rANS ([`super::rans`]).
pub const KIND_RANS: u8 = 2;

/// Bits needed to write any symbol below `alphabet`.
pub fn raw_width(alphabet: u32) -> u32 {
    (32 - (alphabet.max(2) - 1).leading_zeros()).max(1)
}

/// The width a raw section of these counts is stored at: the bits of its
/// largest symbol (a plane whose high symbols are absent, such as the NaN
/// flag's, costs no bit for them).
pub fn stored_width(counts: &[u64]) -> u32 {
    let top = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    raw_width(top as u32 + 1)
}

/// Encodes `syms` (all below `alphabet`) as the smallest of the encodings.
pub fn encode(syms: &[u16], alphabet: u32) -> Vec<u8> {
    let mut counts = vec![0u64; alphabet as usize];
    for &s in syms {
        counts[s as usize] += 1;
    }
    encode_counted(syms, &counts)
}

/// [`encode`], given `counts[s]`, the occurrences of each symbol `s` of the
/// alphabet (`counts.len()` symbols).
pub fn encode_counted(syms: &[u16], counts: &[u64]) -> Vec<u8> {
    let present = counts.iter().filter(|&&c| c > 0).count();
    let mut out = Vec::new();
    if present <= 1 {
        out.push(KIND_CONST);
        varint::put(&mut out, syms.first().copied().unwrap_or(0) as u64);
        return out;
    }
    let width = stored_width(counts);
    let raw_len = 2 + bitpack::packed_len(syms.len(), width);
    if !rans_may_win(counts, syms.len(), raw_len) {
        return raw(syms, width);
    }
    let mut coded = vec![KIND_RANS];
    rans::encode(syms, counts, &mut coded);
    if coded.len() < raw_len {
        return coded;
    }
    raw(syms, width)
}

/// A floor on the bytes [`encode`] gives `syms` (all below `alphabet`): a
/// constant section exactly (its symbol, the one present, taken as 0 where
/// none is), otherwise the smaller of the raw length and the rANS floor. No
/// encoding of these symbols is shorter. The counts are tallied here, not
/// kept: the floor decides whether a run's tensors are worth coding apart.
pub fn encoded_floor(syms: &[u16], alphabet: usize) -> f64 {
    let n = syms.len();
    let mut entropy = Entropy::new(n);
    let (mut first, mut top) = (None, 0);
    super::split::tally(syms, alphabet, |s, c| {
        first.get_or_insert(s);
        top = s;
        entropy.add(c);
    });
    if entropy.present <= 1 {
        let mut out = vec![KIND_CONST];
        varint::put(&mut out, first.unwrap_or(0) as u64);
        return out.len() as f64;
    }
    let raw_len = 2 + bitpack::packed_len(n, raw_width(top as u32 + 1));
    entropy.rans_floor().min(raw_len as f64)
}

/// The section stored raw at `width` bits a symbol.
fn raw(syms: &[u16], width: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bitpack::packed_len(syms.len(), width));
    out.push(KIND_RAW);
    out.push(width as u8);
    bitpack::encode(syms, width, &mut out);
    out
}

/// A floor on the bytes an rANS section of these counts takes (with its
/// kind byte): the empirical entropy (no frequency table codes below it);
/// half of each segment's final states (a state holds at most 16 bits
/// beyond its lower bound `L`, of its 32); each segment's word count (a
/// varint of at least one byte); and the table's fixed fields (kind, scale,
/// lanes, segment size: 6 bytes) and two varints of a byte or more per
/// present symbol.
fn rans_floor(counts: &[u64], n: usize) -> f64 {
    let mut entropy = Entropy::new(n);
    for &c in counts.iter().filter(|&&c| c > 0) {
        entropy.add(c);
    }
    entropy.rans_floor()
}

/// The terms of [`rans_floor`], added a present symbol at a time in symbol
/// order (so that the sum is the same float however the counts were had).
struct Entropy {
    total: f64,
    bits: f64,
    present: usize,
    n: usize,
}

impl Entropy {
    fn new(n: usize) -> Self {
        Entropy {
            total: n as f64,
            bits: 0.0,
            present: 0,
            n,
        }
    }

    /// One present symbol, seen `c > 0` times.
    fn add(&mut self, c: u64) {
        self.bits += c as f64 * (self.total / c as f64).log2();
        self.present += 1;
    }

    fn rans_floor(&self) -> f64 {
        let segments = self.n.div_ceil(rans::SEGMENT_SYMBOLS);
        self.bits / 8.0 + (segments * (2 * rans::LANES + 1) + 6 + 2 * self.present) as f64
    }
}

/// Whether rANS could code the section below `raw_len` bytes: false only
/// when its floor is at or above it, so that skipping the encode
/// never changes which encoding is written.
fn rans_may_win(counts: &[u64], n: usize, raw_len: usize) -> bool {
    rans_floor(counts, n) < raw_len as f64
}

/// Decodes a section into `out` (`out.len()` symbols): `out[i] = lut[sym]`
/// when `assign`, else `out[i] += lut[sym]`.
pub fn decode<W: Word>(section: &[u8], lut: &[u32], out: &mut [W], assign: bool) -> Result<()> {
    let n = out.len();
    decode_range(section, lut, n, 0, out, assign)
}

/// A section's header, parsed and checked for values `[first, last)`.
pub(crate) enum Parsed<'a> {
    /// Every value's contribution.
    Const(u32),
    /// `width`-bit values; `bytes` starts at the byte holding value `first`.
    Raw { width: u32, bytes: &'a [u8] },
    /// An rANS body.
    Rans(&'a [u8]),
}

/// Parses `section` for values `[first, last)` of `total` over `lut`.
pub(crate) fn parse<'a>(
    section: &'a [u8],
    lut: &[u32],
    total: usize,
    first: usize,
    last: usize,
) -> Result<Parsed<'a>> {
    let (&kind, body) = section
        .split_first()
        .ok_or_else(|| Error::Decode("empty section".into()))?;
    match kind {
        KIND_CONST => {
            let mut r = varint::Reader::new(body);
            let sym = r.varint()? as usize;
            if !r.rest().is_empty() {
                return Err(Error::Decode("constant section has trailing bytes".into()));
            }
            let v = *lut.get(sym).ok_or_else(|| {
                Error::Decode(format!(
                    "constant symbol {sym} outside the alphabet of {}",
                    lut.len()
                ))
            })?;
            Ok(Parsed::Const(v))
        }
        KIND_RAW => {
            let (&width, packed) = body
                .split_first()
                .ok_or_else(|| Error::Decode("raw section lacks its width".into()))?;
            let widest = raw_width(lut.len() as u32);
            if width == 0 || width as u32 > widest {
                return Err(Error::Decode(format!(
                    "raw section width {width}, the alphabet of {} needs 1..={widest}",
                    lut.len()
                )));
            }
            let w = width as usize;
            if first % 8 != 0
                || last > total
                || first > last
                || packed.len() != bitpack::packed_len(total, width as u32)
            {
                return Err(Error::Decode(format!(
                    "raw section of {} bytes cannot give values {first}..{last} of {total}",
                    packed.len()
                )));
            }
            Ok(Parsed::Raw {
                width: width as u32,
                bytes: &packed[first * w / 8..bitpack::packed_len(last, width as u32)],
            })
        }
        KIND_RANS => Ok(Parsed::Rans(body)),
        other => Err(Error::Decode(format!("unknown section encoding {other}"))),
    }
}

/// Decodes values `[first, first + out.len())` of a section of `total`
/// values. For rANS both ends must fall on segment boundaries; for raw
/// sections `first` must be a multiple of 8 (a whole byte).
pub fn decode_range<W: Word>(
    section: &[u8],
    lut: &[u32],
    total: usize,
    first: usize,
    out: &mut [W],
    assign: bool,
) -> Result<()> {
    match parse(section, lut, total, first, first + out.len())? {
        Parsed::Const(v) => {
            if assign {
                out.fill(W::from_u32(v));
            } else {
                out.iter_mut().for_each(|o| *o = o.add(v));
            }
            Ok(())
        }
        Parsed::Raw { width, bytes } => bitpack::decode(bytes, width, lut, out, assign),
        Parsed::Rans(body) => rans::decode_range(body, lut, total, first, out, assign),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skewed and near-uniform streams over small and large alphabets.
    fn streams() -> Vec<(Vec<u16>, u32)> {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for (alphabet, skew, n) in [
            (32u32, 0u32, 300_000usize),
            (32, 1, 300_000),
            (256, 0, 200_000),
            (256, 2, 50_000),
            (2048, 4, 270_000),
            (4, 0, 1000),
        ] {
            let syms = (0..n)
                .map(|_| {
                    // `skew` halvings of the range: more weight on small symbols.
                    let mut s = next() as u32 % alphabet;
                    for _ in 0..skew {
                        s = s.min(next() as u32 % alphabet);
                    }
                    s as u16
                })
                .collect();
            out.push((syms, alphabet));
        }
        out
    }

    #[test]
    fn the_rans_floor_is_below_every_rans_section_and_skipping_keeps_the_choice() {
        for (syms, alphabet) in streams() {
            let mut counts = vec![0u64; alphabet as usize];
            syms.iter().for_each(|&s| counts[s as usize] += 1);
            let mut coded = vec![KIND_RANS];
            rans::encode(&syms, &counts, &mut coded);
            let floor = rans_floor(&counts, syms.len());
            assert!(
                floor <= coded.len() as f64,
                "alphabet {alphabet}: floor {floor} above the {} coded bytes",
                coded.len()
            );
            // What `encode` writes is the smaller of the two, as trying both gives.
            let width = stored_width(&counts);
            let raw_len = 2 + bitpack::packed_len(syms.len(), width);
            let got = encode(&syms, alphabet);
            let want = if coded.len() < raw_len {
                coded
            } else {
                raw(&syms, width)
            };
            // The floor a run's parts are weighed by, from the symbols alone.
            let floor_of = encoded_floor(&syms, alphabet as usize);
            assert!(
                floor_of <= got.len() as f64,
                "alphabet {alphabet}: floor above the encoding"
            );
            if counts.iter().filter(|&&c| c > 0).count() > 1 {
                assert_eq!(floor_of, floor.min(raw_len as f64), "alphabet {alphabet}");
            }
            assert!(got == want, "alphabet {alphabet}: a different encoding");
        }
    }
}
