//! The bot's side of the database service: fire-and-forget events and resilient requests.
//!
//! Events are published with the trace's correlation id and a fresh event id. Requests get a
//! per-request timeout, fail fast on "no responders" and while NATS is disconnected, are retried
//! with exponential backoff when read-only, and go through one [`CircuitBreaker`] shared by all
//! requests, so a dead service costs one failed attempt per breaker window instead of one
//! timeout per command.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, Request};
use bytes::Bytes;
use rosey_protocol::to_seed_json;
use serde::Serialize;
use tokio::time::Instant;

use crate::breaker::{Admit, BreakerState, CircuitBreaker};
use crate::config::RequestPolicy;
use crate::metrics::Metrics;
use crate::trace::Trace;

/// Why a request to the database service got no usable reply. `Display` is the phrase the PM
/// shell puts in parentheses: "Stats unavailable (<this>)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("NATS not connected")]
    NotConnected,
    #[error("database service not running")]
    NoResponders,
    #[error("timeout")]
    Timeout,
    #[error("{}", circuit_open_text(*.retry_in))]
    CircuitOpen { retry_in: Duration },
    #[error("request failed: {0}")]
    Other(String),
}

fn circuit_open_text(retry_in: Duration) -> String {
    if retry_in.is_zero() {
        "circuit open, probing for recovery".to_owned()
    } else {
        // Round up so "retrying in 0s" is never shown while still waiting.
        let secs = retry_in.as_millis().div_ceil(1000);
        format!("circuit open, retrying in {secs}s")
    }
}

/// Whether a request may be repeated without effect (and so is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    ReadOnly,
    Once,
}

/// The bot's handle on the database service.
pub(crate) struct DbClient {
    client: Client,
    /// Durable events: the JetStream context events are published through, and how long one
    /// event is published again for.
    durable: Option<(async_nats::jetstream::Context, Duration)>,
    policy: RequestPolicy,
    breaker: Mutex<CircuitBreaker>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for DbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl DbClient {
    /// A client publishing events on core NATS, or with `durable_retry` through JetStream.
    pub fn new(
        client: Client,
        policy: RequestPolicy,
        durable_retry: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let breaker = Mutex::new(CircuitBreaker::new(
            policy.breaker_failures,
            policy.breaker_open,
        ));
        let durable = durable_retry.map(|retry| {
            let mut js = async_nats::jetstream::new(client.clone());
            js.set_timeout(policy.publish_timeout);
            (js, retry)
        });
        DbClient {
            client,
            durable,
            policy,
            breaker,
            metrics,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker().state()
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        // The breaker has no invariant a panic could break halfway; keep using it.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a database event; failures are logged and counted, never returned (the seed's
    /// events are fire-and-forget too). Returns the event id.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        subject: &'static str,
        payload: &T,
        trace: &Trace,
    ) -> String {
        self.try_publish(subject, &to_seed_json(payload), trace)
            .await
            .0
    }

    /// Publishes the encoded event `body` like [`DbClient::publish`] (failures logged and
    /// counted), and also says whether the client took it: the event id, and `Err` with the
    /// reason when it did not.
    pub async fn try_publish(
        &self,
        subject: &'static str,
        body: &[u8],
        trace: &Trace,
    ) -> (String, Result<(), String>) {
        let (mut headers, event_id) = trace.event_headers();
        let body = Bytes::copy_from_slice(body);
        if let Some((js, retry)) = &self.durable {
            headers.insert(rosey_protocol::headers::NATS_MSG_ID, event_id.as_str());
            let result = self
                .store(js, *retry, subject, headers, body, &event_id)
                .await;
            return (event_id, result);
        }
        let publish = self.client.publish_with_headers(subject, headers, body);
        let result = match tokio::time::timeout(self.policy.publish_timeout, publish).await {
            Ok(Ok(())) => {
                Metrics::inc(&self.metrics.db_events_published);
                tracing::debug!(subject, event_id, "published database event");
                Ok(())
            }
            Ok(Err(e)) => {
                Metrics::inc(&self.metrics.db_publish_failures);
                tracing::warn!(subject, event_id, error = %e, "database event not published");
                Err(e.to_string())
            }
            Err(_) => {
                Metrics::inc(&self.metrics.db_publish_failures);
                tracing::warn!(
                    subject,
                    event_id,
                    "database event not published: client buffer full (disconnected?)"
                );
                Err("client buffer full (disconnected?)".to_owned())
            }
        };
        (event_id, result)
    }

    /// Durable events: publishes to JetStream and waits for the stream's PubAck, publishing the
    /// same message again while none comes, for up to `retry` ([`natskit::client::store_until`]).
    /// Waiting here keeps the bot's events in order across an outage.
    async fn store(
        &self,
        js: &async_nats::jetstream::Context,
        retry: Duration,
        subject: &'static str,
        headers: async_nats::HeaderMap,
        body: Bytes,
        event_id: &str,
    ) -> Result<(), String> {
        let on_retry = |n: u32, error: &str| {
            Metrics::inc(&self.metrics.db_publish_retries);
            if n == 1 {
                tracing::warn!(
                    subject,
                    event_id,
                    error,
                    "database event not stored by JetStream yet; publishing it again until it is"
                );
            }
        };
        let deadline = Instant::now() + retry;
        match natskit::client::store_until(
            js,
            subject.into(),
            headers,
            body,
            None,
            deadline,
            on_retry,
        )
        .await
        {
            Ok(attempt) => {
                Metrics::inc(&self.metrics.db_events_published);
                tracing::debug!(subject, event_id, attempt, "stored database event");
                Ok(())
            }
            Err((attempt, error)) => {
                Metrics::inc(&self.metrics.db_publish_failures);
                tracing::warn!(subject, event_id, attempt, error = %error, "database event not stored by JetStream; given up");
                Err(error)
            }
        }
    }

    /// Sends a request with the query timeout.
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        subject: &'static str,
        payload: &T,
        trace: &Trace,
        retry: Retry,
    ) -> Result<Bytes, RequestError> {
        self.request_with_timeout(subject, payload, trace, retry, self.policy.timeout)
            .await
    }

    /// Sends a request: breaker, timeout, retries with backoff (read-only only).
    pub async fn request_with_timeout<T: Serialize + ?Sized>(
        &self,
        subject: &'static str,
        payload: &T,
        trace: &Trace,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let body = Bytes::from(to_seed_json(payload));
        let attempts = match retry {
            Retry::ReadOnly => 1 + self.policy.read_retries,
            Retry::Once => 1,
        };
        let mut last = RequestError::NotConnected;
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = self
                    .policy
                    .retry_backoff
                    .saturating_mul(1 << (attempt - 1).min(16));
                tokio::time::sleep(backoff).await;
            }
            match self.attempt(subject, body.clone(), trace, timeout).await {
                Ok(reply) => {
                    Metrics::inc(&self.metrics.requests_ok);
                    return Ok(reply);
                }
                // Fail fast: retrying cannot help before the breaker's window or the reconnect.
                // If this request's own failures just opened the breaker, report their cause
                // ("not running", "timeout") rather than the breaker.
                Err(e @ (RequestError::CircuitOpen { .. } | RequestError::NotConnected)) => {
                    if attempt == 0 {
                        last = e;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(subject, attempt, error = %e, "request attempt failed");
                    last = e;
                }
            }
        }
        match last {
            RequestError::CircuitOpen { .. } => {
                Metrics::inc(&self.metrics.requests_short_circuited)
            }
            _ => Metrics::inc(&self.metrics.requests_failed),
        }
        tracing::warn!(subject, correlation_id = trace.correlation_id(), error = %last, "request failed");
        Err(last)
    }

    async fn attempt(
        &self,
        subject: &'static str,
        body: Bytes,
        trace: &Trace,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        if !self.is_connected() {
            return Err(RequestError::NotConnected);
        }
        let admit = self.breaker().admit(Instant::now());
        if let Admit::No { retry_in } = admit {
            return Err(RequestError::CircuitOpen { retry_in });
        }
        if admit == Admit::Probe {
            tracing::info!(subject, "circuit half-open: probing the database service");
        }
        let request = Request::new()
            .payload(body)
            .headers(trace.headers())
            .timeout(Some(timeout));
        let result = self.client.send_request(subject, request).await;
        let mut breaker = self.breaker();
        match result {
            Ok(msg) => {
                if admit == Admit::Probe {
                    tracing::info!(subject, "database service answered: circuit closed");
                }
                breaker.on_success();
                Ok(msg.payload)
            }
            Err(e) => {
                let was = breaker.state();
                breaker.on_failure(Instant::now());
                if was != BreakerState::Open && breaker.state() == BreakerState::Open {
                    tracing::warn!(subject, open_for = ?self.policy.breaker_open, "circuit opened: database service failing");
                }
                Err(match e.kind() {
                    RequestErrorKind::NoResponders => RequestError::NoResponders,
                    RequestErrorKind::TimedOut => RequestError::Timeout,
                    _ => RequestError::Other(e.to_string()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_facing_texts() {
        assert_eq!(
            RequestError::NoResponders.to_string(),
            "database service not running"
        );
        assert_eq!(RequestError::Timeout.to_string(), "timeout");
        assert_eq!(
            RequestError::CircuitOpen {
                retry_in: Duration::from_millis(4200)
            }
            .to_string(),
            "circuit open, retrying in 5s"
        );
        assert_eq!(
            RequestError::CircuitOpen {
                retry_in: Duration::ZERO
            }
            .to_string(),
            "circuit open, probing for recovery"
        );
    }
}
