//! Hostile modules under load: prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo bench -p wasmgate --bench hostile
//! WASMGATE_BENCH_RUNS=7 WASMGATE_BENCH_SECS=10 cargo bench -p wasmgate --bench hostile
//! ```
//!
//! Two normal streams (the committed `calibrate` example) are measured in
//! three set-ups, each built afresh for every phase of every run:
//!
//! * **baseline**: the normal streams alone;
//! * **benign**: plus one extra stream per corpus module running a
//!   well-behaved module (no outputs), fed like the hostile streams: the
//!   cost of the extra streams and readings themselves (routing, batching);
//! * **hostile**: plus one stream per module of the hostile corpus
//!   (`tests/hostile_modules/corpus.rs`, the same the integration test
//!   runs), every one of them going from its first reading to quarantine
//!   within the phase.
//!
//! Extra streams get one reading per 200 normal readings each and use
//! `on_failure = "drop"`, so nothing of theirs goes on: the normal streams'
//! outputs are the only outputs.
//!
//! Phases:
//!
//! 1. **Saturation** (`WASMGATE_BENCH_SECS` / 2 s, default 5 s): a feeder
//!    thread pushes readings as fast as the bounded queue takes them;
//!    throughput is normal outputs per second.
//! 2. **Paced** (`WASMGATE_BENCH_SECS`, default 10 s): `WASMGATE_BENCH_RATE`
//!    normal readings/s (default 2 000, half per stream); latency is each
//!    normal reading's scheduled send time → its output, so a stalled
//!    processing thread shows in full (no coordinated omission).
//!
//! Each figure is given for the whole phase, which includes the corpus'
//! quarantine transient (every hostile module's failed calls, from its
//! first reading to its quarantine), and for its second half, by which time
//! every hostile module is quarantined (a note is printed if one is not):
//! the steady state of a gateway with hostile modules loaded, which lasts
//! `quarantine_secs` (300 s) before they are tried again. The transient
//! itself is printed: the processing time spent in hostile calls.
//!
//! **Harness: in process**, deliberately. A hostile module can only reach the
//! normal streams through what they share with it: the one processing task
//! that runs every stream's modules (`run.rs`). This harness is that task —
//! the daemon's `Pipeline`, built as `wasmgate run` builds it (sled state,
//! a module that cannot start quarantined), a bounded queue of 256 in front
//! of it, partial batches run when the queue is empty (as with MQTT QoS 1
//! intake) or after 100 ms — without the broker, the outbox's fsyncs and
//! the uplink, whose cost is the same in every set-up (the extra streams
//! produce nothing) and whose noise on a shared machine would swamp the
//! difference being measured. The real binary under the same corpus is the
//! integration test `tests/hostile_modules.rs` (every normal reading out,
//! `/healthz` always 200).
//!
//! `WASMGATE_BENCH_FUEL_PER_CALL` and `WASMGATE_BENCH_FUEL_PER_READING`
//! replace the default fuel budget (2 000 000 + 50 000 per reading) in
//! every set-up, to see what a tighter budget does to the transient.
//!
//! Every figure is the median of `WASMGATE_BENCH_RUNS` runs (default 5),
//! with the spread (min–max). A run measures the three set-ups back to back;
//! the ratios to the baseline are taken within each run and their median
//! (and spread) reported, so drifts in the machine's load between runs
//! cancel out. With `WASMGATE_BENCH_OUT=<file>`, each median
//! is appended to that file as a JSON line
//! (`{"bench","name","value","unit","min","max"}`).

mod common;
#[path = "../../tests/hostile_modules/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use common::{env_u64, examples_dir, machine, median_spread, percentile, record};
use wasmgate::Reading;
use wasmgate::config::Config;
use wasmgate::pipeline::{BatchResult, Pipeline, StartFailure};
use wasmgate::runtime::{ErrorKind, Limits, Runtime};
use wasmgate::state::SledState;

const BENCH: &str = "hostile";
/// The normal streams.
const NORMAL: [&str; 2] = ["calm-a", "calm-b"];
/// Normal readings per reading of each extra stream.
const EXTRA_EVERY: u64 = 200;
/// The daemon's source queue, in messages (`run.rs` `SOURCE_QUEUE`).
const QUEUE: usize = 256;
/// The daemon's batch timeout (`run.rs` `BATCH_WAIT`).
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// Allowed slowdown.
const WITHIN: f64 = 0.20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Baseline,
    Benign,
    Hostile,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Baseline => "baseline (normal streams alone)",
            Setup::Benign => "benign extra streams",
            Setup::Hostile => "hostile corpus",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setup::Baseline => "baseline",
            Setup::Benign => "benign",
            Setup::Hostile => "hostile",
        }
    }
}

/// A module that takes every batch and returns nothing, cheaply.
fn benign_module() -> Vec<u8> {
    corpus::module(
        1,
        r#"(func (export "wasmgate_process") (param i32 i32) (result i64) (i64.const 0))"#,
    )
}

/// The module files, written once: (name, path, expected ending).
struct Files {
    _dir: tempfile::TempDir,
    calibrate: PathBuf,
    benign: PathBuf,
    hostile: Vec<(String, PathBuf, corpus::Ending)>,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let benign = dir.path().join("benign.wasm");
    std::fs::write(&benign, benign_module()).expect("write module");
    let hostile = corpus::corpus()
        .into_iter()
        .map(|h| {
            let path = dir.path().join(format!("{}.wasm", h.name));
            std::fs::write(&path, &h.wasm).expect("write module");
            (h.name.to_string(), path, h.ending)
        })
        .collect();
    Files {
        calibrate: examples_dir().join("calibrate.wasm"),
        benign,
        hostile,
        _dir: dir,
    }
}

/// The extra streams of a set-up: (stream/sensor, module name, file).
fn extras(setup: Setup, f: &Files) -> Vec<(String, String, PathBuf)> {
    match setup {
        Setup::Baseline => Vec::new(),
        Setup::Benign => f
            .hostile
            .iter()
            .map(|(n, _, _)| (format!("h-{n}"), format!("benign-{n}"), f.benign.clone()))
            .collect(),
        Setup::Hostile => f
            .hostile
            .iter()
            .map(|(n, p, _)| (format!("h-{n}"), n.clone(), p.clone()))
            .collect(),
    }
}

/// The `[runtime]` limits: the defaults, or the fuel budget of
/// `WASMGATE_BENCH_FUEL_PER_CALL` / `WASMGATE_BENCH_FUEL_PER_READING` (to
/// see what a tighter budget does to the transient).
fn limits() -> Limits {
    let d = Limits::default();
    Limits {
        fuel_per_call: env_u64("WASMGATE_BENCH_FUEL_PER_CALL", d.fuel_per_call),
        fuel_per_reading: env_u64("WASMGATE_BENCH_FUEL_PER_READING", d.fuel_per_reading),
        ..d
    }
}

/// The pipeline `wasmgate run` would build for the set-up, on a fresh sled
/// database in `dir`.
fn pipeline(setup: Setup, f: &Files, dir: &Path) -> Pipeline {
    let limits = limits();
    let mut text = format!(
        "[runtime]\nfuel_per_call = {}\nfuel_per_reading = {}\n",
        limits.fuel_per_call, limits.fuel_per_reading
    );
    for s in NORMAL {
        text.push_str(&format!(
            "[streams.{s}]\nsensors = [\"{s}\"]\n[[streams.{s}.processors]]\nmodule = \"{}\"\n\
             config = {{ fields = {{ temp = {{ scale = 1.8, offset = 32.0 }} }} }}\n",
            f.calibrate.display()
        ));
    }
    for (stream, name, file) in extras(setup, f) {
        text.push_str(&format!(
            "[streams.{stream}]\nsensors = [\"{stream}\"]\n[[streams.{stream}.processors]]\n\
             module = \"{}\"\nname = \"{name}\"\non_failure = \"drop\"\n",
            file.display()
        ));
    }
    let config = Config::from_str_at(&text, dir.join("bench.toml")).expect("bench config");
    let runtime = Arc::new(Runtime::new(config.runtime.clone()).expect("runtime"));
    let db = wasmgate::state::open_db(&dir.join("state"), 4 << 20).expect("sled");
    Pipeline::build_with(
        &config,
        runtime,
        Arc::new(SledState::from_db(db)),
        wasmgate::runtime::Clock::System,
        StartFailure::Quarantine,
    )
    .expect("pipeline")
}

/// One message from the feeder: a reading whose field `t_us` is its
/// scheduled send time (µs since the phase started).
struct Msg {
    reading: Reading,
}

/// The order readings are fed in: `EXTRA_EVERY` normal readings
/// (alternating streams), then one for each extra stream.
fn sensors(setup: Setup, f: &Files) -> Vec<(String, bool)> {
    let mut cycle = Vec::new();
    for i in 0..EXTRA_EVERY {
        cycle.push((NORMAL[i as usize % NORMAL.len()].to_string(), true));
    }
    for (stream, _, _) in extras(setup, f) {
        cycle.push((stream, false));
    }
    cycle
}

fn reading(sensor: &str, i: u64, t_us: u64) -> Reading {
    Reading::new(sensor, 1_714_550_400_000 + i as i64)
        .with_field("temp", 20.0 + (i % 100) as f64 * 0.05)
        .with_field("t_us", t_us as f64)
}

/// Feed readings: as fast as the queue takes them (`rate` = None) or at
/// `rate` normal readings/s, for `secs`.
fn feeder(
    tx: SyncSender<Msg>,
    cycle: Vec<(String, bool)>,
    start: Instant,
    secs: Duration,
    rate: Option<u64>,
) -> u64 {
    let mut normal = 0u64;
    let mut i = 0u64;
    'feed: loop {
        for (sensor, is_normal) in &cycle {
            // The scheduled time of this reading: normal readings are spaced
            // 1/rate apart; extra readings go with the one before them.
            let due_us = match rate {
                Some(r) => normal * 1_000_000 / r,
                None => start.elapsed().as_micros() as u64,
            };
            if Duration::from_micros(due_us) >= secs {
                break 'feed;
            }
            if rate.is_some() {
                let due = start + Duration::from_micros(due_us);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            if tx
                .send(Msg {
                    reading: reading(sensor, i, due_us),
                })
                .is_err()
            {
                break 'feed;
            }
            i += 1;
            if *is_normal {
                normal += 1;
            }
        }
    }
    normal
}

/// What one phase measured.
#[derive(Debug, Default, Clone)]
struct Phase {
    /// Normal readings fed.
    fed: u64,
    /// Per normal output: (scheduled send, done), µs since the phase started.
    done: Vec<(u64, u64)>,
    /// When an extra stream last reported a failed call, µs (0: never).
    last_extra_failure_us: u64,
    /// Per extra module: (failures by kind, quarantined, µs spent in calls).
    modules: BTreeMap<String, ([u64; 6], bool, u64)>,
    /// Fuel per call of the normal streams' module (mean).
    normal_fuel_per_call: f64,
    /// Mean readings per call of the normal streams' module.
    normal_batch: f64,
}

impl Phase {
    /// Normal outputs per second done within `[from, to)` µs.
    fn throughput(&self, from: u64, to: u64) -> f64 {
        let n = self
            .done
            .iter()
            .filter(|(_, d)| (from..to).contains(d))
            .count();
        n as f64 / ((to - from) as f64 / 1e6)
    }

    /// Sorted latencies (ms) of the normal readings sent at or after `from` µs.
    fn latencies_ms(&self, from: u64) -> Vec<f64> {
        let mut l: Vec<f64> = self
            .done
            .iter()
            .filter(|(s, _)| *s >= from)
            .map(|(s, d)| d.saturating_sub(*s) as f64 / 1e3)
            .collect();
        l.sort_by(|a, b| a.total_cmp(b));
        l
    }
}

/// The processing task: `run.rs`'s loop around the pipeline.
fn process(mut p: Pipeline, rx: Receiver<Msg>, start: Instant) -> Phase {
    let mut phase = Phase::default();
    let mut sink = |r: BatchResult<'_>| -> Result<(), ()> {
        let now_us = start.elapsed().as_micros() as u64;
        if NORMAL.contains(&r.stream) {
            for o in &r.outputs {
                let sent = o.field("t_us").unwrap_or(0.0) as u64;
                phase.done.push((sent, now_us));
            }
        } else if !r.errors.is_empty() {
            phase.last_extra_failure_us = now_us;
        }
        Ok(())
    };
    let mut next: Option<Msg> = None;
    let mut pos = 0u64;
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None => {
                let wait = p
                    .next_due(BATCH_WAIT)
                    .map_or(BATCH_WAIT, |t| t.saturating_duration_since(Instant::now()));
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = p.flush_older_than(BATCH_WAIT, &mut sink);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let _ = p.push(msg.reading, Some("in"), pos, &mut sink);
        pos += 1;
        // As the daemon with QoS 1 intake: partial batches run as soon as
        // nothing else is waiting.
        match rx.try_recv() {
            Ok(m) => next = Some(m),
            Err(TryRecvError::Empty) => {
                let _ = p.flush(&mut sink);
            }
            Err(TryRecvError::Disconnected) => break,
        }
    }
    let _ = p.flush(&mut sink);
    let (mut fuel, mut calls, mut readings) = (0u64, 0u64, 0u64);
    for (stream, module, stats) in p.module_stats() {
        if NORMAL.contains(&stream) {
            fuel += stats.fuel_used;
            calls += stats.calls;
            readings += stats.readings_in;
        } else {
            phase.modules.insert(
                module.to_string(),
                (stats.errors, stats.quarantined, stats.latency_sum_us),
            );
        }
    }
    phase.normal_fuel_per_call = fuel as f64 / calls.max(1) as f64;
    phase.normal_batch = readings as f64 / calls.max(1) as f64;
    phase
}

fn run_phase(setup: Setup, f: &Files, secs: Duration, rate: Option<u64>) -> Phase {
    let dir = tempfile::Builder::new()
        .prefix("hostile-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    let p = pipeline(setup, f, dir.path());
    let (tx, rx) = sync_channel(QUEUE);
    let cycle = sensors(setup, f);
    let start = Instant::now();
    let feeding = std::thread::spawn(move || feeder(tx, cycle, start, secs, rate));
    let mut phase = process(p, rx, start);
    phase.fed = feeding.join().expect("feeder");
    assert_eq!(
        phase.done.len() as u64,
        phase.fed,
        "{setup:?}: every normal reading produces its output"
    );
    if setup == Setup::Hostile {
        for (name, _, ending) in &f.hostile {
            let (errors, quarantined, _) = phase.modules[name.as_str()];
            let kind = ending.kind();
            assert!(quarantined, "{name} not quarantined");
            assert!(errors[kind.index()] >= 1, "{name}: no {kind} failure");
            let others: u64 = ErrorKind::ALL
                .iter()
                .filter(|k| **k != kind)
                .map(|k| errors[k.index()])
                .sum();
            assert_eq!(others, 0, "{name}: failures of another kind: {errors:?}");
        }
    }
    phase
}

/// Figures of one set-up over the runs, by name.
type Figures = BTreeMap<&'static str, Vec<f64>>;

/// The figures, in print order: (key, heading, unit).
const COLUMNS: [(&str, &str, &str); 6] = [
    ("throughput", "readings/s", "readings/s"),
    ("throughput_steady", "readings/s 2nd half", "readings/s"),
    ("p50", "p50 ms", "ms"),
    ("p99", "p99 ms", "ms"),
    ("p99_steady", "p99 ms 2nd half", "ms"),
    ("max", "max ms", "ms"),
];

fn main() {
    let runs = env_u64("WASMGATE_BENCH_RUNS", 5).max(1) as usize;
    let secs = env_u64("WASMGATE_BENCH_SECS", 10).max(2);
    let rate = env_u64("WASMGATE_BENCH_RATE", 2_000).max(10);
    let (sat_secs, paced_secs) = (secs / 2, secs);
    let f = files();
    println!(
        "hostile-module corpus under load — {}",
        machine(std::env::consts::ARCH)
    );
    println!(
        "{} hostile modules; 2 normal streams (calibrate); each extra stream gets 1 reading \
         per {EXTRA_EVERY} normal readings; {runs} runs; saturation {sat_secs} s, paced \
         {paced_secs} s at {rate} normal readings/s; fuel per call {} + {} per reading \
         (defaults otherwise)",
        f.hostile.len(),
        limits().fuel_per_call,
        limits().fuel_per_reading,
    );
    let setups = [Setup::Baseline, Setup::Benign, Setup::Hostile];
    let mut figures: BTreeMap<Setup, Figures> = BTreeMap::new();
    let mut transient: Vec<(f64, f64, f64)> = Vec::new();
    let mut last_hostile = Phase::default();
    let mut fuel = (0.0, 0.0);
    for run in 0..runs {
        for setup in setups {
            let sat = run_phase(setup, &f, Duration::from_secs(sat_secs), None);
            let paced = run_phase(setup, &f, Duration::from_secs(paced_secs), Some(rate));
            let (sat_us, paced_us) = (sat_secs * 1_000_000, paced_secs * 1_000_000);
            let all = paced.latencies_ms(0);
            let steady = paced.latencies_ms(paced_us / 2);
            let fig = figures.entry(setup).or_default();
            let mut put = |k, v| fig.entry(k).or_default().push(v);
            put("throughput", sat.throughput(0, sat_us));
            put("throughput_steady", sat.throughput(sat_us / 2, sat_us));
            put("p50", percentile(&all, 0.50));
            put("p99", percentile(&all, 0.99));
            put("p99_steady", percentile(&steady, 0.99));
            put("max", percentile(&all, 1.0));
            eprintln!(
                "run {}/{runs} {:8}: {:>7.0} readings/s ({:>7.0} 2nd half), p50 {:.3} ms, \
                 p99 {:.3} ms ({:.3} 2nd half), max {:.1} ms",
                run + 1,
                setup.key(),
                sat.throughput(0, sat_us),
                sat.throughput(sat_us / 2, sat_us),
                percentile(&all, 0.50),
                percentile(&all, 0.99),
                percentile(&steady, 0.99),
                percentile(&all, 1.0),
            );
            if setup == Setup::Baseline {
                fuel = (sat.normal_fuel_per_call, sat.normal_batch);
            }
            if setup == Setup::Hostile {
                for (what, phase, us) in [("saturation", &sat, sat_us), ("paced", &paced, paced_us)]
                {
                    if phase.last_extra_failure_us >= us / 2 {
                        eprintln!(
                            "  note: {what}: a hostile module still failed at {:.2} s, in the \
                             second half",
                            phase.last_extra_failure_us as f64 / 1e6
                        );
                    }
                }
                let stall = |p: &Phase| p.modules.values().map(|m| m.2).sum::<u64>() as f64 / 1e3;
                transient.push((
                    stall(&sat),
                    stall(&paced),
                    paced.last_extra_failure_us as f64 / 1e3,
                ));
                last_hostile = sat;
            }
        }
    }

    println!();
    print!("{:32}", "set-up (median, min–max)");
    for (_, heading, _) in COLUMNS {
        print!(" {heading:>26}");
    }
    println!();
    for setup in setups {
        print!("{:32}", setup.label());
        for (key, _, unit) in COLUMNS {
            let m = median_spread(figures[&setup][key].clone());
            let cell = if unit == "ms" {
                format!("{:.3} ({:.3}–{:.3})", m.0, m.1, m.2)
            } else {
                format!("{:.0} ({:.0}–{:.0})", m.0, m.1, m.2)
            };
            print!(" {cell:>26}");
            let name = format!("{}_{key}", setup.key());
            record(BENCH, &name, m.0, unit, m.1, m.2);
        }
        println!();
    }
    println!();
    for setup in [Setup::Benign, Setup::Hostile] {
        // Paired: each run's set-up against the same run's baseline (its
        // phases run back to back), then the median over the runs, so a
        // change in the machine's load between runs cancels out.
        let ratio = |k: &str| {
            let (s, b) = (&figures[&setup][k], &figures[&Setup::Baseline][k]);
            median_spread(s.iter().zip(b).map(|(s, b)| s / b).collect())
        };
        let verdict = |k: &str| {
            let (r, _, _) = ratio(k);
            let ok = if k.starts_with("throughput") {
                r >= 1.0 - WITHIN
            } else {
                r <= 1.0 + WITHIN
            };
            format!(
                "{k} {r:.2} ({})",
                if ok { "within 20%" } else { "NOT within 20%" }
            )
        };
        println!(
            "{} / baseline: {}",
            setup.key(),
            [
                "throughput",
                "throughput_steady",
                "p50",
                "p99",
                "p99_steady"
            ]
            .map(verdict)
            .join(", ")
        );
        for k in [
            "throughput",
            "throughput_steady",
            "p99",
            "p99_steady",
            "max",
        ] {
            let (r, lo, hi) = ratio(k);
            record(BENCH, &format!("{}_{k}_ratio", setup.key()), r, "x", lo, hi);
        }
    }
    let sat_stall = median_spread(transient.iter().map(|t| t.0).collect());
    let paced_stall = median_spread(transient.iter().map(|t| t.1).collect());
    let quarantined_by = median_spread(transient.iter().map(|t| t.2).collect());
    println!();
    println!(
        "quarantine transient of the corpus: {:.0} ms ({:.0}–{:.0}) of processing time in hostile \
         calls at saturation (batches of up to 64), {:.0} ms ({:.0}–{:.0}) paced; the last hostile \
         failure {:.0} ms after the paced phase began",
        sat_stall.0,
        sat_stall.1,
        sat_stall.2,
        paced_stall.0,
        paced_stall.1,
        paced_stall.2,
        quarantined_by.0
    );
    let (m, lo, hi) = sat_stall;
    record(BENCH, "hostile_transient_saturation", m, "ms", lo, hi);
    let (m, lo, hi) = paced_stall;
    record(BENCH, "hostile_transient_paced", m, "ms", lo, hi);
    let budget = limits().fuel_for(fuel.1.round() as usize);
    println!(
        "calibrate uses {:.0} fuel per call (mean batch {:.1} readings) against a budget of {} \
         for that batch: a looping module burns {:.0}× that per failed call",
        fuel.0,
        fuel.1,
        budget,
        budget as f64 / fuel.0.max(1.0)
    );

    println!();
    println!("how each hostile module ended (last saturation run):");
    println!(
        "  {:16} {:24} {:>9} {:>12} {:>16}",
        "module", "ends as", "failures", "quarantined", "ms in its calls"
    );
    for (name, _, ending) in &f.hostile {
        let (errors, quarantined, us) = last_hostile.modules[name.as_str()];
        let when = match ending {
            corpus::Ending::Calls(_) => "",
            corpus::Ending::Start(_) => " (at start)",
        };
        println!(
            "  {:16} {:24} {:>9} {:>12} {:>16.1}",
            name,
            format!("{}{when}", ending.kind()),
            errors.iter().sum::<u64>(),
            quarantined,
            us as f64 / 1e3
        );
    }
}
