//! Find, install and start nats-server for tests and the harness.
//!
//! Every test that needs NATS, and the benchmark harness, gets its own real
//! `nats-server` child process from here: on a port the server picks itself,
//! with its own temporary directory, so tests run in parallel and never talk
//! to a server someone else left running.
//!
//! ```no_run
//! let server = natskit::NatsServer::start()?;
//! println!("nats-server {} at {}", server.version(), server.url());
//! # anyhow::Ok(())
//! ```
//!
//! The server API is synchronous (std only, no tokio) so it works from sync
//! tests, async tests and the harness alike.
//!
//! [`client`] is the other half: the one implementation of connecting to NATS
//! from a `rosey_protocol::connect::NatsConnectConfig` (URLs, authentication,
//! TLS, error hints), shared by the database service, the bot and tests. [`hostile`] holds the
//! frames a NATS client cannot read, and a raw publisher for them.

mod child;
pub mod client;
pub mod hostile;
mod locate;
#[cfg(feature = "test-pki")]
pub mod pki;
mod server;

pub use locate::{cache_dir, find, find_or_install, version_of, PINNED_VERSION};
pub use server::{free_port, NatsServer, ServerOptions};
