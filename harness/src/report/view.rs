//! The report's view model: every number and label is computed and formatted here, once, for
//! both the markdown and the HTML templates (which hold layout only). Strings are raw here; each
//! output format escapes them on the way out.

use crate::compare::{ChangeVerdict, Comparison};
use crate::results::{FaultRecord, PhaseWindow, RunResults, ScenarioResult, TargetCheck, Verdict};
use serde::Serialize;

/// A label and a value, e.g. one row of the environment table.
#[derive(Debug, Clone, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.into(),
    }
}

/// How the baseline relates to this run.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineView {
    pub run_id: String,
    pub revision: String,
    pub branch: String,
    /// How it was chosen, e.g. "given on the command line" or "latest comparable run on main".
    pub chosen: String,
    pub comparable: bool,
    /// Why it is not comparable (one line per differing fingerprint field).
    pub differences: Vec<String>,
}

/// One line of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub name: String,
    pub title: String,
    pub model: String,
    pub p50: String,
    pub p99: String,
    pub p999: String,
    pub throughput: String,
    pub cpu_us: String,
    pub sent: String,
    pub committed: String,
    pub lost: String,
    pub duplicated: String,
    /// `pass`, `fail`, `error` or `skipped` (also the CSS class).
    pub verdict: String,
    /// The same with a symbol, for markdown (GitHub renders emoji; a headless browser may not).
    pub verdict_md: String,
    pub targets: String,
    /// p99 change versus the baseline, or a reason there is none.
    pub change: String,
    /// The regression gate's verdict (`regressed`, …), empty without a comparison.
    pub change_verdict: String,
    /// The change itself (with its interval when gated), or why there is none.
    pub change_detail: String,
    /// `worse`, `better` or `same`: a CSS class.
    pub change_class: String,
}

/// One absolute target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub metric: String,
    pub target: String,
    pub actual: String,
    pub passed: bool,
    /// `met` or `missed`.
    pub result: String,
    pub result_md: String,
    pub source: String,
}

/// CPU and memory of one process.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceRow {
    pub process: String,
    pub cpu_percent: String,
    pub cpu_us_per_event: String,
    pub rss_max: String,
    pub rss_growth: String,
}

/// Percentiles of one recorded histogram.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramRow {
    pub name: String,
    pub description: String,
    pub count: String,
    pub p50: String,
    pub p99: String,
    pub p999: String,
    pub max: String,
}

/// One step of a rate sweep, formatted.
#[derive(Debug, Clone, Serialize)]
pub struct CurveRow {
    pub offered: String,
    pub achieved: String,
    pub lost: String,
    pub p50: String,
    pub p99: String,
    pub cpu_us_per_event: String,
    /// "kept" or "behind (send delay p99 … µs)": a point where the harness lagged measures the
    /// load generator.
    pub harness: String,
}

/// A fault injected into the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRow {
    /// `kill`, `pause`, `partition`, `restart`.
    pub kind: String,
    /// What it hit (untrusted text).
    pub target: String,
    /// Seconds since the start of the measured phase, e.g. "12.5 s".
    pub start: String,
    /// When it was lifted, or "not lifted".
    pub end: String,
}

/// One window of a phase with a fault (before, during or after it).
#[derive(Debug, Clone, Serialize)]
pub struct WindowRow {
    pub name: String,
    /// "0–12.5 s".
    pub span: String,
    pub confirmed: String,
    pub lost: String,
    /// Milliseconds, "–" when nothing was confirmed.
    pub p50_ms: String,
    pub p99_ms: String,
    pub max_ms: String,
    /// Confirmations per second.
    pub throughput: String,
}

/// Everything the report says about one scenario, besides charts.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioView {
    pub name: String,
    pub title: String,
    pub description: String,
    pub load: String,
    pub verdict: String,
    pub verdict_md: String,
    pub accounting: Vec<KeyValue>,
    pub targets: Vec<TargetRow>,
    pub resources: Vec<ResourceRow>,
    pub histograms: Vec<HistogramRow>,
    /// A rate sweep's steps (empty for single-rate scenarios).
    pub curve: Vec<CurveRow>,
    /// Faults injected into the measured phase (empty: none).
    pub faults: Vec<FaultRow>,
    /// The phase cut at the fault (empty without faults).
    pub windows: Vec<WindowRow>,
    pub metrics: Vec<KeyValue>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub revision: String,
    pub dirty: bool,
    pub branch: String,
    pub commit_subject: String,
    pub profile: String,
    pub started_at: String,
    pub finished_at: String,
    /// e.g. "5 pass, 1 fail".
    pub verdict_counts: String,
    pub overall_class: String,
    pub baseline: Option<BaselineView>,
    /// Footnote of the change column: how the change was computed.
    pub change_note: String,
    pub rows: Vec<SummaryRow>,
    pub scenarios: Vec<ScenarioView>,
    pub environment: Vec<KeyValue>,
    pub fingerprint: String,
    pub harness_errors: Vec<String>,
}

/// The first seven characters of a revision.
pub fn short_rev(rev: &str) -> String {
    rev.chars().take(7).collect()
}

/// Three significant digits, without scientific notation.
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A latency in the most readable unit.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{} µs", sig3(v / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{} ms", sig3(v / 1e6))
    } else {
        format!("{} s", sig3(v / 1e9))
    }
}

/// Bytes as MiB.
pub fn fmt_bytes(b: f64) -> String {
    format!("{} MiB", sig3(b / (1024.0 * 1024.0)))
}

fn fmt_opt(v: Option<f64>, suffix: &str) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{}{suffix}", sig3(v)))
}

/// Seconds of the measured phase, e.g. "12.5 s".
fn fmt_s(v: f64) -> String {
    format!("{} s", trimmed(v))
}

/// A fault's time in words: "from 5 s to 12 s", "from 5 s, not lifted".
pub fn fault_span(start_s: f64, end_s: Option<f64>) -> String {
    match end_s {
        Some(end) => format!("from {} to {}", fmt_s(start_s), fmt_s(end)),
        None => format!("from {}, not lifted", fmt_s(start_s)),
    }
}

fn fault_row(f: &FaultRecord) -> FaultRow {
    FaultRow {
        kind: f.kind.clone(),
        target: f.target.clone(),
        start: fmt_s(f.start_s),
        end: f.end_s.map_or_else(|| "not lifted".into(), fmt_s),
    }
}

fn window_row(w: &PhaseWindow) -> WindowRow {
    let ms = |ns: Option<u64>| ns.map_or_else(|| "–".into(), |ns| sig3(ns as f64 / 1e6));
    WindowRow {
        name: w.name.clone(),
        span: format!("{}–{} s", trimmed(w.from_s), trimmed(w.to_s)),
        confirmed: fmt_count(w.confirmed),
        lost: fmt_count(w.lost),
        p50_ms: ms(w.p50_ns),
        p99_ms: ms(w.p99_ns),
        max_ms: ms(w.max_ns),
        throughput: sig3(w.throughput_per_s),
    }
}

/// Thousands separated with a thin space, for counts.
pub fn fmt_count(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|g| g.iter().collect())
        .collect();
    groups.join("\u{2009}")
}

/// `(markdown label, word)` of a verdict.
fn verdict_label(v: Verdict) -> (&'static str, &'static str) {
    match v {
        Verdict::Pass => ("✅ pass", "pass"),
        Verdict::Fail => ("❌ fail", "fail"),
        Verdict::Error => ("⚠️ error", "error"),
        Verdict::Skipped => ("⏭️ skipped", "skipped"),
        Verdict::Invalid => ("🚫 invalid (harness lag)", "invalid"),
        Verdict::InsufficientData => ("❔ insufficient data", "insufficient"),
    }
}

/// A number with at most three significant digits and no trailing zeros ("5", "0.25", "1480").
pub fn trimmed(v: f64) -> String {
    super::charts::tick_number(v)
}

/// CPU microseconds per committed event, summed over the processes under test (the harness's
/// own CPU is not part of the system's cost).
pub fn cpu_us_per_event(s: &ScenarioResult) -> Option<f64> {
    let values: Vec<f64> = s
        .resources
        .iter()
        .filter(|r| r.process != "harness")
        .filter_map(|r| r.cpu_us_per_event)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn fmt_threshold(t: &TargetCheck) -> String {
    format!(
        "{} {} {}",
        t.op.replace("<=", "≤").replace(">=", "≥"),
        trimmed(t.threshold),
        t.unit
    )
    .trim_end()
    .to_owned()
}

/// Footnote when the regression gate's verdicts are shown.
pub const GATE_NOTE: &str = "Change of p99 against the baseline with its confidence interval and the regression gate's verdict (bootstrap over interval histograms, measured noise floor; as cargo xtask compare).";

/// Footnote when only a plain percentage could be computed.
pub const PLAIN_NOTE: &str =
    "Plain change of p99 against the baseline (no significance test); the regression gate (cargo xtask compare) decides.";

/// Change of p99 against the baseline's scenario of the same name: `(verdict, change, class)` with
/// the regression gate's verdict and interval when there is a comparison, else no verdict and
/// the plain percentage (or why there is no change).
fn p99_change(
    current: &ScenarioResult,
    baseline: Option<&RunResults>,
    comparable: bool,
    comparison: Option<&Comparison>,
) -> (String, String, String) {
    let Some(base_run) = baseline else {
        return (String::new(), "no baseline".into(), "same".into());
    };
    if !comparable {
        return (String::new(), "not comparable".into(), "same".into());
    }
    let Some(base) = base_run.scenario(&current.name) else {
        return (String::new(), "new scenario".into(), "same".into());
    };
    let (Some(cur), Some(old)) = (current.latency, base.latency) else {
        return (String::new(), "–".into(), "same".into());
    };
    if old.p99_ns == 0 || cur.count == 0 || old.count == 0 {
        return (String::new(), "–".into(), "same".into());
    }
    let gate = comparison.and_then(|c| {
        c.metrics
            .iter()
            .find(|m| m.scenario == current.name && m.metric == "p99")
    });
    if let Some(m) = gate {
        let class = match m.verdict {
            ChangeVerdict::Regressed => "worse",
            ChangeVerdict::Improved => "better",
            ChangeVerdict::Unchanged | ChangeVerdict::Inconclusive | ChangeVerdict::Noisier => {
                "same"
            }
        };
        let prefix = format!("{} ", m.metric);
        let interval = m.label.strip_prefix(&prefix).unwrap_or(&m.label);
        return (m.verdict.as_str().into(), interval.into(), class.into());
    }
    let pct = (cur.p99_ns as f64 - old.p99_ns as f64) / old.p99_ns as f64 * 100.0;
    let class = if pct > 0.5 {
        "worse"
    } else if pct < -0.5 {
        "better"
    } else {
        "same"
    };
    // Under the gate's footnote, a cell the gate did not decide says so itself.
    let unmarked = if comparison.is_some() {
        " (no significance test)"
    } else {
        ""
    };
    (
        String::new(),
        format!("{pct:+.1} %{unmarked}"),
        class.into(),
    )
}

/// Build the view of `run`; `baseline` is already chosen (see [`super::render_run`]), and
/// `comparison` is the regression gate's verdict on it, when it could be computed.
pub fn build(
    run: &RunResults,
    baseline: Option<(&RunResults, String)>,
    comparison: Option<&Comparison>,
) -> RunView {
    let env = &run.environment;
    let baseline_view = baseline.as_ref().map(|(b, chosen)| {
        let differences = env.differences(&b.environment);
        BaselineView {
            run_id: b.run_id.clone(),
            revision: short_rev(&b.environment.git_revision),
            branch: b.environment.git_branch.clone().unwrap_or_default(),
            chosen: chosen.clone(),
            comparable: env.fingerprint() == b.environment.fingerprint(),
            differences,
        }
    });
    let comparable = baseline_view.as_ref().is_some_and(|b| b.comparable);
    let base_run = baseline.as_ref().map(|(b, _)| *b);

    let mut counts = [0usize; 6];
    for s in &run.scenarios {
        let index = match s.verdict {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Error => 2,
            Verdict::Skipped => 3,
            Verdict::Invalid => 4,
            Verdict::InsufficientData => 5,
        };
        counts[index] += 1;
    }
    let names = [
        "pass",
        "fail",
        "error",
        "skipped",
        "invalid (harness lag)",
        "insufficient data",
    ];
    let verdict_counts = names
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let overall_class = if counts[2] > 0 || !run.harness_errors.is_empty() {
        "error"
    } else if counts[1] > 0 {
        "fail"
    } else {
        "pass"
    };

    let rows = run
        .scenarios
        .iter()
        .map(|s| {
            let (verdict_md, verdict) = verdict_label(s.verdict);
            let lat = s.latency;
            let gating = s.targets.iter().filter(|t| !t.informational).count();
            let missed = s.targets.iter().filter(|t| t.missed()).count();
            let targets = if gating == 0 {
                "–".into()
            } else {
                format!("{}/{} met", gating - missed, gating)
            };
            let (change_verdict, change_detail, change_class) =
                p99_change(s, base_run, comparable, comparison);
            let change = if change_verdict.is_empty() {
                change_detail.clone()
            } else {
                format!("{change_verdict}: {change_detail}")
            };
            SummaryRow {
                name: s.name.clone(),
                title: s.title.clone(),
                model: s.load.model.replace('_', " "),
                p50: lat.map_or_else(|| "–".into(), |l| fmt_ns(l.p50_ns)),
                p99: lat.map_or_else(|| "–".into(), |l| fmt_ns(l.p99_ns)),
                p999: lat.map_or_else(|| "–".into(), |l| fmt_ns(l.p999_ns)),
                throughput: fmt_opt(s.throughput_per_s, "/s"),
                cpu_us: fmt_opt(cpu_us_per_event(s), ""),
                sent: fmt_count(s.accounting.sent),
                committed: fmt_count(s.accounting.committed),
                lost: fmt_count(s.accounting.lost),
                duplicated: fmt_count(s.accounting.duplicated),
                verdict: verdict.into(),
                verdict_md: verdict_md.into(),
                targets,
                change,
                change_verdict,
                change_detail,
                change_class,
            }
        })
        .collect();

    let scenarios = run.scenarios.iter().map(scenario_view).collect();

    let nats = &env.nats;
    let mut environment = vec![
        kv(
            "revision",
            format!(
                "{}{}",
                env.git_revision,
                if env.git_dirty { " (dirty)" } else { "" }
            ),
        ),
        kv(
            "branch",
            env.git_branch.clone().unwrap_or_else(|| "–".into()),
        ),
        kv(
            "commit",
            env.commit_subject.clone().unwrap_or_else(|| "–".into()),
        ),
        kv("rustc", env.rustc_version.clone()),
        kv(
            "nats-server",
            format!("{} ({}: {})", nats.server_version, nats.kind, nats.detail),
        ),
        kv("cpu", format!("{} × {}", env.cpu_count, env.cpu_model)),
        kv("kernel", env.kernel.clone()),
        kv("os", env.os.clone()),
        kv("config hash", env.config_hash.clone()),
        kv("seed", env.seed.to_string()),
        kv("profile", run.profile.clone()),
    ];
    if let Some(load) = &env.load_generators {
        environment.push(kv("load generators", load.clone()));
    }

    RunView {
        run_id: run.run_id.clone(),
        revision: short_rev(&env.git_revision),
        dirty: env.git_dirty,
        branch: env.git_branch.clone().unwrap_or_default(),
        commit_subject: env.commit_subject.clone().unwrap_or_default(),
        profile: run.profile.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        verdict_counts: if verdict_counts.is_empty() {
            "no scenarios".into()
        } else {
            verdict_counts
        },
        overall_class: overall_class.into(),
        baseline: baseline_view,
        change_note: if comparison.is_some() && comparable {
            GATE_NOTE
        } else {
            PLAIN_NOTE
        }
        .into(),
        rows,
        scenarios,
        environment,
        fingerprint: env.fingerprint(),
        harness_errors: run.harness_errors.clone(),
    }
}

pub(crate) fn scenario_view(s: &ScenarioResult) -> ScenarioView {
    let (verdict_md, verdict) = verdict_label(s.verdict);
    let load = &s.load;
    let mut parts = vec![load.model.replace('_', " ")];
    if let Some(rate) = load.target_rate_per_s {
        parts.push(format!("{}/s target", sig3(rate)));
    }
    if let Some(c) = load.concurrency {
        parts.push(format!("concurrency {c}"));
    }
    if let Some(b) = load.payload_bytes {
        parts.push(format!("{b} B payload"));
    }
    if load.duration_s > 0.0 {
        parts.push(format!(
            "{} s measured after {} s warm-up",
            trimmed(load.duration_s),
            trimmed(load.warmup_s)
        ));
    }
    let a = &s.accounting;
    let mut accounting = vec![
        kv("sent", fmt_count(a.sent)),
        kv("committed", fmt_count(a.committed)),
        kv("lost", fmt_count(a.lost)),
        kv("duplicated", fmt_count(a.duplicated)),
    ];
    if a.loss_expected {
        accounting.push(kv(
            "loss",
            "expected by this scenario (reported, not failed)",
        ));
    }
    if let Some(lag) = &s.harness_lag {
        accounting.push(kv(
            "harness send delay p99",
            format!(
                "{} µs, limit {} µs ({}): {}",
                sig3(lag.send_delay_p99_us),
                sig3(lag.limit_us),
                lag.limit_source,
                if lag.within {
                    "the harness kept its schedule"
                } else {
                    "over the limit: these figures measure the harness, not the service"
                }
            ),
        ));
        if let Some(wake) = lag.machine_wake_p99_us {
            accounting.push(kv(
                "machine wake-up p99",
                format!(
                    "{} µs: an idle harness thread sleeping to deadlines beside the scenario woke this late (the machine's own noise)",
                    sig3(wake)
                ),
            ));
        }
    }
    let targets = s
        .targets
        .iter()
        .map(|t| TargetRow {
            metric: t.metric.clone(),
            target: fmt_threshold(t),
            actual: t.actual.map_or_else(
                || "not measured".into(),
                |v| match t.interval {
                    Some([low, high]) => {
                        format!("{} {} [{}, {}]", sig3(v), t.unit, sig3(low), sig3(high))
                    }
                    None => format!("{} {}", sig3(v), t.unit).trim_end().to_owned(),
                },
            ),
            // An informational target that is missed is shown as such, not as a failure.
            passed: !t.missed(),
            result: match (t.passed, t.informational, t.needs_events) {
                (_, _, Some(n)) => format!("insufficient data (needs {} events)", fmt_count(n)),
                _ if t.inconclusive => "inconclusive (interval straddles the target)".into(),
                (true, _, None) => "met".into(),
                (false, false, None) => "missed".into(),
                (false, true, None) => "missed (informational)".into(),
            },
            result_md: match (t.passed, t.informational, t.needs_events) {
                (_, _, Some(n)) => format!("❔ insufficient data (needs {} events)", fmt_count(n)),
                _ if t.inconclusive => "❔ inconclusive (interval straddles the target)".into(),
                (true, _, None) => "✅ met".into(),
                (false, false, None) => "❌ missed".into(),
                (false, true, None) => "ℹ️ missed (informational)".into(),
            },
            source: t.source.clone(),
        })
        .collect();
    let resources = s
        .resources
        .iter()
        .map(|r| ResourceRow {
            process: r.process.clone(),
            cpu_percent: format!("{} %", sig3(r.cpu_percent)),
            cpu_us_per_event: fmt_opt(r.cpu_us_per_event, " µs"),
            rss_max: fmt_bytes(r.rss_max_bytes as f64),
            rss_growth: r
                .rss_slope_bytes_per_hour
                .map_or_else(|| "–".into(), |b| format!("{}/h", fmt_bytes(b))),
        })
        .collect();
    let histograms = s
        .histograms
        .iter()
        .map(|h| HistogramRow {
            name: h.name.clone(),
            description: h.description.clone(),
            count: fmt_count(h.summary.count),
            p50: fmt_ns(h.summary.p50_ns),
            p99: fmt_ns(h.summary.p99_ns),
            p999: fmt_ns(h.summary.p999_ns),
            max: fmt_ns(h.summary.max_ns),
        })
        .collect();
    ScenarioView {
        name: s.name.clone(),
        title: s.title.clone(),
        description: s.description.clone(),
        load: parts.join(", "),
        verdict: verdict.into(),
        verdict_md: verdict_md.into(),
        accounting,
        targets,
        resources,
        histograms,
        curve: s
            .curve
            .iter()
            .map(|c| CurveRow {
                offered: format!("{}/s", trimmed(c.offered_per_s)),
                achieved: format!("{}/s", sig3(c.achieved_per_s)),
                lost: fmt_count(c.lost),
                p50: fmt_ns(c.latency.p50_ns),
                p99: fmt_ns(c.latency.p99_ns),
                cpu_us_per_event: fmt_opt(c.cpu_us_per_event, " µs"),
                harness: if c.harness_lag.within {
                    "kept its schedule".into()
                } else {
                    format!(
                        "behind (send delay p99 {} µs): measures the load generator",
                        sig3(c.harness_lag.send_delay_p99_us)
                    )
                },
            })
            .collect(),
        faults: s.faults.iter().map(fault_row).collect(),
        windows: s.windows.iter().map(window_row).collect(),
        metrics: s.metrics.iter().map(|(k, v)| kv(k, trimmed(*v))).collect(),
        notes: s.notes.clone(),
        error: s.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(1_234_567), "1.23 ms");
        assert_eq!(fmt_ns(250_000_000), "250 ms");
        assert_eq!(fmt_ns(2_500_000_000), "2.50 s");
        assert_eq!(fmt_count(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(sig3(0.0421), "0.042");
        assert_eq!(short_rev("0123456789"), "0123456");
        assert_eq!(fault_span(5.0, Some(12.5)), "from 5 s to 12.5 s");
        assert_eq!(fault_span(5.0, None), "from 5 s, not lifted");
    }

    #[test]
    fn windows_and_faults_are_formatted() {
        let w = PhaseWindow {
            name: "during".into(),
            from_s: 10.0,
            to_s: 17.5,
            confirmed: 12_345,
            lost: 3,
            p50_ns: Some(1_234_567),
            p99_ns: None,
            max_ns: Some(250_000_000),
            throughput_per_s: 1646.0,
        };
        let row = window_row(&w);
        assert_eq!(row.span, "10–17.5 s");
        assert_eq!(row.confirmed, "12\u{2009}345");
        assert_eq!(
            (
                row.p50_ms.as_str(),
                row.p99_ms.as_str(),
                row.max_ms.as_str()
            ),
            ("1.23", "–", "250")
        );
        assert_eq!(row.throughput, "1646");
        let f = FaultRecord {
            kind: "pause".into(),
            target: "nats node n1".into(),
            start_s: 3.0,
            end_s: None,
        };
        let row = fault_row(&f);
        assert_eq!(
            (row.start.as_str(), row.end.as_str()),
            ("3 s", "not lifted")
        );
    }
}
