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
    /// Run the gateway: sources, streams, detectors, publishing. Stops
    /// cleanly on SIGTERM or SIGINT (Ctrl-C).
    Run {
        /// The configuration file.
        #[arg(
            long,
            short,
            value_name = "FILE",
            default_value = "/etc/wasmgate/wasmgate.toml"
        )]
        config: PathBuf,
    },
    /// Validate a configuration file: syntax, keys, limits, and that every
    /// processor module loads and initialises with its config.
    CheckConfig {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the fully commented default configuration.
    DefaultConfig,
    /// Inspect the durable outbox of a data directory (also of a running
    /// gateway: its directory is then read through a temporary snapshot).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

/// `wasmgate outbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Per topic: depth, bytes, age of the oldest entry, next sequence
    /// number; totals, boot id and drops by reason.
    Stats {
        #[command(flatten)]
        source: DataDirArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every stored entry as JSON lines, in the order they are sent:
    /// `{"kind","stream","seq","boot","enqueued_ms","payload"}`.
    Export {
        #[command(flatten)]
        source: DataDirArgs,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Which data directory `wasmgate outbox` reads.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DataDirArgs {
    /// The gateway's configuration file; its `storage.path` is read.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory itself (`storage.path`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// Configuration for one module, as NAME=TOML, NAME being the module's
    /// file stem: e.g. `calibrate='fields.temp = { scale = 1.8, offset = 32.0 }'`.
    /// Repeatable. The TOML may also be the path of a `.toml` file.
    #[arg(long = "module-config", value_name = "NAME=TOML", value_parser = parse_module_config, conflicts_with = "config")]
    pub module_configs: Vec<(String, toml::Table)>,
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

/// Parse `NAME=TOML` (or `NAME=FILE.toml`) for `--module-config`.
fn parse_module_config(arg: &str) -> Result<(String, toml::Table), String> {
    let (name, body) = arg.split_once('=').ok_or_else(|| {
        "expected NAME=TOML, e.g. calibrate='fields.temp.scale = 1.8'".to_string()
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Err("the module name before '=' is empty".into());
    }
    let text = if body.trim_end().ends_with(".toml") && std::path::Path::new(body.trim()).is_file()
    {
        std::fs::read_to_string(body.trim()).map_err(|e| format!("cannot read {body}: {e}"))?
    } else {
        body.to_string()
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        format!(
            "configuration for '{name}' is not valid TOML: {}",
            e.message()
        )
    })?;
    Ok((name.to_string(), table))
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
        Command::CheckConfig { file } => check_config_command(&file),
        Command::Run { config } => run_command(&config),
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Outbox { command } => outbox_command(command),
    }
}

fn outbox_command(command: OutboxCommand) -> ExitCode {
    use crate::outbox::inspect::{self, StatsFormat};

    let source = match &command {
        OutboxCommand::Stats { source, .. } | OutboxCommand::Export { source, .. } => source,
    };
    let dir = match (&source.config, &source.data_dir) {
        (_, Some(dir)) => dir.clone(),
        (Some(file), None) => match crate::config::Config::load(file) {
            Ok(c) => c.storage.path,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        // clap requires one of the two.
        (None, None) => return ExitCode::from(2),
    };
    let ins = match inspect::open_for_inspection(&dir) {
        Ok(ins) => ins,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if ins.is_snapshot() {
        eprintln!(
            "note: {} is in use by a running gateway; reading a crash-consistent snapshot \
             of it (entries not yet committed may be missing)",
            dir.display()
        );
    }
    let result = match command {
        OutboxCommand::Stats { json, .. } => {
            ins.outbox.stats().map_err(Into::into).and_then(|stats| {
                let format = if json {
                    StatsFormat::Json
                } else {
                    StatsFormat::Table
                };
                let mut out = std::io::stdout().lock();
                inspect::write_stats(
                    &mut out,
                    &stats,
                    inspect::now_ms(),
                    ins.is_snapshot(),
                    format,
                )
            })
        }
        OutboxCommand::Export { output, .. } => match output {
            Some(file) => std::fs::File::create(&file)
                .map_err(|e| {
                    inspect::InspectError::Write(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", file.display()),
                    ))
                })
                .and_then(|f| inspect::export(&ins.outbox, &mut std::io::BufWriter::new(f)))
                .map(drop),
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                inspect::export(&ins.outbox, &mut out).map(drop)
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `| head`: the reader has what it wanted.
        Err(inspect::InspectError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(inspect::InspectError::Json(e))
            if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(file: &std::path::Path) -> ExitCode {
    let config = match crate::config::Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmgate")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::run::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "wasmgate failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config_command(file: &std::path::Path) -> ExitCode {
    match crate::check::check_config(file) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
        module_configs: args.module_configs,
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
            if opts.config.is_none() && error.to_string().contains("bad-config") {
                eprintln!(
                    "hint: give the module its settings with --module-config NAME='key = value' \
                     (NAME is the file stem), or run a config file with --config; \
                     each example's settings are documented in guest-sdk/examples/README.md"
                );
            }
            ExitCode::FAILURE
        }
    }
}
