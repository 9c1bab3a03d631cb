//! The MQTT side of the gateway: connection options (TLS via rustls with the
//! `ring` provider, last will), the topic layout, and the ingest of MQTT
//! sources on the shared connection.
//!
//! Topics (with the default prefix `wasmgate`):
//!
//! | topic | what | QoS / retain |
//! |---|---|---|
//! | `wasmgate/<gateway>/status` | `{"state":"online"}` / `{"state":"offline"}` (last will of the uplink connection) | 1, retained |
//! | `wasmgate/<gateway>/out/<stream>` | processed readings, one JSON object per message, with `seq` and `boot` | 1 |
//! | `wasmgate/<gateway>/anomaly/<stream>` | anomaly events, JSON, with `seq` and `boot` | 1 |
//!
//! Two connections: the *ingest* connection subscribes for MQTT sources
//! (persistent session, manual acknowledgements), the *uplink* connection
//! ([`crate::outbox::uplink`]) publishes the outbox and the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::ratelimit::LogLimiter;
use crate::settings::{GatewayConfig, MqttConfig, MqttSourceConfig};
use crate::sources::decode::{self, DecodeContext};
use crate::sources::{Delivery, SourceBatch, SourceMetrics, deliver_counted, now_ms};

/// Payload of the retained status topic while running.
pub const STATUS_ONLINE: &str = r#"{"state":"online"}"#;
/// Payload of the retained status topic after a clean stop, and the last will.
pub const STATUS_OFFLINE: &str = r#"{"state":"offline"}"#;

/// Topic names of one gateway.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `<prefix>/<gateway id>/`.
    pub fn new(gateway: &GatewayConfig) -> Self {
        Topics {
            base: format!("{}/{}", gateway.topic_prefix, gateway.id),
        }
    }

    /// The retained status topic.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Processed readings of `stream`.
    pub fn out(&self, stream: &str) -> String {
        format!("{}/out/{stream}", self.base)
    }

    /// Anomaly events of `stream`.
    pub fn anomaly(&self, stream: &str) -> String {
        format!("{}/anomaly/{stream}", self.base)
    }
}

/// The connection could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    /// A TLS or password file could not be read.
    #[error("mqtt: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `client_cert` without `client_key` or the reverse.
    #[error("mqtt.tls: give both client_cert and client_key, or neither")]
    HalfClientAuth,
}

/// The ingest connection (MQTT sources): persistent session unless
/// `clean_session`, manual acknowledgements (sent by the group commit once
/// a message's results are on disk), no last will.
pub fn ingest_options(
    mqtt: &MqttConfig,
    gateway: &GatewayConfig,
) -> Result<MqttOptions, MqttSetupError> {
    let client_id = mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("wasmgate-{}", gateway.id));
    let mut opts = options(mqtt, client_id)?;
    opts.set_clean_session(mqtt.clean_session)
        .set_manual_acks(true);
    Ok(opts)
}

/// The uplink connection: client id `<ingest client id>-uplink` (or the
/// uplink broker's own `client_id`), and the retained "offline" last will
/// on the status topic.
pub fn uplink_options(
    broker: &MqttConfig,
    ingest: &MqttConfig,
    gateway: &GatewayConfig,
) -> Result<MqttOptions, MqttSetupError> {
    let mut opts = options(broker, second_client_id(broker, ingest, gateway, "uplink"))?;
    opts.set_last_will(LastWill::new(
        Topics::new(gateway).status(),
        STATUS_OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    Ok(opts)
}

/// The OTA connection, to the uplink broker: client id `<ingest client
/// id>-ota` (or `<uplink broker client_id>-ota`), clean session, incoming
/// packets up to `max_incoming` bytes, no last will.
pub fn ota_options(
    broker: &MqttConfig,
    ingest: &MqttConfig,
    gateway: &GatewayConfig,
    max_incoming: usize,
) -> Result<MqttOptions, MqttSetupError> {
    let id = match &broker.client_id {
        Some(id) if !std::ptr::eq(broker, ingest) => format!("{id}-ota"),
        _ => second_client_id(broker, ingest, gateway, "ota"),
    };
    let mut opts = options(broker, id)?;
    // Only bundles arrive here: nothing larger is worth reading.
    opts.set_clean_session(true)
        .set_max_packet_size(max_incoming, broker.max_packet_bytes);
    Ok(opts)
}

/// `<ingest client id>-<suffix>`, or the other broker's own `client_id`.
fn second_client_id(
    broker: &MqttConfig,
    ingest: &MqttConfig,
    gateway: &GatewayConfig,
    suffix: &str,
) -> String {
    if std::ptr::eq(broker, ingest) || broker.client_id.is_none() {
        format!(
            "{}-{suffix}",
            ingest
                .client_id
                .clone()
                .unwrap_or_else(|| format!("wasmgate-{}", gateway.id))
        )
    } else {
        broker.client_id.clone().unwrap_or_default()
    }
}

/// Options common to both connections: keep-alive, packet size,
/// credentials, TLS.
fn options(mqtt: &MqttConfig, client_id: String) -> Result<MqttOptions, MqttSetupError> {
    let mut opts = MqttOptions::new(client_id, mqtt.host.clone(), mqtt.port);
    opts.set_keep_alive(Duration::from_secs(mqtt.keepalive_secs))
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes);
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| MqttSetupError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let password = match (&mqtt.password, &mqtt.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => {
            let bytes = read(file)?;
            Some(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        }
        (None, None) => None,
    };
    if let Some(user) = &mqtt.username {
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if let Some(tls) = &mqtt.tls {
        install_crypto_provider();
        let ca = read(&tls.ca_file)?;
        let client_auth = match (&tls.client_cert, &tls.client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => return Err(MqttSetupError::HalfClientAuth),
        };
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(opts)
}

/// rumqttc is built without a default rustls provider (aws-lc needs cmake
/// and is hard to cross-build): install `ring` for the process, once.
pub fn install_crypto_provider() {
    // Fails only if a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One MQTT source as the connection task runs it.
#[derive(Debug)]
pub struct MqttIngest {
    name: Arc<str>,
    config: MqttSourceConfig,
    metrics: Arc<SourceMetrics>,
    log: LogLimiter,
    scratch: Vec<crate::reading::Reading>,
}

impl MqttIngest {
    /// The ingest of source `name`.
    pub fn new(name: &str, config: MqttSourceConfig) -> Self {
        MqttIngest {
            name: Arc::from(name),
            config,
            metrics: Arc::new(SourceMetrics::default()),
            log: LogLimiter::new(10, Duration::from_secs(60)),
            scratch: Vec::new(),
        }
    }

    /// The source's metrics.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// The topic filters to subscribe, with their QoS.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        let qos = if self.config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        self.config.topics.iter().map(move |t| (t.as_str(), qos))
    }

    /// Whether a message on `topic` is for this source.
    pub fn wants(&self, topic: &str) -> bool {
        self.config
            .topics
            .iter()
            .any(|f| rumqttc::matches(topic, f))
    }

    /// Decode one message and hand its readings on, with `ack` (the packet
    /// id of a QoS 1 message) so it is acknowledged once its results are on
    /// disk. A malformed QoS 1 message is passed on with no readings, so
    /// acknowledgements stay in arrival order.
    pub async fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        ack: Option<u16>,
        out: &mpsc::Sender<SourceBatch>,
    ) -> Delivery {
        use std::sync::atomic::Ordering;
        let received = Instant::now();
        self.metrics.received.fetch_add(1, Ordering::Relaxed);
        let sensor = match self.config.sensor_segment {
            Some(i) => topic.split('/').nth(i),
            None => Some(topic),
        };
        let mut ctx = DecodeContext::new(now_ms());
        ctx.sensor = sensor;
        ctx.field = &self.config.field;
        ctx.csv_columns = &self.config.csv_columns;
        self.scratch.clear();
        if let Err(e) = decode::decode(self.config.format, payload, &ctx, &mut self.scratch) {
            self.metrics.reject(e.reason());
            self.scratch.clear();
            let source = &*self.name;
            if self.log.allow(Instant::now(), |n| {
                tracing::warn!(
                    source,
                    suppressed = n,
                    "malformed payload warnings suppressed"
                );
            }) {
                tracing::warn!(source, topic, reason = e.reason(), error = %e, "malformed payload rejected");
            }
            if ack.is_none() {
                return Delivery::Queued;
            }
        }
        let batch = SourceBatch {
            source: self.name.clone(),
            readings: std::mem::take(&mut self.scratch),
            ack,
            received,
        };
        deliver_counted(out, batch, self.config.queue_full, &self.metrics).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(format: &str, extra: &str) -> MqttIngest {
        let cfg: MqttSourceConfig = toml::from_str(&format!(
            "topics = [\"sensors/+/data\"]\nformat = \"{format}\"\nsensor_segment = 1\n{extra}"
        ))
        .unwrap();
        cfg.validate().unwrap();
        MqttIngest::new("m", cfg)
    }

    #[tokio::test]
    async fn decodes_and_counts() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut s = source("json", "");
        assert!(s.wants("sensors/t1/data"));
        assert!(!s.wants("other/t1/data"));
        let r = s.handle("sensors/t1/data", br#"{"temp": 21.5}"#, Some(7), &tx);
        assert_eq!(r.await, Delivery::Queued);
        let b = rx.recv().await.unwrap();
        assert_eq!(b.readings[0].sensor, "t1");
        assert_eq!(b.readings[0].field("temp"), Some(21.5));
        assert_eq!(b.ack, Some(7));
        // Malformed at QoS 0: counted, nothing passed on.
        assert_eq!(
            s.handle("sensors/t1/data", b"{oops", None, &tx).await,
            Delivery::Queued
        );
        assert!(rx.try_recv().is_err());
        // Malformed at QoS 1: an empty batch carries the ack, in order.
        s.handle("sensors/t1/data", b"{oops", Some(8), &tx).await;
        let b = rx.recv().await.unwrap();
        assert!(b.readings.is_empty());
        assert_eq!(b.ack, Some(8));
        assert_eq!(s.metrics().rejected_of("malformed-json"), 2);
        use std::sync::atomic::Ordering;
        assert_eq!(s.metrics().received.load(Ordering::Relaxed), 3);
        assert_eq!(s.metrics().decoded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn topics() {
        let g = GatewayConfig {
            id: "gw1".into(),
            topic_prefix: "wasmgate".into(),
        };
        let t = Topics::new(&g);
        assert_eq!(t.status(), "wasmgate/gw1/status");
        assert_eq!(t.out("gh"), "wasmgate/gw1/out/gh");
        assert_eq!(t.anomaly("gh"), "wasmgate/gw1/anomaly/gh");
    }
}
