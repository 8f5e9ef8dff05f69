//! Distributed load (`harness::workers`): `rosey-loadgen` workers, started as child processes (and
//! as containers, where Docker runs), join a run over a real nats-server, run their slices of a
//! phase against a stand-in database service that commits every event after a known delay, and
//! the coordinator merges them. Three workers must offer what one process offers (same accounting,
//! overlapping percentiles); a worker killed mid-phase must fail the phase, naming it.

use harness::load::{self, Ids, PhaseOutcome, PhaseSpec, Proof};
use harness::publishers::Publishers;
use harness::scenarios::responder::{Answer, Responder, ResponderSpec};
use harness::workers::local::WorkerProcesses;
use harness::workers::{RemoteScript, WorkerFigures, Workers};
use std::process::Command;
use std::time::Duration;

/// The stand-in's commit delay.
const SERVICE_DELAY: Duration = Duration::from_micros(300);

/// `n` worker processes joining `run_id`, named `p0`, `p1`, …, logging into `logs`.
fn worker_processes(url: &str, run_id: &str, n: u32, logs: &std::path::Path) -> WorkerProcesses {
    WorkerProcesses::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rosey-loadgen")),
        n,
        url,
        run_id,
        logs,
    )
    .unwrap()
}

fn stand_in_spec() -> ResponderSpec {
    ResponderSpec {
        subject: rosey_protocol::subjects::MESSAGE_LOG.into(),
        answer: Answer::CommitNotice {
            subject: rosey_protocol::subjects::COMMITTED.into(),
        },
        delay: SERVICE_DELAY,
        service_time: Duration::ZERO,
        spin: Duration::from_micros(100),
        stall: None,
    }
}

fn phase(senders: &Publishers, tag: &str, rate: f64, count: u64) -> PhaseSpec {
    PhaseSpec {
        id_prefix: format!("workers-test.{tag}."),
        rate_per_s: Some(rate),
        count,
        ..PhaseSpec::new(
            senders.clone(),
            RemoteScript::MessageLog { payload_bytes: 32 }.script(),
            Proof::CommitNotices(Ids::Direct),
            Duration::from_secs(10),
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn p_us(o: &PhaseOutcome, q: f64) -> f64 {
    o.record.latency.value_at_quantile(q) as f64 / 1e3
}

async fn distributed(
    workers: &Workers,
    spec: &PhaseSpec,
) -> anyhow::Result<(PhaseOutcome, Vec<WorkerFigures>)> {
    let script = RemoteScript::MessageLog { payload_bytes: 32 };
    workers
        .run_phase(spec, &script, 3, &indicatif::ProgressBar::hidden())
        .await
}

#[test]
fn three_workers_offer_what_one_process_offers() {
    let _alone = crate::alone();
    let nats = natskit::NatsServer::start().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut children = worker_processes(nats.url(), "three-workers", 3, logs.path());
    runtime().block_on(async {
        let stand_in = Responder::start(nats.url(), stand_in_spec()).await.unwrap();
        let client = load::connect(nats.url(), "workers-test").await.unwrap();
        let senders = Publishers::connect(nats.url(), "workers-test", 3)
            .await
            .unwrap();
        let workers = Workers::gather(&client, "three-workers", 3, Duration::from_secs(30), |_| {})
            .await
            .unwrap();
        assert_eq!(workers.members().len(), 3);
        const RATE: f64 = 600.0;
        const COUNT: u64 = 1_800;
        // Warm both paths once (connections, the stand-in), then measure each.
        distributed(&workers, &phase(&senders, "warm-w", RATE, 300))
            .await
            .unwrap();
        load::run_phase(
            &client,
            phase(&senders, "warm-1", RATE, 300),
            &indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap();
        let (merged, figures) = distributed(&workers, &phase(&senders, "m-w", RATE, COUNT))
            .await
            .unwrap();
        let single = load::run_phase(
            &client,
            phase(&senders, "m-1", RATE, COUNT),
            &indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap();
        workers.dismiss().await;
        stand_in.stop().await.unwrap();

        // The accounting adds up exactly: every message of the phase, once.
        let r = &merged.record;
        assert_eq!((r.sent, r.confirmed, r.lost(), r.duplicated), (COUNT, COUNT, 0, 0));
        assert_eq!(r.latency.len(), COUNT);
        assert!(merged.drained);
        assert_eq!(figures.len(), 3);
        for w in &figures {
            assert_eq!((w.sent, w.committed, w.lost), (COUNT / 3, COUNT / 3, 0), "{w:?}");
        }
        assert_eq!(
            figures.iter().map(|w| w.sent).sum::<u64>(),
            r.sent,
            "the breakdown adds up to the merged phase"
        );
        assert_eq!(single.record.confirmed, COUNT);
        // Interleaved slices offer the single process's schedule: the merged phase took as long.
        let (a, b) = (merged.elapsed.as_secs_f64(), single.elapsed.as_secs_f64());
        assert!((a - b).abs() < 1.0, "elapsed {a:.2} s over workers, {b:.2} s in one process");
        // The same service seen from three processes or one: the percentiles overlap. A
        // latency measured from the wrong origin (a worker's start instead of each message's
        // intended time, or a slice on the wrong schedule) is off by seconds, not by this.
        let (m50, s50, m99, s99) = (
            p_us(&merged, 0.5),
            p_us(&single, 0.5),
            p_us(&merged, 0.99),
            p_us(&single, 0.99),
        );
        eprintln!("workers test: p50 {m50:.0} µs over 3 workers, {s50:.0} µs in one process; p99 {m99:.0} / {s99:.0} µs");
        let floor = SERVICE_DELAY.as_secs_f64() * 1e6;
        assert!(m50 >= floor && s50 >= floor, "nothing is faster than the stand-in's delay");
        assert!(
            m50 <= 3.0 * s50 + 1_000.0 && s50 <= 3.0 * m50 + 1_000.0,
            "p50 {m50:.0} µs over workers against {s50:.0} µs in one process"
        );
        assert!(
            m99 <= 3.0 * s99 + 5_000.0 && s99 <= 3.0 * m99 + 5_000.0,
            "p99 {m99:.0} µs over workers against {s99:.0} µs in one process"
        );
    });
    assert_eq!(
        children.exit_codes(Duration::from_secs(10)),
        vec![Some(0); 3],
        "the workers leave when the run says bye"
    );
}

#[test]
fn a_worker_killed_mid_phase_fails_the_phase_naming_it() {
    let _alone = crate::alone();
    let nats = natskit::NatsServer::start().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut children = worker_processes(nats.url(), "killed-worker", 2, logs.path());
    let rt = runtime();
    let err = rt.block_on(async {
        let stand_in = Responder::start(nats.url(), stand_in_spec()).await.unwrap();
        let client = load::connect(nats.url(), "workers-test").await.unwrap();
        let senders = Publishers::connect(nats.url(), "workers-test", 1)
            .await
            .unwrap();
        let workers = Workers::gather(&client, "killed-worker", 2, Duration::from_secs(30), |_| {})
            .await
            .unwrap();
        let victim = children.pids()[1].1;
        let kill = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // SIGKILL: no goodbye, as a crashed host or a pulled cable.
            let _ = Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status();
        });
        let out = distributed(&workers, &phase(&senders, "m", 400.0, 2_400)).await;
        kill.await.unwrap();
        workers.dismiss().await;
        stand_in.stop().await.unwrap();
        match out {
            Ok((o, _)) => panic!(
                "the phase passed without a worker: sent {} of 2400",
                o.record.sent
            ),
            Err(e) => format!("{e:#}"),
        }
    });
    eprintln!("workers test: {err}");
    assert!(err.contains("worker p1"), "{err}");
    assert!(err.contains("vanished"), "{err}");
    assert!(
        err.contains("rather than count only the workers that are left"),
        "{err}"
    );
    let codes = children.exit_codes(Duration::from_secs(10));
    assert_eq!(codes[0], Some(0), "the surviving worker leaves cleanly");
}

#[test]
fn worker_containers_join_offer_their_slices_and_leave_nothing_behind() {
    let _alone = crate::alone();
    if crate::infra::docker_tests_skipped() {
        eprintln!("ROSEY_SKIP_DOCKER_TESTS=1: skipping the worker container test");
        return;
    }
    if let Err(err) = harness::provision::docker_answers() {
        panic!("{err:#}\n(set ROSEY_SKIP_DOCKER_TESTS=1 to skip the tests that need Docker)");
    }
    use harness::workers::local::{build_image, leftovers, WorkerContainers};
    let nats = natskit::NatsServer::start().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let image = build_image(std::path::Path::new(env!("CARGO_BIN_EXE_rosey-loadgen"))).unwrap();
    let run_id = "container-workers-test";
    let containers = WorkerContainers::start(&image, 2, nats.url(), run_id, logs.path()).unwrap();
    assert_eq!(containers.pids().len(), 2, "both containers run");
    runtime().block_on(async {
        let stand_in = Responder::start(nats.url(), stand_in_spec()).await.unwrap();
        let client = load::connect(nats.url(), "workers-test").await.unwrap();
        let senders = Publishers::connect(nats.url(), "workers-test", 1)
            .await
            .unwrap();
        let workers = Workers::gather(&client, run_id, 2, Duration::from_secs(60), |_| {})
            .await
            .unwrap();
        let (merged, figures) = distributed(&workers, &phase(&senders, "m", 200.0, 400))
            .await
            .unwrap();
        workers.dismiss().await;
        stand_in.stop().await.unwrap();
        assert_eq!((merged.record.sent, merged.record.confirmed), (400, 400));
        let mut names: Vec<&str> = figures.iter().map(|w| w.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["c0", "c1"]);
        assert!(
            figures.iter().all(|w| w.host.ends_with("(container)")),
            "a worker says it runs in a container: {figures:?}"
        );
    });
    drop(containers);
    assert!(
        logs.path().join("loadgen-c0.log").is_file(),
        "the containers' logs are kept"
    );
    assert_eq!(
        leftovers(run_id).unwrap(),
        Vec::<String>::new(),
        "no container of the run is left"
    );
}

#[test]
fn a_run_whose_workers_never_join_says_how_to_start_them() {
    let _alone = crate::alone();
    let nats = natskit::NatsServer::start().unwrap();
    let err = runtime().block_on(async {
        let client = load::connect(nats.url(), "workers-test").await.unwrap();
        match Workers::gather(&client, "nobody-comes", 2, Duration::from_secs(2), |_| {}).await {
            Ok(_) => panic!("gathered workers that do not exist"),
            Err(e) => format!("{e:#}"),
        }
    });
    assert!(
        err.contains("0 of 2 workers joined run nobody-comes"),
        "{err}"
    );
    assert!(
        err.contains("rosey-loadgen --nats-url <url> --run-id nobody-comes"),
        "{err}"
    );
}
