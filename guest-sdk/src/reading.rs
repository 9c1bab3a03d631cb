//! [`Reading`], the unit of work that flows in and out of every processor.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// One sensor reading (WIT record `reading`, ABI.md §5).
///
/// The same type is a processor's input and its output, so processors chain.
/// Field and tag order is preserved end to end: on the wire both are CBOR
/// maps written in `Vec` order.
///
/// ```
/// use wasmgate_sdk::Reading;
///
/// let r = Reading::new("greenhouse/bme280-1", 1_700_000_000_000)
///     .with_field("temp", 21.5)
///     .with_field("hum", 48.0)
///     .with_tag("room", "north");
/// assert_eq!(r.field("temp"), Some(21.5));
/// assert_eq!(r.tag("room"), Some("north"));
/// assert_eq!(r.kind, None);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Sensor id, e.g. `"greenhouse/bme280-1"` (the host caps it at 256 bytes).
    pub sensor: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Numeric fields in order (the host caps them at 256 entries).
    #[serde(with = "ordered_map")]
    pub fields: Vec<(String, f64)>,
    /// What this reading is: `None` for a plain measurement; processors set it
    /// for derived records, e.g. `"alert"`, `"stats"` (at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free-form labels in order, usually empty (at most 32 entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "ordered_map")]
    pub tags: Vec<(String, String)>,
}

impl Reading {
    /// A plain measurement from `sensor` at `ts` without fields.
    pub fn new(sensor: impl Into<String>, ts: i64) -> Self {
        Reading {
            sensor: sensor.into(),
            ts,
            fields: Vec::new(),
            kind: None,
            tags: Vec::new(),
        }
    }

    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<f64> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// A mutable reference to the value of field `name`, if present.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut f64> {
        self.fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Whether field `name` is present.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    /// Set field `name` to `value`: in place if present (keeping its
    /// position), else appended. Returns the previous value.
    pub fn set_field(&mut self, name: impl Into<String>, value: f64) -> Option<f64> {
        let name = name.into();
        match self.field_mut(&name) {
            Some(v) => Some(core::mem::replace(v, value)),
            None => {
                self.fields.push((name, value));
                None
            }
        }
    }

    /// Remove field `name`, returning its value.
    pub fn remove_field(&mut self, name: &str) -> Option<f64> {
        let i = self.fields.iter().position(|(n, _)| n == name)?;
        Some(self.fields.remove(i).1)
    }

    /// Rename field `from` to `to` in place (keeping its position and value).
    /// Returns `false` when `from` is absent.
    pub fn rename_field(&mut self, from: &str, to: impl Into<String>) -> bool {
        match self.fields.iter_mut().find(|(n, _)| n == from) {
            Some((n, _)) => {
                *n = to.into();
                true
            }
            None => false,
        }
    }

    /// Builder form of [`set_field`](Self::set_field).
    pub fn with_field(mut self, name: impl Into<String>, value: f64) -> Self {
        self.set_field(name, value);
        self
    }

    /// The value of tag `name`, if present.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set tag `name` to `value`: in place if present, else appended.
    pub fn set_tag(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.tags.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.tags.push((name, value)),
        }
    }

    /// Builder form of [`set_tag`](Self::set_tag).
    pub fn with_tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_tag(name, value);
        self
    }

    /// Builder: set the kind (e.g. `"alert"`).
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Whether this reading has kind `kind`.
    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }

    /// Check what the host checks on an output reading (ABI.md §5): finite
    /// field values and the size caps. `index` names the output in the message.
    #[inline]
    pub(crate) fn check_output(&self, index: usize) -> crate::Result<()> {
        let ok = self.sensor.len() <= 256
            && self.fields.len() <= 256
            && self.fields.iter().all(|(_, v)| v.is_finite())
            && self.kind.as_ref().is_none_or(|k| k.len() <= 64)
            && self.tags.len() <= 32;
        match ok {
            true => Ok(()),
            false => self.output_error(index),
        }
    }

    /// The error [`check_output`](Self::check_output) reports.
    #[cold]
    #[inline(never)]
    fn output_error(&self, index: usize) -> crate::Result<()> {
        use alloc::format;
        let bad = |msg: String| {
            Err(crate::Error::output(format!(
                "output {index} (sensor `{}`): {msg}",
                self.sensor
            )))
        };
        if self.sensor.len() > 256 {
            return bad(format!(
                "sensor id is {} bytes; at most 256",
                self.sensor.len()
            ));
        }
        if self.fields.len() > 256 {
            return bad(format!("{} fields; at most 256", self.fields.len()));
        }
        if let Some((name, v)) = self.fields.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!(
                "field `{name}` is {}; the host refuses NaN and infinities",
                crate::ShortF64(*v)
            ));
        }
        if let Some(kind) = self.kind.as_ref().filter(|k| k.len() > 64) {
            return bad(format!("kind is {} bytes; at most 64", kind.len()));
        }
        if self.tags.len() > 32 {
            return bad(format!("{} tags; at most 32", self.tags.len()));
        }
        Ok(())
    }
}

/// (De)serialize a `Vec<(K, V)>` as a CBOR map, keeping its order.
pub(crate) mod ordered_map {
    use alloc::vec::Vec;
    use core::fmt;
    use core::marker::PhantomData;
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    pub fn serialize<S, K, V>(pairs: &[(K, V)], s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<Vec<(K, V)>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        struct PairsVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<K, V> {
            type Value = Vec<(K, V)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(access.size_hint().unwrap_or(0).min(256));
                while let Some((k, v)) = access.next_entry()? {
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}
