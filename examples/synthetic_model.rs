//! Writes the generated transformer-shaped model that `padic-burst demo` and
//! `padic-burst bench --synthetic` use, for side-by-side runs against peers:
//!
//!     cargo run --release --example synthetic_model -- OUT.safetensors MB [bf16|f16|f32]
//!
//! MB is the file's size in megabytes, as `bench --synthetic MB` reads it.

use padic_burst::demo::synthetic_model;
use safetensors::Dtype;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synthetic_model OUT.safetensors MB [bf16|f16|f32]";
    let (Some(out), Some(mb)) = (
        args.first(),
        args.get(1).and_then(|m| m.parse::<f64>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (dtype, size) = match args.get(2).map_or("bf16", String::as_str) {
        "bf16" => (Dtype::BF16, 2.0),
        "f16" => (Dtype::F16, 2.0),
        "f32" => (Dtype::F32, 4.0),
        other => {
            eprintln!("dtype {other}: {usage}");
            std::process::exit(2);
        }
    };
    if !(mb > 0.0 && mb <= 65536.0) {
        eprintln!("MB {mb} outside (0, 65536]: {usage}");
        std::process::exit(2);
    }
    // The parameter count `bench --synthetic` picks for the same size.
    let params = (mb * 1e6 / size / 1.1) as usize;
    if let Err(e) = std::fs::write(out, synthetic_model(11, params.max(1), dtype)) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
