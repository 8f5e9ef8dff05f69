//! `cargo xtask`: the project's entry points. Parses arguments and calls into `harness`; the build
//! tooling lives here too (`cargo.rs`: release builds of the services; `git.rs`: revisions and
//! temporary worktrees; `revision.rs`: another revision's build for A/B runs; `icount.rs`: the
//! instruction-count lane), so the harness never runs git or cargo.
//!
//! * `cargo xtask bench`   — run the benchmark suite (builds services, provisions NATS, writes a run directory).
//! * `cargo xtask test`    — run the whole test suite (installs nats-server on demand first).
//! * `cargo xtask report`  — render markdown/HTML reports from a run and the history.
//! * `cargo xtask compare` — compare a run with a baseline (the regression gate).
//! * `cargo xtask icount`  — the instruction-count lane, gated against another revision.
//! * `cargo xtask fuzz`    — mutation-fuzz the services' decoders for a number of seconds.
//! * `cargo xtask ci`      — what the GitHub workflows run (`ci pr-bench`, `ci history-append`).
//! * `cargo xtask worker`  — a load worker that joins a bench run over NATS (`rosey-loadgen`).

mod bench;
mod cargo;
mod ci;
mod compare;
mod fuzz;
mod git;
mod icount;
mod report;
mod revision;
mod system;
mod test;
mod worker;

use clap::{Parser, Subcommand};
use harness::exit;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Rosey bench: benchmarks, tests, reports and the regression gate",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark scenarios against real services and write a run directory.
    Bench(Box<bench::Args>),
    /// Run every test of the workspace (finds or installs nats-server first).
    Test(test::Args),
    /// Render report.md / report.html for a run and the history index.
    Report(report::Args),
    /// Compare a run with a baseline; exit code tells whether something regressed.
    Compare(compare::Args),
    /// Instruction counts of the hot paths under Callgrind (stable on a noisy machine); with
    /// --against, fail when the working tree needs more instructions than that revision.
    Icount(icount::Args),
    /// Mutation-fuzz the services' event, request and reply decoders for --seconds; fails on a
    /// panic or on fewer than --min-inputs inputs.
    Fuzz(fuzz::Args),
    /// What the GitHub workflows run (pr-bench, history-append), runnable here as a rehearsal.
    Ci(ci::Args),
    /// A load worker (builds and runs rosey-loadgen): joins the bench run with --run-id on
    /// --nats-url and offers its share of the load (`cargo xtask worker -- --help`).
    Worker(worker::Args),
}

/// The workspace root (where the top-level Cargo.toml is).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROSEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(*args),
        Command::Test(args) => test::run(args),
        Command::Report(args) => report::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Icount(args) => icount::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Ci(args) => ci::run(args),
        Command::Worker(args) => worker::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::HARNESS_ERROR)
        }
    }
}
