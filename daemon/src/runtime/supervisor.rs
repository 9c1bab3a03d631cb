//! Supervision of one module in a stream: re-instantiation after a failed
//! call, the failure window that quarantines a misbehaving module, the
//! failure policy, and per-module statistics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{ErrorKind, LoadError, ProcessorError};
use super::host::{GuestLog, HostEnv};
use super::instance::Instance;
use super::limits::FailurePolicy;
use super::{CompiledModule, Runtime};
use crate::reading::Reading;

/// Upper bounds of the call-latency histogram buckets, microseconds (the
/// last bucket is everything above).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Statistics of one module, as the metrics endpoint will export them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleStats {
    /// Calls of `wasmgate_process`, failed ones included.
    pub calls: u64,
    /// Readings handed to the module.
    pub readings_in: u64,
    /// Readings the module returned.
    pub readings_out: u64,
    /// Fuel consumed by successful calls.
    pub fuel_used: u64,
    /// Failed calls by [`ErrorKind::index`].
    pub errors: [u64; 6],
    /// The most recent error, rendered.
    pub last_error: Option<String>,
    /// The kind of the most recent error.
    pub last_error_kind: Option<ErrorKind>,
    /// Readings passed on unprocessed (failed batch or quarantine, `pass-through`).
    pub passed_through: u64,
    /// Readings dropped (failed batch or quarantine, `drop`).
    pub dropped: u64,
    /// Fresh instances created after a failure.
    pub restarts: u64,
    /// Times the module was quarantined.
    pub quarantines: u64,
    /// Whether the module is quarantined now.
    pub quarantined: bool,
    /// Call latency histogram, counts per [`LATENCY_BUCKETS_US`] bucket (+1 overflow).
    pub latency_buckets: [u64; 15],
    /// Sum of call latencies, microseconds.
    pub latency_sum_us: u64,
}

impl ModuleStats {
    /// Failed calls of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Failed calls of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    fn observe_latency(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_sum_us = self.latency_sum_us.saturating_add(us);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i] += 1;
    }
}

/// What became of one batch.
#[derive(Debug)]
pub struct Step {
    /// What goes on to the next stage: the module's outputs, or, after a
    /// failure or while quarantined, the batch itself (`pass-through`) or
    /// nothing (`drop`).
    pub outputs: Vec<Reading>,
    /// The failure, when the call failed.
    pub error: Option<ProcessorError>,
    /// The module was quarantined and not called.
    pub skipped: bool,
}

#[derive(Debug, Clone, Copy)]
enum Quarantine {
    Until(Instant),
    UntilRestart,
}

/// One module of a stream's chain, supervised.
pub struct Supervisor {
    runtime: Arc<Runtime>,
    module: CompiledModule,
    env: HostEnv,
    policy: FailurePolicy,
    /// The guest-log rate limit, kept across restarts.
    log: GuestLog,
    instance: Option<Instance>,
    failures: VecDeque<Instant>,
    quarantine: Option<Quarantine>,
    stats: ModuleStats,
}

impl Supervisor {
    /// Instantiate `module` (running its init) and supervise it. Fails when
    /// the module cannot start at all, so configuration mistakes surface at
    /// start-up rather than at the first reading.
    pub fn new(
        runtime: Arc<Runtime>,
        module: CompiledModule,
        env: HostEnv,
        policy: FailurePolicy,
    ) -> Result<Self, LoadError> {
        let log = GuestLog::new();
        let instance = runtime.instantiate_with_log(&module, env.clone(), log.clone())?;
        Ok(Supervisor {
            runtime,
            module,
            env,
            policy,
            log,
            instance: Some(instance),
            failures: VecDeque::new(),
            quarantine: None,
            stats: ModuleStats::default(),
        })
    }

    /// Like [`Supervisor::new`], but a module that cannot start (refused at
    /// instantiate, e.g. an initial memory or table above the limits, or
    /// failing its `wasmgate_init`) does not fail the caller: it is
    /// quarantined at once, its failure recorded in the statistics (an
    /// error of its kind, `last_error`, one quarantine), and its batches
    /// get the failure policy. When the quarantine ends it is tried afresh,
    /// like any quarantined module. The daemon builds its streams this way
    /// (so one module that cannot start does not stop the others);
    /// `check-config` and `replay` use [`Supervisor::new`] and refuse.
    pub fn start(
        runtime: Arc<Runtime>,
        module: CompiledModule,
        env: HostEnv,
        policy: FailurePolicy,
    ) -> Self {
        let log = GuestLog::new();
        let started = runtime.instantiate_with_log(&module, env.clone(), log.clone());
        let mut s = Supervisor {
            runtime,
            module,
            env,
            policy,
            log,
            instance: None,
            failures: VecDeque::new(),
            quarantine: None,
            stats: ModuleStats::default(),
        };
        match started {
            Ok(instance) => s.instance = Some(instance),
            Err(e) => {
                let (error, described) = s.start_failure(e);
                s.record(&error, described);
                s.enter_quarantine(Instant::now());
            }
        }
        s
    }

    /// A failure to instantiate, classified like a failed call, and
    /// described as the refusal it is ("init failed: …", "refused at
    /// instantiate: …").
    fn start_failure(&self, e: LoadError) -> (ProcessorError, String) {
        let described = e.to_string();
        let error = e.start_failure().unwrap_or_else(|| ProcessorError::Trap {
            module: Arc::from(self.name()),
            message: described.clone(),
        });
        (error, described)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        self.module.name()
    }

    /// The compiled module (hash, size).
    pub fn module(&self) -> &CompiledModule {
        &self.module
    }

    /// What the module's instances are connected to (state, clock, config).
    pub fn env(&self) -> &HostEnv {
        &self.env
    }

    /// The failure policy in force.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The runtime the module was loaded into.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Statistics so far.
    pub fn stats(&self) -> &ModuleStats {
        &self.stats
    }

    /// Whether the module is quarantined now.
    pub fn is_quarantined(&self) -> bool {
        self.quarantine.is_some()
    }

    /// Process one batch now.
    pub fn process(&mut self, batch: Vec<Reading>) -> Step {
        self.process_at(batch, Instant::now())
    }

    /// Process one batch at time `now` (tests drive the failure window with it).
    pub fn process_at(&mut self, batch: Vec<Reading>, now: Instant) -> Step {
        if let Some(q) = self.quarantine {
            let expired = matches!(q, Quarantine::Until(t) if now >= t);
            if !expired {
                return self.bypass(batch, None, true);
            }
            tracing::info!(
                module = self.name(),
                "quarantine over; starting a fresh instance"
            );
            self.quarantine = None;
            self.stats.quarantined = false;
        }
        let instance = match self.instance.take() {
            Some(i) => i,
            None => match self.runtime.instantiate_with_log(
                &self.module,
                self.env.clone(),
                self.log.clone(),
            ) {
                Ok(i) => {
                    self.stats.restarts += 1;
                    i
                }
                Err(e) => {
                    let (error, described) = self.start_failure(e);
                    self.stats.calls += 1;
                    self.stats.readings_in += batch.len() as u64;
                    return self.fail(batch, error, described, now);
                }
            },
        };
        let mut instance = instance;
        self.stats.calls += 1;
        self.stats.readings_in += batch.len() as u64;
        let started = Instant::now();
        let result = instance.process(&batch);
        self.stats.observe_latency(started.elapsed());
        match result {
            Ok((outputs, figures)) => {
                self.stats.readings_out += outputs.len() as u64;
                self.stats.fuel_used = self.stats.fuel_used.saturating_add(figures.fuel);
                self.instance = Some(instance);
                Step {
                    outputs,
                    error: None,
                    skipped: false,
                }
            }
            Err(error) => {
                // A guest error leaves the instance consistent; anything else
                // may have left its memory half-updated: start afresh.
                if error.kind() == ErrorKind::GuestError {
                    self.instance = Some(instance);
                }
                let described = error.to_string();
                self.fail(batch, error, described, now)
            }
        }
    }

    /// Count a failure in the statistics.
    fn record(&mut self, error: &ProcessorError, described: String) {
        let kind = error.kind();
        self.stats.errors[kind.index()] += 1;
        self.stats.last_error = Some(described);
        self.stats.last_error_kind = Some(kind);
    }

    /// Quarantine the module from `now` (until restart with
    /// `quarantine_secs = 0`).
    fn enter_quarantine(&mut self, now: Instant) {
        let secs = self.runtime.limits().quarantine_secs;
        self.failures.clear();
        self.instance = None;
        self.quarantine = Some(if secs == 0 {
            Quarantine::UntilRestart
        } else {
            Quarantine::Until(now + Duration::from_secs(secs))
        });
        self.stats.quarantines += 1;
        self.stats.quarantined = true;
    }

    /// A failed call (or failed restart): count it, apply the failure
    /// window, and hand the batch on per the policy. `described` is the
    /// error as the statistics and the log show it.
    fn fail(
        &mut self,
        batch: Vec<Reading>,
        error: ProcessorError,
        described: String,
        now: Instant,
    ) -> Step {
        let kind = error.kind();
        tracing::warn!(module = self.name(), kind = kind.as_str(), error = %described, readings = batch.len(), "processor call failed");
        self.record(&error, described);
        let runtime = self.runtime.clone();
        let limits = runtime.limits();
        let window = Duration::from_secs(limits.failure_window_secs);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= limits.failure_threshold as usize {
            self.enter_quarantine(now);
            tracing::error!(
                module = self.name(),
                kind = kind.as_str(),
                failures = limits.failure_threshold,
                window_secs = limits.failure_window_secs,
                quarantine_secs = limits.quarantine_secs,
                policy = ?self.policy,
                "module quarantined after repeated failures; its readings are {}",
                match self.policy {
                    FailurePolicy::PassThrough => "passed through unprocessed",
                    FailurePolicy::Drop => "dropped",
                }
            );
        }
        self.bypass(batch, Some(error), false)
    }

    fn bypass(
        &mut self,
        batch: Vec<Reading>,
        error: Option<ProcessorError>,
        skipped: bool,
    ) -> Step {
        let outputs = match self.policy {
            FailurePolicy::PassThrough => {
                self.stats.passed_through += batch.len() as u64;
                batch
            }
            FailurePolicy::Drop => {
                self.stats.dropped += batch.len() as u64;
                Vec::new()
            }
        };
        Step {
            outputs,
            error,
            skipped,
        }
    }
}
