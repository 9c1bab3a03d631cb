//! wasmgate's integration tests: one test binary, one file per feature
//! (wasmi style). Hostile modules are inline WAT; the example processors are
//! the committed `.wasm` files under `guest-sdk/examples/wasm/`; `replay`
//! tests start the real `wasmgate` binary.

mod common;

mod abi_contract;
mod abi_shape;
mod board_configs;
mod check_config;
mod demo;
mod detection_quality;
mod examples;
mod hostile_modules;
mod http_endpoint;
mod limits;
mod mosquitto;
mod ota_cli;
mod ota_e2e;
mod ota_swap;
mod outbox_cli;
mod quarantine;
mod replay;
mod run_mqtt;
mod run_serial;
mod runtime_basics;
mod state;
mod store_forward;
mod systemd_notify;
mod traps;
