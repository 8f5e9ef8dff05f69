//! NATS client connections from a [`NatsConnectConfig`]: server URLs, authentication and TLS,
//! and connection errors that say what went wrong.
//!
//! This is the one place that turns the serde-only settings of `rosey_protocol::connect` into
//! `async_nats` options; the database service, the bot and tests all call it. It covers what
//! the settings describe and nothing else: connection names, timeouts, reconnect policy and
//! event callbacks are each caller's own, added to the [`ConnectOptions`] that
//! [`connect_options`] returns before they are passed to [`connect`].
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use rosey_protocol::connect::NatsConnectConfig;
//! let cfg = NatsConnectConfig::new("tls://127.0.0.1:4222");
//! let opts = natskit::client::connect_options(&cfg).await?.name("example");
//! let client = natskit::client::connect(&cfg, opts).await?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions, ServerAddr};
use rosey_protocol::connect::{AuthMethod, NatsConnectConfig};

/// Client options carrying the authentication and TLS settings of `cfg`.
///
/// TLS is required when `cfg.tls_required` is set or any TLS file is (see [`tls_required`]).
///
/// Fails, before any network traffic, when the settings are inconsistent (see
/// [`NatsConnectConfig::auth_method`]), when the nkey seed or credentials file cannot be read,
/// or when a TLS file is missing; each error names the file.
pub async fn connect_options(cfg: &NatsConnectConfig) -> Result<ConnectOptions> {
    let method = cfg.auth_method().context("invalid nats settings")?;
    let mut opts = ConnectOptions::new();
    match method {
        AuthMethod::None => {}
        AuthMethod::UserPassword => {
            let (Some(user), Some(password)) = (cfg.user.clone(), cfg.password.clone()) else {
                unreachable!("auth_method checked both are set")
            };
            opts = opts.user_and_password(user, password);
        }
        AuthMethod::Token => {
            let token = cfg.token.clone().expect("auth_method checked it is set");
            opts = opts.token(token);
        }
        AuthMethod::NkeySeedFile => {
            let path = cfg
                .nkey_seed_file
                .as_ref()
                .expect("auth_method checked it is set");
            // A seed file is a few dozen bytes: reading it synchronously is fine.
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
                .with_context(|| format!("reading nats credentials file {}", path.display()))?;
        }
    }
    // Any TLS file means TLS: without `require_tls` the client would send CONNECT, credentials
    // included, in plaintext to a server (or a man in the middle) that offers no TLS.
    if tls_required(cfg) {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        ensure_file(ca, "tls ca file")?;
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        ensure_file(cert, "tls client certificate file")?;
        ensure_file(key, "tls client key file")?;
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(opts)
}

/// Whether connections made with `cfg` must use TLS: `tls_required`, or any TLS file set (a CA
/// file, a client certificate or its key).
pub fn tls_required(cfg: &NatsConnectConfig) -> bool {
    cfg.tls_required
        || cfg.tls_ca_file.is_some()
        || cfg.tls_cert_file.is_some()
        || cfg.tls_key_file.is_some()
}

/// Pause between two attempts to store one message in JetStream ([`store_until`]).
pub const STORE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Publishes a message to JetStream until the stream confirms storing it (its PubAck), as a
/// durable producer must: while no PubAck comes (an outage, a restart, no stream yet) it
/// publishes the same message again, same headers and so the same `Nats-Msg-Id` (stored once),
/// every [`STORE_RETRY_PAUSE`], until `deadline`. `first` is an attempt the caller already made
/// (`None`: publish now). `on_retry(n, error)` is called before repeat `n` (1, 2, …). Returns the
/// number of repeats, or the last error once the deadline has passed.
pub async fn store_until(
    js: &async_nats::jetstream::Context,
    subject: async_nats::Subject,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
    first: Option<async_nats::jetstream::context::PublishAckFuture>,
    deadline: tokio::time::Instant,
    mut on_retry: impl FnMut(u32, &str),
) -> std::result::Result<u32, (u32, String)> {
    let mut pending = first;
    let mut retries = 0u32;
    loop {
        let attempt = match pending.take() {
            Some(ack) => Ok(ack),
            None => js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        let error = match attempt {
            Ok(ack) => match ack.await {
                Ok(_) => return Ok(retries),
                Err(e) => e.to_string(),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() + STORE_RETRY_PAUSE >= deadline {
            return Err((retries, error));
        }
        retries += 1;
        on_retry(retries, &error);
        tokio::time::sleep(STORE_RETRY_PAUSE).await;
    }
}

/// The services' wait before reconnect attempt `attempts` (1, 2, …): at once, then doubling from
/// 2 ms up to [`MAX_RECONNECT_DELAY`]. async-nats doubles up to 4 s, so a service could come back
/// seconds after its server did, while publishers that retry sooner had already sent into the void
/// (core NATS keeps nothing for a subscriber that is away).
pub fn reconnect_delay(attempts: usize) -> std::time::Duration {
    if attempts <= 1 {
        return std::time::Duration::ZERO;
    }
    let doubling = 2u64.saturating_pow(u32::try_from(attempts - 1).unwrap_or(u32::MAX));
    std::time::Duration::from_millis(doubling).min(MAX_RECONNECT_DELAY)
}

/// The longest wait between two reconnect attempts of a service.
pub const MAX_RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// Why the client could not read `msg` as sent, if it could not: its subject or reply subject
/// was not UTF-8 (both arrive with the bad bytes replaced by U+FFFD), or its header block was
/// unreadable (it arrives with no other header). Such a frame used to make async-nats drop the
/// whole connection; the workspace's patched copy delivers it marked instead
/// (`natskit/vendor/async-nats/PATCHED.md`). Every service treats a marked message as malformed:
/// counted, and answered where it expects a reply, never processed.
pub fn malformed(msg: &async_nats::Message) -> Option<&str> {
    msg.headers
        .as_ref()?
        .get(async_nats::header::NATS_CLIENT_MALFORMED)
        .map(|v| v.as_str())
}

fn ensure_file(path: &Path, what: &str) -> Result<()> {
    ensure!(path.is_file(), "{what} {} does not exist", path.display());
    Ok(())
}

/// The servers of `cfg.url`, a comma-separated list (blank entries are skipped).
pub fn server_addrs(cfg: &NatsConnectConfig) -> Result<Vec<ServerAddr>> {
    let addrs: Vec<ServerAddr> = cfg
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|u| {
            u.parse()
                .with_context(|| format!("invalid nats url {:?}", cfg.redacted_url()))
        })
        .collect::<Result<_>>()?;
    ensure!(!addrs.is_empty(), "nats url is empty");
    Ok(addrs)
}

/// Connects to the servers of `cfg.url` with `opts` (normally [`connect_options`] plus the
/// caller's own settings). A failure says where (the URL, credentials redacted) and what
/// went wrong, in the words of [`connect_error_hint`]; the client's error stays in the chain.
pub async fn connect(cfg: &NatsConnectConfig, opts: ConnectOptions) -> Result<Client> {
    let addrs = server_addrs(cfg)?;
    let method = cfg.auth_method().unwrap_or(AuthMethod::None);
    opts.connect(addrs).await.map_err(|e| {
        let hint = connect_error_hint(&e, method);
        anyhow::Error::new(e).context(format!(
            "connecting to nats at {}: {hint}",
            cfg.redacted_url()
        ))
    })
}

/// A short explanation of a failed connection: `authorization violation: …` (the server
/// rejected the credentials of `method`), `tls handshake failed`, `timed out`,
/// `server unreachable`, or `connection failed`.
///
/// The client reports a certificate the server or the client rejected, and a server that hung up
/// on the TLS handshake (one that does not speak TLS), as I/O errors, so the error's sources are
/// searched for a TLS error before the kind is looked at.
pub fn connect_error_hint(err: &ConnectError, method: AuthMethod) -> String {
    if err.kind() == ConnectErrorKind::Tls || has_tls_source(err) {
        return "tls handshake failed".to_owned();
    }
    match err.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            format!("authorization violation: the server rejected the credentials ({method:?})")
        }
        ConnectErrorKind::Authentication => {
            format!(
                "authentication failed: the client could not sign the server's nonce ({method:?})"
            )
        }
        ConnectErrorKind::TimedOut => "timed out".to_owned(),
        ConnectErrorKind::Io => "server unreachable".to_owned(),
        _ => "connection failed".to_owned(),
    }
}

/// Whether a `rustls` error is among the sources of `err`. An `io::Error` wrapping one does not
/// return it from `source()`, so look inside those with `get_ref()`.
fn has_tls_source(err: &ConnectError) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = next {
        if e.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // A server that does not speak TLS hangs up on the client's hello: tokio-rustls
            // reports that as an `UnexpectedEof` I/O error "tls handshake eof", with no source.
            if io.kind() == std::io::ErrorKind::UnexpectedEof
                && io.to_string().contains("tls handshake")
            {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                if inner.is::<async_nats::rustls::Error>() {
                    return true;
                }
                next = inner.source();
                continue;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_come_soon_after_the_server_does() {
        let ms = std::time::Duration::from_millis;
        let waits: Vec<_> = (1..=12).map(reconnect_delay).collect();
        assert_eq!(&waits[..4], &[ms(0), ms(2), ms(4), ms(8)]);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[11], MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }

    #[test]
    fn urls_are_split_and_checked() {
        let cfg = NatsConnectConfig::new("nats://127.0.0.1:4222, tls://h:4223,");
        let addrs = server_addrs(&cfg).unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(addrs[1].tls_required());
        let bad = NatsConnectConfig::new("nats://bob:pw@[::1");
        let e = format!("{:#}", server_addrs(&bad).unwrap_err());
        assert!(e.contains("invalid nats url"), "{e}");
        assert!(!e.contains("pw"), "the password is not echoed: {e}");
        assert!(server_addrs(&NatsConnectConfig::new(" , ")).is_err());
    }

    #[test]
    fn hints_name_the_failure() {
        let hint = |kind| connect_error_hint(&ConnectError::new(kind), AuthMethod::Token);
        assert_eq!(
            hint(ConnectErrorKind::AuthorizationViolation),
            "authorization violation: the server rejected the credentials (Token)"
        );
        assert_eq!(hint(ConnectErrorKind::Tls), "tls handshake failed");
        assert_eq!(hint(ConnectErrorKind::TimedOut), "timed out");
        assert_eq!(hint(ConnectErrorKind::Io), "server unreachable");
        assert_eq!(hint(ConnectErrorKind::Dns), "connection failed");
        let rejected = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            async_nats::rustls::Error::InvalidCertificate(
                async_nats::rustls::CertificateError::UnknownIssuer,
            ),
        );
        let e = ConnectError::with_source(ConnectErrorKind::Io, rejected);
        assert_eq!(
            connect_error_hint(&e, AuthMethod::None),
            "tls handshake failed"
        );
        let hung_up = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        let e = ConnectError::with_source(ConnectErrorKind::Io, hung_up);
        assert_eq!(
            connect_error_hint(&e, AuthMethod::None),
            "tls handshake failed"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = ConnectError::with_source(ConnectErrorKind::Io, refused);
        assert_eq!(
            connect_error_hint(&e, AuthMethod::None),
            "server unreachable"
        );
    }

    #[tokio::test]
    async fn missing_files_are_named_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let cases = [
            (
                NatsConnectConfig {
                    nkey_seed_file: Some(missing.clone()),
                    ..Default::default()
                },
                "reading nkey seed file",
            ),
            (
                NatsConnectConfig {
                    creds_file: Some(missing.clone()),
                    ..Default::default()
                },
                "reading nats credentials file",
            ),
            (
                NatsConnectConfig {
                    tls_ca_file: Some(missing.clone()),
                    ..Default::default()
                },
                "tls ca file",
            ),
            (
                NatsConnectConfig {
                    tls_cert_file: Some(missing.clone()),
                    tls_key_file: Some(missing.clone()),
                    ..Default::default()
                },
                "tls client certificate file",
            ),
        ];
        for (cfg, what) in cases {
            let e = format!("{:#}", connect_options(&cfg).await.unwrap_err());
            assert!(e.contains(what), "{e}");
            assert!(e.contains(&missing.display().to_string()), "{e}");
        }
        let both = NatsConnectConfig {
            token: Some("t".into()),
            nkey_seed_file: Some(missing),
            ..Default::default()
        };
        let e = format!("{:#}", connect_options(&both).await.unwrap_err());
        assert!(e.contains("invalid nats settings"), "{e}");
    }
}
