//! Serial end to end: lines written to a pseudo-terminal reach the real
//! `wasmgate run` through its serial source and come out on MQTT; the port
//! disappearing and coming back does not stop the daemon, and its log says so.
//!
//! The "device" is a pseudo-terminal: the test holds its master end (the
//! sensor's side) and the daemon opens the slave through a symlink, as it
//! would open `/dev/serial/by-id/…`. Unplugging is closing the master: the
//! kernel then hangs the terminal up and the daemon's reads end (end of file
//! or `EIO`), as with a USB adapter pulled out. That only happens when the test's
//! master is the **last** descriptor of it, so the terminal is created here
//! with close-on-exec descriptors (see [`Pty::open`]): a descriptor inherited
//! by the daemon, or by any other test's child process, would keep the
//! "unplugged" device alive.

use std::ffi::{CStr, c_char, c_int};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS};
use tokio::sync::mpsc;

use crate::common::*;

// The C library's pseudo-terminal calls (glibc and musl both have them).
unsafe extern "C" {
    fn grantpt(fd: c_int) -> c_int;
    fn unlockpt(fd: c_int) -> c_int;
    fn ptsname_r(fd: c_int, buf: *mut c_char, buflen: usize) -> c_int;
}

/// A pseudo-terminal standing in for a serial device: the master end, which
/// the test writes the device's output to, and the slave's path, the port.
///
/// Not `tokio_serial::SerialStream::pair()`: it opens both ends without
/// `O_CLOEXEC`, so every process spawned while the pair exists — the daemon
/// under test included — inherits the master and keeps the terminal from
/// ever hanging up. Here the master comes from `std::fs`, which always opens
/// with `O_CLOEXEC`, and the test keeps no slave descriptor at all (a real
/// device has nobody else holding its port open).
struct Pty {
    master: File,
    path: PathBuf,
}

impl Pty {
    fn open() -> Pty {
        let master = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
            .expect("open /dev/ptmx");
        let fd = master.as_raw_fd();
        let last_error = std::io::Error::last_os_error;
        // SAFETY: `fd` is an open pty master, owned by `master` for the
        // whole call.
        assert_eq!(unsafe { grantpt(fd) }, 0, "grantpt: {}", last_error());
        // SAFETY: as above.
        assert_eq!(unsafe { unlockpt(fd) }, 0, "unlockpt: {}", last_error());
        let mut name = [0 as c_char; 128];
        // SAFETY: as above; `name` is writable for the length passed.
        let err = unsafe { ptsname_r(fd, name.as_mut_ptr(), name.len()) };
        assert_eq!(
            err,
            0,
            "ptsname_r: {}",
            std::io::Error::from_raw_os_error(err)
        );
        // SAFETY: `ptsname_r` succeeded: `name` holds a NUL-terminated path.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        Pty {
            master,
            path: PathBuf::from(path.to_str().expect("UTF-8 pty name")),
        }
    }

    /// Write `line` as the device would. Blocking, but the terminal buffers
    /// far more than the few short lines a test writes while nobody reads.
    fn write(&mut self, line: &[u8]) {
        self.master.write_all(line).expect("write to pty");
    }

    /// Point `link` at this terminal's port (as udev does for by-id names).
    fn link(&self, link: &Path) {
        std::os::unix::fs::symlink(&self.path, link).expect("symlink to the pty");
    }
}

/// The daemon and its log, followed line by line as it is written.
struct Daemon {
    child: Child,
    /// The log lines, as the daemon writes them.
    lines: mpsc::UnboundedReceiver<String>,
    /// The lines taken from `lines` so far.
    seen: Vec<String>,
    /// Lines of `seen` before this index were matched or passed over by
    /// [`Daemon::wait_for`].
    cursor: usize,
    /// The whole log, for messages (filled by the reader thread).
    all: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("WASMGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmgate starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let all = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let reader = std::thread::spawn({
            let all = Arc::clone(&all);
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    all.lock().unwrap().push(line.clone());
                    // The receiver may be gone (the test failed); keep
                    // collecting for the message.
                    let _ = tx.send(line);
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
            cursor: 0,
            all,
            reader: Some(reader),
        }
    }

    /// The next log line containing `needle` after the last one found, as
    /// soon as the daemon writes it; `None` when none comes within `secs`
    /// (or the daemon's stderr closes first).
    async fn wait_for(&mut self, needle: &str, secs: u64) -> Option<String> {
        let found = tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                if let Some(i) = self.seen[self.cursor..]
                    .iter()
                    .position(|l| l.contains(needle))
                {
                    self.cursor += i + 1;
                    return Some(self.seen[self.cursor - 1].clone());
                }
                self.cursor = self.seen.len();
                self.seen.push(self.lines.recv().await?);
            }
        })
        .await;
        found.ok().flatten()
    }

    /// Stop the daemon and show its log in the failure message.
    fn fail(mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("{what}; daemon log:\n{}", self.whole_log());
    }

    /// The whole log. Only once the daemon has exited: waits for the end of
    /// its stderr.
    fn whole_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        self.all.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `line` to the port until an output for it arrives: the daemon
/// (re)opens the device on its own schedule, and a line written before it
/// has the port open is lost, as on real hardware.
async fn send_until_output(
    pty: &mut Pty,
    line: &[u8],
    ev: &mut EventLoop,
    out_topic: &str,
) -> Option<serde_json::Value> {
    for _ in 0..100 {
        pty.write(line);
        if let Ok((t, p)) =
            tokio::time::timeout(Duration::from_millis(200), next_publish(ev, 1)).await
        {
            if t == out_topic {
                return Some(serde_json::from_slice(&p).unwrap());
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_lines_in_outputs_out_and_the_port_can_come_back() {
    let (host, port) = broker();
    let dir = tempfile::tempdir().unwrap();
    let gw = unique("gw");
    let link = dir.path().join("ttyPROBE");
    let mut pty = Pty::open();
    pty.link(&link);

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
[sources.probe]
type = "serial"
device = "{link}"
format = "key-value"
sensor = "probe-1"
reconnect_min_ms = 50
reconnect_max_ms = 200
[streams.probe]
sources = ["probe"]
[[streams.probe.processors]]
module = "{clamp}"
config = {{ min = 0.0, max = 40.0 }}
"#,
            state = dir.path().join("state").display(),
            link = link.display(),
            clamp = example("c-clamp").display(),
        ),
    )
    .unwrap();

    let mut opts = MqttOptions::new(unique("sub"), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (sub, mut ev) = AsyncClient::new(opts, 100);
    sub.subscribe(format!("wasmgate/{gw}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut daemon = Daemon::start(&config);
    let out_topic = format!("wasmgate/{gw}/out/probe");

    if daemon.wait_for("serial port up", 10).await.is_none() {
        daemon.fail("the port was not opened");
    }
    let Some(v) = send_until_output(&mut pty, b"temp=55.5 hum=20\n", &mut ev, &out_topic).await
    else {
        daemon.fail("no output for the first line")
    };
    assert_eq!(v["sensor"], "probe-1");
    assert_eq!(v["fields"]["temp"], 40.0, "clamped by the C module");
    assert_eq!(v["fields"]["hum"], 20.0);

    // Unplug: the device hangs up and its path disappears. The daemon's
    // reads fail right away; its reopen attempts fail until the replug.
    drop(pty);
    std::fs::remove_file(&link).unwrap();
    let Some(down) = daemon.wait_for("serial port down", 10).await else {
        daemon.fail("the outage is not in the log")
    };
    assert!(down.contains("WARN"), "{down}");
    assert!(down.contains("source=probe"), "{down}");
    assert!(
        down.contains(&format!("device={}", link.display())),
        "{down}"
    );

    // Replug: a new device at the same path.
    let mut pty = Pty::open();
    pty.link(&link);
    let v = loop {
        match send_until_output(&mut pty, b"temp=-3\n", &mut ev, &out_topic).await {
            Some(v) if v["fields"]["temp"] == 0.0 => break v,
            Some(_) => continue,
            None => daemon.fail("no output after the port came back"),
        }
    };
    assert_eq!(v["sensor"], "probe-1");
    if daemon.wait_for("serial port up", 10).await.is_none() {
        daemon.fail("the port coming back is not in the log");
    }

    let pid = daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = daemon.child.wait().unwrap();
    let log = daemon.whole_log();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("serial port down").count(), 1, "{log}");
    assert_eq!(log.matches("serial port up").count(), 2, "{log}");
}
