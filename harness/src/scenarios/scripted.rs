//! Open-loop phases of *scripted* traffic: every message has its own subject and payload (a mix
//! of platform events for the bot, or events published straight to the database service, over
//! core NATS or JetStream), and each is proven by the database writes it must cause.
//!
//! Message `i` carries correlation id `<prefix><i>` (header `Rosey-Correlation-Id`). Proof comes
//! from commit notices (`rosey.db.committed`):
//!
//! * [`Ids::ViaBot`]: the bot derives event ids `<correlation id>:<n>` (n = 1, 2, ...) for the
//!   database events one platform event causes; a message counts as committed once all of its
//!   expected `n` are in commit notices;
//! * [`Ids::Direct`]: the message is itself one database event with event id `<prefix><i>`.
//!
//! An event id listed twice in `ids` of commit notices was committed twice: a duplicate. An id in
//! `duplicate_ids` (a durable-mode redelivery the service skipped) confirms the event if its
//! first notice was missed (e.g. the service was killed between commit and notice) and is
//! otherwise only counted as a skipped redelivery.
//!
//! Latency runs from the intended send time of the message to the arrival of the notice that
//! completed it, as everywhere in the harness (see `load.rs`).

use crate::histogram;
use crate::load::{self, wait_until, PhaseOutcome, SendStats};
use crate::record::Tracker;
use anyhow::Context;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rosey_protocol::{db::CommitNotice, headers, subjects};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One message of a script.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Index into the phase's kind labels (for per-kind counts and histograms).
    pub kind: usize,
    pub subject: String,
    pub payload: Bytes,
    /// Database events this message must cause (at most 32; 0: nothing to prove, not counted).
    pub expected_events: u32,
}

/// Builds message `i` of a script. Called more than once per index; must be deterministic.
pub type ScriptFn = Arc<dyn Fn(u64) -> Scripted + Send + Sync>;

/// How commit notices name a message's database events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// The bot's `<correlation id>:<n>`.
    ViaBot,
    /// The message's own id is its event id (header `Rosey-Event-Id`, and `Nats-Msg-Id` on
    /// JetStream).
    Direct,
}

/// How messages are handed to NATS.
#[derive(Clone)]
pub enum SendVia {
    /// Core publish (fire and forget; the commit notice is the proof).
    Core,
    /// JetStream publish with `Nats-Msg-Id`; the PubAck proves the stream stored the message
    /// (counted separately), the commit notice still proves the database committed it.
    JetStream(Box<async_nats::jetstream::Context>),
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

/// One scripted phase.
pub struct ScriptedPhase {
    pub id_prefix: String,
    pub rate_per_s: f64,
    pub count: u64,
    pub script: ScriptFn,
    /// Kind labels, indexed by [`Scripted::kind`].
    pub kinds: Vec<String>,
    pub ids: Ids,
    pub via: SendVia,
    /// One publisher keeps the script's order (a join before the leave that follows it).
    pub sender: Client,
    pub drain_timeout: Duration,
    pub drain_until: DrainUntil,
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

/// What a scripted phase measured, beyond [`PhaseOutcome`].
#[derive(Debug)]
pub struct ScriptedOutcome {
    pub phase: PhaseOutcome,
    pub kinds: Vec<KindOutcome>,
    /// Event ids committed more than once.
    pub duplicate_events: u64,
    /// Redeliveries the service skipped because the event was already committed.
    pub skipped_redeliveries: u64,
    /// Event ids of ours with an `n` beyond what the message should have caused.
    pub unexpected_events: u64,
    /// Arrival times of the commit notices that carried at least one of our ids.
    pub notice_times: Vec<Instant>,
    /// JetStream: PubAcks received / publishes whose ack failed.
    pub pub_acks: u64,
    pub pub_ack_errors: u64,
    /// When the schedule started (intended time of message 0).
    pub start: Instant,
}

/// Bookkeeping of the proof listener.
struct ProofState {
    /// Bit n-1 set when event n of message i was committed.
    seen: Vec<u32>,
    expected: Vec<u8>,
    kinds: Vec<u8>,
    kind_confirmed: Vec<u64>,
    kind_latency: Vec<Histogram<u64>>,
    duplicate_events: u64,
    skipped_redeliveries: u64,
    unexpected_events: u64,
    notice_times: Vec<Instant>,
    last_proven: bool,
}

struct Proof {
    state: Mutex<ProofState>,
    tracker: Arc<Tracker>,
    ids: Ids,
    start: Instant,
    rate_per_s: f64,
    last_index: u64,
    progress: tokio::sync::Notify,
}

impl Proof {
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

    fn on_notice(&self, notice: &CommitNotice, at: Instant) {
        let mut s = self.lock();
        let mut ours = false;
        let mut completed = Vec::new();
        for (id, redelivery) in notice
            .ids
            .iter()
            .map(|i| (i, false))
            .chain(notice.duplicate_ids.iter().map(|i| (i, true)))
        {
            let Some((index, n)) = self.parse(id) else {
                continue;
            };
            let Some(i) = usize::try_from(index).ok().filter(|i| *i < s.seen.len()) else {
                continue;
            };
            ours = true;
            let expected = u32::from(s.expected[i]);
            if n == 0 || n > expected {
                s.unexpected_events += 1;
                continue;
            }
            let bit = 1u32 << (n - 1);
            if s.seen[i] & bit != 0 {
                if redelivery {
                    s.skipped_redeliveries += 1;
                } else {
                    s.duplicate_events += 1;
                }
                continue;
            }
            s.seen[i] |= bit;
            if s.seen[i].count_ones() == expected {
                completed.push(index);
            }
        }
        if ours {
            s.notice_times.push(at);
        }
        for index in completed {
            let i = index as usize;
            let kind = usize::from(s.kinds[i]);
            s.kind_confirmed[kind] += 1;
            let intended = self.start + load::intended_offset(index, self.rate_per_s);
            histogram::record_duration(
                &mut s.kind_latency[kind],
                at.saturating_duration_since(intended),
            );
            if index == self.last_index {
                s.last_proven = true;
            }
            self.tracker.confirm_index(index, at);
        }
        drop(s);
        self.progress.notify_waiters();
    }

    fn last_proven(&self) -> bool {
        self.lock().last_proven
    }
}

async fn listen(mut sub: async_nats::Subscriber, proof: Arc<Proof>, cancel: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let at = Instant::now();
        if let Ok(notice) = serde_json::from_slice::<CommitNotice>(&msg.payload) {
            proof.on_notice(&notice, at);
        }
    }
    let _ = sub.unsubscribe().await;
}

/// Headers of message `id`: its correlation id, and for direct events its event id (and the
/// JetStream de-duplication id).
fn message_headers(id: &str, ids: Ids, jetstream: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::CORRELATION_ID, id);
    if ids == Ids::Direct {
        h.insert(headers::EVENT_ID, id);
        if jetstream {
            h.insert(headers::NATS_MSG_ID, id);
        }
    }
    h
}

/// What the sender thread did.
pub struct SendResult {
    pub stats: SendStats,
    /// JetStream: one task per publish awaiting its PubAck.
    pub acks: Vec<tokio::task::JoinHandle<bool>>,
}

/// The paced sender: one OS thread, message `i` at `start + i / rate` (see `load.rs` for why a
/// thread and not a task). Messages with nothing to prove are sent but not marked in `tracker`.
pub fn send_all(
    handle: tokio::runtime::Handle,
    phase: &ScriptedPhase,
    tracker: &Tracker,
    start: Instant,
    progress: &indicatif::ProgressBar,
) -> SendResult {
    let mut stats = SendStats {
        send_delay: histogram::new_histogram(),
        errors: 0,
    };
    let mut acks = Vec::new();
    let jetstream = matches!(phase.via, SendVia::JetStream(_));
    for i in 0..phase.count {
        let intended = start + load::intended_offset(i, phase.rate_per_s);
        // Outside every message's measured interval: message i's clock starts at `intended`.
        wait_until(intended, Duration::ZERO);
        let actual = Instant::now();
        histogram::record_duration(
            &mut stats.send_delay,
            actual.saturating_duration_since(intended),
        );
        let m = (phase.script)(i);
        let id = tracker.id(i);
        let h = message_headers(&id, phase.ids, jetstream);
        let proven = m.expected_events > 0;
        if proven {
            tracker.mark_sending(i, intended, actual);
        }
        let ok = match &phase.via {
            SendVia::Core => handle
                .block_on(phase.sender.publish_with_headers(m.subject, h, m.payload))
                .is_ok(),
            SendVia::JetStream(js) => {
                match handle.block_on(js.publish_with_headers(m.subject, h, m.payload)) {
                    Ok(ack) => {
                        acks.push(handle.spawn(async move { ack.await.is_ok() }));
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        if ok && proven {
            tracker.mark_sent();
        } else if !ok {
            stats.errors += 1;
        }
        progress.inc(1);
    }
    let _ = handle.block_on(phase.sender.flush());
    SendResult { stats, acks }
}

/// Run one scripted phase: subscribe to commit notices (proven active), send on schedule, drain.
pub async fn run(
    listener: &Client,
    phase: ScriptedPhase,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ScriptedOutcome> {
    anyhow::ensure!(
        phase.rate_per_s.is_finite() && phase.rate_per_s > 0.0,
        "rate_per_s must be positive"
    );
    anyhow::ensure!(phase.count > 0, "a phase sends at least one message");
    let capacity = usize::try_from(phase.count).context("phase too large")?;
    let mut expected = Vec::with_capacity(capacity);
    let mut kinds = Vec::with_capacity(capacity);
    let mut kind_sent = vec![0u64; phase.kinds.len()];
    let mut kind_unproven = vec![0u64; phase.kinds.len()];
    for i in 0..phase.count {
        let m = (phase.script)(i);
        anyhow::ensure!(
            m.kind < phase.kinds.len() && m.kind < 256,
            "script kind {} out of range",
            m.kind
        );
        anyhow::ensure!(
            m.expected_events <= 32,
            "at most 32 database events per message"
        );
        expected.push(m.expected_events as u8);
        kinds.push(m.kind as u8);
        if m.expected_events > 0 {
            kind_sent[m.kind] += 1;
        } else {
            kind_unproven[m.kind] += 1;
        }
    }
    // The last message that has something to prove.
    let last_index = (0..phase.count)
        .rev()
        .find(|i| expected[*i as usize] > 0)
        .unwrap_or(0);

    let sub = listener
        .subscribe(subjects::COMMITTED)
        .await
        .context("subscribe to commit notices")?;
    load::ensure_subscribed(listener).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let tracker = Arc::new(Tracker::new(phase.id_prefix.clone(), capacity, start));
    let proof = Arc::new(Proof {
        state: Mutex::new(ProofState {
            seen: vec![0; capacity],
            expected,
            kinds,
            kind_confirmed: vec![0; phase.kinds.len()],
            kind_latency: phase
                .kinds
                .iter()
                .map(|_| histogram::new_histogram())
                .collect(),
            duplicate_events: 0,
            skipped_redeliveries: 0,
            unexpected_events: 0,
            notice_times: Vec::new(),
            last_proven: false,
        }),
        tracker: tracker.clone(),
        ids: phase.ids,
        start,
        rate_per_s: phase.rate_per_s,
        last_index,
        progress: tokio::sync::Notify::new(),
    });
    let cancel = CancellationToken::new();
    let listener_task = tokio::spawn(listen(sub, proof.clone(), cancel.clone()));

    progress.set_length(phase.count);
    progress.set_position(0);
    let handle = tokio::runtime::Handle::current();
    let phase = Arc::new(phase);
    let sending = {
        let (phase, tracker, progress) = (phase.clone(), tracker.clone(), progress.clone());
        std::thread::Builder::new()
            .name("bench-scripted-sender".into())
            .spawn(move || send_all(handle, &phase, &tracker, start, &progress))
            .context("spawn sender thread")?
    };
    let sent = tokio::task::spawn_blocking(move || sending.join())
        .await
        .context("join sender thread")?
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    let send_finished = Instant::now();

    // Drain: wait for the proofs themselves, with a deadline.
    let deadline = tokio::time::Instant::now() + phase.drain_timeout;
    let drained = loop {
        let notified = proof.progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (s, c) = tracker.counts();
        if c >= s {
            break true;
        }
        if phase.drain_until == DrainUntil::LastProven && proof.last_proven() {
            break false;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let (s, c) = tracker.counts();
            break c >= s;
        }
    };
    let end = Instant::now();
    cancel.cancel();
    let _ = listener_task.await;

    let mut pub_acks = 0;
    let mut pub_ack_errors = 0;
    for ack in sent.acks {
        match ack.await {
            Ok(true) => pub_acks += 1,
            _ => pub_ack_errors += 1,
        }
    }
    let record = tracker.finish();
    let s = proof.lock();
    let kinds = phase
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
    Ok(ScriptedOutcome {
        phase: PhaseOutcome {
            record,
            send: sent.stats,
            drained,
            drain_time: end.saturating_duration_since(send_finished),
            elapsed: end.saturating_duration_since(start),
        },
        kinds,
        duplicate_events: s.duplicate_events,
        skipped_redeliveries: s.skipped_redeliveries,
        unexpected_events: s.unexpected_events,
        notice_times: s.notice_times.clone(),
        pub_acks,
        pub_ack_errors,
        start,
    })
}

/// Fill a result from a scripted phase: the framework's figures (latency, send delay,
/// accounting, intervals), then duplicates as this module counts them, per-kind counts and
/// histograms (`kind.<name>`), and the notes that explain anything unusual.
pub fn fill(
    ctx: &crate::scenario::ScenarioContext,
    result: &mut crate::results::ScenarioResult,
    outcome: &ScriptedOutcome,
    latency_description: &str,
    per_kind: bool,
) -> anyhow::Result<()> {
    crate::scenario::fill_from_phase(ctx, result, &outcome.phase, latency_description)?;
    result.accounting.duplicated = outcome.duplicate_events;
    if outcome.skipped_redeliveries > 0 {
        result.metrics.insert(
            "skipped_redeliveries".into(),
            outcome.skipped_redeliveries as f64,
        );
    }
    if outcome.unexpected_events > 0 {
        result
            .metrics
            .insert("unexpected_events".into(), outcome.unexpected_events as f64);
        result.notes.push(format!(
            "{} database events carried our correlation ids beyond what the messages should cause",
            outcome.unexpected_events
        ));
    }
    if per_kind {
        for k in &outcome.kinds {
            result
                .metrics
                .insert(format!("kind.{}.sent", k.name), k.sent as f64);
            result
                .metrics
                .insert(format!("kind.{}.committed", k.name), k.committed as f64);
            if k.unproven_sent > 0 {
                result.metrics.insert(
                    format!("kind.{}.sent_without_db_effect", k.name),
                    k.unproven_sent as f64,
                );
            }
            if !k.latency.is_empty() {
                crate::scenario::add_histogram(
                    result,
                    &format!("kind.{}", k.name),
                    &format!(
                        "{}: intended send time → commit notice of its last database event",
                        k.name
                    ),
                    &k.latency,
                )?;
            }
        }
    }
    Ok(())
}

/// Parameters of an open-loop phase through the bot (one publisher: the script's order matters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotLoadParams {
    pub rate_per_s: f64,
    pub duration_s: f64,
    #[serde(default)]
    pub warmup_s: f64,
    /// Size of chat-message texts.
    #[serde(default = "default_payload")]
    pub payload_bytes: usize,
    #[serde(default = "default_drain")]
    pub drain_timeout_s: f64,
}

fn default_payload() -> usize {
    64
}
fn default_drain() -> f64 {
    10.0
}

impl BotLoadParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        super::validate_open_loop(
            self.rate_per_s,
            self.duration_s,
            self.warmup_s,
            self.drain_timeout_s,
        )?;
        Ok(())
    }

    pub fn load_info(&self) -> crate::results::LoadInfo {
        crate::results::LoadInfo {
            model: "open_loop".into(),
            target_rate_per_s: Some(self.rate_per_s),
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            concurrency: Some(1),
            payload_bytes: u32::try_from(self.payload_bytes).ok(),
        }
    }

    /// A phase of this load (`duration_s` seconds of it) through the bot.
    pub fn phase(
        &self,
        ctx: &crate::scenario::ScenarioContext,
        sender: &Client,
        tag: &str,
        duration_s: f64,
        script: ScriptFn,
        kinds: &[&str],
    ) -> ScriptedPhase {
        ScriptedPhase {
            id_prefix: ctx.id_prefix(tag),
            rate_per_s: self.rate_per_s,
            count: load::message_count(self.rate_per_s, duration_s),
            script,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            ids: Ids::ViaBot,
            via: SendVia::Core,
            sender: sender.clone(),
            drain_timeout: Duration::from_secs_f64(self.drain_timeout_s),
            drain_until: DrainUntil::All,
        }
    }
}

/// A connection of its own for a phase's sender, so publishing never shares a connection with
/// the proof listener (as the framework's senders do).
pub async fn sender_connection(ctx: &crate::scenario::ScenarioContext) -> anyhow::Result<Client> {
    load::connect(&ctx.nats_url, &format!("bench-{}-sender", ctx.name)).await
}

/// The bot's channel, or an error if the bot is not running.
pub async fn bot_channel(ctx: &crate::scenario::ScenarioContext) -> anyhow::Result<String> {
    let services = ctx.services().await?;
    services
        .bot_channel()
        .map(str::to_owned)
        .context("the bot is not running (services.start_bot = false?)")
}

/// Warm up (if configured; discarded), then measure one scripted phase with the resource
/// sampler around it and fill the result.
pub async fn warm_then_measure(
    ctx: &crate::scenario::ScenarioContext,
    p: &BotLoadParams,
    script: ScriptFn,
    kinds: &[&str],
    result: &mut crate::results::ScenarioResult,
    latency_description: &str,
) -> anyhow::Result<ScriptedOutcome> {
    let sender = sender_connection(ctx).await?;
    if p.warmup_s > 0.0 {
        let bar = ctx.progress_bar("warm-up", 0);
        let warm = run(
            &ctx.client,
            p.phase(ctx, &sender, "warmup", p.warmup_s, script.clone(), kinds),
            &bar,
        )
        .await?;
        bar.finish_and_clear();
        if warm.phase.record.lost() > 0 {
            result.notes.push(format!(
                "warm-up: {} of {} not confirmed within the drain deadline (not counted)",
                warm.phase.record.lost(),
                warm.phase.record.sent
            ));
        }
    }
    ctx.refresh_sampled_processes().await;
    let bar = ctx.progress_bar("measure", 0);
    let sampling = ctx.sampler.begin_phase();
    let outcome = run(
        &ctx.client,
        p.phase(ctx, &sender, "m", p.duration_s, script, kinds),
        &bar,
    )
    .await?;
    let (resources, timeline) = sampling.end(outcome.phase.record.confirmed);
    bar.finish_and_clear();
    result.resources = resources;
    result.resource_timeline = timeline;
    fill(ctx, result, &outcome, latency_description, kinds.len() > 1)?;
    Ok(outcome)
}

/// Make the bot know `users` (as the platform's `user_join` events would) and prove it: each
/// join must produce its two database events (`user.joined`, `stats.high_water`), committed.
pub async fn join_users(
    ctx: &crate::scenario::ScenarioContext,
    channel: &str,
    users: Vec<rosey_protocol::platform::PlatformUser>,
    tag: &str,
) -> anyhow::Result<()> {
    let subject =
        rosey_protocol::platform::in_subject(channel, rosey_protocol::platform::kind::USER_JOIN);
    let count = users.len() as u64;
    let users = Arc::new(users);
    let script: ScriptFn = Arc::new(move |i| Scripted {
        kind: 0,
        subject: subject.clone(),
        payload: Bytes::from(rosey_protocol::to_seed_json(&users[i as usize])),
        expected_events: 2,
    });
    let bar = ctx.progress_bar("setup", count);
    let outcome = run(
        &ctx.client,
        ScriptedPhase {
            id_prefix: ctx.id_prefix(tag),
            rate_per_s: 200.0,
            count,
            script,
            kinds: vec!["user_join".into()],
            ids: Ids::ViaBot,
            via: SendVia::Core,
            sender: sender_connection(ctx).await?,
            drain_timeout: Duration::from_secs(10),
            drain_until: DrainUntil::All,
        },
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    let r = &outcome.phase.record;
    anyhow::ensure!(
        r.confirmed == r.sent && r.sent == count,
        "setup: only {} of {} user joins were proven committed through the bot",
        r.confirmed,
        count
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(ids: Ids, expected: Vec<u8>) -> Proof {
        let start = Instant::now();
        let n = expected.len();
        let tracker = Arc::new(Tracker::new("p.", n, start));
        for i in 0..n as u64 {
            tracker.mark_sending(i, start, start);
            tracker.mark_sent();
        }
        Proof {
            state: Mutex::new(ProofState {
                seen: vec![0; n],
                expected,
                kinds: vec![0; n],
                kind_confirmed: vec![0],
                kind_latency: vec![histogram::new_histogram()],
                duplicate_events: 0,
                skipped_redeliveries: 0,
                unexpected_events: 0,
                notice_times: Vec::new(),
                last_proven: false,
            }),
            tracker,
            ids,
            start,
            rate_per_s: 1000.0,
            last_index: n as u64 - 1,
            progress: tokio::sync::Notify::new(),
        }
    }

    fn notice(ids: &[&str], dups: &[&str]) -> CommitNotice {
        CommitNotice {
            batch: 1,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            events: ids.len() as u64,
            duplicate_ids: dups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn via_bot_needs_every_event_of_a_message() {
        let p = proof(Ids::ViaBot, vec![2, 1]);
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
        assert_eq!(s.notice_times.len(), 3);
    }

    #[test]
    fn direct_ids_and_missed_first_notices() {
        let p = proof(Ids::Direct, vec![1, 1]);
        let now = Instant::now();
        // The first notice for p.1 was lost with a killed process; the redelivery proves it.
        p.on_notice(&notice(&["p.0"], &["p.1"]), now);
        assert_eq!(p.tracker.counts(), (2, 2));
        assert_eq!(p.lock().skipped_redeliveries, 0);
    }

    #[test]
    fn headers_by_id_style() {
        let h = message_headers("p.3", Ids::Direct, true);
        assert_eq!(h.get(headers::EVENT_ID).map(|v| v.as_str()), Some("p.3"));
        assert_eq!(h.get(headers::NATS_MSG_ID).map(|v| v.as_str()), Some("p.3"));
        let h = message_headers("p.3", Ids::ViaBot, false);
        assert!(h.get(headers::EVENT_ID).is_none());
        assert_eq!(
            h.get(headers::CORRELATION_ID).map(|v| v.as_str()),
            Some("p.3")
        );
    }
}
