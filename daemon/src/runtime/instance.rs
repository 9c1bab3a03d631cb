//! One live instance of a processor module: its store, its reusable input
//! buffer, and the call protocol of `wit/ABI.md` §3 with trap classification.

use std::sync::Arc;

use wasmi::{Linker, Memory, Store, TrapCode, TypedFunc};

use super::CompiledModule;
use super::error::{LoadError, ProcessorError};
use super::host::{Clock, GuestLimiter, GuestLog, HostCtx, HostEnv, HostFault, LimitHit};
use super::limits::Limits;
use super::wire::{self, Decoded};
use crate::reading::Reading;

/// Outcome figures of one successful call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallFigures {
    /// Fuel the call consumed (0 when metering is off).
    pub fuel: u64,
}

/// A module instantiated in its own store, reused across batches.
///
/// After a failed call the instance must be dropped (its memory may be
/// inconsistent); [`super::Supervisor`] does that.
pub struct Instance {
    name: Arc<str>,
    store: Store<HostCtx>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    dealloc: TypedFunc<(i32, i32), ()>,
    init: Option<TypedFunc<(i32, i32), i64>>,
    process: TypedFunc<(i32, i32), i64>,
    limits: Limits,
    /// The guest buffer the host writes arguments into: (ptr, capacity).
    input: Option<(u32, u32)>,
    /// Reused encoding buffer.
    encoded: Vec<u8>,
}

impl Instance {
    pub(super) fn new(
        module: &CompiledModule,
        linker: &Linker<HostCtx>,
        limits: &Limits,
        env: HostEnv,
        fuel_metering: bool,
        log: GuestLog,
    ) -> Result<Self, LoadError> {
        let name: Arc<str> = Arc::from(module.name());
        let limiter = GuestLimiter {
            memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: limits.table_elements as usize,
            hit: None,
        };
        let ctx = HostCtx::new(name.clone(), env, limiter, fuel_metering, log);
        let mut store = Store::new(module.module.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        if fuel_metering {
            // Start with a full budget. (wasmi does not meter data-segment
            // initialisation; it is bounded by `max_module_bytes`.)
            store
                .set_fuel(limits.fuel_per_call)
                .map_err(|e| instantiate_error(&name, e.to_string()))?;
        }
        let instance = linker
            .instantiate_and_start(&mut store, &module.module)
            .map_err(|e| {
                let (message, cause) = match store.data().limiter.hit {
                    Some(LimitHit::Memory) => (
                        format!(
                            "memory limit: the module's initial memory is larger than memory_bytes = {}",
                            limits.memory_bytes
                        ),
                        ProcessorError::MemoryLimit {
                            module: name.clone(),
                            limit: limits.memory_bytes,
                            what: "initial memory above the limit",
                        },
                    ),
                    Some(LimitHit::Table) => (
                        format!(
                            "table limit: the module's initial table is larger than table_elements = {}",
                            limits.table_elements
                        ),
                        ProcessorError::MemoryLimit {
                            module: name.clone(),
                            limit: u64::from(limits.table_elements),
                            what: "initial table above the table element limit",
                        },
                    ),
                    None => (
                        e.to_string(),
                        ProcessorError::Trap {
                            module: name.clone(),
                            message: format!("refused at instantiate: {e}"),
                        },
                    ),
                };
                LoadError::Instantiate {
                    module: name.to_string(),
                    message,
                    cause: Box::new(cause),
                }
            })?;
        let abi = |e: wasmi::Error| LoadError::Abi {
            module: name.to_string(),
            message: e.to_string(),
        };
        let memory = instance
            .get_memory(&store, super::abi::MEMORY_EXPORT)
            .ok_or_else(|| abi(wasmi::Error::new("missing export memory")))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, "wasmgate_alloc")
            .map_err(abi)?;
        let dealloc = instance
            .get_typed_func::<(i32, i32), ()>(&store, "wasmgate_dealloc")
            .map_err(abi)?;
        let init = if module.has_init {
            Some(
                instance
                    .get_typed_func::<(i32, i32), i64>(&store, "wasmgate_init")
                    .map_err(abi)?,
            )
        } else {
            None
        };
        let process = instance
            .get_typed_func::<(i32, i32), i64>(&store, "wasmgate_process")
            .map_err(abi)?;
        store.data_mut().memory = Some(memory);
        let usage = store.data().env.state.usage(&name).unwrap_or(0);
        store.data_mut().state_bytes = usage;
        let mut inst = Instance {
            name,
            store,
            memory,
            alloc,
            dealloc,
            init,
            process,
            limits: limits.clone(),
            input: None,
            encoded: Vec::with_capacity(4096),
        };
        inst.run_init().map_err(LoadError::Init)?;
        Ok(inst)
    }

    /// The module name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current linear-memory size in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    fn run_init(&mut self) -> Result<(), ProcessorError> {
        let Some(init) = self.init else {
            return Ok(());
        };
        let config = self.store.data().env.config.clone();
        self.encoded.clear();
        self.encoded.extend_from_slice(&config.cbor);
        match self.call(init, 0)? {
            Decoded::Outputs(o) if o.is_empty() => Ok(()),
            Decoded::Outputs(_) => Err(ProcessorError::abi(
                &self.name,
                "wasmgate_init returned outputs; it may only return success or an error",
            )),
            Decoded::GuestError { code, message } => Err(ProcessorError::Guest {
                module: self.name.clone(),
                code,
                message,
            }),
        }
    }

    /// Run one batch through `wasmgate_process`.
    pub fn process(
        &mut self,
        batch: &[Reading],
    ) -> Result<(Vec<Reading>, CallFigures), ProcessorError> {
        self.encoded.clear();
        wire::encode_batch(&mut self.encoded, batch);
        if self.store.data().env.clock == Clock::Replay {
            let newest = batch.iter().map(|r| r.ts).max().unwrap_or(0);
            self.store.data_mut().batch_now = newest;
        }
        let budget = self.limits.fuel_for(batch.len());
        match self.call(self.process, batch.len())? {
            Decoded::Outputs(o) => {
                let left = if self.store.data().fuel_metering {
                    self.store.get_fuel().unwrap_or(0)
                } else {
                    budget
                };
                Ok((
                    o,
                    CallFigures {
                        fuel: budget.saturating_sub(left),
                    },
                ))
            }
            Decoded::GuestError { code, message } => Err(ProcessorError::Guest {
                module: self.name.clone(),
                code,
                message,
            }),
        }
    }

    /// Write `self.encoded` into the guest's input buffer, call `func`, decode
    /// the envelope, and commit or discard the call's state writes.
    fn call(
        &mut self,
        func: TypedFunc<(i32, i32), i64>,
        readings: usize,
    ) -> Result<Decoded, ProcessorError> {
        self.store.data_mut().pending.clear();
        self.store.data_mut().limiter.hit = None;
        let budget = self.limits.fuel_for(readings);
        if self.store.data().fuel_metering {
            self.store
                .set_fuel(budget)
                .map_err(|e| self.classify(e, budget))?;
        }
        let result = self.call_inner(func, budget);
        let decoded = match result {
            Ok(d) => d,
            Err(e) => {
                self.store.data_mut().pending.clear();
                return Err(e);
            }
        };
        if matches!(decoded, Decoded::GuestError { .. }) {
            self.store.data_mut().pending.clear();
            return Ok(decoded);
        }
        self.commit_state()?;
        Ok(decoded)
    }

    fn call_inner(
        &mut self,
        func: TypedFunc<(i32, i32), i64>,
        budget: u64,
    ) -> Result<Decoded, ProcessorError> {
        let len = u32::try_from(self.encoded.len())
            .map_err(|_| ProcessorError::abi(&self.name, "batch larger than 4 GiB"))?;
        let ptr = self.input_buffer(len, budget)?;
        self.memory
            .write(&mut self.store, ptr as usize, &self.encoded)
            .map_err(|_| {
                ProcessorError::abi(
                    &self.name,
                    format!("wasmgate_alloc returned {ptr:#x}, which lies outside memory"),
                )
            })?;
        let r = func
            .call(&mut self.store, (ptr as i32, len as i32))
            .map_err(|e| self.classify(e, budget))?;
        if r == 0 {
            return Ok(Decoded::Outputs(Vec::new()));
        }
        let (out_ptr, out_len) = (
            ((r as u64) >> 32) as usize,
            (r as u64 & 0xffff_ffff) as usize,
        );
        if out_len as u64 > self.limits.max_output_bytes {
            return Err(ProcessorError::abi(
                &self.name,
                format!(
                    "result of {out_len} bytes exceeds max_output_bytes = {}",
                    self.limits.max_output_bytes
                ),
            ));
        }
        let data = self.memory.data(&self.store);
        let bytes = out_ptr
            .checked_add(out_len)
            .and_then(|end| data.get(out_ptr..end))
            .ok_or_else(|| {
                ProcessorError::abi(
                    &self.name,
                    format!(
                        "result buffer {out_ptr:#x}+{out_len} lies outside linear memory ({} bytes)",
                        data.len()
                    ),
                )
            })?;
        wire::decode_envelope(bytes).map_err(|m| ProcessorError::abi(&self.name, m))
    }

    /// The input buffer, grown (dealloc + alloc) when `len` exceeds it.
    fn input_buffer(&mut self, len: u32, budget: u64) -> Result<u32, ProcessorError> {
        if let Some((ptr, cap)) = self.input {
            if cap >= len {
                return Ok(ptr);
            }
            self.dealloc
                .call(&mut self.store, (ptr as i32, cap as i32))
                .map_err(|e| self.classify(e, budget))?;
            self.input = None;
        }
        // Grow geometrically so a slowly growing batch does not reallocate each time.
        let cap = len.max(4096).checked_next_power_of_two().unwrap_or(len);
        let ptr = self
            .alloc
            .call(&mut self.store, cap as i32)
            .map_err(|e| self.classify(e, budget))? as u32;
        if ptr == 0 {
            return Err(ProcessorError::abi(
                &self.name,
                format!("wasmgate_alloc({cap}) returned 0 (guest out of memory?)"),
            ));
        }
        self.input = Some((ptr, cap));
        Ok(ptr)
    }

    fn commit_state(&mut self) -> Result<(), ProcessorError> {
        let ctx = self.store.data_mut();
        if ctx.pending.is_empty() {
            return Ok(());
        }
        let writes: Vec<_> = ctx.pending.drain().collect();
        let state = ctx.env.state.clone();
        state
            .apply(&self.name, &writes)
            .map_err(|e| ProcessorError::Trap {
                module: self.name.clone(),
                message: format!("state could not be saved: {e}"),
            })?;
        let usage = state.usage(&self.name).unwrap_or(0);
        self.store.data_mut().state_bytes = usage;
        Ok(())
    }

    /// Turn a wasmi error into a classified [`ProcessorError`].
    fn classify(&self, e: wasmi::Error, budget: u64) -> ProcessorError {
        let module = self.name.clone();
        if let Some(hit) = self.store.data().limiter.hit {
            return ProcessorError::MemoryLimit {
                module,
                limit: match hit {
                    LimitHit::Memory => self.limits.memory_bytes,
                    LimitHit::Table => u64::from(self.limits.table_elements),
                },
                what: match hit {
                    LimitHit::Memory => "memory.grow denied",
                    LimitHit::Table => "table.grow denied: table element limit",
                },
            };
        }
        if let Some(fault) = e.downcast_ref::<HostFault>() {
            return ProcessorError::abi(&module, fault.0.clone());
        }
        match e.as_trap_code() {
            Some(TrapCode::OutOfFuel) => ProcessorError::OutOfFuel { module, budget },
            Some(TrapCode::StackOverflow) => ProcessorError::StackExhausted {
                module,
                depth: self.limits.max_recursion_depth,
            },
            Some(TrapCode::GrowthOperationLimited) | Some(TrapCode::OutOfSystemMemory) => {
                ProcessorError::MemoryLimit {
                    module,
                    limit: self.limits.memory_bytes,
                    what: "growth denied",
                }
            }
            _ => ProcessorError::Trap {
                module,
                message: e.to_string(),
            },
        }
    }
}

fn instantiate_error(name: &Arc<str>, message: String) -> LoadError {
    LoadError::Instantiate {
        module: name.to_string(),
        message: message.clone(),
        cause: Box::new(ProcessorError::Trap {
            module: name.clone(),
            message,
        }),
    }
}
