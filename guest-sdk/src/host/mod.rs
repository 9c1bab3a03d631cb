//! What the host provides (ABI.md §4): logging, the clock, persistent state
//! and config lookups, as safe wrappers over [`raw`].
//!
//! ```
//! use wasmgate_sdk::host::{self, state, Level};
//!
//! host::log(Level::Info, "starting");
//! wasmgate_sdk::info!("now is {} ms", host::now_ms());
//! state::set_cbor("seen", &3u32).unwrap();
//! assert_eq!(state::get_cbor::<u32>("seen").unwrap(), Some(3));
//! ```

pub mod raw;

use alloc::vec::Vec;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Log level (WIT `level`); the discriminant is the ABI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// 0
    Trace = 0,
    /// 1
    Debug = 1,
    /// 2
    Info = 2,
    /// 3
    Warn = 3,
    /// 4
    Error = 4,
}

impl Level {
    /// The ABI value, or the level for one (out-of-range values are clamped,
    /// as the host does).
    pub fn from_i32(level: i32) -> Level {
        match level {
            i32::MIN..=0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        }
    }

    /// Lower-case name: `"trace"` … `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Log `message` at `level`, attributed to this module. The host truncates
/// messages over 1 KiB and rate-limits per module. The macros
/// [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
/// [`warn!`](crate::warn) and [`error!`](crate::error) take `format!` arguments.
pub fn log(level: Level, message: &str) {
    // SAFETY: `message` is valid for reads of its length.
    unsafe { raw::log(level as i32, message.as_ptr(), message.len()) }
}

/// Milliseconds since the Unix epoch. Under `wasmgate replay` this is the
/// `ts` of the newest reading in the current batch, so replays are
/// deterministic; in native tests it is whatever
/// [`testing::set_now_ms`](crate::testing::set_now_ms) set (0 initially).
pub fn now_ms() -> i64 {
    // SAFETY: no arguments.
    unsafe { raw::now_ms() }
}

/// The CBOR encoding of config key `key`, or `None` if the module's config
/// table has no such key. (`init` receives the whole table as a
/// [`Config`](crate::Config); this lookup works at any time.)
pub fn config_get(key: &str) -> Option<Vec<u8>> {
    fetch(key.as_bytes(), Source::Config)
}

/// [`config_get`], decoded. A decoding failure is an [`Error::config`] naming
/// the key.
pub fn config_get_cbor<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    match config_get(key) {
        None => Ok(None),
        Some(bytes) => match crate::cbor::decode_value(&bytes) {
            Ok(value) => value
                .deserialize_into(key)
                .map(Some)
                .map_err(crate::config::config_error),
            Err(e) => Err(Error::config(alloc::format!(
                "config key `{key}`: not valid CBOR: {e}"
            ))),
        },
    }
}

/// Which `state_get`-shaped import [`fetch`] calls.
#[derive(Clone, Copy)]
enum Source {
    State,
    Config,
}

/// Call a `state_get`-shaped import, growing the buffer once if needed.
fn fetch(key: &[u8], source: Source) -> Option<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    loop {
        let (k, kl, b, bc) = (key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.capacity());
        // SAFETY: `key` is valid for reads of its length, `buf` for writes of
        // its capacity.
        let n = unsafe {
            match source {
                Source::State => raw::state_get(k, kl, b, bc),
                Source::Config => raw::config_get(k, kl, b, bc),
            }
        };
        let n = usize::try_from(n).ok()?; // -1: absent
        if n <= buf.capacity() {
            // SAFETY: the host wrote `n` bytes, within the capacity.
            unsafe { buf.set_len(n) };
            return Some(buf);
        }
        buf.reserve_exact(n);
    }
}

/// Per-module persistent state (ABI.md §4): byte values under byte-string
/// keys, kept by the host across restarts and re-instantiation.
///
/// Writes made during a call are committed only when the call succeeds (a
/// trap discards them). Limits: keys up to 256 bytes, values up to 64 KiB,
/// 1 MiB per module in total; a write over them fails with code
/// `"state-quota"`. State is shared by every stream that runs a module
/// under the same name.
pub mod state {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::raw;
    use crate::{Error, Result};

    fn show(key: &[u8]) -> String {
        String::from_utf8_lossy(key).into_owned()
    }

    /// The value stored under `key`, if any.
    pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        super::fetch(key.as_ref(), super::Source::State)
    }

    /// Store `value` under `key`.
    pub fn set(key: impl AsRef<[u8]>, value: &[u8]) -> Result<()> {
        set_bytes(key.as_ref(), value)
    }

    fn set_bytes(key: &[u8], value: &[u8]) -> Result<()> {
        // SAFETY: both slices are valid for reads of their lengths.
        match unsafe { raw::state_set(key.as_ptr(), key.len(), value.as_ptr(), value.len()) } {
            0 => Ok(()),
            _ => Err(Error::new(
                Error::STATE_QUOTA,
                format!(
                    "state quota exceeded writing key `{}` ({} bytes; limits: key 256 B, value 64 KiB, total 1 MiB)",
                    show(key),
                    value.len()
                ),
            )),
        }
    }

    /// Delete `key` (deleting an absent key is not an error).
    pub fn delete(key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        // SAFETY: `key` is valid for reads of its length.
        unsafe { raw::state_delete(key.as_ptr(), key.len()) };
    }

    /// The CBOR-decoded value under `key`, if any. A value that does not
    /// decode as `T` fails with code `"bad-state"` naming the key.
    pub fn get_cbor<T: DeserializeOwned>(key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = key.as_ref();
        match get(key) {
            None => Ok(None),
            Some(bytes) => crate::cbor::decode_value(&bytes)
                .map_err(|e| (String::new(), e))
                .and_then(|value| value.deserialize_into(""))
                .map(Some)
                .map_err(|(path, e)| {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at `{path}`")
                    };
                    Error::state(format!(
                        "state key `{}` does not decode{at}: {e}",
                        show(key)
                    ))
                }),
        }
    }

    /// The value under `key` decoded as a [`Value`](crate::Value), if any;
    /// fails with code `"bad-state"` if it is not valid CBOR.
    pub fn get_value(key: impl AsRef<[u8]>) -> Result<Option<crate::Value>> {
        let key = key.as_ref();
        match get(key) {
            None => Ok(None),
            Some(bytes) => crate::cbor::decode_value(&bytes).map(Some).map_err(|e| {
                Error::state(format!("state key `{}` does not decode: {e}", show(key)))
            }),
        }
    }

    /// Store `value` under `key`, encoded as deterministic CBOR (definite
    /// lengths, shortest integers, floats as float64).
    pub fn set_value(key: impl AsRef<[u8]>, value: &crate::Value) -> Result<()> {
        set_bytes(key.as_ref(), &value.to_cbor())
    }

    /// Store `value` CBOR-encoded (by `serde_cbor`: floats in the shortest
    /// exact width) under `key`.
    pub fn set_cbor<T: Serialize + ?Sized>(key: impl AsRef<[u8]>, value: &T) -> Result<()> {
        let key = key.as_ref();
        let bytes = crate::rt::to_cbor(value)
            .map_err(|e| Error::state(format!("state key `{}` does not encode: {e}", show(key))))?;
        set_bytes(key, &bytes)
    }
}

/// Log at an explicit [`Level`] with `format!` arguments:
/// `log!(Level::Warn, "skipped {n} readings")`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::host::log($level, &$crate::__private::format!($($arg)+))
    };
}

/// Log at trace level with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::host::Level::Trace, $($arg)+) };
}

/// Log at debug level with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::host::Level::Debug, $($arg)+) };
}

/// Log at info level with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::host::Level::Info, $($arg)+) };
}

/// Log at warn level with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::host::Level::Warn, $($arg)+) };
}

/// Log at error level with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::host::Level::Error, $($arg)+) };
}
