//! `wasmgate run` speaks systemd's notification protocol: the real binary,
//! started as systemd would (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), sends
//! `READY=1` once it is up, `WATCHDOG=1` pings while it runs and
//! `STOPPING=1` on SIGTERM. The socket is a datagram socket the test binds,
//! standing in for the service manager. No broker is needed: the configured
//! one is a closed port, which must not hold readiness back.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The gateway process; killed if the test ends early.
struct Gateway {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Everything it logged (after it exited).
    fn log(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("wasmgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{gw}"
[mqtt]
host = "127.0.0.1"
port = {mqtt}
[storage]
path = "{state}"
[http]
listen = "127.0.0.1:{http}"
[streams.s]
[[streams.s.detectors]]
kind = "range"
fields = ["v"]
max = 100.0
"#,
            gw = unique("gw"),
            mqtt = free_port(),
            http = free_port(),
            state = dir.join("state").display(),
        ),
    )
    .expect("config written");
    config
}

fn start(config: &Path, notify: &Path, watchdog_usec: Option<u64>) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
    cmd.args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env("NOTIFY_SOCKET", notify)
        .env("WASMGATE_LOG", "info")
        // Whatever runs the tests: logs to the piped stderr, as text.
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match watchdog_usec {
        Some(usec) => cmd.env("WATCHDOG_USEC", usec.to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    let mut child = cmd.spawn().expect("wasmgate starts");
    // Drained on a thread so a chatty gateway never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("stderr piped");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    Gateway {
        child,
        stderr: Some(stderr),
    }
}

/// The notification socket, as systemd binds it.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("notify socket");
    (sock, path)
}

/// Receive datagrams until one carries the assignment `want` (e.g.
/// `READY=1`) or `within` passes; returns every assignment seen, one per
/// line of each datagram, and whether `want` was among them.
fn wait_for(sock: &UnixDatagram, want: &str, within: Duration) -> (Vec<String>, bool) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (seen, false);
        }
        sock.set_read_timeout(Some(left)).expect("timeout set");
        let Ok(n) = sock.recv(&mut buf) else {
            return (seen, false);
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = text.lines().any(|l| l == want);
        seen.extend(text.lines().map(str::to_string));
        if found {
            return (seen, true);
        }
    }
}

fn sigterm(g: &Gateway) {
    let pid = g.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Wait for the process to exit, at most `within`.
fn wait_exit(g: &mut Gateway, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = g.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let (sock, path) = notify_socket(dir.path());
    // A 2 s watchdog: pings are due at about 1 s intervals.
    let mut g = start(&config, &path, Some(2_000_000));

    let (seen, ready) = wait_for(&sock, "READY=1", Duration::from_secs(30));
    if !ready {
        let _ = g.child.kill();
        let _ = g.child.wait();
        panic!(
            "no READY=1 within 30 s; notifications: {seen:?}\nlog:\n{}",
            g.log()
        );
    }

    // At least two pings within 5 s of readiness (one would not show they
    // repeat).
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after_ready = Vec::new();
    while pings < 2 && Instant::now() < deadline {
        let (s, ping) = wait_for(
            &sock,
            "WATCHDOG=1",
            deadline.saturating_duration_since(Instant::now()),
        );
        after_ready.extend(s);
        if ping {
            pings += 1;
        }
    }
    if pings < 2 {
        let _ = g.child.kill();
        let _ = g.child.wait();
        panic!(
            "{pings} WATCHDOG=1 pings within 5 s of READY=1 (WATCHDOG_USEC=2000000); \
             notifications: {after_ready:?}\nlog:\n{}",
            g.log()
        );
    }

    sigterm(&g);
    let (seen, stopping) = wait_for(&sock, "STOPPING=1", Duration::from_secs(20));
    let status = wait_exit(&mut g, Duration::from_secs(30));
    let log = g.log();
    assert!(
        stopping,
        "no STOPPING=1 after SIGTERM; notifications: {seen:?}\nlog:\n{log}"
    );
    let status = status.unwrap_or_else(|| panic!("no exit 30 s after SIGTERM\nlog:\n{log}"));
    assert!(
        status.success(),
        "exit {status:?} after SIGTERM\nlog:\n{log}"
    );
}

#[test]
fn no_watchdog_pings_without_watchdog_usec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let (sock, path) = notify_socket(dir.path());
    let mut g = start(&config, &path, None);

    let (seen, ready) = wait_for(&sock, "READY=1", Duration::from_secs(30));
    if !ready {
        let _ = g.child.kill();
        let _ = g.child.wait();
        panic!(
            "no READY=1 within 30 s; notifications: {seen:?}\nlog:\n{}",
            g.log()
        );
    }
    // systemd did not ask for a watchdog: pinging anyway is harmless, but
    // it would mean the interval is not taken from WATCHDOG_USEC.
    let (seen, ping) = wait_for(&sock, "WATCHDOG=1", Duration::from_secs(3));
    if let Ok(Some(status)) = g.child.try_wait() {
        panic!(
            "the gateway exited ({status}) instead of running; notifications: {seen:?}\nlog:\n{}",
            g.log()
        );
    }
    sigterm(&g);
    let _ = wait_exit(&mut g, Duration::from_secs(30));
    assert!(!ping, "WATCHDOG=1 without WATCHDOG_USEC: {seen:?}");
}
