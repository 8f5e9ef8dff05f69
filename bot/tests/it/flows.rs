//! End-to-end flows with the real database service in-process (what the seed's integration
//! tests covered, and more): events reach SQLite, PM commands read it back, audits are stored.
//! Rows are awaited through the service's commit notices (or, for events whose ids the test
//! cannot know, by polling SQLite with a deadline), never by sleeping.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use futures::future::BoxFuture;
use rosey_bot::{NatsPlatformSender, PlatformAction, PlatformSender, SendError};
use rosey_dbservice::ServiceHandle;
use rosey_protocol::platform::{self, kind};
use rosey_protocol::subjects;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::*;

/// A world plus a database service on a temporary file, with commit notices on.
struct Stored {
    w: World,
    dir: TempDir,
    service: Option<ServiceHandle>,
    committed: Subscriber,
}

impl Stored {
    async fn start() -> Stored {
        let w = World::start().await;
        let dir = tempfile::tempdir().unwrap();
        let committed = w.sub(subjects::COMMITTED).await;
        let mut s = Stored {
            w,
            dir,
            service: None,
            committed,
        };
        s.start_service(None).await;
        s
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("bot.db")
    }

    async fn start_service(&mut self, stats_delay: Option<Duration>) {
        let mut c = rosey_dbservice::Config::new(&self.w.url(), self.db_path());
        c.commit_notices = true;
        c.fault_stats_delay = stats_delay;
        self.service = Some(
            rosey_dbservice::spawn(c)
                .await
                .expect("database service starts"),
        );
    }

    async fn stop_service(&mut self) {
        self.service
            .take()
            .expect("service running")
            .shutdown()
            .await
            .unwrap();
    }

    /// Waits until every id in `ids` has been named by a commit notice.
    async fn committed(&mut self, ids: &[String]) {
        let mut missing: HashSet<&str> = ids.iter().map(String::as_str).collect();
        while !missing.is_empty() {
            let what = format!("commit notices for {missing:?}");
            let (v, _) = next_json(&mut self.committed, &what).await;
            for id in v["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(v["duplicate_ids"].as_array().into_iter().flatten())
            {
                missing.remove(id.as_str().unwrap_or_default());
            }
        }
    }

    fn sql(&self) -> Connection {
        open(&self.db_path())
    }

    async fn request(&self, subject: &str, body: Value) -> Value {
        let reply = tokio::time::timeout(
            DEADLINE,
            self.w.client.request(
                subject.to_owned(),
                serde_json::to_vec(&body).unwrap().into(),
            ),
        )
        .await
        .expect("request within the deadline")
        .expect("service answers");
        serde_json::from_slice(&reply.payload).unwrap()
    }
}

fn open(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn ids(cid: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{cid}:{i}")).collect()
}

async fn join(s: &Stored, user: &str, rank: f64) -> Vec<String> {
    let cid = format!("join-{user}");
    s.w.send(
        kind::USER_JOIN,
        &platform::PlatformUser::new(user, rank),
        Some(&cid),
    )
    .await;
    ids(&cid, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_stored_with_a_high_water_mark() {
    let mut s = Stored::start().await;
    let _bot = s.w.bot().await;
    let mut want = join(&s, "amy", 0.0).await;
    want.extend(join(&s, "bob", 0.0).await);
    s.committed(&want).await;
    let db = s.sql();
    let open_sessions: i64 = db
        .query_row("SELECT COUNT(*) FROM user_stats WHERE username IN ('amy','bob') AND current_session_start IS NOT NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open_sessions, 2);
    let max_users: i64 = db
        .query_row(
            "SELECT max_users FROM channel_stats WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(max_users, 2);

    // Leaving closes the session; the userlist is updated before publishing.
    s.w.send(kind::USER_LEAVE, &json!({"user": "amy"}), Some("leave-amy"))
        .await;
    s.committed(&ids("leave-amy", 1)).await;
    let session: Option<i64> = s
        .sql()
        .query_row(
            "SELECT current_session_start FROM user_stats WHERE username = 'amy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(session, None);
}

/// Durable events: chat lines the bot received while JetStream could not store them (no stream
/// yet, then NATS restarted under it) are published again until stored, in order, and all
/// committed once the durable service is up. With core publishing every one of them was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_outlast_a_missing_stream_and_a_nats_restart() {
    let mut w = World::start_with(natskit::ServerOptions {
        jetstream: true,
        ..natskit::ServerOptions::default()
    })
    .await;
    let mut config = w.bot_config();
    config.durable_events = true;
    config.durable_retry = Duration::from_secs(30);
    let bot = w.bot_with(config, None).await;
    let mut want = Vec::new();
    for i in 0..5 {
        let cid = format!("d-{i}");
        w.chat("amy", &format!("durable {i}"), Some(&cid)).await;
        want.push(format!("{cid}:1"));
    }
    // No stream yet: the first event is being published again and again.
    eventually("the bot to retry its first event", || async {
        (bot.stats().db_publish_retries >= 2).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| w.nats.restart()).expect("nats-server restarts");
    eventually("the bot to reconnect", || async {
        (bot.stats().reconnects >= 1).then_some(())
    })
    .await;
    // The test's own client is back too before it listens for notices.
    eventually("the test client to reconnect", || async {
        rosey_bot::round_trip(&w.client).await.ok()
    })
    .await;
    // A restarted server accepts clients a moment before JetStream answers.
    let js = async_nats::jetstream::new(w.client.clone());
    eventually("JetStream to answer after the restart", || async {
        js.query_account().await.ok()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stored {
        committed: w.sub(subjects::COMMITTED).await,
        w,
        dir,
        service: None,
    };
    let mut c = rosey_dbservice::Config::new(&s.w.url(), s.db_path());
    c.commit_notices = true;
    c.mode = rosey_dbservice::Mode::Durable;
    s.service = Some(
        rosey_dbservice::spawn(c)
            .await
            .expect("durable service starts"),
    );
    s.committed(&want).await;

    let db = s.sql();
    let mut stmt = db
        .prepare("SELECT message FROM recent_chat WHERE username = 'amy' ORDER BY id")
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<String> = (0..5).map(|i| format!("durable {i}")).collect();
    assert_eq!(stored, expected);
    let stats = bot.stats();
    assert_eq!(stats.db_publish_failures, 0);
    assert!(stats.db_publish_retries >= 2, "{stats:?}");
    s.stop_service().await;
}

/// A bot that cannot keep up (here: blocked storing its first durable event, with no stream)
/// has its NATS client drop platform events once the subscription's buffer is full; the bot
/// counts what the client reports (`client_drops`), so the loss is not silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_client_drops_are_counted() {
    let w = World::start_with(natskit::ServerOptions {
        jetstream: true,
        ..natskit::ServerOptions::default()
    })
    .await;
    let mut config = w.bot_config();
    config.durable_events = true;
    let bot = w.bot_with(config, None).await;
    let subject = platform::in_subject(CHANNEL, kind::MESSAGE);
    let body = bytes::Bytes::from_static(br#"{"user": "amy", "content": "flood"}"#);
    // More than the client buffers for one subscription (65,536 by default).
    for _ in 0..70_000 {
        w.client
            .publish(subject.clone(), body.clone())
            .await
            .unwrap();
    }
    w.client.flush().await.unwrap();
    eventually("the bot to count dropped events", || async {
        (bot.stats().client_drops > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_are_stored_in_order() {
    let mut s = Stored::start().await;
    let _bot = s.w.bot().await;
    let mut want = join(&s, "amy", 0.0).await;
    for i in 0..25 {
        let cid = format!("m-{i}");
        s.w.chat("amy", &format!("message {i}"), Some(&cid)).await;
        want.push(format!("{cid}:1"));
    }
    s.committed(&want).await;
    let db = s.sql();
    let mut stmt = db
        .prepare("SELECT message FROM recent_chat WHERE username = 'amy' ORDER BY id")
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("message {i}")).collect();
    assert_eq!(stored, expected);
    let lines: i64 = db
        .query_row(
            "SELECT total_chat_lines FROM user_stats WHERE username = 'amy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lines, 25);
    // The service's newest-first query agrees.
    let recent = s
        .request(subjects::QUERY_RECENT_MESSAGES, json!({"limit": 3}))
        .await;
    let newest: Vec<&str> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(newest, ["message 24", "message 23", "message 22"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usercounts_high_water_periodic_counts_and_status() {
    let mut s = Stored::start().await;
    let mut c = s.w.bot_config();
    c.intervals.user_count = Duration::from_millis(100);
    c.intervals.status = Duration::from_millis(100);
    let _bot = s.w.bot_with(c, None).await;
    let mut want = join(&s, "amy", 0.0).await;
    want.extend(join(&s, "bob", 0.0).await);
    s.w.send(kind::USERCOUNT, &json!(42), Some("uc-1")).await;
    s.w.send(kind::USERCOUNT, &json!({"count": 50}), Some("uc-2"))
        .await;
    want.extend(["uc-1:1".to_owned(), "uc-2:1".to_owned()]);
    s.committed(&want).await;
    let (max_users, max_connected): (i64, i64) = s
        .sql()
        .query_row(
            "SELECT max_users, max_connected FROM channel_stats WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((max_users, max_connected), (2, 50));

    // The periodic sample has chat = userlist length and connected = platform count (the
    // seed sent the chat count twice).
    let path = s.db_path();
    let sample = eventually("a user_count_history row with the viewer count", || {
        let path = path.clone();
        async move {
            open(&path)
                .query_row(
                    "SELECT chat_users, connected_users FROM user_count_history WHERE connected_users = 50 LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .unwrap()
        }
    })
    .await;
    assert_eq!(sample, (2, 50));
    let status = eventually("the status row", || {
        let path = path.clone();
        async move {
            open(&path)
                .query_row(
                    "SELECT bot_name, channel_name, current_chat_users, current_connected_users, bot_connected FROM current_status WHERE id = 1 AND bot_name IS NOT NULL",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?)),
                )
                .optional()
                .unwrap()
        }
    })
    .await;
    assert_eq!(status, ("rosey".to_owned(), CHANNEL.to_owned(), 2, 50, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_user_commands_read_the_database() {
    let mut s = Stored::start().await;
    let _bot = s.w.bot().await;
    let mut want = join(&s, MOD, 2.0).await;
    want.extend(join(&s, "amy", 0.0).await);
    for i in 0..10 {
        let cid = format!("a-{i}");
        s.w.chat("amy", &format!("line {i}"), Some(&cid)).await;
        want.push(format!("{cid}:1"));
    }
    s.w.chat(MOD, "hi", Some("mod-hi")).await;
    want.push("mod-hi:1".to_owned());
    s.committed(&want).await;
    let (first_seen, last_seen, hw_ts): (i64, i64, i64) = s
        .sql()
        .query_row(
            "SELECT u.first_seen, u.last_seen, c.max_users_timestamp FROM user_stats u, channel_stats c WHERE u.username = 'amy'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let local = |ts: i64| {
        use chrono::TimeZone;
        chrono::Local
            .timestamp_opt(ts, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };

    let o = s.w.command(MOD, "user amy").await;
    assert_eq!(o.result, "success");
    assert_eq!(
        o.text,
        format!(
            "User: amy\nRank: 0.0\nAFK: No\nMuted: No\n\n--- Database Statistics ---\nChat messages: 10\nTime connected: 0h 0m\nFirst seen: {}\nLast seen: {}\nStatus: Currently connected",
            local(first_seen),
            local(last_seen)
        )
    );

    let o = s.w.command(MOD, "stats").await;
    assert_eq!(o.result, "success");
    assert_eq!(
        o.text,
        format!(
            "=== Channel Statistics ===\nPeak chat users: 2 ({})\nPeak connected viewers: 0\nTotal unique users: 2\n\n=== Top Chatters ===\n1. amy: 10 messages\n2. mod: 1 messages",
            local(hw_ts)
        )
    );
    let o = s.w.command(MOD, "user nobody").await;
    assert_eq!(o.text, "User 'nobody' not found");
}

/// The `details` of the audit rows whose event ids are `ids`, in id order.
async fn audit_rows(s: &mut Stored, outcomes: &[&Outcome]) -> Vec<String> {
    let want: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.audits.iter().map(|(_, id)| id.clone()))
        .collect();
    s.committed(&want).await;
    let db = s.sql();
    let mut stmt = db
        .prepare("SELECT username, action_type, details FROM user_actions ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(format!(
            "{}|{}|{}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_record_allowed_failed_and_denied_commands() {
    let mut s = Stored::start().await;
    let _bot = s.w.bot().await;
    let mut want = join(&s, MOD, 2.0).await;
    want.extend(join(&s, "pleb", 1.0).await);
    s.committed(&want).await;
    let ok = s.w.command(MOD, "voteskip").await;
    let failed = s.w.command(MOD, "user nobody").await;
    let denied = s.w.command("pleb", "kick mod now").await;
    let rows = audit_rows(&mut s, &[&ok, &failed, &denied]).await;
    assert_eq!(
        rows,
        [
            "mod|pm_command|cmd=voteskip, result: pending",
            "mod|pm_command|cmd=voteskip, result: success",
            "mod|pm_command|cmd=user, args: nobody, result: pending",
            "mod|pm_command|cmd=user, args: nobody, result: error, error: User 'nobody' not found",
            "pleb|pm_command|cmd=kick, args: mod now, result: denied, error: rank 1.0 below moderator rank 2.0",
        ]
    );
}

/// Issue 11: an argument that makes the audit record larger than the service's 64 KiB payload
/// limit still leaves audit rows (the argument truncated, with a marker saying by how much), for
/// a command that ran and for one that was denied, and the bot counts no audit failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_argument_is_still_audited() {
    let mut s = Stored::start().await;
    let bot = s.w.bot().await;
    let mut want = join(&s, MOD, 2.0).await;
    want.extend(join(&s, "pleb", 1.0).await);
    s.committed(&want).await;
    let mut chat =
        s.w.sub(platform::out_subject(CHANNEL, platform::action::CHAT))
            .await;

    // 70 KiB of ASCII: the moderator's `say` goes out whole.
    let long = "x".repeat(70 * 1024);
    let said = s.w.command(MOD, &format!("say {long}")).await;
    assert_eq!(said.result, "success");
    let (v, _) = next_json(&mut chat, "the long say").await;
    assert_eq!(v["content"].as_str().map(str::len), Some(long.len()));
    // 24 KiB of UTF-8 that JSON-escapes (`\u00e9`) to 72 KiB, from a user who is refused.
    let escaped = "\u{e9}".repeat(12 * 1024);
    let denied = s.w.command("pleb", &format!("kick {escaped}")).await;
    assert_eq!(denied.result, "denied");

    let rows = audit_rows(&mut s, &[&said, &denied]).await;
    assert_eq!(rows.len(), 3, "pending, success, denied");
    let marker = |row: &str| row.contains("…[truncated ") && row.contains(" bytes]");
    assert!(rows[0].starts_with("mod|pm_command|cmd=say, args: xxx"));
    assert!(rows[0].ends_with(", result: pending") && marker(&rows[0]));
    assert!(rows[1].ends_with(", result: success") && marker(&rows[1]));
    assert!(rows[2].starts_with("pleb|pm_command|cmd=kick, args: \u{e9}\u{e9}"));
    assert!(rows[2].ends_with(", result: denied, error: rank 1.0 below moderator rank 2.0"));
    assert!(marker(&rows[2]));
    assert_eq!(bot.stats().audit_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stats_query_times_out_and_is_audited_as_an_error() {
    let mut s = Stored::start().await;
    s.stop_service().await;
    s.start_service(Some(Duration::from_millis(800))).await;
    let mut c = s.w.bot_config();
    c.requests.timeout = Duration::from_millis(200);
    c.requests.read_retries = 0;
    let _bot = s.w.bot_with(c, None).await;
    let want = join(&s, MOD, 2.0).await;
    s.committed(&want).await;
    let o = s.w.command(MOD, "stats").await;
    assert_eq!(o.text, "Stats unavailable (timeout)");
    let rows = audit_rows(&mut s, &[&o]).await;
    assert_eq!(
        rows.last().unwrap(),
        "mod|pm_command|cmd=stats, result: error, error: Stats unavailable (timeout)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_keeps_going_while_the_service_restarts() {
    let mut s = Stored::start().await;
    let mut c = s.w.bot_config();
    c.requests.breaker_open = Duration::from_millis(200);
    let _bot = s.w.bot_with(c, None).await;
    let want = join(&s, MOD, 2.0).await;
    s.committed(&want).await;
    s.stop_service().await;

    let o = s.w.command(MOD, "stats").await;
    assert_eq!(o.text, "Stats unavailable (database service not running)");
    let mut log = s.w.sub(subjects::MESSAGE_LOG).await;
    s.w.chat(MOD, "nobody stores this", None).await;
    next(&mut log, "message.log while the service is down").await;

    s.start_service(None).await;
    let want = join(&s, "amy", 0.0).await;
    s.committed(&want).await;
    let users: i64 = s
        .sql()
        .query_row(
            "SELECT COUNT(*) FROM user_stats WHERE username IN ('mod', 'amy')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(users, 2);
    // Once the breaker's window has passed, commands reach the new service.
    let text = eventually("stats to work again", || async {
        let o = s.w.command(MOD, "stats").await;
        (o.result == "success").then_some(o.text)
    })
    .await;
    assert!(text.contains("Total unique users: 2"), "{text}");
}

/// Refuses chat lines containing "FAIL".
struct Picky(NatsPlatformSender);

impl PlatformSender for Picky {
    fn send<'a>(
        &'a self,
        action: PlatformAction,
        cid: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        if matches!(&action, PlatformAction::Chat(c) if c.content.contains("FAIL")) {
            return Box::pin(async { Err(SendError::transient("platform rejected the message")) });
        }
        self.0.send(action, cid)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_outbound_messages_are_sent_and_marked() {
    let s = Stored::start().await;
    let mut c = s.w.bot_config();
    c.intervals.outbound = Duration::from_millis(50);
    let sender = Picky(NatsPlatformSender::new(
        s.w.client.clone(),
        CHANNEL,
        Duration::from_secs(1),
    ));
    let mut chat =
        s.w.sub(platform::out_subject(CHANNEL, platform::action::CHAT))
            .await;
    let _bot = s.w.bot_with(c, Some(Arc::new(sender))).await;
    let ok = s
        .request(
            subjects::OUTBOUND_ENQUEUE,
            json!({"message": "hello from the queue"}),
        )
        .await;
    let bad = s
        .request(
            subjects::OUTBOUND_ENQUEUE,
            json!({"message": "FAIL please"}),
        )
        .await;
    let (ok_id, bad_id) = (ok["id"].as_i64().unwrap(), bad["id"].as_i64().unwrap());

    let (v, m) = next_json(&mut chat, "the queued chat line").await;
    assert_eq!(v, json!({"content": "hello from the queue"}));
    assert!(cid_of(&m).is_some());
    // mark_sent is a confirmed request (no commit notice): watch the row.
    let path = s.db_path();
    let (sent, retries) = eventually("the sent message marked sent", || {
        let path = path.clone();
        async move {
            open(&path)
                .query_row(
                    "SELECT sent, retry_count FROM outbound_messages WHERE id = ?1 AND sent = 1",
                    [ok_id],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .unwrap()
        }
    })
    .await;
    assert_eq!((sent, retries), (1, 0));

    let failed = eventually("the failed message's retry count", || {
        let path = path.clone();
        async move {
            open(&path)
                .query_row(
                    "SELECT sent, retry_count, last_error FROM outbound_messages WHERE id = ?1 AND retry_count > 0",
                    [bad_id],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
                )
                .optional()
                .unwrap()
        }
    })
    .await;
    assert_eq!(failed, (0, 1, "platform rejected the message".to_owned()));
}
