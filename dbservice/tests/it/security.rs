//! Authentication and TLS: user/password, token and nkey against servers that require them,
//! server-verified and mutual TLS; wrong credentials give a clear error; the config file's
//! [nats] table and the `--nats-*` flags are honoured by the binary. (The settings-to-options
//! code is natskit's; its own tests cover every method, these prove the service uses it.)

use crate::binary::ServiceProcess;
use crate::support::*;
use natskit::pki::TestPki;
use natskit::{NatsServer, ServerOptions};
use rosey_protocol::connect::NatsConnectConfig;
use rosey_protocol::subjects;
use std::path::{Path, PathBuf};

fn server_with(opts: ServerOptions) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        jetstream: true,
        ..opts
    })
    .expect("start nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password() {
    let server = server_with(ServerOptions {
        user_password: Some(("rosey".into(), "s3cret".into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server, dir.path().join("a.db"));
    c.nats = NatsConnectConfig {
        url: server.url().to_owned(),
        user: Some("rosey".into()),
        password: Some("wrong".into()),
        ..Default::default()
    };
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("authorization violation"), "{e}");
    assert!(!e.contains("wrong"), "the password is not echoed: {e}");

    c.nats.password = Some("s3cret".into());
    let service = rosey_dbservice::spawn(c).await.unwrap();
    let client =
        async_nats::ConnectOptions::with_user_and_password("rosey".into(), "s3cret".into())
            .connect(server.url())
            .await
            .unwrap();
    let reply = request(&client, subjects::SERVICE_PING, b"").await;
    assert!(reply.starts_with(br#"{"success": true"#));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = server_with(ServerOptions {
        token: Some("t0ken".into()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server, dir.path().join("a.db"));
    c.nats = NatsConnectConfig {
        url: server.url().to_owned(),
        token: Some("nope".into()),
        ..Default::default()
    };
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("authorization violation"), "{e}");
    c.nats.token = None;
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("connecting to nats"), "{e}");

    c.nats.token = Some("t0ken".into());
    let service = rosey_dbservice::spawn(c).await.unwrap();
    assert_eq!(service.stats().mode, "core");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_credentials_from_the_config_file_and_stops_on_sigterm() {
    let server = server_with(ServerOptions {
        user_password: Some(("svc".into(), "pw".into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dbservice.toml");
    let db = dir.path().join("file.db");
    std::fs::write(
        &cfg,
        format!(
            "db_path = {:?}\nmode = \"durable\"\ncommit_notices = true\n[nats]\nurl = {:?}\nuser = \"svc\"\npassword = \"pw\"\n",
            db.to_str().unwrap(),
            server.url()
        ),
    )
    .unwrap();
    // A flag overrides the file: the mode becomes core.
    let p = ServiceProcess::start(&["--config", cfg.to_str().unwrap(), "--mode", "core"]).await;
    let client = async_nats::ConnectOptions::with_user_and_password("svc".into(), "pw".into())
        .connect(server.url())
        .await
        .unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&request(&client, subjects::SERVICE_PING, b"").await).unwrap();
    assert_eq!(stats["mode"], "core");
    p.terminate().await;
    assert!(db.exists());
}

/// Connects a test client with `cfg` through the same shared code the service uses.
async fn connect_with(cfg: &NatsConnectConfig) -> async_nats::Client {
    let opts = natskit::client::connect_options(cfg).await.unwrap();
    natskit::client::connect(cfg, opts).await.unwrap()
}

async fn assert_ping_succeeds(client: &async_nats::Client) {
    let reply = request(client, subjects::SERVICE_PING, b"").await;
    assert!(
        reply.starts_with(br#"{"success": true"#),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_service_answers_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate("rosey-dbservice").unwrap();
    let server = server_with(ServerOptions {
        config_file: Some(write(dir.path(), "server.conf", &pki.server_config(true))),
        ..Default::default()
    });
    let mut c = config(&server, dir.path().join("a.db"));
    c.nats.tls_required = true;
    c.nats.tls_ca_file = Some(pki.ca.clone());
    // The server verifies clients: without a certificate the service cannot connect.
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("tls handshake failed"), "{e}");

    c.nats.tls_cert_file = Some(pki.client_cert.clone());
    c.nats.tls_key_file = Some(pki.client_key.clone());
    let service = rosey_dbservice::spawn(c.clone()).await.unwrap();
    let client = connect_with(&c.nats).await;
    assert_ping_succeeds(&client).await;
    let enqueued: serde_json::Value = serde_json::from_slice(
        &request(
            &client,
            subjects::OUTBOUND_ENQUEUE,
            br#"{"message": "over tls"}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(enqueued["success"], true, "{enqueued}");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_authenticates_with_the_nkey_seed_file_flag() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users = [ {{ nkey: {:?} }} ] }}\n",
        user.public_key()
    );
    let server = server_with(ServerOptions {
        config_file: Some(write(dir.path(), "server.conf", &conf)),
        ..Default::default()
    });
    let seed = write(dir.path(), "svc.nk", &user.seed().unwrap());
    let stranger = write(
        dir.path(),
        "stranger.nk",
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );

    let mut c = config(&server, dir.path().join("a.db"));
    c.nats.nkey_seed_file = Some(stranger);
    let e = format!("{:#}", rosey_dbservice::spawn(c).await.unwrap_err());
    assert!(e.contains("authorization violation"), "{e}");
    assert!(e.contains("NkeySeedFile"), "{e}");

    let db = dir.path().join("b.db");
    let p = ServiceProcess::start(&[
        "--nats-url",
        server.url(),
        "--db-path",
        db.to_str().unwrap(),
        "--nats-nkey-seed-file",
        seed.to_str().unwrap(),
    ])
    .await;
    let client = connect_with(&NatsConnectConfig {
        nkey_seed_file: Some(seed.clone()),
        ..NatsConnectConfig::new(server.url())
    })
    .await;
    assert_ping_succeeds(&client).await;
    p.terminate().await;
}
