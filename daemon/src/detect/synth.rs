//! Labelled synthetic sensor series, for measuring and benchmarking the
//! detectors.
//!
//! A [`SeriesBuilder`] describes a signal — a base level, Gaussian noise,
//! optional daily-style seasonality, optional quantisation — sampled at a
//! fixed interval, and the anomalies to inject into it, either at given
//! positions ([`SeriesBuilder::inject`]) or at random, non-overlapping
//! positions ([`SeriesBuilder::scatter`]). [`SeriesBuilder::build`] returns a
//! [`Synthetic`]: one [`Sample`] per interval, each labelled with the
//! [`AnomalyKind`] whose range covers it, plus the list of injected
//! [`Event`]s (the labelled index ranges).
//!
//! ```
//! use wasmgate::detect::synth::{Anomaly, AnomalyKind, SeriesBuilder};
//!
//! let series = SeriesBuilder::new(7)
//!     .length(2_000)
//!     .base(20.0)
//!     .noise(0.5)
//!     .seasonality(3.0, 1_440)
//!     .warmup(100)
//!     .scatter(10, Anomaly::Spike { k: 8.0 })
//!     .inject(1_500, Anomaly::Dropout { span: 30 })
//!     .build()
//!     .expect("fits");
//! assert_eq!(series.samples.len(), 2_000);
//! assert_eq!(series.events_of(AnomalyKind::Spike).count(), 10);
//! assert!(series.samples[1_510].value.is_none());
//! ```
//!
//! ## The signal
//!
//! Sample `i` is taken at `start_ts_ms + i · interval_ms` and, before any
//! anomaly, reads
//!
//! ```text
//! base + amplitude · sin(2π · (i mod period) / period) + σ · N(0, 1)
//! ```
//!
//! rounded to a multiple of `quantum` when one is set. Anomalies act on it:
//!
//! | anomaly | effect | labelled range |
//! |---|---|---|
//! | [`Spike`](Anomaly::Spike) | one sample moved by `±k·σ` (random sign) | that sample |
//! | [`LevelShift`](Anomaly::LevelShift) | `delta` added from the start to the end of the series | the first `onset` samples of the new level |
//! | [`Drift`](Anomaly::Drift) | a linear ramp reaching `total` over `span` samples; the offset then persists | the ramp |
//! | [`Stuck`](Anomaly::Stuck) | `span` samples frozen at the value read just before the event | the frozen samples |
//! | [`Dropout`](Anomaly::Dropout) | `span` samples missing (`value: None`): a gap in the timestamps | the missing samples |
//!
//! Level shifts and drifts persist, so they accumulate; the frozen value of
//! a stuck sensor is the level and noise just before the event (without
//! spikes), so the sample before the event belongs to the frozen run too.
//!
//! ## Determinism
//!
//! A seed fixes everything. The generator is a self-contained SplitMix64
//! ([`Rng`]); noise, placement and spike signs use three independent streams
//! derived from the seed, so the noise of a seed is the same whatever is
//! injected, and injecting one more anomaly moves no other. Timestamps,
//! labels, event positions, spike signs and dropouts are integer
//! computations, identical on every platform; values use IEEE arithmetic,
//! `sqrt` (exact) and `ln`, `sin`, `cos` (the platform's libm: at most an ulp
//! or so apart between targets).

use std::f64::consts::TAU;
use std::fmt;

use crate::reading::Reading;

/// The kind of an injected anomaly, used as a sample's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// A single-sample outlier.
    Spike,
    /// A step change that persists.
    LevelShift,
    /// A slow linear drift.
    Drift,
    /// A frozen value.
    Stuck,
    /// Missing samples.
    Dropout,
}

impl AnomalyKind {
    /// Every kind, in declaration order.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::Spike,
        AnomalyKind::LevelShift,
        AnomalyKind::Drift,
        AnomalyKind::Stuck,
        AnomalyKind::Dropout,
    ];

    /// A short kebab-case name, e.g. `level-shift`.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::LevelShift => "level-shift",
            AnomalyKind::Drift => "drift",
            AnomalyKind::Stuck => "stuck",
            AnomalyKind::Dropout => "dropout",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An anomaly to inject, with its parameters (see the table in the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anomaly {
    /// One sample moved by `k · σ` (σ: the builder's noise), up or down at
    /// random. With σ = 0 the spike has no size.
    Spike {
        /// Size in noise standard deviations.
        k: f64,
    },
    /// A step of `delta` (value units) that lasts until the end of the
    /// series; the first `onset` samples of the new level are labelled.
    LevelShift {
        /// The step, in value units.
        delta: f64,
        /// Samples labelled from the step on, ≥ 1.
        onset: usize,
    },
    /// A linear drift reaching `total` (value units) at the `span`-th
    /// sample; the offset then persists.
    Drift {
        /// The offset reached at the end of the ramp.
        total: f64,
        /// Samples in the ramp, ≥ 1.
        span: usize,
    },
    /// `span` samples frozen at the value read just before the event.
    Stuck {
        /// Frozen samples, ≥ 1.
        span: usize,
    },
    /// `span` samples missing.
    Dropout {
        /// Missing samples, ≥ 1.
        span: usize,
    },
}

impl Anomaly {
    /// The label of the samples this anomaly covers.
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::Spike { .. } => AnomalyKind::Spike,
            Anomaly::LevelShift { .. } => AnomalyKind::LevelShift,
            Anomaly::Drift { .. } => AnomalyKind::Drift,
            Anomaly::Stuck { .. } => AnomalyKind::Stuck,
            Anomaly::Dropout { .. } => AnomalyKind::Dropout,
        }
    }

    /// Samples in the labelled range.
    pub fn span(&self) -> usize {
        match *self {
            Anomaly::Spike { .. } => 1,
            Anomaly::LevelShift { onset, .. } => onset,
            Anomaly::Drift { span, .. } | Anomaly::Stuck { span } | Anomaly::Dropout { span } => {
                span
            }
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let finite = match *self {
            Anomaly::Spike { k } => k.is_finite(),
            Anomaly::LevelShift { delta, .. } => delta.is_finite(),
            Anomaly::Drift { total, .. } => total.is_finite(),
            Anomaly::Stuck { .. } | Anomaly::Dropout { .. } => true,
        };
        if !finite || self.span() == 0 {
            return Err(SynthError::Invalid(format!(
                "{self:?}: parameters must be finite and the span at least 1"
            )));
        }
        Ok(())
    }
}

/// One sample of a synthetic series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Timestamp, ms since the Unix epoch.
    pub ts_ms: i64,
    /// The value; `None` for a dropout (the sample is missing).
    pub value: Option<f64>,
    /// The kind of the injected anomaly whose labelled range covers this
    /// sample; `None` for a normal sample.
    pub label: Option<AnomalyKind>,
}

/// One injected anomaly: its parameters and labelled index range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// What was injected.
    pub anomaly: Anomaly,
    /// Index of the first labelled sample.
    pub start: usize,
    /// Index one past the last labelled sample.
    pub end: usize,
}

impl Event {
    /// The label of the event's samples.
    pub fn kind(&self) -> AnomalyKind {
        self.anomaly.kind()
    }

    /// The labelled indices, `start..end`.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A generated series: the samples and the injected events, ordered by
/// start.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// One sample per interval, dropouts included (as `value: None`).
    pub samples: Vec<Sample>,
    /// The injected anomalies, ordered by `start`.
    pub events: Vec<Event>,
}

impl Synthetic {
    /// The events of one kind, in order.
    pub fn events_of(&self, kind: AnomalyKind) -> impl Iterator<Item = &Event> + '_ {
        self.events.iter().filter(move |e| e.kind() == kind)
    }

    /// `(index, ts_ms, value)` of every present sample (dropouts skipped),
    /// the way a detector would see the series.
    pub fn present(&self) -> impl Iterator<Item = (usize, i64, f64)> + '_ {
        self.samples
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.map(|v| (i, s.ts_ms, v)))
    }

    /// The present samples as readings of `sensor` with one field `field`.
    pub fn to_readings(&self, sensor: &str, field: &str) -> Vec<Reading> {
        self.present()
            .map(|(_, ts, v)| Reading::new(sensor, ts).with_field(field, v))
            .collect()
    }
}

/// Why a series cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    /// A parameter is out of its range; the message names it.
    #[error("invalid synthetic series parameter: {0}")]
    Invalid(String),
    /// An injected anomaly does not fit in the series.
    #[error("{kind} at {start} (span {span}) does not fit in {len} samples")]
    OutOfRange {
        /// The anomaly's kind.
        kind: AnomalyKind,
        /// Its requested start.
        start: usize,
        /// Its span.
        span: usize,
        /// The series length.
        len: usize,
    },
    /// Two injected anomalies overlap.
    #[error("{first} at {first_start} overlaps {second} at {second_start}")]
    Overlap {
        /// The earlier anomaly's kind.
        first: AnomalyKind,
        /// Its start.
        first_start: usize,
        /// The later anomaly's kind.
        second: AnomalyKind,
        /// Its start.
        second_start: usize,
    },
    /// Scattered anomalies could not all be placed with the required gaps.
    #[error(
        "no room for {kind} #{placed} of {requested} (series of {len}, warm-up {warmup}, gap {gap})"
    )]
    NoRoom {
        /// The kind being placed.
        kind: AnomalyKind,
        /// How many of this request were placed.
        placed: usize,
        /// How many were requested.
        requested: usize,
        /// The series length.
        len: usize,
        /// The warm-up kept free of scattered anomalies.
        warmup: usize,
        /// The minimum gap between anomalies.
        gap: usize,
    },
}

/// SplitMix64: a small, fast, seedable generator with a 64-bit state
/// (Steele, Lea & Flood 2014), plus Box-Muller normal variates.
///
/// Every output is a pure function of the seed and the call sequence.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    /// The second Box-Muller variate, served by the next
    /// [`standard_normal`](Rng::standard_normal).
    spare: Option<f64>,
}

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed,
            spare: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform double in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (0 when `n` is 0), by Lemire's
    /// multiply-and-reject: unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A standard normal variate (Box-Muller; the variates come in pairs,
    /// the second is kept for the next call).
    pub fn standard_normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1], so ln(u1) is finite.
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Attempts to place one scattered anomaly before giving up.
const PLACEMENT_TRIES: usize = 10_000;

/// Describes a synthetic series; [`build`](SeriesBuilder::build) generates
/// it. Every setter takes and returns the builder.
///
/// Defaults: 2 000 samples one second apart from 2024-05-01T00:00:00Z,
/// base 20, noise σ 1, no seasonality, no quantisation, no anomalies,
/// warm-up 0, minimum gap 10.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBuilder {
    seed: u64,
    length: usize,
    start_ts_ms: i64,
    interval_ms: i64,
    base: f64,
    sigma: f64,
    amplitude: f64,
    period: usize,
    quantum: f64,
    warmup: usize,
    min_gap: usize,
    injected: Vec<(usize, Anomaly)>,
    scattered: Vec<(usize, Anomaly)>,
}

impl SeriesBuilder {
    /// A builder with the defaults and `seed`.
    pub fn new(seed: u64) -> SeriesBuilder {
        SeriesBuilder {
            seed,
            length: 2_000,
            start_ts_ms: 1_714_521_600_000,
            interval_ms: 1_000,
            base: 20.0,
            sigma: 1.0,
            amplitude: 0.0,
            period: 0,
            quantum: 0.0,
            warmup: 0,
            min_gap: 10,
            injected: Vec::new(),
            scattered: Vec::new(),
        }
    }

    /// Number of samples, dropouts included.
    pub fn length(mut self, samples: usize) -> SeriesBuilder {
        self.length = samples;
        self
    }

    /// Timestamp of the first sample, ms since the Unix epoch.
    pub fn start_ts_ms(mut self, ts_ms: i64) -> SeriesBuilder {
        self.start_ts_ms = ts_ms;
        self
    }

    /// Time between samples, ms, > 0.
    pub fn interval_ms(mut self, ms: i64) -> SeriesBuilder {
        self.interval_ms = ms;
        self
    }

    /// The level the signal varies around.
    pub fn base(mut self, level: f64) -> SeriesBuilder {
        self.base = level;
        self
    }

    /// Standard deviation σ of the Gaussian noise, ≥ 0 (also the unit of
    /// [`Anomaly::Spike`]'s `k`).
    pub fn noise(mut self, sigma: f64) -> SeriesBuilder {
        self.sigma = sigma;
        self
    }

    /// A sine of `amplitude` repeating every `period` samples (≥ 2 when the
    /// amplitude is not 0), starting at its zero crossing; e.g. a daily cycle
    /// at one sample a minute has period 1440.
    pub fn seasonality(mut self, amplitude: f64, period: usize) -> SeriesBuilder {
        self.amplitude = amplitude;
        self.period = period;
        self
    }

    /// Round every value to a multiple of `quantum` (the sensor's
    /// resolution); 0 leaves values unrounded.
    pub fn quantize(mut self, quantum: f64) -> SeriesBuilder {
        self.quantum = quantum;
        self
    }

    /// The first `samples` samples are kept free of scattered anomalies
    /// (detectors warm up there). Injected anomalies may still go there.
    pub fn warmup(mut self, samples: usize) -> SeriesBuilder {
        self.warmup = samples;
        self
    }

    /// Normal samples kept between a scattered anomaly's labelled range and
    /// any other anomaly's (so detectors can recover between them); also
    /// kept after the end of an injected one. Default 10.
    pub fn min_gap(mut self, samples: usize) -> SeriesBuilder {
        self.min_gap = samples;
        self
    }

    /// Inject `anomaly` with its labelled range starting at index `at`.
    /// Injected anomalies must fit in the series and not overlap each other.
    pub fn inject(mut self, at: usize, anomaly: Anomaly) -> SeriesBuilder {
        self.injected.push((at, anomaly));
        self
    }

    /// Inject `count` copies of `anomaly` at random positions after the
    /// warm-up, each at least [`min_gap`](Self::min_gap) samples away from
    /// every other anomaly. Requests are placed in the order given, after
    /// the injected anomalies.
    pub fn scatter(mut self, count: usize, anomaly: Anomaly) -> SeriesBuilder {
        self.scattered.push((count, anomaly));
        self
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |what: String| Err(SynthError::Invalid(what));
        if self.interval_ms <= 0 {
            return bad(format!("interval_ms = {} must be > 0", self.interval_ms));
        }
        let last = i64::try_from(self.length.saturating_sub(1))
            .ok()
            .and_then(|n| n.checked_mul(self.interval_ms))
            .and_then(|d| d.checked_add(self.start_ts_ms));
        if last.is_none() {
            return bad("the timestamps overflow i64".into());
        }
        if !self.base.is_finite() {
            return bad(format!("base = {} must be finite", self.base));
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return bad(format!("noise σ = {} must be finite and ≥ 0", self.sigma));
        }
        if !self.amplitude.is_finite() || (self.amplitude != 0.0 && self.period < 2) {
            return bad(format!(
                "seasonality amplitude {} / period {}: finite amplitude, period ≥ 2",
                self.amplitude, self.period
            ));
        }
        if !(self.quantum.is_finite() && self.quantum >= 0.0) {
            return bad(format!("quantum = {} must be finite and ≥ 0", self.quantum));
        }
        for (_, a) in self.injected.iter().chain(&self.scattered) {
            a.validate()?;
        }
        Ok(())
    }

    /// The events: injected ones checked, scattered ones placed; sorted.
    fn place(&self, rng: &mut Rng) -> Result<Vec<Event>, SynthError> {
        let len = self.length;
        let mut events: Vec<Event> = Vec::new();
        for &(start, anomaly) in &self.injected {
            let span = anomaly.span();
            if start.checked_add(span).is_none_or(|end| end > len) {
                return Err(SynthError::OutOfRange {
                    kind: anomaly.kind(),
                    start,
                    span,
                    len,
                });
            }
            let event = Event {
                anomaly,
                start,
                end: start + span,
            };
            if let Some(other) = events
                .iter()
                .find(|e| e.start < event.end && event.start < e.end)
            {
                let (a, b) = if other.start <= event.start {
                    (other, &event)
                } else {
                    (&event, other)
                };
                return Err(SynthError::Overlap {
                    first: a.kind(),
                    first_start: a.start,
                    second: b.kind(),
                    second_start: b.start,
                });
            }
            events.push(event);
        }
        let gap = self.min_gap;
        for &(count, anomaly) in &self.scattered {
            let span = anomaly.span();
            let no_room = |placed| SynthError::NoRoom {
                kind: anomaly.kind(),
                placed,
                requested: count,
                len,
                warmup: self.warmup,
                gap,
            };
            for placed in 0..count {
                let Some(positions) = len
                    .checked_sub(self.warmup)
                    .and_then(|free| free.checked_sub(span))
                    .map(|p| p as u64 + 1)
                else {
                    return Err(no_room(placed));
                };
                let mut found = None;
                for _ in 0..PLACEMENT_TRIES {
                    let start = self.warmup + rng.below(positions) as usize;
                    let end = start + span;
                    let clear = events.iter().all(|e| {
                        e.end.saturating_add(gap) <= start || end.saturating_add(gap) <= e.start
                    });
                    if clear {
                        found = Some(start);
                        break;
                    }
                }
                let Some(start) = found else {
                    return Err(no_room(placed));
                };
                events.push(Event {
                    anomaly,
                    start,
                    end: start + span,
                });
            }
        }
        events.sort_by_key(|e| e.start);
        Ok(events)
    }

    /// Generate the series.
    ///
    /// # Errors
    ///
    /// [`SynthError`] when a parameter is out of range, an injected anomaly
    /// does not fit or overlaps another, or the scattered anomalies cannot
    /// all be placed.
    pub fn build(&self) -> Result<Synthetic, SynthError> {
        self.validate()?;
        let len = self.length;
        let mut master = Rng::new(self.seed);
        let mut noise = Rng::new(master.next_u64());
        let mut placement = Rng::new(master.next_u64());
        let mut signs = Rng::new(master.next_u64());

        let events = self.place(&mut placement)?;

        // The level before point anomalies: base + season + noise + the
        // persistent offsets of shifts and drifts.
        let mut level: Vec<f64> = (0..len)
            .map(|i| {
                let season = if self.amplitude != 0.0 && self.period >= 2 {
                    let phase = (i % self.period) as f64 / self.period as f64;
                    self.amplitude * (TAU * phase).sin()
                } else {
                    0.0
                };
                self.base + season + self.sigma * noise.standard_normal()
            })
            .collect();
        // steps[i]: persistent offset starting at i (prefix-summed below).
        let mut steps = vec![0.0; len + 1];
        for e in &events {
            match e.anomaly {
                Anomaly::LevelShift { delta, .. } => steps[e.start] += delta,
                Anomaly::Drift { total, span } => {
                    for (j, v) in level[e.start..e.end].iter_mut().enumerate() {
                        *v += total * (j + 1) as f64 / span as f64;
                    }
                    steps[e.end] += total;
                }
                _ => {}
            }
        }
        let mut offset = 0.0;
        for (v, step) in level.iter_mut().zip(&steps) {
            offset += step;
            *v += offset;
        }

        let mut values: Vec<Option<f64>> = level.iter().copied().map(Some).collect();
        let mut labels: Vec<Option<AnomalyKind>> = vec![None; len];
        for e in &events {
            labels[e.range()].fill(Some(e.kind()));
            match e.anomaly {
                Anomaly::Spike { k } => {
                    let sign = if signs.next_u64() >> 63 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    values[e.start] = Some(level[e.start] + sign * k * self.sigma);
                }
                Anomaly::Stuck { .. } => {
                    let frozen = level[e.start.saturating_sub(1)];
                    values[e.range()].fill(Some(frozen));
                }
                Anomaly::Dropout { .. } => values[e.range()].fill(None),
                Anomaly::LevelShift { .. } | Anomaly::Drift { .. } => {}
            }
        }

        let quantum = self.quantum;
        let samples = values
            .into_iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (value, label))| Sample {
                // Cannot overflow: checked in `validate`.
                ts_ms: self.start_ts_ms + i as i64 * self.interval_ms,
                value: value.map(|v| {
                    if quantum > 0.0 {
                        (v / quantum).round() * quantum
                    } else {
                        v
                    }
                }),
                label,
            })
            .collect();
        Ok(Synthetic { samples, events })
    }

    /// Generate the series and return only its samples (see
    /// [`build`](Self::build)).
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn samples(&self) -> Result<Vec<Sample>, SynthError> {
        self.build().map(|s| s.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed(seed: u64) -> SeriesBuilder {
        SeriesBuilder::new(seed)
            .length(3_000)
            .seasonality(5.0, 500)
            .warmup(100)
            .min_gap(20)
            .scatter(10, Anomaly::Spike { k: 8.0 })
            .scatter(
                3,
                Anomaly::LevelShift {
                    delta: 5.0,
                    onset: 5,
                },
            )
            .scatter(
                2,
                Anomaly::Drift {
                    total: 4.0,
                    span: 100,
                },
            )
            .scatter(3, Anomaly::Stuck { span: 30 })
            .scatter(3, Anomaly::Dropout { span: 15 })
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 0 (as in Vigna's
        // splitmix64.c): any platform must reproduce them.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn rng_helpers_stay_in_range() {
        let mut r = Rng::new(42);
        for n in [1, 2, 3, 7, 1000, u64::MAX] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
        let (mut sum, mut sq) = (0.0, 0.0);
        let n = 20_000;
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            let z = r.standard_normal();
            assert!(z.is_finite());
            sum += z;
            sq += z * z;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn same_seed_same_series_other_seed_other_series() {
        let a = mixed(1).build().unwrap();
        let b = mixed(1).build().unwrap();
        assert_eq!(a, b);
        // Bit-identical values, not merely equal.
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert_eq!(x.value.map(f64::to_bits), y.value.map(f64::to_bits));
        }
        let c = mixed(2).build().unwrap();
        assert_ne!(a.events, c.events);
        assert_ne!(a.samples, c.samples);
    }

    #[test]
    fn timestamps_are_regular_and_dropouts_are_none() {
        let s = mixed(3)
            .interval_ms(250)
            .start_ts_ms(1_000)
            .build()
            .unwrap();
        for (i, sample) in s.samples.iter().enumerate() {
            assert_eq!(sample.ts_ms, 1_000 + 250 * i as i64);
            let dropout = sample.label == Some(AnomalyKind::Dropout);
            assert_eq!(sample.value.is_none(), dropout, "sample {i}");
        }
        let missing: usize = s
            .events_of(AnomalyKind::Dropout)
            .map(|e| e.end - e.start)
            .sum();
        assert_eq!(missing, 45);
        assert_eq!(s.present().count(), 3_000 - 45);
        assert_eq!(s.to_readings("s", "v").len(), 3_000 - 45);
    }

    #[test]
    fn labels_cover_exactly_the_events() {
        let s = mixed(4).build().unwrap();
        let mut expected = vec![None; s.samples.len()];
        let mut counts = std::collections::BTreeMap::new();
        for e in &s.events {
            assert!(e.start >= 100, "{e:?} in the warm-up");
            assert_eq!(e.end - e.start, e.anomaly.span());
            expected[e.range()].fill(Some(e.kind()));
            *counts.entry(e.kind()).or_insert(0) += 1;
        }
        let got: Vec<_> = s.samples.iter().map(|x| x.label).collect();
        assert_eq!(got, expected);
        assert_eq!(counts[&AnomalyKind::Spike], 10);
        assert_eq!(counts[&AnomalyKind::LevelShift], 3);
        assert_eq!(counts[&AnomalyKind::Drift], 2);
        assert_eq!(counts[&AnomalyKind::Stuck], 3);
        assert_eq!(counts[&AnomalyKind::Dropout], 3);
        // Sorted, and at least min_gap apart.
        for w in s.events.windows(2) {
            assert!(w[0].end + 20 <= w[1].start, "{:?} / {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn anomalies_change_only_what_they_should() {
        // Same seed with and without anomalies: the noise is identical, so
        // the difference is the injected effect alone.
        let clean = SeriesBuilder::new(9).length(400).build().unwrap();
        let dirty = SeriesBuilder::new(9)
            .length(400)
            .inject(50, Anomaly::Spike { k: 10.0 })
            .inject(
                100,
                Anomaly::LevelShift {
                    delta: 3.0,
                    onset: 4,
                },
            )
            .inject(
                200,
                Anomaly::Drift {
                    total: 2.0,
                    span: 50,
                },
            )
            .inject(300, Anomaly::Stuck { span: 20 })
            .inject(350, Anomaly::Dropout { span: 5 })
            .build()
            .unwrap();
        let v = |s: &Synthetic, i: usize| s.samples[i].value.unwrap();
        let diff = |i: usize| v(&dirty, i) - v(&clean, i);
        assert_eq!(diff(49), 0.0);
        assert!((diff(50).abs() - 10.0).abs() < 1e-9);
        assert_eq!(diff(51), 0.0);
        assert!((diff(100) - 3.0).abs() < 1e-9);
        assert!((diff(199) - 3.0).abs() < 1e-9);
        assert!((diff(200) - 3.04).abs() < 1e-9);
        assert!((diff(224) - 4.0).abs() < 1e-9);
        assert!((diff(249) - 5.0).abs() < 1e-9);
        assert!((diff(299) - 5.0).abs() < 1e-9);
        // Stuck at the value read just before.
        for i in 300..320 {
            assert_eq!(v(&dirty, i), v(&dirty, 299));
        }
        assert!((diff(320) - 5.0).abs() < 1e-9);
        assert!(dirty.samples[350..355].iter().all(|s| s.value.is_none()));
        assert!((diff(355) - 5.0).abs() < 1e-9);
        assert_eq!(dirty.samples[100].label, Some(AnomalyKind::LevelShift));
        assert_eq!(dirty.samples[104].label, None);
        // Noise has the requested spread.
        let clean_vals: Vec<f64> = clean.present().map(|(_, _, v)| v).collect();
        let mean = clean_vals.iter().sum::<f64>() / 400.0;
        assert!((mean - 20.0).abs() < 0.2, "{mean}");
    }

    #[test]
    fn seasonality_and_quantisation() {
        let s = SeriesBuilder::new(5)
            .length(400)
            .noise(0.0)
            .base(10.0)
            .seasonality(2.0, 100)
            .build()
            .unwrap();
        let v = |i: usize| s.samples[i].value.unwrap();
        assert!((v(0) - 10.0).abs() < 1e-12);
        assert!((v(25) - 12.0).abs() < 1e-12);
        assert!((v(75) - 8.0).abs() < 1e-12);
        assert!((v(325) - 12.0).abs() < 1e-12);
        let q = SeriesBuilder::new(5).quantize(0.25).build().unwrap();
        for (_, _, v) in q.present() {
            assert_eq!((v / 0.25).fract(), 0.0, "{v}");
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let b = SeriesBuilder::new(1).length(100);
        assert!(matches!(
            b.clone().inject(95, Anomaly::Stuck { span: 10 }).build(),
            Err(SynthError::OutOfRange { start: 95, .. })
        ));
        assert!(matches!(
            b.clone()
                .inject(10, Anomaly::Stuck { span: 10 })
                .inject(15, Anomaly::Spike { k: 5.0 })
                .build(),
            Err(SynthError::Overlap {
                first: AnomalyKind::Stuck,
                second: AnomalyKind::Spike,
                ..
            })
        ));
        assert!(matches!(
            b.clone()
                .min_gap(20)
                .scatter(10, Anomaly::Stuck { span: 10 })
                .build(),
            Err(SynthError::NoRoom { .. })
        ));
        assert!(matches!(
            b.clone().interval_ms(0).build(),
            Err(SynthError::Invalid(_))
        ));
        assert!(matches!(
            b.clone().seasonality(1.0, 1).build(),
            Err(SynthError::Invalid(_))
        ));
        assert!(matches!(
            b.clone().scatter(1, Anomaly::Dropout { span: 0 }).build(),
            Err(SynthError::Invalid(_))
        ));
        assert!(matches!(
            b.clone().start_ts_ms(i64::MAX - 10).build(),
            Err(SynthError::Invalid(_))
        ));
        assert_eq!(b.length(0).samples().unwrap(), vec![]);
    }
}
