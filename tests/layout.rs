//! The value model (`codec::layout`), rule by rule against the definitions in
//! its module documentation: the float formats, primes, the exact digit count
//! `W`, the head and plane shapes, and that splitting a value and summing its
//! symbols' contributions gives the value back, or its truncation to the
//! digits asked for. Fast on purpose: this is the test set the mutation run
//! of `scripts/mutants.sh --value-model` uses.

mod common;

use padic_burst::codec::layout::{exact_digits, is_prime, PlaneZero, MAX_ALPHABET, MAX_PRIME};
use padic_burst::codec::{FloatKind, Layout};
use safetensors::Dtype;

const KINDS: [FloatKind; 3] = [FloatKind::F32, FloatKind::BF16, FloatKind::F16];

/// Small and large primes: one-digit planes (p > 128), the largest accepted.
const PRIMES: [u32; 12] = [2, 3, 5, 7, 11, 13, 31, 127, 131, 257, 521, 2039];

#[test]
fn float_kinds_are_the_ieee_and_bfloat_formats() {
    let table = [
        (FloatKind::F32, 32, 8, 23, 4, "F32", Dtype::F32, 0xc020_0000),
        (FloatKind::BF16, 16, 8, 7, 2, "BF16", Dtype::BF16, 0xc020),
        (FloatKind::F16, 16, 5, 10, 2, "F16", Dtype::F16, 0xc100),
    ];
    for (kind, bits, exp, frac, size, name, dtype, minus_2_5) in table {
        assert_eq!(
            (kind.bits(), kind.exp_bits(), kind.frac_bits(), kind.size()),
            (bits, exp, frac, size),
            "{kind:?}"
        );
        assert_eq!(
            1 + exp + frac,
            bits,
            "sign, exponent and fraction fill {kind:?}"
        );
        assert_eq!(kind.name(), name);
        assert_eq!(kind.dtype(), dtype);
        assert_eq!(FloatKind::from_name(name), Some(kind));
        assert_eq!(kind.to_f64(minus_2_5), -2.5, "{kind:?}");
    }
    for other in ["I64", "F64", "f32", "bf16", ""] {
        assert_eq!(FloatKind::from_name(other), None, "{other:?}");
    }
}

#[test]
fn is_prime_agrees_with_trial_division_up_past_the_largest_prime() {
    for n in 0..=2100u32 {
        let reference = n >= 2 && (2..n).all(|d| n % d != 0);
        assert_eq!(is_prime(n), reference, "{n}");
    }
}

#[test]
fn the_largest_prime_is_the_one_whose_plane_zero_fits_the_alphabet() {
    assert_eq!(MAX_ALPHABET, 4096);
    assert_eq!(
        MAX_PRIME, 2047,
        "plane 0's alphabet 2 p (before version 3) stays below 4096"
    );
    // 2039 is the largest prime not above MAX_PRIME, 2053 the next one.
    for kind in KINDS {
        let old = Layout::with_plane_zero(kind, 2039, 1, PlaneZero::Sign).unwrap();
        assert_eq!(old.alphabet(1), 2 * 2039);
        // From version 3 a digit of a prime above 64 does not share plane 0.
        let l = Layout::from_parts(kind, 2039, 1).unwrap();
        assert_eq!((l.alphabet(1), l.planes.clone()), (4, vec![0, 1]));
        assert_eq!(l.alphabet(2), 2039);
        assert!(Layout::from_parts(kind, 2053, 1).is_err());
        assert!(Layout::new(kind, 2053, None, true).is_err());
    }
}

#[test]
fn exact_digits_is_the_smallest_w_with_p_to_the_w_at_least_2_to_the_fraction_bits() {
    for kind in KINDS {
        let target = 1u128 << kind.frac_bits();
        for p in PRIMES {
            let w = exact_digits(kind, p);
            assert!((p as u128).pow(w) >= target, "{kind:?} p={p} w={w}");
            assert!(
                w >= 1 && (p as u128).pow(w - 1) < target,
                "{kind:?} p={p} w={w}"
            );
        }
    }
}

/// The shape rules of the module documentation, checked on every precision
/// of every kind and prime, for what plane 0 carries now and before
/// version 3: the head carries as many leading digits (at most three) as
/// keep its alphabet within `MAX_ALPHABET`; plane 0 carries the sign (and
/// the NaN flag) and as many digits as keep it within a byte (before: at
/// least one if any remain; now: none when the rest fit one plane); each
/// later plane as many as fit a byte (at least one); together they hold
/// exactly the stored digits, most significant first.
#[test]
fn head_and_planes_follow_the_documented_shape_rules() {
    for kind in KINDS {
        let exp = 1u64 << kind.exp_bits();
        for p in PRIMES {
            let full = exact_digits(kind, p);
            let pw = |k: u32| (p as u64).pow(k);
            for n in 1..=full {
                for zero in [PlaneZero::Sign, PlaneZero::SignAndNanFlag] {
                    let l = Layout::with_plane_zero(kind, p, n, zero).unwrap();
                    let what = format!("{kind:?} p={p} n={n}: {l:?}");
                    assert_eq!((l.precision, l.full_digits), (n, full), "{what}");
                    assert_eq!(l.is_exact(), n == full, "{what}");
                    let t = l.head_digits;
                    assert!(t <= 3.min(n) && exp * pw(t) <= 4096, "{what}");
                    assert!(t == 3.min(n) || exp * pw(t + 1) > 4096, "{what}");
                    let rest = n - t;
                    let g0 = l.planes[0];
                    let signs = match zero {
                        PlaneZero::Sign => 2,
                        PlaneZero::SignAndNanFlag => 4,
                    };
                    match zero {
                        _ if rest == 0 => assert_eq!(l.planes, vec![0], "{what}"),
                        PlaneZero::Sign => {
                            assert!(g0 >= 1 && (2 * pw(g0) <= 256 || g0 == 1), "{what}");
                            assert!(g0 == rest || 2 * pw(g0 + 1) > 256, "{what}");
                        }
                        PlaneZero::SignAndNanFlag => {
                            if rest < 9 && pw(rest) <= 256 {
                                assert_eq!(l.planes, vec![0, rest], "{what}");
                            }
                            assert!(4 * pw(g0) <= 256 && g0 < rest, "{what}");
                            assert!(g0 == 0 || 4 * pw(g0 + 1) > 256, "{what}");
                        }
                    }
                    let mut left = rest - g0;
                    for &g in &l.planes[1..] {
                        assert!(g >= 1 && g <= left, "{what}");
                        assert!(pw(g) <= 256 || g == 1, "{what}");
                        assert!(g == left || pw(g + 1) > 256, "{what}");
                        left -= g;
                    }
                    assert_eq!(left, 0, "the planes hold every stored digit: {what}");
                    assert_eq!(l.sections(), 1 + l.planes.len(), "{what}");

                    assert_eq!(l.alphabet(0) as u64, exp * pw(t), "{what}");
                    assert_eq!(l.alphabet(1) as u64, signs * pw(g0), "{what}");
                    let mut start = t;
                    assert_eq!(l.digit_range(0), (0, t), "{what}");
                    for s in 1..l.sections() {
                        let g = l.planes[s - 1];
                        if s >= 2 {
                            assert_eq!(l.alphabet(s) as u64, pw(g), "{what}");
                        }
                        assert!(l.alphabet(s) <= MAX_ALPHABET, "{what}");
                        assert_eq!(l.digit_range(s), (start, start + g), "{what} s={s}");
                        start += g;
                    }
                    assert_eq!(start, n, "{what}");

                    // A decode to `target` reads the head, plane 0 and each
                    // later plane that starts above `target`.
                    for target in 0..=n + 1 {
                        let later = (2..l.sections())
                            .filter(|&s| l.digit_range(s).0 < target)
                            .count();
                        assert_eq!(l.sections_for(target), 2 + later, "{what} t={target}");
                    }
                }
            }
        }
    }
}

#[test]
fn layouts_out_of_range_are_refused() {
    for kind in KINDS {
        for p in [0, 1, 4, 9, 2047, 2053] {
            assert!(Layout::from_parts(kind, p, 1).is_err(), "{kind:?} p={p}");
        }
        let full = exact_digits(kind, 3);
        assert!(Layout::from_parts(kind, 3, 0).is_err());
        assert!(Layout::from_parts(kind, 3, full).is_ok());
        assert!(Layout::from_parts(kind, 3, full + 1).is_err());
    }
}

/// Splits `bits` and sums the contributions of its symbols, decoded to `target`.
fn split_and_sum(l: &Layout, luts: &[Vec<u32>], bits: u32) -> u32 {
    let mut syms = vec![0u16; l.sections()];
    l.split(bits, &mut syms);
    syms.iter()
        .zip(luts)
        .enumerate()
        .map(|(s, (&sym, lut))| {
            assert!(
                (sym as u32) < l.alphabet(s),
                "{bits:#x}: symbol {sym} of section {s} outside the alphabet"
            );
            lut[sym as usize]
        })
        .sum()
}

fn check_values(kind: FloatKind, p: u32, values: &[u32]) {
    let full = exact_digits(kind, p);
    let f = kind.frac_bits();
    for n in [1, full.div_ceil(2), full] {
        let l = Layout::new(kind, p, Some(n), true).unwrap();
        for target in 0..=full {
            let luts: Vec<Vec<u32>> = (0..l.sections())
                .map(|s| l.contributions(s, target))
                .collect();
            for &bits in values {
                let want =
                    common::reference_truncate(bits, kind.exp_bits(), f, p as u64, target.min(n));
                assert_eq!(
                    l.truncate(bits, target),
                    want,
                    "{kind:?} p={p} n={n} target={target} bits={bits:#x}"
                );
                assert_eq!(
                    split_and_sum(&l, &luts, bits),
                    want,
                    "{kind:?} p={p} n={n} target={target} bits={bits:#x}"
                );
            }
        }
    }
}

/// Every 16-bit pattern, exact: the sum of the contributions is the value.
#[test]
fn every_16_bit_pattern_splits_and_sums_back_exactly() {
    for kind in [FloatKind::BF16, FloatKind::F16] {
        for p in [2, 3, 5, 7, 257, 2039] {
            let l = Layout::new(kind, p, None, false).unwrap();
            let luts: Vec<Vec<u32>> = (0..l.sections()).map(|s| l.contributions(s, 99)).collect();
            for bits in 0..=u16::MAX as u32 {
                assert_eq!(split_and_sum(&l, &luts, bits), bits, "{kind:?} p={p}");
            }
        }
    }
}

/// Stored digits and decoded digits both cut the fraction like the
/// independent reference: lossy layouts and progressive targets alike.
#[test]
fn truncation_to_fewer_digits_matches_the_reference() {
    let mut rng = padic_burst::demo::Rng::new(18);
    let specials = [
        0u32,
        0x8000_0000,
        0x7f80_0000,
        0x7fc0_0001,
        0x3f80_0000,
        0x0000_0001,
        0xff7f_ffff,
    ];
    let f32s: Vec<u32> = specials
        .into_iter()
        .chain((0..300).map(|_| rng.next_u64() as u32))
        .collect();
    let halves: Vec<u32> = (0..=u16::MAX as u32)
        .step_by(97)
        .chain([0xffff, 0x8000])
        .collect();
    for p in PRIMES {
        check_values(FloatKind::F32, p, &f32s);
        check_values(FloatKind::BF16, p, &halves);
        check_values(FloatKind::F16, p, &halves);
    }
}
