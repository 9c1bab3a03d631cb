//! Built-in anomaly detectors.
//!
//! Each stream runs detectors on the numeric fields of the readings its
//! processors output. A detector works on one *series* (sensor + field): it
//! observes the values one at a time and returns a [`Verdict`] — a score in
//! `[0, 1]` and a flag, set exactly when `score ≥ flag_at`. The state of every
//! series is small (O(1) or O(window)) and serializable, so the daemon can
//! persist it and restore it after a restart without forgetting the baseline
//! or re-running a warm-up.
//!
//! The shape follows the Vector style: a serde configuration
//! ([`DetectorConfig`]) is validated, then [`DetectorConfig::build`] turns it
//! into a running [`Detector`] (or [`DetectorConfig::restore`] revives one from
//! saved bytes). [`DetectorSet`] holds a stream's detectors and their live
//! series, turns readings into [`AnomalyEvent`]s and hands out the changed
//! states for persistence; it does no I/O itself.
//!
//! ## Layout
//!
//! ```text
//! mod.rs            this overview; `DetectorConfig`, `Detector`, `Verdict`, `DetectError`,
//!                   the shared score mapping and the state envelope
//! set.rs            `DetectorSet`: a stream's detectors, the series map, events, persistence keys
//! window.rs         the ring buffer behind the windowed detectors
//! ewma.rs           `ewma`: exponentially weighted mean/variance z-score
//! gaussian.rs       `gaussian`: mean/stddev z-score over a sliding window
//! mad.rs            `mad`: median/MAD (robust) z-score over a sliding window
//! rate.rs           `rate`: rate of change per second against `max_rate`
//! flatline.rs       `flatline`: stuck sensor (no change for N readings or S seconds)
//! range.rs          `range`: static bounds with an optional warning margin
//! holt_winters.rs   `holt-winters`: additive seasonal forecast, scored on the residual
//! ```
//!
//! ## Configuration keys
//!
//! Every detector entry has `kind` plus the keys of its kind (unknown keys are
//! refused). [`DetectorSpec`] adds `name` (default: the kind; unique within the
//! stream, `[A-Za-z0-9_-]`) and `fields` (default: every field);
//! [`DetectorSetConfig`] adds the stream-wide keys.
//!
//! | kind | key | default | meaning |
//! |---|---|---|---|
//! | *(stream)* | `max_series` | `10000` | series tracked at most; values of further series are counted, not scored |
//! | *(stream)* | `include_derived` | `false` | also score derived records (readings with a `kind`, e.g. alerts, stats) |
//! | *(any)* | `name` | the kind | detector name in events and state keys |
//! | *(any)* | `fields` | `[]` (all) | the fields this detector scores |
//! | *(any)* | `flag_at` | `0.5` (`range`, `flatline`: `1.0`) | a value is flagged when its score ≥ `flag_at`; within `(0, 1)` (`range`, `flatline`: `(0, 1]`) |
//! | `ewma` | `alpha` | `0.05` | smoothing factor of mean and variance, `(0, 1]` |
//! | `ewma` | `z_threshold` | `4.0` | the \|z\| that is flagged (score = `flag_at`) |
//! | `ewma` | `warmup` | `10` | readings learned before any is scored, ≥ 2 |
//! | `ewma` | `min_std` | `0.0` | floor of the standard deviation, value units |
//! | `gaussian` | `window` | `60` | values in the sliding window, `2 ..= 10000`; scoring starts once it is full |
//! | `gaussian` | `z_threshold` | `4.0` | the \|z\| that is flagged |
//! | `gaussian` | `min_std` | `0.0` | floor of the standard deviation |
//! | `mad` | `window` | `100` | values in the sliding window, `3 ..= 10000`; scoring starts once it is full |
//! | `mad` | `z_threshold` | `4.0` | the robust \|z\| that is flagged |
//! | `mad` | `min_std` | `0.0` | floor of the robust spread (1.4826 × MAD) |
//! | `rate` | `max_rate` | *required* | largest normal \|Δvalue\| per second, > 0 |
//! | `flatline` | `count` | `10` (unset when `seconds` is set) | readings within `epsilon` that are flagged, ≥ 2 |
//! | `flatline` | `seconds` | unset | time within `epsilon` that is flagged, > 0 |
//! | `flatline` | `epsilon` | `0.0` | largest spread (max − min) that still counts as "no change" |
//! | `range` | `min` | unset | lower bound (at least one of `min`, `max`) |
//! | `range` | `max` | unset | upper bound |
//! | `range` | `margin` | `0.0` | width inside the bounds where the score ramps up |
//! | `holt-winters` | `season_length` | *required* | sampling intervals per season, `2 ..= 100000` |
//! | `holt-winters` | `interval_ms` | inferred | the sampling interval, `1 ..= 31536000000`; season positions follow the timestamps, so a gap skips slots |
//! | `holt-winters` | `alpha` | `0.2` | level smoothing, `(0, 1)` |
//! | `holt-winters` | `beta` | `0.01` | trend smoothing, `[0, 1)` |
//! | `holt-winters` | `gamma` | `0.1` | seasonal smoothing, `[0, 1)` |
//! | `holt-winters` | `scale_alpha` | `0.05` | smoothing of the residual scale (EWMA of \|residual\|), `(0, 1]` |
//! | `holt-winters` | `z_threshold` | `4.0` | the residual, in estimated standard deviations, that is flagged |
//! | `holt-winters` | `min_std` | `0.0` | floor of the residual standard deviation |
//!
//! ```toml
//! # A DetectorSetConfig (where it sits in wasmgate.toml is decided when the
//! # daemon wires detectors into streams).
//! max_series = 10000
//! include_derived = false
//!
//! [[detectors]]
//! kind = "mad"
//! name = "temp-outliers"
//! fields = ["temp"]
//! window = 200
//!
//! [[detectors]]
//! kind = "rate"
//! max_rate = 0.5          # units per second
//! ```
//!
//! ## Memory
//!
//! Per series, besides ~150 bytes of bookkeeping in [`DetectorSet`]: O(1)
//! for `ewma`, `rate`, `flatline`, `range`; 8 bytes × `window` for
//! `gaussian` and 16 bytes × `window` for `mad` (window + scratch copy);
//! 8 bytes × `season_length` for `holt-winters`. The defaults (window 60,
//! `mad` window 100) at the default 10 000 series come to about 5–17 MB; a
//! daily season of one reading a minute (1440) is 11.5 KB per series, so
//! size `max_series` accordingly on a 512 MB board.
//!
//! ## Scores
//!
//! The threshold-style detectors (`ewma`, `gaussian`, `mad`, `rate`,
//! `holt-winters`) compute a ratio `x = measure / threshold` (|z| /
//! `z_threshold`, rate / `max_rate`) and map it with
//!
//! ```text
//! score = x² / (x² + k),   k = (1 − flag_at) / flag_at
//! ```
//!
//! which is 0 at `x = 0`, rises monotonically towards 1, and equals `flag_at`
//! exactly at `x = 1`: at the default `flag_at = 0.5`, `score = z² / (z² +
//! z_threshold²)`. So these detectors flag exactly when the measure reaches its
//! threshold; `flag_at` (which must be below 1 for them) only chooses where on
//! the 0–1 scale that point lies. `range` and `flatline` use linear ramps that
//! reach 1 at the limit, and flag at 1 by default. Values not yet scored
//! (warm-up, first value) get score 0.
//!
//! Spreads are never taken below `min_std` nor below `1e-9 × |centre|`
//! (rounding noise); with both at zero, a zero spread makes any non-zero
//! deviation an infinite z (score 1), and a tiny spread makes a real change
//! score ≈ 1 — set `min_std` to the sensor's resolution for quantised
//! signals that sit still for long. Non-finite values are ignored: never
//! flagged, never learned.

pub mod ewma;
pub mod flatline;
pub mod gaussian;
pub mod holt_winters;
pub mod mad;
pub mod range;
pub mod rate;
pub mod set;
pub mod synth;
mod window;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use ewma::{Ewma, EwmaConfig};
pub use flatline::{Flatline, FlatlineConfig};
pub use gaussian::{Gaussian, GaussianConfig};
pub use holt_winters::{HoltWinters, HoltWintersConfig};
pub use mad::{Mad, MadConfig};
pub use range::{Range, RangeConfig};
pub use rate::{Rate, RateConfig};
pub use set::{AnomalyEvent, DetectorSet, DetectorSetConfig, DetectorSpec, FieldScore, SeriesKey};

/// The verdict on one observed value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// How anomalous the value is, in `[0, 1]`.
    pub score: f64,
    /// Whether `score ≥ flag_at`.
    pub flagged: bool,
}

impl Verdict {
    /// A value that was not scored (ignored, warming up, first value).
    pub const NONE: Verdict = Verdict {
        score: 0.0,
        flagged: false,
    };

    /// The verdict for `score` (clamped to `[0, 1]`, NaN → 0) under `flag_at`.
    pub fn from_score(score: f64, flag_at: f64) -> Verdict {
        let score = if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        };
        Verdict {
            score,
            flagged: score >= flag_at,
        }
    }

    /// The verdict for a ratio `x = measure / threshold` under the mapping
    /// `x² / (x² + k)` described in the [module docs](self): flagged exactly
    /// when `x ≥ 1`. `flag_at` must be within `(0, 1)`.
    pub fn from_ratio(x: f64, flag_at: f64) -> Verdict {
        Verdict::from_score(ratio_score(x, flag_at), flag_at)
    }
}

/// `x² / (x² + k)` with `k = (1 − flag_at) / flag_at`, nudged by at most one
/// ulp so that `score ≥ flag_at ⇔ x ≥ 1` holds despite rounding.
fn ratio_score(x: f64, flag_at: f64) -> f64 {
    // NaN, 0 and negatives score 0.
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return 1.0;
    }
    let k = (1.0 - flag_at) / flag_at;
    // 1 / (1 + k/x²): x² underflowing gives 0, overflowing gives 1.
    let s = 1.0 / (1.0 + k / (x * x));
    if x >= 1.0 {
        s.max(flag_at)
    } else if s >= flag_at && flag_at > 0.0 {
        // The largest double below flag_at (flag_at is positive and normal).
        f64::from_bits(flag_at.to_bits() - 1)
    } else {
        s
    }
}

/// Relative floor of a spread: deviations below `1e-9 × |centre|` are
/// rounding noise, not signal.
const REL_SPREAD_FLOOR: f64 = 1e-9;

/// |z| of `deviation` given a spread estimate, its floor `min_std`, and the
/// centre the deviation is measured from (for the relative floor). A zero
/// spread makes any non-zero deviation infinitely unusual.
fn z_of(deviation: f64, spread: f64, min_std: f64, centre: f64) -> f64 {
    let spread = spread.max(min_std).max(REL_SPREAD_FLOOR * centre.abs());
    let d = deviation.abs();
    if d == 0.0 {
        0.0
    } else if spread > 0.0 {
        d / spread
    } else {
        f64::INFINITY
    }
}

/// A running detector for one series.
///
/// Implementations never allocate in `observe` once built, never panic, and
/// ignore non-finite values (returning [`Verdict::NONE`] without learning).
pub trait Detector: Send + fmt::Debug {
    /// Observe one value at `ts_ms` (ms since the Unix epoch); returns the
    /// verdict for this value (scored against what was learned before it).
    fn observe(&mut self, ts_ms: i64, value: f64) -> Verdict;

    /// The series state, CBOR-encoded (via serde_cbor) in a versioned
    /// envelope, for [`DetectorConfig::restore`].
    fn save(&self) -> Vec<u8>;

    /// Whether the detector has state worth persisting; `false` for
    /// stateless detectors (`range`), whose series are never reported dirty.
    fn is_stateful(&self) -> bool {
        true
    }
}

/// Configuration of one detector: `kind` selects the variant, the other keys
/// are the variant's parameters (see the table in the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DetectorConfig {
    /// Exponentially weighted mean/variance z-score.
    Ewma(EwmaConfig),
    /// Mean/stddev z-score over a sliding window.
    Gaussian(GaussianConfig),
    /// Median/MAD robust z-score over a sliding window.
    Mad(MadConfig),
    /// Rate of change against a maximum.
    Rate(RateConfig),
    /// Stuck sensor.
    Flatline(FlatlineConfig),
    /// Static bounds.
    Range(RangeConfig),
    /// Additive Holt-Winters forecast residual.
    HoltWinters(HoltWintersConfig),
}

impl DetectorConfig {
    /// The `kind` key, e.g. `holt-winters`.
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorConfig::Ewma(_) => ewma::KIND,
            DetectorConfig::Gaussian(_) => gaussian::KIND,
            DetectorConfig::Mad(_) => mad::KIND,
            DetectorConfig::Rate(_) => rate::KIND,
            DetectorConfig::Flatline(_) => flatline::KIND,
            DetectorConfig::Range(_) => range::KIND,
            DetectorConfig::HoltWinters(_) => holt_winters::KIND,
        }
    }

    /// The score at or above which a value is flagged.
    pub fn flag_at(&self) -> f64 {
        match self {
            DetectorConfig::Ewma(c) => c.flag_at,
            DetectorConfig::Gaussian(c) => c.flag_at,
            DetectorConfig::Mad(c) => c.flag_at,
            DetectorConfig::Rate(c) => c.flag_at,
            DetectorConfig::Flatline(c) => c.flag_at,
            DetectorConfig::Range(c) => c.flag_at,
            DetectorConfig::HoltWinters(c) => c.flag_at,
        }
    }

    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DetectorConfig::Ewma(c) => c.validate(),
            DetectorConfig::Gaussian(c) => c.validate(),
            DetectorConfig::Mad(c) => c.validate(),
            DetectorConfig::Rate(c) => c.validate(),
            DetectorConfig::Flatline(c) => c.validate(),
            DetectorConfig::Range(c) => c.validate(),
            DetectorConfig::HoltWinters(c) => c.validate(),
        }
    }

    /// A fresh detector for one series. Call [`validate`](Self::validate)
    /// first: out-of-range parameters are clamped here rather than panicking,
    /// which may not be what the operator meant.
    pub fn build(&self) -> Box<dyn Detector> {
        match self {
            DetectorConfig::Ewma(c) => Box::new(c.build()),
            DetectorConfig::Gaussian(c) => Box::new(c.build()),
            DetectorConfig::Mad(c) => Box::new(c.build()),
            DetectorConfig::Rate(c) => Box::new(c.build()),
            DetectorConfig::Flatline(c) => Box::new(c.build()),
            DetectorConfig::Range(c) => Box::new(c.build()),
            DetectorConfig::HoltWinters(c) => Box::new(c.build()),
        }
    }

    /// A detector continuing from state saved by [`Detector::save`].
    ///
    /// State of another kind, another format version, or corrupt state is
    /// refused. State saved under different parameters is adapted where that
    /// keeps its meaning, refused where it does not:
    ///
    /// - `ewma`, `rate`, `range`: state does not depend on the parameters;
    ///   kept as is.
    /// - `gaussian`, `mad`: another `window` keeps the newest values that fit
    ///   (a smaller window) or keeps all values and waits for the window to
    ///   fill (a larger one).
    /// - `flatline`: a smaller `epsilon` that the current run no longer fits
    ///   restarts the run at the last value.
    /// - `holt-winters`: another `season_length` is refused
    ///   ([`DetectError::Incompatible`]); the seasonal profile cannot be
    ///   re-sampled from the state alone. The caller starts a fresh series.
    ///   State saved before the detector followed timestamps (no last
    ///   timestamp, no interval) restores and infers the interval afresh.
    pub fn restore(&self, bytes: &[u8]) -> Result<Box<dyn Detector>, DetectError> {
        Ok(match self {
            DetectorConfig::Ewma(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::Gaussian(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::Mad(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::Rate(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::Flatline(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::Range(c) => Box::new(c.restore(bytes)?),
            DetectorConfig::HoltWinters(c) => Box::new(c.restore(bytes)?),
        })
    }
}

/// A detector configuration or saved state that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The configuration is invalid; the message names the key.
    #[error("invalid detector configuration: {0}")]
    Config(String),
    /// The saved state is not a CBOR state envelope.
    #[error("detector state cannot be decoded: {0}")]
    Decode(#[from] serde_cbor::Error),
    /// The saved state belongs to another kind of detector.
    #[error("detector state was saved by a `{found}` detector, not `{expected}`")]
    KindMismatch {
        /// The configured kind.
        expected: &'static str,
        /// The kind recorded in the state.
        found: String,
    },
    /// The saved state has an unknown format version.
    #[error("detector state format version {found} is not supported (expected {expected})")]
    Version {
        /// The version this build writes.
        expected: u32,
        /// The version recorded in the state.
        found: u32,
    },
    /// The saved state decodes but its values are impossible.
    #[error("detector state is corrupt: {0}")]
    Corrupt(String),
    /// The saved state does not fit the current parameters.
    #[error("detector state does not fit the configuration: {0}")]
    Incompatible(String),
    /// A persistence key that is not a detector state key of this stream.
    #[error("invalid detector state key {key:?}: {reason}")]
    Key {
        /// The key, lossily decoded.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A state key of another stream.
    #[error("detector state key belongs to stream {0:?}")]
    OtherStream(String),
    /// A state key names a detector the stream no longer has.
    #[error("no detector named {0:?} in this stream")]
    UnknownDetector(String),
    /// A state key names a field its detector no longer scores (`fields`).
    #[error("detector {detector:?} does not score field {field:?}")]
    NotScored {
        /// The detector's name.
        detector: String,
        /// The field.
        field: String,
    },
    /// The series limit is reached; the state was not restored.
    #[error("series limit of {0} reached; state not restored")]
    SeriesLimit(usize),
}

impl DetectError {
    /// Whether a saved `(key, state)` that failed to restore can never be
    /// restored under the current configuration, so the daemon may delete
    /// it: true for undecodable, corrupt, incompatible or foreign-kind state
    /// and for keys that are malformed or name a removed detector or field;
    /// false for [`OtherStream`](Self::OtherStream) (another stream's key),
    /// [`SeriesLimit`](Self::SeriesLimit) (may fit after a restart with a
    /// higher limit) and [`Config`](Self::Config).
    pub fn is_stale(&self) -> bool {
        !matches!(
            self,
            DetectError::Config(_) | DetectError::OtherStream(_) | DetectError::SeriesLimit(_)
        )
    }
}

/// Version of the state envelope written by [`Detector::save`].
const STATE_VERSION: u32 = 1;

/// The envelope every saved state is wrapped in.
#[derive(Serialize)]
struct EnvelopeOut<'a, S> {
    kind: &'a str,
    v: u32,
    state: &'a S,
}

/// The envelope as read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<S> {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    #[serde(rename = "v")]
    _v: serde::de::IgnoredAny,
    state: S,
}

/// The envelope's header, read first so that kind and version are checked
/// before the state's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeHead {
    kind: String,
    v: u32,
    #[serde(rename = "state")]
    _state: serde::de::IgnoredAny,
}

/// Encode `state` of a `kind` detector. Encoding plain numbers into a `Vec`
/// cannot fail; should it ever, the error is logged and the empty result
/// makes the later restore fail cleanly (a fresh series).
fn encode_state<S: Serialize>(kind: &'static str, state: &S) -> Vec<u8> {
    let env = EnvelopeOut {
        kind,
        v: STATE_VERSION,
        state,
    };
    serde_cbor::to_vec(&env).unwrap_or_else(|e| {
        tracing::error!(kind, error = %e, "cannot encode detector state");
        Vec::new()
    })
}

/// Decode the state of a `kind` detector, checking kind and version.
fn decode_state<S: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<S, DetectError> {
    let head: EnvelopeHead = serde_cbor::from_slice(bytes)?;
    if head.kind != kind {
        return Err(DetectError::KindMismatch {
            expected: kind,
            found: head.kind,
        });
    }
    if head.v != STATE_VERSION {
        return Err(DetectError::Version {
            expected: STATE_VERSION,
            found: head.v,
        });
    }
    let env: EnvelopeIn<S> = serde_cbor::from_slice(bytes)?;
    Ok(env.state)
}

/// Checks shared by the per-kind `validate` functions.
mod check {
    /// `flag_at` for a ratio-scored detector: within `(0, 1)`.
    pub(super) fn flag_at_open(v: f64) -> Result<(), String> {
        if v > 0.0 && v < 1.0 {
            Ok(())
        } else {
            Err(format!("flag_at = {v} must be within (0, 1)"))
        }
    }

    /// `flag_at` for a ramp-scored detector: within `(0, 1]`.
    pub(super) fn flag_at_closed(v: f64) -> Result<(), String> {
        if v > 0.0 && v <= 1.0 {
            Ok(())
        } else {
            Err(format!("flag_at = {v} must be within (0, 1]"))
        }
    }

    /// A finite value `> 0`.
    pub(super) fn positive(key: &str, v: f64) -> Result<(), String> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(format!(
                "{key} = {v} must be a finite number greater than 0"
            ))
        }
    }

    /// A finite value `≥ 0`.
    pub(super) fn non_negative(key: &str, v: f64) -> Result<(), String> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!("{key} = {v} must be a finite number ≥ 0"))
        }
    }

    /// A factor within `0, 1` with each end included or not.
    pub(super) fn unit(key: &str, v: f64, zero_ok: bool, one_ok: bool) -> Result<(), String> {
        let lo_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
        let hi_ok = if one_ok { v <= 1.0 } else { v < 1.0 };
        if lo_ok && hi_ok {
            Ok(())
        } else {
            Err(format!(
                "{key} = {v} must be within {}0, 1{}",
                if zero_ok { "[" } else { "(" },
                if one_ok { "]" } else { ")" }
            ))
        }
    }

    /// An integer within `lo ..= hi`.
    pub(super) fn within(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{key} = {v} must be within {lo} ..= {hi}"))
        }
    }
}

/// Helpers shared by the detectors' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Detector, DetectorConfig, Verdict};

    /// Observe `values` one second apart from ts 0; the verdicts.
    pub(crate) fn run(d: &mut dyn Detector, values: &[f64]) -> Vec<Verdict> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| d.observe(i as i64 * 1000, v))
            .collect()
    }

    /// Observing `series` straight through gives exactly the same verdicts
    /// as observing `series[..split]`, saving, restoring with the same
    /// configuration and observing the rest.
    pub(crate) fn assert_continuity_ts(cfg: &DetectorConfig, series: &[(i64, f64)], split: usize) {
        let mut straight = cfg.build();
        let expected: Vec<Verdict> = series
            .iter()
            .map(|&(t, v)| straight.observe(t, v))
            .collect();
        let mut first = cfg.build();
        let mut got: Vec<Verdict> = series[..split]
            .iter()
            .map(|&(t, v)| first.observe(t, v))
            .collect();
        let saved = first.save();
        drop(first);
        let mut second = cfg.restore(&saved).expect("restore");
        got.extend(series[split..].iter().map(|&(t, v)| second.observe(t, v)));
        assert_eq!(got, expected, "{} split at {split}", cfg.kind());
        assert_eq!(
            second.save(),
            straight.save(),
            "{} split at {split}",
            cfg.kind()
        );
    }

    /// [`assert_continuity_ts`] with values one second apart.
    pub(crate) fn assert_continuity(cfg: &DetectorConfig, values: &[f64], split: usize) {
        let series: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 * 1000, v))
            .collect();
        assert_continuity_ts(cfg, &series, split);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_mapping_hits_flag_at_at_one() {
        for flag_at in [0.1, 0.3, 0.5, 0.7, 0.9, 0.99] {
            let v = Verdict::from_ratio(1.0, flag_at);
            assert!(v.flagged, "flag_at {flag_at}");
            assert!((v.score - flag_at).abs() < 1e-12);
            let below = Verdict::from_ratio(1.0 - 1e-15, flag_at);
            assert!(!below.flagged, "flag_at {flag_at}");
        }
        assert_eq!(Verdict::from_ratio(2.0, 0.5).score, 0.8);
        assert_eq!(Verdict::from_ratio(0.0, 0.5), Verdict::NONE);
        assert_eq!(Verdict::from_ratio(f64::NAN, 0.5), Verdict::NONE);
        assert_eq!(Verdict::from_ratio(f64::INFINITY, 0.5).score, 1.0);
        assert_eq!(Verdict::from_ratio(1e300, 0.5).score, 1.0);
        assert!(Verdict::from_ratio(1e-300, 0.5).score < 1e-300);
        // Monotone.
        let mut last = 0.0;
        for i in 1..1000 {
            let s = ratio_score(i as f64 / 100.0, 0.5);
            assert!(s > last && s < 1.0);
            last = s;
        }
    }

    #[test]
    fn z_handles_zero_spread() {
        assert_eq!(z_of(0.0, 0.0, 0.0, 5.0), 0.0);
        assert_eq!(z_of(1.0, 0.0, 0.0, 0.0), f64::INFINITY);
        assert_eq!(z_of(1.0, 0.0, 0.5, 0.0), 2.0);
        assert_eq!(z_of(-3.0, 1.5, 0.0, 0.0), 2.0);
        // Rounding noise around a large centre is not a deviation.
        assert!(z_of(1e-12, 0.0, 0.0, 101_325.0) < 1e-5);
    }

    #[test]
    fn config_parses_by_kind_and_refuses_unknown_keys() {
        let c: DetectorConfig = toml::from_str("kind = \"ewma\"\nalpha = 0.2").unwrap();
        assert_eq!(
            c,
            DetectorConfig::Ewma(EwmaConfig {
                alpha: 0.2,
                ..EwmaConfig::default()
            })
        );
        let c: DetectorConfig =
            toml::from_str("kind = \"holt-winters\"\nseason_length = 24").unwrap();
        assert_eq!(c.kind(), "holt-winters");
        assert_eq!(c.flag_at(), 0.5);
        let e = toml::from_str::<DetectorConfig>("kind = \"ewma\"\nwindow = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field `window`"), "{e}");
        let e = toml::from_str::<DetectorConfig>("kind = \"rate\"").unwrap_err();
        assert!(e.to_string().contains("max_rate"), "{e}");
        let e = toml::from_str::<DetectorConfig>("kind = \"nope\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let c: DetectorConfig = toml::from_str("kind = \"range\"\nmax = 40").unwrap();
        assert_eq!(c.flag_at(), 1.0);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn restore_refuses_other_kind_version_and_garbage() {
        let ewma = DetectorConfig::Ewma(EwmaConfig::default());
        let rate = DetectorConfig::Rate(RateConfig::new(1.0));
        let mut d = ewma.build();
        d.observe(0, 1.0);
        let saved = d.save();
        assert!(matches!(
            rate.restore(&saved),
            Err(DetectError::KindMismatch {
                expected: "rate",
                ..
            })
        ));
        assert!(matches!(
            ewma.restore(b"\xff\x00"),
            Err(DetectError::Decode(_))
        ));
        assert!(matches!(ewma.restore(&[]), Err(DetectError::Decode(_))));
        #[derive(Serialize)]
        struct Future {
            kind: &'static str,
            v: u32,
            state: (),
        }
        let future = serde_cbor::to_vec(&Future {
            kind: "ewma",
            v: 99,
            state: (),
        })
        .unwrap();
        assert!(matches!(
            ewma.restore(&future),
            Err(DetectError::Version { found: 99, .. })
        ));
    }
}
