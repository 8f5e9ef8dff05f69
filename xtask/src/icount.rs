//! `cargo xtask icount`: the instruction-count lane (`harness/benches/icount.rs` under Callgrind
//! through gungraun), and its gate against another revision.
//!
//! Instruction counts do not depend on what else the machine is doing, so a small limit can fail
//! a build without false alarms from a noisy runner. `run` installs what the lane needs (Valgrind
//! through apt-get when it can, the matching gungraun-runner into a cache), then either runs the
//! lane once, or with `--against` runs [`gate`]: the lane twice into one gungraun home, first the
//! `--against` revision, checked out in a temporary worktree, saved as the baseline [`BASELINE`];
//! then the working tree, compared with that baseline under `--callgrind-limits=ir=<limit>%`.
//! gungraun exits with [`RUNNER_REGRESSION_EXIT`] when a limit is exceeded.
//!
//! The runner must be the exact release of the `gungraun` library that the lock file pins
//! ([`RUNNER_VERSION`]); it is found through `GUNGRAUN_RUNNER` or `PATH`, or installed once with
//! `cargo install --locked` into a cache directory.

use anyhow::Context as _;
use harness::exit;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Compare with this git revision (e.g. `origin/main`): its lane runs first, from a temporary
    /// worktree, and becomes the baseline; exit code 2 when a benchmark of the working tree needs
    /// more than --limit-pct percent more instructions.
    #[arg(long, value_name = "REV")]
    pub against: Option<String>,
    /// Allowed growth of the instruction count (Ir) per benchmark, in percent. Counts are
    /// deterministic for the same code, so this can be small.
    #[arg(long, default_value_t = 1.0, value_name = "PCT")]
    pub limit_pct: f64,
    /// Where the runner is installed and the --against revision is built.
    /// Default: ~/.cache/rosey-bench.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// gungraun's output directory (callgrind files, summaries, baselines).
    /// Default: target/icount.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let root = crate::workspace_root();
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => natskit::cache_dir()?,
    };
    let target = crate::cargo::target_dir(&root);
    let home = args.home.unwrap_or_else(|| target.join("icount"));
    if let Err(missing) = check_valgrind() {
        crate::system::apt_install("valgrind", "icount", missing)?;
    }
    let outcome = match args.against {
        Some(against) => gate(&GateOptions {
            workspace_root: root,
            against,
            limit_pct: args.limit_pct,
            cache_dir,
            home,
            seed_target_dir: Some(target),
        })?,
        None => {
            let runner = find_or_install_runner(&cache_dir)?;
            run_lane(
                &root,
                None,
                &runner,
                &lane_args(&home, Baseline::Previous, Some(args.limit_pct)),
            )?
        }
    };
    Ok(match outcome {
        LaneOutcome::Within => {
            eprintln!("icount: no benchmark over the limit");
            exit::OK
        }
        LaneOutcome::Regressed => {
            eprintln!(
                "icount: instruction count regressed beyond +{}% (see gungraun's report above)",
                args.limit_pct
            );
            exit::TARGET_MISSED_OR_REGRESSED
        }
    })
}

/// The gungraun release of the `gungraun` dev-dependency (a test keeps them equal).
pub const RUNNER_VERSION: &str = "0.20.0";

/// gungraun's exit code when a benchmark exceeded a regression limit.
pub const RUNNER_REGRESSION_EXIT: i32 = 3;

/// Name of the baseline the `--against` revision is saved under.
pub const BASELINE: &str = "against";

/// The lane's package and bench target.
const PACKAGE: &str = "harness";
const BENCH: &str = "icount";

/// How a lane run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneOutcome {
    /// Every benchmark ran, and none exceeded a limit.
    Within,
    /// At least one benchmark exceeded a limit.
    Regressed,
}

/// The runner binary: `GUNGRAUN_RUNNER`, then `gungraun-runner` on `PATH`, then
/// `<cache>/gungraun-runner-<version>/bin/gungraun-runner`, installed there if missing. A runner
/// of another version is refused (gungraun would refuse it too, less clearly).
pub fn find_or_install_runner(cache: &Path) -> anyhow::Result<PathBuf> {
    let wanted = format!("gungraun-runner {RUNNER_VERSION}");
    let version_of = |bin: &Path| -> Option<String> {
        let out = Command::new(bin).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if let Some(bin) = std::env::var_os("GUNGRAUN_RUNNER").map(PathBuf::from) {
        let version = version_of(&bin)
            .with_context(|| format!("GUNGRAUN_RUNNER={} does not run", bin.display()))?;
        anyhow::ensure!(
            version == wanted,
            "GUNGRAUN_RUNNER={} is {version:?}, but the gungraun library is {RUNNER_VERSION}; \
             install the matching runner with `cargo install gungraun-runner --version {RUNNER_VERSION} --locked`",
            bin.display()
        );
        return Ok(bin);
    }
    let on_path = PathBuf::from("gungraun-runner");
    if version_of(&on_path).is_some_and(|v| v == wanted) {
        return Ok(on_path);
    }
    let root = cache.join(format!("gungraun-runner-{RUNNER_VERSION}"));
    let bin = root.join("bin").join("gungraun-runner");
    if version_of(&bin).is_some_and(|v| v == wanted) {
        return Ok(bin);
    }
    eprintln!(
        "icount: installing gungraun-runner {RUNNER_VERSION} into {} (once; a few minutes)",
        root.display()
    );
    let status = crate::cargo::command()
        .args([
            "install",
            "gungraun-runner",
            "--version",
            RUNNER_VERSION,
            "--locked",
            "--root",
        ])
        .arg(&root)
        .status()
        .context("run cargo install gungraun-runner")?;
    anyhow::ensure!(
        status.success(),
        "cargo install gungraun-runner --version {RUNNER_VERSION} failed"
    );
    let version = version_of(&bin).context("the installed gungraun-runner does not run")?;
    anyhow::ensure!(
        version == wanted,
        "installed gungraun-runner reports {version:?}"
    );
    Ok(bin)
}

/// Valgrind is on PATH, or an error that says how to get it.
pub fn check_valgrind() -> anyhow::Result<String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => anyhow::bail!(
            "the instruction-count lane runs under Valgrind, which was not found; \
             install it with `apt-get install valgrind` (Debian/Ubuntu package `valgrind`)"
        ),
    }
}

/// The gungraun arguments of one lane run.
pub fn lane_args(home: &Path, baseline: Baseline, limit_pct: Option<f64>) -> Vec<String> {
    let mut args = vec![format!("--home={}", home.display())];
    match baseline {
        Baseline::Save => args.push(format!("--save-baseline={BASELINE}")),
        Baseline::CompareWith => args.push(format!("--baseline={BASELINE}")),
        Baseline::Previous => {}
    }
    if let Some(pct) = limit_pct {
        args.push(format!("--callgrind-limits=ir={pct}%"));
    }
    args
}

/// What a lane run does with baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Save the run as [`BASELINE`].
    Save,
    /// Compare with [`BASELINE`], which must exist.
    CompareWith,
    /// gungraun's default: compare with the previous run in the same home, if any.
    Previous,
}

/// Run the lane in the workspace at `src` (the working tree or a worktree), building into
/// `target_dir` when given. gungraun's report goes to the terminal.
pub fn run_lane(
    src: &Path,
    target_dir: Option<&Path>,
    runner: &Path,
    args: &[String],
) -> anyhow::Result<LaneOutcome> {
    anyhow::ensure!(
        src.join(PACKAGE)
            .join("benches")
            .join(format!("{BENCH}.rs"))
            .is_file(),
        "{} has no {PACKAGE}/benches/{BENCH}.rs: the revision predates the instruction-count lane",
        src.display()
    );
    let mut cmd = crate::cargo::command();
    cmd.current_dir(src)
        .args(["bench", "-p", PACKAGE, "--bench", BENCH]);
    if let Some(target) = target_dir {
        cmd.arg("--target-dir").arg(target);
    }
    cmd.arg("--").args(args).env("GUNGRAUN_RUNNER", runner);
    let status = cmd.status().context("run cargo bench")?;
    match status.code() {
        Some(0) => Ok(LaneOutcome::Within),
        Some(RUNNER_REGRESSION_EXIT) => Ok(LaneOutcome::Regressed),
        _ => anyhow::bail!(
            "cargo bench -p {PACKAGE} --bench {BENCH} failed ({status}) in {}",
            src.display()
        ),
    }
}

/// Options of [`gate`].
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub workspace_root: PathBuf,
    /// The revision to compare with.
    pub against: String,
    /// Allowed growth of the instruction count (Ir) per benchmark, in percent.
    pub limit_pct: f64,
    /// Where the runner is installed and the baseline revision is built (`<cache>/target`).
    pub cache_dir: PathBuf,
    /// gungraun's home for both runs (emptied first, so no stale baseline is compared).
    pub home: PathBuf,
    /// The working tree's target directory, whose `release/` seeds the baseline's build.
    pub seed_target_dir: Option<PathBuf>,
}

/// Run the lane for `against` (saved as the baseline), then for the working tree against it.
pub fn gate(opts: &GateOptions) -> anyhow::Result<LaneOutcome> {
    anyhow::ensure!(
        opts.limit_pct.is_finite() && opts.limit_pct >= 0.0,
        "the limit must be a non-negative percentage (got {})",
        opts.limit_pct
    );
    let valgrind = check_valgrind()?;
    let runner = find_or_install_runner(&opts.cache_dir)?;
    eprintln!("icount: {valgrind}, runner {}", runner.display());
    let commit = crate::git::resolve_commit(&opts.workspace_root, &opts.against)?;
    if opts.home.exists() {
        std::fs::remove_dir_all(&opts.home)
            .with_context(|| format!("empty {}", opts.home.display()))?;
    }
    std::fs::create_dir_all(&opts.home)?;

    let baseline_target = opts.cache_dir.join("icount-target");
    if let Some(seed) = &opts.seed_target_dir {
        crate::cargo::seed_release_dir(seed, &baseline_target)?;
    }
    let worktree = crate::git::Worktree::add(
        &opts.workspace_root,
        &commit,
        &opts.cache_dir.join("icount-src"),
    )?;
    eprintln!(
        "icount: baseline {} ({}), saved as {BASELINE:?}",
        opts.against,
        &commit[..12]
    );
    run_lane(
        worktree.path(),
        Some(&baseline_target),
        &runner,
        &lane_args(&opts.home, Baseline::Save, None),
    )?;
    worktree.remove()?;
    eprintln!(
        "icount: working tree against {BASELINE:?}, limit Ir +{}%",
        opts.limit_pct
    );
    run_lane(
        &opts.workspace_root,
        None,
        &runner,
        &lane_args(&opts.home, Baseline::CompareWith, Some(opts.limit_pct)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_version_matches_the_pinned_library() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("gungraun = "))
            .expect("gungraun is pinned in the workspace manifest");
        assert_eq!(pin.trim_matches('"'), format!("={RUNNER_VERSION}"));
    }

    #[test]
    fn lane_arguments() {
        let home = Path::new("/tmp/h");
        assert_eq!(
            lane_args(home, Baseline::Save, None),
            ["--home=/tmp/h", "--save-baseline=against"]
        );
        assert_eq!(
            lane_args(home, Baseline::CompareWith, Some(1.5)),
            [
                "--home=/tmp/h",
                "--baseline=against",
                "--callgrind-limits=ir=1.5%"
            ]
        );
        assert_eq!(lane_args(home, Baseline::Previous, None), ["--home=/tmp/h"]);
    }

    #[test]
    fn a_revision_without_the_lane_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_lane(dir.path(), None, Path::new("gungraun-runner"), &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("predates the instruction-count lane"),
            "{err:#}"
        );
    }
}
