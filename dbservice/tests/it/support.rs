//! Shared test fixtures: a private nats-server, an in-process service on a temp database, a
//! client that speaks only subjects + JSON, and waits that end on the event that proves
//! completion (a reply, a commit notice), each with a deadline.

use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures::StreamExt as _;
use natskit::NatsServer;
use rosey_dbservice::db::Database;
use rosey_dbservice::{Config, ServiceHandle};
use rosey_protocol::db::{CommitNotice, ServiceStats};
use rosey_protocol::{headers, subjects};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// Every wait in the tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A nats-server with JetStream, a temp dir, a service and a client.
pub struct Env {
    pub server: NatsServer,
    pub dir: TempDir,
    pub client: Client,
    pub service: Option<ServiceHandle>,
}

/// Logs to the test output when `ROSEY_TEST_LOG` is set (e.g. `ROSEY_TEST_LOG=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("ROSEY_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

pub fn start_server() -> NatsServer {
    init_logging();
    NatsServer::start().expect("starting nats-server")
}

pub fn config(server: &NatsServer, db: PathBuf) -> Config {
    let mut c = Config::new(server.url(), db);
    c.commit_notices = true;
    c.maintenance_interval = None;
    c
}

impl Env {
    /// Server + service (core mode, commit notices on) + client.
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Env {
        let server = start_server();
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&server, dir.path().join("bot.db"));
        tweak(&mut c);
        let service = rosey_dbservice::spawn(c).await.expect("service starts");
        let client = connect(&server).await;
        Env {
            server,
            dir,
            client,
            service: Some(service),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("bot.db")
    }

    pub async fn stop_service(&mut self) {
        if let Some(s) = self.service.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn restart_service(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop_service().await;
        let mut c = config(&self.server, self.db_path());
        tweak(&mut c);
        self.service = Some(rosey_dbservice::spawn(c).await.expect("service restarts"));
    }

    pub async fn request(&self, subject: &str, body: &[u8]) -> Vec<u8> {
        request(&self.client, subject, body).await
    }

    pub async fn request_json(&self, subject: &str, body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(&self.request(subject, body).await).expect("reply is JSON")
    }

    pub async fn ping(&self) -> ServiceStats {
        serde_json::from_slice(&self.request(subjects::SERVICE_PING, b"").await)
            .expect("ping reply")
    }

    /// Asks the service (ping) until it reports `n` committed events. For runs without commit
    /// notices; each round is a request, not a sleep.
    pub async fn wait_committed(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let p = self.ping().await;
            if p.committed >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} committed within {DEADLINE:?}",
                p.committed
            );
            tokio::task::yield_now().await;
        }
    }

    /// Subscribes to commit notices and makes sure the server knows before returning.
    pub async fn notices(&self) -> Notices {
        Notices::subscribe(&self.client).await
    }

    /// Publishes events with ids and waits until every id is committed.
    pub async fn publish_committed(&self, events: &[(&str, &str, String)]) {
        let mut n = self.notices().await;
        let mut ids = HashSet::new();
        for (subject, id, body) in events {
            publish_with_id(&self.client, subject, id, body.as_bytes()).await;
            ids.insert(id.to_string());
        }
        n.wait_for(&ids).await;
    }

    /// Round-trips until every message published so far on `self.client` has reached the
    /// service's writer queue and been committed: sends a marker event with an id and waits for
    /// its notice. Events from one connection arrive in order, so all earlier ones are done.
    pub async fn barrier(&self) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "barrier-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut n = self.notices().await;
        publish_with_id(
            &self.client,
            subjects::USER_COUNT,
            &id,
            br#"{"chat_count": 0, "connected_count": 0}"#,
        )
        .await;
        n.wait_for(&HashSet::from([id])).await;
    }
}

pub async fn connect(server: &NatsServer) -> Client {
    async_nats::connect(server.url())
        .await
        .expect("client connects")
}

pub async fn request(client: &Client, subject: &str, body: &[u8]) -> Vec<u8> {
    let reply = tokio::time::timeout(
        DEADLINE,
        client.request(subject.to_owned(), Bytes::copy_from_slice(body)),
    )
    .await
    .unwrap_or_else(|_| panic!("no reply on {subject} within {DEADLINE:?}"))
    .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"));
    reply.payload.to_vec()
}

pub async fn publish_with_id(client: &Client, subject: &str, id: &str, body: &[u8]) {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_ID, id);
    client
        .publish_with_headers(subject.to_owned(), h, Bytes::copy_from_slice(body))
        .await
        .expect("publish");
}

/// A subscription to `rosey.db.committed` with everything it has seen.
pub struct Notices {
    sub: Subscriber,
    pub seen: Vec<CommitNotice>,
    pub ids: HashSet<String>,
}

impl Notices {
    pub async fn subscribe(client: &Client) -> Notices {
        let sub = client.subscribe(subjects::COMMITTED).await.unwrap();
        // The async-nats trap: SUB is only buffered; a flush does not wait for the server. A
        // request round trip on the same connection does.
        let _ = request(client, subjects::SERVICE_PING, b"").await;
        Notices {
            sub,
            seen: Vec::new(),
            ids: HashSet::new(),
        }
    }

    /// Waits until every id in `want` has been listed (as committed or duplicate).
    pub async fn wait_for(&mut self, want: &HashSet<String>) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !want.iter().all(|id| self.ids.contains(id)) {
            let missing = want.iter().filter(|id| !self.ids.contains(*id)).count();
            let msg = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("{missing} ids not committed within {DEADLINE:?}"))
                .expect("notice subscription open");
            let n: CommitNotice = serde_json::from_slice(&msg.payload).expect("notice is JSON");
            self.ids.extend(n.ids.iter().cloned());
            self.ids.extend(n.duplicate_ids.iter().cloned());
            self.seen.push(n);
        }
    }

    /// Every committed id listed so far, with repetitions.
    pub fn committed_ids(&self) -> Vec<String> {
        self.seen
            .iter()
            .flat_map(|n| n.ids.iter().cloned())
            .collect()
    }
}

/// A read-only connection to the service's database, for checking what was stored.
pub fn open_read_only(path: &std::path::Path) -> Database {
    Database::open_read_only(path).expect("open database read-only")
}
