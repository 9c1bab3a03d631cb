//! The daemon's own configuration sections — `[gateway]`, `[mqtt]`,
//! `[storage]`, `[http]`, `[log]`, `[sources.*]` — parsed by
//! [`crate::config`]. Every struct refuses unknown keys; every default is
//! stated on its field and in `daemon/config/wasmgate.toml`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::sources::QueueFullPolicy;
use crate::sources::decode::PayloadFormat;
use crate::sources::i2c::I2cSensorConfig;
use crate::sources::serial::SerialSourceConfig;

/// `[gateway]`: who this gateway is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gateway id: a topic segment (`[A-Za-z0-9_-]`). Default: the host
    /// name, with other characters replaced by `-`.
    pub id: String,
    /// Prefix of every topic wasmgate publishes. Default: `wasmgate`.
    pub topic_prefix: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: default_gateway_id(),
            topic_prefix: "wasmgate".into(),
        }
    }
}

/// The host name as a topic-safe gateway id.
pub fn default_gateway_id() -> String {
    let raw = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gateway".into());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl GatewayConfig {
    /// Check the id and prefix; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::config::is_valid_stream_name(&self.id) {
            return Err(format!(
                "id {:?}: use only letters, digits, `_` and `-` (it is a topic segment)",
                self.id
            ));
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.contains(['+', '#'])
            || self.topic_prefix.starts_with('/')
            || self.topic_prefix.ends_with('/')
        {
            return Err(format!(
                "topic_prefix {:?}: must be non-empty, without wildcards or leading/trailing `/`",
                self.topic_prefix
            ));
        }
        Ok(())
    }
}

/// `[mqtt]`: the broker that MQTT sources subscribe to, and (unless
/// `[uplink.broker]` names another) the one the outbox is published to, on
/// a second connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host. Default: `localhost`.
    pub host: String,
    /// Broker port. Default: 1883 (8883 is usual with TLS).
    pub port: u16,
    /// Client id. Default: `wasmgate-<gateway id>`.
    pub client_id: Option<String>,
    /// User name. Default: none.
    pub username: Option<String>,
    /// Password. Prefer `password_file`. Default: none.
    pub password: Option<String>,
    /// File holding the password (first line). Default: none.
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval, seconds. Default: 30.
    pub keepalive_secs: u64,
    /// Largest packet sent or accepted, bytes. Default: 262 144.
    pub max_packet_bytes: usize,
    /// Start a clean session on connect. Default: false — the broker keeps
    /// the subscriptions and every unacknowledged QoS 1 message while the
    /// gateway is down or restarting, and redelivers them; messages are
    /// acknowledged only once their results are on disk. Ignored for the
    /// uplink connection, whose session is the outbox.
    pub clean_session: bool,
    /// Wait between reconnection attempts grows from this, ms. Default: 500.
    pub reconnect_min_ms: u64,
    /// … up to this, ms. Default: 30 000.
    pub reconnect_max_ms: u64,
    /// TLS (rustls). Default: plain TCP.
    pub tls: Option<TlsConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "localhost".into(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            keepalive_secs: 30,
            max_packet_bytes: 256 * 1024,
            clean_session: false,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            tls: None,
        }
    }
}

impl MqttConfig {
    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("host must not be empty".into());
        }
        if self.port == 0 {
            return Err("port must not be 0".into());
        }
        if !(5..=3600).contains(&self.keepalive_secs) {
            return Err("keepalive_secs must be within 5 ..= 3600".into());
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_packet_bytes) {
            return Err("max_packet_bytes must be within 1024 ..= 268435456".into());
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("give password or password_file, not both".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err("reconnect_min_ms must be > 0 and ≤ reconnect_max_ms".into());
        }
        Ok(())
    }
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) to trust (required).
    pub ca_file: PathBuf,
    /// PEM client certificate, for mutual TLS. Default: none.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`. Default: none.
    pub client_key: Option<PathBuf>,
}

/// `[storage]`: where state lives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the sled database (outbox, processor and detector
    /// state). Default: `/var/lib/wasmgate`.
    pub path: PathBuf,
    /// sled page-cache size, bytes (sled's own default is 1 GiB). Default: 4 MiB.
    pub cache_bytes: u64,
    /// How often detector state is written, ms. Default: 5 000.
    pub detector_flush_ms: u64,
    /// sled's background flush interval, ms: bounds how much processor and
    /// detector state a power cut can take back. The outbox does not depend
    /// on it (its group commits flush explicitly). Default: 1 000.
    pub flush_every_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("/var/lib/wasmgate"),
            cache_bytes: 4 << 20,
            detector_flush_ms: 5_000,
            flush_every_ms: 1_000,
        }
    }
}

impl StorageConfig {
    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !((256 << 10)..=(1 << 30)).contains(&self.cache_bytes) {
            return Err("cache_bytes must be within 262144 ..= 1073741824".into());
        }
        if self.detector_flush_ms < 100 {
            return Err("detector_flush_ms must be at least 100".into());
        }
        if !(10..=60_000).contains(&self.flush_every_ms) {
            return Err("flush_every_ms must be within 10 ..= 60000".into());
        }
        Ok(())
    }
}

/// `[http]`: the local health and metrics endpoint. Reserved: the endpoint
/// itself arrives with the operations release; the address is validated now
/// so configurations written today keep working.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default: `127.0.0.1:9810` (loopback only).
    pub listen: std::net::SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9810)),
        }
    }
}

/// `[log]`: what `wasmgate run` logs and where. The `WASMGATE_LOG`
/// environment variable wins over `level`, `--log-format` over `format`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
    /// comma-separated per-module directives in `tracing`'s `EnvFilter`
    /// syntax, e.g. `info,wasmgate::ota=debug,rumqttc=warn`. Default: `info`.
    pub level: String,
    /// Where logs go. Default: `auto`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

impl LogConfig {
    /// Check the filter; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        check_log_filter(&self.level).map_err(|m| format!("level: {m}"))
    }
}

/// Check a log filter (`[log] level`, `WASMGATE_LOG`): `EnvFilter` syntax,
/// where a bare word must be a level. `EnvFilter` itself reads a bare word as
/// a module name, so a misspelt level would silently turn logging off.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    if filter.trim().is_empty() {
        return Err("empty; give a level such as \"info\"".into());
    }
    for directive in filter.split(',').map(str::trim) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| directive.eq_ignore_ascii_case(l)) {
            return Err(format!(
                "{directive:?} is not a level ({}); per-module directives are MODULE=LEVEL",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| format!("{filter:?}: {e}"))
}

/// Log output formats (`[log] format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The journal when systemd connected stderr to it (`$JOURNAL_STREAM`),
    /// else `text`.
    #[default]
    Auto,
    /// Human-readable lines on stderr (coloured on a terminal).
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Native journal entries, key/value pairs as `F_*` fields; `text` on
    /// stderr (with a warning) when the journal cannot be reached.
    Journald,
}

/// `[sources.<name>]`: one input, by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// Messages from the `[mqtt]` broker.
    Mqtt(MqttSourceConfig),
    /// Lines from a serial port.
    Serial(SerialSourceConfig),
    /// A polled I²C sensor.
    I2c(I2cSensorConfig),
}

impl SourceConfig {
    /// Check the source's keys; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SourceConfig::Mqtt(c) => c.validate(),
            SourceConfig::Serial(c) => c.validate(),
            SourceConfig::I2c(c) => c.validate().map_err(|e| e.to_string()),
        }
    }
}

/// `type = "mqtt"`: subscribe to topics on the `[mqtt]` broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Topic filters (`+` and `#` wildcards), at least one.
    pub topics: Vec<String>,
    /// Payload format. Default: `json`.
    #[serde(default = "default_json")]
    pub format: PayloadFormat,
    /// Take the sensor id from this topic segment (0-based); without it the
    /// whole topic is the sensor id. A `sensor` in the payload wins.
    #[serde(default)]
    pub sensor_segment: Option<usize>,
    /// Field name for plain-number payloads. Default: `value`.
    #[serde(default = "default_field")]
    pub field: String,
    /// Column names for `csv` payloads.
    #[serde(default)]
    pub csv_columns: Vec<String>,
    /// Subscription QoS, 0 or 1. Default: 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// When the queue to the streams is full. Default: `block`.
    #[serde(default)]
    pub queue_full: QueueFullPolicy,
}

fn default_json() -> PayloadFormat {
    PayloadFormat::Json
}
fn default_field() -> String {
    "value".into()
}
fn default_qos() -> u8 {
    1
}

impl MqttSourceConfig {
    /// Check filters and QoS; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("topics: give at least one topic filter".into());
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !rumqttc::valid_filter(t) {
                return Err(format!(
                    "topics[{i}]: {t:?} is not a valid MQTT topic filter"
                ));
            }
        }
        if self.qos > 1 {
            return Err("qos must be 0 or 1".into());
        }
        if self.format == PayloadFormat::Csv && self.csv_columns.is_empty() {
            return Err("csv_columns: required with format = \"csv\"".into());
        }
        Ok(())
    }
}
