//! The local HTTP endpoint (`[http] listen`, loopback by default):
//!
//! | path | what |
//! |---|---|
//! | `/healthz` | liveness: the processing loop is making progress (200 / 503) |
//! | `/readyz` | readiness: brokers connected, storage writable, modules running, outbox under budget; the body names each check (200 / 503) |
//! | `/metrics` | Prometheus text format |
//! | `/status` | a JSON summary |
//!
//! A deliberately small HTTP/1.1 server (GET only, one request per
//! connection, bounded request size, time and concurrency): it is an
//! operator's window, not a web service, and it must not pull a framework
//! onto a 512 MB board.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Histogram, LATENCY_BOUNDS_US};
use crate::ota::task::OtaMetrics;
use crate::outbox::{Outbox, OutboxConfig};
use crate::run::RunStats;
use crate::runtime::supervisor::LATENCY_BUCKETS_US;
use crate::runtime::{ErrorKind, ModuleStats};
use crate::sources::SourceMetrics;

/// Largest request head read, bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;

/// One module as the processing task last reported it.
#[derive(Debug, Clone)]
pub struct ModuleSnapshot {
    /// Stream name.
    pub stream: String,
    /// Processor name.
    pub module: String,
    /// sha256 of the running version.
    pub sha256: String,
    /// Its statistics.
    pub stats: ModuleStats,
}

/// One stream's counters.
#[derive(Debug, Clone, Default)]
pub struct StreamSnapshot {
    /// Stream name.
    pub stream: String,
    /// Outputs stored.
    pub outputs: u64,
    /// Anomaly events stored.
    pub anomalies: u64,
}

/// Everything the endpoint reports, shared with the stages.
pub struct Health {
    started: Instant,
    /// Gateway id.
    pub gateway_id: String,
    /// Milliseconds since start of the processing loop's last turn.
    processing_beat: AtomicU64,
    /// The loop is stalled when its last turn is older than this.
    liveness_limit: Duration,
    /// Module statistics, refreshed by the processing task.
    pub modules: Mutex<Vec<ModuleSnapshot>>,
    /// Stream counters, refreshed by the processing task.
    pub streams: Mutex<Vec<StreamSnapshot>>,
    /// The outbox (depth, drops, uplink state).
    pub outbox: Arc<Outbox>,
    /// Its budget.
    pub outbox_config: OutboxConfig,
    /// Every source's metrics, by name.
    pub sources: BTreeMap<String, Arc<SourceMetrics>>,
    /// Names of the MQTT sources (their connection is checked for readiness).
    pub mqtt_sources: Vec<String>,
    /// Gateway counters.
    pub run: Arc<RunStats>,
    /// OTA counters, when OTA is on.
    pub ota: Option<Arc<OtaMetrics>>,
}

impl Health {
    /// Health state for a gateway; liveness fails when the processing loop
    /// has not turned for `liveness_limit`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gateway_id: String,
        liveness_limit: Duration,
        outbox: Arc<Outbox>,
        outbox_config: OutboxConfig,
        sources: BTreeMap<String, Arc<SourceMetrics>>,
        mqtt_sources: Vec<String>,
        run: Arc<RunStats>,
        ota: Option<Arc<OtaMetrics>>,
    ) -> Health {
        Health {
            started: Instant::now(),
            gateway_id,
            processing_beat: AtomicU64::new(0),
            liveness_limit,
            modules: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            outbox,
            outbox_config,
            sources,
            mqtt_sources,
            run,
            ota,
        }
    }

    /// The processing loop made a turn.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.processing_beat.store(ms, Ordering::Relaxed);
    }

    /// How long ago the processing loop last turned.
    pub fn since_beat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.processing_beat.load(Ordering::Relaxed)))
    }

    /// Whether the main loop is making progress.
    pub fn live(&self) -> bool {
        self.since_beat() <= self.liveness_limit
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// Details, or why it fails.
    pub detail: String,
}

/// Every readiness check, in a stable order.
pub fn readiness(h: &Health) -> Vec<Check> {
    let mut checks = Vec::new();
    let live = h.live();
    checks.push(Check {
        name: "processing",
        ok: live,
        detail: format!("last turn {} ms ago", h.since_beat().as_millis()),
    });
    if !h.mqtt_sources.is_empty() {
        let down: Vec<&str> = h
            .mqtt_sources
            .iter()
            .filter(|n| {
                h.sources
                    .get(*n)
                    .is_some_and(|m| !m.up.load(Ordering::Relaxed))
            })
            .map(String::as_str)
            .collect();
        checks.push(Check {
            name: "ingest-broker",
            ok: down.is_empty(),
            detail: if down.is_empty() {
                "connected and subscribed".into()
            } else {
                format!("not connected (sources {})", down.join(", "))
            },
        });
    }
    let m = h.outbox.metrics();
    let up = m.uplink_connected.load(Ordering::Relaxed);
    checks.push(Check {
        name: "uplink-broker",
        ok: up,
        detail: if up {
            "connected".into()
        } else {
            "not connected: results wait in the outbox".into()
        },
    });
    let storage_ok = !m.storage_failing.load(Ordering::Relaxed);
    checks.push(Check {
        name: "storage",
        ok: storage_ok,
        detail: if storage_ok {
            "last flush succeeded".into()
        } else {
            "the last flush failed: nothing is acknowledged until it works".into()
        },
    });
    let modules = h.modules.lock().map(|m| m.clone()).unwrap_or_default();
    let quarantined: Vec<String> = modules
        .iter()
        .filter(|m| m.stats.quarantined)
        .map(|m| format!("{}/{}", m.stream, m.module))
        .collect();
    checks.push(Check {
        name: "modules",
        ok: quarantined.is_empty(),
        detail: if quarantined.is_empty() {
            format!("{} running", modules.len())
        } else {
            format!("quarantined: {}", quarantined.join(", "))
        },
    });
    let (entries, bytes) = h.outbox.depth();
    let cfg = &h.outbox_config;
    let under = entries < cfg.max_entries && bytes < cfg.max_bytes;
    checks.push(Check {
        name: "outbox",
        ok: under,
        detail: format!(
            "{entries} of {} entries, {bytes} of {} bytes",
            cfg.max_entries, cfg.max_bytes
        ),
    });
    checks
}

/// Serve until `stop`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Too many at once: close it.
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &health)).await;
        });
    }
}

async fn handle(mut stream: tokio::net::TcpStream, h: &Health) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", b"request too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n").await;
    }
    let (code, ctype, body) = route(path, h);
    if method == "HEAD" {
        return respond(&mut stream, code, ctype, b"").await;
    }
    respond(&mut stream, code, ctype, body.as_bytes()).await
}

/// The response to `GET path`: (status, content type, body).
pub fn route(path: &str, h: &Health) -> (u16, &'static str, String) {
    match path {
        "/healthz" => {
            if h.live() {
                (200, "text/plain; charset=utf-8", "ok\n".into())
            } else {
                (
                    503,
                    "text/plain; charset=utf-8",
                    format!(
                        "stalled: the processing loop has not turned for {} ms\n",
                        h.since_beat().as_millis()
                    ),
                )
            }
        }
        "/readyz" => {
            let checks = readiness(h);
            let ready = checks.iter().all(|c| c.ok);
            let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
            for c in &checks {
                let _ = writeln!(
                    body,
                    "{} {}: {}",
                    if c.ok { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
            (
                if ready { 200 } else { 503 },
                "text/plain; charset=utf-8",
                body,
            )
        }
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", metrics(h)),
        "/status" => (200, "application/json", status(h).to_string()),
        "/" => (
            200,
            "text/plain; charset=utf-8",
            "wasmgate: /healthz /readyz /metrics /status\n".into(),
        ),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// The `/status` JSON.
pub fn status(h: &Health) -> serde_json::Value {
    let checks = readiness(h);
    let (entries, bytes) = h.outbox.depth();
    let m = h.outbox.metrics();
    let modules: Vec<_> = h
        .modules
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "stream": m.stream, "module": m.module, "sha256": m.sha256,
                "calls": m.stats.calls, "errors": m.stats.errors_total(),
                "quarantined": m.stats.quarantined, "last_error": m.stats.last_error,
                "last_error_kind": m.stats.last_error_kind.map(|k| k.as_str()),
            })
        })
        .collect();
    let sources: serde_json::Map<String, serde_json::Value> = h
        .sources
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                serde_json::json!({
                    "up": s.up.load(Ordering::Relaxed),
                    "received": s.received.load(Ordering::Relaxed),
                    "decoded": s.decoded.load(Ordering::Relaxed),
                    "rejected": s.rejected(),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "gateway": h.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": h.uptime().as_secs(),
        "boot": h.outbox.boot(),
        "live": h.live(),
        "ready": checks.iter().all(|c| c.ok),
        "checks": checks,
        "readings_in": h.run.readings_in.load(Ordering::Relaxed),
        "sources": sources,
        "modules": modules,
        "outbox": {
            "entries": entries,
            "bytes": bytes,
            "oldest_enqueued_ms": h.outbox.oldest_enqueued_ms(),
            "dropped": h.outbox.dropped(),
            "uplink_connected": m.uplink_connected.load(Ordering::Relaxed),
        },
    })
}

/// Escape a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A histogram from per-bucket counts (upper bounds in µs, last count
    /// is the overflow) and a sum in µs.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds_us: &[u64],
        counts: &[u64],
        sum_us: u64,
    ) {
        let mut cumulative = 0;
        for (i, b) in bounds_us.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            let le = format!("{}", *b as f64 / 1e6);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative);
        }
        let total: u64 = counts.iter().sum();
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, total);
        self.sample(&format!("{name}_sum"), labels, sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, total);
    }

    fn latency(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        self.histogram(name, &[], &LATENCY_BOUNDS_US, &h.buckets(), h.sum_us());
    }
}

/// What `/proc/self` says of this process, for the `process_*` metrics.
#[derive(Debug, Default, PartialEq)]
struct ProcSelf {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`, 100 on every
/// Linux architecture (it is part of the kernel's user-space ABI).
const USER_HZ: f64 = 100.0;

impl ProcSelf {
    fn read() -> Self {
        let text = |p: &str| std::fs::read_to_string(p).ok();
        // The boot time never changes: `/proc/stat` is read at the first
        // scrape only.
        static BTIME: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
        let btime = *BTIME.get_or_init(|| {
            text("/proc/stat").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            })
        });
        let mut p = ProcSelf::parse(
            text("/proc/self/stat").as_deref(),
            text("/proc/self/status").as_deref(),
            text("/proc/self/limits").as_deref(),
            btime,
        );
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p
    }

    /// Fields of `stat` (after the parenthesised command name, which may
    /// contain spaces): utime 14, stime 15, starttime 22 (in `USER_HZ`
    /// ticks since boot); `status`: VmRSS, VmSize (kB); `limits`: "Max open
    /// files" (soft limit).
    fn parse(
        stat: Option<&str>,
        status: Option<&str>,
        limits: Option<&str>,
        btime: Option<f64>,
    ) -> Self {
        let mut p = ProcSelf::default();
        if let Some((_, rest)) = stat.and_then(|s| s.rsplit_once(')')) {
            // `rest` starts with field 3 (state).
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(s)) = (field(14), field(15)) {
                p.cpu_seconds = Some((u + s) / USER_HZ);
            }
            if let (Some(start), Some(bt)) = (field(22), btime) {
                p.start_time_seconds = Some(bt + start / USER_HZ);
            }
        }
        let kb = |key: &str| {
            status?.lines().find_map(|l| {
                let v = l.strip_prefix(key)?.trim().strip_suffix("kB")?;
                v.trim().parse::<u64>().ok().map(|k| k * 1024)
            })
        };
        p.resident_bytes = kb("VmRSS:");
        p.virtual_bytes = kb("VmSize:");
        p.max_fds = limits.and_then(|l| {
            l.lines().find_map(|l| {
                l.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        });
        p
    }
}

/// The standard process metrics (the names Prometheus client libraries'
/// process collectors use, so existing dashboards and alerts apply); a
/// metric whose `/proc` source cannot be read is left out.
fn process_metrics(o: &mut Out, p: &ProcSelf) {
    let families: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds.map(|v| v as f64),
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            o.family(name, kind, help);
            o.sample(name, &[], v);
        }
    }
}

/// The `/metrics` body, Prometheus text format 0.0.4.
pub fn metrics(h: &Health) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);

    o.family("wasmgate_build_info", "gauge", "Build information.");
    o.sample(
        "wasmgate_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("gateway", &h.gateway_id),
        ],
        1,
    );
    o.family("wasmgate_uptime_seconds", "gauge", "Seconds since start.");
    o.sample("wasmgate_uptime_seconds", &[], h.uptime().as_secs_f64());
    process_metrics(&mut o, &ProcSelf::read());
    o.family(
        "wasmgate_processing_last_turn_seconds",
        "gauge",
        "Seconds since the processing loop last turned (liveness).",
    );
    o.sample(
        "wasmgate_processing_last_turn_seconds",
        &[],
        h.since_beat().as_secs_f64(),
    );
    o.family(
        "wasmgate_ready",
        "gauge",
        "1 when every readiness check passes.",
    );
    o.sample(
        "wasmgate_ready",
        &[],
        u8::from(readiness(h).iter().all(|c| c.ok)),
    );
    o.family(
        "wasmgate_readings_total",
        "counter",
        "Readings that entered the streams.",
    );
    o.sample("wasmgate_readings_total", &[], r(&h.run.readings_in));

    // Sources.
    o.family(
        "wasmgate_source_up",
        "gauge",
        "Whether the source's connection, port or bus is up.",
    );
    for (n, s) in &h.sources {
        o.sample(
            "wasmgate_source_up",
            &[("source", n)],
            u8::from(s.up.load(Ordering::Relaxed)),
        );
    }
    o.family(
        "wasmgate_source_received_total",
        "counter",
        "Messages, lines or polls received.",
    );
    for (n, s) in &h.sources {
        o.sample(
            "wasmgate_source_received_total",
            &[("source", n)],
            r(&s.received),
        );
    }
    o.family(
        "wasmgate_source_decoded_total",
        "counter",
        "Readings decoded and handed on.",
    );
    for (n, s) in &h.sources {
        o.sample(
            "wasmgate_source_decoded_total",
            &[("source", n)],
            r(&s.decoded),
        );
    }
    o.family(
        "wasmgate_source_rejected_total",
        "counter",
        "Inputs rejected, by reason.",
    );
    for (n, s) in &h.sources {
        for (reason, count) in s.rejected() {
            o.sample(
                "wasmgate_source_rejected_total",
                &[("source", n), ("reason", reason)],
                count,
            );
        }
    }
    o.family(
        "wasmgate_source_dropped_total",
        "counter",
        "Batches dropped because the queue to the streams was full (drop-newest).",
    );
    for (n, s) in &h.sources {
        o.sample(
            "wasmgate_source_dropped_total",
            &[("source", n)],
            r(&s.dropped_queue_full),
        );
    }

    // Streams.
    let streams = h.streams.lock().map(|s| s.clone()).unwrap_or_default();
    o.family(
        "wasmgate_stream_outputs_total",
        "counter",
        "Outputs stored in the outbox.",
    );
    for s in &streams {
        o.sample(
            "wasmgate_stream_outputs_total",
            &[("stream", &s.stream)],
            s.outputs,
        );
    }
    o.family(
        "wasmgate_stream_anomalies_total",
        "counter",
        "Anomaly events the detectors flagged.",
    );
    for s in &streams {
        o.sample(
            "wasmgate_stream_anomalies_total",
            &[("stream", &s.stream)],
            s.anomalies,
        );
    }

    // Modules.
    let modules = h.modules.lock().map(|m| m.clone()).unwrap_or_default();
    let per_module =
        |o: &mut Out, name: &str, kind: &str, help: &str, f: &dyn Fn(&ModuleStats) -> u64| {
            o.family(name, kind, help);
            for m in &modules {
                o.sample(
                    name,
                    &[("stream", &m.stream), ("module", &m.module)],
                    f(&m.stats),
                );
            }
        };
    per_module(
        &mut o,
        "wasmgate_module_calls_total",
        "counter",
        "Calls into the module.",
        &|s| s.calls,
    );
    per_module(
        &mut o,
        "wasmgate_module_readings_in_total",
        "counter",
        "Readings handed to the module.",
        &|s| s.readings_in,
    );
    per_module(
        &mut o,
        "wasmgate_module_readings_out_total",
        "counter",
        "Readings the module returned.",
        &|s| s.readings_out,
    );
    per_module(
        &mut o,
        "wasmgate_module_fuel_total",
        "counter",
        "Fuel consumed by successful calls.",
        &|s| s.fuel_used,
    );
    per_module(
        &mut o,
        "wasmgate_module_passed_through_total",
        "counter",
        "Readings passed on unprocessed after a failure.",
        &|s| s.passed_through,
    );
    per_module(
        &mut o,
        "wasmgate_module_dropped_total",
        "counter",
        "Readings dropped after a failure.",
        &|s| s.dropped,
    );
    per_module(
        &mut o,
        "wasmgate_module_restarts_total",
        "counter",
        "Fresh instances after a failure.",
        &|s| s.restarts,
    );
    per_module(
        &mut o,
        "wasmgate_module_quarantines_total",
        "counter",
        "Times the module was quarantined.",
        &|s| s.quarantines,
    );
    per_module(
        &mut o,
        "wasmgate_module_quarantined",
        "gauge",
        "1 while the module is quarantined.",
        &|s| u64::from(s.quarantined),
    );
    o.family(
        "wasmgate_module_errors_total",
        "counter",
        "Failed calls, by kind (trap, out-of-fuel, …).",
    );
    for m in &modules {
        for kind in ErrorKind::ALL {
            o.sample(
                "wasmgate_module_errors_total",
                &[
                    ("stream", &m.stream),
                    ("module", &m.module),
                    ("kind", kind.as_str()),
                ],
                m.stats.errors_of(kind),
            );
        }
    }
    o.family(
        "wasmgate_module_call_duration_seconds",
        "histogram",
        "Duration of one call into the module.",
    );
    for m in &modules {
        o.histogram(
            "wasmgate_module_call_duration_seconds",
            &[("stream", &m.stream), ("module", &m.module)],
            &LATENCY_BUCKETS_US,
            &m.stats.latency_buckets,
            m.stats.latency_sum_us,
        );
    }

    // Outbox and uplink.
    let om = h.outbox.metrics();
    let (entries, bytes) = h.outbox.depth();
    o.family(
        "wasmgate_outbox_entries",
        "gauge",
        "Entries waiting in the outbox.",
    );
    o.sample("wasmgate_outbox_entries", &[], entries);
    o.family(
        "wasmgate_outbox_bytes",
        "gauge",
        "Bytes waiting in the outbox (keys and values).",
    );
    o.sample("wasmgate_outbox_bytes", &[], bytes);
    o.family(
        "wasmgate_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting entry (0 when empty).",
    );
    let age = h
        .outbox
        .oldest_enqueued_ms()
        .map(|t| (crate::sources::now_ms() - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    o.sample("wasmgate_outbox_oldest_age_seconds", &[], age);
    o.family(
        "wasmgate_outbox_dropped_total",
        "counter",
        "Entries dropped at the budget, by reason.",
    );
    for (reason, n) in h.outbox.dropped() {
        o.sample("wasmgate_outbox_dropped_total", &[("reason", &reason)], n);
    }
    o.family(
        "wasmgate_outbox_appended_total",
        "counter",
        "Entries appended.",
    );
    o.sample("wasmgate_outbox_appended_total", &[], r(&om.appended));
    o.family(
        "wasmgate_outbox_delivered_total",
        "counter",
        "Entries acknowledged by the broker and removed.",
    );
    o.sample("wasmgate_outbox_delivered_total", &[], r(&om.delivered));
    o.family(
        "wasmgate_outbox_republished_total",
        "counter",
        "Publications sent again after a reconnect.",
    );
    o.sample("wasmgate_outbox_republished_total", &[], r(&om.republished));
    o.family(
        "wasmgate_outbox_commits_total",
        "counter",
        "Group commits (flushes).",
    );
    o.sample("wasmgate_outbox_commits_total", &[], r(&om.commits));
    o.family(
        "wasmgate_inbound_acked_total",
        "counter",
        "Inbound MQTT messages acknowledged after their commit.",
    );
    o.sample("wasmgate_inbound_acked_total", &[], r(&om.acked));
    o.family(
        "wasmgate_storage_errors_total",
        "counter",
        "Failed storage operations.",
    );
    o.sample("wasmgate_storage_errors_total", &[], r(&om.storage_errors));
    o.family(
        "wasmgate_uplink_connected",
        "gauge",
        "1 while the uplink is connected.",
    );
    o.sample(
        "wasmgate_uplink_connected",
        &[],
        u8::from(om.uplink_connected.load(Ordering::Relaxed)),
    );
    o.latency(
        "wasmgate_ack_latency_seconds",
        "Time from an inbound message's receipt to its acknowledgement.",
        &om.ack_latency,
    );
    o.latency(
        "wasmgate_publish_latency_seconds",
        "Time from an entry's append to its PUBACK.",
        &om.publish_latency,
    );
    o.latency(
        "wasmgate_commit_flush_seconds",
        "Duration of one group commit's flush.",
        &om.flush_latency,
    );

    // OTA.
    if let Some(ota) = &h.ota {
        o.family(
            "wasmgate_ota_received_total",
            "counter",
            "Bundles and key sets received.",
        );
        o.sample("wasmgate_ota_received_total", &[], r(&ota.received));
        o.family(
            "wasmgate_ota_activated_total",
            "counter",
            "New module versions activated.",
        );
        o.sample("wasmgate_ota_activated_total", &[], r(&ota.activated));
        o.family(
            "wasmgate_ota_rolled_back_total",
            "counter",
            "New versions rolled back after failures.",
        );
        o.sample("wasmgate_ota_rolled_back_total", &[], r(&ota.rolled_back));
        o.family(
            "wasmgate_ota_rejected_total",
            "counter",
            "Bundles and key sets rejected, by reason.",
        );
        if let Ok(rej) = ota.rejected.lock() {
            for (reason, n) in rej.iter() {
                o.sample("wasmgate_ota_rejected_total", &[("reason", reason)], n);
            }
        }
        o.latency(
            "wasmgate_ota_activation_seconds",
            "Time from a bundle's receipt to its activation.",
            &ota.activation_latency,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_parsed_from_proc_text() {
        // A command name with a space and a parenthesis, as `comm` allows.
        let stat = "4242 (wasm gate) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 75 0 0 20 0 5 0 123456 251658240 3400 18446744073709551615";
        let status = "Name:\twasmgate\nVmPeak:\t  260000 kB\nVmSize:\t  245760 kB\n\
                      VmRSS:\t   13600 kB\nThreads:\t5\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        let p = ProcSelf::parse(
            Some(stat),
            Some(status),
            Some(limits),
            Some(1_700_000_000.0),
        );
        assert_eq!(p.cpu_seconds, Some(3.25));
        assert_eq!(p.start_time_seconds, Some(1_700_000_000.0 + 1234.56));
        assert_eq!(p.resident_bytes, Some(13_600 * 1024));
        assert_eq!(p.virtual_bytes, Some(245_760 * 1024));
        assert_eq!(p.max_fds, Some(1024));
    }

    #[test]
    fn unreadable_proc_leaves_the_metrics_out() {
        let p = ProcSelf::parse(None, Some("garbage"), None, None);
        assert_eq!(p, ProcSelf::default());
        let mut o = Out(String::new());
        process_metrics(&mut o, &p);
        assert!(o.0.is_empty(), "{}", o.0);
    }

    #[test]
    fn this_process_reports_its_memory_and_cpu() {
        let mut o = Out(String::new());
        process_metrics(&mut o, &ProcSelf::read());
        for name in [
            "process_cpu_seconds_total",
            "process_start_time_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                o.0.contains(&format!("\n{name} ")),
                "{name} missing:\n{}",
                o.0
            );
        }
    }
}
