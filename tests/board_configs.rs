//! The per-board configurations in `board-configs/`: every file passes the
//! real `wasmgate check-config`, its commented processor examples load under
//! that board's limits, and the board-specific values (budgets sized to the
//! RAM, devices of the board) are what the README documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmgate::config::Config;
use wasmgate::settings::SourceConfig;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// The board files that must exist (stem of `board-configs/<stem>.toml`).
const BOARDS: [&str; 5] = [
    "raspberry-pi-4",
    "raspberry-pi-5",
    "raspberry-pi-zero-2w",
    "beaglebone-black",
    "generic-linux",
];

/// The 512 MB boards and the Raspberry Pi 4/5.
const SMALL: [&str; 2] = ["raspberry-pi-zero-2w", "beaglebone-black"];
const LARGE: [&str; 2] = ["raspberry-pi-4", "raspberry-pi-5"];

/// What each board's file must say about its hardware.
struct Devices {
    board: &'static str,
    /// The active serial source's device.
    serial: &'static str,
    /// The I²C bus of the BME280 source; `None`: no I²C source.
    i2c_bus: Option<&'static str>,
    /// The alarm's chip and line; `None`: no `[alarm]`.
    alarm: Option<(&'static str, u32)>,
    /// `[ota] board`.
    ota_board: &'static str,
}

const DEVICES: [Devices; 5] = [
    Devices {
        board: "raspberry-pi-4",
        serial: "/dev/serial0",
        i2c_bus: Some("/dev/i2c-1"),
        alarm: Some(("/dev/gpiochip0", 17)),
        ota_board: "pi4",
    },
    Devices {
        board: "raspberry-pi-5",
        // The header UART; /dev/serial0 is the debug connector on a Pi 5.
        serial: "/dev/ttyAMA0",
        i2c_bus: Some("/dev/i2c-1"),
        // RP1 is gpiochip0 from kernel 6.6.45 on (gpiochip4 before).
        alarm: Some(("/dev/gpiochip0", 17)),
        ota_board: "pi5",
    },
    Devices {
        board: "raspberry-pi-zero-2w",
        serial: "/dev/serial0",
        i2c_bus: Some("/dev/i2c-1"),
        alarm: Some(("/dev/gpiochip0", 17)),
        ota_board: "pi-zero-2w",
    },
    Devices {
        board: "beaglebone-black",
        // UART1 on P9.24/P9.26.
        serial: "/dev/ttyS1",
        // I2C2 on P9.19/P9.20.
        i2c_bus: Some("/dev/i2c-2"),
        // P9.12 = GPIO1_28.
        alarm: Some(("/dev/gpiochip1", 28)),
        ota_board: "beaglebone-black",
    },
    Devices {
        board: "generic-linux",
        serial: "/dev/ttyUSB0",
        // A PC has no header: an alarm chip that is missing stops the
        // daemon at start, so both stay commented out.
        i2c_bus: None,
        alarm: None,
        ota_board: "generic",
    },
];

fn board_dir() -> PathBuf {
    repo_root().join("board-configs")
}

fn board_file(board: &str) -> PathBuf {
    board_dir().join(format!("{board}.toml"))
}

/// Every `board-configs/*.toml`, sorted.
fn board_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(board_dir())
        .expect("board-configs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn load(board: &str) -> Config {
    let file = board_file(board);
    Config::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `wasmgate check-config <file>`: asserts exit 0 and returns stdout.
fn check_config(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("wasmgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check-config {} failed ({}):\n{}{}",
        file.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_board_config_passes_check_config() {
    let files = board_files();
    for board in BOARDS {
        assert!(
            files.contains(&board_file(board)),
            "board-configs/{board}.toml is missing (found {files:?})"
        );
    }
    let readme = std::fs::read_to_string(board_dir().join("README.md")).unwrap();
    for file in &files {
        let text = check_config(file);
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            text.contains(&format!("{name}: ok: ")),
            "{name}: no ok line in {text:?}"
        );
        // Processors stay commented out (their module paths exist only on
        // an installed system); the stream runs detectors.
        assert!(
            text.contains("ok: 1 stream(s), 0 processor module(s)"),
            "{name}: {text}"
        );
        // The README's table lists every file, with its install command.
        assert!(
            readme.contains(&format!(
                "sudo cp board-configs/{name} /etc/wasmgate/wasmgate.toml"
            )),
            "board-configs/README.md does not list {name}"
        );
    }
}

/// Uncomment each `# [[streams.…processors]]` block (the header and the
/// `# key = value` lines right after it), point its modules at the
/// committed examples and check the result: the commented examples are
/// valid, and the example modules load and initialise under the board's
/// fuel and memory limits.
#[test]
fn commented_processor_examples_load_under_each_boards_limits() {
    let examples = repo_root().join("guest-sdk/examples/wasm");
    let examples = examples.canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for file in board_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut blocks = 0;
        let mut in_block = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let header = line
                    .strip_prefix("# [[streams.")
                    .is_some_and(|rest| rest.contains(".processors]]"));
                if header {
                    in_block = true;
                    blocks += 1;
                    return line[2..].to_string();
                }
                let key_line = line.strip_prefix("# ").filter(|rest| {
                    rest.split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' '))
                });
                match (in_block, key_line) {
                    (true, Some(rest)) => rest.to_string(),
                    _ => {
                        in_block = false;
                        line.to_string()
                    }
                }
            })
            .collect();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(blocks >= 1, "{name}: no commented processor example");
        let edited = lines
            .join("\n")
            .replace("/usr/share/wasmgate/modules", examples.to_str().unwrap());
        let copy = dir.path().join(name);
        std::fs::write(&copy, edited).unwrap();
        let out = check_config(&copy);
        assert!(
            out.contains(&format!("ok: 1 stream(s), {blocks} processor module(s)")),
            "{name}: {out}"
        );
    }
}

#[test]
fn budgets_fit_each_boards_ram() {
    for small in SMALL {
        let s = load(small);
        // 512 MB of RAM: a small sled cache and small module instances.
        assert!(s.storage.cache_bytes <= 4 * MIB, "{small}: cache_bytes");
        assert!(s.runtime.memory_bytes <= 8 * MIB, "{small}: memory_bytes");
        for large in LARGE {
            let l = load(large);
            let pair = format!("{small} vs {large}");
            assert!(
                s.storage.cache_bytes <= l.storage.cache_bytes,
                "{pair}: cache_bytes"
            );
            assert!(
                s.runtime.memory_bytes <= l.runtime.memory_bytes,
                "{pair}: memory_bytes"
            );
            assert!(
                s.runtime.fuel_per_call <= l.runtime.fuel_per_call,
                "{pair}: fuel_per_call"
            );
            assert!(
                s.runtime.batch_size <= l.runtime.batch_size,
                "{pair}: batch_size"
            );
            assert!(s.outbox.max_bytes <= l.outbox.max_bytes, "{pair}: outbox");
        }
    }
    // The Pi 5 is the faster board; it never gets less than the Pi 4.
    let (pi4, pi5) = (load("raspberry-pi-4"), load("raspberry-pi-5"));
    assert!(pi4.storage.cache_bytes <= pi5.storage.cache_bytes);
    assert!(pi4.runtime.fuel_per_call <= pi5.runtime.fuel_per_call);
    assert!(pi4.runtime.memory_bytes <= pi5.runtime.memory_bytes);
    for board in BOARDS {
        let c = load(board);
        // Outbox sized for SD cards / eMMC: 32 MiB ..= 256 MiB.
        assert!(
            (32 * MIB..=256 * MIB).contains(&c.outbox.max_bytes),
            "{board}: outbox.max_bytes = {}",
            c.outbox.max_bytes
        );
        // An OTA bundle can carry the largest module the runtime accepts.
        assert!(
            c.ota.max_bundle_bytes as u64 >= c.runtime.max_module_bytes,
            "{board}: max_bundle_bytes < max_module_bytes"
        );
    }
}

#[test]
fn devices_and_defaults_match_each_board() {
    for d in &DEVICES {
        let c = load(d.board);
        let board = d.board;

        let serial: Vec<&Path> = c
            .sources
            .values()
            .filter_map(|s| match s {
                SourceConfig::Serial(s) => Some(s.device.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(serial, [Path::new(d.serial)], "{board}: serial devices");

        let i2c: Vec<&Path> = c
            .sources
            .values()
            .filter_map(|s| match s {
                SourceConfig::I2c(s) => Some(s.bus.as_path()),
                _ => None,
            })
            .collect();
        let want: Vec<&Path> = d.i2c_bus.iter().map(Path::new).collect();
        assert_eq!(i2c, want, "{board}: I2C buses");

        assert!(
            c.sources
                .values()
                .any(|s| matches!(s, SourceConfig::Mqtt(_))),
            "{board}: no MQTT source"
        );

        let alarm = c.alarm.as_ref().map(|a| (a.chip.to_str().unwrap(), a.line));
        assert_eq!(alarm, d.alarm, "{board}: alarm chip/line");

        // Common to every board: loopback HTTP, OTA off until keys are
        // added, one stream scored by detectors.
        assert!(
            c.http.listen.ip().is_loopback(),
            "{board}: http.listen = {}",
            c.http.listen
        );
        assert!(!c.ota.enabled(), "{board}: OTA must stay off by default");
        assert_eq!(c.ota.board, d.ota_board, "{board}: ota.board");
        assert_eq!(c.streams.len(), 1, "{board}: streams");
        assert!(
            c.streams.values().all(|s| !s.detect.detectors.is_empty()),
            "{board}: a stream without detectors"
        );
    }
}
