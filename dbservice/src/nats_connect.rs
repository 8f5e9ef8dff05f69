//! Turning a [`NatsConnectConfig`] into an `async_nats` connection.

use anyhow::Context as _;
use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use rosey_protocol::connect::{AuthMethod, NatsConnectConfig};
use std::time::Duration;

/// Client options from `cfg` (authentication and TLS) plus what every service connection wants.
pub async fn connect_options(
    cfg: &NatsConnectConfig,
    default_name: &str,
) -> anyhow::Result<ConnectOptions> {
    let method = cfg.auth_method().context("invalid nats settings")?;
    let mut opts = match method {
        AuthMethod::None => ConnectOptions::new(),
        AuthMethod::UserPassword => ConnectOptions::with_user_and_password(
            cfg.user.clone().unwrap_or_default(),
            cfg.password.clone().unwrap_or_default(),
        ),
        AuthMethod::Token => ConnectOptions::with_token(cfg.token.clone().unwrap_or_default()),
        AuthMethod::NkeySeedFile => {
            let path = cfg
                .nkey_seed_file
                .as_ref()
                .expect("auth_method checked the seed file is set");
            let seed = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading nkey seed file {}", path.display()))?;
            ConnectOptions::with_nkey(seed.trim().to_owned())
        }
        AuthMethod::CredsFile => {
            let path = cfg
                .creds_file
                .as_ref()
                .expect("auth_method checked the creds file is set");
            ConnectOptions::with_credentials_file(path)
                .await
                .with_context(|| format!("reading nats credentials file {}", path.display()))?
        }
    };
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        anyhow::ensure!(ca.is_file(), "tls ca file {} does not exist", ca.display());
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        anyhow::ensure!(
            cert.is_file(),
            "tls client certificate file {} does not exist",
            cert.display()
        );
        anyhow::ensure!(
            key.is_file(),
            "tls client key file {} does not exist",
            key.display()
        );
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let name = cfg.name.clone().unwrap_or_else(|| default_name.to_owned());
    Ok(opts
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("nats connected"),
                Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "nats slow consumer: the client dropped messages")
                }
                other => tracing::info!(event = %other, "nats connection event"),
            }
        }))
}

/// Connects with `opts`, turning the client's error into one that says where and how.
pub async fn connect(
    cfg: &NatsConnectConfig,
    opts: ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let url = cfg.redacted_url();
    let method = cfg.auth_method().unwrap_or(AuthMethod::None);
    match opts.connect(cfg.url.as_str()).await {
        Ok(client) => Ok(client),
        Err(e) => {
            let hint = match e.kind() {
                ConnectErrorKind::AuthorizationViolation => {
                    format!(
                        "authorization violation: the server rejected the credentials ({method:?})"
                    )
                }
                ConnectErrorKind::Tls => "tls handshake failed".to_owned(),
                ConnectErrorKind::TimedOut => "timed out".to_owned(),
                ConnectErrorKind::Io => "server unreachable".to_owned(),
                _ => "connection failed".to_owned(),
            };
            Err(anyhow::Error::new(e).context(format!("connecting to nats at {url}: {hint}")))
        }
    }
}
