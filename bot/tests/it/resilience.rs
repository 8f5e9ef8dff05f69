//! Requests to a database service that is missing, slow or flaky (played by responders the
//! tests control), malformed platform events, a NATS restart, and the outbound loop's failures.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rosey_bot::{BreakerState, NatsPlatformSender, PlatformAction, PlatformSender, SendError};
use rosey_protocol::platform::{self, kind};
use rosey_protocol::subjects;
use serde_json::json;

use crate::support::*;

fn stats_reply() -> serde_json::Value {
    json!({
        "high_water_mark": {"users": 3, "timestamp": null},
        "high_water_connected": {"users": 9, "timestamp": 0},
        "top_chatters": [],
        "total_users_seen": 4,
        "success": true
    })
}

const STATS_TEXT: &str = "=== Channel Statistics ===\nPeak chat users: 3\nPeak connected viewers: 9\nTotal unique users: 4";

#[tokio::test]
async fn without_a_service_commands_say_so_and_chat_keeps_flowing() {
    let w = World::start().await;
    let bot = w.bot().await;
    w.join(MOD, 2.0).await;
    let o = w.command(MOD, "stats").await;
    assert_eq!(o.text, "Stats unavailable (database service not running)");
    assert_eq!(
        (o.result.as_str(), o.error.as_deref()),
        ("error", Some(o.text.as_str()))
    );
    // Its three attempts (two retries) opened the breaker; the next command fails fast.
    assert_eq!(bot.breaker_state(), BreakerState::Open);
    let o = w.command(MOD, "stats").await;
    assert_eq!(o.text, "Stats unavailable (circuit open, retrying in 5s)");

    let mut log = w.sub(subjects::MESSAGE_LOG).await;
    w.chat("amy", "still here", None).await;
    let (v, _) = next_json(&mut log, "message.log while the service is down").await;
    assert_eq!(v, json!({"username": "amy", "message": "still here"}));
    assert_eq!(bot.stats().events_malformed, 0);
}

#[tokio::test]
async fn a_silent_service_times_out() {
    let w = World::start().await;
    let mut c = w.bot_config();
    c.requests.timeout = Duration::from_millis(150);
    c.requests.read_retries = 0;
    let _bot = w.bot_with(c, None).await;
    let _silent = responder(&w.client, subjects::QUERY_CHANNEL_STATS, |_| None).await;
    w.join(MOD, 2.0).await;
    let o = w.command(MOD, "stats").await;
    assert_eq!(
        (o.text.as_str(), o.result.as_str()),
        ("Stats unavailable (timeout)", "error")
    );
}

#[tokio::test]
async fn read_only_queries_are_retried_with_backoff() {
    let w = World::start().await;
    let mut c = w.bot_config();
    // Long enough that the third, answered request never times out on a loaded machine.
    c.requests.timeout = Duration::from_secs(1);
    c.requests.read_retries = 2;
    let bot = w.bot_with(c, None).await;
    let seen = Arc::new(AtomicU32::new(0));
    let seen2 = Arc::clone(&seen);
    // Drops the first two requests, answers the third.
    let _flaky = responder(&w.client, subjects::QUERY_CHANNEL_STATS, move |_| {
        (seen2.fetch_add(1, Ordering::SeqCst) >= 2).then(stats_reply)
    })
    .await;
    w.join(MOD, 2.0).await;
    let o = w.command(MOD, "stats").await;
    assert_eq!(
        (o.text.as_str(), o.result.as_str()),
        (STATS_TEXT, "success")
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(bot.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn the_breaker_fails_fast_then_probes_and_recovers() {
    let w = World::start().await;
    let mut c = w.bot_config();
    c.requests.read_retries = 0;
    c.requests.breaker_failures = 2;
    // Long enough that the third command always lands inside the open window, even when a
    // loaded machine takes a while to deliver it.
    c.requests.breaker_open = Duration::from_secs(2);
    let bot = w.bot_with(c, None).await;
    w.join(MOD, 2.0).await;
    for _ in 0..2 {
        assert_eq!(
            w.command(MOD, "stats").await.text,
            "Stats unavailable (database service not running)"
        );
    }
    assert_eq!(bot.breaker_state(), BreakerState::Open);
    let o = w.command(MOD, "stats").await;
    assert!(
        o.text
            .starts_with("Stats unavailable (circuit open, retrying in "),
        "{}",
        o.text
    );
    assert_eq!(o.result, "error");
    assert_eq!(bot.stats().requests_short_circuited, 1);

    // The service comes back; the first request after the window is the probe and succeeds.
    let _service = responder(&w.client, subjects::QUERY_CHANNEL_STATS, |_| {
        Some(stats_reply())
    })
    .await;
    let text = eventually("the breaker to let a probe through", || async {
        let o = w.command(MOD, "stats").await;
        (o.result == "success").then_some(o.text)
    })
    .await;
    assert_eq!(text, STATS_TEXT);
    assert_eq!(bot.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn malformed_events_are_counted_and_ignored() {
    let w = World::start().await;
    let bot = w.bot().await;
    let mut log = w.sub(subjects::MESSAGE_LOG).await;
    w.send_raw(kind::MESSAGE, "not json".into(), None).await;
    w.send_raw(kind::MESSAGE, r#"{"content": "no user"}"#.into(), None)
        .await;
    w.send_raw(kind::USERCOUNT, r#""12""#.into(), None).await;
    w.send_raw(kind::USERLIST, r#"{"users": 3}"#.into(), None)
        .await;
    w.send_raw(kind::MEDIA, r#"{"kind": "explode"}"#.into(), None)
        .await;
    w.send_raw("bogus", "{}".into(), None).await;
    w.send_raw(kind::MESSAGE, vec![0xff, 0xfe].into(), None)
        .await;
    w.chat("amy", "after the junk", None).await;
    let (v, _) = next_json(&mut log, "the valid message after the junk").await;
    assert_eq!(v["message"], "after the junk");
    let s = bot.stats();
    assert_eq!((s.events_received, s.events_malformed), (8, 7));
}

/// The hostile battery (frames a NATS client cannot read), each followed by a valid chat line,
/// from a raw socket: every frame counted as malformed, every valid line through, no
/// reconnect. Unpatched async-nats dropped the bot's connection at each frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_frames_are_counted_and_cut_no_connection() {
    let w = World::start().await;
    let bot = w.bot().await;
    let mut log = w.sub(subjects::MESSAGE_LOG).await;
    let subject = platform::in_subject(CHANNEL, kind::MESSAGE);
    let chat = |text: &str| json!({"user": "amy", "content": text}).to_string();
    let battery = natskit::hostile::frames(
        &subject,
        &format!("rosey.platform.{CHANNEL}.in"),
        chat("hostile").as_bytes(),
    );
    let mut wire = Vec::new();
    for (i, frame) in battery.iter().enumerate() {
        wire.push(frame.clone());
        wire.push(natskit::hostile::Frame {
            kind: "valid",
            bytes: natskit::hostile::pub_frame(
                subject.as_bytes(),
                None,
                chat(&format!("valid {i}")).as_bytes(),
            ),
            exact_subject: true,
        });
    }
    let addr = format!("127.0.0.1:{}", w.nats.port());
    tokio::task::spawn_blocking(move || natskit::hostile::publish_raw(&addr, &wire))
        .await
        .unwrap()
        .unwrap();
    for i in 0..battery.len() {
        let (v, _) = next_json(&mut log, &format!("valid line {i}")).await;
        assert_eq!(v["message"], format!("valid {i}"));
    }
    let s = bot.stats();
    assert_eq!(
        (s.events_received, s.events_malformed, s.reconnects),
        (12, 6, 0)
    );
    // The same counters, as anyone on NATS reads them.
    let reply = w
        .client
        .request(platform::bot_stats_subject(CHANNEL), "".into())
        .await
        .unwrap();
    let served: rosey_bot::BotStats = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(served, s);
    bot.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_survives_a_nats_restart() {
    let mut w = World::start().await;
    let bot = w.bot().await;
    tokio::task::block_in_place(|| w.nats.restart()).expect("nats-server restarts");
    eventually("the bot to reconnect", || async {
        (bot.stats().reconnects >= 1).then_some(())
    })
    .await;
    // The test client reconnects on its own schedule; until it has, its events are lost, so
    // keep sending until one comes back through the bot (bounded by the deadline).
    let mut log = w.sub(subjects::MESSAGE_LOG).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no chat event flowed after the restart"
        );
        w.chat("amy", "back", None).await;
        if let Ok(m) =
            tokio::time::timeout(Duration::from_millis(200), next(&mut log, "message.log")).await
        {
            break m;
        }
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got.payload).unwrap()["message"],
        "back"
    );
    bot.shutdown().await.unwrap();
}

/// A sender that refuses chat lines containing "FAIL" and sends the rest over NATS.
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

#[tokio::test]
async fn outbound_messages_are_sent_and_marked_or_marked_failed() {
    let w = World::start().await;
    let mut c = w.bot_config();
    c.intervals.outbound = Duration::from_millis(50);
    let sender = Picky(NatsPlatformSender::new(
        w.client.clone(),
        CHANNEL,
        Duration::from_secs(1),
    ));
    let polls = Arc::new(AtomicU32::new(0));
    let polls2 = Arc::clone(&polls);
    let _queue = responder(&w.client, subjects::OUTBOUND_GET, move |m| {
        let req: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(req, json!({"limit": 20, "max_retries": 3}));
        Some(if polls2.fetch_add(1, Ordering::SeqCst) == 0 {
            json!([
                {"id": 1, "timestamp": 1, "message": "hello", "retry_count": 0, "last_error": null},
                {"id": 2, "timestamp": 2, "message": "FAIL soft", "retry_count": 0, "last_error": null},
                {"id": 3, "timestamp": 3, "message": "FAIL last", "retry_count": 2, "last_error": "x"}
            ])
        } else {
            json!([])
        })
    })
    .await;
    let mut chat = w
        .sub(platform::out_subject(CHANNEL, platform::action::CHAT))
        .await;
    // mark_sent is the confirmed request now: answered after the commit.
    let (confirm_tx, mut confirms) = tokio::sync::mpsc::unbounded_channel();
    let _confirm = responder(&w.client, subjects::OUTBOUND_CONFIRM_SENT, move |m| {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let _ = confirm_tx.send((v, cid_of(m).map(str::to_owned)));
        Some(json!({"success": true, "found": true}))
    })
    .await;
    let mut unconfirmed = w.sub(subjects::OUTBOUND_MARK_SENT).await;
    let mut failed = w.sub(subjects::OUTBOUND_MARK_FAILED).await;
    let bot = w.bot_with(c, Some(Arc::new(sender))).await;

    let (v, chat_msg) = next_json(&mut chat, "the outbound chat line").await;
    assert_eq!(v, json!({"content": "hello"}));
    let (v, sent_cid) = tokio::time::timeout(DEADLINE, confirms.recv())
        .await
        .expect("confirm_sent within the deadline")
        .unwrap();
    assert_eq!(v, json!({"message_id": 1}));
    assert_eq!(
        cid_of(&chat_msg),
        sent_cid.as_deref(),
        "chat action and confirm_sent share a correlation id"
    );
    let (v, _) = next_json(&mut failed, "mark_failed (transient)").await;
    assert_eq!(
        v,
        json!({"message_id": 2, "error": "platform rejected the message", "is_permanent": false})
    );
    let (v, _) = next_json(&mut failed, "mark_failed (last attempt)").await;
    assert_eq!(
        v,
        json!({"message_id": 3, "error": "platform rejected the message", "is_permanent": true})
    );
    let s = bot.stats();
    assert_eq!((s.outbound_sent, s.outbound_failed), (1, 2));
    use futures::FutureExt as _;
    assert!(
        futures::StreamExt::next(&mut unconfirmed)
            .now_or_never()
            .is_none(),
        "a confirmed mark_sent is not also published fire-and-forget"
    );
}

#[tokio::test]
async fn nats_authentication_options_are_used() {
    let opts = natskit::ServerOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let nats = tokio::task::spawn_blocking(move || natskit::NatsServer::start_with(opts))
        .await
        .unwrap()
        .unwrap();
    let mut c = rosey_bot::Config::new(nats.url(), CHANNEL);
    let err = rosey_bot::spawn(c.clone())
        .await
        .expect_err("no token: refused");
    assert!(format!("{err:#}").contains("connecting to nats"), "{err:#}");
    c.nats.token = Some("s3cret".into());
    let bot = rosey_bot::spawn(c).await.expect("the token is accepted");
    bot.shutdown().await.unwrap();
}

/// The bot connects through natskit's shared settings-to-options code: an nkey seed file
/// authenticates it, a stranger's seed is refused with the shared hint, and events flow.
#[tokio::test]
async fn nkey_seed_file_authenticates_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, contents: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let user = nkeys::KeyPair::new_user();
    let conf = write(
        "server.conf",
        format!(
            "authorization {{ users = [ {{ nkey: {:?} }} ] }}\n",
            user.public_key()
        ),
    );
    let seed = write("bot.nk", user.seed().unwrap());
    let stranger = write("stranger.nk", nkeys::KeyPair::new_user().seed().unwrap());
    let opts = natskit::ServerOptions {
        config_file: Some(conf),
        ..Default::default()
    };
    let nats = tokio::task::spawn_blocking(move || natskit::NatsServer::start_with(opts))
        .await
        .unwrap()
        .unwrap();
    let site = rosey_protocol::connect::NatsConnectConfig {
        nkey_seed_file: Some(seed.clone()),
        ..rosey_protocol::connect::NatsConnectConfig::new(nats.url())
    };
    let client = natskit::client::connect(
        &site,
        natskit::client::connect_options(&site).await.unwrap(),
    )
    .await
    .expect("the test client authenticates with the seed");
    let w = World { nats, client };

    let mut c = w.bot_config();
    c.nats.nkey_seed_file = Some(stranger);
    let err = rosey_bot::spawn(c.clone())
        .await
        .expect_err("a stranger's seed is refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("authorization violation") && err.contains("NkeySeedFile"),
        "{err}"
    );

    c.nats.nkey_seed_file = Some(seed);
    let bot = w.bot_with(c, None).await;
    let mut joined = w.sub(subjects::USER_JOINED).await;
    w.join("amy", 1.0).await;
    let (v, _) = next_json(&mut joined, "the bot's user.joined event").await;
    assert_eq!(v["username"], "amy");
    bot.shutdown().await.unwrap();
}
