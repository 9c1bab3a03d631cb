//! The durable outbox: every output and anomaly event is appended here
//! before anything is acknowledged, and the uplink drains it to the broker.
//! Being offline is not a mode: the outbox simply grows until the uplink can
//! drain it, within a disk budget.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the store: keys, append with budget policy, remove on PUBACK, stats, export |
//! | `commit.rs` | group commit: one sled flush for many readings, then the inbound acks |
//! | `uplink.rs` | the uplink connection: QoS 1 publishing in per-topic order, in-flight window |
//!
//! ## Layout in sled (tree `outbox`)
//!
//! ```text
//! entry   [kind u8][stream bytes][0x00][seq u64 BE]  →  [1][boot u64 BE][enqueued_ms i64 BE][payload]
//! meta    [0xFF] "seq" [kind] [stream]               →  next seq (u64 BE)
//!         [0xFF] "boot"                              →  boot counter (u64 BE)
//!         [0xFF] "drop" [reason]                     →  entries dropped for reason (u64 BE)
//! ```
//!
//! `kind` 0 is an anomaly event and 1 an output, so anomaly events sort (and
//! are sent) first. A *topic* is one (kind, stream) pair; its sequence number
//! starts at 1, grows by one per entry, is never reused (it is persisted with
//! the entries), and travels in the payload with the boot id so consumers can
//! de-duplicate at-least-once delivery: `(stream, kind, seq)` is unique.
//!
//! Only entries made durable by a group commit are handed to the uplink, so a
//! sequence number a consumer has seen never reappears after a crash.

pub mod commit;
pub mod inspect;
pub mod uplink;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::metrics::Histogram;

/// Name of the sled tree holding the outbox.
pub const TREE: &str = "outbox";
const META: u8 = 0xFF;
const VALUE_VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8;

/// `[outbox]`: the durable queue between processing and the uplink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Disk budget in bytes (keys + values as stored; sled's files are
    /// larger by its log overhead). Default: 67 108 864 (64 MiB).
    pub max_bytes: u64,
    /// Budget in entries. Default: 1 000 000.
    pub max_entries: u64,
    /// A group commit waits at most this long for more work before it
    /// flushes, ms (0: flush as soon as anything is pending). Default: 5.
    pub commit_wait_ms: u64,
    /// A group commit covers at most this many inbound messages. Default: 1024.
    pub commit_max_batch: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 64 << 20,
            max_entries: 1_000_000,
            commit_wait_ms: 5,
            commit_max_batch: 1024,
        }
    }
}

impl OutboxConfig {
    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 64 << 10 {
            return Err("max_bytes must be at least 65536".into());
        }
        if self.max_entries == 0 {
            return Err("max_entries must be at least 1".into());
        }
        if self.commit_wait_ms > 1_000 {
            return Err("commit_wait_ms must be within 0 ..= 1000".into());
        }
        if !(1..=65_536).contains(&self.commit_max_batch) {
            return Err("commit_max_batch must be within 1 ..= 65536".into());
        }
        Ok(())
    }
}

/// What a stream does when the outbox is at its budget
/// (`[streams.<name>] outbox_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Evict the stream's oldest entries (outputs before anomaly events) to
    /// make room; counted as `evicted-oldest`. If the stream has nothing left
    /// to evict (other streams hold the budget), the new entry is dropped and
    /// counted as `full`. Default.
    #[default]
    DropOldest,
    /// Keep everything stored and stop taking new work: the gateway stops
    /// acknowledging inbound messages until the uplink frees room, which
    /// pushes back to the broker.
    RejectNew,
}

/// An outbox entry's kind. The numeric value is the key's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An anomaly event (sent first).
    Anomaly = 0,
    /// A processed reading.
    Output = 1,
}

impl Kind {
    /// The name used in topics, logs and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anomaly => "anomaly",
            Kind::Output => "out",
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Anomaly),
            1 => Some(Kind::Output),
            _ => None,
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed (I/O error, corruption).
    #[error("outbox storage: {0}")]
    Sled(#[from] sled::Error),
    /// A lock was poisoned by a panicking thread.
    #[error("outbox: lock poisoned")]
    Poisoned,
    /// An entry's stored bytes are not an entry.
    #[error("outbox: corrupt entry at key {0}")]
    Corrupt(String),
}

/// One item to append: a JSON object body for `kind` of `stream`.
#[derive(Debug)]
pub struct Staged {
    /// Which topic kind.
    pub kind: Kind,
    /// The stream (index into the streams given to [`Outbox::open`]).
    pub stream: usize,
    /// A JSON object (`{…}`); `"seq"` and `"boot"` are spliced in front.
    pub body: Vec<u8>,
}

/// How an append ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Items stored.
    pub stored: usize,
    /// Items dropped (budget, too large).
    pub dropped: usize,
    /// Entries evicted to make room.
    pub evicted: usize,
    /// The item at this index (and every later one) was not taken: a
    /// `reject-new` stream is full. Wait for [`Outbox::space`] and retry.
    pub blocked_at: Option<usize>,
}

/// A stored entry, as the uplink and `export` see it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// sled key (needed to delete it).
    pub key: sled::IVec,
    /// Topic kind.
    pub kind: Kind,
    /// Stream name.
    pub stream: String,
    /// Sequence number within (kind, stream).
    pub seq: u64,
    /// Boot that produced it.
    pub boot: u64,
    /// When it was appended, ms since the Unix epoch.
    pub enqueued_ms: i64,
    /// The message payload (JSON with `seq` and `boot`).
    pub payload: sled::IVec,
    /// Offset of the payload within `payload` (header skipped).
    pub payload_at: usize,
}

impl Entry {
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload[self.payload_at..]
    }

    fn decode(key: sled::IVec, value: sled::IVec) -> Result<Entry, OutboxError> {
        let corrupt = || OutboxError::Corrupt(hex::encode(&key));
        let (kind, stream, seq) = parse_key(&key).ok_or_else(corrupt)?;
        if value.len() < HEADER || value[0] != VALUE_VERSION {
            return Err(corrupt());
        }
        let boot = u64::from_be_bytes(value[1..9].try_into().map_err(|_| corrupt())?);
        let enqueued_ms = i64::from_be_bytes(value[9..17].try_into().map_err(|_| corrupt())?);
        let stream = stream.to_string();
        Ok(Entry {
            key,
            kind,
            stream,
            seq,
            boot,
            enqueued_ms,
            payload: value,
            payload_at: HEADER,
        })
    }
}

fn topic_prefix(kind: Kind, stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(kind as u8);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

fn entry_key(kind: Kind, stream: &str, seq: u64) -> Vec<u8> {
    let mut k = topic_prefix(kind, stream);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn parse_key(key: &[u8]) -> Option<(Kind, &str, u64)> {
    let kind = Kind::from_byte(*key.first()?)?;
    if key.len() < 1 + 1 + 8 || key[key.len() - 9] != 0 {
        return None;
    }
    let stream = std::str::from_utf8(&key[1..key.len() - 9]).ok()?;
    let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    Some((kind, stream, seq))
}

fn meta_key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![META];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, OutboxError> {
    Ok(tree
        .get(key)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// In-memory state of one topic.
#[derive(Debug, Clone, Default)]
struct Topic {
    /// Next sequence number to assign (starts at 1).
    next_seq: u64,
    /// Highest sequence number made durable by a commit (0: none).
    durable_seq: u64,
    /// Entries stored.
    count: u64,
    /// Bytes stored (keys + values).
    bytes: u64,
}

#[derive(Debug)]
struct Index {
    /// Topic per (kind, stream index); streams known to the config.
    topics: BTreeMap<(Kind, usize), Topic>,
    entries: u64,
    bytes: u64,
    drops: BTreeMap<String, u64>,
}

/// Counters and gauges of the outbox and uplink, for logs and the metrics
/// endpoint.
#[derive(Debug, Default)]
pub struct OutboxMetrics {
    /// Entries appended.
    pub appended: AtomicU64,
    /// Entries delivered (PUBACK received) and removed.
    pub delivered: AtomicU64,
    /// Publications sent again after a reconnect (possible duplicates).
    pub republished: AtomicU64,
    /// Whether the uplink is connected.
    pub uplink_connected: AtomicBool,
    /// Group commits (sled flushes) done.
    pub commits: AtomicU64,
    /// Inbound messages acknowledged after their commit.
    pub acked: AtomicU64,
    /// Storage errors (failed flushes, inserts).
    pub storage_errors: AtomicU64,
    /// Whether the last flush failed (readiness).
    pub storage_failing: AtomicBool,
    /// Time from append to PUBACK.
    pub publish_latency: Histogram,
    /// Time from inbound receipt to its acknowledgement.
    pub ack_latency: Histogram,
    /// Duration of one group commit's flush.
    pub flush_latency: Histogram,
    /// Inbound messages covered per group commit (sum, for the mean).
    pub commit_acks_sum: AtomicU64,
}

/// A snapshot of one topic for `stats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopicStats {
    /// `out` or `anomaly`.
    pub kind: &'static str,
    /// Stream name.
    pub stream: String,
    /// Entries waiting.
    pub depth: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Enqueue time of the oldest entry, ms since the epoch.
    pub oldest_enqueued_ms: Option<i64>,
    /// Sequence number the next entry gets.
    pub next_seq: u64,
}

/// A snapshot of the whole outbox for `stats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboxStats {
    /// The current (or last) boot id.
    pub boot: u64,
    /// Entries waiting.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Per topic, in key order (anomaly topics first).
    pub topics: Vec<TopicStats>,
    /// Entries dropped since the outbox was created, by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// The durable outbox over one sled tree.
#[derive(Debug)]
pub struct Outbox {
    tree: sled::Tree,
    config: OutboxConfig,
    streams: Vec<String>,
    policies: Vec<FullPolicy>,
    boot: u64,
    index: Mutex<Index>,
    space: Notify,
    durable: Notify,
    metrics: Arc<OutboxMetrics>,
}

impl Outbox {
    /// Open the outbox in `db` for `streams` (name, policy) and start a new
    /// boot: the boot counter is incremented and flushed. Entries of streams
    /// no longer configured are kept, counted and drained too.
    pub fn open(
        db: &sled::Db,
        config: OutboxConfig,
        streams: &[(String, FullPolicy)],
    ) -> Result<Outbox, OutboxError> {
        let tree = db.open_tree(TREE)?;
        let boot_key = meta_key(&[b"boot"]);
        let boot = read_u64(&tree, &boot_key)? + 1;
        tree.insert(&boot_key, &boot.to_be_bytes())?;
        tree.flush()?;
        Self::with_boot(tree, config, streams, boot)
    }

    fn with_boot(
        tree: sled::Tree,
        config: OutboxConfig,
        streams: &[(String, FullPolicy)],
        boot: u64,
    ) -> Result<Outbox, OutboxError> {
        let mut names: Vec<String> = streams.iter().map(|(n, _)| n.clone()).collect();
        let mut policies: Vec<FullPolicy> = streams.iter().map(|(_, p)| *p).collect();
        let mut index = Index {
            topics: BTreeMap::new(),
            entries: 0,
            bytes: 0,
            drops: BTreeMap::new(),
        };
        // One pass over the entries: counts, bytes, streams left over from
        // an earlier configuration.
        for item in tree.range(..vec![META]) {
            let (k, v) = item?;
            let Some((kind, stream, seq)) = parse_key(&k) else {
                continue;
            };
            let si = match names.iter().position(|n| n == stream) {
                Some(i) => i,
                None => {
                    names.push(stream.to_string());
                    policies.push(FullPolicy::DropOldest);
                    names.len() - 1
                }
            };
            let t = index.topics.entry((kind, si)).or_default();
            t.count += 1;
            t.bytes += (k.len() + v.len()) as u64;
            t.next_seq = t.next_seq.max(seq + 1);
            t.durable_seq = t.durable_seq.max(seq);
            index.entries += 1;
            index.bytes += (k.len() + v.len()) as u64;
        }
        for (si, name) in names.iter().enumerate() {
            for kind in [Kind::Anomaly, Kind::Output] {
                let stored = read_u64(&tree, &meta_key(&[b"seq", &[kind as u8], name.as_bytes()]))?;
                let t = index.topics.entry((kind, si)).or_default();
                t.next_seq = t.next_seq.max(stored).max(1);
            }
        }
        for item in tree.scan_prefix(meta_key(&[b"drop"])) {
            let (k, v) = item?;
            let reason = String::from_utf8_lossy(&k[5..]).into_owned();
            let n = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            index.drops.insert(reason, n);
        }
        Ok(Outbox {
            tree,
            config,
            streams: names,
            policies,
            boot,
            index: Mutex::new(index),
            space: Notify::new(),
            durable: Notify::new(),
            metrics: Arc::new(OutboxMetrics::default()),
        })
    }

    fn index(&self) -> Result<MutexGuard<'_, Index>, OutboxError> {
        self.index.lock().map_err(|_| OutboxError::Poisoned)
    }

    /// This run's boot id.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// The metrics shared with the committer and the uplink.
    pub fn metrics(&self) -> &Arc<OutboxMetrics> {
        &self.metrics
    }

    /// The index of stream `name`, if configured.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|n| n == name)
    }

    /// Stream names by index.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// Entries and bytes stored.
    pub fn depth(&self) -> (u64, u64) {
        self.index().map(|i| (i.entries, i.bytes)).unwrap_or((0, 0))
    }

    /// Entries dropped so far, by reason.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.index().map(|i| i.drops.clone()).unwrap_or_default()
    }

    /// Enqueue time of the oldest waiting entry, ms since the epoch (the
    /// metrics endpoint turns it into an age).
    pub fn oldest_enqueued_ms(&self) -> Option<i64> {
        let topics: Vec<(Kind, usize)> = self
            .index()
            .map(|ix| {
                ix.topics
                    .iter()
                    .filter(|(_, t)| t.count > 0)
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default();
        topics
            .into_iter()
            .filter_map(|(kind, si)| {
                let first = self
                    .tree
                    .scan_prefix(topic_prefix(kind, &self.streams[si]))
                    .next()?;
                let (k, v) = first.ok()?;
                Entry::decode(k, v).ok().map(|e| e.enqueued_ms)
            })
            .min()
    }

    /// Resolves when entries were removed (room may be free). One waiter
    /// (processing); a removal while nobody waits is remembered.
    pub fn space(&self) -> tokio::sync::futures::Notified<'_> {
        self.space.notified()
    }

    /// Resolves when a commit made new entries durable. One waiter (the
    /// uplink); a commit while nobody waits is remembered.
    pub fn durable(&self) -> tokio::sync::futures::Notified<'_> {
        self.durable.notified()
    }

    /// Append `items` in order, assigning sequence numbers and applying the
    /// budget policy of each item's stream. Entries become visible to the
    /// uplink after the next commit ([`Outbox::commit_mark`] /
    /// [`Outbox::committed`]).
    pub fn append(&self, items: &mut [Staged], now_ms: i64) -> Result<Appended, OutboxError> {
        let mut out = Appended::default();
        let mut index = self.index()?;
        let mut touched: Vec<(Kind, usize)> = Vec::new();
        let mut buf = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            let Some(name) = self.streams.get(item.stream) else {
                continue;
            };
            let topic = (item.kind, item.stream);
            let seq = index.topics.get(&topic).map_or(1, |t| t.next_seq.max(1));
            let key = entry_key(item.kind, name, seq);
            buf.clear();
            buf.reserve(HEADER + item.body.len() + 40);
            buf.push(VALUE_VERSION);
            buf.extend_from_slice(&self.boot.to_be_bytes());
            buf.extend_from_slice(&now_ms.to_be_bytes());
            // `{"seq":N,"boot":B,` + the body without its `{`.
            let _ = write!(buf, "{{\"seq\":{seq},\"boot\":{},", self.boot);
            match item.body.split_first() {
                Some((b'{', rest)) if rest != b"}" => buf.extend_from_slice(rest),
                _ => {
                    buf.pop();
                    buf.push(b'}');
                }
            }
            let size = (key.len() + buf.len()) as u64;
            if size > self.config.max_bytes {
                self.count_drop(&mut index, "too-large")?;
                out.dropped += 1;
                continue;
            }
            let fits = |ix: &Index| {
                ix.entries < self.config.max_entries && ix.bytes + size <= self.config.max_bytes
            };
            if !fits(&index) {
                match self.policies[item.stream] {
                    FullPolicy::RejectNew => {
                        out.blocked_at = Some(i);
                        break;
                    }
                    FullPolicy::DropOldest => {
                        while !fits(&index) {
                            if !self.evict_oldest(&mut index, item.stream)? {
                                break;
                            }
                            out.evicted += 1;
                        }
                        if !fits(&index) {
                            self.count_drop(&mut index, "full")?;
                            out.dropped += 1;
                            continue;
                        }
                    }
                }
            }
            self.tree.insert(key, buf.as_slice())?;
            let t = index.topics.entry(topic).or_default();
            t.next_seq = seq + 1;
            t.count += 1;
            t.bytes += size;
            index.entries += 1;
            index.bytes += size;
            if !touched.contains(&topic) {
                touched.push(topic);
            }
            out.stored += 1;
        }
        for topic in touched {
            if let Some(t) = index.topics.get(&topic) {
                let name = self.streams[topic.1].as_bytes();
                self.tree.insert(
                    meta_key(&[b"seq", &[topic.0 as u8], name]),
                    &t.next_seq.to_be_bytes(),
                )?;
            }
        }
        drop(index);
        self.metrics
            .appended
            .fetch_add(out.stored as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Remove the oldest entry of `stream` (outputs before anomaly events).
    fn evict_oldest(&self, index: &mut Index, stream: usize) -> Result<bool, OutboxError> {
        for kind in [Kind::Output, Kind::Anomaly] {
            let prefix = topic_prefix(kind, &self.streams[stream]);
            if let Some(item) = self.tree.scan_prefix(&prefix).next() {
                let (k, _) = item?;
                if self.remove_locked(index, &k)? {
                    self.count_drop(index, "evicted-oldest")?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn count_drop(&self, index: &mut Index, reason: &str) -> Result<(), OutboxError> {
        let n = index.drops.entry(reason.to_string()).or_insert(0);
        *n += 1;
        self.tree
            .insert(meta_key(&[b"drop", reason.as_bytes()]), &n.to_be_bytes())?;
        Ok(())
    }

    fn remove_locked(&self, index: &mut Index, key: &[u8]) -> Result<bool, OutboxError> {
        let Some(old) = self.tree.remove(key)? else {
            return Ok(false);
        };
        let size = (key.len() + old.len()) as u64;
        if let Some((kind, stream, _)) = parse_key(key) {
            if let Some(si) = self.stream_index(stream) {
                if let Some(t) = index.topics.get_mut(&(kind, si)) {
                    t.count = t.count.saturating_sub(1);
                    t.bytes = t.bytes.saturating_sub(size);
                }
            }
        }
        index.entries = index.entries.saturating_sub(1);
        index.bytes = index.bytes.saturating_sub(size);
        Ok(true)
    }

    /// Remove a delivered entry (its PUBACK arrived). Returns whether it was
    /// still there (it may have been evicted meanwhile).
    pub fn remove(&self, key: &[u8]) -> Result<bool, OutboxError> {
        let removed = {
            let mut index = self.index()?;
            self.remove_locked(&mut index, key)?
        };
        if removed {
            self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            self.space.notify_one();
        }
        Ok(removed)
    }

    /// Before a flush: the highest sequence number appended per topic.
    pub fn commit_mark(&self) -> Vec<((Kind, usize), u64)> {
        self.index()
            .map(|ix| {
                ix.topics
                    .iter()
                    .map(|(k, t)| (*k, t.next_seq.saturating_sub(1)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// After the flush that followed [`Outbox::commit_mark`]: those entries
    /// are durable and may be sent.
    pub fn committed(&self, mark: &[((Kind, usize), u64)]) {
        if let Ok(mut ix) = self.index() {
            for (k, seq) in mark {
                if let Some(t) = ix.topics.get_mut(k) {
                    t.durable_seq = t.durable_seq.max(*seq);
                }
            }
        }
        self.durable.notify_one();
    }

    /// Topics with durable entries: (kind, stream index, durable seq).
    pub fn sendable(&self) -> Vec<(Kind, usize, u64)> {
        self.index()
            .map(|ix| {
                ix.topics
                    .iter()
                    .filter(|(_, t)| t.count > 0 && t.durable_seq > 0)
                    .map(|(&(kind, si), t)| (kind, si, t.durable_seq))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first stored entry of a topic with `after < seq <= upto`.
    pub fn next_entry(
        &self,
        kind: Kind,
        stream: usize,
        after: u64,
        upto: u64,
    ) -> Result<Option<Entry>, OutboxError> {
        let Some(name) = self.streams.get(stream) else {
            return Ok(None);
        };
        if after >= upto {
            return Ok(None);
        }
        let from = entry_key(kind, name, after.saturating_add(1));
        let to = entry_key(kind, name, upto);
        match self.tree.range(from..=to).next() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some(Entry::decode(k, v)?))
            }
            None => Ok(None),
        }
    }

    /// Every stored entry in key order (anomaly topics first, then by stream
    /// and sequence number).
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, OutboxError>> + '_ {
        self.tree.range(..vec![META]).map(|item| {
            let (k, v) = item?;
            Entry::decode(k, v)
        })
    }

    /// A snapshot for `wasmgate outbox stats` and the logs.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let ix = self.index()?;
        let mut topics = Vec::new();
        for (&(kind, si), t) in &ix.topics {
            if t.count == 0 && t.next_seq <= 1 {
                continue;
            }
            let name = &self.streams[si];
            let oldest = match self.tree.scan_prefix(topic_prefix(kind, name)).next() {
                Some(item) => {
                    let (k, v) = item?;
                    Some(Entry::decode(k, v)?.enqueued_ms)
                }
                None => None,
            };
            topics.push(TopicStats {
                kind: kind.as_str(),
                stream: name.clone(),
                depth: t.count,
                bytes: t.bytes,
                oldest_enqueued_ms: oldest,
                next_seq: t.next_seq,
            });
        }
        Ok(OutboxStats {
            boot: self.boot,
            entries: ix.entries,
            bytes: ix.bytes,
            topics,
            dropped: ix.drops.clone(),
        })
    }

    /// Open for inspection without bumping the boot counter (`wasmgate outbox`), knowing every stream
    /// that ever had a sequence number: topics drained to empty still show
    /// in [`Outbox::stats`] (depth 0 and their next sequence number), which
    /// lists the topics in key order.
    pub fn inspect_with_history(db: &sled::Db) -> Result<Outbox, OutboxError> {
        let tree = db.open_tree(TREE)?;
        let boot = read_u64(&tree, &meta_key(&[b"boot"]))?;
        let prefix = meta_key(&[b"seq"]);
        let mut streams: Vec<(String, FullPolicy)> = Vec::new();
        for item in tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            // [0xFF] "seq" [kind] [stream]
            let Some(Ok(name)) = k.get(prefix.len() + 1..).map(std::str::from_utf8) else {
                continue;
            };
            if !streams.iter().any(|(n, _)| n == name) {
                streams.push((name.to_string(), FullPolicy::DropOldest));
            }
        }
        // By name: stats list topics in key order, as `entries` does.
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        Self::with_boot(tree, OutboxConfig::default(), &streams, boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        (dir, db)
    }

    fn staged(stream: usize, kind: Kind, n: u32) -> Staged {
        Staged {
            kind,
            stream,
            body: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    fn cfg(max_entries: u64) -> OutboxConfig {
        OutboxConfig {
            max_entries,
            ..OutboxConfig::default()
        }
    }

    fn payloads(ob: &Outbox) -> Vec<String> {
        ob.entries()
            .map(|e| String::from_utf8(e.unwrap().payload().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn append_assigns_seq_and_boot_and_orders_anomalies_first() {
        let (_d, db) = db();
        let streams = [("a".to_string(), FullPolicy::DropOldest)];
        let ob = Outbox::open(&db, OutboxConfig::default(), &streams).unwrap();
        assert_eq!(ob.boot(), 1);
        let mut items = vec![
            staged(0, Kind::Output, 1),
            staged(0, Kind::Anomaly, 2),
            staged(0, Kind::Output, 3),
        ];
        let r = ob.append(&mut items, 1000).unwrap();
        assert_eq!(r.stored, 3);
        assert_eq!(
            payloads(&ob),
            [
                r#"{"seq":1,"boot":1,"n":2}"#,
                r#"{"seq":1,"boot":1,"n":1}"#,
                r#"{"seq":2,"boot":1,"n":3}"#
            ]
        );
        // Not durable yet: nothing to send.
        assert!(ob.sendable().is_empty());
        let mark = ob.commit_mark();
        ob.committed(&mark);
        assert_eq!(ob.sendable(), [(Kind::Anomaly, 0, 1), (Kind::Output, 0, 2)]);
        let e = ob.next_entry(Kind::Output, 0, 1, 2).unwrap().unwrap();
        assert_eq!((e.seq, e.boot, e.enqueued_ms), (2, 1, 1000));
        assert!(ob.remove(&e.key).unwrap());
        assert!(!ob.remove(&e.key).unwrap());
        assert_eq!(ob.depth().0, 2);
    }

    #[test]
    fn sequence_numbers_survive_restart_even_when_drained() {
        let dir = tempfile::tempdir().unwrap();
        let streams = [("a".to_string(), FullPolicy::DropOldest)];
        {
            let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
            let ob = Outbox::open(&db, OutboxConfig::default(), &streams).unwrap();
            ob.append(
                &mut [staged(0, Kind::Output, 1), staged(0, Kind::Output, 2)],
                1,
            )
            .unwrap();
            let keys: Vec<_> = ob.entries().map(|e| e.unwrap().key).collect();
            for k in keys {
                ob.remove(&k).unwrap();
            }
            db.flush().unwrap();
        }
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        let ob = Outbox::open(&db, OutboxConfig::default(), &streams).unwrap();
        assert_eq!(ob.boot(), 2);
        assert_eq!(ob.oldest_enqueued_ms(), None);
        ob.append(&mut [staged(0, Kind::Output, 3)], 2).unwrap();
        assert_eq!(payloads(&ob), [r#"{"seq":3,"boot":2,"n":3}"#]);
        assert_eq!(ob.oldest_enqueued_ms(), Some(2));
    }

    #[test]
    fn drop_oldest_evicts_the_streams_own_oldest_outputs_first() {
        let (_d, db) = db();
        let streams = [
            ("a".to_string(), FullPolicy::DropOldest),
            ("b".to_string(), FullPolicy::DropOldest),
        ];
        let ob = Outbox::open(&db, cfg(3), &streams).unwrap();
        ob.append(
            &mut [
                staged(0, Kind::Anomaly, 0),
                staged(0, Kind::Output, 1),
                staged(1, Kind::Output, 2),
            ],
            1,
        )
        .unwrap();
        let r = ob.append(&mut [staged(0, Kind::Output, 3)], 2).unwrap();
        assert_eq!((r.stored, r.evicted), (1, 1));
        // a's output 1 went; a's anomaly event and b's output stayed.
        assert_eq!(
            payloads(&ob),
            [
                r#"{"seq":1,"boot":1,"n":0}"#,
                r#"{"seq":2,"boot":1,"n":3}"#,
                r#"{"seq":1,"boot":1,"n":2}"#
            ]
        );
        assert_eq!(ob.dropped().get("evicted-oldest"), Some(&1));
    }

    #[test]
    fn drop_oldest_drops_new_when_the_stream_has_nothing_to_evict() {
        let (_d, db) = db();
        let streams = [
            ("a".to_string(), FullPolicy::RejectNew),
            ("b".to_string(), FullPolicy::DropOldest),
        ];
        let ob = Outbox::open(&db, cfg(2), &streams).unwrap();
        ob.append(
            &mut [staged(0, Kind::Output, 1), staged(0, Kind::Output, 2)],
            1,
        )
        .unwrap();
        let r = ob.append(&mut [staged(1, Kind::Output, 3)], 1).unwrap();
        assert_eq!((r.stored, r.dropped), (0, 1));
        assert_eq!(ob.dropped().get("full"), Some(&1));
    }

    #[test]
    fn reject_new_blocks_until_room_is_made() {
        let (_d, db) = db();
        let streams = [("a".to_string(), FullPolicy::RejectNew)];
        let ob = Outbox::open(&db, cfg(2), &streams).unwrap();
        let mut items = vec![
            staged(0, Kind::Output, 1),
            staged(0, Kind::Output, 2),
            staged(0, Kind::Output, 3),
        ];
        let r = ob.append(&mut items, 1).unwrap();
        assert_eq!(r.stored, 2);
        assert_eq!(r.blocked_at, Some(2));
        let first = ob.entries().next().unwrap().unwrap();
        ob.remove(&first.key).unwrap();
        let r = ob.append(&mut items[2..], 1).unwrap();
        assert_eq!((r.stored, r.blocked_at), (1, None));
        assert!(ob.dropped().is_empty());
    }

    #[test]
    fn byte_budget_and_too_large() {
        let (_d, db) = db();
        let streams = [("a".to_string(), FullPolicy::DropOldest)];
        let config = OutboxConfig {
            max_bytes: 64 << 10,
            ..OutboxConfig::default()
        };
        let ob = Outbox::open(&db, config, &streams).unwrap();
        let big = Staged {
            kind: Kind::Output,
            stream: 0,
            body: format!("{{\"x\":\"{}\"}}", "y".repeat(70_000)).into_bytes(),
        };
        let r = ob.append(&mut [big], 1).unwrap();
        assert_eq!(r.dropped, 1);
        let mid = || Staged {
            kind: Kind::Output,
            stream: 0,
            body: format!("{{\"x\":\"{}\"}}", "y".repeat(20_000)).into_bytes(),
        };
        for _ in 0..5 {
            ob.append(&mut [mid()], 1).unwrap();
        }
        let (n, bytes) = ob.depth();
        assert_eq!(n, 3);
        assert!(bytes <= 64 << 10);
        assert_eq!(ob.dropped().get("evicted-oldest"), Some(&2));
        assert_eq!(ob.dropped().get("too-large"), Some(&1));
    }

    #[test]
    fn entries_of_unconfigured_streams_are_kept_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
            let ob = Outbox::open(
                &db,
                OutboxConfig::default(),
                &[("old".to_string(), FullPolicy::DropOldest)],
            )
            .unwrap();
            ob.append(&mut [staged(0, Kind::Output, 1)], 5).unwrap();
            db.flush().unwrap();
        }
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        let ob = Outbox::open(
            &db,
            OutboxConfig::default(),
            &[("new".to_string(), FullPolicy::DropOldest)],
        )
        .unwrap();
        let s = ob.stats().unwrap();
        assert_eq!(s.entries, 1);
        assert_eq!(s.topics.len(), 1);
        assert_eq!(s.topics[0].stream, "old");
        assert_eq!(s.topics[0].oldest_enqueued_ms, Some(5));
        // Entries found at start are durable: the uplink may send them.
        assert_eq!(ob.sendable(), [(Kind::Output, 1, 1)]);
    }
}
