//! `wasmgate outbox stats|export`: look into a data directory's outbox
//! without starting the gateway.
//!
//! sled holds an exclusive lock on its files while the gateway runs. When the
//! directory is locked, [`open_for_inspection`] copies it to a private
//! temporary directory and opens the copy: a crash-consistent snapshot (what
//! a power cut at that moment would have left; entries appended but not yet
//! committed may be missing), removed again when the [`Inspection`] is
//! dropped. The running gateway is never touched.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Outbox, OutboxError, OutboxStats, TREE, TopicStats};

/// sled page cache for inspection, bytes (as the gateway's default).
pub const CACHE_BYTES: u64 = 4 << 20;

/// How long opening waits for a briefly held lock before snapshotting.
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// Why inspecting failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The directory is missing, or holds no outbox.
    #[error("no outbox in {}: {reason}", dir.display())]
    NoOutbox {
        /// The directory given.
        dir: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// sled could not open the database.
    #[error("cannot open the database in {}: {source}", dir.display())]
    Open {
        /// The directory opened.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// Copying a running gateway's directory failed.
    #[error("cannot snapshot {} (it is in use by a running gateway): {source}", dir.display())]
    Snapshot {
        /// The directory copied.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading the outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Writing the report failed.
    #[error("cannot write the output: {0}")]
    Write(#[from] io::Error),
    /// Serialising the report failed.
    #[error("cannot write the output: {0}")]
    Json(#[from] serde_json::Error),
}

/// A temporary directory (mode 0700) removed, with its contents, on drop.
#[derive(Debug)]
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// Create a fresh, uniquely named directory under [`std::env::temp_dir`].
    pub fn create() -> io::Result<SnapshotDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "wasmgate-outbox-{}-{nanos:08x}-{n}",
                std::process::id()
            ));
            match builder.create(&path) {
                Ok(()) => return Ok(SnapshotDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SnapshotDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "cannot remove the temporary outbox snapshot");
        }
    }
}

/// An outbox opened for reading. Fields drop in order: the outbox and the
/// database close before a snapshot directory is removed.
#[derive(Debug)]
pub struct Inspection {
    /// The outbox (boot counter untouched).
    pub outbox: Outbox,
    /// The database holding it.
    pub db: sled::Db,
    /// Set when the directory was in use and a copy was opened instead.
    pub snapshot: Option<SnapshotDir>,
}

impl Inspection {
    /// Whether this is a snapshot of a running gateway's directory.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }
}

/// Open the outbox in the data directory `dir` (the gateway's
/// `storage.path`) for reading. If a running gateway holds the directory,
/// a snapshot copy is opened instead ([`Inspection::is_snapshot`]). Nothing
/// is created: a missing directory or database is [`InspectError::NoOutbox`].
pub fn open_for_inspection(dir: &Path) -> Result<Inspection, InspectError> {
    let no_outbox = |reason: &str| InspectError::NoOutbox {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(no_outbox("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(no_outbox("the directory does not exist"));
        }
        Err(e) => return Err(no_outbox(&format!("cannot read the directory: {e}"))),
    }
    if !dir.join("db").is_file() {
        return Err(no_outbox(
            "no wasmgate database here (give the gateway's storage.path)",
        ));
    }
    let (db, snapshot) = match open_quick(dir) {
        Ok(db) => (db, None),
        Err(e) if crate::state::is_locked(&e) => {
            tracing::debug!(dir = %dir.display(), "data directory in use; snapshotting");
            let snap_err = |source| InspectError::Snapshot {
                dir: dir.to_path_buf(),
                source,
            };
            let snap = SnapshotDir::create().map_err(snap_err)?;
            copy_data_dir(dir, snap.path()).map_err(snap_err)?;
            let db = open_quick(snap.path()).map_err(|source| InspectError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
            (db, Some(snap))
        }
        Err(source) => {
            return Err(InspectError::Open {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == TREE.as_bytes())
    {
        return Err(no_outbox(
            "the database has no outbox (this gateway has not stored any output yet)",
        ));
    }
    let outbox = Outbox::inspect_with_history(&db)?;
    Ok(Inspection {
        outbox,
        db,
        snapshot,
    })
}

/// Open sled in `dir`, waiting at most [`LOCK_WAIT`] for a held lock; no
/// background flusher (nothing is written).
fn open_quick(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let result = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open();
        match result {
            Err(e) if crate::state::is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Copy sled's files from `from` into the empty directory `to`, regular
/// files only, recursively. Order matters for a directory being written:
/// config and snapshots first, then the log (`db`, which is newer than any
/// snapshot, as after a crash), then blobs (written before the log entries
/// pointing at them). Files vanishing meanwhile (rotated snapshots) are
/// skipped; snapshots still being written are left out.
pub fn copy_data_dir(from: &Path, to: &Path) -> io::Result<()> {
    let mut entries: Vec<(u8, fs::DirEntry)> = Vec::new();
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".generating") || name.ends_with(".in___motion") {
            continue;
        }
        let kind = entry.file_type()?;
        let rank = if kind.is_dir() {
            3
        } else if !kind.is_file() {
            continue;
        } else if name == "db" {
            2
        } else if name == "conf" || name.starts_with("snap.") {
            0
        } else {
            1
        };
        entries.push((rank, entry));
    }
    entries.sort_by_key(|(rank, e)| (*rank, e.file_name()));
    for (rank, entry) in entries {
        let target = to.join(entry.file_name());
        let result = if rank == 3 {
            fs::create_dir(&target).and_then(|()| copy_data_dir(&entry.path(), &target))
        } else {
            fs::copy(entry.path(), &target).map(drop)
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(file = %entry.path().display(), "vanished while copying");
            }
            other => other?,
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in ms as an operator reads it: `850ms`, `42s`, `3m12s`,
/// `5h07m`, `2d03h`. Negative (clock skew) counts as 0.
pub fn format_age(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{s}s")
    } else if h == 0 {
        format!("{m}m{:02}s", s % 60)
    } else if d == 0 {
        format!("{h}h{:02}m", m % 60)
    } else {
        format!("{d}d{:02}h", h % 24)
    }
}

/// One topic in the JSON report: [`TopicStats`] and the oldest entry's age.
#[derive(Debug, Serialize)]
struct TopicReport<'a> {
    #[serde(flatten)]
    topic: &'a TopicStats,
    oldest_age_ms: Option<i64>,
}

/// The JSON report of `wasmgate outbox stats --json`.
#[derive(Debug, Serialize)]
struct StatsReport<'a> {
    boot: u64,
    entries: u64,
    bytes: u64,
    topics: Vec<TopicReport<'a>>,
    dropped: &'a BTreeMap<String, u64>,
    /// When the ages were computed, ms since the epoch.
    now_ms: i64,
    /// Whether this is a snapshot of a running gateway's directory.
    snapshot: bool,
}

/// How [`write_stats`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    /// An aligned table for people.
    Table,
    /// One JSON object: [`OutboxStats`] with `oldest_age_ms` per topic, plus
    /// `now_ms` and `snapshot`.
    Json,
}

/// Write `stats` (ages relative to `now_ms`) to `w`.
pub fn write_stats(
    w: &mut impl Write,
    stats: &OutboxStats,
    now_ms: i64,
    snapshot: bool,
    format: StatsFormat,
) -> Result<(), InspectError> {
    let age = |t: &TopicStats| t.oldest_enqueued_ms.map(|at| (now_ms - at).max(0));
    match format {
        StatsFormat::Json => {
            let report = StatsReport {
                boot: stats.boot,
                entries: stats.entries,
                bytes: stats.bytes,
                topics: stats
                    .topics
                    .iter()
                    .map(|topic| TopicReport {
                        topic,
                        oldest_age_ms: age(topic),
                    })
                    .collect(),
                dropped: &stats.dropped,
                now_ms,
                snapshot,
            };
            serde_json::to_writer_pretty(&mut *w, &report)?;
            writeln!(w)?;
        }
        StatsFormat::Table => {
            let header = ["KIND", "STREAM", "DEPTH", "BYTES", "OLDEST", "NEXT SEQ"];
            let mut rows: Vec<[String; 6]> = stats
                .topics
                .iter()
                .map(|t| {
                    [
                        t.kind.to_string(),
                        t.stream.clone(),
                        t.depth.to_string(),
                        t.bytes.to_string(),
                        age(t).map_or_else(|| "-".to_string(), format_age),
                        t.next_seq.to_string(),
                    ]
                })
                .collect();
            let oldest = stats.topics.iter().filter_map(age).max();
            rows.push([
                "total".to_string(),
                String::new(),
                stats.entries.to_string(),
                stats.bytes.to_string(),
                oldest.map_or_else(|| "-".to_string(), format_age),
                String::new(),
            ]);
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |w: &mut dyn Write, cells: [&str; 6]| -> io::Result<()> {
                // Text columns left-aligned, numbers right-aligned.
                let text = format!(
                    "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:>w5$}",
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    cells[4],
                    cells[5],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3],
                    w4 = widths[4],
                    w5 = widths[5],
                );
                writeln!(w, "{}", text.trim_end())
            };
            if snapshot {
                writeln!(w, "(snapshot of a running gateway)")?;
            }
            line(w, header)?;
            for row in &rows {
                line(w, row.each_ref().map(String::as_str))?;
            }
            writeln!(w)?;
            writeln!(w, "boot: {}", stats.boot)?;
            if stats.dropped.is_empty() {
                writeln!(w, "dropped: none")?;
            } else {
                let drops: Vec<String> = stats
                    .dropped
                    .iter()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect();
                writeln!(w, "dropped: {}", drops.join(", "))?;
            }
        }
    }
    Ok(())
}

/// Write every entry of `outbox` to `w` as JSON lines, in key (send) order:
/// `{"kind":"out","stream":"s","seq":1,"boot":2,"enqueued_ms":…,"payload":…}`,
/// the stored payload embedded as JSON (as a string if it is not JSON).
/// Returns the number of lines written.
pub fn export(outbox: &Outbox, w: &mut impl Write) -> Result<u64, InspectError> {
    let mut n = 0;
    let mut line = Vec::new();
    for entry in outbox.entries() {
        let entry = entry?;
        line.clear();
        line.extend_from_slice(b"{\"kind\":");
        serde_json::to_writer(&mut line, entry.kind.as_str())?;
        line.extend_from_slice(b",\"stream\":");
        serde_json::to_writer(&mut line, &entry.stream)?;
        write!(
            line,
            ",\"seq\":{},\"boot\":{},\"enqueued_ms\":{},\"payload\":",
            entry.seq, entry.boot, entry.enqueued_ms
        )?;
        embed_payload(&mut line, entry.payload())?;
        line.extend_from_slice(b"}\n");
        w.write_all(&line)?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// Append `payload` to `out` as one JSON value on one line: JSON as is
/// (line breaks, which valid JSON has only as whitespace, become spaces),
/// anything else as a JSON string.
fn embed_payload(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), serde_json::Error> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend(payload.iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
        Ok(())
    } else {
        serde_json::to_writer(out, &String::from_utf8_lossy(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FullPolicy, Kind, OutboxConfig, Staged};
    use super::*;

    #[test]
    fn ages_read_like_durations() {
        assert_eq!(format_age(-5), "0ms");
        assert_eq!(format_age(850), "850ms");
        assert_eq!(format_age(42_000), "42s");
        assert_eq!(format_age(192_000), "3m12s");
        assert_eq!(format_age(5 * 3_600_000 + 7 * 60_000), "5h07m");
        assert_eq!(format_age(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
    }

    #[test]
    fn payloads_embed_as_json_or_as_strings() {
        let mut out = Vec::new();
        embed_payload(&mut out, b"{\"a\":\n1}").unwrap();
        assert_eq!(out, b"{\"a\": 1}");
        out.clear();
        embed_payload(&mut out, b"{\"a\":1").unwrap();
        assert_eq!(out, b"\"{\\\"a\\\":1\"");
    }

    #[test]
    fn missing_directory_and_missing_database_are_no_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let e = open_for_inspection(&gone).unwrap_err();
        assert!(matches!(e, InspectError::NoOutbox { .. }), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!gone.exists(), "inspection must not create the directory");
        let e = open_for_inspection(dir.path()).unwrap_err();
        assert!(e.to_string().contains("no wasmgate database"), "{e}");
    }

    #[test]
    fn a_locked_directory_is_read_through_a_snapshot_that_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        let ob = Outbox::open(
            &db,
            OutboxConfig::default(),
            &[("s".to_string(), FullPolicy::DropOldest)],
        )
        .unwrap();
        ob.append(
            &mut [Staged {
                kind: Kind::Output,
                stream: 0,
                body: b"{\"v\":1}".to_vec(),
            }],
            7,
        )
        .unwrap();
        db.flush().unwrap();
        // `db` stays open: its lock is held.
        let ins = open_for_inspection(dir.path()).unwrap();
        assert!(ins.is_snapshot());
        let snap = ins.snapshot.as_ref().unwrap().path().to_path_buf();
        assert!(snap.join("db").is_file());
        let mut out = Vec::new();
        assert_eq!(export(&ins.outbox, &mut out).unwrap(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"kind\":\"out\",\"stream\":\"s\",\"seq\":1,\"boot\":1,\"enqueued_ms\":7,\
             \"payload\":{\"seq\":1,\"boot\":1,\"v\":1}}\n"
        );
        drop(ins);
        assert!(!snap.exists());
    }

    #[test]
    fn drained_topics_still_show_their_next_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
            let ob = Outbox::open(
                &db,
                OutboxConfig::default(),
                &[("s".to_string(), FullPolicy::DropOldest)],
            )
            .unwrap();
            let body = || Staged {
                kind: Kind::Output,
                stream: 0,
                body: b"{}".to_vec(),
            };
            ob.append(&mut [body(), body()], 1).unwrap();
            let keys: Vec<_> = ob.entries().map(|e| e.unwrap().key).collect();
            for k in keys {
                ob.remove(&k).unwrap();
            }
            db.flush().unwrap();
        }
        let ins = open_for_inspection(dir.path()).unwrap();
        assert!(!ins.is_snapshot());
        let stats = ins.outbox.stats().unwrap();
        assert_eq!(stats.topics.len(), 1);
        assert_eq!((stats.topics[0].depth, stats.topics[0].next_seq), (0, 3));
        let mut table = Vec::new();
        write_stats(&mut table, &stats, 10, false, StatsFormat::Table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("dropped: none"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("out ")), "{table}");
    }
}
