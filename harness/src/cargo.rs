//! Running cargo from inside `cargo xtask`.
//!
//! `cargo run` sets variables such as `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR` for the program it
//! runs. A cargo started from there inherits them, and build scripts that declare
//! `rerun-if-env-changed` on them (ring's does) then rebuild on every switch between a plain
//! `cargo build` and one started by xtask. [`command`] removes them so both see the same
//! environment and share their build artifacts.

use std::process::Command;

/// Variables `cargo run` sets for the program it runs (besides `CARGO`, which we keep to find
/// the same cargo).
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
        )
}

/// A `cargo` command (the one running us, if any) with `cargo run`'s variables removed.
pub fn command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_run;

    #[test]
    fn removes_what_cargo_run_sets_and_keeps_the_rest() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_BIN_NAME",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        for name in ["CARGO", "CARGO_HOME", "CARGO_TARGET_DIR", "PATH", "CC"] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }
}
