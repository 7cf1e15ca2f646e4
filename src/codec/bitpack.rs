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
    // A value past the alphabet (possible only when the alphabet is not a
    // power of two) must not index past the table: widen it with zeros and
    // check the largest value seen once at the end.
    let mut wide = [0u32; 1 << MAX_WIDTH];
    wide[..lut.len()].copy_from_slice(lut);
    let wide = &wide[..1 << width];
    let largest = match width {
        1 => unpack::<W, 1>(body, wide, out, assign),
        2 => unpack::<W, 2>(body, wide, out, assign),
        3 => unpack::<W, 3>(body, wide, out, assign),
        4 => unpack::<W, 4>(body, wide, out, assign),
        5 => unpack::<W, 5>(body, wide, out, assign),
        6 => unpack::<W, 6>(body, wide, out, assign),
        7 => unpack::<W, 7>(body, wide, out, assign),
        8 => unpack::<W, 8>(body, wide, out, assign),
        9 => unpack::<W, 9>(body, wide, out, assign),
        10 => unpack::<W, 10>(body, wide, out, assign),
        11 => unpack::<W, 11>(body, wide, out, assign),
        _ => unpack::<W, 12>(body, wide, out, assign),
    };
    if largest as usize >= lut.len() {
        return Err(Error::Decode(format!(
            "raw section holds the value {largest}, outside the alphabet of {}",
            lut.len()
        )));
    }
    Ok(())
}

/// Unpacks groups of eight `WIDTH`-bit values (`WIDTH` bytes each); returns the largest value.
fn unpack<W: Word, const WIDTH: usize>(
    body: &[u8],
    lut: &[u32],
    out: &mut [W],
    assign: bool,
) -> u32 {
    if assign {
        unpack_with::<W, WIDTH, true>(body, lut, out)
    } else {
        unpack_with::<W, WIDTH, false>(body, lut, out)
    }
}

#[inline(always)]
fn unpack_with<W: Word, const WIDTH: usize, const ASSIGN: bool>(
    body: &[u8],
    lut: &[u32],
    out: &mut [W],
) -> u32 {
    let mask = (1u64 << WIDTH) - 1;
    let lut = &lut[..1 << WIDTH];
    let mut largest = 0u64;
    let groups = out.len() / 8;
    let (head, tail) = out.split_at_mut(groups * 8);
    // Eight values of up to 8 bits fill a u64; wider ones a u128.
    let load = |bytes: &[u8]| -> u128 {
        if WIDTH <= 8 {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(word) as u128
        } else {
            let mut word = [0u8; 16];
            word[..bytes.len()].copy_from_slice(bytes);
            u128::from_le_bytes(word)
        }
    };
    let mut put = |block: &mut [W], packed: u128| {
        for (j, o) in block.iter_mut().enumerate() {
            let v = if WIDTH <= 8 {
                ((packed as u64) >> (j * WIDTH)) & mask
            } else {
                ((packed >> (j * WIDTH)) as u64) & mask
            };
            largest = largest.max(v);
            let c = lut[v as usize];
            *o = if ASSIGN { W::from_u32(c) } else { o.add(c) };
        }
    };
    for (block, bytes) in head.chunks_exact_mut(8).zip(body.chunks_exact(WIDTH)) {
        put(block, load(bytes));
    }
    if !tail.is_empty() {
        put(tail, load(&body[groups * WIDTH..]));
    }
    largest as u32
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
