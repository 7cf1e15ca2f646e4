//! The value model: how one float's bits become a head symbol and digit-plane
//! symbols, and back.
//!
//! A float of `bits` bits has a sign `s`, a biased exponent field `E`
//! (`exp_bits` wide) and a stored fraction `F` (`frac_bits` wide). With prime
//! `p`, `W` is the smallest digit count with `p^W >= 2^frac_bits`, and `F` is
//! written as `W` base-`p` digits, most significant first. A tensor stores the
//! top `N = precision` of them (`N = W` is exact; `N < W` is lossy and drops the
//! low digits).
//!
//! * The **head** (exponent channel) symbol is `E * p^t + (top t digits)`; the
//!   leading digits ride with the exponent because they depend on it (a weight
//!   distribution is not flat within a binade), which codes smaller than `E`
//!   alone on real weights (see `docs/FORMAT.md`).
//! * The **digit planes** hold the remaining `N - t` digits in groups,
//!   most significant plane first. Plane 0 also carries the sign `s` and the
//!   NaN flag `q`: its symbol is `(s + 2 q) * p^g0 + digits`, `g0` the most
//!   digits that keep it within a byte, and none when the remaining digits
//!   fit one plane (bf16 and f16 at p = 2), so that a decode to fewer digits
//!   can skip them.
//! * The **NaN flag** `q` is set for a NaN whose top digit is 0. A decode
//!   that drops digits adds `2^frac_bits - p^(W-1)` to such a value's kept
//!   fraction (for p = 2 the top digit, IEEE's quiet bit), so a NaN whose
//!   payload lies only in the dropped digits stays a NaN rather than
//!   turning into an infinity.
//!
//! Containers before version 3 have no NaN flag: plane 0's symbol is
//! `s * p^g0 + digits` with at least one digit ([`PlaneZero::Sign`]); they
//! are still read.
//!
//! Reconstruction is a sum: every symbol of every section maps, through a
//! lookup table, to its contribution to the output bit pattern, and the
//! contributions never overlap or carry (the digits' partial sums stay below
//! `2^frac_bits`). For `p = 2` the sum is an OR of shifted bit fields.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};

/// Largest alphabet of any section (head or plane). Symbols are `u16`, the
/// rANS tables hold at most 2^15 slots, and raw sections pack at most 12 bits.
pub const MAX_ALPHABET: u32 = 4096;

/// Largest prime accepted: plane 0 needs an alphabet of `2 p`.
pub const MAX_PRIME: u32 = MAX_ALPHABET / 2 - 1;

/// Most leading digits that ride with the exponent.
const MAX_HEAD_DIGITS: u32 = 3;

/// Target alphabet of a digit plane (one byte per value when stored raw).
const PLANE_ALPHABET: u64 = 256;

/// The three float formats the codec splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatKind {
    /// IEEE binary32.
    F32,
    /// bfloat16: binary32's sign and exponent, seven fraction bits.
    BF16,
    /// IEEE binary16.
    F16,
}

impl FloatKind {
    /// Total bits of one value.
    pub const fn bits(self) -> u32 {
        match self {
            FloatKind::F32 => 32,
            FloatKind::BF16 | FloatKind::F16 => 16,
        }
    }
    /// Bits of the biased exponent field.
    pub const fn exp_bits(self) -> u32 {
        match self {
            FloatKind::F32 | FloatKind::BF16 => 8,
            FloatKind::F16 => 5,
        }
    }
    /// Bits of the stored fraction.
    pub const fn frac_bits(self) -> u32 {
        match self {
            FloatKind::F32 => 23,
            FloatKind::BF16 => 7,
            FloatKind::F16 => 10,
        }
    }
    /// Bytes of one value.
    pub const fn size(self) -> usize {
        (self.bits() / 8) as usize
    }
    /// The safetensors dtype name.
    pub const fn name(self) -> &'static str {
        match self {
            FloatKind::F32 => "F32",
            FloatKind::BF16 => "BF16",
            FloatKind::F16 => "F16",
        }
    }
    /// The safetensors dtype.
    pub const fn dtype(self) -> safetensors::Dtype {
        match self {
            FloatKind::F32 => safetensors::Dtype::F32,
            FloatKind::BF16 => safetensors::Dtype::BF16,
            FloatKind::F16 => safetensors::Dtype::F16,
        }
    }
    /// The kind for a safetensors dtype name, if it is one of the split floats.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(FloatKind::F32),
            "BF16" => Some(FloatKind::BF16),
            "F16" => Some(FloatKind::F16),
            _ => None,
        }
    }
    /// The value of a bit pattern as `f64` (for error bounds).
    pub fn to_f64(self, bits: u32) -> f64 {
        match self {
            FloatKind::F32 => f32::from_bits(bits) as f64,
            FloatKind::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
            FloatKind::F16 => half::f16::from_bits(bits as u16).to_f64(),
        }
    }
}

/// Whether `p` is prime.
pub fn is_prime(p: u32) -> bool {
    if p < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= p {
        if p % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The smallest `W` with `p^W >= 2^frac_bits`: the digits an exact fraction needs.
pub fn exact_digits(kind: FloatKind, prime: u32) -> u32 {
    let target = 1u64 << kind.frac_bits();
    let mut w = 0;
    let mut v = 1u64;
    while v < target {
        v *= prime as u64;
        w += 1;
    }
    w
}

/// What plane 0 carries beside its digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaneZero {
    /// The sign, and at least one digit when any remain (containers of
    /// versions 1 and 2).
    Sign,
    /// The sign and the NaN flag, and no digit when the remaining digits fit
    /// one plane (what this build writes).
    SignAndNanFlag,
}

/// How one tensor's values split into a head and digit planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The float format split.
    pub kind: FloatKind,
    /// The digits' base `p`.
    pub prime: u32,
    /// Digits stored (`N`).
    pub precision: u32,
    /// Digits an exact fraction needs (`W`).
    pub full_digits: u32,
    /// Leading digits carried in the head symbol (`t`).
    pub head_digits: u32,
    /// Digits per plane, most significant plane first; plane 0 also carries
    /// the sign (and the NaN flag, see [`Layout::plane_zero`]).
    pub planes: Vec<u32>,
    /// What plane 0 carries beside its digits.
    pub plane_zero: PlaneZero,
    /// `pow[k] = p^k` for `k` in `0..=W`.
    pow: Vec<u64>,
    /// Per section, where its digits sit in the fraction (see [`Layout::split`]).
    splits: Vec<SectionSplit>,
}

/// Hashes what a layout is made from (the float kind, the prime, the
/// precision and plane 0's contents); every other field follows from them,
/// and equal layouts hash equal, as `Eq` needs. A run keys its decode tables
/// by layout once a tensor: hashing the planes and splits as well took 13%
/// of a one-tensor `safe_open` read of a 200-tensor file.
impl std::hash::Hash for Layout {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.kind, self.prime, self.precision, self.plane_zero).hash(h);
    }
}

/// Section `s`'s digits `[a, b)` of the fraction: `(frac / p^(W-b)) % p^(b-a)`;
/// with p = 2 a shift by `W - b` and a mask of `b - a` bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SectionSplit {
    /// `p^(W-b)`: the digits below the section.
    below: u64,
    /// `W - b`.
    below_digits: u32,
    /// `p^(b-a)`: the section's digit values.
    span: u64,
}

/// One section's symbol as bit fields of a p = 2 value (see [`Layout::bit_fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitFields {
    /// Right shift of the low field.
    pub shift: u32,
    /// Mask of the low field after the shift.
    pub mask: u32,
    /// Where the sign bit sits.
    pub sign_shift: u32,
    /// 1 where the sign rides above the digits (plane 0), else 0.
    pub sign: u32,
    /// Where the sign goes in the symbol: the section's digit count.
    pub digits: u32,
    /// The exponent field and the fraction's top bit: a value whose bits
    /// under this mask equal `nan_exp` and whose fraction is not zero gets
    /// the NaN flag (only where `nan_flag` is 1).
    pub nan_mask: u32,
    /// The exponent field, all ones.
    pub nan_exp: u32,
    /// The fraction's bits.
    pub frac_mask: u32,
    /// 1 where the NaN flag rides above the sign (plane 0 of a layout with
    /// [`PlaneZero::SignAndNanFlag`]), else 0.
    pub nan_flag: u32,
}

impl BitFields {
    /// [`BitFields::symbol`] of a 16-bit value, in 16-bit arithmetic (twice
    /// the values a vector register holds). The same symbol for every
    /// 16-bit value whose fields lie in its 16 bits, as bf16's and f16's do.
    #[inline(always)]
    pub fn symbol16(&self, bits: u16) -> u16 {
        let flag = (((bits & self.nan_mask as u16) == self.nan_exp as u16)
            & ((bits & self.frac_mask as u16) != 0)) as u16
            & self.nan_flag as u16;
        ((bits >> self.shift) & self.mask as u16)
            | (((bits >> self.sign_shift) & self.sign as u16) << self.digits)
            | (flag << (self.digits + 1))
    }

    /// The symbol of the value `bits`.
    #[inline(always)]
    pub fn symbol(&self, bits: u32) -> u16 {
        let flag = (((bits & self.nan_mask) == self.nan_exp) & ((bits & self.frac_mask) != 0))
            as u32
            & self.nan_flag;
        (((bits >> self.shift) & self.mask)
            | (((bits >> self.sign_shift) & self.sign) << self.digits)
            | (flag << (self.digits + 1))) as u16
    }
}

impl Layout {
    /// The layout for `kind` with `prime` and `precision` digits. `precision`
    /// above the exact digit count is capped to it; below it is lossy and
    /// refused unless `lossy`.
    pub fn new(kind: FloatKind, prime: u32, precision: Option<u32>, lossy: bool) -> Result<Self> {
        if !is_prime(prime) {
            return Err(Error::InvalidArgument(format!(
                "--prime {prime} is not a prime number"
            )));
        }
        if prime > MAX_PRIME {
            return Err(Error::InvalidArgument(format!(
                "--prime {prime} is too large (the largest supported prime is below {})",
                MAX_PRIME + 1
            )));
        }
        let full = exact_digits(kind, prime);
        let n = precision.unwrap_or(full);
        if n == 0 {
            return Err(Error::InvalidArgument(
                "--precision 0: at least one digit must be kept".into(),
            ));
        }
        let n = n.min(full);
        if n < full && !lossy {
            return Err(Error::InvalidArgument(format!(
                "--precision {n} cannot hold a {} fraction in base {prime}: {prime}^{n} < 2^{} \
                 (exact needs {full} digits); pass --lossy to drop the low digits",
                kind.name(),
                kind.frac_bits()
            )));
        }
        Self::from_parts(kind, prime, n)
    }

    /// The layout this build writes for `kind`, `prime` and `precision`
    /// digits, checked for consistency.
    pub fn from_parts(kind: FloatKind, prime: u32, precision: u32) -> Result<Self> {
        Self::with_plane_zero(kind, prime, precision, PlaneZero::SignAndNanFlag)
    }

    /// The layout a container describes: [`Layout::from_parts`] with what
    /// plane 0 carries as the container says.
    pub fn with_plane_zero(
        kind: FloatKind,
        prime: u32,
        precision: u32,
        plane_zero: PlaneZero,
    ) -> Result<Self> {
        if !is_prime(prime) || prime > MAX_PRIME {
            return Err(Error::Decode(format!(
                "prime {prime} is not a supported prime"
            )));
        }
        let full = exact_digits(kind, prime);
        if precision == 0 || precision > full {
            return Err(Error::Decode(format!(
                "precision {precision} outside 1..={full} for {} in base {prime}",
                kind.name()
            )));
        }
        let p = prime as u64;
        let exp_alphabet = 1u64 << kind.exp_bits();
        let mut t = MAX_HEAD_DIGITS.min(precision);
        while t > 0 && exp_alphabet * p.pow(t) > MAX_ALPHABET as u64 {
            t -= 1;
        }
        let mut planes = Vec::new();
        let mut rem = precision - t;
        let g0 = match plane_zero {
            // The sign and as many digits as fit a byte (at least one digit if any remain).
            PlaneZero::Sign => {
                let mut g0 = 0;
                while g0 < rem && 2 * p.pow(g0 + 1) <= PLANE_ALPHABET {
                    g0 += 1;
                }
                if g0 == 0 && rem > 0 {
                    g0 = 1;
                }
                g0
            }
            // The sign, the NaN flag and as many digits as fit a byte; none
            // when the remaining digits fit one plane of their own.
            PlaneZero::SignAndNanFlag => {
                let mut g0 = 0;
                let one_plane = p.checked_pow(rem).is_some_and(|a| a <= PLANE_ALPHABET);
                while !one_plane && g0 < rem && 4 * p.pow(g0 + 1) <= PLANE_ALPHABET {
                    g0 += 1;
                }
                g0
            }
        };
        planes.push(g0);
        rem -= g0;
        while rem > 0 {
            let mut g = 0;
            while g < rem && p.pow(g + 1) <= PLANE_ALPHABET {
                g += 1;
            }
            let g = g.max(1);
            planes.push(g);
            rem -= g;
        }
        let pow: Vec<u64> = (0..=full).map(|k| p.pow(k)).collect();
        let mut layout = Layout {
            kind,
            prime,
            precision,
            full_digits: full,
            head_digits: t,
            planes,
            plane_zero,
            pow,
            splits: Vec::new(),
        };
        layout.splits = (0..layout.sections())
            .map(|s| {
                let (a, b) = layout.digit_range(s);
                SectionSplit {
                    below: layout.pow[(full - b) as usize],
                    below_digits: full - b,
                    span: layout.pow[(b - a) as usize],
                }
            })
            .collect();
        Ok(layout)
    }

    /// Whether the stored digits reproduce every fraction exactly.
    pub fn is_exact(&self) -> bool {
        self.precision == self.full_digits
    }

    /// Number of sections of a chunk: the head plus the planes.
    pub fn sections(&self) -> usize {
        1 + self.planes.len()
    }

    /// Alphabet size of section `s` (0 = head).
    pub fn alphabet(&self, s: usize) -> u32 {
        if s == 0 {
            ((1u64 << self.kind.exp_bits()) * self.pow[self.head_digits as usize]) as u32
        } else if s == 1 {
            (self.sign_symbols() * self.pow[self.planes[0] as usize]) as u32
        } else {
            self.pow[self.planes[s - 1] as usize] as u32
        }
    }

    /// Plane 0's symbols for each digit value: the sign's two, times two
    /// with the NaN flag.
    fn sign_symbols(&self) -> u64 {
        match self.plane_zero {
            PlaneZero::Sign => 2,
            PlaneZero::SignAndNanFlag => 4,
        }
    }

    /// Whether the NaN flag of `bits` is set: a NaN whose top digit is 0
    /// (only in layouts with [`PlaneZero::SignAndNanFlag`]).
    pub fn nan_flag(&self, bits: u32) -> bool {
        let f = self.kind.frac_bits();
        let e_max = (1u32 << self.kind.exp_bits()) - 1;
        let frac = (bits & ((1 << f) - 1)) as u64;
        self.plane_zero == PlaneZero::SignAndNanFlag
            && (bits >> f) & e_max == e_max
            && frac != 0
            && frac < self.pow[self.full_digits as usize - 1]
    }

    /// What a decode that drops digits adds to a flagged NaN's fraction:
    /// `2^frac_bits - p^(W-1)` (for p = 2 the top digit, the quiet bit).
    fn nan_fill(&self) -> u64 {
        (1u64 << self.kind.frac_bits()) - self.pow[self.full_digits as usize - 1]
    }

    /// The digit range `[a, b)` of section `s` (0 = head).
    pub fn digit_range(&self, s: usize) -> (u32, u32) {
        if s == 0 {
            return (0, self.head_digits);
        }
        let a = self.head_digits + self.planes[..s - 1].iter().sum::<u32>();
        (a, a + self.planes[s - 1])
    }

    /// How many sections a decode to `target` digits reads: the head, plane 0
    /// (it carries the sign) and every plane holding a digit above `target`.
    pub fn sections_for(&self, target: u32) -> usize {
        let mut n = 2;
        while n < self.sections() && self.digit_range(n).0 < target {
            n += 1;
        }
        n.min(self.sections())
    }

    /// Splits one value's bit pattern into its section symbols (`out.len() == sections()`).
    #[inline]
    pub fn split(&self, bits: u32, out: &mut [u16]) {
        let f = self.kind.frac_bits();
        let sign = bits >> (self.kind.bits() - 1);
        let e = (bits >> f) & ((1 << self.kind.exp_bits()) - 1);
        let frac = (bits & ((1 << f) - 1)) as u64;
        let binary = self.prime == 2;
        for (s, (slot, split)) in out.iter_mut().zip(&self.splits).enumerate() {
            // p = 2: shifts and masks in place of two divisions a section.
            let digits = if binary {
                (frac >> split.below_digits) & (split.span - 1)
            } else {
                (frac / split.below) % split.span
            };
            let high = match s {
                0 => e as u64,
                1 => sign as u64 + 2 * self.nan_flag(bits) as u64,
                _ => 0,
            };
            *slot = (high * split.span + digits) as u16;
        }
    }

    /// For p = 2, section `s`'s symbol as bit fields of the value:
    /// `((bits >> shift) & mask) | (((bits >> sign_shift) & sign) << digits)`,
    /// where `sign` is 1 for plane 0 (it carries the sign above its digits)
    /// and 0 elsewhere; the same symbol [`Layout::split`] gives. `None` for
    /// odd primes.
    pub fn bit_fields(&self, s: usize) -> Option<BitFields> {
        if self.prime != 2 {
            return None;
        }
        let split = &self.splits[s];
        let digits = split.span.trailing_zeros();
        // The head's digits sit right below the exponent: one field.
        let width = if s == 0 {
            digits + self.kind.exp_bits()
        } else {
            digits
        };
        let f = self.kind.frac_bits();
        let exp = ((1u32 << self.kind.exp_bits()) - 1) << f;
        Some(BitFields {
            shift: split.below_digits,
            mask: ((1u64 << width) - 1) as u32,
            sign_shift: self.kind.bits() - 1,
            sign: (s == 1) as u32,
            digits,
            nan_mask: exp | 1 << (f - 1),
            nan_exp: exp,
            frac_mask: (1 << f) - 1,
            nan_flag: (s == 1 && self.plane_zero == PlaneZero::SignAndNanFlag) as u32,
        })
    }

    /// The contribution of each symbol of section `s` to the output bit
    /// pattern, with the digits at or past `target` zeroed.
    pub fn contributions(&self, s: usize, target: u32) -> Vec<u32> {
        let f = self.kind.frac_bits();
        let w = self.full_digits as usize;
        let (a, b) = self.digit_range(s);
        let g = (b - a) as usize;
        let span = self.pow[g];
        // Digits of this section kept by `target`: the top `keep` of its `g`.
        let keep = target.clamp(a, b) - a;
        let drop = self.pow[(g as u32 - keep) as usize];
        // A flagged NaN is filled only where digits are dropped.
        let fill = if target.min(self.precision) < self.full_digits {
            self.nan_fill()
        } else {
            0
        };
        (0..self.alphabet(s) as u64)
            .map(|sym| {
                let (high, digits) = (sym / span, sym % span);
                let digits = digits / drop * drop;
                let frac = digits * self.pow[w - b as usize];
                let high = match s {
                    0 => high << f,
                    1 => ((high & 1) << (self.kind.bits() - 1)) + (high >> 1) * fill,
                    _ => 0,
                };
                (high + frac) as u32
            })
            .collect()
    }

    /// The bit pattern a decode to `target` digits gives for `bits` (the
    /// reference the tests hold the codec to): the fraction's base-`p` digits
    /// at or past `min(target, precision)` are zeroed, and where any are, a
    /// flagged NaN (see [`Layout::nan_flag`]) gets `2^frac_bits - p^(W-1)`
    /// added to its fraction.
    pub fn truncate(&self, bits: u32, target: u32) -> u32 {
        let f = self.kind.frac_bits();
        let keep = target.min(self.precision);
        let unit = self.pow[(self.full_digits - keep) as usize];
        let frac = (bits & ((1 << f) - 1)) as u64;
        let mut kept = frac / unit * unit;
        if keep < self.full_digits && self.nan_flag(bits) {
            kept += self.nan_fill();
        }
        (bits & !((1 << f) - 1)) | kept as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_hashes_by_what_it_is_made_from() {
        let hash = |l: &Layout| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            l.hash(&mut h);
            h.finish()
        };
        let make = |kind, prime, precision| {
            Layout::with_plane_zero(kind, prime, precision, PlaneZero::Sign).unwrap()
        };
        let a = make(FloatKind::BF16, 2, 7);
        assert_eq!(a, make(FloatKind::BF16, 2, 7));
        assert_eq!(hash(&a), hash(&make(FloatKind::BF16, 2, 7)));
        let others = [
            make(FloatKind::BF16, 2, 5),
            make(FloatKind::BF16, 3, 4),
            make(FloatKind::F16, 2, 7),
        ];
        for b in &others {
            assert_ne!(&a, b);
            assert_ne!(hash(&a), hash(b), "{b:?}");
        }
    }

    #[test]
    fn exact_digits_match_the_fraction_width() {
        assert_eq!(exact_digits(FloatKind::F32, 2), 23);
        assert_eq!(exact_digits(FloatKind::BF16, 2), 7);
        assert_eq!(exact_digits(FloatKind::F16, 3), 7); // 3^6 = 729 < 1024 <= 2187
        assert_eq!(exact_digits(FloatKind::BF16, 257), 1);
    }

    #[test]
    fn p2_layouts_have_the_documented_shape() {
        let l = Layout::new(FloatKind::BF16, 2, None, false).unwrap();
        assert_eq!((l.head_digits, l.planes.clone()), (3, vec![0, 4]));
        assert_eq!(
            (l.alphabet(1), l.sections_for(3), l.sections_for(4)),
            (4, 2, 3)
        );
        let l = Layout::new(FloatKind::F16, 2, None, false).unwrap();
        assert_eq!((l.head_digits, l.planes.clone()), (3, vec![0, 7]));
        let l = Layout::new(FloatKind::F32, 2, None, false).unwrap();
        assert_eq!((l.head_digits, l.planes.clone()), (3, vec![6, 8, 6]));
        assert_eq!(l.alphabet(0), 2048);
        assert_eq!(l.alphabet(1), 256);
        assert_eq!(l.sections_for(9), 2);
        assert_eq!(l.sections_for(10), 3);
        assert_eq!(l.sections_for(23), 4);
        // What containers before version 3 hold.
        let old = |kind| Layout::with_plane_zero(kind, 2, exact_digits(kind, 2), PlaneZero::Sign);
        assert_eq!(old(FloatKind::BF16).unwrap().planes, vec![4]);
        assert_eq!(old(FloatKind::F16).unwrap().planes, vec![7]);
        let l = old(FloatKind::F32).unwrap();
        assert_eq!((l.planes.clone(), l.alphabet(1)), (vec![7, 8, 5], 256));
        assert_eq!((l.sections_for(10), l.sections_for(11)), (2, 3));
    }

    #[test]
    fn a_nan_stays_a_nan_at_every_precision() {
        for kind in [FloatKind::BF16, FloatKind::F16] {
            for p in [2, 3, 5, 257] {
                let full = exact_digits(kind, p);
                let l = Layout::new(kind, p, None, false).unwrap();
                for target in 1..=full {
                    let luts: Vec<Vec<u32>> = (0..l.sections())
                        .map(|s| l.contributions(s, target))
                        .collect();
                    let mut syms = vec![0u16; l.sections()];
                    for bits in 0..=u16::MAX as u32 {
                        l.split(bits, &mut syms);
                        let got: u32 = syms.iter().zip(&luts).map(|(&s, t)| t[s as usize]).sum();
                        assert_eq!(got, l.truncate(bits, target), "{kind:?} p={p} {bits:#x}");
                        assert_eq!(
                            kind.to_f64(got).is_nan(),
                            kind.to_f64(bits).is_nan(),
                            "{kind:?} p={p} K={target} {bits:#x} -> {got:#x}"
                        );
                        assert!(got >> kind.bits() == 0, "{kind:?} p={p} {bits:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_what_cannot_be_exact_unless_lossy() {
        assert!(Layout::new(FloatKind::F32, 2, Some(10), false).is_err());
        assert!(Layout::new(FloatKind::F32, 2, Some(10), true).is_ok());
        assert!(Layout::new(FloatKind::F32, 4, None, false).is_err());
        assert!(Layout::new(FloatKind::F32, 4099, None, false).is_err());
        // More digits than exact is capped, not refused.
        assert_eq!(
            Layout::new(FloatKind::BF16, 2, Some(30), false)
                .unwrap()
                .precision,
            7
        );
    }

    #[test]
    fn bit_fields_give_the_split_symbols() {
        for (kind, precision) in [
            (FloatKind::BF16, None),
            (FloatKind::F16, None),
            (FloatKind::F32, None),
            (FloatKind::F32, Some(9)),
            (FloatKind::BF16, Some(2)),
        ] {
            let l = Layout::new(kind, 2, precision, true).unwrap();
            let fields: Vec<BitFields> = (0..l.sections())
                .map(|s| l.bit_fields(s).unwrap())
                .collect();
            let mut syms = vec![0u16; l.sections()];
            let mut x = 0x9e3779b97f4a7c15u64;
            for _ in 0..20000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let bits = (x as u32) >> (32 - kind.bits());
                l.split(bits, &mut syms);
                for (s, f) in fields.iter().enumerate() {
                    assert_eq!(
                        f.symbol(bits),
                        syms[s],
                        "{kind:?} section {s} bits {bits:#x}"
                    );
                }
            }
        }
        assert!(Layout::new(FloatKind::F16, 3, None, false)
            .unwrap()
            .bit_fields(0)
            .is_none());
    }

    #[test]
    fn split_then_sum_of_contributions_is_the_value() {
        for p in [2, 3, 5, 7, 257] {
            let l = Layout::new(FloatKind::F16, p, None, false).unwrap();
            let luts: Vec<Vec<u32>> = (0..l.sections()).map(|s| l.contributions(s, 99)).collect();
            let mut syms = vec![0u16; l.sections()];
            for bits in [0u32, 0x8000, 0x7c00, 0x7e01, 0x3c00, 0x0001, 0xfbff, 0x1234] {
                l.split(bits, &mut syms);
                let sum: u32 = syms
                    .iter()
                    .zip(&luts)
                    .map(|(&s, lut)| lut[s as usize])
                    .sum();
                assert_eq!(sum, bits, "p={p} bits={bits:#x}");
            }
        }
    }
}
