//! The whole decompression to a file, as `padic-burst decompress X -o OUT`
//! runs it (written under a temporary name, renamed, every byte checked),
//! per worker count, into the bench's folder (`$TMPDIR`: set it to
//! `/dev/shm` to leave the disk out). ZipNN's figure to set beside it, its
//! decode and write, comes from the same folder (see `peers`).
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::decode::run_options;
use super::report::{Stat, ToFile};
use crate::error::{Error, Result};
use crate::format::Container;
use crate::policy::Mode;

/// `runs` decompressions of `c` into a file in `dir` (the first a warm-up)
/// per worker count of `workers`; each output must be `original` (the
/// safetensors file the container was made from).
pub(super) fn to_file(
    c: &Arc<Container>,
    dir: &Path,
    workers: &[usize],
    runs: usize,
    original: &[u8],
    bar: &crate::progress::Progress,
) -> Result<Vec<ToFile>> {
    let out = dir.join("to-file.safetensors");
    let mut figures = Vec::new();
    for &w in workers {
        let o = run_options(Mode::Auto, w, None, &None)?;
        let mut secs = Vec::new();
        let mut busy = Vec::new();
        let cores = crate::config::cores() as f64;
        for i in 0..runs {
            let t = Instant::now();
            let stats = crate::pipeline::decompress_file(c.clone(), &out, &o)?;
            let elapsed = t.elapsed().as_secs_f64();
            let written = std::fs::read(&out).map_err(|e| Error::io(&out, e))?;
            std::fs::remove_file(&out).map_err(|e| Error::io(&out, e))?;
            if written != original {
                return Err(Error::Internal(format!(
                    "bench: decompressing to a file with {w} workers gave other bytes than the input"
                )));
            }
            if i > 0 || runs == 1 {
                secs.push(elapsed);
                busy.push(stats.avg_cpu_utilization * cores);
            }
        }
        figures.push(ToFile {
            dir: dir.display().to_string(),
            workers: w,
            gb_per_s: Stat::of_throughput(original.len() as u64, &secs),
            cores_busy: Stat::of(&busy),
        });
        bar.advance(1);
    }
    Ok(figures)
}
