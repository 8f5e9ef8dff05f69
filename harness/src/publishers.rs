//! The publishers' connections, and the one OS thread that owns them (harness/METHODOLOGY.md,
//! "Load").
//!
//! A phase's sender walks its schedule with precise blocking waits (see [`crate::load`]). If
//! the connections it publishes on lived on the harness's main runtime, each publish would only
//! hand the message to a writer task on a worker thread, which first has to be woken (tens of
//! microseconds on a small, busy machine) before the message reaches the socket: harness time
//! inside every message's timed window, which the bare floor loop never pays. So the
//! connections live on a single-threaded runtime of their own, on a thread of their own, and a
//! phase's sender loop runs on that very thread: a publish hands the message to a writer task on
//! the same thread, which puts it on the wire as soon as the loop yields, before the thread
//! waits for the next intended time. Between phases the thread idles inside its runtime, so the
//! connections still answer the server's pings.
//!
//! The clients can also be used from any other runtime (a publish is a message to the writer
//! task); they stay connected while any [`Publishers`] clone lives.

use anyhow::Context;
use async_nats::Client;
use futures::future::LocalBoxFuture;

/// A job for the publishers' thread: it runs there, alone, until it completes.
type Job = Box<dyn FnOnce(Vec<Client>) -> LocalBoxFuture<'static, ()> + Send>;

/// `n` publisher connections owned by one thread with its own single-threaded runtime.
#[derive(Clone)]
pub struct Publishers {
    clients: Vec<Client>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Publishers {
    /// Start the thread and connect `n` (≥ 1) clients named `<name>-<k>` on it.
    pub async fn connect(url: &str, name: &str, n: u32) -> anyhow::Result<Publishers> {
        anyhow::ensure!(n > 0, "at least one publisher connection");
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<Vec<Client>>>();
        let (url, name) = (url.to_owned(), name.to_owned());
        std::thread::Builder::new()
            .name("bench-publishers".into())
            .spawn(move || {
                crate::load::precise_timers();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(anyhow::Error::new(e).context("publishers' runtime")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut clients = Vec::with_capacity(n as usize);
                    for k in 0..n {
                        match crate::load::connect(&url, &format!("{name}-{k}")).await {
                            Ok(c) => clients.push(c),
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    if ready_tx.send(Ok(clients.clone())).is_err() {
                        return;
                    }
                    // Until the last `Publishers` clone is dropped.
                    while let Some(job) = rx.recv().await {
                        job(clients.clone()).await;
                    }
                    for c in &clients {
                        let _ = c.flush().await;
                    }
                });
            })
            .context("spawn the publishers' thread")?;
        let clients = ready_rx
            .await
            .context("the publishers' thread ended before it connected")??;
        Ok(Publishers { clients, jobs })
    }

    /// The connections (usable from any runtime).
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Run `job` on the publishers' thread, with the connections, and wait for its result. The
    /// job runs alone there: whatever it blocks on (a precise wait) it blocks on with the
    /// connections' writer tasks behind it, which run whenever it awaits or yields.
    pub async fn run<T, F>(&self, job: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Vec<Client>) -> LocalBoxFuture<'static, T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |clients| {
            Box::pin(async move {
                let _ = tx.send(job(clients).await);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the publishers' thread has ended"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the publishers' job ended without a result (panicked?)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_server_is_a_clear_error() {
        // Nothing listens on port 1.
        let err = match Publishers::connect("nats://127.0.0.1:1", "bench-test", 1).await {
            Ok(_) => panic!("connected to nothing"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("connect to nats"), "{err}");
    }

    #[tokio::test]
    async fn zero_connections_are_refused() {
        assert!(Publishers::connect("nats://127.0.0.1:1", "bench-test", 0)
            .await
            .is_err());
    }
}
