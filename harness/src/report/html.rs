//! The HTML report of one run (`report.html`): one self-contained file (inline CSS and SVG, no
//! scripts, fonts or images) that works offline as a CI artifact.
//!
//! Per scenario: the HdrHistogram percentile spectrum with the baseline overlaid (only when the
//! environments are comparable), latency over time from the interval histograms, throughput per
//! interval, CPU and RSS of each process on the same time axis (faults injected into the phase
//! shaded on each), accounting, targets and verdicts.

use super::charts::{self, Axis, Band, Chart, ChartSpec, Scale, Series, Stroke, Ticks};
use super::view::{RunView, ScenarioView};
use crate::histogram;
use crate::results::{FaultRecord, IntervalPoint, RunResults, ScenarioResult};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::Path;

pub(crate) const CSS: &str = include_str!("templates/style.css");
const TEMPLATE: &str = include_str!("templates/report.html.tera");
const TEMPLATE_NAME: &str = "report.html";

/// Width of full-width charts; the page's content column is a little wider.
const WIDE: u32 = 1120;
const SPECTRUM: (u32, u32) = (540, 330);
const TIMELINE_HEIGHT: u32 = 175;

/// A chart slot in a page: the drawn chart, or why it could not be drawn (shown as a visible
/// error marker that `cargo xtask report --check` fails on).
#[derive(Debug, Clone, Serialize)]
pub struct ChartView {
    pub title: String,
    pub chart: Option<Chart>,
    pub error: Option<String>,
}

impl ChartView {
    pub fn from_spec(spec: &ChartSpec) -> ChartView {
        match charts::render(spec) {
            Ok(chart) => ChartView {
                title: spec.title.clone(),
                chart: Some(chart),
                error: None,
            },
            Err(e) => ChartView {
                title: spec.title.clone(),
                chart: None,
                error: Some(format!("{e:#}")),
            },
        }
    }

    pub fn failed(title: &str, error: String) -> ChartView {
        ChartView {
            title: title.to_owned(),
            chart: None,
            error: Some(error),
        }
    }
}

#[derive(Serialize)]
struct ScenarioPage<'a> {
    view: &'a ScenarioView,
    spectrum: Vec<ChartView>,
    timeline: Vec<ChartView>,
    /// Why there is no timeline, when there is none.
    timeline_note: Option<String>,
}

#[derive(Serialize)]
struct Page<'a> {
    css: &'a str,
    run: &'a RunView,
    scenarios: Vec<ScenarioPage<'a>>,
    chart_count: usize,
}

/// Render `report.html`. `overlay` is the baseline whose histograms are drawn under this run's
/// (callers pass it only when the environments are comparable).
pub fn render(
    view: &RunView,
    run: &RunResults,
    run_dir: &Path,
    overlay: Option<&RunResults>,
) -> anyhow::Result<String> {
    let scenarios: Vec<ScenarioPage> = view
        .scenarios
        .iter()
        .zip(&run.scenarios)
        .map(|(sv, s)| {
            let base = overlay.and_then(|b| b.scenario(&s.name));
            let (timeline, timeline_note) = timeline_charts(s, run_dir);
            ScenarioPage {
                view: sv,
                spectrum: spectrum_chart(s, base, overlay)
                    .into_iter()
                    .chain(curve_chart(s))
                    .collect(),
                timeline,
                timeline_note,
            }
        })
        .collect();
    let chart_count = scenarios
        .iter()
        .map(|s| s.spectrum.len() + s.timeline.len())
        .sum();
    let page = Page {
        css: CSS,
        run: view,
        scenarios,
        chart_count,
    };
    render_template(TEMPLATE_NAME, TEMPLATE, &page)
}

/// Render an HTML template with autoescaping on.
pub(crate) fn render_template(
    name: &str,
    template: &str,
    page: &impl Serialize,
) -> anyhow::Result<String> {
    let mut tera = tera::Tera::new();
    tera.add_raw_template(name, template)
        .with_context(|| format!("parse template {name}"))?;
    let context =
        tera::Context::from_serialize(page).with_context(|| format!("context of {name}"))?;
    tera.render(name, &context)
        .with_context(|| format!("render {name}"))
}

/// `(x = 1/(1-q), y = ms)` points of a histogram's percentile spectrum, and the largest x.
fn spectrum_points(h: &Histogram<u64>) -> (Vec<(f64, f64)>, f64) {
    let x_max = 10f64.powf((h.len().max(10) as f64).log10().ceil()).min(1e7);
    let mut points: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            x_max
        } else {
            (1.0 / (1.0 - q)).min(x_max)
        };
        let y = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
        if points.last().is_some_and(|(px, _)| *px >= x) {
            continue;
        }
        points.push((x, y));
    }
    (points, x_max)
}

fn spectrum_chart(
    s: &ScenarioResult,
    base: Option<&ScenarioResult>,
    overlay: Option<&RunResults>,
) -> Option<ChartView> {
    if s.histograms.is_empty() {
        return None;
    }
    let title = "Latency by percentile".to_owned();
    let mut series = Vec::new();
    let mut x_max: f64 = 100.0;
    let mut color = 1;
    for named in &s.histograms {
        let h = match histogram::decode(&named.encoded) {
            Ok(h) => h,
            Err(e) => {
                return Some(ChartView::failed(
                    &title,
                    format!("histogram {}: {e:#}", named.name),
                ))
            }
        };
        if h.is_empty() {
            continue;
        }
        let (points, max) = spectrum_points(&h);
        x_max = x_max.max(max);
        let headline = named.name == "latency";
        let c = if headline {
            0
        } else {
            color += 1;
            color - 1
        };
        series.push(Series {
            width: if headline { 3 } else { 2 },
            ..Series::line(&named.name, c, points)
        });
    }
    if let (Some(base), Some(run)) = (base, overlay) {
        if let Some(named) = base.histograms.iter().find(|h| h.name == "latency") {
            match histogram::decode(&named.encoded) {
                Ok(h) if !h.is_empty() => {
                    let (points, max) = spectrum_points(&h);
                    x_max = x_max.max(max);
                    let label = format!(
                        "baseline {} latency",
                        super::view::short_rev(&run.environment.git_revision)
                    );
                    series.insert(
                        0,
                        Series {
                            stroke: Stroke::Dashed,
                            ..Series::line(&label, charts::GREY, points)
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    return Some(ChartView::failed(
                        &title,
                        format!("baseline histogram: {e:#}"),
                    ))
                }
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x = Axis {
        desc: "percentile".into(),
        min: 1.0,
        max: x_max,
        scale: Scale::Log,
        ticks: Ticks::Percentile,
    };
    let spec = ChartSpec {
        title,
        width: SPECTRUM.0,
        height: SPECTRUM.1,
        x,
        y: Axis::fit("latency (ms)", ys, Scale::Linear),
        series,
        bands: Vec::new(),
    };
    Some(ChartView::from_spec(&spec))
}

/// A rate sweep's curve: p50 and p99 against the offered rate (log scale), a dot per step, a
/// tooltip with the achieved rate, loss, CPU per event and whether the harness kept its schedule.
/// A knee search's curve also marks the knee (a dashed vertical line) and its p99 objective (a
/// dashed horizontal one).
fn curve_chart(s: &ScenarioResult) -> Option<ChartView> {
    if s.curve.is_empty() {
        return None;
    }
    // A search measures rates out of order, some more than once: the lines join them by rate.
    let mut curve: Vec<&crate::results::CurvePoint> = s.curve.iter().collect();
    curve.sort_by(|a, b| a.offered_per_s.total_cmp(&b.offered_per_s));
    let tips: Vec<String> = curve
        .iter()
        .map(|c| {
            format!(
                "offered {}/s, achieved {:.0}/s, lost {}{}{}",
                super::view::trimmed(c.offered_per_s),
                c.achieved_per_s,
                c.lost,
                c.cpu_us_per_event
                    .map(|cpu| format!(", dbservice {cpu:.1} CPU-µs/event"))
                    .unwrap_or_default(),
                if c.harness_lag.within {
                    String::new()
                } else {
                    format!(
                        "; harness behind schedule (send delay p99 {:.0} µs): measures the load generator",
                        c.harness_lag.send_delay_p99_us
                    )
                }
            )
        })
        .collect();
    let line = |label: &str, color: usize, f: &dyn Fn(&crate::results::CurvePoint) -> u64| Series {
        dots: true,
        tips: tips.clone(),
        ..Series::line(
            label,
            color,
            curve
                .iter()
                .map(|c| (c.offered_per_s, f(c) as f64 / 1e6))
                .collect(),
        )
    };
    let mut series = vec![
        line("p50", 0, &|c| c.latency.p50_ns),
        line("p99", 1, &|c| c.latency.p99_ns),
    ];
    let slo = s.metrics.get("knee_slo_p99_ms").copied();
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(slo);
    let x = Axis::fit(
        "offered rate (events/s)",
        curve.iter().map(|c| c.offered_per_s),
        Scale::Log,
    );
    let y = Axis::fit("latency (ms)", ys, Scale::Linear);
    let dashed = |label: String, color: usize, points: Vec<(f64, f64)>| Series {
        stroke: super::charts::Stroke::Dashed,
        ..Series::line(&label, color, points)
    };
    if let Some(slo) = slo {
        series.push(dashed(
            format!("p99 objective {} ms", super::view::trimmed(slo)),
            3,
            vec![(x.min, slo), (x.max, slo)],
        ));
    }
    let knee = [("knee_per_s", "knee"), ("knee_at_least_per_s", "knee ≥")]
        .iter()
        .find_map(|(key, label)| s.metrics.get(*key).map(|k| (*label, *k)));
    if let Some((label, k)) = knee {
        series.push(dashed(
            format!("{label} {}/s", super::view::trimmed(k)),
            2,
            vec![(k, y.min), (k, y.max)],
        ));
    }
    let spec = ChartSpec {
        title: "Latency against offered rate".into(),
        width: SPECTRUM.0,
        height: SPECTRUM.1,
        x,
        y,
        series,
        bands: Vec::new(),
    };
    Some(ChartView::from_spec(&spec))
}

/// The headline histogram of every interval: from the HdrHistogram interval log when there is
/// one (full histograms), else from the per-interval summaries in the results.
fn interval_points(s: &ScenarioResult, run_dir: &Path) -> anyhow::Result<Vec<IntervalPoint>> {
    let Some(log) = &s.interval_log else {
        return Ok(s.intervals.clone());
    };
    // One interval at a time: a long run's full histograms would not fit in memory together.
    let path = crate::results::interval_log_path(run_dir, log)?;
    let intervals =
        histogram::map_interval_log(&path, |iv| (iv.tag.clone(), histogram::interval_point(&iv)))?;
    let tags: Vec<Option<&str>> = intervals.iter().map(|(tag, _)| tag.as_deref()).collect();
    let wanted = if tags.contains(&Some("latency")) {
        Some("latency")
    } else if tags.contains(&None) {
        None
    } else {
        tags.first().copied().flatten()
    };
    let wanted = wanted.map(str::to_owned);
    Ok(intervals
        .into_iter()
        .filter(|(tag, _)| *tag == wanted)
        .map(|(_, point)| point)
        .collect())
}

fn timeline_charts(s: &ScenarioResult, run_dir: &Path) -> (Vec<ChartView>, Option<String>) {
    // A missing or damaged interval log is worth saying, not worth losing the timeline: the
    // results carry per-interval summaries too.
    let mut note = None;
    let intervals = match interval_points(s, run_dir) {
        Ok(points) => points,
        Err(e) => {
            note = Some(format!(
                "The interval log could not be read ({e:#}); latency over time shows the per-interval summaries of results.json."
            ));
            s.intervals.clone()
        }
    };
    let resources = &s.resource_timeline;
    if intervals.is_empty() && resources.is_empty() {
        return (
            Vec::new(),
            Some(
                "No interval histograms or resource samples were recorded for this scenario."
                    .into(),
            ),
        );
    }
    // One time axis for every chart of the scenario, so they line up vertically; it reaches
    // every fault's start and end too, so none falls off it.
    let t_end = intervals
        .iter()
        .map(|i| i.t_s + i.length_s)
        .chain(resources.iter().map(|r| r.t_s))
        .chain(
            s.faults
                .iter()
                .flat_map(|f| [Some(f.start_s), f.end_s])
                .flatten(),
        )
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max)
        .max(1.0);
    let bands = fault_bands(&s.faults);
    let time = Axis {
        desc: "time since start of measurement (s)".into(),
        min: 0.0,
        max: t_end,
        scale: Scale::Linear,
        ticks: Ticks::Number,
    };
    let spec = |title: &str, y: Axis, series: Vec<Series>| ChartSpec {
        title: title.to_owned(),
        width: WIDE,
        height: TIMELINE_HEIGHT,
        x: time.clone(),
        y,
        series,
        bands: bands.clone(),
    };
    let mut out = Vec::new();
    let measured: Vec<&IntervalPoint> = intervals.iter().filter(|i| i.count > 0).collect();
    if !measured.is_empty() {
        let mid = |i: &IntervalPoint| i.t_s + i.length_s / 2.0;
        let line = |label: &str, c: usize, bucket: Bucket, f: &dyn Fn(&IntervalPoint) -> u64| {
            let points = measured
                .iter()
                .map(|i| (mid(i), f(i) as f64 / 1e6))
                .collect();
            Series::line(label, c, decimate(points, bucket))
        };
        let series = vec![
            line("p50", 0, Bucket::Mean, &|i| i.p50_ns),
            line("p99", 1, Bucket::Max, &|i| i.p99_ns),
            line("max", 3, Bucket::Max, &|i| i.max_ns),
        ];
        let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let y = Axis::fit("latency (ms)", ys, Scale::Linear);
        out.push(ChartView::from_spec(&spec("Latency over time", y, series)));
    }
    if !intervals.is_empty() {
        let points: Vec<(f64, f64)> = intervals
            .iter()
            .filter(|i| i.length_s > 0.0)
            .map(|i| (i.t_s + i.length_s / 2.0, i.count as f64 / i.length_s))
            .collect();
        let points = decimate(points, Bucket::Mean);
        let y = Axis::fit("committed / s", points.iter().map(|p| p.1), Scale::Linear);
        out.push(ChartView::from_spec(&spec(
            "Throughput (committed per interval)",
            y,
            vec![Series::line("committed/s", 2, points)],
        )));
    }
    if !resources.is_empty() {
        let mut processes: Vec<&str> = Vec::new();
        for r in resources {
            if !processes.contains(&r.process.as_str()) {
                processes.push(&r.process);
            }
        }
        let per_process = |f: &dyn Fn(&crate::results::ResourceSample) -> f64| -> Vec<Series> {
            processes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let points = resources
                        .iter()
                        .filter(|r| r.process == *p)
                        .map(|r| (r.t_s, f(r)))
                        .collect();
                    Series::line(p, i, decimate(points, Bucket::Mean))
                })
                .collect()
        };
        let cpu = per_process(&|r| r.cpu_percent);
        let y = Axis::fit(
            "CPU (% of one core)",
            cpu.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            Scale::Linear,
        );
        out.push(ChartView::from_spec(&spec("CPU per process", y, cpu)));
        let rss = per_process(&|r| r.rss_bytes as f64 / (1024.0 * 1024.0));
        let y = Axis::fit(
            "RSS (MiB)",
            rss.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            Scale::Linear,
        );
        out.push(ChartView::from_spec(&spec(
            "Resident memory per process",
            y,
            rss,
        )));
    }
    (out, note)
}

/// A short name of what a fault hit, for a chart label: the last word of its target before any
/// parenthesis (`nats node n2 (JetStream meta leader)` → `n2`).
fn short_target(target: &str) -> &str {
    let head = target.split('(').next().unwrap_or_default();
    head.split_whitespace().last().unwrap_or_default()
}

/// The label of a fault on a chart: its kind and what it hit, e.g. `kill n2`.
fn fault_label(f: &FaultRecord) -> String {
    let target: String = short_target(&f.target).chars().take(24).collect();
    if target.is_empty() {
        f.kind.clone()
    } else {
        format!("{} {target}", f.kind)
    }
}

/// A band on every timeline chart per fault, from its start to its end (or the right edge when
/// it was never lifted), with the whole story as its tooltip.
fn fault_bands(faults: &[FaultRecord]) -> Vec<Band> {
    faults
        .iter()
        .map(|f| Band {
            from: f.start_s,
            to: f.end_s,
            label: fault_label(f),
            tip: format!(
                "{}: {}, {}",
                f.kind,
                f.target,
                super::view::fault_span(f.start_s, f.end_s)
            ),
        })
        .collect()
}

/// How points that share a bucket are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Mean,
    /// For tails and maxima: a spike must not be averaged away.
    Max,
}

/// More points than a chart has pixels only make the page heavy (an hour at 100 ms samples is
/// 36 000 points): combine consecutive points into at most [`MAX_LINE_POINTS`] buckets.
const MAX_LINE_POINTS: usize = 600;

fn decimate(points: Vec<(f64, f64)>, bucket: Bucket) -> Vec<(f64, f64)> {
    if points.len() <= MAX_LINE_POINTS {
        return points;
    }
    let size = points.len().div_ceil(MAX_LINE_POINTS);
    points
        .chunks(size)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let x = chunk.iter().map(|p| p.0).sum::<f64>() / n;
            let y = match bucket {
                Bucket::Mean => chunk.iter().map(|p| p.1).sum::<f64>() / n,
                Bucket::Max => chunk.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            };
            (x, y)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_keeps_spikes_and_bounds_points() {
        let mut points: Vec<(f64, f64)> = (0..36_000).map(|i| (f64::from(i) * 0.1, 1.0)).collect();
        points[12_345].1 = 50.0;
        let max = decimate(points.clone(), Bucket::Max);
        assert!(max.len() <= MAX_LINE_POINTS);
        assert_eq!(max.iter().map(|p| p.1).fold(0.0, f64::max), 50.0);
        let mean = decimate(points, Bucket::Mean);
        assert!(mean.iter().all(|p| p.1 < 2.0));
        let few = vec![(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(decimate(few.clone(), Bucket::Mean), few);
    }

    #[test]
    fn a_rate_sweep_is_drawn_and_tabled_with_its_lagging_step_marked() {
        let lag = |p99: f64| {
            serde_json::json!({
                "send_delay_p99_us": p99, "limit_us": 500.0, "limit_source": "x", "within": p99 <= 500.0
            })
        };
        let point = |rate: f64, p50: u64, p99: u64, send_p99: f64| {
            serde_json::json!({
                "offered_per_s": rate, "achieved_per_s": rate, "sent": 10, "committed": 10, "lost": 0,
                "latency": crate::results::LatencySummary { count: 10, p50_ns: p50, p99_ns: p99, ..Default::default() },
                "harness_lag": lag(send_p99), "cpu_us_per_event": 50.0
            })
        };
        let s: ScenarioResult = serde_json::from_value(serde_json::json!({
            "name": "commit_latency_curve", "title": "T", "description": "",
            "load": { "model": "open_loop", "duration_s": 1.0, "warmup_s": 0.0 },
            "accounting": { "sent": 20, "committed": 20, "lost": 0, "duplicated": 0 },
            "verdict": "pass",
            "curve": [point(200.0, 500_000, 1_000_000, 100.0), point(10_000.0, 450_000, 4_000_000, 900.0)]
        }))
        .unwrap();
        let chart = curve_chart(&s).expect("a sweep has a curve chart");
        assert_eq!(chart.error, None);
        assert_eq!(chart.title, "Latency against offered rate");
        let view = super::super::view::scenario_view(&s);
        assert_eq!(view.curve.len(), 2);
        assert_eq!(view.curve[0].offered, "200/s");
        assert!(view.curve[0].harness.starts_with("kept"));
        assert!(view.curve[1]
            .harness
            .contains("measures the load generator"));
        // A single-rate scenario has no curve chart.
        let mut single = s.clone();
        single.curve.clear();
        assert!(curve_chart(&single).is_none());

        // A knee search: steps out of order, the knee and the objective marked.
        let mut knee = s.clone();
        knee.curve.insert(
            0,
            serde_json::from_value(point(5000.0, 400_000, 2_000_000, 100.0)).unwrap(),
        );
        knee.metrics.insert("knee_per_s".into(), 5000.0);
        knee.metrics.insert("knee_slo_p99_ms".into(), 10.0);
        let chart = curve_chart(&knee).unwrap();
        assert_eq!(chart.error, None);
        let legend: Vec<String> = chart
            .chart
            .unwrap()
            .legend
            .iter()
            .map(|l| l.label.clone())
            .collect();
        assert!(legend.contains(&"knee 5000/s".to_owned()), "{legend:?}");
        assert!(
            legend.contains(&"p99 objective 10 ms".to_owned()),
            "{legend:?}"
        );
    }

    #[test]
    fn fault_labels_are_short() {
        let fault = |kind: &str, target: &str| FaultRecord {
            kind: kind.into(),
            target: target.into(),
            start_s: 1.0,
            end_s: None,
        };
        let label = |k, t| fault_label(&fault(k, t));
        assert_eq!(
            label("kill", "nats node n2 (JetStream meta leader)"),
            "kill n2"
        );
        assert_eq!(label("pause", "dbservice"), "pause dbservice");
        assert_eq!(label("restart", ""), "restart");
        assert_eq!(label("partition", "(all)"), "partition");
    }

    #[test]
    fn spectrum_reaches_the_tail() {
        let mut h = histogram::new_histogram();
        for v in 1..=10_000u64 {
            histogram::record(&mut h, v * 1_000);
        }
        let (points, x_max) = spectrum_points(&h);
        assert_eq!(x_max, 10_000.0);
        let last = points.last().unwrap();
        assert_eq!(last.0, x_max);
        assert!((last.1 - 10.0).abs() < 0.05, "{last:?}");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
