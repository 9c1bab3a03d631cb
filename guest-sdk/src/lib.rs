//! Write [wasmgate] sensor processors in Rust.
//!
//! A processor is a WebAssembly module that the wasmgate daemon runs,
//! sandboxed, on every batch of sensor readings: it receives the batch and
//! returns the readings to pass on (filtered, transformed, aggregated, or new
//! ones such as alerts). This crate implements the binary contract, ABI v1
//! (`wit/ABI.md`, `wit/processor.wit` in the wasmgate repository), so a
//! processor is a pair of plain Rust functions:
//!
//! ```
//! // src/lib.rs of a `crate-type = ["cdylib"]` crate; in a real processor the
//! // file starts with `#![no_std]` (the SDK provides the allocator and panic
//! // handler on wasm32).
//! use wasmgate_sdk::prelude::*;
//!
//! /// Drop readings whose `field` is above `max`, and count the drops.
//! struct Settings {
//!     field: String,
//!     max: f64,
//! }
//!
//! static SETTINGS: Global<Settings> = Global::new();
//!
//! fn init(config: &Config) -> Result<()> {
//!     let field = config.get_str("field")?.unwrap_or("temp").to_string();
//!     let max = config.require_f64("max")?;
//!     info!("dropping readings with {field} > {max}");
//!     SETTINGS.set(Settings { field, max });
//!     Ok(())
//! }
//!
//! fn process(batch: Vec<Reading>) -> Result<Vec<Reading>> {
//!     let settings = SETTINGS.get()?;
//!     let before = batch.len();
//!     let kept: Vec<Reading> = batch
//!         .into_iter()
//!         .filter(|r| r.field(&settings.field).is_none_or(|v| v <= settings.max))
//!         .collect();
//!     let dropped: u64 = state::get_cbor("dropped")?.unwrap_or(0);
//!     state::set_cbor("dropped", &(dropped + (before - kept.len()) as u64))?;
//!     Ok(kept)
//! }
//!
//! wasmgate_sdk::processor!(init = init, process = process);
//!
//! // Native unit test (`cargo test`), against the emulated host:
//! # fn main() {
//! use wasmgate_sdk::testing;
//! testing::reset();
//! testing::run_init(init, &Config::new().with("max", 30)).unwrap();
//! let out = testing::run_process(process, &[
//!     Reading::new("greenhouse/t1", 1_000).with_field("temp", 21.5),
//!     Reading::new("greenhouse/t1", 2_000).with_field("temp", 85.0),
//! ]).unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(testing::state_get_cbor::<u64>("dropped"), Some(1));
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown` and
//! run it with `wasmgate replay --input readings.csv --module
//! target/wasm32-unknown-unknown/release/<name>.wasm`; `README.md` has the
//! whole walk-through (Cargo profile, toolchain, testing).
//!
//! # Layout
//!
//! | item | what |
//! |---|---|
//! | [`processor!`] | the entry macro: emits the module's exports |
//! | [`Reading`] | the unit of work, in and out |
//! | [`Error`], [`Result`] | an error reported on purpose (`{"error": …}` envelope) |
//! | [`Config`], [`Value`] | the `init` argument, with typed getters and [`Config::parse`] |
//! | [`Global`] | a cell for `static` instance data (settings, caches) |
//! | [`host`] | logging, clock, config lookups; [`host::state`] persistent state; [`host::raw`] the raw imports |
//! | [`trace!`] [`debug!`] [`info!`] [`warn!`] [`error!`] [`log!`](crate::log!) | logging with `format!` arguments |
//! | [`prelude`] | `use wasmgate_sdk::prelude::*;` for all of the above plus `Vec`, `String`, `format!`, `vec!` |
//! | `testing` | (not on wasm32) the emulated host for native unit tests |
//!
//! Features (default on, effective on wasm32 only): `allocator` installs the
//! global allocator (size-class free lists for small blocks in front of
//! dlmalloc), `panic-handler` a panic handler that logs
//! the message at error level through the host and traps. Turn them off with
//! `default-features = false` to bring your own (or to link `std`).
//!
//! # ABI notes
//!
//! * **Exports.** [`processor!`] emits the marker `wasmgate_abi_v1` (an
//!   empty `() -> ()` function whose *name* carries the version; the host
//!   checks it before instantiating and never calls it), `wasmgate_alloc` (8-byte aligned blocks from the global allocator, `0`
//!   on failure), `wasmgate_dealloc`, `wasmgate_process` and, with `init =`,
//!   `wasmgate_init`. `memory` is exported by the linker. No start function.
//! * **Buffers.** The host allocates the input buffer with `wasmgate_alloc`,
//!   owns it and reuses it across calls; the SDK only reads it during the
//!   call (readings are decoded into owned values). The result envelope is
//!   written to one SDK-owned `Vec` that is reused by every call and stays
//!   valid until the next one. A call returns `0` when there is nothing to
//!   say (init succeeded, or no outputs), else `ptr << 32 | len`.
//! * **Envelope.** `Ok(outputs)` becomes `{"outputs": [...]}`; `Err(e)`
//!   becomes `{"error": {"code": e.code, "message": e.message}}`. A batch
//!   that does not decode gives code `bad-input`; a config that is not a map
//!   `bad-config`. Outputs are checked before encoding as the host checks
//!   them (finite values, at most 256 fields and 32 tags, sensor ≤ 256 bytes,
//!   kind ≤ 64 bytes); a violation is reported as code `bad-output` instead
//!   of becoming a host-side ABI violation.
//! * **CBOR.** Inputs accept any valid encoding of the schema (the host sends
//!   float64 values; integers and other float widths are accepted too) and
//!   ignore unknown keys. Outputs are written like the host writes its
//!   inputs: definite lengths, shortest integers, field values as float64,
//!   map keys in schema order
//!   (`sensor, ts, fields, kind, tags`, `kind`/`tags` omitted when empty),
//!   fields and tags in `Vec` order.
//! * **Imports.** Only functions of module `wasmgate`, and only those the
//!   processor uses (`log` is always imported when the panic handler is on).
//! * **Traps.** A panic traps; the host then discards the instance, drops the
//!   call's state writes, and instantiates afresh (calling `init` again), so
//!   [`Global`]s start empty again while [`host::state`] survives.
//!
//! [wasmgate]: https://github.com/wasmgate/wasmgate

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

mod cbor;
mod config;
mod error;
mod global;
pub mod host;
mod reading;
mod rt;
#[cfg(any(test, all(target_arch = "wasm32", feature = "allocator")))]
mod sizeclass;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use config::{Config, Value};
pub use error::{Error, Result};
pub use global::{Global, GlobalRef};
pub use reading::Reading;
/// The `serde` the SDK uses, for `#[derive(serde::Deserialize)]` on config
/// structs without a direct dependency: add
/// `#[serde(crate = "wasmgate_sdk::serde")]` to the type.
pub use serde;

/// `use wasmgate_sdk::prelude::*;` — the SDK's types and macros, the host
/// wrappers, and the `alloc` items a `#![no_std]` processor needs.
pub mod prelude {
    pub use crate::host::{self, Level, state};
    pub use crate::{Config, Error, Global, Reading, Result, Value};
    pub use crate::{debug, error, info, trace, warn};
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

/// Displays an `f64` for messages without core's float formatting (which
/// would add ~10 KiB of code and tables to every module): integers exactly
/// up to 2^53, else about 9 significant digits (`1.5`, `-0.000123`,
/// `1.23456789e20`), `NaN`, `inf`, `-inf`.
#[doc(hidden)]
pub struct ShortF64(pub f64);

impl core::fmt::Display for ShortF64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let x = self.0;
        if x.is_nan() {
            return f.write_str("NaN");
        }
        if x.is_sign_negative() && x != 0.0 {
            f.write_str("-")?;
        }
        let a = if x < 0.0 { -x } else { x };
        if a.is_infinite() {
            return f.write_str("inf");
        }
        if a < 9_007_199_254_740_992.0 && a == (a as u64) as f64 {
            return write!(f, "{}.0", a as u64);
        }
        // 9 significant digits: a ~= digits * 10^(point - 9)
        let (mut m, mut point) = (a, 9i32);
        while m >= 1e9 {
            m /= 10.0;
            point += 1;
        }
        while m < 1e8 {
            m *= 10.0;
            point -= 1;
        }
        let mut digits = (m + 0.5) as u64;
        if digits >= 1_000_000_000 {
            digits /= 10;
            point += 1;
        }
        let mut d = [b'0'; 9];
        for slot in d.iter_mut().rev() {
            *slot = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        let sig = d.iter().rposition(|&c| c != b'0').map_or(1, |i| i + 1);
        let show = |f: &mut core::fmt::Formatter<'_>, bytes: &[u8]| {
            f.write_str(core::str::from_utf8(bytes).unwrap_or("?"))
        };
        if (-5..=0).contains(&point) {
            f.write_str("0.")?;
            for _ in point..0 {
                f.write_str("0")?;
            }
            show(f, &d[..sig])
        } else if (1..=16).contains(&point) {
            let p = point as usize;
            if p >= 9 {
                show(f, &d)?;
                for _ in 9..p {
                    f.write_str("0")?;
                }
                f.write_str(".0")
            } else {
                show(f, &d[..p])?;
                f.write_str(".")?;
                show(f, &d[p..sig.max(p + 1)])
            }
        } else {
            show(f, &d[..1])?;
            if sig > 1 {
                f.write_str(".")?;
                show(f, &d[1..sig])?;
            }
            write!(f, "e{}", point - 1)
        }
    }
}

/// Implementation details used by the macros. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::rt::*;
    pub use alloc::format;
}

/// Declare the processor: emits the module's ABI exports.
///
/// ```text
/// wasmgate_sdk::processor!(process);                       // no init
/// wasmgate_sdk::processor!(process = process);             // same
/// wasmgate_sdk::processor!(init = init, process = process);
/// ```
///
/// with
///
/// ```text
/// fn process(batch: Vec<Reading>) -> wasmgate_sdk::Result<Vec<Reading>>;
/// fn init(config: &wasmgate_sdk::Config) -> wasmgate_sdk::Result<()>;
/// ```
///
/// On wasm32 it defines the marker `wasmgate_abi_v1`, `wasmgate_alloc`,
/// `wasmgate_dealloc`, `wasmgate_process` and (with `init =`)
/// `wasmgate_init` as `#[unsafe(no_mangle)] extern "C"` functions that call
/// into the SDK runtime (decode the argument, call your function, encode the
/// envelope). Use it once per crate. On other targets it only checks the
/// functions' types (and marks them used); test them with
/// [`testing::run_init`](crate::testing::run_init) and
/// [`testing::run_process`](crate::testing::run_process).
#[macro_export]
macro_rules! processor {
    (init = $init:path, process = $process:path $(,)?) => {
        $crate::processor!(@process $process);
        $crate::processor!(@init $init);
    };
    (process = $process:path, init = $init:path $(,)?) => {
        $crate::processor!(@process $process);
        $crate::processor!(@init $init);
    };
    (process = $process:path $(,)?) => {
        $crate::processor!(@process $process);
    };
    (@process $process:path) => {
        const _: $crate::__private::ProcessFn = $process;
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn wasmgate_abi_v1() {}
            #[unsafe(no_mangle)]
            extern "C" fn wasmgate_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }
            #[unsafe(no_mangle)]
            unsafe extern "C" fn wasmgate_dealloc(ptr: i32, len: i32) {
                // SAFETY: the host frees only blocks it got from wasmgate_alloc(len).
                unsafe { $crate::__private::dealloc(ptr, len) }
            }
            #[unsafe(no_mangle)]
            unsafe extern "C" fn wasmgate_process(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host passes its input buffer, inside memory.
                unsafe { $crate::__private::process(ptr, len, $process) }
            }
        };
    };
    (@init $init:path) => {
        const _: $crate::__private::InitFn = $init;
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            unsafe extern "C" fn wasmgate_init(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host passes its input buffer, inside memory.
                unsafe { $crate::__private::init(ptr, len, $init) }
            }
        };
    };
    ($process:path $(,)?) => {
        $crate::processor!(@process $process);
    };
}

#[cfg(test)]
mod tests {
    use super::ShortF64;
    use std::string::ToString;

    #[test]
    fn short_f64() {
        for (x, s) in [
            (1.5, "1.5"),
            (-2.0, "-2.0"),
            (0.1, "0.1"),
            (21.45, "21.45"),
            (-0.000123, "-0.000123"),
            (1e20, "1e20"),
            (1.23456789e20, "1.23456789e20"),
            (1.5e-9, "1.5e-9"),
            (123456789.25, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (0.0, "0.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-inf"),
            (2.0f64.powi(60), "1.1529215e18"),
        ] {
            assert_eq!(ShortF64(x).to_string(), s, "{x:?}");
        }
    }
}

#[cfg(test)]
mod tests_abi;
