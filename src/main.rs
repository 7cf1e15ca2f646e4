use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any thread starts: SIGINT/SIGTERM remove unfinished outputs.
    padic_burst::output::install_signal_cleanup();
    let cli = padic_burst::cli::Cli::parse();
    let result = padic_burst::cli::run(cli);
    // `PADIC_REPORT_PEAK_MEMORY=1`: the process's own peak resident memory
    // (VmHWM, which, unlike a parent's rusage, does not count the memory of
    // the process that spawned it).
    if std::env::var_os("PADIC_REPORT_PEAK_MEMORY").is_some() {
        if let Some(kib) = peak_resident_kib() {
            eprintln!("peak resident memory: {kib} KiB");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("error: {e}");
            let code = e
                .downcast_ref::<padic_burst::Error>()
                .map_or(1, padic_burst::Error::exit_code);
            ExitCode::from(code as u8)
        }
    }
}

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
