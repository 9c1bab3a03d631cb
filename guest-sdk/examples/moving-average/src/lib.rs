//! `moving-average`: per-sensor, per-field moving average over the last N
//! values, which survives restarts.
//!
//! # Config
//!
//! ```toml
//! window = 5               # integer >= 1, default 5
//! fields = ["temp", "hum"] # optional, non-empty; default: every field
//! ```
//!
//! # Behaviour
//!
//! Every input reading yields exactly one output reading, in order, with the
//! same `sensor`, `ts`, `kind` and `tags` and the same fields in the same
//! order. Each *selected* field's value is replaced by the mean of the last
//! `window` values of that (sensor, field), the current value included: the
//! sum of those values, oldest first, divided by their count (fewer than
//! `window` until that many have been seen). Other fields pass unchanged. A
//! non-finite input value is not added to the window; the field then gets
//! the mean of the window as it stands (or is left as it is if the window is
//! still empty).
//!
//! # State
//!
//! The window of each (sensor, field) lives in host state under the key
//! `ma/<sensor>/<field>`: a CBOR array of the last (up to `window`) input
//! values as float64, oldest first. Within a batch each key is read at most
//! once (on first use) and every key the batch touched is written once at the
//! end, so running batches through a fresh instance (after a restart or a
//! trap) continues the same averages. A stored window longer than `window`
//! (after the config shrank) is cut to its newest `window` values.
//!
//! `init` fails with code `bad-config` (naming the key) if `window` is not an
//! integer >= 1, if `fields` is not a non-empty array of text, or on any
//! other key.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use wasmgate_sdk::prelude::*;

struct Settings {
    window: usize,
    /// `None`: every field.
    fields: Option<Vec<String>>,
}

static SETTINGS: Global<Settings> = Global::new();

fn init(config: &Config) -> Result<()> {
    config.deny_unknown_keys(&["window", "fields"])?;
    let window = match config.get_u64("window")?.unwrap_or(5) {
        0 => return Err(config.error("window", "must be at least 1")),
        n => usize::try_from(n).map_err(|_| config.error("window", "is too large"))?,
    };
    let fields = match config.get_array("fields")? {
        None => None,
        Some([]) => {
            return Err(config.error(
                "fields",
                "must name at least one field (omit it for all fields)",
            ));
        }
        Some(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_str() {
                    Some(s) => Ok(s.to_string()),
                    None => Err(config.error(&format!("fields[{i}]"), "expected text")),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    SETTINGS.set(Settings { window, fields });
    Ok(())
}

fn process(mut batch: Vec<Reading>) -> Result<Vec<Reading>> {
    let settings = SETTINGS.get()?;
    let window = settings.window;
    // state key -> window, loaded on first use in this batch
    let mut windows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for reading in &mut batch {
        for (name, value) in &mut reading.fields {
            if settings.fields.as_ref().is_some_and(|f| !f.contains(name)) {
                continue;
            }
            let key = format!("ma/{}/{}", reading.sensor, name);
            let values = match windows.entry(key) {
                alloc::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                alloc::collections::btree_map::Entry::Vacant(e) => {
                    let mut stored: Vec<f64> = state::get_cbor(e.key())?.unwrap_or_default();
                    let excess = stored.len().saturating_sub(window);
                    stored.drain(..excess);
                    e.insert(stored)
                }
            };
            if value.is_finite() {
                if values.len() == window {
                    values.remove(0);
                }
                values.push(*value);
            }
            if !values.is_empty() {
                *value = values.iter().sum::<f64>() / values.len() as f64;
            }
        }
    }
    for (key, values) in &windows {
        let array: Value = values.iter().copied().collect();
        state::set_value(key, &array)?;
    }
    Ok(batch)
}

wasmgate_sdk::processor!(init = init, process = process);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::testing;

    fn r(sensor: &str, ts: i64, temp: f64, hum: f64) -> Reading {
        Reading::new(sensor, ts)
            .with_field("temp", temp)
            .with_field("hum", hum)
    }

    #[test]
    fn averages_selected_fields_across_batches_and_restarts() {
        testing::reset();
        let config = Config::new()
            .with("window", 3)
            .with("fields", ["temp"].into_iter().collect::<Value>());
        testing::run_init(init, &config).unwrap();
        let out = testing::run_process(
            process,
            &[
                r("a", 1, 1.0, 10.0),
                r("b", 1, 100.0, 0.0),
                r("a", 2, 2.0, 20.0),
            ],
        )
        .unwrap();
        let temps: Vec<f64> = out.iter().map(|r| r.field("temp").unwrap()).collect();
        assert_eq!(temps, [1.0, 100.0, 1.5]);
        assert_eq!(out[2].field("hum"), Some(20.0)); // not selected
        assert_eq!(
            testing::state_get_cbor::<Vec<f64>>("ma/a/temp"),
            Some(vec![1.0, 2.0])
        );
        assert_eq!(testing::state_keys(), ["ma/a/temp", "ma/b/temp"]);

        testing::restart();
        testing::run_init(init, &config).unwrap();
        let out =
            testing::run_process(process, &[r("a", 3, 3.0, 0.0), r("a", 4, 10.0, 0.0)]).unwrap();
        let temps: Vec<f64> = out.iter().map(|r| r.field("temp").unwrap()).collect();
        assert_eq!(temps, [2.0, 5.0]); // (1+2+3)/3, (2+3+10)/3
    }

    #[test]
    fn default_is_all_fields_window_5() {
        testing::reset();
        testing::run_init(init, &Config::new()).unwrap();
        let batch: Vec<Reading> = (0..7)
            .map(|i| r("s", i, i as f64, 2.0 * i as f64))
            .collect();
        let out = testing::run_process(process, &batch).unwrap();
        assert_eq!(
            out[6].fields,
            vec![("temp".to_string(), 4.0), ("hum".to_string(), 8.0)]
        );
        assert_eq!(out[6].ts, 6);
    }

    #[test]
    fn bad_configs() {
        testing::reset();
        for (config, key) in [
            (Config::new().with("window", 0), "`window`"),
            (Config::new().with("window", 2.5), "`window`"),
            (
                Config::new().with("fields", Value::Array(vec![])),
                "`fields`",
            ),
            (
                Config::new().with("fields", [Value::from(1)].into_iter().collect::<Value>()),
                "`fields[0]`",
            ),
            (Config::new().with("windw", 3), "`windw`"),
        ] {
            let e = testing::run_init(init, &config).unwrap_err();
            assert_eq!(e.code, "bad-config");
            assert!(e.message.contains(key), "{e}");
        }
    }
}
