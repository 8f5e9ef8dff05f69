//! The exit codes of `cargo xtask` and of what it runs (a bench run, the gate, the
//! instruction-count lane, the test suite), defined once.
//!
//! A caller can tell "the harness could not measure" from "it measured, and the answer is no":
//! CI treats the first as a broken job and the second as a failed check.

/// Everything ran; no target missed, no regression.
pub const OK: u8 = 0;
/// The harness or a tool failed: something could not be measured.
pub const HARNESS_ERROR: u8 = 1;
/// Measured fine, but a target was missed, events were lost, or a regression was found.
pub const TARGET_MISSED_OR_REGRESSED: u8 = 2;
