//! `wasmgate demo` as a newcomer runs it: one command, nothing installed.
//! The real binary runs for a fixed time; meanwhile the test asks its HTTP
//! endpoint whether it is ready; at the end the demo's summary must show
//! readings flowing, at least one anomaly, and the processor updated over
//! the air (calibrate 1.1.0 activated).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::mosquitto::free_port;

fn readyz(port: u16) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

#[test]
fn the_demo_shows_readings_anomalies_an_ota_update_and_readiness() {
    let http = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "demo",
            "--duration-secs",
            "14",
            "--http-port",
            &http.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasmgate demo starts");
    // The endpoint comes up with the gateway; then it must answer ready
    // (both connections up) — polled, since readiness is a state.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut ready = None;
    while Instant::now() < deadline {
        if let Some((200, body)) = readyz(http) {
            ready = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("the demo ends by itself");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let body = ready.unwrap_or_else(|| panic!("/readyz never answered ready\n{stdout}\n{stderr}"));
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        stdout.contains(&format!("curl 127.0.0.1:{http}/readyz")),
        "{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo: "))
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    let number = |after: &str| -> u64 {
        summary
            .split(after)
            .next()
            .and_then(|s| s.rsplit(' ').find(|w| !w.is_empty()))
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{after:?} in {summary}"))
    };
    assert!(number(" readings published") > 100, "{summary}");
    assert!(number(" outputs and") > 100, "{summary}");
    assert!(number(" anomaly events") >= 1, "{summary}");
    assert!(summary.contains("calibrate 1.1.0 (activated)"), "{summary}");
    assert!(summary.contains("ready: yes"), "{summary}");
    assert!(stderr.trim().is_empty(), "a quiet demo: {stderr}");
}
