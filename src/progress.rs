//! A progress bar on a terminal, silence otherwise; during a decode, a
//! status line under the bar (see [`crate::monitor::status`]).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::monitor::{Monitor, Watcher};

/// How often the status line is redrawn.
pub const STATUS_EVERY: Duration = Duration::from_millis(200);

/// The byte bar, with the status line under it once there is one.
const BYTES_WITH_STATUS: &str =
    "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}\n{wide_msg}";

/// Reports progress of long work in bytes.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar on stderr when stderr is a terminal and `enabled`.
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar }
    }

    /// A bar counting steps (runs), on stderr when it is a terminal and `enabled`.
    pub fn steps(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40}] {pos}/{len} steps, {elapsed}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar }
    }

    /// No output at all.
    pub fn hidden() -> Self {
        Progress { bar: None }
    }

    /// Restarts the bar at 0 of `total` units (bytes or steps), labelled `what`.
    pub fn start(&self, total: u64, what: &str) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(0);
            b.set_prefix(what.to_string());
        }
    }

    /// Whether the bar shows (stderr is a terminal and it was enabled).
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows `status` on a line under the byte bar.
    pub fn set_status(&self, status: String) {
        if let Some(b) = self.bar.as_ref().filter(|b| !b.is_finished()) {
            if b.message().is_empty() {
                b.set_style(
                    ProgressStyle::with_template(BYTES_WITH_STATUS)
                        .expect("the template is valid")
                        .progress_chars("=> "),
                );
            }
            b.set_message(status);
        }
    }

    /// Prints `line` on stderr above the bar (or plainly, without one).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// While the bar shows, redraws its status line from `monitor`'s run
    /// every [`STATUS_EVERY`]; `None` (nothing to draw on) when it does not,
    /// or when no thread could be started for it (the bar goes on without).
    pub fn follow(self: &Arc<Self>, monitor: &Monitor) -> Option<Watcher> {
        self.bar.as_ref()?;
        let progress = self.clone();
        let mut before = None;
        monitor
            .watch(STATUS_EVERY, move |now| {
                progress.set_status(crate::monitor::status::line(now, before.as_ref()));
                before = Some(now.clone());
            })
            .ok()
    }

    /// Moves the bar `n` units on.
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Clears the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
