//! A progress bar on a terminal, silence otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

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
                    "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
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
                ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} steps, {elapsed}")
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
            b.set_message(what.to_string());
        }
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
