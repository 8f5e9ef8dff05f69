//! Service counters (reported by `rosey.db.service.ping`) and rate-limited logging of bad input.

use rosey_protocol::db::ServiceStats;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters shared by the intake, the writer and the request handlers.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// This process's instance id: 64 random bits in hex, chosen when the counters are created
    /// (once per start), sent with every commit notice and ping reply so that a client can tell
    /// a restarted service from the process before it.
    pub instance: String,
    pub received: AtomicU64,
    pub committed: AtomicU64,
    pub malformed: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    /// Core mode: events dropped over the byte bound.
    pub dropped: AtomicU64,
    /// Payload bytes of events between the intake and the writer (a gauge).
    pub buffered_bytes: AtomicU64,
    pub dead_letters: AtomicU64,
    pub truncated_replies: AtomicU64,
    pub reply_failures: AtomicU64,
    /// Times either NATS connection was lost (each is followed by a reconnect attempt).
    pub disconnects: AtomicU64,
    /// Messages the NATS client dropped because a subscription's buffer was full (slow
    /// consumer), as far as the client reported them.
    pub client_drops: AtomicU64,
    malformed_log: LogLimiter,
    dropped_log: LogLimiter,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            instance: format!("{:016x}", rand::random::<u64>()),
            received: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            truncated_replies: AtomicU64::new(0),
            reply_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            client_drops: AtomicU64::new(0),
            malformed_log: LogLimiter::new(10, Duration::from_secs(10)),
            dropped_log: LogLimiter::new(10, Duration::from_secs(10)),
        }
    }
}

impl Stats {
    /// Counts one malformed message and logs it unless too many were logged recently.
    pub fn malformed(&self, subject: &str, reason: &str) {
        self.malformed.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.malformed_log.allow() {
            tracing::warn!(subject, reason, suppressed, "malformed message rejected");
        }
    }

    /// Counts one event dropped over the byte bound and logs it (rate-limited).
    pub fn dropped(&self, subject: &str, bytes: usize, limit: usize) {
        self.dropped.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.dropped_log.allow() {
            tracing::warn!(
                subject,
                bytes,
                buffered = self.buffered_bytes.load(Relaxed),
                limit,
                suppressed,
                total_dropped = self.dropped.load(Relaxed),
                "event dropped: the events waiting for the writer exceed max_buffered_bytes"
            );
        }
    }

    /// A snapshot in the wire format.
    pub fn snapshot(&self, mode: &str) -> ServiceStats {
        ServiceStats {
            success: true,
            mode: mode.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            received: self.received.load(Relaxed),
            committed: self.committed.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            batches: self.batches.load(Relaxed),
            requests: self.requests.load(Relaxed),
            failed: self.failed.load(Relaxed),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            dropped: self.dropped.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            truncated_replies: self.truncated_replies.load(Relaxed),
            reply_failures: self.reply_failures.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            client_drops: self.client_drops.load(Relaxed),
            instance: self.instance.clone(),
        }
    }
}

/// Allows at most `burst` log lines per `window`; reports how many were suppressed since the
/// last allowed one.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            burst,
            window,
            state: Mutex::new(LimiterState {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed_since_last)` if this line may be logged, `None` if it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.window_start
            .is_none_or(|t| now.duration_since(t) >= self.window)
        {
            s.window_start = Some(now);
            s.used = 0;
        }
        if s.used < self.burst {
            s.used += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_counts() {
        let l = LogLimiter::new(2, Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = LogLimiter::new(1, Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }
}
