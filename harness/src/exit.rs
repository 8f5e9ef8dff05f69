//! The exit codes of `cargo xtask` and of what it runs (a bench run, the gate, the
//! instruction-count lane, the test suite), and the one rule that turns what a run or a
//! comparison found into an exit code.
//!
//! A caller can tell "the harness could not measure" from "it measured, and the answer is no",
//! but both fail a pull request: a missed target, lost events, a regression, a harness error and
//! a missing baseline are each a [`Finding`], and every finding is listed ([`summary`]) so that
//! none hides another. Only the exit code ranks them: a harness error outranks the rest, because
//! what else was found was measured by a harness that failed.

use serde::{Deserialize, Serialize};

/// Everything ran; no target missed, no regression.
pub const OK: u8 = 0;
/// The harness or a tool failed: something could not be measured.
pub const HARNESS_ERROR: u8 = 1;
/// Measured fine, but a target was missed, events were lost, a regression was found, a gated
/// metric became noisier, or there was no baseline to compare with.
pub const TARGET_MISSED_OR_REGRESSED: u8 = 2;

/// One reason a run or a comparison does not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Something could not be measured: a tool failed or a scenario errored.
    HarnessError { detail: String },
    /// The harness did not keep its own schedule in a scenario (`invalid (harness lag)`): the
    /// figures would measure the load generator, not the service.
    HarnessLag { scenario: String, detail: String },
    /// A scenario's target (not an informational one) was missed.
    MissedTarget { scenario: String, detail: String },
    /// Events were lost or duplicated where none may be.
    LostEvents { scenario: String, detail: String },
    /// The gate is confident a gated metric got worse beyond its threshold.
    Regressed {
        scenario: String,
        metric: String,
        detail: String,
    },
    /// A gated metric of the candidate is clearly noisier than its baseline (`noisier`): its
    /// typical value may not have moved, but how much it varies did.
    Noisier {
        scenario: String,
        metric: String,
        detail: String,
    },
    /// Nothing to compare with (no comparable baseline run, or a side without runs). Fails
    /// unless the caller opted out (`--allow-no-baseline`).
    NoBaseline { detail: String },
}

impl Finding {
    /// The exit code of this finding alone.
    pub fn code(&self) -> u8 {
        match self {
            Finding::HarnessError { .. } | Finding::HarnessLag { .. } => HARNESS_ERROR,
            _ => TARGET_MISSED_OR_REGRESSED,
        }
    }

    /// One line for a summary.
    pub fn line(&self) -> String {
        match self {
            Finding::HarnessError { detail } => format!("harness error: {detail}"),
            Finding::HarnessLag { scenario, detail } => {
                format!("harness error: {scenario}: invalid (harness lag): {detail}")
            }
            Finding::MissedTarget { scenario, detail } => {
                format!("target missed: {scenario}: {detail}")
            }
            Finding::LostEvents { scenario, detail } => {
                format!("lost events: {scenario}: {detail}")
            }
            Finding::Regressed {
                scenario,
                metric,
                detail,
            } => format!("regressed: {scenario} {metric}: {detail}"),
            Finding::Noisier {
                scenario,
                metric,
                detail,
            } => format!("noisier: {scenario} {metric}: {detail}"),
            Finding::NoBaseline { detail } => format!("no comparable baseline: {detail}"),
        }
    }
}

/// The exit code of a set of findings: [`OK`] when there are none, [`HARNESS_ERROR`] when any
/// is a harness error, else [`TARGET_MISSED_OR_REGRESSED`].
pub fn code(findings: &[Finding]) -> u8 {
    if findings.iter().any(|f| f.code() == HARNESS_ERROR) {
        HARNESS_ERROR
    } else if findings.is_empty() {
        OK
    } else {
        TARGET_MISSED_OR_REGRESSED
    }
}

/// Every finding, one markdown bullet each (empty when there are none).
pub fn summary(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("- {}\n", crate::report::escape::cell(&f.line())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missed() -> Finding {
        Finding::MissedTarget {
            scenario: "s".into(),
            detail: "p99 <= 5 ms".into(),
        }
    }

    #[test]
    fn every_kind_fails_and_a_harness_error_outranks_the_rest() {
        assert_eq!(code(&[]), OK);
        for f in [
            missed(),
            Finding::LostEvents {
                scenario: "s".into(),
                detail: "lost 3".into(),
            },
            Finding::Regressed {
                scenario: "s".into(),
                metric: "p50".into(),
                detail: "+12 %".into(),
            },
            Finding::Noisier {
                scenario: "s".into(),
                metric: "p99".into(),
                detail: "spread +120 % (p99 +2.0 % [-3.0 %, +7.0 %])".into(),
            },
            Finding::NoBaseline {
                detail: "none".into(),
            },
        ] {
            assert_eq!(code(std::slice::from_ref(&f)), TARGET_MISSED_OR_REGRESSED);
        }
        let error = Finding::HarnessError {
            detail: "nats went away".into(),
        };
        assert_eq!(code(&[missed(), error.clone()]), HARNESS_ERROR);
        assert_eq!(code(&[error, missed()]), HARNESS_ERROR);
    }

    #[test]
    fn the_summary_lists_every_finding() {
        let findings = [
            missed(),
            Finding::HarnessError {
                detail: "boom".into(),
            },
        ];
        let s = summary(&findings);
        assert_eq!(s.lines().count(), 2);
        assert!(s.contains("target missed: s: p99"));
        assert!(s.contains("harness error: boom"));
    }
}
