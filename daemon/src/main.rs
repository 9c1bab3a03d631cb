//! The `wasmgate` binary: parse arguments, set up logging, hand over to the
//! library. Everything else lives in the `wasmgate` crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wasmgate::cli::Cli::parse();
    // Logs go to stderr; stdout carries data (replay output).
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    wasmgate::cli::run(cli)
}
