//! Errors of the processor runtime: refusals at load time ([`LoadError`]) and
//! classified call failures ([`ProcessorError`]). Every message names the module.

use std::fmt;
use std::sync::Arc;

/// The classes a failed call falls into (`wit/ABI.md` §6). Used as the
/// statistics and metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The call used up its fuel budget (an endless or too expensive loop).
    OutOfFuel,
    /// The module tried to grow memory or a table past its limit.
    MemoryLimit,
    /// Wasm call depth or value stack exhausted (deep recursion).
    StackExhausted,
    /// The module returned an `error` envelope on purpose.
    GuestError,
    /// The module broke the ABI: bad pointers, undecodable or oversized output.
    AbiViolation,
    /// Any other wasm trap (`unreachable`, division by zero, out-of-bounds…).
    Trap,
}

impl ErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::OutOfFuel,
        ErrorKind::MemoryLimit,
        ErrorKind::StackExhausted,
        ErrorKind::GuestError,
        ErrorKind::AbiViolation,
        ErrorKind::Trap,
    ];

    /// The kebab-case label used in logs, metrics and `replay` summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::StackExhausted => "stack-exhausted",
            ErrorKind::GuestError => "guest-error",
            ErrorKind::AbiViolation => "abi-violation",
            ErrorKind::Trap => "trap",
        }
    }

    /// Index into [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call into a module that failed, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessorError {
    /// See [`ErrorKind::OutOfFuel`].
    #[error(
        "module '{module}' ran out of fuel (budget {budget} units): endless or too expensive loop"
    )]
    OutOfFuel { module: Arc<str>, budget: u64 },
    /// See [`ErrorKind::MemoryLimit`].
    #[error("module '{module}' exceeded its memory limit of {limit} bytes ({what})")]
    MemoryLimit {
        module: Arc<str>,
        limit: u64,
        what: &'static str,
    },
    /// See [`ErrorKind::StackExhausted`].
    #[error("module '{module}' exhausted its stack (call depth limit {depth}): runaway recursion?")]
    StackExhausted { module: Arc<str>, depth: u32 },
    /// See [`ErrorKind::GuestError`].
    #[error("module '{module}' returned error {code}: {message}")]
    Guest {
        module: Arc<str>,
        code: String,
        message: String,
    },
    /// See [`ErrorKind::AbiViolation`].
    #[error("module '{module}' violated the processor ABI: {message}")]
    AbiViolation { module: Arc<str>, message: String },
    /// See [`ErrorKind::Trap`].
    #[error("module '{module}' trapped: {message}")]
    Trap { module: Arc<str>, message: String },
}

impl ProcessorError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProcessorError::OutOfFuel { .. } => ErrorKind::OutOfFuel,
            ProcessorError::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            ProcessorError::StackExhausted { .. } => ErrorKind::StackExhausted,
            ProcessorError::Guest { .. } => ErrorKind::GuestError,
            ProcessorError::AbiViolation { .. } => ErrorKind::AbiViolation,
            ProcessorError::Trap { .. } => ErrorKind::Trap,
        }
    }

    /// The module the error came from.
    pub fn module(&self) -> &str {
        match self {
            ProcessorError::OutOfFuel { module, .. }
            | ProcessorError::MemoryLimit { module, .. }
            | ProcessorError::StackExhausted { module, .. }
            | ProcessorError::Guest { module, .. }
            | ProcessorError::AbiViolation { module, .. }
            | ProcessorError::Trap { module, .. } => module,
        }
    }

    pub(crate) fn abi(module: &Arc<str>, message: impl Into<String>) -> Self {
        ProcessorError::AbiViolation {
            module: module.clone(),
            message: message.into(),
        }
    }
}

/// A module refused before it could process anything.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("module '{module}': cannot read {path}: {source}")]
    Io {
        module: String,
        path: String,
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly binary at all.
    #[error(
        "module '{module}': not a wasm module (the file does not start with the wasm magic bytes \\0asm)"
    )]
    NotWasm { module: String },
    /// Larger than `max_module_bytes`.
    #[error("module '{module}': {size} bytes exceeds max_module_bytes = {max}")]
    TooLarge { module: String, size: u64, max: u64 },
    /// Rejected by the parser, the validator or the strict parse limits.
    #[error("module '{module}': invalid module: {message}")]
    Invalid { module: String, message: String },
    /// Shape does not match the processor ABI (marker, exports, imports).
    #[error("module '{module}': {message} (see wit/ABI.md)")]
    Abi { module: String, message: String },
    /// Instantiation failed (limits, initial memory too large, …).
    #[error("module '{module}': refused at instantiate: {message}")]
    Instantiate {
        module: String,
        message: String,
        /// The refusal classified like a failed call (`memory-limit` for an
        /// initial memory or table above the limits, `trap` otherwise).
        cause: Box<ProcessorError>,
    },
    /// `wasmgate_init` failed.
    #[error("init failed: {0}")]
    Init(#[source] ProcessorError),
}

impl LoadError {
    /// The name of the module that was refused.
    pub fn module(&self) -> &str {
        match self {
            LoadError::Io { module, .. }
            | LoadError::NotWasm { module }
            | LoadError::TooLarge { module, .. }
            | LoadError::Invalid { module, .. }
            | LoadError::Abi { module, .. }
            | LoadError::Instantiate { module, .. } => module,
            LoadError::Init(e) => e.module(),
        }
    }

    /// The failure of a module that could not start, classified like a
    /// failed call: a failed init is the init's own error, a refused
    /// instance its cause. `None` for refusals of the module file itself
    /// (unreadable, not wasm, invalid, wrong ABI shape), which no guest code
    /// was involved in.
    pub fn start_failure(&self) -> Option<ProcessorError> {
        match self {
            LoadError::Init(e) => Some(e.clone()),
            LoadError::Instantiate { cause, .. } => Some((**cause).clone()),
            _ => None,
        }
    }
}
