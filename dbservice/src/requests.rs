//! Request/reply handlers: queries run on read-only connections (WAL snapshots, so they never
//! wait behind a write batch); `outbound.enqueue`, `outbound.get` (which claims the rows it
//! returns) and `outbound.confirm_sent` go through the writer and reply after its transaction
//! commits.
//!
//! Every request gets a reply. Errors are `{"success": false, "error": "..."}`, except on
//! `outbound.get` and `recent_chat.get`, which answer `[]` as the seed does.
//!
//! Every reply fits the server's max payload: array replies that would not are cut to the rows
//! that fit and flagged with a `Rosey-Truncated: <n> of <m>` header ([`Reply::truncated`]);
//! replies that fit are byte for byte what they always were.

use crate::db::{Database, DbResult, OpenOptions};
use crate::stats::Stats;
use crate::writer::{RequestOp, RequestValue, WriterMsg};
use rosey_protocol::db::{
    ChannelStats, ChannelStatsReply, ConfirmSentReply, EnqueueReply, ErrorReply, HighWaterMark,
    MarkSent, OutboundEnqueue, OutboundGet, RecentChatGet, RecentMessagesQuery, UserStatsFound,
    UserStatsNotFound, UserStatsQuery, UserStatsReply, MAX_OUTBOUND_LEASE_SECS,
    OUTBOUND_LEASE_SECS,
};
use rosey_protocol::{subjects, to_seed_json};
use serde::de::DeserializeOwned;
use serde::Serialize;
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

/// A reply body, and the truncation flag when rows were left out to fit the max payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub body: Vec<u8>,
    /// `"<rows returned> of <rows asked for>"`, sent as the `Rosey-Truncated` header.
    pub truncated: Option<String>,
}

impl From<Vec<u8>> for Reply {
    fn from(body: Vec<u8>) -> Reply {
        Reply {
            body,
            truncated: None,
        }
    }
}

/// `rows` as a JSON array of at most `max_bytes`: all of them if they fit (exactly
/// `to_seed_json(rows)`), else the first rows that fit, or the last ones if `keep_tail`.
pub fn fit_rows<T: Serialize>(rows: &[T], max_bytes: usize, keep_tail: bool) -> Reply {
    let body = to_seed_json(rows);
    if body.len() <= max_bytes {
        return body.into();
    }
    let n = if keep_tail {
        let rev: Vec<&T> = rows.iter().rev().collect();
        crate::db::fitting_prefix(&rev, max_bytes)
    } else {
        crate::db::fitting_prefix(rows, max_bytes)
    };
    let kept = if keep_tail {
        &rows[rows.len() - n..]
    } else {
        &rows[..n]
    };
    Reply {
        body: to_seed_json(kept),
        truncated: Some(format!("{n} of {}", rows.len())),
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
    /// Largest reply body the server accepts (its max payload less room for headers).
    pub max_reply_bytes: usize,
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

    /// The reply to one request message: [`handle`](Self::handle) for a message the client
    /// could read, else an error reply (counted as malformed; see [`natskit::client::malformed`]).
    pub async fn handle_message(&self, msg: &async_nats::Message) -> Reply {
        let subject = msg.subject.as_str();
        match natskit::client::malformed(msg) {
            Some(reason) => {
                self.stats.malformed(subject, reason);
                to_seed_json(&ErrorReply::new(format!("malformed message: {reason}"))).into()
            }
            None => self.handle(subject, &msg.payload).await,
        }
    }

    /// The reply body for a request on `subject`.
    pub async fn handle(&self, subject: &str, payload: &[u8]) -> Reply {
        match subject {
            subjects::OUTBOUND_GET => self.outbound_get(subject, payload).await,
            subjects::RECENT_CHAT_GET => self.recent_chat_get(subject, payload).await,
            subjects::QUERY_CHANNEL_STATS => self.channel_stats().await.into(),
            subjects::QUERY_USER_STATS => self.user_stats(subject, payload).await.into(),
            subjects::QUERY_RECENT_MESSAGES => self.recent_messages(subject, payload).await,
            subjects::OUTBOUND_ENQUEUE => self.enqueue(subject, payload).await.into(),
            subjects::OUTBOUND_CONFIRM_SENT => self.confirm_sent(subject, payload).await.into(),
            subjects::SERVICE_PING => to_seed_json(&self.stats.snapshot(self.mode)).into(),
            other => {
                to_seed_json(&ErrorReply::new(format!("unknown request subject {other}"))).into()
            }
        }
    }

    /// Sends `op` to the writer and waits for its committed result.
    async fn write(&self, op: RequestOp) -> Result<RequestValue, String> {
        let (tx, rx) = oneshot::channel();
        let write = async {
            self.writer
                .send(WriterMsg::Request { op, reply: tx })
                .await
                .map_err(|_| "database writer is shutting down".to_owned())?;
            rx.await.map_err(|_| "database writer stopped".to_owned())?
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "write not committed within {:?}",
                self.write_timeout
            )),
        }
    }

    /// Claims the rows it returns (through the writer): a second `outbound.get` does not return
    /// them again until their lease expires or they are marked failed.
    async fn outbound_get(&self, subject: &str, payload: &[u8]) -> Reply {
        let Some(q) = self.parse::<OutboundGet>(subject, payload) else {
            return b"[]".to_vec().into();
        };
        let op = RequestOp::ClaimOutbound {
            limit: q.limit.unwrap_or(50).clamp(0, MAX_QUERY_LIMIT),
            max_retries: q.max_retries.unwrap_or(3),
            lease_secs: q
                .lease_secs
                .unwrap_or(OUTBOUND_LEASE_SECS)
                .clamp(1, MAX_OUTBOUND_LEASE_SECS),
            max_bytes: self.max_reply_bytes,
        };
        match self.write(op).await {
            Ok(RequestValue::Claimed(rows, eligible)) => Reply {
                body: to_seed_json(&rows),
                truncated: (rows.len() < eligible).then(|| format!("{} of {eligible}", rows.len())),
            },
            Ok(other) => {
                tracing::error!(?other, "outbound.get: unexpected writer result");
                b"[]".to_vec().into()
            }
            Err(e) => {
                tracing::error!(error = %e, "outbound.get failed");
                b"[]".to_vec().into()
            }
        }
    }

    async fn confirm_sent(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let Some(q) = self.parse::<MarkSent>(subject, payload) else {
            return to_seed_json(&ErrorReply::new("Invalid request format"));
        };
        let Some(id) = q.message_id else {
            self.stats.malformed(subject, "missing message_id");
            return to_seed_json(&ErrorReply::new("Missing message_id in request"));
        };
        match self.write(RequestOp::ConfirmSent(id)).await {
            Ok(RequestValue::Found(found)) => to_seed_json(&ConfirmSentReply {
                success: true,
                found,
            }),
            Ok(other) => to_seed_json(&ErrorReply::new(format!(
                "unexpected writer result {other:?}"
            ))),
            Err(e) => to_seed_json(&ErrorReply::new(e)),
        }
    }

    async fn recent_chat_get(&self, subject: &str, payload: &[u8]) -> Reply {
        let Some(q) = self.parse::<RecentChatGet>(subject, payload) else {
            return b"[]".to_vec().into();
        };
        let limit = q.limit.unwrap_or(50).clamp(0, MAX_QUERY_LIMIT);
        match self.pool.run(move |db| db.get_recent_chat(limit)).await {
            // Oldest first: keep the newest lines.
            Ok(rows) => fit_rows(&rows, self.max_reply_bytes, true),
            Err(e) => {
                tracing::error!(error = %e, "recent_chat.get failed");
                b"[]".to_vec().into()
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

    async fn recent_messages(&self, subject: &str, payload: &[u8]) -> Reply {
        let q = match self.parse::<RecentMessagesQuery>(subject, payload) {
            Some(q) => q,
            None => return to_seed_json(&ErrorReply::new("Invalid request format")).into(),
        };
        let limit = q.limit.unwrap_or(100).clamp(0, MAX_QUERY_LIMIT);
        let offset = q.offset.unwrap_or(0).max(0);
        match self
            .pool
            .run(move |db| db.get_recent_messages(limit, offset))
            .await
        {
            // Newest first: keep the newest; the caller pages on with `offset`.
            Ok(rows) => fit_rows(&rows, self.max_reply_bytes, false),
            Err(e) => to_seed_json(&ErrorReply::new(e)).into(),
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
        match self.write(RequestOp::Enqueue(message)).await {
            Ok(RequestValue::Id(id)) => to_seed_json(&EnqueueReply { success: true, id }),
            Ok(other) => to_seed_json(&ErrorReply::new(format!(
                "unexpected writer result {other:?}"
            ))),
            Err(e) => to_seed_json(&ErrorReply::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosey_protocol::db::RecentChatLine;

    #[test]
    fn rows_that_fit_are_byte_identical_and_cut_rows_keep_the_chosen_end() {
        let rows: Vec<RecentChatLine> = (0..5)
            .map(|i| RecentChatLine {
                timestamp: i,
                username: "amy".into(),
                message: format!("line {i} \u{e9}"),
            })
            .collect();
        let full = to_seed_json(&rows);
        assert_eq!(fit_rows(&rows, full.len(), true), Reply::from(full.clone()));
        let one = to_seed_json(&rows[0]).len();
        let budget = 2 + 2 * one + 2;
        let tail = fit_rows(&rows, budget, true);
        assert_eq!(tail.body, to_seed_json(&rows[3..]));
        assert_eq!(tail.truncated.as_deref(), Some("2 of 5"));
        let head = fit_rows(&rows, budget, false);
        assert_eq!(head.body, to_seed_json(&rows[..2]));
        let none = fit_rows(&rows, 3, false);
        assert_eq!(
            (none.body, none.truncated),
            (b"[]".to_vec(), Some("0 of 5".into()))
        );
    }
}
