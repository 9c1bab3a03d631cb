//! `calibrate`: linear calibration (and optional renaming) of configured fields.
//!
//! # Config
//!
//! ```toml
//! [fields.temp]          # one table per field to calibrate
//! scale = 1.8            # number, default 1.0
//! offset = 32.0          # number, default 0.0
//! rename = "temp_f"      # text, optional
//!
//! [fields.hum]
//! offset = -2.5
//! ```
//!
//! # Behaviour
//!
//! For every input reading, one output reading, in order. Each field that has
//! a table under `fields` gets the value `value * scale + offset` (computed
//! exactly so, in f64) and, if `rename` is set, the new name — in the same
//! position among the fields. Fields without a table, and `sensor`, `ts`,
//! `kind` and `tags`, pass unchanged. A renamed field is not calibrated a
//! second time by a table named after its new name. Uses no host state.
//!
//! `init` fails with code `bad-config` (the message names the key, e.g.
//! ``config key `fields.temp.scale`: expected a number, found text "x"``)
//! when `fields` is missing, is not a table or is empty; when an entry of it
//! is not a table; when `scale`/`offset` is not a finite number or `rename`
//! is not non-empty text; or when a field table has any other key.

#![no_std]

extern crate alloc;

use wasmgate_sdk::prelude::*;

/// The calibration of one field.
struct Rule {
    field: String,
    scale: f64,
    offset: f64,
    rename: Option<String>,
}

static RULES: Global<Vec<Rule>> = Global::new();

fn init(config: &Config) -> Result<()> {
    let fields = config.require_table("fields")?;
    if fields.is_empty() {
        return Err(config.error(
            "fields",
            "configures no field (add e.g. [fields.temp] scale = 1.0)",
        ));
    }
    let mut rules = Vec::with_capacity(fields.len());
    for name in fields.keys() {
        let table = fields.require_table(name)?;
        table.deny_unknown_keys(&["scale", "offset", "rename"])?;
        let number = |key: &str, default: f64| -> Result<f64> {
            let v = table.get_f64(key)?.unwrap_or(default);
            match v.is_finite() {
                true => Ok(v),
                false => Err(table.error(key, "must be a finite number")),
            }
        };
        let scale = number("scale", 1.0)?;
        let offset = number("offset", 0.0)?;
        let rename = match table.get_str("rename")? {
            Some("") => return Err(table.error("rename", "must not be empty")),
            other => other.map(ToString::to_string),
        };
        rules.push(Rule {
            field: name.to_string(),
            scale,
            offset,
            rename,
        });
    }
    RULES.set(rules);
    Ok(())
}

fn process(mut batch: Vec<Reading>) -> Result<Vec<Reading>> {
    let rules = RULES.get()?;
    for reading in &mut batch {
        for (name, value) in &mut reading.fields {
            if let Some(rule) = rules.iter().find(|rule| rule.field == *name) {
                *value = *value * rule.scale + rule.offset;
                if let Some(new_name) = &rule.rename {
                    name.clone_from(new_name);
                }
            }
        }
    }
    Ok(batch)
}

wasmgate_sdk::processor!(init = init, process = process);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_sdk::testing;

    fn temp_f() -> Config {
        Config::new().with(
            "fields",
            Config::new()
                .with(
                    "temp",
                    Config::new()
                        .with("scale", 1.8)
                        .with("offset", 32)
                        .with("rename", "temp_f"),
                )
                .with("hum", Config::new().with("offset", -2.5)),
        )
    }

    #[test]
    fn calibrates_renames_and_keeps_the_rest() {
        testing::reset();
        testing::run_init(init, &temp_f()).unwrap();
        let input = Reading::new("s1", 1_000)
            .with_field("pressure", 1013.0)
            .with_field("temp", 20.0)
            .with_field("hum", 50.0)
            .with_kind("raw")
            .with_tag("room", "a");
        let out = testing::run_process(process, core::slice::from_ref(&input)).unwrap();
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            r.fields,
            vec![
                ("pressure".to_string(), 1013.0),
                ("temp_f".to_string(), 20.0 * 1.8 + 32.0),
                ("hum".to_string(), 47.5),
            ]
        );
        assert_eq!(
            (r.sensor.as_str(), r.ts, r.kind.as_deref()),
            ("s1", 1_000, Some("raw"))
        );
        assert_eq!(r.tags, input.tags);
    }

    #[test]
    fn bad_configs() {
        testing::reset();
        let err = |c: Config| testing::run_init(init, &c).unwrap_err();
        let e = err(Config::new());
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("bad-config", "config key `fields`: missing (required)")
        );
        assert!(
            err(Config::new().with("fields", Config::new()))
                .message
                .contains("`fields`")
        );
        assert!(
            err(Config::new().with("fields", 3))
                .message
                .contains("`fields`: expected a table")
        );
        let e = err(Config::new().with(
            "fields",
            Config::new().with("t", Config::new().with("scale", "x")),
        ));
        assert_eq!(
            e.message,
            "config key `fields.t.scale`: expected a number, found text \"x\""
        );
        let e = err(Config::new().with(
            "fields",
            Config::new().with("t", Config::new().with("rename", 1)),
        ));
        assert!(e.message.starts_with("config key `fields.t.rename`"), "{e}");
        let e = err(Config::new().with(
            "fields",
            Config::new().with("t", Config::new().with("sacle", 1)),
        ));
        assert!(
            e.message
                .starts_with("config key `fields.t.sacle`: unknown key"),
            "{e}"
        );
    }
}
