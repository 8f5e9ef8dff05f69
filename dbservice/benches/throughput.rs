//! Throughput of `rosey.db.message.log`, two groups in one run:
//!
//! 1. `end_to_end`: N events with event ids published to an in-process service (core mode,
//!    commit notices on) through a real nats-server; the clock stops when commit notices have
//!    named all N ids, i.e. when they are persisted. Nothing is counted that was not committed.
//!    `end_to_end_durable` is the same through the JetStream stream and durable consumer
//!    (events acknowledged after commit, ids recorded for idempotency).
//! 2. `raw_sqlite`: the same `user_chat_message` work (UPDATE user_stats + INSERT recent_chat,
//!    one prune per transaction) for N events straight into the same schema through
//!    `rosey_dbservice::db`, in transactions of the service's observed mean batch size.
//!
//! The ratio of the two is the cost of the service (NATS, parsing, queueing, notices) on top of
//! the database work. Run with `cargo bench -p rosey-dbservice --bench throughput`.

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt as _;
use rosey_dbservice::db::Database;
use rosey_protocol::db::{CommitNotice, ServiceStats};
use rosey_protocol::{headers, subjects};
use std::time::{Duration, Instant};

/// Events per measured iteration.
const N: usize = 20_000;
/// Distinct chatters (all joined before measuring, so every line updates a user row).
const USERS: usize = 100;
/// Deadline for one iteration's events to be committed.
const DEADLINE: Duration = Duration::from_secs(60);

struct Totals {
    events: u64,
    elapsed: Duration,
}

impl Totals {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

fn chat_body(i: usize) -> String {
    format!(
        r#"{{"username": "user{}", "message": "benchmark chat line number {i}"}}"#,
        i % USERS
    )
}

/// Returns the measured totals and the service's mean batch size.
fn end_to_end(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    mode: rosey_dbservice::Mode,
) -> Option<(Totals, f64)> {
    let server = natskit::NatsServer::start().expect("start nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = rosey_dbservice::Config::new(server.url(), dir.path().join("bench.db"));
    config.commit_notices = true;
    config.maintenance_interval = None;
    config.mode = mode;
    let service = rt
        .block_on(rosey_dbservice::spawn(config))
        .expect("service starts");
    let (publisher, mut notices) = rt.block_on(async {
        let publisher = async_nats::connect(server.url()).await.expect("connect");
        let listener = async_nats::connect(server.url()).await.expect("connect");
        let notices = listener
            .subscribe(subjects::COMMITTED)
            .await
            .expect("subscribe");
        // Round trip so the server has the subscription before anything is published.
        listener
            .request(subjects::SERVICE_PING, "".into())
            .await
            .expect("ping");
        for u in 0..USERS {
            publisher
                .publish(
                    subjects::USER_JOINED,
                    format!(r#"{{"username": "user{u}"}}"#).into(),
                )
                .await
                .expect("publish");
        }
        (publisher, notices)
    });

    let mut totals = Totals {
        events: 0,
        elapsed: Duration::ZERO,
    };
    let mut round = 0u64;
    let mut group = c.benchmark_group(match mode {
        rosey_dbservice::Mode::Core => "end_to_end",
        rosey_dbservice::Mode::Durable => "end_to_end_durable",
    });
    group.throughput(Throughput::Elements(N as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("message_log_committed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let payloads: Vec<(String, bytes::Bytes)> = (0..N)
                        .map(|i| (format!("r{round}-{i}"), chat_body(i).into()))
                        .collect();
                    let start = Instant::now();
                    for (id, body) in payloads {
                        let mut h = async_nats::HeaderMap::new();
                        h.insert(headers::EVENT_ID, id.as_str());
                        publisher
                            .publish_with_headers(subjects::MESSAGE_LOG, h, body)
                            .await
                            .expect("publish");
                    }
                    publisher.flush().await.expect("flush");
                    let prefix = format!("r{round}-");
                    let mut confirmed = 0usize;
                    while confirmed < N {
                        let msg = tokio::time::timeout(DEADLINE, notices.next())
                            .await
                            .expect("events committed within the deadline")
                            .expect("notice subscription open");
                        let n: CommitNotice =
                            serde_json::from_slice(&msg.payload).expect("notice JSON");
                        confirmed += n.ids.iter().filter(|id| id.starts_with(&prefix)).count();
                    }
                    assert_eq!(confirmed, N, "every id exactly once");
                    elapsed += start.elapsed();
                }
                totals.events += iters * N as u64;
                totals.elapsed += elapsed;
                elapsed
            })
        })
    });
    group.finish();

    let stats: ServiceStats = rt.block_on(async {
        let reply = publisher
            .request(subjects::SERVICE_PING, "".into())
            .await
            .expect("ping");
        serde_json::from_slice(&reply.payload).expect("stats JSON")
    });
    rt.block_on(service.shutdown()).expect("clean shutdown");
    if totals.events == 0 {
        return None; // filtered out
    }
    assert_eq!(
        stats.committed, stats.received,
        "nothing lost or failed: {stats:?}"
    );
    assert_eq!(stats.malformed + stats.failed + stats.duplicates, 0);
    let mean_batch = stats.committed as f64 / stats.batches.max(1) as f64;
    Some((totals, mean_batch))
}

fn raw_sqlite(c: &mut Criterion, batch: usize) -> Option<Totals> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Database::open_path(dir.path().join("raw.db")).expect("open database");
    db.transaction(|db| {
        for u in 0..USERS {
            db.user_joined(&format!("user{u}"))?;
        }
        Ok(())
    })
    .expect("join users");
    let users: Vec<String> = (0..USERS).map(|u| format!("user{u}")).collect();
    let mut totals = Totals {
        events: 0,
        elapsed: Duration::ZERO,
    };
    let mut group = c.benchmark_group("raw_sqlite");
    group.throughput(Throughput::Elements(N as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(format!("user_chat_message_batches_of_{batch}"), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let messages: Vec<String> = (0..N)
                    .map(|i| format!("benchmark chat line number {i}"))
                    .collect();
                let start = Instant::now();
                for (chunk_no, chunk) in messages.chunks(batch).enumerate() {
                    db.transaction(|db| {
                        for (j, m) in chunk.iter().enumerate() {
                            let i = chunk_no * batch + j;
                            db.record_chat_message(&users[i % USERS], m)?;
                        }
                        db.prune_recent_chat()?;
                        Ok(())
                    })
                    .expect("transaction");
                }
                elapsed += start.elapsed();
            }
            totals.events += iters * N as u64;
            totals.elapsed += elapsed;
            elapsed
        })
    });
    group.finish();
    (totals.events > 0).then_some(totals)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let e2e = end_to_end(&mut c, &rt, rosey_dbservice::Mode::Core);
    let durable = end_to_end(&mut c, &rt, rosey_dbservice::Mode::Durable);
    let batch = e2e
        .as_ref()
        .map_or(1000, |(_, mean)| mean.round().max(1.0) as usize);
    let raw = raw_sqlite(&mut c, batch);
    c.final_summary();

    println!();
    println!("summary ({N} message.log events per iteration, {USERS} users):");
    if let Some((t, mean)) = &e2e {
        println!("  end-to-end (published -> committed, notices): {:>10.0} events/s   mean batch {mean:.0}", t.rate());
    }
    if let Some((t, mean)) = &durable {
        println!("  end-to-end, durable mode (JetStream, acked):   {:>10.0} events/s   mean batch {mean:.0}", t.rate());
    }
    if let Some(t) = &raw {
        println!(
            "  raw SQLite (same writes, batches of {batch}):   {:>10.0} events/s",
            t.rate()
        );
    }
    if let (Some((e, _)), Some(r)) = (&e2e, &raw) {
        println!("  end-to-end / raw = {:.2}", e.rate() / r.rate());
    }
}
