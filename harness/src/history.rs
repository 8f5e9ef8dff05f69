//! The history store: every run's `results.json`, kept as one file per run so that history is
//! append-only and merges without conflicts (two CI jobs never write the same file).
//!
//! Layout: `<history_dir>/<run_id>.json`, where `run_id` is `<UTC yyyymmddThhmmssZ>-<short rev>`.
//! Reading never modifies anything: a file that is not valid JSON, has another schema version or
//! is not a results file is reported by name in [`History::skipped`] and left as it is. Files not
//! ending in `.json` (the generated `index.html`, a README, `.gitkeep`) are not history entries
//! and are ignored.

use crate::results::{RunResults, RESULTS_FILE, SCHEMA_VERSION};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where history lives unless configured otherwise (relative to the workspace root).
pub const DEFAULT_DIR: &str = "reports/history";

/// How many runs per environment fingerprint the CI history keeps ([`prune_selection`]) unless
/// `[history] keep_per_fingerprint` in `harness/bench.toml` (or `--keep`) says otherwise.
pub const DEFAULT_KEEP_PER_FINGERPRINT: usize = 30;

/// Every readable run in a history directory, oldest first.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Sorted by `started_at`, then `run_id`.
    pub runs: Vec<RunResults>,
    /// Files that look like history entries but could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl History {
    /// The run with this id, if present.
    pub fn run(&self, run_id: &str) -> Option<&RunResults> {
        self.runs.iter().find(|r| r.run_id == run_id)
    }

    /// One human-readable line per skipped file.
    pub fn warnings(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|(path, why)| format!("history: skipped {}: {why}", path.display()))
            .collect()
    }
}

/// File name of a run inside the history directory. Refuses run ids that could escape the
/// directory or are not portable file names.
pub fn file_name(run_id: &str) -> anyhow::Result<String> {
    let portable = !run_id.is_empty()
        && !run_id.starts_with('.')
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    anyhow::ensure!(
        portable,
        "run id {run_id:?} is not a portable file name (allowed: A-Z a-z 0-9 - _ .)"
    );
    Ok(format!("{run_id}.json"))
}

/// Add a run to the history: copies `<run_dir>/results.json` byte for byte when it exists and
/// holds this run (so fields this build does not know survive), otherwise writes `results`.
///
/// Appending the same run twice is a no-op; a different file with the same name is never
/// overwritten (that is an error).
pub fn append(dir: &Path, results: &RunResults, run_dir: &Path) -> anyhow::Result<PathBuf> {
    let name = file_name(&results.run_id)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create history directory {}", dir.display()))?;
    let target = dir.join(&name);
    let bytes = contents_for(results, run_dir)?;
    if let Ok(existing) = std::fs::read(&target) {
        anyhow::ensure!(
            existing == bytes,
            "history already holds a different {} (refusing to overwrite it)",
            target.display()
        );
        return Ok(target);
    }
    // Written whole under a temporary name and moved into place only if the name is free, so a
    // reader never sees half a file and a concurrent writer of the same run is not overwritten.
    let created = crate::files::write_atomic_new(&target, &bytes);
    let exists = |e: &anyhow::Error| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists)
    };
    match created {
        Ok(()) => Ok(target),
        Err(e) if exists(&e) => {
            let existing =
                std::fs::read(&target).with_context(|| format!("read {}", target.display()))?;
            anyhow::ensure!(
                existing == bytes,
                "history already holds a different {}",
                target.display()
            );
            Ok(target)
        }
        Err(e) => Err(e).with_context(|| format!("add {} to history", target.display())),
    }
}

fn contents_for(results: &RunResults, run_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let source = run_dir.join(RESULTS_FILE);
    if let Ok(bytes) = std::fs::read(&source) {
        let same_run = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| RunResults::from_json(text).ok())
            .is_some_and(|on_disk| on_disk.run_id == results.run_id);
        if same_run {
            return Ok(bytes);
        }
    }
    let mut text = serde_json::to_string_pretty(results).context("serialize results")?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Read every `*.json` file of `dir`. A missing directory is an empty history.
pub fn load(dir: &Path) -> anyhow::Result<History> {
    let mut history = History::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(history),
        Err(e) => {
            return Err(e).with_context(|| format!("read history directory {}", dir.display()))
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read history directory {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        paths.push(path);
    }
    paths.sort();
    for path in paths {
        match read_entry(&path) {
            Ok(run) if history.run(&run.run_id).is_some() => {
                history
                    .skipped
                    .push((path, format!("duplicate run id {}", run.run_id)));
            }
            Ok(run) => history.runs.push(run),
            Err(why) => history.skipped.push((path, why)),
        }
    }
    history.runs.sort_by_key(sort_key);
    Ok(history)
}

fn read_entry(path: &Path) -> Result<RunResults, String> {
    if !path.is_file() {
        return Err("not a regular file".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("unreadable: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))?;
    let looks_like_results = value.get("run_id").is_some() && value.get("scenarios").is_some();
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64);
    match version {
        None if !looks_like_results => {
            return Err("not a results file (no schema_version, run_id, scenarios)".into())
        }
        Some(v) if v != u64::from(SCHEMA_VERSION) => {
            return Err(format!(
                "results schema version {v}, this build reads {SCHEMA_VERSION}"
            ))
        }
        _ => {}
    }
    serde_json::from_value::<RunResults>(value).map_err(|e| format!("not a results file: {e}"))
}

/// Chronological order; RFC 3339 timestamps are compared as instants, so offsets other than `Z`
/// still sort right.
fn sort_key(run: &RunResults) -> (i64, String) {
    let instant = chrono::DateTime::parse_from_rfc3339(&run.started_at)
        .map(|t| t.timestamp_micros())
        .unwrap_or(i64::MIN);
    (instant, run.run_id.clone())
}

/// True when two runs were measured in comparable environments (same machine, toolchain, NATS
/// and configuration).
pub fn comparable(a: &RunResults, b: &RunResults) -> bool {
    a.environment.fingerprint() == b.environment.fingerprint()
}

/// The most recent run before `current` (by start time) with the same environment fingerprint and
/// a different run id; restricted to `branch` when given.
pub fn latest_comparable<'h>(
    history: &'h History,
    current: &RunResults,
    branch: Option<&str>,
) -> Option<&'h RunResults> {
    let now = sort_key(current);
    history
        .runs
        .iter()
        .filter(|r| r.run_id != current.run_id && comparable(r, current))
        .filter(|r| branch.is_none() || r.environment.git_branch.as_deref() == branch)
        .filter(|r| sort_key(r) < now)
        .max_by(|a, b| sort_key(a).cmp(&sort_key(b)))
}

/// Up to `n` of the most recent runs before `current` that are comparable with it, on `branch`
/// when given; oldest first. The gate compares with several, so that it knows how much runs of
/// the same code differ from each other.
pub fn recent_comparable<'h>(
    history: &'h History,
    current: &RunResults,
    branch: Option<&str>,
    n: usize,
) -> Vec<&'h RunResults> {
    let now = sort_key(current);
    let mut runs: Vec<&RunResults> = history
        .runs
        .iter()
        .filter(|r| r.run_id != current.run_id && comparable(r, current))
        .filter(|r| branch.is_none() || r.environment.git_branch.as_deref() == branch)
        .filter(|r| sort_key(r) < now)
        .collect();
    runs.sort_by_key(|r| sort_key(r));
    let skip = runs.len().saturating_sub(n);
    runs.split_off(skip)
}

/// The runs to drop so that every environment fingerprint keeps only its `keep` newest runs,
/// newest by `started_at`, then `run_id` (the order of [`load`]; a start time that does not parse
/// counts as oldest). Runs of different fingerprints never count against each other. Pure: the
/// caller deletes. Returns run ids, oldest first; the order of `runs` does not matter.
pub fn prune_selection(runs: &[RunResults], keep: usize) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<&RunResults>> = BTreeMap::new();
    for run in runs {
        groups
            .entry(run.environment.fingerprint())
            .or_default()
            .push(run);
    }
    let mut drop: Vec<&RunResults> = Vec::new();
    for mut group in groups.into_values() {
        group.sort_by_key(|r| sort_key(r));
        let excess = group.len().saturating_sub(keep);
        drop.extend(group.into_iter().take(excess));
    }
    drop.sort_by_key(|r| sort_key(r));
    drop.into_iter().map(|r| r.run_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built from JSON so that fields added to the schema later (with defaults) need no change here.
    fn run(run_id: &str, started_at: &str, branch: &str, kernel: &str) -> RunResults {
        serde_json::from_value(serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "started_at": started_at,
            "finished_at": started_at,
            "profile": "quick",
            "environment": {
                "git_revision": "abcdef0123", "git_dirty": false, "git_branch": branch,
                "rustc_version": "rustc 1.85.0",
                "nats": {"kind": "local", "detail": "/bin/nats-server", "server_version": "2.10.0"},
                "cpu_model": "cpu", "cpu_count": 2, "kernel": kernel, "os": "linux",
                "config_hash": "c0ffee", "seed": 1
            },
            "scenarios": []
        }))
        .unwrap()
    }

    #[test]
    fn append_load_and_skip_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let history_dir = dir.path().join("history");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let b = run(
            "20261127T060000Z-bbbbbbb",
            "2026-11-27T06:00:00Z",
            "main",
            "6.1",
        );
        let a = run(
            "20261127T050000Z-aaaaaaa",
            "2026-11-27T05:00:00Z",
            "main",
            "6.1",
        );
        // `b` is copied verbatim from its run directory, `a` is serialized.
        let b_text = format!("{}\n", serde_json::to_string(&b).unwrap());
        std::fs::write(run_dir.join(RESULTS_FILE), &b_text).unwrap();
        let b_path = append(&history_dir, &b, &run_dir).unwrap();
        assert_eq!(std::fs::read_to_string(&b_path).unwrap(), b_text);
        append(&history_dir, &a, dir.path()).unwrap();
        // Idempotent.
        assert_eq!(append(&history_dir, &b, &run_dir).unwrap(), b_path);

        let corrupt = history_dir.join("20261127T070000Z-ccccccc.json");
        let foreign = history_dir.join("package.json");
        let future = history_dir.join("20261127T080000Z-ddddddd.json");
        std::fs::write(&corrupt, b"{\"schema_version\": 1, \"run_id\": ").unwrap();
        std::fs::write(&foreign, b"{\"name\": \"not-a-run\"}").unwrap();
        let mut newer = serde_json::to_value(run(
            "20261127T080000Z-ddddddd",
            "2026-11-27T08:00:00Z",
            "main",
            "6.1",
        ))
        .unwrap();
        newer["schema_version"] = 99.into();
        std::fs::write(&future, serde_json::to_vec(&newer).unwrap()).unwrap();
        std::fs::write(history_dir.join("index.html"), b"<html></html>").unwrap();
        let before: Vec<Vec<u8>> = [&corrupt, &foreign, &future]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();

        let history = load(&history_dir).unwrap();
        let ids: Vec<&str> = history.runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(
            ids,
            ["20261127T050000Z-aaaaaaa", "20261127T060000Z-bbbbbbb"]
        );
        let skipped: Vec<(&Path, &str)> = history
            .skipped
            .iter()
            .map(|(p, w)| (p.as_path(), w.as_str()))
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(
            skipped
                .iter()
                .any(|(p, w)| *p == corrupt && w.starts_with("not valid JSON")),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|(p, w)| *p == foreign && w.starts_with("not a results file")),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|(p, w)| *p == future && w.contains("schema version 99")),
            "{skipped:?}"
        );
        assert!(history
            .warnings()
            .iter()
            .all(|w| w.starts_with("history: skipped ")));
        let after: Vec<Vec<u8>> = [&corrupt, &foreign, &future]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after, "reading history must not modify files");
    }

    #[test]
    fn refuses_to_overwrite_a_different_run() {
        let dir = tempfile::tempdir().unwrap();
        let a = run(
            "20261127T050000Z-aaaaaaa",
            "2026-11-27T05:00:00Z",
            "main",
            "6.1",
        );
        let path = append(dir.path(), &a, dir.path()).unwrap();
        let original = std::fs::read(&path).unwrap();
        let mut changed = a.clone();
        changed.profile = "soak".into();
        let err = append(dir.path(), &changed, dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("refusing to overwrite"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), original);
    }

    #[test]
    fn rejects_run_ids_that_are_not_file_names() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            file_name("20261127T050000Z-abc1234").unwrap(),
            "20261127T050000Z-abc1234.json"
        );
    }

    #[test]
    fn latest_comparable_respects_fingerprint_branch_and_time() {
        let mut history = History::default();
        history
            .runs
            .push(run("r1", "2026-11-27T01:00:00Z", "main", "6.1"));
        history
            .runs
            .push(run("r2", "2026-11-27T02:00:00Z", "feature", "6.1"));
        history
            .runs
            .push(run("r3", "2026-11-27T03:00:00Z", "main", "6.2"));
        history
            .runs
            .push(run("r5", "2026-11-27T05:00:00Z", "main", "6.1"));
        let current = run("r4", "2026-11-27T04:00:00Z", "feature", "6.1");
        history.runs.push(current.clone());
        assert_eq!(
            latest_comparable(&history, &current, None).map(|r| r.run_id.as_str()),
            Some("r2")
        );
        assert_eq!(
            latest_comparable(&history, &current, Some("main")).map(|r| r.run_id.as_str()),
            Some("r1")
        );
        assert!(latest_comparable(&history, &current, Some("other")).is_none());
    }

    #[test]
    fn prune_keeps_the_newest_runs_of_each_fingerprint() {
        // Kernel 6.1: five runs, given out of order; two share a start time (run id decides).
        // Kernel 6.2: two runs, under the limit. A start time that does not parse is oldest.
        let runs = vec![
            run("a4", "2026-11-27T04:00:00Z", "main", "6.1"),
            run("a1", "2026-11-27T01:00:00Z", "main", "6.1"),
            run("b1", "2026-11-27T00:30:00Z", "main", "6.2"),
            run("a3b", "2026-11-27T03:00:00Z", "main", "6.1"),
            run("a3a", "2026-11-27T03:00:00Z", "feature", "6.1"),
            run("a0", "not a time", "main", "6.1"),
            run("b2", "2026-11-27T05:00:00Z", "main", "6.2"),
            // 04:30 UTC: after a4 as an instant, though its text sorts before a4's.
            run("a5", "2026-11-27T03:30:00-01:00", "main", "6.1"),
        ];
        assert_eq!(prune_selection(&runs, 3), ["a0", "a1", "a3a"]);
        assert_eq!(
            prune_selection(&runs, 1),
            ["a0", "b1", "a1", "a3a", "a3b", "a4"]
        );
        assert!(prune_selection(&runs, 6).is_empty());
        assert!(prune_selection(&[], 3).is_empty());
        assert_eq!(prune_selection(&runs, 0).len(), runs.len());
        let mut reversed = runs.clone();
        reversed.reverse();
        assert_eq!(prune_selection(&reversed, 3), prune_selection(&runs, 3));
    }

    #[test]
    fn missing_directory_is_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        let history = load(&dir.path().join("nope")).unwrap();
        assert!(history.runs.is_empty() && history.skipped.is_empty());
    }
}
