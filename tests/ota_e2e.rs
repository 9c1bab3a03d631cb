//! Signed OTA updates end to end: the real `wasmgate run` binary against a
//! real broker ([`broker`]: embedded rumqttd, or `WASMGATE_TEST_BROKER`),
//! readings in on an MQTT source, outputs observed on
//! `wasmgate/<gw>/out/s`, bundles and key sets published on the gateway's
//! (or its fleet's) `ota` topic, and every outcome awaited as the retained
//! state the gateway publishes on `wasmgate/<gw>/modules/p/state` or
//! `wasmgate/<gw>/ota/state`.
//!
//! Versions are told apart by their outputs (as in `ota_swap.rs`): the
//! processor `p` starts as the echo fixture (`n` → `n`); "v2" is the
//! `calibrate` example under the processor config `offset = 1e6`
//! (`n` → `n + 1e6`); "flaky" is echo that traps from its second call.
//!
//! - `hostile_bundles_are_rejected_with_specific_reasons`: threshold 2; a
//!   valid bundle activates v2, then 18 hostile ones are each refused with
//!   their exact reason while the state keeps naming v2 (version, release,
//!   sha256), and v2 still produces the outputs.
//! - `cli_keygen_sign_push_swaps_and_a_restart_keeps_it`: keys, key set and
//!   bundle made with the CLI, pushed with `wasmgate push` while readings
//!   flow at ~100/s: every reading gives exactly one output, the outputs
//!   switch from v1 to v2 exactly once; prints the activation time; after a
//!   SIGTERM and a restart v2 is `restored` and still runs.
//! - `release_key_rotation_over_mqtt`: key sets pushed over MQTT drop and
//!   then revoke release key A; bundles by A are refused (`unknown-key`,
//!   then `revoked-key`), an old key set is refused, a bundle by the new key
//!   C (pushed to the fleet topic) activates.
//! - `a_version_that_traps_after_activation_is_rolled_back`: flaky is
//!   activated on top of v2 with readings flowing; two traps roll it back,
//!   the state says so and names v2 again, outputs are v2's again, and no
//!   reading is lost or processed twice.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use sha2::Digest;
use tokio::sync::watch;
use wasmgate::ota::bundle::{
    self, KeySet, KeySetKey, Manifest, Scope, Target, WireSignature, manifest_message,
};
use wasmgate::ota::keys;
use wasmgate::ota::verify::unix_now;
use wasmgate::runtime::abi::ABI_VERSION;

use crate::common::*;
use crate::mosquitto::{Gateway, Publisher, XorShift};

/// v2's offset: its output for reading `n` is `n + OFFSET`.
const OFFSET: f64 = 1_000_000.0;
/// The log line of a successful swap.
const ACTIVE: &str = "OTA: new version active";
/// The log line of the MQTT source being ready.
const SUBSCRIBED: &str = "MQTT sources subscribed";
/// Deadline for one awaited event.
const SECS: u64 = 30;

/// The ed25519 group order ℓ, little-endian (to malleate a signature).
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

// ------------------------------------------------------------------ bytes

fn calibrate() -> Vec<u8> {
    std::fs::read(example("calibrate")).unwrap()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn id(key: &SigningKey) -> String {
    keys::key_id(&key.verifying_key())
}

fn key() -> SigningKey {
    keys::generate().unwrap()
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `module` with a custom section `name` of `len` bytes appended (still a
/// valid module, `len` + a few bytes longer).
fn with_custom_section(module: &[u8], name: &str, len: usize) -> Vec<u8> {
    let mut content = Vec::with_capacity(len + name.len() + 5);
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend((0..len).map(|i| (i % 251) as u8));
    let mut out = module.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// A manifest for processor `p` that fits any gateway's board and ABI,
/// issued a minute ago, valid for an hour, listing `signers`.
fn manifest(
    module: &[u8],
    version: &str,
    release: u64,
    scope: Scope,
    signers: &[&SigningKey],
) -> Manifest {
    let now = unix_now();
    Manifest {
        name: "p".into(),
        version: version.into(),
        release,
        sha256: sha2::Sha256::digest(module).into(),
        length: module.len() as u64,
        target: Target {
            abi: ABI_VERSION,
            board: "any".into(),
        },
        scope,
        issued_at: now - 60,
        expires: now + 3600,
        fuel: None,
        memory: None,
        key_ids: signers.iter().map(|k| id(k)).collect(),
    }
}

/// `m` over `module`, signed by `signers` in order.
fn signed(m: &Manifest, module: &[u8], signers: &[&SigningKey]) -> Vec<u8> {
    let keys: Vec<SigningKey> = signers.iter().map(|k| (*k).clone()).collect();
    bundle::sign_bundle(m, module, &keys)
}

/// One signature of `m` by `key`, as carried.
fn signature(m: &Manifest, key: &SigningKey) -> WireSignature {
    WireSignature {
        key_id: id(key),
        sig: key
            .sign(&manifest_message(&m.to_bytes()))
            .to_bytes()
            .to_vec(),
    }
}

/// A key set of `keys`, revoking `revoked`, valid for a day.
fn keyset(
    version: u64,
    keys: &[&SigningKey],
    revoked: &[&SigningKey],
    root: &SigningKey,
) -> Vec<u8> {
    let now = unix_now();
    let ks = KeySet {
        version,
        issued_at: now - 60,
        expires: now + 86_400,
        keys: keys
            .iter()
            .map(|k| KeySetKey::new(&k.verifying_key()))
            .collect(),
        revoked: revoked.iter().map(|k| id(k)).collect(),
    };
    bundle::sign_keyset(&ks, std::slice::from_ref(root))
}

// ----------------------------------------------------------------- gateway

/// One gateway's files and names.
struct Setup {
    dir: tempfile::TempDir,
    gw: String,
    fleet: String,
    config: PathBuf,
    /// Where readings are published.
    readings: String,
    /// The configured v1 (echo) bytes.
    v1: Vec<u8>,
}

impl Setup {
    /// A gateway reading `<base>/+/data` into stream `s` whose one
    /// processor `p` is the echo fixture, trusting `root_pub` (hex) and the
    /// key set `keyset`; `ota` adds `[ota]` lines.
    fn new(root_pub: &str, keyset: &[u8], ota: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let gw = unique("gw");
        let fleet = unique("fleet");
        let base = unique("ota-in");
        let (host, port) = broker();
        let v1 = echo_module();
        let v1_path = dir.path().join("p.wasm");
        std::fs::write(&v1_path, &v1).unwrap();
        let keyset_path = dir.path().join("keyset.cbor");
        std::fs::write(&keyset_path, keyset).unwrap();
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
reconnect_min_ms = 100
reconnect_max_ms = 1000

[http]
listen = "127.0.0.1:0"
[storage]
path = "{state}"

[sources.in]
type = "mqtt"
topics = ["{base}/+/data"]
format = "json"
sensor_segment = 1
qos = 1

[streams.s]
sensors = ["*"]

[[streams.s.processors]]
module = "{v1}"
name = "p"
config = {{ fields = {{ n = {{ scale = 1.0, offset = {OFFSET:.1} }} }} }}

[ota]
root_keys = ["{root_pub}"]
keyset_file = "{keyset}"
fleet = "{fleet}"
{ota}
"#,
                state = dir.path().join("state").display(),
                v1 = v1_path.display(),
                keyset = keyset_path.display(),
            ),
        )
        .unwrap();
        Setup {
            dir,
            gw,
            fleet,
            config,
            readings: format!("{base}/sensor-1/data"),
            v1,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ota_topic(&self) -> String {
        format!("wasmgate/{}/ota", self.gw)
    }

    fn fleet_topic(&self) -> String {
        format!("wasmgate/fleet/{}/ota", self.fleet)
    }

    /// Start the gateway and await it ready: the MQTT source subscribed and
    /// the retained state of `p` (published after the OTA subscriptions on
    /// the same connection) saying `outcome`.
    async fn start(&self, mon: &mut Monitor, outcome: &str) -> (Gateway, Value) {
        let mut gw = Gateway::start(&self.config);
        let state = mon.module_state().await;
        assert_eq!(state["outcome"], outcome, "{state}");
        gw.wait_for_log(SUBSCRIBED, Duration::from_secs(SECS)).await;
        (gw, state)
    }
}

// ----------------------------------------------------------------- monitor

/// One publication: topic and payload.
type Publication = (String, Vec<u8>);

/// A subscriber to `wasmgate/<gw>/#` recording every publication in arrival
/// order (outputs, module and OTA state), which also publishes readings
/// and bundles.
struct Monitor {
    client: AsyncClient,
    gw: String,
    record: Arc<Mutex<Vec<Publication>>>,
    signal: watch::Receiver<usize>,
    /// Per topic: messages before this index were returned already.
    cursors: HashMap<String, usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One output: its `seq` and `fields.n`.
type Out = (u64, f64);

impl Monitor {
    /// Connect, subscribe, and return once the broker acknowledged it.
    async fn start(gw: &str) -> Monitor {
        let (host, port) = broker();
        let mut opts = MqttOptions::new(unique("ota-e2e"), host, port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(100);
        let (client, mut ev) = AsyncClient::new(opts, 100);
        client
            .subscribe(format!("wasmgate/{gw}/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let record = Arc::new(Mutex::new(Vec::new()));
        let (tx, signal) = watch::channel(0usize);
        let (suback_tx, suback_rx) = tokio::sync::oneshot::channel();
        let rec = record.clone();
        let task = tokio::spawn(async move {
            let mut suback = Some(suback_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = suback.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let n = {
                            let mut r = rec.lock().unwrap();
                            r.push((p.topic.clone(), p.payload.to_vec()));
                            r.len()
                        };
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), suback_rx)
            .await
            .expect("monitor: SUBACK within 10 s")
            .expect("monitor task alive");
        Monitor {
            client,
            gw: gw.to_string(),
            record,
            signal,
            cursors: HashMap::new(),
            task,
        }
    }

    /// Await `check` (on everything received so far, again after each new
    /// publication) returning `Some`; panics after `secs` with the
    /// non-output publications received.
    async fn wait<T>(
        &self,
        secs: u64,
        what: &str,
        mut check: impl FnMut(&[Publication]) -> Option<T>,
    ) -> T {
        let mut rx = self.signal.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            rx.borrow_and_update();
            if let Some(v) = check(&self.record.lock().unwrap()) {
                return v;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let r = self.record.lock().unwrap();
                let others: Vec<String> = r
                    .iter()
                    .filter(|(t, _)| !t.contains("/out/") && !t.ends_with("/ota"))
                    .map(|(t, p)| format!("{t}: {}", String::from_utf8_lossy(p)))
                    .collect();
                panic!(
                    "{what}: not within {secs} s; {} publications, state ones:\n{}",
                    r.len(),
                    others.join("\n")
                );
            }
        }
    }

    /// The next publication on `topic` (after the one returned last), as
    /// JSON.
    async fn next_on(&mut self, topic: String) -> Value {
        let from = self.cursors.get(&topic).copied().unwrap_or(0);
        let (i, v) = self
            .wait(SECS, &format!("a publication on {topic}"), |r| {
                r.iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, (t, _))| *t == topic)
                    .map(|(i, (_, p))| (i, serde_json::from_slice::<Value>(p)))
            })
            .await;
        self.cursors.insert(topic, i + 1);
        v.expect("state is JSON")
    }

    /// The next state of processor `p`.
    async fn module_state(&mut self) -> Value {
        self.next_on(format!("wasmgate/{}/modules/p/state", self.gw))
            .await
    }

    /// The next OTA state that names no module.
    async fn ota_state(&mut self) -> Value {
        self.next_on(format!("wasmgate/{}/ota/state", self.gw))
            .await
    }

    /// Every output so far: (seq, fields.n), in arrival order.
    fn outputs(&self) -> Vec<Out> {
        outputs_of(&self.record.lock().unwrap(), &self.gw)
    }

    /// Await `check` on the outputs.
    async fn wait_outputs<T>(
        &self,
        secs: u64,
        what: &str,
        mut check: impl FnMut(&[Out]) -> Option<T>,
    ) -> T {
        let gw = self.gw.clone();
        self.wait(secs, what, |r| check(&outputs_of(r, &gw))).await
    }

    /// Publish `payload` at QoS 1 (not retained).
    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// Publish reading `n` on `topic`.
    async fn reading(&self, topic: &str, n: i64) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        self.publish(topic, format!(r#"{{"n": {n}, "ts": {ts}}}"#).into_bytes())
            .await;
    }

    /// Publish reading `n` and await its output; returns the output value.
    async fn process(&self, topic: &str, n: i64) -> f64 {
        self.reading(topic, n).await;
        self.wait_outputs(SECS, &format!("the output of reading {n}"), |outs| {
            outs.iter()
                .map(|o| o.1)
                .find(|&v| v == n as f64 || v == n as f64 + OFFSET)
        })
        .await
    }
}

fn outputs_of(record: &[Publication], gw: &str) -> Vec<Out> {
    let topic = format!("wasmgate/{gw}/out/s");
    record
        .iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, p)| {
            let v: Value = serde_json::from_slice(p).expect("output is JSON");
            (
                v["seq"].as_u64().expect("output seq"),
                v["fields"]["n"].as_f64().expect("output fields.n"),
            )
        })
        .collect()
}

/// Which version produced an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// `n` → `n`: echo (v1, flaky) or a failed batch passed through.
    Same,
    /// `n` → `n + 1e6`: v2.
    Offset,
}

/// Outputs per reading `n` (an output repeated with the same `seq` is one
/// output delivered twice and counted once; a `seq` repeated with other
/// content fails).
fn per_reading(outs: &[Out]) -> BTreeMap<i64, Vec<By>> {
    let mut by_seq: BTreeMap<u64, f64> = BTreeMap::new();
    for &(seq, v) in outs {
        if let Some(&first) = by_seq.get(&seq) {
            assert_eq!(first, v, "seq {seq} carried {first}, then {v}");
        }
        by_seq.insert(seq, v);
    }
    let mut per: BTreeMap<i64, Vec<By>> = BTreeMap::new();
    for v in by_seq.into_values() {
        assert_eq!(v.fract(), 0.0, "output {v} is no reading's");
        let (n, by) = if v >= OFFSET / 2.0 {
            ((v - OFFSET) as i64, By::Offset)
        } else {
            (v as i64, By::Same)
        };
        per.entry(n).or_default().push(by);
    }
    per
}

/// Check every reading of `0..n` produced exactly one output and nothing
/// else came out; return which version produced each, in reading order.
#[track_caller]
fn exactly_once(per: &BTreeMap<i64, Vec<By>>, n: i64) -> Vec<By> {
    let lost: Vec<i64> = (0..n).filter(|i| !per.contains_key(i)).collect();
    assert!(lost.is_empty(), "readings without output: {lost:?}");
    let twice: Vec<(&i64, &Vec<By>)> = per.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "readings processed more than once: {twice:?}"
    );
    let unexpected: Vec<&i64> = per.keys().filter(|&&i| !(0..n).contains(&i)).collect();
    assert!(
        unexpected.is_empty(),
        "outputs of no reading: {unexpected:?}"
    );
    per.values().map(|v| v[0]).collect()
}

/// Runs of the same version in reading order: (version, first n, count).
fn runs(versions: &[By]) -> Vec<(By, usize, usize)> {
    let mut out: Vec<(By, usize, usize)> = Vec::new();
    for (n, &by) in versions.iter().enumerate() {
        match out.last_mut() {
            Some(last) if last.0 == by => last.2 += 1,
            _ => out.push((by, n, 1)),
        }
    }
    out
}

/// Assert a module state message: `outcome`, `reason`, and the active
/// version it names.
#[track_caller]
fn assert_state(s: &Value, outcome: &str, reason: &str, active: (&str, u64, &str)) {
    assert_eq!(s["name"], "p", "{s}");
    assert_eq!(s["outcome"], outcome, "{s}");
    assert_eq!(s["reason"], reason, "{s}");
    assert_eq!(s["version"], active.0, "active version in {s}");
    assert_eq!(s["release"], active.1, "active release in {s}");
    assert_eq!(s["sha256"], active.2, "active sha256 in {s}");
    assert!(s["at"].as_i64().is_some_and(|t| t > 0), "{s}");
}

/// `activation_ms=…` of the last activation in `log`.
fn activation_ms(log: &str) -> f64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(ACTIVE))
        .expect("an activation log line");
    let at = line
        .find("activation_ms=")
        .expect("activation_ms in the line")
        + 14;
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap_or_else(|e| panic!("activation_ms in {line:?}: {e}"))
}

// ---------------------------------------------------------------- hostile

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bundles_are_rejected_with_specific_reasons() {
    let root = key();
    let (a, b, revoked, stranger) = (key(), key(), key(), key());
    let ks = keyset(1, &[&a, &b], &[&revoked], &root);
    let setup = Setup::new(
        &hex::encode(root.verifying_key().as_bytes()),
        &ks,
        "threshold = 2\nboard = \"pi4\"\nmax_bundle_bytes = 65536\n",
    );
    let gw_scope = || Scope::Gateway(setup.gw.clone());
    let mut mon = Monitor::start(&setup.gw).await;
    let (mut gw, state) = setup.start(&mut mon, "running").await;
    assert_state(
        &state,
        "running",
        "",
        ("configured", 0, &sha_hex(&setup.v1)),
    );
    gw.wait_for_log(
        "OTA on: listening for signed bundles",
        Duration::from_secs(SECS),
    )
    .await;
    assert_eq!(mon.process(&setup.readings, 1).await, 1.0, "v1 runs");

    // A valid bundle: v2, release 5, signed by A and B.
    let v2 = calibrate();
    let v2_sha = sha_hex(&v2);
    let good = manifest(&v2, "2.0", 5, gw_scope(), &[&a, &b]);
    mon.publish(&setup.ota_topic(), signed(&good, &v2, &[&a, &b]))
        .await;
    let s = mon.module_state().await;
    assert_state(&s, "activated", "", ("2.0", 5, &v2_sha));
    assert_eq!(mon.process(&setup.readings, 2).await, 2.0 + OFFSET);
    let active = ("2.0", 5, v2_sha.as_str());

    // Everything below would be accepted but for the one flaw named; the
    // base is a valid release 6.
    let next = |release| manifest(&v2, "2.1", release, gw_scope(), &[&a, &b]);
    let m6 = next(6);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    // Signatures.
    let mut sig_a = signature(&m6, &a);
    sig_a.sig[0] ^= 0x01;
    cases.push((
        "bad signature (a flipped bit)",
        bundle::encode_bundle(&m6.to_bytes(), &[sig_a, signature(&m6, &b)], &v2),
        "bad-signature",
    ));
    let m = manifest(&v2, "2.1", 6, gw_scope(), &[&stranger, &a]);
    cases.push((
        "unknown key (and a valid second)",
        signed(&m, &v2, &[&stranger, &a]),
        "unknown-key",
    ));
    let m = manifest(&v2, "2.1", 6, gw_scope(), &[&a, &revoked]);
    cases.push((
        "revoked key",
        signed(&m, &v2, &[&a, &revoked]),
        "revoked-key",
    ));
    let m = manifest(&v2, "2.1", 6, gw_scope(), &[&a]);
    cases.push((
        "below threshold (A only)",
        signed(&m, &v2, &[&a]),
        "below-threshold",
    ));
    let mut malleated = signature(&m6, &a);
    let mut carry = 0u16;
    for (s, l) in malleated.sig[32..].iter_mut().zip(GROUP_ORDER) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + l fits 256 bits");
    cases.push((
        "non-canonical signature (S + l)",
        bundle::encode_bundle(&m6.to_bytes(), &[malleated, signature(&m6, &b)], &v2),
        "non-canonical-signature",
    ));

    // Release counter and time.
    cases.push((
        "rollback (release 4)",
        signed(&next(4), &v2, &[&a, &b]),
        "rollback",
    ));
    let mut m = next(5);
    m.issued_at += 1;
    cases.push((
        "replay (release 5, other bytes)",
        signed(&m, &v2, &[&a, &b]),
        "replay",
    ));
    let mut m = next(6);
    m.issued_at = unix_now() - 7200;
    m.expires = unix_now() - 3600;
    cases.push(("expired", signed(&m, &v2, &[&a, &b]), "expired"));

    // The module.
    let mut altered = v2.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x55;
    cases.push((
        "hash mismatch (module byte altered)",
        signed(&m6, &altered, &[&a, &b]),
        "hash-mismatch",
    ));
    let mut longer = v2.clone();
    longer.push(0);
    cases.push((
        "length mismatch (module byte appended)",
        signed(&m6, &longer, &[&a, &b]),
        "length-mismatch",
    ));

    // Target, scope, policy.
    let mut m = next(6);
    m.target.abi = ABI_VERSION + 1;
    cases.push(("wrong ABI", signed(&m, &v2, &[&a, &b]), "wrong-target"));
    let mut m = next(6);
    m.target.board = "esp32".into();
    cases.push(("wrong board", signed(&m, &v2, &[&a, &b]), "wrong-target"));
    let mut m = next(6);
    m.scope = Scope::Gateway(unique("other-gw"));
    cases.push((
        "wrong gateway id",
        signed(&m, &v2, &[&a, &b]),
        "wrong-scope",
    ));
    let mut m = next(6);
    m.fuel = Some(u64::MAX);
    cases.push((
        "more fuel than local policy",
        signed(&m, &v2, &[&a, &b]),
        "exceeds-policy",
    ));
    for (what, bytes, reason) in cases {
        mon.publish(&setup.ota_topic(), bytes).await;
        let s = mon.module_state().await;
        eprintln!("hostile: {what} -> {} ({})", s["reason"], s["message"]);
        assert_state(&s, "rejected", reason, active);
        assert!(
            s["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {s}"
        );
    }

    // Wrong fleet, through the fleet topic (which this gateway listens to).
    let mut m = next(6);
    m.scope = Scope::Fleet(unique("f2"));
    mon.publish(&setup.fleet_topic(), signed(&m, &v2, &[&a, &b]))
        .await;
    let s = mon.module_state().await;
    eprintln!("hostile: wrong fleet -> {} ({})", s["reason"], s["message"]);
    assert_state(&s, "rejected", "wrong-scope", active);
    assert!(s["message"].as_str().unwrap().contains("fleet"), "{s}");

    // Refused before the name is read: reported on `ota/state`.
    let padded = with_custom_section(&v2, "padding", 20_000);
    assert!(padded.len() > 65_536);
    let m = manifest(&padded, "2.1", 6, gw_scope(), &[&a, &b]);
    let too_large = signed(&m, &padded, &[&a, &b]);
    let mut rng = XorShift::new(0x07a_e2e);
    let random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    let whole = signed(&m6, &v2, &[&a, &b]);
    let truncated = whole[..whole.len() / 2].to_vec();
    for (what, bytes, reason) in [
        ("too large (module > 64 KiB)", too_large, "too-large"),
        ("truncated CBOR", truncated, "malformed"),
        ("random bytes", random, "malformed"),
    ] {
        mon.publish(&setup.ota_topic(), bytes).await;
        let s = mon.ota_state().await;
        eprintln!("hostile: {what} -> {} ({})", s["reason"], s["message"]);
        assert_eq!(s["outcome"], "rejected", "{what}: {s}");
        assert_eq!(s["reason"], reason, "{what}: {s}");
    }

    // Still v2, and only the one swap happened.
    assert_eq!(mon.process(&setup.readings, 3).await, 3.0 + OFFSET);
    assert_eq!(gw.log_count(ACTIVE), 1, "one activation");
    let rejected = gw.log_count("OTA: bundle rejected");
    assert_eq!(rejected, 18, "every hostile bundle logged as rejected");
    let log = gw.sigterm().await;
    assert!(!log.contains("rolled back"), "{log}");
}

// -------------------------------------------------------------------- CLI

fn wasmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .output()
        .expect("wasmgate runs")
}

#[track_caller]
fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_sign_push_swaps_and_a_restart_keeps_it() {
    const N: i64 = 600;
    let keys = tempfile::tempdir().unwrap();
    let root = keys.path().join("root.key");
    let release = keys.path().join("release.key");
    ok(&wasmgate(&["keygen", "--out", s(&root)]));
    ok(&wasmgate(&["keygen", "--out", s(&release)]));
    let ks_file = keys.path().join("keyset.cbor");
    ok(&wasmgate(&[
        "keyset",
        "sign",
        "--root-key",
        s(&root),
        "--release-key",
        s(&keys.path().join("release.key.pub")),
        "--version",
        "1",
        "--out",
        s(&ks_file),
    ]));
    let root_pub = std::fs::read_to_string(keys.path().join("root.key.pub")).unwrap();
    let setup = Setup::new(root_pub.trim(), &std::fs::read(&ks_file).unwrap(), "");
    let bundle_file = setup.path("p-2.cbor");
    let module = example("calibrate");
    let sign_out = ok(&wasmgate(&[
        "sign",
        "--key",
        s(&release),
        "--module",
        s(&module),
        "--name",
        "p",
        "--version",
        "2.0.0",
        "--release",
        "1",
        "--gateway",
        &setup.gw,
        "--out",
        s(&bundle_file),
    ]));
    eprintln!("sign: {}", sign_out.trim());
    let verdict = ok(&wasmgate(&[
        "verify",
        s(&bundle_file),
        "--config",
        s(&setup.config),
    ]));
    assert!(verdict.contains("verdict: accepted"), "{verdict}");

    let mut mon = Monitor::start(&setup.gw).await;
    let (mut gw, state) = setup.start(&mut mon, "running").await;
    assert_state(
        &state,
        "running",
        "",
        ("configured", 0, &sha_hex(&setup.v1)),
    );

    // Readings at ~100/s; the bundle is pushed a quarter of the way in.
    let (host, port) = broker();
    let publisher = Publisher::start(
        &host,
        port,
        setup.readings.clone(),
        0..N,
        Duration::from_millis(10),
    )
    .await;
    publisher
        .wait_sent(N as usize / 4, Duration::from_secs(SECS))
        .await;
    let args: Vec<String> = [
        "push",
        s(&bundle_file),
        "--host",
        &host,
        "--port",
        &port.to_string(),
        "--gateway",
        &setup.gw,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let pushed_at = publisher.sent();
    let pushed = tokio::task::spawn_blocking(move || {
        wasmgate(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let pushed = ok(&pushed);
    assert!(pushed.contains("acknowledged"), "{pushed}");
    let v2_sha = sha_hex(&calibrate());
    let s2 = mon.module_state().await;
    let active_at = publisher.sent();
    assert_state(&s2, "activated", "", ("2.0.0", 1, &v2_sha));
    gw.wait_for_log(ACTIVE, Duration::from_secs(SECS)).await;
    let ms = activation_ms(&gw.log());

    publisher.wait_done(Duration::from_secs(60)).await;
    let per = mon
        .wait_outputs(60, &format!("outputs of all {N} readings"), |outs| {
            let per = per_reading(outs);
            ((0..N).all(|n| per.contains_key(&n))).then_some(per)
        })
        .await;
    let outs = mon.outputs().len();
    let versions = exactly_once(&per, N);
    let r = runs(&versions);
    eprintln!(
        "cli swap: {N} readings in, {outs} outputs out; pushed at reading ~{pushed_at}, \
         activated by reading ~{active_at}; runs {r:?}; activation_ms={ms} \
         (bundle received -> new version active, gateway log); state message: {}",
        s2["message"]
    );
    assert_eq!(r.len(), 2, "exactly one switch, v1 then v2: {r:?}");
    assert_eq!((r[0].0, r[1].0), (By::Same, By::Offset), "{r:?}");
    // Readings handed to the publisher after the activation was announced
    // were processed after the swap.
    let switched = r[1].1;
    assert!(
        switched <= active_at,
        "switch at reading {switched}, active by reading {active_at}"
    );
    drop(publisher);

    // A restart brings v2 back from storage.
    let log = gw.sigterm().await;
    assert!(log.contains("wasmgate stopped"), "{log}");
    let (gw, state) = setup.start(&mut mon, "restored").await;
    assert_state(&state, "restored", "", ("2.0.0", 1, &v2_sha));
    for n in N..N + 3 {
        assert_eq!(mon.process(&setup.readings, n).await, n as f64 + OFFSET);
    }
    let log = gw.sigterm().await;
    assert!(log.contains("OTA: restored the active version"), "{log}");
}

// --------------------------------------------------------------- rotation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_key_rotation_over_mqtt() {
    let root = key();
    let (a, c) = (key(), key());
    let setup = Setup::new(
        &hex::encode(root.verifying_key().as_bytes()),
        &keyset(1, &[&a], &[], &root),
        "",
    );
    let mut mon = Monitor::start(&setup.gw).await;
    let (gw, _) = setup.start(&mut mon, "running").await;
    let v1_sha = sha_hex(&setup.v1);
    let configured = ("configured", 0, v1_sha.as_str());
    let v2 = calibrate();
    let gw_scope = Scope::Gateway(setup.gw.clone());
    let by_a = signed(
        &manifest(&v2, "2.0", 1, gw_scope.clone(), &[&a]),
        &v2,
        &[&a],
    );

    // Key set 2 drops A and adds C.
    let ks2 = keyset(2, &[&c], &[], &root);
    mon.publish(&setup.ota_topic(), ks2.clone()).await;
    let s = mon.ota_state().await;
    assert_eq!(s["outcome"], "keyset-updated", "{s}");
    assert_eq!(s["message"], "key set version 2", "{s}");
    mon.publish(&setup.ota_topic(), by_a.clone()).await;
    let s = mon.module_state().await;
    assert_state(&s, "rejected", "unknown-key", configured);
    assert!(s["message"].as_str().unwrap().contains(&id(&a)), "{s}");

    // Key set 3 also revokes A: now A's bundle names the revocation.
    mon.publish(&setup.ota_topic(), keyset(3, &[&c], &[&a], &root))
        .await;
    let s = mon.ota_state().await;
    assert_eq!(s["outcome"], "keyset-updated", "{s}");
    mon.publish(&setup.ota_topic(), by_a).await;
    let s = mon.module_state().await;
    assert_state(&s, "rejected", "revoked-key", configured);

    // An older key set (which did not revoke A) is refused.
    mon.publish(&setup.ota_topic(), ks2).await;
    let s = mon.ota_state().await;
    assert_eq!(s["outcome"], "rejected", "{s}");
    assert_eq!(s["reason"], "keyset-rollback", "{s}");
    // A key set signed by a release key instead of a root key is refused.
    mon.publish(&setup.ota_topic(), keyset(4, &[&a, &c], &[], &c))
        .await;
    let s = mon.ota_state().await;
    assert_eq!(s["reason"], "unknown-key", "{s}");

    // C signs; the bundle goes to the fleet.
    assert_eq!(mon.process(&setup.readings, 1).await, 1.0, "still v1");
    let fleet = Scope::Fleet(setup.fleet.clone());
    let by_c = signed(&manifest(&v2, "2.0", 1, fleet, &[&c]), &v2, &[&c]);
    mon.publish(&setup.fleet_topic(), by_c).await;
    let s = mon.module_state().await;
    assert_state(&s, "activated", "", ("2.0", 1, &sha_hex(&v2)));
    assert_eq!(mon.process(&setup.readings, 2).await, 2.0 + OFFSET);
    let log = gw.sigterm().await;
    assert_eq!(log.matches("OTA: release key set updated").count(), 2);
}

// --------------------------------------------------------------- rollback

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_traps_after_activation_is_rolled_back() {
    const N: i64 = 1500;
    let root = key();
    let a = key();
    let setup = Setup::new(
        &hex::encode(root.verifying_key().as_bytes()),
        &keyset(1, &[&a], &[], &root),
        "rollback_failures = 2\nwatch_secs = 600\n",
    );
    let mut mon = Monitor::start(&setup.gw).await;
    let (mut gw, _) = setup.start(&mut mon, "running").await;
    let (host, port) = broker();
    let publisher = Publisher::start(
        &host,
        port,
        setup.readings.clone(),
        0..N,
        Duration::from_millis(10),
    )
    .await;
    publisher.wait_sent(100, Duration::from_secs(SECS)).await;

    // v2 first, so that the rollback is visible in the outputs.
    let v2 = calibrate();
    let v2_sha = sha_hex(&v2);
    let gw_scope = Scope::Gateway(setup.gw.clone());
    let m = manifest(&v2, "2.0", 1, gw_scope.clone(), &[&a]);
    mon.publish(&setup.ota_topic(), signed(&m, &v2, &[&a]))
        .await;
    let s = mon.module_state().await;
    assert_state(&s, "activated", "", ("2.0", 1, &v2_sha));
    mon.wait_outputs(SECS, "a v2 output", |outs| {
        outs.iter().find(|o| o.1 >= OFFSET).map(drop)
    })
    .await;

    let flaky = wat_module(1, TRAPS_FROM_SECOND_CALL);
    let m = manifest(&flaky, "flaky", 2, gw_scope, &[&a]);
    let flaky_at = publisher.sent();
    mon.publish(&setup.ota_topic(), signed(&m, &flaky, &[&a]))
        .await;
    let s = mon.module_state().await;
    assert_state(&s, "activated", "", ("flaky", 2, &sha_hex(&flaky)));
    let s = mon.module_state().await;
    let rolled_back_at = publisher.sent();
    assert_state(&s, "rolled-back", "watch-failures", ("2.0", 1, &v2_sha));
    let message = s["message"].as_str().unwrap();
    assert!(message.contains("2 failures"), "{message}");
    assert!(message.contains("trap"), "{message}");
    assert!(
        (rolled_back_at as i64) < N - 100,
        "readings must still flow after the rollback (at {rolled_back_at} of {N})"
    );
    gw.wait_for_log("rolled back", Duration::from_secs(SECS))
        .await;

    publisher.wait_done(Duration::from_secs(60)).await;
    let per = mon
        .wait_outputs(60, &format!("outputs of all {N} readings"), |outs| {
            let per = per_reading(outs);
            ((0..N).all(|n| per.contains_key(&n))).then_some(per)
        })
        .await;
    let versions = exactly_once(&per, N);
    let r = runs(&versions);
    eprintln!(
        "rollback: {N} readings; flaky pushed at ~{flaky_at}, rolled back by ~{rolled_back_at}; \
         runs {r:?} (Same = v1/flaky/passed through, Offset = v2)"
    );
    // v1, v2, flaky (its successes and its failed batches passed through),
    // v2 again.
    let kinds: Vec<By> = r.iter().map(|x| x.0).collect();
    assert_eq!(kinds, [By::Same, By::Offset, By::Same, By::Offset], "{r:?}");
    assert!(
        versions[rolled_back_at..].iter().all(|&b| b == By::Offset),
        "v2 after the rollback"
    );
    let log = gw.sigterm().await;
    assert_eq!(log.matches("rolled back").count(), 1, "{log}");
}

/// A retained payload over the OTA connection's transport limit (here
/// 2 × 64 KiB + 64 KiB) makes that connection drop on every reconnect. It
/// is a connection of its own: data keeps flowing on the uplink, and the
/// OTA state says what is wrong and how to clear it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_payload_on_the_ota_topic_does_not_stop_data() {
    let root = key();
    let a = key();
    let ks = keyset(1, &[&a], &[], &root);
    let setup = Setup::new(
        &hex::encode(root.verifying_key().as_bytes()),
        &ks,
        "max_bundle_bytes = 65536\n",
    );
    let mut mon = Monitor::start(&setup.gw).await;
    let (gw, _) = setup.start(&mut mon, "running").await;
    mon.client
        .publish(
            setup.ota_topic(),
            QoS::AtLeastOnce,
            true,
            vec![7u8; 200_000],
        )
        .await
        .unwrap();
    let s = mon.ota_state().await;
    assert_eq!(s["outcome"], "rejected", "{s}");
    assert_eq!(s["reason"], "too-large", "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("empty retained"),
        "{s}"
    );
    for n in 0..20 {
        assert_eq!(mon.process(&setup.readings, n).await, n as f64);
    }
    // Clear it, as the state message says.
    mon.client
        .publish(setup.ota_topic(), QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    let log = gw.sigterm().await;
    assert!(!log.contains("uplink lost"), "the uplink stayed up: {log}");
    assert_eq!(
        log.matches("a message over the transport limit").count(),
        1,
        "{log}"
    );
}
