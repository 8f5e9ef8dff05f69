//! Test scaffolding: a real nats-server per test, a bot on it, a client playing the chat site,
//! and waits that end on the event that proves something happened (or on a deadline that says
//! what was awaited).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use natskit::NatsServer;
use rosey_bot::{BotHandle, Config, PlatformSender};
use rosey_protocol::headers::{CORRELATION_ID, EVENT_ID};
use rosey_protocol::platform::{self, PlatformUser, PmAction};
use rosey_protocol::subjects;
use serde::Serialize;
use serde_json::Value;

/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const CHANNEL: &str = "lobby";
pub const MOD: &str = "mod";

/// One test's world: a nats-server and a client that plays the chat site and the observer.
pub struct World {
    pub nats: NatsServer,
    pub client: Client,
}

impl World {
    pub async fn start() -> World {
        World::start_with(natskit::ServerOptions::default()).await
    }

    /// A world whose nats-server is started with `opts`.
    pub async fn start_with(opts: natskit::ServerOptions) -> World {
        // Bot logs show up for failing tests (RUST_LOG=rosey_bot=debug for more).
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "rosey_bot=info".to_owned());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(filter)
            .try_init();
        let nats = tokio::task::spawn_blocking(move || NatsServer::start_with(opts))
            .await
            .unwrap()
            .expect("starting nats-server");
        let client = async_nats::connect(nats.url())
            .await
            .expect("test client connects");
        World { nats, client }
    }

    pub fn url(&self) -> String {
        self.nats.url().to_owned()
    }

    /// A bot config for tests: background tasks effectively off (tests that need them shorten
    /// the interval), quick requests.
    pub fn bot_config(&self) -> Config {
        let mut c = Config::new(self.url(), CHANNEL);
        c.intervals.user_count = Duration::from_secs(3600);
        c.intervals.status = Duration::from_secs(3600);
        c.intervals.outbound = Duration::from_secs(3600);
        c.requests.retry_backoff = Duration::from_millis(20);
        c
    }

    pub async fn bot(&self) -> BotHandle {
        rosey_bot::spawn(self.bot_config())
            .await
            .expect("bot starts")
    }

    pub async fn bot_with(
        &self,
        config: Config,
        sender: Option<Arc<dyn PlatformSender>>,
    ) -> BotHandle {
        rosey_bot::spawn_with_sender(config, sender)
            .await
            .expect("bot starts")
    }

    /// Subscribes and confirms the subscription with the server before returning.
    pub async fn sub(&self, subject: impl Into<String>) -> Subscriber {
        let s = self.client.subscribe(subject.into()).await.unwrap();
        rosey_bot::round_trip(&self.client).await.unwrap();
        s
    }

    /// Publishes a platform event (`kind` under `in.`) with an optional correlation header.
    pub async fn send<T: Serialize + ?Sized>(&self, kind: &str, payload: &T, cid: Option<&str>) {
        self.send_raw(
            kind,
            Bytes::from(rosey_protocol::to_seed_json(payload)),
            cid,
        )
        .await;
    }

    pub async fn send_raw(&self, kind: &str, payload: Bytes, cid: Option<&str>) {
        let subject = platform::in_subject(CHANNEL, kind);
        match cid {
            Some(cid) => {
                let mut h = HeaderMap::new();
                h.insert(CORRELATION_ID, cid);
                self.client
                    .publish_with_headers(subject, h, payload)
                    .await
                    .unwrap();
            }
            None => self.client.publish(subject, payload).await.unwrap(),
        }
        self.client.flush().await.unwrap();
    }

    pub async fn join(&self, user: &str, rank: f64) {
        self.send(
            platform::kind::USER_JOIN,
            &PlatformUser::new(user, rank),
            None,
        )
        .await;
    }

    pub async fn chat(&self, user: &str, content: &str, cid: Option<&str>) {
        let m = platform::ChatMessage {
            user: user.into(),
            content: content.into(),
            correlation_id: None,
        };
        self.send(platform::kind::MESSAGE, &m, cid).await;
    }

    pub async fn pm(&self, user: &str, content: &str, cid: Option<&str>) {
        let m = platform::PrivateMessage {
            user: user.into(),
            content: content.into(),
            correlation_id: None,
        };
        self.send(platform::kind::PM, &m, cid).await;
    }

    /// Sends a PM command as `user` and waits for its final audit record; returns the reply
    /// chunks and the audits. All reply PMs are published before the final audit on the same
    /// connection, so once the audit is here the replies are already in their subscription.
    pub async fn command(&self, user: &str, command: &str) -> Outcome {
        let mut out = self
            .sub(platform::out_subject(CHANNEL, platform::action::PM))
            .await;
        let mut audits = self.sub(subjects::PM_COMMAND).await;
        let cid = format!("cmd-{}", NEXT_CID.fetch_add(1, Ordering::Relaxed));
        self.pm(user, command, Some(&cid)).await;
        let mut records = Vec::new();
        loop {
            let (v, m) = next_json(&mut audits, &format!("the final audit of {command:?}")).await;
            if cid_of(&m) != Some(cid.as_str()) {
                continue;
            }
            let done = v["result"] != "pending";
            records.push((v, event_id_of(&m).unwrap_or_default().to_owned()));
            if done {
                break;
            }
        }
        let mut chunks = Vec::new();
        while let Some(Some(m)) = out.next().now_or_never() {
            assert_eq!(
                cid_of(&m),
                Some(cid.as_str()),
                "reply PM carries the command's correlation id"
            );
            let pm: PmAction = serde_json::from_slice(&m.payload).unwrap();
            // PMs to others are actions of the command (`pm <user> <msg>`), not replies.
            if pm.user == user {
                chunks.push(pm.content);
            }
        }
        let last = &records.last().expect("at least the final record").0;
        Outcome {
            text: chunks.join("\n"),
            result: last["result"].as_str().unwrap_or_default().to_owned(),
            error: last["error"].as_str().map(str::to_owned),
            chunks,
            audits: records,
            cid,
        }
    }
}

static NEXT_CID: AtomicU64 = AtomicU64::new(1);

/// What one PM command produced.
#[derive(Debug)]
pub struct Outcome {
    /// The reply chunks joined with newlines (empty when nothing was sent).
    pub text: String,
    pub chunks: Vec<String>,
    /// The final audit's result and error.
    pub result: String,
    pub error: Option<String>,
    /// Every audit record with its event id, in order.
    pub audits: Vec<(Value, String)>,
    pub cid: String,
}

/// The next PM action to `user`.
pub async fn reply_to(out: &mut Subscriber, user: &str) -> PmAction {
    loop {
        let m = next(out, &format!("a PM reply to {user}")).await;
        let pm: PmAction = serde_json::from_slice(&m.payload).unwrap();
        if pm.user == user {
            return pm;
        }
    }
}

/// The next message on `sub`, or a panic naming what was awaited.
pub async fn next(sub: &mut Subscriber, what: &str) -> Message {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("subscription closed while waiting for {what}"),
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// The next message's JSON payload.
pub async fn next_json(sub: &mut Subscriber, what: &str) -> (Value, Message) {
    let m = next(sub, what).await;
    (serde_json::from_slice(&m.payload).unwrap_or(Value::Null), m)
}

pub fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

pub fn cid_of(m: &Message) -> Option<&str> {
    header(m, CORRELATION_ID)
}

pub fn event_id_of(m: &Message) -> Option<&str> {
    header(m, EVENT_ID)
}

/// Polls `check` until it returns `Some`, or panics after the deadline naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Answers requests on `subject` with `reply(request)`; `None` leaves a request unanswered.
pub async fn responder<F>(
    client: &Client,
    subject: &str,
    mut reply: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(&Message) -> Option<Value> + Send + 'static,
{
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    rosey_bot::round_trip(client).await.unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let (Some(r), Some(to)) = (reply(&m), m.reply.clone()) {
                client
                    .publish(to, Bytes::from(serde_json::to_vec(&r).unwrap()))
                    .await
                    .unwrap();
            }
        }
    })
}
