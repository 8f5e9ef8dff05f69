//! `cargo xtask icount`: the instruction-count lane (`harness/benches/icount.rs` under Callgrind
//! through gungraun). Installs what it needs (Valgrind through apt-get when it can, the matching
//! gungraun-runner into a cache), then either runs the lane once, or with `--against` gates the
//! working tree against another revision (`harness::icount::gate`). Thin: arguments in, library
//! calls out.

use harness::exit;
use harness::icount::{self, Baseline, GateOptions, LaneOutcome};
use std::path::PathBuf;

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
    let target = target_dir(&root);
    let home = args.home.unwrap_or_else(|| target.join("icount"));
    if let Err(missing) = icount::check_valgrind() {
        crate::system::apt_install("valgrind", "icount", missing)?;
    }
    let outcome = match args.against {
        Some(against) => icount::gate(&GateOptions {
            workspace_root: root,
            against,
            limit_pct: args.limit_pct,
            cache_dir,
            home,
            seed_target_dir: Some(target),
        })?,
        None => {
            let runner = icount::find_or_install_runner(&cache_dir)?;
            icount::run_lane(
                &root,
                None,
                &runner,
                &icount::lane_args(&home, Baseline::Previous, Some(args.limit_pct)),
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

/// Cargo's target directory for this workspace (`CARGO_TARGET_DIR` or `<root>/target`).
fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}
