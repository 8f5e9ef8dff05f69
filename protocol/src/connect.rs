//! How a component connects to NATS: server URL, authentication and TLS, as plain data.
//!
//! Serde only (this crate has no NATS client): the bot and the database service deserialize it
//! from the `[nats]` table of their TOML config files and let command-line flags override fields;
//! `natskit::client` turns it into the client's options. At most one authentication method may be
//! set (user/password, token, nkey seed file or credentials file); see
//! [`NatsConnectConfig::auth_method`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The seed's default server (`nats://localhost:4222`).
pub const DEFAULT_NATS_URL: &str = "nats://localhost:4222";

/// Connection settings for one NATS client.
///
/// `Debug` redacts the password and the token so the struct can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConnectConfig {
    /// Server URL(s), comma separated, e.g. `nats://127.0.0.1:4222` or `tls://host:4222`.
    pub url: String,
    /// User name for user/password authentication (needs `password`).
    pub user: Option<String>,
    /// Password for user/password authentication (needs `user`).
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// File holding an nkey seed (`SU...`) for nkey authentication.
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT plus nkey seed) for decentralised authentication.
    pub creds_file: Option<PathBuf>,
    /// Refuse to talk to a server that does not offer TLS. Implied by any of the TLS files below.
    pub tls_required: bool,
    /// PEM file with the CA certificate(s) that signed the server's certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (needs `tls_cert_file`).
    pub tls_key_file: Option<PathBuf>,
    /// Connection name shown by the server's monitoring endpoints.
    pub name: Option<String>,
}

impl Default for NatsConnectConfig {
    fn default() -> Self {
        NatsConnectConfig {
            url: DEFAULT_NATS_URL.to_owned(),
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            name: None,
        }
    }
}

/// Which authentication method a [`NatsConnectConfig`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    UserPassword,
    Token,
    NkeySeedFile,
    CredsFile,
}

/// A [`NatsConnectConfig`] that cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectConfigError {
    /// `user` without `password` or the other way round.
    IncompleteUserPassword,
    /// `tls_cert_file` without `tls_key_file` or the other way round.
    IncompleteClientCertificate,
    /// More than one authentication method is set.
    ConflictingAuth(Vec<AuthMethod>),
    /// The URL is empty.
    EmptyUrl,
}

impl fmt::Display for ConnectConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectConfigError::IncompleteUserPassword => {
                write!(f, "nats user and password must be given together")
            }
            ConnectConfigError::IncompleteClientCertificate => {
                write!(
                    f,
                    "nats tls client certificate and key files must be given together"
                )
            }
            ConnectConfigError::ConflictingAuth(methods) => {
                write!(
                    f,
                    "more than one nats authentication method is set: {methods:?}"
                )
            }
            ConnectConfigError::EmptyUrl => write!(f, "nats url is empty"),
        }
    }
}

impl std::error::Error for ConnectConfigError {}

impl NatsConnectConfig {
    /// Settings for `url` with no authentication and no TLS.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConnectConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    /// The single authentication method the settings select, or why they are inconsistent.
    pub fn auth_method(&self) -> Result<AuthMethod, ConnectConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConnectConfigError::EmptyUrl);
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConnectConfigError::IncompleteUserPassword);
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConnectConfigError::IncompleteClientCertificate);
        }
        let mut set = Vec::new();
        if self.user.is_some() {
            set.push(AuthMethod::UserPassword);
        }
        if self.token.is_some() {
            set.push(AuthMethod::Token);
        }
        if self.nkey_seed_file.is_some() {
            set.push(AuthMethod::NkeySeedFile);
        }
        if self.creds_file.is_some() {
            set.push(AuthMethod::CredsFile);
        }
        match set.len() {
            0 => Ok(AuthMethod::None),
            1 => Ok(set[0]),
            _ => Err(ConnectConfigError::ConflictingAuth(set)),
        }
    }

    /// The URL with any `user:password@` part replaced by `***@`, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(redact_one_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn redact_one_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl fmt::Debug for NatsConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConnectConfig")
            .field("url", &self.redacted_url())
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls_required", &self.tls_required)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_auth_rules() {
        let c = NatsConnectConfig::default();
        assert_eq!(c.url, DEFAULT_NATS_URL);
        assert_eq!(c.auth_method(), Ok(AuthMethod::None));
        let up = NatsConnectConfig {
            user: Some("a".into()),
            password: Some("b".into()),
            ..c.clone()
        };
        assert_eq!(up.auth_method(), Ok(AuthMethod::UserPassword));
        let half = NatsConnectConfig {
            user: Some("a".into()),
            ..c.clone()
        };
        assert_eq!(
            half.auth_method(),
            Err(ConnectConfigError::IncompleteUserPassword)
        );
        let both = NatsConnectConfig {
            token: Some("t".into()),
            ..up.clone()
        };
        assert!(matches!(
            both.auth_method(),
            Err(ConnectConfigError::ConflictingAuth(_))
        ));
        let cert = NatsConnectConfig {
            tls_cert_file: Some("c.pem".into()),
            ..c
        };
        assert_eq!(
            cert.auth_method(),
            Err(ConnectConfigError::IncompleteClientCertificate)
        );
    }

    #[test]
    fn debug_and_urls_redact_secrets() {
        let c = NatsConnectConfig {
            url: "nats://bob:hunter2@h:4222,nats://h2:4222".into(),
            user: Some("bob".into()),
            password: Some("hunter2".into()),
            token: Some("s3cret".into()),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(c.redacted_url(), "nats://***@h:4222,nats://h2:4222");
        assert_eq!(NatsConnectConfig::new("h:4222").redacted_url(), "h:4222");
    }
}
