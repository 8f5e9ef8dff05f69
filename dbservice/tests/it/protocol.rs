//! Every subject, as a seed client would use it: only subject names and JSON, replies compared
//! byte for byte with the seed's shapes (protocol/README.md).

use crate::support::*;
use rosey_protocol::subjects;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_events_then_seed_queries_exact_bytes() {
    let env = Env::start().await;
    let c = &env.client;
    for (subject, body) in [
        (subjects::USER_JOINED, r#"{"username": "amy"}"#),
        (subjects::USER_JOINED, r#"{"username": "bob"}"#),
        (
            subjects::HIGH_WATER,
            r#"{"chat_count": 2, "connected_count": 5}"#,
        ),
        (
            subjects::MESSAGE_LOG,
            r#"{"username": "amy", "message": "first"}"#,
        ),
        (
            subjects::MESSAGE_LOG,
            r#"{"username": "bob", "message": "caf\u00e9 \ud83d\ude00"}"#,
        ),
        (
            subjects::MESSAGE_LOG,
            r#"{"username": "amy", "message": "third"}"#,
        ),
        (
            subjects::MESSAGE_LOG,
            r#"{"username": "server", "message": "not stored"}"#,
        ),
        (subjects::USER_LEFT, r#"{"username": "bob"}"#),
        (
            subjects::USER_COUNT,
            r#"{"chat_count": 2, "connected_count": 4}"#,
        ),
        (
            subjects::STATUS_UPDATE,
            r#"{"status_data": {"bot_name": "rosey", "bot_rank": 3.0, "bot_afk": 0, "channel_name": "lobby", "current_chat_users": 2, "current_connected_users": 4, "bot_start_time": 1700000000, "bot_connected": 1, "playlist_items": 7, "current_media_title": "song", "current_media_duration": 200, "unknown_key": 1}}"#,
        ),
        (
            subjects::PM_COMMAND,
            r#"{"timestamp": 1700000000.5, "username": "mod", "command": "kick", "args": "Bob Spamming", "result": "success", "error": null}"#,
        ),
    ] {
        c.publish(subject, body.as_bytes().to_vec().into())
            .await
            .unwrap();
    }
    env.barrier().await;

    let db = open_read_only(&env.db_path());
    let amy = db.get_user_stats("amy").unwrap().unwrap();
    let bob = db.get_user_stats("bob").unwrap().unwrap();
    assert_eq!(amy.total_chat_lines, 2);
    assert_eq!(bob.total_chat_lines, 1);
    assert!(bob.current_session_start.is_none());

    // user_stats: found, not found, missing, bad JSON.
    let got = String::from_utf8(
        env.request(subjects::QUERY_USER_STATS, br#"{"username": "amy"}"#)
            .await,
    )
    .unwrap();
    let want = format!(
        r#"{{"username": "amy", "first_seen": {}, "last_seen": {}, "total_chat_lines": 2, "total_time_connected": 0, "current_session_start": {}, "success": true, "found": true}}"#,
        amy.first_seen,
        amy.last_seen,
        amy.current_session_start.unwrap()
    );
    assert_eq!(got, want);
    let got = env
        .request(subjects::QUERY_USER_STATS, br#"{"username": "bob"}"#)
        .await;
    assert!(String::from_utf8(got)
        .unwrap()
        .contains(r#""current_session_start": null, "success": true, "found": true}"#));
    assert_eq!(
        env.request(subjects::QUERY_USER_STATS, br#"{"username": "zed"}"#).await,
        br#"{"username": "zed", "success": true, "found": false, "message": "No statistics found for user 'zed'"}"#
    );
    assert_eq!(
        env.request(subjects::QUERY_USER_STATS, b"{}").await,
        br#"{"success": false, "error": "Missing username in request"}"#
    );
    assert_eq!(
        env.request(subjects::QUERY_USER_STATS, b"{nope").await,
        br#"{"success": false, "error": "Invalid request format"}"#
    );

    // channel_stats: body never parsed.
    let (hw, hw_ts) = db.get_high_water_mark().unwrap();
    let (hc, hc_ts) = db.get_high_water_mark_connected().unwrap();
    assert_eq!((hw, hc), (2, 5));
    let want = format!(
        r#"{{"high_water_mark": {{"users": 2, "timestamp": {}}}, "high_water_connected": {{"users": 5, "timestamp": {}}}, "top_chatters": [{{"username": "amy", "chat_lines": 2}}, {{"username": "bob", "chat_lines": 1}}], "total_users_seen": 2, "success": true}}"#,
        hw_ts.unwrap(),
        hc_ts.unwrap()
    );
    for body in [&b"{}"[..], b"", b"garbage"] {
        assert_eq!(
            String::from_utf8(env.request(subjects::QUERY_CHANNEL_STATS, body).await).unwrap(),
            want
        );
    }

    // recent_chat.get: newest N, chronological, no id, ensure_ascii escapes.
    let chat = db.get_recent_messages(10, 0).unwrap();
    assert_eq!(chat.len(), 3, "'server' lines are not stored");
    let (t_bob, t_amy) = (chat[1].timestamp, chat[0].timestamp);
    let got = String::from_utf8(
        env.request(subjects::RECENT_CHAT_GET, br#"{"limit": 2}"#)
            .await,
    )
    .unwrap();
    let want = format!(
        r#"[{{"timestamp": {t_bob}, "username": "bob", "message": "caf\u00e9 \ud83d\ude00"}}, {{"timestamp": {t_amy}, "username": "amy", "message": "third"}}]"#
    );
    assert_eq!(got, want);
    let all: serde_json::Value = env.request_json(subjects::RECENT_CHAT_GET, b"{}").await;
    assert_eq!(all.as_array().unwrap().len(), 3, "default limit 50");

    // recent_messages (addition): newest first, with ids, paged.
    let got = String::from_utf8(
        env.request(
            subjects::QUERY_RECENT_MESSAGES,
            br#"{"limit": 1, "offset": 1}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        got,
        format!(
            r#"[{{"id": {}, "timestamp": {t_bob}, "username": "bob", "message": "caf\u00e9 \ud83d\ude00"}}]"#,
            chat[1].id
        )
    );

    // Status, audit, user count: stored as the seed stores them.
    let st = db.get_current_status().unwrap().unwrap();
    assert_eq!(st.bot_name.as_deref(), Some("rosey"));
    assert_eq!(st.current_media_duration, Some(200));
    assert_eq!(st.playlist_items, Some(7));
    let actions = db.get_user_actions(5).unwrap();
    assert_eq!(actions[0].username, "mod");
    assert_eq!(actions[0].action_type, "pm_command");
    assert_eq!(
        actions[0].details.as_deref(),
        Some("cmd=kick, args: Bob Spamming, result: success")
    );
    let hist = db.get_user_count_history(1).unwrap();
    assert!(hist
        .iter()
        .any(|h| h.chat_users == 2 && h.connected_users == 4));

    let stats = env.ping().await;
    assert_eq!(stats.malformed, 2, "the two bad user_stats requests");
    assert_eq!(stats.received, stats.committed);
    assert_eq!(stats.received, 12, "11 events + the barrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_queue_over_nats() {
    let env = Env::start().await;
    assert_eq!(
        env.request(
            subjects::OUTBOUND_GET,
            br#"{"limit": 20, "max_retries": 3}"#
        )
        .await,
        b"[]"
    );
    assert_eq!(
        env.request(subjects::OUTBOUND_ENQUEUE, br#"{"message": "hello"}"#)
            .await,
        br#"{"success": true, "id": 1}"#
    );
    assert_eq!(
        env.request(subjects::OUTBOUND_ENQUEUE, br#"{"message": "second"}"#)
            .await,
        br#"{"success": true, "id": 2}"#
    );
    assert_eq!(
        env.request(subjects::OUTBOUND_ENQUEUE, b"{}").await,
        br#"{"success": false, "error": "Missing message in request"}"#
    );
    // The reply came after the commit, so a query sees the rows at once.
    let db = open_read_only(&env.db_path());
    let rows = db.get_unsent_outbound_messages(50, 3).unwrap();
    let got = String::from_utf8(
        env.request(
            subjects::OUTBOUND_GET,
            br#"{"limit": 20, "max_retries": 3}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        got,
        format!(
            r#"[{{"id": 1, "timestamp": {}, "message": "hello", "retry_count": 0, "last_error": null}}, {{"id": 2, "timestamp": {}, "message": "second", "retry_count": 0, "last_error": null}}]"#,
            rows[0].timestamp, rows[1].timestamp
        )
    );
    // The rows just returned are claimed (leased): a second get does not hand them out again.
    assert_eq!(
        env.request(subjects::OUTBOUND_GET, br#"{"limit": 1}"#)
            .await,
        b"[]"
    );

    env.client
        .publish(
            subjects::OUTBOUND_MARK_SENT,
            br#"{"message_id": 1}"#.to_vec().into(),
        )
        .await
        .unwrap();
    env.client
        .publish(
            subjects::OUTBOUND_MARK_FAILED,
            br#"{"message_id": 2, "error": "rate limited", "is_permanent": false}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap();
    env.barrier().await;
    // Message 2 now waits 2 minutes (the seed's backoff); message 1 is sent.
    assert_eq!(env.request(subjects::OUTBOUND_GET, b"{}").await, b"[]");
    let sent: (i64, Option<i64>) = db
        .conn()
        .unwrap()
        .query_row(
            "SELECT sent, sent_timestamp FROM outbound_messages WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sent.0, 1);
    assert!(sent.1.is_some());
    let failed: (i64, i64, String) = db
        .conn()
        .unwrap()
        .query_row(
            "SELECT sent, retry_count, last_error FROM outbound_messages WHERE id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(failed, (0, 1, "rate limited".to_owned()));
    env.client
        .publish(
            subjects::OUTBOUND_MARK_FAILED,
            br#"{"message_id": 2, "error": "banned", "is_permanent": true}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap();
    env.barrier().await;
    let sent: i64 = db
        .conn()
        .unwrap()
        .query_row("SELECT sent FROM outbound_messages WHERE id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(sent, 1, "a permanent failure is never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_counters_and_mode() {
    let env = Env::start().await;
    let p = env.ping().await;
    assert!(p.success);
    assert_eq!(p.mode, "core");
    assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
    let raw = String::from_utf8(env.request(subjects::SERVICE_PING, b"anything").await).unwrap();
    assert!(
        raw.starts_with(r#"{"success": true, "mode": "core", "version": ""#),
        "{raw}"
    );
    let before = env.ping().await.requests;
    env.request(subjects::QUERY_CHANNEL_STATS, b"{}").await;
    assert!(env.ping().await.requests >= before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_delays_only_channel_stats() {
    // Generous, so an undelayed request on a loaded machine stays well under it.
    let delay = std::time::Duration::from_secs(1);
    let env = Env::start_with(|c| c.fault_stats_delay = Some(delay)).await;
    let t = std::time::Instant::now();
    env.request(subjects::QUERY_CHANNEL_STATS, b"{}").await;
    assert!(t.elapsed() >= delay, "took {:?}", t.elapsed());
    let t = std::time::Instant::now();
    env.request(subjects::QUERY_USER_STATS, br#"{"username": "x"}"#)
        .await;
    assert!(
        t.elapsed() < delay,
        "other subjects are not delayed ({:?})",
        t.elapsed()
    );
}
