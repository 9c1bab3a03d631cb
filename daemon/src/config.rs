//! The daemon's TOML configuration file (`wasmgate.toml`).
//!
//! ```toml
//! [runtime]                      # crate::runtime::limits::Limits; all keys optional
//! fuel_per_call = 2_000_000
//!
//! [streams.greenhouse]           # stream name = table key
//! sensors = ["greenhouse/*"]     # sensor-id globs, default ["*"]
//!
//! [[streams.greenhouse.processors]]
//! module = "modules/calibrate.wasm"  # relative to the config file's directory
//! name = "calibrate"                 # default: the module's file stem
//! on_failure = "drop"                # default: runtime.on_failure
//! config = { fields = { temp = { scale = 1.8, offset = 32.0 } } }
//! ```
//!
//! Loading happens in two steps: serde turns the text into private `Raw*`
//! structs that keep the source spans of the values checked later, then
//! [`Config::from_str_at`] validates them and builds the public [`Config`].
//! Every error carries the file, the line and column, and the key path.
//! New top-level sections (MQTT, sources, storage) are added as new fields of
//! `RawConfig` and [`Config`] plus a validation step each.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_path_to_error::Segment;
use toml::Spanned;

use crate::alarm::AlarmConfig;
use crate::cbor;
use crate::detect::{DetectorSetConfig, DetectorSpec};
use crate::ota::OtaConfig;
use crate::outbox::uplink::UplinkConfig;
use crate::outbox::{FullPolicy, OutboxConfig};
use crate::pattern::{PatternError, SensorPattern};
use crate::runtime::limits::{FailurePolicy, Limits};
use crate::settings::{
    GatewayConfig, HttpConfig, LogConfig, MqttConfig, SourceConfig, StorageConfig,
};

/// The fully commented default configuration (`wasmgate default-config`):
/// every key with its default value and an explanation.
pub const DEFAULT_CONFIG: &str = include_str!("../config/wasmgate.toml");

/// The name of the stream [`Config::single_stream`] creates.
pub const REPLAY_STREAM: &str = "replay";

/// A validated daemon configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Who this gateway is (`[gateway]`).
    pub gateway: GatewayConfig,
    /// The broker connection (`[mqtt]`).
    pub mqtt: MqttConfig,
    /// Where state lives (`[storage]`).
    pub storage: StorageConfig,
    /// The local HTTP endpoint (`[http]`; reserved).
    pub http: HttpConfig,
    /// What `run` logs and where (`[log]`).
    pub log: LogConfig,
    /// The durable outbox (`[outbox]`).
    pub outbox: OutboxConfig,
    /// Where the outbox is published (`[uplink]`).
    pub uplink: UplinkConfig,
    /// Signed module updates (`[ota]`).
    pub ota: OtaConfig,
    /// Limits and supervision settings for every processor (`[runtime]`).
    pub runtime: Limits,
    /// Inputs, by name (`[sources.<name>]`).
    pub sources: BTreeMap<String, SourceConfig>,
    /// The processing streams, by name (`[streams.<name>]`).
    pub streams: BTreeMap<String, StreamConfig>,
    /// The GPIO alarm output (`[alarm]`), if any.
    pub alarm: Option<AlarmConfig>,
}

/// One stream: which sensors feed it and the processor chain they go through.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Readings whose sensor id matches any of these enter the stream.
    pub sensors: Vec<SensorPattern>,
    /// The processor chain, in order.
    pub processors: Vec<ProcessorConfig>,
    /// Only readings from these sources enter the stream; empty: any source.
    pub sources: Vec<String>,
    /// The anomaly detectors run on the chain's outputs.
    pub detect: DetectorSetConfig,
    /// What happens when the outbox is at its budget.
    pub outbox_full: FullPolicy,
}

impl StreamConfig {
    /// Whether readings from `sensor` belong to this stream.
    pub fn accepts(&self, sensor: &str) -> bool {
        self.sensors.iter().any(|p| p.matches(sensor))
    }
}

/// One processor module in a stream's chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// The module file, resolved against the config file's directory.
    pub module: PathBuf,
    /// Unique within its stream; defaults to the module's file stem.
    pub name: String,
    /// Overrides `runtime.on_failure` for this processor.
    pub on_failure: Option<FailurePolicy>,
    /// The module's own settings, handed to its `init` as CBOR
    /// (see [`module_config_cbor`]); empty when not given.
    pub config: toml::Table,
}

impl ProcessorConfig {
    /// The failure policy in force for this processor.
    pub fn failure_policy(&self, runtime: &Limits) -> FailurePolicy {
        self.on_failure.unwrap_or(runtime.on_failure)
    }

    /// The CBOR argument of this processor's `init` call.
    pub fn config_cbor(&self) -> Vec<u8> {
        module_config_cbor(&self.config)
    }
}

/// A 1-based line and column (in characters) within a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// Line number, from 1.
    pub line: usize,
    /// Column number in characters, from 1.
    pub column: usize,
}

impl LineCol {
    /// The line and column of byte offset `offset` in `text` (clamped to the
    /// text's length and to a character boundary).
    pub fn of_offset(text: &str, offset: usize) -> LineCol {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        LineCol {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// Where in the configuration an error was found: `file:line:col: key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The config file, as given to [`Config::load`] / [`Config::from_str_at`].
    pub file: PathBuf,
    /// Line and column, when known.
    pub position: Option<LineCol>,
    /// The key path, e.g. `streams.greenhouse.processors[0].module`, when known.
    pub key: Option<String>,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        Ok(())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The text is not valid TOML, or does not fit the schema (unknown key,
    /// wrong type, missing key).
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Box<Site>,
        /// The parser's message.
        message: String,
    },
    /// The text parsed but a value is not acceptable.
    #[error("{at}: {problem}")]
    Invalid {
        /// Where.
        at: Box<Site>,
        /// What is wrong.
        problem: Problem,
    },
}

impl ConfigError {
    /// Where the error was found, if it is about the file's content.
    pub fn site(&self) -> Option<&Site> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. } | ConfigError::Invalid { at, .. } => Some(at),
        }
    }
}

/// A semantic problem in an otherwise well-formed configuration.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// `Limits::validate` refused the `[runtime]` table.
    #[error("{0}")]
    Runtime(String),
    /// A stream name that cannot be a topic segment.
    #[error("invalid stream name {0:?}: use only letters, digits, `_` and `-`")]
    StreamName(String),
    /// A stream without a processor or a detector.
    #[error("stream {0:?} has no processors and no detectors")]
    NoProcessors(String),
    /// A section's own validation refused it (the message names the key).
    #[error("{0}")]
    Section(String),
    /// Two processors of one stream share a name.
    #[error(
        "duplicate processor name {name:?} in stream {stream:?} (processors[{first}] has it too; set a distinct `name`)"
    )]
    DuplicateProcessor {
        /// The stream.
        stream: String,
        /// The name used twice.
        name: String,
        /// Index of the first processor with that name.
        first: usize,
    },
    /// An explicitly empty processor name.
    #[error("processor name must not be empty")]
    EmptyName,
    /// No `name` was given and the module path has no file stem.
    #[error("cannot derive a processor name from {}; set `name`", .0.display())]
    NoName(PathBuf),
    /// The module file does not exist.
    #[error("module file not found: {}", .0.display())]
    ModuleNotFound(PathBuf),
    /// The module path exists but is not a regular file.
    #[error("module path is not a file: {}", .0.display())]
    ModuleNotAFile(PathBuf),
    /// The module file cannot be inspected.
    #[error("cannot access module file {}: {source}", path.display())]
    ModuleUnreadable {
        /// The resolved module path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A sensor glob that does not parse.
    #[error("invalid sensor pattern {pattern:?}: {source}")]
    SensorPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        source: PatternError,
    },
}

// ---------------------------------------------------------------------------
// Raw (as written) schema.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: Option<Spanned<GatewayConfig>>,
    mqtt: Option<Spanned<MqttConfig>>,
    storage: Option<Spanned<StorageConfig>>,
    http: Option<Spanned<HttpConfig>>,
    log: Option<Spanned<LogConfig>>,
    outbox: Option<Spanned<OutboxConfig>>,
    uplink: Option<Spanned<UplinkConfig>>,
    ota: Option<Spanned<OtaConfig>>,
    runtime: Option<Spanned<Limits>>,
    sources: Option<BTreeMap<String, Spanned<SourceConfig>>>,
    streams: Option<BTreeMap<String, Spanned<RawStream>>>,
    alarm: Option<Spanned<AlarmConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    sensors: Option<Vec<Spanned<String>>>,
    sources: Option<Vec<Spanned<String>>>,
    processors: Option<Spanned<Vec<Spanned<RawProcessor>>>>,
    detectors: Option<Spanned<Vec<DetectorSpec>>>,
    max_series: Option<usize>,
    include_derived: Option<bool>,
    outbox_full: Option<FullPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessor {
    module: Spanned<String>,
    name: Option<Spanned<String>>,
    on_failure: Option<FailurePolicy>,
    config: Option<toml::Table>,
}

/// Whether validation checks that module files exist (`Skip`: the tests
/// and the fuzz target, `crate::fuzz_api`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModuleCheck {
    Exists,
    Skip,
}

impl Config {
    /// Read and validate the config file at `path`; module paths are resolved
    /// against its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_str_at(&text, path)
    }

    /// Parse and validate `text` as if read from `path`: `path` names the file
    /// in error messages, and module paths are resolved against its directory.
    pub fn from_str_at(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        parse(text, path.as_ref(), ModuleCheck::Exists)
    }

    /// The implicit configuration of `wasmgate replay --module a.wasm
    /// --module b.wasm`: one stream named [`REPLAY_STREAM`] taking every
    /// sensor through `modules` in order, with default limits. Processor names
    /// are the file stems, made unique with a `-2`, `-3`, … suffix. Module
    /// files are not checked here; loading them reports missing ones.
    pub fn single_stream(modules: Vec<PathBuf>) -> Config {
        let mut processors: Vec<ProcessorConfig> = Vec::with_capacity(modules.len());
        for (i, module) in modules.into_iter().enumerate() {
            let stem = match module.file_stem() {
                Some(s) if !s.is_empty() => s.to_string_lossy().into_owned(),
                _ => format!("module-{}", i + 1),
            };
            let mut name = stem.clone();
            let mut n = 1;
            while processors.iter().any(|p| p.name == name) {
                n += 1;
                name = format!("{stem}-{n}");
            }
            processors.push(ProcessorConfig {
                module,
                name,
                on_failure: None,
                config: toml::Table::new(),
            });
        }
        let stream = StreamConfig {
            sensors: vec![SensorPattern::any()],
            processors,
            sources: Vec::new(),
            detect: DetectorSetConfig::default(),
            outbox_full: FullPolicy::default(),
        };
        Config {
            gateway: GatewayConfig::default(),
            mqtt: MqttConfig::default(),
            storage: StorageConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            outbox: OutboxConfig::default(),
            uplink: UplinkConfig::default(),
            ota: OtaConfig::default(),
            runtime: Limits::default(),
            sources: BTreeMap::new(),
            streams: BTreeMap::from([(REPLAY_STREAM.to_string(), stream)]),
            alarm: None,
        }
    }
}

/// Whether `name` is a usable stream name: non-empty `[A-Za-z0-9_-]+`.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn parse(text: &str, file: &Path, check: ModuleCheck) -> Result<Config, ConfigError> {
    let raw = deserialize(text, file)?;
    let cx = Cx { text, file };

    let runtime = match raw.runtime {
        Some(spanned) => {
            let span = spanned.span();
            let limits = spanned.into_inner();
            limits
                .validate()
                .map_err(|m| cx.invalid(Some(span), "runtime".into(), Problem::Runtime(m)))?;
            limits
        }
        None => {
            let limits = Limits::default();
            limits
                .validate()
                .map_err(|m| cx.invalid(None, "runtime".into(), Problem::Runtime(m)))?;
            limits
        }
    };

    let gateway = section(&cx, raw.gateway, "gateway", GatewayConfig::validate)?;
    let mqtt = section(&cx, raw.mqtt, "mqtt", MqttConfig::validate)?;
    let storage = section(&cx, raw.storage, "storage", StorageConfig::validate)?;
    let http = section(&cx, raw.http, "http", |_| Ok(()))?;
    let log = section(&cx, raw.log, "log", LogConfig::validate)?;
    let outbox = section(&cx, raw.outbox, "outbox", OutboxConfig::validate)?;
    let uplink = section(&cx, raw.uplink, "uplink", UplinkConfig::validate)?;
    let mut ota = section(&cx, raw.ota, "ota", OtaConfig::validate)?;
    // Like module paths: relative to the config file's directory.
    if let Some(k) = ota.keyset_file.take() {
        ota.keyset_file = Some(file.parent().unwrap_or(Path::new("")).join(k));
    }
    let mut sources = BTreeMap::new();
    for (name, src) in raw.sources.unwrap_or_default() {
        let span = src.span();
        let key = format!("sources.{}", key_segment(&name));
        if !is_valid_stream_name(&name) {
            return Err(cx.invalid(
                Some(span),
                key,
                Problem::Section(format!(
                    "invalid source name {name:?}: use only letters, digits, `_` and `-`"
                )),
            ));
        }
        let src = src.into_inner();
        src.validate()
            .map_err(|m| cx.invalid(Some(span), key, Problem::Section(m)))?;
        sources.insert(name, src);
    }
    let known_sources: Vec<String> = sources.keys().cloned().collect();
    let alarm = match raw.alarm {
        Some(a) => {
            let span = a.span();
            let a = a.into_inner();
            a.validate()
                .map_err(|m| cx.invalid(Some(span), "alarm".into(), Problem::Section(m)))?;
            Some(a)
        }
        None => None,
    };

    let base = file.parent().unwrap_or(Path::new(""));
    let mut streams = BTreeMap::new();
    for (stream_name, raw_stream) in raw.streams.unwrap_or_default() {
        let stream_span = raw_stream.span();
        let stream_key = format!("streams.{}", key_segment(&stream_name));
        if !is_valid_stream_name(&stream_name) {
            return Err(cx.invalid(
                Some(stream_span),
                stream_key,
                Problem::StreamName(stream_name),
            ));
        }
        let raw_stream = raw_stream.into_inner();

        let sensors = match raw_stream.sensors {
            None => vec![SensorPattern::any()],
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, p) in list.into_iter().enumerate() {
                    let span = p.span();
                    let pattern = p.into_inner();
                    match SensorPattern::parse(&pattern) {
                        Ok(sp) => out.push(sp),
                        Err(source) => {
                            return Err(cx.invalid(
                                Some(span),
                                format!("{stream_key}.sensors[{i}]"),
                                Problem::SensorPattern { pattern, source },
                            ));
                        }
                    }
                }
                out
            }
        };

        let (procs_span, raw_procs) = match raw_stream.processors {
            Some(p) => (p.span(), p.into_inner()),
            None => (stream_span.clone(), Vec::new()),
        };
        let (detectors_span, detectors) = match raw_stream.detectors {
            Some(d) => (Some(d.span()), d.into_inner()),
            None => (None, Vec::new()),
        };
        if raw_procs.is_empty() && detectors.is_empty() {
            return Err(cx.invalid(
                Some(procs_span),
                format!("{stream_key}.processors"),
                Problem::NoProcessors(stream_name),
            ));
        }
        let mut detect = DetectorSetConfig {
            detectors,
            ..DetectorSetConfig::default()
        };
        if let Some(n) = raw_stream.max_series {
            detect.max_series = n;
        }
        if let Some(b) = raw_stream.include_derived {
            detect.include_derived = b;
        }
        detect.validate().map_err(|m| {
            cx.invalid(
                detectors_span.clone().or(Some(stream_span.clone())),
                format!("{stream_key}.detectors"),
                Problem::Section(m),
            )
        })?;
        let mut stream_sources = Vec::new();
        for (i, src) in raw_stream
            .sources
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let span = src.span();
            let src = src.into_inner();
            if !known_sources.contains(&src) {
                return Err(cx.invalid(
                    Some(span),
                    format!("{stream_key}.sources[{i}]"),
                    Problem::Section(format!("no source named {src:?} in [sources]")),
                ));
            }
            stream_sources.push(src);
        }

        let mut processors: Vec<ProcessorConfig> = Vec::with_capacity(raw_procs.len());
        for (i, raw_proc) in raw_procs.into_iter().enumerate() {
            let proc_key = format!("{stream_key}.processors[{i}]");
            let raw_proc = raw_proc.into_inner();
            let module_span = raw_proc.module.span();
            let module_path = PathBuf::from(raw_proc.module.into_inner());

            let (name, name_span, name_key) = match raw_proc.name {
                Some(n) => {
                    let span = n.span();
                    let n = n.into_inner();
                    if n.is_empty() {
                        return Err(cx.invalid(
                            Some(span),
                            format!("{proc_key}.name"),
                            Problem::EmptyName,
                        ));
                    }
                    (n, span, format!("{proc_key}.name"))
                }
                None => match module_path.file_stem() {
                    Some(s) if !s.is_empty() => (
                        s.to_string_lossy().into_owned(),
                        module_span.clone(),
                        format!("{proc_key}.module"),
                    ),
                    _ => {
                        return Err(cx.invalid(
                            Some(module_span),
                            format!("{proc_key}.module"),
                            Problem::NoName(module_path),
                        ));
                    }
                },
            };
            if let Some(first) = processors.iter().position(|p| p.name == name) {
                return Err(cx.invalid(
                    Some(name_span),
                    name_key,
                    Problem::DuplicateProcessor {
                        stream: stream_name,
                        name,
                        first,
                    },
                ));
            }

            let module = base.join(&module_path);
            if check == ModuleCheck::Exists {
                let problem = match std::fs::metadata(&module) {
                    Ok(meta) if meta.is_file() => None,
                    Ok(_) => Some(Problem::ModuleNotAFile(module.clone())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Some(Problem::ModuleNotFound(module.clone()))
                    }
                    Err(source) => Some(Problem::ModuleUnreadable {
                        path: module.clone(),
                        source,
                    }),
                };
                if let Some(problem) = problem {
                    return Err(cx.invalid(
                        Some(module_span),
                        format!("{proc_key}.module"),
                        problem,
                    ));
                }
            }

            processors.push(ProcessorConfig {
                module,
                name,
                on_failure: raw_proc.on_failure,
                config: raw_proc.config.unwrap_or_default(),
            });
        }

        streams.insert(
            stream_name,
            StreamConfig {
                sensors,
                processors,
                sources: stream_sources,
                detect,
                outbox_full: raw_stream.outbox_full.unwrap_or_default(),
            },
        );
    }

    if let Some(a) = &alarm {
        let known: Vec<String> = streams.keys().cloned().collect();
        let unknown = a.unknown_streams(&known);
        if !unknown.is_empty() {
            return Err(cx.invalid(
                None,
                "alarm.streams".into(),
                Problem::Section(format!("no stream named {}", unknown.join(", "))),
            ));
        }
    }
    Ok(Config {
        gateway,
        mqtt,
        storage,
        http,
        log,
        outbox,
        uplink,
        ota,
        runtime,
        sources,
        streams,
        alarm,
    })
}

/// Take an optional spanned section (or its default) and validate it; an
/// error points at the section and names it.
fn section<T: Default>(
    cx: &Cx<'_>,
    raw: Option<Spanned<T>>,
    key: &str,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let (span, value) = match raw {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, T::default()),
    };
    validate(&value).map_err(|m| cx.invalid(span, key.to_string(), Problem::Section(m)))?;
    Ok(value)
}

/// Error-building context: the source text and the file name.
struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Cx<'_> {
    fn invalid(&self, span: Option<Range<usize>>, key: String, problem: Problem) -> ConfigError {
        ConfigError::Invalid {
            at: Box::new(Site {
                file: self.file.to_path_buf(),
                position: span.map(|s| LineCol::of_offset(self.text, s.start)),
                key: Some(key),
            }),
            problem,
        }
    }
}

/// Serde step: TOML text to `RawConfig`, errors with position and key path.
fn deserialize(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    let syntax = |e: &toml::de::Error, key: Option<String>| ConfigError::Syntax {
        at: Box::new(Site {
            file: file.to_path_buf(),
            position: e.span().map(|s| LineCol::of_offset(text, s.start)),
            key,
        }),
        message: e.message().trim_end().to_string(),
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(&e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        // An unknown key is reported against the table that holds it.
        let skip_last = inner.message().starts_with("unknown field");
        syntax(inner, format_key_path(e.path(), skip_last))
    })
}

/// `streams.greenhouse.processors[0]` from a serde path, without the
/// segments `toml::Spanned` introduces; `None` for the root.
fn format_key_path(path: &serde_path_to_error::Path, skip_last: bool) -> Option<String> {
    let segments: Vec<&Segment> = path
        .iter()
        .filter(|s| !matches!(s, Segment::Map { key } if key.starts_with("$__serde_spanned")))
        .collect();
    let n = if skip_last {
        segments.len().saturating_sub(1)
    } else {
        segments.len()
    };
    let mut out = String::new();
    for seg in &segments[..n] {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_segment(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A key as written in a TOML dotted key: bare when possible, else quoted.
fn key_segment(key: &str) -> String {
    if is_valid_stream_name(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

// ---------------------------------------------------------------------------
// Module config → CBOR (wit/ABI.md §5 "Config").

/// Encode a processor's `config` table as the CBOR argument of its `init`
/// call (`wit/ABI.md` §5): strings, integers, floats, booleans, arrays and
/// tables become CBOR text, int, float64, bool, array and map; datetimes
/// become RFC 3339 text. Keys keep their order in the TOML file. An empty
/// table gives the empty map `0xa0`.
pub fn module_config_cbor(table: &toml::Table) -> Vec<u8> {
    let mut out = Vec::new();
    write_table(&mut out, table);
    out
}

/// Encode one config value as CBOR, with the same mapping as
/// [`module_config_cbor`] (the answer of the `config_get` host import).
pub fn value_cbor(value: &toml::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

fn write_table(out: &mut Vec<u8>, table: &toml::Table) {
    cbor::write_map_head(out, table.len());
    for (k, v) in table {
        cbor::write_text(out, k);
        write_value(out, v);
    }
}

fn write_value(out: &mut Vec<u8>, v: &toml::Value) {
    match v {
        toml::Value::String(s) => cbor::write_text(out, s),
        toml::Value::Integer(i) => cbor::write_i64(out, *i),
        toml::Value::Float(f) => cbor::write_f64(out, *f),
        toml::Value::Boolean(b) => cbor::write_bool(out, *b),
        toml::Value::Datetime(d) => cbor::write_text(out, &d.to_string()),
        toml::Value::Array(items) => {
            cbor::write_array_head(out, items.len());
            for item in items {
                write_value(out, item);
            }
        }
        toml::Value::Table(t) => write_table(out, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A temp dir holding `modules/calibrate.wasm` and `modules/alert.wasm`.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("modules")).unwrap();
        fs::write(dir.path().join("modules/calibrate.wasm"), b"\0asm").unwrap();
        fs::write(dir.path().join("modules/alert.wasm"), b"\0asm").unwrap();
        dir
    }

    fn load(dir: &tempfile::TempDir, text: &str) -> Result<Config, ConfigError> {
        let path = dir.path().join("wasmgate.toml");
        fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    /// The error's message with the temp directory stripped.
    fn err(dir: &tempfile::TempDir, text: &str) -> String {
        let e = load(dir, text).unwrap_err();
        let prefix = format!("{}/", dir.path().display());
        e.to_string().replace(&prefix, "")
    }

    const VALID: &str = r#"
[runtime]
fuel_per_call = 5_000_000
on_failure = "drop"

[streams.greenhouse]
sensors = ["greenhouse/*", "shed/temp-?"]

[[streams.greenhouse.processors]]
module = "modules/calibrate.wasm"
on_failure = "pass-through"
config = { fields = { temp = { scale = 1.8, offset = 32.0 } } }

[[streams.greenhouse.processors]]
module = "modules/alert.wasm"
name = "alert"

[[streams.greenhouse.processors]]
module = "modules/calibrate.wasm"
name = "calibrate-again"
[streams.greenhouse.processors.config]
zeta = 1
alpha = "x"

[streams.all]
processors = [{ module = "modules/alert.wasm" }]
"#;

    #[test]
    fn valid_config() {
        let dir = fixture();
        let cfg = load(&dir, VALID).unwrap();
        assert_eq!(cfg.runtime.fuel_per_call, 5_000_000);
        assert_eq!(cfg.runtime.on_failure, FailurePolicy::Drop);
        assert_eq!(cfg.runtime.batch_size, Limits::default().batch_size);
        assert_eq!(
            cfg.streams.keys().collect::<Vec<_>>(),
            ["all", "greenhouse"]
        );

        let gh = &cfg.streams["greenhouse"];
        let pats: Vec<_> = gh.sensors.iter().map(|p| p.as_str()).collect();
        assert_eq!(pats, ["greenhouse/*", "shed/temp-?"]);
        assert!(gh.accepts("greenhouse/north"));
        assert!(gh.accepts("shed/temp-1"));
        assert!(!gh.accepts("shed/hum-1"));
        let names: Vec<_> = gh.processors.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["calibrate", "alert", "calibrate-again"]);
        assert_eq!(
            gh.processors[0].module,
            dir.path().join("modules/calibrate.wasm")
        );
        assert_eq!(
            gh.processors[0].on_failure,
            Some(FailurePolicy::PassThrough)
        );
        assert_eq!(
            gh.processors[0].failure_policy(&cfg.runtime),
            FailurePolicy::PassThrough
        );
        assert_eq!(gh.processors[1].on_failure, None);
        assert_eq!(
            gh.processors[1].failure_policy(&cfg.runtime),
            FailurePolicy::Drop
        );
        assert!(gh.processors[1].config.is_empty());
        let temp = &gh.processors[0].config["fields"]["temp"];
        assert_eq!(temp["scale"].as_float(), Some(1.8));
        // Document order is kept.
        let keys: Vec<_> = gh.processors[2].config.keys().collect();
        assert_eq!(keys, ["zeta", "alpha"]);

        let all = &cfg.streams["all"];
        assert_eq!(all.sensors, [SensorPattern::any()]);
        assert_eq!(all.processors[0].name, "alert");
    }

    #[test]
    fn empty_config_is_valid() {
        let cfg = Config::from_str_at("", "x.toml").unwrap();
        assert_eq!(cfg.runtime, Limits::default());
        assert!(cfg.streams.is_empty());
    }

    #[test]
    fn relative_config_path_resolves_modules_relative_to_cwd() {
        let text = "[streams.s]\nprocessors = [{ module = \"m/a.wasm\" }]\n";
        let cfg = parse(text, Path::new("wasmgate.toml"), ModuleCheck::Skip).unwrap();
        assert_eq!(cfg.streams["s"].processors[0].module, Path::new("m/a.wasm"));
        let cfg = parse(text, Path::new("/etc/wg/wasmgate.toml"), ModuleCheck::Skip).unwrap();
        assert_eq!(
            cfg.streams["s"].processors[0].module,
            Path::new("/etc/wg/m/a.wasm")
        );
        let abs = "[streams.s]\nprocessors = [{ module = \"/opt/a.wasm\" }]\n";
        let cfg = parse(abs, Path::new("/etc/wg/wasmgate.toml"), ModuleCheck::Skip).unwrap();
        assert_eq!(
            cfg.streams["s"].processors[0].module,
            Path::new("/opt/a.wasm")
        );
    }

    #[test]
    fn unknown_processor_key() {
        let dir = fixture();
        let text = r#"[runtime]
fuel_per_call = 10_000_000

[streams.greenhouse]
sensors = ["greenhouse/*"]
[[streams.greenhouse.processors]]
modul = "modules/calibrate.wasm"
"#;
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:7:1: streams.greenhouse.processors[0]: unknown field `modul`, \
             expected one of `module`, `name`, `on_failure`, `config`"
        );
    }

    #[test]
    fn unknown_keys_elsewhere() {
        let dir = fixture();
        assert_eq!(
            err(&dir, "\n[runtime]\nfuel = 1\n"),
            "wasmgate.toml:3:1: runtime: unknown field `fuel`, expected one of \
             `fuel_per_call`, `fuel_per_reading`, `memory_bytes`, `table_elements`, \
             `max_recursion_depth`, `max_module_bytes`, `max_output_bytes`, `batch_size`, \
             `failure_threshold`, `failure_window_secs`, `quarantine_secs`, `on_failure`"
        );
        assert_eq!(
            err(&dir, "mqtt = 1\n"),
            "wasmgate.toml:1:8: mqtt: invalid type: integer `1`, expected struct MqttConfig"
        );
        assert!(err(&dir, "mqttt = 1\n").starts_with(
            "wasmgate.toml:1:1: unknown field `mqttt`, expected one of `gateway`, `mqtt`"
        ),);
        assert_eq!(
            err(&dir, "[streams.a]\n  sensor = [\"x\"]\n"),
            "wasmgate.toml:2:3: streams.a: unknown field `sensor`, expected one of `sensors`, `sources`, `processors`, `detectors`, `max_series`, `include_derived`, `outbox_full`"
        );
    }

    #[test]
    fn wrong_types() {
        let dir = fixture();
        assert_eq!(
            err(&dir, "[runtime]\nfuel_per_call = \"lots\"\n"),
            "wasmgate.toml:2:17: runtime.fuel_per_call: invalid type: string \"lots\", expected u64"
        );
        assert_eq!(
            err(
                &dir,
                "[streams.s]\nprocessors = [{ module = \"a\" }, { module = 5 }]\n"
            ),
            "wasmgate.toml:2:44: streams.s.processors[1].module: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err(
                &dir,
                "[streams.s]\nprocessors = [{ module = \"a\", on_failure = \"retry\" }]\n"
            ),
            "wasmgate.toml:2:44: streams.s.processors[0].on_failure: unknown variant `retry`, \
             expected `pass-through` or `drop`"
        );
        assert_eq!(
            err(&dir, "[streams.s]\nprocessors = [{ name = \"a\" }]\n"),
            "wasmgate.toml:2:15: streams.s.processors[0]: missing field `module`"
        );
        assert_eq!(
            err(
                &dir,
                "[streams.s]\nprocessors = [{ module = \"a\", config = 3 }]\n"
            ),
            "wasmgate.toml:2:40: streams.s.processors[0].config: invalid type: integer `3`, expected a map"
        );
    }

    #[test]
    fn toml_syntax_error() {
        let dir = fixture();
        let e = err(&dir, "[runtime]\nfuel_per_call = = 3\n");
        assert!(e.starts_with("wasmgate.toml:2:17: "), "{e}");
        let e = err(&dir, "[streams.a]\n[streams.a]\n");
        assert!(e.starts_with("wasmgate.toml:2:"), "{e}");
    }

    #[test]
    fn invalid_runtime_limits() {
        let dir = fixture();
        assert_eq!(
            err(&dir, "# limits\n\n[runtime]\nfuel_per_call = 0\n"),
            "wasmgate.toml:3:1: runtime: fuel_per_call must be greater than 0"
        );
    }

    #[test]
    fn invalid_stream_name() {
        let dir = fixture();
        assert_eq!(
            err(
                &dir,
                "[streams.\"green house\"]\nprocessors = [{ module = \"modules/alert.wasm\" }]\n"
            ),
            "wasmgate.toml:1:1: streams.\"green house\": invalid stream name \"green house\": \
             use only letters, digits, `_` and `-`"
        );
        assert_eq!(
            err(
                &dir,
                "[streams.\"\"]\nprocessors = [{ module = \"modules/alert.wasm\" }]\n"
            ),
            "wasmgate.toml:1:1: streams.\"\": invalid stream name \"\": use only letters, digits, `_` and `-`"
        );
        assert_eq!(
            err(
                &dir,
                "[streams]\na_b-c = { processors = [] }\n\"a/b\" = { processors = [] }\n"
            ),
            "wasmgate.toml:3:9: streams.\"a/b\": invalid stream name \"a/b\": use only letters, digits, `_` and `-`"
        );
    }

    #[test]
    fn stream_without_processors() {
        let dir = fixture();
        assert_eq!(
            err(&dir, "\n[streams.empty]\nsensors = [\"*\"]\n"),
            "wasmgate.toml:2:1: streams.empty.processors: stream \"empty\" has no processors and no detectors"
        );
        assert_eq!(
            err(&dir, "[streams.empty]\nprocessors = []\n"),
            "wasmgate.toml:2:14: streams.empty.processors: stream \"empty\" has no processors and no detectors"
        );
    }

    #[test]
    fn duplicate_processor_names() {
        let dir = fixture();
        let text = r#"[streams.s]
[[streams.s.processors]]
module = "modules/calibrate.wasm"
[[streams.s.processors]]
module = "modules/alert.wasm"
[[streams.s.processors]]
module = "modules/alert.wasm"
name = "calibrate"
"#;
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:8:8: streams.s.processors[2].name: duplicate processor name \
             \"calibrate\" in stream \"s\" (processors[0] has it too; set a distinct `name`)"
        );
        // Derived names collide too; the error points at the module.
        let text = "[streams.s]\nprocessors = [\n  { module = \"modules/alert.wasm\" },\n  { module = \"modules/alert.wasm\" },\n]\n";
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:4:14: streams.s.processors[1].module: duplicate processor name \
             \"alert\" in stream \"s\" (processors[0] has it too; set a distinct `name`)"
        );
        // The same name in different streams is fine.
        let text = "[streams.a]\nprocessors = [{ module = \"modules/alert.wasm\" }]\n\
                    [streams.b]\nprocessors = [{ module = \"modules/alert.wasm\" }]\n";
        assert!(load(&dir, text).is_ok());
    }

    #[test]
    fn bad_processor_names() {
        let dir = fixture();
        assert_eq!(
            err(
                &dir,
                "[streams.s]\nprocessors = [{ module = \"modules/alert.wasm\", name = \"\" }]\n"
            ),
            "wasmgate.toml:2:55: streams.s.processors[0].name: processor name must not be empty"
        );
        assert_eq!(
            err(&dir, "[streams.s]\nprocessors = [{ module = \"\" }]\n"),
            "wasmgate.toml:2:26: streams.s.processors[0].module: cannot derive a processor name from ; set `name`"
        );
    }

    #[test]
    fn module_file_missing_or_not_a_file() {
        let dir = fixture();
        let text = "[streams.s]\n[[streams.s.processors]]\nmodule = \"modules/nope.wasm\"\n";
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:3:10: streams.s.processors[0].module: module file not found: modules/nope.wasm"
        );
        let text = "[streams.s]\n[[streams.s.processors]]\nmodule = \"modules\"\n";
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:3:10: streams.s.processors[0].module: module path is not a file: modules"
        );
    }

    #[test]
    fn invalid_sensor_pattern() {
        let dir = fixture();
        let text = "[streams.s]\nsensors = [\"a/*\", \"\"]\nprocessors = [{ module = \"modules/alert.wasm\" }]\n";
        assert_eq!(
            err(&dir, text),
            "wasmgate.toml:2:19: streams.s.sensors[1]: invalid sensor pattern \"\": empty sensor pattern"
        );
    }

    #[test]
    fn outbox_and_uplink_sections() {
        let dir = fixture();
        let c = load(
            &dir,
            "[outbox]\nmax_entries = 10\n[uplink]\ninflight = 4\n[uplink.broker]\nhost = \"cloud\"\nport = 8883\n\n[streams.a]\noutbox_full = \"reject-new\"\n[[streams.a.detectors]]\nkind = \"range\"\nmax = 1.0\n",
        )
        .unwrap();
        assert_eq!(c.outbox.max_entries, 10);
        assert_eq!(c.uplink.inflight, 4);
        assert_eq!(c.uplink.broker(&c.mqtt).host, "cloud");
        assert_eq!(c.streams["a"].outbox_full, FullPolicy::RejectNew);
        assert_eq!(
            err(&dir, "[outbox]\ncommit_max_batch = 0\n"),
            "wasmgate.toml:1:1: outbox: commit_max_batch must be within 1 ..= 65536"
        );
        assert_eq!(
            err(&dir, "[uplink.broker]\nport = 0\n"),
            "wasmgate.toml:1:2: uplink: broker.port must not be 0"
        );
        let e = err(
            &dir,
            "[streams.a]\noutbox_full = \"drop-newest\"\n[[streams.a.detectors]]\nkind = \"range\"\nmax = 1.0\n",
        );
        assert!(
            e.starts_with(
                "wasmgate.toml:2:15: streams.a.outbox_full: unknown variant `drop-newest`"
            ),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\nüü=1\n";
        assert_eq!(LineCol::of_offset(text, 0), LineCol { line: 1, column: 1 });
        assert_eq!(LineCol::of_offset(text, 3), LineCol { line: 2, column: 1 });
        assert_eq!(LineCol::of_offset(text, 7), LineCol { line: 2, column: 3 });
        // Inside a multi-byte character, and past the end.
        assert_eq!(LineCol::of_offset(text, 4), LineCol { line: 2, column: 1 });
        assert_eq!(LineCol::of_offset(text, 99), LineCol { line: 3, column: 1 });
        // Unicode keys in an error.
        let e = Config::from_str_at("[streams.\"ü\"]\n  x = 1\n", "c.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:2:3: streams.\"ü\": unknown field `x`, expected one of `sensors`, `sources`, `processors`, `detectors`, `max_series`, `include_derived`, `outbox_full`"
        );
        assert_eq!(
            e.site().and_then(|s| s.position),
            Some(LineCol { line: 2, column: 3 })
        );
    }

    #[test]
    fn read_error() {
        let e = Config::load("/nonexistent/wasmgate.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/wasmgate.toml: cannot read: "),
            "{e}"
        );
        assert!(e.site().is_none());
    }

    #[test]
    fn single_stream() {
        let cfg = Config::single_stream(vec![
            "a/calibrate.wasm".into(),
            "b/threshold-alert.wasm".into(),
            "c/calibrate.wasm".into(),
            "calibrate.wasm".into(),
        ]);
        assert_eq!(cfg.runtime, Limits::default());
        assert_eq!(cfg.streams.len(), 1);
        let s = &cfg.streams[REPLAY_STREAM];
        assert_eq!(s.sensors, [SensorPattern::any()]);
        assert!(s.accepts("anything"));
        let names: Vec<_> = s.processors.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["calibrate", "threshold-alert", "calibrate-2", "calibrate-3"]
        );
        assert_eq!(s.processors[1].module, Path::new("b/threshold-alert.wasm"));
        assert!(
            s.processors
                .iter()
                .all(|p| p.config.is_empty() && p.on_failure.is_none())
        );
        assert_eq!(s.processors[0].config_cbor(), [0xa0]);
    }

    #[test]
    fn sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("samples/greenhouse.toml");
        // Skip the existence check: the example modules are build outputs.
        let text = fs::read_to_string(&path).unwrap();
        let cfg = parse(&text, &path, ModuleCheck::Skip).unwrap();
        let s = &cfg.streams["greenhouse"];
        let names: Vec<_> = s.processors.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["calibrate", "moving-average", "threshold-alert"]);
        assert!(s.processors[0].module.ends_with("calibrate.wasm"));
        assert_eq!(s.processors[1].config["window"].as_integer(), Some(6));
        assert_eq!(s.processors[2].config["critical"].as_float(), Some(95.0));
    }

    fn cbor_of(toml_text: &str) -> Vec<u8> {
        let table: toml::Table = toml::from_str(toml_text).unwrap();
        module_config_cbor(&table)
    }

    #[test]
    fn config_cbor_empty() {
        assert_eq!(module_config_cbor(&toml::Table::new()), [0xa0]);
        assert_eq!(cbor_of(""), [0xa0]);
    }

    #[test]
    fn config_cbor_exact_bytes() {
        // {"b": true, "a": -2, "f": 1.5, "s": "x", "l": [1, "y"], "t": {"k": false}}
        let got =
            cbor_of("b = true\na = -2\nf = 1.5\ns = \"x\"\nl = [1, \"y\"]\nt = { k = false }\n");
        let mut want = vec![0xa6];
        want.extend_from_slice(&[0x61, b'b', 0xf5]);
        want.extend_from_slice(&[0x61, b'a', 0x21]);
        want.extend_from_slice(&[0x61, b'f', 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0x61, b's', 0x61, b'x']);
        want.extend_from_slice(&[0x61, b'l', 0x82, 0x01, 0x61, b'y']);
        want.extend_from_slice(&[0x61, b't', 0xa1, 0x61, b'k', 0xf4]);
        assert_eq!(got, want);
        // Integral floats stay float64; big integers use the long forms.
        assert_eq!(
            cbor_of("x = 2.0"),
            [0xa1, 0x61, b'x', 0xfb, 0x40, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            cbor_of("x = 1_000_000"),
            [0xa1, 0x61, b'x', 0x1a, 0x00, 0x0f, 0x42, 0x40]
        );
    }

    #[test]
    fn single_value_cbor() {
        let table: toml::Table =
            toml::from_str("a = \"x\"\nb = [1, 2.0]\nc = { d = true }").unwrap();
        assert_eq!(value_cbor(&table["a"]), [0x61, b'x']);
        assert_eq!(
            value_cbor(&table["b"]),
            [0x82, 0x01, 0xfb, 0x40, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(value_cbor(&table["c"]), [0xa1, 0x61, b'd', 0xf5]);
        // The whole table is the concatenation of its keys and values.
        let mut whole = vec![0xa3];
        for (k, v) in &table {
            cbor::write_text(&mut whole, k);
            whole.extend_from_slice(&value_cbor(v));
        }
        assert_eq!(module_config_cbor(&table), whole);
    }

    #[test]
    fn config_cbor_round_trips_through_serde_cbor() {
        use serde_cbor::Value as V;
        let text = r#"
scale = 1.8
offset = 32
name = "temp"
dt = 1979-05-27T07:32:00Z
local = 1979-05-27
on = true
window = [1, 2.5, "x", [true]]
[fields.temp]
rename = "temp_f"
"#;
        let bytes = cbor_of(text);
        let v: V = serde_cbor::from_slice(&bytes).unwrap();
        let V::Map(m) = v else { panic!("not a map") };
        let get = |k: &str| m.get(&V::Text(k.into())).unwrap().clone();
        assert_eq!(get("scale"), V::Float(1.8));
        assert_eq!(get("offset"), V::Integer(32));
        assert_eq!(get("name"), V::Text("temp".into()));
        assert_eq!(get("dt"), V::Text("1979-05-27T07:32:00Z".into()));
        assert_eq!(get("local"), V::Text("1979-05-27".into()));
        assert_eq!(get("on"), V::Bool(true));
        assert_eq!(
            get("window"),
            V::Array(vec![
                V::Integer(1),
                V::Float(2.5),
                V::Text("x".into()),
                V::Array(vec![V::Bool(true)])
            ])
        );
        let V::Map(fields) = get("fields") else {
            panic!()
        };
        let V::Map(temp) = &fields[&V::Text("temp".into())] else {
            panic!()
        };
        assert_eq!(temp[&V::Text("rename".into())], V::Text("temp_f".into()));

        // Keys appear in document order, not sorted: "scale" comes first.
        assert_eq!(&bytes[..7], &[0xa8, 0x65, b's', b'c', b'a', b'l', b'e']);
    }
}
