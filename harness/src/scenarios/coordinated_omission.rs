//! `coordinated_omission`: proves that the harness's latency counts a stall for every message it
//! delayed. Two in-harness responders each stall once, mid-run, for a known time. One is driven
//! open loop with latency from the intended send time (how every scenario measures: the
//! headline `latency`); the other by a naive closed loop that waits for each reply and times
//! from the actual send (`naive`, how the seed measured). The corrected tail must show the stall
//! for the messages it delayed, while the naive measure of the same stall shows one slow sample
//! and a clean p99.

use super::responder::{Answer, Responder, ResponderSpec};
use super::{connect_publishers, filler, fixed_payload};
use crate::load::{self, message_count, PhaseSpec, Proof, Schedule, Script};
use crate::record::{Origin, Tracker};
use crate::results::{LoadInfo, ScenarioResult};
use crate::scenario::{add_histogram, fill_from_phase, BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEF: ScenarioDef = ScenarioDef {
    name: "coordinated_omission",
    title: "Coordinated omission check",
    description: "open-loop vs naive closed-loop latency against a responder that stalls once for a known time",
    needs_services: false,
    check: crate::config::check_params::<Params>,
    run,
};

/// No warm-up: the stall is what is measured, not a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Params {
    rate_per_s: f64,
    duration_s: f64,
    stall_ms: f64,
    drain_timeout_s: f64,
}

impl crate::config::ScenarioParams for Params {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate_per_s > 0.0 && self.duration_s > 0.0 && self.stall_ms > 0.0,
            "rate_per_s, duration_s and stall_ms must be positive"
        );
        Ok(())
    }
}

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

/// The figures the targets judge: does the corrected tail show the stall for every message it
/// delayed, and does the naive measure hide it?
pub fn co_metrics(
    corrected: &Histogram<u64>,
    naive: &Histogram<u64>,
    stall: Duration,
    rate_per_s: f64,
) -> BTreeMap<String, f64> {
    let s = stall.as_nanos() as f64;
    let half = u64::try_from(stall.as_nanos() / 2).unwrap_or(u64::MAX);
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64
        }
    };
    let over_half = |h: &Histogram<u64>| {
        h.iter_recorded()
            .filter(|v| v.value_iterated_to() >= half)
            .map(|v| v.count_at_value())
            .sum::<u64>()
    };
    // Messages intended during the first half of the stall waited at least half of it.
    let expected_delayed = (rate_per_s * stall.as_secs_f64() / 2.0).max(1.0);
    BTreeMap::from([
        ("stall_ms".to_owned(), s / 1e6),
        ("corrected_p99_ms".to_owned(), q(corrected, 0.99) / 1e6),
        ("corrected_p999_ms".to_owned(), q(corrected, 0.999) / 1e6),
        ("corrected_max_ms".to_owned(), corrected.max() as f64 / 1e6),
        ("naive_p99_ms".to_owned(), q(naive, 0.99) / 1e6),
        ("naive_max_ms".to_owned(), naive.max() as f64 / 1e6),
        (
            "corrected_max_over_stall_ratio".to_owned(),
            corrected.max() as f64 / s,
        ),
        (
            "corrected_delayed_samples".to_owned(),
            over_half(corrected) as f64,
        ),
        (
            "corrected_delayed_over_expected_ratio".to_owned(),
            over_half(corrected) as f64 / expected_delayed,
        ),
        ("naive_delayed_samples".to_owned(), over_half(naive) as f64),
        (
            "naive_max_over_stall_ratio".to_owned(),
            naive.max() as f64 / s,
        ),
        ("naive_p99_over_stall_ratio".to_owned(), q(naive, 0.99) / s),
    ])
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    let count = message_count(p.rate_per_s, p.duration_s);
    anyhow::ensure!(
        count >= 200,
        "needs at least 200 messages so one slow sample stays out of p99 (got {count})"
    );
    let stall = Duration::from_secs_f64(p.stall_ms / 1e3);
    anyhow::ensure!(
        stall.as_secs_f64() * 4.0 < p.duration_s,
        "the stall must fit well inside the run"
    );
    let mut result = ctx.result(LoadInfo {
        model: "open_loop".into(),
        target_rate_per_s: Some(p.rate_per_s),
        duration_s: p.duration_s,
        warmup_s: 0.0,
        concurrency: Some(1),
        payload_bytes: Some(16),
    });
    let stall_at = Some((count / 2, stall));
    let open_subject = format!("bench.co.{}.open", ctx.seed);
    let naive_subject = format!("bench.co.{}.naive", ctx.seed);
    let open = Responder::start(
        &ctx.nats_url,
        ResponderSpec {
            subject: open_subject.clone(),
            answer: Answer::Reply,
            delay: Duration::ZERO,
            service_time: Duration::ZERO,
            spin: Duration::ZERO,
            stall: stall_at,
        },
    )
    .await?;
    let naive = Responder::start(
        &ctx.nats_url,
        ResponderSpec {
            subject: naive_subject.clone(),
            answer: Answer::Reply,
            delay: Duration::ZERO,
            service_time: Duration::ZERO,
            spin: Duration::ZERO,
            stall: stall_at,
        },
    )
    .await?;
    let senders = connect_publishers(ctx, 1).await?;
    // The naive loop's connection lives on the main runtime: the publishers' thread is busy
    // pacing the open loop at the same time.
    let naive_client = load::connect(&ctx.nats_url, &format!("bench-{}-naive", ctx.name)).await?;
    let payload = fixed_payload(Bytes::from(filler(16)));
    let accept: load::ReplyCheck = Arc::new(|_| true);

    let (b1, b2) = (
        ctx.progress_bar("open loop", count),
        ctx.progress_bar("naive", count),
    );
    b2.set_length(count);
    // The naive loop starts with the open one; both responders stall at their middle message.
    let naive_tracker = Arc::new(Tracker::with_origin(
        ctx.id_prefix("naive"),
        count as usize,
        Instant::now(),
        Origin::Actual,
    ));
    let naive_schedule = Schedule {
        start: Instant::now() + Duration::from_millis(20),
        rate_per_s: Some(p.rate_per_s),
        count,
        burst_size: 1,
    };
    let sampling = ctx.sampler.begin_phase();
    let (o, n) = tokio::join!(
        load::run_phase(
            &ctx.client,
            PhaseSpec {
                id_prefix: ctx.id_prefix("open"),
                rate_per_s: Some(p.rate_per_s),
                count,
                ..PhaseSpec::new(
                    senders,
                    Script::uniform(open_subject, payload.clone()),
                    Proof::Replies(accept),
                    Duration::from_secs_f64(p.drain_timeout_s),
                )
            },
            &b1,
        ),
        load::run_closed_loop(
            &naive_client,
            &naive_subject,
            &naive_tracker,
            naive_schedule,
            &payload,
            Duration::from_secs_f64(p.drain_timeout_s),
            &b2
        )
    );
    b1.finish_and_clear();
    b2.finish_and_clear();
    let (o, naive_send) = (o?, n?);
    let naive_record = naive_tracker.finish();
    let (resources, timeline) = sampling.end(o.record.confirmed + naive_record.confirmed);
    result.resources = resources;
    result.resource_timeline = timeline;
    let open_stats = open.stop().await?;
    let naive_stats = naive.stop().await?;
    anyhow::ensure!(
        open_stats.stalled_at.is_some(),
        "the open-loop responder never reached its stall"
    );
    anyhow::ensure!(
        naive_stats.stalled_at.is_some(),
        "the naive responder never reached its stall"
    );

    fill_from_phase(
        ctx,
        &mut result,
        &o,
        "request → reply from the intended send time (open loop, corrected)",
    )?;
    add_histogram(
        &mut result,
        "naive",
        "request → reply from the actual send time, closed loop (coordinated omission)",
        &naive_record.latency,
    )?;
    add_histogram(
        &mut result,
        "send_delay.naive",
        "how far the naive loop fell behind its schedule",
        &naive_send.send_delay,
    )?;
    let a = &mut result.accounting;
    a.sent += naive_record.sent;
    a.committed += naive_record.confirmed;
    a.lost += naive_record.lost();
    a.duplicated += naive_record.duplicated;
    result.notes.push(
        "`latency` is open loop from the intended send time; `naive` is a closed loop (one request \
         at a time, timed from the actual send) run against an identical responder at the same time"
            .into(),
    );
    result.metrics.extend(co_metrics(
        &o.record.latency,
        &naive_record.latency,
        stall,
        p.rate_per_s,
    ));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Verdict;
    use crate::scenario::{check_targets, verdict};

    fn table() -> crate::config::ScenarioTable {
        let cfg =
            crate::config::BenchConfig::parse(include_str!("../../bench.toml"), "quick").unwrap();
        crate::config::ScenarioTable::from_table(&cfg.scenarios["coordinated_omission"]).unwrap()
    }

    fn targets() -> Vec<crate::config::TargetSpec> {
        table().targets
    }

    /// Rate, message count and stall of the committed quick profile.
    fn shape() -> (f64, u64, Duration) {
        let p: Params = table().params().unwrap();
        let n = message_count(p.rate_per_s, p.duration_s);
        (p.rate_per_s, n, Duration::from_secs_f64(p.stall_ms / 1e3))
    }

    /// A simulated clock and a one-at-a-time responder (100 µs per request, one stall at the
    /// middle request, 50 µs each way on the wire). `closed_loop`: the sender waits for each
    /// reply before the next send (never before its intended time). Latencies go through the
    /// real tracker with the given origin.
    fn simulate(closed_loop: bool, origin: Origin) -> Histogram<u64> {
        simulate_with_sender_sleep(closed_loop, origin, Duration::ZERO)
    }

    /// `sender_sleep`: the sender sleeps this long after each publish before it may send the
    /// next one (the seed's `sleep(0.01)` inside its timed loop).
    fn simulate_with_sender_sleep(
        closed_loop: bool,
        origin: Origin,
        sender_sleep: Duration,
    ) -> Histogram<u64> {
        let (rate, n, stall) = shape();
        let t0 = Instant::now();
        let tracker = Tracker::with_origin("sim.", n as usize, t0, origin);
        let wire = Duration::from_micros(50);
        let mut responder_free = t0;
        let mut last_reply = t0;
        let mut sender_free = t0;
        for i in 0..n {
            let intended = t0 + load::intended_offset(i, rate);
            let ready = intended.max(sender_free);
            let actual = if closed_loop {
                ready.max(last_reply)
            } else {
                ready
            };
            sender_free = actual + sender_sleep;
            let start = (actual + wire).max(responder_free);
            let service = if i == n / 2 {
                stall
            } else {
                Duration::from_micros(100)
            };
            responder_free = start + service;
            let reply = responder_free + wire;
            last_reply = reply;
            tracker.mark_sending(i, intended, actual);
            tracker.mark_sent();
            tracker.confirm_index(i, reply);
        }
        tracker.finish().latency
    }

    fn judge(corrected: &Histogram<u64>, naive: &Histogram<u64>) -> Verdict {
        let (rate, _, stall) = shape();
        let mut result = crate::scenario::tests_support::empty_result();
        result.metrics = co_metrics(corrected, naive, stall, rate);
        result.targets = check_targets(&targets(), &result);
        verdict(&result)
    }

    #[test]
    fn open_loop_from_intended_time_shows_the_stall_and_passes() {
        let corrected = simulate(false, Origin::Intended);
        let naive = simulate(true, Origin::Actual);
        let (rate, _, stall) = shape();
        let m = co_metrics(&corrected, &naive, stall, rate);
        let expected = rate * stall.as_secs_f64() / 2.0;
        assert!(m["corrected_delayed_samples"] >= expected - 1.0, "{m:?}");
        assert_eq!(m["naive_delayed_samples"], 1.0, "{m:?}");
        assert_eq!(judge(&corrected, &naive), Verdict::Pass, "{m:?}");
    }

    #[test]
    fn intended_time_corrects_even_a_blocked_sender() {
        // wrk2's correction: a sender that fell behind still charges the wait to each message.
        let corrected = simulate(true, Origin::Intended);
        let naive = simulate(true, Origin::Actual);
        assert_eq!(judge(&corrected, &naive), Verdict::Pass);
    }

    #[test]
    fn measuring_from_the_actual_send_time_fails_the_check() {
        // If the harness timed from the actual send with a sender that waits (the naive way),
        // the "corrected" tail would show one slow sample and the scenario must fail.
        let as_if_corrected = simulate(true, Origin::Actual);
        let naive = simulate(true, Origin::Actual);
        assert_eq!(judge(&as_if_corrected, &naive), Verdict::Fail);
    }

    #[test]
    fn a_sleep_inside_the_timed_loop_fails_the_check() {
        // A sender that sleeps 10 ms per message (the seed's loop) cannot keep a 4 ms schedule:
        // measured honestly from the intended time, far more messages are delayed than the stall
        // explains, so the corrected tail no longer shows exactly the known stall.
        let corrected =
            simulate_with_sender_sleep(false, Origin::Intended, Duration::from_millis(10));
        let naive = simulate(true, Origin::Actual);
        assert_eq!(judge(&corrected, &naive), Verdict::Fail);
    }

    #[test]
    fn a_naive_measure_that_shows_the_stall_in_p99_fails_the_check() {
        // The check is two-sided: if the naive histogram were (wrongly) corrected too, the
        // scenario would not demonstrate anything and must fail.
        let corrected = simulate(false, Origin::Intended);
        assert_eq!(judge(&corrected, &corrected), Verdict::Fail);
    }
}
