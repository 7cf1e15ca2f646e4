//! The command line: commands, JSON, exit codes, and no half-written outputs.

mod common;

use common::*;
use safetensors::Dtype;
use std::path::Path;

fn model(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut rng = padic_burst::demo::Rng::new(1);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 20_000, 0.05, Dtype::BF16);
    let ids: Vec<u8> = (0..10i64).flat_map(|i| i.to_le_bytes()).collect();
    let file = safetensors_bytes(&[
        ("w", Dtype::BF16, vec![200, 100], w),
        ("ids", Dtype::I64, vec![10], ids),
    ]);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &file).unwrap();
    (path, file)
}

#[test]
fn compress_inspect_decompress_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    let out = bin()
        .args(["compress"])
        .arg(&input)
        .arg("-o")
        .arg(&packed)
        .args(["--chunk-kib", "8"])
        .output()
        .unwrap();
    assert_success(&out);
    // The summary: what was written, its ratio, and how long it took.
    let said = String::from_utf8_lossy(&out.stderr);
    let summary = said.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("{}: ", packed.display()))
            && summary.contains(&format!("{} -> ", original.len()))
            && summary.contains(" (ratio 0.")
            && summary.contains(" s (")
            && summary.ends_with(" GB/s)"),
        "{said}"
    );

    let out = bin()
        .arg("inspect")
        .arg(&packed)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["tensors", "original_bytes", "compressed_bytes", "ratio"] {
        assert!(report.get(key).is_some(), "inspect --json lacks {key}");
    }
    assert_eq!(
        report["original_bytes"].as_u64().unwrap(),
        original.len() as u64
    );
    assert_eq!(
        report["compressed_bytes"].as_u64().unwrap(),
        std::fs::metadata(&packed).unwrap().len()
    );
    let w = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "w")
        .unwrap();
    assert_eq!(w["dtype"], "BF16");
    assert_eq!(w["prime"], 2);
    assert_eq!(w["precision"], 7);
    assert_eq!(w["chunks"], 5); // 40 000 bytes in 8 KiB chunks
    assert!(report["ratio"].as_f64().unwrap() < 0.8);
    let text = bin().arg("inspect").arg(&packed).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("total: 2 tensors"));

    let restored = dir.path().join("r.safetensors");
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&restored)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        std::fs::read(&restored).unwrap() == original,
        "restored file differs"
    );
    assert_no_temp_files(dir.path());
}

fn assert_fails_cleanly(out: &std::process::Output, mentions: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");
    for m in mentions {
        assert!(err.contains(m), "message lacks {m:?}: {err}");
    }
}

#[test]
fn bad_inputs_exit_2_with_one_message_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let target = dir.path().join("out.safetensors");

    // Not a container.
    let out = bin()
        .arg("decompress")
        .arg(&input)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert_fails_cleanly(
        &out,
        &[
            "model.safetensors",
            "not a padic-burst container",
            "looks like an uncompressed safetensors file: compress it first",
        ],
    );
    // Truncated container.
    let bytes = std::fs::read(&packed).unwrap();
    let cut = dir.path().join("cut.padic");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = bin()
        .arg("decompress")
        .arg(&cut)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert_fails_cleanly(&out, &["cut.padic"]);
    // A payload flip: detected mid-decode, after the output was started.
    let mut flipped = bytes.clone();
    flipped[40] ^= 4;
    let bad = dir.path().join("flip.padic");
    std::fs::write(&bad, &flipped).unwrap();
    let out = bin()
        .arg("decompress")
        .arg(&bad)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert_fails_cleanly(&out, &["flip.padic", "chunk 0", "checksum"]);
    // Wrong version.
    let mut v2 = bytes.clone();
    v2[8] = 9;
    let ver = dir.path().join("ver.padic");
    std::fs::write(&ver, &v2).unwrap();
    let out = bin().arg("inspect").arg(&ver).output().unwrap();
    assert_fails_cleanly(&out, &["ver.padic", "the version field says 9"]);
    // A safetensors file that does not parse.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let out = bin()
        .arg("compress")
        .arg(&junk)
        .arg("-o")
        .arg(dir.path().join("j.padic"))
        .output()
        .unwrap();
    assert_fails_cleanly(&out, &["junk.safetensors", "safetensors"]);
    // Target precision above what is stored.
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&target)
        .args(["--target-precision", "8"])
        .output()
        .unwrap();
    assert_fails_cleanly(&out, &["target precision 8", "tensor 'w'"]);
    // Bad prime.
    let out = bin()
        .arg("compress")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("p.padic"))
        .args(["--prime", "9"])
        .output()
        .unwrap();
    assert_fails_cleanly(&out, &["--prime 9"]);

    assert!(!target.exists(), "no output under the final name");
    assert!(!dir.path().join("j.padic").exists());
    assert!(!dir.path().join("p.padic").exists());
    assert_no_temp_files(dir.path());
}

#[test]
fn progressive_decompress_reads_fewer_bytes_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = padic_burst::demo::Rng::new(2);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 30_000, 0.05, Dtype::F32);
    let file = safetensors_bytes(&[("w", Dtype::F32, vec![30_000], w.clone())]);
    let input = dir.path().join("f.safetensors");
    std::fs::write(&input, &file).unwrap();
    let packed = dir.path().join("f.padic");
    assert!(bin()
        .arg("compress")
        .arg(&input)
        .arg("-o")
        .arg(&packed)
        .output()
        .unwrap()
        .status
        .success());
    // Damage the last digit plane of every chunk: a decode to 10 digits never reads it.
    let c = padic_burst::format::Container::open(&packed).unwrap();
    let mut bytes = std::fs::read(&packed).unwrap();
    for ch in &c.header().tensors[0].chunks {
        let last = ch.sections.len() - 1;
        let off = ch.offset + ch.sections[..last].iter().map(|s| s.len).sum::<u64>();
        bytes[off as usize + 1] ^= 0xff;
    }
    drop(c);
    std::fs::write(&packed, &bytes).unwrap();
    let out10 = dir.path().join("k10.safetensors");
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&out10)
        .args(["--target-precision", "10"])
        .output()
        .unwrap();
    assert_success(&out);
    let got = std::fs::read(&out10).unwrap();
    for (a, b) in w.chunks_exact(4).zip(data_region(&got).chunks_exact(4)) {
        let a = u32::from_le_bytes(a.try_into().unwrap());
        assert_eq!(
            u32::from_le_bytes(b.try_into().unwrap()),
            a & !((1 << 13) - 1)
        );
    }
    let full = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(dir.path().join("full.safetensors"))
        .output()
        .unwrap();
    assert_fails_cleanly(&full, &["checksum", "digit plane 2"]);
}

/// `padic-burst <command> <input> -o <output> <extra...>`.
fn run_on(
    command: &str,
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    bin()
        .arg(command)
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

/// Compresses the test model; the container's path.
fn packed_model(dir: &std::path::Path) -> std::path::PathBuf {
    let (input, _) = model(dir);
    let packed = dir.join("m.padic");
    assert!(run_on("compress", &input, &packed, &["--chunk-kib", "8"])
        .status
        .success());
    packed
}

/// Fails with status 2, saying `wanted` (every one) and not `unwanted`.
fn assert_refused(out: &std::process::Output, wanted: &[&str], unwanted: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for w in wanted {
        assert!(err.contains(w), "lacks {w:?}: {err}");
    }
    assert!(!err.contains(unwanted), "{err}");
}

#[test]
fn negative_and_out_of_range_numbers_name_the_flag_and_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let packed = packed_model(dir.path());
    let out_path = dir.path().join("o.safetensors");
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--target-precision", "-1"],
            "--target-precision -1",
            "at least 1",
        ),
        (
            vec!["--target-precision", "0"],
            "--target-precision 0",
            "at least 1",
        ),
        (vec!["--workers", "-2"], "--workers -2", "at least 1"),
        (vec!["--workers", "0"], "--workers 0", "at least 1"),
        (
            vec!["--replay-step-ms", "-5"],
            "--replay-step-ms -5",
            "at least 0",
        ),
    ];
    for (args, flag, range) in cases {
        let out = run_on("decompress", &packed, &out_path, &args);
        assert_refused(&out, &[flag, range], "unexpected argument");
        assert!(!out_path.exists());
    }
    let input = dir.path().join("model.safetensors");
    let out = run_on(
        "compress",
        &input,
        &dir.path().join("p.padic"),
        &["--prime", "-3"],
    );
    assert_refused(
        &out,
        &["--prime -3", "from 2 to 2047"],
        "unexpected argument",
    );
    let out = run_on(
        "compress",
        &input,
        &dir.path().join("p.padic"),
        &["--chunk-kib", "-1"],
    );
    assert_refused(
        &out,
        &["--chunk-kib -1", "from 1 to 262144"],
        "unexpected argument",
    );
}

#[test]
fn a_replay_step_without_a_trace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let packed = packed_model(dir.path());
    let out_path = dir.path().join("o.safetensors");
    let out = run_on("decompress", &packed, &out_path, &["--replay-step-ms", "5"]);
    assert_refused(&out, &["--pressure-trace"], "panicked");
    assert!(!out_path.exists());
}

/// FNUZ 8-bit floats (safetensors 0.8) pass through byte for byte (they were
/// refused as an unknown dtype); a name holding control characters is shown
/// escaped, on one line, in an error and in `inspect`; a container given to
/// `compress` is named as one.
#[test]
fn odd_dtypes_names_and_inputs_are_handled_on_one_line() {
    use safetensors::Dtype;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fnuz.safetensors");
    let file = common::safetensors_bytes(&[
        ("w", Dtype::F8_E4M3FNUZ, vec![4, 4], (0..16).collect()),
        ("v", Dtype::F8_E5M2FNUZ, vec![3], vec![1, 128, 255]),
        ("a\u{1b}[2J\nb", Dtype::F32, vec![1], vec![0, 0, 128, 63]),
    ]);
    std::fs::write(&input, &file).unwrap();
    let packed = dir.path().join("fnuz.padic");
    let out = run_on("compress", &input, &packed, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = dir.path().join("back.safetensors");
    assert!(run_on("decompress", &packed, &back, &[]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), file);
    let inspect = bin().arg("inspect").arg(&packed).output().unwrap();
    let table = String::from_utf8(inspect.stdout).unwrap();
    assert!(
        table.contains("F8_E4M3FNUZ") && table.contains(r"a\u{1b}[2J\nb"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "{table}");
    // A bad file whose name holds them: one line, nothing sent to the terminal.
    let evil = dir.path().join("evil.safetensors");
    let header = br#"{"x\n\u001b[31m":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 12]);
    std::fs::write(&evil, &bytes).unwrap();
    let out = run_on("compress", &evil, &dir.path().join("e.padic"), &[]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(r"x\n\u{1b}[31m") && !err.contains('\u{1b}'),
        "{err}"
    );
    let out = run_on("compress", &packed, &dir.path().join("again.padic"), &[]);
    assert_refused(
        &out,
        &["is a padic-burst container already"],
        "header too large",
    );
}

/// A configuration or a trace that is not UTF-8 is bad input (exit 2), not a
/// failed read (it was exit 1).
#[test]
fn a_configuration_or_trace_that_is_not_utf8_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let packed = packed_model(dir.path());
    let out_path = dir.path().join("o.safetensors");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, b"num_cpu_workers = \"\xe9\"\n").unwrap();
    let trace = dir.path().join("t.csv");
    std::fs::write(&trace, b"t_ms,used_mb,total_mb\n0,1\xe9,2\n").unwrap();
    for (flag, file) in [("--config", &config), ("--pressure-trace", &trace)] {
        let out = run_on(
            "decompress",
            &packed,
            &out_path,
            &[flag, file.to_str().unwrap()],
        );
        assert_refused(&out, &["not UTF-8 text"], "panicked");
        assert!(!out_path.exists());
    }
}

#[test]
fn inspect_json_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let packed = packed_model(dir.path());
    // A pipe whose reader is gone before anything is written: every write
    // fails with a broken pipe, as under `| head -c1` once head has exited.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .arg("inspect")
        .arg(&packed)
        .arg("--json")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn an_input_that_is_a_fifo_or_a_device_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("weights.padic");
    mkfifo(&fifo);
    for (command, input, what) in [
        ("compress", fifo.as_path(), "weights.padic: a FIFO"),
        ("decompress", fifo.as_path(), "weights.padic: a FIFO"),
        ("inspect", fifo.as_path(), "weights.padic: a FIFO"),
        ("compress", Path::new("/dev/null"), "/dev/null: a device"),
        ("decompress", Path::new("/dev/null"), "/dev/null: a device"),
    ] {
        let mut cmd = bin();
        cmd.arg(command).arg(input);
        if command != "inspect" {
            cmd.arg("-o").arg(dir.path().join("out"));
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Opening a FIFO for reading waits for a writer: the check comes first.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("{command} {} is still waiting", input.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert_fails_cleanly(&out, &[what, "the input must be a regular file"]);
        assert!(!dir.path().join("out").exists());
    }
}

#[test]
fn an_invalid_argument_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = model(dir.path());
    let out = run_on(
        "compress",
        &input,
        &dir.path().join("p.padic"),
        &["--precision", "3"],
    );
    // Too few digits for BF16: said of the first tensor, prefixed once.
    assert_refused(&out, &["--precision 3", "tensor 'w'"], "panicked");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("invalid argument").count(), 1, "{err}");
}

#[test]
fn the_decompress_summary_counts_the_bytes_of_the_file_written() {
    let dir = tempfile::tempdir().unwrap();
    let packed = packed_model(dir.path());
    let restored = dir.path().join("r.safetensors");
    let out = run_on("decompress", &packed, &restored, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let written: u64 = err
        .split(" written in ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {err}"));
    assert_eq!(
        written,
        std::fs::metadata(&restored).unwrap().len(),
        "{err}"
    );
}

#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let packed_bytes = std::fs::read(&packed).unwrap();
    let hard = dir.path().join("hard.padic");
    std::fs::hard_link(&packed, &hard).unwrap();
    for (cmd, from, to) in [
        ("decompress", &packed, &packed),
        ("decompress", &packed, &hard),
        ("compress", &input, &input),
    ] {
        let out = bin().arg(cmd).arg(from).arg("-o").arg(to).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("itself"), "{cmd}: {err}");
    }
    assert_eq!(std::fs::read(&packed).unwrap(), packed_bytes);
    assert_eq!(std::fs::read(&input).unwrap(), original);
    assert_no_temp_files(dir.path());
}

#[test]
fn a_side_output_on_the_input_or_on_another_output_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let packed_bytes = std::fs::read(&packed).unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, "t_ms,used_mb,total_mb\n0,10,100\n").unwrap();
    let out = dir.path().join("out.safetensors");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    // The command's stderr, once it has exited with 2.
    let refused = |args: &[String]| {
        let o = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        err
    };
    let decompress = |from: &Path, more: &[&str]| {
        let mut args = vec!["decompress".into(), p(from), "-o".into(), p(&out)];
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    // Each used to write over the input (or the output) and exit 0.
    let input_link = dir.path().join("link.padic");
    std::os::unix::fs::symlink(&packed, &input_link).unwrap();
    // A link to -o, which does not exist yet: a write through it lands there.
    let dangling = dir.path().join("dangling.json");
    std::os::unix::fs::symlink(&out, &dangling).unwrap();
    let (s_json, s_json2) = (
        p(&dir.path().join("s.json")),
        p(&dir.path().join("./s.json")),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            decompress(&packed, &["--stats-json", &p(&packed)]),
            "--stats-json",
        ),
        (
            decompress(&packed, &["--placement-log", &p(&packed)]),
            "--placement-log",
        ),
        (
            decompress(&packed, &["--timeline", &p(&input_link)]),
            "--timeline",
        ),
        (
            decompress(&packed, &["--record-pressure", &p(&packed)]),
            "--record-pressure",
        ),
        (
            decompress(
                &packed,
                &["--stats-interval", "5", "--stats-stream", &p(&packed)],
            ),
            "--stats-stream",
        ),
        (
            decompress(
                &packed,
                &["--pressure-trace", &p(&trace), "--stats-json", &p(&trace)],
            ),
            "--pressure-trace",
        ),
        (decompress(&packed, &["--stats-json", &p(&out)]), "-o"),
        (decompress(&packed, &["--stats-json", &p(&dangling)]), "-o"),
        (
            decompress(&packed, &["--stats-json", &s_json, "--timeline", &s_json2]),
            "--stats-json",
        ),
        // plan --svg over the input.
        (
            vec![
                "plan".into(),
                p(&packed),
                "--pressure-trace".into(),
                p(&trace),
                "--svg".into(),
                p(&packed),
            ],
            "--svg",
        ),
    ];
    for (args, named) in &cases {
        let err = refused(args);
        assert!(
            err.contains(named) && err.contains("itself"),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?}: decoded although refused");
    }
    // --histogram-out h.hgrm writes h.cpu.hgrm: that name may be the input.
    let hist_input = dir.path().join("h.cpu.hgrm");
    std::fs::copy(&packed, &hist_input).unwrap();
    refused(&decompress(
        &hist_input,
        &["--histogram-out", &p(&dir.path().join("h.hgrm"))],
    ));
    assert_eq!(std::fs::read(&hist_input).unwrap(), packed_bytes);
    assert_eq!(std::fs::read(&packed).unwrap(), packed_bytes);
    // Any number of outputs may go to /dev/null.
    let o = bin()
        .arg("decompress")
        .arg(&packed)
        .args([
            "-o",
            "/dev/null",
            "--stats-json",
            "/dev/null",
            "--placement-log",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_success(&o);
    assert_eq!(
        std::fs::read(&trace).unwrap(),
        b"t_ms,used_mb,total_mb\n0,10,100\n"
    );
    assert_no_temp_files(dir.path());
}

#[test]
fn dev_stdout_and_dev_stderr_take_the_bytes_when_they_are_pipes() {
    // `/dev/stdout` into a pipe failed: the link's text (`pipe:[N]`) was
    // followed by hand as if it were a path.
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let out = bin()
        .args(["--quiet", "decompress"])
        .arg(&packed)
        .args(["-o", "/dev/stdout", "--stats-json", "/dev/stderr"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(out.stdout == original, "stdout holds other bytes");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"total_decompressions\""), "{err}");
    // `-` and `/dev/stdout` are one output: the model's bytes and the JSON
    // would mix (`-` was told apart by its name).
    let out = bin()
        .args(["--quiet", "decompress"])
        .arg(&packed)
        .args(["-o", "-", "--stats-json", "/dev/stdout"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--stats-json /dev/stdout is -o - itself"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_private_input_gives_a_private_output() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = model(dir.path());
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o600)).unwrap();
    let packed = dir.path().join("m.padic");
    let restored = dir.path().join("r.safetensors");
    for (cmd, from, to) in [
        ("compress", &input, &packed),
        ("decompress", &packed, &restored),
    ] {
        let out = bin().arg(cmd).arg(from).arg("-o").arg(to).output().unwrap();
        assert_success(&out);
        let mode = std::fs::metadata(to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{cmd} wrote mode {mode:o}");
    }
}

#[test]
fn decompress_to_a_fifo_streams_the_file_and_leaves_the_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = read_fifo(&fifo);
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&fifo)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(reader.join().unwrap(), original);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // `-` is standard output.
    let out = bin()
        .arg("--quiet")
        .arg("decompress")
        .arg(&packed)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, original);
    assert_no_temp_files(dir.path());
}

#[test]
fn decompress_streams_to_a_fifo_as_it_decodes_with_no_copy_in_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    // Many small chunks, two workers: parts finish out of order.
    let compressed = run_on("compress", &input, &packed, &["--chunk-kib", "4"]);
    assert!(compressed.status.success());
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = read_fifo(&fifo);
    // TMPDIR names no folder: nothing can be assembled there first.
    let out = bin()
        .env("TMPDIR", dir.path().join("absent"))
        .args(["--quiet", "decompress"])
        .arg(&packed)
        .arg("-o")
        .arg(&fifo)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(reader.join().unwrap(), original);
    assert_no_temp_files(dir.path());
}

#[test]
fn too_many_workers_are_refused_at_once_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let limit = padic_burst::config::max_workers();
    let started = std::time::Instant::now();
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(dir.path().join("r.safetensors"))
        .args(["--workers", "500"])
        .env("SARAPHIS_CPU_WORKERS", "100000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("1..={limit}")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!dir.path().join("r.safetensors").exists());
}

#[test]
fn sigterm_or_sigusr1_mid_run_removes_the_temporary_output_and_exits_as_the_signal_does() {
    let dir = tempfile::tempdir().unwrap();
    // About 64 MB of bf16 output: long enough to be caught mid-run.
    let (packed, _) = gaussian_model(
        dir.path(),
        "big.padic",
        3,
        &[("w", Dtype::BF16, vec![8192, 4096], 0.05)],
        1024,
    );
    let restored = dir.path().join("r.safetensors");
    // SIGUSR1 from outside ends the run as the signal does (128 + 10), the
    // temporaries removed; it was reported as an input cut short (SIGBUS),
    // whose handler uses it inside the process.
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGUSR1, 138)] {
        let mut caught = false;
        for _ in 0..5 {
            let child = bin()
                .arg("--quiet")
                .arg("decompress")
                .arg(&packed)
                .arg("-o")
                .arg(&restored)
                .args(["--workers", "1", "--mode", "cpu-only"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // Wait for the temporary output to appear, then stop the run.
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(10) {
                let temp = std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().contains(".tmp-"));
                if temp {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            // SAFETY: a plain kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let out = child.wait_with_output().unwrap();
            let status = out.status;
            assert_no_temp_files(dir.path());
            if status.code() == Some(code) {
                assert!(!restored.exists(), "a stopped run left no output");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.contains("cut short"), "{err}");
                caught = true;
                break;
            }
            // The run finished before the signal: it must have succeeded whole.
            assert!(status.success(), "{status:?}");
            std::fs::remove_file(&restored).unwrap();
        }
        assert!(caught, "no run was still going when signal {signal} came");
    }
}

#[test]
fn decoding_to_dev_null_checks_every_chunk_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &["--chunk-kib", "8"])
        .status
        .success());
    let stats = dir.path().join("s.json");
    let null = Path::new("/dev/null");
    let out = run_on(
        "decompress",
        &packed,
        null,
        &["--stats-json", stats.to_str().unwrap()],
    );
    assert_success(&out);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let c = padic_burst::format::Container::open(&packed).unwrap();
    assert_eq!(
        s["total_decompressions"].as_u64(),
        Some(c.header().chunk_count() as u64),
        "{s}"
    );
    assert_eq!(s["bytes_out"].as_u64(), Some(c.header().data_len), "{s}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(null)
        .unwrap()
        .file_type()
        .is_char_device());
    // A flipped byte in a section is found.
    let mut bytes = std::fs::read(&packed).unwrap();
    bytes[original.len() / 8] ^= 0x20;
    std::fs::write(&packed, bytes).unwrap();
    let out = run_on("decompress", &packed, null, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("m.padic") && err.contains("chunk"), "{err}");
}

#[test]
fn a_misspelt_configuration_variable_is_warned_of_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (input, original) = model(dir.path());
    let packed = dir.path().join("m.padic");
    assert!(run_on("compress", &input, &packed, &[]).status.success());
    let restored = dir.path().join("r.safetensors");
    let out = bin()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&restored)
        .env("SARAPHIS_CPU_WORKER", "1")
        .env("SARAPHIS_HOME", "/elsewhere")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: SARAPHIS_CPU_WORKER is set, but padic-burst reads no such variable; \
             did you mean SARAPHIS_CPU_WORKERS?"
        ),
        "{err}"
    );
    // Another part of the Saraphis system's variable is not ours to judge.
    assert!(!err.contains("SARAPHIS_HOME"), "{err}");
    assert_eq!(std::fs::read(&restored).unwrap(), original);
}
