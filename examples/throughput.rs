//! Decode throughput of a container, the way `scripts/compare-peers.sh`
//! measures it:
//!
//! ```text
//! cargo run --release --example throughput -- MODEL.padic [WORKERS] [REPEATS]
//! ```
//!
//! Prints one line: `workers=N fresh_gb_per_s=... reused_gb_per_s=...`:
//! decoded bytes per second over the best of REPEATS full decodes, into a
//! freshly allocated buffer each time (as a loader that returns new tensors,
//! and as ZipNN's `decompress`) and into one reused buffer (as a streaming
//! loader). The best of many runs filters out other tenants of a shared machine.

use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: throughput MODEL.padic [WORKERS] [REPEATS]")?;
    let workers: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let repeats: usize = args.get(3).map_or(Ok(10), |s| s.parse())?;
    let container = Container::open(path)?;
    let engine = CpuEngine::new(Some(workers))?;
    let mut fresh = f64::INFINITY;
    let mut reused = f64::INFINITY;
    let mut buf = vec![0u8; container.header().data_len as usize];
    for _ in 0..repeats.max(1) {
        let (_, stats) = engine.decompress_to_memory(&container, None)?;
        fresh = fresh.min(stats.wall.as_secs_f64());
        let stats = engine.decompress_into(&container, None, &mut buf)?;
        reused = reused.min(stats.wall.as_secs_f64());
    }
    let gb = buf.len() as f64 / 1e9;
    println!(
        "workers={workers} fresh_gb_per_s={:.3} reused_gb_per_s={:.3}",
        gb / fresh,
        gb / reused
    );
    Ok(())
}
