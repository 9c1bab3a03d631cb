//! `wasmgate replay`, end to end through the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

fn wasmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .env_remove("WASMGATE_LOG")
        .output()
        .expect("wasmgate runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const CSV: &str = "timestamp,sensor,temp,humidity\n\
2024-05-01T06:00:00Z,gh/north,20,40\n\
2024-05-01 06:00:10,gh/south,25.5,\n\
1714543220000,gh/north,-10,41.5\n";

#[test]
fn replays_a_csv_through_a_module_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "rec.csv", CSV);
    let cfg = write(
        dir.path(),
        "gw.toml",
        &format!(
            "[streams.gh]\nsensors = [\"gh/*\"]\n[[streams.gh.processors]]\nmodule = \"{}\"\nconfig = {{ min = 0.0, max = 25.0 }}\n",
            s(&example("c-clamp"))
        ),
    );
    let both = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--config",
        s(&cfg),
        "--module",
        s(&example("c-clamp")),
    ]);
    assert_eq!(
        both.status.code(),
        Some(2),
        "--config and --module conflict: usage error"
    );
    let run = || {
        wasmgate(&[
            "replay",
            "--input",
            s(&input),
            "--config",
            s(&cfg),
            "--quiet",
        ])
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout.clone()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"stream":"gh","sensor":"gh/north","ts":1714543200000,"time":"2024-05-01T06:00:00.000Z","fields":{"temp":20.0,"humidity":25.0}}"#,
            "\n",
            r#"{"stream":"gh","sensor":"gh/south","ts":1714543210000,"time":"2024-05-01T06:00:10.000Z","fields":{"temp":25.0}}"#,
            "\n",
            r#"{"stream":"gh","sensor":"gh/north","ts":1714543220000,"time":"2024-05-01T06:00:20.000Z","fields":{"temp":0.0,"humidity":25.0}}"#,
            "\n",
        )
    );
    assert_eq!(run().stdout, first.stdout, "same input, same bytes");
}

#[test]
fn chain_of_modules_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "rec.csv", CSV);
    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&example("c-clamp")),
        "--module",
        s(&example("c-clamp")),
    ]);
    // c-clamp without config has no bounds: a clear init error, non-zero exit.
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c-clamp") && err.contains("bad-config"),
        "{err}"
    );

    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&example("moving-average")),
        "--output",
        s(&dir.path().join("o.jsonl")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("o.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replay: 3 readings in, 3 outputs out, 0 errors"),
        "{stderr}"
    );
}

#[test]
fn endless_loop_fails_with_out_of_fuel_naming_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "rec.csv", CSV);
    let module = dir.path().join("spinner.wasm");
    std::fs::write(
        &module,
        wat_module(1, r#"(func (export "wasmgate_process") (param i32 i32) (result i64) (loop $l (br $l)) i64.const 0)"#),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = wasmgate(&["replay", "--input", s(&input), "--module", s(&module)]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("module 'spinner' ran out of fuel"), "{err}");
    assert!(err.contains("rec.csv:2-4"), "names the input lines: {err}");
    eprintln!("endless loop stopped after {elapsed:?}");
}

#[test]
fn malformed_row_names_file_line_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "bad.csv",
        "timestamp,temp\n2024-05-01T06:00:00Z,1\n2024-05-01T06:00:10Z,abc\n",
    );
    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&example("moving-average")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:3"), "{err}");
    assert!(err.contains("\"abc\" is not a number"), "{err}");
}

#[test]
fn jsonl_input_and_bundled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "rec.jsonl",
        "{\"sensor\":\"a\",\"ts\":1000,\"fields\":{\"v\":1}}\n\n{\"sensor\":\"a\",\"timestamp\":\"1970-01-01T00:00:02Z\",\"v\":3}\n",
    );
    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&example("moving-average")),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains(r#""fields":{"v":2.0}"#),
        "{text}"
    );

    let sample = repo_root().join("samples/greenhouse.csv");
    let config = repo_root().join("samples/greenhouse.toml");
    let out = wasmgate(&["replay", "--input", s(&sample), "--config", s(&config)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() >= 600);
    assert!(
        text.contains(r#""kind":"alert""#),
        "the sample's heat spike raises an alert"
    );
}

#[test]
fn module_config_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "rec.csv", CSV);
    let clamp = example("c-clamp");
    let out = wasmgate(&["replay", "--input", s(&input), "--module", s(&clamp)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-config")
            && err.contains("hint: give the module its settings with --module-config"),
        "{err}"
    );

    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&clamp),
        "--module-config",
        "c-clamp=min = 0\nmax = 21.5",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(r#""fields":{"temp":20.0,"humidity":21.5}"#),
        "{text}"
    );

    let out = wasmgate(&[
        "replay",
        "--input",
        s(&input),
        "--module",
        s(&clamp),
        "--module-config",
        "nope=min = 0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no module named 'nope' (modules: c-clamp)")
    );
}

#[test]
fn detectors_score_every_output_line_deterministically() {
    let sample = repo_root().join("samples/greenhouse.csv");
    let config = repo_root().join("samples/greenhouse.toml");
    let run = || {
        wasmgate(&[
            "replay",
            "--input",
            s(&sample),
            "--config",
            s(&config),
            "--quiet",
        ])
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        run().stdout,
        first.stdout,
        "same input, same bytes, scores included"
    );
    let text = String::from_utf8(first.stdout).unwrap();
    let mut flagged = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v.get("kind").is_some() {
            continue; // alerts are derived records: not scored by default
        }
        let scores = v["scores"]
            .as_array()
            .expect("every measurement line carries scores");
        let pairs: Vec<(&str, &str)> = scores
            .iter()
            .map(|s| {
                (
                    s["field"].as_str().unwrap(),
                    s["detector"].as_str().unwrap(),
                )
            })
            .collect();
        // Each configured (field, detector) pair is scored when the field is present.
        for (field, detector) in [("temp_f", "ewma"), ("humidity", "range")] {
            assert_eq!(
                v["fields"].get(field).is_some(),
                pairs.contains(&(field, detector)),
                "{line}"
            );
        }
        for sc in scores {
            let score = sc["score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score), "{line}");
            flagged += usize::from(sc["flag"].as_bool().unwrap());
        }
    }
    assert!(flagged > 0, "the sample's heat spike is flagged");

    // Replay output, scores included, reads back as replay input.
    let dir = tempfile::tempdir().unwrap();
    let again = write(dir.path(), "out.jsonl", &text);
    let out = wasmgate(&[
        "replay",
        "--input",
        s(&again),
        "--module",
        s(&example("moving-average")),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        text.lines().count()
    );
}
