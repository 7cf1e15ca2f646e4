//! Sharded checkpoints through the command line: a model directory (or its
//! index) compresses to one `.padic` per shard plus the other files, and
//! comes back byte-identical; bad input is refused before any work, with
//! exit code 2, and never leaves a directory under the output's name.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use safetensors::Dtype;

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().unwrap()
}

/// Exit code 2 and an error naming `what`.
fn refused(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

const SHARDS: [&str; 3] = [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
];

/// A Hugging Face style model directory: three shards of generated weights
/// in three dtypes, the index, config.json and a tokenizer file in a folder.
fn model_dir(root: &Path) -> PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("tokenizer")).unwrap();
    let mut rng = padic_burst::demo::Rng::new(7);
    let mut weight_map = serde_json::Map::new();
    for (i, (shard, dtype)) in SHARDS
        .iter()
        .zip([Dtype::BF16, Dtype::F32, Dtype::F16])
        .enumerate()
    {
        let name = format!("layers.{i}.weight");
        let w = padic_burst::demo::gaussian_bytes(&mut rng, 30_000, 0.02, dtype);
        let ids: Vec<u8> = (0..7i64).flat_map(|v| (v * 3).to_le_bytes()).collect();
        let file = safetensors_bytes(&[
            (&name, dtype, vec![300, 100], w),
            (&format!("layers.{i}.ids"), Dtype::I64, vec![7], ids),
        ]);
        std::fs::write(dir.join(shard), file).unwrap();
        weight_map.insert(name, (*shard).into());
        weight_map.insert(format!("layers.{i}.ids"), (*shard).into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 1}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\": \"llama\"}\n").unwrap();
    std::fs::write(dir.join("tokenizer/tokenizer.json"), b"{\"vocab\": {}}\n").unwrap();
    dir
}

/// The test checkpoint in `root` (see [`model_dir`]) and, beside it, that
/// checkpoint compressed by the command line into `root/packed`.
fn packed_model(root: &Path) -> (PathBuf, PathBuf) {
    let model = model_dir(root);
    let packed = root.join("packed");
    assert_success(&compress(&model, &packed));
    (model, packed)
}

/// The test checkpoint, compressed and opened: (model directory, the packed
/// checkpoint, its shards' containers in index order).
fn opened_model(
    root: &Path,
) -> (
    PathBuf,
    padic_burst::checkpoint::PackedCheckpoint,
    Vec<std::sync::Arc<padic_burst::format::Container>>,
) {
    let (model, packed) = packed_model(root);
    let ckpt = padic_burst::checkpoint::PackedCheckpoint::open(&packed).unwrap();
    let containers = ckpt.shards().iter().map(|(_, c)| c.clone()).collect();
    (model, ckpt, containers)
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn compress(input: &Path, output: &Path) -> Output {
    run(&[
        "compress".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--chunk-kib".as_ref(),
        "16".as_ref(),
    ])
}

fn decompress(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "decompress".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--workers".as_ref(),
        "2".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run(&args)
}

#[test]
fn a_directory_round_trips_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, packed) = packed_model(tmp.path());
    let names: Vec<String> = files(&packed)
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "config.json",
            "model-00001-of-00003.padic",
            "model-00002-of-00003.padic",
            "model-00003-of-00003.padic",
            "model.safetensors.index.json",
            "tokenizer/tokenizer.json",
        ]
    );
    for copied in ["config.json", "model.safetensors.index.json"] {
        assert_eq!(
            std::fs::read(packed.join(copied)).unwrap(),
            std::fs::read(model.join(copied)).unwrap()
        );
    }

    let restored = tmp.path().join("restored");
    let stats = tmp.path().join("stats.json");
    let out = decompress(
        &packed,
        &restored,
        &["--stats-json", stats.to_str().unwrap()],
    );
    assert_success(&out);
    assert_eq!(files(&restored), files(&model));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(s["shards"].as_array().unwrap().len(), 3);
    let per_shard: u64 = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["total_decompressions"].as_u64().unwrap())
        .sum();
    assert_eq!(s["total_decompressions"].as_u64().unwrap(), per_shard);
    assert!(per_shard >= 6, "every shard has at least two chunks");
    let data: u64 = SHARDS
        .iter()
        .map(|f| data_region(&std::fs::read(model.join(f)).unwrap()).len() as u64)
        .sum();
    assert_eq!(s["bytes_out"].as_u64().unwrap(), data);
    // The summary counts the shards' bytes as written, headers included.
    let shard_bytes: u64 = SHARDS
        .iter()
        .map(|f| std::fs::metadata(model.join(f)).unwrap().len())
        .sum();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 shards, ") && err.contains(&format!(" {shard_bytes} written")),
        "{err}"
    );
    assert_no_temp_files(tmp.path());

    // inspect DIR: per shard, and totals that add them up.
    let out = run(&["inspect".as_ref(), packed.as_os_str(), "--json".as_ref()]);
    assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shards = r["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[1]["shard"], "model-00002-of-00003.padic");
    assert_eq!(r["tensors"].as_u64().unwrap(), 6);
    let original: u64 = SHARDS
        .iter()
        .map(|f| std::fs::metadata(model.join(f)).unwrap().len())
        .sum();
    assert_eq!(r["original_bytes"].as_u64().unwrap(), original);
    let out = run(&["inspect".as_ref(), packed.as_os_str()]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shard model-00003-of-00003.padic"), "{text}");
    assert!(
        text.contains("checkpoint total: 3 shards, 6 tensors, "),
        "{text}"
    );
}

#[test]
fn the_index_json_stands_for_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    assert_success(&compress(
        &model.join("model.safetensors.index.json"),
        &packed,
    ));
    let restored = tmp.path().join("restored");
    assert_success(&decompress(
        &packed.join("model.safetensors.index.json"),
        &restored,
        &[],
    ));
    assert_eq!(files(&restored), files(&model));
}

#[test]
fn an_empty_output_directory_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    std::fs::create_dir(&packed).unwrap();
    assert_success(&compress(&model, &packed));
    assert!(packed.join("model-00002-of-00003.padic").is_file());
}

#[test]
fn a_missing_shard_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, packed) = packed_model(tmp.path());
    std::fs::remove_file(model.join(SHARDS[1])).unwrap();
    let out_dir = tmp.path().join("again");
    refused(&compress(&model, &out_dir), "model-00002-of-00003");
    assert!(!out_dir.exists());

    std::fs::remove_file(packed.join("model-00003-of-00003.padic")).unwrap();
    let restored = tmp.path().join("restored");
    refused(
        &decompress(&packed, &restored, &[]),
        "model-00003-of-00003.padic is missing",
    );
    assert!(!restored.exists());
    assert_no_temp_files(tmp.path());
}

#[test]
fn a_non_empty_output_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    std::fs::create_dir(&packed).unwrap();
    std::fs::write(packed.join("keep.txt"), b"mine").unwrap();
    refused(&compress(&model, &packed), "not an empty directory");
    assert_eq!(std::fs::read(packed.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(files(&packed).len(), 1);
}

#[test]
fn a_damaged_shard_fails_and_leaves_no_partial_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());

    // A shard whose header does not parse: refused before anything is written.
    let bad_model = tmp.path().join("bad-model");
    std::fs::create_dir(&bad_model).unwrap();
    for (name, bytes) in files(&model) {
        std::fs::create_dir_all(bad_model.join(&name).parent().unwrap()).unwrap();
        std::fs::write(bad_model.join(&name), bytes).unwrap();
    }
    std::fs::write(
        bad_model.join(SHARDS[2]),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    let out_dir = tmp.path().join("bad-packed");
    refused(&compress(&bad_model, &out_dir), SHARDS[2]);
    assert!(!out_dir.exists());

    // A packed shard with a flipped byte in its data: the run fails naming
    // it, and no directory appears under the output's name.
    let packed = tmp.path().join("packed");
    assert_success(&compress(&model, &packed));
    let victim = packed.join("model-00002-of-00003.padic");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x5a;
    std::fs::write(&victim, bytes).unwrap();
    let restored = tmp.path().join("restored");
    refused(
        &decompress(&packed, &restored, &[]),
        "model-00002-of-00003.padic",
    );
    assert!(!restored.exists());
    assert_no_temp_files(tmp.path());
    // Decoding to /dev/null checks every shard: the damage is found there too.
    refused(
        &decompress(&packed, Path::new("/dev/null"), &[]),
        "model-00002-of-00003.padic",
    );
}

#[test]
fn a_directory_decoded_to_dev_null_is_checked_and_kept_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, ckpt, containers) = opened_model(tmp.path());
    let packed = tmp.path().join("packed");
    assert_eq!(ckpt.shards().len(), 3);
    let stats = tmp.path().join("stats.json");
    let out = decompress(
        &packed,
        Path::new("/dev/null"),
        &["--stats-json", stats.to_str().unwrap()],
    );
    assert_success(&out);
    // Every chunk of every shard decoded, every original byte accounted for.
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let chunks: u64 = containers
        .iter()
        .map(|c| c.header().chunk_count() as u64)
        .sum();
    assert_eq!(s["total_decompressions"].as_u64(), Some(chunks), "{s}");
    let data: u64 = containers.iter().map(|c| c.header().data_len).sum();
    assert_eq!(s["bytes_out"].as_u64(), Some(data), "{s}");
    // Nothing written beside the input or the model.
    assert_eq!(files(&packed).len(), files(&model).len());
    assert_no_temp_files(tmp.path());
}

/// A Hugging Face cache's snapshot: every file a symlink into `blobs`.
#[test]
fn a_snapshot_of_symlinks_and_empty_folders_comes_back_as_plain_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let blobs = tmp.path().join("blobs");
    let snapshot = tmp.path().join("snapshot");
    std::fs::rename(&model, &blobs).unwrap();
    std::fs::create_dir_all(snapshot.join("tokenizer")).unwrap();
    for (rel, _) in files(&blobs) {
        std::os::unix::fs::symlink(blobs.join(&rel), snapshot.join(&rel)).unwrap();
    }
    std::fs::create_dir_all(snapshot.join("2_Normalize")).unwrap();
    let packed = tmp.path().join("packed");
    assert_success(&compress(&snapshot, &packed));
    assert!(packed.join("2_Normalize").is_dir());
    let restored = tmp.path().join("restored");
    let out = decompress(&packed, &restored, &[]);
    assert_success(&out);
    assert_eq!(files(&restored), files(&blobs));
    assert!(restored.join("2_Normalize").is_dir());
    assert!(!std::fs::symlink_metadata(restored.join("config.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restored: 3 shards, "), "{err}");
}

/// The real all-MiniLM-L6-v2 directory (a symlink to the package's folder):
/// every file back byte-identical, subfolder included.
#[test]
fn a_real_model_directory_round_trips_byte_identical() {
    let Some(model) = real_model_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("packed");
    assert_success(&compress(&model, &packed));
    let names: Vec<String> = files(&packed)
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(names.contains(&"model.padic".to_string()), "{names:?}");
    assert!(
        names.contains(&"1_Pooling/config.json".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".safetensors")),
        "{names:?}"
    );
    let restored = tmp.path().join("restored");
    assert_success(&decompress(&packed, &restored, &[]));
    assert!(files(&restored) == files(&model));
    assert_no_temp_files(tmp.path());
}

#[test]
fn a_symlink_loop_or_a_fifo_in_the_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    std::os::unix::fs::symlink("..", model.join("tokenizer/up")).unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        "a symlink loop: this directory is",
    );
    std::fs::remove_file(model.join("tokenizer/up")).unwrap();
    // A file symlink loop, and a symlink to nothing: exit 2 naming the link
    // (a loop was exit 1, "Too many levels of symbolic links").
    std::os::unix::fs::symlink("b", model.join("a")).unwrap();
    std::os::unix::fs::symlink("a", model.join("b")).unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        ": a symlink loop",
    );
    std::fs::remove_file(model.join("b")).unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        "a: a symlink to b, which does not exist",
    );
    std::fs::remove_file(model.join("a")).unwrap();
    mkfifo(&model.join("events"));
    refused(
        &compress(&model, &tmp.path().join("out")),
        "events: neither a regular file nor a directory",
    );
    assert!(!tmp.path().join("out").exists());
    assert_no_temp_files(tmp.path());
}

#[test]
fn a_directory_with_no_shard_or_a_bad_index_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("config.json"), b"{}").unwrap();
    refused(
        &compress(&empty, &tmp.path().join("out")),
        "holds no `*.safetensors` shard",
    );
    let model = model_dir(tmp.path());
    std::fs::write(
        model.join("model.safetensors.index.json"),
        b"{\"weight_map\": 3}",
    )
    .unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        "no `weight_map` object",
    );
    assert!(!tmp.path().join("out").exists());
    // `plan` checks a directory as `decompress` does: one with no packed
    // shard, or a bad index, is refused.
    let trace = tmp.path().join("t.csv");
    std::fs::write(&trace, "t_ms,used_mb,total_mb\n0,1,2\n").unwrap();
    let plan = |dir: &Path| {
        run(&[
            "plan".as_ref(),
            dir.as_os_str(),
            "--pressure-trace".as_ref(),
            trace.as_os_str(),
        ])
    };
    refused(&plan(&empty), "holds no `*.padic` shard");
    refused(&plan(&model), "no `weight_map` object");
    // A byte that is not UTF-8 is a bad index (it was exit 1, an I/O error).
    std::fs::write(
        model.join("model.safetensors.index.json"),
        b"{\"weight_map\": {\"a\": \"m\xe9.safetensors\"}}",
    )
    .unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        "not a JSON index",
    );
    refused(&plan(&model), "not a JSON index");
    // A shard that is a container already is named as one (it was "header
    // too large").
    std::fs::remove_file(model.join("model.safetensors.index.json")).unwrap();
    let shard = model.join(SHARDS[0]);
    let packed = tmp.path().join("one.padic");
    assert!(compress(&shard, &packed).status.success());
    std::fs::copy(&packed, &shard).unwrap();
    refused(
        &compress(&model, &tmp.path().join("out")),
        "is a padic-burst container already",
    );
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn a_file_that_takes_a_shards_output_name_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, packed) = packed_model(tmp.path());
    // A stale container beside its shard: compressing would write
    // model-00002-of-00003.padic twice (the copy won, the shard was lost).
    std::fs::write(model.join("model-00002-of-00003.padic"), b"stale").unwrap();
    let again = tmp.path().join("again");
    refused(
        &compress(&model, &again),
        "model-00002-of-00003.padic: model-00002-of-00003.safetensors compressed takes this name too",
    );
    assert!(!again.exists());
    // A directory of that name (it failed with "File exists", exit 1, after
    // compressing the shards before it).
    std::fs::remove_file(model.join("model-00002-of-00003.padic")).unwrap();
    std::fs::create_dir_all(model.join("model-00002-of-00003.padic/notes")).unwrap();
    refused(
        &compress(&model, &again),
        "model-00002-of-00003.padic: model-00002-of-00003.safetensors compressed takes this name too",
    );
    assert!(!again.exists());
    // A stray safetensors file in a packed directory, the same way back.
    std::fs::write(packed.join("model-00001-of-00003.safetensors"), b"junk").unwrap();
    let restored = tmp.path().join("restored");
    refused(
        &decompress(&packed, &restored, &[]),
        "model-00001-of-00003.safetensors: model-00001-of-00003.padic decoded takes this name too",
    );
    assert!(!restored.exists());
    assert_no_temp_files(tmp.path());
}

#[test]
fn an_index_naming_a_file_outside_its_directory_or_not_a_shard_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    std::fs::write(tmp.path().join("outside.safetensors"), b"x").unwrap();
    let index = model.join("model.safetensors.index.json");
    let outside = tmp.path().join("outside.safetensors");
    // `./model-00001-of-00003.safetensors` is the shard itself (transformers
    // takes it); it was refused as outside the folder.
    let json = serde_json::json!({"weight_map": {"w": format!("./{}", SHARDS[0])}});
    std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
    assert_success(&compress(&model, &tmp.path().join("dot")));
    for (name, said) in [
        (
            "../outside.safetensors",
            "which is not a file inside the index's directory",
        ),
        (
            outside.to_str().unwrap(),
            "which is not a file inside the index's directory",
        ),
        ("config.json", "which is not a `.safetensors` file"),
    ] {
        let json = serde_json::json!({"weight_map": {"w": name}});
        std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
        refused(
            &compress(&model, &tmp.path().join("out")),
            &format!("names shard '{name}', {said}"),
        );
    }
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn a_side_output_inside_a_model_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, packed) = packed_model(tmp.path());
    let before = files(&packed);
    let restored = tmp.path().join("restored");
    let shard = packed.join("model-00001-of-00003.padic");
    let inside_out = restored.join("stats.json");
    for (path, said) in [
        (&shard, "inside the input"),
        (&packed.join("stats.json"), "inside the input"),
        (&inside_out, "inside -o"),
    ] {
        refused(
            &decompress(
                &packed,
                &restored,
                &["--stats-json", path.to_str().unwrap()],
            ),
            said,
        );
    }
    assert_eq!(files(&packed), before, "the packed directory is untouched");
    assert!(!restored.exists());
}

#[test]
fn an_output_that_is_a_symlink_to_an_empty_directory_is_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    // It failed with "Not a directory" (exit 1).
    assert_success(&compress(&model, &link));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        empty.join("config.json").is_file()
            && empty.join(SHARDS[0]).with_extension("padic").is_file()
    );
    let restored = tmp.path().join("restored");
    assert_success(&decompress(&link, &restored, &[]));
    assert_eq!(files(&restored), files(&model));
}

#[test]
fn a_model_loads_the_shards_its_index_names_and_refuses_a_name_in_two() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, packed) = packed_model(tmp.path());
    let names = |shards: &[(PathBuf, std::sync::Arc<padic_burst::format::Container>)]| {
        shards
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
    };
    // A consolidated copy beside the shards, which the index does not name.
    std::fs::copy(
        packed.join("model-00002-of-00003.padic"),
        packed.join("consolidated.padic"),
    )
    .unwrap();
    let shards = padic_burst::checkpoint::open_model(&packed).unwrap();
    assert_eq!(
        names(&shards),
        SHARDS.map(|s| s.replace(".safetensors", ".padic")).to_vec()
    );
    let by_index =
        padic_burst::checkpoint::open_model(&packed.join("model.safetensors.index.json")).unwrap();
    assert_eq!(names(&by_index), names(&shards));
    // Without the index every shard is read, and the name in two is refused.
    std::fs::remove_file(packed.join("model.safetensors.index.json")).unwrap();
    let err = padic_burst::checkpoint::open_model(&packed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("' is in two shards, consolidated.padic and model-00002-of-00003.padic"),
        "{err}"
    );
}

#[test]
fn an_output_directory_inside_the_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let before = files(&model);
    refused(&compress(&model, &model.join("packed")), "inside the input");
    refused(&compress(&model, &model), "inside the input");
    assert_eq!(files(&model), before, "the model directory is untouched");
    let packed = tmp.path().join("packed");
    assert_success(&compress(&model, &packed));
    refused(
        &decompress(&packed, &packed.join("restored"), &[]),
        "inside the input",
    );
}

/// The real MiniLM weights of `dtype` split into three shards (tensors in
/// name order, cut in thirds) with an index and a config: a Hugging Face
/// style directory under `root`; `None` as [`real_weights`].
fn minilm_shards(root: &Path, dtype: &str) -> Option<PathBuf> {
    let bytes = std::fs::read(real_weights(dtype)?).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let dir = root.join("minilm");
    std::fs::create_dir_all(&dir).unwrap();
    let mut weight_map = serde_json::Map::new();
    let per = tensors.len().div_ceil(3);
    for (i, group) in tensors.chunks(per).enumerate() {
        let shard = format!("model-{:05}-of-00003.safetensors", i + 1);
        let list: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = group
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        std::fs::write(dir.join(&shard), safetensors_bytes(&list)).unwrap();
        for (n, _) in group {
            weight_map.insert(n.clone(), shard.clone().into());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\": \"bert\"}\n").unwrap();
    Some(dir)
}

/// The placement log's rows: (chunk, route, bytes, shard).
fn placement_rows(log: &Path) -> Vec<(usize, String, u64, usize)> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let (chunk, route, bytes, shard) = (col("chunk"), col("route"), col("bytes"), col("shard"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[chunk].parse().unwrap(),
                f[route].to_string(),
                f[bytes].parse().unwrap(),
                f[shard].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_sharded_minilm_decodes_in_one_run_that_plan_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = minilm_shards(tmp.path(), "bf16") else {
        return;
    };
    let packed = tmp.path().join("packed");
    assert_success(&run(&[
        "compress".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        packed.as_os_str(),
        "--chunk-kib".as_ref(),
        "256".as_ref(),
    ]));
    // Each shard's chunk count, in index order.
    let out = run(&["inspect".as_ref(), packed.as_os_str(), "--json".as_ref()]);
    assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shard_chunks: Vec<usize> = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let per_tensor: u64 = s["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["chunks"].as_u64().unwrap())
                .sum();
            assert_eq!(s["chunks"].as_u64().unwrap(), per_tensor);
            per_tensor as usize
        })
        .collect();
    assert_eq!(shard_chunks.len(), 3);
    let total: usize = shard_chunks.iter().sum();
    assert_eq!(r["chunks"].as_u64().unwrap() as usize, total);
    assert_eq!(
        r["shards"][2]["first_chunk"].as_u64().unwrap() as usize,
        shard_chunks[0] + shard_chunks[1]
    );

    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/traces/rise-and-fall.csv");
    let restored = tmp.path().join("restored");
    let (log, stats, svg, hgrm) = (
        tmp.path().join("log.csv"),
        tmp.path().join("stats.json"),
        tmp.path().join("t.svg"),
        tmp.path().join("lat.hgrm"),
    );
    let replay = [
        "--pressure-trace",
        trace.to_str().unwrap(),
        "--replay-step-ms",
        "auto",
    ];
    let mut extra = vec![
        "--placement-log",
        log.to_str().unwrap(),
        "--stats-json",
        stats.to_str().unwrap(),
        "--timeline",
        svg.to_str().unwrap(),
        "--histogram-out",
        hgrm.to_str().unwrap(),
    ];
    extra.extend(replay);
    let out = decompress(&packed, &restored, &extra);
    assert_success(&out);
    assert_eq!(files(&restored), files(&model), "byte-identical");
    assert_no_temp_files(tmp.path());

    // One run over every shard: global numbering runs on across the shards
    // in index order, and every chunk is in the one log.
    let rows = placement_rows(&log);
    let mut by_chunk = std::collections::BTreeMap::new();
    for (chunk, route, _, shard) in &rows {
        by_chunk.insert(*chunk, (route.clone(), *shard));
    }
    assert_eq!(by_chunk.len(), total);
    assert_eq!(*by_chunk.keys().last().unwrap(), total - 1);
    let mut first = 0;
    for (shard, n) in shard_chunks.iter().enumerate() {
        for k in first..first + n {
            assert_eq!(by_chunk[&k].1, shard, "chunk {k} belongs to shard {shard}");
        }
        first += n;
    }

    // The statistics: the run's totals are the shards' sums.
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let shards = s["shards"].as_array().unwrap();
    assert_eq!(shards[2]["shard"], "model-00003-of-00003.padic");
    assert_eq!(
        shards[1]["first_chunk"].as_u64().unwrap() as usize,
        shard_chunks[0]
    );
    for key in [
        "total_decompressions",
        "gpu_decompressions",
        "cpu_decompressions",
        "hybrid_decompressions",
        "routed_gpu",
        "routed_cpu",
        "routed_hybrid",
        "bytes_in",
        "bytes_out",
    ] {
        let sum: u64 = shards.iter().map(|x| x[key].as_u64().unwrap()).sum();
        assert_eq!(s[key].as_u64().unwrap(), sum, "{key}");
    }
    assert_eq!(s["total_decompressions"].as_u64().unwrap() as usize, total);
    let logged: u64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(s["bytes_out"].as_u64().unwrap(), logged);
    let timeline = std::fs::read_to_string(&svg).unwrap();
    assert!(
        timeline.contains(&format!("{total} chunks")),
        "the timeline covers the model"
    );
    assert!(
        timeline.contains("(3 shards)"),
        "the timeline names the directory"
    );
    assert!(
        ["cpu", "gpu", "hybrid"]
            .iter()
            .any(|r| tmp.path().join(format!("lat.{r}.hgrm")).exists()),
        "a latency histogram was written"
    );

    // plan on the directory: the same chunks in the same order, and the
    // routes the run took, chunk by chunk.
    let mut args: Vec<&std::ffi::OsStr> = vec!["plan".as_ref(), packed.as_os_str()];
    args.extend(replay.iter().map(std::ffi::OsStr::new));
    let out = run(&args);
    assert_success(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, lines) = lines.split_last().unwrap();
    assert_eq!(summary["chunks"].as_u64().unwrap() as usize, total);
    assert_eq!(lines.len(), total);
    let mut routes = std::collections::BTreeSet::new();
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(l["chunk"].as_u64().unwrap() as usize, k);
        let (route, shard) = &by_chunk[&k];
        assert_eq!(l["route"], route.as_str(), "chunk {k}: plan and run differ");
        let name = format!("model-{:05}-of-00003.padic", shard + 1);
        assert_eq!(l["shard"], name.as_str(), "chunk {k}");
        routes.insert(route.clone());
    }
    assert!(routes.len() > 1, "the trace switches routes: {routes:?}");
}

#[test]
fn the_library_decodes_a_packed_directory_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, ckpt, containers) = opened_model(tmp.path());
    let pipeline = padic_burst::pipeline::Pipeline::with_mode(
        padic_burst::config::Config::default(),
        padic_burst::policy::Mode::CpuOnly,
    );
    let (regions, info) = pipeline.decompress_models(&containers, None).unwrap();
    assert_eq!(regions.len(), 3);
    for (region, shard) in regions.iter().zip(SHARDS) {
        let original = std::fs::read(model.join(shard)).unwrap();
        assert!(region == data_region(&original), "{shard} differs");
    }
    let s = pipeline.statistics().unwrap();
    assert_eq!(
        s.chunks.total_decompressions as usize,
        ckpt.chunk_count(),
        "one run over all shards"
    );
    assert_eq!(info.cpu_chunks as usize, ckpt.chunk_count());
}

#[test]
fn selected_tensors_decode_in_one_run_and_other_shards_get_no_region() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _, containers) = opened_model(tmp.path());
    let pipeline = padic_burst::pipeline::Pipeline::new(padic_burst::config::Config::default());
    // The first tensor of the first and of the last shard.
    let wanted = [(0, 0), (2, 0)];
    let (regions, _) = pipeline
        .decompress_selected(&containers, &wanted, None)
        .unwrap();
    assert_eq!(regions.len(), 3);
    assert!(regions[1].is_empty(), "a shard with no tensor asked for");
    for &(s, t) in &wanted {
        let h = containers[s].header();
        assert_eq!(regions[s].len(), h.data_len as usize);
        let e = &h.tensors[t];
        let original = std::fs::read(model.join(SHARDS[s])).unwrap();
        let range = e.data_offset as usize..(e.data_offset + e.byte_len) as usize;
        assert!(
            regions[s][range.clone()] == data_region(&original)[range],
            "{}",
            e.name
        );
    }
    let s = pipeline.statistics().unwrap();
    let chunks: usize = wanted
        .iter()
        .map(|&(s, t)| {
            let h = containers[s].header();
            h.tensors[h.chunk_owner(t)].chunks.len()
        })
        .sum();
    assert_eq!(
        s.chunks.total_decompressions as usize, chunks,
        "one run for both"
    );
}

/// `decompress input -o output(p)` as process `p` of a two-process loopback
/// cluster, both at once; their outputs, in process order.
fn cluster_decompress(
    input: &Path,
    output: impl Fn(usize) -> PathBuf,
    hosts: &Path,
) -> Vec<Output> {
    let children: Vec<_> = (0..2)
        .map(|p| {
            bin()
                .env("PADIC_CLUSTER_CONNECT_TIMEOUT_S", "20")
                .arg("decompress")
                .arg(input)
                .arg("-o")
                .arg(output(p))
                .args(["--", "-n", "2", "-p", &p.to_string(), "-w", "1", "-h"])
                .arg(hosts)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn a_directory_decodes_in_a_two_process_cluster_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, packed) = packed_model(tmp.path());
    let (hosts, _) = loopback_hosts(tmp.path());
    let restored = tmp.path().join("restored");
    for (p, out) in cluster_decompress(&packed, |_| restored.clone(), &hosts)
        .iter()
        .enumerate()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "process {p}: {err}");
    }
    // Every shard, each written by both processes, and every other file.
    assert!(
        files(&restored) == files(&model),
        "the restored directory differs"
    );
    assert_no_temp_files(tmp.path());
}

#[test]
fn a_cluster_naming_two_output_directories_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, packed) = packed_model(tmp.path());
    let (hosts, _) = loopback_hosts(tmp.path());
    let dirs = [tmp.path().join("one"), tmp.path().join("two")];
    for out in cluster_decompress(&packed, |p| dirs[p].clone(), &hosts) {
        refused(&out, "cluster processes disagree");
        refused(&out, "output path");
    }
    assert!(!dirs[0].exists() && !dirs[1].exists());
    assert_no_temp_files(tmp.path());
}

#[test]
fn a_packed_directory_streams_its_one_run_with_stats_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, packed) = packed_model(tmp.path());
    let restored = tmp.path().join("restored");
    let stream = tmp.path().join("stream.jsonl");
    let stats = tmp.path().join("stats.json");
    let out = decompress(
        &packed,
        &restored,
        &[
            "--stats-interval",
            "0.01",
            "--stats-stream",
            stream.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    assert_success(&out);
    assert_eq!(files(&restored), files(&model));
    let text = std::fs::read_to_string(&stream).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One run over every shard: the last line counts all their chunks, and
    // no line counts fewer than the one before it.
    let total = |v: &serde_json::Value| v["total_decompressions"].as_u64().unwrap();
    let chunks: u64 = padic_burst::checkpoint::PackedCheckpoint::open(&packed)
        .unwrap()
        .chunk_count() as u64;
    assert_eq!(total(lines.last().unwrap()), chunks, "{text}");
    assert!(
        lines.windows(2).all(|w| total(&w[0]) <= total(&w[1])),
        "{text}"
    );
    // The last line is the run's final statistics, as `--stats-json` writes
    // them: the shards' counts and the whole directory's time included.
    let final_stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert!(final_stats.get("shards").is_some(), "{final_stats}");
    assert_eq!(lines.last().unwrap(), &final_stats, "{text}");
}
