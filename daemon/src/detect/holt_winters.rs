//! `holt-winters`: additive Holt-Winters forecast, scored on the residual.
//!
//! The model keeps a level `ℓ`, a trend `b` and one seasonal offset per
//! position in a season of `season_length` readings (positions are counted in
//! readings, so the series should be sampled regularly). Each value `x` at
//! season position `i` is first forecast and scored, then learned:
//!
//! ```text
//! forecast = ℓ + b + s[i]            residual r = x − forecast
//! z        = |r| / (1.2533 · scale)  (1.2533 · E|r| estimates σ of normal residuals)
//! ℓ'   = α·(x' − s[i]) + (1 − α)·(ℓ + b)
//! b'   = β·(ℓ' − ℓ) + (1 − β)·b
//! s[i] = γ·(x' − ℓ') + (1 − γ)·s[i]
//! scale ← scale + a·(|r'| − scale),  a = max(scale_alpha, 1/k) for the k-th residual
//! ```
//!
//! where `x' = forecast + r'` and `r'` is the residual clipped to
//! `±z_threshold · σ` once scoring has begun (a Huber-style robust update):
//! a spike barely disturbs the model, while a lasting level shift is still
//! learned, since the clipped steps and the growing scale catch up with it.
//!
//! Warm-up: the first season initialises the model (`ℓ` = its mean, `b` = 0,
//! `s[i]` = its deviations from the mean); the second season runs the model
//! and learns the residual scale; values are scored from the third season on.
//! Score: `x = z / z_threshold` through the shared mapping. Because the
//! forecast follows the season, normal periodic peaks score low where a
//! static threshold would flag them. Memory O(season_length); time O(1) per
//! observation.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state, z_of};

/// The `kind` key.
pub(super) const KIND: &str = "holt-winters";

/// Largest accepted `season_length`.
const MAX_SEASON: u32 = 100_000;

/// √(π/2): scales a mean absolute residual to a standard deviation.
const MEAN_AD_TO_STD: f64 = 1.253314;

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
    /// flagged (its score equals `flag_at`), > 0. Default: 3.5.
    #[serde(default = "defaults::z_threshold")]
    pub z_threshold: f64,
    /// Floor of the residual standard deviation, in the value's units, ≥ 0.
    /// Default: 0.
    #[serde(default)]
    pub min_std: f64,
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
        3.5
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
                "holt-winters state: {} seasonal values after {} readings",
                state.season.len(),
                state.n
            )));
        }
        state.season.reserve_exact(l - state.season.len());
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
    /// Readings observed (saturating).
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
}

/// Holt-Winters forecast-residual detector for one series (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct HoltWinters {
    config: HoltWintersConfig,
    state: HwState,
}

impl Detector for HoltWinters {
    fn observe(&mut self, _ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let c = &self.config;
        let s = &mut self.state;
        let l = s.season_length as usize;
        if s.season.len() < l {
            // First season: collect, then initialise.
            s.season.push(value);
            s.n += 1;
            if s.season.len() == l {
                s.level = s.season.iter().sum::<f64>() / l as f64;
                s.trend = 0.0;
                let level = s.level;
                s.season.iter_mut().for_each(|v| *v -= level);
            }
            return Verdict::NONE;
        }
        let i = (s.n % l as u64) as usize;
        let Some(&seasonal) = s.season.get(i) else {
            return Verdict::NONE;
        };
        let forecast = s.level + s.trend + seasonal;
        let residual = value - forecast;
        let sigma = MEAN_AD_TO_STD * s.scale;
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
        s.scale += a * (learned.abs() - s.scale);
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
    }
}
