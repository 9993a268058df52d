//! The `pnpt` command (see the `pnpt_cli` library for the subcommands).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The library's progress lines and warnings are `log` events: print them on stderr.
    pnpt_cli::logging::init(true);
    // Bad arguments: clap prints its message and exits 2.
    let cli = pnpt_cli::Cli::parse();
    match pnpt_cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
