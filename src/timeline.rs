//! The switching timeline: a picture of the bursting.
//!
//! GPU memory utilisation over (virtual) time, with the policy's threshold and
//! its hysteresis band shaded and the pressure levels marked, above a strip
//! with one mark per chunk: its row is the route the policy chose, its fill
//! the engine that ran it (from a real run; in a plan, the route's own
//! colour). `plan --svg`, `decompress --timeline` and `demo` draw it.
//!
//! The SVG is written by hand, with stable class names (`threshold`,
//! `hysteresis-band`, `level-band`, `sample-line`, `chunk`), so tests and
//! other tools can read it back.

use std::fmt::Write as _;

/// One chunk on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineChunk {
    /// The chunk's index in global order (tensors in file order).
    pub chunk: usize,
    /// When it was decided, in (virtual) milliseconds.
    pub t_ms: f64,
    /// The route the policy chose: `gpu`, `cpu` or `hybrid`.
    pub route: &'static str,
    /// The engine that ran it (`gpu`, `cpu`, or `gpu+cpu` for a split chunk),
    /// when it was run; `None` in a plan.
    pub engine: Option<&'static str>,
}

/// Everything a timeline shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The heading.
    pub title: String,
    /// The memory-pressure samples, drawn as utilisation over `t_ms`.
    pub samples: Vec<crate::pressure::Sample>,
    /// The memory-pressure threshold T (utilisation).
    pub threshold: f64,
    /// The hysteresis factor h: AUTO returns to the GPU only below T − h.
    pub hysteresis: f64,
    /// `gpu_memory_threshold_mb` M: AUTO also leaves the GPU with under M MiB
    /// free, and returns only with more than 2 M free.
    pub free_threshold_mb: f64,
    /// The chunks, in order.
    pub chunks: Vec<TimelineChunk>,
    /// A line under the title (say when "gpu" routes ran on the CPU).
    pub note: Option<String>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 40.0;
const PLOT_TOP: f64 = 60.0;
const PLOT_HEIGHT: f64 = 240.0;
const STRIP_TOP: f64 = 340.0;
const ROW: f64 = 22.0;
const HEIGHT: f64 = STRIP_TOP + 3.0 * ROW + 60.0;

/// The pressure levels' lower bounds (utilisation), as `pressure::Level` draws them.
const LEVELS: [(&str, f64, f64, &str); 4] = [
    ("low", 0.0, 0.50, "#eef7ee"),
    ("moderate", 0.50, 0.75, "#f7f4e6"),
    ("high", 0.75, 0.90, "#f9ebdd"),
    ("critical", 0.90, 1.0, "#f7dede"),
];

const ROUTES: [&str; 3] = ["gpu", "hybrid", "cpu"];

fn colour(engine: &str) -> &'static str {
    match engine {
        "gpu" => "#2b7bb9",
        "cpu" => "#d9822b",
        _ => "#8a5cb8",
    }
}

/// `text` as XML character data: the markup characters escaped, and the
/// control characters XML 1.0 forbids (a path may hold them) shown as
/// U+FFFD.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if c.is_control() => '\u{fffd}'.to_string(),
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c => c.to_string(),
        })
        .collect()
}

impl Timeline {
    /// The timeline as an SVG document.
    pub fn to_svg(&self) -> String {
        let end_ms = self
            .samples
            .iter()
            .map(|s| s.t_ms as f64)
            .chain(self.chunks.iter().map(|c| c.t_ms))
            .fold(1.0_f64, f64::max);
        let x = |t: f64| LEFT + (t / end_ms).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT);
        let y = |u: f64| PLOT_TOP + (1.0 - u.clamp(0.0, 1.0)) * PLOT_HEIGHT;
        let plot_w = WIDTH - LEFT - RIGHT;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        if let Some(note) = &self.note {
            let _ = writeln!(
                s,
                r##"<text class="note" x="{LEFT}" y="42" fill="#555">{}</text>"##,
                escape(note)
            );
        }
        for (name, lo, hi, fill) in LEVELS {
            let _ = writeln!(
                s,
                r#"<rect class="level-band" data-level="{name}" x="{LEFT}" y="{:.1}" width="{plot_w:.1}" height="{:.1}" fill="{fill}"/>"#,
                y(hi),
                y(lo) - y(hi)
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#999" text-anchor="end">{name}</text>"##,
                WIDTH - RIGHT - 4.0,
                y(hi) + 13.0
            );
        }
        let low = (self.threshold - self.hysteresis).max(0.0);
        let _ = writeln!(
            s,
            r##"<rect class="hysteresis-band" x="{LEFT}" y="{:.1}" width="{plot_w:.1}" height="{:.1}" fill="#888" fill-opacity="0.18"><title>hysteresis band: back to the GPU only below {low:.2} with more than {:.0} MiB free; off it above {:.2} or under {:.0} MiB free</title></rect>"##,
            y(self.threshold),
            y(low) - y(self.threshold),
            2.0 * self.free_threshold_mb,
            self.threshold,
            self.free_threshold_mb,
        );
        let _ = writeln!(
            s,
            r##"<line class="threshold" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="6 3"/>"##,
            WIDTH - RIGHT,
            y(self.threshold),
            y(self.threshold)
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#c0392b">threshold {:.2} (band {:.2}–{:.2})</text>"##,
            LEFT + 6.0,
            y(self.threshold) - 4.0,
            self.threshold,
            low,
            self.threshold
        );
        // Axes: utilisation ticks on the left, time under the strip.
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{:.0}%</text>"##,
                LEFT - 6.0,
                y(tick) + 4.0,
                tick * 100.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#333">GPU memory used</text>"##,
            PLOT_TOP + PLOT_HEIGHT / 2.0,
            PLOT_TOP + PLOT_HEIGHT / 2.0
        );
        if !self.samples.is_empty() {
            // A step line: a sample holds until the next one, and of samples
            // at the same time the last holds, as the policy reads them.
            let mut points = String::new();
            let mut last_u = None;
            for (t, u) in self
                .samples
                .iter()
                .zip(self.samples.iter().skip(1).map(Some).chain([None]))
                .filter(|(s, next)| next.is_none_or(|n| n.t_ms != s.t_ms))
                .map(|(s, _)| (s.t_ms as f64, s.utilization()))
            {
                if let Some(prev) = last_u {
                    let _ = write!(points, "{:.1},{:.1} ", x(t), y(prev));
                }
                let _ = write!(points, "{:.1},{:.1} ", x(t), y(u));
                last_u = Some(u);
            }
            if let Some(u) = last_u {
                let _ = write!(points, "{:.1},{:.1}", x(end_ms), y(u));
            }
            let _ = writeln!(
                s,
                r##"<polyline class="sample-line" points="{}" fill="none" stroke="#222" stroke-width="1.5"/>"##,
                points.trim_end()
            );
        }
        for (i, route) in ROUTES.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{route}</text>"##,
                LEFT - 6.0,
                STRIP_TOP + i as f64 * ROW + ROW * 0.7
            );
        }
        // Each change of route, in the order the chunks were routed (a live
        // run's workers route out of chunk order): a line across the plot
        // and the strip, with the memory reading of its time.
        let mut routed: Vec<&TimelineChunk> = self.chunks.iter().collect();
        routed.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        for (before, c) in routed.iter().zip(routed.iter().skip(1)) {
            if before.route == c.route {
                continue;
            }
            let reading = crate::pressure::trace::latest_at(&self.samples, |t| t as f64 <= c.t_ms)
                .map(|m| {
                    format!(
                        "; memory then {:.0}% used, {:.0} MiB free",
                        m.utilization() * 100.0,
                        m.free_mb()
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                r##"<line class="switch" data-chunk="{}" data-to="{}" x1="{:.1}" x2="{:.1}" y1="{PLOT_TOP:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="2 3"><title>chunk {}: {} to {}{reading}</title></line>"##,
                c.chunk,
                c.route,
                x(c.t_ms),
                x(c.t_ms),
                STRIP_TOP + 3.0 * ROW,
                c.chunk,
                before.route,
                c.route,
            );
        }
        let mark_w = (plot_w / self.chunks.len().max(1) as f64).clamp(1.0, 8.0);
        for c in &self.chunks {
            let row = ROUTES.iter().position(|r| *r == c.route).unwrap_or(2);
            // A run's mark is filled by the engine that ran the chunk; a
            // plan's by its route, and says that nothing ran.
            let (engine_attr, fill, ran) = match c.engine {
                Some(e) => (
                    format!(r#" data-engine="{e}""#),
                    colour(e),
                    format!("ran on {e}"),
                ),
                None => (
                    String::new(),
                    colour(c.route),
                    "planned, not run".to_string(),
                ),
            };
            let _ = writeln!(
                s,
                r#"<rect class="chunk" data-chunk="{}" data-route="{}"{engine_attr} x="{:.1}" y="{:.1}" width="{mark_w:.1}" height="{:.1}" fill="{fill}"><title>chunk {}: route {}, {ran}</title></rect>"#,
                c.chunk,
                c.route,
                x(c.t_ms),
                STRIP_TOP + row as f64 * ROW + 3.0,
                ROW - 6.0,
                c.chunk,
                c.route,
            );
        }
        let axis_y = STRIP_TOP + 3.0 * ROW + 18.0;
        for i in 0..=4 {
            let t = end_ms * i as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{axis_y:.1}" text-anchor="middle" fill="#333">{:.0} ms</text>"##,
                x(t),
                t
            );
        }
        let legend_y = axis_y + 24.0;
        let ran = self.chunks.iter().any(|c| c.engine.is_some());
        let legend = match ran {
            true => [
                ("gpu", "ran on gpu"),
                ("cpu", "ran on cpu"),
                ("gpu+cpu", "ran on gpu+cpu"),
            ],
            false => [
                ("gpu", "routed to gpu"),
                ("cpu", "routed to cpu"),
                ("hybrid", "split (hybrid)"),
            ],
        };
        for (i, (key, label)) in legend.iter().enumerate() {
            let lx = LEFT + i as f64 * 150.0;
            let _ = writeln!(
                s,
                r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{legend_y:.1}" fill="#333">{label}</text>"##,
                legend_y - 10.0,
                colour(key),
                lx + 16.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        Timeline {
            title: "ramp <test>".into(),
            samples: [(0, 0.4), (100, 0.95), (200, 0.5)]
                .into_iter()
                .map(|(t_ms, u)| crate::pressure::Sample {
                    t_ms,
                    used_mb: u * 1000.0,
                    total_mb: 1000.0,
                })
                .collect(),
            threshold: 0.9,
            hysteresis: 0.1,
            free_threshold_mb: 100.0,
            chunks: (0..7)
                .map(|k| TimelineChunk {
                    chunk: k,
                    t_ms: k as f64 * 30.0,
                    route: if (3..5).contains(&k) { "cpu" } else { "gpu" },
                    engine: Some("cpu"),
                })
                .collect(),
            note: Some("no GPU: every chunk ran on the CPU".into()),
        }
    }

    #[test]
    fn one_mark_per_chunk_in_its_route_row_filled_by_its_engine() {
        let svg = timeline().to_svg();
        assert_eq!(svg.matches(r#"class="chunk""#).count(), 7);
        assert_eq!(svg.matches(r#"data-route="cpu""#).count(), 2);
        assert_eq!(svg.matches(r#"data-route="gpu""#).count(), 5);
        assert_eq!(svg.matches(r#"data-engine="cpu""#).count(), 7);
        assert!(svg.contains("chunk 3: route cpu, ran on cpu"));
    }

    #[test]
    fn a_plans_marks_say_their_route_and_that_nothing_ran() {
        let mut plan = timeline();
        plan.note = None;
        for c in &mut plan.chunks {
            c.engine = None;
        }
        let svg = plan.to_svg();
        assert_eq!(svg.matches(r#"class="chunk""#).count(), 7);
        assert!(
            !svg.contains("data-engine") && !svg.contains("ran on"),
            "{svg}"
        );
        assert!(svg.contains("chunk 0: route gpu, planned, not run"));
        assert!(svg.contains("routed to cpu"));
    }

    #[test]
    fn the_threshold_band_and_levels_are_drawn_where_the_settings_put_them() {
        let svg = timeline().to_svg();
        // T = 0.9 sits at PLOT_TOP + 0.1 * PLOT_HEIGHT = 84; T - h = 0.8 at 108.
        assert!(
            svg.contains(r#"class="threshold" x1="70" x2="920.0" y1="84.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="hysteresis-band" x="70" y="84.0" width="850.0" height="24.0""#)
        );
        assert_eq!(svg.matches(r#"class="level-band""#).count(), 4);
        assert!(svg.contains("band 0.80–0.90"));
        assert!(svg.contains("ramp &lt;test&gt;"), "the title is escaped");
        let mut odd = timeline();
        odd.title = "a\u{1}b\u{1b}[31m & c".into();
        let svg = odd.to_svg();
        assert!(
            svg.contains("a\u{fffd}b\u{fffd}[31m &amp; c"),
            "control characters, which XML forbids"
        );
        assert!(!svg.chars().any(|c| c.is_control() && c != '\n'));
        assert!(svg.contains("no GPU: every chunk ran on the CPU"));
        assert!(
            svg.contains("back to the GPU only below 0.80 with more than 200 MiB free; off it above 0.90 or under 100 MiB free"),
            "both rules of the way back: {svg}"
        );
    }

    #[test]
    fn each_change_of_route_is_a_line_with_the_memory_reading_of_its_time() {
        let mut t = timeline();
        // 0.2 used but 50 MiB free of 250 (the free-memory rule), at 90 ms.
        t.samples[1] = crate::pressure::Sample {
            t_ms: 90,
            used_mb: 200.0,
            total_mb: 250.0,
        };
        let svg = t.to_svg();
        assert_eq!(svg.matches(r#"class="switch""#).count(), 2, "{svg}");
        assert!(
            svg.contains(r#"class="switch" data-chunk="3" data-to="cpu""#),
            "{svg}"
        );
        assert!(svg.contains("chunk 3: gpu to cpu; memory then 80% used, 50 MiB free"));
        assert!(svg.contains("chunk 5: cpu to gpu; memory then 80% used, 50 MiB free"));
        t.chunks.iter_mut().for_each(|c| c.route = "gpu");
        assert!(!t.to_svg().contains(r#"class="switch""#));
    }

    #[test]
    fn of_samples_at_one_time_the_line_draws_the_last_as_the_policy_reads_it() {
        let mut t = timeline();
        // 0.4 at 0, then 0.95 and 0.5 both at 100: the policy sees 0.5 from 100 on.
        t.samples[1].t_ms = 100;
        t.samples[2].t_ms = 100;
        let svg = t.to_svg();
        let line = svg
            .lines()
            .find(|l| l.contains(r#"class="sample-line""#))
            .unwrap();
        // u 0.95 would sit at y = 60 + 0.05 * 240 = 72.
        assert!(!line.contains(",72.0"), "{line}");
        // 0.4 (y 204) until x(100), then 0.5 (y 180) to the end.
        assert!(line.contains(",204.0") && line.contains(",180.0"), "{line}");
    }
}
