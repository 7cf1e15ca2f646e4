//! GPU decode throughput (the `cuda` feature), for `scripts/gpu-check.sh`:
//!
//! ```text
//! cargo run --release --features cuda --example gpu_throughput -- [MB] [REPEATS]
//! ```
//!
//! On a generated bf16 model of MB megabytes (default 512): the kernels alone
//! on one 1 MiB chunk already on the device, run REPEATS times (default 50),
//! in decoded GB/s; then whole-model decodes in memory through the dataflow
//! graph, GPU_ONLY against CPU_ONLY, best of REPEATS / 10 runs each, with a
//! byte comparison. Prints a small table.

use std::sync::Arc;

use padic_burst::compress::{compress_file, CompressOptions};
use padic_burst::config::Config;
use padic_burst::engine::cuda::CudaEngine;
use padic_burst::engine::tables_for;
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_to_memory, RunOptions};
use padic_burst::policy::Mode;
use padic_burst::progress::Progress;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mb: f64 = args.get(1).map_or(Ok(512.0), |s| s.parse())?;
    let repeats: usize = args.get(2).map_or(Ok(50), |s| s.parse())?;
    let gpu = CudaEngine::shared(0)?;
    let dir = std::env::temp_dir().join(format!("padic-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("model.safetensors");
    let packed = dir.join("model.padic");
    let params = (mb * 1e6 / 2.0 / 1.1) as usize;
    std::fs::write(
        &input,
        padic_burst::demo::synthetic_model(3, params, safetensors::Dtype::BF16),
    )?;
    compress_file(
        &input,
        &packed,
        &CompressOptions::default(),
        &Progress::hidden(),
    )?;
    let c = Arc::new(Container::open(&packed)?);
    // The kernels alone: the biggest float chunk, already uploaded.
    let tables = tables_for(&c, None)?;
    let (t, tab) = tables
        .iter()
        .enumerate()
        .filter_map(|(t, x)| x.as_ref().map(|x| (t, x)))
        .max_by_key(|(t, _)| c.header().tensors[*t].chunks[0].elements)
        .ok_or("no float tensor")?;
    let elements = c.header().tensors[t].chunks[0].elements as usize;
    let mut out = vec![0u8; elements * tab.kind.size()];
    let secs = gpu.decode_timed(&c, tab, t, 0, elements, 0, &mut out, repeats)?;
    let kernel = out.len() as f64 * repeats as f64 / secs / 1e9;
    // End to end through the graph.
    let runs = (repeats / 10).max(1);
    let mut best = [f64::INFINITY; 2];
    let mut outputs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, mode) in [Mode::GpuOnly, Mode::CpuOnly].into_iter().enumerate() {
            let mut o = RunOptions::new(mode, Config::default());
            if mode == Mode::GpuOnly {
                o.gpu = Some(gpu.clone());
            }
            let t0 = std::time::Instant::now();
            let (m, _) = decompress_to_memory(c.clone(), &o)?;
            best[i] = best[i].min(t0.elapsed().as_secs_f64());
            outputs[i] = m.data;
        }
    }
    let same = outputs[0] == outputs[1];
    let bytes = c.header().data_len as f64;
    println!(
        "device: {}",
        padic_burst::engine::gpu::GpuEngine::describe(&*gpu)
    );
    println!(
        "model: generated bf16, {} bytes, {} chunks",
        c.header().data_len,
        c.header()
            .tensors
            .iter()
            .map(|t| t.chunks.len())
            .sum::<usize>()
    );
    println!("| what | GB/s decoded |");
    println!("|---|---|");
    println!(
        "| kernels alone, one {} KiB chunk, {repeats} runs | {kernel:.1} |",
        out.len() / 1024
    );
    println!(
        "| graph GPU_ONLY, whole model in memory, best of {runs} | {:.2} |",
        bytes / best[0] / 1e9
    );
    println!(
        "| graph CPU_ONLY, whole model in memory, best of {runs} | {:.2} |",
        bytes / best[1] / 1e9
    );
    println!(
        "GPU_ONLY output identical to CPU_ONLY: {}",
        if same { "yes" } else { "NO" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    if !same {
        return Err("the GPU output differs from the CPU's".into());
    }
    Ok(())
}
