//! The GPIO alarm output: a buzzer, LED or relay that is on while any
//! selected stream has an active anomaly.
//!
//! [`Alarm`] is a small state machine around one [`OutputPin`]. Every
//! [`AnomalyEvent`] that passes the filter (its stream is selected and its
//! score is at least `min_score`) turns the output on — or, if it already is,
//! extends the hold — and the output goes off `hold_secs` after the last such
//! event. Time is passed in explicitly (monotonic milliseconds), so the
//! machine never sleeps and is tested without a clock; the task that drives
//! it calls [`Alarm::on_event`] for each event and [`Alarm::tick`] when
//! [`Alarm::next_deadline`] is reached (a `tokio::time::sleep_until`).
//!
//! The output is driven to its inactive level as soon as the alarm is built,
//! so it is in a known state from start-up, and [`Alarm::shutdown`] drives it
//! inactive again before releasing the line. A failed write is returned as
//! [`AlarmError::Pin`]; the machine remembers that the output may not match
//! its state and writes it again at the next event or tick
//! ([`Alarm::next_deadline`] asks for a tick within
//! [`PIN_RETRY_MS`] while that is pending).
//!
//! # Configuration
//!
//! ```toml
//! [alarm]
//! line = 17                  # required: GPIO line (BCM number on a Pi)
//! chip = "/dev/gpiochip0"    # default "/dev/gpiochip0"
//! active_low = false         # default false: on = high
//! hold_secs = 30             # default 30
//! streams = ["greenhouse"]   # default []: every stream
//! min_score = 0.0            # default 0.0: every flagged value
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `chip` | `/dev/gpiochip0` | the GPIO character device |
//! | `line` | — | line offset on that chip; on a Raspberry Pi the BCM GPIO number (GPIO17 = header pin 11) |
//! | `active_low` | `false` | `true`: the output is driven **low** while the alarm is on (most relay modules) |
//! | `hold_secs` | 30 | the output stays on this long after the last anomaly; at most 86 400 |
//! | `streams` | `[]` (every stream) | only anomalies of these streams count |
//! | `min_score` | 0.0 (every flagged value) | only anomalies scoring at least this count; within `[0, 1]` |
//!
//! # Wiring (Raspberry Pi)
//!
//! A GPIO pin gives 3.3 V and should not source more than about 8–16 mA.
//!
//! * **LED**: GPIO → 330 Ω resistor → LED anode; cathode → GND.
//!   `active_low = false`.
//! * **Buzzer**: use an *active* buzzer (it beeps on DC). A small 3.3 V one
//!   may draw little enough to hang off the pin directly; anything louder
//!   goes through a transistor (NPN such as a 2N2222 with 1 kΩ on the base,
//!   or a logic-level MOSFET) switching the buzzer's own supply.
//!   `active_low = false`.
//! * **Relay**: never drive a relay coil from the pin; use a relay *module*
//!   (driver transistor and flyback diode on board). Many of them switch on
//!   when `IN` is pulled low: set `active_low = true`. Modules built for 5 V
//!   logic may not switch reliably from 3.3 V.
//!
//! Pick a line whose power-on pull matches the inactive level, so the output
//! stays off while the board boots and before the daemon starts: on the Pi,
//! GPIO 0–8 are pulled up at reset and GPIO 9–27 pulled down (so GPIO17 suits
//! an active-high buzzer, GPIO4 an active-low relay module). If the daemon
//! dies without [`Alarm::shutdown`] the kernel releases the line and it
//! usually keeps its last level; wire the output so that "inactive" is the
//! safe state.
//!
//! # Finding the chip and line
//!
//! `sudo apt install gpiod`, then `gpiodetect` lists the chips and
//! `gpioinfo` their lines with names and current users. On a Pi 1–4 the
//! header is `/dev/gpiochip0` (lines named `GPIO0` … `GPIO27`). On a **Pi 5**
//! the header belongs to the RP1 chip (`pinctrl-rp1`), which is
//! `/dev/gpiochip0` on kernels from 6.6.45 on but **`/dev/gpiochip4`** on
//! older kernels — where `gpiochip0` is a different chip and line 17 there is
//! not header pin 11. [`open`] logs the chip label and line name it got;
//! check that it says `GPIO17` (or whichever you meant).
//!
//! The daemon's user needs access to the chip device:
//! `sudo usermod -aG gpio wasmgate` (the `gpio` group owns
//! `/dev/gpiochip*` on Raspberry Pi OS). A line that another program or a
//! kernel driver (a device-tree overlay such as `gpio-led`) already uses is
//! refused; `gpioinfo` shows who has it.

use std::path::{Path, PathBuf};

use embedded_hal::digital::OutputPin;
use serde::{Deserialize, Serialize};

use crate::detect::AnomalyEvent;

/// Default of [`AlarmConfig::chip`].
pub const DEFAULT_CHIP: &str = "/dev/gpiochip0";
/// Default of [`AlarmConfig::hold_secs`].
pub const DEFAULT_HOLD_SECS: u64 = 30;
/// The largest allowed [`AlarmConfig::hold_secs`]: one day.
pub const MAX_HOLD_SECS: u64 = 86_400;
/// After a failed pin write, [`Alarm::next_deadline`] asks for a tick this
/// much later to write the pin again.
pub const PIN_RETRY_MS: u64 = 1_000;
/// The consumer label the line is requested with (shown by `gpioinfo`).
pub const CONSUMER: &str = "wasmgate";

fn default_chip() -> PathBuf {
    PathBuf::from(DEFAULT_CHIP)
}

fn default_hold_secs() -> u64 {
    DEFAULT_HOLD_SECS
}

/// The `[alarm]` section: which output line, how it is driven, and which
/// anomalies switch it on. Unknown keys are refused; call
/// [`AlarmConfig::validate`] after deserializing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// The GPIO character device. Default: `/dev/gpiochip0` (see the
    /// [module docs](self) for the Raspberry Pi 5).
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// The line offset on `chip`; on a Raspberry Pi, the BCM GPIO number.
    /// Required.
    pub line: u32,
    /// Drive the line low while the alarm is on (and high while it is off).
    /// Default: false.
    #[serde(default)]
    pub active_low: bool,
    /// Seconds the output stays on after the last counted anomaly, at most
    /// [`MAX_HOLD_SECS`]. Default: 30.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// The streams whose anomalies count; empty counts every stream.
    /// Default: empty.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Anomalies scoring below this are ignored; within `[0, 1]`. Default:
    /// 0.0 (every flagged value counts).
    #[serde(default)]
    pub min_score: f64,
}

impl AlarmConfig {
    /// A configuration for `line` with the defaults for everything else.
    pub fn new(line: u32) -> AlarmConfig {
        AlarmConfig {
            chip: default_chip(),
            line,
            active_low: false,
            hold_secs: DEFAULT_HOLD_SECS,
            streams: Vec::new(),
            min_score: 0.0,
        }
    }

    /// Check every key; the message names it, e.g.
    /// `min_score = 1.5 must be within [0, 1]`.
    ///
    /// Whether the streams exist is checked by the caller, which knows them
    /// (see [`AlarmConfig::unknown_streams`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.chip.as_os_str().is_empty() {
            return Err("chip must not be empty (for example \"/dev/gpiochip0\")".into());
        }
        if self.hold_secs > MAX_HOLD_SECS {
            return Err(format!(
                "hold_secs = {} is too long (at most {MAX_HOLD_SECS}, one day)",
                self.hold_secs
            ));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(format!(
                "min_score = {} must be within [0, 1]",
                self.min_score
            ));
        }
        for (i, stream) in self.streams.iter().enumerate() {
            if !crate::config::is_valid_stream_name(stream) {
                return Err(format!(
                    "streams[{i}] = {stream:?} is not a stream name: use only letters, digits, `_` and `-`"
                ));
            }
            if let Some(first) = self.streams[..i].iter().position(|s| s == stream) {
                return Err(format!(
                    "streams[{i}] = {stream:?} is listed twice (streams[{first}] has it too)"
                ));
            }
        }
        Ok(())
    }

    /// The entries of [`AlarmConfig::streams`] that are not in `known`, in
    /// configuration order — for the caller to refuse with the list of
    /// configured streams.
    pub fn unknown_streams<'a, S: AsRef<str>>(&'a self, known: &[S]) -> Vec<&'a str> {
        self.streams
            .iter()
            .map(String::as_str)
            .filter(|s| !known.iter().any(|k| k.as_ref() == *s))
            .collect()
    }

    /// Whether anomalies of `stream` count.
    pub fn selects(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|s| s == stream)
    }
}

/// Why the alarm could not be set up or its output not be driven.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// The configuration was refused (see [`AlarmConfig::validate`]).
    #[error("alarm configuration: {0}")]
    Config(String),
    /// The GPIO chip device could not be opened.
    #[error("cannot open GPIO chip {}: {source}{}", chip.display(), chip_hint(source))]
    Chip {
        /// The chip device.
        chip: PathBuf,
        /// What the kernel said.
        #[source]
        source: linux_embedded_hal::gpio_cdev::Error,
    },
    /// The chip has no line with that offset.
    #[error(
        "GPIO chip {} ({label}) has no line {line}: its lines are 0 to {} (list them with `gpioinfo`; on a Raspberry Pi 5 with a kernel older than 6.6.45 the header is /dev/gpiochip4)",
        chip.display(),
        lines.saturating_sub(1)
    )]
    NoSuchLine {
        /// The chip device.
        chip: PathBuf,
        /// The chip's label, e.g. `pinctrl-rp1`.
        label: String,
        /// The requested line.
        line: u32,
        /// How many lines the chip has.
        lines: u32,
    },
    /// Another program or a kernel driver holds the line.
    #[error(
        "GPIO line {line} on {} is already in use by {consumer:?} (see `gpioinfo`; stop that program, remove the overlay that claims it, or choose another line)",
        chip.display()
    )]
    LineBusy {
        /// The chip device.
        chip: PathBuf,
        /// The requested line.
        line: u32,
        /// Who holds it, as the kernel reports it.
        consumer: String,
    },
    /// The line could not be requested as an output.
    #[error("cannot request GPIO line {line} on {} as an output: {source}", chip.display())]
    Line {
        /// The chip device.
        chip: PathBuf,
        /// The requested line.
        line: u32,
        /// What the kernel said.
        #[source]
        source: linux_embedded_hal::gpio_cdev::Error,
    },
    /// Writing the output failed. The alarm keeps its state and writes the
    /// output again at the next event or tick.
    #[error(
        "GPIO line {line} on {}: cannot switch the alarm output {} (drive it {}): {message}",
        chip.display(),
        if *on { "on" } else { "off" },
        if *high { "high" } else { "low" }
    )]
    Pin {
        /// The chip device.
        chip: PathBuf,
        /// The line.
        line: u32,
        /// Whether the write was to switch the alarm on.
        on: bool,
        /// The level written: high or low.
        high: bool,
        /// The pin driver's error.
        message: String,
    },
}

/// Whether `error` wraps an operating-system error, and which.
fn io_error(error: &linux_embedded_hal::gpio_cdev::Error) -> Option<&std::io::Error> {
    std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>())
}

/// A hint for the usual reasons a chip cannot be opened.
fn chip_hint(error: &linux_embedded_hal::gpio_cdev::Error) -> &'static str {
    use std::io::ErrorKind;
    match io_error(error).map(std::io::Error::kind) {
        Some(ErrorKind::NotFound) => {
            " (no such device: list the chips with `gpiodetect`; on a Raspberry Pi 5 with a kernel older than 6.6.45 the header is /dev/gpiochip4)"
        }
        Some(ErrorKind::PermissionDenied) => {
            " (permission denied: add the daemon's user to the `gpio` group, e.g. `sudo usermod -aG gpio wasmgate`, and restart it)"
        }
        Some(_) => "",
        // Opening worked but the chip-info ioctl failed.
        None => " (is it a GPIO character device? list them with `gpiodetect`)",
    }
}

/// Counters of one [`Alarm`], for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlarmStats {
    /// Times the alarm went from off to on.
    pub activations: u64,
    /// Events that passed the filter (each turned the alarm on or extended
    /// the hold).
    pub events: u64,
    /// Events ignored: another stream, or a score below `min_score`.
    pub ignored: u64,
    /// Failed pin writes.
    pub pin_errors: u64,
}

/// What the output is known to be driven to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// The last write switched it on.
    On,
    /// The last write switched it off.
    Off,
    /// The last write failed; the level is not known.
    Unknown,
}

/// The alarm state machine driving one output pin.
///
/// The alarm is *on* (logically) from the first counted event until
/// `hold_secs` after the last one; the pin follows. All times are monotonic
/// milliseconds from any fixed origin, never decreasing between calls.
pub struct Alarm<P: OutputPin> {
    pin: P,
    chip: PathBuf,
    line: u32,
    active_low: bool,
    hold_ms: u64,
    streams: Vec<String>,
    min_score: f64,
    /// `Some(t)`: on until `t` (exclusive).
    until: Option<u64>,
    /// When the alarm last went on.
    since: u64,
    output: Output,
    /// When the last pin write failed (for the retry deadline).
    failed_at: u64,
    stats: AlarmStats,
}

// By hand: the pin need not be `Debug` (`CdevPin` is not).
impl<P: OutputPin> std::fmt::Debug for Alarm<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm")
            .field("chip", &self.chip)
            .field("line", &self.line)
            .field("active_low", &self.active_low)
            .field("hold_ms", &self.hold_ms)
            .field("streams", &self.streams)
            .field("min_score", &self.min_score)
            .field("until", &self.until)
            .field("output", &self.output)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: OutputPin> Alarm<P> {
    /// An alarm driving `pin` as `config` says. Validates the configuration
    /// and drives the pin to its inactive level; if that write fails the
    /// error is returned and the pin is dropped.
    pub fn new(config: &AlarmConfig, pin: P) -> Result<Alarm<P>, AlarmError> {
        config.validate().map_err(AlarmError::Config)?;
        let mut alarm = Alarm {
            pin,
            chip: config.chip.clone(),
            line: config.line,
            active_low: config.active_low,
            hold_ms: config.hold_secs.saturating_mul(1000),
            streams: config.streams.clone(),
            min_score: config.min_score,
            until: None,
            since: 0,
            output: Output::Unknown,
            failed_at: 0,
            stats: AlarmStats::default(),
        };
        alarm.drive(false, 0)?;
        Ok(alarm)
    }

    /// Take one anomaly at `now_ms`. If it counts (its stream is selected
    /// and its score is at least `min_score`) the alarm is on until
    /// `now_ms + hold`, switching the output on if it was off. A pin write
    /// pending from an earlier failure is retried here.
    ///
    /// A failed write is returned as [`AlarmError::Pin`]; the event is still
    /// counted and the alarm is still on.
    pub fn on_event(&mut self, event: &AnomalyEvent, now_ms: u64) -> Result<(), AlarmError> {
        if self.counts(event) {
            self.stats.events += 1;
            let until = now_ms.saturating_add(self.hold_ms);
            match self.until {
                Some(t) => self.until = Some(t.max(until)),
                None => {
                    self.until = Some(until);
                    self.since = now_ms;
                    self.stats.activations += 1;
                    tracing::info!(
                        stream = %event.stream,
                        sensor = %event.sensor,
                        field = %event.field,
                        detector = %event.detector,
                        value = event.value,
                        score = event.score,
                        line = self.line,
                        "alarm on"
                    );
                }
            }
        } else {
            self.stats.ignored += 1;
        }
        self.sync(now_ms)
    }

    /// Advance to `now_ms`: switch the alarm off once its hold has expired,
    /// and retry a pending pin write. Call it at [`Alarm::next_deadline`];
    /// calling it at other times is harmless.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), AlarmError> {
        if self.until.is_some_and(|until| now_ms >= until) {
            self.until = None;
            tracing::info!(
                on_for_ms = now_ms.saturating_sub(self.since),
                line = self.line,
                "alarm cleared"
            );
        }
        self.sync(now_ms)
    }

    /// Whether the alarm is on: a counted anomaly is within its hold. (The
    /// output follows unless a write failed; see [`Alarm::output_in_sync`].)
    pub fn is_on(&self) -> bool {
        self.until.is_some()
    }

    /// Whether the output is known to match [`Alarm::is_on`]: false after a
    /// failed write until a retry succeeds.
    pub fn output_in_sync(&self) -> bool {
        self.output == self.wanted()
    }

    /// When [`Alarm::tick`] should next be called: when the hold expires,
    /// or — after a failed pin write — [`PIN_RETRY_MS`] after the failure,
    /// whichever is earlier. `None` when nothing is pending.
    pub fn next_deadline(&self) -> Option<u64> {
        let retry = (!self.output_in_sync()).then(|| self.failed_at.saturating_add(PIN_RETRY_MS));
        match (self.until, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Times the alarm went from off to on.
    pub fn activations(&self) -> u64 {
        self.stats.activations
    }

    /// Events that counted (passed the stream filter and `min_score`).
    pub fn events_counted(&self) -> u64 {
        self.stats.events
    }

    /// All counters.
    pub fn stats(&self) -> AlarmStats {
        self.stats
    }

    /// The chip device this alarm was configured with.
    pub fn chip(&self) -> &Path {
        &self.chip
    }

    /// The line this alarm drives.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Drive the output to its inactive level and release the pin (returned,
    /// so a caller can reuse it; dropping it releases the GPIO line). If the
    /// write fails the error is returned and the pin is dropped.
    pub fn shutdown(mut self) -> Result<P, AlarmError> {
        if self.until.take().is_some() {
            tracing::info!(line = self.line, "alarm output switched off at shutdown");
        }
        self.drive(false, self.failed_at)?;
        Ok(self.pin)
    }

    /// Whether `event` switches the alarm on.
    fn counts(&self, event: &AnomalyEvent) -> bool {
        // `>=` is false for a NaN score, so such an event is ignored.
        event.score >= self.min_score
            && (self.streams.is_empty() || self.streams.contains(&event.stream))
    }

    /// The output level the state asks for.
    fn wanted(&self) -> Output {
        if self.until.is_some() {
            Output::On
        } else {
            Output::Off
        }
    }

    /// Write the pin if it may not match the state.
    fn sync(&mut self, now_ms: u64) -> Result<(), AlarmError> {
        if self.output_in_sync() {
            return Ok(());
        }
        self.drive(self.until.is_some(), now_ms)
    }

    /// Switch the output on or off, honouring `active_low`.
    fn drive(&mut self, on: bool, now_ms: u64) -> Result<(), AlarmError> {
        let high = on != self.active_low;
        let result = if high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        };
        match result {
            Ok(()) => {
                self.output = if on { Output::On } else { Output::Off };
                Ok(())
            }
            Err(e) => {
                self.output = Output::Unknown;
                self.failed_at = now_ms;
                self.stats.pin_errors += 1;
                Err(AlarmError::Pin {
                    chip: self.chip.clone(),
                    line: self.line,
                    on,
                    high,
                    message: format!("{e:?}"),
                })
            }
        }
    }
}

/// Open the configured line for real hardware: the chip device, then the
/// line as an output at its inactive level (requested as `wasmgate`, which
/// `gpioinfo` shows), then [`Alarm::new`].
///
/// Errors say what to do: a missing chip ([`AlarmError::Chip`], with the
/// Pi 5 hint), no permission (the `gpio` group), a line the chip does not
/// have ([`AlarmError::NoSuchLine`]) or one that is already in use
/// ([`AlarmError::LineBusy`]).
pub fn open(config: &AlarmConfig) -> Result<Alarm<linux_embedded_hal::CdevPin>, AlarmError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

    config.validate().map_err(AlarmError::Config)?;
    let chip_path = config.chip.clone();
    let line_error = |source| AlarmError::Line {
        chip: chip_path.clone(),
        line: config.line,
        source,
    };

    let mut chip = Chip::new(&config.chip).map_err(|source| AlarmError::Chip {
        chip: chip_path.clone(),
        source,
    })?;
    if config.line >= chip.num_lines() {
        return Err(AlarmError::NoSuchLine {
            chip: chip_path.clone(),
            label: chip.label().to_owned(),
            line: config.line,
            lines: chip.num_lines(),
        });
    }
    let line = chip.get_line(config.line).map_err(line_error)?;
    let info = line.info().map_err(line_error)?;
    if info.is_used() {
        return Err(AlarmError::LineBusy {
            chip: chip_path.clone(),
            line: config.line,
            consumer: info
                .consumer()
                .filter(|c| !c.is_empty())
                .unwrap_or(if info.is_kernel() {
                    "the kernel"
                } else {
                    "another program"
                })
                .to_owned(),
        });
    }
    // Request the line already at the inactive level, so it does not glitch
    // on; `Alarm::new` writes the same level again.
    let inactive = u8::from(config.active_low);
    let handle = line
        .request(LineRequestFlags::OUTPUT, inactive, CONSUMER)
        .map_err(line_error)?;
    let pin = linux_embedded_hal::CdevPin::new(handle).map_err(line_error)?;
    tracing::info!(
        chip = %config.chip.display(),
        label = chip.label(),
        line = config.line,
        name = info.name().unwrap_or("(unnamed)"),
        active_low = config.active_low,
        "alarm output ready"
    );
    Alarm::new(config, pin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    fn event(stream: &str, score: f64) -> AnomalyEvent {
        AnomalyEvent {
            stream: stream.into(),
            sensor: "greenhouse/bme280-1".into(),
            field: "temp".into(),
            value: 41.5,
            score,
            detector: "mad".into(),
            kind: "mad".into(),
            ts: 1_700_000_000_000,
        }
    }

    fn config(hold_secs: u64) -> AlarmConfig {
        AlarmConfig {
            hold_secs,
            ..AlarmConfig::new(17)
        }
    }

    fn set(state: State) -> Transaction {
        Transaction::set(state)
    }

    fn failing(state: State) -> Transaction {
        Transaction::set(state).with_error(MockError::Io(std::io::ErrorKind::Other))
    }

    #[test]
    fn inactive_at_start() {
        let mut pin = Mock::new(&[set(State::Low)]);
        let alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        assert!(!alarm.is_on());
        assert!(alarm.output_in_sync());
        assert_eq!(alarm.next_deadline(), None);
        assert_eq!(alarm.stats(), AlarmStats::default());
        drop(alarm);
        pin.done();
    }

    #[test]
    fn first_event_turns_on_and_later_ones_extend_without_writes() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High)]);
        let mut alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        alarm.on_event(&event("greenhouse", 0.9), 1_000).unwrap();
        assert!(alarm.is_on());
        assert_eq!(alarm.next_deadline(), Some(31_000));
        alarm.on_event(&event("greenhouse", 0.8), 5_000).unwrap();
        alarm.on_event(&event("cellar", 0.95), 10_000).unwrap();
        assert_eq!(alarm.next_deadline(), Some(40_000));
        alarm.tick(31_000).unwrap();
        assert!(alarm.is_on());
        assert_eq!(alarm.activations(), 1);
        assert_eq!(alarm.events_counted(), 3);
        drop(alarm);
        pin.done();
    }

    #[test]
    fn off_exactly_when_the_hold_expires() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        alarm.on_event(&event("greenhouse", 0.9), 1_000).unwrap();
        alarm.tick(30_999).unwrap();
        assert!(alarm.is_on());
        alarm.tick(31_000).unwrap();
        assert!(!alarm.is_on());
        assert_eq!(alarm.next_deadline(), None);
        // Further ticks write nothing.
        alarm.tick(40_000).unwrap();
        drop(alarm);
        pin.done();
    }

    #[test]
    fn an_older_event_does_not_shorten_the_hold() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High)]);
        let mut alarm = Alarm::new(&config(10), pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 5_000).unwrap();
        alarm.on_event(&event("a", 0.9), 4_000).unwrap();
        assert_eq!(alarm.next_deadline(), Some(15_000));
        drop(alarm);
        pin.done();
    }

    #[test]
    fn a_second_activation_after_clearing() {
        let mut pin = Mock::new(&[
            set(State::Low),
            set(State::High),
            set(State::Low),
            set(State::High),
        ]);
        let mut alarm = Alarm::new(&config(1), pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 0).unwrap();
        alarm.tick(1_000).unwrap();
        alarm.on_event(&event("a", 0.9), 2_000).unwrap();
        assert!(alarm.is_on());
        assert_eq!(alarm.activations(), 2);
        drop(alarm);
        pin.done();
    }

    #[test]
    fn active_low_inverts_the_levels() {
        let mut pin = Mock::new(&[
            set(State::High),
            set(State::Low),
            set(State::High),
            set(State::High),
        ]);
        let cfg = AlarmConfig {
            active_low: true,
            ..config(5)
        };
        let mut alarm = Alarm::new(&cfg, pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 0).unwrap();
        alarm.tick(5_000).unwrap();
        alarm.shutdown().unwrap();
        pin.done();
    }

    #[test]
    fn stream_filter_and_min_score() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High)]);
        let cfg = AlarmConfig {
            streams: vec!["greenhouse".into()],
            min_score: 0.8,
            ..config(30)
        };
        let mut alarm = Alarm::new(&cfg, pin.clone()).unwrap();
        alarm.on_event(&event("cellar", 0.99), 0).unwrap();
        alarm.on_event(&event("greenhouse", 0.79), 0).unwrap();
        alarm.on_event(&event("greenhouse", f64::NAN), 0).unwrap();
        assert!(!alarm.is_on());
        assert_eq!(alarm.next_deadline(), None);
        alarm.on_event(&event("greenhouse", 0.8), 100).unwrap();
        assert!(alarm.is_on());
        assert_eq!(
            alarm.stats(),
            AlarmStats {
                activations: 1,
                events: 1,
                ignored: 3,
                pin_errors: 0
            }
        );
        drop(alarm);
        pin.done();
    }

    #[test]
    fn a_failed_turn_on_is_reported_and_retried_at_the_next_tick() {
        let mut pin = Mock::new(&[set(State::Low), failing(State::High), set(State::High)]);
        let mut alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        let err = alarm.on_event(&event("a", 0.9), 1_000).unwrap_err();
        let message = err.to_string();
        assert!(matches!(
            err,
            AlarmError::Pin {
                on: true,
                high: true,
                ..
            }
        ));
        assert!(message.contains("line 17"), "{message}");
        assert!(message.contains("/dev/gpiochip0"), "{message}");
        assert!(alarm.is_on());
        assert!(!alarm.output_in_sync());
        assert_eq!(alarm.next_deadline(), Some(1_000 + PIN_RETRY_MS));
        alarm.tick(2_000).unwrap();
        assert!(alarm.output_in_sync());
        assert_eq!(alarm.next_deadline(), Some(31_000));
        assert_eq!(alarm.stats().pin_errors, 1);
        assert_eq!(alarm.activations(), 1);
        drop(alarm);
        pin.done();
    }

    #[test]
    fn a_failed_turn_on_is_retried_at_the_next_event() {
        let mut pin = Mock::new(&[
            set(State::Low),
            failing(State::High),
            failing(State::High),
            set(State::High),
        ]);
        let mut alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        assert!(alarm.on_event(&event("a", 0.9), 1_000).is_err());
        assert!(alarm.on_event(&event("a", 0.9), 1_200).is_err());
        assert_eq!(alarm.next_deadline(), Some(1_200 + PIN_RETRY_MS));
        alarm.on_event(&event("a", 0.9), 1_500).unwrap();
        assert!(alarm.output_in_sync());
        assert_eq!(alarm.activations(), 1);
        assert_eq!(alarm.events_counted(), 3);
        assert_eq!(alarm.stats().pin_errors, 2);
        drop(alarm);
        pin.done();
    }

    #[test]
    fn a_failed_turn_off_is_retried() {
        let mut pin = Mock::new(&[
            set(State::Low),
            set(State::High),
            failing(State::Low),
            set(State::Low),
        ]);
        let mut alarm = Alarm::new(&config(1), pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 0).unwrap();
        let err = alarm.tick(1_000).unwrap_err();
        assert!(matches!(
            err,
            AlarmError::Pin {
                on: false,
                high: false,
                ..
            }
        ));
        assert!(!alarm.is_on());
        assert_eq!(alarm.next_deadline(), Some(1_000 + PIN_RETRY_MS));
        alarm.tick(2_000).unwrap();
        assert_eq!(alarm.next_deadline(), None);
        drop(alarm);
        pin.done();
    }

    #[test]
    fn failing_initial_write_is_an_error() {
        let mut pin = Mock::new(&[failing(State::Low)]);
        let err = Alarm::new(&config(30), pin.clone()).unwrap_err();
        assert!(matches!(err, AlarmError::Pin { on: false, .. }));
        pin.done();
    }

    #[test]
    fn shutdown_drives_inactive() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 0).unwrap();
        let released = alarm.shutdown().unwrap();
        drop(released);
        pin.done();
    }

    #[test]
    fn shutdown_when_off_still_writes_inactive() {
        let mut pin = Mock::new(&[set(State::Low), set(State::Low)]);
        let alarm = Alarm::new(&config(30), pin.clone()).unwrap();
        alarm.shutdown().unwrap();
        pin.done();
    }

    #[test]
    fn zero_hold_turns_off_at_the_next_tick() {
        let mut pin = Mock::new(&[set(State::Low), set(State::High), set(State::Low)]);
        let mut alarm = Alarm::new(&config(0), pin.clone()).unwrap();
        alarm.on_event(&event("a", 0.9), 500).unwrap();
        assert_eq!(alarm.next_deadline(), Some(500));
        alarm.tick(500).unwrap();
        assert!(!alarm.is_on());
        drop(alarm);
        pin.done();
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: AlarmConfig = toml::from_str("line = 17").unwrap();
        assert_eq!(cfg, AlarmConfig::new(17));
        assert_eq!(cfg.chip, Path::new("/dev/gpiochip0"));
        assert!(!cfg.active_low);
        assert_eq!(cfg.hold_secs, 30);
        assert!(cfg.streams.is_empty());
        assert_eq!(cfg.min_score, 0.0);
        cfg.validate().unwrap();

        let err = toml::from_str::<AlarmConfig>("line = 17\nhold = 3").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<AlarmConfig>("chip = \"/dev/gpiochip4\"").unwrap_err();
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn config_validation() {
        let bad = |cfg: AlarmConfig, needle: &str| {
            let m = cfg.validate().unwrap_err();
            assert!(m.contains(needle), "{m}");
        };
        bad(
            AlarmConfig {
                min_score: 1.5,
                ..AlarmConfig::new(17)
            },
            "min_score = 1.5",
        );
        bad(
            AlarmConfig {
                min_score: f64::NAN,
                ..AlarmConfig::new(17)
            },
            "min_score",
        );
        bad(
            AlarmConfig {
                hold_secs: MAX_HOLD_SECS + 1,
                ..AlarmConfig::new(17)
            },
            "hold_secs",
        );
        bad(
            AlarmConfig {
                chip: PathBuf::new(),
                ..AlarmConfig::new(17)
            },
            "chip",
        );
        bad(
            AlarmConfig {
                streams: vec!["a".into(), "b c".into()],
                ..AlarmConfig::new(17)
            },
            "streams[1]",
        );
        bad(
            AlarmConfig {
                streams: vec!["a".into(), "a".into()],
                ..AlarmConfig::new(17)
            },
            "listed twice",
        );
        let mut pin = Mock::new(&[]);
        let err = Alarm::new(
            &AlarmConfig {
                min_score: -1.0,
                ..AlarmConfig::new(17)
            },
            pin.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, AlarmError::Config(_)));
        pin.done();
    }

    #[test]
    fn unknown_streams_and_selection() {
        let cfg = AlarmConfig {
            streams: vec!["greenhouse".into(), "attic".into()],
            ..AlarmConfig::new(17)
        };
        assert_eq!(
            cfg.unknown_streams(&["greenhouse", "cellar"]),
            vec!["attic"]
        );
        assert!(cfg.selects("attic"));
        assert!(!cfg.selects("cellar"));
        assert!(AlarmConfig::new(17).selects("anything"));
    }

    #[test]
    fn open_reports_a_missing_chip() {
        let cfg = AlarmConfig {
            chip: PathBuf::from("/nonexistent/gpiochip9"),
            ..AlarmConfig::new(17)
        };
        let message = open(&cfg).unwrap_err().to_string();
        assert!(message.contains("/nonexistent/gpiochip9"), "{message}");
        assert!(message.contains("gpiodetect"), "{message}");
    }

    #[test]
    fn open_errors_carry_hints() {
        let denied = AlarmError::Chip {
            chip: PathBuf::from("/dev/gpiochip0"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied).into(),
        };
        let message = denied.to_string();
        assert!(message.contains("`gpio` group"), "{message}");

        let message = AlarmError::NoSuchLine {
            chip: PathBuf::from("/dev/gpiochip0"),
            label: "pinctrl-bcm2711".into(),
            line: 60,
            lines: 58,
        }
        .to_string();
        assert!(message.contains("no line 60"), "{message}");
        assert!(message.contains("0 to 57"), "{message}");
        assert!(message.contains("gpioinfo"), "{message}");

        let message = AlarmError::LineBusy {
            chip: PathBuf::from("/dev/gpiochip0"),
            line: 17,
            consumer: "led0".into(),
        }
        .to_string();
        assert!(message.contains("in use by \"led0\""), "{message}");
    }

    #[test]
    fn open_reports_a_device_that_is_not_a_gpio_chip() {
        let cfg = AlarmConfig {
            chip: PathBuf::from("/dev/null"),
            ..AlarmConfig::new(17)
        };
        let message = open(&cfg).unwrap_err().to_string();
        assert!(message.contains("GPIO character device"), "{message}");
    }
}
