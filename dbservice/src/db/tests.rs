//! Unit tests of the database operations against the seed's semantics (those of its
//! `BotDatabase`, restated in each method's doc).

use super::*;
use rosey_protocol::db::StatusData;

fn mem() -> Database {
    let mut db = Database::new(":memory:");
    db.open().unwrap();
    db
}

fn file_db(dir: &tempfile::TempDir) -> Database {
    Database::open_path(dir.path().join("t.db")).unwrap()
}

fn names(conn: &rusqlite::Connection, kind: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([kind], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn lifecycle_open_twice_errors_close_idempotent() {
    let mut db = Database::new(":memory:");
    assert!(!db.is_open());
    assert!(matches!(db.get_total_users_seen(), Err(DbError::NotOpen)));
    db.open().unwrap();
    assert!(db.is_open());
    assert!(matches!(db.open(), Err(DbError::AlreadyOpen(_))));
    db.close().unwrap();
    assert!(!db.is_open());
    db.close().unwrap();
}

#[test]
fn schema_has_seed_tables_and_exactly_four_indexes() {
    let db = mem();
    let conn = db.conn().unwrap();
    let mut tables = names(conn, "table");
    tables.retain(|t| t != "sqlite_sequence");
    let mut want: Vec<String> = TABLES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(tables, want);
    let mut idx: Vec<String> = INDEXES.iter().map(|s| s.to_string()).collect();
    idx.sort();
    assert_eq!(names(conn, "index"), idx);
    // Seed rows.
    assert_eq!(db.get_high_water_mark().unwrap(), (0, None));
    assert!(db
        .get_current_status()
        .unwrap()
        .unwrap()
        .last_updated
        .is_some());
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn wal_mode_on_files_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = file_db(&dir);
    let mode: String = db
        .conn()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    db.user_joined("amy").unwrap();
    db.close().unwrap();
    let db = file_db(&dir);
    assert!(db.get_user_stats("amy").unwrap().is_some());
}

#[test]
fn migrates_old_schema_in_place_even_without_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE outbound_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL, \
               message TEXT NOT NULL, sent INTEGER DEFAULT 0, sent_timestamp INTEGER);
             INSERT INTO outbound_messages (timestamp, message) VALUES (1, 'old');
             CREATE TABLE channel_stats (id INTEGER PRIMARY KEY CHECK (id = 1), max_users INTEGER DEFAULT 0, \
               max_users_timestamp INTEGER, last_updated INTEGER);",
        )
        .unwrap();
    }
    let mut db = Database::open_path(&path).unwrap();
    db.set_fixed_now(Some(10_000));
    let unsent = db.get_unsent_outbound_messages(10, 3).unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(
        (unsent[0].retry_count, unsent[0].last_error.clone()),
        (0, None)
    );
    // The seed only added these columns when channel_stats already had rows.
    assert_eq!(db.update_high_water_mark(5, Some(9)).unwrap(), (true, true));
    assert_eq!(
        db.get_high_water_mark_connected().unwrap(),
        (9, Some(10_000))
    );
}

#[test]
fn joins_leaves_and_connected_time() {
    let mut db = mem();
    db.set_fixed_now(Some(1000));
    db.user_joined("bob").unwrap();
    let s = db.get_user_stats("bob").unwrap().unwrap();
    assert_eq!(
        (s.first_seen, s.last_seen, s.current_session_start),
        (1000, 1000, Some(1000))
    );
    db.set_fixed_now(Some(1100));
    assert!(db.user_left("bob").unwrap());
    let s = db.get_user_stats("bob").unwrap().unwrap();
    assert_eq!(
        (s.total_time_connected, s.current_session_start, s.last_seen),
        (100, None, 1100)
    );
    // Leaving again, or an unknown user leaving, changes nothing.
    assert!(!db.user_left("bob").unwrap());
    assert!(!db.user_left("nobody").unwrap());
    db.set_fixed_now(Some(1200));
    db.user_joined("bob").unwrap();
    let s = db.get_user_stats("bob").unwrap().unwrap();
    assert_eq!((s.first_seen, s.current_session_start), (1000, Some(1200)));
    assert_eq!(db.get_total_users_seen().unwrap(), 1);
    assert!(db.get_user_stats("nobody").unwrap().is_none());
}

#[test]
fn close_ends_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = file_db(&dir);
    db.set_fixed_now(Some(500));
    db.user_joined("a").unwrap();
    db.user_joined("b").unwrap();
    db.user_left("b").unwrap();
    db.set_fixed_now(Some(560));
    db.close().unwrap();
    let db = file_db(&dir);
    let a = db.get_user_stats("a").unwrap().unwrap();
    assert_eq!(
        (a.total_time_connected, a.current_session_start, a.last_seen),
        (60, None, 560)
    );
    let b = db.get_user_stats("b").unwrap().unwrap();
    assert_eq!((b.total_time_connected, b.last_seen), (0, 500));
}

#[test]
fn chat_message_counts_stores_and_skips_server() {
    let db = mem();
    db.user_joined("amy").unwrap();
    db.user_chat_message("amy", "hello").unwrap();
    db.user_chat_message("amy", "again").unwrap();
    db.user_chat_message("ghost", "never joined").unwrap();
    db.user_chat_message("Server", "announcement").unwrap();
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        2
    );
    assert!(db.get_user_stats("ghost").unwrap().is_none());
    let lines: Vec<String> = db
        .get_recent_chat(10)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lines, ["hello", "again", "never joined"]);
}

#[test]
fn chat_prune_keeps_150_hours() {
    let mut db = mem();
    db.set_fixed_now(Some(1_000_000));
    db.user_chat_message("a", "old").unwrap();
    db.set_fixed_now(Some(1_000_000 + RECENT_CHAT_RETENTION_SECS));
    db.user_chat_message("a", "edge").unwrap();
    assert_eq!(
        db.recent_chat_count().unwrap(),
        2,
        "exactly 150 h old is kept"
    );
    db.set_fixed_now(Some(1_000_001 + RECENT_CHAT_RETENTION_SECS));
    db.user_chat_message("a", "new").unwrap();
    let lines: Vec<String> = db
        .get_recent_chat(10)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lines, ["edge", "new"]);
    // Batched form: no prune until asked.
    db.set_fixed_now(Some(1_000_002 + 2 * RECENT_CHAT_RETENTION_SECS));
    db.begin().unwrap();
    assert!(db.record_chat_message("a", "later").unwrap());
    assert_eq!(db.recent_chat_count().unwrap(), 3);
    assert_eq!(db.prune_recent_chat().unwrap(), 2);
    db.commit().unwrap();
    assert_eq!(db.recent_chat_count().unwrap(), 1);
}

#[test]
fn recent_messages_order_and_paging() {
    let db = mem();
    assert!(db.get_recent_messages(5, 0).unwrap().is_empty());
    for i in 0..10 {
        db.log_chat("u", &format!("Message {i}"), Some(1000 + i))
            .unwrap();
    }
    let m = db.get_recent_messages(5, 0).unwrap();
    let texts: Vec<&str> = m.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Message 9",
            "Message 8",
            "Message 7",
            "Message 6",
            "Message 5"
        ]
    );
    assert_eq!(
        db.get_recent_messages(5, 3).unwrap()[0].message,
        "Message 6"
    );
    // Equal timestamps: newest id first; get_recent_chat keeps insertion order.
    db.log_chat("u", "tie a", Some(5000)).unwrap();
    db.log_chat("u", "tie b", Some(5000)).unwrap();
    let m = db.get_recent_messages(2, 0).unwrap();
    assert_eq!(
        (m[0].message.as_str(), m[1].message.as_str()),
        ("tie b", "tie a")
    );
    let c = db.get_recent_chat(3).unwrap();
    let texts: Vec<&str> = c.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(texts, ["Message 9", "tie a", "tie b"]);
    assert!(
        db.get_recent_messages(-1, -5).unwrap().is_empty(),
        "negative limit means none, not all"
    );
}

#[test]
fn recent_chat_since_and_user_count_history() {
    let mut db = mem();
    db.set_fixed_now(Some(10_000));
    db.log_chat("u", "old", Some(10_000 - 21 * 60)).unwrap();
    db.log_chat("u", "new", Some(10_000 - 60)).unwrap();
    let since: Vec<String> = db
        .get_recent_chat_since(20, 1000)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(since, ["new"]);
    db.set_fixed_now(Some(100));
    db.log_user_count(1, 2).unwrap();
    db.set_fixed_now(Some(100 + 31 * 86_400));
    db.log_user_count(3, 4).unwrap();
    let h = db.get_user_count_history(24).unwrap();
    assert_eq!(
        h,
        vec![UserCountSample {
            timestamp: 100 + 31 * 86_400,
            chat_users: 3,
            connected_users: 4
        }]
    );
    assert_eq!(db.cleanup_old_history(30).unwrap(), 1);
}

#[test]
fn top_chatters_and_audit() {
    let db = mem();
    for (u, n) in [("a", 3), ("b", 5), ("c", 3), ("quiet", 0)] {
        db.user_joined(u).unwrap();
        for _ in 0..n {
            db.user_chat_message(u, "x").unwrap();
        }
    }
    let top: Vec<(String, i64)> = db
        .get_top_chatters(10)
        .unwrap()
        .into_iter()
        .map(|t| (t.username, t.chat_lines))
        .collect();
    assert_eq!(
        top,
        [
            ("b".to_string(), 5),
            ("a".to_string(), 3),
            ("c".to_string(), 3)
        ]
    );
    assert_eq!(db.get_top_chatters(1).unwrap().len(), 1);
    db.log_user_action("mod", "pm_command", Some("cmd=kick, result: success"))
        .unwrap();
    let a = db.get_user_actions(5).unwrap();
    assert_eq!(a[0].username, "mod");
    assert_eq!(a[0].details.as_deref(), Some("cmd=kick, result: success"));
}

#[test]
fn high_water_marks() {
    let mut db = mem();
    db.set_fixed_now(Some(42));
    assert_eq!(db.update_high_water_mark(3, None).unwrap(), (true, false));
    assert_eq!(
        db.update_high_water_mark(2, Some(0)).unwrap(),
        (false, false)
    );
    db.set_fixed_now(Some(43));
    assert_eq!(
        db.update_high_water_mark(3, Some(7)).unwrap(),
        (false, true)
    );
    assert_eq!(db.get_high_water_mark().unwrap(), (3, Some(42)));
    assert_eq!(db.get_high_water_mark_connected().unwrap(), (7, Some(43)));
}

#[test]
fn outbound_queue_backoff_and_failures() {
    let mut db = mem();
    db.set_fixed_now(Some(1000));
    let a = db.enqueue_outbound_message("a").unwrap();
    let b = db.enqueue_outbound_message("b").unwrap();
    let c = db.enqueue_outbound_message("c").unwrap();
    assert_eq!(db.get_unsent_outbound_messages(50, 3).unwrap().len(), 3);
    assert!(db.mark_outbound_sent(a).unwrap());
    assert!(!db.mark_outbound_sent(9999).unwrap());
    assert!(db.mark_outbound_failed(b, Some("timeout"), false).unwrap());
    assert!(db.mark_outbound_failed(c, Some("banned"), true).unwrap());
    assert!(
        db.get_unsent_outbound_messages(50, 3).unwrap().is_empty(),
        "b waits 2 minutes"
    );
    db.set_fixed_now(Some(1000 + 120));
    let u = db.get_unsent_outbound_messages(50, 3).unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].id, u[0].retry_count, u[0].last_error.as_deref()),
        (b, 1, Some("timeout"))
    );
    db.mark_outbound_failed(b, Some("again"), false).unwrap();
    db.set_fixed_now(Some(1000 + 239));
    assert!(
        db.get_unsent_outbound_messages(50, 3).unwrap().is_empty(),
        "2^2 minutes after enqueue"
    );
    db.set_fixed_now(Some(1000 + 240));
    assert_eq!(db.get_unsent_outbound_messages(50, 3).unwrap().len(), 1);
    assert!(
        db.get_unsent_outbound_messages(50, 2).unwrap().is_empty(),
        "max_retries reached"
    );
}

#[test]
fn status_updates_only_known_fields() {
    let mut db = mem();
    assert!(!db.update_current_status(&StatusData::default()).unwrap());
    db.set_fixed_now(Some(77));
    let s = StatusData {
        bot_name: Some("rosey".into()),
        bot_rank: Some(3.0),
        playlist_items: Some(4),
        ..Default::default()
    };
    assert!(db.update_current_status(&s).unwrap());
    db.set_fixed_now(Some(78));
    let s2 = StatusData {
        current_media_title: Some("song".into()),
        ..Default::default()
    };
    db.update_current_status(&s2).unwrap();
    let st = db.get_current_status().unwrap().unwrap();
    assert_eq!(st.bot_name.as_deref(), Some("rosey"));
    assert_eq!(st.bot_rank, Some(3.0));
    assert_eq!(st.playlist_items, Some(4));
    assert_eq!(st.current_media_title.as_deref(), Some("song"));
    assert_eq!(st.last_updated, Some(78));
}

#[test]
fn api_tokens() {
    let db = mem();
    let t = db.generate_api_token("ci").unwrap();
    assert_eq!(t.len(), 43);
    assert!(t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    let t2 = db.generate_api_token("other").unwrap();
    assert_ne!(t, t2);
    assert!(db.validate_api_token(&t).unwrap());
    assert!(!db.validate_api_token("nope").unwrap());
    let list = db.list_api_tokens(false).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|i| i.token_preview.len() == 11 && i.token_preview.ends_with("...")));
    assert!(list.iter().any(|i| i.last_used.is_some()));
    // Short strings only match exactly; wildcards are literal.
    assert_eq!(db.revoke_api_token(&t[..7]).unwrap(), 0);
    assert_eq!(db.revoke_api_token("________").unwrap(), 0);
    assert_eq!(db.revoke_api_token("%%%%%%%%").unwrap(), 0);
    assert_eq!(db.revoke_api_token(&t[..8]).unwrap(), 1);
    assert!(!db.validate_api_token(&t).unwrap());
    assert_eq!(db.list_api_tokens(false).unwrap().len(), 1);
    assert_eq!(db.list_api_tokens(true).unwrap().len(), 2);
    assert_eq!(db.revoke_api_token(&t2).unwrap(), 1);
}

#[test]
fn maintenance_cleans_and_vacuums() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = file_db(&dir);
    let now = 100 * 86_400;
    db.set_fixed_now(Some(now - 31 * 86_400));
    db.log_user_count(1, 1).unwrap();
    let id = db.enqueue_outbound_message("x").unwrap();
    db.mark_outbound_sent(id).unwrap();
    db.mark_event_processed("old-event").unwrap();
    db.set_fixed_now(Some(now - 91 * 86_400));
    let t = db.generate_api_token("old").unwrap();
    db.revoke_api_token(&t).unwrap();
    db.set_fixed_now(Some(now));
    db.log_user_count(2, 2).unwrap();
    db.mark_event_processed("new-event").unwrap();
    let r = db.perform_maintenance().unwrap();
    assert_eq!(
        r,
        MaintenanceReport {
            history_deleted: 1,
            outbound_deleted: 1,
            tokens_deleted: 1,
            processed_events_deleted: 1,
            user_actions_deleted: 0,
        }
    );
    assert!(db.is_event_processed("new-event").unwrap());
    db.begin().unwrap();
    assert!(matches!(
        db.perform_maintenance(),
        Err(DbError::InTransaction(_))
    ));
    db.rollback().unwrap();
}

#[test]
fn processed_events_and_savepoints() {
    let mut db = mem();
    db.transaction(|db| {
        assert!(db.mark_event_processed("e1")?);
        assert!(!db.mark_event_processed("e1")?);
        db.savepoint()?;
        db.mark_event_processed("e2")?;
        db.rollback_to_savepoint()?;
        db.savepoint()?;
        db.mark_event_processed("e3")?;
        db.release()?;
        Ok(())
    })
    .unwrap();
    assert!(db.is_event_processed("e1").unwrap());
    assert!(!db.is_event_processed("e2").unwrap());
    assert!(db.is_event_processed("e3").unwrap());
    assert_eq!(db.processed_event_count().unwrap(), 2);
    for id in [
        "run_1-7", "run_1-8", "run%1-9", "runX1-10", "RUN_1-11", "other-1",
    ] {
        db.mark_event_processed(id).unwrap();
    }
    // The prefix is compared exactly: `_` and `%` are no wildcards, case matters.
    assert_eq!(db.processed_event_count_with_prefix("run_1-").unwrap(), 2);
    assert_eq!(db.processed_event_count_with_prefix("run%").unwrap(), 1);
    assert_eq!(db.processed_event_count_with_prefix("e").unwrap(), 2);
    assert_eq!(db.processed_event_count_with_prefix("").unwrap(), 8);
    // A failing transaction leaves nothing behind.
    let r: DbResult<()> = db.transaction(|db| {
        db.mark_event_processed("e4")?;
        Err(DbError::NotOpen)
    });
    assert!(r.is_err());
    assert!(!db.is_event_processed("e4").unwrap());
}

#[test]
fn read_only_connection_sees_commits_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let writer = file_db(&dir);
    let mut reader = Database::with_options(
        dir.path().join("t.db"),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    );
    reader.open().unwrap();
    writer.user_joined("x").unwrap();
    assert_eq!(reader.get_total_users_seen().unwrap(), 1);
    assert!(reader.user_joined("y").is_err());
    reader.close().unwrap();
    // Closing a reader does not end the writer's sessions.
    assert!(writer
        .get_user_stats("x")
        .unwrap()
        .unwrap()
        .current_session_start
        .is_some());
}

#[test]
fn strings_are_stored_verbatim() {
    let db = mem();
    let nasty = "Robert'); DROP TABLE user_stats;-- \u{0} é 😀";
    db.user_joined(nasty).unwrap();
    db.user_chat_message(nasty, nasty).unwrap();
    assert_eq!(db.get_recent_chat(1).unwrap()[0].message, nasty);
    assert_eq!(
        db.get_user_stats(nasty).unwrap().unwrap().total_chat_lines,
        1
    );
}

#[test]
fn maintenance_prunes_old_user_actions() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = file_db(&dir);
    let now = unix_now();
    db.set_fixed_now(Some(now - 31 * 86_400));
    db.log_user_action("old", "pm_command", Some("cmd=kick"))
        .unwrap();
    db.set_fixed_now(Some(now - 86_400));
    db.log_user_action("new", "pm_command", Some("cmd=ban"))
        .unwrap();
    db.set_fixed_now(Some(now));
    db.perform_maintenance().unwrap();
    let left: Vec<String> = db
        .get_user_actions(10)
        .unwrap()
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(left, ["new"], "audit rows older than 30 days are pruned");
}

#[test]
fn claimed_outbound_rows_come_back_when_the_lease_expires_or_they_fail() {
    let mut db = mem();
    db.set_fixed_now(Some(1000));
    let a = db.enqueue_outbound_message("a").unwrap();
    let b = db.enqueue_outbound_message("b").unwrap();
    let ids = |rows: Vec<rosey_protocol::db::OutboundMessage>| {
        rows.into_iter().map(|m| m.id).collect::<Vec<_>>()
    };
    let (rows, eligible) = db.claim_outbound_messages(10, 3, 60, 1 << 20).unwrap();
    assert_eq!((ids(rows), eligible), (vec![a, b], 2));
    let (rows, eligible) = db.claim_outbound_messages(10, 3, 60, 1 << 20).unwrap();
    assert_eq!((rows.len(), eligible), (0, 0), "claimed rows are leased");
    db.set_fixed_now(Some(1060));
    let (rows, _) = db.claim_outbound_messages(10, 3, 60, 1 << 20).unwrap();
    assert_eq!(ids(rows), [a, b], "the lease expired");
    db.mark_outbound_sent(a).unwrap();
    db.mark_outbound_failed(b, Some("x"), false).unwrap();
    // A failure ends the lease; the retry waits for the seed's backoff (2 min from queueing).
    db.set_fixed_now(Some(1119));
    assert!(db
        .claim_outbound_messages(10, 3, 60, 1 << 20)
        .unwrap()
        .0
        .is_empty());
    db.set_fixed_now(Some(1120));
    let (rows, _) = db.claim_outbound_messages(10, 3, 60, 1 << 20).unwrap();
    assert_eq!(ids(rows), [b]);
    // Only the rows that fit the byte budget are claimed.
    db.set_fixed_now(Some(5000));
    let c = db.enqueue_outbound_message(&"c".repeat(100)).unwrap();
    let d = db.enqueue_outbound_message("d").unwrap();
    let (rows, eligible) = db.claim_outbound_messages(10, 3, 60, 150).unwrap();
    assert_eq!(
        (ids(rows), eligible),
        (vec![b], 3),
        "c does not fit: not claimed"
    );
    let (rows, _) = db.claim_outbound_messages(10, 3, 60, 1 << 20).unwrap();
    assert_eq!(ids(rows), [c, d]);
}

#[test]
fn copy_of_a_live_database_from_a_read_only_connection() {
    let dir = tempfile::tempdir().unwrap();
    let db = file_db(&dir);
    db.user_joined("alice").unwrap();
    for k in 0..50 {
        db.user_chat_message("alice", &format!("line {k}")).unwrap();
    }
    // The writer stays open (as the service would) while a read-only connection copies.
    let mut reader = Database::with_options(
        db.path().to_owned(),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    );
    reader.open().unwrap();
    let dest = dir.path().join("copy.db");
    reader.copy_to(&dest).unwrap();
    assert!(
        reader.copy_to(&dest).is_err(),
        "an existing file is not overwritten"
    );
    let query_only: bool = reader
        .conn()
        .unwrap()
        .pragma_query_value(None, "query_only", |r| r.get(0))
        .unwrap();
    assert!(query_only, "the reader is read-only again");
    reader.close().unwrap();
    let copy = Database::open_path(&dest).unwrap();
    assert_eq!(copy.recent_chat_count().unwrap(), 50);
    assert_eq!(
        copy.get_user_stats("alice")
            .unwrap()
            .unwrap()
            .total_chat_lines,
        50
    );
    // The copy is its own database: writing to it leaves the original alone.
    copy.user_chat_message("alice", "only in the copy").unwrap();
    assert_eq!(copy.recent_chat_count().unwrap(), 51);
    assert_eq!(db.recent_chat_count().unwrap(), 50);
}
