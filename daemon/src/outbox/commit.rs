//! Group commit: processing appends to the outbox (in memory, fast) and
//! hands the committer the inbound acknowledgements those appends cover; the
//! committer gathers requests for at most `commit_wait_ms` or
//! `commit_max_batch` messages, makes everything durable with one sled
//! flush, and only then sends the acknowledgements, in order, and lets the
//! uplink see the new entries.
//!
//! While a flush runs, new requests queue up in the bounded channel; the
//! next flush takes them all. A full channel blocks processing, which stops
//! taking readings, which stops acknowledging: back-pressure reaches the
//! broker instead of memory growing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Outbox, OutboxConfig};

/// Capacity of the channel into the committer, in requests.
pub const COMMIT_QUEUE: usize = 1024;

/// An inbound message waiting for its outputs to become durable.
#[derive(Debug)]
pub struct PendingAck<T> {
    /// What the ack sink needs to acknowledge it.
    pub token: T,
    /// When the message arrived.
    pub received: Instant,
}

/// Work for the committer: entries were appended (flush them) and these
/// messages are fully processed (acknowledge them once flushed).
#[derive(Debug)]
pub struct CommitRequest<T> {
    /// Messages to acknowledge after the flush, in arrival order.
    pub acks: Vec<PendingAck<T>>,
}

/// Where acknowledgements go once durable (the ingest connection; a
/// benchmark's counter).
pub trait AckSink<T>: Send + 'static {
    /// Acknowledge a prefix of `acks`, in order, without waiting on the
    /// connection, and return how many were sent. The committer keeps the
    /// rest and tries again shortly: an ack must never wait on a connection
    /// task that may itself be waiting for processing (that would be a
    /// cycle: processing → committer → connection → processing).
    fn ack(&mut self, acks: &[PendingAck<T>]) -> impl Future<Output = usize> + Send;
}

/// How soon acknowledgements the sink could not take are offered again.
const ACK_RETRY: Duration = Duration::from_millis(10);
/// How long a stopping committer keeps offering them.
const ACK_RETRY_AT_STOP: Duration = Duration::from_secs(2);

/// The group-commit task.
pub struct Committer<T, A> {
    db: sled::Db,
    outbox: Arc<Outbox>,
    wait: Duration,
    max_batch: usize,
    sink: A,
    _token: std::marker::PhantomData<fn(T)>,
}

impl<T: Send + 'static, A: AckSink<T>> Committer<T, A> {
    /// A committer flushing `db` (which holds `outbox`) under `config`.
    pub fn new(db: sled::Db, outbox: Arc<Outbox>, config: &OutboxConfig, sink: A) -> Self {
        Committer {
            db,
            outbox,
            wait: Duration::from_millis(config.commit_wait_ms),
            max_batch: config.commit_max_batch,
            sink,
            _token: std::marker::PhantomData,
        }
    }

    /// Run until every sender of `rx` is gone; the last requests are
    /// committed and acknowledged before it returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<CommitRequest<T>>) {
        let metrics = self.outbox.metrics().clone();
        let mut acks: Vec<PendingAck<T>> = Vec::new();
        let mut open = true;
        while open {
            // Wait for the first request of a group (offering acks the sink
            // could not take yet every few ms meanwhile)…
            if acks.is_empty() {
                match rx.recv().await {
                    Some(r) => acks.extend(r.acks),
                    None => break,
                }
            } else {
                match tokio::time::timeout(ACK_RETRY, rx.recv()).await {
                    Ok(Some(r)) => acks.extend(r.acks),
                    Ok(None) => break,
                    Err(_) => {
                        self.send_acks(&mut acks, &metrics).await;
                        continue;
                    }
                }
            }
            // …then gather more for at most `wait`, up to `max_batch`.
            let deadline = tokio::time::Instant::now() + self.wait;
            while acks.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(r) => {
                        acks.extend(r.acks);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                if self.wait.is_zero() {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => acks.extend(r.acks),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut acks, &metrics).await;
        }
        // Whatever arrived with the channel's close.
        while let Ok(r) = rx.try_recv() {
            acks.extend(r.acks);
        }
        self.commit(&mut acks, &metrics).await;
        let deadline = Instant::now() + ACK_RETRY_AT_STOP;
        while !acks.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(ACK_RETRY).await;
            self.send_acks(&mut acks, &metrics).await;
        }
        if !acks.is_empty() {
            tracing::warn!(
                unacknowledged = acks.len(),
                "stopping with stored messages unacknowledged: the broker will deliver them again (duplicates, not loss)"
            );
        }
    }

    /// Offer `acks` to the sink; drop the ones it sent, keep the rest.
    async fn send_acks(&mut self, acks: &mut Vec<PendingAck<T>>, metrics: &super::OutboxMetrics) {
        if acks.is_empty() {
            return;
        }
        let sent = self.sink.ack(acks).await.min(acks.len());
        let now = Instant::now();
        for a in &acks[..sent] {
            metrics
                .ack_latency
                .observe(now.saturating_duration_since(a.received));
        }
        metrics.acked.fetch_add(sent as u64, Ordering::Relaxed);
        acks.drain(..sent);
    }

    /// Flush until it succeeds (a failing disk is retried, never skipped:
    /// nothing is acknowledged that is not on disk), then acknowledge.
    async fn commit(&mut self, acks: &mut Vec<PendingAck<T>>, metrics: &super::OutboxMetrics) {
        let mut retry = Duration::from_millis(100);
        loop {
            let mark = self.outbox.commit_mark();
            let started = Instant::now();
            let db = self.db.clone();
            let flushed = tokio::task::spawn_blocking(move || db.flush()).await;
            match flushed {
                Ok(Ok(_)) => {
                    metrics.storage_failing.store(false, Ordering::Relaxed);
                    metrics.flush_latency.observe(started.elapsed());
                    metrics.commits.fetch_add(1, Ordering::Relaxed);
                    self.outbox.committed(&mark);
                    break;
                }
                Ok(Err(e)) => {
                    metrics.storage_failing.store(true, Ordering::Relaxed);
                    metrics.storage_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, retry_in_ms = retry.as_millis() as u64,
                        "outbox flush failed; inbound messages stay unacknowledged");
                }
                Err(e) => {
                    metrics.storage_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "outbox flush task failed");
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(10));
        }
        metrics
            .commit_acks_sum
            .fetch_add(acks.len() as u64, Ordering::Relaxed);
        self.send_acks(acks, metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FullPolicy, Kind, Staged};
    use super::*;

    struct Collect(mpsc::UnboundedSender<u32>);

    impl AckSink<u32> for Collect {
        async fn ack(&mut self, acks: &[PendingAck<u32>]) -> usize {
            // Take at most 7 at a time: the committer must offer the rest
            // again, in order.
            let n = acks.len().min(7);
            for a in &acks[..n] {
                let _ = self.0.send(a.token);
            }
            n
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_follow_the_flush_in_order_and_entries_become_sendable() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        let ob = Arc::new(
            Outbox::open(
                &db,
                OutboxConfig::default(),
                &[("s".to_string(), FullPolicy::DropOldest)],
            )
            .unwrap(),
        );
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
        let committer = Committer::new(
            db.clone(),
            ob.clone(),
            &OutboxConfig::default(),
            Collect(ack_tx),
        );
        let task = tokio::spawn(committer.run(rx));
        for n in 0..100u32 {
            ob.append(
                &mut [Staged {
                    kind: Kind::Output,
                    stream: 0,
                    body: b"{\"v\":1}".to_vec(),
                }],
                0,
            )
            .unwrap();
            tx.send(CommitRequest {
                acks: vec![PendingAck {
                    token: n,
                    received: Instant::now(),
                }],
            })
            .await
            .unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let mut got = Vec::new();
        while let Ok(n) = ack_rx.try_recv() {
            got.push(n);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(ob.sendable(), [(Kind::Output, 0, 100)]);
        let m = ob.metrics();
        let commits = m.commits.load(Ordering::Relaxed);
        assert!((1..=100).contains(&commits), "{commits} commits");
        assert_eq!(m.acked.load(Ordering::Relaxed), 100);
    }
}
