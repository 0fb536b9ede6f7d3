//! exflow's command line: parses arguments, sets up logging, and hands over to a command.
//! Errors print as one line, `exflow: ...`, and exit with status 1 (2 for usage errors).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Huge pages for the large tables (see `exflow::alloc`).
#[global_allocator]
static ALLOCATOR: exflow::alloc::HugePages = exflow::alloc::HugePages;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXFLOW_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if cli::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("exflow: {error:#}");
            ExitCode::FAILURE
        }
    }
}
