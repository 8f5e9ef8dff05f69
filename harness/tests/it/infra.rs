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
async fn local_provisioning_keeps_the_log() {
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
async fn external_provisioning_reads_the_server_version() {
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

fn docker_tests_skipped() -> bool {
    std::env::var("ROSEY_SKIP_DOCKER_TESTS").is_ok_and(|v| v == "1")
}

/// The container path: official image if available, else built locally `FROM scratch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_provisioning_round_trip() {
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
    let pid = std::process::id();
    let sampler = Sampler::spawn(vec![("harness".into(), pid)], Duration::from_millis(100));
    let phase = sampler.begin_phase();
    let burn_until = Instant::now() + Duration::from_millis(800);
    let mut x = 0u64;
    while Instant::now() < burn_until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    // Allocate and touch 64 MB so RSS rises measurably.
    let big = vec![1u8; 64 << 20];
    std::hint::black_box(&big);
    let (resources, timeline) = phase.end(1000);
    let r = resources
        .iter()
        .find(|r| r.process == "harness")
        .expect("harness sampled");
    let cpu = r.cpu_user_s + r.cpu_system_s;
    assert!(
        cpu >= 0.5,
        "burned ~0.8 s of CPU but measured {cpu} s: {r:?}"
    );
    assert!(r.cpu_percent > 50.0, "{r:?}");
    let per_event = r.cpu_us_per_event.unwrap();
    assert!((per_event - cpu * 1e6 / 1000.0).abs() < 1e-6);
    assert!(r.rss_end_bytes >= r.rss_start_bytes + (32 << 20), "{r:?}");
    assert!(r.rss_max_bytes >= r.rss_end_bytes);
    assert!(timeline.len() >= 5, "{} samples", timeline.len());
    assert!(timeline.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    drop(big);
}
