//! Decoding and validating event messages (the fire-and-forget subjects) into [`WriteOp`]s.
//!
//! A message is rejected, and counted as malformed, when it is too large, is not valid UTF-8 JSON
//! of the subject's shape (wrong types included), or lacks what the seed requires (for example an
//! empty `username`, which the seed logged and dropped). Everything else becomes exactly one
//! write, applied by the writer thread.

use crate::db::{Database, DbResult};
use async_nats::HeaderMap;
use rosey_protocol::db::{
    HighWater, MarkFailed, MarkSent, MessageLog, PmCommandAudit, StatusData, StatusUpdate,
    UserCount, UserEvent, MAX_USER_COUNT,
};
use rosey_protocol::{headers, subjects};
use serde::de::DeserializeOwned;

/// One validated write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    UserJoined(String),
    UserLeft(String),
    ChatMessage {
        username: String,
        message: String,
    },
    UserCount {
        chat: i64,
        connected: i64,
    },
    HighWater {
        chat: i64,
        connected: Option<i64>,
    },
    Status(Box<StatusData>),
    MarkSent(i64),
    MarkFailed {
        id: i64,
        error: Option<String>,
        permanent: bool,
    },
    PmAudit {
        username: String,
        details: String,
    },
}

/// What applying a [`WriteOp`] did that the writer needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// A `recent_chat` row was inserted (the batch must prune before committing).
    pub chat_inserted: bool,
}

impl WriteOp {
    /// Applies the write in the current transaction.
    pub fn apply(&self, db: &Database) -> DbResult<Applied> {
        let mut applied = Applied::default();
        match self {
            WriteOp::UserJoined(u) => db.user_joined(u)?,
            WriteOp::UserLeft(u) => {
                db.user_left(u)?;
            }
            WriteOp::ChatMessage { username, message } => {
                applied.chat_inserted = db.record_chat_message(username, message)?;
            }
            WriteOp::UserCount { chat, connected } => db.log_user_count(*chat, *connected)?,
            WriteOp::HighWater { chat, connected } => {
                db.update_high_water_mark(*chat, *connected)?;
            }
            WriteOp::Status(s) => {
                db.update_current_status(s)?;
            }
            WriteOp::MarkSent(id) => {
                if !db.mark_outbound_sent(*id)? {
                    tracing::debug!(id, "mark_sent: no such outbound message");
                }
            }
            WriteOp::MarkFailed {
                id,
                error,
                permanent,
            } => {
                if !db.mark_outbound_failed(*id, error.as_deref(), *permanent)? {
                    tracing::debug!(id, "mark_failed: no such outbound message");
                }
            }
            WriteOp::PmAudit { username, details } => {
                db.log_user_action(username, "pm_command", Some(details))?;
            }
        }
        Ok(applied)
    }
}

impl WriteOp {
    /// The event subject this write came from.
    pub fn subject(&self) -> &'static str {
        match self {
            WriteOp::UserJoined(_) => subjects::USER_JOINED,
            WriteOp::UserLeft(_) => subjects::USER_LEFT,
            WriteOp::ChatMessage { .. } => subjects::MESSAGE_LOG,
            WriteOp::UserCount { .. } => subjects::USER_COUNT,
            WriteOp::HighWater { .. } => subjects::HIGH_WATER,
            WriteOp::Status(_) => subjects::STATUS_UPDATE,
            WriteOp::MarkSent(_) => subjects::OUTBOUND_MARK_SENT,
            WriteOp::MarkFailed { .. } => subjects::OUTBOUND_MARK_FAILED,
            WriteOp::PmAudit { .. } => subjects::PM_COMMAND,
        }
    }
}

/// A user count within `0..=MAX_USER_COUNT`.
fn user_count(field: &str, value: i64) -> Result<i64, String> {
    if (0..=MAX_USER_COUNT).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{field} {value} out of range (0..={MAX_USER_COUNT})"
        ))
    }
}

/// True if `subject` is one of the event subjects.
pub fn is_event_subject(subject: &str) -> bool {
    subjects::EVENT_SUBJECTS.contains(&subject)
}

/// Decodes a JSON object. serde would also accept an array for a struct (`[]` as all
/// defaults); the seed's `data.get(...)` would fail on anything but an object, and so does this.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}")),
        _ => Err("not a JSON object".to_owned()),
    }
}

fn non_empty(field: &str, value: Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("missing {field}")),
    }
}

/// Decodes and validates the payload of an event published on `subject`.
pub fn parse(subject: &str, payload: &[u8], max_payload_bytes: usize) -> Result<WriteOp, String> {
    if payload.len() > max_payload_bytes {
        return Err(format!(
            "payload of {} bytes exceeds the limit of {max_payload_bytes}",
            payload.len()
        ));
    }
    match subject {
        subjects::MESSAGE_LOG => {
            let m: MessageLog = decode(payload)?;
            match (m.username, m.message) {
                (Some(username), Some(message)) if !username.is_empty() && !message.is_empty() => {
                    Ok(WriteOp::ChatMessage { username, message })
                }
                (u, m) => Err(format!(
                    "message_log: Missing data (username={u:?}, message={m:?})"
                )),
            }
        }
        subjects::USER_JOINED => Ok(WriteOp::UserJoined(non_empty(
            "username",
            decode::<UserEvent>(payload)?.username,
        )?)),
        subjects::USER_LEFT => Ok(WriteOp::UserLeft(non_empty(
            "username",
            decode::<UserEvent>(payload)?.username,
        )?)),
        subjects::USER_COUNT => {
            let c: UserCount = decode(payload)?;
            Ok(WriteOp::UserCount {
                chat: user_count("chat_count", c.chat_count.unwrap_or(0))?,
                connected: user_count("connected_count", c.connected_count.unwrap_or(0))?,
            })
        }
        subjects::HIGH_WATER => {
            let h: HighWater = decode(payload)?;
            Ok(WriteOp::HighWater {
                chat: user_count("chat_count", h.chat_count.unwrap_or(0))?,
                connected: h
                    .connected_count
                    .map(|c| user_count("connected_count", c))
                    .transpose()?,
            })
        }
        subjects::STATUS_UPDATE => {
            let s: StatusUpdate = decode(payload)?;
            match s.status_data {
                Some(d) if !d.is_empty() => Ok(WriteOp::Status(Box::new(d))),
                _ => Err("missing status_data (or it has no known field)".to_owned()),
            }
        }
        subjects::OUTBOUND_MARK_SENT => {
            let m: MarkSent = decode(payload)?;
            Ok(WriteOp::MarkSent(m.message_id.ok_or("missing message_id")?))
        }
        subjects::OUTBOUND_MARK_FAILED => {
            let m: MarkFailed = decode(payload)?;
            Ok(WriteOp::MarkFailed {
                id: m.message_id.ok_or("missing message_id")?,
                error: m.error,
                permanent: m.is_permanent,
            })
        }
        subjects::PM_COMMAND => {
            let a: PmCommandAudit = decode(payload)?;
            let details = a.details();
            let username = non_empty("username", a.username)?;
            non_empty("command", a.command)?;
            Ok(WriteOp::PmAudit { username, details })
        }
        other => Err(format!("not an event subject: {other}")),
    }
}

/// The `Rosey-Event-Id` header: `Ok(None)` without one, `Err` if it is empty or longer than
/// [`headers::MAX_EVENT_ID_LEN`] (the event is then applied without an id, and counted malformed).
pub fn event_id(headers: Option<&HeaderMap>) -> Result<Option<String>, String> {
    let Some(value) = headers.and_then(|h| h.get(headers::EVENT_ID)) else {
        return Ok(None);
    };
    let id = value.as_str();
    if id.is_empty() || id.len() > headers::MAX_EVENT_ID_LEN {
        return Err(format!(
            "{} header of {} bytes ignored",
            headers::EVENT_ID,
            id.len()
        ));
    }
    Ok(Some(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn valid_events() {
        assert_eq!(
            parse(
                subjects::MESSAGE_LOG,
                br#"{"username": "a", "message": "hi"}"#,
                MAX
            ),
            Ok(WriteOp::ChatMessage {
                username: "a".into(),
                message: "hi".into()
            })
        );
        assert_eq!(
            parse(subjects::USER_COUNT, b"{}", MAX),
            Ok(WriteOp::UserCount {
                chat: 0,
                connected: 0
            })
        );
        assert_eq!(
            parse(
                subjects::HIGH_WATER,
                br#"{"chat_count": 3, "connected_count": null}"#,
                MAX
            ),
            Ok(WriteOp::HighWater {
                chat: 3,
                connected: None
            })
        );
        assert_eq!(
            parse(subjects::PM_COMMAND, br#"{"timestamp": 1.5, "username": "m", "command": "kick", "args": "", "result": "pending", "error": null}"#, MAX),
            Ok(WriteOp::PmAudit { username: "m".into(), details: "cmd=kick, result: pending".into() })
        );
        assert_eq!(
            parse(
                subjects::OUTBOUND_MARK_FAILED,
                br#"{"message_id": 4, "error": "x"}"#,
                MAX
            ),
            Ok(WriteOp::MarkFailed {
                id: 4,
                error: Some("x".into()),
                permanent: false
            })
        );
    }

    #[test]
    fn malformed_events() {
        for (subject, payload) in [
            (subjects::MESSAGE_LOG, &b"not json"[..]),
            (subjects::MESSAGE_LOG, br#"{"username": "a"}"#),
            (
                subjects::MESSAGE_LOG,
                br#"{"username": "", "message": "x"}"#,
            ),
            (subjects::MESSAGE_LOG, br#"{"username": 5, "message": "x"}"#),
            (
                subjects::MESSAGE_LOG,
                b"{\"username\": \"\xff\xfe\", \"message\": \"x\"}",
            ),
            (subjects::MESSAGE_LOG, br#"["username"]"#),
            (subjects::MESSAGE_LOG, b"null"),
            (subjects::USER_COUNT, b"[]"),
            (subjects::USER_JOINED, b"{}"),
            (subjects::STATUS_UPDATE, br#"{"status_data": {}}"#),
            (
                subjects::STATUS_UPDATE,
                br#"{"status_data": {"bot_rank": "high"}}"#,
            ),
            (subjects::OUTBOUND_MARK_SENT, br#"{"message_id": null}"#),
            (subjects::PM_COMMAND, br#"{"username": "m"}"#),
            (subjects::QUERY_USER_STATS, b"{}"),
        ] {
            assert!(
                parse(subject, payload, MAX).is_err(),
                "{subject} {:?}",
                String::from_utf8_lossy(payload)
            );
        }
        let big = format!(r#"{{"username": "a", "message": "{}"}}"#, "x".repeat(MAX));
        assert!(parse(subjects::MESSAGE_LOG, big.as_bytes(), MAX)
            .unwrap_err()
            .contains("exceeds"));
    }

    #[test]
    fn event_ids() {
        let mut h = HeaderMap::new();
        assert_eq!(event_id(Some(&h)), Ok(None));
        h.insert(headers::EVENT_ID, "e-1");
        assert_eq!(event_id(Some(&h)), Ok(Some("e-1".into())));
        h.insert(
            headers::EVENT_ID,
            "x".repeat(headers::MAX_EVENT_ID_LEN + 1).as_str(),
        );
        assert!(event_id(Some(&h)).is_err());
    }
}
