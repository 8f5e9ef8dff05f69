//! A responder inside the harness with known behaviour, for the self checks: it answers every
//! request on one subject after a known delay (measured from the moment it received the
//! request), and can stall once for a known time.
//!
//! It runs on its own OS thread with its own single-threaded runtime and connection, and handles
//! requests strictly one at a time, like a single-threaded service: the delay is a precise
//! blocking wait on that thread (sleep, then spin for the last stretch), because tokio's 1 ms
//! timer would make the "known" delay unknown by up to a millisecond. The delay happens on the
//! responding side; the measuring side never waits inside a message's timed window.

use crate::load::{ensure_subscribed, wait_until};
use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the responder does.
#[derive(Debug, Clone)]
pub struct ResponderSpec {
    pub subject: String,
    /// Added to every reply, from the receipt of the request.
    pub delay: Duration,
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
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            anyhow::bail!("responder set-up failed");
        }
    };
    let mut stats = ResponderStats::default();
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let received = Instant::now();
        match spec.stall {
            Some((at, stall)) if stats.handled == at => {
                stats.stalled_at = Some(received);
                // Deliberately blocks this responder (and only it) for the known stall.
                wait_until(received + stall, Duration::ZERO);
            }
            _ if !spec.delay.is_zero() => wait_until(received + spec.delay, spec.spin),
            _ => {}
        }
        if let Some(reply) = msg.reply {
            client
                .publish(reply, Bytes::from_static(b"ok"))
                .await
                .context("responder reply")?;
        }
        stats.handled += 1;
    }
    let _ = client.flush().await;
    Ok(stats)
}
