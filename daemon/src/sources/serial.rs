//! Serial source: newline-framed text lines from a UART or USB serial
//! adapter, decoded into readings.
//!
//! One [`SerialSource`] owns one port. Its task ([`SerialSource::run`])
//! opens the device (8 data bits, no parity, 1 stop bit, no flow control,
//! exclusive access), reads lines, decodes each with the shared payload
//! decoders ([`crate::sources::decode`]) and hands the readings on as one
//! [`SourceBatch`] per line. Port problems are never fatal: when the device
//! cannot be opened, or disappears (USB adapter unplugged: on Linux the read
//! fails with `EIO` or returns end of file), the source logs a warning, marks
//! itself down, waits an exponential backoff and opens the device again **by
//! path** — so a stable name such as `/dev/serial/by-id/…`, which udev
//! recreates when the adapter is plugged back in, comes back by itself. The
//! task returns only on shutdown or when the queue to the streams is closed.
//!
//! # Configuration
//!
//! One table per port; the `type = "serial"` tag and the table's name belong
//! to the daemon configuration (`[sources.<name>]`):
//!
//! ```toml
//! [sources.greenhouse-uart]
//! type = "serial"
//! device = "/dev/serial0"        # required
//! baud = 115200                  # default 115200
//! format = "key-value"           # default "key-value"
//! sensor = "greenhouse/arduino"  # default sensor id for lines without one
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `device` | — | the port, e.g. `/dev/serial0`, `/dev/ttyUSB0`, `/dev/serial/by-id/usb-…` (UTF-8 path) |
//! | `baud` | 115 200 | line speed; one of the standard rates ([`STANDARD_BAUD_RATES`]: 50 … 4 000 000) |
//! | `format` | `key-value` | `key-value`, `json`, `number` or `csv` (`cbor` is binary and cannot be framed by newlines) |
//! | `sensor` | none | sensor id for lines that name none; without it such lines are `missing-sensor` |
//! | `field` | `value` | field name for `number` lines |
//! | `csv_columns` | `[]` | column names for `csv` lines (required with `csv`, refused otherwise) |
//! | `max_line_bytes` | 1024 | longest line, bytes, without its `\n` / `\r\n`; at most 65 536 |
//! | `queue_full` | `block` | `block` or `drop-newest` when the queue to the streams is full |
//! | `reconnect_min_ms` | 500 | first wait before reopening, at least 10 |
//! | `reconnect_max_ms` | 30 000 | longest wait (the wait doubles per failed attempt), at most 3 600 000 |
//!
//! # Lines
//!
//! Lines end with `\n`; a `\r` before it is dropped, so CRLF devices work.
//! Empty (and whitespace-only) lines are skipped without being counted.
//! Every other line counts as `received` and is decoded as one payload in
//! `format` (see [`crate::sources::decode`] for the formats and the reason
//! labels). A line longer than `max_line_bytes` is discarded up to the next
//! newline and counted as rejected with reason `line-too-long`; the line
//! after it is decoded normally. Invalid UTF-8 is left to the decoder
//! (`not-utf8`). Rejected lines are logged at `warn` with the reason and a
//! short excerpt, at most 10 per minute per source (then one line with the
//! number suppressed). A fragment of a line sent before the port was opened
//! may arrive as the first line and be rejected; that is normal.
//!
//! # Wiring (Raspberry Pi)
//!
//! | device pin | Pi header pin |
//! |---|---|
//! | TX | 10 (GPIO 15, RXD) |
//! | RX | 8 (GPIO 14, TXD) — only if the device listens |
//! | GND | 6 (GND) |
//!
//! The Pi's UART is **3.3 V**: a 5 V device needs a level shifter on its TX
//! line. USB adapters (FTDI, CH340, CP210x, Arduino) need no wiring and show
//! up as `/dev/ttyUSB0` or `/dev/ttyACM0`; prefer the stable
//! `/dev/serial/by-id/…` name, which survives re-plugging and reordering.
//!
//! 1. Enable the UART: `sudo raspi-config` → *Interface Options* → *Serial
//!    Port* → login shell over serial: *No*, serial port hardware: *Yes*
//!    (or `enable_uart=1` in `/boot/firmware/config.txt` and remove
//!    `console=serial0,…` from `cmdline.txt`), then reboot. `/dev/serial0`
//!    must exist. On boards with Bluetooth, `serial0` is the mini UART, whose
//!    speed follows the core clock; `dtoverlay=disable-bt` moves the PL011
//!    UART to the header if the link is unreliable.
//! 2. Let the daemon's user open the port: `sudo usermod -aG dialout wasmgate`.
//! 3. Check the link by hand first, e.g. `picocom -b 115200 /dev/serial0`.
//!
//! The port is opened exclusively: while a login console, `picocom` or a
//! second daemon holds it, opening fails and the source keeps retrying.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{
    DEFAULT_MAX_FIELDS, DecodeContext, DecodeError, MAX_FIELD_NAME_LEN, PayloadFormat, decode,
};
use super::{QueueFullPolicy, SourceBatch, SourceMetrics, deliver, now_ms};
use crate::ratelimit::LogLimiter;
use crate::reading::Reading;
use crate::runtime::wire::MAX_SENSOR_LEN;

/// Default `baud`.
pub const DEFAULT_BAUD: u32 = 115_200;
/// Default `max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024;
/// The largest allowed `max_line_bytes`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Default `reconnect_min_ms`.
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 500;
/// Default `reconnect_max_ms`.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// The smallest allowed `reconnect_min_ms`.
pub const MIN_RECONNECT_MS: u64 = 10;
/// The largest allowed `reconnect_max_ms` (one hour).
pub const MAX_RECONNECT_MS: u64 = 3_600_000;
/// The rates `baud` may take: the POSIX/Linux `B…` speeds.
pub const STANDARD_BAUD_RATES: [u32; 30] = [
    50, 75, 110, 134, 150, 200, 300, 600, 1_200, 1_800, 2_400, 4_800, 9_600, 19_200, 38_400,
    57_600, 115_200, 230_400, 460_800, 500_000, 576_000, 921_600, 1_000_000, 1_152_000, 1_500_000,
    2_000_000, 2_500_000, 3_000_000, 3_500_000, 4_000_000,
];

/// Reason label for a line longer than `max_line_bytes` (a framing error,
/// counted next to the decoders' [`DecodeError::REASONS`]).
pub const LINE_TOO_LONG: &str = "line-too-long";

/// Bytes read from the port at a time.
const READ_CHUNK: usize = 4096;
/// Rejected-line warnings let through per window, per source.
const LOG_BURST: u32 = 10;
/// The window of [`LOG_BURST`].
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Longest excerpt of a rejected line in a warning, bytes.
const EXCERPT_LEN: usize = 48;

/// One serial port, as configured (`type = "serial"`). Unknown keys are
/// refused; [`SerialSourceConfig::validate`] checks the values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSourceConfig {
    /// The port device, e.g. `/dev/ttyUSB0` or `/dev/serial0` (required).
    pub device: PathBuf,
    /// Line speed, one of [`STANDARD_BAUD_RATES`]. Default: 115200.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Payload format of each line. Default: `key-value`.
    #[serde(default = "default_format")]
    pub format: PayloadFormat,
    /// Sensor id for lines that name none. Default: none.
    #[serde(default)]
    pub sensor: Option<String>,
    /// Field name for `number` lines. Default: `value`.
    #[serde(default = "default_field")]
    pub field: String,
    /// Column names for `csv` lines. Default: none (required with `csv`).
    #[serde(default)]
    pub csv_columns: Vec<String>,
    /// Longest line in bytes, without its terminator. Default: 1024; at most
    /// 65536.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// What to do when the queue to the streams is full. Default: `block`.
    #[serde(default)]
    pub queue_full: QueueFullPolicy,
    /// First wait before reopening the port, ms. Default: 500; at least 10.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest wait before reopening the port, ms (the wait doubles after
    /// each failed attempt). Default: 30000; at most 3600000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_baud() -> u32 {
    DEFAULT_BAUD
}
fn default_format() -> PayloadFormat {
    PayloadFormat::KeyValue
}
fn default_field() -> String {
    "value".into()
}
fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}
fn default_reconnect_min_ms() -> u64 {
    DEFAULT_RECONNECT_MIN_MS
}
fn default_reconnect_max_ms() -> u64 {
    DEFAULT_RECONNECT_MAX_MS
}

impl SerialSourceConfig {
    /// A configuration for `device` with the defaults for everything else.
    pub fn new(device: impl Into<PathBuf>) -> Self {
        SerialSourceConfig {
            device: device.into(),
            baud: DEFAULT_BAUD,
            format: default_format(),
            sensor: None,
            field: default_field(),
            csv_columns: Vec::new(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            queue_full: QueueFullPolicy::default(),
            reconnect_min_ms: DEFAULT_RECONNECT_MIN_MS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
        }
    }

    /// Check what serde cannot; the message starts with the offending key.
    ///
    /// `device` must be a non-empty UTF-8 path; `baud` a standard rate;
    /// `format` a line format (not `cbor`); `sensor`, `field` and the CSV
    /// columns valid names (non-empty, short, no control characters, `field`
    /// not `sensor`/`ts`/`timestamp`); `csv_columns` given exactly when the
    /// format is `csv`, without duplicates; `max_line_bytes` 1 to 65536; the
    /// reconnect bounds ordered and within 10 ms to 1 hour.
    pub fn validate(&self) -> Result<(), String> {
        match self.device.to_str() {
            None => return Err(format!("device: {:?} is not valid UTF-8", self.device)),
            Some(d) if d.trim().is_empty() => return Err("device: must not be empty".into()),
            Some(_) => {}
        }
        if !STANDARD_BAUD_RATES.contains(&self.baud) {
            return Err(format!(
                "baud: {} is not a standard rate (e.g. 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)",
                self.baud
            ));
        }
        if self.format == PayloadFormat::Cbor {
            return Err(
                "format: \"cbor\" is binary and cannot be framed by newlines; use \"key-value\", \"json\", \"number\" or \"csv\""
                    .into(),
            );
        }
        if let Some(sensor) = &self.sensor {
            name_check("sensor", sensor, MAX_SENSOR_LEN)?;
        }
        name_check("field", &self.field, MAX_FIELD_NAME_LEN)?;
        if ["sensor", "ts", "timestamp"].contains(&self.field.as_str()) {
            return Err(format!(
                "field: {:?} is reserved (sensor id / timestamp); choose another name",
                self.field
            ));
        }
        if self.format == PayloadFormat::Csv {
            if self.csv_columns.is_empty() {
                return Err("csv_columns: required with format = \"csv\"".into());
            }
            for (i, column) in self.csv_columns.iter().enumerate() {
                name_check(&format!("csv_columns[{i}]"), column, MAX_FIELD_NAME_LEN)?;
                if self.csv_columns[..i]
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(column))
                {
                    return Err(format!("csv_columns[{i}]: {column:?} appears twice"));
                }
            }
        } else if !self.csv_columns.is_empty() {
            return Err(format!(
                "csv_columns: only used with format = \"csv\" (format is {:?})",
                self.format.as_str()
            ));
        }
        if self.max_line_bytes == 0 || self.max_line_bytes > MAX_LINE_BYTES {
            return Err(format!(
                "max_line_bytes: {} is out of range (1 to {MAX_LINE_BYTES})",
                self.max_line_bytes
            ));
        }
        if self.reconnect_min_ms < MIN_RECONNECT_MS {
            return Err(format!(
                "reconnect_min_ms: {} is below the minimum of {MIN_RECONNECT_MS}",
                self.reconnect_min_ms
            ));
        }
        if self.reconnect_max_ms > MAX_RECONNECT_MS {
            return Err(format!(
                "reconnect_max_ms: {} is above the maximum of {MAX_RECONNECT_MS} (one hour)",
                self.reconnect_max_ms
            ));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(format!(
                "reconnect_max_ms: {} is below reconnect_min_ms ({})",
                self.reconnect_max_ms, self.reconnect_min_ms
            ));
        }
        Ok(())
    }
}

/// A sensor id, field or column name: non-empty, at most `max` bytes, no
/// control characters (the decoders' rules, checked once up front).
fn name_check(key: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        Err(format!("{key}: must not be empty"))
    } else if name.len() > max {
        Err(format!("{key}: longer than {max} bytes"))
    } else if name.chars().any(char::is_control) {
        Err(format!("{key}: {name:?} contains a control character"))
    } else {
        Ok(())
    }
}

/// A configured serial source, ready to [`run`](SerialSource::run).
#[derive(Debug)]
pub struct SerialSource {
    name: Arc<str>,
    config: SerialSourceConfig,
    metrics: Arc<SourceMetrics>,
}

impl SerialSource {
    /// Validate `config` (see [`SerialSourceConfig::validate`]) and build the
    /// source named `name`. Nothing is opened yet.
    pub fn build(name: &str, config: SerialSourceConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(SerialSource {
            name: Arc::from(name),
            config,
            metrics: Arc::new(SourceMetrics::default()),
        })
    }

    /// The source's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SerialSourceConfig {
        &self.config
    }

    /// The source's metrics, shared with the running task. `received`
    /// counts non-empty lines (rejected ones included), `decoded` readings
    /// handed on, `up` whether the port is open.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Read the port until `shutdown` is cancelled or `out` is closed,
    /// reopening it with exponential backoff whenever it cannot be opened
    /// or goes away. Port problems are logged and reflected in
    /// `metrics().up`, never returned.
    pub async fn run(self, out: mpsc::Sender<SourceBatch>, shutdown: CancellationToken) {
        let device = self.config.device.display();
        let min = Duration::from_millis(self.config.reconnect_min_ms);
        let max = Duration::from_millis(self.config.reconnect_max_ms);
        let mut backoff = min;
        let mut lines = LineReader::new(&self);
        loop {
            if shutdown.is_cancelled() || out.is_closed() {
                break;
            }
            match self.open() {
                Ok(mut port) => {
                    self.metrics.set_up(true);
                    info!(
                        source = %self.name,
                        device = %device,
                        baud = self.config.baud,
                        format = %self.config.format,
                        "serial port up"
                    );
                    let end = lines.read_lines(&mut port, &out, &shutdown).await;
                    drop(port);
                    self.metrics.set_up(false);
                    // A port that stayed up and delivered data resets the
                    // backoff; one that fails right after opening keeps it
                    // growing.
                    if lines.bytes_read > 0 {
                        backoff = min;
                    }
                    match end {
                        ReadEnd::Shutdown => break,
                        ReadEnd::OutClosed => {
                            debug!(source = %self.name, "serial source: queue closed, stopping");
                            break;
                        }
                        ReadEnd::Eof => warn!(
                            source = %self.name,
                            device = %device,
                            error = "end of file",
                            retry_in_ms = duration_ms(backoff),
                            "serial port down"
                        ),
                        ReadEnd::Failed(e) => warn!(
                            source = %self.name,
                            device = %device,
                            error = %e,
                            retry_in_ms = duration_ms(backoff),
                            "serial port down"
                        ),
                    }
                }
                Err(e) => {
                    self.metrics.set_up(false);
                    warn!(
                        source = %self.name,
                        device = %device,
                        error = %e,
                        retry_in_ms = duration_ms(backoff),
                        "cannot open serial port"
                    );
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = out.closed() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2).min(max);
        }
        self.metrics.set_up(false);
        debug!(source = %self.name, "serial source stopped");
    }

    /// Open the port: 8N1, no flow control, exclusive.
    fn open(&self) -> Result<SerialStream, tokio_serial::Error> {
        tokio_serial::new(self.config.device.to_string_lossy(), self.config.baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .open_native_async()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why [`LineReader::read_lines`] returned.
#[derive(Debug)]
enum ReadEnd {
    /// `shutdown` was cancelled.
    Shutdown,
    /// The receiver of `out` is gone.
    OutClosed,
    /// The port returned end of file (device gone).
    Eof,
    /// Reading failed (on Linux `EIO` when the device is unplugged).
    Failed(io::Error),
}

/// The per-source reading state, reused across lines and reconnects: the
/// read buffer, the line framer and the line handler.
struct LineReader<'a> {
    chunk: Box<[u8]>,
    framer: Framer,
    handler: Handler<'a>,
    /// Bytes read since the last [`LineReader::read_lines`] started.
    bytes_read: u64,
}

impl<'a> LineReader<'a> {
    fn new(source: &'a SerialSource) -> Self {
        LineReader {
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            framer: Framer::new(source.config.max_line_bytes),
            handler: Handler {
                source,
                decoded: Vec::with_capacity(1),
                limiter: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            },
            bytes_read: 0,
        }
    }

    /// Read `reader` line by line until it fails or ends, `shutdown` is
    /// cancelled or `out` is closed. A partial line left from an earlier
    /// call is dropped first.
    async fn read_lines<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        out: &mpsc::Sender<SourceBatch>,
        shutdown: &CancellationToken,
    ) -> ReadEnd {
        self.framer.reset();
        self.bytes_read = 0;
        loop {
            let n = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return ReadEnd::Shutdown,
                r = reader.read(&mut self.chunk) => match r {
                    Ok(0) => return ReadEnd::Eof,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return ReadEnd::Failed(e),
                },
            };
            self.bytes_read += n as u64;
            let input = &self.chunk[..n];
            let mut pos = 0;
            while let Some(frame) = self.framer.next(input, &mut pos) {
                let flow = match frame {
                    Frame::Line(line) => self.handler.line(line, out, shutdown).await,
                    Frame::TooLong => {
                        self.handler.too_long();
                        None
                    }
                };
                if let Some(end) = flow {
                    return end;
                }
            }
        }
    }
}

/// What [`Framer::next`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame<'a> {
    /// A complete line without its `\n` / `\r\n` (may be empty).
    Line(&'a [u8]),
    /// A line longer than the limit; the rest of it up to the next newline
    /// will be skipped.
    TooLong,
}

/// Splits a byte stream into lines, keeping an unfinished line in a reusable
/// buffer that never grows past the limit (plus one byte for a `\r`).
#[derive(Debug)]
pub(crate) struct Framer {
    /// The unfinished line (or the line just returned from it).
    pub(crate) line: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    /// `line` was handed out by the last [`Framer::next`]; clear it first.
    handed_out: bool,
    /// Longest line without terminator.
    max: usize,
}

impl Framer {
    pub(crate) fn new(max: usize) -> Self {
        Framer {
            line: Vec::with_capacity(max.saturating_add(1).min(1024)),
            discarding: false,
            handed_out: false,
            max,
        }
    }

    /// Forget any unfinished line (a new connection).
    fn reset(&mut self) {
        self.line.clear();
        self.discarding = false;
        self.handed_out = false;
    }

    /// The next frame in `input[*pos..]`, advancing `pos`. `None` when the
    /// input is used up (a trailing unfinished line is kept for the next
    /// chunk).
    pub(crate) fn next<'s>(&'s mut self, input: &'s [u8], pos: &mut usize) -> Option<Frame<'s>> {
        if self.handed_out {
            self.line.clear();
            self.handed_out = false;
        }
        // A `\r` may follow the `max` content bytes.
        let raw_max = self.max.saturating_add(1);
        while *pos < input.len() {
            let rest = &input[*pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                *pos = input.len();
                if !self.discarding {
                    if self.line.len() + rest.len() > raw_max {
                        self.line.clear();
                        self.discarding = true;
                        return Some(Frame::TooLong);
                    }
                    self.line.extend_from_slice(rest);
                }
                return None;
            };
            *pos += nl + 1;
            if self.discarding {
                // The end of an over-long line, already counted.
                self.discarding = false;
                continue;
            }
            let part = &rest[..nl];
            if self.line.len() + part.len() > raw_max {
                self.line.clear();
                return Some(Frame::TooLong);
            }
            let raw: &[u8] = if self.line.is_empty() {
                // The whole line is in this chunk: no copy.
                part
            } else {
                self.line.extend_from_slice(part);
                self.handed_out = true;
                &self.line
            };
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.len() > self.max {
                return Some(Frame::TooLong);
            }
            return Some(Frame::Line(line));
        }
        None
    }
}

/// Decodes lines and hands the readings on.
struct Handler<'a> {
    source: &'a SerialSource,
    /// Readings of the current line; emptied into each batch, its capacity
    /// kept.
    decoded: Vec<Reading>,
    limiter: LogLimiter,
}

impl Handler<'_> {
    /// Decode one line and deliver its readings. `Some` when reading must
    /// stop.
    async fn line(
        &mut self,
        line: &[u8],
        out: &mpsc::Sender<SourceBatch>,
        shutdown: &CancellationToken,
    ) -> Option<ReadEnd> {
        if line.trim_ascii().is_empty() {
            return None;
        }
        let source = self.source;
        let config = &source.config;
        source.metrics.received.fetch_add(1, Ordering::Relaxed);
        let ctx = DecodeContext {
            sensor: config.sensor.as_deref(),
            receive_ts: now_ms(),
            field: &config.field,
            csv_columns: &config.csv_columns,
            max_fields: DEFAULT_MAX_FIELDS,
            max_bytes: config.max_line_bytes,
        };
        if let Err(e) = decode(config.format, line, &ctx, &mut self.decoded) {
            source.metrics.reject(e.reason());
            self.warn_rejected(e.reason(), &e, line);
            return None;
        }
        // One allocation of exactly the readings' size; `decoded` keeps its
        // buffer for the next line.
        let batch = SourceBatch::new(Arc::clone(&source.name), self.decoded.drain(..).collect());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Some(ReadEnd::Shutdown),
            delivered = deliver(out, batch, config.queue_full, &source.metrics) => {
                if delivered { None } else { Some(ReadEnd::OutClosed) }
            }
        }
    }

    /// Count (and maybe log) a line over the limit.
    fn too_long(&mut self) {
        let source = self.source;
        source.metrics.received.fetch_add(1, Ordering::Relaxed);
        source.metrics.reject(LINE_TOO_LONG);
        if self.allow_log() {
            warn!(
                source = %source.name,
                reason = LINE_TOO_LONG,
                limit = source.config.max_line_bytes,
                "serial line rejected: longer than max_line_bytes, skipped to the next newline"
            );
        }
    }

    fn warn_rejected(&mut self, reason: &'static str, error: &DecodeError, line: &[u8]) {
        if self.allow_log() {
            warn!(
                source = %self.source.name,
                reason,
                error = %error,
                line = %Excerpt(line),
                "serial line rejected"
            );
        }
    }

    /// Whether the rate limiter lets a rejected-line warning through.
    fn allow_log(&mut self) -> bool {
        let name = &self.source.name;
        self.limiter.allow(Instant::now(), |n| {
            warn!(source = %name, suppressed = n, "serial: rejected-line warnings suppressed");
        })
    }
}

/// The start of an untrusted line for a log message: at most
/// [`EXCERPT_LEN`] bytes, invalid UTF-8 replaced, quoted and escaped.
struct Excerpt<'a>(&'a [u8]);

impl std::fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = &self.0[..self.0.len().min(EXCERPT_LEN)];
        let text = String::from_utf8_lossy(cut);
        write!(f, "{text:?}")?;
        if cut.len() < self.0.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncWriteExt;
    use tokio::time::timeout;
    use tokio_serial::SerialPort;

    use super::*;

    /// Guard for anything that should happen promptly.
    const WAIT: Duration = Duration::from_secs(5);
    /// Polling tick where there is no event to await.
    const TICK: Duration = Duration::from_millis(5);

    /// A pseudo-terminal pair (master, slave). Its descriptors are not
    /// close-on-exec, which is harmless here (these tests spawn no process)
    /// but would let a child process keep the master, and so the "device",
    /// alive after the test drops it (see `tests/run_serial.rs`).
    fn pty() -> (SerialStream, SerialStream) {
        SerialStream::pair().expect("pseudo-terminal pair")
    }

    fn slave_path(slave: &SerialStream) -> PathBuf {
        PathBuf::from(slave.name().expect("pty slave has a name"))
    }

    fn config(sensor: Option<&str>) -> SerialSourceConfig {
        SerialSourceConfig {
            sensor: sensor.map(str::to_string),
            reconnect_min_ms: 10,
            reconnect_max_ms: 50,
            ..SerialSourceConfig::new("/nonexistent")
        }
    }

    /// Run `read_lines` on the slave of a fresh pty while writing `chunks`
    /// (each flushed separately) to the master; collect `batches` batches,
    /// then cancel. Returns the batches, the metrics and how reading ended.
    async fn feed(
        config: SerialSourceConfig,
        chunks: &[&[u8]],
        batches: usize,
    ) -> (Vec<SourceBatch>, Arc<SourceMetrics>, ReadEnd) {
        let source = SerialSource::build("uart", config).expect("valid config");
        let (mut master, mut slave) = pty();
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let mut lines = LineReader::new(&source);
        let reading = lines.read_lines(&mut slave, &tx, &shutdown);
        let driving = async {
            for chunk in chunks {
                master.write_all(chunk).await.expect("write to pty");
                master.flush().await.expect("flush pty");
            }
            let mut got = Vec::new();
            for _ in 0..batches {
                let batch = timeout(WAIT, rx.recv()).await.expect("batch in time");
                got.push(batch.expect("channel open"));
            }
            shutdown.cancel();
            got
        };
        let (end, got) = timeout(WAIT, async { tokio::join!(reading, driving) })
            .await
            .expect("reader stops on shutdown");
        (got, source.metrics(), end)
    }

    fn rejected(m: &SourceMetrics, reason: &str) -> u64 {
        m.rejected_of(reason)
    }

    fn load(v: &std::sync::atomic::AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    /// Poll `cond` until it holds (or fail after [`WAIT`]). Only for state
    /// with no event to await: metrics flags and log output.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let polled = timeout(WAIT, async {
            while !cond() {
                tokio::time::sleep(TICK).await;
            }
        })
        .await;
        assert!(polled.is_ok(), "timed out waiting for: {what}");
    }

    /// Captures this module's log output on the current thread (tests run
    /// on tokio's current-thread runtime, so spawned tasks log here too).
    ///
    /// The subscriber is the process-wide default, installed once, writing
    /// to the capturing thread's buffer: a per-test `set_default` would race
    /// with tests on other threads over tracing's global callsite interest
    /// cache and lose events now and then.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    thread_local! {
        static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
    }

    /// Removes the thread's capture buffer when dropped.
    struct CaptureGuard;

    impl Drop for CaptureGuard {
        fn drop(&mut self) {
            CAPTURE.with(|c| c.borrow_mut().take());
        }
    }

    /// The writer of the global test subscriber: the current thread's
    /// capture buffer, if any.
    struct ThreadWriter;

    impl io::Write for ThreadWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            CAPTURE.with(|c| {
                if let Some(logs) = c.borrow().as_ref() {
                    logs.0.lock().expect("log lock").extend_from_slice(buf);
                }
            });
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture() -> (Logs, CaptureGuard) {
            static INSTALL: std::sync::Once = std::sync::Once::new();
            INSTALL.call_once(|| {
                let subscriber = tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_env_filter("wasmgate::sources::serial=debug")
                    .with_writer(|| ThreadWriter)
                    .finish();
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other global tracing subscriber in the lib tests");
            });
            let logs = Logs::default();
            CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
            (logs, CaptureGuard)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
        }

        fn count(&self, needle: &str) -> usize {
            self.text().matches(needle).count()
        }
    }

    // -- configuration -----------------------------------------------------

    #[test]
    fn config_defaults_from_toml() {
        let c: SerialSourceConfig = toml::from_str(r#"device = "/dev/ttyUSB0""#).expect("parses");
        assert_eq!(c, SerialSourceConfig::new("/dev/ttyUSB0"));
        assert_eq!(c.baud, 115_200);
        assert_eq!(c.format, PayloadFormat::KeyValue);
        assert_eq!(c.sensor, None);
        assert_eq!(c.field, "value");
        assert!(c.csv_columns.is_empty());
        assert_eq!(c.max_line_bytes, 1024);
        assert_eq!(c.queue_full, QueueFullPolicy::Block);
        assert_eq!((c.reconnect_min_ms, c.reconnect_max_ms), (500, 30_000));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn config_every_key_and_unknown_keys() {
        let c: SerialSourceConfig = toml::from_str(
            r#"
            device = "/dev/serial0"
            baud = 9600
            format = "csv"
            sensor = "greenhouse/uno"
            field = "v"
            csv_columns = ["ts", "temp"]
            max_line_bytes = 65536
            queue_full = "drop-newest"
            reconnect_min_ms = 10
            reconnect_max_ms = 3600000
            "#,
        )
        .expect("parses");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.queue_full, QueueFullPolicy::DropNewest);
        let err = toml::from_str::<SerialSourceConfig>("device = \"/dev/x\"\nbaudrate = 9600")
            .expect_err("unknown key");
        assert!(err.to_string().contains("baudrate"), "{err}");
        assert!(
            toml::from_str::<SerialSourceConfig>("baud = 9600").is_err(),
            "device is required"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let base = || SerialSourceConfig::new("/dev/ttyUSB0");
        let cases: Vec<(SerialSourceConfig, &str)> = vec![
            (SerialSourceConfig::new(""), "device:"),
            (
                SerialSourceConfig {
                    baud: 12_345,
                    ..base()
                },
                "baud:",
            ),
            (SerialSourceConfig { baud: 0, ..base() }, "baud:"),
            (
                SerialSourceConfig {
                    format: PayloadFormat::Cbor,
                    ..base()
                },
                "format:",
            ),
            (
                SerialSourceConfig {
                    sensor: Some(String::new()),
                    ..base()
                },
                "sensor:",
            ),
            (
                SerialSourceConfig {
                    sensor: Some("a\u{7}".into()),
                    ..base()
                },
                "sensor:",
            ),
            (
                SerialSourceConfig {
                    field: String::new(),
                    ..base()
                },
                "field:",
            ),
            (
                SerialSourceConfig {
                    field: "ts".into(),
                    ..base()
                },
                "field:",
            ),
            (
                SerialSourceConfig {
                    format: PayloadFormat::Csv,
                    ..base()
                },
                "csv_columns:",
            ),
            (
                SerialSourceConfig {
                    format: PayloadFormat::Csv,
                    csv_columns: vec!["Temp".into(), "temp".into()],
                    ..base()
                },
                "csv_columns[1]:",
            ),
            (
                SerialSourceConfig {
                    csv_columns: vec!["a".into()],
                    ..base()
                },
                "csv_columns:",
            ),
            (
                SerialSourceConfig {
                    max_line_bytes: 0,
                    ..base()
                },
                "max_line_bytes:",
            ),
            (
                SerialSourceConfig {
                    max_line_bytes: 65_537,
                    ..base()
                },
                "max_line_bytes:",
            ),
            (
                SerialSourceConfig {
                    reconnect_min_ms: 9,
                    ..base()
                },
                "reconnect_min_ms:",
            ),
            (
                SerialSourceConfig {
                    reconnect_max_ms: 3_600_001,
                    ..base()
                },
                "reconnect_max_ms:",
            ),
            (
                SerialSourceConfig {
                    reconnect_min_ms: 1000,
                    reconnect_max_ms: 999,
                    ..base()
                },
                "reconnect_max_ms:",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key);
            assert!(err.starts_with(key), "{err:?} should start with {key:?}");
            assert_eq!(SerialSource::build("s", config).err(), Some(err));
        }
        for baud in [9600, 115_200, 921_600] {
            assert_eq!(SerialSourceConfig { baud, ..base() }.validate(), Ok(()));
        }
    }

    // -- framing -----------------------------------------------------------

    /// All frames of `chunks` fed in order, as owned bytes.
    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut framer = Framer::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            let mut pos = 0;
            while let Some(frame) = framer.next(chunk, &mut pos) {
                got.push(match frame {
                    Frame::Line(l) => Some(l.to_vec()),
                    Frame::TooLong => None,
                });
            }
            assert!(framer.line.len() <= max + 1, "buffer bounded");
        }
        got
    }

    #[test]
    fn framer_splits_strips_cr_and_limits() {
        let line = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            frames(8, &[b"a=1\nb=2\r\n\nc=", b"3\r", b"\nd"]),
            vec![line("a=1"), line("b=2"), line(""), line("c=3")]
        );
        // Exactly at the limit, with and without CR; one over is too long.
        assert_eq!(
            frames(
                4,
                &[b"abcd\r\nabcd\nabcde\nab", b"cd\r\n", b"ab", b"cde\r\nx\n"]
            ),
            vec![
                line("abcd"),
                line("abcd"),
                None,
                line("abcd"),
                None,
                line("x")
            ]
        );
        // An over-long line across many chunks is one rejection; the line
        // after it is intact.
        assert_eq!(
            frames(4, &[b"0123", b"4567", b"89", b"01\nok\n"]),
            vec![None, line("ok")]
        );
    }

    // -- reading lines from a pty ------------------------------------------

    #[tokio::test]
    async fn key_value_lines_become_readings() {
        let (batches, m, end) = feed(
            config(Some("uart/default")),
            &[
                b"temp=21.5 hum=40\n",
                b"sensor=s1 ts=1714564800000 temp=19\n",
            ],
            2,
        )
        .await;
        assert!(matches!(end, ReadEnd::Shutdown), "{end:?}");
        assert_eq!(&*batches[0].source, "uart");
        let r = &batches[0].readings;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].sensor, "uart/default");
        assert_eq!(
            r[0].fields,
            vec![("temp".into(), 21.5), ("hum".into(), 40.0)]
        );
        assert!(r[0].ts > 1_600_000_000_000, "receive time");
        let r = &batches[1].readings[0];
        assert_eq!((r.sensor.as_str(), r.ts), ("s1", 1_714_564_800_000));
        assert_eq!(r.field("temp"), Some(19.0));
        assert_eq!((load(&m.received), load(&m.decoded)), (2, 2));
        assert!(m.rejected().is_empty());
    }

    #[tokio::test]
    async fn malformed_lines_are_counted_by_reason() {
        // Each rejected line is followed by nothing we can await, so a good
        // line closes the input: lines are handled in order, so when its
        // batch arrives every rejection before it is counted.
        let (batches, m, _) = feed(
            config(None),
            &[
                b"temp=21.5\n",     // no sensor anywhere
                b"sensor=a temp\n", // token without '='
                b"sensor=a temp=hot\n",
                b"sensor=a t=\xff\xfe\n",
                b"sensor=a temp=1 temp=2\n",
                b"\n\r\n   \n", // empty lines: skipped, not counted
                b"sensor=ok temp=1\n",
            ],
            1,
        )
        .await;
        assert_eq!(batches[0].readings[0].sensor, "ok");
        assert_eq!(rejected(&m, "missing-sensor"), 1);
        assert_eq!(rejected(&m, "malformed-key-value"), 1);
        assert_eq!(rejected(&m, "not-a-number"), 1);
        assert_eq!(rejected(&m, "not-utf8"), 1);
        assert_eq!(rejected(&m, "duplicate-key"), 1);
        assert_eq!(m.rejected().values().sum::<u64>(), 5);
        assert_eq!((load(&m.received), load(&m.decoded)), (6, 1));
    }

    #[tokio::test]
    async fn over_long_line_is_rejected_and_the_next_line_decoded() {
        let long = format!("temp={}\n", "1".repeat(100));
        let (batches, m, _) = feed(
            SerialSourceConfig {
                max_line_bytes: 32,
                ..config(Some("s"))
            },
            &[long.as_bytes(), b"temp=2\n"],
            1,
        )
        .await;
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].readings[0].field("temp"), Some(2.0));
        assert_eq!(rejected(&m, LINE_TOO_LONG), 1);
        assert_eq!((load(&m.received), load(&m.decoded)), (2, 1));
    }

    #[tokio::test]
    async fn over_long_line_larger_than_a_read_chunk() {
        let long = vec![b'x'; 3 * READ_CHUNK + 17];
        let (batches, m, _) = feed(
            SerialSourceConfig {
                max_line_bytes: MAX_LINE_BYTES.min(1024),
                ..config(Some("s"))
            },
            &[&long, b"\r\ntemp=3\r\n"],
            1,
        )
        .await;
        assert_eq!(batches[0].readings[0].field("temp"), Some(3.0));
        assert_eq!(rejected(&m, LINE_TOO_LONG), 1);
    }

    #[tokio::test]
    async fn crlf_lines_and_lines_split_across_writes() {
        let (batches, m, _) =
            feed(config(Some("s")), &[b"a=1\r\nb=", b"2\r", b"\nc=3\r\n"], 3).await;
        let fields: Vec<_> = batches
            .iter()
            .map(|b| b.readings[0].fields[0].clone())
            .collect();
        assert_eq!(
            fields,
            vec![("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)]
        );
        assert!(m.rejected().is_empty());
    }

    #[tokio::test]
    async fn number_and_csv_formats() {
        let (batches, _, _) = feed(
            SerialSourceConfig {
                format: PayloadFormat::Number,
                field: "level".into(),
                ..config(Some("tank"))
            },
            &[b"42.5\r\n"],
            1,
        )
        .await;
        assert_eq!(batches[0].readings[0].fields, vec![("level".into(), 42.5)]);

        let (batches, _, _) = feed(
            SerialSourceConfig {
                format: PayloadFormat::Csv,
                csv_columns: vec!["sensor".into(), "temp".into(), "hum".into()],
                ..config(None)
            },
            &[b"s7,21.5,40\n"],
            1,
        )
        .await;
        let r = &batches[0].readings[0];
        assert_eq!(r.sensor, "s7");
        assert_eq!(r.fields, vec![("temp".into(), 21.5), ("hum".into(), 40.0)]);
    }

    #[tokio::test]
    async fn reading_stops_when_the_receiver_is_gone() {
        let source = SerialSource::build("uart", config(Some("s"))).expect("valid");
        let (mut master, mut slave) = pty();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        master.write_all(b"t=1\n").await.expect("write");
        let mut lines = LineReader::new(&source);
        let end = timeout(
            WAIT,
            lines.read_lines(&mut slave, &tx, &CancellationToken::new()),
        )
        .await
        .expect("returns");
        assert!(matches!(end, ReadEnd::OutClosed), "{end:?}");
    }

    #[tokio::test]
    async fn reading_ends_with_an_error_when_the_device_goes_away() {
        let source = SerialSource::build("uart", config(Some("s"))).expect("valid");
        let (mut master, mut slave) = pty();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let mut lines = LineReader::new(&source);
        let reading = lines.read_lines(&mut slave, &tx, &shutdown);
        let unplugging = async {
            master.write_all(b"t=1\n").await.expect("write");
            let batch = timeout(WAIT, rx.recv()).await.expect("in time");
            assert!(batch.is_some());
            drop(master);
        };
        let (end, ()) = timeout(WAIT, async { tokio::join!(reading, unplugging) })
            .await
            .expect("reading ends by itself");
        // Linux reports EIO; other systems may report end of file.
        assert!(matches!(end, ReadEnd::Failed(_) | ReadEnd::Eof), "{end:?}");
        assert_eq!(lines.bytes_read, 4);
    }

    #[tokio::test]
    async fn rejected_line_warnings_are_rate_limited() {
        let (logs, _capture) = Logs::capture();
        let mut chunks: Vec<&[u8]> = vec![b"garbage\n"; 15];
        chunks.push(b"t=1\n");
        let (_, m, _) = feed(config(Some("s")), &chunks, 1).await;
        assert_eq!(rejected(&m, "malformed-key-value"), 15);
        assert_eq!(logs.count("serial line rejected"), 10, "{}", logs.text());
        let text = logs.text();
        assert!(text.contains("reason=\"malformed-key-value\""), "{text}");
        assert!(text.contains("line=\"garbage\""), "{text}");
    }

    #[test]
    fn excerpt_is_short_and_escaped() {
        assert_eq!(Excerpt(b"a\"b\xff").to_string(), "\"a\\\"b\u{fffd}\"");
        let long = Excerpt(&[b'x'; 100]).to_string();
        assert_eq!(long, format!("{:?}…", "x".repeat(EXCERPT_LEN)));
    }

    // -- the task end to end -----------------------------------------------

    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let source = SerialSource::build("s", config(Some("s"))).expect("valid");
        let (tx, _rx) = mpsc::channel(1);
        let fut = source.run(tx, CancellationToken::new());
        assert_send(&fut);
    }

    #[tokio::test]
    async fn run_reads_the_device_then_survives_its_removal_and_stops_on_shutdown() {
        let (logs, _capture) = Logs::capture();
        let (mut master, slave) = pty();
        let path = slave_path(&slave);
        let source = SerialSource::build(
            "uart",
            SerialSourceConfig {
                device: path,
                ..config(Some("s"))
            },
        )
        .expect("valid");
        let metrics = source.metrics();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, shutdown.clone()));

        // Written before the port is open: the pty buffers it (the pair's
        // own slave end stays open, unread, to keep the terminal alive).
        master.write_all(b"temp=20.5\r\n").await.expect("write");
        let batch = timeout(WAIT, rx.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(batch.readings[0].field("temp"), Some(20.5));
        assert!(metrics.up.load(Ordering::Relaxed));

        // Unplug: closing the master makes reads on the slave fail with EIO
        // (and removes /dev/pts/N, so the reopen attempts fail too). `up`
        // and the log are state with no event to await, so poll them.
        drop(master);
        eventually("port marked down and logged", || {
            !metrics.up.load(Ordering::Relaxed) && logs.count("serial port down") == 1
        })
        .await;
        eventually("reopen attempted", || {
            logs.count("cannot open serial port") >= 1
        })
        .await;
        assert!(!task.is_finished(), "the source keeps retrying");

        shutdown.cancel();
        timeout(WAIT, task)
            .await
            .expect("stops promptly")
            .expect("no panic");
        assert!(!metrics.up.load(Ordering::Relaxed));
        drop(slave);
    }

    #[tokio::test]
    async fn shutdown_interrupts_a_quiet_port_and_the_backoff_wait() {
        // A port that is open but silent.
        let (_master, slave) = pty();
        let source = SerialSource::build(
            "uart",
            SerialSourceConfig {
                device: slave_path(&slave),
                ..config(Some("s"))
            },
        )
        .expect("valid");
        let metrics = source.metrics();
        let (tx, _rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, shutdown.clone()));
        // `up` is set right after the open; no event to await.
        eventually("port up", || metrics.up.load(Ordering::Relaxed)).await;
        shutdown.cancel();
        timeout(WAIT, task)
            .await
            .expect("stops promptly")
            .expect("no panic");

        // A missing device with an hour-long backoff.
        let source = SerialSource::build(
            "uart",
            SerialSourceConfig {
                device: "/nonexistent/ttyWASMGATE".into(),
                reconnect_min_ms: MAX_RECONNECT_MS,
                reconnect_max_ms: MAX_RECONNECT_MS,
                ..config(Some("s"))
            },
        )
        .expect("valid");
        let (tx, _rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, shutdown.clone()));
        tokio::task::yield_now().await;
        shutdown.cancel();
        timeout(WAIT, task)
            .await
            .expect("stops promptly")
            .expect("no panic");
    }

    #[tokio::test]
    async fn run_returns_when_the_queue_is_closed() {
        let source = SerialSource::build(
            "uart",
            SerialSourceConfig {
                device: "/nonexistent/ttyWASMGATE".into(),
                ..config(Some("s"))
            },
        )
        .expect("valid");
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(source.run(tx, CancellationToken::new()));
        drop(rx);
        timeout(WAIT, task)
            .await
            .expect("returns")
            .expect("no panic");
    }

    #[tokio::test]
    async fn run_reconnects_when_the_device_appears() {
        let (logs, _capture) = Logs::capture();
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("ttyWASMGATE");
        let source = SerialSource::build(
            "uart",
            SerialSourceConfig {
                device: link.clone(),
                ..config(Some("s"))
            },
        )
        .expect("valid");
        let metrics = source.metrics();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, shutdown.clone()));

        // The failed opens only show in the log; poll it (no event to await).
        eventually("two failed opens logged", || {
            logs.count("cannot open serial port") >= 2
        })
        .await;
        assert!(!metrics.up.load(Ordering::Relaxed));
        let text = logs.text();
        assert!(text.contains("source=uart"), "{text}");
        assert!(
            text.contains(&format!("device={}", link.display())),
            "{text}"
        );
        assert!(text.contains("error="), "{text}");

        // The device appears (as udev's /dev/serial/by-id links do).
        let (mut master, slave) = pty();
        std::os::unix::fs::symlink(slave_path(&slave), &link).expect("symlink");
        master.write_all(b"temp=7\n").await.expect("write");
        let batch = timeout(WAIT, rx.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(batch.readings[0].field("temp"), Some(7.0));
        assert!(metrics.up.load(Ordering::Relaxed));
        assert!(logs.text().contains("serial port up"));

        shutdown.cancel();
        timeout(WAIT, task)
            .await
            .expect("stops promptly")
            .expect("no panic");
        drop(slave);
    }
}
