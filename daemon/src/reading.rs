//! The unit of work: one sensor reading. Processors take readings and return
//! readings, so the same type flows through every stage of the data path.

use serde::{Deserialize, Serialize};

/// One sensor reading (see `wit/processor.wit`, record `reading`).
///
/// Field and tag order is preserved from source to output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// Sensor id, e.g. `greenhouse/bme280-1`.
    pub sensor: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Numeric fields in source order.
    #[serde(with = "ordered_map")]
    pub fields: Vec<(String, f64)>,
    /// Kind of a derived record (`alert`, `stats`, …); `None` for a measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Free-form labels; usually empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "ordered_map")]
    pub tags: Vec<(String, String)>,
}

impl Reading {
    /// A plain measurement without fields.
    pub fn new(sensor: impl Into<String>, ts: i64) -> Self {
        Reading {
            sensor: sensor.into(),
            ts,
            fields: Vec::new(),
            kind: None,
            tags: Vec::new(),
        }
    }

    /// Builder: append a field.
    pub fn with_field(mut self, name: impl Into<String>, value: f64) -> Self {
        self.fields.push((name.into(), value));
        self
    }

    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<f64> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// (De)serialize a `Vec<(K, V)>` as a map, keeping its order.
pub(crate) mod ordered_map {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

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
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
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
