//! The service's NATS connections: the shared settings-to-options code of
//! [`natskit::client`] (URLs, authentication, TLS, error hints) plus what every service
//! connection wants (a name, a connect timeout, unlimited reconnects at most 250 ms apart, logged
//! client events).

use crate::stats::Stats;
use async_nats::{ConnectOptions, Event};
use rosey_protocol::connect::NatsConnectConfig;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Connects with `opts`, turning the client's error into one that says where and how
/// (see [`natskit::client::connect`]).
pub use natskit::client::connect;

/// Client options from `cfg` (authentication and TLS) plus what every service connection wants;
/// a lost connection is counted in `stats.disconnects`.
pub async fn connect_options(
    cfg: &NatsConnectConfig,
    default_name: &str,
    stats: Arc<Stats>,
) -> anyhow::Result<ConnectOptions> {
    let name = cfg.name.clone().unwrap_or_else(|| default_name.to_owned());
    Ok(natskit::client::connect_options(cfg)
        .await?
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(natskit::client::reconnect_delay)
        .event_callback(move |event| {
            let stats = Arc::clone(&stats);
            async move {
                match event {
                    Event::Connected => tracing::info!("nats connected"),
                    Event::Disconnected => {
                        stats.disconnects.fetch_add(1, Relaxed);
                        tracing::warn!("nats disconnected; reconnecting")
                    }
                    Event::SlowConsumer(sid) => {
                        stats.client_drops.fetch_add(1, Relaxed);
                        tracing::warn!(sid, "nats slow consumer: the client dropped messages")
                    }
                    other => tracing::info!(event = %other, "nats connection event"),
                }
            }
        }))
}
