//! Counters the bot keeps about itself, readable from a [`crate::BotHandle`].

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub events_received: AtomicU64,
    pub events_malformed: AtomicU64,
    pub db_events_published: AtomicU64,
    pub db_publish_failures: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_short_circuited: AtomicU64,
    pub pm_commands: AtomicU64,
    pub pm_denied: AtomicU64,
    pub audit_failures: AtomicU64,
    pub actions_sent: AtomicU64,
    pub action_failures: AtomicU64,
    pub outbound_sent: AtomicU64,
    pub outbound_failed: AtomicU64,
    pub reconnects: AtomicU64,
}

/// A snapshot of the bot's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BotStats {
    /// Platform events received (valid or not).
    pub events_received: u64,
    /// Platform events that could not be parsed or named no known kind (logged and ignored).
    pub events_malformed: u64,
    /// Database events handed to the NATS client.
    pub db_events_published: u64,
    /// Database events the client refused or did not accept in time.
    pub db_publish_failures: u64,
    /// Requests to the database service that got a reply.
    pub requests_ok: u64,
    /// Requests that failed (no responders, timeout, connection), after retries.
    pub requests_failed: u64,
    /// Request attempts refused by the open circuit breaker without touching NATS.
    pub requests_short_circuited: u64,
    /// Authorized PM commands run.
    pub pm_commands: u64,
    /// PM commands refused (sender not a moderator or unknown).
    pub pm_denied: u64,
    /// PM command audit records that could not be published (the NATS client refused them or
    /// did not take them in time), or that were still larger than the bot's record limit.
    pub audit_failures: u64,
    /// Platform actions published (chat, PM, playlist, channel).
    pub actions_sent: u64,
    /// Platform actions that could not be sent.
    pub action_failures: u64,
    /// Outbound-queue messages sent and marked sent.
    pub outbound_sent: u64,
    /// Outbound-queue messages whose sending failed (marked failed).
    pub outbound_failed: u64,
    /// Times the NATS connection came back after a disconnection.
    pub reconnects: u64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BotStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BotStats {
            events_received: g(&self.events_received),
            events_malformed: g(&self.events_malformed),
            db_events_published: g(&self.db_events_published),
            db_publish_failures: g(&self.db_publish_failures),
            requests_ok: g(&self.requests_ok),
            requests_failed: g(&self.requests_failed),
            requests_short_circuited: g(&self.requests_short_circuited),
            pm_commands: g(&self.pm_commands),
            pm_denied: g(&self.pm_denied),
            audit_failures: g(&self.audit_failures),
            actions_sent: g(&self.actions_sent),
            action_failures: g(&self.action_failures),
            outbound_sent: g(&self.outbound_sent),
            outbound_failed: g(&self.outbound_failed),
            reconnects: g(&self.reconnects),
        }
    }
}
