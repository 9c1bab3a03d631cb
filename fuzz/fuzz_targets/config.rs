//! `config`: see `wasmgate_fuzz_harness::config` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate_fuzz_harness::config::check(data));
