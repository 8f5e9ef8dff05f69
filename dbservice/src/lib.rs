//! The Rosey database service: SQLite behind NATS.
//!
//! A re-implementation of the seed's `DatabaseService` (seed-system.md §1–3) that speaks the same
//! wire protocol, plus the documented additions (mark_failed, recent_messages, enqueue, ping,
//! commit notices, a durable JetStream mode).
//!
//! * [`db`]: the seed's `BotDatabase` as synchronous rusqlite, usable on its own.
//! * [`run`] / [`spawn`]: the service itself (single writer thread with group commit, read-only
//!   query connections, NATS intake and request handlers).
//! * [`Config`]: everything configurable; `main.rs` builds it from flags and a TOML file.

mod config;
pub mod db;
mod durable;
mod events;
mod nats_connect;
mod requests;
mod service;
mod stats;
mod writer;

pub use config::{Config, FileConfig, Mode};
pub use nats_connect::{connect, connect_options};
pub use requests::MAX_QUERY_LIMIT;
pub use service::{run, spawn, ServiceHandle};
