//! The ABI runtime behind [`processor!`](crate::processor): buffer
//! management, decoding the arguments, encoding the envelope (ABI.md §2–3).
//! Not a public API: the macro and [`testing`](crate::testing) call it.

use alloc::format;
use alloc::vec::Vec;
use serde::Serialize;

use crate::cbor::{Reader, Writer};
use crate::{Config, Error, Reading, Result};

/// The ABI version this SDK implements: [`processor!`](crate::processor)
/// exports the marker function `wasmgate_abi_v1`.
pub const ABI_VERSION: u32 = 1;

/// What `processor!(process = f)` accepts.
pub type ProcessFn = fn(Vec<Reading>) -> Result<Vec<Reading>>;
/// What `processor!(init = f, …)` accepts.
pub type InitFn = fn(&Config) -> Result<()>;

/// `serde_cbor::to_vec`, for unsized values too.
pub(crate) fn to_cbor<T: Serialize + ?Sized>(value: &T) -> serde_cbor::Result<Vec<u8>> {
    let mut out = Vec::new();
    value.serialize(&mut serde_cbor::Serializer::new(&mut out))?;
    Ok(out)
}

/// `{"error": {"code": …, "message": …}}`
fn encode_error(error: &Error, out: &mut Vec<u8>) {
    out.clear();
    let mut w = Writer(out);
    w.map(1);
    w.text("error");
    w.map(2);
    w.text("code");
    w.text(&error.code);
    w.text("message");
    w.text(&error.message);
}

/// Decode, call, check: the outputs of one `process` call.
fn run_process(input: &[u8], process: ProcessFn) -> Result<Vec<Reading>> {
    let batch = Reader::new(input)
        .batch()
        .map_err(|e| Error::input(format!("batch does not decode: {e}")))?;
    let outputs = process(batch)?;
    for (i, r) in outputs.iter().enumerate() {
        r.check_output(i)?;
    }
    Ok(outputs)
}

/// Drop readings, out of line (keeps the drop loop out of the caller's body).
#[inline(never)]
fn drop_readings(readings: Vec<Reading>) {
    drop(readings);
}

/// Run `process` on the CBOR batch `input`. Leaves the envelope in `out`, or
/// `out` empty when the call succeeded with no outputs (result `0`).
pub fn process_bytes(input: &[u8], process: ProcessFn, out: &mut Vec<u8>) {
    out.clear();
    match run_process(input, process) {
        Ok(outputs) if outputs.is_empty() => {}
        Ok(outputs) => {
            // {"outputs": [reading, ...]}
            let mut w = Writer(out);
            w.map(1);
            w.text("outputs");
            w.batch(&outputs);
            drop_readings(outputs);
        }
        Err(e) => encode_error(&e, out),
    }
}

/// Run `init` on the CBOR config map `input`. Leaves an error envelope in
/// `out`, or `out` empty on success (result `0`).
pub fn init_bytes(input: &[u8], init: InitFn, out: &mut Vec<u8>) {
    out.clear();
    if let Err(e) = Config::from_cbor(input).and_then(|config| init(&config)) {
        encode_error(&e, out);
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use alloc::alloc::{Layout, alloc as raw_alloc, dealloc as raw_dealloc};
    use alloc::vec::Vec;

    use super::{InitFn, ProcessFn};
    use crate::Global;

    /// The envelope of the last call; guest-owned, valid until the next call.
    static OUTPUT: Global<Vec<u8>> = Global::new();

    fn layout(len: i32) -> Option<Layout> {
        // Sizes are unsigned 32-bit; a 0-byte request gets a 1-byte block so
        // every pointer handed out is distinct and freeable.
        Layout::from_size_align((len as u32 as usize).max(1), 8).ok()
    }

    /// `wasmgate_alloc`: 8-byte aligned, `0` on failure.
    pub fn alloc(len: i32) -> i32 {
        match layout(len) {
            // SAFETY: the layout has a non-zero size.
            Some(l) => unsafe { raw_alloc(l) as usize as i32 },
            None => 0,
        }
    }

    /// `wasmgate_dealloc`.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`]`(len)` and was not freed yet (or is 0).
    pub unsafe fn dealloc(ptr: i32, len: i32) {
        if let (false, Some(l)) = (ptr == 0, layout(len)) {
            // SAFETY: per the contract, allocated with this layout.
            unsafe { raw_dealloc(ptr as u32 as usize as *mut u8, l) }
        }
    }

    /// # Safety
    /// `ptr, len` is readable linear memory (the host's input buffer).
    unsafe fn input<'a>(ptr: i32, len: i32) -> &'a [u8] {
        match len as u32 as usize {
            0 => &[],
            // SAFETY: per the contract.
            n => unsafe { core::slice::from_raw_parts(ptr as u32 as usize as *const u8, n) },
        }
    }

    fn finish(run: impl FnOnce(&mut Vec<u8>)) -> i64 {
        let mut out = OUTPUT.get_or_insert_with(Vec::new);
        run(&mut out);
        if out.is_empty() {
            0
        } else {
            ((out.as_ptr() as usize as u64) << 32 | out.len() as u64) as i64
        }
    }

    /// `wasmgate_process`.
    ///
    /// # Safety
    /// `ptr, len` is readable linear memory.
    pub unsafe fn process(ptr: i32, len: i32, f: ProcessFn) -> i64 {
        // SAFETY: per the contract.
        let input = unsafe { input(ptr, len) };
        finish(|out| super::process_bytes(input, f, out))
    }

    /// `wasmgate_init`.
    ///
    /// # Safety
    /// `ptr, len` is readable linear memory.
    pub unsafe fn init(ptr: i32, len: i32, f: InitFn) -> i64 {
        // SAFETY: per the contract.
        let input = unsafe { input(ptr, len) };
        finish(|out| super::init_bytes(input, f, out))
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::{alloc, dealloc, init, process};
