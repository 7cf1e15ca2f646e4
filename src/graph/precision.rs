//! How many digits a run decodes, and the decode tables for it.

use std::sync::Arc;

use super::RunOptions;
use crate::codec::Tables;
use crate::engine::cpu::{checked_digits, tables_with};
use crate::error::Result;
use crate::format::Container;

/// How many digits a run decodes.
pub(crate) enum TargetPrecision {
    All,
    /// Exactly `k` for every float tensor; above a tensor's stored precision is an error.
    Exactly(u32),
    /// `k` or the tensor's stored precision, whichever is smaller
    /// (`progressive_precision` with `mantissa_bits` from the configuration).
    AtMost(u32),
}

impl TargetPrecision {
    /// What `opts` asks for: `--target-precision`, else the configuration's
    /// `progressive_precision` and `mantissa_bits`.
    pub(crate) fn of(opts: &RunOptions) -> Self {
        match (opts.target_precision, opts.config.progressive_precision) {
            (Some(k), _) => TargetPrecision::Exactly(k),
            (None, true) => TargetPrecision::AtMost(opts.config.mantissa_bits),
            (None, false) => TargetPrecision::All,
        }
    }

    /// The decode tables of the split tensors of `c` that `wanted` names
    /// (a run that reads some tensors builds and checks only theirs: a
    /// one-tensor read paid for every tensor of its shard, and failed on
    /// another tensor's precision).
    pub(crate) fn tables(
        &self,
        c: &Container,
        wanted: impl Fn(usize) -> bool,
    ) -> Result<Vec<Option<Arc<Tables>>>> {
        tables_with(c, |ti, layout, t| {
            if !wanted(ti) {
                return Ok(None);
            }
            Ok(Some(match *self {
                TargetPrecision::All => layout.precision,
                TargetPrecision::Exactly(k) => checked_digits(Some(k), layout, t)?,
                TargetPrecision::AtMost(k) => k.min(layout.precision),
            }))
        })
    }
}
