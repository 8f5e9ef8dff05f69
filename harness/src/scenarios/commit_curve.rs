//! `commit_latency_curve`: single-event latency (event → commit notice) at a series of offered
//! rates, one steady open-loop step per rate, each warmed up and measured on its own ids: the
//! latency–throughput trade-off of the service's group commit as a curve (`curve` in the
//! results, a chart in the report, `rate_<r>.*` metrics). A step where the harness fell behind
//! its own schedule is marked as measuring the load generator; it does not make the whole sweep
//! invalid, because finding where that happens is part of what a sweep is for.

use super::{connect_publishers, measure_step, OpenLoopParams, Plan, Timing};
use crate::load::{Ids, PhaseOutcome, Proof};
use crate::publishers::Publishers;
use crate::results::{CurvePoint, LoadInfo, ScenarioResult};
use crate::scenario::{judge_lag, lag_limit_us, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const DEF: ScenarioDef = ScenarioDef {
    name: "commit_latency_curve",
    title: "Commit latency against offered rate",
    description: "rosey.db.message.log → commit notice at each rate of `rates_per_s`, one steady step per rate: p50/p99, achieved rate and CPU per event",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    /// The offered rates, ascending, events per second.
    rates_per_s: Vec<f64>,
    /// Measured seconds per rate.
    step_s: f64,
    /// Warm-up seconds before each step (same rate; discarded).
    warmup_s: f64,
    drain_timeout_s: f64,
    payload_bytes: usize,
}

impl Params {
    fn timing(&self, rate_per_s: f64) -> Timing {
        Timing {
            rate_per_s,
            duration_s: self.step_s,
            warmup_s: self.warmup_s,
            drain_timeout_s: self.drain_timeout_s,
        }
    }
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.rates_per_s.is_empty(), "rates_per_s must list rates");
        anyhow::ensure!(
            self.rates_per_s.windows(2).all(|w| w[0] < w[1]),
            "rates_per_s must be ascending"
        );
        for r in &self.rates_per_s {
            self.timing(*r).validate()?;
        }
        Ok(())
    }
}

/// The metric key prefix of a rate: `rate_200`, `rate_2.5`.
pub fn rate_key(rate_per_s: f64) -> String {
    format!("rate_{}", crate::report::view::trimmed(rate_per_s))
}

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    ctx.require_services()?;
    let mut result = ctx.result(LoadInfo {
        model: "open_loop".into(),
        target_rate_per_s: None,
        duration_s: p.step_s * p.rates_per_s.len() as f64,
        warmup_s: p.warmup_s * p.rates_per_s.len() as f64,
        concurrency: Some(1),
        payload_bytes: u32::try_from(p.payload_bytes).ok(),
    });
    let senders = connect_publishers(ctx, 1).await?;
    let (limit_us, limit_source) = lag_limit_us(
        &ctx.self_check,
        ctx.table.send_delay_p99_max_us,
        &ctx.table.targets,
    );
    for (k, &rate) in p.rates_per_s.iter().enumerate() {
        let (step, point, _) = message_log_step(
            ctx,
            &senders,
            p.timing(rate),
            p.payload_bytes,
            &format!("r{k}"),
            (limit_us, &limit_source),
        )
        .await?;
        fold_step(&mut result, &step, &point, &rate_key(rate));
        result.curve.push(point);
    }
    result.notes.push(format!(
        "one step per offered rate ({}/s), each {} s measured after {} s of warm-up on its own ids; \
         `rate_<r>` histograms are each step's latency from the intended send time",
        p.rates_per_s
            .iter()
            .map(|r| crate::report::view::trimmed(*r))
            .collect::<Vec<_>>()
            .join(", "),
        crate::report::view::trimmed(p.step_s),
        crate::report::view::trimmed(p.warmup_s)
    ));
    Ok(result)
}

/// One steady step of `single_event_latency`'s load at `timing`'s rate, warmed up and measured
/// on ids of its own (`tag`): the step's result, its curve point and the measured phase. The
/// sweep's steps and the knee search's (`knee.rs`).
pub(super) async fn message_log_step(
    ctx: &ScenarioContext,
    senders: &Publishers,
    timing: Timing,
    payload_bytes: usize,
    tag: &str,
    (limit_us, limit_source): (f64, &str),
) -> anyhow::Result<(ScenarioResult, CurvePoint, PhaseOutcome)> {
    let params = OpenLoopParams {
        timing,
        payload_bytes,
        publishers: 1,
        prefill_events: 0,
    };
    let plan = Plan::open_loop(
        &params,
        senders.clone(),
        crate::workers::RemoteScript::MessageLog { payload_bytes }.script(),
        Proof::CommitNotices(Ids::Direct),
    );
    plan_step(
        ctx,
        &plan,
        &params,
        tag,
        "rosey.db.message.log: intended send time → commit notice",
        (limit_us, limit_source),
    )
    .await
}

/// One steady step of `plan` (open loop at `params`' rate), warmed up and measured on ids of its
/// own (`tag`): the step's result, its curve point and the measured phase.
pub(super) async fn plan_step(
    ctx: &ScenarioContext,
    plan: &Plan,
    params: &OpenLoopParams,
    tag: &str,
    latency_description: &str,
    (limit_us, limit_source): (f64, &str),
) -> anyhow::Result<(ScenarioResult, CurvePoint, PhaseOutcome)> {
    let rate = params.timing.rate_per_s;
    let mut step = ctx.result(params.load_info());
    let (outcome, ()) = measure_step(ctx, plan, tag, &mut step, latency_description, async {})
        .await
        .with_context(|| format!("the step at {rate}/s"))?;
    let point = point(&step, rate, limit_us, limit_source.to_owned())?;
    Ok((step, point, outcome))
}

/// Add a step's accounting to the whole sweep's.
pub(super) fn add_accounting(result: &mut ScenarioResult, step: &ScenarioResult) {
    let a = &mut result.accounting;
    a.sent += step.accounting.sent;
    a.committed += step.accounting.committed;
    a.lost += step.accounting.lost;
    a.duplicated += step.accounting.duplicated;
}

/// The curve point of one measured step.
fn point(
    step: &ScenarioResult,
    rate: f64,
    limit_us: f64,
    limit_source: String,
) -> anyhow::Result<CurvePoint> {
    let harness_lag = judge_lag(step, limit_us, limit_source)
        .context("a step recorded no send delay: the harness cannot judge its own schedule")?;
    Ok(CurvePoint {
        offered_per_s: rate,
        achieved_per_s: step.throughput_per_s.unwrap_or(0.0),
        sent: step.accounting.sent,
        committed: step.accounting.committed,
        lost: step.accounting.lost,
        latency: step.latency.unwrap_or_default(),
        harness_lag,
        cpu_us_per_event: super::cpu_cost::us_per_event(&step.resources, "dbservice"),
    })
}

/// Add one step to the sweep's result: its accounting, its latency histogram as `<key>`, its
/// figures as `<key>.*` metrics, a note when the harness lagged in it, and its own notes.
fn fold_step(result: &mut ScenarioResult, step: &ScenarioResult, point: &CurvePoint, key: &str) {
    add_accounting(result, step);
    if let Some(h) = step.histograms.iter().find(|h| h.name == "latency") {
        let mut h = h.clone();
        h.name = key.to_owned();
        h.description = format!(
            "offered {}/s: intended send time → commit notice",
            crate::report::view::trimmed(point.offered_per_s)
        );
        result.histograms.push(h);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let m = &mut result.metrics;
    m.insert(format!("{key}.p50_ms"), ms(point.latency.p50_ns));
    m.insert(format!("{key}.p99_ms"), ms(point.latency.p99_ns));
    m.insert(format!("{key}.achieved_per_s"), point.achieved_per_s);
    m.insert(
        format!("{key}.send_delay_p99_us"),
        point.harness_lag.send_delay_p99_us,
    );
    if let Some(cpu) = point.cpu_us_per_event {
        m.insert(format!("{key}.cpu_us_per_event"), cpu);
    }
    if !point.harness_lag.within {
        result.notes.push(format!(
            "at {}/s the harness fell behind its own schedule (send delay p99 {:.0} µs > {:.0} µs): \
             that point measures the load generator, not the service",
            crate::report::view::trimmed(point.offered_per_s),
            point.harness_lag.send_delay_p99_us,
            point.harness_lag.limit_us
        ));
    }
    // Every note of the step (warm-up loss, drain, the service's own counters), so nothing a
    // step had to say is dropped.
    for n in &step.notes {
        result.notes.push(format!(
            "at {}/s: {n}",
            crate::report::view::trimmed(point.offered_per_s)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScenarioParams;

    fn params(rates: &[f64]) -> Params {
        Params {
            rates_per_s: rates.to_vec(),
            step_s: 1.0,
            warmup_s: 0.5,
            drain_timeout_s: 5.0,
            payload_bytes: 64,
        }
    }

    #[test]
    fn rates_must_be_positive_and_ascending() {
        assert!(params(&[100.0, 1000.0]).validate().is_ok());
        assert!(params(&[]).validate().is_err());
        assert!(params(&[1000.0, 100.0]).validate().is_err());
        assert!(params(&[0.0, 100.0]).validate().is_err());
    }

    #[test]
    fn rate_keys_are_metric_prefixes() {
        assert_eq!(rate_key(200.0), "rate_200");
        assert_eq!(rate_key(2.5), "rate_2.5");
    }
}
