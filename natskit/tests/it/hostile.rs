//! The patched client (`natskit/vendor/async-nats`) against a real server: every frame of the
//! hostile battery arrives marked, in order with valid messages, and the connection stays up.
//! Unpatched, each of these frames ended the subscriber's connection.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use natskit::{client, hostile, NatsServer};

#[tokio::test]
async fn unreadable_frames_arrive_marked_and_the_connection_stays_up() {
    let server = NatsServer::start().unwrap();
    let disconnects = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&disconnects);
    let sub_client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let counter = Arc::clone(&counter);
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    counter.fetch_add(1, Relaxed);
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let mut sub = sub_client.subscribe("t.>").await.unwrap();
    sub_client.flush().await.unwrap();
    // flush() does not wait for the server: a round trip proves the SUB is active.
    let mut inbox = sub_client.subscribe("t.probe").await.unwrap();
    sub_client.publish("t.probe", "p".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .unwrap();
    let _probe = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap();

    let frames = hostile::frames("t.event", "t", b"{\"n\": 1}");
    let valid = hostile::pub_frame(b"t.event", None, b"valid");
    let mut wire: Vec<hostile::Frame> = Vec::new();
    for f in &frames {
        wire.push(f.clone());
        wire.push(hostile::Frame {
            kind: "valid",
            bytes: valid.clone(),
            exact_subject: true,
        });
    }
    let addr = format!("127.0.0.1:{}", server.port());
    tokio::task::spawn_blocking(move || hostile::publish_raw(&addr, &wire))
        .await
        .unwrap()
        .unwrap();

    for f in &frames {
        let marked = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{} never arrived", f.kind))
            .unwrap();
        let reason = client::malformed(&marked)
            .unwrap_or_else(|| panic!("{} arrived unmarked: {marked:?}", f.kind));
        assert!(!reason.is_empty());
        assert_eq!(marked.payload.as_ref(), b"{\"n\": 1}", "{}", f.kind);
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.payload.as_ref(), b"valid", "after {}", f.kind);
        assert_eq!(client::malformed(&next), None);
    }
    assert_eq!(disconnects.load(Relaxed), 0);
    assert_eq!(
        sub_client.connection_state(),
        async_nats::connection::State::Connected
    );
}
