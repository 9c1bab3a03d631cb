//! `wasmgate check-config` and `wasmgate default-config`, through the binary.

use std::process::Command;

use crate::common::*;

fn wasmgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .output()
        .expect("wasmgate runs")
}

#[test]
fn sample_config_passes_and_lists_its_modules() {
    let file = repo_root().join("samples/greenhouse.toml");
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("ok: 1 stream(s), 3 processor module(s)"),
        "{text}"
    );
    assert!(text.contains("greenhouse/threshold-alert:"), "{text}");
}

#[test]
fn broken_configs_fail_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, "[runtime]\nbatch_sise = 3\n").unwrap();
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gw.toml:2:1"), "{err}");
    assert!(err.contains("unknown field `batch_sise`"), "{err}");

    // A wrong type names the key and its position.
    std::fs::write(&file, "[mqtt]\nhost = \"broker\"\nport = \"1883\"\n").unwrap();
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gw.toml:3:8: mqtt.port: invalid type: string \"1883\""),
        "{err}"
    );

    // A module that does not exist.
    std::fs::write(
        &file,
        "[streams.s]\n[[streams.s.processors]]\nmodule = \"nope.wasm\"\n",
    )
    .unwrap();
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gw.toml:3:10: streams.s.processors[0].module: module file not found"),
        "{err}"
    );

    // A module whose init rejects its config is caught too.
    std::fs::write(
        &file,
        format!(
            "[streams.s]\n[[streams.s.processors]]\nmodule = \"{}\"\nconfig = {{ min = 3.0, max = 1.0 }}\n",
            example("c-clamp").display()
        ),
    )
    .unwrap();
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stream 's'") && err.contains("c-clamp") && err.contains("bad-config"),
        "{err}"
    );
}

#[test]
fn default_config_is_printed_and_passes_the_check() {
    let out = wasmgate(&["default-config"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmgate.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = wasmgate(&["check-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
