//! `rate`: spikes, as a rate of change beyond `max_rate` per second.
//!
//! Each value is compared with the previous one of the series:
//! `rate = |Δvalue| / Δt` with Δt in seconds. Score: `x = rate / max_rate`
//! through the shared mapping, so a value is flagged exactly when its rate
//! reaches `max_rate`. The first value of a series is never flagged (there is
//! nothing to compare with). A value whose timestamp is not after the
//! previous one (Δt ≤ 0: a duplicate or out-of-order reading) is not scored
//! and not remembered, so the next in-order value is compared with the newest
//! value seen. Memory O(1); time O(1) per observation.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state};

/// The `kind` key.
pub(super) const KIND: &str = "rate";

/// Parameters of a [`Rate`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Largest normal |Δvalue| per second, in the value's units, > 0.
    /// Required.
    pub max_rate: f64,
    /// Score at or above which a value is flagged, within `(0, 1)`.
    /// Default: 0.5.
    #[serde(default = "default_flag_at")]
    pub flag_at: f64,
}

fn default_flag_at() -> f64 {
    0.5
}

impl RateConfig {
    /// A configuration with `max_rate` and the default `flag_at`.
    pub fn new(max_rate: f64) -> RateConfig {
        RateConfig {
            max_rate,
            flag_at: default_flag_at(),
        }
    }

    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        check::positive("max_rate", self.max_rate)?;
        check::flag_at_open(self.flag_at)
    }

    /// A fresh detector.
    pub fn build(&self) -> Rate {
        Rate {
            config: self.clone(),
            state: RateState::default(),
        }
    }

    /// A detector continuing from saved state. The state (the previous value
    /// and its time) does not depend on the parameters, so it is kept.
    pub fn restore(&self, bytes: &[u8]) -> Result<Rate, DetectError> {
        let state: RateState = decode_state(KIND, bytes)?;
        match state.last {
            Some((_, v)) if !v.is_finite() => {
                return Err(DetectError::Corrupt(format!("rate previous value {v}")));
            }
            _ => {}
        }
        Ok(Rate {
            config: self.clone(),
            state,
        })
    }
}

/// The persisted part of a [`Rate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateState {
    /// The newest value seen and its timestamp (ms).
    last: Option<(i64, f64)>,
}

/// Rate-of-change detector for one series (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Rate {
    config: RateConfig,
    state: RateState,
}

impl Detector for Rate {
    fn observe(&mut self, ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let Some((last_ts, last_value)) = self.state.last else {
            self.state.last = Some((ts_ms, value));
            return Verdict::NONE;
        };
        // i128: no overflow for any pair of i64 timestamps.
        let dt_ms = i128::from(ts_ms) - i128::from(last_ts);
        if dt_ms <= 0 {
            return Verdict::NONE;
        }
        self.state.last = Some((ts_ms, value));
        let rate = (value - last_value).abs() / (dt_ms as f64 / 1000.0);
        Verdict::from_ratio(rate / self.config.max_rate, self.config.flag_at)
    }

    fn save(&self) -> Vec<u8> {
        encode_state(KIND, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::detect::testing::assert_continuity_ts;

    #[test]
    fn known_rates() {
        let mut d = RateConfig::new(2.0).build();
        assert_eq!(d.observe(0, 10.0), Verdict::NONE); // first value
        // +1 in 1 s: rate 1 → x 0.5 → score 0.2.
        let v = d.observe(1_000, 11.0);
        assert!((v.score - 0.2).abs() < 1e-12 && !v.flagged);
        // −4 in 2 s: rate 2 = max_rate → score exactly 0.5, flagged.
        let v = d.observe(3_000, 7.0);
        assert_eq!(
            v,
            Verdict {
                score: 0.5,
                flagged: true
            }
        );
        // +3 in 0.5 s: rate 6 → x 3 → score 0.9.
        let v = d.observe(3_500, 10.0);
        assert!((v.score - 0.9).abs() < 1e-12 && v.flagged);
        // No change.
        assert_eq!(d.observe(4_500, 10.0), Verdict::NONE);
    }

    #[test]
    fn non_increasing_timestamps_are_skipped() {
        let mut d = RateConfig::new(1.0).build();
        d.observe(10_000, 0.0);
        assert_eq!(d.observe(10_000, 50.0), Verdict::NONE); // Δt = 0
        assert_eq!(d.observe(9_000, 50.0), Verdict::NONE); // Δt < 0
        assert_eq!(d.state.last, Some((10_000, 0.0)));
        // Compared with the newest in-order value: +0.5 in 1 s.
        assert!(!d.observe(11_000, 0.5).flagged);
        assert_eq!(d.observe(12_000, f64::NAN), Verdict::NONE);
        assert_eq!(d.observe(i64::MIN, 3.0), Verdict::NONE);
        assert!(d.observe(i64::MAX, 3.0).score < 1e-20);
    }

    #[test]
    fn continuity_across_save_and_restore() {
        let series: Vec<(i64, f64)> = (0..30)
            .map(|i| {
                (
                    i * 700 + (i % 4) * 90,
                    (i as f64 * 0.4).sin() + if i == 20 { 5.0 } else { 0.0 },
                )
            })
            .collect();
        let cfg = DetectorConfig::Rate(RateConfig::new(1.5));
        for split in [0, 1, 2, 19, 20, 30] {
            assert_continuity_ts(&cfg, &series, split);
        }
    }

    #[test]
    fn validate_names_the_key() {
        assert!(
            RateConfig::new(0.0)
                .validate()
                .unwrap_err()
                .starts_with("max_rate")
        );
        assert!(
            RateConfig::new(f64::INFINITY)
                .validate()
                .unwrap_err()
                .starts_with("max_rate")
        );
        assert!(
            RateConfig {
                flag_at: 2.0,
                ..RateConfig::new(1.0)
            }
            .validate()
            .unwrap_err()
            .starts_with("flag_at")
        );
    }
}
