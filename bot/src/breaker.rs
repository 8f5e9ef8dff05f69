//! A circuit breaker for requests to the database service.
//!
//! Closed: requests go through; `failures` consecutive failures open it. Open: requests fail at
//! once (no NATS traffic) until `open_for` has passed. Half-open: exactly one request (the probe)
//! goes through; its success closes the breaker, its failure opens it again for `open_for`.
//! Requests arriving while the probe is in flight fail fast too.
//!
//! Time comes from `tokio::time::Instant` so tests can run on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What the caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (closed).
    Yes,
    /// Go ahead as the half-open probe.
    Probe,
    /// Fail fast; the next probe is allowed after this long (zero: a probe is in flight).
    No { retry_in: Duration },
}

/// The breaker state machine; callers wrap it in a mutex.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: State,
}

/// A snapshot for status displays and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_for,
            state: State::Closed { failures: 0 },
        }
    }

    /// Asks to send a request at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open { until } => Admit::No {
                retry_in: until - now,
            },
            State::HalfOpen => Admit::No {
                retry_in: Duration::ZERO,
            },
        }
    }

    /// The admitted request got a reply (any reply: the service is alive).
    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The admitted request failed (no responders, timeout, connection error).
    pub fn on_failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } | State::HalfOpen => State::Open {
                until: now + self.open_for,
            },
            // A request admitted before the breaker opened failed late: keep the current window.
            open @ State::Open { .. } => open,
        };
    }

    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, Instant};

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_fails_fast() {
        let mut b = CircuitBreaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert_eq!(b.admit(Instant::now()), Admit::Yes);
            b.on_failure(Instant::now());
            assert_eq!(b.state(), BreakerState::Closed);
        }
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
        b.on_failure(Instant::now());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.admit(Instant::now()),
            Admit::No {
                retry_in: Duration::from_secs(5)
            }
        );
        advance(Duration::from_secs(2)).await;
        assert_eq!(
            b.admit(Instant::now()),
            Admit::No {
                retry_in: Duration::from_secs(3)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let mut b = CircuitBreaker::new(2, Duration::from_secs(5));
        b.on_failure(Instant::now());
        b.on_success();
        b.on_failure(Instant::now());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_one_probe() {
        let mut b = CircuitBreaker::new(1, Duration::from_secs(5));
        b.on_failure(Instant::now());
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Others fail fast while the probe is out.
        assert_eq!(
            b.admit(Instant::now()),
            Admit::No {
                retry_in: Duration::ZERO
            }
        );
        // Probe fails: open for another full window.
        b.on_failure(Instant::now());
        assert_eq!(
            b.admit(Instant::now()),
            Admit::No {
                retry_in: Duration::from_secs(5)
            }
        );
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_do_not_extend_the_window() {
        let mut b = CircuitBreaker::new(1, Duration::from_secs(5));
        b.on_failure(Instant::now());
        advance(Duration::from_secs(4)).await;
        b.on_failure(Instant::now());
        assert_eq!(
            b.admit(Instant::now()),
            Admit::No {
                retry_in: Duration::from_secs(1)
            }
        );
    }
}
