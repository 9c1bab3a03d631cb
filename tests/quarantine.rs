//! A module that keeps failing is quarantined; the others keep running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmgate::runtime::{ErrorKind, FailurePolicy, Limits, Supervisor};

use crate::common::*;

const TRAP: &str = r#"(func (export "wasmgate_process") (param i32 i32) (result i64) unreachable)"#;

fn supervisor(
    rt: &Arc<wasmgate::runtime::Runtime>,
    name: &str,
    bytes: &[u8],
    policy: FailurePolicy,
) -> Supervisor {
    let m = rt.load_bytes(name, bytes).unwrap();
    Supervisor::new(rt.clone(), m, env(), policy).unwrap()
}

fn limits() -> Limits {
    Limits {
        failure_threshold: 3,
        failure_window_secs: 60,
        quarantine_secs: 300,
        ..Default::default()
    }
}

#[test]
fn repeated_failures_quarantine_only_the_failing_module() {
    let rt = runtime_with(limits());
    let mut bad = supervisor(&rt, "bad", &wat_module(1, TRAP), FailurePolicy::PassThrough);
    let mut good = supervisor(&rt, "good", &echo_module(), FailurePolicy::PassThrough);
    let t0 = Instant::now();
    for i in 0..10u64 {
        let batch = vec![reading("s", i as i64, &[("v", i as f64)])];
        let now = t0 + Duration::from_secs(i);
        let step = bad.process_at(batch.clone(), now);
        assert_eq!(step.outputs, batch, "pass-through hands the batch on");
        if i < 3 {
            assert_eq!(step.error.map(|e| e.kind()), Some(ErrorKind::Trap));
            assert!(!step.skipped);
        } else {
            assert!(step.skipped, "batch {i} skipped while quarantined");
            assert!(step.error.is_none());
        }
        let ok = good.process_at(batch.clone(), now);
        assert!(ok.error.is_none());
        assert_eq!(ok.outputs, batch);
    }
    assert!(bad.is_quarantined());
    let s = bad.stats();
    assert_eq!(s.calls, 3, "no calls while quarantined");
    assert_eq!(s.errors_of(ErrorKind::Trap), 3);
    assert_eq!(s.quarantines, 1);
    assert_eq!(s.passed_through, 10);
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("module 'bad' trapped")
    );
    assert!(!good.is_quarantined());
    assert_eq!(good.stats().calls, 10);
    assert_eq!(good.stats().readings_out, 10);
    assert_eq!(good.stats().errors_total(), 0);
}

#[test]
fn failures_outside_the_window_do_not_quarantine() {
    let rt = runtime_with(limits());
    let mut bad = supervisor(&rt, "bad", &wat_module(1, TRAP), FailurePolicy::Drop);
    let t0 = Instant::now();
    for i in 0..6u64 {
        // 61 s apart: never 3 within 60 s.
        let step = bad.process_at(vec![reading("s", 1, &[])], t0 + Duration::from_secs(61 * i));
        assert!(step.outputs.is_empty(), "drop policy");
        assert!(step.error.is_some());
    }
    assert!(!bad.is_quarantined());
    assert_eq!(bad.stats().dropped, 6);
    assert_eq!(bad.stats().restarts, 5, "a fresh instance after each trap");
}

#[test]
fn quarantine_ends_with_a_fresh_instance() {
    let rt = runtime_with(limits());
    let mut bad = supervisor(&rt, "bad", &wat_module(1, TRAP), FailurePolicy::Drop);
    let t0 = Instant::now();
    for _ in 0..3 {
        bad.process_at(vec![reading("s", 1, &[])], t0);
    }
    assert!(bad.is_quarantined());
    let during = bad.process_at(vec![reading("s", 1, &[])], t0 + Duration::from_secs(299));
    assert!(during.skipped);
    let after = bad.process_at(vec![reading("s", 1, &[])], t0 + Duration::from_secs(301));
    assert!(!after.skipped, "called again after the quarantine");
    assert!(after.error.is_some(), "and still failing");
    assert_eq!(bad.stats().calls, 4);
}
