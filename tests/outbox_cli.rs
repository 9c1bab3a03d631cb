//! `wasmgate outbox stats` and `wasmgate outbox export`, through the binary,
//! on data directories written with the library's outbox API, including one
//! held open (locked) as by a running gateway.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wasmgate::outbox::{FullPolicy, Kind, Outbox, OutboxConfig, Staged};

fn wasmgate(args: &[&str], tmp: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        // Snapshots go here, so a test can see they are cleaned up.
        .env("TMPDIR", tmp)
        .output()
        .expect("wasmgate runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn item(kind: Kind, stream: usize, body: &str) -> Staged {
    Staged {
        kind,
        stream,
        body: body.as_bytes().to_vec(),
    }
}

/// What [`fill`] left in the outbox.
struct Filled {
    /// When the oldest entries were appended, ms since the epoch.
    t0: i64,
    /// Bytes stored (keys + values), summed over the entries.
    bytes: u64,
}

/// In boot 2 of `db` (boot 1 stored nothing): greenhouse outputs 1–5 (1 and
/// 2 evicted by the 6-entry budget), a greenhouse anomaly event, two barn
/// outputs (the second not JSON), one output too large to store; committed.
fn fill(db: &sled::Db) -> (Outbox, Filled) {
    let streams = [
        ("greenhouse".to_string(), FullPolicy::DropOldest),
        ("barn".to_string(), FullPolicy::DropOldest),
    ];
    drop(Outbox::open(db, OutboxConfig::default(), &streams).unwrap());
    let config = OutboxConfig {
        max_entries: 6,
        max_bytes: 64 << 10,
        ..OutboxConfig::default()
    };
    let ob = Outbox::open(db, config, &streams).unwrap();
    assert_eq!(ob.boot(), 2);
    // Old enough that the age reads 3m1xs for the next ten seconds.
    let t0 = now_ms() - 190_000;
    let r = ob
        .append(
            &mut [
                item(Kind::Output, 0, r#"{"n":1}"#),
                item(Kind::Output, 0, r#"{"n":2}"#),
                item(Kind::Output, 0, r#"{"n":3}"#),
                item(Kind::Anomaly, 0, r#"{"n":100}"#),
            ],
            t0,
        )
        .unwrap();
    assert_eq!(r.stored, 4);
    ob.append(
        &mut [
            item(Kind::Output, 1, r#"{"n":200}"#),
            item(Kind::Output, 1, "{not json"),
        ],
        t0 + 1_000,
    )
    .unwrap();
    let r = ob
        .append(
            &mut [
                item(Kind::Output, 0, r#"{"n":4}"#),
                item(Kind::Output, 0, r#"{"n":5}"#),
            ],
            t0 + 2_000,
        )
        .unwrap();
    assert_eq!((r.stored, r.evicted), (2, 2));
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(70_000));
    let r = ob
        .append(&mut [item(Kind::Output, 0, &big)], t0 + 3_000)
        .unwrap();
    assert_eq!(r.dropped, 1);
    let mark = ob.commit_mark();
    db.flush().unwrap();
    ob.committed(&mark);
    let bytes = ob
        .entries()
        .map(|e| {
            let e = e.unwrap();
            (e.key.len() + e.payload.len()) as u64
        })
        .sum();
    (ob, Filled { t0, bytes })
}

/// A data directory written by [`fill`] and closed.
fn closed_data_dir(dir: &Path) -> Filled {
    let db = wasmgate::state::open_db(dir, 4 << 20).unwrap();
    let (_ob, filled) = fill(&db);
    db.flush().unwrap();
    filled
}

fn topic<'a>(stats: &'a Value, kind: &str, stream: &str) -> &'a Value {
    stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == kind && t["stream"] == stream)
        .unwrap_or_else(|| panic!("no topic {kind}/{stream} in {stats}"))
}

fn stats_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats --json prints JSON")
}

fn assert_filled_stats(stats: &Value, filled: &Filled) {
    assert_eq!(stats["boot"], 2, "{stats}");
    assert_eq!(stats["entries"], 6, "{stats}");
    assert_eq!(stats["bytes"], filled.bytes, "{stats}");
    // Topics in key (send) order, as `export` lists the entries.
    let topics: Vec<(&str, &str)> = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["stream"].as_str().unwrap()))
        .collect();
    assert_eq!(
        topics,
        [
            ("anomaly", "greenhouse"),
            ("out", "barn"),
            ("out", "greenhouse")
        ]
    );
    let gh = topic(stats, "out", "greenhouse");
    assert_eq!(
        (gh["depth"].as_u64(), gh["next_seq"].as_u64()),
        (Some(3), Some(6))
    );
    // Evicted seqs 1 and 2: the oldest left is seq 3, appended at t0.
    assert_eq!(gh["oldest_enqueued_ms"], filled.t0);
    let age = gh["oldest_age_ms"].as_i64().unwrap();
    assert!((190_000..250_000).contains(&age), "{age}");
    let barn = topic(stats, "out", "barn");
    assert_eq!(
        (barn["depth"].as_u64(), barn["next_seq"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(barn["oldest_enqueued_ms"], filled.t0 + 1_000);
    let alarm = topic(stats, "anomaly", "greenhouse");
    assert_eq!(
        (alarm["depth"].as_u64(), alarm["next_seq"].as_u64()),
        (Some(1), Some(2))
    );
    let topic_bytes: u64 = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(topic_bytes, filled.bytes);
    assert_eq!(
        stats["dropped"],
        serde_json::json!({"evicted-oldest": 2, "too-large": 1})
    );
}

#[test]
fn stats_json_reports_depth_bytes_next_seq_and_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let filled = closed_data_dir(&dir);
    let out = wasmgate(
        &["outbox", "stats", "--json", "--data-dir", s(&dir)],
        tmp.path(),
    );
    let stats = stats_json(&out);
    assert_filled_stats(&stats, &filled);
    assert_eq!(stats["snapshot"], false);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Inspecting does not start a boot.
    let again = stats_json(&wasmgate(
        &["outbox", "stats", "--json", "--data-dir", s(&dir)],
        tmp.path(),
    ));
    assert_eq!(again["boot"], 2);
}

#[test]
fn stats_table_shows_topics_totals_boot_and_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let filled = closed_data_dir(&dir);
    let out = wasmgate(&["outbox", "stats", "--data-dir", s(&dir)], tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |first: &str, second: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cells| cells.len() >= 2 && cells[0] == first && cells[1] == second)
            .unwrap_or_else(|| panic!("no row {first} {second} in\n{text}"))
    };
    let header = row("KIND", "STREAM");
    assert_eq!(
        header,
        ["KIND", "STREAM", "DEPTH", "BYTES", "OLDEST", "NEXT", "SEQ"]
    );
    let gh = row("out", "greenhouse");
    assert_eq!((gh[2].as_str(), gh[5].as_str()), ("3", "6"), "{text}");
    assert!(gh[4].starts_with("3m1") && gh[4].ends_with('s'), "{text}");
    let barn = row("out", "barn");
    assert_eq!((barn[2].as_str(), barn[5].as_str()), ("2", "3"), "{text}");
    let alarm = row("anomaly", "greenhouse");
    assert_eq!((alarm[2].as_str(), alarm[5].as_str()), ("1", "2"), "{text}");
    let total: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        total[1..3],
        ["6", filled.bytes.to_string().as_str()],
        "{text}"
    );
    assert!(text.contains("\nboot: 2\n"), "{text}");
    assert!(
        text.contains("dropped: evicted-oldest 2, too-large 1"),
        "{text}"
    );
}

/// (kind, stream, seq) of each export line, checking every line's shape.
fn export_lines(jsonl: &str, boot: u64) -> Vec<(String, String, u64, Value)> {
    jsonl
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["boot"], boot, "{line}");
            assert!(v["enqueued_ms"].is_i64(), "{line}");
            (
                v["kind"].as_str().unwrap().to_string(),
                v["stream"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
                v["payload"].clone(),
            )
        })
        .collect()
}

#[test]
fn export_writes_every_entry_in_send_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let filled = closed_data_dir(&dir);
    let out = wasmgate(&["outbox", "export", "--data-dir", s(&dir)], tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = export_lines(&text, 2);
    let order: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|(k, st, seq, _)| (k.as_str(), st.as_str(), *seq))
        .collect();
    // Anomaly events first, then by stream name, then by sequence number.
    assert_eq!(
        order,
        [
            ("anomaly", "greenhouse", 1),
            ("out", "barn", 1),
            ("out", "barn", 2),
            ("out", "greenhouse", 3),
            ("out", "greenhouse", 4),
            ("out", "greenhouse", 5),
        ]
    );
    // The stored payload is embedded as JSON, with seq and boot spliced in.
    for (_, _, seq, payload) in lines.iter().filter(|l| l.1 == "greenhouse") {
        assert_eq!(payload["seq"], *seq);
        assert_eq!(payload["boot"], 2);
    }
    assert_eq!(
        lines[0].3,
        serde_json::json!({"seq": 1, "boot": 2, "n": 100})
    );
    assert_eq!(lines[3].3, serde_json::json!({"seq": 3, "boot": 2, "n": 3}));
    // A payload that is not JSON comes out as a string.
    assert_eq!(lines[2].3, r#"{"seq":2,"boot":2,not json"#);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["enqueued_ms"], filled.t0);

    // --output writes the same lines to a file.
    let file = tmp.path().join("outbox.jsonl");
    let out = wasmgate(
        &[
            "outbox",
            "export",
            "--data-dir",
            s(&dir),
            "--output",
            s(&file),
        ],
        tmp.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn config_file_names_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let filled = closed_data_dir(&dir);
    let config = tmp.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!("[storage]\npath = {}\n", Value::from(s(&dir))),
    )
    .unwrap();
    let out = wasmgate(
        &["outbox", "stats", "--json", "--config", s(&config)],
        tmp.path(),
    );
    assert_filled_stats(&stats_json(&out), &filled);

    // A broken config fails like `run` does, naming file, line and key.
    std::fs::write(&config, "[storage]\npaht = \"/x\"\n").unwrap();
    let out = wasmgate(&["outbox", "stats", "--config", s(&config)], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wasmgate.toml:2:1"), "{err}");
    assert!(err.contains("paht"), "{err}");
}

#[test]
fn missing_or_empty_data_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("nope");
    let out = wasmgate(&["outbox", "stats", "--data-dir", s(&gone)], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: no outbox in {}: the directory does not exist",
            gone.display()
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(!gone.exists(), "inspection must not create the directory");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = wasmgate(&["outbox", "export", "--data-dir", s(&empty)], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no outbox in"), "{err}");
    assert!(err.contains("no wasmgate database"), "{err}");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing created"
    );

    // A database without an outbox (state only).
    let state_only = tmp.path().join("state-only");
    drop(wasmgate::state::open_db(&state_only, 4 << 20).unwrap());
    let out = wasmgate(
        &["outbox", "stats", "--data-dir", s(&state_only)],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the database has no outbox"), "{err}");

    // Usage errors: clap's exit code 2.
    let out = wasmgate(&["outbox", "stats"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let out = wasmgate(
        &["outbox", "stats", "--data-dir", "a", "--config", "b"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn running_gateway_directory_is_read_through_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let snapshots = tmp.path().join("tmp");
    std::fs::create_dir(&snapshots).unwrap();
    // The database stays open, as in a running gateway: sled's lock is held.
    let db = wasmgate::state::open_db(&dir, 4 << 20).unwrap();
    let (ob, filled) = fill(&db);

    let out = wasmgate(
        &["outbox", "stats", "--json", "--data-dir", s(&dir)],
        &snapshots,
    );
    let stats = stats_json(&out);
    assert_filled_stats(&stats, &filled);
    assert_eq!(stats["snapshot"], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by a running gateway") && err.contains("crash-consistent snapshot"),
        "{err}"
    );

    // The gateway goes on: greenhouse seq 3 is delivered (removed) and a
    // new barn output committed. The next look sees both: the snapshot is
    // taken per run, of the current files.
    let delivered = ob
        .entries()
        .map(Result::unwrap)
        .find(|e| e.seq == 3)
        .unwrap();
    assert_eq!(delivered.stream, "greenhouse");
    assert!(ob.remove(&delivered.key).unwrap());
    ob.append(&mut [item(Kind::Output, 1, r#"{"n":201}"#)], now_ms())
        .unwrap();
    let mark = ob.commit_mark();
    db.flush().unwrap();
    ob.committed(&mark);
    let out = wasmgate(&["outbox", "export", "--data-dir", s(&dir)], &snapshots);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("crash-consistent snapshot"), "{err}");
    let lines = export_lines(&String::from_utf8(out.stdout).unwrap(), 2);
    let order: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|(k, st, seq, _)| (k.as_str(), st.as_str(), *seq))
        .collect();
    assert_eq!(
        order,
        [
            ("anomaly", "greenhouse", 1),
            ("out", "barn", 1),
            ("out", "barn", 2),
            ("out", "barn", 3),
            ("out", "greenhouse", 4),
            ("out", "greenhouse", 5),
        ]
    );
    assert_eq!(lines[3].3["n"], 201);

    // The temporary copies are gone, and the gateway's database still works.
    assert_eq!(
        std::fs::read_dir(&snapshots).unwrap().count(),
        0,
        "snapshot left behind"
    );
    let r = ob
        .append(&mut [item(Kind::Output, 1, r#"{"n":202}"#)], now_ms())
        .unwrap();
    assert_eq!(r.stored, 1);
    db.flush().unwrap();
}
