//! The `stats` PM command end to end: a moderator's PM on the platform subject → bot →
//! `rosey.db.query.channel_stats` request → dbservice → reply → bot → PM reply on the platform
//! `out.pm` subject, one correlation id throughout.
//!
//! Total latency runs from the PM's intended send time to the reply PM (the proof: it must be the
//! statistics text, not an error). Per-hop times come from a passive tap, one more connection of
//! the harness that also subscribes to the request subject and to `_INBOX.>` (where the bot's
//! replies arrive): hop `bot_in` is PM → request seen, `dbservice` is request → reply seen,
//! `bot_out` is reply → reply PM seen. All instants are taken by the same process on the same
//! clock, so the hops add up to the total; each includes one NATS delivery to the tap, so the
//! split between adjacent hops is exact only to within the tap's own delivery jitter.
//! The database query is also measured on its own, closed loop, from the harness.

use super::scripted::{self, BotLoadParams, Ids, Scripted, ScriptedPhase, SendVia};
use crate::histogram;
use crate::load::{self, PhaseOutcome};
use crate::record::Tracker;
use crate::results::ScenarioResult;
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rosey_protocol::platform::{self, PlatformUser, PmAction, PrivateMessage};
use rosey_protocol::{headers, subjects, to_seed_json};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "stats_end_to_end",
    title: "Stats command end to end",
    description: "moderator PM `stats` → bot → channel_stats request → dbservice → bot → PM reply, open loop; total and per-hop latency by correlation id",
    needs_services: true,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

const MODERATOR: &str = "stats-mod";
/// The first line of a successful `stats` reply.
const STATS_HEADER: &str = "=== Channel Statistics ===";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    rate_per_s: f64,
    duration_s: f64,
    #[serde(default)]
    warmup_s: f64,
    #[serde(default = "default_drain")]
    drain_timeout_s: f64,
    /// Closed-loop `channel_stats` requests straight from the harness (0: none).
    #[serde(default = "default_direct")]
    direct_requests: u64,
}

fn default_drain() -> f64 {
    10.0
}
fn default_direct() -> u64 {
    200
}

/// What the tap saw, per message index.
#[derive(Default)]
struct Seen {
    request: HashMap<u64, Instant>,
    /// Reply subject of each request, and replies seen before their request.
    reply_to: HashMap<String, u64>,
    early_replies: HashMap<String, Instant>,
    reply: HashMap<u64, Instant>,
    pm: HashMap<u64, Instant>,
    bot_requests: u64,
    extra_pm_chunks: u64,
    error_replies: Vec<String>,
}

struct Tap {
    seen: Mutex<Seen>,
    tracker: Arc<Tracker>,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self, msg: &async_nats::Message) -> Option<u64> {
        let id = msg.headers.as_ref()?.get(headers::CORRELATION_ID)?;
        self.tracker.index_of(id.as_str())
    }

    fn on_request(&self, msg: &async_nats::Message, at: Instant) {
        let Some(i) = self.index(msg) else { return };
        let mut s = self.lock();
        s.bot_requests += 1;
        if s.request.contains_key(&i) {
            return; // A retry by the bot; the first request starts the hop.
        }
        s.request.insert(i, at);
        if let Some(reply) = &msg.reply {
            let reply = reply.to_string();
            if let Some(early) = s.early_replies.remove(&reply) {
                s.reply.entry(i).or_insert(early);
            }
            s.reply_to.insert(reply, i);
        }
    }

    fn on_inbox(&self, msg: &async_nats::Message, at: Instant) {
        let subject = msg.subject.to_string();
        let mut s = self.lock();
        match s.reply_to.get(&subject).copied() {
            Some(i) => {
                s.reply.entry(i).or_insert(at);
            }
            None => {
                // Possibly a reply whose request the tap has not seen yet; bounded.
                if s.early_replies.len() < 10_000 {
                    s.early_replies.insert(subject, at);
                }
            }
        }
    }

    fn on_pm(&self, msg: &async_nats::Message, at: Instant) {
        let Some(i) = self.index(msg) else { return };
        let ok = serde_json::from_slice::<PmAction>(&msg.payload)
            .map(|pm| pm.user == MODERATOR && pm.content.starts_with(STATS_HEADER))
            .unwrap_or(false);
        let mut s = self.lock();
        if s.pm.contains_key(&i) {
            s.extra_pm_chunks += 1;
            return;
        }
        s.pm.insert(i, at);
        if ok {
            drop(s);
            self.tracker.confirm_index(i, at);
        } else {
            if s.error_replies.len() < 3 {
                s.error_replies.push(
                    String::from_utf8_lossy(&msg.payload)
                        .chars()
                        .take(200)
                        .collect(),
                );
            }
            drop(s);
            self.tracker.reject();
        }
    }
}

async fn listen(
    tap: Arc<Tap>,
    mut requests: async_nats::Subscriber,
    mut inbox: async_nats::Subscriber,
    mut pms: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(m) = requests.next() => tap.on_request(&m, Instant::now()),
            Some(m) = inbox.next() => tap.on_inbox(&m, Instant::now()),
            Some(m) = pms.next() => tap.on_pm(&m, Instant::now()),
            else => break,
        }
    }
}

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    let load_params = BotLoadParams {
        rate_per_s: p.rate_per_s,
        duration_s: p.duration_s,
        warmup_s: p.warmup_s,
        payload_bytes: 0,
        drain_timeout_s: p.drain_timeout_s,
    };
    load_params.validate()?;
    let channel = scripted::bot_channel(ctx).await?;
    let mut result = ctx.result(load_params.load_info());
    result.load.payload_bytes = None;
    scripted::join_users(
        ctx,
        &channel,
        vec![PlatformUser::new(MODERATOR, 3.0)],
        "setup",
    )
    .await?;

    if p.warmup_s > 0.0 {
        let (warm, _) = phase(ctx, &channel, &p, "warmup", p.warmup_s).await?;
        if warm.record.lost() > 0 {
            result.notes.push(format!(
                "warm-up: {} of {} stats PMs unanswered (not counted)",
                warm.record.lost(),
                warm.record.sent
            ));
        }
    }
    ctx.refresh_sampled_processes().await;
    let sampling = ctx.sampler.begin_phase();
    let (outcome, hops) = phase(ctx, &channel, &p, "m", p.duration_s).await?;
    let (resources, timeline) = sampling.end(outcome.record.confirmed);
    result.resources = resources;
    result.resource_timeline = timeline;
    crate::scenario::fill_from_phase(
        ctx,
        &mut result,
        &outcome,
        "PM `stats` intended send time → reply PM with the statistics on the platform out subject",
    )?;
    for (name, description, h) in [
        (
            "hop.bot_in",
            "PM intended send time → the bot's channel_stats request seen",
            &hops.bot_in,
        ),
        (
            "hop.dbservice",
            "channel_stats request seen → dbservice reply seen (tap on _INBOX.>)",
            &hops.dbservice,
        ),
        (
            "hop.bot_out",
            "dbservice reply seen → reply PM seen on the platform out subject",
            &hops.bot_out,
        ),
    ] {
        if !h.is_empty() {
            add_histogram(&mut result, name, description, h)?;
        }
    }
    result
        .metrics
        .insert("bot_requests".into(), hops.bot_requests as f64);
    if hops.bot_requests > outcome.record.sent {
        result.notes.push(format!(
            "the bot sent {} channel_stats requests for {} PMs (retries)",
            hops.bot_requests, outcome.record.sent
        ));
    }
    if hops.dbservice.is_empty() && outcome.record.confirmed > 0 {
        result.notes.push("the tap saw no replies on _INBOX.> (custom inbox prefix?): no dbservice hop from the chain".into());
    }
    if hops.extra_pm_chunks > 0 {
        result
            .metrics
            .insert("extra_pm_chunks".into(), hops.extra_pm_chunks as f64);
    }
    for e in &hops.error_replies {
        result
            .notes
            .push(format!("a reply PM that is not the statistics: {e}"));
    }
    result.notes.push(
        "hops are measured by a passive tap (the harness subscribes to the request subject and _INBOX.>); \
         each hop includes one NATS delivery to the tap"
            .into(),
    );

    if p.direct_requests > 0 {
        let h = direct_requests(&ctx.client, p.direct_requests).await?;
        add_histogram(
            &mut result,
            "direct.channel_stats",
            "closed loop from the harness: channel_stats request → reply (service time, not open-loop latency)",
            &h,
        )?;
    }
    Ok(result)
}

/// Per-hop histograms of one phase.
struct Hops {
    bot_in: Histogram<u64>,
    dbservice: Histogram<u64>,
    bot_out: Histogram<u64>,
    bot_requests: u64,
    extra_pm_chunks: u64,
    error_replies: Vec<String>,
}

async fn phase(
    ctx: &ScenarioContext,
    channel: &str,
    p: &Params,
    tag: &str,
    duration_s: f64,
) -> anyhow::Result<(PhaseOutcome, Hops)> {
    let count = load::message_count(p.rate_per_s, duration_s);
    let capacity = usize::try_from(count).context("phase too large")?;
    let tap_client = load::connect(&ctx.nats_url, &format!("bench-{}-tap", ctx.name)).await?;
    let requests = tap_client
        .subscribe(subjects::QUERY_CHANNEL_STATS)
        .await
        .context("tap the stats requests")?;
    let inbox = tap_client
        .subscribe("_INBOX.>")
        .await
        .context("tap the reply inboxes")?;
    let pms = tap_client
        .subscribe(platform::out_subject(channel, platform::action::PM))
        .await
        .context("tap reply PMs")?;
    load::ensure_subscribed(&tap_client).await?;

    let start = Instant::now() + Duration::from_millis(20);
    let tracker = Arc::new(Tracker::new(ctx.id_prefix(tag), capacity, start));
    let tap = Arc::new(Tap {
        seen: Mutex::new(Seen::default()),
        tracker: tracker.clone(),
    });
    let cancel = CancellationToken::new();
    let listener = tokio::spawn(listen(tap.clone(), requests, inbox, pms, cancel.clone()));

    let subject = platform::in_subject(channel, platform::kind::PM);
    let script: scripted::ScriptFn = Arc::new(move |_| Scripted {
        kind: 0,
        subject: subject.clone(),
        payload: Bytes::from(to_seed_json(&PrivateMessage {
            user: MODERATOR.into(),
            content: "stats".into(),
            correlation_id: None,
        })),
        expected_events: 1,
    });
    let spec = ScriptedPhase {
        id_prefix: ctx.id_prefix(tag),
        rate_per_s: p.rate_per_s,
        count,
        script,
        kinds: vec!["stats".into()],
        ids: Ids::ViaBot,
        via: SendVia::Core,
        sender: scripted::sender_connection(ctx).await?,
        drain_timeout: Duration::from_secs_f64(p.drain_timeout_s),
        drain_until: scripted::DrainUntil::All,
    };
    let bar = ctx.progress_bar(tag, count);
    let handle = tokio::runtime::Handle::current();
    let sending = {
        let (tracker, bar) = (tracker.clone(), bar.clone());
        std::thread::Builder::new()
            .name("bench-stats-sender".into())
            .spawn(move || scripted::send_all(handle, &spec, &tracker, start, &bar))
            .context("spawn sender thread")?
    };
    let sent = tokio::task::spawn_blocking(move || sending.join())
        .await
        .context("join sender thread")?
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    let send_finished = Instant::now();
    let drained = tracker
        .drain(tokio::time::Instant::now() + Duration::from_secs_f64(p.drain_timeout_s))
        .await;
    let end = Instant::now();
    cancel.cancel();
    let _ = listener.await;
    bar.finish_and_clear();

    let record = tracker.finish();
    let hops = {
        let s = tap.lock();
        let mut hops = Hops {
            bot_in: histogram::new_histogram(),
            dbservice: histogram::new_histogram(),
            bot_out: histogram::new_histogram(),
            bot_requests: s.bot_requests,
            extra_pm_chunks: s.extra_pm_chunks,
            error_replies: s.error_replies.clone(),
        };
        for (i, pm_at) in &s.pm {
            let intended = start + load::intended_offset(*i, p.rate_per_s);
            let (Some(req), Some(reply)) = (s.request.get(i), s.reply.get(i)) else {
                continue;
            };
            histogram::record_duration(&mut hops.bot_in, req.saturating_duration_since(intended));
            histogram::record_duration(&mut hops.dbservice, reply.saturating_duration_since(*req));
            histogram::record_duration(&mut hops.bot_out, pm_at.saturating_duration_since(*reply));
        }
        hops
    };
    let _ = tap_client.drain().await;
    Ok((
        PhaseOutcome {
            record,
            send: sent.stats,
            drained,
            drain_time: end.saturating_duration_since(send_finished),
            elapsed: end.saturating_duration_since(start),
        },
        hops,
    ))
}

/// `n` channel_stats requests one after another; service time of each successful one.
async fn direct_requests(client: &async_nats::Client, n: u64) -> anyhow::Result<Histogram<u64>> {
    let mut h = histogram::new_histogram();
    for _ in 0..n {
        let t0 = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subjects::QUERY_CHANNEL_STATS, Bytes::from_static(b"{}")),
        )
        .await
        .context("channel_stats request timed out")?
        .context("channel_stats request")?;
        let took = t0.elapsed();
        let v: serde_json::Value =
            serde_json::from_slice(&reply.payload).context("channel_stats reply is not JSON")?;
        anyhow::ensure!(
            v["success"] == serde_json::Value::Bool(true),
            "channel_stats replied with an error: {v}"
        );
        histogram::record_duration(&mut h, took);
    }
    Ok(h)
}
