//! The three-node cluster in containers: it forms, each fault is applied and removed and seen
//! from inside the cluster, and nothing the harness created is left behind.

use harness::cluster::{Cluster, FaultKind, Target, LABEL};
use std::time::{Duration, Instant};

/// Docker is needed; without it the test says so and passes (CI has Docker).
fn docker_or_skip() -> bool {
    match harness::provision::docker_answers() {
        Ok(()) => true,
        Err(err) => {
            eprintln!("SKIPPED: the cluster tests need Docker: {err:#}");
            false
        }
    }
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
