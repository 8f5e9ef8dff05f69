//! Wall-clock micro-benchmarks (criterion) of the hot paths under the scenarios: wire payload
//! decode/encode, the database writer's batch insert, histogram recording and the open-loop
//! scheduler's intended-time computation. `cargo bench -p harness --bench hot_paths`.
//!
//! These numbers move with the machine; the instruction-count lane (`--bench icount`) is the
//! one stable enough to gate on.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rosey_dbservice::db::Database;
use rosey_protocol::db::{CommitNotice, MessageLog};
use rosey_protocol::platform::ChatMessage;
use std::hint::black_box;

/// Events per writer transaction: about the service's mean batch at a few thousand events/s.
const BATCH: usize = 64;
const USERS: usize = 100;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let log = MessageLog {
        username: Some("chatter_42".into()),
        message: Some("hello there, ünïcode and \"quotes\"".into()),
    };
    let log_bytes = serde_json::to_vec(&log).expect("serializable");
    let chat = ChatMessage {
        user: "chatter_42".into(),
        content: "a line of chat, 64 bytes or so, like the load".into(),
        correlation_id: Some("bench-000042".into()),
    };
    let chat_bytes = serde_json::to_vec(&chat).expect("serializable");
    let notice = CommitNotice {
        batch: 7,
        ids: (0..BATCH).map(|i| format!("run-1a2b-{i:06}")).collect(),
        events: BATCH as u64,
        duplicate_ids: Vec::new(),
        instance: "5f3a9c0e7b214d68".into(),
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("message_log/decode", |b| {
        b.iter(|| serde_json::from_slice::<MessageLog>(black_box(&log_bytes)).expect("valid"))
    });
    g.bench_function("message_log/encode_seed_json", |b| {
        b.iter(|| rosey_protocol::to_seed_json(black_box(&log)))
    });
    g.bench_function("chat_message/decode", |b| {
        b.iter(|| serde_json::from_slice::<ChatMessage>(black_box(&chat_bytes)).expect("valid"))
    });
    g.bench_function("commit_notice_64/encode_seed_json", |b| {
        b.iter(|| rosey_protocol::to_seed_json(black_box(&notice)))
    });
    g.finish();
}

fn writer_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Database::open_path(dir.path().join("bench.db")).expect("open database");
    for u in 0..USERS {
        db.user_joined(&format!("chatter_{u}")).expect("join");
    }
    let lines: Vec<(String, String)> = (0..BATCH)
        .map(|i| {
            (
                format!("chatter_{}", i % USERS),
                format!("message number {i} with some padding text"),
            )
        })
        .collect();
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(BATCH as u64));
    // What the service's writer thread does per transaction: every event, one prune, commit.
    g.bench_function("batch_insert_64", |b| {
        b.iter(|| {
            db.begin().expect("begin");
            for (user, message) in &lines {
                db.record_chat_message(user, message).expect("insert");
            }
            db.prune_recent_chat().expect("prune");
            db.commit().expect("commit");
        })
    });
    g.finish();
}

/// A fixed pseudo-random latency stream (xorshift), so every run records the same values.
fn latencies(n: usize) -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            50_000 + x % 5_000_000
        })
        .collect()
}

fn histogram(c: &mut Criterion) {
    let values = latencies(1000);
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("record_1000", |b| {
        b.iter_batched_ref(
            harness::histogram::new_histogram,
            |h| {
                for &v in &values {
                    harness::histogram::record(h, black_box(v));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("intended_offset_1000", |b| {
        b.iter(|| {
            let mut sum = std::time::Duration::ZERO;
            for i in 0..1000u64 {
                sum += harness::load::intended_offset(black_box(i), black_box(5000.0));
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, codec, writer_batch, histogram, scheduler);
criterion_main!(benches);
