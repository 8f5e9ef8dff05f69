//! NATS provisioning (local, external, container) and the resource sampler against real
//! processes.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::provision::{provision, NatsChoice, ProvisionedNats};
use harness::sampler::Sampler;

/// Publishes on a fresh subject and proves the message comes back through the server.
async fn round_trip(url: &str) {
    let client = async_nats::connect(url)
        .await
        .expect("connecting to the provisioned server");
    let mut sub = client.subscribe("infra.round_trip").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("infra.round_trip", "ping".into())
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("no message within 10 s")
        .expect("subscription ended");
    assert_eq!(&msg.payload[..], b"ping");
    // JetStream is on in every provisioned server.
    let js = async_nats::jetstream::new(client);
    js.query_account().await.expect("JetStream answers");
}

fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only orders whole tests (each has its own runtime); nothing in this test's runtime
// takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn local_provisioning_keeps_the_log() {
    let _alone = crate::alone();
    let run_dir = tempfile::tempdir().unwrap();
    let nats = provision(&NatsChoice::Local, run_dir.path()).unwrap();
    assert_eq!(nats.info.kind, "local");
    assert!(!nats.info.server_version.is_empty());
    let pid = nats.pid.expect("a local server has a pid");
    assert!(is_running(pid));
    round_trip(&nats.url).await;
    drop(nats);
    assert!(run_dir.path().join("nats-server.log").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only orders whole tests (each has its own runtime); nothing in this test's runtime
// takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn external_provisioning_reads_the_server_version() {
    let _alone = crate::alone();
    let server = natskit::NatsServer::start().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let nats = provision(
        &NatsChoice::External(server.url().to_owned()),
        run_dir.path(),
    )
    .unwrap();
    assert_eq!(nats.info.kind, "external");
    assert_eq!(nats.info.server_version, server.version());
    assert_eq!(nats.pid, None);
    round_trip(&nats.url).await;
}

pub(crate) fn docker_tests_skipped() -> bool {
    std::env::var("ROSEY_SKIP_DOCKER_TESTS").is_ok_and(|v| v == "1")
}

/// The container path: official image if available, else built locally `FROM scratch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only orders whole tests (each has its own runtime); nothing in this test's runtime
// takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn container_provisioning_round_trip() {
    let _alone = crate::alone();
    if docker_tests_skipped() {
        eprintln!("ROSEY_SKIP_DOCKER_TESTS=1: skipping the container provisioning test");
        return;
    }
    if let Err(err) = harness::provision::docker_answers() {
        panic!("{err:#}\n(set ROSEY_SKIP_DOCKER_TESTS=1 to skip the tests that need Docker)");
    }
    let run_dir = tempfile::tempdir().unwrap();
    let nats: ProvisionedNats = provision(&NatsChoice::Container, run_dir.path()).unwrap();
    eprintln!("container nats: {nats:?}");
    assert_eq!(nats.info.kind, "container");
    assert!(nats.info.image_built_locally.is_some());
    let pid = nats.pid.expect("a container has a host pid");
    assert!(
        is_running(pid),
        "host pid {pid} of the container is not running"
    );
    // The host pid is nats-server itself, so the sampler can read its CPU and RSS.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "nats-server");
    round_trip(&nats.url).await;
    drop(nats);
    assert!(!is_running(pid), "the container outlived its guard");
    assert!(run_dir.path().join("nats-server.log").is_file());
}

/// Burns CPU in this process while the sampler watches it.
#[test]
fn sampler_sees_this_process_burn_cpu() {
    let _alone = crate::alone();
    let pid = std::process::id();
    let sampler = Sampler::spawn(vec![("harness".into(), pid)], Duration::from_millis(100));
    let phase = sampler.begin_phase();
    // Burn until this thread has used 0.6 s of CPU (on a busy machine that takes longer in wall
    // time); the process's CPU can only be more.
    let thread_cpu = || harness::sampler::thread_cpu_time().unwrap().total;
    let before = thread_cpu();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut x = 0u64;
    while thread_cpu() - before < Duration::from_millis(600) {
        assert!(
            Instant::now() < deadline,
            "could not burn 0.6 s of CPU within a minute"
        );
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    // Allocate and touch 64 MB so RSS rises measurably.
    let big = vec![1u8; 64 << 20];
    std::hint::black_box(&big);
    let (resources, timeline) = phase.end(1000);
    let r = resources
        .iter()
        .find(|r| r.process == "harness")
        .expect("harness sampled");
    // CPU per event and percent come from schedstat's nanoseconds; user/system from the ticks.
    assert_eq!(r.cpu_source.as_deref(), Some("schedstat"), "{r:?}");
    let cpu = r.cpu_us_per_event.unwrap() * 1000.0 / 1e6;
    assert!(
        cpu >= 0.59,
        "burned 0.6 s of CPU but measured {cpu} s: {r:?}"
    );
    assert!(r.cpu_percent > 0.0, "{r:?}");
    let ticks = r.cpu_user_s + r.cpu_system_s;
    assert!(
        (ticks - cpu).abs() < 0.1,
        "the ticks agree within their resolution: {ticks} s against {cpu} s"
    );
    assert!(r.rss_end_bytes >= r.rss_start_bytes + (32 << 20), "{r:?}");
    assert!(r.rss_max_bytes >= r.rss_end_bytes);
    assert!(timeline.len() >= 5, "{} samples", timeline.len());
    assert!(timeline.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    drop(big);
}

/// Manual: runs the scenarios named in `ROSEY_BENCH_SCENARIOS` (comma separated) with the
/// profile in `ROSEY_BENCH_PROFILE` (default `quick`) against the service binaries in
/// `ROSEY_BENCH_BIN_DIR`, and prints the results. `cargo test -p harness --test it -- --ignored
/// run_selected_scenarios --nocapture`.
#[test]
#[ignore = "runs real benchmark scenarios; for manual use"]
fn run_selected_scenarios() {
    let _alone = crate::alone();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let scenarios: Vec<String> = var("ROSEY_BENCH_SCENARIOS")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let bin_dir =
        std::path::PathBuf::from(var("ROSEY_BENCH_BIN_DIR").expect("set ROSEY_BENCH_BIN_DIR"));
    let out = tempfile::Builder::new()
        .prefix("rosey-bench-run-")
        .tempdir()
        .unwrap()
        .keep();
    let opts = harness::run::BenchOptions {
        services: harness::ServicesUnderTest::Spawn(harness::services::ServiceBinaries {
            dbservice: bin_dir.join("rosey-dbservice"),
            bot: bin_dir.join("rosey-bot"),
        }),
        nats: match var("ROSEY_BENCH_NATS").as_deref() {
            Some("container") => NatsChoice::Container,
            Some("local") => NatsChoice::Local,
            _ => NatsChoice::Auto,
        },
        scenarios,
        profile: var("ROSEY_BENCH_PROFILE").unwrap_or_else(|| "quick".into()),
        config_path: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench.toml"),
        out: Some(out.clone()),
        runs_dir: out.clone(),
        seed: 1,
        progress: false,
        status: |line| eprintln!("{line}"),
        service_log: "info".into(),
        workers: Default::default(),
    };
    let outcome = harness::run::run_bench(opts).unwrap();
    println!("{}", harness::run::summary_table(&outcome.results));
    for s in &outcome.results.scenarios {
        println!("--- {} {:?} {:?}", s.name, s.verdict, s.accounting);
        if let Some(e) = &s.error {
            println!("error: {e}");
        }
        for (k, v) in &s.metrics {
            println!("  {k} = {v:.3}");
        }
        for h in &s.histograms {
            println!(
                "  hist {}: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
                h.name,
                h.summary.count,
                h.summary.p50_ns as f64 / 1e6,
                h.summary.p99_ns as f64 / 1e6,
                h.summary.max_ns as f64 / 1e6
            );
        }
        for r in &s.resources {
            println!(
                "  res {}: cpu {:.3}s ({:.1}%) us/ev {:?} rss {}→{} MB slope {:?} MB/h",
                r.process,
                r.cpu_user_s + r.cpu_system_s,
                r.cpu_percent,
                r.cpu_us_per_event.map(|v| (v * 10.0).round() / 10.0),
                r.rss_start_bytes / 1_000_000,
                r.rss_end_bytes / 1_000_000,
                r.rss_slope_bytes_per_hour.map(|v| (v / 1e6).round())
            );
        }
        for t in &s.targets {
            println!(
                "  target {} {} {} -> {:?} {}",
                t.metric,
                t.op,
                t.threshold,
                t.actual,
                if t.passed { "ok" } else { "MISSED" }
            );
        }
        for n in &s.notes {
            println!("  note: {n}");
        }
    }
    println!("run dir: {}", outcome.run_dir.display());
}
