//! `wasmgate run`: the gateway. Sources feed one bounded queue; the
//! processing task routes readings into streams, runs their processor
//! chains and detectors (on a blocking section, since wasm is CPU work), and
//! appends every output and anomaly event to the durable outbox; the
//! committer makes appends durable with group commits and only then
//! acknowledges the inbound MQTT messages they came from; the uplink drains
//! the outbox to the broker at QoS 1.
//!
//! ```text
//!  ingest conn ─┐                                        ┌─► outbox (sled) ─► uplink conn ─► broker
//!  serial    ───┼─► queue (bounded) ─► processing task ──┤        │  group commit (flush)
//!  i2c       ───┘    SourceBatch        route · batch ·  │        └─► PUBACK to the ingest broker
//!                    (+ packet id)      modules · detect └─► detector state → sled
//! ```
//!
//! Acknowledgement order: every QoS 1 message gets a position as it leaves
//! the queue; once no partly filled batch holds a reading from a position
//! (`Pipeline::oldest_pending`), the message is fully processed and its
//! results are appended; the committer acknowledges it after the next flush.
//!
//! Shutdown (SIGTERM/SIGINT) in the mini-redis manner: the token is
//! cancelled, sources stop and drop their senders, the processing task
//! drains the queue and flushes every partial batch, detector state is
//! saved, the last group commit flushes and acknowledges, the ingest
//! connection disconnects (its persistent session keeps what arrives
//! meanwhile), the uplink publishes the retained "offline" status and waits
//! briefly for outstanding PUBACKs, sled is flushed.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing as MqttOutgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{Health, ModuleSnapshot, StreamSnapshot};
use crate::mqtt::{self, MqttIngest, Topics};
use crate::ota::store::OtaStore;
use crate::ota::task::{Deploy, Deployer, OtaMetrics, OtaTask, Outcome};
use crate::ota::verify::Trust;
use crate::outbox::commit::{AckSink, COMMIT_QUEUE, CommitRequest, Committer, PendingAck};
use crate::outbox::uplink::Uplink;
use crate::outbox::{Kind, Outbox, OutboxError, Staged};
use crate::pipeline::{BatchResult, Pipeline, PipelineError, StartFailure};
use crate::ratelimit::LogLimiter;
use crate::runtime::{Clock, LoadError, Runtime};
use crate::settings::SourceConfig;
use crate::sources::i2c::I2cPoller;
use crate::sources::{Delivery, SourceBatch, SourceMetrics, deliver, now_ms};
use crate::state::SledState;

/// Capacity of the queue from the sources to the processing task, in batches.
const SOURCE_QUEUE: usize = 256;
/// Longest a partly filled batch waits for more readings.
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// The processing loop turns at least every second; liveness fails when it
/// has not turned for this long.
const LIVENESS_LIMIT: Duration = Duration::from_secs(10);

/// Why the gateway could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be opened.
    #[error("storage {path}: {source}")]
    Storage { path: String, source: sled::Error },
    /// The outbox could not be opened.
    #[error("storage {path}: {source}")]
    Outbox { path: String, source: OutboxError },
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
    /// OTA could not be set up (keys, key set, storage).
    #[error("ota: {0}")]
    Ota(String),
    /// The HTTP endpoint could not listen.
    #[error("http: cannot listen on {addr}: {source} (set [http] listen to a free address)")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Counters of the running gateway (exported by the metrics endpoint later;
/// the outbox's own are in [`crate::outbox::OutboxMetrics`]).
#[derive(Debug, Default)]
pub struct RunStats {
    /// Readings that entered the streams.
    pub readings_in: AtomicU64,
    /// Outputs handed to the outbox.
    pub outputs: AtomicU64,
    /// Anomaly events handed to the outbox.
    pub anomalies: AtomicU64,
}

/// Acknowledges inbound QoS 1 messages on the ingest connection.
struct IngestAcks(Option<AsyncClient>);

impl AckSink<u16> for IngestAcks {
    async fn ack(&mut self, acks: &[PendingAck<u16>]) -> usize {
        let Some(client) = &self.0 else {
            return acks.len();
        };
        let mut sent = 0;
        for a in acks {
            let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
            p.pkid = a.token;
            // Never wait on the connection's request queue: the committer
            // offers the rest again in a few ms.
            if client.try_ack(&p).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    }
}

/// Run the gateway until `shutdown` completes, then stop cleanly.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let path = config.storage.path.display().to_string();
    let storage_err = |source| RunError::Storage {
        path: path.clone(),
        source,
    };
    let db = crate::state::open_db_with(
        &config.storage.path,
        config.storage.cache_bytes,
        config.storage.flush_every_ms,
    )
    .map_err(storage_err)?;
    let detector_tree = db.open_tree("detectors").map_err(storage_err)?;
    let policies: Vec<_> = config
        .streams
        .iter()
        .map(|(name, s)| (name.clone(), s.outbox_full))
        .collect();
    let outbox = Arc::new(Outbox::open(&db, config.outbox.clone(), &policies).map_err(
        |source| RunError::Outbox {
            path: path.clone(),
            source,
        },
    )?);
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?);
    let state = Arc::new(SledState::from_db(db.clone()));
    // A module that cannot start is quarantined rather than keeping every
    // stream down (`check-config` still refuses it).
    let mut pipeline = Pipeline::build_with(
        &config,
        runtime,
        state,
        Clock::System,
        StartFailure::Quarantine,
    )?;
    restore_detectors(&mut pipeline, &detector_tree);

    let topics = Topics::new(&config.gateway);
    let (src_tx, mut src_rx) = mpsc::channel::<SourceBatch>(SOURCE_QUEUE);
    let stats = Arc::new(RunStats::default());
    // Bound before anything starts, so a taken port fails the start cleanly.
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| RunError::Http {
            addr: config.http.listen,
            source,
        })?;
    let ota_metrics = config
        .ota
        .enabled()
        .then(|| Arc::new(OtaMetrics::default()));

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
    // The ingest connection exists only for MQTT sources.
    let mqtt_stop = CancellationToken::new();
    let ingest = if ingests.is_empty() {
        None
    } else {
        // Room for a full commit's acks in the request queue.
        let (client, eventloop) = AsyncClient::new(
            mqtt::ingest_options(&config.mqtt, &config.gateway)?,
            config.outbox.commit_max_batch.max(64),
        );
        let task = tokio::spawn(mqtt_task(MqttTask {
            eventloop,
            client: client.clone(),
            ingests,
            out: src_tx.clone(),
            sources_stop: token.clone(),
            stop: mqtt_stop.clone(),
            backoff: (config.mqtt.reconnect_min_ms, config.mqtt.reconnect_max_ms),
        }));
        Some((client, task))
    };
    // The queue stays open until shutdown even without any source (a
    // gateway that only drains its outbox, or is being configured): the
    // loop below ends when every sender is gone.
    {
        let keep = src_tx.clone();
        let token = token.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            drop(keep);
        });
    }
    drop(src_tx);

    let (commit_tx, commit_rx) = mpsc::channel::<CommitRequest<u16>>(COMMIT_QUEUE);
    let committer = tokio::spawn(
        Committer::new(
            db.clone(),
            outbox.clone(),
            &config.outbox,
            IngestAcks(ingest.as_ref().map(|(c, _)| c.clone())),
        )
        .run(commit_rx),
    );
    let broker = config.uplink.broker(&config.mqtt);
    let mut uplink = Uplink::new(
        outbox.clone(),
        mqtt::uplink_options(broker, &config.mqtt, &config.gateway)?,
        topics.clone(),
        &config.uplink,
        broker,
    );

    // OTA: bundles arrive on the uplink connection, are verified by the OTA
    // task and deployed by the processing task (between batches).
    let mut deployer = Deployer::new(&config.ota);
    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel::<Outcome>();
    let mut deploy_rx = None;
    let mut ota_task = None;
    let ota_stop = CancellationToken::new();
    if config.ota.enabled() {
        pipeline.keep_samples(true);
        let ota_err = |e: String| RunError::Ota(e);
        let store = OtaStore::open(&db).map_err(|e| ota_err(e.to_string()))?;
        let trust = Trust::from_config(&config.ota).map_err(ota_err)?;
        let configured = pipeline
            .streams()
            .iter()
            .flat_map(|s| s.modules().iter())
            .map(|m| (m.name().to_string(), m.module().sha256_hex()))
            .collect();
        let (deploy_tx, rx) = mpsc::channel(4);
        deploy_rx = Some(rx);
        let (side_tx, side_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(4);
        let base = format!("{}/{}", config.gateway.topic_prefix, config.gateway.id);
        let mut filters = vec![format!("{base}/ota")];
        if let Some(f) = &config.ota.fleet {
            filters.push(format!("{}/fleet/{f}/ota", config.gateway.topic_prefix));
        }
        let mut task = OtaTask {
            config: config.ota.clone(),
            trust,
            store,
            gateway_id: config.gateway.id.clone(),
            topic_base: base,
            max_fuel: config.runtime.fuel_per_call,
            max_memory: config.runtime.memory_bytes,
            configured,
            deploy: deploy_tx,
            outcomes: outcome_rx,
            publish: side_tx,
            metrics: ota_metrics.clone().unwrap_or_default(),
        };
        task.load_stored_keyset();
        let restored = task.restore_all(&mut deployer, &mut pipeline);
        tracing::info!(
            topics = ?filters,
            restored = restored.len(),
            "OTA on: listening for signed bundles"
        );
        let max_in = config.ota.max_bundle_bytes.saturating_mul(2) + (64 << 10);
        uplink = uplink.with_side(side_rx);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let listener = crate::ota::task::listen(
            mqtt::ota_options(broker, &config.mqtt, &config.gateway, max_in)?,
            filters,
            in_tx,
            task.publish.clone(),
            task.ota_state_topic(),
            (broker.reconnect_min_ms, broker.reconnect_max_ms),
            ready_tx,
            ota_stop.clone(),
        );
        let stop = ota_stop.clone();
        ota_task = Some(tokio::spawn(async move {
            let listening = tokio::spawn(listener);
            // Announce once bundles can be received (or after 5 s anyway),
            // so a "running" state means "send your bundle now".
            let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
            task.announce(&restored).await;
            task.run(in_rx, stop).await;
            let _ = listening.await;
        }));
    } else {
        drop(outcome_rx);
    }
    let uplink_stop = CancellationToken::new();
    let uplink = tokio::spawn(uplink.run(uplink_stop.clone()));

    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            let _ = crate::systemd::stopping();
            token.cancel();
        });
    }
    let (backlog, backlog_bytes) = outbox.depth();
    tracing::info!(
        gateway = %config.gateway.id,
        streams = config.streams.len(),
        sources = config.sources.len(),
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        uplink = %format!("{}:{}", broker.host, broker.port),
        boot = outbox.boot(),
        outbox_entries = backlog,
        outbox_bytes = backlog_bytes,
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
    let health = Arc::new(Health::new(
        config.gateway.id.clone(),
        LIVENESS_LIMIT,
        outbox.clone(),
        config.outbox.clone(),
        source_metrics.clone(),
        config
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, SourceConfig::Mqtt(_)))
            .map(|(n, _)| n.clone())
            .collect(),
        stats.clone(),
        ota_metrics.clone(),
    ));
    health.beat();
    let http_stop = CancellationToken::new();
    tracing::info!(
        listen = %http_listener.local_addr().map_or(config.http.listen, |a| a),
        "HTTP endpoint: /healthz /readyz /metrics /status"
    );
    let http_task = tokio::spawn(crate::http::serve(
        http_listener,
        health.clone(),
        http_stop.clone(),
    ));
    // systemd: ready once sources, modules and the endpoint are up; the
    // watchdog is pinged only while the processing loop makes progress
    // (the same signal as /healthz), so a hung loop gets the unit restarted.
    if let Err(e) = crate::systemd::ready() {
        tracing::warn!(error = %e, "systemd notify failed");
    }
    let _ = crate::systemd::status(&format!(
        "running: {} stream(s), {} source(s)",
        config.streams.len(),
        config.sources.len()
    ));
    if let Some(interval) = crate::systemd::watchdog_interval() {
        let health = health.clone();
        let stop = http_stop.clone();
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog on: pinging while the processing loop makes progress"
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            let mut stalled = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if health.live() {
                    stalled = false;
                    let _ = crate::systemd::watchdog_ping();
                } else if !stalled {
                    stalled = true;
                    tracing::error!(
                        last_turn_ms = health.since_beat().as_millis() as u64,
                        "processing loop stalled: not pinging the systemd watchdog"
                    );
                }
            }
        });
    }
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot_at = std::time::Instant::now();
    let mut work = Work::new(outbox.clone(), stats.clone(), commit_tx, deployer);
    snapshot(&pipeline, &work, &health);
    let mut abandoned = false;
    loop {
        let due = pipeline.next_due(BATCH_WAIT);
        let watch_due = work.deployer.next_deadline();
        let alarm_due = alarm
            .as_ref()
            .and_then(|a| a.next_deadline())
            .map(|ms| started + Duration::from_millis(ms));
        tokio::select! {
            batch = src_rx.recv() => match batch {
                Some(batch) => {
                    stats.readings_in.fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
                    let pos = work.arrived(&batch);
                    let awaiting = work.awaiting_acks();
                    tokio::task::block_in_place(|| {
                        let mut sink = |r: BatchResult<'_>| work.stage(r);
                        for r in batch.readings {
                            let _ = pipeline.push(r, Some(&batch.source), pos, &mut sink);
                        }
                        // Nothing else is waiting and inbound messages await
                        // their acknowledgement: run partial batches now
                        // instead of holding the broker's in-flight window
                        // for the batch timeout.
                        if awaiting && src_rx.is_empty() && pipeline.has_pending() {
                            let _ = pipeline.flush(&mut sink);
                        }
                    });
                }
                None => break,
            },
            _ = sleep_until(due), if due.is_some() => {
                tokio::task::block_in_place(|| {
                    let mut sink = |r: BatchResult<'_>| work.stage(r);
                    let _ = pipeline.flush_older_than(BATCH_WAIT, &mut sink);
                });
            }
            _ = sleep_until(alarm_due), if alarm_due.is_some() => {}
            _ = sleep_until(watch_due), if watch_due.is_some() => {}
            d = recv_deploy(&mut deploy_rx) => match d {
                Some((d, reply)) => {
                    let outcome = tokio::task::block_in_place(|| work.deployer.deploy(&mut pipeline, &d));
                    let _ = reply.send(outcome);
                }
                None => deploy_rx = None,
            },
            _ = flush_tick.tick() => save_detectors(&mut pipeline, &detector_tree),
            _ = beat.tick() => {}
        }
        health.beat();
        if snapshot_at.elapsed() >= Duration::from_secs(1) {
            snapshot_at = std::time::Instant::now();
            snapshot(&pipeline, &work, &health);
        }
        for o in work.deployer.tick(&mut pipeline) {
            let _ = outcome_tx.send(o);
        }
        if !work.settle(pipeline.oldest_pending(), &token).await {
            abandoned = true;
            break;
        }
        if let Some(a) = alarm.as_mut() {
            let now = mono_ms();
            for e in work.events.drain(..) {
                if let Err(err) = a.on_event(&e, now) {
                    tracing::warn!(error = %err, "alarm output failed");
                }
            }
            if let Err(err) = a.tick(now) {
                tracing::warn!(error = %err, "alarm output failed");
            }
        }
        work.events.clear();
    }
    // Senders blocked on a full queue (after an abandon) are released.
    drop(src_rx);
    drop(deploy_rx);
    if !abandoned {
        tokio::task::block_in_place(|| {
            let mut sink = |r: BatchResult<'_>| work.stage(r);
            let _ = pipeline.flush(&mut sink);
        });
        let _ = work.settle(pipeline.oldest_pending(), &token).await;
    }
    if let Some(a) = alarm.take() {
        if let Err(err) = a.shutdown() {
            tracing::warn!(error = %err, "alarm output could not be reset");
        }
    }
    save_detectors(&mut pipeline, &detector_tree);
    // The last group commit: flush, then acknowledge.
    drop(work);
    let _ = committer.await;
    for t in tasks {
        let _ = t.await;
    }
    if let Some((client, task)) = ingest {
        let _ = client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("ingest broker did not confirm the disconnect within 5 s");
        }
        mqtt_stop.cancel();
    }
    ota_stop.cancel();
    if let Some(t) = ota_task {
        let _ = t.await;
    }
    uplink_stop.cancel();
    let _ = uplink.await;
    http_stop.cancel();
    let _ = http_task.await;
    if let Err(e) = db.flush_async().await {
        tracing::error!(error = %e, "final storage flush failed");
    }
    log_totals(&stats, &outbox, &source_metrics);
    Ok(())
}

/// The journal's summary at stop: what came in, what went out, what is
/// still waiting, what was dropped and why.
fn log_totals(
    stats: &RunStats,
    outbox: &Outbox,
    source_metrics: &BTreeMap<String, Arc<SourceMetrics>>,
) {
    let m = outbox.metrics();
    let (entries, bytes) = outbox.depth();
    let commits = m.commits.load(Ordering::Relaxed);
    let acked = m.acked.load(Ordering::Relaxed);
    let q = |h: &crate::metrics::Histogram, p: f64| {
        h.quantile_us(p)
            .map(|us| format!("≤{:.1}ms", us as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    tracing::info!(
        readings = stats.readings_in.load(Ordering::Relaxed),
        outputs = stats.outputs.load(Ordering::Relaxed),
        anomalies = stats.anomalies.load(Ordering::Relaxed),
        "wasmgate stopped"
    );
    tracing::info!(
        waiting_entries = entries,
        waiting_bytes = bytes,
        appended = m.appended.load(Ordering::Relaxed),
        delivered = m.delivered.load(Ordering::Relaxed),
        republished = m.republished.load(Ordering::Relaxed),
        dropped = ?outbox.dropped(),
        commits,
        acked,
        acks_per_commit = format!("{:.1}", acked as f64 / commits.max(1) as f64),
        ack_p50 = %q(&m.ack_latency, 0.5),
        ack_p99 = %q(&m.ack_latency, 0.99),
        publish_p50 = %q(&m.publish_latency, 0.5),
        publish_p99 = %q(&m.publish_latency, 0.99),
        "outbox totals"
    );
    // Per-source totals, so the journal tells what each input delivered.
    for (name, m) in source_metrics {
        tracing::info!(
            source = %name,
            received = m.received.load(Ordering::Relaxed),
            decoded = m.decoded.load(Ordering::Relaxed),
            dropped_queue_full = m.dropped_queue_full.load(Ordering::Relaxed),
            rejected = ?m.rejected(),
            "source totals"
        );
    }
}

/// Refresh the module and stream figures the HTTP endpoint reports.
fn snapshot(pipeline: &Pipeline, work: &Work, health: &Health) {
    let modules = pipeline
        .streams()
        .iter()
        .flat_map(|s| {
            s.modules().iter().map(move |m| ModuleSnapshot {
                stream: s.name().to_string(),
                module: m.name().to_string(),
                sha256: m.module().sha256_hex(),
                stats: m.stats().clone(),
            })
        })
        .collect();
    if let Ok(mut m) = health.modules.lock() {
        *m = modules;
    }
    let streams = work
        .outbox
        .streams()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (outputs, anomalies) = work.per_stream.get(i).copied().unwrap_or_default();
            StreamSnapshot {
                stream: name.clone(),
                outputs,
                anomalies,
            }
        })
        .collect();
    if let Ok(mut s) = health.streams.lock() {
        *s = streams;
    }
}

/// A deployment request from the OTA task (never, with OTA off).
type DeployRequest = (Deploy, tokio::sync::oneshot::Sender<Outcome>);

async fn recv_deploy(rx: &mut Option<mpsc::Receiver<DeployRequest>>) -> Option<DeployRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<std::time::Instant>) {
    if let Some(t) = due {
        tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
    }
}

/// The processing task's bookkeeping between the pipeline and the outbox:
/// results staged for appending, inbound messages awaiting acknowledgement
/// by position, and the channel to the committer.
struct Work {
    outbox: Arc<Outbox>,
    stats: Arc<RunStats>,
    commit: mpsc::Sender<CommitRequest<u16>>,
    staged: Vec<Staged>,
    /// Anomaly events of the last step, for the alarm.
    events: Vec<crate::detect::AnomalyEvent>,
    next_pos: u64,
    /// (position, packet id, received) in arrival order.
    waiting: VecDeque<(u64, PendingAck<u16>)>,
    full_log: LogLimiter,
    /// Since when a `reject-new` stream has been waiting for room.
    blocked_since: Option<std::time::Instant>,
    /// OTA swaps and the watch over new versions.
    deployer: Deployer,
    /// (outputs, anomaly events) stored, by outbox stream index.
    per_stream: Vec<(u64, u64)>,
}

impl Work {
    fn new(
        outbox: Arc<Outbox>,
        stats: Arc<RunStats>,
        commit: mpsc::Sender<CommitRequest<u16>>,
        deployer: Deployer,
    ) -> Self {
        Work {
            outbox,
            stats,
            commit,
            staged: Vec::new(),
            events: Vec::new(),
            next_pos: 0,
            waiting: VecDeque::new(),
            full_log: LogLimiter::new(5, Duration::from_secs(60)),
            blocked_since: None,
            deployer,
            per_stream: Vec::new(),
        }
    }

    /// Give a batch from the queue its position; remember its packet id.
    fn arrived(&mut self, batch: &SourceBatch) -> u64 {
        let pos = self.next_pos;
        self.next_pos += 1;
        if let Some(pkid) = batch.ack {
            self.waiting.push_back((
                pos,
                PendingAck {
                    token: pkid,
                    received: batch.received,
                },
            ));
        }
        pos
    }

    fn awaiting_acks(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Turn a batch result into outbox entries (anomaly events first).
    fn stage(&mut self, result: BatchResult<'_>) -> Result<(), ()> {
        self.deployer.observe(&result.errors);
        let Some(stream) = self.outbox.stream_index(result.stream) else {
            return Ok(());
        };
        if self.per_stream.len() <= stream {
            self.per_stream.resize(stream + 1, (0, 0));
        }
        self.per_stream[stream].0 += result.outputs.len() as u64;
        self.per_stream[stream].1 += result.events.len() as u64;
        for event in &result.events {
            if let Ok(body) = serde_json::to_vec(event) {
                self.stats.anomalies.fetch_add(1, Ordering::Relaxed);
                self.staged.push(Staged {
                    kind: Kind::Anomaly,
                    stream,
                    body,
                });
            }
        }
        for reading in &result.outputs {
            let mut body = Vec::with_capacity(160);
            if crate::replay::output::format_line(&mut body, result.stream, reading).is_ok() {
                if body.last() == Some(&b'\n') {
                    body.pop();
                }
                self.stats.outputs.fetch_add(1, Ordering::Relaxed);
                self.staged.push(Staged {
                    kind: Kind::Output,
                    stream,
                    body,
                });
            }
        }
        self.events.extend(result.events);
        Ok(())
    }

    /// Append what was staged, then hand the committer every message now
    /// fully processed. Waits while a `reject-new` stream is full (nothing
    /// is acknowledged meanwhile, which pushes back to the broker). Returns
    /// `false` if shutdown came while waiting: the rest stays
    /// unacknowledged, for the broker to redeliver.
    async fn settle(&mut self, oldest_pending: Option<u64>, token: &CancellationToken) -> bool {
        let mut from = 0;
        let mut appended = 0;
        let mut uncommitted = 0;
        while from < self.staged.len() {
            match self.outbox.append(&mut self.staged[from..], now_ms()) {
                Ok(r) => {
                    appended += r.stored;
                    uncommitted += r.stored;
                    if r.dropped + r.evicted > 0
                        && self.full_log.allow(std::time::Instant::now(), |n| {
                            tracing::warn!(suppressed = n, "outbox full warnings suppressed");
                        })
                    {
                        tracing::warn!(
                            evicted = r.evicted,
                            dropped = r.dropped,
                            totals = ?self.outbox.dropped(),
                            "outbox full: dropping the oldest entries of the stream (drop-oldest)"
                        );
                    }
                    let Some(at) = r.blocked_at else { break };
                    from += at;
                    if self.blocked_since.is_none() {
                        self.blocked_since = Some(std::time::Instant::now());
                        let (entries, bytes) = self.outbox.depth();
                        tracing::warn!(
                            entries,
                            bytes,
                            "outbox full: not acknowledging inbound messages until the uplink frees room (reject-new)"
                        );
                    }
                }
                Err(e) => {
                    self.outbox
                        .metrics()
                        .storage_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "outbox append failed; retrying in 1 s");
                }
            }
            // Make what was appended durable (so the uplink can drain it),
            // then wait for room or for a retry.
            if uncommitted > 0 {
                uncommitted = 0;
                if self
                    .commit
                    .send(CommitRequest { acks: Vec::new() })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            tokio::select! {
                _ = self.outbox.space() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = token.cancelled() => {
                    tracing::warn!(
                        not_stored = self.staged.len() - from,
                        unacknowledged = self.waiting.len(),
                        "stopping while the outbox is full: these results are not stored; their MQTT messages stay unacknowledged for the broker to redeliver"
                    );
                    self.staged.clear();
                    self.waiting.clear();
                    return false;
                }
            }
        }
        if let Some(since) = self.blocked_since.take() {
            tracing::info!(
                blocked_ms = since.elapsed().as_millis() as u64,
                "outbox has room again: acknowledging resumes"
            );
        }
        self.staged.clear();
        let watermark = oldest_pending.unwrap_or(self.next_pos);
        let mut acks = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(pos, _)| *pos < watermark)
        {
            if let Some((_, a)) = self.waiting.pop_front() {
                acks.push(a);
            }
        }
        if appended > 0 || !acks.is_empty() {
            return self.commit.send(CommitRequest { acks }).await.is_ok();
        }
        true
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
    backoff: (u64, u64),
}

/// Keep the ingest connection: (re)subscribe on every connect unless the
/// broker kept the session, dispatch publications to the MQTT sources with
/// their packet ids, reconnect with exponential backoff. At shutdown the
/// subscriptions stay (the persistent session queues what arrives while the
/// gateway is down); messages that arrive after the sources stopped are
/// left unacknowledged and come again next time.
async fn mqtt_task(mut t: MqttTask) {
    let mut backoff = t.backoff.0;
    let mut out = Some(t.out);
    loop {
        if out.is_some() && t.sources_stop.is_cancelled() {
            // Sources are done: release the queue so processing can drain.
            out = None;
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
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                for ingest in &t.ingests {
                    ingest.metrics().set_up(true);
                }
                tracing::info!("MQTT sources subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(tx) = &out else { continue };
                let ack = (p.qos == QoS::AtLeastOnce).then_some(p.pkid);
                // The ack travels with the last source that takes the
                // message, so it is sent after all of them are stored.
                let last = t.ingests.iter().rposition(|i| i.wants(&p.topic));
                for (i, ingest) in t.ingests.iter_mut().enumerate() {
                    if !ingest.wants(&p.topic) {
                        continue;
                    }
                    let ack = if Some(i) == last { ack } else { None };
                    match ingest.handle(&p.topic, &p.payload, ack, tx).await {
                        Delivery::Queued => {}
                        Delivery::Dropped(Some(pkid)) => {
                            // drop-newest gave the message up: acknowledge it
                            // so the broker does not send it again.
                            let mut a = Publish::new("", QoS::AtLeastOnce, Vec::new());
                            a.pkid = pkid;
                            let _ = t.client.try_ack(&a);
                        }
                        Delivery::Dropped(None) => {}
                        Delivery::Closed => {
                            out = None;
                            break;
                        }
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
                let batch = SourceBatch::new(source.clone(), vec![reading]);
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
