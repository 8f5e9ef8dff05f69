//! Subject names. The first twelve are the Python seed's; the rest are additions,
//! all optional for a client that speaks only the seed protocol.

// --- Seed pub/sub (fire-and-forget) subjects, bot → database service -------------------------

/// `{"username": str}`: a user joined the channel.
pub const USER_JOINED: &str = "rosey.db.user.joined";
/// `{"username": str}`: a user left the channel.
pub const USER_LEFT: &str = "rosey.db.user.left";
/// `{"username": str, "message": str}`: a chat line.
pub const MESSAGE_LOG: &str = "rosey.db.message.log";
/// `{"chat_count": int, "connected_count": int}`: periodic user-count sample.
pub const USER_COUNT: &str = "rosey.db.stats.user_count";
/// `{"chat_count": int, "connected_count": int|null}`: candidate high-water mark.
pub const HIGH_WATER: &str = "rosey.db.stats.high_water";
/// `{"status_data": {...}}`: the bot's current status row.
pub const STATUS_UPDATE: &str = "rosey.db.status.update";
/// `{"message_id": int}`: an outbound message was sent.
pub const OUTBOUND_MARK_SENT: &str = "rosey.db.messages.outbound.mark_sent";
/// PM command audit record (pending and final), see [`crate::db::PmCommandAudit`].
pub const PM_COMMAND: &str = "rosey.db.action.pm_command";

// --- Seed request/reply subjects --------------------------------------------------------------

/// `{"limit": int, "max_retries": int}` → JSON array of [`crate::db::OutboundMessage`].
pub const OUTBOUND_GET: &str = "rosey.db.messages.outbound.get";
/// `{"limit": int}` → JSON array of [`crate::db::RecentChatLine`], chronological.
pub const RECENT_CHAT_GET: &str = "rosey.db.stats.recent_chat.get";
/// Any body (never parsed) → [`crate::db::ChannelStatsReply`].
pub const QUERY_CHANNEL_STATS: &str = "rosey.db.query.channel_stats";
/// `{"username": str}` → [`crate::db::UserStatsReply`].
pub const QUERY_USER_STATS: &str = "rosey.db.query.user_stats";

// --- Additions (documented in protocol/README.md) ---------------------------------------------

/// Pub/sub `{"message_id": int, "error": str, "is_permanent": bool}`: sending failed
/// (the seed's missing `mark_failed`, its "TODO: Add mark_failed handler").
pub const OUTBOUND_MARK_FAILED: &str = "rosey.db.messages.outbound.mark_failed";
/// Request `{"limit": int, "offset": int}` → array of [`crate::db::RecentMessage`], newest first
/// (the seed's `get_recent_messages`).
pub const QUERY_RECENT_MESSAGES: &str = "rosey.db.query.recent_messages";
/// Request `{"message": str}` → `{"success": true, "id": int}`: enqueue an outbound message.
pub const OUTBOUND_ENQUEUE: &str = "rosey.db.messages.outbound.enqueue";
/// Request `{"message_id": int}` → [`crate::db::ConfirmSentReply`]: mark an outbound message
/// sent and reply once that is committed (the confirmed form of [`OUTBOUND_MARK_SENT`]).
pub const OUTBOUND_CONFIRM_SENT: &str = "rosey.db.messages.outbound.confirm_sent";
/// Request (any body) → [`crate::db::ServiceStats`]: liveness and counters. Used as the
/// readiness check (no sleeps) and for the harness's accounting.
pub const SERVICE_PING: &str = "rosey.db.service.ping";
/// Published by the service after each committed write transaction that held at least one
/// event carrying an event id: [`crate::db::CommitNotice`]. Only when commit notices are enabled.
pub const COMMITTED: &str = "rosey.db.committed";

/// The eight seed event subjects plus `mark_failed`: everything the service consumes as
/// fire-and-forget events (and what the durable JetStream stream captures). Request subjects are
/// deliberately absent: a stream capturing them would answer requests with a PubAck.
pub const EVENT_SUBJECTS: [&str; 9] = [
    USER_JOINED,
    USER_LEFT,
    MESSAGE_LOG,
    USER_COUNT,
    HIGH_WATER,
    STATUS_UPDATE,
    OUTBOUND_MARK_SENT,
    PM_COMMAND,
    OUTBOUND_MARK_FAILED,
];

/// Every request/reply subject the service answers.
pub const REQUEST_SUBJECTS: [&str; 8] = [
    OUTBOUND_GET,
    OUTBOUND_CONFIRM_SENT,
    RECENT_CHAT_GET,
    QUERY_CHANNEL_STATS,
    QUERY_USER_STATS,
    QUERY_RECENT_MESSAGES,
    OUTBOUND_ENQUEUE,
    SERVICE_PING,
];

/// JetStream stream used by the durable ("no loss") mode.
pub const DURABLE_STREAM: &str = "ROSEY_DB_EVENTS";
/// Durable consumer name used by the database service in durable mode.
pub const DURABLE_CONSUMER: &str = "rosey-dbservice";
