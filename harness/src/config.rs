//! The bench configuration: `harness/bench.toml` (or `--config`), with per-profile overrides.
//!
//! The file has a `[services]` table, one `[scenarios.<name>]` table per scenario and
//! `[profiles.<profile>...]` tables that are deep-merged over the rest when that profile is
//! selected, so a team can tune rates, durations, payloads and targets without touching code:
//!
//! ```toml
//! [scenarios.single_event_latency]
//! rate_per_s = 200
//! duration_s = 20
//! targets = [{ metric = "latency.p99_ms", op = "<=", threshold = 5.0, source = "seed target P0: …" }]
//!
//! [profiles.quick.scenarios.single_event_latency]
//! duration_s = 5
//! ```
//!
//! A `[history]` table says how many runs the bench history keeps per environment fingerprint
//! (`keep_per_fingerprint`), and a `[gate]` table what the pull-request gate runs (`pr_scenarios`,
//! `budget_minutes`); neither is part of the hashed configuration.
//!
//! Every scenario table may hold `enabled` (default true) and `targets`; everything else is the
//! scenario's own parameters, which it reads strictly (an unknown key is an error, so a typo
//! cannot silently fall back to a default).

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Profiles every configuration must be able to select.
pub const PROFILES: [&str; 3] = ["quick", "default", "soak"];

/// The loaded configuration after profile selection.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub profile: String,
    pub services: ServicesConfig,
    /// How the harness judges its own measurement (`[self_check]`).
    pub self_check: SelfCheckConfig,
    /// How much the bench history keeps (`[history]`). Not part of [`Self::merged`]: retention
    /// is no measurement condition, so it never changes the config hash or the fingerprint.
    pub history: HistoryConfig,
    /// What `cargo xtask ci pr-bench` runs (`[gate]`). Not part of [`Self::merged`] either.
    pub gate: GateConfig,
    /// Per scenario: its merged table (including `enabled` and `targets`).
    pub scenarios: BTreeMap<String, toml::Table>,
    /// The whole merged configuration, for the environment fingerprint.
    pub merged: toml::Table,
}

/// How the services under test are started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// `core` (plain subscriptions, the seed's behaviour) or `durable` (JetStream).
    #[serde(default = "default_mode")]
    pub dbservice_mode: DbServiceMode,
    /// Start `rosey-bot` as well (scenarios that go through the bot need it).
    #[serde(default = "default_true")]
    pub start_bot: bool,
    /// The bot's channel (one subject token).
    #[serde(default = "default_channel")]
    pub bot_channel: String,
    /// Longest wait for a service to answer its readiness check.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_s: f64,
    /// Longest wait for a service to exit after SIGTERM before it is killed.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_s: f64,
    /// CPU/RSS sampling interval of the processes under test.
    #[serde(default = "default_sample_interval")]
    pub sample_interval_ms: u64,
    /// Extra flags for `rosey-dbservice` (e.g. `["--fault-stats-delay-ms", "50"]`).
    #[serde(default)]
    pub dbservice_args: Vec<String>,
    /// Extra flags for `rosey-bot`.
    #[serde(default)]
    pub bot_args: Vec<String>,
}

/// How `rosey-dbservice` takes events: `core` (plain subscriptions, the seed's behaviour) or
/// `durable` (a JetStream consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbServiceMode {
    Core,
    Durable,
}

impl DbServiceMode {
    /// The name `rosey-dbservice --mode` takes and its stats report.
    pub fn as_str(self) -> &'static str {
        match self {
            DbServiceMode::Core => "core",
            DbServiceMode::Durable => "durable",
        }
    }
}

fn default_mode() -> DbServiceMode {
    DbServiceMode::Core
}
fn default_true() -> bool {
    true
}
fn default_channel() -> String {
    "bench".to_owned()
}
fn default_ready_timeout() -> f64 {
    20.0
}
fn default_stop_timeout() -> f64 {
    10.0
}
fn default_sample_interval() -> u64 {
    500
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            dbservice_mode: default_mode(),
            start_bot: true,
            bot_channel: default_channel(),
            ready_timeout_s: default_ready_timeout(),
            stop_timeout_s: default_stop_timeout(),
            sample_interval_ms: default_sample_interval(),
            dbservice_args: Vec::new(),
            bot_args: Vec::new(),
        }
    }
}

/// How the harness judges itself in every run (`[self_check]`): a scenario whose senders fell
/// behind their schedule by more than the limit measured the harness, not the service, and is
/// `invalid (harness lag)`. The limit is the smaller of `send_delay_p99_max_us` and
/// `send_delay_target_fraction` of the scenario's tightest latency target; a scenario table may
/// set its own `send_delay_p99_max_us`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCheckConfig {
    pub send_delay_p99_max_us: f64,
    pub send_delay_target_fraction: f64,
    /// Round trips of each bare floor measured after the scenarios (one per path and rate the
    /// service scenarios used), for their `floor + service cost`.
    pub floor_events: u64,
}

impl Default for SelfCheckConfig {
    fn default() -> Self {
        SelfCheckConfig {
            send_delay_p99_max_us: 500.0,
            send_delay_target_fraction: 0.1,
            floor_events: 1_000,
        }
    }
}

impl SelfCheckConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.send_delay_p99_max_us.is_finite() && self.send_delay_p99_max_us > 0.0,
            "[self_check] send_delay_p99_max_us must be positive"
        );
        anyhow::ensure!(
            self.send_delay_target_fraction.is_finite() && self.send_delay_target_fraction > 0.0,
            "[self_check] send_delay_target_fraction must be positive"
        );
        anyhow::ensure!(
            self.floor_events >= 100,
            "[self_check] floor_events must be at least 100 (a floor's p99 needs events beyond it)"
        );
        Ok(())
    }
}

/// What the bench history keeps (`[history]`), read by `cargo xtask ci history-append`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// The newest runs kept per environment fingerprint; older ones are pruned.
    #[serde(default = "default_keep_per_fingerprint")]
    pub keep_per_fingerprint: usize,
}

fn default_keep_per_fingerprint() -> usize {
    crate::history::DEFAULT_KEEP_PER_FINGERPRINT
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep_per_fingerprint: default_keep_per_fingerprint(),
        }
    }
}

/// What the pull-request gate runs (`[gate]`), read by `cargo xtask ci pr-bench`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The scenarios of each A/B round (empty: every scenario of the profile).
    #[serde(default)]
    pub pr_scenarios: Vec<String>,
    /// Bench time for all rounds together, in minutes (None: the command's own default).
    #[serde(default)]
    pub budget_minutes: Option<f64>,
}

/// A target's comparison: `<=` (at most the threshold) or `>=` (at least).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">=")]
    AtLeast,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::AtMost => "<=",
            Op::AtLeast => ">=",
        }
    }

    /// Does `value` meet `threshold` under this comparison?
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::AtMost => value <= threshold,
            Op::AtLeast => value >= threshold,
        }
    }
}

/// One absolute target as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Metric key, see [`crate::scenario::metric_value`].
    pub metric: String,
    /// `<=` or `>=`.
    pub op: Op,
    pub threshold: f64,
    /// Defaults to what the metric's suffix says (`_ms` → ms, `_per_s` → /s, `_pct` → %).
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub source: String,
    /// Reported but never failing the scenario: for a target kept for comparison with the seed
    /// that an honest measurement cannot meet (the `source` says why).
    #[serde(default)]
    pub informational: bool,
}

impl BenchConfig {
    /// Load `path` and select `profile`.
    pub fn load(path: &Path, profile: &str) -> anyhow::Result<BenchConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read bench config {}", path.display()))?;
        BenchConfig::parse(&text, profile)
            .with_context(|| format!("bench config {}", path.display()))
    }

    /// Parse a configuration text and select `profile`.
    pub fn parse(text: &str, profile: &str) -> anyhow::Result<BenchConfig> {
        if !PROFILES.contains(&profile) {
            bail!(
                "unknown profile {profile:?} (expected one of {})",
                PROFILES.join(", ")
            );
        }
        let mut base: toml::Table = toml::from_str(text).context("parse toml")?;
        let profiles = base.remove("profiles");
        if let Some(profiles) = profiles {
            let toml::Value::Table(profiles) = profiles else {
                bail!("`profiles` must be a table")
            };
            for name in profiles.keys() {
                if !PROFILES.contains(&name.as_str()) {
                    bail!("unknown profile table `profiles.{name}`");
                }
            }
            if let Some(overrides) = profiles.get(profile) {
                let toml::Value::Table(overrides) = overrides else {
                    bail!("`profiles.{profile}` must be a table")
                };
                merge(&mut base, overrides);
            }
        }
        // Taken out before anything hashes the configuration (see `BenchConfig::history`).
        let history: HistoryConfig = match base.remove("history") {
            Some(v) => v.try_into().context("[history]")?,
            None => HistoryConfig::default(),
        };
        anyhow::ensure!(
            history.keep_per_fingerprint >= 1,
            "[history] keep_per_fingerprint must be at least 1"
        );
        let gate: GateConfig = match base.remove("gate") {
            Some(v) => v.try_into().context("[gate]")?,
            None => GateConfig::default(),
        };
        if let Some(b) = gate.budget_minutes {
            anyhow::ensure!(
                b > 0.0 && b.is_finite(),
                "[gate] budget_minutes must be positive"
            );
        }
        for key in base.keys() {
            if !["services", "scenarios", "self_check"].contains(&key.as_str()) {
                bail!(
                    "unknown top-level key `{key}` (expected services, self_check, history, gate, scenarios, profiles)"
                );
            }
        }
        let services = match base.get("services") {
            Some(v) => v.clone().try_into().context("[services]")?,
            None => ServicesConfig::default(),
        };
        let self_check: SelfCheckConfig = match base.get("self_check") {
            Some(v) => v.clone().try_into().context("[self_check]")?,
            None => SelfCheckConfig::default(),
        };
        self_check.validate()?;
        let mut scenarios = BTreeMap::new();
        if let Some(v) = base.get("scenarios") {
            let toml::Value::Table(table) = v else {
                bail!("`scenarios` must be a table")
            };
            for (name, v) in table {
                let toml::Value::Table(t) = v else {
                    bail!("`scenarios.{name}` must be a table")
                };
                scenarios.insert(name.clone(), t.clone());
            }
        }
        Ok(BenchConfig {
            profile: profile.to_owned(),
            services,
            self_check,
            history,
            gate,
            scenarios,
            merged: base,
        })
    }

    /// The merged configuration as JSON (for results and the fingerprint).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.merged).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut v {
            map.insert(
                "profile".to_owned(),
                serde_json::Value::String(self.profile.clone()),
            );
        }
        v
    }
}

/// The table of one scenario, split into framework keys and the scenario's own parameters.
#[derive(Debug, Clone, Default)]
pub struct ScenarioTable {
    pub enabled: bool,
    pub targets: Vec<TargetSpec>,
    /// This scenario's own harness-lag limit (`send_delay_p99_max_us`), if it sets one.
    pub send_delay_p99_max_us: Option<f64>,
    /// Everything except `enabled`, `targets` and `send_delay_p99_max_us`.
    pub params: toml::Table,
}

impl ScenarioTable {
    pub fn from_table(table: &toml::Table) -> anyhow::Result<ScenarioTable> {
        let mut params = table.clone();
        let enabled = match params.remove("enabled") {
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => bail!("`enabled` must be a boolean, got {other}"),
            None => true,
        };
        let targets = match params.remove("targets") {
            Some(v) => v
                .try_into()
                .context("`targets` must be an array of {metric, op, threshold, unit?, source?}")?,
            None => Vec::new(),
        };
        let send_delay_p99_max_us = match params.remove("send_delay_p99_max_us") {
            Some(v) => {
                let us = v
                    .as_float()
                    .or_else(|| v.as_integer().map(|i| i as f64))
                    .filter(|us| us.is_finite() && *us > 0.0)
                    .context("`send_delay_p99_max_us` must be a positive number")?;
                Some(us)
            }
            None => None,
        };
        Ok(ScenarioTable {
            enabled,
            targets,
            send_delay_p99_max_us,
            params,
        })
    }

    /// The scenario's parameters as its own struct, strictly: a key the struct does not know is
    /// an error, and so is a parameter the table leaves out (no hidden defaults; only an
    /// optional parameter may be absent). Then the struct's own checks.
    pub fn params<T: ScenarioParams>(&self) -> anyhow::Result<T> {
        let p: T = toml::Value::Table(self.params.clone())
            .try_into()
            .context("scenario parameters")?;
        // Serialized back, the struct names every key it reads (flattened structs included),
        // with `null` for an absent optional one.
        let serde_json::Value::Object(known) =
            serde_json::to_value(&p).context("scenario parameters")?
        else {
            bail!("scenario parameters must be a table of keys");
        };
        let unknown: Vec<&str> = self
            .params
            .keys()
            .filter(|k| !known.contains_key(k.as_str()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            bail!(
                "unknown parameter(s) {}; this scenario reads: {}",
                unknown.join(", "),
                known.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let missing: Vec<&str> = known
            .iter()
            .filter(|(k, v)| !v.is_null() && !self.params.contains_key(k.as_str()))
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            bail!(
                "parameter(s) {} not written: every parameter is set in the configuration, \
                 none has a hidden default",
                missing.join(", ")
            );
        }
        p.validate()?;
        Ok(p)
    }
}

/// A scenario's parameter struct: read strictly from its table by [`ScenarioTable::params`]
/// (`Serialize` lets that check name every key the struct reads), then checked.
pub trait ScenarioParams: DeserializeOwned + Serialize {
    /// The parameters' own consistency checks (positive rates, …).
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Read and check a scenario's parameters of type `T`; the `check` of a `ScenarioDef`, so a
/// whole configuration is checked before anything starts.
pub fn check_params<T: ScenarioParams>(table: &ScenarioTable) -> anyhow::Result<()> {
    table.params::<T>().map(|_| ())
}

/// Deep merge: tables merge key by key; any other value (including arrays) replaces.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Inner {
        rate_per_s: f64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Outer {
        #[serde(flatten)]
        inner: Inner,
        n: u64,
        #[serde(default)]
        optional: Option<u64>,
    }

    impl ScenarioParams for Outer {
        fn validate(&self) -> anyhow::Result<()> {
            anyhow::ensure!(self.n > 0, "n must be positive");
            Ok(())
        }
    }

    fn table(text: &str) -> ScenarioTable {
        ScenarioTable::from_table(&text.parse::<toml::Table>().unwrap()).unwrap()
    }

    #[test]
    fn parameters_are_read_strictly_through_flattened_structs() {
        let p: Outer = table("rate_per_s = 5\nn = 1").params().unwrap();
        assert_eq!((p.inner.rate_per_s, p.n, p.optional), (5.0, 1, None));
        let p: Outer = table("rate_per_s = 5\nn = 1\noptional = 3")
            .params()
            .unwrap();
        assert_eq!(p.optional, Some(3));
        let unknown = table("rate_per_s = 5\nn = 1\nrate = 3")
            .params::<Outer>()
            .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown parameter(s) rate"),
            "{unknown:#}"
        );
        let missing = table("n = 1").params::<Outer>().unwrap_err();
        assert!(format!("{missing:#}").contains("rate_per_s"), "{missing:#}");
        let invalid = table("rate_per_s = 5\nn = 0")
            .params::<Outer>()
            .unwrap_err();
        assert!(
            invalid.to_string().contains("n must be positive"),
            "{invalid:#}"
        );
    }

    const TEXT: &str = r#"
[services]
start_bot = false

[scenarios.a]
rate_per_s = 100
duration_s = 10
targets = [{ metric = "latency.p99_ms", op = "<=", threshold = 5.0 }]

[scenarios.b]
enabled = false
x = 1

[profiles.quick.scenarios.a]
duration_s = 2
targets = []

[profiles.soak.services]
sample_interval_ms = 1000
"#;

    #[test]
    fn profile_overrides_merge_deeply() {
        let quick = BenchConfig::parse(TEXT, "quick").unwrap();
        let a = ScenarioTable::from_table(&quick.scenarios["a"]).unwrap();
        assert_eq!(a.params["duration_s"].as_integer(), Some(2));
        assert_eq!(a.params["rate_per_s"].as_integer(), Some(100));
        assert!(a.targets.is_empty(), "arrays are replaced, not merged");
        assert!(!quick.services.start_bot);
        assert_eq!(quick.services.sample_interval_ms, 500);

        let default = BenchConfig::parse(TEXT, "default").unwrap();
        let a = ScenarioTable::from_table(&default.scenarios["a"]).unwrap();
        assert_eq!(a.params["duration_s"].as_integer(), Some(10));
        assert_eq!(a.targets.len(), 1);
        assert_eq!(a.targets[0].op, Op::AtMost);
        let b = ScenarioTable::from_table(&default.scenarios["b"]).unwrap();
        assert!(!b.enabled);

        assert_eq!(default.self_check, SelfCheckConfig::default());
        let own = "[self_check]\nsend_delay_p99_max_us = 200\nsend_delay_target_fraction = 0.05\nfloor_events = 500\n[scenarios.a]\nsend_delay_p99_max_us = 50\n";
        let c = BenchConfig::parse(own, "default").unwrap();
        assert_eq!(c.self_check.send_delay_p99_max_us, 200.0);
        let a = ScenarioTable::from_table(&c.scenarios["a"]).unwrap();
        assert_eq!(a.send_delay_p99_max_us, Some(50.0));
        assert!(a.params.is_empty(), "a framework key, not a parameter");
        assert!(BenchConfig::parse(
            "[self_check]\nsend_delay_p99_max_us = 0\nsend_delay_target_fraction = 0.1\nfloor_events = 500\n",
            "quick"
        )
        .is_err());

        let soak = BenchConfig::parse(TEXT, "soak").unwrap();
        assert_eq!(soak.services.sample_interval_ms, 1000);
        assert_eq!(soak.to_json()["profile"], "soak");
    }

    #[test]
    fn history_table_is_read_but_not_hashed() {
        let plain = BenchConfig::parse(TEXT, "quick").unwrap();
        assert_eq!(plain.history, HistoryConfig::default());
        let with = BenchConfig::parse(
            &format!("[history]\nkeep_per_fingerprint = 7\n{TEXT}"),
            "quick",
        )
        .unwrap();
        assert_eq!(with.history.keep_per_fingerprint, 7);
        assert_eq!(with.to_json(), plain.to_json(), "retention is not hashed");
        assert!(BenchConfig::parse("[history]\nkeep_per_fingerprint = 0\n", "quick").is_err());
        assert!(BenchConfig::parse("[history]\nkeep = 3\n", "quick").is_err());
        let gated = BenchConfig::parse(
            &format!("[gate]\npr_scenarios = [\"a\"]\nbudget_minutes = 5.0\n{TEXT}"),
            "quick",
        )
        .unwrap();
        assert_eq!(gated.gate.pr_scenarios, ["a"]);
        assert_eq!(gated.gate.budget_minutes, Some(5.0));
        assert_eq!(gated.merged, plain.merged, "[gate] is not hashed either");
        assert!(BenchConfig::parse("[gate]\nbudget_minutes = 0.0\n", "quick").is_err());
        let committed = BenchConfig::parse(include_str!("../bench.toml"), "quick").unwrap();
        assert_eq!(committed.history.keep_per_fingerprint, 30);
    }

    #[test]
    fn rejects_unknown_things() {
        assert!(BenchConfig::parse(TEXT, "fast").is_err());
        assert!(BenchConfig::parse("[profiles.fast]\n", "quick").is_err());
        assert!(BenchConfig::parse("[servics]\n", "quick").is_err());
        assert!(BenchConfig::parse("[services]\nstart_bott = true\n", "quick").is_err());
        let bad_target = "[scenarios.a]\ntargets = [{ metric = \"x\", op = \"<\" , threshold = 1.0, colour = 1 }]\n";
        let c = BenchConfig::parse(bad_target, "quick").unwrap();
        assert!(ScenarioTable::from_table(&c.scenarios["a"]).is_err());
    }

    #[test]
    fn committed_bench_toml_parses_in_every_profile() {
        let text = include_str!("../bench.toml");
        for p in PROFILES {
            let c = BenchConfig::parse(text, p).unwrap();
            for (name, t) in &c.scenarios {
                ScenarioTable::from_table(t).unwrap_or_else(|e| panic!("{p}/{name}: {e:#}"));
            }
        }
    }
}
