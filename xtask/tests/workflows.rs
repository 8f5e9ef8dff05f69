//! The layout of the GitHub workflows (`.github/workflows/*.yml`), held by `cargo test -p xtask`:
//! least privilege and pinning, checked on every change rather than remembered in review.
//!
//! * Every `uses:` is pinned to a full commit SHA, with the version in a trailing comment.
//! * Every `actions/checkout` sets `persist-credentials: false`, except in a job that must push
//!   (`contents: write`) and runs no cargo.
//! * Top-level `permissions` grant at most read; a job that runs cargo, or checks out code that
//!   could run (no fixed `ref`), has no write permission; a step that runs cargo cannot pass when
//!   cargo failed (no `continue-on-error`, no `set +e`).
//! * bench-comment.yml (the PR comment, triggered by `workflow_run` of `bench`) checks nothing out
//!   and runs no cargo, and asks for `actions: read` and `pull-requests: write` only.
//! * Every `dtolnay/rust-toolchain` step installs the same pinned toolchain (a version, not a
//!   channel); there is no rust-toolchain.toml on purpose (see the workflows' header comments).
//! * bench.yml has the jobs bench, history and icount.
//!
//! The YAML is read with yaml-rust2 (YAML 1.2, so `on:` stays a key); the version comments, which
//! a parser drops, are read from the text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// The workflow of the benchmark gate and history, and the one that comments on pull requests.
const BENCH: &str = ".github/workflows/bench.yml";
const BENCH_COMMENT: &str = ".github/workflows/bench-comment.yml";

struct Workflow {
    /// Relative to the repository root, e.g. `.github/workflows/ci.yml`.
    path: String,
    text: String,
    doc: Yaml,
}

impl Workflow {
    fn jobs(&self) -> Vec<(String, &Yaml)> {
        self.doc["jobs"]
            .as_hash()
            .map(|jobs| {
                jobs.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or("?").to_owned(), v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The trigger names of `on:` (a string, a list or a mapping).
    fn triggers(&self) -> Vec<String> {
        match &self.doc["on"] {
            Yaml::String(s) => vec![s.clone()],
            Yaml::Array(a) => a
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            Yaml::Hash(h) => h
                .keys()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_owned()
}

/// Every `.yml`/`.yaml` file of `.github/workflows`, parsed, in name order.
fn workflows() -> Vec<Workflow> {
    let root = root();
    let dir = root.join(".github/workflows");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no workflow files in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            let doc = YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{rel}: not valid YAML: {e}"))
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("{rel}: empty"));
            Workflow {
                path: rel,
                text,
                doc,
            }
        })
        .collect()
}

fn steps(job: &Yaml) -> &[Yaml] {
    job["steps"].as_vec().map(Vec::as_slice).unwrap_or_default()
}

/// The `uses:` of a step, if it has one.
fn uses(step: &Yaml) -> Option<&str> {
    step["uses"].as_str()
}

/// True if the step uses the action `name` (`owner/repo`), at any ref.
fn uses_action(step: &Yaml, name: &str) -> bool {
    uses(step).is_some_and(|u| u.split('@').next() == Some(name))
}

/// A step's name for messages: its `name`, else its `uses`, else the first line of its `run`.
fn step_label(step: &Yaml) -> String {
    step["name"]
        .as_str()
        .or_else(|| uses(step))
        .or_else(|| step["run"].as_str().and_then(|r| r.lines().next()))
        .unwrap_or("?")
        .to_owned()
}

/// True if a `run:` script invokes cargo (the word, anywhere: `cargo xtask`, `cargo deny`, …).
fn runs_cargo(step: &Yaml) -> bool {
    step["run"].as_str().is_some_and(|run| {
        run.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .any(|word| word == "cargo")
    })
}

/// A YAML scalar as text (`false`, `0`, `1.95.0` and `"1.95"` alike).
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A job's effective permissions: its own `permissions`, else the workflow's.
fn permissions<'a>(wf: &'a Workflow, job: &'a Yaml) -> &'a Yaml {
    if job["permissions"].is_badvalue() {
        &wf.doc["permissions"]
    } else {
        &job["permissions"]
    }
}

/// The scopes that `permissions` grants write access to (`*` for `write-all`).
fn write_scopes(perms: &Yaml) -> Vec<String> {
    match perms {
        Yaml::String(s) if s == "write-all" => vec!["*".to_owned()],
        Yaml::Hash(h) => h
            .iter()
            .filter(|(_, v)| v.as_str() == Some("write"))
            .map(|(k, _)| k.as_str().unwrap_or("?").to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// A 40-hex-digit commit SHA.
fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `v5`, `v5.0.1`, `1.2.3`, or the branch an action without release tags is taken from.
fn is_version(s: &str) -> bool {
    let digits = s.strip_prefix('v').unwrap_or(s);
    let numeric = !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    numeric || s == "master" || s == "main"
}

fn fail_if_any(what: &str, bad: Vec<String>) {
    assert!(bad.is_empty(), "workflows: {what}:\n{}\n", bad.join("\n"));
}

#[test]
fn every_action_is_pinned_by_sha_with_a_version_comment() {
    let mut bad = Vec::new();
    for wf in workflows() {
        // From the text: the comment is not in the parsed YAML.
        let mut in_text = 0;
        for (i, line) in wf.text.lines().enumerate() {
            let trimmed = line.trim_start();
            let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
            let Some(rest) = trimmed.strip_prefix("uses:") else {
                continue;
            };
            in_text += 1;
            let (value, comment) = match rest.split_once('#') {
                Some((v, c)) => (v.trim(), Some(c.trim())),
                None => (rest.trim(), None),
            };
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            let at = format!("{}:{}", wf.path, i + 1);
            if value.starts_with("./") {
                continue; // an action of this repository: pinned by being here
            }
            match value.split_once('@') {
                Some((_, sha)) if is_sha(sha) => {}
                _ => {
                    bad.push(format!(
                        "{at}: `uses: {value}` is not pinned; use the full 40-hex commit SHA of the release: \
                         `uses: {}@<sha> # vX.Y.Z`",
                        value.split('@').next().unwrap_or(value)
                    ));
                    continue;
                }
            }
            let version = comment
                .and_then(|c| c.split_whitespace().next())
                .unwrap_or("");
            if !is_version(version) {
                bad.push(format!(
                    "{at}: `uses: {value}` needs a trailing comment naming the version the SHA is, \
                     e.g. `# v5.0.1` (Dependabot updates it with the SHA)"
                ));
            }
        }
        let parsed: usize = wf
            .jobs()
            .iter()
            .map(|(_, job)| {
                steps(job).iter().filter(|s| uses(s).is_some()).count()
                    + usize::from(job["uses"].as_str().is_some())
            })
            .sum();
        if parsed != in_text {
            bad.push(format!(
                "{}: {parsed} `uses:` in the parsed workflow but {in_text} `uses:` lines in the text; \
                 write each as a block-style `uses: owner/repo@<sha> # version` line",
                wf.path
            ));
        }
    }
    fail_if_any(
        "actions not pinned by commit SHA with a version comment",
        bad,
    );
}

#[test]
fn checkouts_do_not_persist_credentials_unless_the_job_must_push() {
    let mut bad = Vec::new();
    for wf in workflows() {
        for (name, job) in wf.jobs() {
            let pushes = write_scopes(permissions(&wf, job))
                .iter()
                .any(|s| s == "contents" || s == "*");
            let cargo = steps(job).iter().any(runs_cargo);
            for step in steps(job)
                .iter()
                .filter(|s| uses_action(s, "actions/checkout"))
            {
                let persist = scalar(&step["with"]["persist-credentials"]);
                if persist.as_deref() == Some("false") || (pushes && !cargo) {
                    continue;
                }
                bad.push(format!(
                    "{} job `{name}`, step `{}`: set `persist-credentials: false` (only a job with \
                     `contents: write` that runs no cargo may keep them, to push, with a comment why)",
                    wf.path,
                    step_label(step)
                ));
            }
        }
    }
    fail_if_any("checkouts that leave the token in .git/config", bad);
}

#[test]
fn top_level_permissions_are_at_most_read() {
    let mut bad = Vec::new();
    for wf in workflows() {
        let perms = &wf.doc["permissions"];
        let ok = match perms {
            Yaml::Hash(h) => h
                .values()
                .all(|v| matches!(v.as_str(), Some("read" | "none"))),
            Yaml::String(s) => s == "read-all",
            _ => false,
        };
        if !ok {
            bad.push(format!(
                "{}: top-level `permissions` must be present and grant at most read (`permissions: {{}}` \
                 or `contents: read`); give write access to the one job that needs it",
                wf.path
            ));
        }
    }
    fail_if_any("top-level permissions", bad);
}

#[test]
fn jobs_that_run_cargo_or_check_out_runnable_code_cannot_write() {
    let mut bad = Vec::new();
    for wf in workflows() {
        for (name, job) in wf.jobs() {
            let writes = write_scopes(permissions(&wf, job));
            if writes.is_empty() {
                continue;
            }
            let mut why = Vec::new();
            if steps(job).iter().any(runs_cargo) {
                why.push("runs cargo (code of the checkout, a pull request's included)".to_owned());
            }
            for step in steps(job)
                .iter()
                .filter(|s| uses_action(s, "actions/checkout"))
            {
                let fixed_ref = step["with"]["ref"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty() && !r.contains("${{"));
                if !fixed_ref {
                    why.push(format!(
                        "checks out the triggering code (step `{}` has no fixed `ref`)",
                        step_label(step)
                    ));
                }
            }
            if !why.is_empty() {
                bad.push(format!(
                    "{} job `{name}` has write permission ({}) but {}: keep that job read-only and \
                     move the write into a separate job that builds nothing and checks out only a fixed \
                     `ref` (as bench.yml's history job does), or into a workflow_run (as bench-comment.yml)",
                    wf.path,
                    writes.join(", "),
                    why.join("; ")
                ));
            }
        }
    }
    fail_if_any("write permissions next to code that runs", bad);
}

#[test]
fn a_failed_cargo_step_fails_its_job() {
    let mut bad = Vec::new();
    for wf in workflows() {
        for (name, job) in wf.jobs() {
            if scalar(&job["continue-on-error"]).is_some_and(|v| v != "false")
                && steps(job).iter().any(runs_cargo)
            {
                bad.push(format!(
                    "{} job `{name}`: `continue-on-error` on a job that runs cargo; remove it, a \
                     failure must fail the job",
                    wf.path
                ));
            }
            for step in steps(job).iter().filter(|s| runs_cargo(s)) {
                let run = step["run"].as_str().unwrap_or_default();
                let continues = scalar(&step["continue-on-error"]).is_some_and(|v| v != "false");
                if continues || run.contains("set +e") {
                    bad.push(format!(
                        "{} job `{name}`, step `{}`: runs cargo with `continue-on-error` or `set +e`; \
                         let cargo's exit status be the step's (no warning-only gates)",
                        wf.path,
                        step_label(step)
                    ));
                }
            }
        }
    }
    fail_if_any("cargo failures that do not fail the job", bad);
}

#[test]
fn the_comment_workflow_builds_nothing_and_checks_out_nothing() {
    let wfs = workflows();
    let Some(wf) = wfs.iter().find(|w| w.path == BENCH_COMMENT) else {
        panic!(
            "{BENCH_COMMENT} is missing: the PR comment is posted by a workflow_run workflow, so that \
             the bench job keeps a read-only token and forks get a comment too"
        );
    };
    let bench = wfs
        .iter()
        .find(|w| w.path == BENCH)
        .unwrap_or_else(|| panic!("{BENCH} is missing"));
    let bench_name = bench.doc["name"].as_str().unwrap_or("bench");
    let mut bad = Vec::new();

    let trigger = &wf.doc["on"]["workflow_run"];
    let names: Vec<&str> = trigger["workflows"]
        .as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    let types: Vec<&str> = trigger["types"]
        .as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    if wf.triggers() != ["workflow_run"] || names != [bench_name] || types != ["completed"] {
        bad.push(format!(
            "{}: trigger only on `workflow_run: {{workflows: [{bench_name}], types: [completed]}}` \
             (the name of {BENCH})",
            wf.path
        ));
    }
    for (name, job) in wf.jobs() {
        for step in steps(job) {
            if uses_action(step, "actions/checkout") {
                bad.push(format!(
                    "{} job `{name}`: remove the checkout step `{}`; this workflow holds a write token \
                     and must not have a pull request's code on disk (everything it needs is in the artifact)",
                    wf.path,
                    step_label(step)
                ));
            }
            if runs_cargo(step) {
                bad.push(format!(
                    "{} job `{name}`, step `{}`: runs cargo; the comment workflow builds nothing (the \
                     bench job computes, this one only posts)",
                    wf.path,
                    step_label(step)
                ));
            }
        }
        let allowed = [("actions", "read"), ("pull-requests", "write")];
        let perms = permissions(wf, job);
        let extra: Vec<String> = perms
            .as_hash()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_str().unwrap_or("?"), v.as_str().unwrap_or("?")))
                    .filter(|kv| !allowed.contains(kv) && kv.1 != "none")
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect()
            })
            .unwrap_or_else(|| vec![format!("{perms:?}")]);
        if !extra.is_empty() {
            bad.push(format!(
                "{} job `{name}`: permissions beyond `actions: read` and `pull-requests: write`: {}; \
                 remove them",
                wf.path,
                extra.join(", ")
            ));
        }
    }
    fail_if_any("the PR comment workflow", bad);
}

#[test]
fn every_rust_toolchain_step_installs_the_same_pinned_version() {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bad = Vec::new();
    for wf in workflows() {
        for (name, job) in wf.jobs() {
            for step in steps(job)
                .iter()
                .filter(|s| uses_action(s, "dtolnay/rust-toolchain"))
            {
                let at = format!("{} job `{name}`", wf.path);
                match scalar(&step["with"]["toolchain"]) {
                    Some(v) if v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()) => {
                        seen.entry(v).or_default().push(at);
                    }
                    other => bad.push(format!(
                        "{at}: dtolnay/rust-toolchain needs `with: toolchain: <x.y.z>`, a release such as \
                         1.95.0 (not a channel like stable); found {other:?}"
                    )),
                }
            }
        }
    }
    if seen.len() > 1 {
        bad.push(format!(
            "the toolchain differs between steps; use one version everywhere: {}",
            seen.iter()
                .map(|(v, at)| format!("{v} in {}", at.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if seen.is_empty() {
        bad.push(
            "no dtolnay/rust-toolchain step found; install the pinned toolchain with it".to_owned(),
        );
    }
    if root().join("rust-toolchain.toml").exists() || root().join("rust-toolchain").exists() {
        bad.push(
            "a rust-toolchain file exists; remove it and pin the toolchain in the workflows (a toolchain \
             file breaks machines that cannot reach static.rust-lang.org)"
                .to_owned(),
        );
    }
    fail_if_any("the Rust toolchain", bad);
}

#[test]
fn the_bench_workflow_has_its_jobs() {
    let wfs = workflows();
    let bench = wfs
        .iter()
        .find(|w| w.path == BENCH)
        .unwrap_or_else(|| panic!("{BENCH} is missing"));
    let jobs: Vec<String> = bench.jobs().into_iter().map(|(n, _)| n).collect();
    let missing: Vec<&str> = ["bench", "history", "icount"]
        .into_iter()
        .filter(|j| !jobs.iter().any(|n| n == j))
        .collect();
    assert!(
        missing.is_empty(),
        "{BENCH}: the jobs {missing:?} are missing (it has {jobs:?}); it needs `bench` (read-only: \
         pr-bench or bench + history-append), `history` (main only: applies the delta, pushes, \
         publishes) and `icount`"
    );
    let history = &bench.doc["jobs"]["history"];
    let needs = match &history["needs"] {
        Yaml::String(s) => vec![s.as_str()],
        Yaml::Array(a) => a.iter().filter_map(Yaml::as_str).collect(),
        _ => Vec::new(),
    };
    assert!(
        needs.contains(&"bench"),
        "{BENCH}: the history job must have `needs: bench` (it applies the delta the bench job uploads)"
    );
}

// ---------------------------------------------------------------------------------------------
// The checks' own helpers, on small inputs.

#[test]
fn helpers_read_what_they_should() {
    assert!(is_sha("93cb6efe18208431cddfb8368fd83d5badbf9bfd"));
    assert!(!is_sha("v5"));
    assert!(is_version("v5.0.1") && is_version("v2") && is_version("master"));
    assert!(!is_version("") && !is_version("latest") && !is_version("v"));
    let doc = &YamlLoader::load_from_str(
        "on: push\nsteps:\n  - run: cargo xtask bench\n  - run: echo cargoes\n  - run: |\n      x=1\n      cargo --version\n",
    )
    .unwrap()[0];
    let s = steps(doc);
    assert!(runs_cargo(&s[0]) && !runs_cargo(&s[1]) && runs_cargo(&s[2]));
    assert_eq!(
        doc["on"].as_str(),
        Some("push"),
        "YAML 1.2: `on` is a string key"
    );
    let perms = &YamlLoader::load_from_str("contents: write\npull-requests: read\n").unwrap()[0];
    assert_eq!(write_scopes(perms), ["contents"]);
}
