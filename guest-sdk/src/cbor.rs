//! A small, non-generic CBOR (RFC 8949) reader and writer for the ABI's
//! fixed schemas (batches, envelopes, config) and for [`Value`].
//!
//! Hand-written rather than going through `serde_cbor`'s deserializer, whose
//! per-type monomorphised parser would add tens of KiB to every module; the
//! generic serde paths ([`Config::parse`](crate::Config::parse),
//! [`state::get_cbor`](crate::host::state::get_cbor)) decode into a
//! [`Value`] here and deserialize from that.
//!
//! Reading accepts any well-formed encoding: definite or indefinite lengths,
//! any integer or float width, tags (ignored). Writing is deterministic:
//! definite lengths, shortest integer heads, every float as float64 (`0xfb`),
//! like the host's own encoder (ABI.md §5).

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Reading, Value};

/// Maximum nesting of arrays and maps (serde_cbor's default too).
const MAX_DEPTH: u32 = 128;

/// A decoding error: a message with the byte offset where it was detected.
pub(crate) type DecodeResult<T> = core::result::Result<T, String>;

/// The head of one data item, tags skipped.
#[derive(Debug, Clone, Copy)]
enum Head {
    Uint(u64),
    /// `-1 - n`
    Nint(u64),
    /// Length, `None` when indefinite.
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Float(f64),
    Bool(bool),
    /// `null`, `undefined`, or another simple value.
    Null,
    Break,
}

impl Head {
    fn what(self) -> &'static str {
        match self {
            Head::Uint(_) | Head::Nint(_) => "an integer",
            Head::Bytes(_) => "bytes",
            Head::Text(_) => "text",
            Head::Array(_) => "an array",
            Head::Map(_) => "a map",
            Head::Float(_) => "a float",
            Head::Bool(_) => "a boolean",
            Head::Null => "null",
            Head::Break => "a break",
        }
    }
}

fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let mant = f64::from(h & 0x3ff);
    sign * match exp {
        0 => mant * (1.0 / 16_777_216.0), // 2^-24
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mant / 1024.0) * f64::from(1u32 << e) / 32_768.0, // 2^(e-15)
    }
}

/// Reads data items from a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    fn err<T>(&self, msg: impl core::fmt::Display) -> DecodeResult<T> {
        Err(format!("at byte {}: {msg}", self.pos))
    }

    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => self.err("unexpected end of input"),
        }
    }

    fn be(&mut self, n: usize) -> DecodeResult<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn head(&mut self) -> DecodeResult<Head> {
        loop {
            let start = self.pos;
            let ib = self.take(1)?[0];
            let (major, info) = (ib >> 5, ib & 0x1f);
            let arg = match info {
                0..=23 => Some(u64::from(info)),
                24 => Some(self.be(1)?),
                25 => Some(self.be(2)?),
                26 => Some(self.be(4)?),
                27 => Some(self.be(8)?),
                31 if matches!(major, 2..=5 | 7) => None,
                _ => {
                    self.pos = start;
                    return self.err(format_args!("invalid initial byte 0x{ib:02x}"));
                }
            };
            return Ok(match (major, arg) {
                (0, Some(n)) => Head::Uint(n),
                (1, Some(n)) => Head::Nint(n),
                (2, len) => Head::Bytes(len),
                (3, len) => Head::Text(len),
                (4, len) => Head::Array(len),
                (5, len) => Head::Map(len),
                (6, _) => continue, // a tag: ignore it, read the tagged item
                (7, None) => Head::Break,
                (7, Some(n)) => match info {
                    25 => Head::Float(half_to_f64(n as u16)),
                    26 => Head::Float(f64::from(f32::from_bits(n as u32))),
                    27 => Head::Float(f64::from_bits(n)),
                    _ => match n {
                        20 => Head::Bool(false),
                        21 => Head::Bool(true),
                        _ => Head::Null,
                    },
                },
                _ => unreachable!("major types are 0..=7"),
            });
        }
    }

    fn unexpected<T>(&self, expected: &str, found: Head) -> DecodeResult<T> {
        self.err(format_args!("expected {expected}, found {}", found.what()))
    }

    /// Whether another item of a container with `len` (`None`: indefinite)
    /// follows, `i` items having been read.
    fn more(&mut self, len: Option<u64>, i: u64) -> DecodeResult<bool> {
        match len {
            Some(n) => Ok(i < n),
            None => match self.buf.get(self.pos) {
                Some(0xff) => {
                    self.pos += 1;
                    Ok(false)
                }
                Some(_) => Ok(true),
                None => self.err("unexpected end of input"),
            },
        }
    }

    fn enter(&mut self) -> DecodeResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        Ok(())
    }

    fn len(&self, n: u64) -> DecodeResult<usize> {
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() - self.pos => Ok(n),
            _ => self.err(format_args!("length {n} exceeds the input")),
        }
    }

    /// The payload of a byte or text string whose head was read.
    fn string_payload(&mut self, len: Option<u64>, major: u8) -> DecodeResult<Cow<'a, [u8]>> {
        match len {
            Some(n) => {
                let n = self.len(n)?;
                Ok(Cow::Borrowed(self.take(n)?))
            }
            None => {
                let mut out = Vec::new();
                loop {
                    match self.head()? {
                        Head::Break => return Ok(Cow::Owned(out)),
                        Head::Bytes(Some(n)) if major == 2 => {
                            let n = self.len(n)?;
                            out.extend_from_slice(self.take(n)?);
                        }
                        Head::Text(Some(n)) if major == 3 => {
                            let n = self.len(n)?;
                            out.extend_from_slice(self.take(n)?);
                        }
                        other => return self.unexpected("a definite-length chunk", other),
                    }
                }
            }
        }
    }

    fn text_payload(&mut self, len: Option<u64>) -> DecodeResult<Cow<'a, str>> {
        let start = self.pos;
        match self.string_payload(len, 3)? {
            Cow::Borrowed(b) => match core::str::from_utf8(b) {
                Ok(s) => Ok(Cow::Borrowed(s)),
                Err(_) => {
                    self.pos = start;
                    self.err("text is not valid UTF-8")
                }
            },
            Cow::Owned(b) => match String::from_utf8(b) {
                Ok(s) => Ok(Cow::Owned(s)),
                Err(_) => {
                    self.pos = start;
                    self.err("text is not valid UTF-8")
                }
            },
        }
    }

    /// A text item.
    pub(crate) fn text(&mut self) -> DecodeResult<Cow<'a, str>> {
        match self.head()? {
            Head::Text(len) => self.text_payload(len),
            other => self.unexpected("text", other),
        }
    }

    /// An integer item, as `i64`.
    pub(crate) fn i64(&mut self) -> DecodeResult<i64> {
        let start = self.pos;
        let v = match self.head()? {
            Head::Uint(n) => i64::try_from(n).ok(),
            Head::Nint(n) => i64::try_from(n).ok().map(|n| -1 - n),
            other => return self.unexpected("an integer", other),
        };
        match v {
            Some(v) => Ok(v),
            None => {
                self.pos = start;
                self.err("integer out of the 64-bit signed range")
            }
        }
    }

    /// A number item (integer or float), as `f64`.
    pub(crate) fn f64(&mut self) -> DecodeResult<f64> {
        match self.head()? {
            Head::Uint(n) => Ok(n as f64),
            Head::Nint(n) => Ok(-1.0 - n as f64),
            Head::Float(x) => Ok(x),
            other => self.unexpected("a number", other),
        }
    }

    /// Read a map head; calls `entry` for every key (the value is next).
    pub(crate) fn map(
        &mut self,
        mut entry: impl FnMut(&mut Self, Cow<'a, str>) -> DecodeResult<()>,
    ) -> DecodeResult<()> {
        let len = match self.head()? {
            Head::Map(len) => len,
            other => return self.unexpected("a map", other),
        };
        self.enter()?;
        let mut i = 0;
        while self.more(len, i)? {
            let key = self.text()?;
            entry(self, key)?;
            i += 1;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Read an array head; calls `item` for every item.
    pub(crate) fn array(
        &mut self,
        mut item: impl FnMut(&mut Self, u64) -> DecodeResult<()>,
    ) -> DecodeResult<()> {
        let len = match self.head()? {
            Head::Array(len) => len,
            other => return self.unexpected("an array", other),
        };
        self.enter()?;
        let mut i = 0;
        while self.more(len, i)? {
            item(self, i)?;
            i += 1;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Any item, decoded.
    pub(crate) fn value(&mut self) -> DecodeResult<Value> {
        Ok(match self.head()? {
            Head::Uint(n) => Value::Integer(i128::from(n)),
            Head::Nint(n) => Value::Integer(-1 - i128::from(n)),
            Head::Float(x) => Value::Float(x),
            Head::Bool(b) => Value::Bool(b),
            Head::Null => Value::Null,
            Head::Bytes(len) => Value::Bytes(self.string_payload(len, 2)?.into_owned()),
            Head::Text(len) => Value::Text(self.text_payload(len)?.into_owned()),
            Head::Array(len) => {
                self.enter()?;
                let mut items = Vec::new();
                let mut i = 0;
                while self.more(len, i)? {
                    items.push(self.value()?);
                    i += 1;
                }
                self.depth -= 1;
                Value::Array(items)
            }
            Head::Map(len) => {
                self.enter()?;
                let mut entries = Vec::new();
                let mut i = 0;
                while self.more(len, i)? {
                    let key = match self.head()? {
                        Head::Text(len) => self.text_payload(len)?.into_owned(),
                        Head::Uint(n) => n.to_string(),
                        Head::Nint(n) => format!("{}", -1 - i128::from(n)),
                        other => return self.unexpected("a text or integer map key", other),
                    };
                    entries.push((key, self.value()?));
                    i += 1;
                }
                self.depth -= 1;
                Value::Map(entries)
            }
            Head::Break => return self.err("unexpected break"),
        })
    }

    /// Skip one item.
    pub(crate) fn skip(&mut self) -> DecodeResult<()> {
        match self.head()? {
            Head::Bytes(len) => self.string_payload(len, 2).map(drop),
            Head::Text(len) => self.string_payload(len, 3).map(drop),
            Head::Array(len) => {
                self.enter()?;
                let mut i = 0;
                while self.more(len, i)? {
                    self.skip()?;
                    i += 1;
                }
                self.depth -= 1;
                Ok(())
            }
            Head::Map(len) => {
                self.enter()?;
                let mut i = 0;
                while self.more(len, i)? {
                    self.skip()?;
                    self.skip()?;
                    i += 1;
                }
                self.depth -= 1;
                Ok(())
            }
            Head::Break => self.err("unexpected break"),
            _ => Ok(()),
        }
    }

    /// Fail unless the input is exhausted.
    pub(crate) fn end(&self) -> DecodeResult<()> {
        match self.pos == self.buf.len() {
            true => Ok(()),
            false => self.err("trailing bytes after the data item"),
        }
    }

    /// One reading (ABI.md §5); unknown keys are skipped.
    pub(crate) fn reading(&mut self) -> DecodeResult<Reading> {
        let mut sensor = None;
        let mut ts = None;
        let mut fields = None;
        let mut kind = None;
        let mut tags = Vec::new();
        self.map(|r, key| {
            let ctx = |e: String| format!("key `{key}`: {e}");
            match &*key {
                "sensor" => sensor = Some(r.text().map_err(ctx)?.into_owned()),
                "ts" => ts = Some(r.i64().map_err(ctx)?),
                "fields" => {
                    let mut out = Vec::new();
                    r.map(|r, name| {
                        let v = r.f64().map_err(|e| format!("`{name}`: {e}"))?;
                        out.push((name.into_owned(), v));
                        Ok(())
                    })
                    .map_err(ctx)?;
                    fields = Some(out);
                }
                "kind" => kind = Some(r.text().map_err(ctx)?.into_owned()),
                "tags" => r
                    .map(|r, name| {
                        let v = r.text().map_err(|e| format!("`{name}`: {e}"))?;
                        tags.push((name.into_owned(), v.into_owned()));
                        Ok(())
                    })
                    .map_err(ctx)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(Reading {
            sensor: sensor.ok_or("missing key `sensor`")?,
            ts: ts.ok_or("missing key `ts`")?,
            fields: fields.ok_or("missing key `fields`")?,
            kind,
            tags,
        })
    }

    /// An array of readings.
    pub(crate) fn batch_items(&mut self) -> DecodeResult<Vec<Reading>> {
        let mut out = Vec::new();
        self.array(|r, i| {
            out.push(r.reading().map_err(|e| format!("reading {i}: {e}"))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// A complete batch (the argument of `process`): an array of readings
    /// and nothing after it.
    pub(crate) fn batch(&mut self) -> DecodeResult<Vec<Reading>> {
        let out = self.batch_items()?;
        self.end()?;
        Ok(out)
    }
}

/// Decode one complete data item.
pub(crate) fn decode_value(bytes: &[u8]) -> DecodeResult<Value> {
    let mut r = Reader::new(bytes);
    let v = r.value()?;
    r.end()?;
    Ok(v)
}

/// Appends deterministic CBOR to a `Vec`.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    fn head(&mut self, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..=23 => self.0.push(m | n as u8),
            24..=0xff => self.0.extend_from_slice(&[m | 24, n as u8]),
            0x100..=0xffff => {
                self.0.push(m | 25);
                self.0.extend_from_slice(&(n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    pub(crate) fn array(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    pub(crate) fn map(&mut self, len: usize) {
        self.head(5, len as u64);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn int(&mut self, i: i128) {
        if i >= 0 {
            self.head(0, i as u64);
        } else {
            self.head(1, (-1 - i) as u64);
        }
    }

    pub(crate) fn f64(&mut self, x: f64) {
        self.0.push(0xfb);
        self.0.extend_from_slice(&x.to_bits().to_be_bytes());
    }

    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.0.push(0xf6),
            Value::Bool(b) => self.0.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Integer(i) => self.int(*i),
            Value::Float(x) => self.f64(*x),
            Value::Text(s) => self.text(s),
            Value::Bytes(b) => {
                self.head(2, b.len() as u64);
                self.0.extend_from_slice(b);
            }
            Value::Array(items) => {
                self.array(items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Map(entries) => self.entries(entries),
        }
    }

    pub(crate) fn entries(&mut self, entries: &[(String, Value)]) {
        self.map(entries.len());
        for (k, v) in entries {
            self.text(k);
            self.value(v);
        }
    }

    /// One reading: keys in schema order, `kind`/`tags` only when set.
    pub(crate) fn reading(&mut self, r: &Reading) {
        self.map(3 + usize::from(r.kind.is_some()) + usize::from(!r.tags.is_empty()));
        self.text("sensor");
        self.text(&r.sensor);
        self.text("ts");
        self.int(i128::from(r.ts));
        self.text("fields");
        self.map(r.fields.len());
        for (name, v) in &r.fields {
            self.text(name);
            self.f64(*v);
        }
        if let Some(kind) = &r.kind {
            self.text("kind");
            self.text(kind);
        }
        if !r.tags.is_empty() {
            self.text("tags");
            self.map(r.tags.len());
            for (name, v) in &r.tags {
                self.text(name);
                self.text(v);
            }
        }
    }

    /// A batch (what the host sends to `process`).
    pub(crate) fn batch(&mut self, readings: &[Reading]) {
        self.array(readings.len());
        for r in readings {
            self.reading(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn half_floats() {
        for (bits, v) in [
            (0x3c00, 1.0),
            (0x3e00, 1.5),
            (0xc400, -4.0),
            (0x7bff, 65504.0),
            (0x0001, 5.960464477539063e-8),
            (0x0000, 0.0),
        ] {
            assert_eq!(half_to_f64(bits), v, "{bits:04x}");
        }
        assert!(half_to_f64(0x7c00).is_infinite());
        assert!(half_to_f64(0x7e00).is_nan());
    }

    #[test]
    fn value_roundtrip_and_widths() {
        let v = Value::Map(vec![
            ("a".into(), Value::Integer(-300)),
            (
                "b".into(),
                Value::Array(vec![Value::Float(1.5), Value::Bool(true), Value::Null]),
            ),
            ("c".into(), Value::Text("é".into())),
            ("d".into(), Value::Bytes(vec![1, 2])),
            ("e".into(), Value::Integer(u64::MAX.into())),
        ]);
        let mut buf = Vec::new();
        Writer(&mut buf).value(&v);
        assert_eq!(decode_value(&buf).unwrap(), v);
        // float32, float16, tags, indefinite containers and strings
        assert_eq!(
            decode_value(&[0xfa, 0x3f, 0xc0, 0, 0]).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(
            decode_value(&[0xf9, 0x3e, 0x00]).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(decode_value(&[0xc1, 0x01]).unwrap(), Value::Integer(1));
        assert_eq!(
            decode_value(&[0x9f, 0x01, 0x7f, 0x61, b'a', 0x61, b'b', 0xff, 0xff]).unwrap(),
            Value::Array(vec![Value::Integer(1), Value::Text("ab".into())])
        );
        assert!(
            decode_value(&[0x82, 0x01])
                .unwrap_err()
                .contains("unexpected end")
        );
        assert!(
            decode_value(&[0x01, 0x01])
                .unwrap_err()
                .contains("trailing")
        );
        assert!(
            decode_value(&[0x1c])
                .unwrap_err()
                .contains("invalid initial byte")
        );
        let deep = [0x81; 200];
        assert!(
            decode_value(&deep)
                .unwrap_err()
                .contains("nested too deeply")
        );
    }

    #[test]
    fn readings_roundtrip_and_errors() {
        let batch = vec![
            Reading::new("s", -5)
                .with_field("t", 21.5)
                .with_field("h", 0.1),
            Reading::new("x", 1 << 40)
                .with_kind("alert")
                .with_tag("level", "warning"),
        ];
        let mut buf = Vec::new();
        Writer(&mut buf).batch(&batch);
        assert_eq!(Reader::new(&buf).batch().unwrap(), batch);

        // unknown keys are ignored, integers accepted as field values
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.array(1);
        w.map(4);
        w.text("extra");
        w.value(&Value::Array(vec![Value::Integer(1)]));
        w.text("sensor");
        w.text("s");
        w.text("ts");
        w.int(7);
        w.text("fields");
        w.map(1);
        w.text("n");
        w.int(-3);
        assert_eq!(
            Reader::new(&buf).batch().unwrap(),
            vec![Reading::new("s", 7).with_field("n", -3.0)]
        );

        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.array(1);
        w.map(2);
        w.text("sensor");
        w.text("s");
        w.text("ts");
        w.text("soon");
        let e = Reader::new(&buf).batch().unwrap_err();
        assert!(e.starts_with("reading 0: key `ts`: at byte"), "{e}");
        assert!(e.ends_with("expected an integer, found text"), "{e}");
    }
}
