//! `cluster_replication_cost`: what keeping the durable stream on three nodes costs a single
//! event, against keeping it on one, in the same run on the same cluster (`--nats cluster`).
//!
//! Durable single-event load (`rosey.db.message.log` published to JetStream with
//! `Nats-Msg-Id`, proven by commit notices) is measured in steps that alternate the stream's
//! replicas, 3 then 1, `rounds` times: the harness changes the stream's `num_replicas` between
//! steps and waits until JetStream reports the new placement of the stream and of the service's
//! consumer current (a leader and every replica caught up) before the step's warm-up. The R3 steps together are the headline
//! (`latency`), the R1 steps the `r1` histogram, and `replication_cost_p50_ms` /
//! `replication_cost_p99_ms` their difference. The stream is left with three replicas.

use super::service_restart::{enter_mode, leave_mode};
use super::{connect_publishers, measure_step, OpenLoopParams, Plan, Timing};
use crate::config::DbServiceMode as Mode;
use crate::histogram;
use crate::load::{Ids, Proof, SendVia};
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context as _;
use rosey_protocol::subjects;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const DEF: ScenarioDef = ScenarioDef {
    name: "cluster_replication_cost",
    title: "Replication cost (R3 against R1)",
    description: "durable single-event latency (JetStream publish → commit notice) with the stream on three nodes and on one, in alternating steps on the same cluster: what R3 costs",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

/// How long JetStream may take to place the stream after a change of replicas.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    /// One step's timing (each step is warmed up and measured on its own ids).
    #[serde(flatten)]
    timing: Timing,
    payload_bytes: usize,
    /// Pairs of steps (R3, then R1).
    rounds: u32,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()?;
        anyhow::ensure!(self.rounds >= 1, "rounds must be at least 1");
        Ok(())
    }
}

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    anyhow::ensure!(
        ctx.cluster.is_some(),
        "{} needs a NATS cluster: run `cargo xtask bench --nats cluster --scenario {}`",
        ctx.name,
        ctx.name
    );
    let steps = p.rounds * 2;
    let mut result = ctx.result(crate::results::LoadInfo {
        duration_s: p.timing.duration_s * f64::from(steps),
        warmup_s: p.timing.warmup_s * f64::from(steps),
        ..p.timing.load_info(1, Some(p.payload_bytes))
    });
    let original_mode = enter_mode(ctx, Mode::Durable).await?;
    let senders = connect_publishers(ctx, 1).await?;
    let params = OpenLoopParams {
        timing: p.timing,
        payload_bytes: p.payload_bytes,
        publishers: 1,
        prefill_events: 0,
    };
    let mut plan = Plan::open_loop(
        &params,
        senders,
        crate::workers::RemoteScript::MessageLog {
            payload_bytes: p.payload_bytes,
        }
        .script(),
        Proof::CommitNotices(Ids::Direct),
    );
    plan.phase.via = SendVia::JetStream;
    let mut r3 = histogram::new_histogram();
    let mut r1 = histogram::new_histogram();
    let mut send_delay = histogram::new_histogram();
    let measured = async {
        for round in 0..p.rounds {
            for replicas in [3, 1] {
                let placed = set_replicas(ctx, replicas).await?;
                let mut step = ctx.result(params.load_info());
                let (outcome, ()) = measure_step(
                    ctx,
                    &plan,
                    &format!("k{round}r{replicas}"),
                    &mut step,
                    "rosey.db.message.log via JetStream: intended send time → commit notice",
                    async {},
                )
                .await
                .with_context(|| format!("the R{replicas} step of round {}", round + 1))?;
                super::commit_curve::add_accounting(&mut result, &step);
                if let Some(l) = step.latency {
                    let key = format!("round{}.r{replicas}", round + 1);
                    let m = &mut result.metrics;
                    m.insert(format!("{key}.p50_ms"), l.p50_ns as f64 / 1e6);
                    m.insert(format!("{key}.p99_ms"), l.p99_ns as f64 / 1e6);
                    m.insert(format!("{key}.placed_ms"), placed.as_secs_f64() * 1e3);
                }
                let into = if replicas == 3 { &mut r3 } else { &mut r1 };
                into.add(&outcome.record.latency)
                    .map_err(|e| anyhow::anyhow!("adding a step's latency: {e:?}"))?;
                send_delay
                    .add(&outcome.send.send_delay)
                    .map_err(|e| anyhow::anyhow!("adding a step's send delay: {e:?}"))?;
                if replicas == 3 && round == 0 {
                    result.resources = step.resources.clone();
                    result.resource_timeline = step.resource_timeline.clone();
                }
                for n in &step.notes {
                    result
                        .notes
                        .push(format!("R{replicas}, round {}: {n}", round + 1));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    // Leave the stream as the cluster run keeps it, whatever happened.
    let restored = set_replicas(ctx, 3).await;
    // The services go back to the run's mode whatever happened to the steps.
    let left = leave_mode(ctx, Mode::Durable, &original_mode).await;
    measured?;
    restored.context("giving the stream its three replicas back")?;
    left?;
    result.histograms = vec![
        histogram::named(
            "latency",
            "R3 stream: JetStream publish (intended send time) → commit notice",
            &r3,
        )?,
        histogram::named(
            "r1",
            "R1 stream: JetStream publish (intended send time) → commit notice",
            &r1,
        )?,
        histogram::named(
            "send_delay",
            "actual − intended send time, all steps",
            &send_delay,
        )?,
    ];
    result.latency = Some(histogram::summarize(&r3));
    result.proof_path = Some("notice".into());
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6)
    };
    if let (Some(a50), Some(b50), Some(a99), Some(b99)) =
        (ms(&r3, 0.5), ms(&r1, 0.5), ms(&r3, 0.99), ms(&r1, 0.99))
    {
        let m = &mut result.metrics;
        m.insert("r3.p50_ms".into(), a50);
        m.insert("r3.p99_ms".into(), a99);
        m.insert("r1.p50_ms".into(), b50);
        m.insert("r1.p99_ms".into(), b99);
        m.insert("replication_cost_p50_ms".into(), a50 - b50);
        m.insert("replication_cost_p99_ms".into(), a99 - b99);
        result.notes.push(format!(
            "{} rounds of an R3 then an R1 step, each {} s at {}/s after {} s of warm-up: R3 p50 \
             {a50:.3} ms / p99 {a99:.3} ms, R1 p50 {b50:.3} ms / p99 {b99:.3} ms (each step's \
             figures as round<k>.r<n>.*, with the time JetStream took to place the stream \
             before it)",
            p.rounds,
            crate::report::view::trimmed(p.timing.duration_s),
            crate::report::view::trimmed(p.timing.rate_per_s),
            crate::report::view::trimmed(p.timing.warmup_s),
        ));
    }
    Ok(result)
}

/// Gives the durable stream `replicas` replicas and waits until JetStream reports it placed: a
/// leader and `replicas − 1` current replicas. Returns how long that took.
async fn set_replicas(ctx: &ScenarioContext, replicas: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let js = async_nats::jetstream::new(ctx.client.clone());
    let mut stream = js
        .get_stream(subjects::DURABLE_STREAM)
        .await
        .context("reading the durable stream")?;
    let config = stream
        .info()
        .await
        .context("reading its info")?
        .config
        .clone();
    if config.num_replicas != replicas {
        js.update_stream(async_nats::jetstream::stream::Config {
            num_replicas: replicas,
            ..config
        })
        .await
        .with_context(|| format!("giving the stream {replicas} replicas"))?;
    }
    let placed = |c: Option<&async_nats::jetstream::stream::ClusterInfo>| {
        c.is_some_and(|c| {
            c.leader.is_some()
                && c.replicas.len() + 1 == replicas
                && c.replicas.iter().all(|r| r.current)
        })
    };
    loop {
        // The stream and the service's consumer (which follows the stream's replicas).
        let info = stream
            .info()
            .await
            .context("reading the stream's placement")?
            .clone();
        let consumer = stream
            .consumer_info(subjects::DURABLE_CONSUMER)
            .await
            .context("reading the consumer's placement")?;
        if placed(info.cluster.as_ref()) && placed(consumer.cluster.as_ref()) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < PLACEMENT_TIMEOUT,
            "JetStream did not place the stream and its consumer on {replicas} nodes within \
             {PLACEMENT_TIMEOUT:?}: stream {:?}, consumer {:?}",
            info.cluster,
            consumer.cluster
        );
        // Between steps, before a warm-up: no message is being timed.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
