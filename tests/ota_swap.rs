//! OTA deployment inside the pipeline (the processing task's half, driven
//! directly): a verified new version is shadow-run, swapped in between
//! batches with readings flowing — every reading processed exactly once,
//! by the old version before the swap and the new one after — and rolled
//! back automatically when it fails after activation.
//!
//! Versions are told apart by their outputs: v1 is the echo fixture
//! (`n` → `n`), v2 is the `calibrate` example configured with
//! `offset = 1e6` (`n` → `n + 1e6`); both get the same processor config.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmgate::config::Config;
use wasmgate::ota::OtaConfig;
use wasmgate::ota::task::{Deploy, Deployer, Outcome};
use wasmgate::pipeline::{BatchResult, Pipeline};
use wasmgate::runtime::Clock;
use wasmgate::state::MemoryState;

use crate::common::*;

const OFFSET: f64 = 1_000_000.0;

fn pipeline(dir: &tempfile::TempDir) -> Pipeline {
    let v1 = dir.path().join("p.wasm");
    std::fs::write(&v1, echo_module()).unwrap();
    let text = format!(
        r#"
[streams.s]
sensors = ["*"]
[[streams.s.processors]]
module = "{}"
name = "p"
config = {{ fields = {{ n = {{ scale = 1.0, offset = {OFFSET} }} }} }}
"#,
        v1.display()
    );
    let config = Config::from_str_at(&text, dir.path().join("c.toml")).unwrap();
    let mut p = Pipeline::build(
        &config,
        runtime(),
        Arc::new(MemoryState::new()),
        Clock::System,
    )
    .unwrap();
    p.keep_samples(true);
    p
}

fn deployer(rollback_failures: u32) -> Deployer {
    Deployer::new(&OtaConfig {
        watch_secs: 3600,
        rollback_failures,
        ..OtaConfig::default()
    })
}

fn deploy(module: Vec<u8>, version: &str) -> Deploy {
    Deploy {
        name: "p".into(),
        version: version.into(),
        release: 2,
        module,
    }
}

fn calibrate() -> Vec<u8> {
    std::fs::read(example("calibrate")).unwrap()
}

/// Outputs by input `n`: the values each reading produced.
type Seen = BTreeMap<i64, Vec<f64>>;

fn record(seen: &mut Seen) -> impl FnMut(BatchResult<'_>) -> Result<(), ()> + '_ {
    move |r: BatchResult<'_>| {
        for o in &r.outputs {
            let v = o.field("n").unwrap();
            seen.entry(o.ts).or_default().push(v);
        }
        Ok(())
    }
}

fn push(p: &mut Pipeline, n: i64, seen: &mut Seen) {
    p.push(
        reading("x", n, &[("n", n as f64)]),
        None,
        n as u64,
        &mut record(seen),
    )
    .unwrap();
}

#[test]
fn swap_while_readings_flow_processes_each_reading_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(&dir);
    let mut d = deployer(3);
    let mut seen = Seen::new();
    let v1_sha = p.streams()[0].modules()[0].module().sha256_hex();
    // 1000 readings; the swap lands mid-batch (batch size 64) at 530.
    for n in 0..1000 {
        push(&mut p, n, &mut seen);
        if n == 530 {
            let o = d.deploy(&mut p, &deploy(calibrate(), "2.0"));
            assert_eq!(
                o,
                Outcome::Activated {
                    name: "p".into(),
                    slots: 1
                }
            );
        }
    }
    p.flush(&mut record(&mut seen)).unwrap();
    assert_ne!(p.streams()[0].modules()[0].module().sha256_hex(), v1_sha);

    assert_eq!(seen.len(), 1000, "every reading produced an output");
    let mut switched_at = None;
    for (n, values) in &seen {
        assert_eq!(
            values.len(),
            1,
            "reading {n} processed {} times",
            values.len()
        );
        let v = values[0];
        if v == *n as f64 {
            assert!(switched_at.is_none(), "v1 output for {n} after the swap");
        } else {
            assert_eq!(v, *n as f64 + OFFSET, "reading {n}");
            switched_at.get_or_insert(*n);
        }
    }
    // The partly filled batch at the swap (readings 512..=530) went to v2.
    assert_eq!(switched_at, Some(512));
}

#[test]
fn a_version_failing_its_shadow_run_is_refused_and_the_old_one_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(&dir);
    let mut d = deployer(3);
    let mut seen = Seen::new();
    for n in 0..100 {
        push(&mut p, n, &mut seen);
    }
    let v1_sha = p.streams()[0].modules()[0].module().sha256_hex();
    let always_traps = wat_module(
        1,
        r#"(func (export "wasmgate_process") (param i32 i32) (result i64) unreachable)"#,
    );
    match d.deploy(&mut p, &deploy(always_traps, "bad")) {
        Outcome::Rejected {
            reason, message, ..
        } => {
            assert_eq!(reason, "shadow-failed");
            assert!(message.contains("recent readings"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(p.streams()[0].modules()[0].module().sha256_hex(), v1_sha);
    for n in 100..200 {
        push(&mut p, n, &mut seen);
    }
    p.flush(&mut record(&mut seen)).unwrap();
    assert!(
        seen.iter().all(|(n, v)| v == &[*n as f64]),
        "v1 outputs only"
    );
    assert_eq!(seen.len(), 200);

    let not_wasm = d.deploy(&mut p, &deploy(b"not wasm".to_vec(), "junk"));
    assert!(matches!(
        not_wasm,
        Outcome::Rejected {
            reason: "load-failed",
            ..
        }
    ));
    let other_name = d.deploy(
        &mut p,
        &Deploy {
            name: "nope".into(),
            ..deploy(calibrate(), "x")
        },
    );
    assert!(matches!(
        other_name,
        Outcome::Rejected {
            reason: "unknown-processor",
            ..
        }
    ));
}

#[test]
fn a_version_that_fails_after_activation_is_rolled_back_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(&dir);
    let mut d = deployer(2);
    let mut seen = Seen::new();
    for n in 0..128 {
        push(&mut p, n, &mut seen);
    }
    let v1_sha = p.streams()[0].modules()[0].module().sha256_hex();
    let o = d.deploy(
        &mut p,
        &deploy(wat_module(1, TRAPS_FROM_SECOND_CALL), "flaky"),
    );
    assert!(matches!(o, Outcome::Activated { .. }), "{o:?}");
    let mut rolled_back = None;
    for n in 128..640 {
        let mut errors = Vec::new();
        p.push(
            reading("x", n, &[("n", n as f64)]),
            None,
            n as u64,
            &mut |r: BatchResult<'_>| {
                for o in &r.outputs {
                    seen.entry(o.ts).or_default().push(o.field("n").unwrap());
                }
                errors.extend(r.errors);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        d.observe(&errors);
        for o in d.tick(&mut p) {
            rolled_back.get_or_insert((n, o));
        }
    }
    p.flush(&mut record(&mut seen)).unwrap();
    let (at, outcome) = rolled_back.expect("rolled back");
    match outcome {
        Outcome::RolledBack {
            version, message, ..
        } => {
            assert_eq!(version, "flaky");
            assert!(message.contains("2 failures"), "{message}");
            assert!(message.contains("trap"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(at < 640, "rolled back at reading {at}");
    // The previous instance is back, and nothing was lost on the way: the
    // failed batches passed through (the default failure policy).
    assert_eq!(p.streams()[0].modules()[0].module().sha256_hex(), v1_sha);
    assert_eq!(seen.len(), 640);
    assert!(seen.values().all(|v| v.len() == 1), "none twice");
    assert!(seen.iter().all(|(n, v)| v[0] == *n as f64));
}
