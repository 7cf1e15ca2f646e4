//! Decode engines. The CPU engine lives here; the GPU engine comes with the
//! `cuda` feature.

pub mod batch;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gpu;

pub use cpu::{chunk_jobs, tables_for, ChunkJob, CpuEngine, DecodeStats, DecodedModel};
