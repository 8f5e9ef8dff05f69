//! The load engine: the one phase loop every scenario runs (methodology: harness/METHODOLOGY.md,
//! "Load").
//!
//! A phase is a *schedule* (rate or burst, message count, publishers), a *script* (what message
//! `i` is: subject, payload, kind, and how many proofs it must produce), and a *proof* (how the
//! harness learns it was delivered: commit notices naming its event ids, a reply, its own
//! arrival at a subscriber, or a correlated message such as the bot's reply PM), optionally with
//! *taps* that timestamp intermediate hops by correlation id.
//!
//! Open loop (the default): message `i` has the intended send time `start + i / rate` (wrk2,
//! OMB's `UniformRateLimiter`). A sender waits for that time, records the send delay
//! (actual − intended) in its own histogram, and publishes; latency runs from the intended time
//! to the proof of delivery, so a stall is charged to every message it delayed. The wait before
//! an intended time lies outside the measured interval of every message, and nothing sleeps
//! between a message's intended time and its proof. A publish the client refuses still counts
//! as sent (it was due by the schedule), so it ends up lost, never silently dropped.
//!
//! Senders are dedicated OS threads, not tokio tasks: tokio's timer has a 1 ms granularity,
//! which would add up to a millisecond of harness-made send delay to every message at the rates
//! we use. A thread sleeps with the kernel's precision (tens of microseconds) and, where a
//! scenario asks for it, spins for the last stretch.
//!
//! Commit-notice proofs: with [`Ids::Direct`] message `i` is one database event with event id
//! `<prefix><i>`; with [`Ids::ViaBot`] the bot derives event ids `<correlation id>:<n>` for the
//! `n` database events one platform event causes, and the message counts once all of them are
//! in commit notices. An event id listed twice in `ids` is a duplicate; an id in
//! `duplicate_ids` (a durable-mode redelivery the service skipped) proves the event if its first
//! notice was missed, and is otherwise counted as a skipped redelivery.

use crate::histogram;
use crate::publishers::Publishers;
use crate::record::{PhaseRecord, Tracker};
use anyhow::Context;
use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rosey_protocol::{db::CommitNotice, headers, subjects};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Builds the payload of message `i`.
pub type PayloadFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;
/// Decides whether a reply proves success.
pub type ReplyCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Offset of message `i`'s intended send time from the start of a schedule at `rate_per_s`.
/// Computed from `i` directly (not by adding intervals), so the schedule never drifts.
pub fn intended_offset(i: u64, rate_per_s: f64) -> Duration {
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
        return Duration::ZERO;
    }
    let ns = (i as f64) * 1e9 / rate_per_s;
    Duration::from_nanos(ns.round() as u64)
}

/// A rate is a finite number of messages per second above zero.
pub fn check_rate(rate_per_s: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate_per_s.is_finite() && rate_per_s > 0.0,
        "rate_per_s must be positive"
    );
    Ok(())
}

/// How many messages a phase of `duration_s` at `rate_per_s` sends (at least one).
pub fn message_count(rate_per_s: f64, duration_s: f64) -> u64 {
    ((rate_per_s * duration_s).round() as u64).max(1)
}

/// A fixed-rate schedule; `rate_per_s == None` is a burst (every message intended at `start`).
/// With `burst_size` n > 1 the messages come in groups of n intended at the same instant, the
/// groups at `rate_per_s / n` per second (n publishers releasing at once).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub rate_per_s: Option<f64>,
    pub count: u64,
    pub burst_size: u64,
}

impl Schedule {
    pub fn intended(&self, i: u64) -> Instant {
        let n = self.burst_size.max(1);
        match self.rate_per_s {
            Some(rate) => self.start + intended_offset(i / n, rate / n as f64),
            None => self.start,
        }
    }
}

/// Make this thread's timed sleeps end when asked: the kernel's default timer slack (50 µs) lets
/// a sleep overrun by that much, which a sender would add to every message's send delay. Every
/// thread that waits with [`wait_until`] calls this first; failure only costs precision.
pub fn precise_timers() {
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
}

/// Block the calling (non-async) thread until `deadline`: sleep until `spin` before it, then
/// spin. Returns immediately if the deadline has passed.
pub fn wait_until(deadline: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// What the senders of one phase observed.
#[derive(Debug, Clone)]
pub struct SendStats {
    /// Actual − intended send time.
    pub send_delay: Histogram<u64>,
    /// Publishes the client refused (counted as sent, so they end up lost).
    pub errors: u64,
}

impl SendStats {
    /// Nothing sent yet.
    pub fn empty() -> SendStats {
        SendStats {
            send_delay: crate::histogram::new_histogram(),
            errors: 0,
        }
    }
}

/// Headers every harness message carries: its event id and a correlation id (the same value,
/// since one harness message is one event).
pub fn id_headers(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_ID, id);
    h.insert(headers::CORRELATION_ID, id);
    h
}

/// One message of a phase.
#[derive(Debug, Clone)]
pub struct Message {
    /// Index into the script's kind labels (per-kind counts and histograms).
    pub kind: usize,
    pub subject: String,
    pub payload: Bytes,
    /// Proofs this message must produce: its database events (commit notices, at most 31), or 1
    /// (a reply, a delivery, a correlated message). 0: sent, nothing to prove, not counted.
    pub expected_events: u32,
}

/// Builds message `i` of a phase whose ids start with the given prefix. Called more than once
/// per index; must be deterministic.
pub type MessageFn = Arc<dyn Fn(&str, u64) -> Message + Send + Sync>;

/// What each message of a phase is.
#[derive(Clone)]
pub struct Script {
    /// Kind labels, indexed by [`Message::kind`].
    pub kinds: Vec<String>,
    pub message: MessageFn,
    /// The same script in words a worker can rebuild it from (distributed load), when there are
    /// such words ([`crate::workers::RemoteScript::script`]); `None` for an arbitrary closure.
    pub remote: Option<crate::workers::RemoteScript>,
}

impl Script {
    /// Every message on `subject`, payload `payload(i)`, one proof each.
    pub fn uniform(subject: impl Into<String>, payload: PayloadFn) -> Script {
        let subject = subject.into();
        Script {
            kinds: vec!["message".into()],
            message: Arc::new(move |_, i| Message {
                kind: 0,
                subject: subject.clone(),
                payload: payload(i),
                expected_events: 1,
            }),
            remote: None,
        }
    }

    /// A script of several kinds.
    pub fn new(
        kinds: &[&str],
        message: impl Fn(&str, u64) -> Message + Send + Sync + 'static,
    ) -> Script {
        Script {
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            message: Arc::new(message),
            remote: None,
        }
    }
}

/// How commit notices name a message's database events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// The message's own id is its event id (header `Rosey-Event-Id`, and `Nats-Msg-Id` on
    /// JetStream).
    Direct,
    /// The bot's `<correlation id>:<n>`.
    ViaBot,
}

/// How a phase learns that a message was delivered.
#[derive(Clone)]
pub enum Proof {
    /// Commit notices of the database service (`rosey.db.committed`).
    CommitNotices(Ids),
    /// Replies (to requests sent with reply subject `<inbox>.<index>`) that pass the check.
    Replies(ReplyCheck),
    /// The message itself arriving at a subscriber of its subject (raw pub/sub, no service),
    /// confirmed by its event-id header. Every message of the script must share one subject.
    Subscribed,
    /// A message on `subject` carrying the message's correlation id whose payload passes the
    /// check (e.g. the bot's reply PM). Later messages with the same id are counted as extra.
    Correlated { subject: String, check: ReplyCheck },
}

/// How messages are handed to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVia {
    /// Core publish (fire and forget; the proof says whether it arrived).
    Core,
    /// JetStream publish with `Nats-Msg-Id`; the PubAck proves the stream stored the message
    /// (counted separately); the proof still says whether the database committed it.
    JetStream,
}

/// When the drain after the last send may stop before every message is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainUntil {
    /// Every message proven (or the deadline).
    All,
    /// The last message proven: the service commits one subject's events in arrival order and
    /// publishes notices in commit order, so anything sent earlier and still unproven then was
    /// never received (core-mode loss). Falls back to the deadline.
    LastProven,
}

/// How a tap recognises the message it timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapMatch {
    /// By the `Rosey-Correlation-Id` header.
    CorrelationId,
    /// By subject: the reply subject of the message the previous tap matched (replies to the
    /// bot's requests carry no headers of ours).
    ReplyToPrevious,
}

/// An intermediate point of a multi-hop proof: the first message seen on `subject` for each of
/// the phase's messages ends the hop `hop` (which starts at the previous tap, or at the intended
/// send time for the first tap).
#[derive(Debug, Clone)]
pub struct Tap {
    pub hop: String,
    pub description: String,
    pub subject: String,
    pub matches: TapMatch,
}

/// The taps of a phase, the connection they listen on (one of their own, so their traffic never
/// delays the proof listener), and the name of the hop from the last tap to the proof.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    pub client: Option<Client>,
    pub points: Vec<Tap>,
    pub last_hop: String,
    pub last_description: String,
}

impl Taps {
    pub fn none() -> Taps {
        Taps::default()
    }
}

/// One phase.
#[derive(Clone)]
pub struct PhaseSpec {
    /// Unique per phase; becomes the id prefix.
    pub id_prefix: String,
    /// `None`: burst, everything intended at once.
    pub rate_per_s: Option<f64>,
    pub count: u64,
    /// Messages intended at the same instant (1: evenly spaced). With as many connections as the
    /// burst size, every connection carries one member of each burst.
    pub burst_size: u64,
    /// The publishers' connections: message `i` goes out on connection `i % n`, all from their
    /// one thread, in schedule order.
    pub senders: Publishers,
    pub script: Script,
    pub via: SendVia,
    pub proof: Proof,
    pub taps: Taps,
    /// Longest wait after the last send for the outstanding proofs.
    pub drain_timeout: Duration,
    pub drain_until: DrainUntil,
    /// Spin this long before each intended time (0: sleep only).
    pub spin: Duration,
    /// Zero, except in the calibration's own test: spin this long inside every message's timed
    /// window (after its send instant, before the publish), as a harness that cost this much
    /// more would. Calibration must catch it.
    pub harness_fault: Duration,
}

impl PhaseSpec {
    /// A phase of `script` over `senders`, proven by `proof`, waiting at most `drain_timeout`
    /// for the proofs: one message at a time as fast as the client takes them (no rate, no
    /// count yet), core publishes, no taps, drained until every message is proven, no spin, no
    /// fault. Callers set what differs with struct update syntax.
    pub fn new(
        senders: Publishers,
        script: Script,
        proof: Proof,
        drain_timeout: Duration,
    ) -> PhaseSpec {
        PhaseSpec {
            id_prefix: String::new(),
            rate_per_s: None,
            count: 0,
            burst_size: 1,
            senders,
            script,
            via: SendVia::Core,
            proof,
            taps: Taps::none(),
            drain_timeout,
            drain_until: DrainUntil::All,
            spin: Duration::ZERO,
            harness_fault: Duration::ZERO,
        }
    }
}

/// Per-kind figures of a phase.
#[derive(Debug, Clone)]
pub struct KindOutcome {
    pub name: String,
    /// Messages of this kind that had something to prove.
    pub sent: u64,
    pub committed: u64,
    pub latency: Histogram<u64>,
    /// Messages of this kind with nothing to prove (sent, not counted).
    pub unproven_sent: u64,
}

/// One hop's histogram.
#[derive(Debug, Clone)]
pub struct HopOutcome {
    pub name: String,
    pub description: String,
    pub latency: Histogram<u64>,
    /// Messages the tap that ends this hop matched (repeats included, e.g. retries).
    pub seen: u64,
}

/// The commit notices of one service process (instance id) that carried our ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNotices {
    /// `CommitNotice::instance` (empty from a service that sends none).
    pub instance: String,
    /// Arrival of its first and its last such notice.
    pub first: Instant,
    pub last: Instant,
    pub notices: u64,
}

/// Count a notice of `instance` arriving at `at`.
fn note_instance(all: &mut Vec<InstanceNotices>, instance: &str, at: Instant) {
    match all.iter_mut().find(|n| n.instance == instance) {
        Some(n) => {
            n.first = n.first.min(at);
            n.last = n.last.max(at);
            n.notices += 1;
        }
        None => all.push(InstanceNotices {
            instance: instance.to_owned(),
            first: at,
            last: at,
            notices: 1,
        }),
    }
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseOutcome {
    pub record: PhaseRecord,
    pub send: SendStats,
    /// All sent messages were proven before the drain deadline.
    pub drained: bool,
    /// From the last send to the end of the drain (waiting for outstanding proofs).
    pub drain_time: Duration,
    /// From the schedule's start to the end of the drain.
    pub elapsed: Duration,
    /// When the schedule started (intended time of message 0).
    pub start: Instant,
    pub kinds: Vec<KindOutcome>,
    /// Proofs that arrived twice (an event id committed twice, a request answered twice).
    pub duplicate_events: u64,
    /// Redeliveries the service skipped because the event was already committed.
    pub skipped_redeliveries: u64,
    /// Event ids of ours with an `n` beyond what the message should have caused.
    pub unexpected_events: u64,
    /// Correlated messages beyond the first for one message (e.g. a reply split into chunks).
    pub extra_messages: u64,
    /// A few payloads that arrived as proof but failed its check.
    pub rejected_examples: Vec<String>,
    /// The commit notices that carried at least one of our ids, per service process
    /// (`CommitNotice::instance`), in the order of each process's first notice.
    pub notices_by_instance: Vec<InstanceNotices>,
    /// JetStream: messages the stream confirmed storing (PubAck) / messages it never confirmed,
    /// however often they were published again.
    pub pub_acks: u64,
    pub pub_ack_errors: u64,
    /// JetStream: publishes repeated because no PubAck came (the same `Nats-Msg-Id`).
    pub pub_retries: u64,
    /// Per-hop histograms (empty without taps).
    pub hops: Vec<HopOutcome>,
}

/// Headers of message `id` for a proof: the correlation id always; the event id (and, on
/// JetStream, the de-duplication id) unless the bot derives the event ids.
fn message_headers(id: &str, proof: &Proof, via: SendVia) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::CORRELATION_ID, id);
    let via_bot = matches!(
        proof,
        Proof::CommitNotices(Ids::ViaBot) | Proof::Correlated { .. }
    );
    if !via_bot {
        h.insert(headers::EVENT_ID, id);
        if via == SendVia::JetStream {
            h.insert(headers::NATS_MSG_ID, id);
        }
    }
    h
}

/// A whole-message proof's "first message seen" bit (such proofs use bit 0 only).
const ANSWERED: u32 = 1 << 31;

/// Bookkeeping of the proof listener.
struct ProofState {
    /// Bit n-1 set when proof n of message i arrived.
    seen: Vec<u32>,
    expected: Vec<u8>,
    kinds: Vec<u8>,
    kind_confirmed: Vec<u64>,
    kind_latency: Vec<Histogram<u64>>,
    duplicate_events: u64,
    skipped_redeliveries: u64,
    unexpected_events: u64,
    extra_messages: u64,
    rejected_examples: Vec<String>,
    notices_by_instance: Vec<InstanceNotices>,
    last_proven: bool,
    /// Proof time per message, kept only when taps need it.
    done_at: Option<HashMap<u64, Instant>>,
}

impl ProofState {
    /// Nothing proven yet: `expected[i]` proofs due for message `i` of kind `kinds[i]`.
    fn new(expected: Vec<u8>, kinds: Vec<u8>, n_kinds: usize, taps: bool) -> ProofState {
        ProofState {
            seen: vec![0; expected.len()],
            expected,
            kinds,
            kind_confirmed: vec![0; n_kinds],
            kind_latency: (0..n_kinds).map(|_| histogram::new_histogram()).collect(),
            duplicate_events: 0,
            skipped_redeliveries: 0,
            unexpected_events: 0,
            extra_messages: 0,
            rejected_examples: Vec::new(),
            notices_by_instance: Vec::new(),
            last_proven: false,
            done_at: taps.then(HashMap::new),
        }
    }
}

struct ProofCore {
    state: Mutex<ProofState>,
    tracker: Arc<Tracker>,
    ids: Ids,
    schedule: Schedule,
    last_index: u64,
    progress: Notify,
}

impl ProofCore {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProofState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Split an event id into (message index, event number).
    fn parse(&self, id: &str) -> Option<(u64, u32)> {
        match self.ids {
            Ids::Direct => Some((self.tracker.index_of(id)?, 1)),
            Ids::ViaBot => {
                let (corr, n) = id.rsplit_once(':')?;
                Some((self.tracker.index_of(corr)?, n.parse().ok()?))
            }
        }
    }

    /// Record proof `n` of message `index`; true when it completed the message. `redelivery`:
    /// a proof the sender of the proof marks as a repeat (not a duplicate if already seen).
    fn mark(&self, s: &mut ProofState, index: u64, n: u32, redelivery: bool) -> Option<bool> {
        let i = usize::try_from(index).ok().filter(|i| *i < s.seen.len())?;
        let expected = u32::from(s.expected[i]);
        if n == 0 || n > expected {
            s.unexpected_events += 1;
            return Some(false);
        }
        let bit = 1u32 << (n - 1);
        if s.seen[i] & bit != 0 {
            if redelivery {
                s.skipped_redeliveries += 1;
            } else {
                s.duplicate_events += 1;
            }
            return Some(false);
        }
        s.seen[i] |= bit;
        Some((s.seen[i] & !ANSWERED).count_ones() == expected)
    }

    /// Message `index` is fully proven at `at`.
    fn complete(&self, s: &mut ProofState, index: u64, at: Instant) {
        let i = index as usize;
        let kind = usize::from(s.kinds[i]);
        s.kind_confirmed[kind] += 1;
        histogram::record_duration(
            &mut s.kind_latency[kind],
            at.saturating_duration_since(self.schedule.intended(index)),
        );
        if index == self.last_index {
            s.last_proven = true;
        }
        if let Some(done) = s.done_at.as_mut() {
            done.insert(index, at);
        }
        self.tracker.confirm_index(index, at);
    }

    fn on_notice(&self, notice: &CommitNotice, at: Instant) {
        let mut s = self.lock();
        let mut ours = false;
        let redeliveries = notice.duplicate_ids.iter().map(|i| (i, true));
        for (id, redelivery) in notice.ids.iter().map(|i| (i, false)).chain(redeliveries) {
            let Some((index, n)) = self.parse(id) else {
                continue;
            };
            match self.mark(&mut s, index, n, redelivery) {
                None => continue,
                Some(done) => {
                    ours = true;
                    if done {
                        self.complete(&mut s, index, at);
                    }
                }
            }
        }
        if ours {
            note_instance(&mut s.notices_by_instance, &notice.instance, at);
        }
        drop(s);
        self.progress.notify_waiters();
    }

    /// A whole-message proof (reply, delivery, correlated message) for `index`, passing its
    /// check or not. `repeat_is_extra`: only the first message for an index is judged, later ones
    /// are extra (a reply PM split into chunks), never duplicates.
    fn on_whole(
        &self,
        index: Option<u64>,
        at: Instant,
        ok: bool,
        payload: &[u8],
        repeat_is_extra: bool,
    ) {
        let mut s = self.lock();
        let slot = index.and_then(|i| usize::try_from(i).ok().filter(|i| *i < s.seen.len()));
        if repeat_is_extra {
            if let Some(i) = slot {
                if s.seen[i] & ANSWERED != 0 {
                    s.extra_messages += 1;
                    return;
                }
                s.seen[i] |= ANSWERED;
            }
        }
        if !ok || index.is_none() {
            if ok {
                // No index: not a proof of anything.
            } else if s.rejected_examples.len() < 3 {
                s.rejected_examples
                    .push(String::from_utf8_lossy(payload).chars().take(200).collect());
            }
            drop(s);
            self.tracker.reject();
            return;
        }
        let index = index.unwrap_or_default();
        match self.mark(&mut s, index, 1, false) {
            Some(true) => self.complete(&mut s, index, at),
            Some(false) => {}
            None => {
                drop(s);
                // An index this phase never sent: the tracker counts it as unknown.
                self.tracker.confirm_index(index, at);
                return;
            }
        }
        drop(s);
        self.progress.notify_waiters();
    }

    fn last_proven(&self) -> bool {
        self.lock().last_proven
    }
}

/// The proof listener: one subscription of the listener connection.
async fn listen_proof(
    mut sub: Subscriber,
    proof: Arc<ProofCore>,
    kind: Proof,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        // The instant of arrival is taken before the message is parsed.
        let at = Instant::now();
        match &kind {
            Proof::CommitNotices(_) => {
                if let Ok(notice) = serde_json::from_slice::<CommitNotice>(&msg.payload) {
                    proof.on_notice(&notice, at);
                }
            }
            Proof::Replies(check) => {
                let index = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok());
                proof.on_whole(index, at, check(&msg.payload), &msg.payload, false);
            }
            Proof::Subscribed => {
                let index = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::EVENT_ID))
                    .and_then(|id| proof.tracker.index_of(id.as_str()));
                proof.on_whole(index, at, true, &msg.payload, false);
            }
            Proof::Correlated { check, .. } => {
                let Some(index) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::CORRELATION_ID))
                    .and_then(|id| proof.tracker.index_of(id.as_str()))
                else {
                    continue; // Someone else's message on the subject.
                };
                proof.on_whole(Some(index), at, check(&msg.payload), &msg.payload, true);
            }
        }
    }
    let _ = sub.unsubscribe().await;
}

/// What the taps saw.
#[derive(Default)]
struct TapState {
    /// Per tap: first-seen instant per message index, and messages matched (repeats included).
    first: Vec<HashMap<u64, Instant>>,
    matched: Vec<u64>,
    /// Per tap: reply subject of the matched message → index (for a following ReplyToPrevious).
    reply_to: Vec<HashMap<String, u64>>,
    /// Per tap: messages on a ReplyToPrevious tap seen before their request (bounded).
    early: Vec<HashMap<String, Instant>>,
}

async fn listen_taps(
    mut subs: Vec<Subscriber>,
    taps: Vec<Tap>,
    tracker: Arc<Tracker>,
    state: Arc<Mutex<TapState>>,
    cancel: CancellationToken,
) {
    use futures::stream::SelectAll;
    let mut all = SelectAll::new();
    for (k, sub) in subs.drain(..).enumerate() {
        all.push(sub.map(move |m| (k, m)));
    }
    loop {
        let (k, msg) = tokio::select! {
            _ = cancel.cancelled() => break,
            m = all.next() => match m { Some(m) => m, None => break },
        };
        let at = Instant::now();
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        match taps[k].matches {
            TapMatch::CorrelationId => {
                let Some(i) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::CORRELATION_ID))
                    .and_then(|id| tracker.index_of(id.as_str()))
                else {
                    continue;
                };
                s.matched[k] += 1;
                if s.first[k].contains_key(&i) {
                    continue; // A retry: the first one ends the hop.
                }
                s.first[k].insert(i, at);
                if let Some(reply) = &msg.reply {
                    let reply = reply.to_string();
                    if let Some(next) = k.checked_add(1).filter(|n| *n < taps.len()) {
                        if let Some(early) = s.early[next].remove(&reply) {
                            s.first[next].entry(i).or_insert(early);
                        }
                    }
                    s.reply_to[k].insert(reply, i);
                }
            }
            TapMatch::ReplyToPrevious => {
                let Some(prev) = k.checked_sub(1) else {
                    continue;
                };
                let subject = msg.subject.to_string();
                match s.reply_to[prev].get(&subject).copied() {
                    Some(i) => {
                        s.matched[k] += 1;
                        s.first[k].entry(i).or_insert(at);
                    }
                    None => {
                        if s.early[k].len() < 10_000 {
                            s.early[k].insert(subject, at);
                        }
                    }
                }
            }
        }
    }
    for sub in all.iter_mut() {
        let _ = sub.get_mut().unsubscribe().await;
    }
}

/// Run one phase: subscribe to the proof (and the taps) first and prove the subscriptions
/// active, send on schedule, then wait for the outstanding proofs until the drain deadline.
pub async fn run_phase(
    listener: &Client,
    spec: PhaseSpec,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<PhaseOutcome> {
    anyhow::ensure!(spec.count > 0, "a phase sends at least one message");
    // `Publishers` always holds at least one connection.
    if let Some(rate) = spec.rate_per_s {
        check_rate(rate)?;
    }
    let capacity = usize::try_from(spec.count).context("phase too large")?;
    let mut expected = Vec::with_capacity(capacity);
    let mut kinds = Vec::with_capacity(capacity);
    let mut kind_sent = vec![0u64; spec.script.kinds.len()];
    let mut kind_unproven = vec![0u64; spec.script.kinds.len()];
    let mut subject0 = None;
    for i in 0..spec.count {
        let m = (spec.script.message)(&spec.id_prefix, i);
        anyhow::ensure!(
            m.kind < spec.script.kinds.len() && m.kind < 256,
            "script kind {} out of range",
            m.kind
        );
        anyhow::ensure!(m.expected_events <= 31, "at most 31 proofs per message");
        if !matches!(spec.proof, Proof::CommitNotices(_)) {
            anyhow::ensure!(
                m.expected_events <= 1,
                "a reply, delivery or correlated proof proves one message at a time"
            );
        }
        if matches!(spec.proof, Proof::Subscribed) {
            let s0 = subject0.get_or_insert_with(|| m.subject.clone());
            anyhow::ensure!(*s0 == m.subject, "a subscribed proof needs one subject");
        }
        expected.push(m.expected_events as u8);
        kinds.push(m.kind as u8);
        if m.expected_events > 0 {
            kind_sent[m.kind] += 1;
        } else {
            kind_unproven[m.kind] += 1;
        }
    }
    // The last message that has something to prove.
    let last_index = (0..spec.count)
        .rev()
        .find(|i| expected[*i as usize] > 0)
        .unwrap_or(0);

    // Subscribe to the proof first and prove the subscription active before anything is sent.
    let (inbox, sub) = match &spec.proof {
        Proof::CommitNotices(_) => (
            None,
            listener
                .subscribe(subjects::COMMITTED)
                .await
                .context("subscribe to commit notices")?,
        ),
        Proof::Replies(_) => {
            let inbox = listener.new_inbox();
            let sub = listener
                .subscribe(format!("{inbox}.*"))
                .await
                .context("subscribe to the reply inbox")?;
            (Some(inbox), sub)
        }
        Proof::Subscribed => (
            None,
            listener
                .subscribe(subject0.clone().unwrap_or_default())
                .await
                .context("subscribe to the phase subject")?,
        ),
        Proof::Correlated { subject, .. } => (
            None,
            listener
                .subscribe(subject.clone())
                .await
                .context("subscribe to the correlated proof subject")?,
        ),
    };
    ensure_subscribed(listener).await?;
    // Taps listen on a connection of their own (their traffic never delays the proof).
    let tap_client = if spec.taps.points.is_empty() {
        None
    } else {
        Some(
            spec.taps
                .client
                .clone()
                .context("a phase with taps needs a tap connection")?,
        )
    };
    let mut tap_subs = Vec::new();
    if let Some(c) = &tap_client {
        for tap in &spec.taps.points {
            tap_subs.push(
                c.subscribe(tap.subject.clone())
                    .await
                    .with_context(|| format!("tap {}", tap.subject))?,
            );
        }
        ensure_subscribed(c).await?;
    }

    // The schedule starts a little in the future so the sender thread is up before its first
    // intended time; otherwise thread start-up would show as send delay.
    let lead = Duration::from_millis(20);
    let start = Instant::now() + lead;
    let schedule = Schedule {
        start,
        rate_per_s: spec.rate_per_s,
        count: spec.count,
        burst_size: spec.burst_size,
    };
    let tracker = Arc::new(Tracker::new(spec.id_prefix.clone(), capacity, start));
    let taps_on = !spec.taps.points.is_empty();
    let proof = Arc::new(ProofCore {
        state: Mutex::new(ProofState::new(
            expected,
            kinds,
            spec.script.kinds.len(),
            taps_on,
        )),
        tracker: tracker.clone(),
        ids: match spec.proof {
            Proof::CommitNotices(ids) => ids,
            _ => Ids::Direct,
        },
        schedule,
        last_index,
        progress: Notify::new(),
    });
    let cancel = CancellationToken::new();
    let listener_task = tokio::spawn(listen_proof(
        sub,
        proof.clone(),
        spec.proof.clone(),
        cancel.clone(),
    ));
    let n_taps = spec.taps.points.len();
    let tap_state = Arc::new(Mutex::new(TapState {
        first: vec![HashMap::new(); n_taps],
        matched: vec![0; n_taps],
        reply_to: vec![HashMap::new(); n_taps],
        early: vec![HashMap::new(); n_taps],
    }));
    let tap_task = taps_on.then(|| {
        tokio::spawn(listen_taps(
            tap_subs,
            spec.taps.points.clone(),
            tracker.clone(),
            tap_state.clone(),
            cancel.clone(),
        ))
    });

    progress.set_length(spec.count);
    progress.set_position(0);
    let spec = Arc::new(spec);
    let sent = send_paced(&spec, inbox, &tracker, schedule, progress).await;
    let send_finished = Instant::now();
    let drained = match &sent {
        Ok(_) => {
            drain(
                &proof,
                &tracker,
                spec.drain_until,
                tokio::time::Instant::now() + spec.drain_timeout,
            )
            .await
        }
        Err(_) => false,
    };
    let end = Instant::now();
    cancel.cancel();
    // A listener only ends by cancellation or a closed subscription; neither is an error of the
    // phase, whose accounting already says what arrived.
    let _ = listener_task.await;
    if let Some(t) = tap_task {
        let _ = t.await;
    }
    let (send, acks) = sent?;
    let mut pub_acks = 0;
    let mut pub_ack_errors = 0;
    let mut pub_retries = 0;
    for ack in acks {
        match ack.await {
            Ok((stored, retries)) => {
                if stored {
                    pub_acks += 1;
                } else {
                    pub_ack_errors += 1;
                }
                pub_retries += u64::from(retries);
            }
            Err(_) => pub_ack_errors += 1,
        }
    }
    let record = tracker.finish();
    let s = proof.lock();
    let kinds = spec
        .script
        .kinds
        .iter()
        .enumerate()
        .map(|(k, name)| KindOutcome {
            name: name.clone(),
            sent: kind_sent[k],
            committed: s.kind_confirmed[k],
            latency: s.kind_latency[k].clone(),
            unproven_sent: kind_unproven[k],
        })
        .collect();
    let hops = match &s.done_at {
        Some(done) => hops(
            &spec.taps,
            &tap_state.lock().unwrap_or_else(|e| e.into_inner()),
            done,
            &schedule,
        ),
        None => Vec::new(),
    };
    Ok(PhaseOutcome {
        record,
        send,
        drained,
        drain_time: end.saturating_duration_since(send_finished),
        elapsed: end.saturating_duration_since(start),
        start,
        kinds,
        duplicate_events: s.duplicate_events,
        skipped_redeliveries: s.skipped_redeliveries,
        unexpected_events: s.unexpected_events,
        extra_messages: s.extra_messages,
        rejected_examples: s.rejected_examples.clone(),
        notices_by_instance: s.notices_by_instance.clone(),
        pub_acks,
        pub_ack_errors,
        pub_retries,
        hops,
    })
}

/// Per-hop histograms: for every proven message all taps saw, intended → tap 1 → … → proof.
fn hops(
    taps: &Taps,
    seen: &TapState,
    done: &HashMap<u64, Instant>,
    schedule: &Schedule,
) -> Vec<HopOutcome> {
    let mut out: Vec<HopOutcome> = taps
        .points
        .iter()
        .enumerate()
        .map(|(k, t)| HopOutcome {
            name: t.hop.clone(),
            description: t.description.clone(),
            latency: histogram::new_histogram(),
            seen: seen.matched[k],
        })
        .collect();
    out.push(HopOutcome {
        name: taps.last_hop.clone(),
        description: taps.last_description.clone(),
        latency: histogram::new_histogram(),
        seen: done.len() as u64,
    });
    for (i, proven) in done {
        let points: Option<Vec<Instant>> = seen.first.iter().map(|f| f.get(i).copied()).collect();
        let Some(points) = points else { continue };
        let mut from = schedule.intended(*i);
        for (k, at) in points.iter().chain(std::iter::once(proven)).enumerate() {
            histogram::record_duration(&mut out[k].latency, at.saturating_duration_since(from));
            from = *at;
        }
    }
    out
}

/// Wait for the proofs themselves, with a deadline: until every sent message is proven, or (for
/// [`DrainUntil::LastProven`]) the last one is.
async fn drain(
    proof: &ProofCore,
    tracker: &Tracker,
    until: DrainUntil,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        let notified = proof.progress.notified();
        tokio::pin!(notified);
        // Register before checking so a proof between the check and the await is seen.
        notified.as_mut().enable();
        let (s, c) = tracker.counts();
        if c >= s {
            return true;
        }
        if until == DrainUntil::LastProven && proof.last_proven() {
            return false;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let (s, c) = tracker.counts();
            return c >= s;
        }
    }
}

/// JetStream publishes awaiting their PubAck: whether the stream stored the message, and how
/// many times it was published again to get there.
type Acks = Vec<tokio::task::JoinHandle<(bool, u32)>>;

/// How often a harness connection tries to reconnect after losing its server.
const HARNESS_RECONNECT_DELAY: Duration = Duration::from_millis(20);

/// The paced sender: the publishers' own thread (see [`crate::publishers`]) walks the whole
/// schedule, message `i` going out on connection `i % n`. Several connections give the service
/// several publishers at once; one thread keeps a burst's members back to back (each publish
/// only hands the message to its connection's writer task on the same thread), where a thread
/// per connection would have them contend for the cores at the very instant they are due.
async fn run_sender(
    spec: &PhaseSpec,
    inbox: Option<&str>,
    tracker: &Tracker,
    schedule: Schedule,
    progress: &indicatif::ProgressBar,
    clients: &[Client],
) -> (SendStats, Acks) {
    let mut stats = SendStats::empty();
    let mut acks = Vec::new();
    // A JetStream publish is retried until the phase's drain deadline at the latest.
    let retry_until = tokio::time::Instant::from_std(
        schedule.intended(schedule.count.saturating_sub(1)) + spec.drain_timeout,
    );
    let js: Vec<_> = if spec.via == SendVia::JetStream {
        clients
            .iter()
            .map(|c| async_nats::jetstream::new(c.clone()))
            .collect()
    } else {
        Vec::new()
    };
    // Messages intended at one instant go as a group: a burst's members (or, for a whole-phase
    // burst, up to 4,096 at a time).
    let group = match schedule.rate_per_s {
        Some(_) => schedule.burst_size.max(1),
        None => 4096,
    };
    let mut first = 0;
    while first < schedule.count {
        let end = (first + group).min(schedule.count);
        let intended = schedule.intended(first);
        // Built before the wait, every member of the group: outside every message's measured
        // interval, so a burst's last member does not wait for the others to be built.
        let batch: Vec<(u64, Message, HeaderMap)> = (first..end)
            .map(|i| {
                let m = (spec.script.message)(&spec.id_prefix, i);
                let h = message_headers(&tracker.id(i), &spec.proof, spec.via);
                (i, m, h)
            })
            .collect();
        // The group's clock starts at `intended`. A blocking wait: nothing else on this thread
        // has anything to do until then.
        wait_until(intended, spec.spin);
        for (i, m, h) in batch {
            let conn = (i % clients.len() as u64) as usize;
            let actual = Instant::now();
            histogram::record_duration(
                &mut stats.send_delay,
                actual.saturating_duration_since(intended),
            );
            if !spec.harness_fault.is_zero() {
                wait_until(Instant::now() + spec.harness_fault, spec.harness_fault);
            }
            if m.expected_events > 0 {
                tracker.mark_sending(i, intended, actual);
                // Due by the schedule: sent, whether or not the client takes it (a refused
                // publish is lost, not forgotten).
                tracker.mark_sent();
            }
            let ok = match (js.get(conn), inbox) {
                (Some(js), _) => {
                    let first = js
                        .publish_with_headers(m.subject.clone(), h.clone(), m.payload.clone())
                        .await
                        .ok();
                    let ok = first.is_some();
                    let js = js.clone();
                    acks.push(tokio::spawn(async move {
                        match natskit::client::store_until(
                            &js,
                            m.subject.into(),
                            h,
                            m.payload,
                            first,
                            retry_until,
                            |_, _| {},
                        )
                        .await
                        {
                            Ok(retries) => (true, retries),
                            Err((retries, _)) => (false, retries),
                        }
                    }));
                    ok
                }
                (None, Some(inbox)) => clients[conn]
                    .publish_with_reply_and_headers(m.subject, format!("{inbox}.{i}"), h, m.payload)
                    .await
                    .is_ok(),
                (None, None) => clients[conn]
                    .publish_with_headers(m.subject, h, m.payload)
                    .await
                    .is_ok(),
            };
            if !ok {
                stats.errors += 1;
            }
        }
        // The writer tasks put the group on the wire now, before this thread waits again.
        tokio::task::yield_now().await;
        progress.inc(end - first);
        first = end;
    }
    // Hand everything buffered to the server before the drain deadline starts counting.
    for client in clients {
        let _ = client.flush().await;
    }
    (stats, acks)
}

/// Run the sender over the schedule and wait for it. A paced schedule runs on the publishers'
/// own thread, so each publish reaches the wire without waking another thread. A whole-phase
/// burst (everything intended at once) is about getting every message out fast, not about the
/// instant of each: it runs on a thread of its own and hands the messages to the publishers'
/// thread, which writes them meanwhile, two cores at work.
async fn send_paced(
    spec: &Arc<PhaseSpec>,
    inbox: Option<String>,
    tracker: &Arc<Tracker>,
    schedule: Schedule,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(SendStats, Acks)> {
    let (job_spec, tracker, progress) = (spec.clone(), tracker.clone(), progress.clone());
    let job = move |clients: Vec<Client>| async move {
        run_sender(
            &job_spec,
            inbox.as_deref(),
            &tracker,
            schedule,
            &progress,
            &clients,
        )
        .await
    };
    if schedule.rate_per_s.is_some() {
        return spec
            .senders
            .run(move |clients| Box::pin(job(clients)))
            .await
            .context("the paced sender");
    }
    let handle = tokio::runtime::Handle::current();
    let clients = spec.senders.clients().to_vec();
    let thread = std::thread::Builder::new()
        .name("bench-burst-sender".to_owned())
        .spawn(move || {
            precise_timers();
            handle.block_on(job(clients))
        })
        .context("spawn the burst sender thread")?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("join the burst sender thread")?
        .map_err(|_| anyhow::anyhow!("the burst sender thread panicked"))
}

/// Connect a client named `name`.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<Client> {
    // A cluster's URL lists every node: the client fails over between them.
    let servers =
        natskit::client::server_addrs(&rosey_protocol::connect::NatsConnectConfig::new(url))?;
    async_nats::ConnectOptions::new()
        .name(name)
        // After an outage the harness must be back before the services it measures (whose
        // clients back off exponentially), or it would miss their first replies and notices and
        // charge that to them: it retries every 20 ms, for ever.
        .max_reconnects(None)
        .reconnect_delay_callback(|_| HARNESS_RECONNECT_DELAY)
        .connect(servers)
        .await
        .with_context(|| format!("connect to nats at {url}"))
}

/// Prove that every subscription `client` made so far is active on the server: the server
/// handles one connection's operations in order, so once a message published after them comes
/// back through the server, they are registered.
pub async fn ensure_subscribed(client: &Client) -> anyhow::Result<()> {
    let probe = client.new_inbox();
    let mut sub = client
        .subscribe(probe.clone())
        .await
        .context("subscribe probe")?;
    client
        .publish(probe, Bytes::from_static(b"probe"))
        .await
        .context("publish probe")?;
    client.flush().await.context("flush probe")?;
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .context("timed out waiting for the subscription probe to come back through the server")?
        .context("probe subscription closed")?;
    let _ = sub.unsubscribe().await;
    Ok(())
}

/// A naive closed-loop requester (the coordinated-omission counter-example, and service-time
/// probes): one request at a time on the schedule, but never before the previous reply, with
/// latency taken by `tracker`'s origin (the naive measure uses [`crate::record::Origin::Actual`]).
pub async fn run_closed_loop(
    client: &Client,
    subject: &str,
    tracker: &Arc<Tracker>,
    schedule: Schedule,
    payload: &PayloadFn,
    timeout: Duration,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<SendStats> {
    let handle = tokio::runtime::Handle::current();
    let (client, subject, tracker, payload, progress) = (
        client.clone(),
        subject.to_owned(),
        tracker.clone(),
        payload.clone(),
        progress.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("bench-closed-loop".into())
        .spawn(move || {
            precise_timers();
            let mut stats = SendStats {
                send_delay: crate::histogram::new_histogram(),
                errors: 0,
            };
            for i in 0..schedule.count {
                let intended = schedule.intended(i);
                wait_until(intended, Duration::ZERO);
                let actual = Instant::now();
                crate::histogram::record_duration(
                    &mut stats.send_delay,
                    actual.saturating_duration_since(intended),
                );
                tracker.mark_sending(i, intended, actual);
                tracker.mark_sent();
                let id = tracker.id(i);
                let reply = handle.block_on(async {
                    let request = async_nats::Request::new()
                        .payload((payload)(i))
                        .headers(id_headers(&id))
                        .timeout(Some(timeout));
                    client.send_request(subject.clone(), request).await
                });
                match reply {
                    Ok(_) => {
                        tracker.confirm_index(i, Instant::now());
                    }
                    Err(_) => stats.errors += 1,
                }
                progress.inc(1);
            }
            stats
        })
        .context("spawn closed-loop thread")?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("join closed-loop thread")?
        .map_err(|_| anyhow::anyhow!("the closed-loop thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_without_drift() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(5000, 5000.0), Duration::from_secs(1));
        // 3/s does not divide a second evenly: computed from i, the millionth message is still
        // exactly where it belongs, where summing rounded intervals would drift.
        assert_eq!(
            intended_offset(3_000_000, 3.0),
            Duration::from_secs(1_000_000)
        );
        assert_eq!(intended_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(intended_offset(2, 3.0), Duration::from_nanos(666_666_667));
        assert_eq!(intended_offset(7, 0.0), Duration::ZERO);
        assert_eq!(message_count(200.0, 5.0), 1000);
        assert_eq!(message_count(0.1, 1.0), 1);
    }

    #[test]
    fn burst_schedule_intends_everything_at_start() {
        let start = Instant::now();
        let s = Schedule {
            start,
            rate_per_s: None,
            count: 10,
            burst_size: 1,
        };
        assert_eq!(s.intended(9), start);
        let s = Schedule {
            start,
            rate_per_s: Some(100.0),
            count: 10,
            burst_size: 1,
        };
        assert_eq!(s.intended(9) - start, Duration::from_millis(90));
        // Bursts of 5 at 100/s: 20 bursts a second, every member of a burst at one instant.
        let s = Schedule {
            start,
            rate_per_s: Some(100.0),
            count: 20,
            burst_size: 5,
        };
        assert_eq!(s.intended(4), start);
        assert_eq!(s.intended(5) - start, Duration::from_millis(50));
        assert_eq!(s.intended(9) - start, Duration::from_millis(50));
        assert_eq!(s.intended(10) - start, Duration::from_millis(100));
    }

    #[test]
    fn wait_until_does_not_return_early() {
        let deadline = Instant::now() + Duration::from_millis(3);
        wait_until(deadline, Duration::from_micros(200));
        assert!(Instant::now() >= deadline);
        // A past deadline returns at once.
        let t = Instant::now();
        wait_until(t - Duration::from_millis(1), Duration::ZERO);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    fn core(ids: Ids, expected: Vec<u8>, taps: bool) -> ProofCore {
        let start = Instant::now();
        let n = expected.len();
        let tracker = Arc::new(Tracker::new("p.", n, start));
        for i in 0..n as u64 {
            tracker.mark_sending(i, start, start);
            tracker.mark_sent();
        }
        ProofCore {
            state: Mutex::new(ProofState::new(expected, vec![0; n], 1, taps)),
            tracker,
            ids,
            schedule: Schedule {
                start,
                rate_per_s: Some(1000.0),
                count: n as u64,
                burst_size: 1,
            },
            last_index: n as u64 - 1,
            progress: Notify::new(),
        }
    }

    fn notice(ids: &[&str], dups: &[&str]) -> CommitNotice {
        CommitNotice {
            batch: 1,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            events: ids.len() as u64,
            duplicate_ids: dups.iter().map(|s| s.to_string()).collect(),
            instance: "a".into(),
        }
    }

    #[test]
    fn via_bot_needs_every_event_of_a_message() {
        let p = core(Ids::ViaBot, vec![2, 1], false);
        let now = Instant::now();
        p.on_notice(&notice(&["p.0:1", "other:1", "p.1:1"], &[]), now);
        assert_eq!(
            p.tracker.counts(),
            (2, 1),
            "message 0 still waits for its second event"
        );
        assert!(p.last_proven());
        p.on_notice(&notice(&["p.0:2", "p.0:3"], &[]), now);
        assert_eq!(p.tracker.counts(), (2, 2));
        p.on_notice(&notice(&["p.0:2"], &["p.1:1"]), now);
        let s = p.lock();
        assert_eq!(
            (
                s.duplicate_events,
                s.skipped_redeliveries,
                s.unexpected_events
            ),
            (1, 1, 1)
        );
        assert_eq!(s.kind_confirmed[0], 2);
        assert_eq!(s.notices_by_instance.len(), 1);
        assert_eq!(s.notices_by_instance[0].notices, 3);
    }

    #[test]
    fn direct_ids_and_missed_first_notices() {
        let p = core(Ids::Direct, vec![1, 1], false);
        let now = Instant::now();
        // The first notice for p.1 was lost with a killed process; the redelivery proves it.
        p.on_notice(&notice(&["p.0"], &["p.1"]), now);
        assert_eq!(p.tracker.counts(), (2, 2));
        assert_eq!(p.lock().skipped_redeliveries, 0);
    }

    #[test]
    fn notices_are_kept_per_process_instance() {
        let p = core(Ids::Direct, vec![1, 1, 1, 1], false);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let of = |id: &str, instance: &str| CommitNotice {
            instance: instance.into(),
            ..notice(&[id], &[])
        };
        p.on_notice(&of("p.0", "old"), t0);
        p.on_notice(&of("p.1", "new"), t0 + ms(5));
        // A late notice of the old process, after the new one's first.
        p.on_notice(&of("p.2", "old"), t0 + ms(7));
        // Not ours: not counted for any instance.
        p.on_notice(&of("q.9", "third"), t0 + ms(8));
        p.on_notice(&of("p.3", "new"), t0 + ms(9));
        let s = p.lock();
        let got: Vec<(&str, Duration, Duration, u64)> = s
            .notices_by_instance
            .iter()
            .map(|n| (n.instance.as_str(), n.first - t0, n.last - t0, n.notices))
            .collect();
        assert_eq!(got, [("old", ms(0), ms(7), 2), ("new", ms(5), ms(9), 2)]);
    }

    #[test]
    fn replies_twice_are_duplicates_and_failed_checks_are_rejected() {
        let p = core(Ids::Direct, vec![1, 1, 1], false);
        let now = Instant::now();
        p.on_whole(Some(0), now, true, b"ok", false);
        p.on_whole(Some(0), now, true, b"ok", false);
        p.on_whole(Some(1), now, false, b"{\"success\": false}", false);
        p.on_whole(None, now, true, b"stray", false);
        p.on_whole(Some(7), now, true, b"not ours", false);
        assert_eq!(p.tracker.counts(), (3, 1));
        let r = p.tracker.finish();
        assert_eq!((r.rejected, r.unknown), (2, 1));
        let s = p.lock();
        assert_eq!(s.duplicate_events, 1);
        assert_eq!(s.rejected_examples, vec!["{\"success\": false}".to_owned()]);
    }

    #[test]
    fn correlated_proofs_judge_the_first_message_and_count_the_rest_as_extra() {
        let p = core(Ids::Direct, vec![1, 1], false);
        let now = Instant::now();
        // A reply split into chunks: the first proves it, the others are extra, not duplicates.
        p.on_whole(Some(0), now, true, b"=== stats", true);
        p.on_whole(Some(0), now, false, b"chunk 2", true);
        // An error reply first: rejected; a later chunk does not turn it into a success.
        p.on_whole(Some(1), now, false, b"error", true);
        p.on_whole(Some(1), now, true, b"=== stats", true);
        assert_eq!(p.tracker.counts(), (2, 1));
        let s = p.lock();
        assert_eq!((s.duplicate_events, s.extra_messages), (0, 2));
    }

    #[test]
    fn hops_add_up_from_the_intended_time_to_the_proof() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate_per_s: Some(1000.0),
            count: 3,
            burst_size: 1,
        };
        let ms = Duration::from_millis;
        let taps = Taps {
            client: None,
            points: vec![
                Tap {
                    hop: "a".into(),
                    description: String::new(),
                    subject: "x".into(),
                    matches: TapMatch::CorrelationId,
                },
                Tap {
                    hop: "b".into(),
                    description: String::new(),
                    subject: "y".into(),
                    matches: TapMatch::ReplyToPrevious,
                },
            ],
            last_hop: "c".into(),
            last_description: String::new(),
        };
        let mut seen = TapState {
            first: vec![HashMap::new(), HashMap::new()],
            matched: vec![3, 1],
            reply_to: vec![HashMap::new(), HashMap::new()],
            early: vec![HashMap::new(), HashMap::new()],
        };
        // Message 1 (intended at +1 ms): tap a at +3, tap b at +6, proof at +10.
        seen.first[0].insert(1, start + ms(3));
        seen.first[1].insert(1, start + ms(6));
        // Message 2 was seen by tap a only: no hops from it.
        seen.first[0].insert(2, start + ms(4));
        let done = HashMap::from([(1, start + ms(10)), (2, start + ms(12))]);
        let h = hops(&taps, &seen, &done, &schedule);
        let names: Vec<&str> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let only = |k: usize| {
            assert_eq!(h[k].latency.len(), 1);
            h[k].latency.max() as f64 / 1e6
        };
        assert!((only(0) - 2.0).abs() < 0.01, "{}", only(0));
        assert!((only(1) - 3.0).abs() < 0.01);
        assert!((only(2) - 4.0).abs() < 0.01);
        assert_eq!((h[0].seen, h[1].seen, h[2].seen), (3, 1, 2));
    }

    #[test]
    fn headers_by_proof() {
        let direct = Proof::CommitNotices(Ids::Direct);
        let h = message_headers("p.3", &direct, SendVia::JetStream);
        assert_eq!(h.get(headers::EVENT_ID).map(|v| v.as_str()), Some("p.3"));
        assert_eq!(h.get(headers::NATS_MSG_ID).map(|v| v.as_str()), Some("p.3"));
        let h = message_headers("p.3", &direct, SendVia::Core);
        assert!(h.get(headers::NATS_MSG_ID).is_none());
        let h = message_headers("p.3", &Proof::CommitNotices(Ids::ViaBot), SendVia::Core);
        assert!(h.get(headers::EVENT_ID).is_none());
        assert_eq!(
            h.get(headers::CORRELATION_ID).map(|v| v.as_str()),
            Some("p.3")
        );
    }
}
