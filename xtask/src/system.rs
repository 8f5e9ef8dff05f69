//! Installing a missing Debian package for a command that needs it (Chromium for the report
//! check, Valgrind for the instruction-count lane), when this user may: as root, or through
//! password-less sudo. Otherwise the caller's error, which says what to install, stands.

use anyhow::Context as _;
use std::process::{Command, Stdio};

/// `apt-get install -y <package>` (after `apt-get update`) if packages can be installed here;
/// else `missing`, the caller's explanation of what is missing and how to get it.
pub fn apt_install(package: &str, who: &str, missing: anyhow::Error) -> anyhow::Result<()> {
    let Some(sudo) = package_installer() else {
        return Err(missing);
    };
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(if sudo { "sudo" } else { "apt-get" });
        if sudo {
            cmd.args(["-n", "apt-get"]);
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    eprintln!("{who}: installing Debian's `{package}` with apt-get ({missing:#})");
    run(&mut apt(&["update", "-qq"]), "apt-get update")?;
    run(
        &mut apt(&["install", "-y", "-qq", package]),
        &format!("apt-get install {package}"),
    )
    .with_context(|| format!("{missing:#}"))
}

/// Whether packages can be installed here: `Some(false)` as root with apt-get, `Some(true)`
/// through password-less sudo, `None` when neither works.
fn package_installer() -> Option<bool> {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("apt-get").arg("--version")) {
        return None;
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(false);
    }
    ok(Command::new("sudo").args(["-n", "true"])).then_some(true)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed");
    Ok(())
}
