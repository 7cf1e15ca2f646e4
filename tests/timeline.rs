//! Seeing the bursting: `plan --svg`, `decompress --timeline`,
//! `--replay-step-ms auto`, and a demo that shows a switch each way.

mod common;

use common::*;
use safetensors::Dtype;

const RAMP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/traces/rise-and-fall.csv"
);

fn packed(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let (p, original) = gaussian_model(
        dir,
        "m.padic",
        5,
        &[
            ("a", Dtype::BF16, vec![256, 512], 0.05),
            ("ids", Dtype::I64, vec![64], 0.0),
            ("b", Dtype::BF16, vec![512, 256], 0.05),
        ],
        16,
    );
    let chunks = padic_burst::format::Container::open(&p)
        .unwrap()
        .header()
        .chunk_count();
    (p, original, chunks)
}

/// Each chunk mark's chunk, route and engine (none in a plan: nothing ran).
fn svg_marks(svg: &str) -> Vec<(usize, String, Option<String>)> {
    svg.split(r#"<rect class="chunk" "#)
        .skip(1)
        .map(|m| {
            let m = &m[..m.find('>').unwrap()];
            let attr = |k: &str| {
                let from = m.find(&format!("{k}=\""))? + k.len() + 2;
                Some(m[from..from + m[from..].find('"').unwrap()].to_string())
            };
            (
                attr("data-chunk").unwrap().parse().unwrap(),
                attr("data-route").unwrap(),
                attr("data-engine"),
            )
        })
        .collect()
}

#[test]
fn plan_draws_the_threshold_band_and_one_mark_per_chunk_in_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _, chunks) = packed(dir.path());
    let svg = dir.path().join("plan.svg");
    let out = bin()
        .arg("plan")
        .arg(&c)
        .args([
            "--pressure-trace",
            RAMP,
            "--replay-step-ms",
            "auto",
            "--svg",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert_success(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    // `auto` spreads the 1200 ms trace over the chunks: it reaches both
    // switches (to the CPU on the rise, back after the fall).
    assert_eq!(summary["mode_switches"], 2, "{summary}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(r#"class="threshold""#));
    assert!(text.contains(r#"class="hysteresis-band""#));
    assert!(text.contains("band 0.80–0.90"), "the default T and h");
    let marks = svg_marks(&text);
    assert_eq!(marks.len(), chunks, "one mark per chunk");
    for ((k, route, engine), line) in marks.iter().zip(&lines) {
        assert_eq!(line["chunk"], *k);
        assert_eq!(line["route"], route.as_str(), "chunk {k}");
        assert_eq!(*engine, None, "a plan runs nothing (chunk {k})");
    }
    assert!(marks.iter().any(|m| m.1 == "cpu") && marks.iter().any(|m| m.1 == "gpu"));
}

/// Every count of switches agrees with what is drawn and logged: a trace
/// that starts under pressure, falls, and ends long before the chunks do.
/// The start on the CPU is no switch (it was counted as one, which no route
/// showed), the fall is one, each is a line in the SVG, and the chunks past
/// the trace's end are said.
#[test]
fn switches_counted_are_the_changes_of_route_drawn_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _, chunks) = packed(dir.path());
    assert!(chunks > 6, "{chunks}");
    let trace = dir.path().join("t.csv");
    std::fs::write(&trace, "t_ms,used_mb,total_mb\n0,950,1000\n20,100,1000\n").unwrap();
    let (svg, log, stats) = (
        dir.path().join("plan.svg"),
        dir.path().join("placement.csv"),
        dir.path().join("s.json"),
    );
    let plan = bin()
        .arg("plan")
        .arg(&c)
        .arg("--pressure-trace")
        .arg(&trace)
        .args(["--replay-step-ms", "10", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    assert_success(&plan);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&plan.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let routes: Vec<&str> = lines[..chunks]
        .iter()
        .map(|l| l["route"].as_str().unwrap())
        .collect();
    assert_eq!(&routes[..3], ["cpu", "cpu", "gpu"], "{routes:?}");
    let changes = routes.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 1);
    assert_eq!(lines[chunks]["mode_switches"], 1, "{}", lines[chunks]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(text.matches(r#"class="switch""#).count(), 1, "{text}");
    let err = String::from_utf8_lossy(&plan.stderr);
    let past = chunks - 3;
    assert!(
        err.contains(&format!(
            "note: the pressure trace ends at 20 ms: at 10 ms a chunk, {past} of {chunks} chunks (from chunk 3) are routed on its last sample"
        )),
        "{err}"
    );
    let run = bin()
        .arg("decompress")
        .arg(&c)
        .arg("-o")
        .arg(dir.path().join("r.safetensors"))
        .arg("--pressure-trace")
        .arg(&trace)
        .arg("--placement-log")
        .arg(&log)
        .arg("--stats-json")
        .arg(&stats)
        .output()
        .unwrap();
    assert_success(&run);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(v["mode_switches"], 1);
    assert_eq!(
        v["current_engine"], "gpu",
        "the AUTO state after the last chunk"
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains(&format!(
            "note: the pressure trace ends at 20 ms: at 10 ms a chunk, {past} of {chunks} chunks"
        )),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The placement log: one line per part, the route in its own column.
    let csv = std::fs::read_to_string(&log).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (chunk_col, route_col) = (
        header.iter().position(|h| *h == "chunk").unwrap(),
        header.iter().position(|h| *h == "route").unwrap(),
    );
    let mut by_chunk = std::collections::BTreeMap::new();
    for l in csv.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        by_chunk.insert(
            f[chunk_col].parse::<usize>().unwrap(),
            f[route_col].to_string(),
        );
    }
    let logged: Vec<&String> = by_chunk.values().collect();
    assert_eq!(logged.len(), chunks);
    assert_eq!(
        logged.windows(2).filter(|w| w[0] != w[1]).count(),
        1,
        "{logged:?}"
    );
}

#[test]
fn replay_step_auto_ends_the_chunks_at_the_traces_end() {
    use padic_burst::plan::ReplayStep;
    let trace = padic_burst::pressure::Trace::load(std::path::Path::new(RAMP)).unwrap();
    assert_eq!(
        ReplayStep::Auto.millis(&trace, 1201),
        1,
        "1200 ms over 1200 steps"
    );
    assert_eq!(ReplayStep::Auto.millis(&trace, 5), 300);
    assert_eq!(ReplayStep::Auto.millis(&trace, 1), 1200);
    assert_eq!(ReplayStep::Fixed(7).millis(&trace, 5), 7);
    // `auto` reaches the trace's end by design: nothing to say, unless the
    // trace is shorter than 1 ms a chunk.
    use padic_burst::plan::beyond_the_trace;
    assert_eq!(beyond_the_trace(&trace, 114, ReplayStep::Auto), None);
    let note = beyond_the_trace(&trace, 1301, ReplayStep::Auto).unwrap();
    assert!(
        note.contains("at 1 ms a chunk, 100 of 1301 chunks (from chunk 1201)"),
        "{note}"
    );
    assert!(beyond_the_trace(&trace, 114, ReplayStep::Fixed(20)).is_some());
    assert_eq!(beyond_the_trace(&trace, 114, ReplayStep::Fixed(0)), None);
    // A trace to the end of time: nothing comes after it (no overflow).
    let at = |t_ms| padic_burst::pressure::Sample {
        t_ms,
        used_mb: 1.0,
        total_mb: 2.0,
    };
    let endless = padic_burst::pressure::Trace::new(vec![at(0), at(u64::MAX)]).unwrap();
    assert_eq!(beyond_the_trace(&endless, 8, ReplayStep::Fixed(1)), None);
    // One sample is every chunk's reading: nothing to say.
    let one = padic_burst::pressure::Trace::new(vec![at(0)]).unwrap();
    assert_eq!(beyond_the_trace(&one, 8, ReplayStep::Fixed(10)), None);
    assert_eq!(ReplayStep::parse("auto"), Ok(ReplayStep::Auto));
    assert_eq!(ReplayStep::parse("30"), Ok(ReplayStep::Fixed(30)));
    assert!(ReplayStep::parse("-1")
        .unwrap_err()
        .contains("--replay-step-ms"));
}

#[test]
fn decompress_draws_the_run_with_the_engine_that_ran_each_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (c, original, chunks) = packed(dir.path());
    let svg = dir.path().join("run.svg");
    let restored = dir.path().join("r.safetensors");
    let out = bin()
        .arg("decompress")
        .arg(&c)
        .arg("-o")
        .arg(&restored)
        .args([
            "--pressure-trace",
            RAMP,
            "--replay-step-ms",
            "auto",
            "--timeline",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(std::fs::read(&restored).unwrap(), original);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(r#"class="hysteresis-band""#));
    let marks = svg_marks(&text);
    assert_eq!(marks.len(), chunks, "one mark per chunk");
    let ks: Vec<usize> = marks.iter().map(|m| m.0).collect();
    assert_eq!(ks, (0..chunks).collect::<Vec<_>>());
    assert!(marks.iter().any(|m| m.1 == "cpu") && marks.iter().any(|m| m.1 == "gpu"));
    // Without a GPU every chunk ran on the CPU, and the picture says so.
    if padic_burst::pipeline::Pipeline::new(Default::default())
        .gpu_absent()
        .is_some()
    {
        assert!(
            marks.iter().all(|m| m.2.as_deref() == Some("cpu")),
            "{marks:?}"
        );
        assert!(text.contains("no GPU here"));
    }
}

#[test]
fn the_demo_runs_offline_round_trips_and_shows_a_switch_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let bursts: Vec<&str> = text.lines().filter(|l| l.starts_with(" burst:")).collect();
    let to_cpu = bursts.iter().position(|l| l.contains("routed to the CPU"));
    let back = bursts
        .iter()
        .rposition(|l| l.contains("routed to the GPU: back"));
    assert!(
        matches!((to_cpu, back), (Some(a), Some(b)) if a < b),
        "a switch to the CPU, then one back:\n{text}"
    );
    assert!(text.contains("2 switches"), "{text}");
    assert!(text.contains("identical to the original: yes"), "{text}");
    // Each dtype's round trip, byte for byte.
    assert_eq!(text.matches("byte-identical: yes").count(), 3, "{text}");
    let svg = std::fs::read_to_string(dir.path().join("demo-bursting.svg")).unwrap();
    assert!(svg_marks(&svg).len() >= 20);
}

#[test]
fn the_demo_refuses_too_many_params_or_workers_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    // 2^64 - 1 parameters aborted on a failed allocation (exit 134); 17
    // workers on 2 cores ran every stage but the last.
    let too_many = (padic_burst::config::max_workers() + 1).to_string();
    for args in [
        ["--params", "18446744073709551615"],
        ["--workers", too_many.as_str()],
    ] {
        let out = bin()
            .arg("demo")
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: work was done");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
