//! The raw host imports (ABI.md §4), exactly as the host provides them.
//!
//! On `wasm32` these are `extern "C"` imports from the wasm module
//! `wasmgate`. Everywhere else they are an in-memory emulation with the same
//! signatures (see [`crate::testing`]), so code calling them runs under
//! `cargo test`. Prefer the safe wrappers in [`crate::host`]; a module only
//! imports the functions it (transitively) uses.
//!
//! Pointers and lengths are 32-bit on wasm32, which is what the ABI's `i32`
//! parameters are; lengths are passed as `usize` here for convenience.
//!
//! # Safety
//!
//! Every `ptr, len` pair must describe memory that is valid for reads (keys,
//! values, messages) or writes (`buf_ptr, buf_cap`) of that many bytes. On
//! wasm32 the host traps the call (an ABI violation) if a pair lies outside
//! linear memory.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasmgate")]
unsafe extern "C" {
    /// Log the UTF-8 text at `ptr, len` at `level` (0 trace, 1 debug, 2 info,
    /// 3 warn, 4 error; others are clamped). The host truncates messages over
    /// 1 KiB and rate-limits per module.
    pub fn log(level: i32, ptr: *const u8, len: usize);

    /// Milliseconds since the Unix epoch (under `wasmgate replay`: the `ts` of
    /// the newest reading in the current batch).
    pub fn now_ms() -> i64;

    /// Look up state key `key_ptr, key_len`: `-1` if absent, else the value's
    /// length `n`, copied to `buf_ptr` only when `n <= buf_cap`.
    pub fn state_get(key_ptr: *const u8, key_len: usize, buf_ptr: *mut u8, buf_cap: usize) -> i32;

    /// Store `val_ptr, val_len` under the key: `0` stored, `-1` quota exceeded
    /// (key over 256 bytes, value over 64 KiB, or module total over 1 MiB).
    /// Writes are committed when the current call returns successfully.
    pub fn state_set(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize)
    -> i32;

    /// Delete the key; always `0` (deleting an absent key is fine).
    pub fn state_delete(key_ptr: *const u8, key_len: usize) -> i32;

    /// Like [`state_get`], for the CBOR encoding of one key of the module's
    /// config table.
    pub fn config_get(key_ptr: *const u8, key_len: usize, buf_ptr: *mut u8, buf_cap: usize) -> i32;
}

#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::raw::{config_get, log, now_ms, state_delete, state_get, state_set};
