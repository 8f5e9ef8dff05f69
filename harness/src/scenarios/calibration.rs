//! `calibration`: the harness measures a responder inside itself whose delay is known. Two
//! responders run side by side with interleaved open-loop requests: one adds the known delay,
//! one answers at once (the floor of this path). The reported p50 must be within the configured
//! tolerance of the delay (absolute check: catches anything added to the timed window, such as
//! the seed's 10 ms sleep), and p50 minus the floor must match the delay too (linearity check:
//! catches a measurement that scales or clips).

use super::responder::{Responder, ResponderSpec};
use super::{connect_publishers, filler, fixed_payload};
use crate::load::{self, message_count, DrainUntil, PhaseSpec, Proof, Script, SendVia, Taps};
use crate::results::{LoadInfo, ScenarioResult};
use crate::scenario::{add_histogram, fill_from_phase, BoxFuture, ScenarioContext, ScenarioDef};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const DEF: ScenarioDef = ScenarioDef {
    name: "calibration",
    title: "Calibration against a known delay",
    description: "request→reply latency against an in-harness responder with a known injected delay; reported p50 must match it",
    needs_services: false,
    run,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The responder's injected delay.
    delay_ms: f64,
    /// Requests per second to each of the two responders.
    rate_per_s: f64,
    duration_s: f64,
    #[serde(default)]
    warmup_s: f64,
    /// Spin this long at the end of each wait (responder delay and sender pacing) for precision.
    #[serde(default)]
    spin_us: u64,
    #[serde(default = "default_drain")]
    drain_timeout_s: f64,
}

fn default_drain() -> f64 {
    5.0
}

fn run(ctx: &ScenarioContext) -> BoxFuture<'_, anyhow::Result<ScenarioResult>> {
    Box::pin(measure(ctx))
}

/// The calibration figures from the two p50s (nanoseconds) and the injected delay.
pub fn calibration_metrics(
    delayed_p50_ns: u64,
    floor_p50_ns: u64,
    delay: Duration,
) -> BTreeMap<String, f64> {
    let d = delay.as_nanos() as f64;
    let measured = delayed_p50_ns as f64;
    let floor = floor_p50_ns as f64;
    let error = (measured - d) / d * 100.0;
    let corrected = (measured - floor - d) / d * 100.0;
    BTreeMap::from([
        ("injected_delay_ms".to_owned(), d / 1e6),
        ("measured_p50_ms".to_owned(), measured / 1e6),
        ("floor_p50_ms".to_owned(), floor / 1e6),
        ("p50_error_pct".to_owned(), error),
        ("p50_error_abs_pct".to_owned(), error.abs()),
        ("floor_corrected_error_pct".to_owned(), corrected),
        ("floor_corrected_error_abs_pct".to_owned(), corrected.abs()),
    ])
}

async fn measure(ctx: &ScenarioContext) -> anyhow::Result<ScenarioResult> {
    let p: Params = ctx.params()?;
    anyhow::ensure!(
        p.delay_ms > 0.0 && p.rate_per_s > 0.0 && p.duration_s > 0.0,
        "delay_ms, rate_per_s and duration_s must be positive"
    );
    anyhow::ensure!(
        p.rate_per_s * p.delay_ms / 1e3 < 0.5,
        "rate_per_s × delay must stay below 0.5 so the one-at-a-time responder never queues"
    );
    let delay = Duration::from_secs_f64(p.delay_ms / 1e3);
    let spin = Duration::from_micros(p.spin_us);
    let mut result = ctx.result(LoadInfo {
        model: "open_loop".into(),
        target_rate_per_s: Some(p.rate_per_s * 2.0),
        duration_s: p.duration_s,
        warmup_s: p.warmup_s,
        concurrency: Some(2),
        payload_bytes: Some(16),
    });
    let delayed_subject = format!("bench.calibration.{}.delayed", ctx.seed);
    let floor_subject = format!("bench.calibration.{}.floor", ctx.seed);
    let delayed = Responder::start(
        &ctx.nats_url,
        ResponderSpec {
            subject: delayed_subject.clone(),
            delay,
            spin,
            stall: None,
        },
    )
    .await?;
    let floor = Responder::start(
        &ctx.nats_url,
        ResponderSpec {
            subject: floor_subject.clone(),
            delay: Duration::ZERO,
            spin,
            stall: None,
        },
    )
    .await?;
    let senders = connect_publishers(ctx, 2).await?;
    let payload = fixed_payload(Bytes::from(filler(16)));
    let accept: load::ReplyCheck = Arc::new(|_| true);
    let drain = Duration::from_secs_f64(p.drain_timeout_s);
    let phase = |name: &str, subject: &str, sender: usize, count: u64| PhaseSpec {
        id_prefix: ctx.id_prefix(name),
        rate_per_s: Some(p.rate_per_s),
        count,
        burst_size: 1,
        senders: vec![senders[sender].clone()],
        script: Script::uniform(subject, payload.clone()),
        via: SendVia::Core,
        proof: Proof::Replies(accept.clone()),
        taps: Taps::none(),
        drain_timeout: drain,
        drain_until: DrainUntil::All,
        spin,
    };
    if p.warmup_s > 0.0 {
        let n = message_count(p.rate_per_s, p.warmup_s);
        let (b1, b2) = (
            ctx.progress_bar("warm-up d", n),
            ctx.progress_bar("warm-up 0", n),
        );
        let (a, b) = tokio::join!(
            load::run_phase(
                &ctx.client,
                phase("warmup-delayed", &delayed_subject, 0, n),
                &b1
            ),
            load::run_phase(
                &ctx.client,
                phase("warmup-floor", &floor_subject, 1, n),
                &b2
            )
        );
        b1.finish_and_clear();
        b2.finish_and_clear();
        a?;
        b?;
    }
    let n = message_count(p.rate_per_s, p.duration_s);
    let (b1, b2) = (ctx.progress_bar("delayed", n), ctx.progress_bar("floor", n));
    ctx.refresh_sampled_processes().await;
    let sampling = ctx.sampler.begin_phase();
    let (d, f) = tokio::join!(
        load::run_phase(&ctx.client, phase("delayed", &delayed_subject, 0, n), &b1),
        load::run_phase(&ctx.client, phase("floor", &floor_subject, 1, n), &b2)
    );
    b1.finish_and_clear();
    b2.finish_and_clear();
    let (d, f) = (d?, f?);
    let (resources, timeline) = sampling.end(d.record.confirmed + f.record.confirmed);
    result.resources = resources;
    result.resource_timeline = timeline;
    let delayed_stats = delayed.stop().await?;
    let floor_stats = floor.stop().await?;

    fill_from_phase(
        ctx,
        &mut result,
        &d,
        "request → reply with the injected delay, from the intended send time",
    )?;
    add_histogram(
        &mut result,
        "floor",
        "request → reply with no delay (same path, same time)",
        &f.record.latency,
    )?;
    let a = &mut result.accounting;
    a.sent += f.record.sent;
    a.committed += f.record.confirmed;
    a.lost += f.record.lost();
    a.duplicated += f.record.duplicated;
    let p50 = |h: &hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(0.5)
        }
    };
    result.metrics.extend(calibration_metrics(
        p50(&d.record.latency),
        p50(&f.record.latency),
        delay,
    ));
    result.metrics.insert(
        "responder_handled".into(),
        (delayed_stats.handled + floor_stats.handled) as f64,
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Origin, Tracker};
    use crate::scenario::{check_targets, verdict};
    use std::time::Instant;

    fn table() -> crate::config::ScenarioTable {
        let cfg =
            crate::config::BenchConfig::parse(include_str!("../../bench.toml"), "quick").unwrap();
        crate::config::ScenarioTable::from_table(&cfg.scenarios["calibration"]).unwrap()
    }

    /// The committed targets of this scenario (quick profile).
    fn targets() -> Vec<crate::config::TargetSpec> {
        table().targets
    }

    /// The committed injected delay.
    fn configured_delay() -> Duration {
        let p: Params = table().params().unwrap();
        Duration::from_secs_f64(p.delay_ms / 1e3)
    }

    /// Simulated run: open-loop requests at 20/s, a reply after `path` (network + client) plus
    /// the responder's `delay`, and `in_window` added between the reply and the moment the
    /// harness records it (what a sleep inside the timed window does). Returns the p50.
    fn simulate(delay: Duration, path: Duration, in_window: Duration, origin: Origin) -> u64 {
        let t0 = Instant::now();
        let tracker = Tracker::with_origin("s.", 100, t0, origin);
        for i in 0..100u64 {
            let intended = t0 + load::intended_offset(i, 20.0);
            // Small, varying send delay and path jitter.
            let actual = intended + Duration::from_micros(20 + (i * 7) % 40);
            tracker.mark_sending(i, intended, actual);
            tracker.mark_sent();
            let reply = actual + path + Duration::from_micros((i * 13) % 30) + delay;
            tracker.confirm_index(i, reply + in_window);
        }
        let r = tracker.finish();
        r.latency.value_at_quantile(0.5)
    }

    fn judge(delayed_p50: u64, floor_p50: u64, delay: Duration) -> crate::results::Verdict {
        let mut result = crate::scenario::tests_support::empty_result();
        result.metrics = calibration_metrics(delayed_p50, floor_p50, delay);
        result.targets = check_targets(&targets(), &result);
        verdict(&result)
    }

    #[test]
    fn honest_measurement_passes() {
        let delay = configured_delay();
        let path = Duration::from_micros(150);
        let d = simulate(delay, path, Duration::ZERO, Origin::Intended);
        let f = simulate(Duration::ZERO, path, Duration::ZERO, Origin::Intended);
        assert_eq!(judge(d, f, delay), crate::results::Verdict::Pass);
    }

    #[test]
    fn a_sleep_inside_the_timed_window_fails_calibration() {
        // The seed's benchmark slept 10 ms between its two timestamps.
        let delay = configured_delay();
        let path = Duration::from_micros(150);
        let sleep = Duration::from_millis(10);
        let d = simulate(delay, path, sleep, Origin::Intended);
        let f = simulate(Duration::ZERO, path, sleep, Origin::Intended);
        assert_eq!(judge(d, f, delay), crate::results::Verdict::Fail);
        // A sleep of a tenth of the delay is caught by the absolute check too.
        let small = delay / 10;
        let d = simulate(delay, path, small, Origin::Intended);
        let f = simulate(Duration::ZERO, path, small, Origin::Intended);
        assert_eq!(judge(d, f, delay), crate::results::Verdict::Fail);
    }

    #[test]
    fn metrics_are_signed_and_absolute() {
        let m = calibration_metrics(9_500_000, 100_000, Duration::from_millis(10));
        assert!((m["p50_error_pct"] + 5.0).abs() < 1e-9);
        assert!((m["p50_error_abs_pct"] - 5.0).abs() < 1e-9);
        assert!((m["floor_corrected_error_pct"] + 6.0).abs() < 1e-9);
    }
}
