//! The Rosey database service: SQLite behind NATS.
pub mod db;
