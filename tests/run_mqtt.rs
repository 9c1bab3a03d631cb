//! `wasmgate run` end to end: the real binary against a real broker
//! (embedded rumqttd, or mosquitto with `WASMGATE_TEST_BROKER=host:port`).
//! Readings go in on MQTT (JSON and CBOR, good and malformed); processed
//! outputs and anomaly events come out on the documented topics; SIGTERM
//! stops it cleanly with the retained status "offline".

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::common::*;

struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &std::path::Path) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("WASMGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasmgate starts");
    Gateway { child }
}

fn sigterm(g: &mut Gateway) -> std::process::Output {
    let pid = g.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let child = std::mem::replace(&mut g.child, Command::new("true").spawn().unwrap());
    child.wait_with_output().expect("wasmgate exits")
}

async fn client(id: &str) -> (AsyncClient, EventLoop) {
    let (host, port) = broker();
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(opts, 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_in_outputs_and_anomalies_out() {
    let (host, port) = broker();
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("gw");
    let base = unique("in");
    let config = dir.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{gw}"

[mqtt]
host = "{host}"
port = {port}

[http]
listen = "127.0.0.1:0"
[storage]
path = "{state}"

[sources.json-in]
type = "mqtt"
topics = ["{base}/+/json"]
format = "json"
sensor_segment = 1

[sources.cbor-in]
type = "mqtt"
topics = ["{base}/+/cbor"]
format = "cbor"
sensor_segment = 1

[streams.room]
sensors = ["room-*"]

[[streams.room.processors]]
module = "{calibrate}"
config = {{ fields = {{ temp = {{ scale = 1.8, offset = 32.0 }} }} }}

[[streams.room.detectors]]
kind = "range"
fields = ["temp"]
max = 100.0
"#,
            state = dir.path().join("state").display(),
            calibrate = example("calibrate").display(),
        ),
    )
    .unwrap();

    let (sub, mut sub_ev) = client(&unique("sub")).await;
    sub.subscribe(format!("wasmgate/{gw}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    // The subscription is in place once the broker acknowledges it.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = sub_ev.poll().await {
                break;
            }
        }
    })
    .await
    .expect("suback");

    let mut gateway = start(&config);
    let (topic, payload) = next_publish(&mut sub_ev, 20).await;
    assert_eq!(topic, format!("wasmgate/{gw}/status"));
    assert_eq!(payload, br#"{"state":"online"}"#);

    let (publ, mut publ_ev) = client(&unique("pub")).await;
    tokio::spawn(async move { while publ_ev.poll().await.is_ok() {} });
    // Sources subscribe right after connecting (before announcing online
    // is not guaranteed): give the subscription a moment by publishing
    // until the first output appears.
    let good = br#"{"ts": 1714543200000, "temp": 20.0, "humidity": 40}"#.to_vec();
    let mut first = None;
    for _ in 0..50 {
        publ.publish(
            format!("{base}/room-1/json"),
            QoS::AtLeastOnce,
            false,
            good.clone(),
        )
        .await
        .unwrap();
        if let Ok((t, p)) =
            tokio::time::timeout(Duration::from_millis(200), next_publish(&mut sub_ev, 1)).await
        {
            first = Some((t, p));
            break;
        }
    }
    let (topic, payload) = first.expect("an output for the first reading");
    assert_eq!(topic, format!("wasmgate/{gw}/out/room"));
    let out: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(out["sensor"], "room-1");
    assert_eq!(out["ts"], 1714543200000i64);
    assert_eq!(out["fields"]["temp"], 68.0);
    assert_eq!(out["fields"]["humidity"], 40.0);
    // Drain duplicates of the warm-up publications.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), async {
        Ok::<_, ()>(next_publish(&mut sub_ev, 1).await)
    })
    .await
    {}

    // Malformed JSON is rejected; the next good CBOR reading still flows, and
    // its 45 °C (113 °F) trips the range detector.
    publ.publish(
        format!("{base}/room-2/json"),
        QoS::AtLeastOnce,
        false,
        b"{not json".to_vec(),
    )
    .await
    .unwrap();
    let cbor = serde_cbor::to_vec(
        &serde_json::json!({"sensor": "room-2", "ts": 1714543210000i64, "fields": {"temp": 45.0}}),
    )
    .unwrap();
    publ.publish(format!("{base}/room-2/cbor"), QoS::AtLeastOnce, false, cbor)
        .await
        .unwrap();
    let mut got_anomaly = None;
    let mut got_output = None;
    while got_anomaly.is_none() || got_output.is_none() {
        let (t, p) = next_publish(&mut sub_ev, 20).await;
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        if t == format!("wasmgate/{gw}/anomaly/room") {
            got_anomaly = Some(v);
        } else if t == format!("wasmgate/{gw}/out/room") && v["sensor"] == "room-2" {
            got_output = Some(v);
        }
    }
    let a = got_anomaly.unwrap();
    assert_eq!(a["stream"], "room");
    assert_eq!(a["sensor"], "room-2");
    assert_eq!(a["field"], "temp");
    assert_eq!(a["value"], 113.0);
    assert_eq!(a["detector"], "range");
    assert_eq!(a["ts"], 1714543210000i64);
    assert_eq!(got_output.unwrap()["fields"]["temp"], 113.0);

    let out = sigterm(&mut gateway);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clean exit: {log}");
    assert!(log.contains("malformed payload rejected"), "{log}");
    assert!(
        log.contains("reason=\"malformed-json\"") || log.contains("reason=malformed-json"),
        "{log}"
    );
    assert!(log.contains("wasmgate stopped"), "{log}");
    assert!(
        log.contains("source totals") && log.contains("\"malformed-json\": 1"),
        "{log}"
    );
    // The retained status says offline after a clean stop.
    loop {
        let (t, p) = next_publish(&mut sub_ev, 20).await;
        if t == format!("wasmgate/{gw}/status") {
            assert_eq!(p, br#"{"state":"offline"}"#);
            break;
        }
    }
}

/// Detector baselines survive a restart: after learning a stable signal and
/// a clean stop, a restarted gateway flags a spike at once (without the
/// saved state it would still be in its warm-up and stay silent), and does
/// not flag normal values (no burst of false alarms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_state_survives_a_restart() {
    let (host, port) = broker();
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("gw");
    let topic = format!("{}/probe/json", unique("in"));
    let config = dir.path().join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{gw}"
[mqtt]
host = "{host}"
port = {port}
[http]
listen = "127.0.0.1:0"
[storage]
path = "{state}"
[sources.in]
type = "mqtt"
topics = ["{topic}"]
sensor_segment = 1
[streams.s]
[[streams.s.detectors]]
kind = "ewma"
fields = ["v"]
warmup = 20
"#,
            state = dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let (sub, mut sub_ev) = client(&unique("sub")).await;
    sub.subscribe(format!("wasmgate/{gw}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (publ, mut publ_ev) = client(&unique("pub")).await;
    tokio::spawn(async move { while publ_ev.poll().await.is_ok() {} });
    let out_topic = format!("wasmgate/{gw}/out/s");
    let anomaly_topic = format!("wasmgate/{gw}/anomaly/s");

    // Publish `v` and return what came back for it: (outputs, anomalies).
    async fn feed(
        publ: &AsyncClient,
        ev: &mut EventLoop,
        topic: &str,
        out_topic: &str,
        anomaly_topic: &str,
        ts: i64,
        v: f64,
    ) -> bool {
        let payload = format!(r#"{{"ts": {ts}, "v": {v}}}"#);
        let mut flagged = false;
        // Retry until the output for this ts arrives (the source subscribes
        // shortly after the gateway announces itself).
        for _ in 0..50 {
            publ.publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            let got = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    let (t, p) = next_publish(ev, 5).await;
                    let j: serde_json::Value = serde_json::from_slice(&p).unwrap();
                    if t == anomaly_topic && j["ts"] == ts {
                        flagged = true;
                    }
                    if t == out_topic && j["ts"] == ts {
                        return;
                    }
                }
            })
            .await;
            if got.is_ok() {
                return flagged;
            }
        }
        panic!("no output for ts {ts}");
    }

    let mut g = start(&config);
    let mut ts = 1_714_543_200_000i64;
    for i in 0..40 {
        let v = 20.0 + if i % 2 == 0 { 0.1 } else { -0.1 };
        assert!(
            !feed(
                &publ,
                &mut sub_ev,
                &topic,
                &out_topic,
                &anomaly_topic,
                ts,
                v
            )
            .await
        );
        ts += 1000;
    }
    let out = sigterm(&mut g);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut g = start(&config);
    // Normal values right after the restart: no false alarm.
    for v in [20.1, 19.9] {
        assert!(
            !feed(
                &publ,
                &mut sub_ev,
                &topic,
                &out_topic,
                &anomaly_topic,
                ts,
                v
            )
            .await,
            "false alarm after restart"
        );
        ts += 1000;
    }
    // A spike: flagged at once, because the baseline was restored.
    assert!(
        feed(
            &publ,
            &mut sub_ev,
            &topic,
            &out_topic,
            &anomaly_topic,
            ts,
            25.0
        )
        .await,
        "spike flagged after restart"
    );
    let out = sigterm(&mut g);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("detector state restored"), "{log}");
}
