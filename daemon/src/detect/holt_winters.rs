//! `holt-winters`: additive Holt-Winters forecast, scored on the residual.
//!
//! The model keeps a level `ℓ`, a trend `b` (per sampling interval) and one
//! seasonal offset per position in a season of `season_length` sampling
//! intervals. Each value `x` at season position `i` is first forecast and
//! scored, then learned:
//!
//! ```text
//! forecast = ℓ + b + s[i]            residual r = x − forecast
//! σ        = 1.2533 · scale · w      (1.2533 · E|r| estimates σ of normal residuals;
//!                                     w widens it after a gap, see below)
//! z        = |r| / σ
//! ℓ'   = α·(x' − s[i]) + (1 − α)·(ℓ + b)
//! b'   = β·(ℓ' − ℓ) + (1 − β)·b
//! s[i] = γ·(x' − ℓ') + (1 − γ)·s[i]
//! scale ← scale + a·(|r'|/w − scale),  a = max(scale_alpha, 1/k) for the k-th residual
//! ```
//!
//! where `x' = forecast + r'` and `r'` is the residual clipped to
//! `±z_threshold · σ` once scoring has begun (a Huber-style robust update):
//! a spike barely disturbs the model, while a lasting level shift is still
//! learned, since the clipped steps and the growing scale catch up with it.
//!
//! ## Time
//!
//! Season positions follow the timestamps, not the count of readings, so a
//! missing reading does not shift the phase. The sampling interval is
//! `interval_ms` when configured, otherwise inferred: the median of the first
//! 5 positive timestamp differences of the series (a median, so one early gap
//! or burst does not mislead it; kept in the state). A reading `Δt` after the
//! previous one is `k = max(1, round(Δt / interval))` intervals later; the
//! `k − 1` intervals without a reading are *missed*:
//!
//! - the season position advances by `k` (the slots of the missed intervals
//!   keep their values), and the level follows the trend through the gap:
//!   `ℓ ← ℓ + (k − 1)·b` (the model's forecast for a missing value, taken as
//!   is — nothing is learned from it);
//! - the first value after the gap is scored and clipped against a wider
//!   `σ`, by `w = √(1 + (k − 1)·α²)`: the forecast error of a level that
//!   went `k − 1` steps without a correction (the `k`-step-ahead variance of
//!   the local-level model). Its residual is learned into `scale` divided
//!   by `w`, so the one-step scale is not inflated;
//! - during the first season, the missed slots are filled by linear
//!   interpolation between the readings on either side, so the initial
//!   profile keeps its phase;
//! - a gap of more than 2 seasons (`k − 1 > 2 · season_length`) resets the
//!   series to warm-up (keeping the interval): profile and level that old
//!   are not a forecast worth alarming on.
//!
//! Timestamps that do not advance (a duplicate or out-of-order reading) and
//! the readings before the interval is known count one interval each — the
//! behaviour of earlier versions. Jitter of up to a third of the interval is
//! absorbed by the rounding. A series whose sampling rate changes for good
//! should configure `interval_ms` (or start a fresh state): a slower rate
//! then skips slots (correctly), a faster one counts each reading as one
//! interval.
//!
//! ## Warm-up
//!
//! The first season initialises the model (`ℓ` = its mean, `b` = 0, `s[i]` =
//! its deviations from the mean); the second season runs the model and
//! learns the residual scale; values are scored from the third season on
//! (counted in intervals, missed ones included).
//! Score: `x = z / z_threshold` through the shared mapping. Because the
//! forecast follows the season, normal periodic peaks score low where a
//! static threshold would flag them. Memory O(season_length); time O(1) per
//! observation (a gap in the first season: O(season_length) once).
//!
//! ## Saved state
//!
//! The state gained the last timestamp and the (inferred) interval; state
//! saved before has neither, restores as is and infers the interval afresh
//! (its first reading after the restore counts one interval).

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state, z_of};

/// The `kind` key.
pub(super) const KIND: &str = "holt-winters";

/// Largest accepted `season_length`.
const MAX_SEASON: u32 = 100_000;

/// √(π/2): scales a mean absolute residual to a standard deviation.
const MEAN_AD_TO_STD: f64 = 1.253314;

/// Positive timestamp differences whose median is the inferred interval.
const INFER_INTERVALS: usize = 5;

/// A gap of more than this many seasons resets the series to warm-up.
const RESET_GAP_SEASONS: u64 = 2;

/// Largest accepted `interval_ms`: a year.
const MAX_INTERVAL_MS: u64 = 365 * 24 * 3_600_000;

/// Parameters of a [`HoltWinters`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoltWintersConfig {
    /// Readings per season, `2 ..= 100000` (e.g. 1440 for a daily cycle of
    /// one reading a minute). Required.
    pub season_length: u32,
    /// Level smoothing, within `(0, 1)`. Default: 0.2.
    #[serde(default = "defaults::alpha")]
    pub alpha: f64,
    /// Trend smoothing, within `[0, 1)`; 0 keeps the trend at 0.
    /// Default: 0.01.
    #[serde(default = "defaults::beta")]
    pub beta: f64,
    /// Seasonal smoothing, within `[0, 1)`. Default: 0.1.
    #[serde(default = "defaults::gamma")]
    pub gamma: f64,
    /// Smoothing of the residual scale (an EWMA of |residual|), within
    /// `(0, 1]`. Default: 0.05.
    #[serde(default = "defaults::scale_alpha")]
    pub scale_alpha: f64,
    /// The residual, in estimated standard deviations, at which a value is
    /// flagged (its score equals `flag_at`), > 0. Default: 4.0: on a clean
    /// daily cycle (σ = 0.5, 288 readings a season) z 3.5 flags ≈ 9.5
    /// readings per 10 000, z 4 ≈ 3, while ≈ 97 % of 8σ spikes are still
    /// flagged (see `tests/detection_quality.rs`). The residual scale is an
    /// estimate from ≈ 1/scale_alpha residuals, so z has heavier tails than
    /// the normal.
    #[serde(default = "defaults::z_threshold")]
    pub z_threshold: f64,
    /// Floor of the residual standard deviation, in the value's units, ≥ 0.
    /// Default: 0.
    #[serde(default)]
    pub min_std: f64,
    /// The sampling interval in ms, `1 ..= 31536000000` (a year); a season
    /// spans `season_length × interval_ms`. Default: unset, inferred from
    /// the first timestamps of each series (see the [module docs](self)).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Score at or above which a value is flagged, within `(0, 1)`.
    /// Default: 0.5.
    #[serde(default = "defaults::flag_at")]
    pub flag_at: f64,
}

/// Defaults of the optional keys.
mod defaults {
    pub(super) fn alpha() -> f64 {
        0.2
    }
    pub(super) fn beta() -> f64 {
        0.01
    }
    pub(super) fn gamma() -> f64 {
        0.1
    }
    pub(super) fn scale_alpha() -> f64 {
        0.05
    }
    pub(super) fn z_threshold() -> f64 {
        4.0
    }
    pub(super) fn flag_at() -> f64 {
        0.5
    }
}

impl HoltWintersConfig {
    /// A configuration with `season_length` and every other key at its
    /// default.
    pub fn new(season_length: u32) -> HoltWintersConfig {
        HoltWintersConfig {
            season_length,
            alpha: defaults::alpha(),
            beta: defaults::beta(),
            gamma: defaults::gamma(),
            scale_alpha: defaults::scale_alpha(),
            z_threshold: defaults::z_threshold(),
            min_std: 0.0,
            interval_ms: None,
            flag_at: defaults::flag_at(),
        }
    }

    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        check::within(
            "season_length",
            self.season_length.into(),
            2,
            MAX_SEASON.into(),
        )?;
        check::unit("alpha", self.alpha, false, false)?;
        check::unit("beta", self.beta, true, false)?;
        check::unit("gamma", self.gamma, true, false)?;
        check::unit("scale_alpha", self.scale_alpha, false, true)?;
        check::positive("z_threshold", self.z_threshold)?;
        check::non_negative("min_std", self.min_std)?;
        if let Some(ms) = self.interval_ms {
            check::within("interval_ms", ms, 1, MAX_INTERVAL_MS)?;
        }
        check::flag_at_open(self.flag_at)
    }

    fn season_len(&self) -> u32 {
        self.season_length.clamp(2, MAX_SEASON)
    }

    /// A fresh detector.
    pub fn build(&self) -> HoltWinters {
        let season_length = self.season_len();
        HoltWinters {
            config: self.clone(),
            state: HwState {
                season_length,
                n: 0,
                level: 0.0,
                trend: 0.0,
                season: Vec::with_capacity(season_length as usize),
                scale: 0.0,
                scale_n: 0,
                last_ts: None,
                interval_ms: 0,
                intervals: Vec::with_capacity(INFER_INTERVALS),
            },
        }
    }

    /// A detector continuing from saved state. State saved with another
    /// `season_length` is refused ([`DetectError::Incompatible`]): the
    /// seasonal profile cannot be re-sampled from the state alone, so the
    /// caller starts a fresh series. Other parameters may change freely.
    pub fn restore(&self, bytes: &[u8]) -> Result<HoltWinters, DetectError> {
        let mut state: HwState = decode_state(KIND, bytes)?;
        if state.season_length != self.season_len() {
            return Err(DetectError::Incompatible(format!(
                "holt-winters state has season_length {}, configured {}",
                state.season_length, self.season_length
            )));
        }
        let l = state.season_length as usize;
        let expected_len = if state.n < l as u64 {
            state.n as usize
        } else {
            l
        };
        let finite = [state.level, state.trend, state.scale]
            .iter()
            .chain(&state.season)
            .all(|v| v.is_finite());
        if state.season.len() != expected_len || !finite || state.scale < 0.0 {
            return Err(DetectError::Corrupt(format!(
                "holt-winters state: {} seasonal values after {} intervals",
                state.season.len(),
                state.n
            )));
        }
        let inferring = state.interval_ms == 0 && state.intervals.len() < INFER_INTERVALS;
        if state.interval_ms < 0 || !inferring && !state.intervals.is_empty() {
            return Err(DetectError::Corrupt(format!(
                "holt-winters state: interval {} ms, {} intervals pending",
                state.interval_ms,
                state.intervals.len()
            )));
        }
        if state.intervals.iter().any(|&dt| dt <= 0) {
            return Err(DetectError::Corrupt(
                "holt-winters state: a pending interval is not positive".into(),
            ));
        }
        state.season.reserve_exact(l - state.season.len());
        state
            .intervals
            .reserve_exact(INFER_INTERVALS - state.intervals.len());
        Ok(HoltWinters {
            config: self.clone(),
            state,
        })
    }
}

/// The persisted part of a [`HoltWinters`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HwState {
    /// The season length the state was built for.
    season_length: u32,
    /// Season positions elapsed: readings observed plus intervals missed
    /// (saturating).
    n: u64,
    /// Level ℓ.
    level: f64,
    /// Trend b, per reading.
    trend: f64,
    /// During the first season: its raw values so far; then one seasonal
    /// offset per position.
    season: Vec<f64>,
    /// EWMA of |residual|.
    scale: f64,
    /// Residuals learned into `scale` (saturating).
    scale_n: u64,
    /// Timestamp of the last reading observed; absent in state saved before
    /// the model followed timestamps.
    #[serde(default)]
    last_ts: Option<i64>,
    /// The inferred sampling interval in ms; 0 until inferred.
    #[serde(default)]
    interval_ms: i64,
    /// The positive timestamp differences seen while inferring the interval
    /// (fewer than [`INFER_INTERVALS`]); empty once it is inferred.
    #[serde(default)]
    intervals: Vec<i64>,
}

/// Holt-Winters forecast-residual detector for one series (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct HoltWinters {
    config: HoltWintersConfig,
    state: HwState,
}

impl HoltWinters {
    /// Record `ts_ms` and return the intervals elapsed since the previous
    /// reading: `max(1, round(Δt / interval))`, or 1 while the interval is
    /// unknown (it is inferred here) or the time does not advance.
    fn advance_clock(&mut self, ts_ms: i64) -> u64 {
        let s = &mut self.state;
        let Some(prev) = s.last_ts.replace(ts_ms) else {
            return 1;
        };
        let dt = ts_ms.saturating_sub(prev);
        if dt <= 0 {
            return 1;
        }
        let interval = match self.config.interval_ms {
            // ≤ MAX_INTERVAL_MS after validation; clamped for an unvalidated one.
            Some(ms) => ms.clamp(1, MAX_INTERVAL_MS) as i64,
            None if s.interval_ms > 0 => s.interval_ms,
            None => {
                s.intervals.push(dt);
                if s.intervals.len() >= INFER_INTERVALS {
                    s.intervals.sort_unstable();
                    s.interval_ms = s.intervals[s.intervals.len() / 2];
                    s.intervals.clear();
                }
                return 1;
            }
        };
        // round(dt / interval) without overflow; dt, interval > 0.
        let k = dt / interval + i64::from(dt % interval >= interval - interval / 2);
        k.max(1) as u64
    }

    /// Back to warm-up, keeping the clock (last timestamp, interval).
    fn reset(&mut self) {
        let s = &mut self.state;
        s.n = 0;
        s.level = 0.0;
        s.trend = 0.0;
        s.season.clear();
        s.scale = 0.0;
        s.scale_n = 0;
    }

    /// During the first season: add a value; initialise once it is full.
    fn push_first(&mut self, value: f64) {
        let s = &mut self.state;
        let l = s.season_length as usize;
        s.season.push(value);
        s.n += 1;
        if s.season.len() == l {
            s.level = s.season.iter().sum::<f64>() / l as f64;
            s.trend = 0.0;
            let level = s.level;
            s.season.iter_mut().for_each(|v| *v -= level);
        }
    }
}

impl Detector for HoltWinters {
    fn observe(&mut self, ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let l = self.state.season_length as usize;
        let mut missed = self.advance_clock(ts_ms) - 1;
        if missed > RESET_GAP_SEASONS * l as u64 {
            self.reset();
            missed = 0;
        }
        if self.state.season.len() < l {
            // First season: fill the missed slots by interpolation, then
            // collect the value (and initialise once the season is full).
            match self.state.season.last() {
                Some(&prev) => {
                    let k = missed as f64 + 1.0;
                    let mut j = 0;
                    while j < missed && self.state.season.len() < l {
                        j += 1;
                        self.push_first(prev + (value - prev) * (j as f64 / k));
                    }
                    missed -= j;
                }
                None => missed = 0,
            }
            if self.state.season.len() < l {
                self.push_first(value);
                return Verdict::NONE;
            }
        }
        let c = &self.config;
        let s = &mut self.state;
        // Missed intervals: the position advances, the level follows the trend.
        s.n = s.n.saturating_add(missed);
        s.level += missed as f64 * s.trend;
        let widen = (1.0 + missed as f64 * c.alpha * c.alpha).sqrt();
        let i = (s.n % l as u64) as usize;
        let Some(&seasonal) = s.season.get(i) else {
            return Verdict::NONE;
        };
        let forecast = s.level + s.trend + seasonal;
        let residual = value - forecast;
        let sigma = MEAN_AD_TO_STD * s.scale * widen;
        let scoring = s.n >= 2 * l as u64;
        let (verdict, learned) = if scoring {
            let z = z_of(residual, sigma, c.min_std, forecast);
            let bound = c.z_threshold * sigma.max(c.min_std);
            let clipped = if bound > 0.0 {
                residual.clamp(-bound, bound)
            } else {
                residual
            };
            (Verdict::from_ratio(z / c.z_threshold, c.flag_at), clipped)
        } else {
            (Verdict::NONE, residual)
        };
        let x = forecast + learned;
        let level = c.alpha * (x - seasonal) + (1.0 - c.alpha) * (s.level + s.trend);
        s.trend = c.beta * (level - s.level) + (1.0 - c.beta) * s.trend;
        s.level = level;
        if let Some(slot) = s.season.get_mut(i) {
            *slot = c.gamma * (x - level) + (1.0 - c.gamma) * seasonal;
        }
        s.scale_n = s.scale_n.saturating_add(1);
        let a = c.scale_alpha.max(1.0 / s.scale_n as f64);
        s.scale += a * (learned.abs() / widen - s.scale);
        s.n = s.n.saturating_add(1);
        verdict
    }

    fn save(&self) -> Vec<u8> {
        encode_state(KIND, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::{assert_continuity, run};
    use crate::detect::{DetectorConfig, RangeConfig};

    const L: usize = 24;

    /// Deterministic uniform noise in [-amp, amp] (a 64-bit LCG).
    fn noise(seed: &mut u64, amp: f64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
    }

    /// 20 + 10·sin(2πt/24) + noise: peaks ≈ 30 at t ≡ 6, troughs ≈ 10 at t ≡ 18.
    fn periodic(seasons: usize) -> Vec<f64> {
        let mut seed = 7;
        (0..seasons * L)
            .map(|t| {
                let phase = 2.0 * std::f64::consts::PI * t as f64 / L as f64;
                20.0 + 10.0 * phase.sin() + noise(&mut seed, 0.3)
            })
            .collect()
    }

    fn flagged(verdicts: &[Verdict]) -> Vec<usize> {
        verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.flagged)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn flags_the_anomaly_not_the_seasonal_peaks() {
        let mut series = periodic(12);
        let anomaly = 9 * L + 18; // a trough, normally ≈ 10
        series[anomaly] += 6.0; // ≈ 16: well below the normal peaks of ≈ 30
        let mut hw = HoltWintersConfig::new(L as u32).build();
        let verdicts = run(&mut hw, &series);
        assert_eq!(flagged(&verdicts), [anomaly]);
        assert!(verdicts[anomaly].score > 0.95, "{:?}", verdicts[anomaly]);
        // Nothing is scored during the two warm-up seasons.
        assert!(verdicts[..2 * L].iter().all(|v| *v == Verdict::NONE));
        // The peaks score low.
        for peak in (2..12).map(|s| s * L + 6) {
            assert!(
                verdicts[peak].score < 0.2,
                "peak {peak}: {:?}",
                verdicts[peak]
            );
        }
        // A plain threshold that tolerates the normal range would have to sit
        // above the anomaly: it flags every peak and misses the anomaly.
        let mut range = RangeConfig {
            max: Some(25.0),
            ..RangeConfig::default()
        }
        .build();
        let by_range = flagged(&run(&mut range, &series));
        assert!(!by_range.contains(&anomaly));
        assert!((2..12).all(|s| by_range.contains(&(s * L + 6))));
    }

    #[test]
    fn follows_trend_and_level_shift() {
        // A slow trend on top of the season raises no flag.
        let mut series = periodic(12);
        for (t, v) in series.iter_mut().enumerate() {
            *v += 0.02 * t as f64;
        }
        let mut hw = HoltWintersConfig::new(L as u32).build();
        assert_eq!(flagged(&run(&mut hw, &series)), Vec::<usize>::new());
        // A lasting level shift is flagged, then learned.
        let mut series = periodic(20);
        for v in &mut series[10 * L..] {
            *v += 5.0;
        }
        let mut hw = HoltWintersConfig::new(L as u32).build();
        let f = flagged(&run(&mut hw, &series));
        assert_eq!(f.first(), Some(&(10 * L)));
        assert!(f.iter().all(|&i| i < 14 * L), "{f:?}");
    }

    #[test]
    fn exact_initialisation() {
        let mut hw = HoltWintersConfig::new(4).build();
        run(&mut hw, &[1.0, 3.0, 5.0, 3.0]);
        assert_eq!(hw.state.level, 3.0);
        assert_eq!(hw.state.season, [-2.0, 0.0, 2.0, 0.0]);
        // A perfect repeat of the season has zero residuals.
        run(&mut hw, &[1.0, 3.0, 5.0, 3.0, 1.0, 3.0, 5.0, 3.0]);
        assert!(hw.state.scale < 1e-12);
        assert!((hw.state.level - 3.0).abs() < 1e-12);
        let v = hw.observe(0, 1.0);
        assert!(!v.flagged && v.score < 1e-6, "{v:?}");
        assert_eq!(hw.observe(0, f64::NAN), Verdict::NONE);
        // (Near-)zero scale: any real deviation is extremely unusual.
        assert!(hw.observe(0, 3.5).score > 0.999);
        assert_eq!(hw.state.n, 14);
    }

    #[test]
    fn continuity_across_save_and_restore() {
        let mut series = periodic(5);
        series[4 * L + 3] -= 8.0;
        let cfg = DetectorConfig::HoltWinters(HoltWintersConfig::new(L as u32));
        for split in [0, 5, L, L + 1, 2 * L, 4 * L + 3, 5 * L] {
            assert_continuity(&cfg, &series, split);
        }
    }

    #[test]
    fn restore_refuses_another_season_length() {
        let mut hw = HoltWintersConfig::new(4).build();
        run(&mut hw, &[1.0, 2.0, 3.0]);
        let saved = hw.save();
        assert!(matches!(
            HoltWintersConfig::new(5).restore(&saved),
            Err(DetectError::Incompatible(_))
        ));
        let changed = HoltWintersConfig {
            alpha: 0.5,
            ..HoltWintersConfig::new(4)
        };
        let mut r = changed.restore(&saved).unwrap();
        r.observe(3, 4.0);
        assert_eq!(r.state.level, 2.5);
        assert!(r.state.season.capacity() >= 4);
        let mut bad = hw.state.clone();
        bad.n = 7;
        assert!(matches!(
            HoltWintersConfig::new(4).restore(&encode_state(KIND, &bad)),
            Err(DetectError::Corrupt(_))
        ));
    }

    /// `[0, 10, 0, −10]` repeated, one reading a second: the value at `ts`.
    fn square(ts_ms: i64) -> f64 {
        [0.0, 10.0, 0.0, -10.0][(ts_ms / 1000 % 4) as usize]
    }

    #[test]
    fn a_missing_reading_does_not_shift_the_phase() {
        // The reported repro: skip ts 12 s. Counting readings, every value
        // after the gap was scored against the wrong slot (score ≈ 0.999).
        let cfg = HoltWintersConfig {
            min_std: 0.1,
            ..HoltWintersConfig::new(4)
        };
        let mut hw = cfg.build();
        for t in 0..12 {
            hw.observe(t * 1000, square(t * 1000));
        }
        assert_eq!(hw.state.interval_ms, 1000);
        for t in 13..=40 {
            let v = hw.observe(t * 1000, square(t * 1000));
            assert!(v.score < 0.01, "ts {t} s: {v:?}");
        }
        // Slots kept their values; the level only followed the (zero) trend.
        assert_eq!(hw.state.n, 41);
        // A gap of a whole season and a bit, and jitter of ±200 ms.
        for (t, jitter) in [(47, 200), (48, -200), (49, 0), (50, 150)] {
            let v = hw.observe(t * 1000 + jitter, square(t * 1000));
            assert!(v.score < 0.01, "ts {t} s: {v:?}");
        }
        // A real anomaly after a gap is still flagged.
        assert_eq!(square(53_000), 10.0);
        assert!(hw.observe(53_000, 0.0).flagged);
    }

    #[test]
    fn the_interval_is_the_median_of_the_first_differences() {
        let mut hw = HoltWintersConfig::new(24).build();
        // One burst (10 ms) and one gap (5 s) among the first five.
        for ts in [0, 1000, 1010, 2010, 7010] {
            hw.observe(ts, 1.0);
            assert_eq!(hw.state.interval_ms, 0, "not yet at ts {ts}");
        }
        hw.observe(8010, 1.0);
        // Differences 1000, 10, 1000, 5000, 1000: the fifth decides.
        assert_eq!(hw.state.interval_ms, 1000);
        assert!(hw.state.intervals.is_empty());
        // Until then every reading counted one interval; now a 3 s gap is 3.
        assert_eq!(hw.state.n, 6);
        hw.observe(11_010, 1.0);
        assert_eq!(hw.state.n, 9);
        // A configured interval wins and is not inferred.
        let mut hw = HoltWintersConfig {
            interval_ms: Some(500),
            ..HoltWintersConfig::new(24)
        }
        .build();
        hw.observe(0, 1.0);
        hw.observe(1000, 1.0);
        assert_eq!(hw.state.n, 3);
        assert_eq!(hw.state.interval_ms, 0);
        // Duplicate or backward timestamps count one interval.
        hw.observe(1000, 1.0);
        hw.observe(0, 1.0);
        assert_eq!(hw.state.n, 5);
    }

    #[test]
    fn a_gap_in_the_first_season_is_interpolated() {
        let cfg = HoltWintersConfig {
            interval_ms: Some(1000),
            ..HoltWintersConfig::new(6)
        };
        let mut hw = cfg.build();
        // 0, 2, _, _, 8, 10: the missing 4 and 6 are interpolated.
        for t in [0, 1, 4, 5] {
            hw.observe(t * 1000, 2.0 * t as f64);
        }
        assert_eq!(hw.state.level, 5.0);
        assert_eq!(hw.state.season, [-5.0, -3.0, -1.0, 1.0, 3.0, 5.0]);
        // A gap that runs past the end of the first season: the rest of the
        // missed slots are skipped in the second.
        let mut hw = cfg.build();
        for t in [0, 1, 2, 3, 9] {
            hw.observe(t * 1000, t as f64);
        }
        assert_eq!(hw.state.season.len(), 6);
        assert_eq!(hw.state.n, 10);
    }

    #[test]
    fn a_gap_of_more_than_two_seasons_restarts_the_warm_up() {
        let cfg = HoltWintersConfig {
            min_std: 0.1,
            ..HoltWintersConfig::new(4)
        };
        let mut hw = cfg.build();
        for t in 0..20 {
            hw.observe(t * 1000, square(t * 1000));
        }
        // 2 seasons missed (8 intervals): kept, scored at once.
        assert!(hw.observe(28_000, 50.0).flagged);
        // 9 missed: back to warm-up, the interval kept.
        let v = hw.observe(38_000, square(38_000));
        assert_eq!(v, Verdict::NONE);
        assert_eq!((hw.state.n, hw.state.season.len()), (1, 1));
        assert_eq!(hw.state.interval_ms, 1000);
        let verdicts: Vec<Verdict> = (39..60)
            .map(|t| hw.observe(t * 1000, square(t * 1000)))
            .collect();
        // Scored again from the third season on (ts 46 s).
        assert!(verdicts[..7].iter().all(|v| *v == Verdict::NONE));
        assert!(verdicts[7..].iter().all(|v| !v.flagged));
    }

    #[test]
    fn the_first_value_after_a_gap_is_scored_against_a_wider_sigma() {
        let series = periodic(6);
        let cfg = HoltWintersConfig {
            interval_ms: Some(1000),
            ..HoltWintersConfig::new(L as u32)
        };
        let mut hw = cfg.build();
        run(&mut hw, &series[..5 * L]);
        let after = |missed: i64| {
            let mut d = hw.clone();
            let t = (5 * L) as i64 + missed;
            let v = series[t as usize] + 3.0;
            (d.observe(t * 1000, v), d.state.scale)
        };
        let (no_gap, scale) = after(0);
        let (gap, gap_scale) = after(20);
        // w = √(1 + 20·0.04) = 1.34: the same residual scores lower.
        assert!(gap.score < no_gap.score, "{gap:?} {no_gap:?}");
        assert!(gap.flagged && no_gap.flagged);
        // Both residuals are clipped, at z_threshold·σ·w: the scale learns
        // that divided by w, the same as without the gap.
        assert!(
            (gap_scale - scale).abs() < 1e-12 * scale,
            "{gap_scale} {scale}"
        );
    }

    #[test]
    fn continuity_with_gaps() {
        let series: Vec<(i64, f64)> = periodic(5)
            .into_iter()
            .enumerate()
            .filter(|(t, _)| !(10..13).contains(t) && !(70..90).contains(t) && t % 37 != 5)
            .map(|(t, v)| (t as i64 * 60_000 + (t as i64 % 3) * 500, v))
            .collect();
        let cfg = DetectorConfig::HoltWinters(HoltWintersConfig::new(L as u32));
        for split in [0, 3, 6, 12, L, 2 * L, 3 * L, series.len()] {
            crate::detect::testing::assert_continuity_ts(&cfg, &series, split);
        }
    }

    #[test]
    fn state_saved_before_the_clock_restores() {
        // The layout before `last_ts`, `interval_ms` and `intervals`.
        #[derive(Serialize)]
        struct Old {
            season_length: u32,
            n: u64,
            level: f64,
            trend: f64,
            season: Vec<f64>,
            scale: f64,
            scale_n: u64,
        }
        let old = Old {
            season_length: 4,
            n: 12,
            level: 0.0,
            trend: 0.0,
            season: vec![0.0, 10.0, 0.0, -10.0],
            scale: 0.1,
            scale_n: 8,
        };
        let mut hw = HoltWintersConfig::new(4)
            .restore(&encode_state(KIND, &old))
            .unwrap();
        assert_eq!((hw.state.last_ts, hw.state.interval_ms), (None, 0));
        // Its first reading counts one interval; then the clock is inferred.
        for t in 12..24 {
            assert!(!hw.observe(t * 1000, square(t * 1000)).flagged);
        }
        assert_eq!(hw.state.interval_ms, 1000);
        // Impossible clock state is refused.
        let mut bad = hw.state.clone();
        bad.intervals = vec![1000];
        assert!(matches!(
            HoltWintersConfig::new(4).restore(&encode_state(KIND, &bad)),
            Err(DetectError::Corrupt(_))
        ));
        bad.interval_ms = 0;
        bad.intervals = vec![-5];
        assert!(matches!(
            HoltWintersConfig::new(4).restore(&encode_state(KIND, &bad)),
            Err(DetectError::Corrupt(_))
        ));
    }

    #[test]
    fn validate_names_the_key() {
        let ok = HoltWintersConfig::new(24);
        assert!(ok.validate().is_ok());
        assert!(
            HoltWintersConfig::new(1)
                .validate()
                .unwrap_err()
                .starts_with("season_length")
        );
        for (c, key) in [
            (
                HoltWintersConfig {
                    alpha: 1.0,
                    ..ok.clone()
                },
                "alpha",
            ),
            (
                HoltWintersConfig {
                    beta: -0.1,
                    ..ok.clone()
                },
                "beta",
            ),
            (
                HoltWintersConfig {
                    gamma: 1.0,
                    ..ok.clone()
                },
                "gamma",
            ),
            (
                HoltWintersConfig {
                    scale_alpha: 0.0,
                    ..ok.clone()
                },
                "scale_alpha",
            ),
            (
                HoltWintersConfig {
                    z_threshold: 0.0,
                    ..ok.clone()
                },
                "z_threshold",
            ),
        ] {
            assert!(c.validate().unwrap_err().starts_with(key), "{key}");
        }
        let parsed: HoltWintersConfig = toml::from_str("season_length = 24").unwrap();
        assert_eq!(parsed, ok);
        let parsed: HoltWintersConfig =
            toml::from_str("season_length = 24\ninterval_ms = 60000").unwrap();
        assert_eq!(parsed.interval_ms, Some(60_000));
        for bad in [0, MAX_INTERVAL_MS + 1] {
            let c = HoltWintersConfig {
                interval_ms: Some(bad),
                ..ok.clone()
            };
            assert!(c.validate().unwrap_err().starts_with("interval_ms"));
        }
    }
}
