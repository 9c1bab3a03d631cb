//! `json` and `cbor`: one set of serde visitors serves both, building
//! readings straight from the payload (keys borrowed where possible, field
//! order kept) instead of going through an intermediate value tree.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{Builder, DecodeContext, DecodeError, JsonOptions, is_ts_key, parse_ts, snippet};
use crate::reading::Reading;

pub(super) fn decode_json(
    bytes: &[u8],
    ctx: &DecodeContext<'_>,
    opts: &JsonOptions<'_>,
    out: &mut Vec<Reading>,
) -> Result<(), DecodeError> {
    let slot = Cell::new(None);
    let env = Env {
        ctx,
        opts,
        slot: &slot,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    PayloadSeed { env, out }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| {
            slot.take().unwrap_or_else(|| {
                let msg = e.to_string();
                match e.classify() {
                    serde_json::error::Category::Data => DecodeError::InvalidShape(msg),
                    // serde_json refuses numbers beyond the f64 range.
                    _ if msg.starts_with("number out of range") => DecodeError::NonFinite {
                        field: None,
                        value: format!("the number at column {}", e.column()),
                    },
                    _ => DecodeError::MalformedJson(msg),
                }
            })
        })
}

pub(super) fn decode_cbor(
    bytes: &[u8],
    ctx: &DecodeContext<'_>,
    opts: &JsonOptions<'_>,
    out: &mut Vec<Reading>,
) -> Result<(), DecodeError> {
    let slot = Cell::new(None);
    let env = Env {
        ctx,
        opts,
        slot: &slot,
    };
    let mut de = serde_cbor::Deserializer::from_slice(bytes);
    PayloadSeed { env, out }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| {
            slot.take().unwrap_or_else(|| match e.classify() {
                serde_cbor::error::Category::Data => DecodeError::InvalidShape(e.to_string()),
                _ => DecodeError::MalformedCbor(e.to_string()),
            })
        })
}

/// What every visitor needs: the context, and a slot for the typed error
/// (serde errors carry only a message, so a visitor that refuses a value
/// records the [`DecodeError`] here and returns a placeholder).
#[derive(Clone, Copy)]
struct Env<'e> {
    ctx: &'e DecodeContext<'e>,
    opts: &'e JsonOptions<'e>,
    slot: &'e Cell<Option<DecodeError>>,
}

impl Env<'_> {
    fn fail<E: de::Error>(self, e: DecodeError) -> E {
        // Keep the first error: it is the cause.
        let first = self.slot.take().unwrap_or(e);
        self.slot.set(Some(first));
        E::custom("payload refused")
    }
}

/// The top level: one reading (an object) or a batch (an array).
struct PayloadSeed<'e, 'o> {
    env: Env<'e>,
    out: &'o mut Vec<Reading>,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading (an object) or a batch (an array of objects)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let reading = ReadingSeed { env: self.env }.visit_map(map)?;
        self.out.push(reading);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        while let Some(reading) = seq.next_element_seed(ReadingSeed { env: self.env })? {
            self.out.push(reading);
        }
        if self.out.len() == start {
            return Err(self.env.fail(DecodeError::NoFields { batch: true }));
        }
        Ok(())
    }
}

/// One reading object, flat or structured.
struct ReadingSeed<'e> {
    env: Env<'e>,
}

impl<'de> DeserializeSeed<'de> for ReadingSeed<'_> {
    type Value = Reading;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Reading, D::Error> {
        d.deserialize_map(self)
    }
}

#[derive(PartialEq)]
enum Layout {
    Unknown,
    Flat,
    Structured,
}

impl<'de> Visitor<'de> for ReadingSeed<'_> {
    type Value = Reading;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reading, A::Error> {
        let env = self.env;
        let fail = |e| env.fail::<A::Error>(e);
        let mut b = Builder::new(env.ctx, map.size_hint().unwrap_or(8));
        b.opts = *env.opts;
        let mut layout = Layout::Unknown;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == "sensor" {
                let sensor = map.next_value_seed(TextSeed { env, path: None })?;
                b.sensor(&key, sensor).map_err(fail)?;
            } else if is_ts_key(&key) {
                let ts = map.next_value_seed(TsSeed { env, key: &key })?;
                b.ts(&key, ts).map_err(fail)?;
            } else if key == "fields" {
                match layout {
                    Layout::Structured => return Err(fail(DecodeError::DuplicateKey(key.into()))),
                    Layout::Flat => {
                        return Err(fail(DecodeError::InvalidShape(
                            "key \"fields\" next to top-level fields (use one or the other)".into(),
                        )));
                    }
                    Layout::Unknown => layout = Layout::Structured,
                }
                map.next_value_seed(FieldsSeed { env, b: &mut b })?;
            } else if env.opts.accept_derived && key == "kind" {
                let kind = map.next_value_seed(TextSeed {
                    env,
                    path: Some("kind"),
                })?;
                b.kind(kind).map_err(fail)?;
            } else if env.opts.accept_derived && key == "tags" {
                b.tags(map.next_value_seed(TagsSeed { env })?)
                    .map_err(fail)?;
            } else if env.opts.ignore_keys.contains(&&*key) {
                map.next_value::<de::IgnoredAny>()?;
            } else {
                if layout == Layout::Structured {
                    return Err(fail(DecodeError::InvalidShape(format!(
                        "key {:?} next to \"fields\" (move it inside \"fields\")",
                        snippet(&key)
                    ))));
                }
                layout = Layout::Flat;
                if let Some(v) = map.next_value_seed(NumberSeed { env, field: &key })? {
                    b.field(key, v).map_err(fail)?;
                }
            }
        }
        b.finish().map_err(fail)
    }
}

/// The `fields` object of the structured form.
struct FieldsSeed<'e, 'b> {
    env: Env<'e>,
    b: &'b mut Builder<'e>,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let env = self.env;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(v) = map.next_value_seed(NumberSeed { env, field: &key })? {
                self.b.field(key, v).map_err(|e| env.fail::<A::Error>(e))?;
            }
        }
        Ok(())
    }
}

/// The `tags` object (with [`JsonOptions::accept_derived`]): text → text,
/// in order.
struct TagsSeed<'e> {
    env: Env<'e>,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_> {
    type Value = Vec<(String, String)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings for \"tags\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let env = self.env;
        let mut tags: Vec<(String, String)> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = format!("tags.{key}");
            if tags.iter().any(|(n, _)| *n == *key) {
                return Err(env.fail(DecodeError::DuplicateKey(snippet(&path))));
            }
            let seed = TextSeed {
                env,
                path: Some(&path),
            };
            match map.next_value_seed(seed)? {
                Some(v) => tags.push((key.into_owned(), v)),
                None => return Err(seed.reject(de::Unexpected::Unit)),
            }
        }
        Ok(tags)
    }
}

/// A string value (`sensor`, `kind`, a tag's value); `null` for none.
#[derive(Clone, Copy)]
struct TextSeed<'e, 'p> {
    env: Env<'e>,
    /// Where the value is, for `key "path": <value> is not a string`;
    /// `None` (`sensor`): serde's "invalid type" message instead.
    path: Option<&'p str>,
}

impl TextSeed<'_, '_> {
    fn reject<E: de::Error>(&self, u: de::Unexpected<'_>) -> E {
        let Some(path) = self.path else {
            return E::invalid_type(u, self);
        };
        let value = match u {
            de::Unexpected::Bool(v) => v.to_string(),
            de::Unexpected::Signed(v) => v.to_string(),
            de::Unexpected::Unsigned(v) => v.to_string(),
            de::Unexpected::Float(v) => v.to_string(),
            de::Unexpected::Unit => "null".to_string(),
            de::Unexpected::Map => "an object".to_string(),
            de::Unexpected::Seq => "an array".to_string(),
            _ => "a byte string".to_string(),
        };
        self.env.fail(DecodeError::InvalidShape(format!(
            "key {:?}: {value} is not a string",
            snippet(path)
        )))
    }
}

impl<'de> DeserializeSeed<'de> for TextSeed<'_, '_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed<'_, '_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.path {
            Some(_) => "a string",
            None => "a sensor id (a string)",
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(self.reject(de::Unexpected::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(self.reject(de::Unexpected::Signed(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(self.reject(de::Unexpected::Unsigned(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.reject(de::Unexpected::Float(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Err(self.reject(de::Unexpected::Bytes(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.reject(de::Unexpected::Map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(self.reject(de::Unexpected::Seq))
    }
}

/// A map key, borrowed from the payload when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a text key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A `ts` / `timestamp` value: integer ms or a timestamp string; `null` for
/// absent.
struct TsSeed<'e, 'k> {
    env: Env<'e>,
    key: &'k str,
}

impl TsSeed<'_, '_> {
    fn bad<E: de::Error>(&self, value: String) -> E {
        self.env.fail(DecodeError::BadTimestamp {
            key: snippet(self.key),
            value,
        })
    }
}

impl<'de> DeserializeSeed<'de> for TsSeed<'_, '_> {
    type Value = Option<i64>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TsSeed<'_, '_> {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp (integer epoch milliseconds or a date-time string)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(self.bad(v.to_string())),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Err(self.bad(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Err(self.bad(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.bad(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(self.bad(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match parse_ts(self.key, v) {
            Ok(ts) => Ok(Some(ts)),
            Err(e) => Err(self.env.fail(e)),
        }
    }

    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<Self::Value, E> {
        Err(self.bad("a byte string".into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.bad("an object".into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(self.bad("an array".into()))
    }
}

/// A field value: a number or a boolean; `null` for absent.
struct NumberSeed<'e, 'k> {
    env: Env<'e>,
    field: &'k str,
}

impl NumberSeed<'_, '_> {
    fn nan<E: de::Error>(&self, value: String) -> E {
        self.env.fail(DecodeError::NotANumber {
            field: snippet(self.field),
            value,
        })
    }
}

impl<'de> DeserializeSeed<'de> for NumberSeed<'_, '_> {
    type Value = Option<f64>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed<'_, '_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(if v { 1.0 } else { 0.0 }))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Non-finite values are refused by `Builder::field`.
        Ok(Some(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(self.nan(format!("{:?}", snippet(v))))
    }

    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<Self::Value, E> {
        Err(self.nan("a byte string".into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.nan("an object".into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(self.nan("an array".into()))
    }
}
