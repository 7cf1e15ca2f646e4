use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = padic_burst::cli::Cli::parse();
    match padic_burst::cli::run(cli) {
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
