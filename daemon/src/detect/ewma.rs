//! `ewma`: z-score against an exponentially weighted mean and variance.
//!
//! Each value is scored against the mean and variance learned *before* it,
//! then learned: with `d = x − mean` and `a = max(alpha, 1/n)` (the n-th value),
//!
//! ```text
//! mean ← mean + a·d
//! var  ← (1 − a)·(var + a·d²)
//! ```
//!
//! The `1/n` term makes the first values an exact running mean and
//! (population) variance, so the warm-up does not start from a zero variance;
//! after `1/alpha` values the estimator is the usual EWMA. Every value is
//! learned, anomalous or not, so a lasting level shift is flagged for a while
//! and then becomes the new normal. Score: `x = |z| / z_threshold` through
//! the shared mapping (flagged when `|z| ≥ z_threshold`). Memory O(1); time
//! O(1) per observation.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state, z_of};

/// The `kind` key.
pub(super) const KIND: &str = "ewma";

/// Parameters of an [`Ewma`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EwmaConfig {
    /// Smoothing factor of mean and variance, within `(0, 1]`; larger adapts
    /// faster. Default: 0.1.
    pub alpha: f64,
    /// The |z| at which a value is flagged (its score equals `flag_at`),
    /// > 0. Default: 3.0.
    pub z_threshold: f64,
    /// Readings learned before any is scored, ≥ 2. Default: 10.
    pub warmup: u32,
    /// Floor of the standard deviation, in the value's units, ≥ 0; set it to
    /// the sensor's resolution to keep one-step changes of a long-constant
    /// signal from scoring 1. Default: 0.
    pub min_std: f64,
    /// Score at or above which a value is flagged, within `(0, 1)`.
    /// Default: 0.5.
    pub flag_at: f64,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            alpha: 0.1,
            z_threshold: 3.0,
            warmup: 10,
            min_std: 0.0,
            flag_at: 0.5,
        }
    }
}

impl EwmaConfig {
    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        check::unit("alpha", self.alpha, false, true)?;
        check::positive("z_threshold", self.z_threshold)?;
        check::within("warmup", self.warmup.into(), 2, u32::MAX.into())?;
        check::non_negative("min_std", self.min_std)?;
        check::flag_at_open(self.flag_at)
    }

    /// A fresh detector.
    pub fn build(&self) -> Ewma {
        Ewma {
            config: self.clone(),
            state: EwmaState::default(),
        }
    }

    /// A detector continuing from saved state. The state (count, mean,
    /// variance) does not depend on the parameters, so it is kept as is.
    pub fn restore(&self, bytes: &[u8]) -> Result<Ewma, DetectError> {
        let state: EwmaState = decode_state(KIND, bytes)?;
        if !(state.mean.is_finite() && state.var.is_finite() && state.var >= 0.0) {
            return Err(DetectError::Corrupt(format!(
                "ewma mean {} / variance {}",
                state.mean, state.var
            )));
        }
        Ok(Ewma {
            config: self.clone(),
            state,
        })
    }
}

/// The persisted part of an [`Ewma`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EwmaState {
    /// Values learned (saturating).
    n: u64,
    /// Weighted mean.
    mean: f64,
    /// Weighted variance.
    var: f64,
}

/// EWMA z-score detector for one series (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Ewma {
    config: EwmaConfig,
    state: EwmaState,
}

impl Detector for Ewma {
    fn observe(&mut self, _ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let c = &self.config;
        let s = &mut self.state;
        let d = value - s.mean;
        let verdict = if s.n >= u64::from(c.warmup.max(1)) {
            let z = z_of(d, s.var.sqrt(), c.min_std, s.mean);
            Verdict::from_ratio(z / c.z_threshold, c.flag_at)
        } else {
            Verdict::NONE
        };
        s.n = s.n.saturating_add(1);
        // n ≥ 1 here; precision loss of the cast only matters past 2^53.
        let a = c.alpha.max(1.0 / s.n as f64).clamp(0.0, 1.0);
        s.mean += a * d;
        s.var = (1.0 - a) * (s.var + a * d * d);
        verdict
    }

    fn save(&self) -> Vec<u8> {
        encode_state(KIND, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::detect::testing::{assert_continuity, run};

    fn config(warmup: u32) -> EwmaConfig {
        EwmaConfig {
            warmup,
            ..EwmaConfig::default()
        }
    }

    #[test]
    fn warmup_is_an_exact_running_mean_and_variance() {
        let mut d = config(4).build();
        for (i, v) in [2.0, 4.0, 4.0, 4.0].into_iter().enumerate() {
            assert_eq!(d.observe(i as i64, v), Verdict::NONE);
        }
        // Population mean 3.5, variance 0.75 of [2, 4, 4, 4].
        assert_eq!(d.state.mean, 3.5);
        assert!((d.state.var - 0.75).abs() < 1e-12);
        // z just above 3 (the threshold) scores just above 0.5 …
        let v = d.clone().observe(4, 3.5 + 3.0001 * 0.75f64.sqrt());
        assert!(v.flagged);
        assert!((v.score - 0.5).abs() < 1e-4);
        // … and just below it, just below.
        let v = d.observe(4, 3.5 - 2.9999 * 0.75f64.sqrt());
        assert!(!v.flagged);
        assert!((v.score - 0.5).abs() < 1e-4);
    }

    #[test]
    fn known_scores() {
        // After warm-up on 0, 2, 0, 2, …: mean ≈ 1, std ≈ 1.
        let mut d = config(10).build();
        let warm: Vec<f64> = (0..10)
            .map(|i| if i % 2 == 0 { 0.0 } else { 2.0 })
            .collect();
        for v in run(&mut d, &warm) {
            assert_eq!(v, Verdict::NONE);
        }
        assert!((d.state.mean - 1.0).abs() < 1e-12);
        assert!((d.state.var - 1.0).abs() < 1e-12);
        // z = 2 → x = 2/3 → score = (4/9) / (4/9 + 1) = 4/13.
        let v = d.observe(10, 3.0);
        assert!((v.score - 4.0 / 13.0).abs() < 1e-9, "{v:?}");
        assert!(!v.flagged);
        // A big spike is flagged.
        let v = d.observe(11, 20.0);
        assert!(v.flagged && v.score > 0.95, "{v:?}");
    }

    #[test]
    fn constant_signal_and_non_finite_values() {
        let mut d = config(3).build();
        for v in run(&mut d, &[5.0; 20]) {
            assert!(!v.flagged && v.score == 0.0);
        }
        assert_eq!(d.observe(20, f64::NAN), Verdict::NONE);
        assert_eq!(d.observe(21, f64::INFINITY), Verdict::NONE);
        assert_eq!(d.state.n, 20);
        // Zero variance: any change is extremely unusual …
        let v = d.clone().observe(22, 5.1);
        assert!(v.flagged && v.score > 0.999_999, "{v:?}");
        // … unless min_std says what a normal step is.
        let mut d = EwmaConfig {
            warmup: 3,
            min_std: 0.1,
            ..EwmaConfig::default()
        }
        .build();
        run(&mut d, &[5.0; 20]);
        assert!(!d.observe(20, 5.1).flagged);
    }

    #[test]
    fn continuity_across_save_and_restore() {
        let series: Vec<f64> = (0..60)
            .map(|i| 10.0 + (i as f64 * 0.7).sin() + if i == 45 { 8.0 } else { 0.0 })
            .collect();
        let cfg = DetectorConfig::Ewma(EwmaConfig::default());
        for split in [0, 5, 10, 30, 59] {
            assert_continuity(&cfg, &series, split);
        }
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |c: EwmaConfig| c.validate().unwrap_err();
        assert!(
            bad(EwmaConfig {
                alpha: 0.0,
                ..EwmaConfig::default()
            })
            .starts_with("alpha")
        );
        assert!(
            bad(EwmaConfig {
                z_threshold: -1.0,
                ..EwmaConfig::default()
            })
            .starts_with("z_threshold")
        );
        assert!(bad(config(1)).starts_with("warmup"));
        assert!(
            bad(EwmaConfig {
                min_std: f64::NAN,
                ..EwmaConfig::default()
            })
            .starts_with("min_std")
        );
        assert!(
            bad(EwmaConfig {
                flag_at: 1.0,
                ..EwmaConfig::default()
            })
            .starts_with("flag_at")
        );
        assert!(EwmaConfig::default().validate().is_ok());
    }
}
