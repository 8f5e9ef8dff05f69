//! Bad input of every kind: counted, answered where a reply is expected, never fatal, never
//! corrupting what was stored.

use crate::support::*;
use rosey_protocol::{headers, subjects};

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
