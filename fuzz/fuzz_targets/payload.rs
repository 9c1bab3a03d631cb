//! `payload`: see `wasmgate_fuzz_harness::payload` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate_fuzz_harness::payload::check(data));
