//! The hostile-module corpus (`hostile_modules/corpus.rs`) under load,
//! through the real binary: while two normal streams (the committed
//! `calibrate`) process readings from MQTT, one stream per hostile module
//! is fed at the same time. Every normal reading must come out (count,
//! order, no gap in `seq`), `/healthz` must answer 200 throughout, every
//! hostile module must end quarantined with the right reason in `/metrics`,
//! `/status` and the log, the log-spamming module must not get more than
//! its rate limit into the log, and the daemon must stop cleanly.
//!
//! Two in-process tests go with it: every corpus module, on its own,
//! ends quarantined with its kind and message; and a module that cannot
//! start is retried (and counted) when its quarantine ends.
//!
//! The broker is a private mosquitto when installed, else the shared
//! broker of the test binary (`common::broker()`: the embedded rumqttd or
//! `WASMGATE_TEST_BROKER`). The speed comparison (normal streams alone vs.
//! with the corpus) is a benchmark, not a timed test:
//! `cargo bench -p wasmgate --bench hostile`.

pub mod corpus;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmgate::runtime::{ErrorKind, FailurePolicy, Limits, Supervisor};

use self::corpus::{Ending, Hostile, SPAM_TEXT};
use crate::common::*;
use crate::mosquitto::{Collector, Gateway, Mosquitto, Publisher, analyse, free_port};

const SECS: Duration = Duration::from_secs(60);
/// Readings per normal stream.
const NORMAL: i64 = 400;
/// The normal streams; their readings carry `n` in disjoint ranges.
const NORMAL_STREAMS: [&str; 2] = ["calm-a", "calm-b"];

/// `GET path` → (status code, body); `None` when the endpoint does not answer.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The value of the sample `name{labels}` in a metrics body.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn module_labels(h: &Hostile, kind: Option<ErrorKind>) -> String {
    let mut l = format!("stream=\"h-{0}\",module=\"{0}\"", h.name);
    if let Some(k) = kind {
        l.push_str(&format!(",kind=\"{}\"", k.as_str()));
    }
    l
}

fn config(dir: &Path, gw: &str, host: &str, port: u16, http: u16, base: &str) -> String {
    let mut c = format!(
        r#"
[gateway]
id = "{gw}"
[mqtt]
host = "{host}"
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
"#,
        state = dir.join("state").display(),
    );
    for s in NORMAL_STREAMS {
        c.push_str(&format!(
            r#"
[streams.{s}]
sensors = ["{s}"]
[[streams.{s}.processors]]
module = "{calibrate}"
config = {{ fields = {{ n = {{ scale = 1.0, offset = 0.0 }} }} }}
"#,
            calibrate = example("calibrate").display(),
        ));
    }
    // Hostile streams drop what their module fails on: nothing of theirs
    // reaches the outbox, so the normal streams share it with no one.
    for h in corpus::corpus() {
        let file = dir.join(format!("{}.wasm", h.name));
        std::fs::write(&file, &h.wasm).unwrap();
        c.push_str(&format!(
            r#"
[streams.h-{name}]
sensors = ["h-{name}"]
[[streams.h-{name}.processors]]
module = "{file}"
name = "{name}"
on_failure = "drop"
"#,
            name = h.name,
            file = file.display(),
        ));
    }
    c
}

/// In process, module by module: each ends quarantined with its kind after
/// `failure_threshold` failed calls (at once when it cannot start), and
/// every failure is of that kind. (Fuel is cut to 1 M per call so the
/// looping modules fail fast in a debug build.)
#[test]
fn every_corpus_module_ends_quarantined_with_its_reason() {
    let limits = Limits {
        fuel_per_call: 1_000_000,
        fuel_per_reading: 0,
        ..Limits::default()
    };
    let threshold = limits.failure_threshold as u64;
    let rt = runtime_with(limits);
    for h in corpus::corpus() {
        let m = rt
            .load_bytes(h.name, &h.wasm)
            .unwrap_or_else(|e| panic!("{}: {e}", h.name));
        let mut s = Supervisor::start(rt.clone(), m, env(), FailurePolicy::Drop);
        let kind = h.ending.kind();
        match h.ending {
            Ending::Start(_) => assert!(s.is_quarantined(), "{}: started", h.name),
            Ending::Calls(_) => {
                assert!(!s.is_quarantined(), "{}", h.name);
                for i in 0..threshold {
                    let step = s.process(vec![reading(&format!("h-{}", h.name), 1, &[("v", 1.0)])]);
                    let e = step
                        .error
                        .unwrap_or_else(|| panic!("{}: call {i} succeeded", h.name));
                    assert_eq!(e.kind(), kind, "{}: {e}", h.name);
                    assert!(step.outputs.is_empty(), "drop policy");
                }
            }
        }
        assert!(s.is_quarantined(), "{} not quarantined", h.name);
        let skipped = s.process(vec![reading("x", 2, &[])]);
        assert!(skipped.skipped && skipped.error.is_none(), "{}", h.name);
        let st = s.stats();
        let expected = match h.ending {
            Ending::Start(_) => 1,
            Ending::Calls(_) => threshold,
        };
        assert_eq!(st.errors_of(kind), expected, "{}", h.name);
        assert_eq!(st.errors_total(), expected, "{}: {:?}", h.name, st.errors);
        assert_eq!(st.last_error_kind, Some(kind), "{}", h.name);
        assert_eq!(st.quarantines, 1, "{}", h.name);
        assert!(st.quarantined);
        let last = st.last_error.as_deref().unwrap_or("");
        assert!(
            last.contains(&format!("module '{}'", h.name)) && last.contains(h.message),
            "{}: {last}",
            h.name
        );
    }
}

/// A module that cannot start is quarantined for `quarantine_secs`, then
/// tried afresh like any quarantined module: each attempt a counted
/// failure, until the failure window quarantines it again.
#[test]
fn a_module_that_cannot_start_is_retried_after_its_quarantine() {
    let limits = Limits {
        failure_threshold: 2,
        quarantine_secs: 60,
        ..Limits::default()
    };
    let rt = runtime_with(limits);
    let h = corpus::corpus()
        .into_iter()
        .find(|h| h.name == "init-trap")
        .unwrap();
    let m = rt.load_bytes(h.name, &h.wasm).unwrap();
    let t0 = Instant::now();
    let mut s = Supervisor::start(rt.clone(), m, env(), FailurePolicy::PassThrough);
    let batch = vec![reading("s", 1, &[("v", 1.0)])];
    let during = s.process_at(batch.clone(), t0 + Duration::from_secs(59));
    assert!(
        during.skipped && during.outputs == batch,
        "pass-through while quarantined"
    );
    let after = s.process_at(batch.clone(), t0 + Duration::from_secs(61));
    assert!(!after.skipped, "tried again after the quarantine");
    assert_eq!(after.error.map(|e| e.kind()), Some(ErrorKind::Trap));
    assert!(!s.is_quarantined(), "one failure of two");
    let again = s.process_at(batch.clone(), t0 + Duration::from_secs(62));
    assert_eq!(again.error.map(|e| e.kind()), Some(ErrorKind::Trap));
    assert!(
        s.is_quarantined(),
        "quarantined again by the failure window"
    );
    let st = s.stats();
    assert_eq!(
        (st.errors_of(ErrorKind::Trap), st.quarantines, st.calls),
        (3, 2, 2)
    );
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("init failed: module 'init-trap' trapped")),
        "{:?}",
        st.last_error
    );
    // The strict constructor (check-config, replay) refuses it.
    let m = rt.load_bytes(h.name, &h.wasm).unwrap();
    assert!(Supervisor::new(rt.clone(), m, env(), FailurePolicy::PassThrough).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_quarantined_while_normal_streams_run_unaffected() {
    let private = Mosquitto::try_start().await;
    let (host, port) = match &private {
        Some(m) => (m.host().to_string(), m.port()),
        None => {
            eprintln!("hostile_modules: using the test binary's shared broker");
            broker()
        }
    };
    let corpus = corpus::corpus();
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("hostile-gw");
    let base = unique("hostile-in");
    let http = free_port();
    let file = dir.path().join("wasmgate.toml");
    std::fs::write(&file, config(dir.path(), &gw, &host, port, http, &base)).unwrap();

    // `check-config` still refuses a configuration whose modules cannot
    // start: it is the static gate (the systemd unit runs it before `run`).
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{check_err}");
    assert!(check_err.contains("refused at instantiate"), "{check_err}");

    let collector = Collector::start(&host, port, &gw).await;
    let mut g = Gateway::start(&file);
    g.wait_for_log("HTTP endpoint", SECS).await;
    g.wait_for_log("MQTT sources subscribed", SECS).await;

    // Modules that cannot start are quarantined at start-up, with the
    // reason, and the gateway runs on.
    for h in corpus
        .iter()
        .filter(|h| matches!(h.ending, Ending::Start(_)))
    {
        let log = g.log();
        let line = log
            .lines()
            .find(|l| l.contains("failed to start") && l.contains(&format!("\"{}\"", h.name)))
            .unwrap_or_else(|| panic!("no start-up failure logged for {}:\n{log}", h.name));
        assert!(line.contains(h.ending.kind().as_str()), "{line}");
    }

    // /healthz, sampled every 50 ms for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (probes, unhealthy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (stop, probes, unhealthy) = (stop.clone(), probes.clone(), unhealthy.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if get(http, "/healthz").map(|(c, _)| c) != Some(200) {
                    unhealthy.fetch_add(1, Ordering::Relaxed);
                }
                probes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Load: the normal streams at 250 readings/s each, every hostile
    // stream at 20/s until its module is quarantined.
    let started = Instant::now();
    let mut normal = Vec::new();
    for (i, s) in NORMAL_STREAMS.iter().enumerate() {
        let from = i as i64 * NORMAL;
        normal.push(
            Publisher::start(
                &host,
                port,
                format!("{base}/{s}/data"),
                from..from + NORMAL,
                Duration::from_millis(4),
            )
            .await,
        );
    }
    let mut hostile = Vec::new();
    for h in &corpus {
        hostile.push(
            Publisher::start(
                &host,
                port,
                format!("{base}/h-{}/data", h.name),
                0..100_000,
                Duration::from_millis(50),
            )
            .await,
        );
    }

    // Every hostile module quarantined (module figures refresh once a second).
    let deadline = Instant::now() + SECS;
    let metrics = loop {
        let m = get(http, "/metrics").map(|(_, m)| m).unwrap_or_default();
        let waiting: Vec<&str> = corpus
            .iter()
            .filter(|h| {
                sample(&m, "wasmgate_module_quarantined", &module_labels(h, None)) != Some(1.0)
            })
            .map(|h| h.name)
            .collect();
        if waiting.is_empty() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "not quarantined after {:?}: {waiting:?}\n{m}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "hostile_modules: all {} hostile modules quarantined {:?} after the load started",
        corpus.len(),
        started.elapsed()
    );

    // The right reason: every failure of the kind the module ends with.
    for h in &corpus {
        let kind = h.ending.kind();
        let of = |k| {
            sample(
                &metrics,
                "wasmgate_module_errors_total",
                &module_labels(h, Some(k)),
            )
        };
        let failures = of(kind).unwrap_or(0.0);
        match h.ending {
            Ending::Start(_) => assert_eq!(failures, 1.0, "{}: {metrics}", h.name),
            Ending::Calls(_) => assert!(failures >= 5.0, "{}: {failures} failures", h.name),
        }
        for other in ErrorKind::ALL.into_iter().filter(|k| *k != kind) {
            assert_eq!(of(other), Some(0.0), "{}: {other} failures", h.name);
        }
        assert_eq!(
            sample(
                &metrics,
                "wasmgate_module_readings_out_total",
                &module_labels(h, None)
            ),
            Some(0.0),
            "{}",
            h.name
        );
    }
    for s in NORMAL_STREAMS {
        let labels = format!("stream=\"{s}\",module=\"calibrate\"");
        assert_eq!(
            sample(&metrics, "wasmgate_module_quarantined", &labels),
            Some(0.0)
        );
    }
    let (_, status) = get(http, "/status").expect("/status answers");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let modules: BTreeMap<String, &serde_json::Value> = status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["module"].as_str().unwrap().to_string(), m))
        .collect();
    for h in &corpus {
        let m = modules[h.name];
        assert_eq!(m["quarantined"], true, "{}: {m}", h.name);
        assert_eq!(
            m["last_error_kind"].as_str(),
            Some(h.ending.kind().as_str()),
            "{}: {m}",
            h.name
        );
        let last = m["last_error"].as_str().unwrap_or("");
        assert!(
            last.contains(&format!("module '{}'", h.name)) && last.contains(h.message),
            "{}: last_error {last:?}, expected {:?}",
            h.name,
            h.message
        );
    }
    assert_eq!(modules["calibrate"]["quarantined"], false);
    let (code, ready) = get(http, "/readyz").expect("/readyz answers");
    assert_eq!(code, 503, "quarantined modules make the gateway not ready");
    assert!(ready.contains("FAIL modules: quarantined: "), "{ready}");

    // The normal streams: every reading out, in order, no gap, no duplicate.
    for p in &normal {
        p.wait_done(SECS).await;
    }
    let total = NORMAL as usize * NORMAL_STREAMS.len();
    if let Err(got) = collector.wait_distinct(total, SECS).await {
        panic!("normal outputs: {got} of {total}");
    }
    drop(hostile);
    let arrivals = collector.arrivals();
    for (i, s) in NORMAL_STREAMS.iter().enumerate() {
        let mine: Vec<_> = arrivals
            .iter()
            .filter(|a| a.stream == *s)
            .cloned()
            .collect();
        let from = i as i64 * NORMAL;
        let r = analyse(&mine, from..from + NORMAL);
        assert!(r.lost.is_empty(), "{s}: lost {:?}", r.lost);
        assert!(r.unexpected.is_empty(), "{s}: {:?}", r.unexpected);
        assert!(r.gaps.is_empty(), "{s}: seq gaps {:?}", r.gaps);
        assert!(r.out_of_order.is_empty(), "{s}: {:?}", r.out_of_order);
        assert_eq!(r.reprocessed, 0, "{s}: readings processed twice");
        assert_eq!(r.seq_range.get(*s), Some(&(1, NORMAL as u64)), "{s}");
    }
    let stray: Vec<_> = arrivals
        .iter()
        .filter(|a| !NORMAL_STREAMS.contains(&a.stream.as_str()))
        .collect();
    assert!(stray.is_empty(), "outputs of hostile streams: {stray:?}");
    assert!(
        collector.malformed().is_empty(),
        "{:?}",
        collector.malformed()
    );

    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let (probes, unhealthy) = (
        probes.load(Ordering::Relaxed),
        unhealthy.load(Ordering::Relaxed),
    );
    eprintln!(
        "hostile_modules: /healthz probed {probes} times over {:?}, {unhealthy} not 200",
        started.elapsed()
    );
    assert!(probes >= 10, "{probes} probes");
    assert_eq!(
        unhealthy, 0,
        "/healthz failed {unhealthy} of {probes} times"
    );

    let log = g.sigterm().await;
    for h in &corpus {
        let quarantined = log
            .lines()
            .filter(|l| l.contains("quarantined") && l.contains(&format!("\"{}\"", h.name)))
            .count();
        assert!(quarantined >= 1, "{}: no quarantine in the log", h.name);
    }
    // Guest log lines are rate limited per module (a burst of 50 per 10 s,
    // across the module's restarts).
    let spam = log.lines().filter(|l| l.contains(SPAM_TEXT)).count();
    let window = started.elapsed().as_secs() / 10 + 1;
    eprintln!("hostile_modules: {spam} log-spam lines reached the log");
    assert!(spam > 0 && spam as u64 <= 50 * window, "{spam} spam lines");
    assert!(log.contains("wasmgate stopped"), "{log}");
}
