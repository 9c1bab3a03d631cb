//! Bosch BME280 temperature / pressure / humidity sensor over I²C.
//!
//! Register protocol and compensation follow the Bosch BME280 datasheet
//! (BST-BME280-DS002, rev. 1.6 and later): §5.4 registers, §4.2.2
//! trimming-parameter readout, §4.2.3 compensation formulas, §9.1
//! measurement time.
//!
//! * **Integer compensation.** The datasheet gives integer formulas (int32
//!   temperature and humidity, int64 pressure) and double-precision ones
//!   (§8.1). We use the integer ones: they are exact and deterministic on
//!   every target (no FPU rounding differences between an ARM board and the
//!   x86 CI machine), and they need no floating point until the final
//!   scaling. They are evaluated in wider integers (i64 / i128) so that garbage calibration
//!   data cannot overflow; for a genuine chip the results are bit-identical to
//!   the datasheet's C code. Resolution: 0.01 °C, 1/256 Pa, 1/1024 %RH.
//! * **Forced mode.** Each [`Bme280::measure`] triggers one conversion and
//!   waits the datasheet's *maximum* measurement time for the configured
//!   oversampling (§9.1), then polls `status.measuring` a bounded number of
//!   times. Between measurements the chip sleeps (≈0.1 µA).
//! * **BMP280 is refused** (chip id 0x58, and the 0x56/0x57 samples): it has
//!   the same temperature/pressure path but no humidity, and a reading that
//!   silently lacks a field would break processors that expect it. The error
//!   says so plainly; a `bmp280` driver can reuse [`Calibration`] later.
//! * **Power loss shows up as a skipped measurement.** After a reset or a
//!   power cycle `ctrl_hum` is 0 (humidity skipped) and the data registers
//!   hold their reset values (0x80000 / 0x8000); [`Bme280::measure`] reports
//!   [`Error::Skipped`] and the caller runs [`Bme280::init`] again.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, I2c};
use serde::Deserialize;
use std::fmt;

/// The address with SDO tied to GND (most breakout boards' default).
pub const ADDRESS_PRIMARY: u8 = 0x76;
/// The address with SDO tied to VDDIO.
pub const ADDRESS_SECONDARY: u8 = 0x77;

/// The BME280's chip id (register 0xD0).
pub const CHIP_ID: u8 = 0x60;
/// The BMP280's chip id (mass production); samples report 0x56 or 0x57.
pub const BMP280_CHIP_ID: u8 = 0x58;

/// Register addresses (datasheet §5.3, table 18).
mod reg {
    /// Calibration block 1: calib00..calib25 (dig_T1..dig_P9, reserved, dig_H1).
    pub const CALIB_TP: u8 = 0x88;
    /// Chip id.
    pub const ID: u8 = 0xD0;
    /// Soft reset.
    pub const RESET: u8 = 0xE0;
    /// Calibration block 2: calib26..calib32 (dig_H2..dig_H6).
    pub const CALIB_H: u8 = 0xE1;
    /// Humidity oversampling.
    pub const CTRL_HUM: u8 = 0xF2;
    /// Status: bit 3 measuring, bit 0 im_update.
    pub const STATUS: u8 = 0xF3;
    /// Temperature/pressure oversampling and mode.
    pub const CTRL_MEAS: u8 = 0xF4;
    /// Standby time, IIR filter, 3-wire SPI.
    pub const CONFIG: u8 = 0xF5;
    /// press_msb..hum_lsb (8 bytes).
    pub const DATA: u8 = 0xF7;

    /// The datasheet's name for a register, for error messages.
    pub fn name(register: u8) -> &'static str {
        match register {
            CALIB_TP => "calib00..25",
            ID => "id",
            RESET => "reset",
            CALIB_H => "calib26..32",
            CTRL_HUM => "ctrl_hum",
            STATUS => "status",
            CTRL_MEAS => "ctrl_meas",
            CONFIG => "config",
            DATA => "data",
            _ => "unknown",
        }
    }
}

/// The value written to `reset` to trigger a power-on-reset sequence.
const SOFT_RESET: u8 = 0xB6;
/// `status` bit 0: NVM data are being copied to the image registers.
const STATUS_IM_UPDATE: u8 = 0x01;
/// `status` bit 3: a conversion is running.
const STATUS_MEASURING: u8 = 0x08;
/// `ctrl_meas` mode bits for forced mode.
const MODE_FORCED: u8 = 0b01;
/// Raw 20-bit temperature/pressure value of a skipped (or never run) conversion.
const SKIPPED_20BIT: u32 = 0x8_0000;
/// Raw 16-bit humidity value of a skipped (or never run) conversion.
const SKIPPED_16BIT: u16 = 0x8000;

/// Start-up time after a soft reset before the chip answers (datasheet §1, t_startup).
const RESET_DELAY_US: u32 = 2_000;
/// How many times `status.im_update` is read after a reset before giving up.
pub const RESET_POLL_ATTEMPTS: u32 = 5;
/// Pause between two reads of `status.im_update`.
const RESET_POLL_INTERVAL_US: u32 = 2_000;
/// How many times `status.measuring` is read after the measurement time has
/// passed before giving up ([`Error::Timeout`]).
pub const MEASURE_POLL_ATTEMPTS: u32 = 10;
/// Pause between two reads of `status.measuring`.
const MEASURE_POLL_INTERVAL_US: u32 = 1_000;

/// Oversampling of one quantity. In the configuration an integer: `1`, `2`,
/// `4`, `8` or `16` (default `1`).
///
/// Skipping a quantity (register value 0) is deliberately not offered: a
/// reading always has all three fields, and a skipped conversion is how the
/// driver recognises a chip that lost its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum Oversampling {
    /// One sample (the fastest, lowest-power setting).
    #[default]
    X1,
    /// Two samples.
    X2,
    /// Four samples.
    X4,
    /// Eight samples.
    X8,
    /// Sixteen samples.
    X16,
}

impl Oversampling {
    /// The number of samples (1, 2, 4, 8, 16).
    pub fn factor(self) -> u32 {
        match self {
            Oversampling::X1 => 1,
            Oversampling::X2 => 2,
            Oversampling::X4 => 4,
            Oversampling::X8 => 8,
            Oversampling::X16 => 16,
        }
    }

    /// The 3-bit `osrs_*` register field.
    fn bits(self) -> u8 {
        match self {
            Oversampling::X1 => 0b001,
            Oversampling::X2 => 0b010,
            Oversampling::X4 => 0b011,
            Oversampling::X8 => 0b100,
            Oversampling::X16 => 0b101,
        }
    }
}

impl TryFrom<u8> for Oversampling {
    type Error = String;

    fn try_from(factor: u8) -> Result<Self, Self::Error> {
        match factor {
            1 => Ok(Oversampling::X1),
            2 => Ok(Oversampling::X2),
            4 => Ok(Oversampling::X4),
            8 => Ok(Oversampling::X8),
            16 => Ok(Oversampling::X16),
            other => Err(format!(
                "oversampling must be 1, 2, 4, 8 or 16, not {other}"
            )),
        }
    }
}

/// The IIR filter coefficient (`config.filter`). In the configuration an
/// integer: `0` (off, the default), `2`, `4`, `8` or `16`.
///
/// The filter smooths pressure and temperature over successive
/// measurements; in forced mode "successive" means successive polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum Filter {
    /// No filtering.
    #[default]
    Off,
    /// Coefficient 2.
    C2,
    /// Coefficient 4.
    C4,
    /// Coefficient 8.
    C8,
    /// Coefficient 16.
    C16,
}

impl Filter {
    /// The 3-bit `filter` register field.
    fn bits(self) -> u8 {
        match self {
            Filter::Off => 0b000,
            Filter::C2 => 0b001,
            Filter::C4 => 0b010,
            Filter::C8 => 0b011,
            Filter::C16 => 0b100,
        }
    }
}

impl TryFrom<u8> for Filter {
    type Error = String;

    fn try_from(coefficient: u8) -> Result<Self, Self::Error> {
        match coefficient {
            0 => Ok(Filter::Off),
            2 => Ok(Filter::C2),
            4 => Ok(Filter::C4),
            8 => Ok(Filter::C8),
            16 => Ok(Filter::C16),
            other => Err(format!(
                "filter must be 0 (off), 2, 4, 8 or 16, not {other}"
            )),
        }
    }
}

/// Measurement settings. Every key is optional; the defaults (×1 each,
/// filter off) are Bosch's "weather monitoring" profile.
///
/// ```toml
/// driver = { model = "bme280", temperature_oversampling = 2, filter = 4 }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bme280Config {
    /// `osrs_t`, default ×1.
    pub temperature_oversampling: Oversampling,
    /// `osrs_p`, default ×1.
    pub pressure_oversampling: Oversampling,
    /// `osrs_h`, default ×1.
    pub humidity_oversampling: Oversampling,
    /// IIR filter coefficient, default off.
    pub filter: Filter,
}

impl Bme280Config {
    /// The datasheet's maximum measurement time (§9.1) in microseconds:
    /// 1.25 + 2.3·osrs_t + (2.3·osrs_p + 0.575) + (2.3·osrs_h + 0.575) ms.
    /// 9 300 µs with the defaults, 112 800 µs with ×16 everywhere.
    pub fn max_measurement_time_us(&self) -> u32 {
        let t = self.temperature_oversampling.factor();
        let p = self.pressure_oversampling.factor();
        let h = self.humidity_oversampling.factor();
        1_250 + 2_300 * t + (2_300 * p + 575) + (2_300 * h + 575)
    }

    /// `ctrl_hum`: humidity oversampling.
    fn ctrl_hum(&self) -> u8 {
        self.humidity_oversampling.bits()
    }

    /// `ctrl_meas`: temperature and pressure oversampling, plus `mode`.
    fn ctrl_meas(&self, mode: u8) -> u8 {
        (self.temperature_oversampling.bits() << 5)
            | (self.pressure_oversampling.bits() << 2)
            | mode
    }

    /// `config`: standby time 0 (unused in forced mode), filter, no 3-wire SPI.
    fn config(&self) -> u8 {
        self.filter.bits() << 2
    }
}

/// One compensated measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Temperature in degrees Celsius (resolution 0.01 °C).
    pub temperature: f64,
    /// Pressure in hectopascals (resolution 1/25 600 hPa).
    pub pressure: f64,
    /// Relative humidity in percent, 0 to 100 (resolution 1/1024 %RH).
    pub humidity: f64,
}

/// The raw ADC values of one conversion (`data` registers 0xF7..=0xFE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSample {
    /// 20-bit `adc_T`.
    pub temperature: u32,
    /// 20-bit `adc_P`.
    pub pressure: u32,
    /// 16-bit `adc_H`.
    pub humidity: u16,
}

impl RawSample {
    /// Decode the 8-byte burst read `press_msb, press_lsb, press_xlsb,
    /// temp_msb, temp_lsb, temp_xlsb, hum_msb, hum_lsb`.
    pub fn from_registers(data: &[u8; 8]) -> Self {
        let adc20 = |msb: u8, lsb: u8, xlsb: u8| {
            (u32::from(msb) << 12) | (u32::from(lsb) << 4) | (u32::from(xlsb) >> 4)
        };
        RawSample {
            pressure: adc20(data[0], data[1], data[2]),
            temperature: adc20(data[3], data[4], data[5]),
            humidity: u16::from_be_bytes([data[6], data[7]]),
        }
    }

    /// The first quantity whose conversion was skipped, if any.
    fn skipped(&self) -> Option<Quantity> {
        if self.temperature == SKIPPED_20BIT {
            Some(Quantity::Temperature)
        } else if self.pressure == SKIPPED_20BIT {
            Some(Quantity::Pressure)
        } else if self.humidity == SKIPPED_16BIT {
            Some(Quantity::Humidity)
        } else {
            None
        }
    }
}

/// The factory trimming parameters (datasheet §4.2.2, table 16), named as
/// in the datasheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the datasheet's names, nothing to add
pub struct Calibration {
    pub dig_t1: u16,
    pub dig_t2: i16,
    pub dig_t3: i16,
    pub dig_p1: u16,
    pub dig_p2: i16,
    pub dig_p3: i16,
    pub dig_p4: i16,
    pub dig_p5: i16,
    pub dig_p6: i16,
    pub dig_p7: i16,
    pub dig_p8: i16,
    pub dig_p9: i16,
    pub dig_h1: u8,
    pub dig_h2: i16,
    pub dig_h3: u8,
    pub dig_h4: i16,
    pub dig_h5: i16,
    pub dig_h6: i8,
}

impl Calibration {
    /// Decode the two calibration blocks: `tp` = 0x88..=0xA1 (26 bytes,
    /// little-endian words; 0xA0 is reserved, 0xA1 is dig_H1) and `h` =
    /// 0xE1..=0xE7 (dig_H2, dig_H3, the nibble-packed 12-bit dig_H4/dig_H5,
    /// dig_H6). Refuses data no genuine chip has (see [`Error::InvalidCalibration`]).
    pub fn from_registers(tp: &[u8; 26], h: &[u8; 7]) -> Result<Self, Error> {
        if tp.iter().all(|&b| b == 0x00) || tp.iter().all(|&b| b == 0xFF) {
            return Err(Error::InvalidCalibration {
                reason: "the calibration block reads as all 0x00 or all 0xFF",
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes([tp[i], tp[i + 1]]);
        let i16_at = |i: usize| i16::from_le_bytes([tp[i], tp[i + 1]]);
        // 0xE4 holds dig_H4[11:4], 0xE5 holds dig_H4[3:0] in its low nibble
        // and dig_H5[3:0] in its high nibble, 0xE6 holds dig_H5[11:4]. The
        // upper bytes are signed, so the 12-bit values are sign-extended.
        let dig_h4 = (i16::from(h[3] as i8) << 4) | i16::from(h[4] & 0x0F);
        let dig_h5 = (i16::from(h[5] as i8) << 4) | i16::from(h[4] >> 4);
        let calibration = Calibration {
            dig_t1: u16_at(0),
            dig_t2: i16_at(2),
            dig_t3: i16_at(4),
            dig_p1: u16_at(6),
            dig_p2: i16_at(8),
            dig_p3: i16_at(10),
            dig_p4: i16_at(12),
            dig_p5: i16_at(14),
            dig_p6: i16_at(16),
            dig_p7: i16_at(18),
            dig_p8: i16_at(20),
            dig_p9: i16_at(22),
            // tp[24] is 0xA0, reserved.
            dig_h1: tp[25],
            dig_h2: i16::from_le_bytes([h[0], h[1]]),
            dig_h3: h[2],
            dig_h4,
            dig_h5,
            dig_h6: h[6] as i8,
        };
        if calibration.dig_t1 == 0 {
            return Err(Error::InvalidCalibration {
                reason: "dig_T1 is 0",
            });
        }
        if calibration.dig_p1 == 0 {
            return Err(Error::InvalidCalibration {
                reason: "dig_P1 is 0 (the pressure formula would divide by zero)",
            });
        }
        Ok(calibration)
    }

    /// Compensate one raw sample (datasheet §4.2.3, integer formulas).
    pub fn compensate(&self, raw: &RawSample) -> Result<Measurement, Error> {
        if let Some(quantity) = raw.skipped() {
            return Err(Error::Skipped { quantity });
        }
        let (t_fine, centi_celsius) = self.compensate_temperature(raw.temperature);
        let pressure_q24_8 = self.compensate_pressure(raw.pressure, t_fine)?;
        let humidity_q22_10 = self.compensate_humidity(raw.humidity, t_fine);
        Ok(Measurement {
            temperature: centi_celsius as f64 / 100.0,
            pressure: pressure_q24_8 as f64 / 25_600.0,
            humidity: humidity_q22_10 as f64 / 1024.0,
        })
    }

    /// `BME280_compensate_T_int32`: returns `(t_fine, temperature in 0.01 °C)`.
    pub fn compensate_temperature(&self, adc_t: u32) -> (i64, i64) {
        let adc = i64::from(adc_t);
        let t1 = i64::from(self.dig_t1);
        let t2 = i64::from(self.dig_t2);
        let t3 = i64::from(self.dig_t3);
        let var1 = (((adc >> 3) - (t1 << 1)) * t2) >> 11;
        let var2 = (((((adc >> 4) - t1) * ((adc >> 4) - t1)) >> 12) * t3) >> 14;
        let t_fine = var1 + var2;
        (t_fine, (t_fine * 5 + 128) >> 8)
    }

    /// `BME280_compensate_P_int64`: pressure in Pa as Q24.8 (value / 256 = Pa).
    pub fn compensate_pressure(&self, adc_p: u32, t_fine: i64) -> Result<i128, Error> {
        let p1 = i128::from(self.dig_p1);
        let p2 = i128::from(self.dig_p2);
        let p3 = i128::from(self.dig_p3);
        let p4 = i128::from(self.dig_p4);
        let p5 = i128::from(self.dig_p5);
        let p6 = i128::from(self.dig_p6);
        let p7 = i128::from(self.dig_p7);
        let p8 = i128::from(self.dig_p8);
        let p9 = i128::from(self.dig_p9);

        let mut var1 = i128::from(t_fine) - 128_000;
        let mut var2 = var1 * var1 * p6;
        var2 += (var1 * p5) << 17;
        var2 += p4 << 35;
        var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12);
        var1 = (((1_i128 << 47) + var1) * p1) >> 33;
        if var1 == 0 {
            return Err(Error::InvalidCalibration {
                reason: "the pressure compensation divisor is 0",
            });
        }
        let mut p = 1_048_576 - i128::from(adc_p);
        // Same truncating division as C.
        p = (((p << 31) - var2) * 3125) / var1;
        // A genuine chip lands near 2^25 here; refuse what would overflow
        // the squares below (only possible with garbage calibration).
        if p.abs() >= 1 << 48 {
            return Err(Error::InvalidCalibration {
                reason: "the pressure compensation is out of range",
            });
        }
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25;
        var2 = (p8 * p) >> 19;
        Ok(((p + var1 + var2) >> 8) + (p7 << 4))
    }

    /// `bme280_compensate_H_int32`: relative humidity in %RH as Q22.10
    /// (value / 1024 = %RH), clamped to 0..=100 %.
    pub fn compensate_humidity(&self, adc_h: u16, t_fine: i64) -> i128 {
        let adc = i128::from(adc_h);
        let h1 = i128::from(self.dig_h1);
        let h2 = i128::from(self.dig_h2);
        let h3 = i128::from(self.dig_h3);
        let h4 = i128::from(self.dig_h4);
        let h5 = i128::from(self.dig_h5);
        let h6 = i128::from(self.dig_h6);

        let mut v = i128::from(t_fine) - 76_800;
        v = ((((adc << 14) - (h4 << 20) - (h5 * v)) + 16_384) >> 15)
            * (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32_768)) >> 10) + 2_097_152) * h2
                + 8_192)
                >> 14);
        v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4;
        v = v.clamp(0, 419_430_400);
        v >> 12
    }
}

/// Which quantity a skipped conversion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// `adc_T`.
    Temperature,
    /// `adc_P`.
    Pressure,
    /// `adc_H`.
    Humidity,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Temperature => "temperature",
            Quantity::Pressure => "pressure",
            Quantity::Humidity => "humidity",
        })
    }
}

/// Whether a bus transfer read or wrote its register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A register read (write of the address, then a read).
    Read,
    /// A register write.
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "reading",
            Access::Write => "writing",
        })
    }
}

/// What the driver was waiting for when it gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The NVM copy after a soft reset (`status.im_update`).
    NvmCopy,
    /// The end of a forced-mode conversion (`status.measuring`).
    Measurement,
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wait::NvmCopy => "the calibration copy after reset (status.im_update)",
            Wait::Measurement => "the measurement to finish (status.measuring)",
        })
    }
}

/// What can go wrong talking to a BME280.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bus transfer failed: no device at the address (NACK), wiring,
    /// a busy or broken bus.
    #[error(
        "I²C error {access} register 0x{register:02X} ({}): {}",
        reg::name(*register),
        describe_bus_error(*kind, detail)
    )]
    Bus {
        /// The register being accessed (the first one of a burst).
        register: u8,
        /// Read or write.
        access: Access,
        /// The bus error, as classified by the HAL.
        kind: ErrorKind,
        /// The HAL's own error (`Debug`), which can say more than `kind`
        /// (on Linux the errno, e.g. `Errno(121)` for EREMOTEIO).
        detail: String,
    },
    /// Something other than a BME280 answered at the address.
    #[error("{}", describe_chip_id(*found))]
    WrongChipId {
        /// The value of register 0xD0.
        found: u8,
    },
    /// The chip did not finish in time.
    #[error("timed out waiting for {waiting_for} ({attempts} status reads)")]
    Timeout {
        /// What the driver was waiting for.
        waiting_for: Wait,
        /// How many times `status` was read.
        attempts: u32,
    },
    /// The calibration data cannot come from a working chip (all bits equal,
    /// a zero divisor, an out-of-range intermediate).
    #[error("invalid calibration data: {reason}")]
    InvalidCalibration {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The chip returned the reset value of a data register: the conversion
    /// was skipped, which means the chip lost its configuration (power loss,
    /// brown-out, reset). Initialise it again.
    #[error(
        "the {quantity} conversion was skipped (raw value is the reset value): the chip lost its configuration"
    )]
    Skipped {
        /// The first skipped quantity.
        quantity: Quantity,
    },
    /// [`Bme280::measure`] before a successful [`Bme280::init`].
    #[error("the BME280 has not been initialised")]
    NotInitialised,
}

/// `kind`, plus the HAL's detail when the kind alone says nothing useful.
fn describe_bus_error(kind: ErrorKind, detail: &str) -> String {
    match kind {
        ErrorKind::Other if !detail.is_empty() && detail != "Other" => {
            format!("{kind} ({detail})")
        }
        _ => kind.to_string(),
    }
}

/// The message for an unexpected chip id, naming the chip when we know it.
fn describe_chip_id(found: u8) -> String {
    match found {
        BMP280_CHIP_ID | 0x56 | 0x57 => format!(
            "chip id 0x{found:02X} is a BMP280 (temperature and pressure, no humidity); \
             the bme280 driver needs a BME280 (chip id 0x{CHIP_ID:02X})"
        ),
        0x61 => {
            format!("chip id 0x{found:02X} is a BME680, not a BME280 (chip id 0x{CHIP_ID:02X})")
        }
        0x00 | 0xFF => format!(
            "chip id 0x{found:02X}: no BME280 answered properly at this address \
             (expected chip id 0x{CHIP_ID:02X}; check wiring and address)"
        ),
        _ => format!(
            "chip id 0x{found:02X} is not a BME280 (expected 0x{CHIP_ID:02X}); \
             is another device at this address?"
        ),
    }
}

/// A BME280 on an I²C bus.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use wasmgate::sources::i2c::bme280::{Bme280, Bme280Config, ADDRESS_PRIMARY};
/// let bus = linux_embedded_hal::I2cdev::new("/dev/i2c-1")?;
/// let mut delay = linux_embedded_hal::Delay;
/// let mut sensor = Bme280::new(bus, ADDRESS_PRIMARY, Bme280Config::default());
/// sensor.init(&mut delay)?;
/// let m = sensor.measure(&mut delay)?;
/// println!("{:.2} °C, {:.2} hPa, {:.1} %RH", m.temperature, m.pressure, m.humidity);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Bme280<I> {
    i2c: I,
    address: u8,
    config: Bme280Config,
    calibration: Option<Calibration>,
}

impl<I: I2c> Bme280<I> {
    /// A driver for the chip at `address` (normally [`ADDRESS_PRIMARY`] or
    /// [`ADDRESS_SECONDARY`]). Does not touch the bus; call [`Bme280::init`].
    pub fn new(i2c: I, address: u8, config: Bme280Config) -> Self {
        Bme280 {
            i2c,
            address,
            config,
            calibration: None,
        }
    }

    /// The 7-bit address.
    pub fn address(&self) -> u8 {
        self.address
    }

    /// The measurement settings.
    pub fn config(&self) -> &Bme280Config {
        &self.config
    }

    /// The calibration read by the last successful [`Bme280::init`].
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Give the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    /// Identify, reset and configure the chip, and read its calibration:
    ///
    /// 1. `id` (0xD0) must be 0x60;
    /// 2. soft reset (0xE0 ← 0xB6), wait 2 ms, then poll `status.im_update`
    ///    until the NVM copy is done (at most [`RESET_POLL_ATTEMPTS`] reads);
    /// 3. read 0x88..=0xA1 and 0xE1..=0xE7;
    /// 4. write `ctrl_hum`, `config`, then `ctrl_meas` in sleep mode
    ///    (`ctrl_hum` only takes effect after a `ctrl_meas` write).
    ///
    /// Safe to call again at any time (after an error, a replug…).
    pub fn init(&mut self, delay: &mut impl DelayNs) -> Result<(), Error> {
        self.calibration = None;

        let mut id = [0u8; 1];
        self.read(reg::ID, &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChipId { found: id[0] });
        }

        self.write(reg::RESET, SOFT_RESET)?;
        delay.delay_us(RESET_DELAY_US);
        self.wait_status_clear(
            STATUS_IM_UPDATE,
            Wait::NvmCopy,
            RESET_POLL_ATTEMPTS,
            RESET_POLL_INTERVAL_US,
            delay,
        )?;

        let mut tp = [0u8; 26];
        self.read(reg::CALIB_TP, &mut tp)?;
        let mut h = [0u8; 7];
        self.read(reg::CALIB_H, &mut h)?;
        let calibration = Calibration::from_registers(&tp, &h)?;

        self.write(reg::CTRL_HUM, self.config.ctrl_hum())?;
        self.write(reg::CONFIG, self.config.config())?;
        self.write(reg::CTRL_MEAS, self.config.ctrl_meas(0b00))?;

        self.calibration = Some(calibration);
        Ok(())
    }

    /// Take one measurement in forced mode: start the conversion, wait
    /// [`Bme280Config::max_measurement_time_us`], poll `status.measuring`
    /// (at most [`MEASURE_POLL_ATTEMPTS`] reads, 1 ms apart), burst-read
    /// 0xF7..=0xFE and compensate.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Measurement, Error> {
        let calibration = self.calibration.ok_or(Error::NotInitialised)?;

        self.write(reg::CTRL_MEAS, self.config.ctrl_meas(MODE_FORCED))?;
        delay.delay_us(self.config.max_measurement_time_us());
        self.wait_status_clear(
            STATUS_MEASURING,
            Wait::Measurement,
            MEASURE_POLL_ATTEMPTS,
            MEASURE_POLL_INTERVAL_US,
            delay,
        )?;

        let mut data = [0u8; 8];
        self.read(reg::DATA, &mut data)?;
        calibration.compensate(&RawSample::from_registers(&data))
    }

    /// Read `status` until the `mask` bits are clear, `attempts` times at most.
    fn wait_status_clear(
        &mut self,
        mask: u8,
        waiting_for: Wait,
        attempts: u32,
        interval_us: u32,
        delay: &mut impl DelayNs,
    ) -> Result<(), Error> {
        for attempt in 1..=attempts {
            let mut status = [0u8; 1];
            self.read(reg::STATUS, &mut status)?;
            if status[0] & mask == 0 {
                return Ok(());
            }
            if attempt < attempts {
                delay.delay_us(interval_us);
            }
        }
        Err(Error::Timeout {
            waiting_for,
            attempts,
        })
    }

    /// Read `buf.len()` bytes starting at `register`.
    fn read(&mut self, register: u8, buf: &mut [u8]) -> Result<(), Error> {
        self.i2c
            .write_read(self.address, &[register], buf)
            .map_err(|e| bus_error(register, Access::Read, &e))
    }

    /// Write one register.
    fn write(&mut self, register: u8, value: u8) -> Result<(), Error> {
        self.i2c
            .write(self.address, &[register, value])
            .map_err(|e| bus_error(register, Access::Write, &e))
    }
}

/// Classify a HAL error, keeping its `Debug` text.
fn bus_error<E: embedded_hal::i2c::Error>(register: u8, access: Access, error: &E) -> Error {
    Error::Bus {
        register,
        access,
        kind: error.kind(),
        detail: format!("{error:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::NoAcknowledgeSource;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    const ADDR: u8 = ADDRESS_PRIMARY;

    // ---- reference data -------------------------------------------------
    //
    // Temperature and pressure: the worked example of the Bosch BMP280
    // datasheet (BST-BMP280-DS001, §3.12 "Calculating pressure and
    // temperature", the compensation-example table). The BME280 uses the very
    // same temperature and pressure trimming parameters and formulas
    // (BME280 datasheet §4.2.3 is the BMP280's with `BME280_` prefixes), so
    // the example carries over unchanged:
    //
    //   dig_T1..T3 = 27504, 26435, -1000
    //   dig_P1..P9 = 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000
    //   adc_T = 519888, adc_P = 415148
    //   → t_fine = 128422, T = 25.08 °C, p ≈ 100653.27 Pa
    //
    // (The table's 100653.27 Pa is the double-precision result with an
    // untruncated t_fine; the int64 formula gives 25767233 / 256 =
    // 100653.254 Pa, the double formula with the integer t_fine 100653.258 Pa.)
    //
    // Humidity has no worked example in the datasheet. The humidity
    // parameters below are typical production values (dig_H1 = 75,
    // dig_H2 = 362, dig_H3 = 0, dig_H4 = 333, dig_H5 = 50, dig_H6 = 30); the
    // integer result is checked against the datasheet's double-precision
    // formula (§8.1), implemented independently in `reference` below.

    fn reference_calibration() -> Calibration {
        Calibration {
            dig_t1: 27504,
            dig_t2: 26435,
            dig_t3: -1000,
            dig_p1: 36477,
            dig_p2: -10685,
            dig_p3: 3024,
            dig_p4: 2855,
            dig_p5: 140,
            dig_p6: -7,
            dig_p7: 15500,
            dig_p8: -14600,
            dig_p9: 6000,
            dig_h1: 75,
            dig_h2: 362,
            dig_h3: 0,
            dig_h4: 333,
            dig_h5: 50,
            dig_h6: 30,
        }
    }

    /// Encode a calibration the way the chip stores it.
    fn calibration_registers(c: &Calibration) -> (Vec<u8>, Vec<u8>) {
        let mut tp = Vec::with_capacity(26);
        tp.extend_from_slice(&c.dig_t1.to_le_bytes());
        for w in [c.dig_t2, c.dig_t3] {
            tp.extend_from_slice(&w.to_le_bytes());
        }
        tp.extend_from_slice(&c.dig_p1.to_le_bytes());
        for w in [
            c.dig_p2, c.dig_p3, c.dig_p4, c.dig_p5, c.dig_p6, c.dig_p7, c.dig_p8, c.dig_p9,
        ] {
            tp.extend_from_slice(&w.to_le_bytes());
        }
        tp.push(0x00); // 0xA0, reserved
        tp.push(c.dig_h1);
        let h4 = c.dig_h4 as u16;
        let h5 = c.dig_h5 as u16;
        let mut h = Vec::with_capacity(7);
        h.extend_from_slice(&c.dig_h2.to_le_bytes());
        h.push(c.dig_h3);
        h.push((h4 >> 4) as u8);
        h.push(((h5 as u8 & 0x0F) << 4) | (h4 as u8 & 0x0F));
        h.push((h5 >> 4) as u8);
        h.push(c.dig_h6 as u8);
        (tp, h)
    }

    /// Encode raw ADC values as the 0xF7..=0xFE burst.
    fn data_registers(adc_t: u32, adc_p: u32, adc_h: u16) -> Vec<u8> {
        let b20 = |v: u32| [(v >> 12) as u8, (v >> 4) as u8, ((v & 0x0F) << 4) as u8];
        let mut d = Vec::with_capacity(8);
        d.extend_from_slice(&b20(adc_p));
        d.extend_from_slice(&b20(adc_t));
        d.extend_from_slice(&adc_h.to_be_bytes());
        d
    }

    /// The datasheet's double-precision formulas (BME280 §8.1), written out
    /// independently of the integer implementation under test.
    mod reference {
        use super::Calibration;

        /// Returns (t_fine as the datasheet's int32, °C).
        pub fn temperature(c: &Calibration, adc_t: u32) -> (i32, f64) {
            let adc = f64::from(adc_t);
            let t1 = f64::from(c.dig_t1);
            let var1 = (adc / 16384.0 - t1 / 1024.0) * f64::from(c.dig_t2);
            let var2 = (adc / 131072.0 - t1 / 8192.0)
                * (adc / 131072.0 - t1 / 8192.0)
                * f64::from(c.dig_t3);
            ((var1 + var2) as i32, (var1 + var2) / 5120.0)
        }

        /// Pa.
        pub fn pressure(c: &Calibration, adc_p: u32, t_fine: i32) -> f64 {
            let mut var1 = f64::from(t_fine) / 2.0 - 64000.0;
            let mut var2 = var1 * var1 * f64::from(c.dig_p6) / 32768.0;
            var2 += var1 * f64::from(c.dig_p5) * 2.0;
            var2 = var2 / 4.0 + f64::from(c.dig_p4) * 65536.0;
            var1 = (f64::from(c.dig_p3) * var1 * var1 / 524288.0 + f64::from(c.dig_p2) * var1)
                / 524288.0;
            var1 = (1.0 + var1 / 32768.0) * f64::from(c.dig_p1);
            assert!(var1 != 0.0);
            let mut p = 1048576.0 - f64::from(adc_p);
            p = (p - var2 / 4096.0) * 6250.0 / var1;
            var1 = f64::from(c.dig_p9) * p * p / 2147483648.0;
            var2 = p * f64::from(c.dig_p8) / 32768.0;
            p + (var1 + var2 + f64::from(c.dig_p7)) / 16.0
        }

        /// %RH.
        pub fn humidity(c: &Calibration, adc_h: u16, t_fine: i32) -> f64 {
            let mut h = f64::from(t_fine) - 76800.0;
            h = (f64::from(adc_h)
                - (f64::from(c.dig_h4) * 64.0 + f64::from(c.dig_h5) / 16384.0 * h))
                * (f64::from(c.dig_h2) / 65536.0
                    * (1.0
                        + f64::from(c.dig_h6) / 67108864.0
                            * h
                            * (1.0 + f64::from(c.dig_h3) / 67108864.0 * h)));
            h *= 1.0 - f64::from(c.dig_h1) * h / 524288.0;
            h.clamp(0.0, 100.0)
        }
    }

    // ---- transaction builders -------------------------------------------

    fn id(value: u8) -> Transaction {
        Transaction::write_read(ADDR, vec![0xD0], vec![value])
    }
    fn reset() -> Transaction {
        Transaction::write(ADDR, vec![0xE0, 0xB6])
    }
    fn status(value: u8) -> Transaction {
        Transaction::write_read(ADDR, vec![0xF3], vec![value])
    }
    fn calib_tp(c: &Calibration) -> Transaction {
        Transaction::write_read(ADDR, vec![0x88], calibration_registers(c).0)
    }
    fn calib_h(c: &Calibration) -> Transaction {
        Transaction::write_read(ADDR, vec![0xE1], calibration_registers(c).1)
    }
    fn configure(config: &Bme280Config) -> Vec<Transaction> {
        vec![
            Transaction::write(ADDR, vec![0xF2, config.ctrl_hum()]),
            Transaction::write(ADDR, vec![0xF5, config.config()]),
            Transaction::write(ADDR, vec![0xF4, config.ctrl_meas(0)]),
        ]
    }
    fn init_sequence(c: &Calibration, config: &Bme280Config) -> Vec<Transaction> {
        let mut t = vec![id(0x60), reset(), status(0x00), calib_tp(c), calib_h(c)];
        t.extend(configure(config));
        t
    }
    fn trigger(config: &Bme280Config) -> Transaction {
        Transaction::write(ADDR, vec![0xF4, config.ctrl_meas(1)])
    }
    fn data(adc_t: u32, adc_p: u32, adc_h: u16) -> Transaction {
        Transaction::write_read(ADDR, vec![0xF7], data_registers(adc_t, adc_p, adc_h))
    }

    /// Run `f` against a driver whose bus expects exactly `expectations`.
    fn with_driver<R>(
        expectations: &[Transaction],
        config: Bme280Config,
        f: impl FnOnce(&mut Bme280<Mock>) -> R,
    ) -> R {
        let mut mock = Mock::new(expectations);
        let mut driver = Bme280::new(mock.clone(), ADDR, config);
        let result = f(&mut driver);
        mock.done();
        result
    }

    // ---- registers and configuration ------------------------------------

    #[test]
    fn register_fields_follow_the_datasheet() {
        let default = Bme280Config::default();
        assert_eq!(default.ctrl_hum(), 0b001);
        assert_eq!(default.ctrl_meas(0b01), (0b001 << 5) | (0b001 << 2) | 0b01);
        assert_eq!(default.config(), 0);
        let max = Bme280Config {
            temperature_oversampling: Oversampling::X16,
            pressure_oversampling: Oversampling::X2,
            humidity_oversampling: Oversampling::X8,
            filter: Filter::C16,
        };
        assert_eq!(max.ctrl_hum(), 0b100);
        assert_eq!(max.ctrl_meas(0b01), (0b101 << 5) | (0b010 << 2) | 0b01);
        assert_eq!(max.config(), 0b100 << 2);
    }

    #[test]
    fn measurement_time_matches_the_datasheet_formula() {
        assert_eq!(Bme280Config::default().max_measurement_time_us(), 9_300);
        let x16 = Bme280Config {
            temperature_oversampling: Oversampling::X16,
            pressure_oversampling: Oversampling::X16,
            humidity_oversampling: Oversampling::X16,
            filter: Filter::Off,
        };
        assert_eq!(x16.max_measurement_time_us(), 112_800);
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_bad_values() {
        let c: Bme280Config = toml::from_str("").unwrap();
        assert_eq!(c, Bme280Config::default());
        let c: Bme280Config =
            toml::from_str("temperature_oversampling = 2\nhumidity_oversampling = 16\nfilter = 4")
                .unwrap();
        assert_eq!(c.temperature_oversampling, Oversampling::X2);
        assert_eq!(c.pressure_oversampling, Oversampling::X1);
        assert_eq!(c.humidity_oversampling, Oversampling::X16);
        assert_eq!(c.filter, Filter::C4);
        let e = toml::from_str::<Bme280Config>("pressure_oversampling = 3").unwrap_err();
        assert!(e.to_string().contains("1, 2, 4, 8 or 16"), "{e}");
        let e = toml::from_str::<Bme280Config>("pressure_oversampling = 0").unwrap_err();
        assert!(e.to_string().contains("not 0"), "{e}");
        let e = toml::from_str::<Bme280Config>("filter = 3").unwrap_err();
        assert!(e.to_string().contains("0 (off)"), "{e}");
        let e = toml::from_str::<Bme280Config>("standby = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn raw_sample_decoding() {
        let raw = RawSample::from_registers(&[0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6F, 0xF0]);
        assert_eq!(
            raw,
            RawSample {
                pressure: 415148,
                temperature: 519888,
                humidity: 0x6FF0
            }
        );
        let bytes: [u8; 8] = data_registers(519888, 415148, 0x6FF0).try_into().unwrap();
        assert_eq!(RawSample::from_registers(&bytes), raw);
    }

    // ---- calibration ----------------------------------------------------

    #[test]
    fn calibration_decodes_the_register_layout() {
        // 0xE4 = 0x14, 0xE5 = 0x3D, 0xE6 = 0x03:
        // dig_H4 = 0x14 << 4 | 0xD = 333, dig_H5 = 0x03 << 4 | 0x3 = 51.
        let (tp, _) = calibration_registers(&reference_calibration());
        let tp: [u8; 26] = tp.try_into().unwrap();
        let h = [0x6A, 0x01, 0x00, 0x14, 0x3D, 0x03, 0x1E];
        let c = Calibration::from_registers(&tp, &h).unwrap();
        assert_eq!(c.dig_t1, 27504);
        assert_eq!(c.dig_t3, -1000);
        assert_eq!(c.dig_p1, 36477);
        assert_eq!(c.dig_p8, -14600);
        assert_eq!(c.dig_p9, 6000);
        assert_eq!(c.dig_h1, 75);
        assert_eq!(c.dig_h2, 362);
        assert_eq!(c.dig_h3, 0);
        assert_eq!(c.dig_h4, 333);
        assert_eq!(c.dig_h5, 51);
        assert_eq!(c.dig_h6, 30);
    }

    #[test]
    fn calibration_sign_extends_the_packed_12_bit_words() {
        let (tp, _) = calibration_registers(&reference_calibration());
        let tp: [u8; 26] = tp.try_into().unwrap();
        // dig_H4 = 0xEA3 = -349, dig_H5 = 0xFE2 = -30, dig_H6 = -7.
        let h = [0x00, 0xFF, 0x00, 0xEA, 0x23, 0xFE, 0xF9];
        let c = Calibration::from_registers(&tp, &h).unwrap();
        assert_eq!(c.dig_h2, -256);
        assert_eq!(c.dig_h4, -349);
        assert_eq!(c.dig_h5, -30);
        assert_eq!(c.dig_h6, -7);
        // Extremes of the 12-bit range.
        let h = [0, 0, 0, 0x80, 0x00, 0x7F, 0];
        let c = Calibration::from_registers(&tp, &h).unwrap();
        assert_eq!((c.dig_h4, c.dig_h5), (-2048, 2032));
        let h = [0, 0, 0, 0x7F, 0xFF, 0x80, 0];
        let c = Calibration::from_registers(&tp, &h).unwrap();
        assert_eq!((c.dig_h4, c.dig_h5), (2047, -2033));
        // The test encoder round-trips.
        let mut c = reference_calibration();
        c.dig_h4 = -349;
        c.dig_h5 = -30;
        let (tp, h) = calibration_registers(&c);
        let decoded =
            Calibration::from_registers(&tp.try_into().unwrap(), &h.try_into().unwrap()).unwrap();
        assert_eq!(decoded, c);
    }

    #[test]
    fn calibration_refuses_impossible_data() {
        let h = [0u8; 7];
        let e = Calibration::from_registers(&[0xFF; 26], &h).unwrap_err();
        assert!(matches!(e, Error::InvalidCalibration { .. }), "{e}");
        let e = Calibration::from_registers(&[0x00; 26], &h).unwrap_err();
        assert!(matches!(e, Error::InvalidCalibration { .. }), "{e}");

        let mut c = reference_calibration();
        c.dig_p1 = 0;
        let (tp, _) = calibration_registers(&c);
        let e = Calibration::from_registers(&tp.try_into().unwrap(), &h).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid calibration data: dig_P1 is 0 (the pressure formula would divide by zero)"
        );

        let mut c = reference_calibration();
        c.dig_t1 = 0;
        let (tp, _) = calibration_registers(&c);
        let e = Calibration::from_registers(&tp.try_into().unwrap(), &h).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidCalibration {
                reason: "dig_T1 is 0"
            }
        );
    }

    // ---- compensation ---------------------------------------------------

    #[test]
    fn compensation_matches_the_datasheet_example() {
        let c = reference_calibration();
        let (t_fine, centi) = c.compensate_temperature(519888);
        assert_eq!(t_fine, 128422);
        assert_eq!(centi, 2508);
        let p = c.compensate_pressure(415148, t_fine).unwrap();
        assert_eq!(p, 25767233);
        assert!((p as f64 / 256.0 - 100653.27).abs() < 0.05);

        let m = c
            .compensate(&RawSample {
                temperature: 519888,
                pressure: 415148,
                humidity: 28656,
            })
            .unwrap();
        assert_eq!(m.temperature, 25.08);
        assert!((m.pressure - 1006.5327).abs() < 0.0005, "{}", m.pressure);
        // Integer: 41342 / 1024.
        assert_eq!(m.humidity, 41342.0 / 1024.0);

        let (ref_t_fine, ref_t) = reference::temperature(&c, 519888);
        assert_eq!(ref_t_fine, 128422);
        assert!((m.temperature - ref_t).abs() < 0.01);
        let ref_p = reference::pressure(&c, 415148, ref_t_fine);
        assert!(
            (m.pressure * 100.0 - ref_p).abs() < 0.01,
            "{} vs {ref_p}",
            m.pressure * 100.0
        );
        let ref_h = reference::humidity(&c, 28656, ref_t_fine);
        assert!(
            (m.humidity - ref_h).abs() < 0.01,
            "{} vs {ref_h}",
            m.humidity
        );
    }

    #[test]
    fn integer_compensation_agrees_with_the_double_formulas_across_the_range() {
        // -20 … +60 °C, 300 … 1100 hPa, dry … saturated: the integer results
        // stay within the integer formulas' resolution of the double ones.
        let c = reference_calibration();
        let mut checked = 0;
        for adc_t in (420_000..=640_000).step_by(19_997) {
            let (t_fine, centi) = c.compensate_temperature(adc_t);
            let (ref_t_fine, ref_t) = reference::temperature(&c, adc_t);
            // The integer shifts truncate: t_fine may differ by up to ~12
            // counts (0.0025 °C).
            assert!(
                (t_fine - i64::from(ref_t_fine)).abs() <= 16,
                "adc_T {adc_t}"
            );
            assert!(
                (centi as f64 / 100.0 - ref_t).abs() <= 0.01,
                "adc_T {adc_t}"
            );
            for adc_p in (200_000..=700_000).step_by(24_989) {
                let ref_p = reference::pressure(&c, adc_p, ref_t_fine);
                if !(30_000.0..=110_000.0).contains(&ref_p) {
                    continue;
                }
                let p = c.compensate_pressure(adc_p, t_fine).unwrap() as f64 / 256.0;
                assert!(
                    (p - ref_p).abs() < 1.0,
                    "adc_T {adc_t} adc_P {adc_p}: {p} vs {ref_p}"
                );
                checked += 1;
            }
            for adc_h in (20_000..=45_000).step_by(997) {
                let ref_h = reference::humidity(&c, adc_h, ref_t_fine);
                let h = c.compensate_humidity(adc_h, t_fine) as f64 / 1024.0;
                assert!(
                    (h - ref_h).abs() < 0.02,
                    "adc_T {adc_t} adc_H {adc_h}: {h} vs {ref_h}"
                );
            }
        }
        assert!(checked > 50, "only {checked} pressure points in range");
    }

    #[test]
    fn compensation_survives_garbage_calibration() {
        // Extreme but non-zero trimming values must give an error or a
        // number, never an overflow panic.
        for fill in [i16::MIN, i16::MAX, -1, 1] {
            let c = Calibration {
                dig_t1: u16::MAX,
                dig_t2: fill,
                dig_t3: fill,
                dig_p1: 1,
                dig_p2: fill,
                dig_p3: fill,
                dig_p4: fill,
                dig_p5: fill,
                dig_p6: fill,
                dig_p7: fill,
                dig_p8: fill,
                dig_p9: fill,
                dig_h1: u8::MAX,
                dig_h2: fill,
                dig_h3: u8::MAX,
                dig_h4: -2048,
                dig_h5: 2047,
                dig_h6: fill as i8,
            };
            for (adc_t, adc_p, adc_h) in [(0, 0, 0), (0xF_FFFF, 0xF_FFFF, 0xFFFF), (1, 0xF_FFFF, 1)]
            {
                let raw = RawSample {
                    temperature: adc_t,
                    pressure: adc_p,
                    humidity: adc_h,
                };
                if let Ok(m) = c.compensate(&raw) {
                    assert!(m.temperature.is_finite() && m.pressure.is_finite());
                    assert!((0.0..=100.0).contains(&m.humidity));
                }
            }
        }
    }

    #[test]
    fn skipped_conversions_are_errors() {
        let c = reference_calibration();
        let cases = [
            (0x80000, 415148, 28656, Quantity::Temperature),
            (519888, 0x80000, 28656, Quantity::Pressure),
            (519888, 415148, 0x8000, Quantity::Humidity),
        ];
        for (t, p, h, quantity) in cases {
            let raw = RawSample {
                temperature: t,
                pressure: p,
                humidity: h,
            };
            assert_eq!(c.compensate(&raw), Err(Error::Skipped { quantity }));
        }
    }

    // ---- the bus protocol -----------------------------------------------

    #[test]
    fn init_runs_the_full_sequence() {
        let c = reference_calibration();
        let config = Bme280Config::default();
        let mut t = vec![id(0x60), reset(), status(0x01), status(0x01), status(0x00)];
        t.extend([calib_tp(&c), calib_h(&c)]);
        t.extend([
            Transaction::write(ADDR, vec![0xF2, 0x01]),
            Transaction::write(ADDR, vec![0xF5, 0x00]),
            Transaction::write(ADDR, vec![0xF4, (0b001 << 5) | (0b001 << 2)]),
        ]);
        with_driver(&t, config, |d| {
            d.init(&mut NoopDelay).unwrap();
            assert_eq!(d.calibration(), Some(&c));
        });
    }

    #[test]
    fn init_writes_the_configured_settings() {
        let c = reference_calibration();
        let config = Bme280Config {
            temperature_oversampling: Oversampling::X2,
            pressure_oversampling: Oversampling::X16,
            humidity_oversampling: Oversampling::X4,
            filter: Filter::C8,
        };
        let mut t = vec![id(0x60), reset(), status(0x00), calib_tp(&c), calib_h(&c)];
        t.extend([
            Transaction::write(ADDR, vec![0xF2, 0b011]),
            Transaction::write(ADDR, vec![0xF5, 0b011 << 2]),
            Transaction::write(ADDR, vec![0xF4, (0b010 << 5) | (0b101 << 2)]),
            Transaction::write(ADDR, vec![0xF4, (0b010 << 5) | (0b101 << 2) | 0b01]),
            status(0x00),
            data(519888, 415148, 28656),
        ]);
        with_driver(&t, config, |d| {
            d.init(&mut NoopDelay).unwrap();
            d.measure(&mut NoopDelay).unwrap();
        });
    }

    #[test]
    fn measure_returns_the_compensated_reference_values() {
        let c = reference_calibration();
        let config = Bme280Config::default();
        let mut t = init_sequence(&c, &config);
        t.extend([
            trigger(&config),
            status(0x08),
            status(0x08),
            status(0x00),
            data(519888, 415148, 28656),
        ]);
        let m = with_driver(&t, config, |d| {
            d.init(&mut NoopDelay).unwrap();
            d.measure(&mut NoopDelay).unwrap()
        });
        assert_eq!(m.temperature, 25.08);
        assert_eq!(m.pressure, 25767233.0 / 25600.0);
        assert_eq!(m.humidity, 41342.0 / 1024.0);
    }

    #[test]
    fn measure_waits_the_measurement_time() {
        use embedded_hal_mock::eh1::delay::{CheckedDelay, Transaction as Delay};
        let c = reference_calibration();
        let config = Bme280Config::default();
        let mut t = init_sequence(&c, &config);
        t.extend([
            trigger(&config),
            status(0x08),
            status(0x00),
            data(519888, 415148, 28656),
        ]);
        with_driver(&t, config, |d| {
            let mut delay = CheckedDelay::new(&[
                // init: start-up time after the reset
                Delay::delay_us(2_000),
                // measure: the measurement time, then one poll interval
                Delay::delay_us(9_300),
                Delay::delay_us(1_000),
            ]);
            d.init(&mut delay).unwrap();
            d.measure(&mut delay).unwrap();
            delay.done();
        });
    }

    #[test]
    fn measure_times_out_when_the_chip_stays_busy() {
        let c = reference_calibration();
        let config = Bme280Config::default();
        let mut t = init_sequence(&c, &config);
        t.push(trigger(&config));
        t.extend((0..MEASURE_POLL_ATTEMPTS).map(|_| status(0x08)));
        let e = with_driver(&t, config, |d| {
            d.init(&mut NoopDelay).unwrap();
            d.measure(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(
            e,
            Error::Timeout {
                waiting_for: Wait::Measurement,
                attempts: MEASURE_POLL_ATTEMPTS
            }
        );
        assert!(e.to_string().contains("status.measuring"), "{e}");
    }

    #[test]
    fn init_times_out_when_the_nvm_copy_never_ends() {
        let mut t = vec![id(0x60), reset()];
        t.extend((0..RESET_POLL_ATTEMPTS).map(|_| status(0x01)));
        let e = with_driver(&t, Bme280Config::default(), |d| {
            d.init(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(
            e,
            Error::Timeout {
                waiting_for: Wait::NvmCopy,
                attempts: RESET_POLL_ATTEMPTS
            }
        );
    }

    #[test]
    fn measure_before_init_is_refused_without_bus_traffic() {
        let e = with_driver(&[], Bme280Config::default(), |d| {
            d.measure(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(e, Error::NotInitialised);
    }

    #[test]
    fn wrong_chip_ids_are_named() {
        let e = with_driver(&[id(0x58)], Bme280Config::default(), |d| {
            d.init(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(e, Error::WrongChipId { found: 0x58 });
        assert!(
            e.to_string()
                .starts_with("chip id 0x58 is a BMP280 (temperature and pressure, no humidity)"),
            "{e}"
        );

        let e = with_driver(&[id(0x61)], Bme280Config::default(), |d| {
            d.init(&mut NoopDelay).unwrap_err()
        });
        assert!(e.to_string().contains("BME680"), "{e}");
        let e = with_driver(&[id(0x12)], Bme280Config::default(), |d| {
            d.init(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(
            e.to_string(),
            "chip id 0x12 is not a BME280 (expected 0x60); is another device at this address?"
        );
    }

    #[test]
    fn bus_errors_name_the_step_that_failed() {
        let c = reference_calibration();
        let config = Bme280Config::default();
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let full = init_sequence(&c, &config);
        // Fail each init transfer in turn: everything before it succeeds,
        // the failing one carries the error, nothing after it is attempted.
        let expected = [
            (0xD0, Access::Read),
            (0xE0, Access::Write),
            (0xF3, Access::Read),
            (0x88, Access::Read),
            (0xE1, Access::Read),
            (0xF2, Access::Write),
            (0xF5, Access::Write),
            (0xF4, Access::Write),
        ];
        assert_eq!(full.len(), expected.len());
        for (step, &(register, access)) in expected.iter().enumerate() {
            let kind = if step % 2 == 0 {
                nack
            } else {
                ErrorKind::Other
            };
            let mut t = full[..step].to_vec();
            t.push(full[step].clone().with_error(kind));
            let e = with_driver(&t, config, |d| {
                let e = d.init(&mut NoopDelay).unwrap_err();
                assert!(d.calibration().is_none());
                e
            });
            assert_eq!(
                e,
                Error::Bus {
                    register,
                    access,
                    kind,
                    detail: format!("{kind:?}")
                },
                "step {step}"
            );
        }

        // …and each measurement transfer.
        let measure = [
            (trigger(&config), 0xF4, Access::Write),
            (status(0x00), 0xF3, Access::Read),
            (data(519888, 415148, 28656), 0xF7, Access::Read),
        ];
        for step in 0..measure.len() {
            let mut t = full.clone();
            t.extend(measure[..step].iter().map(|(t, _, _)| t.clone()));
            let (failing, register, access) = &measure[step];
            t.push(failing.clone().with_error(ErrorKind::Bus));
            let e = with_driver(&t, config, |d| {
                d.init(&mut NoopDelay).unwrap();
                d.measure(&mut NoopDelay).unwrap_err()
            });
            assert!(
                matches!(e, Error::Bus { register: r, access: a, kind: ErrorKind::Bus, .. } if r == *register && a == *access),
                "step {step}: {e:?}"
            );
        }
    }

    #[test]
    fn bus_error_messages_are_readable() {
        let nack = Error::Bus {
            register: 0xD0,
            access: Access::Read,
            kind: ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            detail: "NoAcknowledge(Address)".into(),
        };
        assert_eq!(
            nack.to_string(),
            "I²C error reading register 0xD0 (id): The device did not acknowledge its address"
        );
        let other = Error::Bus {
            register: 0xF7,
            access: Access::Read,
            kind: ErrorKind::Other,
            detail: "I2CError { err: Errno(121) }".into(),
        };
        assert!(
            other
                .to_string()
                .ends_with("(I2CError { err: Errno(121) })"),
            "{other}"
        );
    }

    #[test]
    fn a_chip_that_lost_power_reports_a_skipped_humidity_conversion() {
        // After a power cycle ctrl_hum is 0 and the data registers hold their
        // reset values; the forced-mode write restores osrs_t/osrs_p only.
        let c = reference_calibration();
        let config = Bme280Config::default();
        let mut t = init_sequence(&c, &config);
        t.extend([trigger(&config), status(0x00), data(519888, 415148, 0x8000)]);
        let e = with_driver(&t, config, |d| {
            d.init(&mut NoopDelay).unwrap();
            d.measure(&mut NoopDelay).unwrap_err()
        });
        assert_eq!(
            e,
            Error::Skipped {
                quantity: Quantity::Humidity
            }
        );
    }
}
