//! Command-line interface: argument definitions and the subcommand
//! dispatcher. Errors are reported here, once, with an actionable message.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::replay::{self, ReplayOptions, input::InputFormat};

/// wasmgate: an IoT gateway running sandboxed WebAssembly sensor processors.
#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run recorded readings through processor modules and print the outputs
    /// as JSON lines (try a processor before deploying it).
    Replay(ReplayArgs),
}

/// Arguments of `wasmgate replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Recorded readings: CSV with a header (`timestamp`, optional `sensor`,
    /// numeric fields) or JSON lines.
    #[arg(long, short, value_name = "FILE")]
    pub input: PathBuf,
    /// A processor module; repeat to build a chain, applied in order.
    #[arg(
        long = "module",
        short,
        value_name = "FILE.wasm",
        conflicts_with = "config"
    )]
    pub modules: Vec<PathBuf>,
    /// A wasmgate configuration file whose streams and processors to run.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the outputs here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Input format, when the file extension does not tell.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Keep processor state in this directory (sled) across replays;
    /// default: fresh, in memory.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Readings per call into a module (overrides `runtime.batch_size`).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// Do not stop at the first module failure: apply the failure policy,
    /// continue, and exit non-zero at the end if anything failed.
    #[arg(long)]
    pub keep_going: bool,
    /// No progress bar and no summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Replay(args) => replay_command(args),
    }
}

fn replay_command(args: ReplayArgs) -> ExitCode {
    let opts = ReplayOptions {
        input: args.input,
        format: args.format.map(|f| match f {
            FormatArg::Csv => InputFormat::Csv,
            FormatArg::Jsonl => InputFormat::Jsonl,
        }),
        modules: args.modules,
        config: args.config,
        output: args.output,
        state: args.state,
        batch_size: args.batch_size,
        keep_going: args.keep_going,
        progress: !args.quiet,
    };
    match replay::run(&opts) {
        (summary, Ok(())) => {
            if !args.quiet {
                eprintln!("{}", summary.render());
            }
            ExitCode::SUCCESS
        }
        (summary, Err(error)) => {
            if !args.quiet && summary.readings_in > 0 {
                eprintln!("{}", summary.render());
            }
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
