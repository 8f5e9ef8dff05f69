//! The PM command shell (the seed's, re-implemented): moderators control the bot by private message.
//!
//! Differences from the seed, all deliberate:
//! * refused attempts (sender below the moderator rank, or not in the userlist) are audited with
//!   result `denied` (one record); the seed only logged them;
//! * a command whose reply reports a failure ("Stats unavailable (...)", "Usage: ...",
//!   "Unknown command ...") is audited as `error` with that text as the error, not `success`;
//! * the pending and final audit records and every reply PM carry the PM's correlation id;
//! * long arguments and errors are truncated in audit records (with a `…[truncated N bytes]`
//!   marker) so that every record fits the database service's payload limit, and an audit
//!   record that could not be published is counted (`audit_failures`) and logged.

mod audit;
mod commands;
pub(crate) mod text;

use std::time::{SystemTime, UNIX_EPOCH};

use rosey_protocol::db::PmCommandAudit;
use rosey_protocol::platform::PrivateMessage;
use rosey_protocol::{subjects, to_seed_json};

use crate::bot::Bot;
use crate::metrics::Metrics;
use crate::sender::PlatformAction;
use crate::trace::Trace;

/// A command's reply and whether it reports a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub text: String,
    /// The audit's `error`; `Some` makes the audited result `error`.
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Self {
        Reply {
            text: text.into(),
            error: None,
        }
    }

    /// A reply that is itself the error message.
    pub fn err(text: impl Into<String>) -> Self {
        let text = text.into();
        Reply {
            error: Some(text.clone()),
            text,
        }
    }
}

/// Handles one PM to the bot: authorize, audit, run, reply, audit.
pub(crate) async fn handle_pm(bot: &Bot, pm: PrivateMessage, trace: Trace) {
    let username = pm.user;
    let message = pm.content.trim();
    if message.is_empty() || username.is_empty() {
        return;
    }
    if username == bot.config.bot_name {
        tracing::debug!("ignoring PM from self");
        return;
    }
    let (command, args) = match message.split_once(char::is_whitespace) {
        Some((c, a)) => (c.to_lowercase(), a.trim_start().to_owned()),
        None => (message.to_lowercase(), String::new()),
    };
    let rank = bot.state().user(&username).map(|u| u.rank);
    let denial = match rank {
        Some(r) if r >= bot.config.moderator_rank => None,
        Some(r) => Some(format!(
            "rank {} below moderator rank {}",
            text::py_float(r),
            text::py_float(bot.config.moderator_rank)
        )),
        None => Some("sender not in userlist".to_owned()),
    };
    let audit = |result: &str, error: Option<String>| PmCommandAudit {
        timestamp: Some(unix_now()),
        username: Some(username.clone()),
        command: Some(command.clone()),
        args: Some(args.clone()),
        result: Some(result.to_owned()),
        error,
    };
    if let Some(why) = denial {
        // No reply, as in the seed (answering non-moderators invites spam), but audited.
        Metrics::inc(&bot.metrics.pm_denied);
        tracing::info!(user = %username, command = %command, reason = %why, "PM command denied");
        publish_audit(bot, audit("denied", Some(why)), &trace).await;
        return;
    }
    Metrics::inc(&bot.metrics.pm_commands);
    tracing::info!(user = %username, command = %command, correlation_id = trace.correlation_id(), "PM command");
    publish_audit(bot, audit("pending", None), &trace).await;

    let reply = commands::run(bot, &command, &args, &trace).await;
    let mut error = reply.error.clone();
    if !reply.text.is_empty() {
        for chunk in text::chunks(&reply.text) {
            if let Err(e) = bot.act(PlatformAction::pm(&username, chunk), &trace).await {
                // The reply did not reach the moderator: that is the command's result now.
                error = Some(format!("reply not sent: {e}"));
                break;
            }
        }
    }
    let result = if error.is_some() { "error" } else { "success" };
    publish_audit(bot, audit(result, error), &trace).await;
}

/// Publishes an audit record cut to fit the service's payload limit; a record that still does
/// not fit, or that the client does not take, is counted in `audit_failures` and logged.
async fn publish_audit(bot: &Bot, record: PmCommandAudit, trace: &Trace) {
    let record = audit::fit(record);
    let body = to_seed_json(&record);
    if body.len() > audit::MAX_RECORD_BYTES {
        // `fit` makes this impossible; count it rather than trust it.
        Metrics::inc(&bot.metrics.audit_failures);
        tracing::error!(
            bytes = body.len(),
            limit = audit::MAX_RECORD_BYTES,
            "PM command audit record larger than the limit; the database service may refuse it"
        );
    }
    let (event_id, published) = bot.db.try_publish(subjects::PM_COMMAND, &body, trace).await;
    if let Err(e) = published {
        Metrics::inc(&bot.metrics.audit_failures);
        tracing::error!(
            event_id,
            user = record.username.as_deref().unwrap_or_default(),
            command = record.command.as_deref().unwrap_or_default(),
            result = record.result.as_deref().unwrap_or_default(),
            error = %e,
            "PM command audit record not published"
        );
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
