//! The three-node cluster in containers: it forms, each fault is applied and removed and seen
//! from inside the cluster, and nothing the harness created is left behind.

use harness::cluster::{Cluster, FaultKind, Target, LABEL};
use std::time::{Duration, Instant};

/// Docker is needed: without it the test fails, saying how to skip it
/// (`ROSEY_SKIP_DOCKER_TESTS=1`, as the other Docker tests).
fn docker_or_skip() -> bool {
    if crate::infra::docker_tests_skipped() {
        eprintln!("ROSEY_SKIP_DOCKER_TESTS=1: skipping a cluster test");
        return false;
    }
    if let Err(err) = harness::provision::docker_answers() {
        panic!("{err:#}\n(set ROSEY_SKIP_DOCKER_TESTS=1 to skip the tests that need Docker)");
    }
    true
}

/// What `docker <what> ls` lists with the cluster's label.
fn leftovers(what: &str, id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([what, "ls", "-q", "--filter", &format!("label={LABEL}={id}")])
        .args(if what == "container" {
            &["-a"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `check` for up to `within`.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_three_node_cluster_forms_takes_each_fault_and_leaves_nothing_behind() {
    let _alone = crate::alone();
    if !docker_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = harness::provision::nats_image().unwrap();
    let cluster = Cluster::start(dir.path(), &image).unwrap();
    let id = cluster.id();
    let control = cluster.control();
    let nodes = control.node_names();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    assert_eq!(cluster.url().split(',').count(), 3, "{}", cluster.url());
    for node in &nodes {
        let others: Vec<String> = nodes.iter().filter(|n| *n != node).cloned().collect();
        eventually(Duration::from_secs(10), "full mesh of routes", || {
            control.routes_of(node).unwrap_or_default() == others
        });
    }

    // An R3 stream is placed on all three nodes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = cluster.url();
    let replicas = rt.block_on(async {
        let client = harness::load::connect(&url, "cluster-test").await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "R3TEST".into(),
                subjects: vec!["r3test.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        let info = stream.info().await.unwrap();
        let cluster = info.cluster.clone().unwrap();
        cluster.replicas.len() + usize::from(cluster.leader.is_some())
    });
    assert_eq!(replicas, 3, "leader plus two replicas");

    for (kind, target) in [
        (FaultKind::Kill, Target::MetaLeader),
        (FaultKind::Pause, Target::NonLeader),
        (FaultKind::Partition, Target::NonLeader),
    ] {
        let node = control.pick(target).unwrap();
        let applied = control.apply(kind, &node).unwrap();
        assert_eq!(applied.was_meta_leader, target == Target::MetaLeader);
        assert!(
            !control.answers(&node, Duration::from_millis(500)),
            "{kind} {node}: a client still reaches it"
        );
        if kind == FaultKind::Kill {
            // Inside the cluster: the survivors drop their routes to it and elect a new leader.
            for other in nodes.iter().filter(|n| **n != node) {
                eventually(
                    Duration::from_secs(10),
                    "routes to the killed node gone",
                    || !control.routes_of(other).unwrap_or_default().contains(&node),
                );
            }
            eventually(Duration::from_secs(20), "a new meta leader", || {
                control.meta_leader().is_ok_and(|l| l != node)
            });
        }
        control.remove(&applied).unwrap();
        assert!(
            control.answers(&node, Duration::from_secs(2)),
            "{kind} {node} removed"
        );
        eventually(Duration::from_secs(20), "the node routed again", || {
            nodes
                .iter()
                .filter(|n| **n != node)
                .all(|other| control.routes_of(other).unwrap_or_default().contains(&node))
        });
    }

    // A slow link: the host's end of the node's interface is found; netem delays the node, or
    // the kernel has none and the fault says so.
    let node = control.pick(Target::NonLeader).unwrap();
    let dev = control.host_interface(&node).unwrap();
    assert!(
        std::path::Path::new("/sys/class/net").join(&dev).exists(),
        "{dev} is an interface of this host"
    );
    let slow = FaultKind::SlowLink {
        delay_ms: 200.0,
        loss_pct: 0.0,
    };
    match control.apply(slow, &node) {
        Ok(applied) => {
            // The handshake crosses the delayed link: a client cannot get INFO within 100 ms.
            let started = Instant::now();
            assert!(control.answers(&node, Duration::from_secs(2)));
            assert!(
                started.elapsed() >= Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
            control.remove(&applied).unwrap();
            let started = Instant::now();
            assert!(control.answers(&node, Duration::from_secs(2)));
            assert!(
                started.elapsed() < Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
        }
        Err(err) => {
            let text = format!("{err:#}");
            assert!(
                text.contains("netem") || text.contains("iproute2"),
                "{text}"
            );
            eprintln!("SKIPPED the slow-link check: {text}");
        }
    }

    drop(cluster);
    assert_eq!(leftovers("container", &id), "", "containers left behind");
    assert_eq!(leftovers("network", &id), "", "networks left behind");
    for node in &nodes {
        assert!(
            dir.path()
                .join("nats-cluster")
                .join(format!("{node}.log"))
                .is_file(),
            "{node}'s log kept"
        );
    }
}

/// The service binaries of this build (built here if the test run has not built them yet).
fn service_binaries() -> harness::services::ServiceBinaries {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> → target/<profile>/
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "-p",
            "rosey-dbservice",
            "-p",
            "rosey-bot",
            "--bins",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building the services");
    harness::services::ServiceBinaries {
        dbservice: dir.join("rosey-dbservice"),
        bot: dir.join("rosey-bot"),
    }
}

const NODE_LOSS_CONFIG: &str = r#"
# The engine's accounting across a node loss, not the machine's quiet: a lag limit no loaded
# test machine reaches.
[self_check]
send_delay_p99_max_us = 1000000.0
send_delay_target_fraction = 1.0
floor_events = 100

[services]
start_bot = false
ready_timeout_s = 20.0
sample_interval_ms = 250

[scenarios.cluster_node_loss]
rate_per_s = 200
duration_s = 6
warmup_s = 0.5
payload_bytes = 32
mode = "durable"
fault = "kill"
target = "meta_leader"
fault_at_s = 2.0
fault_duration_s = 1.5
recovered_p99_factor = 1.2
drain_timeout_s = 45
targets = [{ metric = "accounting.lost", op = "<=", threshold = 0.0 }]

[scenarios.cluster_replication_cost]
rate_per_s = 200
duration_s = 1.5
warmup_s = 0.3
drain_timeout_s = 45
payload_bytes = 32
rounds = 1
targets = []
"#;

#[test]
fn killing_the_meta_leader_under_durable_load_loses_nothing_and_r3_is_measured_beside_r1() {
    let _alone = crate::alone();
    if !docker_or_skip() {
        return;
    }
    let binaries = service_binaries();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, NODE_LOSS_CONFIG).unwrap();
    let outcome = harness::run_bench(harness::BenchOptions {
        services: harness::ServicesUnderTest::Spawn(binaries),
        nats: harness::provision::NatsChoice::Cluster,
        scenarios: vec![
            "cluster_node_loss".into(),
            "cluster_replication_cost".into(),
        ],
        profile: "default".into(),
        config_path,
        out: Some(dir.path().join("run")),
        runs_dir: dir.path().join("runs"),
        seed: 3,
        progress: false,
        status: |line| eprintln!("{line}"),
        service_log: "info".into(),
        workers: Default::default(),
    })
    .unwrap();
    assert!(
        outcome.results.harness_errors.is_empty(),
        "{:?}",
        outcome.results.harness_errors
    );
    assert_eq!(outcome.results.environment.nats.kind, "cluster");
    let s = outcome.results.scenario("cluster_node_loss").unwrap();
    assert_eq!(s.error, None);
    let a = &s.accounting;
    assert_eq!(a.sent, 1_200, "{a:?}");
    assert_eq!((a.committed, a.lost, a.duplicated), (1_200, 0, 0), "{a:?}");
    assert_eq!(s.metrics["db_rows_mismatch"], 0.0);
    assert_eq!(s.metrics["faulted_meta_leader"], 1.0);
    assert_eq!(
        s.metrics["harness_connections_on_faulted_node"], 0.0,
        "the harness measures from a node the fault does not hit: {:?}",
        s.notes
    );
    assert!(
        s.metrics.contains_key("first_commit_after_fault_ms"),
        "{:?}",
        s.notes
    );
    assert!(
        s.metrics.contains_key("service_connection_on_faulted_node"),
        "the node the service consumed through is found: {:?}",
        s.notes
    );
    assert_eq!(s.faults.len(), 1);
    assert_eq!(s.faults[0].kind, "kill");
    assert!(s.faults[0].target.contains("meta leader"), "{:?}", s.faults);
    let names: Vec<&str> = s.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["before", "during", "after"]);
    let in_windows: u64 = s.windows.iter().map(|w| w.confirmed).sum();
    assert_eq!(in_windows, 1_200, "every committed message in one window");
    assert_eq!(
        s.metrics["stream_replicas"], 3.0,
        "the durable stream is R3"
    );
    let log = std::fs::read_dir(&outcome.run_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("nats-cluster"));
    assert!(log, "the nodes' logs are kept in the run directory");
    // R3 and R1 steps on the same cluster, each fully accounted, the stream placed before each.
    let r = outcome
        .results
        .scenario("cluster_replication_cost")
        .unwrap();
    assert_eq!(r.error, None);
    assert_eq!(
        (r.accounting.sent, r.accounting.lost),
        (600, 0),
        "{:?}",
        r.accounting
    );
    let count = |name: &str| {
        r.histograms
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.summary.count)
    };
    assert_eq!((count("latency"), count("r1")), (Some(300), Some(300)));
    for key in [
        "replication_cost_p50_ms",
        "round1.r3.placed_ms",
        "round1.r1.placed_ms",
    ] {
        assert!(r.metrics.contains_key(key), "{key}: {:?}", r.metrics);
    }
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "containers left"
    );
    let out = std::process::Command::new("docker")
        .args(["network", "ls", "-q", "--filter", &format!("label={LABEL}")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "networks left"
    );
}
