use super::*;
use crate::cbor;

/// 2024-05-01T12:00:00Z.
const RX: i64 = 1_714_564_800_000;

fn ctx() -> DecodeContext<'static> {
    DecodeContext {
        sensor: Some("dev1"),
        ..DecodeContext::new(RX)
    }
}

fn no_sensor() -> DecodeContext<'static> {
    DecodeContext::new(RX)
}

fn ok(format: PayloadFormat, payload: &[u8], ctx: &DecodeContext<'_>) -> Vec<Reading> {
    let mut out = Vec::new();
    match decode(format, payload, ctx, &mut out) {
        Ok(n) => assert_eq!(n, out.len()),
        Err(e) => panic!("{format} {:?}: {e}", String::from_utf8_lossy(payload)),
    }
    out
}

fn one(format: PayloadFormat, payload: &[u8], ctx: &DecodeContext<'_>) -> Reading {
    let mut out = ok(format, payload, ctx);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// The error; also checks that nothing was appended.
fn err(format: PayloadFormat, payload: &[u8], ctx: &DecodeContext<'_>) -> DecodeError {
    let keep = Reading::new("keep", 0).with_field("x", 1.0);
    let mut out = vec![keep.clone()];
    match decode(format, payload, ctx, &mut out) {
        Ok(_) => panic!(
            "{format} {:?}: accepted as {out:?}",
            String::from_utf8_lossy(payload)
        ),
        Err(e) => {
            assert_eq!(out, [keep]);
            e
        }
    }
}

/// Every payload fails with `reason`.
fn fails(reason: &str, format: PayloadFormat, ctx: &DecodeContext<'_>, payloads: &[&[u8]]) {
    for p in payloads {
        let e = err(format, p, ctx);
        assert_eq!(
            e.reason(),
            reason,
            "{format} {:?}: {e}",
            String::from_utf8_lossy(p)
        );
    }
}

fn r(sensor: &str, ts: i64, fields: &[(&str, f64)]) -> Reading {
    fields
        .iter()
        .fold(Reading::new(sensor, ts), |r, (n, v)| r.with_field(*n, *v))
}

use PayloadFormat::{Cbor, Csv, Json, KeyValue, Number};

// --- CBOR building helpers -------------------------------------------

enum V<'a> {
    F(f64),
    I(i64),
    B(bool),
    Null,
    T(&'a str),
    Bytes(&'a [u8]),
    Map(Vec<(&'a str, V<'a>)>),
    Arr(Vec<V<'a>>),
}

fn enc(out: &mut Vec<u8>, v: &V<'_>) {
    match v {
        V::F(f) => cbor::write_f64(out, *f),
        V::I(i) => cbor::write_i64(out, *i),
        V::B(b) => cbor::write_bool(out, *b),
        V::Null => cbor::write_null(out),
        V::T(s) => cbor::write_text(out, s),
        V::Bytes(b) => cbor::write_bytes(out, b),
        V::Map(entries) => {
            cbor::write_map_head(out, entries.len());
            for (k, v) in entries {
                cbor::write_text(out, k);
                enc(out, v);
            }
        }
        V::Arr(items) => {
            cbor::write_array_head(out, items.len());
            for v in items {
                enc(out, v);
            }
        }
    }
}

fn c(v: V<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    enc(&mut out, &v);
    out
}

// --- happy paths -----------------------------------------------------

#[test]
fn json_flat_object() {
    assert_eq!(
        one(Json, b"{\"temp\": 21.5, \"hum\": 40}", &ctx()),
        r("dev1", RX, &[("temp", 21.5), ("hum", 40.0)])
    );
    // Key order is the payload's, not sorted.
    let got = one(Json, b" {\"z\": 1, \"a\": -2.5e1, \"m\": 3} \r\n", &ctx());
    assert_eq!(got, r("dev1", RX, &[("z", 1.0), ("a", -25.0), ("m", 3.0)]));
    // Escaped keys.
    let got = one(Json, br#"{"t\u00e9mp": 1, "a\"b": 2}"#, &ctx());
    assert_eq!(got, r("dev1", RX, &[("témp", 1.0), ("a\"b", 2.0)]));
}

#[test]
fn json_timestamps() {
    let cases: &[(&[u8], i64)] = &[
        (br#"{"ts": 1714564801000, "t": 1}"#, RX + 1000),
        (
            br#"{"t": 1, "timestamp": "2024-05-01T12:00:01Z"}"#,
            RX + 1000,
        ),
        (
            br#"{"ts": "2024-05-01T14:00:01.250+02:00", "t": 1}"#,
            RX + 1250,
        ),
        (br#"{"ts": "2024-05-01 12:00:02", "t": 1}"#, RX + 2000),
        (br#"{"ts": "1714564803000", "t": 1}"#, RX + 3000),
        (br#"{"ts": -5, "t": 1}"#, -5),
        (br#"{"ts": null, "t": 1}"#, RX),
    ];
    for (payload, ts) in cases {
        assert_eq!(one(Json, payload, &ctx()).ts, *ts);
    }
}

#[test]
fn json_sensor_precedence() {
    // The payload's sensor wins over the source's.
    let got = one(Json, br#"{"sensor": "s1", "t": 1}"#, &ctx());
    assert_eq!(got.sensor, "s1");
    let got = one(Json, br#"{"t": 1, "sensor": "s1"}"#, &no_sensor());
    assert_eq!(got.sensor, "s1");
    // `null` is absent: the source's sensor.
    let got = one(Json, br#"{"sensor": null, "t": 1}"#, &ctx());
    assert_eq!(got.sensor, "dev1");
    // The source's sensor is only checked when it is used.
    let bad_ctx = DecodeContext {
        sensor: Some(""),
        ..ctx()
    };
    assert_eq!(
        one(Json, br#"{"sensor": "s1", "t": 1}"#, &bad_ctx).sensor,
        "s1"
    );
}

#[test]
fn json_structured_and_values() {
    let got = one(
        Json,
        br#"{"sensor": "s1", "ts": 1714564800500, "fields": {"temp": 21.5, "a": 1}}"#,
        &no_sensor(),
    );
    assert_eq!(got, r("s1", RX + 500, &[("temp", 21.5), ("a", 1.0)]));
    // Any key order; keys named like special keys are fields inside `fields`.
    let got = one(
        Json,
        br#"{"fields": {"ts": 3, "sensor": 4}, "sensor": "s2"}"#,
        &ctx(),
    );
    assert_eq!(got, r("s2", RX, &[("ts", 3.0), ("sensor", 4.0)]));
    // Booleans are 1/0; null is absent; big integers are floats.
    let got = one(
        Json,
        br#"{"on": true, "off": false, "gone": null, "big": 18446744073709551615, "neg": -7}"#,
        &ctx(),
    );
    assert_eq!(
        got,
        r(
            "dev1",
            RX,
            &[
                ("on", 1.0),
                ("off", 0.0),
                ("big", u64::MAX as f64),
                ("neg", -7.0)
            ]
        )
    );
}

#[test]
fn json_batch_appends() {
    let mut out = vec![Reading::new("old", 0).with_field("x", 1.0)];
    let payload =
        br#"[{"temp": 1}, {"sensor": "s2", "ts": 5, "fields": {"temp": 2}}, {"ts": "2024-05-01T12:00:01Z", "temp": 3}]"#;
    assert_eq!(decode(Json, payload, &ctx(), &mut out), Ok(3));
    assert_eq!(
        out[1..],
        [
            r("dev1", RX, &[("temp", 1.0)]),
            r("s2", 5, &[("temp", 2.0)]),
            r("dev1", RX + 1000, &[("temp", 3.0)]),
        ]
    );
    assert_eq!(out[0].sensor, "old");
    // One bad reading refuses the whole batch.
    let e = err(Json, br#"[{"temp": 1}, {"temp": "x"}]"#, &ctx());
    assert_eq!(e.reason(), "not-a-number");
}

#[test]
fn cbor_shapes() {
    // The documented example: {"temp": 21.5} with a half-precision float.
    let doc = [0xa1, 0x64, b't', b'e', b'm', b'p', 0xf9, 0x4d, 0x60];
    assert_eq!(one(Cbor, &doc, &ctx()), r("dev1", RX, &[("temp", 21.5)]));

    let flat = c(V::Map(vec![
        ("z", V::F(1.5)),
        ("sensor", V::T("s1")),
        ("a", V::I(-3)),
        ("on", V::B(true)),
        ("gone", V::Null),
        ("ts", V::I(RX + 7)),
    ]));
    assert_eq!(
        one(Cbor, &flat, &ctx()),
        r("s1", RX + 7, &[("z", 1.5), ("a", -3.0), ("on", 1.0)])
    );

    let structured = c(V::Map(vec![
        ("sensor", V::T("s2")),
        ("timestamp", V::T("2024-05-01T12:00:01Z")),
        (
            "fields",
            V::Map(vec![("temp", V::F(20.0)), ("hum", V::I(40))]),
        ),
    ]));
    assert_eq!(
        one(Cbor, &structured, &no_sensor()),
        r("s2", RX + 1000, &[("temp", 20.0), ("hum", 40.0)])
    );

    let batch = c(V::Arr(vec![
        V::Map(vec![("a", V::I(1))]),
        V::Map(vec![("fields", V::Map(vec![("b", V::I(2))]))]),
    ]));
    assert_eq!(
        ok(Cbor, &batch, &ctx()),
        [r("dev1", RX, &[("a", 1.0)]), r("dev1", RX, &[("b", 2.0)])]
    );

    // Indefinite-length map, single-precision float, a tag (ignored),
    // the self-describe prefix.
    let indefinite = [
        0xd9, 0xd9, 0xf7, 0xbf, 0x61, b'a', 0xfa, 0x41, 0xac, 0x00, 0x00, 0x61, b't', 0xc1, 0x05,
        0xff,
    ];
    let got = one(Cbor, &indefinite, &ctx());
    assert_eq!(got, r("dev1", RX, &[("a", 21.5), ("t", 5.0)]));
}

#[test]
fn number_payloads() {
    let c = DecodeContext {
        field: "temp",
        ..ctx()
    };
    assert_eq!(one(Number, b"21.5\n", &c), r("dev1", RX, &[("temp", 21.5)]));
    assert_eq!(
        one(Number, b" -3.2e1\r\n", &c).fields,
        [("temp".into(), -32.0)]
    );
    assert_eq!(one(Number, b"+7", &ctx()).fields, [("value".into(), 7.0)]);
    assert_eq!(one(Number, b".5", &ctx()).fields, [("value".into(), 0.5)]);
}

#[test]
fn csv_lines() {
    let columns: Vec<String> = ["ts", "sensor", "temp", "hum"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    assert_eq!(
        one(Csv, b"1714564801000,s1,21.5,40\r\n", &c),
        r("s1", RX + 1000, &[("temp", 21.5), ("hum", 40.0)])
    );
    // Empty cells are absent; ts and sensor fall back to the context.
    assert_eq!(one(Csv, b",,21.5,", &c), r("dev1", RX, &[("temp", 21.5)]));
    // Quoting, `""`, spaces around cells.
    assert_eq!(
        one(
            Csv,
            br#" "2024-05-01T12:00:01Z" , "green ""house""",  21.5 , " 40 " "#,
            &c
        ),
        r(
            "green \"house\"",
            RX + 1000,
            &[("temp", 21.5), ("hum", 40.0)]
        )
    );
    assert_eq!(
        one(Csv, b"\"\",\"\",\"1\",\"\"", &c),
        r("dev1", RX, &[("temp", 1.0)])
    );
    // Special column names are case-insensitive; other names are kept.
    let columns: Vec<String> = ["Timestamp", "SENSOR", "Temp"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    assert_eq!(
        one(Csv, b"2024-05-01 12:00:01,s9,3", &c),
        r("s9", RX + 1000, &[("Temp", 3.0)])
    );
}

#[test]
fn key_value_pairs() {
    let want = r("dev1", RX, &[("temp", 21.5), ("hum", 40.0)]);
    for payload in [
        &b"temp=21.5 hum=40"[..],
        b"temp=21.5,hum=40",
        b"temp:21.5;hum:40",
        b"temp: 21.5, hum: 40\r\n",
        b"  temp = 21.5 ;; hum\t=\t40 ,",
        b"temp=21.5\nhum=40",
    ] {
        assert_eq!(
            one(KeyValue, payload, &ctx()),
            want,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    assert_eq!(
        one(
            KeyValue,
            b"sensor=s1 ts=2024-05-01T12:00:01Z temp=21.5",
            &no_sensor()
        ),
        r("s1", RX + 1000, &[("temp", 21.5)])
    );
    assert_eq!(
        one(KeyValue, b"timestamp:1714564800005;t:1", &ctx()),
        r("dev1", RX + 5, &[("t", 1.0)])
    );
}

// --- every error reason ------------------------------------------------

#[test]
fn too_large_is_checked_first() {
    let c = DecodeContext {
        max_bytes: 8,
        ..ctx()
    };
    for f in PayloadFormat::ALL {
        assert_eq!(
            err(f, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff", &c),
            DecodeError::TooLarge { len: 9, max: 8 }
        );
        let mut out = Vec::new();
        let at_cap = decode(f, b"\xff\xff\xff\xff\xff\xff\xff\xff", &c, &mut out);
        assert_ne!(at_cap.map_err(|e| e.reason()), Err("too-large"));
    }
    assert_eq!(
        err(Json, &[b' '; 100], &c).to_string(),
        "payload is 100 bytes, limit 8"
    );
}

#[test]
fn empty_payload() {
    for f in PayloadFormat::ALL {
        fails("empty-payload", f, &ctx(), &[b""]);
    }
    for f in [Json, Number, Csv, KeyValue] {
        fails("empty-payload", f, &ctx(), &[b" \r\n\t ", b"\n"]);
    }
    // CBOR is not trimmed: a lone space byte is the integer -1.
    fails("invalid-shape", Cbor, &ctx(), &[b" "]);
}

#[test]
fn not_utf8() {
    for f in [Number, Csv, KeyValue] {
        fails("not-utf8", f, &ctx(), &[b"\xff", b"t=2\xc3"]);
    }
}

#[test]
fn malformed_json() {
    fails(
        "malformed-json",
        Json,
        &ctx(),
        &[
            br#"{"t": 1"#,
            br#"{"t": 1} x"#,
            br#"{"t": 1}{"t": 2}"#,
            b"{t: 1}",
            br#"{"t": NaN}"#,
            br#"{"t": 01}"#,
            b"{\"t\xff\": 1}",
            b"nope",
        ],
    );
    assert_eq!(
        err(Json, br#"{"t": 1"#, &ctx()).to_string(),
        "malformed JSON: EOF while parsing an object at line 1 column 7"
    );
}

#[test]
fn malformed_cbor() {
    fails(
        "malformed-cbor",
        Cbor,
        &ctx(),
        &[
            &[0xa1, 0x61, b't'],                                     // truncated
            &[0xa1, 0x61, b't', 0x01, 0x00],                         // trailing data
            &[0xff],                                                 // stray break
            &[0x1c],                                                 // reserved
            &[0xa1, 0x62, 0xff, 0xfe, 0x01],                         // key not UTF-8
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // huge length
        ],
    );
}

#[test]
fn malformed_csv() {
    let columns: Vec<String> = ["a", "b"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    let cases: &[(&[u8], &str)] = &[
        (b"1,\"2", "malformed CSV: unterminated quoted cell"),
        (b"\"1\" x,2", "malformed CSV: text after a closing quote"),
        (b"1,2\"3", "malformed CSV: quote inside an unquoted cell"),
        (
            b"1,2\n3,4",
            "malformed CSV: line break outside quotes (one line per payload)",
        ),
    ];
    for (payload, msg) in cases {
        let e = err(Csv, payload, &c);
        assert_eq!(
            (e.reason(), e.to_string().as_str()),
            ("malformed-csv", *msg)
        );
    }
}

#[test]
fn malformed_key_value() {
    let cases: &[(&[u8], &str)] = &[
        (b"temp", "temp"),
        (b"temp 21.5", "temp"),
        (b"hum=1 temp 21.5", "temp"),
        (b"=5", "=5"),
        (b"temp=", "temp="),
        (b"temp= ,hum=1", "temp= "),
        (b"temp=\nhum=1", "temp="),
    ];
    for (payload, token) in cases {
        let e = err(KeyValue, payload, &ctx());
        assert_eq!(e, DecodeError::MalformedKeyValue(token.to_string()));
    }
    assert_eq!(
        err(KeyValue, b"temp", &ctx()).to_string(),
        "malformed key-value pair \"temp\" (expected key=value or key:value)"
    );
}

#[test]
fn invalid_shape() {
    fails(
        "invalid-shape",
        Json,
        &ctx(),
        &[
            b"5",
            br#""x""#,
            b"null",
            br#"[[{"t": 1}]]"#,
            br#"[5]"#,
            br#"{"fields": [1]}"#,
            br#"{"fields": null}"#,
            br#"{"sensor": 5, "t": 1}"#,
            br#"{"t": 1, "fields": {"a": 1}}"#,
            br#"{"fields": {"a": 1}, "t": 1}"#,
            br#"{"fields": {"a": 1}, "gone": null}"#,
        ],
    );
    assert_eq!(
        err(Json, br#"{"fields": {"a": 1}, "t": 1}"#, &ctx()).to_string(),
        "key \"t\" next to \"fields\" (move it inside \"fields\")"
    );
    fails(
        "invalid-shape",
        Cbor,
        &ctx(),
        &[
            &[0x05],             // an integer
            &[0xa1, 0x01, 0x01], // an integer key
            &c(V::Map(vec![("fields", V::I(1))])),
            &c(V::Arr(vec![V::Arr(vec![])])),
        ],
    );
}

#[test]
fn not_a_number() {
    let e = err(Json, br#"{"t": "21.5"}"#, &ctx());
    assert_eq!(e.to_string(), "field \"t\": \"21.5\" is not a number");
    assert_eq!(e.reason(), "not-a-number");
    fails(
        "not-a-number",
        Json,
        &ctx(),
        &[
            br#"{"t": [1]}"#,
            br#"{"t": {}}"#,
            br#"{"fields": {"t": "x"}}"#,
            br#"{"ok": 1, "unit": "C"}"#,
        ],
    );
    fails(
        "not-a-number",
        Cbor,
        &ctx(),
        &[&c(V::Map(vec![("t", V::Bytes(b"\x01"))]))],
    );
    let e = err(Number, b"21.5 C", &ctx());
    assert_eq!(e.to_string(), "field \"value\": \"21.5 C\" is not a number");
    fails(
        "not-a-number",
        Number,
        &ctx(),
        &[b"abc", b"0x10", b"1,5", b"--1"],
    );
    let columns: Vec<String> = ["a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("not-a-number", Csv, &c, &[b"x", b"\"1 2\""]);
    fails("not-a-number", KeyValue, &ctx(), &[b"t=abc", b"a=1=2"]);
    // Long values are cut in the message.
    let long = format!("{{\"t\": \"{}\"}}", "x".repeat(500));
    let msg = err(Json, long.as_bytes(), &ctx()).to_string();
    assert!(msg.len() < 120, "{msg}");
}

#[test]
fn non_finite() {
    assert_eq!(
        err(Json, br#"{"a": 1, "t": -1e999}"#, &ctx()),
        DecodeError::NonFinite {
            field: None,
            value: "the number at column 20".into()
        }
    );
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = err(Cbor, &c(V::Map(vec![("t", V::F(v))])), &ctx());
        assert_eq!(e.reason(), "non-finite");
    }
    let e = err(Cbor, &c(V::Map(vec![("t", V::F(f64::NAN))])), &ctx());
    assert_eq!(e.to_string(), "field \"t\": NaN is not a finite number");
    // Half-precision infinity.
    fails(
        "non-finite",
        Cbor,
        &ctx(),
        &[&[0xa1, 0x61, b't', 0xf9, 0x7c, 0x00]],
    );
    fails(
        "non-finite",
        Number,
        &ctx(),
        &[b"inf", b"-Infinity", b"NaN", b"1e400"],
    );
    assert_eq!(
        err(Number, b"nan", &ctx()).to_string(),
        "field \"value\": nan is not a finite number"
    );
    let columns: Vec<String> = ["a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("non-finite", Csv, &c, &[b"inf"]);
    fails("non-finite", KeyValue, &ctx(), &[b"t=-inf"]);
}

#[test]
fn bad_timestamp() {
    let e = err(Json, br#"{"ts": "noon", "t": 1}"#, &ctx());
    assert_eq!(
        e.to_string(),
        "\"ts\": \"noon\" is not a timestamp (expected integer epoch milliseconds, \
         RFC 3339 or \"YYYY-MM-DD HH:MM:SS\")"
    );
    fails(
        "bad-timestamp",
        Json,
        &ctx(),
        &[
            br#"{"ts": 1.5, "t": 1}"#,
            br#"{"ts": 1714564800000.0, "t": 1}"#,
            br#"{"timestamp": true, "t": 1}"#,
            br#"{"ts": 9223372036854775808, "t": 1}"#,
            br#"{"ts": [1], "t": 1}"#,
            br#"{"ts": {}, "t": 1}"#,
            br#"{"ts": "", "t": 1}"#,
        ],
    );
    fails(
        "bad-timestamp",
        Cbor,
        &ctx(),
        &[
            &c(V::Map(vec![("ts", V::Bytes(b"1")), ("t", V::I(1))])),
            // -2^64: a negative integer beyond i64.
            &[
                0xa2, 0x62, b't', b's', 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61,
                b't', 0x01,
            ],
        ],
    );
    let columns: Vec<String> = ["ts", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("bad-timestamp", Csv, &c, &[b"noon,1", b"1.5,1"]);
    // A space ends a key-value value, so the date is cut short.
    fails(
        "bad-timestamp",
        KeyValue,
        &ctx(),
        &[b"ts=2024-05-01 12:00:00 t=1", b"ts=x t=1"],
    );
}

#[test]
fn missing_sensor() {
    let columns: Vec<String> = ["sensor", "a"].map(String::from).into();
    let csv_ctx = DecodeContext {
        csv_columns: &columns,
        ..no_sensor()
    };
    assert_eq!(err(Csv, b",1", &csv_ctx), DecodeError::MissingSensor);
    fails(
        "missing-sensor",
        Json,
        &no_sensor(),
        &[
            br#"{"t": 1}"#,
            br#"{"sensor": null, "t": 1}"#,
            br#"[{"sensor": "s", "t": 1}, {"t": 1}]"#,
        ],
    );
    fails(
        "missing-sensor",
        Cbor,
        &no_sensor(),
        &[&c(V::Map(vec![("t", V::I(1))]))],
    );
    fails("missing-sensor", Number, &no_sensor(), &[b"1"]);
    fails("missing-sensor", KeyValue, &no_sensor(), &[b"t=1"]);
}

#[test]
fn invalid_sensor() {
    let long = format!("{{\"sensor\": \"{}\", \"t\": 1}}", "s".repeat(257));
    let at_limit = format!("{{\"sensor\": \"{}\", \"t\": 1}}", "s".repeat(256));
    assert_eq!(one(Json, at_limit.as_bytes(), &ctx()).sensor.len(), 256);
    let e = err(Json, long.as_bytes(), &ctx());
    assert_eq!(e.reason(), "invalid-sensor");
    assert!(e.to_string().contains("is too long"), "{e}");
    fails(
        "invalid-sensor",
        Json,
        &ctx(),
        &[
            br#"{"sensor": "", "t": 1}"#,
            br#"{"sensor": "a\u0001b", "t": 1}"#,
        ],
    );
    let empty_ctx = DecodeContext {
        sensor: Some(""),
        ..ctx()
    };
    assert_eq!(
        err(Number, b"1", &empty_ctx).to_string(),
        "sensor id \"\" is empty (non-empty, at most 256 bytes, no control characters)"
    );
    let columns: Vec<String> = ["sensor", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("invalid-sensor", Csv, &c, &[b"\"a\nb\",1"]);
    let long_kv = format!("sensor={} t=1", "é".repeat(129));
    fails("invalid-sensor", KeyValue, &ctx(), &[long_kv.as_bytes()]);
}

#[test]
fn invalid_field_name() {
    let long = format!("{{\"{}\": 1}}", "k".repeat(257));
    fails(
        "invalid-field-name",
        Json,
        &ctx(),
        &[br#"{"": 1}"#, br#"{"a\nb": 1}"#, long.as_bytes()],
    );
    let unnamed = DecodeContext { field: "", ..ctx() };
    assert_eq!(
        err(Number, b"1", &unnamed).to_string(),
        "field name \"\" is empty (non-empty, at most 256 bytes, no control characters)"
    );
    let columns: Vec<String> = ["", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("invalid-field-name", Csv, &c, &[b"1,2"]);
    // An empty column with an empty cell is harmless.
    assert_eq!(one(Csv, b",2", &c).fields, [("a".into(), 2.0)]);
    fails("invalid-field-name", KeyValue, &ctx(), &[b"\x01=1"]);
}

#[test]
fn duplicate_key() {
    let cases: &[(&[u8], &str)] = &[
        (br#"{"a": 1, "a": 2}"#, "a"),
        (br#"{"ts": 1, "timestamp": 2, "a": 1}"#, "timestamp"),
        (br#"{"sensor": "x", "a": 1, "sensor": "y"}"#, "sensor"),
        (br#"{"fields": {"a": 1}, "fields": {"b": 1}}"#, "fields"),
        (br#"{"fields": {"a": 1, "a": 2}}"#, "a"),
    ];
    for (payload, key) in cases {
        assert_eq!(
            err(Json, payload, &ctx()),
            DecodeError::DuplicateKey(key.to_string())
        );
    }
    let columns: Vec<String> = ["a", "b", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("duplicate-key", Csv, &c, &[b"1,2,3"]);
    let columns: Vec<String> = ["ts", "timestamp", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("duplicate-key", Csv, &c, &[b"1,2,3"]);
    assert_eq!(one(Csv, b"1,,3", &c).ts, 1);
    fails(
        "duplicate-key",
        KeyValue,
        &ctx(),
        &[
            b"a=1 a=2",
            b"ts=1 timestamp=2 a=1",
            b"sensor=a sensor=b a=1",
        ],
    );
}

#[test]
fn too_many_fields() {
    let c = DecodeContext {
        max_fields: 2,
        ..ctx()
    };
    assert_eq!(
        one(
            Json,
            br#"{"a": 1, "b": 2, "c": null, "ts": 1, "sensor": "s"}"#,
            &c
        )
        .fields
        .len(),
        2
    );
    let e = err(Json, br#"{"a": 1, "b": 2, "c": 3}"#, &c);
    assert_eq!(e, DecodeError::TooManyFields { max: 2 });
    assert_eq!(e.to_string(), "more than 2 fields in one reading");
    fails(
        "too-many-fields",
        Json,
        &c,
        &[br#"{"fields": {"a": 1, "b": 2, "c": 3}}"#],
    );
    fails("too-many-fields", Cbor, &c, &[&c_map3()]);
    let columns: Vec<String> = ["a", "b", "c"].map(String::from).into();
    let csv_ctx = DecodeContext {
        csv_columns: &columns,
        ..c
    };
    fails("too-many-fields", Csv, &csv_ctx, &[b"1,2,3"]);
    assert_eq!(one(Csv, b"1,,3", &csv_ctx).fields.len(), 2);
    fails("too-many-fields", KeyValue, &c, &[b"a=1 b=2 c=3"]);
    let zero = DecodeContext {
        max_fields: 0,
        ..ctx()
    };
    fails("too-many-fields", Number, &zero, &[b"1"]);
}

fn c_map3() -> Vec<u8> {
    c(V::Map(vec![("a", V::I(1)), ("b", V::I(2)), ("c", V::I(3))]))
}

#[test]
fn no_fields() {
    fails(
        "no-fields",
        Json,
        &ctx(),
        &[
            b"{}",
            br#"{"sensor": "s", "ts": 1}"#,
            br#"{"a": null}"#,
            br#"{"fields": {}}"#,
            br#"[{"a": 1}, {}]"#,
        ],
    );
    assert_eq!(
        err(Json, b"[]", &ctx()),
        DecodeError::NoFields { batch: true }
    );
    assert_eq!(
        err(Json, b"[]", &ctx()).to_string(),
        "empty batch: no readings"
    );
    assert_eq!(
        err(Json, b"{}", &ctx()).to_string(),
        "reading has no fields"
    );
    fails(
        "no-fields",
        Cbor,
        &ctx(),
        &[&[0xa0], &[0x80], &[0x9f, 0xff]],
    );
    let columns: Vec<String> = ["ts", "sensor", "a"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    fails("no-fields", Csv, &c, &[b",,", b"1,s,", b" , , \"\" "]);
    fails(
        "no-fields",
        KeyValue,
        &ctx(),
        &[b"sensor=s1", b"ts=1", b",;,"],
    );
}

#[test]
fn column_count() {
    let columns: Vec<String> = ["ts", "sensor", "temp", "hum"].map(String::from).into();
    let c = DecodeContext {
        csv_columns: &columns,
        ..ctx()
    };
    let cases: &[(&[u8], usize)] = &[
        (b"1,2", 2),
        (b"1,s,2,3,4", 5),
        (b"1,s,2,3,", 5),
        (b"abc", 1),
        (b"\"a,b,c\",1", 2),
    ];
    for (payload, found) in cases {
        assert_eq!(
            err(Csv, payload, &c),
            DecodeError::ColumnCount {
                expected: 4,
                found: *found
            }
        );
    }
    assert_eq!(
        err(Csv, b"1,2", &c).to_string(),
        "expected 4 CSV cells (one per configured column), found 2"
    );
    // No columns configured: every line is refused.
    fails("column-count", Csv, &ctx(), &[b"1"]);
}

#[test]
fn reasons_are_listed_and_unique() {
    let mut seen = std::collections::BTreeSet::new();
    for r in DecodeError::REASONS {
        assert!(seen.insert(r), "{r} listed twice");
        assert!(
            r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{r}"
        );
    }
    let samples = [
        DecodeError::TooLarge { len: 1, max: 0 },
        DecodeError::EmptyPayload,
        DecodeError::NotUtf8,
        DecodeError::MalformedJson(String::new()),
        DecodeError::MalformedCbor(String::new()),
        DecodeError::MalformedCsv(""),
        DecodeError::MalformedKeyValue(String::new()),
        DecodeError::InvalidShape(String::new()),
        DecodeError::NotANumber {
            field: String::new(),
            value: String::new(),
        },
        DecodeError::NonFinite {
            field: None,
            value: String::new(),
        },
        DecodeError::BadTimestamp {
            key: String::new(),
            value: String::new(),
        },
        DecodeError::MissingSensor,
        DecodeError::InvalidSensor {
            sensor: String::new(),
            problem: "",
        },
        DecodeError::InvalidFieldName {
            name: String::new(),
            problem: "",
        },
        DecodeError::DuplicateKey(String::new()),
        DecodeError::TooManyFields { max: 0 },
        DecodeError::NoFields { batch: false },
        DecodeError::ColumnCount {
            expected: 0,
            found: 0,
        },
    ];
    let labels: Vec<_> = samples.iter().map(DecodeError::reason).collect();
    assert_eq!(labels, DecodeError::REASONS);
}

#[test]
fn format_names() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        format: PayloadFormat,
    }
    for f in PayloadFormat::ALL {
        let json = format!("{{\"format\": \"{f}\"}}");
        let cfg: Cfg = serde_json::from_str(&json).unwrap();
        assert_eq!(cfg.format, f);
    }
    assert_eq!(PayloadFormat::KeyValue.to_string(), "key-value");
    assert!(serde_json::from_str::<Cfg>(r#"{"format": "xml"}"#).is_err());
}

// --- JSON/CBOR extensions (JsonOptions) ---------------------------------

const EXT: JsonOptions<'static> = JsonOptions {
    accept_derived: true,
    ignore_keys: &["stream", "time"],
    require_ts: true,
    allow_no_fields: true,
};

fn with(
    opts: &JsonOptions<'_>,
    format: PayloadFormat,
    payload: &[u8],
) -> Result<Reading, DecodeError> {
    let mut out = Vec::new();
    decode_with(format, payload, &ctx(), opts, &mut out).map(|n| {
        assert_eq!(n, 1);
        out.remove(0)
    })
}

#[test]
fn json_options_extend_and_default_off() {
    let line = br#"{"stream":"g","sensor":"s","ts":5,"time":"x","fields":{"t":1},"kind":"alert","tags":{"level":"hi","b":"x"}}"#;
    let mut want = r("s", 5, &[("t", 1.0)]);
    want.kind = Some("alert".into());
    want.tags = vec![("level".into(), "hi".into()), ("b".into(), "x".into())];
    assert_eq!(with(&EXT, Json, line), Ok(want.clone()));
    let cbor = c(V::Map(vec![
        ("kind", V::T("alert")),
        ("t", V::I(1)),
        (
            "tags",
            V::Map(vec![("level", V::T("hi")), ("b", V::T("x"))]),
        ),
        ("sensor", V::T("s")),
        ("stream", V::Arr(vec![])),
        ("ts", V::I(5)),
    ]));
    assert_eq!(with(&EXT, Cbor, &cbor), Ok(want));
    // Without a field, and with `kind: null`.
    assert_eq!(
        with(&EXT, Json, br#"{"ts":1,"kind":null}"#),
        Ok(r("dev1", 1, &[]))
    );

    let e = |p: &[u8]| with(&EXT, Json, p).unwrap_err();
    let missing = DecodeError::InvalidShape("missing key \"ts\" (or \"timestamp\")".into());
    assert_eq!(e(br#"{"t":1}"#), missing);
    assert_eq!(e(br#"{"t":1,"ts":null}"#), missing);
    assert_eq!(
        e(br#"{"ts":1,"kind":1}"#).to_string(),
        "key \"kind\": 1 is not a string"
    );
    assert_eq!(
        e(br#"{"ts":1,"tags":{"a":null}}"#).to_string(),
        "key \"tags.a\": null is not a string"
    );
    assert_eq!(
        e(br#"{"ts":1,"tags":{"a":"x","a":"y"}}"#),
        DecodeError::DuplicateKey("tags.a".into())
    );
    assert_eq!(
        e(br#"{"ts":1,"kind":"a","kind":"b"}"#),
        DecodeError::DuplicateKey("kind".into())
    );
    assert_eq!(
        e(br#"{"ts":1,"tags":{},"tags":{}}"#),
        DecodeError::DuplicateKey("tags".into())
    );
    assert_eq!(e(br#"{"ts":1,"tags":5}"#).reason(), "invalid-shape");
    assert_eq!(e(b"[]"), DecodeError::NoFields { batch: true });

    // Off (the sources): the same keys are fields, and the old rules hold.
    fails(
        "not-a-number",
        Json,
        &ctx(),
        &[br#"{"t":1,"kind":"alert"}"#, br#"{"t":1,"stream":"g"}"#],
    );
    fails(
        "invalid-shape",
        Json,
        &ctx(),
        &[br#"{"fields":{"t":1},"tags":{}}"#],
    );
    fails("no-fields", Json, &ctx(), &[br#"{"ts":1}"#]);
    assert_eq!(one(Json, br#"{"t":1}"#, &ctx()).ts, RX);
}

// --- robustness ---------------------------------------------------------

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks what a decode may do: either append valid readings or
/// append nothing and name a listed reason.
fn check(format: PayloadFormat, payload: &[u8], ctx: &DecodeContext<'_>) {
    let mut out = vec![Reading::new("keep", 0)];
    match decode(format, payload, ctx, &mut out) {
        Ok(n) => {
            assert!(n >= 1);
            assert_eq!(out.len(), n + 1);
            assert_eq!(out[0], Reading::new("keep", 0));
            for r in &out[1..] {
                assert!(!r.fields.is_empty() && r.fields.len() <= ctx.max_fields);
                assert!(r.fields.iter().all(|(n, v)| v.is_finite() && !n.is_empty()));
                assert!(!r.sensor.is_empty() && r.sensor.len() <= MAX_SENSOR_LEN);
            }
        }
        Err(e) => {
            assert_eq!(out.len(), 1, "{format} {payload:?}: {e}");
            assert!(DecodeError::REASONS.contains(&e.reason()));
            let _ = e.to_string();
        }
    }
}

#[test]
fn garbage_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        br#"{"sensor": "s1", "ts": 1714564800000, "fields": {"temp": 21.5}}"#.to_vec(),
        br#"[{"temp": 21.5, "hum": 40}, {"ts": "2024-05-01T12:00:00Z", "a": true}]"#.to_vec(),
        c(V::Map(vec![
            ("sensor", V::T("s1")),
            ("ts", V::I(RX)),
            ("fields", V::Map(vec![("t", V::F(1.5)), ("u", V::I(-2))])),
        ])),
        c(V::Arr(vec![
            V::Map(vec![("a", V::I(1))]),
            V::Map(vec![("b", V::Null)]),
        ])),
        b"21.5\r\n".to_vec(),
        b"1714564800000,\"s \"\"1\"\"\",21.5,40".to_vec(),
        b"sensor=s1 ts=2024-05-01T12:00:00Z temp:21.5;hum=40".to_vec(),
    ];
    let alphabet = b"{}[]\":,;= \t\r\n0123456789.eE+-naifstru\"\\\x00\xff\xc3\xa9";
    let columns: Vec<String> = ["ts", "sensor", "temp", "hum"].map(String::from).into();
    let contexts = [
        DecodeContext {
            csv_columns: &columns,
            ..ctx()
        },
        DecodeContext {
            csv_columns: &columns[2..],
            max_fields: 1,
            max_bytes: 48,
            ..no_sensor()
        },
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut payload = Vec::new();
    for i in 0..20_000 {
        payload.clear();
        match i % 3 {
            // Random bytes.
            0 => {
                let len = rng.below(64);
                payload.extend((0..len).map(|_| rng.next() as u8));
            }
            // Random structural characters.
            1 => {
                let len = rng.below(80);
                payload.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
            }
            // A valid payload, mutated.
            _ => {
                payload.extend_from_slice(&seeds[rng.below(seeds.len())]);
                for _ in 0..1 + rng.below(4) {
                    let len = payload.len();
                    match rng.below(4) {
                        0 if len > 0 => payload[rng.below(len)] = rng.next() as u8,
                        1 if len > 0 => payload.truncate(rng.below(len)),
                        2 => {
                            payload.insert(rng.below(len + 1), alphabet[rng.below(alphabet.len())])
                        }
                        _ if len > 0 => {
                            payload.remove(rng.below(len));
                        }
                        _ => {}
                    }
                }
            }
        }
        for f in PayloadFormat::ALL {
            check(f, &payload, &contexts[i % 2]);
        }
    }
    // Deep nesting and huge declared lengths.
    let deep_json = "[".repeat(100_000);
    let mut deep_cbor = vec![0x81; 100_000];
    deep_cbor.push(0x01);
    let big = DecodeContext {
        max_bytes: usize::MAX,
        ..ctx()
    };
    for p in [
        deep_json.as_bytes(),
        &deep_cbor,
        &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0xbf, 0x61, b'a'],
    ] {
        for f in PayloadFormat::ALL {
            check(f, p, &big);
        }
    }
}
