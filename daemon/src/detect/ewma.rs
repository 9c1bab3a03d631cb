//! `ewma`: z-score against an exponentially weighted mean and variance.
//!
//! Each value is scored against the mean and variance learned *before* it,
//! then learned: with `d = x − mean` and `a = max(alpha, 1/n)` (the n-th value),
//!
//! ```text
//! z     = d / σ̂,   σ̂² = var · (1 + S) / (1 − S)
//! d'    = d clamped to ±z_threshold · σ̂   (once past warm-up)
//! mean ← mean + a·d'
//! var  ← (1 − a)·(var + a·d'²)
//! S    ← (1 − a)²·S + a²
//! ```
//!
//! The `1/n` term makes the first values an exact running mean and
//! (population) variance, so the warm-up does not start from a zero variance;
//! after `1/alpha` values the estimator is the usual EWMA.
//!
//! **Calibration.** The mean is a weighted sum `Σ wᵢ·xᵢ` (`Σ wᵢ = 1`) and `S =
//! Σ wᵢ²` is the sum of its squared weights (`1/n` during the running-mean
//! phase, then converging to `α/(2 − α)`; it is a function of `n` and `alpha`
//! and computed in closed form, not stored). For independent values of
//! variance σ², `var` estimates the weighted spread *around the mean it
//! includes*, `E[var] = σ²·(1 − S)`, while a new value's deviation from that
//! mean has `E[d²] = σ²·(1 + S)`. Scoring `d` against `√var`, as earlier
//! versions did, overstates |z| by `√((1 + S)/(1 − S))` — `1/√(1 − α)` in the
//! steady state, 5 % at α = 0.1 — so a `z_threshold` of 3 behaved like
//! 2.85. `σ̂` above is the calibrated spread: `E[d²/σ̂²] = 1`. What remains
//! above the Gaussian tail rate is estimation noise: `var` is an average of
//! about `2/α − 1` squared deviations, so `z` has Student-t-like tails with
//! that many degrees of freedom (on clean N(0, 1) at z 3: 74 flags per
//! 10 000 at α 0.1, 52 at α 0.05; Gaussian: 27). The defaults (α 0.05,
//! z 4) are chosen for that: 3 false flags per 10 000 samples of clean
//! Gaussian noise, while 8σ spikes are all flagged (see
//! `tests/detection_quality.rs`).
//!
//! **Robust learning.** Once past warm-up, the deviation that is learned is
//! clipped to `±z_threshold·max(σ̂, min_std)`, as `holt-winters` does: a spike moves the mean by at most
//! `a·z_threshold·σ̂` and inflates the variance by a bounded factor, so it no
//! longer hides the next spike; a lasting level shift is still learned,
//! because each clipped step moves the mean towards it and widens `σ̂` until
//! the new level is within reach (an 8σ shift is flagged for a few samples,
//! then becomes the new normal). With a zero spread (a constant signal,
//! `min_std` 0) the value is learned as is.
//!
//! Score: `x = |z| / z_threshold` through the shared mapping (flagged when
//! `|z| ≥ z_threshold`). Memory O(1); time O(1) per observation. The saved
//! state (count, mean, variance) has the same layout and meaning as before
//! the calibration, so saved baselines restore unchanged.

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, Verdict, check, decode_state, encode_state, z_of};

/// The `kind` key.
pub(super) const KIND: &str = "ewma";

/// Parameters of an [`Ewma`] detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EwmaConfig {
    /// Smoothing factor of mean and variance, within `(0, 1]`; larger adapts
    /// faster but estimates the variance from fewer values (about
    /// `2/alpha − 1`), which fattens the tails of z. Default: 0.05 (a memory
    /// of ≈ 20 readings; the variance of ≈ 39).
    pub alpha: f64,
    /// The |z| at which a value is flagged (its score equals `flag_at`),
    /// greater than 0. Default: 4.0: with alpha 0.05, ≈ 3 false flags per
    /// 10 000 readings of clean Gaussian noise (z 3: 52, z 3.5: 14), every
    /// 8σ spike flagged and 96 % of 6σ spikes (see
    /// `tests/detection_quality.rs`).
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
            alpha: 0.05,
            z_threshold: 4.0,
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

impl Ewma {
    /// `S`, the sum of the squared weights of the mean after `n` values
    /// (see the [module docs](self)): `1/n` while `1/n ≥ α`, then
    /// `S∞ + (1 − α)^(2(n − n₀)) · (1/n₀ − S∞)` with `S∞ = α/(2 − α)` and
    /// `n₀ = ⌊1/α⌋`, the closed form of `S ← (1 − a)²·S + a²`.
    fn weight_sum_sq(alpha: f64, n: u64) -> f64 {
        if n == 0 {
            return 1.0;
        }
        let alpha = alpha.clamp(f64::MIN_POSITIVE, 1.0);
        // n₀ ≥ 1 since α ≤ 1; the cast saturates for tiny α.
        let n0 = ((1.0 / alpha).floor() as u64).max(1);
        if n <= n0 {
            return 1.0 / n as f64;
        }
        let s_inf = alpha / (2.0 - alpha);
        let decay = (1.0 - alpha).powf(2.0 * (n - n0) as f64);
        s_inf + decay * (1.0 / n0 as f64 - s_inf)
    }

    /// The standard deviation of the next deviation `x − mean`, before the
    /// floors: `√(var · (1 + S)/(1 − S))`. With `S = 1` (α = 1, or a single
    /// value) there is no spread estimate and `var` is 0.
    fn spread(&self) -> f64 {
        let s = Self::weight_sum_sq(self.config.alpha, self.state.n);
        let factor = if s < 1.0 { (1.0 + s) / (1.0 - s) } else { 1.0 };
        (self.state.var * factor).sqrt()
    }
}

impl Detector for Ewma {
    fn observe(&mut self, _ts_ms: i64, value: f64) -> Verdict {
        if !value.is_finite() {
            return Verdict::NONE;
        }
        let d = value - self.state.mean;
        let c = &self.config;
        let (verdict, learned) = if self.state.n >= u64::from(c.warmup.max(1)) {
            let spread = self.spread();
            let z = z_of(d, spread, c.min_std, self.state.mean);
            // Learn at most z_threshold spreads away: a spike barely moves
            // the baseline. A zero spread (and min_std) learns as is.
            let bound = c.z_threshold * spread.max(c.min_std);
            let learned = if bound > 0.0 {
                d.clamp(-bound, bound)
            } else {
                d
            };
            (Verdict::from_ratio(z / c.z_threshold, c.flag_at), learned)
        } else {
            (Verdict::NONE, d)
        };
        let s = &mut self.state;
        s.n = s.n.saturating_add(1);
        // n ≥ 1 here; precision loss of the cast only matters past 2^53.
        let a = c.alpha.max(1.0 / s.n as f64).clamp(0.0, 1.0);
        s.mean += a * learned;
        s.var = (1.0 - a) * (s.var + a * learned * learned);
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

    /// α 0.1, z 3 (the defaults before 0.05 / 4, which the numbers below
    /// were worked out for), and `warmup`.
    fn config(warmup: u32) -> EwmaConfig {
        EwmaConfig {
            alpha: 0.1,
            z_threshold: 3.0,
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
        // The calibrated spread after n = 4 equal weights (S = 1/4):
        // σ̂² = 0.75 · (1 + 1/4) / (1 − 1/4) = 1.25. (Before the calibration
        // the threshold sat at 3 · √0.75, 1.29 times closer.)
        let spread = 1.25f64.sqrt();
        assert!((d.spread() - spread).abs() < 1e-12);
        // z just above 3 (the threshold) scores just above 0.5 …
        let v = d.clone().observe(4, 3.5 + 3.0001 * spread);
        assert!(v.flagged);
        assert!((v.score - 0.5).abs() < 1e-4);
        // … and just below it, just below.
        let v = d.observe(4, 3.5 - 2.9999 * spread);
        assert!(!v.flagged);
        assert!((v.score - 0.5).abs() < 1e-4);
    }

    #[test]
    fn squared_weight_sum_matches_the_recursion() {
        for alpha in [1.0, 0.5, 0.3, 0.1, 0.05, 0.01] {
            let mut s = 0.0;
            for n in 1..=2_000u64 {
                let a = f64::max(alpha, 1.0 / n as f64);
                s = (1.0 - a) * (1.0 - a) * s + a * a;
                let closed = Ewma::weight_sum_sq(alpha, n);
                assert!((closed - s).abs() < 1e-12, "α {alpha} n {n}: {closed} {s}");
            }
            assert!((s - alpha / (2.0 - alpha)).abs() < 1e-9, "α {alpha}");
        }
        assert_eq!(Ewma::weight_sum_sq(0.05, u64::MAX), 0.05 / 1.95);
    }

    #[test]
    fn known_scores() {
        // After warm-up on 0, 2, 0, 2, …: mean 1, population variance 1.
        let mut d = config(10).build();
        let warm: Vec<f64> = (0..10)
            .map(|i| if i % 2 == 0 { 0.0 } else { 2.0 })
            .collect();
        for v in run(&mut d, &warm) {
            assert_eq!(v, Verdict::NONE);
        }
        assert!((d.state.mean - 1.0).abs() < 1e-12);
        assert!((d.state.var - 1.0).abs() < 1e-12);
        // Ten equal weights: S = 0.1, σ̂² = 1.1 / 0.9. The value 1 + 2·σ̂ has
        // z = 2 → x = 2/3 → score = (4/9) / (4/9 + 1) = 4/13. (Before the
        // calibration this was the value 3, at σ = 1.)
        let spread = (1.1f64 / 0.9).sqrt();
        let v = d.observe(10, 1.0 + 2.0 * spread);
        assert!((v.score - 4.0 / 13.0).abs() < 1e-9, "{v:?}");
        assert!(!v.flagged);
        // A big spike is flagged.
        let v = d.observe(11, 20.0);
        assert!(v.flagged && v.score > 0.95, "{v:?}");
    }

    /// Values of N(μ, σ) from the synthetic generator's normal stream.
    fn normal(seed: u64, n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        let mut rng = crate::detect::synth::Rng::new(seed);
        (0..n).map(|_| mu + sigma * rng.standard_normal()).collect()
    }

    #[test]
    fn spread_is_calibrated_on_gaussian_noise() {
        // E[d²] = E[σ̂²] for every α, where d is a value's deviation from the
        // mean before it; the uncalibrated spread (√var) gave 1/(1 − α): 1.43
        // at α 0.3, 1.11 at α 0.1. (E[z²] itself is larger, ≈ ν/(ν − 2) for
        // ν ≈ 2/α − 1 values in the estimate: σ̂ is noisy.) Clipping at z 4
        // biases σ̂² by < 1 %.
        for alpha in [0.3, 0.1, 0.05] {
            let cfg = EwmaConfig {
                alpha,
                ..EwmaConfig::default()
            };
            let mut d = cfg.build();
            let (mut d2, mut var, mut old_var) = (0.0, 0.0, 0.0);
            for (i, x) in normal(11, 200_000, 20.0, 2.0).into_iter().enumerate() {
                if i >= 1_000 {
                    d2 += (x - d.state.mean).powi(2);
                    var += d.spread().powi(2);
                    old_var += d.state.var;
                }
                d.observe(i as i64, x);
            }
            let ratio = d2 / var;
            assert!((ratio - 1.0).abs() < 0.02, "α {alpha}: {ratio}");
            let old = d2 / old_var * (1.0 - alpha);
            assert!((old - 1.0).abs() < 0.02, "α {alpha}: {old}");
        }
    }

    #[test]
    fn a_spike_does_not_mask_the_next_one() {
        let cfg = EwmaConfig::default();
        let mut values = normal(3, 300, 20.0, 1.0);
        for at in [200, 205, 210] {
            values[at] += 8.0;
        }
        let mut d = cfg.build();
        let verdicts = run(&mut d, &values);
        for at in [200, 205, 210] {
            assert!(verdicts[at].flagged, "spike at {at}: {:?}", verdicts[at]);
        }
        // The first spike moved the mean by at most α·z_threshold·σ̂.
        let mut d = cfg.build();
        run(&mut d, &values[..200]);
        let (mean, spread) = (d.state.mean, d.spread());
        d.observe(200_000, values[200]);
        let moved = d.state.mean - mean;
        assert!(moved > 0.0 && moved <= 0.05 * 4.0 * spread * (1.0 + 1e-12));
        // Unclipped, an 8σ spike (≈ 2.5 σ̂² added to var at α 0.05)
        // hid a 6σ spike right after it; clipped, it does not.
        let mut values = normal(5, 300, 20.0, 1.0);
        values[200] += 8.0;
        values[201] += 6.0;
        let mut d = cfg.build();
        let verdicts = run(&mut d, &values);
        assert!(verdicts[200].flagged && verdicts[201].flagged);
    }

    #[test]
    fn a_level_shift_is_flagged_then_learned() {
        let cfg = EwmaConfig::default();
        let mut values = normal(7, 600, 20.0, 1.0);
        for v in &mut values[200..] {
            *v += 8.0;
        }
        let mut d = cfg.build();
        let verdicts = run(&mut d, &values);
        let flagged: Vec<usize> = (0..values.len()).filter(|&i| verdicts[i].flagged).collect();
        assert_eq!(flagged.first(), Some(&200), "{flagged:?}");
        // Learned within a few dozen readings; nothing flagged after that.
        assert!(flagged.iter().all(|&i| i < 240), "{flagged:?}");
        assert!((d.state.mean - 28.0).abs() < 1.0, "{}", d.state.mean);
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
