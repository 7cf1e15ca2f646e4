//! The reliability campaign: real compressed files mutated 10,000 ways,
//! hostile sizes under a memory measure, out-of-memory injected into the GPU
//! path, a cluster losing a process, a full disk, and a soak of 100 runs of a
//! 10,000-chunk stream. Each prints its figures (`-- --nocapture`); the
//! long fuzz runs are `cargo test --release -- --ignored fuzz`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use padic_burst::compress::CompressOptions;
use padic_burst::config::Config;
use padic_burst::demo::Rng;
use padic_burst::engine::CpuEngine;
use padic_burst::format::Container;
use padic_burst::pipeline::{decompress_file, decompress_to_memory, RunOptions};
use padic_burst::policy::Mode;
use padic_burst::pressure::{Sample, Trace};
use padic_burst::Error;
use safetensors::Dtype;

/// The leading tensors of a real weights file, about `bytes` of them, as a
/// safetensors file of their own; `None` when the weights are not installed.
fn real_slice(dtype: &str, bytes: usize) -> Option<Vec<u8>> {
    let path = real_weights(dtype)?;
    let file = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let mut names: Vec<(usize, String)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (t.data().as_ptr() as usize, n))
        .collect();
    names.sort();
    let mut picked = Vec::new();
    let mut total = 0;
    for (_, n) in names {
        let t = st.tensor(&n).unwrap();
        if total >= bytes {
            break;
        }
        total += t.data().len();
        picked.push((n, t.dtype(), t.shape().to_vec(), t.data().to_vec()));
    }
    let refs: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = picked
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    Some(safetensors_bytes(&refs))
}

/// Where a container's regions lie: payloads, header JSON, footer.
struct Regions {
    header_start: usize,
    footer_start: usize,
}

/// The regions of a well-formed container (or of a damaged one whose
/// footer still fits it); `None` where the footer's length cannot be.
fn try_regions(packed: &[u8]) -> Option<Regions> {
    let n = packed.len();
    let footer_start = n.checked_sub(24)?;
    let hlen = u64::from_le_bytes(packed[footer_start..n - 16].try_into().unwrap());
    Some(Regions {
        header_start: footer_start.checked_sub(usize::try_from(hlen).ok()?)?,
        footer_start,
    })
}

fn regions(packed: &[u8]) -> Regions {
    try_regions(packed).expect("a well-formed container")
}

/// Every section of every chunk: (offset, len).
fn sections(packed: &[u8]) -> Vec<(usize, usize)> {
    let (_, h) = header_json(packed);
    let mut out = Vec::new();
    for t in h["tensors"].as_array().unwrap() {
        for c in t["chunks"].as_array().unwrap() {
            let mut at = c["offset"].as_u64().unwrap() as usize;
            for s in c["sections"].as_array().unwrap() {
                let len = s["len"].as_u64().unwrap() as usize;
                out.push((at, len));
                at += len;
            }
        }
    }
    out
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// A numeric field of the header to edit: a path of keys and indexes.
fn random_field(rng: &mut Rng, h: &serde_json::Value) -> Vec<serde_json::Value> {
    let tensors = h["tensors"].as_array().unwrap();
    // A tensor with chunks of its own (small tensors may share another's).
    let owners: Vec<usize> = (0..tensors.len())
        .filter(|&i| !tensors[i]["chunks"].as_array().unwrap().is_empty())
        .collect();
    let t = owners[pick(rng, owners.len())];
    let sharing: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i]["chunks_of"].is_u64())
        .collect();
    let chunks = tensors[t]["chunks"].as_array().unwrap();
    let c = pick(rng, chunks.len());
    let secs = chunks[c]["sections"].as_array().unwrap().len();
    let s = pick(rng, secs);
    use serde_json::json;
    match pick(rng, 8) {
        0 => vec![
            json!("tensors"),
            json!(t),
            json!("chunks"),
            json!(c),
            json!("offset"),
        ],
        1 => vec![
            json!("tensors"),
            json!(t),
            json!("chunks"),
            json!(c),
            json!("elements"),
        ],
        2 => vec![
            json!("tensors"),
            json!(t),
            json!("chunks"),
            json!(c),
            json!("sections"),
            json!(s),
            json!("len"),
        ],
        3 => vec![json!("tensors"), json!(t), json!("data_offset")],
        4 => vec![json!("tensors"), json!(t), json!("byte_len")],
        5 => vec![json!("tensors"), json!(t), json!("shape"), json!(0)],
        6 if !sharing.is_empty() => vec![
            json!("tensors"),
            json!(sharing[pick(rng, sharing.len())]),
            json!("chunks_of"),
        ],
        _ => vec![json!("data_len")],
    }
}

fn field_mut<'a>(
    h: &'a mut serde_json::Value,
    path: &[serde_json::Value],
) -> &'a mut serde_json::Value {
    path.iter().fold(h, |v, k| match k {
        serde_json::Value::String(s) => &mut v[s.as_str()],
        k => &mut v[k.as_u64().unwrap() as usize],
    })
}

/// One mutation of `packed`; returns its kind.
fn mutate(rng: &mut Rng, packed: &[u8]) -> (&'static str, Vec<u8>) {
    let n = packed.len();
    let mut b = packed.to_vec();
    match pick(rng, 100) {
        0..=24 => {
            let at = pick(rng, n);
            b[at] ^= 1 << pick(rng, 8);
            ("bit flip", b)
        }
        25..=39 => {
            let at = pick(rng, n);
            let len = 1 + pick(rng, 64);
            let fill = pick(rng, 3);
            for x in b.iter_mut().skip(at).take(len) {
                *x = match fill {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next_u64() as u8,
                };
            }
            ("byte run", b)
        }
        40..=49 => {
            let r = regions(packed);
            // Truncation inside each region in turn, at a random point.
            let (lo, hi) = match pick(rng, 4) {
                0 => (0, 32),
                1 => (32, r.header_start),
                2 => (r.header_start, r.footer_start),
                _ => (r.footer_start, n),
            };
            b.truncate(lo + pick(rng, hi - lo));
            ("truncation", b)
        }
        50..=59 => {
            // Swap the payloads of two sections of the same length.
            let secs = sections(packed);
            let (a, len) = secs[pick(rng, secs.len())];
            let same: Vec<_> = secs.iter().filter(|s| s.1 == len && s.0 != a).collect();
            if let Some(&&(o, _)) = same.get(pick(rng, same.len().max(1))) {
                b[a..a + len].copy_from_slice(&packed[o..o + len]);
                b[o..o + len].copy_from_slice(&packed[a..a + len]);
            } else {
                // No twin: swap two different chunks' leading bytes.
                let (o, l2) = secs[pick(rng, secs.len())];
                let k = len.min(l2).min(16);
                b[a..a + k].copy_from_slice(&packed[o..o + k]);
            }
            ("swapped chunks", b)
        }
        60..=79 => {
            // An edited length, offset or count, with the header checksum redone.
            let (_, h) = header_json(packed);
            let path = random_field(rng, &h);
            let delta = match pick(rng, 5) {
                0 => 1i128,
                1 => -1,
                2 => 1 << pick(rng, 62),
                3 => -(1 << pick(rng, 20)),
                _ => u64::MAX as i128,
            };
            let edited = with_header(packed, |h| {
                let f = field_mut(h, &path);
                if let Some(v) = f.as_u64() {
                    *f = ((v as i128 + delta).clamp(0, u64::MAX as i128) as u64).into();
                }
            });
            ("edited length/offset", edited)
        }
        80..=89 => {
            // The footer's header length.
            let v = rng.next_u64() >> pick(rng, 64);
            b[n - 24..n - 16].copy_from_slice(&v.to_le_bytes());
            ("footer length", b)
        }
        90..=94 => {
            let at = pick(rng, n);
            let len = 1 + pick(rng, 32);
            let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, junk);
            ("inserted bytes", b)
        }
        _ => {
            let at = pick(rng, n);
            let len = (1 + pick(rng, 32)).min(n - at);
            b.drain(at..at + len);
            ("deleted bytes", b)
        }
    }
}

/// Whether `bad` says exactly what `packed` says: the same bytes, or a
/// header rewritten to the same JSON value (an edit clamped to the old value).
fn no_op(packed: &[u8], bad: &[u8]) -> bool {
    if packed == bad {
        return true;
    }
    if bad.len() < 24 || &bad[bad.len() - 8..] != b"PADICEND" {
        return false;
    }
    let (a, Some(b)) = (regions(packed), try_regions(bad)) else {
        return false;
    };
    let json = |x: &[u8], r: &Regions| {
        padic_burst::format::open_header(
            padic_burst::format::VERSION,
            &x[r.header_start..r.footer_start],
        )
        .ok()
        .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok())
    };
    a.header_start == b.header_start
        && packed[..a.header_start] == bad[..b.header_start]
        && json(packed, &a) == json(bad, &b)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Error(String),
    Identical,
    Wrong,
    Panic(String),
    Hang,
}

/// Opens and decodes `path` on its own thread, through the bare engine or
/// the dataflow graph; a panic or a run over 10 s is reported, not suffered.
fn judge(path: &Path, original: &[u8], graph: bool) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    let want = original.to_vec();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| -> Result<Vec<u8>, Error> {
            let c = Container::open(&path)?;
            if graph {
                let mut o = RunOptions::new(Mode::CpuOnly, Config::default());
                o.timely_args = vec!["-w".into(), "2".into()];
                Ok(decompress_to_memory(Arc::new(c), &o)?.0.to_safetensors())
            } else {
                Ok(CpuEngine::new(Some(1))?
                    .decompress_to_memory(&c, None)?
                    .0
                    .to_safetensors())
            }
        });
        let out = match r {
            Ok(Ok(bytes)) if bytes == want => Outcome::Identical,
            Ok(Ok(_)) => Outcome::Wrong,
            Ok(Err(e)) => Outcome::Error(format!("{} (exit {})", e, e.exit_code())),
            Err(p) => Outcome::Panic(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        };
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or(Outcome::Hang)
}

#[test]
fn corruption_campaign_on_real_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut cli_cases = 0;
    for (d, dtype) in ["bf16", "f16", "f32"].iter().enumerate() {
        let Some(original) = real_slice(dtype, 400_000) else {
            return;
        };
        let packed = compress_bytes(
            dir.path(),
            dtype,
            &original,
            &CompressOptions {
                chunk_kib: 16,
                ..CompressOptions::default()
            },
        );
        let packed = std::fs::read(packed).unwrap();
        let r = regions(&packed);
        let cases = if d == 2 { 3334 } else { 3333 };
        let mut rng = Rng::new(0xc0ffee + d as u64);
        let victim = dir.path().join(format!("victim-{dtype}.padic"));
        let (mut errors, mut skipped) = (0, 0);
        for case in 0..cases {
            // Only mutations that change what the file says count.
            let (kind, bad) = loop {
                let m = mutate(&mut rng, &packed);
                if !no_op(&packed, &m.1) {
                    break m;
                }
                skipped += 1;
            };
            std::fs::write(&victim, &bad).unwrap();
            let outcome = judge(&victim, &original, case % 10 == 0);
            match &outcome {
                Outcome::Error(msg) => {
                    errors += 1;
                    let flipped_at = (kind == "bit flip")
                        .then(|| (0..packed.len()).find(|&i| bad[i] != packed[i]))
                        .flatten();
                    let clear = msg.contains(victim.to_str().unwrap()) && msg.ends_with("(exit 2)");
                    // A flipped bit in a payload or in the header is caught by a checksum.
                    let by_checksum = match flipped_at {
                        Some(at) if at >= 16 && at < r.footer_start => msg.contains("checksum"),
                        _ => true,
                    };
                    if !clear || !by_checksum {
                        failures.push(format!(
                            "{dtype} case {case} ({kind}): unclear error: {msg}"
                        ));
                    }
                }
                other => failures.push(format!("{dtype} case {case} ({kind}): {other:?}")),
            }
            // Every 100th case through the command line too: exit status,
            // one line, nothing under the final name.
            if case % 100 == 0 {
                cli_cases += 1;
                let out = dir.path().join("out.safetensors");
                let o = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
                    .arg("decompress")
                    .arg(&victim)
                    .arg("-o")
                    .arg(&out)
                    .output()
                    .unwrap();
                let ok = match outcome {
                    Outcome::Error(_) => {
                        o.status.code() == Some(2)
                            && !out.exists()
                            && String::from_utf8_lossy(&o.stderr).trim().lines().count() == 1
                    }
                    _ => false,
                };
                if !ok {
                    failures.push(format!(
                        "{dtype} case {case} ({kind}) on the command line: {:?} {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
                let _ = std::fs::remove_file(&out);
                assert_no_temp_files(dir.path());
            }
        }
        table.push(format!(
            "{dtype}: {cases} mutations of a {} byte container, {errors} clear errors (exit 2), 0 accepted, 0 panics, 0 hangs ({skipped} drawn mutations that changed nothing, such as a swap of two identical sections, were drawn again)",
            packed.len()
        ));
    }
    for line in &table {
        println!("{line}");
    }
    println!("{cli_cases} of them also through `padic-burst decompress`");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A run of the command line: exit status, its own peak resident memory
/// in KiB (reported by the binary: a child's rusage would count the memory
/// of this test process, which spawned it), and the rest of its stderr.
fn peak_rss_kib(args: &[&std::ffi::OsStr]) -> (Option<i32>, i64, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
        .env("PADIC_REPORT_PEAK_MEMORY", "1")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let peak = err
        .lines()
        .find_map(|l| l.strip_prefix("peak resident memory: "))
        .and_then(|v| v.trim_end_matches(" KiB").parse().ok())
        .expect("the binary reports its peak memory");
    let rest = err
        .lines()
        .filter(|l| !l.starts_with("peak resident memory: "))
        .collect::<Vec<_>>()
        .join("\n");
    (o.status.code(), peak, rest)
}

#[test]
fn hostile_sizes_keep_peak_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 200_000, 0.05, Dtype::BF16);
    let file = safetensors_bytes(&[("w", Dtype::BF16, vec![200_000], w)]);
    let packed = compress_bytes(
        dir.path(),
        "ok",
        &file,
        &CompressOptions {
            chunk_kib: 64,
            ..CompressOptions::default()
        },
    );
    let bytes = std::fs::read(&packed).unwrap();
    let out = dir.path().join("out.safetensors");
    let (code, baseline, _) = peak_rss_kib(&[
        "decompress".as_ref(),
        packed.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, Some(0));
    std::fs::remove_file(&out).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a 2^40-value chunk",
            Box::new(|h| h["tensors"][0]["chunks"][0]["elements"] = (1u64 << 40).into()),
        ),
        (
            "a 2^50-byte section",
            Box::new(|h| h["tensors"][0]["chunks"][0]["sections"][0]["len"] = (1u64 << 50).into()),
        ),
        (
            "a 2^60-byte data region",
            Box::new(|h| h["data_len"] = (1u64 << 60).into()),
        ),
        (
            "a 2^62 x 2^62 shape",
            Box::new(|h| h["tensors"][0]["shape"] = serde_json::json!([1u64 << 62, 1u64 << 62])),
        ),
        (
            "an offset at 2^63",
            Box::new(|h| h["tensors"][0]["chunks"][1]["offset"] = (1u64 << 63).into()),
        ),
        (
            "a tensor of 2^60 bytes",
            Box::new(|h| h["tensors"][0]["byte_len"] = (1u64 << 60).into()),
        ),
        (
            "a million empty chunks",
            Box::new(|h| {
                let c = h["tensors"][0]["chunks"][0].clone();
                let chunks = h["tensors"][0]["chunks"].as_array_mut().unwrap();
                chunks.extend(std::iter::repeat_n(c, 1_000_000));
            }),
        ),
    ];
    let mut rows = Vec::new();
    let mut variants: Vec<(String, Vec<u8>)> = cases
        .into_iter()
        .map(|(what, edit)| (what.to_string(), with_header(&bytes, edit)))
        .collect();
    // The footer claiming a 2^60-byte header.
    let mut huge_header = bytes.clone();
    let n = huge_header.len();
    huge_header[n - 24..n - 16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    variants.push(("a 2^60-byte header".into(), huge_header));
    for (what, bad) in variants {
        let victim = dir.path().join("hostile.padic");
        std::fs::write(&victim, &bad).unwrap();
        for cmd in ["decompress", "inspect"] {
            let mut args: Vec<&std::ffi::OsStr> = vec![cmd.as_ref(), victim.as_os_str()];
            if cmd == "decompress" {
                args.extend([std::ffi::OsStr::new("-o"), out.as_os_str()]);
            }
            let (code, peak, err) = peak_rss_kib(&args);
            assert_eq!(code, Some(2), "{what} ({cmd}): {err}");
            assert!(err.contains("hostile.padic"), "{what}: {err}");
            assert!(!out.exists(), "{what}: output left");
            // The header itself may be large (a million chunk entries are
            // 100 MB of JSON): the bound is what the file holds, never what it claims.
            let allowed = baseline + 3 * (bad.len() as i64 / 1024) + 16 * 1024;
            assert!(
                peak <= allowed,
                "{what} ({cmd}): peak {peak} KiB, allowed {allowed} KiB"
            );
            rows.push(format!("{what} ({cmd}): exit 2, peak {peak} KiB (a valid decode: {baseline} KiB; file {} KiB)", bad.len() / 1024));
        }
    }
    for r in rows {
        println!("{r}");
    }
    assert_no_temp_files(dir.path());
}

/// Runs the command line with `args` on `victim`, written anew from
/// `bytes`, and `delay_ms` after it starts has `meddle` change the file
/// under it, as another process would; the run's output.
fn meddled_run(
    args: &[&std::ffi::OsStr],
    victim: &Path,
    bytes: &[u8],
    delay_ms: u64,
    meddle: impl FnOnce(&std::fs::File),
) -> std::process::Output {
    std::fs::write(victim, bytes).unwrap();
    let child = bin()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms));
    meddle(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(victim)
            .unwrap(),
    );
    child.wait_with_output().unwrap()
}

/// A file cut short or rewritten while `compress` reads it: the input is
/// mapped, and its chunks were read from the mapping several times (a pass
/// a section, then the counts), so a cut ended the process with SIGBUS
/// (temporary files left) and a rewrite could give a container that does not
/// decode, with exit 0. Each chunk is now read once, into the worker's own
/// buffer. Whatever the timing, `compress` either fails with a clear error
/// and leaves nothing, or writes a container that decodes.
#[test]
fn an_input_cut_or_rewritten_during_compress_never_gives_a_broken_container() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(9);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 12_000_000, 0.05, Dtype::BF16);
    let file = safetensors_bytes(&[("w", Dtype::BF16, vec![12_000_000], w)]);
    let input = dir.path().join("in.safetensors");
    let packed = dir.path().join("out.padic");
    let mut outcomes = Vec::new();
    for (trial, delay_ms) in [0u64, 2, 5, 10, 20].into_iter().enumerate() {
        for cut in [true, false] {
            let args = [
                "--quiet".as_ref(),
                "compress".as_ref(),
                input.as_os_str(),
                "-o".as_ref(),
                packed.as_os_str(),
            ];
            let out = meddled_run(&args, &input, &file, delay_ms, |f| {
                if cut {
                    f.set_len(file.len() as u64 / 3).unwrap();
                } else {
                    // Rewrite the second half with other values, over and over.
                    let noise: Vec<u8> = (0..file.len() / 2)
                        .map(|i| (i * 131 + trial) as u8)
                        .collect();
                    for _ in 0..5 {
                        f.write_all_at(&noise, file.len() as u64 / 2).unwrap();
                    }
                }
            });
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            // 2: cut before its header was read, a file that is not whole.
            assert!(
                matches!(code, Some(0) | Some(1) | Some(2)),
                "{delay_ms} ms, cut {cut}: {:?}: {err}",
                out.status
            );
            if code == Some(0) {
                let check = bin()
                    .args(["--quiet", "decompress"])
                    .arg(&packed)
                    .args(["-o", "/dev/null"])
                    .output()
                    .unwrap();
                assert_success(&check);
            } else {
                assert!(err.contains("in.safetensors"), "{err}");
                if code == Some(1) {
                    assert!(err.contains("the input changed while it was read"), "{err}");
                }
                assert!(!packed.exists());
            }
            assert_no_temp_files(dir.path());
            let _ = std::fs::remove_file(&packed);
            outcomes.push((delay_ms, cut, code));
        }
    }
    println!("{outcomes:?}");
}

/// A container cut short by another process while `decompress` reads it:
/// the container is mapped, and a read past its new end is a SIGBUS. It
/// ended the process (exit 135) with the hidden temporary output left; the
/// clean-up thread now removes it and exits 1 with a message.
#[test]
fn a_container_cut_during_decompress_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(10);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 24_000_000, 0.05, Dtype::BF16);
    let file = safetensors_bytes(&[("w", Dtype::BF16, vec![24_000_000], w)]);
    let packed = compress_bytes(dir.path(), "big", &file, &CompressOptions::default());
    let whole = std::fs::read(&packed).unwrap();
    let victim = dir.path().join("cut.padic");
    let out = dir.path().join("out.safetensors");
    let mut outcomes = Vec::new();
    for delay_ms in [0u64, 5, 10, 20, 40] {
        let args = [
            "--quiet".as_ref(),
            "decompress".as_ref(),
            "--workers".as_ref(),
            "1".as_ref(),
            victim.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ];
        let o = meddled_run(&args, &victim, &whole, delay_ms, |f| {
            f.set_len(whole.len() as u64 / 4).unwrap()
        });
        let err = String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            // Done before the cut.
            Some(0) => assert_eq!(std::fs::read(&out).unwrap(), file),
            // Cut before its header was read: a damaged container.
            Some(2) => assert!(err.contains("cut.padic"), "{err}"),
            Some(1) => assert!(err.contains("cut short by another process"), "{err}"),
            other => panic!("{delay_ms} ms: {other:?}: {err}"),
        }
        if o.status.code() != Some(0) {
            assert!(
                !out.exists(),
                "{delay_ms} ms: an output under the final name"
            );
        }
        assert_no_temp_files(dir.path());
        let _ = std::fs::remove_file(&out);
        outcomes.push((delay_ms, o.status.code()));
    }
    println!("{outcomes:?}");
}

/// A model of several tensors for the fault and soak runs.
fn fault_model(dir: &Path, chunk_kib: u32, values: usize) -> (PathBuf, Vec<u8>) {
    gaussian_model(
        dir,
        "faults",
        77,
        &[
            ("a", Dtype::BF16, vec![values], 0.04),
            ("b", Dtype::F32, vec![values / 4], 0.02),
            ("ids", Dtype::I64, vec![300], 0.0),
        ],
        chunk_kib,
    )
}

fn chunk_ids(c: &Container) -> Vec<(usize, usize)> {
    c.header()
        .tensors
        .iter()
        .enumerate()
        .flat_map(|(t, x)| (0..x.chunks.len()).map(move |k| (t, k)))
        .collect()
}

#[test]
fn injected_out_of_memory_loses_nothing_in_auto_and_stops_gpu_only() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = fault_model(dir.path(), 512, 1_200_000);
    let c = Arc::new(Container::open(&packed).unwrap());
    let all = chunk_ids(&c);
    let passthrough: Vec<bool> = (0..c.header().tensors.len())
        .map(|t| c.layout(t).is_none())
        .collect();
    let cpu_only = {
        let mut o = RunOptions::new(Mode::CpuOnly, Config::default());
        o.timely_args = vec!["-w".into(), "2".into()];
        decompress_to_memory(c.clone(), &o)
            .unwrap()
            .0
            .to_safetensors()
    };
    assert_eq!(cpu_only, original);
    let mut rng = Rng::new(9);
    let mut injected_total = 0;
    let mut hybrid_reroutes = 0;
    for round in 0..20 {
        // A random third of the chunks fail on the GPU.
        let oom: Vec<(usize, usize)> = all
            .iter()
            .copied()
            .filter(|&(t, _)| !passthrough[t])
            .filter(|_| rng.next_u64() % 3 == 0)
            .collect();
        let mode = if round % 2 == 0 {
            Mode::Auto
        } else {
            Mode::Hybrid
        };
        let gpu = Arc::new(FakeGpu::new(&oom));
        let mut o = RunOptions::new(mode, Config::default());
        o.gpu = Some(gpu.clone());
        o.timely_args = vec!["-w".into(), (1 + round % 3).to_string()];
        let (model, stats) = decompress_to_memory(c.clone(), &o).unwrap();
        assert!(
            model.to_safetensors() == cpu_only,
            "round {round}: output differs from CPU_ONLY"
        );
        assert_eq!(
            stats.chunks.total_decompressions as usize,
            all.len(),
            "round {round}: a chunk lost or doubled"
        );
        // Every GPU attempt on a failing chunk is one event, rerouted.
        let attempted = gpu.calls.load(std::sync::atomic::Ordering::SeqCst);
        let succeeded = gpu.seen.lock().unwrap().len();
        assert_eq!(
            stats.gpu_oom_reroutes as usize,
            attempted - succeeded,
            "round {round}"
        );
        if mode == Mode::Auto {
            // (HYBRID may have cut the GPU's share after a run of failures.)
            assert!(
                stats.gpu_oom_reroutes > 0,
                "round {round}: the faults were exercised"
            );
        } else {
            hybrid_reroutes += stats.gpu_oom_reroutes;
        }
        assert!(
            stats.memory_pressure_events >= stats.gpu_oom_reroutes,
            "round {round}"
        );
        injected_total += stats.gpu_oom_reroutes;
    }
    assert!(hybrid_reroutes > 0, "HYBRID runs met the faults too");
    assert!(hybrid_reroutes > 0, "HYBRID runs met the faults too");
    println!("20 runs (auto and hybrid, 1-3 workers): {injected_total} injected GPU out-of-memory errors, each rerouted to the CPU and counted; outputs identical to CPU_ONLY");
    // GPU_ONLY: the same fault is a hard, clear error, and no file appears.
    let (t, k) = *all.iter().find(|&&(t, _)| !passthrough[t]).unwrap();
    let gpu = Arc::new(FakeGpu::new(&[(t, k)]));
    let mut o = RunOptions::new(Mode::GpuOnly, Config::default());
    o.gpu = Some(gpu);
    o.timely_args = vec!["-w".into(), "2".into()];
    let out = dir.path().join("gpu-only.safetensors");
    let err = decompress_file(c.clone(), &out, &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("chunk {k}")) && err.contains("out of memory"),
        "{err}"
    );
    assert!(!out.exists());
    assert_no_temp_files(dir.path());
}

/// Whether a TCP connection to or from local `port` is established.
fn established(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let hex = format!(":{port:04X} ");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[3] == "01"
            && (f[1].ends_with(hex.trim_end()) || f[2].ends_with(hex.trim_end()))
    })
}

#[test]
fn a_cluster_that_loses_a_process_stops_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Big enough that the run is still going when process 1 is frozen.
    let (packed, _) = fault_model(dir.path(), 64, 6_000_000);
    let (hosts, ports) = common::loopback_hosts(dir.path());
    let out = dir.path().join("cluster.safetensors");
    let spawn = |p: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
            .arg("decompress")
            .arg(&packed)
            .arg("-o")
            .arg(&out)
            .args(["--", "-n", "2", "-p", &p.to_string(), "-w", "1", "-h"])
            .arg(&hosts)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let p0 = spawn(0);
    let mut p1 = spawn(1);
    let t = Instant::now();
    while !established(ports[0]) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the processes never connected"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Freeze process 1 mid-run, then kill it.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p1.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(200));
    p1.kill().unwrap();
    let killed = Instant::now();
    let _ = p1.wait();
    let o = p0.wait_with_output().unwrap();
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    println!(
        "process 0 stopped {:.2} s after process 1 was killed: {}",
        took.as_secs_f64(),
        err.lines().last().unwrap_or("")
    );
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        err.contains("cluster process 0: lost the connection"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "a panic message leaked: {err}");
    assert!(!out.exists());
    assert_no_temp_files(dir.path());
}

#[test]
fn a_cluster_whose_peer_never_starts_gives_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = fault_model(dir.path(), 64, 100_000);
    let (hosts, _) = common::loopback_hosts(dir.path());
    let out = dir.path().join("alone.safetensors");
    let t = Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
        .env("PADIC_CLUSTER_CONNECT_TIMEOUT_S", "1.5")
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&out)
        .args(["--", "-n", "2", "-p", "0", "-w", "1", "-h"])
        .arg(&hosts)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(err.contains("did not connect within 1.5 s"), "{err}");
    assert!(!out.exists());
    assert_no_temp_files(dir.path());
}

#[test]
fn a_full_disk_gives_a_clear_error_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = fault_model(dir.path(), 64, 1_500_000);
    let source = dir.path().join("source.safetensors");
    std::fs::write(&source, &original).unwrap();
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::write(model_dir.join("model.safetensors"), &original).unwrap();
    std::fs::write(model_dir.join("config.json"), b"{}").unwrap();
    let small = dir.path().join("small-fs");
    std::fs::create_dir(&small).unwrap();
    // A 1 MiB tmpfs where mounting is allowed (root in a container here);
    // elsewhere the same limit from RLIMIT_FSIZE on the child.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    // A decode, a compression and a model directory's compression that
    // outgrow the disk, and the file each message should name.
    let runs = [
        (
            "decompress",
            &packed,
            small.join("model.safetensors"),
            "model.safetensors",
        ),
        (
            "compress",
            &source,
            small.join("model.padic"),
            "model.padic",
        ),
        (
            "compress",
            &model_dir,
            small.join("packed"),
            "packed/model.padic",
        ),
    ];
    let mut results = Vec::new();
    for (command, input, out, named) in &runs {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"));
        cmd.arg(command)
            .arg(input)
            .arg("-o")
            .arg(out)
            .arg("--quiet");
        if !mounted {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: 1 << 20,
                        rlim_max: 1 << 20,
                    };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                    Ok(())
                });
            }
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        let left: Vec<_> = std::fs::read_dir(&small)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        results.push((command, named, o.status.code(), err, left));
    }
    if mounted {
        let _ = std::process::Command::new("umount").arg(&small).status();
    }
    for (command, named, code, err, left) in results {
        println!(
            "{command} on {}: exit {code:?}: {}",
            if mounted {
                "a 1 MiB tmpfs"
            } else {
                "RLIMIT_FSIZE 1 MiB"
            },
            err.trim()
        );
        assert_eq!(code, Some(1), "{command}: {err}");
        assert!(
            err.contains("No space left on device") || err.contains("File too large"),
            "{command}: {err}"
        );
        assert!(
            err.contains(&format!("{}: ", small.join(named).display())),
            "{command}: the message names the output: {err}"
        );
        assert!(
            !err.contains(".tmp-"),
            "{command}: the message names the output, not its hidden temporary name: {err}"
        );
        assert!(left.is_empty(), "{command}: left behind: {left:?}");
    }
}

/// A random walk of GPU memory over `ms` milliseconds.
fn random_trace(rng: &mut Rng, ms: u64) -> Trace {
    let mut used = 0.2 + 0.6 * rng.unit();
    let samples = (0..=ms / 20)
        .map(|i| {
            used = (used + (rng.unit() - 0.5) * 0.2).clamp(0.0, 1.0);
            Sample {
                t_ms: i * 20,
                used_mb: used * 80_000.0,
                total_mb: 80_000.0,
            }
        })
        .collect();
    Trace::new(samples).unwrap()
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn soak_100_runs_of_a_10000_chunk_stream() {
    let dir = tempfile::tempdir().unwrap();
    // 1 KiB chunks: 512 bf16 or 256 f32 values each, 10,020 float chunks.
    let (packed, original) = fault_model(dir.path(), 1, 3_420_000);
    let c = Arc::new(Container::open(&packed).unwrap());
    let all = chunk_ids(&c);
    assert!(all.len() >= 10_000, "{} chunks", all.len());
    let data = data_region(&original).to_vec();
    let mut rng = Rng::new(2026);
    let mut rss = Vec::new();
    let mut routes = [0u64; 3];
    let mut ooms = 0;
    let started = Instant::now();
    for run in 0..100 {
        let mode = [Mode::Auto, Mode::Hybrid, Mode::CpuOnly, Mode::GpuOnly][pick(&mut rng, 4)];
        let oom: Vec<(usize, usize)> = if mode == Mode::GpuOnly {
            Vec::new()
        } else {
            all.iter()
                .copied()
                .filter(|_| rng.next_u64() % 50 == 0)
                .collect()
        };
        let mut o = RunOptions::new(mode, Config::default());
        o.gpu = Some(Arc::new(FakeGpu::new(&oom)));
        o.trace = Some(random_trace(&mut rng, 2_000));
        o.replay_step_ms = 1;
        o.timely_args = vec!["-w".into(), (1 + run % 2).to_string()];
        let (model, stats) = decompress_to_memory(c.clone(), &o).unwrap();
        assert!(model.data == data, "run {run} ({mode:?}): output differs");
        assert_eq!(
            stats.chunks.total_decompressions as usize,
            all.len(),
            "run {run}"
        );
        routes[0] += stats.chunks.routed_gpu;
        routes[1] += stats.chunks.routed_cpu;
        routes[2] += stats.chunks.routed_hybrid;
        ooms += stats.gpu_oom_reroutes;
        drop(model);
        rss.push(resident_kib());
    }
    let growth = rss[99] as i64 - rss[9] as i64;
    println!(
        "soak: 100 runs x {} chunks in {:.1} s, routes gpu/cpu/hybrid {routes:?}, {ooms} injected OOMs rerouted; resident after run 10: {} KiB, after run 100: {} KiB",
        all.len(),
        started.elapsed().as_secs_f64(),
        rss[9],
        rss[99]
    );
    assert!(
        routes.iter().all(|&r| r > 0),
        "every route was exercised: {routes:?}"
    );
    assert!(
        growth < 32 * 1024,
        "resident memory grew by {growth} KiB over 90 runs"
    );
}

/// A proptest runner of `fuzz_cases()` cases that keeps no failure files.
fn fuzz_runner() -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: fuzz_cases(),
        failure_persistence: None,
        ..Default::default()
    })
}

/// Cases for the long fuzz runs: `PADIC_FUZZ_CASES`, 20,000 by default.
fn fuzz_cases() -> u32 {
    std::env::var("PADIC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

mod fuzz {
    use super::*;
    use padic_burst::codec::{FloatKind, Layout, Tables};
    use proptest::prelude::{any, TestCaseError};

    fn small_container(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let mut rng = Rng::new(5);
        let a = padic_burst::demo::gaussian_bytes(&mut rng, 3000, 0.05, Dtype::BF16);
        let b = padic_burst::demo::gaussian_bytes(&mut rng, 1000, 0.02, Dtype::F16);
        let f = padic_burst::demo::gaussian_bytes(&mut rng, 1000, 0.02, Dtype::F32);
        let file = safetensors_bytes(&[
            ("a", Dtype::BF16, vec![3000], a),
            ("b", Dtype::F16, vec![1000], b),
            ("f", Dtype::F32, vec![1000], f),
        ]);
        let p = compress_bytes(
            dir,
            "fuzz",
            &file,
            &CompressOptions {
                chunk_kib: 1,
                ..CompressOptions::default()
            },
        );
        (file, std::fs::read(p).unwrap())
    }

    /// The container header parser: structured edits of every numeric
    /// field and random JSON, resealed so the parser and validator see them.
    #[test]
    #[ignore = "long: cargo test --release -- --ignored fuzz"]
    fn fuzz_header_parser() {
        let dir = tempfile::tempdir().unwrap();
        let (original, packed) = small_container(dir.path());
        let victim = dir.path().join("victim.padic");
        let mut runner = fuzz_runner();
        runner
            .run(
                &(
                    any::<u64>(),
                    any::<u64>(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                |(seed, value, junk)| {
                    let mut rng = Rng::new(seed);
                    let r = regions(&packed);
                    let (_, h) = header_json(&packed);
                    let path = random_field(&mut rng, &h);
                    let bad = match seed % 3 {
                        0 => with_header(&packed, |h| *field_mut(h, &path) = value.into()),
                        1 => with_header(&packed, |h| {
                            *field_mut(h, &path) =
                                serde_json::Value::String(String::from_utf8_lossy(&junk).into())
                        }),
                        _ => {
                            // Random bytes as the header, resealed.
                            with_stored_header(&packed[..r.header_start], &junk)
                        }
                    };
                    std::fs::write(&victim, &bad).unwrap();
                    match judge(&victim, &original, false) {
                        Outcome::Error(_) | Outcome::Identical => Ok(()),
                        other => Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                },
            )
            .unwrap();
    }

    /// The chunk decoder of each dtype and prime: on arbitrary section
    /// bytes, and on real encoded sections with random bytes changed (which
    /// gets past the section headers into the entropy decoders).
    #[test]
    #[ignore = "long: cargo test --release -- --ignored fuzz"]
    fn fuzz_chunk_decoder() {
        let mut runner = fuzz_runner();
        let kinds = [
            (FloatKind::BF16, 2),
            (FloatKind::F16, 2),
            (FloatKind::F32, 2),
            (FloatKind::BF16, 3),
            (FloatKind::F16, 257),
            (FloatKind::F32, 5),
        ];
        runner
            .run(
                &(
                    0usize..6,
                    1usize..5000,
                    any::<u64>(),
                    proptest::collection::vec(
                        proptest::collection::vec(any::<u8>(), 0..600),
                        0..12,
                    ),
                ),
                |(which, n, seed, random)| {
                    let (kind, prime) = kinds[which];
                    let layout = Layout::new(kind, prime, None, false).unwrap();
                    let tables = Tables::new(&layout, layout.precision);
                    let dtype = match kind {
                        FloatKind::BF16 => Dtype::BF16,
                        FloatKind::F16 => Dtype::F16,
                        FloatKind::F32 => Dtype::F32,
                    };
                    let mut rng = Rng::new(seed);
                    let values = padic_burst::demo::gaussian_bytes(&mut rng, n, 0.03, dtype);
                    let mut secs = if seed % 2 == 0 {
                        random
                    } else {
                        padic_burst::codec::chunk::encode(&layout, &values).sections
                    };
                    if seed % 2 == 1 {
                        for _ in 0..1 + pick(&mut rng, 4) {
                            let s = pick(&mut rng, secs.len());
                            if !secs[s].is_empty() {
                                let at = pick(&mut rng, secs[s].len());
                                secs[s][at] ^= 1 + rng.next_u64() as u8 % 255;
                            }
                        }
                    }
                    let refs: Vec<&[u8]> = secs.iter().map(|s| s.as_slice()).collect();
                    let mut out = vec![0u8; n * kind.size()];
                    // Ok or Err; a panic fails the case.
                    let _ = tables.decode_bytes(&refs, &mut out, &mut Vec::new());
                    Ok(())
                },
            )
            .unwrap();
    }

    /// `decompress` of a whole file under random mutations.
    #[test]
    #[ignore = "long: cargo test --release -- --ignored fuzz"]
    fn fuzz_decompress_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let (original, packed) = small_container(dir.path());
        let victim = dir.path().join("victim.padic");
        let mut runner = fuzz_runner();
        runner
            .run(&any::<u64>(), |seed| {
                let mut rng = Rng::new(seed);
                let (kind, bad) = mutate(&mut rng, &packed);
                std::fs::write(&victim, &bad).unwrap();
                match judge(&victim, &original, seed % 8 == 0) {
                    Outcome::Error(_) | Outcome::Identical => Ok(()),
                    other => Err(TestCaseError::fail(format!("{kind}: {other:?}"))),
                }
            })
            .unwrap();
    }
}
