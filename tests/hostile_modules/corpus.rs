//! The hostile-module corpus: processors that attack the host on purpose,
//! as inline WAT, each with what it must end as.
//!
//! Shared by the integration test (`tests/hostile_modules.rs`, through the
//! real binary) and the under-load benchmark (`daemon/benches/hostile.rs`,
//! which includes this file with `#[path]`), so both run the same corpus.
//! It depends only on `wat` and `wasmgate`.

#![allow(dead_code)]

use wasmgate::runtime::ErrorKind;

/// When a hostile module is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Starts, then fails every call: quarantined after `failure_threshold`
    /// failed calls, every one of this kind.
    Calls(ErrorKind),
    /// Cannot start (refused at instantiate, or `wasmgate_init` fails): the
    /// daemon quarantines it at start-up with this kind and runs the rest.
    Start(ErrorKind),
}

impl Ending {
    /// The error kind the module is quarantined with.
    pub fn kind(self) -> ErrorKind {
        match self {
            Ending::Calls(k) | Ending::Start(k) => k,
        }
    }
}

/// One hostile module.
pub struct Hostile {
    /// Processor (and stream) name.
    pub name: &'static str,
    /// What it does.
    pub what: &'static str,
    /// How it ends.
    pub ending: Ending,
    /// A phrase of the error message it ends with (`last_error`).
    pub message: &'static str,
    /// The module binary.
    pub wasm: Vec<u8>,
}

/// Text every line of the log-spamming module starts with.
pub const SPAM_TEXT: &str = "hostile-log-spam: flooding the journal";

/// Every host import of ABI v1 (a module may import any subset).
const IMPORTS: &str = r#"
  (import "wasmgate" "log" (func $log (param i32 i32 i32)))
  (import "wasmgate" "now_ms" (func $now_ms (result i64)))
  (import "wasmgate" "state_get" (func $state_get (param i32 i32 i32 i32) (result i32)))
  (import "wasmgate" "state_set" (func $state_set (param i32 i32 i32 i32) (result i32)))
  (import "wasmgate" "state_delete" (func $state_delete (param i32 i32) (result i32)))
"#;

/// Marker, memory of `{pages}` pages, a bump allocator, and the 9-byte
/// `{"outputs":` header at 32768.
const PRELUDE: &str = r#"
  (memory (export "memory") {pages})
  (global $bump (mut i32) (i32.const 1024))
  (func (export "wasmgate_abi_v1"))
  (func (export "wasmgate_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
  (func (export "wasmgate_dealloc") (param i32 i32))
  (data (i32.const 32768) "\a1\67outputs")
"#;

/// `process` returning its input batch (`{"outputs": batch}`).
const ECHO: &str = r#"
  (func (export "wasmgate_process") (param $p i32) (param $n i32) (result i64)
    (memory.copy (i32.const 32777) (local.get $p) (local.get $n))
    (i64.or (i64.shl (i64.const 32768) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $n) (i32.const 9)))))
"#;

/// A module: the imports, the prelude with `pages` of memory, and `body`.
pub fn module(pages: u32, body: &str) -> Vec<u8> {
    let text = format!(
        "(module {IMPORTS} {} {body})",
        PRELUDE.replace("{pages}", &pages.to_string())
    );
    wat::parse_str(text).expect("corpus WAT parses")
}

/// `process` returning the `len` bytes at `ptr` as its result envelope.
fn returning(ptr: u64, len: u64) -> String {
    format!(
        r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
             (i64.const {}))"#,
        (ptr << 32) | len
    )
}

/// The whole corpus, with the default `[runtime]` limits in mind (16 MiB
/// memory, 10 000 table elements, 1 MiB output, 1 024 frames).
pub fn corpus() -> Vec<Hostile> {
    use ErrorKind::*;
    let spin = r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
                    (loop $l (br $l)) (i64.const 0))"#;
    vec![
        Hostile {
            name: "spin",
            what: "endless loop in process",
            ending: Ending::Calls(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(1, spin),
        },
        Hostile {
            name: "recurse",
            what: "unbounded recursion",
            ending: Ending::Calls(StackExhausted),
            message: "exhausted its stack",
            wasm: module(
                1,
                r#"(func $down (param $n i64) (result i64)
                     (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
                   (func (export "wasmgate_process") (param i32 i32) (result i64)
                     (call $down (i64.const 0)))"#,
            ),
        },
        Hostile {
            name: "grow-memory",
            what: "memory.grow one page at a time until refused",
            ending: Ending::Calls(MemoryLimit),
            message: "memory.grow denied",
            wasm: module(
                1,
                r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
                     (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
                     (i64.const 0))"#,
            ),
        },
        Hostile {
            name: "grow-table",
            what: "table.grow 1 000 elements at a time until refused",
            ending: Ending::Calls(MemoryLimit),
            message: "table.grow denied",
            wasm: module(
                1,
                r#"(table $t 1 funcref)
                   (func (export "wasmgate_process") (param i32 i32) (result i64)
                     (loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000))
                                                (i32.const -1))))
                     (i64.const 0))"#,
            ),
        },
        Hostile {
            name: "huge-memory",
            what: "declares 1 000 pages (62.5 MiB) of initial memory",
            ending: Ending::Start(MemoryLimit),
            message: "initial memory",
            wasm: module(1000, ECHO),
        },
        Hostile {
            name: "huge-table",
            what: "declares a table of 1 000 000 elements",
            ending: Ending::Start(MemoryLimit),
            message: "initial table",
            wasm: module(1, &format!("(table 1000000 funcref) {ECHO}")),
        },
        Hostile {
            name: "giant-data",
            what: "a 4 MiB data segment (copied at every restart), then an endless loop",
            ending: Ending::Calls(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(
                128,
                &format!(
                    r#"(data (i32.const 65536) "{}") {spin}"#,
                    "A".repeat(4 << 20)
                ),
            ),
        },
        Hostile {
            name: "init-trap",
            what: "wasmgate_init traps (unreachable)",
            ending: Ending::Start(Trap),
            message: "unreachable",
            wasm: module(
                1,
                &format!(
                    r#"{ECHO} (func (export "wasmgate_init") (param i32 i32) (result i64) unreachable)"#
                ),
            ),
        },
        Hostile {
            name: "init-spin",
            what: "wasmgate_init loops forever",
            ending: Ending::Start(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(
                1,
                &format!(
                    r#"{ECHO} (func (export "wasmgate_init") (param i32 i32) (result i64)
                                (loop $l (br $l)) (i64.const 0))"#
                ),
            ),
        },
        Hostile {
            name: "unreachable",
            what: "traps in process",
            ending: Ending::Calls(Trap),
            message: "unreachable",
            wasm: module(
                1,
                r#"(func (export "wasmgate_process") (param i32 i32) (result i64) unreachable)"#,
            ),
        },
        Hostile {
            name: "huge-output",
            what: "claims a 2 MiB result (over max_output_bytes)",
            ending: Ending::Calls(AbiViolation),
            message: "exceeds max_output_bytes",
            wasm: module(64, &returning(0, 2 << 20)),
        },
        Hostile {
            name: "wild-output",
            what: "result pointer outside linear memory",
            ending: Ending::Calls(AbiViolation),
            message: "lies outside linear memory",
            wasm: module(1, &returning(0xffff_0000, 64)),
        },
        Hostile {
            name: "bad-cbor",
            what: "result bytes that are not CBOR",
            ending: Ending::Calls(AbiViolation),
            message: "does not decode",
            wasm: module(
                1,
                &format!(
                    r#"(data (i32.const 40000) "\ff\ff\ff\ff\1f\00") {}"#,
                    returning(40000, 6)
                ),
            ),
        },
        Hostile {
            name: "wrong-shape",
            what: "valid CBOR, but an output reading without `ts`",
            ending: Ending::Calls(AbiViolation),
            message: "missing field `ts`",
            wasm: module(
                1,
                // {"outputs": [{"sensor": "x"}]}
                &format!(
                    r#"(data (i32.const 40000) "\a1\67outputs\81\a1\66sensor\61x") {}"#,
                    returning(40000, 20)
                ),
            ),
        },
        Hostile {
            name: "wild-alloc",
            what: "wasmgate_alloc returns a pointer outside memory",
            ending: Ending::Calls(AbiViolation),
            message: "which lies outside memory",
            wasm: wat::parse_str(
                r#"(module
                     (memory (export "memory") 1)
                     (func (export "wasmgate_abi_v1"))
                     (func (export "wasmgate_alloc") (param i32) (result i32) (i32.const 0x7fff0000))
                     (func (export "wasmgate_dealloc") (param i32 i32))
                     (func (export "wasmgate_process") (param i32 i32) (result i64) (i64.const 0)))"#,
            )
            .expect("corpus WAT parses"),
        },
        Hostile {
            name: "error-envelope",
            what: "answers every batch with an error envelope",
            ending: Ending::Calls(GuestError),
            message: "returned error nope",
            wasm: module(
                1,
                // {"error": {"code": "nope", "message": "hostile"}}
                &format!(
                    r#"(data (i32.const 40000) "\a1\65error\a2\64code\64nope\67message\67hostile") {}"#,
                    returning(40000, 34)
                ),
            ),
        },
        Hostile {
            name: "log-spam",
            what: "calls log in an endless loop",
            ending: Ending::Calls(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(
                1,
                &format!(
                    r#"(data (i32.const 2048) "{SPAM_TEXT}")
                       (func (export "wasmgate_process") (param i32 i32) (result i64)
                         (loop $l (call $log (i32.const 3) (i32.const 2048) (i32.const {len})) (br $l))
                         (i64.const 0))"#,
                    len = SPAM_TEXT.len()
                ),
            ),
        },
        Hostile {
            name: "clock-spam",
            what: "calls now_ms in an endless loop",
            ending: Ending::Calls(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(
                1,
                r#"(func (export "wasmgate_process") (param i32 i32) (result i64)
                     (loop $l (drop (call $now_ms)) (br $l))
                     (i64.const 0))"#,
            ),
        },
        Hostile {
            name: "state-spam",
            what: "state_set of ever new keys and state_get of an absent one, endlessly",
            ending: Ending::Calls(OutOfFuel),
            message: "ran out of fuel",
            wasm: module(
                1,
                r#"(data (i32.const 3000) "none")
                   (func (export "wasmgate_process") (param i32 i32) (result i64)
                     (local $i i32)
                     (loop $l
                       (i32.store (i32.const 2048) (local.get $i))
                       (drop (call $state_set (i32.const 2048) (i32.const 4) (i32.const 2048) (i32.const 0)))
                       (drop (call $state_get (i32.const 3000) (i32.const 4) (i32.const 4000) (i32.const 16)))
                       (local.set $i (i32.add (local.get $i) (i32.const 1)))
                       (br $l))
                     (i64.const 0))"#,
            ),
        },
    ]
}
