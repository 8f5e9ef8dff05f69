//! `cargo xtask bench`: builds the services in release mode, then hands over to
//! `harness::run_bench` (provision NATS, start the services, run the scenarios, write the run
//! directory) and prints the summary table. Exit code: 0 all targets met, 2 a target missed or
//! events lost, 1 the harness failed.

use harness::provision::NatsChoice;
use harness::{BenchOptions, ServiceBinaries, ServicesUnderTest};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run only this scenario (repeatable). Default: every scenario enabled in the profile.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Search the saturation knee of this scenario's load and run only that search: the highest
    /// offered rate that meets the latency objective with nothing lost (`[scenarios.<scenario>_knee]`
    /// in harness/bench.toml). Knees exist for: single_event_latency, request_reply_latency.
    #[arg(long, value_name = "SCENARIO", conflicts_with = "scenarios")]
    pub knee: Option<String>,
    /// List the scenarios with one line each and exit.
    #[arg(long)]
    pub list: bool,
    /// quick (CI, ≤ 3 minutes), default, or soak (long).
    #[arg(long, default_value = "default", value_parser = ["quick", "default", "soak"])]
    pub profile: String,
    /// Run directory (default: reports/runs/<run_id>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Scenario configuration (default: harness/bench.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Random seed recorded with the results (and used for subject nonces).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where NATS comes from: auto, external (needs --nats-url), container, local, or cluster
    /// (three nats-server containers on a private Docker network, JetStream streams with three
    /// replicas; the cluster_* fault scenarios need it).
    #[arg(long, default_value = "auto", value_parser = ["auto", "external", "container", "local", "cluster"])]
    pub nats: String,
    /// URL of an external NATS server (implies --nats external when --nats is auto).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Do not build; use these binaries (both required together).
    #[arg(long, requires = "bot_bin")]
    pub dbservice_bin: Option<PathBuf>,
    #[arg(long, requires = "dbservice_bin")]
    pub bot_bin: Option<PathBuf>,
    /// Offer the load from N worker containers on this host instead of the harness process: an
    /// image is built locally around the release `rosey-loadgen`, the containers join the run
    /// over NATS, and each phase a worker can run (message.log load proven by commit notices:
    /// single_event_latency, sustained_throughput, burst_throughput, the rate sweep and the knee)
    /// is split among them and merged. Needs Docker.
    #[arg(long, value_name = "N", conflicts_with_all = ["remote_workers", "worker_processes"], value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// As `--workers`, with the workers as N child processes instead of containers (no Docker).
    /// On a machine whose cores the service keeps busy, processes keep their schedule where
    /// containers may not: Docker weighs all containers together like one process.
    #[arg(long, value_name = "N", conflicts_with = "remote_workers", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub worker_processes: Option<u32>,
    /// Wait for N workers started by hand on other hosts (`rosey-loadgen --nats-url <url>
    /// --run-id <id>`, or `cargo xtask worker …`; the run prints the id) and offer the load from
    /// them, as `--workers` does. Use a NATS server all hosts reach (`--nats-url`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub remote_workers: Option<u32>,
    /// `RUST_LOG` of the services under test (their logs land in the run directory).
    #[arg(
        long,
        env = "ROSEY_SERVICE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub service_log: String,
    /// Regression gate (`--against`, `--baseline`, ...): see `crate::compare::GateArgs`.
    #[command(flatten)]
    pub gate: crate::compare::GateArgs,
}

pub fn run(mut args: Args) -> anyhow::Result<u8> {
    if args.list {
        for def in harness::scenarios::all() {
            println!("{:<28} {}", def.name, def.description);
        }
        return Ok(harness::exit::OK);
    }
    if let Some(of) = &args.knee {
        args.scenarios = vec![knee_scenario(of)?.to_owned()];
    }
    check_scenarios(&args.scenarios)?;
    let root = crate::workspace_root();
    let binaries = match (args.dbservice_bin, args.bot_bin) {
        (Some(dbservice), Some(bot)) => ServiceBinaries { dbservice, bot },
        _ => build_services(&root)?,
    };
    let nats = match (args.nats.as_str(), args.nats_url) {
        ("external", Some(url)) | ("auto", Some(url)) => NatsChoice::External(url),
        ("external", None) => anyhow::bail!("--nats external needs --nats-url (or NATS_URL)"),
        ("container", _) => NatsChoice::Container,
        ("local", _) => NatsChoice::Local,
        ("cluster", _) => NatsChoice::Cluster,
        _ => NatsChoice::Auto,
    };
    if nats == NatsChoice::Cluster {
        ensure_tc();
    }
    let workers = match (args.workers, args.worker_processes, args.remote_workers) {
        (Some(count), _, _) => harness::workers::WorkerSource::Containers {
            count,
            binary: build_loadgen(&root)?,
        },
        (None, Some(count), _) => harness::workers::WorkerSource::Processes {
            count,
            binary: build_loadgen(&root)?,
        },
        (None, None, Some(count)) => harness::workers::WorkerSource::Remote { count },
        (None, None, None) => harness::workers::WorkerSource::None,
    };
    let options = BenchOptions {
        scenarios: args.scenarios,
        workers,
        profile: args.profile,
        config_path: args
            .config
            .unwrap_or_else(|| root.join("harness").join("bench.toml")),
        out: args.out,
        seed: args.seed,
        service_log: args.service_log,
        ..options(&root, binaries, nats)
    };
    // Regression gate: an interleaved A/B run replaces the single run.
    if args.gate.against.is_some() {
        return crate::compare::bench_against(&args.gate, &root, options);
    }
    let outcome = harness::run_bench(options)?;
    println!();
    print!("{}", harness::run::summary_table(&outcome.results));
    println!();
    let findings = harness::run::findings(&outcome.results);
    if !findings.is_empty() {
        println!(
            "fails ({} finding{}):",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
        print!("{}", harness::exit::summary(&findings));
        println!();
    }
    println!(
        "results: {}",
        outcome
            .run_dir
            .join(harness::results::RESULTS_FILE)
            .display()
    );
    // Regression gate: compare the run with `--baseline`, if given. It writes compare.json,
    // which the report below reuses rather than recomputing.
    let code = crate::compare::bench_baseline(&args.gate, &outcome)?;
    // Reports and history: every bench run ends with report.md, report.html (plus a screenshot
    // when Chromium is installed) and the run appended to the history.
    let history_dir = root.join(&args.gate.history_dir);
    match render_reports(&outcome.run_dir, &history_dir) {
        Ok(()) => Ok(code),
        Err(e) => {
            eprintln!("error: the run was measured, but its reports could not be written: {e:#}");
            Ok(harness::exit::HARNESS_ERROR)
        }
    }
}

/// The scenario that searches the knee of `of` (`--knee`), or an error naming those that exist.
pub fn knee_scenario(of: &str) -> anyhow::Result<&'static str> {
    use harness::scenarios::knee;
    knee::knee_scenario(of).ok_or_else(|| {
        let known: Vec<&str> = knee::KNEES.iter().map(|(of, _)| *of).collect();
        anyhow::anyhow!(
            "--knee {of}: no knee search for that scenario (there is one for: {})",
            known.join(", ")
        )
    })
}

/// Fail on a scenario name typo before spending minutes on the release build.
pub fn check_scenarios(names: &[String]) -> anyhow::Result<()> {
    let known = harness::scenarios::all();
    for name in names {
        if !known.iter().any(|d| d.name == name) {
            let names: Vec<&str> = known.iter().map(|d| d.name).collect();
            anyhow::bail!("unknown scenario {name:?} (known: {})", names.join(", "));
        }
    }
    Ok(())
}

/// The options of a bench run of these binaries on this NATS from the workspace at `root`,
/// with every other choice at its default (all scenarios of the default profile, the default
/// configuration, a run directory under reports/runs, seed 1), progress on a terminal.
pub fn options(root: &Path, binaries: ServiceBinaries, nats: NatsChoice) -> BenchOptions {
    BenchOptions {
        services: ServicesUnderTest::Spawn(binaries),
        nats,
        scenarios: Vec::new(),
        profile: "default".into(),
        config_path: root.join("harness").join("bench.toml"),
        out: None,
        runs_dir: root.join("reports").join("runs"),
        seed: 1,
        progress: std::io::stderr().is_terminal(),
        status: |line| eprintln!("{line}"),
        service_log: "info".into(),
        workers: harness::workers::WorkerSource::None,
    }
}

/// `cargo xtask report` for the run just finished: report.md, report.html, the history entry and
/// index; then the headless-browser check with a screenshot, when a browser is there.
fn render_reports(run_dir: &Path, history_dir: &Path) -> anyhow::Result<()> {
    let paths = harness::report::render_run(run_dir, history_dir, None)?;
    for warning in &paths.warnings {
        eprintln!("warning: {warning}");
    }
    println!("report: {}", paths.markdown.display());
    println!("report: {}", paths.html.display());
    println!("history index: {}", paths.index.display());
    // No browser is not a failed run (`cargo xtask report --check` makes it one); a page the
    // browser finds broken is.
    if let Err(e) = harness::report::browser::find_browser() {
        eprintln!("browser check skipped: {e:#}");
        return Ok(());
    }
    let checked = harness::report::browser::check(&paths.html, &run_dir.join("report.png"))?;
    println!(
        "browser check: {} of {} charts drawn; screenshot {}",
        checked.charts,
        checked.expected,
        checked.screenshot.display()
    );
    Ok(())
}

/// The release build of the services under test.
pub fn build_services(root: &Path) -> anyhow::Result<ServiceBinaries> {
    eprintln!("bench: building rosey-dbservice and rosey-bot (release)");
    crate::cargo::build_services(root, None)
}

/// The release build of the load worker, `rosey-loadgen` (for `--workers` and `cargo xtask worker`).
pub fn build_loadgen(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("bench: building rosey-loadgen (release)");
    crate::cargo::build_loadgen(root)
}

/// `tc` (iproute2) for `cluster_slow_link`, installed when missing and installing is allowed;
/// without it only that scenario fails, saying what to install.
fn ensure_tc() {
    let found = std::process::Command::new("tc")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return;
    }
    let missing = anyhow::anyhow!(
        "tc is not installed: cluster_slow_link needs it (`apt-get install iproute2`)"
    );
    if let Err(err) = crate::system::apt_install("iproute2", "bench", missing) {
        eprintln!("bench: {err:#}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn knee_names_its_search_or_says_which_exist() {
        assert_eq!(
            super::knee_scenario("single_event_latency").unwrap(),
            "single_event_latency_knee"
        );
        let e = super::knee_scenario("burst_throughput")
            .unwrap_err()
            .to_string();
        assert!(e.contains("there is one for: single_event_latency"), "{e}");
    }
}
