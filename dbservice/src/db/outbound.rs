//! The outbound message queue: messages the bot should say in chat, with retries.

use super::{Database, DbResult};
use rosey_protocol::db::OutboundMessage;
use rusqlite::params;

impl Database {
    /// Queues a message. Returns its id.
    pub fn enqueue_outbound_message(&self, message: &str) -> DbResult<i64> {
        let conn = self.conn()?;
        conn.prepare_cached("INSERT INTO outbound_messages (timestamp, message) VALUES (?1, ?2)")?
            .execute(params![self.now(), message])?;
        Ok(conn.last_insert_rowid())
    }

    /// Unsent messages that may be tried now, oldest first: `retry_count < max_retries`, and a
    /// message that failed `n` times waits until `timestamp + 2^n minutes` (the seed's backoff,
    /// counted from when it was queued).
    pub fn get_unsent_outbound_messages(
        &self,
        limit: i64,
        max_retries: i64,
    ) -> DbResult<Vec<OutboundMessage>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp, message, COALESCE(retry_count, 0), last_error FROM outbound_messages \
             WHERE sent = 0 AND COALESCE(retry_count, 0) < ?1 \
               AND (COALESCE(retry_count, 0) = 0 OR timestamp + (1 << MIN(retry_count, 40)) * 60 <= ?2) \
             ORDER BY timestamp ASC, id ASC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![max_retries, self.now(), limit.max(0)], |r| {
            Ok(OutboundMessage {
                id: r.get(0)?,
                timestamp: r.get(1)?,
                message: r.get(2)?,
                retry_count: r.get(3)?,
                last_error: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a message sent. Returns false if no such message exists.
    pub fn mark_outbound_sent(&self, id: i64) -> DbResult<bool> {
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE outbound_messages SET sent = 1, sent_timestamp = ?2 WHERE id = ?1",
            )?
            .execute(params![id, self.now()])?;
        Ok(n > 0)
    }

    /// Records a failed send: `retry_count + 1` and `last_error`; a permanent failure also marks
    /// the message done (`sent = 1`, `sent_timestamp = now`) so it is never retried. Returns false
    /// if no such message exists. (The seed had this method but no subject to reach it.)
    pub fn mark_outbound_failed(
        &self,
        id: i64,
        error: Option<&str>,
        is_permanent: bool,
    ) -> DbResult<bool> {
        let conn = self.conn()?;
        let n = if is_permanent {
            conn.prepare_cached(
                "UPDATE outbound_messages SET sent = 1, sent_timestamp = ?3, \
                 retry_count = COALESCE(retry_count, 0) + 1, last_error = ?2 WHERE id = ?1",
            )?
            .execute(params![id, error, self.now()])?
        } else {
            conn.prepare_cached(
                "UPDATE outbound_messages SET retry_count = COALESCE(retry_count, 0) + 1, last_error = ?2 WHERE id = ?1",
            )?
            .execute(params![id, error])?
        };
        Ok(n > 0)
    }
}
