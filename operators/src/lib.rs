//! Dataflow operators for padic-burst (timely 0.32).
//!
//! The decompression graph is `source -> route -> decode -> merge`, each step
//! an extension trait on a timely stream named for its verb, one per file:
//! [`WorkQueue::feed`] (the source, with bounded read-ahead), [`Route`],
//! [`Decode`] and [`Merge`], plus the exactly-once [`Ledger`] that checks the
//! merges' receipts. The operators are generic over the small traits below,
//! which the main crate implements for its container, engines and sinks:
//! operators know nothing of CUDA or of the file format. Records are chunk
//! handles (a few words), never values, and errors travel as data, on a
//! second output.

pub mod decode;
pub mod ledger;
pub mod merge;
pub mod ok_err;
pub mod route;
pub mod source;

pub use decode::Decode;
pub use ledger::{Ledger, LedgerError};
pub use merge::Merge;
pub use ok_err::OkErr;
pub use route::Route;
pub use source::{Feed, WorkQueue};

use serde::{Deserialize, Serialize};

/// Where a chunk goes: the one route type of padic-burst (its policy
/// re-exports it as `policy::Route`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RouteTag {
    Gpu,
    Cpu,
    /// Split by element range: the first `gpu_fraction` of the chunk's
    /// values on the GPU, the rest on the CPU.
    Hybrid {
        gpu_fraction: f64,
    },
}

impl RouteTag {
    /// `gpu`, `cpu` or `hybrid`.
    pub fn name(self) -> &'static str {
        match self {
            RouteTag::Gpu => "gpu",
            RouteTag::Cpu => "cpu",
            RouteTag::Hybrid { .. } => "hybrid",
        }
    }

    /// The GPU's share of the chunk.
    pub fn gpu_fraction(self) -> f64 {
        match self {
            RouteTag::Gpu => 1.0,
            RouteTag::Cpu => 0.0,
            RouteTag::Hybrid { gpu_fraction } => gpu_fraction,
        }
    }

    /// 0, 1 and 2 for GPU, CPU and HYBRID: an index into per-route tables.
    pub fn index(self) -> usize {
        match self {
            RouteTag::Gpu => 0,
            RouteTag::Cpu => 1,
            RouteTag::Hybrid { .. } => 2,
        }
    }
}

/// Decides each chunk's route (from the mode and the memory pressure).
pub trait Router<C>: 'static {
    fn route(&self, chunk: &C) -> RouteTag;
}

/// Decodes routed chunks into parts: one per engine that took a piece of a
/// chunk, or the error that stopped it, as data.
pub trait PartDecoder<C>: 'static {
    type Part;
    type Error;
    /// Decodes a batch of routed chunks (what one activation of the decode
    /// operator received), so that an engine can take many at once: a GPU
    /// wants thousands of chunks' work in one launch.
    fn decode_batch(&self, chunks: Vec<(C, RouteTag)>) -> Vec<Result<Self::Part, Self::Error>>;
}

/// A decoded piece of a chunk, as the merge sees it.
pub trait Part {
    /// The worker whose merge takes it (modulo the workers): the graph picks
    /// one by the part's tensor, among the workers of the process that
    /// decoded it.
    fn merge_key(&self) -> usize;
}

/// Where merged parts go: a file written at offsets, or memory.
pub trait Sink<P>: 'static {
    /// What the sink says of each part it took (it flows on, so that one
    /// place can check every part, whichever worker or process merged it).
    type Receipt;
    type Error;
    /// One part, exactly once.
    fn accept(&mut self, part: P) -> Result<Self::Receipt, Self::Error>;
}
