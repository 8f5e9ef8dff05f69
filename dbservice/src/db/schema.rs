//! Schema creation and in-place migrations: the seed's eight tables and four indexes exactly
//! (the `TABLES` and `INDEXES` below), plus `processed_events`, `dead_letters` and the outbound
//! lease column `claimed_until`.
//!
//! Idempotent and transactional: everything runs in one `BEGIN IMMEDIATE` transaction, so a
//! crash half-way leaves the previous schema intact. Unlike the seed, the `channel_stats` column
//! migration runs whether or not the table has rows.

use super::DbResult;
use rusqlite::Connection;

/// `PRAGMA user_version` after migration.
pub const SCHEMA_VERSION: i64 = 1;

/// Every table, in creation order.
pub const TABLES: [&str; 10] = [
    "user_stats",
    "user_actions",
    "channel_stats",
    "user_count_history",
    "recent_chat",
    "current_status",
    "outbound_messages",
    "api_tokens",
    "processed_events",
    "dead_letters",
];

/// The seed's four explicit indexes.
pub const INDEXES: [&str; 4] = [
    "idx_user_count_timestamp",
    "idx_recent_chat_timestamp",
    "idx_outbound_sent",
    "idx_api_tokens_revoked",
];

const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS user_stats (
    username TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    total_chat_lines INTEGER DEFAULT 0,
    total_time_connected INTEGER DEFAULT 0,
    current_session_start INTEGER
);
CREATE TABLE IF NOT EXISTS user_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp INTEGER NOT NULL,
    username TEXT NOT NULL,
    action_type TEXT NOT NULL,
    details TEXT
);
CREATE TABLE IF NOT EXISTS channel_stats (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    max_users INTEGER DEFAULT 0,
    max_users_timestamp INTEGER,
    max_connected INTEGER DEFAULT 0,
    max_connected_timestamp INTEGER,
    last_updated INTEGER
);
CREATE TABLE IF NOT EXISTS user_count_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp INTEGER NOT NULL,
    chat_users INTEGER NOT NULL,
    connected_users INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recent_chat (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp INTEGER NOT NULL,
    username TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS current_status (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bot_name TEXT,
    bot_rank REAL,
    bot_afk INTEGER DEFAULT 0,
    channel_name TEXT,
    current_chat_users INTEGER DEFAULT 0,
    current_connected_users INTEGER DEFAULT 0,
    playlist_items INTEGER DEFAULT 0,
    current_media_title TEXT,
    current_media_duration INTEGER,
    bot_start_time INTEGER,
    bot_connected INTEGER DEFAULT 0,
    last_updated INTEGER
);
CREATE TABLE IF NOT EXISTS outbound_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp INTEGER NOT NULL,
    message TEXT NOT NULL,
    sent INTEGER DEFAULT 0,
    sent_timestamp INTEGER,
    retry_count INTEGER DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token TEXT PRIMARY KEY,
    description TEXT,
    created_at INTEGER NOT NULL,
    last_used INTEGER,
    revoked INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id TEXT PRIMARY KEY,
    committed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    subject TEXT NOT NULL,
    event_id TEXT,
    stream_seq INTEGER,
    deliveries INTEGER NOT NULL,
    error TEXT NOT NULL,
    detail TEXT
);
";

const CREATE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS idx_user_count_timestamp ON user_count_history(timestamp);
CREATE INDEX IF NOT EXISTS idx_recent_chat_timestamp ON recent_chat(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_outbound_sent ON outbound_messages(sent, timestamp);
CREATE INDEX IF NOT EXISTS idx_api_tokens_revoked ON api_tokens(revoked, token);
";

/// Columns older databases may lack, with the definition to add them with.
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("outbound_messages", "retry_count", "INTEGER DEFAULT 0"),
    ("outbound_messages", "last_error", "TEXT"),
    ("channel_stats", "max_connected", "INTEGER DEFAULT 0"),
    ("channel_stats", "max_connected_timestamp", "INTEGER"),
    // Lease of a row handed out by `outbound.get` (Unix seconds); NULL: not claimed.
    ("outbound_messages", "claimed_until", "INTEGER"),
];

/// Creates or upgrades the schema and inserts the seed rows.
pub(super) fn migrate(conn: &Connection, now: i64) -> DbResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match migrate_in_transaction(conn, now) {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_in_transaction(conn: &Connection, now: i64) -> DbResult<()> {
    conn.execute_batch(CREATE_TABLES)?;
    for (table, column, definition) in ADDED_COLUMNS {
        if !has_column(conn, table, column)? {
            // Identifiers cannot be bound as parameters; these come from the constant above.
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
            tracing::info!(table, column, "migrated: added column");
        }
    }
    conn.execute_batch(CREATE_INDEXES)?;
    conn.execute(
        "INSERT INTO current_status (id, last_updated) SELECT 1, ?1 \
         WHERE NOT EXISTS (SELECT 1 FROM current_status)",
        [now],
    )?;
    conn.execute(
        "INSERT INTO channel_stats (id, max_users, last_updated) SELECT 1, 0, ?1 \
         WHERE NOT EXISTS (SELECT 1 FROM channel_stats)",
        [now],
    )?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

fn has_column(conn: &Connection, table: &str, column: &str) -> DbResult<bool> {
    let mut stmt = conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?;
    Ok(stmt.exists([table, column])?)
}
