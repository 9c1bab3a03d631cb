//! The Wasm processor runtime, on wasmi.
//!
//! * [`Runtime`] owns the engine (fuel metering on, strict parse limits, no
//!   start functions, bounded call depth) and a cache of compiled modules
//!   keyed by sha256, so the same bytes are parsed and validated once.
//! * [`Runtime::load_bytes`] checks the ABI shape statically ([`abi`]).
//! * [`Runtime::instantiate`] gives an [`Instance`]: one store with memory and
//!   table limits, reused for every batch.
//! * [`Supervisor`] wraps an instance with the failure window, quarantine and
//!   per-module [`ModuleStats`]; the pipeline talks only to supervisors.

pub mod abi;
pub mod error;
pub mod host;
pub mod instance;
pub mod limits;
pub mod supervisor;
pub mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmi::{CompilationMode, Config, EnforcedLimits, Engine, Linker, Module};

pub use error::{ErrorKind, LoadError, ProcessorError};
pub use host::{Clock, HostEnv, ModuleConfig};
pub use instance::{CallFigures, Instance};
pub use limits::{FailurePolicy, Limits};
pub use supervisor::{ModuleStats, Supervisor};

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// A validated, compiled module with the name it runs under.
#[derive(Clone)]
pub struct CompiledModule {
    name: Arc<str>,
    sha256: [u8; 32],
    size: usize,
    has_init: bool,
    module: Module,
}

impl CompiledModule {
    /// The name the module runs under (logs, statistics, state namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 of the module bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// sha256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Size of the module binary, bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The same compiled code under another name.
    pub fn renamed(&self, name: &str) -> Self {
        CompiledModule {
            name: Arc::from(name),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("name", &self.name)
            .field("sha256", &self.sha256_hex())
            .field("size", &self.size)
            .finish()
    }
}

/// Engine, linker and module cache shared by every processor.
pub struct Runtime {
    engine: Engine,
    linker: Linker<host::HostCtx>,
    limits: Limits,
    fuel_metering: bool,
    cache: Mutex<HashMap<[u8; 32], (Module, bool)>>,
}

impl Runtime {
    /// A runtime enforcing `limits`, with fuel metering on.
    pub fn new(limits: Limits) -> Result<Self, LoadError> {
        Self::build(limits, true)
    }

    /// A runtime with fuel metering switched off. Only for benchmarks that
    /// measure what metering costs: without fuel an endless loop never ends.
    pub fn without_fuel_metering(limits: Limits) -> Result<Self, LoadError> {
        Self::build(limits, false)
    }

    fn build(limits: Limits, fuel_metering: bool) -> Result<Self, LoadError> {
        let mut config = Config::default();
        config
            .consume_fuel(fuel_metering)
            .allow_start_fn(false)
            .wasm_multi_memory(false)
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false)
            .set_max_recursion_depth(limits.max_recursion_depth as usize)
            .enforced_limits(EnforcedLimits::strict())
            .compilation_mode(CompilationMode::LazyTranslation);
        let engine = Engine::new(&config);
        let mut linker = Linker::new(&engine);
        host::define_imports(&mut linker).map_err(|e| LoadError::Invalid {
            module: "<host>".into(),
            message: e.to_string(),
        })?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            fuel_metering,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The limits every instance gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Read, validate and compile a module file; `name` defaults to the file stem.
    pub fn load_file(&self, path: &Path, name: Option<&str>) -> Result<CompiledModule, LoadError> {
        let name = name
            .map(str::to_string)
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "module".into());
        let too_large = |size: u64| LoadError::TooLarge {
            module: name.clone(),
            size,
            max: self.limits.max_module_bytes,
        };
        let io = |source| LoadError::Io {
            module: name.clone(),
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > self.limits.max_module_bytes {
            return Err(too_large(meta.len()));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        self.load_bytes(&name, &bytes)
    }

    /// Validate and compile module bytes (cached by sha256).
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<CompiledModule, LoadError> {
        if bytes.len() as u64 > self.limits.max_module_bytes {
            return Err(LoadError::TooLarge {
                module: name.into(),
                size: bytes.len() as u64,
                max: self.limits.max_module_bytes,
            });
        }
        if !bytes.starts_with(WASM_MAGIC) {
            return Err(LoadError::NotWasm {
                module: name.into(),
            });
        }
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let cached = self.cache.lock().ok().and_then(|c| c.get(&sha256).cloned());
        let (module, has_init) = match cached {
            Some(hit) => hit,
            None => {
                let module = Module::new(&self.engine, bytes).map_err(|e| LoadError::Invalid {
                    module: name.into(),
                    message: e.to_string(),
                })?;
                let shape = abi::check(&module).map_err(|message| LoadError::Abi {
                    module: name.into(),
                    message,
                })?;
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(sha256, (module.clone(), shape.has_init));
                }
                (module, shape.has_init)
            }
        };
        Ok(CompiledModule {
            name: Arc::from(name),
            sha256,
            size: bytes.len(),
            has_init,
            module,
        })
    }

    /// Number of distinct compiled modules held in the cache.
    pub fn cached_modules(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// A new instance of `module` connected to `env`; runs `wasmgate_init`.
    pub fn instantiate(
        &self,
        module: &CompiledModule,
        env: HostEnv,
    ) -> Result<Instance, LoadError> {
        self.instantiate_with_log(module, env, host::GuestLog::new())
    }

    /// [`Runtime::instantiate`], with the guest-log rate limit of earlier
    /// instances of the same module (the supervisor's restarts).
    pub(crate) fn instantiate_with_log(
        &self,
        module: &CompiledModule,
        env: HostEnv,
        log: host::GuestLog,
    ) -> Result<Instance, LoadError> {
        Instance::new(
            module,
            &self.linker,
            &self.limits,
            env,
            self.fuel_metering,
            log,
        )
    }
}
