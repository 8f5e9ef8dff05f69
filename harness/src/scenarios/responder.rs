//! A stand-in service inside the harness with known behaviour, for the self checks: it answers
//! every message on one subject after a known delay (measured from the moment it received the
//! message), either with a reply (the request path) or with a commit notice listing the
//! message's event id (the path of the database service's events), and can stall once for a
//! known time, or answer at a known capacity (one answer per `service_time`).
//!
//! It runs on its own OS threads with its own single-threaded runtime and connection: one thread
//! receives and stamps each message, another answers them in arrival order, each at its
//! receipt + the delay, with a precise blocking wait (sleep, then spin for the last stretch),
//! because tokio's 1 ms timer would make the "known" delay unknown by up to a millisecond. The
//! delay is constant, so due times never decrease and one queue keeps them in order: any rate
//! gets exactly the delay, with no queueing behind earlier answers (a stall delays everything
//! behind it, as a stalled service would). The delay happens on the responding side; the
//! measuring side never waits inside a message's timed window.

use crate::load::{ensure_subscribed, wait_until};
use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the stand-in answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A reply (`ok`) to the message's reply subject.
    Reply,
    /// A commit notice on `subject` listing the message's `Rosey-Event-Id`, as the database
    /// service publishes once the event is committed.
    CommitNotice { subject: String },
}

/// What the responder does.
#[derive(Debug, Clone)]
pub struct ResponderSpec {
    pub subject: String,
    pub answer: Answer,
    /// Added to every reply, from the receipt of the request.
    pub delay: Duration,
    /// At least this long between two answers: a service of known capacity (`1 / service_time`
    /// per second), as one server with a constant service time (answers queue behind each
    /// other once messages come faster). Zero: no limit, every answer exactly `delay` late.
    pub service_time: Duration,
    /// Spin this long at the end of each delay for precision.
    pub spin: Duration,
    /// Stall once, for this long, when handling the request with this (0-based) sequence number.
    pub stall: Option<(u64, Duration)>,
}

/// What the responder did.
#[derive(Debug, Clone, Default)]
pub struct ResponderStats {
    pub handled: u64,
    /// When the stall began, if it happened.
    pub stalled_at: Option<Instant>,
}

/// A running responder; [`Responder::stop`] ends it.
pub struct Responder {
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<anyhow::Result<ResponderStats>>,
}

impl Responder {
    /// Start a responder and return once its subscription is active at the server.
    pub async fn start(nats_url: &str, spec: ResponderSpec) -> anyhow::Result<Responder> {
        let cancel = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let url = nats_url.to_owned();
        let token = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("bench-responder-{}", spec.subject))
            .spawn(move || -> anyhow::Result<ResponderStats> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("responder runtime")?;
                rt.block_on(serve(url, spec, token, ready_tx))
            })
            .context("spawn responder thread")?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Responder { cancel, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let result = tokio::task::spawn_blocking(move || thread.join()).await;
                match result {
                    Ok(Ok(Err(e))) => Err(e),
                    _ => anyhow::bail!("the responder thread ended before it was ready"),
                }
            }
        }
    }

    /// Stop it and return what it did.
    pub async fn stop(self) -> anyhow::Result<ResponderStats> {
        self.cancel.cancel();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("join responder")?
            .map_err(|_| anyhow::anyhow!("the responder thread panicked"))?
    }
}

async fn serve(
    url: String,
    spec: ResponderSpec,
    cancel: CancellationToken,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<ResponderStats> {
    let setup = async {
        let client = crate::load::connect(&url, "bench-responder").await?;
        let sub = client
            .subscribe(spec.subject.clone())
            .await
            .context("responder subscribe")?;
        ensure_subscribed(&client).await?;
        anyhow::Ok((client, sub))
    };
    let (client, mut sub) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            anyhow::bail!("responder set-up failed");
        }
    };
    let mut stats = ResponderStats::default();
    // The answering thread: in arrival order, each at its due time.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, async_nats::Message)>();
    let (answerer, answer_ready) = answering_thread(&url, &spec, rx)?;
    match answer_ready.await {
        Ok(Ok(())) => {
            let _ = ready.send(Ok(()));
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            anyhow::bail!("responder set-up failed");
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "the answering thread ended before it connected"
            )));
            anyhow::bail!("responder set-up failed");
        }
    }
    let mut stall_until: Option<Instant> = None;
    let mut last_due: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let received = Instant::now();
        let mut due = received + spec.delay;
        match spec.stall {
            Some((at, stall)) if stats.handled == at => {
                stats.stalled_at = Some(received);
                // Deliberately holds this answer (and every one behind it) for the known stall.
                stall_until = Some(received + stall);
            }
            _ => {}
        }
        if let Some(until) = stall_until {
            due = due.max(until);
        }
        if let Some(last) = last_due {
            due = due.max(last + spec.service_time);
        }
        last_due = Some(due);
        if tx.send((due, msg)).is_err() {
            break; // The answering thread failed; its error is returned below.
        }
        stats.handled += 1;
    }
    drop(tx);
    tokio::task::spawn_blocking(move || answerer.join())
        .await
        .context("join the answering thread")?
        .map_err(|_| anyhow::anyhow!("the answering thread panicked"))??;
    let _ = client.flush().await;
    Ok(stats)
}

type Ready = tokio::sync::oneshot::Receiver<anyhow::Result<()>>;

/// The thread that answers, on a connection and single-threaded runtime of its own: it waits
/// for each answer's due time (precisely, blocking) and publishes on the same thread, so the
/// answer goes on the wire without waking another thread, whatever the delay. Between answers
/// it idles inside its runtime.
fn answering_thread(
    url: &str,
    spec: &ResponderSpec,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Instant, async_nats::Message)>,
) -> anyhow::Result<(std::thread::JoinHandle<anyhow::Result<()>>, Ready)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (url, answer, spin) = (url.to_owned(), spec.answer.clone(), spec.spin);
    let thread = std::thread::Builder::new()
        .name(format!("bench-answer-{}", spec.subject))
        .spawn(move || -> anyhow::Result<()> {
            crate::load::precise_timers();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("answering runtime")?;
            rt.block_on(async move {
                let client = match crate::load::connect(&url, "bench-responder-answers").await {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        anyhow::bail!("answering connection failed");
                    }
                };
                let mut batch = 0u64;
                while let Some((due, msg)) = rx.recv().await {
                    wait_until(due, spin);
                    match &answer {
                        Answer::Reply => {
                            if let Some(reply) = msg.reply {
                                client
                                    .publish(reply, Bytes::from_static(b"ok"))
                                    .await
                                    .context("responder reply")?;
                            }
                        }
                        Answer::CommitNotice { subject } => {
                            let id = msg
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(rosey_protocol::headers::EVENT_ID))
                                .map(|v| v.as_str().to_owned());
                            if let Some(id) = id {
                                batch += 1;
                                let notice = serde_json::json!({
                                    "batch": batch, "ids": [id], "events": 1, "duplicate_ids": [],
                                });
                                client
                                    .publish(subject.clone(), Bytes::from(notice.to_string()))
                                    .await
                                    .context("responder commit notice")?;
                            }
                        }
                    }
                    // The writer task puts the answer on the wire before the next wait.
                    tokio::task::yield_now().await;
                }
                let _ = client.flush().await;
                Ok(())
            })
        })
        .context("spawn the answering thread")?;
    Ok((thread, ready_rx))
}
