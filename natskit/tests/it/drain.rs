//! The patched client's subscription drain (`natskit/vendor/async-nats`, PATCHED.md): after
//! `Subscriber::drain`, every message the server routed to the subscription before it processed
//! the UNSUB is still delivered, then the stream ends. Unpatched, the client dropped the
//! subscription one poll after writing the UNSUB, and what was still on the wire was lost: the
//! database service lost events at a graceful stop that way.

use std::time::Duration;

use futures::StreamExt as _;
use natskit::{hostile, NatsServer};

#[tokio::test]
async fn a_drained_subscription_gets_everything_routed_before_the_unsub() {
    drain_after_a_burst(Drain::Subscription).await;
}

#[tokio::test]
async fn a_drained_connection_delivers_everything_routed_before_the_unsub_then_closes() {
    drain_after_a_burst(Drain::Connection).await;
}

enum Drain {
    Subscription,
    Connection,
}

/// Runs on the tests' current-thread runtime on purpose: while it publishes with blocking I/O,
/// the subscriber's connection task cannot run, so the server holds the messages in its
/// outbound buffer and the socket when the drain starts, as a busy service's connection would.
async fn drain_after_a_burst(how: Drain) {
    const N: usize = 20_000;
    let server = NatsServer::start().unwrap();
    let sub_client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = sub_client.subscribe("d.>").await.unwrap();
    // flush() does not wait for the server: a round trip proves the SUB is active.
    sub_client.publish("d.probe", "p".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the probe arrives")
        .unwrap();

    // 20 MB (under the server's 64 MB slow-consumer limit): more than the sockets hold.
    let payload = vec![b'x'; 1024];
    let frame = hostile::Frame {
        kind: "valid",
        bytes: hostile::pub_frame(b"d.event", None, &payload),
        exact_subject: true,
    };
    let frames = vec![frame; N];
    // PUBs then PING/PONG on one connection: at the PONG the server has routed all N.
    hostile::publish_raw(&format!("127.0.0.1:{}", server.port()), &frames).unwrap();

    match how {
        Drain::Subscription => sub.drain().await.unwrap(),
        Drain::Connection => sub_client.drain().await.unwrap(),
    }
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(m)) => {
                assert_eq!(m.payload.len(), payload.len());
                got += 1;
            }
            Ok(None) => break,
            Err(_) => panic!("the drained subscription did not end within 10 s ({got} of {N})"),
        }
    }
    assert_eq!(got, N, "every message routed before the UNSUB is delivered");

    if let Drain::Connection = how {
        sub_client
            .subscribe("d.again")
            .await
            .expect_err("a drained connection takes no new commands");
        return;
    }
    // The connection is still usable: a drain ends one subscription, not the client.
    let mut again = sub_client.subscribe("d.again").await.unwrap();
    sub_client.publish("d.again", "a".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), again.next())
        .await
        .expect("the connection still works after a drain")
        .unwrap();
}
