//! Reports people want to read: `report.md` (pull-request comment, job summary), `report.html`
//! (one self-contained page with charts) for a run, and `index.html` (trends) for the history.
//!
//! The bench engine calls [`render_run`] at the end of every `cargo xtask bench`; `cargo xtask
//! report` calls it (or [`render_index`]) for existing runs. Numbers and labels are computed in
//! [`view`]; templates hold layout only; charts come from plotters ([`charts`]).

pub mod browser;
pub mod charts;
pub mod escape;
pub mod html;
pub mod index;
pub mod markdown;
pub mod view;

use crate::compare::{self, CompareOptions, Comparison, RunInput};
use crate::history::{self, History};
use crate::results::{RunResults, RESULTS_FILE};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// File names inside a run directory.
pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
pub const SCREENSHOT_FILE: &str = "report.png";
/// Where `cargo xtask compare` leaves its verdicts in a run directory.
pub const COMPARE_FILE: &str = "compare.json";
/// File name of the index inside the history directory.
pub const INDEX_FILE: &str = "index.html";

/// What [`render_run`] wrote.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub index: PathBuf,
    /// The run's copy in the history, when it could be added.
    pub history_entry: Option<PathBuf>,
    /// The baseline the report compares with, if any.
    pub baseline_run_id: Option<String>,
    /// Things a person should know (skipped history files, a history entry that could not be
    /// written). Not printed here: the caller decides where they go.
    pub warnings: Vec<String>,
}

/// How a baseline was chosen, for the report's wording.
fn describe_choice(given: bool, branch: Option<&str>) -> String {
    match (given, branch) {
        (true, _) => "given explicitly".into(),
        (false, Some(b)) => format!("latest comparable run on {b}"),
        (false, None) => "latest comparable run".into(),
    }
}

/// Pick the baseline: the given one, else the latest comparable earlier run on the same branch,
/// else on any branch.
pub fn choose_baseline<'a>(
    run: &RunResults,
    history: &'a History,
    given: Option<&'a RunResults>,
) -> Option<(&'a RunResults, String)> {
    if let Some(b) = given {
        return Some((b, describe_choice(true, None)));
    }
    let branch = run.environment.git_branch.as_deref();
    if let Some(b) = branch.and_then(|br| history::latest_comparable(history, run, Some(br))) {
        return Some((b, describe_choice(false, branch)));
    }
    history::latest_comparable(history, run, None).map(|b| (b, describe_choice(false, None)))
}

/// The regression gate's verdicts for `run` against `baselines` (one run, or a branch's recent
/// runs: see [`baseline_runs`]), or `None` when none is comparable (then nothing is compared).
/// A baseline's interval logs are used when its run directory sits next to `run_dir` (a local
/// `reports/runs/`); the history keeps results only.
pub fn gate(run: &RunResults, run_dir: &Path, baselines: &[&RunResults]) -> Option<Comparison> {
    let baselines: Vec<&RunResults> = baselines
        .iter()
        .copied()
        .filter(|b| history::comparable(run, b))
        .collect();
    if baselines.is_empty() {
        return None;
    }
    // `cargo xtask compare` may already have decided this very comparison: reuse its verdicts
    // (same numbers, and the bootstrap is not free on long runs).
    if let Some(done) = previous_comparison(run_dir, run, &baselines) {
        return Some(done);
    }
    let base: Vec<RunInput> = baselines
        .iter()
        .map(|baseline| {
            let sibling = run_dir.parent().map(|runs| runs.join(&baseline.run_id));
            let dir = sibling
                .filter(|dir| load_run(dir).is_ok_and(|on_disk| on_disk.run_id == baseline.run_id));
            RunInput {
                results: (*baseline).clone(),
                dir,
            }
        })
        .collect();
    let cand = RunInput {
        results: run.clone(),
        dir: Some(run_dir.to_owned()),
    };
    Some(compare::compare_with_baselines(
        &base,
        &cand,
        &CompareOptions::default(),
    ))
}

/// What the report gates against: an explicitly given baseline alone; else the chosen baseline's
/// branch's most recent comparable runs (up to [`compare::HISTORY_BASELINE_RUNS`], the chosen one
/// among them), so that the gate sees how much runs differ from each other.
pub fn baseline_runs<'a>(
    run: &RunResults,
    history: &'a History,
    chosen: &'a RunResults,
    given: bool,
) -> Vec<&'a RunResults> {
    if given {
        return vec![chosen];
    }
    let branch = chosen.environment.git_branch.as_deref();
    let mut runs = history::recent_comparable(history, run, branch, compare::HISTORY_BASELINE_RUNS);
    if !runs.iter().any(|r| r.run_id == chosen.run_id) {
        runs = vec![chosen];
    }
    runs
}

/// `<run_dir>/compare.json` when it compares exactly `baselines` with `run`.
fn previous_comparison(
    run_dir: &Path,
    run: &RunResults,
    baselines: &[&RunResults],
) -> Option<Comparison> {
    let text = std::fs::read_to_string(run_dir.join(COMPARE_FILE)).ok()?;
    let done: Comparison = serde_json::from_str(&text).ok()?;
    let ids: Vec<&str> = baselines.iter().map(|b| b.run_id.as_str()).collect();
    let same_pair = done.candidate.run_ids == [run.run_id.as_str()] && done.baseline.run_ids == ids;
    same_pair.then_some(done)
}

/// The markdown report of `run` against `baseline` (already chosen, see [`choose_baseline`]);
/// `comparison` from [`gate`], or `None` for a plain percentage change.
pub fn render_markdown(
    run: &RunResults,
    baseline: Option<(&RunResults, String)>,
    comparison: Option<&Comparison>,
) -> anyhow::Result<String> {
    markdown::render(&view::build(run, baseline, comparison))
}

/// The HTML report of `run` (interval logs are read relative to `run_dir`).
pub fn render_html(
    run: &RunResults,
    run_dir: &Path,
    baseline: Option<(&RunResults, String)>,
    comparison: Option<&Comparison>,
) -> anyhow::Result<String> {
    let overlay = baseline
        .as_ref()
        .filter(|(b, _)| history::comparable(run, b))
        .map(|(b, _)| *b);
    let view = view::build(run, baseline.clone(), comparison);
    html::render(&view, run, run_dir, overlay)
}

/// Read `<run_dir>/results.json`.
pub fn load_run(run_dir: &Path) -> anyhow::Result<RunResults> {
    let path = run_dir.join(RESULTS_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    RunResults::from_json(&text).with_context(|| format!("parse {}", path.display()))
}

/// Everything at the end of a bench run: add the run to the history in `history_dir` (idempotent),
/// write `report.md` and `report.html` into `run_dir`, and re-render `<history_dir>/index.html`.
///
/// `baseline`: compare with this run; `None` picks the latest comparable earlier run from the
/// history (same branch first). A baseline from a different environment is shown as "not
/// comparable" and never compared or overlaid.
pub fn render_run(
    run_dir: &Path,
    history_dir: &Path,
    baseline: Option<&RunResults>,
) -> anyhow::Result<ReportPaths> {
    let run = load_run(run_dir)?;
    let mut warnings = Vec::new();
    let history_entry = match history::append(history_dir, &run, run_dir) {
        Ok(path) => Some(path),
        Err(e) => {
            warnings.push(format!("history: run {} not added: {e:#}", run.run_id));
            None
        }
    };
    let history = history::load(history_dir)?;
    warnings.extend(history.warnings());
    let chosen = choose_baseline(&run, &history, baseline);
    let baseline_run_id = chosen.as_ref().map(|(b, _)| b.run_id.clone());
    let comparison = chosen.as_ref().and_then(|(b, _)| {
        gate(
            &run,
            run_dir,
            &baseline_runs(&run, &history, b, baseline.is_some()),
        )
    });

    let markdown_path = run_dir.join(MARKDOWN_FILE);
    let text = render_markdown(&run, chosen.clone(), comparison.as_ref())?;
    write(&markdown_path, &text)?;
    let html_path = run_dir.join(HTML_FILE);
    let page = render_html(&run, run_dir, chosen, comparison.as_ref())?;
    write(&html_path, &page)?;
    let index = write_index(&history, history_dir)?;
    Ok(ReportPaths {
        markdown: markdown_path,
        html: html_path,
        index,
        history_entry,
        baseline_run_id,
        warnings,
    })
}

/// Re-render `<history_dir>/index.html` only. Returns its path and the history's warnings.
pub fn render_index(history_dir: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let history = history::load(history_dir)?;
    let path = write_index(&history, history_dir)?;
    Ok((path, history.warnings()))
}

fn write_index(history: &History, history_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(history_dir)
        .with_context(|| format!("create {}", history_dir.display()))?;
    let path = history_dir.join(INDEX_FILE);
    write(&path, &index::render(history)?)?;
    Ok(path)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_atomic(path, text)
}
