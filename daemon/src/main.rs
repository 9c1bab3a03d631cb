//! The `wasmgate` binary: parse arguments, set up logging, hand over to the
//! library. Everything else lives in the `wasmgate` crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wasmgate::cli::Cli::parse();
    // Logs go to stderr; stdout carries data (replay output).
    // The gateway logs what it does; one-shot commands only what went wrong.
    let default_level = match cli.command {
        wasmgate::cli::Command::Run { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    wasmgate::cli::run(cli)
}
