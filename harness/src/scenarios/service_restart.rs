//! Restarting the database service mid-stream under open-loop load, in both delivery modes:
//!
//! * `service_restart_core`: plain subscriptions (the seed's behaviour). Events published while
//!   no service is subscribed are lost, and only those: a lost event whose intended send time
//!   lies outside the outage window (from the stop request to the new process's first commit,
//!   each widened by `outage_margin_ms`) counts as `lost_outside_outage`, which a target holds
//!   at 0; the loss inside the window is measured and reported (`loss_expected`).
//! * `service_restart_durable`: events go into the JetStream stream (published with
//!   `Nats-Msg-Id` = event id; the PubAck proves the stream stored them, which is counted but is
//!   not delivery). The service consumes them after the restart: nothing may be lost or
//!   committed twice, proven by commit notices and by the `processed_events` rows in the
//!   database file, which must hold exactly the events the notices proved (`db_rows_mismatch`,
//!   held at 0 by a target).
//!
//! `nats_restart_core` and `nats_restart_durable` take NATS away instead: the harness's local
//! nats-server is stopped (`stop`: SIGTERM or SIGKILL), stays down for `down_s`, and starts
//! again on its port with its JetStream store. Every client reconnects on its own. In durable
//! mode the harness publishes to JetStream and publishes again (same `Nats-Msg-Id`) until the
//! stream confirms storing each event, as a durable producer must, so nothing may be lost or
//! committed twice; in core mode what was published while the service could not receive it is
//! lost, reported with the same outage window (from the stop request to the first commit after
//! the server is back) and with the services' own view (their disconnect counters). Recovery is
//! `recovery_after_return_ms`: from the server accepting clients again to the first commit
//! notice, seen by a connection opened at that moment.
//!
//! Recovery (`recovery_ms`) runs from the stop request (the instant the harness asks the old
//! process to stop) to the first commit notice carrying the new process's instance id (learnt
//! from its first ping reply), so it includes the stop, the drain, the start and the first
//! commit, and a late notice of the old process cannot end it. The stop and readiness times are
//! reported beside it. The restart is injected at a fixed time into the measured phase; that
//! wait schedules the fault and is not part of any message's measurement.

use super::{OpenLoopParams, Plan};
use crate::config::DbServiceMode as Mode;
use crate::load::{DrainUntil, Ids, InstanceNotices, PhaseOutcome, Proof, Script, SendVia};
use crate::provision::NatsControl;
use crate::results::ScenarioResult;
use crate::scenario::{BoxFuture, ScenarioContext, ScenarioDef};
use crate::services::{Restart, StopHow};
use anyhow::Context;
use futures::StreamExt as _;
use rosey_protocol::subjects;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const CORE: ScenarioDef = ScenarioDef {
    name: "service_restart_core",
    title: "Service restart (core mode)",
    description: "dbservice stopped and restarted mid-stream under open-loop message.log load on core NATS: recovery time to first commit, loss reported",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run: run_core,
};

pub const DURABLE: ScenarioDef = ScenarioDef {
    name: "service_restart_durable",
    title: "Service restart (durable mode)",
    description: "dbservice killed and restarted mid-stream while events go into JetStream: recovery time to first commit, nothing lost or committed twice",
    needs_services: true,
    check: crate::config::check_params::<Params>,
    run: run_durable,
};

pub const NATS_CORE: ScenarioDef = ScenarioDef {
    name: "nats_restart_core",
    title: "NATS restart (core mode)",
    description: "the local nats-server stopped for down_s and started again on its port and store mid-stream under open-loop message.log load on core NATS: time from its return to the first commit, loss inside the outage reported",
    needs_services: true,
    check: crate::config::check_params::<NatsParams>,
    run: run_nats_core,
};

pub const NATS_DURABLE: ScenarioDef = ScenarioDef {
    name: "nats_restart_durable",
    title: "NATS restart (durable mode)",
    description: "the local nats-server stopped for down_s and started again on its store while events go into JetStream (republished until stored): time from its return to the first commit, nothing lost or committed twice",
    needs_services: true,
    check: crate::config::check_params::<NatsParams>,
    run: run_nats_durable,
};

/// The scenarios that stop and start nats-server, which the harness can only do with a server
/// it runs itself (the run skips them otherwise, saying so).
pub const NEEDS_LOCAL_NATS: [&str; 2] = [NATS_CORE.name, NATS_DURABLE.name];

fn run_core(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(restart(ctx, Mode::Core, What::Service))
}

fn run_durable(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(restart(ctx, Mode::Durable, What::Service))
}

fn run_nats_core(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(restart(ctx, Mode::Core, What::Nats))
}

fn run_nats_durable(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(restart(ctx, Mode::Durable, What::Nats))
}

/// What is restarted mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// The database service (a new process, a new instance id).
    Service,
    /// The local nats-server (same port and store; the services stay up and reconnect).
    Nats,
}

impl What {
    fn label(self) -> &'static str {
        match self {
            What::Service => "dbservice",
            What::Nats => "nats-server",
        }
    }
}

/// The NATS restart's parameters: the service restart's, plus how long NATS stays away.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NatsParams {
    #[serde(flatten)]
    restart: Params,
    /// How long the server stays stopped before it is started again.
    down_s: f64,
}

impl crate::config::ScenarioParams for NatsParams {
    fn validate(&self) -> anyhow::Result<()> {
        crate::config::ScenarioParams::validate(&self.restart)?;
        anyhow::ensure!(
            self.down_s.is_finite() && self.down_s >= 0.0,
            "down_s must not be negative"
        );
        Ok(())
    }
}

/// What a restart mid-stream reported.
enum Restarted {
    Service(Restart),
    Nats(NatsRestart),
}

/// How one NATS restart went, timed from the stop request.
#[derive(Debug, Clone, Copy)]
struct NatsRestart {
    stop: Duration,
    /// From the stop request until the server accepted clients again.
    back: Duration,
    /// The first commit notice seen after the server was back (by a connection opened then).
    first_commit: Option<Instant>,
}

/// The load a fault or a restart is measured under: `rosey.db.message.log` events at `timing`,
/// proven by commit notices; in durable mode published to JetStream (again until stored), in
/// core mode drained only until the last event is proven (anything earlier still unproven was
/// never received: lost while no service listened).
pub(super) fn fault_plan(
    timing: super::Timing,
    payload_bytes: usize,
    mode: Mode,
    sender: crate::publishers::Publishers,
) -> Plan {
    let mut plan = Plan::open_loop(
        &OpenLoopParams {
            timing,
            payload_bytes,
            publishers: 1,
            prefill_events: 0,
        },
        sender,
        Script::uniform(
            subjects::MESSAGE_LOG,
            super::message_log_payload(payload_bytes),
        ),
        Proof::CommitNotices(Ids::Direct),
    );
    match mode {
        Mode::Durable => plan.phase.via = SendVia::JetStream,
        Mode::Core => plan.phase.drain_until = DrainUntil::LastProven,
    }
    plan
}

/// The arrival of the first commit notice seen by a connection opened now (any service
/// instance, any publisher), waiting up to `deadline`: the end of an outage.
pub(super) async fn first_commit_seen(
    ctx: &ScenarioContext,
    deadline: Duration,
) -> anyhow::Result<Option<Instant>> {
    let watcher = crate::load::connect(&ctx.nats_url, &format!("bench-{}-watch", ctx.name)).await?;
    let mut notices = watcher
        .subscribe(subjects::COMMITTED)
        .await
        .context("subscribing to commit notices after the fault")?;
    Ok(tokio::time::timeout(deadline, notices.next())
        .await
        .ok()
        .flatten()
        .map(|_| Instant::now()))
}

/// Switches the database service to `mode` unless it runs in it; returns the mode it ran in,
/// for [`leave_mode`].
pub(super) async fn enter_mode(ctx: &ScenarioContext, mode: Mode) -> anyhow::Result<String> {
    let original = ctx.services().await?.mode().to_owned();
    if original != mode.as_str() {
        ctx.services()
            .await?
            .restart_dbservice(StopHow::Graceful, Some(mode.as_str()))
            .await
            .with_context(|| format!("switching the database service to {} mode", mode.as_str()))?;
        ctx.refresh_sampled_processes().await;
    }
    Ok(original)
}

/// Leaves the services as the run configured them (`original`, from [`enter_mode`] while the
/// scenario ran in `mode`), and a core-mode run without the stream (it would otherwise keep
/// storing every event nobody consumes).
pub(super) async fn leave_mode(
    ctx: &ScenarioContext,
    mode: Mode,
    original: &str,
) -> anyhow::Result<()> {
    if original == mode.as_str() {
        return Ok(());
    }
    ctx.services()
        .await?
        .restart_dbservice(StopHow::Graceful, Some(original))
        .await
        .with_context(|| format!("switching the database service back to {original} mode"))?;
    ctx.refresh_sampled_processes().await;
    if original == "core" {
        // Right after a fault JetStream may not answer at once (a cluster electing or catching
        // up): asked again for up to 30 s. Tear-down, nothing is timed.
        let js = async_nats::jetstream::new(ctx.client.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match js.delete_stream(subjects::DURABLE_STREAM).await {
                Ok(_) => break,
                // Already gone (JetStream's "stream not found").
                Err(e) if e.to_string().contains("not found") => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("deleting the durable stream after the scenario"),
            }
        }
    }
    Ok(())
}

/// Durable mode's proof beyond the notices: the PubAck figures, and the database's
/// `processed_events` rows of this phase against the events the notices proved.
///
/// A commit notice travels on core NATS: one in flight when a server or a node goes away is
/// lost although its event committed. Each unproven event is looked up in the database; one
/// found there is counted committed (`committed_without_notice`, no latency: its notice never
/// came) and not lost. `db_rows_mismatch` then compares the rows with all committed events.
///
/// Returns the indices of the events committed without a notice.
pub(super) async fn prove_durable(
    ctx: &ScenarioContext,
    outcome: &PhaseOutcome,
    result: &mut ScenarioResult,
) -> anyhow::Result<std::collections::HashSet<u64>> {
    result
        .metrics
        .insert("pub_acks".into(), outcome.pub_acks as f64);
    result
        .metrics
        .insert("pub_ack_errors".into(), outcome.pub_ack_errors as f64);
    result
        .metrics
        .insert("pub_retries".into(), outcome.pub_retries as f64);
    let prefix = ctx.id_prefix("m");
    let db_path = ctx.services().await?.db_path().to_owned();
    let unproven: Vec<(u64, String)> = outcome
        .record
        .unconfirmed
        .iter()
        .map(|u| (u.index, format!("{prefix}{}", u.index)))
        .collect();
    let (rows, recovered) =
        tokio::task::spawn_blocking(move || processed_rows(&db_path, &prefix, &unproven))
            .await
            .context("database check thread")??;
    result
        .metrics
        .insert("db_processed_events".into(), rows as f64);
    result
        .metrics
        .insert("committed_without_notice".into(), recovered.len() as f64);
    let found = recovered.len() as u64;
    if found > 0 {
        result.accounting.committed += found;
        result.accounting.lost = result.accounting.lost.saturating_sub(found);
        result.notes.push(format!(
            "{found} events are in processed_events but their commit notices never arrived (a notice \
             travels on core NATS and is lost with the server or node it was on): counted committed, \
             without a latency"
        ));
    }
    let committed = outcome.record.confirmed + found;
    // The rows are the claim: they must hold exactly the committed events (fewer: a notice for
    // an uncommitted event; more: a committed event the harness never sent in this phase).
    result
        .metrics
        .insert("db_rows_mismatch".into(), rows.abs_diff(committed) as f64);
    if rows != committed {
        result.notes.push(format!(
            "processed_events holds {rows} of our ids, but {committed} were committed \
             ({} proven by commit notices)",
            outcome.record.confirmed
        ));
    }
    Ok(recovered)
}

/// Stops the local nats-server, keeps it down for `down`, starts it again and waits (up to
/// `deadline`) for the first commit notice through it.
async fn restart_nats(
    ctx: &ScenarioContext,
    control: &NatsControl,
    kill: bool,
    down: Duration,
    deadline: Duration,
) -> anyhow::Result<NatsRestart> {
    let requested = Instant::now();
    let c = control.clone();
    tokio::task::spawn_blocking(move || c.stop(kill))
        .await
        .context("the nats-server stop thread")??;
    let stop = requested.elapsed();
    // The outage itself: scheduling the fault, not timing any message.
    tokio::time::sleep(down).await;
    let c = control.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .context("the nats-server start thread")??;
    let back = requested.elapsed();
    let first_commit = first_commit_seen(ctx, deadline).await?;
    Ok(NatsRestart {
        stop,
        back,
        first_commit,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    /// The measured phase includes the restart.
    #[serde(flatten)]
    timing: super::Timing,
    /// When, into the measured phase, the service is stopped.
    restart_at_s: f64,
    /// `graceful` (SIGTERM: the service drains and commits what it has) or `kill` (SIGKILL: a
    /// crash).
    stop: StopHow,
    payload_bytes: usize,
    /// How far the outage window reaches beyond its ends (before the stop request, after the
    /// new process's first commit): events in flight at either end may be lost with the outage.
    outage_margin_ms: f64,
    /// After the outage, the p99 of the messages sent counts as recovered once within this
    /// factor of the p99 before it (`p99_recovered_after_s`).
    recovered_p99_factor: f64,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        self.timing.validate()?;
        anyhow::ensure!(
            self.restart_at_s >= 0.0 && self.restart_at_s < self.timing.duration_s,
            "restart_at_s must fall inside the measured phase"
        );
        anyhow::ensure!(
            self.outage_margin_ms.is_finite() && self.outage_margin_ms >= 0.0,
            "outage_margin_ms must not be negative"
        );
        anyhow::ensure!(
            self.recovered_p99_factor.is_finite() && self.recovered_p99_factor >= 1.0,
            "recovered_p99_factor must be at least 1"
        );
        Ok(())
    }
}

async fn restart(ctx: &ScenarioContext, mode: Mode, what: What) -> anyhow::Result<ScenarioResult> {
    let (p, down) = match what {
        What::Service => (ctx.params::<Params>()?, Duration::ZERO),
        What::Nats => {
            let n: NatsParams = ctx.params()?;
            (n.restart, Duration::from_secs_f64(n.down_s))
        }
    };
    // Some exactly when NATS is what restarts.
    let nats = match what {
        What::Service => None,
        What::Nats => Some(ctx.nats_control.clone().with_context(|| {
            format!(
                "{} stops and starts nats-server, which the harness can only do with a server it \
                 runs itself: run it with --nats local (or --nats auto where nats-server installs)",
                ctx.name
            )
        })?),
    };
    let how = p.stop;
    let mut result = ctx.result(p.timing.load_info(1, Some(p.payload_bytes)));
    let original_mode = enter_mode(ctx, mode).await?;
    let sender = super::connect_publishers(ctx, 1).await?;
    let plan = fault_plan(p.timing, p.payload_bytes, mode, sender);
    // The fault: scheduled relative to the measured phase's start (the wait is not part of any
    // message's measurement), then the restart, timed from the stop request.
    let fault = async {
        tokio::time::sleep(Duration::from_secs_f64(p.restart_at_s)).await;
        let stop_requested = Instant::now();
        let restarted = match &nats {
            None => match ctx.services().await {
                Ok(mut s) => s.restart_dbservice(how, None).await.map(Restarted::Service),
                Err(e) => Err(e),
            },
            Some(control) => restart_nats(
                ctx,
                control,
                how == StopHow::Kill,
                down,
                Duration::from_secs_f64(p.timing.drain_timeout_s + p.timing.duration_s),
            )
            .await
            .map(Restarted::Nats),
        };
        (stop_requested, restarted)
    };
    let (outcome, (stop_requested, restarted)) = super::warm_then_measure_during(
        ctx,
        &plan,
        &mut result,
        "intended send time → commit notice, across the restart (the outage shows in the tail)",
        fault,
    )
    .await?;
    let restarted = restarted.with_context(|| match what {
        What::Service => "restarting the database service mid-stream",
        What::Nats => "restarting nats-server mid-stream",
    })?;
    // A restarted nats-server has a new pid: the sampler follows it from here on.
    ctx.refresh_sampled_processes().await;
    result.metrics.insert(
        "restart_at_s".into(),
        stop_requested
            .saturating_duration_since(outcome.start)
            .as_secs_f64(),
    );
    let first_new = match restarted {
        Restarted::Service(r) => service_recovery(&mut result, &outcome, stop_requested, &r),
        Restarted::Nats(n) => nats_recovery(&mut result, stop_requested, n),
    };

    // Durable mode: events whose notice was lost but whose row is in the database are committed.
    let recovered = match mode {
        Mode::Durable => prove_durable(ctx, &outcome, &mut result).await?,
        Mode::Core => Default::default(),
    };
    let sent = outcome.record.sent;
    let lost = result.accounting.lost;
    result.metrics.insert(
        "loss_pct".into(),
        if sent > 0 {
            lost as f64 * 100.0 / sent as f64
        } else {
            0.0
        },
    );
    // The outage window, as offsets from the phase start (the intended send times' origin).
    let margin = Duration::from_secs_f64(p.outage_margin_ms / 1e3);
    let window = OutageWindow {
        from: stop_requested
            .saturating_duration_since(outcome.start)
            .saturating_sub(margin),
        to: first_new.map(|t| t.saturating_duration_since(outcome.start) + margin),
    };
    // The outage as a fault of the phase: from the stop request to the first commit after it.
    result.faults.push(crate::results::FaultRecord {
        kind: match p.stop {
            StopHow::Kill => "kill".to_owned(),
            StopHow::Graceful => "restart".to_owned(),
        },
        target: what.label().to_owned(),
        start_s: stop_requested
            .saturating_duration_since(outcome.start)
            .as_secs_f64(),
        end_s: first_new.map(|t| t.saturating_duration_since(outcome.start).as_secs_f64()),
    });
    super::fault_windows::record(
        &mut result,
        &outcome,
        (
            stop_requested.saturating_duration_since(outcome.start),
            first_new.map(|t| t.saturating_duration_since(outcome.start)),
        ),
        &recovered,
        p.recovered_p99_factor,
    );
    let split = classify_loss(
        outcome
            .record
            .unconfirmed
            .iter()
            .filter(|u| !recovered.contains(&u.index))
            .map(|u| (u.intended, false)),
        window,
    );
    result
        .metrics
        .insert("lost_inside_outage".into(), split.inside as f64);
    result
        .metrics
        .insert("lost_outside_outage".into(), split.outside as f64);
    if split.outside > 0 {
        result.notes.push(format!(
            "{} lost events were intended outside the outage window ({:.3} s to {}, margin {} ms \
             included): loss there is not the restart's",
            split.outside,
            window.from.as_secs_f64(),
            window.to.map_or("the end".to_owned(), |t| format!(
                "{:.3} s",
                t.as_secs_f64()
            )),
            p.outage_margin_ms
        ));
    }
    match mode {
        Mode::Core => {
            result.accounting.loss_expected = true;
            // The drain ended when the last event was proven, not at a deadline; say so below.
            result
                .notes
                .retain(|n| !n.contains("were not confirmed before the drain deadline"));
            result.notes.push(format!(
                "core mode: {} of {sent} events were lost inside the outage window ({} {} stop); \
                 reported, not failed (a loss outside it fails `lost_outside_outage`)",
                split.inside,
                p.stop.as_str(),
                what.label()
            ));
            // The service's own count beside the harness's (a NATS restart leaves the service
            // running, so its counters span the phase).
            if let Some(received) = result.metrics.get("service.received").copied() {
                let unseen = (sent as f64 - received).max(0.0);
                result.metrics.insert("lost_before_service".into(), unseen);
                result.notes.push(format!(
                    "the database service counted {received} events received during the phase \
                     (other publishers included) of the {sent} sent: at least {unseen} of the \
                     {lost} lost never reached it"
                ));
            }
        }
        Mode::Durable => {
            if lost > 0 {
                result.notes.push(format!(
                    "{lost} events were stored by JetStream (PubAck) but not committed before the drain deadline \
                     ({} s); a delivery the stopped service held returns only after the consumer's ack wait",
                    p.timing.drain_timeout_s
                ));
            }
            let slowest = outcome.record.latency.max() as f64 / 1e9;
            if slowest > 5.0 {
                result.notes.push(match what {
                    What::Service => format!(
                        "the slowest event took {slowest:.1} s: deliveries the stopped process had not acknowledged \
                         come back only after the consumer's ack wait"
                    ),
                    What::Nats => format!(
                        "the slowest event took {slowest:.1} s: a publish lost with the server is sent again only \
                         when its PubAck times out (5 s), and a delivery lost with it only after the consumer's ack wait"
                    ),
                });
            }
            result.notes.push(format!(
                "durable mode, {} {} stop: published to JetStream with Nats-Msg-Id, again until stored ({} republished); {} PubAcks (storage, not delivery)",
                p.stop.as_str(), what.label(), outcome.pub_retries, outcome.pub_acks
            ));
        }
    }

    leave_mode(ctx, mode, &original_mode).await?;
    Ok(result)
}

fn ms_after(t: Instant, from: Instant) -> f64 {
    t.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// A database service restart's times: stop, readiness, recovery to the new process's first
/// commit. Returns that first commit, the end of the outage.
fn service_recovery(
    result: &mut ScenarioResult,
    outcome: &PhaseOutcome,
    stop_requested: Instant,
    restarted: &Restart,
) -> Option<Instant> {
    let spawned = stop_requested + restarted.stop;
    let first_new = first_notice_of(&outcome.notices_by_instance, &restarted.instance);
    result
        .metrics
        .insert("stop_ms".into(), restarted.stop.as_secs_f64() * 1e3);
    result
        .metrics
        .insert("ready_ms".into(), restarted.ready.as_secs_f64() * 1e3);
    match first_new {
        Some(t) => {
            result
                .metrics
                .insert("recovery_ms".into(), ms_after(t, stop_requested));
            // The former definition (from the new spawn), kept for comparison with old runs.
            result
                .metrics
                .insert("spawn_to_first_commit_ms".into(), ms_after(t, spawned));
        }
        None if restarted.instance.is_empty() => result.notes.push(
            "the restarted service reported no instance id, so its commit notices cannot be told \
             from late ones of the old process: no recovery time"
                .into(),
        ),
        None => result.notes.push(format!(
            "no commit notice of the new process (instance {}) arrived: no recovery time",
            restarted.instance
        )),
    }
    // Notices of the old process that arrived after the stop request (a graceful stop commits
    // what it received): they end nothing, but say how long the old process kept committing.
    if let Some(last_old) = outcome
        .notices_by_instance
        .iter()
        .filter(|n| n.instance != restarted.instance)
        .map(|n| n.last)
        .max()
        .filter(|t| *t > stop_requested)
    {
        result.metrics.insert(
            "old_last_notice_after_stop_ms".into(),
            ms_after(last_old, stop_requested),
        );
    }
    first_new
}

/// A NATS restart's times: stop, outage, and the first commit after the server came back.
/// Returns that first commit, the end of the outage.
fn nats_recovery(
    result: &mut ScenarioResult,
    stop_requested: Instant,
    n: NatsRestart,
) -> Option<Instant> {
    result
        .metrics
        .insert("stop_ms".into(), n.stop.as_secs_f64() * 1e3);
    result
        .metrics
        .insert("down_ms".into(), n.back.as_secs_f64() * 1e3);
    let back = stop_requested + n.back;
    match n.first_commit {
        Some(t) => {
            result
                .metrics
                .insert("recovery_ms".into(), ms_after(t, stop_requested));
            result
                .metrics
                .insert("recovery_after_return_ms".into(), ms_after(t, back));
        }
        None => result
            .notes
            .push("no commit notice arrived after nats-server came back: no recovery time".into()),
    }
    n.first_commit
}

/// The arrival of the first commit notice (carrying our ids) of process `instance`; none for an
/// empty id (a service that does not name itself cannot be told from the process before it).
fn first_notice_of(notices: &[InstanceNotices], instance: &str) -> Option<Instant> {
    if instance.is_empty() {
        return None;
    }
    notices
        .iter()
        .find(|n| n.instance == instance)
        .map(|n| n.first)
}

/// Intended send times between `from` and `to` (offsets from the phase start, both included)
/// fall in the outage; `to == None`: the new process never committed, so the outage lasts to
/// the end of the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutageWindow {
    from: Duration,
    to: Option<Duration>,
}

/// Lost events by where their intended send time lies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LossSplit {
    inside: u64,
    outside: u64,
}

/// Classify events, given as (intended send time from the phase start, confirmed): a confirmed
/// event is not lost; an unconfirmed one is lost inside or outside the outage window.
fn classify_loss(events: impl IntoIterator<Item = (Duration, bool)>, w: OutageWindow) -> LossSplit {
    let mut split = LossSplit::default();
    for (intended, confirmed) in events {
        if confirmed {
            continue;
        }
        if intended >= w.from && w.to.is_none_or(|to| intended <= to) {
            split.inside += 1;
        } else {
            split.outside += 1;
        }
    }
    split
}

/// Processed-event ids that start with `prefix` (durable mode records every committed event id,
/// once), and how many of `ids` are among them, read through the database service's library on
/// a read-only connection.
fn processed_rows(
    db_path: &std::path::Path,
    prefix: &str,
    ids: &[(u64, String)],
) -> anyhow::Result<(u64, std::collections::HashSet<u64>)> {
    let mut db = rosey_dbservice::db::Database::open_read_only(db_path)
        .with_context(|| format!("open {} read-only", db_path.display()))?;
    let n = db
        .processed_event_count_with_prefix(prefix)
        .context("count processed events")?;
    let mut found = std::collections::HashSet::new();
    for (index, id) in ids {
        if db
            .is_event_processed(id)
            .context("look up a processed event")?
        {
            found.insert(*index);
        }
    }
    db.close()?;
    Ok((u64::try_from(n).unwrap_or(0), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_against_the_outage_window_only_inside_it() {
        let ms = Duration::from_millis;
        let w = OutageWindow {
            from: ms(1_400),
            to: Some(ms(1_900)),
        };
        let events = [
            (ms(100), true),    // early, confirmed
            (ms(1_399), false), // lost just before the window: outside
            (ms(1_400), false), // lost on the lower bound: inside
            (ms(1_650), false), // lost in the outage: inside
            (ms(1_650), true),  // confirmed in the outage: not lost
            (ms(1_900), false), // lost on the upper bound: inside
            (ms(1_901), false), // lost just after: outside
            (ms(3_000), false), // lost long after recovery: outside
        ];
        assert_eq!(
            classify_loss(events, w),
            LossSplit {
                inside: 3,
                outside: 3
            }
        );
        // Never recovered: everything lost from the stop on is the outage's.
        let open = OutageWindow {
            from: ms(1_400),
            to: None,
        };
        assert_eq!(
            classify_loss(events, open),
            LossSplit {
                inside: 5,
                outside: 1
            }
        );
        assert_eq!(classify_loss([], w), LossSplit::default());
    }

    #[test]
    fn recovery_ends_at_the_new_instances_first_notice_only() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let n = |instance: &str, first: u64, last: u64| InstanceNotices {
            instance: instance.into(),
            first: t0 + ms(first),
            last: t0 + ms(last),
            notices: 2,
        };
        // The old process's last notice (at 40 ms) arrives after the new one's first (30 ms).
        let notices = [n("old", 0, 40), n("new", 30, 90)];
        assert_eq!(first_notice_of(&notices, "new"), Some(t0 + ms(30)));
        assert_eq!(first_notice_of(&notices, "other"), None);
        // An unnamed service cannot be told apart, even if old notices are unnamed too.
        assert_eq!(first_notice_of(&[n("", 0, 40)], ""), None);
    }

    #[test]
    fn processed_rows_counts_this_runs_ids_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let mut db = rosey_dbservice::db::Database::new(&path);
        db.open().unwrap();
        for id in ["run_a-1", "run_a-2", "run_a-3", "run_b-1", "RUN_A-4"] {
            db.mark_event_processed(id).unwrap();
        }
        db.close().unwrap();
        let count = |prefix: &str, ids: &[(u64, String)]| {
            let (rows, found) = processed_rows(&path, prefix, ids).unwrap();
            let mut found: Vec<u64> = found.into_iter().collect();
            found.sort();
            (rows, found)
        };
        assert_eq!(count("run_a-", &[]), (3, vec![]));
        assert_eq!(count("run_", &[]), (4, vec![]));
        let ids = [(2, "run_a-2"), (9, "run_a-9"), (1, "run_b-1")].map(|(i, s)| (i, s.to_owned()));
        assert_eq!(count("run_a-", &ids), (3, vec![1, 2]));
    }
}
