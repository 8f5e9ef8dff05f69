//! Interleaved A/B runs: `cargo xtask bench --against <revision>`.
//!
//! Two separate runs taken minutes apart differ by more than the code: the machine warms up,
//! neighbours come and go. Here the baseline revision (A) and the working tree (B) run in short
//! rounds, alternating in an A B B A A B B A … order, each against a fresh nats-server of the same
//! configuration (or one shared container or external server), so that drift falls on both
//! sides alike. Round *k* of A is paired with round
//! *k* of B (they ran next to each other) and the gate's paired bootstrap resamples pairs of
//! rounds, then intervals within them. The noise floor comes from the same run: A rounds against
//! A rounds, split in the same balanced pattern (B against B is kept for reference; a candidate
//! that got jittery is caught by the gate's spread check, not by raising its own floor).
//!
//! The other revision's services arrive built (`cargo xtask bench --against` builds them in a
//! `git worktree`; the harness runs neither git nor cargo). Extra database-service arguments can be given
//! to either side (e.g. the fault-injection flag `--fault-stats-delay-ms` to the candidate only);
//! they are applied through a small wrapper script that `exec`s the real binary, so the engine
//! and its process sampling see the service itself.

use crate::compare::{self, CompareOptions, Comparison, NoiseFloors, RunInput, Side};
use crate::provision::{self, NatsChoice};
use crate::run::{run_bench, BenchOptions, ServicesUnderTest};
use crate::services::ServiceBinaries;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Which build a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The `--against` revision (baseline).
    A,
    /// The working tree (candidate).
    B,
}

/// The order of `rounds_per_side` rounds per arm: A B B A, A B B A, … Each consecutive pair
/// holds one round of each arm, and each arm goes first in half of the pairs, so both a linear
/// drift and a "second round is warmer" effect cancel.
pub fn round_order(rounds_per_side: usize) -> Vec<Arm> {
    (0..rounds_per_side)
        .flat_map(|k| {
            if k % 2 == 0 {
                [Arm::A, Arm::B]
            } else {
                [Arm::B, Arm::A]
            }
        })
        .collect()
}

/// The baseline revision (A), built.
#[derive(Debug, Clone)]
pub struct BaselineBuild {
    /// Its full commit id.
    pub commit: String,
    /// Its commit subject, when known.
    pub subject: Option<String>,
    pub binaries: ServiceBinaries,
}

/// Everything an A/B run needs.
#[derive(Debug, Clone)]
pub struct AbOptions {
    /// The `--against` revision's binaries.
    pub baseline: BaselineBuild,
    /// The working tree's binaries.
    pub candidate: ServiceBinaries,
    pub candidate_dbservice_args: Vec<String>,
    pub baseline_dbservice_args: Vec<String>,
    /// Rounds per side; with a budget, the most rounds per side.
    pub rounds_per_side: usize,
    /// Bench time for all rounds: after each pair of rounds (one per arm), another pair starts
    /// only if it is expected to end within the budget (at the pace of the pairs so far). At
    /// least 2 rounds per side run whatever the budget: fewer cannot measure anything.
    pub budget: Option<std::time::Duration>,
    /// Template for every round: NATS choice, scenarios, profile, configuration, seed. `out` is
    /// the directory of the whole A/B run (default: `<runs_dir>/ab-<UTC time>`).
    pub bench: BenchOptions,
    pub compare: CompareOptions,
}

/// What an A/B run produced.
#[derive(Debug, Clone)]
pub struct AbOutcome {
    pub dir: PathBuf,
    pub comparison: Comparison,
    /// A rounds against A rounds (the noise floor) and B against B (for reference).
    pub aa: Comparison,
    pub bb: Comparison,
    pub exit_code: u8,
}

/// A shell script that runs `binary` with `args` before the engine's own arguments. `exec`
/// keeps the pid, so the engine still signals and samples the service itself.
pub fn wrap_with_args(
    dir: &Path,
    name: &str,
    binary: &Path,
    args: &[String],
) -> anyhow::Result<PathBuf> {
    if args.is_empty() {
        return Ok(binary.to_owned());
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut script = format!("#!/bin/sh\nexec {}", quote(&binary.to_string_lossy()));
    for a in args {
        script.push(' ');
        script.push_str(&quote(a));
    }
    script.push_str(" \"$@\"\n");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    crate::files::write_atomic(&path, script)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `<runs_dir>/<prefix>-<UTC yyyymmddThhmmssZ>`: where an A/B run goes unless told.
pub fn timestamped_dir(runs_dir: &Path, prefix: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    runs_dir.join(format!("{prefix}-{stamp}"))
}

/// Whether another pair of rounds fits in `budget` after `pairs_done` pairs took `elapsed`:
/// always for the first two pairs (fewer rounds cannot measure anything), then when the pace so
/// far says the next pair ends within the budget.
pub fn budget_allows_another_pair(
    budget: Option<std::time::Duration>,
    elapsed: std::time::Duration,
    pairs_done: usize,
) -> bool {
    let Some(budget) = budget else { return true };
    if pairs_done < 2 {
        return true;
    }
    let per_pair = elapsed.as_secs_f64() / pairs_done as f64;
    elapsed.as_secs_f64() + per_pair <= budget.as_secs_f64()
}

/// Run the rounds and compare.
pub fn run_ab(opts: AbOptions) -> anyhow::Result<AbOutcome> {
    anyhow::ensure!(
        opts.rounds_per_side >= 2,
        "an A/B run needs at least 2 rounds per side (got {})",
        opts.rounds_per_side
    );
    let baseline = &opts.baseline.binaries;
    let dir = opts
        .bench
        .out
        .clone()
        .unwrap_or_else(|| timestamped_dir(&opts.bench.runs_dir, "ab"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let wrappers = dir.join("bin");
    let arms = [
        (
            Arm::A,
            ServiceBinaries {
                dbservice: wrap_with_args(
                    &wrappers,
                    "baseline-rosey-dbservice",
                    &baseline.dbservice,
                    &opts.baseline_dbservice_args,
                )?,
                bot: baseline.bot.clone(),
            },
        ),
        (
            Arm::B,
            ServiceBinaries {
                dbservice: wrap_with_args(
                    &wrappers,
                    "candidate-rosey-dbservice",
                    &opts.candidate.dbservice,
                    &opts.candidate_dbservice_args,
                )?,
                bot: opts.candidate.bot.clone(),
            },
        ),
    ];

    // A server the harness runs itself (local, or auto) is started afresh for every round, at
    // the same configuration: the scenarios that restart NATS or sample its memory need their
    // own. A container or an external server is provisioned once and shared by every round.
    let shared = match &opts.bench.nats {
        NatsChoice::Local | NatsChoice::Auto => None,
        choice => {
            let nats = provision::provision(choice, &dir).context("provision nats")?;
            (opts.bench.status)(&format!(
                "ab: nats {} {} at {}, shared by every round",
                nats.info.kind, nats.info.server_version, nats.url
            ));
            Some(nats)
        }
    };
    let order = round_order(opts.rounds_per_side);
    let (mut a_rounds, mut b_rounds) = (Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for (i, arm) in order.iter().enumerate() {
        if i % 2 == 0 && !budget_allows_another_pair(opts.budget, started.elapsed(), i / 2) {
            (opts.bench.status)(&format!(
                "ab: budget {:.1} min reached after {} rounds per side ({:.1} min)",
                opts.budget.unwrap_or_default().as_secs_f64() / 60.0,
                i / 2,
                started.elapsed().as_secs_f64() / 60.0
            ));
            break;
        }
        let binaries = arms
            .iter()
            .find(|(a, _)| a == arm)
            .map(|(_, b)| b.clone())
            .context("arm binaries")?;
        let round_dir = dir.join("rounds").join(format!("{:02}-{arm:?}", i + 1));
        (opts.bench.status)(&format!("ab: round {}/{} ({arm:?})", i + 1, order.len()));
        let outcome = run_bench(BenchOptions {
            services: ServicesUnderTest::Spawn(binaries),
            nats: shared.as_ref().map_or_else(
                || opts.bench.nats.clone(),
                |n| NatsChoice::External(n.url.clone()),
            ),
            out: Some(round_dir.clone()),
            ..opts.bench.clone()
        })
        .with_context(|| format!("round {} ({arm:?})", i + 1))?;
        let mut results = outcome.results;
        if *arm == Arm::A {
            // The engine fingerprints the checkout it runs from; this round ran the baseline's build.
            results
                .environment
                .git_revision
                .clone_from(&opts.baseline.commit);
            results.environment.git_dirty = false;
            results
                .environment
                .commit_subject
                .clone_from(&opts.baseline.subject);
            crate::run::write_results(&round_dir, &results)?;
        }
        let input = RunInput {
            results,
            dir: Some(round_dir),
        };
        match arm {
            Arm::A => a_rounds.push(input),
            Arm::B => b_rounds.push(input),
        }
    }
    drop(shared);

    let (comparison, aa, bb) = interleaved_comparison(a_rounds, b_rounds, &opts.compare);
    compare::write(&dir, &comparison)?;
    crate::files::write_atomic(&dir.join("aa.json"), serde_json::to_string_pretty(&aa)?)?;
    crate::files::write_atomic(&dir.join("bb.json"), serde_json::to_string_pretty(&bb)?)?;
    let exit_code = comparison.exit_code();
    Ok(AbOutcome {
        dir,
        comparison,
        aa,
        bb,
        exit_code,
    })
}

/// The paired A/B comparison of interleaved rounds, with the noise floor taken from the same
/// run: alternate A rounds against the other A rounds, and the same for B. Returns the A/B
/// comparison and the A/A and B/B comparisons it used.
pub fn interleaved_comparison(
    a: Vec<RunInput>,
    b: Vec<RunInput>,
    options: &CompareOptions,
) -> (Comparison, Comparison, Comparison) {
    // Split one arm's rounds in the same X Y Y X pattern, so that drift cancels in the A/A
    // comparison as it does in the A/B one (alternate rounds would be confounded with drift).
    let halves = |rounds: &[RunInput], label: &str| -> (Side, Side) {
        let pattern = round_order(rounds.len().div_ceil(2));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (r, arm) in rounds.iter().zip(pattern) {
            if arm == Arm::A {
                x.push(r.clone());
            } else {
                y.push(r.clone());
            }
        }
        (
            Side {
                label: format!("{label} rounds 1, 4, 5, 8, …"),
                rounds: x,
            },
            Side {
                label: format!("{label} rounds 2, 3, 6, 7, …"),
                rounds: y,
            },
        )
    };
    let (a_even, a_odd) = halves(&a, "A");
    let (b_even, b_odd) = halves(&b, "B");
    // The A/A comparisons themselves are not gated, so they need no noise floor of their own:
    // an empty map makes them report the raw between-halves change.
    let none = NoiseFloors::new();
    let aa = compare::compare_sides(&a_even, &a_odd, false, Some(&none), options);
    let bb = compare::compare_sides(&b_even, &b_odd, false, Some(&none), options);
    // The floor is the baseline arm's noise alone: a jittery candidate must not raise its own
    // threshold (the comparison checks the candidate's spread against the baseline's instead).
    let noise: NoiseFloors = aa
        .metrics
        .iter()
        .filter_map(|m| {
            let change = m.change?;
            let size = if m.scale == "relative" {
                (1.0 + change).ln().abs()
            } else {
                change.abs()
            };
            Some(((m.scenario.clone(), m.metric.clone()), size))
        })
        .collect();
    let base = Side {
        label: "baseline (A)".into(),
        rounds: a,
    };
    let cand = Side {
        label: "candidate (B)".into(),
        rounds: b,
    };
    let mut comparison = compare::compare_sides(&base, &cand, true, Some(&noise), options);
    let flagged = |c: &Comparison| {
        c.count(compare::ChangeVerdict::Regressed) + c.count(compare::ChangeVerdict::Improved)
    };
    comparison.notes.push(format!(
        "noise floor from this run: A rounds against A rounds ({} of {} metrics flagged); \
         B against B for reference ({} of {} flagged)",
        flagged(&aa),
        aa.metrics.len(),
        flagged(&bb),
        bb.metrics.len()
    ));
    (comparison, aa, bb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::{run, Synth};
    use crate::compare::ChangeVerdict;

    #[test]
    fn order_alternates_and_balances() {
        use Arm::{A, B};
        assert_eq!(round_order(4), vec![A, B, B, A, A, B, B, A]);
        let order = round_order(6);
        assert_eq!(order.iter().filter(|a| **a == A).count(), 6);
        // Each arm's mean position is the same: linear drift cancels.
        let mean = |arm| {
            order
                .iter()
                .enumerate()
                .filter(|(_, a)| **a == arm)
                .map(|(i, _)| i as f64)
                .sum::<f64>()
                / 6.0
        };
        assert!(
            (mean(A) - mean(B)).abs() <= 0.5 / 6.0 * 6.0,
            "{} vs {}",
            mean(A),
            mean(B)
        );
    }

    /// Four interleaved rounds per side of scenario `s`, round `i` of arm `arm` drawn from
    /// `synth(i, arm)`.
    fn interleaved(
        dir: &Path,
        synth: impl Fn(usize, Arm) -> Synth,
    ) -> (Vec<RunInput>, Vec<RunInput>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, arm) in round_order(4).into_iter().enumerate() {
            let r = run(
                &dir.join(format!("{i}")),
                &format!("r{i}"),
                &[("s", synth(i, arm))],
            );
            match arm {
                Arm::A => a.push(r),
                Arm::B => b.push(r),
            }
        }
        (a, b)
    }

    /// Rounds that drift 8 % per round (the machine heating up) around a candidate `factor`.
    fn rounds(dir: &Path, factor: f64) -> (Vec<RunInput>, Vec<RunInput>) {
        interleaved(dir, |i, arm| Synth {
            intervals: 6,
            events: 2000,
            median_ns: 200_000.0
                * (1.0 + 0.08 * i as f64)
                * if arm == Arm::B { factor } else { 1.0 },
            seed: 100 + i as u64,
            ..Synth::default()
        })
    }

    #[test]
    fn drift_cancels_in_an_aa_run() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = rounds(dir.path(), 1.0);
        let (c, aa, _) = interleaved_comparison(a, b, &CompareOptions::default());
        assert_eq!(c.mode, "interleaved");
        assert_eq!(
            c.count(ChangeVerdict::Regressed),
            0,
            "{}",
            compare::render::markdown(&c)
        );
        assert_eq!(c.exit_code(), crate::exit::OK);
        // The balanced split cancels the drift in the A/A comparison too.
        assert_eq!(
            aa.count(ChangeVerdict::Regressed) + aa.count(ChangeVerdict::Improved),
            0,
            "{}",
            compare::render::markdown(&aa)
        );
    }

    #[test]
    fn a_real_regression_stands_out_of_drift() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = rounds(dir.path(), 1.5);
        let (c, _, _) = interleaved_comparison(a, b, &CompareOptions::default());
        let p50 = c.metrics.iter().find(|m| m.metric == "p50").unwrap();
        assert_eq!(p50.verdict, ChangeVerdict::Regressed, "{p50:?}");
        let [lo, hi] = p50.ci.unwrap();
        assert!(lo < 0.5 && 0.5 < hi, "{lo}..{hi}");
        assert_eq!(c.exit_code(), crate::exit::TARGET_MISSED_OR_REGRESSED);
    }

    /// Interleaved rounds, no shift, with the latency level of each interval jittered by
    /// `a_jitter` in the A rounds and `b_jitter` in the B rounds.
    fn jittered(dir: &Path, a_jitter: f64, b_jitter: f64) -> (Vec<RunInput>, Vec<RunInput>) {
        interleaved(dir, |i, arm| Synth {
            intervals: 20,
            events: 2000,
            interval_sigma: if arm == Arm::A { a_jitter } else { b_jitter },
            seed: 300 + i as u64,
            ..Synth::default()
        })
    }

    #[test]
    fn a_candidate_whose_noise_doubles_is_not_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = jittered(dir.path(), 0.04, 0.08);
        let (c, _, _) = interleaved_comparison(a, b, &CompareOptions::default());
        let p50 = c.metrics.iter().find(|m| m.metric == "p50").unwrap();
        assert_eq!(p50.verdict, ChangeVerdict::Noisier, "{p50:?}");
        assert!(p50.note.starts_with("noisier: spread +"), "{p50:?}");
        let [base, cand] = p50.spread.unwrap();
        assert!(cand > compare::NOISIER_RATIO * base, "{base} vs {cand}");
        let md = compare::render::markdown(&c);
        assert!(md.contains("noisier: spread"), "{md}");
        // A gated metric that got noisier fails the gate, and the summary says which.
        assert!(p50.gated);
        assert!(
            c.findings().iter().any(|f| matches!(
                f,
                crate::exit::Finding::Noisier { metric, detail, .. }
                    if metric == "p50" && detail.starts_with("spread +")
            )),
            "{:?}",
            c.findings()
        );
        assert_eq!(c.exit_code(), crate::exit::TARGET_MISSED_OR_REGRESSED);
        assert!(md.contains("- noisier: s p50: spread +"), "{md}");

        // The same jitter on both sides is not noisier.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = jittered(dir.path(), 0.04, 0.04);
        let (c, _, _) = interleaved_comparison(a, b, &CompareOptions::default());
        let p50 = c.metrics.iter().find(|m| m.metric == "p50").unwrap();
        assert_ne!(p50.verdict, ChangeVerdict::Noisier, "{p50:?}");
        assert_eq!(
            c.exit_code(),
            crate::exit::OK,
            "{}",
            compare::render::markdown(&c)
        );
    }

    #[test]
    fn every_gated_interval_says_what_it_could_detect() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = rounds(dir.path(), 1.0);
        let (c, _, _) = interleaved_comparison(a, b, &CompareOptions::default());
        for m in c.metrics.iter().filter(|m| m.gated && m.ci.is_some()) {
            let mde = m.mde.unwrap_or_else(|| panic!("no MDE: {m:?}"));
            assert!(mde >= m.threshold - 1e-12, "{m:?}");
            let rounds = m.rounds_needed.unwrap();
            assert!(rounds >= 4, "{m:?}");
            // Needing more rounds means this run cannot see the min effect, and the reverse.
            assert_eq!(rounds > 4, mde > c.options.min_effect + 1e-9, "{m:?}");
        }
        assert!(compare::render::markdown(&c).contains("This run could detect"));
    }

    #[test]
    fn the_budget_stops_between_pairs_but_never_below_two_rounds_per_side() {
        use std::time::Duration;
        let min = |m: f64| Duration::from_secs_f64(m * 60.0);
        let budget = Some(min(20.0));
        // Two pairs always run, even over budget.
        assert!(budget_allows_another_pair(budget, min(30.0), 1));
        // 3 min a pair: after 5 pairs (15 min) a sixth ends at 18, a seventh would end at 21.
        assert!(budget_allows_another_pair(budget, min(12.0), 4));
        assert!(budget_allows_another_pair(budget, min(15.0), 5));
        assert!(!budget_allows_another_pair(budget, min(18.0), 6));
        assert!(budget_allows_another_pair(None, min(600.0), 100));
    }

    fn lagging(r: &mut RunInput) {
        let s = &mut r.results.scenarios[0];
        s.verdict = crate::results::Verdict::Invalid;
        // What a lagging round's figures may look like: a target missed, which must not count.
        s.targets.push(crate::results::TargetCheck {
            metric: "latency.p99_ms".into(),
            op: "<=".into(),
            threshold: 10.0,
            unit: "ms".into(),
            actual: Some(25.0),
            passed: false,
            source: String::new(),
            informational: false,
            needs_events: None,
            interval: None,
            inconclusive: false,
        });
        s.harness_lag = Some(crate::results::HarnessLag {
            send_delay_p99_us: 900.0,
            limit_us: 500.0,
            limit_source: "test".into(),
            within: false,
            machine_wake_p99_us: Some(850.0),
        });
    }

    #[test]
    fn one_lagging_round_is_left_out_but_many_fail_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let (a, mut b) = rounds(dir.path(), 1.0);
        lagging(&mut b[1]);
        let (c, _, _) = interleaved_comparison(a.clone(), b.clone(), &CompareOptions::default());
        assert_eq!(
            c.exit_code(),
            crate::exit::OK,
            "{}",
            compare::render::markdown(&c)
        );
        assert!(c.harness_errors.is_empty());
        assert!(c.missed_targets.is_empty(), "{:?}", c.missed_targets);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("left out of the comparison")),
            "{:?}",
            c.notes
        );
        // The pair went out with its lagging half: 3 pairs compared.
        let p50 = c.metrics.iter().find(|m| m.metric == "p50").unwrap();
        assert!(p50.ci.is_some(), "{p50:?}");

        // Lag in 3 of 8 rounds is more than machine noise: a harness error.
        lagging(&mut b[2]);
        let mut a2 = a;
        lagging(&mut a2[0]);
        let (c, _, _) = interleaved_comparison(a2, b, &CompareOptions::default());
        assert_eq!(c.exit_code(), crate::exit::HARNESS_ERROR);
        assert!(c
            .findings()
            .iter()
            .any(|f| f.line().contains("invalid (harness lag)")));
    }

    #[test]
    fn wrapper_passes_extra_arguments_first() {
        let dir = tempfile::tempdir().unwrap();
        let echo = wrap_with_args(
            dir.path(),
            "w",
            Path::new("/bin/echo"),
            &["--fault-stats-delay-ms=2".into(), "it's".into()],
        )
        .unwrap();
        let out = std::process::Command::new(&echo)
            .arg("--nats-url")
            .arg("x")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "--fault-stats-delay-ms=2 it's --nats-url x\n"
        );
        assert_eq!(
            wrap_with_args(dir.path(), "v", Path::new("/bin/echo"), &[]).unwrap(),
            Path::new("/bin/echo")
        );
    }
}
