//! Decode throughput of a container held in memory, the way
//! `scripts/compare-peers.sh` measures it:
//!
//! ```text
//! cargo run --release --example throughput -- MODEL.padic [WORKERS] [REPEATS]
//! ```
//!
//! Prints one line: `workers=N best_s=... gb_per_s=...` (decoded bytes over
//! the best of REPEATS full decodes, output buffer allocated per decode).

use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: throughput MODEL.padic [WORKERS] [REPEATS]")?;
    let workers: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let repeats: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let container = Container::open(path)?;
    let engine = CpuEngine::new(Some(workers))?;
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..repeats.max(1) {
        let (model, stats) = engine.decompress_to_memory(&container, None)?;
        bytes = model.data.len();
        best = best.min(stats.wall.as_secs_f64());
    }
    println!(
        "workers={workers} best_s={best:.4} gb_per_s={:.3}",
        bytes as f64 / best / 1e9
    );
    Ok(())
}
