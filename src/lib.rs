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
//! * [`monitor`]: snapshots of a run's statistics while it goes.
//! * [`engine::CpuEngine`]: decode it on the CPU alone, without the graph.
//! * [`inspect::inspect`]: per-tensor sizes and ratios.
//! * [`checkpoint`]: sharded checkpoints (a model directory) in one go.
//!
//! # Quick start
//!
//! Compress a safetensors model, open the container, decode it through the
//! pipeline (GPU when one is present, CPU otherwise) and check the bytes:
//!
//! ```
//! use std::sync::Arc;
//!
//! use padic_burst::compress::{compress_file, CompressOptions};
//! use padic_burst::config::Config;
//! use padic_burst::format::Container;
//! use padic_burst::pipeline::Pipeline;
//! use padic_burst::progress::Progress;
//! use safetensors::{Dtype, SafeTensors};
//!
//! # fn main() -> padic_burst::Result<()> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let input = dir.path().join("model.safetensors");
//! let output = dir.path().join("model.padic");
//!
//! // A small generated bf16 model (about 50k parameters), as safetensors bytes.
//! let original = padic_burst::demo::synthetic_model(7, 50_000, Dtype::BF16);
//! std::fs::write(&input, &original).expect("write model");
//!
//! compress_file(&input, &output, &CompressOptions::default(), &Progress::hidden())?;
//!
//! let container = Arc::new(Container::open(&output)?);
//! let pipeline = Pipeline::new(Config::default());
//! let (tensors, _info) = pipeline.decompress(&container, None)?;
//!
//! // Lossless: every tensor's bytes are the original's.
//! let reference = SafeTensors::deserialize(&original).expect("valid safetensors");
//! assert!(!tensors.is_empty());
//! for t in &tensors {
//!     assert_eq!(t.data.as_slice(), reference.tensor(&t.name).unwrap().data());
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

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
pub mod input;
pub mod inspect;
pub mod monitor;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod pressure;
pub mod progress;
pub mod stats;
pub mod timeline;

pub use error::{Error, Result};
