//! Dataflow operators for padic-burst (timely 0.32).
//!
//! The decompression graph is `source -> route -> decode -> merge`, each step
//! an extension trait on a timely stream named for its verb. The operators
//! are generic over the small traits below, which the main crate implements
//! for its container, engines and sinks: operators know nothing of CUDA or of
//! the file format. Records are chunk handles (a few words), never values,
//! and errors travel as data.

pub mod decode;
pub mod merge;
pub mod route;

pub use decode::Decode;
pub use merge::MergeInOrder;
pub use route::Route;

use serde::{Deserialize, Serialize};

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

/// Where a chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RouteTag {
    Gpu,
    Cpu,
    /// The first `gpu_fraction` of the chunk's values on the GPU, the rest on the CPU.
    Hybrid {
        gpu_fraction: f64,
    },
}

/// Decides each chunk's route (from the mode and the memory pressure).
pub trait Router<C>: 'static {
    fn route(&self, chunk: &C) -> RouteTag;
}

/// Decodes a routed chunk into parts: one per engine that took a piece, or an
/// error as data.
pub trait PartDecoder<C>: 'static {
    type Part;
    fn decode(&self, chunk: C, route: RouteTag) -> Vec<Self::Part>;

    /// Decodes a batch of routed chunks (what one activation of the decode
    /// operator received), so that an engine can take many at once: a GPU
    /// wants thousands of chunks' work in one launch. The default decodes
    /// them one by one, in order.
    fn decode_batch(&self, chunks: Vec<(C, RouteTag)>) -> Vec<Self::Part> {
        chunks
            .into_iter()
            .flat_map(|(c, route)| self.decode(c, route))
            .collect()
    }
}

/// A decoded piece of a chunk, as the merge sees it.
pub trait Part {
    /// The tensor it belongs to (the merge exchanges by it).
    fn tensor(&self) -> usize;
}

/// Where merged tensors go: a file written at offsets, or memory.
pub trait Sink<P>: 'static {
    /// What the sink says of each part it took (it flows on, so that one
    /// place can check every part, whichever worker or process merged it).
    type Receipt;
    /// One part, exactly once.
    fn accept(&mut self, part: P) -> Self::Receipt;
}
