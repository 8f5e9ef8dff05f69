//! Running cargo from inside `cargo xtask`.
//!
//! `cargo run` sets variables such as `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR` for the program it
//! runs. A cargo started from there inherits them, and build scripts that declare
//! `rerun-if-env-changed` on them (ring's does) then rebuild on every switch between a plain
//! `cargo build` and one started by xtask. [`command`] removes them so both see the same
//! environment and share their build artifacts.
//!
//! [`build_services`] is the one place that builds the services under test (for `cargo xtask
//! bench` and for the baseline side of an A/B run), [`build_loadgen`] the load worker. The harness itself never runs cargo: it is
//! handed the binaries.

use anyhow::Context as _;
use harness::ServiceBinaries;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Cargo's target directory for this workspace (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Give a new target directory a copy of `seed`'s `release/` build (dependencies already
/// compiled), so building another revision there recompiles only what changed. Does nothing when
/// `target` already has a `release/` or `seed` has none.
pub fn seed_release_dir(seed: &Path, target: &Path) -> anyhow::Result<()> {
    if !seed.join("release").is_dir() || target.join("release").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(target)?;
    eprintln!("seeding {} from {}", target.display(), seed.display());
    let status = Command::new("cp")
        .arg("-a")
        .arg(seed.join("release"))
        .arg(target)
        .status()
        .context("copy the seed target directory")?;
    anyhow::ensure!(status.success(), "copying {} failed", seed.display());
    Ok(())
}

/// `cargo build --release -p rosey-dbservice -p rosey-bot` in the workspace at `src` (cargo's
/// progress on stderr as usual), with the executables' paths read from cargo's own artifact
/// messages so any target directory works.
pub fn build_services(src: &Path, target_dir: Option<&Path>) -> anyhow::Result<ServiceBinaries> {
    let mut built = build_release(
        src,
        target_dir,
        &["-p", "rosey-dbservice", "-p", "rosey-bot"],
        &["rosey-dbservice", "rosey-bot"],
    )?;
    Ok(ServiceBinaries {
        dbservice: built.remove("rosey-dbservice").unwrap_or_default(),
        bot: built.remove("rosey-bot").unwrap_or_default(),
    })
}

/// `cargo build --release -p harness --bin rosey-loadgen` in the workspace at `src`: the load
/// worker's executable.
pub fn build_loadgen(src: &Path) -> anyhow::Result<PathBuf> {
    let mut built = build_release(
        src,
        None,
        &["-p", "harness", "--bin", "rosey-loadgen"],
        &["rosey-loadgen"],
    )?;
    Ok(built.remove("rosey-loadgen").unwrap_or_default())
}

/// `cargo build --release <selection>`, and the executables of `wanted` as cargo reported them
/// (every one of them, or an error naming the missing one).
fn build_release(
    src: &Path,
    target_dir: Option<&Path>,
    selection: &[&str],
    wanted: &[&str],
) -> anyhow::Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut cmd = command();
    cmd.current_dir(src)
        .args(["build", "--release"])
        .args(selection)
        .arg("--message-format=json-render-diagnostics");
    if let Some(target) = target_dir {
        cmd.arg("--target-dir").arg(target);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("run cargo build")?;
    let stdout = child.stdout.take().context("cargo build stdout")?;
    let mut built = std::collections::BTreeMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("read cargo build output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        if let Some(name) = msg["target"]["name"].as_str() {
            if wanted.contains(&name) {
                built.insert(name.to_owned(), PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("wait for cargo build")?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release {} in {} failed",
        selection.join(" "),
        src.display()
    );
    for name in wanted {
        anyhow::ensure!(
            built.contains_key(*name),
            "cargo build reported no {name} binary"
        );
    }
    Ok(built)
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
