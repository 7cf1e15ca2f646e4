//! How many digits a run decodes, and the decode tables for it.

use std::sync::Arc;

use super::RunOptions;
use crate::codec::Tables;
use crate::engine::cpu::{tables_for, tables_with};
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

    pub(crate) fn tables(&self, c: &Container) -> Result<Vec<Option<Arc<Tables>>>> {
        match *self {
            TargetPrecision::All => tables_for(c, None),
            TargetPrecision::Exactly(k) => tables_for(c, Some(k)),
            TargetPrecision::AtMost(k) => tables_with(c, |l, _, _| Ok(k.min(l.precision))),
        }
    }
}
