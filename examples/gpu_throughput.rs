//! GPU decode throughput (the `cuda` feature), for `scripts/gpu-check.sh`:
//!
//! ```text
//! cargo run --release --features cuda --example gpu_throughput -- [MB] [REPEATS] [BATCH_MB,...]
//! ```
//!
//! On a generated bf16 model of MB megabytes (default 512), every float chunk
//! in one batch (`GpuEngine::decode_batch`), for each sub-batch size in
//! BATCH_MB (default 64,256,1024): the kernels alone, on input already on the device,
//! run REPEATS times (default 20), in decoded GB/s; the batch end to end
//! (staging in pinned memory, copies both ways on several streams, kernels);
//! then whole-model decodes in memory through the dataflow graph, GPU_ONLY
//! against CPU_ONLY, best of REPEATS / 10 runs each. Every output is compared
//! byte for byte with the CPU engine's. Prints a small table.

use std::sync::Arc;

use padic_burst::config::Config;
use padic_burst::engine::batch;
use padic_burst::engine::cuda::CudaEngine;
use padic_burst::engine::{chunk_jobs, tables_for, CpuEngine};
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_to_memory, RunOptions};
use padic_burst::policy::Mode;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mb: f64 = args.get(1).map_or(Ok(512.0), |s| s.parse())?;
    let repeats: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    let sizes: Vec<usize> = args
        .get(3)
        .map_or("64,256,1024", |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let gpu = CudaEngine::shared(0)?;
    let dir = std::env::temp_dir().join(format!("padic-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let params = (mb * 1e6 / 2.0 / 1.1) as usize;
    let packed =
        padic_burst::demo::compressed_model(&dir, "model", 3, params, safetensors::Dtype::BF16)?;
    let c = Arc::new(Container::open(&packed)?);
    // Every float chunk in one batch: the kernels alone, then end to end.
    let tables = tables_for(&c, None)?;
    let (want, _) = CpuEngine::new(None)?.decompress_to_memory(&c, None)?;
    let mut got = vec![0u8; want.data.len()];
    // Every chunk, for the ranges (which skip the others); the float ones.
    let jobs = chunk_jobs(&c);
    let float: Vec<_> = jobs.iter().filter(|j| tables[j.tensor].is_some()).collect();
    let mut batch_ok = true;
    let timed = |got: &mut [u8], repeats: usize| -> Result<_, Box<dyn std::error::Error>> {
        let mut ranges = batch::whole_chunk_ranges(&c, &tables, &jobs, got);
        Ok(gpu.decode_timed(&c, &mut ranges, repeats)?)
    };
    // (sub-batch MiB, kernels alone GB/s, end to end GB/s, sub-batches)
    let mut rows = Vec::new();
    for &mb in &sizes {
        gpu.set_batch_bytes(mb << 20);
        let kernel_run = timed(&mut got, repeats)?;
        let end_to_end = timed(&mut got, 1)?;
        for j in &float {
            let r = j.out_offset as usize..(j.out_offset + j.out_len) as usize;
            batch_ok &= got[r.clone()] == want.data[r];
        }
        rows.push((
            mb,
            kernel_run.bytes as f64 * repeats as f64 / kernel_run.kernel_secs / 1e9,
            end_to_end.bytes as f64 / end_to_end.total_secs / 1e9,
            kernel_run.sub_batches,
        ));
    }
    gpu.set_batch_bytes(256 << 20);
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
    let same = outputs[0] == outputs[1] && outputs[1] == want.data && batch_ok;
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
    for (mb, kernel, batch, subs) in &rows {
        println!("| kernels alone, {mb} MiB sub-batches ({subs}), {repeats} runs | {kernel:.1} |");
        println!(
            "| one batch end to end, {mb} MiB sub-batches (pinned staging, copies, kernels) | {batch:.2} |"
        );
    }
    println!(
        "| graph GPU_ONLY, whole model in memory, best of {runs} | {:.2} |",
        bytes / best[0] / 1e9
    );
    println!(
        "| graph CPU_ONLY, whole model in memory, best of {runs} | {:.2} |",
        bytes / best[1] / 1e9
    );
    println!(
        "batch and GPU_ONLY output identical to the CPU engine's: {}",
        if same { "yes" } else { "NO" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    if !same {
        return Err("the GPU output differs from the CPU's".into());
    }
    Ok(())
}
