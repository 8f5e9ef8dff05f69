//! The instruction-count lane: the most important hot paths under Callgrind (gungraun), whose
//! counts do not depend on the machine's load, so they can be gated on a noisy CI runner.
//!
//! Needs Valgrind and the runner of the same version as the `gungraun` dev-dependency:
//!
//! ```text
//! apt-get install valgrind
//! cargo install gungraun-runner --version 0.20.0 --locked
//! cargo bench -p harness --bench icount
//! ```
//!
//! Results go to `target/gungraun/`; a second run prints the change against the first. The
//! database writer is not in this lane: SQLite's file I/O and clock reads make its count vary
//! (it is in the wall-clock `hot_paths` bench).

use gungraun::prelude::*;
use rosey_protocol::db::{CommitNotice, MessageLog};
use std::hint::black_box;

fn message_log_bytes() -> Vec<u8> {
    let log = MessageLog {
        username: Some("chatter_42".into()),
        message: Some("hello there, ünïcode and \"quotes\"".into()),
    };
    serde_json::to_vec(&log).expect("serializable")
}

fn commit_notice() -> CommitNotice {
    CommitNotice {
        batch: 7,
        ids: (0..64).map(|i| format!("run-1a2b-{i:06}")).collect(),
        events: 64,
        duplicate_ids: Vec::new(),
        instance: "5f3a9c0e7b214d68".into(),
    }
}

/// 1 000 fixed pseudo-random latencies (xorshift) and an empty histogram.
fn histogram_input() -> (hdrhistogram::Histogram<u64>, Vec<u64>) {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let values = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            50_000 + x % 5_000_000
        })
        .collect();
    (harness::histogram::new_histogram(), values)
}

#[library_benchmark]
#[bench::message_log(setup = message_log_bytes)]
fn decode_message_log(bytes: Vec<u8>) -> MessageLog {
    black_box(serde_json::from_slice::<MessageLog>(black_box(&bytes)).expect("valid"))
}

#[library_benchmark]
#[bench::notice_64(setup = commit_notice)]
fn encode_commit_notice(notice: CommitNotice) -> Vec<u8> {
    black_box(rosey_protocol::to_seed_json(black_box(&notice)))
}

#[library_benchmark]
#[bench::record_1000(setup = histogram_input)]
fn record_histogram(input: (hdrhistogram::Histogram<u64>, Vec<u64>)) -> u64 {
    let (mut h, values) = input;
    for v in values {
        harness::histogram::record(&mut h, black_box(v));
    }
    black_box(h.len())
}

#[library_benchmark]
#[bench::rate_5000(5000.0)]
fn intended_offsets(rate: f64) -> std::time::Duration {
    let mut sum = std::time::Duration::ZERO;
    for i in 0..1000u64 {
        sum += harness::load::intended_offset(black_box(i), black_box(rate));
    }
    black_box(sum)
}

library_benchmark_group!(
    name = hot_paths,
    benchmarks = [
        decode_message_log,
        encode_commit_notice,
        record_histogram,
        intended_offsets
    ]
);

main!(library_benchmark_groups = hot_paths);
