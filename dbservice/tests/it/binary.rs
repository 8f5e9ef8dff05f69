//! Running the real `rosey-dbservice` binary as a child process.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_rosey-dbservice");

/// A running `rosey-dbservice` child whose stderr is collected line by line.
pub struct ServiceProcess {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub log: Vec<String>,
}

impl ServiceProcess {
    /// Starts the binary and waits for its "ready" log line.
    pub async fn start(args: &[&str]) -> ServiceProcess {
        let mut child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("ROSEY_NATS_PASSWORD")
            .env_remove("ROSEY_NATS_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rosey-dbservice");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = ServiceProcess {
            child,
            lines,
            log: Vec::new(),
        };
        p.wait_for_line("ready").await;
        p
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_for_line(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let hit = line.contains(needle);
                    self.log.push(line);
                    if hit {
                        return;
                    }
                }
                Ok(None) => panic!(
                    "rosey-dbservice exited before logging {needle:?}; log:\n{}",
                    self.log.join("\n")
                ),
                Err(_) => panic!(
                    "no {needle:?} log line within 20 s; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("killed child exits");
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            self.log.join("\n")
        );
    }
}

#[tokio::test]
async fn help_explains_everything_including_fault_injection() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--nats-url",
        "--db-path",
        "--log-level",
        "--config",
        "--mode",
        "--commit-notices",
        "--batch-max-events",
        "--batch-max-wait-us",
        "--nats-user",
        "--nats-password",
        "--nats-token",
        "--nats-creds-file",
        "--nats-tls-ca-file",
        "--fault-stats-delay-ms",
        "--fault-notice-delay-us",
        "--max-buffered-bytes",
        "--max-deliver",
        "FAULT INJECTION",
        "benchmark regression gate",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test]
async fn bad_settings_exit_non_zero_with_the_error_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "db_pth = 'typo.db'\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("error: parsing config file") && err.contains("db_pth"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["--nats-user", "u", "--db-path"])
        .arg(dir.path().join("x.db"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("user and password must be given together"));
}

#[tokio::test]
async fn a_second_process_on_the_same_database_exits_non_zero_naming_the_first() {
    let server = crate::support::start_server();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one.db");
    let db_arg = db.to_str().unwrap();
    let first = ServiceProcess::start(&["--nats-url", server.url(), "--db-path", db_arg]).await;
    let pid = first.child.id().expect("first is running");
    let out = Command::new(BIN)
        .args(["--nats-url", server.url(), "--db-path", db_arg])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("one.db.lock"),
        "{err}"
    );
    first.kill9().await;
}
