//! Load through the bot: the parameters of an open-loop phase of platform events, the plan that
//! proves each by the commit notices of the database events the bot derives from it
//! (`<correlation id>:<n>`, see `load.rs`), the tap that splits its latency into the bot's hop and
//! the database service's, and the set-up that makes the bot know a scenario's users.

use super::Plan;
use crate::load::{self, Ids, Message, PhaseSpec, Proof, Script, Tap, TapMatch, Taps};
use crate::publishers::Publishers;
use crate::scenario::ScenarioContext;
use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Parameters of an open-loop phase through the bot (one publisher: the script's order matters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotLoadParams {
    #[serde(flatten)]
    pub timing: super::Timing,
    /// Size of chat-message texts.
    pub payload_bytes: usize,
}

impl crate::config::ScenarioParams for BotLoadParams {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()
    }
}

impl BotLoadParams {
    pub fn load_info(&self) -> crate::results::LoadInfo {
        self.timing.load_info(1, Some(self.payload_bytes))
    }

    /// This load through the bot: one publisher (the script's order matters: a join before the
    /// leave that follows it), proven by the commit notices of the database events the bot
    /// derives, with the bot's and the database service's hops timed by a tap.
    pub async fn plan(&self, ctx: &ScenarioContext, script: Script) -> anyhow::Result<Plan> {
        let t = &self.timing;
        Ok(Plan {
            warmup_count: t.warmup_count(),
            phase: PhaseSpec {
                rate_per_s: Some(t.rate_per_s),
                count: t.count(),
                taps: bot_taps(ctx).await?,
                ..PhaseSpec::new(
                    sender_connection(ctx).await?,
                    script,
                    Proof::CommitNotices(Ids::ViaBot),
                    t.drain_timeout(),
                )
            },
            listener: None,
        })
    }
}

/// A connection of its own for a phase's sender, so publishing never shares a connection with
/// the proof listener (as the framework's senders do).
pub async fn sender_connection(ctx: &ScenarioContext) -> anyhow::Result<Publishers> {
    Publishers::connect(&ctx.nats_url, &format!("bench-{}-sender", ctx.name), 1).await
}

/// The bot's channel, or an error if the bot is not running.
pub async fn bot_channel(ctx: &ScenarioContext) -> anyhow::Result<String> {
    let services = ctx.services().await?;
    services
        .bot_channel()
        .map(str::to_owned)
        .context("the bot is not running (services.start_bot = false?)")
}

/// The hops of a platform event through the bot: a tap on the database subjects sees the first
/// database event the bot derived from it (by correlation id).
pub async fn bot_taps(ctx: &ScenarioContext) -> anyhow::Result<Taps> {
    Ok(Taps {
        client: Some(load::connect(&ctx.nats_url, &format!("bench-{}-tap", ctx.name)).await?),
        points: vec![Tap {
            hop: "bot".into(),
            description: "platform event intended send time → the first database event the bot derived from it, seen by the tap".into(),
            subject: "rosey.db.>".into(),
            matches: TapMatch::CorrelationId,
        }],
        last_hop: "dbservice".into(),
        last_description: "first database event seen → commit notice of the message's last database event".into(),
    })
}

/// Make the bot know `users` (as the platform's `user_join` events would) and prove it: each
/// join must produce its two database events (`user.joined`, `stats.high_water`), committed.
pub async fn join_users(
    ctx: &ScenarioContext,
    channel: &str,
    users: Vec<rosey_protocol::platform::PlatformUser>,
    tag: &str,
) -> anyhow::Result<()> {
    let subject =
        rosey_protocol::platform::in_subject(channel, rosey_protocol::platform::kind::USER_JOIN);
    let count = users.len() as u64;
    let users = Arc::new(users);
    let plan = Plan {
        warmup_count: 0,
        phase: PhaseSpec {
            rate_per_s: Some(200.0),
            count,
            ..PhaseSpec::new(
                sender_connection(ctx).await?,
                Script::new(&["user_join"], move |_, i| Message {
                    kind: 0,
                    subject: subject.clone(),
                    payload: Bytes::from(rosey_protocol::to_seed_json(&users[i as usize])),
                    expected_events: 2,
                }),
                Proof::CommitNotices(Ids::ViaBot),
                Duration::from_secs(10),
            )
        },
        listener: None,
    };
    super::setup_phase(ctx, &plan, tag)
        .await
        .context("joining the scenario's users through the bot")
}
