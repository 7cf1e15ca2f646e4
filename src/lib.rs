//! padic-burst: compressed neural-network weights in a p-adic container,
//! decoded bit-exact.
//!
//! Each float is split into an exponent channel (entropy-coded with
//! interleaved rANS, in independently decodable segments) and a sign/digit
//! channel holding the fraction as base-`p` digits, most significant first, in
//! planes, so a reader can stop early (progressive precision). Non-float
//! tensors pass through byte for byte.
//!
//! * [`compress::compress_file`]: safetensors -> container.
//! * [`format::Container`]: open and validate a container.
//! * [`pipeline::Pipeline`]: decode it through the dataflow graph
//!   ([`graph`]), to a file, to memory, or tensor by tensor.
//! * [`engine::CpuEngine`]: decode it on the CPU alone, without the graph.
//! * [`inspect::inspect`]: per-tensor sizes and ratios.
//! * [`checkpoint`]: sharded checkpoints (a model directory) in one go.

pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod compress;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod format;
pub mod graph;
pub mod inspect;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod pressure;
pub mod progress;
pub mod stats;
pub mod timeline;

pub use error::{Error, Result};
