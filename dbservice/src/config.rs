//! Service configuration: [`Config`] (what [`crate::run`] takes) and [`FileConfig`] (the optional
//! TOML file `main.rs` reads before applying command-line flags on top).

use anyhow::Context as _;
use rosey_protocol::connect::NatsConnectConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How events reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain core-NATS subscriptions, as the seed: events published while the service is down
    /// or arriving faster than it can buffer are lost.
    #[default]
    Core,
    /// Events are captured by a JetStream stream and consumed by a durable pull consumer; each
    /// is acknowledged only after its transaction commits, and redeliveries are de-duplicated by
    /// event id. Nothing is lost or applied twice across crashes.
    Durable,
}

impl Mode {
    /// `"core"` or `"durable"`, as [`rosey_protocol::db::ServiceStats::mode`] reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Core => "core",
            Mode::Durable => "durable",
        }
    }
}

/// Default of [`Config::max_buffered_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
/// Default of [`Config::max_deliver`].
pub const DEFAULT_MAX_DELIVER: u64 = 10;

/// Everything the service needs, with public fields. [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// How to connect to NATS (URL, authentication, TLS).
    pub nats: NatsConnectConfig,
    /// SQLite database file (created if missing). `:memory:` is refused: the service's read
    /// connections must see the writer's data.
    pub db_path: PathBuf,
    pub mode: Mode,
    /// Publish a [`rosey_protocol::db::CommitNotice`] on `rosey.db.committed` after every
    /// transaction that committed events carrying a `Rosey-Event-Id` header.
    pub commit_notices: bool,
    /// Most events applied in one write transaction.
    pub batch_max_events: usize,
    /// Longest a write transaction stays open taking events that are already queued (zero: one
    /// event per transaction). The writer never waits for more: an idle service commits each
    /// event at once, a busy one batches what arrived while the previous commit ran.
    pub batch_max_wait: Duration,
    /// Opt-in: when the queue runs empty, wait up to this long after a transaction's first event
    /// for more before committing (zero, the default: never wait). Fewer, larger transactions
    /// under moderate load, for up to this much latency per event.
    pub batch_linger: Duration,
    /// Capacity of the queue between the NATS intake and the writer thread (back-pressure).
    pub channel_capacity: usize,
    /// Messages the NATS client buffers per subscription before it drops them as a slow
    /// consumer (core mode). Large, so that bursts are absorbed rather than lost.
    pub subscription_capacity: usize,
    /// Messages larger than this are rejected as malformed without being parsed.
    pub max_payload_bytes: usize,
    /// Fault injection for testing the benchmark's regression gate: an extra delay inside the
    /// `rosey.db.query.channel_stats` handler. `None` in normal operation.
    pub fault_stats_delay: Option<Duration>,
    /// Fault injection for testing the benchmark's regression gate: every commit notice is
    /// published this long after its transaction committed (commits, acks and the processing of
    /// other events are not delayed). `None` in normal operation; never set it in production.
    pub fault_notice_delay: Option<Duration>,
    /// Read-only SQLite connections used for queries (at least 1).
    pub read_connections: usize,
    /// Durable mode: how long the server waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Durable mode: most unacknowledged messages the server hands out at once.
    pub max_ack_pending: usize,
    /// `synchronous=FULL`: fsync every commit (survives power loss; slower).
    pub synchronous_full: bool,
    /// How often to run maintenance (cleanup, incremental vacuum in steps between write batches,
    /// ANALYZE); `None` never. The first run is one interval after start.
    pub maintenance_interval: Option<Duration>,
    /// Deadline for each step of shutting down (draining, last commit, closing).
    pub shutdown_timeout: Duration,
    /// Core mode: most payload bytes of events waiting for the writer (read from the
    /// subscription, not yet taken by the writer). An event that would exceed it is dropped,
    /// counted (`dropped` on the ping) and logged.
    pub max_buffered_bytes: usize,
    /// Durable mode: deliveries of one event before it becomes a dead letter (at least 1).
    pub max_deliver: u64,
    /// Durable mode: replicas of the stream (1 to 5; at most the cluster's size).
    pub stream_replicas: usize,
}

impl Config {
    /// Defaults for a service talking to `nats_url` and storing into `db_path`.
    pub fn new(nats_url: &str, db_path: impl Into<PathBuf>) -> Config {
        Config {
            nats: NatsConnectConfig::new(nats_url),
            db_path: db_path.into(),
            mode: Mode::Core,
            commit_notices: false,
            batch_max_events: 1000,
            batch_max_wait: Duration::from_micros(500),
            batch_linger: Duration::ZERO,
            channel_capacity: 16_384,
            subscription_capacity: 262_144,
            max_payload_bytes: 64 * 1024,
            fault_stats_delay: None,
            fault_notice_delay: None,
            read_connections: 2,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            synchronous_full: false,
            maintenance_interval: Some(Duration::from_secs(24 * 3600)),
            shutdown_timeout: Duration::from_secs(10),
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_deliver: DEFAULT_MAX_DELIVER,
            stream_replicas: 1,
        }
    }

    /// Checks the values that would otherwise fail later or silently misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.nats.auth_method().context("invalid nats settings")?;
        let p = self.db_path.to_string_lossy();
        anyhow::ensure!(!p.is_empty(), "db path is empty");
        anyhow::ensure!(
            p != ":memory:" && !p.starts_with("file::memory:"),
            "db path {p:?} is an in-memory database; the service needs a file its read connections can share"
        );
        anyhow::ensure!(
            self.batch_max_events >= 1,
            "batch max events must be at least 1"
        );
        anyhow::ensure!(
            self.channel_capacity >= 1,
            "channel capacity must be at least 1"
        );
        anyhow::ensure!(
            self.subscription_capacity >= 1,
            "subscription capacity must be at least 1"
        );
        anyhow::ensure!(
            self.read_connections >= 1,
            "read connections must be at least 1"
        );
        anyhow::ensure!(
            self.max_payload_bytes >= 2,
            "max payload bytes must be at least 2"
        );
        anyhow::ensure!(
            self.max_ack_pending >= 1,
            "max ack pending must be at least 1"
        );
        anyhow::ensure!(
            self.ack_wait >= Duration::from_secs(1),
            "ack wait must be at least 1 s"
        );
        anyhow::ensure!(
            self.max_buffered_bytes >= self.max_payload_bytes,
            "max buffered bytes must be at least max payload bytes"
        );
        anyhow::ensure!(
            (1..=i64::MAX as u64).contains(&self.max_deliver),
            "max deliver must be at least 1"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.stream_replicas),
            "stream replicas must be between 1 and 5 (JetStream's limit)"
        );
        Ok(())
    }
}

/// The TOML config file (`--config`). Every key is optional; command-line flags override it.
///
/// ```toml
/// db_path = "bot_data.db"
/// mode = "durable"            # or "core"
/// commit_notices = true
/// log_level = "info"
/// batch_max_events = 1000
/// batch_max_wait_us = 500
/// batch_linger_us = 0
/// [nats]
/// url = "tls://nats.example:4222"
/// user = "dbservice"
/// password = "..."
/// tls_ca_file = "ca.pem"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub nats: Option<NatsConnectConfig>,
    pub db_path: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub commit_notices: Option<bool>,
    pub log_level: Option<String>,
    pub batch_max_events: Option<usize>,
    pub batch_max_wait_us: Option<u64>,
    pub batch_linger_us: Option<u64>,
    pub channel_capacity: Option<usize>,
    pub subscription_capacity: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    pub fault_stats_delay_ms: Option<u64>,
    pub fault_notice_delay_us: Option<u64>,
    pub read_connections: Option<usize>,
    pub ack_wait_ms: Option<u64>,
    pub max_ack_pending: Option<usize>,
    pub synchronous_full: Option<bool>,
    /// Zero disables periodic maintenance.
    pub maintenance_interval_secs: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
    pub max_buffered_bytes: Option<usize>,
    pub max_deliver: Option<u64>,
    pub stream_replicas: Option<usize>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Overwrites the fields of `config` this file sets.
    pub fn apply_to(self, config: &mut Config) {
        if let Some(n) = self.nats {
            config.nats = n;
        }
        if let Some(v) = self.db_path {
            config.db_path = v;
        }
        if let Some(v) = self.mode {
            config.mode = v;
        }
        if let Some(v) = self.commit_notices {
            config.commit_notices = v;
        }
        if let Some(v) = self.batch_max_events {
            config.batch_max_events = v;
        }
        if let Some(v) = self.batch_max_wait_us {
            config.batch_max_wait = Duration::from_micros(v);
        }
        if let Some(v) = self.batch_linger_us {
            config.batch_linger = Duration::from_micros(v);
        }
        if let Some(v) = self.channel_capacity {
            config.channel_capacity = v;
        }
        if let Some(v) = self.subscription_capacity {
            config.subscription_capacity = v;
        }
        if let Some(v) = self.max_payload_bytes {
            config.max_payload_bytes = v;
        }
        if let Some(v) = self.fault_stats_delay_ms {
            config.fault_stats_delay = (v > 0).then(|| Duration::from_millis(v));
        }
        if let Some(v) = self.fault_notice_delay_us {
            config.fault_notice_delay = (v > 0).then(|| Duration::from_micros(v));
        }
        if let Some(v) = self.read_connections {
            config.read_connections = v;
        }
        if let Some(v) = self.ack_wait_ms {
            config.ack_wait = Duration::from_millis(v);
        }
        if let Some(v) = self.max_ack_pending {
            config.max_ack_pending = v;
        }
        if let Some(v) = self.synchronous_full {
            config.synchronous_full = v;
        }
        if let Some(v) = self.maintenance_interval_secs {
            config.maintenance_interval = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = self.shutdown_timeout_ms {
            config.shutdown_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.max_buffered_bytes {
            config.max_buffered_bytes = v;
        }
        if let Some(v) = self.max_deliver {
            config.max_deliver = v;
        }
        if let Some(v) = self.stream_replicas {
            config.stream_replicas = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_and_applies() {
        let f = FileConfig::parse(
            r#"
            db_path = "x.db"
            mode = "durable"
            commit_notices = true
            batch_max_wait_us = 0
            batch_linger_us = 300
            fault_stats_delay_ms = 25
            fault_notice_delay_us = 150
            [nats]
            url = "nats://h:1"
            user = "u"
            password = "p"
            "#,
        )
        .unwrap();
        let mut c = Config::new("nats://default:4222", "default.db");
        f.apply_to(&mut c);
        assert_eq!(c.db_path, PathBuf::from("x.db"));
        assert_eq!(c.mode, Mode::Durable);
        assert!(c.commit_notices);
        assert_eq!(c.batch_max_wait, Duration::ZERO);
        assert_eq!(c.batch_linger, Duration::from_micros(300));
        assert_eq!(c.fault_stats_delay, Some(Duration::from_millis(25)));
        assert_eq!(c.fault_notice_delay, Some(Duration::from_micros(150)));
        assert_eq!(c.nats.url, "nats://h:1");
        assert_eq!(c.nats.password.as_deref(), Some("p"));
        c.validate().unwrap();
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(FileConfig::parse("db_pth = 'x'").is_err());
        assert!(FileConfig::parse("[nats]\nurll = 'x'").is_err());
        assert!(FileConfig::parse("mode = 'fast'").is_err());
        let mut c = Config::new("nats://h:1", ":memory:");
        assert!(c.validate().is_err());
        c.db_path = "ok.db".into();
        c.nats.user = Some("only-user".into());
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("user and password"));
    }
}
