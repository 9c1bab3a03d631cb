//! The CBOR that crosses the boundary (`wit/ABI.md` §3, §5): batches written
//! by the host in a fixed, deterministic form, and result envelopes from the
//! guest decoded strictly (they are untrusted input).

use serde::Deserialize;

use crate::cbor;
use crate::reading::Reading;

/// Largest sensor id in a guest output, bytes.
pub const MAX_SENSOR_LEN: usize = 256;
/// Most fields in one guest output.
pub const MAX_FIELDS: usize = 256;
/// Largest `kind`, bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Most tags in one guest output.
pub const MAX_TAGS: usize = 32;

/// Append `batch` to `out` as a CBOR array of readings. No allocation beyond
/// `out` growing; `out` is reused across calls.
pub fn encode_batch(out: &mut Vec<u8>, batch: &[Reading]) {
    cbor::write_array_head(out, batch.len());
    for r in batch {
        encode_reading(out, r);
    }
}

fn encode_reading(out: &mut Vec<u8>, r: &Reading) {
    let entries = 3 + usize::from(r.kind.is_some()) + usize::from(!r.tags.is_empty());
    cbor::write_map_head(out, entries);
    cbor::write_text(out, "sensor");
    cbor::write_text(out, &r.sensor);
    cbor::write_text(out, "ts");
    cbor::write_i64(out, r.ts);
    cbor::write_text(out, "fields");
    cbor::write_map_head(out, r.fields.len());
    for (name, value) in &r.fields {
        cbor::write_text(out, name);
        cbor::write_f64(out, *value);
    }
    if let Some(kind) = &r.kind {
        cbor::write_text(out, "kind");
        cbor::write_text(out, kind);
    }
    if !r.tags.is_empty() {
        cbor::write_text(out, "tags");
        cbor::write_map_head(out, r.tags.len());
        for (k, v) in &r.tags {
            cbor::write_text(out, k);
            cbor::write_text(out, v);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    outputs: Option<Vec<Reading>>,
    #[serde(default)]
    error: Option<GuestErrorWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestErrorWire {
    code: String,
    message: String,
}

/// A decoded result envelope.
#[derive(Debug)]
pub enum Decoded {
    /// `{"outputs": [...]}`
    Outputs(Vec<Reading>),
    /// `{"error": {...}}`
    GuestError { code: String, message: String },
}

/// Decode and validate a result envelope. `Err` is an ABI violation message.
pub fn decode_envelope(bytes: &[u8]) -> Result<Decoded, String> {
    let env: Envelope = serde_cbor::from_slice(bytes)
        .map_err(|e| format!("result envelope does not decode as ABI v1 CBOR: {e}"))?;
    match (env.outputs, env.error) {
        (Some(outputs), None) => {
            for (i, r) in outputs.iter().enumerate() {
                validate_output(i, r)?;
            }
            Ok(Decoded::Outputs(outputs))
        }
        (None, Some(e)) => Ok(Decoded::GuestError {
            code: truncate(e.code, 64),
            message: truncate(e.message, 1024),
        }),
        (Some(_), Some(_)) => Err("result envelope has both `outputs` and `error`".into()),
        (None, None) => Err("result envelope has neither `outputs` nor `error`".into()),
    }
}

fn validate_output(i: usize, r: &Reading) -> Result<(), String> {
    if r.sensor.len() > MAX_SENSOR_LEN {
        return Err(format!(
            "output {i}: sensor is {} bytes, limit {MAX_SENSOR_LEN}",
            r.sensor.len()
        ));
    }
    if r.fields.len() > MAX_FIELDS {
        return Err(format!(
            "output {i}: {} fields, limit {MAX_FIELDS}",
            r.fields.len()
        ));
    }
    if let Some((name, v)) = r.fields.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!(
            "output {i}: field `{name}` is {v}, not a finite number"
        ));
    }
    if r.kind.as_ref().is_some_and(|k| k.len() > MAX_KIND_LEN) {
        return Err(format!("output {i}: kind longer than {MAX_KIND_LEN} bytes"));
    }
    if r.tags.len() > MAX_TAGS {
        return Err(format!(
            "output {i}: {} tags, limit {MAX_TAGS}",
            r.tags.len()
        ));
    }
    Ok(())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_encoding_is_exact() {
        let mut out = Vec::new();
        encode_batch(&mut out, &[Reading::new("s", 1).with_field("t", 1.5)]);
        let expected: &[u8] = &[
            0x81, // array(1)
            0xa3, // map(3)
            0x66, b's', b'e', b'n', b's', b'o', b'r', 0x61, b's', //
            0x62, b't', b's', 0x01, //
            0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa1, 0x61, b't', //
            0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn batch_round_trips_through_serde_cbor() {
        let mut r = Reading::new("greenhouse/north", -5)
            .with_field("b", 2.0)
            .with_field("a", -1.25);
        r.kind = Some("alert".into());
        r.tags = vec![("level".into(), "warning".into())];
        let mut out = Vec::new();
        encode_batch(&mut out, std::slice::from_ref(&r));
        let back: Vec<Reading> = serde_cbor::from_slice(&out).unwrap();
        assert_eq!(back, vec![r]);
    }

    fn env(v: &serde_cbor::Value) -> Vec<u8> {
        serde_cbor::to_vec(v).unwrap()
    }

    #[test]
    fn strict_decoding() {
        use serde_cbor::Value as V;
        use std::collections::BTreeMap;
        let text = |s: &str| V::Text(s.into());
        let mut out = BTreeMap::new();
        out.insert(text("sensor"), text("s"));
        out.insert(text("ts"), V::Integer(7));
        let mut fields = BTreeMap::new();
        fields.insert(text("x"), V::Integer(3));
        out.insert(text("fields"), V::Map(fields));
        let mut top = BTreeMap::new();
        top.insert(text("outputs"), V::Array(vec![V::Map(out.clone())]));
        match decode_envelope(&env(&V::Map(top))).unwrap() {
            Decoded::Outputs(o) => assert_eq!(o[0].field("x"), Some(3.0)),
            other => panic!("{other:?}"),
        }
        let mut bad = out.clone();
        bad.insert(text("extra"), V::Null);
        let mut top = BTreeMap::new();
        top.insert(text("outputs"), V::Array(vec![V::Map(bad)]));
        assert!(
            decode_envelope(&env(&V::Map(top)))
                .unwrap_err()
                .contains("unknown field")
        );
        let mut nan = out;
        let mut f = BTreeMap::new();
        f.insert(text("x"), V::Float(f64::NAN));
        nan.insert(text("fields"), V::Map(f));
        let mut top = BTreeMap::new();
        top.insert(text("outputs"), V::Array(vec![V::Map(nan)]));
        assert!(
            decode_envelope(&env(&V::Map(top)))
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(decode_envelope(b"\xff\x00").is_err());
        assert!(
            decode_envelope(&env(&V::Map(BTreeMap::new())))
                .unwrap_err()
                .contains("neither")
        );
    }
}
