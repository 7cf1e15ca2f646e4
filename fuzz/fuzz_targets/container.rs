//! A whole container file: the header parser, the validator and the decode
//! of every chunk. Anything may be an error; nothing may panic.
//!
//! `cargo +nightly fuzz run container` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("padic-fuzz-{}.padic", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(c) = Container::open(&path) {
        if let Ok(engine) = CpuEngine::new(Some(1)) {
            let _ = engine.decompress_to_memory(&c, None);
        }
    }
});
