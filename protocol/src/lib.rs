//! NATS subject names and wire payload types shared by the bot, the database service and the harness.
//!
//! This is the only crate that derives `Serialize`/`Deserialize` for wire types, so the three
//! components cannot drift apart. It has no async, no NATS client and no SQL: serde only.
//!
//! * [`subjects`]: every subject of the seed's contract plus the documented additions.
//! * [`connect`]: NATS connection settings (URL, authentication, TLS) as plain data.
//! * [`db`]: payloads of the bot ↔ database-service subjects (the seed's, and additions).
//! * [`headers`]: optional NATS headers (event id, correlation id) used for tracing and delivery proof.
//! * [`platform`]: the platform boundary: chat-site events in, bot actions out.
//! * [`seed_json`]: encoding that is byte-compatible with Python's `json.dumps`.

pub mod connect;
pub mod db;
pub mod headers;
pub mod platform;
pub mod seed_json;
pub mod subjects;

pub use seed_json::{to_seed_json, to_seed_json_string};
