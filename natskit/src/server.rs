//! A nats-server child process with its own port and temp dir.
//!
//! The server picks a free port itself (`-p -1`) and reports it through a
//! ports file (`--ports_file_dir`), so there is no port race and no log
//! scraping. Readiness is proven by the ports file appearing and then by the
//! server's `INFO` line on a fresh TCP connection.

use std::{
    ffi::OsString,
    fs::{self, OpenOptions},
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::{
    child::{run_with_deadline, wait_until, POLL_INTERVAL},
    locate::{find_or_install, version_of},
};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to shut down gracefully before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many lines from the start and the end of a run's log errors quote.
const LOG_HEAD_LINES: usize = 5;
const LOG_TAIL_LINES: usize = 20;
/// Starts the line natskit writes to the log before each run.
const START_MARKER: &str = "natskit: starting ";

/// How to start a [`NatsServer`]. The default is a plain server without
/// JetStream or auth, using [`find_or_install`] for the binary.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Enable JetStream (`-js -sd <store dir>`).
    pub jetstream: bool,
    /// Require this user and password (`--user`, `--pass`).
    pub user_password: Option<(String, String)>,
    /// Require this token (`--auth`).
    pub token: Option<String>,
    /// An extra config file (`-c`), e.g. for nkeys or TLS tests. Flags above
    /// take precedence over the file, as nats-server does.
    pub config_file: Option<PathBuf>,
    /// Appended to the command line as is.
    pub extra_args: Vec<String>,
    /// The nats-server binary; `None` means [`find_or_install`].
    pub binary: Option<PathBuf>,
    /// Where JetStream keeps its data; `None` means `js/` inside the
    /// server's temp dir. Set it to keep data across servers. Only used when
    /// `jetstream` is on.
    pub store_dir: Option<PathBuf>,
}

/// A running nats-server child process. Dropping it kills the server and
/// deletes its temp dir (but not a caller-provided `store_dir`).
#[derive(Debug)]
pub struct NatsServer {
    /// `None` once stopped.
    child: Option<Child>,
    pid: u32,
    port: u16,
    url: String,
    binary: PathBuf,
    version: String,
    opts: ServerOptions,
    store_dir: Option<PathBuf>,
    log_path: PathBuf,
    ports_dir: PathBuf,
    /// Declared last so it is deleted after the child is gone.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream enabled and otherwise default options.
    pub fn start() -> Result<NatsServer> {
        NatsServer::start_with(ServerOptions {
            jetstream: true,
            ..ServerOptions::default()
        })
    }

    /// Starts a server and waits until it accepts connections.
    pub fn start_with(opts: ServerOptions) -> Result<NatsServer> {
        let binary = match &opts.binary {
            Some(binary) => binary.clone(),
            None => find_or_install()?,
        };
        let version = version_of(&binary).context("checking the nats-server binary")?;
        let dir = tempfile::Builder::new()
            .prefix("natskit-")
            .tempdir()
            .context("creating a temp dir for nats-server")?;
        let ports_dir = dir.path().join("ports");
        fs::create_dir(&ports_dir).with_context(|| format!("creating {}", ports_dir.display()))?;
        let store_dir = opts.jetstream.then(|| {
            opts.store_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("js"))
        });
        let mut server = NatsServer {
            child: None,
            pid: 0,
            port: 0,
            url: String::new(),
            binary,
            version,
            store_dir,
            log_path: dir.path().join("nats-server.log"),
            ports_dir,
            opts,
            dir,
        };
        // On error `server` is dropped here, which kills the child.
        server.spawn_and_wait(None)?;
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the current (or, once stopped, the last) server.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The bare server version, e.g. `"2.15.1"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server log (`-l`), inside [`NatsServer::dir`]. Restarts append to it.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's own temp dir, deleted on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JetStream store dir, if JetStream is enabled.
    pub fn store_dir(&self) -> Option<&Path> {
        self.store_dir.as_deref()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within
    /// a deadline. Stopping a stopped server does nothing.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let result = terminate(&mut child, self.pid);
        if result.is_err() {
            // Never leave a server behind, whatever went wrong above.
            let _ = child.kill();
            let _ = child.wait();
        }
        result.with_context(|| format!("stopping nats-server (pid {})", self.pid))
    }

    /// Kills the server at once (SIGKILL: a crash, no clean JetStream
    /// shutdown). Killing a stopped server does nothing.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops the server and starts it again on the same port with the same
    /// JetStream store, then waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Starts a stopped (or killed) server again on its port with its
    /// JetStream store and waits until it is ready. Fails if it is running.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(
            self.child.is_none(),
            "nats-server (pid {}) is still running",
            self.pid
        );
        self.spawn_and_wait(Some(self.port))
            .with_context(|| format!("restarting nats-server on port {}", self.port))
    }

    /// Whether the server process is running (not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn args(&self, port: Option<u16>) -> Vec<OsString> {
        let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.into(),
            "--ports_file_dir".into(),
            self.ports_dir.clone().into(),
            "-l".into(),
            self.log_path.clone().into(),
        ];
        if let Some(store_dir) = &self.store_dir {
            args.extend(["-js".into(), "-sd".into(), store_dir.clone().into()]);
        }
        if let Some((user, pass)) = &self.opts.user_password {
            args.extend(["--user".into(), user.into(), "--pass".into(), pass.into()]);
        }
        if let Some(token) = &self.opts.token {
            args.extend(["--auth".into(), token.into()]);
        }
        if let Some(config_file) = &self.opts.config_file {
            args.extend(["-c".into(), config_file.clone().into()]);
        }
        args.extend(self.opts.extra_args.iter().map(OsString::from));
        args
    }

    /// Spawns the server (`port: None` lets it pick one) and waits until it
    /// is ready. On error the child is left in `self.child` for the caller
    /// (or `Drop`) to kill.
    fn spawn_and_wait(&mut self, port: Option<u16>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let args = self.args(port);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        // nats-server logs to the same file via `-l`; sharing it for stdout
        // and stderr catches what it prints before logging is set up, such
        // as a bad flag.
        writeln!(log, "{START_MARKER}{} {:?}", self.binary.display(), args)
            .with_context(|| format!("writing to {}", self.log_path.display()))?;
        let child = Command::new(&self.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        tracing::debug!(pid = self.pid, binary = %self.binary.display(), "nats-server spawned");

        let reported = self.wait_for_ports_file(deadline)?;
        if let Some(port) = port {
            ensure!(
                reported == port,
                "nats-server listens on port {reported}, not the requested {port}{}",
                self.log_tail()
            );
        }
        self.port = reported;
        self.url = format!("nats://127.0.0.1:{reported}");
        read_info(reported, deadline).with_context(|| {
            format!(
                "nats-server (pid {}) wrote its ports file but did not greet on port {reported}{}",
                self.pid,
                self.log_tail()
            )
        })?;
        tracing::info!(pid = self.pid, url = %self.url, version = %self.version, "nats-server ready");
        Ok(())
    }

    /// Waits for the ports file of the current child and returns its client port.
    fn wait_for_ports_file(&mut self, deadline: Instant) -> Result<u16> {
        let suffix = format!("_{}.ports", self.pid);
        loop {
            let child = self.child.as_mut().context("nats-server is not running")?;
            if let Some(status) = child.try_wait().context("checking on nats-server")? {
                bail!(
                    "nats-server (pid {}) exited during startup ({status}){}",
                    self.pid,
                    self.log_tail()
                );
            }
            if let Some(port) = read_ports_file(&self.ports_dir, &suffix) {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {START_TIMEOUT:?} waiting for nats-server (pid {}) \
                     to write its ports file into {}{}",
                    self.pid,
                    self.ports_dir.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// This run's part of the server log, formatted to be appended to an error.
    fn log_tail(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => format!(
                "\nfrom {}:\n{}",
                self.log_path.display(),
                log_excerpt(&String::from_utf8_lossy(&bytes))
            ),
            Err(err) => format!("\n(could not read {}: {err})", self.log_path.display()),
        }
    }
}

/// The current run's log (from the last `natskit: starting` line), shortened
/// to its first and last lines: the first lines hold startup errors such as a
/// bad flag (followed by pages of usage), the last ones hold the latest events.
fn log_excerpt(log: &str) -> String {
    let run = log.rfind(START_MARKER).map_or(log, |at| &log[at..]);
    let lines: Vec<&str> = run.trim_end().lines().collect();
    if lines.len() <= LOG_HEAD_LINES + LOG_TAIL_LINES {
        return lines.join("\n");
    }
    let skipped = lines.len() - LOG_HEAD_LINES - LOG_TAIL_LINES;
    format!(
        "{}\n[... {skipped} lines ...]\n{}",
        lines[..LOG_HEAD_LINES].join("\n"),
        lines[lines.len() - LOG_TAIL_LINES..].join("\n")
    )
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the child is already gone; nothing useful to do.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, wait, then SIGKILL. SIGTERM lets JetStream shut down cleanly,
/// which matters for restart tests that expect their data back.
fn terminate(child: &mut Child, pid: u32) -> Result<()> {
    // Check before signalling: once reaped, the pid could belong to anyone.
    if let Some(status) = child.try_wait()? {
        tracing::warn!(pid, %status, "nats-server had already exited");
        return Ok(());
    }
    // std can only SIGKILL and the workspace forbids unsafe, so use kill(1).
    let mut kill = Command::new("kill");
    kill.args(["-TERM", &pid.to_string()]);
    match run_with_deadline(kill, Duration::from_secs(5)) {
        Ok(out) if out.status.success() => {
            if wait_until(child, Instant::now() + STOP_TIMEOUT)?.is_some() {
                return Ok(());
            }
            tracing::warn!(
                pid,
                "nats-server ignored SIGTERM for {STOP_TIMEOUT:?}; killing it"
            );
        }
        Ok(out) => {
            tracing::warn!(pid, status = %out.status, "kill -TERM failed; killing nats-server")
        }
        Err(err) => {
            tracing::warn!(pid, error = %format!("{err:#}"), "kill -TERM failed; killing nats-server")
        }
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// The client port from the ports file whose name ends in `suffix`, once it
/// exists and is complete. The file is named after the executable, which is
/// not always `nats-server`, so match on the pid only.
fn read_ports_file(dir: &Path, suffix: &str) -> Option<u16> {
    let path = fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(suffix))
        })?;
    // A half-written file fails to parse; the caller simply looks again.
    parse_ports(&fs::read_to_string(path).ok()?)
}

/// `{"nats":["nats://127.0.0.1:4222"],...}` -> `4222`.
fn parse_ports(json: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit_once(':')?.1.parse().ok()
}

/// Connects to `port` and reads the server's greeting, which must be `INFO`.
fn read_info(port: u16, deadline: Instant) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, time_left(deadline))
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(time_left(deadline)))
        .context("setting a read timeout")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("reading the INFO line from {addr}"))?;
    ensure!(
        line.starts_with("INFO "),
        "expected INFO from {addr}, got {:?}",
        line.trim_end()
    );
    Ok(())
}

/// Time until `deadline`, never zero (a zero timeout is an error in std).
fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// A free TCP port on 127.0.0.1: bind port 0, read it, release it.
///
/// Another process may take the port before the caller binds it; prefer
/// letting the server pick its own port where possible.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound address")?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_files() {
        assert_eq!(
            parse_ports(r#"{"nats":["nats://127.0.0.1:40171"]}"#),
            Some(40171)
        );
        assert_eq!(
            parse_ports(
                r#"{"nats":["nats://127.0.0.1:1234"],"monitoring":["http://127.0.0.1:5678"]}"#
            ),
            Some(1234)
        );
        assert_eq!(parse_ports(r#"{"nats":["nats://127.0."#), None);
        assert_eq!(parse_ports(""), None);
    }

    #[test]
    fn log_excerpt_shows_this_run_head_and_tail() {
        let mut log = String::from("natskit: starting old\nold run\n");
        log.push_str("natskit: starting new\n");
        for i in 1..=40 {
            log.push_str(&format!("line {i}\n"));
        }
        let excerpt = log_excerpt(&log);
        assert!(!excerpt.contains("old"), "{excerpt}");
        assert!(
            excerpt.starts_with("natskit: starting new\nline 1\n"),
            "{excerpt}"
        );
        assert!(
            excerpt.contains("[... 16 lines ...]\nline 21\n"),
            "{excerpt}"
        );
        assert!(excerpt.ends_with("line 40"), "{excerpt}");
        assert_eq!(log_excerpt("a\nb\n"), "a\nb");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn args_cover_every_option() {
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer {
            child: None,
            pid: 0,
            port: 0,
            url: String::new(),
            binary: "nats-server".into(),
            version: "2.15.1".into(),
            opts: ServerOptions {
                jetstream: true,
                user_password: Some(("u".into(), "p".into())),
                token: Some("t".into()),
                config_file: Some("/c.conf".into()),
                extra_args: vec!["-DV".into()],
                ..ServerOptions::default()
            },
            store_dir: Some("/store".into()),
            log_path: "/d/nats-server.log".into(),
            ports_dir: "/d/ports".into(),
            dir,
        };
        let args: Vec<String> = server
            .args(Some(4222))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "-a 127.0.0.1 -p 4222 --ports_file_dir /d/ports -l /d/nats-server.log \
             -js -sd /store --user u --pass p --auth t -c /c.conf -DV"
        );
        assert!(server.args(None).contains(&OsString::from("-1")));
    }
}
