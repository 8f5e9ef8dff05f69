//! Bad input of every kind: counted, answered where a reply is expected, never fatal, never
//! corrupting what was stored.

use crate::support::*;
use futures::StreamExt as _;
use natskit::hostile;
use rosey_dbservice::Mode;
use rosey_protocol::{headers, subjects};
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_counted_and_change_nothing() {
    let env = Env::start().await;
    env.publish_committed(&[
        (subjects::USER_JOINED, "j1", r#"{"username": "amy"}"#.into()),
        (
            subjects::MESSAGE_LOG,
            "m1",
            r#"{"username": "amy", "message": "kept"}"#.into(),
        ),
    ])
    .await;
    let before = env.ping().await;

    let huge = format!(
        r#"{{"username": "amy", "message": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (subjects::MESSAGE_LOG, b"not json at all".to_vec()),
        (
            subjects::MESSAGE_LOG,
            br#"{"username": "amy", "message": 42}"#.to_vec(),
        ),
        (subjects::MESSAGE_LOG, br#"{"username": "amy"}"#.to_vec()),
        (
            subjects::MESSAGE_LOG,
            br#"{"username": "", "message": "x"}"#.to_vec(),
        ),
        (
            subjects::MESSAGE_LOG,
            b"{\"username\": \"amy\", \"message\": \"\xc3\x28\"}".to_vec(),
        ),
        (
            subjects::MESSAGE_LOG,
            br#"{"username": "amy", "message": "\ud800"}"#.to_vec(),
        ),
        (subjects::MESSAGE_LOG, huge.into_bytes()),
        (subjects::MESSAGE_LOG, b"".to_vec()),
        (subjects::MESSAGE_LOG, b"[1, 2]".to_vec()),
        (subjects::USER_JOINED, b"{}".to_vec()),
        (subjects::USER_LEFT, br#"{"username": null}"#.to_vec()),
        (subjects::USER_COUNT, br#"{"chat_count": "many"}"#.to_vec()),
        (subjects::HIGH_WATER, br#"{"chat_count": 1.5}"#.to_vec()),
        (subjects::STATUS_UPDATE, br#"{"status_data": {}}"#.to_vec()),
        (
            subjects::STATUS_UPDATE,
            br#"{"status_data": "rosey"}"#.to_vec(),
        ),
        (subjects::OUTBOUND_MARK_SENT, b"{}".to_vec()),
        (
            subjects::OUTBOUND_MARK_FAILED,
            br#"{"error": "x"}"#.to_vec(),
        ),
        (subjects::PM_COMMAND, br#"{"username": "mod"}"#.to_vec()),
    ];
    let n_bad = bad.len() as u64;
    for (subject, body) in bad {
        env.client.publish(subject, body.into()).await.unwrap();
    }
    // An over-long event id: the event is applied without the id and the id counted malformed.
    let long_id = "i".repeat(headers::MAX_EVENT_ID_LEN + 1);
    publish_with_id(
        &env.client,
        subjects::MESSAGE_LOG,
        &long_id,
        br#"{"username": "amy", "message": "long id"}"#,
    )
    .await;
    env.barrier().await;

    let after = env.ping().await;
    assert_eq!(after.malformed - before.malformed, n_bad + 1);
    assert_eq!(
        after.received - before.received,
        n_bad + 2,
        "bad events + long-id event + barrier"
    );
    assert_eq!(
        after.committed - before.committed,
        2,
        "long-id event + barrier"
    );
    assert_eq!(after.failed, 0);

    let db = open_read_only(&env.db_path());
    let lines: Vec<String> = db
        .get_recent_chat(10)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lines, ["kept", "long id"]);
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        2
    );
    assert_eq!(db.get_total_users_seen().unwrap(), 1);

    // Still serving.
    env.publish_committed(&[(
        subjects::MESSAGE_LOG,
        "m2",
        r#"{"username": "amy", "message": "after"}"#.into(),
    )])
    .await;
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_always_get_a_reply() {
    let env = Env::start().await;
    let huge = vec![b' '; 70 * 1024];
    let before = env.ping().await.malformed;
    for body in [&b"nope"[..], b"\xff\xfe", b"[]", &huge] {
        assert_eq!(env.request(subjects::OUTBOUND_GET, body).await, b"[]");
        assert_eq!(env.request(subjects::RECENT_CHAT_GET, body).await, b"[]");
        assert_eq!(
            env.request(subjects::QUERY_USER_STATS, body).await,
            br#"{"success": false, "error": "Invalid request format"}"#
        );
        assert_eq!(
            env.request(subjects::QUERY_RECENT_MESSAGES, body).await,
            br#"{"success": false, "error": "Invalid request format"}"#
        );
        assert_eq!(
            env.request(subjects::OUTBOUND_ENQUEUE, body).await,
            br#"{"success": false, "error": "Invalid request format"}"#
        );
    }
    assert_eq!(
        env.request(subjects::OUTBOUND_GET, br#"{"limit": "ten"}"#)
            .await,
        b"[]",
        "wrong types answer [] like the seed's exception path"
    );
    assert_eq!(env.ping().await.malformed - before, 4 * 5 + 1);
    // Negative limits do not mean "everything".
    env.request(subjects::OUTBOUND_ENQUEUE, br#"{"message": "m"}"#)
        .await;
    assert_eq!(
        env.request(subjects::OUTBOUND_GET, br#"{"limit": -1}"#)
            .await,
        b"[]"
    );
    let one = env
        .request_json(subjects::OUTBOUND_GET, br#"{"limit": 1}"#)
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_stored_verbatim() {
    let env = Env::start().await;
    let name = "Robert'); DROP TABLE user_stats;--";
    let body =
        serde_json::json!({"username": name, "message": "%_\\\u{0}\" OR 1=1 --"}).to_string();
    env.publish_committed(&[
        (
            subjects::USER_JOINED,
            "j",
            serde_json::json!({ "username": name }).to_string(),
        ),
        (subjects::MESSAGE_LOG, "m", body),
    ])
    .await;
    let reply = env
        .request_json(
            subjects::QUERY_USER_STATS,
            serde_json::json!({ "username": name })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(reply["found"], true);
    assert_eq!(reply["total_chat_lines"], 1);
    let chat = env.request_json(subjects::RECENT_CHAT_GET, b"{}").await;
    assert_eq!(chat[0]["message"], "%_\\\u{0}\" OR 1=1 --");
}

/// The hostile battery (frames a NATS client cannot read: a subject or reply subject that is not
/// UTF-8, header blocks it cannot parse), each followed by a valid event, from a raw socket. The
/// service counts each frame that reaches it as malformed, applies none of them, commits every
/// valid event and loses no connection. Unpatched async-nats dropped the connection at each
/// frame (and with it every event in flight). In durable mode the stream captures only the exact
/// event subjects, stores no reply subject and rewrites a status line it cannot read, so three
/// frames reach the service unreadable (each terminated) and two arrive readable and are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_frames_are_counted_and_cut_no_connection() {
    for mode in [Mode::Core, Mode::Durable] {
        let env = Env::start_with(|c| c.mode = mode).await;
        let before = env.ping().await;
        let mut notices = env.notices().await;
        let battery = hostile::frames(
            subjects::MESSAGE_LOG,
            "rosey.db",
            br#"{"username": "amy", "message": "hostile"}"#,
        );
        let mut wire = Vec::new();
        let mut valid_ids = HashSet::new();
        for (i, frame) in battery.iter().enumerate() {
            wire.push(frame.clone());
            let id = format!("valid-{i}");
            let header = format!("NATS/1.0\r\n{}: {id}\r\n\r\n", headers::EVENT_ID);
            let body = format!(r#"{{"username": "amy", "message": "valid {i}"}}"#);
            wire.push(hostile::Frame {
                kind: "valid",
                bytes: hostile::hpub_frame(
                    subjects::MESSAGE_LOG.as_bytes(),
                    None,
                    header.as_bytes(),
                    body.as_bytes(),
                ),
                exact_subject: true,
            });
            valid_ids.insert(id);
        }
        let addr = format!("127.0.0.1:{}", env.server.port());
        tokio::task::spawn_blocking(move || hostile::publish_raw(&addr, &wire))
            .await
            .unwrap()
            .unwrap();
        notices.wait_for(&valid_ids).await;
        // Marked frames reach the intake before the valid event published after each of them.
        let after = env.ping().await;
        // Durable: the stream stores no reply subject and the server rewrites a status line
        // it cannot read, so those two arrive readable and are applied.
        let (reaching, hostile_applied) = match mode {
            Mode::Core => (6, 0),
            Mode::Durable => (3, 2),
        };
        assert_eq!(after.malformed - before.malformed, reaching, "{mode:?}");
        assert_eq!(
            after.committed - before.committed,
            6 + hostile_applied,
            "{mode:?}"
        );
        assert_eq!(after.disconnects, 0, "{mode:?}");
        assert_eq!(after.dead_letters, 0, "{mode:?}");
        let lines: Vec<String> = open_read_only(&env.db_path())
            .get_recent_chat(20)
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect();
        let mut want: Vec<String> = (0..6).map(|i| format!("valid {i}")).collect();
        if hostile_applied == 2 {
            // After the frames they were in (reply_not_utf8 second, header_bad_status fifth).
            want.insert(4, "hostile".to_owned());
            want.insert(1, "hostile".to_owned());
        }
        assert_eq!(lines, want, "{mode:?}");

        // A request whose header block cannot be read is answered with an error and counted.
        let inbox = "_INBOX.hostile-request";
        let mut replies = env.client.subscribe(inbox).await.unwrap();
        let _ = env.ping().await; // the SUB is active at the server
        let frame = hostile::Frame {
            kind: "header_without_colon",
            bytes: hostile::hpub_frame(
                subjects::QUERY_CHANNEL_STATS.as_bytes(),
                Some(inbox.as_bytes()),
                b"NATS/1.0\r\nno colon\r\n\r\n",
                b"{}",
            ),
            exact_subject: true,
        };
        let addr = format!("127.0.0.1:{}", env.server.port());
        tokio::task::spawn_blocking(move || hostile::publish_raw(&addr, &[frame]))
            .await
            .unwrap()
            .unwrap();
        let reply = tokio::time::timeout(DEADLINE, replies.next())
            .await
            .expect("an answer")
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["success"], false, "{reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("malformed message"),
            "{reply}"
        );
        let last = env.ping().await;
        assert_eq!(last.malformed - after.malformed, 1, "{mode:?}");
        assert_eq!(last.disconnects, 0, "{mode:?}");
    }
}
