//! Offering load: fixed-rate schedules, paced senders, proof-of-delivery listeners and the
//! measured phase that ties them together (harness/METHODOLOGY.md, "Load").
//!
//! Open loop (the default): message `i` has the intended send time `start + i / rate` (wrk2,
//! OMB's `UniformRateLimiter`). A sender waits for that time, records the send delay
//! (actual − intended) in its own histogram, and publishes; latency runs from the intended time
//! to the proof of delivery, so a stall is charged to every message it delayed. The wait before
//! an intended time lies outside the measured interval of every message, and nothing sleeps
//! between a message's intended time and its proof.
//!
//! Senders are dedicated OS threads, not tokio tasks: tokio's timer has a 1 ms granularity,
//! which would add up to a millisecond of harness-made send delay to every message at the rates
//! we use. A thread sleeps with the kernel's precision (tens of microseconds) and, where a
//! scenario asks for it, spins for the last stretch.

use crate::record::{PhaseRecord, Tracker};
use anyhow::Context;
use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rosey_protocol::{db::CommitNotice, headers, subjects};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Builds the payload of message `i`.
pub type PayloadFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;
/// Decides whether a reply proves success.
pub type ReplyCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Offset of message `i`'s intended send time from the start of a schedule at `rate_per_s`.
/// Computed from `i` directly (not by adding intervals), so the schedule never drifts.
pub fn intended_offset(i: u64, rate_per_s: f64) -> Duration {
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
        return Duration::ZERO;
    }
    let ns = (i as f64) * 1e9 / rate_per_s;
    Duration::from_nanos(ns.round() as u64)
}

/// How many messages a phase of `duration_s` at `rate_per_s` sends (at least one).
pub fn message_count(rate_per_s: f64, duration_s: f64) -> u64 {
    ((rate_per_s * duration_s).round() as u64).max(1)
}

/// A fixed-rate schedule; `rate_per_s == None` is a burst (every message intended at `start`).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub rate_per_s: Option<f64>,
    pub count: u64,
}

impl Schedule {
    pub fn intended(&self, i: u64) -> Instant {
        match self.rate_per_s {
            Some(rate) => self.start + intended_offset(i, rate),
            None => self.start,
        }
    }
}

/// Block the calling (non-async) thread until `deadline`: sleep until `spin` before it, then
/// spin. Returns immediately if the deadline has passed.
pub fn wait_until(deadline: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How a paced sender hands a message to NATS.
#[derive(Debug, Clone)]
pub enum SendKind {
    /// Fire-and-forget publish; proof comes from commit notices.
    Publish,
    /// Publish with reply subject `<inbox>.<index>`; proof is the reply.
    Request { inbox: String },
}

/// What the senders of one phase observed.
#[derive(Debug, Clone)]
pub struct SendStats {
    /// Actual − intended send time.
    pub send_delay: Histogram<u64>,
    /// Publishes the client refused.
    pub errors: u64,
}

/// Headers every harness message carries: its event id and a correlation id (the same value,
/// since one harness message is one event).
pub fn id_headers(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_ID, id);
    h.insert(headers::CORRELATION_ID, id);
    h
}

/// One paced sender thread's job.
struct SenderJob {
    client: Client,
    subject: String,
    kind: SendKind,
    tracker: Arc<Tracker>,
    schedule: Schedule,
    payload: PayloadFn,
    /// This sender sends indices `first, first + stride, ...` below `schedule.count`.
    first: u64,
    stride: u64,
    spin: Duration,
    progress: indicatif::ProgressBar,
}

fn run_sender(job: SenderJob, handle: tokio::runtime::Handle) -> SendStats {
    let mut stats = SendStats {
        send_delay: crate::histogram::new_histogram(),
        errors: 0,
    };
    let mut i = job.first;
    while i < job.schedule.count {
        let intended = job.schedule.intended(i);
        // Outside every message's measured interval: message i's clock starts at `intended`.
        wait_until(intended, job.spin);
        let actual = Instant::now();
        crate::histogram::record_duration(
            &mut stats.send_delay,
            actual.saturating_duration_since(intended),
        );
        let id = job.tracker.id(i);
        job.tracker.mark_sending(i, intended, actual);
        let payload = (job.payload)(i);
        let headers = id_headers(&id);
        let result = match &job.kind {
            SendKind::Publish => handle.block_on(job.client.publish_with_headers(
                job.subject.clone(),
                headers,
                payload,
            )),
            SendKind::Request { inbox } => {
                handle.block_on(job.client.publish_with_reply_and_headers(
                    job.subject.clone(),
                    format!("{inbox}.{i}"),
                    headers,
                    payload,
                ))
            }
        };
        match result {
            Ok(()) => job.tracker.mark_sent(),
            Err(_) => stats.errors += 1,
        }
        job.progress.inc(1);
        i += job.stride;
    }
    // Hand everything buffered to the server before the drain deadline starts counting.
    let _ = handle.block_on(job.client.flush());
    stats
}

/// Run `clients.len()` paced senders over one schedule (sender `k` sends every `k`-th message,
/// which is its own fixed-rate schedule, phase-shifted) and wait for all of them to finish.
#[allow(clippy::too_many_arguments)]
pub async fn send_paced(
    clients: &[Client],
    subject: &str,
    kind: &SendKind,
    tracker: &Arc<Tracker>,
    schedule: Schedule,
    payload: &PayloadFn,
    spin: Duration,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<SendStats> {
    anyhow::ensure!(!clients.is_empty(), "a phase needs at least one sender");
    let handle = tokio::runtime::Handle::current();
    let stride = clients.len() as u64;
    let mut threads = Vec::with_capacity(clients.len());
    for (k, client) in clients.iter().enumerate() {
        let job = SenderJob {
            client: client.clone(),
            subject: subject.to_owned(),
            kind: kind.clone(),
            tracker: tracker.clone(),
            schedule,
            payload: payload.clone(),
            first: k as u64,
            stride,
            spin,
            progress: progress.clone(),
        };
        let handle = handle.clone();
        let thread = std::thread::Builder::new()
            .name(format!("bench-sender-{k}"))
            .spawn(move || run_sender(job, handle))
            .context("spawn sender thread")?;
        threads.push(thread);
    }
    let mut total = SendStats {
        send_delay: crate::histogram::new_histogram(),
        errors: 0,
    };
    for thread in threads {
        let stats = tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("join sender thread")?
            .map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
        total
            .send_delay
            .add(&stats.send_delay)
            .context("merge send-delay histograms")?;
        total.errors += stats.errors;
    }
    Ok(total)
}

/// Connect a client named `name`.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(url)
        .await
        .with_context(|| format!("connect to nats at {url}"))
}

/// Prove that every subscription `client` made so far is active on the server: the server
/// handles one connection's operations in order, so once a message published after them comes
/// back through the server, they are registered.
pub async fn ensure_subscribed(client: &Client) -> anyhow::Result<()> {
    let probe = client.new_inbox();
    let mut sub = client
        .subscribe(probe.clone())
        .await
        .context("subscribe probe")?;
    client
        .publish(probe, Bytes::from_static(b"probe"))
        .await
        .context("publish probe")?;
    client.flush().await.context("flush probe")?;
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .context("timed out waiting for the subscription probe to come back through the server")?
        .context("probe subscription closed")?;
    let _ = sub.unsubscribe().await;
    Ok(())
}

/// Confirm ids from commit notices (`rosey.db.committed`) until cancelled. The instant of
/// arrival is taken before the notice is parsed, once per notice.
pub async fn listen_commit_notices(
    mut sub: Subscriber,
    tracker: Arc<Tracker>,
    cancel: CancellationToken,
) -> u64 {
    let mut malformed = 0;
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let at = Instant::now();
        match serde_json::from_slice::<CommitNotice>(&msg.payload) {
            Ok(notice) => {
                for id in notice.ids.iter().chain(notice.duplicate_ids.iter()) {
                    tracker.confirm(id, at);
                }
            }
            Err(_) => malformed += 1,
        }
    }
    let _ = sub.unsubscribe().await;
    malformed
}

/// Confirm requests from replies on `<inbox>.<index>` until cancelled; a reply that fails
/// `check` is rejected (the message stays unconfirmed and ends up lost).
pub async fn listen_replies(
    mut sub: Subscriber,
    tracker: Arc<Tracker>,
    check: ReplyCheck,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let at = Instant::now();
        let index = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        match index {
            Some(i) if check(&msg.payload) => {
                tracker.confirm_index(i, at);
            }
            _ => tracker.reject(),
        }
    }
    let _ = sub.unsubscribe().await;
}

/// Confirm messages by their event-id header as they arrive on a plain subscription.
pub async fn listen_deliveries(
    mut sub: Subscriber,
    tracker: Arc<Tracker>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let at = Instant::now();
        match msg.headers.as_ref().and_then(|h| h.get(headers::EVENT_ID)) {
            Some(id) => {
                tracker.confirm(id.as_str(), at);
            }
            None => tracker.reject(),
        }
    }
    let _ = sub.unsubscribe().await;
}

/// A naive closed-loop requester (the coordinated-omission counter-example, and service-time
/// probes): one request at a time on the schedule, but never before the previous reply, with
/// latency taken by `tracker`'s origin (the naive measure uses [`crate::record::Origin::Actual`]).
pub async fn run_closed_loop(
    client: &Client,
    subject: &str,
    tracker: &Arc<Tracker>,
    schedule: Schedule,
    payload: &PayloadFn,
    timeout: Duration,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<SendStats> {
    let handle = tokio::runtime::Handle::current();
    let (client, subject, tracker, payload, progress) = (
        client.clone(),
        subject.to_owned(),
        tracker.clone(),
        payload.clone(),
        progress.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("bench-closed-loop".into())
        .spawn(move || {
            let mut stats = SendStats {
                send_delay: crate::histogram::new_histogram(),
                errors: 0,
            };
            for i in 0..schedule.count {
                let intended = schedule.intended(i);
                wait_until(intended, Duration::ZERO);
                let actual = Instant::now();
                crate::histogram::record_duration(
                    &mut stats.send_delay,
                    actual.saturating_duration_since(intended),
                );
                tracker.mark_sending(i, intended, actual);
                tracker.mark_sent();
                let id = tracker.id(i);
                let reply = handle.block_on(async {
                    let request = async_nats::Request::new()
                        .payload((payload)(i))
                        .headers(id_headers(&id))
                        .timeout(Some(timeout));
                    client.send_request(subject.clone(), request).await
                });
                match reply {
                    Ok(_) => {
                        tracker.confirm_index(i, Instant::now());
                    }
                    Err(_) => stats.errors += 1,
                }
                progress.inc(1);
            }
            stats
        })
        .context("spawn closed-loop thread")?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("join closed-loop thread")?
        .map_err(|_| anyhow::anyhow!("the closed-loop thread panicked"))
}

/// How a phase learns that a message was delivered.
#[derive(Clone)]
pub enum Proof {
    /// Commit notices of the database service.
    CommitNotices,
    /// Replies (to requests sent with a reply subject) that pass the check.
    Replies(ReplyCheck),
    /// The message itself arriving at a subscriber of its subject (raw pub/sub, no service):
    /// confirmed by its event-id header.
    Subscribed,
}

/// One measured (or warm-up) phase.
pub struct PhaseSpec {
    /// Unique per phase; becomes the id prefix.
    pub id_prefix: String,
    pub subject: String,
    /// `None`: burst, everything at once.
    pub rate_per_s: Option<f64>,
    pub count: u64,
    /// One paced sender per client.
    pub senders: Vec<Client>,
    pub payload: PayloadFn,
    pub proof: Proof,
    /// Longest wait after the last send for the outstanding proofs.
    pub drain_timeout: Duration,
    /// Spin this long before each intended time (0: sleep only).
    pub spin: Duration,
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseOutcome {
    pub record: PhaseRecord,
    pub send: SendStats,
    /// All sent messages were confirmed before the drain deadline.
    pub drained: bool,
    /// From the last send to the end of the drain (waiting for outstanding proofs).
    pub drain_time: Duration,
    /// From the schedule's start to the end of the drain.
    pub elapsed: Duration,
}

/// Run one phase: subscribe to the proof first (and prove the subscription active), send on
/// schedule, then wait for the outstanding proofs until the drain deadline.
pub async fn run_phase(
    listener: &Client,
    spec: PhaseSpec,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<PhaseOutcome> {
    let cancel = CancellationToken::new();
    let capacity = usize::try_from(spec.count).context("phase too large")?;
    // Subscribe to the proof first and prove the subscription active before anything is sent.
    let (kind, sub) = match &spec.proof {
        Proof::CommitNotices => {
            let sub = listener
                .subscribe(subjects::COMMITTED)
                .await
                .context("subscribe to commit notices")?;
            (SendKind::Publish, sub)
        }
        Proof::Replies(_) => {
            let inbox = listener.new_inbox();
            let sub = listener
                .subscribe(format!("{inbox}.*"))
                .await
                .context("subscribe to the reply inbox")?;
            (SendKind::Request { inbox }, sub)
        }
        Proof::Subscribed => {
            let sub = listener
                .subscribe(spec.subject.clone())
                .await
                .context("subscribe to the phase subject")?;
            (SendKind::Publish, sub)
        }
    };
    ensure_subscribed(listener).await?;
    // The schedule starts a little in the future so every sender thread is up before its first
    // intended time; otherwise thread start-up would show as send delay.
    let lead = Duration::from_millis(20 + 2 * spec.senders.len() as u64);
    let start = Instant::now() + lead;
    let tracker = Arc::new(Tracker::new(spec.id_prefix.clone(), capacity, start));
    let listener_task = match &spec.proof {
        Proof::CommitNotices => ListenerTask::Commits(tokio::spawn(listen_commit_notices(
            sub,
            tracker.clone(),
            cancel.clone(),
        ))),
        Proof::Replies(check) => ListenerTask::Replies(tokio::spawn(listen_replies(
            sub,
            tracker.clone(),
            check.clone(),
            cancel.clone(),
        ))),
        Proof::Subscribed => ListenerTask::Replies(tokio::spawn(listen_deliveries(
            sub,
            tracker.clone(),
            cancel.clone(),
        ))),
    };
    let schedule = Schedule {
        start,
        rate_per_s: spec.rate_per_s,
        count: spec.count,
    };
    progress.set_length(spec.count);
    progress.set_position(0);
    let send = send_paced(
        &spec.senders,
        &spec.subject,
        &kind,
        &tracker,
        schedule,
        &spec.payload,
        spec.spin,
        progress,
    )
    .await;
    let send_finished = Instant::now();
    let drained = match &send {
        Ok(_) => {
            tracker
                .drain(tokio::time::Instant::now() + spec.drain_timeout)
                .await
        }
        Err(_) => false,
    };
    let end = Instant::now();
    cancel.cancel();
    listener_task.join().await;
    let send = send?;
    Ok(PhaseOutcome {
        record: tracker.finish(),
        send,
        drained,
        drain_time: end.saturating_duration_since(send_finished),
        elapsed: end.saturating_duration_since(start),
    })
}

enum ListenerTask {
    Commits(tokio::task::JoinHandle<u64>),
    Replies(tokio::task::JoinHandle<()>),
}

impl ListenerTask {
    async fn join(self) {
        // A listener only ends by cancellation or a closed subscription; neither is an error of
        // the phase, whose accounting already says what arrived.
        match self {
            ListenerTask::Commits(t) => {
                let _ = t.await;
            }
            ListenerTask::Replies(t) => {
                let _ = t.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_without_drift() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(5000, 5000.0), Duration::from_secs(1));
        // 3/s does not divide a second evenly: computed from i, the millionth message is still
        // exactly where it belongs, where summing rounded intervals would drift.
        assert_eq!(
            intended_offset(3_000_000, 3.0),
            Duration::from_secs(1_000_000)
        );
        assert_eq!(intended_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(intended_offset(2, 3.0), Duration::from_nanos(666_666_667));
        assert_eq!(intended_offset(7, 0.0), Duration::ZERO);
        assert_eq!(message_count(200.0, 5.0), 1000);
        assert_eq!(message_count(0.1, 1.0), 1);
    }

    #[test]
    fn burst_schedule_intends_everything_at_start() {
        let start = Instant::now();
        let s = Schedule {
            start,
            rate_per_s: None,
            count: 10,
        };
        assert_eq!(s.intended(9), start);
        let s = Schedule {
            start,
            rate_per_s: Some(100.0),
            count: 10,
        };
        assert_eq!(s.intended(9) - start, Duration::from_millis(90));
    }

    #[test]
    fn interleaved_senders_cover_the_schedule_once() {
        // Sender k of n sends k, k+n, ...: together they send every index exactly once, and each
        // sender's own times are a fixed-rate schedule at rate/n.
        let n = 7u64;
        let count = 100u64;
        let mut seen = vec![0u32; count as usize];
        for k in 0..n {
            let mut i = k;
            let mut prev: Option<Duration> = None;
            while i < count {
                seen[i as usize] += 1;
                let t = intended_offset(i, 700.0);
                if let Some(p) = prev {
                    let gap = (t - p).as_nanos() as i128;
                    assert!((gap - 10_000_000).abs() <= 1, "gap {gap}");
                }
                prev = Some(t);
                i += n;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    #[test]
    fn wait_until_does_not_return_early() {
        let deadline = Instant::now() + Duration::from_millis(3);
        wait_until(deadline, Duration::from_micros(200));
        assert!(Instant::now() >= deadline);
        // A past deadline returns at once.
        let t = Instant::now();
        wait_until(t - Duration::from_millis(1), Duration::ZERO);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
