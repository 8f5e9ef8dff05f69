//! Optional NATS headers. The seed sends no headers; a service or client that ignores them
//! still speaks the seed protocol.

/// A unique id for one event (any string up to 128 bytes; the harness uses decimal or UUID-like
/// ids). The database service stores it for idempotency in durable mode and echoes it in
/// [`crate::db::CommitNotice`]. For JetStream publishes the same value is also sent as
/// [`NATS_MSG_ID`] so the server de-duplicates within its window.
pub const EVENT_ID: &str = "Rosey-Event-Id";
/// A correlation id that follows one platform event through the bot to everything it causes
/// (database events, requests, outgoing chat and PMs).
pub const CORRELATION_ID: &str = "Rosey-Correlation-Id";
/// JetStream's own de-duplication header.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Longest event id the service accepts; longer ids are treated as absent and counted as malformed.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Set on an array reply that was cut to fit the server's max payload: `"<rows returned> of
/// <rows asked for>"`. Replies that fit carry no headers (byte-compatible with the seed).
pub const TRUNCATED: &str = "Rosey-Truncated";
