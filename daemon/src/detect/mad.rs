//! `mad`: robust z-score against the median and the median absolute
//! deviation (MAD) of the last `window` values.
//!
//! Each value is scored against the window *before* it enters:
//!
//! ```text
//! z = (x − median) / (1.4826 · MAD)
//! ```
//!
//! (1.4826 makes 1.4826·MAD estimate the standard deviation of normal data).
//! When more than half of the window is identical the MAD is 0; the spread
//! then falls back to `1.253314 · mean |v − median|` (Iglewicz & Hoaglin's
//! modified z-score), and when that is 0 too — a constant window — any change
//! scores ≈ 1 unless `min_std` sets a floor. Outliers in the window
//! barely move median and MAD, so a burst of spikes does not mask the next
//! one as it would with `gaussian`. Scoring starts once the window is full.
//! Score: `x = |z| / z_threshold` through the shared mapping (flagged when
//! `|z| ≥ z_threshold`). Each observation costs O(window) time (two
//! quickselects over a scratch copy, allocated once); memory O(window).

use serde::{Deserialize, Serialize};

use super::gaussian::WindowState;
use super::window::Ring;
use super::{DetectError, Detector, Verdict, check, decode_state, encode_state, z_of};

/// The `kind` key.
pub(super) const KIND: &str = "mad";

/// Largest accepted `window`.
const MAX_WINDOW: u32 = 10_000;

/// 1 / Φ⁻¹(3/4): scales the MAD to a standard deviation for normal data.
const MAD_TO_STD: f64 = 1.4826;

/// √(π/2): scales the mean absolute deviation to a standard deviation.
const MEAN_AD_TO_STD: f64 = 1.253314;

/// Parameters of a [`Mad`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MadConfig {
    /// Values in the sliding window, `3 ..= 10000`; no value is scored until
    /// the window is full. Default: 100. The MAD of a small window is a noisy
    /// spread estimate (about 37 % as efficient as the standard deviation,
    /// so 60 values estimate it like ≈ 22 would): a larger window makes the
    /// robust z less heavy-tailed, at 16 bytes and a little time per value.
    pub window: u32,
    /// The robust |z| at which a value is flagged (its score equals
    /// `flag_at`), > 0. Default: 4.0. Iglewicz & Hoaglin's 3.5 assumes a
    /// large sample; on clean Gaussian noise a window of 60 at z 3.5 flags
    /// ≈ 23 readings per 10 000, window 100 at z 4 ≈ 3.4, while every 8σ
    /// spike is still flagged and ≈ 97 % of 6σ spikes (see
    /// `tests/detection_quality.rs`).
    pub z_threshold: f64,
    /// Floor of the robust spread (1.4826 × MAD), in the value's units, ≥ 0.
    /// Default: 0.
    pub min_std: f64,
    /// Score at or above which a value is flagged, within `(0, 1)`.
    /// Default: 0.5.
    pub flag_at: f64,
}

impl Default for MadConfig {
    fn default() -> Self {
        MadConfig {
            window: 100,
            z_threshold: 4.0,
            min_std: 0.0,
            flag_at: 0.5,
        }
    }
}

impl MadConfig {
    /// Check the parameters; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        check::within("window", self.window.into(), 3, MAX_WINDOW.into())?;
        check::positive("z_threshold", self.z_threshold)?;
        check::non_negative("min_std", self.min_std)?;
        check::flag_at_open(self.flag_at)
    }

    fn capacity(&self) -> usize {
        self.window.clamp(3, MAX_WINDOW) as usize
    }

    /// A fresh detector.
    pub fn build(&self) -> Mad {
        self.with_ring(Ring::new(self.capacity()))
    }

    fn with_ring(&self, ring: Ring) -> Mad {
        Mad {
            config: self.clone(),
            ring,
            scratch: Vec::with_capacity(self.capacity()),
        }
    }

    /// A detector continuing from saved state. State saved with another
    /// `window` keeps its newest values that fit; a larger window then fills
    /// up before scoring resumes.
    pub fn restore(&self, bytes: &[u8]) -> Result<Mad, DetectError> {
        let state: WindowState = decode_state(KIND, bytes)?;
        state.check()?;
        Ok(self.with_ring(Ring::from_values(self.capacity(), &state.values)))
    }
}

/// Median/MAD detector for one series (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Mad {
    config: MadConfig,
    ring: Ring,
    /// Working copy of the window for the quickselects; never persisted.
    scratch: Vec<f64>,
}

impl Mad {
    /// Median and robust spread of the window (which must not be empty).
    fn centre_and_spread(&mut self) -> (f64, f64) {
        self.scratch.clear();
        self.scratch.extend(self.ring.iter());
        let med = median(&mut self.scratch);
        for v in &mut self.scratch {
            *v = (*v - med).abs();
        }
        let mad = median(&mut self.scratch);
        let spread = if mad > 0.0 {
            MAD_TO_STD * mad
        } else {
            let n = self.scratch.len().max(1) as f64;
            MEAN_AD_TO_STD * self.scratch.iter().sum::<f64>() / n
        };
        (med, spread)
    }
}

/// The median of `values` (reordered in place); 0 for an empty slice.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let mid = n / 2;
    let (lower, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        // The lower middle is the largest value left of `mid`.
        let lower = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lower + (upper - lower) / 2.0
    }
}

impl Detector for Mad {
    fn observe(&mut self, _ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let verdict = if self.ring.is_full() {
            let (med, spread) = self.centre_and_spread();
            let z = z_of(value - med, spread, self.config.min_std, med);
            Verdict::from_ratio(z / self.config.z_threshold, self.config.flag_at)
        } else {
            Verdict::NONE
        };
        self.ring.push(value);
        verdict
    }

    fn save(&self) -> Vec<u8> {
        encode_state(
            KIND,
            &WindowState {
                values: self.ring.to_vec(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectorConfig;
    use crate::detect::testing::{assert_continuity, run};

    /// `window` at z 3.5 (the default before 4, which the scores below were
    /// worked out for).
    fn config(window: u32) -> MadConfig {
        MadConfig {
            window,
            z_threshold: 3.5,
            ..MadConfig::default()
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn known_scores() {
        // Window [1, 2, 3, 4, 100]: median 3, deviations [2, 1, 0, 1, 97],
        // MAD 1, spread 1.4826.
        let mut d = config(5).build();
        for v in run(&mut d, &[1.0, 2.0, 3.0, 4.0, 100.0]) {
            assert_eq!(v, Verdict::NONE);
        }
        // x = 3 + 3.5·1.4826: exactly at the threshold → score 0.5.
        let v = d.clone().observe(5, 3.0 + 3.5 * 1.4826 * 1.000_001);
        assert!(v.flagged && (v.score - 0.5).abs() < 1e-6, "{v:?}");
        // z = 1.75 → x = 0.5 → score 0.2; the outlier 100 did not inflate it.
        let v = d.observe(5, 3.0 - 1.75 * 1.4826);
        assert!(!v.flagged && (v.score - 0.2).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn zero_mad_falls_back_to_the_mean_absolute_deviation() {
        // Window [5, 5, 5, 5, 7]: MAD 0; mean |v − 5| = 0.4 → spread 0.5013256.
        let mut d = config(5).build();
        run(&mut d, &[5.0, 5.0, 5.0, 5.0, 7.0]);
        let spread = 1.253314 * 0.4;
        let v = d.clone().observe(5, 5.0 + 1.75 * spread);
        assert!((v.score - 0.2).abs() < 1e-9, "{v:?}");
        // A constant window: any change scores ≈ 1, no change 0.
        let mut d = config(5).build();
        run(&mut d, &[5.0; 5]);
        assert_eq!(d.clone().observe(5, 5.0), Verdict::NONE);
        assert!(d.clone().observe(5, 5.01).score > 0.999_999);
        let mut d = MadConfig {
            min_std: 0.1,
            ..config(5)
        }
        .build();
        run(&mut d, &[5.0; 5]);
        assert!(!d.observe(5, 5.01).flagged);
        assert_eq!(d.observe(6, f64::NAN), Verdict::NONE);
    }

    #[test]
    fn spikes_do_not_mask_each_other() {
        let base: Vec<f64> = (0..30).map(|i| 20.0 + 0.1 * (i % 3) as f64).collect();
        let mut series = base.clone();
        series.extend([30.0, 20.1, 31.0, 20.0, 32.0]);
        let mut d = config(30).build();
        let v = run(&mut d, &series);
        assert!(v[30].flagged && v[32].flagged && v[34].flagged);
        assert!(!v[31].flagged && !v[33].flagged);
    }

    #[test]
    fn continuity_across_save_and_restore() {
        let series: Vec<f64> = (0..70)
            .map(|i| (i as f64 * 0.9).sin() * 2.0 + if i % 17 == 0 { 9.0 } else { 0.0 })
            .collect();
        let cfg = DetectorConfig::Mad(config(15));
        for split in [0, 3, 15, 16, 40, 70] {
            assert_continuity(&cfg, &series, split);
        }
    }

    #[test]
    fn restore_with_another_window() {
        let mut d = config(5).build();
        run(&mut d, &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let r = config(3).restore(&d.save()).unwrap();
        assert_eq!(r.ring.to_vec(), [3.0, 4.0, 5.0]);
        let mut r = config(10).restore(&d.save()).unwrap();
        assert_eq!(r.observe(0, 100.0), Verdict::NONE);
        assert!(r.scratch.capacity() >= 10);
    }

    #[test]
    fn validate_names_the_key() {
        assert!(config(2).validate().unwrap_err().starts_with("window"));
        let c = MadConfig {
            flag_at: 0.0,
            ..config(5)
        };
        assert!(c.validate().unwrap_err().starts_with("flag_at"));
        assert!(MadConfig::default().validate().is_ok());
    }
}
