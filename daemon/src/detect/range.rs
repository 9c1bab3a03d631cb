//! `range`: static bounds.
//!
//! A value below `min` or above `max` scores 1; the bounds themselves are
//! inside. Within `margin` of a bound the score ramps linearly from 0 (at
//! `margin` away) towards 1 (at the bound, staying below 1 inside), so
//! `flag_at < 1` turns the margin into an early warning:
//!
//! ```text
//! score = 1                                 outside [min, max]
//!       = 1 − distance_to_nearest_bound / margin   within the margin (< 1)
//!       = 0                                 elsewhere
//! ```
//!
//! With the default `flag_at = 1` only values outside the bounds are
//! flagged. The detector has no state. Time O(1) per observation.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state};

/// The `kind` key.
pub(super) const KIND: &str = "range";

/// The largest double below 1: the ceiling of in-range scores.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// Parameters of a [`Range`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RangeConfig {
    /// Lower bound (inclusive); at least one of `min` and `max` is required.
    /// Default: unset.
    pub min: Option<f64>,
    /// Upper bound (inclusive). Default: unset.
    pub max: Option<f64>,
    /// Width inside the bounds where the score ramps up, ≥ 0, in the value's
    /// units. Default: 0 (no ramp).
    pub margin: f64,
    /// Score at or above which a value is flagged, within `(0, 1]`.
    /// Default: 1.0 (only values outside the bounds).
    pub flag_at: f64,
}

impl Default for RangeConfig {
    fn default() -> Self {
        RangeConfig {
            min: None,
            max: None,
            margin: 0.0,
            flag_at: 1.0,
        }
    }
}

impl RangeConfig {
    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.min.is_none() && self.max.is_none() {
            return Err("min, max: set at least one bound".into());
        }
        for (key, v) in [("min", self.min), ("max", self.max)] {
            match v {
                Some(v) if !v.is_finite() => {
                    return Err(format!("{key} = {v} must be a finite number"));
                }
                _ => {}
            }
        }
        match (self.min, self.max) {
            (Some(lo), Some(hi)) if lo > hi => {
                return Err(format!("min = {lo} must not be greater than max = {hi}"));
            }
            _ => {}
        }
        check::non_negative("margin", self.margin)?;
        check::flag_at_closed(self.flag_at)
    }

    /// A detector.
    pub fn build(&self) -> Range {
        Range {
            config: self.clone(),
        }
    }

    /// A detector "continuing" from saved state: there is none, but the
    /// envelope is still checked so that a key that changed kind is noticed.
    pub fn restore(&self, bytes: &[u8]) -> Result<Range, DetectError> {
        decode_state::<()>(KIND, bytes)?;
        Ok(self.build())
    }
}

/// Static-bounds detector (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Range {
    config: RangeConfig,
}

impl Range {
    fn score(&self, value: f64) -> f64 {
        let c = &self.config;
        if c.min.is_some_and(|lo| value < lo) || c.max.is_some_and(|hi| value > hi) {
            return 1.0;
        }
        if c.margin.is_nan() || c.margin <= 0.0 {
            return 0.0;
        }
        let distance = c
            .min
            .map(|lo| value - lo)
            .into_iter()
            .chain(c.max.map(|hi| hi - value))
            .fold(f64::INFINITY, f64::min);
        if distance >= c.margin {
            0.0
        } else {
            (1.0 - distance / c.margin).min(BELOW_ONE)
        }
    }
}

impl Detector for Range {
    fn observe(&mut self, _ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        Verdict::from_score(self.score(value), self.config.flag_at)
    }

    fn save(&self) -> Vec<u8> {
        encode_state(KIND, &())
    }

    fn is_stateful(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::detect::testing::assert_continuity;

    fn range(min: Option<f64>, max: Option<f64>, margin: f64) -> Range {
        RangeConfig {
            min,
            max,
            margin,
            ..RangeConfig::default()
        }
        .build()
    }

    #[test]
    fn bounds_are_inclusive() {
        let mut d = range(Some(0.0), Some(40.0), 0.0);
        assert_eq!(d.observe(0, 0.0), Verdict::NONE);
        assert_eq!(d.observe(0, 40.0), Verdict::NONE);
        assert_eq!(
            d.observe(0, 40.01),
            Verdict {
                score: 1.0,
                flagged: true
            }
        );
        assert_eq!(
            d.observe(0, -0.01),
            Verdict {
                score: 1.0,
                flagged: true
            }
        );
        assert_eq!(d.observe(0, f64::INFINITY), Verdict::NONE);
        assert_eq!(d.observe(0, f64::NAN), Verdict::NONE);
        let mut d = range(None, Some(10.0), 0.0);
        assert!(!d.observe(0, -1e300).flagged);
        assert!(d.observe(0, 11.0).flagged);
    }

    #[test]
    fn margin_ramps_below_one() {
        let mut d = range(Some(0.0), Some(40.0), 4.0);
        assert_eq!(d.observe(0, 20.0).score, 0.0);
        assert_eq!(d.observe(0, 36.0).score, 0.0);
        assert_eq!(d.observe(0, 37.0).score, 0.25);
        assert_eq!(d.observe(0, 39.0).score, 0.75);
        assert_eq!(d.observe(0, 2.0).score, 0.5);
        let at_bound = d.observe(0, 40.0);
        assert!(at_bound.score < 1.0 && at_bound.score > 0.999 && !at_bound.flagged);
        // flag_at < 1 makes the margin an early warning.
        let mut d = RangeConfig {
            max: Some(40.0),
            margin: 4.0,
            flag_at: 0.5,
            ..RangeConfig::default()
        }
        .build();
        assert!(!d.observe(0, 37.0).flagged);
        assert!(d.observe(0, 38.0).flagged);
        // Overlapping margins: the nearer bound counts.
        let mut d = range(Some(0.0), Some(1.0), 10.0);
        assert!((d.observe(0, 0.5).score - 0.95).abs() < 1e-12);
    }

    #[test]
    fn stateless_save_and_restore() {
        let cfg = DetectorConfig::Range(RangeConfig {
            min: Some(1.0),
            ..RangeConfig::default()
        });
        assert!(!cfg.build().is_stateful());
        assert_continuity(&cfg, &[3.0, 0.0, 2.0, -5.0], 2);
        let other = DetectorConfig::Ewma(Default::default()).build().save();
        assert!(cfg.restore(&other).is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let c = |min, max| RangeConfig {
            min,
            max,
            ..RangeConfig::default()
        };
        assert!(
            c(None, None)
                .validate()
                .unwrap_err()
                .starts_with("min, max")
        );
        assert!(
            c(Some(f64::NAN), None)
                .validate()
                .unwrap_err()
                .starts_with("min")
        );
        assert!(
            c(Some(2.0), Some(1.0))
                .validate()
                .unwrap_err()
                .starts_with("min")
        );
        assert!(
            RangeConfig {
                margin: -1.0,
                ..c(Some(0.0), None)
            }
            .validate()
            .unwrap_err()
            .starts_with("margin")
        );
        assert!(c(Some(1.0), Some(1.0)).validate().is_ok());
    }
}
