//! `config`: the configuration file, from TOML text to a validated
//! [`Config`] (`config.rs`, `settings.rs` and every section's `validate`),
//! through the path that produces `file:line:column: key: message` errors.
//!
//! Module files are not looked up ([`parse_config_without_module_check`]);
//! only when that succeeds is the normal [`Config::from_str_at`] run too,
//! against a directory that does not exist (one `stat` per processor).
//!
//! Invariants:
//! - parsing never panics;
//! - every error renders as `<file>…: <non-empty message>`, has a site,
//!   and its line and column lie inside the text;
//! - an accepted configuration satisfies its own rules again (every
//!   section re-validates, stream and processor names are valid and
//!   distinct), and every processor's `config` table encodes to CBOR that
//!   decodes;
//! - parsed again with module files checked, an accepted text gives the
//!   same configuration (determinism), or a module error pointing at a
//!   `….module` key.

use std::path::Path;

use wasmgate::config::{Config, ConfigError, LineCol, Problem, is_valid_stream_name};
use wasmgate::fuzz_api::parse_config_without_module_check;

use crate::assert_message;

/// The file name errors carry: in a directory that does not exist.
pub const FILE: &str = "/nonexistent-wasmgate-fuzz/etc/wasmgate.toml";

/// Run every check on `data`.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(FILE);
    // Parsed once here; when it succeeds, the module-checked parse below is
    // the second parse of the same text and must agree (determinism).
    let first = parse_config_without_module_check(text, path);
    match first {
        Err(e) => check_error(text, &e),
        Ok(config) => {
            check_config(&config);
            match Config::from_str_at(text, path) {
                Ok(checked) => assert_eq!(checked, config),
                Err(e) => {
                    check_error(text, &e);
                    let ConfigError::Invalid { at, problem } = &e else {
                        panic!("module check turned a valid config into {e}");
                    };
                    assert!(
                        matches!(
                            problem,
                            Problem::ModuleNotFound(_)
                                | Problem::ModuleNotAFile(_)
                                | Problem::ModuleUnreadable { .. }
                        ),
                        "module check failed with {e}"
                    );
                    assert!(
                        at.key.as_deref().is_some_and(|k| k.ends_with(".module")),
                        "module error at {at}"
                    );
                }
            }
        }
    }
    for offset in [0, text.len() / 3, text.len(), text.len() + 7] {
        check_position(text, LineCol::of_offset(text, offset));
    }
}

fn check_position(text: &str, p: LineCol) {
    assert!(p.line >= 1 && p.column >= 1, "{p:?}");
    let line = text
        .split('\n')
        .nth(p.line - 1)
        .unwrap_or_else(|| panic!("line {} past the end of the text", p.line));
    assert!(
        p.column <= line.chars().count() + 1,
        "column {} past the end of line {} ({} characters)",
        p.column,
        p.line,
        line.chars().count()
    );
}

fn check_error(text: &str, e: &ConfigError) {
    let msg = e.to_string();
    let site = e
        .site()
        .unwrap_or_else(|| panic!("an error about the text without a site: {msg}"));
    let prefix = format!("{}", site);
    assert!(msg.starts_with(FILE), "{msg}");
    assert!(
        msg.starts_with(&prefix),
        "{msg} does not start with its site {prefix}"
    );
    let rest = &msg[prefix.len()..];
    let rest = rest
        .strip_prefix(": ")
        .unwrap_or_else(|| panic!("no `: ` after the site in {msg:?}"));
    assert_message("config error", rest);
    if let Some(p) = site.position {
        check_position(text, p);
    }
    if let Some(key) = &site.key {
        assert!(!key.is_empty(), "empty key path in {msg}");
    }
}

fn check_config(c: &Config) {
    c.runtime.validate().unwrap();
    c.gateway.validate().unwrap();
    c.mqtt.validate().unwrap();
    c.storage.validate().unwrap();
    c.log.validate().unwrap();
    c.outbox.validate().unwrap();
    c.uplink.validate().unwrap();
    c.ota.validate().unwrap();
    if let Some(a) = &c.alarm {
        a.validate().unwrap();
        let streams: Vec<String> = c.streams.keys().cloned().collect();
        assert!(a.unknown_streams(&streams).is_empty());
    }
    for (name, source) in &c.sources {
        assert!(is_valid_stream_name(name), "source {name:?}");
        source.validate().unwrap();
    }
    for (name, stream) in &c.streams {
        assert!(is_valid_stream_name(name), "stream {name:?}");
        assert!(
            !stream.processors.is_empty() || !stream.detect.detectors.is_empty(),
            "stream {name:?} does nothing"
        );
        stream.detect.validate().unwrap();
        for s in &stream.sources {
            assert!(
                c.sources.contains_key(s),
                "stream {name:?}: unknown source {s:?}"
            );
        }
        for (i, p) in stream.processors.iter().enumerate() {
            assert!(!p.name.is_empty());
            assert!(
                !stream.processors[..i].iter().any(|o| o.name == p.name),
                "stream {name:?}: processor {:?} twice",
                p.name
            );
            let cbor = p.config_cbor();
            let value: serde_cbor::Value = serde_cbor::from_slice(&cbor)
                .unwrap_or_else(|e| panic!("config of {:?} encodes to bad CBOR: {e}", p.name));
            assert!(matches!(value, serde_cbor::Value::Map(_)));
        }
    }
}
