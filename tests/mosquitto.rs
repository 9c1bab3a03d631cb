//! Test support for store-and-forward end-to-end tests: real processes,
//! driven and observed from the outside.
//!
//! - [`Mosquitto`]: a private mosquitto per test (own port, own persistence
//!   directory, unlimited queues for offline persistent sessions), which can
//!   be stopped cleanly (it saves its sessions), restarted on the same port,
//!   or killed. Its log (`log_type all`) is captured, so a test can count
//!   what the broker saw, e.g. the PUBACKs a client sent
//!   ([`Mosquitto::pubacks_from`]). Without mosquitto installed,
//!   [`Mosquitto::try_start`] returns `None` and the test skips itself,
//!   unless `WASMGATE_REQUIRE_MOSQUITTO` is set (then it panics).
//!   `WASMGATE_MOSQUITTO=<path>` picks the binary.
//! - [`Gateway`]: the real `wasmgate run` binary with its stderr captured
//!   line by line; tests await log lines as events.
//! - [`Collector`]: an MQTT subscriber with a persistent session recording
//!   every output publication in arrival order, reconnecting across broker
//!   restarts; [`analyse`] turns its record into loss/duplicate/order
//!   figures.
//! - [`Publisher`]: publishes numbered readings `{"n": i, "ts": …}` at QoS 1
//!   at a steady rate on its own connection, counting the broker's PUBACKs.
//!
//! Every wait here awaits an event (a log line, a packet) with a deadline;
//! the only polling is the reconnect backoff of the MQTT clients.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Send `signal` (`"TERM"`, `"KILL"`) to a process.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------- log pipe

/// A child's output read line by line on a thread: a full copy, and a
/// line-count signal to await.
pub struct LogPipe {
    lines: Arc<Mutex<Vec<String>>>,
    signal: watch::Receiver<usize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogPipe {
    pub fn spawn(stream: impl Read + Send + 'static) -> LogPipe {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, signal) = watch::channel(0usize);
        let copy = lines.clone();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let n = {
                    let mut l = copy.lock().unwrap();
                    l.push(line);
                    l.len()
                };
                let _ = tx.send(n);
            }
            // Dropping `tx` tells waiters the stream ended.
        });
        LogPipe {
            lines,
            signal,
            thread: Some(thread),
        }
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Await `check` (called on all lines so far, again after each new line)
    /// returning `Some`. `Err` on timeout or end of stream (the check failing
    /// on the complete output).
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> Result<T, &'static str> {
        let mut rx = self.signal.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(v) = check(&self.lines.lock().unwrap()) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err("timed out"),
                Ok(Err(_)) => {
                    return check(&self.lines.lock().unwrap()).ok_or("the process exited");
                }
                Ok(Ok(())) => {}
            }
        }
    }

    /// Wait for the end of the stream (the process exited).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --------------------------------------------------------------- mosquitto

/// The mosquitto binary, if installed: `WASMGATE_MOSQUITTO` (a path),
/// else `/usr/sbin/mosquitto`, else `mosquitto` on `PATH`.
fn mosquitto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMGATE_MOSQUITTO") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    })
}

/// Whether this process runs as root (mosquitto then drops privileges to
/// user `mosquitto` unless told `user root`, and could not write its
/// persistence file into our temporary directory).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A private mosquitto for one test.
pub struct Mosquitto {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: Option<LogPipe>,
    /// Logs of earlier runs (before a restart).
    history: String,
}

impl Mosquitto {
    /// Start one on a free port; `None` (after printing why) when mosquitto
    /// is not installed, unless `WASMGATE_REQUIRE_MOSQUITTO` is set.
    pub async fn try_start() -> Option<Mosquitto> {
        Mosquitto::try_start_on(free_port()).await
    }

    /// Start one on `port`.
    pub async fn try_start_on(port: u16) -> Option<Mosquitto> {
        let mut m = Mosquitto::try_new(port)?;
        m.start().await;
        Some(m)
    }

    /// Set one up on `port` without starting it.
    pub fn try_new(port: u16) -> Option<Mosquitto> {
        let Some(binary) = mosquitto_binary() else {
            if std::env::var_os("WASMGATE_REQUIRE_MOSQUITTO").is_some() {
                panic!(
                    "mosquitto is not installed (looked at $WASMGATE_MOSQUITTO, \
                     /usr/sbin/mosquitto and on PATH) and WASMGATE_REQUIRE_MOSQUITTO is set"
                );
            }
            eprintln!("SKIPPED: mosquitto not installed (.ci/run installs it)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 86400\n\
             max_queued_messages 0\n\
             max_inflight_messages 100\n\
             log_dest stderr\n\
             log_type all\n",
            dir.path().display()
        );
        if running_as_root() {
            conf.push_str("user root\n");
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("mosquitto.conf");
        Some(Mosquitto {
            binary,
            dir,
            port,
            child: None,
            log: None,
            history: String::new(),
        })
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Start the process and wait until it reports that it is running (it
    /// opens its listener before that).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "mosquitto already running");
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto starts");
        let log = LogPipe::spawn(child.stderr.take().unwrap());
        self.child = Some(child);
        let ready = log
            .wait(Duration::from_secs(10), |lines| {
                lines
                    .iter()
                    .any(|l| l.contains("mosquitto version") && l.ends_with(" running"))
                    .then_some(())
            })
            .await;
        let text = log.text();
        self.log = Some(log);
        if let Err(why) = ready {
            panic!(
                "mosquitto on port {} did not start ({why}):\n{text}",
                self.port
            );
        }
    }

    /// SIGTERM and wait: a clean stop saves sessions and queued messages.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
            self.finish_log();
        }
    }

    /// SIGKILL: nothing saved since the start.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.finish_log();
        }
    }

    /// A clean stop, then a start on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.start().await;
    }

    fn finish_log(&mut self) {
        if let Some(mut log) = self.log.take() {
            log.join();
            self.history.push_str(&log.text());
            self.history.push('\n');
        }
    }

    /// The current run's log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.as_ref().map_or(0, |l| l.count(needle))
    }

    /// All logs so far (every run).
    pub fn log_text(&self) -> String {
        let mut t = self.history.clone();
        if let Some(l) = &self.log {
            t.push_str(&l.text());
        }
        t
    }

    fn puback_needle(client_id: &str) -> String {
        format!("Received PUBACK from {client_id} (")
    }

    /// PUBACKs this broker (current run) received from `client_id`: the
    /// inbound messages that client acknowledged.
    pub fn pubacks_from(&self, client_id: &str) -> usize {
        self.log_count(&Self::puback_needle(client_id))
    }

    /// Await at least `n` PUBACKs from `client_id` (current run); returns
    /// the count, or `Err(count)` at the deadline.
    pub async fn wait_pubacks_from(
        &self,
        client_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<usize, usize> {
        let needle = Self::puback_needle(client_id);
        let log = self.log.as_ref().expect("mosquitto running");
        log.wait(timeout, |lines| {
            let c = lines.iter().filter(|l| l.contains(&needle)).count();
            (c >= n).then_some(c)
        })
        .await
        .map_err(|_| log.count(&needle))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- mosquitto :{} log (last 40 lines) ---\n{}",
                self.port,
                tail(&self.history, 40)
            );
        }
    }
}

// ----------------------------------------------------------------- gateway

/// The real `wasmgate run`, stderr captured.
pub struct Gateway {
    child: Option<Child>,
    log: LogPipe,
    /// Per needle: lines before this index were passed by an earlier
    /// `wait_for_log` for it.
    cursors: HashMap<String, usize>,
}

impl Gateway {
    /// `wasmgate run --config <config>` with `WASMGATE_LOG=info`.
    pub fn start(config: &Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["run", "--config"])
            .arg(config)
            .env("WASMGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmgate starts");
        let log = LogPipe::spawn(child.stderr.take().unwrap());
        Gateway {
            child: Some(child),
            log,
            cursors: HashMap::new(),
        }
    }

    /// Await the next log line containing `needle` (after the one an
    /// earlier call for the same `needle` matched); panics with the log at
    /// the deadline or if the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let from = self.cursors.get(needle).copied().unwrap_or(0);
        let found = self
            .log
            .wait(timeout, |lines| {
                lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| l.contains(needle))
                    .map(|(i, _)| i)
            })
            .await;
        match found {
            Ok(i) => {
                self.cursors.insert(needle.to_string(), i + 1);
            }
            Err(why) => panic!(
                "wasmgate: no log line containing {needle:?} ({why}); log:\n{}",
                self.log.text()
            ),
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Log lines so far containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// SIGKILL (a crash); returns the log.
    pub fn sigkill(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.log.join();
        self.log.text()
    }

    /// SIGTERM, await a clean exit (panics otherwise, or after 30 s);
    /// returns the full log.
    pub async fn sigterm(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        signal(pid, "TERM");
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        let status = match tokio::time::timeout(Duration::from_secs(30), waiting).await {
            Ok(status) => status.expect("wait task").expect("wait"),
            Err(_) => {
                signal(pid, "KILL");
                self.log.join();
                panic!(
                    "wasmgate did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log.text()
                );
            }
        };
        self.log.join();
        let log = self.log.text();
        assert!(
            status.success(),
            "wasmgate exited with {status}; log:\n{log}"
        );
        log
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- wasmgate log (last 60 lines) ---\n{}",
                tail(&self.log.text(), 60)
            );
        }
    }
}

// --------------------------------------------------------------- collector

/// One output publication as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    pub stream: String,
    pub seq: u64,
    pub boot: u64,
    pub n: i64,
}

#[derive(Default)]
struct Record {
    arrivals: Vec<Arrival>,
    distinct: HashSet<i64>,
    /// Publications that were not the expected JSON.
    malformed: Vec<String>,
}

/// A persistent-session subscriber to `wasmgate/<gw>/out/#`.
pub struct Collector {
    record: Arc<Mutex<Record>>,
    distinct: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
    _client: AsyncClient,
}

impl Collector {
    /// Connect (clean_session = false, a fixed client id), subscribe at
    /// QoS 1, and return once the broker acknowledged the subscription.
    /// It keeps reconnecting (100 ms apart) when the broker goes away.
    pub async fn start(host: &str, port: u16, gateway_id: &str) -> Collector {
        let id = crate::common::unique("collector");
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(false);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(opts, 16);
        client
            .subscribe(format!("wasmgate/{gateway_id}/out/#"), QoS::AtLeastOnce)
            .await
            .expect("subscribe request");
        let record = Arc::new(Mutex::new(Record::default()));
        let (tx, distinct) = watch::channel(0usize);
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
                        let stream = p.topic.rsplit('/').next().unwrap_or("").to_string();
                        let mut r = rec.lock().unwrap();
                        match parse_output(&p.payload) {
                            Some((seq, boot, n)) => {
                                r.arrivals.push(Arrival {
                                    stream,
                                    seq,
                                    boot,
                                    n,
                                });
                                r.distinct.insert(n);
                                let _ = tx.send(r.distinct.len());
                            }
                            None => r.malformed.push(format!(
                                "{}: {}",
                                p.topic,
                                String::from_utf8_lossy(&p.payload)
                            )),
                        }
                    }
                    Ok(_) => {}
                    // Broker away: rumqttc reconnects on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), suback_rx)
            .await
            .expect("collector: SUBACK within 10 s")
            .expect("collector task alive");
        Collector {
            record,
            distinct,
            task,
            _client: client,
        }
    }

    /// Await at least `count` distinct `n`; `Err(distinct so far)` at the
    /// deadline.
    pub async fn wait_distinct(&self, count: usize, timeout: Duration) -> Result<(), usize> {
        let mut rx = self.distinct.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&d| d >= count))
            .await
            .map(|_| ())
            .map_err(|_| *self.distinct.borrow())
    }

    /// Every arrival so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.record.lock().unwrap().arrivals.clone()
    }

    /// Publications that did not parse as an output.
    pub fn malformed(&self) -> Vec<String> {
        self.record.lock().unwrap().malformed.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(seq, boot, fields.n)` of an output payload.
fn parse_output(payload: &[u8]) -> Option<(u64, u64, i64)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some((
        v["seq"].as_u64()?,
        v["boot"].as_u64()?,
        v["fields"]["n"].as_f64()? as i64,
    ))
}

// ----------------------------------------------------------------- figures

/// What a collector's record says about delivery.
#[derive(Debug, Default)]
pub struct Report {
    /// Arrivals in total.
    pub arrivals: usize,
    /// Distinct `n` received.
    pub distinct: usize,
    /// Expected `n` never received.
    pub lost: Vec<i64>,
    /// `n` received that were not expected.
    pub unexpected: Vec<i64>,
    /// Arrivals repeating a (stream, seq) already received (at-least-once
    /// redelivery of the same entry).
    pub duplicates: usize,
    /// Distinct entries (stream, seq) carrying an `n` an earlier entry
    /// carried: the reading was processed twice (inbound redelivery).
    pub reprocessed: usize,
    /// A (stream, seq) received with different (boot, n): a sequence
    /// number reused for different content.
    pub seq_conflicts: Vec<String>,
    /// First arrivals of a stream not in increasing seq order.
    pub out_of_order: Vec<String>,
    /// Missing seq ranges between first arrivals, per stream.
    pub gaps: Vec<String>,
    /// Per stream: (lowest, highest) seq received.
    pub seq_range: BTreeMap<String, (u64, u64)>,
    /// Boot ids seen.
    pub boots: Vec<u64>,
}

/// Figures for `arrivals` against the expected readings `expected`.
pub fn analyse(arrivals: &[Arrival], expected: impl IntoIterator<Item = i64>) -> Report {
    let mut r = Report {
        arrivals: arrivals.len(),
        ..Report::default()
    };
    let mut first: HashMap<(&str, u64), &Arrival> = HashMap::new();
    let mut last_first_seq: HashMap<&str, u64> = HashMap::new();
    let mut firsts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut seen_n: HashSet<i64> = HashSet::new();
    let mut boots: HashSet<u64> = HashSet::new();
    for a in arrivals {
        boots.insert(a.boot);
        match first.get(&(a.stream.as_str(), a.seq)) {
            Some(f) => {
                r.duplicates += 1;
                if f.boot != a.boot || f.n != a.n {
                    r.seq_conflicts.push(format!(
                        "{} seq {}: first boot {} n {}, then boot {} n {}",
                        a.stream, a.seq, f.boot, f.n, a.boot, a.n
                    ));
                }
            }
            None => {
                first.insert((a.stream.as_str(), a.seq), a);
                if !seen_n.insert(a.n) {
                    r.reprocessed += 1;
                }
                if let Some(&prev) = last_first_seq.get(a.stream.as_str()) {
                    if a.seq < prev {
                        r.out_of_order.push(format!(
                            "{}: seq {} (n {}) first arrived after seq {}",
                            a.stream, a.seq, a.n, prev
                        ));
                    }
                }
                let e = last_first_seq.entry(a.stream.as_str()).or_insert(a.seq);
                *e = (*e).max(a.seq);
                firsts.entry(a.stream.as_str()).or_default().push(a.seq);
            }
        }
    }
    for (stream, mut seqs) in firsts {
        seqs.sort_unstable();
        r.seq_range
            .insert(stream.to_string(), (seqs[0], *seqs.last().unwrap()));
        for w in seqs.windows(2) {
            if w[1] != w[0] + 1 {
                r.gaps
                    .push(format!("{stream}: {}..={}", w[0] + 1, w[1] - 1));
            }
        }
    }
    let expected: HashSet<i64> = expected.into_iter().collect();
    r.lost = expected.difference(&seen_n).copied().collect();
    r.lost.sort_unstable();
    r.unexpected = seen_n.difference(&expected).copied().collect();
    r.unexpected.sort_unstable();
    r.distinct = seen_n.len();
    r.boots = boots.into_iter().collect();
    r.boots.sort_unstable();
    r
}

// --------------------------------------------------------------- publisher

/// Publishes readings `{"n": i, "ts": <ms>}` at QoS 1 on its own connection.
pub struct Publisher {
    /// PUBACKs received from the broker.
    pub acked: Arc<AtomicUsize>,
    /// Readings handed to the client so far.
    sent: watch::Receiver<usize>,
    done: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publisher {
    /// Publish `ns` to `topic`, one every `interval`, starting now.
    pub async fn start(
        host: &str,
        port: u16,
        topic: String,
        ns: std::ops::Range<i64>,
        interval: Duration,
    ) -> Publisher {
        let mut opts = MqttOptions::new(crate::common::unique("publisher"), host, port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(false);
        opts.set_inflight(100);
        let (client, mut ev) = AsyncClient::new(opts, 16);
        let total = ns.clone().count();
        let acked = Arc::new(AtomicUsize::new(0));
        let (sent_tx, sent) = watch::channel(0usize);
        let (done_tx, done) = watch::channel(total == 0);
        let a = acked.clone();
        let driver = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if a.fetch_add(1, Ordering::SeqCst) + 1 >= total {
                            let _ = done_tx.send(true);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let feeder = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in ns {
                tick.tick().await;
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                client
                    .publish(
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        format!(r#"{{"n": {n}, "ts": {ts}}}"#),
                    )
                    .await
                    .expect("publish request");
                sent_tx.send_modify(|s| *s += 1);
            }
            // Keep the client (and so the connection) until dropped.
            std::future::pending::<()>().await;
        });
        Publisher {
            acked,
            sent,
            done,
            tasks: vec![driver, feeder],
        }
    }

    /// Readings handed to the client so far.
    pub fn sent(&self) -> usize {
        *self.sent.borrow()
    }

    /// Await `n` readings handed to the client (orchestration: "a third of
    /// the way through").
    pub async fn wait_sent(&self, n: usize, timeout: Duration) {
        let mut rx = self.sent.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&s| s >= n))
            .await
            .expect("publisher progress within the deadline")
            .expect("publisher task alive");
    }

    /// Await the broker's PUBACK for every reading; panics at the deadline.
    pub async fn wait_done(&self, timeout: Duration) {
        let mut rx = self.done.clone();
        let started = Instant::now();
        tokio::time::timeout(timeout, rx.wait_for(|&d| d))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "publisher: {} sent, {} acknowledged by the broker after {:?}",
                    self.sent(),
                    self.acked.load(Ordering::SeqCst),
                    started.elapsed()
                )
            })
            .expect("publisher task alive");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// -------------------------------------------------------------------- rng

/// xorshift64*: reproducible random timings from a printed seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}
