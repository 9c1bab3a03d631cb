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
//! * fuel metering on versus off (ratio).
//!
//! Each figure is the median of several runs; the spread (min–max) is shown
//! so the noise is visible.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmgate::Reading;
use wasmgate::runtime::{Clock, HostEnv, Limits, ModuleConfig, Runtime};
use wasmgate::state::MemoryState;

const BATCH: usize = 64;
const RUNS: usize = 7;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/examples/wasm")
}

fn median_spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

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

fn main() {
    let names = [
        "calibrate",
        "moving-average",
        "window-stats",
        "threshold-alert",
        "c-clamp",
    ];
    let batches: Vec<Vec<Reading>> = (0..200).map(batch).collect();
    println!(
        "wasmgate processor benchmark — {RUNS} runs each, median (min–max); batch = {BATCH} readings"
    );
    println!();
    println!(
        "{:<16} {:>8} {:>22} {:>22}",
        "module", "size", "load+compile", "instantiate+init"
    );
    for name in names {
        let path = examples_dir().join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            println!("{name:<16} missing {}", path.display());
            continue;
        };
        let mut load = Vec::new();
        let mut inst = Vec::new();
        for _ in 0..RUNS {
            // A fresh runtime each time so the sha256 cache does not hide the compile.
            let rt = Runtime::new(Limits::default()).expect("runtime");
            let t = Instant::now();
            let m = rt.load_bytes(name, &bytes).expect("load");
            load.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            black_box(rt.instantiate(&m, env(name)).expect("instantiate"));
            inst.push(t.elapsed().as_secs_f64());
        }
        let (lm, l0, l1) = median_spread(load);
        let (im, i0, i1) = median_spread(inst);
        println!(
            "{name:<16} {:>6} B {:>22} {:>22}",
            bytes.len(),
            format!("{} ({}–{})", us(lm), us(l0), us(l1)),
            format!("{} ({}–{})", us(im), us(i0), us(i1)),
        );
    }

    println!();
    println!(
        "{:<16} {:>26} {:>26} {:>12} {:>14}",
        "per batch of 64", "wasm, fuel on", "wasm, fuel off", "fuel cost", "vs native"
    );
    for name in names {
        let path = examples_dir().join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut on = Vec::new();
        let mut off = Vec::new();
        for _ in 0..RUNS {
            for (metered, out) in [(true, &mut on), (false, &mut off)] {
                let rt = if metered {
                    Runtime::new(Limits::default())
                } else {
                    Runtime::without_fuel_metering(Limits::default())
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
        let (on_m, on_0, on_1) = median_spread(on);
        let (off_m, off_0, off_1) = median_spread(off);
        let native = match name {
            "calibrate" => {
                let v: Vec<f64> = (0..RUNS)
                    .map(|_| {
                        time_batches(
                            |b| {
                                black_box(native_calibrate(b));
                            },
                            &batches,
                        )
                    })
                    .collect();
                Some(median_spread(v).0)
            }
            "moving-average" => {
                let v: Vec<f64> = (0..RUNS)
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
                Some(median_spread(v).0)
            }
            _ => None,
        };
        println!(
            "{name:<16} {:>26} {:>26} {:>11.2}x {:>14}",
            format!("{} ({}–{})", us(on_m), us(on_0), us(on_1)),
            format!("{} ({}–{})", us(off_m), us(off_0), us(off_1)),
            on_m / off_m,
            native
                .map(|n| format!("{:.1}x ({})", on_m / n, us(n)))
                .unwrap_or_else(|| "—".into()),
        );
    }
    let _ = Duration::ZERO;
    println!();
    println!(
        "vs native = wasm (fuel on, including CBOR encode/decode and host state) / native Rust on the same readings."
    );
}
