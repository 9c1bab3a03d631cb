//! `guest_output`: see `wasmgate_fuzz_harness::guest_output` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate_fuzz_harness::guest_output::check(data));
