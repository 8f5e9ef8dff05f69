//! Memory stability under steady open-loop load: chat lines go through the bot (platform
//! `in.message` → bot → `rosey.db.message.log` → dbservice), so the bot, the database service and
//! nats-server all carry the load, and every line is proven committed by a commit notice.
//!
//! The figure is the Theil–Sen slope of each process's RSS over the measured phase, in MB per hour
//! (seed README: "<50 MB/hour growth"; the seed's test extrapolated 60 s to an hour), with Sen's
//! 95 % interval (`sampler::theil_sen`): `rss_slope_mb_per_hour.<process>` and beside it
//! `rss_slope_mb_per_hour.<process>.ci95_low` / `.ci95_high`. Theil–Sen is a median of pairwise
//! slopes, so one step of RSS (an allocator taking a new arena) is not read as growth the way
//! least squares reads it. The targets on the slope are judged on the interval
//! (`scenario::check_targets`): met when all of it is below 50 MB/h, missed when all of it is
//! above, otherwise inconclusive, which is not a pass. A short (quick) run extrapolates a few
//! seconds of allocator settling (and nats-server's Go heap growing to its steady size) to an
//! hour, so the quick profile only guards against gross leaks (absolute growth); the default and
//! soak profiles check the slope.

use super::scripted::{self, BotLoadParams};
use crate::load::{Message, Script};
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use rosey_protocol::platform::{self, ChatMessage, PlatformUser};
use rosey_protocol::to_seed_json;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "memory_stability",
    title: "Memory stability",
    description: "RSS slope (MB/hour) of dbservice, bot and nats-server under steady open-loop chat through the bot, every line committed",
    needs_services: true,
    check: crate::config::check_params::<BotLoadParams>,
    run: run_def,
};

fn run_def(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(run(ctx))
}

/// Chatting users (joined in setup, so their line counts are kept too).
const USERS: u64 = 16;

async fn run(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: BotLoadParams = ctx.params()?;
    let channel = scripted::bot_channel(ctx).await?;
    let mut result = ctx.result(p.load_info());
    let users = (0..USERS)
        .map(|k| PlatformUser::new(format!("mem-user-{k}"), 1.0))
        .collect();
    scripted::join_users(ctx, &channel, users, "setup").await?;

    let subject = platform::in_subject(&channel, platform::kind::MESSAGE);
    let text = super::filler(p.payload_bytes);
    let script = Script::new(&["message"], move |_, i| Message {
        kind: 0,
        subject: subject.clone(),
        payload: Bytes::from(to_seed_json(&ChatMessage {
            user: format!("mem-user-{}", i % USERS),
            content: text.clone(),
            correlation_id: None,
        })),
        expected_events: 1,
    });
    let plan = p.plan(ctx, script).await?;
    super::warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "platform chat line → bot → dbservice: intended send time → commit notice",
    )
    .await?;
    let resources = result.resources.clone();
    let mb_per_hour = |bytes: f64| bytes / 1e6;
    for r in &resources {
        let key = r.process.replace('-', "_");
        let slope_key = format!("rss_slope_mb_per_hour.{key}");
        if let Some(slope) = r.rss_slope_bytes_per_hour {
            result.metrics.insert(slope_key.clone(), mb_per_hour(slope));
        }
        if let Some([low, high]) = r.rss_slope_ci95_bytes_per_hour {
            result.metrics.insert(
                format!("{slope_key}.{}", crate::scenario::CI95_LOW),
                mb_per_hour(low),
            );
            result.metrics.insert(
                format!("{slope_key}.{}", crate::scenario::CI95_HIGH),
                mb_per_hour(high),
            );
        }
        result.metrics.insert(
            format!("rss_growth_mb.{key}"),
            (r.rss_end_bytes as f64 - r.rss_start_bytes as f64) / 1e6,
        );
        result
            .metrics
            .insert(format!("rss_max_mb.{key}"), r.rss_max_bytes as f64 / 1e6);
    }
    result.notes.push(format!(
        "RSS slope is the Theil–Sen slope (median of pairwise slopes) over the {} s measured phase \
         (after {} s of warm-up), extrapolated to an hour, with Sen's 95 % interval; a slope target \
         is met only when the whole interval is below it",
        p.timing.duration_s, p.timing.warmup_s
    ));
    Ok(result)
}
