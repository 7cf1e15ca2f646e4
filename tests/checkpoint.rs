//! Sharded checkpoints through the command line: a model directory (or its
//! index) compresses to one `.padic` per shard plus the other files, and
//! comes back byte-identical; bad input is refused before any work, with
//! exit code 2, and never leaves a directory under the output's name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use safetensors::Dtype;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_padic-burst"))
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    ok(&compress(&model, &packed));
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
    ok(&out);
    assert_eq!(files(&restored), files(&model));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(s["shards"].as_array().unwrap().len(), 3);
    let per_shard: u64 = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["statistics"]["total_decompressions"].as_u64().unwrap())
        .sum();
    assert_eq!(s["total_decompressions"].as_u64().unwrap(), per_shard);
    assert!(per_shard >= 6, "every shard has at least two chunks");
    let data: u64 = SHARDS
        .iter()
        .map(|f| data_region(&std::fs::read(model.join(f)).unwrap()).len() as u64)
        .sum();
    assert_eq!(s["bytes_out"].as_u64().unwrap(), data);
    assert_no_temp_files(tmp.path());

    // inspect DIR: per shard, and totals that add them up.
    let out = run(&["inspect".as_ref(), packed.as_os_str(), "--json".as_ref()]);
    ok(&out);
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
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shard model-00003-of-00003.padic"), "{text}");
    assert!(
        text.contains("checkpoint total: 3 shards, 6 tensors"),
        "{text}"
    );
}

#[test]
fn the_index_json_stands_for_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    ok(&compress(
        &model.join("model.safetensors.index.json"),
        &packed,
    ));
    let restored = tmp.path().join("restored");
    ok(&decompress(
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
    ok(&compress(&model, &packed));
    assert!(packed.join("model-00002-of-00003.padic").is_file());
}

#[test]
fn a_missing_shard_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let packed = tmp.path().join("packed");
    ok(&compress(&model, &packed));
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
    ok(&compress(&model, &packed));
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
    // Flags a directory does not take yet say so.
    let out = run(&[
        "plan".as_ref(),
        model.as_os_str(),
        "--pressure-trace".as_ref(),
        "x.csv".as_ref(),
    ]);
    refused(&out, "plan each shard");
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
    ok(&compress(&model, &packed));
    refused(
        &decompress(&packed, &packed.join("restored"), &[]),
        "inside the input",
    );
}
