//! The graph's records: a chunk to decode, a decoded part, and the receipt a
//! merge gives for it. Each is a handle of a few words (a part also carries
//! its bytes, unless the decoder placed them already).

use padic_burst_operators::Part;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::policy::Route;
use crate::stats::Engine;

/// One chunk to decode: a handle of a few words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkTask {
    /// Index in global order (shards in index order, tensors in file order,
    /// chunks in order).
    pub global: usize,
    /// Index of the chunk's shard in the run (0 for a single container).
    pub shard: usize,
    /// Index of the chunk's tensor in the container's header.
    pub tensor: usize,
    /// Index of the chunk within its tensor.
    pub chunk: usize,
    /// Values in the chunk.
    pub elements: u64,
    /// Byte offset of the chunk's output in the data region.
    pub out_offset: u64,
    /// Bytes of the chunk's decoded output.
    pub out_len: u64,
    /// When the source emitted it (µs since the run started).
    pub sent_us: u64,
}

/// A decoded piece of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodedPart {
    /// Index of the chunk in global order.
    pub global: usize,
    /// Index of the chunk's shard in the run.
    pub shard: usize,
    /// Index of the chunk's tensor in the container's header.
    pub tensor: usize,
    /// Index of the chunk within its tensor.
    pub chunk: usize,
    /// The route the chunk was given.
    pub route: Route,
    /// The engine that decoded this part.
    pub engine: Engine,
    /// First value of the chunk this part holds.
    pub first: u64,
    /// Byte offset of this part in the data region.
    pub out_offset: u64,
    /// The part's decoded bytes (empty when `placed` is set).
    pub data: Vec<u8>,
    /// Bytes decoded straight into the output (in-memory runs); `data` is
    /// then empty.
    pub placed: u64,
    /// Container bytes read for it.
    pub bytes_in: u64,
    /// µs the chunk waited between the source and its decoder.
    pub queue_us: u64,
    /// µs the decode took.
    pub decode_us: u64,
    /// When decoding ended (µs since the run started).
    pub done_us: u64,
    /// Whether a GPU out-of-memory sent this part to the CPU.
    pub rerouted_oom: bool,
    /// The worker whose merge places it: one of the decoding process's own,
    /// picked by the tensor (told apart by its shard), so that in a cluster
    /// no decoded byte crosses to another process (every process writes the
    /// same output file).
    pub merge_at: usize,
}

/// What a merge did with a part; all receipts go to worker 0, which checks
/// that every chunk of every shard arrived exactly once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeReceipt {
    /// Index of the chunk in global order.
    pub global: usize,
    /// Index of the chunk's shard in the run.
    pub shard: usize,
    /// Index of the chunk's tensor in the container's header.
    pub tensor: usize,
    /// Index of the chunk within its tensor.
    pub chunk: usize,
    /// First value of the chunk the merged part holds.
    pub first: u64,
    /// The route the policy chose for the chunk.
    pub route: Route,
    /// The engine that decoded this part.
    pub engine: Engine,
    /// Byte offset of the part in the data region.
    pub out_offset: u64,
    /// Decoded bytes the merge placed for the part.
    pub bytes: u64,
    /// Container bytes read for the part.
    pub bytes_in: u64,
    /// When the chunk was routed (µs since the run started).
    pub routed_us: u64,
}

/// A part that failed, as data: the error, typed, and the chunk's place in
/// global order (a run fails with its first failure by place).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// Index of the failed chunk in global order.
    pub global: usize,
    /// Boxed: a record stays a few words.
    pub error: Box<Error>,
}

impl DecodedPart {
    /// Decoded bytes, carried or already placed.
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64 + self.placed
    }
}

impl Part for DecodedPart {
    fn merge_key(&self) -> usize {
        self.merge_at
    }
}
