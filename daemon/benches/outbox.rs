//! Durable ingest benchmark: prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo bench -p wasmgate --bench outbox
//! WASMGATE_BENCH_N=100000 cargo bench -p wasmgate --bench outbox
//! ```
//!
//! Every figure is for a real sled database (4 MiB page cache, as the
//! daemon) in a fresh directory on disk: under cargo's `target/tmp`, or
//! `WASMGATE_BENCH_DIR`. A reading is a ~150-byte JSON output body appended
//! to the [`Outbox`] one message at a time; it counts as acknowledged when
//! the inbound ack would be sent, i.e. after the sled flush covering it.
//!
//! 1. Group commit: a producer appends at full speed and hands the real
//!    [`Committer`] one [`CommitRequest`] per message; run with the default
//!    `commit_wait_ms = 5` and with `0`. `WASMGATE_BENCH_N` messages
//!    (default 20 000).
//! 2. Flush per reading: the same appends with `db.flush()` after each,
//!    then the ack. `WASMGATE_BENCH_N / 10` messages (default 2 000).
//! 3. Paced: `WASMGATE_BENCH_RATE` messages/s (default 200) for 2 s through
//!    the group committer, to show the latency at a realistic rate.
//!
//! Latency is receipt (just before the append) → acknowledgement, computed
//! exactly from every recorded duration.
//!
//! With `WASMGATE_BENCH_OUT=<file>`, every figure is also appended to that
//! file as a JSON line (`{"bench","name","value","unit","min","max"}`; one
//! run, so min = max = value) for `scripts/bench.sh`, which runs the bench
//! several times and takes the median.

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cores, cpu_model, env_u64, uname};
use tokio::sync::mpsc;
use wasmgate::outbox::commit::{AckSink, COMMIT_QUEUE, CommitRequest, Committer, PendingAck};
use wasmgate::outbox::{FullPolicy, Kind, Outbox, OutboxConfig, Staged};

/// sled page cache, as the daemon's default `storage.cache_bytes`.
const CACHE_BYTES: u64 = 4 << 20;
/// Paced run length.
const PACED: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A processed reading as the pipeline would store it (~150 bytes).
fn body(i: u64) -> Vec<u8> {
    format!(
        "{{\"sensor\":\"greenhouse-{:02}\",\"ts\":{},\"fields\":{{\"temp_c\":{:.2},\
         \"rh_pct\":{:.1},\"co2_ppm\":{},\"lux\":{}}},\"module\":\"calibrate\",\"score\":{:.3}}}",
        i % 16,
        1_718_000_000_000 + i * 1_000,
        18.0 + (i % 700) as f64 / 100.0,
        40.0 + (i % 300) as f64 / 10.0,
        400 + i % 800,
        10_000 + i % 5_000,
        (i % 1_000) as f64 / 1_000.0,
    )
    .into_bytes()
}

/// A fresh database directory on disk, removed on drop.
fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("WASMGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("benchmark directory");
    tempfile::Builder::new()
        .prefix("outbox-bench-")
        .tempdir_in(base)
        .expect("temporary benchmark directory")
}

fn open(dir: &std::path::Path, config: &OutboxConfig) -> (sled::Db, Arc<Outbox>) {
    let db = wasmgate::state::open_db(dir, CACHE_BYTES).expect("sled opens");
    let ob = Outbox::open(
        &db,
        config.clone(),
        &[("bench".to_string(), FullPolicy::DropOldest)],
    )
    .expect("outbox opens");
    (db, Arc::new(ob))
}

fn append_one(ob: &Outbox, i: u64) {
    let r = ob
        .append(
            &mut [Staged {
                kind: Kind::Output,
                stream: 0,
                body: body(i),
            }],
            now_ms(),
        )
        .expect("append");
    assert_eq!(r.stored, 1, "the budget must not drop benchmark entries");
}

/// Records receipt → ack latency of every message, and the batches acked.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<(Vec<Duration>, u64)>>);

impl AckSink<u64> for Recorder {
    async fn ack(&mut self, acks: &[PendingAck<u64>]) -> usize {
        let now = Instant::now();
        let mut rec = self.0.lock().expect("recorder lock");
        rec.1 += 1;
        rec.0.extend(acks.iter().map(|a| now - a.received));
        acks.len()
    }
}

impl Recorder {
    fn take(&self) -> (Vec<Duration>, u64) {
        std::mem::take(&mut *self.0.lock().expect("recorder lock"))
    }
}

/// What one run measured.
struct Figures {
    messages: u64,
    elapsed: Duration,
    flushes: u64,
    batches: u64,
    latencies: Vec<Duration>,
    disk_bytes: u64,
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Append one figure to `WASMGATE_BENCH_OUT`, if set: one run, so
/// min = max = value.
fn record(name: &str, value: f64, unit: &str) {
    common::record("outbox", name, value, unit, value, value);
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Print the figures of one run; `key` names them in `WASMGATE_BENCH_OUT`.
fn report(key: &str, name: &str, f: &mut Figures) {
    f.latencies.sort_unstable();
    let n = f.latencies.len();
    assert_eq!(n as u64, f.messages, "every message acknowledged");
    let pct = |p: usize| f.latencies[(n * p).div_ceil(100).saturating_sub(1).min(n - 1)];
    let mean = f.latencies.iter().sum::<Duration>() / n as u32;
    println!("{name}");
    println!(
        "  {} readings in {:.2} s: {:.0} readings/s",
        f.messages,
        f.elapsed.as_secs_f64(),
        f.messages as f64 / f.elapsed.as_secs_f64()
    );
    println!(
        "  flushes {}  (acked batches {}), mean {:.1} readings per flush",
        f.flushes,
        f.batches,
        f.messages as f64 / f.batches.max(1) as f64
    );
    println!(
        "  receipt→ack latency: mean {}  p50 {}  p99 {}  max {}",
        ms(mean),
        ms(pct(50)),
        ms(pct(99)),
        ms(f.latencies[n - 1])
    );
    println!(
        "  sled directory after the run: {:.1} MiB",
        f.disk_bytes as f64 / (1 << 20) as f64
    );
    println!();
    let msf = |d: Duration| d.as_secs_f64() * 1e3;
    record(
        &format!("{key}/readings-per-s"),
        f.messages as f64 / f.elapsed.as_secs_f64(),
        "readings/s",
    );
    record(
        &format!("{key}/readings-per-flush"),
        f.messages as f64 / f.batches.max(1) as f64,
        "readings",
    );
    record(&format!("{key}/p50"), msf(pct(50)), "ms");
    record(&format!("{key}/p99"), msf(pct(99)), "ms");
    record(&format!("{key}/max"), msf(f.latencies[n - 1]), "ms");
}

/// Group commit through the real [`Committer`]: `n` messages at full speed,
/// or paced at `rate` messages/s when given.
fn group_commit(
    rt: &tokio::runtime::Runtime,
    config: &OutboxConfig,
    n: u64,
    rate: Option<u64>,
) -> Figures {
    let dir = bench_dir();
    let (db, ob) = open(dir.path(), config);
    let recorder = Recorder::default();
    let committer = Committer::new(db.clone(), ob.clone(), config, recorder.clone());
    let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
    let producer_ob = ob.clone();
    let elapsed = rt.block_on(async move {
        let task = tokio::spawn(committer.run(rx));
        let started = Instant::now();
        let mut ticks = rate.map(|r| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r as f64));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        for i in 0..n {
            if let Some(t) = ticks.as_mut() {
                t.tick().await;
            }
            let received = Instant::now();
            append_one(&producer_ob, i);
            tx.send(CommitRequest {
                acks: vec![PendingAck { token: i, received }],
            })
            .await
            .expect("committer running");
        }
        drop(tx);
        task.await.expect("committer finished");
        started.elapsed()
    });
    let (latencies, batches) = recorder.take();
    let flushes = ob.metrics().commits.load(Ordering::Relaxed);
    drop(ob);
    drop(db);
    Figures {
        messages: n,
        elapsed,
        flushes,
        batches,
        latencies,
        disk_bytes: dir_bytes(dir.path()),
    }
}

/// The same appends, one `db.flush()` per message.
fn flush_per_reading(n: u64) -> Figures {
    let dir = bench_dir();
    let (db, ob) = open(dir.path(), &OutboxConfig::default());
    let mut latencies = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        let received = Instant::now();
        append_one(&ob, i);
        let mark = ob.commit_mark();
        db.flush().expect("flush");
        ob.committed(&mark);
        latencies.push(received.elapsed());
    }
    let elapsed = started.elapsed();
    drop(ob);
    drop(db);
    Figures {
        messages: n,
        elapsed,
        flushes: n,
        batches: n,
        latencies,
        disk_bytes: dir_bytes(dir.path()),
    }
}

/// `uname -m`, `uname -r`, CPU model, the file system holding `dir`.
fn machine(dir: &std::path::Path) -> String {
    let uname = |flag: &str| uname(flag).unwrap_or_else(|| "?".to_string());
    let cpu = cpu_model().unwrap_or_else(|| "?".to_string());
    let cores = cores();
    // The longest mount point that is a prefix of the directory.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let fs = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    let (dev, at, kind) = (parts.next()?, parts.next()?, parts.next()?);
                    dir.starts_with(at)
                        .then(|| (at.len(), format!("{kind} on {dev}")))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, s)| s)
        })
        .unwrap_or_else(|| "?".to_string());
    format!(
        "{} ({}), {cores} cores, Linux {}; database directory: {} ({fs})",
        uname("-m"),
        cpu,
        uname("-r"),
        dir.display()
    )
}

fn main() {
    let n = env_u64("WASMGATE_BENCH_N", 20_000).max(1);
    let n_flush = (n / 10).max(1);
    let rate = env_u64("WASMGATE_BENCH_RATE", 200).max(1);
    let probe = bench_dir();
    println!(
        "wasmgate outbox: durable ingest (sled, {} MiB cache)",
        CACHE_BYTES >> 20
    );
    println!("machine: {}", machine(probe.path()));
    println!(
        "one reading = append of a {}-byte JSON body + the ack after the flush covering it",
        body(0).len()
    );
    println!();
    drop(probe);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let default = OutboxConfig::default();
    let no_wait = OutboxConfig {
        commit_wait_ms: 0,
        ..OutboxConfig::default()
    };
    let max_batch = default.commit_max_batch;

    report(
        "group-commit-wait5",
        &format!("group commit, commit_wait_ms 5, commit_max_batch {max_batch}, full speed"),
        &mut group_commit(&rt, &default, n, None),
    );
    report(
        "group-commit-wait0",
        &format!("group commit, commit_wait_ms 0, commit_max_batch {max_batch}, full speed"),
        &mut group_commit(&rt, &no_wait, n, None),
    );
    report(
        "flush-per-reading",
        "flush per reading (db.flush() after every append)",
        &mut flush_per_reading(n_flush),
    );
    let paced = rate * PACED.as_secs();
    report(
        "paced-wait5",
        &format!(
            "paced {rate} readings/s for {} s, commit_wait_ms 5",
            PACED.as_secs()
        ),
        &mut group_commit(&rt, &default, paced, Some(rate)),
    );
    report(
        "paced-wait0",
        &format!(
            "paced {rate} readings/s for {} s, commit_wait_ms 0",
            PACED.as_secs()
        ),
        &mut group_commit(&rt, &no_wait, paced, Some(rate)),
    );
}
