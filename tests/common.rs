//! Shared fixtures: a minimal well-behaved processor in WAT that hostile
//! variants are built from, and a runtime with default limits.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use wasmgate::Reading;
use wasmgate::runtime::{Clock, HostEnv, Instance, Limits, ModuleConfig, Runtime};
use wasmgate::state::{MemoryState, StateStore};

/// The standard parts of a processor: marker, memory, bump allocator.
/// `{memory}` is the memory declaration's page count.
pub const PRELUDE: &str = r#"
  (import "wasmgate" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") {memory})
  (global $bump (mut i32) (i32.const 1024))
  (func (export "wasmgate_abi_v1"))
  (func (export "wasmgate_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
  (func (export "wasmgate_dealloc") (param i32 i32))
  ;; {"outputs": ...} map header + key, for echo-style results
  (data (i32.const 32768) "\a1\67outputs")
"#;

/// `process` that returns its input as its output (`{"outputs": batch}`).
pub const ECHO: &str = r#"
  (func (export "wasmgate_process") (param $p i32) (param $n i32) (result i64)
    (memory.copy (i32.const 32777) (local.get $p) (local.get $n))
    (i64.or
      (i64.shl (i64.const 32768) (i64.const 32))
      (i64.extend_i32_u (i32.add (local.get $n) (i32.const 9)))))
"#;

/// Echo, but every call after the first of an instance traps: it passes a
/// shadow run (one call) and fails once live.
pub const TRAPS_FROM_SECOND_CALL: &str = r#"
  (global $calls (mut i32) (i32.const 0))
  (func (export "wasmgate_process") (param $p i32) (param $n i32) (result i64)
    (if (i32.ge_u (global.get $calls) (i32.const 1)) (then unreachable))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (memory.copy (i32.const 32777) (local.get $p) (local.get $n))
    (i64.or
      (i64.shl (i64.const 32768) (i64.const 32))
      (i64.extend_i32_u (i32.add (local.get $n) (i32.const 9)))))
"#;

/// Build a module from the prelude (with `pages` of memory) and `body`.
pub fn wat_module(pages: u32, body: &str) -> Vec<u8> {
    let text = format!(
        "(module {} {body})",
        PRELUDE.replace("{memory}", &pages.to_string())
    );
    wat::parse_str(text).expect("fixture WAT parses")
}

/// The echo processor.
pub fn echo_module() -> Vec<u8> {
    wat_module(1, ECHO)
}

pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(Limits::default()).expect("runtime"))
}

pub fn runtime_with(limits: Limits) -> Arc<Runtime> {
    Arc::new(Runtime::new(limits).expect("runtime"))
}

pub fn env() -> HostEnv {
    env_with(Arc::new(MemoryState::new()), ModuleConfig::default())
}

pub fn env_with(state: Arc<dyn StateStore>, config: ModuleConfig) -> HostEnv {
    HostEnv {
        state,
        clock: Clock::Replay,
        config: Arc::new(config),
    }
}

/// Load and instantiate bytes, panicking with the error on failure.
pub fn instance(rt: &Runtime, name: &str, bytes: &[u8]) -> Instance {
    let m = rt
        .load_bytes(name, bytes)
        .unwrap_or_else(|e| panic!("load: {e}"));
    rt.instantiate(&m, env())
        .unwrap_or_else(|e| panic!("instantiate: {e}"))
}

/// Load and instantiate, returning the error text.
pub fn refusal(rt: &Runtime, name: &str, bytes: &[u8]) -> String {
    match rt.load_bytes(name, bytes) {
        Err(e) => e.to_string(),
        Ok(m) => match rt.instantiate(&m, env()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("module '{name}' was accepted"),
        },
    }
}

pub fn reading(sensor: &str, ts: i64, fields: &[(&str, f64)]) -> Reading {
    let mut r = Reading::new(sensor, ts);
    for (k, v) in fields {
        r.fields.push((k.to_string(), *v));
    }
    r
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A committed example processor.
pub fn example(name: &str) -> PathBuf {
    repo_root()
        .join("guest-sdk/examples/wasm")
        .join(format!("{name}.wasm"))
}

/// Like [`wat_module`], with extra imports placed first.
pub fn wat_module_importing(imports: &str, pages: u32, body: &str) -> Vec<u8> {
    let text = format!(
        "(module {imports} {} {body})",
        PRELUDE.replace("{memory}", &pages.to_string())
    );
    wat::parse_str(text).expect("fixture WAT parses")
}

/// The broker end-to-end tests talk to: `WASMGATE_TEST_BROKER=host:port`
/// (CI sets it to a real mosquitto), else an embedded rumqttd started once
/// for the whole test binary on a free loopback port.
pub fn broker() -> (String, u16) {
    use std::sync::OnceLock;
    static BROKER: OnceLock<(String, u16)> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            if let Ok(addr) = std::env::var("WASMGATE_TEST_BROKER") {
                let (host, port) = addr
                    .rsplit_once(':')
                    .expect("WASMGATE_TEST_BROKER=host:port");
                return (host.to_string(), port.parse().expect("port"));
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let config: rumqttd::Config = toml::from_str(&format!(
                r#"
                id = 0
                [router]
                id = 0
                max_connections = 10000
                max_outgoing_packet_count = 200
                max_segment_size = 104857600
                max_segment_count = 10
                [v4.1]
                name = "v4-1"
                listen = "127.0.0.1:{port}"
                next_connection_delay_ms = 1
                [v4.1.connections]
                connection_timeout_ms = 60000
                max_payload_size = 262144
                max_inflight_count = 100
                dynamic_filters = true
                "#
            ))
            .expect("rumqttd config");
            std::thread::spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                broker.start().expect("embedded broker");
            });
            // Wait until it accepts connections (an event, polled: the broker
            // thread has no readiness signal).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "embedded broker did not start"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            ("127.0.0.1".to_string(), port)
        })
        .clone()
}

/// A name no other test run uses (topics on a shared broker, gateway ids).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The next MQTT publication a test client receives, as (topic, payload);
/// panics after `secs` seconds.
pub async fn next_publish(ev: &mut rumqttc::EventLoop, secs: u64) -> (String, Vec<u8>) {
    use rumqttc::{Event, Packet};
    tokio::time::timeout(std::time::Duration::from_secs(secs), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return (p.topic.clone(), p.payload.to_vec());
                }
                Ok(_) => {}
                Err(e) => panic!("test client: {e}"),
            }
        }
    })
    .await
    .expect("a publication within the deadline")
}
