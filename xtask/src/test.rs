//! `cargo xtask test`: the README's test command. Finds or installs nats-server (natskit), then
//! runs the workspace's tests with `NATS_SERVER_BIN` pointing at it, so every test that starts its
//! own server uses the same binary and nothing is downloaded twice.

use anyhow::Context;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Also run `cargo fmt --check` and `cargo clippy -D warnings` first (what CI does).
    #[arg(long)]
    pub lint: bool,
    /// Extra arguments passed to `cargo test` (after `--workspace`), e.g. `-- --nocapture`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let bin =
        natskit::find_or_install().context("nats-server is needed by the integration tests")?;
    let version = natskit::version_of(&bin).unwrap_or_else(|_| "unknown".into());
    eprintln!(
        "xtask test: using nats-server {version} at {}",
        bin.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if args.lint {
        step(
            Command::new(&cargo).args(["fmt", "--all", "--", "--check"]),
            "cargo fmt --check",
        )?;
        step(
            Command::new(&cargo).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "cargo clippy",
        )?;
    }
    let status = Command::new(&cargo)
        .args(["test", "--workspace"])
        .args(&args.cargo_args)
        .env("NATS_SERVER_BIN", &bin)
        .status()
        .context("run cargo test")?;
    Ok(if status.success() {
        crate::exit::OK
    } else {
        crate::exit::TARGETS_MISSED
    })
}

fn step(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    eprintln!("xtask test: {what}");
    let status = cmd.status().with_context(|| format!("run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed");
    Ok(())
}
