//! The Rosey chat bot: platform events in, database events and PM commands out.
//!
//! The bot never talks to a chat site. It subscribes to `rosey.platform.<channel>.in.>` (see
//! [`rosey_protocol::platform`]), keeps a local picture of the channel, publishes the seed's
//! `rosey.db.*` events for what happens there, answers moderators' PM commands (asking the
//! database service by request/reply) and publishes its actions on
//! `rosey.platform.<channel>.out.<kind>` for a connector to carry out. It answers
//! `rosey.bot.<channel>.stats` with its counters ([`BotStats`]).
//!
//! * [`spawn`] starts a bot in-process and returns once its subscription is live at the server
//!   (proved by [`round_trip`]).
//! * [`run`] runs one until a [`CancellationToken`] fires (what `rosey-bot` does).
//!
//! Code map: `events` (platform events → database events), `shell` (PM commands), `tasks`
//! (periodic user counts, status, outbound queue, connection watcher), `db` (events and
//! resilient requests to the database service), `breaker` (circuit breaker), `trace`
//! (correlation and event ids), `sender` (platform actions), `state` (local channel state).

mod bot;
pub mod breaker;
pub mod config;
mod db;
mod events;
mod metrics;
mod nats;
pub mod sender;
mod shell;
mod state;
mod tasks;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use rosey_protocol::platform;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

pub use crate::breaker::BreakerState;
pub use crate::config::{Config, Intervals, OutboundPolicy, RequestPolicy};
pub use crate::db::RequestError;
pub use crate::metrics::BotStats;
pub use crate::sender::{NatsPlatformSender, PlatformAction, PlatformSender, SendError};
pub use tokio_util::sync::CancellationToken;

use crate::bot::Bot;
use crate::db::DbClient;
use crate::metrics::Metrics;

/// How long shutdown waits for running PM commands and background ticks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running bot. Dropping it stops the bot without waiting; [`BotHandle::shutdown`] waits.
pub struct BotHandle {
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
    bot: Arc<Bot>,
}

impl std::fmt::Debug for BotHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotHandle")
            .field("channel", &self.bot.config.channel)
            .finish_non_exhaustive()
    }
}

impl BotHandle {
    /// The bot's counters.
    pub fn stats(&self) -> BotStats {
        self.bot.metrics.snapshot()
    }

    /// The state of the breaker in front of the database service.
    pub fn breaker_state(&self) -> BreakerState {
        self.bot.db.breaker_state()
    }

    pub fn config(&self) -> &Config {
        &self.bot.config
    }

    /// Stops the bot: no new events are taken, running commands finish (bounded by a grace
    /// period), a final status update with `bot_connected = 0` is published, and the connection
    /// is flushed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("the task is only taken here");
        task.await.context("bot task panicked")?
    }

    /// Waits until the bot stops by itself or its token fires.
    async fn wait(mut self) -> Result<()> {
        let task = self.task.take().expect("the task is only taken here");
        task.await.context("bot task panicked")?
    }
}

impl Drop for BotHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a bot in-process. Ready when it returns: connected, and its platform subscription is
/// active at the server (confirmed by a PING/PONG round trip after subscribing).
pub async fn spawn(config: Config) -> Result<BotHandle> {
    spawn_with_sender(config, None).await
}

/// [`spawn`] with a custom [`PlatformSender`] (e.g. one that fails on purpose); `None` uses
/// the NATS sender on `rosey.platform.<channel>.out.<kind>`.
pub async fn spawn_with_sender(
    config: Config,
    sender: Option<Arc<dyn PlatformSender>>,
) -> Result<BotHandle> {
    start(config, sender, CancellationToken::new()).await
}

/// Runs a bot until `shutdown` fires, then stops it cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let handle = start(config, None, shutdown.child_token()).await?;
    // The handle's token is a child of `shutdown`: cancelling it stops the bot.
    handle.wait().await
}

async fn start(
    config: Config,
    sender: Option<Arc<dyn PlatformSender>>,
    shutdown: CancellationToken,
) -> Result<BotHandle> {
    config.validate()?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let client = nats::connect(
        &config.nats,
        &format!("rosey-bot {}", config.channel),
        events_tx,
    )
    .await?;
    let subject = platform::in_wildcard(&config.channel);
    let subscription = client
        .subscribe(subject.clone())
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    let stats_subject = platform::bot_stats_subject(&config.channel);
    let stats_requests = client
        .subscribe(stats_subject.clone())
        .await
        .with_context(|| format!("subscribing to {stats_subject}"))?;
    round_trip(&client)
        .await
        .context("confirming the platform subscription with the server")?;

    let metrics = Arc::new(Metrics::default());
    let sender = sender.unwrap_or_else(|| {
        Arc::new(NatsPlatformSender::new(
            client.clone(),
            config.channel.clone(),
            config.requests.publish_timeout,
        ))
    });
    let db = DbClient::new(
        client.clone(),
        config.requests.clone(),
        config.durable_events.then_some(config.durable_retry),
        Arc::clone(&metrics),
    );
    let bot = Arc::new(Bot::new(config, db, sender, metrics));
    tracing::info!(channel = %bot.config.channel, bot = %bot.config.bot_name, nats = %bot.config.nats.redacted_url(), "bot started");

    let task = tokio::spawn(serve(
        Arc::clone(&bot),
        client,
        subscription,
        stats_requests,
        events_rx,
        shutdown.clone(),
    ));
    Ok(BotHandle {
        shutdown,
        task: Some(task),
        bot,
    })
}

/// Sends a message to itself through the server. The server handles one connection's commands
/// in order, so when it comes back every earlier subscription of this client is active.
/// (`Client::flush` only flushes the socket; it does not wait for the server.)
pub async fn round_trip(client: &async_nats::Client) -> Result<()> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .context("timed out after 10s waiting for a message to come back from the server")?;
    anyhow::ensure!(
        got.is_some(),
        "the connection closed while waiting for the round trip"
    );
    // Best effort: the inbox is unique and unused after this.
    let _ = echo.unsubscribe().await;
    Ok(())
}

async fn serve(
    bot: Arc<Bot>,
    client: async_nats::Client,
    mut subscription: async_nats::Subscriber,
    mut stats_requests: async_nats::Subscriber,
    events_rx: mpsc::UnboundedReceiver<async_nats::Event>,
    shutdown: CancellationToken,
) -> Result<()> {
    let background = TaskTracker::new();
    background.spawn(tasks::user_counts(Arc::clone(&bot), shutdown.clone()));
    background.spawn(tasks::status(Arc::clone(&bot), shutdown.clone()));
    background.spawn(tasks::outbound(Arc::clone(&bot), shutdown.clone()));
    background.spawn(tasks::watch_connection(
        Arc::clone(&bot),
        events_rx,
        shutdown.clone(),
    ));
    background.close();

    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            msg = subscription.next() => match msg {
                Some(msg) => events::handle(&bot, msg).await,
                None => break Err(anyhow::anyhow!("platform subscription closed by the client")),
            },
            Some(req) = stats_requests.next() => {
                if let Some(reply) = req.reply {
                    let body = rosey_protocol::to_seed_json(&bot.metrics.snapshot());
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "answering a stats request");
                    }
                }
            }
        }
    };
    shutdown.cancel();
    if let Err(e) = subscription.unsubscribe().await {
        tracing::debug!(error = %e, "unsubscribing on shutdown");
    }
    bot.tasks.close();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        background.wait().await;
        bot.tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown: PM commands or background tasks still running after the grace period");
    }
    tasks::publish_status(&bot, false).await;
    match tokio::time::timeout(SHUTDOWN_GRACE, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "shutdown: flushing NATS failed"),
        Err(_) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown: flushing NATS timed out"),
    }
    tracing::info!(stats = ?bot.metrics.snapshot(), "bot stopped");
    outcome
}
