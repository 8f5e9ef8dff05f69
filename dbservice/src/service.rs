//! Starting, running and stopping the service: NATS connections, the event intake (core
//! subscription or durable consumer), the request handlers, the writer thread and the task that
//! publishes commit notices and acknowledgements.
//!
//! Two NATS connections: `events` carries the event intake, commit notices and JetStream acks;
//! `requests` carries only requests and replies, so a query never queues behind an event flood in
//! the same socket.
//!
//! In core mode the intake is ONE wildcard subscription, `rosey.db.>`, filtered to the event
//! subjects. One subscription keeps the publisher's order across subjects (a join is applied
//! before that user's first chat line); separate subscriptions per subject would not.

use crate::config::{Config, Mode};
use crate::db::{Database, OpenOptions};
use crate::durable::{self, ConsumerSettings};
use crate::events;
use crate::nats_connect;
use crate::requests::Reply;
use crate::requests::{ReadPool, RequestContext};
use crate::stats::Stats;
use crate::writer::{Event, Outcome, Writer, WriterConfig, WriterMsg};
use anyhow::{anyhow, Context as _};
use async_nats::{Client, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use rosey_protocol::db::{CommitNotice, ErrorReply, ServiceStats};
use rosey_protocol::{headers, subjects, to_seed_json};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Concurrent request handlers at most; further requests wait in their subscription.
const MAX_CONCURRENT_REQUESTS: usize = 256;
/// Deadline of the readiness round trip.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages per pull request in durable mode.
const PULL_BATCH: usize = 1000;

/// Runs the service until `shutdown` is cancelled (or a fatal error), then stops cleanly: stops
/// taking messages, commits what was received, publishes the last commit notices and acks,
/// drains NATS and closes the database (ending open user sessions).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown.clone()).await?;
    tracing::info!("ready");
    running.wait(shutdown).await
}

/// Starts the service in-process and returns once it is ready: every subscription is active at
/// the server (proven by a request to its own `rosey.db.service.ping` through the server).
pub async fn spawn(config: Config) -> anyhow::Result<ServiceHandle> {
    let token = CancellationToken::new();
    let running = start(config, token.clone()).await?;
    let stats = Arc::clone(&running.stats);
    let mode = running.mode;
    let wait_token = token.clone();
    let task = tokio::spawn(running.wait(wait_token));
    Ok(ServiceHandle {
        token,
        task: Some(task),
        stats,
        mode,
    })
}

/// A service started by [`spawn`]. Dropping it cancels the service without waiting; call
/// [`ServiceHandle::shutdown`] for a clean, awaited stop.
#[derive(Debug)]
pub struct ServiceHandle {
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    stats: Arc<Stats>,
    mode: Mode,
}

impl ServiceHandle {
    /// Stops the service cleanly and waits until it has (see [`run`]).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        match self.task.take() {
            Some(task) => task.await.context("service task panicked")?,
            None => Ok(()),
        }
    }

    /// The counters `rosey.db.service.ping` would report now.
    pub fn stats(&self) -> ServiceStats {
        self.stats.snapshot(self.mode.as_str())
    }

    /// Cancelling this token stops the service (as [`ServiceHandle::shutdown`] does, without
    /// waiting).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// True once the service has stopped (after a shutdown or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Everything a started service owns.
struct Running {
    mode: Mode,
    stats: Arc<Stats>,
    shutdown_timeout: Duration,
    events_client: Client,
    requests_client: Client,
    pool: Arc<ReadPool>,
    /// Stops the intake, the request handlers and maintenance (in that order, see `stop`).
    intake_stop: CancellationToken,
    requests_stop: CancellationToken,
    intake: JoinHandle<anyhow::Result<()>>,
    request_tasks: TaskTracker,
    maintenance: Option<JoinHandle<()>>,
    writer_done: oneshot::Receiver<Result<(), crate::db::DbError>>,
    /// `writer_done` has already completed (a oneshot must not be polled again).
    writer_finished: bool,
    publisher: JoinHandle<()>,
    fatal: mpsc::Receiver<anyhow::Error>,
    /// The exclusive lock on `<db>.lock`, released when the service has stopped.
    _lock: File,
}

/// `<db path>.lock`.
fn lock_path(db_path: &Path) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// One service per database: takes an exclusive OS lock (`flock`) on `<db>.lock` and writes
/// this process's pid into it. Two services applying the same events would store everything
/// twice. The lock goes away with the process, even after `kill -9`.
fn lock_database(db_path: &Path) -> anyhow::Result<File> {
    let path = lock_path(db_path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            anyhow::bail!(
                "database {} is already in use by another rosey-dbservice (pid {holder}, lock file {}); \
                 only one service may write a database",
                db_path.display(),
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    if shutdown.is_cancelled() {
        anyhow::bail!("shutdown requested before start");
    }
    let stats = Arc::new(Stats::default());

    // Database first: a bad path fails before anything touches NATS. One service per database.
    let db_path = config.db_path.clone();
    let lock = {
        let db_path = db_path.clone();
        tokio::task::spawn_blocking(move || lock_database(&db_path))
            .await
            .context("lock task failed")??
    };
    let options = OpenOptions {
        read_only: false,
        synchronous_full: config.synchronous_full,
    };
    let read_connections = config.read_connections;
    let (db, pool) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Database, ReadPool)> {
            let mut db = Database::with_options(&db_path, options);
            db.open()
                .with_context(|| format!("opening database {}", db_path.display()))?;
            let pool =
                ReadPool::open(&db_path, read_connections).context("opening read connections")?;
            Ok((db, pool))
        })
        .await
        .context("database open task failed")??;
    let pool = Arc::new(pool);

    let name = config
        .nats
        .name
        .clone()
        .unwrap_or_else(|| "rosey-dbservice".to_owned());
    let events_opts = nats_connect::connect_options(&config.nats, &name, Arc::clone(&stats))
        .await?
        .subscription_capacity(config.subscription_capacity)
        .client_capacity(65_536);
    let events_client = nats_connect::connect(&config.nats, events_opts).await?;
    let requests_opts = nats_connect::connect_options(
        &config.nats,
        &format!("{name}-requests"),
        Arc::clone(&stats),
    )
    .await?;
    let requests_client = nats_connect::connect(&config.nats, requests_opts).await?;
    tracing::info!(url = %config.nats.redacted_url(), mode = config.mode.as_str(), instance = %stats.instance, "connected to nats");

    // Subscribe before spawning anything, so a failure here leaves nothing running: dropped
    // subscribers unsubscribe, dropped clients disconnect, the database closes on drop.
    let intake_source = match config.mode {
        Mode::Core => IntakeSource::Core(
            events_client
                .subscribe("rosey.db.>")
                .await
                .context("subscribing to rosey.db.>")?,
        ),
        Mode::Durable => {
            let js = async_nats::jetstream::new(events_client.clone());
            let settings = ConsumerSettings {
                ack_wait: config.ack_wait,
                max_ack_pending: config.max_ack_pending,
                max_deliver: config.max_deliver,
                stream_replicas: config.stream_replicas,
            };
            let d = durable::ensure(&js, settings).await?;
            let messages =
                durable::messages(&d.consumer, PULL_BATCH.min(config.max_ack_pending)).await?;
            IntakeSource::Durable(Box::new(DurableSource {
                consumer: d.consumer,
                messages,
                stream_id: d.stream_id,
            }))
        }
    };

    // The intake's SUB must be active at the server before anyone can see the service as ready
    // (a ping answered by the requests connection), or early events would be lost in core mode.
    // Nothing orders two connections, so prove it with a round trip on this one first.
    round_trip(&events_client)
        .await
        .context("confirming the event subscription")?;

    let mut request_subs = Vec::with_capacity(subjects::REQUEST_SUBJECTS.len());
    // SERVICE_PING last: when the readiness ping is answered, the server has processed every
    // earlier SUB on this connection.
    let mut request_subjects: Vec<&str> = subjects::REQUEST_SUBJECTS
        .iter()
        .copied()
        .filter(|s| *s != subjects::SERVICE_PING)
        .collect();
    request_subjects.push(subjects::SERVICE_PING);
    for subject in request_subjects {
        let sub = requests_client
            .subscribe(subject)
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        request_subs.push(sub);
    }

    // Fault injection, off unless configured (see `DelayedNotices`).
    let delayed_notices = match config.fault_notice_delay {
        Some(delay) if config.commit_notices => Some(
            DelayedNotices::spawn(events_client.clone(), delay)
                .context("spawning the notice delay thread")?,
        ),
        _ => None,
    };

    // From here on nothing fails before the readiness check.
    let (writer_tx, writer_rx) = mpsc::channel(config.channel_capacity);
    let (outcome_tx, outcome_rx) = mpsc::channel::<Outcome>(1024);
    let (done_tx, writer_done) = oneshot::channel();
    let writer = Writer::new(
        db,
        writer_rx,
        outcome_tx,
        Arc::clone(&stats),
        WriterConfig {
            max_events: config.batch_max_events,
            max_wait: config.batch_max_wait,
            linger: config.batch_linger,
            dedupe: config.mode == Mode::Durable,
            max_deliver: match config.mode {
                Mode::Durable => config.max_deliver,
                Mode::Core => 0,
            },
        },
    );
    std::thread::Builder::new()
        .name("rosey-db-writer".to_owned())
        .spawn(move || {
            let result = writer.run();
            if let Err(e) = &result {
                tracing::error!(error = %e, "writer stopped with an error");
            }
            let _ = done_tx.send(result);
        })
        .context("spawning the writer thread")?;

    let publisher = tokio::spawn(publish_outcomes(
        outcome_rx,
        events_client.clone(),
        config.commit_notices,
        stats.instance.clone(),
        delayed_notices,
    ));

    let (fatal_tx, fatal) = mpsc::channel(4);
    let intake_stop = CancellationToken::new();
    let intake_ctx = IntakeContext {
        writer: writer_tx.clone(),
        stats: Arc::clone(&stats),
        max_payload_bytes: config.max_payload_bytes,
        max_buffered_bytes: config.max_buffered_bytes,
        client: events_client.clone(),
    };
    let intake = tokio::spawn(run_intake(
        intake_source,
        intake_ctx,
        intake_stop.clone(),
        config.shutdown_timeout,
        fatal_tx.clone(),
    ));

    let requests_stop = CancellationToken::new();
    let request_tasks = TaskTracker::new();
    let ctx = Arc::new(RequestContext {
        pool: Arc::clone(&pool),
        writer: writer_tx.clone(),
        stats: Arc::clone(&stats),
        mode: config.mode.as_str(),
        max_payload_bytes: config.max_payload_bytes,
        fault_stats_delay: config.fault_stats_delay,
        write_timeout: config.shutdown_timeout,
        max_reply_bytes: reply_budget(requests_client.server_info().max_payload),
    });
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    for sub in request_subs {
        request_tasks.spawn(serve_requests(
            sub,
            requests_client.clone(),
            Arc::clone(&ctx),
            Arc::clone(&limit),
            requests_stop.clone(),
            request_tasks.clone(),
            config.shutdown_timeout,
        ));
    }
    drop(ctx);

    let maintenance = config.maintenance_interval.map(|interval| {
        tokio::spawn(run_maintenance(
            interval,
            writer_tx.clone(),
            requests_stop.clone(),
        ))
    });
    drop(writer_tx);

    let running = Running {
        mode: config.mode,
        stats,
        shutdown_timeout: config.shutdown_timeout,
        events_client,
        requests_client,
        pool,
        intake_stop,
        requests_stop,
        intake,
        request_tasks,
        maintenance,
        writer_done,
        writer_finished: false,
        publisher,
        fatal,
        _lock: lock,
    };
    // Readiness, in two round trips through the server. The server handles each connection's
    // commands in order, but nothing orders two connections. First the requests connection pings
    // itself: its answer proves every SUB of that connection is active. Then the events
    // connection pings: its answer proves that connection's SUBs (sent before) are active too.
    // (Asking from the events connection first could time out: its wildcard subscription also
    // matches the ping subject, so the server would not report "no responders".)
    // On a cluster the two connections may sit on different servers, and the requests
    // connection's interest reaches the other server a moment later: until then its answer is
    // "no responders", so that is asked again (start-up, nothing is timed) until the deadline.
    let ready = async {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for (what, client) in [("requests", &running.requests_client), ("events", &running.events_client)] {
            loop {
                match tokio::time::timeout_at(deadline, client.request(subjects::SERVICE_PING, Bytes::new())).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e))
                        if e.kind() == async_nats::RequestErrorKind::NoResponders
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Err(e)) => return Err(anyhow!("readiness ping from the {what} connection failed: {e}")),
                    Err(_) => {
                        return Err(anyhow!("readiness ping from the {what} connection not answered within {READY_TIMEOUT:?}"))
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    match ready {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop().await.ok();
            Err(e)
        }
    }
}

/// Bytes a reply body may take: the server's max payload less room for headers (which count
/// towards it). Falls back to NATS's default of 1 MiB if the server did not say.
fn reply_budget(max_payload: usize) -> usize {
    let max = if max_payload == 0 {
        1 << 20
    } else {
        max_payload
    };
    max.saturating_sub(1024).max(64)
}

/// Publishes to a private inbox on `client` and waits for the message: the server handles a
/// connection's commands in order, so every SUB sent before is active once this returns.
async fn round_trip(client: &Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    match timeout(READY_TIMEOUT, sub.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(anyhow!("connection closed during the round trip")),
        Err(_) => Err(anyhow!(
            "round trip through the server not completed within {READY_TIMEOUT:?}"
        )),
    }
}

impl Running {
    async fn wait(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let fatal = tokio::select! {
            _ = shutdown.cancelled() => None,
            Some(e) = self.fatal.recv() => Some(e),
            r = &mut self.writer_done => {
                self.writer_finished = true;
                Some(match r {
                    Ok(Ok(())) => anyhow!("the writer thread stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("the writer thread failed"),
                    Err(_) => anyhow!("the writer thread panicked"),
                })
            }
        };
        if let Some(e) = &fatal {
            tracing::error!(error = format!("{e:#}"), "fatal error; stopping");
        } else {
            tracing::info!("shutting down");
        }
        let stopped = self.stop().await;
        match (fatal, stopped) {
            (Some(e), _) => Err(e),
            (None, r) => r,
        }
    }

    /// The clean stop, every step with a deadline. Continues past failed steps and reports the
    /// first failure.
    async fn stop(self) -> anyhow::Result<()> {
        let d = self.shutdown_timeout;
        let mut first_error: Option<anyhow::Error> = None;
        let mut note = |e: anyhow::Error| {
            tracing::warn!(error = format!("{e:#}"), "shutdown step failed");
            first_error.get_or_insert(e);
        };

        // 1. Stop taking events; what was already delivered still goes to the writer.
        self.intake_stop.cancel();
        match timeout(d, self.intake).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => note(e.context("stopping the intake")),
            Ok(Err(e)) => note(anyhow!("intake task panicked: {e}")),
            Err(_) => note(anyhow!("intake did not stop within {d:?}")),
        }
        // 2. Stop requests (in-flight ones finish) and maintenance.
        self.requests_stop.cancel();
        self.request_tasks.close();
        if timeout(d, self.request_tasks.wait()).await.is_err() {
            note(anyhow!("request handlers did not finish within {d:?}"));
        }
        if let Some(m) = self.maintenance {
            if timeout(d, m).await.is_err() {
                note(anyhow!("maintenance did not stop within {d:?}"));
            }
        }
        // 3. Every queue sender is gone now: the writer commits the rest and closes the database.
        if !self.writer_finished {
            match timeout(d, self.writer_done).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => note(anyhow::Error::new(e).context("closing the database")),
                Ok(Err(_)) => note(anyhow!("the writer thread panicked")),
                Err(_) => note(anyhow!("writer did not commit and close within {d:?}")),
            }
        }
        // 4. The last commit notices and acks.
        if timeout(d, self.publisher).await.is_err() {
            note(anyhow!(
                "publishing the last commit notices did not finish within {d:?}"
            ));
        }
        // 5. Flush and drain both connections.
        for (what, client) in [
            ("events", &self.events_client),
            ("requests", &self.requests_client),
        ] {
            match timeout(d, client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => note(anyhow!("flushing the {what} connection: {e}")),
                Err(_) => note(anyhow!(
                    "flushing the {what} connection took longer than {d:?}"
                )),
            }
            if let Err(e) = client.drain().await {
                tracing::debug!(error = %e, what, "draining connection");
            }
        }
        // 6. Read connections.
        self.pool.close();
        tracing::info!(stats = ?self.stats.snapshot(self.mode.as_str()), "stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

enum IntakeSource {
    Core(Subscriber),
    Durable(Box<DurableSource>),
}

struct DurableSource {
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    messages: async_nats::jetstream::consumer::pull::Stream,
    /// See [`durable::Durable::stream_id`].
    stream_id: String,
}

struct IntakeContext {
    writer: mpsc::Sender<WriterMsg>,
    stats: Arc<Stats>,
    max_payload_bytes: usize,
    max_buffered_bytes: usize,
    client: Client,
}

/// Where a JetStream message came from (durable mode).
struct JsDelivery<'a> {
    stream_id: &'a str,
    stream_seq: Option<u64>,
    deliveries: u64,
}

impl IntakeContext {
    /// Validates one event message into a writer message. `None` if it is not an event or was
    /// rejected (counted, and answered: terminated in durable mode, an error reply in core mode
    /// when it came with a reply subject).
    async fn decode(&self, msg: async_nats::Message, js: Option<JsDelivery<'_>>) -> Option<Event> {
        let subject = msg.subject.as_str();
        let unreadable = natskit::client::malformed(&msg);
        if !events::is_event_subject(subject) {
            // Requests and our own commit notices share the wildcard; the requests connection
            // answers (and counts) a request. Anything else the client could not read (a
            // subject that is not UTF-8) is counted here.
            let ours =
                subject == subjects::COMMITTED || subjects::REQUEST_SUBJECTS.contains(&subject);
            if let (Some(reason), false) = (unreadable, ours) {
                self.stats.received.fetch_add(1, Relaxed);
                self.reject(subject, reason.to_owned(), js.is_some(), msg.reply)
                    .await;
            }
            return None;
        }
        self.stats.received.fetch_add(1, Relaxed);
        let parsed = match unreadable {
            Some(reason) => Err(format!("malformed message: {reason}")),
            None => events::parse(subject, &msg.payload, self.max_payload_bytes),
        };
        let op = match parsed {
            Ok(op) => op,
            Err(reason) => {
                self.reject(subject, reason, js.is_some(), msg.reply).await;
                return None;
            }
        };
        let id = events::event_id(msg.headers.as_ref()).unwrap_or_else(|reason| {
            self.stats.malformed(subject, &reason);
            None
        });
        Some(match js {
            Some(d) => Event {
                dedupe_key: id
                    .clone()
                    .or_else(|| d.stream_seq.map(|s| format!("js:{}:{s}", d.stream_id))),
                id,
                op,
                ack: msg.reply,
                bytes: 0,
                deliveries: d.deliveries,
                stream_seq: d.stream_seq,
            },
            None => Event {
                op,
                id,
                dedupe_key: None,
                ack: None,
                bytes: msg.payload.len(),
                deliveries: 1,
                stream_seq: None,
            },
        })
    }

    /// Counts a rejected event as malformed and answers it: terminated in durable mode (nothing
    /// to commit, never redeliver), an error reply in core mode when it came with a reply subject.
    async fn reject(&self, subject: &str, reason: String, durable: bool, reply: Option<Subject>) {
        self.stats.malformed(subject, &reason);
        match (durable, reply) {
            (true, Some(reply)) => {
                if let Err(e) = self.client.publish(reply, durable::TERM).await {
                    tracing::warn!(error = %e, "terminating a malformed message");
                }
            }
            (false, Some(reply)) => {
                let body = to_seed_json(&ErrorReply::new(reason));
                if let Err(e) = self.client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "answering a malformed event");
                }
            }
            _ => {}
        }
    }

    /// Core mode: decodes one message into `pending` unless the bytes waiting for the writer
    /// would exceed the bound, in which case it is dropped and counted.
    async fn accept_core(&self, msg: async_nats::Message, pending: &mut VecDeque<Event>) {
        let Some(ev) = self.decode(msg, None).await else {
            return;
        };
        let buffered = self.stats.buffered_bytes.load(Relaxed) as usize;
        if buffered.saturating_add(ev.bytes) > self.max_buffered_bytes {
            self.stats
                .dropped(ev.op.subject(), ev.bytes, self.max_buffered_bytes);
            return;
        }
        self.stats
            .buffered_bytes
            .fetch_add(ev.bytes as u64, Relaxed);
        pending.push_back(ev);
    }

    /// Durable mode: validates one message and queues it for the writer (back-pressure:
    /// `max_ack_pending` bounds what is in flight). Returns false if the writer is gone.
    async fn handle_js(&self, msg: async_nats::jetstream::Message, stream_id: &str) -> bool {
        let info = msg.info().ok();
        let js = JsDelivery {
            stream_id,
            stream_seq: info.as_ref().map(|i| i.stream_sequence),
            deliveries: info.as_ref().map_or(1, |i| i.delivered.max(1) as u64),
        };
        match self.decode(msg.message, Some(js)).await {
            Some(ev) => self.writer.send(WriterMsg::Event(ev)).await.is_ok(),
            None => true,
        }
    }
}

async fn run_intake(
    source: IntakeSource,
    ctx: IntakeContext,
    stop: CancellationToken,
    deadline: Duration,
    fatal: mpsc::Sender<anyhow::Error>,
) -> anyhow::Result<()> {
    let result = match source {
        IntakeSource::Core(sub) => core_intake(sub, &ctx, &stop, deadline).await,
        IntakeSource::Durable(d) => {
            let d = *d;
            durable_intake(d.consumer, d.messages, &d.stream_id, &ctx, &stop).await
        }
    };
    if let Err(e) = &result {
        if !stop.is_cancelled() {
            let _ = fatal.try_send(anyhow!("event intake failed: {e:#}"));
        }
    }
    result
}

async fn core_intake(
    mut sub: Subscriber,
    ctx: &IntakeContext,
    stop: &CancellationToken,
    deadline: Duration,
) -> anyhow::Result<()> {
    // The subscription is read as fast as messages come, so the NATS client's own buffer (which
    // counts messages, not bytes) stays short; what the writer has not taken yet waits here,
    // bounded in bytes together with the writer's queue.
    let mut pending: VecDeque<Event> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = ctx.writer.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(ev) = pending.pop_front() {
                        permit.send(WriterMsg::Event(ev));
                    }
                }
                Err(_) => anyhow::bail!("the writer stopped"),
            },
            msg = sub.next() => match msg {
                Some(msg) => ctx.accept_core(msg, &mut pending).await,
                None => anyhow::bail!("the event subscription ended (connection closed)"),
            },
        }
    }
    // Unsubscribe at the server, then apply everything it had already sent.
    sub.drain()
        .await
        .context("draining the event subscription")?;
    let until = Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, sub.next()).await {
            Ok(Some(msg)) => {
                ctx.accept_core(msg, &mut pending).await;
                while let Some(ev) = pending.pop_front() {
                    if ctx.writer.send(WriterMsg::Event(ev)).await.is_err() {
                        anyhow::bail!("the writer stopped while draining");
                    }
                }
            }
            Ok(None) => {
                while let Some(ev) = pending.pop_front() {
                    if ctx.writer.send(WriterMsg::Event(ev)).await.is_err() {
                        anyhow::bail!("the writer stopped while draining");
                    }
                }
                return Ok(());
            }
            Err(_) => {
                anyhow::bail!("draining the event subscription took longer than {deadline:?}")
            }
        }
    }
}

async fn durable_intake(
    consumer: async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    mut messages: async_nats::jetstream::consumer::pull::Stream,
    stream_id: &str,
    ctx: &IntakeContext,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = messages.next() => match msg {
                Some(Ok(msg)) => {
                    backoff = Duration::from_millis(100);
                    if !ctx.handle_js(msg, stream_id).await {
                        anyhow::bail!("the writer stopped");
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "jetstream consumer error");
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                    if matches!(e.kind(), K::ConsumerDeleted | K::RequestLimitExceeded | K::PushBasedConsumer) {
                        anyhow::bail!("jetstream consumer unusable: {e}");
                    }
                }
                None => {
                    // The pull stream ended; start a new one after a pause.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    messages = durable::messages(&consumer, PULL_BATCH).await?;
                }
            },
        }
    }
    // Apply what the client already holds; anything else is redelivered after ack_wait.
    while let Some(Some(msg)) = messages.next().now_or_never() {
        match msg {
            Ok(msg) => {
                if !ctx.handle_js(msg, stream_id).await {
                    anyhow::bail!("the writer stopped while draining");
                }
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// Fault injection (off unless [`Config::fault_notice_delay`] is set): publishes each commit
/// notice a fixed delay after its transaction committed, so the benchmark's regression gate can be
/// tested against a known, small latency regression.
///
/// Why a thread of its own, between the outcome task and the connection:
/// * Only the notice waits. The writer hands its outcome over and goes on committing; the outcome
///   task still publishes acks at once and takes the next outcome; nothing else shares the wait.
/// * The wait counts from [`Outcome::committed_at`] (taken in the writer just after the commit),
///   not from when the notice got here, so notices queued behind one another are not delayed
///   cumulatively: under load each waits only what is left of its own delay.
/// * Precision: tokio's timer rounds every deadline up to the next whole millisecond, which would
///   turn a delay of e.g. 100 µs into more than 1 ms. `std::thread::sleep` overshoots only by the
///   OS timer slack (50 µs by default on Linux) and a wake-up, without spinning a core.
/// * Order is kept: one FIFO queue, one thread, deadlines in commit order.
///
/// The queue is bounded (1024 notices): back-pressure reaches the outcome task, and through it
/// the writer, only if more transactions commit within one delay than that, far beyond the
/// sub-millisecond to tens-of-milliseconds delays this is meant for.
struct DelayedNotices {
    tx: mpsc::Sender<(std::time::Instant, Bytes)>,
    /// Closed (the sender dropped) when the thread has published everything and exited.
    done: oneshot::Receiver<()>,
}

impl DelayedNotices {
    fn spawn(client: Client, delay: Duration) -> std::io::Result<DelayedNotices> {
        let (tx, mut rx) = mpsc::channel::<(std::time::Instant, Bytes)>(1024);
        let (done_tx, done) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("rosey-notice-delay".to_owned())
            .spawn(move || {
                let _done = done_tx;
                while let Some((committed_at, payload)) = rx.blocking_recv() {
                    let at = committed_at + delay;
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    if let Err(e) = runtime.block_on(client.publish(subjects::COMMITTED, payload)) {
                        tracing::warn!(error = %e, "publishing commit notice");
                    }
                }
            })?;
        tracing::warn!(
            ?delay,
            "FAULT INJECTION: every commit notice is delayed (for testing the benchmark gate only)"
        );
        Ok(DelayedNotices { tx, done })
    }

    /// Queues a notice to be published `delay` after `committed_at`.
    async fn send(&self, committed_at: std::time::Instant, payload: Bytes) {
        if self.tx.send((committed_at, payload)).await.is_err() {
            tracing::warn!("the notice delay thread is gone; commit notice dropped");
        }
    }

    /// Waits until every queued notice has been published.
    async fn finish(self) {
        drop(self.tx);
        let _ = self.done.await;
    }
}

async fn publish_outcomes(
    mut rx: mpsc::Receiver<Outcome>,
    client: Client,
    notices: bool,
    instance: String,
    delayed: Option<DelayedNotices>,
) {
    while let Some(o) = rx.recv().await {
        if notices && !(o.ids.is_empty() && o.duplicate_ids.is_empty()) {
            let notice = CommitNotice {
                batch: o.batch,
                ids: o.ids,
                events: o.events,
                duplicate_ids: o.duplicate_ids,
                instance: instance.clone(),
            };
            let payload: Bytes = to_seed_json(&notice).into();
            match &delayed {
                Some(d) => {
                    let committed_at = o.committed_at.unwrap_or_else(std::time::Instant::now);
                    d.send(committed_at, payload).await;
                }
                None => {
                    if let Err(e) = client.publish(subjects::COMMITTED, payload).await {
                        tracing::warn!(error = %e, "publishing commit notice");
                    }
                }
            }
        }
        for (subjects, payload) in [
            (o.ack, durable::ACK),
            (o.term, durable::TERM),
            (o.nak, durable::NAK_1S),
        ] {
            for s in subjects {
                if let Err(e) = client.publish(s, payload.clone()).await {
                    tracing::warn!(error = %e, "publishing jetstream acknowledgement");
                }
            }
        }
    }
    if let Some(d) = delayed {
        d.finish().await;
    }
}

async fn serve_requests(
    mut sub: Subscriber,
    client: Client,
    ctx: Arc<RequestContext>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
    deadline: Duration,
) {
    let spawn_one = |msg: async_nats::Message, permit| {
        let client = client.clone();
        let ctx = Arc::clone(&ctx);
        tracker.spawn(async move {
            let _permit = permit;
            let reply = ctx.handle_message(&msg).await;
            match msg.reply {
                Some(to) => match publish_reply(&client, &ctx, to, reply).await {
                    Ok(()) => {
                        ctx.stats.requests.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        ctx.stats.reply_failures.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, subject = %msg.subject, "publishing reply");
                    }
                },
                None => tracing::debug!(subject = %msg.subject, "request without a reply subject"),
            }
        });
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => {
                    let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
                    spawn_one(msg, permit);
                }
                None => return,
            },
        }
    }
    // Answer the requests already delivered, then stop.
    if sub.drain().await.is_err() {
        return;
    }
    let until = Instant::now() + deadline;
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, sub.next()).await {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        spawn_one(msg, permit);
    }
}

/// Sends a reply: flagged with [`headers::TRUNCATED`] if it was cut to fit; replaced by an error
/// reply (counted) if it still does not fit the server's max payload.
async fn publish_reply(
    client: &Client,
    ctx: &RequestContext,
    to: async_nats::Subject,
    reply: Reply,
) -> anyhow::Result<()> {
    let Reply {
        mut body,
        truncated,
    } = reply;
    if body.len() > ctx.max_reply_bytes {
        ctx.stats.reply_failures.fetch_add(1, Relaxed);
        tracing::warn!(
            bytes = body.len(),
            max = ctx.max_reply_bytes,
            "reply larger than the server's max payload; answering with an error"
        );
        body = to_seed_json(&ErrorReply::new(format!(
            "reply of {} bytes exceeds the server's max payload ({} bytes usable); ask for less",
            body.len(),
            ctx.max_reply_bytes
        )));
    }
    match truncated {
        Some(flag) => {
            ctx.stats.truncated_replies.fetch_add(1, Relaxed);
            let mut h = async_nats::HeaderMap::new();
            h.insert(headers::TRUNCATED, flag.as_str());
            client.publish_with_headers(to, h, body.into()).await?;
        }
        None => client.publish(to, body.into()).await?,
    }
    Ok(())
}

async fn run_maintenance(
    interval: Duration,
    writer: mpsc::Sender<WriterMsg>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (tx, rx) = oneshot::channel();
        if writer.send(WriterMsg::Maintenance(tx)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx => match r {
                Ok(Ok(report)) => tracing::info!(?report, "periodic maintenance done"),
                Ok(Err(e)) => tracing::error!(error = %e, "periodic maintenance failed"),
                Err(_) => return,
            },
        }
    }
}
