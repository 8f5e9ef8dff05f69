//! User tracking (joins, leaves, connected time, per-user stats) and the PM audit log.

use super::{Database, DbResult};
use rosey_protocol::db::TopChatter;
use rusqlite::{params, Connection, OptionalExtension};

/// One `user_stats` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStats {
    pub username: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub total_chat_lines: i64,
    pub total_time_connected: i64,
    /// Start of the open session, if the user is connected.
    pub current_session_start: Option<i64>,
}

/// One `user_actions` (audit log) row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAction {
    pub timestamp: i64,
    pub username: String,
    pub action_type: String,
    pub details: Option<String>,
}

/// Ends every open session at `now` (see [`Database::close`]). Returns how many were open.
pub(super) fn end_all_sessions(conn: &Connection, now: i64) -> DbResult<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE user_stats \
             SET total_time_connected = COALESCE(total_time_connected, 0) + MAX(0, ?1 - current_session_start), \
                 current_session_start = NULL, last_seen = ?1 \
             WHERE current_session_start IS NOT NULL",
        )?
        .execute([now])?)
}

impl Database {
    /// A user joined: creates their row (`first_seen = last_seen = current_session_start = now`)
    /// or, for a known user, sets `last_seen` and starts a new session (as the seed does, a join
    /// without a leave restarts the session).
    pub fn user_joined(&self, username: &str) -> DbResult<()> {
        self.conn()?
            .prepare_cached(
                "INSERT INTO user_stats (username, first_seen, last_seen, current_session_start) \
                 VALUES (?1, ?2, ?2, ?2) \
                 ON CONFLICT(username) DO UPDATE SET \
                     last_seen = excluded.last_seen, current_session_start = excluded.current_session_start",
            )?
            .execute(params![username, self.now()])?;
        Ok(())
    }

    /// A user left: if they have an open session, adds its length to `total_time_connected`,
    /// ends it and sets `last_seen`. Otherwise (unknown user, no session) does nothing and
    /// returns false. A clock that went backwards adds 0, never a negative time.
    pub fn user_left(&self, username: &str) -> DbResult<bool> {
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE user_stats \
                 SET total_time_connected = COALESCE(total_time_connected, 0) + MAX(0, ?2 - current_session_start), \
                     current_session_start = NULL, last_seen = ?2 \
                 WHERE username = ?1 AND current_session_start IS NOT NULL AND current_session_start != 0",
            )?
            .execute(params![username, self.now()])?;
        Ok(n > 0)
    }

    /// The user's row, or `None` if never seen.
    pub fn get_user_stats(&self, username: &str) -> DbResult<Option<UserStats>> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT username, first_seen, last_seen, total_chat_lines, total_time_connected, \
                 current_session_start FROM user_stats WHERE username = ?1",
            )?
            .query_row([username], |r| {
                Ok(UserStats {
                    username: r.get(0)?,
                    first_seen: r.get(1)?,
                    last_seen: r.get(2)?,
                    total_chat_lines: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    total_time_connected: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                    current_session_start: r.get(5)?,
                })
            })
            .optional()?)
    }

    /// Number of distinct users ever seen.
    pub fn get_total_users_seen(&self) -> DbResult<i64> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT COUNT(*) FROM user_stats")?
            .query_row([], |r| r.get(0))?)
    }

    /// Users with at least one chat line, most lines first (ties by name, which the seed left to
    /// SQLite), at most `limit` (negative means none).
    pub fn get_top_chatters(&self, limit: i64) -> DbResult<Vec<TopChatter>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT username, total_chat_lines FROM user_stats WHERE total_chat_lines > 0 \
             ORDER BY total_chat_lines DESC, username ASC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit.max(0)], |r| {
            Ok(TopChatter {
                username: r.get(0)?,
                chat_lines: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends to the audit log (`user_actions`) at the current time, returning the row id.
    pub fn log_user_action(
        &self,
        username: &str,
        action_type: &str,
        details: Option<&str>,
    ) -> DbResult<i64> {
        let conn = self.conn()?;
        conn.prepare_cached(
            "INSERT INTO user_actions (timestamp, username, action_type, details) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![self.now(), username, action_type, details])?;
        Ok(conn.last_insert_rowid())
    }

    /// The newest `limit` audit rows, newest first.
    pub fn get_user_actions(&self, limit: i64) -> DbResult<Vec<UserAction>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, username, action_type, details FROM user_actions ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit.max(0)], |r| {
            Ok(UserAction {
                timestamp: r.get(0)?,
                username: r.get(1)?,
                action_type: r.get(2)?,
                details: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
