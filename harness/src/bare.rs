//! The bare NATS floor: the same round trip as a harness phase, made by the smallest client that
//! can make it, so the harness can measure its own cost in the same run (harness/METHODOLOGY.md,
//! "Self-checks").
//!
//! One connection on its own OS thread and single-threaded runtime, one message outstanding at
//! a time: publish, wait for the answer, record the time between the two instants. No tracker,
//! no ids beyond the one the answer must carry, no per-second intervals, no schedule
//! bookkeeping: what the harness's phase engine adds on top of this is its overhead. The pacing
//! between messages (a thread sleep to the next slot of `rate_per_s`) lies outside every timed
//! interval; a slot that is already past is taken at once.

use crate::histogram;
use crate::load::{check_rate, ensure_subscribed, intended_offset, wait_until};
use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rosey_protocol::{db::CommitNotice, headers, subjects};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The machine's own timing floor: a thread that does nothing but wait for `count` deadlines
/// `1 / rate_per_s` apart, exactly as the harness's senders and stand-ins wait (timer slack 1 ns,
/// sleep, then spin for the last `spin`), records by how much it missed each one. No NATS, no
/// runtime, no other work: what it shows (at p99, on a shared virtual machine, often
/// milliseconds) is the scheduling noise every thread of a run is subject to, and the precision
/// below which no p99 of the run can be told from noise.
pub async fn wake_lateness(
    rate_per_s: f64,
    count: u64,
    spin: Duration,
) -> anyhow::Result<Histogram<u64>> {
    check_rate(rate_per_s)?;
    let never = AtomicBool::new(false);
    tokio::task::spawn_blocking(move || wake_loop(rate_per_s, spin, Some(count), &never))
        .await
        .context("the wake-lateness probe panicked")
}

/// [`wake_lateness`] running beside something else until [`WakeProbe::finish`]: how late an
/// idle thread woke for deadlines while it ran (a scenario's senders are subject to the same).
pub struct WakeProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Histogram<u64>>,
}

impl WakeProbe {
    /// Deadlines `1 / rate_per_s` apart, slept to without a spin (as most senders wait).
    pub fn start(rate_per_s: f64) -> anyhow::Result<WakeProbe> {
        check_rate(rate_per_s)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-wake-probe".into())
            .spawn(move || wake_loop(rate_per_s, Duration::ZERO, None, &flag))
            .context("spawn the wake-up probe")?;
        Ok(WakeProbe { stop, thread })
    }

    /// Stop it; the lateness of every deadline it waited for.
    pub async fn finish(self) -> anyhow::Result<Histogram<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("join the wake-up probe")?
            .map_err(|_| anyhow::anyhow!("the wake-up probe panicked"))
    }
}

fn wake_loop(
    rate_per_s: f64,
    spin: Duration,
    count: Option<u64>,
    stop: &AtomicBool,
) -> Histogram<u64> {
    crate::load::precise_timers();
    let mut h = histogram::new_histogram();
    let start = Instant::now() + Duration::from_millis(1);
    let mut i = 0;
    while count.is_none_or(|n| i < n) && !stop.load(Ordering::Relaxed) {
        let due = start + intended_offset(i, rate_per_s);
        wait_until(due, spin);
        histogram::record_duration(&mut h, due.elapsed());
        i += 1;
    }
    h
}

/// The round trip a bare loop makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarePath {
    /// A request on `subject`, timed to its reply.
    Request { subject: String },
    /// An event on `subject` with an event id, timed to the commit notice that lists the id.
    CommitNotice { subject: String },
}

/// `count` round trips on `path` at most `rate_per_s` a second; one latency each. Fails if an
/// answer does not come within `timeout`.
pub async fn measure(
    url: &str,
    path: BarePath,
    rate_per_s: f64,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Histogram<u64>> {
    check_rate(rate_per_s)?;
    let url = url.to_owned();
    let thread = std::thread::Builder::new()
        .name("bench-bare-loop".into())
        .spawn(move || -> anyhow::Result<Histogram<u64>> {
            crate::load::precise_timers();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("bare loop runtime")?;
            rt.block_on(run(&url, &path, rate_per_s, count, timeout))
        })
        .context("spawn the bare loop")?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("join the bare loop")?
        .map_err(|_| anyhow::anyhow!("the bare loop panicked"))?
}

async fn run(
    url: &str,
    path: &BarePath,
    rate_per_s: f64,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let client = crate::load::connect(url, "bench-bare-loop").await?;
    let mut notices = match path {
        BarePath::CommitNotice { .. } => {
            let sub = client
                .subscribe(subjects::COMMITTED)
                .await
                .context("bare loop: subscribe to commit notices")?;
            ensure_subscribed(&client).await?;
            Some(sub)
        }
        BarePath::Request { .. } => None,
    };
    let payload = Bytes::from_static(b"{}");
    let mut h = histogram::new_histogram();
    let start = Instant::now();
    for i in 0..count {
        // Pacing, outside the timed interval.
        wait_until(start + intended_offset(i, rate_per_s), Duration::ZERO);
        let took = match (path, notices.as_mut()) {
            (BarePath::Request { subject }, _) => {
                let t0 = Instant::now();
                tokio::time::timeout(timeout, client.request(subject.clone(), payload.clone()))
                    .await
                    .context("bare loop: no reply in time")?
                    .context("bare loop: request")?;
                t0.elapsed()
            }
            (BarePath::CommitNotice { subject }, Some(sub)) => {
                let id = format!("bare.{i}");
                let mut h = async_nats::HeaderMap::new();
                h.insert(headers::EVENT_ID, id.as_str());
                let t0 = Instant::now();
                client
                    .publish_with_headers(subject.clone(), h, payload.clone())
                    .await
                    .context("bare loop: publish")?;
                let wait = async {
                    while let Some(m) = sub.next().await {
                        // The arrival instant, before the notice is parsed.
                        let at = Instant::now();
                        let listed = serde_json::from_slice::<CommitNotice>(&m.payload)
                            .is_ok_and(|n| n.ids.contains(&id));
                        if listed {
                            return Ok(at);
                        }
                    }
                    anyhow::bail!("bare loop: the notice subscription ended")
                };
                let at = tokio::time::timeout(timeout, wait)
                    .await
                    .context("bare loop: no commit notice in time")??;
                at.saturating_duration_since(t0)
            }
            (BarePath::CommitNotice { .. }, None) => unreachable!("subscribed above"),
        };
        histogram::record_duration(&mut h, took);
    }
    let _ = client.drain().await;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_lateness_records_every_deadline() {
        let h = wake_lateness(2000.0, 50, Duration::from_micros(100))
            .await
            .unwrap();
        assert_eq!(h.len(), 50);
        assert!(wake_lateness(0.0, 1, Duration::ZERO).await.is_err());
    }

    #[tokio::test]
    async fn a_wake_probe_records_until_it_is_finished() {
        let probe = WakeProbe::start(1000.0).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let h = probe.finish().await.unwrap();
        // About 100 deadlines; a loaded machine may fall behind, never ahead.
        assert!((10..=110).contains(&h.len()), "{}", h.len());
        assert!(WakeProbe::start(f64::NAN).is_err());
    }
}
