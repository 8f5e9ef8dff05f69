//! Workers on this host: `cargo xtask bench --workers N` runs them as containers,
//! `--worker-processes N` as child processes.
//!
//! Containers: an image built locally `FROM scratch` around the `rosey-loadgen` binary and the
//! shared libraries `ldd` says it loads (no registry, no base image), and N containers of it that
//! join the run. They use the host's network (`--network host`): the run's NATS listens on the
//! host's loopback, and no Docker proxy sits in the path a worker's latencies are measured over.
//! Docker puts every container in a CPU cgroup of its own under one parent that weighs as much as
//! a single process: on a machine whose cores the service under test keeps busy, the workers'
//! wake-ups wait behind it (measured on 2 cores at 5,000/s: send delay p99 ~60 ms in containers,
//! ~0.46 ms as processes), which the harness-lag verdict reports. Processes share the scheduler
//! with everything else, as the harness process does.
//!
//! Dropping [`WorkerContainers`] or [`WorkerProcesses`] keeps each worker's log in the run
//! directory and removes the containers or ends the processes, also after a failed run.

use crate::provision::{docker, image_exists, DOCKER_QUICK_TIMEOUT};
use anyhow::{Context, Result};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

/// Repository of the worker image; the tag is a hash of the binary it holds.
pub const IMAGE_REPO: &str = "rosey-bench/loadgen";
/// Label on every worker container, with the run id as its value (what a cleanup looks for).
pub const RUN_LABEL: &str = "rosey-bench.workers.run";

/// The shared libraries `binary` loads, as `ldd` lists them (absolute paths, the dynamic loader
/// included); empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (from the C library's tools) to list the binary's libraries")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": static, nothing to copy.
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

/// The absolute paths in `ldd`'s output (`libc.so.6 => /lib/…/libc.so.6 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` has no file).
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `rosey-bench/loadgen:<hash>` around `binary`, built unless an image of that very binary
/// exists. Returns the image reference.
pub fn build_image(binary: &Path) -> Result<String> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let reference = format!("{IMAGE_REPO}:{:016x}", hasher.finish());
    if image_exists(&reference) {
        return Ok(reference);
    }
    let context = tempfile::Builder::new()
        .prefix("rosey-loadgen-image-")
        .tempdir()
        .context("creating a docker build context")?;
    let mut dockerfile = String::from(
        "# rosey-loadgen and the shared libraries it loads; no base image needed.\nFROM scratch\n",
    );
    for lib in shared_libraries(binary)? {
        // Kept at its own path, where the binary's loader looks for it.
        let relative = lib.strip_prefix("/").unwrap_or(&lib);
        let target = context.path().join("root").join(relative);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).context("creating the build context")?;
        }
        std::fs::copy(&lib, &target)
            .with_context(|| format!("copying {} into the build context", lib.display()))?;
    }
    let bin_dir = context.path().join("root").join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir).context("creating the build context")?;
    let target = bin_dir.join("rosey-loadgen");
    std::fs::copy(binary, &target)
        .with_context(|| format!("copying {} into the build context", binary.display()))?;
    crate::provision::set_executable(&target)?;
    dockerfile.push_str("COPY root/ /\nENTRYPOINT [\"/usr/local/bin/rosey-loadgen\"]\n");
    std::fs::write(context.path().join("Dockerfile"), dockerfile)
        .context("writing the Dockerfile")?;
    crate::provision::build_image(context.path(), &reference, "rosey-bench loadgen")?;
    remove_other_images(&reference);
    Ok(reference)
}

/// Remove the worker images of earlier builds (each build of the binary makes a new one), so
/// they do not pile up; one still in use stays.
fn remove_other_images(keep: &str) {
    let Ok(out) = docker(
        &["images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}"],
        DOCKER_QUICK_TIMEOUT,
    ) else {
        return;
    };
    for old in out.stdout.split_whitespace().filter(|r| *r != keep) {
        let _ = docker(&["rmi", old], DOCKER_QUICK_TIMEOUT);
    }
}

/// Worker containers of one run; dropped, their logs land in `<run dir>/workers/` and the
/// containers are removed.
pub struct WorkerContainers {
    /// (worker name, container id)
    containers: Vec<(String, String)>,
    log_dir: PathBuf,
}

impl WorkerContainers {
    /// Start `n` containers of `image` that join `run_id` on `nats_url` as workers `c0`, `c1`, ….
    pub fn start(
        image: &str,
        n: u32,
        nats_url: &str,
        run_id: &str,
        log_dir: &Path,
    ) -> Result<WorkerContainers> {
        crate::provision::docker_answers()?;
        let mut started = WorkerContainers {
            containers: Vec::new(),
            log_dir: log_dir.to_owned(),
        };
        for k in 0..n {
            let name = format!("c{k}");
            let container_name = format!("rosey-loadgen-{run_id}-{name}");
            let label = format!("{RUN_LABEL}={run_id}");
            let host_label = format!("{} (container)", super::worker::host_name());
            let out = docker(
                &[
                    "run",
                    "--detach",
                    "--network",
                    "host",
                    "--name",
                    &container_name,
                    "--label",
                    &label,
                    image,
                    "--nats-url",
                    nats_url,
                    "--run-id",
                    run_id,
                    "--name",
                    &name,
                    "--host-label",
                    &host_label,
                ],
                DOCKER_QUICK_TIMEOUT,
            )
            .with_context(|| format!("starting worker container {container_name}"))?;
            // On error `started` drops here and removes the ones already running.
            started
                .containers
                .push((name, out.stdout.trim().to_owned()));
        }
        Ok(started)
    }

    /// The containers' names (as workers) and host pids, for the resource sampler.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.containers
            .iter()
            .filter_map(|(name, id)| {
                let pid = crate::provision::container_pid(id).ok()?;
                Some((format!("loadgen-{name}"), pid))
            })
            .collect()
    }
}

impl Drop for WorkerContainers {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let _ = std::fs::create_dir_all(&self.log_dir);
        }
        for (name, id) in self.containers.drain(..) {
            if let Ok(out) = docker(&["logs", &id], DOCKER_QUICK_TIMEOUT) {
                let _ = std::fs::write(
                    self.log_dir.join(format!("loadgen-{name}.log")),
                    format!("{}{}", out.stdout, out.stderr),
                );
            }
            if let Err(e) = docker(&["rm", "--force", &id], DOCKER_QUICK_TIMEOUT) {
                tracing::warn!(container = %id, error = %format!("{e:#}"), "removing a worker container");
            }
        }
    }
}

/// Worker processes of one run (children of this one); dropped, they are killed if still
/// running and their logs stay in `<run dir>/workers/`.
pub struct WorkerProcesses {
    children: Vec<(String, std::process::Child)>,
}

impl WorkerProcesses {
    /// Start `n` `rosey-loadgen` processes from `binary` that join `run_id` on `nats_url` as
    /// workers `p0`, `p1`, …, each logging to `<log_dir>/loadgen-p<k>.log`.
    pub fn start(
        binary: &Path,
        n: u32,
        nats_url: &str,
        run_id: &str,
        log_dir: &Path,
    ) -> Result<WorkerProcesses> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let mut started = WorkerProcesses {
            children: Vec::new(),
        };
        for k in 0..n {
            let name = format!("p{k}");
            let log_path = log_dir.join(format!("loadgen-{name}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = std::process::Command::new(binary)
                .args(["--nats-url", nats_url, "--run-id", run_id, "--name", &name])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().context("duplicating a log file")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            // On error `started` drops here and ends the ones already running.
            started.children.push((name, child));
        }
        Ok(started)
    }

    /// The processes' names (as workers) and pids, for the resource sampler.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(name, c)| (format!("loadgen-{name}"), c.id()))
            .collect()
    }

    /// Wait until every worker has exited or `within` has passed: each one's exit code (`None`:
    /// still running, or ended by a signal).
    pub fn exit_codes(&mut self, within: std::time::Duration) -> Vec<Option<i32>> {
        let deadline = std::time::Instant::now() + within;
        self.children
            .iter_mut()
            .map(|(_, child)| loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.code(),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    _ => break None,
                }
            })
            .collect()
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        // A worker leaves on the run's bye; give them a moment, then end the rest.
        self.exit_codes(std::time::Duration::from_secs(2));
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Containers a run labelled and left behind (none, after any run or test).
pub fn leftovers(run_id: &str) -> Result<Vec<String>> {
    let filter = format!("label={RUN_LABEL}={run_id}");
    let out = docker(
        &["ps", "--all", "--quiet", "--filter", &filter],
        DOCKER_QUICK_TIMEOUT,
    )?;
    Ok(out.stdout.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files_to_copy() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs = parse_ldd(text);
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }
}
