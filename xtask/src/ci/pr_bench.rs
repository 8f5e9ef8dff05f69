//! `cargo xtask ci pr-bench`: the pull-request gate, and its rehearsal on any machine.
//!
//! ```text
//! cargo xtask ci pr-bench --base origin/main            # what the PR job runs
//! cargo xtask ci pr-bench --base HEAD \
//!     --candidate-dbservice-arg=--fault-stats-delay-ms=2  # rehearse: must say regressed
//! ```
//!
//! The working tree (B) runs against the merge base of HEAD and `--base` (A) in interleaved
//! rounds on one runner and one pinned nats-server, so the verdict does not depend on which
//! machine the job landed on. Rounds are added in pairs while the bench time stays within the
//! budget (`harness::ab`), then the paired comparison decides by the one exit-code rule
//! (`harness::exit`): a missed target, lost events, a gated regression, a harness error, or no
//! baseline (unless `--allow-no-baseline`) each fail, and `summary.md` lists every one of them.

use anyhow::Context;
use harness::compare::{self, CompareOptions};
use harness::exit::{self, Finding};
use harness::provision::NatsChoice;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The pull request's base branch or revision; the baseline (A) is the merge base of HEAD
    /// and it. For a rehearsal, `HEAD` compares the working tree with its own commit.
    #[arg(long, value_name = "REV")]
    pub base: String,
    /// Bench time for all rounds together, in minutes (the two release builds come on top).
    /// Rounds are added in pairs while the next pair is expected to fit; at least 2 per side.
    /// Default: `[gate] budget_minutes` in harness/bench.toml (20).
    #[arg(long, value_name = "MINUTES")]
    pub budget_minutes: Option<f64>,
    /// The most rounds per side, whatever the budget.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_rounds: usize,
    /// Bench profile of every round.
    #[arg(long, default_value = "quick", value_parser = ["quick", "default", "soak"])]
    pub profile: String,
    /// Run only this scenario (repeatable). Default: `[gate] pr_scenarios` in
    /// harness/bench.toml (the service scenarios that fit several rounds in the budget).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Output directory (default: reports/runs/pr-bench-<UTC time>/): the A/B run, compare.json,
    /// compare.md and summary.md (the PR comment).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Extra argument for the working tree's rosey-dbservice (repeatable): the built-in faults
    /// (`--fault-stats-delay-ms=2`, `--fault-notice-delay-us=300`) rehearse that the gate sees them.
    #[arg(
        long = "candidate-dbservice-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub candidate_dbservice_args: Vec<String>,
    /// A base that cannot be built or compared is a note, not a failure (the PR label
    /// `bench-no-baseline`): the working tree is still judged against its targets.
    #[arg(long)]
    pub allow_no_baseline: bool,
    /// Smallest change worth a verdict, in percent.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub min_effect: f64,
}

pub fn run(mut args: Args) -> anyhow::Result<u8> {
    let root = crate::workspace_root();
    let config =
        harness::config::BenchConfig::load(&root.join("harness/bench.toml"), &args.profile)?;
    if args.scenarios.is_empty() {
        args.scenarios.clone_from(&config.gate.pr_scenarios);
    }
    let budget_minutes = args
        .budget_minutes
        .or(config.gate.budget_minutes)
        .unwrap_or(20.0);
    anyhow::ensure!(
        budget_minutes > 0.0 && budget_minutes.is_finite(),
        "--budget-minutes must be positive"
    );
    anyhow::ensure!(args.max_rounds >= 2, "--max-rounds must be at least 2");
    crate::bench::check_scenarios(&args.scenarios)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| harness::ab::timestamped_dir(&root.join("reports/runs"), "pr-bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;

    let merge_base = crate::git::git(&root, &["merge-base", "HEAD", &args.base])
        .with_context(|| format!("the merge base of HEAD and {}", args.base))?;
    let merge_base = merge_base.trim().to_owned();
    eprintln!(
        "pr-bench: working tree against {} (merge base of HEAD and {}), budget {} min",
        short(&merge_base),
        args.base,
        budget_minutes
    );
    let candidate = crate::bench::build_services(&root)?;
    let target_dir = crate::cargo::target_dir(&root);
    let mut bench = crate::bench::options(&root, candidate.clone(), NatsChoice::Local);
    bench.profile.clone_from(&args.profile);
    bench.scenarios.clone_from(&args.scenarios);
    bench.out = Some(out.clone());
    let options = CompareOptions {
        min_effect: args.min_effect / 100.0,
        allow_no_baseline: args.allow_no_baseline,
        ..CompareOptions::default()
    };

    let baseline = match crate::revision::build(
        &root,
        &merge_base,
        &target_dir.join("ab"),
        Some(&target_dir),
    ) {
        Ok(b) => b,
        Err(e) => {
            let why = format!(
                "the merge base {} could not be built: {e:#}",
                short(&merge_base)
            );
            return without_baseline(&args, &out, bench, why);
        }
    };
    let started = std::time::Instant::now();
    let outcome = harness::ab::run_ab(harness::ab::AbOptions {
        baseline,
        candidate,
        candidate_dbservice_args: args.candidate_dbservice_args.clone(),
        baseline_dbservice_args: Vec::new(),
        rounds_per_side: args.max_rounds,
        budget: Some(std::time::Duration::from_secs_f64(budget_minutes * 60.0)),
        bench,
        compare: options,
    })?;
    let mut summary = compare::render::markdown(&outcome.comparison);
    summary.push_str(&format!(
        "\n*`cargo xtask ci pr-bench`: the working tree against {} (merge base with {}), {} rounds \
         per side of the {} profile in {:.1} min of bench time (budget {} min){}.*\n",
        short(&merge_base),
        args.base,
        outcome.comparison.candidate.run_ids.len(),
        args.profile,
        started.elapsed().as_secs_f64() / 60.0,
        budget_minutes,
        if args.candidate_dbservice_args.is_empty() {
            String::new()
        } else {
            format!(
                "; candidate rosey-dbservice with {}",
                args.candidate_dbservice_args.join(" ")
            )
        }
    ));
    finish(&out, &summary, outcome.exit_code)
}

/// No baseline to compare with: a finding (exit 2), or with `--allow-no-baseline` a single run
/// of the working tree judged by its own findings.
fn without_baseline(
    args: &Args,
    out: &Path,
    bench: harness::BenchOptions,
    why: String,
) -> anyhow::Result<u8> {
    let mut summary = format!(
        "{}\n## Rosey bench: no baseline\n\n",
        compare::COMMENT_MARKER
    );
    if !args.allow_no_baseline {
        let findings = [Finding::NoBaseline { detail: why }];
        summary.push_str("**🔴 fails: 1 finding**\n\n");
        summary.push_str(&exit::summary(&findings));
        summary.push_str(
            "\nAdd the label `bench-no-baseline` (or `--allow-no-baseline`) to judge the pull \
             request by its targets alone.\n",
        );
        return finish(out, &summary, exit::code(&findings));
    }
    let outcome = harness::run_bench(harness::BenchOptions {
        out: Some(out.join("run")),
        ..bench
    })?;
    let findings = harness::run::findings(&outcome.results);
    summary.push_str(&format!(
        "No comparison ({why}; allowed by --allow-no-baseline): the working tree is judged by its \
         targets alone.\n\n"
    ));
    summary.push_str(if findings.is_empty() {
        "**✅ passes its targets**\n\n"
    } else {
        "**🔴 fails:**\n\n"
    });
    summary.push_str(&exit::summary(&findings));
    summary.push('\n');
    summary.push_str(&harness::run::summary_table(&outcome.results));
    finish(out, &summary, exit::code(&findings))
}

/// Write `summary.md` (the PR comment), print it, and return the exit code.
fn finish(out: &Path, summary: &str, code: u8) -> anyhow::Result<u8> {
    let path = out.join("summary.md");
    harness::files::write_atomic(&path, summary)?;
    print!("{summary}");
    eprintln!("pr-bench: wrote {} (exit {code})", path.display());
    Ok(code)
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}
