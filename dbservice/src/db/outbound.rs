//! The outbound message queue: messages the bot should say in chat, with retries.

use super::{Database, DbResult};
use rosey_protocol::db::OutboundMessage;
use rosey_protocol::to_seed_json;
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

    /// `outbound.get`: like [`Database::get_unsent_outbound_messages`] but skips rows under a
    /// lease and claims the rows it returns for `lease_secs` (`claimed_until = now + lease`), so
    /// a second caller does not get them again until the lease expires or the row is marked
    /// failed. Returns at most as many rows as fit in `max_bytes` of JSON array (at least none),
    /// and how many rows were eligible (for the truncation flag). Atomic.
    pub fn claim_outbound_messages(
        &self,
        limit: i64,
        max_retries: i64,
        lease_secs: i64,
        max_bytes: usize,
    ) -> DbResult<(Vec<OutboundMessage>, usize)> {
        let now = self.now();
        self.atomic(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, timestamp, message, COALESCE(retry_count, 0), last_error FROM outbound_messages \
                 WHERE sent = 0 AND COALESCE(retry_count, 0) < ?1 \
                   AND (COALESCE(retry_count, 0) = 0 OR timestamp + (1 << MIN(retry_count, 40)) * 60 <= ?2) \
                   AND (claimed_until IS NULL OR claimed_until <= ?2) \
                 ORDER BY timestamp ASC, id ASC LIMIT ?3",
            )?;
            let rows: Vec<OutboundMessage> = stmt
                .query_map(params![max_retries, now, limit.max(0)], |r| {
                    Ok(OutboundMessage {
                        id: r.get(0)?,
                        timestamp: r.get(1)?,
                        message: r.get(2)?,
                        retry_count: r.get(3)?,
                        last_error: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let eligible = rows.len();
            let fit = fitting_prefix(&rows, max_bytes);
            let mut claim = conn
                .prepare_cached("UPDATE outbound_messages SET claimed_until = ?2 WHERE id = ?1")?;
            let rows: Vec<OutboundMessage> = rows.into_iter().take(fit).collect();
            for m in &rows {
                claim.execute(params![m.id, now.saturating_add(lease_secs.max(0))])?;
            }
            Ok((rows, eligible))
        })
    }

    /// Marks a message sent (and ends its lease). Returns false if no such message exists.
    pub fn mark_outbound_sent(&self, id: i64) -> DbResult<bool> {
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE outbound_messages SET sent = 1, sent_timestamp = ?2, claimed_until = NULL WHERE id = ?1",
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
                "UPDATE outbound_messages SET sent = 1, sent_timestamp = ?3, claimed_until = NULL, \
                 retry_count = COALESCE(retry_count, 0) + 1, last_error = ?2 WHERE id = ?1",
            )?
            .execute(params![id, error, self.now()])?
        } else {
            conn.prepare_cached(
                "UPDATE outbound_messages SET retry_count = COALESCE(retry_count, 0) + 1, last_error = ?2, \
                 claimed_until = NULL WHERE id = ?1",
            )?
            .execute(params![id, error])?
        };
        Ok(n > 0)
    }
}

/// How many leading `rows` fit in a JSON array (as `to_seed_json` writes it) of at most
/// `max_bytes`: `[` + rows joined by `", "` + `]`.
pub fn fitting_prefix<T: serde::Serialize>(rows: &[T], max_bytes: usize) -> usize {
    let mut total = 2usize;
    for (i, row) in rows.iter().enumerate() {
        total += to_seed_json(row).len() + if i > 0 { 2 } else { 0 };
        if total > max_bytes {
            return i;
        }
    }
    rows.len()
}
