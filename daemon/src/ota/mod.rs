//! Signed over-the-air processor updates.
//!
//! | file | what |
//! |---|---|
//! | `bundle.rs` | the CBOR formats: bundle (manifest + signatures + module) and signed key set |
//! | `keys.rs` | ed25519 key files (0600), key ids, key generation |
//! | `verify.rs` | every check a bundle or key set must pass, with a specific rejection reason |
//! | `store.rs` | sled persistence: release counters, time floor, key set, active bundles |
//! | `task.rs` | the daemon side: receive, verify, persist, stage (shadow run), swap, watch, roll back |
//!
//! The trust model follows TUF/Uptane: root keys (in the config) sign the
//! set of release keys; release keys sign manifests; a manifest binds the
//! module's sha256 and length, its target, scope, validity window and a
//! release counter that must increase. See `docs/OTA.md`.

pub mod bundle;
pub mod keys;
pub mod store;
pub mod task;
pub mod verify;

use std::path::PathBuf;

use serde::Deserialize;

/// `[ota]`: signed module updates over MQTT. Off unless root keys are given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaConfig {
    /// Root public keys (64 hex digits each) trusted to sign the release key
    /// set. Empty: OTA is off. Default: none.
    pub root_keys: Vec<String>,
    /// Root signatures a key set needs. Default: 1.
    pub root_threshold: usize,
    /// Release-key signatures a manifest needs. Default: 1.
    pub threshold: usize,
    /// A signed key set to start from (`wasmgate keyset sign`); newer ones
    /// can arrive over MQTT. Default: none.
    pub keyset_file: Option<PathBuf>,
    /// The fleet this gateway belongs to: it also takes bundles published to
    /// `<prefix>/fleet/<fleet>/ota`. Default: none (gateway topic only).
    pub fleet: Option<String>,
    /// This board's class, matched against a manifest's target board
    /// (a manifest for `any` fits every board). Default: `generic`.
    pub board: String,
    /// Largest bundle accepted, bytes. Default: 4 194 304 (4 MiB).
    pub max_bundle_bytes: usize,
    /// After a swap the new version is watched this long, seconds.
    /// Default: 300.
    pub watch_secs: u64,
    /// This many failures (trap, out of fuel, …) of the new version within
    /// the watch roll it back. Default: 3.
    pub rollback_failures: u32,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            root_keys: Vec::new(),
            root_threshold: 1,
            threshold: 1,
            keyset_file: None,
            fleet: None,
            board: "generic".into(),
            max_bundle_bytes: 4 << 20,
            watch_secs: 300,
            rollback_failures: 3,
        }
    }
}

impl OtaConfig {
    /// Whether OTA is on (root keys given).
    pub fn enabled(&self) -> bool {
        !self.root_keys.is_empty()
    }

    /// Check keys and ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (i, k) in self.root_keys.iter().enumerate() {
            keys::parse_public_hex(k).map_err(|e| format!("root_keys[{i}]: {e}"))?;
        }
        if self.root_threshold == 0 || self.threshold == 0 {
            return Err("root_threshold and threshold must be at least 1".into());
        }
        if self.enabled() && self.root_threshold > self.root_keys.len() {
            return Err(format!(
                "root_threshold {} exceeds the {} root keys given",
                self.root_threshold,
                self.root_keys.len()
            ));
        }
        if let Some(f) = &self.fleet {
            if !crate::config::is_valid_stream_name(f) {
                return Err(format!(
                    "fleet {f:?}: use only letters, digits, `_` and `-` (it is a topic segment)"
                ));
            }
        }
        if self.board.is_empty() {
            return Err("board must not be empty".into());
        }
        if !((64 << 10)..=(64 << 20)).contains(&self.max_bundle_bytes) {
            return Err("max_bundle_bytes must be within 65536 ..= 67108864".into());
        }
        if self.rollback_failures == 0 {
            return Err("rollback_failures must be at least 1".into());
        }
        Ok(())
    }
}
