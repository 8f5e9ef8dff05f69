//! Platform events in, database events out (the seed's mapping, with its bugs fixed).
//!
//! Events are handled one at a time in arrival order, so a join is always applied before the
//! chat line that follows it. PM commands are the exception: they may wait on the database
//! service, so each runs in its own tracked task.
//!
//! Ordering rule (the seed was inconsistent): for joins *and* leaves the local userlist is
//! updated first, then the database events are published, so counts published for an event
//! already include it.

use std::sync::Arc;

use async_nats::Message;
use rosey_protocol::db::{HighWater, MessageLog, UserEvent};
use rosey_protocol::headers::CORRELATION_ID;
use rosey_protocol::platform::{
    self, kind, ChatMessage, MediaEvent, PlatformUser, PrivateMessage, UserCountEvent, UserLeave,
    UserListEvent,
};
use rosey_protocol::subjects;
use serde::de::DeserializeOwned;

use crate::bot::Bot;
use crate::metrics::Metrics;
use crate::shell;
use crate::trace::Trace;

/// Why an event was ignored.
#[derive(Debug)]
struct Malformed(String);

/// Handles one message from `rosey.platform.<channel>.in.>`.
pub(crate) async fn handle(bot: &Arc<Bot>, msg: Message) {
    Metrics::inc(&bot.metrics.events_received);
    if let Err(Malformed(why)) = dispatch(bot, &msg).await {
        Metrics::inc(&bot.metrics.events_malformed);
        tracing::warn!(subject = %msg.subject, reason = %why, "malformed platform event ignored");
    }
}

async fn dispatch(bot: &Arc<Bot>, msg: &Message) -> Result<(), Malformed> {
    if let Some(reason) = natskit::client::malformed(msg) {
        return Err(Malformed(format!("malformed message: {reason}")));
    }
    let kind = platform::in_kind(&bot.config.channel, &msg.subject)
        .ok_or_else(|| Malformed("not an incoming subject of this channel".into()))?;
    let header = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(CORRELATION_ID))
        .map(|v| v.as_str());
    match kind {
        kind::MESSAGE => {
            let m: ChatMessage = parse(msg)?;
            let trace = bot.traces.adopt(header, m.correlation_id.as_deref());
            on_message(bot, m, &trace).await
        }
        kind::USER_JOIN => {
            let u: PlatformUser = parse(msg)?;
            let trace = bot.traces.adopt(header, u.correlation_id.as_deref());
            on_user_join(bot, u, &trace).await
        }
        kind::USER_LEAVE => {
            let u: UserLeave = parse(msg)?;
            let trace = bot.traces.adopt(header, u.correlation_id.as_deref());
            on_user_leave(bot, u, &trace).await
        }
        kind::USERCOUNT => {
            let c: UserCountEvent = parse(msg)?;
            let trace = bot.traces.adopt(header, c.correlation_id());
            on_usercount(bot, c.count(), &trace).await;
            Ok(())
        }
        kind::USERLIST => {
            let l: UserListEvent = parse(msg)?;
            if l.users().iter().any(|u| u.user.is_empty()) {
                return Err(Malformed("userlist entry with an empty user name".into()));
            }
            bot.state()
                .replace_users(l.into_users(), &bot.config.bot_name);
            Ok(())
        }
        kind::PM => {
            let pm: PrivateMessage = parse(msg)?;
            let trace = bot.traces.adopt(header, pm.correlation_id.as_deref());
            let bot2 = Arc::clone(bot);
            bot.tasks
                .spawn(async move { shell::handle_pm(&bot2, pm, trace).await });
            Ok(())
        }
        kind::MEDIA => {
            let m: MediaEvent = parse(msg)?;
            bot.state().apply_media(m);
            Ok(())
        }
        other => Err(Malformed(format!("unknown event kind {other:?}"))),
    }
}

fn parse<T: DeserializeOwned>(msg: &Message) -> Result<T, Malformed> {
    serde_json::from_slice(&msg.payload).map_err(|e| Malformed(format!("bad payload: {e}")))
}

async fn on_message(bot: &Bot, m: ChatMessage, trace: &Trace) -> Result<(), Malformed> {
    if m.user.is_empty() {
        return Err(Malformed("chat message without a user".into()));
    }
    if m.content.is_empty() {
        // The service would drop it ("Missing data"); don't send it.
        tracing::debug!(user = %m.user, "empty chat message not logged");
        return Ok(());
    }
    let payload = MessageLog {
        username: Some(m.user),
        message: Some(m.content),
    };
    bot.db.publish(subjects::MESSAGE_LOG, &payload, trace).await;
    Ok(())
}

async fn on_user_join(bot: &Bot, user: PlatformUser, trace: &Trace) -> Result<(), Malformed> {
    if user.user.is_empty() {
        return Err(Malformed("user_join without a user".into()));
    }
    let username = user.user.clone();
    let high_water = {
        let mut state = bot.state();
        state.upsert_user(user, &bot.config.bot_name);
        HighWater {
            chat_count: Some(state.users.len() as i64),
            connected_count: state.usercount,
        }
    };
    bot.db
        .publish(
            subjects::USER_JOINED,
            &UserEvent {
                username: Some(username),
            },
            trace,
        )
        .await;
    bot.db
        .publish(subjects::HIGH_WATER, &high_water, trace)
        .await;
    Ok(())
}

async fn on_user_leave(bot: &Bot, leave: UserLeave, trace: &Trace) -> Result<(), Malformed> {
    if leave.user.is_empty() {
        return Err(Malformed("user_leave without a user".into()));
    }
    if !bot.state().remove_user(&leave.user) {
        tracing::debug!(user = %leave.user, "leave of a user not in the local userlist");
    }
    bot.db
        .publish(
            subjects::USER_LEFT,
            &UserEvent {
                username: Some(leave.user),
            },
            trace,
        )
        .await;
    Ok(())
}

/// The seed's fixed `_on_usercount`: chat count is the userlist length, connected count is the
/// platform's viewer count.
async fn on_usercount(bot: &Bot, count: i64, trace: &Trace) {
    let high_water = {
        let mut state = bot.state();
        state.usercount = Some(count);
        HighWater {
            chat_count: Some(state.users.len() as i64),
            connected_count: Some(count),
        }
    };
    bot.db
        .publish(subjects::HIGH_WATER, &high_water, trace)
        .await;
}
