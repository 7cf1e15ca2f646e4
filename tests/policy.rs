//! The switching policy, rule by rule, on hand-written samples with the
//! expected decisions written out; and `plan`'s deterministic replay.

mod common;

use padic_burst::policy::{EngineState, Mode, Policy, PolicySettings, Route};
use padic_burst::pressure::Sample;

fn s(t_ms: u64, used_mb: f64, total_mb: f64) -> Option<Sample> {
    Some(Sample {
        t_ms,
        used_mb,
        total_mb,
    })
}

fn settings(t: f64, m: f64, h: f64, delay: u64) -> PolicySettings {
    PolicySettings {
        memory_pressure_threshold: t,
        gpu_memory_threshold_mb: m,
        hysteresis_factor: h,
        switch_delay_ms: delay,
        hybrid_initial_gpu_fraction: 0.5,
    }
}

fn routes(p: &mut Policy, steps: &[(u64, f64, f64)]) -> Vec<Route> {
    steps
        .iter()
        .map(|&(t, used, total)| p.decide(t, s(t, used, total)).route)
        .collect()
}

#[test]
fn gpu_state_leaves_above_the_threshold_not_at_it() {
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[(0, 500.0, 1000.0), (10, 900.0, 1000.0), (20, 901.0, 1000.0)],
    );
    assert_eq!(got, vec![Route::Gpu, Route::Gpu, Route::Cpu]);
    assert_eq!(p.mode_switches(), 1);
}

#[test]
fn gpu_state_leaves_when_free_memory_falls_below_m() {
    let mut p = Policy::new(settings(0.99, 100.0, 0.1, 0), Mode::Auto, true);
    // u = 0.9 < 0.99, but free = 100 is not below M; then free 95 is.
    let got = routes(&mut p, &[(0, 900.0, 1000.0), (10, 905.0, 1000.0)]);
    assert_eq!(got, vec![Route::Gpu, Route::Cpu]);
}

#[test]
fn cpu_state_returns_only_below_t_minus_h_with_twice_m_free() {
    let mut p = Policy::new(settings(0.9, 100.0, 0.1, 0), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[
            (0, 500.0, 1000.0),  // u 0.5: the GPU
            (5, 950.0, 1000.0),  // u 0.95 > 0.9: to CPU
            (10, 850.0, 1000.0), // u 0.85 < 0.9 but inside the band: stays
            (20, 800.0, 1000.0), // u 0.80, not below 0.80: stays
            (30, 795.0, 1000.0), // u 0.795 < 0.8 and free 205 > 200: back to GPU
        ],
    );
    assert_eq!(
        got,
        vec![Route::Gpu, Route::Cpu, Route::Cpu, Route::Cpu, Route::Gpu]
    );
    assert_eq!(p.mode_switches(), 2);

    // Below T - h but free not above 2 M: stays on the CPU.
    let mut p = Policy::new(settings(0.9, 150.0, 0.1, 0), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[
            (0, 500.0, 1000.0),
            (5, 950.0, 1000.0),
            (10, 750.0, 1000.0),
            (20, 690.0, 1000.0),
        ],
    );
    assert_eq!(got, vec![Route::Gpu, Route::Cpu, Route::Cpu, Route::Gpu]);
}

#[test]
fn no_switch_within_the_delay_and_the_first_is_free() {
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 50), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[
            (0, 100.0, 1000.0),  // the GPU
            (5, 950.0, 1000.0),  // first switch: free although 5 < 50
            (30, 100.0, 1000.0), // wants GPU, 25 ms after the switch: held
            (54, 100.0, 1000.0), // 49 ms: held
            (55, 100.0, 1000.0), // 50 ms: switches
            (60, 990.0, 1000.0), // wants CPU 5 ms later: held
            (105, 990.0, 1000.0),
        ],
    );
    assert_eq!(
        got,
        vec![
            Route::Gpu,
            Route::Cpu,
            Route::Cpu,
            Route::Cpu,
            Route::Gpu,
            Route::Gpu,
            Route::Cpu
        ]
    );
    assert_eq!(p.mode_switches(), 3);
}

/// A run that starts under pressure starts on the CPU: no chunk has moved,
/// so that is no switch, and the first switch after it is still free.
#[test]
fn a_first_sample_under_pressure_sets_the_starting_state_without_a_switch() {
    for mode in [Mode::Auto, Mode::Hybrid] {
        let mut p = Policy::new(settings(0.9, 10.0, 0.1, 50), mode, true);
        assert_eq!(p.decide(0, s(0, 950.0, 1000.0)).route, Route::Cpu);
        assert_eq!(p.decide(3, s(3, 960.0, 1000.0)).route, Route::Cpu);
        assert_eq!(p.mode_switches(), 0, "{mode:?}");
        assert_eq!(p.state(), EngineState::Cpu);
        // The first switch, 10 ms in, is not held by the delay.
        let back = p.decide(10, s(10, 100.0, 1000.0)).route;
        assert!(back.gpu_fraction() > 0.0, "{mode:?}: {back:?}");
        assert_eq!(p.mode_switches(), 1, "{mode:?}");
    }
    // A chunk routed before the first sample was on the GPU: leaving is a switch.
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 50), Mode::Auto, true);
    assert_eq!(p.decide(0, None).route, Route::Gpu);
    assert_eq!(p.decide(1, s(1, 950.0, 1000.0)).route, Route::Cpu);
    assert_eq!(p.mode_switches(), 1);
}

#[test]
fn pressure_events_count_rises_into_high_or_critical_and_ooms() {
    let mut p = Policy::new(settings(0.99, 1.0, 0.1, 0), Mode::Auto, true);
    for (t, u) in [
        (0, 0.3),
        (1, 0.8),
        (2, 0.85),
        (3, 0.95),
        (4, 0.96),
        (5, 0.6),
        (6, 0.76),
        (7, 0.2),
    ] {
        p.decide(t, s(t, u * 1000.0, 1000.0));
    }
    // low -> high (1), high -> critical (2), moderate -> high (3).
    assert_eq!(p.memory_pressure_events(), 3);
    p.record_oom();
    assert_eq!(p.memory_pressure_events(), 4);
    // A first sample already high counts (the level before it is low).
    let mut q = Policy::new(settings(0.99, 1.0, 0.1, 0), Mode::Auto, true);
    q.decide(0, s(0, 800.0, 1000.0));
    assert_eq!(q.memory_pressure_events(), 1);
}

#[test]
fn forced_modes_ignore_pressure_and_no_gpu_routes_to_the_cpu() {
    let steps = [(0, 999.0, 1000.0), (100, 1.0, 1000.0)];
    let mut g = Policy::new(PolicySettings::default(), Mode::GpuOnly, true);
    assert_eq!(routes(&mut g, &steps), vec![Route::Gpu, Route::Gpu]);
    let mut c = Policy::new(PolicySettings::default(), Mode::CpuOnly, true);
    assert_eq!(routes(&mut c, &steps), vec![Route::Cpu, Route::Cpu]);
    assert_eq!(c.mode_switches(), 0);
    for mode in [Mode::Auto, Mode::Hybrid, Mode::CpuOnly] {
        let mut p = Policy::new(PolicySettings::default(), mode, false);
        assert_eq!(
            p.decide(0, None).route,
            Route::Cpu,
            "{mode:?} without a GPU"
        );
        assert_eq!(p.state(), EngineState::Cpu);
    }
    // GPU_ONLY without a GPU still routes to the GPU: the executor fails it.
    let mut p = Policy::new(PolicySettings::default(), Mode::GpuOnly, false);
    assert_eq!(p.decide(0, None).route, Route::Gpu);
    // force_mode at run time.
    let mut p = Policy::new(PolicySettings::default(), Mode::Auto, true);
    assert_eq!(p.decide(0, s(0, 10.0, 1000.0)).route, Route::Gpu);
    p.force_mode(Mode::CpuOnly);
    assert_eq!(p.decide(1, s(1, 10.0, 1000.0)).route, Route::Cpu);
}

#[test]
fn hybrid_splits_by_measured_speed_and_drops_the_gpu_under_pressure() {
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Hybrid, true);
    assert_eq!(
        p.decide(0, s(0, 100.0, 1000.0)).route,
        Route::Hybrid { gpu_fraction: 0.5 }
    );
    p.observe(true, 3_000_000, 0.001); // 3 GB/s
    p.observe(false, 1_000_000, 0.001); // 1 GB/s
    assert_eq!(
        p.decide(1, s(1, 100.0, 1000.0)).route,
        Route::Hybrid { gpu_fraction: 0.75 }
    );
    // A slower GPU measurement moves the average by a fifth of the difference.
    p.observe(true, 1_000_000, 0.001);
    let f = p.decide(2, s(2, 100.0, 1000.0)).route.gpu_fraction();
    assert!((f - 2.6 / 3.6).abs() < 1e-12, "{f}");
    // Under pressure the AUTO rules are in CPU state: whole chunks go to the CPU.
    assert_eq!(p.decide(3, s(3, 950.0, 1000.0)).route, Route::Cpu);
    assert_eq!(p.mode_switches(), 1);
}

#[test]
fn plan_replays_a_trace_deterministically_with_the_written_decisions() {
    use padic_burst::compress::CompressOptions;
    use safetensors::Dtype;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = padic_burst::demo::Rng::new(8);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 6 * 1024, 0.05, Dtype::F32);
    let file = common::safetensors_bytes(&[("w", Dtype::F32, vec![6 * 1024], w)]);
    // 6 chunks of 4 KiB.
    let packed = common::compress_bytes(
        dir.path(),
        "p",
        &file,
        &CompressOptions {
            chunk_kib: 4,
            ..CompressOptions::default()
        },
    );
    let trace_path = dir.path().join("trace.csv");
    std::fs::write(
        &trace_path,
        "t_ms,used_mb,total_mb\n0,100,1000\n15,950,1000\n35,500,1000\n",
    )
    .unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
            .arg("plan")
            .arg(&packed)
            .arg("--pressure-trace")
            .arg(&trace_path)
            .args(["--replay-step-ms", "10"])
            .env_remove("SARAPHIS_MEMORY_PRESSURE")
            .env_remove("SARAPHIS_GPU_THRESHOLD_MB")
            .output()
            .unwrap()
    };
    let a = run();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, run().stdout, "replay is deterministic");
    let lines: Vec<serde_json::Value> = String::from_utf8(a.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    // Chunk k at k * 10 ms: samples at 0, 10 -> 100 MB; 20, 30 -> 950 MB; 40, 50 -> 500 MB.
    let routes: Vec<&str> = lines[..6]
        .iter()
        .map(|l| l["route"].as_str().unwrap())
        .collect();
    // 950/1000 > 0.9: CPU at 20 ms (the first switch is free); 500/1000 < 0.8 with
    // 500 MB free: back to the GPU at 40 ms (20 ms later is under the 50 ms delay,
    // so it waits until 70 ms - past the last chunk).
    assert_eq!(routes, vec!["gpu", "gpu", "cpu", "cpu", "cpu", "cpu"]);
    let levels: Vec<&str> = lines[..6]
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(
        levels,
        vec!["low", "low", "critical", "critical", "moderate", "moderate"]
    );
    for (k, l) in lines[..6].iter().enumerate() {
        assert_eq!(l["chunk"], k);
        assert_eq!(l["tensor"], "w");
        for key in ["gpu_fraction", "utilization", "free_mb"] {
            assert!(l[key].is_number(), "{key}");
        }
    }
    assert_eq!(lines[2]["free_mb"], 50.0);
    assert_eq!(lines[6]["mode_switches"], 1);
    assert_eq!(lines[6]["memory_pressure_events"], 1);
}

#[test]
fn levels_follow_the_design_critical_is_above_ninety_percent() {
    use padic_burst::pressure::Level;
    assert_eq!(Level::of(0.4999), Level::Low);
    assert_eq!(Level::of(0.50), Level::Moderate);
    assert_eq!(Level::of(0.7499), Level::Moderate);
    assert_eq!(Level::of(0.75), Level::High);
    assert_eq!(Level::of(0.90), Level::High, "exactly 90% is not above 90%");
    assert_eq!(Level::of(0.9001), Level::Critical);
}

#[test]
fn a_reading_wavering_around_a_level_boundary_is_one_pressure_event() {
    // T = 0.99 and M = 1 MB keep the AUTO state on the GPU throughout, so only
    // the level rule is exercised: 76% / 74% wavers around HIGH's 75% bound,
    // inside the h = 0.1 band below it.
    let mut p = Policy::new(settings(0.99, 1.0, 0.1, 0), Mode::Auto, true);
    for t in 0..70u64 {
        let u = if t % 2 == 0 { 0.76 } else { 0.74 };
        p.decide(t, s(t, u * 1000.0, 1000.0));
    }
    assert_eq!(p.memory_pressure_events(), 1);
    assert_eq!(p.mode_switches(), 0);
}

#[test]
fn a_level_is_left_only_h_below_its_lower_bound() {
    let mut p = Policy::new(settings(0.99, 1.0, 0.1, 0), Mode::Auto, true);
    let mut events = Vec::new();
    // Into HIGH (1); 0.66 is inside the band (0.65, 0.75): still HIGH, so 0.76
    // is no new rise; 0.64 is below it: MODERATE, and 0.76 rises again (2).
    for (t, u) in [(0, 0.76), (1, 0.66), (2, 0.76), (3, 0.64), (4, 0.76)] {
        p.decide(t, s(t, u * 1000.0, 1000.0));
        events.push(p.memory_pressure_events());
    }
    assert_eq!(events, vec![1, 1, 1, 1, 2]);
    // With h = 0 the same readings leave HIGH at once: every return is a rise.
    let mut q = Policy::new(settings(0.99, 1.0, 0.0, 0), Mode::Auto, true);
    for (t, u) in [(0, 0.76), (1, 0.66), (2, 0.76), (3, 0.64), (4, 0.76)] {
        q.decide(t, s(t, u * 1000.0, 1000.0));
    }
    assert_eq!(q.memory_pressure_events(), 3);
}

/// The hysteresis band on its own: free memory is never the reason to stay.
/// With T = 0.75 and h = 0.25 (both exact in binary, so T - h is exactly 0.5),
/// a CPU state holds for every u in [T - h, T] and leaves just below T - h.
#[test]
fn the_band_alone_holds_the_cpu_state_with_plenty_of_free_memory() {
    // M = 1 MB of 100 GB: free memory is far above 2 M in every sample below.
    let total = 100_000.0;
    let mut p = Policy::new(settings(0.75, 1.0, 0.25, 0), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[
            (0, 0.10 * total, total),  // the GPU
            (5, 0.80 * total, total),  // u 0.8 > T: to the CPU
            (10, 0.70 * total, total), // below T, inside the band: stays
            (20, 0.55 * total, total), // still inside: stays
            (30, 0.50 * total, total), // on T - h, not below it: stays
            (40, 0.49 * total, total), // below T - h: back to the GPU
        ],
    );
    assert_eq!(
        got,
        vec![
            Route::Gpu,
            Route::Cpu,
            Route::Cpu,
            Route::Cpu,
            Route::Cpu,
            Route::Gpu
        ]
    );
    assert_eq!(p.mode_switches(), 2);
}

/// The free-memory rule of the way back sits on 2 M: free memory of exactly
/// 2 M keeps the CPU state, anything above it (with u low) returns.
#[test]
fn cpu_state_needs_strictly_more_than_twice_m_free() {
    let mut p = Policy::new(settings(0.9, 100.0, 0.1, 0), Mode::Auto, true);
    let got = routes(
        &mut p,
        &[
            (0, 950.0, 1000.0), // u 0.95: to the CPU
            (10, 150.0, 350.0), // u 0.43, free 200 = 2 M: stays
            (20, 150.0, 320.0), // u 0.47, free 170: above M, not above 2 M: stays
            (30, 150.0, 350.5), // u 0.43, free 200.5 > 2 M: back to the GPU
        ],
    );
    assert_eq!(got, vec![Route::Cpu, Route::Cpu, Route::Cpu, Route::Gpu]);
}

/// The way out of the GPU state: either rule alone is enough, each strict.
#[test]
fn gpu_state_leaves_on_either_rule_alone() {
    // u above T with plenty of free memory.
    let mut p = Policy::new(settings(0.5, 1.0, 0.1, 0), Mode::Auto, true);
    assert_eq!(p.decide(0, s(0, 50_001.0, 100_000.0)).route, Route::Cpu);
    // Free memory below M with u far below T.
    let mut p = Policy::new(settings(0.9, 100.0, 0.1, 0), Mode::Auto, true);
    assert_eq!(
        routes(&mut p, &[(0, 10.0, 110.0), (10, 10.0, 109.0)]),
        vec![Route::Gpu, Route::Cpu],
        "free 100 = M stays, free 99 < M leaves, with u near 0.09"
    );
}

/// HYBRID's split is the GPU's share of the summed speeds, speed being bytes
/// per second: engines measured over different times are compared by rate.
#[test]
fn hybrid_split_is_proportional_to_bytes_per_second() {
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Hybrid, true);
    p.observe(true, 2_000_000, 0.001); // 2 GB/s
    p.observe(false, 3_000_000, 0.003); // 1 GB/s, measured over three times as long
    let f = p.decide(0, s(0, 100.0, 1000.0)).route.gpu_fraction();
    assert!((f - 2.0 / 3.0).abs() < 1e-12, "{f}");
    // Twice as long for the same bytes is half the speed.
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Hybrid, true);
    p.observe(true, 1_000_000, 0.004);
    p.observe(false, 1_000_000, 0.001);
    let f = p.decide(0, s(0, 100.0, 1000.0)).route.gpu_fraction();
    assert!((f - 0.2).abs() < 1e-12, "{f}");
}

/// A measurement that says nothing about speed (no bytes, no time, a negative
/// time) is ignored; one engine measured alone keeps the initial fraction.
#[test]
fn hybrid_ignores_empty_measurements_and_waits_for_both_engines() {
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Hybrid, true);
    p.observe(true, 4_000_000, 0.001);
    let f = |p: &mut Policy, t| p.decide(t, s(t, 100.0, 1000.0)).route.gpu_fraction();
    assert_eq!(
        f(&mut p, 0),
        0.5,
        "only the GPU measured: the initial share"
    );
    p.observe(false, 1_000_000, 0.001);
    assert!((f(&mut p, 1) - 0.8).abs() < 1e-12);
    for (on_gpu, bytes, secs) in [
        (true, 0, 0.001),
        (false, 0, 0.001),
        (true, 1_000_000, 0.0),
        (false, 1_000_000, 0.0),
        (false, 1_000_000, -0.001),
    ] {
        p.observe(on_gpu, bytes, secs);
        let got = f(&mut p, 2);
        assert!(
            (got - 0.8).abs() < 1e-12,
            "observe({on_gpu}, {bytes}, {secs}) moved the split to {got}"
        );
    }
}

/// Engines that both measure at zero speed (a measurement over an infinite
/// time) give no proportion: the split keeps the initial fraction, not 0/0.
#[test]
fn hybrid_without_a_positive_speed_keeps_the_initial_fraction() {
    let mut p = Policy::new(
        PolicySettings {
            hybrid_initial_gpu_fraction: 0.3,
            ..settings(0.9, 10.0, 0.1, 0)
        },
        Mode::Hybrid,
        true,
    );
    p.observe(true, 1_000, f64::INFINITY);
    p.observe(false, 1_000, f64::INFINITY);
    assert_eq!(p.hybrid_fraction(), 0.3);
    assert_eq!(
        p.decide(0, s(0, 100.0, 1000.0)).route,
        Route::Hybrid { gpu_fraction: 0.3 }
    );
    // One engine at zero speed beside a working one: the share is still in
    // proportion, so the stalled GPU gets none.
    let mut p = Policy::new(settings(0.9, 10.0, 0.1, 0), Mode::Hybrid, true);
    p.observe(true, 1_000, f64::INFINITY);
    p.observe(false, 1_000_000, 0.001);
    assert_eq!(p.hybrid_fraction(), 0.0);
}

/// The names the CLI, the plan and the statistics print, and the spellings
/// `--mode` accepts.
#[test]
fn modes_and_routes_have_their_documented_names() {
    let modes = [
        (Mode::Auto, "auto"),
        (Mode::GpuOnly, "gpu-only"),
        (Mode::CpuOnly, "cpu-only"),
        (Mode::Hybrid, "hybrid"),
    ];
    for (mode, name) in modes {
        assert_eq!(mode.name(), name);
        assert_eq!(name.parse::<Mode>(), Ok(mode));
        assert_eq!(
            name.to_uppercase().replace('-', "_").parse::<Mode>(),
            Ok(mode)
        );
    }
    for (alias, mode) in [
        ("AUTO_SWITCH", Mode::Auto),
        ("gpu", Mode::GpuOnly),
        ("cpu", Mode::CpuOnly),
    ] {
        assert_eq!(alias.parse::<Mode>(), Ok(mode), "{alias}");
    }
    let err = "turbo".parse::<Mode>().unwrap_err();
    assert!(
        err.contains("\"turbo\"") && err.contains("gpu-only"),
        "{err}"
    );

    assert_eq!(Route::Gpu.name(), "gpu");
    assert_eq!(Route::Cpu.name(), "cpu");
    assert_eq!(Route::Hybrid { gpu_fraction: 0.4 }.name(), "hybrid");
    assert_eq!(Route::Gpu.gpu_fraction(), 1.0);
    assert_eq!(Route::Cpu.gpu_fraction(), 0.0);
    assert_eq!(Route::Hybrid { gpu_fraction: 0.4 }.gpu_fraction(), 0.4);
}
