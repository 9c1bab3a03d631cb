//! [`Error`], the error a processor reports on purpose, and [`Result`].

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// `Result<T, wasmgate_sdk::Error>`.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// An error the processor reports on purpose (WIT `process-error`).
///
/// Returning it from `init` or `process` makes the SDK answer the host with
/// the envelope `{"error": {"code": code, "message": message}}`; the host
/// classifies the call as `guest-error` and shows both strings in its logs
/// and in `wasmgate replay` output. A panic, by contrast, traps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// Short machine-readable code, e.g. `"bad-config"`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Error {
    /// Code of [`Error::config`]: the module's configuration is unusable.
    pub const BAD_CONFIG: &'static str = "bad-config";
    /// Code of [`Error::input`]: an input batch could not be decoded or used.
    pub const BAD_INPUT: &'static str = "bad-input";
    /// Code of [`Error::output`]: an output the host would refuse (NaN, too large, ...).
    pub const BAD_OUTPUT: &'static str = "bad-output";
    /// Code of [`Error::state`]: persistent state could not be read or decoded.
    pub const BAD_STATE: &'static str = "bad-state";
    /// Code of a `state::set` refused by the host (key, value or total too large).
    pub const STATE_QUOTA: &'static str = "state-quota";
    /// Code of [`Global::get`](crate::Global::get) on an empty cell
    /// (typically: `process` called without a successful `init`).
    pub const NOT_INITIALISED: &'static str = "not-initialised";

    /// An error with any code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Code `"bad-config"`: the configuration is missing a key, has a value
    /// of the wrong type or an inconsistent combination. Name the key.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(Self::BAD_CONFIG, message)
    }

    /// Code `"bad-input"`: an input reading cannot be processed.
    pub fn input(message: impl Into<String>) -> Self {
        Error::new(Self::BAD_INPUT, message)
    }

    /// Code `"bad-output"`: an output reading the host would refuse.
    pub fn output(message: impl Into<String>) -> Self {
        Error::new(Self::BAD_OUTPUT, message)
    }

    /// Code `"bad-state"`: persistent state cannot be decoded.
    pub fn state(message: impl Into<String>) -> Self {
        Error::new(Self::BAD_STATE, message)
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl core::error::Error for Error {}
