//! Helpers shared by the benches (`mod common;` in each): settings from the
//! environment, the `WASMGATE_BENCH_OUT` JSON lines that `scripts/bench.sh`
//! reads, medians and percentiles, the example modules, the machine.
//!
//! Not a bench target itself: cargo only picks up `benches/*.rs` and
//! `benches/*/main.rs`.

// Not every bench uses every helper.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// The value of the environment variable `name`, or `default` when it is
/// not set; panics with a clear message when it does not parse.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

/// [`env_or`] for a `usize`.
pub fn env_usize(name: &str, default: usize) -> usize {
    env_or(name, default)
}

/// [`env_or`] for a `u64`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    env_or(name, default)
}

/// Append one figure of `bench` to `WASMGATE_BENCH_OUT` as a JSON line
/// (`{"bench","name","value","unit","min","max"}`), if that is set.
pub fn record(bench: &str, name: &str, value: f64, unit: &str, min: f64, max: f64) {
    let Some(path) = std::env::var_os("WASMGATE_BENCH_OUT") else {
        return;
    };
    let line = serde_json::json!({
        "bench": bench, "name": name, "value": value, "unit": unit, "min": min, "max": max,
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("WASMGATE_BENCH_OUT opens");
    writeln!(f, "{line}").expect("WASMGATE_BENCH_OUT written");
}

/// (median, min, max) of `xs` (not empty; the upper median of an even count).
pub fn median_spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// The `p` (0–1) percentile of `sorted` (nearest rank; 0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

/// The committed example modules (`guest-sdk/examples/wasm`).
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/examples/wasm")
}

/// `uname <flag>`, trimmed, if it runs.
pub fn uname(flag: &str) -> Option<String> {
    std::process::Command::new("uname")
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

/// The number of cores (0 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The CPU model of `/proc/cpuinfo`, if it names one.
pub fn cpu_model() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
    })
}

/// `<arch>, <cores> cores, <CPU model>`.
pub fn machine(arch: &str) -> String {
    let model = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    format!("{arch}, {} cores, {model}", cores())
}
