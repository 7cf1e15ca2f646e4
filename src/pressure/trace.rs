//! A recorded memory-pressure trace: CSV with the header `t_ms,used_mb,total_mb`
//! and one sample per line, times non-decreasing.

use std::io::Write;
use std::path::Path;

use super::{PressureSource, Sample};
use crate::error::{Error, Result};

/// The CSV header of a trace.
pub const HEADER: &str = "t_ms,used_mb,total_mb";

/// A trace in memory; `sample_at(t)` is the latest sample with `t_ms <= t`
/// (of several at one time, the last; before any, the last at the first
/// time).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    samples: Vec<Sample>,
}

fn bad(path: &Path, line: usize, what: String) -> Error {
    Error::InvalidArgument(format!("{}: line {line}: {what}", path.display()))
}

impl Trace {
    /// Samples in time order (at least one).
    pub fn new(samples: Vec<Sample>) -> Result<Self> {
        if samples.is_empty() {
            return Err(Error::InvalidArgument(
                "a pressure trace needs at least one sample".into(),
            ));
        }
        if samples.windows(2).any(|w| w[1].t_ms < w[0].t_ms) {
            return Err(Error::InvalidArgument(
                "pressure trace times must not decrease".into(),
            ));
        }
        Ok(Trace { samples })
    }

    /// Reads a trace file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::input::read_text(path)?;
        Self::parse(path, &text)
    }

    /// Parses trace text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, h)) if h.trim() == HEADER => {}
            Some((i, h)) => {
                return Err(bad(
                    path,
                    i + 1,
                    format!("header is {h:?}, expected {HEADER:?}"),
                ))
            }
            None => return Err(bad(path, 1, "empty trace".into())),
        }
        let mut samples = Vec::new();
        for (i, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != 3 {
                return Err(bad(
                    path,
                    i + 1,
                    format!("{} fields, expected 3", fields.len()),
                ));
            }
            let t_ms: u64 = fields[0].parse().map_err(|_| {
                bad(
                    path,
                    i + 1,
                    format!("t_ms {:?} is not a whole number of milliseconds", fields[0]),
                )
            })?;
            let num = |s: &str, name: &str| -> Result<f64> {
                let v: f64 = s
                    .parse()
                    .map_err(|_| bad(path, i + 1, format!("{name} {s:?} is not a number")))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad(
                        path,
                        i + 1,
                        format!("{name} {s:?} must be finite and not negative"),
                    ));
                }
                Ok(v)
            };
            let used_mb = num(fields[1], "used_mb")?;
            let total_mb = num(fields[2], "total_mb")?;
            if total_mb <= 0.0 || used_mb > total_mb {
                return Err(bad(
                    path,
                    i + 1,
                    format!("used {used_mb} MB of total {total_mb} MB is impossible"),
                ));
            }
            if samples.last().is_some_and(|s: &Sample| t_ms < s.t_ms) {
                return Err(bad(path, i + 1, format!("t_ms {t_ms} goes back in time")));
            }
            samples.push(Sample {
                t_ms,
                used_mb,
                total_mb,
            });
        }
        if samples.is_empty() {
            return Err(bad(path, 2, "the trace has a header and no samples".into()));
        }
        Ok(Trace { samples })
    }

    /// The samples, in time order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Writes the trace as CSV.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = Vec::new();
        writeln!(out, "{HEADER}").expect("writing to memory");
        for s in &self.samples {
            writeln!(out, "{},{},{}", s.t_ms, s.used_mb, s.total_mb).expect("writing to memory");
        }
        crate::output::write_atomic(path, &out)
    }
}

/// The sample of `samples` (in time order) that holds at a time: the latest
/// whose `t_ms` is `not_after` it, of several at one time the last, and
/// before any the last at the first time. The one rule of a replay, and of
/// the timeline that draws it.
pub fn latest_at(samples: &[Sample], not_after: impl Fn(u64) -> bool) -> Option<&Sample> {
    let first = samples.first()?.t_ms;
    let after = samples.partition_point(|s| s.t_ms == first || not_after(s.t_ms));
    samples.get(after - 1)
}

impl PressureSource for Trace {
    fn sample_at(&self, t_ms: u64) -> Option<Sample> {
        latest_at(&self.samples, |t| t <= t_ms).copied()
    }
    fn has_gpu(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_sample_at_or_before_the_time_and_the_first_before_any() {
        let t = Trace::parse(
            Path::new("t.csv"),
            "t_ms,used_mb,total_mb\n10,100,1000\n20,500,1000\n20,600,1000\n",
        )
        .unwrap();
        assert_eq!(t.sample_at(0).unwrap().used_mb, 100.0);
        assert_eq!(t.sample_at(15).unwrap().used_mb, 100.0);
        assert_eq!(t.sample_at(20).unwrap().used_mb, 600.0);
        assert_eq!(t.sample_at(999).unwrap().used_mb, 600.0);
        // Before the first time: the last sample at that time, as the
        // timeline draws it (it was the first).
        let t = Trace::parse(
            Path::new("t.csv"),
            "t_ms,used_mb,total_mb\n10,950,1000\n10,300,1000\n100,400,1000\n",
        )
        .unwrap();
        assert_eq!(t.sample_at(0).unwrap().used_mb, 300.0);
        assert_eq!(t.sample_at(10).unwrap().used_mb, 300.0);
    }

    #[test]
    fn malformed_traces_name_the_line() {
        for (text, want) in [
            ("t,u,v\n1,2,3\n", "line 1"),
            ("t_ms,used_mb,total_mb\n1,2\n", "line 2"),
            ("t_ms,used_mb,total_mb\n1,2,3\n0,1,3\n", "line 3"),
            ("t_ms,used_mb,total_mb\n1,x,3\n", "used_mb"),
            ("t_ms,used_mb,total_mb\n1,5,3\n", "impossible"),
            ("t_ms,used_mb,total_mb\n", "no samples"),
        ] {
            let err = Trace::parse(Path::new("bad.csv"), text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("bad.csv") && err.contains(want),
                "{text:?}: {err}"
            );
        }
    }
}
