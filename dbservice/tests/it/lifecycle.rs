//! Starting, stopping and restarting: clean shutdown commits what was received and ends the open
//! sessions; data survives restarts; failed starts leave nothing behind and say why.

use crate::support::*;
use rosey_protocol::subjects;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_everything_received_and_ends_sessions() {
    let mut env = Env::start().await;
    let n = 3000;
    env.client
        .publish(
            subjects::USER_JOINED,
            br#"{"username": "amy"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let body = format!(r#"{{"username": "amy", "message": "line {i}"}}"#);
        env.client
            .publish(subjects::MESSAGE_LOG, body.into())
            .await
            .unwrap();
    }
    // A round trip on the publishing connection: the server has routed every event above to
    // the service's connection before it answers. No waiting for commits: shutdown must do it.
    request(&env.client, subjects::QUERY_CHANNEL_STATS, b"{}").await;
    env.stop_service().await;

    let db = open_read_only(&env.db_path());
    assert_eq!(db.recent_chat_count().unwrap(), n);
    let amy = db.get_user_stats("amy").unwrap().unwrap();
    assert_eq!(amy.total_chat_lines, n);
    assert_eq!(amy.current_session_start, None, "close ended the session");
    assert_eq!(amy.last_seen, amy.last_seen.max(amy.first_seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart() {
    let mut env = Env::start().await;
    env.publish_committed(&[
        (subjects::USER_JOINED, "a", r#"{"username": "amy"}"#.into()),
        (
            subjects::MESSAGE_LOG,
            "b",
            r#"{"username": "amy", "message": "before"}"#.into(),
        ),
        (
            subjects::HIGH_WATER,
            "c",
            r#"{"chat_count": 9, "connected_count": 12}"#.into(),
        ),
    ])
    .await;
    env.restart_service(|_| {}).await;
    let amy = env
        .request_json(subjects::QUERY_USER_STATS, br#"{"username": "amy"}"#)
        .await;
    assert_eq!(amy["total_chat_lines"], 1);
    assert_eq!(
        amy["current_session_start"],
        serde_json::Value::Null,
        "the restart's close ended it"
    );
    let stats = env.request_json(subjects::QUERY_CHANNEL_STATS, b"{}").await;
    assert_eq!(stats["high_water_mark"]["users"], 9);
    assert_eq!(stats["high_water_connected"]["users"], 12);
    let p = env.ping().await;
    assert_eq!(p.received, 0, "counters are per run");
    env.publish_committed(&[(subjects::USER_JOINED, "d", r#"{"username": "amy"}"#.into())])
        .await;
    let amy = env
        .request_json(subjects::QUERY_USER_STATS, br#"{"username": "amy"}"#)
        .await;
    assert!(amy["current_session_start"].is_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_idempotent_for_the_database_and_leaves_it_usable() {
    let mut env = Env::start().await;
    env.publish_committed(&[(subjects::USER_JOINED, "a", r#"{"username": "amy"}"#.into())])
        .await;
    env.stop_service().await;
    // The file is closed and consistent: a fresh read-write open works and finds the data.
    let mut db = rosey_dbservice::db::Database::open_path(env.db_path()).unwrap();
    assert_eq!(db.get_total_users_seen().unwrap(), 1);
    db.close().unwrap();
    db.close().unwrap();
    // A service can start again on it.
    env.restart_service(|_| {}).await;
    assert_eq!(env.ping().await.mode, "core");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_starts_explain_themselves() {
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    let bad_db = config(&server, dir.path().join("missing-dir").join("x.db"));
    let e = format!("{:#}", rosey_dbservice::spawn(bad_db).await.unwrap_err());
    assert!(e.contains("missing-dir"), "{e}");

    let free = natskit::free_port().unwrap();
    let nowhere = config(&server, dir.path().join("x.db"));
    let nowhere = rosey_dbservice::Config {
        nats: rosey_protocol::connect::NatsConnectConfig::new(format!("nats://127.0.0.1:{free}")),
        ..nowhere
    };
    let e = format!("{:#}", rosey_dbservice::spawn(nowhere).await.unwrap_err());
    assert!(e.contains("connecting to nats"), "{e}");

    let memory = config(&server, ":memory:".into());
    let e = format!("{:#}", rosey_dbservice::spawn(memory).await.unwrap_err());
    assert!(e.contains("in-memory"), "{e}");

    // Durable mode needs JetStream; without it the start fails and says so.
    let plain = natskit::NatsServer::start_with(natskit::ServerOptions::default()).unwrap();
    let mut no_js = config(&plain, dir.path().join("x.db"));
    no_js.mode = rosey_dbservice::Mode::Durable;
    let e = format!("{:#}", rosey_dbservice::spawn(no_js).await.unwrap_err());
    assert!(e.contains("jetstream stream"), "{e}");

    // After the failures, a good start on the same file works (nothing left locked or open).
    let good = rosey_dbservice::spawn(config(&server, dir.path().join("x.db")))
        .await
        .unwrap();
    good.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_do_not_share_state() {
    // Each test gets its own server and file; this one checks the fixture itself by running
    // two environments side by side.
    let (a, b) = tokio::join!(Env::start(), Env::start());
    a.publish_committed(&[(
        subjects::USER_JOINED,
        "x",
        r#"{"username": "only-a"}"#.into(),
    )])
    .await;
    let found = b
        .request_json(subjects::QUERY_USER_STATS, br#"{"username": "only-a"}"#)
        .await;
    assert_eq!(found["found"], false);
}
