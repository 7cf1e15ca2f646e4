//! Values <-> channels: the p-adic value model and the chunk codec.
//!
//! Layered as lz4_flex layers its block and frame: `layout` (one value's
//! bits <-> section symbols), `bitpack` and `rans` (one stream of symbols <->
//! bytes), `split` (a chunk's values -> per-section symbol streams and their
//! counts), `symbols` (a section: the smallest of constant, raw and rANS), and
//! `chunk` (a range of a tensor <-> its sections). The container in `format`
//! frames chunks with offsets and checksums.

pub mod bitpack;
pub mod chunk;
pub mod layout;
pub mod plan;
pub mod rans;
pub mod split;
pub mod symbols;
pub mod varint;

pub use chunk::{EncodedChunk, Tables};
pub use layout::{FloatKind, Layout};

/// Whether this CPU runs the SIMD decoders (AVX2 and BMI2, x86-64), unless
/// `PADIC_NO_SIMD` ([`crate::config::no_simd`]) is on: detected once, shared
/// by every SIMD path. A bad value leaves them on (the CLI refuses it first).
#[cfg(target_arch = "x86_64")]
pub(crate) fn simd_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi2")
            && !crate::config::no_simd().unwrap_or(false)
    })
}
