//! Chat lines: counting them per user and keeping `recent_chat`, the 150-hour chat history.

use super::{Database, DbResult};
use rosey_protocol::db::{RecentChatLine, RecentMessage};
use rusqlite::params;

/// How long `recent_chat` keeps a line: 150 hours, as in the seed.
pub const RECENT_CHAT_RETENTION_SECS: i64 = 150 * 3600;

impl Database {
    /// The seed's `user_chat_message`, the operation behind `rosey.db.message.log`: counts the line
    /// for the user (`total_chat_lines + 1`, `last_seen = now`; a user who never joined gets no
    /// row), stores it in `recent_chat` unless the message or the user name is empty or the user
    /// is `server` (any case), then prunes lines older than 150 hours. Atomic.
    pub fn user_chat_message(&self, username: &str, message: &str) -> DbResult<()> {
        self.atomic(|_| {
            if self.record_chat_message(username, message)? {
                self.prune_recent_chat()?;
            }
            Ok(())
        })
    }

    /// [`Database::user_chat_message`] without the prune, for batches: the writer calls this for
    /// every event of a transaction and [`Database::prune_recent_chat`] once before committing.
    /// Readers only ever see committed states, and at each commit the table is exactly what the
    /// seed's prune-per-insert would have left. Returns true if a `recent_chat` row was inserted.
    /// Not atomic on its own: call it inside a transaction.
    pub fn record_chat_message(&self, username: &str, message: &str) -> DbResult<bool> {
        let conn = self.conn()?;
        let now = self.now();
        conn.prepare_cached(
            "UPDATE user_stats SET total_chat_lines = total_chat_lines + 1, last_seen = ?2 WHERE username = ?1",
        )?
        .execute(params![username, now])?;
        if message.is_empty() || username.is_empty() || username.eq_ignore_ascii_case("server") {
            return Ok(false);
        }
        conn.prepare_cached(
            "INSERT INTO recent_chat (timestamp, username, message) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![now, username, message])?;
        Ok(true)
    }

    /// Deletes `recent_chat` lines older than 150 hours before now. Returns how many.
    pub fn prune_recent_chat(&self) -> DbResult<usize> {
        Ok(self
            .conn()?
            .prepare_cached("DELETE FROM recent_chat WHERE timestamp < ?1")?
            .execute([self.now() - RECENT_CHAT_RETENTION_SECS])?)
    }

    /// The seed's `log_chat`: a plain insert into `recent_chat` (timestamp defaults to now), no
    /// user stats, no prune. Returns the row id.
    pub fn log_chat(&self, username: &str, message: &str, timestamp: Option<i64>) -> DbResult<i64> {
        let conn = self.conn()?;
        conn.prepare_cached(
            "INSERT INTO recent_chat (timestamp, username, message) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            timestamp.unwrap_or_else(|| self.now()),
            username,
            message
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// The newest `limit` lines in chronological order (oldest first); equal timestamps keep
    /// insertion order.
    pub fn get_recent_chat(&self, limit: i64) -> DbResult<Vec<RecentChatLine>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, username, message FROM recent_chat ORDER BY timestamp DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit.max(0)], |r| {
            Ok(RecentChatLine {
                timestamp: r.get(0)?,
                username: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        let mut lines = rows.collect::<Result<Vec<_>, _>>()?;
        lines.reverse();
        Ok(lines)
    }

    /// Lines of the last `minutes` minutes, oldest first, at most `limit`.
    pub fn get_recent_chat_since(&self, minutes: i64, limit: i64) -> DbResult<Vec<RecentChatLine>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, username, message FROM recent_chat WHERE timestamp >= ?1 \
             ORDER BY timestamp ASC, id ASC LIMIT ?2",
        )?;
        let since = self.now() - minutes.saturating_mul(60);
        let rows = stmt.query_map(params![since, limit.max(0)], |r| {
            Ok(RecentChatLine {
                timestamp: r.get(0)?,
                username: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The seed's `get_recent_messages`: newest first (ties: newest id first), with ids, paged by
    /// `limit` and `offset`.
    pub fn get_recent_messages(&self, limit: i64, offset: i64) -> DbResult<Vec<RecentMessage>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp, username, message FROM recent_chat \
             ORDER BY timestamp DESC, id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = stmt.query_map(params![limit.max(0), offset.max(0)], |r| {
            Ok(RecentMessage {
                id: r.get(0)?,
                timestamp: r.get(1)?,
                username: r.get(2)?,
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of lines in `recent_chat`.
    pub fn recent_chat_count(&self) -> DbResult<i64> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT COUNT(*) FROM recent_chat")?
            .query_row([], |r| r.get(0))?)
    }
}
