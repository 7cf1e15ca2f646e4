//! The GPU path's host side alone, no GPU needed: planning every float chunk
//! of a model for the device and grouping the plans into sub-batches
//! (`engine::batch::sub_batches`, what the CUDA engine does before it stages
//! a sub-batch), then the scatter of a sub-batch's output back to its
//! ranges. Reported as GB/s of decoded output: the host's ceiling on the GPU
//! path's end-to-end rate, next to the CPU engine's own decode.
//!
//! ```text
//! cargo run --release --example gpu_host_side -- MODEL.padic [ROUNDS] [BATCH_MB] [cold]
//! ```
//!
//! `cold` plans every round into fresh memory, as the engine did before it
//! kept its plans (`engine::batch::Spares`).

use std::time::Instant;

use padic_burst::engine::batch;
use padic_burst::engine::{chunk_jobs, tables_for, CpuEngine};
use padic_burst::format::Container;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: gpu_host_side MODEL.padic [ROUNDS] [BATCH_MB]")?;
    let rounds: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let batch_mb: usize = args.get(3).map_or(Ok(256), |s| s.parse())?;
    let cold = args.get(4).is_some_and(|s| s == "cold");
    let c = Container::open(std::path::Path::new(path))?;
    let tables = tables_for(&c, None)?;
    // Every chunk, for the ranges (which skip the others); the float ones.
    let jobs = chunk_jobs(&c);
    let float: Vec<_> = jobs.iter().filter(|j| tables[j.tensor].is_some()).collect();
    let bytes: u64 = float.iter().map(|j| j.out_len).sum();
    let mut out = vec![0u8; c.header().data_len as usize];
    let (mut plan, mut scatter, mut cpu) = (f64::MAX, f64::MAX, f64::MAX);
    let engine = CpuEngine::new(Some(1))?;
    // Kept across rounds, as the CUDA engine keeps them across calls.
    let spares = batch::Spares::default();
    for _ in 0..rounds {
        let mut ranges = batch::whole_chunk_ranges(&c, &tables, &jobs, &mut out);
        let mut results: Vec<_> = ranges.iter().map(|_| Ok(())).collect();
        let t = Instant::now();
        let subs = batch::sub_batches(&c, &ranges, batch_mb << 20, &mut results, &spares);
        plan = plan.min(t.elapsed().as_secs_f64());
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        // The scatter reads a sub-batch's output as the device wrote it.
        let device: Vec<Vec<u8>> = subs
            .iter()
            .map(|s| vec![1u8; s.plan.count * s.plan.word_size])
            .collect();
        let t = Instant::now();
        for (s, d) in subs.iter().zip(&device) {
            batch::scatter(s, d, &mut ranges);
        }
        scatter = scatter.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        engine.decompress_to_memory(&c, None)?;
        cpu = cpu.min(t.elapsed().as_secs_f64());
        if !cold {
            subs.into_iter().for_each(|s| spares.give(s.plan));
        }
    }
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    println!(
        "{} float chunks, {bytes} bytes decoded, best of {rounds}",
        float.len()
    );
    println!("| host step (1 thread) | GB/s of output |");
    println!("|---|---|");
    let memory = if cold { "fresh memory" } else { "kept memory" };
    println!(
        "| plan + sub-batch ({batch_mb} MiB, {memory}) | {:.2} |",
        gbs(plan)
    );
    println!("| scatter back | {:.2} |", gbs(scatter));
    println!(
        "| CPU engine decode, 1 thread (reference) | {:.2} |",
        gbs(cpu)
    );
    Ok(())
}
