//! `wasmgate run`: the gateway. Sources feed one bounded queue; the
//! processing task routes readings into streams, runs their processor
//! chains and detectors (on a blocking section, since wasm is CPU work), and
//! hands outputs and anomaly events to the publisher; the MQTT task keeps
//! the broker connection, ingests MQTT sources and carries publications.
//!
//! ```text
//!  mqtt task ──┐                                       ┌─► publisher ─► MQTT (QoS 1)
//!  serial   ───┼─► queue (bounded) ─► processing task ─┤   (the outbox slots in here)
//!  i2c      ───┘    SourceBatch        route · batch ·  └─► detector state → sled
//!                                      modules · detect
//! ```
//!
//! Shutdown (SIGTERM/SIGINT) in the mini-redis manner: the token is
//! cancelled, sources stop and drop their senders, the processing task
//! drains the queue and flushes every partial batch, detector state is
//! saved, the publisher drains, the retained status becomes "offline", the
//! client disconnects, sled is flushed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing as MqttOutgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mqtt::{self, MqttIngest, STATUS_OFFLINE, STATUS_ONLINE, Topics};
use crate::pipeline::{BatchResult, Pipeline, PipelineError};
use crate::runtime::{Clock, LoadError, Runtime};
use crate::settings::SourceConfig;
use crate::sources::i2c::I2cPoller;
use crate::sources::{SourceBatch, SourceMetrics, deliver, now_ms};
use crate::state::SledState;

/// Capacity of the queue from the sources to the processing task, in batches.
const SOURCE_QUEUE: usize = 256;
/// Capacity of the queue to the publisher, in messages.
const PUBLISH_QUEUE: usize = 8_192;
/// Longest a partly filled batch waits for more readings.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// Why the gateway could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be opened.
    #[error("storage {path}: {source}")]
    Storage { path: String, source: sled::Error },
    /// The processor runtime could not be set up.
    #[error("{0}")]
    Runtime(#[from] LoadError),
    /// A stream could not be built (module, detectors).
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    /// The MQTT connection could not be configured.
    #[error("{0}")]
    Mqtt(#[from] mqtt::MqttSetupError),
    /// A source could not be built.
    #[error("source '{source_name}': {message}")]
    Source {
        source_name: String,
        message: String,
    },
    /// The GPIO alarm could not be opened.
    #[error("{0}")]
    Alarm(#[from] crate::alarm::AlarmError),
}

/// One message for the broker.
#[derive(Debug)]
struct Publication {
    topic: String,
    payload: Vec<u8>,
}

/// Counters of the running gateway (exported by the metrics endpoint later).
#[derive(Debug, Default)]
pub struct RunStats {
    /// Readings that entered the streams.
    pub readings_in: AtomicU64,
    /// Outputs handed to the publisher.
    pub outputs: AtomicU64,
    /// Anomaly events handed to the publisher.
    pub anomalies: AtomicU64,
    /// Publications dropped because the publisher queue was full.
    pub publish_dropped: AtomicU64,
}

/// Run the gateway until `shutdown` completes, then stop cleanly.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let storage_err = |source| RunError::Storage {
        path: config.storage.path.display().to_string(),
        source,
    };
    let db = crate::state::open_db(&config.storage.path, config.storage.cache_bytes)
        .map_err(storage_err)?;
    let detector_tree = db.open_tree("detectors").map_err(storage_err)?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let state = Arc::new(SledState::from_db(db.clone()));
    let mut pipeline = Pipeline::build(&config, runtime, state, Clock::System)?;
    restore_detectors(&mut pipeline, &detector_tree);

    let topics = Topics::new(&config.gateway);
    let (client, eventloop) =
        AsyncClient::new(mqtt::ingest_options(&config.mqtt, &config.gateway)?, 64);
    let (src_tx, mut src_rx) = mpsc::channel::<SourceBatch>(SOURCE_QUEUE);
    let (pub_tx, pub_rx) = mpsc::channel::<Publication>(PUBLISH_QUEUE);
    let stats = Arc::new(RunStats::default());

    let mut ingests = Vec::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut source_metrics: BTreeMap<String, Arc<SourceMetrics>> = BTreeMap::new();
    for (name, source) in &config.sources {
        match source {
            SourceConfig::Mqtt(c) => {
                let ingest = MqttIngest::new(name, c.clone());
                source_metrics.insert(name.clone(), ingest.metrics());
                ingests.push(ingest);
            }
            SourceConfig::I2c(c) => {
                let metrics = Arc::new(SourceMetrics::default());
                source_metrics.insert(name.clone(), metrics.clone());
                tasks.push(tokio::spawn(i2c_task(
                    name.clone(),
                    c.clone(),
                    metrics,
                    src_tx.clone(),
                    token.clone(),
                )));
            }
            SourceConfig::Serial(c) => {
                let source = crate::sources::serial::SerialSource::build(name, c.clone()).map_err(
                    |message| RunError::Source {
                        source_name: name.clone(),
                        message,
                    },
                )?;
                source_metrics.insert(name.clone(), source.metrics());
                tasks.push(tokio::spawn(source.run(src_tx.clone(), token.clone())));
            }
        }
    }
    let mqtt_stop = CancellationToken::new();
    let mqtt_task = tokio::spawn(mqtt_task(MqttTask {
        eventloop,
        client: client.clone(),
        ingests,
        out: src_tx.clone(),
        sources_stop: token.clone(),
        stop: mqtt_stop.clone(),
        status_topic: topics.status(),
        backoff: (config.mqtt.reconnect_min_ms, config.mqtt.reconnect_max_ms),
    }));
    drop(src_tx);
    let publisher = tokio::spawn(publisher_task(client.clone(), pub_rx));

    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            token.cancel();
        });
    }
    tracing::info!(
        gateway = %config.gateway.id,
        streams = config.streams.len(),
        sources = config.sources.len(),
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        "wasmgate running"
    );

    // The processing loop: runs until every source has stopped and the
    // queue is drained.
    let mut flush_tick =
        tokio::time::interval(Duration::from_millis(config.storage.detector_flush_ms));
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alarm = match &config.alarm {
        Some(a) => Some(crate::alarm::open(a)?),
        None => None,
    };
    let started = std::time::Instant::now();
    let mono_ms = || started.elapsed().as_millis() as u64;
    // Anomaly events of the last step, for the alarm.
    let mut events = Vec::new();
    loop {
        let due = pipeline.next_due(BATCH_WAIT);
        let alarm_due = alarm
            .as_ref()
            .and_then(|a| a.next_deadline())
            .map(|ms| started + Duration::from_millis(ms));
        tokio::select! {
            batch = src_rx.recv() => match batch {
                Some(batch) => {
                    stats.readings_in.fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
                    tokio::task::block_in_place(|| {
                        let mut sink = |r: BatchResult<'_>| {
                            publish_result(&topics, &pub_tx, &stats, r, &mut events);
                            Ok::<(), ()>(())
                        };
                        for r in batch.readings {
                            let _ = pipeline.push(r, Some(&batch.source), 0, &mut sink);
                        }
                    });
                }
                None => break,
            },
            _ = sleep_until(due), if due.is_some() => {
                tokio::task::block_in_place(|| {
                    let mut sink = |r: BatchResult<'_>| {
                        publish_result(&topics, &pub_tx, &stats, r, &mut events);
                        Ok::<(), ()>(())
                    };
                    let _ = pipeline.flush_older_than(BATCH_WAIT, &mut sink);
                });
            }
            _ = sleep_until(alarm_due), if alarm_due.is_some() => {}
            _ = flush_tick.tick() => save_detectors(&mut pipeline, &detector_tree),
        }
        if let Some(a) = alarm.as_mut() {
            let now = mono_ms();
            for e in events.drain(..) {
                if let Err(err) = a.on_event(&e, now) {
                    tracing::warn!(error = %err, "alarm output failed");
                }
            }
            if let Err(err) = a.tick(now) {
                tracing::warn!(error = %err, "alarm output failed");
            }
        }
        events.clear();
    }
    tokio::task::block_in_place(|| {
        let mut sink = |r: BatchResult<'_>| {
            publish_result(&topics, &pub_tx, &stats, r, &mut events);
            Ok::<(), ()>(())
        };
        let _ = pipeline.flush(&mut sink);
    });
    if let Some(a) = alarm.take() {
        if let Err(err) = a.shutdown() {
            tracing::warn!(error = %err, "alarm output could not be reset");
        }
    }
    save_detectors(&mut pipeline, &detector_tree);
    drop(pub_tx);
    for t in tasks {
        let _ = t.await;
    }
    let _ = publisher.await;
    // Retained "offline", then a clean disconnect (no last will).
    let _ = client
        .publish(topics.status(), QoS::AtLeastOnce, true, STATUS_OFFLINE)
        .await;
    let _ = client.disconnect().await;
    if tokio::time::timeout(Duration::from_secs(5), mqtt_task)
        .await
        .is_err()
    {
        tracing::warn!("broker did not confirm the disconnect within 5 s");
    }
    mqtt_stop.cancel();
    if let Err(e) = db.flush_async().await {
        tracing::error!(error = %e, "final storage flush failed");
    }
    tracing::info!(
        readings = stats.readings_in.load(Ordering::Relaxed),
        outputs = stats.outputs.load(Ordering::Relaxed),
        anomalies = stats.anomalies.load(Ordering::Relaxed),
        publish_dropped = stats.publish_dropped.load(Ordering::Relaxed),
        "wasmgate stopped"
    );
    // Per-source totals, so the journal tells what each input delivered.
    for (name, m) in &source_metrics {
        tracing::info!(
            source = %name,
            received = m.received.load(Ordering::Relaxed),
            decoded = m.decoded.load(Ordering::Relaxed),
            dropped_queue_full = m.dropped_queue_full.load(Ordering::Relaxed),
            rejected = ?m.rejected(),
            "source totals"
        );
    }
    Ok(())
}

async fn sleep_until(due: Option<std::time::Instant>) {
    if let Some(t) = due {
        tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
    }
}

/// Queue a batch's outputs and anomaly events for the broker. Never blocks:
/// a full publisher queue drops and counts (the outbox replaces this).
fn publish_result(
    topics: &Topics,
    out: &mpsc::Sender<Publication>,
    stats: &RunStats,
    result: BatchResult<'_>,
    events: &mut Vec<crate::detect::AnomalyEvent>,
) {
    let send = |topic: String, payload: Vec<u8>| {
        if out.try_send(Publication { topic, payload }).is_err() {
            stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Anomalies first: they matter most when the link is tight.
    for event in &result.events {
        if let Ok(payload) = serde_json::to_vec(event) {
            stats.anomalies.fetch_add(1, Ordering::Relaxed);
            send(topics.anomaly(result.stream), payload);
        }
    }
    for reading in &result.outputs {
        let mut payload = Vec::with_capacity(160);
        if crate::replay::output::format_line(&mut payload, result.stream, reading).is_ok() {
            if payload.last() == Some(&b'\n') {
                payload.pop();
            }
            stats.outputs.fetch_add(1, Ordering::Relaxed);
            send(topics.out(result.stream), payload);
        }
    }
    events.extend(result.events);
}

async fn publisher_task(client: AsyncClient, mut rx: mpsc::Receiver<Publication>) {
    while let Some(p) = rx.recv().await {
        if let Err(e) = client
            .publish(p.topic, QoS::AtLeastOnce, false, p.payload)
            .await
        {
            tracing::warn!(error = %e, "publish failed");
        }
    }
}

struct MqttTask {
    eventloop: EventLoop,
    client: AsyncClient,
    ingests: Vec<MqttIngest>,
    out: mpsc::Sender<SourceBatch>,
    /// Sources stop ingesting when this is cancelled.
    sources_stop: CancellationToken,
    /// The connection itself stops when this is cancelled.
    stop: CancellationToken,
    status_topic: String,
    backoff: (u64, u64),
}

/// Keep the broker connection: (re)subscribe and announce "online" on every
/// connect, dispatch publications to the MQTT sources, reconnect with
/// exponential backoff.
async fn mqtt_task(mut t: MqttTask) {
    let mut backoff = t.backoff.0;
    let mut out = Some(t.out);
    loop {
        if out.is_some() && t.sources_stop.is_cancelled() {
            // Sources are done: release the queue so processing can drain.
            out = None;
            for ingest in &t.ingests {
                for (filter, _) in ingest.subscriptions() {
                    let _ = t.client.try_unsubscribe(filter);
                }
            }
        }
        let event = tokio::select! {
            _ = t.stop.cancelled() => return,
            _ = t.sources_stop.cancelled(), if out.is_some() => continue,
            e = t.eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = t.backoff.0;
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                let _ = t.client.try_publish(
                    t.status_topic.clone(),
                    QoS::AtLeastOnce,
                    true,
                    STATUS_ONLINE,
                );
                if out.is_some() {
                    for ingest in &t.ingests {
                        for (filter, qos) in ingest.subscriptions() {
                            if let Err(e) = t.client.try_subscribe(filter, qos) {
                                tracing::error!(filter, error = %e, "subscribe failed");
                            }
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(tx) = &out else { continue };
                for ingest in t.ingests.iter_mut().filter(|i| i.wants(&p.topic)) {
                    if !ingest.handle(&p.topic, &p.payload, tx).await {
                        out = None;
                        break;
                    }
                }
            }
            Ok(Event::Outgoing(MqttOutgoing::Disconnect)) => {
                tracing::info!("disconnected from the MQTT broker");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                for ingest in &t.ingests {
                    ingest.metrics().set_up(false);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff, "MQTT connection failed");
                tokio::select! {
                    _ = t.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
                }
                backoff = (backoff * 2).min(t.backoff.1);
            }
        }
    }
}

/// Poll one I²C sensor until shutdown; the blocking bus I/O runs on the
/// blocking pool.
async fn i2c_task(
    name: String,
    config: crate::sources::i2c::I2cSensorConfig,
    metrics: Arc<SourceMetrics>,
    out: mpsc::Sender<SourceBatch>,
    stop: CancellationToken,
) {
    let source: Arc<str> = Arc::from(name.as_str());
    let poller = match I2cPoller::open(&config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(source = %source, error = %e, "I2C source cannot start");
            return;
        }
    };
    let mut poller = Some(poller);
    loop {
        let Some(p) = poller.take() else { return };
        let joined = tokio::task::spawn_blocking(move || {
            let mut p = p;
            let r = p.poll(now_ms());
            (p, r)
        })
        .await;
        let Ok((p, result)) = joined else { return };
        metrics.received.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(reading) => {
                metrics.set_up(true);
                let batch = SourceBatch {
                    source: source.clone(),
                    readings: vec![reading],
                };
                if !deliver(&out, batch, Default::default(), &metrics).await {
                    return;
                }
            }
            Err(e) => {
                metrics.set_up(false);
                metrics.reject("bus-error");
                tracing::warn!(source = %source, error = %e, "I2C poll failed");
            }
        }
        let wait = Duration::from_millis(p.next_poll_in_ms());
        poller = Some(p);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn restore_detectors(pipeline: &mut Pipeline, tree: &sled::Tree) {
    for stream in pipeline.streams_mut() {
        let Some(set) = stream.detectors_mut() else {
            continue;
        };
        let mut restored = 0u64;
        for item in tree.scan_prefix(set.key_prefix()) {
            let Ok((k, v)) = item else { continue };
            match set.restore(&k, &v) {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::info!(key = %String::from_utf8_lossy(&k), error = %e, "dropping stored detector state");
                    let _ = tree.remove(k);
                }
            }
        }
        if restored > 0 {
            tracing::info!(
                stream = set.stream(),
                series = restored,
                "detector state restored"
            );
        }
    }
}

fn save_detectors(pipeline: &mut Pipeline, tree: &sled::Tree) {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for stream in pipeline.streams_mut() {
        if let Some(set) = stream.detectors_mut() {
            for (k, v) in set.dirty_states() {
                batch.insert(k, v);
                n += 1;
            }
        }
    }
    if n > 0 {
        if let Err(e) = tree.apply_batch(batch) {
            tracing::error!(error = %e, "saving detector state failed");
        }
    }
}
