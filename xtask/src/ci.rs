//! `cargo xtask ci`: what the GitHub workflows run, one subcommand per step, so that the
//! workflows only wire steps together and every decision they depend on is code with tests here.
//!
//! * `ci pr-bench`       — the pull-request gate: an interleaved A/B run of the working tree
//!   against the merge base within a time budget, judged by the one exit-code rule.
//! * `ci history-append` — a main-branch run into the bench history (clean runs only), pruned
//!   to the newest runs per fingerprint, as a delta the history job applies.

mod history;
mod pr_bench;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The pull-request gate (also the local rehearsal): A/B against the merge base with --base.
    PrBench(pr_bench::Args),
    /// Add a finished main-branch run to the bench history, if clean, and prune the history.
    HistoryAppend(history::Args),
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Command::PrBench(a) => pr_bench::run(a),
        Command::HistoryAppend(a) => history::run(a),
    }
}
