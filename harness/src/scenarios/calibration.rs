//! `calibration`: does the harness report a known delay, to the microsecond, on both paths its
//! scenarios use? Stand-ins inside the harness answer after a known delay: one with a reply (the
//! request path), one with a commit notice listing the event's id (the path of every event
//! scenario). For each path, a bare async-nats loop (`bare.rs`) first measures the round trip
//! through a stand-in with no delay: the floor without the harness. Then the harness's own phase
//! engine measures each stand-in at each configured delay (0 included), open loop. The error of
//! a percentile is `harness pX − delay − bare pX`, in µs, for p50 and p99, and must stay within
//! `tolerance_us`. Anything the harness adds inside a timed window (a sleep, a slow listener,
//! 300 µs of its own work) shows as error at every delay; a measurement that scales or clips
//! shows as error growing with the delay. At delay 0 the error is the harness's own overhead over
//! the bare loop (`harness_overhead_*`).
//!
//! Each path runs in `rounds` interleaved rounds (bare, then every delay, then again), so the
//! machine's bursts of noise fall on both sides of every error, and every round also measures
//! how late an idle thread wakes for its deadlines (`machine_wake`): the machine's own timing
//! noise, below which no p99 error means anything.

use super::responder::{Answer, Responder, ResponderSpec};
use super::{connect_publishers, filler, fixed_payload};
use crate::bare::{self, BarePath};
use crate::load::{self, Ids, PhaseSpec, Proof, Script};
use crate::results::ScenarioResult;
use crate::scenario::{add_histogram, BoxFuture, ScenarioContext, ScenarioDef};
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "calibration",
    title: "Calibration against known delays",
    description: "reply and commit-notice paths against in-harness stand-ins with known delays, p50 and p99 minus the delay and the bare async-nats floor, in µs",
    needs_services: false,
    check: crate::config::check_params::<Params>,
    run,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    /// The known delays, in ms (0: the harness's overhead over the bare loop).
    delays_ms: Vec<f64>,
    /// Rate, measured seconds and warm-up of every (path, delay) measurement.
    #[serde(flatten)]
    timing: super::Timing,
    /// Spin this long at the end of each wait (stand-in delay and sender pacing) for precision.
    spin_us: u64,
    /// Each path is measured in this many interleaved rounds (bare floor, then every delay),
    /// each with its share of the measured and warm-up messages.
    rounds: u64,
    /// For the calibration's own test only: µs the harness adds inside every timed window.
    #[serde(default)]
    harness_fault_us: Option<u64>,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.delays_ms.is_empty() && self.delays_ms.iter().all(|d| d.is_finite() && *d >= 0.0),
            "delays_ms must list delays ≥ 0"
        );
        self.timing.validate()
    }
}

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

/// A machine that wakes later than this at p99 gets a note: the p99 goal is 100 µs.
const MACHINE_NOISE_NOTE_US: f64 = 100.0;

/// The two paths, as metric keys.
const PATHS: [&str; 2] = ["reply", "notice"];

/// `harness pX − delay − bare pX` in µs, for p50 and p99.
pub fn errors_us(harness: &Histogram<u64>, bare: &Histogram<u64>, delay: Duration) -> (f64, f64) {
    let at = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            f64::NAN
        } else {
            h.value_at_quantile(q) as f64
        }
    };
    let d = delay.as_nanos() as f64;
    (
        (at(harness, 0.5) - d - at(bare, 0.5)) / 1e3,
        (at(harness, 0.99) - d - at(bare, 0.99)) / 1e3,
    )
}

/// Metric key of a delay: `0ms`, `0.5ms`, `10ms`.
fn delay_key(ms: f64) -> String {
    format!("{}ms", crate::report::view::trimmed(ms))
}

/// The harness's allowance over the bare loop at p50: 5 % of the bare p50, or 20 µs, whichever
/// is larger.
pub fn overhead_allowance_us(bare_p50_us: f64) -> f64 {
    (0.05 * bare_p50_us).max(20.0)
}

/// The calibration metrics from each (path, delay) error pair and each path's bare p50 (µs):
/// per pair, the p50 and p99 error; the worst absolute ones; at delay 0 the harness's overhead
/// over the bare loop, its allowance and how far over the allowance it is (≤ 0: within).
pub fn calibration_metrics(
    errors: &[(&str, f64, (f64, f64))],
    bare_p50_us: &[(&str, f64)],
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let (mut worst50, mut worst99) = (0.0f64, 0.0f64);
    for (path, ms, (e50, e99)) in errors {
        let key = delay_key(*ms);
        m.insert(format!("{path}.{key}.p50_error_us"), *e50);
        m.insert(format!("{path}.{key}.p99_error_us"), *e99);
        // A NaN (nothing measured) must not look like a small error.
        worst50 = worst50.max(if e50.is_finite() {
            e50.abs()
        } else {
            f64::INFINITY
        });
        worst99 = worst99.max(if e99.is_finite() {
            e99.abs()
        } else {
            f64::INFINITY
        });
        if *ms == 0.0 {
            m.insert(format!("harness_overhead_p50_us.{path}"), *e50);
            m.insert(format!("harness_overhead_p99_us.{path}"), *e99);
            if let Some((_, bare)) = bare_p50_us.iter().find(|(p, _)| p == path) {
                let allowance = overhead_allowance_us(*bare);
                m.insert(format!("bare_p50_us.{path}"), *bare);
                m.insert(
                    format!("harness_overhead_p50_pct.{path}"),
                    e50 / bare * 100.0,
                );
                m.insert(format!("harness_overhead_allowance_us.{path}"), allowance);
                m.insert(
                    format!("harness_overhead_over_allowance_us.{path}"),
                    if e50.is_finite() {
                        e50 - allowance
                    } else {
                        f64::INFINITY
                    },
                );
            }
        }
    }
    m.insert("max_abs_p50_error_us".into(), worst50);
    m.insert("max_abs_p99_error_us".into(), worst99);
    m
}

/// What a stand-in on `path` answers with: a reply (`reply`), or a commit notice listing the
/// event's id (`notice`), as the database service would.
fn stand_in_answer(path: &str) -> anyhow::Result<Answer> {
    match path {
        "reply" => Ok(Answer::Reply),
        "notice" => Ok(Answer::CommitNotice {
            subject: rosey_protocol::subjects::COMMITTED.into(),
        }),
        other => anyhow::bail!("no stand-in for the {other} path"),
    }
}

/// The floor of a path without the harness: a bare async-nats loop (`bare.rs`), `count` round
/// trips at `rate_per_s`, through an in-harness stand-in on `subject` that answers at once
/// (`path`: `reply` or `notice`). Calibration compares the harness with it; after the scenarios,
/// the run measures it at each rate a service scenario used (`floor + service cost`).
pub async fn bare_floor(
    nats_url: &str,
    subject: &str,
    path: &str,
    rate_per_s: f64,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let answer = stand_in_answer(path)?;
    let bare_path = match answer {
        Answer::Reply => BarePath::Request {
            subject: subject.to_owned(),
        },
        Answer::CommitNotice { .. } => BarePath::CommitNotice {
            subject: subject.to_owned(),
        },
    };
    let stand_in = Responder::start(
        nats_url,
        ResponderSpec {
            subject: subject.to_owned(),
            answer,
            delay: Duration::ZERO,
            service_time: Duration::ZERO,
            spin: Duration::ZERO,
            stall: None,
        },
    )
    .await?;
    let h = bare::measure(nats_url, bare_path, rate_per_s, count, timeout)
        .await
        .with_context(|| format!("bare async-nats loop on the {path} path at {rate_per_s}/s"));
    stand_in.stop().await?;
    h
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    let t = p.timing;
    let fault_us = p.harness_fault_us.unwrap_or(0);
    let spin = Duration::from_micros(p.spin_us);
    let mut result = ctx.result(t.load_info(1, Some(16)));
    let count = t.count();
    let warm = t.warmup_count();
    let drain = t.drain_timeout();
    let sender = connect_publishers(ctx, 1).await?;
    let payload = fixed_payload(Bytes::from(filler(16)));
    let accept: load::ReplyCheck = Arc::new(|_| true);
    let mut errors = Vec::new();
    let mut bare_p50 = Vec::new();
    let mut send_delay = crate::histogram::new_histogram();
    let mut headline: Option<Histogram<u64>> = None;
    // The machine's own timing noise, in every round beside the measurements.
    let mut wake = crate::histogram::new_histogram();
    ctx.refresh_sampled_processes().await;
    let sampling = ctx.sampler.begin_phase();
    let mut confirmed = 0;
    // Each path's measurements go in interleaved rounds (bare, then every delay, then again),
    // so a burst of the machine's noise falls on the bare floor and the harness alike instead of
    // on whichever happened to run during it.
    let rounds = p.rounds.max(1);
    let per_round = count.div_ceil(rounds).max(1);
    let warm_per_round = warm.div_ceil(rounds);
    for path in PATHS {
        let answer = stand_in_answer(path)?;
        let mut responders = Vec::new();
        for (k, ms) in p.delays_ms.iter().copied().enumerate() {
            let subject = format!("bench.calibration.{}.{path}.{k}", ctx.seed);
            let spec = ResponderSpec {
                subject: subject.clone(),
                answer: answer.clone(),
                delay: Duration::from_secs_f64(ms / 1e3),
                service_time: Duration::ZERO,
                spin,
                stall: None,
            };
            responders.push((subject, Responder::start(&ctx.nats_url, spec).await?));
        }
        let mut bare_h = crate::histogram::new_histogram();
        let mut harness_h: Vec<Histogram<u64>> = p
            .delays_ms
            .iter()
            .map(|_| crate::histogram::new_histogram())
            .collect();
        let outcome = async {
            for round in 0..rounds {
                // The floor of this path without the harness.
                let bar =
                    ctx.progress_bar(&format!("bare {path} {}/{rounds}", round + 1), per_round);
                let h = bare_floor(
                    &ctx.nats_url,
                    &format!("bench.calibration.{}.{path}.bare", ctx.seed),
                    path,
                    t.rate_per_s,
                    per_round,
                    drain,
                )
                .await;
                bar.finish_and_clear();
                bare_h.add(&h?).context("merge bare rounds")?;
                // An idle thread waiting for deadlines as the harness's threads do, no NATS.
                let h = bare::wake_lateness(t.rate_per_s, per_round, spin).await?;
                wake.add(&h).context("merge wake-up rounds")?;
                for (k, ms) in p.delays_ms.iter().copied().enumerate() {
                    let subject = responders[k].0.clone();
                    let phase = |tag: &str, n: u64| PhaseSpec {
                        id_prefix: ctx.id_prefix(tag),
                        rate_per_s: Some(t.rate_per_s),
                        count: n,
                        spin,
                        harness_fault: Duration::from_micros(fault_us),
                        ..PhaseSpec::new(
                            sender.clone(),
                            Script::uniform(subject.clone(), payload.clone()),
                            match path {
                                "reply" => Proof::Replies(accept.clone()),
                                _ => Proof::CommitNotices(Ids::Direct),
                            },
                            drain,
                        )
                    };
                    let key = delay_key(ms);
                    if warm_per_round > 0 {
                        let bar = ctx.progress_bar(&format!("warm {path} {key}"), warm_per_round);
                        load::run_phase(
                            &ctx.client,
                            phase(&format!("{path}-{k}-{round}-warmup"), warm_per_round),
                            &bar,
                        )
                        .await?;
                        bar.finish_and_clear();
                    }
                    let bar = ctx
                        .progress_bar(&format!("{path} {key} {}/{rounds}", round + 1), per_round);
                    let o = load::run_phase(
                        &ctx.client,
                        phase(&format!("{path}-{k}-{round}"), per_round),
                        &bar,
                    )
                    .await?;
                    bar.finish_and_clear();
                    let a = &mut result.accounting;
                    a.sent += o.record.sent;
                    a.committed += o.record.confirmed;
                    a.lost += o.record.lost();
                    a.duplicated += o.record.duplicated + o.duplicate_events;
                    confirmed += o.record.confirmed;
                    send_delay
                        .add(&o.send.send_delay)
                        .context("merge send delays")?;
                    harness_h[k]
                        .add(&o.record.latency)
                        .context("merge calibration rounds")?;
                }
            }
            anyhow::Ok(())
        }
        .await;
        for (_, r) in responders {
            r.stop().await?;
        }
        outcome?;
        if !bare_h.is_empty() {
            bare_p50.push((path, bare_h.value_at_quantile(0.5) as f64 / 1e3));
        }
        add_histogram(
            &mut result,
            &format!("bare.{path}"),
            &format!("bare async-nats loop, {path} path, no delay: the floor without the harness"),
            &bare_h,
        )?;
        for (k, ms) in p.delays_ms.iter().copied().enumerate() {
            let delay = Duration::from_secs_f64(ms / 1e3);
            let key = delay_key(ms);
            errors.push((path, ms, errors_us(&harness_h[k], &bare_h, delay)));
            add_histogram(
                &mut result,
                &format!("{path}.{key}"),
                &format!("{path} path, stand-in delay {key}, from the intended send time"),
                &harness_h[k],
            )?;
            if path == "reply" && headline.is_none() && ms > 0.0 {
                headline = Some(harness_h[k].clone());
            }
        }
    }
    add_histogram(
        &mut result,
        "machine_wake",
        "how late an idle thread woke for its deadlines, waiting as the harness's threads do, in every round: the machine's own timing noise",
        &wake,
    )?;
    let wake_p99_us = wake.value_at_quantile(0.99) as f64 / 1e3;
    result.metrics.insert(
        "machine_wake_p50_us".into(),
        wake.value_at_quantile(0.5) as f64 / 1e3,
    );
    result
        .metrics
        .insert("machine_wake_p99_us".into(), wake_p99_us);
    if wake_p99_us > MACHINE_NOISE_NOTE_US {
        result.notes.push(format!(
            "this machine itself woke {wake_p99_us:.0} µs late at p99 (an idle thread waiting for deadlines, no NATS): p99 errors of that size are the machine's noise, not the harness's"
        ));
    }
    let (resources, timeline) = sampling.end(confirmed);
    result.resources = resources;
    result.resource_timeline = timeline;
    if let Some(h) = headline {
        add_histogram(
            &mut result,
            "latency",
            "reply path at the first non-zero known delay, from the intended send time",
            &h,
        )?;
    }
    add_histogram(
        &mut result,
        "send_delay",
        "actual − intended send time over every calibration phase",
        &send_delay,
    )?;
    result
        .metrics
        .extend(calibration_metrics(&errors, &bare_p50));
    if fault_us > 0 {
        result.notes.push(format!(
            "harness_fault_us = {fault_us}: the harness added this inside every timed window on purpose"
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Tracker;
    use crate::results::Verdict;
    use crate::scenario::{check_targets, verdict};
    use std::time::Instant;

    fn targets() -> Vec<crate::config::TargetSpec> {
        let cfg =
            crate::config::BenchConfig::parse(include_str!("../../bench.toml"), "quick").unwrap();
        crate::config::ScenarioTable::from_table(&cfg.scenarios["calibration"])
            .unwrap()
            .targets
    }

    /// Simulated measurement: 2,000 open-loop messages at 200/s through a path of `path` (with
    /// deterministic jitter) plus `delay`, and `in_window` added before the harness records the
    /// proof (what a sleep, or 300 µs of the harness's own work, inside the timed window does).
    fn harness(delay: Duration, path: Duration, in_window: Duration) -> Histogram<u64> {
        let t0 = Instant::now();
        let tracker = Tracker::new("s.", 2_000, t0);
        for i in 0..2_000u64 {
            let intended = t0 + load::intended_offset(i, 200.0);
            let actual = intended + Duration::from_micros(5 + (i * 7) % 10);
            tracker.mark_sending(i, intended, actual);
            tracker.mark_sent();
            let answer = actual + path + Duration::from_micros((i * 13) % 30) + delay;
            tracker.confirm_index(i, answer + in_window);
        }
        tracker.finish().latency
    }

    /// The bare loop over the same path: the same jitter, timed from the actual send.
    fn bare_floor(path: Duration) -> Histogram<u64> {
        let mut h = crate::histogram::new_histogram();
        for i in 0..2_000u64 {
            crate::histogram::record_duration(&mut h, path + Duration::from_micros((i * 13) % 30));
        }
        h
    }

    fn judge(in_window: Duration) -> (Verdict, BTreeMap<String, f64>) {
        let path = Duration::from_micros(150);
        let bare = [("reply", 165.0), ("notice", 165.0)];
        let mut errors = Vec::new();
        for p in PATHS {
            for ms in [0.0, 0.5, 2.0, 10.0] {
                let d = Duration::from_secs_f64(ms / 1e3);
                errors.push((
                    p,
                    ms,
                    errors_us(&harness(d, path, in_window), &bare_floor(path), d),
                ));
            }
        }
        let mut result = crate::scenario::tests_support::empty_result();
        result.metrics = calibration_metrics(&errors, &bare);
        result.targets = check_targets(&targets(), &result);
        (verdict(&result), result.metrics)
    }

    #[test]
    fn an_honest_harness_passes_within_microseconds() {
        let (v, m) = judge(Duration::ZERO);
        assert_eq!(v, Verdict::Pass, "{m:?}");
        assert!(m["max_abs_p50_error_us"] < 20.0, "{m:?}");
        assert!(m["harness_overhead_p50_us.reply"].abs() < 20.0);
        assert!(
            m["harness_overhead_over_allowance_us.notice"] <= 0.0,
            "{m:?}"
        );
        assert_eq!(overhead_allowance_us(100.0), 20.0);
        assert_eq!(overhead_allowance_us(1000.0), 50.0);
    }

    #[test]
    fn three_hundred_microseconds_inside_the_timed_window_fail() {
        let (v, m) = judge(Duration::from_micros(300));
        assert_eq!(v, Verdict::Fail, "{m:?}");
        assert!((m["notice.2ms.p50_error_us"] - 300.0).abs() < 20.0, "{m:?}");
        assert!((m["harness_overhead_p50_us.notice"] - 300.0).abs() < 20.0);
        // The seed's 10 ms sleep, all the more.
        assert_eq!(judge(Duration::from_millis(10)).0, Verdict::Fail);
    }

    #[test]
    fn nothing_measured_is_not_a_small_error() {
        let empty = crate::histogram::new_histogram();
        let e = errors_us(
            &empty,
            &bare_floor(Duration::from_micros(100)),
            Duration::ZERO,
        );
        let m = calibration_metrics(&[("reply", 0.5, e)], &[]);
        assert!(m["max_abs_p50_error_us"].is_infinite());
        assert_eq!(delay_key(0.5), "0.5ms");
        assert_eq!(delay_key(10.0), "10ms");
    }
}
