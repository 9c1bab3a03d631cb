//! The local HTTP endpoint of the real binary, against a private mosquitto
//! that the test kills and brings back: `/healthz`, `/readyz` (ready, then
//! not ready with the reason while the broker is gone, then ready again),
//! `/metrics` (module, source, outbox figures; `promtool check metrics`
//! when promtool is installed — CI requires it with
//! `WASMGATE_REQUIRE_PROMTOOL=1`), `/status`, and a 404.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mosquitto::{Gateway, Mosquitto, Publisher, free_port};

const SECS: Duration = Duration::from_secs(20);

/// `GET path` → (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("endpoint accepts");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// A counter's value in a metrics body (first sample whose line starts with
/// `prefix`).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn promtool(metrics: &str) {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("WASMGATE_REQUIRE_PROMTOOL").is_none(),
            "promtool is required here (apt-get install prometheus)"
        );
        eprintln!("SKIPPED promtool check: promtool not installed (.ci/run installs it)");
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: {}", report.trim());
    assert!(out.status.success(), "promtool: {report}\n{metrics}");
    assert!(report.trim().is_empty(), "promtool lint: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_status_follow_the_broker() {
    let Some(mut broker) = Mosquitto::try_start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("gw");
    let base = unique("http-in");
    let http = free_port();
    let config = dir.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{gw}"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_ms = 100
reconnect_max_ms = 500
[storage]
path = "{state}"
[http]
listen = "127.0.0.1:{http}"
[sources.in]
type = "mqtt"
topics = ["{base}/+/data"]
sensor_segment = 1
[streams.s]
sensors = ["*"]
[[streams.s.processors]]
module = "{calibrate}"
config = {{ fields = {{ n = {{ scale = 2.0, offset = 0.0 }} }} }}
[[streams.s.detectors]]
kind = "range"
fields = ["n"]
max = 100.0
"#,
            port = broker.port(),
            state = dir.path().join("state").display(),
            calibrate = example("calibrate").display(),
        ),
    )
    .unwrap();
    let mut g = Gateway::start(&config);
    g.wait_for_log("HTTP endpoint", SECS).await;
    g.wait_for_log("MQTT sources subscribed", SECS).await;
    g.wait_for_log("uplink connected", SECS).await;

    let (code, body) = get(http, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(http, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    for check in [
        "processing",
        "ingest-broker",
        "uplink-broker",
        "storage",
        "modules",
        "outbox",
    ] {
        assert!(body.contains(&format!("ok   {check}:")), "{check}: {body}");
    }
    assert_eq!(get(http, "/nope").0, 404);

    // Readings flow: 60 (the range detector flags n > 50 after ×2).
    let publisher = Publisher::start(
        broker.host(),
        broker.port(),
        format!("{base}/sensor-1/data"),
        0..60,
        Duration::from_millis(2),
    )
    .await;
    publisher.wait_done(SECS).await;
    // Module figures are refreshed once a second: wait for them.
    let deadline = Instant::now() + SECS;
    let metrics = loop {
        let (code, m) = get(http, "/metrics");
        assert_eq!(code, 200);
        if sample(&m, "wasmgate_module_readings_in_total{").unwrap_or(0.0) >= 60.0
            && sample(&m, "wasmgate_outbox_delivered_total").unwrap_or(0.0) >= 60.0
        {
            break m;
        }
        assert!(Instant::now() < deadline, "figures never reached 60:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&metrics, "wasmgate_readings_total"), Some(60.0));
    assert_eq!(
        sample(&metrics, "wasmgate_source_received_total{source=\"in\"}"),
        Some(60.0)
    );
    assert_eq!(
        sample(&metrics, "wasmgate_stream_anomalies_total{stream=\"s\"}"),
        Some(9.0),
        "n = 51..59 ×2 exceed 100"
    );
    assert!(metrics.contains("wasmgate_module_call_duration_seconds_bucket{stream=\"s\",module=\"calibrate\",le=\"+Inf\"}"));
    assert_eq!(sample(&metrics, "wasmgate_uplink_connected"), Some(1.0));
    assert_eq!(sample(&metrics, "wasmgate_ready"), Some(1.0));
    promtool(&metrics);
    let (code, status) = get(http, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["gateway"], gw.as_str());
    assert_eq!(status["ready"], true);
    assert_eq!(status["modules"][0]["module"], "calibrate");
    assert_eq!(status["sources"]["in"]["received"], 60);

    // The broker goes away: not ready, with the reasons; still live.
    let killed = Instant::now();
    broker.kill();
    // Both connections notice on their own: the uplink's and the ingest's.
    g.wait_for_log("uplink lost", SECS).await;
    g.wait_for_log("MQTT connection failed", SECS).await;
    let (code, body) = get(http, "/readyz");
    eprintln!(
        "not ready {} ms after the broker was killed:\n{body}",
        killed.elapsed().as_millis()
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains("FAIL uplink-broker: not connected"), "{body}");
    assert!(
        body.contains("FAIL ingest-broker: not connected (sources in)"),
        "{body}"
    );
    assert!(body.contains("ok   storage"), "{body}");
    assert_eq!(get(http, "/healthz").0, 200, "still live");

    // Back: ready again.
    let back = Instant::now();
    broker.restart().await;
    g.wait_for_log("uplink connected", SECS).await;
    g.wait_for_log("MQTT sources subscribed", SECS).await;
    let (code, body) = get(http, "/readyz");
    eprintln!(
        "ready {} ms after the broker came back",
        back.elapsed().as_millis()
    );
    assert_eq!(code, 200, "{body}");
    let log = g.sigterm().await;
    assert!(log.contains("wasmgate stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[streams.s]\n[[streams.s.detectors]]\nkind = \"range\"\nmax = 1.0\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("http: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("[http] listen"), "{err}");
}
