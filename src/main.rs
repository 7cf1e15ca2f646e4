//! The `padic-burst` command line: parses the flags, runs the command, and
//! turns an error into one line on stderr and the exit code it stands for.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any thread starts: SIGINT/SIGTERM remove unfinished outputs.
    padic_burst::output::install_signal_cleanup();
    let cli = padic_burst::cli::Cli::parse();
    for (name, meant) in padic_burst::config::misspelt_env_variables() {
        eprintln!(
            "warning: {name} is set, but padic-burst reads no such variable; did you mean {meant}?"
        );
    }
    // A bad `PADIC_*` knob is refused before any work (some are read deep in
    // a decode, where a bad value would fall back to the default).
    let result = padic_burst::config::check_env_knobs()
        .map_err(padic_burst::Error::from)
        .and_then(|()| padic_burst::cli::run(cli));
    // `PADIC_REPORT_PEAK_MEMORY`: the process's own peak resident memory
    // (VmHWM, which, unlike a parent's rusage, does not count the memory of
    // the process that spawned it).
    if padic_burst::config::report_peak_memory().unwrap_or(false) {
        if let Some(kib) = peak_resident_kib() {
            eprintln!("peak resident memory: {kib} KiB");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = anyhow::Error::from(e);
            // One line, whatever a name in it holds.
            eprintln!("error: {}", padic_burst::error::one_line(&e.to_string()));
            let code = e
                .downcast_ref::<padic_burst::Error>()
                .map_or(1, padic_burst::Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}

/// The process's peak resident memory (VmHWM) in KiB, where Linux says.
fn peak_resident_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
