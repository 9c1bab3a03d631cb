//! [`Config`], the argument of `init`, and [`Value`], a decoded CBOR item.
//!
//! The host builds the config from the module's TOML `config` table (ABI.md
//! §5): TOML strings, integers, floats, booleans, arrays and tables arrive as
//! CBOR text, int, float64, bool, array and map; datetimes as RFC 3339 text.
//! Every error these helpers return is an [`Error::config`] (code
//! `"bad-config"`) whose message names the offending key by its dotted path,
//! e.g. ``config key `fields.temp.scale`: expected a number, found text "x"``.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A decoded CBOR data item, as found in a [`Config`].
///
/// Maps keep their order; their keys are text (TOML tables have text keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// CBOR `null` / `undefined`.
    Null,
    /// CBOR `true` / `false`.
    Bool(bool),
    /// A CBOR integer (any: -2^64 ..= 2^64 - 1; TOML integers are 64-bit signed).
    Integer(i128),
    /// A CBOR float of any width.
    Float(f64),
    /// CBOR text.
    Text(String),
    /// A CBOR byte string.
    Bytes(Vec<u8>),
    /// A CBOR array.
    Array(Vec<Value>),
    /// A CBOR map with text keys, in order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A short name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "an array",
            Value::Map(_) => "a table",
        }
    }

    /// An integer or a float, as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Integer(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// An integer that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Integer(i) => i64::try_from(i).ok(),
            _ => None,
        }
    }

    /// A non-negative integer that fits `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Integer(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }

    /// Text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An array's items.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A map's entries.
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Decode one complete CBOR data item (any valid encoding; tags are
    /// ignored, map keys must be text or integers, which become text).
    /// Fails with code `"bad-input"`.
    pub fn from_cbor(bytes: &[u8]) -> Result<Value> {
        crate::cbor::decode_value(bytes).map_err(|e| Error::input(format!("not valid CBOR: {e}")))
    }

    /// Encode as deterministic CBOR (floats as float64).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::cbor::Writer(&mut out).value(self);
        out
    }

    /// Deserialize a `T` from this value. On failure returns the error
    /// message and the path of the failing key below this value
    /// (e.g. `"fields.temp.scale"`, `"items[2]"`; empty at the top).
    pub(crate) fn deserialize_into<T: DeserializeOwned>(
        &self,
        base: &str,
    ) -> core::result::Result<T, (String, String)> {
        T::deserialize(ValueDeserializer { value: self }).map_err(|e| e.split(base))
    }
}

impl fmt::Display for Value {
    /// TOML-like rendering, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", crate::ShortF64(*x)),
            Value::Text(s) => write!(f, "\"{s}\""),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, " {k} = {v}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

macro_rules! value_from {
    ($($t:ty => |$x:ident| $e:expr;)*) => {$(
        impl From<$t> for Value {
            fn from($x: $t) -> Self { $e }
        }
    )*};
}

value_from! {
    bool => |x| Value::Bool(x);
    i32 => |x| Value::Integer(x.into());
    i64 => |x| Value::Integer(x.into());
    u32 => |x| Value::Integer(x.into());
    u64 => |x| Value::Integer(x.into());
    i128 => |x| Value::Integer(x);
    f32 => |x| Value::Float(x.into());
    f64 => |x| Value::Float(x);
    &str => |x| Value::Text(x.to_owned());
    String => |x| Value::Text(x);
    Vec<Value> => |x| Value::Array(x);
    Config => |x| Value::Map(x.entries);
}

impl<V: Into<Value>> FromIterator<V> for Value {
    /// An array.
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> Self {
        Value::Array(iter.into_iter().map(Into::into).collect())
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Integer(i) => match i64::try_from(*i) {
                Ok(i) => s.serialize_i64(i),
                Err(_) => match u64::try_from(*i) {
                    Ok(u) => s.serialize_u64(u),
                    Err(_) => s.serialize_i128(*i),
                },
            },
            Value::Float(x) => s.serialize_f64(*x),
            Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CBOR data item")
            }
            fn visit_unit<E>(self) -> core::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> core::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> core::result::Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> core::result::Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> core::result::Result<Value, E> {
                Ok(Value::Integer(i.into()))
            }
            fn visit_u64<E>(self, u: u64) -> core::result::Result<Value, E> {
                Ok(Value::Integer(u.into()))
            }
            fn visit_i128<E>(self, i: i128) -> core::result::Result<Value, E> {
                Ok(Value::Integer(i))
            }
            fn visit_u128<E: de::Error>(self, u: u128) -> core::result::Result<Value, E> {
                i128::try_from(u)
                    .map(Value::Integer)
                    .map_err(|_| E::custom(format!("integer {u} is out of range")))
            }
            fn visit_f64<E>(self, x: f64) -> core::result::Result<Value, E> {
                Ok(Value::Float(x))
            }
            fn visit_str<E>(self, s: &str) -> core::result::Result<Value, E> {
                Ok(Value::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> core::result::Result<Value, E> {
                Ok(Value::Text(s))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> core::result::Result<Value, E> {
                Ok(Value::Bytes(b.to_vec()))
            }
            fn visit_byte_buf<E>(self, b: Vec<u8>) -> core::result::Result<Value, E> {
                Ok(Value::Bytes(b))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> core::result::Result<Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> core::result::Result<Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(k) = map.next_key::<Value>()? {
                    let k = match k {
                        Value::Text(s) => s,
                        Value::Integer(i) => i.to_string(),
                        other => {
                            return Err(de::Error::custom(format!(
                                "map keys must be text, found {}",
                                other.type_name()
                            )));
                        }
                    };
                    out.push((k, map.next_value()?));
                }
                Ok(Value::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The configuration handed to `init`: the module's TOML `config` table as an
/// ordered map, with typed getters whose errors name the key.
///
/// Getters return `Ok(None)` when the key is absent and an
/// [`Error::config`] when it has the wrong type, so defaults read naturally:
///
/// ```
/// use wasmgate_sdk::{Config, Result};
///
/// fn read(config: &Config) -> Result<(u64, f64)> {
///     let window = config.get_u64("window")?.unwrap_or(5);
///     let gain = config.require_f64("gain")?;
///     Ok((window, gain))
/// }
///
/// let config = Config::new().with("gain", 2).with("window", 3);
/// assert_eq!(read(&config).unwrap(), (3, 2.0));
/// let err = read(&Config::new().with("gain", "x")).unwrap_err();
/// assert_eq!(err.code, "bad-config");
/// assert_eq!(err.message, "config key `gain`: expected a number, found text \"x\"");
/// ```
///
/// Or deserialize the whole table into your own struct with
/// [`parse`](Config::parse).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Dotted path of this table inside the module config ("" at the top).
    path: String,
    entries: Vec<(String, Value)>,
}

impl Config {
    /// An empty config (what the host sends when a module has none).
    pub fn new() -> Self {
        Config::default()
    }

    /// Decode the CBOR map `init` receives.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        match crate::cbor::decode_value(bytes) {
            Ok(Value::Map(entries)) => Ok(Config {
                path: String::new(),
                entries,
            }),
            Ok(other) => Err(Error::config(format!(
                "config: expected a table, found {}",
                other.type_name()
            ))),
            Err(e) => Err(Error::config(format!("config: not valid CBOR: {e}"))),
        }
    }

    /// Encode as the CBOR map the host would send.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::cbor::Writer(&mut out).entries(&self.entries);
        out
    }

    /// Builder: set `key` to `value` (replacing an existing entry in place).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Set `key` to `value` (replacing an existing entry in place).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Dotted path of this table in the module config: `""` for the top
    /// level, `"fields.temp"` for a table returned by
    /// `get_table("fields")?…get_table("temp")`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of `key` in this table, for error messages.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An [`Error::config`] about `key`: ``config key `<path>`: <message>``.
    pub fn error(&self, key: &str, message: impl fmt::Display) -> Error {
        Error::config(format!("config key `{}`: {message}", self.key_path(key)))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match conv(v) {
                Some(t) => Ok(Some(t)),
                None => {
                    Err(self.error(key, format_args!("expected {expected}, found {}", found(v))))
                }
            },
        }
    }

    /// A number (integer or float) as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// A non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// An integer.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>> {
        self.typed(key, "an integer", Value::as_i64)
    }

    /// Text.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "text", Value::as_str)
    }

    /// A boolean.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// An array's items.
    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        self.typed(key, "an array", Value::as_array)
    }

    /// A sub-table, as a `Config` whose errors name keys by their full path.
    pub fn get_table(&self, key: &str) -> Result<Option<Config>> {
        self.typed(key, "a table", |v| {
            v.as_map().map(|m| Config {
                path: self.key_path(key),
                entries: m.to_vec(),
            })
        })
    }

    /// Any deserializable type, e.g. `Vec<String>`.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .deserialize_into(&self.key_path(key))
                .map(Some)
                .map_err(config_error),
        }
    }

    /// The error for a missing required key.
    pub fn missing(&self, key: &str) -> Error {
        self.error(key, "missing (required)")
    }

    /// [`get_f64`](Self::get_f64), but the key is required.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.get_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// [`get_u64`](Self::get_u64), but the key is required.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)?.ok_or_else(|| self.missing(key))
    }

    /// [`get_str`](Self::get_str), but the key is required.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// [`get_table`](Self::get_table), but the key is required.
    pub fn require_table(&self, key: &str) -> Result<Config> {
        self.get_table(key)?.ok_or_else(|| self.missing(key))
    }

    /// Fail on a key not in `known` (catches typos such as `sacle = 2`).
    pub fn deny_unknown_keys(&self, known: &[&str]) -> Result<()> {
        match self.keys().find(|k| !known.contains(k)) {
            None => Ok(()),
            Some(k) => {
                let mut expected = String::new();
                for (i, n) in known.iter().enumerate() {
                    expected.push_str(if i == 0 { "" } else { ", " });
                    expected.push_str(n);
                }
                Err(self.error(k, format_args!("unknown key (expected one of: {expected})")))
            }
        }
    }

    /// Deserialize the whole table into `T` (usually a
    /// `#[derive(serde::Deserialize)]` struct; use `#[serde(default)]` for
    /// optional keys and `#[serde(deny_unknown_fields)]` to catch typos).
    ///
    /// ```
    /// use serde::Deserialize;
    /// use wasmgate_sdk::Config;
    ///
    /// #[derive(Deserialize)]
    /// struct Settings {
    ///     field: String,
    ///     #[serde(default = "one")]
    ///     gain: f64,
    /// }
    /// fn one() -> f64 { 1.0 }
    ///
    /// let s: Settings = Config::new().with("field", "temp").parse().unwrap();
    /// assert_eq!((s.field.as_str(), s.gain), ("temp", 1.0));
    ///
    /// let err = Config::new().with("field", "t").with("gain", "high").parse::<Settings>();
    /// assert_eq!(
    ///     err.err().unwrap().message,
    ///     "config key `gain`: invalid type: string \"high\", expected f64",
    /// );
    /// ```
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let map = MapDeserializer {
            iter: self.entries.iter(),
            value: None,
        };
        T::deserialize(de::value::MapAccessDeserializer::new(map))
            .map_err(|e| config_error(e.split(&self.path)))
    }
}

fn found(v: &Value) -> String {
    match v {
        Value::Map(_) | Value::Array(_) | Value::Bytes(_) | Value::Null => v.type_name().to_owned(),
        _ => format!("{} {v}", v.type_name()),
    }
}

/// The [`Error::config`] for a deserialization failure `(path, message)`.
pub(crate) fn config_error((path, message): (String, String)) -> Error {
    if path.is_empty() {
        Error::config(format!("config: {message}"))
    } else {
        Error::config(format!("config key `{path}`: {message}"))
    }
}

// ---------------------------------------------------------------------------
// A serde Deserializer over &Value whose errors remember the key path.

/// Error of [`ValueDeserializer`]: a message and the path segments from the
/// innermost key outwards (`"[2]"` for array items).
#[derive(Debug)]
struct DeError {
    path: Vec<String>,
    message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl core::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: Vec::new(),
            message: msg.to_string(),
        }
    }

    // serde's own messages format `Unexpected` with core's float and `{:?}`
    // machinery (~15 KiB of wasm); these produce the same text without it.
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid type: {}, expected {exp}",
            ShowUnexpected(unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value: {}, expected {exp}",
            ShowUnexpected(unexp)
        ))
    }
}

struct ShowUnexpected<'a>(de::Unexpected<'a>);

impl fmt::Display for ShowUnexpected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use de::Unexpected as U;
        match self.0 {
            U::Bool(b) => write!(f, "boolean `{b}`"),
            U::Unsigned(i) => write!(f, "integer `{i}`"),
            U::Signed(i) => write!(f, "integer `{i}`"),
            U::Float(x) => write!(f, "floating point `{}`", crate::ShortF64(x)),
            U::Char(c) => write!(f, "character `{c}`"),
            U::Str(s) => write!(f, "string \"{s}\""),
            U::Bytes(_) => f.write_str("byte array"),
            U::Unit => f.write_str("unit value"),
            U::Option => f.write_str("Option value"),
            U::NewtypeStruct => f.write_str("newtype struct"),
            U::Seq => f.write_str("sequence"),
            U::Map => f.write_str("map"),
            U::Enum => f.write_str("enum"),
            U::UnitVariant => f.write_str("unit variant"),
            U::NewtypeVariant => f.write_str("newtype variant"),
            U::TupleVariant => f.write_str("tuple variant"),
            U::StructVariant => f.write_str("struct variant"),
            U::Other(other) => f.write_str(other),
        }
    }
}

impl DeError {
    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    /// `(full path below base, message)`.
    fn split(self, base: &str) -> (String, String) {
        let mut path = String::from(base);
        for seg in self.path.iter().rev() {
            if !path.is_empty() && !seg.starts_with('[') {
                path.push('.');
            }
            path.push_str(seg);
        }
        (path, self.message)
    }
}

struct ValueDeserializer<'a> {
    value: &'a Value,
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> core::result::Result<V::Value, DeError> {
        match self.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Integer(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(i), _) => v.visit_i64(i),
                (_, Ok(u)) => v.visit_u64(u),
                _ => v.visit_i128(*i),
            },
            Value::Float(x) => v.visit_f64(*x),
            Value::Text(s) => v.visit_borrowed_str(s),
            Value::Bytes(b) => v.visit_borrowed_bytes(b),
            Value::Array(a) => {
                let mut seq = SeqDeserializer {
                    iter: a.iter().enumerate(),
                };
                let out = v.visit_seq(&mut seq)?;
                match seq.iter.len() {
                    0 => Ok(out),
                    n => Err(de::Error::invalid_length(
                        a.len() - n + 1,
                        &"fewer elements",
                    )),
                }
            }
            Value::Map(m) => v.visit_map(MapDeserializer {
                iter: m.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(
        self,
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        match self.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        match self.value {
            Value::Text(s) => v.visit_enum(s.as_str().into_deserializer()),
            Value::Map(m) if m.len() == 1 => v.visit_enum(EnumDeserializer {
                variant: &m[0].0,
                value: &m[0].1,
            }),
            other => Err(de::Error::custom(format!(
                "expected text or a one-key table, found {}",
                found(other)
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

struct SeqDeserializer<'a> {
    iter: core::iter::Enumerate<core::slice::Iter<'a, Value>>,
}

impl<'de> de::SeqAccess<'de> for SeqDeserializer<'de> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> core::result::Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((i, value)) => seed
                .deserialize(ValueDeserializer { value })
                .map(Some)
                .map_err(|e| e.at(format!("[{i}]"))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDeserializer<'a> {
    iter: core::slice::Iter<'a, (String, Value)>,
    value: Option<(&'a str, &'a Value)>,
}

impl<'de> de::MapAccess<'de> for MapDeserializer<'de> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> core::result::Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.value = Some((k, v));
                seed.deserialize(KeyDeserializer { key: k })
                    .map(Some)
                    .map_err(|e| e.at(k.clone()))
            }
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> core::result::Result<V::Value, DeError> {
        let (k, value) = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before key"))?;
        seed.deserialize(ValueDeserializer { value })
            .map_err(|e| e.at(k.to_owned()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A map key: text, or an integer written as text (`Value` stores integer
/// CBOR keys that way), parsed back when an integer is asked for.
struct KeyDeserializer<'a> {
    key: &'a str,
}

macro_rules! key_ints {
    ($($method:ident $t:ty => $visit:ident,)*) => {$(
        fn $method<V: de::Visitor<'de>>(self, v: V) -> core::result::Result<V::Value, DeError> {
            match self.key.parse::<$t>() {
                Ok(n) => v.$visit(n.into()),
                Err(_) => v.visit_borrowed_str(self.key),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> core::result::Result<V::Value, DeError> {
        v.visit_borrowed_str(self.key)
    }

    key_ints! {
        deserialize_i8 i8 => visit_i64,
        deserialize_i16 i16 => visit_i64,
        deserialize_i32 i32 => visit_i64,
        deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u64,
        deserialize_u16 u16 => visit_u64,
        deserialize_u32 u32 => visit_u64,
        deserialize_u64 u64 => visit_u64,
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        v.visit_enum(self.key.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct EnumDeserializer<'a> {
    variant: &'a str,
    value: &'a Value,
}

impl<'de> de::EnumAccess<'de> for EnumDeserializer<'de> {
    type Error = DeError;
    type Variant = VariantDeserializer<'de>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> core::result::Result<(V::Value, Self::Variant), DeError> {
        let name = seed.deserialize(de::value::BorrowedStrDeserializer::<DeError>::new(
            self.variant,
        ))?;
        Ok((
            name,
            VariantDeserializer {
                name: self.variant,
                value: self.value,
            },
        ))
    }
}

struct VariantDeserializer<'a> {
    name: &'a str,
    value: &'a Value,
}

impl<'de> de::VariantAccess<'de> for VariantDeserializer<'de> {
    type Error = DeError;

    fn unit_variant(self) -> core::result::Result<(), DeError> {
        Err(de::Error::custom(format!(
            "variant `{}` takes no value",
            self.name
        )))
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> core::result::Result<T::Value, DeError> {
        seed.deserialize(ValueDeserializer { value: self.value })
            .map_err(|e| e.at(self.name.to_owned()))
    }

    fn tuple_variant<V: de::Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(ValueDeserializer { value: self.value }, v)
            .map_err(|e| e.at(self.name.to_owned()))
    }

    fn struct_variant<V: de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> core::result::Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(ValueDeserializer { value: self.value }, v)
            .map_err(|e| e.at(self.name.to_owned()))
    }
}
