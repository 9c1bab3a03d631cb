//! A stream's processing chain, shared by `wasmgate replay` and (in later
//! stages) the daemon: readings are routed to every stream whose sensor
//! patterns match, gathered into batches of `batch_size`, and each batch runs
//! through the stream's modules in order. The outputs of one module are the
//! inputs of the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, StreamConfig};
use crate::detect::{AnomalyEvent, DetectError, DetectorSet, FieldScore};
use crate::pattern::SensorPattern;
use crate::reading::Reading;
use crate::runtime::{
    Clock, HostEnv, LoadError, ModuleConfig, ModuleStats, ProcessorError, Runtime, Supervisor,
};
use crate::state::StateStore;

/// Building a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A module could not be loaded or started.
    #[error("stream '{stream}': {source}")]
    Load {
        stream: String,
        #[source]
        source: LoadError,
    },
    /// The detectors could not be set up.
    #[error("stream '{stream}': detectors: {source}")]
    Detectors {
        stream: String,
        #[source]
        source: DetectError,
    },
}

/// What building a pipeline does with a module that loads but cannot start
/// (refused at instantiate, or its `wasmgate_init` fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// The build fails with the module's error (`check-config`, `replay`:
    /// a configuration whose modules cannot start is refused).
    Refuse,
    /// The module is quarantined from the start, with its failure in its
    /// statistics and the log, and everything else runs (the daemon: init
    /// runs guest code against persistent state, so it can fail at a start
    /// that `check-config` did not see, and one such module must not keep
    /// every other stream down).
    Quarantine,
}

/// The result of running one batch through a stream's chain.
#[derive(Debug)]
pub struct BatchResult<'a> {
    /// The stream's name.
    pub stream: &'a str,
    /// What the last module produced (after failure policies).
    pub outputs: Vec<Reading>,
    /// Failures of modules in the chain during this batch.
    pub errors: Vec<ProcessorError>,
    /// Anomalies the stream's detectors flagged in `outputs`.
    pub events: Vec<AnomalyEvent>,
    /// Per output, every detector verdict on its fields — only when the
    /// pipeline records scores (`replay`); empty otherwise.
    pub scores: Vec<Vec<FieldScore>>,
    /// Caller-supplied positions (e.g. input line numbers) of the first and
    /// last reading in the batch.
    pub span: (u64, u64),
}

/// One stream: patterns, chain, and the batch being gathered.
pub struct Stream {
    name: String,
    sensors: Vec<SensorPattern>,
    sources: Vec<String>,
    chain: Vec<Supervisor>,
    detectors: Option<DetectorSet>,
    record_scores: bool,
    pending: Vec<Reading>,
    pending_since: Option<Instant>,
    span: (u64, u64),
    batch_size: usize,
    /// Per chain position, a recent input batch (for shadow runs of a new
    /// module version), refreshed at most every [`SAMPLE_EVERY`].
    samples: Vec<Vec<Reading>>,
    sampled_at: Option<Instant>,
    sampling: bool,
}

/// How often a stream copies a batch's inputs for shadow runs: one copy a
/// second bounds the cost to ≤ 64 reading clones per second per stream.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Stream {
    /// Build a stream from its configuration, instantiating every module.
    pub fn build(
        name: &str,
        config: &StreamConfig,
        runtime: &Arc<Runtime>,
        state: &Arc<dyn StateStore>,
        clock: Clock,
    ) -> Result<Self, PipelineError> {
        Self::build_with(name, config, runtime, state, clock, StartFailure::Refuse)
    }

    fn build_with(
        name: &str,
        config: &StreamConfig,
        runtime: &Arc<Runtime>,
        state: &Arc<dyn StateStore>,
        clock: Clock,
        on_start_failure: StartFailure,
    ) -> Result<Self, PipelineError> {
        let mut chain = Vec::with_capacity(config.processors.len());
        for p in &config.processors {
            let load = |source| PipelineError::Load {
                stream: name.to_string(),
                source,
            };
            let module = runtime.load_file(&p.module, Some(&p.name)).map_err(load)?;
            let env = HostEnv {
                state: state.clone(),
                clock,
                config: Arc::new(ModuleConfig::from_toml(&p.config)),
            };
            let policy = p.on_failure.unwrap_or(runtime.limits().on_failure);
            let supervisor = match on_start_failure {
                StartFailure::Refuse => {
                    Supervisor::new(runtime.clone(), module, env, policy).map_err(load)?
                }
                StartFailure::Quarantine => {
                    let s = Supervisor::start(runtime.clone(), module, env, policy);
                    if s.is_quarantined() {
                        log_start_failure(name, &s);
                    }
                    s
                }
            };
            chain.push(supervisor);
        }
        let detectors = if config.detect.detectors.is_empty() {
            None
        } else {
            Some(DetectorSet::new(name, &config.detect).map_err(|source| {
                PipelineError::Detectors {
                    stream: name.to_string(),
                    source,
                }
            })?)
        };
        let batch_size = runtime.limits().batch_size as usize;
        Ok(Stream {
            name: name.to_string(),
            sensors: config.sensors.clone(),
            sources: config.sources.clone(),
            chain,
            detectors,
            record_scores: false,
            pending: Vec::with_capacity(batch_size),
            pending_since: None,
            span: (0, 0),
            batch_size,
            samples: vec![Vec::new(); config.processors.len()],
            sampled_at: None,
            sampling: false,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a reading of `sensor` from `source` belongs to this stream.
    /// Without a source (replay) the stream's source filter is ignored.
    pub fn matches(&self, source: Option<&str>, sensor: &str) -> bool {
        let source_ok = match source {
            Some(src) if !self.sources.is_empty() => self.sources.iter().any(|s| s == src),
            _ => true,
        };
        source_ok && self.sensors.iter().any(|p| p.matches(sensor))
    }

    /// The stream's detectors, if it has any.
    pub fn detectors_mut(&mut self) -> Option<&mut DetectorSet> {
        self.detectors.as_mut()
    }

    /// The supervised modules, in chain order.
    pub fn modules(&self) -> &[Supervisor] {
        &self.chain
    }

    /// The chain positions of the processor called `name`.
    pub fn positions_of(&self, name: &str) -> Vec<usize> {
        self.chain
            .iter()
            .enumerate()
            .filter(|(_, m)| m.name() == name)
            .map(|(i, _)| i)
            .collect()
    }

    /// A recent input batch of the module at `position` (empty if none yet).
    pub fn sample(&self, position: usize) -> &[Reading] {
        self.samples.get(position).map_or(&[], |s| s.as_slice())
    }

    /// Put `module` at `position` and return the one it replaces. Called
    /// between batches, so the partly filled batch goes to the new module:
    /// no reading is dropped or processed twice.
    pub fn replace_module(&mut self, position: usize, module: Supervisor) -> Option<Supervisor> {
        let slot = self.chain.get_mut(position)?;
        Some(std::mem::replace(slot, module))
    }

    /// The module at `position`.
    pub fn module_at(&self, position: usize) -> Option<&Supervisor> {
        self.chain.get(position)
    }

    /// Run `batch` through the chain now.
    pub fn run(&mut self, batch: Vec<Reading>, span: (u64, u64)) -> BatchResult<'_> {
        let mut data = batch;
        let mut errors = Vec::new();
        let sample = self.sampling && self.sampled_at.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY);
        if sample {
            self.sampled_at = Some(Instant::now());
        }
        for (i, module) in self.chain.iter_mut().enumerate() {
            if data.is_empty() {
                break;
            }
            if sample {
                if let Some(s) = self.samples.get_mut(i) {
                    s.clone_from(&data);
                }
            }
            let step = module.process(data);
            if let Some(e) = step.error {
                errors.push(e);
            }
            data = step.outputs;
        }
        let mut events = Vec::new();
        let mut scores = Vec::new();
        if let Some(set) = &mut self.detectors {
            for r in &data {
                if self.record_scores {
                    let mut s = Vec::new();
                    set.observe_into(r, &mut events, Some(&mut s));
                    scores.push(s);
                } else {
                    set.observe_into(r, &mut events, None);
                }
            }
        }
        BatchResult {
            stream: &self.name,
            outputs: data,
            errors,
            events,
            scores,
            span,
        }
    }
}

/// Every configured stream.
pub struct Pipeline {
    streams: Vec<Stream>,
}

impl Pipeline {
    /// Build every stream of `config` (in name order); fails if any module
    /// cannot be loaded or started.
    pub fn build(
        config: &Config,
        runtime: Arc<Runtime>,
        state: Arc<dyn StateStore>,
        clock: Clock,
    ) -> Result<Self, PipelineError> {
        Self::build_with(config, runtime, state, clock, StartFailure::Refuse)
    }

    /// Build every stream of `config`, deciding with `on_start_failure`
    /// what a module that loads but cannot start does to the build. A
    /// module file that cannot be loaded at all (missing, not wasm,
    /// invalid, wrong ABI shape) always fails it.
    pub fn build_with(
        config: &Config,
        runtime: Arc<Runtime>,
        state: Arc<dyn StateStore>,
        clock: Clock,
        on_start_failure: StartFailure,
    ) -> Result<Self, PipelineError> {
        let streams = config
            .streams
            .iter()
            .map(|(name, sc)| {
                Stream::build_with(name, sc, &runtime, &state, clock, on_start_failure)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipeline { streams })
    }

    /// The streams, in name order.
    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    /// Keep recent module inputs for shadow runs (the daemon with OTA on).
    pub fn keep_samples(&mut self, on: bool) {
        for s in &mut self.streams {
            s.sampling = on;
        }
    }

    /// Record every detector verdict per output (`replay` prints them).
    pub fn record_scores(&mut self, on: bool) {
        for s in &mut self.streams {
            s.record_scores = on;
        }
    }

    /// The streams, mutably (detector state restore and snapshots).
    pub fn streams_mut(&mut self) -> &mut [Stream] {
        &mut self.streams
    }

    /// Statistics of every module: (stream, module, stats).
    pub fn module_stats(&self) -> impl Iterator<Item = (&str, &str, &ModuleStats)> {
        self.streams.iter().flat_map(|s| {
            s.chain
                .iter()
                .map(move |m| (s.name.as_str(), m.name(), m.stats()))
        })
    }

    /// Route one reading (at caller position `pos`) to every matching stream;
    /// each stream whose batch becomes full runs it and hands the result to
    /// `sink`. Returns how many streams took the reading.
    pub fn push<E>(
        &mut self,
        reading: Reading,
        source: Option<&str>,
        pos: u64,
        sink: &mut impl FnMut(BatchResult<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        // Two passes instead of collecting the matches: no allocation per
        // reading, and the reading is moved (not cloned) into the last stream.
        let n = self
            .streams
            .iter()
            .filter(|s| s.matches(source, &reading.sensor))
            .count();
        let mut reading = Some(reading);
        let mut seen = 0;
        for stream in &mut self.streams {
            if seen == n {
                break;
            }
            let Some(sensor) = reading.as_ref().map(|r| r.sensor.as_str()) else {
                break;
            };
            if !stream.matches(source, sensor) {
                continue;
            }
            seen += 1;
            let r = if seen == n {
                reading.take()
            } else {
                reading.clone()
            };
            let Some(r) = r else { break };
            if stream.pending.is_empty() {
                stream.span.0 = pos;
                stream.pending_since = Some(Instant::now());
            }
            stream.span.1 = pos;
            stream.pending.push(r);
            if stream.pending.len() >= stream.batch_size {
                let batch =
                    std::mem::replace(&mut stream.pending, Vec::with_capacity(stream.batch_size));
                stream.pending_since = None;
                let span = stream.span;
                sink(stream.run(batch, span))?;
            }
        }
        Ok(n)
    }

    /// Run every partly filled batch.
    pub fn flush<E>(
        &mut self,
        sink: &mut impl FnMut(BatchResult<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.flush_older_than(Duration::ZERO, sink)
    }

    /// Run the partly filled batches whose first reading waited `max_wait`
    /// or longer (the daemon's batch timeout: latency stays bounded when
    /// readings trickle in).
    pub fn flush_older_than<E>(
        &mut self,
        max_wait: Duration,
        sink: &mut impl FnMut(BatchResult<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        for stream in &mut self.streams {
            let due = stream
                .pending_since
                .is_some_and(|t| now.saturating_duration_since(t) >= max_wait);
            if due && !stream.pending.is_empty() {
                let batch = std::mem::take(&mut stream.pending);
                stream.pending_since = None;
                let span = stream.span;
                sink(stream.run(batch, span))?;
            }
        }
        Ok(())
    }

    /// The smallest caller position still waiting in a partly filled batch:
    /// every reading pushed at a smaller position has been through its
    /// chain and detectors (the daemon acknowledges inbound messages up to
    /// here). `None` when nothing waits.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.streams
            .iter()
            .filter(|s| !s.pending.is_empty())
            .map(|s| s.span.0)
            .min()
    }

    /// Whether any stream has readings waiting in a partly filled batch.
    pub fn has_pending(&self) -> bool {
        self.streams.iter().any(|s| !s.pending.is_empty())
    }

    /// When the oldest waiting batch becomes due under `max_wait`.
    pub fn next_due(&self, max_wait: Duration) -> Option<Instant> {
        self.streams
            .iter()
            .filter_map(|s| s.pending_since)
            .min()
            .map(|t| t + max_wait)
    }
}

/// The journal line for a module quarantined because it could not start.
fn log_start_failure(stream: &str, module: &Supervisor) {
    let stats = module.stats();
    tracing::error!(
        stream,
        module = module.name(),
        kind = stats.last_error_kind.map_or("trap", |k| k.as_str()),
        error = stats.last_error.as_deref().unwrap_or(""),
        quarantine_secs = module.runtime().limits().quarantine_secs,
        "module failed to start: quarantined; the rest of the gateway runs, its readings are {}",
        match module.policy() {
            crate::runtime::FailurePolicy::PassThrough => "passed through unprocessed",
            crate::runtime::FailurePolicy::Drop => "dropped",
        }
    );
}
