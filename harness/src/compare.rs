//! The regression gate: compares a candidate run with a baseline and decides, per scenario and
//! metric, whether it `regressed`, `improved`, is `unchanged`, or whether the data cannot tell
//! (`inconclusive`).
//!
//! How a verdict is reached (harness/METHODOLOGY.md, "Deciding"):
//!
//! 1. **Significance from the data.** Each run's scenario is cut into its intervals (normally one
//!    second each, read from the HdrHistogram interval log). A two-stage bootstrap resamples runs
//!    or rounds (stage one, paired for interleaved A/B rounds) and intervals within them (stage
//!    two), merges the drawn interval histograms and recomputes the statistic. The standard
//!    deviation of the bootstrap replicates of the change (log ratio for percentiles,
//!    throughput and CPU per event; difference for RSS slope) gives a normal confidence interval
//!    around the observed change.
//! 2. **Many comparisons at once, few of them gated.** A report makes over a hundred comparisons;
//!    at 95 % each, several would exclude zero by chance. Only the *primary* metrics of each
//!    scenario ([`is_primary`]: p50, p99, throughput, CPU per event, the NATS/direct CPU ratio)
//!    are gated, as one family under Holm's step-down procedure (family-wise error rate ≤ `α`,
//!    more power than Bonferroni); each gated interval is at its Holm level, which keeps it
//!    consistent with its verdict ([`stats::holm_levels`]). The other metrics are reported with
//!    Bonferroni intervals over their own family and never fail the gate. Normal intervals rather
//!    than bootstrap percentiles, because corrected tail probabilities (0.05/100) are beyond what
//!    1 000 resamples can resolve.
//! 3. **Noise floor, from the baseline only.** The harness measures A/A noise: each run is split
//!    in halves (first against second, odd against even intervals — or rounds) and the larger
//!    change between halves is that side's noise. For an interleaved A/B run, the A-against-A
//!    comparison of the same run is used. The floor is the *baseline's* noise: a candidate that
//!    got jittery cannot raise its own threshold. Instead each side's spread from one interval
//!    to the next, within each run, is compared run by run, and a candidate clearly noisier
//!    than its baseline (by [`NOISIER_RATIO`], significantly at the metric's level:
//!    [`stats::spread_p_value`]) is `noisier`, never `unchanged`; for a gated metric that is a
//!    finding, as a regression is.
//! 4. **Decision.** With `T = max(min effect, noise floor)` on the change scale:
//!    `regressed`/`improved` when the interval excludes zero *and* the estimate is beyond `T`
//!    in the bad/good direction; otherwise `unchanged` when the whole interval lies within `±T`
//!    (and the noise floor is not above `max_noise_floor`); otherwise `inconclusive`.
//!    Runs with different environment fingerprints are not compared at all, which is a finding
//!    ("no comparable baseline") unless the caller opted out.
//! 5. **What it could see.** Every interval carries the minimum detectable effect of this run
//!    (the change it would call with 80 % power: the half-width plus 0.84 standard errors, at
//!    least `T`) and, for interleaved runs, how many rounds per side would detect the min effect.
//!
//! Relative thresholds are applied on the log scale, so 5 % means ×1.05 or ÷1.05.

pub mod input;
pub mod render;
pub mod stats;
#[cfg(test)]
pub(crate) mod tests;

use crate::exit::{self, Finding};
use crate::histogram;
use crate::results::{ScenarioResult, Verdict};
use anyhow::Context;
use input::{blocks_of, load_intervals, summary_value};
pub use input::{resolve_baseline, RunInput, HISTORY_BASELINE_RUNS};
use serde::{Deserialize, Serialize};
use stats::{Block, Stat, ValueTable};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Version of `compare.json`.
pub const COMPARE_SCHEMA_VERSION: u32 = 1;

/// Hidden marker of the PR comment, so CI updates one comment instead of adding one per push.
pub const COMMENT_MARKER: &str = "<!-- rosey-bench -->";

/// Scenario metrics (one figure per run, from `metrics`) the gate compares besides the
/// interval statistics: key, unit, direction. Their interval is the between-run one only.
pub const RUN_METRICS: &[(&str, &str, Direction)] = &[
    (
        "cpu_ratio_nats_vs_direct",
        "ratio",
        Direction::LowerIsBetter,
    ),
    // The saturation knee (`scenarios/knee.rs`): only when the service, not the load generator,
    // limited it. Its steps are `resolution` apart, so it moves in steps of that size.
    ("knee_per_s", "events/s", Direction::HigherIsBetter),
];

/// Processes whose resources are *not* under test.
const NOT_UNDER_TEST: &[&str] = &["harness"];

/// How the confidence level of the gated metrics is corrected for their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// Holm's step-down (family-wise error rate ≤ α; the default).
    Holm,
    /// Each interval at `1 − α/m` (family-wise error rate ≤ α, less power than Holm).
    Bonferroni,
    /// Each interval at `1 − α` (for experiments only: many false alarms).
    None,
}

/// Knobs of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    /// Smallest relative change worth a verdict (0.05 = 5 %).
    pub min_effect: f64,
    /// Smallest RSS-slope change worth a verdict, bytes per hour.
    pub min_rss_slope_bytes_per_hour: f64,
    /// Family-wise error rate.
    pub alpha: f64,
    pub correction: Correction,
    pub resamples: usize,
    pub seed: u64,
    /// Compare even when environment fingerprints differ (the differences are still reported).
    pub allow_different_env: bool,
    /// Relative noise floor above which nothing is called `unchanged`.
    pub max_noise_floor: f64,
    /// Fewest intervals per side for a bootstrap.
    pub min_intervals: usize,
    /// Fewest expected events beyond a percentile (e.g. 10 → p99.9 needs 10 000 events).
    pub min_tail_events: f64,
    /// A missing or non-comparable baseline is a note, not a finding that fails the gate.
    #[serde(default)]
    pub allow_no_baseline: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            min_effect: 0.05,
            min_rss_slope_bytes_per_hour: 16.0 * 1024.0 * 1024.0,
            alpha: 0.05,
            correction: Correction::Holm,
            resamples: 1000,
            seed: 0x5EED_0006,
            allow_different_env: false,
            max_noise_floor: 0.25,
            min_intervals: 4,
            min_tail_events: 10.0,
            allow_no_baseline: false,
        }
    }
}

/// Outcome of one metric's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ChangeVerdict {
    Regressed,
    Improved,
    Unchanged,
    Inconclusive,
    /// No shift beyond the threshold, but the candidate varies clearly more from one interval
    /// to the next than the baseline ([`NOISIER_RATIO`]): never `unchanged`, and a finding for a
    /// gated metric.
    Noisier,
}

/// How much larger than the baseline's the candidate's interval-to-interval spread must be to
/// call it `noisier` (the difference must also be significant at the metric's level, and the
/// spread at least a quarter of the min effect).
pub const NOISIER_RATIO: f64 = 1.5;

impl ChangeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeVerdict::Regressed => "regressed",
            ChangeVerdict::Improved => "improved",
            ChangeVerdict::Unchanged => "unchanged",
            ChangeVerdict::Inconclusive => "inconclusive",
            ChangeVerdict::Noisier => "noisier",
        }
    }
}

/// Whether a larger value is better or worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

/// One metric of one scenario, compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    pub scenario: String,
    /// `p50`, `p99`, `p99.9`, `throughput`, `cpu_us_per_event.<process>`, `rss_slope.<process>`.
    pub metric: String,
    /// `ns`, `events/s`, `us/event`, `bytes/h`.
    pub unit: String,
    pub direction: Direction,
    /// `relative` (change is a fraction: 0.08 = +8 %) or `absolute` (change in `unit`).
    pub scale: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    pub change: Option<f64>,
    /// Confidence interval of the change at [`Comparison::per_metric_confidence`].
    pub ci: Option<[f64; 2]>,
    /// A/A noise floor on the change scale, if it could be measured.
    pub noise_floor: Option<f64>,
    /// The change a verdict needs, `max(min effect, noise floor)`.
    pub threshold: f64,
    pub verdict: ChangeVerdict,
    /// "p99 +8 % [+3 %, +12 %]".
    pub label: String,
    /// Why the verdict is what it is, when that is not obvious.
    #[serde(default)]
    pub note: String,
    /// The interval is the between-run one (Student's t over each run's own value), wider than
    /// the bootstrap's within runs.
    #[serde(default)]
    pub between_runs: bool,
    /// A primary metric ([`is_primary`]): its regression fails the gate. Others are reported.
    #[serde(default)]
    pub gated: bool,
    /// Confidence level of this metric's interval (its Holm or Bonferroni level).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// The smallest change this run would call with 80 % power, on the change scale (a fraction
    /// for relative metrics), never below `threshold`.
    #[serde(default)]
    pub mde: Option<f64>,
    /// Interleaved runs: rounds per side that would bring the minimum detectable effect down to
    /// the min effect (this run's rounds when it already is).
    #[serde(default)]
    pub rounds_needed: Option<usize>,
    /// Spread (standard deviation) of the statistic from one interval to the next, baseline
    /// and candidate, on the change scale (log for relative metrics): what `noisier` compares.
    #[serde(default)]
    pub spread: Option<[f64; 2]>,
}

/// Identity of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideInfo {
    pub label: String,
    pub run_ids: Vec<String>,
    pub git_revision: String,
    pub git_dirty: bool,
    #[serde(default)]
    pub git_branch: Option<String>,
    pub fingerprint: String,
}

/// A scenario's absolute target missed by the candidate, or events it lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissedTarget {
    pub scenario: String,
    pub detail: String,
    /// Lost or duplicated events rather than a missed target.
    #[serde(default)]
    pub lost: bool,
}

/// The whole comparison (`compare.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub schema_version: u32,
    /// `runs` (two independent runs) or `interleaved` (A/B rounds of one run).
    pub mode: String,
    pub baseline: SideInfo,
    pub candidate: SideInfo,
    pub comparable: bool,
    pub env_differences: Vec<String>,
    pub options: CompareOptions,
    /// Gated comparisons that produced an interval (the Holm family size).
    pub family_size: usize,
    /// The strictest per-metric confidence of the gated family (`1 − α/m`).
    pub per_metric_confidence: f64,
    pub metrics: Vec<MetricComparison>,
    pub missed_targets: Vec<MissedTarget>,
    /// Harness errors recorded by the candidate (the measurement itself is suspect).
    pub harness_errors: Vec<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Comparison {
    pub fn count(&self, verdict: ChangeVerdict) -> usize {
        self.metrics.iter().filter(|m| m.verdict == verdict).count()
    }

    /// Regressions of gated metrics: the ones that fail the gate.
    pub fn gated_regressions(&self) -> impl Iterator<Item = &MetricComparison> {
        self.metrics
            .iter()
            .filter(|m| m.gated && m.verdict == ChangeVerdict::Regressed)
    }

    /// Gated metrics the candidate made noisier: they fail the gate too.
    pub fn gated_noisier(&self) -> impl Iterator<Item = &MetricComparison> {
        self.metrics
            .iter()
            .filter(|m| m.gated && m.verdict == ChangeVerdict::Noisier)
    }

    /// Everything that fails this comparison, each listed: the candidate's harness errors, a
    /// missing baseline (unless allowed), lost events, missed targets, and gated regressions and
    /// noisier metrics.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .harness_errors
            .iter()
            .map(|e| Finding::HarnessError { detail: e.clone() })
            .collect();
        if !self.comparable && !self.options.allow_no_baseline {
            out.push(Finding::NoBaseline {
                detail: self.env_differences.join("; "),
            });
        }
        for t in &self.missed_targets {
            out.push(if t.lost {
                Finding::LostEvents {
                    scenario: t.scenario.clone(),
                    detail: t.detail.clone(),
                }
            } else {
                Finding::MissedTarget {
                    scenario: t.scenario.clone(),
                    detail: t.detail.clone(),
                }
            });
        }
        for m in self.gated_regressions() {
            out.push(Finding::Regressed {
                scenario: m.scenario.clone(),
                metric: m.metric.clone(),
                detail: m.label.clone(),
            });
        }
        for m in self.gated_noisier() {
            out.push(Finding::Noisier {
                scenario: m.scenario.clone(),
                metric: m.metric.clone(),
                detail: format!("{} ({})", m.note.trim_start_matches("noisier: "), m.label),
            });
        }
        out
    }

    /// The exit code of [`Comparison::findings`], by the one rule ([`exit::code`]).
    pub fn exit_code(&self) -> u8 {
        exit::code(&self.findings())
    }
}

/// One side of a comparison: one run, or the rounds of one side of an interleaved run.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    pub rounds: Vec<RunInput>,
}

/// Compare two independent runs. With one run per side the variation between runs is unknown,
/// so no metric gets a verdict other than `inconclusive` ([`ONE_RUN_PER_SIDE`]); the estimates
/// and intervals are still reported.
pub fn compare_runs(
    baseline: &RunInput,
    candidate: &RunInput,
    options: &CompareOptions,
) -> Comparison {
    compare_with_baselines(std::slice::from_ref(baseline), candidate, options)
}

/// Compare a run with several independent baseline runs (a branch's recent history): their
/// spread is the variation between runs that a change must stand out of.
pub fn compare_with_baselines(
    baselines: &[RunInput],
    candidate: &RunInput,
    options: &CompareOptions,
) -> Comparison {
    let base = Side {
        label: "baseline".into(),
        rounds: baselines.to_vec(),
    };
    let cand = Side {
        label: "candidate".into(),
        rounds: vec![candidate.clone()],
    };
    compare_sides(&base, &cand, false, None, options)
}

/// Externally measured A/A noise per `(scenario, metric)` on the change scale (interleaved runs).
pub type NoiseFloors = std::collections::BTreeMap<(String, String), f64>;

/// Compare two sides. `paired` pairs round *i* of one side with round *i* of the other
/// (interleaved runs); `noise` (the baseline's A/A noise, measured outside) replaces the
/// baseline's split-half noise when given.
pub fn compare_sides(
    base: &Side,
    cand: &Side,
    paired: bool,
    noise: Option<&NoiseFloors>,
    options: &CompareOptions,
) -> Comparison {
    let mut notes = Vec::new();
    let env_b = base.rounds.first().map(|r| &r.results.environment);
    let env_c = cand.rounds.first().map(|r| &r.results.environment);
    let env_differences = match (env_b, env_c) {
        (Some(b), Some(c)) => c.differences(b),
        _ => vec!["a side has no runs".into()],
    };
    let comparable = env_differences.is_empty()
        || (options.allow_different_env && env_b.is_some() && env_c.is_some());
    if !env_differences.is_empty() && comparable {
        notes.push(format!(
            "compared despite different environments (--allow-different-env): {}",
            env_differences.join("; ")
        ));
    }
    if !comparable && options.allow_no_baseline {
        notes.push(format!(
            "no comparable baseline, allowed (--allow-no-baseline): {}",
            env_differences.join("; ")
        ));
    }

    let mut names: Vec<String> = Vec::new();
    for side in [cand, base] {
        for round in &side.rounds {
            for s in &round.results.scenarios {
                if !names.contains(&s.name) {
                    names.push(s.name.clone());
                }
            }
        }
    }

    let mut pending = Vec::new();
    for name in &names {
        pending.extend(prepare_scenario(
            name,
            base,
            cand,
            paired,
            noise,
            comparable,
            &env_differences,
            options,
            &mut notes,
        ));
    }
    // The gated family under Holm (or the chosen correction); the rest under Bonferroni over
    // their own family, reported only.
    let in_family = |p: &Pending, gated: bool| p.se.is_some() && p.row.gated == gated;
    let gated: Vec<usize> = (0..pending.len())
        .filter(|&i| in_family(&pending[i], true))
        .collect();
    let family_size = gated.len();
    let p_values: Vec<f64> = gated.iter().map(|&i| pending[i].p_value()).collect();
    let gated_levels = match options.correction {
        Correction::Holm => stats::holm_levels(&p_values, options.alpha),
        Correction::Bonferroni => vec![options.alpha / family_size.max(1) as f64; family_size],
        Correction::None => vec![options.alpha; family_size],
    };
    let reported = pending.iter().filter(|p| in_family(p, false)).count();
    let reported_level = match options.correction {
        Correction::None => options.alpha,
        _ => options.alpha / reported.max(1) as f64,
    };
    let mut levels = vec![reported_level; pending.len()];
    for (&i, level) in gated.iter().zip(gated_levels) {
        levels[i] = level;
    }
    let per_metric_alpha = match options.correction {
        Correction::None => options.alpha,
        _ => options.alpha / family_size.max(1) as f64,
    };
    let metrics = pending
        .into_iter()
        .zip(levels)
        .map(|(p, level)| p.finish(level, options))
        .collect();

    let (missed_targets, harness_errors, excused) = absolute_checks(base, cand, paired);
    for e in excused {
        notes.push(format!(
            "left out of the comparison, the harness lost its schedule there (machine noise in few rounds): {e}"
        ));
    }

    Comparison {
        schema_version: COMPARE_SCHEMA_VERSION,
        mode: if paired {
            "interleaved".into()
        } else {
            "runs".into()
        },
        baseline: side_info(base),
        candidate: side_info(cand),
        comparable,
        env_differences,
        options: options.clone(),
        family_size,
        per_metric_confidence: 1.0 - per_metric_alpha,
        metrics,
        missed_targets,
        harness_errors,
        notes,
    }
}

/// The candidate's missed targets (one line per scenario and target, however many rounds missed
/// it, saying whether the baseline missed it too) and its harness errors.
/// Also returns the candidate rounds whose harness lag is excused ([`lag_excused`]).
fn absolute_checks(
    base: &Side,
    cand: &Side,
    paired: bool,
) -> (Vec<MissedTarget>, Vec<String>, Vec<String>) {
    // (scenario, target, lost) -> (rounds missed, actual values)
    type Key = (String, String, bool);
    let mut missed: Vec<(Key, usize, Vec<f64>)> = Vec::new();
    let mut harness_errors = Vec::new();
    // The same rules as a single run's exit code ([`crate::run::findings`]); a target is keyed
    // without its actual value, so that one line says in how many rounds it was missed.
    let misses = |round: &RunInput| -> Vec<(Key, Option<f64>)> {
        let mut out = Vec::new();
        // Only a failed scenario's targets count: an invalid one (harness lag) measured the
        // load generator, so its figures can neither meet nor miss a target.
        for s in round
            .results
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
        {
            for t in s.targets.iter().filter(|t| t.missed()) {
                let what = crate::run::target_text(t);
                out.push(((s.name.clone(), what, false), t.actual));
            }
            let a = s.accounting;
            if !a.loss_expected && (a.lost > 0 || a.duplicated > 0) {
                let what = format!(
                    "lost {} duplicated {} of {} sent",
                    a.lost, a.duplicated, a.sent
                );
                out.push(((s.name.clone(), what, true), None));
            }
        }
        out
    };
    let mut excused = Vec::new();
    for round in &cand.rounds {
        for f in crate::run::findings(&round.results) {
            match f {
                Finding::HarnessError { detail } => harness_errors.push(detail),
                Finding::HarnessLag { scenario, detail } => {
                    if lag_excused(&scenario, base, cand, paired) {
                        excused.push(format!("{}: {scenario}: {detail}", round.results.run_id));
                    } else {
                        harness_errors.push(format!("{scenario}: invalid (harness lag): {detail}"));
                    }
                }
                _ => {}
            }
        }
        for (key, actual) in misses(round) {
            match missed.iter_mut().find(|m| m.0 == key) {
                Some(m) => {
                    m.1 += 1;
                    m.2.extend(actual);
                }
                None => missed.push((key, 1, actual.into_iter().collect())),
            }
        }
    }
    let base_misses: Vec<Key> = base
        .rounds
        .iter()
        .flat_map(|r| misses(r).into_iter().map(|(k, _)| k))
        .collect();
    let rounds = cand.rounds.len();
    let targets = missed
        .into_iter()
        .map(|((scenario, target, lost), n, actuals)| {
            let mut detail = target.clone();
            if !actuals.is_empty() {
                let lo = actuals.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = actuals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                detail.push_str(&if actuals.len() == 1 {
                    format!(" (actual {lo:.3})")
                } else {
                    format!(" (actual {lo:.3} … {hi:.3})")
                });
            }
            if rounds > 1 {
                detail.push_str(&format!(", missed in {n} of {rounds} rounds"));
            }
            if base_misses.contains(&(scenario.clone(), target, lost)) {
                detail.push_str("; the baseline misses it too");
            }
            MissedTarget {
                scenario,
                detail,
                lost,
            }
        })
        .collect();
    (targets, harness_errors, excused)
}

fn side_info(side: &Side) -> SideInfo {
    let first = side.rounds.first().map(|r| &r.results);
    SideInfo {
        label: side.label.clone(),
        run_ids: side
            .rounds
            .iter()
            .map(|r| r.results.run_id.clone())
            .collect(),
        git_revision: first
            .map(|r| r.environment.git_revision.clone())
            .unwrap_or_default(),
        git_dirty: first.is_some_and(|r| r.environment.git_dirty),
        git_branch: first.and_then(|r| r.environment.git_branch.clone()),
        fingerprint: first
            .map(|r| r.environment.fingerprint())
            .unwrap_or_default(),
    }
}

/// A metric whose interval awaits the family size.
struct Pending {
    row: MetricComparison,
    /// Standard error of the change from the bootstrap (within runs, resampling runs too).
    se: Option<f64>,
    /// Standard error of the change between runs, and its degrees of freedom
    /// ([`stats::between_runs`]); zero degrees of freedom: one run per side.
    between: Option<(f64, usize)>,
    relative: bool,
    min_effect: f64,
    /// Each side is a single run.
    one_run_each: bool,
    /// Interleaved runs: rounds per side (for [`MetricComparison::rounds_needed`]).
    rounds: Option<usize>,
    /// Interval-to-interval spread of each side ([`stats::interval_spread`]) and the one-sided
    /// p-value that the candidate's is larger ([`stats::spread_p_value`]).
    spreads: Option<(stats::Spread, stats::Spread, f64)>,
}

/// Why nothing is decided when each side is a single run.
pub const ONE_RUN_PER_SIDE: &str = "one run per side: the variation between runs is not measured \
     (compare with several baseline runs, e.g. history:<branch>, or run --against)";

/// Why nothing is decided when interleaved rounds leave a single pair for a scenario.
pub const ONE_PAIR: &str = "one usable pair of rounds (the others lagged or lack the scenario): \
     the variation between rounds is not measured";

/// Why nothing is decided when a run has no value of its own for the statistic.
pub const BETWEEN_RUNS_UNKNOWN: &str =
    "a run has no value of its own for this statistic, so the variation between runs is unknown";

/// The metrics whose regression fails the gate: per scenario, the median and the tail, the
/// throughput, the CPU per event of each process under test, and the NATS/direct CPU ratio.
/// Everything else (p99.9, RSS slopes) is reported, not gated: fewer gated comparisons give each
/// one more power.
pub fn is_primary(metric: &str) -> bool {
    matches!(metric, "p50" | "p99" | "throughput")
        || metric.starts_with("cpu_us_per_event.")
        || RUN_METRICS.iter().any(|(key, _, _)| *key == metric)
}

impl Pending {
    /// The p-value of "no change": the larger of the bootstrap's (normal) and the between-run
    /// one (Student's t), matching the interval, which is the wider of the two. 1 when the
    /// variation between runs is unknown (nothing can be decided).
    fn p_value(&self) -> f64 {
        let (Some(est), Some(se)) = (self.row.change, self.se) else {
            return 1.0;
        };
        let within = stats::p_value(est, se, None);
        match self.between {
            Some((between_se, df)) if df > 0 => {
                within.max(stats::p_value(est, between_se, Some(df)))
            }
            _ if self.idle() && !self.one_run_each => within,
            _ => 1.0,
        }
    }

    fn idle(&self) -> bool {
        self.row.baseline == Some(0.0) && self.row.candidate == Some(0.0)
    }

    /// The interval at `level` (two-sided `1 − level`) is the wider of the bootstrap's and the
    /// between-run one (Student's t), so neither a noisy run nor a run-to-run shift passes for a
    /// change; then the verdict, the minimum detectable effect and the noisier check.
    fn finish(mut self, level: f64, options: &CompareOptions) -> MetricComparison {
        let idle = self.idle();
        let r = &mut self.row;
        r.threshold = self.min_effect.max(r.noise_floor.unwrap_or(0.0));
        if let (Some(est), Some(se)) = (r.change, self.se) {
            let z = stats::normal_quantile(1.0 - level / 2.0);
            let mut half = z * se;
            // The standard error behind the half-width, for the power calculation.
            let mut spread = se;
            let mut unmeasured = None;
            match self.between {
                Some((_, 0)) if self.rounds.is_some() => unmeasured = Some(ONE_PAIR),
                Some((_, 0)) => unmeasured = Some(ONE_RUN_PER_SIDE),
                Some((between_se, df)) => {
                    let t = stats::t_quantile(df, level) * between_se;
                    if t > half {
                        half = t;
                        spread = between_se;
                        r.between_runs = true;
                    }
                }
                None => unmeasured = Some(BETWEEN_RUNS_UNKNOWN),
            }
            let (lo, hi) = (est - half, est + half);
            let noise_relative_ok = !self.relative
                || r.noise_floor
                    .is_none_or(|n| n <= (1.0 + options.max_noise_floor).ln());
            let (verdict, note) = decide(
                est,
                lo,
                hi,
                r.noise_floor,
                self.min_effect,
                noise_relative_ok,
                r.direction,
            );
            r.verdict = verdict;
            if !note.is_empty() {
                r.note = note;
            }
            if let Some(why) = unmeasured {
                if !idle || self.one_run_each {
                    r.verdict = ChangeVerdict::Inconclusive;
                    r.note = if idle {
                        format!("zero on both sides, but {why}")
                    } else {
                        why.into()
                    };
                }
            }
            // Noisier: the candidate's interval-to-interval spread clearly above the baseline's
            // (by NOISIER_RATIO, and significant run to run at this metric's level).
            if let (
                Some((b, c, spread_p)),
                ChangeVerdict::Unchanged | ChangeVerdict::Inconclusive,
            ) = (&self.spreads, r.verdict)
            {
                // A spread below a quarter of the min effect is immaterial (a paced throughput
                // that varies by 0.1 % against 0 % is not noisier in any way that matters).
                if unmeasured.is_none()
                    && c.sd > NOISIER_RATIO * b.sd
                    && c.sd >= self.min_effect / 4.0
                    && *spread_p < level
                {
                    r.verdict = ChangeVerdict::Noisier;
                    r.note = if b.sd > 0.0 {
                        format!("noisier: spread {}", render::percent(c.sd / b.sd - 1.0))
                    } else {
                        "noisier: spread up from none".to_owned()
                    };
                }
            }
            r.spread = self.spreads.as_ref().map(|(b, c, _)| [b.sd, c.sd]);
            if unmeasured.is_none() || (idle && !self.one_run_each) {
                let detectable = (half + stats::POWER_Z * spread).max(r.threshold);
                r.mde = Some(detectable);
                r.rounds_needed = self.rounds.map(|n| {
                    let ratio = (half + stats::POWER_Z * spread) / self.min_effect;
                    ((n as f64) * ratio * ratio).ceil().max(n as f64) as usize
                });
            }
            r.confidence = Some(1.0 - level);
            if self.relative {
                r.change = Some(est.exp() - 1.0);
                r.ci = Some([lo.exp() - 1.0, hi.exp() - 1.0]);
                r.mde = r.mde.map(|m| m.exp() - 1.0);
            } else {
                r.ci = Some([lo, hi]);
            }
        } else if self.relative {
            r.change = r.change.map(|c| c.exp() - 1.0);
        }
        if self.relative {
            r.noise_floor = r.noise_floor.map(|n| n.exp() - 1.0);
            r.threshold = r.threshold.exp() - 1.0;
        }
        r.label = render::label(r);
        self.row
    }
}

/// The decision rule on the change scale; `change` is "candidate relative to baseline", so for
/// lower-is-better metrics a positive change is bad. Returns the verdict and, when useful, why.
pub fn decide(
    est: f64,
    lo: f64,
    hi: f64,
    noise: Option<f64>,
    min_effect: f64,
    noise_acceptable: bool,
    direction: Direction,
) -> (ChangeVerdict, String) {
    let threshold = min_effect.max(noise.unwrap_or(0.0));
    let (worse, better) = match direction {
        Direction::LowerIsBetter => (ChangeVerdict::Regressed, ChangeVerdict::Improved),
        Direction::HigherIsBetter => (ChangeVerdict::Improved, ChangeVerdict::Regressed),
    };
    if lo > 0.0 && est >= threshold {
        return (worse, String::new());
    }
    if hi < 0.0 && est <= -threshold {
        return (better, String::new());
    }
    if !noise_acceptable {
        return (
            ChangeVerdict::Inconclusive,
            "A/A noise floor too high to call it unchanged".into(),
        );
    }
    if lo >= -threshold && hi <= threshold {
        let note = if lo > 0.0 || hi < 0.0 {
            "significant but below the threshold"
        } else {
            ""
        };
        return (ChangeVerdict::Unchanged, note.into());
    }
    let why = if lo > 0.0 || hi < 0.0 {
        "significant, but cannot tell whether it exceeds the threshold"
    } else {
        "interval too wide"
    };
    (ChangeVerdict::Inconclusive, why.into())
}

/// The processes under test that appear in these scenario results, sorted (their order gives the
/// process slots of [`Stat::CpuPerEvent`] and [`Stat::RssSlope`]).
pub(crate) fn processes_under_test<'a>(
    scenarios: impl Iterator<Item = &'a ScenarioResult>,
) -> Vec<String> {
    let mut processes = BTreeSet::new();
    for s in scenarios {
        processes.extend(s.resources.iter().map(|r| r.process.clone()));
        processes.extend(s.resource_timeline.iter().map(|r| r.process.clone()));
    }
    processes.retain(|p| !NOT_UNDER_TEST.contains(&p.as_str()));
    processes.into_iter().collect()
}

/// Every compared metric: name, statistic, unit, direction.
pub(crate) fn metric_defs(processes: &[String]) -> Vec<(String, Stat, &'static str, Direction)> {
    let mut defs = vec![
        (
            "p50".to_owned(),
            Stat::Quantile(0.5),
            "ns",
            Direction::LowerIsBetter,
        ),
        (
            "p99".to_owned(),
            Stat::Quantile(0.99),
            "ns",
            Direction::LowerIsBetter,
        ),
        (
            "p99.9".to_owned(),
            Stat::Quantile(0.999),
            "ns",
            Direction::LowerIsBetter,
        ),
        (
            "throughput".to_owned(),
            Stat::Throughput,
            "events/s",
            Direction::HigherIsBetter,
        ),
    ];
    for (slot, p) in processes.iter().enumerate() {
        defs.push((
            format!("cpu_us_per_event.{p}"),
            Stat::CpuPerEvent(slot),
            "us/event",
            Direction::LowerIsBetter,
        ));
        defs.push((
            format!("rss_slope.{p}"),
            Stat::RssSlope(slot),
            "bytes/h",
            Direction::LowerIsBetter,
        ));
    }
    defs
}

/// The metrics of one scenario, before the family-wise interval is known.
#[allow(clippy::too_many_arguments)]
fn prepare_scenario(
    name: &str,
    base: &Side,
    cand: &Side,
    paired: bool,
    noise: Option<&NoiseFloors>,
    comparable: bool,
    env_differences: &[String],
    options: &CompareOptions,
    notes: &mut Vec<String>,
) -> Vec<Pending> {
    let (base_runs, cand_runs) = usable_rounds(name, base, cand, paired);

    let processes = processes_under_test(base_runs.iter().chain(&cand_runs).map(|(_, s)| *s));
    let defs = metric_defs(&processes);
    let stat_list: Vec<Stat> = defs.iter().map(|d| d.1).collect();

    // Load interval histograms of every run first: the value table spans both sides.
    let mut load_notes = Vec::new();
    let base_intervals: Vec<_> = base_runs
        .iter()
        .map(|(r, s)| load_intervals(r, s, &mut load_notes))
        .collect();
    let cand_intervals: Vec<_> = cand_runs
        .iter()
        .map(|(r, s)| load_intervals(r, s, &mut load_notes))
        .collect();
    let table = ValueTable::new(
        base_intervals
            .iter()
            .chain(&cand_intervals)
            .flatten()
            .flat_map(|iv| iv.iter().map(|i| i.histogram.unpack())),
    );
    let to_blocks = |runs: &[(&RunInput, &ScenarioResult)],
                     ivs: &[Option<Vec<histogram::PackedInterval>>]|
     -> Vec<Vec<Block>> {
        runs.iter()
            .zip(ivs)
            .map(|((_, s), iv)| blocks_of(s, iv.as_deref(), &table, &processes))
            .filter(|b| !b.is_empty())
            .collect()
    };
    let base_blocks = to_blocks(&base_runs, &base_intervals);
    let cand_blocks = to_blocks(&cand_runs, &cand_intervals);
    for n in load_notes {
        notes.push(format!("{name}: {n}"));
    }

    let all = |sample: &[Vec<Block>]| -> Vec<Option<f64>> {
        let groups: Vec<Vec<&Block>> = sample.iter().map(|c| c.iter().collect()).collect();
        stats::evaluate(&table, &stat_list, &groups, options.min_tail_events)
    };
    let base_values = all(&base_blocks);
    let cand_values = all(&cand_blocks);
    // Each run's own value of every statistic: what varies between runs. A run may hold too few
    // events for a tail percentile to be more than its maximum; it is taken anyway, since a noisy
    // per-run value only widens the between-run interval (where leaving the run out would hide
    // the variation and let the pooled bootstrap alone decide).
    let per_run = |sample: &[Vec<Block>]| -> Vec<Vec<Option<f64>>> {
        sample
            .iter()
            .map(|c| stats::evaluate(&table, &stat_list, &[c.iter().collect()], 0.0))
            .collect()
    };
    let base_per_run = per_run(&base_blocks);
    let cand_per_run = per_run(&cand_blocks);
    let fallback_b = base_runs.first().map(|(_, s)| *s);
    let fallback_c = cand_runs.first().map(|(_, s)| *s);

    let missing = if base_runs.is_empty() {
        Some("not in baseline".to_owned())
    } else if cand_runs.is_empty() {
        Some("not in candidate".to_owned())
    } else if !comparable {
        Some(format!("not comparable: {}", env_differences.join("; ")))
    } else {
        None
    };
    let blocks_b: usize = base_blocks.iter().map(Vec::len).sum();
    let blocks_c: usize = cand_blocks.iter().map(Vec::len).sum();
    let enough = blocks_b >= options.min_intervals && blocks_c >= options.min_intervals;
    let seed = options.seed ^ fnv1a(name);
    let replicates = if missing.is_none() && enough {
        stats::bootstrap(
            &table,
            &stat_list,
            &base_blocks,
            &cand_blocks,
            paired,
            stats::Resampling {
                resamples: options.resamples,
                seed,
                min_tail_events: options.min_tail_events,
            },
        )
    } else {
        vec![Vec::new(); stat_list.len()]
    };
    // The noise floor is the baseline's own A/A noise: a jittery candidate must not raise its
    // own threshold. The candidate's jitter is compared with the baseline's instead (noisier).
    let own_noise = if noise.is_none() && missing.is_none() && enough {
        stats::split_half_noise(&table, &stat_list, &base_blocks, options.min_tail_events)
    } else {
        vec![None; stat_list.len()]
    };
    let (spread_b, spread_c) = if missing.is_none() && enough {
        (
            stats::interval_spread(&table, &stat_list, &base_blocks, options.min_tail_events),
            stats::interval_spread(&table, &stat_list, &cand_blocks, options.min_tail_events),
        )
    } else {
        (vec![None; stat_list.len()], vec![None; stat_list.len()])
    };
    let one_run_each = base_runs.len() == 1 && cand_runs.len() == 1;
    let rounds = paired.then_some(cand_runs.len());

    let mut pending: Vec<Pending> = defs.iter()
        .enumerate()
        .map(|(i, (metric, stat, unit, direction))| {
            let relative = stat.relative();
            let min_effect = if relative { (1.0 + options.min_effect).ln() } else { options.min_rss_slope_bytes_per_hour };
            let baseline = base_values[i].or_else(|| fallback_b.and_then(|s| summary_value(s, metric)));
            let candidate = cand_values[i].or_else(|| fallback_c.and_then(|s| summary_value(s, metric)));
            let change = stats::change(*stat, baseline, candidate);
            let noise_floor = match noise {
                Some(map) => map.get(&(name.to_owned(), metric.clone())).copied(),
                None => own_noise[i],
            };
            let mut note = String::new();
            let mut se = None;
            if let Some(why) = &missing {
                note.clone_from(why);
            } else if !enough {
                note = format!("too few intervals to estimate noise (baseline {blocks_b}, candidate {blocks_c}, need {})", options.min_intervals);
            } else if base_values[i].is_none() || cand_values[i].is_none() {
                note = undefined_reason(*stat, options);
            } else if base_values[i] == Some(0.0) && cand_values[i] == Some(0.0) {
                // An idle process: no ratio, but nothing changed either.
                note = "zero on both sides".into();
                se = Some(0.0);
            } else {
                let reps = &replicates[i];
                if reps.len() * 10 < options.resamples * 9 {
                    note = format!("statistic undefined in {} of {} resamples", options.resamples - reps.len(), options.resamples);
                } else {
                    se = stats::mean_sd(reps).map(|(_, sd)| sd);
                }
            }
            let row = MetricComparison {
                scenario: name.to_owned(),
                metric: metric.clone(),
                unit: (*unit).to_owned(),
                direction: *direction,
                scale: if relative { "relative".into() } else { "absolute".into() },
                baseline,
                candidate,
                change: if se.is_some() {
                    base_values[i].and_then(|b| stats::change(*stat, Some(b), cand_values[i])).or(Some(0.0))
                } else {
                    change
                },
                ci: None,
                noise_floor,
                threshold: 0.0,
                verdict: ChangeVerdict::Inconclusive,
                label: String::new(),
                note,
                between_runs: false,
                gated: is_primary(metric),
                confidence: None,
                mde: None,
                rounds_needed: None,
                spread: None,
            };
            let column = |runs: &[Vec<Option<f64>>]| -> Vec<Option<f64>> { runs.iter().map(|r| r[i]).collect() };
            let between = stats::between_runs(*stat, &column(&base_per_run), &column(&cand_per_run), paired);
            let spreads = spread_b[i].clone().zip(spread_c[i].clone()).map(|(b, c)| {
                let p = stats::spread_p_value(&b, &c, paired);
                (b, c, p)
            });
            Pending { row, se, between, relative, min_effect, one_run_each, rounds, spreads }
        })
        .collect();
    pending.extend(run_metrics(
        name,
        &base_runs,
        &cand_runs,
        missing.as_deref(),
        paired,
        noise,
        options,
    ));
    pending
}

/// The rounds of each side that measured scenario `name`: a round whose harness lost its
/// schedule there (`invalid`) measured the load generator and is left out ([`lag_excused`]
/// says when that is allowed); for paired rounds its partner goes too, so pairs stay pairs.
#[allow(clippy::type_complexity)]
fn usable_rounds<'a>(
    name: &str,
    base: &'a Side,
    cand: &'a Side,
    paired: bool,
) -> (
    Vec<(&'a RunInput, &'a ScenarioResult)>,
    Vec<(&'a RunInput, &'a ScenarioResult)>,
) {
    let usable = |r: &'a RunInput| -> Option<(&'a RunInput, &'a ScenarioResult)> {
        let s = r.results.scenario(name)?;
        (s.verdict != Verdict::Invalid).then_some((r, s))
    };
    if paired {
        base.rounds
            .iter()
            .zip(&cand.rounds)
            .filter_map(|(b, c)| usable(b).zip(usable(c)))
            .unzip()
    } else {
        (
            base.rounds.iter().filter_map(usable).collect(),
            cand.rounds.iter().filter_map(usable).collect(),
        )
    }
}

/// Whether the rounds in which scenario `name` was `invalid (harness lag)` may be left out of
/// the comparison rather than fail it: only with several rounds per side, at most a third of
/// them invalid, and at least 2 usable (pairs of) rounds left. One lagging round in twelve is
/// the machine's noise; a scenario that lags in many rounds is the harness's problem.
pub fn lag_excused(name: &str, base: &Side, cand: &Side, paired: bool) -> bool {
    let invalid = |side: &Side| {
        side.rounds
            .iter()
            .filter(|r| {
                r.results
                    .scenario(name)
                    .is_some_and(|s| s.verdict == Verdict::Invalid)
            })
            .count()
    };
    let rounds = base.rounds.len() + cand.rounds.len();
    let (usable_b, usable_c) = usable_rounds(name, base, cand, paired);
    base.rounds.len() >= 2
        && cand.rounds.len() >= 2
        && 3 * (invalid(base) + invalid(cand)) <= rounds
        && usable_b.len() >= 2
        && usable_c.len() >= 2
}

/// The [`RUN_METRICS`] a scenario reports in either side's runs, before the family-wise
/// interval is known. The value of a side is the geometric mean of its runs'; there is nothing
/// within a run to resample (the bootstrap's part of the interval is zero) and no split-half
/// noise floor, so the verdict rests on the variation between runs: one run per side decides
/// nothing.
fn run_metrics(
    name: &str,
    base_runs: &[(&RunInput, &ScenarioResult)],
    cand_runs: &[(&RunInput, &ScenarioResult)],
    missing: Option<&str>,
    paired: bool,
    noise: Option<&NoiseFloors>,
    options: &CompareOptions,
) -> Vec<Pending> {
    let stat = Stat::RunValue;
    RUN_METRICS
        .iter()
        .filter(|(key, _, _)| {
            base_runs
                .iter()
                .chain(cand_runs)
                .any(|(_, s)| s.metrics.contains_key(*key))
        })
        .map(|&(key, unit, direction)| {
            let values = |runs: &[(&RunInput, &ScenarioResult)]| -> Vec<Option<f64>> {
                runs.iter()
                    .map(|(_, s)| s.metrics.get(key).copied())
                    .collect()
            };
            let (vb, vc) = (values(base_runs), values(cand_runs));
            let side_value = |v: &[Option<f64>]| -> Option<f64> {
                let logs: Vec<f64> = v
                    .iter()
                    .map(|x| x.filter(|x| *x > 0.0).map(f64::ln))
                    .collect::<Option<_>>()?;
                (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
            };
            let (baseline, candidate) = (side_value(&vb), side_value(&vc));
            let change = stats::change(stat, baseline, candidate);
            let mut note = String::new();
            let mut se = None;
            if let Some(why) = missing {
                note = why.to_owned();
            } else if change.is_none() {
                note = undefined_reason(stat, options);
            } else {
                se = Some(0.0);
            }
            let row = MetricComparison {
                scenario: name.to_owned(),
                metric: key.to_owned(),
                unit: unit.to_owned(),
                direction,
                scale: "relative".into(),
                baseline,
                candidate,
                change,
                ci: None,
                noise_floor: noise.and_then(|m| m.get(&(name.to_owned(), key.to_owned())).copied()),
                threshold: 0.0,
                verdict: ChangeVerdict::Inconclusive,
                label: String::new(),
                note,
                between_runs: false,
                gated: is_primary(key),
                confidence: None,
                mde: None,
                rounds_needed: None,
                spread: None,
            };
            Pending {
                row,
                se,
                between: stats::between_runs(stat, &vb, &vc, paired),
                relative: true,
                min_effect: (1.0 + options.min_effect).ln(),
                one_run_each: base_runs.len() == 1 && cand_runs.len() == 1,
                rounds: paired.then_some(cand_runs.len()),
                spreads: None,
            }
        })
        .collect()
}

fn undefined_reason(stat: Stat, options: &CompareOptions) -> String {
    match stat {
        Stat::Quantile(q) => format!(
            "no interval histograms, or fewer than {:.0} events for this percentile",
            options.min_tail_events / (1.0 - q)
        ),
        Stat::Throughput => "no interval data".into(),
        Stat::CpuPerEvent(_) => "no CPU samples on the interval timeline".into(),
        Stat::RssSlope(_) => "no RSS samples on the interval timeline".into(),
        Stat::RunValue => "a side has no run reporting it".into(),
    }
}

/// FNV-1a, to give every scenario its own bootstrap stream from one seed.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Write `compare.json` and `compare.md` into `dir`.
pub fn write(dir: &Path, comparison: &Comparison) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let json = dir.join("compare.json");
    let md = dir.join("compare.md");
    crate::files::write_atomic(&json, serde_json::to_string_pretty(comparison)?)?;
    crate::files::write_atomic(&md, render::markdown(comparison))?;
    Ok((json, md))
}
