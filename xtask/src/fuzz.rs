//! `cargo xtask fuzz --seconds N`: the services' decoders under mutation fuzzing. It runs the
//! fuzz tests of `dbservice` (every event subject's decoder, validation included, and every
//! request body's) and of the bot (every platform event payload and every service reply it
//! reads) in a release build, each for half of N seconds (`ROSEY_FUZZ_SECONDS`), and sums the
//! inputs they report. The inputs are valid payloads damaged by `natskit::hostile::Mutator`
//! (fixed seeds); a panic fails the run and prints the seed, the input's index and its bytes.
//! Exit 0 when nothing panicked and at least `--min-inputs` inputs were tried, else 2.

use anyhow::{bail, Context as _};
use std::io::{BufRead as _, Write as _};
use std::process::Stdio;

#[derive(clap::Args)]
pub struct Args {
    /// Total fuzzing time in seconds, split evenly between the database service's decoders and
    /// the bot's (the release build before it is not counted).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Fewest inputs in all for a pass.
    #[arg(long, default_value_t = 1_000_000)]
    pub min_inputs: u64,
}

/// The fuzz test of each package (in its `it` test binary).
const SUITES: [&str; 2] = ["rosey-dbservice", "rosey-bot"];
const TEST: &str = "fuzz::decoders_never_panic_on_mutated_input";

pub fn run(args: Args) -> anyhow::Result<u8> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be a positive number of seconds");
    }
    let each = args.seconds / SUITES.len() as f64;
    let mut total = 0u64;
    let mut failed = Vec::new();
    for package in SUITES {
        eprintln!("xtask fuzz: {package} decoders for {each:.0} s (release build first)");
        let mut child = crate::cargo::command()
            .args(["test", "--release", "-p", package, "--test", "it", TEST])
            .args(["--", "--exact", "--nocapture"])
            .env(natskit::hostile::FUZZ_SECONDS_VAR, each.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("run the fuzz test of {package}"))?;
        let stdout = child.stdout.take().context("cargo test stdout")?;
        let mut out = std::io::stdout().lock();
        let mut inputs = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("read cargo test output")?;
            if let Some(n) = inputs_of(&line) {
                inputs = Some(n);
            }
            writeln!(out, "{line}").context("write to stdout")?;
        }
        let status = child.wait().context("wait for cargo test")?;
        match (status.success(), inputs) {
            (true, Some(n)) => total += n,
            (true, None) => bail!("the fuzz test of {package} ran but reported no input count"),
            (false, _) => failed.push(package),
        }
    }
    println!(
        "fuzz: {total} inputs in all, {} suites panicked",
        failed.len()
    );
    if !failed.is_empty() {
        println!(
            "fuzz: FAILED: a decoder of {} panicked (the input is printed above)",
            failed.join(", ")
        );
        return Ok(harness::exit::TARGET_MISSED_OR_REGRESSED);
    }
    if total < args.min_inputs {
        println!(
            "fuzz: FAILED: {total} inputs, fewer than --min-inputs {} (give it more --seconds)",
            args.min_inputs
        );
        return Ok(harness::exit::TARGET_MISSED_OR_REGRESSED);
    }
    println!("fuzz: PASS");
    Ok(harness::exit::OK)
}

/// `fuzz: <what>: <N> inputs in <s> s` → N.
fn inputs_of(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix("fuzz: ")?;
    let (_, counts) = rest.rsplit_once(": ")?;
    counts.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_count_a_fuzz_test_prints() {
        assert_eq!(
            inputs_of("fuzz: dbservice decoders: 123456 inputs in 30.0 s"),
            Some(123_456)
        );
        assert_eq!(inputs_of("test result: ok. 1 passed"), None);
        assert_eq!(inputs_of("fuzz: 12 inputs in all, 0 suites panicked"), None);
    }
}
