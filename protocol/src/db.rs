//! Payloads of the bot ↔ database-service subjects (see README.md), field names and order
//! exactly as the seed sends them.
//!
//! Incoming event payloads use `Option` fields: the seed reads them with `data.get(...)`, so a
//! missing field is not a parse error but a validation decision of the service (for example an
//! empty `username` is logged and dropped). A field of the wrong JSON type *is* a parse error.

use serde::{Deserialize, Serialize};

// --- Events (pub/sub) ----------------------------------------------------------------------

/// `rosey.db.user.joined` and `rosey.db.user.left`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserEvent {
    #[serde(default)]
    pub username: Option<String>,
}

/// `rosey.db.message.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MessageLog {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `rosey.db.stats.user_count`: both counts default to 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserCount {
    #[serde(default)]
    pub chat_count: Option<i64>,
    #[serde(default)]
    pub connected_count: Option<i64>,
}

/// `rosey.db.stats.high_water`: chat defaults to 0, connected to null (not compared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HighWater {
    #[serde(default)]
    pub chat_count: Option<i64>,
    #[serde(default)]
    pub connected_count: Option<i64>,
}

/// The fields of the `current_status` row a status update may set. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_rank: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_afk: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_chat_users: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_connected_users: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_connected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playlist_items: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_media_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_media_duration: Option<i64>,
}

impl StatusData {
    /// True when no recognised field is set (the seed then writes nothing).
    pub fn is_empty(&self) -> bool {
        *self == StatusData::default()
    }
}

/// `rosey.db.status.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusUpdate {
    #[serde(default)]
    pub status_data: Option<StatusData>,
}

/// `rosey.db.messages.outbound.mark_sent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MarkSent {
    #[serde(default)]
    pub message_id: Option<i64>,
}

/// `rosey.db.messages.outbound.mark_failed` (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MarkFailed {
    #[serde(default)]
    pub message_id: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    /// A permanent failure marks the message as done (sent=1) so it is never retried.
    #[serde(default)]
    pub is_permanent: bool,
}

/// `rosey.db.action.pm_command`: one audit record. The bot sends one with `result: "pending"`
/// before running a command and one with the final result after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PmCommandAudit {
    /// Seconds since the epoch (Python `time.time()`); the service ignores it, as the seed does.
    #[serde(default)]
    pub timestamp: Option<f64>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Option<String>,
    /// `"pending"`, `"success"`, `"error"` or `"denied"` (addition: unauthorised attempts).
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl PmCommandAudit {
    /// The `details` column, built exactly as the seed's `_handle_pm_action` does:
    /// `cmd=<command>, args: <args>, result: <result>, error: <error>` with empty parts left out.
    /// A missing `result` counts as `"unknown"`.
    pub fn details(&self) -> String {
        let command = self.command.as_deref().unwrap_or_default();
        let mut parts = Vec::with_capacity(3);
        if let Some(args) = self.args.as_deref().filter(|a| !a.is_empty()) {
            parts.push(format!("args: {args}"));
        }
        let result = self.result.as_deref().unwrap_or("unknown");
        if !result.is_empty() {
            parts.push(format!("result: {result}"));
        }
        if let Some(error) = self.error.as_deref().filter(|e| !e.is_empty()) {
            parts.push(format!("error: {error}"));
        }
        if parts.is_empty() {
            format!("cmd={command}")
        } else {
            format!("cmd={command}, {}", parts.join(", "))
        }
    }
}

// --- Requests ------------------------------------------------------------------------------

/// `rosey.db.messages.outbound.get` request; service defaults 50 and 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutboundGet {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// Seconds the returned rows stay claimed (not handed out again) unless marked sent or
    /// failed first; default [`OUTBOUND_LEASE_SECS`], at most [`MAX_OUTBOUND_LEASE_SECS`]
    /// (addition; absent from the seed's requests, and not sent when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<i64>,
}

/// Default lease of rows returned by `outbound.get`.
pub const OUTBOUND_LEASE_SECS: i64 = 60;
/// Longest lease `outbound.get` grants.
pub const MAX_OUTBOUND_LEASE_SECS: i64 = 3600;

/// Largest user count (`chat_count`, `connected_count`) the service accepts in
/// `stats.user_count` and `stats.high_water`; counts must also be non-negative. Anything else is
/// rejected as malformed, so one bad value can never set a peak that cannot be exceeded again.
pub const MAX_USER_COUNT: i64 = 10_000_000;

/// `outbound.confirm_sent` reply (addition): the row was marked sent and committed (`found`
/// false: no such message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmSentReply {
    pub success: bool,
    pub found: bool,
}

/// `rosey.db.stats.recent_chat.get` request; default limit 50.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecentChatGet {
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `rosey.db.query.user_stats` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserStatsQuery {
    #[serde(default)]
    pub username: Option<String>,
}

/// `rosey.db.query.recent_messages` request (addition); defaults limit 100, offset 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecentMessagesQuery {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// `rosey.db.messages.outbound.enqueue` request (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutboundEnqueue {
    #[serde(default)]
    pub message: Option<String>,
}

// --- Replies -------------------------------------------------------------------------------

/// `{"success": false, "error": "..."}`: the reply to any request that could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub success: bool,
    pub error: String,
}

impl ErrorReply {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorReply {
            success: false,
            error: error.into(),
        }
    }
}

/// One row of the outbound queue as `outbound.get` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    pub id: i64,
    pub timestamp: i64,
    pub message: String,
    pub retry_count: i64,
    pub last_error: Option<String>,
}

/// One line of `recent_chat.get` (chronological, no id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentChatLine {
    pub timestamp: i64,
    pub username: String,
    pub message: String,
}

/// One line of `query.recent_messages` (newest first, with id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentMessage {
    pub id: i64,
    pub timestamp: i64,
    pub username: String,
    pub message: String,
}

/// A peak and when it was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWaterMark {
    pub users: i64,
    pub timestamp: Option<i64>,
}

/// One entry of the top-chatters list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopChatter {
    pub username: String,
    pub chat_lines: i64,
}

/// Successful `query.channel_stats` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub high_water_mark: HighWaterMark,
    pub high_water_connected: HighWaterMark,
    pub top_chatters: Vec<TopChatter>,
    pub total_users_seen: i64,
    pub success: bool,
}

/// Any `query.channel_stats` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChannelStatsReply {
    Ok(ChannelStats),
    Err(ErrorReply),
}

/// `query.user_stats` reply for a known user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatsFound {
    pub username: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub total_chat_lines: i64,
    pub total_time_connected: i64,
    pub current_session_start: Option<i64>,
    pub success: bool,
    pub found: bool,
}

/// `query.user_stats` reply for an unknown user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatsNotFound {
    pub username: String,
    pub success: bool,
    pub found: bool,
    pub message: String,
}

impl UserStatsNotFound {
    pub fn new(username: &str) -> Self {
        UserStatsNotFound {
            username: username.to_owned(),
            success: true,
            found: false,
            message: format!("No statistics found for user '{username}'"),
        }
    }
}

/// Any `query.user_stats` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserStatsReply {
    Found(UserStatsFound),
    NotFound(UserStatsNotFound),
    Err(ErrorReply),
}

/// `outbound.enqueue` reply (addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueReply {
    pub success: bool,
    pub id: i64,
}

/// `service.ping` reply (addition): liveness plus counters since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceStats {
    pub success: bool,
    /// `"core"` (plain subscriptions, the seed's behaviour) or `"durable"` (JetStream).
    pub mode: String,
    pub version: String,
    /// Event messages received (all event subjects, valid or not).
    pub received: u64,
    /// Events whose effects were committed (including validated no-ops such as a leave of an
    /// unknown user).
    pub committed: u64,
    /// Messages rejected as malformed (bad JSON, wrong types, invalid UTF-8, too large, missing fields).
    pub malformed: u64,
    /// Events skipped because their event id was already committed (durable mode redelivery).
    pub duplicates: u64,
    /// Write transactions committed.
    pub batches: u64,
    /// Requests answered.
    pub requests: u64,
    /// Well-formed events whose write failed (an SQL error in that event's savepoint, or a failed
    /// commit of its transaction), counted once per delivery. In durable mode a permanent error
    /// terminates the message; any other is redelivered, up to `max_deliver` deliveries (then a
    /// dead letter). With no events in flight,
    /// `received == committed + malformed + duplicates + failed + dropped`, except that an
    /// over-long event id is counted as malformed while its event is still applied (without the id).
    #[serde(default)]
    pub failed: u64,
    pub uptime_ms: u64,
    /// Core mode: well-formed events dropped because the events buffered between the NATS
    /// subscription and the writer already held `max_buffered_bytes` of payload. With no events
    /// in flight, `received == committed + malformed + duplicates + failed + dropped`.
    #[serde(default)]
    pub dropped: u64,
    /// Payload bytes of the events buffered for the writer right now (core mode).
    #[serde(default)]
    pub buffered_bytes: u64,
    /// Durable mode: events given up after `max_deliver` failed deliveries, recorded in the
    /// `dead_letters` table and terminated (never redelivered).
    #[serde(default)]
    pub dead_letters: u64,
    /// Array replies cut to fit the server's max payload (flagged with a `Rosey-Truncated`
    /// header).
    #[serde(default)]
    pub truncated_replies: u64,
    /// Replies that could not be sent (too large even when cut, or a publish error).
    #[serde(default)]
    pub reply_failures: u64,
    /// Times one of the service's NATS connections was lost since start (messages in flight on
    /// it may be lost in core mode; a healthy run has 0).
    #[serde(default)]
    pub disconnects: u64,
    /// Messages the service's NATS client dropped because the service did not keep up (slow
    /// consumer), as the client reported them: a lower bound (its event queue can overflow too).
    #[serde(default)]
    pub client_drops: u64,
    /// The process instance id this service chose at start (random, 16 hex digits), the same
    /// value its commit notices carry: after a restart it tells the new process from the old.
    #[serde(default)]
    pub instance: String,
}

/// Published on `rosey.db.committed` after a write transaction commits (when enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommitNotice {
    /// Sequence number of the transaction since the service started (1, 2, ...).
    pub batch: u64,
    /// Event ids (from the `Rosey-Event-Id` header) whose effects this transaction committed.
    pub ids: Vec<String>,
    /// All events in the transaction, with or without ids.
    pub events: u64,
    /// Event ids that arrived again (durable-mode redelivery after a crash or an ack timeout) and
    /// were skipped because an earlier transaction had already committed them. Listed so that a
    /// client that missed the earlier notice still learns that the event is stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_ids: Vec<String>,
    /// The instance id of the service process that committed the transaction (random, chosen at
    /// start, also in [`ServiceStats::instance`]). Empty in notices of services that predate it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_seed_json_string;

    #[test]
    fn pm_details_match_seed_examples() {
        let a = PmCommandAudit {
            command: Some("kick".into()),
            args: Some("Bob Spamming".into()),
            result: Some("success".into()),
            ..Default::default()
        };
        assert_eq!(a.details(), "cmd=kick, args: Bob Spamming, result: success");
        let b = PmCommandAudit {
            command: Some("help".into()),
            result: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(b.details(), "cmd=help");
        let c = PmCommandAudit {
            command: Some("stats".into()),
            ..Default::default()
        };
        assert_eq!(c.details(), "cmd=stats, result: unknown");
        let d = PmCommandAudit {
            command: Some("stats".into()),
            result: Some("error".into()),
            error: Some("timeout".into()),
            ..Default::default()
        };
        assert_eq!(d.details(), "cmd=stats, result: error, error: timeout");
    }

    #[test]
    fn reply_shapes_are_the_seeds() {
        let found = UserStatsReply::Found(UserStatsFound {
            username: "bob".into(),
            first_seen: 1,
            last_seen: 2,
            total_chat_lines: 10,
            total_time_connected: 0,
            current_session_start: None,
            success: true,
            found: true,
        });
        assert_eq!(
            to_seed_json_string(&found),
            r#"{"username": "bob", "first_seen": 1, "last_seen": 2, "total_chat_lines": 10, "total_time_connected": 0, "current_session_start": null, "success": true, "found": true}"#
        );
        let nf = UserStatsReply::NotFound(UserStatsNotFound::new("amy"));
        assert_eq!(
            to_seed_json_string(&nf),
            r#"{"username": "amy", "success": true, "found": false, "message": "No statistics found for user 'amy'"}"#
        );
        let err = to_seed_json_string(&ErrorReply::new("Missing username in request"));
        assert_eq!(
            err,
            r#"{"success": false, "error": "Missing username in request"}"#
        );
        // Each shape parses back into the right variant.
        for s in [to_seed_json_string(&found), to_seed_json_string(&nf), err] {
            let back: UserStatsReply = serde_json::from_str(&s).unwrap();
            assert_eq!(to_seed_json_string(&back), s);
        }
        let cs = ChannelStats {
            high_water_mark: HighWaterMark {
                users: 5,
                timestamp: Some(7),
            },
            high_water_connected: HighWaterMark {
                users: 0,
                timestamp: None,
            },
            top_chatters: vec![TopChatter {
                username: "bob".into(),
                chat_lines: 3,
            }],
            total_users_seen: 2,
            success: true,
        };
        assert_eq!(
            to_seed_json_string(&cs),
            r#"{"high_water_mark": {"users": 5, "timestamp": 7}, "high_water_connected": {"users": 0, "timestamp": null}, "top_chatters": [{"username": "bob", "chat_lines": 3}], "total_users_seen": 2, "success": true}"#
        );
    }

    #[test]
    fn lenient_on_missing_strict_on_types() {
        let m: MessageLog = serde_json::from_str("{}").unwrap();
        assert_eq!(m, MessageLog::default());
        assert!(serde_json::from_str::<MessageLog>(r#"{"username": 5}"#).is_err());
        let s: StatusUpdate =
            serde_json::from_str(r#"{"status_data": {"bot_name": "r", "nope": 1}}"#).unwrap();
        assert_eq!(s.status_data.unwrap().bot_name.as_deref(), Some("r"));
    }

    #[test]
    fn commit_notices_without_an_instance_still_parse() {
        let old: CommitNotice =
            serde_json::from_str(r#"{"batch": 3, "ids": ["a"], "events": 1}"#).unwrap();
        assert_eq!(old.instance, "");
        let new = CommitNotice {
            batch: 4,
            ids: vec!["b".into()],
            events: 1,
            duplicate_ids: Vec::new(),
            instance: "00c0ffee00c0ffee".into(),
        };
        let text = to_seed_json_string(&new);
        assert_eq!(
            text,
            r#"{"batch": 4, "ids": ["b"], "events": 1, "instance": "00c0ffee00c0ffee"}"#
        );
        assert_eq!(serde_json::from_str::<CommitNotice>(&text).unwrap(), new);
        let ping: ServiceStats = serde_json::from_str(
            r#"{"success": true, "mode": "core", "version": "0", "received": 0, "committed": 0,
                "malformed": 0, "duplicates": 0, "batches": 0, "requests": 0, "uptime_ms": 1}"#,
        )
        .unwrap();
        assert_eq!(ping.instance, "");
    }
}
