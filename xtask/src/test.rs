//! `cargo xtask test`: the README's test command. Finds or installs nats-server (natskit), then
//! runs the workspace's tests with `NATS_SERVER_BIN` pointing at it, so every test that starts its
//! own server uses the same binary and nothing is downloaded twice. Ends with one total line
//! (`tests: N passed, N failed, N skipped`) summed over every test binary.

use anyhow::Context;
use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};

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
    if args.lint {
        step(
            harness::cargo::command().args(["fmt", "--all", "--", "--check"]),
            "cargo fmt --check",
        )?;
        step(
            harness::cargo::command().args([
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
    let mut child = harness::cargo::command()
        .args(["test", "--workspace"])
        .args(&args.cargo_args)
        .env("NATS_SERVER_BIN", &bin)
        .stdout(Stdio::piped())
        .spawn()
        .context("run cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut totals = Totals::default();
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        totals.add_line(&line);
        writeln!(out, "{line}").context("write to stdout")?;
    }
    let status = child.wait().context("wait for cargo test")?;
    writeln!(
        out,
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    )
    .context("write to stdout")?;
    Ok(if status.success() {
        crate::exit::OK
    } else {
        crate::exit::TARGETS_MISSED
    })
}

/// Counts summed over every `test result:` line of libtest.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s`
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn step(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    eprintln!("xtask test: {what}");
    let status = cmd.status().with_context(|| format!("run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 96 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 11.93s");
        t.add_line("test result: FAILED. 14 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 10.25s");
        t.add_line("test foo ... ok");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 110,
                failed: 2,
                ignored: 1
            }
        );
    }
}
