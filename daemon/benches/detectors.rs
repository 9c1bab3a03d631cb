//! Detector benchmark: prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo bench -p wasmgate --bench detectors
//! ```
//!
//! Measures nanoseconds per observed value of each detector's
//! [`Detector::observe`] (through `Box<dyn Detector>`, as the daemon calls
//! it) over a long labelled synthetic series (`wasmgate::detect::synth`:
//! a daily cycle with noise, spikes, stuck runs and dropouts), and of
//! [`DetectorSet::observe`] on readings of 4 sensors × 2 fields, per reading.
//!
//! Each figure is the median of several runs, each with fresh detectors over
//! the whole series (warm-up included); the spread (min–max) is shown so the
//! noise is visible. `WASMGATE_BENCH_RUNS` sets the number of runs (default
//! 7). With `WASMGATE_BENCH_OUT=<file>`, every figure is also appended to
//! that file as a JSON line (`{"bench","name","value","unit","min","max"}`)
//! for `scripts/bench.sh`.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{env_usize, median_spread, record};
use wasmgate::Reading;
use wasmgate::detect::synth::{Anomaly, SeriesBuilder};
use wasmgate::detect::{
    DetectorConfig, DetectorSet, DetectorSetConfig, DetectorSpec, EwmaConfig, FlatlineConfig,
    GaussianConfig, HoltWintersConfig, MadConfig, RangeConfig, RateConfig,
};

const BENCH: &str = "detectors";
/// Values per single-detector run.
const VALUES: usize = 200_000;
/// Readings per `DetectorSet` run (each with 2 fields).
const READINGS: usize = 100_000;
const SENSORS: usize = 4;
const RUNS: usize = 7;
/// One reading a minute: a daily season is 1440 readings.
const DAY: usize = 1_440;

fn runs() -> usize {
    env_usize("WASMGATE_BENCH_RUNS", RUNS).max(1)
}

/// A labelled series of `len` samples a minute apart: base 20, σ 0.5, a
/// daily cycle of amplitude 5, spikes and stuck runs (and dropouts when
/// `dropouts`), quantised to 0.01.
fn series(seed: u64, len: usize, dropouts: bool) -> Vec<(i64, f64)> {
    let per_10k = |n: usize| n * len / 10_000;
    let mut b = SeriesBuilder::new(seed)
        .length(len)
        .interval_ms(60_000)
        .base(20.0)
        .noise(0.5)
        .seasonality(5.0, DAY)
        .quantize(0.01)
        .warmup(2 * DAY)
        .scatter(per_10k(20), Anomaly::Spike { k: 8.0 })
        .scatter(per_10k(3), Anomaly::Stuck { span: 30 });
    if dropouts {
        b = b.scatter(per_10k(2), Anomaly::Dropout { span: 10 });
    }
    b.build()
        .expect("benchmark series builds")
        .present()
        .map(|(_, ts, v)| (ts, v))
        .collect()
}

fn configs() -> Vec<(&'static str, DetectorConfig)> {
    vec![
        ("ewma", DetectorConfig::Ewma(EwmaConfig::default())),
        (
            "gaussian w=60",
            DetectorConfig::Gaussian(GaussianConfig::default()),
        ),
        (
            "gaussian w=600",
            DetectorConfig::Gaussian(GaussianConfig {
                window: 600,
                ..GaussianConfig::default()
            }),
        ),
        ("mad w=60", DetectorConfig::Mad(MadConfig::default())),
        (
            "mad w=600",
            DetectorConfig::Mad(MadConfig {
                window: 600,
                ..MadConfig::default()
            }),
        ),
        ("rate", DetectorConfig::Rate(RateConfig::new(0.05))),
        (
            "flatline",
            DetectorConfig::Flatline(FlatlineConfig::default()),
        ),
        (
            "range",
            DetectorConfig::Range(RangeConfig {
                min: Some(10.0),
                max: Some(30.0),
                ..RangeConfig::default()
            }),
        ),
        (
            "holt-winters 1440",
            DetectorConfig::HoltWinters(HoltWintersConfig::new(DAY as u32)),
        ),
    ]
}

fn bench_single(values: &[(i64, f64)]) {
    println!(
        "{:<20} {:>10} {:>21} {:>8}",
        "detector", "ns/value", "(min–max)", "flagged"
    );
    for (name, cfg) in configs() {
        cfg.validate().expect("valid config");
        let mut times = Vec::with_capacity(runs());
        let mut flagged = 0;
        for _ in 0..runs() {
            let mut d = cfg.build();
            flagged = 0;
            let t = Instant::now();
            for &(ts, v) in values {
                let verdict = d.observe(black_box(ts), black_box(v));
                flagged += usize::from(black_box(verdict).flagged);
            }
            times.push(t.elapsed().as_nanos() as f64 / values.len() as f64);
        }
        let (med, lo, hi) = median_spread(times);
        record(BENCH, &format!("detector/{name}"), med, "ns/value", lo, hi);
        println!(
            "{name:<20} {med:>10.1} {:>21} {flagged:>8}",
            format!("({lo:.1}–{hi:.1})")
        );
    }
}

/// `READINGS` readings round-robin over the sensors, each with `temp` and
/// `humidity` from its own series (both of the shape of [`series`], so the
/// `range` bounds hold for both fields).
fn readings() -> Vec<Reading> {
    let per_sensor = READINGS / SENSORS;
    let temp: Vec<_> = (0..SENSORS)
        .map(|s| series(100 + s as u64, per_sensor, false))
        .collect();
    let humidity: Vec<_> = (0..SENSORS)
        .map(|s| series(200 + s as u64, per_sensor, false))
        .collect();
    let mut out = Vec::with_capacity(READINGS);
    for k in 0..per_sensor {
        for s in 0..SENSORS {
            let (ts, t) = temp[s][k];
            let (_, h) = humidity[s][k];
            out.push(
                Reading::new(format!("greenhouse/s{s}"), ts)
                    .with_field("temp", t)
                    .with_field("humidity", h),
            );
        }
    }
    out
}

fn bench_set(readings: &[Reading]) {
    let all: Vec<DetectorConfig> = configs()
        .into_iter()
        .filter(|(name, _)| !name.ends_with("w=600"))
        .map(|(_, c)| c)
        .collect();
    let pick = |kinds: &[&str]| -> Vec<DetectorConfig> {
        all.iter()
            .filter(|c| kinds.contains(&c.kind()))
            .cloned()
            .collect()
    };
    let sets: Vec<(&str, Vec<DetectorConfig>)> = vec![
        ("set: ewma", pick(&["ewma"])),
        ("set: ewma+mad+rate", pick(&["ewma", "mad", "rate"])),
        ("set: all 7 kinds", all.clone()),
    ];
    println!(
        "{:<20} {:>10} {:>21} {:>14} {:>8}",
        "detector set", "ns/reading", "(min–max)", "ns/value·det", "events"
    );
    for (name, detectors) in sets {
        let config = DetectorSetConfig {
            detectors: detectors.into_iter().map(DetectorSpec::new).collect(),
            ..DetectorSetConfig::default()
        };
        let per_value_detector = (2 * config.detectors.len()) as f64;
        let mut times = Vec::with_capacity(runs());
        let mut events = 0;
        for _ in 0..runs() {
            let mut set = DetectorSet::new("bench", &config).expect("valid set");
            events = 0;
            let t = Instant::now();
            for r in readings {
                events += black_box(set.observe(black_box(r))).len();
            }
            times.push(t.elapsed().as_nanos() as f64 / readings.len() as f64);
        }
        let (med, lo, hi) = median_spread(times);
        record(
            BENCH,
            &format!("set/{}", name.trim_start_matches("set: ")),
            med,
            "ns/reading",
            lo,
            hi,
        );
        println!(
            "{name:<20} {med:>10.1} {:>21} {:>14.1} {events:>8}",
            format!("({lo:.1}–{hi:.1})"),
            med / per_value_detector
        );
    }
}

fn main() {
    println!(
        "detector benchmark: median of {} runs ({} {}, release profile)\n",
        runs(),
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let values = series(1, VALUES, true);
    println!(
        "Detector::observe, one series of {} values (a minute apart, daily cycle, spikes, stuck runs, dropouts)\n",
        values.len()
    );
    bench_single(&values);
    println!();
    let readings = readings();
    println!(
        "DetectorSet::observe, {} readings of {SENSORS} sensors × 2 fields (temp, humidity)\n",
        readings.len()
    );
    bench_set(&readings);
}
