//! One bench run end to end: load the configuration, provision NATS, start the services under
//! test, run the selected scenarios, write `<run_dir>/results.json`, and say how it went.
//!
//! [`run_bench`] is the library entry point `cargo xtask bench` calls. The service binaries are
//! a parameter ([`ServiceBinaries`]) so the regression gate can run interleaved A/B rounds with
//! two builds. Exit codes: [`exit::OK`], [`exit::TARGET_MISSED_OR_REGRESSED`] (a target missed or events lost
//! unexpectedly), [`exit::HARNESS_ERROR`] (the harness could not measure something).

use crate::config::{BenchConfig, ScenarioTable};
use crate::exit;
use crate::provision::{self, NatsChoice};
use crate::results::{RunResults, ScenarioResult, Verdict, RESULTS_FILE, SCHEMA_VERSION};
use crate::sampler::Sampler;
use crate::scenario::{run_scenario, ScenarioContext, ScenarioDef};
use crate::services::{ServiceBinaries, Services, ServicesSpec};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Which services the run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesUnderTest {
    /// Start these binaries as child processes (the normal case; A/B rounds pass two builds).
    Spawn(ServiceBinaries),
    /// A database service is already running on the NATS server (in-process in tests, or a
    /// deployment); the harness only measures it.
    AlreadyRunning,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub services: ServicesUnderTest,
    pub nats: NatsChoice,
    /// Scenario names to run; empty: every scenario enabled in the configuration.
    pub scenarios: Vec<String>,
    /// `quick`, `default` or `soak`.
    pub profile: String,
    pub config_path: PathBuf,
    /// The run directory; `None`: `<runs_dir>/<run_id>`.
    pub out: Option<PathBuf>,
    /// Parent of generated run directories (`reports/runs`).
    pub runs_dir: PathBuf,
    pub seed: u64,
    /// Draw progress bars (off in tests and when stderr is not a terminal).
    pub progress: bool,
    /// Where status lines go ("bench: run …", one line per scenario) when no progress bars are
    /// drawn: the library does not print, its caller decides (`cargo xtask` writes them to stderr).
    pub status: fn(&str),
    /// `RUST_LOG` of the services the run starts (`cargo xtask bench --service-log`).
    pub service_log: String,
    /// Load workers (`--workers`, `--remote-workers`); none: this process offers the load.
    pub workers: crate::workers::WorkerSource,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    pub run_dir: PathBuf,
    pub results: RunResults,
    pub exit_code: u8,
}

/// Everything that keeps a run from passing, each on its own ([`exit::Finding`]): the run's
/// harness errors, a scenario that errored or lost its schedule (`invalid (harness lag)`), and
/// for each failed scenario its unexpected loss or duplication and every missed target.
pub fn findings(results: &RunResults) -> Vec<exit::Finding> {
    let mut out: Vec<exit::Finding> = results
        .harness_errors
        .iter()
        .map(|e| exit::Finding::HarnessError { detail: e.clone() })
        .collect();
    for s in &results.scenarios {
        match s.verdict {
            Verdict::Error => out.push(exit::Finding::HarnessError {
                detail: format!(
                    "{}: {}",
                    s.name,
                    s.error.as_deref().unwrap_or("scenario error")
                ),
            }),
            Verdict::Invalid => out.push(exit::Finding::HarnessLag {
                scenario: s.name.clone(),
                detail: s.harness_lag.as_ref().map_or_else(String::new, |l| {
                    let machine = l
                        .machine_wake_p99_us
                        .map_or_else(String::new, |m| format!(", machine wake-up p99 {m:.0} µs"));
                    format!(
                        "send delay p99 {:.0} µs over its limit {:.0} µs{machine}",
                        l.send_delay_p99_us, l.limit_us
                    )
                }),
            }),
            _ => {}
        }
        if s.verdict != Verdict::Fail {
            continue;
        }
        let a = &s.accounting;
        if !a.loss_expected && (a.lost > 0 || a.duplicated > 0) {
            out.push(exit::Finding::LostEvents {
                scenario: s.name.clone(),
                detail: format!(
                    "lost {} and duplicated {} of {} sent",
                    a.lost, a.duplicated, a.sent
                ),
            });
        }
        let before = out.len();
        for t in s.targets.iter().filter(|t| t.missed()) {
            out.push(exit::Finding::MissedTarget {
                scenario: s.name.clone(),
                detail: target_line(t),
            });
        }
        // A failed verdict always says why (results written by another version might not).
        if s.verdict == Verdict::Fail && out.len() == before {
            out.push(exit::Finding::MissedTarget {
                scenario: s.name.clone(),
                detail: "scenario failed".into(),
            });
        }
    }
    out
}

/// `latency.p99_ms <= 5 ms`: a target without its actual value.
pub fn target_text(t: &crate::results::TargetCheck) -> String {
    format!("{} {} {} {}", t.metric, t.op, t.threshold, t.unit)
        .trim_end()
        .to_owned()
}

/// `latency.p99_ms <= 5 ms (actual 6.2)`.
pub fn target_line(t: &crate::results::TargetCheck) -> String {
    let mut line = target_text(t);
    if let Some(actual) = t.actual {
        line.push_str(&format!(" (actual {actual:.3})"));
    }
    line
}

/// The exit code a set of results deserves, by the one rule ([`exit::code`]).
pub fn exit_code(results: &RunResults) -> u8 {
    exit::code(&findings(results))
}

/// The scenarios to run, in table order, with their configuration; unknown names are errors.
pub fn select(
    all: &[ScenarioDef],
    config: &BenchConfig,
    requested: &[String],
) -> anyhow::Result<Vec<(ScenarioDef, ScenarioTable)>> {
    for name in requested {
        if !all.iter().any(|d| d.name == name) {
            let names: Vec<&str> = all.iter().map(|d| d.name).collect();
            anyhow::bail!("unknown scenario {name:?} (known: {})", names.join(", "));
        }
    }
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for def in all {
        if !requested.is_empty() && !requested.iter().any(|r| r == def.name) {
            continue;
        }
        let table = config.scenarios.get(def.name).with_context(|| {
            format!(
                "no [scenarios.{}] table in the bench configuration",
                def.name
            )
        })?;
        let table = ScenarioTable::from_table(table)
            .with_context(|| format!("[scenarios.{}]", def.name))?;
        // Every parameter is checked before anything starts, not minutes into the run.
        if table.enabled {
            if let Err(e) = (def.check)(&table) {
                bad.push(format!("[scenarios.{}]: {e:#}", def.name));
            }
        }
        out.push((*def, table));
    }
    if !bad.is_empty() {
        anyhow::bail!(
            "the bench configuration is not usable:\n  {}",
            bad.join("\n  ")
        );
    }
    Ok(out)
}

/// Run the bench. Errors only when nothing could be measured at all (bad configuration, no
/// NATS); failures after that are recorded in the results as harness errors.
pub fn run_bench(opts: BenchOptions) -> anyhow::Result<BenchOutcome> {
    let config = BenchConfig::load(&opts.config_path, &opts.profile)?;
    let selected = select(&crate::scenarios::all(), &config, &opts.scenarios)?;
    let started = chrono::Utc::now();
    let run_id = format!("{}-{}", started.format("%Y%m%dT%H%M%SZ"), short_revision());
    let run_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.runs_dir.join(&run_id));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("create run directory {}", run_dir.display()))?;
    (opts.status)(&format!(
        "bench: run {run_id} ({} profile) → {}",
        opts.profile,
        run_dir.display()
    ));

    // Provisioning may run its own runtime (containers), so it happens outside ours.
    let nats = provision::provision(&opts.nats, &run_dir).context("provision nats")?;
    (opts.status)(&format!(
        "bench: nats {} {} at {}",
        nats.info.kind, nats.info.server_version, nats.url
    ));
    let mut environment =
        crate::env::collect(&nats.info, &config.to_json(), opts.seed, &opts.profile);
    environment.load_generators = opts.workers.describe();
    // Workers on this host, before the runtime (the docker CLI is synchronous); dropped after
    // the scenarios, which keeps their logs and removes them whatever happened.
    let local_workers = start_local_workers(&opts, &nats.url, &run_id, &run_dir)?;
    let worker_processes = local_workers.pids();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    let (scenarios, harness_errors) = runtime.block_on(run_scenarios(
        &opts,
        &config,
        &selected,
        Site {
            nats_url: &nats.url,
            nats_pid: nats.pid,
            nats_control: nats.control(),
            cluster: nats.cluster(),
            run_dir: &run_dir,
            run_id: &run_id,
            worker_processes,
        },
    ));
    drop(runtime);
    drop(local_workers);
    drop(nats);

    let results = RunResults {
        schema_version: SCHEMA_VERSION,
        run_id,
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        profile: opts.profile.clone(),
        environment,
        scenarios,
        harness_errors,
    };
    write_results(&run_dir, &results)?;
    let exit_code = exit_code(&results);
    Ok(BenchOutcome {
        run_dir,
        results,
        exit_code,
    })
}

/// Write `<run_dir>/results.json`.
pub fn write_results(run_dir: &Path, results: &RunResults) -> anyhow::Result<()> {
    let path = run_dir.join(RESULTS_FILE);
    let text = serde_json::to_string_pretty(results).context("serialize results")?;
    crate::files::write_atomic(&path, text)
}

/// Where a run's scenarios run: its NATS server, its directory and id, its workers' processes.
struct Site<'a> {
    nats_url: &'a str,
    nats_pid: Option<u32>,
    nats_control: Option<crate::provision::NatsControl>,
    cluster: Option<crate::cluster::ClusterControl>,
    run_dir: &'a Path,
    run_id: &'a str,
    /// The load workers started on this host (sampled with the other processes).
    worker_processes: Vec<(String, u32)>,
}

async fn run_scenarios(
    opts: &BenchOptions,
    config: &BenchConfig,
    selected: &[(ScenarioDef, ScenarioTable)],
    site: Site<'_>,
) -> (Vec<ScenarioResult>, Vec<String>) {
    let Site {
        nats_url,
        nats_pid,
        nats_control,
        cluster,
        run_dir,
        run_id,
        worker_processes,
    } = site;
    let mut harness_errors = Vec::new();
    let client = match crate::load::connect(nats_url, "bench-harness").await {
        Ok(c) => c,
        Err(e) => return (Vec::new(), vec![format!("{e:#}")]),
    };
    let progress = indicatif::MultiProgress::new();
    if !opts.progress {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut base = vec![("harness".to_owned(), std::process::id())];
    if let Some(pid) = nats_pid {
        base.push(("nats-server".to_owned(), pid));
    }
    if let Some(c) = &cluster {
        base.extend(c.pids());
    }
    let sampler = Arc::new(Sampler::spawn(
        base,
        Duration::from_millis(config.services.sample_interval_ms),
    ));

    let needs_services = selected.iter().any(|(d, t)| d.needs_services && t.enabled);
    let services = if needs_services {
        let s = &config.services;
        let started = async {
            match &opts.services {
                ServicesUnderTest::Spawn(binaries) => {
                    std::fs::create_dir_all(run_dir.join("db"))
                        .context("create database directory")?;
                    let spec = ServicesSpec {
                        binaries: binaries.clone(),
                        nats_url: nats_url.to_owned(),
                        run_dir: run_dir.to_owned(),
                        db_path: run_dir.join("db").join("rosey-bench.db"),
                        mode: s.dbservice_mode.as_str().to_owned(),
                        start_bot: s.start_bot,
                        bot_channel: s.bot_channel.clone(),
                        ready_timeout: Duration::from_secs_f64(s.ready_timeout_s),
                        stop_timeout: Duration::from_secs_f64(s.stop_timeout_s),
                        dbservice_args: {
                            let mut args = s.dbservice_args.clone();
                            // On a cluster the durable stream survives a node: a replica per node.
                            if cluster.is_some() {
                                args.extend([
                                    "--stream-replicas".to_owned(),
                                    crate::cluster::NODES.to_string(),
                                ]);
                            }
                            args
                        },
                        bot_args: s.bot_args.clone(),
                        log_filter: opts.service_log.clone(),
                    };
                    Services::start(spec, client.clone()).await
                }
                ServicesUnderTest::AlreadyRunning => {
                    Services::attach(
                        client.clone(),
                        run_dir,
                        Duration::from_secs_f64(s.ready_timeout_s),
                    )
                    .await
                }
            }
        };
        match started.await {
            Ok(s) => {
                say(
                    &progress,
                    opts,
                    format!(
                        "bench: services ready ({})",
                        s.pids()
                            .iter()
                            .map(|(n, p)| format!("{n} pid {p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                Some(Arc::new(tokio::sync::Mutex::new(s)))
            }
            Err(e) => {
                harness_errors.push(format!("starting the services under test: {e:#}"));
                None
            }
        }
    } else {
        None
    };

    // Without the workers the run asked for, nothing is measured (the load would not be what
    // the user asked for), but the services still stop as after any run.
    let (workers, selected) = match gather_workers(opts, &client, nats_url, run_id, &progress).await
    {
        Ok(w) => (
            w.map(|w| Arc::new(w.with_processes(worker_processes))),
            selected,
        ),
        Err(e) => {
            harness_errors.push(format!("{e:#}"));
            (None, &[][..])
        }
    };

    let mut results = Vec::new();
    for (def, table) in selected {
        if !table.enabled {
            let mut skipped = skipped_result(def, table, config);
            skipped
                .notes
                .push(format!("disabled in the {} profile", opts.profile));
            results.push(skipped);
            continue;
        }
        if cluster.is_none() && crate::scenarios::cluster_faults::NEEDS_CLUSTER.contains(&def.name)
        {
            let mut skipped = skipped_result(def, table, config);
            skipped.notes.push(format!(
                "needs a NATS cluster: run `cargo xtask bench --nats cluster --scenario {}`",
                def.name
            ));
            results.push(skipped);
            continue;
        }
        if nats_control.is_none()
            && crate::scenarios::service_restart::NEEDS_LOCAL_NATS.contains(&def.name)
        {
            let mut skipped = skipped_result(def, table, config);
            skipped.notes.push(format!(
                "stops and starts nats-server, which the harness can only do with a server it runs \
                 itself: run it with --nats local (`cargo xtask bench --nats local --scenario {}`)",
                def.name
            ));
            results.push(skipped);
            continue;
        }
        let ctx = ScenarioContext {
            name: def.name,
            title: def.title,
            description: def.description,
            nats_url: nats_url.to_owned(),
            client: client.clone(),
            services: services.clone(),
            sampler: sampler.clone(),
            nats_pid,
            nats_control: nats_control.clone(),
            cluster: cluster.clone(),
            run_dir: run_dir.to_owned(),
            profile: opts.profile.clone(),
            seed: opts.seed,
            table: table.clone(),
            self_check: config.self_check.clone(),
            config_json: serde_json::to_value(config.scenarios.get(def.name)).unwrap_or_default(),
            progress: progress.clone(),
            workers: workers.clone(),
        };
        say(&progress, opts, format!("bench: {} …", def.name));
        let started = std::time::Instant::now();
        let result = run_scenario(def, &ctx).await;
        say(
            &progress,
            opts,
            format!(
                "bench: {} {} in {:.1} s",
                def.name,
                verdict_label(result.verdict),
                started.elapsed().as_secs_f64()
            ),
        );
        if let Some(e) = &result.error {
            say(&progress, opts, format!("bench:   error: {e}"));
        }
        results.push(result);
    }
    let floors = measure_floors(
        nats_url,
        &crate::scenario::floors_needed(&results),
        config.self_check.floor_events,
        opts,
        &progress,
    )
    .await;
    crate::scenario::add_floor_split(&mut results, &floors);

    if let Some(services) = services {
        match Arc::try_unwrap(services) {
            Ok(services) => {
                let services = services.into_inner();
                let managed = services.managed();
                if let Err(e) = services.shutdown().await {
                    harness_errors.push(format!("{e:#}"));
                }
                // The database is scratch; the logs are kept.
                if managed {
                    let _ = std::fs::remove_dir_all(run_dir.join("db"));
                }
            }
            Err(_) => {
                harness_errors.push("the services were still in use at the end of the run".into())
            }
        }
    }
    if let Some(w) = workers {
        w.dismiss().await;
    }
    drop(sampler);
    let _ = client.drain().await;
    (results, harness_errors)
}

/// The run's load workers, once all of them joined (none when the run has none).
async fn gather_workers(
    opts: &BenchOptions,
    client: &async_nats::Client,
    nats_url: &str,
    run_id: &str,
    progress: &indicatif::MultiProgress,
) -> anyhow::Result<Option<crate::workers::Workers>> {
    use crate::workers::WorkerSource;
    let (count, timeout) = match &opts.workers {
        WorkerSource::None => return Ok(None),
        WorkerSource::Containers { count, .. } | WorkerSource::Processes { count, .. } => {
            (*count, WORKERS_JOIN_LOCAL)
        }
        WorkerSource::Remote { count } => (*count, WORKERS_JOIN_REMOTE),
    };
    say(
        progress,
        opts,
        format!(
            "bench: waiting for {count} load workers to join run {run_id}{}",
            match &opts.workers {
                WorkerSource::Remote { .. } => format!(
                    "; on each load host run: rosey-loadgen --nats-url {nats_url} --run-id {run_id}"
                ),
                _ => String::new(),
            }
        ),
    );
    let workers = crate::workers::Workers::gather(client, run_id, count, timeout, |joined| {
        say(
            progress,
            opts,
            format!("bench: {joined} of {count} load workers have joined; waiting"),
        );
    })
    .await
    .context("gathering the load workers")?;
    say(
        progress,
        opts,
        format!(
            "bench: load workers joined: {}",
            workers
                .members()
                .iter()
                .map(|w| format!("{} ({})", w.name, w.host))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(Some(workers))
}

/// Workers the run started on this host, if any; dropped, they end.
enum LocalWorkers {
    None,
    Containers(crate::workers::local::WorkerContainers),
    Processes(crate::workers::local::WorkerProcesses),
}

impl LocalWorkers {
    fn pids(&self) -> Vec<(String, u32)> {
        match self {
            LocalWorkers::None => Vec::new(),
            LocalWorkers::Containers(c) => c.pids(),
            LocalWorkers::Processes(p) => p.pids(),
        }
    }
}

/// Start the workers `--workers` or `--worker-processes` asked for.
fn start_local_workers(
    opts: &BenchOptions,
    nats_url: &str,
    run_id: &str,
    run_dir: &Path,
) -> anyhow::Result<LocalWorkers> {
    use crate::workers::{local, WorkerSource};
    let log_dir = run_dir.join("workers");
    Ok(match &opts.workers {
        WorkerSource::None | WorkerSource::Remote { .. } => LocalWorkers::None,
        WorkerSource::Containers { count, binary } => {
            (opts.status)(&format!(
                "bench: building the load worker image around {} and starting {count} worker containers",
                binary.display()
            ));
            let image = local::build_image(binary).context("building the load worker image")?;
            LocalWorkers::Containers(
                local::WorkerContainers::start(&image, *count, nats_url, run_id, &log_dir)
                    .context("starting the load worker containers")?,
            )
        }
        WorkerSource::Processes { count, binary } => {
            (opts.status)(&format!("bench: starting {count} load worker processes"));
            LocalWorkers::Processes(
                local::WorkerProcesses::start(binary, *count, nats_url, run_id, &log_dir)
                    .context("starting the load worker processes")?,
            )
        }
    })
}

/// How long workers on this host may take to join.
const WORKERS_JOIN_LOCAL: Duration = Duration::from_secs(60);
/// How long workers started by hand on other hosts may take to join.
const WORKERS_JOIN_REMOTE: Duration = Duration::from_secs(600);

fn skipped_result(
    def: &ScenarioDef,
    _table: &ScenarioTable,
    config: &BenchConfig,
) -> ScenarioResult {
    ScenarioResult {
        name: def.name.to_owned(),
        title: def.title.to_owned(),
        description: def.description.to_owned(),
        load: crate::results::LoadInfo {
            model: "none".into(),
            target_rate_per_s: None,
            duration_s: 0.0,
            warmup_s: 0.0,
            concurrency: None,
            payload_bytes: None,
        },
        config: serde_json::to_value(config.scenarios.get(def.name)).unwrap_or_default(),
        latency: None,
        histograms: Vec::new(),
        throughput_per_s: None,
        accounting: Default::default(),
        resources: Vec::new(),
        metrics: Default::default(),
        targets: Vec::new(),
        proof_path: None,
        curve: Vec::new(),
        workers: Vec::new(),
        faults: Vec::new(),
        windows: Vec::new(),
        harness_lag: None,
        verdict: Verdict::Skipped,
        intervals: Vec::new(),
        resource_timeline: Vec::new(),
        interval_log: None,
        error: None,
        notes: Vec::new(),
    }
}

/// The bare floor at each (path, rate) the service scenarios used, `events` round trips each,
/// for their `floor + service cost`. A failure is kept per floor (the scenarios say it).
async fn measure_floors(
    nats_url: &str,
    needs: &[crate::scenario::FloorNeed],
    events: u64,
    opts: &BenchOptions,
    progress: &indicatif::MultiProgress,
) -> Vec<(
    crate::scenario::FloorNeed,
    Result<crate::results::NamedHistogram, String>,
)> {
    let mut floors = Vec::new();
    for need in needs {
        say(
            progress,
            opts,
            format!(
                "bench: floor of the {} path at {}/s ({events} round trips, about {:.0} s) …",
                need.path,
                crate::report::view::trimmed(need.rate_per_s),
                events as f64 / need.rate_per_s
            ),
        );
        let subject = format!("bench.floor.{}.{}.{}", opts.seed, need.path, floors.len());
        let measured = crate::scenarios::calibration::bare_floor(
            nats_url,
            &subject,
            &need.path,
            need.rate_per_s,
            events,
            Duration::from_secs(5),
        )
        .await
        .and_then(|h| {
            crate::histogram::named(
                "floor",
                &format!(
                    "bare async-nats loop, {} path at {}/s through a stand-in that answers at once: \
                     the floor without the harness or the service",
                    need.path,
                    crate::report::view::trimmed(need.rate_per_s)
                ),
                &h,
            )
        })
        .map_err(|e| format!("{e:#}"));
        if let Err(e) = &measured {
            say(progress, opts, format!("bench:   floor not measured: {e}"));
        }
        floors.push((need.clone(), measured));
    }
    floors
}

/// A status line: above the progress bars when they are drawn, else to the caller's `status`.
fn say(progress: &indicatif::MultiProgress, opts: &BenchOptions, line: String) {
    if opts.progress && progress.println(&line).is_ok() {
        return;
    }
    (opts.status)(&line);
}

fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Error => "ERROR",
        Verdict::Skipped => "skipped",
        Verdict::Invalid => "INVALID (harness lag)",
        Verdict::InsufficientData => "insufficient data",
    }
}

/// `git rev-parse --short HEAD`, or `norev` outside a checkout.
fn short_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "norev".to_owned())
}

/// The summary table printed after a run: one row per scenario.
pub fn summary_table(results: &RunResults) -> String {
    let ms = |ns: u64| format!("{:.3}", ns as f64 / 1e6);
    let mut rows = vec![[
        "scenario".to_owned(),
        "p50 ms".to_owned(),
        "p99 ms".to_owned(),
        "p99.9 ms".to_owned(),
        "max ms".to_owned(),
        "throughput/s".to_owned(),
        "committed/sent".to_owned(),
        "lost".to_owned(),
        "verdict".to_owned(),
    ]];
    for s in &results.scenarios {
        let (p50, p99, p999, max) = match &s.latency {
            Some(l) if l.count > 0 => (ms(l.p50_ns), ms(l.p99_ns), ms(l.p999_ns), ms(l.max_ns)),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let missed: Vec<String> = s
            .targets
            .iter()
            .filter(|t| !t.passed)
            .map(|t| {
                if t.informational {
                    format!("{} (informational)", t.metric)
                } else {
                    t.metric.clone()
                }
            })
            .collect();
        let mut verdict = verdict_label(s.verdict).to_owned();
        if let (Verdict::Invalid, Some(lag)) = (s.verdict, &s.harness_lag) {
            // Say how late the harness was, and how late the machine itself was meanwhile.
            verdict = format!(
                "INVALID (harness lag: send delay p99 {:.0} µs > {:.0} µs{})",
                lag.send_delay_p99_us,
                lag.limit_us,
                lag.machine_wake_p99_us
                    .map(|w| format!("; machine wake-up p99 {w:.0} µs"))
                    .unwrap_or_default()
            );
        }
        if !missed.is_empty() {
            verdict.push_str(&format!(" (missed: {})", missed.join(", ")));
        }
        rows.push([
            s.name.clone(),
            p50,
            p99,
            p999,
            max,
            s.throughput_per_s.map_or("-".into(), |t| format!("{t:.0}")),
            format!("{}/{}", s.accounting.committed, s.accounting.sent),
            format!(
                "{}{}",
                s.accounting.lost,
                if s.accounting.loss_expected {
                    " (expected)"
                } else {
                    ""
                }
            ),
            verdict,
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Text columns left-aligned, numbers right-aligned.
                if c == 0 || c == 8 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    for e in &results.harness_errors {
        out.push_str(&format!("harness error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Accounting, Environment, LatencySummary, NatsProvision};

    fn run(verdicts: &[Verdict], harness_errors: Vec<String>) -> RunResults {
        let mut scenarios = Vec::new();
        for (i, v) in verdicts.iter().enumerate() {
            let mut s = crate::scenario::tests_support::empty_result();
            s.name = format!("s{i}");
            s.verdict = *v;
            s.latency = Some(LatencySummary {
                count: 3,
                p50_ns: 1_500_000,
                p99_ns: 2_000_000,
                p999_ns: 2_500_000,
                max_ns: 3_000_000,
                ..Default::default()
            });
            s.accounting = Accounting {
                sent: 10,
                committed: 9,
                lost: 1,
                ..Default::default()
            };
            s.throughput_per_s = Some(99.6);
            scenarios.push(s);
        }
        RunResults {
            schema_version: SCHEMA_VERSION,
            run_id: "r".into(),
            started_at: String::new(),
            finished_at: String::new(),
            profile: "quick".into(),
            environment: Environment {
                git_revision: "x".into(),
                git_dirty: false,
                git_branch: None,
                commit_subject: None,
                rustc_version: String::new(),
                nats: NatsProvision {
                    kind: "local".into(),
                    detail: String::new(),
                    server_version: String::new(),
                    image_built_locally: None,
                },
                cpu_model: String::new(),
                cpu_count: 2,
                kernel: String::new(),
                os: String::new(),
                config_hash: String::new(),
                config: serde_json::Value::Null,
                seed: 1,
                load_generators: None,
            },
            scenarios,
            harness_errors,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            exit_code(&run(&[Verdict::Pass, Verdict::Skipped], vec![])),
            exit::OK
        );
        assert_eq!(
            exit_code(&run(&[Verdict::Pass, Verdict::Fail], vec![])),
            exit::TARGET_MISSED_OR_REGRESSED
        );
        assert_eq!(
            exit_code(&run(&[Verdict::Fail, Verdict::Error], vec![])),
            exit::HARNESS_ERROR
        );
        assert_eq!(
            exit_code(&run(&[Verdict::Pass], vec!["nats went away".into()])),
            exit::HARNESS_ERROR
        );
    }

    #[test]
    fn summary_table_has_one_row_per_scenario() {
        let table = summary_table(&run(&[Verdict::Pass, Verdict::Fail], vec!["boom".into()]));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("scenario"), "{table}");
        assert!(
            lines[2].starts_with("s0")
                && lines[2].contains("1.500")
                && lines[2].contains("9/10")
                && lines[2].ends_with("PASS"),
            "{table}"
        );
        assert!(lines[3].contains("FAIL"), "{table}");
        assert_eq!(lines[4], "harness error: boom");
    }

    #[test]
    fn an_invalid_row_says_how_late_the_harness_and_the_machine_were() {
        let mut results = run(&[Verdict::Invalid], vec![]);
        results.scenarios[0].harness_lag = Some(crate::results::HarnessLag {
            send_delay_p99_us: 2500.0,
            limit_us: 500.0,
            limit_source: "x".into(),
            within: false,
            machine_wake_p99_us: Some(2621.4),
        });
        let table = summary_table(&results);
        assert!(
            table.contains(
                "INVALID (harness lag: send delay p99 2500 µs > 500 µs; machine wake-up p99 2621 µs)"
            ),
            "{table}"
        );
    }

    #[test]
    fn selection_keeps_table_order_and_rejects_unknown_names() {
        let config = BenchConfig::parse(include_str!("../bench.toml"), "quick").unwrap();
        let all = crate::scenarios::all();
        let picked = select(
            &all,
            &config,
            &["burst_throughput".into(), "nats_floor".into()],
        )
        .unwrap();
        let names: Vec<&str> = picked.iter().map(|(d, _)| d.name).collect();
        assert_eq!(names, ["nats_floor", "burst_throughput"]);
        assert_eq!(select(&all, &config, &[]).unwrap().len(), all.len());
        assert!(select(&all, &config, &["nope".into()]).is_err());
    }

    #[test]
    fn a_bad_parameter_is_refused_before_the_run_starts() {
        let text = include_str!("../bench.toml").replace(
            "[scenarios.single_event_latency]\n",
            "[scenarios.single_event_latency]\nrate_per_sec = 5\n",
        );
        let config = BenchConfig::parse(&text, "default").unwrap();
        let e = select(&crate::scenarios::all(), &config, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[scenarios.single_event_latency]") && e.contains("rate_per_sec"),
            "{e}"
        );
    }
}
