//! `bench --svg DIR`: decode throughput per mode and peer, and HDR latency
//! percentile curves per route for each policy scenario.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::Report;
use crate::error::{Error, Result};

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{}: cannot draw the plot: {e}", path.display()))
}

/// Writes the plots into `dir`; returns the files written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    let p = dir.join("throughput.svg");
    throughput(report, &p)?;
    written.push(p);
    written.extend(report.scenarios.iter().filter_map(|s| s.timeline.clone()));
    let no_gpu = report.machine.gpu.is_none();
    for s in &report.scenarios {
        let p = dir.join(format!("latency-{}.svg", s.name));
        // Without a GPU, the GPU route's chunks ran on the CPU: say so.
        let curves: Vec<(String, Vec<(f64, u64)>)> = s
            .latency_curves
            .iter()
            .map(|(route, points)| {
                let label = match route.as_str() {
                    "gpu" if no_gpu => "gpu route (ran on the CPU: no GPU)".to_string(),
                    r => format!("{r} route"),
                };
                (label, points.clone())
            })
            .collect();
        latency(
            &format!(
                "chunk latency by route, scenario {} (auto, {} workers)",
                s.name, s.workers
            ),
            &curves,
            &p,
        )?;
        written.push(p);
    }
    Ok(written)
}

/// Bars: decode GB/s (median) of each mode at the most workers, every digit,
/// and of each peer at the same thread count.
fn throughput(r: &Report, path: &Path) -> Result<()> {
    let w = r.decompression.iter().map(|d| d.workers).max().unwrap_or(1);
    let mut bars: Vec<(String, f64, RGBColor)> = r
        .decompression
        .iter()
        .filter(|d| d.workers == w && d.target_precision.is_none())
        .map(|d| {
            let name = if d.mode == "bare" {
                "padic-burst bare loop".to_string()
            } else {
                format!("padic-burst {}", d.mode)
            };
            (name, d.gb_per_s.median, RGBColor(31, 119, 180))
        })
        .collect();
    for p in &r.peers {
        if let Some((_, s)) = p.decompress_gb_per_s.iter().find(|(pw, _)| *pw == w) {
            bars.push((p.name.clone(), s.median, RGBColor(255, 127, 14)));
        }
    }
    let n = bars.len().max(1);
    let xmax = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(0.1) * 1.35;
    let height = 80 + 34 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "decode throughput, {} workers, {} ({} bytes)",
                    w, r.input.source, r.input.bytes
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("decoded GB/s (median)")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (name, v, color)) in bars.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (*v, y + 0.85)],
                    color.filled(),
                )))
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name}: {v:.2}"),
                    (v + xmax * 0.01, y + 0.62),
                    ("sans-serif", 14),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    crate::output::write_atomic(path, svg.as_bytes())
}

/// "Nines": 90% -> 1, 99% -> 2, 99.9% -> 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - (percentile / 100.0).min(0.99999)).log10()
}

/// One curve per route: latency (µs, log scale) over the percentile.
fn latency(title: &str, curves: &[(String, Vec<(f64, u64)>)], path: &Path) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let ymax = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.1))
            .max()
            .unwrap_or(1)
            .max(10) as f64
            * 2.0;
        let xmax = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| nines(p.0)))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, (1f64..ymax).log_scale())
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency µs (queue + decode + merge)")
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                format!("{p:.3}%")
            })
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let colors = [
            RGBColor(44, 160, 44),
            RGBColor(31, 119, 180),
            RGBColor(214, 39, 40),
        ];
        for (i, (route, points)) in curves.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(p, v)| (nines(*p), (*v).max(1) as f64)),
                    color.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(format!("{route} ({} points)", points.len()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if !curves.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    crate::output::write_atomic(path, svg.as_bytes())
}
