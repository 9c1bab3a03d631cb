//! Rate limiting for log lines that a misbehaving peer could trigger at
//! will (malformed payloads, guest log spam): a burst per window, then a
//! single "N suppressed" line when the window rolls over.

use std::time::{Duration, Instant};

/// Lets `burst` events through per `window`; counts the rest.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    window_start: Instant,
    count: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            burst,
            window,
            window_start: Instant::now(),
            count: 0,
            suppressed: 0,
        }
    }

    /// Whether to log an event now. When a window ends with suppressed
    /// events, `on_suppressed` is called once with their number first.
    pub fn allow(&mut self, now: Instant, on_suppressed: impl FnOnce(u64)) -> bool {
        if now.saturating_duration_since(self.window_start) >= self.window {
            if self.suppressed > 0 {
                on_suppressed(self.suppressed);
            }
            self.window_start = now;
            self.count = 0;
            self.suppressed = 0;
        }
        if self.count < self.burst {
            self.count += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppressed_then_reported() {
        let mut l = LogLimiter::new(2, Duration::from_secs(10));
        // After `new`, so the window started at or before t0.
        let t0 = Instant::now();
        let mut reported = Vec::new();
        let mut allowed = 0;
        for _ in 0..5 {
            if l.allow(t0, |n| reported.push(n)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 2);
        assert!(reported.is_empty());
        assert!(l.allow(t0 + Duration::from_secs(10), |n| reported.push(n)));
        assert_eq!(reported, vec![3]);
    }
}
