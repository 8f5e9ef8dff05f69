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

use super::scripted::{self, BotLoadParams};
use crate::histogram;
use crate::load::{Proof, Script, Tap, TapMatch};
use crate::results::ScenarioResult;
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rosey_protocol::platform::{self, PlatformUser, PmAction, PrivateMessage};
use rosey_protocol::{subjects, to_seed_json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEF: ScenarioDef = ScenarioDef {
    name: "stats_end_to_end",
    title: "Stats command end to end",
    description: "moderator PM `stats` → bot → channel_stats request → dbservice → bot → PM reply, open loop; total and per-hop latency by correlation id",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

const MODERATOR: &str = "stats-mod";
/// The first line of a successful `stats` reply.
const STATS_HEADER: &str = "=== Channel Statistics ===";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    #[serde(flatten)]
    timing: super::Timing,
    /// Closed-loop `channel_stats` requests straight from the harness (0: none).
    direct_requests: u64,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()
    }
}

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    let load_params = BotLoadParams {
        timing: p.timing,
        payload_bytes: 0,
    };
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

    let subject = platform::in_subject(&channel, platform::kind::PM);
    let payload = Bytes::from(to_seed_json(&PrivateMessage {
        user: MODERATOR.into(),
        content: "stats".into(),
        correlation_id: None,
    }));
    let mut plan = load_params
        .plan(
            ctx,
            Script::uniform(subject, Arc::new(move |_| payload.clone())),
        )
        .await?;
    plan.phase.proof = Proof::Correlated {
        subject: platform::out_subject(&channel, platform::action::PM),
        check: Arc::new(is_stats_reply),
    };
    plan.phase.taps.points = vec![
        Tap {
            hop: "bot_in".into(),
            description: "PM intended send time → the bot's channel_stats request seen".into(),
            subject: subjects::QUERY_CHANNEL_STATS.into(),
            matches: TapMatch::CorrelationId,
        },
        Tap {
            hop: "dbservice".into(),
            description: "channel_stats request seen → dbservice reply seen (tap on _INBOX.>)"
                .into(),
            subject: "_INBOX.>".into(),
            matches: TapMatch::ReplyToPrevious,
        },
    ];
    plan.phase.taps.last_hop = "bot_out".into();
    plan.phase.taps.last_description =
        "dbservice reply seen → reply PM seen on the platform out subject".into();
    let outcome = super::warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "PM `stats` intended send time → reply PM with the statistics on the platform out subject",
    )
    .await?;
    let bot_requests = outcome
        .hops
        .iter()
        .find(|h| h.name == "bot_in")
        .map_or(0, |h| h.seen);
    result
        .metrics
        .insert("bot_requests".into(), bot_requests as f64);
    if bot_requests > outcome.record.sent {
        result.notes.push(format!(
            "the bot sent {} channel_stats requests for {} PMs (retries)",
            bot_requests, outcome.record.sent
        ));
    }
    if outcome
        .hops
        .iter()
        .any(|h| h.name == "dbservice" && h.latency.is_empty())
        && outcome.record.confirmed > 0
    {
        result.notes.push("the tap saw no replies on _INBOX.> (custom inbox prefix?): no dbservice hop from the chain".into());
    }

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

/// A reply PM that proves the command: to the moderator, the statistics text (not an error).
fn is_stats_reply(payload: &[u8]) -> bool {
    serde_json::from_slice::<PmAction>(payload)
        .map(|pm| pm.user == MODERATOR && pm.content.starts_with(STATS_HEADER))
        .unwrap_or(false)
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
