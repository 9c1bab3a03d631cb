//! Failures inside calls are classified and carry the module name.

use wasmgate::runtime::{ErrorKind, LoadError, ModuleConfig, ProcessorError};

use crate::common::*;

/// `{"error": {"code": "bad-input", "message": "nope"}}` at 40000, 36 bytes.
const GUEST_ERROR: &str = r#"
  (data (i32.const 40000) "\a1\65error\a2\64code\69bad-input\67message\64nope")
  (func (export "wasmgate_process") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 40000) (i64.const 32)) (i64.const 36)))
"#;

#[test]
fn guest_error_envelope_is_a_guest_error() {
    let rt = runtime();
    let mut inst = instance(&rt, "picky", &wat_module(1, GUEST_ERROR));
    let err = inst.process(&[reading("s", 1, &[])]).unwrap_err();
    assert_eq!(
        err,
        ProcessorError::Guest {
            module: "picky".into(),
            code: "bad-input".into(),
            message: "nope".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "module 'picky' returned error bad-input: nope"
    );
}

#[test]
fn unreachable_is_a_plain_trap() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64) unreachable)"#;
    let mut inst = instance(&rt, "oops", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    assert!(
        err.to_string().starts_with("module 'oops' trapped: "),
        "{err}"
    );
}

#[test]
fn division_by_zero_is_a_plain_trap() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (i64.div_s (i64.const 1) (i64.const 0)))"#;
    let mut inst = instance(&rt, "div", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    assert!(err.to_string().contains("divide by zero"), "{err}");
}

#[test]
fn host_call_with_wild_pointer_is_an_abi_violation() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
        (call $log (i32.const 2) (i32.const 65530) (i32.const 100))
        i64.const 0)"#;
    let mut inst = instance(&rt, "wild-log", &wat_module(1, body));
    let err = inst.process(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation, "{err}");
    assert!(
        err.to_string()
            .contains("log: buffer 0xfffa+100 lies outside linear memory"),
        "{err}"
    );
}

#[test]
fn alloc_returning_null_is_an_abi_violation() {
    let rt = runtime();
    let text = format!("(module {} {ECHO})", PRELUDE.replace("{memory}", "1"))
        .replace("(local.get $p))", "(drop (local.get $p)) (i32.const 0))");
    let mut inst = instance(&rt, "stingy", &wat::parse_str(text).unwrap());
    let err = inst.process(&[reading("s", 1, &[])]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation);
    assert!(
        err.to_string().contains("wasmgate_alloc(4096) returned 0"),
        "{err}"
    );
}

#[test]
fn trap_in_init_refuses_the_instance() {
    let rt = runtime();
    let body = format!(
        r#"{ECHO} (func (export "wasmgate_init") (param i32 i32) (result i64) unreachable)"#
    );
    let m = rt.load_bytes("badstart", &wat_module(1, &body)).unwrap();
    let err = rt
        .instantiate(&m, env())
        .err()
        .expect("init trap refuses the instance");
    match &err {
        LoadError::Init(pe) => assert_eq!(pe.kind(), ErrorKind::Trap),
        other => panic!("expected an init error, got {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("init failed: module 'badstart' trapped"),
        "{err}"
    );
}

#[test]
fn init_receives_the_config_map() {
    // init echoes its argument back as an error message length check: it
    // returns an error when the config is not the empty map (0xa0).
    let rt = runtime();
    let body = format!(
        r#"{ECHO} {GUEST_ERROR_INIT}"#,
        GUEST_ERROR_INIT = r#"
        (data (i32.const 40000) "\a1\65error\a2\64code\6abad-config\67message\64nope")
        (func (export "wasmgate_init") (param $p i32) (param $n i32) (result i64)
          (if (result i64) (i32.and (i32.eq (local.get $n) (i32.const 1))
                                    (i32.eq (i32.load8_u (local.get $p)) (i32.const 0xa0)))
            (then (i64.const 0))
            (else (i64.or (i64.shl (i64.const 40000) (i64.const 32)) (i64.const 37)))))"#
    );
    let m = rt.load_bytes("cfg", &wat_module(1, &body)).unwrap();
    rt.instantiate(&m, env()).expect("empty config accepted");
    let config = ModuleConfig {
        cbor: vec![0xa1, 0x61, b'x', 0x01],
        ..Default::default()
    };
    let err = rt
        .instantiate(
            &m,
            env_with(
                std::sync::Arc::new(wasmgate::state::MemoryState::new()),
                config,
            ),
        )
        .err()
        .expect("non-empty config refused by this module");
    assert_eq!(
        err.to_string(),
        "init failed: module 'cfg' returned error bad-config: nope"
    );
}
