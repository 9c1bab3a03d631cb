//! Store and forward, end to end: the real `wasmgate` binary between
//! private mosquitto brokers (see `mosquitto.rs`), readings numbered `n` in,
//! outputs with `(seq, boot)` out, and a persistent-session collector
//! recording what arrives.
//!
//! - `outage_loses_nothing_and_keeps_order`: ingest on broker A, uplink on
//!   broker B; B stops cleanly for ~1.5 s in the middle of a steady stream.
//!   Every reading arrives, first arrivals are in consecutive seq order.
//! - `sigkill_crash_loop_loses_nothing`: one broker; the gateway is
//!   SIGKILLed K times at random moments (seeded, printed) while readings
//!   keep coming. Every reading still arrives (the broker redelivers what
//!   was not acknowledged, the outbox what was not delivered), first
//!   arrivals in seq order, no sequence number reused for other content.
//!   `WASMGATE_CRASH_K` (20), `WASMGATE_CRASH_N` (2000),
//!   `WASMGATE_CRASH_SEED` (time), `WASMGATE_CRASH_MIN_MS`/`_MAX_MS`
//!   (100/700: the delay before each SIGKILL) tune it.
//! - `budget_drop_oldest_keeps_the_newest`: uplink down, `max_entries = 50`:
//!   the gateway keeps acknowledging inbound readings and the outbox holds
//!   exactly the newest 50 (checked with `wasmgate outbox` when available
//!   and by what a restarted gateway delivers once the uplink is back).
//! - `budget_reject_new_pushes_back_and_loses_nothing`: same with
//!   `outbox_full = "reject-new"`: the gateway stops acknowledging at the
//!   budget; when the uplink comes back everything arrives, in order.
//!
//! What the gateway acknowledged on the ingest connection is read from the
//! ingest broker's log (`Received PUBACK from wasmgate-<id>`). Each test
//! prints its figures (`lost`, `duplicates`, time) to stderr.
//!
//! Without mosquitto installed the tests print `SKIPPED` and pass, unless
//! `WASMGATE_REQUIRE_MOSQUITTO` is set.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::unique;
use crate::mosquitto::{Collector, Gateway, Mosquitto, Publisher, Report, XorShift, analyse};

const SUBSCRIBED: &str = "MQTT sources subscribed";
const UPLINK_UP: &str = "uplink connected; draining the outbox";

/// One gateway's files and names.
struct Setup {
    _dir: tempfile::TempDir,
    gw: String,
    config: PathBuf,
    state: PathBuf,
    /// Where readings are published.
    topic: String,
}

impl Setup {
    /// The client id of the gateway's ingest connection.
    fn ingest_client(&self) -> String {
        format!("wasmgate-{}", self.gw)
    }
}

/// A gateway reading `<base>/+/data` from the broker on `ingest_port`,
/// publishing to the one on `uplink_port` (default: the same), passing
/// every reading through to stream `s`.
fn setup(ingest_port: u16, uplink_port: Option<u16>, outbox: &str, policy: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("gw");
    let base = unique("sf");
    let state = dir.path().join("state");
    let uplink = match uplink_port {
        Some(port) => format!(
            "[uplink]\n[uplink.broker]\nhost = \"127.0.0.1\"\nport = {port}\n\
             reconnect_min_ms = 100\nreconnect_max_ms = 1000\n"
        ),
        None => String::new(),
    };
    let config = dir.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{gw}"

[mqtt]
host = "127.0.0.1"
port = {ingest_port}
reconnect_min_ms = 100
reconnect_max_ms = 1000

[http]
listen = "127.0.0.1:0"
[storage]
path = "{state}"

[outbox]
{outbox}

{uplink}

[sources.in]
type = "mqtt"
topics = ["{base}/+/data"]
format = "json"
sensor_segment = 1
qos = 1

[streams.s]
sensors = ["*"]
outbox_full = "{policy}"

[[streams.s.detectors]]
kind = "range"
fields = ["n"]
max = 1e12
"#,
            state = state.display(),
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        gw,
        config,
        state,
        topic: format!("{base}/sensor-1/data"),
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

/// Print the gateway log's warnings and errors (the first few).
fn print_warnings(test: &str, log: &str) {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    eprintln!(
        "{test}: {} warning/error lines in the last gateway log",
        bad.len()
    );
    for l in bad.iter().take(8) {
        eprintln!("  {l}");
    }
}

fn print_report(test: &str, r: &Report, elapsed: Duration) {
    eprintln!(
        "{test}: arrivals={} distinct={} lost={} duplicates={} reprocessed={} \
         out_of_order={} gaps={} seq_conflicts={} boots={:?} seq={:?} time={:.1}s",
        r.arrivals,
        r.distinct,
        r.lost.len(),
        r.duplicates,
        r.reprocessed,
        r.out_of_order.len(),
        r.gaps.len(),
        r.seq_conflicts.len(),
        r.boots,
        r.seq_range,
        elapsed.as_secs_f64()
    );
}

/// Await `count` distinct readings at the collector; on timeout, panic
/// with the figures so far.
async fn await_all(c: &Collector, count: usize, expected: std::ops::Range<i64>, secs: u64) {
    if let Err(got) = c.wait_distinct(count, Duration::from_secs(secs)).await {
        let r = analyse(&c.arrivals(), expected);
        let lost: Vec<_> = r.lost.iter().take(20).collect();
        panic!(
            "only {got} of {count} readings arrived within {secs} s; \
             first lost: {lost:?}; report: {r:?}"
        );
    }
}

/// The invariants every test holds: nothing lost or made up, first
/// arrivals in seq order, no seq reused for different content.
fn assert_delivery(r: &Report, c: &Collector) {
    assert!(c.malformed().is_empty(), "malformed: {:?}", c.malformed());
    assert!(r.lost.is_empty(), "lost: {:?}", r.lost);
    assert!(r.unexpected.is_empty(), "unexpected n: {:?}", r.unexpected);
    assert!(
        r.out_of_order.is_empty(),
        "first arrivals out of seq order: {:?}",
        r.out_of_order
    );
    assert!(
        r.seq_conflicts.is_empty(),
        "seq reused: {:?}",
        r.seq_conflicts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_keeps_order() {
    const N: i64 = 600;
    let Some(a) = Mosquitto::try_start().await else {
        return;
    };
    let mut b = Mosquitto::try_start().await.expect("mosquitto");
    let s = setup(a.port(), Some(b.port()), "", "drop-oldest");
    let collector = Collector::start(b.host(), b.port(), &s.gw).await;

    let started = Instant::now();
    let mut gw = Gateway::start(&s.config);
    gw.wait_for_log(SUBSCRIBED, Duration::from_secs(20)).await;
    gw.wait_for_log(UPLINK_UP, Duration::from_secs(20)).await;
    let publisher = Publisher::start(
        a.host(),
        a.port(),
        s.topic.clone(),
        0..N,
        Duration::from_millis(5),
    )
    .await;

    // The outage: B goes away cleanly a third of the way in, for ~1.5 s.
    publisher
        .wait_sent(N as usize / 3, Duration::from_secs(30))
        .await;
    b.stop();
    let at = publisher.sent();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.start().await;
    eprintln!(
        "outage: uplink broker down from reading {at} to {}",
        publisher.sent()
    );
    gw.wait_for_log(UPLINK_UP, Duration::from_secs(20)).await;

    publisher.wait_done(Duration::from_secs(60)).await;
    await_all(&collector, N as usize, 0..N, 60).await;
    let elapsed = started.elapsed();
    let log = gw.sigterm().await;
    print_warnings("outage_loses_nothing_and_keeps_order", &log);
    assert!(log.contains("wasmgate stopped"), "{log}");

    let r = analyse(&collector.arrivals(), 0..N);
    print_report("outage_loses_nothing_and_keeps_order", &r, elapsed);
    assert_delivery(&r, &collector);
    assert_eq!(r.reprocessed, 0, "no crash, so no reading processed twice");
    assert!(r.gaps.is_empty(), "seq gaps: {:?}", r.gaps);
    assert_eq!(r.seq_range["s"], (1, N as u64));
    assert_eq!(r.boots.len(), 1, "one boot: {:?}", r.boots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_crash_loop_loses_nothing() {
    let k = env_or("WASMGATE_CRASH_K", 20);
    let n = env_or("WASMGATE_CRASH_N", 2000) as i64;
    let lo = env_or("WASMGATE_CRASH_MIN_MS", 100);
    let hi = env_or("WASMGATE_CRASH_MAX_MS", 700).max(lo + 1);
    let seed = env_or(
        "WASMGATE_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let mut rng = XorShift::new(seed);
    let Some(m) = Mosquitto::try_start().await else {
        return;
    };
    eprintln!(
        "sigkill_crash_loop: K={k} N={n} delays {lo}..{hi} ms seed={seed} \
         (WASMGATE_CRASH_SEED to repeat)"
    );
    let s = setup(m.port(), None, "", "drop-oldest");
    let collector = Collector::start(m.host(), m.port(), &s.gw).await;

    let started = Instant::now();
    let mut gw = Gateway::start(&s.config);
    // The ingest session exists (and is subscribed) before anything is
    // published: from then on the broker queues readings for it while the
    // gateway is down.
    gw.wait_for_log(SUBSCRIBED, Duration::from_secs(20)).await;
    // Spread the readings over the expected length of the crash loop.
    let interval = Duration::from_micros((k * (lo + hi) / 2 + 1000) * 1000 / n.max(1) as u64);
    let publisher = Publisher::start(m.host(), m.port(), s.topic.clone(), 0..n, interval).await;

    let mut kills_before_running = 0;
    for _ in 0..k {
        tokio::time::sleep(Duration::from_millis(rng.range(lo, hi))).await;
        let log = gw.sigkill();
        if !log.contains("wasmgate running") {
            kills_before_running += 1;
        }
        gw = Gateway::start(&s.config);
    }
    eprintln!(
        "crash loop done after {:.1}s: {} of {n} readings published",
        started.elapsed().as_secs_f64(),
        publisher.sent()
    );
    publisher.wait_done(Duration::from_secs(120)).await;
    await_all(&collector, n as usize, 0..n, 120).await;
    let elapsed = started.elapsed();
    let log = gw.sigterm().await;
    print_warnings("sigkill_crash_loop_loses_nothing", &log);
    assert!(log.contains("wasmgate stopped"), "{log}");

    let r = analyse(&collector.arrivals(), 0..n);
    print_report("sigkill_crash_loop_loses_nothing", &r, elapsed);
    eprintln!(
        "lost={} duplicates={} restarts={k} seed={seed} (killed before running: \
         {kills_before_running}; gaps: {:?})",
        r.lost.len(),
        r.duplicates,
        r.gaps
    );
    assert_delivery(&r, &collector);
}

/// The outbox as `wasmgate outbox` reports it: `(entries, evicted-oldest,
/// n held)`.
fn outbox_contents(state: &Path) -> (u64, u64, Vec<i64>) {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(args)
            .arg("--data-dir")
            .arg(state)
            .output()
            .expect("wasmgate runs")
    };
    let stats = run(&["outbox", "stats", "--json"]);
    assert!(
        stats.status.success(),
        "wasmgate outbox stats failed: {}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap_or_else(|e| {
        panic!(
            "stats JSON: {e}: {}",
            String::from_utf8_lossy(&stats.stdout)
        )
    });
    let entries = v["entries"].as_u64().expect("stats: entries");
    let evicted = v["dropped"]["evicted-oldest"].as_u64().unwrap_or(0);
    let export = run(&["outbox", "export"]);
    assert!(
        export.status.success(),
        "wasmgate outbox export failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let mut held: Vec<i64> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let e: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|err| panic!("export line {l}: {err}"));
            e["payload"]["fields"]["n"]
                .as_f64()
                .unwrap_or_else(|| panic!("export line without payload.fields.n: {l}"))
                as i64
        })
        .collect();
    held.sort_unstable();
    eprintln!("outbox stats: {v}");
    (entries, evicted, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_drop_oldest_keeps_the_newest() {
    const N: i64 = 200;
    const BUDGET: i64 = 50;
    let Some(a) = Mosquitto::try_start().await else {
        return;
    };
    // The gateway id must be known before the collector subscribes, so the
    // setup comes first and learns B's port from a reservation.
    let uplink_port = crate::mosquitto::free_port();
    let s = setup(
        a.port(),
        Some(uplink_port),
        &format!("max_entries = {BUDGET}"),
        "drop-oldest",
    );
    let mut b = Mosquitto::try_start_on(uplink_port)
        .await
        .expect("mosquitto");
    let collector = Collector::start(b.host(), b.port(), &s.gw).await;
    b.stop();

    let started = Instant::now();
    let mut gw = Gateway::start(&s.config);
    gw.wait_for_log(SUBSCRIBED, Duration::from_secs(20)).await;
    let publisher = Publisher::start(
        a.host(),
        a.port(),
        s.topic.clone(),
        0..N,
        Duration::from_millis(2),
    )
    .await;
    publisher.wait_done(Duration::from_secs(30)).await;
    gw.wait_for_log("outbox full", Duration::from_secs(30))
        .await;
    // The gateway keeps taking readings: it acknowledges all of them.
    let acked = a
        .wait_pubacks_from(&s.ingest_client(), N as usize, Duration::from_secs(30))
        .await
        .unwrap_or_else(|got| panic!("the gateway acknowledged {got} of {N} readings"));
    let log = gw.sigterm().await;
    print_warnings("budget_drop_oldest_keeps_the_newest", &log);
    assert!(log.contains("wasmgate stopped"), "{log}");
    eprintln!(
        "drop-oldest: {acked} readings acknowledged with the uplink down, {} `outbox full` \
         log lines",
        log.matches("outbox full").count()
    );

    let (entries, evicted, held) = outbox_contents(&s.state);
    eprintln!("drop-oldest: outbox holds {entries}, evicted-oldest={evicted}");
    assert_eq!(entries, BUDGET as u64);
    assert_eq!(evicted, (N - BUDGET) as u64);
    assert_eq!(held, (N - BUDGET..N).collect::<Vec<_>>());

    // With the uplink back, a restarted gateway delivers exactly the newest
    // 50, with the sequence numbers they were stored under.
    b.start().await;
    let mut gw = Gateway::start(&s.config);
    gw.wait_for_log(UPLINK_UP, Duration::from_secs(20)).await;
    await_all(&collector, BUDGET as usize, N - BUDGET..N, 30).await;
    let elapsed = started.elapsed();
    let log = gw.sigterm().await;
    print_warnings("budget_drop_oldest_keeps_the_newest (restarted)", &log);
    let r = analyse(&collector.arrivals(), N - BUDGET..N);
    print_report("budget_drop_oldest_keeps_the_newest", &r, elapsed);
    assert_delivery(&r, &collector);
    assert!(r.gaps.is_empty(), "seq gaps: {:?}", r.gaps);
    assert_eq!(r.seq_range["s"], ((N - BUDGET + 1) as u64, N as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_reject_new_pushes_back_and_loses_nothing() {
    const N: i64 = 200;
    const BUDGET: usize = 50;
    let Some(a) = Mosquitto::try_start().await else {
        return;
    };
    let uplink_port = crate::mosquitto::free_port();
    let s = setup(
        a.port(),
        Some(uplink_port),
        &format!("max_entries = {BUDGET}"),
        "reject-new",
    );
    let mut b = Mosquitto::try_start_on(uplink_port)
        .await
        .expect("mosquitto");
    let collector = Collector::start(b.host(), b.port(), &s.gw).await;
    b.stop();

    let started = Instant::now();
    let mut gw = Gateway::start(&s.config);
    gw.wait_for_log(SUBSCRIBED, Duration::from_secs(20)).await;
    let publisher = Publisher::start(
        a.host(),
        a.port(),
        s.topic.clone(),
        0..N,
        Duration::from_millis(2),
    )
    .await;
    publisher.wait_done(Duration::from_secs(30)).await;
    gw.wait_for_log("outbox full: not acknowledging", Duration::from_secs(30))
        .await;
    // Observation window: with the outbox full and the uplink down, no
    // more acknowledgements (those of the last commit may still land).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_full = a.pubacks_from(&s.ingest_client());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_later = a.pubacks_from(&s.ingest_client());
    eprintln!(
        "reject-new: {acked_full} readings acknowledged at the budget, {acked_later} after 1.5 s more"
    );
    assert!(
        (1..=BUDGET).contains(&acked_full),
        "acknowledged {acked_full} readings with room for {BUDGET}"
    );
    assert_eq!(acked_later, acked_full, "acknowledgements while full");

    // The uplink comes back: room frees up, the rest is taken and delivered.
    b.start().await;
    gw.wait_for_log(UPLINK_UP, Duration::from_secs(20)).await;
    await_all(&collector, N as usize, 0..N, 60).await;
    a.wait_pubacks_from(&s.ingest_client(), N as usize, Duration::from_secs(10))
        .await
        .unwrap_or_else(|got| panic!("the gateway acknowledged {got} of {N} readings"));
    let elapsed = started.elapsed();
    let log = gw.sigterm().await;
    print_warnings("budget_reject_new_pushes_back_and_loses_nothing", &log);
    assert!(log.contains("wasmgate stopped"), "{log}");
    let r = analyse(&collector.arrivals(), 0..N);
    print_report(
        "budget_reject_new_pushes_back_and_loses_nothing",
        &r,
        elapsed,
    );
    assert_delivery(&r, &collector);
    assert_eq!(r.reprocessed, 0);
    assert!(r.gaps.is_empty(), "seq gaps: {:?}", r.gaps);
    assert_eq!(r.seq_range["s"], (1, N as u64));
}
