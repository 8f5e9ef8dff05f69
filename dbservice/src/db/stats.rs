//! Channel statistics: high-water marks (the single `channel_stats` row) and the user-count
//! history.

use super::{Database, DbResult};
use rusqlite::{params, Connection, OptionalExtension};

/// One `user_count_history` sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCountSample {
    pub timestamp: i64,
    pub chat_users: i64,
    pub connected_users: i64,
}

pub(super) fn delete_history_before(conn: &Connection, cutoff: i64) -> DbResult<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM user_count_history WHERE timestamp < ?1")?
        .execute([cutoff])?)
}

impl Database {
    /// Raises the peaks: `max_users` if `chat_users` exceeds it, and `max_connected` if
    /// `connected_users` is given, non-zero and exceeds it; each with its timestamp and
    /// `last_updated`. Returns `(chat_raised, connected_raised)`.
    pub fn update_high_water_mark(
        &self,
        chat_users: i64,
        connected_users: Option<i64>,
    ) -> DbResult<(bool, bool)> {
        let now = self.now();
        self.atomic(|conn| {
            let chat = conn
                .prepare_cached(
                    "UPDATE channel_stats SET max_users = ?1, max_users_timestamp = ?2, last_updated = ?2 \
                     WHERE id = 1 AND ?1 > COALESCE(max_users, 0)",
                )?
                .execute(params![chat_users, now])?
                > 0;
            let connected = match connected_users.filter(|&c| c != 0) {
                Some(c) => {
                    conn.prepare_cached(
                        "UPDATE channel_stats SET max_connected = ?1, max_connected_timestamp = ?2, last_updated = ?2 \
                         WHERE id = 1 AND ?1 > COALESCE(max_connected, 0)",
                    )?
                    .execute(params![c, now])?
                        > 0
                }
                None => false,
            };
            if chat {
                tracing::info!("New high water mark (chat): {chat_users} users");
            }
            if connected {
                tracing::info!("New high water mark (connected): {} viewers", connected_users.unwrap_or(0));
            }
            Ok((chat, connected))
        })
    }

    /// `(max_users, max_users_timestamp)`, or `(0, None)` without a row.
    pub fn get_high_water_mark(&self) -> DbResult<(i64, Option<i64>)> {
        self.high_water(
            "SELECT COALESCE(max_users, 0), max_users_timestamp FROM channel_stats WHERE id = 1",
        )
    }

    /// `(max_connected, max_connected_timestamp)`, or `(0, None)` without a row.
    pub fn get_high_water_mark_connected(&self) -> DbResult<(i64, Option<i64>)> {
        self.high_water("SELECT COALESCE(max_connected, 0), max_connected_timestamp FROM channel_stats WHERE id = 1")
    }

    fn high_water(&self, sql: &str) -> DbResult<(i64, Option<i64>)> {
        let row = self
            .conn()?
            .prepare_cached(sql)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Appends a user-count sample at the current time.
    pub fn log_user_count(&self, chat_users: i64, connected_users: i64) -> DbResult<()> {
        self.conn()?
            .prepare_cached("INSERT INTO user_count_history (timestamp, chat_users, connected_users) VALUES (?1, ?2, ?3)")?
            .execute(params![self.now(), chat_users, connected_users])?;
        Ok(())
    }

    /// Samples of the last `hours` hours, oldest first.
    pub fn get_user_count_history(&self, hours: i64) -> DbResult<Vec<UserCountSample>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, chat_users, connected_users FROM user_count_history \
             WHERE timestamp >= ?1 ORDER BY timestamp ASC, id ASC",
        )?;
        let since = self.now() - hours.saturating_mul(3600);
        let rows = stmt.query_map([since], |r| {
            Ok(UserCountSample {
                timestamp: r.get(0)?,
                chat_users: r.get(1)?,
                connected_users: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes samples older than `days` days. Returns how many.
    pub fn cleanup_old_history(&self, days: i64) -> DbResult<usize> {
        delete_history_before(self.conn()?, self.now() - days.saturating_mul(86_400))
    }
}
