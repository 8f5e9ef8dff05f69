//! Connecting to NATS from a [`NatsConnectConfig`]: authentication, TLS, unlimited reconnects,
//! and client events forwarded to the connection watcher.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::{Client, ConnectOptions, Event};
use rosey_protocol::connect::{AuthMethod, NatsConnectConfig};
use tokio::sync::mpsc;

/// Connects, failing if the first connection cannot be made (later losses are reconnected
/// forever). Client events are sent to `events`.
pub(crate) async fn connect(
    cfg: &NatsConnectConfig,
    default_name: &str,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .name(cfg.name.clone().unwrap_or_else(|| default_name.to_owned()))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                // The watcher may already be gone during shutdown; nothing to do then.
                let _ = events.send(event);
            }
        });
    match cfg.auth_method().map_err(anyhow::Error::msg)? {
        AuthMethod::None => {}
        AuthMethod::UserPassword => {
            let (Some(user), Some(password)) = (cfg.user.clone(), cfg.password.clone()) else {
                unreachable!("auth_method checked both are set")
            };
            opts = opts.user_and_password(user, password);
        }
        AuthMethod::Token => opts = opts.token(cfg.token.clone().unwrap_or_default()),
        AuthMethod::NkeySeedFile => {
            let path = cfg
                .nkey_seed_file
                .as_ref()
                .expect("auth_method checked it is set");
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading nkey seed file {}", path.display()))?;
            opts = opts.nkey(seed.trim().to_owned());
        }
        AuthMethod::CredsFile => {
            let path = cfg
                .creds_file
                .as_ref()
                .expect("auth_method checked it is set");
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("reading credentials file {}", path.display()))?;
        }
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let urls: Vec<String> = cfg
        .url
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| {
            u.parse()
                .with_context(|| format!("invalid nats url {:?}", cfg.redacted_url()))
        })
        .collect::<Result<_>>()?;
    opts.connect(addrs)
        .await
        .with_context(|| format!("connecting to NATS at {}", cfg.redacted_url()))
}
