//! `wasmgate check-config`: everything that can be verified about a
//! configuration file without starting the gateway — syntax, keys, limits,
//! and that each processor module loads, passes the ABI checks and
//! initialises with its config.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::pipeline::{Pipeline, PipelineError};
use crate::runtime::{Clock, LoadError, Runtime};
use crate::state::MemoryState;

/// Why a configuration failed the check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Syntax, unknown key, bad value (with file:line:column).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime could not be set up with these limits.
    #[error("{0}")]
    Runtime(#[from] LoadError),
    /// A module failed to load or initialise.
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
}

/// What a passing check found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    file: String,
    /// (stream, module, sha256 hex, size) for every processor.
    pub modules: Vec<(String, String, String, usize)>,
    /// Number of streams.
    pub streams: usize,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: ok: {} stream(s), {} processor module(s)",
            self.file,
            self.streams,
            self.modules.len()
        )?;
        for (stream, module, sha, size) in &self.modules {
            write!(f, "\n  {stream}/{module}: {size} bytes, sha256 {sha}")?;
        }
        Ok(())
    }
}

/// Load `file`, then build the whole processing pipeline once (state in
/// memory, so nothing on disk is touched).
pub fn check_config(file: &Path) -> Result<CheckReport, CheckError> {
    let config = Config::load(file)?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let pipeline = Pipeline::build(
        &config,
        runtime,
        Arc::new(MemoryState::new()),
        Clock::System,
    )?;
    let modules = pipeline
        .streams()
        .iter()
        .flat_map(|s| {
            s.modules().iter().map(move |m| {
                (
                    s.name().to_string(),
                    m.name().to_string(),
                    m.module().sha256_hex(),
                    m.module().size(),
                )
            })
        })
        .collect();
    Ok(CheckReport {
        file: file.display().to_string(),
        modules,
        streams: config.streams.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONFIG;
    use crate::runtime::Limits;

    #[test]
    fn default_config_parses_to_the_defaults() {
        let config = Config::from_str_at(DEFAULT_CONFIG, "wasmgate.toml").unwrap();
        assert_eq!(
            config.runtime,
            Limits::default(),
            "the file states the real defaults"
        );
        assert!(config.streams.is_empty());
        assert_eq!(config.mqtt, crate::settings::MqttConfig::default());
        assert_eq!(config.storage, crate::settings::StorageConfig::default());
        assert_eq!(config.http, crate::settings::HttpConfig::default());
        assert_eq!(config.log, crate::settings::LogConfig::default());
        assert_eq!(config.outbox, crate::outbox::OutboxConfig::default());
        assert_eq!(
            config.uplink,
            crate::outbox::uplink::UplinkConfig::default()
        );
        assert_eq!(
            config.gateway.topic_prefix,
            crate::settings::GatewayConfig::default().topic_prefix
        );
        assert!(config.sources.is_empty() && config.alarm.is_none());
    }

    #[test]
    fn commented_examples_in_the_default_config_parse() {
        // Uncomment every example line: the result must be a valid config
        // apart from files and devices that do not exist here.
        let text: String = DEFAULT_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest
                            .split_once(" = ")
                            .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let err = Config::from_str_at(&text, "wasmgate.toml")
            .unwrap_err()
            .to_string();
        // The first thing it trips over is the example module path.
        assert!(err.contains("module file not found"), "{err}");
    }

    #[test]
    fn default_config_documents_every_runtime_key() {
        let keys = [
            "fuel_per_call",
            "fuel_per_reading",
            "memory_bytes",
            "table_elements",
            "max_recursion_depth",
            "max_module_bytes",
            "max_output_bytes",
            "batch_size",
            "failure_threshold",
            "failure_window_secs",
            "quarantine_secs",
            "on_failure",
        ];
        let lines: Vec<&str> = DEFAULT_CONFIG.lines().collect();
        for key in keys {
            let at = lines
                .iter()
                .position(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("{key} missing"));
            // Directly above: a comment, or a key of the same commented group.
            assert!(
                lines[..at].iter().rev().take(3).any(|l| l.starts_with('#')),
                "{key} has no comment"
            );
        }
        // Every Limits field is listed: a new field must be documented here.
        let debug = format!("{:?}", Limits::default());
        let fields = debug.matches(':').count();
        assert_eq!(
            fields,
            keys.len(),
            "Limits has fields the default config does not document"
        );
    }
}
