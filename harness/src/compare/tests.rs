//! Tests of the gate on synthetic runs with known truth: real regressions are found, identical and
//! same-distribution data are not flagged, noise makes it say "inconclusive", and the
//! multiple-comparison correction keeps false alarms down. Every generator has a fixed seed.

use super::stats::SplitMix64;
use super::*;
use crate::histogram::{new_histogram, record, write_interval_log, Interval};
use crate::results::{
    Accounting, Environment, ResourceSample, RunResults, TargetCheck, RESULTS_FILE, SCHEMA_VERSION,
};
use std::time::{Duration, SystemTime};

/// A synthetic scenario: `intervals` one-second intervals of about `events` log-normal latencies
/// around `median_ns`; `interval_sigma` adds a random per-interval factor (machine noise).
#[derive(Clone, Copy)]
pub(crate) struct Synth {
    pub(crate) intervals: usize,
    pub(crate) events: u64,
    pub(crate) median_ns: f64,
    pub(crate) sigma: f64,
    pub(crate) interval_sigma: f64,
    pub(crate) cpu_us_per_event: f64,
    pub(crate) seed: u64,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            intervals: 30,
            events: 1000,
            median_ns: 200_000.0,
            sigma: 0.5,
            interval_sigma: 0.0,
            cpu_us_per_event: 40.0,
            seed: 1,
        }
    }
}

fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.unit().max(1e-12);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn intervals(s: Synth) -> (Vec<Interval>, Vec<ResourceSample>) {
    let mut rng = SplitMix64::new(s.seed);
    let mut out = Vec::new();
    let mut timeline = vec![ResourceSample {
        t_s: 0.0,
        process: "dbservice".into(),
        cpu_percent: 0.0,
        rss_bytes: 50 << 20,
    }];
    for i in 0..s.intervals {
        let factor = (s.interval_sigma * normal(&mut rng)).exp();
        let n = (s.events as f64 * (1.0 + 0.01 * normal(&mut rng))).max(1.0) as u64;
        let mut h = new_histogram();
        for _ in 0..n {
            record(
                &mut h,
                (s.median_ns * factor * (s.sigma * normal(&mut rng)).exp()) as u64,
            );
        }
        let cpu_us = s.cpu_us_per_event * n as f64 * (1.0 + 0.02 * normal(&mut rng));
        timeline.push(ResourceSample {
            t_s: i as f64 + 1.0,
            process: "dbservice".into(),
            cpu_percent: cpu_us / 1e6 * 100.0,
            rss_bytes: (50 << 20) + (rng.below(1 << 16) as u64),
        });
        out.push(Interval {
            start: Duration::from_secs(i as u64),
            length: Duration::from_secs(1),
            tag: None,
            histogram: h,
        });
    }
    (out, timeline)
}

/// Built from JSON so that fields added to the schema later (with defaults) do not break it.
fn environment() -> Environment {
    serde_json::from_value(serde_json::json!({
        "git_revision": "0123456789abcdef", "git_dirty": false, "git_branch": "main",
        "rustc_version": "rustc 1.95.0",
        "nats": {"kind": "local", "detail": "nats-server", "server_version": "2.12.1"},
        "cpu_model": "Synthetic CPU", "cpu_count": 2, "kernel": "6.1", "os": "linux",
        "config_hash": "c0ffee", "seed": 7
    }))
    .unwrap()
}

/// Write a run with one scenario per `(name, synth)` into `dir` and load it back.
pub(crate) fn run(dir: &Path, run_id: &str, scenarios: &[(&str, Synth)]) -> RunInput {
    std::fs::create_dir_all(dir).unwrap();
    let mut results = RunResults {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.into(),
        started_at: "2026-11-27T05:00:00Z".into(),
        finished_at: "2026-11-27T05:01:00Z".into(),
        profile: "quick".into(),
        environment: environment(),
        scenarios: Vec::new(),
        harness_errors: Vec::new(),
    };
    for (name, synth) in scenarios {
        let (ivs, timeline) = intervals(*synth);
        let log = format!("{name}.hlog");
        write_interval_log(&dir.join(&log), SystemTime::UNIX_EPOCH, &ivs).unwrap();
        let mut scenario: ScenarioResult = serde_json::from_value(serde_json::json!({
            "name": name, "title": name, "description": "",
            "load": {"model": "open_loop", "target_rate_per_s": 1000.0, "duration_s": 30.0, "warmup_s": 1.0},
            "accounting": Accounting::default(),
            "verdict": "pass",
            "interval_log": log,
        }))
        .unwrap();
        scenario.resource_timeline = timeline;
        results.scenarios.push(scenario);
    }
    std::fs::write(
        dir.join(RESULTS_FILE),
        serde_json::to_string(&results).unwrap(),
    )
    .unwrap();
    RunInput::load(dir).unwrap()
}

fn metric<'a>(c: &'a Comparison, scenario: &str, name: &str) -> &'a MetricComparison {
    c.metrics
        .iter()
        .find(|m| m.scenario == scenario && m.metric == name)
        .unwrap()
}

/// `n` runs of scenario `s` drawn from `synth` with different seeds (`synth.seed` picks the set),
/// each in its own directory below `dir`.
fn runs(dir: &Path, label: &str, n: usize, synth: Synth) -> Vec<RunInput> {
    (0..n)
        .map(|k| {
            let id = format!("{label}{k}");
            let seed = synth.seed * 1000 + k as u64;
            run(&dir.join(&id), &id, &[("s", Synth { seed, ..synth })])
        })
        .collect()
}

/// Several independent runs per side, as a history baseline gives.
fn compare_many(base: Vec<RunInput>, cand: Vec<RunInput>, options: &CompareOptions) -> Comparison {
    let side = |label: &str, rounds| Side {
        label: label.into(),
        rounds,
    };
    compare_sides(
        &side("baseline", base),
        &side("candidate", cand),
        false,
        None,
        options,
    )
}

/// Interleaved rounds: round *k* of `a` paired with round *k* of `b`.
fn compare_paired(a: Vec<RunInput>, b: Vec<RunInput>) -> Comparison {
    let side = |label: &str, rounds| Side {
        label: label.into(),
        rounds,
    };
    compare_sides(
        &side("A", a),
        &side("B", b),
        true,
        None,
        &CompareOptions::default(),
    )
}

#[test]
fn real_twenty_percent_p99_regression_is_regressed() {
    let dir = tempfile::tempdir().unwrap();
    let base = runs(dir.path(), "a", 4, Synth::default());
    let cand = runs(
        dir.path(),
        "b",
        3,
        Synth {
            median_ns: 240_000.0,
            seed: 2,
            ..Synth::default()
        },
    );
    let c = compare_many(base, cand, &CompareOptions::default());
    let p99 = metric(&c, "s", "p99");
    assert_eq!(p99.verdict, ChangeVerdict::Regressed, "{p99:?}");
    let [lo, hi] = p99.ci.unwrap();
    assert!(
        lo < 0.2 && 0.2 < hi,
        "true change +20 % outside the interval {lo}..{hi}"
    );
    assert!(p99.label.starts_with("p99 +"), "{}", p99.label);
    let throughput = metric(&c, "s", "throughput");
    assert_eq!(
        throughput.verdict,
        ChangeVerdict::Unchanged,
        "{throughput:?}"
    );
    assert_eq!(c.exit_code(), exit::TARGET_MISSED_OR_REGRESSED);
    let md = render::markdown(&c);
    assert!(
        md.contains("gated regressions)") && md.contains("**s** p99 +"),
        "{md}"
    );
    assert!(
        md.contains("- regressed: s p99: p99 +"),
        "the finding is listed: {md}"
    );
}

#[test]
fn identical_data_is_unchanged_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let base = runs(dir.path(), "a", 4, Synth::default());
    let c = compare_many(base.clone(), base, &CompareOptions::default());
    for name in ["p50", "p99", "throughput", "cpu_us_per_event.dbservice"] {
        let m = metric(&c, "s", name);
        assert_eq!(m.verdict, ChangeVerdict::Unchanged, "{m:?}");
        assert_eq!(m.change, Some(0.0));
    }
    assert_eq!(
        c.count(ChangeVerdict::Regressed) + c.count(ChangeVerdict::Improved),
        0
    );
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn same_distribution_different_draw_is_not_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let base = runs(dir.path(), "a", 5, Synth::default());
    let cand = runs(
        dir.path(),
        "b",
        5,
        Synth {
            seed: 99,
            ..Synth::default()
        },
    );
    let c = compare_many(base, cand, &CompareOptions::default());
    assert_eq!(
        metric(&c, "s", "p50").verdict,
        ChangeVerdict::Unchanged,
        "{:?}",
        metric(&c, "s", "p50")
    );
    assert_eq!(
        metric(&c, "s", "p99").verdict,
        ChangeVerdict::Unchanged,
        "{:?}",
        metric(&c, "s", "p99")
    );
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn improvement_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let base = runs(dir.path(), "a", 4, Synth::default());
    let cand = runs(
        dir.path(),
        "b",
        3,
        Synth {
            median_ns: 160_000.0,
            cpu_us_per_event: 30.0,
            seed: 3,
            ..Synth::default()
        },
    );
    let c = compare_many(base, cand, &CompareOptions::default());
    assert_eq!(metric(&c, "s", "p50").verdict, ChangeVerdict::Improved);
    assert_eq!(metric(&c, "s", "p99").verdict, ChangeVerdict::Improved);
    assert_eq!(
        metric(&c, "s", "cpu_us_per_event.dbservice").verdict,
        ChangeVerdict::Improved
    );
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn very_noisy_data_is_inconclusive() {
    let noisy = Synth {
        intervals: 8,
        interval_sigma: 0.6,
        ..Synth::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let base = runs(dir.path(), "a", 4, noisy);
    // A real +20 % shift buried in noise: the gate must not claim either way.
    let cand = runs(
        dir.path(),
        "b",
        3,
        Synth {
            median_ns: 240_000.0,
            seed: 4,
            ..noisy
        },
    );
    let c = compare_many(base, cand, &CompareOptions::default());
    for name in ["p50", "p99"] {
        let m = metric(&c, "s", name);
        assert_eq!(m.verdict, ChangeVerdict::Inconclusive, "{m:?}");
    }
    assert_eq!(c.exit_code(), exit::OK);
}

#[test]
fn different_fingerprints_are_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let mut cand = run(
        &dir.path().join("b"),
        "b",
        &[(
            "s",
            Synth {
                median_ns: 400_000.0,
                seed: 5,
                ..Synth::default()
            },
        )],
    );
    cand.results.environment.cpu_model = "Other CPU".into();
    let c = compare_runs(&base, &cand, &CompareOptions::default());
    assert!(!c.comparable);
    assert!(c
        .metrics
        .iter()
        .all(|m| m.verdict == ChangeVerdict::Inconclusive));
    let p99 = metric(&c, "s", "p99");
    assert!(
        p99.note
            .starts_with("not comparable: cpu: 2xOther CPU vs 2xSynthetic CPU"),
        "{}",
        p99.note
    );
    // No comparable baseline fails the gate, unless the caller opted out.
    assert_eq!(c.exit_code(), exit::TARGET_MISSED_OR_REGRESSED);
    assert!(matches!(
        c.findings()[..],
        [exit::Finding::NoBaseline { .. }]
    ));
    assert!(render::markdown(&c).contains("Not compared"));
    let allowed = CompareOptions {
        allow_no_baseline: true,
        ..CompareOptions::default()
    };
    let c2 = compare_runs(&base, &cand, &allowed);
    assert_eq!(c2.exit_code(), exit::OK);
    assert!(c2.notes.iter().any(|n| n.contains("--allow-no-baseline")));

    let bases = runs(dir.path(), "ma", 3, Synth::default());
    let mut cands = runs(
        dir.path(),
        "mb",
        3,
        Synth {
            median_ns: 400_000.0,
            seed: 5,
            ..Synth::default()
        },
    );
    for c in &mut cands {
        c.results.environment.cpu_model = "Other CPU".into();
    }
    let allowed = compare_many(
        bases,
        cands,
        &CompareOptions {
            allow_different_env: true,
            ..CompareOptions::default()
        },
    );
    assert_eq!(
        metric(&allowed, "s", "p99").verdict,
        ChangeVerdict::Regressed
    );
    assert_eq!(allowed.exit_code(), exit::TARGET_MISSED_OR_REGRESSED);
}

#[test]
fn bonferroni_keeps_false_alarms_down_on_many_aa_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let small = Synth {
        intervals: 20,
        events: 300,
        ..Synth::default()
    };
    let names: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
    let a: Vec<(&str, Synth)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                Synth {
                    seed: 1000 + i as u64,
                    ..small
                },
            )
        })
        .collect();
    let b: Vec<(&str, Synth)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                Synth {
                    seed: 5000 + i as u64,
                    ..small
                },
            )
        })
        .collect();
    // Three runs a side, each scenario with seeds of its own per run.
    let reseed = |set: &[(&str, Synth)], k: u64| -> Vec<(String, Synth)> {
        set.iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    Synth {
                        seed: s.seed * 10 + k,
                        ..*s
                    },
                )
            })
            .collect()
    };
    let make = |label: &str, set: &[(&str, Synth)]| -> Vec<RunInput> {
        (0..3u64)
            .map(|k| {
                let owned = reseed(set, k);
                let refs: Vec<(&str, Synth)> =
                    owned.iter().map(|(n, s)| (n.as_str(), *s)).collect();
                let id = format!("{label}{k}");
                run(&dir.path().join(&id), &id, &refs)
            })
            .collect()
    };
    let base = make("a", &a);
    let cand = make("b", &b);
    let side = |label: &str, r: &[RunInput]| Side {
        label: label.into(),
        rounds: r.to_vec(),
    };
    // No noise floor and no minimum effect: only the interval decides, so this isolates the
    // multiple-comparison correction.
    let no_floor = NoiseFloors::new();
    let bare = CompareOptions {
        min_effect: 0.0,
        min_rss_slope_bytes_per_hour: 0.0,
        resamples: 200,
        ..CompareOptions::default()
    };
    let alarms =
        |c: &Comparison| c.count(ChangeVerdict::Regressed) + c.count(ChangeVerdict::Improved);

    let uncorrected = compare_sides(
        &side("a", &base),
        &side("b", &cand),
        false,
        Some(&no_floor),
        &CompareOptions {
            correction: Correction::None,
            ..bare.clone()
        },
    );
    let corrected = compare_sides(
        &side("a", &base),
        &side("b", &cand),
        false,
        Some(&no_floor),
        &bare,
    );
    assert!(
        corrected.family_size >= 100,
        "family of {}",
        corrected.family_size
    );
    assert!(
        alarms(&uncorrected) >= 1,
        "uncorrected 95 % intervals should exclude 0 by chance now and then: {}",
        alarms(&uncorrected)
    );
    assert_eq!(
        alarms(&corrected),
        0,
        "Bonferroni-corrected intervals flagged A/A metrics"
    );
    // With the default minimum effect and the measured noise floor nothing is flagged either.
    let defaults = compare_many(
        base,
        cand,
        &CompareOptions {
            resamples: 200,
            ..CompareOptions::default()
        },
    );
    assert_eq!(alarms(&defaults), 0);
}

#[test]
fn decide_follows_the_documented_rule() {
    let t = 0.05;
    let d = |est, lo, hi, noise| decide(est, lo, hi, noise, t, true, Direction::LowerIsBetter).0;
    assert_eq!(d(0.08, 0.03, 0.12, None), ChangeVerdict::Regressed);
    assert_eq!(
        d(0.08, 0.03, 0.12, Some(0.10)),
        ChangeVerdict::Inconclusive,
        "below the noise floor"
    );
    assert_eq!(
        d(0.04, 0.01, 0.07, None),
        ChangeVerdict::Inconclusive,
        "significant but may or may not exceed 5 %"
    );
    assert_eq!(d(0.02, 0.01, 0.04, None), ChangeVerdict::Unchanged);
    assert_eq!(d(0.0, -0.02, 0.02, None), ChangeVerdict::Unchanged);
    assert_eq!(d(-0.2, -0.3, -0.1, None), ChangeVerdict::Improved);
    assert_eq!(d(0.2, -0.1, 0.5, None), ChangeVerdict::Inconclusive);
    assert_eq!(
        decide(
            0.0,
            -0.02,
            0.02,
            Some(0.5),
            t,
            false,
            Direction::LowerIsBetter
        )
        .0,
        ChangeVerdict::Inconclusive
    );
    // Throughput: a drop is the regression.
    assert_eq!(
        decide(-0.2, -0.3, -0.1, None, t, true, Direction::HigherIsBetter).0,
        ChangeVerdict::Regressed
    );
}

#[test]
fn missed_targets_and_harness_errors_set_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let mut cand = base.clone();
    cand.results.scenarios[0].verdict = Verdict::Fail;
    cand.results.scenarios[0].targets.push(TargetCheck {
        metric: "latency.p99_ms".into(),
        op: "<=".into(),
        threshold: 0.1,
        unit: "ms".into(),
        actual: Some(0.6),
        passed: false,
        source: "test".into(),
        informational: false,
        needs_events: None,
        interval: None,
        inconclusive: false,
    });
    let c = compare_runs(&base, &cand, &CompareOptions::default());
    assert_eq!(c.missed_targets.len(), 1);
    assert_eq!(c.exit_code(), exit::TARGET_MISSED_OR_REGRESSED);

    let mut broken = base.clone();
    broken
        .results
        .harness_errors
        .push("dbservice never became ready".into());
    assert_eq!(
        compare_runs(&base, &broken, &CompareOptions::default()).exit_code(),
        exit::HARNESS_ERROR
    );
}

#[test]
fn results_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let cand = run(
        &dir.path().join("b"),
        "b",
        &[(
            "s",
            Synth {
                seed: 8,
                ..Synth::default()
            },
        )],
    );
    let options = CompareOptions {
        resamples: 200,
        ..CompareOptions::default()
    };
    assert_eq!(
        compare_runs(&base, &cand, &options),
        compare_runs(&base, &cand, &options)
    );
}

#[test]
fn missing_interval_logs_make_latency_inconclusive_not_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    base.results.scenarios[0].interval_log = None;
    let c = compare_runs(&base, &base, &CompareOptions::default());
    let p99 = metric(&c, "s", "p99");
    assert_eq!(p99.verdict, ChangeVerdict::Inconclusive);
    assert!(p99.note.contains("interval"), "{}", p99.note);
}

#[test]
fn history_prefers_the_newest_comparable_run_of_the_branch() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let a = run(
        &dir.path().join("a"),
        "20261127T050000Z-aaaa",
        &[("s", Synth::default())],
    );
    let mut b = a.results.clone();
    b.run_id = "20261127T060000Z-bbbb".into();
    b.started_at = "2026-11-27T06:00:00Z".into();
    b.environment.kernel = "other".into();
    let mut c = a.results.clone();
    c.run_id = "20261127T070000Z-cccc".into();
    c.started_at = "2026-11-27T07:00:00Z".into();
    c.environment.git_branch = Some("feature".into());
    std::fs::create_dir_all(&history).unwrap();
    for r in [&a.results, &b, &c] {
        std::fs::write(
            history.join(format!("{}.json", r.run_id)),
            serde_json::to_string(r).unwrap(),
        )
        .unwrap();
    }
    // Interval logs of run a kept beside its history entry.
    std::fs::create_dir_all(history.join(&a.results.run_id)).unwrap();
    std::fs::copy(
        dir.path().join("a/s.hlog"),
        history.join(&a.results.run_id).join("s.hlog"),
    )
    .unwrap();
    let got = resolve_baseline("history:main", &history, &a.results.environment).unwrap();
    let ids: Vec<&str> = got.iter().map(|r| r.results.run_id.as_str()).collect();
    assert_eq!(
        ids,
        ["20261127T050000Z-aaaa"],
        "b differs in kernel, c is another branch"
    );
    let cmp = compare_with_baselines(&got, &a, &CompareOptions::default());
    assert_eq!(
        metric(&cmp, "s", "p99").note,
        ONE_RUN_PER_SIDE,
        "interval logs found beside the entry (else the note says they are missing)"
    );
    assert!(
        resolve_baseline("history:nope", &history, &a.results.environment)
            .unwrap()
            .is_empty()
    );

    // More runs of main with this fingerprint: the newest five, oldest first.
    for k in 0..6 {
        let mut r = a.results.clone();
        r.run_id = format!("20261127T08{k}000Z-dddd");
        r.started_at = format!("2026-11-27T08:{k}0:00Z");
        std::fs::write(
            history.join(format!("{}.json", r.run_id)),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
    }
    let got = resolve_baseline("history:main", &history, &a.results.environment).unwrap();
    let ids: Vec<&str> = got.iter().map(|r| r.results.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "20261127T081000Z-dddd",
            "20261127T082000Z-dddd",
            "20261127T083000Z-dddd",
            "20261127T084000Z-dddd",
            "20261127T085000Z-dddd"
        ]
    );
    // With no run of this fingerprint, the newest run of the branch (reported as not comparable).
    let mut elsewhere = a.results.environment.clone();
    elsewhere.cpu_model = "Elsewhere CPU".into();
    let got = resolve_baseline("history:main", &history, &elsewhere).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].results.run_id, "20261127T085000Z-dddd");
}

#[test]
fn missed_targets_are_listed_once_with_their_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let mut cand = base.clone();
    cand.results.scenarios[0].verdict = Verdict::Fail;
    cand.results.scenarios[0].targets.push(TargetCheck {
        metric: "latency.p99_ms".into(),
        op: "<=".into(),
        threshold: 5.0,
        unit: "ms".into(),
        actual: Some(7.0),
        passed: false,
        source: "test".into(),
        informational: false,
        needs_events: None,
        interval: None,
        inconclusive: false,
    });
    let mut cand2 = cand.clone();
    cand2.results.scenarios[0].targets[0].actual = Some(9.0);
    let side = |rounds: Vec<RunInput>| Side {
        label: "x".into(),
        rounds,
    };
    let c = compare_sides(
        &side(vec![base.clone(), base.clone()]),
        &side(vec![cand, cand2.clone()]),
        true,
        None,
        &CompareOptions::default(),
    );
    assert_eq!(c.missed_targets.len(), 1, "{:?}", c.missed_targets);
    assert_eq!(
        c.missed_targets[0].detail,
        "latency.p99_ms <= 5 ms (actual 7.000 … 9.000), missed in 2 of 2 rounds"
    );
    let both = compare_sides(
        &side(vec![cand2.clone()]),
        &side(vec![cand2]),
        false,
        None,
        &CompareOptions::default(),
    );
    assert!(
        both.missed_targets[0]
            .detail
            .ends_with("the baseline misses it too"),
        "{:?}",
        both.missed_targets
    );
}

#[test]
fn one_run_per_side_decides_nothing_however_large_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let base = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let cand = run(
        &dir.path().join("b"),
        "b",
        &[(
            "s",
            Synth {
                median_ns: 400_000.0,
                seed: 2,
                ..Synth::default()
            },
        )],
    );
    let c = compare_runs(&base, &cand, &CompareOptions::default());
    let p50 = metric(&c, "s", "p50");
    assert_eq!(p50.verdict, ChangeVerdict::Inconclusive, "{p50:?}");
    assert_eq!(p50.note, ONE_RUN_PER_SIDE);
    let change = p50.change.unwrap();
    assert!(
        (change - 1.0).abs() < 0.1,
        "the estimate is still shown: {change}"
    );
    assert_eq!(c.exit_code(), exit::OK);
}

/// The failure this rule exists for: a service that settles into a fast or a slow mode for a
/// whole run (seen here: single-event p50 about 2.1 ms in some runs, 3.2 ms in others). Within
/// one run the intervals agree with each other, so a bootstrap within runs is confident; only the
/// spread between runs shows that a slow candidate run is nothing new.
#[test]
fn a_slow_mode_seen_in_the_baseline_runs_is_not_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let fast = Synth::default();
    let slow = Synth {
        median_ns: 300_000.0,
        ..Synth::default()
    };
    let mut base = runs(dir.path(), "f", 3, fast);
    base.extend(runs(dir.path(), "s", 2, Synth { seed: 7, ..slow }));
    let cand = runs(dir.path(), "c", 1, Synth { seed: 9, ..slow });
    let c = compare_many(base.clone(), cand.clone(), &CompareOptions::default());
    let p50 = metric(&c, "s", "p50");
    assert_ne!(p50.verdict, ChangeVerdict::Regressed, "{p50:?}");
    assert!(
        p50.between_runs,
        "the between-run interval decided: {p50:?}"
    );
    assert_eq!(c.exit_code(), exit::OK);

    // Against the fast runs alone the same candidate run is a regression: the spread between
    // runs is what made the difference above.
    let fast_only = compare_many(base[..3].to_vec(), cand, &CompareOptions::default());
    assert_eq!(
        metric(&fast_only, "s", "p50").verdict,
        ChangeVerdict::Regressed
    );
}

/// Interleaved rounds where the pairs disagree in sign (the candidate's rounds happened to land
/// in the fast mode more often): the paired between-round interval keeps it inconclusive.
#[test]
fn paired_rounds_that_disagree_are_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let fast = Synth::default();
    let slow = Synth {
        median_ns: 300_000.0,
        ..Synth::default()
    };
    let pick = |label: &str, k: usize, s: Synth| {
        runs(
            dir.path(),
            &format!("{label}{k}-"),
            1,
            Synth {
                seed: 40 + k as u64,
                ..s
            },
        )
    };
    // A: slow slow slow fast; B: fast fast slow fast.
    let a = [slow, slow, slow, fast];
    let b = [fast, fast, slow, fast];
    let a: Vec<RunInput> = a
        .iter()
        .enumerate()
        .flat_map(|(k, s)| pick("a", k, *s))
        .collect();
    let b: Vec<RunInput> = b
        .iter()
        .enumerate()
        .flat_map(|(k, s)| pick("b", k, *s))
        .collect();
    let c = compare_paired(a, b);
    let p50 = metric(&c, "s", "p50");
    assert_eq!(p50.verdict, ChangeVerdict::Inconclusive, "{p50:?}");
    assert!(p50.between_runs, "{p50:?}");
}

/// Seen in an A/A run of the quick profile: 800 events per round are too few for a p99 of each
/// round by the tail rule, so the per-round values were missing and the pooled bootstrap alone
/// called the p99 "regressed" (+79 %) between rounds of one binary whose p99 wandered by round.
/// Each round's own value is now taken however few its events, which widens the interval.
#[test]
fn rounds_too_short_for_their_own_tail_still_measure_the_variation_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let short = Synth {
        intervals: 8,
        events: 100,
        ..Synth::default()
    };
    // Per-round log-ratios of the candidate's p99 as observed: +0.44, +0.36, -0.16, +0.87.
    let factors = [0.44f64, 0.36, -0.16, 0.87];
    let one = |label: String, median_ns: f64, seed: u64| {
        runs(
            dir.path(),
            &label,
            1,
            Synth {
                median_ns,
                seed,
                ..short
            },
        )
        .remove(0)
    };
    let a: Vec<RunInput> = (0..4)
        .map(|k| one(format!("a{k}-"), 200_000.0, 60 + k))
        .collect();
    let b: Vec<RunInput> = factors
        .iter()
        .enumerate()
        .map(|(k, f)| one(format!("b{k}-"), 200_000.0 * f.exp(), 70 + k as u64))
        .collect();
    let c = compare_paired(a, b);
    let p99 = metric(&c, "s", "p99");
    assert!(p99.ci.is_some(), "the pooled p99 is compared: {p99:?}");
    // Not decided either way; the candidate's rounds spread far more than the baseline's, which
    // is reported as such.
    assert!(
        matches!(
            p99.verdict,
            ChangeVerdict::Inconclusive | ChangeVerdict::Noisier
        ),
        "{p99:?}"
    );
    assert!(p99.between_runs, "{p99:?}");
}

/// Issue 11: every untrusted string in `compare.md` (revisions, run ids, scenario names, notes,
/// harness errors) is escaped by the one markdown escaping function: no code span, emphasis,
/// strikethrough, link or heading comes from data, and table rows keep their columns.
#[test]
fn untrusted_strings_in_compare_md_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let name = "a_b*c`d|e~~f~~";
    let mut a = run(&dir.path().join("a"), "a", &[(name, Synth::default())]);
    a.results.environment.git_revision = "r`_*|".into();
    a.results
        .harness_errors
        .push("oops\n# heading [l](javascript:1)".into());
    let mut c = compare_runs(&a, &a, &CompareOptions::default());
    c.notes.push("note\n- item _x_".into());
    let md = render::markdown(&c);
    for raw in [
        "a_b",
        "b*c",
        "c`d",
        "d|e",
        "~~f~~",
        "r`",
        "`_",
        "\n# heading",
        "[l](",
        "\n- item",
        "_x_",
    ] {
        assert!(!md.contains(raw), "{raw:?} unescaped in:\n{md}");
    }
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        let pipes = line
            .match_indices('|')
            .filter(|(i, _)| !line[..*i].ends_with('\\'))
            .count();
        assert_eq!(pipes, 9, "broken table row: {line}");
    }
}

/// Issue 11: the `interval_log` named by a results.json is read only from inside its run
/// directory: an absolute path, a `..` component or a symlink out of the directory is refused
/// (with a note), never followed.
#[test]
fn interval_logs_outside_the_run_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = run(&dir.path().join("a"), "a", &[("s", Synth::default())]);
    let mut notes = Vec::new();
    assert!(input::load_intervals(&a, &a.results.scenarios[0], &mut notes).is_some());
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(b_dir.join("sub")).unwrap();
    let outside = dir.path().join("a").join("s.hlog");
    std::os::unix::fs::symlink(&outside, b_dir.join("link.hlog")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a"), b_dir.join("sub").join("up")).unwrap();
    for rel in [
        outside.to_str().unwrap(),
        "../a/s.hlog",
        "sub/../../a/s.hlog",
        "link.hlog",
        "sub/up/s.hlog",
    ] {
        let mut b = a.clone();
        b.dir = Some(b_dir.clone());
        b.results.scenarios[0].interval_log = Some(rel.into());
        let mut notes = Vec::new();
        let read = input::load_intervals(&b, &b.results.scenarios[0], &mut notes);
        assert!(read.is_none(), "{rel} was read");
        assert!(
            notes.len() == 1 && notes[0].contains("outside the run directory"),
            "{rel}: {notes:?}"
        );
    }
}

/// `runs` with `cpu_ratio_nats_vs_direct` set in each run's scenario `s` to `ratios[k]`.
fn runs_with_ratio(dir: &Path, label: &str, ratios: &[f64]) -> Vec<RunInput> {
    let mut out = runs(dir, label, ratios.len(), Synth::default());
    for (run, ratio) in out.iter_mut().zip(ratios) {
        run.results.scenarios[0]
            .metrics
            .insert("cpu_ratio_nats_vs_direct".into(), *ratio);
    }
    out
}

#[test]
fn the_cpu_ratio_is_gated_on_the_variation_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let base = runs_with_ratio(&dir.path().join("b"), "b", &[10.0, 10.3, 9.8, 10.1, 9.9]);
    let ratio = |c: &Comparison| metric(c, "s", "cpu_ratio_nats_vs_direct").clone();

    // 50 % more CPU on the NATS path per unit of direct work, in every candidate run: regressed.
    let worse = runs_with_ratio(&dir.path().join("w"), "w", &[15.0, 15.2, 14.9]);
    let c = compare_many(base.clone(), worse, &CompareOptions::default());
    let m = ratio(&c);
    assert_eq!(m.verdict, ChangeVerdict::Regressed, "{m:?}");
    assert_eq!(m.unit, "ratio");
    assert!((m.change.unwrap() - 0.5).abs() < 0.05, "{m:?}");
    assert!(m.between_runs, "the interval is the between-run one: {m:?}");
    assert!(c.family_size > 0 && c.exit_code() == exit::TARGET_MISSED_OR_REGRESSED);

    // The same spread again: not a change (unchanged, or inconclusive when the interval,
    // corrected for every comparison of the report, reaches past ±5 %).
    let same = runs_with_ratio(&dir.path().join("s"), "s", &[10.2, 9.9, 10.0]);
    let m = ratio(&compare_many(
        base.clone(),
        same,
        &CompareOptions::default(),
    ));
    assert!(
        matches!(
            m.verdict,
            ChangeVerdict::Unchanged | ChangeVerdict::Inconclusive
        ),
        "{m:?}"
    );
    let [lo, hi] = m.ci.unwrap();
    assert!(lo < 0.0 && hi > 0.0, "{m:?}");

    // Lower is better.
    let better = runs_with_ratio(&dir.path().join("i"), "i", &[6.0, 6.1, 5.9]);
    let m = ratio(&compare_many(
        base.clone(),
        better,
        &CompareOptions::default(),
    ));
    assert_eq!(m.verdict, ChangeVerdict::Improved, "{m:?}");

    // One run per side: the estimate is shown, nothing is decided.
    let one = runs_with_ratio(&dir.path().join("o"), "o", &[20.0]);
    let c = compare_runs(&base[0], &one[0], &CompareOptions::default());
    let m = ratio(&c);
    assert_eq!(m.verdict, ChangeVerdict::Inconclusive, "{m:?}");
    assert_eq!(m.note, ONE_RUN_PER_SIDE);
    assert!((m.change.unwrap() - 1.0).abs() < 1e-9, "{m:?}");

    // A scenario without the figure has no such row.
    let plain = runs(&dir.path().join("p"), "p", 2, Synth::default());
    let c = compare_many(plain.clone(), plain, &CompareOptions::default());
    assert!(c
        .metrics
        .iter()
        .all(|m| m.metric != "cpu_ratio_nats_vs_direct"));
}
