//! Unit tests of the ABI runtime, the config helpers and the host emulation.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use serde::{Deserialize, Serialize};

use crate::cbor::{Reader, Writer};
use crate::host::{self, Level, state};
use crate::rt::{init_bytes, process_bytes};
use crate::{Config, Error, Reading, Result, Value, testing};

fn batch_bytes(batch: &[Reading]) -> Vec<u8> {
    let mut out = Vec::new();
    Writer(&mut out).batch(batch);
    out
}

fn echo(batch: Vec<Reading>) -> Result<Vec<Reading>> {
    Ok(batch)
}

#[test]
fn host_batch_bytes_decode() {
    // Exactly what the host writes for [{"sensor":"s","ts":1,"fields":{"t":1.5}}]
    let host: &[u8] = &[
        0x81, 0xa3, 0x66, b's', b'e', b'n', b's', b'o', b'r', 0x61, b's', 0x62, b't', b's', 0x01,
        0x66, b'f', b'i', b'e', b'l', b'd', b's', 0xa1, 0x61, b't', 0xfb, 0x3f, 0xf8, 0, 0, 0, 0,
        0, 0,
    ];
    let batch = Reader::new(host).batch().unwrap();
    assert_eq!(batch, vec![Reading::new("s", 1).with_field("t", 1.5)]);
    // and our writer produces the same bytes (deterministic, float64 values)
    assert_eq!(batch_bytes(&batch), host);
}

#[test]
fn process_envelopes() {
    let batch = vec![
        Reading::new("a", 1)
            .with_field("x", 2.0)
            .with_kind("k")
            .with_tag("t", "v"),
        Reading::new("b", -2),
    ];
    let mut out = Vec::new();
    process_bytes(&batch_bytes(&batch), echo, &mut out);
    // {"outputs": <the batch>}
    let mut expected = vec![0xa1, 0x67];
    expected.extend_from_slice(b"outputs");
    expected.extend_from_slice(&batch_bytes(&batch));
    assert_eq!(out, expected);

    // no outputs: result 0, nothing written
    process_bytes(&batch_bytes(&batch), |_| Ok(Vec::new()), &mut out);
    assert!(out.is_empty());

    // an error becomes the error envelope
    process_bytes(
        &batch_bytes(&batch),
        |_| Err(Error::new("oops", "it broke")),
        &mut out,
    );
    let mut expected = Vec::new();
    let mut w = Writer(&mut expected);
    w.map(1);
    w.text("error");
    w.map(2);
    w.text("code");
    w.text("oops");
    w.text("message");
    w.text("it broke");
    assert_eq!(out, expected);
}

#[test]
fn bad_input_and_output_are_reported() {
    testing::reset();
    let mut out = Vec::new();
    process_bytes(&[0x81, 0xa0], echo, &mut out);
    let value = crate::cbor::decode_value(&out).unwrap();
    let text = format!("{value}");
    assert!(text.contains("bad-input"), "{text}");
    assert!(text.contains("reading 0: missing key `sensor`"), "{text}");

    let nan = |_| Ok(vec![Reading::new("s", 0).with_field("x", f64::NAN)]);
    let e = testing::run_process(nan, &[]).unwrap_err();
    assert_eq!(e.code, "bad-output");
    assert_eq!(
        e.message,
        "output 0 (sensor `s`): field `x` is NaN; the host refuses NaN and infinities"
    );
    let many_tags = |_| {
        let mut r = Reading::new("s", 0);
        for i in 0..33 {
            r.set_tag(format!("t{i}"), "v");
        }
        Ok(vec![r])
    };
    assert_eq!(
        testing::run_process(many_tags, &[]).unwrap_err().code,
        "bad-output"
    );
}

#[test]
fn init_envelopes() {
    let mut out = Vec::new();
    init_bytes(
        &[0xa0],
        |c| {
            if c.is_empty() {
                Ok(())
            } else {
                Err(Error::config("?"))
            }
        },
        &mut out,
    );
    assert!(out.is_empty());
    init_bytes(&[0x80], |_| Ok(()), &mut out);
    let text = format!("{}", crate::cbor::decode_value(&out).unwrap());
    assert!(
        text.contains("config: expected a table, found an array"),
        "{text}"
    );
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Settings {
    name: String,
    #[serde(default)]
    limits: Vec<Limit>,
    mode: Mode,
    by_id: BTreeMap<u32, f64>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Limit {
    field: String,
    max: f64,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Above,
    Below,
}

fn settings_config() -> Config {
    let limit = |f: &str, max: f64| Value::from(Config::new().with("field", f).with("max", max));
    Config::new()
        .with("name", "x")
        .with(
            "limits",
            Value::Array(vec![limit("a", 1.0), limit("b", 2.0)]),
        )
        .with("mode", "below")
        .with("by_id", Config::new().with("7", 1.5))
}

#[test]
fn config_parse_and_paths() {
    let s: Settings = settings_config().parse().unwrap();
    assert_eq!(
        s.limits[1],
        Limit {
            field: "b".into(),
            max: 2.0
        }
    );
    assert_eq!(s.mode, Mode::Below);
    assert_eq!(s.by_id[&7], 1.5);

    // errors name the key by its path
    let bad = settings_config().with(
        "limits",
        Value::Array(vec![Value::from(
            Config::new().with("field", "a").with("max", "high"),
        )]),
    );
    let e = bad.parse::<Settings>().unwrap_err();
    assert_eq!(e.code, "bad-config");
    assert_eq!(
        e.message,
        "config key `limits[0].max`: invalid type: string \"high\", expected f64"
    );
    let e = settings_config()
        .with("mode", "sideways")
        .parse::<Settings>()
        .unwrap_err();
    assert!(
        e.message
            .starts_with("config key `mode`: unknown variant `sideways`"),
        "{e}"
    );
    let e = settings_config()
        .with("extra", 1)
        .parse::<Settings>()
        .unwrap_err();
    assert!(
        e.message
            .starts_with("config key `extra`: unknown field `extra`"),
        "{e}"
    );
    let e = Config::new().parse::<Settings>().unwrap_err();
    assert_eq!(e.message, "config: missing field `name`");
    let e = settings_config()
        .with("limits", 2.5)
        .parse::<Settings>()
        .unwrap_err();
    assert_eq!(
        e.message,
        "config key `limits`: invalid type: floating point `2.5`, expected a sequence"
    );
}

#[test]
fn config_getters() {
    let c = Config::from_cbor(&settings_config().to_cbor()).unwrap();
    assert_eq!(c.get_str("name").unwrap(), Some("x"));
    assert_eq!(c.get_f64("nope").unwrap(), None);
    assert_eq!(
        c.get_f64("name").unwrap_err().message,
        "config key `name`: expected a number, found text \"x\""
    );
    let t = c.require_table("by_id").unwrap();
    assert_eq!(t.path(), "by_id");
    assert_eq!(t.get_f64("7").unwrap(), Some(1.5));
    assert_eq!(
        t.get_bool("7").unwrap_err().message,
        "config key `by_id.7`: expected a boolean, found a float 1.5"
    );
    assert_eq!(
        t.require_str("8").unwrap_err().message,
        "config key `by_id.8`: missing (required)"
    );
    assert_eq!(
        c.get_as::<Vec<String>>("name").unwrap_err().code,
        "bad-config"
    );
    let names = Config::new().with("f", ["a", "b"].into_iter().collect::<Value>());
    assert_eq!(
        names.get_as::<Vec<String>>("f").unwrap().unwrap(),
        ["a", "b"]
    );
    let names = Config::new().with("f", Value::Array(vec!["a".into(), 3.into()]));
    assert_eq!(
        names.get_as::<Vec<String>>("f").unwrap_err().message,
        "config key `f[1]`: invalid type: integer `3`, expected a string"
    );
    assert_eq!(c.get_u64("name").unwrap_err().code, "bad-config");
    let n = Config::new().with("n", -1).with("big", u64::MAX);
    assert_eq!(n.get_i64("n").unwrap(), Some(-1));
    assert!(n.get_u64("n").is_err());
    assert_eq!(n.get_u64("big").unwrap(), Some(u64::MAX));
    assert_eq!(
        c.deny_unknown_keys(&["name", "mode"]).unwrap_err().message,
        "config key `limits`: unknown key (expected one of: name, mode)"
    );
}

#[test]
fn state_roundtrip_and_errors() {
    testing::reset();
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct S {
        n: u32,
        xs: Vec<f64>,
        name: Option<String>,
    }
    let s = S {
        n: 3,
        xs: vec![1.0, 0.1],
        name: None,
    };
    state::set_cbor("k", &s).unwrap();
    assert_eq!(state::get_cbor::<S>("k").unwrap(), Some(s));
    assert_eq!(state::get_cbor::<S>("absent").unwrap(), None);
    let e = state::get_cbor::<u32>("k").unwrap_err();
    assert_eq!(e.code, "bad-state");
    assert_eq!(
        e.message,
        "state key `k` does not decode: invalid type: map, expected u32"
    );
    state::set("raw", &[0xff]).unwrap();
    assert_eq!(state::get_value("raw").unwrap_err().code, "bad-state");
    state::delete("raw");
    state::delete("raw");
    assert_eq!(state::get("raw"), None);

    // big values take the second state_get round trip
    let big = vec![7u8; 5000];
    state::set("big", &big).unwrap();
    assert_eq!(state::get("big").unwrap(), big);

    // quotas
    let e = state::set("x".repeat(257), b"v").unwrap_err();
    assert_eq!(e.code, "state-quota");
    assert!(state::set("v", &vec![0u8; 64 * 1024 + 1]).is_err());
    assert!(state::set("v", &vec![0u8; 64 * 1024]).is_ok());
}

#[test]
fn failed_calls_discard_state_writes() {
    testing::reset();
    fn count(batch: Vec<Reading>) -> Result<Vec<Reading>> {
        let n: u64 = state::get_cbor("n")?.unwrap_or(0);
        state::set_cbor("n", &(n + 1))?;
        if batch.is_empty() {
            Err(Error::input("empty"))
        } else {
            Ok(Vec::new())
        }
    }
    let one = [Reading::new("s", 0)];
    testing::run_process(count, &one).unwrap();
    assert!(testing::run_process(count, &[]).is_err());
    testing::run_process(count, &one).unwrap();
    assert_eq!(testing::state_get_cbor::<u64>("n"), Some(2));
}

#[test]
fn logs_clock_and_config_get() {
    testing::reset();
    crate::info!("n = {}", 3);
    crate::warn!("careful");
    host::log(Level::Trace, "t");
    let logs = testing::take_logs();
    assert_eq!(logs.len(), 3);
    assert_eq!(
        (logs[0].level, logs[0].message.as_str()),
        (Level::Info, "n = 3")
    );
    assert_eq!(logs[1].to_string(), "[warn] careful");
    assert!(testing::logs().is_empty());
    crate::error!("{}", "é".repeat(600));
    assert_eq!(testing::logs()[0].message.len(), 1024);

    assert_eq!(host::now_ms(), 0);
    testing::set_now_ms(1_700_000_000_000);
    testing::advance_ms(5);
    assert_eq!(host::now_ms(), 1_700_000_000_005);

    assert_eq!(host::config_get("min"), None);
    testing::set_config(
        &Config::new()
            .with("min", 2)
            .with("names", ["a"].into_iter().collect::<Value>()),
    );
    assert_eq!(host::config_get("min").unwrap(), [0x02]);
    assert_eq!(host::config_get_cbor::<f64>("min").unwrap(), Some(2.0));
    assert_eq!(
        host::config_get_cbor::<Vec<String>>("names")
            .unwrap()
            .unwrap(),
        ["a"]
    );
    assert_eq!(
        host::config_get_cbor::<bool>("min").unwrap_err().message,
        "config key `min`: invalid type: integer `2`, expected a boolean"
    );
    assert_eq!(Level::from_i32(9), Level::Error);
    assert_eq!(Level::from_i32(-3), Level::Trace);
}

#[test]
fn reading_helpers() {
    let mut r = Reading::new("s", 1)
        .with_field("a", 1.0)
        .with_field("b", 2.0)
        .with_field("a", 3.0);
    assert_eq!(
        r.fields,
        vec![("a".to_string(), 3.0), ("b".to_string(), 2.0)]
    );
    assert!(r.rename_field("a", "c"));
    assert!(!r.rename_field("zz", "y"));
    assert_eq!(r.set_field("b", 5.0), Some(2.0));
    *r.field_mut("c").unwrap() += 1.0;
    assert_eq!(r.field("c"), Some(4.0));
    assert_eq!(r.remove_field("c"), Some(4.0));
    assert!(!r.has_field("c"));
    let r = r.with_tag("x", "1").with_tag("x", "2").with_kind("alert");
    assert_eq!(r.tags, vec![("x".to_string(), "2".to_string())]);
    assert!(r.is_kind("alert"));
    // serde derives keep map order (for readings stored with set_cbor)
    state::set_cbor("r", &r).unwrap();
    assert_eq!(state::get_cbor::<Reading>("r").unwrap(), Some(r));
}
