//! Correlation ids: from the incoming event (header or payload field, or generated) to every
//! database event, request and platform action the bot emits because of it.

use rosey_protocol::platform::{self, kind, PlatformUser};
use rosey_protocol::subjects;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_header_id_reaches_the_database_event_with_an_event_id() {
    let w = World::start().await;
    let _bot = w.bot().await;
    let mut db = w.sub("rosey.db.>").await;
    w.chat("amy", "hi", Some("chat-1")).await;
    let (v, m) = next_json(&mut db, "message.log").await;
    assert_eq!(m.subject.as_str(), subjects::MESSAGE_LOG);
    assert_eq!(v, json!({"username": "amy", "message": "hi"}));
    assert_eq!(
        (cid_of(&m), event_id_of(&m)),
        (Some("chat-1"), Some("chat-1:1"))
    );
}

#[tokio::test]
async fn a_payload_id_is_used_when_there_is_no_header_and_the_header_wins_otherwise() {
    let w = World::start().await;
    let _bot = w.bot().await;
    let mut db = w.sub("rosey.db.>").await;
    let join = PlatformUser {
        correlation_id: Some("join-7".into()),
        ..PlatformUser::new("amy", 0.0)
    };
    w.send(kind::USER_JOIN, &join, None).await;
    let (v, joined) = next_json(&mut db, "user.joined").await;
    assert_eq!(
        (joined.subject.as_str(), v),
        (subjects::USER_JOINED, json!({"username": "amy"}))
    );
    let (v, hw) = next_json(&mut db, "high_water").await;
    // The local userlist is updated before publishing: the count includes amy.
    assert_eq!(
        (hw.subject.as_str(), v),
        (
            subjects::HIGH_WATER,
            json!({"chat_count": 1, "connected_count": null})
        )
    );
    assert_eq!(event_id_of(&joined), Some("join-7:1"));
    assert_eq!(event_id_of(&hw), Some("join-7:2"));
    assert_eq!(cid_of(&hw), Some("join-7"));

    w.send(
        kind::USERCOUNT,
        &json!({"count": 5, "correlation_id": "payload"}),
        Some("header"),
    )
    .await;
    let (v, m) = next_json(&mut db, "high_water from usercount").await;
    assert_eq!(v, json!({"chat_count": 1, "connected_count": 5}));
    assert_eq!(cid_of(&m), Some("header"));
}

#[tokio::test]
async fn events_without_an_id_get_a_generated_one_shared_by_their_effects() {
    let w = World::start().await;
    let _bot = w.bot().await;
    let mut db = w.sub("rosey.db.>").await;
    w.join("amy", 0.0).await;
    w.join("bob", 0.0).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (_, m) = next_json(&mut db, "join events").await;
        ids.push((
            cid_of(&m).unwrap().to_owned(),
            event_id_of(&m).unwrap().to_owned(),
        ));
    }
    assert_eq!(ids[0].0, ids[1].0);
    assert_eq!(ids[2].0, ids[3].0);
    assert_ne!(ids[0].0, ids[2].0, "each event gets its own id");
    assert!(ids[0].0.starts_with("rosey-"), "{}", ids[0].0);
    assert_eq!(ids[1].1, format!("{}:2", ids[1].0));
}

#[tokio::test]
async fn a_pm_commands_request_replies_and_audits_share_its_id() {
    let w = World::start().await;
    let _bot = w.bot().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _service = responder(&w.client, subjects::QUERY_USER_STATS, move |m| {
        tx.send((cid_of(m).map(str::to_owned), serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()))
            .unwrap();
        Some(json!({"username": "amy", "success": true, "found": false, "message": "No statistics found for user 'amy'"}))
    })
    .await;
    w.join(MOD, 2.0).await;
    w.join("amy", 0.0).await;
    let o = w.command(MOD, "user amy").await;
    assert_eq!(
        o.text,
        "User: amy\nRank: 0.0\nAFK: No\nMuted: No\n\n--- Database Statistics ---\nNo database history for this user"
    );
    assert_eq!(o.result, "success");
    let (cid, body) = rx.recv().await.unwrap();
    assert_eq!(
        cid.as_deref(),
        Some(o.cid.as_str()),
        "the request carries the PM's correlation id"
    );
    assert_eq!(body, json!({"username": "amy"}));
    assert!(o
        .audits
        .iter()
        .all(|(_, id)| id.starts_with(&format!("{}:", o.cid))));
    // Platform actions caused by the command carry it too (checked for PM replies in `command`).
    let mut chat = w
        .sub(platform::out_subject(CHANNEL, platform::action::CHAT))
        .await;
    let o = w.command(MOD, "say x").await;
    let (_, m) = next_json(&mut chat, "say action").await;
    assert_eq!(cid_of(&m), Some(o.cid.as_str()));
}
