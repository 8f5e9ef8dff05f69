//! The versioned `results.json` schema: everything one `cargo xtask bench` run measured.
//!
//! This is the contract between the scenario runner (which writes it), the report renderer, the
//! history store and the regression gate (which read it). Add fields with `#[serde(default)]`;
//! bump [`SCHEMA_VERSION`] when a field changes meaning or is removed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of this schema. Readers reject files with a different major version.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the results inside a run directory.
pub const RESULTS_FILE: &str = "results.json";

/// One run of the bench: one `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    /// Unique and sortable: `<UTC yyyymmddThhmmssZ>-<short revision>`.
    pub run_id: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    /// `quick`, `default` or `soak`.
    pub profile: String,
    pub environment: Environment,
    pub scenarios: Vec<ScenarioResult>,
    /// Failures of the harness itself (not of targets), e.g. a service that never became ready.
    #[serde(default)]
    pub harness_errors: Vec<String>,
}

/// Where NATS came from for this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsProvision {
    /// `external`, `container` or `local`.
    pub kind: String,
    /// URL for external, image reference for container, binary path for local.
    pub detail: String,
    pub server_version: String,
    /// For a container: true when the image was built locally (no registry reachable), false
    /// when an official image was used; `None` for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_built_locally: Option<bool>,
}

/// The environment fingerprint (harness/METHODOLOGY.md, "Recording").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub git_revision: String,
    pub git_dirty: bool,
    #[serde(default)]
    pub git_branch: Option<String>,
    /// First line of the commit message (untrusted text: escape when rendering).
    #[serde(default)]
    pub commit_subject: Option<String>,
    pub rustc_version: String,
    pub nats: NatsProvision,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub kernel: String,
    pub os: String,
    /// Hash of the scenario configuration (the TOML after profile selection) without what judges
    /// a run rather than shapes it (targets, limits: `env::NOT_COMPARED_KEYS`).
    pub config_hash: String,
    /// The full scenario configuration as loaded (TOML rendered as JSON).
    #[serde(default)]
    pub config: serde_json::Value,
    pub seed: u64,
    /// Who offered the load, when not the harness process alone: `3 worker containers`,
    /// `2 remote workers`. Part of the fingerprint (a different load generator is a different
    /// measurement); absent, the fingerprint is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_generators: Option<String>,
}

impl Environment {
    /// The fields that must match for two runs to be comparable: machine, toolchain, NATS and
    /// configuration — but not the revision, which is what a comparison is about.
    pub fn fingerprint(&self) -> String {
        format!(
            "cpu={}x{}|kernel={}|rustc={}|nats={}:{}|config={}",
            self.cpu_count,
            self.cpu_model,
            self.kernel,
            self.rustc_version,
            self.nats.kind,
            self.nats.server_version,
            self.config_hash
        ) + &self
            .load_generators
            .as_ref()
            .map(|l| format!("|load={l}"))
            .unwrap_or_default()
    }

    /// The fields in which two fingerprints differ, for "not comparable" explanations.
    pub fn differences(&self, other: &Environment) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {a} vs {b}"));
            }
        };
        check(
            "cpu",
            format!("{}x{}", self.cpu_count, self.cpu_model),
            format!("{}x{}", other.cpu_count, other.cpu_model),
        );
        check("kernel", self.kernel.clone(), other.kernel.clone());
        check(
            "rustc",
            self.rustc_version.clone(),
            other.rustc_version.clone(),
        );
        check(
            "nats",
            format!("{} {}", self.nats.kind, self.nats.server_version),
            format!("{} {}", other.nats.kind, other.nats.server_version),
        );
        check(
            "config",
            self.config_hash.clone(),
            other.config_hash.clone(),
        );
        let load = |e: &Environment| {
            e.load_generators
                .clone()
                .unwrap_or_else(|| "the harness process".into())
        };
        check("load generators", load(self), load(other));
        out
    }
}

/// Outcome of one scenario against its absolute targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ran, accounting clean, every target met.
    Pass,
    /// Ran, but a target was missed or events were lost/duplicated unexpectedly.
    Fail,
    /// The harness could not run or finish the scenario.
    Error,
    /// Not selected or not applicable in this profile.
    Skipped,
    /// The harness did not keep its own schedule (send delay p99 over its limit): the figures
    /// measure the load generator, not the service, and are neither a pass nor a fail.
    Invalid,
    /// Ran with clean accounting and no missed target, but at least one target could not be
    /// judged (a percentile on fewer events than it needs, or an interval across the threshold):
    /// not a pass.
    InsufficientData,
}

impl Verdict {
    /// The label reports and summaries show.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Skipped => "skipped",
            Verdict::Invalid => "invalid (harness lag)",
            Verdict::InsufficientData => "insufficient data",
        }
    }
}

/// The harness's judgement of its own schedule in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessLag {
    /// p99 of actual − intended send time over the measured phase.
    pub send_delay_p99_us: f64,
    pub limit_us: f64,
    /// Where the limit came from, e.g. "10 % of latency.p99_ms <= 5 ms".
    pub limit_source: String,
    pub within: bool,
    /// How late an idle thread of the harness, sleeping to deadlines 200 times a second beside
    /// the scenario, woke at p99: the machine's own scheduling noise over the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_wake_p99_us: Option<f64>,
}

/// One step of a rate sweep: what a scenario measured at one offered rate, steady state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub offered_per_s: f64,
    /// Committed events per second over the step's measured phase.
    pub achieved_per_s: f64,
    pub sent: u64,
    pub committed: u64,
    pub lost: u64,
    /// From the intended send time to the proof.
    pub latency: LatencySummary,
    /// The harness's own schedule in this step: a point where it fell behind measures the load
    /// generator, not the service, and is marked so.
    pub harness_lag: HarnessLag,
    /// rosey-dbservice's CPU per committed event in this step, if it was sampled.
    #[serde(default)]
    pub cpu_us_per_event: Option<f64>,
}

/// How load was offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// `open_loop` (fixed schedule, latency from intended time), `closed_loop` (service time /
    /// saturation; labelled as such), or `burst` (everything at once, drain time measured).
    pub model: String,
    #[serde(default)]
    pub target_rate_per_s: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub payload_bytes: Option<u32>,
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub stdev_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
}

/// One recorded histogram, serialized so reports can re-render and runs can be merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedHistogram {
    /// `latency` (the headline: end to end from intended send time), `send_delay`
    /// (actual − intended send time), `service_time` (closed loop), `hop.<name>` (per hop), ...
    pub name: String,
    pub description: String,
    pub summary: LatencySummary,
    /// HdrHistogram V2 deflate-compressed, base64 (standard alphabet).
    pub encoded: String,
}

/// Per-interval summary of the headline histogram (the full interval histograms are in the
/// scenario's HdrHistogram interval log).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct IntervalPoint {
    /// Seconds since the start of the measured phase.
    pub t_s: f64,
    pub length_s: f64,
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// A fault injected into a measured phase: what, where, and when (seconds since the phase's
/// start, the clock of [`IntervalPoint::t_s`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill`, `pause`, `partition`, `restart`.
    pub kind: String,
    /// What it hit, e.g. `nats node n2 (JetStream meta leader)`.
    pub target: String,
    pub start_s: f64,
    /// When the fault was lifted (the node started, unpaused, reconnected); `None`: never.
    #[serde(default)]
    pub end_s: Option<f64>,
}

/// One window of a phase with a fault: `before`, `during` or `after`. `confirmed`, `lost` and
/// the latency percentiles are of the messages *scheduled* in the window (the per-second
/// histograms by intended send time whose middle falls in it, and the lost messages' intended
/// times), wherever they were confirmed; `throughput_per_s` counts the proofs that *arrived* in
/// it (the histograms by confirmation second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseWindow {
    pub name: String,
    pub from_s: f64,
    pub to_s: f64,
    pub confirmed: u64,
    pub lost: u64,
    /// `None` when nothing was confirmed in the window.
    #[serde(default)]
    pub p50_ns: Option<u64>,
    #[serde(default)]
    pub p99_ns: Option<u64>,
    #[serde(default)]
    pub max_ns: Option<u64>,
    /// Proofs that arrived in the window, per second.
    pub throughput_per_s: f64,
}

/// One CPU/RSS sample of one process, on the same clock as [`IntervalPoint::t_s`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResourceSample {
    pub t_s: f64,
    /// `dbservice`, `bot`, `nats-server` or `harness`.
    pub process: String,
    /// CPU (user + system) since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// CPU and memory of one process over the measured phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessResources {
    pub process: String,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Mean CPU over the phase in percent of one core.
    pub cpu_percent: f64,
    /// CPU microseconds (from `cpu_source`) divided by events committed in the phase.
    #[serde(default)]
    pub cpu_us_per_event: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_max_bytes: u64,
    /// Theil–Sen slope of RSS over the phase (`sampler::theil_sen`), bytes per hour.
    #[serde(default)]
    pub rss_slope_bytes_per_hour: Option<f64>,
    /// Sen's 95 % interval of that slope, bytes per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_slope_ci95_bytes_per_hour: Option<[f64; 2]>,
    /// Where the CPU figures came from: `schedstat` (nanoseconds on CPU, summed over threads)
    /// or `stat_ticks` (`utime + stime`, 10 ms ticks, where schedstat is unavailable).
    /// `cpu_percent` and `cpu_us_per_event` use it; `cpu_user_s`/`cpu_system_s` are always ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_source: Option<String>,
}

/// Where every event went. `lost = sent − committed − (still unaccounted)`; see the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Accounting {
    pub sent: u64,
    /// Proven committed by the service (commit notice or reply), counted once per id.
    pub committed: u64,
    pub lost: u64,
    /// Ids confirmed more than once.
    pub duplicated: u64,
    /// True when the scenario is about loss (e.g. core-mode restart) and loss is reported, not failed.
    #[serde(default)]
    pub loss_expected: bool,
}

/// One absolute target (SLO) and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// Metric key, e.g. `latency.p99_ms`, `throughput_per_s`, `cpu_us_per_event.dbservice`.
    pub metric: String,
    /// `<=` or `>=`.
    pub op: String,
    pub threshold: f64,
    pub unit: String,
    #[serde(default)]
    pub actual: Option<f64>,
    pub passed: bool,
    /// Where the target comes from, e.g. "seed target P0: …".
    #[serde(default)]
    pub source: String,
    /// Reported only: a missed informational target does not fail the scenario.
    #[serde(default)]
    pub informational: bool,
    /// Set when the target is a percentile judged on too few events: the events it needs. Such
    /// a target is neither met nor missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_events: Option<u64>,
    /// The metric's 95 % interval, when the result has one (`<metric>.ci95_low`/`_high`): the
    /// target is judged on it instead of the point estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// The interval straddles the threshold: neither met nor missed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

impl TargetCheck {
    /// A target that counts against the verdict and was missed.
    pub fn missed(&self) -> bool {
        !self.passed && !self.informational && !self.undecided()
    }

    /// A target that counts against the verdict but could not be judged: too few events for its
    /// percentile, or an interval that straddles its threshold.
    pub fn insufficient(&self) -> bool {
        !self.informational && self.undecided()
    }

    fn undecided(&self) -> bool {
        self.needs_events.is_some() || self.inconclusive
    }
}

/// Everything one scenario measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Stable key, e.g. `single_event_latency`.
    pub name: String,
    pub title: String,
    pub description: String,
    pub load: LoadInfo,
    /// The scenario's full configuration as used.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Headline histogram summary (same as `histograms[name == "latency"]`), if any.
    #[serde(default)]
    pub latency: Option<LatencySummary>,
    #[serde(default)]
    pub histograms: Vec<NamedHistogram>,
    /// Committed events per second over the measured phase.
    #[serde(default)]
    pub throughput_per_s: Option<f64>,
    pub accounting: Accounting,
    #[serde(default)]
    pub resources: Vec<ProcessResources>,
    /// Other scalar figures: `recovery_ms`, `drain_ms`, `cpu_ratio_nats_vs_direct`, ...
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub targets: Vec<TargetCheck>,
    /// The round trip the headline latency proves: `reply` (request → reply), `notice` (event →
    /// commit notice) or `via_bot` (platform event → bot → … → proof); the floor of the first
    /// two is measured in the same run, after the scenarios, by bare async-nats loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_path: Option<String>,
    /// The harness's own schedule, judged (absent for bursts and scenarios without senders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_lag: Option<HarnessLag>,
    /// A rate sweep's steps, in offered-rate order (empty for single-rate scenarios).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<CurvePoint>,
    /// The load workers that offered the measured phase, each with its own figures (empty: the
    /// harness process offered it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<crate::workers::WorkerFigures>,
    /// Faults injected into the measured phase, with their times (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultRecord>,
    /// The measured phase cut at the faults: before, during and after (empty without faults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<PhaseWindow>,
    pub verdict: Verdict,
    #[serde(default)]
    pub intervals: Vec<IntervalPoint>,
    #[serde(default)]
    pub resource_timeline: Vec<ResourceSample>,
    /// Path of the HdrHistogram interval log, relative to the run directory. Read only through
    /// [`interval_log_path`], which keeps it inside that directory.
    #[serde(default)]
    pub interval_log: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

impl RunResults {
    /// Parse and check the schema version.
    pub fn from_json(text: &str) -> anyhow::Result<RunResults> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        anyhow::ensure!(
            version == Some(u64::from(SCHEMA_VERSION)),
            "unsupported results schema version {version:?} (this build reads {SCHEMA_VERSION})"
        );
        Ok(serde_json::from_value(value)?)
    }

    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}

/// The file an `interval_log` of a results.json names, confined to `run_dir`: a results.json is
/// data (a downloaded artifact, a history entry), so its path may not be absolute, may not have
/// `..` (or root) components, and must canonicalize to a file inside the canonical `run_dir`
/// (no symlink out). Errors say why; a missing file is an error too.
pub fn interval_log_path(
    run_dir: &std::path::Path,
    rel: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use std::path::{Component, Path};
    let outside =
        |why: &str| anyhow::anyhow!("interval log {rel:?} is outside the run directory ({why})");
    let path = Path::new(rel);
    if rel.is_empty() {
        anyhow::bail!("interval log path is empty");
    }
    if path.is_absolute() || path.has_root() {
        return Err(outside("absolute path"));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(outside("a `..` or root component"));
    }
    let joined = run_dir.join(path);
    let dir = std::fs::canonicalize(run_dir)
        .map_err(|e| anyhow::anyhow!("run directory {}: {e}", run_dir.display()))?;
    let file = std::fs::canonicalize(&joined)
        .map_err(|e| anyhow::anyhow!("interval log {}: {e}", joined.display()))?;
    if !file.starts_with(&dir) {
        return Err(outside("a symlink leads out of it"));
    }
    Ok(file)
}

#[cfg(test)]
mod interval_log_path_tests {
    use super::interval_log_path;

    #[test]
    fn only_files_inside_the_run_dir_are_accepted() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("run");
        std::fs::create_dir_all(run.join("logs")).unwrap();
        std::fs::write(run.join("logs").join("s.hlog"), "x").unwrap();
        std::fs::write(root.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), run.join("link")).unwrap();
        let ok = interval_log_path(&run, "logs/s.hlog").unwrap();
        assert!(ok.ends_with("run/logs/s.hlog"), "{}", ok.display());
        assert!(interval_log_path(&run, "./logs/s.hlog").is_ok());
        let secret = root.path().join("secret");
        for bad in [
            secret.to_str().unwrap(),
            "../secret",
            "logs/../../secret",
            "link",
            "",
        ] {
            let e = format!("{:#}", interval_log_path(&run, bad).unwrap_err());
            assert!(
                e.contains("outside the run directory") || bad.is_empty(),
                "{bad}: {e}"
            );
        }
        let e = format!(
            "{:#}",
            interval_log_path(&run, "logs/missing.hlog").unwrap_err()
        );
        assert!(e.contains("missing.hlog"), "{e}");
    }
}
