//! Output of `wasmgate replay`: one JSON object per line and reading.
//!
//! ```text
//! {"stream":"greenhouse","sensor":"s1","ts":1714564800000,"time":"2024-05-01T12:00:00.000Z","fields":{"temp":70.7},"kind":"alert","tags":{"level":"warning"}}
//! ```
//!
//! The bytes are deterministic, so two replays can be compared with `cmp`:
//! keys in exactly that order; `kind` only when set and `tags` only when
//! non-empty; `time` is `ts` as RFC 3339 UTC with milliseconds (`null` when
//! the year is outside 0000..=9999); fields and tags in reading order; floats
//! in the shortest form that round-trips, always with a `.` or an exponent
//! (`70.0`, `0.1`, `1e+21`); a non-finite float (never produced by the data
//! path, which refuses them) is written as `null`.

use std::io::{self, Write};

use chrono::{DateTime, Datelike, Timelike};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::reading::Reading;

/// Writes readings as JSON Lines to `W`, reusing one line buffer.
///
/// Each [`JsonlWriter::write`] issues one `write_all` of a whole line, so
/// wrap unbuffered sinks such as stdout in a [`std::io::BufWriter`].
pub struct JsonlWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    lines: u64,
}

impl<W: Write> JsonlWriter<W> {
    /// A writer to `out`.
    pub fn new(out: W) -> Self {
        JsonlWriter {
            out,
            line: Vec::with_capacity(256),
            lines: 0,
        }
    }

    /// Write `reading`, output of stream `stream`, as one line.
    pub fn write(&mut self, stream: &str, reading: &Reading) -> io::Result<()> {
        self.write_scored(stream, reading, &[])
    }

    /// Write `reading` with the detectors' verdicts on its fields (a
    /// `"scores"` array, omitted when empty).
    pub fn write_scored(
        &mut self,
        stream: &str,
        reading: &Reading,
        scores: &[crate::detect::FieldScore],
    ) -> io::Result<()> {
        self.line.clear();
        format_line(&mut self.line, stream, reading)?;
        if !scores.is_empty() {
            // Reopen the object: drop "}\n", append the scores, close again.
            self.line.truncate(self.line.len() - 2);
            let mut f = CompactFormatter;
            self.line.extend_from_slice(b",\"scores\":[");
            for (i, sc) in scores.iter().enumerate() {
                if i > 0 {
                    self.line.push(b',');
                }
                self.line.extend_from_slice(b"{\"field\":");
                write_str(&mut self.line, &sc.field);
                self.line.extend_from_slice(b",\"detector\":");
                write_str(&mut self.line, &sc.detector);
                self.line.extend_from_slice(b",\"score\":");
                f.write_f64(&mut self.line, sc.score)?;
                self.line.extend_from_slice(b",\"flag\":");
                self.line
                    .extend_from_slice(if sc.flag { b"true" } else { b"false" });
                self.line.push(b'}');
            }
            self.line.extend_from_slice(b"]}\n");
        }
        self.out.write_all(&self.line)?;
        self.lines += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    /// Flush the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The underlying writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Give back the underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Append one output line for `reading` (with its trailing `\n`) to `buf`.
///
/// Writing to a `Vec` cannot fail; the `io::Result` comes from the
/// serde_json formatter primitives used.
pub fn format_line(buf: &mut Vec<u8>, stream: &str, reading: &Reading) -> io::Result<()> {
    let mut f = CompactFormatter;
    buf.extend_from_slice(b"{\"stream\":");
    write_str(buf, stream);
    buf.extend_from_slice(b",\"sensor\":");
    write_str(buf, &reading.sensor);
    buf.extend_from_slice(b",\"ts\":");
    f.write_i64(buf, reading.ts)?;
    buf.extend_from_slice(b",\"time\":");
    write_time(buf, reading.ts)?;
    buf.extend_from_slice(b",\"fields\":{");
    for (i, (name, value)) in reading.fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, name);
        buf.push(b':');
        if value.is_finite() {
            f.write_f64(buf, *value)?;
        } else {
            buf.extend_from_slice(b"null");
        }
    }
    buf.push(b'}');
    if let Some(kind) = &reading.kind {
        buf.extend_from_slice(b",\"kind\":");
        write_str(buf, kind);
    }
    if !reading.tags.is_empty() {
        buf.extend_from_slice(b",\"tags\":{");
        for (i, (k, v)) in reading.tags.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(buf, k);
            buf.push(b':');
            write_str(buf, v);
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// Append `s` as a JSON string, escaped as serde_json does: `"`, `\\` and
/// control characters only (`\n`-style where JSON has one, else `\u00xx`).
fn write_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"` for `ts` ms since the epoch, or `null`.
fn write_time(buf: &mut Vec<u8>, ts: i64) -> io::Result<()> {
    match DateTime::from_timestamp_millis(ts) {
        Some(t) if (0..=9999).contains(&t.year()) => write!(
            buf,
            "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            ts.rem_euclid(1000)
        ),
        _ => {
            buf.extend_from_slice(b"null");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: &str, r: &Reading) -> String {
        let mut w = JsonlWriter::new(Vec::new());
        w.write(stream, r).unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn full_reading() {
        let mut r = Reading::new("s1", 1_714_564_800_000).with_field("temp", 70.7);
        r.kind = Some("alert".into());
        r.tags = vec![("level".into(), "warning".into())];
        assert_eq!(
            line("greenhouse", &r),
            "{\"stream\":\"greenhouse\",\"sensor\":\"s1\",\"ts\":1714564800000,\
             \"time\":\"2024-05-01T12:00:00.000Z\",\"fields\":{\"temp\":70.7},\
             \"kind\":\"alert\",\"tags\":{\"level\":\"warning\"}}\n"
        );
    }

    #[test]
    fn plain_measurement_omits_kind_and_tags() {
        let r = Reading::new("greenhouse/north", 1_714_543_210_123)
            .with_field("temp_f", 70.0)
            .with_field("humidity", 61.5)
            .with_field("tiny", 1e-7)
            .with_field("neg", -0.25)
            .with_field("big", 1e21)
            .with_field("int", 3.0);
        assert_eq!(
            line("replay", &r),
            "{\"stream\":\"replay\",\"sensor\":\"greenhouse/north\",\"ts\":1714543210123,\
             \"time\":\"2024-05-01T06:00:10.123Z\",\"fields\":{\"temp_f\":70.0,\"humidity\":61.5,\
             \"tiny\":1e-7,\"neg\":-0.25,\"big\":1e+21,\"int\":3.0}}\n"
        );
    }

    #[test]
    fn empty_fields_and_escaping() {
        let mut r = Reading::new("a\"b\\c\nd\u{1}é", 0);
        r.kind = Some("k\t".into());
        r.tags = vec![("x".into(), "1".into()), ("\"".into(), "".into())];
        let l = line("s", &r);
        assert_eq!(
            l,
            "{\"stream\":\"s\",\"sensor\":\"a\\\"b\\\\c\\nd\\u0001é\",\"ts\":0,\
             \"time\":\"1970-01-01T00:00:00.000Z\",\"fields\":{},\"kind\":\"k\\t\",\
             \"tags\":{\"x\":\"1\",\"\\\"\":\"\"}}\n"
        );
        // It is valid JSON that decodes back to the same strings.
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["sensor"], "a\"b\\c\nd\u{1}é");
        assert_eq!(v["tags"]["\""], "");
    }

    #[test]
    fn times_before_epoch_and_out_of_range() {
        let t = |ts: i64| {
            let l = line("s", &Reading::new("x", ts));
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            v["time"].clone()
        };
        assert_eq!(t(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(t(-1000), "1969-12-31T23:59:59.000Z");
        assert_eq!(t(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(t(253_402_300_800_000), serde_json::Value::Null);
        assert_eq!(t(i64::MIN), serde_json::Value::Null);
        assert_eq!(t(i64::MAX), serde_json::Value::Null);
        assert_eq!(t(-62_167_219_200_000), "0000-01-01T00:00:00.000Z");
        assert_eq!(t(-62_167_219_200_001), serde_json::Value::Null);
    }

    #[test]
    fn non_finite_is_null_and_floats_round_trip() {
        let r = Reading::new("x", 0)
            .with_field("nan", f64::NAN)
            .with_field("inf", f64::INFINITY)
            .with_field("pi", std::f64::consts::PI)
            .with_field("third", 1.0 / 3.0);
        let l = line("s", &r);
        assert!(l.contains("\"nan\":null,\"inf\":null,"), "{l}");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["fields"]["pi"].as_f64(), Some(std::f64::consts::PI));
        assert_eq!(v["fields"]["third"].as_f64(), Some(1.0 / 3.0));
    }

    #[test]
    fn several_lines_reuse_the_buffer() {
        let mut w = JsonlWriter::new(Vec::new());
        let long = Reading::new("s".repeat(300), 1).with_field("v", 1.0);
        let short = Reading::new("t", 2);
        w.write("a", &long).unwrap();
        let cap = w.line.capacity();
        w.write("a", &short).unwrap();
        w.write("a", &long).unwrap();
        assert_eq!(w.line.capacity(), cap);
        assert_eq!(w.lines_written(), 3);
        w.flush().unwrap();
        assert!(w.get_ref().ends_with(b"}\n"));
        w.get_mut().clear();
        assert!(w.into_inner().is_empty());
    }

    #[test]
    fn output_reads_back_as_input() {
        use crate::replay::input::{InputFormat, InputReader};
        let mut r = Reading::new("g/n", 1_714_564_800_123)
            .with_field("temp_f", 70.7)
            .with_field("z", -1.0);
        r.kind = Some("alert".into());
        r.tags = vec![("level".into(), "warning".into())];
        let plain = Reading::new("g/s", 5).with_field("a", 2.0);
        let mut w = JsonlWriter::new(Vec::new());
        w.write("greenhouse", &r).unwrap();
        w.write("greenhouse", &plain).unwrap();
        let bytes = w.into_inner();
        let back: Vec<Reading> =
            InputReader::from_reader(std::io::Cursor::new(bytes), InputFormat::Jsonl, "out.jsonl")
                .unwrap()
                .map(|x| x.unwrap().1)
                .collect();
        assert_eq!(back, [r, plain]);
    }
}
