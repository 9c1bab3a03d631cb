//! The uplink: drains the outbox to the broker at QoS 1.
//!
//! Two tasks. The *driver* owns the rumqttc event loop and only polls it,
//! forwarding what matters (connected, packet sent, PUBACK, connection lost)
//! over a channel; after a connection error it drops the event loop and
//! builds a fresh one after a backoff, so nothing queued for a dead
//! connection is ever sent on the next. The *logic* task owns the window:
//! it publishes durable entries, anomaly topics before output topics, round
//! robin across streams and in sequence order within each topic, keeps at
//! most `inflight` publications unacknowledged, and deletes an entry only
//! when its PUBACK arrives.
//!
//! rumqttc assigns packet ids in request order and reports each as
//! `Outgoing::Publish(pkid)`; the logic task is the only publisher on this
//! connection, so a FIFO of requests maps packet ids back to entries.
//!
//! After a reconnect everything still in the outbox is sent again from the
//! start of each topic: an entry whose PUBACK was lost arrives twice (same
//! seq and boot, so consumers drop it) and per-topic order is kept, because
//! a broker receives a prefix of what was written to one connection.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Kind, Outbox};
use crate::mqtt::{STATUS_OFFLINE, STATUS_ONLINE, Topics};
use crate::ota::task::SidePublish;
use crate::settings::MqttConfig;
use crate::sources::now_ms;

/// `[uplink]`: where the outbox is published.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// Publications awaiting their PUBACK at once. Default: 32.
    pub inflight: u16,
    /// How long a clean stop waits for outstanding PUBACKs and the retained
    /// "offline" status, ms. Default: 2 000.
    pub stop_grace_ms: u64,
    /// `[uplink.broker]`: a different broker for the uplink, with the keys
    /// of `[mqtt]`. Default: the `[mqtt]` broker (on a connection of its
    /// own, client id `<mqtt client id>-uplink`).
    pub broker: Option<MqttConfig>,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            inflight: 32,
            stop_grace_ms: 2_000,
            broker: None,
        }
    }
}

impl UplinkConfig {
    /// Check ranges; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.inflight) {
            return Err("inflight must be within 1 ..= 1024".into());
        }
        if self.stop_grace_ms > 60_000 {
            return Err("stop_grace_ms must be within 0 ..= 60000".into());
        }
        if let Some(b) = &self.broker {
            b.validate().map_err(|m| format!("broker.{m}"))?;
        }
        Ok(())
    }

    /// The broker settings in force: `[uplink.broker]` or `[mqtt]`.
    pub fn broker<'a>(&'a self, mqtt: &'a MqttConfig) -> &'a MqttConfig {
        self.broker.as_ref().unwrap_or(mqtt)
    }
}

/// What the driver reports.
#[derive(Debug)]
enum LinkEvent {
    Connected(AsyncClient),
    Sent(u16),
    PubAck(u16),
    Down(String),
    Closed,
}

/// Something published and not yet acknowledged.
#[derive(Debug)]
enum Item {
    Entry { key: sled::IVec, enqueued_ms: i64 },
    Status,
    Side,
}

/// State of one connection.
struct Conn {
    client: AsyncClient,
    /// Requested, packet id not yet known (FIFO).
    queued: VecDeque<Item>,
    /// Sent, awaiting PUBACK, by packet id.
    inflight: HashMap<u16, Item>,
    /// Last sequence number requested per topic.
    cursors: HashMap<(Kind, usize), u64>,
    /// Round-robin offset across streams.
    rr: usize,
}

impl Conn {
    fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }
}

/// The uplink stage: built from the config, run until the token stops it.
pub struct Uplink {
    outbox: Arc<Outbox>,
    options: MqttOptions,
    topics: Topics,
    window: usize,
    backoff: (u64, u64),
    grace: Duration,
    /// Retained publications of other stages (module state), latest per
    /// topic kept while disconnected.
    side: Option<mpsc::Receiver<SidePublish>>,
}

impl Uplink {
    /// An uplink publishing `outbox` with `options` (which carry the
    /// retained "offline" last will; see [`crate::mqtt::uplink_options`]).
    pub fn new(
        outbox: Arc<Outbox>,
        mut options: MqttOptions,
        topics: Topics,
        config: &UplinkConfig,
        broker: &MqttConfig,
    ) -> Uplink {
        // The outbox is the session: a fresh one per connection, so the
        // broker never replays packets the logic task no longer tracks.
        options.set_clean_session(true);
        options.set_inflight(config.inflight.saturating_add(1));
        Uplink {
            outbox,
            options,
            topics,
            window: usize::from(config.inflight),
            backoff: (broker.reconnect_min_ms, broker.reconnect_max_ms),
            grace: Duration::from_millis(config.stop_grace_ms),
            side: None,
        }
    }

    /// Also publish what arrives on `side` (retained module state), the
    /// latest per topic kept while disconnected.
    pub fn with_side(mut self, side: mpsc::Receiver<SidePublish>) -> Uplink {
        self.side = Some(side);
        self
    }

    /// Publish until `stop` is cancelled; then send the retained "offline"
    /// status, wait up to the grace period for outstanding PUBACKs and
    /// disconnect.
    pub async fn run(mut self, stop: CancellationToken) {
        let (ev_tx, mut ev_rx) = mpsc::channel(self.window * 2 + 16);
        let driver_stop = CancellationToken::new();
        let driver = tokio::spawn(drive(
            self.options.clone(),
            self.window + 8,
            self.backoff,
            ev_tx,
            driver_stop.clone(),
        ));
        let metrics = self.outbox.metrics().clone();
        let mut conn: Option<Conn> = None;
        let mut side = self.side.take();
        let mut pending_side: std::collections::BTreeMap<String, SidePublish> = Default::default();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                ev = ev_rx.recv() => match ev {
                    Some(ev) => self.on_event(ev, &mut conn),
                    None => break,
                },
                p = recv_side(&mut side) => match p {
                    Some(p) => {
                        pending_side.insert(p.topic.clone(), p);
                    }
                    None => side = None,
                },
                _ = self.outbox.durable(), if conn.is_some() => {}
            }
            if let Some(c) = conn.as_mut() {
                // Side publications first: few, small, and the operator is
                // waiting for them.
                while c.outstanding() < self.window + 4 {
                    let Some(topic) = pending_side.keys().next().cloned() else {
                        break;
                    };
                    let Some(p) = pending_side.remove(&topic) else {
                        break;
                    };
                    if c.client
                        .try_publish(
                            p.topic.clone(),
                            QoS::AtLeastOnce,
                            p.retain,
                            p.payload.clone(),
                        )
                        .is_err()
                    {
                        pending_side.insert(topic, p);
                        break;
                    }
                    c.queued.push_back(Item::Side);
                }
                self.fill(c);
            }
        }
        // Clean stop: retained "offline", then wait for what is in flight.
        if let Some(c) = conn.as_mut() {
            if c.client
                .try_publish(self.topics.status(), QoS::AtLeastOnce, true, STATUS_OFFLINE)
                .is_ok()
            {
                c.queued.push_back(Item::Status);
            }
            let deadline = tokio::time::Instant::now() + self.grace;
            while conn.as_ref().is_some_and(|c| c.outstanding() > 0) {
                match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
                    Ok(Some(ev)) => self.on_event(ev, &mut conn),
                    _ => break,
                }
            }
            if let Some(c) = &conn {
                let _ = c.client.try_disconnect();
                let closed =
                    tokio::time::timeout_at(deadline + Duration::from_millis(500), async {
                        while let Some(ev) = ev_rx.recv().await {
                            if matches!(ev, LinkEvent::Closed | LinkEvent::Down(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                if closed.is_err() {
                    tracing::warn!("uplink broker did not confirm the disconnect");
                }
            }
        }
        metrics.uplink_connected.store(false, Ordering::Relaxed);
        driver_stop.cancel();
        let _ = driver.await;
    }

    fn on_event(&self, ev: LinkEvent, conn: &mut Option<Conn>) {
        let metrics = self.outbox.metrics();
        match ev {
            LinkEvent::Connected(client) => {
                let (entries, bytes) = self.outbox.depth();
                tracing::info!(
                    backlog_entries = entries,
                    backlog_bytes = bytes,
                    "uplink connected; draining the outbox"
                );
                metrics.uplink_connected.store(true, Ordering::Relaxed);
                let mut c = Conn {
                    client,
                    queued: VecDeque::new(),
                    inflight: HashMap::new(),
                    cursors: HashMap::new(),
                    rr: 0,
                };
                if c.client
                    .try_publish(self.topics.status(), QoS::AtLeastOnce, true, STATUS_ONLINE)
                    .is_ok()
                {
                    c.queued.push_back(Item::Status);
                }
                *conn = Some(c);
            }
            LinkEvent::Sent(pkid) => {
                if let Some(c) = conn.as_mut() {
                    match c.queued.pop_front() {
                        Some(item) => {
                            c.inflight.insert(pkid, item);
                        }
                        None => tracing::debug!(pkid, "uplink: unexpected outgoing publish"),
                    }
                }
            }
            LinkEvent::PubAck(pkid) => {
                let Some(c) = conn.as_mut() else { return };
                match c.inflight.remove(&pkid) {
                    Some(Item::Entry { key, enqueued_ms }) => {
                        let waited = now_ms().saturating_sub(enqueued_ms).max(0) as u64;
                        metrics
                            .publish_latency
                            .observe(Duration::from_millis(waited));
                        if let Err(e) = self.outbox.remove(&key) {
                            metrics.storage_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, "outbox: removing a delivered entry failed");
                        }
                    }
                    Some(Item::Status | Item::Side) => {}
                    None => tracing::debug!(pkid, "uplink: PUBACK for an unknown packet"),
                }
            }
            LinkEvent::Down(error) => {
                metrics.uplink_connected.store(false, Ordering::Relaxed);
                if let Some(c) = conn.take() {
                    let resend = c
                        .queued
                        .iter()
                        .chain(c.inflight.values())
                        .filter(|i| matches!(i, Item::Entry { .. }))
                        .count();
                    metrics
                        .republished
                        .fetch_add(resend as u64, Ordering::Relaxed);
                    tracing::warn!(
                        error = %error,
                        unacknowledged = resend,
                        "uplink lost; the outbox keeps everything until it is back"
                    );
                }
            }
            LinkEvent::Closed => {
                metrics.uplink_connected.store(false, Ordering::Relaxed);
                *conn = None;
            }
        }
    }

    /// Publish durable entries until the window is full.
    fn fill(&self, c: &mut Conn) {
        if c.outstanding() >= self.window {
            return;
        }
        let sendable = self.outbox.sendable();
        for kind in [Kind::Anomaly, Kind::Output] {
            let topics: Vec<(usize, u64)> = sendable
                .iter()
                .filter(|t| t.0 == kind)
                .map(|t| (t.1, t.2))
                .collect();
            if topics.is_empty() {
                continue;
            }
            // Round robin: one entry per topic per turn.
            let mut idle = 0;
            while c.outstanding() < self.window && idle < topics.len() {
                let (stream, upto) = topics[c.rr % topics.len()];
                c.rr = c.rr.wrapping_add(1);
                let after = c.cursors.get(&(kind, stream)).copied().unwrap_or(0);
                let entry = match self.outbox.next_entry(kind, stream, after, upto) {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        idle += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "outbox: reading an entry failed");
                        idle += 1;
                        continue;
                    }
                };
                idle = 0;
                let topic = match kind {
                    Kind::Anomaly => self.topics.anomaly(&entry.stream),
                    Kind::Output => self.topics.out(&entry.stream),
                };
                if c.client
                    .try_publish(topic, QoS::AtLeastOnce, false, entry.payload().to_vec())
                    .is_err()
                {
                    // The connection is going away; the next one resends.
                    return;
                }
                c.cursors.insert((kind, stream), entry.seq);
                c.queued.push_back(Item::Entry {
                    key: entry.key,
                    enqueued_ms: entry.enqueued_ms,
                });
            }
            if c.outstanding() >= self.window {
                return;
            }
        }
    }
}

async fn recv_side(side: &mut Option<mpsc::Receiver<SidePublish>>) -> Option<SidePublish> {
    match side {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Poll a connection's event loop, report, and rebuild it after errors.
async fn drive(
    options: MqttOptions,
    cap: usize,
    backoff: (u64, u64),
    events: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
) {
    let mut wait = backoff.0;
    let mut warned = false;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), cap);
        let error = loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                e = eventloop.poll() => e,
            };
            let ev = match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    wait = backoff.0;
                    warned = false;
                    LinkEvent::Connected(client.clone())
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => LinkEvent::PubAck(a.pkid),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    let _ = events.send(LinkEvent::Closed).await;
                    return;
                }
                Ok(_) => continue,
                Err(e) => break e,
            };
            if events.send(ev).await.is_err() {
                return;
            }
        };
        if events
            .send(LinkEvent::Down(error.to_string()))
            .await
            .is_err()
        {
            return;
        }
        drop(eventloop);
        if warned {
            tracing::debug!(error = %error, retry_in_ms = wait, "uplink still unreachable");
        } else {
            tracing::warn!(error = %error, retry_in_ms = wait,
                "uplink broker unreachable; retrying with backoff (the outbox holds everything)");
            warned = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        wait = (wait * 2).min(backoff.1);
    }
}
