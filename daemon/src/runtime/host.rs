//! Host side of the ABI: the per-instance context and the `wasmgate` imports
//! (`wit/ABI.md` §4): log, clock, persistent state, config.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmi::{Caller, Error, Linker, Memory, TrapCode};
use wasmi_core::{LimiterError, ResourceLimiter};

use crate::state::StateStore;

/// Largest state key, bytes.
pub const MAX_STATE_KEY: usize = 256;
/// Largest state value, bytes.
pub const MAX_STATE_VALUE: usize = 64 * 1024;
/// Largest total state per module, bytes (keys + values).
pub const MAX_STATE_TOTAL: u64 = 1 << 20;
/// Longest log line kept, bytes.
pub const MAX_LOG_LINE: usize = 1024;
/// Fuel charged for every host call, plus one unit per byte copied.
pub const HOST_CALL_FUEL: u64 = 500;
/// Guest log lines let through per [`LOG_WINDOW`].
const LOG_BURST: u32 = 50;
const LOG_WINDOW: Duration = Duration::from_secs(10);

use crate::ratelimit::LogLimiter;

/// Where `now_ms` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Wall-clock time (the daemon).
    System,
    /// The `ts` of the newest reading of the current batch (`replay`): the same
    /// input gives the same output.
    Replay,
}

/// A module's configuration table, encoded for the guest.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// The whole table as a CBOR map: the argument of `wasmgate_init`.
    pub cbor: Vec<u8>,
    /// Each top-level key's value, CBOR-encoded, for `config_get`.
    pub keys: HashMap<String, Vec<u8>>,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig {
            cbor: vec![0xa0],
            keys: HashMap::new(),
        }
    }
}

/// What an instance is connected to on the host: shared between instances.
#[derive(Clone)]
pub struct HostEnv {
    /// Persistent per-module state.
    pub state: Arc<dyn StateStore>,
    /// Source of `now_ms`.
    pub clock: Clock,
    /// The module's configuration.
    pub config: Arc<ModuleConfig>,
}

impl fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostEnv")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// A host function refused the guest's arguments: an ABI violation.
#[derive(Debug)]
pub struct HostFault(pub String);

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl wasmi::errors::HostError for HostFault {}

/// Which limit the [`GuestLimiter`] enforced last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Table,
}

/// The rate limit on one module's guest log lines ([`LOG_BURST`] per
/// [`LOG_WINDOW`]), shared by the module's successive instances: a module
/// that keeps failing, and so keeps getting fresh instances, does not get a
/// fresh burst with each of them.
#[derive(Debug, Clone)]
pub struct GuestLog(Arc<Mutex<LogLimiter>>);

impl GuestLog {
    /// A fresh limit (a full burst).
    pub fn new() -> Self {
        GuestLog(Arc::new(Mutex::new(LogLimiter::new(LOG_BURST, LOG_WINDOW))))
    }

    /// Whether `module` may log a line now.
    fn allow(&self, module: &str) -> bool {
        let Ok(mut limiter) = self.0.lock() else {
            return false;
        };
        limiter.allow(Instant::now(), |suppressed| {
            tracing::warn!(
                module,
                suppressed,
                "guest log lines suppressed by rate limit"
            );
        })
    }
}

impl Default for GuestLog {
    fn default() -> Self {
        Self::new()
    }
}

/// Memory and table limits of one store; remembers which one was hit so the
/// resulting trap is classified as `memory-limit`.
#[derive(Debug)]
pub struct GuestLimiter {
    pub memory_bytes: usize,
    pub table_elements: usize,
    pub hit: Option<LimitHit>,
}

impl GuestLimiter {
    /// Allow growth to `desired` within `limit` and the module's own
    /// `maximum`; past `limit`, remember `hit` and trap.
    fn grow(
        &mut self,
        desired: usize,
        maximum: Option<usize>,
        limit: usize,
        hit: LimitHit,
    ) -> Result<bool, LimiterError> {
        if desired > limit {
            self.hit = Some(hit);
            return Err(LimiterError::ResourceLimiterDeniedAllocation);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        self.grow(desired, maximum, self.memory_bytes, LimitHit::Memory)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        self.grow(desired, maximum, self.table_elements, LimitHit::Table)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The data of one instance's store.
pub struct HostCtx {
    pub module: Arc<str>,
    pub env: HostEnv,
    pub limiter: GuestLimiter,
    /// Set once the instance exists; host functions read guest memory through it.
    pub memory: Option<Memory>,
    /// `now_ms` under [`Clock::Replay`].
    pub batch_now: i64,
    /// State writes of the running call by key (the last write of a key
    /// wins), committed only when the call succeeds. A map, so that
    /// `state_get` finds a pending write in constant time however many the
    /// call has made.
    pub pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Bytes the module's state occupies (committed + pending, approximate).
    pub state_bytes: u64,
    /// A state-store failure seen by a host call (reported after the call).
    pub state_error: Option<String>,
    pub fuel_metering: bool,
    log: GuestLog,
}

impl HostCtx {
    pub fn new(
        module: Arc<str>,
        env: HostEnv,
        limiter: GuestLimiter,
        fuel_metering: bool,
        log: GuestLog,
    ) -> Self {
        HostCtx {
            module,
            env,
            limiter,
            memory: None,
            batch_now: 0,
            pending: HashMap::new(),
            state_bytes: 0,
            state_error: None,
            fuel_metering,
            log,
        }
    }

    fn state_lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        self.env
            .state
            .get(&self.module, key)
            .map_err(|e| e.to_string())
    }

    fn allow_log(&self) -> bool {
        self.log.allow(&self.module)
    }
}

fn fault(message: impl Into<String>) -> Error {
    Error::host(HostFault(message.into()))
}

/// Charge a host call's fuel: [`HOST_CALL_FUEL`] plus one unit per byte.
fn charge(caller: &mut Caller<'_, HostCtx>, bytes: usize) -> Result<(), Error> {
    if !caller.data().fuel_metering {
        return Ok(());
    }
    let cost = HOST_CALL_FUEL.saturating_add(bytes as u64);
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(Error::from(TrapCode::OutOfFuel));
    }
    caller.set_fuel(fuel - cost)
}

fn range(ptr: i32, len: i32, mem_len: usize, what: &str) -> Result<std::ops::Range<usize>, Error> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= mem_len => Ok(p..end),
        _ => Err(fault(format!(
            "{what}: buffer {p:#x}+{l} lies outside linear memory ({mem_len} bytes)"
        ))),
    }
}

fn memory(caller: &Caller<'_, HostCtx>) -> Result<Memory, Error> {
    caller
        .data()
        .memory
        .ok_or_else(|| fault("host call before the instance was ready"))
}

fn read_bytes(
    caller: &Caller<'_, HostCtx>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Vec<u8>, Error> {
    let mem = memory(caller)?;
    let data = mem.data(caller);
    let r = range(ptr, len, data.len(), what)?;
    Ok(data[r].to_vec())
}

/// Copy `value` to the guest buffer if it fits; return its length or -1.
fn answer_lookup(
    caller: &mut Caller<'_, HostCtx>,
    value: Option<Vec<u8>>,
    buf_ptr: i32,
    buf_cap: i32,
    what: &str,
) -> Result<i32, Error> {
    let Some(value) = value else { return Ok(-1) };
    let mem = memory(caller)?;
    let n = value.len();
    if n <= buf_cap as u32 as usize {
        charge(caller, n)?;
        let data = mem.data_mut(&mut *caller);
        let r = range(buf_ptr, n as i32, data.len(), what)?;
        data[r].copy_from_slice(&value);
    }
    i32::try_from(n).map_err(|_| fault(format!("{what}: value too large")))
}

/// Register the `wasmgate` imports of ABI v1 in `linker`.
pub fn define_imports(linker: &mut Linker<HostCtx>) -> Result<(), Error> {
    let m = super::abi::IMPORT_MODULE;
    linker.func_wrap(
        m,
        "log",
        |mut caller: Caller<'_, HostCtx>, level: i32, ptr: i32, len: i32| -> Result<(), Error> {
            let len = len.clamp(0, MAX_LOG_LINE as i32);
            charge(&mut caller, len as usize)?;
            let bytes = read_bytes(&caller, ptr, len, "log")?;
            if !caller.data().allow_log() {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&bytes);
            let module = &*caller.data().module;
            match level {
                i32::MIN..=0 => tracing::trace!(module, guest = true, "{text}"),
                1 => tracing::debug!(module, guest = true, "{text}"),
                2 => tracing::info!(module, guest = true, "{text}"),
                3 => tracing::warn!(module, guest = true, "{text}"),
                _ => tracing::error!(module, guest = true, "{text}"),
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        m,
        "now_ms",
        |mut caller: Caller<'_, HostCtx>| -> Result<i64, Error> {
            charge(&mut caller, 0)?;
            Ok(match caller.data().env.clock {
                Clock::Replay => caller.data().batch_now,
                Clock::System => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            })
        },
    )?;
    linker.func_wrap(
        m,
        "state_get",
        |mut caller: Caller<'_, HostCtx>,
         kp: i32,
         kl: i32,
         bp: i32,
         bc: i32|
         -> Result<i32, Error> {
            charge(&mut caller, kl.max(0) as usize)?;
            let key = read_bytes(&caller, kp, kl, "state_get key")?;
            let value = match caller.data().state_lookup(&key) {
                Ok(v) => v,
                Err(e) => {
                    caller.data_mut().state_error = Some(e.clone());
                    return Err(fault(format!("state store unavailable: {e}")));
                }
            };
            answer_lookup(&mut caller, value, bp, bc, "state_get buffer")
        },
    )?;
    linker.func_wrap(
        m,
        "state_set",
        |mut caller: Caller<'_, HostCtx>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> Result<i32, Error> {
            charge(
                &mut caller,
                (kl.max(0) as usize).saturating_add(vl.max(0) as usize),
            )?;
            let (klen, vlen) = (kl as u32 as usize, vl as u32 as usize);
            if klen > MAX_STATE_KEY || vlen > MAX_STATE_VALUE {
                return Ok(-1);
            }
            let key = read_bytes(&caller, kp, kl, "state_set key")?;
            let value = read_bytes(&caller, vp, vl, "state_set value")?;
            let ctx = caller.data_mut();
            let added = (klen + vlen) as u64;
            if ctx.state_bytes.saturating_add(added) > MAX_STATE_TOTAL {
                return Ok(-1);
            }
            ctx.state_bytes += added;
            ctx.pending.insert(key, Some(value));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        m,
        "state_delete",
        |mut caller: Caller<'_, HostCtx>, kp: i32, kl: i32| -> Result<i32, Error> {
            charge(&mut caller, kl.max(0) as usize)?;
            if kl as u32 as usize > MAX_STATE_KEY {
                return Ok(0);
            }
            let key = read_bytes(&caller, kp, kl, "state_delete key")?;
            caller.data_mut().pending.insert(key, None);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        m,
        "config_get",
        |mut caller: Caller<'_, HostCtx>,
         kp: i32,
         kl: i32,
         bp: i32,
         bc: i32|
         -> Result<i32, Error> {
            charge(&mut caller, kl.max(0) as usize)?;
            let key = read_bytes(&caller, kp, kl, "config_get key")?;
            let value = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| caller.data().env.config.keys.get(k).cloned());
            answer_lookup(&mut caller, value, bp, bc, "config_get buffer")
        },
    )?;
    Ok(())
}

impl ModuleConfig {
    /// Encode a processor's TOML `config` table (`wit/ABI.md` §5).
    pub fn from_toml(table: &toml::Table) -> Self {
        ModuleConfig {
            cbor: crate::config::module_config_cbor(table),
            keys: table
                .iter()
                .map(|(k, v)| (k.clone(), crate::config::value_cbor(v)))
                .collect(),
        }
    }
}
