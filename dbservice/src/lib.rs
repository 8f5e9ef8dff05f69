//! The Rosey database service: SQLite behind NATS.
//!
//! A re-implementation of the seed's `DatabaseService` (the Python service; its subjects and payloads are in
//! protocol/README.md) that speaks the same
//! wire protocol, plus the documented additions (mark_failed, recent_messages, enqueue, ping,
//! commit notices, a durable JetStream mode).
//!
//! * [`db`]: the seed's `BotDatabase` as synchronous rusqlite, usable on its own.
//! * [`run`] / [`spawn`]: the service itself; [`Config`] is everything configurable
//!   (`main.rs` builds it from flags and a [`FileConfig`]).
//!
//! How an event travels (core mode): nats-server → one `rosey.db.>` subscription on the
//! "events" connection (one subscription keeps the publisher's order across subjects) → decode
//! and validate (`events`) → bounded queue → the writer thread (`writer`), which applies many
//! events per transaction and commits → the outcome task publishes the commit notice. In durable
//! mode a JetStream pull consumer replaces the subscription, every event's id is recorded in
//! `processed_events` inside its transaction, and the outcome task acknowledges each message
//! only after that commit. Requests arrive on a second connection (`requests`); queries run on
//! read-only connections, writes (enqueue) go through the writer and are answered after commit.
//!
//! Invariants:
//! * Exactly one connection writes: the writer thread's. Nothing else opens the database
//!   read-write while the service runs, and only one service runs per database (an exclusive
//!   OS lock on `<db>.lock`, which names the holder's pid).
//! * Bounded: core-mode events waiting for the writer (bytes; beyond: dropped and counted),
//!   replies (the server's max payload; array replies cut and flagged), durable redeliveries
//!   (`max_deliver`, then a dead letter).
//! * Nothing is reported (notice, ack, enqueue reply, `committed` counter) before the commit
//!   that made it true.
//! * An event's effects and its `processed_events` row commit together or not at all, so a
//!   redelivery is either skipped (already committed) or applied (never committed): never twice.
//! * A failing event never takes its batch down: the batch is replayed with a savepoint per
//!   event and only the failing one is dropped (counted `failed`).
//! * No request goes unanswered: every request subject replies with a result or an error.
//! * Every wait has a deadline; shutdown steps each get `Config::shutdown_timeout`.

mod config;
pub mod db;
mod durable;
pub mod events;
mod nats_connect;
mod requests;
mod service;
mod stats;
mod writer;

pub use config::{Config, FileConfig, Mode};
pub use nats_connect::{connect, connect_options};
pub use requests::MAX_QUERY_LIMIT;
pub use service::{run, spawn, ServiceHandle};
