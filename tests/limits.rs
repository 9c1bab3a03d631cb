//! Every call is bounded: fuel, memory, tables, stack and output size.

use wasmgate::runtime::{ErrorKind, Limits, ProcessorError};

use crate::common::*;

#[test]
fn endless_loop_runs_out_of_fuel() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (loop $l (br $l)) i64.const 0)"#;
    let mut inst = instance(&rt, "spin", &wat_module(1, body));
    let err = inst.process(&[reading("s", 1, &[("v", 1.0)])]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfFuel);
    assert_eq!(err.module(), "spin");
    let budget = Limits::default().fuel_for(1);
    assert_eq!(
        err,
        ProcessorError::OutOfFuel {
            module: "spin".into(),
            budget
        }
    );
    assert!(
        err.to_string().contains("module 'spin' ran out of fuel"),
        "{err}"
    );
}

#[test]
fn fuel_budget_scales_with_batch_size() {
    // A loop of exactly k iterations per reading: fits the per-reading allowance.
    let limits = Limits {
        fuel_per_call: 1_000,
        fuel_per_reading: 100_000,
        ..Default::default()
    };
    let rt = runtime_with(limits);
    // Spin 2 000 iterations per call: a few fuel units each, well above 1 000.
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (local $i i32)
        (local.set $i (i32.const 2000))
        (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $l (local.get $i)))
        i64.const 0)"#;
    let mut inst = instance(&rt, "work", &wat_module(1, body));
    assert!(
        inst.process(&[]).is_err(),
        "1 000 fuel is not enough for the loop"
    );
    let mut inst = instance(&rt, "work", &wat_module(1, body));
    let (_, figures) = inst.process(&[reading("s", 1, &[])]).unwrap();
    assert!(
        figures.fuel > 2_000 && figures.fuel <= 101_000,
        "fuel used {}",
        figures.fuel
    );
}

#[test]
fn memory_grow_bomb_hits_the_limit() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        i64.const 0)"#;
    let mut inst = instance(&rt, "bomb", &wat_module(1, body));
    let err = inst.process(&[reading("s", 1, &[])]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    assert!(
        err.to_string()
            .contains("module 'bomb' exceeded its memory limit of 16777216 bytes"),
        "{err}"
    );
}

#[test]
fn huge_initial_memory_is_refused_at_instantiate() {
    let rt = runtime();
    // 1 000 pages = 62.5 MiB > the 16 MiB default.
    let err = refusal(&rt, "whale", &wat_module(1000, ECHO));
    assert!(
        err.contains("module 'whale': refused at instantiate: memory limit"),
        "{err}"
    );
}

#[test]
fn memory_limit_is_configurable() {
    let limits = Limits {
        memory_bytes: 2 * 65536,
        ..Default::default()
    };
    let rt = runtime_with(limits);
    let err = refusal(&rt, "three", &wat_module(3, ECHO));
    assert!(err.contains("memory limit"), "{err}");
    instance(&rt, "two", &wat_module(2, ECHO));
}

#[test]
fn table_growth_is_limited() {
    let rt = runtime();
    let body = r#"(table $t 1 funcref)
      (func (export "wasmgate_process") (param i32 i32) (result i64)
        (drop (table.grow $t (ref.null func) (i32.const 1000000)))
        i64.const 0)"#;
    let mut inst = instance(&rt, "tables", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    assert!(err.to_string().contains("table"), "{err}");
}

#[test]
fn deep_recursion_exhausts_the_stack() {
    let rt = runtime();
    let body = r#"(func $down (param $n i64) (result i64)
        (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
      (func (export "wasmgate_process") (param i32 i32) (result i64)
        (call $down (i64.const 0)))"#;
    let mut inst = instance(&rt, "deep", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StackExhausted, "{err}");
    assert!(
        err.to_string()
            .contains("module 'deep' exhausted its stack"),
        "{err}"
    );
}

#[test]
fn output_over_the_cap_is_an_abi_violation() {
    let rt = runtime();
    // Claims a 2 MiB result (> 1 MiB max_output_bytes).
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (i64.const 0x200000))"#;
    let mut inst = instance(&rt, "flood", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation);
    assert!(
        err.to_string()
            .contains("exceeds max_output_bytes = 1048576"),
        "{err}"
    );
}

#[test]
fn result_outside_memory_is_an_abi_violation() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.const 0x10000) (i64.const 32)) (i64.const 16)))"#;
    let mut inst = instance(&rt, "wild", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation);
    assert!(
        err.to_string().contains("lies outside linear memory"),
        "{err}"
    );
}

#[test]
fn malformed_output_is_an_abi_violation() {
    let rt = runtime();
    // Points at 9 bytes of the "outputs" header without a value after it.
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.const 32768) (i64.const 32)) (i64.const 9)))"#;
    let mut inst = instance(&rt, "garbled", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation);
    assert!(err.to_string().contains("does not decode"), "{err}");
}
