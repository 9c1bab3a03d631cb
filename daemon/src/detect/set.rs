//! [`DetectorSet`]: the detectors of one stream and their live series.
//!
//! A series is one (detector, sensor, field) triple. Series are created on
//! first sight, up to `max_series` per stream; beyond that, values of new
//! series are counted ([`DetectorSet::untracked`]) and not scored.
//!
//! ## Persistence keys
//!
//! [`DetectorSet::dirty_states`] hands out `(key, state)` pairs and
//! [`DetectorSet::restore`] takes them back; the daemon stores them (sled) and
//! does all I/O. A key is the UTF-8 text
//!
//! ```text
//! det/<stream>/<detector>/<sensor>/<field>
//! ```
//!
//! where `<stream>` and `<detector>` are names of `[A-Za-z0-9_-]` and
//! `<sensor>` and `<field>` are escaped: `%` → `%25`, `/` → `%2F` (so sensor
//! ids such as `greenhouse/bme280-1` stay one segment). All keys of a stream
//! share the prefix [`DetectorSet::key_prefix`] (`det/<stream>/`), so a prefix
//! scan finds them. The state is the CBOR envelope of [`Detector::save`].
//!
//! ## Cost per reading
//!
//! For each finite field: one hash lookup of the sensor and one of the field
//! (by `&str`, no key is built), a scan of the detectors' `fields` filters,
//! then each applicable detector's `observe` — O(1), or O(window) for
//! `gaussian` and `mad`. Nothing is allocated once the series exist, except
//! the returned events (the vector stays unallocated when nothing is flagged).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{DetectError, Detector, DetectorConfig, Verdict};
use crate::reading::Reading;

/// Default of [`DetectorSetConfig::max_series`].
const DEFAULT_MAX_SERIES: usize = 10_000;

/// Most detectors one stream may have.
pub const MAX_DETECTORS: usize = 64;

/// Longest detector name, bytes.
const MAX_NAME_LEN: usize = 64;

/// One configured detector of a stream: a [`DetectorConfig`] (flattened:
/// `kind` and its keys sit beside `name` and `fields`).
///
/// ```toml
/// kind = "rate"
/// name = "temp-spikes"   # default: the kind
/// fields = ["temp"]      # default: every field
/// max_rate = 0.5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorSpec {
    /// Name in events and state keys: `[A-Za-z0-9_-]`, at most 64 bytes,
    /// unique within the stream. Default: the kind (e.g. `holt-winters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The fields this detector scores; empty scores every field.
    /// Default: empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The detector's kind and parameters.
    #[serde(flatten)]
    pub config: DetectorConfig,
}

impl DetectorSpec {
    /// A spec scoring every field, named after its kind.
    pub fn new(config: DetectorConfig) -> DetectorSpec {
        DetectorSpec {
            name: None,
            fields: Vec::new(),
            config,
        }
    }

    /// The effective name: `name`, or the kind.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.config.kind())
    }
}

/// The detectors of one stream and the stream-wide keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSetConfig {
    /// Most series (detector × sensor × field) tracked; values of further
    /// series are counted, not scored. At least 1. Default: 10 000.
    pub max_series: usize,
    /// Also score derived records (readings whose `kind` is set, such as
    /// alerts or statistics from processors). Default: false.
    pub include_derived: bool,
    /// The detectors, at most 64. Default: none.
    pub detectors: Vec<DetectorSpec>,
}

impl Default for DetectorSetConfig {
    fn default() -> Self {
        DetectorSetConfig {
            max_series: DEFAULT_MAX_SERIES,
            include_derived: false,
            detectors: Vec::new(),
        }
    }
}

impl DetectorSetConfig {
    /// Check every key; the message names it, e.g.
    /// `detectors[1].alpha = 2 must be within (0, 1]`.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_series == 0 {
            return Err("max_series must be at least 1".into());
        }
        if self.detectors.len() > MAX_DETECTORS {
            return Err(format!(
                "detectors: {} given, at most {MAX_DETECTORS} per stream",
                self.detectors.len()
            ));
        }
        for (i, spec) in self.detectors.iter().enumerate() {
            let name = spec.name();
            if !is_valid_name(name) || name.len() > MAX_NAME_LEN {
                return Err(format!(
                    "detectors[{i}].name = {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, `_` and `-`"
                ));
            }
            if let Some(first) = self.detectors[..i].iter().position(|s| s.name() == name) {
                return Err(format!(
                    "detectors[{i}].name: duplicate detector name {name:?} (detectors[{first}] has it too; set a distinct `name`)"
                ));
            }
            if let Some(j) = spec.fields.iter().position(String::is_empty) {
                return Err(format!("detectors[{i}].fields[{j}] is empty"));
            }
            spec.config
                .validate()
                .map_err(|m| format!("detectors[{i}].{m}"))?;
        }
        Ok(())
    }
}

/// Whether `name` is a non-empty `[A-Za-z0-9_-]+`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A flagged value (serialized with the fields in this order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// The stream whose detector flagged the value.
    pub stream: String,
    /// The reading's sensor id.
    pub sensor: String,
    /// The field.
    pub field: String,
    /// The flagged value.
    pub value: f64,
    /// Its score, in `[flag_at, 1]`.
    pub score: f64,
    /// The detector's name.
    pub detector: String,
    /// The detector's kind (e.g. `mad`).
    pub kind: String,
    /// The reading's timestamp, ms since the Unix epoch.
    pub ts: i64,
}

/// One detector's verdict on one field of one reading (`replay` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldScore {
    /// The field scored.
    pub field: String,
    /// The detector's name.
    pub detector: String,
    /// Score in [0, 1].
    pub score: f64,
    /// Whether the score reached the detector's `flag_at`.
    pub flag: bool,
}

/// The parts of a persistence key (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    /// Stream name.
    pub stream: String,
    /// Detector name.
    pub detector: String,
    /// Sensor id.
    pub sensor: String,
    /// Field name.
    pub field: String,
}

/// The fixed start of every key.
const KEY_ROOT: &str = "det/";

impl SeriesKey {
    /// The key prefix shared by all series of `stream`: `det/<stream>/`.
    pub fn prefix(stream: &str) -> Vec<u8> {
        format!("{KEY_ROOT}{stream}/").into_bytes()
    }

    /// The key bytes: `det/<stream>/<detector>/<sensor>/<field>`, sensor and
    /// field escaped.
    pub fn encode(&self) -> Vec<u8> {
        let mut key = String::with_capacity(
            KEY_ROOT.len()
                + self.stream.len()
                + self.detector.len()
                + self.sensor.len()
                + self.field.len()
                + 8,
        );
        key.push_str(KEY_ROOT);
        key.push_str(&self.stream);
        key.push('/');
        key.push_str(&self.detector);
        key.push('/');
        escape_into(&mut key, &self.sensor);
        key.push('/');
        escape_into(&mut key, &self.field);
        key.into_bytes()
    }

    /// Parse key bytes made by [`encode`](Self::encode).
    pub fn parse(key: &[u8]) -> Result<SeriesKey, DetectError> {
        let bad = |reason| DetectError::Key {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        let text = std::str::from_utf8(key).map_err(|_| bad("not UTF-8"))?;
        let rest = text
            .strip_prefix(KEY_ROOT)
            .ok_or_else(|| bad("does not start with `det/`"))?;
        let mut parts = rest.split('/');
        let (Some(stream), Some(detector), Some(sensor), Some(field), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected det/<stream>/<detector>/<sensor>/<field>"));
        };
        if !is_valid_name(stream) || !is_valid_name(detector) {
            return Err(bad("stream or detector name is not [A-Za-z0-9_-]+"));
        }
        Ok(SeriesKey {
            stream: stream.to_owned(),
            detector: detector.to_owned(),
            sensor: unescape(sensor).ok_or_else(|| bad("bad %-escape in sensor"))?,
            field: unescape(field).ok_or_else(|| bad("bad %-escape in field"))?,
        })
    }
}

/// Append `s` with `%` → `%25` and `/` → `%2F`.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// Undo [`escape_into`]; `None` for any other `%` sequence.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2F" => '/',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// One configured detector, ready to build series.
#[derive(Debug)]
struct Configured {
    name: String,
    fields: Vec<String>,
    config: DetectorConfig,
}

impl Configured {
    fn scores(&self, field: &str) -> bool {
        self.fields.is_empty() || self.fields.iter().any(|f| f == field)
    }
}

/// One live series.
#[derive(Debug)]
struct Series {
    detector: u16,
    sensor: String,
    field: String,
    state: Box<dyn Detector>,
    /// Listed in `dirty` (changed since the last `dirty_states`).
    dirty: bool,
}

/// Series storage: slots plus the list of changed ones.
#[derive(Debug, Default)]
struct Slots {
    series: Vec<Series>,
    /// Slots changed since the last `dirty_states`, each once.
    dirty: Vec<u32>,
}

impl Slots {
    /// Observe `value` in slot `slot`, marking it dirty if it keeps state.
    fn observe(&mut self, slot: u32, ts: i64, value: f64) -> Option<super::Verdict> {
        let s = self.series.get_mut(slot as usize)?;
        let verdict = s.state.observe(ts, value);
        if !s.dirty && s.state.is_stateful() {
            s.dirty = true;
            self.dirty.push(slot);
        }
        Some(verdict)
    }
}

/// The detectors of one stream and their live series; see the
/// [module docs](self) for the persistence keys and the cost per reading.
#[derive(Debug)]
pub struct DetectorSet {
    stream: String,
    detectors: Vec<Configured>,
    include_derived: bool,
    max_series: usize,
    /// sensor → field → (detector index, slot) of each series.
    index: HashMap<String, HashMap<String, Vec<(u16, u32)>>>,
    slots: Slots,
    /// Values not scored because `max_series` was reached.
    untracked: u64,
}

impl DetectorSet {
    /// The detectors of `stream` (a name of `[A-Za-z0-9_-]`), validated.
    pub fn new(stream: &str, config: &DetectorSetConfig) -> Result<DetectorSet, DetectError> {
        if !is_valid_name(stream) {
            return Err(DetectError::Config(format!(
                "stream name {stream:?}: use only letters, digits, `_` and `-`"
            )));
        }
        config.validate().map_err(DetectError::Config)?;
        Ok(DetectorSet {
            stream: stream.to_owned(),
            detectors: config
                .detectors
                .iter()
                .map(|s| Configured {
                    name: s.name().to_owned(),
                    fields: s.fields.clone(),
                    config: s.config.clone(),
                })
                .collect(),
            include_derived: config.include_derived,
            max_series: config.max_series,
            index: HashMap::new(),
            slots: Slots::default(),
            untracked: 0,
        })
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Series tracked.
    pub fn series_count(&self) -> usize {
        self.slots.series.len()
    }

    /// Values not scored because `max_series` was reached (one per value of
    /// an untracked series, not one per series).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Run every applicable detector on the finite fields of `reading`; the
    /// events for flagged values, in field order. Derived records (`kind`
    /// set) are skipped unless `include_derived`.
    ///
    /// Cost: per finite field, two hash lookups by `&str` plus the detectors'
    /// own O(1) (O(window) for `gaussian`, `mad`) work; no allocation once
    /// the series exist, except for the returned events.
    pub fn observe(&mut self, reading: &Reading) -> Vec<AnomalyEvent> {
        let mut events = Vec::new();
        self.observe_into(reading, &mut events, None);
        events
    }

    /// Like [`DetectorSet::observe`], appending the events to `events` and,
    /// when `scores` is given, every verdict (flagged or not) to it —
    /// `replay` prints them per output line.
    pub fn observe_into(
        &mut self,
        reading: &Reading,
        events: &mut Vec<AnomalyEvent>,
        mut scores: Option<&mut Vec<FieldScore>>,
    ) {
        if reading.kind.is_some() && !self.include_derived {
            return;
        }
        let sensor = reading.sensor.as_str();
        for (field, value) in &reading.fields {
            let value = *value;
            if !value.is_finite() {
                continue;
            }
            // Bit d: detector d scores this field (at most 64 detectors).
            let mut missing: u64 = 0;
            for (d, det) in self.detectors.iter().enumerate() {
                if det.scores(field) {
                    missing |= 1 << d;
                }
            }
            if missing == 0 {
                continue;
            }
            if let Some(list) = self.index.get(sensor).and_then(|f| f.get(field.as_str())) {
                for &(d, slot) in list {
                    let bit = 1u64 << d;
                    if missing & bit == 0 {
                        continue;
                    }
                    missing &= !bit;
                    let verdict = self.slots.observe(slot, reading.ts, value);
                    self.record(
                        d,
                        reading,
                        field,
                        value,
                        verdict,
                        events,
                        scores.as_deref_mut(),
                    );
                }
            }
            // Series seen for the first time (the only allocating path).
            while missing != 0 {
                let d = missing.trailing_zeros() as u16;
                missing &= missing - 1;
                let Some(slot) = self.create(d, sensor, field, None) else {
                    continue;
                };
                let verdict = self.slots.observe(slot, reading.ts, value);
                self.record(
                    d,
                    reading,
                    field,
                    value,
                    verdict,
                    events,
                    scores.as_deref_mut(),
                );
            }
        }
    }

    /// Turn one verdict into an event (when flagged) and a score entry.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        d: u16,
        reading: &Reading,
        field: &str,
        value: f64,
        verdict: Option<Verdict>,
        events: &mut Vec<AnomalyEvent>,
        scores: Option<&mut Vec<FieldScore>>,
    ) {
        let Some(v) = verdict else { return };
        if let Some(scores) = scores {
            scores.push(FieldScore {
                field: field.to_owned(),
                detector: self
                    .detectors
                    .get(usize::from(d))
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                score: v.score,
                flag: v.flagged,
            });
        }
        if v.flagged {
            events.push(self.event(d, reading, field, value, v.score));
        }
    }

    fn event(
        &self,
        d: u16,
        reading: &Reading,
        field: &str,
        value: f64,
        score: f64,
    ) -> AnomalyEvent {
        let (detector, kind) = match self.detectors.get(usize::from(d)) {
            Some(c) => (c.name.clone(), c.config.kind()),
            None => (String::new(), ""),
        };
        AnomalyEvent {
            stream: self.stream.clone(),
            sensor: reading.sensor.clone(),
            field: field.to_owned(),
            value,
            score,
            detector,
            kind: kind.to_owned(),
            ts: reading.ts,
        }
    }

    /// Add a series (built fresh, or from `state`); `None` when the limit is
    /// reached (counted in `untracked` for a fresh one).
    fn create(
        &mut self,
        d: u16,
        sensor: &str,
        field: &str,
        state: Option<Box<dyn Detector>>,
    ) -> Option<u32> {
        let slot = u32::try_from(self.slots.series.len()).ok();
        let (Some(slot), true) = (slot, self.slots.series.len() < self.max_series) else {
            if state.is_none() {
                if self.untracked == 0 {
                    tracing::warn!(
                        stream = %self.stream,
                        max_series = self.max_series,
                        "detector series limit reached; new series are not scored"
                    );
                }
                self.untracked = self.untracked.saturating_add(1);
            }
            return None;
        };
        let state = match state {
            Some(s) => s,
            None => self.detectors.get(usize::from(d))?.config.build(),
        };
        self.slots.series.push(Series {
            detector: d,
            sensor: sensor.to_owned(),
            field: field.to_owned(),
            state,
            dirty: false,
        });
        self.index
            .entry(sensor.to_owned())
            .or_default()
            .entry(field.to_owned())
            .or_default()
            .push((d, slot));
        Some(slot)
    }

    /// The key prefix of this stream's states: `det/<stream>/`.
    pub fn key_prefix(&self) -> Vec<u8> {
        SeriesKey::prefix(&self.stream)
    }

    /// `(key, state)` of every series changed since the last call (stateless
    /// detectors never appear). The daemon writes them, e.g. in one sled
    /// batch per flush interval.
    pub fn dirty_states(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.slots.dirty.len());
        for slot in self.slots.dirty.drain(..) {
            let Some(s) = self.slots.series.get_mut(slot as usize) else {
                continue;
            };
            s.dirty = false;
            let Some(det) = self.detectors.get(usize::from(s.detector)) else {
                continue;
            };
            let key = SeriesKey {
                stream: self.stream.clone(),
                detector: det.name.clone(),
                sensor: s.sensor.clone(),
                field: s.field.clone(),
            };
            out.push((key.encode(), s.state.save()));
        }
        out
    }

    /// Restore one series from a `(key, state)` pair of [`dirty_states`]
    /// (typically at start-up, before the first reading). An existing series
    /// is replaced. On error nothing changes; the series starts fresh when
    /// it is next seen. [`DetectError::is_stale`] tells which keys can never
    /// be restored under this configuration (and may be deleted).
    ///
    /// [`dirty_states`]: Self::dirty_states
    pub fn restore(&mut self, key: &[u8], state: &[u8]) -> Result<(), DetectError> {
        let key = SeriesKey::parse(key)?;
        if key.stream != self.stream {
            return Err(DetectError::OtherStream(key.stream));
        }
        let Some((d, configured)) = self
            .detectors
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == key.detector)
        else {
            return Err(DetectError::UnknownDetector(key.detector));
        };
        if !configured.scores(&key.field) {
            return Err(DetectError::NotScored {
                detector: key.detector,
                field: key.field,
            });
        }
        let restored = configured.config.restore(state)?;
        // d < MAX_DETECTORS (64), so it fits.
        let d = d as u16;
        let existing = self
            .index
            .get(key.sensor.as_str())
            .and_then(|f| f.get(key.field.as_str()))
            .and_then(|list| list.iter().find(|(det, _)| *det == d))
            .map(|&(_, slot)| slot);
        match existing {
            Some(slot) => {
                if let Some(s) = self.slots.series.get_mut(slot as usize) {
                    s.state = restored;
                }
                Ok(())
            }
            None => match self.create(d, &key.sensor, &key.field, Some(restored)) {
                Some(_) => Ok(()),
                None => Err(DetectError::SeriesLimit(self.max_series)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::{EwmaConfig, FlatlineConfig, RangeConfig, RateConfig};

    fn set(toml_text: &str) -> DetectorSet {
        let config: DetectorSetConfig = toml::from_str(toml_text).unwrap();
        DetectorSet::new("greenhouse", &config).unwrap()
    }

    const CONFIG: &str = r#"
        max_series = 100
        [[detectors]]
        kind = "range"
        name = "temp-range"
        fields = ["temp"]
        max = 40

        [[detectors]]
        kind = "rate"
        max_rate = 1.0

        [[detectors]]
        kind = "ewma"
        fields = ["hum"]
        warmup = 5
    "#;

    fn reading(sensor: &str, ts: i64, fields: &[(&str, f64)]) -> Reading {
        let mut r = Reading::new(sensor, ts);
        for &(n, v) in fields {
            r = r.with_field(n, v);
        }
        r
    }

    #[test]
    fn config_parses_flattened_specs() {
        let c: DetectorSetConfig = toml::from_str(CONFIG).unwrap();
        assert_eq!(c.max_series, 100);
        assert!(!c.include_derived);
        assert_eq!(
            c.detectors[0],
            DetectorSpec {
                name: Some("temp-range".into()),
                fields: vec!["temp".into()],
                config: DetectorConfig::Range(RangeConfig {
                    max: Some(40.0),
                    ..RangeConfig::default()
                }),
            }
        );
        assert_eq!(
            c.detectors[1],
            DetectorSpec::new(DetectorConfig::Rate(RateConfig::new(1.0)))
        );
        assert_eq!(c.detectors[1].name(), "rate");
        assert_eq!(c.validate(), Ok(()));
        // Unknown keys are refused, in a detector and beside them.
        let e = toml::from_str::<DetectorSetConfig>("[[detectors]]\nkind = \"ewma\"\nwindow = 5")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `window`"), "{e}");
        let e = toml::from_str::<DetectorSetConfig>("max_serie = 5").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_serie`"), "{e}");
        let d = DetectorSetConfig::default();
        assert_eq!(
            (d.max_series, d.include_derived, d.detectors.len()),
            (10_000, false, 0)
        );
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |text: &str| {
            toml::from_str::<DetectorSetConfig>(text)
                .unwrap()
                .validate()
                .unwrap_err()
        };
        let e = bad("[[detectors]]\nkind = \"ewma\"\n[[detectors]]\nkind = \"ewma\"\nalpha = 0.5");
        assert!(
            e.starts_with("detectors[1].name: duplicate detector name \"ewma\""),
            "{e}"
        );
        let e = bad("[[detectors]]\nkind = \"ewma\"\nname = \"a/b\"");
        assert!(e.starts_with("detectors[0].name = \"a/b\""), "{e}");
        let e =
            bad("[[detectors]]\nkind = \"ewma\"\n[[detectors]]\nkind = \"gaussian\"\nwindow = 1");
        assert!(e.starts_with("detectors[1].window = 1"), "{e}");
        let e = bad("[[detectors]]\nkind = \"ewma\"\nfields = [\"\"]");
        assert!(e.starts_with("detectors[0].fields[0]"), "{e}");
        assert!(bad("max_series = 0").starts_with("max_series"));
        let many = "[[detectors]]\nkind = \"ewma\"\n".repeat(65);
        assert!(bad(&many).starts_with("detectors: 65 given"));
        assert!(matches!(
            DetectorSet::new("a/b", &DetectorSetConfig::default()),
            Err(DetectError::Config(_))
        ));
    }

    #[test]
    fn events_only_for_flagged_values_of_scored_fields() {
        let mut s = set(CONFIG);
        let r = reading("gh/1", 0, &[("temp", 20.0), ("hum", 50.0)]);
        assert!(s.observe(&r).is_empty());
        // temp: range + rate; hum: rate + ewma.
        assert_eq!(s.series_count(), 4);
        let r = reading("gh/1", 1_000, &[("temp", 45.0), ("hum", 50.5)]);
        let events = s.observe(&r);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            AnomalyEvent {
                stream: "greenhouse".into(),
                sensor: "gh/1".into(),
                field: "temp".into(),
                value: 45.0,
                score: 1.0,
                detector: "temp-range".into(),
                kind: "range".into(),
                ts: 1_000,
            }
        );
        assert_eq!(
            (events[1].detector.as_str(), events[1].field.as_str()),
            ("rate", "temp")
        );
        assert!(events[1].score > 0.99);
        // Another sensor is another series; unknown fields get only the
        // all-fields detector; NaN is ignored and creates nothing.
        let r = reading("gh/2", 0, &[("co2", 400.0), ("temp", f64::NAN)]);
        assert!(s.observe(&r).is_empty());
        assert_eq!(s.series_count(), 5);
    }

    #[test]
    fn derived_records_are_skipped_unless_included() {
        let mut r = reading("gh/1", 0, &[("temp", 99.0)]);
        r.kind = Some("stats".into());
        let mut s = set(CONFIG);
        assert!(s.observe(&r).is_empty());
        assert_eq!(s.series_count(), 0);
        let mut s = set(&format!("include_derived = true\n{CONFIG}"));
        assert_eq!(s.observe(&r).len(), 1);
    }

    #[test]
    fn series_limit() {
        let mut s = set(CONFIG
            .replace("max_series = 100", "max_series = 3")
            .as_str());
        s.observe(&reading("a", 0, &[("temp", 1.0), ("hum", 2.0)])); // 4 wanted, 3 fit
        assert_eq!((s.series_count(), s.untracked()), (3, 1));
        // The tracked series keep working; the others stay untracked.
        let events = s.observe(&reading("a", 1_000, &[("temp", 50.0), ("hum", 2.0)]));
        assert_eq!(events.len(), 2);
        s.observe(&reading("b", 0, &[("temp", 1.0)]));
        assert_eq!((s.series_count(), s.untracked()), (3, 4));
    }

    #[test]
    fn dirty_states_report_each_changed_series_once() {
        let mut s = set(CONFIG);
        s.observe(&reading("gh/1", 0, &[("temp", 20.0), ("hum", 50.0)]));
        s.observe(&reading("gh/1", 1_000, &[("temp", 20.5)]));
        let dirty = s.dirty_states();
        let keys: Vec<String> = dirty
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect();
        // The stateless range detector is never reported.
        assert_eq!(
            keys,
            [
                "det/greenhouse/rate/gh%2F1/temp",
                "det/greenhouse/rate/gh%2F1/hum",
                "det/greenhouse/ewma/gh%2F1/hum",
            ]
        );
        assert!(s.dirty_states().is_empty());
        s.observe(&reading("gh/1", 2_000, &[("hum", 51.0)]));
        let keys: Vec<Vec<u8>> = s.dirty_states().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.starts_with(&s.key_prefix())));
    }

    /// Feeds a sensor that is fine, then spikes; returns all events.
    fn feed(s: &mut DetectorSet, from: i64, to: i64) -> Vec<AnomalyEvent> {
        let mut events = Vec::new();
        for t in from..to {
            let hum = 50.0 + (t % 3) as f64 + if t == 25 { 30.0 } else { 0.0 };
            let temp = if t >= 12 { 21.0 } else { 20.0 + t as f64 * 0.1 };
            let r = reading("gh/1", t * 1_000, &[("temp", temp), ("hum", hum)]);
            events.extend(s.observe(&r));
        }
        events
    }

    #[test]
    fn persisted_states_continue_after_a_restart() {
        let text = r#"
            [[detectors]]
            kind = "ewma"
            fields = ["hum"]
            [[detectors]]
            kind = "flatline"
            count = 5
            [[detectors]]
            kind = "mad"
            window = 8
        "#;
        let mut straight = set(text);
        let expected = feed(&mut straight, 0, 40);
        assert!(expected.iter().any(|e| e.kind == "ewma" && e.ts == 25_000));
        assert!(expected.iter().any(|e| e.kind == "flatline"));

        let mut before = set(text);
        let mut got = feed(&mut before, 0, 20);
        let mut store = BTreeMap::new();
        store.extend(before.dirty_states());
        feed(&mut before, 20, 21);
        store.extend(before.dirty_states()); // only what changed is rewritten
        drop(before);
        let mut after = set(text);
        for (k, v) in &store {
            after.restore(k, v).unwrap();
        }
        assert_eq!(after.series_count(), 5);
        assert!(after.dirty_states().is_empty());
        got.extend(feed(&mut after, 21, 40));
        // Readings 0..21 straight, 21.. after the restart: the same events.
        let expected_without_20: Vec<_> = expected
            .iter()
            .filter(|e| e.ts != 20_000)
            .cloned()
            .collect();
        let got_without_20: Vec<_> = got.into_iter().filter(|e| e.ts != 20_000).collect();
        assert_eq!(got_without_20, expected_without_20);
    }

    #[test]
    fn restore_errors() {
        let mut s = set(CONFIG);
        let ewma = DetectorConfig::Ewma(EwmaConfig::default()).build().save();
        let e = s.restore(b"det/other/ewma/a/hum", &ewma).unwrap_err();
        assert!(matches!(e, DetectError::OtherStream(_)) && !e.is_stale());
        let e = s.restore(b"det/greenhouse/gone/a/hum", &ewma).unwrap_err();
        assert!(matches!(e, DetectError::UnknownDetector(_)) && e.is_stale());
        let e = s.restore(b"det/greenhouse/ewma/a/temp", &ewma).unwrap_err();
        assert!(matches!(e, DetectError::NotScored { .. }) && e.is_stale());
        let e = s
            .restore(b"det/greenhouse/ewma/a/hum/x", &ewma)
            .unwrap_err();
        assert!(matches!(e, DetectError::Key { .. }) && e.is_stale());
        let e = s.restore(b"det/greenhouse/rate/a/hum", &ewma).unwrap_err();
        assert!(matches!(e, DetectError::KindMismatch { .. }) && e.is_stale());
        assert_eq!(s.series_count(), 0);
        s.restore(b"det/greenhouse/ewma/a/hum", &ewma).unwrap();
        s.restore(b"det/greenhouse/ewma/a/hum", &ewma).unwrap(); // replaces
        assert_eq!(s.series_count(), 1);

        let mut s = set("max_series = 1\n[[detectors]]\nkind = \"ewma\"");
        s.restore(b"det/greenhouse/ewma/a/x", &ewma).unwrap();
        let e = s.restore(b"det/greenhouse/ewma/b/x", &ewma).unwrap_err();
        assert!(matches!(e, DetectError::SeriesLimit(1)) && !e.is_stale());
        assert_eq!(s.untracked(), 0);
    }

    #[test]
    fn keys_escape_sensor_and_field() {
        let key = SeriesKey {
            stream: "s-1".into(),
            detector: "flatline".into(),
            sensor: "site/100%/a".into(),
            field: "t/x".into(),
        };
        let bytes = key.encode();
        assert_eq!(bytes, b"det/s-1/flatline/site%2F100%25%2Fa/t%2Fx");
        assert_eq!(SeriesKey::parse(&bytes).unwrap(), key);
        assert!(bytes.starts_with(&SeriesKey::prefix("s-1")));
        for bad in [
            &b"det/s/d/a%2/f"[..],
            b"det/s/d/a%41/f",
            b"state/s/d/a/f",
            b"det/s/d/a",
            b"det/s/d/a/f/g",
            b"det/s!/d/a/f",
            b"det/s/d/\xff/f",
        ] {
            assert!(
                SeriesKey::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let empty = SeriesKey {
            sensor: String::new(),
            field: String::new(),
            ..key
        };
        assert_eq!(SeriesKey::parse(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn event_json_field_order() {
        let e = AnomalyEvent {
            stream: "s".into(),
            sensor: "a".into(),
            field: "t".into(),
            value: 1.5,
            score: 0.75,
            detector: "d".into(),
            kind: "mad".into(),
            ts: 7,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"stream":"s","sensor":"a","field":"t","value":1.5,"score":0.75,"detector":"d","kind":"mad","ts":7}"#
        );
    }

    #[test]
    fn flatline_fields_filter_and_default_names() {
        let spec = DetectorSpec {
            fields: vec!["temp".into()],
            ..DetectorSpec::new(DetectorConfig::Flatline(FlatlineConfig::default()))
        };
        assert_eq!(spec.name(), "flatline");
        let config = DetectorSetConfig {
            detectors: vec![spec],
            ..DetectorSetConfig::default()
        };
        let mut s = DetectorSet::new("x", &config).unwrap();
        for t in 0..12 {
            let events = s.observe(&reading("a", t, &[("hum", 1.0), ("temp", 2.0)]));
            assert_eq!(events.len(), usize::from(t >= 9), "t = {t}");
        }
        assert_eq!(s.stream(), "x");
    }
}
