//! The saturation knee: the highest offered rate at which a service still meets its latency
//! objective with nothing lost, found by search rather than read off fixed rates.
//!
//! `single_event_latency_knee` searches the load of `single_event_latency` (one publisher,
//! `rosey.db.message.log`, proven by commit notices), `request_reply_latency_knee` that of
//! `request_reply_latency` (`channel_stats` requests on a prefilled database, proven by replies
//! that read the prefilled rows). `cargo xtask bench --knee <scenario>` runs one alone. Each step is an open-loop phase at one rate, warmed up and
//! measured on its own ids, long enough for the p99 to have `tail_events` events beyond it (within
//! `min_step_s`..`max_step_s`). A step passes when its p99 is within `slo_p99_ms`, it achieved at
//! least `min_achieved_fraction` of the offered rate (proofs per second from the first proof to
//! the last, `PhaseRecord::commit_rate_per_s`), it lost nothing, and the harness kept its
//! schedule. The search ([`Search`]) multiplies the rate by `growth` until a step fails, bisects
//! (geometrically) between the highest pass and the lowest failure until they are within
//! `resolution`, then repeats the knee's step until it passed `confirmations` times; a failed
//! repeat moves the knee down. The knee is reported with that bracket as its interval.
//!
//! A step where the harness fell behind its own schedule measured the load generator. When that
//! is what ended the search, the service's knee lies above what the harness could offer: the
//! result says so (`knee_at_least_per_s`, limit "load generator"), and there is no `knee_per_s`
//! to track or gate, because it would be the harness's figure, not the service's.

use super::{commit_curve, connect_publishers, Timing};
use crate::results::{CurvePoint, LoadInfo, ProcessResources, ScenarioResult};
use crate::scenario::{lag_limit_us, BoxFuture, ScenarioContext, ScenarioDef};
use serde::{Deserialize, Serialize};

pub const SINGLE_EVENT: ScenarioDef = ScenarioDef {
    name: "single_event_latency_knee",
    title: "Saturation knee: single event → committed",
    description: "the highest offered rate of message.log events whose commit-notice p99 meets the objective with nothing lost and the harness on schedule, by stepping and bisecting the rate",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run: run_single_event,
};

pub const REQUEST_REPLY: ScenarioDef = ScenarioDef {
    name: "request_reply_latency_knee",
    title: "Saturation knee: channel_stats request → reply",
    description: "the highest offered rate of channel_stats requests (on a prefilled database) whose reply p99 meets the objective with every request answered and the harness on schedule, by stepping and bisecting the rate",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run: run_request_reply,
};

/// The scenarios whose knee can be searched (`cargo xtask bench --knee <scenario>`), with the
/// scenario that searches it.
pub const KNEES: &[(&str, &str)] = &[
    ("single_event_latency", SINGLE_EVENT.name),
    ("request_reply_latency", REQUEST_REPLY.name),
];

/// The load a knee search steps through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// `single_event_latency`'s: message.log events, proven by commit notices.
    SingleEvent,
    /// `request_reply_latency`'s: channel_stats requests on a prefilled database, proven by
    /// replies that read the prefilled rows.
    RequestReply,
}

/// The knee scenario of `scenario`, if it has one.
pub fn knee_scenario(scenario: &str) -> Option<&'static str> {
    KNEES
        .iter()
        .find(|(of, _)| *of == scenario)
        .map(|(_, knee)| *knee)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    /// The first offered rate, events per second.
    start_per_s: f64,
    /// The highest rate offered; a service that passes it is reported as "at least".
    max_per_s: f64,
    /// Factor between steps until the first failure.
    growth: f64,
    /// Bisection ends when the lowest failing rate is within this fraction above the knee.
    resolution: f64,
    /// The latency objective: p99 from intended send time to commit notice, in ms.
    slo_p99_ms: f64,
    /// A step passes only if it achieved at least this fraction of its offered rate.
    min_achieved_fraction: f64,
    /// Events beyond the p99 a step aims for (1,000: the p99 is not the sample's tail).
    tail_events: u64,
    min_step_s: f64,
    max_step_s: f64,
    /// Warm-up before every step (same rate, own ids, discarded).
    warmup_s: f64,
    drain_timeout_s: f64,
    /// Passing steps at the knee's rate (the first included) before it is reported.
    confirmations: u32,
    /// The most steps one search may take.
    max_steps: u32,
    payload_bytes: usize,
    /// Chat lines written (and proven) before the search, for queries to read (0: none).
    prefill_events: u64,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        crate::load::check_rate(self.start_per_s)?;
        crate::load::check_rate(self.max_per_s)?;
        self.search().validate()?;
        anyhow::ensure!(
            self.slo_p99_ms.is_finite() && self.slo_p99_ms > 0.0,
            "slo_p99_ms must be positive"
        );
        anyhow::ensure!(
            self.min_achieved_fraction > 0.0 && self.min_achieved_fraction <= 1.0,
            "min_achieved_fraction must be in (0, 1]"
        );
        anyhow::ensure!(self.tail_events >= 1, "tail_events must be at least 1");
        anyhow::ensure!(
            self.min_step_s > 0.0 && self.min_step_s <= self.max_step_s,
            "min_step_s must be positive and at most max_step_s"
        );
        self.timing(self.start_per_s).validate()
    }
}

impl Params {
    fn search(&self) -> SearchSpec {
        SearchSpec {
            start_per_s: self.start_per_s,
            max_per_s: self.max_per_s,
            growth: self.growth,
            resolution: self.resolution,
            confirmations: self.confirmations,
            max_steps: self.max_steps,
        }
    }

    /// A step at `rate`: long enough for `tail_events` beyond the p99, within the step bounds.
    fn timing(&self, rate_per_s: f64) -> Timing {
        let wanted = self.tail_events as f64 / (1.0 - P99) / rate_per_s;
        Timing {
            rate_per_s,
            duration_s: wanted.clamp(self.min_step_s, self.max_step_s),
            warmup_s: self.warmup_s,
            drain_timeout_s: self.drain_timeout_s,
        }
    }
}

const P99: f64 = 0.99;

/// What makes a step pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    pub slo_p99_ns: u64,
    pub min_achieved_fraction: f64,
    /// The harness's send-delay limit (p99, µs): beyond it a step measured the load generator.
    pub send_delay_limit_us: f64,
}

/// The figures of one step that decide it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub lost: u64,
    /// Proven events (the latency histogram's count).
    pub proven: u64,
    pub p99_ns: u64,
    pub send_delay_p99_us: f64,
}

impl StepFigures {
    /// The figures of a measured step's curve point.
    pub fn of(point: &CurvePoint) -> StepFigures {
        StepFigures {
            offered_per_s: point.offered_per_s,
            achieved_per_s: point.achieved_per_s,
            lost: point.lost,
            proven: point.latency.count,
            p99_ns: point.latency.p99_ns,
            send_delay_p99_us: point.harness_lag.send_delay_p99_us,
        }
    }
}

/// How one step came out.
#[derive(Debug, Clone, PartialEq)]
pub enum StepVerdict {
    Pass,
    /// The service missed the objective (why).
    Fail(String),
    /// The harness fell behind its schedule: the step measured the load generator (why).
    LoadGenerator(String),
}

impl StepVerdict {
    pub fn passed(&self) -> bool {
        *self == StepVerdict::Pass
    }

    pub fn text(&self) -> String {
        match self {
            StepVerdict::Pass => "pass".into(),
            StepVerdict::Fail(why) => format!("fail: {why}"),
            StepVerdict::LoadGenerator(why) => format!("load generator: {why}"),
        }
    }
}

/// Judge one step. The harness's schedule comes first: a step it could not offer on time says
/// nothing about the service, whatever its latency.
pub fn judge(f: &StepFigures, c: &Criteria) -> StepVerdict {
    if f.send_delay_p99_us > c.send_delay_limit_us {
        return StepVerdict::LoadGenerator(format!(
            "send delay p99 {:.0} µs > {:.0} µs",
            f.send_delay_p99_us, c.send_delay_limit_us
        ));
    }
    let mut why = Vec::new();
    if f.lost > 0 {
        why.push(format!("lost {}", f.lost));
    }
    if f.proven == 0 {
        why.push("nothing proven".to_owned());
    } else if f.p99_ns > c.slo_p99_ns {
        why.push(format!(
            "p99 {:.2} ms > {:.2} ms",
            f.p99_ns as f64 / 1e6,
            c.slo_p99_ns as f64 / 1e6
        ));
    }
    if f.achieved_per_s < c.min_achieved_fraction * f.offered_per_s {
        why.push(format!(
            "achieved {:.0}/s < {:.0} % of {}/s",
            f.achieved_per_s,
            c.min_achieved_fraction * 100.0,
            crate::report::view::trimmed(f.offered_per_s)
        ));
    }
    if why.is_empty() {
        StepVerdict::Pass
    } else {
        StepVerdict::Fail(why.join(", "))
    }
}

/// How the search moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSpec {
    pub start_per_s: f64,
    pub max_per_s: f64,
    pub growth: f64,
    pub resolution: f64,
    pub confirmations: u32,
    pub max_steps: u32,
}

impl SearchSpec {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.start_per_s > 0.0 && self.start_per_s <= self.max_per_s,
            "start_per_s must be positive and at most max_per_s"
        );
        anyhow::ensure!(
            self.growth.is_finite() && self.growth > 1.0,
            "growth must be above 1"
        );
        anyhow::ensure!(
            self.resolution.is_finite()
                && self.resolution > 0.0
                && self.resolution < self.growth - 1.0,
            "resolution must be positive and below growth − 1"
        );
        anyhow::ensure!(self.confirmations >= 1, "confirmations must be at least 1");
        anyhow::ensure!(self.max_steps >= 2, "max_steps must be at least 2");
        Ok(())
    }
}

/// What ended the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The service failed a step above the knee.
    Service,
    /// The harness could not offer the rate above the knee on schedule.
    LoadGenerator,
    /// Every rate up to `max_per_s` passed.
    MaxRate,
    /// Even the lowest rate tried failed.
    BelowRange,
    /// `max_steps` ran out before the bracket closed.
    StepBudget,
}

impl Limit {
    pub fn text(self) -> &'static str {
        match self {
            Limit::Service => "the service",
            Limit::LoadGenerator => "the load generator",
            Limit::MaxRate => "none within max_per_s",
            Limit::BelowRange => "the service, below the lowest rate tried",
            Limit::StepBudget => {
                "the step budget (max_steps), which ran out before the bracket closed"
            }
        }
    }
}

/// The outcome of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// The highest rate that passed every time it was measured, confirmed as asked (unless the
    /// step budget ran out first).
    pub rate_per_s: Option<f64>,
    /// The lowest rate that failed (by the service or the load generator).
    pub upper_per_s: Option<f64>,
    pub limit: Limit,
}

/// The knee search: which rate to measure next, given every step so far. Deterministic, so it is
/// unit-tested against simulated services.
#[derive(Debug, Clone)]
pub struct Search {
    spec: SearchSpec,
    steps: Vec<(f64, StepVerdict)>,
}

/// How far below `start_per_s` a search steps down before it gives up (`growth^DOWN_STEPS`).
const DOWN_STEPS: i32 = 3;

impl Search {
    pub fn new(spec: SearchSpec) -> Search {
        Search {
            spec,
            steps: Vec::new(),
        }
    }

    /// The lowest rate a search that steps down from a failing start may try.
    fn floor_per_s(&self) -> f64 {
        self.spec.start_per_s / self.spec.growth.powi(DOWN_STEPS)
    }

    pub fn steps(&self) -> &[(f64, StepVerdict)] {
        &self.steps
    }

    pub fn record(&mut self, rate_per_s: f64, verdict: StepVerdict) {
        self.steps.push((rate_per_s, verdict));
    }

    /// The lowest rate that failed, and whether the load generator was why.
    fn lowest_failure(&self) -> Option<(f64, bool)> {
        self.steps
            .iter()
            .filter(|(_, v)| !v.passed())
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(r, v)| (*r, matches!(v, StepVerdict::LoadGenerator(_))))
    }

    /// The highest rate below every failure that passed each time it ran.
    fn highest_pass(&self) -> Option<f64> {
        let below = self.lowest_failure().map_or(f64::INFINITY, |f| f.0);
        self.steps
            .iter()
            .filter(|(r, v)| v.passed() && *r < below)
            .map(|(r, _)| *r)
            .max_by(f64::total_cmp)
    }

    /// How many times `rate` passed.
    pub fn passes_at(&self, rate: f64) -> u32 {
        let n = self
            .steps
            .iter()
            .filter(|(r, v)| *r == rate && v.passed())
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The next rate to measure, or `None` when the search is over (or out of steps).
    pub fn next(&self) -> Option<f64> {
        if self.steps.len() >= self.spec.max_steps as usize {
            return None;
        }
        self.proposal()
    }

    /// The next rate by the rules alone, whatever the step budget.
    fn proposal(&self) -> Option<f64> {
        let s = &self.spec;
        let failure = self.lowest_failure();
        let Some(pass) = self.highest_pass() else {
            // Nothing passed yet: start, or step down from a failing start.
            return match failure {
                None => Some(s.start_per_s),
                Some((fail, _)) => {
                    let lower = nice(fail / s.growth);
                    (lower >= self.floor_per_s() * (1.0 - 1e-9)).then_some(lower)
                }
            };
        };
        match failure {
            // Nothing failed: go up until the maximum, then confirm it.
            None if pass < s.max_per_s => {
                let up = nice((pass * s.growth).min(s.max_per_s));
                // A maximum that rounds below itself is as high as the search goes.
                if up > pass {
                    Some(up)
                } else {
                    self.confirm(pass)
                }
            }
            // The bracket is open: bisect it, on a log scale.
            Some((fail, _)) if fail / pass > 1.0 + s.resolution => {
                let mid = nice((pass * fail).sqrt());
                // Rounding may land on an end of the bracket; then it is as closed as it gets.
                (mid > pass && mid < fail)
                    .then_some(mid)
                    .or_else(|| self.confirm(pass))
            }
            _ => self.confirm(pass),
        }
    }

    fn confirm(&self, pass: f64) -> Option<f64> {
        (self.passes_at(pass) < self.spec.confirmations).then_some(pass)
    }

    /// The knee so far (final once [`Search::next`] says `None`).
    pub fn knee(&self) -> Knee {
        let pass = self.highest_pass();
        let failure = self.lowest_failure();
        let limit = match (pass, failure) {
            _ if self.proposal().is_some() => Limit::StepBudget,
            // Nothing passed and the lowest rate tried failed on the harness's schedule: what
            // is known is that the load generator could not offer it, not the service's knee.
            (None, Some((_, true))) => Limit::LoadGenerator,
            (None, _) => Limit::BelowRange,
            (Some(_), None) => Limit::MaxRate,
            (Some(_), Some((_, true))) => Limit::LoadGenerator,
            (Some(_), Some((_, false))) => Limit::Service,
        };
        Knee {
            rate_per_s: pass,
            upper_per_s: failure.map(|f| f.0),
            limit,
        }
    }
}

/// `x` rounded to three significant digits, so steps have readable rates.
fn nice(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 2);
    (x / scale).round() * scale
}

fn run_single_event(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx, Load::SingleEvent))
}

fn run_request_reply(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx, Load::RequestReply))
}

/// One step of `load` at `timing`'s rate (see [`commit_curve::plan_step`]).
async fn step(
    ctx: &ScenarioContext,
    load: Load,
    senders: &crate::publishers::Publishers,
    p: &Params,
    timing: Timing,
    tag: &str,
    limit: (f64, &str),
) -> anyhow::Result<(ScenarioResult, CurvePoint, crate::load::PhaseOutcome)> {
    match load {
        Load::SingleEvent => {
            commit_curve::message_log_step(ctx, senders, timing, p.payload_bytes, tag, limit).await
        }
        Load::RequestReply => {
            let params = super::OpenLoopParams {
                timing,
                payload_bytes: p.payload_bytes,
                publishers: 1,
                prefill_events: p.prefill_events,
            };
            let check: crate::load::ReplyCheck = if p.prefill_events > 0 {
                std::sync::Arc::new(super::latency::reads_prefilled_rows)
            } else {
                std::sync::Arc::new(super::latency::is_channel_stats_success)
            };
            // The seed's cmd_stats sends `{}`; the body is never parsed.
            let plan = super::Plan::open_loop(
                &params,
                senders.clone(),
                crate::load::Script::uniform(
                    rosey_protocol::subjects::QUERY_CHANNEL_STATS,
                    super::fixed_payload(bytes::Bytes::from_static(b"{}")),
                ),
                crate::load::Proof::Replies(check),
            );
            commit_curve::plan_step(
                ctx,
                &plan,
                &params,
                tag,
                "rosey.db.query.channel_stats: intended send time → successful reply",
                limit,
            )
            .await
        }
    }
}

async fn measure(ctx: &ScenarioContext, load: Load) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    ctx.require_services()?;
    let mut result = ctx.result(LoadInfo {
        model: "open_loop".into(),
        target_rate_per_s: None,
        duration_s: 0.0,
        warmup_s: 0.0,
        concurrency: Some(1),
        payload_bytes: u32::try_from(p.payload_bytes).ok(),
    });
    let senders = connect_publishers(ctx, 1).await?;
    if load == Load::RequestReply {
        super::prefill(
            ctx,
            &senders,
            p.prefill_events,
            p.timing(p.start_per_s).drain_timeout(),
        )
        .await?;
    }
    let (limit_us, limit_source) = lag_limit_us(
        &ctx.self_check,
        ctx.table.send_delay_p99_max_us,
        &ctx.table.targets,
    );
    let criteria = Criteria {
        slo_p99_ns: (p.slo_p99_ms * 1e6).round() as u64,
        min_achieved_fraction: p.min_achieved_fraction,
        send_delay_limit_us: limit_us,
    };
    let mut search = Search::new(p.search());
    // Each step's resources, by step index, for the bottleneck.
    let mut resources: Vec<Vec<ProcessResources>> = Vec::new();
    while let Some(rate) = search.next() {
        let k = search.steps().len();
        let timing = p.timing(rate);
        let (step, mut point, outcome) = step(
            ctx,
            load,
            &senders,
            &p,
            timing,
            &format!("k{k}"),
            (limit_us, &limit_source),
        )
        .await?;
        // Achieved: the rate of proofs while they came, not diluted by a short step's last
        // latencies (a passing 0.5 s step whose last events take 10 ms would read 98 %).
        point.achieved_per_s = outcome.record.commit_rate_per_s().unwrap_or(0.0);
        let verdict = judge(&StepFigures::of(&point), &criteria);
        fold_step(&mut result, &step, &point, k, timing, &verdict);
        resources.push(step.resources);
        search.record(rate, verdict);
    }
    let knee = search.knee();
    summarize(&mut result, &p, &search, &knee, &resources);
    Ok(result)
}

/// One step into the search's result: its accounting, its curve point and a note with its
/// verdict and its own notes.
fn fold_step(
    result: &mut ScenarioResult,
    step: &ScenarioResult,
    point: &CurvePoint,
    k: usize,
    timing: Timing,
    verdict: &StepVerdict,
) {
    commit_curve::add_accounting(result, step);
    result.load.duration_s += timing.duration_s;
    result.load.warmup_s += timing.warmup_s;
    let rate = crate::report::view::trimmed(point.offered_per_s);
    result.notes.push(format!(
        "step {} at {rate}/s ({} s): {}; p99 {:.2} ms on {} events, achieved {:.0}/s, lost {}",
        k + 1,
        crate::report::view::trimmed(timing.duration_s),
        verdict.text(),
        point.latency.p99_ns as f64 / 1e6,
        point.latency.count,
        point.achieved_per_s,
        point.lost
    ));
    for n in &step.notes {
        result
            .notes
            .push(format!("step {} at {rate}/s: {n}", k + 1));
    }
    result.curve.push(point.clone());
}

/// The knee's metrics and the note that says what limited it.
fn summarize(
    result: &mut ScenarioResult,
    p: &Params,
    search: &Search,
    knee: &Knee,
    resources: &[Vec<ProcessResources>],
) {
    let steps = search.steps();
    let m = &mut result.metrics;
    m.insert("knee_steps".into(), steps.len() as f64);
    m.insert("knee_slo_p99_ms".into(), p.slo_p99_ms);
    if let Some(upper) = knee.upper_per_s {
        m.insert("knee_upper_per_s".into(), upper);
    }
    // Overload is what a search is for: a failing step may lose events (the service could not
    // keep up within the drain deadline). Each step's loss is in the curve; a passing step
    // never lost any.
    result.accounting.loss_expected = true;
    let Some(rate) = knee.rate_per_s else {
        result.notes.insert(
            0,
            format!(
                "no knee: {} (the lowest rate tried, {}/s, failed)",
                knee.limit.text(),
                crate::report::view::trimmed(knee.upper_per_s.unwrap_or(p.start_per_s))
            ),
        );
        return;
    };
    // The knee's own figures: its last passing step (a confirmation, when there were any).
    let at = steps
        .iter()
        .rposition(|(r, v)| *r == rate && v.passed())
        .unwrap_or(0);
    let point = &result.curve[at];
    let passes = search.passes_at(rate);
    let m = &mut result.metrics;
    match knee.limit {
        Limit::Service => {
            m.insert("knee_per_s".into(), rate);
        }
        _ => {
            m.insert("knee_at_least_per_s".into(), rate);
        }
    }
    m.insert("knee_p50_ms".into(), point.latency.p50_ns as f64 / 1e6);
    m.insert("knee_p99_ms".into(), point.latency.p99_ns as f64 / 1e6);
    m.insert("knee_achieved_per_s".into(), point.achieved_per_s);
    let at_knee = resources.get(at).map(Vec::as_slice).unwrap_or_default();
    for r in at_knee {
        m.insert(format!("knee_cpu_percent.{}", r.process), r.cpu_percent);
    }
    let tail = (point.latency.count as f64 * (1.0 - P99)).floor() as u64;
    let mut text = match knee.limit {
        Limit::Service => format!("knee {}/s", crate::report::view::trimmed(rate)),
        _ => format!("knee at least {}/s", crate::report::view::trimmed(rate)),
    };
    text.push_str(&format!(
        " (p99 {:.2} ms ≤ {} ms, achieved {:.0}/s, nothing lost, harness on schedule; passed {passes}×)",
        point.latency.p99_ns as f64 / 1e6,
        crate::report::view::trimmed(p.slo_p99_ms),
        point.achieved_per_s
    ));
    if let Some(upper) = knee.upper_per_s {
        let why = steps
            .iter()
            .find(|(r, v)| *r == upper && !v.passed())
            .map(|(_, v)| v.text())
            .unwrap_or_default();
        text.push_str(&format!(
            "; the next rate tried, {}/s, failed ({why})",
            crate::report::view::trimmed(upper)
        ));
    }
    text.push_str(&format!("; limited by {}", knee.limit.text()));
    if let Some(b) = bottleneck(at_knee) {
        text.push_str(&format!(
            "; nearest to a full core at the knee: {} at {:.0} % of a core ({})",
            b.process,
            b.cpu_percent,
            at_knee
                .iter()
                .filter(|r| r.process != b.process)
                .map(|r| format!("{} {:.0} %", r.process, r.cpu_percent))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if tail < p.tail_events {
        text.push_str(&format!(
            "; its p99 rests on {tail} events beyond it (fewer than the {} asked: max_step_s)",
            p.tail_events
        ));
    }
    result.notes.insert(0, text);
}

/// The process closest to a full core.
fn bottleneck(resources: &[ProcessResources]) -> Option<&ProcessResources> {
    resources
        .iter()
        .max_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScenarioParams;

    fn spec() -> SearchSpec {
        SearchSpec {
            start_per_s: 1000.0,
            max_per_s: 200_000.0,
            growth: 2.0,
            resolution: 0.05,
            confirmations: 3,
            max_steps: 40,
        }
    }

    /// A simulated service: it passes below `capacity`, fails at or above it, and the load
    /// generator cannot offer more than `generator`.
    fn simulate(spec: SearchSpec, capacity: f64, generator: f64) -> Search {
        let mut s = Search::new(spec);
        while let Some(rate) = s.next() {
            let v = if rate > generator {
                StepVerdict::LoadGenerator("late".into())
            } else if rate >= capacity {
                StepVerdict::Fail("p99".into())
            } else {
                StepVerdict::Pass
            };
            s.record(rate, v);
        }
        s
    }

    #[test]
    fn the_search_finds_a_known_capacity_within_its_resolution() {
        for capacity in [1500.0, 7300.0, 12_345.0, 99_000.0] {
            let s = simulate(spec(), capacity, f64::INFINITY);
            let k = s.knee();
            assert_eq!(k.limit, Limit::Service, "{capacity}: {:?}", s.steps());
            let rate = k.rate_per_s.unwrap();
            let upper = k.upper_per_s.unwrap();
            assert!(
                rate < capacity && capacity <= upper,
                "{rate} {capacity} {upper}"
            );
            assert!(
                upper / rate <= 1.0 + spec().resolution + 0.01,
                "{rate}..{upper}"
            );
            // The knee was measured as often as asked, and the search stayed short.
            let at = s.steps().iter().filter(|(r, _)| *r == rate).count();
            assert_eq!(at, 3, "{:?}", s.steps());
            assert!(
                s.steps().len() <= 16,
                "{} steps: {:?}",
                s.steps().len(),
                s.steps()
            );
        }
    }

    #[test]
    fn a_generator_limit_is_reported_as_such() {
        let s = simulate(spec(), 50_000.0, 9000.0);
        let k = s.knee();
        assert_eq!(k.limit, Limit::LoadGenerator);
        assert!(k.rate_per_s.unwrap() <= 9000.0);
        assert!(k.upper_per_s.unwrap() > 9000.0);
    }

    #[test]
    fn a_service_faster_than_the_maximum_is_at_least_the_maximum() {
        let s = simulate(spec(), f64::INFINITY, f64::INFINITY);
        let k = s.knee();
        assert_eq!(k.limit, Limit::MaxRate);
        assert_eq!(k.rate_per_s, Some(200_000.0));
        assert_eq!(k.upper_per_s, None);
    }

    #[test]
    fn a_failing_start_steps_down_and_gives_up_below_the_range() {
        let s = simulate(spec(), 300.0, f64::INFINITY);
        let k = s.knee();
        assert_eq!(k.limit, Limit::Service, "{:?}", s.steps());
        assert!(k.rate_per_s.unwrap() < 300.0);
        let s = simulate(spec(), 10.0, f64::INFINITY);
        let k = s.knee();
        assert_eq!(k.limit, Limit::BelowRange, "{:?}", s.steps());
        assert_eq!(k.rate_per_s, None);
        assert_eq!(k.upper_per_s, Some(125.0));
        // A machine too busy to keep even the lowest schedule: the load generator is named, not
        // the service (a noisy run once said "the service, below the lowest rate tried" here).
        let s = simulate(spec(), f64::INFINITY, 10.0);
        let k = s.knee();
        assert_eq!(k.limit, Limit::LoadGenerator, "{:?}", s.steps());
        assert_eq!(k.rate_per_s, None);
    }

    #[test]
    fn a_failed_confirmation_moves_the_knee_down() {
        // Flaky at 7,000/s and above: passes the first time, fails the second.
        let mut s = Search::new(spec());
        let mut seen = std::collections::HashMap::<u64, u32>::new();
        while let Some(rate) = s.next() {
            let n = seen.entry(rate as u64).or_default();
            *n += 1;
            let v = if rate >= 9000.0 || (rate >= 7000.0 && *n >= 2) {
                StepVerdict::Fail("p99".into())
            } else {
                StepVerdict::Pass
            };
            s.record(rate, v);
        }
        let k = s.knee();
        assert_eq!(k.limit, Limit::Service);
        assert!(k.rate_per_s.unwrap() < 7000.0, "{:?}", s.steps());
        assert!(k.upper_per_s.unwrap() >= 7000.0);
    }

    #[test]
    fn the_step_budget_is_a_limit_of_its_own() {
        let s = simulate(
            SearchSpec {
                max_steps: 4,
                ..spec()
            },
            12_345.0,
            f64::INFINITY,
        );
        assert_eq!(s.steps().len(), 4);
        assert_eq!(s.knee().limit, Limit::StepBudget);
    }

    fn figures() -> StepFigures {
        StepFigures {
            offered_per_s: 1000.0,
            achieved_per_s: 1000.0,
            lost: 0,
            proven: 20_000,
            p99_ns: 4_000_000,
            send_delay_p99_us: 100.0,
        }
    }

    fn criteria() -> Criteria {
        Criteria {
            slo_p99_ns: 5_000_000,
            min_achieved_fraction: 0.99,
            send_delay_limit_us: 500.0,
        }
    }

    #[test]
    fn a_step_passes_only_on_every_criterion_and_the_schedule_comes_first() {
        assert_eq!(judge(&figures(), &criteria()), StepVerdict::Pass);
        let fail = |f: StepFigures| judge(&f, &criteria());
        assert!(
            matches!(fail(StepFigures { lost: 1, ..figures() }), StepVerdict::Fail(w) if w.contains("lost 1"))
        );
        assert!(
            matches!(fail(StepFigures { p99_ns: 6_000_000, ..figures() }), StepVerdict::Fail(w) if w.contains("p99 6.00 ms > 5.00 ms"))
        );
        assert!(
            matches!(fail(StepFigures { achieved_per_s: 980.0, ..figures() }), StepVerdict::Fail(w) if w.contains("achieved 980/s"))
        );
        assert!(matches!(
            fail(StepFigures {
                proven: 0,
                ..figures()
            }),
            StepVerdict::Fail(_)
        ));
        // A late harness makes the step the load generator's, even when the service failed too.
        let late = StepFigures {
            send_delay_p99_us: 900.0,
            p99_ns: 9_000_000,
            ..figures()
        };
        assert!(
            matches!(fail(late), StepVerdict::LoadGenerator(w) if w.contains("900 µs > 500 µs"))
        );
    }

    fn params() -> Params {
        Params {
            start_per_s: 1000.0,
            max_per_s: 100_000.0,
            growth: 2.0,
            resolution: 0.1,
            slo_p99_ms: 10.0,
            min_achieved_fraction: 0.99,
            tail_events: 1000,
            min_step_s: 5.0,
            max_step_s: 30.0,
            warmup_s: 1.0,
            drain_timeout_s: 10.0,
            confirmations: 3,
            max_steps: 20,
            payload_bytes: 64,
            prefill_events: 0,
        }
    }

    #[test]
    fn a_step_is_long_enough_for_its_p99_within_the_bounds() {
        let p = params();
        assert!(p.validate().is_ok());
        // 1,000 events beyond the p99: 100,000 events.
        assert!((p.timing(10_000.0).duration_s - 10.0).abs() < 1e-9);
        assert!((p.timing(1000.0).duration_s - 30.0).abs() < 1e-9, "capped");
        assert!(
            (p.timing(100_000.0).duration_s - 5.0).abs() < 1e-9,
            "at least min_step_s"
        );
        assert!(Params {
            growth: 1.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(Params {
            resolution: 1.5,
            ..params()
        }
        .validate()
        .is_err());
        assert!(Params {
            start_per_s: 200_000.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(Params {
            confirmations: 0,
            ..params()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn rates_are_rounded_to_three_significant_digits() {
        assert_eq!(nice(22_627.4), 22_600.0);
        assert_eq!(nice(1414.2), 1410.0);
        assert_eq!(nice(707.1), 707.0);
        assert_eq!(nice(2000.0), 2000.0);
    }

    #[test]
    fn every_knee_scenario_is_a_scenario() {
        for (of, knee) in KNEES {
            assert!(crate::scenarios::find(of).is_some(), "{of}");
            assert!(crate::scenarios::find(knee).is_some(), "{knee}");
            assert_eq!(knee_scenario(of), Some(*knee));
        }
        assert_eq!(knee_scenario("burst_throughput"), None);
    }
}
