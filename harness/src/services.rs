//! The services under test as real child processes: `rosey-dbservice` on a database in the run
//! directory (with commit notices on) and `rosey-bot`.
//!
//! Readiness is proven over NATS, never by sleeping: the database service must answer
//! `rosey.db.service.ping`, and the bot must turn a platform event into a database event that
//! carries our correlation id. Logs go to `<run_dir>/logs/<name>.log` (appended across
//! restarts). Stopping sends SIGTERM, waits up to a deadline, then kills. The database service
//! can be restarted (gracefully or with SIGKILL) on the same database for the restart scenario,
//! and its pid changes then, so callers re-read [`Services::pids`].

use anyhow::{bail, Context};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use rosey_protocol::platform::BotStats;
use rosey_protocol::{db::ServiceStats, headers, platform, subjects};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The two binaries under test. A parameter of the engine so that the regression gate can run
/// interleaved A/B rounds with two builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBinaries {
    pub dbservice: PathBuf,
    pub bot: PathBuf,
}

/// How to start the services.
#[derive(Debug, Clone)]
pub struct ServicesSpec {
    pub binaries: ServiceBinaries,
    pub nats_url: String,
    /// `<run_dir>/logs` is created inside it.
    pub run_dir: PathBuf,
    pub db_path: PathBuf,
    /// `core` or `durable`.
    pub mode: String,
    pub start_bot: bool,
    pub bot_channel: String,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    /// Extra flags for `rosey-dbservice` and `rosey-bot`.
    pub dbservice_args: Vec<String>,
    pub bot_args: Vec<String>,
    /// `RUST_LOG` of the services' processes (their logs go to `<run_dir>/logs`).
    pub log_filter: String,
}

/// How to stop a process (`graceful` or `kill` in a configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopHow {
    /// SIGTERM, wait up to the stop timeout, then SIGKILL.
    Graceful,
    /// SIGKILL at once (a crash).
    Kill,
}

impl StopHow {
    /// The name a configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StopHow::Graceful => "graceful",
            StopHow::Kill => "kill",
        }
    }
}

#[derive(Debug)]
struct Running {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
}

/// Timings of one restart of the database service.
#[derive(Debug, Clone)]
pub struct Restart {
    /// From the stop request to the process being gone.
    pub stop: Duration,
    /// From spawning the new process to its first answered ping.
    pub ready: Duration,
    /// The new process's instance id (its first ping reply), which its commit notices carry.
    pub instance: String,
}

/// The running services.
#[derive(Debug)]
pub struct Services {
    spec: ServicesSpec,
    client: Client,
    dbservice: Option<Running>,
    bot: Option<Running>,
    /// The mode the database service currently runs in.
    mode: String,
    /// False when the services were started by someone else (see [`Services::attach`]).
    managed: bool,
}

impl Services {
    /// Start the database service (and the bot, if the spec says so) and wait until both are ready.
    pub async fn start(spec: ServicesSpec, client: Client) -> anyhow::Result<Services> {
        std::fs::create_dir_all(spec.run_dir.join("logs")).context("create logs directory")?;
        for (what, path) in [
            ("rosey-dbservice", &spec.binaries.dbservice),
            ("rosey-bot", &spec.binaries.bot),
        ] {
            if what == "rosey-bot" && !spec.start_bot {
                continue;
            }
            anyhow::ensure!(
                path.is_file(),
                "{what} binary not found at {}",
                path.display()
            );
        }
        let mode = spec.mode.clone();
        let mut services = Services {
            spec,
            client,
            dbservice: None,
            bot: None,
            mode,
            managed: true,
        };
        services.start_dbservice(None).await?;
        if services.spec.start_bot {
            services.start_bot().await?;
        }
        Ok(services)
    }

    /// Use a database service somebody else runs (in-process in tests, or a deployment): it must
    /// answer a ping before `ready_timeout`. Nothing is started, stopped or sampled, and restarts
    /// are refused.
    pub async fn attach(
        client: Client,
        run_dir: &Path,
        ready_timeout: Duration,
    ) -> anyhow::Result<Services> {
        let deadline = Instant::now() + ready_timeout;
        let stats = loop {
            match ping(&client, Duration::from_millis(500)).await {
                Ok(stats) => break stats,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context("the attached database service is not answering"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let spec = ServicesSpec {
            binaries: ServiceBinaries {
                dbservice: PathBuf::new(),
                bot: PathBuf::new(),
            },
            nats_url: String::new(),
            run_dir: run_dir.to_owned(),
            db_path: PathBuf::new(),
            mode: stats.mode.clone(),
            start_bot: false,
            bot_channel: String::new(),
            ready_timeout,
            stop_timeout: Duration::ZERO,
            dbservice_args: Vec::new(),
            bot_args: Vec::new(),
            log_filter: String::new(),
        };
        Ok(Services {
            spec,
            client,
            dbservice: None,
            bot: None,
            mode: stats.mode,
            managed: false,
        })
    }

    /// True when the harness started these processes (and can restart them).
    pub fn managed(&self) -> bool {
        self.managed
    }

    /// `(process name, pid)` of every running service, for the sampler.
    pub fn pids(&self) -> Vec<(String, u32)> {
        [&self.dbservice, &self.bot]
            .into_iter()
            .flatten()
            .map(|r| (r.name.to_owned(), r.pid))
            .collect()
    }

    pub fn dbservice_pid(&self) -> Option<u32> {
        self.dbservice.as_ref().map(|r| r.pid)
    }

    pub fn bot_pid(&self) -> Option<u32> {
        self.bot.as_ref().map(|r| r.pid)
    }

    pub fn bot_channel(&self) -> Option<&str> {
        self.bot.as_ref().map(|_| self.spec.bot_channel.as_str())
    }

    /// The mode the database service runs in now.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    pub fn db_path(&self) -> &Path {
        &self.spec.db_path
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.spec.run_dir.join("logs").join(format!("{name}.log"))
    }

    /// Ask the database service for its counters.
    pub async fn ping(&self) -> anyhow::Result<ServiceStats> {
        ping(&self.client, Duration::from_secs(2)).await
    }

    /// The counters of both services: the database service's ping, and the bot's stats when a
    /// bot runs.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let db = self.ping().await?;
        let bot = match self.bot_channel() {
            Some(channel) => Some(bot_stats(&self.client, channel, Duration::from_secs(2)).await?),
            None => None,
        };
        Ok(Counters { db, bot })
    }

    /// Start the database service (in `mode`, or the current one) and wait until it answers a
    /// ping. Returns the time from spawn to ready.
    pub async fn start_dbservice(&mut self, mode: Option<&str>) -> anyhow::Result<Duration> {
        Ok(self.start_dbservice_pinged(mode).await?.0)
    }

    /// [`Services::start_dbservice`], also returning the new process's first ping reply.
    async fn start_dbservice_pinged(
        &mut self,
        mode: Option<&str>,
    ) -> anyhow::Result<(Duration, ServiceStats)> {
        anyhow::ensure!(
            self.managed,
            "the database service is not managed by the harness (attached)"
        );
        anyhow::ensure!(
            self.dbservice.is_none(),
            "the database service is already running"
        );
        if let Some(mode) = mode {
            self.mode = mode.to_owned();
        }
        let mut args: Vec<String> = vec![
            "--nats-url".into(),
            self.spec.nats_url.clone(),
            "--db-path".into(),
            self.spec.db_path.display().to_string(),
            "--mode".into(),
            self.mode.clone(),
            "--commit-notices".into(),
        ];
        args.extend(self.spec.dbservice_args.iter().cloned());
        let spawned = Instant::now();
        let mut running = self.spawn("dbservice", &self.spec.binaries.dbservice.clone(), &args)?;
        let deadline = spawned + self.spec.ready_timeout;
        let log = self.log_path("dbservice");
        let mut attempts = ReadyWait::new(deadline);
        let mut first_reply = None;
        let ready = loop {
            let result = ping(&self.client, Duration::from_millis(500))
                .await
                .map(|stats| first_reply = Some(stats));
            match attempts.after(result, &mut running, &log).await {
                Ok(true) => break Ok(()),
                Ok(false) => continue,
                Err(e) => break Err(e),
            }
        };
        match ready {
            Ok(()) => {
                let elapsed = spawned.elapsed();
                self.dbservice = Some(running);
                Ok((elapsed, first_reply.unwrap_or_default()))
            }
            Err(e) => {
                let _ = stop(running, StopHow::Kill, self.spec.stop_timeout).await;
                Err(e)
            }
        }
    }

    /// Stop the database service. Returns how long the process took to go away.
    pub async fn stop_dbservice(&mut self, how: StopHow) -> anyhow::Result<Duration> {
        let running = self
            .dbservice
            .take()
            .context("the database service is not running")?;
        stop(running, how, self.spec.stop_timeout).await
    }

    /// Stop (or kill) the database service and start it again on the same database.
    pub async fn restart_dbservice(
        &mut self,
        how: StopHow,
        mode: Option<&str>,
    ) -> anyhow::Result<Restart> {
        let stop = self.stop_dbservice(how).await?;
        let (ready, stats) = self.start_dbservice_pinged(mode).await?;
        Ok(Restart {
            stop,
            ready,
            instance: stats.instance,
        })
    }

    async fn start_bot(&mut self) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec![
            "--nats-url".into(),
            self.spec.nats_url.clone(),
            "--channel".into(),
            self.spec.bot_channel.clone(),
        ];
        // A durable database service gets durable events from the bot: stored by JetStream
        // and confirmed, not fire-and-forget.
        if self.mode == "durable" {
            args.push("--durable-events".into());
        }
        args.extend(self.spec.bot_args.iter().cloned());
        let mut running = self.spawn("bot", &self.spec.binaries.bot.clone(), &args)?;
        let deadline = Instant::now() + self.spec.ready_timeout;
        // The probe's subscription must be live before the first probe event is published.
        let mut sub = self
            .client
            .subscribe(subjects::HIGH_WATER)
            .await
            .context("subscribe for the bot probe")?;
        crate::load::ensure_subscribed(&self.client).await?;
        let probe_id = format!("bench-ready-{}", std::process::id());
        let subject = platform::in_subject(&self.spec.bot_channel, platform::kind::USERCOUNT);
        let log = self.log_path("bot");
        let mut attempts = ReadyWait::new(deadline);
        let ready = loop {
            let result = bot_probe(&self.client, &mut sub, &subject, &probe_id).await;
            match attempts.after(result, &mut running, &log).await {
                Ok(true) => break Ok(()),
                Ok(false) => continue,
                Err(e) => break Err(e),
            }
        };
        let _ = sub.unsubscribe().await;
        match ready {
            Ok(()) => {
                self.bot = Some(running);
                Ok(())
            }
            Err(e) => {
                let _ = stop(running, StopHow::Kill, self.spec.stop_timeout).await;
                Err(e)
            }
        }
    }

    fn spawn(&self, name: &'static str, binary: &Path, args: &[String]) -> anyhow::Result<Running> {
        let log_path = self.log_path(name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        use std::io::Write as _;
        writeln!(
            log,
            "--- rosey bench: starting {} {}",
            binary.display(),
            args.join(" ")
        )
        .context("write log header")?;
        let err = log.try_clone().context("duplicate log file")?;
        let child = tokio::process::Command::new(binary)
            .args(args)
            .env("RUST_LOG", &self.spec.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let pid = child.id().context("spawned child has no pid")?;
        Ok(Running { name, child, pid })
    }

    /// Stop everything: the bot first (it publishes into the service), then the service.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for running in [self.bot.take(), self.dbservice.take()]
            .into_iter()
            .flatten()
        {
            let name = running.name;
            if let Err(e) = stop(running, StopHow::Graceful, self.spec.stop_timeout).await {
                errors.push(format!("{name}: {e:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("stopping services: {}", errors.join("; "))
        }
    }
}

/// What both services count about themselves at one moment.
#[derive(Debug, Clone)]
pub struct Counters {
    pub db: ServiceStats,
    pub bot: Option<BotStats>,
}

/// Ask the bot of `channel` for its counters (`rosey.bot.<channel>.stats`).
pub async fn bot_stats(
    client: &Client,
    channel: &str,
    timeout: Duration,
) -> anyhow::Result<BotStats> {
    let reply = tokio::time::timeout(
        timeout,
        client.request(platform::bot_stats_subject(channel), Bytes::new()),
    )
    .await
    .context("bot stats request timed out")?
    .context("bot stats request")?;
    serde_json::from_slice(&reply.payload).context("bot stats reply")
}

/// Ask `rosey.db.service.ping`.
pub async fn ping(client: &Client, timeout: Duration) -> anyhow::Result<ServiceStats> {
    let reply = tokio::time::timeout(
        timeout,
        client.request(subjects::SERVICE_PING, Bytes::from_static(b"{}")),
    )
    .await
    .context("database service ping timed out")?
    .context("database service ping")?;
    let stats: ServiceStats =
        serde_json::from_slice(&reply.payload).context("database service ping reply")?;
    anyhow::ensure!(
        stats.success,
        "database service ping reply says success=false"
    );
    Ok(stats)
}

/// Publish a usercount event with a correlation id and wait (briefly) for the bot's high-water
/// event that carries it.
async fn bot_probe(
    client: &Client,
    sub: &mut async_nats::Subscriber,
    subject: &str,
    probe_id: &str,
) -> anyhow::Result<()> {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::CORRELATION_ID, probe_id);
    client
        .publish_with_headers(
            subject.to_owned(),
            h,
            Bytes::from_static(br#"{"count": 0}"#),
        )
        .await
        .context("publish bot probe")?;
    client.flush().await.context("flush bot probe")?;
    let wait = async {
        while let Some(msg) = sub.next().await {
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::CORRELATION_ID))
                .map(|v| v.as_str().to_owned());
            if id.as_deref() == Some(probe_id) {
                return Ok(());
            }
        }
        bail!("probe subscription closed")
    };
    tokio::time::timeout(Duration::from_millis(500), wait)
        .await
        .context("bot did not answer the probe")?
}

/// Bookkeeping of a readiness poll: each attempt waits for the service's answer; between failed
/// attempts (typically "no responders" while the service is still starting) it pauses briefly,
/// outside any measurement, and it gives up when the child exits or the deadline passes.
struct ReadyWait {
    deadline: Instant,
}

impl ReadyWait {
    fn new(deadline: Instant) -> ReadyWait {
        ReadyWait { deadline }
    }

    /// `Ok(true)`: ready. `Ok(false)`: try again. `Err`: give up.
    async fn after(
        &mut self,
        attempt: anyhow::Result<()>,
        running: &mut Running,
        log: &Path,
    ) -> anyhow::Result<bool> {
        let error = match attempt {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        if let Some(status) = running.child.try_wait().context("check child")? {
            bail!(
                "{} exited during start-up ({status}); log tail:\n{}",
                running.name,
                log_tail(log, 20)
            );
        }
        if Instant::now() >= self.deadline {
            bail!(
                "{} was not ready within the deadline (last probe: {error:#}); log tail:\n{}",
                running.name,
                log_tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(false)
    }
}

/// Stop one process; returns how long it took to exit.
async fn stop(mut running: Running, how: StopHow, timeout: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    if running.child.try_wait().context("check child")?.is_some() {
        return Ok(Duration::ZERO);
    }
    if how == StopHow::Graceful {
        // std has no way to send SIGTERM without unsafe code; `kill` is on every Unix.
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &running.pid.to_string()])
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            match tokio::time::timeout(timeout, running.child.wait()).await {
                Ok(status) => {
                    status.with_context(|| format!("wait for {}", running.name))?;
                    return Ok(t0.elapsed());
                }
                Err(_) => tracing::warn!(
                    name = running.name,
                    "did not exit after SIGTERM within the deadline; killing"
                ),
            }
        }
    }
    running
        .child
        .start_kill()
        .with_context(|| format!("kill {}", running.name))?;
    tokio::time::timeout(timeout, running.child.wait())
        .await
        .with_context(|| format!("{} did not exit after SIGKILL", running.name))?
        .with_context(|| format!("wait for {}", running.name))?;
    if how == StopHow::Graceful {
        bail!("{} had to be killed after the stop deadline", running.name);
    }
    Ok(t0.elapsed())
}

/// The last `lines` lines of a log file (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&p, 2), "c\nd");
        assert_eq!(log_tail(&dir.path().join("missing"), 2), "");
    }

    fn sh(name: &'static str, script: &str) -> Running {
        let child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        Running { name, child, pid }
    }

    #[tokio::test]
    async fn graceful_stop_sends_sigterm_and_waits() {
        let running = sh("sleeper", "exec sleep 30");
        let took = stop(running, StopHow::Graceful, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    /// A shell that ignores SIGTERM, returned only once the trap is installed: a SIGTERM sent
    /// before `trap` runs would end the shell, and the test would race the shell's start-up.
    async fn stubborn(dir: &std::path::Path) -> Running {
        let marker = dir.join("trap-installed");
        let script = format!(
            "trap '' TERM; : > '{}'; while true; do sleep 0.05; done",
            marker.display()
        );
        let running = sh("stubborn", &script);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "the shell never installed its trap"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_is_killed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let running = stubborn(dir.path()).await;
        let err = stop(running, StopHow::Graceful, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("had to be killed"), "{err:#}");
        std::fs::remove_file(dir.path().join("trap-installed")).unwrap();
        let running = stubborn(dir.path()).await;
        stop(running, StopHow::Kill, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readiness_gives_up_when_the_child_exits_and_quotes_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        std::fs::write(&log, "starting\nerror: database is locked\n").unwrap();
        let mut running = sh("svc", "exit 3");
        let mut wait = ReadyWait::new(Instant::now() + Duration::from_secs(10));
        let err = loop {
            match wait
                .after(Err(anyhow::anyhow!("no responders")), &mut running, &log)
                .await
            {
                Ok(false) => continue,
                Ok(true) => panic!("a failed probe is never ready"),
                Err(e) => break e,
            }
        };
        let text = format!("{err:#}");
        assert!(
            text.contains("svc exited during start-up") && text.contains("database is locked"),
            "{text}"
        );
        // A successful probe is ready at once.
        let mut alive = sh("svc", "exec sleep 30");
        assert!(wait.after(Ok(()), &mut alive, &log).await.unwrap());
        stop(alive, StopHow::Kill, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readiness_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let mut running = sh("svc", "exec sleep 30");
        let mut wait = ReadyWait::new(Instant::now());
        let err = wait
            .after(Err(anyhow::anyhow!("timed out")), &mut running, &log)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not ready within the deadline"),
            "{err:#}"
        );
        stop(running, StopHow::Kill, Duration::from_secs(5))
            .await
            .unwrap();
    }
}
