//! Per-module persistent state: transactional per call, survives a new
//! instance, and (with sled) a restart.

use std::sync::Arc;

use wasmgate::runtime::{ErrorKind, ModuleConfig};
use wasmgate::state::{MemoryState, SledState, StateStore};

use crate::common::*;

const IMPORTS: &str = r#"
  (import "wasmgate" "state_get" (func $sget (param i32 i32 i32 i32) (result i32)))
  (import "wasmgate" "state_set" (func $sset (param i32 i32 i32 i32) (result i32)))"#;

/// Counts calls in state key "n" (i64 LE); traps *after* writing when the
/// batch is empty (CBOR 0x80), which must discard the write.
const COUNTER: &str = r#"
  (data (i32.const 50000) "n")
  (func (export "wasmgate_process") (param $p i32) (param $n i32) (result i64)
    (if (i32.eq (call $sget (i32.const 50000) (i32.const 1) (i32.const 50008) (i32.const 8))
                (i32.const -1))
      (then (i64.store (i32.const 50008) (i64.const 0))))
    (i64.store (i32.const 50008) (i64.add (i64.load (i32.const 50008)) (i64.const 1)))
    (drop (call $sset (i32.const 50000) (i32.const 1) (i32.const 50008) (i32.const 8)))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x80)) (then unreachable))
    (i64.const 0))"#;

fn count(store: &dyn StateStore) -> Option<i64> {
    store
        .get("counter", b"n")
        .unwrap()
        .map(|v| i64::from_le_bytes(v.try_into().unwrap()))
}

#[test]
fn state_is_committed_per_successful_call() {
    let rt = runtime();
    let store = Arc::new(MemoryState::new());
    let m = rt
        .load_bytes("counter", &wat_module_importing(IMPORTS, 1, COUNTER))
        .unwrap();
    let mut inst = rt
        .instantiate(&m, env_with(store.clone(), ModuleConfig::default()))
        .unwrap();
    let one = [reading("s", 1, &[])];
    inst.process(&one).unwrap();
    inst.process(&one).unwrap();
    assert_eq!(count(&*store), Some(2));
    // The empty batch makes it trap after its state_set: the write is discarded.
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    assert_eq!(
        count(&*store),
        Some(2),
        "a failed call leaves state untouched"
    );
}

#[test]
fn state_survives_a_new_instance() {
    let rt = runtime();
    let store = Arc::new(MemoryState::new());
    let m = rt
        .load_bytes("counter", &wat_module_importing(IMPORTS, 1, COUNTER))
        .unwrap();
    for _ in 0..3 {
        let mut inst = rt
            .instantiate(&m, env_with(store.clone(), ModuleConfig::default()))
            .unwrap();
        inst.process(&[reading("s", 1, &[])]).unwrap();
    }
    assert_eq!(count(&*store), Some(3));
}

#[test]
fn sled_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat_module_importing(IMPORTS, 1, COUNTER);
    for round in 1..=2 {
        let rt = runtime();
        let store = Arc::new(SledState::open(dir.path(), 1 << 20).unwrap());
        let m = rt.load_bytes("counter", &bytes).unwrap();
        let mut inst = rt
            .instantiate(&m, env_with(store.clone(), ModuleConfig::default()))
            .unwrap();
        inst.process(&[reading("s", 1, &[])]).unwrap();
        inst.process(&[reading("s", 2, &[])]).unwrap();
        store.flush().unwrap();
        assert_eq!(count(&*store), Some(2 * round));
    }
}

#[test]
fn oversized_state_value_is_refused_not_fatal() {
    let rt = runtime();
    // state_set of a 70 000-byte value returns -1; the module reports it via
    // its own return code (0 = ok path taken only when refused).
    let body = r#"
      (data (i32.const 50000) "k")
      (func (export "wasmgate_process") (param i32 i32) (result i64)
        (if (i32.ne (call $sset (i32.const 50000) (i32.const 1) (i32.const 0) (i32.const 70000))
                    (i32.const -1))
          (then unreachable))
        (i64.const 0))"#;
    let store = Arc::new(MemoryState::new());
    let m = rt
        .load_bytes("hog", &wat_module_importing(IMPORTS, 2, body))
        .unwrap();
    let mut inst = rt
        .instantiate(&m, env_with(store.clone(), ModuleConfig::default()))
        .unwrap();
    inst.process(&[]).unwrap();
    assert_eq!(store.get("hog", b"k").unwrap(), None);
}
