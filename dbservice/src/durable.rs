//! Durable mode: the JetStream stream that captures the event subjects, the durable pull consumer
//! the service reads from, and the acknowledgement subjects' payloads.
//!
//! The stream captures exactly [`subjects::EVENT_SUBJECTS`] (never a request subject: the server
//! would answer such requests with a PubAck) with file storage and work-queue retention, so an
//! event leaves the stream once the service acknowledged it, i.e. once its transaction committed.

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use rosey_protocol::subjects;
use std::time::Duration;

/// Acknowledgement: the event is committed (or was already).
pub const ACK: Bytes = Bytes::from_static(b"+ACK");
/// Terminate: the event can never be applied; do not redeliver.
pub const TERM: Bytes = Bytes::from_static(b"+TERM");
/// Negative acknowledgement with a 1 s delay: the transaction failed; try again later.
pub const NAK_1S: Bytes = Bytes::from_static(b"-NAK {\"delay\":1000000000}");

/// Events older than this are dropped from the stream even if never consumed.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of the consumer.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    pub ack_wait: Duration,
    pub max_ack_pending: usize,
    /// Deliveries before the server stops redelivering; the writer dead-letters an event that
    /// fails on this delivery.
    pub max_deliver: u64,
    /// Copies of the stream the servers keep (3 on a three-node cluster).
    pub stream_replicas: usize,
}

/// The durable consumer and the identity of the stream it reads.
pub struct Durable {
    pub consumer: consumer::Consumer<consumer::pull::Config>,
    /// The stream's creation time (nanosecond precision): a deleted and re-created stream restarts
    /// its sequence numbers at 1, so a sequence alone does not name an event; `<id>:<seq>` does.
    pub stream_id: String,
}

fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::DURABLE_STREAM.to_owned(),
        description: Some("Rosey database events, consumed by rosey-dbservice".to_owned()),
        subjects: subjects::EVENT_SUBJECTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        max_age: STREAM_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    }
}

fn consumer_config(s: ConsumerSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects::DURABLE_CONSUMER.to_owned()),
        description: Some("rosey-dbservice: acknowledged after commit".to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: s.ack_wait,
        max_deliver: s.max_deliver.min(i64::MAX as u64) as i64,
        max_ack_pending: s.max_ack_pending as i64,
        ..Default::default()
    }
}

/// Creates (or repairs) the stream and the durable consumer.
pub async fn ensure(
    js: &jetstream::Context,
    settings: ConsumerSettings,
) -> anyhow::Result<Durable> {
    let wanted = stream_config(settings.stream_replicas);
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .with_context(|| format!("creating jetstream stream {}", subjects::DURABLE_STREAM))?;
    let info = stream.info().await.context("reading stream info")?.clone();
    // What differs from the wanted stream is repaired in one update of the stream as it is.
    let mut fixed = info.config.clone();
    let mut have = info.config.subjects.clone();
    have.sort();
    let mut want = wanted.subjects.clone();
    want.sort();
    if have != want {
        tracing::warn!(?have, ?want, "stream subjects differ; updating them");
        fixed.subjects = wanted.subjects.clone();
    }
    if info.config.num_replicas != wanted.num_replicas {
        tracing::warn!(
            have = info.config.num_replicas,
            want = wanted.num_replicas,
            "the stream keeps another number of replicas; updating it"
        );
        fixed.num_replicas = wanted.num_replicas;
    }
    if fixed != info.config {
        js.update_stream(fixed)
            .await
            .context("updating the stream's subjects and replicas")?;
    }
    if info.config.retention != wanted.retention {
        tracing::warn!(retention = ?info.config.retention, "existing stream does not use work-queue retention; keeping it");
    }
    let stream_id = info.created.to_string().replace(char::is_whitespace, "_");
    let config = consumer_config(settings);
    let consumer = match stream.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        Err(create_err) => {
            tracing::debug!(error = %create_err, "creating consumer failed; trying to update it");
            stream.update_consumer(config).await.with_context(|| {
                format!(
                    "creating consumer {}: {create_err}",
                    subjects::DURABLE_CONSUMER
                )
            })
        }
    }?;
    Ok(Durable {
        consumer,
        stream_id,
    })
}

/// The pull stream of messages (the client keeps a pull request outstanding).
pub async fn messages(
    consumer: &consumer::Consumer<consumer::pull::Config>,
    batch: usize,
) -> anyhow::Result<consumer::pull::Stream> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .context("starting to consume")
}
