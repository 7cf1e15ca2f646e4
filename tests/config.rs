//! Configuration: layer precedence and validation, each rule naming the field,
//! the value and what is allowed.

mod common;

use padic_burst::config::{Config, ConfigLayer};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.gpu_memory_threshold_mb, 100.0);
    assert_eq!(c.memory_pressure_threshold, 0.9);
    assert_eq!(c.hysteresis_factor, 0.1);
    assert_eq!(c.switch_delay_ms, 50);
    assert_eq!(c.sample_interval_ms, 100);
    assert_eq!(c.hybrid_initial_gpu_fraction, 0.5);
    assert_eq!(c.gpu_batch_chunks, 64);
    assert_eq!(
        c.num_cpu_workers,
        std::thread::available_parallelism().unwrap().get()
    );
}

#[test]
fn layers_apply_defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "gpu_memory_threshold_mb = 300\nmemory_pressure_threshold = 0.8\nswitch_delay_ms = 7\nnum_cpu_workers = 1\n").unwrap();
    let from_file = ConfigLayer::from_file(&file).unwrap();
    let env = ConfigLayer::from_vars(vars(&[
        ("SARAPHIS_GPU_THRESHOLD_MB", "200"),
        ("SARAPHIS_ENABLE_CPU_CACHE", "0"),
    ]))
    .unwrap();
    let flags = ConfigLayer {
        gpu_memory_threshold_mb: Some(150.0),
        ..ConfigLayer::default()
    };
    let c = ConfigLayer::default()
        .over(from_file.clone())
        .over(env.clone())
        .over(flags)
        .resolve()
        .unwrap();
    assert_eq!(c.gpu_memory_threshold_mb, 150.0, "flags win");
    assert_eq!(
        c.memory_pressure_threshold, 0.8,
        "the file sets what nothing later does"
    );
    assert_eq!(c.switch_delay_ms, 7);
    assert_eq!(c.num_cpu_workers, 1);
    assert!(!c.enable_caching, "the environment turns the cache off");
    let c = ConfigLayer::default()
        .over(from_file)
        .over(env)
        .resolve()
        .unwrap();
    assert_eq!(
        c.gpu_memory_threshold_mb, 200.0,
        "the environment beats the file"
    );
}

#[test]
fn every_invalid_value_is_refused_with_field_value_and_range() {
    let cases: Vec<(ConfigLayer, &str)> = vec![
        (
            ConfigLayer {
                gpu_memory_threshold_mb: Some(0.0),
                ..Default::default()
            },
            "gpu_memory_threshold_mb = 0",
        ),
        (
            ConfigLayer {
                gpu_memory_threshold_mb: Some(-5.0),
                ..Default::default()
            },
            "gpu_memory_threshold_mb = -5",
        ),
        (
            ConfigLayer {
                memory_pressure_threshold: Some(0.0),
                ..Default::default()
            },
            "memory_pressure_threshold = 0: must lie in (0, 1]",
        ),
        (
            ConfigLayer {
                memory_pressure_threshold: Some(1.5),
                ..Default::default()
            },
            "memory_pressure_threshold = 1.5",
        ),
        (
            ConfigLayer {
                num_cpu_workers: Some(0),
                ..Default::default()
            },
            "num_cpu_workers = 0",
        ),
        (
            ConfigLayer {
                num_cpu_workers: Some(-2),
                ..Default::default()
            },
            "num_cpu_workers = -2",
        ),
        (
            ConfigLayer {
                cpu_batch_size: Some(0),
                ..Default::default()
            },
            "cpu_batch_size = 0",
        ),
        (
            ConfigLayer {
                hysteresis_factor: Some(-0.1),
                ..Default::default()
            },
            "hysteresis_factor = -0.1",
        ),
        (
            ConfigLayer {
                hysteresis_factor: Some(0.9),
                ..Default::default()
            },
            "hysteresis_factor = 0.9: must lie in [0, memory_pressure_threshold = 0.9)",
        ),
        (
            // The threshold alone, under the default band: the message says
            // the 0.1 came from the defaults.
            ConfigLayer {
                memory_pressure_threshold: Some(0.05),
                ..Default::default()
            },
            "hysteresis_factor = 0.1: must lie in [0, memory_pressure_threshold = 0.05) (0.1 is its default: set it lower too)",
        ),
        (
            ConfigLayer {
                prefetch_factor: Some(0),
                ..Default::default()
            },
            "prefetch_factor = 0",
        ),
        (
            ConfigLayer {
                gpu_batch_chunks: Some(0),
                ..Default::default()
            },
            "gpu_batch_chunks = 0: must lie in 1..=4096",
        ),
        (
            ConfigLayer {
                cache_size_mb: Some(0.0),
                enable_caching: Some(true),
                ..Default::default()
            },
            "cache_size_mb = 0",
        ),
        (
            ConfigLayer {
                hybrid_initial_gpu_fraction: Some(1.2),
                ..Default::default()
            },
            "hybrid_initial_gpu_fraction = 1.2",
        ),
        (
            ConfigLayer {
                sample_interval_ms: Some(0),
                ..Default::default()
            },
            "sample_interval_ms = 0",
        ),
        (
            ConfigLayer {
                cpu_affinity: Some(vec![0, 4096]),
                ..Default::default()
            },
            "core 4096 does not exist",
        ),
    ];
    for (layer, want) in cases {
        let err = layer.resolve().unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
    // Cache size 0 is fine with caching off.
    assert!(ConfigLayer {
        cache_size_mb: Some(0.0),
        enable_caching: Some(false),
        ..Default::default()
    }
    .resolve()
    .is_ok());
}

#[test]
fn unknown_keys_and_malformed_environment_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "gpu_memory_threshold_mb = 100\nturbo_mode = true\n").unwrap();
    let err = ConfigLayer::from_file(&file).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("turbo_mode"),
        "{err}"
    );
    std::fs::write(&file, "memory_pressure_threshold = \"high\"\n").unwrap();
    assert!(ConfigLayer::from_file(&file)
        .unwrap_err()
        .to_string()
        .contains("bad.toml"));
    for (k, v) in [
        ("SARAPHIS_CPU_WORKERS", "eight"),
        ("SARAPHIS_GPU_THRESHOLD_MB", "lots"),
        ("SARAPHIS_MEMORY_PRESSURE", "0.9x"),
        ("SARAPHIS_ENABLE_CPU_CACHE", "maybe"),
    ] {
        let err = ConfigLayer::from_vars(vars(&[(k, v)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(k) && err.contains(v), "{err}");
    }
    // Well-formed values parse.
    let l = ConfigLayer::from_vars(vars(&[
        ("SARAPHIS_CPU_WORKERS", "2"),
        ("SARAPHIS_MEMORY_PRESSURE", "0.85"),
        ("SARAPHIS_ENABLE_CPU_CACHE", "yes"),
    ]))
    .unwrap();
    assert_eq!(
        (
            l.num_cpu_workers,
            l.memory_pressure_threshold,
            l.enable_caching
        ),
        (Some(2), Some(0.85), Some(true))
    );
}

#[test]
fn plan_reads_the_config_file_and_the_environment() {
    use padic_burst::compress::CompressOptions;
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..2048u32)
        .flat_map(|i| (i as f32 * 0.001).to_le_bytes())
        .collect();
    let views = vec![(
        "w".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2048], &bytes).unwrap(),
    )];
    let input = dir.path().join("m.safetensors");
    std::fs::write(&input, safetensors::serialize(views, None).unwrap()).unwrap();
    let packed = dir.path().join("m.padic");
    padic_burst::compress::compress_file(
        &input,
        &packed,
        &CompressOptions {
            chunk_kib: 4,
            ..Default::default()
        },
        &padic_burst::progress::Progress::hidden(),
    )
    .unwrap();
    let trace = dir.path().join("t.csv");
    std::fs::write(&trace, "t_ms,used_mb,total_mb\n0,850,1000\n").unwrap();
    let plan = |cfg: Option<&str>, env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"));
        cmd.arg("plan")
            .arg(&packed)
            .arg("--pressure-trace")
            .arg(&trace);
        cmd.env_remove("SARAPHIS_MEMORY_PRESSURE")
            .env_remove("SARAPHIS_GPU_THRESHOLD_MB");
        if let Some(text) = cfg {
            let f = dir.path().join("c.toml");
            std::fs::write(&f, text).unwrap();
            cmd.arg("--config").arg(f);
        }
        if let Some(v) = env {
            cmd.env("SARAPHIS_MEMORY_PRESSURE", v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // u = 0.85: GPU at the default 0.9, CPU with the file's 0.8, GPU again with the environment's 0.95.
    assert!(plan(None, None).1.contains("\"route\":\"gpu\""));
    assert!(plan(Some("memory_pressure_threshold = 0.8\n"), None)
        .1
        .contains("\"route\":\"cpu\""));
    assert!(
        plan(Some("memory_pressure_threshold = 0.8\n"), Some("0.95"))
            .1
            .contains("\"route\":\"gpu\"")
    );
    let (code, _, err) = plan(
        Some("memory_pressure_threshold = 0.8\nhysteresis_factor = 0.85\n"),
        None,
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("hysteresis_factor = 0.85"), "{err}");
}

#[test]
fn workers_batch_and_prefetch_have_upper_bounds_named_in_the_error() {
    use padic_burst::config::{
        max_workers, MAX_CPU_BATCH_SIZE, MAX_PREFETCH_FACTOR, MAX_WORKERS_PER_CORE,
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(MAX_WORKERS_PER_CORE, 8);
    assert_eq!(max_workers(), 8 * cores, "eight workers a core");
    let most = max_workers() as i64;
    let at_limit = ConfigLayer {
        num_cpu_workers: Some(most),
        cpu_batch_size: Some(MAX_CPU_BATCH_SIZE as i64),
        prefetch_factor: Some(MAX_PREFETCH_FACTOR as i64),
        ..ConfigLayer::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(at_limit.num_cpu_workers, most as usize);
    assert_eq!(at_limit.cpu_batch_size, MAX_CPU_BATCH_SIZE);
    assert_eq!(at_limit.prefetch_factor, MAX_PREFETCH_FACTOR);
    let cases = [
        (
            ConfigLayer {
                num_cpu_workers: Some(most + 1),
                ..ConfigLayer::default()
            },
            "num_cpu_workers",
            format!("1..={most}"),
        ),
        (
            ConfigLayer {
                num_cpu_workers: Some(100_000),
                ..ConfigLayer::default()
            },
            "num_cpu_workers",
            format!("1..={most}"),
        ),
        (
            ConfigLayer {
                cpu_batch_size: Some(MAX_CPU_BATCH_SIZE as i64 + 1),
                ..ConfigLayer::default()
            },
            "cpu_batch_size",
            format!("1..={MAX_CPU_BATCH_SIZE}"),
        ),
        (
            ConfigLayer {
                prefetch_factor: Some(MAX_PREFETCH_FACTOR as i64 + 1),
                ..ConfigLayer::default()
            },
            "prefetch_factor",
            format!("1..={MAX_PREFETCH_FACTOR}"),
        ),
    ];
    for (layer, field, range) in cases {
        let err = layer.resolve().unwrap_err().to_string();
        assert!(err.contains(field) && err.contains(&range), "{err}");
    }
}

#[test]
fn a_toml_error_names_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "gpu_memory_threshold_mb = 100\n\nmemory_pressure_threshold = \"high\"\n",
    )
    .unwrap();
    let err = ConfigLayer::from_file(&file).unwrap_err().to_string();
    assert!(err.contains("c.toml (line 3, column 29)"), "{err}");
}

#[test]
fn limits_on_their_boundaries_are_accepted() {
    let ok = |layer: ConfigLayer| {
        let what = format!("{layer:?}");
        layer
            .resolve()
            .unwrap_or_else(|e| panic!("{what} refused: {e}"))
    };
    let c = ok(ConfigLayer {
        memory_pressure_threshold: Some(1.0),
        hysteresis_factor: Some(0.0),
        switch_delay_ms: Some(0),
        num_cpu_workers: Some(1),
        cpu_affinity: Some(vec![0]),
        ..Default::default()
    });
    assert_eq!(c.memory_pressure_threshold, 1.0);
    assert_eq!(c.hysteresis_factor, 0.0);
    assert_eq!(c.switch_delay_ms, 0, "no delay between switches");
    assert_eq!(c.num_cpu_workers, 1);
    assert_eq!(c.cpu_affinity, Some(vec![0]));
}

#[test]
fn cache_size_is_never_negative_or_infinite_even_with_caching_off() {
    for size in [-5.0, f64::INFINITY, f64::NAN] {
        let err = ConfigLayer {
            cache_size_mb: Some(size),
            enable_caching: Some(false),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("cache_size_mb = {size}")), "{err}");
    }
    for threshold in [f64::INFINITY, f64::NAN] {
        let err = ConfigLayer {
            gpu_memory_threshold_mb: Some(threshold),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("gpu_memory_threshold_mb = {threshold}")),
            "{err}"
        );
    }
}

#[test]
fn a_negative_switch_delay_is_refused() {
    let err = ConfigLayer {
        switch_delay_ms: Some(-1),
        ..Default::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(err.contains("switch_delay_ms = -1"), "{err}");
}

#[test]
fn the_policy_gets_the_configured_settings() {
    let c = ConfigLayer {
        memory_pressure_threshold: Some(0.8),
        gpu_memory_threshold_mb: Some(250.0),
        hysteresis_factor: Some(0.2),
        switch_delay_ms: Some(9),
        hybrid_initial_gpu_fraction: Some(0.25),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        c.policy(),
        padic_burst::policy::PolicySettings {
            memory_pressure_threshold: 0.8,
            gpu_memory_threshold_mb: 250.0,
            hysteresis_factor: 0.2,
            switch_delay_ms: 9,
            hybrid_initial_gpu_fraction: 0.25,
        }
    );
}

#[test]
fn the_cluster_connect_timeout_comes_from_the_environment() {
    use std::time::Duration;
    let got = padic_burst::config::cluster_connect_timeout().unwrap();
    match std::env::var("PADIC_CLUSTER_CONNECT_TIMEOUT_S") {
        Err(_) => assert_eq!(got, Duration::from_secs(60), "the default"),
        Ok(v) => assert_eq!(got, Duration::from_secs_f64(v.trim().parse().unwrap())),
    }
}

/// A model of one F16 tensor and one BF16 tensor, compressed into `dir`.
fn f16_and_bf16_model(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    use safetensors::Dtype;
    common::gaussian_model(
        dir,
        "mixed",
        5,
        &[
            ("half", Dtype::F16, vec![4000], 0.1),
            ("brain", Dtype::BF16, vec![4000], 0.1),
        ],
        64,
    )
}

fn padic_burst() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"));
    c.env_remove("SARAPHIS_ENABLE_CPU_CACHE");
    c
}

#[test]
fn exponent_bits_is_a_check_of_the_weights_exponent_width() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (packed, file) = f16_and_bf16_model(dir.path());
    let c = Arc::new(padic_burst::format::Container::open(&packed).unwrap());
    let with = |bits: Option<i64>| {
        let config = ConfigLayer {
            exponent_bits: bits,
            num_cpu_workers: Some(1),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        padic_burst::pipeline::Pipeline::with_mode(config, padic_burst::policy::Mode::CpuOnly)
    };
    // Unset: any float type decodes.
    let (data, _) = with(None).decompress_model(&c, None).unwrap();
    assert!(data[..] == *common::data_region(&file));
    // 8 bits: the BF16 tensor alone decodes; the F16 one, and the whole
    // model, are refused, naming the tensor and both widths.
    let p = with(Some(8));
    assert!(p.decompress_tensor(&c, "brain", None).is_ok());
    for err in [
        p.decompress_tensor(&c, "half", None)
            .unwrap_err()
            .to_string(),
        p.decompress_model(&c, None).unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("exponent_bits = 8")
                && err.contains("tensor 'half' is F16, whose exponent has 5 bits")
                && err.contains("decoded whole"),
            "{err}"
        );
    }
    // 5 bits: the other way round.
    let p = with(Some(5));
    assert!(p.decompress_tensor(&c, "half", None).is_ok());
    let err = p
        .decompress_tensor(&c, "brain", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor 'brain' is BF16, whose exponent has 8 bits"),
        "{err}"
    );
}

#[test]
fn the_command_line_refuses_exponent_bits_that_the_weights_do_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = f16_and_bf16_model(dir.path());
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "exponent_bits = 8\n").unwrap();
    let out = dir.path().join("m.safetensors");
    let o = padic_burst()
        .arg("decompress")
        .arg(&packed)
        .arg("-o")
        .arg(&out)
        .arg("--config")
        .arg(&toml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("tensor 'half' is F16"), "{err}");
    assert!(!out.exists());
    common::assert_no_temp_files(dir.path());
}

#[test]
fn the_command_line_refuses_a_cache_it_would_never_use() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, file) = f16_and_bf16_model(dir.path());
    let out = dir.path().join("m.safetensors");
    let run = |toml: Option<&str>, env: Option<&str>| {
        let mut cmd = padic_burst();
        cmd.arg("decompress").arg(&packed).arg("-o").arg(&out);
        if let Some(text) = toml {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        if let Some(v) = env {
            cmd.env("SARAPHIS_ENABLE_CPU_CACHE", v);
        }
        let o = cmd.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for (toml, env, says) in [
        (
            Some("enable_caching = true\n"),
            None,
            "enable_caching = true (in ",
        ),
        (
            Some("cache_size_mb = 64\n"),
            None,
            "cache_size_mb = 64 (in ",
        ),
        (
            Some("enable_caching = false\ncache_size_mb = 64\n"),
            None,
            "cache_size_mb = 64 (in ",
        ),
        (
            None,
            Some("1"),
            "enable_caching = true (from SARAPHIS_ENABLE_CPU_CACHE)",
        ),
    ] {
        let (code, err) = run(toml, env);
        assert_eq!(code, Some(2), "{toml:?} {env:?}: {err}");
        for s in [
            says,
            "decodes every chunk once",
            "Pipeline::decompress_tensor",
            "safe_open(...).get_tensor",
        ] {
            assert!(err.contains(s), "{toml:?} {env:?}: no {s:?} in {err}");
        }
        assert!(!out.exists());
    }
    // Off, or unset: what the command line does anyway, and nothing is said.
    for (toml, env) in [
        (None, None),
        (Some("enable_caching = false\n"), None),
        (None, Some("0")),
    ] {
        let (code, err) = run(toml, env);
        assert_eq!(code, Some(0), "{toml:?} {env:?}: {err}");
        assert!(!err.contains("cach"), "{toml:?} {env:?}: {err}");
        assert!(std::fs::read(&out).unwrap() == file);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn the_library_still_caches_what_the_command_line_refuses() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (packed, _) = f16_and_bf16_model(dir.path());
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "enable_caching = true\ncache_size_mb = 64\n").unwrap();
    let refused = Config::load_for_command_line(Some(&toml), ConfigLayer::default());
    assert!(refused.is_err());
    let config = Config::load(Some(&toml), ConfigLayer::default()).unwrap();
    assert!(config.enable_caching && config.cache_size_mb == 64.0);
    let c = Arc::new(padic_burst::format::Container::open(&packed).unwrap());
    let p = padic_burst::pipeline::Pipeline::new(config);
    let a = p.decompress_tensor(&c, "half", None).unwrap();
    let b = p.decompress_tensor(&c, "half", None).unwrap();
    assert!(
        Arc::ptr_eq(&a.data, &b.data),
        "the second read is the cached tensor"
    );
}
