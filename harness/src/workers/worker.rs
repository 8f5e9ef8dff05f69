//! The worker's side ([`serve`], run by the `rosey-loadgen` binary): join a run over NATS, take
//! slices of its phases, run each on the one phase engine on this host's clock, and send back
//! what it recorded (see [`super`] for the conversation).

use super::{Heartbeat, Hello, Ready, RemoteOutcome, Report, Slice, Subjects, Welcome, HEARTBEAT};
use crate::load::{self, Ids, Proof};
use crate::publishers::Publishers;
use anyhow::Context;
use async_nats::Client;
use futures::StreamExt;
use std::time::Duration;

/// What a worker needs to join a run.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub nats_url: String,
    pub run_id: String,
    /// Unique among the run's workers (a NATS token).
    pub name: String,
    /// Give up when no coordinator welcomed the worker within this time.
    pub join_timeout: Duration,
    /// How the worker's host is named in the results ([`host_name`] unless its launcher knows
    /// better: a container on the host's network has the host's name).
    pub host: String,
}

/// `<host>-<pid>`, as a NATS token: the default worker name.
pub fn default_name() -> String {
    let raw = format!("{}-{}", host_name(), std::process::id());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// This host's name (the kernel's).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Join the run and serve its phases until the coordinator says bye. `say` receives one line
/// per event worth telling (joined, slice started, slice reported).
pub async fn serve(opts: WorkerOptions, say: impl Fn(&str)) -> anyhow::Result<()> {
    super::check_token("worker name", &opts.name)?;
    let subjects = Subjects::new(&opts.run_id)?;
    let client = load::connect(&opts.nats_url, &format!("rosey-loadgen-{}", opts.name)).await?;
    let mut slices = client
        .subscribe(subjects.slice(&opts.name))
        .await
        .context("subscribe to slices")?;
    let mut gos = client
        .subscribe(subjects.go_all())
        .await
        .context("subscribe to go")?;
    let mut bye = client
        .subscribe(subjects.bye())
        .await
        .context("subscribe to bye")?;
    load::ensure_subscribed(&client).await?;
    let place = join(&client, &subjects, &opts).await?;
    say(&format!(
        "rosey-loadgen {}: joined run {} as worker {place}",
        opts.name, opts.run_id
    ));
    // The slice handed out and prepared, waiting for its go.
    let mut prepared: Option<(Slice, Publishers)> = None;
    loop {
        tokio::select! {
            _ = bye.next() => {
                say(&format!("rosey-loadgen {}: the run is over", opts.name));
                return Ok(());
            }
            m = slices.next() => {
                let m = m.context("the slice subscription ended")?;
                let Some(reply) = m.reply.clone() else { continue };
                let answer = match prepare(&opts, &m.payload).await {
                    Ok(p) => {
                        prepared = Some(p);
                        Ready { result: Ok(()) }
                    }
                    Err(e) => Ready { result: Err(format!("{e:#}")) },
                };
                client
                    .publish(reply, serde_json::to_vec(&answer)?.into())
                    .await
                    .context("answer a slice")?;
                client.flush().await.context("answer a slice")?;
            }
            m = gos.next() => {
                let m = m.context("the go subscription ended")?;
                let phase: Option<u64> = m.subject.rsplit('.').next().and_then(|p| p.parse().ok());
                let Some((slice, senders)) = prepared.take_if(|(s, _)| Some(s.phase) == phase) else {
                    continue;
                };
                say(&format!(
                    "rosey-loadgen {}: phase {}: {} messages{}",
                    opts.name,
                    slice.phase,
                    slice.count,
                    slice.rate_per_s.map(|r| format!(" at {r:.0}/s")).unwrap_or_default()
                ));
                let report = run_slice(&client, &subjects, &opts.name, slice, senders).await;
                let ok = report.result.is_ok();
                publish_report(&client, &subjects, &opts.name, report).await?;
                say(&format!(
                    "rosey-loadgen {}: phase {} {}",
                    opts.name,
                    phase.unwrap_or_default(),
                    if ok { "reported" } else { "failed (reported)" }
                ));
            }
        }
    }
}

/// Announce the worker until a coordinator welcomes it; its place among the run's workers.
async fn join(client: &Client, subjects: &Subjects, opts: &WorkerOptions) -> anyhow::Result<u32> {
    let hello = Hello {
        name: opts.name.clone(),
        host: opts.host.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let body: bytes::Bytes = serde_json::to_vec(&hello)?.into();
    let deadline = tokio::time::Instant::now() + opts.join_timeout;
    loop {
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(subjects.join(), body.clone()),
        )
        .await;
        if let Ok(Ok(m)) = asked {
            let welcome: Welcome =
                serde_json::from_slice(&m.payload).context("the coordinator's welcome")?;
            return welcome
                .result
                .map_err(|e| anyhow::anyhow!("the run did not take this worker: {e}"));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no bench run {} welcomed this worker within {:.0} s (is `cargo xtask bench` waiting \
             for workers, with this run id, on the same NATS server?)",
            opts.run_id,
            opts.join_timeout.as_secs_f64()
        );
        // No coordinator yet (no responders answer at once): ask again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Read a slice and get ready for it: its publisher connections.
async fn prepare(opts: &WorkerOptions, payload: &[u8]) -> anyhow::Result<(Slice, Publishers)> {
    let slice: Slice = serde_json::from_slice(payload).context("not a slice")?;
    anyhow::ensure!(slice.count > 0, "an empty slice");
    if let Some(rate) = slice.rate_per_s {
        load::check_rate(rate)?;
    }
    let senders = Publishers::connect(
        &opts.nats_url,
        &format!("rosey-loadgen-{}", opts.name),
        slice.publishers.max(1),
    )
    .await?;
    Ok((slice, senders))
}

/// Run one slice beside its heartbeat; an abort from the coordinator ends it early.
async fn run_slice(
    client: &Client,
    subjects: &Subjects,
    name: &str,
    slice: Slice,
    senders: Publishers,
) -> Report {
    let phase = slice.phase;
    let fail = |e: anyhow::Error| Report {
        phase,
        result: Err(format!("{e:#}")),
    };
    let mut abort = match client.subscribe(subjects.abort(phase)).await {
        Ok(s) => s,
        Err(e) => return fail(anyhow::Error::new(e).context("subscribe to abort")),
    };
    let spec = load::PhaseSpec {
        id_prefix: slice.id_prefix.clone(),
        rate_per_s: slice.rate_per_s,
        count: slice.count,
        ..load::PhaseSpec::new(
            senders,
            slice.script.script(),
            Proof::CommitNotices(Ids::Direct),
            Duration::from_millis(slice.drain_timeout_ms),
        )
    };
    let progress = indicatif::ProgressBar::hidden();
    let beat = {
        let (client, subject, progress) = (client.clone(), subjects.alive(name), progress.clone());
        tokio::spawn(async move {
            loop {
                let h = Heartbeat {
                    phase,
                    sent: progress.position(),
                };
                if let Ok(body) = serde_json::to_vec(&h) {
                    let _ = client.publish(subject.clone(), body.into()).await;
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    // Its place in the common schedule: before the schedule starts, not inside a timed window.
    tokio::time::sleep(Duration::from_nanos(slice.stagger_ns)).await;
    let outcome = tokio::select! {
        o = load::run_phase(client, spec, &progress) => Some(o),
        _ = abort.next() => None,
    };
    beat.abort();
    match outcome {
        None => fail(anyhow::anyhow!("aborted by the coordinator")),
        Some(Err(e)) => fail(e),
        Some(Ok(o)) => match RemoteOutcome::from_outcome(&o) {
            Ok(r) => Report {
                phase,
                result: Ok(r),
            },
            Err(e) => fail(e),
        },
    }
}

/// Send the report; one too large for the server says so instead.
async fn publish_report(
    client: &Client,
    subjects: &Subjects,
    name: &str,
    report: Report,
) -> anyhow::Result<()> {
    let phase = report.phase;
    let body = serde_json::to_vec(&report).context("encode the report")?;
    let limit = client.server_info().max_payload;
    let body = if body.len() > limit {
        serde_json::to_vec(&Report {
            phase,
            result: Err(format!(
                "the report ({} bytes) exceeds the server's max_payload ({limit} bytes); \
                 raise max_payload or shorten the phase",
                body.len()
            )),
        })?
    } else {
        body
    };
    client
        .publish(subjects.report(name), body.into())
        .await
        .context("send the report")?;
    client.flush().await.context("send the report")?;
    Ok(())
}
