//! `cargo xtask ci history-append`: add a finished main-branch run to the bench history, if it is
//! clean, prune the history to the newest runs of each environment fingerprint, re-render the
//! history index, and (with `--delta`) write down exactly what changed, so that a job with write
//! access can apply it with shell only.
//!
//! The history layout is the history store's (`harness::history`): `<run_id>.json` (the run's
//! results.json, byte for byte), `<run_id>/<interval log path>` (the interval logs the gate
//! bootstraps latency percentiles from) and `index.html` (`harness::report::render_index`).
//!
//! Everything is checked before anything is written: a refused run (dirty tree, harness errors,
//! failed or invalid scenarios) leaves the history untouched and exits 0, and so does a run that
//! pruning would drop at once; an unreadable run, a bad run id or an interval log outside the run
//! directory is an error (exit 1) that also writes nothing.
//!
//! The delta (`--delta <DIR>`, which must be absent or empty):
//!
//! * `add/`       — the files added or rewritten, at their paths relative to the history
//!   directory (the run's `<run_id>.json`, its `<run_id>/…` interval logs, `index.html`);
//! * `remove.txt` — paths relative to the history directory that were removed, one per line,
//!   directories with a trailing `/`;
//! * `run_id`     — the appended run's id, or empty when nothing was appended (then `add/` and
//!   `remove.txt` are empty too).
//!
//! Applying it to a checkout of the history: `cp -R <delta>/add/. <history>/`, then
//! `git rm -r -q --ignore-unmatch -- <path>` for every line of `remove.txt`.

use anyhow::Context as _;
use harness::exit;
use harness::history;
use harness::report;
use harness::results::{self, RunResults};
use std::path::{Component, Path, PathBuf};

/// The delta's parts (see the module documentation).
pub const DELTA_ADD: &str = "add";
pub const DELTA_REMOVE: &str = "remove.txt";
pub const DELTA_RUN_ID: &str = "run_id";

#[derive(clap::Args)]
#[command(
    after_help = "Only a clean run is appended: one whose tree was not dirty and whose exit code is OK (no \
        harness error, no failed, erroring or invalid scenario). Anything else is refused with one \
        line per reason and exit 0: the history must not take it as a baseline, and the bench step \
        reports the failure itself.\n\n\
        After appending, each environment fingerprint keeps only its newest N runs (by start time, \
        then run id); older runs lose their <run_id>.json and <run_id>/ interval logs.\n\n\
        With --delta, what changed is written for a job that applies it with shell only: \
        <DELTA>/add/ (files added or rewritten, relative to the history directory), \
        <DELTA>/remove.txt (removed paths, one per line, directories ending in /) and \
        <DELTA>/run_id (the appended run id, empty when nothing was appended)."
)]
pub struct Args {
    /// A finished run directory: its results.json and the interval logs it names.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The history store to update in place (<run_id>.json, <run_id>/<interval logs>,
    /// index.html); created when missing.
    #[arg(long, value_name = "DIR")]
    pub history_dir: PathBuf,
    /// Also write what changed here (add/, remove.txt, run_id); must be absent or empty.
    #[arg(long, value_name = "DIR")]
    pub delta: Option<PathBuf>,
    /// Keep the newest N runs per environment fingerprint (at least 1). Default: `[history]
    /// keep_per_fingerprint` of the bench configuration (30 when it has no [history] table).
    #[arg(long, value_name = "N", value_parser = parse_keep)]
    pub keep: Option<usize>,
    /// Bench configuration to read `[history]` from when --keep is not given (default:
    /// harness/bench.toml), with the run's profile selected.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn parse_keep(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1 (0 would prune the run just appended)".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let keep = match args.keep {
        Some(n) => n,
        None => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| crate::workspace_root().join("harness").join("bench.toml"));
            let profile = report::load_run(&args.run)?.profile;
            harness::config::BenchConfig::load(&path, &profile)?
                .history
                .keep_per_fingerprint
        }
    };
    let outcome = append(&args.run, &args.history_dir, args.delta.as_deref(), keep)?;
    for line in outcome.lines() {
        println!("{line}");
    }
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(delta) = &args.delta {
        println!("delta: {}", delta.display());
    }
    Ok(exit::OK)
}

/// What [`append`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The run's id (also when refused).
    pub run_id: String,
    /// Why the run was not appended; empty when it was.
    pub refused: Vec<String>,
    /// Files added or rewritten, relative to the history directory.
    pub added: Vec<String>,
    /// Paths removed, relative to the history directory (directories end in `/`).
    pub removed: Vec<String>,
    /// Things a person should know (unreadable history files, a pruned run without its file).
    pub warnings: Vec<String>,
    /// How many runs per fingerprint were kept.
    pub keep: usize,
}

impl Outcome {
    pub fn appended(&self) -> bool {
        self.refused.is_empty()
    }

    /// What the command prints.
    pub fn lines(&self) -> Vec<String> {
        if !self.appended() {
            return self
                .refused
                .iter()
                .map(|why| format!("history: run {} not appended: {why}", self.run_id))
                .collect();
        }
        let mut out = vec![format!(
            "history: appended run {} ({} file(s) added or rewritten)",
            self.run_id,
            self.added.len()
        )];
        out.extend(self.removed.iter().map(|p| {
            format!(
                "history: pruned {p} (keeping {} per fingerprint)",
                self.keep
            )
        }));
        out
    }
}

/// Why `results` may not join the history; empty when it is clean: a dirty tree, and when its
/// exit code (`harness::run::exit_code`, the one rule) is not OK, every finding behind it
/// (`harness::run::findings`: each harness error, erring or invalid scenario, loss and missed
/// target), one line each.
pub fn refusal_reasons(results: &RunResults) -> Vec<String> {
    let mut reasons = Vec::new();
    if results.environment.git_dirty {
        reasons.push(format!(
            "measured on a dirty tree (revision {} plus uncommitted changes)",
            results.environment.git_revision
        ));
    }
    // Not OK exactly when there is a finding (`exit::code`).
    let findings = harness::run::findings(results);
    reasons.extend(findings.iter().map(|f| one_line(&f.line())));
    reasons
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `rel` is a plain relative path below a directory: not empty, no root, no `.` or `..`
/// component, no backslash or control character (each is one line of `remove.txt`).
pub fn check_relative(rel: &str) -> anyhow::Result<()> {
    let trimmed = rel.strip_suffix('/').unwrap_or(rel);
    anyhow::ensure!(!trimmed.is_empty(), "empty path in the history delta");
    anyhow::ensure!(
        !trimmed.chars().any(|c| c.is_control() || c == '\\'),
        "path {rel:?} has a control character or backslash"
    );
    let path = Path::new(trimmed);
    anyhow::ensure!(
        !path.has_root() && path.components().all(|c| matches!(c, Component::Normal(_))),
        "path {rel:?} is not a plain relative path (absolute, or with a `.` or `..` component)"
    );
    anyhow::ensure!(
        !trimmed
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".."),
        "path {rel:?} is not a plain relative path"
    );
    Ok(())
}

/// One interval log to copy: from the run directory to `<run_id>/<log>` in the history.
struct Log {
    source: PathBuf,
    rel: String,
}

/// The run's interval logs, checked: each must be a file inside `run_dir`
/// (`harness::results::interval_log_path`) and give a plain relative path in the history.
fn interval_logs(results: &RunResults, run_dir: &Path) -> anyhow::Result<Vec<Log>> {
    let mut logs: Vec<Log> = Vec::new();
    for s in &results.scenarios {
        let Some(log) = s.interval_log.as_deref() else {
            continue;
        };
        let source = results::interval_log_path(run_dir, log)
            .with_context(|| format!("scenario {}", s.name))?;
        let parts: Vec<String> = Path::new(log)
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let rel = format!("{}/{}", results.run_id, parts.join("/"));
        check_relative(&rel).with_context(|| format!("scenario {}: interval log", s.name))?;
        if !logs.iter().any(|l| l.rel == rel) {
            logs.push(Log { source, rel });
        }
    }
    Ok(logs)
}

/// Add the run in `run_dir` to `history_dir` if it is clean, prune to the newest `keep` runs per
/// environment fingerprint, re-render `index.html`, and write the delta to `delta` when given.
/// A refused run changes nothing in the history (the delta is then empty, with an empty
/// `run_id`); an error (unreadable run, bad run id or interval log, non-empty delta directory) is
/// raised before anything is written.
pub fn append(
    run_dir: &Path,
    history_dir: &Path,
    delta: Option<&Path>,
    keep: usize,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(keep >= 1, "keep must be at least 1");
    if let Some(delta) = delta {
        check_delta_dir(delta)?;
    }
    let results = report::load_run(run_dir)?;
    let mut outcome = Outcome {
        run_id: results.run_id.clone(),
        keep,
        ..Outcome::default()
    };
    outcome.refused = refusal_reasons(&results);
    if !outcome.appended() {
        if let Some(delta) = delta {
            write_delta(delta, history_dir, &outcome)?;
        }
        return Ok(outcome);
    }
    let entry = history::file_name(&results.run_id)?;
    let logs = interval_logs(&results, run_dir)?;

    // Decide pruning on the history as it will be, before writing anything.
    let existing = history::load(history_dir)?;
    outcome.warnings.extend(existing.warnings());
    let mut runs: Vec<RunResults> = existing
        .runs
        .into_iter()
        .filter(|r| r.run_id != results.run_id)
        .collect();
    runs.push(results.clone());
    let prune = history::prune_selection(&runs, keep);
    if prune.contains(&results.run_id) {
        outcome.refused.push(format!(
            "older than the newest {keep} runs of its environment fingerprint already in the history"
        ));
        if let Some(delta) = delta {
            write_delta(delta, history_dir, &outcome)?;
        }
        return Ok(outcome);
    }

    history::append(history_dir, &results, run_dir)?;
    outcome.added.push(entry);
    for log in &logs {
        let target = history_dir.join(&log.rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let bytes =
            std::fs::read(&log.source).with_context(|| format!("read {}", log.source.display()))?;
        harness::files::write_atomic(&target, bytes)?;
        outcome.added.push(log.rel.clone());
    }

    for run_id in &prune {
        let name = match history::file_name(run_id) {
            Ok(name) => name,
            Err(e) => {
                outcome
                    .warnings
                    .push(format!("not pruning run {run_id:?}: {e:#}"));
                continue;
            }
        };
        let file = history_dir.join(&name);
        if file.is_file() {
            std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))?;
            outcome.removed.push(name);
        } else {
            outcome.warnings.push(format!(
                "pruned run {run_id} is not in {} (its file has another name)",
                file.display()
            ));
        }
        let logs_dir = history_dir.join(run_id);
        if std::fs::symlink_metadata(&logs_dir).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&logs_dir)
                .with_context(|| format!("remove {}", logs_dir.display()))?;
            outcome.removed.push(format!("{run_id}/"));
        }
    }

    let (_, warnings) = report::render_index(history_dir)?;
    outcome.warnings.extend(warnings);
    outcome.added.push(report::INDEX_FILE.to_owned());

    if let Some(delta) = delta {
        write_delta(delta, history_dir, &outcome)?;
    }
    Ok(outcome)
}

/// The delta directory must be absent or empty, so that it holds this run's changes only.
fn check_delta_dir(delta: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(delta) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "delta directory {} is not empty",
            delta.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", delta.display())),
    }
    Ok(())
}

/// Write `add/`, `remove.txt` and `run_id` for `outcome` (see the module documentation).
fn write_delta(delta: &Path, history_dir: &Path, outcome: &Outcome) -> anyhow::Result<()> {
    for rel in outcome.added.iter().chain(&outcome.removed) {
        check_relative(rel)?;
    }
    let add = delta.join(DELTA_ADD);
    std::fs::create_dir_all(&add).with_context(|| format!("create {}", add.display()))?;
    for rel in &outcome.added {
        let source = history_dir.join(rel);
        let target = add.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::copy(&source, &target)
            .with_context(|| format!("copy {} to {}", source.display(), target.display()))?;
    }
    let mut remove = String::new();
    for rel in &outcome.removed {
        remove.push_str(rel);
        remove.push('\n');
    }
    harness::files::write_atomic(&delta.join(DELTA_REMOVE), remove)?;
    let run_id = if outcome.appended() {
        outcome.run_id.as_str()
    } else {
        ""
    };
    harness::files::write_atomic(&delta.join(DELTA_RUN_ID), run_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::results::{Accounting, RESULTS_FILE, SCHEMA_VERSION};

    /// A results.json with one scenario per `(name, verdict)`, each naming an interval log
    /// `logs/<name>.hlog` (written too); built from JSON like the harness's own tests.
    fn write_run(
        dir: &Path,
        run_id: &str,
        started_at: &str,
        kernel: &str,
        verdicts: &[(&str, &str)],
    ) {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let scenarios: Vec<serde_json::Value> = verdicts
            .iter()
            .map(|(name, verdict)| {
                let log = format!("logs/{name}.hlog");
                std::fs::write(dir.join(&log), format!("log of {run_id}/{name}")).unwrap();
                serde_json::json!({
                    "name": name, "title": name, "description": "",
                    "load": {"model": "open_loop", "target_rate_per_s": 100.0, "duration_s": 5.0, "warmup_s": 1.0},
                    "accounting": Accounting::default(),
                    "verdict": verdict,
                    "interval_log": log,
                })
            })
            .collect();
        let results = serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "started_at": started_at,
            "finished_at": started_at,
            "profile": "quick",
            "environment": {
                "git_revision": "abcdef0123", "git_dirty": false, "git_branch": "main",
                "rustc_version": "rustc 1.85.0",
                "nats": {"kind": "local", "detail": "/bin/nats-server", "server_version": "2.10.0"},
                "cpu_model": "cpu", "cpu_count": 2, "kernel": kernel, "os": "linux",
                "config_hash": "c0ffee", "seed": 1
            },
            "scenarios": scenarios,
        });
        std::fs::write(
            dir.join(RESULTS_FILE),
            serde_json::to_string_pretty(&results).unwrap(),
        )
        .unwrap();
    }

    /// Edit a run's results.json in place.
    fn edit(dir: &Path, change: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(RESULTS_FILE);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut v);
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    }

    /// Every file below `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn clean_run_is_appended_with_its_interval_logs_and_delta() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let hist = tmp.path().join("hist").join("history");
        let delta = tmp.path().join("delta");
        let id = "20261127T050000Z-abcdef0";
        write_run(
            &run,
            id,
            "2026-11-27T05:00:00Z",
            "6.1",
            &[("a", "pass"), ("b", "skipped"), ("c", "insufficient_data")],
        );
        edit(&run, |v| {
            // A `./` prefix is normalized away in the history.
            v["scenarios"][1]["interval_log"] = "./logs/b.hlog".into();
            v["scenarios"][2]["interval_log"] = serde_json::Value::Null;
        });

        let out = append(&run, &hist, Some(&delta), 30).unwrap();
        assert!(out.appended(), "{out:?}");
        let expect_added = [
            format!("{id}.json"),
            format!("{id}/logs/a.hlog"),
            format!("{id}/logs/b.hlog"),
            "index.html".to_owned(),
        ];
        assert_eq!(out.added, expect_added);
        assert!(out.removed.is_empty());
        assert_eq!(files(&hist), {
            let mut v = expect_added.to_vec();
            v.sort();
            v
        });
        // The results are copied byte for byte; the logs too.
        assert_eq!(
            read(&hist.join(format!("{id}.json"))),
            read(&run.join(RESULTS_FILE))
        );
        assert_eq!(
            read(&hist.join(id).join("logs").join("b.hlog")),
            format!("log of {id}/b")
        );
        assert!(read(&hist.join("index.html")).contains(id));
        // The compare gate finds the history entry with its logs beside it.
        assert_eq!(harness::history::load(&hist).unwrap().runs[0].run_id, id);

        // The delta: exactly what was added, nothing removed, the run id.
        let mut in_add: Vec<String> = files(&delta.join(DELTA_ADD));
        in_add.sort();
        assert_eq!(in_add, files(&hist));
        for rel in &in_add {
            assert_eq!(
                read(&delta.join(DELTA_ADD).join(rel)),
                read(&hist.join(rel)),
                "{rel}"
            );
        }
        assert_eq!(read(&delta.join(DELTA_REMOVE)), "");
        assert_eq!(read(&delta.join(DELTA_RUN_ID)), id);

        // Again (a re-run of the job): idempotent, but a used delta directory is refused.
        let err = append(&run, &hist, Some(&delta), 30).unwrap_err();
        assert!(format!("{err:#}").contains("not empty"), "{err:#}");
        let again = append(&run, &hist, None, 30).unwrap();
        assert!(again.appended() && again.removed.is_empty(), "{again:?}");
    }

    #[test]
    fn unclean_runs_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let hist = tmp.path().join("history");
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
            (
                "failed",
                Box::new(|v| {
                    v["scenarios"][1]["verdict"] = "fail".into();
                    v["scenarios"][1]["accounting"]["sent"] = 10.into();
                    v["scenarios"][1]["accounting"]["lost"] = 2.into();
                    v["scenarios"][2]["verdict"] = "invalid".into();
                    v["harness_errors"] = serde_json::json!(["nats-server\nnever ready"]);
                }),
                vec!["nats-server never ready", "b: lost 2", "c: invalid"],
            ),
            (
                "erred",
                Box::new(|v| {
                    v["scenarios"][0]["verdict"] = "error".into();
                    v["scenarios"][0]["error"] = "service never ready".into();
                }),
                vec!["a: service never ready"],
            ),
            (
                "dirty",
                Box::new(|v| v["environment"]["git_dirty"] = true.into()),
                vec!["dirty tree (revision abcdef0123"],
            ),
        ];
        for (label, change, reasons) in cases {
            let run = tmp.path().join(label);
            let delta = tmp.path().join(format!("delta-{label}"));
            write_run(
                &run,
                "20261127T050000Z-abcdef0",
                "2026-11-27T05:00:00Z",
                "6.1",
                &[("a", "pass"), ("b", "pass"), ("c", "pass")],
            );
            edit(&run, change);
            let out = append(&run, &hist, Some(&delta), 30).unwrap();
            assert!(!out.appended(), "{label}");
            // One line per finding of the one rule (plus the dirty tree), each naming what it
            // is about. (The findings' wording is the harness's; only their subjects are checked.)
            let results = report::load_run(&run).unwrap();
            let findings = harness::run::findings(&results).len();
            let dirty = usize::from(results.environment.git_dirty);
            assert_eq!(
                out.refused.len(),
                findings + dirty,
                "{label}: {:?}",
                out.refused
            );
            for want in &reasons {
                assert!(
                    out.refused.iter().any(|line| line.contains(want)),
                    "{label}: no line has {want:?}: {:?}",
                    out.refused
                );
            }
            assert!(out.refused.iter().all(|line| !line.contains('\n')));
            assert!(out
                .lines()
                .iter()
                .all(|l| l.starts_with("history: run 20261127T050000Z-abcdef0 not appended: ")));
            assert!(!hist.exists(), "{label}: the history was written");
            assert!(files(&delta.join(DELTA_ADD)).is_empty(), "{label}");
            assert_eq!(read(&delta.join(DELTA_REMOVE)), "", "{label}");
            assert_eq!(read(&delta.join(DELTA_RUN_ID)), "", "{label}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_runs_per_fingerprint_and_lists_what_it_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let hist = tmp.path().join("history");
        // Three runs on kernel 6.1 and one on 6.2, appended one by one with keep = 2 (no delta).
        let runs = [
            ("20261127T010000Z-aaaaaaa", "2026-11-27T01:00:00Z", "6.1"),
            ("20261127T020000Z-bbbbbbb", "2026-11-27T02:00:00Z", "6.1"),
            ("20261127T003000Z-eeeeeee", "2026-11-27T00:30:00Z", "6.2"),
            ("20261127T030000Z-ccccccc", "2026-11-27T03:00:00Z", "6.1"),
        ];
        let mut pruned = Vec::new();
        for (id, at, kernel) in runs {
            let run = tmp.path().join(id);
            write_run(&run, id, at, kernel, &[("a", "pass")]);
            let out = append(&run, &hist, None, 2).unwrap();
            assert!(out.appended(), "{out:?}");
            pruned.extend(out.removed);
        }
        assert_eq!(
            pruned,
            ["20261127T010000Z-aaaaaaa.json", "20261127T010000Z-aaaaaaa/"]
        );
        // A file that is not a run is left alone.
        std::fs::write(hist.join("README.md"), "kept").unwrap();

        // The next 6.1 run prunes b (with its logs); the 6.2 run stays (its own fingerprint).
        let id = "20261127T040000Z-ddddddd";
        let run = tmp.path().join(id);
        let delta = tmp.path().join("delta");
        write_run(&run, id, "2026-11-27T04:00:00Z", "6.1", &[("a", "pass")]);
        let out = append(&run, &hist, Some(&delta), 2).unwrap();
        assert_eq!(
            out.removed,
            ["20261127T020000Z-bbbbbbb.json", "20261127T020000Z-bbbbbbb/"]
        );
        assert_eq!(
            read(&delta.join(DELTA_REMOVE)),
            "20261127T020000Z-bbbbbbb.json\n20261127T020000Z-bbbbbbb/\n"
        );
        assert_eq!(
            files(&delta.join(DELTA_ADD)),
            [
                format!("{id}.json"),
                format!("{id}/logs/a.hlog"),
                "index.html".to_owned()
            ]
        );
        let ids: Vec<String> = harness::history::load(&hist)
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(
            ids,
            [
                "20261127T003000Z-eeeeeee",
                "20261127T030000Z-ccccccc",
                "20261127T040000Z-ddddddd"
            ]
        );
        assert!(!hist.join("20261127T020000Z-bbbbbbb").exists());
        assert!(hist.join("20261127T030000Z-ccccccc/logs/a.hlog").is_file());
        assert_eq!(read(&hist.join("README.md")), "kept");
        let index = read(&hist.join("index.html"));
        assert!(index.contains(id) && !index.contains("20261127T020000Z-bbbbbbb"));

        // A late run older than the newest two of its fingerprint is not appended at all.
        let late = "20261127T001500Z-fffffff";
        let run = tmp.path().join(late);
        let delta = tmp.path().join("delta-late");
        write_run(&run, late, "2026-11-27T00:15:00Z", "6.1", &[("a", "pass")]);
        let before = files(&hist);
        let out = append(&run, &hist, Some(&delta), 2).unwrap();
        assert!(!out.appended() && out.refused[0].contains("older than the newest 2"));
        assert_eq!(files(&hist), before);
        assert_eq!(read(&delta.join(DELTA_RUN_ID)), "");
    }

    #[test]
    fn interval_logs_outside_the_run_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let hist = tmp.path().join("history");
        let run = tmp.path().join("run");
        let id = "20261127T050000Z-abcdef0";
        write_run(
            &run,
            id,
            "2026-11-27T05:00:00Z",
            "6.1",
            &[("a", "pass"), ("b", "pass")],
        );
        std::fs::write(tmp.path().join("secret.hlog"), "secret").unwrap();
        for bad in ["../secret.hlog", "logs/../../secret.hlog", "/etc/passwd"] {
            let delta = tmp.path().join("delta");
            edit(&run, |v| v["scenarios"][1]["interval_log"] = bad.into());
            let err = append(&run, &hist, Some(&delta), 30).unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("scenario b") && text.contains("outside the run directory"),
                "{bad}: {text}"
            );
            assert!(!hist.exists(), "{bad}: the history was written");
            assert!(!delta.exists(), "{bad}: a delta was written");
        }
        // A missing log is an error too, and so is a run id that is no file name.
        edit(&run, |v| {
            v["scenarios"][1]["interval_log"] = "logs/missing.hlog".into()
        });
        assert!(append(&run, &hist, None, 30).is_err());
        edit(&run, |v| {
            v["scenarios"][1]["interval_log"] = "logs/b.hlog".into();
            v["run_id"] = "../escape".into();
        });
        assert!(append(&run, &hist, None, 30).is_err());
        assert!(!hist.exists());
    }

    #[test]
    fn delta_paths_must_be_plain_relative_paths() {
        for good in ["a.json", "r/logs/a.hlog", "r/", "index.html"] {
            check_relative(good).unwrap_or_else(|e| panic!("{good}: {e:#}"));
        }
        for bad in [
            "", "/", "/abs", "../x", "r/../x", "./x", "r//x", "a\nb", "a\\b", "r/./x", "..",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keep_must_be_positive() {
        assert_eq!(parse_keep("3"), Ok(3));
        assert!(parse_keep("0").is_err());
        assert!(parse_keep("x").is_err());
    }
}
