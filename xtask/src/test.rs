//! `cargo xtask test`: the README's test command. It does its own set-up: finds or installs
//! nats-server (natskit) and headless Chromium (the HTML report check; Debian's `chromium`, through
//! apt-get when this user may install packages). With `--lint` it first runs `cargo fmt --check`,
//! `cargo clippy -D warnings` and the workflow linters (`.ci/lint-workflows`). Then it runs every
//! test binary of the workspace (`--no-fail-fast`, so one failure does not hide the rest) with
//! `NATS_SERVER_BIN` pointing at the one nats-server, and ends with one total line
//! (`tests: N passed, N failed, N skipped`) summed over every test binary.

use anyhow::Context;
use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Also run `cargo fmt --check`, `cargo clippy -D warnings` and the GitHub workflow linters
    /// (`.ci/lint-workflows`: yamllint and actionlint, installed from PyPI on first use) first.
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
    ensure_browser()?;
    if args.lint {
        step(
            crate::cargo::command().args(["fmt", "--all", "--", "--check"]),
            "cargo fmt --check",
        )?;
        step(
            crate::cargo::command().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "cargo clippy",
        )?;
        step(
            Command::new("bash").arg(crate::workspace_root().join(".ci/lint-workflows")),
            "workflow lint (.ci/lint-workflows)",
        )?;
    }
    let mut child = crate::cargo::command()
        .args(["test", "--workspace", "--no-fail-fast"])
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
        harness::exit::OK
    } else {
        harness::exit::TARGET_MISSED_OR_REGRESSED
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

/// The HTML report test opens pages in headless Chromium. Find it, or install Debian's `chromium`
/// when this user can; otherwise say exactly what to do. `ROSEY_SKIP_BROWSER=1` skips the check
/// (and this).
fn ensure_browser() -> anyhow::Result<()> {
    if std::env::var_os("ROSEY_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("xtask test: ROSEY_SKIP_BROWSER=1, the HTML report is not opened in a browser");
        return Ok(());
    }
    let missing = match harness::report::browser::find_browser() {
        Ok(name) => {
            eprintln!("xtask test: using {name} for the HTML report check");
            return Ok(());
        }
        Err(e) => e,
    };
    crate::system::apt_install(harness::report::browser::APT_PACKAGE, "xtask test", missing)?;
    let name = harness::report::browser::find_browser()
        .context("Chromium was installed but is still not found on PATH")?;
    eprintln!("xtask test: installed {name}");
    Ok(())
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
