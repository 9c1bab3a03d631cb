//! The seed corpora (`fuzz/corpus/<target>/`), generated: signed bundles
//! and key sets from the fixed keys of [`fixtures`], guest outputs encoded
//! by the guest SDK's own writer, payloads from the decoder documentation,
//! and the repository's real configuration files. Regenerate with
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml -p wasmgate-fuzz-harness --bin seeds
//! ```
//!
//! (`cargo test` in the harness fails while the committed seeds differ from
//! what this module makes.) Crash reproducers kept as regression seeds are
//! listed in [`REGRESSIONS`] and copied from `fuzz/regressions/<target>/`.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use sha2::Digest;
use wasmgate::Reading;
use wasmgate::ota::bundle::{
    self, KeySet, KeySetKey, Manifest, Scope, Target, WireSignature, sign_bundle, sign_keyset,
};
use wasmgate::runtime::wire::encode_batch;

use crate::fixtures::{self, FLEET, GATEWAY_ID, NOW, id, release_a, release_b, revoked, root};

/// Seeds of one target: file name → bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// Targets whose seeds include crash reproducers from
/// `fuzz/regressions/<target>/` (copied verbatim, name kept).
pub const REGRESSIONS: &[&str] = &["bundle", "guest_output", "payload", "config"];

/// Every target's seeds.
pub fn all() -> Vec<(&'static str, Files)> {
    let mut out = vec![
        ("bundle", bundle_seeds()),
        ("guest_output", guest_output_seeds()),
        ("payload", payload_seeds()),
        ("config", config_seeds()),
    ];
    for (target, files) in &mut out {
        files.extend(regressions(target));
    }
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn regressions(target: &str) -> Files {
    let dir = repo().join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Files = entries
        .map(|e| {
            let path = e.expect("regression dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (format!("regression-{name}"), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn named(name: &str, bytes: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (name.to_string(), bytes.into())
}

// ---------------------------------------------------------------------------
// bundle

/// A small "module": the Wasm header and a few bytes (verification does not
/// look inside).
pub fn module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(b"\x01\x04\x01\x60\0\0");
    m
}

/// The manifest of [`valid_bundle`] for `module`, listing `signers`.
pub fn manifest(module: &[u8], signers: &[&SigningKey]) -> Manifest {
    Manifest {
        name: "calibrate".into(),
        version: "1.1.0".into(),
        release: fixtures::STORED_RELEASE + 1,
        sha256: sha2::Sha256::digest(module).into(),
        length: module.len() as u64,
        target: Target {
            abi: fixtures::ABI,
            board: fixtures::BOARD.into(),
        },
        scope: Scope::Fleet(FLEET.into()),
        issued_at: NOW - 3_600,
        expires: NOW + 30 * 86_400,
        fuel: Some(1_000_000),
        memory: Some(1 << 20),
        key_ids: signers.iter().map(|k| id(k)).collect(),
    }
}

/// A bundle every check accepts (threshold 1): signed by release key A.
pub fn valid_bundle() -> Vec<u8> {
    let m = module();
    sign_bundle(&manifest(&m, &[&release_a()]), &m, &[release_a()])
}

/// A bundle accepted with threshold 2: A and B, gateway scope, any board.
pub fn valid_bundle_two_signers() -> Vec<u8> {
    let m = module();
    let mut man = manifest(&m, &[&release_a(), &release_b()]);
    man.scope = Scope::Gateway(GATEWAY_ID.into());
    man.target.board = "any".into();
    man.fuel = None;
    man.memory = None;
    sign_bundle(&man, &m, &[release_a(), release_b()])
}

/// A key set every check accepts: version 8, signed by the root key.
pub fn valid_keyset() -> Vec<u8> {
    sign_keyset(&next_keyset(), &[root()])
}

fn next_keyset() -> KeySet {
    KeySet {
        version: fixtures::KEYSET_VERSION + 1,
        issued_at: NOW - 60,
        expires: NOW + 365 * 86_400,
        keys: vec![
            KeySetKey::new(&release_a().verifying_key()),
            KeySetKey::new(&fixtures::stranger().verifying_key()),
        ],
        revoked: vec![id(&release_b()), id(&revoked())],
    }
}

/// The group order ℓ, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// S + ℓ: the same signature, malleated (S ≥ ℓ).
fn malleate(sig: &mut [u8]) {
    let mut carry = 0u16;
    for (i, l) in GROUP_ORDER.iter().enumerate() {
        let sum = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
}

fn signature(key: &SigningKey, message: &[u8]) -> WireSignature {
    WireSignature {
        key_id: id(key),
        sig: key.sign(message).to_bytes().to_vec(),
    }
}

fn bundle_seeds() -> Files {
    let a = release_a();
    let b = release_b();
    let m = module();
    let base = manifest(&m, &[&a]);
    let signed =
        |man: &Manifest, module: &[u8], keys: &[SigningKey]| sign_bundle(man, module, keys);
    let with = |edit: &dyn Fn(&mut Manifest)| {
        let mut man = base.clone();
        edit(&mut man);
        signed(&man, &m, std::slice::from_ref(&a))
    };
    let mb = base.to_bytes();
    let msg = bundle::manifest_message(&mb);

    let mut bad_sig = signature(&a, &msg);
    bad_sig.sig[5] ^= 1;
    let mut malleated = signature(&a, &msg);
    malleate(&mut malleated.sig);
    let mut short = signature(&a, &msg);
    short.sig.pop();
    let mut trailing = valid_bundle();
    trailing.push(0);

    let mut files = vec![
        named("valid.cbor", valid_bundle()),
        named("valid-two-signers.cbor", valid_bundle_two_signers()),
        named(
            "valid-extra-unknown-signer.cbor",
            signed(&base, &m, &[fixtures::stranger(), a.clone()]),
        ),
        named(
            "duplicate-signer.cbor",
            signed(&manifest(&m, &[&a, &b]), &m, &[a.clone(), a.clone()]),
        ),
        named(
            "bad-signature.cbor",
            bundle::encode_bundle(&mb, &[bad_sig], &m),
        ),
        named(
            "non-canonical-signature.cbor",
            bundle::encode_bundle(&mb, &[malleated], &m),
        ),
        named(
            "short-signature.cbor",
            bundle::encode_bundle(&mb, &[short], &m),
        ),
        named(
            "too-many-signatures.cbor",
            bundle::encode_bundle(&mb, &vec![signature(&a, &msg); 17], &m),
        ),
        named(
            "revoked-key.cbor",
            signed(&manifest(&m, &[&revoked()]), &m, &[revoked()]),
        ),
        named(
            "unknown-key.cbor",
            signed(
                &manifest(&m, &[&fixtures::stranger()]),
                &m,
                &[fixtures::stranger()],
            ),
        ),
        named(
            "not-listed.cbor",
            signed(&manifest(&m, &[&b]), &m, std::slice::from_ref(&a)),
        ),
        named("unsigned.cbor", signed(&base, &m, &[])),
        named(
            "hash-mismatch.cbor",
            bundle::encode_bundle(
                &mb,
                &[signature(&a, &msg)],
                b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\x01",
            ),
        ),
        named(
            "length-mismatch.cbor",
            bundle::encode_bundle(&mb, &[signature(&a, &msg)], &m[..8]),
        ),
        named("bad-name.cbor", with(&|x| x.name = "a/#".into())),
        named("wrong-abi.cbor", with(&|x| x.target.abi = 2)),
        named("wrong-board.cbor", with(&|x| x.target.board = "pi5".into())),
        named(
            "wrong-fleet.cbor",
            with(&|x| x.scope = Scope::Fleet("south".into())),
        ),
        named(
            "wrong-gateway.cbor",
            with(&|x| x.scope = Scope::Gateway("gw-other".into())),
        ),
        named("expired.cbor", with(&|x| x.expires = NOW - 1)),
        named("empty-window.cbor", with(&|x| x.issued_at = x.expires)),
        named(
            "rollback.cbor",
            with(&|x| x.release = fixtures::STORED_RELEASE - 1),
        ),
        named(
            "replay.cbor",
            with(&|x| x.release = fixtures::STORED_RELEASE),
        ),
        named(
            "fuel-over-policy.cbor",
            with(&|x| x.fuel = Some(fixtures::MAX_FUEL + 1)),
        ),
        named(
            "memory-over-policy.cbor",
            with(&|x| x.memory = Some(fixtures::MAX_MEMORY + 1)),
        ),
        named("trailing-byte.cbor", trailing),
    ];

    // Key sets.
    let ks = next_keyset();
    let with_ks = |edit: &dyn Fn(&mut KeySet)| {
        let mut k = ks.clone();
        edit(&mut k);
        sign_keyset(&k, &[root()])
    };
    let kb = ks.to_bytes();
    let kmsg = bundle::keyset_message(&kb);
    let mut bad_root = signature(&root(), &kmsg);
    bad_root.sig[40] ^= 0x80;
    // The identity point: a valid encoding of a small-order (weak) key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    files.extend([
        named("keyset-valid.cbor", valid_keyset()),
        named(
            "keyset-replay.cbor",
            with_ks(&|k| k.version = fixtures::KEYSET_VERSION),
        ),
        named(
            "keyset-rollback.cbor",
            with_ks(&|k| k.version = fixtures::KEYSET_VERSION - 1),
        ),
        named("keyset-expired.cbor", with_ks(&|k| k.expires = NOW)),
        named(
            "keyset-weak-key.cbor",
            with_ks(&|k| {
                k.keys.push(KeySetKey {
                    id: "0000000000000000".into(),
                    public: identity,
                })
            }),
        ),
        named(
            "keyset-wrong-id.cbor",
            with_ks(&|k| k.keys[0].id = id(&release_b())),
        ),
        named(
            "keyset-duplicate-key.cbor",
            with_ks(&|k| k.keys.push(k.keys[0].clone())),
        ),
        named(
            "keyset-unknown-root.cbor",
            sign_keyset(&ks, &[fixtures::stranger()]),
        ),
        named(
            "keyset-bad-signature.cbor",
            bundle::encode_keyset(&kb, &[bad_root]),
        ),
        named("keyset-unsigned.cbor", sign_keyset(&ks, &[])),
        named("empty", Vec::new()),
    ]);
    files
}

// ---------------------------------------------------------------------------
// guest_output

/// A host-encoded input batch, as a guest receives it.
fn input_batch() -> Vec<u8> {
    let readings = [
        Reading::new("greenhouse/north", 1_714_564_800_000)
            .with_field("temp", 21.5)
            .with_field("hum", 48.0),
        Reading::new("greenhouse/south", 1_714_564_810_000)
            .with_field("temp", 35.25)
            .with_field("hum", 40.0),
    ];
    let mut out = Vec::new();
    encode_batch(&mut out, &readings);
    out
}

type SdkResult = wasmgate_sdk::Result<Vec<wasmgate_sdk::Reading>>;

/// °C → °F into `temp_f` (the `calibrate` example's effect).
fn sdk_calibrate(batch: Vec<wasmgate_sdk::Reading>) -> SdkResult {
    Ok(batch
        .into_iter()
        .map(|mut r| {
            if let Some(t) = r.remove_field("temp") {
                r.set_field("temp_f", t * 1.8 + 32.0);
            }
            r
        })
        .collect())
}

/// One derived `stats` record with tags (the `window-stats` shape).
fn sdk_stats(batch: Vec<wasmgate_sdk::Reading>) -> SdkResult {
    let n = batch.len() as f64;
    let mean = batch.iter().filter_map(|r| r.field("temp")).sum::<f64>() / n;
    Ok(vec![
        wasmgate_sdk::Reading::new("greenhouse/stats", 1_714_564_810_000)
            .with_field("mean", mean)
            .with_field("count", n)
            .with_kind("stats")
            .with_tag("window", "2")
            .with_tag("field", "temp"),
    ])
}

/// An `alert` record (the `threshold-alert` shape).
fn sdk_alert(_batch: Vec<wasmgate_sdk::Reading>) -> SdkResult {
    Ok(vec![
        wasmgate_sdk::Reading::new("greenhouse/south", 1_714_564_810_000)
            .with_field("value", 95.45)
            .with_field("threshold", 90.0)
            .with_kind("alert")
            .with_tag("level", "warning"),
    ])
}

/// A guest error envelope.
fn sdk_error(_batch: Vec<wasmgate_sdk::Reading>) -> SdkResult {
    Err(wasmgate_sdk::Error::input(
        "field `temp` missing in reading 0",
    ))
}

/// The batch unchanged.
fn sdk_identity(batch: Vec<wasmgate_sdk::Reading>) -> SdkResult {
    Ok(batch)
}

fn sdk_output(process: wasmgate_sdk::__private::ProcessFn) -> Vec<u8> {
    let mut out = Vec::new();
    wasmgate_sdk::__private::process_bytes(&input_batch(), process, &mut out);
    assert!(!out.is_empty(), "the SDK wrote no envelope");
    out
}

/// `{"outputs": <batch of readings>}` with the host's encoder.
fn host_envelope(readings: &[Reading]) -> Vec<u8> {
    let mut out = vec![0xa1, 0x67];
    out.extend_from_slice(b"outputs");
    encode_batch(&mut out, readings);
    out
}

fn value_envelope(v: serde_cbor::Value) -> Vec<u8> {
    serde_cbor::to_vec(&v).unwrap()
}

fn text(s: &str) -> serde_cbor::Value {
    serde_cbor::Value::Text(s.into())
}

fn map(entries: Vec<(serde_cbor::Value, serde_cbor::Value)>) -> serde_cbor::Value {
    serde_cbor::Value::Map(entries.into_iter().collect())
}

fn guest_output_seeds() -> Files {
    use serde_cbor::Value as V;
    let reading = |extra: Vec<(V, V)>, fields: V| {
        let mut e = vec![
            (text("sensor"), text("s1")),
            (text("ts"), V::Integer(7)),
            (text("fields"), fields),
        ];
        e.extend(extra);
        map(e)
    };
    let outputs = |r: V| value_envelope(map(vec![(text("outputs"), V::Array(vec![r]))]));
    let one_field = |v: V| map(vec![(text("x"), v)]);

    let long_sensor = Reading::new("s".repeat(300), 1).with_field("x", 1.0);
    let mut many_fields = Reading::new("s", 1);
    for i in 0..257 {
        many_fields.fields.push((format!("f{i}"), i as f64));
    }
    let mut long_kind = Reading::new("s", 1).with_field("x", 1.0);
    long_kind.kind = Some("k".repeat(65));
    let mut many_tags = Reading::new("s", 1).with_field("x", 1.0);
    for i in 0..33 {
        many_tags.tags.push((format!("t{i}"), "v".into()));
    }

    // Indefinite-length map and array, half-precision value: legal CBOR the
    // SDK never writes.
    let mut indefinite = vec![0xbf, 0x67];
    indefinite.extend_from_slice(b"outputs");
    indefinite.push(0x9f);
    indefinite.extend_from_slice(&[0xbf, 0x66]);
    indefinite.extend_from_slice(b"sensor");
    indefinite.extend_from_slice(&[
        0x62, b's', b'1', 0x62, b't', b's', 0x1a, 0x66, 0x3a, 0x8a, 0x00,
    ]);
    indefinite.extend_from_slice(&[0x66]);
    indefinite.extend_from_slice(b"fields");
    indefinite.extend_from_slice(&[0xa1, 0x61, b't', 0xf9, 0x4d, 0x60]);
    indefinite.extend_from_slice(&[0xff, 0xff, 0xff]);

    vec![
        named("sdk-calibrate.cbor", sdk_output(sdk_calibrate)),
        named("sdk-stats.cbor", sdk_output(sdk_stats)),
        named("sdk-alert.cbor", sdk_output(sdk_alert)),
        named("sdk-error.cbor", sdk_output(sdk_error)),
        named("sdk-identity.cbor", sdk_output(sdk_identity)),
        named(
            "host-encoded.cbor",
            host_envelope(&[Reading::new("greenhouse/north", -5)
                .with_field("b", 2.0)
                .with_field("a", -1.25)]),
        ),
        named("empty-outputs.cbor", host_envelope(&[])),
        named("indefinite-lengths.cbor", indefinite),
        named(
            "integer-and-float32-fields.cbor",
            outputs(reading(
                vec![],
                map(vec![
                    (text("i"), V::Integer(-3)),
                    (text("f"), V::Float(0.5)),
                    (text("big"), V::Integer(u64::MAX.into())),
                ]),
            )),
        ),
        named(
            "nan-field.cbor",
            outputs(reading(vec![], one_field(V::Float(f64::NAN)))),
        ),
        named(
            "infinite-field.cbor",
            outputs(reading(vec![], one_field(V::Float(f64::INFINITY)))),
        ),
        named(
            "text-field.cbor",
            outputs(reading(vec![], one_field(text("1.5")))),
        ),
        named(
            "unknown-key.cbor",
            outputs(reading(
                vec![(text("extra"), V::Null)],
                one_field(V::Integer(1)),
            )),
        ),
        named(
            "null-kind-and-tags.cbor",
            outputs(reading(
                vec![(text("kind"), V::Null)],
                one_field(V::Integer(1)),
            )),
        ),
        named("long-sensor.cbor", host_envelope(&[long_sensor])),
        named("too-many-fields.cbor", host_envelope(&[many_fields])),
        named("long-kind.cbor", host_envelope(&[long_kind])),
        named("too-many-tags.cbor", host_envelope(&[many_tags])),
        named(
            "outputs-and-error.cbor",
            value_envelope(map(vec![
                (text("outputs"), V::Array(vec![])),
                (
                    text("error"),
                    map(vec![
                        (text("code"), text("x")),
                        (text("message"), text("y")),
                    ]),
                ),
            ])),
        ),
        named("neither.cbor", value_envelope(map(vec![]))),
        named(
            "long-error.cbor",
            crate::guest_output::error_envelope(&"c".repeat(80), &"é".repeat(600)),
        ),
        named(
            "error-missing-message.cbor",
            value_envelope(map(vec![(
                text("error"),
                map(vec![(text("code"), text("x"))]),
            )])),
        ),
        named("trailing-byte.cbor", {
            let mut b = sdk_output(sdk_alert);
            b.push(0xf6);
            b
        }),
        named("truncated.cbor", {
            let b = sdk_output(sdk_calibrate);
            b[..b.len() / 2].to_vec()
        }),
        named("not-a-map.cbor", vec![0x83, 0x01, 0x02, 0x03]),
        named("empty", Vec::new()),
    ]
}

// ---------------------------------------------------------------------------
// payload

/// A payload seed: the selector byte (see `crate::payload`), then `payload`.
fn with_selector(name: &str, selector: u8, payload: &[u8]) -> (String, Vec<u8>) {
    let mut bytes = vec![selector];
    bytes.extend_from_slice(payload);
    (name.to_string(), bytes)
}

/// Payload seeds: each starts with the byte that selects its decoder and
/// context (`crate::payload::mode`).
fn payload_seeds() -> Files {
    let mut files: Files = [
        // json (the decoder documentation's examples, then edge cases)
        ("json-flat.json", b'j', r#"{"temp": 21.5, "hum": 40}"#),
        ("json-structured.json", b'j',
            r#"{"sensor": "s1", "ts": 1714564800000, "fields": {"temp": 21.5}}"#,
        ),
        ("json-batch.json", b'j',
            r#"[{"temp": 21.5}, {"temp": 21.7, "ts": "2024-05-01T12:00:10Z"}]"#,
        ),
        ("json-derived.json", b'J',
            r#"{"sensor":"s1","ts":"2024-05-01 12:00:00","kind":"alert","tags":{"level":"warning"},"note":[1,{"x":null}],"fields":{"t":1e3,"ok":true,"off":false,"gone":null}}"#,
        ),
        ("json-escapes.json", b'j',
            r#"{"sensor":"caf\u00e9/\"1\"","t\u00e9mp":-0.0,"timestamp":"2024-05-01T14:00:00+02:00"}"#,
        ),
        ("json-nan.json", b'j', r#"{"temp": NaN}"#),
        ("json-huge-number.json", b'j', r#"{"temp": 1e400}"#),
        ("json-duplicate.json", b'j', r#"{"temp": 1, "temp": 2}"#),
        ("json-empty-batch.json", b'J', "[]"),
        ("json-string-field.json", b'j', r#"{"temp": "21.5"}"#),
        ("json-fields-next-to-field.json", b'j',
            r#"{"fields": {"a": 1}, "b": 2}"#,
        ),
        // number
        ("number.txt", b'n', "21.5"),
        ("number-negative.txt", b'n', "  -4\r\n"),
        ("number-exponent.txt", b'n', "+1e3"),
        ("number-leading-dot.txt", b'n', ".5"),
        ("number-inf.txt", b'n', "inf"),
        ("number-text.txt", b'n', "twenty"),
        // csv (source columns ts,sensor,temp,hum; replay columns
        // Timestamp,temp,SENSOR)
        ("csv.csv", b'v', "1714564800000,s1,21.5,40"),
        ("csv-empty-cells.csv", b'v', ",,21.5,"),
        ("csv-quoted.csv", b'v',
            r#""2024-05-01T12:00:00Z", "green""house" ,1,"2""#,
        ),
        ("csv-replay-columns.csv", b'V', "2024-05-01 06:00:00,17.30,greenhouse/north"),
        ("csv-too-few.csv", b'v', "1,2"),
        ("csv-unterminated.csv", b'v', r#"1,"s1,2,3"#),
        ("csv-two-lines.csv", b'v', "1,s1,2,3\n4,s1,5,6"),
        // key-value
        ("kv-spaces.txt", b'k', "temp=21.5 hum=40"),
        ("kv-commas.txt", b'k', "temp=21.5,hum=40"),
        ("kv-colons.txt", b'k', "temp:21.5;hum:40"),
        ("kv-sensor-and-time.txt", b'K',
            "sensor=s1 ts=2024-05-01T12:00:00Z temp=21.5",
        ),
        ("kv-spaced-separators.txt", b'k', "temp = 21.5\thum : 40"),
        ("kv-malformed.txt", b'k', "temp hum=1"),
        ("kv-empty-value.txt", b'k', "temp= hum=1"),
        // serial streams: several lines, CRLF, blank lines, an over-long
        // line (the framer's limit is 64) and an unfinished last line
        ("serial-lines.txt", b's',
            "temp=21.5 hum=40\r\n\r\n   \nsensor=s2 temp=19\nsensor=s3 ts=1714564800000 t=1 u=2 v=3 w=4 x=5 y=6 z=7 a=8 b=9 c=10\ntemp=2",
        ),
        ("serial-cr-only.txt", b's', "a=1\rb=2\r\r\n"),
    ]
    .into_iter()
    .map(|(n, selector, text)| with_selector(n, selector, text.as_bytes()))
    .collect();
    files.push(with_selector(
        "all-formats.json",
        b'*',
        br#"{"sensor":"s1","temp":21.5}"#,
    ));

    // Real recorded lines (samples/greenhouse.csv: timestamp,sensor,temp,
    // humidity matches the source columns by position).
    let csv = std::fs::read_to_string(repo().join("samples/greenhouse.csv"))
        .expect("samples/greenhouse.csv");
    for (i, line) in csv.lines().skip(1).take(2).enumerate() {
        files.push(with_selector(
            &format!("sample-greenhouse-{i}.csv"),
            b'v',
            line.as_bytes(),
        ));
    }

    // cbor
    let flat_cbor: &[u8] = &[0xa1, 0x64, b't', b'e', b'm', b'p', 0xf9, 0x4d, 0x60];
    files.push(with_selector("cbor-flat.cbor", b'c', flat_cbor));
    let mut structured = Vec::new();
    {
        use wasmgate::cbor::*;
        write_map_head(&mut structured, 3);
        write_text(&mut structured, "sensor");
        write_text(&mut structured, "s1");
        write_text(&mut structured, "ts");
        // Tag 1 (epoch): ignored, the value is read as milliseconds.
        structured.push(0xc1);
        write_i64(&mut structured, 1_714_564_800_000);
        write_text(&mut structured, "fields");
        write_map_head(&mut structured, 3);
        write_text(&mut structured, "temp");
        write_f64(&mut structured, 21.5);
        write_text(&mut structured, "on");
        write_bool(&mut structured, true);
        write_text(&mut structured, "gone");
        write_null(&mut structured);
    }
    files.push(with_selector("cbor-structured.cbor", b'C', &structured));
    let mut batch = Vec::new();
    {
        use wasmgate::cbor::*;
        write_array_head(&mut batch, 2);
        for (s, v) in [("a", 1.0), ("b", -2.5)] {
            write_map_head(&mut batch, 3);
            write_text(&mut batch, "sensor");
            write_text(&mut batch, s);
            write_text(&mut batch, "ts");
            write_text(&mut batch, "2024-05-01T12:00:00Z");
            write_text(&mut batch, "v");
            write_f64(&mut batch, v);
        }
    }
    files.push(with_selector("cbor-batch.cbor", b'c', &batch));
    // Indefinite map, a byte-string value, an integer key.
    files.push(with_selector(
        "cbor-indefinite.cbor",
        b'c',
        &[0xbf, 0x61, b't', 0x01, 0x61, b'u', 0x42, 0x00, 0x01, 0xff],
    ));
    files.push(with_selector(
        "cbor-int-key.cbor",
        b'c',
        &[0xa1, 0x01, 0x02],
    ));
    files.push(named("empty", Vec::new()));
    files
}

// ---------------------------------------------------------------------------
// config

fn config_seeds() -> Files {
    let mut files = Vec::new();
    for dir in ["board-configs", "samples"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .expect(dir)
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let name = format!("{dir}-{}", p.file_name().unwrap().to_string_lossy());
            files.push((name, std::fs::read(&p).unwrap()));
        }
    }
    files.push((
        "default-wasmgate.toml".into(),
        wasmgate::config::DEFAULT_CONFIG.as_bytes().to_vec(),
    ));
    let root_key = hex::encode(root().verifying_key().as_bytes());
    let small: &[(&str, String)] = &[
        (
            "detector-only.toml",
            "[streams.s]\nsensors = [\"a/*\", \"b?\"]\n[[streams.s.detectors]]\nkind = \"range\"\nmin = 0.0\nmax = 10.0\n".into(),
        ),
        (
            "processors.toml",
            "[runtime]\nbatch_size = 8\n\n[streams.chain]\n[[streams.chain.processors]]\nmodule = \"m/calibrate.wasm\"\nconfig = { fields = { temp = { scale = 1.8, offset = 32.0 } }, when = 1979-05-27T07:32:00Z, list = [1, \"two\", 3.0, true] }\n[[streams.chain.processors]]\nmodule = \"/abs/moving-average.wasm\"\nname = \"avg\"\non_failure = \"drop\"\n".into(),
        ),
        (
            "ota-and-sources.toml",
            format!(
                "[gateway]\nid = \"gw-1\"\n[ota]\nroot_keys = [\"{root_key}\"]\nfleet = \"north\"\nkeyset_file = \"keys/keyset.cbor\"\n[sources.m]\ntype = \"mqtt\"\ntopics = [\"sensors/+/data\"]\nformat = \"csv\"\ncsv_columns = [\"ts\", \"temp\"]\n[sources.u]\ntype = \"serial\"\ndevice = \"/dev/ttyUSB0\"\nformat = \"number\"\nfield = \"t\"\n[streams.s]\nsources = [\"m\", \"u\"]\n[[streams.s.detectors]]\nkind = \"ewma\"\n"
            ),
        ),
        ("syntax-error.toml", "[streams.s\nsensors = [\"*\"]\n".into()),
        ("unknown-key.toml", "[runtime]\nfuel_per_cal = 1\n".into()),
        (
            "bad-stream-name.toml",
            "[streams.\"a b\"]\n[[streams.\"a b\".detectors]]\nkind = \"range\"\nmax = 1.0\n".into(),
        ),
        (
            "duplicate-processor.toml",
            "[streams.s]\n[[streams.s.processors]]\nmodule = \"x.wasm\"\n[[streams.s.processors]]\nmodule = \"other/x.wasm\"\n".into(),
        ),
        ("empty-stream.toml", "[streams.s]\nsensors = []\n".into()),
        (
            "unicode-columns.toml",
            "# é—∑ before the error\n[runtime]\n# 日本語\nbatch_size = \"many\"\n".into(),
        ),
        (
            "alarm-unknown-stream.toml",
            "[alarm]\nchip = \"/dev/gpiochip0\"\nline = 17\nstreams = [\"nope\"]\n".into(),
        ),
        ("empty.toml", String::new()),
    ];
    for (name, text) in small {
        files.push(named(name, text.as_bytes()));
    }
    files
}
