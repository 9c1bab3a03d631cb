//! Payload decoders shared by the MQTT and serial sources: bytes in one of a
//! few formats → [`Reading`]s.
//!
//! [`decode`] appends the readings of one payload (an MQTT message, a serial
//! line) to a caller-owned `Vec`. Malformed input is never fatal: it is a
//! [`DecodeError`] whose [`reason`](DecodeError::reason) label the source
//! counts, and nothing is appended — a payload is decoded whole or not at all.
//!
//! | format | shape | example payload |
//! |---|---|---|
//! | `json` | object of fields | `{"temp": 21.5, "hum": 40}` |
//! | `json` | structured reading | `{"sensor": "s1", "ts": 1714564800000, "fields": {"temp": 21.5}}` |
//! | `json` | batch: array of either | `[{"temp": 21.5}, {"temp": 21.7, "ts": "2024-05-01T12:00:10Z"}]` |
//! | `cbor` | the `json` shapes, CBOR-encoded | `a1 64 74 65 6d 70 f9 4d 60` (hex; `{"temp": 21.5}`) |
//! | `number` | one number as text, field named by the source (default `value`) | `21.5` |
//! | `csv` | one line, cells matched by position to the source's columns | `1714564800000,s1,21.5,40` (columns `ts,sensor,temp,hum`) |
//! | `csv` | empty cell = absent | `,,21.5,` (same columns) |
//! | `key-value` | `key=value`, separated by spaces | `temp=21.5 hum=40` |
//! | `key-value` | … or by commas | `temp=21.5,hum=40` |
//! | `key-value` | `key:value`, separated by semicolons | `temp:21.5;hum:40` |
//! | `key-value` | with sensor and time | `sensor=s1 ts=2024-05-01T12:00:00Z temp=21.5` |
//!
//! # Rules for every format
//!
//! - **Special keys.** `sensor` names the sensor and `ts` or `timestamp`
//!   gives the time; every other key (JSON/CBOR key, CSV column, key-value
//!   key) is a numeric field. JSON, CBOR and key-value keys are
//!   case-sensitive; CSV column names are matched ASCII case-insensitively.
//! - **Sensor.** A sensor named in the payload wins; otherwise the source's
//!   (the MQTT topic segment, the serial port's configuration); with neither,
//!   `missing-sensor`. A sensor id must be non-empty, at most 256 bytes, and
//!   free of control characters.
//! - **Time.** Without a timestamp in the payload a reading gets the receive
//!   time. Timestamps are integer milliseconds since the Unix epoch (always
//!   milliseconds, whatever the magnitude), RFC 3339 (`2024-05-01T12:00:00Z`,
//!   `…+02:00`), or `YYYY-MM-DD HH:MM:SS` taken as UTC — see
//!   [`parse_timestamp`]. Key-value values end at a space, so there use the
//!   `T` form or milliseconds.
//! - **Fields** keep the payload's order. Values must be finite numbers: a
//!   string is `not-a-number` (there is no silent skipping of extra keys: a
//!   payload carrying metadata the gateway does not understand is refused,
//!   so mistakes show up in the metrics); NaN, infinities and JSON numbers
//!   beyond the `f64` range are `non-finite`. In JSON and CBOR `true`/`false`
//!   are 1 and 0 and `null` means absent; in CSV an empty cell means absent.
//!   A field name must be non-empty, at most 256 bytes, without control
//!   characters, and appear once. A reading with no fields is refused
//!   (`no-fields`), as is one with more than `max_fields` (`too-many-fields`).
//! - **Whitespace.** Text formats (all but CBOR) ignore leading and trailing
//!   whitespace, including CR and LF; an empty payload is `empty-payload`.
//!   CBOR is binary and taken as is. A payload longer than `max_bytes` is
//!   `too-large` before anything else is looked at.
//!
//! # Formats in detail
//!
//! - **json / cbor.** A *flat* object: every key but `sensor`, `ts`,
//!   `timestamp` is a field. A *structured* object: `sensor`, `ts` (or
//!   `timestamp`) and `fields`, an object of fields; a field key next to
//!   `fields` is `invalid-shape`. A batch is an array of such objects, each
//!   with its own sensor and time; an empty batch is `no-fields`. Other keys
//!   (`kind`, `tags`, …) are not special. CBOR tags are ignored (a tagged
//!   epoch time is still read as milliseconds); map keys must be text.
//!   JSON has no literal for NaN, so `NaN` is `malformed-json`.
//! - **Extensions** ([`JsonOptions`], off in [`decode`], which the sources
//!   use; `wasmgate replay` reads its JSON Lines with [`decode_with`] and
//!   all of them on): `kind` and `tags` keys, skipped keys, a required
//!   timestamp, readings without fields.
//! - **number.** Rust's `f64` syntax: `21.5`, `-4`, `+1e3`, `.5`.
//! - **csv.** Cells are separated by `,`; a cell may be quoted (`"…"`, with
//!   `""` for a quote inside) and is trimmed. There must be exactly as many
//!   cells as configured columns (`column-count`); a quote inside an
//!   unquoted cell, text after a closing quote, an unterminated quote or a
//!   line break outside quotes (one record per payload) is `malformed-csv`.
//!   Empty `ts` / `sensor` cells fall back to the receive time / the
//!   source's sensor.
//! - **key-value.** `key=value` or `key:value` (spaces or tabs allowed around
//!   the `=` / `:`); pairs separated by any run of whitespace, `,` or `;`.
//!   A value runs to the next separator, so it cannot contain spaces,
//!   commas or semicolons; `:` inside a value is fine
//!   (`ts:2024-05-01T12:00:00Z`). A token without `=`/`:`, an empty key or
//!   an empty value is `malformed-key-value`.
//!
//! # Layout
//!
//! ```text
//! mod.rs        the API, errors, and the checks every format shares
//! text.rs       number, csv, key-value
//! json_cbor.rs  json and cbor: serde visitors shared by both
//! tests.rs      happy paths, every error reason, garbage input
//! ```
//!
//! # Cost
//!
//! The hot path allocates only what the readings keep: each sensor id and
//! field name `String` and each reading's field `Vec` (plus an owned key
//! when a JSON key contains escapes). Error values allocate their message.

mod json_cbor;
#[cfg(test)]
mod tests;
mod text;

use std::borrow::Cow;
use std::fmt;

use crate::reading::Reading;
use crate::replay::input::parse_timestamp;
use crate::runtime::wire::MAX_SENSOR_LEN;

/// Default cap on the fields of one reading ([`DecodeContext::max_fields`]).
pub const DEFAULT_MAX_FIELDS: usize = 64;
/// Default cap on the size of one payload ([`DecodeContext::max_bytes`]).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Longest field name, bytes (the same as the longest sensor id).
pub const MAX_FIELD_NAME_LEN: usize = 256;

/// Longest value quoted in an error message, bytes.
const SNIPPET_LEN: usize = 64;

/// The encoding of a payload (configuration: `json`, `cbor`, `number`,
/// `csv`, `key-value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// A JSON object of fields, the structured form, or an array of either.
    Json,
    /// The shapes of [`PayloadFormat::Json`], CBOR-encoded.
    Cbor,
    /// A single number as text.
    Number,
    /// One line of comma-separated values, matched to configured columns.
    Csv,
    /// `key=value` / `key:value` pairs.
    KeyValue,
}

impl PayloadFormat {
    /// Every format, in documentation order.
    pub const ALL: [PayloadFormat; 5] = [
        PayloadFormat::Json,
        PayloadFormat::Cbor,
        PayloadFormat::Number,
        PayloadFormat::Csv,
        PayloadFormat::KeyValue,
    ];

    /// The configuration name: `json`, `cbor`, `number`, `csv`, `key-value`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Cbor => "cbor",
            PayloadFormat::Number => "number",
            PayloadFormat::Csv => "csv",
            PayloadFormat::KeyValue => "key-value",
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a source knows about a payload besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// Sensor id from the topic segment or port configuration; the default
    /// when the payload names none.
    pub sensor: Option<&'a str>,
    /// Receive time, ms since the Unix epoch; used when the payload carries
    /// no timestamp.
    pub receive_ts: i64,
    /// Field name for [`PayloadFormat::Number`] payloads.
    pub field: &'a str,
    /// Column names for [`PayloadFormat::Csv`] lines; `ts`, `timestamp` and
    /// `sensor` (ASCII case-insensitive) are special.
    pub csv_columns: &'a [String],
    /// Most fields in one reading.
    pub max_fields: usize,
    /// Largest payload, bytes.
    pub max_bytes: usize,
}

impl<'a> DecodeContext<'a> {
    /// A context with no sensor, field `value`, no CSV columns and the
    /// default caps.
    pub fn new(receive_ts: i64) -> Self {
        DecodeContext {
            sensor: None,
            receive_ts,
            field: "value",
            csv_columns: &[],
            max_fields: DEFAULT_MAX_FIELDS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Extensions of the `json` and `cbor` formats (other formats ignore
/// them); all off by default, as the MQTT and serial sources use them.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions<'a> {
    /// Accept `kind` (a string; `null` for none) and `tags` (an object of
    /// strings) next to the fields, in the flat and the structured form.
    /// Other value types are `invalid-shape`.
    pub accept_derived: bool,
    /// Keys skipped together with their value, whatever it is.
    pub ignore_keys: &'a [&'a str],
    /// A reading without a timestamp (or with `null`) is `invalid-shape`
    /// instead of getting the receive time.
    pub require_ts: bool,
    /// A reading without fields is accepted instead of `no-fields` (an
    /// empty batch still is `no-fields`).
    pub allow_no_fields: bool,
}

/// Why a payload was refused. [`DecodeError::reason`] is the metrics label;
/// the message (`Display`) says what and where, quoting at most 64 bytes of
/// the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `too-large`: the payload exceeds [`DecodeContext::max_bytes`].
    #[error("payload is {len} bytes, limit {max}")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// `empty-payload`: nothing but whitespace.
    #[error("empty payload")]
    EmptyPayload,
    /// `not-utf8`: a text format whose bytes are not UTF-8.
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    /// `malformed-json`: not JSON at all (syntax, truncation, trailing data).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// `malformed-cbor`: not CBOR at all (syntax, truncation, trailing data).
    #[error("malformed CBOR: {0}")]
    MalformedCbor(String),
    /// `malformed-csv`: bad quoting, or more than one line.
    #[error("malformed CSV: {0}")]
    MalformedCsv(&'static str),
    /// `malformed-key-value`: a token that is not `key=value` / `key:value`.
    #[error("malformed key-value pair {0:?} (expected key=value or key:value)")]
    MalformedKeyValue(String),
    /// `invalid-shape`: valid JSON/CBOR that is not a reading or a batch.
    #[error("{0}")]
    InvalidShape(String),
    /// `not-a-number`: a field value that is not a number.
    #[error("field {field:?}: {value} is not a number")]
    NotANumber {
        /// The field.
        field: String,
        /// The value, quoted if it is text.
        value: String,
    },
    /// `non-finite`: NaN, an infinity, or a number beyond the `f64` range.
    #[error("{}{value} is not a finite number", field_prefix(.field))]
    NonFinite {
        /// The field, when known.
        field: Option<String>,
        /// The value as written.
        value: String,
    },
    /// `bad-timestamp`: a `ts` / `timestamp` in none of the accepted forms.
    #[error(
        "{key:?}: {value} is not a timestamp (expected integer epoch milliseconds, RFC 3339 or \"YYYY-MM-DD HH:MM:SS\")"
    )]
    BadTimestamp {
        /// The key or column.
        key: String,
        /// The value, quoted if it is text.
        value: String,
    },
    /// `missing-sensor`: neither the payload nor the source names a sensor.
    #[error("no sensor id: the payload names none and the source has none")]
    MissingSensor,
    /// `invalid-sensor`: an empty, too long or control-character sensor id.
    #[error(
        "sensor id {sensor:?} {problem} (non-empty, at most {MAX_SENSOR_LEN} bytes, no control characters)"
    )]
    InvalidSensor {
        /// The id (truncated).
        sensor: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `invalid-field-name`: an empty, too long or control-character name.
    #[error(
        "field name {name:?} {problem} (non-empty, at most {MAX_FIELD_NAME_LEN} bytes, no control characters)"
    )]
    InvalidFieldName {
        /// The name (truncated).
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `duplicate-key`: a field, `sensor` or timestamp given twice.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    /// `too-many-fields`: more than [`DecodeContext::max_fields`].
    #[error("more than {max} fields in one reading")]
    TooManyFields {
        /// The cap.
        max: usize,
    },
    /// `no-fields`: a reading without fields, or an empty batch.
    #[error("{}", if *.batch { "empty batch: no readings" } else { "reading has no fields" })]
    NoFields {
        /// An empty JSON/CBOR array rather than a reading.
        batch: bool,
    },
    /// `column-count`: a CSV line with more or fewer cells than columns.
    #[error("expected {expected} CSV cells (one per configured column), found {found}")]
    ColumnCount {
        /// Configured columns.
        expected: usize,
        /// Cells in the line.
        found: usize,
    },
}

impl DecodeError {
    /// Every [`reason`](DecodeError::reason) label, e.g. to register the
    /// metric counters up front.
    pub const REASONS: [&'static str; 18] = [
        "too-large",
        "empty-payload",
        "not-utf8",
        "malformed-json",
        "malformed-cbor",
        "malformed-csv",
        "malformed-key-value",
        "invalid-shape",
        "not-a-number",
        "non-finite",
        "bad-timestamp",
        "missing-sensor",
        "invalid-sensor",
        "invalid-field-name",
        "duplicate-key",
        "too-many-fields",
        "no-fields",
        "column-count",
    ];

    /// The metrics label for this error (one of [`DecodeError::REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too-large",
            DecodeError::EmptyPayload => "empty-payload",
            DecodeError::NotUtf8 => "not-utf8",
            DecodeError::MalformedJson(_) => "malformed-json",
            DecodeError::MalformedCbor(_) => "malformed-cbor",
            DecodeError::MalformedCsv(_) => "malformed-csv",
            DecodeError::MalformedKeyValue(_) => "malformed-key-value",
            DecodeError::InvalidShape(_) => "invalid-shape",
            DecodeError::NotANumber { .. } => "not-a-number",
            DecodeError::NonFinite { .. } => "non-finite",
            DecodeError::BadTimestamp { .. } => "bad-timestamp",
            DecodeError::MissingSensor => "missing-sensor",
            DecodeError::InvalidSensor { .. } => "invalid-sensor",
            DecodeError::InvalidFieldName { .. } => "invalid-field-name",
            DecodeError::DuplicateKey(_) => "duplicate-key",
            DecodeError::TooManyFields { .. } => "too-many-fields",
            DecodeError::NoFields { .. } => "no-fields",
            DecodeError::ColumnCount { .. } => "column-count",
        }
    }
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(f) => format!("field {f:?}: "),
        None => String::new(),
    }
}

/// Decode one `payload` in `format`, appending its readings to `out`.
///
/// Returns how many readings were appended (one, or a batch's length for
/// JSON/CBOR arrays). On error nothing is appended. Never panics.
pub fn decode(
    format: PayloadFormat,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
    out: &mut Vec<Reading>,
) -> Result<usize, DecodeError> {
    decode_with(format, payload, ctx, &JsonOptions::default(), out)
}

/// [`decode`] with the JSON/CBOR extensions `opts`.
pub fn decode_with(
    format: PayloadFormat,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
    opts: &JsonOptions<'_>,
    out: &mut Vec<Reading>,
) -> Result<usize, DecodeError> {
    let start = out.len();
    match decode_into(format, payload, ctx, opts, out) {
        Ok(()) => Ok(out.len() - start),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn decode_into(
    format: PayloadFormat,
    payload: &[u8],
    ctx: &DecodeContext<'_>,
    opts: &JsonOptions<'_>,
    out: &mut Vec<Reading>,
) -> Result<(), DecodeError> {
    if payload.len() > ctx.max_bytes {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            max: ctx.max_bytes,
        });
    }
    if payload.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    let reading = match format {
        // Binary: taken as is.
        PayloadFormat::Cbor => return json_cbor::decode_cbor(payload, ctx, opts, out),
        PayloadFormat::Json => return json_cbor::decode_json(trim(payload)?, ctx, opts, out),
        PayloadFormat::Number => text::decode_number(utf8(trim(payload)?)?, ctx)?,
        PayloadFormat::Csv => text::decode_csv(utf8(trim(payload)?)?, ctx)?,
        PayloadFormat::KeyValue => text::decode_key_value(utf8(trim(payload)?)?, ctx)?,
    };
    out.push(reading);
    Ok(())
}

/// A text payload without leading and trailing whitespace; never empty.
fn trim(payload: &[u8]) -> Result<&[u8], DecodeError> {
    match payload.trim_ascii() {
        [] => Err(DecodeError::EmptyPayload),
        trimmed => Ok(trimmed),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
}

// ---------------------------------------------------------------------------
// One reading under construction (every format)

/// Collects one reading's parts and enforces the rules common to all
/// formats: no duplicates, name checks, the field cap.
struct Builder<'c> {
    ctx: &'c DecodeContext<'c>,
    sensor: Option<String>,
    sensor_seen: bool,
    ts: Option<i64>,
    ts_seen: bool,
    fields: Vec<(String, f64)>,
    kind: Option<String>,
    kind_seen: bool,
    tags: Option<Vec<(String, String)>>,
    opts: JsonOptions<'c>,
}

impl<'c> Builder<'c> {
    fn new(ctx: &'c DecodeContext<'c>, capacity: usize) -> Self {
        Builder {
            ctx,
            sensor: None,
            sensor_seen: false,
            ts: None,
            ts_seen: false,
            // `capacity` may come from an untrusted length prefix (CBOR).
            fields: Vec::with_capacity(capacity.min(ctx.max_fields).min(DEFAULT_MAX_FIELDS)),
            kind: None,
            kind_seen: false,
            tags: None,
            opts: JsonOptions::default(),
        }
    }

    fn kind(&mut self, kind: Option<String>) -> Result<(), DecodeError> {
        if std::mem::replace(&mut self.kind_seen, true) {
            return Err(DecodeError::DuplicateKey("kind".into()));
        }
        self.kind = kind;
        Ok(())
    }

    fn tags(&mut self, tags: Vec<(String, String)>) -> Result<(), DecodeError> {
        if self.tags.replace(tags).is_some() {
            return Err(DecodeError::DuplicateKey("tags".into()));
        }
        Ok(())
    }

    fn sensor(&mut self, key: &str, sensor: Option<String>) -> Result<(), DecodeError> {
        if self.sensor_seen {
            return Err(DecodeError::DuplicateKey(snippet(key)));
        }
        self.sensor_seen = true;
        self.sensor = sensor;
        Ok(())
    }

    fn ts(&mut self, key: &str, ts: Option<i64>) -> Result<(), DecodeError> {
        if self.ts_seen {
            return Err(DecodeError::DuplicateKey(snippet(key)));
        }
        self.ts_seen = true;
        self.ts = ts;
        Ok(())
    }

    fn field(&mut self, name: Cow<'_, str>, value: f64) -> Result<(), DecodeError> {
        if let Some(problem) = name_problem(&name, MAX_FIELD_NAME_LEN) {
            return Err(DecodeError::InvalidFieldName {
                name: snippet(&name),
                problem,
            });
        }
        if self.fields.iter().any(|(n, _)| *n == *name) {
            return Err(DecodeError::DuplicateKey(snippet(&name)));
        }
        if self.fields.len() >= self.ctx.max_fields {
            return Err(DecodeError::TooManyFields {
                max: self.ctx.max_fields,
            });
        }
        if !value.is_finite() {
            return Err(DecodeError::NonFinite {
                field: Some(snippet(&name)),
                value: value.to_string(),
            });
        }
        self.fields.push((name.into_owned(), value));
        Ok(())
    }

    fn finish(self) -> Result<Reading, DecodeError> {
        if self.opts.require_ts && self.ts.is_none() {
            return Err(DecodeError::InvalidShape(
                "missing key \"ts\" (or \"timestamp\")".into(),
            ));
        }
        if self.fields.is_empty() && !self.opts.allow_no_fields {
            return Err(DecodeError::NoFields { batch: false });
        }
        let sensor = match self.sensor {
            Some(s) => s,
            None => self
                .ctx
                .sensor
                .ok_or(DecodeError::MissingSensor)?
                .to_string(),
        };
        if let Some(problem) = name_problem(&sensor, MAX_SENSOR_LEN) {
            return Err(DecodeError::InvalidSensor {
                sensor: snippet(&sensor),
                problem,
            });
        }
        Ok(Reading {
            sensor,
            ts: self.ts.unwrap_or(self.ctx.receive_ts),
            fields: self.fields,
            kind: self.kind,
            tags: self.tags.unwrap_or_default(),
        })
    }
}

/// What is wrong with a sensor id or field name, if anything.
fn name_problem(s: &str, max: usize) -> Option<&'static str> {
    if s.is_empty() {
        Some("is empty")
    } else if s.len() > max {
        Some("is too long")
    } else if s.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// At most [`SNIPPET_LEN`] bytes of `s` (cut at a character boundary), for
/// an error message about untrusted input.
fn snippet(s: &str) -> String {
    if s.len() <= SNIPPET_LEN {
        return s.to_string();
    }
    let mut end = SNIPPET_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A field value written as text (CSV, key-value, number).
fn parse_number(field: &str, text: &str) -> Result<f64, DecodeError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(DecodeError::NonFinite {
            field: Some(snippet(field)),
            value: snippet(text),
        }),
        Err(_) => Err(DecodeError::NotANumber {
            field: snippet(field),
            value: format!("{:?}", snippet(text)),
        }),
    }
}

/// A timestamp written as text (CSV, key-value, JSON/CBOR strings).
fn parse_ts(key: &str, text: &str) -> Result<i64, DecodeError> {
    parse_timestamp(text.trim()).ok_or_else(|| DecodeError::BadTimestamp {
        key: snippet(key),
        value: format!("{:?}", snippet(text)),
    })
}

fn is_ts_key(key: &str) -> bool {
    key == "ts" || key == "timestamp"
}
