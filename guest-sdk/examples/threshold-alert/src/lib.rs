//! `threshold-alert`: per-sensor warning/critical levels with hysteresis,
//! emitting an alert reading on every level change.
//!
//! # Config
//!
//! ```toml
//! field = "temp"        # required: the field to watch
//! warning = 30.0        # required number
//! critical = 40.0       # required number
//! hysteresis = 2.0      # number >= 0, default 0.0
//! direction = "above"   # "above" (default) or "below"
//! pass_through = true   # default true: also emit every input reading
//! ```
//!
//! # Behaviour
//!
//! Levels are `normal` < `warning` < `critical`; each sensor starts at
//! `normal`. For a reading of sensor `s` whose `field` has a finite value
//! `v`, with `current` the level of `s`, the new level is the highest of
//! `warning`/`critical` whose threshold `th` is *reached*, or which is at or
//! below `current` and still *held*, else `normal`:
//!
//! | direction | reached | held |
//! |---|---|---|
//! | `above` | `v >= th` | `v >= th - hysteresis` |
//! | `below` | `v <= th` | `v <= th + hysteresis` |
//!
//! So a level is entered at its threshold and kept until the value crosses
//! back past `threshold ∓ hysteresis`; when leaving `critical`, the value
//! may stay in `warning` while `warning` is held (e.g. above, warning 30,
//! critical 40, hysteresis 2: 41 → critical, 38.5 → critical, 37 → warning,
//! 28.5 → warning, 27 → normal).
//!
//! Outputs, in input order: each input reading unchanged if `pass_through`,
//! and, right after the reading that changed its sensor's level, an alert:
//! same `sensor` and `ts`, `kind = "alert"`, fields `[(field, v)]`, tags (in
//! this order) `level` = new level, `previous` = old level, `field` = the
//! field name. Readings without the field (or with a non-finite value) pass
//! through (if `pass_through`) and change nothing.
//!
//! # State
//!
//! Each sensor's level is kept in host state under `ta/<sensor>` (CBOR text
//! `"warning"` or `"critical"`; absent means `normal`), read at most once per
//! batch and written at the end of a batch that changed it.
//!
//! `init` fails with code `bad-config` if `field`, `warning` or `critical`
//! is missing or of the wrong type, `hysteresis` is negative, `direction` is
//! neither `above` nor `below`, the thresholds are out of order (`warning >
//! critical` for `above`, `warning < critical` for `below`), or on any other
//! key.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use wasmgate_sdk::prelude::*;

const LEVELS: [&str; 3] = ["normal", "warning", "critical"];

struct Settings {
    field: String,
    /// Thresholds of levels 1 (warning) and 2 (critical).
    thresholds: [f64; 2],
    hysteresis: f64,
    above: bool,
    pass_through: bool,
}

impl Settings {
    /// The new level (0 normal, 1 warning, 2 critical) for value `v`.
    fn level(&self, current: usize, v: f64) -> usize {
        (1..=2)
            .rev()
            .find(|&level| {
                let th = self.thresholds[level - 1];
                let (reached, held) = if self.above {
                    (v >= th, v >= th - self.hysteresis)
                } else {
                    (v <= th, v <= th + self.hysteresis)
                };
                reached || (level <= current && held)
            })
            .unwrap_or(0)
    }
}

static SETTINGS: Global<Settings> = Global::new();

fn init(config: &Config) -> Result<()> {
    config.deny_unknown_keys(&[
        "field",
        "warning",
        "critical",
        "hysteresis",
        "direction",
        "pass_through",
    ])?;
    let finite = |key: &str, v: f64| match v.is_finite() {
        true => Ok(v),
        false => Err(config.error(key, "must be a finite number")),
    };
    let field = config.require_str("field")?.to_string();
    let warning = finite("warning", config.require_f64("warning")?)?;
    let critical = finite("critical", config.require_f64("critical")?)?;
    let hysteresis = finite("hysteresis", config.get_f64("hysteresis")?.unwrap_or(0.0))?;
    if hysteresis < 0.0 {
        return Err(config.error("hysteresis", "must not be negative"));
    }
    let above = match config.get_str("direction")?.unwrap_or("above") {
        "above" => true,
        "below" => false,
        other => {
            return Err(config.error(
                "direction",
                format_args!("must be \"above\" or \"below\", found \"{other}\""),
            ));
        }
    };
    if above && warning > critical {
        return Err(config.error(
            "warning",
            "must not exceed `critical` (direction \"above\")",
        ));
    }
    if !above && warning < critical {
        return Err(config.error(
            "warning",
            "must not be below `critical` (direction \"below\")",
        ));
    }
    let pass_through = config.get_bool("pass_through")?.unwrap_or(true);
    SETTINGS.set(Settings {
        field,
        thresholds: [warning, critical],
        hysteresis,
        above,
        pass_through,
    });
    Ok(())
}

fn load(sensor: &str) -> Result<usize> {
    let stored: Option<String> = state::get_cbor(format!("ta/{sensor}"))?;
    Ok(match stored.as_deref() {
        None => 0,
        Some(name) => LEVELS.iter().position(|l| *l == name).unwrap_or_else(|| {
            warn!("ta/{sensor}: unknown stored level \"{name}\", starting at normal");
            0
        }),
    })
}

fn process(batch: Vec<Reading>) -> Result<Vec<Reading>> {
    let settings = SETTINGS.get()?;
    let mut out = Vec::with_capacity(batch.len());
    // sensor -> (level, changed in this batch), loaded on first use
    let mut levels: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for reading in batch {
        let value = reading.field(&settings.field).filter(|v| v.is_finite());
        let alert = match value {
            None => None,
            Some(v) => {
                if !levels.contains_key(&reading.sensor) {
                    let loaded = load(&reading.sensor)?;
                    levels.insert(reading.sensor.clone(), (loaded, false));
                }
                let (level, changed) = levels.get_mut(&reading.sensor).expect("inserted above");
                let previous = *level;
                *level = settings.level(previous, v);
                (*level != previous).then(|| {
                    *changed = true;
                    Reading::new(reading.sensor.as_str(), reading.ts)
                        .with_kind("alert")
                        .with_field(settings.field.as_str(), v)
                        .with_tag("level", LEVELS[*level])
                        .with_tag("previous", LEVELS[previous])
                        .with_tag("field", settings.field.as_str())
                })
            }
        };
        if settings.pass_through {
            out.push(reading);
        }
        out.extend(alert);
    }
    for (sensor, &(level, changed)) in &levels {
        let key = format!("ta/{sensor}");
        match (changed, level) {
            (false, _) => {}
            (true, 0) => state::delete(&key),
            (true, level) => state::set_value(&key, &Value::from(LEVELS[level]))?,
        }
    }
    Ok(out)
}

wasmgate_sdk::processor!(init = init, process = process);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::testing;

    fn r(sensor: &str, ts: i64, temp: f64) -> Reading {
        Reading::new(sensor, ts).with_field("temp", temp)
    }

    fn config() -> Config {
        Config::new()
            .with("field", "temp")
            .with("warning", 30)
            .with("critical", 40.0)
            .with("hysteresis", 2.0)
    }

    /// (ts, level, previous) of the alerts in `out`.
    fn alerts(out: &[Reading]) -> Vec<(i64, &str, &str)> {
        out.iter()
            .filter(|r| r.is_kind("alert"))
            .map(|r| (r.ts, r.tag("level").unwrap(), r.tag("previous").unwrap()))
            .collect()
    }

    #[test]
    fn levels_with_hysteresis_above() {
        testing::reset();
        testing::run_init(init, &config()).unwrap();
        let values = [29.0, 30.0, 41.0, 38.5, 37.0, 28.5, 27.0, 40.0, 10.0];
        let batch: Vec<Reading> = values
            .iter()
            .enumerate()
            .map(|(i, v)| r("s", i as i64, *v))
            .collect();
        let out = testing::run_process(process, &batch).unwrap();
        assert_eq!(
            alerts(&out),
            [
                (1, "warning", "normal"),
                (2, "critical", "warning"),
                (4, "warning", "critical"),
                (6, "normal", "warning"),
                (7, "critical", "normal"),
                (8, "normal", "critical"),
            ]
        );
        // pass-through: every input, each alert right after its reading
        assert_eq!(out.len(), values.len() + 6);
        assert_eq!(out[1], batch[1]);
        let alert = &out[2];
        assert_eq!(alert.fields, vec![("temp".to_string(), 30.0)]);
        assert_eq!(
            alert.tags,
            vec![
                ("level".to_string(), "warning".to_string()),
                ("previous".to_string(), "normal".to_string()),
                ("field".to_string(), "temp".to_string()),
            ]
        );
    }

    #[test]
    fn below_no_pass_through_and_state() {
        testing::reset();
        let config = Config::new()
            .with("field", "temp")
            .with("warning", 5)
            .with("critical", 0)
            .with("hysteresis", 1)
            .with("direction", "below")
            .with("pass_through", false);
        testing::run_init(init, &config).unwrap();
        let out = testing::run_process(
            process,
            &[
                r("a", 1, 4.0),
                Reading::new("a", 2),
                r("b", 3, 10.0),
                r("a", 4, 5.5),
            ],
        )
        .unwrap();
        assert_eq!(alerts(&out), [(1, "warning", "normal")]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            testing::state_get_cbor::<String>("ta/a").as_deref(),
            Some("warning")
        );
        testing::restart();
        testing::run_init(init, &config).unwrap();
        let out = testing::run_process(process, &[r("a", 5, 6.5)]).unwrap();
        assert_eq!(alerts(&out), [(5, "normal", "warning")]);
        assert_eq!(testing::state_keys(), Vec::<String>::new());
    }

    #[test]
    fn bad_configs() {
        testing::reset();
        for (config, key) in [
            (config().with("warning", 50), "`warning`"),
            (config().with("direction", "sideways"), "`direction`"),
            (config().with("hysteresis", -1), "`hysteresis`"),
            (config().with("field", 3), "`field`"),
            (
                Config::new().with("field", "t").with("warning", 1),
                "`critical`",
            ),
            (
                Config::new().with("warning", 1).with("critical", 2),
                "`field`",
            ),
            (config().with("direction", "below"), "`warning`"),
        ] {
            let e = testing::run_init(init, &config).unwrap_err();
            assert_eq!(e.code, "bad-config");
            assert!(e.message.contains(key), "{e}");
        }
    }
}
