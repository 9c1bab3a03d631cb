//! The happy path: load once, instantiate once, process many batches.

use crate::common::*;

#[test]
fn echo_round_trips_a_batch_exactly() {
    let rt = runtime();
    let mut inst = instance(&rt, "echo", &echo_module());
    let mut r = reading(
        "greenhouse/north",
        1_714_550_400_000,
        &[("temp", 21.5), ("humidity", 40.0)],
    );
    r.kind = Some("stats".into());
    r.tags = vec![("level".into(), "warning".into())];
    let batch = vec![r, reading("s2", -1, &[])];
    let (out, figures) = inst.process(&batch).unwrap();
    assert_eq!(
        out, batch,
        "field order, kind and tags survive the boundary"
    );
    assert!(figures.fuel > 0, "fuel is metered");
}

#[test]
fn one_instance_serves_many_batches() {
    let rt = runtime();
    let mut inst = instance(&rt, "echo", &echo_module());
    for i in 0..200 {
        let batch: Vec<_> = (0..64)
            .map(|k| reading("s", i * 64 + k, &[("v", k as f64)]))
            .collect();
        let (out, _) = inst.process(&batch).unwrap();
        assert_eq!(out.len(), 64);
    }
    // The bump allocator would have run out of its 64 KiB page if the host
    // allocated a fresh input buffer per batch: it reuses one.
    assert_eq!(inst.memory_bytes(), 65536);
}

#[test]
fn empty_result_means_no_outputs() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64) i64.const 0)"#;
    let mut inst = instance(&rt, "sink", &wat_module(1, body));
    let (out, _) = inst.process(&[reading("s", 1, &[("v", 1.0)])]).unwrap();
    assert!(out.is_empty());
}

#[test]
fn compiled_once_per_sha256() {
    let rt = runtime();
    let bytes = echo_module();
    let a = rt.load_bytes("a", &bytes).unwrap();
    let b = rt.load_bytes("b", &bytes).unwrap();
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(rt.cached_modules(), 1, "same bytes are compiled once");
    assert_eq!(b.name(), "b");
    rt.load_bytes("c", &wat_module(2, ECHO)).unwrap();
    assert_eq!(rt.cached_modules(), 2);
}
