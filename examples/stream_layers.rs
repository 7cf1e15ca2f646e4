//! Streams a model layer by layer through the library API, the way a loader
//! that does not fit the model on its device would: compress a generated
//! model, then decode one tensor at a time (the second pass hits the cache).
//!
//! ```text
//! cargo run --release --example stream_layers
//! ```

use std::sync::Arc;

use padic_burst::config::Config;
use padic_burst::format::Container;
use padic_burst::pipeline::Pipeline;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("padic-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let packed =
        padic_burst::demo::compressed_model(&dir, "model", 3, 2_000_000, safetensors::Dtype::BF16)?;
    let container = Arc::new(Container::open(&packed)?);
    let pipeline = Pipeline::new(Config::default());
    let names: Vec<String> = container
        .header()
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect();
    for pass in 1..=2 {
        let t = std::time::Instant::now();
        let mut bytes = 0;
        for name in &names {
            let tensor = pipeline.decompress_tensor(&container, name, None)?;
            bytes += tensor.data.len();
            // A real loader would hand `tensor.data` to its framework here.
        }
        let s = pipeline.statistics().expect("a run happened");
        println!(
            "pass {pass}: {} tensors, {bytes} bytes in {:.1} ms; cache hits {} misses {}",
            names.len(),
            t.elapsed().as_secs_f64() * 1e3,
            s.cache_hits,
            s.cache_misses
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
