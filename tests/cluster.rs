//! Clusters that agree or refuse: two processes of the CLI on loopback,
//! each test on ports of its own. Processes that disagree on what they write
//! (the output path, the container, its dtypes, the mode, the precision)
//! all stop with exit 2 before a byte is written, naming what differs; a
//! process whose peer failed never reports success.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use safetensors::Dtype;

/// A small model of one bf16 (or `dtype`) tensor and one f32 tensor, from `seed`.
fn model(dir: &Path, name: &str, seed: u64, dtype: Dtype) -> (PathBuf, Vec<u8>) {
    common::gaussian_model(
        dir,
        name,
        seed,
        &[
            ("a", dtype, vec![300, 1000], 0.04),
            ("b", Dtype::F32, vec![200_000], 0.02),
        ],
        256,
    )
}

/// Runs two processes of a loopback cluster, process `p` with `args(p)`
/// before `--`; both outputs, in process order.
fn cluster(dir: &Path, args: impl Fn(usize) -> Vec<std::ffi::OsString>) -> [Output; 2] {
    let (hosts, _) = common::loopback_hosts(dir);
    let children: Vec<_> = (0..2)
        .map(|p| {
            Command::new(env!("CARGO_BIN_EXE_padic-burst"))
                .env("PADIC_CLUSTER_CONNECT_TIMEOUT_S", "20")
                .args(args(p))
                .args(["--", "-n", "2", "-p", &p.to_string(), "-w", "1", "-h"])
                .arg(&hosts)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut out = children.into_iter().map(|c| c.wait_with_output().unwrap());
    [out.next().unwrap(), out.next().unwrap()]
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `decompress packed -o out` and `extra`, as arguments.
fn decompress(packed: &Path, out: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> =
        vec!["decompress".into(), packed.into(), "-o".into(), out.into()];
    a.extend(extra.iter().map(|s| s.into()));
    a
}

/// Both processes succeeded.
fn assert_both_succeed(outs: &[Output; 2]) {
    for (p, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "process {p}: {}", stderr(o));
    }
}

/// Both processes exit 2 with a message that contains each of `says`.
fn assert_both_refuse(outs: &[Output; 2], says: &[&str]) {
    for (p, o) in outs.iter().enumerate() {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(2), "process {p}: {err}");
        assert!(
            err.contains("cluster processes disagree"),
            "process {p}: {err}"
        );
        for s in says {
            assert!(err.contains(s), "process {p} does not say {s:?}: {err}");
        }
        assert!(!err.contains("panicked"), "process {p}: {err}");
    }
}

#[test]
fn different_output_paths_are_refused_on_both_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path(), "m", 1, Dtype::BF16);
    let real = dir.path().canonicalize().unwrap();
    let (a, b) = (real.join("a.out"), real.join("b.out"));
    let outs = cluster(dir.path(), |p| {
        decompress(&packed, if p == 0 { &a } else { &b }, &[])
    });
    assert_both_refuse(
        &outs,
        &[&format!(
            "output path: process 0 has {}, process 1 has {}",
            a.display(),
            b.display()
        )],
    );
    assert!(!a.exists() && !b.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn two_containers_of_the_same_layout_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (one, _) = model(dir.path(), "one", 1, Dtype::BF16);
    let (two, _) = model(dir.path(), "two", 2, Dtype::BF16);
    let out = dir.path().join("decoded.safetensors");
    let outs = cluster(dir.path(), |p| {
        decompress(if p == 0 { &one } else { &two }, &out, &[])
    });
    assert_both_refuse(
        &outs,
        &[
            "container: process 0 has",
            &one.display().to_string(),
            &two.display().to_string(),
            "header hash",
        ],
    );
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn containers_of_different_dtypes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (bf16, _) = model(dir.path(), "bf16", 1, Dtype::BF16);
    let (f32, _) = model(dir.path(), "f32", 1, Dtype::F32);
    let out = dir.path().join("decoded.safetensors");
    let outs = cluster(dir.path(), |p| {
        decompress(if p == 0 { &bf16 } else { &f32 }, &out, &[])
    });
    assert_both_refuse(&outs, &["container: process 0 has"]);
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn different_modes_and_precisions_are_refused_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path(), "m", 1, Dtype::BF16);
    let out = dir.path().join("decoded.safetensors");
    let outs = cluster(dir.path(), |p| match p {
        0 => decompress(&packed, &out, &["--mode", "cpu-only"]),
        _ => decompress(
            &packed,
            &out,
            &["--mode", "auto", "--target-precision", "3"],
        ),
    });
    assert_both_refuse(
        &outs,
        &[
            "mode: process 0 has cpu-only, process 1 has auto",
            "target precision: process 0 has every stored digit, process 1 has exactly 3 digits",
        ],
    );
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn a_process_whose_peer_failed_does_not_report_success() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path(), "m", 1, Dtype::BF16);
    let out = dir.path().join("decoded.safetensors");
    // Process 0 fails after the decode: its placement log cannot be written.
    let log = dir.path().join("no-such-folder").join("log.csv");
    let outs = cluster(dir.path(), |p| match p {
        0 => decompress(&packed, &out, &["--placement-log", log.to_str().unwrap()]),
        _ => decompress(&packed, &out, &[]),
    });
    let (e0, e1) = (stderr(&outs[0]), stderr(&outs[1]));
    assert!(!outs[0].status.success(), "process 0: {e0}");
    assert!(
        !outs[1].status.success(),
        "process 1 reported success: {e1}"
    );
    assert_eq!(outs[1].status.code(), outs[0].status.code(), "{e0}\n{e1}");
    assert!(
        e1.contains("cluster process 0 failed, so no output was written"),
        "{e1}"
    );
    assert!(e1.contains("no-such-folder"), "{e1}");
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn agreeing_processes_write_the_identical_file_on_different_paths_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path(), "m", 1, Dtype::BF16);
    // The same container and output, named relative to different folders.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let copy = sub.join("m.padic");
    std::fs::copy(&packed, &copy).unwrap();
    let out = dir.path().join("decoded.safetensors");
    let outs = cluster(dir.path(), |p| match p {
        0 => decompress(&packed, &out, &[]),
        _ => decompress(&copy, &sub.join("..").join("decoded.safetensors"), &[]),
    });
    assert_both_succeed(&outs);
    assert!(std::fs::read(&out).unwrap() == original, "the file differs");
    common::assert_no_temp_files(dir.path());
}

#[test]
fn a_cluster_writes_through_a_symlink_and_keeps_the_inputs_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path(), "m", 2, Dtype::BF16);
    std::fs::set_permissions(&packed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = dir.path().join("target.safetensors");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // The link was replaced by a file (its target left old), and the file
    // was 0644 whatever the input's bits.
    let outs = cluster(dir.path(), |_| decompress(&packed, &link, &[]));
    assert_both_succeed(&outs);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        std::fs::read(&target).unwrap() == original,
        "the file differs"
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    common::assert_no_temp_files(dir.path());
}

#[test]
fn a_cluster_refuses_a_fifo_and_checks_into_the_null_device() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = model(dir.path(), "m", 3, Dtype::BF16);
    // A FIFO became a regular file, its reader given nothing.
    let fifo = dir.path().join("fifo");
    common::mkfifo(&fifo);
    let outs = cluster(dir.path(), |_| decompress(&packed, &fifo, &[]));
    for (p, o) in outs.iter().enumerate() {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(2), "process {p}: {err}");
        assert!(
            err.contains("cannot take a cluster run"),
            "process {p}: {err}"
        );
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // The null device (a private one: with /dev/null itself a regression
    // would replace the machine's) takes every process's share and stays a
    // device; it was replaced by a regular file. Making one needs root.
    let null = dir.path().join("null");
    let c = std::ffi::CString::new(null.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; makedev(1, 3) is the null device.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if made != 0 {
        eprintln!("skipped the null device: mknod needs root");
        return;
    }
    let outs = cluster(dir.path(), |_| decompress(&packed, &null, &[]));
    assert_both_succeed(&outs);
    let m = std::fs::metadata(&null).unwrap();
    assert!(m.file_type().is_char_device() && m.len() == 0);
    std::fs::remove_file(&null).unwrap();
    common::assert_no_temp_files(dir.path());
}

#[test]
fn two_clusters_writing_one_output_each_put_a_whole_file_there() {
    // Each wrote into `.out.tmp-cluster`, one removing the other's: one
    // reported success with the other's bytes in place, the other failed.
    let dir = tempfile::tempdir().unwrap();
    let (packed, original) = model(dir.path(), "m", 4, Dtype::BF16);
    let out = dir.path().join("out.safetensors");
    let runs: Vec<_> = ["a", "b"]
        .map(|name| {
            let sub = dir.path().join(name);
            std::fs::create_dir(&sub).unwrap();
            let (packed, out) = (packed.clone(), out.clone());
            std::thread::spawn(move || cluster(&sub, |_| decompress(&packed, &out, &[])))
        })
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for outs in &runs {
        assert_both_succeed(outs);
    }
    assert!(std::fs::read(&out).unwrap() == original, "the file differs");
    common::assert_no_temp_files(dir.path());
}
