//! Values <-> channels: the p-adic value model and the chunk codec.
//!
//! Layered as lz4_flex layers its block and frame: `layout` (one value's
//! bits <-> section symbols), `bitpack` and `rans` (one stream of symbols <->
//! bytes), `symbols` (a section: the smallest of constant, raw and rANS), and
//! `chunk` (a range of a tensor <-> its sections). The container in `format`
//! frames chunks with offsets and checksums.

pub mod bitpack;
pub mod chunk;
pub mod layout;
pub mod rans;
pub mod symbols;
pub mod varint;

pub use chunk::{EncodedChunk, Tables};
pub use layout::{FloatKind, Layout};
