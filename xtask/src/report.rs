//! `cargo xtask report`: render `report.md` and `report.html` for a run, add it to the history and
//! re-render the history index (`harness::report::render_run`); `--check` opens the pages in
//! headless Chromium and keeps a screenshot. Thin: arguments in, library calls out.

use anyhow::Context;
use harness::report::{self, browser};
use harness::results::{RunResults, RESULTS_FILE};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (default: the newest under reports/runs/).
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// History directory (default: reports/history/).
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// Compare with this run: a results.json, a run directory, or a run id from the history.
    /// Default: the latest earlier run in the history with the same environment fingerprint.
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<String>,
    /// Only re-render the history index.
    #[arg(long)]
    pub index_only: bool,
    /// Open the pages in headless Chromium: fail on script errors or missing charts, and keep a
    /// screenshot (report.png in the run directory, index.png in the history directory).
    /// ROSEY_SKIP_BROWSER=1 skips the browser.
    #[arg(long)]
    pub check: bool,
    /// Append report.md to the GitHub Actions job summary ($GITHUB_STEP_SUMMARY).
    #[arg(long)]
    pub job_summary: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let root = crate::workspace_root();
    let history_dir = args
        .history
        .unwrap_or_else(|| root.join(harness::history::DEFAULT_DIR));
    let skip_browser = std::env::var_os("ROSEY_SKIP_BROWSER").is_some_and(|v| v == "1");
    if args.index_only {
        let (index, warnings) = report::render_index(&history_dir)?;
        warnings.iter().for_each(|w| eprintln!("warning: {w}"));
        println!("index: {}", index.display());
        if args.check {
            check(&index, &history_dir.join("index.png"), skip_browser)?;
        }
        return Ok(harness::exit::OK);
    }
    let run_dir = match args.run {
        Some(dir) => dir,
        None => newest_run(&root.join("reports").join("runs"))?,
    };
    let baseline = args
        .baseline
        .as_deref()
        .map(|spec| load_baseline(spec, &history_dir))
        .transpose()?;
    let paths = report::render_run(&run_dir, &history_dir, baseline.as_ref())?;
    paths
        .warnings
        .iter()
        .for_each(|w| eprintln!("warning: {w}"));
    match &paths.baseline_run_id {
        Some(id) => println!("baseline: {id}"),
        None => println!("baseline: none"),
    }
    println!("markdown: {}", paths.markdown.display());
    println!("html:     {}", paths.html.display());
    println!("index:    {}", paths.index.display());
    if args.job_summary {
        append_job_summary(&paths.markdown)?;
    }
    if args.check {
        check(
            &paths.html,
            &run_dir.join(report::SCREENSHOT_FILE),
            skip_browser,
        )?;
        check(&paths.index, &history_dir.join("index.png"), skip_browser)?;
    }
    Ok(harness::exit::OK)
}

fn append_job_summary(markdown: &Path) -> anyhow::Result<()> {
    let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") else {
        eprintln!("--job-summary: GITHUB_STEP_SUMMARY is not set (not in GitHub Actions); skipped");
        return Ok(());
    };
    let text = std::fs::read_to_string(markdown)
        .with_context(|| format!("read {}", markdown.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&summary)
        .with_context(|| format!("open {}", Path::new(&summary).display()))?;
    use std::io::Write as _;
    writeln!(file, "{text}").context("append to the job summary")?;
    Ok(())
}

fn check(page: &Path, screenshot: &Path, skip: bool) -> anyhow::Result<()> {
    if skip {
        eprintln!(
            "ROSEY_SKIP_BROWSER=1: not opening {} in a browser",
            page.display()
        );
        return Ok(());
    }
    let checked = browser::check(page, screenshot)?;
    println!(
        "checked in {}: {} of {} charts drawn; screenshot {}",
        checked.browser,
        checked.charts,
        checked.expected,
        checked.screenshot.display()
    );
    Ok(())
}

/// `spec` is a results file, a run directory, or the id of a run in the history.
fn load_baseline(spec: &str, history_dir: &Path) -> anyhow::Result<RunResults> {
    let path = Path::new(spec);
    if path.is_dir() {
        return report::load_run(path);
    }
    if path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        return RunResults::from_json(&text).with_context(|| format!("parse {}", path.display()));
    }
    let history = harness::history::load(history_dir)?;
    history.run(spec).cloned().with_context(|| {
        format!(
            "--baseline {spec:?} is neither a file, a run directory nor a run id in {}",
            history_dir.display()
        )
    })
}

/// The run directory under `runs_dir` whose results started last.
fn newest_run(runs_dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(runs_dir).with_context(|| {
        format!(
            "no runs in {} (run `cargo xtask bench` first, or pass --run)",
            runs_dir.display()
        )
    })?;
    let mut newest: Option<(String, String, PathBuf)> = None;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join(RESULTS_FILE)) else {
            continue;
        };
        let Ok(run) = RunResults::from_json(&text) else {
            continue;
        };
        let key = (run.started_at, run.run_id, dir);
        if newest
            .as_ref()
            .is_none_or(|n| (&key.0, &key.1) > (&n.0, &n.1))
        {
            newest = Some(key);
        }
    }
    newest.map(|(_, _, dir)| dir).with_context(|| {
        format!(
            "no run directory with a readable results.json in {}",
            runs_dir.display()
        )
    })
}
