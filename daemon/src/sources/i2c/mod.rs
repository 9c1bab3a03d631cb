//! I²C sensors: configuration and the synchronous polling core.
//!
//! One [`I2cPoller`] owns one sensor on one bus. Each [`I2cPoller::poll`]
//! takes one measurement and turns it into a [`Reading`]. When anything goes
//! wrong the chip is initialised again before the next measurement, so a
//! sensor that was unplugged and plugged back in (and so lost its settings)
//! comes back by itself; [`I2cPoller::next_poll_in_ms`] says how long to
//! wait before the next attempt (exponential backoff while failing). The
//! poller blocks: it sleeps for the conversion time, up to ≈0.1 s with ×16
//! oversampling. The async task that drives it (`spawn_blocking`, metrics)
//! lives elsewhere.
//!
//! Drivers: [`bme280`] (Bosch BME280: temperature, pressure, humidity).
//!
//! # Wiring (Raspberry Pi)
//!
//! | sensor pin | Pi header pin |
//! |---|---|
//! | VIN / VCC | 1 (3.3 V) — not 5 V unless the breakout has a regulator |
//! | GND | 6 (GND) |
//! | SDA / SDI | 3 (GPIO 2, SDA1) |
//! | SCL / SCK | 5 (GPIO 3, SCL1) |
//! | SDO | GND → address 0x76, 3.3 V → 0x77 (breakouts strap one of them) |
//! | CSB | 3.3 V (selects I²C; most breakouts pull it up already) |
//!
//! 1. Enable the bus: `sudo raspi-config` → *Interface Options* → *I2C* →
//!    *Yes* (or `dtparam=i2c_arm=on` in `/boot/firmware/config.txt`), then
//!    reboot. `/dev/i2c-1` must exist.
//! 2. Let the daemon's user open it: `sudo usermod -aG i2c wasmgate`.
//! 3. Find the address: `sudo apt install i2c-tools`, then `i2cdetect -y 1`;
//!    a BME280 shows up as `76` or `77`. (`UU` means a kernel driver has
//!    claimed the address; unload it or use the other address.)
//!
//! # Configuration
//!
//! One table per sensor (for example `[[sources.i2c]]`; the section that
//! holds these tables belongs to the daemon configuration in `config.rs`):
//!
//! ```toml
//! [[sources.i2c]]
//! sensor = "greenhouse/bme280-1"   # required: the readings' sensor id
//! address = 0x76                   # required: 0x76 or 0x77 for a BME280
//! driver = "bme280"                # required; or a table with settings:
//! # driver = { model = "bme280", temperature_oversampling = 2, filter = 4 }
//! bus = "/dev/i2c-1"               # default "/dev/i2c-1"
//! poll_interval_ms = 10_000        # default 10 000, minimum 100
//! fields = { temperature = "temp_c" }  # optional renames, see below
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `sensor` | — | sensor id of the readings (non-empty) |
//! | `address` | — | 7-bit I²C address; 0x76 or 0x77 for a BME280 |
//! | `driver` | — | `"bme280"`, or `{ model = "bme280", … }` with [`bme280::Bme280Config`]'s keys |
//! | `bus` | `/dev/i2c-1` | the bus device |
//! | `poll_interval_ms` | 10 000 | time between measurements, at least 100 ms |
//! | `fields.temperature` | `"temperature"` | field name for the temperature |
//! | `fields.pressure` | `"pressure"` | field name for the pressure |
//! | `fields.humidity` | `"humidity"` | field name for the humidity |
//!
//! BME280 driver settings (all optional): `temperature_oversampling`,
//! `pressure_oversampling`, `humidity_oversampling` — 1, 2, 4, 8 or 16,
//! default 1; `filter` — IIR coefficient 0 (off, default), 2, 4, 8 or 16.
//!
//! # Readings and units
//!
//! `Reading { sensor, ts: now_ms, fields: [temperature, pressure, humidity] }`
//! in that order, with
//!
//! * `temperature` in **°C** (resolution 0.01 °C),
//! * `pressure` in **hPa** (= mbar; station pressure, not reduced to sea
//!   level),
//! * `humidity` in **%RH**, 0 to 100 (resolution ≈0.001 %RH, accuracy ±3 %RH).

pub mod bme280;

use std::path::{Path, PathBuf};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::reading::Reading;
use bme280::{Bme280, Bme280Config, Measurement};

/// Default bus device: the Raspberry Pi's header bus.
pub const DEFAULT_BUS: &str = "/dev/i2c-1";
/// Default time between two measurements.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 10_000;
/// The shortest allowed `poll_interval_ms`.
pub const MIN_POLL_INTERVAL_MS: u64 = 100;
/// The longest wait [`I2cPoller::backoff_ms`] suggests.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// One I²C sensor, as configured. Deserializing validates it (see
/// [`I2cSensorConfig::validate`]); unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawI2cSensorConfig")]
pub struct I2cSensorConfig {
    /// The bus device, default [`DEFAULT_BUS`].
    pub bus: PathBuf,
    /// The 7-bit address of the chip.
    pub address: u8,
    /// Which chip, with its settings.
    pub driver: Driver,
    /// Sensor id of the readings, e.g. `greenhouse/bme280-1`.
    pub sensor: String,
    /// Time between measurements in ms, default
    /// [`DEFAULT_POLL_INTERVAL_MS`], at least [`MIN_POLL_INTERVAL_MS`].
    pub poll_interval_ms: u64,
    /// Names of the reading's fields.
    pub fields: FieldNames,
}

impl I2cSensorConfig {
    /// A configuration with the defaults for everything optional.
    pub fn new(sensor: impl Into<String>, address: u8, driver: Driver) -> Self {
        I2cSensorConfig {
            bus: PathBuf::from(DEFAULT_BUS),
            address,
            driver,
            sensor: sensor.into(),
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            fields: FieldNames::default(),
        }
    }

    /// Check what serde cannot: a non-empty sensor id and bus path, an
    /// address the driver's chip can have, the minimum poll interval, and
    /// non-empty, distinct field names.
    pub fn validate(&self) -> Result<(), I2cConfigError> {
        if self.sensor.trim().is_empty() {
            return Err(I2cConfigError::EmptySensor);
        }
        if self.bus.as_os_str().is_empty() {
            return Err(I2cConfigError::EmptyBus);
        }
        let allowed = self.driver.addresses();
        if !allowed.contains(&self.address) {
            return Err(I2cConfigError::Address {
                address: self.address,
                driver: self.driver.model(),
                allowed: format_addresses(allowed),
            });
        }
        if self.poll_interval_ms < MIN_POLL_INTERVAL_MS {
            return Err(I2cConfigError::PollInterval {
                ms: self.poll_interval_ms,
            });
        }
        self.fields.validate()
    }
}

/// The serde shape of [`I2cSensorConfig`], before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawI2cSensorConfig {
    #[serde(default = "default_bus")]
    bus: PathBuf,
    address: u8,
    driver: Driver,
    sensor: String,
    #[serde(default = "default_poll_interval_ms")]
    poll_interval_ms: u64,
    #[serde(default)]
    fields: FieldNames,
}

fn default_bus() -> PathBuf {
    PathBuf::from(DEFAULT_BUS)
}

fn default_poll_interval_ms() -> u64 {
    DEFAULT_POLL_INTERVAL_MS
}

impl TryFrom<RawI2cSensorConfig> for I2cSensorConfig {
    type Error = I2cConfigError;

    fn try_from(raw: RawI2cSensorConfig) -> Result<Self, Self::Error> {
        let config = I2cSensorConfig {
            bus: raw.bus,
            address: raw.address,
            driver: raw.driver,
            sensor: raw.sensor,
            poll_interval_ms: raw.poll_interval_ms,
            fields: raw.fields,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The chip on the bus and its settings.
///
/// In the configuration either the model name alone (`driver = "bme280"`,
/// default settings) or a table with a `model` key and the driver's settings
/// (`driver = { model = "bme280", filter = 4 }`).
#[derive(Debug, Clone, PartialEq)]
pub enum Driver {
    /// Bosch BME280 ([`bme280`]).
    Bme280(Bme280Config),
}

impl Driver {
    /// The model names the configuration accepts.
    pub const MODELS: &'static [&'static str] = &["bme280"];

    /// The model name, as in the configuration.
    pub fn model(&self) -> &'static str {
        match self {
            Driver::Bme280(_) => "bme280",
        }
    }

    /// The addresses the chip can be strapped to.
    pub fn addresses(&self) -> &'static [u8] {
        match self {
            Driver::Bme280(_) => &[bme280::ADDRESS_PRIMARY, bme280::ADDRESS_SECONDARY],
        }
    }
}

/// The table form of [`Driver`]: `{ model = "…", settings… }`.
#[derive(Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
enum DriverTable {
    Bme280(Bme280Config),
}

impl<'de> Deserialize<'de> for Driver {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DriverVisitor;

        impl<'de> Visitor<'de> for DriverVisitor {
            type Value = Driver;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a driver name ("bme280") or a table with a `model` key"#)
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Driver, E> {
                match name {
                    "bme280" => Ok(Driver::Bme280(Bme280Config::default())),
                    other => Err(E::unknown_variant(other, Driver::MODELS)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Driver, A::Error> {
                let table = DriverTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match table {
                    DriverTable::Bme280(config) => Driver::Bme280(config),
                })
            }
        }

        deserializer.deserialize_any(DriverVisitor)
    }
}

/// The field names of the readings; each key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldNames {
    /// Default `"temperature"` (°C).
    pub temperature: String,
    /// Default `"pressure"` (hPa).
    pub pressure: String,
    /// Default `"humidity"` (%RH).
    pub humidity: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames {
            temperature: "temperature".into(),
            pressure: "pressure".into(),
            humidity: "humidity".into(),
        }
    }
}

impl FieldNames {
    /// Non-empty and pairwise distinct.
    fn validate(&self) -> Result<(), I2cConfigError> {
        let names = [
            ("temperature", &self.temperature),
            ("pressure", &self.pressure),
            ("humidity", &self.humidity),
        ];
        for (key, name) in names {
            if name.trim().is_empty() {
                return Err(I2cConfigError::EmptyField { key });
            }
        }
        for (i, (_, a)) in names.iter().enumerate() {
            if names[i + 1..].iter().any(|(_, b)| a == b) {
                return Err(I2cConfigError::DuplicateField {
                    name: a.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// `0x76 or 0x77`.
fn format_addresses(addresses: &[u8]) -> String {
    let hex: Vec<String> = addresses.iter().map(|a| format!("0x{a:02x}")).collect();
    match hex.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => hex.concat(),
    }
}

/// An I²C sensor configuration that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum I2cConfigError {
    /// `sensor` is empty.
    #[error("`sensor` must not be empty")]
    EmptySensor,
    /// `bus` is empty.
    #[error("`bus` must not be empty (e.g. \"/dev/i2c-1\")")]
    EmptyBus,
    /// The driver's chip cannot have this address.
    #[error(
        "`address` 0x{address:02x} is not an address a {driver} can have (use {allowed}; `i2cdetect -y 1` lists what is on the bus)"
    )]
    Address {
        /// The configured address.
        address: u8,
        /// The driver's model name.
        driver: &'static str,
        /// The allowed addresses, formatted.
        allowed: String,
    },
    /// `poll_interval_ms` is below [`MIN_POLL_INTERVAL_MS`].
    #[error("`poll_interval_ms` is {ms}, the minimum is {MIN_POLL_INTERVAL_MS}")]
    PollInterval {
        /// The configured interval.
        ms: u64,
    },
    /// A field name is empty.
    #[error("`fields.{key}` must not be empty")]
    EmptyField {
        /// `temperature`, `pressure` or `humidity`.
        key: &'static str,
    },
    /// Two fields would get the same name.
    #[error("two fields are both named {name:?}")]
    DuplicateField {
        /// The name used twice.
        name: String,
    },
}

/// Why a poll (or opening the bus) failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The configuration was refused.
    #[error("I²C sensor configuration: {0}")]
    Config(#[from] I2cConfigError),
    /// The bus device could not be opened.
    #[error("cannot open I²C bus {}: {source}{}", path.display(), open_hint(source))]
    Open {
        /// The bus device.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: linux_embedded_hal::i2cdev::linux::LinuxI2CError,
    },
    /// The chip did not deliver a measurement.
    #[error("I²C sensor {sensor} ({}, 0x{address:02x}): {source}", bus.display())]
    Sensor {
        /// The sensor id.
        sensor: String,
        /// The bus device.
        bus: PathBuf,
        /// The chip's address.
        address: u8,
        /// What went wrong.
        #[source]
        source: bme280::Error,
    },
}

/// A hint for the two usual reasons a bus cannot be opened.
fn open_hint(error: &linux_embedded_hal::i2cdev::linux::LinuxI2CError) -> &'static str {
    use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
    const ENOENT: i32 = 2;
    const EACCES: i32 = 13;
    let errno = match error {
        LinuxI2CError::Errno(n) => Some(*n),
        LinuxI2CError::Io(e) => e.raw_os_error(),
    };
    match errno {
        Some(ENOENT) => " (is I²C enabled? raspi-config → Interface Options → I2C)",
        Some(EACCES) => " (is the daemon's user in the `i2c` group?)",
        _ => "",
    }
}

/// The chip behind a poller.
enum Device<I> {
    Bme280(Bme280<I>),
}

impl<I> Device<I> {
    fn model(&self) -> &'static str {
        match self {
            Device::Bme280(_) => "bme280",
        }
    }
}

impl<I: I2c> Device<I> {
    fn init(&mut self, delay: &mut impl DelayNs) -> Result<(), bme280::Error> {
        match self {
            Device::Bme280(d) => d.init(delay),
        }
    }

    fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Measurement, bme280::Error> {
        match self {
            Device::Bme280(d) => d.measure(delay),
        }
    }

    fn release(self) -> I {
        match self {
            Device::Bme280(d) => d.release(),
        }
    }
}

/// Polls one I²C sensor: one [`Reading`] per [`I2cPoller::poll`],
/// re-initialising the chip after any failure.
pub struct I2cPoller<I, D> {
    device: Device<I>,
    delay: D,
    sensor: String,
    bus: PathBuf,
    address: u8,
    fields: FieldNames,
    poll_interval_ms: u64,
    needs_init: bool,
    consecutive_failures: u32,
}

// By hand: neither `I2cdev` nor `linux_embedded_hal::Delay` is `Debug`.
impl<I, D> std::fmt::Debug for I2cPoller<I, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I2cPoller")
            .field("sensor", &self.sensor)
            .field("bus", &self.bus)
            .field("address", &format_args!("0x{:02x}", self.address))
            .field("driver", &self.device.model())
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("needs_init", &self.needs_init)
            .field("consecutive_failures", &self.consecutive_failures)
            .finish_non_exhaustive()
    }
}

impl I2cPoller<linux_embedded_hal::I2cdev, linux_embedded_hal::Delay> {
    /// Open the configured bus device for real hardware.
    ///
    /// Only the bus device is opened here (a missing `/dev/i2c-1` or a
    /// permission problem is a set-up error worth failing on at start-up);
    /// the chip itself is initialised by the first [`I2cPoller::poll`], so
    /// a sensor that is absent at start-up is retried like any other failure.
    pub fn open(config: &I2cSensorConfig) -> Result<Self, PollError> {
        config.validate()?;
        let bus =
            linux_embedded_hal::I2cdev::new(&config.bus).map_err(|source| PollError::Open {
                path: config.bus.clone(),
                source,
            })?;
        I2cPoller::new(config, bus, linux_embedded_hal::Delay)
    }
}

impl<I: I2c, D: DelayNs> I2cPoller<I, D> {
    /// A poller for the sensor `config` describes, on `i2c`. Validates the
    /// configuration; does not touch the bus.
    pub fn new(config: &I2cSensorConfig, i2c: I, delay: D) -> Result<Self, PollError> {
        config.validate()?;
        let device = match &config.driver {
            Driver::Bme280(settings) => Device::Bme280(Bme280::new(i2c, config.address, *settings)),
        };
        Ok(I2cPoller {
            device,
            delay,
            sensor: config.sensor.clone(),
            bus: config.bus.clone(),
            address: config.address,
            fields: config.fields.clone(),
            poll_interval_ms: config.poll_interval_ms,
            needs_init: true,
            consecutive_failures: 0,
        })
    }

    /// Take one measurement and return it as a reading stamped `now_ms`.
    ///
    /// Initialises the chip first if this is the first poll or the previous
    /// one failed. On failure the consecutive-failure counter goes up and the
    /// next poll starts with a fresh initialisation; on success it is reset.
    pub fn poll(&mut self, now_ms: i64) -> Result<Reading, PollError> {
        match self.try_measure() {
            Ok(m) => {
                if self.consecutive_failures > 0 {
                    tracing::info!(
                        sensor = %self.sensor,
                        failures = self.consecutive_failures,
                        "I²C sensor recovered"
                    );
                }
                self.consecutive_failures = 0;
                Ok(Reading::new(self.sensor.clone(), now_ms)
                    .with_field(self.fields.temperature.clone(), m.temperature)
                    .with_field(self.fields.pressure.clone(), m.pressure)
                    .with_field(self.fields.humidity.clone(), m.humidity))
            }
            Err(source) => {
                self.needs_init = true;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let error = PollError::Sensor {
                    sensor: self.sensor.clone(),
                    bus: self.bus.clone(),
                    address: self.address,
                    source,
                };
                if self.consecutive_failures == 1 {
                    tracing::warn!(%error, "I²C sensor failed; re-initialising on the next poll");
                } else {
                    tracing::debug!(%error, failures = self.consecutive_failures, "I²C sensor still failing");
                }
                Err(error)
            }
        }
    }

    /// (Re-)initialise if needed, then measure.
    fn try_measure(&mut self) -> Result<Measurement, bme280::Error> {
        if self.needs_init {
            self.device.init(&mut self.delay)?;
            self.needs_init = false;
        }
        self.device.measure(&mut self.delay)
    }

    /// The sensor id of the readings.
    pub fn sensor(&self) -> &str {
        &self.sensor
    }

    /// The bus device.
    pub fn bus(&self) -> &Path {
        &self.bus
    }

    /// The chip's address.
    pub fn address(&self) -> u8 {
        self.address
    }

    /// The driver's model name, as in the configuration.
    pub fn driver_model(&self) -> &'static str {
        self.device.model()
    }

    /// The configured time between measurements.
    pub fn poll_interval_ms(&self) -> u64 {
        self.poll_interval_ms
    }

    /// How many polls in a row have failed (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether the next poll starts by initialising the chip.
    pub fn needs_init(&self) -> bool {
        self.needs_init
    }

    /// The suggested wait after a failed poll: 0 while healthy, otherwise
    /// `poll_interval_ms × 2^(failures − 1)`, capped at [`MAX_BACKOFF_MS`]
    /// (with the default 10 s interval: 10 s, 20 s, 40 s, 60 s, 60 s, …).
    ///
    /// The cap applies to long poll intervals too: with a 5-minute interval
    /// a failing sensor is retried every minute, so a replugged sensor is
    /// back within a minute.
    pub fn backoff_ms(&self) -> u64 {
        match self.consecutive_failures {
            0 => 0,
            n => {
                let factor = 2u64.saturating_pow(n - 1);
                self.poll_interval_ms
                    .saturating_mul(factor)
                    .min(MAX_BACKOFF_MS)
            }
        }
    }

    /// How long to wait before the next poll: the poll interval while
    /// healthy, [`I2cPoller::backoff_ms`] while failing.
    pub fn next_poll_in_ms(&self) -> u64 {
        match self.consecutive_failures {
            0 => self.poll_interval_ms,
            _ => self.backoff_ms(),
        }
    }

    /// Give back the bus and the delay.
    pub fn into_parts(self) -> (I, D) {
        (self.device.release(), self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::bme280::{Calibration, MEASURE_POLL_ATTEMPTS};
    use super::*;
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    const ADDR: u8 = 0x76;
    const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

    // The Bosch BMP280 datasheet's worked example for T and P (see
    // bme280::tests), plus typical humidity parameters.
    fn calibration_blocks() -> (Vec<u8>, Vec<u8>) {
        let words: [i32; 12] = [
            27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
        ];
        let mut tp: Vec<u8> = words
            .iter()
            .flat_map(|&w| (w as u16).to_le_bytes())
            .collect();
        tp.extend([0x00, 75]); // reserved, dig_H1
        // dig_H2 = 362, dig_H3 = 0, dig_H4 = 333, dig_H5 = 50, dig_H6 = 30
        let h = vec![0x6A, 0x01, 0x00, 0x14, 0x2D, 0x03, 0x1E];
        (tp, h)
    }

    fn init_ok() -> Vec<Transaction> {
        let (tp, h) = calibration_blocks();
        vec![
            Transaction::write_read(ADDR, vec![0xD0], vec![0x60]),
            Transaction::write(ADDR, vec![0xE0, 0xB6]),
            Transaction::write_read(ADDR, vec![0xF3], vec![0x00]),
            Transaction::write_read(ADDR, vec![0x88], tp),
            Transaction::write_read(ADDR, vec![0xE1], h),
            Transaction::write(ADDR, vec![0xF2, 0x01]),
            Transaction::write(ADDR, vec![0xF5, 0x00]),
            Transaction::write(ADDR, vec![0xF4, 0x24]),
        ]
    }

    /// adc_T = 519888, adc_P = 415148, adc_H = `adc_h`.
    fn measure_with_humidity(adc_h: u16) -> Vec<Transaction> {
        let [hm, hl] = adc_h.to_be_bytes();
        vec![
            Transaction::write(ADDR, vec![0xF4, 0x25]),
            Transaction::write_read(ADDR, vec![0xF3], vec![0x00]),
            Transaction::write_read(
                ADDR,
                vec![0xF7],
                vec![0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, hm, hl],
            ),
        ]
    }

    fn measure_ok() -> Vec<Transaction> {
        measure_with_humidity(28656)
    }

    fn config() -> I2cSensorConfig {
        I2cSensorConfig::new(
            "greenhouse/bme280-1",
            ADDR,
            Driver::Bme280(Bme280Config::default()),
        )
    }

    fn poller(config: &I2cSensorConfig, mock: &Mock) -> I2cPoller<Mock, NoopDelay> {
        I2cPoller::new(config, mock.clone(), NoopDelay).unwrap()
    }

    fn expected_reading(ts: i64) -> Reading {
        let (tp, h) = calibration_blocks();
        let c =
            Calibration::from_registers(&tp.try_into().unwrap(), &h.try_into().unwrap()).unwrap();
        assert_eq!(c.dig_h5, 50);
        Reading::new("greenhouse/bme280-1", ts)
            .with_field("temperature", 25.08)
            .with_field("pressure", 25767233.0 / 25600.0)
            .with_field("humidity", 41342.0 / 1024.0)
    }

    // ---- configuration --------------------------------------------------

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c: I2cSensorConfig =
            toml::from_str("sensor = \"greenhouse/bme280-1\"\naddress = 0x76\ndriver = \"bme280\"")
                .unwrap();
        assert_eq!(c, config());
        assert_eq!(c.bus, Path::new("/dev/i2c-1"));
        assert_eq!(c.poll_interval_ms, 10_000);
        assert_eq!(c.fields, FieldNames::default());
    }

    #[test]
    fn full_config() {
        let c: I2cSensorConfig = toml::from_str(
            r#"
            sensor = "attic/bme280"
            bus = "/dev/i2c-3"
            address = 0x77
            poll_interval_ms = 500
            driver = { model = "bme280", temperature_oversampling = 2, pressure_oversampling = 16, filter = 4 }
            fields = { temperature = "temp_c", humidity = "rh" }
            "#,
        )
        .unwrap();
        assert_eq!(c.bus, Path::new("/dev/i2c-3"));
        assert_eq!(c.address, 0x77);
        assert_eq!(c.poll_interval_ms, 500);
        let Driver::Bme280(settings) = c.driver;
        assert_eq!(settings.temperature_oversampling, bme280::Oversampling::X2);
        assert_eq!(settings.pressure_oversampling, bme280::Oversampling::X16);
        assert_eq!(settings.humidity_oversampling, bme280::Oversampling::X1);
        assert_eq!(settings.filter, bme280::Filter::C4);
        assert_eq!(c.fields.temperature, "temp_c");
        assert_eq!(c.fields.pressure, "pressure");
        assert_eq!(c.fields.humidity, "rh");
    }

    #[test]
    fn driver_table_without_settings() {
        let c: I2cSensorConfig =
            toml::from_str("sensor = \"s\"\naddress = 0x76\n[driver]\nmodel = \"bme280\"").unwrap();
        assert_eq!(c.driver, Driver::Bme280(Bme280Config::default()));
    }

    #[test]
    fn config_errors() {
        let base = "sensor = \"s\"\naddress = 0x76\ndriver = \"bme280\"\n";
        let cases = [
            (format!("{base}colour = 1"), "unknown field `colour`"),
            (
                "sensor = \"s\"\ndriver = \"bme280\"".to_string(),
                "missing field `address`",
            ),
            (
                "sensor = \"s\"\naddress = 0x76".to_string(),
                "missing field `driver`",
            ),
            (
                "address = 0x76\ndriver = \"bme280\"".to_string(),
                "missing field `sensor`",
            ),
            (base.replace("\"s\"", "\" \""), "`sensor` must not be empty"),
            (
                base.replace("0x76", "0x40"),
                "`address` 0x40 is not an address a bme280 can have (use 0x76 or 0x77",
            ),
            (base.replace("0x76", "0x1FF"), "expected u8"),
            (
                format!("{base}poll_interval_ms = 99"),
                "`poll_interval_ms` is 99, the minimum is 100",
            ),
            (format!("{base}bus = \"\""), "`bus` must not be empty"),
            (
                base.replace("\"bme280\"", "\"bme680\""),
                "unknown variant `bme680`, expected `bme280`",
            ),
            (
                base.replace("\"bme280\"", "{ model = \"bmp280\" }"),
                "unknown variant `bmp280`",
            ),
            (
                base.replace("\"bme280\"", "{ model = \"bme280\", oversampling = 2 }"),
                "unknown field `oversampling`",
            ),
            (
                base.replace("\"bme280\"", "{ model = \"bme280\", filter = 5 }"),
                "filter must be",
            ),
            (
                base.replace("\"bme280\"", "{ filter = 4 }"),
                "missing field `model`",
            ),
            (
                base.replace("\"bme280\"", "7"),
                "a driver name (\"bme280\") or a table",
            ),
            (
                format!("{base}fields = {{ pressure = \"\" }}"),
                "`fields.pressure` must not be empty",
            ),
            (
                format!("{base}fields = {{ pressure = \"humidity\" }}"),
                "two fields are both named \"humidity\"",
            ),
            (
                format!("{base}fields = {{ dew_point = \"dp\" }}"),
                "unknown field `dew_point`",
            ),
        ];
        for (text, expected) in cases {
            let e = toml::from_str::<I2cSensorConfig>(&text)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(expected),
                "{text:?}: expected {expected:?} in {e}"
            );
        }
    }

    #[test]
    fn new_validates_a_hand_built_config() {
        let mut c = config();
        c.poll_interval_ms = 10;
        let mut mock = Mock::new(&[]);
        let e = I2cPoller::new(&c, mock.clone(), NoopDelay).unwrap_err();
        assert!(
            matches!(
                e,
                PollError::Config(I2cConfigError::PollInterval { ms: 10 })
            ),
            "{e}"
        );
        mock.done();
    }

    #[test]
    fn open_reports_a_missing_bus_device() {
        let mut c = config();
        c.bus = PathBuf::from("/nonexistent/i2c-42");
        let e = I2cPoller::open(&c).unwrap_err();
        assert!(matches!(e, PollError::Open { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot open I²C bus /nonexistent/i2c-42: "),
            "{text}"
        );
        assert!(text.contains("raspi-config"), "{text}");
    }

    // ---- polling --------------------------------------------------------

    #[test]
    fn first_poll_initialises_then_measures() {
        let mut t = init_ok();
        t.extend(measure_ok());
        t.extend(measure_ok());
        let mut mock = Mock::new(&t);
        let mut p = poller(&config(), &mock);
        assert!(p.needs_init());
        assert_eq!(p.poll(1_000).unwrap(), expected_reading(1_000));
        assert!(!p.needs_init());
        // The second poll does not initialise again.
        assert_eq!(p.poll(11_000).unwrap(), expected_reading(11_000));
        assert_eq!(p.consecutive_failures(), 0);
        assert_eq!(p.backoff_ms(), 0);
        assert_eq!(p.next_poll_in_ms(), 10_000);
        mock.done();
    }

    #[test]
    fn readings_use_the_configured_field_names_in_order() {
        let mut c = config();
        c.fields = FieldNames {
            temperature: "t".into(),
            pressure: "p".into(),
            humidity: "rh".into(),
        };
        let mut t = init_ok();
        t.extend(measure_ok());
        let mut mock = Mock::new(&t);
        let mut p = poller(&c, &mock);
        let r = p.poll(5).unwrap();
        let names: Vec<&str> = r.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t", "p", "rh"]);
        assert_eq!(r.field("t"), Some(25.08));
        assert_eq!(r.ts, 5);
        assert_eq!(r.sensor, "greenhouse/bme280-1");
        mock.done();
    }

    #[test]
    fn an_unplugged_and_replugged_sensor_comes_back() {
        let mut t = init_ok();
        t.extend(measure_ok());
        // Unplugged: the forced-mode trigger is not acknowledged.
        t.push(Transaction::write(ADDR, vec![0xF4, 0x25]).with_error(NACK));
        // Still unplugged: re-initialisation fails at the chip id, twice.
        for _ in 0..2 {
            t.push(Transaction::write_read(ADDR, vec![0xD0], vec![0x00]).with_error(NACK));
        }
        // Replugged: a full initialisation, then measurements again.
        t.extend(init_ok());
        t.extend(measure_ok());
        let mut mock = Mock::new(&t);
        let mut p = poller(&config(), &mock);

        assert!(p.poll(0).is_ok());
        let e = p.poll(10_000).unwrap_err();
        assert!(
            matches!(&e, PollError::Sensor { source: bme280::Error::Bus { register: 0xF4, kind, .. }, .. } if *kind == NACK),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "I²C sensor greenhouse/bme280-1 (/dev/i2c-1, 0x76): I²C error writing register 0xF4 (ctrl_meas): The device did not acknowledge its address"
        );
        assert_eq!(p.consecutive_failures(), 1);
        assert!(p.needs_init());
        assert_eq!(p.backoff_ms(), 10_000);

        assert!(p.poll(20_000).is_err());
        assert_eq!(p.consecutive_failures(), 2);
        assert_eq!(p.backoff_ms(), 20_000);
        assert!(p.poll(40_000).is_err());
        assert_eq!(p.consecutive_failures(), 3);
        assert_eq!(p.next_poll_in_ms(), 40_000);

        assert_eq!(p.poll(80_000).unwrap(), expected_reading(80_000));
        assert_eq!(p.consecutive_failures(), 0);
        assert_eq!(p.next_poll_in_ms(), 10_000);
        mock.done();
    }

    #[test]
    fn a_power_cycled_sensor_is_reconfigured() {
        // The chip stays on the bus but lost ctrl_hum: humidity comes back
        // skipped (0x8000); the next poll re-initialises it.
        let mut t = init_ok();
        t.extend(measure_with_humidity(0x8000));
        t.extend(init_ok());
        t.extend(measure_ok());
        let mut mock = Mock::new(&t);
        let mut p = poller(&config(), &mock);
        let e = p.poll(0).unwrap_err();
        assert!(
            matches!(
                e,
                PollError::Sensor {
                    source: bme280::Error::Skipped {
                        quantity: bme280::Quantity::Humidity
                    },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(p.poll(10_000).unwrap(), expected_reading(10_000));
        mock.done();
    }

    #[test]
    fn a_different_chip_at_the_address_is_reported_every_time() {
        let t = [
            Transaction::write_read(ADDR, vec![0xD0], vec![0x58]),
            Transaction::write_read(ADDR, vec![0xD0], vec![0x58]),
        ];
        let mut mock = Mock::new(&t);
        let mut p = poller(&config(), &mock);
        for _ in 0..2 {
            let e = p.poll(0).unwrap_err();
            assert!(e.to_string().contains("is a BMP280"), "{e}");
        }
        assert_eq!(p.consecutive_failures(), 2);
        mock.done();
    }

    #[test]
    fn a_measurement_timeout_triggers_reinitialisation() {
        let mut t = init_ok();
        t.push(Transaction::write(ADDR, vec![0xF4, 0x25]));
        t.extend(
            (0..MEASURE_POLL_ATTEMPTS)
                .map(|_| Transaction::write_read(ADDR, vec![0xF3], vec![0x08])),
        );
        t.extend(init_ok());
        t.extend(measure_ok());
        let mut mock = Mock::new(&t);
        let mut p = poller(&config(), &mock);
        let e = p.poll(0).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(p.poll(1).is_ok());
        mock.done();
    }

    #[test]
    fn backoff_doubles_and_caps_at_a_minute() {
        let mut c = config();
        c.poll_interval_ms = 100;
        let failures = 40;
        let t: Vec<Transaction> = (0..failures)
            .map(|_| {
                Transaction::write_read(ADDR, vec![0xD0], vec![0x00]).with_error(ErrorKind::Bus)
            })
            .collect();
        let mut mock = Mock::new(&t);
        let mut p = poller(&c, &mock);
        let mut seen = Vec::new();
        for _ in 0..failures {
            assert!(p.poll(0).is_err());
            seen.push(p.backoff_ms());
        }
        assert_eq!(
            &seen[..12],
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 60_000, 60_000
            ]
        );
        assert_eq!(seen[failures - 1], MAX_BACKOFF_MS);
        assert_eq!(p.next_poll_in_ms(), MAX_BACKOFF_MS);
        mock.done();

        // Long intervals: the cap still applies.
        let mut c = config();
        c.poll_interval_ms = 300_000;
        let t = [Transaction::write_read(ADDR, vec![0xD0], vec![0x00]).with_error(ErrorKind::Bus)];
        let mut mock = Mock::new(&t);
        let mut p = poller(&c, &mock);
        assert!(p.poll(0).is_err());
        assert_eq!(p.backoff_ms(), MAX_BACKOFF_MS);
        mock.done();
    }

    #[test]
    fn into_parts_returns_the_bus() {
        let mut mock = Mock::new(&[]);
        let p = poller(&config(), &mock);
        let (_bus, _delay) = p.into_parts();
        mock.done();
    }
}
