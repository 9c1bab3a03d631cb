//! systemd integration without libsystemd: the `sd_notify` protocol
//! (readiness, status, watchdog, stopping) and the journal check used to
//! pick the log output.
//!
//! `sd_notify` is one datagram of newline-separated `KEY=VALUE` assignments
//! sent to the `AF_UNIX` socket named by `$NOTIFY_SOCKET`: a file-system path
//! (`/run/systemd/notify`) or, with a leading `@`, an abstract name. Outside
//! systemd (variable unset) every call is a cheap no-op returning `Ok(false)`.
//! systemd identifies the sender by the kernel-supplied credentials, so with
//! `NotifyAccess=main` any thread of the daemon may send.
//!
//! See `sd_notify(3)`, `sd_watchdog_enabled(3)` and `systemd.exec(5)`
//! (`$JOURNAL_STREAM`).

use std::ffi::OsStr;
use std::io;
use std::time::Duration;

/// The variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog interval, microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog interval is meant for, when set.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// `device:inode` of the journal stream systemd connected stdout/stderr to.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// Send `state` (one or more `KEY=VALUE` lines, e.g. `"READY=1"`) to the
/// service manager.
///
/// Returns `Ok(false)` when `$NOTIFY_SOCKET` is unset (not started by
/// systemd, or not `Type=notify`), `Ok(true)` once the datagram is sent, and
/// an error when the variable is malformed or the socket cannot be reached.
/// Callers usually log the error at debug level and carry on: notification
/// is best effort, systemd's timeouts catch a daemon that never gets through.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        None => Ok(false),
        Some(socket) => notify_to(&socket, state).map(|()| true),
    }
}

/// Start-up is complete (`READY=1`): sources are up and modules are loaded.
/// With `Type=notify`, systemd starts dependent units only after this, and
/// fails the start if it does not arrive within `TimeoutStartSec=`.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// A graceful stop has begun (`STOPPING=1`).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// A one-line human-readable status (`STATUS=…`), shown by `systemctl
/// status`. Line breaks are replaced by spaces: the protocol is line based.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_message(text))
}

/// Keep-alive for `WatchdogSec=` (`WATCHDOG=1`). Send only while the main
/// loops make progress, at about half of [`watchdog_interval`]: a daemon
/// that pings from a timer of its own is never restarted when it hangs.
pub fn watchdog_ping() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// Ask for more time to start or stop (`EXTEND_TIMEOUT_USEC=…`): the
/// running start/stop timeout is extended to at least `by` from now. For a
/// slow start (large outbox, many modules on a small board).
pub fn extend_timeout(by: Duration) -> io::Result<bool> {
    notify(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), or
/// `None` when the watchdog is off for this process: `$WATCHDOG_USEC` unset,
/// zero or malformed, or `$WATCHDOG_PID` set to another process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os(WATCHDOG_USEC).as_deref(),
        std::env::var_os(WATCHDOG_PID).as_deref(),
        std::process::id(),
    )
}

/// Whether stderr is the journal stream systemd set up for this service:
/// `$JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the device and inode of
/// stderr. This is the check `systemd.exec(5)` documents; it is false when
/// stderr was redirected (a shell wrapper, `2>file`) even under systemd, and
/// in a child that inherited the variable but not the stream.
pub fn journal_stream_is_stderr() -> bool {
    let Some(var) = std::env::var_os(JOURNAL_STREAM) else {
        return false;
    };
    match stderr_dev_ino() {
        Some((dev, ino)) => journal_stream_matches(&var, dev, ino),
        None => false,
    }
}

/// Device and inode of file descriptor 2 (`fstat`), through a duplicate so
/// the original is never closed.
fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether a `$JOURNAL_STREAM` value names `dev:ino`.
fn journal_stream_matches(var: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// `STATUS=` with line breaks flattened.
fn status_message(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={flat}")
}

/// The watchdog rule of `sd_watchdog_enabled(3)`, on explicit values.
fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Send one datagram to `socket` (a path, or `@name` for an abstract socket).
fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => sock.send_to(state.as_bytes(), socket)?,
        Some(b'@') => send_abstract(&sock, &bytes[1..], state.as_bytes())?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "${NOTIFY_SOCKET} {:?} is neither an absolute path nor an @abstract name",
                    socket
                ),
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram truncated",
        ));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    msg: &[u8],
) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;

    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(
    _sock: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _msg: &[u8],
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_each_message_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        for msg in [
            "READY=1",
            "WATCHDOG=1",
            "STOPPING=1",
            "STATUS=3 streams\nREADY=1",
        ] {
            notify_to(path.as_os_str(), msg).unwrap();
            assert_eq!(recv(&sock), msg);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_is_reached_through_the_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wasmgate-test-{}-abstract", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn malformed_or_dead_sockets_are_errors() {
        let e = notify_to(OsStr::new("relative/path"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(notify_to(dir.path().join("nobody").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_message("a\nb\r\nc"), "STATUS=a b  c");
    }

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        fn s(v: &str) -> Option<&OsStr> {
            Some(OsStr::new(v))
        }
        let me = 4242;
        assert_eq!(
            watchdog_interval_from(s("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(s("2000000"), s("4242"), me),
            Some(Duration::from_secs(2))
        );
        // Meant for another process (e.g. inherited by a child).
        assert_eq!(watchdog_interval_from(s("2000000"), s("1"), me), None);
        assert_eq!(watchdog_interval_from(s("2000000"), s("x"), me), None);
        assert_eq!(watchdog_interval_from(None, None, me), None);
        assert_eq!(watchdog_interval_from(s("0"), None, me), None);
        assert_eq!(watchdog_interval_from(s("-5"), None, me), None);
        assert_eq!(watchdog_interval_from(s("30s"), None, me), None);
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert!(journal_stream_matches(OsStr::new("8:123456"), 8, 123456));
        assert!(!journal_stream_matches(OsStr::new("8:123456"), 8, 123457));
        assert!(!journal_stream_matches(OsStr::new("9:123456"), 8, 123456));
        assert!(!journal_stream_matches(OsStr::new("8"), 8, 123456));
        assert!(!journal_stream_matches(OsStr::new(""), 0, 0));
        assert!(!journal_stream_matches(OsStr::new("a:b"), 8, 123456));
    }

    #[test]
    fn stderr_has_a_device_and_inode() {
        // Whatever stderr is under the test harness (tty, pipe, file), fstat
        // works on it.
        assert!(stderr_dev_ino().is_some());
    }
}
