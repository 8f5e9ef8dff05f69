//! The bot's NATS connection: the shared settings-to-options code of [`natskit::client`]
//! (URLs, authentication, TLS, error hints) plus the bot's own policy: its connection name,
//! a connect timeout, unlimited reconnects at most 250 ms apart, and client events forwarded to
//! the connection watcher.

use std::time::Duration;

use anyhow::Result;
use async_nats::{Client, Event};
use rosey_protocol::connect::NatsConnectConfig;
use tokio::sync::mpsc;

/// Connects, failing if the first connection cannot be made (later losses are reconnected
/// forever). Client events are sent to `events`.
pub(crate) async fn connect(
    cfg: &NatsConnectConfig,
    default_name: &str,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Client> {
    let opts = natskit::client::connect_options(cfg)
        .await?
        .name(cfg.name.clone().unwrap_or_else(|| default_name.to_owned()))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(natskit::client::reconnect_delay)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                // The watcher may already be gone during shutdown; nothing to do then.
                let _ = events.send(event);
            }
        });
    natskit::client::connect(cfg, opts).await
}
