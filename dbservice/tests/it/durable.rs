//! Durable mode: JetStream capture, ack after commit, idempotency by event id, and the kill -9
//! test with the real binary: exactly the events sent are stored, none lost, none twice.

use crate::binary::ServiceProcess;
use crate::support::*;
use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use rosey_dbservice::Mode;
use rosey_protocol::{headers, subjects};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

async fn js_publish(js: &jetstream::Context, subject: &str, id: &str, msg_id: bool, body: String) {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_ID, id);
    if msg_id {
        h.insert(headers::NATS_MSG_ID, id);
    }
    js.publish_with_headers(subject.to_owned(), h, Bytes::from(body))
        .await
        .expect("publish")
        .await
        .expect("stream stored the event");
}

/// Publishes chat lines `from..to` for `amy`, 256 in flight at a time, each acknowledged by the
/// stream before this returns.
async fn js_publish_lines(js: &jetstream::Context, from: usize, to: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut pending = Vec::with_capacity(256);
    for i in from..to {
        let id = format!("d-{i}");
        let mut h = HeaderMap::new();
        h.insert(headers::EVENT_ID, id.as_str());
        h.insert(headers::NATS_MSG_ID, id.as_str());
        let body = format!(r#"{{"username": "amy", "message": "line {i}"}}"#);
        pending.push(
            js.publish_with_headers(subjects::MESSAGE_LOG, h, body.into())
                .await
                .expect("publish"),
        );
        ids.insert(id);
        if pending.len() == 256 {
            for p in pending.drain(..) {
                p.await.expect("stream stored the event");
            }
        }
    }
    for p in pending {
        p.await.expect("stream stored the event");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_captures_events_only_and_requests_still_work() {
    let env = Env::start_with(|c| c.mode = Mode::Durable).await;
    let js = jetstream::new(env.client.clone());
    let mut stream = js.get_stream(subjects::DURABLE_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    let mut got = info.config.subjects.clone();
    got.sort();
    let mut want: Vec<String> = subjects::EVENT_SUBJECTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(got, want);
    let p = env.ping().await;
    assert_eq!(
        (p.success, p.mode.as_str()),
        (true, "durable"),
        "a request is answered by the service, not a PubAck"
    );
    assert_eq!(
        env.request(subjects::OUTBOUND_ENQUEUE, br#"{"message": "m"}"#)
            .await,
        br#"{"success": true, "id": 1}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_subjects_is_repaired_at_start() {
    let mut env = Env::start_with(|c| c.mode = Mode::Durable).await;
    env.stop_service().await;
    let js = jetstream::new(env.client.clone());
    let mut stream = js.get_stream(subjects::DURABLE_STREAM).await.unwrap();
    let mut narrowed = stream.info().await.unwrap().config.clone();
    narrowed.subjects = vec![subjects::MESSAGE_LOG.to_owned()];
    js.update_stream(narrowed).await.unwrap();
    env.restart_service(|c| c.mode = Mode::Durable).await;
    let info = stream.info().await.unwrap();
    let mut got = info.config.subjects.clone();
    got.sort();
    let mut want: Vec<String> = subjects::EVENT_SUBJECTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(got, want, "the service put back every event subject");
    assert_eq!(info.config.num_replicas, 1, "the replicas it was asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_ids_are_skipped_but_acknowledged() {
    let env = Env::start_with(|c| c.mode = Mode::Durable).await;
    let js = jetstream::new(env.client.clone());
    let mut n = env.notices().await;
    js_publish(
        &js,
        subjects::USER_JOINED,
        "join",
        true,
        r#"{"username": "amy"}"#.into(),
    )
    .await;
    js_publish(
        &js,
        subjects::MESSAGE_LOG,
        "same",
        false,
        r#"{"username": "amy", "message": "once"}"#.into(),
    )
    .await;
    n.wait_for(&HashSet::from(["join".to_owned(), "same".to_owned()]))
        .await;
    // The same event id again, without Nats-Msg-Id so the server stores it a second time.
    js_publish(
        &js,
        subjects::MESSAGE_LOG,
        "same",
        false,
        r#"{"username": "amy", "message": "once"}"#.into(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !n
        .seen
        .iter()
        .any(|x| x.duplicate_ids.contains(&"same".to_owned()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no duplicate notice"
        );
        n.ids.remove("same");
        n.wait_for(&HashSet::from(["same".to_owned()])).await;
    }
    let p = env.ping().await;
    assert_eq!((p.received, p.committed, p.duplicates), (3, 2, 1));
    let db = open_read_only(&env.db_path());
    assert_eq!(db.recent_chat_count().unwrap(), 1);
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        1
    );
    assert_eq!(db.processed_event_count().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_down_are_applied_after_restart() {
    let mut env = Env::start_with(|c| c.mode = Mode::Durable).await;
    env.stop_service().await;
    // A seed-style publisher (plain publish, no headers) is captured by the stream too. The
    // JetStream publish after it is acknowledged only once the server has stored both.
    env.client
        .publish(
            subjects::USER_JOINED,
            br#"{"username": "amy"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    let js = jetstream::new(env.client.clone());
    js_publish(
        &js,
        subjects::MESSAGE_LOG,
        "while-down",
        true,
        r#"{"username": "amy", "message": "queued"}"#.into(),
    )
    .await;
    // A different ack wait than the first run: the existing consumer is updated, not an error.
    env.restart_service(|c| {
        c.mode = Mode::Durable;
        c.ack_wait = std::time::Duration::from_secs(7);
    })
    .await;
    let mut n = env.notices().await;
    // Either the notice arrives now, or it was published before we subscribed: then the data is
    // already there. Ask the service to prove it.
    let db = open_read_only(&env.db_path());
    if db.recent_chat_count().unwrap() == 0 {
        n.wait_for(&HashSet::from(["while-down".to_owned()])).await;
    }
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        1
    );
    assert_eq!(env.ping().await.committed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_duplicates_nothing() {
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("bot.db");
    let db_arg = db_path.to_str().unwrap().to_owned();
    let args = [
        "--nats-url",
        server.url(),
        "--db-path",
        &db_arg,
        "--mode",
        "durable",
        "--commit-notices",
        "--ack-wait-ms",
        "2000",
        "--batch-max-events",
        "100",
        "--log-level",
        "info",
    ];
    let first = ServiceProcess::start(&args).await;
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    let mut notices = Notices::subscribe(&client).await;

    js_publish(
        &js,
        subjects::USER_JOINED,
        "join",
        true,
        r#"{"username": "amy"}"#.into(),
    )
    .await;
    let total = 5000;
    // Events flow from a background publisher, in chunks of 50 each stored by the stream
    // before the next, while the service is killed and restarted.
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (js, published) = (js.clone(), Arc::clone(&published));
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            for from in (0..total).step_by(50) {
                ids.extend(js_publish_lines(&js, from, (from + 50).min(total)).await);
                published.store(from + 50, Ordering::SeqCst);
            }
            ids
        })
    };
    let some: HashSet<String> = (0..300).map(|i| format!("d-{i}")).collect();
    notices.wait_for(&some).await;
    first.kill9().await;
    let at_kill = published.load(Ordering::SeqCst);
    assert!(
        at_kill < total,
        "killed while events were still being published ({at_kill})"
    );

    let second = ServiceProcess::start(&args).await;
    let mut sent = publisher.await.unwrap();
    assert_eq!(sent.len(), total);
    sent.insert("join".to_owned());
    notices.wait_for(&sent).await;
    second.terminate().await;

    let db = open_read_only(&db_path);
    let conn = db.conn().unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT message) FROM recent_chat",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (total as i64, total as i64),
        "every event stored exactly once"
    );
    assert_eq!(
        db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
        total as i64,
        "no line counted twice"
    );
    assert_eq!(db.processed_event_count().unwrap(), total as i64 + 1);
    // Each id was reported committed at most once (a redelivery after the kill is reported as a
    // duplicate instead).
    let committed = notices.committed_ids();
    let unique: HashSet<&String> = committed.iter().collect();
    assert_eq!(unique.len(), committed.len());
}
