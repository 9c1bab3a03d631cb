//! Resource limits applied to every processor module (the `[runtime]` table).

use serde::Deserialize;

/// What to do with a batch when its module cannot process it: after a failed
/// call, and for every batch while the module is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Hand the batch on unchanged to the next stage (default): data keeps
    /// flowing, unprocessed.
    #[default]
    PassThrough,
    /// Drop the batch (counted in the module's statistics).
    Drop,
}

/// Limits and supervision settings for processor modules.
///
/// Every field has a default sized for a 512 MiB board; see `wit/ABI.md` §6.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel for one call, before the per-reading allowance. Default 2 000 000.
    pub fuel_per_call: u64,
    /// Extra fuel per reading in the batch. Default 50 000.
    pub fuel_per_reading: u64,
    /// Linear-memory cap per instance, bytes. Default 16 MiB.
    pub memory_bytes: u64,
    /// Table-element cap per table. Default 10 000.
    pub table_elements: u32,
    /// Maximum wasm call depth. Default 1 024.
    pub max_recursion_depth: u32,
    /// Largest module file accepted, bytes. Default 8 MiB.
    pub max_module_bytes: u64,
    /// Largest result envelope a call may return, bytes. Default 1 MiB.
    pub max_output_bytes: u64,
    /// Readings per call into a module. Default 64.
    pub batch_size: u32,
    /// Failures within `failure_window_secs` that quarantine a module. Default 5.
    pub failure_threshold: u32,
    /// Window for counting failures, seconds. Default 60.
    pub failure_window_secs: u64,
    /// How long a quarantine lasts before the module gets a fresh instance,
    /// seconds; 0 keeps it quarantined until restart. Default 300.
    pub quarantine_secs: u64,
    /// Policy for batches a module failed or skipped while quarantined.
    /// Default `pass-through`.
    pub on_failure: FailurePolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: 2_000_000,
            fuel_per_reading: 50_000,
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            max_recursion_depth: 1_024,
            max_module_bytes: 8 << 20,
            max_output_bytes: 1 << 20,
            batch_size: 64,
            failure_threshold: 5,
            failure_window_secs: 60,
            quarantine_secs: 300,
            on_failure: FailurePolicy::PassThrough,
        }
    }
}

impl Limits {
    /// Fuel granted to a call that carries `readings` readings.
    pub fn fuel_for(&self, readings: usize) -> u64 {
        self.fuel_per_call
            .saturating_add(self.fuel_per_reading.saturating_mul(readings as u64))
    }

    /// Check the values are usable; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        const MIB: u64 = 1 << 20;
        if self.fuel_per_call == 0 {
            return Err("fuel_per_call must be greater than 0".into());
        }
        if !(64 * 1024..=1024 * MIB).contains(&self.memory_bytes) {
            return Err(format!(
                "memory_bytes = {} is outside 65536 (one wasm page) ..= 1 GiB",
                self.memory_bytes
            ));
        }
        if self.max_recursion_depth == 0 || self.max_recursion_depth > 100_000 {
            return Err("max_recursion_depth must be within 1 ..= 100000".into());
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            return Err("batch_size must be within 1 ..= 65536".into());
        }
        if self.max_output_bytes < 1024 || self.max_output_bytes > 256 * MIB {
            return Err("max_output_bytes must be within 1024 ..= 256 MiB".into());
        }
        if self.max_module_bytes == 0 || self.max_module_bytes > 256 * MIB {
            return Err("max_module_bytes must be within 1 ..= 256 MiB".into());
        }
        if self.failure_threshold == 0 {
            return Err("failure_threshold must be at least 1".into());
        }
        Ok(())
    }
}
