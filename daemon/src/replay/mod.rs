//! `wasmgate replay`: run recorded readings through the same pipeline the
//! daemon uses (route → batch → processor chain) and write the outputs as
//! JSON lines instead of publishing them.
//!
//! Deterministic: readings are processed in file order, `now_ms` is the
//! newest timestamp of the batch ([`Clock::Replay`]), and state starts empty
//! unless `--state` points at a directory.

pub mod input;
pub mod output;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::pipeline::{BatchResult, Pipeline, PipelineError};
use crate::runtime::{Clock, ErrorKind, LoadError, ProcessorError, Runtime};
use crate::state::{MemoryState, SledState, StateError, StateStore};

/// What to replay and where to.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Recorded readings (CSV or JSONL).
    pub input: PathBuf,
    /// Input format; guessed from the extension when `None`.
    pub format: Option<input::InputFormat>,
    /// A chain of modules (an implicit single stream), or…
    pub modules: Vec<PathBuf>,
    /// Configuration tables for `modules`, by module name (file stem).
    pub module_configs: Vec<(String, toml::Table)>,
    /// …a daemon configuration file with streams.
    pub config: Option<PathBuf>,
    /// Output file; stdout when `None`.
    pub output: Option<PathBuf>,
    /// Persist processor state in this sled directory (default: in memory).
    pub state: Option<PathBuf>,
    /// Override `runtime.batch_size`.
    pub batch_size: Option<u32>,
    /// Keep going after a module fails (apply its failure policy), report at the end.
    pub keep_going: bool,
    /// Draw a progress bar (only honoured on a terminal).
    pub progress: bool,
}

/// Figures of a finished replay.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// Readings read from the input.
    pub readings_in: u64,
    /// Readings that matched no stream.
    pub unrouted: u64,
    /// Output lines written.
    pub outputs_out: u64,
    /// Values the detectors flagged.
    pub anomalies: u64,
    /// Module failures by [`ErrorKind::index`].
    pub errors: [u64; 6],
    /// Wall time.
    pub elapsed: Duration,
    /// Per module: (stream, module, calls, fuel used, quarantined).
    pub modules: Vec<(String, String, u64, u64, bool)>,
}

impl ReplaySummary {
    /// Total module failures.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Human-readable closing summary (printed on stderr).
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.readings_in as f64 / secs
        } else {
            0.0
        };
        let mut s = format!(
            "replay: {} readings in, {} outputs out, {} errors, {:.3} s, {:.0} readings/s",
            self.readings_in,
            self.outputs_out,
            self.error_count(),
            secs,
            rate
        );
        if self.anomalies > 0 {
            s.push_str(&format!("\n  {} anomalies flagged", self.anomalies));
        }
        if self.unrouted > 0 {
            s.push_str(&format!("\n  {} readings matched no stream", self.unrouted));
        }
        for kind in ErrorKind::ALL {
            let n = self.errors[kind.index()];
            if n > 0 {
                s.push_str(&format!("\n  errors {}: {n}", kind.as_str()));
            }
        }
        for (stream, module, calls, fuel, quarantined) in &self.modules {
            s.push_str(&format!(
                "\n  {stream}/{module}: {calls} calls, {fuel} fuel{}",
                if *quarantined { ", QUARANTINED" } else { "" }
            ));
        }
        s
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A module could not be loaded or started.
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    /// A module (given with --module) could not be loaded.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The input file is unreadable or malformed.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// A module failed on a batch (without --keep-going).
    #[error("{file}:{first}-{last}: stream '{stream}': {error}")]
    Module {
        file: String,
        stream: String,
        first: u64,
        last: u64,
        error: Box<ProcessorError>,
    },
    /// Some batches failed (with --keep-going); the summary lists them.
    #[error("{0} module call(s) failed; see the summary above")]
    Failures(u64),
    /// Writing the output failed.
    #[error("cannot write output {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    /// The state directory could not be opened.
    #[error("state directory {path}: {source}")]
    State { path: String, source: StateError },
    /// Bad combination of options.
    #[error("{0}")]
    Usage(String),
}

/// Run a replay. The summary is returned whatever the outcome, so a failed
/// replay can still report how far it got.
pub fn run(opts: &ReplayOptions) -> (ReplaySummary, Result<(), ReplayError>) {
    let mut summary = ReplaySummary::default();
    let result = run_inner(opts, &mut summary);
    (summary, result)
}

fn run_inner(opts: &ReplayOptions, summary: &mut ReplaySummary) -> Result<(), ReplayError> {
    let started = Instant::now();
    let mut config = match (&opts.config, opts.modules.is_empty()) {
        (Some(_), false) => {
            return Err(ReplayError::Usage(
                "give either --config or --module, not both".into(),
            ));
        }
        (None, true) => {
            return Err(ReplayError::Usage(
                "nothing to run: give --module FILE.wasm (repeatable) or --config FILE".into(),
            ));
        }
        (Some(path), true) => Config::load(path)?,
        (None, false) => Config::single_stream(opts.modules.clone()),
    };
    for (name, table) in &opts.module_configs {
        let target = config
            .streams
            .values_mut()
            .flat_map(|s| s.processors.iter_mut())
            .find(|p| &p.name == name);
        match target {
            Some(p) => p.config = table.clone(),
            None => {
                let known: Vec<&str> = config
                    .streams
                    .values()
                    .flat_map(|s| s.processors.iter().map(|p| p.name.as_str()))
                    .collect();
                return Err(ReplayError::Usage(format!(
                    "--module-config {name}=…: no module named '{name}' (modules: {})",
                    known.join(", ")
                )));
            }
        }
    }
    if let Some(n) = opts.batch_size {
        config.runtime.batch_size = n;
        config
            .runtime
            .validate()
            .map_err(|m| ReplayError::Usage(format!("--batch-size: {m}")))?;
    }
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let state: Arc<dyn StateStore> = match &opts.state {
        Some(dir) => Arc::new(
            SledState::open(dir, SledState::DEFAULT_CACHE_BYTES).map_err(|source| {
                ReplayError::State {
                    path: dir.display().to_string(),
                    source,
                }
            })?,
        ),
        None => Arc::new(MemoryState::new()),
    };
    let mut reader = input::InputReader::open(&opts.input, opts.format)?;
    let mut pipeline = Pipeline::build(&config, runtime, state, Clock::Replay)?;
    pipeline.record_scores(true);
    let out_name = opts
        .output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<stdout>".into());
    let out_err = |source| ReplayError::Output {
        path: out_name.clone(),
        source,
    };
    let sink: Box<dyn Write> = match &opts.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(out_err)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = output::JsonlWriter::new(std::io::BufWriter::with_capacity(64 * 1024, sink));

    let bar = progress_bar(opts.progress, reader.total_bytes());
    let file = opts.input.display().to_string();
    let keep_going = opts.keep_going;
    let mut handle = |result: BatchResult<'_>| -> Result<(), ReplayError> {
        for e in &result.errors {
            summary.errors[e.kind().index()] += 1;
        }
        if let Some(error) = result.errors.first() {
            if !keep_going {
                return Err(ReplayError::Module {
                    file: file.clone(),
                    stream: result.stream.to_string(),
                    first: result.span.0,
                    last: result.span.1,
                    error: Box::new(error.clone()),
                });
            }
        }
        for (i, r) in result.outputs.iter().enumerate() {
            let scores = result.scores.get(i).map(Vec::as_slice).unwrap_or(&[]);
            writer
                .write_scored(result.stream, r, scores)
                .map_err(out_err)?;
        }
        summary.anomalies += result.events.len() as u64;
        summary.outputs_out += result.outputs.len() as u64;
        Ok(())
    };
    while let Some(item) = reader.next() {
        let (line, reading) = item?;
        summary.readings_in += 1;
        if pipeline.push(reading, None, line, &mut handle)? == 0 {
            summary.unrouted += 1;
        }
        if summary.readings_in % 1024 == 0 {
            bar.set_position(reader.bytes_read());
        }
    }
    pipeline.flush(&mut handle)?;
    writer.flush().map_err(out_err)?;
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.modules = pipeline
        .module_stats()
        .map(|(s, m, st)| {
            (
                s.to_string(),
                m.to_string(),
                st.calls,
                st.fuel_used,
                st.quarantined,
            )
        })
        .collect();
    match summary.error_count() {
        0 => Ok(()),
        n => Err(ReplayError::Failures(n)),
    }
}

fn progress_bar(wanted: bool, total: Option<u64>) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} replay [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
