//! A generated model and the `demo` command: compress it, decompress it,
//! check every byte, and say what happened. Runs offline.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::compress::{compress_file, CompressOptions};
use crate::engine::CpuEngine;
use crate::error::{Error, Result};
use crate::format::Container;
use crate::progress::Progress;

/// The demo's pressure trace (`benches/traces/rise-and-fall.csv`): low, a
/// ramp to 97% of GPU memory, a hold, a stay inside the hysteresis band, and
/// a fall back to 40%.
pub const DEMO_TRACE: &str = include_str!("../benches/traces/rise-and-fall.csv");

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Gaussian weights of standard deviation `std`, as little-endian bytes of `dtype`.
pub fn gaussian_bytes(rng: &mut Rng, n: usize, std: f64, dtype: Dtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        let v = rng.normal() * std;
        match dtype {
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            _ => unreachable!("gaussian_bytes is called with float dtypes"),
        }
    }
    out
}

/// A transformer-shaped model of about `params` parameters per float dtype:
/// embeddings, attention and MLP weights, biases, layer norms, and an i64
/// position-id tensor that passes through.
pub fn synthetic_model(seed: u64, params: usize, dtype: Dtype) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let hidden = 256usize;
    let layers = (params / (12 * hidden * hidden)).max(1);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let vocab = (params / 10 / hidden).max(16);
    tensors.push((
        "embeddings.word".into(),
        dtype,
        vec![vocab, hidden],
        gaussian_bytes(&mut rng, vocab * hidden, 0.05, dtype),
    ));
    for l in 0..layers {
        for (name, rows, cols, std) in [
            ("attn.qkv.weight", 3 * hidden, hidden, 0.04),
            ("attn.out.weight", hidden, hidden, 0.03),
            ("mlp.up.weight", 4 * hidden, hidden, 0.035),
            ("mlp.down.weight", hidden, 4 * hidden, 0.02),
        ] {
            tensors.push((
                format!("layer.{l}.{name}"),
                dtype,
                vec![rows, cols],
                gaussian_bytes(&mut rng, rows * cols, std, dtype),
            ));
        }
        tensors.push((
            format!("layer.{l}.mlp.up.bias"),
            dtype,
            vec![4 * hidden],
            gaussian_bytes(&mut rng, 4 * hidden, 0.01, dtype),
        ));
        let scales: Vec<f64> = (0..hidden).map(|i| 1.0 + 0.001 * i as f64).collect();
        let ones = values_as(&scales, dtype);
        tensors.push((format!("layer.{l}.norm.weight"), dtype, vec![hidden], ones));
    }
    let ids: Vec<u8> = (0..512i64).flat_map(|i| i.to_le_bytes()).collect();
    tensors.push(("position_ids".into(), Dtype::I64, vec![1, 512], ids));
    serialize(seed, &tensors)
}

/// A model of about `params` parameters in many small tensors, as in model
/// families of many thin layers: tensors of 6,000 to 14,000 values (weights,
/// biases and norm scales), a few hundred per 5 million parameters. The
/// case where per-tensor and per-chunk costs decide the ratio.
pub fn many_small_model(seed: u64, params: usize, dtype: Dtype) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    let mut k = 0usize;
    while total < params.max(1) {
        let n = 6000 + (rng.next_u64() % 8000) as usize;
        let (name, shape, std) = match k % 7 {
            0 => ("norm.weight", vec![n], 0.0),
            1 => ("bias", vec![n], 0.01),
            _ => ("weight", vec![n / 64, 64], 0.02 + 0.005 * (k % 5) as f64),
        };
        let count = shape.iter().product::<usize>();
        let bytes = if std == 0.0 {
            // Norm scales: near one, as trained layer norms are.
            let noise = gaussian_bytes(&mut rng, count, 0.05, Dtype::F32);
            let values: Vec<f64> = noise
                .chunks_exact(4)
                .map(|b| 1.0 + f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
                .collect();
            values_as(&values, dtype)
        } else {
            gaussian_bytes(&mut rng, count, std, dtype)
        };
        tensors.push((
            format!("blocks.{}.{}.{name}", k / 7, k % 7),
            dtype,
            shape,
            bytes,
        ));
        total += count;
        k += 1;
    }
    serialize(seed, &tensors)
}

/// `values` in `dtype`'s little-endian bytes (a float dtype).
fn values_as(values: &[f64], dtype: Dtype) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            Dtype::F32 => (v as f32).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
            _ => half::f16::from_f64(v).to_le_bytes().to_vec(),
        })
        .collect()
}

/// The safetensors file of `tensors`, with the generator's metadata.
fn serialize(seed: u64, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("shapes match data"),
            )
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        "generator".to_string(),
        format!("padic-burst demo seed {seed}"),
    );
    safetensors::serialize(views, Some(meta)).expect("the generated model serializes")
}

/// Writes [`synthetic_model`]`(seed, params, dtype)` to
/// `dir/{name}.safetensors` and compresses it with the defaults into
/// `dir/{name}.padic`, whose path it returns: the container the examples
/// and benches decode.
pub fn compressed_model(
    dir: &Path,
    name: &str,
    seed: u64,
    params: usize,
    dtype: Dtype,
) -> Result<std::path::PathBuf> {
    let input = dir.join(format!("{name}.safetensors"));
    let packed = dir.join(format!("{name}.padic"));
    let model = synthetic_model(seed, params, dtype);
    std::fs::write(&input, &model).map_err(|e| Error::io(&input, e))?;
    compress_file(
        &input,
        &packed,
        &CompressOptions::default(),
        &Progress::hidden(),
    )?;
    Ok(packed)
}

/// Runs the demo in `dir`; returns the lines it printed.
pub fn run(dir: &Path, params: usize, workers: Option<usize>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut say = |s: String| {
        println!("{s}");
        lines.push(s);
    };
    let engine = CpuEngine::new(workers)?;
    say(format!(
        "padic-burst demo: a generated transformer-shaped model of about {params} parameters per dtype, {} CPU workers",
        engine.workers()
    ));
    for (dtype, name) in [
        (Dtype::BF16, "bf16"),
        (Dtype::F16, "f16"),
        (Dtype::F32, "f32"),
    ] {
        let input = dir.join(format!("demo-{name}.safetensors"));
        let packed = dir.join(format!("demo-{name}.padic"));
        let restored = dir.join(format!("demo-{name}.restored.safetensors"));
        let original = synthetic_model(7, params, dtype);
        std::fs::write(&input, &original).map_err(|e| Error::io(&input, e))?;
        let t = Instant::now();
        let summary = compress_file(
            &input,
            &packed,
            &CompressOptions::default(),
            &Progress::hidden(),
        )?;
        let ct = t.elapsed();
        let container = Container::open(&packed)?;
        let stats = engine.decompress_file(&container, &restored, None, &Progress::hidden())?;
        let back = std::fs::read(&restored).map_err(|e| Error::io(&restored, e))?;
        let same = back == original;
        say(format!(
            "{name:>5}: {} tensors in {} chunks, {} -> {} bytes (ratio {:.4}); compress {:.0} ms, decompress {:.0} ms ({:.2} GB/s); restored file byte-identical: {}",
            summary.tensors,
            summary.chunks,
            summary.original_bytes,
            summary.compressed_bytes,
            summary.compressed_bytes as f64 / summary.original_bytes as f64,
            ct.as_secs_f64() * 1e3,
            stats.wall.as_secs_f64() * 1e3,
            stats.gb_per_s(),
            if same { "yes" } else { "NO" }
        ));
        if !same {
            return Err(Error::Decode(format!(
                "demo: {name} round trip differs from the original"
            )));
        }
        // Progressive precision: read fewer digits, from fewer planes.
        let (ti, t0) = container
            .header()
            .tensors
            .iter()
            .enumerate()
            .filter(|(i, _)| container.layout(*i).is_some())
            .max_by_key(|(_, t)| t.byte_len)
            .ok_or_else(|| Error::Decode("demo: the generated model has no float tensor".into()))?;
        let precision = container.layout(ti).map_or(0, |l| l.precision);
        let k = (precision / 2).max(1);
        let (model, pstats) = engine.decompress_to_memory(&container, Some(k))?;
        let (full, _) = engine.decompress_to_memory(&container, None)?;
        let kind = crate::codec::FloatKind::from_name(&t0.dtype).expect("tensor 0 is a float");
        let size = kind.size();
        let range = t0.data_offset as usize..(t0.data_offset + t0.byte_len) as usize;
        let mut max_rel = 0.0f64;
        for (a, b) in full.data[range.clone()]
            .chunks_exact(size)
            .zip(model.data[range].chunks_exact(size))
        {
            let word = |x: &[u8]| {
                if size == 4 {
                    u32::from_le_bytes([x[0], x[1], x[2], x[3]])
                } else {
                    u16::from_le_bytes([x[0], x[1]]) as u32
                }
            };
            let (va, vb) = (kind.to_f64(word(a)), kind.to_f64(word(b)));
            // Normal in the tensor's own format (an f16 subnormal is normal as f64).
            let exponent = (word(a) >> kind.frac_bits()) & ((1 << kind.exp_bits()) - 1);
            if exponent != 0 && exponent != (1 << kind.exp_bits()) - 1 {
                max_rel = max_rel.max(((va - vb) / va).abs());
            }
        }
        let coded = container
            .header()
            .tensors
            .iter()
            .map(|t| t.compressed_bytes())
            .sum::<u64>();
        say(format!(
            "{name:>5}: progressive decode to {k} of {precision} digits read {} of {coded} coded bytes ({:.0}%{}); largest relative error of a normal value in '{}': {max_rel:.2e}",
            pstats.bytes_in,
            100.0 * pstats.bytes_in as f64 / coded.max(1) as f64,
            if pstats.bytes_in >= coded {
                ": the digits it keeps share the last plane with those it drops"
            } else {
                ""
            },
            t0.name
        ));
    }
    for line in bursting(dir, &dir.join("demo-bf16.padic"), workers)? {
        say(line);
    }
    Ok(lines)
}

/// Replays [`DEMO_TRACE`] over the bf16 container at `packed`, spread over its
/// chunks, through the graph in AUTO: says which chunks went where and why,
/// checks the output, and draws the timeline beside it.
fn bursting(dir: &Path, packed: &Path, workers: Option<usize>) -> Result<Vec<String>> {
    use crate::config::{Config, ConfigLayer};
    use crate::pipeline::Pipeline;
    use crate::plan::ReplayStep;
    use crate::policy::Mode;
    use crate::pressure::Trace;

    let trace = Trace::parse(Path::new("rise-and-fall.csv (built in)"), DEMO_TRACE)?;
    let container = std::sync::Arc::new(Container::open(packed)?);
    let chunks = container.header().chunk_count();
    let step = ReplayStep::Auto.millis(&trace, chunks);
    let config = Config::load(
        None,
        ConfigLayer {
            num_cpu_workers: workers.map(|w| w as i64),
            ..ConfigLayer::default()
        },
    )?;
    let settings = config.policy();
    let (plan, summary) = crate::plan::plan(&container, &trace, Mode::Auto, settings, step);
    let svg = dir.join("demo-bursting.svg");
    let out = dir.join("demo-bursting.safetensors");
    let pipeline = Pipeline::with_mode(config, Mode::Auto)
        .with_trace(trace, step)
        .with_timeline(Some(svg.clone()));
    let stats = pipeline.decompress_to_file(&container, &out, None)?;
    let original = dir.join("demo-bf16.safetensors");
    let same = std::fs::read(&out).map_err(|e| Error::io(&out, e))?
        == std::fs::read(&original).map_err(|e| Error::io(&original, e))?;
    if !same {
        return Err(Error::Decode(
            "demo: the bursting run's output differs from the original".into(),
        ));
    }
    // Runs of consecutive chunks with one route.
    let mut runs: Vec<(usize, usize, &str)> = Vec::new();
    for l in &plan {
        match runs.last_mut() {
            Some(r) if r.2 == l.route => r.1 = l.chunk,
            _ => runs.push((l.chunk, l.chunk, l.route)),
        }
    }
    let low = settings.memory_pressure_threshold - settings.hysteresis_factor;
    let mut lines = vec![format!(
        " burst: the built-in pressure trace (30% -> 97% -> 86% -> 40% of GPU memory) replayed over the {chunks} bf16 chunks, {step} ms a chunk, in AUTO: {} switches, {} memory-pressure events",
        summary.mode_switches, summary.memory_pressure_events
    )];
    for (i, (a, b, route)) in runs.iter().enumerate() {
        let at = &plan[*a];
        let why = match (i, *route) {
            (0, _) => "at the start".to_string(),
            (_, "cpu") => format!(
                "GPU memory at {:.0}%, above the {:.0}% threshold",
                at.utilization * 100.0,
                settings.memory_pressure_threshold * 100.0
            ),
            _ => format!(
                "back once use fell to {:.0}%, below {:.0}% (threshold minus the hysteresis band), and the {} ms switch delay had passed",
                at.utilization * 100.0,
                low * 100.0,
                settings.switch_delay_ms
            ),
        };
        lines.push(format!(
            " burst: chunks {a}-{b} (from {} ms) routed to the {}: {why}",
            *a as u64 * step,
            route.to_uppercase()
        ));
    }
    match pipeline.gpu_absent() {
        Some(why) => lines.push(format!(
            " burst: no GPU here ({why}): the {} GPU-routed chunks were decoded on the CPU; output identical to the original: yes",
            plan.iter().filter(|l| l.route == "gpu").count()
        )),
        None => lines.push(format!(
            " burst: {} chunks decoded on the GPU, {} on the CPU; output identical to the original: yes",
            stats.chunks.gpu_decompressions, stats.chunks.cpu_decompressions
        )),
    }
    lines.push(format!(" burst: timeline: {}", svg.display()));
    Ok(lines)
}
