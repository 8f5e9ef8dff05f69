//! `natskit::client` against real servers configured for nkey, credentials (operator mode) and
//! TLS (server-verified and mutual). Every key, certificate and JWT is generated here, into the
//! test's own temp dir.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use futures::StreamExt as _;
use natskit::pki::TestPki;
use natskit::{client, NatsServer, ServerOptions};
use nkeys::KeyPair;
use rosey_protocol::connect::NatsConnectConfig;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Writes `contents` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    path
}

/// A nats-server started with the config file `conf` (written into `dir`).
fn server_with_config(dir: &Path, conf: &str) -> NatsServer {
    let config_file = write(dir, "server.conf", conf);
    NatsServer::start_with(ServerOptions {
        config_file: Some(config_file),
        ..ServerOptions::default()
    })
    .unwrap()
}

/// Connects with only what `cfg` says (no name, reconnect policy or callbacks of a service).
async fn connect(cfg: &NatsConnectConfig) -> anyhow::Result<async_nats::Client> {
    let opts = client::connect_options(cfg).await?;
    client::connect(cfg, opts).await
}

/// Proves the connection works: a message to itself comes back through the server.
async fn echo(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, "hi".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the message came back")
        .unwrap();
    assert_eq!(&msg.payload[..], b"hi");
}

fn err_text(result: anyhow::Result<async_nats::Client>) -> String {
    format!("{:#}", result.expect_err("the connection is refused"))
}

// ---------------------------------------------------------------------------------------------
// nkey

#[tokio::test]
async fn nkey_seed_file_authenticates_and_a_stranger_is_refused() {
    let dir = TempDir::new().unwrap();
    let user = KeyPair::new_user();
    let stranger = KeyPair::new_user();
    let server = server_with_config(
        dir.path(),
        &format!(
            "authorization {{ users = [ {{ nkey: {:?} }} ] }}\n",
            user.public_key()
        ),
    );
    let seed_file = write(
        dir.path(),
        "user.nk",
        &format!("{}\n", user.seed().unwrap()),
    );
    let cfg = NatsConnectConfig {
        nkey_seed_file: Some(seed_file),
        ..NatsConnectConfig::new(server.url())
    };
    echo(&connect(&cfg).await.unwrap()).await;

    let wrong = NatsConnectConfig {
        nkey_seed_file: Some(write(dir.path(), "stranger.nk", &stranger.seed().unwrap())),
        ..cfg.clone()
    };
    let e = err_text(connect(&wrong).await);
    assert!(
        e.contains("authorization violation: the server rejected the credentials (NkeySeedFile)"),
        "{e}"
    );
    assert!(
        !e.contains(&stranger.seed().unwrap()),
        "the seed is not echoed: {e}"
    );

    let missing = dir.path().join("missing.nk");
    let e = err_text(
        connect(&NatsConnectConfig {
            nkey_seed_file: Some(missing.clone()),
            ..cfg
        })
        .await,
    );
    assert!(
        e.contains(&format!("reading nkey seed file {}", missing.display())),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// credentials file (operator mode)

/// A NATS JWT: `claims` signed by `issuer` (the encoding of nats-io/jwt v2).
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let claims = json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str) -> String {
    jwt(
        operator,
        &account.public_key(),
        name,
        json!({
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    )
}

/// A `.creds` file for a new user of `account`, in the layout `nsc` writes.
fn creds(account: &KeyPair, name: &str) -> String {
    let user = KeyPair::new_user();
    let user_jwt = jwt(
        account,
        &user.public_key(),
        name,
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

#[tokio::test]
async fn creds_file_authenticates_in_operator_mode() {
    let dir = TempDir::new().unwrap();
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let unknown_account = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        json!({"type": "operator", "version": 2}),
    );
    let operator_file = write(dir.path(), "op.jwt", &operator_jwt);
    let server = server_with_config(
        dir.path(),
        &format!(
            "operator: {:?}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {:?}\n}}\n",
            operator_file.to_str().unwrap(),
            account.public_key(),
            account_jwt(&operator, &account, "rosey"),
        ),
    );
    let cfg = NatsConnectConfig {
        creds_file: Some(write(dir.path(), "user.creds", &creds(&account, "svc"))),
        ..NatsConnectConfig::new(server.url())
    };
    echo(&connect(&cfg).await.unwrap()).await;

    // A well-formed user of an account the server does not know.
    let stranger = NatsConnectConfig {
        creds_file: Some(write(
            dir.path(),
            "stranger.creds",
            &creds(&unknown_account, "x"),
        )),
        ..cfg.clone()
    };
    let e = err_text(connect(&stranger).await);
    assert!(e.contains("authorization violation"), "{e}");
    assert!(e.contains("CredsFile"), "{e}");

    let garbled = NatsConnectConfig {
        creds_file: Some(write(dir.path(), "garbled.creds", "not a creds file\n")),
        ..cfg
    };
    let e = err_text(connect(&garbled).await);
    assert!(e.contains("reading nats credentials file"), "{e}");
    assert!(e.contains("garbled.creds"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A server that speaks TLS only with `pki`'s certificates; with `verify` it also requires a
/// client certificate signed by the CA (mutual TLS).
fn tls_server(pki: &TestPki, verify: bool) -> NatsServer {
    server_with_config(pki.dir(), &pki.server_config(verify))
}

#[tokio::test]
async fn server_tls_is_verified_against_the_ca_file() {
    let pki = TestPki::generate("rosey-client").unwrap();
    let server = tls_server(&pki, false);
    let cfg = NatsConnectConfig {
        tls_required: true,
        tls_ca_file: Some(pki.ca.clone()),
        ..NatsConnectConfig::new(server.url())
    };
    echo(&connect(&cfg).await.unwrap()).await;
    // The same through a tls:// URL and by the name in the certificate.
    let by_name = NatsConnectConfig {
        url: format!("tls://localhost:{}", server.port()),
        tls_required: false,
        ..cfg.clone()
    };
    echo(&connect(&by_name).await.unwrap()).await;

    // Without the CA the server's certificate is not trusted.
    let no_ca = NatsConnectConfig {
        tls_ca_file: None,
        ..cfg.clone()
    };
    let e = err_text(connect(&no_ca).await);
    assert!(
        e.contains(&format!(
            "connecting to nats at {}: tls handshake failed",
            server.url()
        )),
        "{e}"
    );

    // Nor is it trusted by a different CA.
    let other = TestPki::generate("rosey-client").unwrap();
    let wrong_ca = NatsConnectConfig {
        tls_ca_file: Some(other.ca.clone()),
        ..cfg
    };
    let e = err_text(connect(&wrong_ca).await);
    assert!(e.contains("tls handshake failed"), "{e}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = TestPki::generate("rosey-client").unwrap();
    let server = tls_server(&pki, true);
    let cfg = NatsConnectConfig {
        tls_required: true,
        tls_ca_file: Some(pki.ca.clone()),
        tls_cert_file: Some(pki.client_cert.clone()),
        tls_key_file: Some(pki.client_key.clone()),
        ..NatsConnectConfig::new(server.url())
    };
    echo(&connect(&cfg).await.unwrap()).await;

    let no_cert = NatsConnectConfig {
        tls_cert_file: None,
        tls_key_file: None,
        ..cfg.clone()
    };
    let e = err_text(connect(&no_cert).await);
    assert!(e.contains("tls handshake failed"), "{e}");

    // A certificate from another CA is refused too.
    let other = TestPki::generate("rosey-client").unwrap();
    let foreign_cert = NatsConnectConfig {
        tls_cert_file: Some(other.client_cert.clone()),
        tls_key_file: Some(other.client_key.clone()),
        ..cfg.clone()
    };
    let e = err_text(connect(&foreign_cert).await);
    assert!(e.contains("tls handshake failed"), "{e}");

    let missing = pki.dir().join("missing-key.pem");
    let e = err_text(
        connect(&NatsConnectConfig {
            tls_key_file: Some(missing.clone()),
            ..cfg
        })
        .await,
    );
    assert!(
        e.contains(&format!(
            "tls client key file {} does not exist",
            missing.display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn tls_required_refuses_a_plain_server() {
    let server = NatsServer::start_with(ServerOptions::default()).unwrap();
    let cfg = NatsConnectConfig {
        tls_required: true,
        ..NatsConnectConfig::new(server.url())
    };
    let e = err_text(connect(&cfg).await);
    assert!(e.contains("tls handshake failed"), "{e}");
}

/// A fake NATS server on a plain TCP socket that offers no TLS: it sends an `INFO` line without
/// `tls_required`/`tls_available`, records every byte the client sends until the client goes
/// quiet or hangs up, then closes. Returns its URL and the recording.
async fn plain_recording_server() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let recording = tokio::spawn(async move {
        let mut seen = Vec::new();
        // The client may try more than once (a failed TLS handshake is retried per server).
        while let Ok(Ok((mut sock, _))) =
            tokio::time::timeout(Duration::from_secs(2), listener.accept()).await
        {
            let info = format!(
                "INFO {{\"server_id\":\"FAKE\",\"server_name\":\"fake\",\"version\":\"2.15.1\",\
                 \"proto\":1,\"go\":\"go1.25\",\"host\":\"127.0.0.1\",\"port\":{port},\
                 \"headers\":true,\"auth_required\":true,\"max_payload\":1048576}}\r\n"
            );
            if sock.write_all(info.as_bytes()).await.is_err() {
                continue;
            }
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        }
        seen
    });
    (format!("nats://127.0.0.1:{port}"), recording)
}

/// Issue 11: a TLS file configured means TLS is required, so credentials never cross the wire
/// in plaintext to a server (or a man in the middle) that does not offer TLS.
#[tokio::test]
async fn a_tls_file_means_credentials_never_go_out_in_plaintext() {
    let pki = TestPki::generate("rosey-client").unwrap();
    let secret = "pl41ntext-s3cret";
    let with_ca = |cfg: NatsConnectConfig| NatsConnectConfig {
        tls_ca_file: Some(pki.ca.clone()),
        ..cfg
    };
    let with_client_cert = |cfg: NatsConnectConfig| NatsConnectConfig {
        tls_cert_file: Some(pki.client_cert.clone()),
        tls_key_file: Some(pki.client_key.clone()),
        ..cfg
    };
    let token = |url: &str| NatsConnectConfig {
        token: Some(secret.into()),
        ..NatsConnectConfig::new(url)
    };
    let password = |url: &str| NatsConnectConfig {
        user: Some("alice".into()),
        password: Some(secret.into()),
        ..NatsConnectConfig::new(url)
    };
    type Case<'a> = (&'a str, Box<dyn Fn(&str) -> NatsConnectConfig + 'a>);
    let cases: Vec<Case> = vec![
        ("ca file + token", Box::new(|u| with_ca(token(u)))),
        ("ca file + password", Box::new(|u| with_ca(password(u)))),
        (
            "client cert + token",
            Box::new(|u| with_client_cert(token(u))),
        ),
        (
            "client cert + password",
            Box::new(|u| with_client_cert(password(u))),
        ),
    ];
    for (name, cfg) in cases {
        let (url, recording) = plain_recording_server().await;
        let cfg = cfg(&url);
        assert!(!cfg.tls_required, "{name}: only a TLS file says TLS");
        let opts = client::connect_options(&cfg)
            .await
            .unwrap()
            .connection_timeout(Duration::from_secs(3));
        let result = tokio::time::timeout(Duration::from_secs(10), client::connect(&cfg, opts))
            .await
            .unwrap_or_else(|_| panic!("{name}: connect neither succeeded nor failed"));
        let sent = recording.await.unwrap();
        let sent_text = String::from_utf8_lossy(&sent);
        assert!(
            !sent.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{name}: the secret went out in plaintext: {sent_text:?}"
        );
        assert!(
            !sent_text.contains("CONNECT"),
            "{name}: a plaintext CONNECT went out: {sent_text:?}"
        );
        let e = err_text(result);
        assert!(
            e.contains(&format!(
                "connecting to nats at {url}: tls handshake failed"
            )),
            "{name}: {e}"
        );
    }
}
