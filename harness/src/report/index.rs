//! The history index (`index.html`): every run in the history, and per scenario the trend of p50,
//! p99, throughput, CPU per event and the saturation knee across runs, each point labelled with
//! its revision.
//!
//! Runs are grouped by environment fingerprint and a trend line never joins runs of different
//! groups: each group gets its own charts, headed by how its environment differs from the newest.

use super::charts::{Axis, ChartSpec, Scale, Series, Ticks};
use super::html::{render_template, ChartView, CSS};
use super::view::{cpu_us_per_event, short_rev, KeyValue};
use crate::history::History;
use crate::results::{RunResults, ScenarioResult, Verdict};
use serde::Serialize;

const TEMPLATE: &str = include_str!("templates/index.html.tera");
const TEMPLATE_NAME: &str = "index.html";

/// Most recent runs per environment drawn in the trend charts and listed in the table.
pub const MAX_POINTS: usize = 60;

#[derive(Serialize)]
struct RunRow {
    run_id: String,
    started_at: String,
    revision: String,
    dirty: bool,
    branch: String,
    profile: String,
    verdicts: String,
    overall_class: String,
    subject: String,
}

#[derive(Serialize)]
struct TrendRow {
    name: String,
    charts: Vec<ChartView>,
}

#[derive(Serialize)]
struct Group {
    label: String,
    fingerprint: String,
    /// How this environment differs from the newest run's (empty for the newest group).
    differences: Vec<String>,
    runs: Vec<RunRow>,
    trends: Vec<TrendRow>,
    truncated: Option<String>,
}

#[derive(Serialize)]
struct Page<'a> {
    css: &'a str,
    run_count: usize,
    skipped: Vec<KeyValue>,
    groups: Vec<Group>,
    chart_count: usize,
}

fn verdict_summary(run: &RunResults) -> (String, String) {
    let count = |v: Verdict| run.scenarios.iter().filter(|s| s.verdict == v).count();
    let (pass, fail, error) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Error) + count(Verdict::Invalid),
    );
    let insufficient = count(Verdict::InsufficientData);
    let class = if error > 0 || !run.harness_errors.is_empty() {
        "error"
    } else if fail > 0 {
        "fail"
    } else {
        "pass"
    };
    let mut parts = vec![format!("{pass} pass")];
    if fail > 0 {
        parts.push(format!("{fail} fail"));
    }
    if error > 0 {
        parts.push(format!("{error} error or invalid"));
    }
    if insufficient > 0 {
        parts.push(format!("{insufficient} insufficient data"));
    }
    (parts.join(", "), class.into())
}

type Metric = (
    &'static str,
    &'static str,
    fn(&ScenarioResult) -> Option<f64>,
);

const METRICS: [Metric; 5] = [
    ("p50", "p50 (ms)", |s| {
        s.latency
            .filter(|l| l.count > 0)
            .map(|l| l.p50_ns as f64 / 1e6)
    }),
    ("p99", "p99 (ms)", |s| {
        s.latency
            .filter(|l| l.count > 0)
            .map(|l| l.p99_ns as f64 / 1e6)
    }),
    ("throughput", "committed / s", |s| s.throughput_per_s),
    ("CPU µs per event", "CPU µs / event", cpu_us_per_event),
    // Only a knee the service limited (`knee.rs`): a load generator's is not the service's.
    ("knee", "events / s", |s| {
        s.metrics.get("knee_per_s").copied()
    }),
];

fn trends(runs: &[&RunResults]) -> Vec<TrendRow> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs.iter().rev() {
        for s in &run.scenarios {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
    }
    let labels: Vec<String> = runs
        .iter()
        .map(|r| short_rev(&r.environment.git_revision))
        .collect();
    names
        .iter()
        .map(|name| {
            let charts = METRICS
                .iter()
                .filter_map(|(title, unit, metric)| {
                    let mut points = Vec::new();
                    let mut tips = Vec::new();
                    for (i, run) in runs.iter().enumerate() {
                        if let Some(v) = run.scenario(name).and_then(metric) {
                            points.push((i as f64, v));
                            let branch = run.environment.git_branch.as_deref().unwrap_or("?");
                            tips.push(format!(
                                "{}: {} {unit} · revision {}{} on {branch} · run {}",
                                title,
                                super::view::sig3(v),
                                labels[i],
                                if run.environment.git_dirty {
                                    " (dirty)"
                                } else {
                                    ""
                                },
                                run.run_id
                            ));
                        }
                    }
                    if points.is_empty() {
                        return None;
                    }
                    let y = Axis::fit(unit, points.iter().map(|p| p.1), Scale::Linear);
                    let x = Axis {
                        desc: "revision".into(),
                        min: -0.5,
                        max: runs.len() as f64 - 0.5,
                        scale: Scale::Linear,
                        // About four revision labels fit under a chart; tooltips name every point.
                        ticks: Ticks::Labels {
                            labels: labels.clone(),
                            step: runs.len().div_ceil(4),
                        },
                    };
                    let series = vec![Series {
                        dots: true,
                        tips,
                        label: String::new(),
                        ..Series::line("", 0, points)
                    }];
                    Some(ChartView::from_spec(&ChartSpec {
                        title: (*title).to_owned(),
                        width: 300,
                        height: 210,
                        x,
                        y,
                        series,
                        bands: Vec::new(),
                    }))
                })
                .collect();
            TrendRow {
                name: (*name).to_owned(),
                charts,
            }
        })
        .collect()
}

/// Render the index of `history`.
pub fn render(history: &History) -> anyhow::Result<String> {
    // Group by fingerprint, newest group first (the group of the newest run).
    let mut groups: Vec<(String, Vec<&RunResults>)> = Vec::new();
    for run in history.runs.iter().rev() {
        let fp = run.environment.fingerprint();
        match groups.iter_mut().find(|(f, _)| *f == fp) {
            Some((_, runs)) => runs.push(run),
            None => groups.push((fp, vec![run])),
        }
    }
    let newest = history.runs.last();
    let groups: Vec<Group> = groups
        .into_iter()
        .enumerate()
        .map(|(i, (fingerprint, newest_first))| {
            let differences = match newest {
                Some(n) if i > 0 => newest_first[0].environment.differences(&n.environment),
                _ => Vec::new(),
            };
            let runs = newest_first
                .iter()
                .take(MAX_POINTS)
                .map(|r| {
                    let (verdicts, overall_class) = verdict_summary(r);
                    RunRow {
                        run_id: r.run_id.clone(),
                        started_at: r.started_at.clone(),
                        revision: short_rev(&r.environment.git_revision),
                        dirty: r.environment.git_dirty,
                        branch: r.environment.git_branch.clone().unwrap_or_default(),
                        profile: r.profile.clone(),
                        verdicts,
                        overall_class,
                        subject: r.environment.commit_subject.clone().unwrap_or_default(),
                    }
                })
                .collect();
            let mut chronological: Vec<&RunResults> =
                newest_first.iter().take(MAX_POINTS).copied().collect();
            chronological.reverse();
            let truncated = (newest_first.len() > MAX_POINTS).then(|| {
                format!(
                    "Charts and table show the newest {MAX_POINTS} of {} runs.",
                    newest_first.len()
                )
            });
            Group {
                label: format!("Environment {}", i + 1),
                fingerprint,
                differences,
                runs,
                trends: trends(&chronological),
                truncated,
            }
        })
        .collect();
    let chart_count = groups
        .iter()
        .flat_map(|g| &g.trends)
        .map(|t| t.charts.len())
        .sum();
    let skipped = history
        .skipped
        .iter()
        .map(|(p, why)| KeyValue {
            key: p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            value: why.clone(),
        })
        .collect();
    let page = Page {
        css: CSS,
        run_count: history.runs.len(),
        skipped,
        groups,
        chart_count,
    };
    render_template(TEMPLATE_NAME, TEMPLATE, &page)
}
