//! Faults in a three-node NATS cluster under open-loop load (`--nats cluster`).
//!
//! `message.log` events go to the database service at a steady rate while one node is hit:
//! killed (SIGKILL, started again on its store after `fault_duration_s`), frozen (`docker
//! pause`) or cut off its network (disconnected, then connected again). In durable mode the
//! harness publishes to the R3 stream with `Nats-Msg-Id` = event id and again until the stream
//! confirms storing each event, as a durable producer must, so nothing may be lost or committed
//! twice: proven by commit notices and by the `processed_events` rows of the database (an event
//! whose notice was lost with a node but whose row is there counts committed).
//!
//! The measured phase is cut at the fault into *before*, *during* and *after* windows (latency
//! percentiles, confirmations per second, loss), and two recovery times are reported: the first
//! commit seen after the fault ended (`first_commit_after_fault_ms`, by a connection opened
//! then), and how long after the fault's end the per-second p99 first came back within
//! `recovered_p99_factor` × the *before* p99 (`p99_recovered_after_s`, one-second resolution).
//! The fault is scheduled by waiting into the measured phase; that wait times no message.
//!
//! Without a cluster (`--nats` other than `cluster`) these scenarios are skipped, saying so.

use super::service_restart::{
    enter_mode, fault_plan, first_commit_seen, leave_mode, prove_durable,
};
use crate::cluster::{FaultKind, Target};
use crate::config::DbServiceMode as Mode;
use crate::results::{FaultRecord, ScenarioResult};
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context as _;
use rosey_protocol::subjects;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const NODE_LOSS: ScenarioDef = ScenarioDef {
    name: "cluster_node_loss",
    title: "Cluster node loss",
    description: "one node of a three-node NATS cluster (by default the JetStream meta leader) killed mid-stream and started again, while events go into an R3 stream: nothing lost or committed twice, recovery time, before/during/after",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

pub const PARTITION: ScenarioDef = ScenarioDef {
    name: "cluster_partition",
    title: "Cluster partition",
    description: "one node of a three-node NATS cluster cut off the network mid-stream and connected again, while events go into an R3 stream: loss, duplicates and recovery, before/during/after",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

pub const FREEZE: ScenarioDef = ScenarioDef {
    name: "cluster_node_freeze",
    title: "Cluster node freeze",
    description: "one node of a three-node NATS cluster frozen (docker pause) mid-stream and thawed, while events go into an R3 stream: loss, duplicates and recovery, before/during/after",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

pub const SLOW_LINK: ScenarioDef = ScenarioDef {
    name: "cluster_slow_link",
    title: "Cluster slow link",
    description: "delay and packet loss added on one node's link of a three-node NATS cluster mid-stream (netem), then removed, while events go into an R3 stream: loss, duplicates and recovery, before/during/after",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run,
};

/// The scenarios that need `--nats cluster` (the run skips them on a single server).
pub const NEEDS_CLUSTER: [&str; 5] = [
    NODE_LOSS.name,
    PARTITION.name,
    FREEZE.name,
    SLOW_LINK.name,
    super::cluster_replication::DEF.name,
];

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(fault(ctx))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    #[serde(flatten)]
    timing: super::Timing,
    payload_bytes: usize,
    /// `durable` (the R3 stream) or `core`.
    mode: Mode,
    /// `kill`, `pause`, `partition`, or `{ slow_link = { delay_ms = …, loss_pct = … } }`.
    fault: FaultKind,
    /// `meta_leader` or `non_leader`.
    target: Target,
    /// When, into the measured phase, the fault begins.
    fault_at_s: f64,
    /// How long it lasts.
    fault_duration_s: f64,
    /// The per-second p99 counts as recovered once within this factor of the *before* p99.
    recovered_p99_factor: f64,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()?;
        anyhow::ensure!(
            self.fault_at_s.is_finite()
                && self.fault_at_s >= 1.0
                && self.fault_at_s < self.timing.duration_s,
            "fault_at_s must fall inside the measured phase, at least 1 s in (the *before* window)"
        );
        anyhow::ensure!(
            self.fault_duration_s.is_finite() && self.fault_duration_s >= 0.0,
            "fault_duration_s must not be negative"
        );
        anyhow::ensure!(
            self.recovered_p99_factor.is_finite() && self.recovered_p99_factor >= 1.0,
            "recovered_p99_factor must be at least 1"
        );
        if let FaultKind::SlowLink { delay_ms, loss_pct } = self.fault {
            anyhow::ensure!(
                delay_ms.is_finite() && delay_ms >= 0.0,
                "slow_link.delay_ms must not be negative"
            );
            anyhow::ensure!(
                (0.0..=100.0).contains(&loss_pct),
                "slow_link.loss_pct must lie between 0 and 100"
            );
        }
        Ok(())
    }
}

/// What the fault task saw, on the harness's clock.
struct Injected {
    /// (connection, node it was on) of the harness's connections when the fault began.
    placement: Vec<(String, String)>,
    /// The node the database service's events connection was on, if found.
    service_node: Option<String>,
    node: String,
    was_meta_leader: bool,
    applied_at: Instant,
    apply: Duration,
    lifted_at: Instant,
    /// From the end command until the node accepted clients again.
    back: Duration,
    first_commit: Option<Instant>,
}

async fn fault(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    let cluster = ctx.cluster.clone().with_context(|| {
        format!(
            "{} needs a NATS cluster: run `cargo xtask bench --nats cluster --scenario {}`",
            ctx.name, ctx.name
        )
    })?;
    let mut result = ctx.result(p.timing.load_info(1, Some(p.payload_bytes)));
    // The node the fault hits, chosen now; the harness's own connections go to another one, so
    // the fault delays the services and the cluster, never the harness's sending or listening.
    let c = cluster.clone();
    let (target, fault) = (p.target, p.fault);
    let (node, harness_node) = tokio::task::spawn_blocking(move || {
        let node = c.pick(target)?;
        if let FaultKind::SlowLink { .. } = fault {
            c.check_slow_link(&node)
                .context("checking that a slow link can be emulated, before the phase")?;
        }
        let other = c
            .node_names()
            .into_iter()
            .find(|n| *n != node)
            .context("a cluster of one node")?;
        let url = c.client_url(&other)?;
        anyhow::Ok((node, (other, url)))
    })
    .await
    .context("the thread choosing the node")??;
    let original_mode = enter_mode(ctx, p.mode).await?;
    // The services go back to the run's mode whatever happened to the phase.
    let measured = measure(ctx, &p, &cluster, node, harness_node, &mut result).await;
    let left = leave_mode(ctx, p.mode, &original_mode).await;
    measured?;
    left?;
    Ok(result)
}

/// The phase with the fault: `node` is hit, the harness sends and listens through
/// `harness_node` (its name and URL).
async fn measure(
    ctx: &ScenarioContext,
    p: &Params,
    cluster: &crate::cluster::ClusterControl,
    node: String,
    harness_node: (String, String),
    result: &mut ScenarioResult,
) -> anyhow::Result<()> {
    if p.mode == Mode::Durable {
        // What the run is about: the stream kept on every node.
        let js = async_nats::jetstream::new(ctx.client.clone());
        let mut stream = js
            .get_stream(subjects::DURABLE_STREAM)
            .await
            .context("reading the durable stream")?;
        let info = stream
            .info()
            .await
            .context("reading the durable stream's info")?;
        result
            .metrics
            .insert("stream_replicas".into(), info.config.num_replicas as f64);
    }
    let sender =
        crate::publishers::Publishers::connect(&harness_node.1, &format!("bench-{}", ctx.name), 1)
            .await?;
    let listener =
        crate::load::connect(&harness_node.1, &format!("bench-{}-proofs", ctx.name)).await?;
    let mut plan = fault_plan(p.timing, p.payload_bytes, p.mode, sender);
    plan.listener = Some(listener.clone());
    let deadline = Duration::from_secs_f64(p.timing.drain_timeout_s + p.timing.duration_s);
    // The harness's own connections: which node each was on when the fault began.
    let mut connections = vec![("proof listener".to_owned(), listener.clone())];
    for (k, c) in plan.phase.senders.clients().iter().enumerate() {
        connections.push((format!("publisher {}", k + 1), c.clone()));
    }
    let inject = async {
        tokio::time::sleep(Duration::from_secs_f64(p.fault_at_s)).await;
        let placement: Vec<(String, String)> = connections
            .iter()
            .map(|(role, c)| (role.clone(), c.server_info().server_name))
            .collect();
        // Where the database service consumes from (its events connection keeps the default
        // name): a fault on that node makes the service fail over, which shows in the figures.
        let c = cluster.clone();
        let service_node =
            tokio::task::spawn_blocking(move || c.node_of_connection("rosey-dbservice"))
                .await
                .context("the thread reading the nodes' connections")?;
        let c = cluster.clone();
        let node = node.clone();
        let fault = p.fault;
        let (applied, applied_at, apply) = tokio::task::spawn_blocking(move || {
            let at = Instant::now();
            let applied = c.apply(fault, &node)?;
            anyhow::Ok((applied, at, at.elapsed()))
        })
        .await
        .context("the fault thread")??;
        // The fault lasts: scheduling it, not timing any message.
        tokio::time::sleep(Duration::from_secs_f64(p.fault_duration_s).saturating_sub(apply)).await;
        let lifted_at = Instant::now();
        let c = cluster.clone();
        let lift = applied.clone();
        let back = tokio::task::spawn_blocking(move || c.remove(&lift))
            .await
            .context("the thread lifting the fault")??;
        let first_commit = first_commit_seen(ctx, deadline).await?;
        anyhow::Ok(Injected {
            placement,
            service_node,
            node: applied.node,
            was_meta_leader: applied.was_meta_leader,
            applied_at,
            apply,
            lifted_at,
            back,
            first_commit,
        })
    };
    let (outcome, injected) = super::warm_then_measure_during(
        ctx,
        &plan,
        result,
        "intended send time → commit notice, across the fault (it shows in the tail)",
        inject,
    )
    .await?;
    let injected = injected.with_context(|| format!("the {} of a cluster node", p.fault))?;
    // A killed node restarts with a new pid: the sampler follows it from here on.
    ctx.refresh_sampled_processes().await;

    let recovered = match p.mode {
        Mode::Durable => prove_durable(ctx, &outcome, result).await?,
        Mode::Core => Default::default(),
    };
    let offset = |t: Instant| t.saturating_duration_since(outcome.start);
    let fault_from = offset(injected.applied_at);
    let fault_to = offset(injected.lifted_at + injected.back);
    result.faults.push(FaultRecord {
        kind: p.fault.as_str().to_owned(),
        target: format!(
            "nats node {}{}",
            injected.node,
            if injected.was_meta_leader {
                " (JetStream meta leader)"
            } else {
                ""
            }
        ),
        start_s: fault_from.as_secs_f64(),
        end_s: Some(fault_to.as_secs_f64()),
    });
    super::fault_windows::record(
        result,
        &outcome,
        (fault_from, Some(fault_to)),
        &recovered,
        p.recovered_p99_factor,
    );
    let m = &mut result.metrics;
    m.insert("fault_at_s".into(), fault_from.as_secs_f64());
    m.insert(
        "fault_duration_s".into(),
        (fault_to.saturating_sub(fault_from)).as_secs_f64(),
    );
    m.insert("fault_apply_ms".into(), injected.apply.as_secs_f64() * 1e3);
    m.insert("node_back_ms".into(), injected.back.as_secs_f64() * 1e3);
    m.insert(
        "faulted_meta_leader".into(),
        f64::from(u8::from(injected.was_meta_leader)),
    );
    match injected.first_commit {
        Some(t) => {
            m.insert(
                "first_commit_after_fault_ms".into(),
                t.saturating_duration_since(injected.lifted_at + injected.back)
                    .as_secs_f64()
                    * 1e3,
            );
        }
        None => result
            .notes
            .push("no commit notice arrived after the fault ended: no recovery time".into()),
    }
    let lost_total = result.accounting.lost;
    result.notes.push(format!(
        "{} mode, {} of node {}{} at {:.2} s for {:.2} s (node accepting clients {:.0} ms after \
         the fault was lifted); {} events lost, {} committed twice{}",
        p.mode.as_str(),
        p.fault,
        injected.node,
        if injected.was_meta_leader {
            " (the JetStream meta leader)"
        } else {
            ""
        },
        fault_from.as_secs_f64(),
        (fault_to.saturating_sub(fault_from)).as_secs_f64(),
        injected.back.as_secs_f64() * 1e3,
        lost_total,
        result.accounting.duplicated,
        match p.mode {
            Mode::Durable => format!(
                "; published to JetStream with Nats-Msg-Id, again until stored ({} republished)",
                outcome.pub_retries
            ),
            Mode::Core => String::new(),
        }
    ));
    let on_node: Vec<&str> = injected
        .placement
        .iter()
        .filter(|(_, server)| *server == injected.node)
        .map(|(role, _)| role.as_str())
        .collect();
    result.notes.push(format!(
        "the harness's connections when the fault began: {}{}",
        injected
            .placement
            .iter()
            .map(|(role, server)| format!("{role} on {server}"))
            .collect::<Vec<_>>()
            .join(", "),
        if on_node.is_empty() {
            String::new()
        } else {
            format!(
                "; the {} was on the faulted node, so the latency includes its failover, as any \
                 client's on that node would",
                on_node.join(" and the ")
            )
        }
    ));
    result.metrics.insert(
        "harness_connections_on_faulted_node".into(),
        on_node.len() as f64,
    );
    match &injected.service_node {
        Some(n) => {
            result.metrics.insert(
                "service_connection_on_faulted_node".into(),
                f64::from(u8::from(*n == injected.node)),
            );
            result.notes.push(format!(
                "the database service consumed through node {n}{}",
                if *n == injected.node {
                    ", the faulted one: the figures include its failover"
                } else {
                    ""
                }
            ));
        }
        None => result.notes.push(
            "the database service's events connection (named rosey-dbservice) was on no node \
             when the fault began"
                .into(),
        ),
    }
    if p.mode == Mode::Core {
        result.accounting.loss_expected = true;
    }
    Ok(())
}
