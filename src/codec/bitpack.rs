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

/// Appends `syms` packed at `width` bits.
pub fn encode(syms: &[u16], width: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packed_len(syms.len(), width), 0);
    let buf = &mut out[start..];
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    let mut pos = 0usize;
    for &s in syms {
        acc |= (s as u64) << nbits;
        nbits += width;
        while nbits >= 8 {
            buf[pos] = acc as u8;
            pos += 1;
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        buf[pos] = acc as u8;
    }
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
    // Every value must index the table; widen the table to the full width so
    // a corrupt value reads a sentinel instead of out of bounds.
    let mut wide = lut.to_vec();
    let invalid = u32::MAX;
    wide.resize(1 << width, invalid);
    let mask = (1u64 << width) - 1;
    let w = width as usize;
    let mut bad = false;
    let mut apply = |o: &mut W, v: u64| {
        let c = wide[v as usize];
        bad |= c == invalid;
        *o = if assign { W::from_u32(c) } else { o.add(c) };
    };
    let groups = out.len() / 8;
    let (head, tail) = out.split_at_mut(groups * 8);
    for (g, block) in head.chunks_exact_mut(8).enumerate() {
        let bytes = &body[g * w..g * w + w];
        let mut word = [0u8; 16];
        word[..w].copy_from_slice(bytes);
        let packed = u128::from_le_bytes(word);
        for (j, o) in block.iter_mut().enumerate() {
            apply(o, ((packed >> (j * w)) as u64) & mask);
        }
    }
    if !tail.is_empty() {
        let bytes = &body[groups * w..];
        let mut word = [0u8; 16];
        word[..bytes.len()].copy_from_slice(bytes);
        let packed = u128::from_le_bytes(word);
        for (j, o) in tail.iter_mut().enumerate() {
            apply(o, ((packed >> (j * w)) as u64) & mask);
        }
    }
    if bad {
        return Err(Error::Decode(format!(
            "raw section holds a value outside the alphabet of {}",
            lut.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn value_outside_alphabet_is_an_error() {
        let lut = vec![0u32; 5]; // width 3 holds 0..8, alphabet only 0..5
        let mut body = Vec::new();
        encode(&[1, 6, 2], 3, &mut body);
        let mut out = vec![0u32; 3];
        assert!(decode(&body, 3, &lut, &mut out, true).is_err());
    }
}
