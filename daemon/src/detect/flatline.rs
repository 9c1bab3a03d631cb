//! `flatline`: a stuck sensor, whose values stop changing.
//!
//! The detector tracks the current *run*: the newest consecutive values that
//! all lie within a band of width `epsilon` (max − min ≤ `epsilon`; with the
//! default 0, identical values). A value that widens the band beyond
//! `epsilon` starts a new run with itself. The limit is `count` values in the
//! run and/or `seconds` between the run's first and newest value; the score
//! ramps linearly towards the nearer limit,
//!
//! ```text
//! score = max((n − 1) / (count − 1), duration / seconds)   clamped to [0, 1]
//! ```
//!
//! so a value that just changed scores 0 and the value that reaches a limit
//! scores 1. With the default `flag_at = 1` a value is flagged once a limit is
//! reached, and every further value of the stuck run is flagged too. Memory
//! O(1); time O(1) per observation.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state};

/// The `kind` key.
pub(super) const KIND: &str = "flatline";

/// `count` when neither `count` nor `seconds` is given.
const DEFAULT_COUNT: u32 = 10;

/// Parameters of a [`Flatline`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlatlineConfig {
    /// Values within `epsilon` that make a run stuck, ≥ 2. Default: 10 when
    /// `seconds` is not set, otherwise unset (set both to flag on whichever
    /// limit is reached first).
    pub count: Option<u32>,
    /// Seconds between a run's first and newest value that make it stuck,
    /// > 0. Default: unset.
    pub seconds: Option<f64>,
    /// Largest spread (max − min) of a run's values that still counts as no
    /// change, ≥ 0, in the value's units. Default: 0 (identical values).
    pub epsilon: f64,
    /// Score at or above which a value is flagged, within `(0, 1]`.
    /// Default: 1.0 (flag once a limit is reached).
    pub flag_at: f64,
}

impl Default for FlatlineConfig {
    fn default() -> Self {
        FlatlineConfig {
            count: None,
            seconds: None,
            epsilon: 0.0,
            flag_at: 1.0,
        }
    }
}

impl FlatlineConfig {
    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(count) = self.count {
            check::within("count", count.into(), 2, u32::MAX.into())?;
        }
        if let Some(seconds) = self.seconds {
            check::positive("seconds", seconds)?;
        }
        check::non_negative("epsilon", self.epsilon)?;
        check::flag_at_closed(self.flag_at)
    }

    /// The limits in force: `count` (default 10 when `seconds` is unset) and
    /// `seconds` in ms.
    fn limits(&self) -> (Option<u64>, Option<f64>) {
        let count = match (self.count, self.seconds) {
            (None, None) => Some(DEFAULT_COUNT),
            (count, _) => count,
        };
        (
            count.map(|c| u64::from(c.max(2))),
            self.seconds.map(|s| s * 1000.0),
        )
    }

    /// A fresh detector.
    pub fn build(&self) -> Flatline {
        let (count, ms) = self.limits();
        Flatline {
            config: self.clone(),
            count,
            ms,
            state: FlatlineState::default(),
        }
    }

    /// A detector continuing from saved state. The run is kept; if a smaller
    /// `epsilon` no longer holds its spread, the run restarts at its newest
    /// value (as if that value had just changed).
    pub fn restore(&self, bytes: &[u8]) -> Result<Flatline, DetectError> {
        let mut state: FlatlineState = decode_state(KIND, bytes)?;
        if let Some(run) = &mut state.run {
            let sane = run.n >= 1
                && run.lo.is_finite()
                && run.hi.is_finite()
                && run.last.is_finite()
                && run.lo <= run.last
                && run.last <= run.hi;
            if !sane {
                return Err(DetectError::Corrupt(format!("flatline run {run:?}")));
            }
            if run.hi - run.lo > self.epsilon {
                *run = Run::start(run.newest_ts, run.last);
            }
        }
        let mut d = self.build();
        d.state = state;
        Ok(d)
    }
}

/// The persisted part of a [`Flatline`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatlineState {
    /// The current run; `None` before the first value.
    run: Option<Run>,
}

/// A run of values within `epsilon` of each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Run {
    /// Values in the run, ≥ 1.
    n: u64,
    /// Timestamp of the run's first value (ms).
    start_ts: i64,
    /// Newest timestamp seen in the run (ms).
    newest_ts: i64,
    /// Smallest value of the run.
    lo: f64,
    /// Largest value of the run.
    hi: f64,
    /// The most recent value.
    last: f64,
}

impl Run {
    fn start(ts: i64, value: f64) -> Run {
        Run {
            n: 1,
            start_ts: ts,
            newest_ts: ts,
            lo: value,
            hi: value,
            last: value,
        }
    }
}

/// Stuck-sensor detector for one series (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Flatline {
    config: FlatlineConfig,
    /// Effective count limit.
    count: Option<u64>,
    /// Effective time limit, ms.
    ms: Option<f64>,
    state: FlatlineState,
}

impl Detector for Flatline {
    fn observe(&mut self, ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let run = match &mut self.state.run {
            Some(run) if run.hi.max(value) - run.lo.min(value) <= self.config.epsilon => {
                run.n = run.n.saturating_add(1);
                run.lo = run.lo.min(value);
                run.hi = run.hi.max(value);
                run.last = value;
                run.newest_ts = run.newest_ts.max(ts_ms);
                run
            }
            slot => slot.insert(Run::start(ts_ms, value)),
        };
        let mut score: f64 = 0.0;
        if let Some(count) = self.count {
            score = score.max((run.n - 1) as f64 / (count - 1) as f64);
        }
        if let Some(ms) = self.ms {
            let duration = i128::from(run.newest_ts) - i128::from(run.start_ts);
            score = score.max(duration as f64 / ms);
        }
        Verdict::from_score(score, self.config.flag_at)
    }

    fn save(&self) -> Vec<u8> {
        encode_state(KIND, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::detect::testing::{assert_continuity_ts, run};

    fn scores(v: &[Verdict]) -> Vec<f64> {
        v.iter().map(|v| v.score).collect()
    }

    #[test]
    fn count_ramps_and_flags_at_the_limit() {
        let mut d = FlatlineConfig {
            count: Some(5),
            ..FlatlineConfig::default()
        }
        .build();
        let v = run(&mut d, &[1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0]);
        assert_eq!(scores(&v), [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.0]);
        let flags: Vec<bool> = v.iter().map(|v| v.flagged).collect();
        assert_eq!(
            flags,
            [false, false, false, false, false, true, true, false]
        );
    }

    #[test]
    fn default_is_ten_readings() {
        let mut d = FlatlineConfig::default().build();
        let v = run(&mut d, &[4.0; 11]);
        assert!(!v[8].flagged && v[9].flagged && v[10].flagged);
        assert!((v[8].score - 8.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn seconds_only_and_both() {
        // seconds only: count is off.
        let mut d = FlatlineConfig {
            seconds: Some(60.0),
            ..FlatlineConfig::default()
        }
        .build();
        assert_eq!(d.observe(0, 1.0).score, 0.0);
        assert_eq!(d.observe(15_000, 1.0).score, 0.25);
        assert_eq!(d.observe(30_000, 1.0).score, 0.5);
        let v = d.observe(60_000, 1.0);
        assert!(v.flagged && v.score == 1.0);
        // An out-of-order value does not shorten the run.
        assert!(d.observe(59_000, 1.0).flagged);
        // both: whichever limit comes first.
        let cfg = FlatlineConfig {
            count: Some(3),
            seconds: Some(3600.0),
            ..FlatlineConfig::default()
        };
        let mut d = cfg.build();
        let v = run(&mut d, &[7.0, 7.0, 7.0]);
        assert!(v[2].flagged);
        let mut d = cfg.build();
        d.observe(0, 7.0);
        assert!(d.observe(3_600_000, 7.0).flagged);
    }

    #[test]
    fn epsilon_band() {
        let cfg = FlatlineConfig {
            count: Some(4),
            epsilon: 0.25,
            ..FlatlineConfig::default()
        };
        let mut d = cfg.build();
        // Jitter within a 0.25 band is "no change" …
        let v = run(&mut d, &[10.0, 10.125, 9.875, 10.125]);
        assert!(v[3].flagged);
        // … a value widening the band beyond it starts a new run.
        let v = d.observe(4_000, 10.25);
        assert_eq!(v, Verdict::NONE);
        // Slow drift is not a flatline: the band keeps growing.
        let mut d = cfg.build();
        let drift: Vec<f64> = (0..20).map(|i| i as f64 * 0.15).collect();
        assert!(run(&mut d, &drift).iter().all(|v| !v.flagged));
        assert_eq!(d.observe(99_000, f64::NAN), Verdict::NONE);
    }

    #[test]
    fn continuity_across_save_and_restore() {
        let mut series = Vec::new();
        for i in 0..40i64 {
            let v = if (10..25).contains(&i) {
                3.0
            } else {
                i as f64 * 0.5
            };
            series.push((i * 1000, v));
        }
        let cfg = DetectorConfig::Flatline(FlatlineConfig {
            count: Some(6),
            seconds: Some(9.0),
            ..FlatlineConfig::default()
        });
        for split in [0, 1, 12, 20, 30, 40] {
            assert_continuity_ts(&cfg, &series, split);
        }
    }

    #[test]
    fn restore_with_a_smaller_epsilon_restarts_the_run() {
        let wide = FlatlineConfig {
            epsilon: 1.0,
            ..FlatlineConfig::default()
        };
        let mut d = wide.build();
        run(&mut d, &[5.0, 5.5, 5.2, 5.4]);
        let saved = d.save();
        let kept = wide.restore(&saved).unwrap();
        assert_eq!(kept.state.run.as_ref().map(|r| r.n), Some(4));
        let narrow = FlatlineConfig {
            epsilon: 0.1,
            ..FlatlineConfig::default()
        };
        let mut r = narrow.restore(&saved).unwrap();
        assert_eq!(r.state.run, Some(Run::start(3_000, 5.4)));
        assert!((r.observe(4_000, 5.45).score - 1.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn validate_names_the_key() {
        let c = |count, seconds| FlatlineConfig {
            count,
            seconds,
            ..FlatlineConfig::default()
        };
        assert!(
            c(Some(1), None)
                .validate()
                .unwrap_err()
                .starts_with("count")
        );
        assert!(
            c(None, Some(0.0))
                .validate()
                .unwrap_err()
                .starts_with("seconds")
        );
        assert!(
            FlatlineConfig {
                epsilon: -1.0,
                ..c(None, None)
            }
            .validate()
            .unwrap_err()
            .starts_with("epsilon")
        );
        assert!(
            FlatlineConfig {
                flag_at: 1.5,
                ..c(None, None)
            }
            .validate()
            .unwrap_err()
            .starts_with("flag_at")
        );
        assert!(c(None, None).validate().is_ok());
        assert_eq!(c(None, Some(5.0)).limits(), (None, Some(5000.0)));
    }
}
