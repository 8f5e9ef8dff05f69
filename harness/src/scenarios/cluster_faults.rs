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

use super::service_restart::{enter_mode, first_commit_seen, leave_mode, prove_durable};
use super::{OpenLoopParams, Plan};
use crate::cluster::{FaultKind, Target};
use crate::config::DbServiceMode as Mode;
use crate::histogram::Interval;
use crate::load::{DrainUntil, Ids, Proof, Script, SendVia};
use crate::record::Unconfirmed;
use crate::results::{FaultRecord, PhaseWindow, ScenarioResult};
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
    let original_mode = enter_mode(ctx, p.mode).await?;
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
    let sender = super::connect_publishers(ctx, 1).await?;
    let mut plan = Plan::open_loop(
        &OpenLoopParams {
            timing: p.timing,
            payload_bytes: p.payload_bytes,
            publishers: 1,
            prefill_events: 0,
        },
        sender,
        Script::uniform(
            subjects::MESSAGE_LOG,
            super::message_log_payload(p.payload_bytes),
        ),
        Proof::CommitNotices(Ids::Direct),
    );
    match p.mode {
        Mode::Durable => plan.phase.via = SendVia::JetStream,
        // Once the last event is proven, anything earlier still unproven was never received.
        Mode::Core => plan.phase.drain_until = DrainUntil::LastProven,
    }
    let deadline = Duration::from_secs_f64(p.timing.drain_timeout_s + p.timing.duration_s);
    // The harness's own connections: which node each was on when the fault began.
    let mut connections = vec![("proof listener".to_owned(), ctx.client.clone())];
    for (k, c) in plan.phase.senders.clients().iter().enumerate() {
        connections.push((format!("publisher {}", k + 1), c.clone()));
    }
    let inject = async {
        tokio::time::sleep(Duration::from_secs_f64(p.fault_at_s)).await;
        let placement: Vec<(String, String)> = connections
            .iter()
            .map(|(role, c)| (role.clone(), c.server_info().server_name))
            .collect();
        let c = cluster.clone();
        let (applied, applied_at, apply) = tokio::task::spawn_blocking(move || {
            let node = c.pick(p.target)?;
            let at = Instant::now();
            let applied = c.apply(p.fault, &node)?;
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
        &mut result,
        "intended send time → commit notice, across the fault (it shows in the tail)",
        inject,
    )
    .await?;
    let injected = injected.with_context(|| format!("the {} of a cluster node", p.fault))?;
    // A killed node restarts with a new pid: the sampler follows it from here on.
    ctx.refresh_sampled_processes().await;

    let recovered = match p.mode {
        Mode::Durable => prove_durable(ctx, &outcome, &mut result).await?,
        Mode::Core => Default::default(),
    };
    let offset = |t: Instant| t.saturating_duration_since(outcome.start);
    let fault_from = offset(injected.applied_at);
    let fault_to = offset(injected.lifted_at + injected.back);
    let end = outcome.elapsed;
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
    let unpack = |v: &[crate::histogram::PackedInterval]| -> Vec<Interval> {
        v.iter().map(|i| i.unpack()).collect()
    };
    let by_confirm = unpack(&outcome.record.intervals);
    let by_intended = unpack(&outcome.record.by_intended);
    let lost: Vec<Unconfirmed> = outcome
        .record
        .unconfirmed
        .iter()
        .filter(|u| !recovered.contains(&u.index))
        .copied()
        .collect();
    result.windows = windows(&by_confirm, &by_intended, &lost, fault_from, fault_to, end);
    for w in &result.windows {
        let m = &mut result.metrics;
        m.insert(format!("{}.lost", w.name), w.lost as f64);
        m.insert(format!("{}.throughput_per_s", w.name), w.throughput_per_s);
        if let (Some(p50), Some(p99)) = (w.p50_ns, w.p99_ns) {
            m.insert(format!("{}.p50_ms", w.name), p50 as f64 / 1e6);
            m.insert(format!("{}.p99_ms", w.name), p99 as f64 / 1e6);
        }
    }
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
    let before_p99 = result.windows.first().and_then(|w| w.p99_ns);
    match before_p99
        .and_then(|b| p99_recovered_after(&by_intended, fault_to, b, p.recovered_p99_factor))
    {
        Some(after) => {
            result
                .metrics
                .insert("p99_recovered_after_s".into(), after.as_secs_f64());
        }
        None => result.notes.push(format!(
            "the per-second p99 did not come back within {}× the p99 before the fault by the end \
             of the phase",
            p.recovered_p99_factor
        )),
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
    if p.mode == Mode::Core {
        result.accounting.loss_expected = true;
    }
    leave_mode(ctx, p.mode, &original_mode).await?;
    Ok(result)
}

/// The phase cut at a fault from `from` to `to` (offsets from the phase start) into *before*,
/// *during* and *after*, up to `end`. Latency and the confirmed count come from the histograms
/// by intended send second (`by_intended`: what happened to the messages *scheduled* in the
/// window, wherever they were confirmed), loss from the lost messages' intended times, and
/// confirmations per second from the histograms by confirmation second (`by_confirm`). A
/// one-second histogram belongs to the window its middle falls in.
pub fn windows(
    by_confirm: &[Interval],
    by_intended: &[Interval],
    lost: &[Unconfirmed],
    from: Duration,
    to: Duration,
    end: Duration,
) -> Vec<PhaseWindow> {
    let to = to.max(from);
    let end = end.max(to);
    let spans = [
        ("before", Duration::ZERO, from),
        ("during", from, to),
        ("after", to, end),
    ];
    spans
        .iter()
        .map(|&(name, a, b)| {
            // The last window takes everything after the fault, to the very end.
            let last = name == "after";
            let inside = |t: Duration| t >= a && (last || t < b);
            let in_window = |iv: &&Interval| inside(iv.start + iv.length / 2);
            let mut merged = crate::histogram::new_histogram();
            for iv in by_intended.iter().filter(in_window) {
                let _ = merged.add(&iv.histogram);
            }
            let (mut commits, mut seconds) = (0, 0.0);
            for iv in by_confirm.iter().filter(in_window) {
                commits += iv.histogram.len();
                seconds += iv.length.as_secs_f64();
            }
            let q = |q: f64| (!merged.is_empty()).then(|| merged.value_at_quantile(q));
            PhaseWindow {
                name: name.to_owned(),
                from_s: a.as_secs_f64(),
                to_s: b.as_secs_f64(),
                confirmed: merged.len(),
                lost: lost.iter().filter(|u| inside(u.intended)).count() as u64,
                p50_ns: q(0.5),
                p99_ns: q(0.99),
                max_ns: (!merged.is_empty()).then(|| merged.max()),
                throughput_per_s: if seconds > 0.0 {
                    commits as f64 / seconds
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// How long after the fault's end (`to`) the first second of intended send times ends whose
/// messages' p99 (`by_intended`) is within `factor` × `before_p99`; `None` if none does.
pub fn p99_recovered_after(
    by_intended: &[Interval],
    to: Duration,
    before_p99: u64,
    factor: f64,
) -> Option<Duration> {
    let limit = before_p99 as f64 * factor;
    by_intended
        .iter()
        .filter(|iv| iv.start + iv.length > to && !iv.histogram.is_empty())
        .find(|iv| iv.histogram.value_at_quantile(0.99) as f64 <= limit)
        .map(|iv| (iv.start + iv.length).saturating_sub(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(i: u64, latencies_ms: &[u64]) -> Interval {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for ms in latencies_ms {
            h.record(ms * 1_000_000).unwrap();
        }
        Interval {
            start: Duration::from_secs(i),
            length: Duration::from_secs(1),
            tag: None,
            histogram: h,
        }
    }

    #[test]
    fn windows_take_latency_by_intended_time_and_throughput_by_confirmation() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Scheduled: 0–3 s fast; 3–5 s (the fault) slow; 5–8 s slow at first, then fast.
        let by_intended = [
            second(0, &[1, 1, 1, 1]),
            second(1, &[1, 1, 2, 1]),
            second(2, &[1, 1, 1, 1]),
            second(3, &[2_500, 1_900, 1_200]),
            second(4, &[900, 400]),
            second(5, &[40, 20, 2, 1]),
            second(6, &[1, 1, 1, 1]),
            second(7, &[1, 2, 1, 1]),
        ];
        // Confirmed: nothing at 3–4 s, the backlog at 5 s.
        let by_confirm = [
            second(0, &[1, 1, 1, 1]),
            second(1, &[1, 1, 2, 1]),
            second(2, &[1, 1, 1, 1]),
            second(3, &[]),
            second(4, &[]),
            second(5, &[2_500, 1_900, 1_200, 900, 400, 40, 20, 2, 1]),
            second(6, &[1, 1, 1, 1]),
            second(7, &[1, 2, 1, 1]),
        ];
        let lost = [
            Unconfirmed {
                index: 11,
                intended: ms(2_999),
            },
            Unconfirmed {
                index: 12,
                intended: ms(3_000),
            },
            Unconfirmed {
                index: 16,
                intended: ms(4_999),
            },
            Unconfirmed {
                index: 20,
                intended: ms(5_000),
            },
        ];
        let w = windows(&by_confirm, &by_intended, &lost, s(3), s(5), s(8));
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["before", "during", "after"]);
        assert_eq!(
            (w[0].confirmed, w[1].confirmed, w[2].confirmed),
            (12, 5, 12)
        );
        assert_eq!((w[0].lost, w[1].lost, w[2].lost), (1, 2, 1));
        // The messages scheduled during the fault waited; those confirmed then were none.
        assert_eq!(w[1].p50_ns.map(|n| n / 1_000_000), Some(1_200));
        let max_ms = w[1].max_ns.unwrap() / 1_000_000;
        assert!(
            (2_500..2_510).contains(&max_ms),
            "{max_ms} ms, within HDR's precision"
        );
        assert_eq!(
            w[1].throughput_per_s, 0.0,
            "nothing confirmed during the fault"
        );
        assert!(w[0].p99_ns.unwrap() < 3_000_000, "{:?}", w[0].p99_ns);
        assert!((w[0].throughput_per_s - 4.0).abs() < 1e-9);
        assert!(
            (w[2].throughput_per_s - 17.0 / 3.0).abs() < 1e-9,
            "the backlog"
        );
        assert_eq!((w[2].from_s, w[2].to_s), (5.0, 8.0));
        // Messages scheduled from 6 s on were back within 1.2× the *before* p99: the second
        // that ends 2 s after the fault.
        let before = w[0].p99_ns.unwrap();
        assert_eq!(
            p99_recovered_after(&by_intended, s(5), before, 1.2),
            Some(s(2))
        );
        assert_eq!(
            p99_recovered_after(&by_intended, s(5), before, 50.0),
            Some(s(1))
        );
        assert_eq!(
            p99_recovered_after(&by_intended[..6], s(5), before, 1.2),
            None
        );
    }

    #[test]
    fn an_empty_window_has_no_percentiles() {
        let s = Duration::from_secs;
        let seconds = [second(0, &[1]), second(1, &[])];
        let w = windows(&seconds, &seconds, &[], s(1), s(2), s(2));
        assert_eq!(w[1].confirmed, 0);
        assert_eq!(w[1].p99_ns, None);
        assert_eq!(w[2].throughput_per_s, 0.0);
    }
}
