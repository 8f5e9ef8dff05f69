//! Background tasks: the seed's user-count samples, status updates and outbound-message loop, and
//! a NATS connection watcher. Each runs until the shutdown token fires; each tick gets its
//! own correlation id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::Event;
use rosey_protocol::db::{
    ConfirmSentReply, MarkFailed, MarkSent, OutboundGet, OutboundMessage, StatusData, StatusUpdate,
    UserCount,
};
use rosey_protocol::subjects;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::bot::Bot;
use crate::db::Retry;
use crate::metrics::Metrics;
use crate::sender::PlatformAction;

/// Runs `tick` every `period` (first after one period) until `shutdown`.
async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => tick().await,
        }
    }
}

pub(crate) async fn user_counts(bot: Arc<Bot>, shutdown: CancellationToken) {
    every(bot.config.intervals.user_count, shutdown, || {
        publish_user_count(&bot)
    })
    .await;
}

/// The seed's periodic sample, fixed: connected is the platform's viewer count, not the chat
/// count again (it falls back to the chat count until a usercount event has arrived).
async fn publish_user_count(bot: &Bot) {
    let sample = {
        let state = bot.state();
        let chat = state.users.len() as i64;
        (chat > 0).then(|| UserCount {
            chat_count: Some(chat),
            connected_count: Some(state.usercount.unwrap_or(chat)),
        })
    };
    if let Some(sample) = sample {
        bot.db
            .publish(subjects::USER_COUNT, &sample, &bot.traces.fresh())
            .await;
    }
}

pub(crate) async fn status(bot: Arc<Bot>, shutdown: CancellationToken) {
    every(bot.config.intervals.status, shutdown, || {
        publish_status(&bot, true)
    })
    .await;
}

/// Publishes the status row (`bot_connected` 0 is sent once, on shutdown).
pub(crate) async fn publish_status(bot: &Bot, connected: bool) {
    let data = {
        let state = bot.state();
        let chat = state.users.len() as i64;
        let current = state.playlist.as_ref().and_then(|p| p.current_item());
        StatusData {
            bot_name: Some(bot.config.bot_name.clone()),
            bot_rank: state.user(&bot.config.bot_name).map(|u| u.rank),
            bot_afk: Some(i64::from(state.bot_afk)),
            channel_name: Some(bot.config.channel.clone()),
            current_chat_users: Some(chat),
            current_connected_users: Some(state.usercount.filter(|&n| n != 0).unwrap_or(chat)),
            bot_start_time: Some(unix_secs(bot.start_time)),
            bot_connected: Some(i64::from(connected)),
            playlist_items: Some(state.playlist.as_ref().map_or(0, |p| p.queue.len() as i64)),
            current_media_title: current.map(|i| i.title.clone()),
            current_media_duration: current.map(|i| i.duration),
        }
    };
    bot.db
        .publish(
            subjects::STATUS_UPDATE,
            &StatusUpdate {
                status_data: Some(data),
            },
            &bot.traces.fresh(),
        )
        .await;
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) async fn outbound(bot: Arc<Bot>, shutdown: CancellationToken) {
    every(bot.config.intervals.outbound, shutdown, || {
        process_outbound(&bot)
    })
    .await;
}

/// One poll of the outbound queue: fetch, send each as a chat action, mark sent or failed.
async fn process_outbound(bot: &Bot) {
    if !bot.db.is_connected() {
        return;
    }
    let trace = bot.traces.fresh();
    let query = OutboundGet {
        limit: Some(bot.config.outbound.limit),
        max_retries: Some(bot.config.outbound.max_retries),
        lease_secs: None,
    };
    // Not retried: the next poll is the retry.
    let timeout = bot.config.requests.outbound_timeout;
    let bytes = match bot
        .db
        .request_with_timeout(subjects::OUTBOUND_GET, &query, &trace, Retry::Once, timeout)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "outbound poll failed");
            return;
        }
    };
    let messages: Vec<OutboundMessage> = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "invalid outbound.get reply");
            return;
        }
    };
    for m in messages {
        // Each message is its own causal chain: chat action and mark_* share one id.
        let trace = bot.traces.fresh();
        match bot.act(PlatformAction::chat(&m.message), &trace).await {
            Ok(()) => {
                Metrics::inc(&bot.metrics.outbound_sent);
                confirm_sent(bot, m.id, &trace).await;
            }
            Err(e) => {
                Metrics::inc(&bot.metrics.outbound_failed);
                // This failure is attempt retry_count+1; the last allowed one gives up for good.
                let is_permanent =
                    e.permanent || m.retry_count + 1 >= bot.config.outbound.max_retries;
                let mark = MarkFailed {
                    message_id: Some(m.id),
                    error: Some(e.message.clone()),
                    is_permanent,
                };
                tracing::warn!(message_id = m.id, retry_count = m.retry_count, is_permanent, error = %e, "outbound message not sent");
                bot.db
                    .publish(subjects::OUTBOUND_MARK_FAILED, &mark, &trace)
                    .await;
            }
        }
    }
}

/// Marks an outbound message sent with the confirmed request (`outbound.confirm_sent`, answered
/// after the commit; idempotent, so retried like a query). If it is not confirmed (a timeout, or
/// a service that predates the subject), the fire-and-forget `mark_sent` event follows as a
/// second chance; marking sent twice is harmless. Until one of them lands, the row's lease keeps
/// other polls from sending it again.
async fn confirm_sent(bot: &Bot, id: i64, trace: &crate::trace::Trace) {
    let mark = MarkSent {
        message_id: Some(id),
    };
    let confirmed = match bot
        .db
        .request(
            subjects::OUTBOUND_CONFIRM_SENT,
            &mark,
            trace,
            Retry::ReadOnly,
        )
        .await
    {
        Ok(bytes) => match serde_json::from_slice::<ConfirmSentReply>(&bytes) {
            Ok(r) if r.success => {
                if !r.found {
                    tracing::warn!(message_id = id, "confirm_sent: no such outbound message");
                }
                true
            }
            _ => {
                tracing::warn!(message_id = id, reply = %String::from_utf8_lossy(&bytes), "confirm_sent not confirmed");
                false
            }
        },
        Err(e) => {
            tracing::warn!(message_id = id, error = %e, "confirm_sent failed; publishing mark_sent");
            false
        }
    };
    if !confirmed {
        bot.db
            .publish(subjects::OUTBOUND_MARK_SENT, &mark, trace)
            .await;
    }
}

/// Logs connection changes and announces a reconnection with a fresh status update.
pub(crate) async fn watch_connection(
    bot: Arc<Bot>,
    mut events: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) {
    let mut disconnected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e { Some(e) => e, None => return },
        };
        match event {
            Event::Disconnected => {
                disconnected = true;
                tracing::warn!("NATS connection lost; the client keeps reconnecting");
            }
            Event::Connected if disconnected => {
                disconnected = false;
                Metrics::inc(&bot.metrics.reconnects);
                *bot.connected_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = SystemTime::now();
                tracing::info!("NATS connection re-established");
                publish_status(&bot, true).await;
            }
            Event::Connected => tracing::debug!("NATS connected"),
            Event::SlowConsumer(sid) => {
                Metrics::inc(&bot.metrics.client_drops);
                tracing::warn!(sid, "NATS slow consumer: the client dropped messages");
            }
            other => tracing::warn!(event = %other, "NATS client event"),
        }
    }
}
