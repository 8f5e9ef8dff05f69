//! Request/reply handlers: queries run on read-only connections (WAL snapshots, so they never
//! wait behind a write batch); `outbound.enqueue` goes through the writer and replies after its
//! transaction commits.
//!
//! Every request gets a reply. Errors are `{"success": false, "error": "..."}`, except on
//! `outbound.get` and `recent_chat.get`, which answer `[]` as the seed does.

use crate::db::{Database, DbResult, OpenOptions};
use crate::stats::Stats;
use crate::writer::WriterMsg;
use rosey_protocol::db::{
    ChannelStats, ChannelStatsReply, EnqueueReply, ErrorReply, HighWaterMark, OutboundEnqueue,
    OutboundGet, RecentChatGet, RecentMessagesQuery, UserStatsFound, UserStatsNotFound,
    UserStatsQuery, UserStatsReply,
};
use rosey_protocol::{subjects, to_seed_json};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Largest `limit` a query honours; the seed passed any value to SQLite, where a negative
/// `LIMIT` means "everything".
pub const MAX_QUERY_LIMIT: i64 = 10_000;

/// A fixed set of read-only connections used from the blocking thread pool.
#[derive(Debug)]
pub struct ReadPool {
    conns: Mutex<Vec<Database>>,
    permits: Semaphore,
}

impl ReadPool {
    /// Opens `n` read-only connections to `path` (the schema must exist).
    pub fn open(path: &Path, n: usize) -> DbResult<ReadPool> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut db = Database::with_options(
                path,
                OpenOptions {
                    read_only: true,
                    ..Default::default()
                },
            );
            db.open()?;
            conns.push(db);
        }
        Ok(ReadPool {
            conns: Mutex::new(conns),
            permits: Semaphore::new(n),
        })
    }

    /// Runs `f` on a free connection in the blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> DbResult<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "read pool closed".to_owned())?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let db = pool
                .lock()
                .pop()
                .expect("a permit guarantees a free connection");
            let result = f(&db);
            pool.lock().push(db);
            result.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("query task failed: {e}"))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Database>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.permits.close();
        for mut db in self.lock().drain(..) {
            if let Err(e) = db.close() {
                tracing::warn!(error = %e, "closing read connection");
            }
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct RequestContext {
    pub pool: Arc<ReadPool>,
    pub writer: mpsc::Sender<WriterMsg>,
    pub stats: Arc<Stats>,
    pub mode: &'static str,
    pub max_payload_bytes: usize,
    pub fault_stats_delay: Option<Duration>,
    /// Deadline for a write request's commit.
    pub write_timeout: Duration,
}

impl RequestContext {
    /// The decoded request, or `None` after counting it as malformed.
    fn parse<T: DeserializeOwned>(&self, subject: &str, payload: &[u8]) -> Option<T> {
        let reason = if payload.len() > self.max_payload_bytes {
            format!(
                "payload of {} bytes exceeds the limit of {}",
                payload.len(),
                self.max_payload_bytes
            )
        } else {
            match crate::events::decode(payload) {
                Ok(v) => return Some(v),
                Err(e) => e,
            }
        };
        self.stats.malformed(subject, &reason);
        None
    }

    /// The reply body for a request on `subject`.
    pub async fn handle(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        match subject {
            subjects::OUTBOUND_GET => self.outbound_get(subject, payload).await,
            subjects::RECENT_CHAT_GET => self.recent_chat_get(subject, payload).await,
            subjects::QUERY_CHANNEL_STATS => self.channel_stats().await,
            subjects::QUERY_USER_STATS => self.user_stats(subject, payload).await,
            subjects::QUERY_RECENT_MESSAGES => self.recent_messages(subject, payload).await,
            subjects::OUTBOUND_ENQUEUE => self.enqueue(subject, payload).await,
            subjects::SERVICE_PING => to_seed_json(&self.stats.snapshot(self.mode)),
            other => to_seed_json(&ErrorReply::new(format!("unknown request subject {other}"))),
        }
    }

    async fn outbound_get(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let Some(q) = self.parse::<OutboundGet>(subject, payload) else {
            return b"[]".to_vec();
        };
        let limit = q.limit.unwrap_or(50).clamp(0, MAX_QUERY_LIMIT);
        let max_retries = q.max_retries.unwrap_or(3);
        match self
            .pool
            .run(move |db| db.get_unsent_outbound_messages(limit, max_retries))
            .await
        {
            Ok(rows) => to_seed_json(&rows),
            Err(e) => {
                tracing::error!(error = %e, "outbound.get failed");
                b"[]".to_vec()
            }
        }
    }

    async fn recent_chat_get(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let Some(q) = self.parse::<RecentChatGet>(subject, payload) else {
            return b"[]".to_vec();
        };
        let limit = q.limit.unwrap_or(50).clamp(0, MAX_QUERY_LIMIT);
        match self.pool.run(move |db| db.get_recent_chat(limit)).await {
            Ok(rows) => to_seed_json(&rows),
            Err(e) => {
                tracing::error!(error = %e, "recent_chat.get failed");
                b"[]".to_vec()
            }
        }
    }

    async fn channel_stats(&self) -> Vec<u8> {
        if let Some(delay) = self.fault_stats_delay {
            // Fault injection (off unless configured): lets the benchmark gate be tested.
            tokio::time::sleep(delay).await;
        }
        let result = self
            .pool
            .run(|db| {
                db.snapshot(|db| {
                    let (users, ts) = db.get_high_water_mark()?;
                    let (connected, cts) = db.get_high_water_mark_connected()?;
                    Ok(ChannelStats {
                        high_water_mark: HighWaterMark {
                            users,
                            timestamp: ts,
                        },
                        high_water_connected: HighWaterMark {
                            users: connected,
                            timestamp: cts,
                        },
                        top_chatters: db.get_top_chatters(10)?,
                        total_users_seen: db.get_total_users_seen()?,
                        success: true,
                    })
                })
            })
            .await;
        match result {
            Ok(stats) => to_seed_json(&ChannelStatsReply::Ok(stats)),
            Err(e) => to_seed_json(&ChannelStatsReply::Err(ErrorReply::new(e))),
        }
    }

    async fn user_stats(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let q = match self.parse::<UserStatsQuery>(subject, payload) {
            Some(q) => q,
            None => return to_seed_json(&ErrorReply::new("Invalid request format")),
        };
        let Some(username) = q.username.filter(|u| !u.is_empty()) else {
            self.stats.malformed(subject, "missing username");
            return to_seed_json(&ErrorReply::new("Missing username in request"));
        };
        let name = username.clone();
        let reply = match self.pool.run(move |db| db.get_user_stats(&name)).await {
            Ok(Some(s)) => UserStatsReply::Found(UserStatsFound {
                username: s.username,
                first_seen: s.first_seen,
                last_seen: s.last_seen,
                total_chat_lines: s.total_chat_lines,
                total_time_connected: s.total_time_connected,
                current_session_start: s.current_session_start,
                success: true,
                found: true,
            }),
            Ok(None) => UserStatsReply::NotFound(UserStatsNotFound::new(&username)),
            Err(e) => UserStatsReply::Err(ErrorReply::new(e)),
        };
        to_seed_json(&reply)
    }

    async fn recent_messages(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let q = match self.parse::<RecentMessagesQuery>(subject, payload) {
            Some(q) => q,
            None => return to_seed_json(&ErrorReply::new("Invalid request format")),
        };
        let limit = q.limit.unwrap_or(100).clamp(0, MAX_QUERY_LIMIT);
        let offset = q.offset.unwrap_or(0).max(0);
        match self
            .pool
            .run(move |db| db.get_recent_messages(limit, offset))
            .await
        {
            Ok(rows) => to_seed_json(&rows),
            Err(e) => to_seed_json(&ErrorReply::new(e)),
        }
    }

    async fn enqueue(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let q = match self.parse::<OutboundEnqueue>(subject, payload) {
            Some(q) => q,
            None => return to_seed_json(&ErrorReply::new("Invalid request format")),
        };
        let Some(message) = q.message.filter(|m| !m.is_empty()) else {
            self.stats.malformed(subject, "missing message");
            return to_seed_json(&ErrorReply::new("Missing message in request"));
        };
        let (tx, rx) = oneshot::channel();
        let write = async {
            self.writer
                .send(WriterMsg::Enqueue { message, reply: tx })
                .await
                .map_err(|_| "database writer is shutting down".to_owned())?;
            rx.await.map_err(|_| "database writer stopped".to_owned())?
        };
        let result = match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "write not committed within {:?}",
                self.write_timeout
            )),
        };
        match result {
            Ok(id) => to_seed_json(&EnqueueReply { success: true, id }),
            Err(e) => to_seed_json(&ErrorReply::new(e)),
        }
    }
}
