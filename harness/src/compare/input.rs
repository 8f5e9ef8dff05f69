//! Reading runs for the gate: results files, run directories, history entries, and the cutting
//! of one run's scenario into bootstrap blocks (one per interval of its HdrHistogram interval log).

use super::stats::{Block, ValueTable};
use crate::histogram;
use crate::results::{Environment, RunResults, ScenarioResult, RESULTS_FILE};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// One run as input: its results and the directory its interval logs are relative to.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub results: RunResults,
    pub dir: Option<PathBuf>,
}

impl RunInput {
    /// Load `path`: a `results.json` or a run directory containing one.
    pub fn load(path: &Path) -> anyhow::Result<RunInput> {
        let file = if path.is_dir() {
            path.join(RESULTS_FILE)
        } else {
            path.to_owned()
        };
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let results =
            RunResults::from_json(&text).with_context(|| format!("parse {}", file.display()))?;
        // A history entry `<dir>/<run_id>.json` keeps its interval logs in `<dir>/<run_id>/`.
        let sibling = file
            .file_stem()
            .and_then(|stem| Some(file.parent()?.join(stem)))
            .filter(|d| d.is_dir());
        let dir = if file.file_name().is_some_and(|n| n == RESULTS_FILE) {
            file.parent().map(Path::to_owned)
        } else {
            sibling
        };
        Ok(RunInput {
            results,
            dir: dir.or_else(|| file.parent().map(Path::to_owned)),
        })
    }
}

/// How many of a branch's newest comparable runs `history:<branch>` compares with: enough to
/// see how much runs differ from each other, few enough to follow the branch.
pub const HISTORY_BASELINE_RUNS: usize = 5;

/// Resolve `--baseline`: `history:<branch>` (the newest [`HISTORY_BASELINE_RUNS`] runs of that
/// branch in `history_dir` whose fingerprint matches the candidate's, newest last; when none
/// matches, the newest run, which the gate will then report as not comparable; no run at all when
/// the branch has none, which the gate reports as "no comparable baseline"), a run directory, or
/// a results file (one run).
///
/// History entries are `<history_dir>/<run_id>.json` (the history store's layout); CI also keeps
/// the run's interval logs in `<history_dir>/<run_id>/` so latency percentiles can be
/// bootstrapped. Run directories below `history_dir` are found too.
pub fn resolve_baseline(
    spec: &str,
    history_dir: &Path,
    candidate: &Environment,
) -> anyhow::Result<Vec<RunInput>> {
    let Some(branch) = spec.strip_prefix("history:") else {
        return Ok(vec![RunInput::load(Path::new(spec))?]);
    };
    let mut found = Vec::new();
    collect_history(history_dir, 0, &mut found);
    let mut on_branch: Vec<RunInput> = found
        .into_iter()
        .filter(|r| r.results.environment.git_branch.as_deref() == Some(branch))
        .collect();
    if on_branch.is_empty() {
        // Not an error: the comparison reports "no comparable baseline", which fails the gate
        // unless the caller opted out.
        return Ok(Vec::new());
    }
    on_branch.sort_by(|a, b| {
        a.results
            .started_at
            .cmp(&b.results.started_at)
            .then(a.results.run_id.cmp(&b.results.run_id))
    });
    let fingerprint = candidate.fingerprint();
    let newest = on_branch.pop().expect("not empty");
    let mut matching: Vec<RunInput> = on_branch
        .into_iter()
        .chain(std::iter::once(newest.clone()))
        .filter(|r| r.results.environment.fingerprint() == fingerprint)
        .collect();
    if matching.is_empty() {
        return Ok(vec![newest]);
    }
    let skip = matching.len().saturating_sub(HISTORY_BASELINE_RUNS);
    Ok(matching.split_off(skip))
}

fn collect_history(dir: &Path, depth: usize, out: &mut Vec<RunInput>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth < 2 {
            collect_history(&path, depth + 1, out);
        } else if path.extension().is_some_and(|e| e == "json")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            // Other JSON (indexes, compare.json) is skipped, not an error.
            if let Ok(run) = RunInput::load(&path) {
                out.push(run);
            }
        }
    }
}

/// The scenario's summary figure for `metric`, shown when no interval data exist.
pub(crate) fn summary_value(s: &ScenarioResult, metric: &str) -> Option<f64> {
    let latency = s.latency.as_ref();
    match metric {
        "p50" => latency.map(|l| l.p50_ns as f64),
        "p99" => latency.map(|l| l.p99_ns as f64),
        "p99.9" => latency.map(|l| l.p999_ns as f64),
        "throughput" => s.throughput_per_s,
        _ => {
            let (kind, process) = metric.split_once('.')?;
            let r = s.resources.iter().find(|r| r.process == process)?;
            match kind {
                "cpu_us_per_event" => r.cpu_us_per_event,
                "rss_slope" => r.rss_slope_bytes_per_hour,
                _ => None,
            }
        }
    }
}

/// Read the scenario's headline interval histograms, if it has an interval log. They are kept
/// packed: a long run's full histograms would not fit in memory together.
pub(crate) fn load_intervals(
    run: &RunInput,
    s: &ScenarioResult,
    notes: &mut Vec<String>,
) -> Option<Vec<histogram::PackedInterval>> {
    let rel = s.interval_log.as_deref()?;
    // Without a run directory, the log is looked for relative to the current one, as before,
    // and confined to it like any other.
    let dir = run.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let packed = crate::results::interval_log_path(&dir, rel).and_then(|path| {
        histogram::map_interval_log(&path, |iv| histogram::PackedInterval {
            histogram: histogram::Packed::pack(&iv.histogram),
            start: iv.start,
            length: iv.length,
            tag: iv.tag,
        })
    });
    match packed {
        Ok(all) => {
            let tagged = all.iter().any(|i| i.tag.as_deref() == Some("latency"));
            let headline: Vec<_> = all
                .into_iter()
                .filter(|i| {
                    if tagged {
                        i.tag.as_deref() == Some("latency")
                    } else {
                        i.tag.is_none()
                    }
                })
                .collect();
            (!headline.is_empty()).then_some(headline)
        }
        Err(e) => {
            notes.push(format!(
                "run {}: interval log unusable ({e:#}); latency percentiles not compared",
                run.results.run_id
            ));
            None
        }
    }
}

/// The blocks of one run's scenario: one per interval, with the CPU and RSS samples of each
/// process under test assigned to the interval containing the middle of their sampling period.
pub(crate) fn blocks_of(
    s: &ScenarioResult,
    intervals: Option<&[histogram::PackedInterval]>,
    table: &ValueTable,
    processes: &[String],
) -> Vec<Block> {
    let mut blocks: Vec<(f64, Block)> = match intervals {
        Some(ivs) => ivs
            .iter()
            .map(|iv| {
                let h = iv.histogram.unpack();
                let block = Block {
                    latency: table.sparse(&h),
                    events: h.len(),
                    length_s: iv.length.as_secs_f64(),
                    cpu_us: vec![None; processes.len()],
                    rss: vec![Vec::new(); processes.len()],
                };
                (iv.start.as_secs_f64(), block)
            })
            .collect(),
        None => s
            .intervals
            .iter()
            .map(|p| {
                let block = Block {
                    latency: Vec::new(),
                    events: p.count,
                    length_s: p.length_s,
                    cpu_us: vec![None; processes.len()],
                    rss: vec![Vec::new(); processes.len()],
                };
                (p.t_s, block)
            })
            .collect(),
    };
    blocks.retain(|(_, b)| b.length_s > 0.0);
    for (slot, process) in processes.iter().enumerate() {
        let mut samples: Vec<_> = s
            .resource_timeline
            .iter()
            .filter(|r| &r.process == process)
            .collect();
        samples.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let mut previous: Option<f64> = None;
        for sample in samples {
            let Some(start) = previous.replace(sample.t_s) else {
                continue;
            };
            let period = sample.t_s - start;
            if period <= 0.0 {
                continue;
            }
            let middle = start + period / 2.0;
            if let Some((_, block)) = blocks
                .iter_mut()
                .find(|(t, b)| middle >= *t && middle < t + b.length_s)
            {
                let cpu = block.cpu_us[slot].get_or_insert(0.0);
                *cpu += sample.cpu_percent / 100.0 * period * 1e6;
                block.rss[slot].push((sample.t_s, sample.rss_bytes as f64));
            }
        }
    }
    blocks.into_iter().map(|(_, b)| b).collect()
}
