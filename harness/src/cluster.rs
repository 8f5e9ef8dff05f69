//! A three-node NATS cluster in containers, and the faults a run injects into it.
//!
//! [`Cluster::start`] creates a private Docker network and three nats-server containers on it
//! (the image [`crate::provision`] chooses: the official one if present, else one built locally
//! `FROM scratch` around the nats-server binary), each with JetStream and its own store, routed
//! to the other two by their names on that network (`n1`, `n2`, `n3`). Readiness is proven over
//! NATS, never by sleeping: every node answers a request sent from every other node (the routes
//! carry traffic) and answers `$JS.API.INFO` (JetStream has a meta leader).
//!
//! Clients reach the nodes over the container network (the bridge's addresses are routable from
//! the host on Linux: no Docker proxy in the measured path); where they are not (Docker Desktop),
//! through ports published on the host's loopback. [`Cluster::client_path`] says which, for the
//! environment fingerprint.
//!
//! [`ClusterControl`] applies and removes the faults of [`FaultKind`] to one node: kill (SIGKILL,
//! later started again on the same store), pause (`docker pause`: frozen, its sockets open),
//! partition (disconnected from the network, later connected again under the same name), and a
//! slow link (added delay and packet loss, `tc qdisc … netem` on the host's end of the node's
//! virtual interface, found through the node's own `/sys/class/net/*/iflink`; this needs `tc`
//! from iproute2 and a kernel with the netem queueing discipline, and says so when either is
//! missing).
//! Dropping the [`Cluster`] keeps each node's log in the run directory and removes its
//! containers and its network, whatever state a fault left them in.

use crate::provision::{docker, docker_answers, read_server_info, DOCKER_QUICK_TIMEOUT};
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes in the cluster; JetStream streams keep this many replicas.
pub const NODES: usize = 3;
/// The label on every container and network a cluster creates (value: the cluster's id).
pub const LABEL: &str = "rosey-bench.cluster";
/// How long the cluster may take to form (routes up, a JetStream meta leader elected).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node started again may take to accept clients.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_PORT: u16 = 4222;
const MONITOR_PORT: u16 = 8222;

/// How the harness and the services reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientPath {
    /// The containers' own addresses on the private network (no proxy).
    ContainerNetwork,
    /// Ports published on the host's loopback (Docker's proxy in the path).
    PublishedPorts,
}

impl ClientPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientPath::ContainerNetwork => "container network",
            ClientPath::PublishedPorts => "published ports",
        }
    }
}

/// Which node a fault hits, chosen when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The JetStream meta leader (the node that places streams and consumers).
    MetaLeader,
    /// A node that is not the meta leader (the first by name).
    NonLeader,
}

/// What happens to the node. In `bench.toml`: `fault = "kill"`, or for a slow link
/// `fault = { slow_link = { delay_ms = 50.0, loss_pct = 1.0 } }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL; at the fault's end the container starts again on its store.
    Kill,
    /// `docker pause` (the process frozen, its connections open); unpaused at the end.
    Pause,
    /// Disconnected from the cluster's network (clients and routes cut); connected again at
    /// the end under the same name.
    Partition,
    /// Every packet to the node delayed by `delay_ms` and dropped with probability `loss_pct`
    /// (netem on the host's end of its link); removed at the end.
    SlowLink { delay_ms: f64, loss_pct: f64 },
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::SlowLink { .. } => "slow_link",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as the harness knows it.
#[derive(Debug, Clone)]
struct Node {
    /// Name on the network and in the cluster (`n1`).
    name: String,
    container: String,
    /// Where clients connect (`ip:4222` or `127.0.0.1:<published>`).
    client_addr: String,
    /// Where its monitoring endpoint answers.
    monitor_addr: String,
}

struct State {
    id: String,
    network: String,
    image: String,
    path: ClientPath,
    nodes: Vec<Node>,
    run_dir: PathBuf,
}

/// A running cluster. Dropping it removes everything it created.
pub struct Cluster {
    state: Arc<Mutex<State>>,
}

/// Applies faults to a running cluster (cheap to clone; blocking: call from a blocking thread).
#[derive(Clone)]
pub struct ClusterControl {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for ClusterControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterControl").finish_non_exhaustive()
    }
}

/// A fault in place, to be removed with [`ClusterControl::remove`].
#[derive(Debug, Clone)]
pub struct AppliedFault {
    pub kind: FaultKind,
    /// The node's name (`n2`).
    pub node: String,
    /// Whether it was the meta leader when the fault began.
    pub was_meta_leader: bool,
    container: String,
    /// A slow link: the host's end of the node's interface.
    interface: Option<String>,
}

impl Cluster {
    /// Starts the network and the three nodes from `image` (`name:tag`) and waits until the
    /// cluster has formed. Logs go to `<run_dir>/nats-cluster/` when it is dropped.
    pub fn start(run_dir: &Path, image: &str) -> Result<Cluster> {
        docker_answers()?;
        let id = format!(
            "{:x}{:04x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() & 0xffff)
                .unwrap_or(0)
        );
        let network = format!("rosey-bench-{id}");
        let label = format!("{LABEL}={id}");
        docker(
            &["network", "create", "--label", &label, &network],
            DOCKER_QUICK_TIMEOUT,
        )
        .with_context(|| format!("creating the cluster's network {network}"))?;
        // From here on dropping `cluster` removes what exists.
        let cluster = Cluster {
            state: Arc::new(Mutex::new(State {
                id: id.clone(),
                network: network.clone(),
                image: image.to_owned(),
                path: ClientPath::ContainerNetwork,
                nodes: Vec::new(),
                run_dir: run_dir.to_owned(),
            })),
        };
        let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        let routes = names
            .iter()
            .map(|n| format!("nats://{n}:6222"))
            .collect::<Vec<_>>()
            .join(",");
        for name in &names {
            let container_name = format!("rosey-bench-{id}-{name}");
            let out = docker(
                &[
                    "run",
                    "-d",
                    "--name",
                    &container_name,
                    "--label",
                    &label,
                    "--network",
                    &network,
                    "--network-alias",
                    name,
                    "-p",
                    "127.0.0.1::4222",
                    "-p",
                    "127.0.0.1::8222",
                    image,
                    "-js",
                    "-sd",
                    "/data",
                    "-n",
                    name,
                    "-m",
                    "8222",
                    "--cluster_name",
                    "rosey-bench",
                    "-cluster",
                    "nats://0.0.0.0:6222",
                    "-routes",
                    &routes,
                ],
                DOCKER_QUICK_TIMEOUT,
            )
            .with_context(|| format!("starting cluster node {name} from {image}"))?;
            let container = out.stdout.trim().to_owned();
            cluster.lock().nodes.push(Node {
                name: name.clone(),
                container,
                client_addr: String::new(),
                monitor_addr: String::new(),
            });
        }
        // Addresses: the container network if the host reaches it, else the published ports.
        let mut nodes = cluster.lock().nodes.clone();
        for node in &mut nodes {
            address(node, ClientPath::ContainerNetwork)?;
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        // Either the server is still starting or its address is not routable here: the
        // published port tells which.
        let mut published = nodes[0].clone();
        address(&mut published, ClientPath::PublishedPorts)?;
        let direct = loop {
            match read_server_info(&nodes[0].client_addr, Duration::from_millis(500)) {
                Ok(_) => break true,
                Err(_) if Instant::now() < deadline => {
                    if read_server_info(&published.client_addr, Duration::from_millis(500)).is_ok()
                    {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => {
                    return Err(err).context("cluster node n1 never accepted a client");
                }
            }
        };
        let path = if direct {
            ClientPath::ContainerNetwork
        } else {
            for node in &mut nodes {
                address(node, ClientPath::PublishedPorts)?;
            }
            ClientPath::PublishedPorts
        };
        {
            let mut state = cluster.lock();
            state.nodes = nodes;
            state.path = path;
        }
        let urls: Vec<String> = cluster
            .lock()
            .nodes
            .iter()
            .map(|n| n.client_addr.clone())
            .collect();
        prove_formed(&urls, &id, deadline).context(
            "the cluster did not form (see the node logs in the run directory's nats-cluster/)",
        )?;
        Ok(cluster)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client URL: every node, comma separated.
    pub fn url(&self) -> String {
        self.lock()
            .nodes
            .iter()
            .map(|n| format!("nats://{}", n.client_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_path(&self) -> ClientPath {
        self.lock().path
    }

    /// The cluster's id: the value of [`LABEL`] on its containers and network.
    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    pub fn image(&self) -> String {
        self.lock().image.clone()
    }

    pub fn control(&self) -> ClusterControl {
        ClusterControl {
            state: Arc::clone(&self.state),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let state = self.lock();
        let logs = state.run_dir.join("nats-cluster");
        if !state.nodes.is_empty() {
            if let Err(err) = std::fs::create_dir_all(&logs) {
                tracing::warn!(error = %err, "creating {}", logs.display());
            }
        }
        for node in &state.nodes {
            // A paused container keeps its log but cannot be removed before it is unpaused.
            let _ = docker(&["unpause", &node.container], DOCKER_QUICK_TIMEOUT);
            if let Ok(out) = docker(&["logs", &node.container], DOCKER_QUICK_TIMEOUT) {
                let text = format!("{}{}", out.stdout, out.stderr);
                let _ = std::fs::write(logs.join(format!("{}.log", node.name)), text);
            }
            if let Err(err) = docker(&["rm", "-f", "-v", &node.container], DOCKER_QUICK_TIMEOUT) {
                tracing::warn!(error = %format!("{err:#}"), node = %node.name, "removing a cluster node");
            }
        }
        if let Err(err) = docker(&["network", "rm", &state.network], DOCKER_QUICK_TIMEOUT) {
            tracing::warn!(error = %format!("{err:#}"), network = %state.network, "removing the cluster's network");
        }
    }
}

/// Fills in `node`'s addresses for `path` from `docker inspect`.
fn address(node: &mut Node, path: ClientPath) -> Result<()> {
    match path {
        ClientPath::ContainerNetwork => {
            let out = docker(
                &[
                    "inspect",
                    "--format",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                    &node.container,
                ],
                DOCKER_QUICK_TIMEOUT,
            )?;
            let ip = out
                .stdout
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow!("node {} has no address on its network", node.name))?
                .to_owned();
            node.client_addr = format!("{ip}:{CLIENT_PORT}");
            node.monitor_addr = format!("{ip}:{MONITOR_PORT}");
        }
        ClientPath::PublishedPorts => {
            let port = |p: u16| -> Result<String> {
                let out = docker(
                    &["port", &node.container, &format!("{p}/tcp")],
                    DOCKER_QUICK_TIMEOUT,
                )?;
                let line = out
                    .stdout
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                ensure!(!line.is_empty(), "node {} publishes no port {p}", node.name);
                Ok(line)
            };
            node.client_addr = port(CLIENT_PORT)?;
            node.monitor_addr = port(MONITOR_PORT)?;
        }
    }
    Ok(())
}

/// Every node answers a request from every other node (routes carry traffic both ways), and
/// `$JS.API.INFO` answers without an error on every node (a meta leader exists).
fn prove_formed(addrs: &[String], id: &str, deadline: Instant) -> Result<()> {
    let addrs = addrs.to_vec();
    let id = id.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime for the cluster check")?
            .block_on(prove_formed_async(&addrs, &id, deadline))
    })
    .join()
    .map_err(|_| anyhow!("the cluster check panicked"))?
}

async fn prove_formed_async(addrs: &[String], id: &str, deadline: Instant) -> Result<()> {
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut clients = Vec::new();
    for addr in addrs {
        let client = loop {
            match async_nats::ConnectOptions::new()
                .name("rosey-bench-cluster-check")
                .connect(addr.as_str())
                .await
            {
                Ok(c) => break c,
                Err(err) if remaining().is_zero() => {
                    return Err(anyhow!(err)).context(format!("connecting to node {addr}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        clients.push(client);
    }
    let mut responders = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let mut sub = client
            .subscribe(format!("rosey.bench.cluster.{id}.ping.{i}"))
            .await?;
        let c = client.clone();
        responders.push(tokio::spawn(async move {
            use futures::StreamExt as _;
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = c.publish(reply, "pong".into()).await;
                }
            }
        }));
        crate::load::ensure_subscribed(client).await?;
    }
    let result = async {
        for (to, _) in clients.iter().enumerate() {
            for (from, client) in clients.iter().enumerate() {
                if from == to {
                    continue;
                }
                let subject = format!("rosey.bench.cluster.{id}.ping.{to}");
                loop {
                    let asked = tokio::time::timeout(
                        Duration::from_millis(500),
                        client.request(subject.clone(), "ping".into()),
                    )
                    .await;
                    match asked {
                        Ok(Ok(_)) => break,
                        _ if remaining().is_zero() => bail!(
                            "node {} does not reach node {} over the routes",
                            addrs[from],
                            addrs[to]
                        ),
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
        for (i, client) in clients.iter().enumerate() {
            loop {
                let info = tokio::time::timeout(
                    Duration::from_millis(1000),
                    client.request("$JS.API.INFO", "".into()),
                )
                .await;
                let last = match info {
                    Ok(Ok(m)) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&m.payload).unwrap_or_default();
                        if v.get("error").is_none() {
                            break;
                        }
                        v["error"].to_string()
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 1 s".to_owned(),
                };
                if remaining().is_zero() {
                    bail!("JetStream on node {} is not ready: {last}", addrs[i]);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
    .await;
    for r in responders {
        r.abort();
    }
    result
}

/// The host's end of the container's network interface: the container's own
/// `/sys/class/net/<if>/iflink` (read through `/proc/<pid>/root`) names the index of its peer,
/// which `/sys/class/net/*/ifindex` on the host names.
pub fn host_interface(container: &str) -> Result<String> {
    let pid = crate::provision::container_pid(container)?;
    let inside = PathBuf::from(format!("/proc/{pid}/root/sys/class/net"));
    let read = |p: PathBuf| -> Result<String> {
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned())
    };
    let mut peers = Vec::new();
    for entry in
        std::fs::read_dir(&inside).with_context(|| format!("listing {}", inside.display()))?
    {
        let entry = entry?;
        if entry.file_name() == "lo" {
            continue;
        }
        peers.push(read(entry.path().join("iflink"))?);
    }
    ensure!(
        peers.len() == 1,
        "the container has {} interfaces besides lo, not one",
        peers.len()
    );
    let host = Path::new("/sys/class/net");
    for entry in std::fs::read_dir(host).context("listing /sys/class/net")? {
        let entry = entry?;
        if read(entry.path().join("ifindex")).ok().as_deref() == Some(peers[0].as_str()) {
            return Ok(entry.file_name().to_string_lossy().into_owned());
        }
    }
    bail!(
        "no interface of this host has index {} (the harness must run in the Docker host's \
         network namespace)",
        peers[0]
    )
}

/// Runs `tc` with `args`; says what is missing when `tc` or the kernel's netem is.
fn tc(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("tc")
        .args(args)
        .output()
        .context(
            "running tc: install iproute2 (`apt-get install iproute2`) for a slow-link fault",
        )?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if err.contains("qdisc kind is unknown") {
        bail!(
            "this kernel has no netem queueing discipline (sch_netem), so a slow link cannot be \
             emulated here (tc said: {err})"
        );
    }
    bail!("tc {} failed: {err}", args.join(" "))
}

/// GET `path` from a node's monitoring endpoint, as JSON.
fn monitor(addr: &str, path: &str, timeout: Duration) -> Result<serde_json::Value> {
    let socket = addr
        .parse()
        .with_context(|| format!("monitoring address {addr:?}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading {path} from {addr}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("{addr}{path}: no HTTP body"))?;
    serde_json::from_str(body).with_context(|| format!("{addr}{path}: not JSON"))
}

impl ClusterControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host pids of the nodes running now, named `nats-n1` …, for the sampler.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.lock()
            .nodes
            .iter()
            .filter_map(|n| {
                crate::provision::container_pid(&n.container)
                    .ok()
                    .map(|pid| (format!("nats-{}", n.name), pid))
            })
            .collect()
    }

    /// Names of the nodes (`n1`, `n2`, `n3`).
    pub fn node_names(&self) -> Vec<String> {
        self.lock().nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The JetStream meta leader's name, as the first node that answers says.
    pub fn meta_leader(&self) -> Result<String> {
        let nodes = self.lock().nodes.clone();
        let mut last = anyhow!("no node answered");
        for node in &nodes {
            match monitor(&node.monitor_addr, "/jsz", Duration::from_secs(1)) {
                Ok(v) => match v["meta_cluster"]["leader"].as_str() {
                    Some(leader) if !leader.is_empty() => return Ok(leader.to_owned()),
                    _ => last = anyhow!("node {} knows no meta leader", node.name),
                },
                Err(err) => last = err,
            }
        }
        Err(last).context("asking the cluster for its JetStream meta leader")
    }

    /// The node a client connection named `name` is on (from each node's `/connz`), if one is.
    pub fn node_of_connection(&self, name: &str) -> Option<String> {
        let nodes = self.lock().nodes.clone();
        nodes.into_iter().find_map(|node| {
            let v = monitor(
                &node.monitor_addr,
                "/connz?limit=4096",
                Duration::from_secs(1),
            )
            .ok()?;
            let here = v["connections"]
                .as_array()?
                .iter()
                .any(|c| c["name"].as_str() == Some(name));
            here.then_some(node.name)
        })
    }

    /// The routes `node` has open, by remote server name (empty if it does not answer).
    pub fn routes_of(&self, node: &str) -> Result<Vec<String>> {
        let n = self.node(node)?;
        let v = monitor(&n.monitor_addr, "/routez", Duration::from_secs(1))?;
        let mut names: Vec<String> = v["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["remote_name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Whether a client can reach `node` now (it sends INFO within `timeout`).
    pub fn answers(&self, node: &str, timeout: Duration) -> bool {
        self.node(node)
            .map(|n| read_server_info(&n.client_addr, timeout).is_ok())
            .unwrap_or(false)
    }

    fn node(&self, name: &str) -> Result<Node> {
        self.lock()
            .nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| anyhow!("the cluster has no node {name}"))
    }

    /// Whether a slow link can be applied to `node` here (`tc` present, the kernel has netem):
    /// a netem of no delay is put on its link and taken off again.
    pub fn check_slow_link(&self, node: &str) -> Result<()> {
        let dev = self.host_interface(node)?;
        tc(&[
            "qdisc", "replace", "dev", &dev, "root", "netem", "delay", "0ms",
        ])?;
        tc(&["qdisc", "del", "dev", &dev, "root"])
    }

    /// The URL of `node` alone (a client pinned to it).
    pub fn client_url(&self, node: &str) -> Result<String> {
        Ok(format!("nats://{}", self.node(node)?.client_addr))
    }

    /// The host's end of `node`'s network interface (see [`host_interface`]).
    pub fn host_interface(&self, node: &str) -> Result<String> {
        host_interface(&self.node(node)?.container)
    }

    /// Picks the node for `target`.
    pub fn pick(&self, target: Target) -> Result<String> {
        let leader = self.meta_leader()?;
        Ok(match target {
            Target::MetaLeader => leader,
            Target::NonLeader => self
                .node_names()
                .into_iter()
                .find(|n| *n != leader)
                .ok_or_else(|| anyhow!("every node is the leader?"))?,
        })
    }

    /// Applies `kind` to `node`.
    pub fn apply(&self, kind: FaultKind, node: &str) -> Result<AppliedFault> {
        let n = self.node(node)?;
        let was_meta_leader = self.meta_leader().map(|l| l == node).unwrap_or(false);
        let network = self.lock().network.clone();
        let mut interface = None;
        match kind {
            FaultKind::Kill => docker(
                &["kill", "--signal", "KILL", &n.container],
                DOCKER_QUICK_TIMEOUT,
            )
            .map(drop),
            FaultKind::Pause => docker(&["pause", &n.container], DOCKER_QUICK_TIMEOUT).map(drop),
            FaultKind::Partition => docker(
                &["network", "disconnect", &network, &n.container],
                DOCKER_QUICK_TIMEOUT,
            )
            .map(drop),
            FaultKind::SlowLink { delay_ms, loss_pct } => {
                host_interface(&n.container).and_then(|dev| {
                    let (delay, loss) = (format!("{delay_ms}ms"), format!("{loss_pct}%"));
                    tc(&[
                        "qdisc", "replace", "dev", &dev, "root", "netem", "delay", &delay, "loss",
                        &loss,
                    ])?;
                    interface = Some(dev);
                    Ok(())
                })
            }
        }
        .with_context(|| format!("applying a {kind} to cluster node {node}"))?;
        Ok(AppliedFault {
            kind,
            node: node.to_owned(),
            was_meta_leader,
            container: n.container,
            interface,
        })
    }

    /// Ends `fault`: the node runs, unfrozen and connected, and accepts clients again (waits up
    /// to 30 s). Returns how long that took after the command.
    pub fn remove(&self, fault: &AppliedFault) -> Result<Duration> {
        let network = self.lock().network.clone();
        let started = Instant::now();
        match fault.kind {
            FaultKind::Kill => docker(&["start", &fault.container], DOCKER_QUICK_TIMEOUT).map(drop),
            FaultKind::Pause => {
                docker(&["unpause", &fault.container], DOCKER_QUICK_TIMEOUT).map(drop)
            }
            FaultKind::SlowLink { .. } => match &fault.interface {
                Some(dev) => tc(&["qdisc", "del", "dev", dev, "root"]),
                None => Ok(()),
            },
            FaultKind::Partition => docker(
                &[
                    "network",
                    "connect",
                    "--alias",
                    &fault.node,
                    &network,
                    &fault.container,
                ],
                DOCKER_QUICK_TIMEOUT,
            )
            .map(drop),
        }
        .with_context(|| format!("ending the {} of cluster node {}", fault.kind, fault.node))?;
        // A started or reconnected container may have a new address (or published port).
        let path = self.lock().path;
        let mut node = self.node(&fault.node)?;
        address(&mut node, path)?;
        {
            let mut state = self.lock();
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == fault.node) {
                if n.client_addr != node.client_addr {
                    tracing::warn!(node = %fault.node, old = %n.client_addr, new = %node.client_addr, "a cluster node came back at another address");
                }
                *n = node.clone();
            }
        }
        let deadline = started + NODE_START_TIMEOUT;
        while read_server_info(&node.client_addr, Duration::from_millis(500)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "cluster node {} did not accept clients within {NODE_START_TIMEOUT:?} after its {} ended",
                fault.node,
                fault.kind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(started.elapsed())
    }
}
