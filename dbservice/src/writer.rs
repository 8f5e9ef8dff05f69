//! The single writer: one OS thread owns the read-write connection and applies every write,
//! many per transaction (group commit).
//!
//! It takes the first message from its bounded queue, opens a transaction, applies that message
//! and whatever else is already queued, until the queue is empty, the batch holds `max_events` or
//! `max_wait` has passed since the first one, prunes `recent_chat` once, and commits. It never
//! waits for more (adaptive group commit): an idle service commits each event at once, a busy one
//! batches what arrived while the previous transaction ran. Only then does anything learn of the result:
//! write requests get their reply, and an [`Outcome`] (event ids for the commit notice, JetStream
//! acks) goes to the async side.
//!
//! Isolation without per-event cost: events are applied without savepoints. If one fails, the
//! transaction is rolled back and the batch replayed with a savepoint around every event, so only
//! the failing event is lost (it is counted `failed`). In durable mode an event whose error is
//! permanent (constraint, type mismatch, too big: [`DbError::is_permanent`]) is terminated;
//! any other error (disk full, I/O, busy) and a failed commit are negatively acknowledged and come
//! back later, until the delivery that reaches `max_deliver`: then the event is recorded in
//! `dead_letters`, counted, logged and terminated, so nothing is redelivered forever.
//!
//! Maintenance does not stall writes for long: its cleanup is one transaction, then free pages
//! are given back a few at a time ([`crate::db::VACUUM_STEP_PAGES`]), one step whenever the
//! queue is empty or a batch has committed, until none is left; only then does it reply.

use crate::db::{Database, DbError, DeadLetter, MaintenanceReport, VACUUM_STEP_PAGES};
use crate::events::WriteOp;
use crate::stats::{LogLimiter, Stats};
use async_nats::Subject;
use rosey_protocol::db::OutboundMessage;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One event to apply.
#[derive(Debug)]
pub struct Event {
    pub op: WriteOp,
    /// The `Rosey-Event-Id` header, echoed in the commit notice.
    pub id: Option<String>,
    /// Key recorded in `processed_events` to skip redeliveries (durable mode only).
    pub dedupe_key: Option<String>,
    /// JetStream ack subject (durable mode only).
    pub ack: Option<Subject>,
    /// Payload bytes counted in [`Stats::buffered_bytes`] until the writer takes the event.
    pub bytes: usize,
    /// Durable mode: this delivery's number (1 for the first).
    pub deliveries: u64,
    /// Durable mode: the stream sequence, for dead letters.
    pub stream_seq: Option<u64>,
}

/// A write made on behalf of a request, answered after its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// `outbound.enqueue`.
    Enqueue(String),
    /// `outbound.get`: claim the rows it returns.
    ClaimOutbound {
        limit: i64,
        max_retries: i64,
        lease_secs: i64,
        max_bytes: usize,
    },
    /// `outbound.confirm_sent`.
    ConfirmSent(i64),
}

/// The committed result of a [`RequestOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestValue {
    Id(i64),
    /// The claimed rows and how many were eligible.
    Claimed(Vec<OutboundMessage>, usize),
    Found(bool),
}

/// The reply channel of a request write.
pub type RequestReply = oneshot::Sender<Result<RequestValue, String>>;

/// A message for the writer thread.
#[derive(Debug)]
pub enum WriterMsg {
    Event(Event),
    /// A request's write: the reply carries its result once committed.
    Request {
        op: RequestOp,
        reply: RequestReply,
    },
    /// Run maintenance between transactions.
    Maintenance(oneshot::Sender<Result<MaintenanceReport, String>>),
}

/// What a finished transaction means for NATS: sent to the async side after the commit.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Transaction number (1, 2, ...); 0 if nothing was committed.
    pub batch: u64,
    /// Event ids whose effects were committed, in order.
    pub ids: Vec<String>,
    /// Event ids skipped as already committed.
    pub duplicate_ids: Vec<String>,
    /// Events committed or skipped as duplicates (with or without ids).
    pub events: u64,
    /// JetStream messages to acknowledge (committed or duplicate).
    pub ack: Vec<Subject>,
    /// JetStream messages whose write failed on its own: terminate, do not redeliver.
    pub term: Vec<Subject>,
    /// JetStream messages of a transaction that could not commit: redeliver later.
    pub nak: Vec<Subject>,
    /// Taken just after the commit (`None` if the transaction did not commit): what
    /// `Config::fault_notice_delay` counts from.
    pub committed_at: Option<Instant>,
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_events: usize,
    /// Longest a transaction stays open taking already-queued events (0: one event per
    /// transaction). The writer never waits for events that have not arrived.
    pub max_wait: Duration,
    /// Opt-in: when the queue runs empty, wait up to this long after the batch's first event for
    /// more (capped by `max_wait`); zero never waits.
    pub linger: Duration,
    /// Record and check `processed_events` (durable mode).
    pub dedupe: bool,
    /// Durable mode: the consumer's `max_deliver` (0: unlimited). A retryable failure on that
    /// delivery makes the event a dead letter instead of a redelivery.
    pub max_deliver: u64,
}

enum Item {
    Event(Event),
    Request { op: RequestOp, reply: RequestReply },
}

#[derive(Debug)]
enum ItemResult {
    Applied { value: Option<RequestValue> },
    Duplicate,
    Failed { reason: String, retry: bool },
}

struct Batch {
    items: Vec<Item>,
    results: Vec<ItemResult>,
    chat_inserted: bool,
    /// Savepoint mode, after a failure in this batch.
    safe: bool,
    /// No transaction is open (BEGIN failed): everything fails.
    dead: Option<String>,
}

/// The writer thread's state.
pub struct Writer {
    db: Database,
    rx: mpsc::Receiver<WriterMsg>,
    out: mpsc::Sender<Outcome>,
    stats: Arc<Stats>,
    cfg: WriterConfig,
    batch_no: u64,
    error_log: LogLimiter,
    /// Maintenance in progress: its reply and what its cleanup deleted.
    maintenance: Option<(
        oneshot::Sender<Result<MaintenanceReport, String>>,
        MaintenanceReport,
    )>,
}

impl Writer {
    pub fn new(
        db: Database,
        rx: mpsc::Receiver<WriterMsg>,
        out: mpsc::Sender<Outcome>,
        stats: Arc<Stats>,
        cfg: WriterConfig,
    ) -> Writer {
        Writer {
            db,
            rx,
            out,
            stats,
            cfg,
            batch_no: 0,
            error_log: LogLimiter::new(10, Duration::from_secs(10)),
            maintenance: None,
        }
    }

    /// Runs until every sender of the queue is gone and the queue is empty, then closes the
    /// database (which ends open user sessions).
    pub fn run(mut self) -> Result<(), DbError> {
        loop {
            let msg = if self.maintenance.is_some() {
                // Between vacuum steps, writes go first.
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.maintenance_step();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // Shutting down: do not hold the close up for the rest of the vacuum;
                        // the free pages stay free and the next run gives them back.
                        if let Some((reply, report)) = self.maintenance.take() {
                            tracing::info!(
                                ?report,
                                "maintenance: vacuum interrupted by shutdown; the next run resumes it"
                            );
                            let _ = reply.send(Err("interrupted by shutdown".to_owned()));
                        }
                        break;
                    }
                }
            } else {
                match self.rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                }
            };
            let mut next = Some(msg);
            while let Some(msg) = next.take() {
                next = match msg {
                    WriterMsg::Maintenance(reply) => {
                        self.start_maintenance(reply);
                        None
                    }
                    other => {
                        let deferred = self.batch(other);
                        if self.maintenance.is_some() {
                            self.maintenance_step();
                        }
                        deferred
                    }
                };
            }
        }
        tracing::debug!(
            batches = self.batch_no,
            "writer queue closed; closing database"
        );
        self.db.close()
    }

    /// Maintenance, first part: the cleanup transaction. The vacuum steps follow between batches.
    fn start_maintenance(&mut self, reply: oneshot::Sender<Result<MaintenanceReport, String>>) {
        if self.maintenance.is_some() {
            let _ = reply.send(Err("maintenance is already running".to_owned()));
            return;
        }
        match self.db.maintenance_cleanup() {
            Ok(report) => self.maintenance = Some((reply, report)),
            Err(e) => {
                tracing::error!(error = %e, "database maintenance failed");
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    /// One vacuum step; when no free page is left, `ANALYZE` and the reply.
    fn maintenance_step(&mut self) {
        let result = match self.db.incremental_vacuum_step(VACUUM_STEP_PAGES) {
            Ok(0) => self.db.analyze().map(|()| true),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        let done = match result {
            Ok(false) => return,
            Ok(true) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Some((reply, report)) = self.maintenance.take() {
            match &done {
                Ok(()) => tracing::info!(?report, "database maintenance done"),
                Err(e) => tracing::error!(error = %e, "database maintenance failed"),
            }
            let _ = reply.send(done.map(|()| report));
        }
    }

    /// One transaction. Returns a control message that ended the batch early, to run after it.
    fn batch(&mut self, first: WriterMsg) -> Option<WriterMsg> {
        let mut b = Batch {
            items: Vec::with_capacity(self.cfg.max_events.min(4096)),
            results: Vec::with_capacity(self.cfg.max_events.min(4096)),
            chat_inserted: false,
            safe: false,
            dead: None,
        };
        if let Err(e) = self.db.begin() {
            b.dead = Some(format!("cannot begin transaction: {e}"));
        }
        self.push(&mut b, first);
        // Adaptive group commit: take what is already queued, never wait for more. An event that
        // arrives at an idle service commits at once; under load, events pile up while the
        // previous transaction commits and the next one takes them all. `max_wait` only bounds
        // how long a transaction stays open taking queued events, so the first event of a batch
        // is not held behind an endless stream.
        let opened = Instant::now();
        let deadline = opened + self.cfg.max_wait;
        let linger_until = opened + self.cfg.linger.min(self.cfg.max_wait);
        let mut deferred = None;
        while b.items.len() < self.cfg.max_events && Instant::now() < deadline {
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= linger_until {
                        break;
                    }
                    // Only with an opt-in linger. A thread sleep, not a tokio timer: a tokio
                    // timer rounds up to its 1 ms tick. This is the writer's own thread.
                    std::thread::sleep(linger_until - now);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if let WriterMsg::Maintenance(_) = msg {
                deferred = Some(msg);
                break;
            }
            self.push(&mut b, msg);
        }
        self.finish(b);
        deferred
    }

    fn push(&mut self, b: &mut Batch, msg: WriterMsg) {
        let item = match msg {
            WriterMsg::Event(e) => {
                if e.bytes > 0 {
                    self.stats.buffered_bytes.fetch_sub(e.bytes as u64, Relaxed);
                }
                Item::Event(e)
            }
            WriterMsg::Request { op, reply } => Item::Request { op, reply },
            WriterMsg::Maintenance(_) => unreachable!("control messages end the batch before push"),
        };
        let result = if let Some(reason) = &b.dead {
            ItemResult::Failed {
                reason: reason.clone(),
                retry: true,
            }
        } else if b.safe {
            let r = self.apply_with_savepoint(&item, &mut b.chat_inserted);
            self.check_transaction(b, &r);
            r
        } else {
            match self.apply(&item, &mut b.chat_inserted) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "write failed; replaying the batch with savepoints");
                    b.items.push(item);
                    self.replay(b);
                    return;
                }
            }
        };
        b.items.push(item);
        b.results.push(result);
    }

    fn apply(&self, item: &Item, chat_inserted: &mut bool) -> Result<ItemResult, DbError> {
        match item {
            Item::Event(ev) => {
                if self.cfg.dedupe {
                    if let Some(key) = &ev.dedupe_key {
                        if !self.db.mark_event_processed(key)? {
                            return Ok(ItemResult::Duplicate);
                        }
                    }
                }
                *chat_inserted |= ev.op.apply(&self.db)?.chat_inserted;
                Ok(ItemResult::Applied { value: None })
            }
            Item::Request { op, .. } => {
                let value = match op {
                    RequestOp::Enqueue(message) => {
                        RequestValue::Id(self.db.enqueue_outbound_message(message)?)
                    }
                    RequestOp::ClaimOutbound {
                        limit,
                        max_retries,
                        lease_secs,
                        max_bytes,
                    } => {
                        let (rows, eligible) = self.db.claim_outbound_messages(
                            *limit,
                            *max_retries,
                            *lease_secs,
                            *max_bytes,
                        )?;
                        RequestValue::Claimed(rows, eligible)
                    }
                    RequestOp::ConfirmSent(id) => {
                        RequestValue::Found(self.db.mark_outbound_sent(*id)?)
                    }
                };
                Ok(ItemResult::Applied { value: Some(value) })
            }
        }
    }

    /// SQLite rolls the whole transaction back on some errors (disk full, I/O, busy). After
    /// that nothing of this batch is in a transaction any more: fail the rest (retryable), so
    /// the commit fails and every event of the batch comes back, instead of later savepoints
    /// silently committing on their own.
    fn check_transaction(&self, b: &mut Batch, r: &ItemResult) {
        if matches!(r, ItemResult::Failed { retry: true, .. })
            && b.dead.is_none()
            && !self.db.in_transaction()
        {
            b.dead = Some("the transaction was rolled back by SQLite after an error".to_owned());
        }
    }

    fn apply_with_savepoint(&self, item: &Item, chat_inserted: &mut bool) -> ItemResult {
        if let Err(e) = self.db.savepoint() {
            return ItemResult::Failed {
                reason: format!("savepoint: {e}"),
                retry: true,
            };
        }
        let mut inserted = false;
        match self.apply(item, &mut inserted) {
            Ok(r) => match self.db.release() {
                Ok(()) => {
                    *chat_inserted |= inserted;
                    r
                }
                Err(e) => ItemResult::Failed {
                    reason: format!("release savepoint: {e}"),
                    retry: true,
                },
            },
            Err(e) => {
                if self.db.in_transaction() {
                    if let Err(e2) = self.db.rollback_to_savepoint() {
                        tracing::error!(error = %e2, "rolling back to savepoint");
                    }
                }
                ItemResult::Failed {
                    reason: e.to_string(),
                    retry: !e.is_permanent(),
                }
            }
        }
    }

    /// Rolls back the fast-path transaction and re-applies every item with savepoints.
    fn replay(&mut self, b: &mut Batch) {
        let _ = self.db.rollback();
        b.safe = true;
        b.chat_inserted = false;
        b.results.clear();
        if let Err(e) = self.db.begin() {
            b.dead = Some(format!("cannot begin transaction: {e}"));
        }
        for i in 0..b.items.len() {
            let r = match &b.dead {
                Some(reason) => ItemResult::Failed {
                    reason: reason.clone(),
                    retry: true,
                },
                None => {
                    let r = self.apply_with_savepoint(&b.items[i], &mut b.chat_inserted);
                    self.check_transaction(b, &r);
                    r
                }
            };
            b.results.push(r);
        }
    }

    fn finish(&mut self, mut b: Batch) {
        let mut commit_error = b.dead.clone();
        if commit_error.is_none() {
            if b.chat_inserted {
                if let Err(e) = self.db.prune_recent_chat() {
                    self.log_error("pruning recent_chat", &e.to_string());
                }
            }
            if let Err(e) = self.db.commit() {
                let _ = self.db.rollback();
                commit_error = Some(format!("commit failed: {e}"));
            }
        }
        if let Some(reason) = &commit_error {
            self.log_error("write transaction failed", reason);
            for r in &mut b.results {
                if !matches!(r, ItemResult::Failed { .. }) {
                    *r = ItemResult::Failed {
                        reason: reason.clone(),
                        retry: true,
                    };
                }
            }
        } else {
            self.batch_no += 1;
            self.stats.batches.fetch_add(1, Relaxed);
        }

        let mut out = Outcome {
            batch: if commit_error.is_none() {
                self.batch_no
            } else {
                0
            },
            committed_at: commit_error.is_none().then(Instant::now),
            ..Default::default()
        };
        let (mut committed, mut duplicates, mut failed) = (0u64, 0u64, 0u64);
        let mut dead_letters = Vec::new();
        for (item, result) in b.items.into_iter().zip(b.results) {
            match item {
                Item::Event(ev) => match result {
                    ItemResult::Applied { .. } => {
                        committed += 1;
                        out.ids.extend(ev.id);
                        out.ack.extend(ev.ack);
                    }
                    ItemResult::Duplicate => {
                        duplicates += 1;
                        out.duplicate_ids.extend(ev.id);
                        out.ack.extend(ev.ack);
                    }
                    ItemResult::Failed { reason, retry } => {
                        failed += 1;
                        let last_delivery = self.cfg.max_deliver > 0
                            && ev.ack.is_some()
                            && ev.deliveries >= self.cfg.max_deliver;
                        if !retry {
                            self.log_error("event write failed", &reason);
                            out.term.extend(ev.ack);
                        } else if last_delivery {
                            tracing::error!(
                                subject = ev.op.subject(),
                                event_id = ev.id.as_deref(),
                                stream_seq = ev.stream_seq,
                                deliveries = ev.deliveries,
                                reason,
                                "event failed on its last allowed delivery: dead letter"
                            );
                            dead_letters.push(DeadLetter {
                                subject: ev.op.subject().to_owned(),
                                event_id: ev.id.clone(),
                                stream_seq: ev.stream_seq,
                                deliveries: ev.deliveries,
                                error: reason,
                                detail: Some(format!("{:?}", ev.op)),
                            });
                            out.term.extend(ev.ack);
                        } else {
                            out.nak.extend(ev.ack);
                        }
                    }
                },
                Item::Request { reply, .. } => {
                    let r = match result {
                        ItemResult::Applied { value: Some(v) } => Ok(v),
                        ItemResult::Failed { reason, .. } => Err(reason),
                        other => Err(format!("unexpected request result {other:?}")),
                    };
                    let _ = reply.send(r);
                }
            }
        }
        out.events = committed + duplicates;
        // The batch's counts first: whoever sees a dead letter counted also sees the failed
        // delivery that made it one.
        self.stats.committed.fetch_add(committed, Relaxed);
        self.stats.duplicates.fetch_add(duplicates, Relaxed);
        self.stats.failed.fetch_add(failed, Relaxed);
        for d in &dead_letters {
            self.stats.dead_letters.fetch_add(1, Relaxed);
            if let Err(e) = self.db.record_dead_letter(d) {
                // Still counted and logged above; the table is the convenience.
                self.log_error("recording a dead letter", &e.to_string());
            }
        }
        let needed = !(out.ids.is_empty()
            && out.duplicate_ids.is_empty()
            && out.ack.is_empty()
            && out.term.is_empty()
            && out.nak.is_empty());
        if needed && self.out.blocking_send(out).is_err() {
            tracing::debug!("outcome receiver gone");
        }
    }

    fn log_error(&self, what: &str, reason: &str) {
        if let Some(suppressed) = self.error_log.allow() {
            tracing::error!(reason, suppressed, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    fn event(op: WriteOp, id: &str) -> WriterMsg {
        WriterMsg::Event(Event {
            op,
            id: Some(id.to_owned()),
            dedupe_key: Some(id.to_owned()),
            ack: Some(Subject::from(format!("ack.{id}"))),
            bytes: 0,
            deliveries: 1,
            stream_seq: None,
        })
    }

    fn chat(message: &str) -> WriteOp {
        WriteOp::ChatMessage {
            username: "amy".into(),
            message: message.into(),
        }
    }

    /// Runs a writer over `msgs` (all queued before it starts, so they form one batch) and
    /// returns its outcomes and the database path.
    fn run_writer(
        setup: &str,
        msgs: Vec<WriterMsg>,
        dedupe: bool,
    ) -> (Vec<Outcome>, Arc<Stats>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::new(dir.path().join("w.db"));
        db.open().unwrap();
        db.conn().unwrap().execute_batch(setup).unwrap();
        let (tx, rx) = mpsc::channel(msgs.len().max(1));
        let (out_tx, mut out_rx) = mpsc::channel(16);
        for m in msgs {
            tx.try_send(m).unwrap();
        }
        drop(tx);
        let stats = Arc::new(Stats::default());
        let cfg = WriterConfig {
            max_events: 100,
            max_wait: Duration::from_secs(10),
            linger: Duration::ZERO,
            dedupe,
            max_deliver: 0,
        };
        let writer = Writer::new(db, rx, out_tx, Arc::clone(&stats), cfg);
        std::thread::spawn(move || writer.run())
            .join()
            .unwrap()
            .unwrap();
        let mut outcomes = Vec::new();
        while let Ok(o) = out_rx.try_recv() {
            outcomes.push(o);
        }
        (outcomes, stats, dir)
    }

    /// A writer whose queue stays open, with the given window; returns the queue, the outcomes
    /// and the thread.
    #[allow(clippy::type_complexity)]
    fn open_writer(
        max_wait: Duration,
        linger: Duration,
    ) -> (
        mpsc::Sender<WriterMsg>,
        mpsc::Receiver<Outcome>,
        std::thread::JoinHandle<Result<(), DbError>>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::new(dir.path().join("w.db"));
        db.open().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel(64);
        let cfg = WriterConfig {
            max_events: 100,
            max_wait,
            linger,
            dedupe: false,
            max_deliver: 0,
        };
        let writer = Writer::new(db, rx, out_tx, Arc::new(Stats::default()), cfg);
        (tx, out_rx, std::thread::spawn(move || writer.run()), dir)
    }

    #[test]
    fn an_event_at_an_idle_writer_commits_without_waiting_out_the_window() {
        // A 60 s window with the queue still open: a writer that waited for more events before
        // committing would hold this one for a minute.
        let (tx, mut out_rx, handle, _dir) = open_writer(Duration::from_secs(60), Duration::ZERO);
        tx.blocking_send(event(chat("alone"), "alone")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let o = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), out_rx.recv()).await })
            .expect("committed long before the 60 s window ran out")
            .unwrap();
        assert_eq!(o.ids, ["alone"]);
        drop(tx);
        handle.join().unwrap().unwrap();
    }

    #[test]
    fn an_opt_in_linger_gathers_events_that_arrive_meanwhile() {
        // A 2 s linger: the first event's transaction waits for the second, which arrives
        // 50 ms later, and both commit together (without a linger they would not: see the
        // idle-writer test).
        let (tx, mut out_rx, handle, _dir) =
            open_writer(Duration::from_secs(60), Duration::from_secs(2));
        tx.blocking_send(event(chat("first"), "first")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        tx.blocking_send(event(chat("second"), "second")).unwrap();
        drop(tx);
        handle.join().unwrap().unwrap();
        let o = out_rx.try_recv().unwrap();
        assert_eq!(o.ids, ["first", "second"]);
    }

    #[test]
    fn the_window_bounds_a_batch_of_queued_events() {
        // A zero window: every transaction closes after its first event, however many wait.
        let (tx, mut out_rx, handle, _dir) = open_writer(Duration::ZERO, Duration::ZERO);
        for i in 0..5 {
            tx.try_send(event(chat("q"), &format!("q{i}"))).unwrap();
        }
        drop(tx);
        handle.join().unwrap().unwrap();
        let mut sizes = Vec::new();
        while let Ok(o) = out_rx.try_recv() {
            sizes.push(o.ids.len());
        }
        assert_eq!(sizes, [1, 1, 1, 1, 1]);
    }

    #[test]
    fn one_failing_event_does_not_roll_back_the_others() {
        // Without the table, the user-count write fails; the chat lines around it must commit.
        let msgs = vec![
            event(WriteOp::UserJoined("amy".into()), "j"),
            event(chat("a"), "a"),
            event(
                WriteOp::UserCount {
                    chat: 1,
                    connected: 1,
                },
                "bad",
            ),
            event(chat("b"), "b"),
        ];
        // A constraint (here a trigger's) is permanent: that event is terminated, not retried.
        let (outcomes, stats, dir) = run_writer(
            "CREATE TRIGGER reject BEFORE INSERT ON user_count_history \
             BEGIN SELECT RAISE(ABORT, 'rejected'); END;",
            msgs,
            true,
        );
        assert_eq!(outcomes.len(), 1, "one transaction");
        let o = &outcomes[0];
        assert_eq!(o.ids, ["j", "a", "b"]);
        assert_eq!(
            o.term.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["ack.bad"]
        );
        assert_eq!(o.ack.len(), 3);
        assert!(o.nak.is_empty());
        assert_eq!(stats.committed.load(Relaxed), 3);
        assert_eq!(stats.failed.load(Relaxed), 1);
        let db = Database::open_path(dir.path().join("w.db")).unwrap();
        assert_eq!(db.recent_chat_count().unwrap(), 2);
        assert_eq!(
            db.get_user_stats("amy").unwrap().unwrap().total_chat_lines,
            2
        );
        assert!(
            !db.is_event_processed("bad").unwrap(),
            "the failed event's id is rolled back too"
        );
    }

    #[test]
    fn transient_error_in_the_savepoint_replay_is_redelivered_not_terminated() {
        // "Disk full": the database may not grow, so the big line cannot be stored now. That is
        // not the event's fault; it must come back later (nak), not be terminated.
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::new(dir.path().join("w.db"));
        db.open().unwrap();
        let pages: i64 = db
            .conn()
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        db.conn()
            .unwrap()
            .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 4))
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(4);
        tx.try_send(event(chat("small"), "small")).unwrap();
        tx.try_send(event(chat(&"z".repeat(200_000)), "big"))
            .unwrap();
        drop(tx);
        let stats = Arc::new(Stats::default());
        let cfg = WriterConfig {
            max_events: 100,
            max_wait: Duration::from_secs(10),
            linger: Duration::ZERO,
            dedupe: true,
            max_deliver: 0,
        };
        Writer::new(db, rx, out_tx, Arc::clone(&stats), cfg)
            .run()
            .unwrap();
        let o = out_rx.try_recv().unwrap();
        assert!(o.term.is_empty(), "terminated: {o:?}");
        // SQLITE_FULL may roll the whole transaction back: then the small line comes back too.
        let nak: Vec<&str> = o.nak.iter().map(|s| s.as_str()).collect();
        assert!(nak.contains(&"ack.big"), "{o:?}");
        assert_eq!(o.ack.len() + o.nak.len(), 2, "{o:?}");
    }

    #[test]
    fn writes_commit_while_maintenance_runs() {
        // A database with a lot of free space to give back: a full VACUUM takes a while and,
        // run on the writer thread, used to hold every write until it finished.
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::new(dir.path().join("w.db"));
        db.open().unwrap();
        db.conn()
            .unwrap()
            .execute_batch(
                "CREATE TABLE junk(x); \
                 WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) \
                 INSERT INTO junk SELECT randomblob(1000) FROM c; DROP TABLE junk;",
            )
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let (m_tx, m_rx) = oneshot::channel();
        tx.try_send(WriterMsg::Maintenance(m_tx)).unwrap();
        for i in 0..50 {
            tx.try_send(event(chat(&format!("during {i}")), &format!("e{i}")))
                .unwrap();
        }
        let stats = Arc::new(Stats::default());
        let cfg = WriterConfig {
            max_events: 100,
            max_wait: Duration::from_secs(10),
            linger: Duration::ZERO,
            dedupe: false,
            max_deliver: 0,
        };
        let writer = Writer::new(db, rx, out_tx, Arc::clone(&stats), cfg);
        let handle = std::thread::spawn(move || writer.run());
        // The moment maintenance reports done, how many of the writes queued behind it were
        // already committed?
        let watcher = {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                let r = m_rx.blocking_recv().expect("maintenance replies");
                (r, stats.committed.load(Relaxed))
            })
        };
        let (report, committed_when_done) = watcher.join().unwrap();
        report.expect("maintenance succeeded");
        drop(tx);
        handle.join().unwrap().unwrap();
        while out_rx.try_recv().is_ok() {}
        assert_eq!(
            committed_when_done, 50,
            "writes queued behind maintenance committed while it ran"
        );
        let db = Database::open_path(dir.path().join("w.db")).unwrap();
        let free: i64 = db
            .conn()
            .unwrap()
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(free, 0, "maintenance still gave the free space back");
        assert_eq!(db.recent_chat_count().unwrap(), 50);
    }

    #[test]
    fn duplicates_are_skipped_and_acknowledged() {
        let msgs = vec![
            event(chat("x"), "same"),
            event(chat("x"), "same"),
            event(chat("y"), "other"),
        ];
        let (outcomes, stats, dir) = run_writer("", msgs, true);
        let o = &outcomes[0];
        assert_eq!(o.ids, ["same", "other"]);
        assert_eq!(o.duplicate_ids, ["same"]);
        assert_eq!((o.ack.len(), o.events), (3, 3));
        assert_eq!(stats.duplicates.load(Relaxed), 1);
        let db = Database::open_path(dir.path().join("w.db")).unwrap();
        assert_eq!(db.recent_chat_count().unwrap(), 2);
    }

    #[test]
    fn enqueue_replies_after_commit_and_closing_ends_sessions() {
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let msgs = vec![
            event(WriteOp::UserJoined("amy".into()), "j"),
            WriterMsg::Request {
                op: RequestOp::Enqueue("hello".into()),
                reply: reply_tx,
            },
        ];
        let (_, stats, dir) = run_writer("", msgs, false);
        assert_eq!(reply_rx.try_recv().unwrap(), Ok(RequestValue::Id(1)));
        assert_eq!(stats.batches.load(Relaxed), 1);
        let db = Database::open_path(dir.path().join("w.db")).unwrap();
        assert_eq!(db.get_unsent_outbound_messages(10, 3).unwrap().len(), 1);
        assert_eq!(
            db.get_user_stats("amy")
                .unwrap()
                .unwrap()
                .current_session_start,
            None
        );
    }
}
