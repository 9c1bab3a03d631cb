//! `payload`: the MQTT / serial payload decoders (`sources/decode/`: JSON,
//! CBOR, number, CSV line, key=value) and the serial source's line framer
//! (`sources/serial.rs`).
//!
//! The **first byte** of an input selects what the rest is fed to, so each
//! execution exercises one decoder (libFuzzer's per-execution cost grows
//! with the code an input touches) and seeds stay readable text:
//!
//! | byte | the rest goes to |
//! |---|---|
//! | `j` `c` `n` `v` `k` | `json`, `cbor`, `number`, `csv`, `key-value` in the sources' context ([`source_context`]: a default sensor, CSV columns `ts,sensor,temp,hum`, no extensions) |
//! | `J` `C` `N` `V` `K` | the same in replay's context ([`replay_context`]: no default sensor, a 4-field cap, CSV columns `Timestamp,temp,SENSOR`, every JSON extension on) |
//! | `s` / `S` | the serial line framer, whole and in small chunks, then each line decoded as `key-value` like the serial source does |
//! | `*` | every format in both contexts, and the framer |
//! | anything else | by its value modulo 7 (the five formats, the framer, everything), the context by bit 5 (clear: replay) |
//!
//! Invariants:
//! - decoding never panics; a refusal appends nothing, renders to a
//!   non-empty message and has one of the documented reason labels;
//! - an accepted payload appends ≥ 1 reading (exactly one for the text
//!   formats) and each obeys the rules of every format: sensor non-empty,
//!   ≤ 256 bytes, no control characters; fields finite, named validly,
//!   distinct, at most the cap, not empty unless allowed; `kind` / `tags`
//!   only with the extension;
//! - `number` agrees with Rust's `f64` parser;
//! - whatever any format accepts, written back as structured JSON and as
//!   CBOR, decodes to the same readings;
//! - the framer gives the same frames however the bytes are chunked, the
//!   frames of a simple reference model, and never buffers more than the
//!   line limit plus one byte.

use std::sync::LazyLock;

use wasmgate::Reading;
use wasmgate::fuzz_api::{LineFrame, LineFramer};
use wasmgate::runtime::wire::MAX_SENSOR_LEN;
use wasmgate::sources::decode::{
    DecodeContext, DecodeError, JsonOptions, MAX_FIELD_NAME_LEN, PayloadFormat, decode_with,
};

use crate::assert_message;

/// The line limit the framer runs with (small, so over-long lines are
/// common).
pub const MAX_LINE: usize = 64;

static SOURCE_COLUMNS: LazyLock<Vec<String>> =
    LazyLock::new(|| ["ts", "sensor", "temp", "hum"].map(String::from).to_vec());
static REPLAY_COLUMNS: LazyLock<Vec<String>> =
    LazyLock::new(|| ["Timestamp", "temp", "SENSOR"].map(String::from).to_vec());
const IGNORED: &[&str] = &["note", "seq"];

/// What an MQTT or serial source passes.
pub fn source_context() -> DecodeContext<'static> {
    DecodeContext {
        sensor: Some("greenhouse/fuzz"),
        receive_ts: 1_714_564_800_000,
        field: "value",
        csv_columns: &SOURCE_COLUMNS,
        max_fields: 64,
        max_bytes: 64 * 1024,
    }
}

/// No default sensor, small caps, other columns (with the extensions of
/// [`replay_options`]).
pub fn replay_context() -> DecodeContext<'static> {
    DecodeContext {
        sensor: None,
        receive_ts: 0,
        field: "reading",
        csv_columns: &REPLAY_COLUMNS,
        max_fields: 4,
        max_bytes: 4096,
    }
}

/// Every JSON/CBOR extension on (as `wasmgate replay` reads JSON Lines).
pub fn replay_options() -> JsonOptions<'static> {
    JsonOptions {
        accept_derived: true,
        ignore_keys: IGNORED,
        require_ts: true,
        allow_no_fields: true,
    }
}

/// What the first byte selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One format in one context (`true`: replay's).
    Decode(PayloadFormat, bool),
    /// The line framer.
    Serial,
    /// Everything.
    All,
}

/// The mode a first byte selects (the table in the module documentation).
pub fn mode(selector: u8) -> Mode {
    let replay = selector & 0x20 == 0;
    let format = |i: u8| PayloadFormat::ALL[usize::from(i)];
    match selector | 0x20 {
        b'j' => Mode::Decode(PayloadFormat::Json, replay),
        b'c' => Mode::Decode(PayloadFormat::Cbor, replay),
        b'n' => Mode::Decode(PayloadFormat::Number, replay),
        b'v' => Mode::Decode(PayloadFormat::Csv, replay),
        b'k' => Mode::Decode(PayloadFormat::KeyValue, replay),
        b's' => Mode::Serial,
        b'*' => Mode::All,
        _ => match selector % 7 {
            i @ 0..=4 => Mode::Decode(format(i), replay),
            5 => Mode::Serial,
            _ => Mode::All,
        },
    }
}

/// The selector byte of `mode` (`*` for [`Mode::All`]).
pub fn selector(mode: Mode) -> u8 {
    match mode {
        Mode::Decode(format, replay) => {
            let b = match format {
                PayloadFormat::Json => b'j',
                PayloadFormat::Cbor => b'c',
                PayloadFormat::Number => b'n',
                PayloadFormat::Csv => b'v',
                PayloadFormat::KeyValue => b'k',
            };
            if replay { b.to_ascii_uppercase() } else { b }
        }
        Mode::Serial => b's',
        Mode::All => b'*',
    }
}

/// Run every check on `data` (selector byte, then the payload).
pub fn check(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let source = source_context();
    let replay = replay_context();
    match mode(sel) {
        Mode::Decode(format, false) => {
            check_decode(format, payload, &source, &JsonOptions::default())
        }
        Mode::Decode(format, true) => check_decode(format, payload, &replay, &replay_options()),
        Mode::Serial => check_framing(payload, &source),
        Mode::All => {
            for format in PayloadFormat::ALL {
                check_decode(format, payload, &source, &JsonOptions::default());
                check_decode(format, payload, &replay, &replay_options());
            }
            check_framing(payload, &source);
        }
    }
}

fn check_decode(
    format: PayloadFormat,
    data: &[u8],
    ctx: &DecodeContext<'_>,
    opts: &JsonOptions<'_>,
) {
    let sentinel = Reading::new("sentinel", 0).with_field("x", 1.0);
    let mut out = vec![sentinel.clone()];
    let result = decode_with(format, data, ctx, opts, &mut out);
    assert_eq!(out[0], sentinel, "earlier readings touched");
    match result {
        Err(e) => {
            assert_eq!(
                out.len(),
                1,
                "{format}: a refused payload appended readings"
            );
            assert_message("decode", &e.to_string());
            assert!(DecodeError::REASONS.contains(&e.reason()));
            if data.len() > ctx.max_bytes {
                assert!(matches!(e, DecodeError::TooLarge { .. }));
            }
        }
        Ok(n) => {
            assert!(data.len() <= ctx.max_bytes);
            assert_eq!(
                out.len(),
                1 + n,
                "{format}: count differs from readings appended"
            );
            assert!(n >= 1, "{format}: accepted with no readings");
            if !matches!(format, PayloadFormat::Json | PayloadFormat::Cbor) {
                assert_eq!(n, 1, "{format}: one reading per payload");
            }
            let readings = &out[1..];
            for r in readings {
                check_reading(r, ctx, opts);
            }
            if format == PayloadFormat::Number {
                let text = std::str::from_utf8(data).unwrap().trim_ascii();
                let value: f64 = text.parse().unwrap();
                assert_eq!(readings[0].fields, [(ctx.field.to_string(), value)]);
            }
            round_trip(readings, ctx, opts);
        }
    }
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

fn check_reading(r: &Reading, ctx: &DecodeContext<'_>, opts: &JsonOptions<'_>) {
    assert!(name_ok(&r.sensor, MAX_SENSOR_LEN), "sensor {:?}", r.sensor);
    assert!(r.fields.len() <= ctx.max_fields);
    assert!(opts.allow_no_fields || !r.fields.is_empty());
    for (i, (name, value)) in r.fields.iter().enumerate() {
        assert!(name_ok(name, MAX_FIELD_NAME_LEN), "field name {name:?}");
        assert!(value.is_finite(), "field {name:?} = {value}");
        assert!(
            !r.fields[..i].iter().any(|(n, _)| n == name),
            "field {name:?} twice"
        );
    }
    if !opts.accept_derived {
        assert!(r.kind.is_none() && r.tags.is_empty());
    }
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `v` as a JSON number (shortest round-trip form).
fn json_f64(v: f64) -> String {
    serde_json::to_string(&v).unwrap()
}

/// The structured JSON form of a batch (every field inside `fields`), in
/// field order. Written by hand: a `serde_json::Map` may sort its keys.
fn to_json(readings: &[Reading]) -> String {
    let mut out = String::from("[");
    for (i, r) in readings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"sensor\":{},\"ts\":{},\"fields\":{{",
            json_str(&r.sensor),
            r.ts
        ));
        for (j, (name, value)) in r.fields.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("{}:{}", json_str(name), json_f64(*value)));
        }
        out.push('}');
        if let Some(kind) = &r.kind {
            out.push_str(&format!(",\"kind\":{}", json_str(kind)));
        }
        if !r.tags.is_empty() {
            out.push_str(",\"tags\":{");
            for (j, (k, v)) in r.tags.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{}:{}", json_str(k), json_str(v)));
            }
            out.push('}');
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// The same batch as CBOR (definite lengths, float64 values).
fn to_cbor(readings: &[Reading]) -> Vec<u8> {
    use wasmgate::cbor::{write_array_head, write_f64, write_i64, write_map_head, write_text};
    let mut out = Vec::new();
    write_array_head(&mut out, readings.len());
    for r in readings {
        let entries = 3 + usize::from(r.kind.is_some()) + usize::from(!r.tags.is_empty());
        write_map_head(&mut out, entries);
        write_text(&mut out, "sensor");
        write_text(&mut out, &r.sensor);
        write_text(&mut out, "ts");
        write_i64(&mut out, r.ts);
        write_text(&mut out, "fields");
        write_map_head(&mut out, r.fields.len());
        for (name, value) in &r.fields {
            write_text(&mut out, name);
            write_f64(&mut out, *value);
        }
        if let Some(kind) = &r.kind {
            write_text(&mut out, "kind");
            write_text(&mut out, kind);
        }
        if !r.tags.is_empty() {
            write_text(&mut out, "tags");
            write_map_head(&mut out, r.tags.len());
            for (k, v) in &r.tags {
                write_text(&mut out, k);
                write_text(&mut out, v);
            }
        }
    }
    out
}

/// Accepted readings, written as a structured batch in CBOR and in JSON,
/// decode to themselves. (JSON: up to serde_json's own float parsing, which
/// is best-effort without its `float_roundtrip` feature, so the expected
/// values are the ones serde_json reads back from their shortest form.)
fn round_trip(readings: &[Reading], ctx: &DecodeContext<'_>, opts: &JsonOptions<'_>) {
    let ctx = DecodeContext {
        max_bytes: usize::MAX,
        ..*ctx
    };
    let mut again = Vec::new();
    let cbor = to_cbor(readings);
    if let Err(e) = decode_with(PayloadFormat::Cbor, &cbor, &ctx, opts, &mut again) {
        panic!("CBOR round trip of {readings:?} refused: {e}");
    }
    assert_eq!(again, readings, "CBOR round trip");

    let expected: Vec<Reading> = readings
        .iter()
        .map(|r| Reading {
            fields: r
                .fields
                .iter()
                .map(|(n, v)| (n.clone(), serde_json::from_str(&json_f64(*v)).unwrap()))
                .collect(),
            ..r.clone()
        })
        .collect();
    let json = to_json(readings);
    again.clear();
    if let Err(e) = decode_with(PayloadFormat::Json, json.as_bytes(), &ctx, opts, &mut again) {
        panic!("JSON round trip of {json} refused: {e}");
    }
    assert_eq!(again, expected, "JSON round trip of {json}");
}

/// The frames of `data` by definition: split at `\n`, drop one `\r` before
/// it, over `max` bytes is too long; an unfinished last line over `max + 1`
/// bytes is reported too long already.
fn reference_frames(data: &[u8], max: usize) -> Vec<LineFrame> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let part = &rest[..nl];
        let line = part.strip_suffix(b"\r").unwrap_or(part);
        out.push((line.len() <= max).then(|| line.to_vec()));
        rest = &rest[nl + 1..];
    }
    if rest.len() > max + 1 {
        out.push(None);
    }
    out
}

fn frames_chunked(data: &[u8], sizes: &[usize]) -> Vec<LineFrame> {
    let mut framer = LineFramer::new(MAX_LINE);
    let mut out = Vec::new();
    let mut rest = data;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        framer.feed(chunk, &mut out);
        assert!(framer.buffered() <= MAX_LINE + 1, "framer buffer unbounded");
        rest = tail;
    }
    out
}

fn check_framing(data: &[u8], ctx: &DecodeContext<'_>) {
    let expected = reference_frames(data, MAX_LINE);
    let whole = frames_chunked(data, &[usize::MAX]);
    assert_eq!(whole, expected, "framer differs from the reference");
    for sizes in [&[1][..], &[3, 1, 7], &[MAX_LINE, MAX_LINE + 1, 2]] {
        assert_eq!(
            frames_chunked(data, sizes),
            expected,
            "framing depends on chunking {sizes:?}"
        );
    }
    // Each line as the serial source decodes it (blank lines skipped).
    for line in whole.iter().flatten() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let mut out = Vec::new();
        match wasmgate::sources::decode::decode(PayloadFormat::KeyValue, line, ctx, &mut out) {
            Ok(n) => assert_eq!(n, out.len()),
            Err(e) => assert!(out.is_empty() && !e.to_string().is_empty()),
        }
    }
}
