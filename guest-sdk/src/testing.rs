//! Native unit testing: an in-memory emulation of the host (not on wasm32).
//!
//! Off wasm32, [`host::raw`](crate::host::raw) is backed by this module, so a
//! processor's code runs unchanged under `cargo test`: state lives in a map,
//! the clock is whatever you set, log lines are captured, and config lookups
//! answer from the config you installed. Everything is **per thread** (libtest
//! runs each test on its own thread), including the values of
//! [`Global`](crate::Global) cells, so tests do not see each other.
//!
//! ```
//! use wasmgate_sdk::{testing, Config, Reading, Result};
//!
//! fn init(config: &Config) -> Result<()> {
//!     config.require_f64("limit")?;
//!     Ok(())
//! }
//!
//! fn process(batch: Vec<Reading>) -> Result<Vec<Reading>> {
//!     let n: u64 = wasmgate_sdk::host::state::get_cbor("n")?.unwrap_or(0);
//!     wasmgate_sdk::host::state::set_cbor("n", &(n + batch.len() as u64))?;
//!     wasmgate_sdk::info!("seen {} readings", n + batch.len() as u64);
//!     Ok(batch)
//! }
//!
//! testing::reset();
//! testing::run_init(init, &Config::new().with("limit", 3.5)).unwrap();
//! let batch = [Reading::new("s1", 1_000).with_field("x", 1.0)];
//! // Through the real ABI path: CBOR in, envelope out, output checks.
//! assert_eq!(testing::run_process(process, &batch).unwrap(), batch);
//! testing::restart(); // a new instance: statics are gone, state is kept
//! testing::run_process(process, &batch).unwrap();
//! assert_eq!(testing::state_get_cbor::<u64>("n"), Some(2));
//! assert_eq!(testing::logs().last().unwrap().message, "seen 2 readings");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::Level;
use crate::rt::{InitFn, ProcessFn};
use crate::{Config, Error, Reading, Result};

/// Host limits the emulation enforces, as the real host does (ABI.md §4).
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_TOTAL: usize = 1024 * 1024;
const MAX_LOG: usize = 1024;

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// Its text (truncated at 1 KiB, like the host does).
    pub message: String,
}

impl core::fmt::Display for LogRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{}] {}", self.level.as_str(), self.message)
    }
}

#[derive(Default, Clone)]
struct Emu {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    config: BTreeMap<Vec<u8>, Vec<u8>>,
    now_ms: i64,
    logs: Vec<LogRecord>,
    generation: u64,
}

std::thread_local! {
    static EMU: RefCell<Emu> = RefCell::new(Emu::default());
}

fn with<R>(f: impl FnOnce(&mut Emu) -> R) -> R {
    EMU.with(|e| f(&mut e.borrow_mut()))
}

/// The current thread's instance generation (for [`Global`](crate::Global)).
pub(crate) fn generation() -> u64 {
    with(|e| e.generation)
}

/// Forget everything on this thread: state, config, clock (back to 0),
/// captured logs, and the values of all [`Global`](crate::Global)s.
/// Call it first in every test.
pub fn reset() {
    with(|e| {
        let generation = e.generation + 1;
        *e = Emu {
            generation,
            ..Emu::default()
        };
    });
}

/// Simulate the host discarding the instance and creating a new one (as
/// after a trap or a daemon restart): [`Global`](crate::Global)s are emptied;
/// state, config, clock and logs are kept. Call `init` again afterwards, as
/// the host would.
pub fn restart() {
    with(|e| e.generation += 1);
}

/// Set the clock [`host::now_ms`](crate::host::now_ms) returns.
pub fn set_now_ms(ms: i64) {
    with(|e| e.now_ms = ms);
}

/// Move the clock forward by `ms`.
pub fn advance_ms(ms: i64) {
    with(|e| e.now_ms += ms);
}

/// The log lines captured so far on this thread, oldest first.
pub fn logs() -> Vec<LogRecord> {
    with(|e| e.logs.clone())
}

/// The captured log lines, clearing them.
pub fn take_logs() -> Vec<LogRecord> {
    with(|e| core::mem::take(&mut e.logs))
}

/// Install `config` as the module's config table, as seen by
/// [`host::config_get`](crate::host::config_get). ([`run_init`] does this.)
pub fn set_config(config: &Config) {
    let entries = config
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_cbor()))
        .collect();
    with(|e| e.config = entries);
}

/// The raw state value under `key`.
pub fn state_get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    with(|e| e.state.get(key.as_ref()).cloned())
}

/// The state value under `key`, CBOR-decoded (`None` if absent).
///
/// # Panics
/// If the value does not decode as `T`.
pub fn state_get_cbor<T: DeserializeOwned>(key: impl AsRef<[u8]>) -> Option<T> {
    let key = key.as_ref();
    state_get(key).map(|bytes| {
        crate::cbor::decode_value(&bytes)
            .map_err(|e| (String::new(), e))
            .and_then(|value| value.deserialize_into(""))
            .unwrap_or_else(|(path, e)| {
                panic!(
                    "state key `{}` does not decode (at `{path}`): {e}",
                    String::from_utf8_lossy(key)
                )
            })
    })
}

/// Store a raw state value (no quota check), e.g. to seed a test.
pub fn state_set(key: impl AsRef<[u8]>, value: &[u8]) {
    with(|e| e.state.insert(key.as_ref().to_vec(), value.to_vec()));
}

/// Store a CBOR-encoded state value, e.g. to seed a test.
pub fn state_set_cbor<T: Serialize + ?Sized>(key: impl AsRef<[u8]>, value: &T) {
    state_set(key, &crate::rt::to_cbor(value).expect("value encodes"));
}

/// All state keys, sorted (lossily decoded as UTF-8).
pub fn state_keys() -> Vec<String> {
    with(|e| {
        e.state
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    })
}

/// Run `f` like the host runs a call: state writes are kept only if it
/// returns `Ok`.
fn transaction<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = with(|e| e.state.clone());
    let result = f();
    if result.is_err() {
        with(|e| e.state = before);
    }
    result
}

/// Decode an envelope the way the host does (strictly: exactly one key).
fn decode_envelope(bytes: &[u8]) -> Result<Vec<Reading>> {
    if bytes.is_empty() {
        return Ok(Vec::new()); // result 0
    }
    let violation = |e: String| -> ! { panic!("ABI violation: envelope does not decode: {e}") };
    let mut r = crate::cbor::Reader::new(bytes);
    let mut result = None;
    let mut keys = 0;
    r.map(|r, key| {
        keys += 1;
        match &*key {
            "outputs" => result = Some(Ok(r.batch_items()?)),
            "error" => {
                let (mut code, mut message) = (None, None);
                r.map(|r, k| {
                    match &*k {
                        "code" => code = Some(r.text()?.into_owned()),
                        "message" => message = Some(r.text()?.into_owned()),
                        _ => return Err(std::format!("unknown error key `{k}`")),
                    }
                    Ok(())
                })?;
                let code = code.ok_or("missing `code`")?;
                let message = message.ok_or("missing `message`")?;
                result = Some(Err(Error { code, message }));
            }
            _ => return Err(std::format!("unknown key `{key}`")),
        }
        Ok(())
    })
    .and_then(|()| r.end())
    .unwrap_or_else(|e| violation(e));
    match (keys, result) {
        (1, Some(result)) => result,
        _ => violation("an envelope has exactly one key".into()),
    }
}

/// Call `init` through the ABI path, like the host: the config is
/// CBOR-encoded, decoded by the SDK, `init` runs, and an `Err` comes back
/// through the error envelope (its state writes discarded). Also installs
/// `config` for [`host::config_get`](crate::host::config_get).
pub fn run_init(init: InitFn, config: &Config) -> Result<()> {
    set_config(config);
    let input = config.to_cbor();
    transaction(|| {
        let mut out = Vec::new();
        crate::rt::init_bytes(&input, init, &mut out);
        match decode_envelope(&out)? {
            outputs if outputs.is_empty() => Ok(()),
            _ => panic!("ABI violation: init returned outputs"),
        }
    })
}

/// Call `process` through the ABI path, like the host: the batch is
/// CBOR-encoded, decoded by the SDK, `process` runs, its outputs are checked
/// (finite values, size caps) and encoded into the envelope, which is decoded
/// again. An `Err` discards the call's state writes, as on the host.
pub fn run_process(process: ProcessFn, batch: &[Reading]) -> Result<Vec<Reading>> {
    let mut input = Vec::new();
    crate::cbor::Writer(&mut input).batch(batch);
    transaction(|| {
        let mut out = Vec::new();
        crate::rt::process_bytes(&input, process, &mut out);
        decode_envelope(&out)
    })
}

/// The emulated imports behind [`crate::host::raw`] off wasm32.
#[doc(hidden)]
pub mod raw {
    use super::*;

    /// # Safety
    /// `ptr, len` must be valid for reads.
    unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if len == 0 {
            &[]
        } else {
            // SAFETY: per the contract.
            unsafe { core::slice::from_raw_parts(ptr, len) }
        }
    }

    /// Copy `value` to `buf` if it fits; the `state_get` return convention.
    ///
    /// # Safety
    /// `buf, cap` must be valid for writes.
    unsafe fn answer(value: Option<&Vec<u8>>, buf: *mut u8, cap: usize) -> i32 {
        match value {
            None => -1,
            Some(v) => {
                if v.len() <= cap && !v.is_empty() {
                    // SAFETY: per the contract, and `v.len() <= cap`.
                    unsafe { core::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len()) };
                }
                v.len() as i32
            }
        }
    }

    /// Emulated `wasmgate::log`: captured for [`logs`], echoed to stderr.
    ///
    /// # Safety
    /// `ptr, len` must be valid for reads.
    pub unsafe fn log(level: i32, ptr: *const u8, len: usize) {
        // SAFETY: per the contract.
        let text = String::from_utf8_lossy(unsafe { bytes(ptr, len) });
        let mut message = text.into_owned();
        if message.len() > MAX_LOG {
            let mut end = MAX_LOG;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let record = LogRecord {
            level: Level::from_i32(level),
            message,
        };
        std::eprintln!("wasmgate guest log: {record}");
        with(|e| e.logs.push(record));
    }

    /// Emulated `wasmgate::now_ms`: see [`set_now_ms`].
    ///
    /// # Safety
    /// Always safe; `unsafe` to match the wasm32 import.
    pub unsafe fn now_ms() -> i64 {
        with(|e| e.now_ms)
    }

    /// Emulated `wasmgate::state_get`.
    ///
    /// # Safety
    /// `key_ptr, key_len` valid for reads; `buf_ptr, buf_cap` for writes.
    pub unsafe fn state_get(
        key_ptr: *const u8,
        key_len: usize,
        buf_ptr: *mut u8,
        buf_cap: usize,
    ) -> i32 {
        // SAFETY: per the contract.
        let key = unsafe { bytes(key_ptr, key_len) };
        // SAFETY: per the contract.
        with(|e| unsafe { answer(e.state.get(key), buf_ptr, buf_cap) })
    }

    /// Emulated `wasmgate::state_set`, with the host's quotas.
    ///
    /// # Safety
    /// Both pairs valid for reads.
    pub unsafe fn state_set(
        key_ptr: *const u8,
        key_len: usize,
        val_ptr: *const u8,
        val_len: usize,
    ) -> i32 {
        // SAFETY: per the contract.
        let (key, value) = unsafe { (bytes(key_ptr, key_len), bytes(val_ptr, val_len)) };
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return -1;
        }
        with(|e| {
            let total: usize = e
                .state
                .iter()
                .filter(|(k, _)| k.as_slice() != key)
                .map(|(k, v)| k.len() + v.len())
                .sum();
            if total + key.len() + value.len() > MAX_TOTAL {
                return -1;
            }
            e.state.insert(key.to_vec(), value.to_vec());
            0
        })
    }

    /// Emulated `wasmgate::state_delete`.
    ///
    /// # Safety
    /// `key_ptr, key_len` valid for reads.
    pub unsafe fn state_delete(key_ptr: *const u8, key_len: usize) -> i32 {
        // SAFETY: per the contract.
        let key = unsafe { bytes(key_ptr, key_len) };
        with(|e| e.state.remove(key));
        0
    }

    /// Emulated `wasmgate::config_get`: see [`set_config`].
    ///
    /// # Safety
    /// `key_ptr, key_len` valid for reads; `buf_ptr, buf_cap` for writes.
    pub unsafe fn config_get(
        key_ptr: *const u8,
        key_len: usize,
        buf_ptr: *mut u8,
        buf_cap: usize,
    ) -> i32 {
        // SAFETY: per the contract.
        let key = unsafe { bytes(key_ptr, key_len) };
        // SAFETY: per the contract.
        with(|e| unsafe { answer(e.config.get(key), buf_ptr, buf_cap) })
    }
}
