//! `wasmgate demo`: the whole gateway in one command, nothing to install.
//!
//! An embedded MQTT broker (rumqttd) on loopback, simulated greenhouse
//! sensors with injected heat spikes, the `calibrate` example processor and
//! two detectors, the durable outbox, the HTTP endpoint — and, a few seconds
//! in, a new version of the processor signed with a freshly generated demo
//! key and delivered through the real OTA path. A live line shows readings
//! per second, anomalies, the outbox, readiness and the module version;
//! Ctrl-C (or `--duration-secs`) stops everything cleanly.
//!
//! Nothing here is simulated except the sensors: the gateway is the same
//! `run()` that `wasmgate run` starts, with a generated configuration.

use std::io::{IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::ota::bundle::{self, KeySet, KeySetKey, Manifest, Scope, Target};
use crate::ota::keys;

/// The example processor the demo runs (and updates over the air).
const CALIBRATE: &[u8] = include_bytes!("../../guest-sdk/examples/wasm/calibrate.wasm");
/// Gateway id of the demo.
pub const GATEWAY: &str = "demo";
/// When the OTA update is pushed.
const OTA_AFTER: Duration = Duration::from_secs(5);
/// Simulated sensors and their baseline temperatures (°C).
const SENSORS: [(&str, f64); 3] = [
    ("greenhouse-north", 21.0),
    ("greenhouse-south", 24.0),
    ("nursery", 19.5),
];

/// The demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or socket operation failed.
    #[error("demo: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// The embedded broker did not come up.
    #[error("demo: the embedded MQTT broker did not start on 127.0.0.1:{0}")]
    Broker(u16),
    /// Keys or bundles could not be made.
    #[error("demo: {0}")]
    Ota(String),
    /// The generated configuration was refused (a bug).
    #[error("demo: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The gateway failed.
    #[error("demo: {0}")]
    Gateway(#[from] crate::run::RunError),
}

/// What `demo` is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop by itself after this long (tests, CI); `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    /// HTTP endpoint port; `None`: 9810 if free, else any free port.
    pub http_port: Option<u16>,
}

/// What the demo saw, printed at the end (and checked by tests).
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// Readings the simulator published.
    pub published: u64,
    /// Outputs that came back on the out topics.
    pub outputs: u64,
    /// Anomaly events that came back.
    pub anomalies: u64,
    /// The processor version the gateway last reported.
    pub module_version: String,
    /// The last OTA outcome reported for it.
    pub ota_outcome: String,
    /// Whether `/readyz` answered ready at least once.
    pub ready_seen: bool,
}

#[derive(Default)]
struct Seen {
    published: AtomicU64,
    outputs: AtomicU64,
    anomalies: AtomicU64,
    ready: AtomicBool,
    ready_seen: AtomicBool,
    state: std::sync::Mutex<(String, String)>,
    outbox: AtomicU64,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> DemoError {
    move |source| DemoError::Io { what, source }
}

fn free_port(preferred: Option<u16>) -> Result<u16, DemoError> {
    if let Some(p) = preferred {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("picking a free port"))?;
    Ok(l.local_addr().map_err(io("picking a free port"))?.port())
}

/// Start rumqttd on `port` in a thread of its own; return when it accepts.
fn start_broker(port: u16) -> Result<(), DemoError> {
    let text = format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = 100
        max_outgoing_packet_count = 200
        max_segment_size = 104857600
        max_segment_count = 10
        [v4.1]
        name = "demo"
        listen = "127.0.0.1:{port}"
        next_connection_delay_ms = 1
        [v4.1.connections]
        connection_timeout_ms = 60000
        max_payload_size = 10485760
        max_inflight_count = 100
        dynamic_filters = true
        "#
    );
    let config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| DemoError::Ota(format!("broker config: {e}")))?;
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "demo broker stopped");
            }
        })
        .map_err(io("starting the broker thread"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(DemoError::Broker(port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn unix_now() -> i64 {
    crate::ota::verify::unix_now()
}

/// `module` with a custom section naming its version: new bytes (so a new
/// sha256 and a new compile), the same behaviour.
fn with_version_section(module: &[u8], version: &str) -> Vec<u8> {
    let name = b"wasmgate-demo-version";
    let mut payload = Vec::new();
    payload.push(name.len() as u8);
    payload.extend_from_slice(name);
    payload.extend_from_slice(version.as_bytes());
    let mut out = module.to_vec();
    out.push(0);
    let mut n = payload.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

struct Setup {
    dir: PathBuf,
    config_text: String,
    release: ed25519_dalek::SigningKey,
    broker_port: u16,
    http_port: u16,
}

fn prepare(dir: &Path, opts: &DemoOptions) -> Result<Setup, DemoError> {
    std::fs::create_dir_all(dir).map_err(io("creating the demo directory"))?;
    let broker_port = free_port(None)?;
    let http_port = free_port(opts.http_port.or(Some(9810)))?;
    let ota = |e: &dyn std::fmt::Display| DemoError::Ota(e.to_string());
    let root = keys::generate().map_err(|e| ota(&e))?;
    let release = keys::generate().map_err(|e| ota(&e))?;
    let now = unix_now();
    let keyset = KeySet {
        version: 1,
        issued_at: now - 60,
        expires: now + 86_400,
        keys: vec![KeySetKey {
            id: keys::key_id(&release.verifying_key()),
            public: release.verifying_key().to_bytes(),
        }],
        revoked: Vec::new(),
    };
    let keyset_path = dir.join("keyset.cbor");
    std::fs::write(
        &keyset_path,
        bundle::sign_keyset(&keyset, std::slice::from_ref(&root)),
    )
    .map_err(io("writing the demo key set"))?;
    let module_path = dir.join("calibrate.wasm");
    std::fs::write(&module_path, with_version_section(CALIBRATE, "1.0.0"))
        .map_err(io("writing the demo module"))?;
    let config_text = format!(
        r#"# Generated by `wasmgate demo`.
[gateway]
id = "{GATEWAY}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
reconnect_min_ms = 200
reconnect_max_ms = 2000
[storage]
path = "{state}"
[http]
listen = "127.0.0.1:{http_port}"
[ota]
root_keys = ["{root_pub}"]
keyset_file = "{keyset}"
watch_secs = 30

[sources.greenhouse]
type = "mqtt"
topics = ["demo/sensors/+/data"]
sensor_segment = 2

[streams.greenhouse]
sensors = ["*"]
[[streams.greenhouse.processors]]
module = "{module}"
name = "calibrate"
config = {{ fields = {{ temp = {{ scale = 1.8, offset = 32.0 }} }} }}
[[streams.greenhouse.detectors]]
kind = "range"
fields = ["temp"]
max = 95.0
[[streams.greenhouse.detectors]]
kind = "ewma"
fields = ["temp"]
"#,
        state = dir.join("state").display(),
        root_pub = hex::encode(root.verifying_key().as_bytes()),
        keyset = keyset_path.display(),
        module = module_path.display(),
    );
    std::fs::write(dir.join("wasmgate.toml"), &config_text)
        .map_err(io("writing the demo configuration"))?;
    Ok(Setup {
        dir: dir.to_path_buf(),
        config_text,
        release,
        broker_port,
        http_port,
    })
}

/// A signed bundle of calibrate 1.1.0 for the demo gateway.
fn update_bundle(release: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use sha2::Digest;
    let module = with_version_section(CALIBRATE, "1.1.0");
    let now = unix_now();
    let manifest = Manifest {
        name: "calibrate".into(),
        version: "1.1.0".into(),
        release: 2,
        sha256: sha2::Sha256::digest(&module).into(),
        length: module.len() as u64,
        target: Target {
            abi: crate::runtime::abi::ABI_VERSION,
            board: "any".into(),
        },
        scope: Scope::Gateway(GATEWAY.into()),
        issued_at: now - 10,
        expires: now + 86_400,
        fuel: None,
        memory: None,
        key_ids: vec![keys::key_id(&release.verifying_key())],
    };
    bundle::sign_bundle(&manifest, &module, std::slice::from_ref(release))
}

/// GET `path` on the local endpoint: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Run the demo until Ctrl-C or `opts.duration`.
pub async fn demo(opts: DemoOptions) -> Result<DemoSummary, DemoError> {
    let dir = std::env::temp_dir().join(format!("wasmgate-demo-{}", std::process::id()));
    let result = run_in(&dir, &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, opts: &DemoOptions) -> Result<DemoSummary, DemoError> {
    let setup = prepare(dir, opts)?;
    start_broker(setup.broker_port)?;
    let config =
        crate::config::Config::from_str_at(&setup.config_text, setup.dir.join("wasmgate.toml"))?;
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();

    // The gateway: the real `run`, stopped by `gw_stop`.
    let gw_stop = CancellationToken::new();
    let gateway = {
        let s = gw_stop.clone();
        tokio::spawn(crate::run::run(config, async move { s.cancelled().await }))
    };

    // A watcher on everything the gateway publishes.
    let mut opts_w = MqttOptions::new("wasmgate-demo-watch", "127.0.0.1", setup.broker_port);
    opts_w.set_keep_alive(Duration::from_secs(30));
    opts_w.set_max_packet_size(1 << 20, 1 << 20);
    let (watch, mut watch_ev) = AsyncClient::new(opts_w, 16);
    let _ = watch
        .subscribe(format!("wasmgate/{GATEWAY}/#"), QoS::AtMostOnce)
        .await;
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                match watch_ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.contains("/out/") {
                            seen.outputs.fetch_add(1, Ordering::Relaxed);
                        } else if p.topic.contains("/anomaly/") {
                            seen.anomalies.fetch_add(1, Ordering::Relaxed);
                        } else if p.topic.ends_with("/modules/calibrate/state") {
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                                let version = v["version"].as_str().unwrap_or("?").to_string();
                                let outcome = v["outcome"].as_str().unwrap_or("?").to_string();
                                if let Ok(mut s) = seen.state.lock() {
                                    *s = (version, outcome);
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }

    // The simulated sensors: 10 readings/s each, a heat spike now and then.
    let mut opts_s = MqttOptions::new("wasmgate-demo-sensors", "127.0.0.1", setup.broker_port);
    opts_s.set_keep_alive(Duration::from_secs(30));
    opts_s.set_max_packet_size(1 << 20, 1 << 20);
    let (sensors, mut sensors_ev) = AsyncClient::new(opts_s, 64);
    tokio::spawn(async move {
        loop {
            if sensors_ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    {
        let seen = seen.clone();
        let stop = stop.clone();
        let client = sensors.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (i, (sensor, base)) in SENSORS.iter().enumerate() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let noise = (rng % 1000) as f64 / 1000.0 - 0.5;
                    let spike = i == 1 && n % 80 == 79; // every 8 s on one sensor
                    let temp = if spike { 45.0 } else { base + noise * 0.6 };
                    let humidity = 55.0 + noise * 4.0;
                    let payload = format!(r#"{{"temp": {temp:.2}, "humidity": {humidity:.1}}}"#);
                    if client
                        .publish(
                            format!("demo/sensors/{sensor}/data"),
                            QoS::AtLeastOnce,
                            false,
                            payload,
                        )
                        .await
                        .is_ok()
                    {
                        seen.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        });
    }

    let http = setup.http_port;
    println!(
        "wasmgate demo: a gateway with an embedded broker, simulated sensors and a live OTA update"
    );
    println!();
    println!("  MQTT broker   127.0.0.1:{}", setup.broker_port);
    println!(
        "  watch         mosquitto_sub -h 127.0.0.1 -p {} -t 'wasmgate/{GATEWAY}/#' -v",
        setup.broker_port
    );
    println!("  health        curl 127.0.0.1:{http}/readyz");
    println!("  metrics       curl 127.0.0.1:{http}/metrics");
    println!("  status        curl 127.0.0.1:{http}/status");
    println!(
        "  config        {}",
        setup.dir.join("wasmgate.toml").display()
    );
    println!();
    println!(
        "  calibrate 1.1.0, signed with a fresh demo key, is pushed over OTA after {} s.",
        OTA_AFTER.as_secs()
    );
    println!("  Ctrl-C stops.");
    println!();

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut ota_sent = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_published = 0;
    let mut lines = 0u64;
    let until = opts.duration;
    let deadline = async move {
        match until {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut deadline => break,
            _ = tick.tick() => {}
        }
        if !ota_sent && started.elapsed() >= OTA_AFTER {
            ota_sent = true;
            let bundle = update_bundle(&setup.release);
            let _ = sensors
                .publish(
                    format!("wasmgate/{GATEWAY}/ota"),
                    QoS::AtLeastOnce,
                    false,
                    bundle,
                )
                .await;
        }
        // Readiness and the outbox from the real endpoint.
        let ready = tokio::task::spawn_blocking(move || http_get(http, "/readyz"))
            .await
            .ok()
            .flatten()
            .is_some_and(|(code, _)| code == 200);
        seen.ready.store(ready, Ordering::Relaxed);
        if ready {
            seen.ready_seen.store(true, Ordering::Relaxed);
        }
        if let Some((_, body)) = tokio::task::spawn_blocking(move || http_get(http, "/status"))
            .await
            .ok()
            .flatten()
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                seen.outbox.store(
                    v["outbox"]["entries"].as_u64().unwrap_or(0),
                    Ordering::Relaxed,
                );
            }
        }
        let published = seen.published.load(Ordering::Relaxed);
        let rate = published - last_published;
        last_published = published;
        let (version, outcome) = seen.state.lock().map(|s| s.clone()).unwrap_or_default();
        let line = format!(
            "{:>4}s  readings {rate:>3}/s  outputs {:>6}  anomalies {:>3}  outbox {:>4}  {}  calibrate {} ({})",
            started.elapsed().as_secs(),
            seen.outputs.load(Ordering::Relaxed),
            seen.anomalies.load(Ordering::Relaxed),
            seen.outbox.load(Ordering::Relaxed),
            if ready { "ready    " } else { "not ready" },
            if version.is_empty() { "?" } else { &version },
            if outcome.is_empty() { "…" } else { &outcome },
        );
        lines += 1;
        if tty {
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else if lines % 5 == 1 {
            println!("{line}");
        }
    }
    if tty {
        println!();
    }
    println!("stopping: the gateway drains and flushes…");
    stop.cancel();
    gw_stop.cancel();
    let gw_result = gateway.await;
    let (module_version, ota_outcome) = seen.state.lock().map(|s| s.clone()).unwrap_or_default();
    let summary = DemoSummary {
        published: seen.published.load(Ordering::Relaxed),
        outputs: seen.outputs.load(Ordering::Relaxed),
        anomalies: seen.anomalies.load(Ordering::Relaxed),
        module_version,
        ota_outcome,
        ready_seen: seen.ready_seen.load(Ordering::Relaxed),
    };
    println!(
        "demo: {} readings published, {} outputs and {} anomaly events received, calibrate {} ({}), ready: {}",
        summary.published,
        summary.outputs,
        summary.anomalies,
        summary.module_version,
        summary.ota_outcome,
        if summary.ready_seen { "yes" } else { "no" }
    );
    match gw_result {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(DemoError::Ota(format!("gateway task: {e}"))),
    }
}
