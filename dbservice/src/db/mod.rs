//! The database: the seed's `BotDatabase` (the Python bot's SQLite layer) as synchronous rusqlite.
//!
//! [`Database`] keeps the seed's lifecycle: [`Database::new`] does no I/O, [`Database::open`]
//! connects and migrates (opening twice is an error), [`Database::close`] ends every open user
//! session and is idempotent. Each operation is a method with the seed's semantics; the few the
//! seed got wrong are fixed and say so in their docs.
//!
//! Outside an explicit transaction every write method is atomic on its own (multi-statement
//! operations wrap themselves in a transaction, like the seed's commit-per-call). Inside
//! [`Database::transaction`] or [`Database::begin`] they join the caller's transaction: that is how
//! the service's writer commits many events at once.
//!
//! Every statement is parameterised and prepared once per connection (`prepare_cached`).
//! Timestamps are integer Unix seconds. File databases use WAL with `synchronous=NORMAL`: a
//! process crash (even `kill -9`) loses no committed transaction; a power failure may lose the
//! last ones unless [`OpenOptions::synchronous_full`] is set.
//!
//! Beyond the seed's eight tables there is one more, `processed_events(event_id TEXT PRIMARY KEY,
//! committed_at INTEGER NOT NULL) WITHOUT ROWID`: the ids of events already applied, written in the
//! same transaction as the event's effects, so a redelivered event is recognised and skipped
//! (durable mode). [`Database::perform_maintenance`] forgets ids older than 30 days. And
//! `dead_letters`: durable-mode events given up after too many failed deliveries.
//!
//! Read-write file databases use `auto_vacuum = INCREMENTAL` (an older database is converted by
//! one full `VACUUM` when first opened), so maintenance gives free pages back in small steps
//! ([`Database::incremental_vacuum_step`]) that the writer interleaves with write batches,
//! instead of one `VACUUM` that would hold every write until it finished.

mod chat;
mod outbound;
mod schema;
mod stats;
mod status;
mod tokens;
mod users;

pub use chat::RECENT_CHAT_RETENTION_SECS;
pub use outbound::fitting_prefix;
pub use schema::{INDEXES, SCHEMA_VERSION, TABLES};
pub use stats::UserCountSample;
pub use status::CurrentStatus;
pub use tokens::ApiTokenInfo;
pub use users::{UserAction, UserStats};

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a statement waits for a lock held by another connection before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of [`Database`] operations.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database already open: {}", .0.display())]
    AlreadyOpen(PathBuf),
    #[error("database is not open")]
    NotOpen,
    #[error("opening database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0} is not allowed inside a transaction")]
    InTransaction(&'static str),
    #[error("operating system random number generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl DbError {
    /// True if retrying the same write can never succeed: a constraint violation, a type
    /// mismatch, a value too big, or a value that does not convert. Everything else (disk full,
    /// I/O errors, busy or locked, a missing table, ...) may pass later and is worth retrying.
    pub fn is_permanent(&self) -> bool {
        use rusqlite::ffi::ErrorCode as C;
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                matches!(f.code, C::ConstraintViolation | C::TypeMismatch | C::TooBig)
            }
            DbError::Sqlite(
                rusqlite::Error::ToSqlConversionFailure(_)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::Utf8Error(..),
            ) => true,
            _ => false,
        }
    }
}

/// Result of [`Database`] operations.
pub type DbResult<T> = Result<T, DbError>;

/// How [`Database::open`] opens the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Open for queries only (`PRAGMA query_only`): no migrations, and [`Database::close`] does not
    /// end sessions. The service's read connections use this.
    pub read_only: bool,
    /// `synchronous=FULL` instead of `NORMAL`: every commit is fsynced, so even a power failure
    /// loses nothing that was committed (and, in durable mode, acknowledged). Slower.
    pub synchronous_full: bool,
}

/// How long pruned tables keep rows (user-count history, the PM audit log `user_actions`,
/// processed event ids): 30 days.
pub const RETENTION_SECS: i64 = 30 * 86_400;

/// What [`Database::perform_maintenance`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceReport {
    /// `user_count_history` rows older than 30 days.
    pub history_deleted: usize,
    /// Sent outbound messages older than 7 days.
    pub outbound_deleted: usize,
    /// Revoked API tokens created more than 90 days ago.
    pub tokens_deleted: usize,
    /// `processed_events` ids older than 30 days.
    pub processed_events_deleted: usize,
    /// `user_actions` (PM audit) rows older than 30 days.
    pub user_actions_deleted: usize,
}

/// A durable-mode event given up after too many failed deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub subject: String,
    pub event_id: Option<String>,
    pub stream_seq: Option<u64>,
    pub deliveries: u64,
    pub error: String,
    /// The decoded write, for a human to inspect.
    pub detail: Option<String>,
}

/// The seed's `BotDatabase`: one SQLite connection and the operations on it.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    options: OpenOptions,
    conn: Option<Connection>,
    fixed_now: Option<i64>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Database {
    /// A database at `path` (`":memory:"` allowed), not yet opened. Does no I/O.
    pub fn new(path: impl Into<PathBuf>) -> Database {
        Database::with_options(path, OpenOptions::default())
    }

    /// Like [`Database::new`] with explicit [`OpenOptions`].
    pub fn with_options(path: impl Into<PathBuf>, options: OpenOptions) -> Database {
        Database {
            path: path.into(),
            options,
            conn: None,
            fixed_now: None,
        }
    }

    /// [`Database::new`] followed by [`Database::open`].
    pub fn open_path(path: impl Into<PathBuf>) -> DbResult<Database> {
        let mut db = Database::new(path);
        db.open()?;
        Ok(db)
    }

    /// Open an existing database read-only (readers beside a running service: WAL lets them
    /// read while it writes; nothing here can change a row).
    pub fn open_read_only(path: impl Into<PathBuf>) -> DbResult<Database> {
        let mut db = Database::with_options(
            path,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        );
        db.open()?;
        Ok(db)
    }

    /// The path given at construction.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True between a successful [`Database::open`] and [`Database::close`].
    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// Connects, applies the pragmas and (unless read-only) creates or migrates the schema.
    /// Fails with [`DbError::AlreadyOpen`] if already open.
    pub fn open(&mut self) -> DbResult<()> {
        if self.conn.is_some() {
            return Err(DbError::AlreadyOpen(self.path.clone()));
        }
        let conn = self.connect().map_err(|source| DbError::Open {
            path: self.path.clone(),
            source,
        })?;
        if !self.options.read_only && !self.is_memory() {
            if let Err(source) = ensure_incremental_vacuum(&conn, &self.path) {
                return Err(DbError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        self.conn = Some(conn);
        if !self.options.read_only {
            let now = self.now();
            if let Err(e) = schema::migrate(self.conn()?, now) {
                self.conn = None;
                return Err(e);
            }
        }
        tracing::debug!(path = %self.path.display(), read_only = self.options.read_only, "database open");
        Ok(())
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(64);
        if !self.is_memory() {
            // Readers never block the writer and the writer never blocks readers.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %self.path.display(), %mode, "could not switch to WAL journal mode");
            }
        }
        let sync = if self.options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // 16 MiB page cache: the hot pages (recent_chat tail, user_stats) stay in memory.
        conn.pragma_update(None, "cache_size", -16_384)?;
        if self.options.read_only {
            conn.pragma_update(None, "query_only", true)?;
        }
        Ok(conn)
    }

    fn is_memory(&self) -> bool {
        let p = self.path.to_string_lossy();
        p == ":memory:" || p.is_empty() || p.starts_with("file::memory:")
    }

    /// Closes the connection. On a read-write database it first ends every open session, as the
    /// seed does: `total_time_connected += now - current_session_start`, `current_session_start =
    /// NULL`, `last_seen = now`. A transaction left open by the caller is committed first.
    /// Idempotent: closing a closed database does nothing. The database is closed afterwards even
    /// if ending the sessions failed (the error is returned).
    pub fn close(&mut self) -> DbResult<()> {
        let Some(conn) = self.conn.take() else {
            tracing::debug!(path = %self.path.display(), "close: database not open");
            return Ok(());
        };
        let mut result = Ok(());
        if !self.options.read_only {
            result = (|| -> DbResult<()> {
                if !conn.is_autocommit() {
                    conn.execute_batch("COMMIT")?;
                }
                let ended = users::end_all_sessions(&conn, self.now())?;
                if ended > 0 {
                    tracing::info!(sessions = ended, "closed open user sessions");
                }
                Ok(())
            })();
        }
        if let Err((_conn, e)) = conn.close() {
            tracing::warn!(error = %e, "closing sqlite connection");
            if result.is_ok() {
                result = Err(e.into());
            }
        }
        result
    }

    /// The open connection, for queries this type does not cover (tests, tools).
    pub fn conn(&self) -> DbResult<&Connection> {
        self.conn.as_ref().ok_or(DbError::NotOpen)
    }

    /// Makes every operation use `now` as the current time instead of the system clock
    /// (`None` restores the clock). For tests and replays.
    pub fn set_fixed_now(&mut self, now: Option<i64>) {
        self.fixed_now = now;
    }

    /// The current time in Unix seconds (the system clock unless fixed).
    pub fn now(&self) -> i64 {
        self.fixed_now.unwrap_or_else(unix_now)
    }

    /// True while an explicit transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_autocommit())
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`: takes the write lock now, so the commit
    /// cannot fail with a lock upgrade error).
    pub fn begin(&self) -> DbResult<()> {
        self.conn()?
            .prepare_cached("BEGIN IMMEDIATE")?
            .execute([])?;
        Ok(())
    }

    /// Commits the transaction started by [`Database::begin`].
    pub fn commit(&self) -> DbResult<()> {
        self.conn()?.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Rolls back the open transaction, if any.
    pub fn rollback(&self) -> DbResult<()> {
        let conn = self.conn()?;
        if !conn.is_autocommit() {
            conn.prepare_cached("ROLLBACK")?.execute([])?;
        }
        Ok(())
    }

    /// Sets a savepoint inside the open transaction (see [`Database::release`]).
    pub fn savepoint(&self) -> DbResult<()> {
        self.conn()?
            .prepare_cached("SAVEPOINT event")?
            .execute([])?;
        Ok(())
    }

    /// Keeps the changes since [`Database::savepoint`].
    pub fn release(&self) -> DbResult<()> {
        self.conn()?.prepare_cached("RELEASE event")?.execute([])?;
        Ok(())
    }

    /// Undoes the changes since [`Database::savepoint`] and removes the savepoint.
    pub fn rollback_to_savepoint(&self) -> DbResult<()> {
        let conn = self.conn()?;
        conn.prepare_cached("ROLLBACK TO event")?.execute([])?;
        conn.prepare_cached("RELEASE event")?.execute([])?;
        Ok(())
    }

    /// Runs `f` in one write transaction: commits if it returns `Ok`, rolls back otherwise.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Database) -> DbResult<T>) -> DbResult<T> {
        if self.in_transaction() {
            return Err(DbError::InTransaction("transaction"));
        }
        self.begin()?;
        match f(self) {
            Ok(v) => match self.commit() {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.rollback();
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Runs the read-only `f` on one consistent snapshot (a deferred transaction).
    pub fn snapshot<T>(&self, f: impl FnOnce(&Database) -> DbResult<T>) -> DbResult<T> {
        let conn = self.conn()?;
        if !conn.is_autocommit() {
            return f(self);
        }
        conn.prepare_cached("BEGIN")?.execute([])?;
        let result = f(self);
        conn.prepare_cached("COMMIT")?.execute([])?;
        result
    }

    /// Runs the write `f` atomically: in its own transaction when none is open, otherwise as part
    /// of the caller's.
    fn atomic<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> DbResult<T> {
        let conn = self.conn()?;
        if !conn.is_autocommit() {
            return f(conn);
        }
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        match f(conn) {
            Ok(v) => {
                if let Err(e) = conn
                    .prepare_cached("COMMIT")
                    .and_then(|mut s| s.execute([]))
                {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Records that the event `event_id` was applied (in the caller's transaction). Returns false
    /// if it had already been recorded, i.e. the event is a duplicate and must be skipped.
    pub fn mark_event_processed(&self, event_id: &str) -> DbResult<bool> {
        let n = self
            .conn()?
            .prepare_cached(
                "INSERT INTO processed_events (event_id, committed_at) VALUES (?1, ?2) \
                 ON CONFLICT(event_id) DO NOTHING",
            )?
            .execute(rusqlite::params![event_id, self.now()])?;
        Ok(n == 1)
    }

    /// True if `event_id` was recorded by [`Database::mark_event_processed`].
    pub fn is_event_processed(&self, event_id: &str) -> DbResult<bool> {
        let n: i64 = self
            .conn()?
            .prepare_cached("SELECT COUNT(*) FROM processed_events WHERE event_id = ?1")?
            .query_row([event_id], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// Number of recorded event ids.
    pub fn processed_event_count(&self) -> DbResult<i64> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT COUNT(*) FROM processed_events")?
            .query_row([], |r| r.get(0))?)
    }

    /// Number of recorded event ids that start with `prefix`, compared exactly (case-sensitive,
    /// no wildcards). A publisher's ids share a prefix: the harness counts its own run's events
    /// this way.
    pub fn processed_event_count_with_prefix(&self, prefix: &str) -> DbResult<i64> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT COUNT(*) FROM processed_events WHERE substr(event_id, 1, length(?1)) = ?1",
            )?
            .query_row([prefix], |r| r.get(0))?)
    }

    /// The seed's `perform_maintenance`, working: [`Database::maintenance_cleanup`], then every
    /// free page given back ([`Database::incremental_vacuum_step`] until none is left), then
    /// [`Database::analyze`]. Must be called outside a transaction. The service's writer runs
    /// the same steps but interleaves the vacuum steps with write batches.
    pub fn perform_maintenance(&self) -> DbResult<MaintenanceReport> {
        let report = self.maintenance_cleanup()?;
        while self.incremental_vacuum_step(VACUUM_STEP_PAGES)? > 0 {}
        self.analyze()?;
        tracing::info!(?report, "database maintenance done");
        Ok(report)
    }

    /// Gives back up to `pages` free pages (`PRAGMA incremental_vacuum`; a full `VACUUM` on a
    /// database not in incremental mode, such as `:memory:`). Returns the free pages left.
    /// Must be called outside a transaction.
    pub fn incremental_vacuum_step(&self, pages: u32) -> DbResult<i64> {
        if self.in_transaction() {
            return Err(DbError::InTransaction("vacuum"));
        }
        let conn = self.conn()?;
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if mode == 2 {
            conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
        } else {
            conn.execute_batch("VACUUM")?;
        }
        Ok(conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
    }

    /// Writes a consistent copy of the whole database to the new file `dest` (`VACUUM INTO`: one
    /// read snapshot, compacted), without writing to this one; works on a read-only connection,
    /// so a running service's database can be copied beside it. Fails if `dest` exists. The
    /// harness uses it to give its direct-write path the service's rows.
    pub fn copy_to(&self, dest: &Path) -> DbResult<()> {
        if self.in_transaction() {
            return Err(DbError::InTransaction("copy"));
        }
        let conn = self.conn()?;
        // `query_only` refuses VACUUM INTO although it writes only `dest`: lift it for this one
        // statement on a read-only connection, and put it back whatever happened.
        if self.options.read_only {
            conn.pragma_update(None, "query_only", false)?;
        }
        let copied = conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()]);
        if self.options.read_only {
            conn.pragma_update(None, "query_only", true)?;
        }
        copied?;
        Ok(())
    }

    /// Refreshes the planner's statistics (`ANALYZE` with a bounded sample per index).
    pub fn analyze(&self) -> DbResult<()> {
        self.conn()?
            .execute_batch("PRAGMA analysis_limit = 1000; ANALYZE;")?;
        Ok(())
    }

    /// Records a dead letter (its own transaction unless one is open). Returns its id.
    pub fn record_dead_letter(&self, d: &DeadLetter) -> DbResult<i64> {
        let now = self.now();
        self.atomic(|conn| {
            conn.prepare_cached(
                "INSERT INTO dead_letters (created_at, subject, event_id, stream_seq, deliveries, error, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(rusqlite::params![
                now,
                d.subject,
                d.event_id,
                d.stream_seq.map(|s| s as i64),
                d.deliveries as i64,
                d.error,
                d.detail
            ])?;
            Ok(conn.last_insert_rowid())
        })
    }

    /// The first part of maintenance, one transaction: deletes user-count history, PM audit
    /// rows (`user_actions`) and processed event ids older than 30 days, sent outbound messages
    /// older than 7 days and revoked tokens created more than 90 days ago.
    pub fn maintenance_cleanup(&self) -> DbResult<MaintenanceReport> {
        if self.in_transaction() {
            return Err(DbError::InTransaction("maintenance"));
        }
        let now = self.now();
        self.atomic(|conn| {
            let history_deleted = stats::delete_history_before(conn, now - RETENTION_SECS)?;
            let user_actions_deleted = conn
                .prepare_cached("DELETE FROM user_actions WHERE timestamp < ?1")?
                .execute([now - RETENTION_SECS])?;
            let outbound_deleted = conn
                .prepare_cached(
                    "DELETE FROM outbound_messages WHERE sent = 1 AND sent_timestamp < ?1",
                )?
                .execute([now - 7 * 86_400])?;
            let tokens_deleted = conn
                .prepare_cached("DELETE FROM api_tokens WHERE revoked = 1 AND created_at < ?1")?
                .execute([now - 90 * 86_400])?;
            let processed_events_deleted = conn
                .prepare_cached("DELETE FROM processed_events WHERE committed_at < ?1")?
                .execute([now - RETENTION_SECS])?;
            Ok(MaintenanceReport {
                history_deleted,
                outbound_deleted,
                tokens_deleted,
                processed_events_deleted,
                user_actions_deleted,
            })
        })
    }
}

/// Free pages given back per [`Database::incremental_vacuum_step`] during maintenance (1 MiB
/// at SQLite's default 4 KiB page size): a short stall of the writer per step.
pub const VACUUM_STEP_PAGES: u32 = 256;

/// Puts a read-write file database into `auto_vacuum = INCREMENTAL`. A new database just takes
/// the setting; an existing one needs one full `VACUUM` to convert (once, at open, before the
/// service serves anything).
fn ensure_incremental_vacuum(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != 2 {
        tracing::info!(path = %path.display(), "converting the database to incremental vacuum (one full VACUUM)");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.conn.is_some() {
            // A transaction still open here was abandoned (an error or a panic unwound past it):
            // its half-applied changes are discarded, never committed.
            if self.in_transaction() {
                let _ = self.rollback();
            }
            if let Err(e) = self.close() {
                tracing::warn!(error = %e, "closing database on drop");
            }
        }
    }
}

#[cfg(test)]
mod tests;
