//! Reliability defects of issue 11: input bounds, oversized replies, durable de-duplication
//! across stream re-creation and poison messages, one instance per database, byte-bounded
//! buffering and claimed outbound rows. Each test failed on the code before its fix.

use crate::support::*;
use async_nats::jetstream;
use bytes::Bytes;
use rosey_dbservice::{FileConfig, Mode};
use rosey_protocol::subjects;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The ping reply as JSON (new counters are read by name).
async fn ping_json(env: &Env) -> Value {
    env.request_json(subjects::SERVICE_PING, b"").await
}

fn counter(p: &Value, name: &str) -> u64 {
    p[name]
        .as_u64()
        .unwrap_or_else(|| panic!("ping has no counter {name:?}: {p}"))
}

/// Polls the ping (a request per round, no sleeps) until `done` holds, within [`DEADLINE`].
async fn wait_ping(env: &Env, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let p = ping_json(env).await;
        if done(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached within {DEADLINE:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- 1. Input bounds ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_counts_and_absurd_high_water_marks_are_rejected() {
    let env = Env::start().await;
    let before = env.ping().await.malformed;
    for (subject, body) in [
        (
            subjects::USER_COUNT,
            r#"{"chat_count": -5, "connected_count": 3}"#,
        ),
        (
            subjects::USER_COUNT,
            r#"{"chat_count": 3, "connected_count": -1}"#,
        ),
        (
            subjects::USER_COUNT,
            r#"{"chat_count": 10000001, "connected_count": 1}"#,
        ),
        (
            subjects::HIGH_WATER,
            r#"{"chat_count": 9223372036854775807, "connected_count": null}"#,
        ),
        (
            subjects::HIGH_WATER,
            r#"{"chat_count": 5, "connected_count": -2}"#,
        ),
        (
            subjects::HIGH_WATER,
            r#"{"chat_count": 1, "connected_count": 9223372036854775807}"#,
        ),
    ] {
        env.client
            .publish(subject, Bytes::from_static(body.as_bytes()))
            .await
            .unwrap();
    }
    env.barrier().await;
    assert_eq!(env.ping().await.malformed, before + 6);
    {
        let db = open_read_only(&env.db_path());
        assert_eq!(db.get_high_water_mark().unwrap().0, 0, "nothing stored");
        assert_eq!(db.get_high_water_mark_connected().unwrap().0, 0);
        let bad: i64 = db
            .conn()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM user_count_history WHERE chat_users < 0 OR connected_users < 0 OR chat_users > 10000000",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad, 0);
    }
    // The maximum itself is accepted, and a later peak can still be recorded.
    env.client
        .publish(
            subjects::HIGH_WATER,
            Bytes::from_static(br#"{"chat_count": 10000000, "connected_count": 12}"#),
        )
        .await
        .unwrap();
    env.barrier().await;
    let db = open_read_only(&env.db_path());
    assert_eq!(db.get_high_water_mark().unwrap().0, 10_000_000);
    assert_eq!(db.get_high_water_mark_connected().unwrap().0, 12);

    // An event sent as a request (it has a reply subject) is answered with the error.
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        env.client.request(
            subjects::USER_COUNT,
            Bytes::from_static(br#"{"chat_count": -1}"#),
        ),
    )
    .await
    .expect("a rejected event with a reply subject is answered")
    .expect("request");
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["success"], json!(false), "{v}");
    assert!(v["error"].as_str().unwrap().contains("chat_count"), "{v}");
}

// --- 2. Replies bounded by the server's max payload -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_query_replies_are_truncated_and_flagged() {
    let env = Env::start().await;
    let text = "x".repeat(1000);
    let events: Vec<(&str, String, String)> = (0..1500)
        .map(|i| {
            (
                subjects::MESSAGE_LOG,
                format!("big-{i}"),
                format!(r#"{{"username": "amy", "message": "{i:04} {text}"}}"#),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, String)> = events
        .iter()
        .map(|(s, id, b)| (*s, id.as_str(), b.clone()))
        .collect();
    env.publish_committed(&refs).await;
    let max_payload = env.client.server_info().max_payload;

    let ask = |subject: &'static str, body: &'static [u8]| {
        let client = env.client.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                client.request(subject, Bytes::from_static(body)),
            )
            .await
            .unwrap_or_else(|_| panic!("{subject}: no reply (oversized reply never sent?)"))
            .unwrap_or_else(|e| panic!("{subject}: {e}"))
        }
    };
    let reply = ask(subjects::RECENT_CHAT_GET, br#"{"limit": 1500}"#).await;
    assert!(reply.payload.len() <= max_payload);
    let rows: Vec<Value> = serde_json::from_slice(&reply.payload).unwrap();
    assert!(!rows.is_empty() && rows.len() < 1500, "{} rows", rows.len());
    assert!(
        rows.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("1499 "),
        "the newest lines are kept"
    );
    let flag = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Rosey-Truncated"))
        .expect("truncation is flagged in a header");
    assert_eq!(flag.as_str(), format!("{} of 1500", rows.len()));

    let reply = ask(
        subjects::QUERY_RECENT_MESSAGES,
        br#"{"limit": 1500, "offset": 0}"#,
    )
    .await;
    let rows: Vec<Value> = serde_json::from_slice(&reply.payload).unwrap();
    assert!(!rows.is_empty() && rows.len() < 1500);
    assert!(rows[0]["message"].as_str().unwrap().starts_with("1499 "));
    assert!(reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Rosey-Truncated"))
        .is_some());

    // A reply that fits carries no flag.
    let reply = ask(subjects::RECENT_CHAT_GET, br#"{"limit": 2}"#).await;
    assert!(reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Rosey-Truncated"))
        .is_none());
    let p = ping_json(&env).await;
    assert_eq!(counter(&p, "truncated_replies"), 2, "{p}");
}

// --- 3. Durable mode --------------------------------------------------------------------------

async fn js_publish_plain(js: &jetstream::Context, from: usize, to: usize) {
    for i in from..to {
        js.publish(
            subjects::MESSAGE_LOG,
            format!(r#"{{"username": "amy", "message": "no id {i}"}}"#).into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_without_ids_survive_stream_recreation() {
    let mut env = Env::start_with(|c| c.mode = Mode::Durable).await;
    let js = jetstream::new(env.client.clone());
    js_publish_plain(&js, 0, 100).await;
    wait_ping(&env, "100 committed", |p| counter(p, "committed") >= 100).await;
    env.stop_service().await;

    js.delete_stream(subjects::DURABLE_STREAM)
        .await
        .expect("delete stream");
    env.restart_service(|c| c.mode = Mode::Durable).await;
    js_publish_plain(&js, 100, 200).await;
    let p = wait_ping(&env, "100 handled", |p| {
        counter(p, "committed") + counter(p, "duplicates") >= 100
    })
    .await;
    assert_eq!(
        counter(&p, "duplicates"),
        0,
        "new events are not duplicates: {p}"
    );
    let db = open_read_only(&env.db_path());
    assert_eq!(db.recent_chat_count().unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_consumer_has_a_finite_max_deliver() {
    let env = Env::start_with(|c| c.mode = Mode::Durable).await;
    let js = jetstream::new(env.client.clone());
    let stream = js.get_stream(subjects::DURABLE_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(subjects::DURABLE_CONSUMER)
        .await
        .unwrap();
    let max = consumer.info().await.unwrap().config.max_deliver;
    assert!(
        max > 0,
        "max_deliver is {max}: poison is redelivered forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_poison_message_is_dead_lettered_after_max_deliver() {
    let env = Env::start_with(|c| {
        c.mode = Mode::Durable;
        FileConfig::parse("max_deliver = 3")
            .expect("max_deliver is a config key")
            .apply_to(c);
    })
    .await;
    // Every insert into user_count_history now fails with a (non-permanent) SQL error.
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON user_count_history \
             BEGIN INSERT INTO no_such_table VALUES (1); END;",
        )
        .unwrap();
    let js = jetstream::new(env.client.clone());
    let mut h = async_nats::HeaderMap::new();
    h.insert(rosey_protocol::headers::EVENT_ID, "poison-1");
    js.publish_with_headers(
        subjects::USER_COUNT,
        h,
        Bytes::from_static(br#"{"chat_count": 1, "connected_count": 1}"#),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let p = wait_ping(&env, "a dead letter", |p| {
        p["dead_letters"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(counter(&p, "dead_letters"), 1);
    assert_eq!(counter(&p, "failed"), 3, "three deliveries, three failures");
    let db = open_read_only(&env.db_path());
    let (id, deliveries): (String, i64) = db
        .conn()
        .unwrap()
        .query_row(
            "SELECT event_id, deliveries FROM dead_letters WHERE subject = ?1",
            [subjects::USER_COUNT],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((id.as_str(), deliveries), ("poison-1", 3));
    // Nothing is left to redeliver.
    let stream = js.get_stream(subjects::DURABLE_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(subjects::DURABLE_CONSUMER)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.max_deliver, 3);
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
}

// --- 4. One instance per database -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_database_is_refused() {
    let env = Env::start().await;
    let second = rosey_dbservice::spawn(config(&env.server, env.db_path())).await;
    let err = match second {
        Ok(s) => {
            s.shutdown().await.ok();
            panic!("a second instance started on the same database");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("bot.db.lock"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // The first instance is unaffected, and stores every line once.
    env.publish_committed(&[(
        subjects::MESSAGE_LOG,
        "once",
        r#"{"username": "amy", "message": "once"}"#.into(),
    )])
    .await;
    assert_eq!(
        open_read_only(&env.db_path()).recent_chat_count().unwrap(),
        1
    );
}

// --- 7. Byte-bounded buffering in core mode -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_buffering_is_bounded_in_bytes_and_drops_are_counted() {
    let env = Env::start_with(|c| {
        FileConfig::parse("max_buffered_bytes = 1048576")
            .expect("max_buffered_bytes is a config key")
            .apply_to(c);
    })
    .await;
    // Stall the writer: another connection holds the write lock.
    let blocker = rusqlite::Connection::open(env.db_path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let line = "y".repeat(1000);
    let sent = 5000u64;
    for i in 0..sent {
        env.client
            .publish(
                subjects::MESSAGE_LOG,
                format!(r#"{{"username": "amy", "message": "{i} {line}"}}"#).into(),
            )
            .await
            .unwrap();
    }
    env.client.flush().await.unwrap();
    let p = wait_ping(&env, "every event received", |p| {
        counter(p, "received") >= sent
    })
    .await;
    assert!(counter(&p, "dropped") > 0, "{p}");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let p = wait_ping(&env, "every event accounted for", |p| {
        counter(p, "committed") + counter(p, "failed") + counter(p, "dropped") >= sent
    })
    .await;
    let dropped = counter(&p, "dropped");
    assert!(dropped > 0 && dropped < sent, "{p}");
    assert_eq!(
        counter(&p, "received"),
        counter(&p, "committed")
            + counter(&p, "failed")
            + counter(&p, "dropped")
            + counter(&p, "malformed"),
        "nothing is lost silently: {p}"
    );
}

// --- 8. Outbound rows are claimed; mark_sent can be confirmed -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_get_claims_rows_and_mark_sent_is_confirmed() {
    let env = Env::start().await;
    for m in ["one", "two"] {
        let v = env
            .request_json(
                subjects::OUTBOUND_ENQUEUE,
                format!(r#"{{"message": "{m}"}}"#).as_bytes(),
            )
            .await;
        assert_eq!(v["success"], json!(true));
    }
    let first = env
        .request_json(subjects::OUTBOUND_GET, br#"{"limit": 10}"#)
        .await;
    assert_eq!(first.as_array().unwrap().len(), 2, "{first}");
    let second = env
        .request_json(subjects::OUTBOUND_GET, br#"{"limit": 10}"#)
        .await;
    assert_eq!(
        second,
        json!([]),
        "claimed rows are not handed out twice while the lease runs"
    );

    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        env.client.request(
            "rosey.db.messages.outbound.confirm_sent",
            Bytes::from_static(br#"{"message_id": 1}"#),
        ),
    )
    .await
    .expect("confirm_sent answered")
    .expect("confirm_sent has a responder");
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v, json!({"success": true, "found": true}));
    let v: Value = serde_json::from_slice(
        &env.request(
            "rosey.db.messages.outbound.confirm_sent",
            br#"{"message_id": 99}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(v, json!({"success": true, "found": false}));
    // The old fire-and-forget mark_sent still works.
    env.client
        .publish(
            subjects::OUTBOUND_MARK_SENT,
            Bytes::from_static(br#"{"message_id": 2}"#),
        )
        .await
        .unwrap();
    env.barrier().await;
    let db = open_read_only(&env.db_path());
    let sent: HashSet<i64> = db
        .conn()
        .unwrap()
        .prepare("SELECT id FROM outbound_messages WHERE sent = 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sent, HashSet::from([1, 2]));
}
