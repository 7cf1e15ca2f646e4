//! The rANS coder held to itself: round trips, the SIMD decoder against the
//! safe one, the plane fused into the rANS pass, the packed table and the
//! frequency normalisation.
#![forbid(unsafe_code)]

use super::*;

fn counts_of(syms: &[u16], alphabet: usize) -> Vec<u64> {
    let mut c = vec![0u64; alphabet];
    for &s in syms {
        c[s as usize] += 1;
    }
    c
}

#[test]
fn round_trips_skewed_and_lone_symbols() {
    let lut: Vec<u32> = (0..300u32).map(|s| s * 7 + 1).collect();
    let mut x = 12345u64;
    let mut syms = Vec::new();
    for _ in 0..(SEGMENT_SYMBOLS * 2 + 77) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (x >> 33) as u32;
        syms.push(((r % 1000) as u16).min(299) / 3 + if r % 97 == 0 { 200 } else { 0 });
    }
    for syms in [syms, vec![5u16; 1000], vec![0u16, 299]] {
        let mut body = Vec::new();
        encode(&syms, &counts_of(&syms, 300), &mut body);
        let mut out = vec![0u32; syms.len()];
        decode(&body, &lut, &mut out, true).unwrap();
        for (o, s) in out.iter().zip(&syms) {
            assert_eq!(*o, lut[*s as usize]);
        }
    }
}

#[test]
fn simd_and_scalar_decoders_agree() {
    let mut x = 99u64;
    for (alphabet, n) in [(2048usize, 300_001usize), (256, 70_000), (7, 1000), (2, 33)] {
        let syms: Vec<u16> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (x >> 40) as usize;
                // Skewed: most symbols near the middle, a long tail.
                ((alphabet / 2 + (r % 61)) ^ ((r & 3) * (r % 97 == 0) as usize)) as u16
                    % alphabet as u16
            })
            .collect();
        let mut body = Vec::new();
        encode(&syms, &counts_of(&syms, alphabet), &mut body);
        // Scattered contributions take the 64-bit table; a symbol shifted
        // into place (p = 2) takes the packed one where its rank fits.
        let scattered: Vec<u32> = (0..alphabet as u32)
            .map(|s| s.wrapping_mul(0x9e37_79b9))
            .collect();
        let shifted: Vec<u32> = (0..alphabet as u32).map(|s| 0x8003 + (s << 4)).collect();
        let packed = |lut: &[u32]| {
            let h = Header::parse(&body, lut, n).unwrap();
            Packed::build(&h.listed, lut, h.scale_bits).is_some()
        };
        assert!(!packed(&scattered));
        if avx2::available() {
            assert!(packed(&shifted));
        }
        for (lut32, assign) in [(&scattered, true), (&scattered, false), (&shifted, true)] {
            let lut16: Vec<u32> = lut32.iter().map(|v| v & 0xffff).collect();
            let mut a = vec![7u32; n];
            let mut b = vec![7u32; n];
            decode_with(&body, lut32, n, 0, &mut a, assign, true, &[]).unwrap();
            decode_with(&body, lut32, n, 0, &mut b, assign, false, &[]).unwrap();
            assert_eq!(a, b);
            let mut a = vec![7u16; n];
            let mut b = vec![7u16; n];
            decode_with(&body, &lut16, n, 0, &mut a, assign, true, &[]).unwrap();
            decode_with(&body, &lut16, n, 0, &mut b, assign, false, &[]).unwrap();
            assert_eq!(a, b);
            if assign {
                let want: Vec<u16> = syms.iter().map(|&s| lut16[s as usize] as u16).collect();
                assert_eq!(a, want);
            }
        }
    }
}

#[test]
fn planes_fused_into_the_rans_pass_add_what_second_passes_would() {
    let mut x = 7u64;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    // bf16 at p = 2: a head of E and three digits (bits 4..15). Before
    // container version 3, one plane of the sign (bit 4 to bit 15) and four
    // digits (bits 0..4); f16: one plane of the sign and seven digits. From
    // version 3 a plane of the sign and the NaN flag (bit 1 to the quiet
    // bit, 6 for bf16, or nothing at full precision), then one of the digits.
    let head: Vec<u32> = (0..2048u32).map(|s| s << 4).collect();
    let bf16_plane: Vec<u32> = (0..32u32).map(|v| (v & 15) | (v >> 4) << 15).collect();
    let f16_plane: Vec<u32> = (0..256u32).map(|v| (v & 127) | (v >> 7) << 15).collect();
    let sign_flagged: Vec<u32> = (0..4u32).map(|v| (v & 1) << 15 | (v >> 1) << 6).collect();
    let sign: Vec<u32> = (0..4u32).map(|v| (v & 1) << 15).collect();
    let digits4: Vec<u32> = (0..16u32).collect();
    let digits7: Vec<u32> = (0..128u32).collect();
    let sets: [&[(&Vec<u32>, u32)]; 5] = [
        &[(&bf16_plane, 5)],
        &[(&f16_plane, 8)],
        &[(&sign_flagged, 2), (&digits4, 4)],
        &[(&sign, 1), (&digits4, 4)],
        &[(&sign_flagged, 1), (&digits7, 7)],
    ];
    for n in [2 * SEGMENT_SYMBOLS + 77, SEGMENT_SYMBOLS, 4099, 200, 31] {
        let syms: Vec<u16> = (0..n).map(|_| (1000 + next(40) * next(3)) as u16).collect();
        let mut body = Vec::new();
        encode(&syms, &counts_of(&syms, 2048), &mut body);
        for set in sets {
            let values: Vec<Vec<u16>> = set
                .iter()
                .map(|&(_, width)| (0..n).map(|_| next(1 << width) as u16).collect())
                .collect();
            let packed: Vec<Vec<u8>> = set
                .iter()
                .zip(&values)
                .map(|(&(_, width), v)| {
                    let mut packed = Vec::new();
                    bitpack::encode(v, width, &mut packed);
                    packed
                })
                .collect();
            let runs: Vec<Vec<(u32, i32)>> = set
                .iter()
                .map(|&(lut, width)| {
                    bitpack::bit_runs(&lut[..1 << width], width).expect("bit runs")
                })
                .collect();
            let ranges = [(0, n), (0, n.min(SEGMENT_SYMBOLS)), (SEGMENT_SYMBOLS, n)];
            for (first, last) in ranges.into_iter().filter(|(a, b)| a < b) {
                let planes: Vec<Plane> = set
                    .iter()
                    .zip(&packed)
                    .zip(&runs)
                    .map(|((&(lut, width), packed), runs)| Plane {
                        bytes: &packed
                            [first * width as usize / 8..bitpack::packed_len(last, width)],
                        width,
                        lut,
                        runs,
                    })
                    .collect();
                let mut got = vec![0u16; last - first];
                let in_pass =
                    decode_with(&body, &head, n, first, &mut got, true, true, &planes).unwrap();
                let want: Vec<u16> = (first..last)
                    .map(|i| {
                        let planes: u32 = set
                            .iter()
                            .zip(&values)
                            .map(|(&(lut, _), v)| lut[v[i] as usize])
                            .sum();
                        (head[syms[i] as usize] + planes) as u16
                    })
                    .collect();
                let widths: Vec<u32> = set.iter().map(|p| p.1).collect();
                assert!(
                    got == want,
                    "n {n}, widths {widths:?}, range {first}..{last}"
                );
                // The SIMD decoder takes the planes along for all but the
                // last blocks of each segment (where its words run short).
                if avx2::available() {
                    let segments = (last - first).div_ceil(SEGMENT_SYMBOLS);
                    let len = last - first;
                    assert!(in_pass + 8 * LANES * segments >= len, "{in_pass} of {len}");
                    assert!(len < 8 * LANES || in_pass > 0);
                }
            }
        }
    }
}

#[test]
fn packed_table_only_where_every_rank_fits() {
    let lut: Vec<u32> = (0..2048u32).map(|s| s << 4).collect();
    // Twelve bits of frequency and of offset leave eight for the rank:
    // symbols 100..=355 fit, 100..=356 do not.
    let fits = [(100usize, 3000usize), (101, 1000), (355, 96)];
    let wide = [(100usize, 3000usize), (101, 1000), (356, 96)];
    let p = Packed::build(&fits, &lut, 12).unwrap();
    assert_eq!((p.base, p.shift), (100 << 4, 4));
    assert_eq!(p.entry.len(), 4096);
    // Slot 4001 is symbol 355's second: rank 255, offset 1, frequency 96.
    assert_eq!(p.entry[4001], 95 | 1 << 12 | 255 << 24);
    assert!(Packed::build(&wide, &lut, 12).is_none());
    // Contributions 2^8 apart share a coarser step: ranks 0 and 1.
    let coarse = Packed::build(&[(100, 4000), (356, 96)], &lut, 12).unwrap();
    assert_eq!((coarse.shift, coarse.entry[4001] >> 24), (12, 1));
    // A lone symbol: frequency 2^12, stored as 2^12 - 1.
    let lone = Packed::build(&[(7, 4096)], &lut, 12).unwrap();
    assert_eq!(lone.entry[4095], 4095 | 4095 << 12);
}

#[test]
fn normalize_sums_to_scale_and_keeps_every_symbol() {
    let counts: Vec<u64> = (0..2048)
        .map(|i| if i % 3 == 0 { 1 } else { i * i })
        .collect();
    for k in 12..=15 {
        let f = normalize(&counts, k).unwrap();
        assert_eq!(f.iter().map(|&x| x as u64).sum::<u64>(), 1 << k);
        assert!(f.iter().zip(&counts).all(|(&f, &c)| (c > 0) == (f > 0)));
    }
    assert!(normalize(&counts, 10).is_none());
}

#[test]
fn the_encoders_step_without_division_is_exact() {
    use super::encode::EncSymbol;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for scale in [9u32, 12] {
        let m = 1u32 << scale;
        for f in 1..=m {
            let cum = (m - f) / 2;
            let e = EncSymbol::new(f, cum, scale, m);
            let bound = ((1u64 << (32 - scale)) * f as u64 - 1).min(u32::MAX as u64) as u32;
            assert_eq!(e.renorm, bound, "renormalisation bound of f = {f}");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let inside = (1 << 16) + (seed as u32) % (bound - (1 << 16) + 1);
            for x in [
                1,
                1 << 16,
                (1 << 16) + 1,
                bound / 2,
                bound - 1,
                bound,
                inside,
            ] {
                let want = ((x / f) as u64) * m as u64 + (x % f) as u64 + cum as u64;
                assert_eq!(e.put(x) as u64, want, "x = {x}, f = {f}, scale {scale}");
            }
        }
    }
}

#[test]
fn simd_and_scalar_encoders_write_the_same_bytes() {
    if !crate::codec::simd_available() {
        eprintln!("skipped: no AVX2 on this CPU");
        return;
    }
    let mut x = 7u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    // Skewed (a symbol of probability near 1, others of frequency 1),
    // spread, uniform; lengths around a segment and a group of lanes.
    let cases: Vec<(usize, Vec<u16>)> = vec![
        (
            2048,
            (0..SEGMENT_SYMBOLS * 2 + 77)
                .map(|_| (1024 + next() % 61 - 30) as u16)
                .collect(),
        ),
        (
            4,
            (0..70_001)
                .map(|_| {
                    if next() % 5000 == 0 {
                        (next() % 3) as u16 + 1
                    } else {
                        0
                    }
                })
                .collect(),
        ),
        (
            2048,
            (0..SEGMENT_SYMBOLS + 31)
                .map(|_| (next() % 2048) as u16)
                .collect(),
        ),
        (300, (0..96).map(|_| (next() % 300) as u16).collect()),
        (16, (0..33).map(|_| (next() % 16) as u16).collect()),
        (2, vec![0, 1, 1, 0, 1]),
    ];
    for (alphabet, syms) in cases {
        let counts = counts_of(&syms, alphabet);
        let (mut scalar, mut simd) = (Vec::new(), Vec::new());
        encode::encode_with(&syms, &counts, LANES, false, &mut scalar);
        encode::encode_with(&syms, &counts, LANES, true, &mut simd);
        assert!(
            scalar == simd,
            "alphabet {alphabet}, {} symbols",
            syms.len()
        );
        let lut: Vec<u32> = (0..alphabet as u32).collect();
        let mut out = vec![0u32; syms.len()];
        decode(&simd, &lut, &mut out, true).unwrap();
        assert!(out.iter().zip(&syms).all(|(&o, &s)| o == s as u32));
    }
}
