//! Whole-model loads into one host buffer, for callers that hand the memory
//! on without copying it (the Python bindings wrap each tensor as a view of
//! the buffer): [`Pipeline::decompress`] copies tensor by tensor instead.

use std::sync::Arc;

use super::{decompress_to_memory, Pipeline, RunInfo};
use crate::error::Result;
use crate::format::Container;

impl Pipeline {
    /// Decodes every tensor of `container` into one buffer, the safetensors
    /// data region: tensor `t`'s bytes are at `t.data_offset..t.data_offset +
    /// t.byte_len`. The run's statistics are kept as after
    /// [`Pipeline::decompress`].
    pub fn decompress_model(
        &self,
        container: &Arc<Container>,
        target: Option<u32>,
    ) -> Result<(Vec<u8>, RunInfo)> {
        let opts = self.options(target);
        let (model, s) = decompress_to_memory(container.clone(), &opts)?;
        self.remember(&s);
        let info = RunInfo {
            mode: opts.mode,
            gpu_chunks: s.gpu_decompressions,
            cpu_chunks: s.cpu_decompressions,
            hybrid_chunks: s.hybrid_decompressions,
            wall: std::time::Duration::from_secs_f64(s.wall_time_s),
        };
        Ok((model.data, info))
    }

    /// Why this pipeline decodes without a GPU; `None` when it has one.
    pub fn gpu_absent(&self) -> Option<&str> {
        match &self.gpu {
            Some(_) => None,
            None => Some(self.gpu_absent.as_deref().unwrap_or("none was given")),
        }
    }
}
