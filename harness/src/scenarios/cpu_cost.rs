//! CPU cost per committed chat line, by path: through NATS into the database service process,
//! and directly through `rosey_dbservice::db` on a thread of the harness. Their ratio is the
//! honest version of the seed's "CPU overhead", which compared one process with itself.
//!
//! Like for like, in `nats_cpu_cost` (whose `cpu_ratio_nats_vs_direct` is the figure the
//! regression gate compares):
//!
//! * **Same work.** The service's writer applies each `message.log` event with
//!   `record_chat_message` inside a transaction and prunes once per transaction (what the seed's
//!   `user_chat_message` does per call); the direct path does exactly that, with the same users,
//!   message text and event count (warm-up included), in transactions of the mean size the
//!   service used.
//! * **Same pace.** Both run at the scenario's `rate_per_s`: the NATS path open loop, the direct
//!   path one transaction at each intended time (sleeping in between, which costs no CPU), so
//!   neither gets the cache and batching advantages of a tight loop.
//! * **Same database.** Just before its warm-up, the service's database is copied (`VACUUM INTO`
//!   from a read-only connection, `Database::copy_to`) and the direct path writes into the copy:
//!   the same rows (~200k chat lines after a full run's earlier scenarios), users and indexes.
//!   Where the harness does not manage the service (attached), the direct path writes into a
//!   fresh database and the result says so.
//! * **Commit notices are part of the NATS path.** The service publishes one per transaction and
//!   nats-server delivers it; the direct path has nothing like it. Their cost is inside
//!   `dbservice` + `nats-server` and is not separated (`commit_notices_per_event` says how many
//!   there were).
//! * **CPU on a nanosecond clock.** The services' CPU is the scheduler's per-thread nanoseconds
//!   (`sampler`, schedstat), the direct path's is its one thread's (`/proc/thread-self/schedstat`),
//!   so nothing else in the harness is counted; a 10 ms tick is no longer the resolution of a
//!   figure of a few seconds. The harness publisher's CPU is reported separately (it includes the
//!   measuring machinery, so it is not part of the ratio). Rows are read back to prove every
//!   direct write.
//!
//! `direct_db_cpu_cost` is the direct path alone, paced at its own `rate_per_s`, on a fresh
//! database (optionally prefilled): a standalone figure, not the ratio's denominator.

use super::{message_log_payload, OpenLoopParams};
use crate::histogram;
use crate::load::{Ids, Proof, Script};
use crate::results::{LoadInfo, ProcessResources, ScenarioResult};
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use hdrhistogram::Histogram;
use rosey_dbservice::db::Database;
use rosey_protocol::subjects;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const NATS_CPU_COST: ScenarioDef = ScenarioDef {
    name: "nats_cpu_cost",
    title: "CPU cost per event: NATS path vs direct database",
    description: "CPU-µs per committed message.log event in dbservice + nats-server (open loop, commit notices included), against the same writes at the same rate done directly through rosey_dbservice::db on a copy of the service's database",
    needs_services: true,
    check: crate::config::check_params::<OpenLoopParams>,
    run: run_nats,
};

pub const DIRECT_DB_CPU_COST: ScenarioDef = ScenarioDef {
    name: "direct_db_cpu_cost",
    title: "CPU cost per event: direct database writes",
    description: "CPU-µs per chat line written directly through rosey_dbservice::db (user_chat_message work, transactions paced at rate_per_s, fresh database) on one harness thread, rows read back",
    needs_services: false,
    check: crate::config::check_params::<DirectParams>,
    run: run_direct,
};

fn run_nats(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(nats(ctx))
}

fn run_direct(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(direct(ctx))
}

/// CPU-µs per event of one process in a phase's resources.
pub(super) fn us_per_event(resources: &[ProcessResources], process: &str) -> Option<f64> {
    resources
        .iter()
        .find(|r| r.process == process)
        .and_then(|r| r.cpu_us_per_event)
}

async fn nats(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: OpenLoopParams = ctx.params()?;
    let mut result = ctx.result(p.load_info());
    let senders = super::connect_publishers(ctx, p.publishers).await?;
    let plan = super::Plan::open_loop(
        &p,
        senders,
        Script::uniform(subjects::MESSAGE_LOG, message_log_payload(p.payload_bytes)),
        Proof::CommitNotices(Ids::Direct),
    );
    let warmup_count = plan.warmup_count;
    // The direct path's database: a copy of the service's as it is now, before the warm-up that
    // both paths then write.
    let dir = scratch_dir(&ctx.run_dir, ctx.name)?;
    let direct_db = dir.join("direct.db");
    let copied = copy_service_database(ctx, &direct_db).await?;
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
    if batches > 0.0 && committed > 0 {
        result.metrics.insert(
            "commit_notices_per_event".into(),
            batches / service_events.max(1.0),
        );
    }
    let spec = DirectSpec {
        db_path: direct_db,
        events: committed,
        warmup_events: warmup_count,
        batch_size,
        payload_bytes: p.payload_bytes,
        rate_per_s: Some(p.timing.rate_per_s),
    };
    let direct = tokio::task::spawn_blocking(move || direct_path(&spec))
        .await
        .context("direct path thread")??;
    let _ = std::fs::remove_dir_all(&dir);
    let direct_us = direct.cpu_us_per_event();
    result
        .metrics
        .insert("cpu_us_per_event.direct".into(), direct_us);
    result
        .metrics
        .insert("direct.rows_before".into(), direct.rows_before as f64);
    note_build_profile(&mut result);
    note_cpu_sources(&mut result, direct.cpu.source);
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
            .push("the direct path used no measurable CPU; no ratio".into());
    }
    result.notes.push(format!(
        "same work on both paths: {committed} chat lines (after {warmup_count} of warm-up), transactions of \
         {batch_size} (the service's mean), both paced at {} events/s; direct path CPU is one harness thread's",
        p.timing.rate_per_s
    ));
    result.notes.push(if copied {
        format!(
            "same database: the direct path wrote into a copy of the service's database taken before the \
             warm-up ({} chat lines in it)",
            direct.rows_before
        )
    } else {
        "the database service is not managed by the harness, so its database could not be copied: the \
         direct path wrote into a fresh database (fewer rows than the service's)"
            .into()
    });
    result.notes.push(
        "the NATS path's CPU includes publishing and delivering one commit notice per transaction, \
         which the direct path does not do"
            .into(),
    );
    Ok(result)
}

/// Copy the service's database to `dest` for the direct path; false when the service is not the
/// harness's own (attached: no path).
async fn copy_service_database(ctx: &ScenarioContext, dest: &Path) -> anyhow::Result<bool> {
    let source = ctx.services().await?.db_path().to_owned();
    if source.as_os_str().is_empty() {
        return Ok(false);
    }
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut db = Database::with_options(
            &source,
            rosey_dbservice::db::OpenOptions {
                read_only: true,
                ..Default::default()
            },
        );
        db.open()
            .with_context(|| format!("open {} read-only", source.display()))?;
        db.copy_to(&dest)
            .with_context(|| format!("copy {} to {}", source.display(), dest.display()))?;
        db.close().context("close the service's database")?;
        Ok(())
    })
    .await
    .context("database copy thread")??;
    Ok(true)
}

/// Say where CPU figures came from when any of them is not the nanosecond clock.
fn note_cpu_sources(result: &mut ScenarioResult, direct_source: &str) {
    let ticks: Vec<String> = result
        .resources
        .iter()
        .filter(|r| r.cpu_source.as_deref() == Some(crate::sampler::CPU_SOURCE_TICKS))
        .map(|r| r.process.clone())
        .chain((direct_source == crate::sampler::CPU_SOURCE_TICKS).then(|| "direct".to_owned()))
        .collect();
    if !ticks.is_empty() {
        result.notes.push(format!(
            "schedstat was unavailable for {}: CPU there is utime + stime in 10 ms clock ticks",
            ticks.join(", ")
        ));
    }
}

/// Parameters of `direct_db_cpu_cost`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DirectParams {
    /// Chat lines written in the measured phase.
    events: u64,
    /// Written before the measurement and not counted.
    warmup_events: u64,
    /// Events per transaction (1: a commit per event, like the seed's direct calls).
    batch_size: usize,
    payload_bytes: usize,
    /// Events per second, one transaction at each intended time (absent: a tight loop).
    #[serde(default)]
    rate_per_s: Option<f64>,
    /// Chat lines written (unmeasured, unpaced) before the warm-up, so the database is not empty.
    prefill_rows: u64,
}

impl crate::config::ScenarioParams for DirectParams {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.events > 0, "events must be positive");
        anyhow::ensure!(self.batch_size > 0, "batch_size must be positive");
        if let Some(rate) = self.rate_per_s {
            crate::load::check_rate(rate)?;
        }
        Ok(())
    }
}

async fn direct(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: DirectParams = ctx.params()?;
    let mut result = ctx.result(LoadInfo {
        model: if p.rate_per_s.is_some() {
            "paced".into()
        } else {
            "closed_loop".into()
        },
        target_rate_per_s: p.rate_per_s,
        duration_s: 0.0,
        warmup_s: 0.0,
        concurrency: Some(1),
        payload_bytes: u32::try_from(p.payload_bytes).ok(),
    });
    let dir = scratch_dir(&ctx.run_dir, ctx.name)?;
    let db_path = dir.join("direct.db");
    if p.prefill_rows > 0 {
        let prefill = DirectSpec {
            db_path: db_path.clone(),
            events: 0,
            warmup_events: p.prefill_rows,
            batch_size: 1000,
            payload_bytes: p.payload_bytes,
            rate_per_s: None,
        };
        tokio::task::spawn_blocking(move || direct_path(&prefill))
            .await
            .context("prefill thread")??;
    }
    let spec = DirectSpec {
        db_path,
        events: p.events,
        warmup_events: p.warmup_events,
        batch_size: p.batch_size,
        payload_bytes: p.payload_bytes,
        rate_per_s: p.rate_per_s,
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
    result
        .metrics
        .insert("direct.rows_before".into(), out.rows_before as f64);
    note_build_profile(&mut result);
    note_cpu_sources(&mut result, out.cpu.source);
    add_histogram(
        &mut result,
        "service_time",
        "one transaction of batch_size chat lines, begin → commit (CPU probe, not open-loop latency)",
        &out.batch_time,
    )?;
    let secs = out.wall.as_secs_f64();
    result.resources.push(ProcessResources {
        process: "direct (harness thread)".into(),
        cpu_user_s: out.cpu.user.as_secs_f64(),
        cpu_system_s: out.cpu.system.as_secs_f64(),
        cpu_percent: if secs > 0.0 {
            out.cpu.total.as_secs_f64() / secs * 100.0
        } else {
            0.0
        },
        cpu_us_per_event: Some(out.cpu_us_per_event()),
        cpu_source: Some(out.cpu.source.to_owned()),
        ..Default::default()
    });
    result.notes.push(match p.rate_per_s {
        Some(rate) => format!("paced at {rate} events/s, one transaction at each intended time"),
        None => "unpaced: a tight loop of transactions".into(),
    });
    result.notes.push(format!(
        "a fresh database{}; the like-for-like direct figure, on a copy of the service's database, \
         is nats_cpu_cost's cpu_us_per_event.direct",
        if p.prefill_rows > 0 {
            format!(" prefilled with {} chat lines", p.prefill_rows)
        } else {
            String::new()
        }
    ));
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
    /// Events per second (warm-up and measurement), a transaction at each intended time; `None`:
    /// as fast as it goes.
    rate_per_s: Option<f64>,
}

/// What the direct path measured.
#[derive(Debug)]
struct DirectOutcome {
    /// The writing thread's CPU over the measured events.
    cpu: crate::sampler::ThreadCpu,
    wall: Duration,
    /// Rows in `recent_chat` before the measured events (what the database already held).
    rows_before: u64,
    /// Rows the measured phase added to `recent_chat`, counted after it.
    rows_verified: u64,
    events: u64,
    batch_time: Histogram<u64>,
}

impl DirectOutcome {
    fn cpu_us_per_event(&self) -> f64 {
        self.cpu.total.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
}

/// Write `events` chat lines (the users and text of [`message_log_payload`]) in transactions of
/// `batch_size`, exactly as the service's writer applies `message.log` events, into the database
/// at `db_path` (created if missing, else added to). With a rate, the transaction holding event
/// `i` starts at its intended time `start + i / rate` (the thread sleeps until then: no CPU).
/// Runs on the calling thread and measures that thread's CPU.
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
        let start = Instant::now();
        let mut i = from;
        while i < to {
            let end = (i + spec.batch_size as u64).min(to);
            if let Some(rate) = spec.rate_per_s {
                let due = start + crate::load::intended_offset(i - from, rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
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
        cpu: crate::sampler::ThreadCpu {
            total: cpu1.total.saturating_sub(cpu0.total),
            user: cpu1.user.saturating_sub(cpu0.user),
            system: cpu1.system.saturating_sub(cpu0.system),
            source: cpu1.source,
        },
        wall,
        rows_before: before,
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
            rate_per_s: None,
        };
        let out = direct_path(&spec).unwrap();
        assert_eq!(out.rows_verified, 250);
        assert_eq!(out.rows_before, 20, "the warm-up's rows");
        assert_eq!(out.batch_time.len(), 36, "ceil(250 / 7) transactions");
        assert!(
            out.cpu.total > Duration::ZERO,
            "nanosecond CPU sees the writes"
        );
        assert_eq!(out.cpu.source, crate::sampler::CPU_SOURCE_SCHEDSTAT);
        // Again into the same file: it adds to what is there, as on a copy of the service's.
        let again = direct_path(&spec).unwrap();
        assert_eq!(again.rows_before, 290);
        assert_eq!(again.rows_verified, 250);
    }

    #[test]
    fn a_paced_direct_path_keeps_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DirectSpec {
            db_path: dir.path().join("d.db"),
            events: 100,
            warmup_events: 0,
            batch_size: 2,
            payload_bytes: 32,
            rate_per_s: Some(500.0),
        };
        let out = direct_path(&spec).unwrap();
        assert_eq!(out.rows_verified, 100);
        // The last transaction starts at event 98, intended 196 ms after the first.
        assert!(out.wall >= Duration::from_millis(190), "{:?}", out.wall);
        assert!(out.wall < Duration::from_secs(5), "{:?}", out.wall);
        // Sleeping between transactions costs no CPU: far less than the wall time.
        assert!(
            out.cpu.total < out.wall / 2,
            "{:?} of {:?}",
            out.cpu.total,
            out.wall
        );
    }
}
