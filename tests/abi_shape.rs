//! Modules whose shape breaks the ABI are refused at load, before any of
//! their code runs, with a message that says what is wrong.

use crate::common::*;

#[test]
fn random_bytes_are_not_a_wasm_module() {
    let rt = runtime();
    let err = refusal(
        &rt,
        "noise",
        &[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x42],
    );
    assert!(err.contains("module 'noise'"), "{err}");
    assert!(err.contains("not a wasm module"), "{err}");
}

#[test]
fn truncated_wasm_is_invalid() {
    let rt = runtime();
    let mut bytes = echo_module();
    bytes.truncate(bytes.len() / 2);
    let err = refusal(&rt, "cut", &bytes);
    assert!(err.contains("module 'cut': invalid module"), "{err}");
}

#[test]
fn missing_marker() {
    let rt = runtime();
    let text = format!("(module {} {ECHO})", PRELUDE.replace("{memory}", "1"))
        .replace(r#"(func (export "wasmgate_abi_v1"))"#, "");
    let err = refusal(&rt, "nomarker", &wat::parse_str(text).unwrap());
    assert!(
        err.contains("missing ABI marker export wasmgate_abi_v1"),
        "{err}"
    );
}

#[test]
fn other_abi_version() {
    let rt = runtime();
    let text = format!("(module {} {ECHO})", PRELUDE.replace("{memory}", "1"))
        .replace("wasmgate_abi_v1", "wasmgate_abi_v2");
    let err = refusal(&rt, "future", &wat::parse_str(text).unwrap());
    assert!(
        err.contains("module implements processor ABI version 2; this wasmgate supports version 1"),
        "{err}"
    );
}

#[test]
fn mistyped_marker() {
    let rt = runtime();
    let text = format!("(module {} {ECHO})", PRELUDE.replace("{memory}", "1")).replace(
        r#"(func (export "wasmgate_abi_v1"))"#,
        r#"(func (export "wasmgate_abi_v1") (result i32) i32.const 1)"#,
    );
    let err = refusal(&rt, "m", &wat::parse_str(text).unwrap());
    assert!(
        err.contains("export wasmgate_abi_v1 has type () -> i32, expected () -> ()"),
        "{err}"
    );
}

#[test]
fn missing_process_export() {
    let rt = runtime();
    let err = refusal(&rt, "noproc", &wat_module(1, ""));
    assert!(
        err.contains("module 'noproc': missing export wasmgate_process"),
        "{err}"
    );
}

#[test]
fn mistyped_process_export() {
    let rt = runtime();
    let body = r#"(func (export "wasmgate_process") (param i32) (result i64) i64.const 0)"#;
    let err = refusal(&rt, "badsig", &wat_module(1, body));
    assert!(
        err.contains("export wasmgate_process has type (i32) -> i64, expected (i32, i32) -> i64"),
        "{err}"
    );
}

#[test]
fn mistyped_optional_init_export() {
    let rt = runtime();
    let body = format!(
        r#"{ECHO} (func (export "wasmgate_init") (param i32 i32) (result i32) i32.const 0)"#
    );
    let err = refusal(&rt, "badinit", &wat_module(1, &body));
    assert!(
        err.contains("export wasmgate_init has type (i32, i32) -> i32, expected (i32, i32) -> i64"),
        "{err}"
    );
}

#[test]
fn missing_memory_export() {
    let rt = runtime();
    let text = format!("(module {} {ECHO})", PRELUDE.replace("{memory}", "1"))
        .replace(r#"(memory (export "memory") 1)"#, "(memory 1)");
    let err = refusal(&rt, "nomem", &wat::parse_str(text).unwrap());
    assert!(err.contains("missing export memory"), "{err}");
}

#[test]
fn unknown_import_is_refused() {
    let rt = runtime();
    // Imports must precede definitions in the text format: put it first.
    let text = format!(
        r#"(module (import "env" "system" (func (param i32))) {} {ECHO})"#,
        PRELUDE.replace("{memory}", "1")
    );
    let err = refusal(&rt, "escape", &wat::parse_str(text).unwrap());
    assert!(err.contains("unknown import env::system"), "{err}");
}

#[test]
fn mistyped_host_import_is_refused() {
    let rt = runtime();
    let text = format!(
        r#"(module (import "wasmgate" "now_ms" (func (result i32))) {} {ECHO})"#,
        PRELUDE.replace("{memory}", "1")
    );
    let err = refusal(&rt, "clock", &wat::parse_str(text).unwrap());
    assert!(
        err.contains("import wasmgate::now_ms has type () -> i32, expected () -> i64"),
        "{err}"
    );
}

#[test]
fn start_function_is_refused() {
    let rt = runtime();
    let body = format!("{ECHO} (func $s) (start $s)");
    let err = refusal(&rt, "starter", &wat_module(1, &body));
    assert!(err.contains("module 'starter'"), "{err}");
    assert!(err.to_lowercase().contains("start"), "{err}");
}

#[test]
fn oversized_module_is_refused() {
    let limits = wasmgate::runtime::Limits {
        max_module_bytes: 64,
        ..Default::default()
    };
    let rt = runtime_with(limits);
    let err = refusal(&rt, "big", &echo_module());
    assert!(err.contains("exceeds max_module_bytes = 64"), "{err}");
}
