//! The scenario table and the building blocks scenarios share: strict parameter structs, seed-
//! shaped event payloads, and "warm up, then measure one phase with resources and service
//! counters" for the common open-loop case.
//!
//! To add a scenario: write `scenarios/<name>.rs` with a `pub const DEF: ScenarioDef`, list it in
//! [`all`], and give it a `[scenarios.<name>]` table (with targets) in `harness/bench.toml`.

pub mod calibration;
pub mod cluster_faults;
pub mod cluster_replication;
pub mod commit_curve;
pub mod coordinated_omission;
pub mod cpu_cost;
pub mod fault_windows;
pub mod hostile_inputs;
pub mod knee;
pub mod latency;
pub mod memory_stability;
pub mod mixed_event_types;
pub mod nats_floor;
pub mod pm_audit_end_to_end;
pub mod responder;
pub mod scripted;
pub mod service_restart;
pub mod stats_end_to_end;
pub mod throughput;

use crate::load::{self, Ids, Message, PayloadFn, PhaseOutcome, PhaseSpec, Proof, Script, SendVia};
use crate::publishers::Publishers;
use crate::results::LoadInfo;
use crate::scenario::{fill_from_phase, ScenarioContext, ScenarioDef};
use crate::workers::WorkerFigures;
use anyhow::Context;
use bytes::Bytes;
use rosey_protocol::{
    db::{HighWater, MessageLog, UserEvent},
    to_seed_json,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Every scenario, in the order a full run executes them: self checks first (they need no
/// services), then the service scenarios.
pub fn all() -> Vec<ScenarioDef> {
    vec![
        nats_floor::DEF,
        calibration::DEF,
        coordinated_omission::DEF,
        latency::SINGLE_EVENT,
        latency::REQUEST_REPLY,
        latency::CONCURRENT_EVENTS,
        commit_curve::DEF,
        throughput::SUSTAINED,
        throughput::BURST,
        cpu_cost::DIRECT_DB_CPU_COST,
        cpu_cost::NATS_CPU_COST,
        mixed_event_types::DEF,
        hostile_inputs::DEF,
        stats_end_to_end::DEF,
        pm_audit_end_to_end::DEF,
        memory_stability::DEF,
        // After the scenarios whose figures depend on the database's size: a search commits
        // hundreds of thousands of events.
        knee::SINGLE_EVENT,
        knee::REQUEST_REPLY,
        service_restart::CORE,
        service_restart::DURABLE,
        // Last: they restart nats-server, which every connection then has to come back from.
        service_restart::NATS_CORE,
        service_restart::NATS_DURABLE,
        cluster_faults::NODE_LOSS,
        cluster_faults::PARTITION,
        cluster_faults::FREEZE,
        cluster_faults::SLOW_LINK,
        cluster_replication::DEF,
    ]
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<ScenarioDef> {
    all().into_iter().find(|d| d.name == name)
}

/// The timing every open-loop scenario shares, flattened into its table: `rate_per_s`,
/// `duration_s`, `warmup_s`, `drain_timeout_s`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timing {
    /// Intended messages per second (all publishers together).
    pub rate_per_s: f64,
    /// Measured phase, in seconds.
    pub duration_s: f64,
    /// Warm-up phase before it (same rate; recorded separately and discarded), in seconds.
    pub warmup_s: f64,
    /// Longest wait after the last send for outstanding proofs, in seconds.
    pub drain_timeout_s: f64,
}

impl Timing {
    /// The checks every open-loop timing needs.
    pub fn validate(&self) -> anyhow::Result<()> {
        load::check_rate(self.rate_per_s)?;
        anyhow::ensure!(
            self.duration_s.is_finite() && self.duration_s > 0.0,
            "duration_s must be positive"
        );
        anyhow::ensure!(
            self.warmup_s.is_finite() && self.warmup_s >= 0.0,
            "warmup_s must not be negative"
        );
        anyhow::ensure!(
            self.drain_timeout_s.is_finite() && self.drain_timeout_s > 0.0,
            "drain_timeout_s must be positive"
        );
        Ok(())
    }

    /// Messages in the warm-up phase (0 when there is none).
    pub fn warmup_count(&self) -> u64 {
        if self.warmup_s > 0.0 {
            load::message_count(self.rate_per_s, self.warmup_s)
        } else {
            0
        }
    }

    /// Messages in the measured phase.
    pub fn count(&self) -> u64 {
        load::message_count(self.rate_per_s, self.duration_s)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_s)
    }

    /// The results' description of this load.
    pub fn load_info(&self, concurrency: u32, payload_bytes: Option<usize>) -> LoadInfo {
        LoadInfo {
            model: "open_loop".into(),
            target_rate_per_s: Some(self.rate_per_s),
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            concurrency: Some(concurrency),
            payload_bytes: payload_bytes.and_then(|b| u32::try_from(b).ok()),
        }
    }
}

/// Parameters of an open-loop scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoopParams {
    #[serde(flatten)]
    pub timing: Timing,
    /// Size of the variable part of the payload (the chat message text).
    pub payload_bytes: usize,
    /// Publishers: connections, each carrying every `publishers`-th message.
    pub publishers: u32,
    /// Events committed before the warm-up (request scenarios: gives queries rows to read).
    pub prefill_events: u64,
}

impl crate::config::ScenarioParams for OpenLoopParams {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()?;
        anyhow::ensure!(self.publishers >= 1, "publishers must be at least 1");
        Ok(())
    }
}

impl OpenLoopParams {
    pub fn load_info(&self) -> LoadInfo {
        self.timing
            .load_info(self.publishers, Some(self.payload_bytes))
    }
}

/// Deterministic filler text of `len` bytes (ASCII), so payload size is a parameter.
pub fn filler(len: usize) -> String {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog while rosey logs every line ";
    WORDS.chars().cycle().take(len).collect()
}

/// `rosey.db.message.log` payloads as the bot sends them: 64 distinct users, message text of
/// `payload_bytes`.
pub fn message_log_payload(payload_bytes: usize) -> PayloadFn {
    let text = filler(payload_bytes);
    Arc::new(move |i: u64| {
        let m = MessageLog {
            username: Some(format!("bench-user-{}", i % 64)),
            message: Some(text.clone()),
        };
        Bytes::from(to_seed_json(&m))
    })
}

/// A fixed payload.
pub fn fixed_payload(bytes: Bytes) -> PayloadFn {
    Arc::new(move |_| bytes.clone())
}

/// `n` fresh publisher connections named after the scenario, on their own thread
/// ([`Publishers`]).
pub async fn connect_publishers(ctx: &ScenarioContext, n: u32) -> anyhow::Result<Publishers> {
    Publishers::connect(&ctx.nats_url, &format!("bench-{}", ctx.name), n).await
}

/// Users the prefill makes known (`bench-user-0` … `bench-user-63`, as every chat payload of
/// the harness names them).
pub const PREFILL_USERS: u64 = 64;

/// Give the database real rows before measuring (set-up, not measured): the bench users join
/// (`user.joined`), the channel's high-water mark is set to their number, then `n` chat lines
/// are written by them, each proven committed. Afterwards `channel_stats` has users seen, a high
/// water mark and top chatters to read. Joins go first, in a phase of their own, so no chat line
/// can overtake its user's join.
pub async fn prefill(
    ctx: &ScenarioContext,
    senders: &Publishers,
    n: u64,
    deadline: Duration,
) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let setup = |count: u64, script: Script| Plan {
        warmup_count: 0,
        phase: PhaseSpec {
            count,
            ..PhaseSpec::new(
                senders.clone(),
                script,
                Proof::CommitNotices(Ids::Direct),
                deadline,
            )
        },
        listener: None,
    };
    let joins = Script::new(&["user_joined", "high_water"], |_, i| {
        if i < PREFILL_USERS {
            Message {
                kind: 0,
                subject: rosey_protocol::subjects::USER_JOINED.into(),
                payload: Bytes::from(to_seed_json(&UserEvent {
                    username: Some(format!("bench-user-{i}")),
                })),
                expected_events: 1,
            }
        } else {
            let users = i64::try_from(PREFILL_USERS).unwrap_or(i64::MAX);
            Message {
                kind: 1,
                subject: rosey_protocol::subjects::HIGH_WATER.into(),
                payload: Bytes::from(to_seed_json(&HighWater {
                    chat_count: Some(users),
                    connected_count: Some(users),
                })),
                expected_events: 1,
            }
        }
    });
    setup_phase(ctx, &setup(PREFILL_USERS + 1, joins), "prefill-users").await?;
    let lines = Script::uniform(
        rosey_protocol::subjects::MESSAGE_LOG,
        message_log_payload(32),
    );
    setup_phase(ctx, &setup(n, lines), "prefill").await
}

/// Run `plan`'s measured count once as set-up (not measured) and require every message proven.
pub async fn setup_phase(ctx: &ScenarioContext, plan: &Plan, tag: &str) -> anyhow::Result<()> {
    let bar = ctx.progress_bar(tag, plan.phase.count);
    let outcome = load::run_phase(
        plan.listener(ctx),
        plan.spec(ctx.id_prefix(tag), plan.phase.count),
        &bar,
    )
    .await
    .with_context(|| format!("set-up phase {tag}"))?;
    bar.finish_and_clear();
    let r = &outcome.record;
    anyhow::ensure!(
        outcome.drained && r.confirmed == plan.phase.count,
        "set-up phase {tag}: only {} of {} messages were proven",
        r.confirmed,
        plan.phase.count
    );
    Ok(())
}

/// One load shape, run as warm-up then measurement: the measured phase (schedule, script,
/// proof) and the size of the warm-up before it, which is the same phase with fewer messages and
/// ids of its own.
#[derive(Clone)]
pub struct Plan {
    pub warmup_count: u64,
    /// The measured phase; each run of it gets its own ids ([`Plan::spec`]).
    pub phase: PhaseSpec,
    /// The connection that receives the proofs; `None`: the harness's own (`ctx.client`). A
    /// cluster fault scenario pins it to a node the fault does not hit.
    pub listener: Option<async_nats::Client>,
}

impl Plan {
    /// The open-loop plan of `p` with one proof per message on a uniform script.
    pub fn open_loop(
        p: &OpenLoopParams,
        senders: Publishers,
        script: Script,
        proof: Proof,
    ) -> Plan {
        Plan {
            warmup_count: p.timing.warmup_count(),
            phase: PhaseSpec {
                rate_per_s: Some(p.timing.rate_per_s),
                count: p.timing.count(),
                ..PhaseSpec::new(senders, script, proof, p.timing.drain_timeout())
            },
            listener: None,
        }
    }

    /// The connection that receives this plan's proofs.
    pub fn listener<'a>(&'a self, ctx: &'a ScenarioContext) -> &'a async_nats::Client {
        self.listener.as_ref().unwrap_or(&ctx.client)
    }

    /// The phase of this plan with `count` messages and ids starting with `id_prefix`.
    pub fn spec(&self, id_prefix: String, count: u64) -> PhaseSpec {
        PhaseSpec {
            id_prefix,
            count,
            ..self.phase.clone()
        }
    }
}

/// The warm-up of `plan` before its measured phase `tag` (ids `<scenario>.<tag>-warmup.`):
/// discarded, but drained so it does not overlap the measurement; what it lost becomes a note.
pub async fn warm_up(
    ctx: &ScenarioContext,
    plan: &Plan,
    tag: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    if plan.warmup_count == 0 {
        return Ok(());
    }
    let bar = ctx.progress_bar("warm-up", plan.warmup_count);
    let (warm, _) = run_plan_phase(
        ctx,
        plan,
        ctx.id_prefix(&format!("{tag}-warmup")),
        plan.warmup_count,
        &bar,
    )
    .await
    .context("warm-up phase")?;
    bar.finish_and_clear();
    if warm.record.lost() > 0 {
        notes.push(format!(
            "warm-up: {} of {} not confirmed within the drain deadline (not counted)",
            warm.record.lost(),
            warm.record.sent
        ));
    }
    Ok(())
}

/// Warm up (discarded, but drained so it does not overlap the measurement), then measure one
/// phase with the resource sampler and the database service's counters around it, and fill the
/// result. The ids of the measured phase start with `ctx.id_prefix("m")`.
pub async fn warm_then_measure(
    ctx: &ScenarioContext,
    plan: &Plan,
    result: &mut crate::results::ScenarioResult,
    latency_description: &str,
) -> anyhow::Result<PhaseOutcome> {
    let (outcome, ()) =
        warm_then_measure_during(ctx, plan, result, latency_description, async {}).await?;
    Ok(outcome)
}

/// [`warm_then_measure`], with `during` run concurrently with the measured phase (a fault, a
/// restart). `during` starts after the service counters were read, and its output comes back.
pub async fn warm_then_measure_during<F: std::future::Future>(
    ctx: &ScenarioContext,
    plan: &Plan,
    result: &mut crate::results::ScenarioResult,
    latency_description: &str,
    during: F,
) -> anyhow::Result<(PhaseOutcome, F::Output)> {
    measure_step(ctx, plan, "m", result, latency_description, during).await
}

/// The one warm-then-measure: [`warm_then_measure_during`] with the phase's id tag (`m` unless
/// a scenario measures several steps, each with its own ids so no late proof of one step is
/// credited to the next).
pub async fn measure_step<F: std::future::Future>(
    ctx: &ScenarioContext,
    plan: &Plan,
    tag: &str,
    result: &mut crate::results::ScenarioResult,
    latency_description: &str,
    during: F,
) -> anyhow::Result<(PhaseOutcome, F::Output)> {
    warm_up(ctx, plan, tag, &mut result.notes).await?;
    let before = match &ctx.services {
        Some(_) => Some(ctx.services().await?.counters().await?),
        None => None,
    };
    ctx.refresh_sampled_processes().await;
    let bar = ctx.progress_bar("measure", plan.phase.count);
    let sampling = ctx.sampler.begin_phase();
    let (outcome, during) = tokio::join!(
        run_plan_phase(ctx, plan, ctx.id_prefix(tag), plan.phase.count, &bar),
        during
    );
    let (outcome, workers) = outcome.context("measured phase")?;
    // A restart during the phase changed a pid: the sampler follows it from here on.
    ctx.refresh_sampled_processes().await;
    let (resources, timeline) = sampling.end(outcome.record.confirmed);
    bar.finish_and_clear();
    result.resources = resources;
    result.resource_timeline = timeline;
    if let Some(before) = before {
        let after = ctx.services().await?.counters().await?;
        service_counters(result, &before, &after, plan, outcome.record.confirmed);
    }
    fill_from_phase(ctx, result, &outcome, latency_description)?;
    worker_figures(ctx, result, workers);
    result.proof_path = Some(
        match plan.phase.proof {
            Proof::Replies(_) => "reply",
            Proof::CommitNotices(Ids::Direct) => "notice",
            Proof::CommitNotices(Ids::ViaBot) | Proof::Correlated { .. } => "via_bot",
            Proof::Subscribed => "pubsub",
        }
        .into(),
    );
    Ok((outcome, during))
}

/// Run one phase of `plan` (`count` messages, ids starting with `id_prefix`): over the run's
/// load workers when it has some and the phase can be handed to them
/// ([`crate::workers::remote_script`]), else in this process. The workers' own figures come
/// back beside the merged outcome (none when this process ran it).
pub async fn run_plan_phase(
    ctx: &ScenarioContext,
    plan: &Plan,
    id_prefix: String,
    count: u64,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(PhaseOutcome, Vec<WorkerFigures>)> {
    let spec = plan.spec(id_prefix, count);
    if let Some(workers) = &ctx.workers {
        if let Some(script) = crate::workers::remote_script(&spec).cloned() {
            let publishers = u32::try_from(plan.phase.senders.clients().len()).unwrap_or(u32::MAX);
            return workers.run_phase(&spec, &script, publishers, bar).await;
        }
    }
    Ok((
        load::run_phase(plan.listener(ctx), spec, bar).await?,
        Vec::new(),
    ))
}

/// The workers' breakdown of a measured phase: each worker's figures, the slowest worker's send
/// delay as a metric, and a note when the run had workers but this phase could not be handed to
/// them.
fn worker_figures(
    ctx: &ScenarioContext,
    result: &mut crate::results::ScenarioResult,
    workers: Vec<WorkerFigures>,
) {
    if workers.is_empty() {
        if ctx.workers.is_some() {
            result.notes.push(
                "offered by the harness process, not the load workers: this phase's messages, \
                 proof or fault cannot be handed to a worker"
                    .into(),
            );
        }
        return;
    }
    let slowest = workers
        .iter()
        .map(|w| w.send_delay_p99_us)
        .fold(0.0_f64, f64::max);
    result
        .metrics
        .insert("workers".into(), workers.len() as f64);
    result
        .metrics
        .insert("workers.slowest_send_delay_p99_us".into(), slowest);
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} µs"));
    for w in &workers {
        result.notes.push(format!(
            "worker {} (pid {} on {}): sent {}, committed {}, lost {}, duplicated {}; send delay \
             p99 {:.0} µs; latency p50 {}, p99 {}",
            w.name,
            w.pid,
            w.host,
            w.sent,
            w.committed,
            w.lost,
            w.duplicated,
            w.send_delay_p99_us,
            us(w.latency_p50_us),
            us(w.latency_p99_us)
        ));
    }
    result.workers = workers;
}

/// Both services' counters over the measured phase, and what they say beside the harness's own
/// accounting.
pub fn service_counters(
    result: &mut crate::results::ScenarioResult,
    before: &crate::services::Counters,
    after: &crate::services::Counters,
    plan: &Plan,
    confirmed: u64,
) {
    if let (Some(b), Some(a)) = (&before.bot, &after.bot) {
        bot_counters(result, b, a);
    }
    let (before, after) = (&before.db, &after.db);
    // A new process (another instance id; services without one: counters that went down) has
    // counters that started again.
    if after.instance != before.instance || after.received < before.received {
        result.notes.push(
            "the database service restarted during the phase: its counters started again, so no service-counter deltas"
                .into(),
        );
        return;
    }
    let delta = |a: u64, b: u64| a.saturating_sub(b) as f64;
    for (key, a, b) in [
        ("service.received", after.received, before.received),
        ("service.committed", after.committed, before.committed),
        ("service.malformed", after.malformed, before.malformed),
        ("service.duplicates", after.duplicates, before.duplicates),
        ("service.failed", after.failed, before.failed),
        ("service.batches", after.batches, before.batches),
        ("service.disconnects", after.disconnects, before.disconnects),
        (
            "service.client_drops",
            after.client_drops,
            before.client_drops,
        ),
    ] {
        result.metrics.insert(key.into(), delta(a, b));
    }
    if after.malformed > before.malformed {
        result.notes.push(format!(
            "the database service counted {} malformed messages during the phase",
            after.malformed - before.malformed
        ));
    }
    if after.client_drops > before.client_drops {
        result.notes.push(format!(
            "the database service's NATS client dropped at least {} messages during the phase (slow consumer)",
            after.client_drops - before.client_drops
        ));
    }
    if after.disconnects > before.disconnects {
        result.notes.push(format!(
            "the database service lost its NATS connection {} times during the phase ({})",
            after.disconnects - before.disconnects,
            match plan.phase.via {
                SendVia::Core => "core mode: what was in flight on it is lost",
                SendVia::JetStream =>
                    "durable mode: what was in flight on it returns after the consumer's ack wait",
            }
        ));
    }
    let service_committed = after.committed.saturating_sub(before.committed);
    if matches!(plan.phase.proof, Proof::CommitNotices(Ids::Direct))
        && service_committed != confirmed
    {
        result.notes.push(format!(
            "the service committed {service_committed} events during the phase and the harness \
             confirmed {confirmed} of its own; the difference comes from other publishers (e.g. the \
             bot's periodic status updates) or from events still in flight at the deadline"
        ));
    }
}

/// The bot's counters over the measured phase (`bot.*` metrics), with a note for what a healthy
/// run never has.
fn bot_counters(
    result: &mut crate::results::ScenarioResult,
    before: &rosey_protocol::platform::BotStats,
    after: &rosey_protocol::platform::BotStats,
) {
    if after.events_received < before.events_received {
        result.notes.push(
            "the bot restarted during the phase: its counters started again, so no bot-counter deltas"
                .into(),
        );
        return;
    }
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    let rows = [
        (
            "bot.events_received",
            after.events_received,
            before.events_received,
        ),
        (
            "bot.events_malformed",
            after.events_malformed,
            before.events_malformed,
        ),
        (
            "bot.db_publish_failures",
            after.db_publish_failures,
            before.db_publish_failures,
        ),
        (
            "bot.requests_failed",
            after.requests_failed,
            before.requests_failed,
        ),
        ("bot.reconnects", after.reconnects, before.reconnects),
        ("bot.client_drops", after.client_drops, before.client_drops),
    ];
    for (key, a, b) in rows {
        result.metrics.insert(key.into(), delta(a, b) as f64);
    }
    for (what, a, b) in [
        (
            "malformed platform events",
            after.events_malformed,
            before.events_malformed,
        ),
        (
            "database events its client refused",
            after.db_publish_failures,
            before.db_publish_failures,
        ),
        ("reconnects to NATS", after.reconnects, before.reconnects),
        (
            "platform events its NATS client dropped (slow consumer)",
            after.client_drops,
            before.client_drops,
        ),
    ] {
        if a > b {
            result
                .notes
                .push(format!("the bot counted {} {what} during the phase", a - b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_described() {
        let defs = all();
        let mut names: Vec<&str> = defs.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), defs.len());
        for d in &defs {
            assert!(
                !d.title.is_empty() && !d.description.is_empty(),
                "{}",
                d.name
            );
            assert!(!d.description.contains('\n'), "{}: one line", d.name);
        }
        assert!(find("calibration").is_some());
        assert!(find("nope").is_none());
    }

    #[test]
    fn every_scenario_has_a_config_table_with_valid_targets() {
        let text = include_str!("../../bench.toml");
        for profile in crate::config::PROFILES {
            let cfg = crate::config::BenchConfig::parse(text, profile).unwrap();
            for d in all() {
                let table = cfg
                    .scenarios
                    .get(d.name)
                    .unwrap_or_else(|| panic!("no [scenarios.{}]", d.name));
                let t = crate::config::ScenarioTable::from_table(table).unwrap();
                crate::scenario::validate_targets(&t.targets).unwrap();
            }
        }
    }

    #[test]
    fn every_default_is_written_in_bench_toml() {
        // Scenario parameters have no hidden defaults: each table holds every key its scenario
        // reads, in every profile, and passes the scenario's own checks (what a run checks
        // before it starts anything).
        let text = include_str!("../../bench.toml");
        for profile in crate::config::PROFILES {
            let cfg = crate::config::BenchConfig::parse(text, profile).unwrap();
            for def in all() {
                let table = crate::config::ScenarioTable::from_table(
                    cfg.scenarios
                        .get(def.name)
                        .unwrap_or_else(|| panic!("no [scenarios.{}]", def.name)),
                )
                .unwrap();
                (def.check)(&table).unwrap_or_else(|e| panic!("{profile}/{}: {e:#}", def.name));
            }
        }
    }

    #[test]
    fn payloads_are_seed_shaped() {
        let p = message_log_payload(10);
        let v: serde_json::Value = serde_json::from_slice(&p(65)).unwrap();
        assert_eq!(v["username"], "bench-user-1");
        assert_eq!(v["message"].as_str().unwrap().len(), 10);
    }
}
