//! CPU cost per committed chat line, by path: through NATS into the database service process,
//! and directly through `rosey_dbservice::db` on a thread of the harness. Their ratio is the
//! honest version of the seed's "CPU overhead", which compared one process with itself.
//!
//! Both paths do the same database work: the service's writer applies each `message.log` event
//! with `record_chat_message` inside a transaction and prunes once per transaction (what the
//! seed's `user_chat_message` does per call); the direct path does exactly that, with the same
//! users, message text and event count, in transactions of the mean size the service used.
//!
//! * NATS path: open-loop publishes, every event proven by a commit notice; CPU of `dbservice`
//!   and `nats-server` from `/proc` over the measured phase. The harness publisher's CPU is
//!   reported separately (it includes the measuring machinery, so it is not part of the ratio).
//! * Direct path: CPU of the one thread doing the work (`/proc/thread-self/stat`), so nothing
//!   else in the harness is counted; rows are read back to prove every write.

use super::{message_log_payload, OpenLoopParams};
use crate::histogram;
use crate::load::{Ids, Proof, Script};
use crate::results::{LoadInfo, ProcessResources, ScenarioResult};
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use hdrhistogram::Histogram;
use rosey_dbservice::db::Database;
use rosey_protocol::subjects;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const NATS_CPU_COST: ScenarioDef = ScenarioDef {
    name: "nats_cpu_cost",
    title: "CPU cost per event: NATS path vs direct database",
    description: "CPU-µs per committed message.log event in dbservice + nats-server (open loop, commit notices), against the same writes done directly through rosey_dbservice::db",
    needs_services: true,
    run: run_nats,
};

pub const DIRECT_DB_CPU_COST: ScenarioDef = ScenarioDef {
    name: "direct_db_cpu_cost",
    title: "CPU cost per event: direct database writes",
    description: "CPU-µs per chat line written directly through rosey_dbservice::db (user_chat_message work, batched transactions) on one harness thread, rows read back",
    needs_services: false,
    run: run_direct,
};

fn run_nats(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(nats(ctx))
}

fn run_direct(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(direct(ctx))
}

/// CPU-µs per event of one process in a phase's resources.
fn us_per_event(resources: &[ProcessResources], process: &str) -> Option<f64> {
    resources
        .iter()
        .find(|r| r.process == process)
        .and_then(|r| r.cpu_us_per_event)
}

async fn nats(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    p.validate()?;
    let mut result = ctx.result(p.load_info());
    let senders = super::connect_publishers(ctx, p.publishers).await?;
    let plan = super::Plan::open_loop(
        &p,
        senders,
        Script::uniform(subjects::MESSAGE_LOG, message_log_payload(p.payload_bytes)),
        Proof::CommitNotices(Ids::Direct),
    );
    let warmup_count = plan.warmup_count;
    let outcome = super::warm_then_measure(
        ctx,
        &plan,
        &mut result,
        "intended send time → commit notice (the load of the CPU measurement)",
    )
    .await?;
    let committed = outcome.record.confirmed;
    anyhow::ensure!(
        committed > 0,
        "no event was proven committed; there is no CPU per event to report"
    );

    let dbservice = us_per_event(&result.resources, "dbservice")
        .context("the sampler has no figures for dbservice")?;
    let nats_server = us_per_event(&result.resources, "nats-server");
    let nats_path = dbservice + nats_server.unwrap_or(0.0);
    result
        .metrics
        .insert("cpu_us_per_event.dbservice".into(), dbservice);
    if let Some(n) = nats_server {
        result
            .metrics
            .insert("cpu_us_per_event.nats_server".into(), n);
    } else {
        result.notes.push(
            "nats-server is external (no pid): the NATS path's CPU is dbservice only, so the ratio understates it".into(),
        );
    }
    result
        .metrics
        .insert("cpu_us_per_event.nats_path".into(), nats_path);
    if let Some(h) = us_per_event(&result.resources, "harness") {
        result
            .metrics
            .insert("cpu_us_per_event.harness_publisher".into(), h);
    }

    // The direct path does the same work: same count, same payloads, the service's batch size.
    let batches = result
        .metrics
        .get("service.batches")
        .copied()
        .unwrap_or(0.0);
    let service_events = result
        .metrics
        .get("service.committed")
        .copied()
        .unwrap_or(0.0);
    let batch_size = if batches > 0.0 {
        (service_events / batches).round().max(1.0) as usize
    } else {
        1
    };
    result.metrics.insert(
        "batch_size_mean".into(),
        if batches > 0.0 {
            service_events / batches
        } else {
            0.0
        },
    );
    let dir = scratch_dir(&ctx.run_dir, ctx.name)?;
    let spec = DirectSpec {
        db_path: dir.join("direct.db"),
        events: committed,
        warmup_events: warmup_count,
        batch_size,
        payload_bytes: p.payload_bytes,
    };
    let direct = tokio::task::spawn_blocking(move || direct_path(&spec))
        .await
        .context("direct path thread")??;
    let _ = std::fs::remove_dir_all(&dir);
    let direct_us = direct.cpu_us_per_event();
    result
        .metrics
        .insert("cpu_us_per_event.direct".into(), direct_us);
    note_build_profile(&mut result);
    result
        .metrics
        .insert("direct.rows_verified".into(), direct.rows_verified as f64);
    result
        .metrics
        .insert("direct.batch_size".into(), batch_size as f64);
    if direct_us > 0.0 {
        let ratio = nats_path / direct_us;
        result
            .metrics
            .insert("cpu_ratio_nats_vs_direct".into(), ratio);
        result
            .metrics
            .insert("cpu_overhead_pct".into(), (ratio - 1.0) * 100.0);
    } else {
        result
            .notes
            .push("the direct path used less CPU than the clock-tick resolution; no ratio".into());
    }
    result.notes.push(format!(
        "same work on both paths: {committed} chat lines, transactions of {batch_size} (the service's mean); \
         direct path CPU is one harness thread's, unpaced"
    ));
    Ok(result)
}

/// Parameters of `direct_db_cpu_cost`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectParams {
    /// Chat lines written in the measured phase.
    events: u64,
    /// Written before the measurement and not counted.
    #[serde(default)]
    warmup_events: u64,
    /// Events per transaction (1: a commit per event, like the seed's direct calls).
    #[serde(default = "one")]
    batch_size: usize,
    #[serde(default = "default_payload")]
    payload_bytes: usize,
}

fn one() -> usize {
    1
}
fn default_payload() -> usize {
    64
}

async fn direct(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: DirectParams = ctx.params()?;
    anyhow::ensure!(p.events > 0, "events must be positive");
    anyhow::ensure!(p.batch_size > 0, "batch_size must be positive");
    let mut result = ctx.result(LoadInfo {
        model: "closed_loop".into(),
        target_rate_per_s: None,
        duration_s: 0.0,
        warmup_s: 0.0,
        concurrency: Some(1),
        payload_bytes: u32::try_from(p.payload_bytes).ok(),
    });
    let dir = scratch_dir(&ctx.run_dir, ctx.name)?;
    let spec = DirectSpec {
        db_path: dir.join("direct.db"),
        events: p.events,
        warmup_events: p.warmup_events,
        batch_size: p.batch_size,
        payload_bytes: p.payload_bytes,
    };
    let out = tokio::task::spawn_blocking(move || direct_path(&spec))
        .await
        .context("direct path thread")??;
    let _ = std::fs::remove_dir_all(&dir);
    result.load.duration_s = out.wall.as_secs_f64();
    result.accounting.sent = p.events;
    result.accounting.committed = out.rows_verified.min(p.events);
    result.accounting.lost = p.events.saturating_sub(out.rows_verified);
    result.throughput_per_s = Some(p.events as f64 / out.wall.as_secs_f64().max(1e-9));
    result
        .metrics
        .insert("cpu_us_per_event.direct".into(), out.cpu_us_per_event());
    result
        .metrics
        .insert("batch_size".into(), p.batch_size as f64);
    note_build_profile(&mut result);
    add_histogram(
        &mut result,
        "service_time",
        "closed loop: one transaction of batch_size chat lines, begin → commit (CPU probe, not open-loop latency)",
        &out.batch_time,
    )?;
    let secs = out.wall.as_secs_f64();
    result.resources.push(ProcessResources {
        process: "direct (harness thread)".into(),
        cpu_user_s: out.cpu_user.as_secs_f64(),
        cpu_system_s: out.cpu_system.as_secs_f64(),
        cpu_percent: if secs > 0.0 {
            (out.cpu_user + out.cpu_system).as_secs_f64() / secs * 100.0
        } else {
            0.0
        },
        cpu_us_per_event: Some(out.cpu_us_per_event()),
        ..Default::default()
    });
    result.notes.push("rows are read back from recent_chat to prove every write; CPU is the writing thread's only".into());
    Ok(result)
}

/// The direct path runs inside the harness binary, so its CPU depends on how the harness was
/// compiled; an unoptimised harness (and its bundled SQLite) inflates the direct figure and
/// makes the NATS path look cheaper by comparison. Say so in the result.
fn note_build_profile(result: &mut ScenarioResult) {
    if cfg!(debug_assertions) {
        result
            .metrics
            .insert("direct.harness_debug_build".into(), 1.0);
        result.notes.push(
            "the harness is a debug build: the direct path (in-process) ran unoptimised while the services \
             are release builds, so the direct CPU is overstated and the ratio understated; run the harness \
             with --release for a fair comparison"
                .into(),
        );
    }
}

/// A scratch directory for a scenario's own database inside the run directory.
fn scratch_dir(run_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// What the direct path does.
#[derive(Debug, Clone)]
struct DirectSpec {
    db_path: PathBuf,
    events: u64,
    warmup_events: u64,
    batch_size: usize,
    payload_bytes: usize,
}

/// What the direct path measured.
#[derive(Debug)]
struct DirectOutcome {
    cpu_user: Duration,
    cpu_system: Duration,
    wall: Duration,
    /// Rows the measured phase added to `recent_chat`, counted after it.
    rows_verified: u64,
    events: u64,
    batch_time: Histogram<u64>,
}

impl DirectOutcome {
    fn cpu_us_per_event(&self) -> f64 {
        (self.cpu_user + self.cpu_system).as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
}

/// Write `events` chat lines (the users and text of [`message_log_payload`]) in transactions of
/// `batch_size`, exactly as the service's writer applies `message.log` events. Runs on the
/// calling thread and measures that thread's CPU.
fn direct_path(spec: &DirectSpec) -> anyhow::Result<DirectOutcome> {
    let mut db = Database::new(&spec.db_path);
    db.open().context("open the direct-path database")?;
    let text = super::filler(spec.payload_bytes);
    let write = |db: &Database,
                 from: u64,
                 to: u64,
                 batch_time: Option<&mut Histogram<u64>>|
     -> anyhow::Result<()> {
        let mut times = batch_time;
        let mut i = from;
        while i < to {
            let end = (i + spec.batch_size as u64).min(to);
            let t0 = Instant::now();
            db.begin()?;
            let mut inserted = false;
            for k in i..end {
                inserted |= db.record_chat_message(&format!("bench-user-{}", k % 64), &text)?;
            }
            if inserted {
                db.prune_recent_chat()?;
            }
            db.commit()?;
            if let Some(h) = times.as_deref_mut() {
                histogram::record_duration(h, t0.elapsed());
            }
            i = end;
        }
        Ok(())
    };
    let count_rows = |db: &Database| -> anyhow::Result<u64> {
        Ok(u64::try_from(db.recent_chat_count()?).unwrap_or(0))
    };
    write(&db, 0, spec.warmup_events, None).context("direct-path warm-up")?;
    let before = count_rows(&db)?;
    let mut batch_time = histogram::new_histogram();
    let cpu0 =
        crate::sampler::thread_cpu_time().context("this platform has no per-thread CPU times")?;
    let t0 = Instant::now();
    write(
        &db,
        spec.warmup_events,
        spec.warmup_events + spec.events,
        Some(&mut batch_time),
    )
    .context("direct-path writes")?;
    let wall = t0.elapsed();
    let cpu1 =
        crate::sampler::thread_cpu_time().context("this platform has no per-thread CPU times")?;
    let rows_verified = count_rows(&db)?.saturating_sub(before);
    db.close().context("close the direct-path database")?;
    Ok(DirectOutcome {
        cpu_user: cpu1.0.saturating_sub(cpu0.0),
        cpu_system: cpu1.1.saturating_sub(cpu0.1),
        wall,
        rows_verified,
        events: spec.events,
        batch_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_path_writes_and_verifies_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DirectSpec {
            db_path: dir.path().join("d.db"),
            events: 250,
            warmup_events: 20,
            batch_size: 7,
            payload_bytes: 32,
        };
        let out = direct_path(&spec).unwrap();
        assert_eq!(out.rows_verified, 250);
        assert_eq!(out.batch_time.len(), 36, "ceil(250 / 7) transactions");
        assert!(out.cpu_us_per_event() >= 0.0);
    }
}
