//! Exports of one run for external dashboards: Bencher Metric Format (BMF) and the custom formats
//! of github-action-benchmark. Every figure carries the 95 % bootstrap interval of that run
//! (resampling its intervals, as the gate does), so trackers can show how sure the number is.
//!
//! BMF layout: latency percentiles are benchmarks `<scenario>/p50`, `<scenario>/p99`,
//! `<scenario>/p99.9` with Bencher's built-in `latency` measure (nanoseconds); the scenario itself
//! is the benchmark for `throughput` (built-in, events per second) and for the custom measures
//! `cpu-us-per-event-<process>` and `rss-slope-<process>` (MiB per hour).
//!
//! github-action-benchmark takes one tool per file, so `gab` writes two arrays: the
//! smaller-is-better figures (`customSmallerIsBetter`) and the bigger-is-better ones
//! (`customBiggerIsBetter`).

use crate::compare::input::{blocks_of, load_intervals, summary_value};
use crate::compare::stats::{self, Resampling, ValueTable};
use crate::compare::{metric_defs, processes_under_test, Direction, RunInput};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Seed of the export's bootstrap (exports are deterministic too).
const SEED: u64 = 0xB3_4C_4E_52;
const RESAMPLES: usize = 1000;

/// One figure of one scenario with its 95 % interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub scenario: String,
    /// `p50`, `p99`, `p99.9`, `throughput`, `cpu_us_per_event.<process>`, `rss_slope.<process>`.
    pub metric: String,
    /// `ns`, `events/s`, `us/event`, `MiB/h`.
    pub unit: String,
    pub direction: Direction,
    pub value: f64,
    pub interval: Option<[f64; 2]>,
}

/// Every figure of the run that has a value.
pub fn figures(run: &RunInput) -> Vec<Figure> {
    let mut out = Vec::new();
    for scenario in &run.results.scenarios {
        let mut notes = Vec::new();
        let intervals = load_intervals(run, scenario, &mut notes);
        let table = ValueTable::new(intervals.iter().flatten().map(|iv| iv.histogram.unpack()));
        let processes = processes_under_test(std::iter::once(scenario));
        let blocks = blocks_of(scenario, intervals.as_deref(), &table, &processes);
        let sample = vec![blocks];
        let defs = metric_defs(&processes);
        let stat_list: Vec<_> = defs.iter().map(|d| d.1).collect();
        let groups: Vec<Vec<_>> = sample.iter().map(|c| c.iter().collect()).collect();
        let values = stats::evaluate(&table, &stat_list, &groups, 10.0);
        let replicates = if sample[0].len() >= 4 {
            stats::bootstrap_values(
                &table,
                &stat_list,
                &sample,
                Resampling {
                    resamples: RESAMPLES,
                    seed: SEED,
                    min_tail_events: 10.0,
                },
            )
        } else {
            vec![Vec::new(); stat_list.len()]
        };
        for (i, (metric, _, unit, direction)) in defs.iter().enumerate() {
            let Some(value) = values[i].or_else(|| summary_value(scenario, metric)) else {
                continue;
            };
            let enough = replicates[i].len() * 10 >= RESAMPLES * 9;
            let interval = if values[i].is_some() && enough {
                stats::percentile(&replicates[i], 0.025)
                    .zip(stats::percentile(&replicates[i], 0.975))
                    .map(|(lo, hi)| [lo, hi])
            } else {
                None
            };
            let (scale, unit) = if *unit == "bytes/h" {
                (1.0 / (1024.0 * 1024.0), "MiB/h")
            } else {
                (1.0, *unit)
            };
            if !value.is_finite() {
                continue;
            }
            out.push(Figure {
                scenario: scenario.name.clone(),
                metric: metric.clone(),
                unit: unit.to_owned(),
                direction: *direction,
                value: value * scale,
                interval: interval.map(|[lo, hi]| [lo * scale, hi * scale]),
            });
        }
    }
    out
}

/// Bencher Metric Format.
pub fn bmf(figures: &[Figure]) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for f in figures {
        let (benchmark, measure) = match f.metric.as_str() {
            "p50" | "p99" | "p99.9" => {
                (format!("{}/{}", f.scenario, f.metric), "latency".to_owned())
            }
            "throughput" => (f.scenario.clone(), "throughput".to_owned()),
            other => (f.scenario.clone(), other.replace(['_', '.'], "-")),
        };
        let mut m = serde_json::Map::new();
        m.insert("value".into(), f.value.into());
        if let Some([lo, hi]) = f.interval {
            m.insert("lower_value".into(), lo.into());
            m.insert("upper_value".into(), hi.into());
        }
        let entry = root
            .entry(benchmark)
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(measure, serde_json::Value::Object(m));
        }
    }
    serde_json::Value::Object(root)
}

/// One entry of github-action-benchmark's custom formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GabEntry {
    pub name: String,
    pub unit: String,
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
}

/// `(customSmallerIsBetter, customBiggerIsBetter)`.
pub fn gab(figures: &[Figure], run_label: &str) -> (Vec<GabEntry>, Vec<GabEntry>) {
    let mut smaller = Vec::new();
    let mut bigger = Vec::new();
    for f in figures {
        let entry = GabEntry {
            name: format!("{} {}", f.scenario, f.metric),
            unit: f.unit.clone(),
            value: f.value,
            range: f
                .interval
                .map(|[lo, hi]| format!("± {}", round3((hi - lo) / 2.0))),
            extra: Some(match f.interval {
                Some([lo, hi]) => format!(
                    "95 % bootstrap interval [{}, {}] {}; {run_label}",
                    round3(lo),
                    round3(hi),
                    f.unit
                ),
                None => format!("no interval data; {run_label}"),
            }),
        };
        match f.direction {
            Direction::LowerIsBetter => smaller.push(entry),
            Direction::HigherIsBetter => bigger.push(entry),
        }
    }
    (smaller, bigger)
}

fn round3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 3 - x.abs().log10().floor() as i32 - 1;
    let factor = 10f64.powi(digits.clamp(-12, 12));
    (x * factor).round() / factor
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bmf,
    Gab,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Format> {
        match s {
            "bmf" => Ok(Format::Bmf),
            "gab" => Ok(Format::Gab),
            other => anyhow::bail!("unknown export format {other:?} (expected bmf or gab)"),
        }
    }
}

/// Write the export of `run` to `out`. For `gab`, `out` gets the smaller-is-better array and
/// `<out stem>.bigger.json` the bigger-is-better one. Returns the files written.
pub fn write(run: &RunInput, format: Format, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let figures = figures(run);
    match format {
        Format::Bmf => {
            write_json(out, &bmf(&figures))?;
            Ok(vec![out.to_owned()])
        }
        Format::Gab => {
            let env = &run.results.environment;
            let label = format!(
                "run {} @ {}",
                run.results.run_id,
                env.git_revision.get(..10).unwrap_or(&env.git_revision)
            );
            let (smaller, bigger) = gab(&figures, &label);
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "export".into());
            let bigger_path = out.with_file_name(format!("{stem}.bigger.json"));
            write_json(out, &smaller)?;
            write_json(&bigger_path, &bigger)?;
            Ok(vec![out.to_owned(), bigger_path])
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).context("serialize export")?;
    crate::files::write_atomic(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(
        metric: &str,
        direction: Direction,
        value: f64,
        interval: Option<[f64; 2]>,
    ) -> Figure {
        let unit = if metric.starts_with('p') {
            "ns"
        } else {
            "events/s"
        };
        Figure {
            scenario: "stats".into(),
            metric: metric.into(),
            unit: unit.into(),
            direction,
            value,
            interval,
        }
    }

    #[test]
    fn bmf_has_bencher_shape() {
        let figures = [
            figure(
                "p99",
                Direction::LowerIsBetter,
                1200.0,
                Some([1100.0, 1300.0]),
            ),
            figure("throughput", Direction::HigherIsBetter, 500.0, None),
            Figure {
                unit: "us/event".into(),
                ..figure(
                    "cpu_us_per_event.dbservice",
                    Direction::LowerIsBetter,
                    41.5,
                    None,
                )
            },
        ];
        let v = bmf(&figures);
        assert_eq!(
            v["stats/p99"]["latency"],
            serde_json::json!({"value": 1200.0, "lower_value": 1100.0, "upper_value": 1300.0})
        );
        assert_eq!(
            v["stats"]["throughput"],
            serde_json::json!({"value": 500.0})
        );
        assert_eq!(v["stats"]["cpu-us-per-event-dbservice"]["value"], 41.5);
    }

    #[test]
    fn gab_splits_by_direction_with_range() {
        let figures = [
            figure("p50", Direction::LowerIsBetter, 900.0, Some([850.0, 960.0])),
            figure("throughput", Direction::HigherIsBetter, 500.0, None),
        ];
        let (smaller, bigger) = gab(&figures, "run r @ abc");
        assert_eq!(smaller.len(), 1);
        assert_eq!(smaller[0].name, "stats p50");
        assert_eq!(smaller[0].range.as_deref(), Some("± 55"));
        assert_eq!(bigger[0].name, "stats throughput");
        assert_eq!(bigger[0].range, None);
        let json = serde_json::to_value(&bigger).unwrap();
        assert!(
            json[0].get("range").is_none(),
            "absent range must be omitted, not null: {json}"
        );
    }

    #[test]
    fn rounding_keeps_three_significant_digits() {
        assert_eq!(round3(55.0), 55.0);
        assert_eq!(round3(0.012_345), 0.0123);
        assert_eq!(round3(123_456.0), 123_000.0);
    }
}
