//! A fault inside a measured phase, as the results show it: the fault with its times
//! (`faults`, shaded on the report's charts), the phase cut into *before*, *during* and *after*
//! windows (`windows`, and `<window>.p50_ms` / `.p99_ms` / `.lost` / `.throughput_per_s`
//! metrics), and how long after the fault the p99 of the messages sent was back near the
//! *before* p99 (`p99_recovered_after_s`). The cluster faults and the restarts of the database
//! service and of nats-server all report through [`record`].

use crate::histogram::{Interval, PackedInterval};
use crate::load::PhaseOutcome;
use crate::record::Unconfirmed;
use crate::results::{PhaseWindow, ScenarioResult};
use std::collections::HashSet;
use std::time::Duration;

/// Fills `result`'s windows and recovery from `outcome`, for a fault from `span.0` to `span.1`
/// (offsets from the phase start; `None`: never lifted, so it lasts to the end). `recovered`:
/// the indices of messages committed without a proof (not lost). The caller pushes the
/// [`crate::results::FaultRecord`] itself.
pub fn record(
    result: &mut ScenarioResult,
    outcome: &PhaseOutcome,
    span: (Duration, Option<Duration>),
    recovered: &HashSet<u64>,
    recovered_p99_factor: f64,
) {
    let unpack = |v: &[PackedInterval]| -> Vec<Interval> { v.iter().map(|i| i.unpack()).collect() };
    let by_confirm = unpack(&outcome.record.intervals);
    let by_intended = unpack(&outcome.record.by_intended);
    let lost: Vec<Unconfirmed> = outcome
        .record
        .unconfirmed
        .iter()
        .filter(|u| !recovered.contains(&u.index))
        .copied()
        .collect();
    let end = outcome.elapsed;
    let (from, to) = (span.0, span.1.unwrap_or(end));
    result.windows = windows(&by_confirm, &by_intended, &lost, from, to, end);
    for w in &result.windows {
        let m = &mut result.metrics;
        m.insert(format!("{}.lost", w.name), w.lost as f64);
        m.insert(format!("{}.throughput_per_s", w.name), w.throughput_per_s);
        if let (Some(p50), Some(p99)) = (w.p50_ns, w.p99_ns) {
            m.insert(format!("{}.p50_ms", w.name), p50 as f64 / 1e6);
            m.insert(format!("{}.p99_ms", w.name), p99 as f64 / 1e6);
        }
    }
    if span.1.is_none() {
        return;
    }
    let before_p99 = result.windows.first().and_then(|w| w.p99_ns);
    match before_p99.and_then(|b| p99_recovered_after(&by_intended, to, b, recovered_p99_factor)) {
        Some(after) => {
            result
                .metrics
                .insert("p99_recovered_after_s".into(), after.as_secs_f64());
        }
        None => result.notes.push(format!(
            "the p99 of the messages sent after the fault did not come back within {}× the p99 \
             before it by the end of the phase",
            recovered_p99_factor
        )),
    }
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
