//! The dataflow pipeline's throughput against the bare CPU engine on the same
//! container, both decoding to a file, alternating, best of REPEATS each:
//!
//! ```text
//! cargo run --release --example pipeline_overhead -- MODEL.padic [WORKERS] [REPEATS]
//! ```
//!
//! Prints `workers=N bare_s=... pipeline_s=... pipeline_over_bare=...` (a
//! ratio of throughputs: 1.0 means no overhead).

use std::sync::Arc;

use padic_burst::config::ConfigLayer;
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_file, RunOptions};
use padic_burst::policy::Mode;
use padic_burst::progress::Progress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: pipeline_overhead MODEL.padic [WORKERS] [REPEATS]")?;
    let workers: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let repeats: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let container = Arc::new(Container::open(path)?);
    let dir = std::env::temp_dir().join(format!("padic-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let engine = CpuEngine::new(Some(workers))?;
    let prefetch: i64 = std::env::var("PREFETCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let config = ConfigLayer {
        num_cpu_workers: Some(workers as i64),
        prefetch_factor: Some(prefetch),
        ..ConfigLayer::default()
    }
    .resolve()?;
    let opts = RunOptions::new(Mode::CpuOnly, config);
    let (mut bare, mut piped) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeats.max(1) {
        let t = std::time::Instant::now();
        engine.decompress_file(
            &container,
            &dir.join("bare.safetensors"),
            None,
            &Progress::hidden(),
        )?;
        bare = bare.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        decompress_file(container.clone(), &dir.join("piped.safetensors"), &opts)?;
        piped = piped.min(t.elapsed().as_secs_f64());
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "workers={workers} bare_s={bare:.4} pipeline_s={piped:.4} pipeline_over_bare={:.3}",
        bare / piped
    );
    Ok(())
}
