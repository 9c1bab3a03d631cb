//! Processor benchmark: prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo bench -p wasmgate --bench processors
//! ```
//!
//! Measures, for the committed example modules:
//! * load (parse + validate + compile) and instantiate (+ init) time;
//! * cost per batch of 64 readings through the wasm module versus the same
//!   algorithm in native Rust (ratio);
//! * fuel metering on versus off (ratio), and fuel off with every other
//!   limit raised to its maximum (memory 1 GiB, tables, call depth, output
//!   size), to show what the remaining limits cost.
//!
//! `calibrate.wasm` (~51 KB, a Rust guest with its allocator and CBOR code)
//! is the ~50 KB module of the cold-start figures; `c-clamp.wasm` (~5 KB,
//! C) the small one.
//!
//! Each figure is the median of several runs; the spread (min–max) is shown
//! so the noise is visible. `WASMGATE_BENCH_RUNS` sets the number of runs
//! (default 7), `WASMGATE_BENCH_BATCHES` the batches per timed run (default
//! 200). With `WASMGATE_BENCH_OUT=<file>`, every figure is also appended to
//! that file as a JSON line (`{"bench","name","value","unit","min","max"}`)
//! for `scripts/bench.sh`.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use common::{env_usize, examples_dir, median_spread, record};
use wasmgate::Reading;
use wasmgate::runtime::{Clock, HostEnv, Limits, ModuleConfig, Runtime};
use wasmgate::state::MemoryState;

const BENCH: &str = "processors";
const BATCH: usize = 64;
const RUNS: usize = 7;

fn batch(i: usize) -> Vec<Reading> {
    (0..BATCH)
        .map(|k| {
            let n = (i * BATCH + k) as f64;
            Reading::new(
                format!("greenhouse/s{}", k % 4),
                1_714_550_400_000 + (i * BATCH + k) as i64 * 1000,
            )
            .with_field("temp", 20.0 + (n * 0.1).sin() * 5.0)
            .with_field("humidity", 50.0 + (n * 0.05).cos() * 10.0)
        })
        .collect()
}

fn config(name: &str) -> ModuleConfig {
    let toml = match name {
        "calibrate" => {
            "[fields.temp]\nscale = 1.8\noffset = 32.0\n[fields.humidity]\nscale = 0.01\n"
        }
        "moving-average" => "window = 8\n",
        "window-stats" => "count = 16\n",
        "threshold-alert" => {
            "field = \"temp\"\nwarning = 23.0\ncritical = 24.5\nhysteresis = 0.5\n"
        }
        "c-clamp" => "min = 18.0\nmax = 24.0\n",
        _ => "",
    };
    let table: toml::Table = toml::from_str(toml).unwrap_or_default();
    ModuleConfig::from_toml(&table)
}

fn env(name: &str) -> HostEnv {
    HostEnv {
        state: Arc::new(MemoryState::new()),
        clock: Clock::Replay,
        config: Arc::new(config(name)),
    }
}

/// Native Rust versions of two examples, same algorithm, for the ratio.
fn native_calibrate(batch: &[Reading]) -> Vec<Reading> {
    batch
        .iter()
        .map(|r| {
            let mut o = r.clone();
            for (name, v) in &mut o.fields {
                match name.as_str() {
                    "temp" => *v = *v * 1.8 + 32.0,
                    "humidity" => *v *= 0.01,
                    _ => {}
                }
            }
            o
        })
        .collect()
}

fn native_moving_average(
    windows: &mut HashMap<(String, String), Vec<f64>>,
    batch: &[Reading],
) -> Vec<Reading> {
    batch
        .iter()
        .map(|r| {
            let mut o = r.clone();
            for (name, v) in &mut o.fields {
                let w = windows.entry((r.sensor.clone(), name.clone())).or_default();
                w.push(*v);
                if w.len() > 8 {
                    w.remove(0);
                }
                *v = w.iter().sum::<f64>() / w.len() as f64;
            }
            o
        })
        .collect()
}

fn time_batches(mut f: impl FnMut(&[Reading]), batches: &[Vec<Reading>]) -> f64 {
    let start = Instant::now();
    for b in batches {
        f(b);
    }
    start.elapsed().as_secs_f64() / batches.len() as f64
}

fn us(s: f64) -> String {
    format!("{:.1} µs", s * 1e6)
}

/// Every limit but fuel raised to its maximum (fuel metering is switched
/// off separately): what the memory/table/stack/output caps cost.
fn max_limits() -> Limits {
    Limits {
        memory_bytes: 1 << 30,
        table_elements: u32::MAX,
        max_recursion_depth: 100_000,
        max_module_bytes: 256 << 20,
        max_output_bytes: 256 << 20,
        ..Limits::default()
    }
}

/// "median (min–max)" in µs, and the figure recorded under `name`.
fn cell(name: &str, xs: Vec<f64>) -> (f64, String) {
    let (m, lo, hi) = median_spread(xs);
    record(BENCH, name, m * 1e6, "us", lo * 1e6, hi * 1e6);
    (m, format!("{} ({}–{})", us(m), us(lo), us(hi)))
}

fn main() {
    let runs = env_usize("WASMGATE_BENCH_RUNS", RUNS).max(1);
    let n_batches = env_usize("WASMGATE_BENCH_BATCHES", 200).max(1);
    let names = [
        "calibrate",
        "moving-average",
        "window-stats",
        "threshold-alert",
        "c-clamp",
    ];
    let batches: Vec<Vec<Reading>> = (0..n_batches).map(batch).collect();
    println!(
        "wasmgate processor benchmark — {runs} runs each, median (min–max); batch = {BATCH} readings"
    );
    println!();
    println!(
        "{:<16} {:>8} {:>22} {:>22} {:>22}",
        "module", "size", "load+compile", "instantiate+init", "cold start (sum)"
    );
    for name in names {
        let path = examples_dir().join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            println!("{name:<16} missing {}", path.display());
            continue;
        };
        let mut load = Vec::new();
        let mut inst = Vec::new();
        let mut total = Vec::new();
        for _ in 0..runs {
            // A fresh runtime each time so the sha256 cache does not hide the compile.
            let rt = Runtime::new(Limits::default()).expect("runtime");
            let t = Instant::now();
            let m = rt.load_bytes(name, &bytes).expect("load");
            let l = t.elapsed().as_secs_f64();
            let t = Instant::now();
            black_box(rt.instantiate(&m, env(name)).expect("instantiate"));
            let i = t.elapsed().as_secs_f64();
            load.push(l);
            inst.push(i);
            total.push(l + i);
        }
        record(
            BENCH,
            &format!("size/{name}"),
            bytes.len() as f64,
            "B",
            bytes.len() as f64,
            bytes.len() as f64,
        );
        let (_, load) = cell(&format!("cold/{name}/load"), load);
        let (_, inst) = cell(&format!("cold/{name}/instantiate"), inst);
        let (_, total) = cell(&format!("cold/{name}/total"), total);
        println!(
            "{name:<16} {:>6} B {load:>22} {inst:>22} {total:>22}",
            bytes.len(),
        );
    }

    println!();
    println!(
        "{:<16} {:>26} {:>26} {:>26} {:>12} {:>14}",
        "per batch of 64",
        "wasm, fuel on",
        "wasm, fuel off",
        "fuel off, limits max",
        "fuel cost",
        "vs native"
    );
    for name in names {
        let path = examples_dir().join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut on = Vec::new();
        let mut off = Vec::new();
        let mut max = Vec::new();
        for _ in 0..runs {
            for (variant, out) in [(0, &mut on), (1, &mut off), (2, &mut max)] {
                let rt = match variant {
                    0 => Runtime::new(Limits::default()),
                    1 => Runtime::without_fuel_metering(Limits::default()),
                    _ => Runtime::without_fuel_metering(max_limits()),
                }
                .expect("runtime");
                let m = rt.load_bytes(name, &bytes).expect("load");
                let mut i = rt.instantiate(&m, env(name)).expect("instantiate");
                // Warm up lazy translation.
                i.process(&batches[0]).expect("process");
                out.push(time_batches(
                    |b| {
                        black_box(i.process(b).expect("process"));
                    },
                    &batches,
                ));
            }
        }
        let (on_m, on_cell) = cell(&format!("batch/{name}/fuel-on"), on);
        let (off_m, off_cell) = cell(&format!("batch/{name}/fuel-off"), off);
        let (_, max_cell) = cell(&format!("batch/{name}/fuel-off-limits-max"), max);
        record(
            BENCH,
            &format!("ratio/{name}/fuel-on-vs-off"),
            on_m / off_m,
            "x",
            on_m / off_m,
            on_m / off_m,
        );
        let native = match name {
            "calibrate" => {
                let v: Vec<f64> = (0..runs)
                    .map(|_| {
                        time_batches(
                            |b| {
                                black_box(native_calibrate(b));
                            },
                            &batches,
                        )
                    })
                    .collect();
                Some(cell(&format!("batch/{name}/native"), v).0)
            }
            "moving-average" => {
                let v: Vec<f64> = (0..runs)
                    .map(|_| {
                        let mut w = HashMap::new();
                        time_batches(
                            |b| {
                                black_box(native_moving_average(&mut w, b));
                            },
                            &batches,
                        )
                    })
                    .collect();
                Some(cell(&format!("batch/{name}/native"), v).0)
            }
            _ => None,
        };
        if let Some(n) = native {
            record(
                BENCH,
                &format!("ratio/{name}/wasm-vs-native"),
                on_m / n,
                "x",
                on_m / n,
                on_m / n,
            );
        }
        println!(
            "{name:<16} {on_cell:>26} {off_cell:>26} {max_cell:>26} {:>11.2}x {:>14}",
            on_m / off_m,
            native
                .map(|n| format!("{:.1}x ({})", on_m / n, us(n)))
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!();
    println!(
        "vs native = wasm (fuel on, including CBOR encode/decode and host state) / native Rust on the same readings."
    );
    println!(
        "fuel off, limits max = no fuel metering, and memory 1 GiB, tables and call depth at their maximum."
    );
}
