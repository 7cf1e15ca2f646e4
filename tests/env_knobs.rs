//! The `PADIC_*` environment knobs through the command line: a bad value is
//! refused before any work, with the variable, the value and what it
//! accepts, and exit status 2 (bad input).

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_padic-burst"))
}

#[test]
fn a_bad_knob_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.padic");
    for (var, value, allowed) in [
        ("PADIC_NO_SIMD", "maybe", "0, false, no or off"),
        ("PADIC_NO_HUGEPAGE", "2", "1, true, yes, on"),
        ("PADIC_GPU_BATCH_MB", "0", "1 to 1024"),
        ("PADIC_GPU_BATCH_MB", "4096", "1 to 1024"),
        ("PADIC_CLUSTER_CONNECT_TIMEOUT_S", "-1", "seconds above 0"),
        ("PADIC_CLUSTER_CONNECT_TIMEOUT_S", "abc", "seconds above 0"),
        (
            "PADIC_REPORT_PEAK_MEMORY",
            "sometimes",
            "0, false, no or off",
        ),
        ("PADIC_ZIPNN_PYTHON", "", "the path of a Python"),
    ] {
        let out = bin()
            .env(var, value)
            .arg("inspect")
            .arg(&missing)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value:?}: {err}");
        assert!(
            err.contains(&format!("{var}={value:?}")) && err.contains(allowed),
            "{var}={value:?}: {err}"
        );
        // Refused first: the missing file is never opened.
        assert!(!err.contains("missing.padic"), "{var}={value:?}: {err}");
    }
}

#[test]
fn a_good_knob_changes_nothing_but_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.padic");
    // Accepted: the run goes on, to fail on the missing file.
    let out = bin()
        .env("PADIC_NO_SIMD", "off")
        .env("PADIC_GPU_BATCH_MB", "64")
        .env("PADIC_ZIPNN_PYTHON", "/usr/bin/python3")
        .arg("inspect")
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.padic"), "{err}");
    assert!(!err.contains("PADIC_"), "{err}");
}

#[test]
fn the_cache_variable_is_refused_on_the_command_line_when_it_turns_the_cache_on() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.padic");
    for value in ["1", "yes", "on"] {
        let out = bin()
            .env("SARAPHIS_ENABLE_CPU_CACHE", value)
            .arg("decompress")
            .arg(&missing)
            .arg("-o")
            .arg(dir.path().join("out.safetensors"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("SARAPHIS_ENABLE_CPU_CACHE") && err.contains("get_tensor"),
            "{value}: {err}"
        );
        // Refused before the input is opened.
        assert!(!err.contains("missing.padic"), "{value}: {err}");
    }
    // Off: accepted, and the run goes on to fail on the missing file.
    let out = bin()
        .env("SARAPHIS_ENABLE_CPU_CACHE", "0")
        .arg("decompress")
        .arg(&missing)
        .arg("-o")
        .arg(dir.path().join("out.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.padic"), "{err}");
}

/// A `SARAPHIS_*` value that is not UTF-8 is refused as a bad value (it was
/// taken for no value, and the run went on with the default).
#[test]
fn a_configuration_variable_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.padic");
    let out = bin()
        .env("SARAPHIS_CPU_WORKERS", std::ffi::OsStr::from_bytes(b"\xff"))
        .arg("decompress")
        .arg(&missing)
        .arg("-o")
        .arg(dir.path().join("o.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("SARAPHIS_CPU_WORKERS=\"\u{fffd}\" is not an integer"),
        "{err}"
    );
}
