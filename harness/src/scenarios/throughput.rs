//! Throughput of the database service, proven by commit notices:
//!
//! * `sustained_throughput`: open loop at a high target rate; every event must be committed,
//!   and the achieved committed rate is reported against the target.
//! * `burst_throughput`: N events handed to the client as fast as it takes them (all intended
//!   at the burst's start); the drain time runs until the last one is committed.

use super::{connect_publishers, warm_then_measure, OpenLoopParams, Plan};
use crate::load::{Ids, PhaseSpec, Proof};
use crate::results::{LoadInfo, ScenarioResult};
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use crate::workers::RemoteScript;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const SUSTAINED: ScenarioDef = ScenarioDef {
    name: "sustained_throughput",
    title: "Sustained throughput",
    description: "message.log events open loop at a high target rate; committed rate achieved and every event committed",
    needs_services: true,
    check: crate::config::check_params::<OpenLoopParams>,
    run: run_sustained,
};

pub const BURST: ScenarioDef = ScenarioDef {
    name: "burst_throughput",
    title: "Burst throughput",
    description:
        "N message.log events as fast as the client takes them; time until the last is committed",
    needs_services: true,
    check: crate::config::check_params::<BurstParams>,
    run: run_burst,
};

fn run_sustained(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(sustained(ctx))
}

fn run_burst(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(burst(ctx))
}

async fn sustained(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    ctx.require_services()?;
    let mut result = ctx.result(p.load_info());
    let senders = connect_publishers(ctx, p.publishers).await?;
    let plan = Plan::open_loop(
        &p,
        senders,
        RemoteScript::MessageLog {
            payload_bytes: p.payload_bytes,
        }
        .script(),
        Proof::CommitNotices(Ids::Direct),
    );
    warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "rosey.db.message.log at the target rate: intended send time → commit notice",
    )
    .await?;
    let achieved = result.throughput_per_s.unwrap_or(0.0);
    result
        .metrics
        .insert("target_rate_per_s".into(), p.timing.rate_per_s);
    result.metrics.insert(
        "achieved_rate_pct".into(),
        achieved / p.timing.rate_per_s * 100.0,
    );
    Ok(result)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BurstParams {
    /// Events in the measured burst.
    events: u64,
    /// Events in a warm-up burst before it (discarded).
    warmup_events: u64,
    payload_bytes: usize,
    drain_timeout_s: f64,
    publishers: u32,
}

impl crate::config::ScenarioParams for BurstParams {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.events > 0 && self.publishers > 0,
            "events and publishers must be positive"
        );
        Ok(())
    }
}

async fn burst(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: BurstParams = ctx.params()?;
    ctx.require_services()?;
    let mut result = ctx.result(LoadInfo {
        model: "burst".into(),
        target_rate_per_s: None,
        duration_s: 0.0,
        warmup_s: 0.0,
        concurrency: Some(p.publishers),
        payload_bytes: u32::try_from(p.payload_bytes).ok(),
    });
    let senders = connect_publishers(ctx, p.publishers).await?;
    let plan = Plan {
        warmup_count: p.warmup_events,
        phase: PhaseSpec {
            count: p.events,
            ..PhaseSpec::new(
                senders,
                RemoteScript::MessageLog {
                    payload_bytes: p.payload_bytes,
                }
                .script(),
                Proof::CommitNotices(Ids::Direct),
                Duration::from_secs_f64(p.drain_timeout_s),
            )
        },
        listener: None,
    };
    let outcome = warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "rosey.db.message.log burst: burst start → commit notice (max = time to commit the whole burst)",
    )
    .await?;
    let r = &outcome.record;
    let to_last = r.last_confirm.map(|l| l.saturating_duration_since(r.start));
    if let Some(d) = to_last {
        result
            .metrics
            .insert("burst_commit_ms".into(), d.as_secs_f64() * 1e3);
    }
    result
        .metrics
        .insert("burst_events".into(), p.events as f64);
    result.load.duration_s = to_last.map_or(0.0, |d| d.as_secs_f64());
    Ok(result)
}
