//! The daemon side of OTA, in two halves.
//!
//! [`OtaTask`] (async) receives bundles and key sets from the uplink
//! connection, verifies them ([`super::verify`]), records the release
//! counter durably, asks the processing task to deploy, persists the
//! outcome and publishes it retained on `<prefix>/<id>/modules/<name>/state`.
//!
//! [`Deployer`] lives in the processing task, which owns the pipeline, so a
//! swap happens *between batches*: it compiles the new version, runs it on
//! the stream's recent inputs with throwaway state (shadow run), swaps it
//! into every stream that has a processor of that name, and watches it: too
//! many failures within the watch window put the previous instance (kept
//! warm) back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::OtaConfig;
use super::bundle;
use super::store::OtaStore;
use super::verify::{self, Context, Trust};
use crate::pipeline::Pipeline;
use crate::runtime::{Clock, ErrorKind, HostEnv, ProcessorError, Supervisor};
use crate::state::MemoryState;

/// A verified module version for the processing task to deploy.
#[derive(Debug)]
pub struct Deploy {
    /// Processor name.
    pub name: String,
    /// Manifest version string.
    pub version: String,
    /// Release counter.
    pub release: u64,
    /// The module bytes (hash and length verified).
    pub module: Vec<u8>,
}

/// What became of a deployment, or of a watched version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new version runs in `streams` streams.
    Activated {
        /// Processor name.
        name: String,
        /// How many chain positions took it.
        slots: usize,
    },
    /// Not deployed; the active version is unchanged.
    Rejected {
        /// Processor name.
        name: String,
        /// Stable label (`shadow-failed`, `unknown-processor`, `load-failed`).
        reason: &'static str,
        /// What happened, for the operator.
        message: String,
    },
    /// The watched version failed too often and the previous one is back.
    RolledBack {
        /// Processor name.
        name: String,
        /// The version that was rolled back.
        version: String,
        /// Why.
        message: String,
    },
    /// The watch ended without trouble.
    Confirmed {
        /// Processor name.
        name: String,
        /// The confirmed version.
        version: String,
    },
}

struct Watch {
    name: String,
    version: String,
    until: Instant,
    failures: u32,
    last_error: String,
    /// (stream index, chain position, the instance it replaced).
    previous: Vec<(usize, usize, Supervisor)>,
}

/// Swaps, watches and rolls back module versions inside the processing task.
pub struct Deployer {
    watch: Duration,
    rollback_failures: u32,
    watches: Vec<Watch>,
}

impl Deployer {
    /// A deployer under `[ota]`'s watch settings.
    pub fn new(config: &OtaConfig) -> Self {
        Deployer {
            watch: Duration::from_secs(config.watch_secs),
            rollback_failures: config.rollback_failures,
            watches: Vec::new(),
        }
    }

    /// Deploy `d` into every stream with a processor of that name: compile,
    /// shadow-run on recent inputs, then swap. All or nothing.
    pub fn deploy(&mut self, pipeline: &mut Pipeline, d: &Deploy) -> Outcome {
        let reject = |reason, message: String| Outcome::Rejected {
            name: d.name.clone(),
            reason,
            message,
        };
        let slots: Vec<(usize, usize)> = pipeline
            .streams()
            .iter()
            .enumerate()
            .flat_map(|(si, s)| s.positions_of(&d.name).into_iter().map(move |p| (si, p)))
            .collect();
        let Some(&(s0, p0)) = slots.first() else {
            return reject(
                "unknown-processor",
                format!("no stream has a processor named {:?}", d.name),
            );
        };
        let Some(runtime) = pipeline.streams()[s0]
            .module_at(p0)
            .map(|m| m.runtime().clone())
        else {
            return reject("unknown-processor", "chain position vanished".into());
        };
        let module = match runtime.load_bytes(&d.name, &d.module) {
            Ok(m) => m,
            Err(e) => return reject("load-failed", e.to_string()),
        };
        // Shadow runs: the new version on each slot's recent inputs, with
        // throwaway state, so nothing it does reaches the real state or
        // the outbox.
        let mut fresh = Vec::with_capacity(slots.len());
        for &(si, pos) in &slots {
            let stream = &pipeline.streams()[si];
            let Some(old) = stream.module_at(pos) else {
                continue;
            };
            let shadow_env = HostEnv {
                state: Arc::new(MemoryState::new()),
                clock: Clock::System,
                config: old.env().config.clone(),
            };
            let mut shadow =
                match Supervisor::new(runtime.clone(), module.clone(), shadow_env, old.policy()) {
                    Ok(s) => s,
                    Err(e) => {
                        return reject("shadow-failed", format!("init failed: {e}"));
                    }
                };
            let sample = stream.sample(pos).to_vec();
            let n = sample.len();
            let step = shadow.process(sample);
            if let Some(e) = step.error {
                return reject(
                    "shadow-failed",
                    format!(
                        "on {n} recent readings of stream {:?}: {} ({})",
                        stream.name(),
                        e,
                        e.kind().as_str()
                    ),
                );
            }
            match Supervisor::new(
                runtime.clone(),
                module.clone(),
                old.env().clone(),
                old.policy(),
            ) {
                Ok(s) => fresh.push((si, pos, s)),
                Err(e) => return reject("load-failed", e.to_string()),
            }
        }
        // A deployment during a watch confirms the watched version (it is
        // what gets replaced now, and becomes the rollback target).
        self.watches.retain(|w| w.name != d.name);
        let mut previous = Vec::with_capacity(fresh.len());
        for (si, pos, s) in fresh {
            if let Some(old) = pipeline.streams_mut()[si].replace_module(pos, s) {
                previous.push((si, pos, old));
            }
        }
        let slots = previous.len();
        self.watches.push(Watch {
            name: d.name.clone(),
            version: d.version.clone(),
            until: Instant::now() + self.watch,
            failures: 0,
            last_error: String::new(),
            previous,
        });
        Outcome::Activated {
            name: d.name.clone(),
            slots,
        }
    }

    /// Put a stored (re-verified) version in place at start-up: no shadow
    /// run and no watch (it was watched when it arrived).
    pub fn restore(
        &mut self,
        pipeline: &mut Pipeline,
        name: &str,
        module: &[u8],
    ) -> Result<usize, String> {
        let mut n = 0;
        for si in 0..pipeline.streams().len() {
            for pos in pipeline.streams()[si].positions_of(name) {
                let Some(old) = pipeline.streams()[si].module_at(pos) else {
                    continue;
                };
                let runtime = old.runtime().clone();
                let compiled = runtime
                    .load_bytes(name, module)
                    .map_err(|e| e.to_string())?;
                let s = Supervisor::new(runtime, compiled, old.env().clone(), old.policy())
                    .map_err(|e| e.to_string())?;
                pipeline.streams_mut()[si].replace_module(pos, s);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Count failures of watched versions in a batch's errors.
    pub fn observe(&mut self, errors: &[ProcessorError]) {
        if self.watches.is_empty() {
            return;
        }
        for e in errors {
            if e.kind() == ErrorKind::GuestError {
                // The module refused input on purpose: not a fault of the
                // new version.
                continue;
            }
            if let Some(w) = self.watches.iter_mut().find(|w| w.name == e.module()) {
                w.failures += 1;
                w.last_error = format!("{e} ({})", e.kind().as_str());
            }
        }
    }

    /// Roll back versions that failed too often; confirm those whose watch
    /// ended.
    pub fn tick(&mut self, pipeline: &mut Pipeline) -> Vec<Outcome> {
        let mut out = Vec::new();
        let now = Instant::now();
        let limit = self.rollback_failures;
        let mut i = 0;
        while i < self.watches.len() {
            let w = &self.watches[i];
            if w.failures >= limit {
                let w = self.watches.swap_remove(i);
                for (si, pos, old) in w.previous {
                    if let Some(s) = pipeline.streams_mut().get_mut(si) {
                        s.replace_module(pos, old);
                    }
                }
                out.push(Outcome::RolledBack {
                    name: w.name,
                    version: w.version,
                    message: format!(
                        "{} failures within the {} s watch; last: {}",
                        w.failures,
                        self.watch.as_secs(),
                        w.last_error
                    ),
                });
            } else if now >= w.until {
                let w = self.watches.swap_remove(i);
                out.push(Outcome::Confirmed {
                    name: w.name,
                    version: w.version,
                });
            } else {
                i += 1;
            }
        }
        out
    }

    /// When the next watch ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.watches.iter().map(|w| w.until).min()
    }
}

/// Listen for bundles and key sets on a connection of their own (client id
/// `<client id>-ota`), so that nothing sent to the OTA topics — a payload
/// over the transport limit makes the client drop the connection, and a
/// retained one comes back on every reconnect — can disturb the delivery of
/// data. Payloads go to `out`; a payload over the transport limit is
/// reported on `<prefix>/<id>/ota/state` once per episode. `ready` fires
/// when the subscriptions are first in place.
#[allow(clippy::too_many_arguments)]
pub async fn listen(
    options: rumqttc::MqttOptions,
    filters: Vec<String>,
    out: mpsc::Sender<Vec<u8>>,
    report: mpsc::Sender<SidePublish>,
    ota_state_topic: String,
    backoff: (u64, u64),
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mut ready = Some(ready);
    let mut wait = backoff.0;
    // The last warning and when: the same failure is logged (and reported)
    // again only after ten minutes.
    let mut last_warning: Option<(String, Instant)> = None;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 8);
        let mut up_since = None;
        let error = loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = client.try_disconnect();
                    return;
                }
                e = eventloop.poll() => e,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in &filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "OTA: subscribe failed");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    up_since = Some(Instant::now());
                    tracing::debug!(topics = ?filters, "OTA: subscribed");
                    if let Some(r) = ready.take() {
                        tracing::info!(topics = ?filters, "OTA: subscribed");
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if out.try_send(p.payload.to_vec()).is_err() {
                        tracing::warn!(topic = %p.topic, "OTA: busy with earlier bundles; this one is dropped (send it again)");
                    }
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        // A connection that held for a while starts the backoff over; one
        // that keeps failing right after subscribing (a retained payload
        // over the limit) backs off further.
        if up_since.is_some_and(|t| t.elapsed() > Duration::from_secs(30)) {
            wait = backoff.0;
        }
        let message = error.to_string();
        let repeat = last_warning
            .as_ref()
            .is_some_and(|(m, t)| *m == message && t.elapsed() < Duration::from_secs(600));
        if repeat {
            tracing::debug!(error = %message, retry_in_ms = wait, "OTA connection still failing");
        } else {
            last_warning = Some((message.clone(), Instant::now()));
            if message.contains("payload size limit") {
                tracing::warn!(error = %message, retry_in_ms = wait, "OTA: a message over the transport limit arrived on an OTA topic; if it is retained, clear it (publish an empty retained message)");
                let payload = outcome_json(
                    "rejected",
                    "too-large",
                    &format!(
                        "{message}: if it is retained, clear it by publishing an empty retained message to the OTA topic"
                    ),
                );
                let _ = report
                    .send(SidePublish {
                        topic: ota_state_topic.clone(),
                        payload: payload.to_string().into_bytes(),
                        retain: true,
                    })
                    .await;
            } else {
                tracing::warn!(error = %message, retry_in_ms = wait, "OTA connection failed; retrying with backoff");
            }
        }
        drop(eventloop);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        wait = (wait * 2).min(backoff.1);
    }
}

/// The fields every state message has.
fn outcome_json(outcome: &str, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "outcome": outcome,
        "reason": reason,
        "message": message,
        "at": crate::sources::now_ms(),
    })
}

/// A retained publication for the uplink (module state).
#[derive(Debug, Clone)]
pub struct SidePublish {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained.
    pub retain: bool,
}

/// Counters of the OTA task (for the metrics endpoint).
#[derive(Debug, Default)]
pub struct OtaMetrics {
    /// Bundles received.
    pub received: AtomicU64,
    /// Bundles activated.
    pub activated: AtomicU64,
    /// Rollbacks.
    pub rolled_back: AtomicU64,
    /// Rejections by reason.
    pub rejected: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Time from a bundle's receipt to its activation.
    pub activation_latency: crate::metrics::Histogram,
}

impl OtaMetrics {
    fn reject(&self, reason: &'static str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason).or_insert(0) += 1;
        }
    }
}

/// What the OTA task needs from the rest of the gateway.
pub struct OtaTask {
    /// `[ota]`.
    pub config: OtaConfig,
    /// Trusted keys (roots and the current key set).
    pub trust: Trust,
    /// Persistence.
    pub store: OtaStore,
    /// This gateway's id.
    pub gateway_id: String,
    /// `<prefix>/<gateway id>`.
    pub topic_base: String,
    /// Local policy: fuel per call and memory bytes.
    pub max_fuel: u64,
    /// Local policy: memory bytes.
    pub max_memory: u64,
    /// sha256 (hex) of each processor's configured module, by name.
    pub configured: HashMap<String, String>,
    /// To the processing task.
    pub deploy: mpsc::Sender<(Deploy, oneshot::Sender<Outcome>)>,
    /// Rollbacks and confirmations from the processing task.
    pub outcomes: mpsc::UnboundedReceiver<Outcome>,
    /// Retained state publications, via the uplink.
    pub publish: mpsc::Sender<SidePublish>,
    /// Counters.
    pub metrics: Arc<OtaMetrics>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl OtaTask {
    /// Topic of a module's retained state.
    pub fn state_topic(&self, name: &str) -> String {
        format!("{}/modules/{name}/state", self.topic_base)
    }

    /// Topic of OTA outcomes that name no module (undecodable bundles, key
    /// sets).
    pub fn ota_state_topic(&self) -> String {
        format!("{}/ota/state", self.topic_base)
    }

    fn context(&self, now: i64, stored_release: Option<u64>) -> Context<'_> {
        Context {
            gateway_id: &self.gateway_id,
            fleet: self.config.fleet.as_deref(),
            board: &self.config.board,
            abi: crate::runtime::abi::ABI_VERSION,
            max_bundle_bytes: self.config.max_bundle_bytes,
            max_fuel: self.max_fuel,
            max_memory: self.max_memory,
            now,
            stored_release,
        }
    }

    /// max(system clock, persisted floor).
    fn now(&self) -> i64 {
        now_secs().max(self.store.floor().unwrap_or(0))
    }

    /// What runs for `name` now: (version, release, sha256 hex). The stored
    /// bundle is what runs (it was verified when it arrived or at start-up;
    /// a key revoked since does not stop it before the next restart), so it
    /// is read without checking signatures again.
    fn active_info(&self, name: &str) -> (String, u64, String) {
        if let Ok(Some(bytes)) = self.store.active(name) {
            if let Ok(b) = bundle::decode_bundle(&bytes) {
                return (
                    b.manifest.version.clone(),
                    b.manifest.release,
                    hex::encode(b.manifest.sha256),
                );
            }
        }
        (
            "configured".into(),
            0,
            self.configured.get(name).cloned().unwrap_or_default(),
        )
    }

    async fn publish_state(&self, name: &str, outcome: &str, reason: &str, message: &str) {
        let (version, release, sha256) = self.active_info(name);
        let mut state = outcome_json(outcome, reason, message);
        state["name"] = name.into();
        state["version"] = version.into();
        state["release"] = release.into();
        state["sha256"] = sha256.into();
        self.send(self.state_topic(name), state).await;
    }

    async fn publish_ota_state(&self, outcome: &str, reason: &str, message: &str) {
        let state = outcome_json(outcome, reason, message);
        self.send(self.ota_state_topic(), state).await;
    }

    async fn send(&self, topic: String, state: serde_json::Value) {
        let _ = self
            .publish
            .send(SidePublish {
                topic,
                payload: state.to_string().into_bytes(),
                retain: true,
            })
            .await;
    }

    /// Take a stored key set newer than the configured one (re-verified).
    pub fn load_stored_keyset(&mut self) {
        let Ok(Some((bytes, version))) = self.store.keyset() else {
            return;
        };
        if self
            .trust
            .keyset
            .as_ref()
            .is_some_and(|k| k.version >= version)
        {
            return;
        }
        // Signatures and contents only: an expired key set still says which
        // keys signed the active modules; new installs check expiry.
        match verify::reverify_stored_keyset(&bytes, &self.trust) {
            Ok(ks) => {
                tracing::info!(version = ks.version, "OTA: stored release key set loaded");
                self.trust.keyset = Some(ks);
            }
            Err(e) => {
                tracing::error!(reason = e.reason(), error = %e, "OTA: stored key set no longer verifies; ignoring it");
            }
        }
    }

    /// Bring back every stored active version (re-verified: a revoked key
    /// or a tampered file puts the configured module back). Returns the
    /// names restored.
    pub fn restore_all(&mut self, deployer: &mut Deployer, pipeline: &mut Pipeline) -> Vec<String> {
        let mut restored = Vec::new();
        let stored = match self.store.all_active() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "OTA: reading the active bundles failed; running the configured modules");
                return restored;
            }
        };
        for (name, bytes) in stored {
            let cx = self.context(self.now(), None);
            let result = verify::reverify_stored(&bytes, &self.trust, &cx)
                .map_err(|e| format!("{} ({})", e, e.reason()))
                .and_then(|v| {
                    if v.manifest.name != name {
                        return Err(format!(
                            "stored under {name:?} but names {:?}",
                            v.manifest.name
                        ));
                    }
                    deployer.restore(pipeline, &name, &v.module).map(|n| (v, n))
                });
            match result {
                Ok((v, n)) if n > 0 => {
                    tracing::info!(module = %name, version = %v.manifest.version, release = v.manifest.release, slots = n, "OTA: restored the active version");
                    restored.push(name);
                }
                Ok(_) => {
                    tracing::warn!(module = %name, "OTA: stored version is for a processor no stream has now; keeping it stored");
                }
                Err(e) => {
                    tracing::error!(module = %name, error = %e, "OTA: stored version does not verify or load; running the configured module");
                    let _ = self.store.deactivate(&name);
                }
            }
        }
        restored
    }

    /// Announce what runs at start-up (configured or restored versions).
    pub async fn announce(&self, restored: &[String]) {
        let mut names: Vec<&String> = self.configured.keys().collect();
        names.sort();
        for name in names {
            let outcome = if restored.contains(name) {
                "restored"
            } else {
                "running"
            };
            self.publish_state(name, outcome, "", "").await;
        }
    }

    /// Handle bundles until `stop`.
    pub async fn run(mut self, mut inbound: mpsc::Receiver<Vec<u8>>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                b = inbound.recv() => match b {
                    Some(bytes) => self.on_bundle(bytes).await,
                    None => return,
                },
                o = self.outcomes.recv() => match o {
                    Some(o) => self.on_outcome(o).await,
                    None => return,
                },
            }
        }
    }

    async fn on_outcome(&mut self, o: Outcome) {
        match o {
            Outcome::RolledBack {
                name,
                version,
                message,
            } => {
                self.metrics.rolled_back.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.store.roll_back(&name) {
                    tracing::error!(module = %name, error = %e, "OTA: recording the rollback failed");
                }
                tracing::error!(module = %name, version = %version, reason = %message,
                    "OTA: new version misbehaved and was rolled back to the previous one");
                self.publish_state(&name, "rolled-back", "watch-failures", &message)
                    .await;
            }
            Outcome::Confirmed { name, version } => {
                tracing::info!(module = %name, version = %version, "OTA: new version confirmed (watch ended without trouble)");
                self.publish_state(&name, "confirmed", "", "").await;
            }
            Outcome::Activated { .. } | Outcome::Rejected { .. } => {}
        }
    }

    async fn on_bundle(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            // An operator clearing a retained bundle.
            return;
        }
        let received = Instant::now();
        self.metrics.received.fetch_add(1, Ordering::Relaxed);
        if bytes.len() > self.config.max_bundle_bytes {
            // Checked here too so an oversized keyset is refused unparsed.
            let name = None;
            return self
                .rejected(
                    name,
                    "too-large",
                    &format!(
                        "{} bytes exceed max_bundle_bytes {}",
                        bytes.len(),
                        self.config.max_bundle_bytes
                    ),
                )
                .await;
        }
        if bundle::is_keyset(&bytes) {
            return self.on_keyset(&bytes).await;
        }
        let name = bundle::peek_name(&bytes);
        if let Some(n) = &name {
            // A retained bundle comes again on every reconnect: the active
            // one is not news.
            if self.store.active(n).ok().flatten().as_deref() == Some(bytes.as_slice()) {
                tracing::debug!(module = %n, "OTA: bundle already active");
                return;
            }
        }
        let stored = match &name {
            Some(n) => self.store.release(n).unwrap_or(None),
            None => None,
        };
        let cx = self.context(self.now(), stored);
        let verified = match verify::verify_bundle(&bytes, &self.trust, &cx) {
            Ok(v) => v,
            Err(rej) => {
                return self
                    .rejected(name.as_deref(), rej.reason(), &rej.to_string())
                    .await;
            }
        };
        let m = &verified.manifest;
        let name = m.name.clone();
        // Signed time only moves the floor (a wrong system clock cannot).
        if let Err(e) = self.store.raise_floor(m.issued_at) {
            tracing::error!(error = %e, "OTA: storing the time floor failed");
        }
        // Anti-rollback: the counter is durable before anything runs.
        if let Err(e) = self.store.set_release(&name, m.release) {
            tracing::error!(module = %name, error = %e, "OTA: cannot store the release counter; not deploying");
            return self
                .rejected(Some(&name), "storage-failed", &e.to_string())
                .await;
        }
        let deploy = Deploy {
            name: name.clone(),
            version: m.version.clone(),
            release: m.release,
            module: verified.module.clone(),
        };
        let (tx, rx) = oneshot::channel();
        if self.deploy.send((deploy, tx)).await.is_err() {
            return;
        }
        let Ok(outcome) = rx.await else { return };
        match outcome {
            Outcome::Activated { slots, .. } => {
                if let Err(e) = self.store.activate(&name, &bytes) {
                    tracing::error!(module = %name, error = %e, "OTA: storing the active bundle failed (it runs until restart)");
                }
                let took = received.elapsed();
                self.metrics.activated.fetch_add(1, Ordering::Relaxed);
                self.metrics.activation_latency.observe(took);
                tracing::info!(
                    module = %name,
                    version = %m.version,
                    release = m.release,
                    sha256 = %hex::encode(m.sha256),
                    signers = ?verified.signers,
                    slots,
                    activation_ms = format!("{:.1}", took.as_secs_f64() * 1000.0),
                    "OTA: new version active (watching it)"
                );
                self.publish_state(
                    &name,
                    "activated",
                    "",
                    &format!(
                        "active in {slots} stream slot(s) after {} ms",
                        took.as_millis()
                    ),
                )
                .await;
            }
            Outcome::Rejected {
                reason, message, ..
            } => self.rejected(Some(&name), reason, &message).await,
            Outcome::RolledBack { .. } | Outcome::Confirmed { .. } => {}
        }
    }

    async fn on_keyset(&mut self, bytes: &[u8]) {
        let current = self.trust.keyset.as_ref().map(|k| k.version);
        match verify::verify_keyset(bytes, &self.trust, current, self.now()) {
            Ok(ks) => {
                if let Err(e) = self.store.set_keyset(bytes, ks.version) {
                    tracing::error!(error = %e, "OTA: storing the key set failed");
                }
                let _ = self.store.raise_floor(ks.issued_at);
                tracing::info!(
                    version = ks.version,
                    keys = ks.keys.len(),
                    revoked = ks.revoked.len(),
                    "OTA: release key set updated"
                );
                self.publish_ota_state(
                    "keyset-updated",
                    "",
                    &format!("key set version {}", ks.version),
                )
                .await;
                self.trust.keyset = Some(ks);
            }
            Err(rej) => {
                self.metrics.reject(rej.reason());
                tracing::warn!(reason = rej.reason(), error = %rej, "OTA: key set rejected");
                self.publish_ota_state("rejected", rej.reason(), &rej.to_string())
                    .await;
            }
        }
    }

    async fn rejected(&self, name: Option<&str>, reason: &'static str, message: &str) {
        self.metrics.reject(reason);
        tracing::warn!(module = name.unwrap_or("?"), reason, error = %message, "OTA: bundle rejected; the active version is unchanged");
        match name {
            Some(n) if self.configured.contains_key(n) => {
                self.publish_state(n, "rejected", reason, message).await
            }
            _ => self.publish_ota_state("rejected", reason, message).await,
        }
    }
}
