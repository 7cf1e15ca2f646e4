//! The safe decoder of one segment: whole 32-lane blocks with a branch-free
//! renormalisation, then symbol by symbol to the segment's end. Where the
//! CPU allows, the AVX2 decoder ([`super::avx2`]) takes the whole blocks
//! first and this one finishes the tail.
#![forbid(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::{Plane, Table, Word, LANES, RANS_L};
use crate::error::{Error, Result};

/// Decodes one segment into `out`; returns how many of its leading values
/// (a multiple of 32) also took their `planes`' contributions.
pub(super) fn decode_segment<W: Word, const ASSIGN: bool>(
    seg: &[u8],
    lanes: usize,
    scale_bits: u32,
    table: &Table,
    out: &mut [W],
    allow_simd: bool,
    planes: &[Plane],
) -> Result<usize> {
    let (state_bytes, words) = seg.split_at(lanes * 4);
    let mut states = [0u32; 64];
    for (st, b) in states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *st = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *st < RANS_L {
            return Err(Error::Decode(format!("initial state {st:#x} below 2^16")));
        }
    }
    let mask = (1u32 << scale_bits) - 1;
    debug_assert_eq!(table.entry.len(), mask as usize + 1);
    let entry = &table.entry[..];
    let n = out.len();
    let mut pos = 0usize; // byte position in `words`
    let mut i = 0usize;
    let emit = |o: &mut W, v: u32| {
        *o = if ASSIGN { W::from_u32(v) } else { o.add(v) };
    };
    #[cfg(target_arch = "x86_64")]
    let fused = if allow_simd && lanes == LANES && avx2::available() {
        let (done, read, fused) =
            avx2::blocks::<W, ASSIGN>(&mut states, words, scale_bits, table, out, planes);
        i = done;
        pos = read;
        fused
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let fused = {
        let _ = (planes, allow_simd);
        0
    };
    if lanes == LANES {
        // Blocks of one symbol per lane. A block reads at most LANES words, so
        // while that many remain no read can fail, and the renormalisation is
        // branch-free: the next word is always loaded and kept or not (a
        // data-dependent branch here mispredicts on a fifth of the symbols).
        let mut st = [0u32; LANES];
        st.copy_from_slice(&states[..LANES]);
        while n - i >= LANES && words.len() - pos >= 2 * LANES {
            let w = &words[pos..pos + 2 * LANES];
            let block = &mut out[i..i + LANES];
            // Two passes: the state updates are independent across lanes; only
            // the word position chains from lane to lane, and that chain is an add.
            for (x, o) in st.iter_mut().zip(block.iter_mut()) {
                let e = entry[(*x & mask) as usize];
                *x = (e as u32 & 0xffff) * (*x >> scale_bits) + (e as u32 >> 16);
                emit(o, (e >> 32) as u32);
            }
            let mut p = 0usize;
            for x in st.iter_mut() {
                let next = u16::from_le_bytes([w[p], w[p + 1]]) as u32;
                // Arithmetic, not a select: LLVM turns a select back into a branch.
                let need = (*x < RANS_L) as u32;
                *x = (*x << (16 * need)) | (next & need.wrapping_neg());
                p += 2 * need as usize;
            }
            pos += p;
            i += LANES;
        }
        states[..LANES].copy_from_slice(&st);
    }
    while i < n {
        let lane = i % lanes;
        let x = states[lane];
        let e = entry[(x & mask) as usize];
        let mut y = (e as u32 & 0xffff) * (x >> scale_bits) + (e as u32 >> 16);
        if y < RANS_L {
            let b = words
                .get(pos..pos + 2)
                .ok_or_else(|| Error::Decode(format!("word stream ends at symbol {i} of {n}")))?;
            y = (y << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            pos += 2;
        }
        states[lane] = y;
        emit(&mut out[i], (e >> 32) as u32);
        i += 1;
    }
    if pos != words.len() {
        return Err(Error::Decode(format!(
            "{} words left unread",
            (words.len() - pos) / 2
        )));
    }
    if states[..lanes].iter().any(|&s| s != RANS_L) {
        return Err(Error::Decode(
            "final states differ from the encoder's start (stream corrupt)".into(),
        ));
    }
    Ok(fused)
}
