//! `cargo xtask compare`: the regression gate over two finished runs, and exports of one run.
//!
//! ```text
//! cargo xtask compare --run reports/runs/<id> --baseline history:main
//! cargo xtask compare --run <dir|results.json> --baseline <dir|results.json> [--min-effect 5]
//! cargo xtask compare --run <dir> --export bmf --out bmf.json
//! ```
//!
//! Writes `compare.json` and `compare.md` (into the run directory unless `--output-dir`), prints
//! the markdown, and exits by the one rule (`harness::exit`): 0 when nothing was found, 2 for a
//! gated regression, a missed target, lost events or no comparable baseline (unless
//! `--allow-no-baseline`), 1 for a harness error. All statistics live in `harness::compare`.

use anyhow::Context;
use harness::compare::{self, CompareOptions, Correction, RunInput};
use harness::export::{self, Format};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The candidate: a run directory or its results.json.
    #[arg(long)]
    pub run: PathBuf,
    /// The baseline: `history:<branch>` (the newest comparable runs of that branch in
    /// --history-dir, up to 5: their spread is the noise between runs that a change must stand
    /// out of; verdicts need at least two), or a run directory or results.json (one run: the
    /// change is estimated, but every verdict is "inconclusive", since one run per side cannot
    /// tell a change from the variation between runs; use `bench --against` for two builds).
    #[arg(long)]
    pub baseline: Option<String>,
    /// History store for `history:<branch>` baselines.
    #[arg(long, default_value = "reports/history")]
    pub history_dir: PathBuf,
    /// Where compare.json and compare.md go (default: the candidate's run directory).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Smallest change worth a verdict, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub min_effect: f64,
    /// Smallest RSS-slope change worth a verdict, in MiB per hour.
    #[arg(long, default_value_t = 16.0)]
    pub min_rss_slope: f64,
    /// Family-wise error rate of all intervals together.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples per scenario.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Bootstrap seed (results are deterministic for a seed).
    #[arg(long, default_value_t = CompareOptions::default().seed)]
    pub seed: u64,
    /// Compare even when the environment fingerprints differ.
    #[arg(long)]
    pub allow_different_env: bool,
    /// Turn the multiple-comparison correction off (experiments only: expect false alarms).
    #[arg(long)]
    pub no_correction: bool,
    /// No comparable baseline (none in the history, or a different environment) is a note, not
    /// a failure. For a first run, or a pull request that changes the environment on purpose.
    #[arg(long)]
    pub allow_no_baseline: bool,
    /// Export the candidate run instead of / besides comparing: bmf (Bencher) or gab
    /// (github-action-benchmark; also writes <out stem>.bigger.json).
    #[arg(long, requires = "out")]
    pub export: Option<Format>,
    /// File of the export.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not print the markdown.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    fn options(&self) -> CompareOptions {
        CompareOptions {
            min_effect: self.min_effect / 100.0,
            min_rss_slope_bytes_per_hour: self.min_rss_slope * 1024.0 * 1024.0,
            alpha: self.alpha,
            correction: if self.no_correction {
                Correction::None
            } else {
                Correction::Holm
            },
            resamples: self.resamples,
            seed: self.seed,
            allow_different_env: self.allow_different_env,
            allow_no_baseline: self.allow_no_baseline,
            ..CompareOptions::default()
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let candidate = RunInput::load(&args.run)?;
    if let (Some(format), Some(out)) = (args.export, &args.out) {
        for file in export::write(&candidate, format, out)? {
            eprintln!("compare: wrote {}", file.display());
        }
    }
    let Some(spec) = &args.baseline else {
        anyhow::ensure!(
            args.export.is_some(),
            "nothing to do: give --baseline and/or --export"
        );
        return Ok(harness::exit::OK);
    };
    let baseline =
        compare::resolve_baseline(spec, &args.history_dir, &candidate.results.environment)
            .with_context(|| format!("baseline {spec}"))?;
    eprintln!(
        "compare: candidate {} against baseline {}",
        candidate.results.run_id,
        run_ids(&baseline)
    );
    let comparison = compare::compare_with_baselines(&baseline, &candidate, &args.options());
    let dir = output_dir(&args, &candidate);
    let (json, md) = compare::write(&dir, &comparison)?;
    if !args.quiet {
        print!("{}", compare::render::markdown(&comparison));
    }
    eprintln!("compare: wrote {} and {}", json.display(), md.display());
    Ok(comparison.exit_code())
}

fn run_ids(runs: &[RunInput]) -> String {
    let ids: Vec<&str> = runs.iter().map(|r| r.results.run_id.as_str()).collect();
    format!(
        "{} ({} run{})",
        ids.join(", "),
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    )
}

fn output_dir(args: &Args, candidate: &RunInput) -> PathBuf {
    args.output_dir
        .clone()
        .or_else(|| candidate.dir.clone())
        .unwrap_or_else(|| Path::new(".").to_owned())
}

/// The regression-gate options of `cargo xtask bench` (flattened into its arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct GateArgs {
    /// Interleaved A/B run: the working tree (B) against this git revision (A), in alternating
    /// rounds (A B B A …) on one NATS server, then the paired comparison.
    #[arg(long, value_name = "REV")]
    pub against: Option<String>,
    /// Rounds per side of an A/B run.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub rounds: usize,
    /// Extra argument for the working tree's rosey-dbservice in an A/B run (repeatable), e.g.
    /// `--candidate-dbservice-arg=--fault-stats-delay-ms=2`.
    #[arg(
        long = "candidate-dbservice-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub candidate_dbservice_args: Vec<String>,
    /// Extra argument for the baseline revision's rosey-dbservice in an A/B run (repeatable).
    #[arg(
        long = "baseline-dbservice-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub baseline_dbservice_args: Vec<String>,
    /// After the run, compare it with this baseline (run directory, results.json or
    /// `history:<branch>`), as `cargo xtask compare` does.
    #[arg(long, value_name = "BASELINE")]
    pub baseline: Option<String>,
    /// History store for `--baseline history:<branch>`.
    #[arg(long, default_value = "reports/history", value_name = "DIR")]
    pub history_dir: PathBuf,
    /// Smallest change worth a verdict, in percent.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub min_effect: f64,
    /// With --baseline: no comparable baseline is a note, not a failure.
    #[arg(long)]
    pub allow_no_baseline: bool,
}

impl GateArgs {
    pub fn options(&self) -> CompareOptions {
        CompareOptions {
            min_effect: self.min_effect / 100.0,
            allow_no_baseline: self.allow_no_baseline,
            ..CompareOptions::default()
        }
    }
}

/// `cargo xtask bench --against <rev>`: the interleaved A/B run in place of a single run.
pub fn bench_against(
    gate: &GateArgs,
    root: &Path,
    bench: harness::BenchOptions,
) -> anyhow::Result<u8> {
    let against = gate.against.clone().context("--against")?;
    let harness::ServicesUnderTest::Spawn(candidate) = bench.services.clone() else {
        anyhow::bail!("an A/B run starts the services itself");
    };
    // Built revisions are cached under the workspace's target directory, which also seeds a new
    // revision's build (its dependencies are already compiled there).
    // The baseline is built first, so a build failure costs no rounds.
    let target_dir = crate::cargo::target_dir(root);
    let baseline =
        crate::revision::build(root, &against, &target_dir.join("ab"), Some(&target_dir))?;
    let outcome = harness::ab::run_ab(harness::ab::AbOptions {
        baseline,
        candidate,
        candidate_dbservice_args: gate.candidate_dbservice_args.clone(),
        baseline_dbservice_args: gate.baseline_dbservice_args.clone(),
        rounds_per_side: gate.rounds,
        budget: None,
        bench,
        compare: gate.options(),
    })?;
    print!("{}", compare::render::markdown(&outcome.comparison));
    eprintln!(
        "ab: wrote {} (compare.json, compare.md, aa.json, bb.json, rounds/)",
        outcome.dir.display()
    );
    Ok(outcome.exit_code)
}

/// `cargo xtask bench --baseline <spec>`: gate the finished run; the comparison's findings hold
/// the run's own (its harness errors, lost events and missed targets), so its exit code is the
/// whole verdict.
pub fn bench_baseline(gate: &GateArgs, outcome: &harness::run::BenchOutcome) -> anyhow::Result<u8> {
    let Some(spec) = &gate.baseline else {
        return Ok(outcome.exit_code);
    };
    let candidate = RunInput {
        results: outcome.results.clone(),
        dir: Some(outcome.run_dir.clone()),
    };
    let baseline =
        compare::resolve_baseline(spec, &gate.history_dir, &candidate.results.environment)
            .with_context(|| format!("baseline {spec}"))?;
    eprintln!("bench: gate against baseline {}", run_ids(&baseline));
    let comparison = compare::compare_with_baselines(&baseline, &candidate, &gate.options());
    compare::write(&outcome.run_dir, &comparison)?;
    println!();
    print!("{}", compare::render::markdown(&comparison));
    Ok(comparison.exit_code())
}
