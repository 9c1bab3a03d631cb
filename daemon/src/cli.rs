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
    /// Where logs go: `auto` (the journal under systemd, else text), `text`,
    /// `json` or `journald`; for `run`, default `[log] format`. Logs go to
    /// stderr (or the journal), never stdout. The level is `WASMGATE_LOG`,
    /// else `[log] level` for `run`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::settings::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// What logging this command line asks for: the gateway (`run`) logs
    /// what it does, at `[log] level` of its config (read leniently here;
    /// `run` reports a bad config itself); one-shot commands log only what
    /// went wrong.
    pub fn log_options(&self) -> crate::logging::LogOptions {
        let (config, default_level) = match &self.command {
            Command::Run { config } => (crate::logging::config_section(config), "info"),
            // The embedded broker reports every closed connection as an
            // error: not the demo's business.
            Command::Demo { .. } => (None, "warn,rumqttd=off"),
            _ => (None, "warn"),
        };
        crate::logging::LogOptions {
            format: self.log_format,
            config,
            default_level,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// See the whole gateway work, nothing to install or configure: an
    /// embedded MQTT broker, simulated sensors with injected anomalies, a
    /// processor updated over the air with a freshly generated key, the
    /// outbox and the HTTP endpoint, with a live view. Ctrl-C stops.
    Demo {
        /// Stop by itself after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration_secs: Option<u64>,
        /// Port of the HTTP endpoint (default: 9810 if free, else any).
        #[arg(long, value_name = "PORT")]
        http_port: Option<u16>,
    },
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
    /// Generate an ed25519 signing key: PATH (private, mode 0600) and
    /// PATH.pub (public, hex). Prints the key id and the public key.
    Keygen {
        /// Where to write the private key; the public key goes to PATH.pub.
        /// Existing files are never overwritten.
        #[arg(long, short, value_name = "PATH")]
        out: PathBuf,
    },
    /// Release key sets: the release keys the root keys vouch for
    /// (rotation and revocation).
    Keyset {
        #[command(subcommand)]
        command: KeysetCommand,
    },
    /// Sign a processor module into an OTA bundle for one gateway or a fleet.
    Sign(SignArgs),
    /// Check a bundle (or key set) against a gateway's configuration and
    /// explain the verdict; exit 0 if the gateway would accept it.
    Verify {
        /// The bundle or key set.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// The gateway's configuration file (`[gateway] id`, `[ota]`, `[runtime]`).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Publish a bundle or key set to a gateway's or a fleet's OTA topic
    /// (QoS 1) and wait for the broker's acknowledgement.
    Push(PushArgs),
}

/// `wasmgate keyset` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysetCommand {
    /// Sign a release key set with the root key(s).
    Sign(KeysetSignArgs),
}

/// Arguments of `wasmgate keyset sign`.
#[derive(Debug, clap::Args)]
pub struct KeysetSignArgs {
    /// A root private key file; repeat for a root threshold above 1.
    #[arg(long = "root-key", value_name = "FILE", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// A release public key: a `.pub` file or 64 hex digits. Repeatable.
    #[arg(long = "release-key", value_name = "PUBFILE|HEX")]
    pub release_keys: Vec<String>,
    /// The id of a release key to refuse from now on. Repeatable.
    #[arg(long = "revoke", value_name = "KEYID")]
    pub revoke: Vec<String>,
    /// Key set version: must be above the one the gateways have.
    #[arg(long, value_name = "N")]
    pub version: u64,
    /// Days until the key set expires (then every bundle is refused until
    /// a newer key set arrives).
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub expires_days: u32,
    /// Issue time, unix seconds. Default: now.
    #[arg(long, value_name = "UNIX")]
    pub issued_at: Option<i64>,
    /// Where to write the signed key set.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
}

/// Who a bundle is for (`sign`) or where it goes (`push`).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// One gateway, by id.
    #[arg(long, value_name = "ID")]
    pub gateway: Option<String>,
    /// Every gateway of a fleet (`[ota] fleet`).
    #[arg(long, value_name = "NAME")]
    pub fleet: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Result<crate::ota::bundle::Scope, String> {
        use crate::ota::bundle::Scope;
        let (what, name, scope) = match (&self.gateway, &self.fleet) {
            (Some(id), _) => ("gateway id", id, Scope::Gateway(id.clone())),
            (None, Some(f)) => ("fleet", f, Scope::Fleet(f.clone())),
            // clap requires one of the two.
            (None, None) => return Err("give --gateway ID or --fleet NAME".into()),
        };
        if !crate::config::is_valid_stream_name(name) {
            return Err(format!(
                "{what} {name:?}: use only letters, digits, `_` and `-` (it is a topic segment)"
            ));
        }
        Ok(scope)
    }
}

/// Arguments of `wasmgate sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// A release private key file; repeat to meet a threshold above 1.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The processor module.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: PathBuf,
    /// The processor's name (as in `[[streams.*.processors]] name`).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Human version string, e.g. 1.4.2.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// Release counter: must be above every release of NAME the gateways
    /// accepted before.
    #[arg(long, value_name = "N")]
    pub release: u64,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Board class the module is built for (`[ota] board`), or `any`.
    #[arg(long, value_name = "CLASS", default_value = "any")]
    pub board: String,
    /// Processor ABI version.
    #[arg(long, value_name = "N", default_value_t = crate::runtime::abi::ABI_VERSION)]
    pub abi: u32,
    /// Days until the manifest expires.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub expires_days: u32,
    /// Issue time, unix seconds. Default: now.
    #[arg(long, value_name = "UNIX")]
    pub issued_at: Option<i64>,
    /// Fuel per call the module needs (must not exceed the gateway's
    /// `[runtime] fuel_per_call`).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Memory the module needs, bytes (must not exceed the gateway's
    /// `[runtime] memory_bytes`).
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<u64>,
    /// Where to write the bundle.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `wasmgate push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The bundle or key set.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The broker.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// The broker's port.
    #[arg(long, value_name = "PORT", default_value_t = 1883)]
    pub port: u16,
    #[command(flatten)]
    pub target: ScopeArgs,
    /// Topic prefix (`[gateway] topic_prefix`).
    #[arg(long, value_name = "PREFIX", default_value = "wasmgate")]
    pub prefix: String,
    /// Publish retained, so gateways that connect later receive it too.
    #[arg(long)]
    pub retain: bool,
    /// Broker user name.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// A file whose first line is the broker password.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS, trusting this CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// MQTT client id. Default: `wasmgate-push-<pid>`.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Give up if the broker has not acknowledged within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
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
        Command::Demo {
            duration_secs,
            http_port,
        } => demo_command(crate::demo::DemoOptions {
            duration: duration_secs.map(std::time::Duration::from_secs),
            http_port,
        }),
        Command::DefaultConfig => {
            print!("{}", crate::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Outbox { command } => outbox_command(command),
        Command::Keygen { out } => report(ota_cli::keygen(&out)),
        Command::Keyset {
            command: KeysetCommand::Sign(args),
        } => report(ota_cli::keyset_sign(&args)),
        Command::Sign(args) => report(ota_cli::sign(&args)),
        Command::Verify { bundle, config } => ota_cli::verify(&bundle, &config),
        Command::Push(args) => report(ota_cli::push(&args)),
    }
}

/// Exit 0, or print the error and exit 1.
fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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

/// The multi-threaded runtime of the long-running commands.
fn async_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmgate")
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn demo_command(opts: crate::demo::DemoOptions) -> ExitCode {
    let Some(rt) = async_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(crate::demo::demo(opts)) {
        Ok(s) if s.outputs > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("error: the demo saw no outputs");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(file: &std::path::Path) -> ExitCode {
    let Some(rt) = async_runtime() else {
        return ExitCode::FAILURE;
    };
    // The signal handlers first: a stop at any later point of start-up
    // (config, storage, modules) ends in a clean drain, not in the default
    // action of the signal.
    let shutdown = {
        let _rt = rt.enter();
        shutdown_signal()
    };
    let config = match crate::config::Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::run::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "wasmgate failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Install the SIGTERM (systemd stop) and SIGINT (Ctrl-C) handlers now
/// (inside the runtime) and return a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
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

/// `keygen`, `keyset sign`, `sign`, `verify` and `push`: signed OTA updates
/// (see docs/OTA.md). Private key material is never printed.
mod ota_cli {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use ed25519_dalek::{SigningKey, VerifyingKey};
    use sha2::Digest;

    use super::{KeysetSignArgs, PushArgs, SignArgs};
    use crate::ota::bundle::{self, KeySet, KeySetKey, Manifest, Target};
    use crate::ota::keys::{self, key_id};
    use crate::ota::verify::{self, Context, Rejection, Trust, unix_now};

    const DAY: i64 = 86_400;

    /// `2025-06-15 12:00:00 UTC (1750000000)`.
    fn time(t: i64) -> String {
        match chrono::DateTime::from_timestamp(t, 0) {
            Some(d) => format!("{} ({t})", d.format("%Y-%m-%d %H:%M:%S UTC")),
            None => t.to_string(),
        }
    }

    fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
        std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn read_file(path: &Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// `PATH.pub`.
    fn pub_path(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(".pub");
        PathBuf::from(s)
    }

    /// Private keys, each once, in order.
    fn read_private_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, String> {
        let mut keys: Vec<SigningKey> = Vec::with_capacity(paths.len());
        for path in paths {
            let key = keys::read_private(path).map_err(|e| e.to_string())?;
            if keys
                .iter()
                .any(|k| k.verifying_key() == key.verifying_key())
            {
                return Err(format!(
                    "{}: key {} is given twice",
                    path.display(),
                    key_id(&key.verifying_key())
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// A `.pub` file, or 64 hex digits.
    fn public_key(arg: &str) -> Result<VerifyingKey, String> {
        let path = Path::new(arg);
        if arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) && !path.exists() {
            return keys::parse_public_hex(arg).map_err(|e| format!("release key {arg}: {e}"));
        }
        keys::read_public(path).map_err(|e| e.to_string())
    }

    pub fn keygen(out: &Path) -> Result<(), String> {
        let public = pub_path(out);
        for p in [out, public.as_path()] {
            if p.exists() {
                return Err(keys::KeyError::Exists {
                    path: p.to_path_buf(),
                }
                .to_string());
            }
        }
        let key = keys::generate().map_err(|e| e.to_string())?;
        keys::write_private(out, &key).map_err(|e| e.to_string())?;
        let vk = key.verifying_key();
        keys::write_public(&public, &vk).map_err(|e| e.to_string())?;
        println!("key id:     {}", key_id(&vk));
        println!("public key: {}", hex::encode(vk.as_bytes()));
        println!(
            "wrote {} (private, mode 0600: keep it offline) and {}",
            out.display(),
            public.display()
        );
        Ok(())
    }

    pub fn keyset_sign(args: &KeysetSignArgs) -> Result<(), String> {
        let roots = read_private_keys(&args.root_keys)?;
        let mut entries: Vec<KeySetKey> = Vec::with_capacity(args.release_keys.len());
        for arg in &args.release_keys {
            let vk = public_key(arg)?;
            if vk.is_weak() {
                return Err(format!("release key {arg} is a weak (small-order) key"));
            }
            let entry = KeySetKey::new(&vk);
            if entries.iter().any(|e| e.id == entry.id) {
                return Err(format!("release key {} is given twice", entry.id));
            }
            entries.push(entry);
        }
        for id in &args.revoke {
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "--revoke {id}: a key id is 16 hex digits (as printed by `wasmgate keygen`)"
                ));
            }
            if entries.iter().any(|e| e.id.eq_ignore_ascii_case(id)) {
                return Err(format!(
                    "key {id} is both a release key and revoked; drop one of the two"
                ));
            }
        }
        if entries.is_empty() {
            eprintln!("warning: the key set lists no release key: gateways will accept no bundle");
        }
        if args.expires_days == 0 {
            return Err("--expires-days must be at least 1".into());
        }
        let issued_at = args.issued_at.unwrap_or_else(unix_now);
        let expires = issued_at.saturating_add(i64::from(args.expires_days) * DAY);
        let keyset = KeySet {
            version: args.version,
            issued_at,
            expires,
            keys: entries,
            revoked: args.revoke.iter().map(|r| r.to_ascii_lowercase()).collect(),
        };
        let bytes = bundle::sign_keyset(&keyset, &roots);
        write_file(&args.out, &bytes)?;
        println!("key set version {}", keyset.version);
        for k in &keyset.keys {
            println!("  release key {}", k.id);
        }
        for r in &keyset.revoked {
            println!("  revoked     {r}");
        }
        println!("  issued  {}", time(issued_at));
        println!("  expires {}", time(expires));
        for r in &roots {
            println!("  signed by root {}", key_id(&r.verifying_key()));
        }
        println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
        Ok(())
    }

    pub fn sign(args: &SignArgs) -> Result<(), String> {
        if !crate::config::is_valid_stream_name(&args.name) {
            return Err(format!(
                "--name {:?}: use only letters, digits, `_` and `-` (it is a topic segment)",
                args.name
            ));
        }
        if args.board.is_empty() {
            return Err("--board must not be empty (use `any` for every board)".into());
        }
        if args.expires_days == 0 {
            return Err("--expires-days must be at least 1".into());
        }
        let scope = args.scope.scope()?;
        let keys = read_private_keys(&args.keys)?;
        let module = read_file(&args.module)?;
        if args.abi == crate::runtime::abi::ABI_VERSION {
            // Signing something that is not a processor is always a mistake.
            let runtime = crate::runtime::Runtime::new(crate::runtime::Limits::default())
                .map_err(|e| e.to_string())?;
            runtime.load_bytes(&args.name, &module).map_err(|e| {
                format!(
                    "{} is not a loadable wasmgate processor: {e}",
                    args.module.display()
                )
            })?;
        }
        let issued_at = args.issued_at.unwrap_or_else(unix_now);
        let manifest = Manifest {
            name: args.name.clone(),
            version: args.version.clone(),
            release: args.release,
            sha256: sha2::Sha256::digest(&module).into(),
            length: module.len() as u64,
            target: Target {
                abi: args.abi,
                board: args.board.clone(),
            },
            scope,
            issued_at,
            expires: issued_at.saturating_add(i64::from(args.expires_days) * DAY),
            fuel: args.fuel,
            memory: args.memory,
            key_ids: keys.iter().map(|k| key_id(&k.verifying_key())).collect(),
        };
        let bytes = bundle::sign_bundle(&manifest, &module, &keys);
        write_file(&args.out, &bytes)?;
        print_manifest(&manifest);
        println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
        Ok(())
    }

    fn print_manifest(m: &Manifest) {
        println!("manifest {} {} (release {})", m.name, m.version, m.release);
        println!(
            "  module   {} bytes, sha256 {}",
            m.length,
            hex::encode(m.sha256)
        );
        println!("  target   abi {}, board {}", m.target.abi, m.target.board);
        println!("  scope    {}", m.scope);
        println!("  issued   {}", time(m.issued_at));
        println!("  expires  {}", time(m.expires));
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        println!("  requests fuel {}, memory {}", opt(m.fuel), opt(m.memory));
        println!("  key ids  {}", m.key_ids.join(", "));
    }

    fn line(what: &str, result: &Result<(), Rejection>) {
        match result {
            Ok(()) => println!("  {what:<9} ok"),
            Err(r) => println!("  {what:<9} FAIL {}: {r}", r.reason()),
        }
    }

    fn print_signatures(checks: &[verify::SignatureCheck], threshold: usize) {
        println!("signatures (threshold {threshold}):");
        if checks.is_empty() {
            println!("  (none)");
        }
        for c in checks {
            println!("  {}  {}", c.key_id, c.status.describe());
        }
    }

    fn verdict<T>(result: Result<T, Rejection>, extra: &str) -> ExitCode {
        match result {
            Ok(_) => {
                println!("verdict: accepted{extra}");
                ExitCode::SUCCESS
            }
            Err(r) => {
                println!("verdict: rejected ({}): {r}", r.reason());
                ExitCode::FAILURE
            }
        }
    }

    pub fn verify(file: &Path, config_file: &Path) -> ExitCode {
        match verify_inner(file, config_file) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn verify_inner(file: &Path, config_file: &Path) -> Result<ExitCode, String> {
        let config = crate::config::Config::load(config_file).map_err(|e| e.to_string())?;
        let ota = &config.ota;
        if !ota.enabled() {
            return Err(format!(
                "{}: [ota] root_keys is empty, so this gateway accepts no update (OTA is off)",
                config_file.display()
            ));
        }
        let bytes = read_file(file)?;
        let now = unix_now();
        // Roots first; the key set file separately, to explain it.
        let mut trust = Trust::from_config(&crate::ota::OtaConfig {
            keyset_file: None,
            ..ota.clone()
        })?;
        println!("config {}:", config_file.display());
        println!(
            "  gateway {}, fleet {}, board {}, processor ABI {}",
            config.gateway.id,
            ota.fleet.as_deref().unwrap_or("-"),
            ota.board,
            crate::runtime::abi::ABI_VERSION
        );
        println!(
            "  root keys {} (threshold {}), release threshold {}",
            trust
                .roots
                .iter()
                .map(key_id)
                .collect::<Vec<_>>()
                .join(", "),
            trust.root_threshold,
            trust.threshold
        );
        // `Config::load` resolved it against the config file's directory.
        if let Some(path) = ota.keyset_file.clone() {
            let ks_bytes = read_file(&path)?;
            // As the gateway does: an expired key set is kept (and then
            // refuses new installs), one that does not verify is not.
            let result = match verify::verify_keyset(&ks_bytes, &trust, None, now) {
                Err(Rejection::KeysetExpired { .. }) => {
                    verify::reverify_stored_keyset(&ks_bytes, &trust).map(|ks| (ks, " EXPIRED"))
                }
                other => other.map(|ks| (ks, "")),
            };
            match result {
                Ok((ks, expired)) => {
                    println!(
                        "  key set {}: version {}, release keys {}, revoked {}, expires {}{expired}",
                        path.display(),
                        ks.version,
                        join_ids(ks.keys.iter().map(|k| k.id.as_str())),
                        join_ids(ks.revoked.iter().map(String::as_str)),
                        time(ks.expires)
                    );
                    trust.keyset = Some(ks);
                }
                Err(r) => println!(
                    "  key set {}: REFUSED ({}): {r}",
                    path.display(),
                    r.reason()
                ),
            }
        } else {
            println!("  key set: none configured (the gateway may have received one over MQTT)");
        }
        println!("  now {}", time(now));
        println!();
        if bundle::is_keyset(&bytes) {
            return Ok(verify_keyset_file(file, &bytes, &trust, now));
        }
        let cx = Context {
            gateway_id: &config.gateway.id,
            fleet: ota.fleet.as_deref(),
            board: &ota.board,
            abi: crate::runtime::abi::ABI_VERSION,
            max_bundle_bytes: ota.max_bundle_bytes,
            max_fuel: config.runtime.fuel_per_call,
            max_memory: config.runtime.memory_bytes,
            now,
            stored_release: None,
        };
        println!("bundle {}: {} bytes", file.display(), bytes.len());
        let b = match verify::decode_capped(&bytes, &cx) {
            Ok(b) => b,
            Err(r) => return Ok(verdict::<()>(Err(r), "")),
        };
        print_manifest(&b.manifest);
        println!("  module is {} bytes", b.module.len());
        let authentic = match trust.release_keys(None) {
            Ok(ks) => {
                let (checks, verdict) = verify::bundle_signatures(&b, ks, trust.threshold);
                print_signatures(&checks, trust.threshold);
                verdict.is_ok()
            }
            Err(r) => {
                println!("signatures: not checked ({}): {r}", r.reason());
                false
            }
        };
        let m = &b.manifest;
        if authentic {
            println!("checks:");
        } else {
            println!("checks (of what the manifest claims: it is NOT authentic):");
        }
        line("key set", &trust.release_keys(Some(now)).map(drop));
        line("module", &verify::check_module(m, b.module));
        line("target", &verify::check_target(m, &cx));
        line("scope", &verify::check_scope(m, &cx));
        line("validity", &verify::check_validity(m, now));
        line("policy", &verify::check_policy(m, &cx));
        println!(
            "  release   not checked: only the gateway knows the last release of {} it \
             accepted; {} must be above it (a gateway's own clock floor may also be later \
             than this machine's clock)",
            m.name, m.release
        );
        Ok(verdict(
            verify::verify_bundle(&bytes, &trust, &cx),
            " (if its release is above the gateway's stored one)",
        ))
    }

    fn join_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
        let v: Vec<&str> = ids.collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    }

    fn verify_keyset_file(file: &Path, bytes: &[u8], trust: &Trust, now: i64) -> ExitCode {
        println!("key set {}: {} bytes", file.display(), bytes.len());
        match bundle::decode_keyset(bytes) {
            Ok(signed) => {
                let ks = &signed.keyset;
                println!("  version {}", ks.version);
                println!(
                    "  release keys {}",
                    join_ids(ks.keys.iter().map(|k| k.id.as_str()))
                );
                println!(
                    "  revoked {}",
                    join_ids(ks.revoked.iter().map(String::as_str))
                );
                println!("  issued  {}", time(ks.issued_at));
                println!("  expires {}", time(ks.expires));
                let (checks, _) = verify::keyset_signatures(&signed, trust);
                print_signatures(&checks, trust.root_threshold);
            }
            Err(e) => println!("  {e}"),
        }
        let current = trust.keyset.as_ref().map(|k| k.version);
        let extra = match current {
            Some(v) => format!(" (newer than the configured key set, version {v})"),
            None => String::new(),
        };
        verdict(verify::verify_keyset(bytes, trust, current, now), &extra)
    }

    pub fn push(args: &PushArgs) -> Result<(), String> {
        use crate::ota::bundle::Scope;

        let bytes = read_file(&args.file)?;
        let target = args.target.scope()?;
        if args.prefix.is_empty() || args.prefix.contains(['+', '#']) {
            return Err(format!("--prefix {:?}: not a topic prefix", args.prefix));
        }
        let topic = match &target {
            Scope::Gateway(id) => format!("{}/{id}/ota", args.prefix),
            Scope::Fleet(f) => format!("{}/fleet/{f}/ota", args.prefix),
        };
        let what = if bundle::is_keyset(&bytes) {
            let ks = bundle::decode_keyset(&bytes)
                .map_err(|e| format!("{}: not a valid key set: {e}", args.file.display()))?;
            format!("key set version {}", ks.keyset.version)
        } else {
            let b = bundle::decode_bundle(&bytes).map_err(|e| {
                format!(
                    "{}: neither a bundle nor a key set: {e}",
                    args.file.display()
                )
            })?;
            if b.manifest.scope != target {
                eprintln!(
                    "warning: the bundle is signed for {}, pushed to {}: gateways there \
                     will reject it (wrong-scope)",
                    b.manifest.scope, target
                );
            }
            format!(
                "bundle {} {} (release {})",
                b.manifest.name, b.manifest.version, b.manifest.release
            )
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        rt.block_on(publish(args, &topic, bytes.clone()))?;
        println!(
            "pushed {what} ({} bytes) to {topic} on {}:{} (QoS 1{}): acknowledged",
            bytes.len(),
            args.host,
            args.port,
            if args.retain { ", retained" } else { "" }
        );
        Ok(())
    }

    async fn publish(args: &PushArgs, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        use rumqttc::{
            AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
        };
        use std::time::Duration;

        let client_id = args
            .client_id
            .clone()
            .unwrap_or_else(|| format!("wasmgate-push-{}", std::process::id()));
        let mut opts = MqttOptions::new(client_id, args.host.clone(), args.port);
        let max = payload.len() + topic.len() + (16 << 10);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(max.max(1 << 20), max);
        if let Some(user) = &args.username {
            let password = match &args.password_file {
                Some(f) => String::from_utf8_lossy(&read_file(f)?)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                None => String::new(),
            };
            opts.set_credentials(user.clone(), password);
        }
        if let Some(ca) = &args.ca_file {
            crate::mqtt::install_crypto_provider();
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: read_file(ca)?,
                alpn: None,
                client_auth: None,
            }));
        }
        let (client, mut events) = AsyncClient::new(opts, 10);
        client
            .publish(topic, QoS::AtLeastOnce, args.retain, payload)
            .await
            .map_err(|e| format!("cannot queue the publication: {e}"))?;
        let broker = format!("{}:{}", args.host, args.port);
        let acked = async {
            let mut pkid = None;
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(id))) => pkid = Some(id),
                    Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == pkid => {
                        return Ok(());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack)))
                        if ack.code != rumqttc::ConnectReturnCode::Success =>
                    {
                        return Err(format!(
                            "broker {broker} refused the connection: {:?}",
                            ack.code
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("broker {broker}: {e}")),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(args.timeout_secs), acked)
            .await
            .map_err(|_| {
                format!(
                    "broker {broker} did not acknowledge within {} s",
                    args.timeout_secs
                )
            })??;
        // A clean goodbye; the publication is already acknowledged.
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}
