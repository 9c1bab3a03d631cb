//! The `wasmgate` binary: parse arguments, set up logging, hand over to the
//! library. Everything else lives in the `wasmgate` crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wasmgate::cli::Cli::parse();
    // Logs go to the journal under systemd, else to stderr; stdout carries
    // data (replay output). See `wasmgate::logging`.
    wasmgate::logging::init(&cli.log_options());
    wasmgate::cli::run(cli)
}
