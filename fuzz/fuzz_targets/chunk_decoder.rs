//! The chunk decoder of each dtype and prime on arbitrary sections. The
//! first byte picks the layout, the next two the value count; the rest is cut
//! into sections at the lengths its leading bytes give.
//!
//! `cargo +nightly fuzz run chunk_decoder` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use padic_burst::codec::{FloatKind, Layout, Tables};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let kinds = [
        (FloatKind::BF16, 2),
        (FloatKind::F16, 2),
        (FloatKind::F32, 2),
        (FloatKind::BF16, 3),
        (FloatKind::F16, 257),
        (FloatKind::F32, 5),
    ];
    let (kind, prime) = kinds[data[0] as usize % kinds.len()];
    let n = 1 + u16::from_le_bytes([data[1], data[2]]) as usize % 8192;
    let Ok(layout) = Layout::new(kind, prime, None, false) else {
        return;
    };
    let tables = Tables::new(&layout, layout.precision);
    let count = 1 + data[3] as usize % 12;
    let mut rest = &data[4..];
    let mut sections = Vec::new();
    for _ in 0..count {
        let len = rest.first().map_or(0, |&b| b as usize * 8);
        rest = rest.get(1..).unwrap_or(&[]);
        let (s, r) = rest.split_at(len.min(rest.len()));
        sections.push(s);
        rest = r;
    }
    let mut out = vec![0u8; n * kind.size()];
    let _ = tables.decode_bytes(&sections, &mut out, &mut Vec::new());
});
