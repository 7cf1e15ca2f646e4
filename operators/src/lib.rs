//! Dataflow operators for padic-burst.
//!
//! The operators (source, route, decode, merge, record) are generic over the
//! small traits below, which the main crate implements for its container and
//! engines: operators know nothing of CUDA or of the file format.

/// A unit of decode work: one chunk of one tensor.
pub trait Chunk {
    /// Index of the tensor in file order.
    fn tensor(&self) -> usize;
    /// Index of the chunk within its tensor.
    fn chunk(&self) -> usize;
    /// Bytes of decoded output the chunk produces.
    fn output_len(&self) -> u64;
}

/// Something that decodes chunks into their output bytes.
pub trait Decoder<C: Chunk> {
    /// The error a failed decode reports (it travels as data, never as a panic).
    type Error;
    /// Decodes `chunk` into `out` (`chunk.output_len()` bytes).
    fn decode(&self, chunk: &C, out: &mut [u8]) -> Result<(), Self::Error>;
}
