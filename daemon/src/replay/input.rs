//! Recorded sensor data for `wasmgate replay`: CSV and JSON Lines files,
//! read as a stream of [`Reading`]s without loading the file into memory.
//!
//! # CSV
//!
//! ```text
//! timestamp,sensor,temp,humidity
//! 2024-05-01T06:00:00Z,greenhouse/north,17.30,78.9
//! 2024-05-01 06:00:10,greenhouse/north,17.07,
//! ```
//!
//! - A header row is required. One column named `timestamp`, `ts` or `time`
//!   (ASCII case-insensitive) holds the timestamp; an optional `sensor`
//!   column the sensor id (without one, every reading gets the default
//!   sensor id: the file stem, `greenhouse.csv` → `greenhouse`). Every other
//!   column is a numeric field, in header order.
//! - Cells are trimmed. An empty cell means the field is absent from that
//!   reading. A cell that is not a finite number (`abc`, `nan`, `inf`) is an
//!   error; so is a row with a different number of cells than the header.
//! - Quoting follows RFC 4180 (stray quotes are read leniently, as the `csv`
//!   crate does); lines may end in `\n` or `\r\n`; blank lines are skipped;
//!   a UTF-8 byte-order mark is ignored. There is no comment syntax.
//!
//! # JSON Lines (`.jsonl`, `.ndjson`, `.json`)
//!
//! One JSON object per line; blank lines are skipped. Either nested:
//!
//! ```text
//! {"sensor": "s1", "ts": 1714564800000, "fields": {"temp": 21.5}, "kind": "alert", "tags": {"level": "warning"}}
//! ```
//!
//! or flat, where every key other than the special ones is a numeric field:
//!
//! ```text
//! {"sensor": "s1", "timestamp": "2024-05-01T06:00:00Z", "temp": 21.5, "humidity": 60}
//! ```
//!
//! Each line is read by the MQTT/serial `json` decoder
//! ([`crate::sources::decode`], whose rules apply: booleans are 1 and 0,
//! `null` means absent, sensor ids and field names are checked, a line may
//! also be an array of readings) with these extensions: `ts` or `timestamp`
//! is required; `sensor` defaults to the file stem; `kind` (a string) and
//! `tags` (an object of strings) are read; a reading may have no fields;
//! `stream` and `time` are ignored, so the output of `replay` (see
//! [`super::output`]) can be replayed again. Fields keep the key order.
//!
//! # Timestamps
//!
//! Accepted in both formats (see [`parse_timestamp`]):
//!
//! - an integer: **always** milliseconds since the Unix epoch, whatever its
//!   magnitude (`1714564800000`; `1714564800` is 1970-01-20, not 2024);
//! - RFC 3339 with `Z` or an offset, optionally with fractional seconds
//!   (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`);
//! - `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS` without an offset,
//!   optionally with fractional seconds, taken as UTC.
//!
//! Sub-millisecond digits are truncated.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime};

use crate::reading::Reading;
use crate::sources::decode::{DecodeContext, DecodeError, JsonOptions, PayloadFormat, decode_with};

/// Read buffer size for input files.
const BUF_CAPACITY: usize = 64 * 1024;

/// What a timestamp may look like, for error messages.
const TIMESTAMP_FORMS: &str =
    "expected RFC 3339, \"YYYY-MM-DD HH:MM:SS\" or integer epoch milliseconds";

/// The layout of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl InputFormat {
    /// The format implied by `path`'s extension (ASCII case-insensitive):
    /// `.csv` → CSV; `.jsonl`, `.ndjson`, `.json` → JSON Lines.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("csv") {
            Some(InputFormat::Csv)
        } else if ["jsonl", "ndjson", "json"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e))
        {
            Some(InputFormat::Jsonl)
        } else {
            None
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::Csv => "csv",
            InputFormat::Jsonl => "jsonl",
        })
    }
}

/// A format name that is not one of `csv`, `jsonl`, `ndjson`, `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown input format {0:?} (expected csv or jsonl)")]
pub struct UnknownFormatName(pub String);

impl FromStr for InputFormat {
    type Err = UnknownFormatName;

    /// `csv`, or `jsonl` / `ndjson` / `json` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(InputFormat::Csv),
            "jsonl" | "ndjson" | "json" => Ok(InputFormat::Jsonl),
            _ => Err(UnknownFormatName(s.to_string())),
        }
    }
}

/// An input file that cannot be read, or a record in it that is invalid.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// No format was given and the extension does not tell.
    #[error(
        "{}: cannot tell the input format from the file name (use .csv, .jsonl, .ndjson or .json, or name the format)",
        file.display()
    )]
    UnknownFormat {
        /// The input file.
        file: PathBuf,
    },
    /// The file could not be opened.
    #[error("{}: cannot open: {source}", file.display())]
    Open {
        /// The input file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading failed; the reader stops after this error.
    #[error("{}:{line}: read error: {source}", file.display())]
    Read {
        /// The input file.
        file: PathBuf,
        /// The line being read.
        line: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// One record (or the CSV header) is invalid. A header error ends the
    /// input; after a record error, reading can go on with the next record.
    #[error("{}:{line}: {cause}", file.display())]
    Record {
        /// The input file.
        file: PathBuf,
        /// 1-based line where the record starts.
        line: u64,
        /// What is wrong with it.
        cause: RecordError,
    },
}

impl InputError {
    /// The input file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            InputError::UnknownFormat { file }
            | InputError::Open { file, .. }
            | InputError::Read { file, .. }
            | InputError::Record { file, .. } => file,
        }
    }

    /// The 1-based line, when the error is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            InputError::Read { line, .. } | InputError::Record { line, .. } => Some(*line),
            InputError::UnknownFormat { .. } | InputError::Open { .. } => None,
        }
    }
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The file has no header row.
    #[error("empty file: a header row is required")]
    NoHeader,
    /// The header names no timestamp column.
    #[error("header: no timestamp column (name one \"timestamp\", \"ts\" or \"time\")")]
    NoTimestampColumn,
    /// Two header columns play the same special role.
    #[error("header: two {role} columns, {first:?} and {second:?}")]
    TwoSpecialColumns {
        /// `timestamp` or `sensor`.
        role: &'static str,
        /// The first column's name.
        first: String,
        /// The second column's name.
        second: String,
    },
    /// A header cell is empty.
    #[error("header: column {index} has an empty name")]
    EmptyColumnName {
        /// 1-based column number.
        index: usize,
    },
    /// A column name appears twice.
    #[error("header: duplicate column {name:?}")]
    DuplicateColumn {
        /// The repeated name.
        name: String,
    },
    /// A row with a different number of cells than the header.
    #[error("expected {expected} cells (as in the header), found {found}")]
    CellCount {
        /// Cells in the header.
        expected: usize,
        /// Cells in this row.
        found: usize,
    },
    /// A cell that does not parse as a number.
    #[error("{place}: {value:?} is not a number")]
    NotANumber {
        /// The column.
        place: Place,
        /// The value as written.
        value: String,
    },
    /// A number that is NaN or infinite.
    #[error("{place}: {value:?} is not a finite number")]
    NotFinite {
        /// The column.
        place: Place,
        /// The value as written.
        value: String,
    },
    /// A timestamp in none of the accepted forms.
    #[error("{place}: {value:?} is not a timestamp ({TIMESTAMP_FORMS})")]
    BadTimestamp {
        /// The column.
        place: Place,
        /// The value as written.
        value: String,
    },
    /// An empty timestamp cell.
    #[error("{place}: empty timestamp")]
    EmptyTimestamp {
        /// The column.
        place: Place,
    },
    /// An empty sensor cell.
    #[error("{place}: empty sensor id")]
    EmptySensor {
        /// The column.
        place: Place,
    },
    /// Bytes that are not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A JSON line that is not valid JSON or not a valid reading.
    #[error("{0}")]
    Json(String),
}

/// Where in a record a value is: a CSV column (JSON errors are
/// [`RecordError::Json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A CSV column, by header name.
    Column(String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Column(c) => write!(f, "column {c:?}"),
        }
    }
}

/// Parse a timestamp in one of the accepted forms (see the module docs) to
/// milliseconds since the Unix epoch. Integers are always milliseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok();
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    None
}

/// A streaming reader of recorded readings.
///
/// Iterating yields `(line, reading)` with the 1-based line the record
/// starts on, or an [`InputError`]. After a record error the next call
/// continues with the next record; after a read (I/O) error iteration ends.
pub struct InputReader<R: Read> {
    file: PathBuf,
    default_sensor: String,
    total_bytes: Option<u64>,
    done: bool,
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Csv(Box<CsvInput<R>>),
    Jsonl(JsonlInput<R>),
}

impl InputReader<File> {
    /// Open `path`, in `format` or else the format its extension implies.
    /// For CSV the header row is read and checked here.
    pub fn open(
        path: impl AsRef<Path>,
        format: Option<InputFormat>,
    ) -> Result<InputReader<File>, InputError> {
        let path = path.as_ref();
        let format = match format.or_else(|| InputFormat::from_path(path)) {
            Some(f) => f,
            None => {
                return Err(InputError::UnknownFormat {
                    file: path.to_path_buf(),
                });
            }
        };
        let open_err = |source| InputError::Open {
            file: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let total = file.metadata().map_err(open_err)?.len();
        let mut reader = InputReader::from_reader(file, format, path)?;
        reader.total_bytes = Some(total);
        Ok(reader)
    }
}

impl<R: Read> InputReader<R> {
    /// Read `format` from `reader`. `source` names the input in error
    /// messages and gives the default sensor id (its file stem).
    pub fn from_reader(
        reader: R,
        format: InputFormat,
        source: impl AsRef<Path>,
    ) -> Result<InputReader<R>, InputError> {
        let file = source.as_ref().to_path_buf();
        let default_sensor = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let inner = match format {
            InputFormat::Csv => Inner::Csv(Box::new(
                CsvInput::new(reader).map_err(|(line, e)| into_error(&file, line, e))?,
            )),
            InputFormat::Jsonl => Inner::Jsonl(JsonlInput {
                reader: BufReader::with_capacity(BUF_CAPACITY, reader),
                buf: Vec::new(),
                line: 0,
                bytes: 0,
                pending: Vec::new(),
            }),
        };
        Ok(InputReader {
            file,
            default_sensor,
            total_bytes: None,
            done: false,
            inner,
        })
    }

    /// Use `sensor` for readings that do not name their sensor, instead of
    /// the file stem.
    pub fn with_default_sensor(mut self, sensor: impl Into<String>) -> Self {
        self.default_sensor = sensor.into();
        self
    }

    /// The sensor id given to readings that do not name one.
    pub fn default_sensor(&self) -> &str {
        &self.default_sensor
    }

    /// The input's name, as used in error messages.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The format being read.
    pub fn format(&self) -> InputFormat {
        match self.inner {
            Inner::Csv(_) => InputFormat::Csv,
            Inner::Jsonl(_) => InputFormat::Jsonl,
        }
    }

    /// Size of the input in bytes, when known ([`InputReader::open`] knows
    /// it); for a progress bar together with [`InputReader::bytes_read`].
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// Bytes of input consumed by the records returned so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.inner {
            Inner::Csv(c) => c.bytes,
            Inner::Jsonl(j) => j.bytes,
        }
    }

    /// Set the total size reported by [`InputReader::total_bytes`] (for
    /// inputs built with [`InputReader::from_reader`]).
    pub fn set_total_bytes(&mut self, total: Option<u64>) {
        self.total_bytes = total;
    }
}

impl<R: Read> Iterator for InputReader<R> {
    type Item = Result<(u64, Reading), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let res = match &mut self.inner {
            Inner::Csv(c) => c.next(&self.default_sensor),
            Inner::Jsonl(j) => j.next(&self.default_sensor),
        };
        match res {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err((line, e)) => {
                if matches!(e, Failure::Io(_)) {
                    self.done = true;
                }
                Some(Err(into_error(&self.file, line, e)))
            }
        }
    }
}

/// A failure inside a format reader, before the file name is attached.
enum Failure {
    Io(io::Error),
    Record(RecordError),
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        Failure::Record(e)
    }
}

fn into_error(file: &Path, line: u64, f: Failure) -> InputError {
    match f {
        Failure::Io(source) => InputError::Read {
            file: file.to_path_buf(),
            line,
            source,
        },
        Failure::Record(cause) => InputError::Record {
            file: file.to_path_buf(),
            line,
            cause,
        },
    }
}

type Step<T> = Result<T, (u64, Failure)>;

// ---------------------------------------------------------------------------
// CSV

/// CSV records read with `csv_core`, which (unlike `csv::Reader`) lets us
/// see every byte consumed, so the line a record starts on is exact even
/// after blank lines and with `\r\n` endings.
struct CsvInput<R: Read> {
    src: BufReader<R>,
    core: csv_core::Reader,
    /// Unescaped field bytes of the current record, reused.
    out: Vec<u8>,
    /// End offsets of the current record's fields in `out`, reused.
    ends: Vec<usize>,
    /// Number of fields in the current record.
    n_fields: usize,
    /// The physical line at the read position, 1-based.
    line: u64,
    /// Bytes consumed so far.
    bytes: u64,
    /// Header names, trimmed.
    columns: Vec<String>,
    ts_col: usize,
    sensor_col: Option<usize>,
    /// Indices of the field columns, in header order.
    field_cols: Vec<usize>,
}

impl<R: Read> CsvInput<R> {
    fn new(reader: R) -> Step<Self> {
        let mut input = CsvInput {
            src: BufReader::with_capacity(BUF_CAPACITY, reader),
            core: csv_core::Reader::new(),
            out: vec![0; 1024],
            ends: vec![0; 32],
            n_fields: 0,
            line: 1,
            bytes: 0,
            columns: Vec::new(),
            ts_col: 0,
            sensor_col: None,
            field_cols: Vec::new(),
        };
        let Some(line) = input.read_raw()? else {
            return Err((1, RecordError::NoHeader.into()));
        };
        input.parse_header().map_err(|e| (line, e.into()))?;
        Ok(input)
    }

    /// Read the next non-blank record into `out`/`ends`; its start line.
    fn read_raw(&mut self) -> Step<Option<u64>> {
        loop {
            let Some(start) = self.read_one()? else {
                return Ok(None);
            };
            // A line of only whitespace is blank too.
            let blank = self.n_fields == 1 && self.out[..self.ends[0]].trim_ascii().is_empty();
            if !blank {
                return Ok(Some(start));
            }
        }
    }

    fn read_one(&mut self) -> Step<Option<u64>> {
        let (mut nout_total, mut nend_total) = (0usize, 0usize);
        let mut start: Option<u64> = None;
        loop {
            let input = self
                .src
                .fill_buf()
                .map_err(|e| (start.unwrap_or(self.line), Failure::Io(e)))?;
            let (res, nin, nout, nend) = self.core.read_record(
                input,
                &mut self.out[nout_total..],
                &mut self.ends[nend_total..],
            );
            for &b in &input[..nin] {
                // A record never starts with a line break: those are the end
                // of the previous record or blank lines, which csv_core skips.
                if start.is_none() && b != b'\r' && b != b'\n' {
                    start = Some(self.line);
                }
                if b == b'\n' {
                    self.line += 1;
                }
            }
            self.src.consume(nin);
            self.bytes += nin as u64;
            nout_total += nout;
            nend_total += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.n_fields = nend_total;
                    return Ok(Some(start.unwrap_or(self.line)));
                }
                csv_core::ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// Cell `i` of the current record, trimmed.
    fn cell(&self, i: usize) -> Result<&str, RecordError> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let bytes = self.out.get(start..self.ends[i]).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::trim)
            .map_err(|_| RecordError::NotUtf8)
    }

    fn parse_header(&mut self) -> Result<(), RecordError> {
        let mut columns: Vec<String> = Vec::with_capacity(self.n_fields);
        let mut ts_col: Option<usize> = None;
        let mut sensor_col: Option<usize> = None;
        let mut field_cols = Vec::with_capacity(self.n_fields);
        for i in 0..self.n_fields {
            let name = self.cell(i)?.trim_start_matches('\u{feff}');
            if name.is_empty() {
                return Err(RecordError::EmptyColumnName { index: i + 1 });
            }
            if columns.iter().any(|c| c == name) {
                return Err(RecordError::DuplicateColumn {
                    name: name.to_string(),
                });
            }
            let is_ts = ["timestamp", "ts", "time"]
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t));
            let slot = if is_ts {
                Some((&mut ts_col, "timestamp"))
            } else if name.eq_ignore_ascii_case("sensor") {
                Some((&mut sensor_col, "sensor"))
            } else {
                None
            };
            match slot {
                Some((slot, role)) => {
                    if let Some(first) = *slot {
                        return Err(RecordError::TwoSpecialColumns {
                            role,
                            first: columns[first].clone(),
                            second: name.to_string(),
                        });
                    }
                    *slot = Some(i);
                }
                None => field_cols.push(i),
            }
            columns.push(name.to_string());
        }
        self.ts_col = ts_col.ok_or(RecordError::NoTimestampColumn)?;
        self.sensor_col = sensor_col;
        self.columns = columns;
        self.field_cols = field_cols;
        Ok(())
    }

    fn next(&mut self, default_sensor: &str) -> Step<Option<(u64, Reading)>> {
        let Some(line) = self.read_raw()? else {
            return Ok(None);
        };
        self.parse_record(default_sensor)
            .map(|r| Some((line, r)))
            .map_err(|e| (line, Failure::Record(e)))
    }

    fn parse_record(&self, default_sensor: &str) -> Result<Reading, RecordError> {
        if self.n_fields != self.columns.len() {
            return Err(RecordError::CellCount {
                expected: self.columns.len(),
                found: self.n_fields,
            });
        }
        let column = |i: usize| Place::Column(self.columns[i].clone());

        let ts_cell = self.cell(self.ts_col)?;
        if ts_cell.is_empty() {
            return Err(RecordError::EmptyTimestamp {
                place: column(self.ts_col),
            });
        }
        let ts = parse_timestamp(ts_cell).ok_or_else(|| RecordError::BadTimestamp {
            place: column(self.ts_col),
            value: ts_cell.to_string(),
        })?;

        let sensor = match self.sensor_col {
            Some(i) => {
                let s = self.cell(i)?;
                if s.is_empty() {
                    return Err(RecordError::EmptySensor { place: column(i) });
                }
                s.to_string()
            }
            None => default_sensor.to_string(),
        };

        let mut fields = Vec::with_capacity(self.field_cols.len());
        for &i in &self.field_cols {
            let v = self.cell(i)?;
            if v.is_empty() {
                continue;
            }
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => fields.push((self.columns[i].clone(), x)),
                Ok(_) => {
                    return Err(RecordError::NotFinite {
                        place: column(i),
                        value: v.to_string(),
                    });
                }
                Err(_) => {
                    return Err(RecordError::NotANumber {
                        place: column(i),
                        value: v.to_string(),
                    });
                }
            }
        }
        Ok(Reading {
            sensor,
            ts,
            fields,
            kind: None,
            tags: Vec::new(),
        })
    }
}

// ---------------------------------------------------------------------------
// JSON Lines

struct JsonlInput<R: Read> {
    reader: BufReader<R>,
    /// The current line, reused.
    buf: Vec<u8>,
    line: u64,
    bytes: u64,
    /// Readings of the current line not returned yet, last first (a line
    /// may hold a batch).
    pending: Vec<Reading>,
}

/// The decoder's extensions replay uses: derived records, a required
/// timestamp, and the keys of replay's own output that are not data.
const JSONL_OPTIONS: JsonOptions<'static> = JsonOptions {
    accept_derived: true,
    ignore_keys: &["stream", "time", "scores"],
    require_ts: true,
    allow_no_fields: true,
};

impl<R: Read> JsonlInput<R> {
    fn next(&mut self, default_sensor: &str) -> Step<Option<(u64, Reading)>> {
        if let Some(r) = self.pending.pop() {
            return Ok(Some((self.line, r)));
        }
        let ctx = DecodeContext {
            sensor: Some(default_sensor),
            max_fields: usize::MAX,
            max_bytes: usize::MAX,
            ..DecodeContext::new(0)
        };
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| (self.line + 1, Failure::Io(e)))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.bytes += n as u64;
            let line = self.line;
            let text = std::str::from_utf8(&self.buf)
                .map_err(|_| (line, Failure::Record(RecordError::NotUtf8)))?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let pending = &mut self.pending;
            decode_with(
                PayloadFormat::Json,
                text.as_bytes(),
                &ctx,
                &JSONL_OPTIONS,
                pending,
            )
            .map_err(|e| (line, Failure::Record(record_error(e))))?;
            pending.reverse();
            if let Some(r) = pending.pop() {
                return Ok(Some((line, r)));
            }
        }
    }
}

/// A decoder error in replay's words: values named by their key, and
/// serde_json's "at line 1 column N" dropped (syntax errors keep the column).
fn record_error(e: DecodeError) -> RecordError {
    RecordError::Json(match e {
        DecodeError::NotANumber { field, value } => {
            format!("key {field:?}: {value} is not a number")
        }
        DecodeError::BadTimestamp { key, value } => {
            format!("key {key:?}: {value} is not a timestamp ({TIMESTAMP_FORMS})")
        }
        DecodeError::MalformedJson(m) => match split_position(&m) {
            (base, Some(column)) => format!("invalid JSON: {base} (column {column})"),
            (base, None) => format!("invalid JSON: {base}"),
        },
        other => split_position(&other.to_string()).0.to_string(),
    })
}

/// `"… at line L column C"` → `("…", Some("C"))`.
fn split_position(m: &str) -> (&str, Option<&str>) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match m
        .rsplit_once(" at line ")
        .map(|(base, pos)| (base, pos.split_once(" column ")))
    {
        Some((base, Some((l, c)))) if digits(l) && digits(c) => (base, Some(c)),
        _ => (m, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn csv(text: &str) -> Result<InputReader<Cursor<Vec<u8>>>, InputError> {
        InputReader::from_reader(
            Cursor::new(text.as_bytes().to_vec()),
            InputFormat::Csv,
            "greenhouse.csv",
        )
    }

    fn jsonl(text: &str) -> InputReader<Cursor<Vec<u8>>> {
        InputReader::from_reader(
            Cursor::new(text.as_bytes().to_vec()),
            InputFormat::Jsonl,
            "data.jsonl",
        )
        .unwrap()
    }

    /// All items, errors as their messages.
    fn collect<R: Read>(r: InputReader<R>) -> Vec<Result<(u64, Reading), String>> {
        r.map(|x| x.map_err(|e| e.to_string())).collect()
    }

    fn only_err<R: Read>(r: InputReader<R>) -> String {
        let items = collect(r);
        let errs: Vec<_> = items.into_iter().filter_map(Result::err).collect();
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

    #[test]
    fn format_from_extension_and_name() {
        let f = |p: &str| InputFormat::from_path(Path::new(p));
        assert_eq!(f("a/b.csv"), Some(InputFormat::Csv));
        assert_eq!(f("b.CSV"), Some(InputFormat::Csv));
        assert_eq!(f("b.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(f("b.ndjson"), Some(InputFormat::Jsonl));
        assert_eq!(f("b.json"), Some(InputFormat::Jsonl));
        assert_eq!(f("b.txt"), None);
        assert_eq!(f("csv"), None);
        assert_eq!("CSV".parse::<InputFormat>(), Ok(InputFormat::Csv));
        assert_eq!("ndjson".parse::<InputFormat>(), Ok(InputFormat::Jsonl));
        assert_eq!(
            "xml".parse::<InputFormat>().unwrap_err().to_string(),
            "unknown input format \"xml\" (expected csv or jsonl)"
        );
        assert_eq!(InputFormat::Jsonl.to_string(), "jsonl");
    }

    #[test]
    fn timestamps() {
        let p = parse_timestamp;
        assert_eq!(p("2024-05-01T12:00:00Z"), Some(T0));
        assert_eq!(p("2024-05-01T12:00:00.250Z"), Some(T0 + 250));
        assert_eq!(p("2024-05-01T12:00:00.2509Z"), Some(T0 + 250));
        assert_eq!(p("2024-05-01T14:00:00+02:00"), Some(T0));
        assert_eq!(p("2024-05-01T12:00:00.5-01:30"), Some(T0 + 5_400_000 + 500));
        assert_eq!(p("2024-05-01 12:00:00"), Some(T0));
        assert_eq!(p("2024-05-01 12:00:00.125"), Some(T0 + 125));
        assert_eq!(p("2024-05-01T12:00:00"), Some(T0));
        assert_eq!(p("2024-05-01T12:00:00.1"), Some(T0 + 100));
        assert_eq!(p("1714564800000"), Some(T0));
        assert_eq!(p("1714564800"), Some(1_714_564_800), "integers are ms");
        assert_eq!(p("-5"), Some(-5));
        assert_eq!(p("0"), Some(0));
        assert_eq!(p("99999999999999999999"), None);
        assert_eq!(p("2024-05-01"), None);
        assert_eq!(p("2024-13-01T00:00:00Z"), None);
        assert_eq!(p("12:00:00"), None);
        assert_eq!(p("1.5"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("-"), None);
        assert_eq!(p("yesterday"), None);
    }

    #[test]
    fn csv_basic() {
        let text = "timestamp,sensor,temp,humidity\n\
                    2024-05-01T12:00:00Z,greenhouse/north,21.5,60\n\
                    \n\
                    2024-05-01 12:00:10 , greenhouse/south , 22 , \n\
                    1714564820000,greenhouse/north,,61.5\n";
        let r = csv(text).unwrap();
        assert_eq!(r.format(), InputFormat::Csv);
        let items: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            (
                2,
                Reading::new("greenhouse/north", T0)
                    .with_field("temp", 21.5)
                    .with_field("humidity", 60.0)
            )
        );
        assert_eq!(
            items[1],
            (
                4,
                Reading::new("greenhouse/south", T0 + 10_000).with_field("temp", 22.0)
            )
        );
        assert_eq!(
            items[2],
            (
                5,
                Reading::new("greenhouse/north", T0 + 20_000).with_field("humidity", 61.5)
            )
        );
    }

    #[test]
    fn csv_default_sensor_crlf_bom_and_aliases() {
        let text = "\u{feff}Humidity,TS,temp\r\n60,2024-05-01T12:00:00Z,1e1\r\n,0,-0.5\r\n";
        let items: Vec<_> = csv(text).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            items,
            [
                (
                    2,
                    Reading::new("greenhouse", T0)
                        .with_field("Humidity", 60.0)
                        .with_field("temp", 10.0)
                ),
                (3, Reading::new("greenhouse", 0).with_field("temp", -0.5)),
            ]
        );
        let r = csv("time,x\n1,2\n").unwrap().with_default_sensor("dev");
        assert_eq!(r.default_sensor(), "dev");
        let items: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(items[0].1.sensor, "dev");
    }

    #[test]
    fn csv_quoted_cells_and_multiline_positions() {
        let text = "timestamp,sensor,\"a,b\"\n0,\"s,1\",\"1.5\"\n1,\"multi\nline\",2\n2,s,3\n";
        let items: Vec<_> = csv(text).unwrap().map(Result::unwrap).collect();
        assert_eq!(items[0].1, Reading::new("s,1", 0).with_field("a,b", 1.5));
        assert_eq!(items[1].0, 3);
        assert_eq!(items[1].1.sensor, "multi\nline");
        assert_eq!(items[2].0, 5);
    }

    #[test]
    fn csv_cell_errors() {
        let text = "timestamp,sensor,temp\n\
                    2024-05-01T12:00:00Z,s,abc\n\
                    2024-05-01T12:00:00Z,s,nan\n\
                    2024-05-01T12:00:00Z,s,inf\n\
                    2024-05-01T12:00:00Z,s\n\
                    2024-05-01T12:00:00Z,s,1,2\n\
                    noon,s,1\n\
                    ,s,1\n\
                    0,,1\n\
                    0,ok,1\n";
        let items = collect(csv(text).unwrap());
        let msgs: Vec<_> = items.into_iter().map(|i| i.map(|x| x.0)).collect();
        assert_eq!(
            msgs,
            [
                Err("greenhouse.csv:2: column \"temp\": \"abc\" is not a number".to_string()),
                Err(
                    "greenhouse.csv:3: column \"temp\": \"nan\" is not a finite number".to_string()
                ),
                Err(
                    "greenhouse.csv:4: column \"temp\": \"inf\" is not a finite number".to_string()
                ),
                Err("greenhouse.csv:5: expected 3 cells (as in the header), found 2".to_string()),
                Err("greenhouse.csv:6: expected 3 cells (as in the header), found 4".to_string()),
                Err(
                    "greenhouse.csv:7: column \"timestamp\": \"noon\" is not a timestamp \
                     (expected RFC 3339, \"YYYY-MM-DD HH:MM:SS\" or integer epoch milliseconds)"
                        .to_string()
                ),
                Err("greenhouse.csv:8: column \"timestamp\": empty timestamp".to_string()),
                Err("greenhouse.csv:9: column \"sensor\": empty sensor id".to_string()),
                Ok(10),
            ]
        );
    }

    #[test]
    fn csv_error_is_typed() {
        let mut r = csv("ts,temp\n0,x\n").unwrap();
        let e = r.next().unwrap().unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert_eq!(e.file(), Path::new("greenhouse.csv"));
        match e {
            InputError::Record { cause, .. } => assert_eq!(
                cause,
                RecordError::NotANumber {
                    place: Place::Column("temp".into()),
                    value: "x".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(r.next().is_none());
    }

    #[test]
    fn csv_header_errors() {
        let e = |t: &str| csv(t).err().map(|e| e.to_string());
        assert_eq!(
            e(""),
            Some("greenhouse.csv:1: empty file: a header row is required".into())
        );
        assert_eq!(
            e("sensor,temp\n"),
            Some(
                "greenhouse.csv:1: header: no timestamp column (name one \"timestamp\", \"ts\" or \"time\")"
                    .into()
            )
        );
        assert_eq!(
            e("ts,temp,temp\n"),
            Some("greenhouse.csv:1: header: duplicate column \"temp\"".into())
        );
        assert_eq!(
            e("ts,temp, \n"),
            Some("greenhouse.csv:1: header: column 3 has an empty name".into())
        );
        assert_eq!(
            e("ts,temp,time\n"),
            Some("greenhouse.csv:1: header: two timestamp columns, \"ts\" and \"time\"".into())
        );
        assert_eq!(
            e("ts,sensor,Sensor\n"),
            Some("greenhouse.csv:1: header: two sensor columns, \"sensor\" and \"Sensor\"".into())
        );
        // Header only: no readings.
        assert!(csv("ts,temp\n").unwrap().next().is_none());
    }

    #[test]
    fn csv_invalid_utf8_then_continue() {
        let mut bytes = b"ts,name\n0,1\n1,\xff\n2,3\n".to_vec();
        bytes.extend_from_slice(b"");
        let r = InputReader::from_reader(Cursor::new(bytes), InputFormat::Csv, "x.csv").unwrap();
        let items = collect(r);
        assert_eq!(items[1], Err("x.csv:3: not valid UTF-8".into()));
        assert_eq!(items[2].as_ref().unwrap().0, 4);
    }

    #[test]
    fn progress_counts_bytes() {
        let text = "ts,v\n0,1\n1,2\n";
        let mut r = csv(text).unwrap();
        assert_eq!(r.bytes_read(), 5);
        r.next();
        assert_eq!(r.bytes_read(), 9);
        r.next();
        assert_eq!(r.bytes_read(), 13);
        assert!(r.next().is_none());
        assert_eq!(r.total_bytes(), None);
        r.set_total_bytes(Some(13));
        assert_eq!(r.total_bytes(), Some(13));

        let mut r = jsonl("{\"ts\":0}\n\n{\"ts\":1}\n");
        assert_eq!(r.bytes_read(), 0);
        r.next();
        assert_eq!(r.bytes_read(), 9);
        r.next();
        assert_eq!(r.bytes_read(), 19);
    }

    #[test]
    fn open_file_reads_size_and_detects_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shed.csv");
        std::fs::write(&path, "ts,temp\n0,1\n").unwrap();
        let r = InputReader::open(&path, None).unwrap();
        assert_eq!(r.total_bytes(), Some(12));
        assert_eq!(r.file(), path);
        let items: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(
            items,
            [(2, Reading::new("shed", 0).with_field("temp", 1.0))]
        );

        let txt = dir.path().join("shed.txt");
        std::fs::write(&txt, "{\"ts\":0}\n").unwrap();
        let e = InputReader::open(&txt, None).err().unwrap();
        assert!(matches!(e, InputError::UnknownFormat { .. }));
        assert!(e.to_string().ends_with(
            "shed.txt: cannot tell the input format from the file name (use .csv, .jsonl, .ndjson or .json, or name the format)"
        ));
        let r = InputReader::open(&txt, Some(InputFormat::Jsonl)).unwrap();
        assert_eq!(r.count(), 1);

        let e = InputReader::open(dir.path().join("none.csv"), None)
            .err()
            .unwrap();
        assert!(matches!(e, InputError::Open { .. }));
        assert!(e.to_string().contains("none.csv: cannot open: "), "{e}");
    }

    #[test]
    fn sample_recording_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/greenhouse.csv");
        let r = InputReader::open(&path, None).unwrap();
        let total = r.total_bytes().unwrap();
        let mut n = 0;
        let mut sensors = std::collections::BTreeSet::new();
        let mut hot = 0;
        let mut last_ts = i64::MIN;
        let mut r = r;
        for item in r.by_ref() {
            let (_, reading) = item.unwrap();
            assert!(reading.ts >= last_ts);
            last_ts = reading.ts;
            if reading.field("temp").unwrap() > 35.0 {
                hot += 1;
            }
            sensors.insert(reading.sensor.clone());
            n += 1;
        }
        assert_eq!(n, 600);
        assert_eq!(r.bytes_read(), total);
        assert!(hot > 10);
        assert_eq!(
            sensors.into_iter().collect::<Vec<_>>(),
            ["greenhouse/north", "greenhouse/south"]
        );
    }

    #[test]
    fn jsonl_nested_and_flat() {
        let text = r#"{"sensor": "s1", "ts": 1714564800000, "fields": {"temp": 21.5, "a": 1}}

{"fields": {"z": 2, "b": -1.25e2}, "kind": "alert", "tags": {"level": "warning", "b": "x"}, "timestamp": "2024-05-01T12:00:00Z", "sensor": "s2"}
   {"sensor":"s3","timestamp":"2024-05-01 12:00:01","temp":21.5,"hum":60,"gone":null}
{"ts": 0, "x": 1}
{"stream":"greenhouse","sensor":"s1","ts":1714564800000,"time":"2024-05-01T12:00:00.000Z","fields":{"temp":70.7},"kind":"alert","tags":{"level":"warning"}}
{"ts": 5, "kind": null, "fields": {}}
"#;
        let items: Vec<_> = jsonl(text).map(Result::unwrap).collect();
        assert_eq!(items.len(), 6);
        assert_eq!(
            items[0],
            (
                1,
                Reading::new("s1", T0)
                    .with_field("temp", 21.5)
                    .with_field("a", 1.0)
            )
        );
        let mut r2 = Reading::new("s2", T0)
            .with_field("z", 2.0)
            .with_field("b", -125.0);
        r2.kind = Some("alert".into());
        r2.tags = vec![("level".into(), "warning".into()), ("b".into(), "x".into())];
        assert_eq!(items[1], (3, r2));
        assert_eq!(
            items[2],
            (
                4,
                Reading::new("s3", T0 + 1000)
                    .with_field("temp", 21.5)
                    .with_field("hum", 60.0)
            )
        );
        assert_eq!(items[3], (5, Reading::new("data", 0).with_field("x", 1.0)));
        // The output format reads back.
        assert_eq!(items[4].1.field("temp"), Some(70.7));
        assert_eq!(items[4].1.kind.as_deref(), Some("alert"));
        assert_eq!(items[5], (7, Reading::new("data", 5)));
    }

    #[test]
    fn jsonl_batches_booleans_and_null_sensor() {
        let text = "[{\"ts\":1,\"a\":true},{\"ts\":2,\"sensor\":\"s\",\"a\":false}]\n{\"ts\":3,\"sensor\":null,\"a\":1}\n";
        let items: Vec<_> = jsonl(text).map(Result::unwrap).collect();
        assert_eq!(
            items,
            [
                (1, Reading::new("data", 1).with_field("a", 1.0)),
                (1, Reading::new("s", 2).with_field("a", 0.0)),
                (2, Reading::new("data", 3).with_field("a", 1.0)),
            ]
        );
    }

    #[test]
    fn jsonl_escaped_keys_and_crlf() {
        let text = "{\"ts\":0,\"t\\u00e9mp\":1}\r\n{\"ts\":1,\"fields\":{\"a\\\"b\":2}}\r\n";
        let items: Vec<_> = jsonl(text).map(Result::unwrap).collect();
        assert_eq!(items[0].1.fields, [("témp".to_string(), 1.0)]);
        assert_eq!(items[1].1.fields, [("a\"b".to_string(), 2.0)]);
    }

    #[test]
    fn jsonl_errors() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"ts": 0, "temp": "abc"}"#,
                "data.jsonl:1: key \"temp\": \"abc\" is not a number",
            ),
            (
                r#"{"ts": 0, "temp": {"a": 1}}"#,
                "data.jsonl:1: key \"temp\": an object is not a number",
            ),
            (
                r#"{"ts": 0, "temp": [1]}"#,
                "data.jsonl:1: key \"temp\": an array is not a number",
            ),
            (
                r#"{"ts": 0, "fields": {"temp": "21"}}"#,
                "data.jsonl:1: key \"temp\": \"21\" is not a number",
            ),
            (
                r#"{"sensor": "s"}"#,
                "data.jsonl:1: missing key \"ts\" (or \"timestamp\")",
            ),
            (
                r#"{"ts": "noon"}"#,
                "data.jsonl:1: key \"ts\": \"noon\" is not a timestamp (expected RFC 3339, \
                 \"YYYY-MM-DD HH:MM:SS\" or integer epoch milliseconds)",
            ),
            (
                r#"{"timestamp": 1.5}"#,
                "data.jsonl:1: key \"timestamp\": 1.5 is not a timestamp (expected RFC 3339, \
                 \"YYYY-MM-DD HH:MM:SS\" or integer epoch milliseconds)",
            ),
            (
                r#"{"ts": 0, "timestamp": 1}"#,
                "data.jsonl:1: duplicate key \"timestamp\"",
            ),
            (
                r#"{"ts": 0, "a": 1, "a": 2}"#,
                "data.jsonl:1: duplicate key \"a\"",
            ),
            (
                r#"{"ts": 0, "fields": {"a": 1, "a": 2}}"#,
                "data.jsonl:1: duplicate key \"a\"",
            ),
            (
                r#"{"ts": 0, "fields": {"a": 1}, "b": 2}"#,
                "data.jsonl:1: key \"b\" next to \"fields\" (move it inside \"fields\")",
            ),
            (
                r#"{"ts": 0, "sensor": 5}"#,
                "data.jsonl:1: invalid type: integer `5`, expected a sensor id (a string)",
            ),
            (
                r#"{"ts": 0, "kind": 1}"#,
                "data.jsonl:1: key \"kind\": 1 is not a string",
            ),
            (
                r#"{"ts": 0, "tags": {"a": 1}}"#,
                "data.jsonl:1: key \"tags.a\": 1 is not a string",
            ),
            (
                r#"{"ts": 0, "fields": [1]}"#,
                "data.jsonl:1: invalid type: sequence, expected an object of fields",
            ),
            (
                "[1, 2]",
                "data.jsonl:1: invalid type: integer `1`, expected a reading (an object)",
            ),
            ("[]", "data.jsonl:1: empty batch: no readings"),
            (
                r#"{"ts": 0, "sensor": ""}"#,
                "data.jsonl:1: sensor id \"\" is empty (non-empty, at most 256 bytes, no control characters)",
            ),
            (
                r#"{"ts": 0"#,
                "data.jsonl:1: invalid JSON: EOF while parsing an object (column 8)",
            ),
            (
                r#"{"ts": 0} x"#,
                "data.jsonl:1: invalid JSON: trailing characters (column 11)",
            ),
            (
                r#"{"ts": 0, "v": 1e999}"#,
                "data.jsonl:1: the number at column 20 is not a finite number",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(only_err(jsonl(line)), *want, "input: {line}");
        }
    }

    #[test]
    fn jsonl_errors_name_line_and_continue() {
        let text = "{\"ts\":0}\n\n{\"ts\":\"x\"}\n{\"ts\":2}\n\u{0}\n";
        let items = collect(jsonl(text));
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().0, 1);
        assert!(
            items[1]
                .as_ref()
                .unwrap_err()
                .starts_with("data.jsonl:3: key \"ts\"")
        );
        assert_eq!(items[2].as_ref().unwrap().0, 4);
        assert!(
            items[3]
                .as_ref()
                .unwrap_err()
                .starts_with("data.jsonl:5: invalid JSON")
        );

        let bytes = b"{\"ts\":0}\n{\"ts\":\xff}\n{\"ts\":2}\n".to_vec();
        let r =
            InputReader::from_reader(Cursor::new(bytes), InputFormat::Jsonl, "d.ndjson").unwrap();
        let items = collect(r);
        assert_eq!(items[1], Err("d.ndjson:2: not valid UTF-8".into()));
        assert_eq!(items[2].as_ref().unwrap().0, 3);
    }

    #[test]
    fn read_error_ends_iteration() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut r = InputReader::from_reader(Failing, InputFormat::Jsonl, "f.jsonl").unwrap();
        let e = r.next().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "f.jsonl:1: read error: disk on fire");
        assert!(r.next().is_none());
        let e = InputReader::from_reader(Failing, InputFormat::Csv, "f.csv")
            .err()
            .unwrap();
        assert!(matches!(e, InputError::Read { .. }), "{e:?}");
    }
}
