//! The bot's current status: the single `current_status` row.

use super::{Database, DbResult};
use rosey_protocol::db::StatusData;
use rusqlite::{params, OptionalExtension};

/// The `current_status` row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CurrentStatus {
    pub bot_name: Option<String>,
    pub bot_rank: Option<f64>,
    pub bot_afk: Option<i64>,
    pub channel_name: Option<String>,
    pub current_chat_users: Option<i64>,
    pub current_connected_users: Option<i64>,
    pub playlist_items: Option<i64>,
    pub current_media_title: Option<String>,
    pub current_media_duration: Option<i64>,
    pub bot_start_time: Option<i64>,
    pub bot_connected: Option<i64>,
    pub last_updated: Option<i64>,
}

impl Database {
    /// Sets the given fields of the status row and `last_updated = now`; fields that are `None`
    /// keep their value. Only the seed's eleven columns exist in [`StatusData`], so unknown keys
    /// cannot reach SQL. With no field set nothing is written and false is returned, as in the
    /// seed. (Difference: the seed could set a column to NULL by passing `None` explicitly; the
    /// wire type cannot express that, so a JSON `null` leaves the column unchanged.)
    pub fn update_current_status(&self, s: &StatusData) -> DbResult<bool> {
        if s.is_empty() {
            return Ok(false);
        }
        self.conn()?
            .prepare_cached(
                "UPDATE current_status SET \
                 bot_name = COALESCE(?1, bot_name), bot_rank = COALESCE(?2, bot_rank), \
                 bot_afk = COALESCE(?3, bot_afk), channel_name = COALESCE(?4, channel_name), \
                 current_chat_users = COALESCE(?5, current_chat_users), \
                 current_connected_users = COALESCE(?6, current_connected_users), \
                 playlist_items = COALESCE(?7, playlist_items), \
                 current_media_title = COALESCE(?8, current_media_title), \
                 current_media_duration = COALESCE(?9, current_media_duration), \
                 bot_start_time = COALESCE(?10, bot_start_time), \
                 bot_connected = COALESCE(?11, bot_connected), last_updated = ?12 \
                 WHERE id = 1",
            )?
            .execute(params![
                s.bot_name,
                s.bot_rank,
                s.bot_afk,
                s.channel_name,
                s.current_chat_users,
                s.current_connected_users,
                s.playlist_items,
                s.current_media_title,
                s.current_media_duration,
                s.bot_start_time,
                s.bot_connected,
                self.now(),
            ])?;
        Ok(true)
    }

    /// The status row, or `None` if it is missing.
    pub fn get_current_status(&self) -> DbResult<Option<CurrentStatus>> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT bot_name, bot_rank, bot_afk, channel_name, current_chat_users, current_connected_users, \
                 playlist_items, current_media_title, current_media_duration, bot_start_time, bot_connected, \
                 last_updated FROM current_status WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok(CurrentStatus {
                    bot_name: r.get(0)?,
                    bot_rank: r.get(1)?,
                    bot_afk: r.get(2)?,
                    channel_name: r.get(3)?,
                    current_chat_users: r.get(4)?,
                    current_connected_users: r.get(5)?,
                    playlist_items: r.get(6)?,
                    current_media_title: r.get(7)?,
                    current_media_duration: r.get(8)?,
                    bot_start_time: r.get(9)?,
                    bot_connected: r.get(10)?,
                    last_updated: r.get(11)?,
                })
            })
            .optional()?)
    }
}
