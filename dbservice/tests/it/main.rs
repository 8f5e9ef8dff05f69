//! Integration tests of the database service against real nats-servers (one per test, started
//! by natskit on a free port with its own temp dir, so tests run in parallel).

mod binary;
mod durable;
mod fuzz;
mod lifecycle;
mod malformed;
mod notices;
mod protocol;
mod reliability;
mod security;
mod support;
