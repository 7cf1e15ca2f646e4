//! The report as terminal tables.
#![forbid(unsafe_code)]

use super::{Report, Stat};

fn fmt_stat(s: &Stat) -> String {
    format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
}

fn fmt_target(t: Option<u32>) -> String {
    t.map_or("all".into(), |k| k.to_string())
}

/// The report as terminal tables.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    o += &format!(
        "padic-burst bench, {} UTC: {} cores ({}), GPU: {}\n",
        r.date_utc,
        r.machine.cores,
        r.machine.cpu_model,
        r.machine.gpu.as_deref().unwrap_or("none")
    );
    o += &format!(
        "input: {}, {} bytes, {} tensors, {} chunks, exponent entropy {:.3} bits/value; median (min–max) of {} runs after a warm-up\n\n",
        r.input.source, r.input.bytes, r.input.tensors, r.input.chunks, r.input.exponent_entropy_bits, r.repeat
    );
    o += &format!(
        "compression: ratio {:.4} ({} bytes), {} GB/s",
        r.compression.ratio,
        r.compression.compressed_bytes,
        fmt_stat(&r.compression.gb_per_s)
    );
    // The peer compressing with as many threads as ours (all cores).
    for p in r.peers.iter().filter(|p| p.name.starts_with("zipnn")) {
        if let Some(s) = &p.compress_gb_per_s {
            o += &format!(
                "; {} {} GB/s, ours/peer {:.2}x (medians)",
                p.name,
                fmt_stat(s),
                r.compression.gb_per_s.median / s.median
            );
        }
    }
    o += "\n\n";
    o += &format!(
        "{:<10} {:>7} {:>7} {:>28} {:>6} {:>6} {:>6} {:>9}\n",
        "decode", "workers", "digits", "GB/s", "gpu", "cpu", "hybrid", "p99 µs"
    );
    for d in &r.decompression {
        o += &format!(
            "{:<10} {:>7} {:>7} {:>28} {:>6} {:>6} {:>6} {:>9}\n",
            d.mode,
            d.workers,
            fmt_target(d.target_precision),
            fmt_stat(&d.gb_per_s),
            d.chunks_gpu,
            d.chunks_cpu,
            d.chunks_hybrid,
            if d.mode == "bare" {
                "-".into()
            } else {
                d.p99_us.to_string()
            }
        );
    }
    o += "\ngraph overhead (cpu-only graph over the bare loop, median (min–max) of pairs run back to back):\n";
    for g in &r.graph_overhead {
        o += &format!(
            "  {} workers, digits {}: {:.3} ({:.3}–{:.3}, {} pairs)\n",
            g.workers,
            fmt_target(g.target_precision),
            g.pipeline_over_bare,
            g.min,
            g.max,
            g.pairs
        );
    }
    if let Some(sc) = &r.worker_scaling {
        o += &format!(
            "worker scaling (cpu-only graph, {} workers over 1, pairs run back to back): {:.2}x ({:.2}–{:.2}, {} pairs)\n",
            sc.workers, sc.median, sc.min, sc.max, sc.pairs
        );
    }
    if !r.to_file.is_empty() {
        o += &to_file_table(r);
    }
    if !r.peers.is_empty() {
        o += &peers_table(r);
    }
    if !r.scenarios.is_empty() {
        o += &scenarios_table(r);
    }
    for s in &r.skipped {
        o += &format!("skipped: {s}\n");
    }
    o
}

/// The whole decompression to a file, and ZipNN's decode and write to the
/// same folder, per worker count.
fn to_file_table(r: &Report) -> String {
    let mut o = format!(
        "\nto a file in {} (ours: the whole decompression, written and renamed; a peer: decode, then write):\n",
        r.to_file[0].dir
    );
    o += &format!(
        "{:>7} {:>28} {:>11} {:>14} {:>28} {:>10}\n",
        "workers", "padic-burst GB/s", "cores busy", "peer", "peer GB/s", "ours/peer"
    );
    for t in &r.to_file {
        let peer = r.peers.iter().find_map(|p| {
            p.decompress_write_gb_per_s
                .iter()
                .find(|(w, _)| *w == t.workers)
                .map(|(_, s)| (p.name.as_str(), s))
        });
        let (name, stat, ratio) = match peer {
            Some((name, s)) => (
                name.to_string(),
                fmt_stat(s),
                format!("{:.2}x", t.gb_per_s.median / s.median),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        o += &format!(
            "{:>7} {:>28} {:>11.2} {:>14} {:>28} {:>10}\n",
            t.workers,
            fmt_stat(&t.gb_per_s),
            t.cores_busy.median,
            name,
            stat,
            ratio
        );
    }
    let of = |w: usize| r.to_file.iter().find(|t| t.workers == w);
    if let (Some(one), Some(two)) = (of(1), of(2)) {
        o += &format!(
            "two workers against one, to a file: {:.2}x the speed, {:.2}x the cores busy (one worker \
             has a writer thread beside it where a core is free)\n",
            two.gb_per_s.median / one.gb_per_s.median,
            two.cores_busy.median / one.cores_busy.median
        );
    }
    o
}

/// The peers against ours: compression ratio and decode speed per worker count.
fn peers_table(r: &Report) -> String {
    let mut o = String::new();
    let ours = |w: usize| {
        r.decompression
            .iter()
            .find(|d| d.mode == "cpu-only" && d.workers == w && d.target_precision.is_none())
            .map(|d| d.gb_per_s.median)
    };
    o += &format!(
        "\n{:<14} {:>8} {:>10} {:>28} {:>10}\n",
        "peer", "ratio", "ours/peer", "decode GB/s (workers)", "ours/peer"
    );
    o += &format!(
        "{:<14} {:>8.4} {:>10} {:>28} {:>10}\n",
        "padic-burst", r.compression.ratio, "1.000", "", ""
    );
    for p in &r.peers {
        if p.status != "ok" {
            o += &format!("{:<14} {}\n", p.name, p.status);
            continue;
        }
        let ratio = p.ratio.unwrap_or(f64::NAN);
        for (i, (w, s)) in p.decompress_gb_per_s.iter().enumerate() {
            let speed = ours(*w).map_or("-".into(), |g| format!("{:.2}x", g / s.median));
            if i == 0 {
                o += &format!(
                    "{:<14} {:>8.4} {:>10.3} {:>28} {:>10}\n",
                    p.name,
                    ratio,
                    r.compression.ratio / ratio,
                    format!("{} ({w})", fmt_stat(s)),
                    speed
                );
            } else {
                o += &format!(
                    "{:<14} {:>8} {:>10} {:>28} {:>10}\n",
                    "",
                    "",
                    "",
                    format!("{} ({w})", fmt_stat(s)),
                    speed
                );
            }
        }
    }
    o
}

/// The policy scenarios replayed in the auto mode.
fn scenarios_table(r: &Report) -> String {
    let mut o = String::new();
    o += &format!(
        "\n{:<18} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>28} {:>9}\n",
        "scenario (auto)", "step", "switches", "events", "gpu", "cpu", "hybrid", "GB/s", "p99 µs"
    );
    for s in &r.scenarios {
        o += &format!(
            "{:<18} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>28} {:>9.0}\n",
            s.name,
            s.replay_step_ms,
            s.mode_switches,
            s.memory_pressure_events,
            s.chunks_gpu,
            s.chunks_cpu,
            s.chunks_hybrid,
            fmt_stat(&s.gb_per_s),
            s.p99_us.median
        );
    }
    if let Some(n) = r.scenarios.iter().flat_map(|s| &s.notes).next() {
        o += &format!("  note: {n}\n");
    }
    o
}
