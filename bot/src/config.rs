//! The bot's configuration: plain data with public fields, built by `main.rs` from flags and an
//! optional TOML file (or by tests with [`Config::new`]), passed explicitly.
//!
//! Durations are written in seconds (floats allowed) in the file: `status_secs = 0.5`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rosey_protocol::connect::NatsConnectConfig;
use rosey_protocol::platform;
use serde::Deserialize;

/// Everything the bot needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How to reach NATS (URL, authentication, TLS): the `[nats]` table.
    pub nats: NatsConnectConfig,
    /// The channel (platform) name: one subject token of `rosey.platform.<channel>.…`.
    pub channel: String,
    /// The bot's own user name; PMs from it are ignored.
    pub bot_name: String,
    /// Lowest platform rank allowed to run PM commands (the seed's 2.0).
    pub moderator_rank: f64,
    pub intervals: Intervals,
    pub requests: RequestPolicy,
    pub outbound: OutboundPolicy,
    /// Publish database events to JetStream (the database service's durable mode): each with
    /// `Nats-Msg-Id` = its event id, confirmed by the stream's PubAck, and published again until
    /// stored (or `durable_retry` has passed), in order, so a NATS outage loses none of the
    /// events the bot received. Off: core NATS, as the seed.
    pub durable_events: bool,
    /// How long one database event is published again for while no PubAck comes (durable
    /// events only); past it the event is counted as a publish failure.
    #[serde(rename = "durable_retry_secs", with = "secs")]
    pub durable_retry: Duration,
}

/// Periods of the background tasks (defaults: the seed's 300 s, 10 s and 2 s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intervals {
    /// `rosey.db.stats.user_count` samples (seed: 300 s).
    #[serde(rename = "user_count_secs", with = "secs")]
    pub user_count: Duration,
    /// `rosey.db.status.update` (seed: 10 s).
    #[serde(rename = "status_secs", with = "secs")]
    pub status: Duration,
    /// Outbound-queue polls (seed: 2 s).
    #[serde(rename = "outbound_secs", with = "secs")]
    pub outbound: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            user_count: Duration::from_secs(300),
            status: Duration::from_secs(10),
            outbound: Duration::from_secs(2),
        }
    }
}

/// How requests to the database service are made and when the bot stops trying.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestPolicy {
    /// Per-request timeout for queries (seed: 1 s).
    #[serde(rename = "timeout_secs", with = "secs")]
    pub timeout: Duration,
    /// Timeout of the outbound-queue poll (seed: 2 s).
    #[serde(rename = "outbound_timeout_secs", with = "secs")]
    pub outbound_timeout: Duration,
    /// Extra attempts for read-only queries after a failure (0: no retry).
    pub read_retries: u32,
    /// Wait before the first retry; doubles for each further one.
    #[serde(rename = "retry_backoff_secs", with = "secs")]
    pub retry_backoff: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before it lets one probe through (half-open).
    #[serde(rename = "breaker_open_secs", with = "secs")]
    pub breaker_open: Duration,
    /// Longest wait for a publish to be accepted by the client (it blocks only when the client's
    /// buffer is full, e.g. during a long disconnection).
    #[serde(rename = "publish_timeout_secs", with = "secs")]
    pub publish_timeout: Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            timeout: Duration::from_secs(1),
            outbound_timeout: Duration::from_secs(2),
            read_retries: 2,
            retry_backoff: Duration::from_millis(100),
            breaker_failures: 3,
            breaker_open: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(1),
        }
    }
}

/// The outbound-queue request (seed: `{"limit": 20, "max_retries": 3}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundPolicy {
    pub limit: i64,
    /// Attempts before a message is given up: the failure that reaches it is marked permanent.
    pub max_retries: i64,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            limit: 20,
            max_retries: 3,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats: NatsConnectConfig::default(),
            channel: "cytube".to_owned(),
            bot_name: "rosey".to_owned(),
            moderator_rank: 2.0,
            intervals: Intervals::default(),
            requests: RequestPolicy::default(),
            outbound: OutboundPolicy::default(),
            durable_events: false,
            durable_retry: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Defaults for everything but the server and the channel.
    pub fn new(nats_url: impl Into<String>, channel: impl Into<String>) -> Self {
        Config {
            nats: NatsConnectConfig::new(nats_url),
            channel: channel.into(),
            ..Default::default()
        }
    }

    /// Parses a TOML config file's text; missing keys keep their defaults.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).context("parsing bot config")
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            platform::valid_channel(&self.channel),
            "channel {:?} is not a single NATS subject token",
            self.channel
        );
        ensure!(!self.bot_name.is_empty(), "bot name is empty");
        ensure!(
            self.moderator_rank.is_finite(),
            "moderator rank must be a number"
        );
        for (name, d) in [
            ("user_count", self.intervals.user_count),
            ("status", self.intervals.status),
            ("outbound", self.intervals.outbound),
            ("request timeout", self.requests.timeout),
            ("outbound timeout", self.requests.outbound_timeout),
            ("breaker open", self.requests.breaker_open),
            ("publish timeout", self.requests.publish_timeout),
            ("durable retry", self.durable_retry),
        ] {
            ensure!(!d.is_zero(), "{name} interval must be positive");
        }
        ensure!(
            self.requests.breaker_failures > 0,
            "breaker_failures must be at least 1"
        );
        self.nats.auth_method().map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

/// `Duration` as (fractional) seconds.
mod secs {
    use serde::{de::Error, Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v)
            .map_err(|e| D::Error::custom(format!("bad duration {v}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let c = Config::new("nats://127.0.0.1:4222", "lobby");
        assert_eq!(c.moderator_rank, 2.0);
        assert_eq!(c.intervals.user_count, Duration::from_secs(300));
        assert_eq!(c.intervals.status, Duration::from_secs(10));
        assert_eq!(c.intervals.outbound, Duration::from_secs(2));
        assert_eq!(c.requests.timeout, Duration::from_secs(1));
        assert_eq!((c.outbound.limit, c.outbound.max_retries), (20, 3));
        c.validate().unwrap();
    }

    #[test]
    fn toml_file_overrides_some_keys() {
        let c = Config::from_toml_str(
            r#"
            channel = "lobby"
            moderator_rank = 3
            [nats]
            url = "nats://127.0.0.1:1"
            token = "t"
            [intervals]
            status_secs = 0.25
            [requests]
            read_retries = 0
            "#,
        )
        .unwrap();
        assert_eq!(c.channel, "lobby");
        assert_eq!(c.moderator_rank, 3.0);
        assert_eq!(c.nats.token.as_deref(), Some("t"));
        assert_eq!(c.intervals.status, Duration::from_millis(250));
        assert_eq!(c.intervals.outbound, Duration::from_secs(2));
        assert_eq!(c.requests.read_retries, 0);
        c.validate().unwrap();
        assert!(Config::from_toml_str("chanel = 'x'").is_err());
        assert!(Config::new("n", "a.b").validate().is_err());
        assert!(Config::from_toml_str("[intervals]\nstatus_secs = -1").is_err());
    }
}
