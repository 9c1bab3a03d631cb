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
//!
//! # Cost
//!
//! Batches are decoded and encoded on every call, so this is the SDK's hot
//! path, and it is shaped for wasmi's fuel metering: wasmi charges, on
//! entering a function or a loop iteration, for *every* instruction of that
//! body outside nested loops, whichever branches run. So the per-reading and
//! per-field code is a few small functions whose code is nearly all on the
//! path taken, with error formatting and rare cases moved into separate
//! (`#[cold]`, never inlined) functions:
//!
//! * [`Reader::batch_items`] first tries [`Reader::reading_fast`], which
//!   accepts exactly the host's canonical encoding of a reading (ABI.md §5:
//!   a definite map with the keys `sensor, ts, fields[, kind][, tags]` in
//!   that order, definite-length text, float64 field values) and otherwise
//!   leaves the input untouched, so that the general decoder ([`Reader::reading`])
//!   decodes that reading instead, with its error messages;
//! * the [`Writer`] writes 1-byte heads inline and longer ones out of line.

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

    #[inline(always)]
    fn err<T>(&self, msg: impl core::fmt::Display) -> DecodeResult<T> {
        Err(self.message(format_args!("{msg}")))
    }

    /// The error message for `msg` at the current position (out of line and
    /// not generic: error paths cost neither fuel nor code size per caller).
    #[cold]
    #[inline(never)]
    fn message(&self, msg: core::fmt::Arguments<'_>) -> String {
        format!("at byte {}: {msg}", self.pos)
    }

    #[inline(always)]
    fn eof<T>(&self) -> DecodeResult<T> {
        Err(self.message(format_args!("unexpected end of input")))
    }

    #[inline(always)]
    fn invalid_initial_byte<T>(&self, ib: u8) -> DecodeResult<T> {
        Err(self.message(format_args!("invalid initial byte 0x{ib:02x}")))
    }

    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => self.eof(),
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
                    return self.invalid_initial_byte(ib);
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

    #[inline(always)]
    fn unexpected<T>(&self, expected: &str, found: Head) -> DecodeResult<T> {
        Err(self.unexpected_message(expected, found))
    }

    #[cold]
    #[inline(never)]
    fn unexpected_message(&self, expected: &str, found: Head) -> String {
        self.message(format_args!("expected {expected}, found {}", found.what()))
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
                None => self.eof(),
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
                    let mut out = Vec::with_capacity(r.map_len_hint());
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
        let Some(n) = self.definite_array_head() else {
            // indefinite length, or not an array
            return self.batch_items_general();
        };
        self.enter()?;
        // Every reading takes at least 21 bytes (`sensor`, `ts` and
        // `fields` keys and values), so this bounds the capacity by the input.
        let fit = (self.buf.len() - self.pos) / 21;
        let mut out = Vec::with_capacity(n.min(fit as u64) as usize);
        for i in 0..n {
            if !self.reading_fast(&mut out) {
                self.push_reading(i, &mut out)?;
            }
        }
        self.depth -= 1;
        Ok(out)
    }

    /// [`batch_items`](Self::batch_items) without the fast path.
    #[cold]
    #[inline(never)]
    fn batch_items_general(&mut self) -> DecodeResult<Vec<Reading>> {
        let mut out = Vec::new();
        self.array(|r, i| {
            out.push(r.reading_or_error(i)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Reading `i` of a batch through the general decoder, its errors
    /// prefixed with `reading {i}: `.
    fn reading_or_error(&mut self, i: u64) -> DecodeResult<Reading> {
        self.reading().map_err(|e| format!("reading {i}: {e}"))
    }

    /// [`reading_or_error`](Self::reading_or_error), appended to `out`.
    #[cold]
    #[inline(never)]
    fn push_reading(&mut self, i: u64, out: &mut Vec<Reading>) -> DecodeResult<()> {
        out.push(self.reading_or_error(i)?);
        Ok(())
    }

    /// If the next item is an array of definite length, consume its head and
    /// return the length; else consume nothing.
    fn definite_array_head(&mut self) -> Option<u64> {
        let ib = *self.buf.get(self.pos)?;
        if ib >> 5 != 4 {
            return None;
        }
        let (n, next) = arg_at(self.buf, self.pos)?;
        self.pos = next;
        Some(n)
    }

    /// For a map whose head comes next: a capacity for its entries that the
    /// input can hold (each entry takes at least 2 bytes); 0 if unknown.
    fn map_len_hint(&self) -> usize {
        match arg_at(self.buf, self.pos) {
            Some((n, next)) if self.buf[self.pos] >> 5 == 5 => {
                n.min(((self.buf.len() - next) / 2) as u64) as usize
            }
            _ => 0,
        }
    }

    /// Append one reading in exactly the host's canonical encoding (see the
    /// module documentation) to `out`; or return `false` with nothing
    /// consumed, and then the general decoder ([`reading`](Self::reading))
    /// takes over, which accepts every reading this accepts, with the same
    /// result.
    #[inline(never)]
    pub(crate) fn reading_fast(&mut self, out: &mut Vec<Reading>) -> bool {
        match self.canonical_reading() {
            Some(r) => {
                out.push(r);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn canonical_reading(&mut self) -> Option<Reading> {
        let s = self.buf;
        let i = self.pos;
        // a map of 3, 4 or 5 keys, the first "sensor"
        let extra = s.get(i)?.wrapping_sub(0xa3);
        if extra > 2 || !s.get(i + 1..)?.starts_with(b"\x66sensor") {
            return None;
        }
        let (sensor, i) = text_at(s, i + 8)?;
        if !s.get(i..)?.starts_with(b"\x62ts") {
            return None;
        }
        let (ts, i) = int_at(s, i + 3)?;
        if !s.get(i..)?.starts_with(b"\x66fields") {
            return None;
        }
        let (n, mut i) = map_head_at(s, i + 7)?;
        // every entry takes at least 10 bytes (key head, 0xfb, 8 bytes)
        if n > ((s.len() - i) / 10) as u64 {
            return None;
        }
        let mut fields = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (name, j) = text_at(s, i)?;
            let (v, j) = f64_at(s, j)?;
            fields.push((name, v));
            i = j;
        }
        let mut r = Reading {
            sensor,
            ts,
            fields,
            kind: None,
            tags: Vec::new(),
        };
        if extra > 0 {
            i = kind_tags_at(s, i, extra, &mut r)?;
        }
        self.pos = i;
        Some(r)
    }

    /// A complete batch (the argument of `process`): an array of readings
    /// and nothing after it.
    pub(crate) fn batch(&mut self) -> DecodeResult<Vec<Reading>> {
        let out = self.batch_items()?;
        self.end()?;
        Ok(out)
    }
}

/// The argument of the head at `i` when it is given (not indefinite): the
/// value and the index after the head. `None` for anything else, or when
/// the input ends.
#[inline]
fn arg_at(s: &[u8], i: usize) -> Option<(u64, usize)> {
    let info = s.get(i)? & 0x1f;
    if info < 24 {
        return Some((u64::from(info), i + 1));
    }
    arg_long_at(s, i + 1, info)
}

/// The 1, 2, 4 or 8-byte big-endian argument at `i` of a head whose
/// additional information is `info`, and the index after it.
#[inline(never)]
fn arg_long_at(s: &[u8], i: usize, info: u8) -> Option<(u64, usize)> {
    let rest = s.get(i..)?;
    Some(match info {
        24 => (u64::from(*rest.first()?), i + 1),
        25 => (u64::from(u16::from_be_bytes(*rest.first_chunk()?)), i + 2),
        26 => (u64::from(u32::from_be_bytes(*rest.first_chunk()?)), i + 4),
        27 => (u64::from_be_bytes(*rest.first_chunk()?), i + 8),
        _ => return None,
    })
}

/// The length of the definite map whose head is at `i`, and the index after
/// the head.
#[inline]
fn map_head_at(s: &[u8], i: usize) -> Option<(u64, usize)> {
    if s.get(i)? >> 5 != 5 {
        return None;
    }
    arg_at(s, i)
}

/// An integer (major type 0 or 1) in the `i64` range at `i`, and the index
/// after it.
#[inline]
fn int_at(s: &[u8], i: usize) -> Option<(i64, usize)> {
    // inline: a positive 8-byte argument (every `ts` after 1970-02-19)
    if let Some((&0x1b, rest)) = s.get(i..)?.split_first() {
        let n = i64::try_from(u64::from_be_bytes(*rest.first_chunk()?)).ok()?;
        return Some((n, i + 9));
    }
    int_at_any(s, i)
}

#[inline(never)]
fn int_at_any(s: &[u8], i: usize) -> Option<(i64, usize)> {
    let major = s.get(i)? >> 5;
    if major > 1 {
        return None;
    }
    let (n, next) = arg_at(s, i)?;
    let n = i64::try_from(n).ok()?;
    // major 1 is -1 - n, i.e. !n
    Some((if major == 1 { !n } else { n }, next))
}

/// A float64 (`0xfb`) at `i`, and the index after it.
#[inline]
fn f64_at(s: &[u8], i: usize) -> Option<(f64, usize)> {
    let b: &[u8; 9] = s.get(i..)?.first_chunk()?;
    if b[0] != 0xfb {
        return None;
    }
    let mut be = [0u8; 8];
    be.copy_from_slice(&b[1..]);
    Some((f64::from_bits(u64::from_be_bytes(be)), i + 9))
}

/// A definite-length text string at `i` that is valid UTF-8, copied, and
/// the index after it.
#[inline(never)]
fn text_at(s: &[u8], i: usize) -> Option<(String, usize)> {
    let head = *s.get(i)?;
    let (len, start) = match head.wrapping_sub(0x60) {
        n @ 0..24 => (usize::from(n), i + 1),
        24..28 => {
            let (len, start) = arg_long_at(s, i + 1, head & 0x1f)?;
            (usize::try_from(len).ok()?, start)
        }
        _ => return None,
    };
    let bytes = s.get(start..)?.get(..len)?;
    // Up to 8 bytes: one (masked) word of the input, if it has 8 from here.
    let short = match s[start..].first_chunk::<8>() {
        Some(w) if len <= 8 => {
            let mask = u64::MAX.checked_shr(64 - 8 * len as u32).unwrap_or(0);
            Some(u64::from_le_bytes(*w) & mask & 0x8080_8080_8080_8080 == 0)
        }
        _ => None,
    };
    if !short.unwrap_or_else(|| bytes.is_ascii()) && !is_utf8(bytes) {
        return None;
    }
    // SAFETY: checked just above (ASCII is UTF-8).
    let text = unsafe { core::str::from_utf8_unchecked(bytes) };
    Some((String::from(text), start + len))
}

/// Whether non-ASCII text is valid UTF-8, out of line.
#[cold]
#[inline(never)]
fn is_utf8(bytes: &[u8]) -> bool {
    core::str::from_utf8(bytes).is_ok()
}

/// The optional `kind` and `tags` of a canonical reading ([`Reader::reading_fast`]):
/// `extra` (1 or 2) more keys at `i`. Returns the index after them.
#[inline(never)]
fn kind_tags_at(s: &[u8], mut i: usize, mut extra: u8, r: &mut Reading) -> Option<usize> {
    if s.get(i..)?.starts_with(b"\x64kind") {
        let (kind, j) = text_at(s, i + 5)?;
        r.kind = Some(kind);
        i = j;
        extra -= 1;
    }
    if extra == 1 {
        if !s.get(i..)?.starts_with(b"\x64tags") {
            return None;
        }
        let (n, mut j) = map_head_at(s, i + 5)?;
        // every entry takes at least 2 bytes
        if n > ((s.len() - j) / 2) as u64 {
            return None;
        }
        r.tags.reserve_exact(n as usize);
        for _ in 0..n {
            let (name, k) = text_at(s, j)?;
            let (value, k) = text_at(s, k)?;
            r.tags.push((name, value));
            j = k;
        }
        return Some(j);
    }
    if extra != 0 {
        return None;
    }
    Some(i)
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
    /// `extend_from_slice`, inlined (which `Vec`'s is not, at `opt-level = "s"`).
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let (v, n) = (&mut *self.0, bytes.len());
        if v.capacity() - v.len() < n {
            v.reserve(n);
        }
        // SAFETY: there are `n` bytes of spare capacity; `bytes` cannot point
        // into `v`, which is borrowed mutably here.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().add(v.len()), n);
            v.set_len(v.len() + n);
        }
    }

    /// A head in shortest form: 1-byte heads inline, the rest out of line.
    #[inline(always)]
    fn head(&mut self, major: u8, n: u64) {
        if n < 24 {
            self.0.push(major << 5 | n as u8);
        } else {
            self.head_long(major, n);
        }
    }

    /// A head with a 1, 2, 4 or 8-byte argument (`n >= 24`).
    #[inline(never)]
    fn head_long(&mut self, major: u8, n: u64) {
        let (info, len) = match n {
            0..=0xff => (24, 1),
            0x100..=0xffff => (25, 2),
            0x1_0000..=0xffff_ffff => (26, 4),
            _ => (27, 8),
        };
        let mut b = [0u8; 9];
        b[1..].copy_from_slice(&n.to_be_bytes());
        b[8 - len] = major << 5 | info;
        self.put(&b[8 - len..]);
    }

    pub(crate) fn array(&mut self, len: usize) {
        self.head(4, len as u64);
    }

    pub(crate) fn map(&mut self, len: usize) {
        self.head(5, len as u64);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.head(3, s.len() as u64);
        self.put(s.as_bytes());
    }

    /// An `i64` (what a reading's `ts` is).
    #[inline(always)]
    fn i64(&mut self, i: i64) {
        if i > 0xffff_ffff {
            // inline: 8 argument bytes (every `ts` after 1970-02-19)
            let mut b = [0x1b; 9];
            b[1..].copy_from_slice(&i.to_be_bytes());
            self.put(&b);
            return;
        }
        // -1 - i == !i: major 1 with argument !i for negative numbers
        let negative = i < 0;
        let n = if negative { !i } else { i } as u64;
        self.head(u8::from(negative), n);
    }

    pub(crate) fn int(&mut self, i: i128) {
        if i >= 0 {
            self.head(0, i as u64);
        } else {
            self.head(1, (-1 - i) as u64);
        }
    }

    pub(crate) fn f64(&mut self, x: f64) {
        let mut b = [0xfb; 9];
        b[1..].copy_from_slice(&x.to_bits().to_be_bytes());
        self.put(&b);
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
    #[inline(never)]
    pub(crate) fn reading(&mut self, r: &Reading) {
        let extra = u8::from(r.kind.is_some()) + u8::from(!r.tags.is_empty());
        self.0.push(0xa3 + extra); // a map of 3 to 5 keys
        self.put(b"\x66sensor");
        self.text(&r.sensor);
        self.put(b"\x62ts");
        self.i64(r.ts);
        self.put(b"\x66fields");
        self.map(r.fields.len());
        for (name, v) in &r.fields {
            self.text(name);
            self.f64(*v);
        }
        if extra != 0 {
            self.kind_tags(r);
        }
    }

    #[inline(never)]
    fn kind_tags(&mut self, r: &Reading) {
        if let Some(kind) = &r.kind {
            self.put(b"\x64kind");
            self.text(kind);
        }
        if !r.tags.is_empty() {
            self.put(b"\x64tags");
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

    /// Readings covering the canonical encoding's corners: every head width
    /// of the sensor, ts and field count, kind and tags present or not,
    /// non-ASCII and empty text, negative and small timestamps.
    fn corner_readings() -> Vec<Reading> {
        let mut many = Reading::new("m", 0);
        for i in 0..300 {
            many.fields.push((format!("f{i}"), f64::from(i) / 3.0));
        }
        vec![
            Reading::new("greenhouse/north", 1_714_543_200_000)
                .with_field("temp", 21.5)
                .with_field("humidity", 50.0),
            Reading::new("", 0),
            Reading::new("s", -1).with_field("", -0.0),
            Reading::new("s", i64::MIN).with_field("x", f64::NAN),
            Reading::new("s", i64::MAX).with_field("x", f64::INFINITY),
            Reading::new("s", 23).with_field("é", 1e300),
            Reading::new("s", 24).with_field("12345678", 1.0),
            Reading::new("s", 255).with_field("123456789", 1.0),
            Reading::new("s", 256).with_field("1234567", 1.0),
            Reading::new("s", 65_536).with_field("a\u{0}b", 1.0),
            Reading::new("s", 0xffff_ffff),
            Reading::new("s", 0x1_0000_0000),
            Reading::new("x".repeat(23), 1),
            Reading::new("x".repeat(24), 1),
            Reading::new("ü".repeat(200), 1),
            Reading::new("x".repeat(70_000), 1),
            Reading::new("s", 1).with_kind("alert"),
            Reading::new("s", 1).with_kind(""),
            Reading::new("s", 1).with_tag("level", "warning"),
            Reading::new("s", 1)
                .with_field("t", 2.0)
                .with_kind("alert")
                .with_tag("a", "1")
                .with_tag("ß", "")
                .with_tag("", "x".repeat(30)),
            many,
        ]
    }

    /// The reference encoding of a reading, through the generic `Value` writer.
    fn reference_bytes(r: &Reading) -> Vec<u8> {
        let mut entries = vec![
            ("sensor".to_string(), Value::Text(r.sensor.clone())),
            ("ts".to_string(), Value::Integer(r.ts.into())),
            (
                "fields".to_string(),
                Value::Map(
                    r.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::Float(*v)))
                        .collect(),
                ),
            ),
        ];
        if let Some(kind) = &r.kind {
            entries.push(("kind".to_string(), Value::Text(kind.clone())));
        }
        if !r.tags.is_empty() {
            let tags = r
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), Value::Text(v.clone())));
            entries.push(("tags".to_string(), Value::Map(tags.collect())));
        }
        let mut out = Vec::new();
        Writer(&mut out).entries(&entries);
        out
    }

    /// Same readings, compared bit for bit (NaN != NaN for `PartialEq`).
    fn same(a: &[Reading], b: &[Reading]) -> bool {
        let bits = |r: &Reading| {
            let fields: Vec<_> = r
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect();
            (
                r.sensor.clone(),
                r.ts,
                fields,
                r.kind.clone(),
                r.tags.clone(),
            )
        };
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bits(x) == bits(y))
    }

    #[test]
    fn canonical_readings_take_the_fast_path() {
        for r in corner_readings() {
            let mut buf = Vec::new();
            Writer(&mut buf).reading(&r);
            assert_eq!(buf, reference_bytes(&r), "writer: {:?}", r.sensor);
            let mut out = Vec::new();
            let mut reader = Reader::new(&buf);
            assert!(reader.reading_fast(&mut out), "not taken: {:?}", r.sensor);
            assert_eq!(reader.pos, buf.len());
            assert!(same(&out, core::slice::from_ref(&r)));
            let general = Reader::new(&buf).reading().unwrap();
            assert!(same(&out, &[general]));
        }
    }

    #[test]
    fn other_encodings_fall_back_to_the_general_decoder() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut w = |f: &dyn Fn(&mut Writer)| {
            let mut buf = Vec::new();
            f(&mut Writer(&mut buf));
            cases.push(buf);
        };
        // keys out of order
        w(&|w| {
            w.map(3);
            w.text("ts");
            w.int(1);
            w.text("sensor");
            w.text("s");
            w.text("fields");
            w.map(0);
        });
        // an integer field value; a float32 one
        w(&|w| {
            w.map(3);
            w.text("sensor");
            w.text("s");
            w.text("ts");
            w.int(1);
            w.text("fields");
            w.map(2);
            w.text("a");
            w.int(-3);
            w.text("b");
            w.0.extend_from_slice(&[0xfa, 0x3f, 0xc0, 0, 0]);
        });
        // tags before kind; an unknown key
        w(&|w| {
            w.map(5);
            w.text("sensor");
            w.text("s");
            w.text("ts");
            w.int(1);
            w.text("fields");
            w.map(0);
            w.text("tags");
            w.map(1);
            w.text("a");
            w.text("b");
            w.text("kind");
            w.text("k");
        });
        w(&|w| {
            w.map(4);
            w.text("sensor");
            w.text("s");
            w.text("ts");
            w.int(1);
            w.text("fields");
            w.map(0);
            w.text("unit");
            w.text("C");
        });
        // indefinite-length text and map; a tagged timestamp
        w(&|w| {
            w.map(3);
            w.text("sensor");
            w.0.extend_from_slice(&[0x7f, 0x61, b'a', 0x61, b'b', 0xff]);
            w.text("ts");
            w.0.extend_from_slice(&[0xc1, 0x01]);
            w.text("fields");
            w.0.extend_from_slice(&[0xbf, 0x61, b'x', 0x01, 0xff]);
        });
        for buf in cases {
            let mut out = Vec::new();
            let mut reader = Reader::new(&buf);
            assert!(!reader.reading_fast(&mut out), "{buf:02x?}");
            assert_eq!((reader.pos, out.len()), (0, 0));
            let mut batch = vec![0x81];
            batch.extend_from_slice(&buf);
            let decoded = Reader::new(&batch).batch().unwrap();
            let general = Reader::new(&buf).reading().unwrap();
            assert!(same(&decoded, &[general]));
        }
    }

    /// Every corruption of a canonical batch decodes to the same readings,
    /// or fails with the same message, with and without the fast path.
    #[test]
    fn fast_path_agrees_with_the_general_decoder() {
        // the small ones, so that the corruptions hit every part of them
        let mut batch = corner_readings();
        batch.retain(|r| r.sensor.len() < 100 && r.fields.len() < 10);
        let mut canonical = Vec::new();
        Writer(&mut canonical).batch(&batch);
        let check = |bytes: &[u8]| {
            let fast = Reader::new(bytes).batch();
            let mut general = Reader::new(bytes);
            let general = general
                .batch_items_general()
                .and_then(|items| general.end().map(|()| items));
            match (&fast, &general) {
                (Ok(a), Ok(b)) => assert!(same(a, b), "{bytes:02x?}"),
                (a, b) => assert_eq!(a, b, "{bytes:02x?}"),
            }
        };
        check(&canonical);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = canonical.clone();
            for _ in 0..1 + next() % 3 {
                let r = next();
                let i = (r >> 16) as usize % bytes.len();
                match r % 4 {
                    0 => bytes[i] = (r >> 8) as u8,
                    1 => bytes[i] ^= 1 << ((r >> 8) % 8),
                    2 => bytes.truncate(i),
                    _ => {
                        bytes.remove(i);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            check(&bytes);
        }
    }
}
