//! Outputs never damage what the user points at: a FIFO or a device gets the
//! bytes streamed, a symlink is written through, the input itself is refused,
//! permissions follow the input, and nothing is left under a temporary name.

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use common::{mkfifo, read_fifo};
use padic_burst::output::{write_atomic, TempOutput};

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_fifo_gets_the_bytes_streamed_in_order_and_stays_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = read_fifo(&fifo);
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write_atomic(&fifo, &bytes).unwrap();
    assert_eq!(reader.join().unwrap(), bytes);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_character_device_is_written_not_replaced() {
    let null = Path::new("/dev/null");
    write_atomic(null, b"not a file").unwrap();
    let m = std::fs::metadata(null).unwrap();
    assert!(
        m.file_type().is_char_device(),
        "/dev/null is still a device"
    );
}

#[test]
fn a_symlink_is_written_through_to_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("sub").join("real.bin");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink("sub/real.bin", &link).unwrap();
    write_atomic(&link, b"new bytes").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"new bytes");
    assert!(leftovers(dir.path()).is_empty());
    assert!(leftovers(&dir.path().join("sub")).is_empty());
    // A dangling link gets its target created.
    let dangling = dir.path().join("dangling.bin");
    std::os::unix::fs::symlink("created.bin", &dangling).unwrap();
    write_atomic(&dangling, b"made").unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("created.bin")).unwrap(),
        b"made"
    );
}

#[test]
fn the_input_itself_is_refused_however_it_is_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.padic");
    std::fs::write(&input, b"precious").unwrap();
    let hard = dir.path().join("hard.padic");
    std::fs::hard_link(&input, &hard).unwrap();
    let link = dir.path().join("link.padic");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let dotted = dir.path().join(".").join("model.padic");
    for out in [&input, &hard, &link, &dotted] {
        let err = TempOutput::create_from(out, &input).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("itself"), "{err}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), b"precious");
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn the_output_takes_the_inputs_permission_bits() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o600, 0o640, 0o644] {
        let input = dir.path().join(format!("in-{mode:o}"));
        std::fs::write(&input, b"w").unwrap();
        std::fs::set_permissions(&input, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = dir.path().join(format!("out-{mode:o}"));
        let t = TempOutput::create_from(&out, &input).unwrap();
        t.file().write_all(b"x").unwrap();
        t.commit().unwrap();
        let got = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "output mode {got:o} for input mode {mode:o}");
    }
}

#[test]
fn a_dropped_output_leaves_nothing_and_an_existing_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    std::fs::write(&out, b"before").unwrap();
    {
        let t = TempOutput::create(&out).unwrap();
        t.file().write_all(b"half").unwrap();
        assert!(t.temp_path().exists());
    }
    assert_eq!(std::fs::read(&out).unwrap(), b"before");
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_directory_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_atomic(dir.path(), b"x").unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(leftovers(dir.path()).is_empty());
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(!leftovers(dir.path().parent().unwrap())
        .iter()
        .any(|n| n.starts_with(&format!(".{name}"))));
}

#[test]
fn an_output_that_cannot_be_made_is_named_not_the_hidden_temporary() {
    let err = write_atomic(Path::new("/proc/padic-no-such/out.bin"), b"x").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/proc/padic-no-such/out.bin:"), "{msg}");
    assert!(!msg.contains(".tmp-"), "{msg}");
    // The system's own error, errno included (Python's OSError is made of it).
    match err {
        padic_burst::Error::Io { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source}")
        }
        other => panic!("{other:?}"),
    }
}
