//! Counters the bot keeps about itself, readable from a [`crate::BotHandle`].

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub events_received: AtomicU64,
    pub events_malformed: AtomicU64,
    pub db_events_published: AtomicU64,
    pub db_publish_failures: AtomicU64,
    pub db_publish_retries: AtomicU64,
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
    pub client_drops: AtomicU64,
}

pub use rosey_protocol::platform::BotStats;

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
            db_publish_retries: g(&self.db_publish_retries),
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
            client_drops: g(&self.client_drops),
        }
    }
}
