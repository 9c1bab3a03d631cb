//! # wasmgate
//!
//! An IoT gateway daemon that runs sandboxed WebAssembly sensor processors
//! (interpreted by [wasmi]) on readings from MQTT, serial and I²C, detects
//! anomalies and forwards everything through a durable outbox.
//!
//! ## Layout
//!
//! ```text
//! main.rs            the thin `wasmgate` binary: parse arguments, call into `cli`
//! cli.rs             subcommands (`replay`, `check-config`, …) and their exit codes
//! check.rs           `check-config`: validate a file and load every module it names
//! config.rs          the TOML configuration; errors carry file:line:column
//! settings.rs        the daemon sections: [gateway], [mqtt], [storage], [sources.*]
//! reading.rs         `Reading`, the unit of work that flows through every stage
//! pattern.rs         sensor-id glob patterns used to route readings to streams
//! cbor.rs            deterministic CBOR writer primitives (host → guest encoding)
//! state.rs           per-module persistent state: in memory or in sled
//! metrics.rs         lock-free metric primitives (latency histogram)
//! http.rs            the local endpoint: /healthz /readyz /metrics /status
//! demo.rs            `wasmgate demo`: embedded broker, simulated sensors, live OTA
//! outbox/            the durable outbox between processing and the broker
//!   mod.rs           sled layout, append with budget policy, stats, export
//!   commit.rs        group commit: one flush, then the inbound acks, in order
//!   uplink.rs        QoS 1 publishing of the outbox, in-flight window, reconnect
//!   inspect.rs       `wasmgate outbox stats|export`
//! ota/               signed module updates over MQTT
//!   bundle.rs        CBOR bundle and key-set formats, signing
//!   keys.rs          ed25519 key files, key ids
//!   verify.rs        every check, each with its rejection reason
//!   store.rs         counters, time floor, key set, active bundles in sled
//!   task.rs          receive → verify → persist → shadow run → swap → watch → roll back
//! ratelimit.rs       log-line rate limiting for peer-triggered warnings
//! logging.rs         log output: journald under systemd, text or JSON on stderr
//! systemd.rs         sd_notify (ready, status, watchdog, stopping), journal check
//! pipeline.rs        a stream's processor chain: route → batch → modules in order
//! runtime/           the Wasm processor runtime (wasmi)
//!   mod.rs           `Runtime`: engine, module cache keyed by sha256, loading
//!   limits.rs        fuel / memory / stack / output limits and supervision knobs
//!   abi.rs           ABI v1 checks: marker, exports, imports (see wit/ABI.md)
//!   wire.rs          batch encoding and strict decoding of guest results
//!   host.rs          host imports: log, clock, state, config
//!   instance.rs      one live instance: buffers, fuel, trap classification
//!   supervisor.rs    failure window, quarantine, per-module statistics
//!   error.rs         `ProcessorError` and its kinds
//! replay/            `wasmgate replay`: recorded input → pipeline → JSON lines
//! detect/            built-in anomaly detectors (EWMA, Gaussian, MAD, rate,
//!                    flatline, range, Holt-Winters) and the per-stream set
//! sources/           reading sources (being built for the daemon):
//!   decode/          payload decoders: JSON, CBOR, number, CSV line, key=value
//!   i2c/             I²C sensors (BME280 driver) and the polling core
//! ```
//!
//! The data path and the reasons behind it are in `ARCHITECTURE.md`; the
//! processor contract is `wit/processor.wit` and `wit/ABI.md`.

pub mod alarm;
pub mod cbor;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod detect;
pub mod fuzz_api;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod ota;
pub mod outbox;
pub mod pattern;
pub mod pipeline;
pub mod ratelimit;
pub mod reading;
pub mod replay;
pub mod run;
pub mod runtime;
pub mod settings;
pub mod sources;
pub mod state;
pub mod systemd;

pub use reading::Reading;
