//! `window-stats`: per-sensor tumbling windows summarised as count, average,
//! minimum and maximum of every field.
//!
//! # Config
//!
//! Exactly one of:
//!
//! ```toml
//! count = 10     # integer >= 1: a window is N consecutive readings of a sensor
//! seconds = 60   # number > 0: event-time windows [k*T*1000, (k+1)*T*1000) ms
//! ```
//!
//! (`seconds` may be fractional as long as `T*1000` is a whole number of ms.)
//!
//! # Behaviour
//!
//! Input readings are consumed, never passed through. Each sensor has at most
//! one open window, into which its readings are accumulated: for every field
//! (first-seen order within the window) the count of values, their sum, min
//! and max. Non-finite values are not accumulated. When a window closes, one
//! reading is emitted, in the position of the reading that closed it:
//!
//! * `sensor`: the window's sensor; `kind`: `"stats"`; no tags;
//! * `ts`: the `ts` of the window's last reading (count mode) or the
//!   window's start `k*T*1000` (time mode);
//! * `fields`: for each field `f`, in first-seen order, `f_count`, `f_avg`
//!   (sum / count), `f_min`, `f_max`. A window whose readings had no fields
//!   gives a stats reading without fields.
//!
//! Count mode: a window closes as soon as its Nth reading has been
//! accumulated (the stats reading is emitted right after that reading).
//!
//! Time mode: a reading with `ts` at or past the open window's end closes it
//! (the stats are emitted before that reading is accumulated into a new
//! window, the one containing its `ts`). Windows in which no reading arrived
//! are not emitted, and a window is only closed by a later reading of the
//! same sensor. A reading older than the open window's start (late data) is
//! dropped, with a debug log line.
//!
//! # State
//!
//! The open window of each sensor is kept in host state under `ws/<sensor>`
//! (a CBOR map: `mode` (`"count"`/`"seconds"`), `size` (N or window ms),
//! `start`, `n` (readings so far), `last_ts`, `fields`: `[[name, count, sum,
//! min, max], ...]`, floats as float64), read at most once per
//! batch and written (or deleted, when no window is open) at the end of the
//! batch, so restarts do not lose open windows. A stored window made under a
//! different mode or size is discarded with a warning.
//!
//! `init` fails with code `bad-config` if both or neither of `count` and
//! `seconds` are given, if either is 0, negative or of the wrong type, or on
//! any other key.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use wasmgate_sdk::prelude::*;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Close after N readings.
    Count(u64),
    /// Event-time windows of this many ms.
    Time(i64),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Count(_) => "count",
            Mode::Time(_) => "seconds",
        }
    }

    fn size(self) -> u64 {
        match self {
            Mode::Count(n) => n,
            Mode::Time(ms) => ms as u64,
        }
    }
}

static MODE: Global<Mode> = Global::new();

#[derive(Clone, Copy)]
struct Acc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// A sensor's open window (stored under `ws/<sensor>`, see `to_value`).
struct Open {
    mode: String,
    size: u64,
    /// Window start (time mode; the first reading's ts in count mode).
    start: i64,
    /// Readings accumulated.
    n: u64,
    last_ts: i64,
    fields: Vec<(String, Acc)>,
}

impl Open {
    fn new(mode: Mode, start: i64) -> Self {
        Open {
            mode: mode.name().to_string(),
            size: mode.size(),
            start,
            n: 0,
            last_ts: start,
            fields: Vec::new(),
        }
    }

    fn add(&mut self, r: &Reading) {
        self.n += 1;
        self.last_ts = r.ts;
        for (name, v) in &r.fields {
            let v = *v;
            if !v.is_finite() {
                continue;
            }
            match self.fields.iter_mut().find(|(n, _)| n == name) {
                Some((_, acc)) => {
                    acc.count += 1;
                    acc.sum += v;
                    acc.min = acc.min.min(v);
                    acc.max = acc.max.max(v);
                }
                None => self.fields.push((
                    name.clone(),
                    Acc {
                        count: 1,
                        sum: v,
                        min: v,
                        max: v,
                    },
                )),
            }
        }
    }

    /// `{mode, size, start, n, last_ts, fields: [[name, count, sum, min, max], ...]}`
    fn to_value(&self) -> Value {
        let fields = self
            .fields
            .iter()
            .map(|(name, a)| {
                Value::Array(vec![
                    Value::from(name.as_str()),
                    Value::from(a.count),
                    Value::from(a.sum),
                    Value::from(a.min),
                    Value::from(a.max),
                ])
            })
            .collect();
        Value::Map(vec![
            ("mode".into(), Value::from(self.mode.as_str())),
            ("size".into(), Value::from(self.size)),
            ("start".into(), Value::from(self.start)),
            ("n".into(), Value::from(self.n)),
            ("last_ts".into(), Value::from(self.last_ts)),
            ("fields".into(), Value::Array(fields)),
        ])
    }

    /// The inverse of [`to_value`](Self::to_value); `None` if malformed.
    fn from_value(v: &Value) -> Option<Open> {
        let map = v.as_map()?;
        let get = |key: &str| map.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let mut fields = Vec::new();
        for f in get("fields")?.as_array()? {
            match f.as_array()? {
                [name, count, sum, min, max] => fields.push((
                    name.as_str()?.to_string(),
                    Acc {
                        count: count.as_u64()?,
                        sum: sum.as_f64()?,
                        min: min.as_f64()?,
                        max: max.as_f64()?,
                    },
                )),
                _ => return None,
            }
        }
        Some(Open {
            mode: get("mode")?.as_str()?.to_string(),
            size: get("size")?.as_u64()?,
            start: get("start")?.as_i64()?,
            n: get("n")?.as_u64()?,
            last_ts: get("last_ts")?.as_i64()?,
            fields,
        })
    }

    fn emit(&self, sensor: &str, ts: i64) -> Reading {
        let mut out = Reading::new(sensor, ts).with_kind("stats");
        out.fields.reserve(self.fields.len() * 4);
        for (name, acc) in &self.fields {
            out.fields.push((format!("{name}_count"), acc.count as f64));
            out.fields
                .push((format!("{name}_avg"), acc.sum / acc.count as f64));
            out.fields.push((format!("{name}_min"), acc.min));
            out.fields.push((format!("{name}_max"), acc.max));
        }
        out
    }
}

fn init(config: &Config) -> Result<()> {
    config.deny_unknown_keys(&["count", "seconds"])?;
    let mode = match (config.get("count"), config.get("seconds")) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "config: give either `count` or `seconds`, not both",
            ));
        }
        (None, None) => {
            return Err(Error::config(
                "config: one of `count` (readings) or `seconds` (event time) is required",
            ));
        }
        (Some(_), None) => match config.get_u64("count")? {
            Some(0) => return Err(config.error("count", "must be at least 1")),
            n => Mode::Count(n.unwrap_or(1)),
        },
        (None, Some(_)) => {
            let t = config.get_f64("seconds")?.unwrap_or(0.0);
            let ms = t * 1000.0;
            if !((1.0..=1e15).contains(&ms) && ms == (ms as i64) as f64) {
                return Err(
                    config.error("seconds", "must be > 0 and a whole number of milliseconds")
                );
            }
            Mode::Time(ms as i64)
        }
    };
    MODE.set(mode);
    Ok(())
}

fn load(sensor: &str, mode: Mode) -> Result<Option<Open>> {
    let key = format!("ws/{sensor}");
    let Some(value) = state::get_value(&key)? else {
        return Ok(None);
    };
    let Some(open) = Open::from_value(&value) else {
        return Err(Error::state(format!(
            "state key `{key}` does not hold a window"
        )));
    };
    Ok(Some(open).filter(|o| {
        let same = o.mode == mode.name() && o.size == mode.size();
        if !same {
            warn!(
                "{key}: discarding a window made with {} = {} (config changed)",
                o.mode, o.size
            );
        }
        same
    }))
}

fn process(batch: Vec<Reading>) -> Result<Vec<Reading>> {
    let mode = *MODE.get()?;
    let mut out = Vec::new();
    // sensor -> open window, loaded on first use in this batch
    let mut open: BTreeMap<String, Option<Open>> = BTreeMap::new();
    for r in &batch {
        if !open.contains_key(&r.sensor) {
            let loaded = load(&r.sensor, mode)?;
            open.insert(r.sensor.clone(), loaded);
        }
        let slot = open.get_mut(&r.sensor).expect("inserted above");
        match mode {
            Mode::Count(n) => {
                let w = slot.get_or_insert_with(|| Open::new(mode, r.ts));
                w.add(r);
                if w.n >= n {
                    out.push(w.emit(&r.sensor, w.last_ts));
                    *slot = None;
                }
            }
            Mode::Time(ms) => {
                let start = r.ts - r.ts.rem_euclid(ms);
                if let Some(w) = slot.as_ref() {
                    if r.ts < w.start {
                        debug!(
                            "{}: dropping late reading at {} (window starts at {})",
                            r.sensor, r.ts, w.start
                        );
                        continue;
                    }
                    if i128::from(r.ts) >= i128::from(w.start) + i128::from(ms) {
                        out.push(w.emit(&r.sensor, w.start));
                        *slot = None;
                    }
                }
                slot.get_or_insert_with(|| Open::new(mode, start)).add(r);
            }
        }
    }
    for (sensor, w) in &open {
        let key = format!("ws/{sensor}");
        match w {
            Some(w) => state::set_value(&key, &w.to_value())?,
            None => state::delete(&key),
        }
    }
    Ok(out)
}

wasmgate_sdk::processor!(init = init, process = process);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::testing;

    fn r(sensor: &str, ts: i64, t: f64) -> Reading {
        Reading::new(sensor, ts).with_field("t", t)
    }

    fn stats(out: &Reading) -> Vec<(&str, f64)> {
        out.fields.iter().map(|(n, v)| (n.as_str(), *v)).collect()
    }

    #[test]
    fn count_windows_per_sensor_survive_restart() {
        testing::reset();
        let config = Config::new().with("count", 3);
        testing::run_init(init, &config).unwrap();
        let out = testing::run_process(process, &[r("a", 1, 1.0), r("b", 1, 5.0), r("a", 2, 3.0)])
            .unwrap();
        assert!(out.is_empty());
        assert!(testing::state_get("ws/a").is_some());

        testing::restart();
        testing::run_init(init, &config).unwrap();
        let out = testing::run_process(
            process,
            &[r("a", 3, 2.0).with_field("h", 7.0), r("a", 4, 9.0)],
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].sensor.as_str(), out[0].ts, out[0].kind.as_deref()),
            ("a", 3, Some("stats"))
        );
        assert_eq!(
            stats(&out[0]),
            [
                ("t_count", 3.0),
                ("t_avg", 2.0),
                ("t_min", 1.0),
                ("t_max", 3.0),
                ("h_count", 1.0),
                ("h_avg", 7.0),
                ("h_min", 7.0),
                ("h_max", 7.0),
            ]
        );
        assert_eq!(testing::state_keys(), ["ws/a", "ws/b"]); // a: new window holding ts 4
    }

    #[test]
    fn time_windows() {
        testing::reset();
        testing::run_init(init, &Config::new().with("seconds", 10)).unwrap();
        let out = testing::run_process(
            process,
            &[
                r("a", 10_000, 1.0),
                r("a", 19_999, 3.0),
                r("a", 5_000, 100.0), // late: dropped
                r("a", 45_000, 5.0),  // closes [10s, 20s); [20s, 40s) were empty
            ],
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts, 10_000);
        assert_eq!(
            stats(&out[0]),
            [
                ("t_count", 2.0),
                ("t_avg", 2.0),
                ("t_min", 1.0),
                ("t_max", 3.0)
            ]
        );
        let out = testing::run_process(process, &[r("a", 50_000, 1.0)]).unwrap();
        assert_eq!(out[0].ts, 40_000);
        assert_eq!(stats(&out[0])[0], ("t_count", 1.0));
    }

    #[test]
    fn bad_configs() {
        testing::reset();
        for config in [
            Config::new(),
            Config::new().with("count", 2).with("seconds", 1),
            Config::new().with("count", 0),
            Config::new().with("seconds", 0),
            Config::new().with("seconds", -1.0),
            Config::new().with("count", "3"),
        ] {
            let e = testing::run_init(init, &config).unwrap_err();
            assert_eq!(e.code, "bad-config", "{e}");
        }
    }
}
