//! Correlation ids and event ids.
//!
//! Every incoming platform event gets a [`Trace`]: its correlation id (from the
//! `Rosey-Correlation-Id` header, else the payload's `correlation_id` field, else a new one) and
//! a counter. Everything the bot emits because of the event carries the correlation id as a
//! header; each database event also gets a `Rosey-Event-Id` of `<correlation-id>:<n>` with
//! n = 1, 2, ... in emission order, so the service's commit notices name exactly which of the
//! event's effects were committed.
//!
//! Event ids are unique as long as correlation ids are: the bot's own ids contain a per-process
//! nonce and a sequence number; a connector that reuses an id on purpose (a retry) gets the same
//! event ids, which a de-duplicating (durable) service then treats as duplicates.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use rosey_protocol::headers::{CORRELATION_ID, EVENT_ID, MAX_EVENT_ID_LEN};

/// Longest accepted incoming correlation id; longer (or otherwise unusable) ids are replaced by
/// a generated one, so `<id>:<n>` always fits the service's event-id limit.
pub const MAX_CORRELATION_ID_LEN: usize = MAX_EVENT_ID_LEN - 12;

/// One causal chain: an incoming event or a background tick.
#[derive(Debug, Clone)]
pub struct Trace {
    inner: Arc<TraceInner>,
}

#[derive(Debug)]
struct TraceInner {
    correlation_id: String,
    next_event: AtomicU32,
}

impl Trace {
    fn new(correlation_id: String) -> Self {
        Trace {
            inner: Arc::new(TraceInner {
                correlation_id,
                next_event: AtomicU32::new(1),
            }),
        }
    }

    pub fn correlation_id(&self) -> &str {
        &self.inner.correlation_id
    }

    /// Headers for a request or platform action: the correlation id only.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CORRELATION_ID, self.correlation_id());
        h
    }

    /// Headers for a database event: the correlation id and the next event id.
    pub fn event_headers(&self) -> (HeaderMap, String) {
        let n = self.inner.next_event.fetch_add(1, Ordering::Relaxed);
        let event_id = format!("{}:{n}", self.correlation_id());
        let mut h = self.headers();
        h.insert(EVENT_ID, event_id.as_str());
        (h, event_id)
    }
}

/// Makes traces: adopts usable incoming ids, generates the rest.
#[derive(Debug)]
pub struct TraceSource {
    prefix: String,
    seq: AtomicU64,
}

impl TraceSource {
    /// Generated ids look like `<bot_name>-<nonce>-<seq>`; the nonce differs between processes
    /// and restarts.
    pub fn new(bot_name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let nonce = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        let mut name: String = bot_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(24)
            .collect();
        if name.is_empty() {
            name.push_str("bot");
        }
        TraceSource {
            prefix: format!("{name}-{nonce:016x}"),
            seq: AtomicU64::new(1),
        }
    }

    /// A trace with a fresh id.
    pub fn fresh(&self) -> Trace {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Trace::new(format!("{}-{n}", self.prefix))
    }

    /// The trace of an incoming event: the header's id, else the payload's, else a fresh one.
    pub fn adopt(&self, header: Option<&str>, payload: Option<&str>) -> Trace {
        match [header, payload]
            .into_iter()
            .flatten()
            .find(|id| usable(id))
        {
            Some(id) => Trace::new(id.to_owned()),
            None => self.fresh(),
        }
    }
}

/// Non-empty, not too long, printable ASCII without spaces (safe in a header and in an event id).
fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CORRELATION_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopts_header_then_payload_then_generates() {
        let src = TraceSource::new("rosey bot!");
        assert_eq!(src.adopt(Some("h1"), Some("p1")).correlation_id(), "h1");
        assert_eq!(src.adopt(None, Some("p1")).correlation_id(), "p1");
        assert_eq!(src.adopt(Some(""), Some("p1")).correlation_id(), "p1");
        let a = src.adopt(None, None);
        let b = src.adopt(Some("has space"), None);
        assert!(
            a.correlation_id().starts_with("roseybot-"),
            "{}",
            a.correlation_id()
        );
        assert_ne!(a.correlation_id(), b.correlation_id());
        let long = "x".repeat(MAX_CORRELATION_ID_LEN + 1);
        assert_ne!(src.adopt(Some(&long), None).correlation_id(), long);
    }

    #[test]
    fn event_ids_count_up_per_trace() {
        let t = TraceSource::new("r").adopt(Some("c-9"), None);
        let (h1, id1) = t.event_headers();
        let (_, id2) = t.clone().event_headers();
        assert_eq!((id1.as_str(), id2.as_str()), ("c-9:1", "c-9:2"));
        assert_eq!(h1.get(CORRELATION_ID).map(|v| v.as_str()), Some("c-9"));
        assert_eq!(h1.get(EVENT_ID).map(|v| v.as_str()), Some("c-9:1"));
        assert!(t.headers().get(EVENT_ID).is_none());
    }
}
