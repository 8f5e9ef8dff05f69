//! The scenario framework: what a scenario is ([`ScenarioDef`]), what it gets to work with
//! ([`ScenarioContext`]), and the shared rules that turn its measurements into a verdict
//! (targets from the configuration, accounting, errors).
//!
//! A scenario is a name, a title, a one-line description and an async `run` function that
//! returns a [`ScenarioResult`] with its load, histograms, accounting and metrics filled in.
//! The framework then checks the configured targets and computes the verdict, so no scenario
//! decides its own pass/fail by hand:
//!
//! * an error (the harness could not measure) → `error`;
//! * the harness's own senders fell behind their schedule (send delay p99 over the limit of
//!   `[self_check]`) → `invalid (harness lag)`: the figures measure the load generator;
//! * lost or duplicated events, unless the scenario says loss is expected → `fail`;
//! * any target missed (or its metric missing) → `fail`;
//! * a percentile target judged on fewer events than it needs (p90: 100, p99: 1,000, p99.9:
//!   10,000, p99.99: 100,000), or a target on a metric with a 95 % interval that straddles the
//!   threshold (`<metric>.ci95_low`/`<metric>.ci95_high` beside it) → `insufficient data`;
//! * otherwise → `pass`.

use crate::config::{Op, ScenarioTable, SelfCheckConfig, TargetSpec};
use crate::histogram;
use crate::load::PhaseOutcome;
use crate::results::{HarnessLag, LoadInfo, ScenarioResult, TargetCheck, Verdict};
use crate::sampler::Sampler;
use crate::services::Services;
use anyhow::Context;
use async_nats::Client;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as scenario `run` functions return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A scenario's body.
pub type RunFn = for<'a> fn(&'a ScenarioContext) -> BoxFuture<'a, anyhow::Result<ScenarioResult>>;

/// One entry of the scenario table.
#[derive(Clone, Copy)]
pub struct ScenarioDef {
    /// Stable key (results, configuration, `--scenario`).
    pub name: &'static str,
    pub title: &'static str,
    /// One line: what exactly is measured.
    pub description: &'static str,
    /// Needs the services under test (false for the NATS-only self checks).
    pub needs_services: bool,
    /// Reads and checks the scenario's parameters (`config::check_params::<its Params>`), so a
    /// run refuses a bad configuration before it starts anything.
    pub check: fn(&crate::config::ScenarioTable) -> anyhow::Result<()>,
    pub run: RunFn,
}

impl std::fmt::Debug for ScenarioDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScenarioDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Everything a scenario may use.
pub struct ScenarioContext {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub nats_url: String,
    /// The harness's own connection (proof listeners, probes).
    pub client: Client,
    /// `None` when the services could not be started (scenarios that need them then error).
    pub services: Option<Arc<tokio::sync::Mutex<Services>>>,
    pub sampler: Arc<Sampler>,
    /// Host pid of nats-server (for the sampler), if known.
    pub nats_pid: Option<u32>,
    /// Stop and start of nats-server, when the harness runs it as a local process.
    pub nats_control: Option<crate::provision::NatsControl>,
    /// Fault control of the nodes, when NATS is a cluster the harness started (`--nats cluster`).
    pub cluster: Option<crate::cluster::ClusterControl>,
    pub run_dir: PathBuf,
    pub profile: String,
    pub seed: u64,
    /// The scenario's configuration table (framework keys split off).
    pub table: ScenarioTable,
    /// How the harness judges its own schedule.
    pub self_check: SelfCheckConfig,
    /// The scenario's table as written (after profile merge), for the results.
    pub config_json: serde_json::Value,
    pub progress: indicatif::MultiProgress,
    /// Load workers that joined the run (`--workers`, `--worker-processes`, `--remote-workers`):
    /// phases they can run
    /// are handed to them ([`crate::scenarios::run_plan_phase`]).
    pub workers: Option<Arc<crate::workers::Workers>>,
}

impl ScenarioContext {
    /// The scenario's own parameters, read strictly and checked ([`crate::config::ScenarioTable::params`]).
    pub fn params<T: crate::config::ScenarioParams>(&self) -> anyhow::Result<T> {
        self.table
            .params()
            .with_context(|| format!("[scenarios.{}]", self.name))
    }

    /// The services under test, or an error saying they are not running.
    pub async fn services(&self) -> anyhow::Result<tokio::sync::MutexGuard<'_, Services>> {
        let services = self
            .services
            .as_ref()
            .context("the services under test are not running")?;
        Ok(services.lock().await)
    }

    /// An error unless the services under test are running.
    pub fn require_services(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.services.is_some(),
            "the services under test are not running"
        );
        Ok(())
    }

    /// Tell the sampler which processes to watch (after a restart changed a pid).
    pub async fn refresh_sampled_processes(&self) {
        let mut processes = match &self.services {
            Some(s) => s.lock().await.pids(),
            None => Vec::new(),
        };
        processes.extend(self.base_processes());
        self.sampler.set_processes(processes);
    }

    /// nats-server (its pid now: a scenario may have restarted it), the harness itself and the
    /// load workers started on this host.
    pub fn base_processes(&self) -> Vec<(String, u32)> {
        let mut p = vec![("harness".to_owned(), std::process::id())];
        let nats_pid = match &self.nats_control {
            Some(c) => Some(c.pid()),
            None => self.nats_pid,
        };
        if let Some(cluster) = &self.cluster {
            p.extend(cluster.pids());
        }
        if let Some(pid) = nats_pid {
            p.push(("nats-server".to_owned(), pid));
        }
        if let Some(w) = &self.workers {
            p.extend(w.processes().iter().cloned());
        }
        p
    }

    /// A unique id prefix for one phase of this scenario (`<scenario>.<phase>.`).
    pub fn id_prefix(&self, phase: &str) -> String {
        format!("{}.{phase}.", self.name)
    }

    /// A progress bar for one phase, counting messages.
    pub fn progress_bar(&self, phase: &str, total: u64) -> indicatif::ProgressBar {
        let bar = self.progress.add(indicatif::ProgressBar::new(total));
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>28} {msg:10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(self.name);
        bar.set_message(phase.to_owned());
        bar
    }

    /// An empty result for this scenario with `load` filled in.
    pub fn result(&self, load: LoadInfo) -> ScenarioResult {
        ScenarioResult {
            name: self.name.to_owned(),
            title: self.title.to_owned(),
            description: self.description.to_owned(),
            load,
            config: self.config_json.clone(),
            latency: None,
            histograms: Vec::new(),
            throughput_per_s: None,
            accounting: Default::default(),
            resources: Vec::new(),
            metrics: BTreeMap::new(),
            targets: Vec::new(),
            proof_path: None,
            curve: Vec::new(),
            workers: Vec::new(),
            faults: Vec::new(),
            windows: Vec::new(),
            harness_lag: None,
            verdict: Verdict::Pass,
            intervals: Vec::new(),
            resource_timeline: Vec::new(),
            interval_log: None,
            error: None,
            notes: Vec::new(),
        }
    }

    /// Write `intervals` to `<run_dir>/intervals/<scenario>.hlog`; returns the relative path.
    pub fn write_interval_log(
        &self,
        record: &crate::record::PhaseRecord,
    ) -> anyhow::Result<String> {
        let dir = self.run_dir.join("intervals");
        std::fs::create_dir_all(&dir).context("create intervals directory")?;
        let rel = format!("intervals/{}.hlog", self.name);
        histogram::write_interval_log(
            &self.run_dir.join(&rel),
            record.start_wall,
            record
                .intervals
                .iter()
                .map(histogram::PackedInterval::unpack),
        )?;
        Ok(rel)
    }
}

/// Add a histogram to a result; the one named `latency` also becomes the headline summary.
pub fn add_histogram(
    result: &mut ScenarioResult,
    name: &str,
    description: &str,
    h: &Histogram<u64>,
) -> anyhow::Result<()> {
    let named = histogram::named(name, description, h)?;
    if name == "latency" {
        result.latency = Some(named.summary);
    }
    result.histograms.push(named);
    Ok(())
}

/// Fill a result from a measured phase: headline latency, send delay, accounting (refused
/// publishes are sent and lost; duplicates as the proof counted them), throughput, intervals
/// (summary points and the interval log), drain figures, per-kind counts and histograms
/// (`kind.<name>`, when the script has several kinds), per-hop histograms (`hop.<name>`, when the
/// phase had taps), and the notes that explain anything unusual.
pub fn fill_from_phase(
    ctx: &ScenarioContext,
    result: &mut ScenarioResult,
    outcome: &PhaseOutcome,
    latency_description: &str,
) -> anyhow::Result<()> {
    let r = &outcome.record;
    add_histogram(result, "latency", latency_description, &r.latency)?;
    add_histogram(
        result,
        "send_delay",
        "actual − intended send time (harness scheduling; latency already includes it)",
        &outcome.send.send_delay,
    )?;
    result.accounting = r.accounting(false);
    result.accounting.duplicated = r.duplicated + outcome.duplicate_events;
    result.throughput_per_s = r.throughput_per_s();
    result.intervals = r.interval_points();
    result.interval_log = Some(ctx.write_interval_log(r)?);
    result
        .metrics
        .insert("drain_ms".into(), outcome.drain_time.as_secs_f64() * 1e3);
    result
        .metrics
        .insert("elapsed_s".into(), outcome.elapsed.as_secs_f64());
    if outcome.send.errors > 0 {
        result
            .metrics
            .insert("refused_publishes".into(), outcome.send.errors as f64);
        result.notes.push(format!(
            "{} publishes were refused by the client; they were due by the schedule, so they count as sent and lost",
            outcome.send.errors
        ));
    }
    if r.unknown > 0 {
        result.notes.push(format!(
            "{} confirmations for ids this phase never sent were ignored",
            r.unknown
        ));
    }
    if r.rejected > 0 {
        result.notes.push(format!(
            "{} replies did not prove success and were not counted",
            r.rejected
        ));
        result
            .metrics
            .insert("rejected_replies".into(), r.rejected as f64);
        for e in &outcome.rejected_examples {
            result.notes.push(format!("a rejected reply: {e}"));
        }
    }
    if !outcome.drained {
        result.notes.push(format!(
            "{} of {} sent were not confirmed before the drain deadline",
            r.lost(),
            r.sent
        ));
    }
    if outcome.skipped_redeliveries > 0 {
        result.metrics.insert(
            "skipped_redeliveries".into(),
            outcome.skipped_redeliveries as f64,
        );
    }
    if outcome.extra_messages > 0 {
        result
            .metrics
            .insert("extra_messages".into(), outcome.extra_messages as f64);
    }
    if outcome.unexpected_events > 0 {
        result
            .metrics
            .insert("unexpected_events".into(), outcome.unexpected_events as f64);
        result.notes.push(format!(
            "{} database events carried our correlation ids beyond what the messages should cause",
            outcome.unexpected_events
        ));
    }
    if outcome.kinds.len() > 1 {
        for k in &outcome.kinds {
            result
                .metrics
                .insert(format!("kind.{}.sent", k.name), k.sent as f64);
            result
                .metrics
                .insert(format!("kind.{}.committed", k.name), k.committed as f64);
            if k.unproven_sent > 0 {
                result.metrics.insert(
                    format!("kind.{}.sent_without_db_effect", k.name),
                    k.unproven_sent as f64,
                );
            }
            if !k.latency.is_empty() {
                add_histogram(
                    result,
                    &format!("kind.{}", k.name),
                    &format!("{}: intended send time → its proof of delivery", k.name),
                    &k.latency,
                )?;
            }
        }
    }
    for hop in &outcome.hops {
        result
            .metrics
            .insert(format!("hop.{}.seen", hop.name), hop.seen as f64);
        if !hop.latency.is_empty() {
            add_histogram(
                result,
                &format!("hop.{}", hop.name),
                &hop.description,
                &hop.latency,
            )?;
        }
    }
    if !outcome.hops.is_empty() {
        result.notes.push(
            "hops are timed by a passive tap (a harness connection subscribed to the intermediate subjects); \
             each hop includes one NATS delivery to the tap"
                .into(),
        );
    }
    Ok(())
}

/// A floor a run's results need: the bare async-nats loop on `path` (`reply` or `notice`) at
/// `rate_per_s`, the rate the scenario offered.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorNeed {
    pub path: String,
    pub rate_per_s: f64,
}

/// The floors to measure after the scenarios, each once: one per (path, rate) of the results
/// that measured an open-loop, single-publisher latency on the `reply` or `notice` path. Bursts
/// and paths through the bot have no bare equivalent.
pub fn floors_needed(results: &[ScenarioResult]) -> Vec<FloorNeed> {
    let mut needs: Vec<FloorNeed> = Vec::new();
    for r in results {
        if let Some(n) = floor_need(r) {
            if !needs.contains(&n) {
                needs.push(n);
            }
        }
    }
    needs
}

fn floor_need(r: &ScenarioResult) -> Option<FloorNeed> {
    let path = r.proof_path.as_deref()?;
    let rate_per_s = r.load.target_rate_per_s?;
    (r.error.is_none()
        && r.latency.is_some_and(|l| l.count > 0)
        && r.load.model == "open_loop"
        && r.load.concurrency.unwrap_or(1) == 1
        && matches!(path, "reply" | "notice"))
    .then(|| FloorNeed {
        path: path.to_owned(),
        rate_per_s,
    })
}

/// Split every scenario's headline latency into floor + service cost: the floor is the bare
/// async-nats loop on the scenario's proof path at the scenario's own rate, measured in the same
/// run (`floors`, from [`floors_needed`]); `latency − floor` at p50 and p99 is what the service,
/// and everything behind it, costs. The floor's histogram is added to the result as `floor`. A
/// floor that could not be measured is said in a note, never guessed.
pub fn add_floor_split(
    results: &mut [ScenarioResult],
    floors: &[(FloorNeed, Result<crate::results::NamedHistogram, String>)],
) {
    for r in results.iter_mut() {
        let Some(need) = floor_need(r) else {
            continue;
        };
        let Some((_, floor)) = floors.iter().find(|(n, _)| *n == need) else {
            continue;
        };
        let floor = match floor {
            Ok(f) if f.summary.count > 0 => f,
            Ok(_) => {
                r.notes
                    .push("no floor + service cost: the bare loop recorded nothing".into());
                continue;
            }
            Err(e) => {
                r.notes.push(format!(
                    "no floor + service cost: measuring the floor failed: {e}"
                ));
                continue;
            }
        };
        let Some(latency) = r.latency else { continue };
        let ms = |ns: f64| ns / 1e6;
        let (f50, f99) = (floor.summary.p50_ns as f64, floor.summary.p99_ns as f64);
        let (l50, l99) = (latency.p50_ns as f64, latency.p99_ns as f64);
        r.metrics.insert("floor.p50_ms".into(), ms(f50));
        r.metrics.insert("floor.p99_ms".into(), ms(f99));
        r.metrics
            .insert("service_cost.p50_ms".into(), ms(l50 - f50));
        r.metrics
            .insert("service_cost.p99_ms".into(), ms(l99 - f99));
        r.notes.push(format!(
            "floor + service cost: p50 {:.3} + {:.3} ms, p99 {:.3} + {:.3} ms; the floor is a bare \
             async-nats loop on the {} path at {}/s ({} round trips through an in-harness stand-in \
             that answers at once), measured after the scenarios in this run",
            ms(f50),
            ms(l50 - f50),
            ms(f99),
            ms(l99 - f99),
            need.path,
            crate::report::view::trimmed(need.rate_per_s),
            floor.summary.count
        ));
        let mut h = floor.clone();
        h.name = "floor".into();
        r.histograms.push(h);
    }
}

/// The value of a target metric in a result:
///
/// * `<histogram>.<stat>_ms` with stat `min|mean|p50|p90|p99|p999|p9999|max`
///   (e.g. `latency.p99_ms`, `request_reply.p50_ms`);
/// * `throughput_per_s`;
/// * `accounting.sent|committed|lost|duplicated`;
/// * any key of `metrics`.
pub fn metric_value(result: &ScenarioResult, key: &str) -> Option<f64> {
    if key == "throughput_per_s" {
        return result.throughput_per_s;
    }
    if let Some(field) = key.strip_prefix("accounting.") {
        let a = &result.accounting;
        return match field {
            "sent" => Some(a.sent as f64),
            "committed" => Some(a.committed as f64),
            "lost" => Some(a.lost as f64),
            "duplicated" => Some(a.duplicated as f64),
            _ => None,
        };
    }
    if let Some(v) = result.metrics.get(key) {
        return Some(*v);
    }
    let (hist, stat) = key.rsplit_once('.')?;
    let stat = stat.strip_suffix("_ms")?;
    let h = result.histograms.iter().find(|h| h.name == hist)?;
    let s = &h.summary;
    if s.count == 0 {
        return None;
    }
    let ns = match stat {
        "min" => s.min_ns as f64,
        "mean" => s.mean_ns,
        "p50" => s.p50_ns as f64,
        "p90" => s.p90_ns as f64,
        "p99" => s.p99_ns as f64,
        "p999" => s.p999_ns as f64,
        "p9999" => s.p9999_ns as f64,
        "max" => s.max_ns as f64,
        _ => return None,
    };
    Some(ns / 1e6)
}

/// Suffixes of the metrics that hold a metric's 95 % interval: `<key>.ci95_low`, `<key>.ci95_high`.
pub const CI95_LOW: &str = "ci95_low";
pub const CI95_HIGH: &str = "ci95_high";

/// The 95 % interval of a metric, if the result reports one beside it (`<key>.ci95_low` and
/// `<key>.ci95_high` in `metrics`, both finite).
pub fn metric_interval(result: &ScenarioResult, key: &str) -> Option<[f64; 2]> {
    let low = *result.metrics.get(&format!("{key}.{CI95_LOW}"))?;
    let high = *result.metrics.get(&format!("{key}.{CI95_HIGH}"))?;
    (low.is_finite() && high.is_finite() && low <= high).then_some([low, high])
}

/// Unit of a metric key, from its suffix.
pub fn unit_of(key: &str) -> &'static str {
    if key.ends_with("_ms") {
        "ms"
    } else if key.ends_with("_per_s") {
        "/s"
    } else if key.ends_with("_pct") {
        "%"
    } else if key.ends_with("_ratio") {
        "×"
    } else {
        ""
    }
}

/// Events a percentile needs before a target on it can be judged: ten beyond it
/// (`10 / (1 − q)`): p90 100, p99 1,000, p99.9 10,000, p99.99 100,000. `None` for
/// anything else (means, extremes, counts).
pub fn events_needed(metric: &str) -> Option<u64> {
    let stat = metric.rsplit_once('.')?.1.strip_suffix("_ms")?;
    match stat {
        "p90" => Some(100),
        "p99" => Some(1_000),
        "p999" => Some(10_000),
        "p9999" => Some(100_000),
        _ => None,
    }
}

/// Events behind a histogram metric (`<histogram>.<stat>_ms`), if it is one.
fn histogram_events(result: &ScenarioResult, metric: &str) -> Option<u64> {
    let (hist, _) = metric.rsplit_once('.')?;
    result
        .histograms
        .iter()
        .find(|h| h.name == hist)
        .map(|h| h.summary.count)
}

/// Check every target against a result. A target whose metric is missing fails (a target that
/// cannot be checked is not met); a percentile target on too few events is marked with the
/// events it needs (neither met nor missed). A metric with a 95 % interval ([`metric_interval`])
/// is judged on the interval: met when all of it is on the right side of the threshold, missed
/// when all of it is on the wrong side, otherwise `inconclusive` (neither).
pub fn check_targets(specs: &[TargetSpec], result: &ScenarioResult) -> Vec<TargetCheck> {
    specs
        .iter()
        .map(|spec| {
            let actual = metric_value(result, &spec.metric).filter(|v| v.is_finite());
            let interval = actual.and(metric_interval(result, &spec.metric));
            let meets = |v: f64| spec.op.holds(v, spec.threshold);
            // The interval's end nearest the threshold's wrong side decides a pass, the other a
            // miss: for `<=` the high end must be below to pass, the low end above to miss.
            let (passed, inconclusive) = match (actual, interval) {
                (Some(_), Some([low, high])) => {
                    let (near, far) = if spec.op == Op::AtLeast {
                        (low, high)
                    } else {
                        (high, low)
                    };
                    (meets(near), !meets(near) && meets(far))
                }
                (Some(v), None) => (meets(v), false),
                (None, _) => (false, false),
            };
            let needs_events = match (
                events_needed(&spec.metric),
                histogram_events(result, &spec.metric),
            ) {
                (Some(need), Some(have)) if have < need => Some(need),
                _ => None,
            };
            TargetCheck {
                metric: spec.metric.clone(),
                op: spec.op.as_str().to_owned(),
                threshold: spec.threshold,
                unit: spec
                    .unit
                    .clone()
                    .unwrap_or_else(|| unit_of(&spec.metric).to_owned()),
                actual,
                passed: passed && needs_events.is_none(),
                source: spec.source.clone(),
                informational: spec.informational,
                needs_events,
                interval,
                inconclusive,
            }
        })
        .collect()
}

/// The harness-lag limit of a scenario in µs and where it comes from: its own
/// `send_delay_p99_max_us` if set, else the smaller of `[self_check]`'s absolute limit and its
/// fraction of the tightest latency target (`<histogram>.<stat>_ms <= x`, not informational).
pub fn lag_limit_us(
    self_check: &SelfCheckConfig,
    own: Option<f64>,
    specs: &[TargetSpec],
) -> (f64, String) {
    if let Some(us) = own {
        return (us, "the scenario's send_delay_p99_max_us".into());
    }
    let tightest = specs
        .iter()
        .filter(|t| {
            !t.informational
                && t.op == Op::AtMost
                && t.metric.ends_with("_ms")
                && t.metric.contains('.')
                && t.threshold > 0.0
        })
        .min_by(|a, b| a.threshold.total_cmp(&b.threshold));
    let absolute = self_check.send_delay_p99_max_us;
    match tightest {
        Some(t) if t.threshold * 1e3 * self_check.send_delay_target_fraction < absolute => (
            t.threshold * 1e3 * self_check.send_delay_target_fraction,
            format!(
                "{} % of {} <= {} ms",
                self_check.send_delay_target_fraction * 100.0,
                t.metric,
                t.threshold
            ),
        ),
        _ => (absolute, "[self_check] send_delay_p99_max_us".into()),
    }
}

/// Judge the harness's own schedule from the result's `send_delay` histogram, or from the load
/// worker that kept its schedule worst when that is later (bursts, which intend everything at
/// once, and results without senders are not judged).
pub fn judge_lag(result: &ScenarioResult, limit_us: f64, source: String) -> Option<HarnessLag> {
    if result.load.model == "burst" {
        return None;
    }
    let h = result.histograms.iter().find(|h| h.name == "send_delay")?;
    if h.summary.count == 0 {
        return None;
    }
    let p99_us = result
        .workers
        .iter()
        .map(|w| w.send_delay_p99_us)
        .fold(h.summary.p99_ns as f64 / 1e3, f64::max);
    Some(HarnessLag {
        send_delay_p99_us: p99_us,
        limit_us,
        limit_source: source,
        within: p99_us <= limit_us,
        machine_wake_p99_us: None,
    })
}

/// The verdict of a result whose targets and schedule have been checked (see the module
/// documentation for the order of the rules).
pub fn verdict(result: &ScenarioResult) -> Verdict {
    if result.error.is_some() {
        return Verdict::Error;
    }
    if result.harness_lag.as_ref().is_some_and(|l| !l.within) {
        return Verdict::Invalid;
    }
    let a = &result.accounting;
    if !a.loss_expected && (a.lost > 0 || a.duplicated > 0) {
        return Verdict::Fail;
    }
    if result.targets.iter().any(TargetCheck::missed) {
        return Verdict::Fail;
    }
    if result.targets.iter().any(TargetCheck::insufficient) {
        return Verdict::InsufficientData;
    }
    Verdict::Pass
}

/// Validate target specs up front (the operator is checked when the configuration is read), so
/// a typo is a configuration error, not a fail.
pub fn validate_targets(specs: &[TargetSpec]) -> anyhow::Result<()> {
    for t in specs {
        anyhow::ensure!(
            t.threshold.is_finite(),
            "target {}: threshold must be finite",
            t.metric
        );
    }
    Ok(())
}

/// Deadlines a second of the wake-up probe beside every scenario (no spin: cheap).
const MACHINE_PROBE_RATE_PER_S: f64 = 200.0;

/// Run one scenario and judge it. Never fails: a failure to measure becomes an `error` result.
pub async fn run_scenario(def: &ScenarioDef, ctx: &ScenarioContext) -> ScenarioResult {
    // The machine's own scheduling noise over the same time, so a harness-lag verdict says
    // whether the machine itself was late too.
    let probe = crate::bare::WakeProbe::start(MACHINE_PROBE_RATE_PER_S);
    let outcome = match validate_targets(&ctx.table.targets) {
        Ok(()) => (def.run)(ctx).await,
        Err(e) => Err(e),
    };
    let machine_wake_p99_us = match probe {
        Ok(p) => p
            .finish()
            .await
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.99) as f64 / 1e3),
        Err(_) => None,
    };
    let mut result = match outcome {
        Ok(r) => r,
        Err(e) => {
            let mut r = ctx.result(LoadInfo {
                model: "none".into(),
                target_rate_per_s: None,
                duration_s: 0.0,
                warmup_s: 0.0,
                concurrency: None,
                payload_bytes: None,
            });
            r.error = Some(format!("{e:#}"));
            r
        }
    };
    result.name = def.name.to_owned();
    result.title = def.title.to_owned();
    result.description = def.description.to_owned();
    result.config = ctx.config_json.clone();
    if result.error.is_none() {
        result.targets = check_targets(&ctx.table.targets, &result);
        let (limit, source) = lag_limit_us(
            &ctx.self_check,
            ctx.table.send_delay_p99_max_us,
            &ctx.table.targets,
        );
        result.harness_lag = judge_lag(&result, limit, source).map(|lag| HarnessLag {
            machine_wake_p99_us,
            ..lag
        });
    }
    result.verdict = verdict(&result);
    result
}

/// Shared by the scenario tests: a result with nothing measured.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    pub fn empty_result() -> ScenarioResult {
        ScenarioResult {
            name: "x".into(),
            title: "X".into(),
            description: String::new(),
            load: LoadInfo {
                model: "open_loop".into(),
                target_rate_per_s: None,
                duration_s: 1.0,
                warmup_s: 0.0,
                concurrency: None,
                payload_bytes: None,
            },
            config: serde_json::Value::Null,
            latency: None,
            histograms: vec![],
            throughput_per_s: None,
            accounting: Default::default(),
            resources: vec![],
            metrics: BTreeMap::new(),
            targets: vec![],
            proof_path: None,
            curve: Vec::new(),
            workers: Vec::new(),
            faults: Vec::new(),
            windows: Vec::new(),
            harness_lag: None,
            verdict: Verdict::Skipped,
            intervals: vec![],
            resource_timeline: vec![],
            interval_log: None,
            error: None,
            notes: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Accounting, LatencySummary, NamedHistogram};

    fn result() -> ScenarioResult {
        ScenarioResult {
            name: "x".into(),
            title: "X".into(),
            description: String::new(),
            load: LoadInfo {
                model: "open_loop".into(),
                target_rate_per_s: Some(100.0),
                duration_s: 1.0,
                warmup_s: 0.0,
                concurrency: None,
                payload_bytes: None,
            },
            config: serde_json::Value::Null,
            latency: None,
            histograms: vec![NamedHistogram {
                name: "latency".into(),
                description: String::new(),
                summary: LatencySummary {
                    count: 1_000,
                    p50_ns: 1_000_000,
                    p99_ns: 4_000_000,
                    mean_ns: 1_500_000.0,
                    ..Default::default()
                },
                encoded: String::new(),
            }],
            throughput_per_s: Some(150.0),
            accounting: Accounting {
                sent: 10,
                committed: 10,
                ..Default::default()
            },
            resources: vec![],
            metrics: BTreeMap::from([("error_pct".to_owned(), -3.0)]),
            targets: vec![],
            proof_path: None,
            curve: Vec::new(),
            workers: Vec::new(),
            faults: Vec::new(),
            windows: Vec::new(),
            harness_lag: None,
            verdict: Verdict::Skipped,
            intervals: vec![],
            resource_timeline: vec![],
            interval_log: None,
            error: None,
            notes: vec![],
        }
    }

    fn spec(metric: &str, op: &str, threshold: f64) -> TargetSpec {
        TargetSpec {
            metric: metric.into(),
            op: match op {
                "<=" => Op::AtMost,
                _ => Op::AtLeast,
            },
            threshold,
            unit: None,
            source: String::new(),
            informational: false,
        }
    }

    fn with_send_delay(r: &mut ScenarioResult, p99_us: u64) {
        r.histograms.push(NamedHistogram {
            name: "send_delay".into(),
            description: String::new(),
            summary: LatencySummary {
                count: 10,
                p99_ns: p99_us * 1000,
                ..Default::default()
            },
            encoded: String::new(),
        });
    }

    #[test]
    fn service_results_are_split_into_floor_and_service_cost() {
        let mut single = result();
        single.name = "single".into();
        single.proof_path = Some("notice".into());
        single.load.model = "open_loop".into();
        single.load.target_rate_per_s = Some(200.0);
        single.latency = Some(LatencySummary {
            count: 1_000,
            p50_ns: 1_250_000,
            p99_ns: 2_600_000,
            ..Default::default()
        });
        let mut same_rate = single.clone();
        same_rate.name = "same".into();
        let mut other_rate = single.clone();
        other_rate.load.target_rate_per_s = Some(100.0);
        let mut via_bot = single.clone();
        via_bot.proof_path = Some("via_bot".into());
        let mut bursts = single.clone();
        bursts.load.concurrency = Some(50);
        let mut results = vec![single, same_rate, other_rate, via_bot, bursts];
        let needs = floors_needed(&results);
        assert_eq!(
            needs,
            [
                FloorNeed {
                    path: "notice".into(),
                    rate_per_s: 200.0
                },
                FloorNeed {
                    path: "notice".into(),
                    rate_per_s: 100.0
                }
            ],
            "one floor per path and rate; none through the bot or for bursts"
        );
        let floor = NamedHistogram {
            name: "whatever".into(),
            description: String::new(),
            summary: LatencySummary {
                count: 1_000,
                p50_ns: 250_000,
                p99_ns: 600_000,
                ..Default::default()
            },
            encoded: String::new(),
        };
        let floors = vec![
            (needs[0].clone(), Ok(floor)),
            (needs[1].clone(), Err("no answer".to_owned())),
        ];
        add_floor_split(&mut results, &floors);
        for r in &results[..2] {
            let m = &r.metrics;
            assert!((m["floor.p50_ms"] - 0.25).abs() < 1e-9);
            assert!((m["service_cost.p50_ms"] - 1.0).abs() < 1e-9);
            assert!((m["service_cost.p99_ms"] - 2.0).abs() < 1e-9);
            assert!(r.histograms.iter().any(|h| h.name == "floor"));
        }
        // The floor at another rate is never borrowed; its failure is said.
        assert!(!results[2].metrics.contains_key("floor.p50_ms"));
        assert!(results[2].notes.iter().any(|n| n.contains("no answer")));
        for r in &results[3..] {
            assert!(!r.metrics.contains_key("floor.p50_ms"), "{}", r.name);
        }
    }

    #[test]
    fn percentile_targets_need_enough_events() {
        assert_eq!(events_needed("latency.p99_ms"), Some(1_000));
        assert_eq!(events_needed("kind.message.p999_ms"), Some(10_000));
        assert_eq!(events_needed("latency.p50_ms"), None);
        assert_eq!(events_needed("latency.mean_ms"), None);
        assert_eq!(events_needed("throughput_per_s"), None);
        let mut r = result();
        r.histograms[0].summary.count = 10;
        r.targets = check_targets(
            &[
                spec("latency.p99_ms", "<=", 5.0),
                spec("latency.mean_ms", "<=", 5.0),
            ],
            &r,
        );
        assert_eq!(r.targets[0].needs_events, Some(1_000));
        assert!(!r.targets[0].passed && !r.targets[0].missed());
        assert!(r.targets[1].passed);
        assert_eq!(verdict(&r), Verdict::InsufficientData, "not a pass");
        // A missed target still fails, whatever else lacks data.
        r.targets = check_targets(
            &[
                spec("latency.p99_ms", "<=", 5.0),
                spec("latency.mean_ms", "<=", 1.0),
            ],
            &r,
        );
        assert_eq!(verdict(&r), Verdict::Fail);
        // Enough events: judged as usual.
        r.histograms[0].summary.count = 1_000;
        r.targets = check_targets(&[spec("latency.p99_ms", "<=", 5.0)], &r);
        assert_eq!(r.targets[0].needs_events, None);
        assert_eq!(verdict(&r), Verdict::Pass);
    }

    #[test]
    fn a_target_with_an_interval_is_judged_on_it() {
        let mut r = result();
        let slope = "rss_slope_mb_per_hour.bot";
        let with = |r: &mut ScenarioResult, v: f64, low: f64, high: f64| {
            r.metrics.insert(slope.into(), v);
            r.metrics.insert(format!("{slope}.ci95_low"), low);
            r.metrics.insert(format!("{slope}.ci95_high"), high);
        };
        let target = [spec(slope, "<=", 50.0)];
        // The whole interval below the threshold: met.
        with(&mut r, 10.0, -5.0, 30.0);
        r.targets = check_targets(&target, &r);
        assert!(
            r.targets[0].passed && !r.targets[0].inconclusive,
            "{:?}",
            r.targets
        );
        assert_eq!(r.targets[0].interval, Some([-5.0, 30.0]));
        assert_eq!(verdict(&r), Verdict::Pass);
        // Straddling: the estimate passes, but the verdict is not a pass.
        with(&mut r, 40.0, 20.0, 70.0);
        r.targets = check_targets(&target, &r);
        assert!(!r.targets[0].passed && r.targets[0].inconclusive);
        assert!(r.targets[0].insufficient() && !r.targets[0].missed());
        assert_eq!(verdict(&r), Verdict::InsufficientData);
        // The estimate misses but the interval reaches below: still inconclusive, not a fail.
        with(&mut r, 60.0, 45.0, 80.0);
        r.targets = check_targets(&target, &r);
        assert_eq!(verdict(&r), Verdict::InsufficientData);
        // The whole interval above: missed.
        with(&mut r, 90.0, 60.0, 120.0);
        r.targets = check_targets(&target, &r);
        assert!(r.targets[0].missed() && !r.targets[0].inconclusive);
        assert_eq!(verdict(&r), Verdict::Fail);
        // `>=` mirrors it.
        r.targets = check_targets(&[spec(slope, ">=", 50.0)], &r);
        assert!(r.targets[0].passed);
        with(&mut r, 60.0, 45.0, 80.0);
        r.targets = check_targets(&[spec(slope, ">=", 50.0)], &r);
        assert!(r.targets[0].inconclusive);
        // An informational target straddling is reported, never decisive.
        let mut info = spec(slope, "<=", 50.0);
        info.informational = true;
        r.targets = check_targets(&[info], &r);
        assert!(r.targets[0].inconclusive && !r.targets[0].insufficient());
        assert_eq!(verdict(&r), Verdict::Pass);
        // No interval (or half of one): the point estimate, as before.
        r.metrics.remove(&format!("{slope}.ci95_high"));
        assert_eq!(metric_interval(&r, slope), None);
        r.targets = check_targets(&target, &r);
        assert!(r.targets[0].missed() && r.targets[0].interval.is_none());
    }

    #[test]
    fn harness_lag_makes_a_result_invalid() {
        let cfg = SelfCheckConfig::default();
        // The tightest latency target is 2 ms: 10 % of it (200 µs) is below the 500 µs cap.
        let specs = [
            spec("latency.p99_ms", "<=", 10.0),
            spec("latency.p50_ms", "<=", 2.0),
            spec("throughput_per_s", ">=", 100.0),
        ];
        let (limit, source) = lag_limit_us(&cfg, None, &specs);
        assert!((limit - 200.0).abs() < 1e-9, "{limit}");
        assert!(source.contains("latency.p50_ms"), "{source}");
        assert_eq!(lag_limit_us(&cfg, None, &specs[2..]).0, 500.0);
        assert_eq!(lag_limit_us(&cfg, Some(50.0), &specs).0, 50.0);

        let mut r = result();
        with_send_delay(&mut r, 150);
        r.harness_lag = judge_lag(&r, limit, source.clone());
        assert!(r.harness_lag.as_ref().unwrap().within);
        assert_eq!(verdict(&r), Verdict::Pass);

        // Over load workers, the one that kept its schedule worst decides: one lagging worker of
        // three can hide below the merged p99.
        let worker = |p99: f64| crate::workers::WorkerFigures {
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            sent: 10,
            committed: 10,
            lost: 0,
            duplicated: 0,
            send_delay_p99_us: p99,
            latency_p50_us: None,
            latency_p99_us: None,
        };
        r.workers = vec![worker(100.0), worker(350.0)];
        let lag = judge_lag(&r, limit, source.clone()).unwrap();
        assert_eq!((lag.send_delay_p99_us, lag.within), (350.0, false));

        let mut r = result();
        with_send_delay(&mut r, 900);
        r.harness_lag = judge_lag(&r, limit, source.clone());
        assert_eq!(verdict(&r), Verdict::Invalid);
        // Never a pass or a fail: lost events and missed targets do not change that.
        r.accounting.lost = 3;
        r.targets = check_targets(&[spec("latency.p99_ms", "<=", 1.0)], &r);
        assert_eq!(verdict(&r), Verdict::Invalid);
        // An error still wins.
        r.error = Some("x".into());
        assert_eq!(verdict(&r), Verdict::Error);

        // Bursts intend everything at once: their send delay is the burst, not lag.
        let mut r = result();
        r.load.model = "burst".into();
        with_send_delay(&mut r, 90_000);
        assert!(judge_lag(&r, limit, source).is_none());
    }

    #[test]
    fn metric_lookup() {
        let r = result();
        assert_eq!(metric_value(&r, "latency.p99_ms"), Some(4.0));
        assert_eq!(metric_value(&r, "latency.mean_ms"), Some(1.5));
        assert_eq!(metric_value(&r, "throughput_per_s"), Some(150.0));
        assert_eq!(metric_value(&r, "accounting.committed"), Some(10.0));
        assert_eq!(metric_value(&r, "error_pct"), Some(-3.0));
        assert_eq!(metric_value(&r, "latency.p42_ms"), None);
        assert_eq!(metric_value(&r, "nothing.p99_ms"), None);
        assert_eq!(metric_value(&r, "nothing"), None);
    }

    #[test]
    fn targets_pass_fail_and_missing() {
        let r = result();
        let checks = check_targets(
            &[
                spec("latency.p99_ms", "<=", 5.0),
                spec("latency.p99_ms", "<=", 3.9),
                spec("throughput_per_s", ">=", 100.0),
                spec("throughput_per_s", ">=", 150.1),
                spec("missing_metric", "<=", 1.0),
            ],
            &r,
        );
        let passed: Vec<bool> = checks.iter().map(|c| c.passed).collect();
        assert_eq!(passed, [true, false, true, false, false]);
        assert_eq!(checks[0].unit, "ms");
        assert_eq!(checks[2].unit, "/s");
        assert_eq!(checks[4].actual, None);
        // A typo in the operator is refused when the configuration is read.
        let typo: toml::Table = "targets = [{ metric = \"a\", op = \"<\", threshold = 1.0 }]"
            .parse()
            .unwrap();
        assert!(ScenarioTable::from_table(&typo).is_err());
        assert!(validate_targets(&[spec("a", ">=", f64::NAN)]).is_err());
    }

    #[test]
    fn verdict_rules() {
        let mut r = result();
        assert_eq!(verdict(&r), Verdict::Pass);

        r.targets = check_targets(&[spec("latency.p99_ms", "<=", 1.0)], &r);
        assert_eq!(verdict(&r), Verdict::Fail, "a missed target fails");
        let mut info = spec("latency.p99_ms", "<=", 1.0);
        info.informational = true;
        r.targets = check_targets(&[info], &r);
        assert!(
            !r.targets[0].passed,
            "an informational target is still checked"
        );
        assert_eq!(verdict(&r), Verdict::Pass, "but a missed one does not fail");
        r.targets.clear();

        r.accounting.lost = 1;
        assert_eq!(verdict(&r), Verdict::Fail, "unexpected loss fails");
        r.accounting.loss_expected = true;
        assert_eq!(
            verdict(&r),
            Verdict::Pass,
            "loss is reported, not failed, where expected"
        );
        r.accounting = Accounting {
            sent: 10,
            committed: 10,
            duplicated: 2,
            ..Default::default()
        };
        assert_eq!(verdict(&r), Verdict::Fail, "unexpected duplicates fail");
        r.accounting.duplicated = 0;

        r.error = Some("nats went away".into());
        assert_eq!(verdict(&r), Verdict::Error, "an error wins over everything");
    }
}
