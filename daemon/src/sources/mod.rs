//! Reading sources: where readings enter the gateway.
//!
//! Every source is built the same way (Vector style): a config struct, a
//! `build()` that validates it, and a running task
//! `run(out, shutdown)` that sends [`SourceBatch`]es into a bounded channel
//! until `shutdown` is cancelled. Every source exposes the same
//! [`SourceMetrics`]: received, decoded, rejected by reason, up/down, and
//! batches dropped because the queue was full.
//!
//! | module | what |
//! |---|---|
//! | `decode/` | payload decoders shared by MQTT and serial: JSON, CBOR, number, CSV line, key=value |
//! | `i2c/` | I²C sensors (BME280) and their polling core |

pub mod decode;
pub mod i2c;
pub mod serial;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::reading::Reading;

/// Readings a source decoded from one message, line or poll.
#[derive(Debug)]
pub struct SourceBatch {
    /// The source's configured name.
    pub source: Arc<str>,
    /// The readings, in arrival order.
    pub readings: Vec<Reading>,
    /// The packet id of a QoS 1 MQTT message to acknowledge once every
    /// result of these readings is on disk. A malformed QoS 1 message still
    /// travels (with no readings) so acknowledgements stay in order.
    pub ack: Option<u16>,
    /// When the message, line or poll arrived.
    pub received: std::time::Instant,
}

impl SourceBatch {
    /// A batch received now, with nothing to acknowledge.
    pub fn new(source: Arc<str>, readings: Vec<Reading>) -> Self {
        SourceBatch {
            source,
            readings,
            ack: None,
            received: std::time::Instant::now(),
        }
    }
}

/// What a source does when the queue to the streams is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullPolicy {
    /// Wait for room (default): back-pressure reaches the sender — the MQTT
    /// broker holds unacknowledged messages, the serial driver buffers.
    #[default]
    Block,
    /// Drop the new batch and count it in `dropped_queue_full`.
    DropNewest,
}

/// The metrics every source has.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Messages, lines or polls received.
    pub received: AtomicU64,
    /// Readings decoded and handed on.
    pub decoded: AtomicU64,
    /// Batches dropped because the queue was full (`drop-newest`).
    pub dropped_queue_full: AtomicU64,
    /// Whether the connection, port or bus is up.
    pub up: AtomicBool,
    /// Rejected inputs by reason label (`malformed-json`, `line-too-long`, …).
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl SourceMetrics {
    /// Count one rejected input.
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(reason).or_insert(0) += 1;
        }
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Rejections of one reason.
    pub fn rejected_of(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .ok()
            .and_then(|m| m.get(reason).copied())
            .unwrap_or(0)
    }

    /// Mark the source up or down.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Hand a batch to the streams under `policy`. Returns `false` when the
/// receiving side is gone (the gateway is shutting down).
pub async fn deliver(
    out: &mpsc::Sender<SourceBatch>,
    batch: SourceBatch,
    policy: QueueFullPolicy,
    metrics: &SourceMetrics,
) -> bool {
    !matches!(
        deliver_counted(out, batch, policy, metrics).await,
        Delivery::Closed
    )
}

/// What became of a batch handed to [`deliver_counted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the streams.
    Queued,
    /// Dropped under `drop-newest` (counted); its `ack`, if any, is the
    /// caller's to send.
    Dropped(Option<u16>),
    /// The receiving side is gone (shutdown).
    Closed,
}

/// [`deliver`], telling a drop apart from a queued batch.
pub async fn deliver_counted(
    out: &mpsc::Sender<SourceBatch>,
    batch: SourceBatch,
    policy: QueueFullPolicy,
    metrics: &SourceMetrics,
) -> Delivery {
    let n = batch.readings.len() as u64;
    match policy {
        QueueFullPolicy::Block => {
            if out.send(batch).await.is_err() {
                return Delivery::Closed;
            }
        }
        QueueFullPolicy::DropNewest => match out.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(b)) => {
                metrics.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                return Delivery::Dropped(b.ack);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::Closed,
        },
    }
    metrics.decoded.fetch_add(n, Ordering::Relaxed);
    Delivery::Queued
}

/// Current time in milliseconds since the Unix epoch (receive timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> SourceBatch {
        SourceBatch::new("s".into(), vec![Reading::new("x", 1).with_field("v", 1.0)])
    }

    #[tokio::test]
    async fn drop_newest_counts_when_full() {
        let (tx, mut rx) = mpsc::channel(1);
        let m = SourceMetrics::default();
        assert!(deliver(&tx, batch(), QueueFullPolicy::DropNewest, &m).await);
        assert!(deliver(&tx, batch(), QueueFullPolicy::DropNewest, &m).await);
        assert_eq!(m.dropped_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(m.decoded.load(Ordering::Relaxed), 1);
        assert!(rx.recv().await.is_some());
        drop(rx);
        assert!(
            !deliver(&tx, batch(), QueueFullPolicy::Block, &m).await,
            "closed"
        );
    }

    #[test]
    fn rejections_by_reason() {
        let m = SourceMetrics::default();
        m.reject("malformed-json");
        m.reject("malformed-json");
        m.reject("line-too-long");
        assert_eq!(m.rejected_of("malformed-json"), 2);
        assert_eq!(m.rejected().len(), 2);
    }
}
